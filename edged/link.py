"""The private link between the ``--workers`` router and its workers: frames go out and
decisions come back in bundles, one single-part ZeroMQ message per batch rather than one
per frame, and the router's loop is one compiled call (``relay``) between housekeeping.

Wire (``ipc://`` in a 0700 directory; never exposed; native byte order), in int64 words::

    router PUSH -> w<i>.in -> worker i PULL    a frame bundle of c frames
        [c] [ends: c + 1 offsets from 0] [times: c float64] then the frames back to back,
        untouched (frame f is data[ends[f]:ends[f + 1]]); times: when the router received
        each frame (``perf_counter``, CLOCK_MONOTONIC: one clock for every process of a box)
      or ``STOP``, sent behind the last frame at shutdown
    worker PUSH -> out -> router PULL          a decision bundle of k decisions
        [k] [id_ends: k + 1] [ends: k + 1] then the topics (stream ids) and the payloads
        back to back: ``edged.protocol.Packed``; at most ``DECISION_BYTES`` (a worker cuts a
        bigger batch in pieces); a heartbeat is a bundle of one

Routing: frame -> worker ``shard_of(stream id) = crc32(UTF-8 id) % n``. ``shards`` reads
the ids and their crc32 from a batch's bytes in compiled code (``locate``: a map of at most
6 entries, ASCII string keys and values, scalars, bins and arrays of scalars, nothing
after it); a frame outside that shape goes to ``stream_key``, the reference (msgpack's
unpacker under the service's limits), which routes it or names what is wrong.

``Relay`` is the router's side: until a deadline it polls ingest, the decisions and the
worker queues a bundle waits for, publishes the decision bundles one decision per message
(as one process does), and cuts each batch of frames into one bundle per worker; it
returns to Python for housekeeping, a monitor event, or a batch with a frame only the
reference can route. ``LinkSockets`` is a worker's side: its receive joins the queued
bundles into one batch (``take_bundles``). Both compiled (``edged.zmqjit``) where libzmq is
reachable, else the same steps by pyzmq.
"""

from __future__ import annotations

import time
import zlib
from typing import Callable

import numpy as np
import zmq

from edged import zmqjit
from edged.jit import kernel
from edged.protocol import FRAME_KEYS, HEARTBEAT_TOPIC, FrameError, Limits, Packed, unpack_frame
from edged.sockets import Received, Sockets, receive_each, send_packed
from edged.zmqjit import EAGAIN, EINTR, POLLIN, POLLOUT, poll, poll_item, recv_one, revents, send_one

STOP = b"\xc1edged-stop"  # 0xc1 is never valid msgpack
_MAX_KEYS = len(FRAME_KEYS)  # a frame map with more is oversize (``unpack_frame``)
BUNDLE = 256  # frames per bundle at most (the router's batch): the link's queue is counted in bundles
DECISION_BYTES = 1 << 20  # a decision bundle at most
TICK, MONITOR, RESOLVE = 0, 1, 2  # why ``relay`` returned: the deadline (or a signal), a monitor
# event, a batch with a frame for ``stream_key``


def shard_of(stream: bytes, n: int) -> int:
    """The worker of a stream id (its UTF-8 bytes) among ``n``: stable across processes,
    restarts and machines (never Python's salted ``hash``)."""
    return zlib.crc32(stream) % n


def stream_key(buf: bytes, limits: Limits) -> bytes:
    """The UTF-8 stream id of a raw ingest frame, for routing; raises ``FrameError``."""
    msg = unpack_frame(buf, limits)
    if not isinstance(msg, dict):
        raise FrameError("schema", f"frame is a msgpack {type(msg).__name__}, not a map")
    stream = msg.get("stream")
    if not isinstance(stream, str):
        raise FrameError("stream" if "stream" in msg else "schema", "no string stream id to route on")
    return stream.encode()


def _crc_table() -> np.ndarray:
    table = np.zeros(256, np.int64)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        table[i] = c
    return table


_CRC = _crc_table()  # zlib's (reflected 0xEDB88320)


