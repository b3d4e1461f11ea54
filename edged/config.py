"""``edged serve`` settings: one table drives CLI flags, TOML keys, ``EDGED_*`` env vars,
``--help`` and ``--print-config``.

Each ``Setting`` lives in a TOML table ``[section]`` under ``key``; its env var is
``EDGED_<SECTION>_<KEY>`` and its attribute on ``Config`` is ``<section>_<key>``.
Precedence: command line > environment > ``--config`` TOML file > defaults. Unknown TOML
tables or keys and unparsable values are errors (``ConfigError``: exit code 2).

Stdlib only: ``edged --help`` imports this module.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tomllib
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it."""


@dataclass(frozen=True)
class Setting:
    section: str
    key: str
    type: type
    default: Any
    help: str
    flag: str
    choices: tuple | None = None
    check: Callable[[Any], bool] | None = None

    @property
    def name(self) -> str:
        return f"{self.section}_{self.key}"

    @property
    def env(self) -> str:
        return f"EDGED_{self.section.upper()}_{self.key.upper()}"


def _positive(x) -> bool:
    return x > 0


def _said(parse: Callable[[str], Any], x: str) -> bool:
    """True once ``parse(x)`` passes (its ValueError names what is wrong)."""
    parse(x)
    return True


def _host_port(x: str) -> bool:
    if x in ("", "off"):
        return True
    host, sep, port = x.rpartition(":")
    return bool(sep and host) and port.isdigit() and 0 <= int(port) < 65536


