"""``edged-train experiment descent``: does gradient descent on the intrinsics descend?

The paper's guarantee: on an ``L``-smooth loss, a gradient step of size ``eta < 1/L``
satisfies the sufficient-decrease condition ``L(theta+) <= L(theta) - (eta/2) |g|^2``.
Spiking losses are piecewise constant in the intrinsics, so the check needs a smoothed
loss: the escape-noise meta-neuron (``meta-esc``, ``edged.neurons``) with its noise seeds
fixed, averaged over ``noise_keys`` draws per sample (common random numbers: the same
draws at every ``theta``), which estimates the expected loss, a smooth function.

Per seed: a ``meta-esc`` net warmed up by ``warmup_epochs`` of BPTT on fresh samples,
then weights frozen. At that point ``theta0`` (the raw intrinsics of both layers,
``trainer.params``):

- ``L_hat``: the largest second difference ``|L(theta + h d) - 2 L(theta) + L(theta - h d)|
  / h^2`` over ``directions`` random unit directions ``d`` and the gradient's direction;
- ``grad_cosine``: the cosine between the surrogate gradient ``g`` (``trainer.bptt``,
  straight-through of the spike probability) and the finite-difference gradient, both
  projected on ``directions`` random unit directions (central differences, step ``h``);
  ``grad_cosine_deterministic`` the same for the deterministic meta-neuron at the same
  weights and intrinsics (SuperSpike surrogate against a piecewise-constant loss);
- for each regime, ``eta = factor / L_hat`` with factor 0.5 (``"small"``, below ``1/L_hat``)
  and 3 (``"large"``, above ``2/L_hat``): ``steps`` intrinsic-only steps ``theta+ = theta -
  eta g`` from ``theta0``, and ``fraction_satisfied``, the fraction that met the condition;
- the control (``gradient: "finite-difference"``, regimes in ``controls``): the same steps
  along the central-difference gradient projected on ``directions`` fresh orthonormal
  directions per step, ``g = Q Q^T grad L``. The guarantee holds for it as for the full
  gradient (``grad L . g = |g|^2``), so it separates "the loss is not smooth enough at
  this scale" (the control fails too) from "the surrogate is not its gradient".

The loss is the training objective (spike-count cross-entropy, ``trainer.bptt``), its
mean over the ``n_samples x noise_keys`` runs.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from trainer import bptt, data
from trainer import params as P

DESCENT = {"task": "poisson-structure", "task_params": {"depth": 0.6, "jitter": 0.1, "shared": 1.0},
           "neuron": "meta-esc", "hidden": 32, "n_warmup": 200, "warmup_epochs": 3, "lr": 0.01,
           "n_samples": 32, "noise_keys": 8, "directions": 16, "h": 0.05, "steps": 12,
           "regimes": {"small": 0.5, "large": 3.0}, "controls": {"small": 0.5}, "seeds": 3}
DESCENT_QUICK = DESCENT | {"task_params": DESCENT["task_params"] | {"T": 128}, "hidden": 8,
                           "n_warmup": 16, "warmup_epochs": 1, "n_samples": 4, "noise_keys": 2,
                           "directions": 3, "steps": 2, "seeds": 1}


class Objective:
    """Loss and surrogate gradient over the raw intrinsics of a frozen net (module maths)."""

    def __init__(self, kind: str, raw: dict, x: np.ndarray, y: np.ndarray, keys: int, seed: int):
        self.kind, self.raw, self.seed = kind, raw, seed
        self.names = sorted(k for k in raw if "." in k and k.split(".", 1)[1] in P.INTRINSICS[kind])
        self.x = np.concatenate([x] * keys)
        self.y = np.concatenate([y] * keys)
        self.keys = np.concatenate([(np.uint64(k + 1) << np.uint64(40)) + np.arange(len(y), dtype=np.uint64)
                                    for k in range(keys)])
        self.n_classes = int(y.max()) + 1

    def theta(self) -> np.ndarray:
        return np.concatenate([self.raw[k] for k in self.names])

    def _with(self, theta: np.ndarray) -> dict:
        raw, at = dict(self.raw), 0
        for k in self.names:
            raw[k] = theta[at:at + raw[k].size]
            at += raw[k].size
        return raw

    def _grad(self, theta: np.ndarray, scale: float) -> bptt.Grad:
        return bptt.gradient(self.kind, self._with(theta), self.x, self.y, keys=self.keys,
                             seed=self.seed, scale=scale, n_classes=self.n_classes)

    def loss(self, theta: np.ndarray) -> float:
        return float(self._grad(theta, 0.0).loss.mean())

    def gradient(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        g = self._grad(theta, 0.3)
        return float(g.loss.mean()), np.concatenate([g.raw[k] for k in self.names]) / len(self.y)


def unit_directions(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    d = rng.normal(size=(n, dim))
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def orthonormal_directions(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random orthonormal rows (``n <= dim``)."""
    q, _ = np.linalg.qr(rng.normal(size=(dim, n)))
    return q.T


