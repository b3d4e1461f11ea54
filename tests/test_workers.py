"""``edged serve --workers N`` as real processes on loopback: routing by crc32 of the stream
id, decisions bit-identical to one process, checkpoints resharded N -> M, a killed
worker restarted and resumed from its shard's checkpoint, one /metrics for all."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import zlib
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
import conftest
from conftest import _pending_lines, join, small_model, start_serve
from prometheus_client.parser import text_string_to_metric_families

from edged import checkpoint as ckpt
from edged.client import Sender, Subscriber
from edged.model import load, save
from edged.offline import decisions as offline_decisions
from edged.protocol import FrameError, Limits, decode_decision, encode_frame
from edged.link import shard_of, stream_key

TIMEOUT = 30.0
STREAMS = [f"w{i}" for i in range(8)]
STEPS = 96  # per segment
LIMITS = Limits(0, 1024, 1 << 20)


def wait_for(condition, timeout: float = TIMEOUT, what: str = "condition"):
    return conftest.wait_for(condition, timeout, what, interval=0.02)


def test_shard_of_is_crc32_of_the_utf8_id():
    assert zlib.crc32(b"a") == 0xE8B7BE43  # the golden value of the hash itself
    assert [shard_of(b"a", n) for n in (1, 2, 3)] == [0, 1, 0]
    assert shard_of("é".encode(), 4) == 235179326 % 4


@pytest.mark.parametrize("binary", [True, False])
def test_stream_key_reads_the_id_of_any_key_order(binary):
    frame = encode_frame("rig-é", 3, [1, 2], [0, 1], until=5, binary=binary)
    assert stream_key(frame, LIMITS) == "rig-é".encode()
    reordered = msgpack.packb({"t": [1], "ch": [0], "seq": 0, "stream": "z", "v": 1})
    assert stream_key(reordered, LIMITS) == b"z"


@pytest.mark.parametrize("buf,reason", [
    (b"\xc1", "decode"), (b"garbage", "decode"), (b"\xdd\x7f\xff\xff\xff", "oversize"),
    (msgpack.packb([1, 2]), "schema"), (msgpack.packb({"v": 1, "seq": 0}), "schema"),
    (msgpack.packb({"v": 1, "stream": 7}), "stream"), (b"\x81" * 100000, "decode"),
])
def test_stream_key_rejects_what_it_cannot_route(buf, reason):
    with pytest.raises(FrameError) as e:
        stream_key(buf, LIMITS)
    assert e.value.reason == reason


def test_a_restarted_worker_that_never_gets_ready_is_killed():
    """Supervision of a worker restarted but not ready (hung in start-up): killed once
    START_TIMEOUT has passed, left alone before."""
    import logging
    from types import SimpleNamespace

    from edged import workers

    class Proc:
        pid, killed = 4242, 0

        def is_alive(self):
            return True

        def kill(self):
            self.killed += 1

    sup = SimpleNamespace(_read=lambda i, slot: None, log=logging.getLogger("test"),
                          worker_timeout=workers.WORKER_TIMEOUT, metrics=None)
    slot = workers.Slot(proc=Proc(), started=100.0)
    workers.Supervisor._supervise(sup, 0, slot, 100.0 + workers.START_TIMEOUT - 1)
    assert slot.proc.killed == 0
    workers.Supervisor._supervise(sup, 0, slot, 100.0 + workers.START_TIMEOUT + 1)
    assert slot.proc.killed == 1


def test_combine_keeps_the_accepted_streams_newest_row_first():
    """Checkpoint files of two layouts: each stream from the newest file holding it, its
    held events with it, only the streams ``keep`` accepts."""
    def part(written_at, streams, now, held):
        arrays = {"now": np.array(now, np.int64), "held_len": np.array([len(h) for h in held], np.int64),
                  "held_ch": np.array([c for h in held for c in h], np.int64)}
        return ckpt.Restored({"written_at": written_at, "epoch": written_at, "streams": streams}, arrays)

    old = part(1.0, ["a", "b"], [1, 2], [[7], []])
    new = part(2.0, ["b", "c"], [20, 30], [[5], [8, 9]])
    r = ckpt.combine([new, old], keep=lambda s: s != "c")
    assert r.streams == ["b", "a"] and r.header["epoch"] == 2.0
    assert r.arrays["now"].tolist() == [20, 1]
    assert r.arrays["held_len"].tolist() == [1, 1] and r.arrays["held_ch"].tolist() == [5, 7]


# -- real processes ------------------------------------------------------------------------

def scrape(url: str) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def metric(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), float("nan"))


def probes(n: int) -> list[str]:
    """One probe stream id per worker of ``n``."""
    out: dict[int, str] = {}
    k = 0
    while len(out) < n:
        out.setdefault(shard_of(f"probe{k}".encode(), n), f"probe{k}")
        k += 1
    return list(out.values())




def traffic(model, seed: int, segments: int):
    """Events of every stream, per segment of STEPS steps, and their frames (3 per segment)."""
    rng = np.random.default_rng(seed)
    events = {s: [] for s in STREAMS}
    for seg in range(segments):
        for s in STREAMS:
            t = np.sort(rng.integers(seg * STEPS, (seg + 1) * STEPS, 60))
            events[s].append((t, rng.integers(0, model.n_in, t.size)))
    return events


def send_segment(tx: Sender, events, seg: int) -> None:
    for part in range(3):  # frames of a third of the segment each, streams interleaved
        lo, hi = seg * STEPS + part * STEPS // 3, seg * STEPS + (part + 1) * STEPS // 3
        for s in STREAMS:
            t, ch = events[s][seg]
            sel = (t >= lo) & (t < hi)
            tx.send(s, t[sel], ch[sel], until=hi)


def reference(model, events, segments: int) -> dict[str, list[dict]]:
    """What one offline run over all segments decides, per stream."""
    out = {}
    for s in STREAMS:
        t = np.concatenate([e[0] for e in events[s][:segments]])
        ch = np.concatenate([e[1] for e in events[s][:segments]])
        out[s] = offline_decisions(model, t, ch, segments * STEPS, s)
    return out


def collect(rx: Subscriber, want: dict[str, int]) -> dict[str, list]:
    """Decisions of STREAMS until each has ``want[s]`` of them."""
    got = {s: [] for s in STREAMS}
    while any(len(got[s]) < want[s] for s in STREAMS):
        d = rx.recv(TIMEOUT)
        assert d is not None, {s: (len(got[s]), want[s]) for s in STREAMS}
        if d.stream in got:
            got[d.stream].append(d)
    return got


def values(d) -> tuple:
    if isinstance(d, dict):
        return d["seq"], d["t"], d["label"], d["class"], tuple(d["scores"]), tuple(d["lzc"])
    return d.seq, d.t, d.label, d.class_id, d.scores, d.lzc


def stop(proc) -> str:
    proc.send_signal(signal.SIGTERM)
    return exited(proc)


def exited(proc) -> str:
    """Wait for exit 0 after a SIGTERM (a second one would stop the workers without their
    checkpoints); return the rest of stderr."""
    assert proc.wait(timeout=TIMEOUT * 2) == 0
    rest = proc.stderr.read()
    proc.stderr.close()
    return rest


def kill(proc) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    if not proc.stderr.closed:
        proc.stderr.close()


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "m.npz"
    save(path, small_model(window=32, hop=8))
    return path


def test_two_workers_decide_exactly_as_one(model_path, tmp_path):
    """Same frames into --workers 1 and --workers 2 (its workers receiving and publishing by
    ``edged.zmqjit`` and, ``EDGED_ZMQJIT=0``, by pyzmq): the same decisions bit for bit;
    each stream keeps one worker's epoch; garbage is counted by the router; one /metrics."""
    model = load(model_path)
    events = traffic(model, seed=5, segments=2)
    want = {s: len(r) for s, r in reference(model, events, 2).items()}
    runs, ctx = {}, zmq.Context()
    for n, jit in ((1, "1"), (2, "1"), (2, "0")):
        proc, (ingest, publish, metrics), _ = start_serve(model_path, "--workers", str(n),
                                                          metrics="127.0.0.1:0", env={"EDGED_ZMQJIT": jit})
        try:
            with Sender(ingest, context=ctx, linger=0) as tx, Subscriber(publish, context=ctx) as rx:
                join(tx, rx, model, *probes(n))
                raw = ctx.socket(zmq.PUSH)
                raw.connect(ingest)
                raw.send(b"\xc1 not msgpack")  # the router rejects it; the others go on
                raw.send(msgpack.packb({"v": 1, "seq": 0, "t": [], "ch": []}))
                raw.close(linger=5000)
                for seg in range(2):
                    send_segment(tx, events, seg)
                runs[n, jit] = collect(rx, want)
            samples = wait_for(lambda: (m := scrape(metrics)) and sum(
                v for (name, _), v in m.items() if name == "edged_decisions_total") >= sum(want.values())
                and sum(v for (name, _), v in m.items() if name == "edged_frames_rejected_total") == 2
                and (n == 1 or all(metric(m, "edged_router_frames_total", worker=w) > 0 for w in "01"))
                and m, what="decisions, rejects and routed frames counted")  # routed: flushed every CHECK_S
            if n == 2:
                assert metric(samples, "edged_frames_rejected_total", reason="decode", worker="router") == 1
                assert metric(samples, "edged_frames_rejected_total", reason="schema", worker="router") == 1
                for w in ("0", "1"):
                    assert metric(samples, "edged_worker_up", worker=w) == 1
                    assert metric(samples, "edged_decisions_total", worker=w) > 0
                    assert metric(samples, "edged_router_frames_total", worker=w) > 0
                assert metric(samples, "edged_ready", worker="router") == 1
                assert metric(samples, "edged_workers", worker="router") == 2
                epochs = {s: {d.epoch for d in runs[2, jit][s]} for s in STREAMS}
                assert all(len(e) == 1 for e in epochs.values())
                by_shard = {shard_of(s.encode(), 2): epochs[s] for s in STREAMS}
                assert len(by_shard) == 2 and by_shard[0] != by_shard[1]
            stop(proc)
        finally:
            kill(proc)
    ctx.term()
    for run in ((2, "1"), (2, "0")):
        for s in STREAMS:
            assert [values(d) for d in runs[run][s]] == [values(d) for d in runs[1, "1"][s]], (run, s)
            assert [d.energy_j for d in runs[run][s]] == [d.energy_j for d in runs[1, "1"][s]], (run, s)