SETTINGS: tuple[Setting, ...] = (
    Setting("model", "path", str, "models/meta.npz", "model file (.npz) to serve", "--model"),
    Setting("ingest", "endpoint", str, "tcp://127.0.0.1:5555",
            "ZeroMQ endpoint frames arrive on ('*' as the port picks a free one), or "
            "nats://HOST:PORT for NATS JetStream (then --publish too; [nats] settings)", "--ingest"),
    Setting("ingest", "socket", str, "pull",
            "pull: sources PUSH to us (back-pressure); sub: we subscribe to a publisher (lossy)",
            "--ingest-socket", choices=("pull", "sub")),
    Setting("ingest", "bind", bool, True,
            "bind the ingest endpoint (else connect to it, e.g. to a SUB source)", "--ingest-bind"),
    Setting("ingest", "hwm", int, 10000, "ingest receive high-water mark (frames; ZeroMQ only)",
            "--ingest-hwm", check=_positive),
    Setting("ingest", "max_frame_bytes", int, 4 << 20,
            "largest ingest frame in bytes (ZMQ_MAXMSGSIZE: a larger one disconnects its peer)",
            "--max-frame-bytes", check=_positive),
    Setting("limits", "max_events", int, 65536, "most events in one frame", "--max-events",
            check=_positive),
    Setting("limits", "max_advance", int, 1 << 20,
            "most steps one frame may advance a stream's clock (bounds work per frame)",
            "--max-advance", check=_positive),
    Setting("publish", "endpoint", str, "tcp://127.0.0.1:5556",
            "ZeroMQ PUB endpoint decisions go out on (bound), or nats://HOST:PORT (JetStream stream "
            "EDGED_OUT)", "--publish"),
    Setting("publish", "hwm", int, 10000,
            "decision send high-water mark per subscriber (PUB drops beyond it)",
            "--publish-hwm", check=_positive),
    Setting("publish", "heartbeat_interval", float, 0.0,
            "seconds between heartbeats on PUB (topic \\x00heartbeat), so subscribers can tell a "
            "stuck or stopped daemon from a quiet one (0 = off: subscribers that decode every "
            "message as a decision must skip the topic before turning it on)", "--heartbeat-interval",
            check=lambda x: x >= 0),
    Setting("metrics", "listen", str, "127.0.0.1:9555",
            "HOST:PORT for Prometheus /metrics ('off' disables; port 0 picks a free one)",
            "--metrics", check=_host_port),
    Setting("streams", "max", int, 1024,
            "most concurrent streams (state is preallocated: see the startup log for bytes/stream)",
            "--max-streams", check=_positive),
    Setting("streams", "idle_timeout", float, 300.0,
            "seconds without an accepted frame after which a stream expires", "--idle-timeout",
            check=_positive),
    Setting("service", "workers", int, 1,
            "serving processes behind the same ingest and publish endpoints, streams sharded by "
            "crc32 of their id (each worker has --max-streams slots; 1 = no router)", "--workers",
            check=_positive),
    Setting("service", "cpus", str, "",
            "CPUs the serving thread runs on, e.g. '0' or '2-3': worker i of --workers takes the "
            "i-th, round robin ('' = wherever the OS schedules it). ZeroMQ's I/O threads and the "
            "--workers router stay unpinned, so other work moves to the other CPUs", "--serve-cpus",
            check=lambda x: _said(parse_cpus, x)),
    Setting("service", "drain_timeout", float, 2.0,
            "at most this many seconds to finish the frames queued or arriving after SIGTERM/SIGINT",
            "--drain-timeout",
            check=lambda x: x >= 0),
    Setting("service", "state_dir", str, "",
            "directory for checkpoints of every stream's state: written on SIGTERM and every "
            "--checkpoint-interval, restored at start ('' = off)", "--state-dir"),
    Setting("service", "checkpoint_interval", float, 60.0,
            "seconds between periodic checkpoints (0 = only on stop)", "--checkpoint-interval",
            check=lambda x: x >= 0),
    Setting("security", "secret_key", str, "",
            "CURVE secret key file of the server (edged keygen; mode 0600); encrypts ingest and "
            "publish ('' = no encryption)", "--curve-secret-key"),
    Setting("security", "client_keys", str, "",
            "directory of allowed client public key files (*.key): the only clients admitted "
            "on ingest and publish (required with --curve-secret-key)", "--curve-client-keys"),
    Setting("nats", "partition_count", int, 8,
            "NATS: partitions P of the subject space (stream -> crc32 mod P); every producer and "
            "instance must use the same P", "--partition-count", check=_positive),
    Setting("nats", "partitions", str, "",
            "NATS: the partitions this instance owns, e.g. '0-3,6' ('' = all); instances serving "
            "one subject space own disjoint sets", "--partitions"),
    Setting("nats", "max_age", float, 86400.0,
            "NATS: seconds frames and decisions stay in the JetStream streams edged creates "
            "(replay after a restart reaches back at most this far)", "--nats-max-age",
            check=_positive),
    Setting("nats", "max_bytes", int, 1 << 30,
            "NATS: bytes each created stream keeps, oldest dropped first (-1 = unlimited)",
            "--nats-max-bytes", check=lambda x: x == -1 or x > 0),
    Setting("nats", "dedup_window", float, 300.0,
            "NATS: seconds the decision stream remembers Nats-Msg-Id (>= --checkpoint-interval + "
            "60 s, so a replay after a crash stores no decision twice; <= --idle-timeout, as a "
            "stream restarts its seqs after expiry)", "--nats-dedup-window", check=_positive),
    Setting("nats", "max_unconfirmed", int, 10000,
            "NATS: decisions awaiting NATS's confirmation (in flight and queued) beyond which edged "
            "stops pulling input until half of them are confirmed (back-pressure: nothing is dropped)",
            "--nats-max-unconfirmed", check=_positive),
    Setting("log", "level", str, "info", "lowest log level written to stderr", "--log-level",
            choices=("debug", "info", "warning", "error")),
    Setting("log", "reject_burst", int, 5,
            "rejected frames logged per reason before logging is rate-limited",
            "--log-reject-burst", check=lambda x: x >= 0),
    Setting("log", "reject_interval", float, 10.0,
            "seconds between summary lines for rejects past the burst", "--log-reject-interval",
            check=_positive),
)

Config = dataclasses.make_dataclass(
    "Config", [(s.name, s.type, dataclasses.field(default=s.default)) for s in SETTINGS],
    frozen=True)
Config.__doc__ = "Effective settings of one ``edged serve``; attribute ``<section>_<key>``."
_BY_NAME = {s.name: s for s in SETTINGS}


def default(name: str) -> Any:
    """The default of setting ``name`` (``<section>_<key>``, e.g. ``ingest_endpoint``)."""
    return next(s.default for s in SETTINGS if s.name == name)