def fd_derivatives(f: Objective, theta: np.ndarray, dirs: np.ndarray, h: float) -> np.ndarray:
    """Central-difference directional derivatives of the loss along each row of ``dirs``."""
    return np.array([(f.loss(theta + h * d) - f.loss(theta - h * d)) / (2 * h) for d in dirs])


def smoothness(f: Objective, theta: np.ndarray, g: np.ndarray, dirs: np.ndarray, h: float,
               l0: float) -> tuple[float, list[float]]:
    """``L_hat`` and the second differences it is the largest of (gradient direction first)."""
    along = [g / np.linalg.norm(g)] if np.linalg.norm(g) > 0 else []
    curv = [abs(f.loss(theta + h * d) - 2 * l0 + f.loss(theta - h * d)) / h ** 2
            for d in [*along, *dirs]]
    return max(curv), curv


def fd_cosine(f: Objective, theta: np.ndarray, g: np.ndarray, dirs: np.ndarray, h: float) -> float:
    """Cosine of ``g`` and the central-difference gradient, projected on ``dirs``."""
    fd = fd_derivatives(f, theta, dirs, h)
    sg = dirs @ g
    den = np.linalg.norm(fd) * np.linalg.norm(sg)
    return float(fd @ sg / den) if den > 0 else 0.0


def descend(f: Objective, theta: np.ndarray, eta: float, steps: int,
            gradient: Callable[[np.ndarray], tuple[float, np.ndarray]] | None = None) -> list[dict]:
    """``steps`` steps along ``gradient`` (``(loss, g)`` at theta; default the surrogate's),
    each with its losses, ``|g|^2`` and whether it met the condition."""
    gradient = gradient or f.gradient
    out = []
    for _ in range(steps):
        l0, g = gradient(theta)
        nxt = theta - eta * g
        l1 = f.loss(nxt)
        out.append({"loss": l0, "loss_after": l1, "grad_sq": float(g @ g),
                    "satisfied": bool(l1 <= l0 - eta / 2 * float(g @ g))})
        theta = nxt
    return out


def run(out: str, quick: bool = False, log: Callable[[str], None] | None = None,
        resume: bool = False) -> dict:
    """The experiment of the module docstring; one resumable row per (seed, regime)."""
    from trainer.experiment import Runner

    p = DESCENT_QUICK if quick else DESCENT
    log = log or (lambda m: None)
    rn = Runner(out, p | {"quick": quick}, lambda r: True, resume, log)
    def done(seed: int, regime: str, gradient: str) -> dict | None:
        return next((r for r in rn.doc["rows"] if r["seed"] == seed and r["eta_regime"] == regime
                     and r.get("gradient", "surrogate") == gradient), None)

    for seed in range(p["seeds"]):
        todo = [(r, "surrogate") for r in p["regimes"] if not done(seed, r, "surrogate")]
        todo += [(r, "finite-difference") for r in p.get("controls", {}) if not done(seed, r, "finite-difference")]
        if not todo:
            continue
        warm = data.make(p["task"], p["n_warmup"], seed, "train", **p["task_params"])
        batch = data.make(p["task"], p["n_samples"], seed, "validation", **p["task_params"])
        T, n_in = warm.x.shape[1:]
        raw = P.init(p["neuron"], n_in, p["hidden"], len(warm.classes), seed,
                     input_rate=float(warm.x.mean()))
        raw, _ = bptt.train(p["neuron"], raw, warm.x, warm.y, True,
                            bptt.Config(epochs=p["warmup_epochs"], lr=p["lr"], lr_intrinsics=p["lr"]), seed)
        f = Objective(p["neuron"], raw, batch.x, batch.y, p["noise_keys"], seed)
        theta0 = f.theta()
        rng = np.random.default_rng([seed, 0xDE5])
        if all(g == "finite-difference" for _, g in todo):  # the surrogate rows hold L_hat
            L_hat = done(seed, next(iter(p["regimes"])), "surrogate")["L_hat"]
            _control(rn, p, f, theta0, L_hat, seed, log)
            continue
        l0, g0 = f.gradient(theta0)
        L_hat, curv = smoothness(f, theta0, g0, unit_directions(p["directions"], theta0.size, rng), p["h"], l0)
        cos = fd_cosine(f, theta0, g0, unit_directions(p["directions"], theta0.size, rng), p["h"])
        det_raw = {k: v for k, v in raw.items() if k.split(".")[-1] not in ("delta_u", "rho0")}
        d = Objective("meta", det_raw, batch.x, batch.y, 1, seed)
        cos_det = fd_cosine(d, d.theta(), d.gradient(d.theta())[1],
                            unit_directions(p["directions"], d.theta().size, rng), p["h"])
        log(f"seed {seed}: loss {l0:.4f} |g| {np.linalg.norm(g0):.3g} L_hat {L_hat:.3g} "
            f"grad cosine {cos:.3f} (deterministic meta {cos_det:.3f}) ({rn.elapsed()})")
        for regime, factor in p["regimes"].items():
            eta = factor / L_hat
            steps = descend(f, theta0, eta, p["steps"])
            frac = float(np.mean([s["satisfied"] for s in steps]))
            log(f"seed {seed} {regime}: eta {eta:.3g}, {frac:.2f} of steps satisfied, loss "
                f"{steps[0]['loss']:.4f} -> {steps[-1]['loss_after']:.4f} ({rn.elapsed()})")
            rn.add("rows", {"seed": seed, "eta_regime": regime, "eta": eta, "eta_times_L_hat": factor,
                            "L_hat": L_hat, "second_differences": curv, "grad_cosine": cos,
                            "grad_cosine_deterministic": cos_det, "fraction_satisfied": frac,
                            "gradient": "surrogate", "steps": steps})
        _control(rn, p, f, theta0, L_hat, seed, log)
    return rn.doc


