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
    ring of 64-bit words and links the position whose first 8 bits (its key) it
    completes to the previous one with the same key (``heads``/``prev``). The state keeps
    the phrase starts and rightmost sources (``lcp(j, p) = M(p)``, largest ``j``) of the
    window last read (``parsed``). ``counts`` re-cuts the window ``[a', b')`` left to
    right from ``a'``, taking over an old phrase whenever the cut meets its start ``q``
    (``q >= a'``) and it is not the still-copying last one and its rightmost source ``j``
    is ``-1`` or ``>= a'``: the history ``[a', q)`` is a subset of the old one, so
    ``M'(q) <= M(q)``, and ``j`` still reaches ``M(q)``; the mismatch ending the phrase
    lies inside both windows, so ``M'(q) = M(q)``, the same phrase, with the same
    rightmost source. Runs of such phrases are copied in bulk; every other phrase (the
    head of the window, phrases whose every longest match started in the dropped bits and
    those after them until the cut meets an old start again, the new tail) is searched
    afresh, exactly: on the chain of its key when that ends within ``_CHAIN`` links and
    reaches ``M >= 8`` (every source of an ``M``-bit match is on it), otherwise
    bit-parallel: the set of candidate sources, one bit per position of the window, is
    narrowed ``_STEP`` bits at a time with shifted words of the ring until at most
    ``_FEW`` are left, which are then extended 64 bits at a time. ``push_zeros(k >= W)``
    writes the all-zero parse directly. Any hop works; a read costs about the fresh
    searches of the bits pushed since the last one. State per (stream, neuron) at
    W = 1024: 264 B of bits, 4 KiB of key chains, 1.4 KiB of phrase list (~5.7 KiB).

API
    ``lz76(bits) -> int``, ``lz78(bits) -> int``, ``lzc(bits, variant) -> float``: Python
    entry points; ``bits`` is a 1-D integer/bool array of 0/1, anything else ValueError.
    ``lz76_jit(bits) -> int`` and ``normalise(count, n) -> float``: the njit kernels.
    ``sliding_state(n_streams, n_neurons, window, hop=1) -> SlidingLZ`` (``max_phrases(n)``
    bounds the phrases of ``n`` bits and sizes the phrase lists), then the njit
    functions ``push(st, stream, bits)``, ``push_zeros(st, stream, k)``,
    ``counts(st, stream, out)``, ``ones(st, stream, out)`` (spikes per window),
    ``window_len(st, stream)``, ``window_bits(st, stream, neuron)``, ``reset(st, stream)``.
    From njit code pass ``stream`` as a variable (a literal compiles a second copy). The
    state is plain arrays: ``np.savez(f, **st._asdict())``, ``SlidingLZ(**np.load(f))``.

One-shot matching is done on 32-bit grams ``G[i] = s[i:i+32]`` (first bit most
significant, zeros past the known end), so ``lcp(j, p) = clz(G[j] ^ G[p])`` up to 32 and
the longest match over all ``j`` is one vectorised min-reduction of ``G[j] ^ G[p]``.
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
    "SlidingLZ", "sliding_state", "push", "push_zeros", "counts", "ones", "reset", "max_phrases",
    "window_len", "window_bits",
]

Variant = Literal["lz76", "lz78"]

_U32 = np.uint32(0xFFFFFFFF)
_Z32 = np.uint32(0)
_U64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_Z64 = np.uint64(0)
_GRAM = 32  # bits per gram
_KEY = 8  # sliding: positions are chained by their first _KEY bits; a longest-match search
_KEYS = 1 << _KEY  # walks at most _CHAIN of them, then (or if M < _KEY) matches bit-parallel:
_CHAIN = 16
_FEW = 16  # this few candidates are extended one by one, more _STEP bits at a time
_STEP = 4


@intrinsic
def _clz(typingctx, x):
    """Count leading zeros of an unsigned integer (its bit width when zero), as int64."""
    def codegen(context, builder, sig, args):
        r = builder.ctlz(args[0], ir.Constant(ir.IntType(1), 0))
        return builder.zext(r, ir.IntType(64)) if x.bitwidth < 64 else r
    return types.int64(x), codegen


@intrinsic
def _ctz(typingctx, x):
    """Count trailing zeros of a nonzero uint64, as int64."""
    def codegen(context, builder, sig, args):
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 1))
    return types.int64(types.uint64), codegen


