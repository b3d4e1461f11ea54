"""edged.lzc: golden sequences, references, antropy agreement, sliding-engine properties."""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edged import lzc
from edged.bench.lzc import _kaspar_schuster

REF = np.array([int(c) for c in "1001111011000010"], np.uint8)


def bits(text: str) -> np.ndarray:
    return np.array([int(c) for c in text], np.uint8)


# ---------------------------------------------------------------- NumPy/Python references


def lz76_ref(s) -> int:
    """Kaspar-Schuster LZ76 straight from the definition: O(n^2) per phrase."""
    s = list(s)
    n, p, c = len(s), 0, 0
    while p < n:
        best = 0
        for j in range(p):
            k = 0
            while p + k < n and s[j + k] == s[p + k]:
                k += 1
            best = max(best, k)
        c += 1
        p += best + 1
    return c


# Kaspar & Schuster's LZ76 loop (as in antropy), compiled: a second reference, fast enough
# for every window of the sliding tests; no grams, no code shared with edged.lzc (it is
# the plain loop edged bench lzc times as its baseline).
lz76_ks = _kaspar_schuster()


def lz78_ref(s) -> int:
    seen, phrase, c = set(), "", 0
    for b in s:
        phrase += str(int(b))
        if phrase not in seen:
            seen.add(phrase)
            c += 1
            phrase = ""
    return c + (phrase != "")


def trains(rng, n: int, kind: str, d: float) -> np.ndarray:
    """Spike trains that reach every matching path: random, periodic, and long runs."""
    if kind == "random":
        return (rng.random(n) < d).astype(np.uint8)
    if kind == "periodic":  # long matches (> 32 and > 64 bits) with rare flips
        period = rng.random(int(rng.integers(1, 40))) < 0.5
        x = np.resize(period, n).astype(np.uint8)
        x[rng.random(n) < d * 0.02] ^= 1
        return x
    runs = rng.geometric(min(max(d, 1e-3), 1.0) * 0.1 + 1e-3, n)  # "runs": long constant stretches
    return (np.repeat(np.arange(runs.size) % 2, runs)[:n]).astype(np.uint8)


# ---------------------------------------------------------------- one-shot golden cases


def test_reference_vector():
    assert lzc.lz76(REF) == 6  # 1|0|01|1110|1100|0010
    assert lzc.lz78(REF) == 8  # 1|0|01|11|10|110|00|010
    assert lzc.lzc(REF) == pytest.approx(6 * 4 / 16) == 1.5
    assert lzc.lzc(REF, "lz78") == pytest.approx(8 * 4 / 16)


@pytest.mark.parametrize("text, c76, c78", [
    ("", 0, 0),
    ("0", 1, 1),
    ("1", 1, 1),
    ("00", 2, 2),        # 0|0 ; 0|0(dictionary)
    ("01", 2, 2),        # 0|1
    ("0001", 2, 3),      # 0|001 ; 0|00|1
    ("0000", 2, 3),      # 0|000 ; 0|00|0
    ("1010101010", 3, 6),  # 1|0|10101010 ; 1|0|10|101|01|0
    ("0110", 3, 3),      # 0|1|10 ; 0|1|10
    ("00100", 3, 3),     # 0|01|00 ; 0|01|00
])
def test_short_cases_by_hand(text, c76, c78):
    assert lzc.lz76(bits(text)) == c76 == lz76_ref(text)
    assert lzc.lz78(bits(text)) == c78 == lz78_ref(text)


@pytest.mark.parametrize("n", [2, 3, 31, 32, 33, 64, 65, 100, 1024, 4096])
@pytest.mark.parametrize("value", [0, 1])
def test_constant_windows_have_two_phrases(n, value):
    assert lzc.lz76(np.full(n, value, np.uint8)) == 2


def test_normalisation():
    assert lzc.lzc(np.zeros(0, np.uint8)) == 0.0
    assert lzc.lzc(np.ones(1, np.uint8)) == 0.0
    assert lzc.lzc(bits("01")) == pytest.approx(2 * 1 / 2)
    x = np.random.default_rng(3).random(1000) < 0.5
    assert lzc.lzc(x) == pytest.approx(lzc.lz76(x) * math.log2(1000) / 1000)
    assert lzc.normalise(7, 1) == 0.0 and lzc.normalise(7, 0) == 0.0


