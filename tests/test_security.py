"""CURVE for ingest and publish (RELIABILITY 19): keygen modes, an allowed key works, an
unknown key gets nothing and is counted, a readable secret key is refused; never
unpickle (model and checkpoint loads use allow_pickle=False); metrics on loopback (20)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import zmq
from prometheus_client import CollectorRegistry

from conftest import join, small_model
from edged import security
from edged.client import Sender, Subscriber
from edged.config import Config
from edged.model import load, save
from edged.service import Service
from test_service import wait_for

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 20.0


def test_keygen_modes_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        public, secret = security.keygen(str(tmp_path / "keys"), "server")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(public).st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / "keys").st_mode) == 0o700
    pub, sec = security.load_secret(secret)
    assert security.load_public(public) == pub and len(sec) == 40
    assert zmq.utils.z85.decode(pub) and pub == zmq.curve_public(sec)
    with pytest.raises(security.SecurityError, match="exists"):
        security.keygen(str(tmp_path / "keys"), "server")
    from zmq.auth import load_certificates

    assert load_certificates(str(tmp_path / "keys")) == {pub: True}  # zmq.auth reads our files


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_secret_readable_by_others_is_refused(tmp_path, mode):
    _, secret = security.keygen(str(tmp_path), "s")
    os.chmod(secret, mode)
    with pytest.raises(security.SecurityError, match="group or others"):
        security.load_secret(secret)


def test_public_key_file_is_not_a_secret(tmp_path):
    public, _ = security.keygen(str(tmp_path), "s")
    os.chmod(public, 0o600)
    with pytest.raises(security.SecurityError, match="no secret-key"):
        security.load_secret(public)


def test_serve_refuses_readable_secret_exit_2_one_line(tmp_path):
    save(tmp_path / "m.npz", small_model(window=32, hop=8))
    _, secret = security.keygen(str(tmp_path / "keys"), "server")
    os.chmod(secret, 0o644)
    (tmp_path / "clients").mkdir()
    r = subprocess.run([sys.executable, "-m", "edged.cli", "serve", "--model", str(tmp_path / "m.npz"),
                        "--metrics", "off", "--curve-secret-key", secret,
                        "--curve-client-keys", str(tmp_path / "clients")],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "group or others" in lines[0] and "0644" in lines[0], r.stderr


def test_keygen_command(tmp_path):
    r = subprocess.run([sys.executable, "-m", "edged.cli", "keygen", str(tmp_path / "k"), "--name", "c1"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(tmp_path / "k" / "c1.key_secret").st_mode) == 0o600
    r = subprocess.run([sys.executable, "-m", "edged.cli", "keygen", str(tmp_path / "k"), "--name", "c1"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2 and "exists" in r.stderr


@pytest.fixture
def curve_daemon(tmp_path):
    """A CURVE daemon whose allow-list holds client ``good``; ``bad`` is a valid key
    pair nobody allowed."""
    save(tmp_path / "m.npz", small_model(window=32, hop=8))
    model = load(tmp_path / "m.npz")
    keys = tmp_path / "keys"
    allowed = tmp_path / "clients"
    security.keygen(str(keys), "server")
    security.keygen(str(keys), "good")
    security.keygen(str(keys), "bad")
    allowed.mkdir()
    os.link(keys / "good.key", allowed / "good.key")
    server = security.server_keys(str(keys / "server.key_secret"), str(allowed))
    ctx = zmq.Context()
    registry = CollectorRegistry()
    cfg = Config(ingest_endpoint="tcp://127.0.0.1:*", publish_endpoint="tcp://127.0.0.1:*",
                 metrics_listen="off", streams_max=8)
    svc = Service(model, cfg, context=ctx, registry=registry, curve=server)
    endpoints = svc.bind()
    svc.warm()
    thread = threading.Thread(target=svc.run, daemon=True)
    thread.start()

    def client(name):
        return security.client_keys(str(keys / f"{name}.key_secret"), str(keys / "server.key"))

    yield model, svc, endpoints, ctx, client, registry
    svc.request_stop()
    thread.join(TIMEOUT)
    svc.close(linger_s=0)
    ctx.term()


def test_allowed_key_served_unknown_key_refused_and_counted(curve_daemon):
    model, svc, endpoints, ctx, client, registry = curve_daemon

    def failures(sock):
        return registry.get_sample_value("edged_zmq_auth_failures_total", {"socket": sock}) or 0

    good, bad = client("good"), client("bad")
    with Sender(endpoints["ingest"], context=ctx, linger=0, curve=good) as tx, \
            Subscriber(endpoints["publish"], context=ctx, curve=good) as rx, \
            Subscriber(endpoints["publish"], context=ctx, curve=bad) as rogue_rx, \
            Sender(endpoints["ingest"], context=ctx, linger=0, curve=bad) as rogue_tx:
        rogue_tx.send("rogue", [1], [0], until=model.window)  # never admitted
        wait_for(lambda: failures("ingest") >= 1 and failures("publish") >= 1, what="auth failures counted")
        join(tx, rx, model, "ok")  # the allowed subscription gets decisions
        assert rogue_rx.recv(0.3) is None  # the unknown subscriber got nothing
        assert "rogue" not in svc.streams.slots
        assert registry.get_sample_value("edged_frames_total") == tx.seq["ok"]

    # a plaintext (NULL mechanism) peer gets nothing either
    with Subscriber(endpoints["publish"], context=ctx) as plain:
        assert plain.recv(0.3) is None


def test_curve_settings_go_together(tmp_path):
    with pytest.raises(security.SecurityError, match="together"):
        security.server_keys(str(tmp_path / "x"), "")
    _, secret = security.keygen(str(tmp_path), "s")
    with pytest.raises(security.SecurityError, match="not a directory"):
        security.server_keys(secret, str(tmp_path / "none"))
    assert security.server_keys("", "") is None


def test_default_metrics_address_is_loopback():
    from edged.config import metrics_address, resolve

    assert metrics_address(resolve({}, {}))[0] == "127.0.0.1"


def test_loaders_never_unpickle():
    """Model and checkpoint loading pass allow_pickle=False (and nothing imports pickle)."""
    for name in ("model.py", "checkpoint.py"):
        text = (ROOT / "edged" / name).read_text()
        assert "allow_pickle=False" in text and "allow_pickle=True" not in text
        assert "import pickle" not in text
