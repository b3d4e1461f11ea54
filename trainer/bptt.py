"""Surrogate-gradient BPTT through the exact kernels of ``edged.neurons``.

Forward: ``record`` runs one sample per stream through ``edged.neurons.step_into`` (the
one step of the neuron maths, the engine's), and records each layer's state before every
step, the post-step input trace ``r``, the step's input currents (left in its work space)
and the spikes. Backward (hand-derived, this module): reverse time through
the step of ``edged.neurons`` with the spike's derivative replaced by the SuperSpike
surrogate ``ds/du = -ds/dtheta = scale / (1 + gamma*|u - theta|)**2`` (Zenke & Ganguli
2018); for escape-noise neurons (``edged.neurons``), the spike's derivative is that of its
probability, ``ds/dx := dp/dx`` for ``x`` in ``u, theta, delta_u, rho_dt`` (the
straight-through estimator of the Bernoulli draw; ``scale = 0`` still holds spikes fixed). Per step, with ``G_x`` the gradient of the loss w.r.t. ``x``::

    G_s     = G_s(ext) + G_a'            [+ G_v' * dv'/ds when the reset is not detached]
    G_u     = G_v' * dv'/du + G_s * sg + G_u(ext)      dv'/du = 1 - s (value reset) or 1
    G_theta = G_v' * dv'/dtheta - G_s * sg             dv'/dtheta = 0 or -s (subtract)
    G_a     = alpha_a * G_a' + beta * G_theta
    G_v     = alpha * G_u
    G_r'    = G_r'(from t+1) - kappa_dt * D * alpha0 * (v - R I) * G_u,   D = exp(-kappa_dt r')
    G_r     = alpha_r * G_r'
    G_I     = (1 - alpha) R G_u + (1 - alpha_r) sign(I) G_r'

plus the gradients of the eight step coefficients (``trainer.params.COEFFS``) and of the
weights (``G_w_in[i] += x_i G_I_hidden``, ``G_w_out[j] += s_j G_I_out``,
``G_s_hidden = w_out G_I_out``). With ``scale = 0`` the spikes are constants and the
backward is the exact derivative of the piecewise-smooth forward (what the tests check
against finite differences).

Objective: spike-count cross-entropy, ``logits = lam * counts`` of the output neurons
over the sample, plus an optional linear probe ``sum G_u(ext) * u`` used by the tests.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, NamedTuple

import numpy as np

from edged import neurons
from edged.intrinsics import NeuronKind
from edged.jit import kernel
from trainer import params as P
from trainer.linear import Adam

# rows of the coefficient gradient, in the order of edged.neurons.Layer (its one definition)
A0, KD, GAIN, TH0, BETA, VR, AA, AR, DU, RD = (P.COEFFS.index(c) for c in (
    "alpha0", "kappa_dt", "gain", "theta", "beta", "v_reset", "alpha_a", "alpha_r", "delta_u",
    "rho_dt"))
N_COEFFS = len(P.COEFFS)
EpochHook = Callable[[int, dict], bool]  # (epoch, raw params) -> stop now
THREADS = max(1, min(2, os.cpu_count() or 1))
_POOL: list[ThreadPoolExecutor] = []


def _pool() -> ThreadPoolExecutor:
    if not _POOL:
        _POOL.append(ThreadPoolExecutor(THREADS, thread_name_prefix="bptt"))
    return _POOL[0]


@kernel
def _record(net, st, b, key, x):
    """Run sample ``x[T, n_in]`` on stream ``b`` of ``st`` (noise ``key``), recording every step: returns
    ``(I_h, v_h, a_h, r0_h, r1_h, s_h, I_o, v_o, a_o, r0_o, r1_o, s_o)``, each ``[T, n]``
    (input current, v / a / r before the step, r after it, spikes; hidden then output)."""
    T, n_in = x.shape
    n_h = net.w_in.shape[1]
    n_o = net.w_out.shape[1]
    hidden = np.empty((5, T, n_h), np.float32)
    out = np.empty((5, T, n_o), np.float32)
    I_h, v_h, a_h, r0_h, r1_h = hidden[0], hidden[1], hidden[2], hidden[3], hidden[4]
    I_o, v_o, a_o, r0_o, r1_o = out[0], out[1], out[2], out[3], out[4]
    s_h = np.empty((T, n_h), np.uint8)
    s_o = np.empty((T, n_o), np.uint8)
    w = neurons.workspace(net)
    cur_h, cur_o = neurons.currents(net, w)
    spk_h = np.zeros(n_h, np.uint8)
    spk_o = np.zeros(n_o, np.uint8)
    off = np.zeros(T + 1, np.int64)  # the input as channel lists per step (repeats add)
    for t in range(T):
        off[t + 1] = off[t] + np.sum(x[t].astype(np.int64))
    chans = np.empty(off[T], np.int64)
    for t in range(T):
        k = off[t]
        for i in range(n_in):
            for _ in range(x[t, i]):
                chans[k] = i
                k += 1
    for t in range(T):
        v_h[t] = st.hidden.v[b]
        a_h[t] = st.hidden.a[b]
        r0_h[t] = st.hidden.r[b]
        v_o[t] = st.out.v[b]
        a_o[t] = st.out.a[b]
        r0_o[t] = st.out.r[b]
        neurons.step_into(net, st, b, key, t, chans[off[t]:off[t + 1]], spk_h, spk_o, w)
        I_h[t] = cur_h
        r1_h[t] = st.hidden.r[b]
        s_h[t] = spk_h
        I_o[t] = cur_o[:n_o]
        r1_o[t] = st.out.r[b]
        s_o[t] = spk_o
    return I_h, v_h, a_h, r0_h, r1_h, s_h, I_o, v_o, a_o, r0_o, r1_o, s_o


@kernel
def _layer_backward(c, subtract, detach, scale, gamma, I, v_pre, a_pre, r_pre, r_post, s,
                    g_s, g_u, G_I, gc):
    """Reverse time through one layer; write ``G_I[T, n]``, add to ``gc[N_COEFFS, n]``."""
    T, n = I.shape
    probe = g_u.shape[0] > 0
    for j in range(n):
        a0 = np.float64(c.alpha0[j])
        kd = np.float64(c.kappa_dt[j])
        R = np.float64(c.gain[j])
        th0 = np.float64(c.theta[j])
        beta = np.float64(c.beta[j])
        vr = np.float64(c.v_reset[j])
        aa = np.float64(c.alpha_a[j])
        ar = np.float64(c.alpha_r[j])
        du = np.float64(c.delta_u[j])
        rd = np.float64(c.rho_dt[j])
        Gv = 0.0
        Ga = 0.0
        Gr = 0.0
        for t in range(T - 1, -1, -1):
            cur = np.float64(I[t, j])
            v = np.float64(v_pre[t, j])
            a = np.float64(a_pre[t, j])
            rp = np.float64(r_post[t, j])
            sp = np.float64(s[t, j])
            D = np.exp(-kd * rp)
            al = a0 * D
            u = al * v + (1.0 - al) * R * cur
            th = th0 + beta * a
            noisy = du > 0.0 and scale > 0.0
            z = ez = keep = 0.0
            if noisy:  # escape noise: ds/dx := dp/dx, p = 1 - exp(-rho_dt exp(z))
                z = min((u - th) / du, 80.0)
                ez = np.exp(z)
                keep = np.exp(-rd * ez)  # 1 - p
                sg = keep * rd * ez / du
            else:
                sg = scale / (1.0 + gamma * abs(u - th)) ** 2
            Gs = g_s[t, j] + Ga
            if subtract:
                Gu = Gv
                Gth = -Gv * sp
                if not detach:
                    Gs -= Gv * th
            else:
                Gu = Gv * (1.0 - sp)
                Gth = 0.0
                gc[VR, j] += Gv * sp
                if not detach:
                    Gs += Gv * (vr - u)
            Gu += Gs * sg
            if noisy:
                gc[DU, j] -= Gs * sg * z
                gc[RD, j] += Gs * keep * ez
            if probe:
                Gu += g_u[t, j]
            Gth -= Gs * sg
            gc[TH0, j] += Gth
            gc[BETA, j] += Gth * a
            gc[AA, j] += Ga * a
            Ga = Ga * aa + Gth * beta
            Gal = Gu * (v - R * cur)
            gc[GAIN, j] += Gu * (1.0 - al) * cur
            GI = Gu * (1.0 - al) * R
            gc[A0, j] += Gal * D
            GD = Gal * a0
            Grp = Gr - GD * D * kd
            gc[KD, j] -= GD * D * rp
            r0 = np.float64(r_pre[t, j])
            gc[AR, j] += Grp * (r0 - abs(cur))
            if cur > 0:
                GI += Grp * (1.0 - ar)
            elif cur < 0:
                GI -= Grp * (1.0 - ar)
            G_I[t, j] = GI
            Gv = Gu * al
            Gr = Grp * ar


@kernel
def batch_grad(net, st, keys, x, y, n_classes, lam, scale, gamma, detach, probe_h, probe_o,
               g_win, g_wout, gc_h, gc_o, loss, counts, hidden_counts, u_out, aux_out, lo, hi):
    """Forward + backward of every sample ``x[b]`` (noise key ``keys[b]``, label ``y[b]``, -1 = no CE term; the
    logit of class ``c`` is ``lam`` times the spikes of the output neurons ``k % n_classes == c``).
    Per-sample results go to ``g_*[b]``, ``loss[b]``, ``counts[b]`` (output spikes),
    ``hidden_counts[b]``, the output layer's pre-reset potential ``u`` to ``u_out[b]`` and
    its adaptation trace before each step and spikes to ``aux_out[b, :, :, 0 / 1]``
    (unless it is ``[B, 0, n_out]``); ``probe_h[b]``/``probe_o[b]`` (``[T, n]``, or ``[0, n]`` for none)
    add ``sum probe * u`` to the loss. ``st`` has one stream per sample, zeroed. Only
    samples ``lo <= b < hi`` are processed (threads split a batch; the GIL is released)."""
    B, T, n_in = x.shape
    n_h = net.w_in.shape[1]
    n_o = net.w_out.shape[1]
    for b in range(lo, hi):
        I_h, v_h, a_h, r0_h, r1_h, s_h, I_o, v_o, a_o, r0_o, r1_o, s_o = _record(net, st, b, keys[b], x[b])
        cnt = np.zeros(n_o)
        for t in range(T):
            for k in range(n_o):
                cnt[k] += s_o[t, k]
        hc = 0.0
        for t in range(T):
            for j in range(n_h):
                hc += s_h[t, j]
        counts[b] = cnt
        hidden_counts[b] = hc
        if u_out.shape[1] > 0:
            for t in range(T):
                for k in range(n_o):
                    u_out[b, t, k] = _u(net.out, v_o[t, k], r1_o[t, k], I_o[t, k], k)
                    aux_out[b, t, k, 0] = a_o[t, k]
                    aux_out[b, t, k, 1] = s_o[t, k]
        g_cnt = np.zeros(n_o)
        L = 0.0
        if y[b] >= 0:
            z = np.zeros(n_classes)
            for k in range(n_o):
                z[k % n_classes] += lam * cnt[k]
            zmax = z.max()
            e = np.exp(z - zmax)
            tot = e.sum()
            L = np.log(tot) + zmax - z[y[b]]
            for k in range(n_o):
                c = k % n_classes
                g_cnt[k] = lam * (e[c] / tot - (1.0 if c == y[b] else 0.0))
        g_s_o = np.empty((T, n_o))
        for t in range(T):
            g_s_o[t] = g_cnt
        ph = probe_h[b]
        po = probe_o[b]
        if po.shape[0] > 0:
            for t in range(T):
                for k in range(n_o):
                    u = _u(net.out, v_o[t, k], r1_o[t, k], I_o[t, k], k)
                    L += po[t, k] * u
        if ph.shape[0] > 0:
            for t in range(T):
                for j in range(n_h):
                    L += ph[t, j] * _u(net.hidden, v_h[t, j], r1_h[t, j], I_h[t, j], j)
        loss[b] = L
        GI_o = np.empty((T, n_o))
        _layer_backward(net.out, net.subtract_reset, detach, scale, gamma, I_o, v_o, a_o, r0_o,
                        r1_o, s_o, g_s_o, po, GI_o, gc_o[b])
        g_s_h = np.zeros((T, n_h))
        for t in range(T):
            for j in range(n_h):
                acc = 0.0
                for k in range(n_o):
                    acc += net.w_out[j, k] * GI_o[t, k]
                g_s_h[t, j] = acc
                if s_h[t, j]:
                    for k in range(n_o):
                        g_wout[b, j, k] += GI_o[t, k]
        GI_h = np.empty((T, n_h))
        _layer_backward(net.hidden, net.subtract_reset, detach, scale, gamma, I_h, v_h, a_h,
                        r0_h, r1_h, s_h, g_s_h, ph, GI_h, gc_h[b])
        for t in range(T):
            for i in range(n_in):
                if x[b, t, i]:
                    for j in range(n_h):
                        g_win[b, i, j] += x[b, t, i] * GI_h[t, j]


@kernel
def _u(c, v, r_post, cur, j):
    al = np.float64(c.alpha0[j]) * np.exp(-np.float64(c.kappa_dt[j]) * np.float64(r_post))
    return al * np.float64(v) + (1.0 - al) * np.float64(c.gain[j]) * np.float64(cur)


class Grad(NamedTuple):
    loss: np.ndarray  # float64[B]
    counts: np.ndarray  # float64[B, n_out]
    hidden_counts: np.ndarray  # float64[B]
    raw: dict[str, np.ndarray]  # summed over the batch, same keys as the raw params
    u_out: np.ndarray  # float64[B, T, n_out] output potentials, or [B, 0, n_out]
    a_out: np.ndarray  # float64[B, T, n_out] output adaptation trace before each step (or [B, 0, n_out])
    s_out: np.ndarray  # float64[B, T, n_out] output spikes (or [B, 0, n_out])


def gradient(kind: NeuronKind, raw: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray,
             dt: float = 1e-3, reset: str = "value", lam: float = 0.1, scale: float = 0.3,
             gamma: float = 5.0, detach: bool = True, probe_h: np.ndarray | None = None,
             probe_o: np.ndarray | None = None, potentials: bool = False,
             n_classes: int = 0, keys: np.ndarray | None = None, seed: int = 0) -> Grad:
    """Loss and its gradient over every raw parameter for the batch ``x[B, T, n_in]``;
    ``n_classes`` (default: one output neuron per class) groups the outputs by ``k % n_classes``;
    escape noise draws with model ``seed`` and sample ``b``'s stream key ``keys[b]`` (default 0)."""
    net = P.to_net(kind, raw, dt, reset, seed)
    B = x.shape[0]
    n_in, n_h = net.w_in.shape
    n_o = net.w_out.shape[1]
    g_win = np.zeros((B, n_in, n_h))
    g_wout = np.zeros((B, n_h, n_o))
    gc_h = np.zeros((B, N_COEFFS, n_h))
    gc_o = np.zeros((B, N_COEFFS, n_o))
    loss = np.zeros(B)
    counts = np.zeros((B, n_o))
    hidden_counts = np.zeros(B)
    u_out = np.zeros((B, x.shape[1] if potentials else 0, n_o))
    aux_out = np.zeros((B, x.shape[1] if potentials else 0, n_o, 2))
    ph = np.zeros((B, 0, n_h)) if probe_h is None else np.ascontiguousarray(probe_h, np.float64)
    po = np.zeros((B, 0, n_o)) if probe_o is None else np.ascontiguousarray(probe_o, np.float64)
    keys = np.zeros(B, np.uint64) if keys is None else np.ascontiguousarray(keys, np.uint64)
    args = (net, neurons.zero_state(net, B), keys, np.ascontiguousarray(x, np.uint8),
            np.asarray(y, np.int64), n_classes or n_o, lam, scale, gamma, detach, ph, po, g_win, g_wout, gc_h,
            gc_o, loss, counts, hidden_counts, u_out, aux_out)
    bounds = np.linspace(0, B, min(THREADS, B) + 1).astype(int)
    if len(bounds) == 2:
        batch_grad(*args, 0, B)
    else:
        list(_pool().map(lambda i: batch_grad(*args, bounds[i], bounds[i + 1]), range(len(bounds) - 1)))
    g = {"w_in": g_win.sum(0), "w_out": g_wout.sum(0)}
    for prefix, gc in (("hidden", gc_h.sum(0)), ("output", gc_o.sum(0))):
        layer_raw = {n.split(".", 1)[1]: raw[n] for n in P.layer_names(prefix, kind)}
        g |= {f"{prefix}.{k}": v for k, v in P.coeff_grad_to_raw(kind, layer_raw, gc, dt).items()}
    return Grad(loss, counts, hidden_counts, g, u_out, aux_out[..., 0], aux_out[..., 1])


