"""Trainable parameters: unconstrained ``raw`` arrays mapped to valid intrinsics.

A network's parameters are one flat dict of float64 arrays: ``w_in``, ``w_out`` (the
weights themselves) and ``hidden.<name>`` / ``output.<name>`` holding the *raw* value of
each intrinsic (names: ``edged.intrinsics.INTRINSICS``). The maps keep every intrinsic
valid for any raw value, so no optimiser step can produce an invalid model::

    time constant  tau     = 1e3 s * sigmoid(rho)        rho clipped to [-25, 25]
    threshold      theta   = softplus(rho) + 1e-3
    reset          v_reset = theta - softplus(rho) - 1e-3 (always below threshold)
    gain           R       = softplus(rho) + 1e-4
    noise width    delta_u = softplus(rho) + 1e-4
    beta, kappa            = softplus(rho)                (>= 0)
    escape rate    rho0    = exp(rho) Hz                  rho clipped to [-25, log 1e6]

The kernels see per-neuron step coefficients (``edged.neurons.Layer``)::

    alpha0 = exp(-dt/tau), kappa_dt = dt*kappa/tau, gain = R, theta, beta, v_reset,
    alpha_a = exp(-dt/tau_a), alpha_r = exp(-dt/tau_r), delta_u, rho_dt = dt*rho0

(LIF: ``beta = kappa = 0``; LIF and meta: ``delta_u = 0``). ``coeff_grad_to_raw`` chains
a gradient over those coefficients back to the raw values.
"""

from __future__ import annotations

import numpy as np

from edged.intrinsics import INTRINSICS, MAX_RATE, MAX_TIME_CONSTANT, SPEC, NeuronKind, defaults
from edged.neurons import Layer

COEFFS = Layer._fields  # the kernels' step coefficients, in their order
RAW_CLIP = 25.0
RATE_CLIP = float(np.log(MAX_RATE))
THETA_MIN, GAP_MIN, R_MIN = 1e-3, 1e-3, 1e-4


def softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def inv_softplus(y: np.ndarray) -> np.ndarray:
    y = np.maximum(np.asarray(y, np.float64), 1e-8)
    return np.where(y > 30, y, np.log(np.expm1(np.minimum(y, 30))))


