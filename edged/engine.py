"""The stream engine: neuron kernels + sliding-window LZ76 -> readout features.

One engine serves the daemon, the trainer's feature extraction and ``evaluate``, so all
three decide identically. It holds, for ``streams`` slots, the neuron state
(``edged.neurons``), the sliding LZ76 windows of the output spike trains
(``edged.lzc``), each stream's clock ``now`` (steps completed) and its escape-noise key
(``edged.rng.stream_key`` of its id; ``keys``), all as plain arrays.

``advance(slot, t, ch, end)`` simulates steps ``[now, end)`` by ``edged.neurons.advance``
(the one stepping rule, shared with ``edged.neurons.simulate``), the windows taking the
output bits of the stepped steps in runs (``edged.lzc.push_many``, pushed before each
decision) and the zeros of a decayed stretch in bulk. ``advance_many`` does the
same for a batch of frames of any streams in one compiled (nogil) call; its events were
validated where they entered (``edged.protocol.decode_frame``). ``advance`` validates,
then runs its frame through ``advance_many``.
A decision falls at every boundary ``b`` (steps completed) with ``b % hop == 0`` and
``b >= window``; it covers steps ``[b - window, b)`` and carries, per output neuron, the
LZ76 phrase count and the spike count of the window, its normalised LZ complexity, and
the readout features (``edged.readout``: each count times ``edged.readout.scale``, as
float32), computed in the same compiled call.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from edged import lzc, neurons
from edged.bits import prefetch
from edged.jit import bind, borrow, inline_kernel, kernel
from edged.readout import scale
from edged.rng import stream_key


class Decisions(NamedTuple):
    t: np.ndarray  # int64[k]: window end (exclusive step)
    lz: np.ndarray  # int64[k, n_out]: LZ76 phrase counts
    spikes: np.ndarray  # int64[k, n_out]: spikes in the window
    lzc: np.ndarray  # float32[k, n_out]: normalised LZ complexity (edged.lzc.normalise)
    features: np.ndarray  # float32[k, n_features]
    ops: int  # synaptic operations (accumulates) spent


class Work(NamedTuple):
    """Work space of the stepping loop (``workspace``), reused by every frame of a call."""

    neurons: neurons.Work
    lz: np.ndarray  # lzc.workspace
    bits: np.ndarray  # uint8[n_out]: one step's output spikes
    held: np.ndarray  # uint64[n_out]: output bits not yet pushed to the windows, newest lowest


@inline_kernel
def workspace(net, lz):
    n_out = net.w_out.shape[1]
    return Work(neurons.workspace(net), lzc.workspace(lz), np.zeros(n_out, np.uint8),
                np.zeros(n_out, np.uint64))


@inline_kernel
def _decide(lz, slot, now, k, dec_t, dec_lz, dec_spikes, work):
    dec_t[k] = now
    lzc.read(lz, slot, dec_lz[k], work)
    lzc.ones(lz, slot, dec_spikes[k])


@kernel
def _features(dec_lz, dec_spikes, codes, scales, complexity, feats):
    """``feats[k, i * n_out + j] = float32(count * scales[i])``, the count being the LZ76
    phrase count (``codes[i] == 0``) or the spike count (1) of neuron ``j``;
    ``complexity`` the phrase counts times the ``lzc`` scale (``scales[-1]``)."""
    n_out = dec_lz.shape[1]
    for k in range(dec_lz.shape[0]):
        for j in range(n_out):
            complexity[k, j] = np.float32(np.float64(dec_lz[k, j]) * scales[-1])
        for i in range(codes.shape[0]):
            counts = dec_lz if codes[i] == 0 else dec_spikes
            for j in range(n_out):
                feats[k, i * n_out + j] = np.float32(np.float64(counts[k, j]) * scales[i])


@kernel
def _valid(t, ch, now, end, n_in):
    for i in range(t.shape[0]):
        if t[i] < now or t[i] >= end or (i > 0 and t[i] < t[i - 1]) or not 0 <= ch[i] < n_in:
            return False
    return True


@kernel
def decisions_between(start, end, hop, window):
    """Decisions a stream at clock ``start`` makes advancing to ``end``."""
    lo = max(window, start + 1)
    return 0 if lo > end else end // hop - (lo - 1) // hop


@inline_kernel
def _prefetch_row(a, row):
    """Prefetch row ``row`` (along the first axis) of the C-contiguous array ``a``."""
    n = a.size // a.shape[0]
    for i in range(0, n, max(64 // a.itemsize, 1)):
        prefetch(a, row * n + i)


@inline_kernel
def _prefetch_stream(st, lz, slot):
    """Prefetch the neuron state and LZ windows of ``slot``: the next frame's stream, cold
    in cache (frames come round the streams), loads while this frame is worked on."""
    for layer in st:
        for x in layer:
            _prefetch_row(x, slot)
    _prefetch_row(lz.words, slot)
    _prefetch_row(lz.starts, slot)
    _prefetch_row(lz.srcs, slot)


@kernel
def _advance_many(net, st, lz, clock, keys, slots, starts, ends, offsets, t, ch, hop, window,
                  codes, scales):
    """``_run`` for frame ``f`` of each of ``slots`` in order: steps ``[starts[f], ends[f])``,
    events ``t/ch[offsets[f]:offsets[f + 1]]``, then ``clock[slot] = end``. Returns
    ``(first, ops, total ops, dec_t, dec_lz, dec_spikes, complexity, feats)``: frame ``f``'s
    decisions are rows ``[first[f], first[f + 1])``, its synaptic ops ``ops[f]``. The events were
    validated where they entered."""
    n_frames = slots.shape[0]
    first = np.zeros(n_frames + 1, np.int64)
    for f in range(n_frames):
        first[f + 1] = first[f] + decisions_between(starts[f], ends[f], hop, window)
    rows = first[n_frames]
    n_out = net.w_out.shape[1]
    dec_t = np.empty(rows, np.int64)
    dec_lz = np.empty((rows, n_out), np.int64)
    dec_spikes = np.empty((rows, n_out), np.int64)
    ops = np.empty(n_frames, np.int64)
    work = workspace(net, lz)
    for f in range(n_frames):
        slot = slots[f]
        if clock[slot] != starts[f]:
            raise AssertionError("advance_many: a frame does not start at its stream's clock")
        a, b = offsets[f], offsets[f + 1]
        k0, k1 = first[f], first[f + 1]
        if f + 1 < n_frames:
            _prefetch_stream(st, lz, slots[f + 1])
        ops[f] = _run(net, st, lz, slot, keys[slot], t[a:b], ch[a:b], starts[f], ends[f], hop, window,
                      dec_t[k0:k1], dec_lz[k0:k1], dec_spikes[k0:k1], work)
        clock[slot] = ends[f]
    complexity = np.empty((rows, n_out), np.float32)
    feats = np.empty((rows, n_out * codes.shape[0]), np.float32)
    _features(dec_lz, dec_spikes, codes, scales, complexity, feats)
    return first, ops, ops.sum(), dec_t, dec_lz, dec_spikes, complexity, feats


@inline_kernel
def _run(net, st, lz, slot, key, t, ch, now, end, hop, window, dec_t, dec_lz, dec_spikes, work):
    net, st, lz, t, ch = borrow((net, st, lz, t, ch))  # (held by the caller throughout)
    dec_t, dec_lz, dec_spikes, work = borrow((dec_t, dec_lz, dec_spikes, work))
    n_out = net.w_out.shape[1]
    w, bits, held = work.neurons, work.bits, work.held
    n_held = 0
    ops = 0
    k = 0
    i = 0
    # the next decision boundary after ``now``: a multiple of hop, >= window
    due = max((window + hop - 1) // hop * hop, (now // hop + 1) * hop)
    while now < end:
        i, nxt, skipped, o = neurons.advance(net, st, slot, key, t, ch, i, now, end, bits, w)
        ops += o
        if not skipped:  # one stepped step
            for j in range(n_out):
                held[j] = (held[j] << np.uint64(1)) | np.uint64(bits[j])
            n_held += 1
            now = nxt
            if now == due or n_held == lzc.MAX_PUSH or now == end:
                lzc.push_many(lz, slot, held, n_held)
                n_held = 0
            if now == due:
                _decide(lz, slot, now, k, dec_t, dec_lz, dec_spikes, work.lz)
                k += 1
                due += hop
        if now < nxt and n_held:
            lzc.push_many(lz, slot, held, n_held)
            n_held = 0
        while now < nxt:  # a decayed stretch: its zeros in bulk, cut at decision boundaries
            stop = min(nxt, due)
            lzc.push_zeros(lz, slot, stop - now)
            now = stop
            if now == due:
                _decide(lz, slot, now, k, dec_t, dec_lz, dec_spikes, work.lz)
                k += 1
                due += hop
    return ops


class Engine:
    """Per-stream neuron state and LZ windows for ``streams`` slots of one network."""

    def __init__(self, net: neurons.Net, window: int, hop: int,
                 features: tuple[str, ...] = ("lzc",), streams: int = 1):
        if not (1 <= hop <= window):
            raise ValueError(f"hop {hop} must be in [1, window={window}]")
        self.net, self.window, self.hop, self.features = net, window, hop, tuple(features)
        self._codes = np.array([0 if f == "lzc" else 1 for f in self.features], np.int64)
        self._scales = np.array([scale(f, window) for f in self.features] + [scale("lzc", window)])
        self.state = neurons.zero_state(net, streams)
        self.lz = lzc.sliding_state(streams, net.w_out.shape[1], window, hop)
        self.now = np.zeros(streams, np.int64)
        self.keys = np.zeros(streams, np.uint64)
        self._advance_many = None

    @classmethod
    def for_model(cls, model, streams: int = 1) -> "Engine":
        return cls(model.net(), model.window, model.hop, model.features, streams)

    @property
    def streams(self) -> int:
        return self.now.shape[0]

    @property
    def n_in(self) -> int:
        return self.net.w_in.shape[0]

    def reset(self, slot: int, stream_id: str = "") -> None:
        """Cold state for ``slot``, a new or expired stream (``stream_id`` keys its noise)."""
        for layer in self.state:
            for x in layer:
                x[slot] = 0
        lzc.reset(self.lz, slot)
        self.now[slot] = 0
        self.keys[slot] = stream_key(stream_id)

    def advance(self, slot: int, t: np.ndarray, ch: np.ndarray, end: int) -> Decisions:
        """Simulate ``slot`` over ``[now, end)`` with events ``(t, ch)`` sorted by ``t``,
        ``now <= t < end``, ``0 <= ch < n_in``; raise ``ValueError`` otherwise."""
        t = np.ascontiguousarray(t, np.int64)
        ch = np.ascontiguousarray(ch, np.int64)
        now = int(self.now[slot])
        if t.shape != ch.shape or t.ndim != 1:
            raise ValueError("t and ch must be 1-D arrays of equal length")
        if end <= now:  # nothing to simulate: an empty frame (its events ignored)
            t, ch, end = t[:0], ch[:0], now
        if not _valid(t, ch, now, end, self.n_in):
            raise ValueError(f"events must be sorted within [{now}, {end}) "
                             f"with channels in [0, {self.n_in})")
        frame = (np.array([slot], np.int64), np.array([now], np.int64), np.array([end], np.int64),
                 np.array([0, t.size], np.int64))
        return self.advance_many(*frame, t, ch)[0]

    def advance_many(self, slots: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                     offsets: np.ndarray, t: np.ndarray, ch: np.ndarray) -> tuple[Decisions, np.ndarray, np.ndarray]:
        """``advance`` for many frames in one compiled call: frame ``f`` advances
        ``slots[f]`` from its clock ``starts[f]`` to ``ends[f] >= starts[f]`` with events
        ``t/ch[offsets[f]:offsets[f + 1]]`` (int64, already valid: sorted within its
        range, channels in ``[0, n_in)``). A slot may recur; frames run in order. Returns
        the decisions of all frames in frame order, the row where each frame's decisions
        start (``first[f]:first[f + 1]``) and each frame's synaptic ops."""
        args = (self.net, self.state, self.lz, self.now, self.keys, slots, starts, ends, offsets,
                t, ch, self.hop, self.window, self._codes, self._scales)
        if self._advance_many is None:
            self._advance_many = bind(_advance_many, *args)
        first, ops, total, dec_t, dec_lz, dec_spikes, complexity, feats = self._advance_many(*args)
        return Decisions(dec_t, dec_lz, dec_spikes, complexity, feats, total), first, ops

    def state_bytes(self) -> int:
        """Bytes of state per stream (neurons, LZ windows, clock, key)."""
        arrays = [x for layer in self.state for x in layer] + list(self.lz) + [self.now, self.keys]
        return sum(a.nbytes for a in arrays) // self.streams
