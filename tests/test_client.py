"""edged.client on real loopback sockets: Sender frames and seqs, Subscriber typed decisions,
gap / restart detection, stream filtering, spike-file replay; no Numba needed to import."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import zmq

from edged.client import (Decision, LatencyTracker, Sender, Subscriber, percentiles,
                          read_spike_file, replay)
from edged.protocol import Limits, decode_frame, encode_decision


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.term()


@pytest.fixture
def pull(ctx):
    s = ctx.socket(zmq.PULL)
    s.linger = 0
    port = s.bind_to_random_port("tcp://127.0.0.1")
    yield s, f"tcp://127.0.0.1:{port}"
    s.close()


@pytest.fixture
def pub(ctx):
    s = ctx.socket(zmq.PUB)
    s.linger = 0
    port = s.bind_to_random_port("tcp://127.0.0.1")
    yield s, f"tcp://127.0.0.1:{port}"
    s.close()


def recv_frame(sock):
    assert sock.poll(10_000), "no frame"
    return decode_frame(sock.recv(), Limits(n_in=16))


def test_sender_readable_and_binary_frames_with_per_stream_seq(ctx, pull):
    sock, endpoint = pull
    t, ch = [0, 0, 3, 7], [1, 15, 2, 2]
    with Sender(endpoint, context=ctx, linger=0) as tx:
        assert tx.send("a", t, ch) == 0
        assert tx.send("a", t, ch, until=9, binary=False) == 1
        assert tx.send("b", [], []) == 0
        frames = [recv_frame(sock) for _ in range(3)]
    assert [(f.stream, f.seq, f.until) for f in frames] == [("a", 0, None), ("a", 1, 9), ("b", 0, None)]
    for f in frames[:2]:
        assert f.t.tolist() == t and f.ch.tolist() == ch


def test_a_send_that_times_out_uses_no_seq(ctx):
    """With no daemon listening, frames queue up to ``hwm``, then ``send`` raises
    ``zmq.Again`` after ``timeout``: that frame uses no seq, so the daemon, once up,
    sees every seq once and no gap."""
    with socket.socket() as probe:  # a free port, nothing listening on it yet
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"tcp://127.0.0.1:{port}"
    with Sender(endpoint, context=ctx, linger=0, hwm=1, timeout=0.05) as tx:
        for k in range(100):  # bounded: the queue holds a frame or two
            try:
                tx.send("a", [k], [1])
            except zmq.Again:
                break
        else:
            raise AssertionError("send never timed out")
        assert tx.seq["a"] == k  # the frame that timed out used none
        pull = ctx.socket(zmq.PULL)
        pull.linger = 0
        pull.bind(endpoint)
        try:
            for _ in range(200):  # bounded: until the Sender has reconnected (~0.1 s)
                try:
                    assert tx.send("a", [k], [1]) == k
                    break
                except zmq.Again:
                    pass
            else:
                raise AssertionError("the Sender never reconnected")
            frames = [recv_frame(pull) for _ in range(k + 1)]
        finally:
            pull.close()
    assert [(f.seq, f.t.tolist()) for f in frames] == [(i, [i]) for i in range(k + 1)]


def publish(sock, stream, epoch, seq, t=64, payload=None):
    sock.send_multipart([stream.encode(), payload or encode_decision(
        stream, epoch, seq, t, "c1", 1, [0.1, 0.9], [0.5, 0.25], 1e-4, 1e-9, 2e-5, "f" * 64)])


def subscribed(pub_sock, rx):
    """Slow joiner: publish a hello until the subscriber sees it."""
    for i in range(500):
        publish(pub_sock, "~hello", 1, i)
        if rx.recv(0.02) is not None:
            return
    raise AssertionError("subscription never became live")


def test_subscriber_typed_decisions_gaps_and_restarts(ctx, pub):
    sock, endpoint = pub
    gaps, restarts = [], []
    with Subscriber(endpoint, context=ctx, on_gap=lambda *a: gaps.append(a),
                    on_restart=lambda *a: restarts.append(a)) as rx:
        subscribed(sock, rx)
        while rx.recv(0.05) is not None:
            pass
        base = rx.received
        for seq in (0, 1, 3):  # seq 2 lost
            publish(sock, "a", 7, seq)
        publish(sock, "a", 8, 0)  # a new epoch: the daemon restarted
        sock.send_multipart([b"a", b"\xc1 not msgpack"])
        publish(sock, "a", 8, 1)
        got = [rx.recv(10) for _ in range(5)]
        assert all(isinstance(d, Decision) for d in got)
        assert [(d.epoch, d.seq) for d in got] == [(7, 0), (7, 1), (7, 3), (8, 0), (8, 1)]
        d = got[0]
        assert (d.stream, d.t, d.label, d.class_id, d.scores, d.lzc) == ("a", 64, "c1", 1, (0.1, 0.9), (0.5, 0.25))
        assert d.received_at > 0 and d.cpu_s == 2e-5
        with pytest.raises(dataclasses.FrozenInstanceError):
            d.seq = 5
        assert (rx.gaps, rx.restarts, rx.malformed, rx.received - base) == (1, 1, 1, 5)
        assert gaps == [("a", 2, 3)] and restarts == [("a", 7, 8)]


def test_subscriber_stream_filter_is_exact(ctx, pub):
    sock, endpoint = pub
    with Subscriber(endpoint, context=ctx, streams=("a", "~hello")) as rx:
        subscribed(sock, rx)
        publish(sock, "ab", 1, 0)  # ZeroMQ's prefix match lets it through; we drop it
        publish(sock, "a", 1, 0)
        d = rx.recv(10)
        assert d.stream == "a"
        assert rx.recv(0.05) is None


def test_recv_timeout_returns_none(ctx, pub):
    _, endpoint = pub
    with Subscriber(endpoint, context=ctx) as rx:
        t0 = time.perf_counter()
        assert rx.recv(0.05) is None
        assert time.perf_counter() - t0 < 5


@pytest.mark.parametrize("suffix", [".txt", ".npz"])
def test_spike_file_replay_keeps_steps_whole(ctx, pull, tmp_path, suffix):
    sock, endpoint = pull
    rng = np.random.default_rng(0)
    t = np.sort(rng.integers(0, 300, 1000))
    ch = rng.integers(0, 16, 1000)
    path = tmp_path / f"spikes{suffix}"
    if suffix == ".npz":
        np.savez(path, t=t, ch=ch)
    else:
        path.write_text("# t ch\n" + "\n".join(f"{a} {b}" for a, b in zip(t, ch)))
    ft, fch = read_spike_file(str(path))
    with Sender(endpoint, context=ctx, linger=0) as tx:
        stats = replay(tx, "file", ft, fch, frame_events=100)
        frames = [recv_frame(sock) for _ in range(stats["frames"])]
    np.testing.assert_array_equal(np.concatenate([f.t for f in frames]), t)
    np.testing.assert_array_equal(np.concatenate([f.ch for f in frames]), ch)
    for a, b in zip(frames, frames[1:]):
        assert a.until <= b.t[0] and a.t[-1] < b.t[0]  # no step split across frames
    assert frames[-1].until == t[-1] + 1
    assert [f.seq for f in frames] == list(range(len(frames)))


def test_latency_tracker_matches_decision_to_completing_frame():
    tr = LatencyTracker()
    tr.sent("a", 16, 1.0)
    tr.sent("a", 32, 2.0)
    mk = lambda t, at: Decision("a", 1, 0, t, "x", 0, (), (), 1e-4, 0.0, "m", received_at=at)
    tr.received(mk(16, 1.5))
    tr.received(mk(24, 2.25))  # completed by the frame with until 32
    tr.received(mk(32, 2.5))
    assert tr.samples == [0.5, 0.25, 0.5]
    assert percentiles([1.0, 2.0, 3.0])["p50"] == 2.0


def test_client_imports_without_numba_or_onnxruntime():
    code = ("import sys, edged.client; "
            "bad = [m for m in ('numba', 'onnxruntime', 'onnx', 'prometheus_client') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_latest_returns_newest_and_counts_the_rest(ctx, pub):
    sock, endpoint = pub
    with Subscriber(endpoint, context=ctx, streams=("a", "~hello")) as rx:
        subscribed(sock, rx)
        for seq in range(5):
            publish(sock, "a", 1, seq)
        publish(sock, "a", 1, 6)  # seq 5 lost
        d, deadline = None, time.monotonic() + 10
        while (d is None or d.seq != 6) and time.monotonic() < deadline:
            d = rx.latest(1.0) or d
        assert d.seq == 6 and rx.gaps == 1