@kernel
def crc32(b, a, e):
    """``zlib.crc32(b[a:e])``."""
    c = 0xFFFFFFFF
    for i in range(a, e):
        c = _CRC[(c ^ b[i]) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


@kernel
def _width(b, i, n, size):
    """The length field of ``size`` bytes (big-endian) at ``b[i]``, or -1 past ``n``."""
    if i + size > n:
        return -1
    v = 0
    for j in range(size):
        v = (v << 8) | np.int64(b[i + j])
    return v


@kernel
def _ascii(b, a, e):
    for i in range(a, e):
        if b[i] >= 0x80:
            return False
    return True


@kernel
def _scalar(b, i, n):
    """The end of the msgpack nil, bool, integer or float at ``b[i]``; -1 for anything else."""
    h = b[i]
    if h <= 0x7F or h >= 0xE0 or h == 0xC0 or h == 0xC2 or h == 0xC3:
        e = i + 1
    elif h == 0xCC or h == 0xD0:
        e = i + 2
    elif h == 0xCD or h == 0xD1:
        e = i + 3
    elif h == 0xCE or h == 0xD2 or h == 0xCA:
        e = i + 5
    elif h == 0xCF or h == 0xD3 or h == 0xCB:
        e = i + 9
    else:
        return -1
    return e if e <= n else -1


@kernel
def _string(b, i, n, max_len):
    """``(start, end)`` of the ASCII str (or bin, with ``max_len`` its limit) at ``b[i]``;
    ``(-1, -1)`` for anything else."""
    h = b[i]
    if 0xA0 <= h <= 0xBF:
        k, a, text = np.int64(h) - 0xA0, i + 1, True
    elif 0xD9 <= h <= 0xDB or 0xC4 <= h <= 0xC6:
        text = h >= 0xD9
        size = 1 << (h - (0xD9 if text else 0xC4))
        k, a = _width(b, i + 1, n, size), i + 1 + size
    else:
        return -1, -1
    if k < 0 or a + k > n or k > max_len or (text and not _ascii(b, a, a + k)):
        return -1, -1
    return a, a + k


@kernel
def locate(b, a, n, max_bytes, max_events):
    """``(start, end)`` of the stream id in the frame ``b[a:n]``, or ``(-1, -1)`` where the
    frame is outside the shape this reads (the module docstring; ``stream_key`` decides
    those). Where both answer they agree: duplicate keys keep the last, as msgpack's."""
    if n - a > max_bytes or a >= n or not 0x81 <= b[a] <= 0x80 + _MAX_KEYS:
        return -1, -1
    s0, s1 = -1, -1
    i = a + 1
    for _ in range(b[a] - 0x80):
        if i >= n or not 0xA0 <= b[i] <= 0xBF:  # keys: fixstr
            return -1, -1
        k0, k1 = _string(b, i, n, 31)
        if k0 < 0 or k1 >= n:  # (a key with no value)
            return -1, -1
        i = k1
        is_stream = (k1 - k0 == 6 and b[k0] == 115 and b[k0 + 1] == 116 and b[k0 + 2] == 114
                     and b[k0 + 3] == 101 and b[k0 + 4] == 97 and b[k0 + 5] == 109)  # "stream"
        h = b[i]
        is_bin = 0xC4 <= h <= 0xC6
        if 0x90 <= h <= 0x9F or h == 0xDC or h == 0xDD:  # an array (of scalars, for t and ch)
            if is_stream:  # not a string: the reference says why
                return -1, -1
            if h <= 0x9F:
                count, i = np.int64(h) - 0x90, i + 1
            else:
                size = 2 if h == 0xDC else 4
                count, i = _width(b, i + 1, n, size), i + 1 + size
            if count < 0 or count > max_events:
                return -1, -1
            for _ in range(count):
                if i >= n:
                    return -1, -1
                i = _scalar(b, i, n)
                if i < 0:
                    return -1, -1
            continue
        v0, v1 = _string(b, i, n, 8 * max_events if is_bin else 1024)
        if v0 >= 0:
            if is_stream:
                if is_bin:
                    return -1, -1
                s0, s1 = v0, v1
            i = v1
            continue
        if is_stream:
            return -1, -1
        i = _scalar(b, i, n)
        if i < 0:
            return -1, -1
    if i != n or s0 < 0:
        return -1, -1
    return s0, s1


@kernel
def shards(b, ends, n_workers, max_bytes, max_events, out):
    """``out[f]`` = the worker of frame ``b[ends[f]:ends[f + 1]]`` (``shard_of``), -1 where
    ``locate`` cannot read its id."""
    for f in range(ends.size - 1):
        s0, s1 = locate(b, ends[f], ends[f + 1], max_bytes, max_events)
        out[f] = -1 if s0 < 0 else crc32(b, s0, s1) % n_workers


@kernel
def pack(b, ends, times, shard, n_workers, out, seg):
    """Frame ``f`` (``b[ends[f]:ends[f + 1]]``, received at ``times[f]``) into the bundle of
    worker ``shard[f]``, in order (-1: left out): worker ``w``'s bundle is
    ``out[seg[w]:seg[w + 1]]``, empty if it has no frame; each starts at a word."""
    count = np.zeros(n_workers, np.int64)
    size = np.zeros(n_workers, np.int64)
    for f in range(ends.size - 1):
        if shard[f] >= 0:
            count[shard[f]] += 1
            size[shard[f]] += ends[f + 1] - ends[f]
    seg[0] = 0
    for w in range(n_workers):
        seg[w + 1] = seg[w] + (0 if count[w] == 0 else 8 * (2 * count[w] + 2) + (size[w] + 7) // 8 * 8)
    if seg[n_workers] > out.size:
        raise ValueError("link.pack: the bundles do not fit their buffer")
    k = np.zeros(n_workers, np.int64)
    at = np.empty(n_workers, np.int64)
    for w in range(n_workers):
        if count[w]:
            head = out[seg[w]:seg[w] + 16].view(np.int64)
            head[0], head[1] = count[w], 0
            at[w] = seg[w] + 8 * (2 * count[w] + 2)
    for f in range(ends.size - 1):
        w = shard[f]
        if w < 0:
            continue
        c = count[w]
        words = out[seg[w]:seg[w] + 8 * (2 * c + 2)].view(np.int64)
        n = ends[f + 1] - ends[f]
        out[at[w]:at[w] + n] = b[ends[f]:ends[f + 1]]
        at[w] += n
        k[w] += 1
        words[1 + k[w]] = words[k[w]] + n
        out[seg[w]:seg[w] + 8 * (2 * c + 2)].view(np.float64)[c + 1 + k[w]] = times[f]


@kernel
def bundle_frames(bbuf, a):
    """Frames in the bundle at ``bbuf[a:]``."""
    return bbuf[a:a + 8].view(np.int64)[0]


@kernel
def dispatch(socks, n_workers, b, ends, times, shard, bbuf, seg, pending, routed):
    """``pack`` the frames and send each worker its bundle without blocking (``socks[3 +
    w]``); one it has no room for is marked ``pending``. 0, or the errno of a failure."""
    pack(b, ends, times, shard, n_workers, bbuf, seg)
    for w in range(n_workers):
        if seg[w + 1] > seg[w]:
            e = send_one(socks[3 + w], bbuf, seg[w], seg[w + 1])
            if e == EAGAIN:
                pending[w] = 1
            elif e:
                return e
            else:
                routed[w] += bundle_frames(bbuf, seg[w])
    return 0


@kernel
def unpack_decisions(m, size):
    """The ``Packed`` arrays of the decision bundle ``m[:size]``."""
    k = m[:8].view(np.int64)[0]
    words = m[:8 * (2 * k + 3)].view(np.int64)
    id_ends, ends = words[1:k + 2], words[k + 2:2 * k + 3]
    base = 8 * (2 * k + 3)
    if base + id_ends[k] + ends[k] != size:
        raise ValueError("link: a decision bundle of the wrong size")
    return m[base:base + id_ends[k]], id_ends, m[base + id_ends[k]:size], ends


_STOP = np.frombuffer(STOP, np.uint8).copy()


@kernel
def take_bundles(sock, m, buf, ends, times, budget, close_bytes):
    """A worker's receive: the frame bundles queued on ``sock``, each received into ``m``
    and its frames appended to ``buf`` (frame ``f`` is ``buf[ends[f]:ends[f + 1]]``, routed
    at ``times[f]``), until ``budget`` frames or ``close_bytes`` (a bundle is never split:
    room for one more beyond either is needed), none is waiting, or ``STOP``. Returns
    ``(frames, stopped, errno)``."""
    n = 0
    ends[0] = 0
    while n < budget and ends[n] < close_bytes:
        size, e = recv_one(sock, m)
        if size < 0:
            return n, False, 0 if e == EAGAIN else e
        if size == _STOP.size and np.all(m[:size] == _STOP):  # nothing follows
            return n, True, 0
        c = m[:8].view(np.int64)[0]
        words = m[:8 * (c + 2)].view(np.int64)  # [c] [ends: c + 1]
        stamps = m[8 * (c + 2):8 * (2 * c + 2)].view(np.float64)
        base, pos = 8 * (2 * c + 2), ends[n]
        if n + c >= ends.size or pos + words[c + 1] > buf.size:
            raise ValueError("link.take_bundles: a bundle beyond the room left")
        buf[pos:pos + words[c + 1]] = m[base:base + words[c + 1]]
        for f in range(c):
            ends[n + f + 1] = pos + words[f + 2]
            times[n + f] = stamps[f]
        n += c
    return n, False, 0


@kernel
def relay(socks, n_workers, items, fbuf, fends, ftimes, shard, bbuf, seg, pending, dbuf, routed,
          stats, max_bytes, max_events, budget, wait_s, close_bytes, until, take):
    """Route and publish until ``until`` (``perf_counter`` seconds); ``socks``: the addresses
    of ingest, decisions, the public PUB, the N pushes, then monitors to wake Python for.
    Ingest is read (``take``) only while no bundle is pending. Returns ``(status, frames)``:
    ``TICK``, ``MONITOR``, ``RESOLVE`` (the batch of ``frames`` in ``fbuf`` has frames of
    shard -1 in ``shard``), or ``-errno``. ``stats``: frames received, bundles published."""
    ingest, decisions, pub = socks[0], socks[1], socks[2]
    n_extra = socks.size - 3 - n_workers
    ts = np.zeros(2, np.int64)
    while True:
        t = zmqjit.now(ts)
        if t >= until:
            return TICK, 0
        waiting = False
        for w in range(n_workers):
            waiting = waiting or pending[w] != 0
        poll_item(items, 0, ingest, POLLIN if take and not waiting else 0)
        poll_item(items, 1, decisions, POLLIN)
        for w in range(n_workers):
            poll_item(items, 2 + w, socks[3 + w], POLLOUT if pending[w] else 0)
        for j in range(n_extra):
            poll_item(items, 2 + n_workers + j, socks[3 + n_workers + j], POLLIN)
        r, e = poll(items, 2 + n_workers + n_extra, int((until - t) * 1000) + 1)
        if r < 0:
            return (TICK if e == EINTR else -e), 0
        if revents(items, 1) & POLLIN:
            for _ in range(budget):
                size, e = recv_one(decisions, dbuf)
                if size < 0:
                    if e != EAGAIN:
                        return -e, 0
                    break
                _, e = zmqjit.send(pub, *unpack_decisions(dbuf, size))
                if e:
                    return -e, 0
                stats[1] += 1
        for w in range(n_workers):
            if pending[w] and revents(items, 2 + w) & POLLOUT:
                e = send_one(socks[3 + w], bbuf, seg[w], seg[w + 1])
                if e == 0:
                    pending[w] = 0
                    routed[w] += bundle_frames(bbuf, seg[w])
                elif e != EAGAIN:
                    return -e, 0
        if revents(items, 0) & POLLIN:
            n, e = zmqjit.recv(ingest, fbuf, fends, ftimes, budget, wait_s, close_bytes)
            if e != 0 and e != EAGAIN:
                return -e, 0
            if n:
                stats[0] += n
                shards(fbuf, fends[:n + 1], n_workers, max_bytes, max_events, shard)
                for f in range(n):
                    if shard[f] < 0:
                        return RESOLVE, n
                e = dispatch(socks, n_workers, fbuf, fends[:n + 1], ftimes, shard, bbuf, seg, pending,
                             routed)
                if e:
                    return -e, 0
        for j in range(n_extra):
            if revents(items, 2 + n_workers + j) & POLLIN:
                return MONITOR, 0


def decision_bundles(packed: Packed, cap: int = DECISION_BYTES) -> list[bytes]:
    """``packed`` as decision bundles of at most ``cap`` bytes each."""
    ids, id_ends, out, ends = packed
    k = len(ends) - 1
    if 0 < k and 24 + 16 * k + id_ends[-1] - id_ends[0] + ends[-1] - ends[0] <= cap:  # usually one
        head = np.concatenate(([k], id_ends - id_ends[0], ends - ends[0])).astype(np.int64)
        return [b"".join([head, ids[id_ends[0]:id_ends[-1]], out[ends[0]:ends[-1]]])]
    cost = 16 + np.diff(id_ends) + np.diff(ends)  # bytes per decision with its two header words
    total = np.concatenate(([0], np.cumsum(cost)))
    pieces, a = [], 0
    while a < k:  # 24: the bundle's other three header words
        b = int(np.searchsorted(total - total[a], cap - 24, side="right")) - 1
        if b <= a:
            raise ValueError(f"a decision of {int(cost[a])} bytes does not fit a bundle of {cap}")
        b = min(b, k)
        head = np.concatenate(([b - a], id_ends[a:b + 1] - id_ends[a], ends[a:b + 1] - ends[a]))
        pieces.append(b"".join([head.astype(np.int64), ids[id_ends[a]:id_ends[b]], out[ends[a]:ends[b]]]))
        a = b
    return pieces


def link_hwm(ingest_hwm: int) -> int:
    """Bundles a link's queue holds at each end: ``ingest_hwm`` frames' worth of full ones."""
    return max(2, -(-ingest_hwm // BUNDLE))


class Relay:
    """The router's side of the link (module docstring) over its pyzmq sockets; ``routed``
    (frames per worker) and ``stats`` (frames received, bundles published) count up."""

    def __init__(self, ingest: zmq.Socket, decisions: zmq.Socket, publish: zmq.Socket,
                 pushes: list[zmq.Socket], monitors: list[zmq.Socket], limits: Limits,
                 compiled: bool, wait_s: float, close_bytes: int, budget: int = BUNDLE):
        self.ingest, self.decisions, self.publish, self.pushes = ingest, decisions, publish, pushes
        self.monitors, self.limits, self.compiled = monitors, limits, compiled
        self.wait_s, self.close_bytes, self.budget = wait_s, close_bytes, budget
        n = self.n = len(pushes)
        self.socks = np.array([s.underlying for s in (ingest, decisions, publish, *pushes, *monitors)],
                              np.int64)
        self.items = np.zeros(2 * len(self.socks), np.int64)
        self.fbuf = np.empty(close_bytes + limits.max_bytes, np.uint8)
        self.fends, self.ftimes = np.zeros(budget + 1, np.int64), np.zeros(budget)
        self.shard = np.zeros(budget, np.int64)
        self.bbuf = np.empty(self.fbuf.size + 8 * (2 * budget + 3 * n), np.uint8)
        self.seg = np.zeros(n + 1, np.int64)
        self.pending = np.zeros(n, np.uint8)
        self.dbuf = np.empty(DECISION_BYTES, np.uint8)
        self.routed = np.zeros(n, np.int64)
        self.stats = np.zeros(2, np.int64)
        self.poller = zmq.Poller()

    def run(self, until: float, take: bool = True) -> tuple[int, list[tuple[float, FrameError]]]:
        """Route (``take``) and publish until ``until`` (``perf_counter``) or Python is
        needed; return why (``TICK`` or ``MONITOR``) and the frames rejected, with their
        receive times. A socket error raises ``zmq.ZMQError``."""
        if not self.compiled:
            return self._run_pyzmq(until, take)
        status, n = relay(self.socks, self.n, self.items, self.fbuf, self.fends, self.ftimes, self.shard,
                          self.bbuf, self.seg, self.pending, self.dbuf, self.routed, self.stats,
                          self.limits.max_bytes, self.limits.max_events, self.budget, self.wait_s,
                          self.close_bytes, until, take)
        if status < 0:
            raise zmq.ZMQError(-status)
        if status != RESOLVE:
            return status, []
        rejected = self._resolve(n)
        e = dispatch(self.socks, self.n, self.fbuf, self.fends[:n + 1], self.ftimes, self.shard, self.bbuf,
                     self.seg, self.pending, self.routed)
        if e:
            raise zmq.ZMQError(e)
        return TICK, rejected

    def _resolve(self, n: int) -> list[tuple[float, FrameError]]:
        """Route by ``stream_key`` the frames of the batch that ``shards`` left at -1."""
        rejected = []
        for f in np.flatnonzero(self.shard[:n] < 0).tolist():
            try:
                key = stream_key(self.fbuf[self.fends[f]:self.fends[f + 1]].tobytes(), self.limits)
                self.shard[f] = shard_of(key, self.n)
            except FrameError as e:
                rejected.append((float(self.ftimes[f]), e))
        return rejected

    def _run_pyzmq(self, until: float, take: bool) -> tuple[int, list[tuple[float, FrameError]]]:
        poller, rejected = self.poller, []
        while (now := time.perf_counter()) < until:
            poller.register(self.ingest, zmq.POLLIN if take and not self.pending.any() else 0)
            poller.register(self.decisions, zmq.POLLIN)
            for w, push in enumerate(self.pushes):
                poller.register(push, zmq.POLLOUT if self.pending[w] else 0)
            for m in self.monitors:
                poller.register(m, zmq.POLLIN)
            ready = dict(poller.poll(int((until - now) * 1000) + 1))
            if self.decisions in ready:
                for _ in range(self.budget):
                    try:
                        m = np.frombuffer(self.decisions.recv(zmq.NOBLOCK), np.uint8)
                    except zmq.Again:
                        break
                    send_packed(self.publish, Packed(*unpack_decisions(m, m.size)), False)
                    self.stats[1] += 1
            for w, push in enumerate(self.pushes):
                if self.pending[w] and push in ready:
                    self._send(w)
            if self.ingest in ready:
                got = receive_each(self.ingest.recv, time.perf_counter, self.budget, self.wait_s,
                                   self.close_bytes)
                n = len(got.times)
                self.stats[0] += n
                self.fbuf[:len(got.joined)] = np.frombuffer(got.joined, np.uint8)
                self.fends[:n + 1], self.ftimes[:n] = got.ends, got.times
                shards(self.fbuf, self.fends[:n + 1], self.n, self.limits.max_bytes, self.limits.max_events,
                       self.shard)
                rejected += self._resolve(n)
                pack(self.fbuf, self.fends[:n + 1], self.ftimes, self.shard, self.n, self.bbuf, self.seg)
                for w in range(self.n):
                    if self.seg[w + 1] > self.seg[w]:
                        self._send(w)
            if any(m in ready for m in self.monitors):
                return MONITOR, rejected
        return TICK, rejected

    def _send(self, w: int) -> None:
        try:
            self.pushes[w].send(self.bbuf[self.seg[w]:self.seg[w + 1]], zmq.NOBLOCK)
        except zmq.Again:
            self.pending[w] = 1
            return
        self.pending[w] = 0
        self.routed[w] += bundle_frames(self.bbuf, self.seg[w])

    def waiting(self) -> dict[int, int]:
        """``{worker: frames}`` of the bundles waiting for room."""
        return {w: int(bundle_frames(self.bbuf, self.seg[w])) for w in np.flatnonzero(self.pending).tolist()}

    def warm(self) -> None:
        """Compile (or load) the kernels: a relay already past its deadline, a dispatch of no
        frame (``run``'s after a resolve), and the steps they call on a scratch batch (no
        socket is touched)."""
        from edged.protocol import encode_frame

        if self.compiled:
            self.run(0.0)
            dispatch(self.socks, self.n, self.fbuf, self.fends[:1], self.ftimes, self.shard, self.bbuf,
                     self.seg, self.pending, self.routed)  # (no frame: nothing sent)
        frame = encode_frame("warm", 0, [0], [0], binary=True)
        b = np.frombuffer(frame + b"\xc1", np.uint8)
        ends, shard = np.array([0, len(frame), len(frame) + 1]), np.zeros(2, np.int64)
        shards(b, ends, self.n, self.limits.max_bytes, self.limits.max_events, shard)
        pack(b, ends, np.zeros(2), shard, self.n, np.empty(b.size + 64 * (self.n + 2), np.uint8),
             np.zeros(self.n + 1, np.int64))
        m = np.frombuffer(decision_bundles(Packed.of(["w"], [b"x"]))[0], np.uint8).copy()
        unpack_decisions(m, m.size)


class LinkSockets(Sockets):
    """A worker's transport: frame bundles in (PULL, bound), decision bundles out (PUSH,
    connected to the router: queued until the connection is up, so none is lost at a
    start; one that finds the router's queue full is dropped and its decisions counted,
    ``edged_decisions_undelivered_total``). ``on_stop`` is called when ``STOP`` arrives."""

    on_stop: Callable[[], object] | None = None

    def bind(self) -> dict[str, str]:
        cfg = self.cfg
        self.ingest = self.ctx.socket(zmq.PULL)
        self.ingest.linger = 0
        self.ingest.rcvhwm = link_hwm(cfg.ingest_hwm)
        self.ingest.bind(cfg.ingest_endpoint)
        self.publish = self.ctx.socket(zmq.PUSH)
        self.publish.linger = 0
        self.publish.sndhwm = cfg.publish_hwm
        self.publish.connect(cfg.publish_endpoint)
        self.endpoints = {"ingest": cfg.ingest_endpoint, "publish": cfg.publish_endpoint}
        return self.endpoints

    def receive(self, budget: int, wait_s: float, close_bytes: int,
                clock: Callable[[], float] = time.perf_counter) -> Received:
        """The bundles queued, joined, until ``budget`` frames or ``close_bytes`` (a bundle
        is never split); the times are the router's. By ``take_bundles`` where compiled."""
        if self.compiled:
            room = close_bytes + self.cfg.ingest_max_frame_bytes
            if self._buf is None or self._buf.size < 2 * room or self._ends.size < budget + BUNDLE + 1:
                self._m = np.empty(2 * room + 8 * (2 * BUNDLE + 2), np.uint8)  # one bundle
                self._buf = np.empty(2 * room, np.uint8)
                self._ends, self._times = np.empty(budget + BUNDLE + 1, np.int64), np.empty(budget + BUNDLE)
            n, stopped, err = take_bundles(self.ingest.underlying, self._m, self._buf, self._ends,
                                           self._times, budget, close_bytes)
            if err:
                raise zmq.ZMQError(err)
            if stopped and self.on_stop is not None:
                self.on_stop()
            return Received.of(self._buf, self._ends, self._times, n,
                               n >= budget or self._ends[n] >= close_bytes)
        datas, ends, times, size = [], [0], [], 0
        more = False
        while len(times) < budget and size < close_bytes:
            try:
                m = self.ingest.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            if m == STOP:  # nothing follows
                if self.on_stop is not None:
                    self.on_stop()
                break
            c = int(np.frombuffer(m, np.int64, 1)[0])
            words = np.frombuffer(m, np.int64, c + 2)
            base = 8 * (2 * c + 2)
            ends += (words[2:] + size).tolist()
            times += np.frombuffer(m, np.float64, c, 8 * (c + 2)).tolist()
            datas.append(m[base:base + int(words[-1])])
            size += int(words[-1])
            more = len(times) >= budget or size >= close_bytes
        return Received(b"".join(datas), ends, times, None, more)

    def warm(self) -> None:
        """Compile (or load) ``take_bundles``: a receive of no frame (no socket is touched)."""
        if self.compiled:
            take_bundles(0, np.empty(1, np.uint8), np.empty(1, np.uint8), np.zeros(1, np.int64),
                         np.empty(1), 0, 0)

    def send_decisions(self, streams: list[str], seqs: list[int], packed: Packed) -> None:
        for piece in decision_bundles(packed):
            if not self._send(piece) and self.metrics is not None:
                self.metrics.decisions_undelivered.inc(int(np.frombuffer(piece, np.int64, 1)[0]))

    def send_heartbeat(self, payload: bytes) -> None:
        self._send(decision_bundles(Packed.of([HEARTBEAT_TOPIC.decode()], [payload]))[0])

    def _send(self, piece: bytes) -> bool:
        """``piece`` to the router without blocking; False if its queue is full (the router
        stuck or gone): the piece is dropped, as PUB would drop it."""
        try:
            self.publish.send(piece, zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True
