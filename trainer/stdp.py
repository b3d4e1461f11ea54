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
parameter space (``trainer.params``). ``homeostasis`` names the rule; ``rho_s`` is a
neuron's rate (spikes per step) on sample ``s`` of the batch, ``rho*`` its set point:

``batch-rate``
    ``e = clip((mean_s rho_s - rho*) / rho*, -1, 1)`` with the set point ``target_*``
    shared by the layer; then::

        theta_raw += eta_theta * e     fires too much -> higher threshold
        tau_raw   += eta_tau   * e     fires too much -> longer membrane time constant
``sample-rate``
    the same with ``e = mean_s clip((rho_s - rho*) / rho*, -1, 1)``: each sample's error
    counts, so a neuron silent on one class and busy on another is not pulled to the mean.
``own-rate``
    ``sample-rate`` with each neuron's own set point: its mean rate over the first batch,
    before any plasticity (homeostasis as a stabiliser that keeps the heterogeneity).
``triesch``
    Triesch (2005) intrinsic plasticity, which drives the distribution of a neuron's rate
    *across samples* towards an exponential with mean ``rho*`` (maximum entropy at that
    mean). With ``y_s = rho_s`` and ``x_s`` the neuron's mean input current on sample ``s``,
    the sigmoid-neuron rule ``db = 1 - (2 + 1/rho*) y + y^2/rho*``, ``da = 1/a + x db``
    acts on the spiking neuron's bias (minus its threshold) and gain ``R``::

        theta_raw -= eta_theta * mean_s db_s
        R_raw     += eta_gain  * mean_s (1/R + x_s db_s)

``kwta`` (``> 0``, any homeostasis) adds competition to the hidden layer's learning (after
Diehl & Cook 2015): per sample only the ``kwta`` hidden neurons that spiked most apply
their weight changes. Inference is unchanged (no lateral connections are added).

``modulation = "reward"`` makes both rules three-factor (after Frémaux & Gerstner 2016):
each sample's weight changes (its STDP eligibility) and its homeostatic error are scaled
by ``M_s = R_s - R_bar``, the sample's reward ``R_s`` (1 when the output neuron of its
label spiked most, else 0) less a running mean of the rewards (``R_bar <- 0.9 R_bar +
0.1 R_s``, from 0.5), so only better-than-usual samples drive learning and worse ones
drive it back. It needs per-sample errors: homeostasis ``sample-rate``, ``own-rate`` or
``triesch``.

