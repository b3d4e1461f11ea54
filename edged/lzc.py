"""Lempel-Ziv complexity of binary spike trains: one-shot and sliding-window.

This is the one LZ implementation in edged; trainer, daemon and benchmarks all use it.

LZ76 (Lempel & Ziv 1976, exhaustive history, Kaspar & Schuster 1987)
    A sequence ``s[0:n]`` is cut into phrases left to right. The phrase starting at ``p``
    has length ``min(1 + M(p), n - p)`` where ``M(p) = max_{j<p} lcp(j, p)`` and
    ``lcp(j, p)`` is the length of the longest common prefix of ``s[j:n]`` and ``s[p:n]``.
    The copy source ``s[j:]`` may run into the phrase itself (overlap), and a final phrase
    that is a pure copy still counts. ``C`` is the number of phrases; ``lz76`` returns it
    and equals antropy's ``lziv_complexity(s, normalize=False)``. Example:
    ``1|0|01|1110|1100|0010`` gives C = 6; length 0 gives 0, length 1 gives 1, a constant
    window of length n >= 2 gives 2 (``0|000...``).

LZ78 (dictionary parse, variant ``"lz78"``)
    Each phrase is the shortest prefix of the rest that is not yet a phrase; a final
    phrase already in the dictionary still counts. ``1|0|01|11|10|110|00|010`` gives 8.

Normalisation (both variants)
    ``c = C * log2(n) / n`` for ``n >= 2`` (antropy's ``normalize=True`` for binary input);
    ``c = 0.0`` for ``n < 2`` (``log2(1) = 0``, and an empty window carries nothing).

Sliding window (``SlidingLZ``)
    Per (stream, neuron) the engine keeps the last ``W`` bits ``s[a:b]``,
    ``a = max(0, b - W)``, and their exact LZ76 parse, so ``counts`` always equals ``lz76``
    of the window recomputed from scratch (until ``W`` steps are pushed the window is the
    whole history; ``window_len`` gives its length for ``normalise``). Every phrase with
    ``M(p) > 0`` keeps its rightmost source ``j`` (``lcp(j, p) = M(p)``, largest ``j``).
    Appending ``s[b]`` only extends or closes the last, still copying, phrase. Dropping
    ``s[a]`` makes ``a + 1`` phrase 0; an old phrase 1 longer than one bit was a run and
    shifts by one bit; later boundaries stay, except that a phrase whose rightmost source
    was ``a`` shortens, and the text after it is re-cut until the cut meets an old
    boundary. ``push_zeros(k >= W)`` writes the all-zero parse directly.

    That exact parse costs ~25 KB per (stream, neuron) at W = 1024. When counts are read
    only every ``hop >= RECOUNT_HOP`` steps, ``sliding_state(..., hop)`` keeps instead a
    ring of the last ``W`` bits (``W`` bytes) and ``counts`` recounts each window with
    ``lz76_jit``: cheaper per step at such hops, and ~25x smaller. Results are identical;
    only where the work happens differs.

API
    ``lz76(bits) -> int``, ``lz78(bits) -> int``, ``lzc(bits, variant) -> float``: Python
    entry points; ``bits`` is a 1-D integer/bool array of 0/1, anything else ValueError.
    ``lz76_jit(bits) -> int`` and ``normalise(count, n) -> float``: the njit kernels.
    ``sliding_state(n_streams, n_neurons, window, hop=1) -> SlidingLZ``, then the njit
    functions ``push(st, stream, bits)``, ``push_zeros(st, stream, k)``,
    ``counts(st, stream, out)``, ``ones(st, stream, out)`` (spikes per window),
    ``window_len(st, stream)``, ``window_bits(st, stream, neuron)``, ``reset(st, stream)``.
    From njit code pass ``stream`` as a variable (a literal compiles a second copy). The
    state is plain arrays: ``np.savez(f, **st._asdict())``, ``SlidingLZ(**np.load(f))``.

Matching is done on 32-bit grams ``G[i] = s[i:i+32]`` (first bit most significant,
zeros past the known end), so ``lcp(j, p) = clz(G[j] ^ G[p])`` up to 32 and the longest
match over all ``j`` is one vectorised min-reduction of ``G[j] ^ G[p]``.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

__all__ = [
    "lz76", "lz76_jit", "lz78", "lzc", "normalise",
    "SlidingLZ", "sliding_state", "push", "push_zeros", "counts", "ones", "reset", "RECOUNT_HOP",
    "window_len", "window_bits",
]

Variant = Literal["lz76", "lz78"]

_U32 = np.uint32(0xFFFFFFFF)
_Z32 = np.uint32(0)
_GRAM = 32  # bits per gram; a ring holds W + _GRAM slots
RECOUNT_HOP = 8  # from this hop on, recounting each window beats the incremental parse


@intrinsic
def _clz(typingctx, x):
    """Count leading zeros of an unsigned integer (its bit width when zero), as int64."""
    def codegen(context, builder, sig, args):
        r = builder.ctlz(args[0], ir.Constant(ir.IntType(1), 0))
        return builder.zext(r, ir.IntType(64)) if x.bitwidth < 64 else r
    return types.int64(x), codegen


# --------------------------------------------------------------------------- matching


@numba.njit(cache=True, nogil=True)
def _longest(G, lo, p, end):
    """``max_{lo <= j < p} min(lcp(j, p), end - p)`` on grams ``G`` (0 if ``p <= lo``)."""
    # Loops index slices from 0 so Numba drops its negative-index fix-up and LLVM vectorises.
    cap = end - p
    if p <= lo:
        return 0
    g = G[p]
    H = G[lo:p]
    m = _U32
    for i in range(H.size):
        m = min(m, np.uint32(H[i] ^ g))
    if m or cap <= _GRAM:
        return min(_clz(m), cap)
    # Some j match 32 bits: compare the next gram of those j only.
    h = G[p + _GRAM]
    Y = G[lo + _GRAM:p + _GRAM]
    m = _U32
    for i in range(H.size):
        m = min(m, np.uint32((Y[i] ^ h) | (_U32 if H[i] != g else _Z32)))
    if m or cap <= 2 * _GRAM:
        return min(_GRAM + _clz(m), cap)
    # Rare: 64+ bit matches. Track which j still match, one gram at a time.
    bad = np.empty(H.size, np.uint32)
    for i in range(H.size):
        bad[i] = (H[i] ^ g) | (Y[i] ^ h)
    s = 2 * _GRAM
    while True:
        h = G[p + s]
        Y = G[lo + s:p + s]
        m = _U32
        for i in range(H.size):
            m = min(m, np.uint32((Y[i] ^ h) | (_U32 if bad[i] else _Z32)))
        if m or cap <= s + _GRAM:
            return min(s + _clz(m), cap)
        for i in range(H.size):
            bad[i] |= Y[i] ^ h
        s += _GRAM


@numba.njit(cache=True, nogil=True)
def _reaches(G, j, p, length):
    """``lcp(j, p) >= length``."""
    t = 0
    while t < length:
        r = min(_GRAM, length - t)
        x = np.uint64(G[j + t] ^ G[p + t])
        if x >> np.uint64(_GRAM - r):
            return False
        t += _GRAM
    return True


@numba.njit(cache=True, nogil=True)
def _source(G, lo, p, length):
    """Rightmost ``j`` in ``[lo, p)`` with ``lcp(j, p) >= length >= 1``; -1 if none."""
    g = G[p]
    if length > _GRAM:
        for j in range(p - 1, lo - 1, -1):
            if G[j] == g and _reaches(G, j, p, length):
                return j
        return -1
    thr = np.uint32((np.uint64(1) << np.uint64(_GRAM - length)) - np.uint64(1))
    H = G[lo:p]
    best = np.int32(-1)
    for i in range(H.size):
        best = max(best, np.int32(i) if np.uint32(H[i] ^ g) <= thr else np.int32(-1))
    return lo + best if best >= 0 else -1


# --------------------------------------------------------------------------- one-shot


@numba.njit(cache=True, nogil=True)
def _grams(bits):
    """32-bit grams of ``bits``, or an empty array if a value is not 0/1."""
    n = bits.size
    G = np.empty(n, np.uint32)
    g = _Z32
    for i in range(n - 1, -1, -1):
        v = np.uint32(bits[i])
        if v > 1:
            return np.empty(0, np.uint32)
        g = np.uint32((g >> np.uint32(1)) | (v << np.uint32(31)))
        G[i] = g
    return G


@numba.njit(cache=True, nogil=True)
def lz76_jit(bits):
    """LZ76 phrase count of a 1-D uint8/bool array of 0/1; -1 if a value is not 0/1."""
    n = bits.size
    G = _grams(bits)
    if G.size != n:
        return -1
    c = 0
    p = 0
    while p < n:
        c += 1
        p += _longest(G, 0, p, n) + 1
    return c


@numba.njit(cache=True, nogil=True)
def _lz78_jit(bits):
    n = bits.size
    child = np.zeros((n + 1, 2), np.int64)  # binary trie; node 0 is the root, 0 = no child
    nodes = 1
    node = 0
    c = 0
    for i in range(n):
        b = bits[i]
        if b > 1:
            return -1
        nxt = child[node, b]
        if nxt:
            node = nxt
        else:
            child[node, b] = nodes
            nodes += 1
            c += 1
            node = 0
    return c + (node != 0)


@numba.njit(cache=True, nogil=True)
def normalise(count, n):
    """``count * log2(n) / n``; 0.0 for ``n < 2``."""
    if n < 2:
        return 0.0
    return count * math.log2(n) / n


def _as_bits(bits) -> np.ndarray:
    """A 1-D integer/bool array of 0/1 as contiguous uint8 (uint8 values are checked by the
    kernels, wider integers here)."""
    x = np.asarray(bits)
    if x.ndim != 1:
        raise ValueError(f"bits must be 1-D, got shape {x.shape}")
    kind = x.dtype.kind
    if kind == "b":
        x = x.view(np.uint8)
    elif kind not in "iu":
        if x.size:
            raise ValueError(f"bits must be an integer or bool array, got dtype {x.dtype}")
        x = x.astype(np.uint8)
    elif x.dtype != np.uint8:
        if x.size and (x.min() < 0 or x.max() > 1):
            raise ValueError("bits must contain only 0 and 1")
        x = x.astype(np.uint8)
    return x if x.flags.c_contiguous else np.ascontiguousarray(x)


def _checked(count: int) -> int:
    if count < 0:
        raise ValueError("bits must contain only 0 and 1")
    return int(count)


def lz76(bits) -> int:
    """LZ76 phrase count ``C`` of a 1-D array of 0/1 (see the module docstring)."""
    return _checked(lz76_jit(_as_bits(bits)))


def lz78(bits) -> int:
    """LZ78 dictionary-parse phrase count of a 1-D array of 0/1."""
    return _checked(_lz78_jit(_as_bits(bits)))


def lzc(bits, variant: Variant = "lz76") -> float:
    """Normalised complexity ``C * log2(n) / n`` (0.0 for ``n < 2``) of the given variant."""
    if variant == "lz76":
        count = lz76(bits)
    elif variant == "lz78":
        count = lz78(bits)
    else:
        raise ValueError(f"variant must be 'lz76' or 'lz78', got {variant!r}")
    return float(normalise(count, np.asarray(bits).size))


# --------------------------------------------------------------------------- sliding


class SlidingLZ(NamedTuple):
    """Sliding LZ76 state for S streams x N neurons, window W; ring of R = W + 32 slots.

    Slot ``i % R`` describes absolute position ``i`` (the bit pushed at step ``i``).
    """

    steps: np.ndarray  # int64 (S,): bits pushed per stream; window is [steps - W, steps)
    gram: np.ndarray   # uint32 (S, N, 2R): gram of each position, written to slot and slot + R
    plen: np.ndarray   # int32 (S, N, R): length of the phrase starting there, else 0
    src: np.ndarray    # int64 (S, N, R): that phrase's copy source (absolute), -1 if none
    refs: np.ndarray   # int32 (S, N, R): number of phrases whose source is this position
    last: np.ndarray   # int64 (S, N): start of the still-copying last phrase; == steps if none
    count: np.ndarray  # int64 (S, N): LZ76 phrase count of the window
    ring: np.ndarray   # uint8 (S, N, W): recount mode's bits, slot i % W; (S, N, 0) otherwise


class _Lane(NamedTuple):
    """Views of one (stream, neuron) for the duration of one step."""

    G: np.ndarray
    plen: np.ndarray
    src: np.ndarray
    refs: np.ndarray
    last: np.ndarray   # 1-element views
    count: np.ndarray
    base: int          # multiple of R <= any position touched: slot = pos - base (- R)
    R: int


def sliding_state(n_streams: int, n_neurons: int, window: int = 1024, hop: int = 1) -> SlidingLZ:
    """Empty sliding state (every window empty, count 0) for counts read every ``hop`` steps:
    the exact incremental parse below ``RECOUNT_HOP``, the recount ring from there on."""
    if n_streams < 1 or n_neurons < 1 or window < 1 or hop < 1:
        raise ValueError("n_streams, n_neurons, window and hop must be >= 1")
    recount = hop >= RECOUNT_HOP
    r = 0 if recount else window + _GRAM
    shape = (n_streams, n_neurons)
    return SlidingLZ(
        steps=np.zeros(n_streams, np.int64),
        gram=np.zeros(shape + (2 * r,), np.uint32),
        plen=np.zeros(shape + (r,), np.int32),
        src=np.full(shape + (r,), -1, np.int64),
        refs=np.zeros(shape + (r,), np.int32),
        last=np.zeros(shape, np.int64),
        count=np.zeros(shape, np.int64),
        ring=np.zeros(shape + (window if recount else 0,), np.uint8),
    )


@numba.njit(cache=True, nogil=True)
def _window(st):
    return st.ring.shape[2] if st.ring.shape[2] > 0 else st.plen.shape[2] - _GRAM


# The per-step helpers are inlined into ``push``: Numba otherwise pays reference counting
# on every array of a ``_Lane`` it passes, which costs more than the work itself.
_inline = numba.njit(cache=True, nogil=True, inline="always")


@_inline
def _lane(st, s, n, start):
    R = st.plen.shape[2]
    return _Lane(st.gram[s, n], st.plen[s, n], st.src[s, n], st.refs[s, n],
                 st.last[s, n:n + 1], st.count[s, n:n + 1], start - start % R, R)


@_inline
def _slot(ln, pos):
    k = pos - ln.base
    return k - ln.R if k >= ln.R else k


@numba.njit(cache=True, nogil=True)
def _match(ln, lo, p, end):
    """(longest match length, its rightmost source or -1) of the phrase at ``p``."""
    b = ln.base  # gram index i holds position b + i for all positions in [lo, end)
    length = _longest(ln.G, lo - b, p - b, end - b)
    if length == 0:
        return 0, -1
    return length, b + _source(ln.G, lo - b, p - b, length)


@_inline
def _set_phrase(ln, p, length, j):
    k = _slot(ln, p)
    ln.plen[k] = length
    ln.src[k] = j
    if j >= 0:
        ln.refs[_slot(ln, j)] += 1


@_inline
def _release(ln, p):
    k = _slot(ln, p)
    j = ln.src[k]
    if j >= 0:
        ln.refs[_slot(ln, j)] -= 1
        ln.src[k] = -1


@numba.njit(cache=True, nogil=True)
def _reparse(ln, lo, q, o, b):
    """Re-cut ``[q, b)`` (``q`` a new boundary, ``o`` the first old one >= q) until the cut
    meets an old boundary; returns that boundary, or ``b``."""
    while q < b:
        if q == o:
            return o
        length, j = _match(ln, lo, q, b)
        cut = min(length + 1, b - q)
        _set_phrase(ln, q, cut, j)
        ln.count[0] += 1
        if length == b - q:
            ln.last[0] = q
        elif q + cut == b:
            ln.last[0] = b
        q += cut
        while o < q:  # old phrases swallowed by the new cut
            _release(ln, o)
            k = _slot(ln, o)
            o += ln.plen[k]
            ln.plen[k] = 0
            ln.count[0] -= 1
    return b


@_inline
def _drop(ln, a, b):
    """Window ``[a, b)`` -> ``[a + 1, b)``."""
    ln.plen[_slot(ln, a)] = 0  # phrase 0: length 1, no source
    ln.count[0] -= 1
    if a + 1 == b:
        return
    # Old phrase 1 becomes phrase 0. If it was longer than one bit, s[a:a+1+n] was a run and
    # the new phrase 1 is that run shifted by one: same end, source a + 1.
    p = a + 1
    k = _slot(ln, p)
    n = ln.plen[k]
    _release(ln, p)
    ln.plen[k] = 1
    if ln.last[0] == p:
        ln.last[0] = p + 1
        if p + 1 < b:
            _set_phrase(ln, p + 1, b - p - 1, p)
            ln.count[0] += 1
    elif n > 1:
        _set_phrase(ln, p + 1, n - 1, p if n > 2 else -1)
        ln.count[0] += 1
    # Sources are rightmost, so a phrase whose source was ``a`` has no other one as long:
    # it shortens. Re-cut from its start until the cut meets an old boundary.
    q = p + 1
    ka = _slot(ln, a)
    while ln.refs[ka] > 0:
        if q >= b:
            raise AssertionError("sliding LZ76: a phrase source was not found")
        k = _slot(ln, q)
        n = ln.plen[k]
        if ln.src[k] == a:
            _release(ln, q)
            ln.plen[k] = 0
            ln.count[0] -= 1
            q = _reparse(ln, p, q, q + n, b)
        else:
            q += n


@_inline
def _append(ln, a, b, bit):
    """Window ``[a, b)`` -> ``[a, b + 1)`` with ``s[b] = bit`` (uint32 0 or 1)."""
    G = ln.G
    R = ln.R
    k = _slot(ln, b)
    G[k] = G[k + R] = bit << np.uint32(31)
    if bit:
        for d in range(1, min(_GRAM, b + 1)):
            k = k - 1 if k > 0 else R - 1
            v = np.uint32(1) << np.uint32(31 - d)
            G[k] |= v
            G[k + R] |= v
    q = ln.last[0]
    n = b - q
    if n == 0:  # a new phrase starts at b
        length, j = _match(ln, a, b, b + 1)
        _set_phrase(ln, b, 1, j)
        ln.count[0] += 1
        if length == 0:
            ln.last[0] = b + 1
        return
    k = _slot(ln, q)
    if G[ln.src[k] + n - ln.base] >> np.uint32(31) == bit:  # the source still copies
        ln.plen[k] = n + 1
        return
    j = _source(G, a - ln.base, q - ln.base, n + 1)
    if j >= 0:  # another source copies one bit further
        _release(ln, q)
        _set_phrase(ln, q, n + 1, ln.base + j)
    else:  # s[b] is the innovation: the phrase closes, its source stays
        ln.plen[k] = n + 1
        ln.last[0] = b + 1


@_inline
def _step(st, s, n, b, W, bit):
    a = b - W
    ln = _lane(st, s, n, max(a, 0))
    if a >= 0:
        _drop(ln, a, b)
    _append(ln, max(a + 1, 0), b, bit)


@numba.njit(cache=True, nogil=True)
def _check(st, stream, n_neurons):
    if not 0 <= stream < st.steps.size:
        raise IndexError("stream out of range")
    if n_neurons != st.count.shape[1]:
        raise ValueError("one value per neuron is required")


@numba.njit(cache=True, nogil=True)
def push(st, stream, bits):
    """Append one step (``bits[n]`` for each neuron, nonzero = 1) to ``stream``."""
    _check(st, stream, bits.size)
    b = st.steps[stream]
    if st.ring.shape[2] > 0:
        for n in range(bits.size):
            st.ring[stream, n, b % st.ring.shape[2]] = bits[n] != 0
        st.steps[stream] = b + 1
        return
    W = st.plen.shape[2] - _GRAM
    for n in range(st.plen.shape[1]):
        _step(st, stream, n, b, W, np.uint32(bits[n] != 0))
    st.steps[stream] = b + 1


@numba.njit(cache=True, nogil=True)
def push_zeros(st, stream, k):
    """Append ``k`` all-zero steps to ``stream``; O(min(k, W)) per neuron."""
    if k < 0:
        raise ValueError("push_zeros: k must be >= 0")
    _check(st, stream, st.count.shape[1])
    b = st.steps[stream]
    if st.ring.shape[2] > 0:
        W = st.ring.shape[2]
        for i in range(min(k, W)):
            st.ring[stream, :, (b + i) % W] = 0
        st.steps[stream] = b + k
        return
    W = st.plen.shape[2] - _GRAM
    N = st.plen.shape[1]
    if k < W:
        zeros = np.zeros(N, np.uint8)
        for _ in range(k):
            push(st, stream, zeros)
        return
    # The window becomes all zeros: phrase 0 is one bit, phrase 1 copies it to the end.
    b += k
    a = b - W
    for n in range(N):
        ln = _lane(st, stream, n, a)
        ln.G[:] = 0
        ln.plen[:] = 0
        ln.src[:] = -1
        ln.refs[:] = 0
        _set_phrase(ln, a, 1, -1)
        if W > 1:
            _set_phrase(ln, a + 1, W - 1, a)
        ln.last[0] = a + 1
        ln.count[0] = min(W, 2)
    st.steps[stream] = b


@numba.njit(cache=True, nogil=True)
def counts(st, stream, out):
    """Write the LZ76 count of each neuron's current window of ``stream`` into ``out``."""
    _check(st, stream, out.size)
    if st.ring.shape[2] == 0:
        for n in range(st.count.shape[1]):
            out[n] = st.count[stream, n]
        return
    for n in range(st.count.shape[1]):
        out[n] = lz76_jit(window_bits(st, stream, n))


