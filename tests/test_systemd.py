"""systemd integration: sd_notify over a real unix datagram socket, READY only after
warm-up, the watchdog pinged from the loop, STOPPING on SIGTERM, and the unit file lint
(``systemd-analyze``; skipped, saying so, where it is not installed)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import zmq
from prometheus_client import CollectorRegistry

from conftest import small_model
from edged import sdnotify
from edged.client import wait_ready
from edged.config import Config
from edged.model import load, save
from edged.service import Service

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "edged.service"
TIMEOUT = 20.0


@pytest.fixture
def notify_socket(tmp_path):
    """A bound datagram socket like systemd's; yields ``(address, socket)``."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = f"/tmp/edged-notify-{uuid.uuid4().hex[:12]}"  # short: sun_path is 108 bytes
    s.bind(path)
    yield path, s
    s.close()
    os.unlink(path)


def recv_until(s: socket.socket, want: str, timeout: float = 90.0) -> list[str]:
    """Datagrams up to and including the first that contains ``want``."""
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            msg = s.recv(4096).decode()
        except socket.timeout:
            break
        got.append(msg)
        if want in msg.split("\n"):
            return got
    raise AssertionError(f"{want} not received; got {got}")


def test_notify_is_a_noop_without_socket():
    assert sdnotify.notify("READY=1", env={}) is False
    assert sdnotify.notify("READY=1", env={"NOTIFY_SOCKET": "/nonexistent/sock"}) is False


def test_notify_path_and_abstract_sockets(notify_socket):
    path, s = notify_socket
    assert sdnotify.notify("READY=1\nSTATUS=hi", env={"NOTIFY_SOCKET": path})
    assert s.recv(100) == b"READY=1\nSTATUS=hi"
    name = f"edged-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as a:
        a.bind("\0" + name)
        assert sdnotify.notify("WATCHDOG=1", env={"NOTIFY_SOCKET": "@" + name})
        assert a.recv(100) == b"WATCHDOG=1"


def test_notify_never_blocks_on_a_queue_nobody_reads(notify_socket):
    """A reader that is stuck (never reads) fills the socket's queue: notify then fails,
    returning False, instead of blocking the serving loop that calls it."""
    path, _ = notify_socket  # bound, never read
    results: list[bool] = []

    def spam() -> None:
        for _ in range(1000):
            results.append(sdnotify.notify("WATCHDOG=1", env={"NOTIFY_SOCKET": path}))

    caller = threading.Thread(target=spam, daemon=True)  # (a blocked send ends when the fixture closes)
    caller.start()
    caller.join(TIMEOUT)
    assert len(results) == 1000, f"notify blocked after {len(results)} calls"
    assert results[0] is True and results[-1] is False


def test_watchdog_interval_and_pid():
    sent = []
    w = sdnotify.Watchdog({"WATCHDOG_USEC": "200000"}, send=lambda m, env: sent.append(m))
    assert w.interval == pytest.approx(0.1)
    for now in (0.0, 0.05, 0.099, 0.1, 0.15, 0.2):
        w.ping(now)
    assert sent == ["WATCHDOG=1"] * 3
    assert not sdnotify.Watchdog({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}).enabled or os.getpid() == 1
    assert sdnotify.Watchdog({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())}).enabled
    assert not sdnotify.Watchdog({}).enabled


def test_watchdog_pings_from_the_loop_and_stop_when_it_is_blocked(tmp_path):
    """RELIABILITY 16: WATCHDOG_USEC=200000 -> a ping at least every ~100 ms; a loop stuck
    in a frame sends none."""
    save(tmp_path / "m.npz", small_model(window=32, hop=8))
    model = load(tmp_path / "m.npz")
    pings: list[float] = []
    watchdog = sdnotify.Watchdog({"WATCHDOG_USEC": "200000"},
                                 send=lambda m, env: pings.append(time.monotonic()))
    ctx = zmq.Context()
    cfg = Config(ingest_endpoint="tcp://127.0.0.1:*", publish_endpoint="tcp://127.0.0.1:*",
                 metrics_listen="off", streams_max=2)
    svc = Service(model, cfg, context=ctx, registry=CollectorRegistry(), watchdog=watchdog)
    endpoints = svc.bind()
    svc.warm()
    import threading

    from edged.client import Sender

    admit = svc.admit
    blocked = threading.Event()

    def stuck(buf, now, batch, frame=None):
        blocked.set()
        time.sleep(0.6)  # the injected stall: the loop is blocked inside a frame
        return admit(buf, now, batch, frame)

    thread = threading.Thread(target=svc.run, daemon=True)
    thread.start()
    tx = Sender(endpoints["ingest"], context=ctx, linger=0)
    try:
        deadline = time.monotonic() + TIMEOUT
        while len(pings) < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(pings) >= 6
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        assert max(gaps) < 0.1 + 0.15, gaps  # interval 100 ms, plus a noisy shared box
        svc.admit = stuck
        tx.send("x", [], [], until=1)
        assert blocked.wait(TIMEOUT)
        t0 = time.monotonic()
        n0 = len(pings)
        while time.monotonic() - t0 < 0.5:
            time.sleep(0.01)
        assert len(pings) == n0, "pinged while the loop was blocked"
        deadline = time.monotonic() + TIMEOUT
        while len(pings) == n0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(pings) > n0, "pings did not resume"
    finally:
        svc.request_stop()
        thread.join(TIMEOUT)
        tx.close()
        svc.close(linger_s=0)
        ctx.term()


