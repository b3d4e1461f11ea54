"""The real-time benchmark client's loops (``edged.bench.pace``), compiled and by pyzmq, on
real loopback sockets: the same frames sent, the same replies matched."""

import time

import msgpack
import numpy as np
import pytest
import zmq

from edged import zmqjit
from edged.bench import pace

WAYS = [pytest.param(True, id="compiled", marks=pytest.mark.skipif(
            not zmqjit.AVAILABLE, reason="libzmq not reachable from compiled code here")),
        pytest.param(False, id="pyzmq")]


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


def pair(ctx, kind_a, kind_b):
    a, b = ctx.socket(kind_a), ctx.socket(kind_b)
    for s in (a, b):
        s.linger = 0
    a.bind("tcp://127.0.0.1:*")
    b.connect(a.last_endpoint.decode())
    return a, b


@pytest.mark.parametrize("compiled", WAYS)
def test_send_due_sends_what_is_due_and_stops_at_the_first_frame_that_is_not(ctx, compiled):
    pull, push = pair(ctx, zmq.PULL, zmq.PUSH)
    frames = [bytes([k]) * (k + 1) for k in range(6)]
    buf, ends = pace._flat(frames)
    sent = np.zeros(len(frames))
    send, sock = (pace._send_due, push.underlying) if compiled else (pace._send_due_pyzmq, push)
    now = time.perf_counter()
    # frames 0-3 are due (the last within SEND_AHEAD_S), 4 and 5 a quarter of an hour away
    i, err = send(sock, buf, ends, now - 3000.0 + pace.SEND_AHEAD_S / 2, 1000.0, sent, 0)
    assert (i, err) == (4, 0)
    assert pull.poll(5000)
    assert [pull.recv() for _ in range(4)] == frames[:4]
    assert np.all(sent[:4] >= now) and np.all(sent[4:] == 0)
    i, err = send(sock, buf, ends, now + 3600.0, 1e-3, sent, 4)
    assert (i, err) == (4, 0)
    assert not pull.poll(100)


@pytest.mark.parametrize("compiled", WAYS)
def test_send_due_reports_a_full_queue(ctx, compiled):
    push = ctx.socket(zmq.PUSH)  # no peer (and no queue before one): a send would block
    push.linger = 0
    push.immediate = 1
    push.connect("tcp://127.0.0.1:9")
    buf, ends = pace._flat([b"x", b"y"])
    send, sock = (pace._send_due, push.underlying) if compiled else (pace._send_due_pyzmq, push)
    assert send(sock, buf, ends, 0.0, 0.0, np.zeros(2), 0) == (0, zmq.EAGAIN)


@pytest.mark.parametrize("echo", [False, True], ids=["edged", "echo"])
@pytest.mark.parametrize("compiled", WAYS)
def test_collect_matches_each_reply_to_its_frame(ctx, compiled, echo):
    """Two streams, three hops: decision k on topic s<i> answers frame k * 2 + i (echo: the
    replies in order); heartbeats and foreign topics are skipped; every 64th reply is kept
    for the spot check."""
    sub, pub = pair(ctx, zmq.SUB, zmq.PUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    n, hops = 2, 3
    for _ in range(200):  # the slow joiner: until a probe gets through (bounded)
        pub.send_multipart([b"~probe", b""])
        if sub.poll(20):
            break
    while sub.poll(50):
        sub.recv_multipart()
    order = [1, 0, 0, 1, 1, 0]  # the streams answer out of frame order
    for s in order:
        pub.send_multipart([b"edged.heartbeat", b"\x80"])
        pub.send_multipart([b"s9", b"\x80"])  # a stream past n: not ours
        pub.send_multipart([f"s{s}".encode(), msgpack.packb({"stream": f"s{s}"})])
    r = pace.Replies(sub, n, n * hops, echo, compiled)
    t0 = time.perf_counter()
    for _ in range(100):  # bounded: 100 x 50 ms
        r.collect(time.perf_counter() + 0.05)
        if r.count == n * hops:
            break
    arrived, per_stream, tally = r.arrived, r.per_stream, r.tally
    assert tally[0] == n * hops
    assert np.all(arrived >= t0)
    if echo:  # every message is the next reply, heartbeats included
        assert np.all(np.diff(arrived) >= 0)
        return
    assert per_stream.tolist() == [3, 3]
    # the k-th decision of s answers frame k * n + s: in arrival order, frames 1, 0, 2, 3, 5, 4
    assert np.argsort(arrived, kind="stable").tolist() == [1, 0, 2, 3, 5, 4]
    assert tally[1] == 1 and r.spot_of[0] == order[0]
    assert msgpack.unpackb(r.spots[r.spot_ends[0]:r.spot_ends[1]]) == {"stream": f"s{order[0]}"}