def test_accepts_bool_int_lists_and_strided_views():
    x = np.random.default_rng(4).random(300) < 0.3
    want = lz76_ref(x)
    for form in (x, x.astype(np.int64), x.astype(np.uint16), x.tolist(), np.repeat(x, 2)[::2]):
        assert lzc.lz76(form) == want
    assert lzc.lz76([]) == 0


@pytest.mark.parametrize("bad", [
    np.array([0, 1, 2], np.uint8), np.array([0, -1]), np.array([0, 256]),
    np.zeros((2, 3), np.uint8), np.array([0.0, 1.0]), np.array(["0", "1"]),
])
def test_rejects_non_binary_input(bad):
    for fn in (lzc.lz76, lzc.lz78, lzc.lzc):
        with pytest.raises(ValueError):
            fn(bad)


def test_rejects_unknown_variant():
    with pytest.raises(ValueError):
        lzc.lzc(REF, "lz77")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 1), max_size=80))
def test_one_shot_equal_references(s):
    x = np.array(s, np.uint8)
    assert lzc.lz76(x) == lz76_ref(s) == lz76_ks(x)
    assert lzc.lz76_jit(x) == lzc.lz76_jit(x.astype(bool)) == lz76_ref(s)
    assert lzc.lz78(x) == lz78_ref(s)


ONE_SHOT_LENGTHS = (1, 2, 3, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129,
                    1023, 1024, 1025, 3000, 4097, 6000)
ONE_SHOT_KINDS = {
    "random": lambda rng, n: trains(rng, n, "random", 0.5),
    "sparse": lambda rng, n: trains(rng, n, "random", 0.03),
    "dense": lambda rng, n: trains(rng, n, "random", 0.97),
    "periodic": lambda rng, n: trains(rng, n, "periodic", 0.5),
    "zeros": lambda rng, n: np.zeros(n, np.uint8),
    "ones": lambda rng, n: np.ones(n, np.uint8),
    "runs": lambda rng, n: trains(rng, n, "runs", 0.3),
    "adversarial": lambda rng, n: adversarial(rng, n),
    "gram-edges": lambda rng, n: gram_edges(rng, n),
}


@pytest.mark.parametrize("kind", ONE_SHOT_KINDS)
def test_one_shot_equals_reference_on_hard_inputs(kind):
    """Every length around a gram (16) and a word or chunk (64) and up to several
    thousand bits, against the definition."""
    rng = np.random.default_rng(len(kind))
    for n in ONE_SHOT_LENGTHS:
        for _ in range(3 if n < 3000 else 1):
            x = ONE_SHOT_KINDS[kind](rng, n)
            assert x.size == n
            want = lz76_ref(x)
            assert lzc.lz76(x) == want, (kind, n)
            assert lzc.lz76_jit(x) == lzc.lz76_jit(x.astype(bool)) == want, (kind, n)


@pytest.mark.parametrize("period", [1, 2, 3, 16, 17, 63, 64, 65, 500])
def test_one_shot_long_periodic_copies(period):
    """Matches of hundreds of bits, on every period, with flips past a gram and a word."""
    x = np.resize(np.random.default_rng(period).random(period) < 0.5, 5000).astype(np.uint8)
    x[[700, 1500, 2300, 2301, 2316, 2381]] ^= 1
    assert lzc.lz76(x) == lz76_ref(x)


