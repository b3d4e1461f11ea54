"""Trace-based STDP with intrinsic plasticity.

Each sample runs through the kernels (``trainer.bptt._record``, i.e. ``edged.neurons``);
the weight changes are then computed from the recorded spikes with exponential traces
(time constants ``tau_pre``, ``tau_post``)::

    x_i(t) = x_i(t-1) * exp(-dt/tau_pre) + pre_i(t)      presynaptic trace
    y_j(t) = y_j(t-1) * exp(-dt/tau_post) + post_j(t)    postsynaptic trace
    dw_ij += a_plus * x_i(t)     at each post spike of j  (pre before post: LTP)
    dw_ij -= a_minus * y_j(t-1)  at each pre spike of i   (post before pre: LTD)

Hidden weights (input -> hidden) learn unsupervised; each hidden neuron's incoming
weight vector keeps its initial L2 norm (synaptic scaling), so STDP redistributes weight
towards correlated inputs instead of growing without bound. Output weights learn by
teacher-forced STDP: the LTP term uses a teacher spike train (Poisson, ``teach_rate``)
on the label's output neuron, the LTD term the output neurons' own spikes; the change of
each hidden neuron's outgoing weights is centred across the output neurons (competition:
what one output gains the others lose), and columns keep their norms too.

Intrinsic plasticity (``learned`` intrinsics), once per batch, per neuron, in raw
parameter space (``trainer.params``), toward a target rate ``rho*``::

    e          = clip((rho - rho*) / rho*, -1, 1)
    theta_raw += eta_theta * e     fires too much -> higher threshold
    tau_raw   += eta_tau   * e     fires too much -> longer membrane time constant

The time-constant direction follows from the exact integration ``v <- alpha v + (1 - alpha)
R I``: the mean of ``v`` does not depend on ``tau`` but its fluctuations shrink as ``tau``
grows, and these neurons fire on fluctuations, so a longer ``tau`` means fewer threshold
crossings. (The opposite sign, "too quiet -> integrate longer", is a positive feedback
here: it drove time constants to the 1e3 s bound and the outputs silent.)

(``theta``/``tau`` are ``theta0``/``tau0`` for the meta-neuron).
"""

from __future__ import annotations

import time
from typing import Callable, NamedTuple

import numpy as np
from numba import njit

from edged import neurons
from edged.intrinsics import NeuronKind
from trainer import params as P
from trainer.bptt import EpochHook, _record


class Config(NamedTuple):
    epochs: int = 4
    batch: int = 16
    lr: float = 2e-3  # hidden weights, per unit trace
    lr_out: float = 2e-3
    a_minus: float = 1.05  # LTD / LTP amplitude ratio
    tau_pre: float = 0.02
    tau_post: float = 0.02
    teach_rate: float = 0.05  # teacher spikes per step
    target_hidden: float = 0.02  # target spikes per step
    target_out: float = 0.02
    eta_theta: float = 0.05
    eta_tau: float = 0.05


@njit(cache=True, nogil=True)
def _updates(net, st, b, x, label, teach, d_pre, d_post, a_minus, dw_in, dw_out, rate_h, rate_o):
    T, n_in = x.shape
    n_h = net.w_in.shape[1]
    n_o = net.w_out.shape[1]
    I_h, v_h, a_h, r0_h, r1_h, s_h, I_o, v_o, a_o, r0_o, r1_o, s_o = _record(net, st, b, x)
    pre = np.zeros(n_in)
    post = np.zeros(n_h)
    hpre = np.zeros(n_h)
    opost = np.zeros(n_o)
    for t in range(T):
        for i in range(n_in):
            pre[i] *= d_pre
            if x[t, i]:
                pre[i] += x[t, i]
                for j in range(n_h):
                    dw_in[i, j] -= a_minus * post[j]
        for j in range(n_h):
            hpre[j] *= d_pre
            if s_h[t, j]:
                hpre[j] += 1.0
                for i in range(n_in):
                    dw_in[i, j] += pre[i]
                for k in range(n_o):
                    dw_out[j, k] -= a_minus * opost[k]
            post[j] = post[j] * d_post + s_h[t, j]
            rate_h[j] += s_h[t, j] / T
        if teach[t]:
            for j in range(n_h):
                dw_out[j, label] += hpre[j]
        for k in range(n_o):
            opost[k] = opost[k] * d_post + s_o[t, k]
            rate_o[k] += s_o[t, k] / T