def test_a_frame_whose_decisions_fill_several_bundles_loses_none(model_path):
    """One frame advancing its stream by 6,000 hops: its worker sends the decisions (more
    than ``edged.link.DECISION_BYTES``) in several bundles, and every one is published, in
    order, as the offline run decides them."""
    from edged.link import DECISION_BYTES

    model = load(model_path)
    steps = model.window + 6000 * model.hop
    rng = np.random.default_rng(3)
    t = np.sort(rng.integers(0, steps, 4000))
    ch = rng.integers(0, model.n_in, t.size)
    want = offline_decisions(model, t, ch, steps, "long")
    proc, (ingest, publish, _), _ = start_serve(model_path, "--workers", "2", "--publish-hwm", "100000")
    ctx = zmq.Context()
    raw = ctx.socket(zmq.SUB)
    raw.rcvhwm = 100000
    raw.subscribe(b"long")
    raw.connect(publish)
    try:
        with Sender(ingest, context=ctx, linger=0) as tx, Subscriber(publish, context=ctx) as rx:
            join(tx, rx, model, *probes(2))  # (raw connected before rx: live as well)
            tx.send("long", t, ch, until=steps)
            got, size = [], 0
            while len(got) < len(want):
                assert raw.poll(TIMEOUT * 1000), f"{len(got)} of {len(want)} decisions"
                topic, payload = raw.recv_multipart()
                got.append(decode_decision(payload))
                size += 16 + len(topic) + len(payload)  # its bytes in a decision bundle
        assert size > DECISION_BYTES  # the frame's decisions did not fit one bundle
        assert [values(d) for d in got] == [values(d) for d in want]
        stop(proc)
    finally:
        raw.close(linger=0)
        kill(proc)
        ctx.term()


