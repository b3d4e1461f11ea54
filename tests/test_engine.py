"""Stream engine: decisions equal a from-scratch recount, however events are split."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from edged import lzc, neurons
from edged.bench.kernels import example_net
from edged.engine import Engine
from edged.rng import stream_key

from conftest import firing_net


def events(rng, steps: int, n_in: int, density: float, gaps: bool):
    active = rng.random((steps, n_in)) < density
    if gaps:  # long silent stretches exercise the closed-form skip
        for start in rng.integers(0, steps, 3):
            active[start:start + rng.integers(1, 3 * steps // 4 + 2)] = False
    t, ch = np.nonzero(active)
    return t.astype(np.int64), ch.astype(np.int64)


def recount(n, t, ch, steps, window, hop, stream=""):
    """Decisions by brute force: dense output spikes, then lz76 of every window."""
    out = np.zeros((steps, n.w_out.shape[1]), np.uint8)
    key = stream_key(stream)
    for now in range(steps):  # explicit stepping, no closed form
        neurons.step(n, recount.state, 0, key, now, ch[t == now], out[now])
    bounds = [b for b in range(1, steps + 1) if b % hop == 0 and b >= window]
    n_out = out.shape[1]
    lz = np.array([[lzc.lz76(out[b - window:b, k]) for k in range(n_out)] for b in bounds], np.int64)
    spikes = np.array([out[b - window:b].sum(0) for b in bounds], np.int64)
    return np.array(bounds, np.int64), lz.reshape(-1, n_out), spikes.reshape(-1, n_out)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), window=st.integers(2, 80), hop_frac=st.floats(0.01, 1.0),
       kind=st.sampled_from(["lif", "meta", "meta-esc"]), gaps=st.booleans(), cuts=st.integers(0, 6))
def test_decisions_equal_recount_under_any_split(seed, window, hop_frac, kind, gaps, cuts):
    """Escape noise included: its draws depend on the stream and the absolute step only."""
    rng = np.random.default_rng(seed)
    n = firing_net(kind, 6, 12, 3, seed)
    hop = max(1, int(window * hop_frac))
    steps = int(rng.integers(1, 4 * window + 20))
    t, ch = events(rng, steps, 6, 0.3, gaps)
    recount.state = neurons.zero_state(n, 1)
    want_t, want_lz, want_spikes = recount(n, t, ch, steps, window, hop, "s1")

    eng = Engine(n, window, hop, ("lzc", "rate"), streams=3)
    eng.reset(1, "s1")
    got = []
    now = 0
    for end in sorted(set(rng.integers(0, steps + 1, cuts).tolist()) | {steps}):
        m = (t >= now) & (t < end)
        got.append(eng.advance(1, t[m], ch[m], end))
        now = end
    assert np.array_equal(np.concatenate([d.t for d in got]), want_t)
    assert np.array_equal(np.concatenate([d.lz for d in got]), want_lz)
    assert np.array_equal(np.concatenate([d.spikes for d in got]), want_spikes)
    assert eng.now[1] == steps and eng.now[0] == 0 and eng.now[2] == 0


def test_features_and_reset():
    n = firing_net("meta", 16, 32, 4, 0)
    rng = np.random.default_rng(0)
    t, ch = events(rng, 300, 16, 0.2, False)
    eng = Engine(n, 100, 50, ("lzc", "rate"), streams=2)
    d = eng.advance(0, t, ch, 300)
    assert d.t.tolist() == [100, 150, 200, 250, 300]
    assert d.features.shape == (5, 8) and d.features.dtype == np.float32
    assert np.allclose(d.features[:, :4], d.lz * np.log2(100) / 100)
    assert np.allclose(d.features[:, 4:], d.spikes / 100)
    assert d.ops > 0 and d.spikes.min() > 0
    eng.reset(0)
    again = eng.advance(0, t, ch, 300)
    assert np.array_equal(again.lz, d.lz) and np.array_equal(again.features, d.features)


@pytest.mark.parametrize("t, ch, end, message", [
    ([5, 3], [0, 0], 10, "sorted"),
    ([12], [0], 10, "sorted"),
    ([1], [16], 10, "channels in"),
    ([1], [-1], 10, "channels in"),
])
def test_bad_events_are_refused(t, ch, end, message):
    eng = Engine(example_net("lif", 16, 8, 2, 0), 8, 4)
    with pytest.raises(ValueError, match=message):
        eng.advance(0, np.array(t), np.array(ch), end)
    assert eng.now[0] == 0


def test_escape_noise_differs_between_streams_and_repeats_within_one():
    n = firing_net("meta-esc", 6, 12, 3, 0)
    t, ch = events(np.random.default_rng(1), 400, 6, 0.3, False)
    eng = Engine(n, 100, 50, ("lzc", "rate"), streams=3)
    for slot, stream in enumerate(("a", "b", "a")):
        eng.reset(slot, stream)
    a, b, again = (eng.advance(slot, t, ch, 400) for slot in range(3))
    assert np.array_equal(a.spikes, again.spikes) and np.array_equal(a.lz, again.lz)
    assert not np.array_equal(a.spikes, b.spikes)


def test_kernel_cache_is_keyed_by_every_kernel_source(tmp_path):
    """A change to any kernel module's source (not only the calling kernel's own file)
    moves the Numba cache to a fresh directory; other modules leave it where it is."""
    import shutil
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    for pkg in ("edged", "trainer"):
        shutil.copytree(root / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__", "bench"))

    def cache_dir() -> str:
        env = dict(os.environ, PYTHONPATH=str(tmp_path), NUMBA_CACHE_DIR=str(tmp_path / "cache"))
        return subprocess.run([sys.executable, "-c", "from edged.jit import cache_dir; print(cache_dir())"],
                              env=env, cwd=tmp_path, capture_output=True, text=True, check=True).stdout.strip()

    first = cache_dir()
    assert first.startswith(str(tmp_path / "cache" / "kernels-"))
    with open(tmp_path / "edged" / "cli.py", "a") as f:
        f.write("\n# no kernels here\n")
    assert cache_dir() == first
    with open(tmp_path / "edged" / "lzc.py", "a") as f:
        f.write("\n# a kernel module changed\n")
    assert cache_dir() != first


def test_bound_kernels_load_from_the_cache_in_a_new_process(tmp_path):
    """The batch frame scan and the decision packer (``jit.bound``) compile once: a second
    process takes them from the cache (a kernel among the arguments made every process
    compile again, and sometimes fail to save)."""
    import subprocess
    import sys

    code = ("import numpy as np\n"
            "from edged.protocol import Limits, decode_frames, encode_frame\n"
            "from edged.service import scan_frames\n"
            "from edged.publisher import pack_decisions\n"
            "from edged import protocol\n"
            "buf = encode_frame('a', 1, np.arange(5), np.arange(5) % 3, 9)\n"
            "assert decode_frames([buf, buf], Limits(8), scan_frames)[1].until == 9\n"
            "layout = protocol.decision_layout(1, ['x', 'y'], 2, 'm')\n"
            "protocol.pack_decisions_with(pack_decisions, layout, ['a'], [0], np.array([4]), np.array([1]),"
            " np.zeros((1, 2), np.float32), np.zeros((1, 2), np.float32), [0.0], [0.0], 0.0)\n"
            "print(sum(scan_frames.kernel.stats.cache_hits.values()),"
            " sum(pack_decisions.kernel.stats.cache_hits.values()))\n")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))

    def hits() -> str:
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                              check=True, timeout=300).stdout.split()

    assert hits() == ["0", "0"]
    assert hits() == ["1", "1"]


def test_old_kernel_caches_are_pruned(tmp_path):
    """Old build directories beyond the newest ``KEEP`` are deleted once a day old; this
    build's, recent ones and anything not named ``kernels-*`` stay."""
    from edged import jit

    now = 10 * jit.KEEP_S
    current = tmp_path / "kernels-current"
    current.mkdir()
    os.utime(current, (0, 0))  # this build's own: kept however old
    ages = [0.5, 2, 3, 4, 5, 6]  # in days, newest first
    for i, days in enumerate(ages):
        d = tmp_path / f"kernels-old{i}"
        (d / "sub").mkdir(parents=True)
        os.utime(d, (now - days * 86400, now - days * 86400))
    (tmp_path / "notes").mkdir()
    gone = jit.prune(str(current), now)
    assert sorted(Path(g).name for g in gone) == [f"kernels-old{i}" for i in range(jit.KEEP, len(ages))]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["kernels-current", *[f"kernels-old{i}" for i in range(jit.KEEP)], "notes"]
    # a recent directory beyond KEEP survives: another build may be compiling into it
    for i in range(jit.KEEP + 1):
        os.utime(tmp_path / f"kernels-old{i}" if i < jit.KEEP else current, (now, now))
    (tmp_path / "kernels-new").mkdir()
    os.utime(tmp_path / "kernels-new", (now - 100, now - 100))
    assert jit.prune(str(current), now) == []