@intrinsic
def _popcount(typingctx, x):
    """Number of set bits of a uint64, as int64."""
    def codegen(context, builder, sig, args):
        return builder.ctpop(args[0])
    return types.int64(types.uint64), codegen


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
    """Sliding LZ76 state for S streams x N neurons, window W: rings of R slots (the power
    of two >= max(W, 64)), slot ``i % R`` describing the position ``i`` (the bit pushed at
    step ``i``), and the phrase list (P = ``max_phrases(W)`` entries) of the window last read."""

    steps: np.ndarray   # int64 (S,): bits pushed per stream; window is [steps - W, steps)
    window: np.ndarray  # int64 (S,): W
    words: np.ndarray   # uint64 (S, N, 2R/64 + 1): slot x is bit 63 - x % 64 of word x // 64;
                        # words R/64 .. 2R/64 repeat words 0 .. R/64
    heads: np.ndarray   # int64 (S, N, 256): last position whose key (its first 8 bits) is
                        # the index, -1 if none
    prev: np.ndarray    # uint16 (S, N, R): distance back to the previous position with the
                        # same key, 0 if none in the window then
    parsed: np.ndarray  # int64 (S,): end of the window the phrase lists describe
    count: np.ndarray   # int64 (S, N): its LZ76 phrase count
    last: np.ndarray    # int64 (S, N): start of its still-copying last phrase; its end if none
    starts: np.ndarray  # int32 (S, N, P): its phrase starts, in order, from its start
    srcs: np.ndarray    # int32 (S, N, P): their rightmost sources (same origin), -1 if none


