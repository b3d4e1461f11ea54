"""RELIABILITY.md test cases not covered elsewhere (see each docstring for its number):
hostile frames through the live daemon, slow/stopped subscribers, a publisher that never
blocks, ingest back-pressure, kill -9 + restart seen as a new epoch, a bounded soak, and
a stateful protocol model. Real loopback sockets, LINGER 0, bounded loops, waits on
conditions with deadlines."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import numpy as np
import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families

from conftest import join, small_model, start_serve
from edged.client import PoissonSource, Sender, Subscriber
from edged.model import load, save
from test_service import Served, wait_for

TIMEOUT = 20.0


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "small.npz"
    save(path, small_model(window=32, hop=8))
    return load(path)


def rss_bytes(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) * 1024


def fd_count(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_hostile_frames_through_the_live_daemon(model):
    """Cases 2 and 3: the array-header bomb and 100 000-deep nesting are rejected and
    counted, RSS does not grow, the loop stays alive and serves the next frame."""
    s = Served(model, streams_max=4)
    try:
        for _ in range(20):  # reach steady state before measuring
            s.tx.send_frame(b"\xdd\x7f\xff\xff\xff")
        wait_for(lambda: s.value("edged_frames_rejected_total", reason="oversize") == 20, what="warm rejects")
        before = rss_bytes()
        for _ in range(200):
            s.tx.send_frame(b"\xdd\x7f\xff\xff\xff")
        s.tx.send_frame(b"\x91" * 100_000 + b"\x00")
        s.tx.send_frame(b"\x81" * 100_000 + b"\x00")
        wait_for(lambda: s.value("edged_frames_rejected_total", reason="oversize") == 220, what="bomb rejects")
        wait_for(lambda: s.value("edged_frames_rejected_total", reason="decode")
                 + s.value("edged_frames_rejected_total", reason="schema") == 2, what="nesting rejects")
        assert rss_bytes() - before < 4 << 20  # the frames themselves are 200 KiB
        s.tx.send("ok", [1], [0], until=model.window)
        assert s.collect("ok", 1)[0].t == model.window
        assert s.thread.is_alive()
    finally:
        s.close()


def test_stopped_subscriber_does_not_stall_others_and_publish_never_blocks(model):
    """Cases 6 and 7: a subscriber that stops reading (tiny RCVHWM and kernel buffer)
    loses decisions, sees the gap once it reads again; a reading subscriber gets every
    seq; with the stuck one attached, each publish returns at once."""
    from edged.protocol import decode_decision

    s = Served(model, streams_max=4, publish_hwm=2000)
    stuck = s.ctx.socket(zmq.SUB)  # like a SIGSTOPped consumer: nothing reads it
    stuck.rcvhwm = 10
    stuck.rcvbuf = 4096  # set before connect: a small kernel buffer too
    stuck.linger = 0
    stuck.setsockopt(zmq.SUBSCRIBE, b"")
    stuck.connect(s.endpoints["publish"])
    try:
        for i in range(400):  # slow joiner
            s.tx.send("~warm", [], [], until=model.window + i * model.hop)
            if stuck.poll(50):
                break
        else:
            raise AssertionError("stuck subscriber never joined")
        per_frame, frames = 500, 100
        clock = 0
        for i in range(frames):  # paced so the reading subscriber keeps up
            clock += per_frame * model.hop
            s.tx.send("flood", [], [], until=clock + model.window)
            got = s.collect("flood", per_frame * (i + 1) + 1)
        assert [d.seq for d in got] == list(range(len(got)))  # contiguous for the reader
        assert s.rx.gaps == 0

        # the stopped one resumes reading: it lost decisions and can tell (seq gaps)
        seqs = []

        def read_stuck(limit):
            for _ in range(limit):  # bounded
                if not stuck.poll(200):
                    return
                topic, body = stuck.recv_multipart()
                if topic == b"flood":
                    seqs.append(decode_decision(body)["seq"])

        read_stuck(200000)
        assert len(seqs) < len(got)
        s.tx.send("flood", [], [], until=clock + model.window + model.hop)  # one more decision
        read_stuck(10)
        assert seqs[-1] == len(got) and seqs == sorted(seqs)
        assert any(b - a > 1 for a, b in zip(seqs, seqs[1:])), "no gap seen by the stopped subscriber"

        # publish never blocks: time the daemon's own PUB with a full, stuck subscriber on it
        s.svc.request_stop()
        s.thread.join(TIMEOUT)
        pub, payload = s.svc.sockets.publish, b"x" * 200
        for _ in range(400):  # the resumed subscriber is the stuck one again: make sure it is joined
            pub.send_multipart([b"~raw", payload], zmq.NOBLOCK)
            if stuck.poll(10):
                break
        times = np.empty(60000)
        for i in range(times.size):  # the first ~2000 + kernel buffers fill its pipe
            t0 = time.perf_counter()
            try:
                pub.send_multipart([b"~raw", payload], zmq.NOBLOCK)
            except zmq.Again:
                pass
            times[i] = time.perf_counter() - t0
        times = times[-20000:]
        # RELIABILITY says < 50 us per publish; the median holds that here, the tail is the
        # shared 2-core box preempting us (measured p99 ~90 us), not blocking: a blocking
        # send to a full subscriber would never return.
        p50, p99 = np.percentile(times, [50, 99])
        assert p50 < 50e-6 and p99 < 1e-3 and times.max() < 0.1, (p50, p99, times.max())
    finally:
        stuck.close(linger=0)
        s.close()


def test_ingest_back_pressure_when_processing_stalls(model):
    """Case 8 (PULL ingest): a stalled loop makes the sender's non-blocking send raise
    Again after about the high-water marks; the daemon's memory stays bounded; every
    frame queued is processed once the loop resumes."""
    s = Served(model, streams_max=4, ingest_hwm=50)
    gate = threading.Event()
    admit = s.svc.admit

    def stalled(buf, now, batch, frame=None):
        gate.wait(TIMEOUT)
        return admit(buf, now, batch, frame)

    before = rss_bytes()
    tx = Sender(s.endpoints["ingest"], context=s.ctx, hwm=10, timeout=0, linger=0)
    try:
        base = s.value("edged_frames_total")
        s.svc.admit = stalled
        rng = np.random.default_rng(0)
        sent = 0
        again = False
        for i in range(5000):  # bounded
            ch = rng.integers(0, model.n_in, 8000)  # ~96 KiB frames
            try:
                tx.send("bp", np.full(8000, i), ch, until=i + 1)
            except zmq.Again:  # (that frame used no seq)
                again = True
                break
            sent += 1
        assert again, "a non-blocking send never hit the high-water mark"
        assert sent < 1000, sent  # HWMs (50 + 10) plus what TCP buffers hold
        assert rss_bytes() - before < 256 << 20
        gate.set()
        wait_for(lambda: s.value("edged_frames_total") - base == sent, what="queued frames processed")
        assert s.value("edged_frames_rejected_total", reason="late") == 0
    finally:
        gate.set()
        tx.close()
        s.close()


def free_port() -> int:
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return sk.getsockname()[1]


def stop(proc) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        finally:
            proc.stderr.close()
    return proc.returncode


def test_kill_9_restart_is_a_new_epoch_not_a_gap(tmp_path):
    """Case 11: the subscriber reconnects by itself, sees a new epoch (a restart, not a
    gap), and the new epoch's seq climbs; the stream resumes from the last checkpoint."""
    model_path = tmp_path / "m.npz"
    save(model_path, small_model(window=32, hop=8))
    ports = [free_port(), free_port()]
    args = ["--ingest", f"tcp://127.0.0.1:{ports[0]}", "--publish", f"tcp://127.0.0.1:{ports[1]}",
            "--state-dir", str(tmp_path / "state"), "--checkpoint-interval", "0.05"]
    proc, (ingest, publish, _), _ = start_serve(model_path, *args)
    ctx = zmq.Context()
    restarts = []
    try:
        with Sender(ingest, context=ctx, linger=0) as tx, \
                Subscriber(publish, context=ctx, on_restart=lambda *a: restarts.append(a)) as rx:
            clock = 0

            def feed_until_decision(timeout):
                nonlocal clock
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    clock += 8
                    tx.send("r", [clock - 1], [1], until=clock + 32)
                    d = rx.recv(0.05)
                    if d is not None:
                        return d
                raise AssertionError("no decision")

            first = feed_until_decision(TIMEOUT)
            for _ in range(20):
                feed_until_decision(TIMEOUT)
            proc.kill()
            proc.wait()
            proc.stderr.close()
            while rx.recv(0.1) is not None:
                pass
            proc, _, _ = start_serve(model_path, *args)
            t0 = time.monotonic()
            d = feed_until_decision(30)
            assert d.epoch != first.epoch
            assert time.monotonic() - t0 < 5.0 + 2.0  # RECONNECT_IVL_MAX 5 s, plus slack
            seqs = [d.seq] + [feed_until_decision(TIMEOUT).seq for _ in range(10)]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
            assert rx.gaps == 0 and rx.restarts == 1 and restarts[0][1:] == (first.epoch, d.epoch)
            assert seqs[0] > 0  # resumed from the periodic checkpoint, not from zero
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        ctx.term()


