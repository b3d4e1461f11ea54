"""The router <-> worker link of ``--workers``: the compiled routing read agrees with the
reference (``stream_key``) on every frame it answers for; over real sockets the relay
(compiled and by pyzmq) gives each worker its frames in order with their receive times,
rejects what cannot be routed, publishes the workers' decision bundles one decision per
message, and a worker stops at ``STOP``."""

from __future__ import annotations

import time
import zlib

import msgpack
import numpy as np
import pytest
import zmq

from edged import link, zmqjit
from edged.config import Config
from edged.link import STOP, LinkSockets, Relay, crc32, decision_bundles, locate, shard_of, stream_key
from edged.protocol import FrameError, Limits, Packed, encode_frame

LIMITS = Limits(0, 64, 4096)


def reference(buf: bytes, n: int) -> int | None:
    try:
        return shard_of(stream_key(buf, LIMITS), n)
    except FrameError:
        return None


def fast(buf: bytes) -> tuple[int, int]:
    return tuple(locate(np.frombuffer(buf, np.uint8), 0, len(buf), LIMITS.max_bytes, LIMITS.max_events))


def test_crc32_is_zlibs():
    rng = np.random.default_rng(0)
    for size in (0, 1, 7, 64, 1000):
        b = rng.integers(0, 256, size, dtype=np.uint8)
        assert crc32(b, 0, size) == zlib.crc32(b.tobytes())
    assert crc32(np.frombuffer(b"xay", np.uint8), 1, 2) == 0xE8B7BE43  # crc32(b"a")


@pytest.mark.parametrize("binary", [True, False])
def test_locate_reads_the_id_of_the_frames_clients_send(binary):
    for stream in ("a", "cam-0", "x" * 40, "y" * 200):
        buf = encode_frame(stream, 3, [1, 2, 2], [0, 1, 31], until=9, binary=binary)
        s0, s1 = fast(buf)
        assert buf[s0:s1] == stream.encode()


def frames_of_every_shape(rng: np.random.Generator) -> list[bytes]:
    """Valid frames, frames with odd but routable maps, and frames that cannot be routed."""
    values = [0, -1, 1 << 40, 1.5, None, True, "s", "é", b"\x00\x01", [1, 2], [1, [2]], {"a": 1},
              "z" * 300, [0] * 70, b"\x00" * 600, msgpack.ExtType(1, b"x")]
    out = []
    for _ in range(3000):
        keys = list(rng.choice(["v", "stream", "seq", "t", "ch", "until", "x", "é", "", "stream"],
                               size=rng.integers(0, 8)))
        d = {}
        for k in keys:
            d[k] = values[rng.integers(len(values))] if rng.random() < 0.5 else f"id{rng.integers(100)}"
        buf = msgpack.packb(d, use_bin_type=True)
        cut = rng.random()
        if cut < 0.1:
            buf = buf[:rng.integers(len(buf) + 1)]  # truncated
        elif cut < 0.15:
            buf += b"\x00"  # trailing bytes
        elif cut < 0.2:
            buf = msgpack.packb([d])
        out.append(buf)
    for k in range(200):  # the same keys twice: msgpack keeps the last
        pairs = [("stream", f"a{k}"), ("v", 1), ("stream", f"b{k}")]
        body = b"".join(msgpack.packb(key) + msgpack.packb(val) for key, val in pairs)
        out.append(bytes([0x80 + len(pairs)]) + body)
    return out


def test_locate_agrees_with_the_reference_wherever_it_answers():
    rng = np.random.default_rng(1)
    answered = 0
    for buf in frames_of_every_shape(rng):
        s0, s1 = fast(buf)
        if s0 < 0:
            continue
        answered += 1
        assert stream_key(buf, LIMITS) == buf[s0:s1], buf
    assert answered > 300  # the shape clients send is read by the fast path