def _parse(s: Setting, value: Any, where: str) -> Any:
    try:
        if s.type is bool and isinstance(value, str):
            low = value.strip().lower()
            if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(value)
            value = low in ("1", "true", "yes", "on")
        elif s.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif isinstance(value, str) and s.type is not str:
            value = s.type(value)
        if type(value) is not s.type:
            raise ValueError(value)
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not a valid {s.type.__name__}") from None
    if s.choices is not None and value not in s.choices:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, s.choices))}")
    try:
        ok = s.check is None or s.check(value)
    except ValueError as e:  # (a check that says what is wrong)
        raise ConfigError(f"{where}: {value!r}: {e}") from None
    if not ok:
        raise ConfigError(f"{where}: {value!r} is out of range")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    """One flag per setting, default ``None`` (= not given on the command line)."""
    p.add_argument("--config", metavar="FILE", help="TOML settings file (env EDGED_CONFIG)")
    p.add_argument("--print-config", action="store_true",
                   help="print the effective settings as TOML and exit")
    for s in SETTINGS:
        text = f"{s.help} (default {s.default!r}; [{s.section}] {s.key}; {s.env})"
        if s.type is bool:
            p.add_argument(s.flag, dest=s.name, default=None, help=text,
                           action=argparse.BooleanOptionalAction)
        else:
            p.add_argument(s.flag, dest=s.name, default=None, help=text, choices=s.choices,
                           metavar=s.key.upper() if s.choices is None else None)


def load_toml(path: str) -> dict[str, Any]:
    """Flatten a TOML settings file to ``{name: value}``; unknown tables or keys are errors."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    out = {}
    for section, table in doc.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: top-level key {section!r} must be a [table]")
        for key, value in table.items():
            s = _BY_NAME.get(f"{section}_{key}")
            if s is None or s.section != section:
                raise ConfigError(f"{path}: unknown setting [{section}] {key}")
            out[s.name] = _parse(s, value, f"{path}: [{section}] {key}")
    return out


def resolve(cli: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None,
            config_file: str | None = None) -> Config:
    """Merge defaults < TOML file < env < command line into a ``Config``."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    path = config_file or env.get("EDGED_CONFIG")
    if path:
        values |= load_toml(path)
    for s in SETTINGS:
        if s.env in env:
            values[s.name] = _parse(s, env[s.env], s.env)
    for name, value in (cli or {}).items():
        if value is not None and name in _BY_NAME:
            values[name] = _parse(_BY_NAME[name], value, _BY_NAME[name].flag)
    return Config(**values)


def from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Config:
    return resolve(vars(args), env, getattr(args, "config", None))


def render(cfg: Config) -> str:
    """The settings as a TOML document that ``--config`` reads back unchanged."""
    lines: list[str] = []
    section = None
    for s in SETTINGS:
        if s.section != section:
            lines += ([""] if lines else []) + [f"[{s.section}]"]
            section = s.section
        value = getattr(cfg, s.name)
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        else:
            text = repr(value)
        lines.append(f"{s.key} = {text}  # {s.help}")
    return "\n".join(lines) + "\n"


def uses_nats(cfg: Config) -> bool:
    """Whether ``cfg`` selects the NATS JetStream transport; raises ``ConfigError`` for a
    mix of transports or settings it cannot honour."""
    nats = [e.startswith("nats://") for e in (cfg.ingest_endpoint, cfg.publish_endpoint)]
    if not any(nats):
        return False
    if not all(nats):
        raise ConfigError("--ingest and --publish must both be nats:// (or both ZeroMQ)")
    if cfg.security_secret_key:
        raise ConfigError("--curve-secret-key is ZeroMQ only: secure NATS with TLS and credentials")
    if cfg.service_workers > 1:
        raise ConfigError("--workers is ZeroMQ only: over NATS, run one instance per core, each "
                          "owning its own --partitions")
    window, name = cfg.nats_dedup_window, "--nats-dedup-window"
    if cfg.nats_max_age < window:  # the window edged gives EDGED_OUT (jetstream.ensure_streams)
        window, name = cfg.nats_max_age, "the dedup window (--nats-max-age)"
    verdict, why = dedup_rule(window, cfg.nats_max_age, cfg, name)
    if verdict == "refuse":
        raise ConfigError(why)
    try:
        parse_partitions(cfg.nats_partitions, cfg.nats_partition_count)
    except ValueError as e:
        raise ConfigError(f"--partitions {cfg.nats_partitions!r}: {e}") from None
    return True


