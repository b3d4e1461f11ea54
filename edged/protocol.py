"""Protocol v1 on the wire: ingest frames in, decisions out (spec: ``edged/PROTOCOL.md``).

Ingest, one ZeroMQ frame, a msgpack map::

    {"v": 1, "stream": str (1-128 UTF-8 bytes), "seq": int >= 0,
     "t": [int, ...] | bytes (little-endian int64), "ch": [int, ...] | bytes (little-endian int32),
     "until": int >= 0 (optional)}

Decision, two frames on PUB: ``stream.encode()`` then a msgpack map (``DECISION_KEYS``).

``decode_frame`` is the whole boundary check: msgpack with every ``max_*`` limit, no ext
types, string map keys only, the exact key whitelist, types, lengths, channel range and
non-decreasing non-negative times. It raises ``FrameError(reason, detail)`` and touches
no state, so a rejected frame changes nothing. The daemon first offers a batch of frames
to ``scan_frames`` (``scan_frame`` on each, compiled, in one call: ``scan``), which
takes the common shape (binary events) straight from the bytes; a property test holds it
to the reference decoding (``decode_frames``). Lateness (``t`` before the stream's clock) and
stream capacity are judged by the service, which owns the clocks.

Decisions are packed by ``encode_decisions`` (msgpack), the reference, or by
``pack_decisions`` (compiled, the daemon's: a batch in one call around the constant
bytes of a ``DecisionLayout``), the same bytes (a property test).

The ready line: once warm, ``edged serve`` prints one JSON object on one line to stdout,
``{"edged": "ready", "v": 1, "epoch", "ingest", "ingest_socket", "publish", "metrics",
"warm_s"}`` (``ready_line``); tools wait for it (``parse_ready``), never for a log sentence.

Imports only numpy and msgpack: ``edged.client`` uses this module without Numba or
onnxruntime.
"""

from __future__ import annotations

import itertools
import json
import sys
from typing import Any, Literal, NamedTuple

import msgpack
import numpy as np

VERSION = 1
MAX_STREAM_BYTES = 128
MAX_TIME = (1 << 62) - 1
FRAME_KEYS = frozenset({"v", "stream", "seq", "t", "ch", "until"})
REQUIRED_KEYS = frozenset({"v", "stream", "seq", "t", "ch"})
DECISION_KEYS = ("v", "stream", "epoch", "seq", "t", "label", "class", "scores", "lzc",
                 "latency_s", "energy_j", "cpu_s", "model")

Reason = Literal["decode", "oversize", "schema", "version", "stream", "channel", "time",
                 "late", "capacity", "auth", "internal"]
#: every reject reason, in the order the docs list them (``edged_frames_rejected_total{reason}``)
REASONS: tuple[str, ...] = ("decode", "oversize", "schema", "version", "stream", "channel",
                            "time", "late", "capacity", "auth", "internal")
#: PUB topic of the service's liveness messages (PROTOCOL.md, Heartbeats): not a stream id
HEARTBEAT_TOPIC = b"\x00heartbeat"


