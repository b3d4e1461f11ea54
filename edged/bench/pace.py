"""The real-time client of ``edged bench streams``: frames sent on schedule and replies
stamped on arrival in compiled loops (``edged.zmqjit``: libzmq's calls from Numba), so the
client's own CPU, on the cores it shares with the daemon, is mostly libzmq's; the same
steps by pyzmq where ``zmqjit`` is not available.
"""

from __future__ import annotations

import pickle
import time

import msgpack
import numpy as np
import zmq

from edged import zmqjit
from edged.jit import kernel
from edged.zmqjit import EAGAIN

SEND_AHEAD_S = 1e-3  # a frame due within this goes out now (the sender sleeps longer waits only)
SENDER_LINGER_S = 10.0  # the sender's close waits this long for frames still queued
PART_BYTES = 1 << 20  # a reply's part at most (a decision is ~0.3 KiB, an echoed frame a few)
SPOT_BYTES = 1 << 22  # the payloads kept for the spot check, at most


def _flat(frames: list[bytes]):
    """The frames back to back (uint8) and their offsets: frame f is ``buf[ends[f]:ends[f + 1]]``."""
    ends = np.zeros(len(frames) + 1, np.int64)
    ends[1:] = np.cumsum([len(f) for f in frames])
    return np.frombuffer(b"".join(frames), np.uint8), ends


@kernel
def _send_due(sock, buf, ends, start, gap, sent, i):
    """Send frames ``i, i + 1, ...`` (frame ``f`` is ``buf[ends[f]:ends[f + 1]]``, due at
    ``start + f * gap``) while due within ``SEND_AHEAD_S``, stamping ``sent``: ``(the next
    frame, 0)``, or ``(the frame not sent, errno)``."""
    ts = np.zeros(2, np.int64)
    while i < sent.size and start + i * gap - zmqjit.now(ts) <= SEND_AHEAD_S:
        e = zmqjit.send_one(sock, buf, ends[i], ends[i + 1])
        if e:
            return i, e
        sent[i] = zmqjit.now(ts)
        i += 1
    return i, 0


def _send_due_pyzmq(sock, buf, ends, start, gap, sent, i):
    """``_send_due`` by pyzmq (``sock`` a socket)."""
    clock = time.perf_counter
    while i < sent.size and start + i * gap - clock() <= SEND_AHEAD_S:
        try:
            sock.send(buf[ends[i]:ends[i + 1]], zmq.NOBLOCK)
        except zmq.Again:
            return i, EAGAIN
        sent[i] = clock()
        i += 1
    return i, 0


def sender(endpoint: str, frames_path: str, n_streams: int, hop_s: float, conn,
           result_path: str) -> None:
    """Child process: load the frames in ``frames_path``, report ready on ``conn``, take
    the start time from it, send on schedule (in compiled calls where ``edged.zmqjit`` is
    available: the client's own CPU should not be what limits the count); save the send
    times and the CPU seconds it took to send them (``result_path``, an ``.npz``)."""
    with open(frames_path, "rb") as f:
        buf, ends = _flat(pickle.load(f))
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.linger = int(SENDER_LINGER_S * 1000)  # frames still queued at the end go out first
    push.sndhwm = 1 << 20
    push.connect(endpoint)
    sent = np.zeros(ends.size - 1)
    send, sock = (_send_due, push.underlying) if zmqjit.AVAILABLE else (_send_due_pyzmq, push)
    send(sock, buf, ends, 0.0, 0.0, sent[:0], 0)  # compiled (or loaded) before the start
    conn.send("ready")
    start = conn.recv()
    cpu0 = time.process_time()  # its sending, the ZeroMQ I/O thread's included
    gap = hop_s / n_streams
    i = 0
    while i < sent.size:
        wait = start + i * gap - time.perf_counter()
        if wait > SEND_AHEAD_S:
            time.sleep(wait)  # never spin: the cores are shared with the daemon
        i, err = send(sock, buf, ends, start, gap, sent, i)
        if err == EAGAIN:  # not connected yet, or the queue full: that frame goes out late
            time.sleep(1e-3)
        elif err:
            raise zmq.ZMQError(err)
    push.close()
    ctx.term()  # (waits for the frames still queued)
    np.savez(result_path, sent=sent, cpu=time.process_time() - cpu0)


@kernel
def _stream(topic, size, n):
    """``s`` for a topic ``b"s<s>"`` with ``s < n``, else -1."""
    if size < 2 or topic[0] != 115:  # b"s"
        return -1
    s = 0
    for c in range(1, size):
        d = np.int64(topic[c]) - 48
        if not 0 <= d <= 9 or s >= n:
            return -1
        s = 10 * s + d
    return s if s < n else -1