def test_one_shot_at_the_length_limit():
    """``MAX_WINDOW`` bits are counted exactly (phrase starts near the uint16 limit); one
    more is refused by every LZ76 entry point, not by LZ78."""
    n = lzc.MAX_WINDOW
    assert n == 65536
    rng = np.random.default_rng(8)
    for x in (trains(rng, n, "random", 0.5), trains(rng, n, "random", 0.02), adversarial(rng, n)):
        assert lzc.lz76(x) == lz76_ks(x)
    x = np.zeros(n, np.uint8)
    x[-1] = 1
    assert lzc.lz76(x) == 2
    x[-1], x[-2] = 0, 1  # 0|00...010: the last phrase starts at 65535
    assert lzc.lz76(x) == 3 == lz76_ks(x)
    longer = np.zeros(n + 1, np.uint8)
    for fn in (lzc.lz76, lzc.lzc, lzc.lz76_jit):
        with pytest.raises(ValueError, match="65536"):
            fn(longer)
    assert lzc.lz78(longer) == lz78_ref(longer)


@pytest.mark.parametrize("n", [1, 2, 63, 64, 65, 1000])
def test_lz76_jit_flags_a_value_not_binary_anywhere(n):
    """-1 for a value other than 0/1 in the first word, at a word's end, in the last
    (partial) word; uint8 and the signed ints an njit caller may pass."""
    for i in sorted({0, min(63, n - 1), min(64, n - 1), n - 1}):
        x = np.zeros(n, np.uint8)
        x[i] = 2
        assert lzc.lz76_jit(x) == -1, (n, i)
        x[i] = 255
        assert lzc.lz76_jit(x) == -1, (n, i)
        y = np.zeros(n, np.int64)
        y[i] = -1
        assert lzc.lz76_jit(y) == -1, (n, i)
        y[i] = 1
        assert lzc.lz76_jit(y) == lz76_ref(y)


def test_agrees_with_antropy_on_random_sequences():
    antropy = pytest.importorskip("antropy", reason="antropy (test extra) is the reference")
    rng = np.random.default_rng(2024)
    kinds = ("random", "random", "periodic", "runs")
    for i in range(1000):
        n = int(np.exp(rng.uniform(np.log(2), np.log(4096))))
        d = (0.0, 1.0)[i % 2] if i % 50 == 0 else rng.random()
        x = trains(rng, n, kinds[i % 4], d)
        assert lzc.lz76(x) == antropy.lziv_complexity(x.astype(bool), normalize=False), (n, d)
        if i % 10 == 0:
            want = antropy.lziv_complexity(x.astype(bool), normalize=True)
            assert lzc.lzc(x) == pytest.approx(want)


# ---------------------------------------------------------------- sliding engine


class Mirror:
    """Full history per (stream, neuron); the window is its tail."""

    def __init__(self, n_streams, n_neurons, window):
        self.w = window
        self.hist = [[[] for _ in range(n_neurons)] for _ in range(n_streams)]

    def push(self, s, column):
        for n, b in enumerate(column):
            self.hist[s][n].append(int(b))

    def zeros(self, s, k):
        for h in self.hist[s]:
            h.extend([0] * k)

    def window(self, s, n):
        h = self.hist[s][n]
        return np.array(h[max(0, len(h) - self.w):], np.uint8)


def assert_exact(state, mirror, s):
    out = np.zeros(state.count.shape[1], np.int64)
    ones = np.zeros_like(out)
    lzc.counts(state, s, out)
    lzc.ones(state, s, ones)
    assert ones.tolist() == [int(mirror.window(s, n).sum()) for n in range(out.size)]
    assert lzc.window_len(state, s) == mirror.window(s, 0).size
    for n in range(out.size):
        w = mirror.window(s, n)
        assert np.array_equal(lzc.window_bits(state, s, n), w)
        assert out[n] == lz76_ks(w), (s, n, w.size)


def run_ops(window, n_streams, n_neurons, ops, seed, check_every=1, hop=1):
    rng = np.random.default_rng(seed)
    state = lzc.sliding_state(n_streams, n_neurons, window, hop)
    mirror = Mirror(n_streams, n_neurons, window)
    for s, kind, k, d in ops:
        if kind == "zeros":
            lzc.push_zeros(state, s, k)
            mirror.zeros(s, k)
            assert_exact(state, mirror, s)
            continue
        block = np.stack([trains(rng, k, kind, d) for _ in range(n_neurons)], axis=1)
        for t, column in enumerate(block):
            lzc.push(state, s, column)
            mirror.push(s, column)
            if t % check_every == 0 or t == k - 1:
                assert_exact(state, mirror, s)
    for s in range(n_streams):
        assert_exact(state, mirror, s)
    return state