def scrape(url: str) -> dict:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for sm in fam.samples:
            key = sm.name + ("{" + ",".join(f"{k}={v}" for k, v in sorted(sm.labels.items())) + "}"
                             if sm.labels else "")
            out[key] = sm.value
    return out


def soak(tmp_path, seconds: float):
    """Case 24: bounded loopback traffic (4 Poisson streams + 1 garbage frame in 50) for
    ``seconds``; RSS and fds sampled from /proc. Returns the samples and final counts."""
    model_path = tmp_path / "m.npz"
    save(model_path, small_model(window=32, hop=8))
    model = load(model_path)
    proc, (ingest, publish, metrics), _ = start_serve(model_path, metrics="127.0.0.1:0")
    ctx = zmq.Context()
    samples = []
    try:
        with Sender(ingest, context=ctx, linger=0) as tx, Subscriber(publish, context=ctx) as rx:
            join(tx, rx, model)
            while rx.recv(0.05) is not None:
                pass
            source = PoissonSource(4, 4000.0, model.n_in, 1e-3, seed=3, prefix="soak")
            start = time.monotonic()
            sent = garbage = tick = received = 0
            next_sample = start
            while (now := time.monotonic()) - start < seconds:
                tick += 1
                until, batch = source.frames(now - start)
                for stream, t, ch in batch:
                    tx.send(stream, t, ch, until=until)
                    sent += 1
                if tick % 50 == 0:
                    tx.send_frame(b"\xc1garbage")
                    garbage += 1
                if now >= next_sample:
                    samples.append((now - start, rss_bytes(proc.pid), fd_count(proc.pid)))
                    next_sample += max(seconds / 40, 0.1)
                while (d := rx.recv(0.0)) is not None:
                    received += d.stream.startswith("soak")
                target = start + tick * 0.01
                while (wait := target - time.monotonic()) > 0:  # paces by polling the subscriber
                    if (d := rx.recv(wait)) is not None:
                        received += d.stream.startswith("soak")
            probe_frames = tx.seq["probe"]
            wait_for(lambda: scrape(metrics)["edged_frames_total"] == sent + garbage + probe_frames,
                     what="every frame received")
            while (d := rx.recv(0.3)) is not None:
                received += d.stream.startswith("soak")
            m = scrape(metrics)
            gaps = rx.gaps
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        ctx.term()
    return samples, m, dict(sent=sent + garbage + probe_frames, garbage=garbage, received=received, gaps=gaps)


