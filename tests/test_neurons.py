"""Neuron kernels: hand-checked golden sequences and properties against the NumPy step."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from edged import neurons
from edged.bits import LANES
from edged.bench.kernels import numpy_step
from edged.intrinsics import INTRINSICS

from conftest import firing_net

DT = 1e-3
HALF = DT / math.log(2)  # a time constant giving a decay factor of exactly 0.5 per step


def one_neuron_net(kind: str, w_in: float, w_out: float, **extra) -> neurons.Net:
    lif = {"tau": [HALF], "theta": [1.0], "v_reset": [0.0], "R": [1.0]}
    meta = {"tau": [HALF], "theta": [1.0], "v_reset": [0.0], "R": [1.0], "beta": [0.0],
            "tau_a": [HALF], "kappa": [0.0], "tau_r": [HALF]}
    p = {k: np.array(v) for k, v in (lif if kind == "lif" else meta).items()}
    p.update({k: np.array([v]) for k, v in extra.items()})
    return neurons.net(kind, [[w_in]], [[w_out]], p, p, DT)


def run(n: neurons.Net, steps: int, active: set[int]) -> tuple[list[int], list[float]]:
    st_ = neurons.zero_state(n, 1)
    out = np.zeros(1, np.uint8)
    spikes, volts = [], []
    for t in range(steps):
        neurons.step(n, st_, 0, np.uint64(0), t, np.array([0] if t in active else [], np.int64), out)
        spikes.append(int(out[0]))
        volts.append(float(st_.hidden.v[0, 0]))
    return spikes, volts


@pytest.mark.parametrize("kind", ["lif", "meta"])
def test_golden_lif_sequence(kind):
    # alpha = 0.5, input 1.5 each step: v = 0.75, 1.125 -> spike, reset 0, 0.75, 1.125 ...
    # a hidden spike drives the output with I = 2: v = 0.5*0 + 0.5*2 = 1 >= 1, same step.
    spikes, volts = run(one_neuron_net(kind, 1.5, 2.0), 6, set(range(6)))
    assert spikes == [0, 1, 0, 1, 0, 1]
    assert volts == pytest.approx([0.75, 0.0, 0.75, 0.0, 0.75, 0.0], abs=1e-6)


def test_golden_threshold_adaptation():
    # beta = 0.5, alpha_a = 0.5: after the spike at step 1, a = 1 and theta = 1.5, so
    # v = 0.75, 1.125 (< 1.5, no spike), then a = 0.5, theta = 1.25: v = 1.3125 -> spike.
    n = one_neuron_net("meta", 1.5, 2.0, beta=0.5)
    spikes, volts = run(n, 5, set(range(5)))
    assert volts == pytest.approx([0.75, 0.0, 0.75, 1.125, 0.0], abs=1e-6)
    assert spikes[:2] == [0, 1]


def test_golden_activity_dependent_tau():
    # kappa shortens tau with the input trace r: r1 = 0.5*0 + 0.5*|1.0| = 0.5,
    # alpha1 = 0.5 * exp(-dt*kappa/tau * r1), v1 = alpha1*0 + (1 - alpha1)*1.0 (< theta).
    kappa = 2.0
    n = one_neuron_net("meta", 1.0, 0.0, kappa=kappa)
    _, volts = run(n, 2, {0})
    alpha1 = 0.5 * math.exp(-DT * kappa / HALF * 0.5)
    v1 = (1 - alpha1) * 1.0
    alpha2 = 0.5 * math.exp(-DT * kappa / HALF * 0.25)  # r2 = 0.5 * r1, no input
    assert volts == pytest.approx([v1, alpha2 * v1], rel=1e-6)


def test_exp_nonpos_accuracy():
    x = -np.geomspace(1e-8, 86, 10_000).astype(np.float32)
    out = np.empty_like(x)
    neurons.exp_nonpos(x, out)
    assert np.max(np.abs(out / np.exp(x.astype(np.float64)) - 1)) < 1e-7


def random_net(data, kind: str, reset: str) -> neurons.Net:
    n_in, n_h, n_o = (data.draw(st.integers(1, k)) for k in (12, 24, 5))
    return firing_net(kind, n_in, n_h, n_o, data.draw(st.integers(0, 2**32 - 1)), reset)


@settings(max_examples=100, deadline=None)
@given(n_pre=st.integers(1, 130), n_post=st.integers(1, 9), seed=st.integers(0, 2**32 - 1),
       density=st.sampled_from([0.0, 0.05, 0.3, 1.0]))
def test_spike_current_adds_the_rows_of_the_spiking_neurons_in_order(n_pre, n_post, seed, density):
    """Exactly (float32, same order) the sum a loop over the neurons would give, whatever
    the layer size against the kernel's 32-neuron masks."""
    rng = np.random.default_rng(seed)
    width = -(-n_post // LANES) * LANES  # (rows padded as in Net.w_out_lanes)
    w = np.zeros((n_pre, width), np.float32)
    w[:, :n_post] = rng.normal(size=(n_pre, n_post))
    spikes = (rng.random(n_pre) < density).astype(np.uint8)
    current = np.full(width, np.nan, np.float32)
    expected = np.zeros(width, np.float32)
    for j in np.flatnonzero(spikes):
        expected += w[j]
    assert neurons.spike_current(w, spikes, current) == spikes.sum()
    np.testing.assert_array_equal(current, expected)


@pytest.mark.parametrize("rows, width", [(6, 6), (8, 16), (16, 8)])
def test_spike_current_refuses_rows_or_a_current_it_would_add_past(rows, width):
    """Whole-vector adds need rows and current as wide, a multiple of ``LANES``: anything
    else is refused before a write (unpadded rows once wrote past a 6-wide current)."""
    w = np.ones((4, rows), np.float32)
    current = np.zeros(width, np.float32)
    with pytest.raises(ValueError, match="multiple of LANES"):
        neurons.spike_current(w, np.ones(4, np.uint8), current)
    assert not current.any()


def test_the_output_weights_are_padded_to_whole_vectors():
    """``Net.w_out_lanes``: ``w_out`` with zero columns up to a multiple of ``LANES``."""
    for n_out in (1, 6, 8, 9):
        n = firing_net("meta", 2, 3, n_out, seed=n_out)
        assert n.w_out_lanes.shape == (3, -(-n_out // LANES) * LANES)
        np.testing.assert_array_equal(n.w_out_lanes[:, :n_out], n.w_out)
        assert not n.w_out_lanes[:, n_out:].any()


@settings(max_examples=60, deadline=None)
@given(data=st.data(), kind=st.sampled_from(["lif", "meta"]), reset=st.sampled_from(["value", "subtract"]))
def test_step_matches_numpy_reference(data, kind, reset):
    n = random_net(data, kind, reset)
    n_in = n.w_in.shape[0]
    mine, ref = neurons.zero_state(n, 2), neurons.zero_state(n, 2)
    out = np.zeros(n.w_out.shape[1], np.uint8)
    steps = data.draw(st.lists(st.lists(st.integers(0, n_in - 1), max_size=6), min_size=1, max_size=40))
    for i, channels in enumerate(steps):
        ch = np.array(channels, np.int64)
        neurons.step(n, mine, 1, np.uint64(0), i, ch, out)
        expected = numpy_step(n, ref, 1, ch)
        for layer_m, layer_r, c in ((mine.hidden, ref.hidden, n.hidden), (mine.out, ref.out, n.out)):
            assert np.all(np.isfinite(layer_m.v)) and np.all(np.isfinite(layer_m.a))
            if not np.allclose(layer_m.v[1], layer_r.v[1], rtol=1e-4, atol=1e-5):
                return  # a threshold tie decided differently by float rounding: stop comparing
        assert np.array_equal(out.astype(bool), expected)
        assert np.allclose(mine.hidden.a, ref.hidden.a, rtol=1e-4, atol=1e-5)
        assert np.all(mine.hidden.v[0] == 0) and np.all(mine.out.v[0] == 0)  # other stream untouched
        if reset == "value":  # reset after spike
            assert np.all(mine.out.v[1][out.astype(bool)] == n.out.v_reset[out.astype(bool)])


@settings(max_examples=60, deadline=None)
@given(data=st.data(), kind=st.sampled_from(["lif", "meta"]), reset=st.sampled_from(["value", "subtract"]))
def test_closed_form_skip_equals_stepping(data, kind, reset):
    n = random_net(data, kind, reset)
    n_in, n_out = n.w_in.shape[0], n.w_out.shape[1]
    warm = np.array(data.draw(st.lists(st.integers(0, n_in - 1), min_size=1, max_size=30)), np.int64)
    gap = data.draw(st.integers(1, 300))
    t = np.concatenate([np.sort(np.random.default_rng(0).integers(0, 10, warm.size)), [10 + gap]])
    ch = np.concatenate([warm, [0]])
    skipped, stepped = neurons.zero_state(n, 1), neurons.zero_state(n, 1)
    out_skip = np.zeros((11 + gap, n_out), np.uint8)
    neurons.simulate(n, skipped, 0, np.uint64(0), t, ch, 0, out_skip)
    out_step = np.zeros_like(out_skip)
    for now in range(11 + gap):
        neurons.step(n, stepped, 0, np.uint64(0), now, ch[t == now], out_step[now])
    assert np.array_equal(out_skip, out_step)
    for a, b in zip(skipped, stepped):
        for x, y in zip(a, b):
            assert np.allclose(x, y, rtol=1e-4, atol=1e-6)


def test_lif_is_quiet_after_every_step():
    n = one_neuron_net("lif", 5.0, 5.0)
    st_ = neurons.zero_state(n, 1)
    out = np.zeros(1, np.uint8)
    for i in range(5):
        neurons.step(n, st_, 0, np.uint64(0), i, np.array([0], np.int64), out)
        assert neurons.is_quiet(n, st_, 0)


def test_invalid_intrinsics_are_named():
    p = {"tau": np.array([0.02, -1.0]), "theta": np.ones(2), "v_reset": np.zeros(2), "R": np.ones(2)}
    with pytest.raises(ValueError, match=r"tau\[1\]"):
        neurons.layer("lif", p, DT)
    p["tau"] = np.array([0.02, 0.02])
    p["v_reset"] = np.array([0.0, 2.0])
    with pytest.raises(ValueError, match=r"v_reset\[1\]"):
        neurons.layer("lif", p, DT)


def escape_layer(n: int, delta_u: float, rho0: float, **values) -> dict[str, np.ndarray]:
    p = {"tau": 0.02, "theta": 1.0, "v_reset": 0.0, "R": 1.0, "beta": 0.0, "tau_a": 0.1,
         "kappa": 0.0, "tau_r": 0.01, "delta_u": delta_u, "rho0": rho0} | values
    return {k: np.full(n, v, np.float64) for k, v in p.items()}


def test_escape_noise_fires_at_its_hazard_rate():
    """No input, v = 0: each step fires with p = 1 - exp(-dt rho0 exp(-theta / delta_u))."""
    p = escape_layer(1, 0.5, 500.0)
    n = neurons.net("meta-esc", [[0.0]], [[0.0]], p, p, DT, seed=11)
    out = np.zeros((20000, 1), np.uint8)
    none = np.zeros(0, np.int64)
    neurons.simulate(n, neurons.zero_state(n, 1), 0, np.uint64(5), none, none, 0, out)
    q = 1 - np.exp(-DT * 500.0 * np.exp(-1.0 / 0.5))
    assert abs(out.sum() - out.size * q) < 5 * np.sqrt(out.size * q * (1 - q))


@settings(max_examples=20, deadline=None)
@given(data=st.data(), reset=st.sampled_from(["value", "subtract"]))
def test_escape_noise_width_to_zero_is_the_deterministic_kernel(data, reset):
    det = random_net(data, "meta", reset)
    n_in, n_h, n_o = det.w_in.shape[0], det.w_in.shape[1], det.w_out.shape[1]
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    hidden, out = (dict(escape_layer(k, 1e-12, 500.0), tau=rng.uniform(0.01, 0.05, k),
                        theta=rng.uniform(0.5, 1.5, k), beta=rng.uniform(0, 0.5, k),
                        kappa=rng.uniform(0, 1, k)) for k in (n_h, n_o))
    nets = [neurons.net(kind, det.w_in, det.w_out, {k: hidden[k] for k in names},
                        {k: out[k] for k in names}, DT, reset)
            for kind, names in (("meta", INTRINSICS["meta"]), ("meta-esc", INTRINSICS["meta-esc"]))]
    assert not nets[0].noisy and nets[1].noisy
    t = np.sort(rng.integers(0, 300, 200))
    ch = rng.integers(0, n_in, 200)
    outs = []
    for n in nets:
        outs.append(np.zeros((300, n_o), np.uint8))
        neurons.simulate(n, neurons.zero_state(n, 1), 0, np.uint64(3), t, ch, 0, outs[-1])
    assert np.array_equal(*outs)