def test_borrowed_arrays_share_memory_and_count_no_references():
    """``jit.borrow``: arrays (nested in tuples too) keep their data and shape, writes
    reach the owner, and views and calls in a loop leave no reference or allocation behind."""
    import sys

    from numba.core.runtime import _nrt_python, rtsys

    from edged.jit import borrow, kernel

    @kernel
    def fill(x, k):
        (a, (b, c)) = borrow((x[0], (x[1][0], k)))
        for i in range(a.shape[0]):
            row = a[i]  # a view of a borrowed array
            row[:] = i + c
        b[:] = a.sum()
        return a.shape[0] * a.shape[1]

    a, b = np.zeros((3, 4)), np.zeros(2)
    fill((a, (b,)), 1)  # compile
    _nrt_python.memsys_enable_stats()
    try:
        refs, allocs = (sys.getrefcount(a), sys.getrefcount(b)), rtsys.get_allocation_stats()
        for _ in range(100):
            assert fill((a, (b,)), 2) == 12
        after = rtsys.get_allocation_stats()
    finally:
        _nrt_python.memsys_disable_stats()
    assert np.array_equal(a, np.repeat([[2.0], [3.0], [4.0]], 4, axis=1)) and np.all(b == 36.0)
    assert (sys.getrefcount(a), sys.getrefcount(b)) == refs
    assert after.alloc - allocs.alloc == after.free - allocs.free
    assert after.mi_alloc - allocs.mi_alloc == after.mi_free - allocs.mi_free


def test_kernels_prefer_512_bit_vectors_where_the_host_has_them_unless_numba_is_told():
    """``wide_features`` drops LLVM's 256-bit preference only on AVX-512BW hosts; a new
    process takes it, or the features ``$NUMBA_CPU_FEATURES`` names."""
    import subprocess
    import sys

    from edged.jit import wide_features

    assert wide_features("+avx2,+avx512f,+avx512bw") == "+avx2,+avx512f,+avx512bw,-prefer-256-bit"
    assert wide_features("+avx2,+avx512f,-avx512bw") is None
    assert wide_features("+neon") is None
    code = "import edged.jit, numba; print(numba.config.CPU_FEATURES)"

    def features(**env) -> str:
        env = {k: v for k, v in os.environ.items() if k != "NUMBA_CPU_FEATURES"} | env
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                              check=True, timeout=120).stdout.strip()

    import llvmlite.binding as llvm
    assert features() == str(wide_features(llvm.get_host_cpu_features().flatten()))
    assert features(NUMBA_CPU_FEATURES="+avx2") == "+avx2"