def test_serve_ready_after_warmup_then_stopping_on_sigterm(tmp_path, notify_socket):
    """RELIABILITY 12 (STOPPING part) and 15: READY=1 arrives after the model line, the
    warm-up and bind (edged_ready is then 1); SIGTERM -> STOPPING=1 -> exit 0."""
    path, s = notify_socket
    model_path = tmp_path / "m.npz"
    save(model_path, small_model(window=32, hop=8))
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="400000", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edged.cli", "serve", "--model", str(model_path),
         "--ingest", "tcp://127.0.0.1:*", "--publish", "tcp://127.0.0.1:*", "--metrics", "127.0.0.1:0"],
        stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        got = recv_until(s, "READY=1")
        statuses = [m for m in got if m.startswith("STATUS=")]
        assert statuses[:2] == ["STATUS=loading model", "STATUS=compiling and warming kernels"], got
        assert "WATCHDOG=1" not in got[:-1]  # no ping before READY: the loop was not running
        ready = got[-1]
        assert re.search(r"STATUS=serving, epoch \d+", ready)
        url = wait_ready(proc, TIMEOUT)["metrics"]  # printed just before READY=1 is sent
        import urllib.request

        text = urllib.request.urlopen(url, timeout=10).read().decode()
        assert re.search(r"^edged_ready 1\.0$", text, re.M)
        recv_until(s, "WATCHDOG=1", timeout=TIMEOUT)  # pinged from the serving loop
        proc.send_signal(signal.SIGTERM)
        recv_until(s, "STOPPING=1", timeout=TIMEOUT)
        assert proc.wait(timeout=TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


# -- the unit file ----------------------------------------------------------------------

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze not installed (apt-get install systemd): unit not linted here")


def runnable_unit(tmp_path) -> Path:
    """The unit with ExecStart pointing at this Python (verify checks the binary exists)."""
    text = UNIT.read_text()
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={sys.executable} -m edged.cli", text, flags=re.M)
    out = tmp_path / "edged.service"
    out.write_text(text)
    return out


def test_unit_has_the_required_settings():
    text = UNIT.read_text()
    settings = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            k, _, v = line.partition("=")
            settings.setdefault(k, []).append(v)
    assert settings["Type"] == ["notify"] and settings["Restart"] == ["on-failure"]
    assert settings["MemoryDenyWriteExecute"] == ["no"] and settings["SyslogIdentifier"] == ["edged"]
    assert "WatchdogSec" in settings and settings["CacheDirectory"] == ["edged"]
    env = " ".join(settings["Environment"])
    assert "NUMBA_CACHE_DIR=/var/cache/edged/" in env and "OMP_NUM_THREADS=1" in env
    assert "OPENBLAS_NUM_THREADS=1" in env and settings["UMask"] == ["0077"]
    assert re.search(r"#.*Numba", text)  # the reason for MDWE=no is written down


@needs_analyze
def test_unit_verify(tmp_path):
    """RELIABILITY 22 (verify)."""
    r = subprocess.run([ANALYZE, "verify", str(runnable_unit(tmp_path))], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


@needs_analyze
def test_unit_security_exposure_at_most_2(tmp_path):
    """RELIABILITY 22 (security): exposure <= 2.0 offline."""
    r = subprocess.run([ANALYZE, "security", "--offline=true", str(runnable_unit(tmp_path))],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= 2.0, r.stdout


@needs_analyze
def test_unit_lets_the_serving_thread_be_pinned_and_nothing_else_of_resources():
    """``--serve-cpus`` calls ``sched_setaffinity``: the unit's ``SystemCallFilter`` lines,
    applied as systemd applies them (the first an allow list, later ``~`` lines take calls
    out, later plain ones put them back), allow it and still deny the rest of @resources."""
    def calls(names: list[str]) -> set[str]:
        out = set()
        for name in names:
            if not name.startswith("@"):
                out.add(name)
                continue
            listing = subprocess.run([ANALYZE, "syscall-filter", name], capture_output=True, text=True,
                                     timeout=60, check=True).stdout.splitlines()[1:]
            out |= calls([x.strip() for x in listing if x.strip() and not x.strip().startswith("#")])
        return out

    lines = re.findall(r"^SystemCallFilter=(.*)$", UNIT.read_text(), flags=re.M)
    allowed = calls(lines[0].split())
    for line in lines[1:]:
        if line.startswith("~"):
            allowed -= calls(line[1:].split())
        else:
            allowed |= calls(line.split())
    assert "sched_setaffinity" in allowed and "read" in allowed
    assert not allowed & (calls(["@resources"]) - {"sched_setaffinity"})
    assert not allowed & calls(["@privileged"])


def test_example_settings_files_parse():
    from edged.config import load_toml

    values = load_toml(str(ROOT / "systemd" / "edged.toml"))
    assert values["metrics_listen"].startswith("127.0.0.1:")
    for line in (ROOT / "systemd" / "edged.env").read_text().splitlines():
        line = line.strip()
        assert not line or line.startswith("#") or re.match(r"EDGED_[A-Z_]+=", line)