def _control(rn, p: dict, f: Objective, theta0: np.ndarray, L_hat: float, seed: int,
             log: Callable[[str], None]) -> None:
    """The finite-difference control rows of ``seed`` (module docstring)."""
    rng = np.random.default_rng([seed, 0xFD])

    def projected(theta: np.ndarray) -> tuple[float, np.ndarray]:
        q = orthonormal_directions(p["directions"], theta.size, rng)
        return f.loss(theta), q.T @ fd_derivatives(f, theta, q, p["h"])

    for regime, factor in p.get("controls", {}).items():
        eta = factor / L_hat
        steps = descend(f, theta0, eta, p["steps"], projected)
        frac = float(np.mean([s["satisfied"] for s in steps]))
        log(f"seed {seed} {regime} (finite-difference control): {frac:.2f} of steps satisfied, loss "
            f"{steps[0]['loss']:.4f} -> {steps[-1]['loss_after']:.4f} ({rn.elapsed()})")
        rn.add("rows", {"seed": seed, "eta_regime": regime, "eta": eta, "eta_times_L_hat": factor,
                        "L_hat": L_hat, "fraction_satisfied": frac, "gradient": "finite-difference",
                        "steps": steps})


def markdown(doc: dict) -> str:
    rows = doc["rows"]
    lines = ["| regime | eta x L_hat | gradient | seeds | fraction satisfied | loss decreased | loss first -> last | "
             "grad cosine (meta-esc) | grad cosine (deterministic meta) |", "|---|---|---|---|---|---|---|---|---|"]
    for gradient in ("surrogate", "finite-difference"):
        for regime in doc["protocol"]["regimes"]:
            rs = [r for r in rows if r["eta_regime"] == regime and r.get("gradient", "surrogate") == gradient]
            if not rs:
                continue
            frac = np.mean([r["fraction_satisfied"] for r in rs])
            down = np.mean([s["loss_after"] < s["loss"] for r in rs for s in r["steps"]])
            first = np.mean([r["steps"][0]["loss"] for r in rs])
            last = np.mean([r["steps"][-1]["loss_after"] for r in rs])
            cos = [r["grad_cosine"] for r in rs if "grad_cosine" in r]
            det = [r["grad_cosine_deterministic"] for r in rs if "grad_cosine" in r]
            cosines = (f"{np.mean(cos):.2f} (min {min(cos):.2f}) | {np.mean(det):.2f} (min {min(det):.2f})"
                       if cos else "– | –")
            lines.append(f"| {regime} | {rs[0]['eta_times_L_hat']:g} | {gradient} | {len(rs)} | {frac:.2f} | {down:.2f} | "
                         f"{first:.4f} -> {last:.4f} | {cosines} |")
    return "\n".join(lines)
