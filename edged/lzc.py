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
    only every ``hop >= RESYNC_HOP`` steps, ``sliding_state(..., hop)`` keeps instead the
    phrase starts and rightmost sources of the window last read (``parsed``), and ``push``
    writes only the bit. ``counts`` completes the grams of the new bits and re-cuts the
    window ``[a', b')`` left to right from ``a'``, taking over an old phrase whenever the
    cut meets its start ``q`` (``q >= a'``) and it is not the still-copying last one and
    its rightmost source ``j`` is ``-1`` or ``>= a'``: the history ``[a', q)`` is a subset
    of the old one, so ``M'(q) <= M(q)``, and ``j`` still reaches ``M(q)``; the mismatch
    ending the phrase lies inside both windows, so ``M'(q) = M(q)``, the same phrase,
    with the same rightmost source. Every other phrase is searched afresh. Results are
    identical to a recount; the work is the head of the window, phrases whose every
    longest match started in the dropped bits (and the phrases after them until the cut
    meets an old start again), and the new tail. A fresh search first walks the chain of
    earlier positions with the same first 8 bits (``heads``/``prev``): when the chain is
    at most ``_CHAIN`` long and reaches ``M >= 8``, every source of an ``M``-bit match is
    on it; otherwise the vectorised scan below decides. The resync mode keeps the bits
    (``ring``) and builds the grams of the window at each read: ~6.5 KB per (stream,
    neuron) at W = 1024.