def test_a_cold_kernel_cache_is_compiled_by_one_worker_before_the_others_start(model_path, tmp_path):
    """First start after an install or upgrade (an empty Numba cache): worker 0 compiles the
    kernels alone, worker 1 starts once it is ready and loads them; both then serve."""
    from edged.jit import cached

    cache = tmp_path / "cache"
    assert not cached(str(cache))
    proc, (ingest, publish, _), lines = start_serve(model_path, "--workers", "2",
                                                    env={"NUMBA_CACHE_DIR": str(cache)})
    ctx = zmq.Context()
    try:
        log = "".join(lines)
        assert "no compiled kernels cached yet" in log, log[-3000:]
        assert log.index("worker 0 ready") < log.index("worker 1 of 2 started"), log[-3000:]
        assert cached(str(next(cache.glob("kernels-*"))))
        with Sender(ingest, context=ctx, linger=0) as tx, Subscriber(publish, context=ctx) as rx:
            join(tx, rx, load(model_path), *probes(2))  # both workers decide
        stop(proc)
    finally:
        kill(proc)
        ctx.term()


def test_state_dir_reshards_2_to_1_to_2(model_path, tmp_path):
    """A state dir written by 2 workers restores into 1, and back into 2; the decisions of
    the three runs together equal one uninterrupted offline run."""
    model = load(model_path)
    state = tmp_path / "state"
    events = traffic(model, seed=9, segments=3)
    ref = reference(model, events, 3)
    ctx = zmq.Context()
    got: dict[str, list] = {s: [] for s in STREAMS}
    layouts = []
    for seg, n in enumerate((2, 1, 2)):
        proc, (ingest, publish, _), _ = start_serve(model_path, "--workers", str(n), "--state-dir",
                                                    str(state), "--drain-timeout", "10")
        try:
            layouts.append(sorted(os.listdir(state)) if state.exists() else [])
            with Sender(ingest, context=ctx, linger=0) as tx, Subscriber(publish, context=ctx) as rx:
                join(tx, rx, model, *probes(n))
                send_segment(tx, events, seg)
                want = {s: sum(d["t"] <= (seg + 1) * STEPS for d in ref[s]) - len(got[s]) for s in STREAMS}
                for s, ds in collect(rx, want).items():
                    got[s] += ds
            stop(proc)
        finally:
            kill(proc)
    ctx.term()
    shard_files = [ckpt.file_name(0, 2), ckpt.file_name(1, 2)]
    assert layouts == [[], [ckpt.NAME], shard_files]  # once ready, only its own layout is left
    assert sorted(os.listdir(state)) == shard_files
    for s in STREAMS:
        assert [values(d) for d in got[s]] == [values(d) for d in ref[s]], s


