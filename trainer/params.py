"""Trainable parameters: unconstrained ``raw`` arrays mapped to valid intrinsics.

A network's parameters are one flat dict of float64 arrays: ``w_in``, ``w_out`` (the
weights themselves) and ``hidden.<name>`` / ``output.<name>`` holding the *raw* value of
each intrinsic (names: ``edged.intrinsics.INTRINSICS``). The maps keep every intrinsic
valid for any raw value, so no optimiser step can produce an invalid model::

    time constant  tau     = 1e3 s * sigmoid(rho)        rho clipped to [-25, 25]
    threshold      theta   = softplus(rho) + 1e-3         (``theta`` / ``theta0``)
    reset          v_reset = theta - softplus(rho) - 1e-3 (always below threshold)
    gain           R       = softplus(rho) + 1e-4
    beta, kappa            = softplus(rho)                (>= 0)

The kernels see per-neuron step coefficients (``edged.neurons.Layer``)::

    alpha0 = exp(-dt/tau0), kappa_dt = dt*kappa/tau0, gain = R, theta0, beta, v_reset,
    alpha_a = exp(-dt/tau_a), alpha_r = exp(-dt/tau_r)

(LIF: ``tau0 = tau``, ``theta0 = theta``, ``beta = kappa = 0``). ``coeff_grad_to_raw``
chains a gradient over those coefficients back to the raw values.
"""

from __future__ import annotations

import numpy as np

from edged.intrinsics import INTRINSICS, MAX_TIME_CONSTANT, TIME_CONSTANTS, NeuronKind
from edged.neurons import Layer

COEFFS = Layer._fields  # the kernels' step coefficients, in their order
RAW_CLIP = 25.0
THETA_MIN, GAP_MIN, R_MIN = 1e-3, 1e-3, 1e-4


def softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def inv_softplus(y: np.ndarray) -> np.ndarray:
    y = np.maximum(np.asarray(y, np.float64), 1e-8)
    return np.where(y > 30, y, np.log(np.expm1(np.minimum(y, 30))))


def _threshold_name(kind: NeuronKind) -> str:
    return "theta" if kind == "lif" else "theta0"


