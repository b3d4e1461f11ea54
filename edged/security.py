"""CURVE encryption and client allow-listing ("Ironhouse") for ingest and publish.

Keys are Z85 (40 chars) in ZeroMQ certificate files, the format ``zmq.auth`` reads:
``NAME.key`` holds the public key (share it), ``NAME.key_secret`` both keys (mode 0600,
created so: never readable by anyone else, even for an instant). ``edged keygen DIR``
writes a pair. ``edged serve --curve-secret-key server.key_secret --curve-client-keys
DIR`` makes both sockets CURVE servers and admits only clients whose public ``*.key``
file is in ``DIR`` (``zmq.auth.thread.ThreadAuthenticator``). ``serve`` refuses a secret
key file readable by group or others. Refused handshakes are counted per socket from the
socket monitor (``EVENT_HANDSHAKE_FAILED_*``) in ``edged_zmq_auth_failures_total``.

CURVE is defined for ``tcp://``; on ``ipc://`` use filesystem permissions instead.
"""

from __future__ import annotations

import datetime
import os
import stat
from typing import NamedTuple

import zmq

HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                    | zmq.EVENT_HANDSHAKE_FAILED_AUTH)


class SecurityError(Exception):
    """A key file or directory that cannot be used; the message names it (exit code 2)."""


class ServerKeys(NamedTuple):
    public: bytes
    secret: bytes
    client_keys: str  # directory of allowed client public key files


class ClientKeys(NamedTuple):
    public: bytes
    secret: bytes
    server: bytes  # the server's public key


def _cert(public: bytes, secret: bytes | None, what: str) -> str:
    lines = [f"#   ****  Generated on {datetime.datetime.now():%Y-%m-%d %H:%M:%S} by edged keygen  ****",
             f"#   ZeroMQ CURVE {what} Certificate",
             "#   " + ("DO NOT SHARE: mode 0600." if secret else "Copy to the peer's allow-list directory."),
             "", "metadata", "curve", f'    public-key = "{public.decode()}"']
    if secret:
        lines.append(f'    secret-key = "{secret.decode()}"')
    return "\n".join(lines) + "\n"


def keygen(directory: str, name: str = "server") -> tuple[str, str]:
    """Write ``NAME.key`` (0644) and ``NAME.key_secret`` (0600) in ``directory`` (created
    0700 if missing); refuse to overwrite. Returns both paths."""
    if not name or "/" in name or name.startswith("."):
        raise SecurityError(f"bad key name {name!r}")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    public, secret = zmq.curve_keypair()
    base = os.path.join(directory, name)
    paths = (f"{base}.key", f"{base}.key_secret")
    for path, mode, text in ((paths[1], 0o600, _cert(public, secret, "Secret")),
                             (paths[0], 0o644, _cert(public, None, "Public"))):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        except FileExistsError:
            raise SecurityError(f"{path} exists: not overwritten") from None
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), mode)  # exactly this mode, whatever the umask
            f.write(text)
    return paths


def _read(path: str) -> tuple[bytes, bytes | None]:
    from zmq.auth import load_certificate

    try:
        public, secret = load_certificate(path)
    except (OSError, ValueError) as e:
        raise SecurityError(f"{path}: {e}") from None
    for key in (public, secret):
        if key is not None and len(key) != 40:
            raise SecurityError(f"{path}: a CURVE key is 40 Z85 characters")
    return public, secret


def load_secret(path: str) -> tuple[bytes, bytes]:
    """``(public, secret)`` from a secret key file that only its owner can read."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise SecurityError(f"{path}: {e.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecurityError(f"{path}: secret key is accessible by group or others "
                            f"(mode {stat.S_IMODE(mode):04o}); chmod 600 it")
    public, secret = _read(path)
    if secret is None:
        raise SecurityError(f"{path}: no secret-key in this file (that is a public key file)")
    return public, secret


def load_public(path: str) -> bytes:
    return _read(path)[0]


def server_keys(secret_key: str, client_keys: str) -> ServerKeys | None:
    """The serve settings ``security.secret_key`` / ``security.client_keys`` checked."""
    if not secret_key and not client_keys:
        return None
    if not secret_key or not client_keys:
        raise SecurityError("--curve-secret-key and --curve-client-keys go together")
    public, secret = load_secret(secret_key)
    if not os.path.isdir(client_keys):
        raise SecurityError(f"{client_keys}: not a directory of client public keys")
    return ServerKeys(public, secret, client_keys)


def client_keys(secret_key: str, server_key: str) -> ClientKeys:
    """A client's own secret key file and the server's public key file."""
    public, secret = load_secret(secret_key)
    return ClientKeys(public, secret, load_public(server_key))


def make_server(sock: zmq.Socket, keys: ServerKeys) -> None:
    """Make ``sock`` a CURVE server (before bind)."""
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_server = True


def make_client(sock: zmq.Socket, keys: ClientKeys) -> None:
    """Make ``sock`` a CURVE client of ``keys.server`` (before connect)."""
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_serverkey = keys.server


def start_authenticator(ctx: zmq.Context, keys: ServerKeys):
    """A ZAP handler admitting only the public keys in ``keys.client_keys`` (re-read on
    each start). Stop it with ``.stop()`` after the sockets are closed."""
    from zmq.auth.thread import ThreadAuthenticator

    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=keys.client_keys)
    return auth
