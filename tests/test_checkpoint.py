"""--state-dir: SIGTERM drain + checkpoint, warm restart under a new epoch equal to an
uninterrupted run, kill -9 never leaves a torn checkpoint, refused checkpoints are a
counted cold start. Real loopback sockets, LINGER 0, waits on conditions."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import threading
import time
import zipfile

import numpy as np
import pytest
import zmq
from prometheus_client import CollectorRegistry

from conftest import join, small_model, start_serve
from edged import checkpoint as ckpt
from edged.client import Sender, Subscriber
from edged.config import Config
from edged.engine import Engine
from edged.model import load, save
from edged.service import Service
from edged.sockets import QUIET_S
from edged.streams import Streams
from test_service import assert_same, events, frames, wait_for

TIMEOUT = 20.0


class Daemon:
    """A Service in a thread, restored from ``state_dir``, with a Sender/Subscriber."""

    def __init__(self, model, state_dir, ctx, tx=None, probe="~p", **settings):
        self.model, self.ctx, self.registry = model, ctx, CollectorRegistry()
        cfg = Config(ingest_endpoint="tcp://127.0.0.1:*", publish_endpoint="tcp://127.0.0.1:*",
                     metrics_listen="off", service_state_dir=str(state_dir), **settings)
        self.svc = Service(model, cfg, context=ctx, registry=self.registry)
        self.endpoints = self.svc.bind()
        self.svc.warm()
        self.restored = self.svc.state.restore()
        self.thread = threading.Thread(target=self.svc.run, daemon=True)
        self.thread.start()
        self.tx = Sender(self.endpoints["ingest"], context=ctx, linger=0)
        if tx is not None:
            self.tx.seq = dict(tx.seq)  # the source keeps counting across the restart
        self.rx = Subscriber(self.endpoints["publish"], context=ctx)
        join(self.tx, self.rx, model, probe, drain=True)  # a probe stream per incarnation

    def value(self, name, **labels):
        return self.registry.get_sample_value(name, labels) or 0.0

    def collect(self, stream, n):
        got = []
        deadline = time.monotonic() + TIMEOUT
        while len(got) < n:
            d = self.rx.recv(max(0.0, deadline - time.monotonic()))
            assert d is not None, f"{stream}: {len(got)} of {n}"
            if d.stream == stream:
                got.append(d)
        return got

    def stop(self, write=True):
        self.svc.request_stop()
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive()
        if write:
            assert self.svc.state.checkpoint()
        self.tx.close()
        self.rx.close()
        self.svc.close(linger_s=0)


def saved(tmp_path_factory, kind: str):
    path = tmp_path_factory.mktemp("model") / f"{kind}.npz"
    save(path, small_model(kind, window=64, hop=8))
    return load(path)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return saved(tmp_path_factory, "meta")


@pytest.fixture(scope="module", params=["meta", "meta-esc"])
def any_model(tmp_path_factory, request):
    return saved(tmp_path_factory, request.param)


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.term()


def as_version_1(path: str, engine) -> None:
    """Rewrite the checkpoint at ``path`` as version 1 wrote it: with the LZ grams (1024 per
    neuron, derived from the words; not read, so zeros here)."""
    members = dict(np.load(path, allow_pickle=False))
    header = json.loads(members["header"].tobytes())
    assert "lz.grams" not in members and header["version"] == 2
    members["lz.grams"] = np.zeros((len(header["streams"]), engine.lz.count.shape[1], 1024), np.uint16)
    stray = ckpt.write(os.path.dirname(path), members, "stray.npz")
    with pytest.raises(ckpt.CheckpointError, match="version 2 with member lz.grams"):
        ckpt.read(stray, engine, engine.streams, header["model_sha256"])
    os.unlink(stray)
    members["header"] = np.frombuffer(json.dumps(header | {"version": 1}).encode(), np.uint8)
    ckpt.write(os.path.dirname(path), members)


@pytest.mark.parametrize("version", [2, 1])
def test_warm_restart_equals_uninterrupted_run(any_model, tmp_path, ctx, version):
    """Stop mid-stream (events held at the cut, unfinished windows), restart from the
    checkpoint (``version`` 1 also stored the LZ grams, which are not read): each stream
    continues exactly (escape noise too); decision seq continues; epoch is new."""
    model = any_model
    end = 800
    data = {name: events(seed, 700, end - 3, model.n_in) for name, seed in (("a", 21), ("b", 22))}
    cuts = {name: list(frames(seed, *data[name], end)) for name, seed in (("a", 23), ("b", 24))}
    first = Daemon(model, tmp_path, ctx)
    half = {name: len(fs) // 2 for name, fs in cuts.items()}
    for name, fs in cuts.items():
        for ft, fch, until in fs[:half[name]]:
            first.tx.send(name, ft, fch, until=until)
    sent = sum(first.tx.seq.values())  # every frame of the first half handled
    wait_for(lambda: first.value("edged_frames_total") == sent, what="first half handled")
    st = first.svc.streams
    before = {name: first.collect(name, st.out_seq[st.slots[name]]) for name in cuts}
    first.stop()
    assert first.value("edged_checkpoint_size_bytes") == os.path.getsize(tmp_path / ckpt.NAME) > 0
    if version == 1:
        as_version_1(str(tmp_path / ckpt.NAME), first.svc.engine)

    second = Daemon(model, tmp_path, ctx, tx=first.tx, probe="~q")
    try:
        assert second.restored == "ok"
        assert second.value("edged_checkpoint_restore_total", result="ok") == 1
        assert second.svc.epoch != first.svc.epoch
        for name, fs in cuts.items():
            for ft, fch, until in fs[half[name]:]:
                second.tx.send(name, ft, fch, until=until)
        want = (end - model.window) // model.hop + 1
        for name in cuts:
            after = second.collect(name, want - len(before[name]))
            assert {d.epoch for d in after} == {second.svc.epoch}
            assert_same(model, before[name] + after, *data[name], end, name)  # t, seq, scores, lzc
        assert second.value("edged_seq_gaps_total") == 0
    finally:
        second.stop(write=False)


def test_refused_checkpoints_are_counted_cold_starts(model, tmp_path, ctx, caplog):
    """RELIABILITY 14: another model's checkpoint, a wrong shape, corrupt files."""
    other = tmp_path / "other.npz"
    save(other, small_model(window=64, hop=8, seed=5))
    other_model = load(other)
    d = Daemon(other_model, tmp_path, ctx)
    d.tx.send("z", [1, 2, 3], [0, 1, 2], until=100)
    wait_for(lambda: "z" in d.svc.streams.slots, what="stream z")
    d.stop()
    good = (tmp_path / ckpt.NAME).read_bytes()

    def restore() -> tuple[str, Service]:
        cfg = Config(metrics_listen="off", service_state_dir=str(tmp_path), streams_max=4)
        svc = Service(model, cfg, context=ctx, registry=CollectorRegistry())
        with caplog.at_level("WARNING"):
            result = svc.state.restore()
        assert svc.metrics.checkpoint_restore.labels(result)._value.get() == 1
        return result, svc

    result, svc = restore()
    assert result == "mismatch" and not svc.streams.slots
    assert "refused (mismatch)" in caplog.text and "sha256" in caplog.text

    # the same model hash but a member of the wrong shape (e.g. a hand-edited file)
    members = dict(np.load(tmp_path / ckpt.NAME, allow_pickle=False))
    header = json.loads(members["header"].tobytes())
    header["model_sha256"] = model.sha256
    members["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    members["neuron.hidden.v"] = np.zeros((1, 3), np.float32)
    ckpt.write(str(tmp_path), members)
    assert restore()[0] == "mismatch"

    corrupt = {
        "truncated": good[: len(good) // 2],
        "garbage": os.urandom(2000),
        "empty": b"",
    }
    for why, data in corrupt.items():
        (tmp_path / ckpt.NAME).write_bytes(data)
        result, svc = restore()
        assert result == "corrupt", why
    # an object array (pickle) and an extra member are refused without unpickling
    with open(tmp_path / ckpt.NAME, "wb") as f:
        np.savez(f, header=np.array([{"x": 1}], dtype=object))
    assert restore()[0] == "corrupt"
    with zipfile.ZipFile(tmp_path / ckpt.NAME, "w") as z:
        z.writestr("header.npy", b"\x93NUMPY")
        z.writestr("evil.npy", b"")
    assert restore()[0] == "corrupt"
    (tmp_path / ckpt.NAME).unlink()
    assert restore()[0] == "none"


def test_disk_full_keeps_the_previous_checkpoint(model, tmp_path, ctx, monkeypatch):
    cfg = Config(metrics_listen="off", service_state_dir=str(tmp_path), streams_max=4)
    svc = Service(model, cfg, context=ctx, registry=CollectorRegistry())
    svc.state.restore()
    assert svc.state.checkpoint()
    before = (tmp_path / ckpt.NAME).read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.os, "fsync", full)
    assert not svc.state.checkpoint()
    assert svc.metrics.checkpoint_writes.labels("error")._value.get() == 1
    assert (tmp_path / ckpt.NAME).read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [ckpt.NAME]  # no temp file left


def test_the_loop_serves_while_a_checkpoint_is_written(model, tmp_path, ctx, monkeypatch):
    """The periodic checkpoint's file is written off the serving loop: with the write held
    up, frames are still decided; released, the file lands and is counted."""
    real, entered, release = ckpt.write, threading.Event(), threading.Event()

    def held(*args, **kwargs):
        entered.set()
        assert release.wait(TIMEOUT)
        return real(*args, **kwargs)

    monkeypatch.setattr(ckpt, "write", held)
    d = Daemon(model, tmp_path, ctx, service_checkpoint_interval=0.05)
    try:
        assert entered.wait(TIMEOUT), "no periodic checkpoint began"
        t, ch = events(31, 300, 400, model.n_in)
        d.tx.send("w", t, ch, until=400)
        assert len(d.collect("w", (400 - model.window) // model.hop + 1)) > 0
        assert d.value("edged_checkpoint_writes_total", result="ok") == 0  # still held
        release.set()
        wait_for(lambda: d.value("edged_checkpoint_writes_total", result="ok") >= 1, what="the write")
        assert ckpt.NAME in os.listdir(tmp_path)
    finally:
        release.set()
        d.stop(write=False)


def _writer(state_dir: str, engine, streams, sha: str) -> None:
    """Child: write checkpoints forever, version i with every array filled with i."""
    i = 0
    while True:
        i += 1
        for x in ckpt.engine_arrays(engine).values():
            x[...] = i
        for name in ("next_seq", "out_seq", "unbilled_ops"):
            getattr(streams, name)[:] = [i] * streams.capacity
        ckpt.write(state_dir, ckpt.snapshot(engine, streams.snapshot(), sha, epoch=i))


@pytest.mark.parametrize("rounds", [int(os.environ.get("EDGED_KILL_ROUNDS", "25"))])
def test_kill_9_during_checkpoint_never_leaves_a_torn_one(model, tmp_path, rounds):
    """RELIABILITY 13: a writer killed at random instants; every time, what is on disk
    loads and is one whole version (all arrays carry the same version number)."""
    n = 256
    engine = Engine.for_model(model, streams=n)
    streams = Streams(n)
    for i in range(n):
        streams.open(f"s{i}")
    rng = np.random.default_rng(0)
    versions = set()
    for _ in range(rounds):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child never returns
            try:
                _writer(str(tmp_path), engine, streams, model.sha256)
            finally:
                os._exit(1)
        time.sleep(float(rng.uniform(0.005, 0.08)))  # the kill's random instant, not a wait
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        ckpt.remove_stale(str(tmp_path))
        path = tmp_path / ckpt.NAME
        if not path.exists():
            continue
        r = ckpt.read(str(path), Engine.for_model(model, streams=n), n, model.sha256)
        v = r.header["epoch"]
        for name, a in r.arrays.items():
            if name not in ("held_len", "held_ch"):
                assert (a == v).all(), name
        versions.add(v)
    assert len(versions) > 1  # the kills landed at different points


def _drain_daemon(tmp_path, *extra: str):
    """A daemon of a small model with room for a whole burst at its stop: a long drain
    timeout, and a publish HWM PUB will not drop beyond (it drops by design)."""
    model_path = tmp_path / "m.npz"
    save(model_path, small_model(window=32, hop=8))
    proc, (ingest, publish, _), _ = start_serve(model_path, *extra, "--drain-timeout", "20",
                                                "--publish-hwm", "100000")
    return load(model_path), proc, ingest, publish


def _send_frame(tx, rng, model, i: int, steps: int) -> None:
    """Frame ``i`` of stream ``w``: 20 events over steps ``[i * steps, (i + 1) * steps)``."""
    t = np.sort(rng.integers(i * steps, (i + 1) * steps, 20))
    tx.send("w", t, rng.integers(0, model.n_in, 20), until=(i + 1) * steps)


def _decisions_of_w(rx, got: list, want: int) -> list:
    """``got`` and stream ``w``'s decisions after them until there are ``want``."""
    while len(got) < want:
        d = rx.recv(TIMEOUT)
        assert d is not None, f"{len(got)} of {want} decisions"
        got += [d] if d.stream == "w" else []
    return got


def test_sigterm_drain_takes_frames_until_ingest_is_quiet(tmp_path):
    """After SIGTERM the drain goes on while frames keep arriving less than ``QUIET_S``
    apart (a client's burst still in flight), not only those queued when it began: here
    chunks 10 ms apart, sent from before the signal until well after the loop notices it."""
    model, proc, ingest, publish = _drain_daemon(tmp_path)
    ctx = zmq.Context()
    chunks, per_chunk, steps, pause = 40, 20, 64, 0.01  # 20 chunks, ~0.2 s, after the signal
    assert pause < QUIET_S / 5  # (room for a slow scheduler on a busy machine)
    try:
        with Sender(ingest, context=ctx, linger=5.0) as tx, Subscriber(publish, context=ctx) as rx:
            join(tx, rx, model)
            rng = np.random.default_rng(2)
            i = 0
            for c in range(chunks):
                if c == chunks // 2:
                    proc.send_signal(signal.SIGTERM)
                for _ in range(per_chunk):
                    _send_frame(tx, rng, model, i, steps)
                    i += 1
                time.sleep(pause)
            want = (i * steps - model.window) // model.hop + 1
            got = _decisions_of_w(rx, [], want)
        assert [d.seq for d in got] == list(range(want))
        assert proc.wait(timeout=TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        ctx.term()


def test_sigterm_drains_in_flight_frames_then_checkpoints(tmp_path):
    """RELIABILITY 12: N frames sent, SIGTERM at the first decision: all N are handled,
    their decisions published, exit 0, a loadable checkpoint; a restart resumes."""
    state = tmp_path / "state"
    model, proc, ingest, publish = _drain_daemon(tmp_path, "--state-dir", str(state))
    ctx = zmq.Context()
    n_frames, steps = 2000, 64
    try:
        with Sender(ingest, context=ctx, linger=0) as tx, Subscriber(publish, context=ctx) as rx:
            join(tx, rx, model)
            rng = np.random.default_rng(1)
            for i in range(n_frames):
                _send_frame(tx, rng, model, i, steps)
            got = _decisions_of_w(rx, [], 1)
            proc.send_signal(signal.SIGTERM)
            want = (n_frames * steps - model.window) // model.hop + 1
            got = _decisions_of_w(rx, got, want)
        assert [d.seq for d in got] == list(range(want))
        assert proc.wait(timeout=TIMEOUT) == 0
        rest = proc.stderr.read()
        drained = int(re.search(r"drained (\d+) queued frames", rest).group(1))
        assert drained > 0, rest  # frames were still queued when the stop was noticed
        engine = Engine.for_model(model, streams=8)
        r = ckpt.read(str(state / ckpt.NAME), engine, 8, model.sha256)
        i = r.streams.index("w")
        assert r.arrays["now"][i] == n_frames * steps and r.arrays["out_seq"][i] == want
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
        ctx.term()


def test_kill_9_serve_restarts_from_periodic_checkpoint(tmp_path):
    """Periodic checkpoints bound what kill -9 loses: the restart restores them."""
    model_path = tmp_path / "m.npz"
    save(model_path, small_model(window=32, hop=8))
    state = tmp_path / "state"
    proc, (ingest, _, _), _ = start_serve(model_path, "--state-dir", str(state), "--checkpoint-interval", "0.05")
    ctx = zmq.Context()
    try:
        with Sender(ingest, context=ctx, linger=0) as tx:
            tx.send("k", [1, 2], [0, 1], until=100)
            wait_for(lambda: (state / ckpt.NAME).exists() and b"\"k\"" in (state / ckpt.NAME).read_bytes(),
                     what="a periodic checkpoint with stream k")
        proc.kill()
        proc.wait()
        proc.stderr.close()
        proc, _, lines = start_serve(model_path, "--state-dir", str(state))
        assert any("restored 1 streams" in line for line in lines), lines
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
        ctx.term()
