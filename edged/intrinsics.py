"""Names and valid ranges of the neurons' intrinsic parameters (maths: ``edged.neurons``).

Valid: time constants in ``(0, 1e3]`` s, threshold ``> 0``, ``v_reset <`` threshold,
``R > 0``, and for the meta-neuron ``beta >= 0``, ``kappa >= 0``. Kept free of Numba so
model files can be checked without compiling anything.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

NeuronKind = Literal["lif", "meta"]

LIF_INTRINSICS = ("tau", "theta", "v_reset", "R")
META_INTRINSICS = ("tau0", "theta0", "v_reset", "R", "beta", "tau_a", "kappa", "tau_r")
INTRINSICS: dict[str, tuple[str, ...]] = {"lif": LIF_INTRINSICS, "meta": META_INTRINSICS}
TIME_CONSTANTS = ("tau", "tau0", "tau_a", "tau_r")
MAX_TIME_CONSTANT = 1e3


def check_intrinsics(kind: NeuronKind, p: dict[str, np.ndarray]) -> None:
    """Raise ``ValueError`` naming the first intrinsic outside its valid range."""
    names = INTRINSICS[kind]
    if set(p) != set(names):
        raise ValueError(f"{kind} intrinsics must be {names}, got {tuple(sorted(p))}")
    for name in names:
        x = np.asarray(p[name])
        if not np.all(np.isfinite(x)):
            raise ValueError(f"intrinsic {name} has non-finite values")
    theta = np.asarray(p["theta" if kind == "lif" else "theta0"])
    rules = [(name, (np.asarray(p[name]) > 0) & (np.asarray(p[name]) <= MAX_TIME_CONSTANT),
              f"in (0, {MAX_TIME_CONSTANT:g}] s") for name in names if name in TIME_CONSTANTS]
    rules += [("theta" if kind == "lif" else "theta0", theta > 0, "> 0"),
              ("v_reset", np.asarray(p["v_reset"]) < theta, "< threshold"),
              ("R", np.asarray(p["R"]) > 0, "> 0")]
    if kind == "meta":
        rules += [(n, np.asarray(p[n]) >= 0, ">= 0") for n in ("beta", "kappa")]
    for name, ok, what in rules:
        if not np.all(ok):
            bad = int(np.flatnonzero(~np.broadcast_to(ok, theta.shape))[0])
            raise ValueError(f"intrinsic {name}[{bad}] = {np.asarray(p[name]).flat[bad]!r} must be {what}")