@kernel
def _answer(s, t, payload, size, n, echo, per_stream, arrived, tally, spots, spot_ends, spot_of):
    """Stamp a reply that arrived at ``t``: the next frame for an echo; for a decision of
    stream ``s`` (-1: another topic, skipped) its frame ``per_stream[s] * n + s``.
    ``tally``: [replies, spot checks]; every 64th decision's payload is kept
    (``spots[spot_ends[k]:spot_ends[k + 1]]``, for stream ``spot_of[k]``) to be checked."""
    if echo:
        i = tally[0]
    elif s >= 0:
        i = per_stream[s] * n + s
        per_stream[s] += 1
        k = tally[1]
        if tally[0] % 64 == 0 and k < spot_of.size and spot_ends[k] + size <= spots.size:
            spots[spot_ends[k]:spot_ends[k] + size] = payload[:size]
            spot_ends[k + 1] = spot_ends[k] + size
            spot_of[k] = s
            tally[1] = k + 1
    else:
        return
    if i < arrived.size:
        arrived[i] = t
    tally[0] += 1


@kernel
def collect(sock, items, part, until, n, echo, per_stream, arrived, tally, spots, spot_ends,
            spot_of):
    """Receive (topic, payload) messages until ``until`` (``perf_counter`` seconds) or
    every frame's reply is in (``_answer`` stamps each); 0, or the errno that stopped it.
    ``items`` polls ``sock``; ``part`` holds a message part."""
    ts = np.zeros(2, np.int64)
    while tally[0] < arrived.size:
        t = zmqjit.now(ts)
        if t >= until:
            return 0
        r, e = zmqjit.poll(items, 1, max(1, int((until - t) * 1e3)))
        if r < 0:
            return e
        while tally[0] < arrived.size:
            size, e = zmqjit.recv_one(sock, part)
            if size < 0:
                if e == EAGAIN:
                    break  # to poll again
                return e
            t = zmqjit.now(ts)
            s = _stream(part, size, n)
            size, e = zmqjit.recv_one(sock, part)  # the payload (a message's parts arrive together)
            if size < 0:
                return e
            _answer(s, t, part, size, n, echo, per_stream, arrived, tally, spots, spot_ends, spot_of)
    return 0


def collect_pyzmq(sock, items, part, until, n, echo, per_stream, arrived, tally, spots, spot_ends,
                  spot_of):
    """``collect`` by pyzmq (``sock`` a socket; ``items`` and ``part`` unused)."""
    clock = time.perf_counter
    while tally[0] < arrived.size and clock() < until:
        if not sock.poll(max(1, int((until - clock()) * 1e3))):
            continue
        while tally[0] < arrived.size:
            try:
                topic, payload = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            t = clock()
            s = _stream(np.frombuffer(topic, np.uint8), len(topic), n)
            _answer(s, t, np.frombuffer(payload, np.uint8), len(payload), n, echo, per_stream, arrived,
                    tally, spots, spot_ends, spot_of)
    return 0


class Replies:
    """The receiving side of a rung over ``sub`` (subscribed to every topic): the replies to
    ``frames`` frames of ``n`` streams (``echo``: one per frame, in frame order), by
    ``collect`` (compiled) or ``collect_pyzmq``. ``arrived[f]``: when frame ``f``'s came."""

    def __init__(self, sub: zmq.Socket, n: int, frames: int, echo: bool,
                 compiled: bool = zmqjit.AVAILABLE):
        self.n, self.echo = n, echo
        self.arrived = np.full(frames, np.nan)
        self.per_stream = np.zeros(n, np.int64)
        self.tally = np.zeros(2, np.int64)  # replies, spot checks kept
        self.spot_of = np.zeros(frames // 64 + 1, np.int64)
        self.spot_ends = np.zeros(self.spot_of.size + 1, np.int64)
        self.spots = np.zeros(SPOT_BYTES, np.uint8)
        self._part = np.zeros(PART_BYTES, np.uint8)
        self._items = np.zeros(2, np.int64)
        if compiled:
            zmqjit.poll_item(self._items, 0, sub.underlying, zmqjit.POLLIN)
            self._collect, self._sock = collect, sub.underlying
        else:
            self._collect, self._sock = collect_pyzmq, sub
        self._call(0.0, self.arrived[:0])  # compiled (or loaded) before any clock starts

    def _call(self, until: float, arrived: np.ndarray) -> int:
        return self._collect(self._sock, self._items, self._part, until, self.n, self.echo,
                             self.per_stream, arrived, self.tally, self.spots, self.spot_ends,
                             self.spot_of)

    @property
    def count(self) -> int:
        """Replies so far."""
        return int(self.tally[0])

    def collect(self, until: float) -> None:
        """Replies until ``until`` (``perf_counter`` seconds) or all are in; a socket error
        raises ``zmq.ZMQError`` (a signal returns early)."""
        err = self._call(until, self.arrived)
        if err not in (0, zmqjit.EINTR):
            raise zmq.ZMQError(err)

    def spot(self, k: int) -> tuple[int, dict]:
        """Spot check ``k``: the stream it was matched to and the decision it was."""
        return int(self.spot_of[k]), msgpack.unpackb(self.spots[self.spot_ends[k]:self.spot_ends[k + 1]])

    def mismatched(self) -> tuple[int, int]:
        """(spot checks, those whose decision names another stream than it was matched to)."""
        checked = int(self.tally[1])
        spots = [self.spot(k) for k in range(checked)]
        return checked, sum(msg["stream"] != f"s{s}" for s, msg in spots)