def to_raw(kind: NeuronKind, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Raw values of one layer's intrinsics (the inverse of ``from_raw``, up to the clips)."""
    out = {}
    for name in INTRINSICS[kind]:
        x = np.asarray(values[name], np.float64)
        if SPEC[name].valid == "time":
            q = np.clip(x / MAX_TIME_CONSTANT, 1e-12, 1 - 1e-12)
            out[name] = np.clip(np.log(q / (1 - q)), -RAW_CLIP, RAW_CLIP)
        elif name == "theta":
            out[name] = inv_softplus(x - THETA_MIN)
        elif name == "v_reset":
            out[name] = inv_softplus(np.asarray(values["theta"], np.float64) - x - GAP_MIN)
        elif name in ("R", "delta_u"):
            out[name] = inv_softplus(x - R_MIN)
        elif name == "rho0":
            out[name] = np.clip(np.log(x), -RAW_CLIP, RATE_CLIP)
        else:  # beta, kappa
            out[name] = inv_softplus(x)
    return out


def from_raw(kind: NeuronKind, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Valid intrinsics (float64) of one layer from its raw values."""
    out = {}
    for name in INTRINSICS[kind]:
        x = raw[name]
        if SPEC[name].valid == "time":
            out[name] = MAX_TIME_CONSTANT * sigmoid(np.clip(x, -RAW_CLIP, RAW_CLIP))
        elif name == "theta":
            out[name] = softplus(x) + THETA_MIN
        elif name in ("R", "delta_u"):
            out[name] = softplus(x) + R_MIN
        elif name == "rho0":
            out[name] = np.exp(np.clip(x, -RAW_CLIP, RATE_CLIP))
        elif name != "v_reset":
            out[name] = softplus(x)
    out["v_reset"] = out["theta"] - softplus(raw["v_reset"]) - GAP_MIN
    return {name: out[name] for name in INTRINSICS[kind]}


def coeff_grad_to_raw(kind: NeuronKind, raw: dict[str, np.ndarray], g: np.ndarray,
                      dt: float) -> dict[str, np.ndarray]:
    """Gradient over one layer's raw intrinsics from ``g[8, n]``, the gradient over the
    step coefficients in ``COEFFS`` order."""
    p = from_raw(kind, raw)
    gc = dict(zip(COEFFS, g))
    tau, kappa = p["tau"], p.get("kappa", 0.0)
    # gradient over the intrinsic values
    gi = {"theta": gc["theta"] + gc["v_reset"], "v_reset": gc["v_reset"], "R": gc["gain"],
          "tau": gc["alpha0"] * np.exp(-dt / tau) * dt / tau ** 2 - gc["kappa_dt"] * dt * kappa / tau ** 2,
          "kappa": gc["kappa_dt"] * dt / tau, "beta": gc["beta"], "delta_u": gc["delta_u"],
          "rho0": gc["rho_dt"] * dt}
    for name, coeff in (("tau_a", "alpha_a"), ("tau_r", "alpha_r")):
        if name in p:
            gi[name] = gc[coeff] * np.exp(-dt / p[name]) * dt / p[name] ** 2
    # chain through the raw maps; v_reset = theta - softplus(rho_vr) - gap
    out = {}
    for name in INTRINSICS[kind]:
        x = raw[name]
        if SPEC[name].valid == "time":
            inside = np.abs(x) < RAW_CLIP
            out[name] = gi[name] * p[name] * (1 - p[name] / MAX_TIME_CONSTANT) * inside
        elif name == "v_reset":
            out[name] = -gi[name] * sigmoid(x)
        elif name == "rho0":
            out[name] = gi[name] * p[name] * ((x > -RAW_CLIP) & (x < RATE_CLIP))
        else:
            out[name] = gi[name] * sigmoid(x)
    return out


def layer_names(prefix: str, kind: NeuronKind) -> list[str]:
    return [f"{prefix}.{n}" for n in INTRINSICS[kind]]


def init(kind: NeuronKind, n_in: int, n_hidden: int, n_out: int, seed: int,
         input_rate: float = 0.02, hidden_rate: float = 0.02, drive: float = 0.8,
         spread: float = 1.5, centres: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """Raw parameters of a fresh net. Weights are Gaussian with mean ``drive / (fan-in *
    presynaptic spikes per step)`` (the mean input then holds ``v`` near ``drive`` times
    a unit threshold) and standard deviation ``spread`` times that; intrinsics are
    heterogeneous around ``centres`` (``edged.intrinsics.defaults``)."""
    rng = np.random.default_rng([seed, 0x1417])
    m_in = drive / (n_in * input_rate)
    m_out = drive / (n_hidden * hidden_rate)
    raw = {"w_in": rng.normal(m_in, spread * m_in, (n_in, n_hidden)),
           "w_out": rng.normal(m_out, spread * m_out, (n_hidden, n_out))}
    for prefix, n in (("hidden", n_hidden), ("output", n_out)):
        values = defaults(kind, n, rng, centres)
        raw |= {f"{prefix}.{k}": v for k, v in to_raw(kind, values).items()}
    return raw


def intrinsics(kind: NeuronKind, raw: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """Valid float64 intrinsics of layer ``prefix`` ("hidden" or "output")."""
    return from_raw(kind, {n: raw[f"{prefix}.{n}"] for n in INTRINSICS[kind]})


def to_net(kind: NeuronKind, raw: dict[str, np.ndarray], dt: float, reset: str = "value",
           seed: int = 0):
    """The kernels' ``edged.neurons.Net`` for raw parameters (``seed``: escape noise)."""
    from edged import neurons

    return neurons.net(kind, raw["w_in"], raw["w_out"], intrinsics(kind, raw, "hidden"),
                       intrinsics(kind, raw, "output"), dt, reset, seed)
