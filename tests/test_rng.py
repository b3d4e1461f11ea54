"""Counter-based random numbers (``edged.rng``): Philox4x64-10 bit for bit, uniform,
keyed by stream, layer, neuron and step."""

from __future__ import annotations

import hashlib

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edged.rng import philox, stream_key, uniform

U64 = st.integers(0, 2 ** 64 - 1)


@settings(max_examples=60, deadline=None)
@given(U64, U64, U64, U64, U64, U64)
def test_philox_is_numpys_philox(c0, c1, c2, c3, k0, k1):
    """numpy's Philox increments its counter before each block, so a generator started
    at ``counter - 1`` yields the block of ``counter`` first."""
    counter = np.array([c0, c1, c2, c3], np.uint64)
    start = counter.copy()
    for i in range(4):  # subtract one with borrow, as numpy's 256-bit counter does
        start[i] = np.uint64((int(start[i]) - 1) % 2 ** 64)
        if int(counter[i]) != 0:
            break
    ref = np.random.Philox(key=np.array([k0, k1], np.uint64), counter=start).random_raw(4)
    got = philox(*(np.uint64(v) for v in (c0, c1, c2, c3, k0, k1)))
    assert [int(x) for x in got] == [int(x) for x in ref]


def test_uniforms_are_uniform_and_keyed():
    from scipy import stats

    key = stream_key("cam0")
    draws = np.array([uniform(7, key, 1, 3, t) for t in range(20000)])
    assert draws.min() >= 0.0 and draws.max() < 1.0
    assert stats.kstest(draws, "uniform").pvalue > 1e-3
    assert uniform(7, key, 1, 3, 1000) == uniform(7, key, 1, 3, 1000)  # a pure function
    others = [uniform(8, key, 1, 3, 1000), uniform(7, stream_key("cam1"), 1, 3, 1000),
              uniform(7, key, 0, 3, 1000), uniform(7, key, 1, 4, 1000), uniform(7, key, 1, 3, 1001)]
    assert len({uniform(7, key, 1, 3, 1000), *others}) == 6
    lag = np.corrcoef(draws[:-1], draws[1:])[0, 1]
    assert abs(lag) < 0.05


def test_stream_key_is_stable_across_processes():
    digest = hashlib.blake2b(b"cam0", digest_size=8).digest()
    assert stream_key("cam0") == int.from_bytes(digest, "little")
    assert stream_key("s1") != stream_key("s2") and stream_key("").dtype == np.uint64