class Link:
    """A router's sockets and a ``Relay`` over them, ``n`` workers' ``LinkSockets``, a source
    (PUSH to the router's ingest) and a subscriber to its PUB, on loopback and ipc; the
    relay and the workers' receive compiled or by pyzmq."""

    def __init__(self, tmp_path, n: int, compiled: bool):
        self.ctx = ctx = zmq.Context()
        self.source, self.ingest = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
        self.pub, self.sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
        self.decisions = ctx.socket(zmq.PULL)
        self.decisions.bind(f"ipc://{tmp_path}/out")
        self.source.connect(f"tcp://127.0.0.1:{self.ingest.bind_to_random_port('tcp://127.0.0.1')}")
        self.sub.subscribe(b"")
        self.sub.connect(f"tcp://127.0.0.1:{self.pub.bind_to_random_port('tcp://127.0.0.1')}")
        self.workers, self.pushes = [], []
        for w in range(n):
            cfg = Config(ingest_endpoint=f"ipc://{tmp_path}/w{w}.in", publish_endpoint=f"ipc://{tmp_path}/out")
            sock = LinkSockets(ctx, cfg, metrics=None, compiled=compiled)
            sock.bind()
            sock.warm()
            self.workers.append(sock)
            push = ctx.socket(zmq.PUSH)
            push.connect(cfg.ingest_endpoint)
            self.pushes.append(push)
        self.relay = Relay(self.ingest, self.decisions, self.pub, self.pushes, [], LIMITS, compiled,
                           wait_s=0.01, close_bytes=1 << 16, budget=64)
        self.relay.warm()

    def close(self):
        for w in self.workers:
            w.close(0)
        for s in (self.source, self.ingest, self.pub, self.sub, self.decisions, *self.pushes):
            s.close(linger=0)
        self.ctx.term()


COMPILED = [False] + ([True] if zmqjit.AVAILABLE else [])


@pytest.mark.parametrize("compiled", COMPILED)
def test_the_relay_routes_as_the_reference_in_order(tmp_path, compiled):
    rng = np.random.default_rng(2)
    bufs = frames_of_every_shape(rng)[:600] + [encode_frame(f"s{k % 13}", k, [k], [0]) for k in range(300)]
    bufs = [bufs[k] for k in rng.permutation(len(bufs)) if 0 < len(bufs[k]) <= LIMITS.max_bytes]
    n = 3
    expected: dict[int, list[bytes]] = {w: [] for w in range(n)}
    unroutable = 0
    for buf in bufs:
        w = reference(buf, n)
        if w is None:
            unroutable += 1
        else:
            expected[w].append(buf)
    ln = Link(tmp_path, n, compiled)
    try:
        t0 = time.perf_counter()
        for buf in bufs:
            ln.source.send(buf)
        got: dict[int, list[bytes]] = {w: [] for w in range(n)}
        times: list[float] = []
        rejected = []
        deadline = time.monotonic() + 30
        while sum(map(len, got.values())) < len(bufs) - unroutable and time.monotonic() < deadline:
            status, r = ln.relay.run(time.perf_counter() + 0.05)
            assert status == link.TICK
            rejected += r
            for w, sock in enumerate(ln.workers):
                while (b := sock.receive(1000, 1.0, 1 << 30)).times:
                    got[w] += [b.buf(f) for f in range(len(b.times))]
                    times += b.times
        assert got == expected
        assert len(rejected) == unroutable and all(isinstance(e, FrameError) for _, e in rejected)
        assert all(t0 <= t <= time.perf_counter() for t in times)  # the router's receive times
        assert ln.relay.routed.tolist() == [len(expected[w]) for w in range(n)]
        assert ln.relay.stats[0] == len(bufs)
    finally:
        ln.close()