def op(max_len, n_streams, window):
    return st.tuples(
        st.integers(0, n_streams - 1),
        st.sampled_from(["random", "random", "periodic", "runs", "zeros"]),
        st.integers(0, max_len) | st.sampled_from([window - 1, window, window + 1, 2 * window + 3]),
        st.floats(0.0, 1.0),
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(window=st.integers(1, 70), n_streams=st.integers(1, 3), n_neurons=st.integers(1, 3),
       data=st.data(), seed=st.integers(0, 2**32 - 1), hop=st.sampled_from([1, 8]))
def test_sliding_counts_equal_recount_small_windows(window, n_streams, n_neurons, data, seed, hop):
    ops = data.draw(st.lists(op(3 * window, n_streams, window), max_size=12))
    run_ops(window, n_streams, n_neurons, ops, seed, hop=hop)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_streams=st.integers(1, 2), data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_sliding_counts_equal_recount_window_1024(n_streams, data, seed):
    ops = data.draw(st.lists(op(1500, n_streams, 1024), min_size=1, max_size=5))
    run_ops(1024, n_streams, 2, ops, seed, check_every=7)


@pytest.mark.parametrize("kind, d", [
    ("random", 0.5), ("random", 0.05), ("periodic", 0.5), ("runs", 0.3)])
def test_sliding_long_run_every_step(kind, d):
    run_ops(1024, 1, 3, [(0, kind, 2600, d)], seed=11, check_every=1)


@pytest.mark.parametrize("hop", [1, 8])
@pytest.mark.parametrize("window", [2, 3, 5, 8, 33, 63, 64, 65, 100, 128, 129])
def test_sliding_small_windows_long_runs(window, hop):
    kinds = [("random", 0.5), ("runs", 0.2), ("periodic", 0.5), ("random", 0.05), ("zeros", 0.0)]
    ops = [(0, kind, 8 * window + 50, d) for kind, d in kinds * 2]
    run_ops(window, 1, 3, ops, seed=window, hop=hop)


def adversarial(rng, n: int) -> np.ndarray:
    """Copies of one random block with rare flips: most phrases copy from far back, so the
    sources a sliding window drops are the ones later phrases relied on."""
    block = rng.random(int(rng.integers(20, 300))) < 0.5
    x = np.resize(block, n).astype(np.uint8)
    x[rng.random(n) < 0.003] ^= 1
    return x


def run_hops(window, n_neurons, spikes, hops, hop=16):
    """Push ``spikes`` (steps x neurons) and compare ``counts`` with the reference after
    each read interval in ``hops`` (cycled)."""
    state = lzc.sliding_state(1, n_neurons, window, hop)
    out = np.zeros(n_neurons, np.int64)
    t, i = 0, 0
    while t < spikes.shape[0]:
        h = hops[i % len(hops)]
        for column in spikes[t:t + h]:
            lzc.push(state, 0, column)
        t, i = min(t + h, spikes.shape[0]), i + 1
        lzc.counts(state, 0, out)
        w = spikes[max(0, t - window):t]
        assert out.tolist() == [lz76_ks(w[:, n].copy()) for n in range(n_neurons)], (t, h)


@pytest.mark.parametrize("kind, d", [
    ("random", 0.05), ("random", 0.3), ("random", 0.5), ("random", 0.65), ("random", 0.97),
    ("periodic", 0.5), ("runs", 0.3), ("adversarial", 0.0)])
def test_resync_equals_recount_every_hop_window_1024(kind, d):
    rng = np.random.default_rng(17)
    make = (lambda: adversarial(rng, 4200)) if kind == "adversarial" else (
        lambda: trains(rng, 4200, kind, d))
    spikes = np.stack([make() for _ in range(3)], axis=1)
    run_hops(1024, 3, spikes, [16])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(window=st.integers(1, 300), seed=st.integers(0, 2**32 - 1),
       hops=st.lists(st.integers(1, 400), min_size=1, max_size=6),
       kind=st.sampled_from(["random", "periodic", "runs", "adversarial"]), d=st.floats(0.0, 1.0))
def test_resync_equals_recount_at_any_read_intervals(window, seed, hops, kind, d):
    rng = np.random.default_rng(seed)
    n = 3 * window + 500
    make = (lambda: adversarial(rng, n)) if kind == "adversarial" else (lambda: trains(rng, n, kind, d))
    run_hops(window, 2, np.stack([make(), make()], axis=1), hops)


def test_state_size_per_neuron():
    state = lzc.sliding_state(1, 10, 1024, 16)
    per_neuron = sum(a.nbytes for a in state) / 10
    assert per_neuron < 1024  # the bit ring and the phrase list (docstring)
    assert state.starts.shape == (1, 10, lzc.max_phrases(1024))
    assert state.words.shape == (1, 10, 17)


@pytest.mark.parametrize("kind, d", [
    ("random", 0.05), ("random", 0.5), ("random", 0.65), ("periodic", 0.5), ("runs", 0.3),
    ("adversarial", 0.0)])
@pytest.mark.parametrize("hop", [1, 3, 16, 64, 1023, 1024, 1025])
def test_sliding_equals_recount_at_every_hop_window_1024(kind, d, hop):
    rng = np.random.default_rng(hop)
    make = (lambda: adversarial(rng, 2600)) if kind == "adversarial" else (
        lambda: trains(rng, 2600, kind, d))
    run_hops(1024, 2, np.stack([make(), make()], axis=1), [hop])


def test_long_periodic_copies_and_periods_of_powers_of_two():
    """Matches far longer than a word, candidates on every period: the bit-parallel search
    runs to the window's end and the chains are long."""
    for period in (1, 2, 3, 8, 16, 63, 64, 65, 500):
        x = np.resize(np.random.default_rng(period).random(period) < 0.5, 4000).astype(np.uint8)
        x[[1500, 2300, 2301]] ^= 1
        run_hops(1024, 1, x[:, None], [16, 1, 7, 300])


def gram_edges(rng, n: int) -> np.ndarray:
    """Blocks copied so that the match ends one bit before, at or after a multiple of 16
    (the search compares 16-bit grams level by level), with several sources tying."""
    out = []
    while sum(x.size for x in out) < n:
        m = int(rng.choice([15, 16, 17, 31, 32, 33, 47, 48, 49, 64, 65]))
        block = (rng.random(m + 1) < 0.5).astype(np.uint8)
        noise = [(rng.random(int(rng.integers(1, 6))) < 0.5).astype(np.uint8) for _ in range(3)]
        out += [block, noise[0], block, noise[1], block[:m], 1 - block[m:], noise[2]]
    return np.concatenate(out)[:n]


@pytest.mark.parametrize("window", [1, 15, 16, 17, 31, 32, 33, 100, 1024])
def test_matches_at_gram_boundaries_and_copies_to_the_end(window):
    """Longest matches of 16 k - 1, 16 k and 16 k + 1 bits, rightmost of tying sources, and
    copies running to the window's end (read at every step) in windows shorter and longer
    than a gram."""
    rng = np.random.default_rng(window)
    x = gram_edges(rng, 2 * window + 600)
    run_hops(window, 1, x[:, None], [1, 1, 1, 7, 16, 5])


def test_hostile_checkpoint_values_are_refused_or_bounded():
    """Phrase lists and window from a file are bounded: a wrong count at worst, never a
    read or write outside the arrays."""
    rng = np.random.default_rng(9)
    out = np.zeros(2, np.int64)
    for trial in range(200):
        state = lzc.sliding_state(1, 2, 100, 16)
        for _ in range(int(rng.integers(0, 300))):
            lzc.push(state, 0, (rng.random(2) < 0.4).astype(np.uint8))
        lzc.counts(state, 0, out)
        for name in ("starts", "srcs", "count", "last", "parsed", "words"):
            x = getattr(state, name)
            if rng.random() < 0.5:
                x[...] = rng.integers(-2**15, 2**15, x.shape).astype(x.dtype)
        for _ in range(int(rng.integers(0, 40))):
            lzc.push(state, 0, (rng.random(2) < 0.4).astype(np.uint8))
        try:
            lzc.counts(state, 0, out)  # any value, or a refusal; never a crash
        except AssertionError:
            pass
        lzc.ones(state, 0, out)
        assert 0 <= out.min() and out.max() <= 100
    state = lzc.sliding_state(1, 2, 100, 16)
    state.window[0] = 10**6
    lzc.push(state, 0, np.ones(2, np.uint8))
    with pytest.raises(ValueError):
        lzc.counts(state, 0, out)


@pytest.mark.parametrize("n", [1, 2, 3, 10, 64, 200])
def test_max_phrases_bounds_every_window(n):
    rng = np.random.default_rng(n)
    worst = max(lzc.lz76(trains(rng, n, kind, rng.random())) for kind in
                ("random", "periodic", "runs") for _ in range(200))
    assert worst <= lzc.max_phrases(n)


def test_streams_do_not_affect_each_other():
    rng = np.random.default_rng(5)
    state = lzc.sliding_state(3, 4, 40)
    for _ in range(100):
        lzc.push(state, 0, (rng.random(4) < 0.4).astype(np.uint8))
    before = [a[0].copy() for a in state[1:]] + [state.steps[0]]
    for _ in range(300):
        lzc.push(state, 1, (rng.random(4) < 0.5).astype(np.uint8))
        lzc.push(state, 2, (rng.random(4) < 0.1).astype(np.uint8))
    lzc.push_zeros(state, 2, 1000)
    after = [a[0] for a in state[1:]] + [state.steps[0]]
    assert all(np.array_equal(x, y) for x, y in zip(before, after))


def test_push_zeros_edge_cases():
    state = lzc.sliding_state(1, 2, 16)
    lzc.push_zeros(state, 0, 0)
    assert lzc.window_len(state, 0) == 0
    out = np.full(2, -1, np.int64)
    lzc.counts(state, 0, out)
    assert out.tolist() == [0, 0]
    lzc.push_zeros(state, 0, 5)       # window not yet full: 0|0000
    lzc.counts(state, 0, out)
    assert out.tolist() == [2, 2] and lzc.window_len(state, 0) == 5
    lzc.push_zeros(state, 0, 10**12)  # closed form, no loop over k
    lzc.counts(state, 0, out)
    assert out.tolist() == [2, 2] and lzc.window_len(state, 0) == 16
    lzc.push(state, 0, np.array([1, 0], np.uint8))
    lzc.counts(state, 0, out)
    assert out.tolist() == [lzc.lz76(bits("0" * 15 + "1")), 2]
    with pytest.raises(ValueError):
        lzc.push_zeros(state, 0, -1)


@settings(max_examples=100, deadline=None)
@given(window=st.sampled_from([1, 16, 64, 65, 100, 1024]), seed=st.integers(0, 2**32 - 1),
       pushes=st.lists(st.integers(1, lzc.MAX_PUSH), min_size=1, max_size=40))
def test_push_many_is_k_pushes(window, seed, pushes):
    """The same state, bit for bit, as pushing the steps one at a time, whatever bits lie
    above the ``k`` taken (the engine keeps shifting one word per neuron)."""
    rng = np.random.default_rng(seed)
    one, many = lzc.sliding_state(1, 3, window), lzc.sliding_state(1, 3, window)
    held = rng.integers(0, 2**63, 3).astype(np.uint64)  # stale bits above the k new ones
    for k in pushes:
        block = (rng.random((k, 3)) < rng.random()).astype(np.uint8)
        for column in block:
            lzc.push(one, 0, column)
            held = (held << np.uint64(1)) | column.astype(np.uint64)
        lzc.push_many(many, 0, held, k)
        for name, x, y in zip(one._fields, one, many):
            np.testing.assert_array_equal(x, y, err_msg=name)
    with pytest.raises(ValueError):
        lzc.push_many(many, 0, held, lzc.MAX_PUSH + 1)


def test_engine_rejects_bad_arguments():
    state = lzc.sliding_state(2, 3, 8)
    with pytest.raises(ValueError):
        lzc.push(state, 0, np.zeros(2, np.uint8))
    with pytest.raises(IndexError):
        lzc.push(state, 2, np.zeros(3, np.uint8))
    with pytest.raises(IndexError):
        lzc.push_zeros(state, -1, 3)
    with pytest.raises(ValueError):
        lzc.counts(state, 0, np.zeros(2, np.int64))
    with pytest.raises(ValueError):
        lzc.sliding_state(1, 1, 0)
    assert state.steps.tolist() == [0, 0]


def test_reads_share_one_work_space():
    """``read`` in one ``workspace`` for every stream counts as ``counts`` does, and a work
    space sized for another state is refused."""
    rng = np.random.default_rng(8)
    state = lzc.sliding_state(3, 2, 100)
    work, out = lzc.workspace(state), np.zeros(2, np.int64)
    for _ in range(30):
        s = int(rng.integers(3))
        for _ in range(int(rng.integers(1, 40))):
            lzc.push(state, s, (rng.random(2) < 0.3).astype(np.uint8))
        lzc.read(state, s, out, work)
        bits = [lzc.window_bits(state, s, n) for n in range(2)]
        assert out.tolist() == [lz76_ks(b) for b in bits]
    lzc.push(state, 0, np.ones(2, np.uint8))
    with pytest.raises(ValueError, match="work space"):
        lzc.read(state, 0, out, lzc.workspace(lzc.sliding_state(1, 2, 1000)))


def test_window_of_one_bit():
    state = lzc.sliding_state(1, 1, 1)
    out = np.zeros(1, np.int64)
    for b in (1, 0, 0, 1):
        lzc.push(state, 0, np.array([b], np.uint8))
        lzc.counts(state, 0, out)
        assert out[0] == 1 and lzc.window_bits(state, 0, 0).tolist() == [b]


def test_checkpoint_round_trip(tmp_path):
    rng = np.random.default_rng(6)
    state = lzc.sliding_state(2, 3, 50)
    for _ in range(120):
        lzc.push(state, int(rng.integers(2)), (rng.random(3) < 0.3).astype(np.uint8))
    np.savez(tmp_path / "lz.npz", **state._asdict())
    with np.load(tmp_path / "lz.npz") as f:
        restored = lzc.SlidingLZ(**{k: f[k] for k in lzc.SlidingLZ._fields})
    for _ in range(200):
        s, column = int(rng.integers(2)), (rng.random(3) < 0.3).astype(np.uint8)
        lzc.push(state, s, column)
        lzc.push(restored, s, column)
    assert all(np.array_equal(a, b) for a, b in zip(state, restored))


def test_reset_empties_one_stream():
    state = lzc.sliding_state(2, 2, 30)
    fresh = lzc.sliding_state(2, 2, 30)
    for _ in range(70):
        lzc.push(state, 0, np.array([1, 0], np.uint8))
        lzc.push(state, 1, np.array([0, 1], np.uint8))
        lzc.push(fresh, 1, np.array([0, 1], np.uint8))
    lzc.reset(state, 0)
    assert all(np.array_equal(a, b) for a, b in zip(state, fresh))


def test_callable_from_njit_loop():
    @numba.njit
    def run(state, stream, spikes, hop, out):  # the daemon's per-stream loop, in miniature
        total = 0
        for t in range(spikes.shape[0]):
            lzc.push(state, stream, spikes[t])
            if (t + 1) % hop == 0:
                lzc.counts(state, stream, out)
                total += out.sum()
        return total

    spikes = (np.random.default_rng(7).random((320, 4)) < 0.2).astype(np.uint8)
    state = lzc.sliding_state(2, 4, 64)
    out = np.zeros(4, np.int64)
    run(state, 1, spikes, 16, out)
    assert out.tolist() == [lz76_ks(spikes[-64:, n].copy()) for n in range(4)]