def worker_pids(parent: int) -> list[int]:
    """The spawned worker processes of ``parent`` (not multiprocessing's resource tracker)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if ppid == parent and b"spawn_main" in cmdline:
            out.append(int(entry.name))
    return sorted(out)


def test_kill_9_worker_is_restarted_and_resumes_from_its_checkpoint(model_path, tmp_path):
    """kill -9 of one worker: the supervisor logs and counts it, starts it again, and its
    streams warm-restart from the shard checkpoint: decisions continue, values exact, seq
    continued, under a new epoch for that shard only."""
    model = load(model_path)
    state = tmp_path / "state"
    events = traffic(model, seed=3, segments=2)
    ref = reference(model, events, 2)
    proc, (ingest, publish, metrics), _ = start_serve(
        model_path, "--workers", "2", "--state-dir", str(state), "--checkpoint-interval", "0.1",
        metrics="127.0.0.1:0")
    ctx = zmq.Context()
    try:
        with Sender(ingest, context=ctx, linger=0) as tx, Subscriber(publish, context=ctx) as rx:
            join(tx, rx, model, *probes(2))
            send_segment(tx, events, 0)
            first = collect(rx, {s: sum(d["t"] <= STEPS for d in ref[s]) for s in STREAMS})
            done = time.time()
            files = [state / ckpt.file_name(i, 2) for i in range(2)]
            wait_for(lambda: all(f.exists() and f.stat().st_mtime > done for f in files),
                     what="periodic checkpoints after the first segment")
            pids = wait_for(lambda: len(p := worker_pids(proc.pid)) == 2 and p, what="two workers")
            victim = pids[0]
            before = scrape(metrics)
            os.kill(victim, signal.SIGKILL)
            k = wait_for(lambda: next((w for w in ("0", "1") if metric(
                m := scrape(metrics), "edged_worker_restarts_total", worker=w) == 1
                and metric(m, "edged_worker_up", worker=w) == 1), None), what="the worker restarted")
            assert victim not in worker_pids(proc.pid)
            join(tx, rx, model, *probes(2))
            send_segment(tx, events, 1)
            second = collect(rx, {s: len(ref[s]) - len(first[s]) for s in STREAMS})
        assert metric(before, "edged_worker_restarts_total", worker=k) == 0
        rest = stop(proc)
        assert f"worker {k} (pid {victim}) died (killed by signal 9" in rest, rest[-3000:]
    finally:
        kill(proc)
        ctx.term()
    for s in STREAMS:
        assert [values(d) for d in first[s] + second[s]] == [values(d) for d in ref[s]], s
        restarted = shard_of(s.encode(), 2) == int(k)
        assert (second[s][0].epoch != first[s][0].epoch) == restarted, s


def test_sigterm_serves_every_frame_already_received(model_path):
    """SIGTERM at the first decision of a burst queued at the router: every frame is
    routed, served and published before the workers and the supervisor exit 0."""
    model = load(model_path)
    proc, (ingest, publish, metrics), _ = start_serve(model_path, "--workers", "2", "--drain-timeout", "20",
                                                      metrics="127.0.0.1:0")
    ctx = zmq.Context()
    n_frames, steps = 400, 64
    try:
        with Sender(ingest, context=ctx, linger=0) as tx, Subscriber(publish, context=ctx) as rx:
            join(tx, rx, model, *probes(2))
            rng = np.random.default_rng(1)
            for i in range(n_frames):
                for s in STREAMS[:4]:
                    t = np.sort(rng.integers(i * steps, (i + 1) * steps, 20))
                    tx.send(s, t, rng.integers(0, model.n_in, 20), until=(i + 1) * steps)
            first = rx.recv(TIMEOUT)
            while first is not None and first.stream not in STREAMS:
                first = rx.recv(TIMEOUT)
            assert first is not None
            wait_for(lambda: sum(v for (name, _), v in scrape(metrics).items()
                                 if name == "edged_router_frames_total") >= 4 * n_frames,
                     what="every frame received by the router")  # most still queued at the workers
            proc.send_signal(signal.SIGTERM)
            want = (n_frames * steps - model.window) // model.hop + 1
            need = {s: want if s in STREAMS[:4] else 0 for s in STREAMS}
            need[first.stream] -= 1
            got = collect(rx, need)
            got[first.stream].insert(0, first)
        for s in STREAMS[:4]:
            assert [d.seq for d in got[s]] == list(range(want)), s
        assert proc.wait(timeout=TIMEOUT * 2) == 0
    finally:
        kill(proc)
        ctx.term()


def test_a_worker_that_cannot_start_fails_the_daemon_with_its_exit_code(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a model")
    r = subprocess.run([sys.executable, "-m", "edged.cli", "serve", "--workers", "2", "--model", str(bad),
                        "--ingest", "tcp://127.0.0.1:*", "--publish", "tcp://127.0.0.1:*", "--metrics", "off"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stdout == ""  # no ready line
    assert f": {bad}: not a model file" in r.stderr and "edged: error: worker " in r.stderr, r.stderr[-2000:]


def started_pids(lines: list[str]) -> dict[int, int]:
    """``{worker: pid}`` from the supervisor's "worker i of n started: pid p" lines."""
    return {int(m[1]): int(m[2]) for m in re.finditer(r"worker (\d+) of \d+ started: pid (\d+)", "".join(lines))}