class Config(NamedTuple):
    epochs: int = 6
    batch: int = 16
    lr: float = 3e-3  # weights
    lr_intrinsics: float = 1e-2
    lam: float = 0.1  # logit per output spike
    scale: float = 0.3
    gamma: float = 5.0
    detach: bool = True
    weight_decay: float = 0.0  # L2 on the weights


def train(kind: NeuronKind, raw: dict[str, np.ndarray], x: np.ndarray | Callable[[int], np.ndarray],
          y: np.ndarray,
          learn_intrinsics: bool | tuple[str, ...], cfg: Config, seed: int,
          log: Callable[[str], None] | None = None, dt: float = 1e-3,
          on_epoch: EpochHook | None = None) -> tuple[dict, list[dict]]:
    """Adam on the count cross-entropy plus ``weight_decay/2 |w|^2`` on the weights,
    learning rates on a cosine from 1x to 0.1x over ``cfg.epochs``; returns the trained
    raw params and a history of per-epoch ``{epoch, loss, acc, samples_per_s}`` (``acc`` =
    count argmax on train). ``learn_intrinsics`` is all or nothing, or the tuple of
    intrinsic names to learn (both layers). ``x`` may be a function of the epoch (0, 1,
    ...) returning that epoch's inputs (online augmentation). ``on_epoch(epoch, raw)``
    returning True stops the run after that epoch."""
    raw = {k: v.copy() for k, v in raw.items()}
    n_classes = int(y.max()) + 1
    names = ["w_in", "w_out"] + [k for k in raw if "." in k and learns(learn_intrinsics, k)]
    opt = Adam([raw[k] for k in names], cfg.lr)
    lrs = np.array([cfg.lr if k.startswith("w_") else cfg.lr_intrinsics for k in names])
    rng = np.random.default_rng([seed, 0xB77])
    history = []
    for epoch in range(cfg.epochs):
        order = rng.permutation(len(y))
        t0 = time.perf_counter()
        xs = x(epoch) if callable(x) else x
        losses, correct, spikes_h, spikes_o = [], 0, 0.0, 0.0
        for start in range(0, len(y), cfg.batch):
            idx = np.sort(order[start:start + cfg.batch])
            g = gradient(kind, raw, xs[idx], y[idx], dt, lam=cfg.lam, scale=cfg.scale,
                         gamma=cfg.gamma, detach=cfg.detach, n_classes=n_classes,
                         keys=(np.uint64(epoch + 1) << np.uint64(32)) + idx.astype(np.uint64),
                         seed=seed)
            spikes_h += g.hidden_counts.sum()
            spikes_o += g.counts.sum()
            grads = [g.raw[k] / len(idx) + (cfg.weight_decay * raw[k] if k.startswith("w_") else 0.0)
                     for k in names]
            progress = (epoch + start / len(y)) / cfg.epochs
            _adam_per_group(opt, grads, lrs * (0.55 + 0.45 * np.cos(np.pi * progress)))
            losses.append(g.loss.mean())
            grouped = g.counts.reshape(len(idx), -1, n_classes).sum(axis=1)
            correct += int(np.sum(np.argmax(grouped, axis=1) == y[idx]))
        dur = time.perf_counter() - t0
        steps = len(y) * xs.shape[1] * dt  # seconds of input per neuron
        h = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "acc": correct / len(y),
             "hidden_hz": float(spikes_h / (steps * raw["w_in"].shape[1])),
             "output_hz": float(spikes_o / (steps * raw["w_out"].shape[1])),
             "samples_per_s": len(y) / dur}
        history.append(h)
        if log:
            log(f"bptt epoch {h['epoch']}/{cfg.epochs} loss {h['loss']:.4f} "
                f"count-argmax train-acc {h['acc']:.3f} rates hidden {h['hidden_hz']:.1f} Hz output "
                f"{h['output_hz']:.1f} Hz {h['samples_per_s']:.0f} samples/s")
        if on_epoch is not None and on_epoch(epoch + 1, raw):
            break
    return raw, history