The time-constant direction follows from the exact integration ``v <- alpha v + (1 - alpha)
R I``: the mean of ``v`` does not depend on ``tau`` but its fluctuations shrink as ``tau``
grows, and these neurons fire on fluctuations, so a longer ``tau`` means fewer threshold
crossings. (The opposite sign, "too quiet -> integrate longer", is a positive feedback
here: it drove time constants to the 1e3 s bound and the outputs silent.)
"""

from __future__ import annotations

import time
from typing import Callable, Literal, NamedTuple

import numpy as np

from edged import neurons
from edged.intrinsics import NeuronKind
from edged.jit import kernel
from trainer import params as P
from trainer.bptt import EpochHook, _record


Homeostasis = Literal["batch-rate", "sample-rate", "own-rate", "triesch"]
HOMEOSTASIS = ("batch-rate", "sample-rate", "own-rate", "triesch")
Modulation = Literal["none", "reward"]


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
    eta_gain: float = 0.05  # triesch only
    homeostasis: Homeostasis = "batch-rate"
    kwta: int = 0  # > 0: hidden competition in learning (k winners per sample)
    modulation: Modulation = "none"  # "reward": three-factor weight and intrinsic updates


@kernel
def _updates(net, st, b, x, label, teach, d_pre, d_post, a_minus, dw_in, dw_out, rate_h, rate_o,
             cur_h, cur_o):
    T, n_in = x.shape
    n_h = net.w_in.shape[1]
    n_o = net.w_out.shape[1]
    I_h, v_h, a_h, r0_h, r1_h, s_h, I_o, v_o, a_o, r0_o, r1_o, s_o = _record(net, st, b, np.uint64(b), x)
    for t in range(T):
        for j in range(n_h):
            cur_h[j] += I_h[t, j] / T
        for k in range(n_o):
            cur_o[k] += I_o[t, k] / T
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
    d_pre, d_post = np.exp(-dt / cfg.tau_pre), np.exp(-dt / cfg.tau_post)
    if cfg.homeostasis not in HOMEOSTASIS:
        raise ValueError(f"unknown homeostasis {cfg.homeostasis!r}; choose from {HOMEOSTASIS}")
    if cfg.modulation not in ("none", "reward"):
        raise ValueError(f"unknown modulation {cfg.modulation!r}; choose from none, reward")
    reward = cfg.modulation == "reward"
    if reward and cfg.homeostasis == "batch-rate":
        raise ValueError("reward modulation needs per-sample homeostatic errors, not batch-rate")
    r_bar = 0.5
    n_h, n_o = raw["w_out"].shape
    own: dict[str, np.ndarray] = {}
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
            per = {k: np.zeros((len(idx), n)) for k, n in
                   (("rate_h", n_h), ("rate_o", n_o), ("cur_h", n_h), ("cur_o", n_o))}
            m = np.ones(len(idx))  # the third factor per sample (1: plain STDP)
            for s, i in enumerate(idx):
                for layer in st:
                    for a in layer:
                        a[:] = 0
                teach = (rng.random(x.shape[1]) < cfg.teach_rate).astype(np.uint8)
                per_sample = cfg.kwta or reward
                dw_s = np.zeros_like(dw_in) if per_sample else dw_in
                dwo_s = np.zeros_like(dw_out) if reward else dw_out
                _updates(net, st, 0, x[i], int(y[i]), teach, d_pre, d_post, cfg.a_minus,
                         dw_s, dwo_s, per["rate_h"][s], per["rate_o"][s], per["cur_h"][s],
                         per["cur_o"][s])
                if reward:
                    r = float(np.argmax(per["rate_o"][s]) == y[i])
                    m[s], r_bar = r - r_bar, 0.9 * r_bar + 0.1 * r
                    dw_s *= m[s]
                    dw_out += m[s] * dwo_s
                if cfg.kwta:
                    winners = np.argsort(-per["rate_h"][s], kind="stable")[:cfg.kwta]
                    dw_in[:, winners] += dw_s[:, winners]
                elif reward:
                    dw_in += dw_s
            raw["w_in"] += cfg.lr * dw_in / len(idx)
            dw_out -= dw_out.mean(axis=1, keepdims=True)  # competition between outputs
            raw["w_out"] += cfg.lr_out * dw_out / len(idx)
            raw["w_in"] *= norm_in / np.maximum(np.linalg.norm(raw["w_in"], axis=0), 1e-12)
            raw["w_out"] *= norm_out / np.maximum(np.linalg.norm(raw["w_out"], axis=0), 1e-12)
            rate_h, rate_o = per["rate_h"].mean(axis=0), per["rate_o"].mean(axis=0)
            if not own:
                own = {"hidden": np.maximum(rate_h, 1e-4), "output": np.maximum(rate_o, 1e-4)}
            if learn_intrinsics:
                for prefix, key, target in (("hidden", "h", cfg.target_hidden),
                                            ("output", "o", cfg.target_out)):
                    _homeostasis(kind, raw, prefix, per[f"rate_{key}"], per[f"cur_{key}"],
                                 own[prefix] if cfg.homeostasis == "own-rate" else target, cfg, m)
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


def _homeostasis(kind: NeuronKind, raw: dict[str, np.ndarray], prefix: str, rates: np.ndarray,
                 currents: np.ndarray, target, cfg: Config, m: np.ndarray) -> None:
    """One intrinsic-plasticity step of layer ``prefix`` from per-sample ``rates`` and mean
    input ``currents`` (``[samples, neurons]``), each sample's error scaled by its third
    factor ``m[s]``, in place (the module docstring's rules)."""
    m = m[:, None]
    if cfg.homeostasis == "triesch":
        db = 1.0 - (2.0 + 1.0 / target) * rates + rates ** 2 / target
        gain = P.intrinsics(kind, raw, prefix)["R"]
        raw[f"{prefix}.theta"] -= cfg.eta_theta * (m * db).mean(axis=0)
        raw[f"{prefix}.R"] += cfg.eta_gain * (1.0 / gain + (m * currents * db).mean(axis=0))
        return
    if cfg.homeostasis == "batch-rate":
        err = np.clip((rates.mean(axis=0) - target) / target, -1.0, 1.0)
    else:
        err = (m * np.clip((rates - target) / target, -1.0, 1.0)).mean(axis=0)
    raw[f"{prefix}.theta"] += cfg.eta_theta * err
    raw[f"{prefix}.tau"] += cfg.eta_tau * err
