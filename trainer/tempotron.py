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
the tempotron's error) also moves each output neuron's threshold (``theta``: down
after a miss, up after a false alarm) and membrane time constant (``tau``, along
``d u_k(t_max)/d tau``), in raw parameter space.

``mode = "multi"``: the multi-spike tempotron (Gütig 2016, aggregate-label learning).
Output ``k`` should fire ``target_spikes`` spikes in a sample of its class and none
otherwise; with ``c`` its count, ``err = sign(target - c)`` and the critical time ``t*``
is the sub-threshold step with the largest margin ``u - theta(t)`` (too few spikes: the
next spike to add) or the spike with the smallest one (too many: the next to remove),
``theta(t) = theta + beta a(t)`` the adaptive threshold. Every parameter follows
``d/dp err * (u_k(t*) - theta_k(t*))``: the weights and each membrane intrinsic through
``u`` (spikes held fixed, as above), ``theta`` directly, and ``beta`` and ``tau_a``
through ``a(t*) = sum_{s < t*} alpha_a^(t* - 1 - s) spike(s)``, which is non-zero once a
sample has spiked: later spikes give the meta-neuron's adaptation a gradient. With
``hidden = "surrogate"`` (learned runs) the hidden layer's intrinsics take the same
objective's gradient through the SuperSpike surrogate of ``trainer.bptt`` (its weights
stay frozen).
"""

from __future__ import annotations

import time
from typing import Callable, Literal, NamedTuple

import numpy as np

from edged.intrinsics import NeuronKind
from trainer import bptt
from trainer import params as P


class Config(NamedTuple):
    epochs: int = 6
    batch: int = 16
    lr: float = 0.05
    lr_intrinsics: float = 0.02
    mode: Literal["single", "multi"] = "single"
    target_spikes: int = 4  # multi: spikes wanted on the neuron's own class
    hidden: Literal["frozen", "surrogate"] = "frozen"  # hidden intrinsics in learned runs
    scale: float = 0.3  # surrogate height for hidden = "surrogate"


def train(kind: NeuronKind, raw: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray,
          learn_intrinsics: bool, cfg: Config, seed: int,
          log: Callable[[str], None] | None = None, dt: float = 1e-3,
          on_epoch: bptt.EpochHook | None = None) -> tuple[dict, list[dict]]:
    """Returns the trained raw params and per-epoch errors; ``on_epoch`` as in ``bptt.train``."""
    raw = {k: v.copy() for k, v in raw.items()}
    rng = np.random.default_rng([seed, 0x7E3B])
    n_o = raw["w_out"].shape[1]
    n_classes = int(y.max()) + 1
    no_label = np.full(x.shape[0], -1)
    history = []
    if cfg.mode == "multi":
        return _train_multi(kind, raw, x, y, learn_intrinsics, cfg, rng, log, dt, on_epoch)
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
            theta = P.intrinsics(kind, raw, "output")["theta"]
            probe = np.zeros_like(g0.u_out)
            for b, k in zip(*np.nonzero(err)):
                u = g0.u_out[b, :, k]
                if err[b, k] > 0:
                    t_max = int(np.argmax(u))
                else:
                    t_max = int(np.argmax(u >= theta[k]))
                probe[b, t_max, k] = err[b, k]
            g = bptt.gradient(kind, raw, xb, no_label[:len(idx)], dt, scale=0.0, lam=0.0,
                              probe_o=probe)
            raw["w_out"] += cfg.lr * g.raw["w_out"] / len(idx)
            if learn_intrinsics:
                # d/d theta of err * (u - theta) is -err; d theta / d raw = sigmoid(raw)
                dtheta = -err.sum(axis=0) * P.sigmoid(raw["output.theta"])
                raw["output.theta"] += cfg.lr_intrinsics * dtheta / len(idx)
                raw["output.tau"] += cfg.lr_intrinsics * g.raw["output.tau"] / len(idx)
        if _epoch_done(history, "tempotron", epoch, cfg.epochs, errors, len(y), t0, log,
                       on_epoch, raw):
            break
    return raw, history


def _epoch_done(history: list[dict], name: str, epoch: int, epochs: int, errors: int, n: int,
                t0: float, log, on_epoch, raw: dict) -> bool:
    """Record and log one epoch; whether ``on_epoch`` asks to stop."""
    h = {"epoch": epoch + 1, "errors_per_sample": errors / n,
         "samples_per_s": n / (time.perf_counter() - t0)}
    history.append(h)
    if log:
        log(f"{name} epoch {h['epoch']}/{epochs} errors/sample {h['errors_per_sample']:.3f} "
            f"{h['samples_per_s']:.0f} samples/s")
    return on_epoch is not None and on_epoch(epoch + 1, raw)


def _train_multi(kind, raw, x, y, learn_intrinsics, cfg, rng, log, dt, on_epoch):
    """The multi-spike rule of the module docstring."""
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
            xb, yb, B = x[idx], y[idx], len(idx)
            g0 = bptt.gradient(kind, raw, xb, no_label[:B], dt, scale=0.0, lam=0.0, potentials=True)
            want = np.where(np.arange(n_o)[None, :] % n_classes == yb[:, None], cfg.target_spikes, 0)
            err = np.sign(want - g0.counts).astype(np.int64)
            errors += int(np.abs(want - g0.counts).sum())
            if not err.any():
                continue
            out = P.intrinsics(kind, raw, "output")
            beta = out.get("beta", np.zeros(n_o))
            margin = g0.u_out - (out["theta"] + beta * g0.a_out)  # [B, T, n_o]
            probe = np.zeros_like(g0.u_out)
            a_star = np.zeros((B, n_o))
            da_star = np.zeros((B, n_o))  # d a(t*) / d alpha_a
            for b, k in zip(*np.nonzero(err)):
                spiked = g0.s_out[b, :, k] > 0
                pick = np.where(spiked, -np.inf, margin[b, :, k]) if err[b, k] > 0 else \
                    np.where(spiked, -margin[b, :, k], -np.inf)
                t_star = int(np.argmax(pick))
                probe[b, t_star, k] = err[b, k]
                a_star[b, k] = g0.a_out[b, t_star, k]
                if "tau_a" in out:
                    s_times = np.flatnonzero(spiked[:t_star])
                    lag = t_star - 1 - s_times
                    alpha = np.exp(-dt / out["tau_a"][k])
                    da_star[b, k] = np.sum(lag * alpha ** np.maximum(lag - 1, 0) * (lag > 0))
            scale = cfg.scale if learn_intrinsics and cfg.hidden == "surrogate" else 0.0
            g = bptt.gradient(kind, raw, xb, no_label[:B], dt, scale=scale, lam=0.0, probe_o=probe)
            raw["w_out"] += cfg.lr * g.raw["w_out"] / B
            if not learn_intrinsics:
                continue
            lr = cfg.lr_intrinsics / B
            for name in (n for n in raw if n.startswith("output.")):
                raw[name] += lr * g.raw[name]  # through u(t*)
            # and through theta(t*) = theta + beta a(t*)
            raw["output.theta"] += lr * -err.sum(axis=0) * P.sigmoid(raw["output.theta"])
            if "beta" in out:
                raw["output.beta"] += lr * -(err * a_star).sum(axis=0) * P.sigmoid(raw["output.beta"])
                tau_a = out["tau_a"]
                dalpha = np.exp(-dt / tau_a) * dt / tau_a ** 2  # d alpha_a / d tau_a
                dtau = tau_a * (1 - tau_a / P.MAX_TIME_CONSTANT)  # d tau_a / d raw
                raw["output.tau_a"] += lr * -(err * beta * da_star).sum(axis=0) * dalpha * dtau
            if cfg.hidden == "surrogate":
                for name in (n for n in raw if n.startswith("hidden.")):
                    raw[name] += lr * g.raw[name]
        if _epoch_done(history, "multi-spike tempotron (count errors)", epoch, cfg.epochs,
                       errors, len(y), t0, log, on_epoch, raw):
            break
    return raw, history