def max_phrases(n: int) -> int:
    """An upper bound on the LZ76 phrase count of ``n`` bits: phrases other than the last
    are distinct strings, so at most ``2**L`` of them have length ``L``."""
    count, rest, length = 0, n, 1
    while rest >= length:
        k = min(2 ** length, rest // length)
        count, rest, length = count + k, rest - k * length, length + 1
    return count + 2  # the leftover bits and a final copy


def sliding_state(n_streams: int, n_neurons: int, window: int = 1024, hop: int = 1) -> SlidingLZ:
    """Empty sliding state (every window empty, count 0) for counts read every ``hop`` steps
    (any hop: the work of a read grows with the bits pushed since the last one)."""
    if n_streams < 1 or n_neurons < 1 or window < 1 or hop < 1:
        raise ValueError("n_streams, n_neurons, window and hop must be >= 1")
    if window > 1 << 16:
        raise ValueError("window must be <= 65536")
    shape = (n_streams, n_neurons)
    p = max_phrases(window)
    ring = 1 << max(6, (window - 1).bit_length())
    return SlidingLZ(
        steps=np.zeros(n_streams, np.int64),
        window=np.full(n_streams, window, np.int64),
        words=np.zeros(shape + (ring // 32 + 1,), np.uint64),
        heads=np.full(shape + (_KEYS,), -1, np.int64),
        prev=np.zeros(shape + (ring,), np.uint16),
        parsed=np.zeros(n_streams, np.int64),
        count=np.zeros(shape, np.int64),
        last=np.zeros(shape, np.int64),
        starts=np.zeros(shape + (p,), np.int32),
        srcs=np.full(shape + (p,), -1, np.int32),
    )


# The public kernels hand on single arrays, never ``st``: a call with the whole state in a
# function makes Numba count references to each of its arrays there, more than a push costs.
_inline = inline_kernel


@_inline
def _window(st, stream):
    W = st.window[stream]
    if not 1 <= W <= st.prev.shape[2]:  # a checkpoint's value bounds the ring
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


@_inline
def _narrowed(w0, w1, w2, o, g, u, c):
    """Candidate word ``c`` (lcp >= k) narrowed to lcp >= k + u + 1: words ``w0 w1 w2``
    from bit ``o`` hold bits ``j + k ..`` of its candidates ``j``, ``g`` the 64 bits of the
    phrase from ``q + k``."""
    e0 = _bits_at(w0, w1, o)
    e1 = _bits_at(w1, w2, o)
    for t in range(u + 1):
        e = e0 if t == 0 else (e0 << np.uint64(t)) | (e1 >> np.uint64(64 - t))
        c &= ~(e ^ (_U64 if (g >> np.uint64(63 - t)) & np.uint64(1) else _Z64))
    return c


@kernel
def _reparse(words3, prev3, starts3, srcs3, count2, last2, parsed, steps, window, stream):
    """Make ``stream``'s rows of ``count``/``last``/``starts``/``srcs`` describe its window
    ``[a2, b2)``, ``b2 = steps``, ``a2 = max(0, b2 - W)``, instead of ``[a, b)``, ``b =
    parsed``: the old phrases are taken over where they stay valid, the others cut afresh by
    a longest-match search.

    One kernel without array-passing helpers: a helper taking arrays costs reference counts
    on each call, as much as a search. The search for the phrase at ``q`` walks ``q``'s key
    chain when that is complete within ``_CHAIN`` links and reaches ``M >= _KEY``;
    otherwise it narrows the candidate set ``C`` (bit ``63 - t`` of word ``i`` <->
    ``j = a2 + 64 i + t``) bit-parallel, ``_STEP`` bits a time, to at most ``_FEW``. The
    remaining candidates are extended one by one (``cand``, newest first)."""
    words, prev, starts, srcs = words3[stream], prev3[stream], starts3[stream], srcs3[stream]
    count, last = count2[stream], last2[stream]
    b, b2, W = parsed[stream], steps[stream], window[stream]
    R = prev.shape[1]
    if not 1 <= W <= R:  # a checkpoint's value bounds the ring
        raise ValueError("sliding LZ76: window does not fit the bit ring")
    mask = R - 1
    a = max(0, b - W)
    a2 = max(0, b2 - W)
    P = starts.shape[1]
    new_starts = np.empty(P, np.int32)
    new_srcs = np.empty(P, np.int32)
    C = np.empty(R // 64, np.uint64)
    D = np.empty(R // 64, np.uint64)
    cand = np.empty(max(_CHAIN, _FEW), np.int64)
    thr = a2 - a  # an old source (from a) is still in the window if -1 or >= thr
    shift = a - a2
    xl = a2 & mask
    for n in range(count.shape[0]):
        n_old = min(max(count[n], 0), P)  # bounded even for a hostile checkpoint
        closed = n_old - 1 if last[n] != b else n_old  # the still-copying one is not taken over
        k = 0
        q = a2
        i = 0
        open_start = b2
        while q < b2:
            while i < n_old and a + starts[n, i] < q:
                i += 1
            if i < closed and a + starts[n, i] == q and (srcs[n, i] < 0 or srcs[n, i] >= thr):
                # A run of old closed phrases whose rightmost sources are still in the window:
                # the same longest matches, so the same phrases.
                j = i + 1
                while j < closed and (srcs[n, j] < 0 or srcs[n, j] >= thr):
                    j += 1
                if k + j - i > P:
                    raise AssertionError("sliding LZ76: more phrases than max_phrases")
                for t in range(j - i):
                    new_starts[k + t] = starts[n, i + t] + shift
                    s = srcs[n, i + t]
                    new_srcs[k + t] = s + shift if s >= 0 else -1
                k += j - i
                nxt = a + starts[n, j] if j < n_old else b
                i = j
                if nxt > q:  # (a hostile checkpoint's list could go backwards)
                    q = nxt
                continue
            if k == P:
                raise AssertionError("sliding LZ76: more phrases than max_phrases")
            # ---- longest match (M, rightmost source) of the phrase at q over [a2, q)
            cap = b2 - q
            xq = q & mask
            M, src = 0, -1
            n_cand = 0
            chained = False  # q's key chain is complete within _CHAIN links: cand
            if q > a2 and cap >= _KEY:
                y = q
                for _ in range(_CHAIN):
                    d = prev[n, y & mask]
                    if d == 0 or y - d < a2:
                        chained = True
                        break
                    y -= d
                    cand[n_cand] = y
                    n_cand += 1
            base = 0  # bits every candidate is known to match
            for phase in range(2 if q > a2 else 0):
                if phase == 1:  # narrow C bit-parallel until at most _FEW are left
                    nn = q - a2
                    nw = (nn + 63) >> 6
                    f = 0
                    for t in range(nw):
                        C[t] = _U64
                    C[nw - 1] = _U64 << np.uint64(64 * nw - nn)
                    alive = nn
                    decided = False
                    while base < cap and alive > _FEW:
                        z = (xq + base) & mask
                        g = _bits_at(words[n, z >> 6], words[n, (z >> 6) + 1], np.uint64(z & 63))
                        step = min(_STEP, cap - base)
                        x = (xl + base) & mask
                        o = np.uint64(x & 63)
                        w = np.uint64(x >> 6)  # word t of C lines up with words w + t .. w + t + 2
                        hit = _Z64
                        for t in range(np.uint64(f), np.uint64(nw)):  # unsigned: no index fix-up
                            e0 = _bits_at(words[n, w + t], words[n, w + t + np.uint64(1)], o)
                            e1 = _bits_at(words[n, w + t + np.uint64(1)],
                                          words[n, w + t + np.uint64(2)], o)
                            v = C[t] & ~(e0 ^ (_U64 if g >> np.uint64(63) else _Z64))
                            for u in range(1, _STEP):
                                e = (e0 << np.uint64(u)) | (e1 >> np.uint64(64 - u))
                                want = _U64 if (g >> np.uint64(63 - u)) & np.uint64(1) else _Z64
                                v &= ~(e ^ want) | (_U64 if u >= step else _Z64)
                            D[t] = v
                            hit |= v
                        if not hit:  # M = base + u for the first u at which none is left
                            u = step - 1
                            for u2 in range(step - 1):
                                left = False
                                for t in range(f, nw):
                                    wt = (x >> 6) + t
                                    if _narrowed(words[n, wt], words[n, wt + 1], words[n, wt + 2],
                                                 o, g, u2, C[t]):
                                        left = True
                                        break
                                if not left:
                                    u = u2
                                    break
                            M = base + u
                            for t in range(nw - 1, f - 1, -1):
                                wt = (x >> 6) + t
                                c = C[t] if u == 0 else _narrowed(
                                    words[n, wt], words[n, wt + 1], words[n, wt + 2], o, g, u - 1,
                                    C[t])
                                if c:
                                    src = a2 + 64 * t + 63 - _ctz(c) if M else -1
                                    break
                            decided = True
                            break
                        for t in range(np.uint64(f), np.uint64(nw)):
                            C[t] = D[t]
                        base += step
                        while C[nw - 1] == 0:
                            nw -= 1
                        while C[f] == 0:
                            f += 1
                        alive = 0
                        for t in range(f, nw):
                            alive += _popcount(C[t])
                    if decided:
                        break
                    if base >= cap:  # every candidate left copies to the end
                        M = cap
                        for t in range(nw - 1, f - 1, -1):
                            if C[t]:
                                src = a2 + 64 * t + 63 - _ctz(C[t])
                                break
                        break
                    n_cand = 0  # the candidates left, newest first
                    for t in range(nw - 1, f - 1, -1):
                        c = C[t]
                        while c:
                            cand[n_cand] = a2 + 64 * t + 63 - _ctz(c)
                            n_cand += 1
                            c &= c - np.uint64(1)
                elif not chained:
                    continue
                # extend each candidate from ``base`` bits; the newest keeps a tie
                best, bsrc = 0, -1
                z0 = (xq + base) & mask
                g0 = _bits_at(words[n, z0 >> 6], words[n, (z0 >> 6) + 1], np.uint64(z0 & 63))
                for t in range(n_cand):
                    x = (cand[t] + base) & mask
                    z = z0
                    g = g0
                    m = base
                    while m < cap:
                        e = g ^ _bits_at(words[n, x >> 6], words[n, (x >> 6) + 1], np.uint64(x & 63))
                        if e:
                            m += _clz(e)
                            break
                        m += 64
                        x = (x + 64) & mask
                        z = (z + 64) & mask
                        g = _bits_at(words[n, z >> 6], words[n, (z >> 6) + 1], np.uint64(z & 63))
                    m = min(m, cap)
                    if m > best:
                        best, bsrc = m, cand[t]
                if phase == 1 or best >= _KEY:  # (a chain decides only matches >= _KEY)
                    M, src = best, bsrc
                    break
            # ---- cut
            new_starts[k] = q - a2
            new_srcs[k] = src - a2 if src >= 0 else -1
            k += 1
            if M == cap:
                open_start = q
            q += min(M + 1, cap)
        starts[n, :k] = new_starts[:k]
        srcs[n, :k] = new_srcs[:k]
        count[n] = k
        last[n] = open_start
    parsed[stream] = b2


@_inline
def _put(words, heads, prev, stream, b, W, bits):
    """Position ``b`` of ``stream`` takes ``bits``; the position whose key that completes
    joins its chain."""
    R = prev.shape[2]
    h = R // 64
    x = b & (R - 1)
    w = x >> 6
    m = np.uint64(1) << np.uint64(63 - (x & 63))
    y = b - (_KEY - 1)  # the position whose key this bit completes
    ky = max(y, 0) & (R - 1)
    wy = ky >> 6
    oy = np.uint64(ky & 63)
    for n in range(bits.size):
        v = (words[stream, n, w] & ~m) | (m if bits[n] != 0 else _Z64)
        words[stream, n, w] = v
        words[stream, n, w + h] = v
        words[stream, n, 2 * h] = words[stream, n, 0]
        key = np.int64(((words[stream, n, wy] << oy)
                        | ((words[stream, n, wy + 1] >> np.uint64(1)) >> (np.uint64(63) - oy)))
                       >> np.uint64(64 - _KEY))
        z = heads[stream, n, key]
        d = y - z
        prev[stream, n, ky] = d if (y >= 0) & (z >= 0) & (d < W) else 0
        heads[stream, n, key] = y if y >= 0 else z


@kernel
def push(st, stream, bits):
    """Append one step (``bits[n]`` for each neuron, nonzero = 1) to ``stream``."""
    _check(st, stream, bits.size)
    # No more raising paths here: with a third, Numba counts references to every array of
    # ``st`` on each call. (``W`` only gates the chain links, which a read walks in bounds.)
    b = st.steps[stream]
    _put(st.words, st.heads, st.prev, stream, b, st.window[stream], bits)
    st.steps[stream] = b + 1


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
        zeros = np.zeros(N, np.uint8)
        for i in range(k):
            _put(st.words, st.heads, st.prev, stream, b + i, W, zeros)
        st.steps[stream] = b + k
        return
    # The window becomes all zeros: phrase 0 is one bit, phrase 1 copies it to the end; all
    # keys are 0, one chain through the window.
    b += k
    R = st.prev.shape[2]
    st.words[stream] = 0
    st.heads[stream] = -1
    st.prev[stream] = 0
    for y in range(b - W + 1, b - _KEY + 1):
        st.prev[stream, :, y & (R - 1)] = 1
    if b - _KEY >= b - W:
        st.heads[stream, :, 0] = b - _KEY
    for n in range(N):
        st.starts[stream, n, 0] = 0
        st.srcs[stream, n, 0] = -1
        st.starts[stream, n, 1] = 1
        st.srcs[stream, n, 1] = 0
        st.last[stream, n] = b - W + 1
        st.count[stream, n] = min(W, 2)
    st.steps[stream] = st.parsed[stream] = b


@kernel
def counts(st, stream, out):
    """Write the LZ76 count of each neuron's current window of ``stream`` into ``out``."""
    _check(st, stream, out.size)
    if st.parsed[stream] != st.steps[stream]:
        _reparse(st.words, st.prev, st.starts, st.srcs, st.count, st.last, st.parsed, st.steps,
                 st.window, stream)
    for n in range(out.size):
        out[n] = st.count[stream, n]


@kernel
def ones(st, stream, out):
    """Write the number of ones (spikes) in each neuron's current window into ``out``."""
    _check(st, stream, out.size)
    R = st.prev.shape[2]
    size = min(st.steps[stream], st.window[stream], R)  # (no raising: see push)
    x = (st.steps[stream] - size) & (R - 1)
    for n in range(out.size):
        c = 0
        for i in range(0, size, 64):  # 64 slots at a time from the window's first
            z = (x + i) & (R - 1)
            w = _bits_at(st.words[stream, n, z >> 6], st.words[stream, n, (z >> 6) + 1],
                         np.uint64(z & 63))
            c += _popcount(w >> np.uint64(64 - min(64, size - i)))
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
    R = st.prev.shape[2]
    for i in range(out.size):
        out[i] = _bit(st.words[stream, neuron], (a + i) & (R - 1))
    return out


@kernel
def reset(st, stream):
    """Empty every window of ``stream`` (e.g. when a new source takes the slot)."""
    st.steps[stream] = 0
    st.words[stream] = 0
    st.heads[stream] = -1
    st.prev[stream] = 0
    st.parsed[stream] = 0
    st.count[stream] = 0
    st.last[stream] = 0
    st.starts[stream] = 0
    st.srcs[stream] = -1
