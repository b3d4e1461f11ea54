"""Spiking neuron kernels: LIF and the adaptive meta-neuron, event-driven, in Numba.

The one implementation of the neuron models, used by the trainer, the daemon and the
benchmarks. Time is discrete with step ``dt`` seconds; every time constant is in seconds.

Meta-neuron, per neuron, at each step with input current ``I`` (the sum of the weight
rows of the presynaptic neurons or input channels that spiked at this step)::

    r       <- alpha_r * r + (1 - alpha_r) * |I|        input-drive trace, tau_r
    tau_eff  = tau / (1 + kappa * r)                    activity-dependent time constant
    alpha    = exp(-dt / tau_eff) = exp(-dt/tau) * exp(-(dt*kappa/tau) * r)
    v       <- alpha * v + (1 - alpha) * R * I          exact exponential integration
    th_eff   = theta + beta * a                         adaptive threshold
    s        = v >= th_eff
    v       <- v_reset        if s  (or v - th_eff with subtractive reset)
    a       <- alpha_a * a + s                          own-spike trace, tau_a

with ``alpha_x = exp(-dt/tau_x)`` and ``v_rest = 0``. Strong input of either sign
shortens the membrane time constant (a high-conductance state); each spike raises the
threshold by ``beta``, decaying with ``tau_a``. **LIF** is the special case
``beta = kappa = 0``: intrinsics ``tau, theta, v_reset, R``; its ``a`` and ``r`` stay
inert. Names, units, valid ranges and defaults: ``edged.intrinsics``.

Network: input channels -> hidden layer -> output layer, feed-forward, weights
``w_in[n_in, n_hidden]`` and ``w_out[n_hidden, n_out]`` (one row per presynaptic unit,
so an event adds one contiguous row). A hidden spike at step t drives the output layer
in the same step. Recurrent hidden weights are not supported.

Empty steps in closed form. With no input, over ``k`` steps::

    r_k = alpha_r**k * r,   a_k = alpha_a**k * a,
    v_k = v * alpha0**k * exp(-(dt*kappa/tau) * r * alpha_r * (1 - alpha_r**k) / (1 - alpha_r))

which is exact (up to float rounding) as long as no neuron fires on the way. Since
``th_eff >= theta > 0`` and ``|v|`` only shrinks without input, no neuron can fire once
every ``v < theta`` (``is_quiet``). That holds after every step for LIF with reset to
``v_reset``; for the meta-neuron (a threshold that decays below a slowly decaying ``v``)
or subtractive reset, empty steps are stepped explicitly until quiet, then jumped.
Stretches of at most ``SHORT_GAP`` steps are always stepped (cheaper than the jump);
``must_step`` is that rule.

Escape noise (``meta-esc``; Gerstner et al. 2014, ch. 9). The deterministic test
``s = v >= th_eff`` becomes a draw with hazard and per-step probability::

    rho = rho0 * exp((v - th_eff) / delta_u),   p = 1 - exp(-dt * rho),   s = U < p

``U`` the counter-based uniform of ``edged.rng`` keyed on (model seed, stream key, layer,
neuron, absolute step): the same spikes for the same stream whatever the frame
boundaries, checkpoints and restarts. ``delta_u -> 0`` is the deterministic kernel
(``delta_u = 0`` exactly: the ``v >= th_eff`` test, what LIF and meta have). A noisy
neuron can fire at any step, so the closed-form skip of empty stretches no longer
applies: a net with any noisy neuron steps every step (``must_step``).
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import numpy as np

from edged.bits import LANES, add_lanes, ctz, nonzero32
from edged.intrinsics import NeuronKind, check_intrinsics, complete
from edged.jit import borrow, inline_kernel, kernel
from edged.rng import uniform


class Layer(NamedTuple):
    """Per-neuron step coefficients of one layer, each ``float32[n]`` (see module maths)."""

    alpha0: np.ndarray  # exp(-dt/tau)
    kappa_dt: np.ndarray  # dt * kappa / tau
    gain: np.ndarray  # R
    theta: np.ndarray
    beta: np.ndarray
    v_reset: np.ndarray
    alpha_a: np.ndarray  # exp(-dt/tau_a)
    alpha_r: np.ndarray  # exp(-dt/tau_r)
    delta_u: np.ndarray  # escape-noise width; 0: deterministic
    rho_dt: np.ndarray  # dt * rho0


class Net(NamedTuple):
    """Weights and step coefficients of a feed-forward input -> hidden -> output net."""

    w_in: np.ndarray  # float32[n_in, n_hidden]
    w_out: np.ndarray  # float32[n_hidden, n_out]
    w_out_lanes: np.ndarray  # w_out, rows zero-padded to a multiple of LANES floats
    hidden: Layer
    out: Layer
    subtract_reset: bool
    seed: np.uint64  # escape noise: the model's seed (edged.rng)
    noisy: bool  # any neuron with delta_u > 0


class LayerState(NamedTuple):
    """Dynamic state of one layer for many streams, each ``float32[streams, n]``."""

    v: np.ndarray
    a: np.ndarray
    r: np.ndarray


class State(NamedTuple):
    hidden: LayerState
    out: LayerState


def layer(kind: NeuronKind, p: dict[str, np.ndarray], dt: float) -> Layer:
    """Step coefficients of one layer from its intrinsics (validated)."""
    check_intrinsics(kind, p)
    f = complete(p)
    c = Layer(alpha0=np.exp(-dt / f["tau"]), kappa_dt=dt * f["kappa"] / f["tau"],
              gain=f["R"], theta=f["theta"], beta=f["beta"], v_reset=f["v_reset"],
              alpha_a=np.exp(-dt / f["tau_a"]), alpha_r=np.exp(-dt / f["tau_r"]),
              delta_u=f["delta_u"], rho_dt=dt * f["rho0"])
    return Layer(*(np.ascontiguousarray(x, dtype=np.float32) for x in c))


def net(kind: NeuronKind, w_in: np.ndarray, w_out: np.ndarray, hidden: dict, out: dict,
        dt: float, reset: Literal["value", "subtract"] = "value", seed: int = 0) -> Net:
    """Build a ``Net`` from weights and per-layer intrinsics (``seed``: escape noise)."""
    w_in = np.ascontiguousarray(w_in, dtype=np.float32)
    w_out = np.ascontiguousarray(w_out, dtype=np.float32)
    if w_in.ndim != 2 or w_out.ndim != 2 or w_in.shape[1] != w_out.shape[0]:
        raise ValueError(f"weight shapes {w_in.shape} and {w_out.shape} do not chain")
    h, o = layer(kind, hidden, dt), layer(kind, out, dt)
    noisy = bool(np.any(h.delta_u > 0) or np.any(o.delta_u > 0))
    lanes = np.zeros((w_out.shape[0], -(-w_out.shape[1] // LANES) * LANES), np.float32)
    lanes[:, :w_out.shape[1]] = w_out
    return Net(w_in, w_out, lanes, h, o, reset == "subtract", np.uint64(seed), noisy)


def zero_state(n: Net, streams: int) -> State:
    def zeros(k: int) -> LayerState:
        return LayerState(*(np.zeros((streams, k), np.float32) for _ in range(3)))
    return State(zeros(n.w_in.shape[1]), zeros(n.w_out.shape[1]))


def state_bytes(n: Net) -> int:
    """Bytes of neuron state per stream."""
    return 3 * 4 * (n.w_in.shape[1] + n.w_out.shape[1])


@kernel
def exp_nonpos(x: np.ndarray, out: np.ndarray) -> None:
    """``out = exp(x)`` for ``x <= 0`` (float32, ``out`` not aliasing ``x``), vectorisable.

    Cody-Waite reduction ``x = k*ln2 + f`` with ``|f| <= ln2/2``, a degree-7 Taylor
    polynomial for ``exp(f)``, and ``2**k`` added to the exponent bits; ``x`` is clamped
    at -86 (``exp(-86) ~ 4e-38``). Relative error below 1e-7 (about one float32 ulp)."""
    bits = out.view(np.int32)
    for j in range(x.shape[0]):
        xj = max(x[j], np.float32(-86.0))
        k = np.floor(xj * np.float32(1.4426950408889634) + np.float32(0.5))
        f = xj - k * np.float32(0.693359375) + k * np.float32(2.12194440e-4)
        p = np.float32(1.0 / 5040.0)
        p = p * f + np.float32(1.0 / 720.0)
        p = p * f + np.float32(1.0 / 120.0)
        p = p * f + np.float32(1.0 / 24.0)
        p = p * f + np.float32(1.0 / 6.0)
        p = p * f + np.float32(0.5)
        p = p * f + np.float32(1.0)
        out[j] = p * f + np.float32(1.0)
        bits[j] += np.int32(k) << 23


@inline_kernel
def layer_step(c: Layer, st: LayerState, s: int, current: np.ndarray, subtract_reset: bool,
               spikes: np.ndarray, scratch: np.ndarray, noisy: bool, seed, key, layer: int,
               t: int) -> int:
    """Advance one layer of stream ``s`` by one step under ``current`` (its first ``n``
    values, ``n`` the layer's size); write ``spikes``; return their count.
    ``scratch`` is float32 work space of at least twice the layer's size. ``noisy``
    (``Net.noisy``): some neuron may have ``delta_u > 0``; without it the firing test is
    the deterministic one throughout, a loop that vectorises. ``seed``, ``key``, ``layer``
    (0 hidden, 1 output) and the absolute step ``t`` key the escape noise."""
    v, a, r = st.v[s], st.a[s], st.r[s]
    n = v.shape[0]
    one = np.float32(1.0)
    zero = np.float32(0.0)
    exponent = scratch[:n]
    decay = scratch[n:2 * n]
    for j in range(n):
        r[j] = c.alpha_r[j] * r[j] + (one - c.alpha_r[j]) * abs(current[j])
        exponent[j] = -c.kappa_dt[j] * r[j]
    exp_nonpos(exponent, decay)
    n_spikes = 0
    if not noisy:  # the loop below without the draw, kept apart: one firing loop with the
        # draw behind a flag, or split from the reset, costs ~12 % more per step (measured)
        for j in range(n):
            alpha = c.alpha0[j] * decay[j]
            vj = alpha * v[j] + (one - alpha) * c.gain[j] * current[j]
            theta = c.theta[j] + c.beta[j] * a[j]
            fired = vj >= theta
            after = vj - theta if subtract_reset else c.v_reset[j]
            v[j] = after if fired else vj
            a[j] = c.alpha_a[j] * a[j] + (one if fired else zero)
            spikes[j] = fired
            n_spikes += fired
        return n_spikes
    for j in range(n):
        alpha = c.alpha0[j] * decay[j]
        vj = alpha * v[j] + (one - alpha) * c.gain[j] * current[j]
        theta = c.theta[j] + c.beta[j] * a[j]
        if c.delta_u[j] > 0:
            x = min((np.float64(vj) - np.float64(theta)) / np.float64(c.delta_u[j]), 80.0)
            y = np.float64(c.rho_dt[j]) * math.exp(x)
            u = uniform(seed, key, layer, j, t)
            # p = 1 - exp(-y) < y, and expm1 errs by under an ulp: u >= y * (1 + 2**-51) is
            # u > p however p rounds, so expm1 is only needed below that
            fired = u < y * (1.0 + 2.0 ** -51) and u < -math.expm1(-y)
        else:
            fired = vj >= theta
        after = vj - theta if subtract_reset else c.v_reset[j]
        v[j] = after if fired else vj
        a[j] = c.alpha_a[j] * a[j] + (one if fired else zero)
        spikes[j] = fired
        n_spikes += fired
    return n_spikes


class Work(NamedTuple):
    """Work space of one stepping loop (``workspace``), reused by every step."""

    f32: np.ndarray  # float32: the currents (the output's padded as ``w_out_lanes``), scratch
    hidden_spikes: np.ndarray  # uint8[n_hidden]


@inline_kernel
def workspace(n: Net) -> Work:
    n_hidden, n_out = n.w_out.shape
    size = n_hidden + n.w_out_lanes.shape[1] + 2 * max(n_hidden, n_out)
    return Work(np.empty(size, np.float32), np.empty(n_hidden, np.uint8))


@inline_kernel
def step(n: Net, st: State, s: int, key, t: int, channels: np.ndarray,
         out_spikes: np.ndarray) -> int:
    """Step ``t`` (absolute) of stream ``s`` (its noise ``key``, ``edged.rng.stream_key``)
    with input ``channels`` spiking (any int array, repeats add); writes
    ``out_spikes[n_out]`` (uint8) and returns the number of synaptic ops."""
    w = workspace(n)
    return step_into(n, st, s, key, t, channels, w.hidden_spikes, out_spikes, w)


@inline_kernel
def step_layers(n: Net, st: State, s: int, key, t: int, channels: np.ndarray,
                hidden_spikes: np.ndarray, out_spikes: np.ndarray) -> int:
    """``step`` that also writes the hidden layer's spikes to ``hidden_spikes[n_hidden]``."""
    return step_into(n, st, s, key, t, channels, hidden_spikes, out_spikes, workspace(n))


@inline_kernel
def step_into(n: Net, st: State, s: int, key, t: int, channels: np.ndarray,
              hidden_spikes: np.ndarray, out_spikes: np.ndarray, w: Work) -> int:
    """``step_layers`` in the work space ``w`` (``workspace``) of a stepping loop."""
    n_hidden, n_out = n.w_out.shape
    current, out_current = currents(n, w)  # (out_current's first n_out drive the output layer)
    scratch = w.f32[n_hidden + out_current.shape[0]:]
    ops = input_current(n.w_in, channels, current)
    layer_step(n.hidden, st.hidden, s, current, n.subtract_reset, hidden_spikes, scratch,
               n.noisy, n.seed, key, 0, t)
    ops += n_out * spike_current(n.w_out_lanes, hidden_spikes, out_current)
    layer_step(n.out, st.out, s, out_current, n.subtract_reset, out_spikes, scratch,
               n.noisy, n.seed, key, 1, t)
    return ops


@inline_kernel
def currents(n: Net, w: Work):
    """The hidden layer's input current and the output layer's (padded as ``w_out_lanes``)
    in the work space ``w``: a step (``step_into``) leaves its own there."""
    n_hidden = n.w_out.shape[0]
    return w.f32[:n_hidden], w.f32[n_hidden:n_hidden + n.w_out_lanes.shape[1]]


@inline_kernel
def input_current(w_in: np.ndarray, channels: np.ndarray, current: np.ndarray) -> int:
    """``current`` = the sum of the rows of ``w_in`` of ``channels`` (repeats add, in the
    order given); returns the synaptic ops."""
    current[:] = 0
    for ch in channels:
        row = w_in[ch]
        for j in range(current.shape[0]):
            current[j] += row[j]
    return channels.shape[0] * current.shape[0]


@inline_kernel
def spike_current(w: np.ndarray, spikes: np.ndarray, current: np.ndarray) -> int:
    """``current`` = the sum of the rows of ``w`` whose neuron spiked (uint8 ``spikes``), in
    neuron order; returns how many spiked. ``w``'s rows and ``current`` are as wide, a
    multiple of ``LANES`` (``Net.w_out_lanes``): a row is added as whole vectors. The spikes
    are read 32 at a time as a bit mask and only the set bits visited: a branch per neuron
    mispredicts at sparse, irregular spiking."""
    width = current.shape[0]
    if width % LANES or w.shape[1] != width:  # (an add past either's end otherwise)
        raise ValueError("spike_current: w's rows and current must be as wide, a multiple of LANES")
    current[:] = 0
    n = 0
    size = spikes.shape[0]
    for c in range(0, size, 32):
        if c + 32 <= size:
            fired = nonzero32(spikes, c)
        else:
            fired = np.uint64(0)
            for t in range(size - c):
                fired |= np.uint64(spikes[c + t] != 0) << np.uint64(t)
        while fired:
            row = (c + ctz(fired)) * width
            fired &= fired - np.uint64(1)
            for k in range(0, width, LANES):
                add_lanes(current, k, w, row + k)
            n += 1
    return n


@kernel
def _layer_quiet(c: Layer, st: LayerState, s: int) -> bool:
    v = st.v[s]
    for j in range(v.shape[0]):
        if v[j] >= c.theta[j]:
            return False
    return True


@kernel
def is_quiet(n: Net, st: State, s: int) -> bool:
    """True when no neuron of stream ``s`` can fire without input (all ``v < theta``)."""
    return _layer_quiet(n.hidden, st.hidden, s) and _layer_quiet(n.out, st.out, s)


SHORT_GAP = 4


@inline_kernel
def must_step(n: Net, st: State, s: int, k: int) -> bool:
    """Whether the next of ``k`` empty steps must be stepped rather than jumped. (Inlined:
    it is asked at every empty step, and a call handing on the whole net and state cost
    ~8 % of the engine.)"""
    return k <= SHORT_GAP or n.noisy or not is_quiet(n, st, s)


@kernel
def _layer_decay(c: Layer, st: LayerState, s: int, k: int) -> None:
    v, a, r = st.v[s], st.a[s], st.r[s]
    for j in range(v.shape[0]):
        ar = np.float64(c.alpha_r[j])
        rj = np.float64(r[j])
        drive = rj * k if ar == 1.0 else rj * ar * (1.0 - ar ** k) / (1.0 - ar)
        decay = np.float64(c.alpha0[j]) ** k * math.exp(-np.float64(c.kappa_dt[j]) * drive)
        v[j] = np.float32(v[j] * decay)
        a[j] = np.float32(a[j] * np.float64(c.alpha_a[j]) ** k)
        r[j] = np.float32(rj * ar ** k)


@kernel
def decay(n: Net, st: State, s: int, k: int) -> None:
    """Advance quiet stream ``s`` by ``k`` empty steps in closed form (no spikes)."""
    if k > 0:
        _layer_decay(n.hidden, st.hidden, s, k)
        _layer_decay(n.out, st.out, s, k)


@inline_kernel
def advance(n: Net, st: State, s: int, key, t: np.ndarray, ch: np.ndarray, i: int, now: int,
            end: int, out_spikes: np.ndarray, w: Work):
    """One move of stream ``s`` at step ``now < end``, events ``(t, ch)`` sorted, ``t[i:]``
    not yet taken: step ``now`` (with its events, or none while ``must_step``) writing
    ``out_spikes``, or decay the empty stretch up to the next event or ``end`` in closed
    form. ``w``: the loop's ``workspace``. Returns ``(i, now', decayed, ops)``:
    ``decayed`` is True for a closed-form jump (no spikes; ``out_spikes`` untouched)."""
    nxt = t[i] if i < t.shape[0] else end
    if nxt > now:  # an empty stretch [now, nxt)
        if must_step(n, st, s, nxt - now):
            return i, now + 1, False, step_into(n, st, s, key, now, ch[:0], w.hidden_spikes,
                                                out_spikes, w)
        decay(n, st, s, nxt - now)
        return i, nxt, True, 0
    j = i
    while j < t.shape[0] and t[j] == now:
        j += 1
    return j, now + 1, False, step_into(n, st, s, key, now, ch[i:j], w.hidden_spikes, out_spikes, w)


@kernel
def simulate(n: Net, st: State, s: int, key, t: np.ndarray, ch: np.ndarray,
             t0: int, out: np.ndarray) -> int:
    """Advance stream ``s`` (noise ``key``) over steps ``t0 .. t0 + len(out) - 1`` by
    ``advance``, events ``(t[i], ch[i])`` sorted by time within that range; output spikes
    go to ``out[step - t0]``. Returns synaptic ops."""
    n, st, t, ch, out = borrow((n, st, t, ch, out))  # (held by the caller throughout)
    t_end = t0 + out.shape[0]
    w = workspace(n)
    ops = 0
    now = t0
    i = 0
    while now < t_end:
        i, nxt, decayed, o = advance(n, st, s, key, t, ch, i, now, t_end, out[now - t0], w)
        if decayed:
            out[now - t0:nxt - t0] = 0
        ops += o
        now = nxt
    return ops
