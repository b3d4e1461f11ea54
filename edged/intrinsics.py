"""The neurons' intrinsic parameters: names, units, valid ranges and untrained defaults.

One table, ``SPECS``, for every neuron kind (maths: ``edged.neurons``). LIF has the
first four; the meta-neuron the first eight; the escape-noise meta-neuron ``meta-esc``
all ten. ``tau`` and ``theta`` are the membrane time constant and threshold at rest
(the meta-neuron's are modulated by ``kappa`` and ``beta``). Potentials are in units
of the default threshold, time constants in seconds, rates in Hz.
Kept free of Numba so model files can be checked without compiling anything.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np

NeuronKind = Literal["lif", "meta", "meta-esc"]
MAX_TIME_CONSTANT = 1e3
MAX_RATE = 1e6


class Intrinsic(NamedTuple):
    """One per-neuron intrinsic parameter."""

    name: str
    unit: str  # "s", "Hz" or "" (potentials: units of the default threshold)
    valid: Literal["time", "rate", "positive", "nonneg", "below_theta"]  # time: (0, 1e3] s, rate: (0, 1e6] Hz
    default: float  # the untrained centre
    init: tuple[float, float] | None  # fresh nets: uniform(init) * centre / default; None: the centre
    off: float  # the value that removes the mechanism (what LIF has)
    meaning: str


SPECS = (
    Intrinsic("tau", "s", "time", 0.02, (0.01, 0.03), 0.02, "membrane time constant at rest"),
    Intrinsic("theta", "", "positive", 1.0, None, 1.0, "firing threshold at rest"),
    Intrinsic("v_reset", "", "below_theta", 0.0, None, 0.0, "potential after a spike"),
    Intrinsic("R", "", "positive", 1.0, None, 1.0, "input gain"),
    Intrinsic("beta", "", "nonneg", 0.2, None, 0.0, "threshold rise per own spike"),
    Intrinsic("tau_a", "s", "time", 0.125, (0.05, 0.2), 1.0, "decay of the own-spike trace"),
    Intrinsic("kappa", "", "nonneg", 0.2, None, 0.0, "time-constant shortening per unit input drive"),
    Intrinsic("tau_r", "s", "time", 0.0125, (0.005, 0.02), 1.0, "decay of the input-drive trace"),
    Intrinsic("delta_u", "", "positive", 0.05, None, 0.0, "escape-noise width (0: deterministic)"),
    Intrinsic("rho0", "Hz", "rate", 500.0, None, 0.0, "escape rate at threshold"),
)
SPEC = {s.name: s for s in SPECS}
INTRINSICS: dict[str, tuple[str, ...]] = {"lif": tuple(s.name for s in SPECS[:4]),
                                          "meta": tuple(s.name for s in SPECS[:8]),
                                          "meta-esc": tuple(s.name for s in SPECS)}
ALIASES = {"tau0": "tau", "theta0": "theta"}  # older meta-neuron model files name them so


def defaults(kind: NeuronKind, n: int, rng: np.random.Generator,
             centres: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """Fresh heterogeneous float64 intrinsics of ``n`` neurons around ``centres``
    (overrides of each ``default``; names outside the kind are errors)."""
    names = INTRINSICS[kind]
    unknown = set(centres or {}) - set(names)
    if unknown:
        raise ValueError(f"unknown {kind} intrinsics {sorted(unknown)}; known: {names}")
    out = {}
    for name in names:
        s, c = SPEC[name], (centres or {}).get(name, SPEC[name].default)
        out[name] = (np.full(n, float(c)) if s.init is None
                     else rng.uniform(*s.init, n) * (c / s.default))
    return out


def check_intrinsics(kind: NeuronKind, p: dict[str, np.ndarray]) -> None:
    """Raise ``ValueError`` naming the first intrinsic outside its valid range."""
    names = INTRINSICS[kind]
    if set(p) != set(names):
        raise ValueError(f"{kind} intrinsics must be {names}, got {tuple(sorted(p))}")
    x = {name: np.asarray(p[name]) for name in names}
    for name in names:
        if not np.all(np.isfinite(x[name])):
            raise ValueError(f"intrinsic {name} has non-finite values")
    for name in names:
        ok, what = {"time": ((x[name] > 0) & (x[name] <= MAX_TIME_CONSTANT),
                             f"in (0, {MAX_TIME_CONSTANT:g}] s"),
                    "rate": ((x[name] > 0) & (x[name] <= MAX_RATE), f"in (0, {MAX_RATE:g}] Hz"),
                    "positive": (x[name] > 0, "> 0"),
                    "nonneg": (x[name] >= 0, ">= 0"),
                    "below_theta": (x[name] < x["theta"], "< theta")}[SPEC[name].valid]
        if not np.all(ok):
            bad = int(np.flatnonzero(~np.broadcast_to(ok, x["theta"].shape))[0])
            raise ValueError(f"intrinsic {name}[{bad}] = {x[name].flat[bad]!r} must be {what}")


def complete(p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every intrinsic of ``SPECS`` (float64), the missing ones at their ``off`` value."""
    n = np.shape(next(iter(p.values())))
    return {s.name: np.asarray(p[s.name], np.float64) if s.name in p else np.full(n, s.off)
            for s in SPECS}
