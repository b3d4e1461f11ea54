"""The Tempotron rule (Gütig & Sompolinsky 2006) for the output neurons.

Output neuron ``k`` is a tempotron for class ``k % n_classes``: it should fire at least once in a
sample of class ``k`` and stay silent otherwise. The hidden layer keeps its initial
(random) weights and intrinsics. On an error, with ``t_max`` the time of the maximal
pre-reset potential ``u_k`` (a miss) or of the first spike (a false alarm)::

    dp = lr * err * d u_k(t_max) / dp,     err = +1 (miss) or -1 (false alarm)

for the weights into ``k``. ``d u_k(t_max)/dp`` is the exact derivative of the
kernels' forward with the spikes held fixed: ``trainer.bptt.gradient`` with the
surrogate off and a probe on ``u_k(t_max)``, so the rule runs on the same neuron maths.

With ``learned`` intrinsics the same objective (``err * (u_k(t_max) - theta_k)``,
the tempotron's error) also moves each output neuron's threshold (``theta`` /
``theta0``: down after a miss, up after a false alarm) and membrane time constant
(``tau`` / ``tau0``, along ``d u_k(t_max)/d tau``), in raw parameter space.
"""

from __future__ import annotations

import time
from typing import Callable, NamedTuple

import numpy as np

from edged.intrinsics import NeuronKind
from trainer import bptt
from trainer import params as P


class Config(NamedTuple):
    epochs: int = 6
    batch: int = 16
    lr: float = 0.05
    lr_intrinsics: float = 0.02


def train(kind: NeuronKind, raw: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray,
          learn_intrinsics: bool, cfg: Config, seed: int,
          log: Callable[[str], None] | None = None, dt: float = 1e-3,
          on_epoch: bptt.EpochHook | None = None) -> tuple[dict, list[dict]]:
    """Returns the trained raw params and per-epoch errors; ``on_epoch`` as in ``bptt.train``."""
    raw = {k: v.copy() for k, v in raw.items()}
    rng = np.random.default_rng([seed, 0x7E3B])
    th, tau = ("theta", "tau") if kind == "lif" else ("theta0", "tau0")
    n_o = raw["w_out"].shape[1]
    n_classes = int(y.max()) + 1
    no_label = np.full(x.shape[0], -1)
    history = []
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        order = rng.permutation(len(y))
        errors = 0
        for start in range(0, len(y), cfg.batch):
            idx = np.sort(order[start:start + cfg.batch])
            xb, yb = x[idx], y[idx]
            g0 = bptt.gradient(kind, raw, xb, no_label[:len(idx)], dt, scale=0.0, lam=0.0,
                               potentials=True)
            fired = g0.counts > 0
            target = np.arange(n_o)[None, :] % n_classes == yb[:, None]
            err = target.astype(np.int64) - fired  # +1 miss, -1 false alarm
            errors += int(np.abs(err).sum())
            if not err.any():
                continue
            theta0 = P.intrinsics(kind, raw, "output")[th]
            probe = np.zeros_like(g0.u_out)
            for b, k in zip(*np.nonzero(err)):
                u = g0.u_out[b, :, k]
                if err[b, k] > 0:
                    t_max = int(np.argmax(u))
                else:
                    t_max = int(np.argmax(u >= theta0[k]))
                probe[b, t_max, k] = err[b, k]
            g = bptt.gradient(kind, raw, xb, no_label[:len(idx)], dt, scale=0.0, lam=0.0,
                              probe_o=probe)
            raw["w_out"] += cfg.lr * g.raw["w_out"] / len(idx)
            if learn_intrinsics:
                # d/d theta of err * (u - theta) is -err; d theta / d raw = sigmoid(raw)
                dtheta = -err.sum(axis=0) * P.sigmoid(raw[f"output.{th}"])
                raw[f"output.{th}"] += cfg.lr_intrinsics * dtheta / len(idx)
                raw[f"output.{tau}"] += cfg.lr_intrinsics * g.raw[f"output.{tau}"] / len(idx)
        h = {"epoch": epoch + 1, "errors_per_sample": errors / len(y),
             "samples_per_s": len(y) / (time.perf_counter() - t0)}
        history.append(h)
        if log:
            log(f"tempotron epoch {h['epoch']}/{cfg.epochs} errors/sample "
                f"{h['errors_per_sample']:.3f} {h['samples_per_s']:.0f} samples/s")
        if on_epoch is not None and on_epoch(epoch + 1, raw):
            break
    return raw, history