RESTART_S = 60.0  # what a crash adds to a replay's reach: RestartSec, warm-up, the replay itself


def dedup_rule(window: float, input_max_age: float, cfg: Config,
               name: str) -> tuple[Literal["ok", "warn", "refuse"], str]:
    """Whether EDGED_OUT's deduplication ``window`` (seconds, called ``name`` in the
    message) fits ``cfg`` when the input log keeps frames ``input_max_age`` seconds.

    A replay publishes again the decisions of the frames after the resume point: with a
    checkpoint every ``--checkpoint-interval`` those are at most the interval plus
    ``RESTART_S`` old, without periodic checkpoints (or without ``--state-dir``) as old
    as the input log; never older than ``input_max_age``. A shorter window stores them
    twice ("refuse"; "warn" when only a crash or a restart without a checkpoint replays
    so far). A stream that expires restarts its seqs at 0, so a window over
    ``--idle-timeout`` drops its new decisions as duplicates of the old ("refuse")."""
    if window > cfg.streams_idle_timeout:
        return "refuse", (f"{name} {window:g}s > --idle-timeout {cfg.streams_idle_timeout:g}s: a "
                          "stream that expires restarts its decision seqs at 0, and its new decisions "
                          "would be dropped as duplicates of the old ones")
    interval = cfg.service_checkpoint_interval
    if cfg.service_state_dir and interval > 0:
        reach = min(interval + RESTART_S, input_max_age)
        if window < reach:
            return "refuse", (f"{name} {window:g}s < --checkpoint-interval {interval:g}s + {RESTART_S:g}s "
                              "for a restart: a replay after a crash would store decisions twice "
                              f"(raise {name} or lower --checkpoint-interval)")
        return "ok", ""
    if window < input_max_age:
        replay = ("a crash replays from the last stop" if cfg.service_state_dir else
                  "a restart replays each partition from the first frame its log holds")
        return "warn", (f"{'--checkpoint-interval 0' if cfg.service_state_dir else 'without --state-dir'}: "
                        f"{replay}, up to {input_max_age:g}s back; the decisions older than {name} "
                        f"{window:g}s are stored again")
    return "ok", ""


def _ranges(text: str, count: int, what: str) -> tuple[int, ...]:
    """``"0-3,6"`` -> (0, 1, 2, 3, 6), each in ``[0, count)``. Raises ``ValueError``."""
    out: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError:
            raise ValueError(f"{what} range {part.strip()!r} is not N or N-M") from None
        if not 0 <= a <= b < count:
            raise ValueError(f"{what} range {part.strip()!r} outside 0-{count - 1}")
        out.update(range(a, b + 1))
    return tuple(sorted(out))


def parse_partitions(text: str, count: int) -> tuple[int, ...]:
    """``--partitions``: ``"0-3,6"`` -> (0, 1, 2, 3, 6); ``""`` -> all ``count``. Raises
    ``ValueError``."""
    return _ranges(text, count, "partition") if text.strip() else tuple(range(count))


def parse_cpus(text: str) -> tuple[int, ...]:
    """``--serve-cpus``: ``"2-3"`` -> (2, 3), each a CPU this process may run on; ``""`` ->
    (). Raises ``ValueError``."""
    if not text.strip():
        return ()
    if not hasattr(os, "sched_setaffinity"):
        raise ValueError("pinning a thread to a CPU needs Linux")
    cpus = _ranges(text, os.cpu_count() or 1, "CPU")
    allowed = os.sched_getaffinity(0)
    if not set(cpus) <= allowed:
        raise ValueError(f"CPU {min(set(cpus) - allowed)} is not one this process may run on "
                         f"({','.join(map(str, sorted(allowed)))})")
    return cpus


def metrics_address(cfg: Config) -> tuple[str, int] | None:
    """``(host, port)`` of the metrics listener, or ``None`` when disabled."""
    if cfg.metrics_listen in ("", "off"):
        return None
    host, _, port = cfg.metrics_listen.rpartition(":")
    return host.strip("[]"), int(port)