def to_raw(kind: NeuronKind, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Raw values of one layer's intrinsics (the inverse of ``from_raw``, up to the clips)."""
    th = _threshold_name(kind)
    out = {}
    for name in INTRINSICS[kind]:
        x = np.asarray(values[name], np.float64)
        if name in TIME_CONSTANTS:
            q = np.clip(x / MAX_TIME_CONSTANT, 1e-12, 1 - 1e-12)
            out[name] = np.clip(np.log(q / (1 - q)), -RAW_CLIP, RAW_CLIP)
        elif name == th:
            out[name] = inv_softplus(x - THETA_MIN)
        elif name == "v_reset":
            out[name] = inv_softplus(np.asarray(values[th], np.float64) - x - GAP_MIN)
        elif name == "R":
            out[name] = inv_softplus(x - R_MIN)
        else:  # beta, kappa
            out[name] = inv_softplus(x)
    return out


def from_raw(kind: NeuronKind, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Valid intrinsics (float64) of one layer from its raw values."""
    th = _threshold_name(kind)
    out = {}
    for name in INTRINSICS[kind]:
        x = raw[name]
        if name in TIME_CONSTANTS:
            out[name] = MAX_TIME_CONSTANT * sigmoid(np.clip(x, -RAW_CLIP, RAW_CLIP))
        elif name == th:
            out[name] = softplus(x) + THETA_MIN
        elif name == "R":
            out[name] = softplus(x) + R_MIN
        elif name != "v_reset":
            out[name] = softplus(x)
    out["v_reset"] = out[th] - softplus(raw["v_reset"]) - GAP_MIN
    return {name: out[name] for name in INTRINSICS[kind]}


def coeff_grad_to_raw(kind: NeuronKind, raw: dict[str, np.ndarray], g: np.ndarray,
                      dt: float) -> dict[str, np.ndarray]:
    """Gradient over one layer's raw intrinsics from ``g[8, n]``, the gradient over the
    step coefficients in ``COEFFS`` order."""
    p = from_raw(kind, raw)
    gc = dict(zip(COEFFS, g))
    th = _threshold_name(kind)
    tau0 = p["tau" if kind == "lif" else "tau0"]
    kappa = p["kappa"] if kind == "meta" else np.zeros_like(tau0)
    alpha0 = np.exp(-dt / tau0)
    # gradient over the intrinsic values
    gi = {th: gc["theta0"] + gc["v_reset"], "v_reset": gc["v_reset"], "R": gc["gain"]}
    gi["tau" if kind == "lif" else "tau0"] = (gc["alpha0"] * alpha0 * dt / tau0 ** 2
                                              - gc["kappa_dt"] * dt * kappa / tau0 ** 2)
    if kind == "meta":
        gi["kappa"] = gc["kappa_dt"] * dt / tau0
        gi["beta"] = gc["beta"]
        for name, coeff in (("tau_a", "alpha_a"), ("tau_r", "alpha_r")):
            gi[name] = gc[coeff] * np.exp(-dt / p[name]) * dt / p[name] ** 2
    # chain through the raw maps; v_reset = theta - softplus(rho_vr) - gap
    out = {}
    for name in INTRINSICS[kind]:
        x = raw[name]
        if name in TIME_CONSTANTS:
            inside = np.abs(x) < RAW_CLIP
            out[name] = gi[name] * p[name] * (1 - p[name] / MAX_TIME_CONSTANT) * inside
        elif name == "v_reset":
            out[name] = -gi[name] * sigmoid(x)
        else:
            out[name] = gi[name] * sigmoid(x)
    return out


def layer_names(prefix: str, kind: NeuronKind) -> list[str]:
    return [f"{prefix}.{n}" for n in INTRINSICS[kind]]


CENTRES = {"tau": 0.02, "theta": 1.0, "beta": 0.2, "tau_a": 0.125}  # the untrained defaults


def init(kind: NeuronKind, n_in: int, n_hidden: int, n_out: int, seed: int,
         input_rate: float = 0.02, hidden_rate: float = 0.02, drive: float = 0.8,
         spread: float = 1.5, centres: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """Raw parameters of a fresh net. Weights are Gaussian with mean ``drive / (fan-in *
    presynaptic spikes per step)`` (the mean input then holds ``v`` near ``drive`` times
    a unit threshold) and standard deviation ``spread`` times that; intrinsics are
    heterogeneous around ``centres`` (``default_intrinsics``)."""
    rng = np.random.default_rng([seed, 0x1417])
    m_in = drive / (n_in * input_rate)
    m_out = drive / (n_hidden * hidden_rate)
    raw = {"w_in": rng.normal(m_in, spread * m_in, (n_in, n_hidden)),
           "w_out": rng.normal(m_out, spread * m_out, (n_hidden, n_out))}
    for prefix, n in (("hidden", n_hidden), ("output", n_out)):
        values = default_intrinsics(kind, n, rng, centres)
        raw |= {f"{prefix}.{k}": v for k, v in to_raw(kind, values).items()}
    return raw


def default_intrinsics(kind: NeuronKind, n: int, rng: np.random.Generator,
                       centres: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """Membrane time constants uniform in ``[0.5, 1.5] x tau``, threshold ``theta``,
    reset 0, gain 1; meta: ``beta``, adaptation time constants uniform in ``[0.4, 1.6] x
    tau_a``, kappa 0.2, tau_r 5-20 ms. ``centres`` overrides ``CENTRES`` (the global
    values the ``fixed-tuned`` condition tunes); unknown names are errors."""
    c = CENTRES | (centres or {})
    if set(c) != set(CENTRES):
        raise ValueError(f"unknown intrinsic centres {sorted(set(c) - set(CENTRES))}")
    tau = rng.uniform(0.01, 0.03, n) * (c["tau"] / CENTRES["tau"])
    theta = np.full(n, c["theta"])
    common = {"v_reset": np.zeros(n), "R": np.ones(n)}
    if kind == "lif":
        return {"tau": tau, "theta": theta} | common
    return {"tau0": tau, "theta0": theta, **common, "beta": np.full(n, c["beta"]),
            "tau_a": rng.uniform(0.05, 0.2, n) * (c["tau_a"] / CENTRES["tau_a"]),
            "kappa": np.full(n, 0.2), "tau_r": rng.uniform(0.005, 0.02, n)}


def intrinsics(kind: NeuronKind, raw: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """Valid float64 intrinsics of layer ``prefix`` ("hidden" or "output")."""
    return from_raw(kind, {n: raw[f"{prefix}.{n}"] for n in INTRINSICS[kind]})


def to_net(kind: NeuronKind, raw: dict[str, np.ndarray], dt: float, reset: str = "value"):
    """The kernels' ``edged.neurons.Net`` for raw parameters."""
    from edged import neurons

    return neurons.net(kind, raw["w_in"], raw["w_out"], intrinsics(kind, raw, "hidden"),
                       intrinsics(kind, raw, "output"), dt, reset)