def a_stream_of(shard: int, n: int, prefix: str) -> str:
    return next(s for k in range(1000) if shard_of((s := f"{prefix}{k}").encode(), n) == shard)


def test_a_stuck_worker_does_not_keep_the_stop_marker_from_the_others(model_path, tmp_path):
    """SIGTERM while worker 0 is stuck (SIGSTOP) with its queue full: worker 1 still gets
    its stop marker at once, serves what it holds, checkpoints and exits; only worker 0 is
    killed at the deadline."""
    model = load(model_path)
    state = tmp_path / "state"
    proc, (ingest, publish, _), lines = start_serve(
        model_path, "--workers", "2", "--state-dir", str(state), "--checkpoint-interval", "0",
        "--ingest-hwm", "4", "--drain-timeout", "1")
    pids = started_pids(lines)
    ctx = zmq.Context()
    stuck, free = a_stream_of(0, 2, "stuck"), a_stream_of(1, 2, "free")
    try:
        with Sender(ingest, context=ctx, linger=0, hwm=4, timeout=0.2) as tx, \
                Subscriber(publish, context=ctx) as rx:
            join(tx, rx, model, *probes(2))
            os.kill(pids[0], signal.SIGSTOP)
            for k in range(model.window // model.hop):  # the free worker's frames go first ...
                tx.send(free, [k * model.hop], [1], until=(k + 1) * model.hop)
            t = np.repeat(np.arange(64), 64)  # ... then ~12 KiB frames until every queue is full
            with pytest.raises(zmq.Again):
                for k in range(10000):
                    tx.send(stuck, t + 64 * k, t % model.n_in, until=64 * (k + 1))
            signalled = time.time()
            proc.send_signal(signal.SIGTERM)
            d = rx.recv(TIMEOUT)
            while d is not None and d.stream != free:
                d = rx.recv(TIMEOUT)
            assert d is not None and d.seq == 0  # worker 1 served its frames
        rest = exited(proc)
        assert "worker 0 (pid" in rest and "did not stop in time" in rest, rest[-3000:]
        assert "worker 1 (pid" not in rest, rest[-3000:]
        assert (state / ckpt.file_name(1, 2)).stat().st_mtime >= signalled  # its stop checkpoint
    finally:
        kill(proc)
        ctx.term()


def test_sigterm_while_a_worker_waits_to_restart_serves_the_frames_queued_for_it(tmp_path):
    """Worker 0 keeps failing at start (its model file broken), so it waits longer before
    each restart; SIGTERM during such a wait starts it at once: the frames routed to it
    meanwhile are served, published and checkpointed, not dropped."""
    path, state = tmp_path / "m.npz", tmp_path / "state"
    save(path, small_model(window=32, hop=8))
    model, good = load(path), path.read_bytes()
    proc, (ingest, publish, metrics), lines = start_serve(
        path, "--workers", "2", "--state-dir", str(state), "--checkpoint-interval", "0",
        "--drain-timeout", "5", metrics="127.0.0.1:0")
    pids = started_pids(lines)
    stream = a_stream_of(0, 2, "late")
    ctx = zmq.Context()
    try:
        with Sender(ingest, context=ctx, linger=0) as tx, Subscriber(publish, context=ctx) as rx:
            join(tx, rx, model, *probes(2))
            path.write_bytes(b"not a model")
            os.kill(pids[0], signal.SIGKILL)

            def backing_off():
                lines.extend(_pending_lines(proc.stderr))
                return re.search(r"worker 0 \(pid \d+\) died \(exit code 2[^\n]*restarting it in [4-9]s",
                                 "".join(lines))
            wait_for(backing_off, what="worker 0 waiting 4 s or more to restart")
            path.write_bytes(good)
            routed = metric(scrape(metrics), "edged_router_frames_total", worker="0")
            signalled = time.time()
            for k in range(model.window // model.hop):
                tx.send(stream, [k * model.hop], [1], until=(k + 1) * model.hop)
            wait_for(lambda: metric(scrape(metrics), "edged_router_frames_total", worker="0") >= routed + 4,
                     what="the frames routed to the dead worker")
            proc.send_signal(signal.SIGTERM)
            d = rx.recv(TIMEOUT)
            while d is not None and d.stream != stream:
                d = rx.recv(TIMEOUT)
            assert d is not None and d.seq == 0
        exited(proc)
        assert (state / ckpt.file_name(0, 2)).stat().st_mtime >= signalled  # its stop checkpoint
    finally:
        kill(proc)
        ctx.term()


@pytest.mark.skipif(len(getattr(os, "sched_getaffinity", lambda _: ())(0)) < 2,
                    reason="needs Linux and two CPUs this process may run on")
def test_serve_cpus_pins_each_serving_thread_and_leaves_the_other_threads_free(model_path):
    """``--serve-cpus``: the serving thread of one process runs on the CPU named, that of
    worker i of ``--workers 2`` on the i-th; the router's and every other thread (ZeroMQ's
    I/O) keep all the CPUs they had."""
    every = os.sched_getaffinity(0)
    a, b = sorted(every)[:2]

    def others(pid: int) -> list[set[int]]:
        return [os.sched_getaffinity(int(tid)) for tid in os.listdir(f"/proc/{pid}/task") if int(tid) != pid]

    proc, _, lines = start_serve(model_path, "--serve-cpus", str(b))
    try:
        assert os.sched_getaffinity(proc.pid) == {b}  # (the main thread's tid is the pid)
        assert others(proc.pid) and all(cpus == every for cpus in others(proc.pid))
        assert f"serving thread pinned to CPU {b}" in "".join(lines)
        stop(proc)
    finally:
        kill(proc)
    proc, _, lines = start_serve(model_path, "--workers", "2", "--serve-cpus", f"{a},{b}")
    try:
        workers = started_pids(lines)
        assert [os.sched_getaffinity(workers[i]) for i in (0, 1)] == [{a}, {b}]
        assert all(cpus == every for cpus in others(workers[0]))
        assert os.sched_getaffinity(proc.pid) == every
        stop(proc)
    finally:
        kill(proc)