def check_soak(samples, m, counts):
    rejected = sum(v for k, v in m.items() if k.startswith("edged_frames_rejected_total{"))
    accepted = m["edged_frames_total"] - rejected
    assert m["edged_frames_total"] == counts["sent"]  # received by the daemon == sent
    assert rejected == counts["garbage"] == m["edged_frames_rejected_total{reason=decode}"]
    assert accepted + rejected == m["edged_frames_total"]  # received == processed + rejected
    assert counts["gaps"] == 0 and counts["received"] > 0
    half = [x for x in samples if x[0] >= samples[-1][0] / 2]
    rss = np.array([x[1] for x in half], float)
    fds = [x[2] for x in half]
    assert max(fds) - min(fds) <= 2, fds
    t = np.array([x[0] for x in half])
    slope = np.polyfit(t, rss, 1)[0] if len(t) > 2 else 0.0
    assert rss.max() - rss.min() < 16 << 20 and slope < 256 << 10, (rss.min(), rss.max(), slope)


def test_soak_short(tmp_path):
    """Case 24, the CI variant (EDGED_SOAK_SECONDS, default 6 s)."""
    check_soak(*soak(tmp_path, float(os.environ.get("EDGED_SOAK_SECONDS", "6"))))


@pytest.mark.slow
def test_soak_long(tmp_path):
    """Case 24 by hand: 10 min (EDGED_SOAK_LONG_SECONDS for 24 h)."""
    check_soak(*soak(tmp_path, float(os.environ.get("EDGED_SOAK_LONG_SECONDS", "600"))))


