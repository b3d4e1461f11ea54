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
    ``a = max(0, b - W)``, so ``counts`` always equals ``lz76`` of the window recomputed
    from scratch (until ``W`` steps are pushed the window is the whole history;
    ``window_len`` gives its length for ``normalise``). ``push`` writes the bit into a
    ring of 64-bit words. The state keeps the phrase starts and rightmost sources (largest
    ``j`` with ``lcp(j, p) >= M(p)``; ``p`` itself if ``M(p) = 0``) of the window last read
    (``parsed``). ``counts`` re-cuts the window ``[a', b')`` left to right from ``a'``,
    taking over an old phrase whenever the cut meets its start ``q`` (``q >= a'``) and it
    is not the still-copying last one and its rightmost source ``j`` is ``>= a'``: the
    history ``[a', q)`` is a subset of the old one, so ``M'(q) <= M(q)``, and ``j`` still
    reaches ``M(q)``; the mismatch ending the phrase lies inside both windows, so
    ``M'(q) = M(q)``, the same phrase, with the same rightmost source. Runs of such phrases
    are copied in bulk; every other phrase (the head of the window, phrases whose every
    longest match started in the dropped bits and those after them until the cut meets an
    old start again, the new tail) is searched afresh, exactly, on the window's grams in
    order (made from the words at each read, zeros past ``b'``) as below, the minima kept
    per chunk of 64 sources: the rightmost source lies in the last chunk whose minimum
    allows ``M`` bits. The still-copying last phrase is not searched when its old source
    still copies it to the new end (checked on the grams): no match can be longer than the
    rest of the window, so it is still the last phrase, still copying (that source, kept
    for the next read's check, need not be the rightmost: a still-copying phrase is never
    taken over). ``push_zeros(k >= W)`` writes the all-zero parse directly. Any hop works;
    a read costs a part that does not grow with the bits pushed since the last one (the
    head, the still-copying last phrase, making the window's grams) plus the fresh searches
    of those bits. State per (stream, neuron) at W = 1024: 136 B of bits and 0.7 KiB of
    phrase list (no grams: at hundreds of streams making them from 17 words costs less
    than copying a ring of them, 2 KiB, from beyond the cache).

One-shot (``lz76_jit``, under ``lz76`` and ``lzc``)
    The ``n`` bits are read once into the words of a fresh one-stream, one-neuron state
    with ``W = n`` (all pushed, none parsed), so the sliding parse searches every phrase
    afresh. Positions are uint16, so windows and LZ76 inputs hold at most ``MAX_WINDOW =
    65536`` bits; a longer input is refused with a ValueError (from ``lz76_jit`` too). LZ78
    has no such limit.

API
    ``lz76(bits) -> int``, ``lz78(bits) -> int``, ``lzc(bits, variant) -> float``: Python
    entry points; ``bits`` is a 1-D integer/bool array of 0/1, anything else ValueError
    (so is LZ76 of more than ``MAX_WINDOW`` bits). ``lz76_jit(bits) -> int`` (-1 if a
    value is not 0/1) and ``normalise(count, n) -> float``: the njit kernels.
    ``sliding_state(n_streams, n_neurons, window, hop=1) -> SlidingLZ`` (``max_phrases(n)``
    bounds the phrases of ``n`` bits and sizes the phrase lists), then the njit
    functions ``push(st, stream, bits)``, ``push_many(st, stream, bits, k)`` (``k`` steps
    at once, as bits of a uint64 per neuron), ``push_zeros(st, stream, k)``,
    ``counts(st, stream, out)`` (or ``read(st, stream, out, work)`` in a ``workspace(st)``
    reused across reads), ``ones(st, stream, out)`` (spikes per window),
    ``window_len(st, stream)``, ``window_bits(st, stream, neuron)``, ``reset(st, stream)``.
    From njit code pass ``stream`` as a variable (a literal compiles a second copy). The
    state is plain arrays: ``np.savez(f, **st._asdict())``, ``SlidingLZ(**np.load(f))``.

Matching is done on 16-bit grams ``G[i] = s[i:i+16]`` (first bit most significant, zeros
past the known end), so ``lcp(j, p) = clz(G[j] ^ G[p])`` up to 16 and the longest match
over all ``j`` is one vectorised min-reduction of ``G[j] ^ G[p]``; where some ``j`` match
all 16 bits, the next gram of those ``j`` only is compared, and so on. The search is
written once, in the sliding parse (``_reparse``), which the one-shot count reuses.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import numpy as np

from edged.bits import clz, lanes_le, popcount
from edged.jit import inline_kernel, kernel

__all__ = [
    "lz76", "lz76_jit", "lz78", "lzc", "normalise", "MAX_WINDOW",
    "SlidingLZ", "sliding_state", "push", "push_many", "MAX_PUSH", "push_zeros", "counts", "read",
    "workspace", "ones", "reset", "max_phrases",
    "window_len", "window_bits",
]

Variant = Literal["lz76", "lz78"]

_U64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_Z64 = np.uint64(0)
_GRAM = 16  # bits per gram
_U16 = np.uint16(0xFFFF)
_Z16 = np.uint16(0)
MAX_WINDOW = 1 << 16  # bits per window (phrase starts are uint16)
MAX_PUSH = 48  # steps per push_many (the low bits of a uint64; the ring has >= 64 slots)


# --------------------------------------------------------------------------- one-shot


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
    """Sliding LZ76 state for S streams x N neurons, window W: a bit ring of R slots (the
    power of two >= max(W, 64)), slot ``i % R`` holding the bit pushed at step ``i``, and
    the phrase list (P = ``max_phrases(W)`` entries) of the window last read."""

    steps: np.ndarray   # int64 (S,): bits pushed per stream; window is [steps - W, steps)
    window: np.ndarray  # int64 (S,): W
    words: np.ndarray   # uint64 (S, N, R/64 + 1): slot x is bit 63 - x % 64 of word x // 64;
                        # word R/64 repeats word 0 (64 bits from any slot are two words)
    parsed: np.ndarray  # int64 (S,): end of the window the phrase lists describe
    count: np.ndarray   # int64 (S, N): its LZ76 phrase count
    last: np.ndarray    # int64 (S, N): start of its still-copying last phrase; its end if none
    starts: np.ndarray  # uint16 (S, N, P): its phrase starts, in order, from its start
    srcs: np.ndarray    # uint16 (S, N, P): their rightmost sources (same origin); a phrase
                        # without a match (M = 0) is its own


@kernel
def max_phrases(n):
    """An upper bound on the LZ76 phrase count of ``n`` bits: phrases other than the last
    are distinct strings, so at most ``2**L`` of them have length ``L``."""
    count, rest, length = 0, n, 1
    while rest >= length:
        k = min(2 ** length, rest // length)
        count, rest, length = count + k, rest - k * length, length + 1
    return count + 2  # the leftover bits and a final copy


@inline_kernel
def _empty(n_streams, n_neurons, window):
    """The arrays of an empty ``SlidingLZ``, in field order (window <= MAX_WINDOW)."""
    ring = 64
    while ring < window:
        ring *= 2
    p = max_phrases(window)
    return (np.zeros(n_streams, np.int64),
            np.full(n_streams, window, np.int64),
            np.zeros((n_streams, n_neurons, ring // 64 + 1), np.uint64),
            np.zeros(n_streams, np.int64),
            np.zeros((n_streams, n_neurons), np.int64),
            np.zeros((n_streams, n_neurons), np.int64),
            np.zeros((n_streams, n_neurons, p), np.uint16),
            np.zeros((n_streams, n_neurons, p), np.uint16))


def sliding_state(n_streams: int, n_neurons: int, window: int = 1024, hop: int = 1) -> SlidingLZ:
    """Empty sliding state (every window empty, count 0) for counts read every ``hop`` steps
    (any hop: the work of a read grows with the bits pushed since the last one)."""
    if n_streams < 1 or n_neurons < 1 or window < 1 or hop < 1:
        raise ValueError("n_streams, n_neurons, window and hop must be >= 1")
    if window > MAX_WINDOW:
        raise ValueError(f"window must be <= {MAX_WINDOW}")
    return SlidingLZ(*_empty(n_streams, n_neurons, window))


# The public kernels hand on single arrays, never ``st``: a call with the whole state in a
# function makes Numba count references to each of its arrays there, more than a push costs.
_inline = inline_kernel


@_inline
def _ring(words):
    """R, the slots of the bit rings ``words`` (each one's last word repeats its first)."""
    return 64 * (words.shape[-1] - 1)


@_inline
def _window(st, stream):
    W = st.window[stream]
    if not 1 <= W <= _ring(st.words):  # a checkpoint's value bounds the ring
        raise ValueError("sliding LZ76: window does not fit the bit ring")
    return W


@_inline
def _check(st, stream, n_neurons):
    if not 0 <= stream < st.steps.size:
        raise IndexError("stream out of range")
    if n_neurons != st.count.shape[1]:
        raise ValueError("one value per neuron is required")


@_inline
def _bit(B, x):
    """Bit at slot ``x`` of bit ring ``B``, as uint64 0/1."""
    return (B[x >> 6] >> np.uint64(63 - (x & 63))) & np.uint64(1)


@_inline
def _bits_at(w0, w1, o):
    """64 bits from bit ``o`` (uint64) of word ``w0``, continued by ``w1``."""
    return (w0 << o) | ((w1 >> np.uint64(1)) >> (np.uint64(63) - o))


@kernel
def _reparse(words3, starts3, srcs3, count2, last2, parsed, steps, window, stream, work):
    """Make ``stream``'s rows of ``count``/``last``/``starts``/``srcs`` describe its window
    ``[a2, b2)``, ``b2 = steps``, ``a2 = max(0, b2 - W)``, instead of ``[a, b)``, ``b =
    parsed``: the old phrases are taken over where they stay valid, the others cut afresh by
    a longest-match search.

    One kernel without array-passing helpers or slices in its loops: either costs reference
    counts (a call each), as much as a search. Positions are relative to ``a2`` here:
    ``L[x]`` is the gram of ``a2 + x``, made from ``V``, the window's bits as words from
    its first (zeros past ``b2``). Loops index it unsigned (no index fix-up, so LLVM
    vectorises them), 64 sources ``j`` at a time (``cm``: their minima), the last chunk
    ending at ``p`` (or masked to ``j < p``). Past the first level, ``bad[j] != 0`` marks
    the ``j`` that missed a bit so far. ``work``: a ``workspace`` of the state."""
    words, starts, srcs = words3[stream], starts3[stream], srcs3[stream]
    count, last = count2[stream], last2[stream]
    b, b2, W = parsed[stream], steps[stream], window[stream]
    R = _ring(words)
    if not 1 <= W <= R:  # a checkpoint's value bounds the ring
        raise ValueError("sliding LZ76: window does not fit the bit ring")
    mask = R - 1
    a = max(0, b - W)
    a2 = max(0, b2 - W)
    size = max(b2 - a2, 0)
    P = starts.shape[1]
    if work.size != _work_size(R, P):
        raise ValueError("sliding LZ76: work space of another state")
    nv = 4 * (R // 64 + 1)  # V: R / 64 + 1 uint64, first in ``work`` (8-byte aligned)
    V = work[:nv].view(np.uint64)
    new_starts, new_srcs = work[nv:nv + P], work[nv + P:nv + 2 * P]
    off = nv + 2 * P
    L = work[off:off + R + 64]  # (a source scan reads 64 from any j < size)
    bad = work[off + R + 64:off + 2 * R + 128]
    cm = work[off + 2 * R + 128:]  # R // 64 + 64 (a compare reads 64 from any chunk)
    thr = a2 - a  # an old source (from a) is still in the window if >= thr
    sub = np.uint16(thr & 0xFFFF)  # (what a run taken over has >= thr: no wrap)
    n_words = (size + 63) >> 6
    w0, o0 = (a2 & mask) >> 6, np.uint64(a2 & 63)  # the window's first bit
    for n in range(count.shape[0]):
        for k in range(n_words):
            w = (w0 + k) & (R // 64 - 1)
            V[k] = _bits_at(words[n, w], words[n, w + 1], o0)
        if size & 63:
            V[n_words - 1] &= ~(_U64 >> np.uint64(size & 63))
        V[n_words] = _Z64
        for k in range(np.uint64(n_words)):
            v0, v1 = V[k], V[k + np.uint64(1)]
            for t in range(np.uint64(64)):
                L[np.uint64(64) * k + t] = np.uint16(_bits_at(v0, v1, t) >> np.uint64(64 - _GRAM))
        n_old = min(max(count[n], 0), P)  # bounded even for a hostile checkpoint
        closed = n_old - 1 if last[n] != b else n_old  # the still-copying one is not taken over
        # its start and source: if that source still copies it to the new end (cap / 16
        # gram compares), M = cap without a search (the module docstring)
        open_q = last[n] if closed < n_old else -1
        open_j = a + np.int64(srcs[n, n_old - 1]) if closed < n_old else -1
        k = 0
        q = a2
        i = 0
        open_start = b2
        while q < b2:
            while i < n_old and a + starts[n, i] < q:
                i += 1
            if i < closed and a + starts[n, i] == q and srcs[n, i] >= thr:
                # A run of old closed phrases whose rightmost sources are still in the window:
                # the same longest matches, so the same phrases.
                j = i + 1
                while j < closed and srcs[n, j] >= thr:
                    j += 1
                if k + j - i > P:
                    raise AssertionError("sliding LZ76: more phrases than max_phrases")
                ui, uk = np.uint64(i), np.uint64(k)
                for t in range(np.uint64(j - i)):
                    new_starts[uk + t] = np.uint16(starts[n, ui + t] - sub)
                    new_srcs[uk + t] = np.uint16(srcs[n, ui + t] - sub)
                k += j - i
                nxt = a + starts[n, j] if j < n_old else b
                i = j
                if nxt > q:  # (a hostile checkpoint's list could go backwards)
                    q = nxt
                continue
            if k == P:
                raise AssertionError("sliding LZ76: more phrases than max_phrases")
            # ---- longest match M of the phrase at p over [0, p), its rightmost source
            p = q - a2
            cap = b2 - q
            M, src = 0, p
            searched = False
            if q == open_q and a2 <= open_j < q:
                j = open_j - a2
                copies = True
                for o in range(0, cap, _GRAM):
                    x = np.uint16(L[np.uint64(j + o)] ^ L[np.uint64(p + o)])
                    if cap - o < _GRAM:
                        x &= np.uint16(~(0xFFFF >> (cap - o)) & 0xFFFF)
                    if x:
                        copies = False
                        break
                if copies:
                    M, src, searched = cap, j, True
            if p > 0 and not searched:
                up, p16 = np.uint64(p), np.uint16(p)
                nch = (p + 63) >> 6  # chunks of 64 sources j, from 64 c, the last ending at p
                g = L[up]
                m = _U16
                if p >= 64:
                    for c in range(nch):
                        c0 = np.uint64(min(64 * c, p - 64))
                        v = _U16
                        for t in range(np.uint64(64)):
                            v = min(v, np.uint16(L[c0 + t] ^ g))
                        cm[c] = v
                    for c in range(nch):  # (in the loop above, LLVM makes this min a branch
                        m = min(m, cm[c])  # that fresh data mispredict)
                else:  # one chunk, its j >= p masked off
                    for t in range(np.uint64(64)):
                        m = min(m, np.uint16((L[t] ^ g) | (_U16 if np.uint16(t) >= p16 else _Z16)))
                    cm[0] = m
                s = 0  # bits every j left matches
                keep = _Z16  # bad[j] is kept from the second level on
                while m == 0 and cap > s + _GRAM:  # some j match s + 16 bits: next grams
                    u0, h0 = np.uint64(s), L[up + np.uint64(s)]
                    s += _GRAM
                    us, h = np.uint64(s), L[up + np.uint64(s)]
                    m = _U16
                    if p >= 64:
                        for c in range(nch):
                            c0 = np.uint64(min(64 * c, p - 64))
                            v = _U16
                            for t in range(np.uint64(64)):
                                e = np.uint16((bad[c0 + t] & keep) | (L[u0 + c0 + t] ^ h0))
                                bad[c0 + t] = e
                                v = min(v, np.uint16((L[us + c0 + t] ^ h) | (_U16 if e else _Z16)))
                            cm[c] = v
                            m = min(m, v)
                    else:
                        for t in range(np.uint64(64)):
                            e = np.uint16((bad[t] & keep) | (L[u0 + t] ^ h0)
                                          | (_U16 if np.uint16(t) >= p16 else _Z16))
                            bad[t] = e
                            m = min(m, np.uint16((L[us + t] ^ h) | (_U16 if e else _Z16)))
                        cm[0] = m
                    keep = _U16
                # (m = 0xFFFF from a j missing bit s + 1 or from one missed before: M = s)
                M = min(s + clz(m), cap)
                if M:  # the rightmost j matching M bits: in the last chunk whose min allows
                    us, h = np.uint64(s), L[up + np.uint64(s)]  # it (at M = s: any j left)
                    lim = np.uint16(0xFFFF >> (M - s))  # (int64: a shift by 16 is 0)
                    c_lo, c_hi = 0, nch  # the chunks to look in, last first
                    if M > s:  # only that chunk, found comparing 64 minima at a time
                        c_hi = 0
                        hi = nch
                        while hi > 0:
                            lo = max(hi - 64, 0)
                            cand = lanes_le(cm, np.uint64(lo), _Z16, lim) & (
                                _U64 >> np.uint64(64 - (hi - lo)))
                            if cand:
                                c_hi = lo + 64 - clz(cand)
                                c_lo = c_hi - 1
                                break
                            hi = lo
                    for c in range(c_hi - 1, c_lo - 1, -1):
                        c0 = np.uint64(min(64 * c, max(p - 64, 0)))
                        hits = lanes_le(L, us + c0, h, lim) & (_U64 >> np.uint64(64 - min(p, 64)))
                        if s:
                            hits &= lanes_le(bad, c0, _Z16, _Z16)  # (bad = 0: j left)
                        if hits:
                            src = np.int64(c0) + 63 - clz(hits)
                            break
                    if src == p:
                        raise AssertionError("sliding LZ76: the longest match has no source")
            # ---- cut
            new_starts[k] = p
            new_srcs[k] = src
            k += 1
            if M == cap:
                open_start = q
            q += min(M + 1, cap)
        for t in range(np.uint64(k)):
            starts[n, t] = new_starts[t]
            srcs[n, t] = new_srcs[t]
        count[n] = k
        last[n] = open_start
    parsed[stream] = b2


@_inline
def _put(words, stream, b, bits, k, nonzero):
    """Positions ``b .. b + k - 1`` (``1 <= k <= MAX_PUSH``) of ``stream`` take the ``k`` low bits
    of ``bits[n]``, the oldest most significant (``nonzero``: ``k = 1`` and any nonzero value
    is a 1)."""
    R = _ring(words)
    h = R // 64
    x = b & (R - 1)
    w = x >> 6
    w2 = w + 1 if w + 1 < h else 0  # (word h repeats word 0)
    o = np.uint64(x & 63)
    uk = np.uint64(k)
    field = (_U64 << (np.uint64(64) - uk)) >> o
    spill = o + uk > np.uint64(64)
    rest = _U64 >> ((o + uk - np.uint64(64)) if spill else _Z64)  # w2's bits kept
    for n in range(bits.size):
        v = (np.uint64(bits[n] != 0) if nonzero else np.uint64(bits[n])) << (np.uint64(64) - uk)
        words[stream, n, w] = (words[stream, n, w] & ~field) | (v >> o)
        if spill:
            words[stream, n, w2] = (words[stream, n, w2] & rest) | (v << (np.uint64(64) - o))
        words[stream, n, h] = words[stream, n, 0]


@kernel
def push(st, stream, bits):
    """Append one step (``bits[n]`` for each neuron, nonzero = 1) to ``stream``."""
    _check(st, stream, bits.size)
    # No more raising paths here: with a third, Numba counts references to every array of
    # ``st`` on each call.
    b = st.steps[stream]
    _put(st.words, stream, b, bits, 1, True)
    st.steps[stream] = b + 1


@kernel
def push_many(st, stream, bits, k):
    """Append ``k`` steps (``1 <= k <= MAX_PUSH``) to ``stream``: neuron ``n``'s bits are the
    ``k`` low bits of ``bits[n]`` (uint64), the oldest most significant. The same state as
    ``k`` calls of ``push``."""
    if not 1 <= k <= MAX_PUSH:
        raise ValueError("push_many: k must be in [1, MAX_PUSH = 48]")
    _check(st, stream, bits.size)
    b = st.steps[stream]
    _put(st.words, stream, b, bits, k, False)
    st.steps[stream] = b + k


@kernel
def push_zeros(st, stream, k):
    """Append ``k`` all-zero steps to ``stream``; O(min(k, W)) per neuron."""
    if k < 0:
        raise ValueError("push_zeros: k must be >= 0")
    _check(st, stream, st.count.shape[1])
    b = st.steps[stream]
    W = _window(st, stream)
    N = st.count.shape[1]
    if k < W:
        zeros = np.zeros(N, np.uint64)
        for i in range(0, k, MAX_PUSH):
            _put(st.words, stream, b + i, zeros, min(MAX_PUSH, k - i), False)
        st.steps[stream] = b + k
        return
    # The window becomes all zeros: phrase 0 is one bit, its own source; phrase 1 copies it
    # to the end.
    b += k
    st.words[stream] = 0
    for n in range(N):
        st.starts[stream, n, 0] = 0
        st.srcs[stream, n, 0] = 0
        st.starts[stream, n, 1] = 1
        st.srcs[stream, n, 1] = 0
        st.last[stream, n] = b - W + 1
        st.count[stream, n] = min(W, 2)
    st.steps[stream] = st.parsed[stream] = b


@_inline
def _work_size(R, P):
    return 4 * (R // 64 + 1) + 2 * P + 2 * (R + 64) + R // 64 + 64


@_inline
def _work(words, starts):
    return np.empty(_work_size(_ring(words), starts.shape[2]), np.uint16)


@_inline
def workspace(st):
    """Work space for the reads of ``st`` (``read``), to reuse across reads."""
    return _work(st.words, st.starts)


@kernel
def read(st, stream, out, work):
    """Write the LZ76 count of each neuron's current window of ``stream`` into ``out``,
    re-cutting in ``work`` (``workspace(st)``)."""
    _check(st, stream, out.size)
    if st.parsed[stream] != st.steps[stream]:
        _reparse(st.words, st.starts, st.srcs, st.count, st.last, st.parsed, st.steps,
                 st.window, stream, work)
    for n in range(out.size):
        out[n] = st.count[stream, n]


@kernel
def counts(st, stream, out):
    """``read`` in a work space of its own."""
    read(st, stream, out, workspace(st))


@kernel
def ones(st, stream, out):
    """Write the number of ones (spikes) in each neuron's current window into ``out``."""
    _check(st, stream, out.size)
    R = _ring(st.words)
    size = min(st.steps[stream], st.window[stream], R)  # (no raising: see push)
    x = (st.steps[stream] - size) & (R - 1)
    for n in range(out.size):
        c = 0
        for i in range(0, size, 64):  # 64 slots at a time from the window's first
            z = (x + i) & (R - 1)
            w = _bits_at(st.words[stream, n, z >> 6], st.words[stream, n, (z >> 6) + 1],
                         np.uint64(z & 63))
            c += popcount(w >> np.uint64(64 - min(64, size - i)))
        out[n] = c


@_inline
def window_len(st, stream):
    """Bits in the current window of ``stream``: ``min(steps, W)`` (for ``normalise``)."""
    return min(st.steps[stream], _window(st, stream))


@kernel
def window_bits(st, stream, neuron):
    """Copy of the current window of one (stream, neuron), oldest bit first."""
    out = np.empty(window_len(st, stream), np.uint8)
    a = st.steps[stream] - out.size
    R = _ring(st.words)
    for i in range(out.size):
        out[i] = _bit(st.words[stream, neuron], (a + i) & (R - 1))
    return out


@kernel
def reset(st, stream):
    """Empty every window of ``stream`` (e.g. when a new source takes the slot)."""
    st.steps[stream] = 0
    st.words[stream] = 0
    st.parsed[stream] = 0
    st.count[stream] = 0
    st.last[stream] = 0
    st.starts[stream] = 0
    st.srcs[stream] = 0


# --------------------------------------------------------------------------- one-shot LZ76


@kernel
def lz76_jit(bits):
    """LZ76 phrase count of a 1-D uint8/bool array of 0/1; -1 if a value is not 0/1,
    ValueError past ``MAX_WINDOW`` bits. The bits fill a one-neuron sliding state (window =
    their length, nothing parsed yet) that ``_reparse`` cuts afresh."""
    n = bits.size
    if n > MAX_WINDOW:
        raise ValueError("lz76: more than MAX_WINDOW = 65536 bits")
    if n == 0:
        return 0
    steps, window, words, parsed, count, last, starts, srcs = _empty(1, 1, n)
    w = words[0, 0]
    seen = _Z64  # every value or-ed: > 1 if one is not 0/1
    for k in range((n + 63) >> 6):
        x = bits[64 * k:64 * k + 64]
        v = _Z64
        for t in range(np.uint64(x.size)):
            b = np.uint64(x[t])
            seen |= b
            v |= b << (np.uint64(63) - t)
        w[k] = v
    if seen > 1:
        return -1
    w[w.size - 1] = w[0]
    steps[0] = n
    _reparse(words, starts, srcs, count, last, parsed, steps, window, 0, _work(words, starts))
    return count[0, 0]
