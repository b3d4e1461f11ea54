"""NATS JetStream transport: real nats-server processes (127.0.0.1, random port, temporary
store) and real ``edged serve`` processes. Skips, saying why, without nats-server or nats-py."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
import zlib

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edged.bench.e2e import nats_available, start_nats
from edged.client import Sender, Subscriber
from edged.model import load, save
from edged.protocol import Packed
from tests.conftest import join, small_model, start_serve, wait_for

pytestmark = pytest.mark.skipif(nats_available() is not None, reason=str(nats_available()))
TIMEOUT = 30.0
# ids that need the "~" token encoding, and a spread over the partitions of P = 4 and 8
STREAMS = ("a", "rig/3 ü.x", "s-7", "b_2", "cam.0", "x")
HOP, WINDOW, FRAMES = 8, 64, 30


@pytest.fixture
def nats_url(tmp_path):
    proc, url = start_nats(tmp_path)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("nats") / "m.npz"
    save(path, small_model(window=WINDOW, hop=HOP))
    return path


def workload(seed: int = 0) -> list[tuple[str, np.ndarray, np.ndarray, int]]:
    """``FRAMES`` frames per stream, round robin, each covering ``HOP`` steps."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(FRAMES):
        for s in STREAMS:
            t = np.sort(rng.integers(k * HOP, (k + 1) * HOP, int(rng.integers(0, 12))))
            out.append((s, t, rng.integers(0, 8, t.size), (k + 1) * HOP))
    return out


def key(d):
    return d.stream, d.seq


def value(d):
    return d.t, d.label, d.class_id, d.scores, d.lzc