def train(kind: NeuronKind, raw: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray,
          learn_intrinsics: bool, cfg: Config, seed: int,
          log: Callable[[str], None] | None = None, dt: float = 1e-3,
          on_epoch: EpochHook | None = None) -> tuple[dict, list[dict]]:
    """Returns the trained raw params and per-epoch rates; ``on_epoch`` as in ``bptt.train``."""
    if raw["w_out"].shape[1] != int(y.max()) + 1:
        raise ValueError("stdp trains one output neuron per class")
    raw = {k: v.copy() for k, v in raw.items()}
    rng = np.random.default_rng([seed, 0x57D9])
    norm_in = np.linalg.norm(raw["w_in"], axis=0)
    norm_out = np.linalg.norm(raw["w_out"], axis=0)
    th, tau = ("theta", "tau") if kind == "lif" else ("theta0", "tau0")
    d_pre, d_post = np.exp(-dt / cfg.tau_pre), np.exp(-dt / cfg.tau_post)
    history = []
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        order = rng.permutation(len(y))
        rates_h, rates_o = [], []
        for start in range(0, len(y), cfg.batch):
            idx = order[start:start + cfg.batch]
            net = P.to_net(kind, raw, dt)
            st = neurons.zero_state(net, 1)
            dw_in = np.zeros_like(raw["w_in"])
            dw_out = np.zeros_like(raw["w_out"])
            rate_h = np.zeros(net.w_in.shape[1])
            rate_o = np.zeros(net.w_out.shape[1])
            for i in idx:
                for layer in st:
                    for a in layer:
                        a[:] = 0
                teach = (rng.random(x.shape[1]) < cfg.teach_rate).astype(np.uint8)
                _updates(net, st, 0, x[i], int(y[i]), teach, d_pre, d_post, cfg.a_minus,
                         dw_in, dw_out, rate_h, rate_o)
            raw["w_in"] += cfg.lr * dw_in / len(idx)
            dw_out -= dw_out.mean(axis=1, keepdims=True)  # competition between outputs
            raw["w_out"] += cfg.lr_out * dw_out / len(idx)
            raw["w_in"] *= norm_in / np.maximum(np.linalg.norm(raw["w_in"], axis=0), 1e-12)
            raw["w_out"] *= norm_out / np.maximum(np.linalg.norm(raw["w_out"], axis=0), 1e-12)
            rate_h /= len(idx)
            rate_o /= len(idx)
            if learn_intrinsics:
                for prefix, rate, target in (("hidden", rate_h, cfg.target_hidden),
                                             ("output", rate_o, cfg.target_out)):
                    err = np.clip((rate - target) / target, -1.0, 1.0)
                    raw[f"{prefix}.{th}"] += cfg.eta_theta * err
                    raw[f"{prefix}.{tau}"] += cfg.eta_tau * err
            rates_h.append(rate_h.mean())
            rates_o.append(rate_o.mean())
        h = {"epoch": epoch + 1, "hidden_rate": float(np.mean(rates_h)),
             "output_rate": float(np.mean(rates_o)),
             "samples_per_s": len(y) / (time.perf_counter() - t0)}
        history.append(h)
        if log:
            log(f"stdp epoch {h['epoch']}/{cfg.epochs} hidden-rate {h['hidden_rate']:.4f} "
                f"output-rate {h['output_rate']:.4f} /step {h['samples_per_s']:.0f} samples/s")
        if on_epoch is not None and on_epoch(epoch + 1, raw):
            break
    return raw, history
