"""ZeroMQ batches from compiled code (``edged.zmqjit``) against pyzmq, on real loopback sockets."""

import errno
import time

import numpy as np
import pytest
import zmq

from edged import zmqjit
from edged.config import Config
from edged.protocol import Packed
from edged.sockets import Sockets

pytestmark = pytest.mark.skipif(not zmqjit.AVAILABLE, reason="libzmq not reachable from compiled code here")


@pytest.fixture
def pair():
    """A bound PULL and a PUSH connected to it over inproc, where a send is queued on the
    PULL when it returns (no I/O thread between), so batches are cut deterministically."""
    ctx = zmq.Context()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    for s in (pull, push):
        s.linger = 0
        s.rcvhwm = s.sndhwm = 0
    pull.bind("inproc://zmqjit")
    push.connect("inproc://zmqjit")
    yield pull, push
    pull.close()
    push.close()
    ctx.term()


def queue(push, frames):
    for f in frames:
        push.send(f)


def test_recv_takes_the_frames_pyzmq_would_with_their_times(pair):
    pull, push = pair
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, int(n), np.uint8).tobytes() for n in rng.integers(0, 3000, 200)]
    queue(push, frames)
    buf, ends, times = np.empty(1 << 20, np.uint8), np.empty(301, np.int64), np.empty(300)
    before = time.perf_counter()
    n, err = zmqjit.recv(pull.underlying, buf, ends, times, 300, 10.0, 1 << 19)
    after = time.perf_counter()
    assert (n, err) == (200, errno.EAGAIN)  # all of them, then nothing waiting
    assert [buf[a:b].tobytes() for a, b in zip(ends[:n], ends[1:n + 1])] == frames
    assert before <= times[0] and times[n - 1] <= after and (np.diff(times[:n]) >= 0).all()


def test_recv_closes_a_batch_at_each_limit(pair):
    pull, push = pair
    queue(push, [b"x" * 100] * 50)
    buf, ends, times = np.empty(1 << 16, np.uint8), np.empty(51, np.int64), np.empty(50)
    assert zmqjit.recv(pull.underlying, buf, ends, times, 7, 10.0, 1 << 15) == (7, 0)  # budget
    assert zmqjit.recv(pull.underlying, buf, ends, times, 50, 10.0, 250) == (3, 0)  # bytes
    assert ends[:4].tolist() == [0, 100, 200, 300]
    assert zmqjit.recv(pull.underlying, buf, ends, times, 50, 0.0, 1 << 15) == (1, 0)  # wait
    assert zmqjit.recv(pull.underlying, buf, ends, times, 50, 10.0, 1 << 15) == (39, errno.EAGAIN)
    assert zmqjit.recv(pull.underlying, buf, ends, times, 50, 10.0, 1 << 15) == (0, errno.EAGAIN)


def test_recv_refuses_a_frame_past_its_buffer_and_reports_errors(pair):
    pull, push = pair
    queue(push, [b"y" * 200])
    buf, ends, times = np.empty(100, np.uint8), np.empty(2, np.int64), np.empty(1)
    with pytest.raises(ValueError, match="larger than the buffer"):
        zmqjit.recv(pull.underlying, buf, ends, times, 1, 1.0, 50)
    assert zmqjit.recv(0, buf, ends, times, 1, 1.0, 50) == (0, errno.ENOTSOCK)


def test_send_publishes_topic_and_payload_pairs():
    ctx = zmq.Context()
    pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
    for s in (pub, sub):
        s.linger = 0
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(f"tcp://127.0.0.1:{port}")
    try:
        for _ in range(500):  # the slow joiner: bounded
            pub.send_multipart([b"probe", b""])
            if sub.poll(10):
                break
        while sub.poll(50):
            sub.recv_multipart()
        streams = ["a", "stream-é", "", "b" * 300]
        payloads = [b"1", b"", b"\x00" * 5000, b"last"]
        assert zmqjit.send(pub.underlying, *Packed.of(streams, payloads)) == (4, 0)
        got = [sub.recv_multipart() for _ in range(4) if sub.poll(5000)]
        assert got == [[s.encode(), p] for s, p in zip(streams, payloads)]
        assert zmqjit.send(0, *Packed.of(["a"], [b"1"])) == (0, errno.ENOTSOCK)
    finally:
        pub.close()
        sub.close()
        ctx.term()


@pytest.mark.parametrize("compiled", [True, False])
def test_sockets_receive_cut_the_same_batches_either_way(compiled):
    """``Sockets.receive`` by ``edged.zmqjit`` and by pyzmq: the same frames, the same cuts."""
    cfg = Config(ingest_endpoint="inproc://ingest", publish_endpoint="inproc://publish",
                 metrics_listen="off", ingest_max_frame_bytes=4096)
    ctx = zmq.Context()
    sockets = Sockets(ctx, cfg, metrics=None, compiled=compiled)
    sockets.bind()
    push = ctx.socket(zmq.PUSH)
    push.linger = 0
    push.connect("inproc://ingest")
    try:
        frames = [bytes([i]) * (i * 10) for i in range(40)]  # 0, 10, ..., 390 bytes
        queue(push, frames)
        cuts = []
        for _ in range(40):  # bounded
            got = sockets.receive(16, 10.0, 1000)
            cuts.append((len(got.times), got.more))
            assert [got.buf(f) for f in range(len(got.times))] == frames[:len(got.times)]
            frames = frames[len(got.times):]
            if not got.more:
                break
        assert not frames
        # each batch closes once it holds 1,000 bytes (0-140: 1,050), the last one too, so
        # one more call finds nothing waiting
        assert cuts == [(15, True), (6, True), (5, True), (4, True), (4, True), (3, True),
                        (3, True), (0, False)]
        queue(push, [b"a", b"b", b"c"])
        got = sockets.receive(2, 10.0, 1000)  # the budget
        assert (got.joined, got.ends, got.more) == (b"ab", [0, 1, 2], True)
        got = sockets.receive(2, 10.0, 1000)
        assert (got.joined, got.ends, got.more) == (b"c", [0, 1], False)
    finally:
        push.close()
        sockets.close(0)
        ctx.term()


@pytest.mark.parametrize("compiled", [True, False])
def test_sockets_send_the_same_decisions_either_way(compiled):
    """``Sockets.send_decisions`` by ``edged.zmqjit`` and by pyzmq: each decision as its
    topic and payload, in order."""
    cfg = Config(ingest_endpoint="inproc://ingest", publish_endpoint="inproc://publish", metrics_listen="off")
    ctx = zmq.Context()
    sockets = Sockets(ctx, cfg, metrics=None, compiled=compiled)
    sockets.bind()
    sub = ctx.socket(zmq.SUB)
    sub.linger = 0
    sub.subscribe(b"")
    sub.connect("inproc://publish")
    try:
        streams = ["a", "bé", "c" * 40]
        payloads = [b"", b"xyz", bytes(range(256))]
        sockets.send_decisions(streams, [0, 1, 2], Packed.of(streams, payloads))
        got = [sub.recv_multipart() for _ in streams]
        assert got == [[s.encode(), p] for s, p in zip(streams, payloads)]
    finally:
        sub.close()
        sockets.close(0)
        ctx.term()