EXPECTED = len(STREAMS) * (FRAMES * HOP // HOP - WINDOW // HOP + 1)


@pytest.fixture(scope="module")
def reference(model_path):
    """The decisions of one uninterrupted ZeroMQ run over ``workload()``."""
    import zmq

    proc, (ingest, publish, _), _ = start_serve(model_path)
    ctx = zmq.Context()
    try:
        with Sender(ingest, context=ctx, linger=0) as tx, Subscriber(publish, context=ctx) as rx:
            join(tx, rx, load(model_path), "~probe")
            for s, t, ch, until in workload():
                tx.send(s, t, ch, until=until)
            got = collect(rx, EXPECTED)
    finally:
        proc.terminate()
        proc.wait(TIMEOUT)
        ctx.term()
    return got


def collect(rx, n: int, timeout: float = TIMEOUT) -> dict:
    """Read until ``n`` decisions of ``STREAMS``; {key: value}, asserting none came twice."""
    out: dict = {}
    deadline = time.monotonic() + timeout
    while len(out) < n:
        assert time.monotonic() < deadline, f"{len(out)} of {n} decisions"
        d = rx.recv(0.2)
        if d is None or d.stream not in STREAMS:
            continue
        assert key(d) not in out, f"decision {key(d)} twice"
        out[key(d)] = value(d)
    return out


def quiet(rx, seconds: float = 1.0) -> list:
    """Decisions of ``STREAMS`` still arriving within ``seconds`` of silence."""
    extra = []
    while (d := rx.recv(seconds)) is not None:
        if d.stream in STREAMS:
            extra.append(key(d))
    return extra


def scrape(url: str) -> dict:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {sm.name + "".join(f"{{{k}={v}}}" for k, v in sorted(sm.labels.items())): sm.value
            for fam in text_string_to_metric_families(text) for sm in fam.samples}


def stop(proc) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    proc.stderr.close()
    return proc.returncode


def serve_a_backlog(url: str, model_path, streams, n: int, *args: str):
    """Publish ``n`` one-hop frames per stream, start edged on them (``args`` added,
    a checkpoint every second) and return ``(proc, metrics URL)`` once its first decision
    is out: edged is still publishing the backlog."""
    with Sender(url) as tx:
        for k in range(n):
            for s in streams:
                tx.send(s, [k * HOP], [1], until=(k + 1) * HOP)
    proc, (_, _, metrics), _ = start_serve(model_path, "--ingest", url, "--publish", url, *args,
                                           "--checkpoint-interval", "1", metrics="127.0.0.1:0")
    try:
        with Subscriber(url, deliver="all") as rx:
            assert rx.recv(TIMEOUT) is not None
    except BaseException:
        kill(proc)
        raise
    return proc, metrics


def lose_the_server(server, url: str, metrics: str, tmp_path):
    """Stop the NATS ``server`` (SIGSTOP) while edged publishes the backlog's decisions,
    check that some still await a confirmation (one per stream is in flight, the rest
    queue behind it: none can be confirmed now), then kill the server and start a new one
    on its port and store; returns it."""
    server.send_signal(signal.SIGSTOP)
    time.sleep(0.3)  # confirmations the server sent before it stopped reach edged
    unconfirmed = scrape(metrics)["edged_nats_unconfirmed_decisions"]
    assert unconfirmed > 0, "edged had every decision confirmed before the server stopped"
    server.kill()
    server.wait()
    return start_nats(tmp_path, port=int(url.rsplit(":", 1)[1]))[0]


def kill(proc) -> None:
    """Make sure an ``edged serve`` a test started is gone (stopped ones included)."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait()


def test_subject_scheme():
    from edged.jetstream import in_subject, msg_id, out_subject, partition, stream_of, token

    assert token("rig-3_a") == "rig-3_a"
    for s in STREAMS + ("~x", "a b", "ü" * 64, "x" * 128):
        tok = token(s)
        assert re.fullmatch(r"~?[A-Za-z0-9_-]+", tok) and stream_of(tok) == s
        assert in_subject(s, 8) == f"edged.in.{zlib.crc32(s.encode()) % 8}.{tok}"
        assert out_subject(s) == f"edged.out.{tok}" and msg_id(s, 7) == f"{tok}.7"
    assert partition("a", 8) == 0xE8B7BE43 % 8  # CRC-32 of b"a": any language agrees


def test_partition_and_transport_settings():
    from edged.config import ConfigError, parse_partitions, resolve, uses_nats

    assert parse_partitions("", 4) == (0, 1, 2, 3) and parse_partitions("0-1, 3", 4) == (0, 1, 3)
    with pytest.raises(ValueError):
        parse_partitions("2-5", 4)
    nats_cfg = {"ingest_endpoint": "nats://h:4222", "publish_endpoint": "nats://h:4222"}
    assert uses_nats(resolve(nats_cfg, env={})) and not uses_nats(resolve({}, env={}))
    for bad in ({"publish_endpoint": "tcp://127.0.0.1:1"}, {"nats_partitions": "9"},
                {"nats_dedup_window": "600"}, {"service_workers": "2"}):
        with pytest.raises(ConfigError):
            uses_nats(resolve(nats_cfg | bad, env={}))
    with pytest.raises(ConfigError, match=r"--nats-dedup-window 300s < --checkpoint-interval 600s \+ 60s"):
        uses_nats(resolve(nats_cfg | {"service_state_dir": "/s", "service_checkpoint_interval": "600"}, env={}))


@pytest.mark.parametrize("settings, window, max_age, verdict", [
    ({}, 300, 86400, "ok"),  # the defaults: a checkpoint every 60 s, 300 s window
    ({"service_checkpoint_interval": "240"}, 300, 86400, "ok"),  # 240 + 60 s for a restart
    ({"service_checkpoint_interval": "241"}, 300, 86400, "refuse"),  # a crash: stored twice
    ({"service_checkpoint_interval": "600"}, 1, 1, "ok"),  # the log keeps 1 s: no replay reaches further
    ({"streams_idle_timeout": "299"}, 300, 86400, "refuse"),  # a returning stream's decisions dropped
    ({"service_state_dir": ""}, 300, 86400, "warn"),  # a restart replays the whole log
    ({"service_state_dir": ""}, 300, 300, "ok"),
    ({"service_checkpoint_interval": "0"}, 300, 86400, "warn"),  # a crash replays from the last stop
])
def test_dedup_window_rule(settings, window, max_age, verdict):
    """EDGED_OUT's deduplication window must cover what a replay publishes again (the
    checkpoint interval plus a restart, at most the input log's age) and must not exceed
    --idle-timeout (``edged.config.dedup_rule``; refused at start, exit 2)."""
    from edged.config import dedup_rule, resolve

    cfg = resolve({"service_state_dir": "/var/lib/edged"} | settings, env={})
    got, why = dedup_rule(window, max_age, cfg, "the window")
    assert got == verdict, why
    assert (why == "") == (verdict == "ok")


def test_kill_9_replay_equals_uninterrupted_zeromq_run(tmp_path, nats_url, model_path, reference):
    """kill -9 part-way, frames published while down, restart: every decision exactly once,
    values identical to the uninterrupted ZeroMQ run; the replay's republished decisions
    were dropped by JetStream as duplicates."""
    state = tmp_path / "state"
    args = ["--ingest", nats_url, "--publish", nats_url, "--state-dir", str(state),
            "--checkpoint-interval", "2"]
    frames = workload()
    third = len(frames) // 3
    proc, _, _ = start_serve(model_path, *args)
    try:
        with Sender(nats_url) as tx, Subscriber(nats_url, deliver="all") as rx:
            for s, t, ch, until in frames[:third]:
                tx.send(s, t, ch, until=until)
            per_stream = third // len(STREAMS)
            first = collect(rx, len(STREAMS) * (per_stream - WINDOW // HOP + 1))
            done = time.time()
            path = state / "checkpoint.npz"
            deadline = time.monotonic() + TIMEOUT
            while not (path.exists() and path.stat().st_mtime > done):  # a checkpoint after A
                assert time.monotonic() < deadline, "no checkpoint"
                time.sleep(0.02)
            for s, t, ch, until in frames[third:2 * third]:
                tx.send(s, t, ch, until=until)
            first |= collect(rx, len(first) + 5)  # some of B decided and published ...
            proc.kill()  # ... then kill -9 before the next checkpoint (2 s later)
            proc.wait()
            proc.stderr.close()
            for s, t, ch, until in frames[2 * third:]:  # published while edged is down
                tx.send(s, t, ch, until=until)
            proc, (_, _, metrics), _ = start_serve(model_path, *args, metrics="127.0.0.1:0")
            rest = collect(rx, EXPECTED - len(first))
            assert not (set(rest) & set(first)), "a decision came twice"
            assert quiet(rx) == []
            got = first | rest
            assert got == reference  # none missing, none twice, values identical
            assert rx.gaps == 0
            assert scrape(metrics)["edged_nats_duplicate_decisions_total"] >= 5
        assert stop(proc) == 0
    finally:
        kill(proc)


def test_two_instances_on_disjoint_partitions_serve_one_subject_space(tmp_path, nats_url, model_path,
                                                                      reference):
    from edged.jetstream import partition

    owners = {partition(s, 4) < 2 for s in STREAMS}
    assert owners == {True, False}, "STREAMS must fall on both halves of 4 partitions"
    common = ["--ingest", nats_url, "--publish", nats_url, "--partition-count", "4"]
    a, (_, _, metrics_a), _ = start_serve(model_path, *common, "--partitions", "0-1", metrics="127.0.0.1:0")
    b, (_, _, metrics_b), _ = start_serve(model_path, *common, "--partitions", "2,3", metrics="127.0.0.1:0")
    try:
        with Sender(nats_url, partition_count=4) as tx, Subscriber(nats_url, deliver="all") as rx:
            for s, t, ch, until in workload():
                tx.send(s, t, ch, until=until)
            assert collect(rx, EXPECTED) == reference
            assert quiet(rx, 0.5) == []
        for url, mine in ((metrics_a, True), (metrics_b, False)):
            assert scrape(url)["edged_streams_active"] == sum((partition(s, 4) < 2) == mine for s in STREAMS)
        assert stop(a) == 0 and stop(b) == 0
    finally:
        kill(a)
        kill(b)


def test_serve_checks_the_dedup_window_edged_out_has(tmp_path, nats_url, model_path):
    """An EDGED_OUT created beforehand (by an operator, or by a client with other
    settings) with a window too short for the checkpoint interval, or longer than
    --idle-timeout: edged serve refuses to start (exit 2) and names both values; without
    --state-dir it serves and warns that a restart stores old decisions again."""
    import asyncio
    import sys

    import nats
    from nats.js import api

    from tests.conftest import ROOT

    async def create_out() -> None:
        nc = await nats.connect(nats_url)
        await nc.jetstream().add_stream(api.StreamConfig(
            name="EDGED_OUT", subjects=["edged.out.*"], storage=api.StorageType.FILE, duplicate_window=30))
        await nc.close()

    asyncio.run(create_out())
    serve = [sys.executable, "-m", "edged.cli", "serve", "--model", str(model_path), "--ingest", nats_url,
             "--publish", nats_url, "--metrics", "off"]
    for flags, message in ((["--state-dir", str(tmp_path / "s"), "--checkpoint-interval", "60"],
                            "EDGED_OUT's duplicate window 30s < --checkpoint-interval 60s + 60s"),
                           (["--idle-timeout", "20", "--nats-dedup-window", "20"],
                            "EDGED_OUT's duplicate window 30s > --idle-timeout 20s")):
        out = subprocess.run([*serve, *flags], cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT * 2)
        assert out.returncode == 2 and message in out.stderr, out.stderr
    proc, _, lines = start_serve(model_path, "--ingest", nats_url, "--publish", nats_url)
    try:
        assert any("without --state-dir: a restart replays each partition" in line and
                   "older than EDGED_OUT's duplicate window 30s are stored again" in line for line in lines), lines
        assert stop(proc) == 0
    finally:
        kill(proc)


def test_bad_frames_on_nats_rejected_with_reason_and_good_ones_served(nats_url, model_path):
    from edged.jetstream import partition
    from edged.protocol import encode_frame

    # another stream's subject in a's partition: read in order with a's frames
    other = next(s for s in (f"x{i}" for i in range(1000)) if partition(s, 8) == partition("a", 8))
    proc, (_, _, metrics), _ = start_serve(model_path, "--ingest", nats_url, "--publish", nats_url,
                                           "--partition-count", "8", metrics="127.0.0.1:0")
    try:
        with Sender(nats_url) as tx, Subscriber(nats_url, streams=("a",), deliver="all") as rx:
            tx.send_frame(b"\xc1 not msgpack", "a")
            tx.send_frame(encode_frame("a", 0, [1], [99], until=8), "a")  # channel out of range
            tx.send("a", [0], [1], until=HOP)
            # a plain frame of a known stream, but on another stream's subject
            tx.send_frame(encode_frame("a", 1, [HOP + 1], [2], until=2 * HOP), other)
            for k in range(1, FRAMES):
                tx.send("a", [k * HOP], [1], until=(k + 1) * HOP)
            seqs = [rx.recv(TIMEOUT).seq for _ in range(FRAMES - WINDOW // HOP + 1)]
            assert seqs == list(range(len(seqs)))
        m = scrape(metrics)
        for reason in ("decode", "stream", "channel"):
            assert m[f"edged_frames_rejected_total{{reason={reason}}}"] == 1, reason
        assert stop(proc) == 0
    finally:
        kill(proc)


def test_frames_aged_out_before_a_replay_are_counted_and_streams_warm_restart(tmp_path, nats_url,
                                                                              model_path):
    from edged.jetstream import in_stream, partition

    args = ["--ingest", nats_url, "--publish", nats_url, "--state-dir", str(tmp_path / "state"),
            "--nats-max-age", "1"]
    proc, _, _ = start_serve(model_path, *args)
    try:
        with Sender(nats_url) as tx, Subscriber(nats_url, streams=("a",)) as rx:
            for k in range(WINDOW // HOP):
                tx.send("a", [k * HOP], [1], until=(k + 1) * HOP)
            assert rx.recv(TIMEOUT).seq == 0
            assert stop(proc) == 0  # SIGTERM: checkpoint with the resume point
            for k in range(WINDOW // HOP, WINDOW // HOP + 5):  # published while down ...
                tx.send("a", [k * HOP], [1], until=(k + 1) * HOP)
            name = in_stream(partition("a", 8))
            deadline = time.monotonic() + TIMEOUT
            while tx._loop.call(tx.js.stream_info(name)).state.messages:  # ... and aged out
                assert time.monotonic() < deadline, "messages did not age out"
                time.sleep(0.1)
            proc, (_, _, metrics), lines = start_serve(model_path, *args, metrics="127.0.0.1:0")
            k = WINDOW // HOP + 5
            tx.send("a", [k * HOP], [1], until=(k + 1) * HOP)
            d = rx.recv(TIMEOUT)
            assert d is not None and (d.seq, d.t) == (1, WINDOW + HOP)  # warm: the state carried on
            deadline = time.monotonic() + TIMEOUT
            while scrape(metrics)["edged_nats_frames_lost_total"] < 5:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert scrape(metrics)["edged_nats_frames_lost_total"] == 5
        assert stop(proc) == 0
    finally:
        kill(proc)


def test_send_and_listen_commands_over_nats(tmp_path, nats_url, model_path):
    import sys

    from tests.conftest import ROOT

    t = np.arange(0, 120, 3)
    np.savez(tmp_path / "spikes.npz", t=t, ch=t % 8)
    proc, _, _ = start_serve(model_path, "--ingest", nats_url, "--publish", nats_url)
    try:
        edged = [sys.executable, "-m", "edged.cli"]
        subprocess.run([*edged, "send", "--connect", nats_url, "--file", str(tmp_path / "spikes.npz"),
                        "--stream", "rig/3", "--rate", "0", "--frame-events", "7"],
                       check=True, timeout=TIMEOUT * 2, cwd=ROOT, capture_output=True)
        n = (t[-1] + 1 - WINDOW) // HOP + 1
        out = subprocess.run([*edged, "listen", "--connect", nats_url, "--from-start", "--count", str(n),
                              "--json", "--duration", str(TIMEOUT)], check=True, timeout=TIMEOUT * 2,
                             cwd=ROOT, capture_output=True, text=True)
        got = [json.loads(line) for line in out.stdout.splitlines()]
        assert [(d["stream"], d["seq"]) for d in got] == [("rig/3", k) for k in range(n)]
        assert f"{n} decisions, 0 missing" in out.stderr
        assert stop(proc) == 0
    finally:
        kill(proc)


def test_bench_e2e_nats_row_measures_latency_and_cpu(model_path):
    """The NATS row of ``edged bench e2e`` on a few frames (the benchmark itself is not run)."""
    from edged.bench.e2e import _frames, nats_latency
    from edged.model import load

    model = load(model_path)
    frames = _frames(["n0", "n1"], 40, 16, model, np.random.default_rng(0), prime=True)
    out = nats_latency(str(model_path), frames, fps=400, max_streams=8)
    assert out["sent"] == 40 and out["received"] == 40 and out["missing"] == 0
    assert 0 < out["client_p50"] <= out["client_p99"] < 5.0
    assert 0 < out["daemon_p50"] < out["client_p99"]
    assert 0 < out["cpu_per_frame"] < 1.0


def test_decisions_unconfirmed_across_a_server_restart_are_published_again(tmp_path, model_path):
    """The NATS server stops (SIGSTOP) while edged publishes decisions, is killed and
    started again: those publishes never get their acks. edged publishes them again (same
    Nats-Msg-Id) before any later one, so EDGED_OUT holds every decision once, in order,
    and its checkpoints, which wait for every confirmation, succeed again."""

    n = 3000
    server, url = start_nats(tmp_path)
    proc = None
    try:
        proc, metrics = serve_a_backlog(url, model_path, ["a"], n, "--state-dir", str(tmp_path / "state"))
        server = lose_the_server(server, url, metrics, tmp_path)
        restarted = scrape(metrics)['edged_checkpoint_writes_total{result=ok}']
        deadline = time.monotonic() + TIMEOUT
        while (m := scrape(metrics))["edged_decisions_total"] < n - WINDOW // HOP + 1 or \
                m['edged_checkpoint_writes_total{result=ok}'] <= restarted:
            assert time.monotonic() < deadline, {k: v for k, v in m.items() if "nats" in k or "checkpoint" in k}
            time.sleep(0.1)
        assert m["edged_nats_publish_errors_total"] > 0  # the restart did cost confirmations
        with Subscriber(url, deliver="all") as rx:
            seqs = [d.seq for d in iter(lambda: rx.recv(3.0), None) if d.stream == "a"]
        assert seqs == list(range(n - WINDOW // HOP + 1))  # every decision, once, in order
        assert stop(proc) == 0
    finally:
        kill(proc)
        server.kill()
        server.wait()


def test_decisions_stay_in_seq_order_across_a_server_restart_and_a_replay(tmp_path, model_path):
    """Decisions of three streams are in flight when the NATS server stops (SIGSTOP) and
    is killed and started again; then edged is killed (-9) and replays from its
    checkpoint. A subscriber reading EDGED_OUT from the start gets each stream's
    decisions in seq order, none missing, none twice: a decision lost with the server's
    connection is never overtaken by a later one of its stream."""
    from edged.jetstream import OUT_STREAM

    names, n = ("a", "b_2", "rig/3 ü.x"), 1000
    server, url = start_nats(tmp_path)
    args = ["--ingest", url, "--publish", url, "--state-dir", str(tmp_path / "state"),
            "--checkpoint-interval", "1"]
    proc = None
    try:
        proc, metrics = serve_a_backlog(url, model_path, names, n, "--state-dir", str(tmp_path / "state"))
        server = lose_the_server(server, url, metrics, tmp_path)
        with Sender(url) as probe:  # edged reconnected and stores decisions again ...
            stored = probe._loop.call(probe.js.stream_info(OUT_STREAM)).state.messages
            deadline = time.monotonic() + TIMEOUT
            while probe._loop.call(probe.js.stream_info(OUT_STREAM)).state.messages == stored:
                assert time.monotonic() < deadline, "edged published nothing after the restart"
                time.sleep(0.05)
        proc.kill()  # ... then kill -9: the replay republishes from the last checkpoint
        proc.wait()
        proc.stderr.close()
        proc, _, _ = start_serve(model_path, *args)
        want = n - WINDOW // HOP + 1
        seqs: dict[str, list[int]] = {s: [] for s in names}
        with Subscriber(url, deliver="all") as rx:
            deadline = time.monotonic() + TIMEOUT
            while any(len(v) < want for v in seqs.values()):
                assert time.monotonic() < deadline, {s: len(v) for s, v in seqs.items()}
                d = rx.recv(0.2)
                if d is not None:
                    seqs[d.stream].append(d.seq)
            assert quiet(rx) == []
        for s in names:
            assert seqs[s] == list(range(want)), (s, next(i for i, q in enumerate(seqs[s]) if q != i))
        assert stop(proc) == 0
    finally:
        kill(proc)
        server.kill()
        server.wait()


def test_a_checkpoint_waiting_on_a_stopped_server_keeps_the_watchdog_fed(tmp_path, model_path, monkeypatch):
    """The NATS server stops (SIGSTOP) while decisions await their acks and checkpoints
    come due every second. The serving loop does not wait for NATS: it goes on pinging
    systemd's watchdog at its interval; the checkpoint fails once it has waited 3 s
    (logged, counted), and one succeeds after the server is back. EDGED_OUT then holds
    every decision once, in order."""
    import socket
    import uuid

    n = 3000
    path = f"/tmp/edged-notify-{uuid.uuid4().hex[:12]}"  # short: sun_path is 108 bytes
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(path)
    notify.settimeout(0.05)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")  # systemd kills after 1 s without a ping
    server, url = start_nats(tmp_path)
    proc = None
    try:
        proc, metrics = serve_a_backlog(url, model_path, ["a"], n, "--state-dir", str(tmp_path / "state"))
        server.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        failed = scrape(metrics)["edged_checkpoint_writes_total{result=error}"]
        pings = []
        while time.monotonic() < stopped + 5 or \
                scrape(metrics)["edged_checkpoint_writes_total{result=error}"] == failed:
            assert time.monotonic() < stopped + TIMEOUT, "no checkpoint failed while the server was stopped"
            try:
                while True:
                    if notify.recv(4096) == b"WATCHDOG=1":
                        pings.append(time.monotonic())
            except TimeoutError:
                pass
        gaps = np.diff([stopped, *pings, time.monotonic()])
        assert gaps.max() < 1.0, f"the watchdog went {gaps.max():.2f} s without a ping"
        notify.close()  # no longer read: once its queue (10 datagrams) is full, edged's sends block
        os.unlink(path)
        server.send_signal(signal.SIGCONT)
        written = scrape(metrics)["edged_checkpoint_writes_total{result=ok}"]
        deadline = time.monotonic() + TIMEOUT
        while scrape(metrics)["edged_checkpoint_writes_total{result=ok}"] == written:
            assert time.monotonic() < deadline, "no checkpoint after the server came back"
            time.sleep(0.05)
        with Subscriber(url, deliver="all") as rx:
            seqs = [d.seq for d in iter(lambda: rx.recv(3.0), None) if d.stream == "a"]
        assert seqs == list(range(n - WINDOW // HOP + 1))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0
        assert re.search(r"checkpoint to \S+ failed: NATS did not confirm \d+ decisions within 3s",
                         proc.stderr.read())
    finally:
        kill(proc)
        server.send_signal(signal.SIGCONT)
        server.kill()
        server.wait()
        notify.close()
        if os.path.exists(path):
            os.unlink(path)


def test_decisions_nats_does_not_take_pause_ingest_and_all_arrive_once_in_order_after(tmp_path, nats_url,
                                                                                        model_path):
    """EDGED_OUT takes 100 messages and refuses the rest while a replay of 3,000 frames
    catches up: past --nats-max-unconfirmed decisions awaiting confirmation edged stops
    pulling input (the log still holds frames for it), the backlog stays within the limit
    plus the frames already pulled, checkpoints fail rather than record frames whose
    decisions are unconfirmed, and a kill -9 then replays. Once EDGED_OUT takes
    decisions again, every one arrives, once, in order, and ingest resumes."""
    from nats.js import api

    from edged.jetstream import FETCH, OUT_STREAM, in_stream, partition

    n, limit, stored = 3000, 300, 100
    want = n - WINDOW // HOP + 1
    p = partition("a", 8)
    args = ["--ingest", nats_url, "--publish", nats_url, "--state-dir", str(tmp_path / "state"),
            "--checkpoint-interval", "1", "--nats-max-unconfirmed", str(limit)]
    proc = None
    with Sender(nats_url) as tx:  # creates the streams
        js, call = tx.js, tx._loop.call
        out = call(js.stream_info(OUT_STREAM)).config
        out.max_msgs, out.discard = stored, api.DiscardPolicy.NEW
        call(js.update_stream(out))
        send_frames(tx, range(n))  # a backlog: the replay decides faster than NATS confirms
        call(js.publish_async_completed())

        def unread() -> int:
            return call(js.consumer_info(in_stream(p), f"edged-{p}")).num_pending

        def paused(metrics: str, failed: float) -> dict:
            """Scrape until paused and ``failed`` checkpoints failed; each scrape within bounds."""
            deadline = time.monotonic() + TIMEOUT
            while True:
                m = scrape(metrics)
                assert m["edged_nats_unconfirmed_decisions"] <= limit + 3 * FETCH, m  # one fetch + hand-over
                if m["edged_nats_ingest_paused"] == 1 and m["edged_checkpoint_writes_total{result=error}"] >= failed:
                    return m
                assert time.monotonic() < deadline, {k: v for k, v in m.items() if "nats" in k or "checkpoint" in k}
                time.sleep(0.05)

        try:
            proc, (_, _, metrics), _ = start_serve(model_path, *args, metrics="127.0.0.1:0")
            m = paused(metrics, 1)  # a checkpoint waited 3 s for confirmations, in vain
            left = unread()
            m2 = paused(metrics, m["edged_checkpoint_writes_total{result=error}"] + 1)
            assert m2["edged_frames_total"] == m["edged_frames_total"] and unread() == left > 0  # nothing pulled
            assert m2["edged_nats_unconfirmed_decisions"] > limit // 2
            assert m2["edged_nats_ingest_pauses_total"] >= 1
            proc.kill()  # kill -9 while paused: the replay starts from the last checkpoint
            proc.wait()
            proc.stderr.close()
            proc, (_, _, metrics), _ = start_serve(model_path, *args, metrics="127.0.0.1:0")
            paused(metrics, 0)
            out.max_msgs = -1  # NATS takes decisions again
            call(js.update_stream(out))
            with Subscriber(nats_url, streams=("a",), deliver="all") as rx:
                seqs = []
                deadline = time.monotonic() + TIMEOUT
                while len(seqs) < want:
                    assert time.monotonic() < deadline, f"{len(seqs)} of {want} decisions"
                    d = rx.recv(0.2)
                    if d is not None:
                        seqs.append(d.seq)
                assert quiet(rx) == []
            assert seqs == list(range(want))  # every decision, once, in order
            deadline = time.monotonic() + TIMEOUT
            while (m := scrape(metrics))["edged_nats_ingest_paused"] or m["edged_nats_unconfirmed_decisions"]:
                assert time.monotonic() < deadline, m
                time.sleep(0.05)
            assert unread() == 0
            assert stop(proc) == 0
        finally:
            kill(proc)


def frame_events(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``k`` of stream "a" in the tests below: 4 channels at every step of its hop."""
    return np.repeat(np.arange(k * HOP, (k + 1) * HOP), 4), np.tile(np.arange(4), HOP)


def send_frames(tx, ks) -> None:
    for k in ks:
        tx.send("a", *frame_events(k), until=(k + 1) * HOP)


def offline(model_path, frames: int) -> list[tuple]:
    """``(seq, t, scores, lzc)`` of an uninterrupted run over frames ``0 .. frames - 1``."""
    from edged.model import load
    from edged.offline import decisions

    t, ch = (np.concatenate(x) for x in zip(*map(frame_events, range(frames))))
    return [(d["seq"], d["t"], tuple(d["scores"]), tuple(d["lzc"]))
            for d in decisions(load(model_path), t, ch, frames * HOP, "a")]


def got(d) -> tuple:
    return d.seq, d.t, d.scores, d.lzc


async def pull(nc, subject: str, n: int) -> list:
    """``n`` messages of one pull request (``no_wait``) on ``subject``."""
    import asyncio

    box: asyncio.Queue = asyncio.Queue()
    sub = await nc.subscribe(nc.new_inbox(), cb=box.put)
    await nc.publish(subject, json.dumps({"batch": n, "no_wait": True}).encode(), reply=sub.subject)
    try:
        return [await asyncio.wait_for(box.get(), 5) for _ in range(n)]
    finally:
        await sub.unsubscribe()


def test_frames_delivered_elsewhere_are_fetched_again_not_counted_lost(nats_url, model_path):
    """Frames the durable consumer delivered but edged never got (here another client
    pulled them on edged's consumer while edged was stopped; in life, a batch lost in a
    reconnect) are still in the log: edged fetches them again, its decisions are those of
    an uninterrupted run, and nothing counts as lost."""
    from edged.jetstream import in_stream, partition

    proc, (_, _, metrics), _ = start_serve(model_path, "--ingest", nats_url, "--publish", nats_url,
                                           metrics="127.0.0.1:0")
    stream, durable = in_stream(partition("a", 8)), f"edged-{partition('a', 8)}"
    frames, first = WINDOW // HOP + 6, WINDOW // HOP
    try:
        with Sender(nats_url) as tx, Subscriber(nats_url, streams=("a",), deliver="all") as rx:
            send_frames(tx, range(first))
            decided = [rx.recv(TIMEOUT)]
            proc.send_signal(signal.SIGSTOP)
            js = tx.js
            deadline = time.monotonic() + TIMEOUT  # its pull request expires meanwhile
            while tx._loop.call(js.consumer_info(stream, durable)).num_waiting:
                assert time.monotonic() < deadline, "edged's pull request did not expire"
                time.sleep(0.1)
            send_frames(tx, range(first, frames))
            tx._loop.call(js.publish_async_completed())
            taken = tx._loop.call(pull(tx.nc, f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}", 2))
            assert all(m.data for m in taken), [m.headers for m in taken]  # another client took two
            proc.send_signal(signal.SIGCONT)
            decided += [rx.recv(TIMEOUT) for _ in range(frames - first)]
        assert [got(d) for d in decided] == offline(model_path, frames)
        assert scrape(metrics)["edged_nats_frames_lost_total"] == 0
        assert stop(proc) == 0
    finally:
        kill(proc)


def test_a_deleted_consumer_is_recreated_where_edged_stopped_reading(nats_url, model_path):
    """An operator (or a server that lost its state) deletes edged's consumer: the pending
    pull request gets a status, edged recreates the consumer at its next frame and serves on."""
    from edged.jetstream import in_stream, partition

    proc, _, _ = start_serve(model_path, "--ingest", nats_url, "--publish", nats_url)
    frames, first = WINDOW // HOP + 4, WINDOW // HOP
    try:
        with Sender(nats_url) as tx, Subscriber(nats_url, streams=("a",), deliver="all") as rx:
            send_frames(tx, range(first))
            decided = [rx.recv(TIMEOUT)]
            p = partition("a", 8)
            tx._loop.call(tx.js.delete_consumer(in_stream(p), f"edged-{p}"))
            send_frames(tx, range(first, frames))
            decided += [rx.recv(TIMEOUT) for _ in range(frames - first)]
        assert None not in decided, "the partition stopped being read"
        assert [got(d) for d in decided] == offline(model_path, frames)
        assert stop(proc) == 0
    finally:
        kill(proc)


def test_clients_that_cannot_connect_leave_no_thread_running(monkeypatch):
    import socket
    import threading

    from edged import jetstream

    monkeypatch.setattr(jetstream, "CONNECT_TIMEOUT", 0.5)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"nats://127.0.0.1:{s.getsockname()[1]}"
    before = set(threading.enumerate())
    for client in (Sender, Subscriber):
        with pytest.raises(OSError, match="no NATS server answered"):
            client(url)
    assert [t.name for t in set(threading.enumerate()) - before] == []


def test_a_nats_call_that_hangs_is_cancelled_and_named():
    """A coroutine on the client loop that outlasts its timeout is cancelled, and the
    error says which call it was (it reaches the operator as "cannot serve: ...")."""
    import asyncio

    from edged.jetstream import Loop

    started, cancelled = [], []

    async def _open():
        started.append(1)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(1)
            raise

    loop = Loop("edged-test")
    try:
        with pytest.raises(OSError, match=r"_open did not finish within 0.2 s"):
            loop.call(_open(), 0.2)
        deadline = time.monotonic() + 5
        while not cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        assert started and cancelled
    finally:
        loop.stop()


def test_a_slow_nats_subscriber_holds_a_bounded_buffer(nats_url, monkeypatch):
    """Reading the whole decision log from the start with a slow reader: the subscriber
    never holds more than its buffer, and every decision arrives, in order."""
    import asyncio

    import nats

    from edged import jetstream
    from edged.protocol import encode_decision

    async def publish(n: int) -> None:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        await jetstream.ensure_streams(js, (), jetstream.Retention.defaults())
        for i in range(n):
            await js.publish(jetstream.out_subject("s"), encode_decision(
                "s", 1, i, 16 * i, "a", 0, [1.0], [0.5], 0.0, 0.0, 0.0, "m" * 64))
        await nc.close()

    asyncio.run(publish(400))
    monkeypatch.setattr(jetstream, "SUBSCRIBER_BUFFER", 40)
    got, most = [], 0
    with jetstream.Subscriber(nats_url, deliver="all") as rx:
        deadline = time.monotonic() + 60
        while len(got) < 400 and time.monotonic() < deadline:
            most = max(most, rx._box.qsize())
            d = rx.recv(timeout=1.0)
            if d is not None:
                got.append(d.seq)
                if len(got) % 50 == 0:
                    time.sleep(0.05)  # a slow reader
    assert got == list(range(400))
    assert most <= 40


def test_a_sender_whose_acks_are_lost_does_not_block_for_ever(tmp_path, monkeypatch):
    """With the server frozen no ack comes back: each pipelined frame counts as failed
    after ACK_WAIT, freeing its slot, so sends go on and close reports the failures."""
    from edged import jetstream

    monkeypatch.setattr(jetstream, "ACK_WAIT", 0.3)
    proc, url = start_nats(tmp_path)
    try:
        tx = Sender(url, max_pending=4, timeout=15)  # (without the expiry: zmq.Again)
        tx.send("a", [0], [0])
        proc.send_signal(signal.SIGSTOP)  # acks stop coming
        t0 = time.monotonic()
        for k in range(1, 10):
            tx.send("a", [k], [0])  # past 4 pending: waits for slots the expiry frees
        assert time.monotonic() - t0 < 10
        with pytest.raises(RuntimeError, match="no ack within 0.3 s"):
            tx.close()
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        proc.wait(10)


def test_a_publish_that_raises_holds_no_ack_slot_and_no_other_stream(tmp_path, monkeypatch):
    """nats-py's ``publish_async`` takes a slot of its pending limit and registers the ack
    future before it sends, and keeps both for good if the send raises (here a payload
    over the server's max_payload; in life also a reconnect whose buffer is full). Each
    retry of such a decision leaves no slot behind (4,000 would wedge every publish), and
    its stream does not hold up the others."""
    import asyncio
    import logging

    import zmq
    from prometheus_client import CollectorRegistry

    from edged import jetstream
    from edged.config import resolve
    from edged.metrics import Metrics

    monkeypatch.setattr(jetstream, "RETRY_S", 0.02)
    server, url = start_nats(tmp_path)
    ctx = zmq.Context()
    cfg = resolve({"ingest_endpoint": url, "publish_endpoint": url}, env={})
    t = jetstream.Transport(ctx, cfg, Metrics(CollectorRegistry()), logging.getLogger("edged.test"),
                           decision_bytes=100)
    tries = []
    try:
        t.bind()
        publish_async = t.js.publish_async

        async def counted(subject, payload, **kw):
            tries.append(subject)
            return await publish_async(subject, payload, **kw)

        t.js.publish_async = counted
        t.start({})
        big = b"x" * (t.nc.max_payload + 1)
        streams = ["big", *"aaaaa"]
        t.send_decisions(streams, [0, *range(5)], Packed.of(streams, [big, *[b"d"] * 5]))

        async def state():
            await asyncio.sleep(0)  # the done callbacks of cancelled futures run first
            return t.js.publish_async_pending(), len(t._unconfirmed)

        deadline = time.monotonic() + TIMEOUT
        while tries.count(jetstream.out_subject("big")) < 20 or t.loop.call(state(), 5) != (0, 1):
            assert time.monotonic() < deadline, f"ack slots held, decisions unconfirmed: {t.loop.call(state(), 5)}"
            time.sleep(0.01)
    finally:
        t.close(0)
        ctx.term()
        server.terminate()
        server.wait(10)


def test_a_sender_whose_sends_raise_holds_no_ack_slot_and_sends_again_after(tmp_path, monkeypatch):
    """Frames nats-py cannot send raise from ``send``: over the server's max_payload, and
    while the server is away with a reconnect buffer that takes nothing. Each would keep
    one of nats-py's ack slots for good (here 4): the Sender frees them, so it sends
    again once the server is back and every frame sent is confirmed. A frame ``send``
    could not send uses no seq."""
    import functools

    import nats
    from nats.errors import MaxPayloadError, OutboundBufferLimitError

    monkeypatch.setattr(nats, "connect", functools.partial(nats.connect, pending_size=0))
    proc, url = start_nats(tmp_path)
    tx = Sender(url, max_pending=4, timeout=5)  # (without the fix: zmq.Again once 4 are held)
    try:
        big = b"x" * (tx.nc.max_payload + 1)
        for _ in range(10):
            with pytest.raises(MaxPayloadError):
                tx.send_frame(big, "a")
        tx.send("a", [0], [0])
        wait_for(lambda: tx.js.publish_async_pending() == 0, TIMEOUT, "the frame's ack")
        proc.terminate()
        proc.wait(10)
        wait_for(lambda: not tx.nc.is_connected, TIMEOUT, "the Sender noticing the server left")
        for k in range(10):
            with pytest.raises(OutboundBufferLimitError):
                tx.send("a", [k], [0])
        assert tx.seq["a"] == 1  # a frame not sent used no seq
        proc, _ = start_nats(tmp_path, port=int(url.rsplit(":", 1)[1]))
        wait_for(lambda: tx.nc.is_connected, TIMEOUT, "the Sender reconnecting")
        for k in range(10):
            tx.send("b", [k], [0])
        assert tx.send("a", [1], [0]) == 1
    finally:
        try:
            tx.close()  # raises if a frame sent went unconfirmed
        finally:
            proc.terminate()
            proc.wait(10)


def test_serve_refuses_a_server_whose_max_payload_a_decision_does_not_fit(tmp_path):
    """A decision over the server's max_payload (payload and header) could never be
    stored: edged would publish it again for ever and, with back-pressure, stop pulling
    input. edged serve refuses to start (exit 2) naming both sizes; a model whose largest
    decision fits passes the check."""
    import sys

    from edged import jetstream
    from edged.protocol import decision_bound
    from tests.conftest import ROOT

    server, url = start_nats(tmp_path, max_payload=1024)
    try:
        for classes, refused in ((100, True), (2, False)):
            model = small_model(classes=classes)
            path = tmp_path / f"model-{classes}.npz"
            save(path, model)
            model = load(path)  # its sha256, the decisions' model id
            largest = jetstream.message_bound(decision_bound(list(model.classes), model.n_out, model.sha256))
            assert (largest > 1024) == refused, largest
            if not refused:  # serves, and stores a decision of the longest stream id
                proc, _, _ = start_serve(path, "--ingest", url, "--publish", url)
                try:
                    stream = "é" * 64  # 128 UTF-8 bytes, a "~" token
                    with Sender(url) as tx, Subscriber(url, streams=(stream,), deliver="all") as rx:
                        for k in range(WINDOW // HOP):
                            tx.send(stream, [k * HOP], [1], until=(k + 1) * HOP)
                        d = rx.recv(TIMEOUT)
                        assert d is not None and d.seq == 0
                    assert stop(proc) == 0
                finally:
                    kill(proc)
                continue
            out = subprocess.run([sys.executable, "-m", "edged.cli", "serve", "--model", str(path),
                                  "--ingest", url, "--publish", url, "--metrics", "off"],
                                 cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT * 2)
            assert out.returncode == 2, out.stderr
            assert f"max_payload is 1024 bytes, but a decision of this model can take {largest} bytes" \
                in out.stderr, out.stderr
    finally:
        server.terminate()
        server.wait(10)