@numba.njit(cache=True, nogil=True)
def ones(st, stream, out):
    """Write the number of ones (spikes) in each neuron's current window into ``out``."""
    _check(st, stream, out.size)
    for n in range(st.count.shape[1]):
        if st.ring.shape[2] > 0:  # slots outside a young window are still zero
            out[n] = st.ring[stream, n].sum()
        else:
            out[n] = window_bits(st, stream, n).sum()


@numba.njit(cache=True, nogil=True)
def window_len(st, stream):
    """Bits in the current window of ``stream``: ``min(steps, W)`` (for ``normalise``)."""
    return min(st.steps[stream], _window(st))


@numba.njit(cache=True, nogil=True)
def window_bits(st, stream, neuron):
    """Copy of the current window of one (stream, neuron), oldest bit first."""
    b = st.steps[stream]
    out = np.empty(window_len(st, stream), np.uint8)
    a = b - out.size
    if st.ring.shape[2] > 0:
        ring = st.ring[stream, neuron]
        for i in range(out.size):
            out[i] = ring[(a + i) % ring.size]
        return out
    R = st.plen.shape[2]
    for i in range(out.size):
        out[i] = st.gram[stream, neuron, (a + i) % R] >> np.uint32(31)
    return out


@numba.njit(cache=True, nogil=True)
def reset(st, stream):
    """Empty every window of ``stream`` (e.g. when a new source takes the slot)."""
    st.steps[stream] = 0
    st.gram[stream] = 0
    st.plen[stream] = 0
    st.src[stream] = -1
    st.refs[stream] = 0
    st.last[stream] = 0
    st.count[stream] = 0
    st.ring[stream] = 0