class FrameError(ValueError):
    """A frame rejected whole; ``reason`` is one of ``REASONS``."""

    def __init__(self, reason: Reason, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Frame(NamedTuple):
    """A validated ingest frame. ``t`` and ``ch`` are int64, equal length, ``t`` sorted."""

    stream: str
    seq: int
    t: np.ndarray
    ch: np.ndarray
    until: int | None


class Limits(NamedTuple):
    """Per-frame bounds checked before and while decoding."""

    n_in: int  # channels are 0 .. n_in - 1
    max_events: int = 65536
    max_bytes: int = 4 << 20


def _no_ext(code: int, data: bytes):
    raise FrameError("schema", f"msgpack ext type {code} is not allowed")


def _int_array(value, name: str, dtype: np.dtype, limits: Limits) -> np.ndarray:
    """``value`` as an array of ``dtype`` (a little-endian view of bytes, or a list)."""
    if isinstance(value, bytes):
        width = dtype.itemsize
        if len(value) % width:
            raise FrameError("schema", f"binary {name} is {len(value)} bytes, not a multiple of {width}")
        return np.frombuffer(value, dtype)
    if isinstance(value, list):
        if not all(type(x) is int for x in value):
            raise FrameError("schema", f"{name} must hold only integers")
        try:
            return np.array(value, np.int64)
        except OverflowError:
            raise FrameError("time" if name == "t" else "channel", f"{name} value out of int64 range") from None
    raise FrameError("schema", f"{name} must be an int array or bytes, not {type(value).__name__}")


#: what ``check_events`` finds; ``decode_frame`` turns a problem into its ``FrameError``
EVENTS_OK, EVENTS_NEGATIVE, EVENTS_DECREASING, EVENTS_CHANNEL = 0, 1, 2, 3
_EVENT_ERRORS = {EVENTS_NEGATIVE: ("time", "event times must be in [0, 2**62)"),
                 EVENTS_DECREASING: ("time", "event times must be non-decreasing")}


def check_events(t: np.ndarray, ch: np.ndarray, n_in: int) -> int:
    """The frame's event rule in one pass: times non-negative and non-decreasing, channels
    in ``[0, n_in)``; returns an ``EVENTS_*`` code. Written for Numba: the service runs it
    compiled (``edged.jit.kernel``), this module stays free of Numba."""
    if t.shape[0] == 0:
        return EVENTS_OK
    if t[0] < 0:
        return EVENTS_NEGATIVE
    for i in range(1, t.shape[0]):
        if t[i] < t[i - 1]:
            return EVENTS_DECREASING
    for i in range(ch.shape[0]):
        if ch[i] < 0 or ch[i] >= n_in:
            return EVENTS_CHANNEL
    return EVENTS_OK


_I8, _I4 = np.dtype("<i8"), np.dtype("<i4")
_LITTLE_ENDIAN = sys.byteorder == "little"
_V, _STREAM, _SEQ, _T, _CH, _UNTIL = 1, 2, 4, 8, 16, 32  # scan_frame's key bits
_REQUIRED = _V | _STREAM | _SEQ | _T | _CH
#: scan_frame's out[]: stream bytes (offset, length), seq, until (present, value), the
#: events' count, the offsets of the t and ch bytes
SCAN_FIELDS = 8


def scan_frame(b: np.ndarray, n_in: int, max_events: int, out: np.ndarray) -> bool:
    """The common shape of a valid frame, checked on its bytes ``b`` (uint8) in one pass:
    a fixmap of the required keys and optionally ``until`` (each once, as fixstr), ``v``
    1, ``seq`` and ``until`` integers in ``[0, 2**62)`` (``until`` may be nil), ``stream``
    a fixstr/str8 of 1-128 bytes, ``t`` and ``ch`` bin with as many int64 as int32
    values (at most ``max_events``), times in ``[0, 2**62)`` non-decreasing, channels in
    ``[0, n_in)``, nothing after the map. True fills ``out`` (``SCAN_FIELDS``); False
    means only "not this shape": ``decode_frame`` then decides the frame the reference way.
    One function, written for Numba (the service runs it compiled, like ``check_events``;
    this module stays free of Numba)."""
    n = b.shape[0]
    if n < 1 or b[0] < 0x85 or b[0] > 0x86:
        return False
    i, seen, n_t, n_ch = 1, 0, -1, -1
    out[3] = 0
    for _ in range(int(b[0]) - 0x80):
        if i >= n or b[i] < 0xA1 or b[i] > 0xA6:  # a key: fixstr of 1-6 bytes
            return False
        k, c = int(b[i]) - 0xA0, int(b[i + 1]) if i + 1 < n else 0
        if i + 1 + k >= n:
            return False
        if k == 1:
            key = _V if c == 118 else _T if c == 116 else 0  # "v", "t"
        elif k == 2:
            key = _CH if c == 99 and b[i + 2] == 104 else 0  # "ch"
        elif k == 3:
            key = _SEQ if c == 115 and b[i + 2] == 101 and b[i + 3] == 113 else 0  # "seq"
        elif k == 5:
            key = _UNTIL if (c == 117 and b[i + 2] == 110 and b[i + 3] == 116 and b[i + 4] == 105
                             and b[i + 5] == 108) else 0  # "until"
        elif k == 6:
            key = _STREAM if (c == 115 and b[i + 2] == 116 and b[i + 3] == 114 and b[i + 4] == 101
                              and b[i + 5] == 97 and b[i + 6] == 109) else 0  # "stream"
        else:
            key = 0
        if key == 0 or seen & key:
            return False
        seen |= key
        i += 1 + k
        h = int(b[i])
        if key == _UNTIL and h == 0xC0:  # nil: no until
            i += 1
        elif key == _V or key == _SEQ or key == _UNTIL:  # an integer in [0, 2**62)
            if h <= 0x7F:
                v, i = h, i + 1
            elif 0xCC <= h <= 0xD3:  # uint8..uint64, int8..int64
                width = 1 << (h - 0xCC if h <= 0xCF else h - 0xD0)
                if i + 1 + width > n or (h >= 0xD0 and b[i + 1] >= 0x80):  # (negative)
                    return False
                v = 0
                for j in range(width):
                    v = (v << 8) | int(b[i + 1 + j])
                i += 1 + width
            else:
                return False
            if v < 0 or v > MAX_TIME or (key == _V and v != VERSION):  # (v < 0: wrapped)
                return False
            if key == _SEQ:
                out[2] = v
            elif key == _UNTIL:
                out[3], out[4] = 1, v
        elif key == _STREAM:  # fixstr or str8
            if 0xA1 <= h <= 0xBF:
                k, i = h - 0xA0, i + 1
            elif h == 0xD9 and i + 1 < n:
                k, i = int(b[i + 1]), i + 2
            else:
                return False
            if k < 1 or k > MAX_STREAM_BYTES or i + k > n:
                return False
            out[0], out[1] = i, k
            i += k
        else:  # t or ch: bin8, bin16 or bin32
            if h < 0xC4 or h > 0xC6:
                return False
            width = 1 << (h - 0xC4)
            if i + 1 + width > n:
                return False
            k = 0
            for j in range(width):
                k = (k << 8) | int(b[i + 1 + j])
            i += 1 + width
            if i + k > n or k % (8 if key == _T else 4):
                return False
            if key == _T:
                n_t, out[6] = k // 8, i
            else:
                n_ch, out[7] = k // 4, i
            i += k
    if i != n or seen & _REQUIRED != _REQUIRED or n_t != n_ch or n_t > max_events:
        return False
    out[5] = n_t
    last = 0
    for e in range(n_t):
        v = 0
        for j in range(7, -1, -1):  # little-endian int64
            v = (v << 8) | int(b[out[6] + 8 * e + j])
        if v < last or v > MAX_TIME:  # (a set top bit wraps negative)
            return False
        last = v
    for e in range(n_t):
        o = out[7] + 4 * e  # little-endian int32; negative values read as >= 2**31
        if (int(b[o]) | (int(b[o + 1]) << 8) | (int(b[o + 2]) << 16) | (int(b[o + 3]) << 24)) >= n_in:
            return False
    return True


def scan_frames(b: np.ndarray, ends: np.ndarray, n_in: int, max_events: int,
                out: np.ndarray, t: np.ndarray, ch: np.ndarray) -> None:
    """``scan_frame`` over frames ``b[ends[f]:ends[f + 1]]`` of one buffer, in one call.
    Row ``out[f]`` (``SCAN_FIELDS``): ``scan_frame``'s fields with the stream's offset into
    ``b``, and, in place of the t and ch offsets, the frame's first event in ``t``/``ch``
    (int64, as many as ``b`` could hold) and 1, or 0 in the last field for a frame
    ``scan_frame`` does not take. Written for Numba, like ``scan_frame``: the service
    compiles it with the compiled ``scan_frame`` (``edged.jit.bound``, ``calls``)."""
    e = 0
    for f in range(ends.shape[0] - 1):
        a = ends[f]
        row = out[f]
        if not scan_frame(b[a:ends[f + 1]], n_in, max_events, row):
            row[7] = 0
            continue
        n, t_at, ch_at = row[5], a + row[6], a + row[7]
        t[e:e + n] = b[t_at:t_at + 8 * n].view(np.int64)  # (a little-endian host: scan)
        ch[e:e + n] = b[ch_at:ch_at + 4 * n].view(np.int32)
        row[0] += a
        row[6], row[7] = e, 1
        e += n


class Scan(NamedTuple):
    """Frames scanned together (``scan``): their bytes, ``scan_frames``' rows, the events
    of those it took (int64, shared) and each frame's stream id (None for a frame not
    taken: ``decode_frame`` judges it the reference way)."""

    joined: bytes
    rows: np.ndarray  # int64[frames, SCAN_FIELDS]
    t: np.ndarray
    ch: np.ndarray
    ids: list[str | None]

    def frame(self, f: int) -> Frame | None:
        """Frame ``f``, or None if the scan did not take it."""
        stream = self.ids[f]
        if stream is None:
            return None
        _, _, seq, has_until, until, n, e, _ = self.rows[f].tolist()
        return Frame(stream, seq, self.t[e:e + n], self.ch[e:e + n], until if has_until else None)


def concat(bufs: list[bytes]) -> tuple[bytes, list[int]]:
    """``bufs`` back to back, and where each ends: buffer ``f`` is ``[ends[f]:ends[f + 1]]``."""
    return b"".join(bufs), [0, *itertools.accumulate(map(len, bufs))]


def scan(joined: bytes, ends: list[int], limits: Limits, scan_frames) -> Scan:
    """The frames ``joined[ends[f]:ends[f + 1]]`` in the common shape (``scan_frame``), taken
    from their bytes by one ``scan_frames`` call (compiled); none on a big-endian host (the
    events are copied as native integers)."""
    rows = np.zeros((len(ends) - 1, SCAN_FIELDS), np.int64)
    t, ch = np.empty((2, len(joined) // 12), np.int64)  # (12 bytes per event)
    bounds = np.array(ends, np.int64)
    if _LITTLE_ENDIAN:
        scan_frames(np.frombuffer(joined, np.uint8), bounds, limits.n_in, limits.max_events, rows,
                    t, ch)
    taken = (rows[:, 7] != 0) & (bounds[1:] - bounds[:-1] <= limits.max_bytes)
    spans = list(zip(rows[:, 0].tolist(), rows[:, 1].tolist(), taken.tolist()))
    try:
        ids = [joined[a:a + k].decode() if ok else None for a, k, ok in spans]
    except UnicodeDecodeError:  # one at a time: the reference path names the problem
        ids = [_utf8(joined[a:a + k]) if ok else None for a, k, ok in spans]
    return Scan(joined, rows, t, ch, ids)


def _utf8(b: bytes) -> str | None:
    """``b`` decoded, None if it is not UTF-8."""
    try:
        return b.decode()
    except UnicodeDecodeError:
        return None


def decode_frames(bufs: list[bytes], limits: Limits, scan_frames) -> list[Frame | None]:
    """``scan``'s frames: each of the common shape decoded, None for the others."""
    s = scan(*concat(bufs), limits, scan_frames)
    return [s.frame(f) for f in range(len(bufs))]


def unpack_frame(buf: bytes, limits: Limits) -> Any:
    """The msgpack value of a frame, under every ``max_*`` limit (the first step of
    ``decode_frame``; ``edged.workers`` routes on it); raises ``FrameError``."""
    if len(buf) > limits.max_bytes:
        raise FrameError("oversize", f"frame of {len(buf)} bytes > {limits.max_bytes}")
    try:
        msg = msgpack.unpackb(buf, raw=False, strict_map_key=True, use_list=True,
                              max_str_len=1024, max_bin_len=8 * limits.max_events,
                              max_array_len=limits.max_events, max_map_len=len(FRAME_KEYS),
                              max_ext_len=0, ext_hook=_no_ext)
    except FrameError:
        raise
    except ValueError as e:  # FormatError, StackError, ExtraData, limits, bad UTF-8
        text = str(e)
        reason = ("schema" if "max_ext_len" in text else  # ext types, timestamps
                  "oversize" if "exceeds max_" in text else "decode")
        raise FrameError(reason, f"{type(e).__name__}: {text[:120]}") from None
    except msgpack.UnpackException as e:
        raise FrameError("decode", f"{type(e).__name__}: {str(e)[:120]}") from None
    return msg


def decode_frame(buf: bytes, limits: Limits, check_events=check_events, scan_frames=None) -> Frame:
    """Decode and validate one ingest frame; raise ``FrameError`` naming the first problem.
    ``check_events``: this module's, or the same compiled. ``scan_frames`` (this module's,
    compiled): a frame of the common shape is taken
    from its bytes directly (``decode_frames``); every other frame is decoded and judged
    below, the reference (they agree: tested)."""
    if scan_frames is not None:
        frame = decode_frames([buf], limits, scan_frames)[0]
        if frame is not None:
            return frame
    msg = unpack_frame(buf, limits)
    if not isinstance(msg, dict):
        raise FrameError("schema", f"frame is a msgpack {type(msg).__name__}, not a map")
    if "v" in msg and msg["v"] != VERSION:
        raise FrameError("version", f"protocol version {msg['v']!r} is not supported (v{VERSION})")
    keys = msg.keys()
    if not REQUIRED_KEYS <= keys or not keys <= FRAME_KEYS:
        raise FrameError("schema", f"keys: missing {sorted(REQUIRED_KEYS - keys)}, "
                                   f"unexpected {sorted(map(str, keys - FRAME_KEYS))}")
    if type(msg["v"]) is not int:
        raise FrameError("version", "v must be an integer")
    stream = msg["stream"]
    if not isinstance(stream, str):
        raise FrameError("stream", f"stream must be a UTF-8 string, not {type(stream).__name__}")
    if not 1 <= len(stream.encode()) <= MAX_STREAM_BYTES:
        raise FrameError("stream", f"stream id must be 1-{MAX_STREAM_BYTES} UTF-8 bytes")
    seq = msg["seq"]
    if type(seq) is not int or not 0 <= seq <= MAX_TIME:
        raise FrameError("schema", "seq must be a non-negative integer")
    until = msg.get("until")
    if until is not None and (type(until) is not int or not 0 <= until <= MAX_TIME):
        raise FrameError("time", "until must be a non-negative integer below 2**62")
    t = _int_array(msg["t"], "t", _I8, limits)
    ch = _int_array(msg["ch"], "ch", _I4, limits)
    if t.shape != ch.shape:
        raise FrameError("schema", f"t has {t.size} events, ch has {ch.size}")
    if t.size > limits.max_events:
        raise FrameError("oversize", f"{t.size} events > {limits.max_events}")
    if t.size and t[-1] > MAX_TIME:
        raise FrameError("time", "event times must be in [0, 2**62)")
    problem = check_events(t, ch, limits.n_in)
    if problem:
        reason, detail = _EVENT_ERRORS.get(problem, ("channel", f"channels must be in [0, {limits.n_in})"))
        raise FrameError(reason, detail)
    # owned, writable native int64 copies: the kernels are compiled for exactly that type
    return Frame(stream, seq, t.astype(np.int64), ch.astype(np.int64), until)


def encode_frame(stream: str, seq: int, t, ch, until: int | None = None,
                 binary: bool = True) -> bytes:
    """One ingest frame; ``binary`` packs ``t``/``ch`` as raw little-endian buffers."""
    t = np.asarray(t, np.int64)
    ch = np.asarray(ch, np.int64)
    msg: dict = {"v": VERSION, "stream": stream, "seq": int(seq)}
    if binary:
        msg["t"] = t.astype("<i8").tobytes()
        msg["ch"] = ch.astype("<i4").tobytes()
    else:
        msg["t"] = t.tolist()
        msg["ch"] = ch.tolist()
    if until is not None:
        msg["until"] = int(until)
    return msgpack.packb(msg, use_bin_type=True)


def encode_decisions(streams: list[str], epoch: int, seqs: list[int], t: list[int],
                     labels: list[str], classes: list[int], scores: list[list[float]],
                     lzc: list[list[float]], latency_s: list[float], energy_j: list[float],
                     cpu_s: float, model: str) -> list[bytes]:
    """The payload frames of many decisions in one call (one packer): one entry per
    decision in each list; ``epoch``, ``cpu_s`` and ``model`` are shared."""
    pack = msgpack.Packer(use_bin_type=True).pack
    return [pack({"v": VERSION, "stream": stream, "epoch": epoch, "seq": seq, "t": end,
                  "label": label, "class": c, "scores": sc, "lzc": lz, "latency_s": lat,
                  "energy_j": e, "cpu_s": cpu_s, "model": model})
            for stream, seq, end, label, c, sc, lz, lat, e
            in zip(streams, seqs, t, labels, classes, scores, lzc, latency_s, energy_j)]


class DecisionLayout(NamedTuple):
    """The bytes every decision of one publisher shares, for ``pack_decisions``: the map in
    ``DECISION_KEYS`` order is constant pieces (``consts``, ending at ``const_ends``)
    around the stream id, seq, t, one prepacked ``label``/``class`` pair per class
    (``classes``, ending at ``class_ends``) and the floats."""

    consts: np.ndarray  # uint8
    const_ends: np.ndarray  # int64
    classes: np.ndarray  # uint8
    class_ends: np.ndarray  # int64
    max_bytes: int  # the most bytes one decision takes (``decision_bound``)


def decision_layout(epoch: int, labels: list[str], n_lzc: int, model: str) -> DecisionLayout:
    """The ``DecisionLayout`` of decisions stamped ``epoch`` and ``model``."""
    packer = msgpack.Packer(use_bin_type=True)
    key = packer.pack
    consts = [bytes([0x80 | len(DECISION_KEYS)]) + key("v") + key(VERSION) + key("stream"),
              key("epoch") + key(epoch) + key("seq"), key("t"), key("label"),
              key("scores") + packer.pack_array_header(len(labels)),
              key("lzc") + packer.pack_array_header(n_lzc), key("latency_s"), key("energy_j"),
              key("cpu_s"), key("model") + key(model)]
    pairs = [key(label) + key("class") + key(c) for c, label in enumerate(labels)]

    def ends(parts: list[bytes]) -> np.ndarray:
        return np.array([0, *itertools.accumulate(map(len, parts))], np.int64)

    return DecisionLayout(np.frombuffer(b"".join(consts), np.uint8), ends(consts),
                          np.frombuffer(b"".join(pairs), np.uint8), ends(pairs),
                          decision_bound(labels, n_lzc, model))


def pack_decisions(consts, const_ends, streams, stream_ends, seqs, t, classes, pairs, pair_ends,
                   scores, lzc, latency_s, energy_j, cpu_s, out, out_ends) -> None:
    """Decision ``k`` as ``encode_decisions`` packs it, into ``out[out_ends[k]:out_ends[k + 1]]``:
    the layout's pieces (``DecisionLayout``) around its stream id
    ``streams[stream_ends[k]:stream_ends[k + 1]]`` (UTF-8, at most 255 bytes), ``seqs[k]``
    and ``t[k]`` (>= 0), the pair of class ``classes[k]``, and as float64 ``scores[k]``,
    ``lzc[k]``, ``latency_s[k]``, ``energy_j[k]`` and ``cpu_s``. Written for Numba, like
    ``scan_frame``; a property test holds it to ``encode_decisions``."""
    n_scores, n_lzc = scores.shape[1], lzc.shape[1]
    row = np.empty(n_scores + n_lzc + 3, np.float64)  # a decision's floats, in order
    bits = row.view(np.uint64)
    at = 0
    out_ends[0] = 0
    for k in range(seqs.shape[0]):
        row[:n_scores] = scores[k]
        row[n_scores:n_scores + n_lzc] = lzc[k]
        row[-3], row[-2], row[-1] = latency_s[k], energy_j[k], cpu_s
        f = 0
        for piece in range(const_ends.shape[0] - 1):
            for i in range(const_ends[piece], const_ends[piece + 1]):
                out[at] = consts[i]
                at += 1
            if piece == 0:  # the stream id: fixstr or str8
                a, b = stream_ends[k], stream_ends[k + 1]
                if b - a < 32:
                    out[at] = 0xA0 | (b - a)
                    at += 1
                else:
                    out[at], out[at + 1] = 0xD9, b - a
                    at += 2
                for i in range(a, b):
                    out[at] = streams[i]
                    at += 1
            elif piece == 1 or piece == 2:  # seq, t: the smallest unsigned int that holds it
                v = seqs[k] if piece == 1 else t[k]
                if v < 0x80:
                    out[at] = v
                    at += 1
                else:
                    width = 1 if v <= 0xFF else 2 if v <= 0xFFFF else 4 if v <= 0xFFFFFFFF else 8
                    out[at] = 0xCC if width == 1 else 0xCD if width == 2 else 0xCE if width == 4 else 0xCF
                    for j in range(width):
                        out[at + 1 + j] = (v >> (8 * (width - 1 - j))) & 0xFF
                    at += 1 + width
            elif piece == 3:  # the class's label and id
                c = classes[k]
                for i in range(pair_ends[c], pair_ends[c + 1]):
                    out[at] = pairs[i]
                    at += 1
            else:  # float64, big-endian: the scores, the lzc, then one each
                for _ in range(n_scores if piece == 4 else n_lzc if piece == 5 else 0 if piece == 9 else 1):
                    v = bits[f]
                    f += 1
                    out[at] = 0xCB
                    for j in range(8):
                        out[at + 1 + j] = (v >> np.uint64(56 - 8 * j)) & np.uint64(0xFF)
                    at += 9
        out_ends[k + 1] = at


class Packed(NamedTuple):
    """Decisions packed back to back (``pack_decisions_with``): decision ``k``'s topic (its
    stream id, UTF-8) is ``ids[id_ends[k]:id_ends[k + 1]]``, its payload ``out[ends[k]:ends[k +
    1]]``; all uint8 and int64 arrays."""

    ids: np.ndarray
    id_ends: np.ndarray
    out: np.ndarray
    ends: np.ndarray

    @classmethod
    def of(cls, streams: list[str], payloads: list[bytes]) -> "Packed":
        ids, id_ends = concat([s.encode() for s in streams])
        out, ends = concat(payloads)
        return cls(np.frombuffer(ids, np.uint8), np.array(id_ends, np.int64),
                   np.frombuffer(out, np.uint8), np.array(ends, np.int64))

    def payloads(self) -> list[bytes]:
        buf, bounds = self.out[:self.ends[-1]].tobytes(), self.ends.tolist()
        return [buf[a:b] for a, b in zip(bounds, bounds[1:])]


def pack_decisions_with(pack, layout: DecisionLayout, streams: list[str], seqs: list[int],
                        t: np.ndarray, classes: np.ndarray, scores: np.ndarray, lzc: np.ndarray,
                        latency_s: list[float], energy_j: list[float], cpu_s: float) -> Packed:
    """``encode_decisions`` in one ``pack`` call (``pack_decisions``, compiled) over arrays:
    ``t`` and ``classes`` one int per decision, ``scores`` and ``lzc`` one float32 row."""
    ids, id_ends = concat([s.encode() for s in streams])
    ids, id_ends = np.frombuffer(ids, np.uint8), np.array(id_ends, np.int64)
    out = np.empty(len(streams) * layout.max_bytes, np.uint8)
    ends = np.empty(len(streams) + 1, np.int64)
    pack(layout.consts, layout.const_ends, ids, id_ends, np.array(seqs, np.int64),
         np.ascontiguousarray(t, np.int64), np.ascontiguousarray(classes, np.int64), layout.classes,
         layout.class_ends, np.ascontiguousarray(scores, np.float32), np.ascontiguousarray(lzc, np.float32),
         np.array(latency_s, np.float64), np.array(energy_j, np.float64), float(cpu_s), out, ends)
    return Packed(ids, id_ends, out, ends)


def encode_decision(stream: str, epoch: int, seq: int, t: int, label: str, class_id: int,
                    scores: list[float], lzc: list[float], latency_s: float,
                    energy_j: float, cpu_s: float, model: str) -> bytes:
    """The payload frame of one decision (the topic frame is ``stream.encode()``)."""
    return encode_decisions([stream], epoch, [seq], [t], [label], [class_id], [scores], [lzc],
                            [latency_s], [energy_j], cpu_s, model)[0]


def decision_bound(labels: list[str], n_lzc: int, model: str) -> int:
    """The most bytes a decision of a model with class ``labels``, ``n_lzc`` output
    neurons and id ``model`` encodes to: ``encode_decision`` of the largest one, with a
    stream id of ``MAX_STREAM_BYTES``, the longest label and the widest ints (msgpack
    packs any int below 2**64 in at most 9 bytes, every float in 9)."""
    widest = (1 << 64) - 1
    label = max(labels, key=lambda x: len(x.encode()))
    return len(encode_decision("x" * MAX_STREAM_BYTES, widest, widest, widest, label, widest,
                               [0.0] * len(labels), [0.0] * n_lzc, 0.0, 0.0, 0.0, model))


def decode_decision(buf: bytes) -> dict:
    """Unpack a decision payload with tight limits; raise ``ValueError`` if it is not one."""
    try:
        msg = msgpack.unpackb(buf, raw=False, strict_map_key=True, max_str_len=4096,
                              max_bin_len=0, max_array_len=1 << 16, max_map_len=64,
                              max_ext_len=0)
    except msgpack.UnpackException as e:
        raise ValueError(f"decision is not msgpack: {e}") from None
    if not isinstance(msg, dict) or msg.get("v") != VERSION:
        raise ValueError("decision is not a protocol v1 map")
    missing = [k for k in DECISION_KEYS if k != "cpu_s" and k not in msg]
    if missing:
        raise ValueError(f"decision lacks {missing}")
    return msg


READY_KEYS = frozenset({"edged", "v", "epoch", "ingest", "ingest_socket", "publish", "metrics",
                        "warm_s"})


def ready_line(epoch: int, ingest: str, ingest_socket: str, publish: str, metrics: str,
               warm_s: float) -> str:
    """The one line ``edged serve`` prints to stdout when it is ready."""
    return json.dumps({"edged": "ready", "v": VERSION, "epoch": epoch, "ingest": ingest,
                       "ingest_socket": ingest_socket, "publish": publish, "metrics": metrics,
                       "warm_s": round(warm_s, 3)}, sort_keys=True)


def parse_ready(line: str) -> dict[str, Any] | None:
    """The fields of a ready line, or ``None`` if ``line`` is not one."""
    try:
        msg = json.loads(line)
    except ValueError:
        return None
    if isinstance(msg, dict) and msg.get("edged") == "ready" and set(msg) == READY_KEYS:
        return msg
    return None