SILENT_HZ, SATURATED_FRACTION = 0.1, 0.5
RATE_BAND_HZ = (2.0, 50.0)


def calibrate(kind: NeuronKind, raw: dict[str, np.ndarray], x: np.ndarray, dt: float = 1e-3,
              band: tuple[float, float] = RATE_BAND_HZ, samples: int = 32,
              seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Data-dependent initialisation: scale ``w_in``, then ``w_out``, by one factor each so
    that the layer's mean rate on up to ``samples`` training inputs ``x`` lies in ``band``
    (Hz). A layer already inside is left alone; otherwise the factor is found by bisection
    on its log towards the band's geometric centre (16 forward passes at most, factors in
    2^-16 .. 2^16). Returns the scaled params and ``{hidden_hz, output_hz, scale_in,
    scale_out}`` measured after scaling."""
    raw = {k: v.copy() for k, v in raw.items()}
    idx = np.sort(np.random.default_rng([seed, 0xCA1]).permutation(len(x))[:samples])
    xb, none = np.ascontiguousarray(x[idx]), np.full(len(idx), -1)
    seconds = xb.shape[1] * dt * len(idx)

    def rates(r: dict) -> tuple[float, float]:
        g = gradient(kind, r, xb, none, dt, lam=0.0, scale=0.0)
        return (float(g.hidden_counts.sum() / (seconds * r["w_in"].shape[1])),
                float(g.counts.sum() / (seconds * r["w_out"].shape[1])))

    target = float(np.sqrt(band[0] * band[1]))
    info = {}
    for layer, key in ((0, "w_in"), (1, "w_out")):
        base = raw[key].copy()
        rate = rates(raw)[layer]
        lo, hi, k = -16.0, 16.0, 0.0
        for _ in range(16):
            if band[0] <= rate <= band[1]:
                break
            lo, hi = (k, hi) if rate < target else (lo, k)
            k = (lo + hi) / 2
            raw[key] = base * 2.0 ** k
            rate = rates(raw)[layer]
        info[f"scale_{'in' if layer == 0 else 'out'}"] = float(2.0 ** k)
    info["hidden_hz"], info["output_hz"] = rates(raw)
    return raw, info


def health(history: list[dict], dt: float = 1e-3) -> list[str]:
    """Warnings about a finished run: a layer silent (mean rate < ``SILENT_HZ``) or
    saturated (spiking on more than ``SATURATED_FRACTION`` of the steps) in its last
    epoch, or a loss that did not fall (best epoch loss > 98 % of the first's, 3+ epochs)."""
    if not history:
        return []
    out = []
    last = history[-1]
    for layer in ("hidden", "output"):
        hz = last[f"{layer}_hz"]
        if hz < SILENT_HZ:
            out.append(f"the {layer} layer is silent ({hz:.3f} Hz in the last epoch): its "
                       f"spikes carry nothing to the readout")
        elif hz * dt > SATURATED_FRACTION:
            out.append(f"the {layer} layer is saturated ({hz:.0f} Hz, spiking on "
                       f"{100 * hz * dt:.0f} % of the steps)")
    losses = [h["loss"] for h in history]
    if len(losses) >= 3 and min(losses[1:]) > 0.98 * losses[0]:
        out.append(f"the loss did not fall ({losses[0]:.4f} -> best {min(losses[1:]):.4f} over "
                   f"{len(losses)} epochs): try another --lr, more --epochs or more data")
    return out


def learns(learn_intrinsics: bool | tuple[str, ...], name: str) -> bool:
    """Whether raw parameter ``name`` (``layer.intrinsic``) is learned."""
    if isinstance(learn_intrinsics, bool):
        return learn_intrinsics
    return name.split(".", 1)[1] in learn_intrinsics


def _adam_per_group(opt: Adam, grads: list[np.ndarray], lrs: np.ndarray) -> None:
    """One Adam step where parameter ``i`` uses learning rate ``lrs[i]``."""
    opt.t += 1
    c1, c2 = 1 - opt.b1 ** opt.t, 1 - opt.b2 ** opt.t
    for p, g, m, v, lr in zip(opt.params, grads, opt.m, opt.v, lrs):
        m *= opt.b1
        m += (1 - opt.b1) * g
        v *= opt.b2
        v += (1 - opt.b2) * g * g
        p -= lr * (m / c1) / (np.sqrt(v / c2) + opt.eps)