API
    ``lz76(bits) -> int``, ``lz78(bits) -> int``, ``lzc(bits, variant) -> float``: Python
    entry points; ``bits`` is a 1-D integer/bool array of 0/1, anything else ValueError.
    ``lz76_jit(bits) -> int`` and ``normalise(count, n) -> float``: the njit kernels.
    ``sliding_state(n_streams, n_neurons, window, hop=1) -> SlidingLZ`` (``max_phrases(n)``
    bounds the phrases of ``n`` bits and sizes the resync mode's lists), then the njit
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

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from edged.jit import inline_kernel, kernel

__all__ = [
    "lz76", "lz76_jit", "lz78", "lzc", "normalise",
    "SlidingLZ", "sliding_state", "push", "push_zeros", "counts", "ones", "reset", "RESYNC_HOP", "max_phrases",
    "window_len", "window_bits",
]

Variant = Literal["lz76", "lz78"]

_U32 = np.uint32(0xFFFFFFFF)
_Z32 = np.uint32(0)
_TOP = np.uint32(1 << 31)
_HIGH = np.uint8(0x80)
_GRAM = 32  # bits per gram; a ring holds W + _GRAM slots
_BLOCK = 64  # grams per block of the right-to-left source search
_KEY = 8  # resync mode: positions are chained by their first _KEY bits ...
_KEYS = 1 << _KEY
_CHAIN = 16  # ... and a phrase walks at most this many of them before scanning instead
RESYNC_HOP = 8  # from this hop on, resyncing the parse at each read beats keeping it per step


@intrinsic
def _clz(typingctx, x):
    """Count leading zeros of an unsigned integer (its bit width when zero), as int64."""
    def codegen(context, builder, sig, args):
        r = builder.ctlz(args[0], ir.Constant(ir.IntType(1), 0))
        return builder.zext(r, ir.IntType(64)) if x.bitwidth < 64 else r
    return types.int64(x), codegen


# --------------------------------------------------------------------------- matching


@kernel
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


@kernel
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


@kernel
def _source(G, lo, p, length):
    """Rightmost ``j`` in ``[lo, p)`` with ``lcp(j, p) >= length >= 1``; -1 if none."""
    g = G[p]
    if length > _GRAM:
        for j in range(p - 1, lo - 1, -1):
            if G[j] == g and _reaches(G, j, p, length):
                return j
        return -1
    thr = np.uint32((np.uint64(1) << np.uint64(_GRAM - length)) - np.uint64(1))
    # Right to left in blocks: a vectorised any-hit test per block, then the hit's index.
    hi = p
    while hi > lo:
        start = max(lo, hi - _BLOCK)
        H = G[start:hi]
        hit = False
        for i in range(H.size):
            hit |= np.uint32(H[i] ^ g) <= thr
        if hit:
            for i in range(H.size - 1, -1, -1):
                if np.uint32(H[i] ^ g) <= thr:
                    return start + i
        hi = start
    return -1


@kernel
def _phrase(G, p, end, block_min):
    """(``M = max_{0 <= j < p} min(lcp(j, p), end - p)``, the rightmost ``j`` reaching it,
    or -1 when ``M = 0``) in one pass: the minima of ``G[j] ^ G[p]`` per block of
    ``_BLOCK`` grams, kept in ``block_min``, locate the rightmost source."""
    if p == 0:
        return 0, -1
    g = G[p]
    m = _U32
    n_blocks = (p + _BLOCK - 1) // _BLOCK
    for blk in range(n_blocks):
        H = G[blk * _BLOCK:min(p, (blk + 1) * _BLOCK)]
        mb = _U32
        for i in range(H.size):
            mb = min(mb, np.uint32(H[i] ^ g))
        block_min[blk] = mb
        m = min(m, mb)
    cap = end - p
    if m == 0 and cap > _GRAM:  # a match of 32+ bits: the general search
        length = _longest(G, 0, p, end)
        return length, _source(G, 0, p, length)
    length = min(_clz(m), cap)
    if length == 0:
        return 0, -1
    thr = np.uint32((np.uint64(1) << np.uint64(_GRAM - length)) - np.uint64(1))
    for blk in range(n_blocks - 1, -1, -1):
        if block_min[blk] <= thr:
            for j in range(min(p, (blk + 1) * _BLOCK) - 1, blk * _BLOCK - 1, -1):
                if np.uint32(G[j] ^ g) <= thr:
                    return length, j
    raise AssertionError("sliding LZ76: the longest match has no source")


# --------------------------------------------------------------------------- one-shot


@kernel
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


@kernel
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


@kernel
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


@kernel
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
    """Sliding LZ76 state for S streams x N neurons, window W.

    The exact mode keeps rings of R = W + 32 slots, slot ``i % R`` describing absolute
    position ``i`` (the bit pushed at step ``i``); the resync mode keeps rings of W slots
    (``ring``, ``prev``) and lists of P = ``max_phrases(W)``. The other mode's arrays have
    a last dimension of 0.
    """

    steps: np.ndarray  # int64 (S,): bits pushed per stream; window is [steps - W, steps)
    gram: np.ndarray   # uint32 (S, N, 2R): exact mode: gram of each position, slot and slot + R
    plen: np.ndarray   # int32 (S, N, R): length of the phrase starting there, else 0
    src: np.ndarray    # int64 (S, N, R): that phrase's copy source (absolute), -1 if none
    refs: np.ndarray   # int32 (S, N, R): number of phrases whose source is this position
    last: np.ndarray   # int64 (S, N): start of the still-copying last phrase; == end if none
    count: np.ndarray  # int64 (S, N): LZ76 phrase count of the window (ending at ``parsed``)
    ring: np.ndarray   # uint8 (S, N, W): resync mode: bits i .. i + 7 (first most significant,
                       # zeros past the end) of each position i of the window, slot i % W
    starts: np.ndarray  # int32 (S, N, P): resync mode: phrase starts, in order, from the
                        # start of the window ``count`` describes
    srcs: np.ndarray   # int32 (S, N, P): resync mode: their rightmost sources, -1 if none
    parsed: np.ndarray  # int64 (S,): resync mode: end of the window ``count`` describes
    heads: np.ndarray  # int64 (S, N, 256): resync mode: last position of each 8-bit key, -1
    prev: np.ndarray   # uint16 (S, N, W): resync mode: distance back to the previous position
                       # with the same key (first 8 bits), 0 if none; slot i % W


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


def max_phrases(n: int) -> int:
    """An upper bound on the LZ76 phrase count of ``n`` bits: phrases other than the last
    are distinct strings, so at most ``2**L`` of them have length ``L``."""
    count, rest, length = 0, n, 1
    while rest >= length:
        k = min(2 ** length, rest // length)
        count, rest, length = count + k, rest - k * length, length + 1
    return count + 2  # the leftover bits and a final copy


def sliding_state(n_streams: int, n_neurons: int, window: int = 1024, hop: int = 1) -> SlidingLZ:
    """Empty sliding state (every window empty, count 0) for counts read every ``hop`` steps:
    the exact incremental parse below ``RESYNC_HOP``, the resynchronised parse from there on."""
    if n_streams < 1 or n_neurons < 1 or window < 1 or hop < 1:
        raise ValueError("n_streams, n_neurons, window and hop must be >= 1")
    if window > 1 << 16:
        raise ValueError("window must be <= 65536")
    resync = hop >= RESYNC_HOP
    p = max_phrases(window) if resync else 0
    shape = (n_streams, n_neurons)
    exact = 0 if resync else window + _GRAM
    w = window if resync else 0
    return SlidingLZ(
        steps=np.zeros(n_streams, np.int64),
        gram=np.zeros(shape + (2 * exact,), np.uint32),
        plen=np.zeros(shape + (exact,), np.int32),
        src=np.full(shape + (exact,), -1, np.int64),
        refs=np.zeros(shape + (exact,), np.int32),
        last=np.zeros(shape, np.int64),
        count=np.zeros(shape, np.int64),
        ring=np.zeros(shape + (w,), np.uint8),
        starts=np.zeros(shape + (p,), np.int32),
        srcs=np.full(shape + (p,), -1, np.int32),
        parsed=np.zeros(n_streams, np.int64),
        heads=np.full(shape + (_KEYS if resync else 0,), -1, np.int64),
        prev=np.zeros(shape + (w,), np.uint16),
    )


@kernel
def _window(st):
    return st.ring.shape[2] if st.ring.shape[2] > 0 else st.gram.shape[2] // 2 - _GRAM


# The per-step helpers are inlined into ``push``: Numba otherwise pays reference counting
# on every array of a ``_Lane`` it passes, which costs more than the work itself.
_inline = inline_kernel


@_inline
def _lane(st, s, n, start):
    R = st.plen.shape[2]
    return _Lane(st.gram[s, n], st.plen[s, n], st.src[s, n], st.refs[s, n],
                 st.last[s, n:n + 1], st.count[s, n:n + 1], start - start % R, R)


@_inline
def _slot(ln, pos):
    k = pos - ln.base
    return k - ln.R if k >= ln.R else k


@kernel
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


@kernel
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
def _write_bit(G, R, k, b, bit):
    """Gram ring ``G`` (2R slots): position ``b`` (slot ``k``) takes ``bit`` (uint32 0/1)
    as its first bit, the 31 positions before it as their later bits."""
    G[k] = G[k + R] = bit << np.uint32(31)
    if bit:
        for d in range(1, min(_GRAM, b + 1)):
            k = k - 1 if k > 0 else R - 1
            v = np.uint32(1) << np.uint32(31 - d)
            G[k] |= v
            G[k + R] |= v


@_inline
def _append(ln, a, b, bit):
    """Window ``[a, b)`` -> ``[a, b + 1)`` with ``s[b] = bit`` (uint32 0 or 1)."""
    G = ln.G
    _write_bit(G, ln.R, _slot(ln, b), b, bit)
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


@kernel
def _check(st, stream, n_neurons):
    if not 0 <= stream < st.steps.size:
        raise IndexError("stream out of range")
    if n_neurons != st.count.shape[1]:
        raise ValueError("one value per neuron is required")


@kernel
def _chained(G, prev, R, a2, q, end):
    """``_phrase`` at position ``q`` (``G`` from ``a2``) from the positions with the same
    first ``_KEY`` bits, newest first; (0, -1) if there are none or more than ``_CHAIN``
    of them (then the caller scans), or if ``q + _KEY > end``."""
    cap = end - q
    if cap < _KEY:
        return 0, -1
    p = q - a2
    best, src = 0, -1
    y = q
    for _ in range(_CHAIN + 1):
        d = prev[y % R]
        if d <= 0 or y - d < a2:
            return (best, src) if best >= _KEY else (0, -1)
        y -= d
        j = y - a2
        n = 0
        while True:  # lcp(j, p), at most cap
            x = np.uint32(G[j + n] ^ G[p + n])
            if x:
                n += _clz(x)
                break
            n += _GRAM
            if n >= cap:
                break
        n = min(n, cap)
        if n > best:
            best, src = n, j
    return 0, -1


@kernel
def _resync(G, starts, srcs, n_old, open_old, a, a2, b, b2, new_starts, new_srcs, block_min,
            prev, R):
    """Parse window ``[a2, b2)`` (``G[i]`` is the gram of position ``a2 + i``) reusing the
    ``n_old`` phrases of the old window ``[a, b)`` (``starts``/``srcs`` from ``a``;
    ``open_old``: start of its still copying last phrase, or ``b``) where they stay valid;
    write the new ones from ``a2``; return (count, open start)."""
    k = 0
    q = a2
    i = 0
    last = b2
    P = new_starts.size
    while q < b2:
        while i < n_old and a + starts[i] < q:
            i += 1
        if (i < n_old and a + starts[i] == q and not (i == n_old - 1 and open_old != b)
                and (srcs[i] < 0 or a + srcs[i] >= a2)):
            # An old closed phrase whose rightmost source is still in the window: the same
            # longest match, so the same phrase.
            if k == P:
                raise AssertionError("sliding LZ76: more phrases than max_phrases")
            new_starts[k] = q - a2
            new_srcs[k] = a + srcs[i] - a2 if srcs[i] >= 0 else -1
            k += 1
            q = a + starts[i + 1] if i + 1 < n_old else b
            i += 1
            continue
        if k == P:
            raise AssertionError("sliding LZ76: more phrases than max_phrases")
        m, j = _chained(G, prev, R, a2, q, b2)
        if m == 0:
            m, j = _phrase(G, q - a2, b2 - a2, block_min)
        new_starts[k] = q - a2
        new_srcs[k] = j
        k += 1
        if m == b2 - q:
            last = q
        q += min(m + 1, b2 - q)
    return k, last


@kernel
def _bring_up_to_date(st, stream):
    """Resync mode: make ``count``/``last``/``starts``/``srcs`` describe the current window."""
    b = st.parsed[stream]
    b2 = st.steps[stream]
    if b == b2:
        return
    W = _window(st)
    a = max(0, b - W)
    a2 = max(0, b2 - W)
    n_bits = b2 - a2
    P = st.starts.shape[2]
    new_starts = np.empty(P, np.int32)
    new_srcs = np.empty(P, np.int32)
    block_min = np.empty(W // _BLOCK + 1, np.uint32)
    G = np.empty(n_bits, np.uint32)
    L = np.zeros(n_bits + _GRAM, np.uint8)  # the window's bytes, then zeros
    for n in range(st.count.shape[1]):
        ring = st.ring[stream, n]
        split = min(n_bits, W - a2 % W)  # window bits [0, split) sit at ring[a2 % W:]
        L[:split] = ring[a2 % W:a2 % W + split]
        L[split:n_bits] = ring[:n_bits - split]
        L0, L1, L2, L3 = L[:n_bits], L[8:8 + n_bits], L[16:16 + n_bits], L[24:24 + n_bits]
        for i in range(n_bits):  # grams of the window from the bytes, zeros past its end
            G[i] = ((np.uint32(L0[i]) << np.uint32(24)) | (np.uint32(L1[i]) << np.uint32(16))
                    | (np.uint32(L2[i]) << np.uint32(8)) | np.uint32(L3[i]))
        heads, prev = st.heads[stream, n], st.prev[stream, n]
        for x in range(max(a2, b - _KEY + 1), b2 - _KEY + 1):  # chain the complete keys
            key = L[x - a2]
            y = heads[key]
            prev[x % W] = x - y if a2 <= y < x else 0
            heads[key] = x
        n_old = min(max(st.count[stream, n], 0), P)  # bounded even for a hostile checkpoint
        k, last = _resync(G, st.starts[stream, n], st.srcs[stream, n], n_old, st.last[stream, n],
                          a, a2, b, b2, new_starts, new_srcs, block_min, prev, W)
        st.starts[stream, n, :k] = new_starts[:k]
        st.srcs[stream, n, :k] = new_srcs[:k]
        st.count[stream, n] = k
        st.last[stream, n] = last
    st.parsed[stream] = b2


@_inline
def _resync_mode(st):
    return st.ring.shape[2] > 0


@kernel
def push(st, stream, bits):
    """Append one step (``bits[n]`` for each neuron, nonzero = 1) to ``stream``."""
    _check(st, stream, bits.size)
    b = st.steps[stream]
    if _resync_mode(st):  # the byte of each position; counts builds the grams
        W = st.ring.shape[2]
        k = b % W
        for n in range(bits.size):
            ring = st.ring[stream, n]
            ring[k] = _HIGH if bits[n] != 0 else np.uint8(0)
            if bits[n] != 0:
                j = k
                for d in range(1, min(8, W, b + 1)):
                    j = j - 1 if j > 0 else W - 1
                    ring[j] |= np.uint8(0x80 >> d)
        st.steps[stream] = b + 1
        return
    W = _window(st)
    for n in range(st.plen.shape[1]):
        _step(st, stream, n, b, W, np.uint32(bits[n] != 0))
    st.steps[stream] = b + 1


@kernel
def push_zeros(st, stream, k):
    """Append ``k`` all-zero steps to ``stream``; O(min(k, W)) per neuron."""
    if k < 0:
        raise ValueError("push_zeros: k must be >= 0")
    _check(st, stream, st.count.shape[1])
    b = st.steps[stream]
    W = _window(st)
    N = st.count.shape[1]
    if k < W:
        if _resync_mode(st):
            for i in range(k):
                st.ring[stream, :, (b + i) % W] = 0
            st.steps[stream] = b + k
            return
        zeros = np.zeros(N, np.uint8)
        for _ in range(k):
            push(st, stream, zeros)
        return
    # The window becomes all zeros: phrase 0 is one bit, phrase 1 copies it to the end.
    b += k
    a = b - W
    if _resync_mode(st):
        st.ring[stream] = 0
        st.heads[stream] = -1
        st.prev[stream] = 0
        for x in range(a + 1, b - _KEY + 1):  # every key is 0: one chain through the window
            st.prev[stream, :, x % W] = 1
        if b - _KEY >= a:
            st.heads[stream, :, 0] = b - _KEY
        for n in range(N):
            st.starts[stream, n, 0] = 0
            st.srcs[stream, n, 0] = -1
            st.starts[stream, n, 1] = 1
            st.srcs[stream, n, 1] = 0
            st.last[stream, n] = a + 1
            st.count[stream, n] = min(W, 2)
        st.steps[stream] = st.parsed[stream] = b
        return
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


@kernel
def counts(st, stream, out):
    """Write the LZ76 count of each neuron's current window of ``stream`` into ``out``."""
    _check(st, stream, out.size)
    if _resync_mode(st):
        _bring_up_to_date(st, stream)
    for n in range(st.count.shape[1]):
        out[n] = st.count[stream, n]


@kernel
def ones(st, stream, out):
    """Write the number of ones (spikes) in each neuron's current window into ``out``."""
    _check(st, stream, out.size)
    for n in range(st.count.shape[1]):
        if _resync_mode(st):  # slots outside a young window are still zero
            ring = st.ring[stream, n]
            c = 0
            for i in range(ring.size):
                c += ring[i] >> np.uint8(7)
            out[n] = c
        else:
            out[n] = window_bits(st, stream, n).sum()


@kernel
def window_len(st, stream):
    """Bits in the current window of ``stream``: ``min(steps, W)`` (for ``normalise``)."""
    return min(st.steps[stream], _window(st))


@kernel
def window_bits(st, stream, neuron):
    """Copy of the current window of one (stream, neuron), oldest bit first."""
    b = st.steps[stream]
    out = np.empty(window_len(st, stream), np.uint8)
    a = b - out.size
    if _resync_mode(st):
        ring = st.ring[stream, neuron]
        for i in range(out.size):
            out[i] = ring[(a + i) % ring.size] >> np.uint8(7)
        return out
    R = st.gram.shape[2] // 2
    for i in range(out.size):
        out[i] = st.gram[stream, neuron, (a + i) % R] >> np.uint32(31)
    return out


@kernel
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
    st.starts[stream] = 0
    st.srcs[stream] = -1
    st.parsed[stream] = 0
    st.heads[stream] = -1
    st.prev[stream] = 0