def test_metric_naming_lint():
    """Case 20 (naming half; loopback default: test_security): edged_ prefix, _total on
    counters, base-unit suffixes, a bounded allowed label set."""
    from prometheus_client import CollectorRegistry

    from edged.metrics import Metrics

    registry = CollectorRegistry()
    Metrics(registry)
    unitless = {"edged_ready", "edged_epoch", "edged_streams_active", "edged_streams_capacity",
                "edged_checkpoint_streams", "edged_nats_unconfirmed_decisions", "edged_nats_ingest_paused",
                "edged_batch_frames"}
    labels_ok = {"reason", "socket", "result", "le", "sha256", "neuron", "n_in", "n_hidden", "n_out",
                 "window", "hop", "variant", "classes", "version", "python", "numpy", "numba",
                 "onnxruntime", "pyzmq", "libzmq"}
    for fam in registry.collect():
        assert fam.name.startswith("edged_"), fam.name
        for sm in fam.samples:
            assert set(sm.labels) <= labels_ok, (sm.name, sm.labels)
            if fam.type == "counter":
                assert sm.name.endswith(("_total", "_created")), sm.name
        if fam.type in ("gauge", "histogram") and fam.name not in unitless:
            assert fam.name.endswith(("_seconds", "_bytes", "_joules", "_ratio", "_info")), fam.name


def test_stopped_daemon_declared_dead_then_alive(tmp_path):
    """Case 23: heartbeats every 0.2 s (scaled from 1 s); a SIGSTOPped daemon is declared
    dead after 3 missed ones, once; after SIGCONT the subscriber hears it again."""
    model_path = tmp_path / "m.npz"
    save(model_path, small_model(window=32, hop=8))
    proc, (ingest, publish, _), _ = start_serve(model_path, "--heartbeat-interval", "0.2")
    ctx = zmq.Context()
    dead = []
    try:
        with Subscriber(publish, context=ctx, streams=("only-this",), max_silence=0.6,
                        on_dead=lambda: dead.append(time.monotonic())) as rx:
            wait_for(lambda: rx.recv(0.05) is None and rx.heartbeats >= 3, what="heartbeats")
            assert rx.alive and rx.deaths == 0
            proc.send_signal(signal.SIGSTOP)
            stopped = time.monotonic()
            wait_for(lambda: rx.recv(0.05) is None and rx.deaths == 1, what="declared dead")
            assert 0.4 <= dead[0] - stopped <= 0.6 + 0.2 + 1.0  # 3 intervals (+ one in flight, + noise)
            proc.send_signal(signal.SIGCONT)
            wait_for(lambda: rx.recv(0.05) is None and rx.alive, what="alive again")
            assert rx.deaths == 1
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait()
        ctx.term()


def test_silence_recreates_the_socket_with_backoff_capped_at_32s():
    """Case 23: while the publisher stays silent the socket is recreated after 1, 2, 4, ...
    seconds, never more than 32 s apart (fake clock; nothing listens on the endpoint)."""
    now = [0.0]
    ctx = zmq.Context()
    try:
        port = free_port()
        rx = Subscriber(f"tcp://127.0.0.1:{port}", context=ctx, max_silence=3.0, clock=lambda: now[0])
        sockets, recreated = [rx.socket], []
        for _ in range(2000):  # 2000 x 0.25 s of fake time
            now[0] += 0.25
            rx.recv(0)
            if rx.socket is not sockets[-1]:
                sockets.append(rx.socket)
                recreated.append(now[0])
        gaps = np.diff(recreated)
        assert rx.deaths == 1 and not rx.alive
        assert gaps[:5].tolist() == [1.0, 2.0, 4.0, 8.0, 16.0] and set(gaps[5:].tolist()) == {32.0}
        rx.close()
    finally:
        ctx.term()


def test_heartbeat_topic_is_shared():
    from edged import client, protocol, sockets

    assert client.HEARTBEAT_TOPIC is protocol.HEARTBEAT_TOPIC is sockets.HEARTBEAT_TOPIC
