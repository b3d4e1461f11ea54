"""``edged bench kernels``: the streaming neuron step against a plain NumPy step.

Net: 256 inputs (5 % active per step) -> 512 hidden -> 10 outputs, meta-neurons by
default. ``numpy_step`` is the straightforward NumPy version of ``edged.neurons.step``
(the same maths, one array op per line); the tests use it as their reference.
"""

from __future__ import annotations

import argparse

import numpy as np


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--neuron", choices=("meta", "lif", "meta-esc"), default="meta")
    p.add_argument("--inputs", type=int, default=256)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--outputs", type=int, default=10)
    p.add_argument("--density", type=float, default=0.05, help="fraction of inputs spiking per step")
    p.add_argument("--steps", type=int, default=2000, help="distinct input steps cycled through")
    p.add_argument("--window", type=int, default=1024, help="LZ window (steps) for the state size")
    p.add_argument("--hop", type=int, default=16, help="decision hop (steps) for the state size")
    p.add_argument("--seed", type=int, default=0)


def example_net(kind: str, n_in: int, n_hidden: int, n_out: int, seed: int):
    """A random net with the untrained default intrinsics."""
    from edged import neurons
    from edged.intrinsics import defaults

    rng = np.random.default_rng(seed)
    return neurons.net(kind, rng.normal(0.0, 1.5, (n_in, n_hidden)),
                       rng.normal(0.0, 0.5, (n_hidden, n_out)),
                       defaults(kind, n_hidden, rng), defaults(kind, n_out, rng),
                       dt=1e-3)


def _numpy_layer(c, st, s, current, subtract_reset):
    v, a, r = st.v[s], st.a[s], st.r[s]
    r[:] = c.alpha_r * r + (1 - c.alpha_r) * np.abs(current)
    alpha = c.alpha0 * np.exp(-c.kappa_dt * r)
    v_new = alpha * v + (1 - alpha) * c.gain * current
    theta = c.theta + c.beta * a
    fired = v_new >= theta
    v[:] = np.where(fired, v_new - theta if subtract_reset else c.v_reset, v_new)
    a[:] = c.alpha_a * a + fired
    return fired


def numpy_step(n, st, s: int, channels: np.ndarray) -> np.ndarray:
    """One step of ``edged.neurons.step`` in plain NumPy; returns the output spikes (bool)."""
    hidden = _numpy_layer(n.hidden, st.hidden, s, n.w_in[channels].sum(axis=0), n.subtract_reset)
    return _numpy_layer(n.out, st.out, s, n.w_out[hidden].sum(axis=0), n.subtract_reset)


def run(args: argparse.Namespace) -> dict:
    from edged import neurons
    from edged.bench import best_time, result
    from edged.jit import bind

    n = example_net(args.neuron, args.inputs, args.hidden, args.outputs, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    active = rng.random((args.steps, args.inputs)) < args.density
    channels = [np.flatnonzero(row).astype(np.int64) for row in active]
    t = np.concatenate([np.full(len(c), i, np.int64) for i, c in enumerate(channels)])
    ch = np.concatenate(channels)
    out = np.zeros(args.outputs, np.uint8)
    outs = np.zeros((args.steps, args.outputs), np.uint8)

    state = neurons.zero_state(n, 1)
    key = np.uint64(0)
    step = bind(neurons.step, n, state, 0, key, 0, channels[0], out)
    simulate = bind(neurons.simulate, n, state, 0, key, t, ch, 0, outs)
    cursor = iter(range(1 << 62))

    def streaming():
        i = next(cursor)
        step(n, state, 0, key, i, channels[i % args.steps], out)

    def inloop():
        simulate(n, state, 0, key, t, ch, 0, outs)

    np_state = neurons.zero_state(n, 1)

    def numpy():
        numpy_step(n, np_state, 0, channels[next(cursor) % args.steps])

    from edged.engine import Engine

    per_stream = Engine(n, args.window, args.hop, streams=16).state_bytes()
    base = ("numpy_step_us", best_time(numpy) * 1e6)
    results = [
        result(*base, "us"),
        result("edged_step_us", best_time(streaming) * 1e6, "us", base),
        result("edged_inloop_step_us", best_time(inloop) / args.steps * 1e6, "us", base),
        result("neuron_state_bytes_per_stream", neurons.state_bytes(n), "B"),
        result("stream_state_bytes", per_stream, "B"),
        result("stream_state_gib_10k_streams", per_stream * 10_000 / 2**30, "GiB"),
    ]
    return {"bench": "kernels",
            "params": {"neuron": args.neuron, "net": f"{args.inputs}-{args.hidden}-{args.outputs}",
                       "density": args.density, "window": args.window, "hop": args.hop,
                       "seed": args.seed},
            "results": results,
            "notes": ["edged_step_us: one step called from Python through jit.bind",
                      "edged_inloop_step_us: the same step inside one neurons.simulate call",
                      f"stream_state: neurons + LZ windows (W={args.window}, H={args.hop}) "
                      "+ clock, as edged.engine.Engine holds them"]}