@pytest.mark.parametrize("compiled", COMPILED)
def test_decisions_and_heartbeats_come_out_one_per_message(tmp_path, compiled):
    ln = Link(tmp_path, 2, compiled)
    try:
        while True:  # until the subscription is through
            ln.workers[0].send_heartbeat(b"probe")
            ln.relay.run(time.perf_counter() + 0.02)
            if ln.sub.poll(20):
                assert ln.sub.recv_multipart() == [b"\x00heartbeat", b"probe"]
                break
        while ln.sub.poll(50):
            ln.sub.recv_multipart()
        streams = [f"s{k}" for k in range(50)]
        payloads = [bytes([k]) * (k + 1) for k in range(50)]
        ln.workers[1].send_decisions(streams, list(range(50)), Packed.of(streams, payloads))
        out = []
        deadline = time.monotonic() + 10
        while len(out) < 50 and time.monotonic() < deadline:
            ln.relay.run(time.perf_counter() + 0.02)
            while ln.sub.poll(0):
                out.append(ln.sub.recv_multipart())
        assert out == [[s.encode(), p] for s, p in zip(streams, payloads)]
        assert ln.relay.stats[1] >= 2
    finally:
        ln.close()


@pytest.mark.parametrize("compiled", COMPILED)
def test_a_worker_stops_at_the_marker_after_the_frames_before_it(tmp_path, compiled):
    ln = Link(tmp_path, 1, compiled)
    stopped = []
    ln.workers[0].on_stop = lambda: stopped.append(True)
    try:
        bufs = [encode_frame(f"s{k}", 0, [k], [0]) for k in range(5)]
        for buf in bufs:
            ln.source.send(buf)
        got = []
        deadline = time.monotonic() + 10
        while ln.relay.routed[0] < 5 and time.monotonic() < deadline:
            ln.relay.run(time.perf_counter() + 0.02)
        ln.pushes[0].send(STOP)
        while not stopped and time.monotonic() < deadline:
            b = ln.workers[0].receive(2, 1.0, 1 << 20)
            got += [b.buf(f) for f in range(len(b.times))]
        assert got == bufs and stopped == [True]
    finally:
        ln.close()


def test_decision_bundles_are_cut_to_their_cap_and_keep_every_decision():
    streams = [f"stream-{k}" for k in range(100)]
    payloads = [b"p" * (k % 7 + 40) for k in range(100)]
    pieces = decision_bundles(Packed.of(streams, payloads), cap=1000)
    assert len(pieces) > 5 and all(len(p) <= 1000 for p in pieces)
    out = []
    for piece in pieces:
        m = np.frombuffer(piece, np.uint8).copy()
        ids, id_ends, data, ends = link.unpack_decisions(m, m.size)
        out += [(ids[a:b].tobytes().decode(), data[c:d].tobytes())
                for a, b, c, d in zip(id_ends, id_ends[1:], ends, ends[1:])]
    assert out == list(zip(streams, payloads))
    with pytest.raises(ValueError, match="does not fit"):
        decision_bundles(Packed.of(["s"], [b"x" * 2000]), cap=1000)


def test_a_worker_counts_the_decisions_it_could_not_hand_to_a_stuck_router(tmp_path):
    """The router's queue full (it does not read): bundles are dropped, not waited for, and
    their decisions counted; every decision is either delivered or counted."""
    from prometheus_client import CollectorRegistry

    from edged.metrics import Metrics

    ctx = zmq.Context()
    router = ctx.socket(zmq.PULL)
    router.rcvhwm = 1
    router.bind(f"ipc://{tmp_path}/out")
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    cfg = Config(ingest_endpoint=f"ipc://{tmp_path}/w0.in", publish_endpoint=f"ipc://{tmp_path}/out",
                 publish_hwm=1)
    worker = LinkSockets(ctx, cfg, metrics=metrics)
    worker.bind()
    try:
        sent = 0
        for k in range(5000):  # bounded; each send returns at once
            worker.send_decisions([], [], Packed.of([f"s{k}"] * 3, [b"d"] * 3))
            worker.send_heartbeat(b"h")  # dropped too, but not a decision
            sent += 3
        dropped = registry.get_sample_value("edged_decisions_undelivered_total")
        assert dropped > 0
        delivered = 0
        while router.poll(500):
            m = np.frombuffer(router.recv(), np.uint8)
            topics, _, _, _ = link.unpack_decisions(m, m.size)
            delivered += 0 if bytes(topics) == link.HEARTBEAT_TOPIC else int(m[:8].view(np.int64)[0])
        assert delivered + dropped == sent
    finally:
        worker.close(0)
        router.close(0)
        ctx.term()
