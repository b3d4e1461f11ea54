"""Offline inference on one spike recording (``edged run``).

Decisions come from the daemon's own ``edged.engine`` on one fresh stream simulated over
steps ``[0, steps)``, read out by the model's ONNX graph, so ``edged run`` and ``edged
serve`` decide the same for the same file. Each decision carries the daemon's fields that
mean something offline: ``v, stream, seq, t, label, class, scores, lzc, model`` (no epoch,
latency, energy or CPU time).

The raster steps every step with ``edged.neurons.step_layers`` (the kernel's step,
exposing the hidden layer; no closed-form jumps over empty stretches): the ``hidden``
and ``output`` spike trains as ``uint8[steps, n]``. Both take the stream id, which keys
an escape-noise model's draws: the same id gives the daemon's spikes.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from edged import neurons
from edged.jit import kernel


class Raster(NamedTuple):
    hidden: np.ndarray  # uint8[steps, n_hidden]
    output: np.ndarray  # uint8[steps, n_out]


def check_events(t: np.ndarray, ch: np.ndarray, n_in: int, steps: int) -> None:
    """Raise ``ValueError`` naming the first event that is not sorted, negative, at or
    after ``steps``, or on a channel outside ``[0, n_in)``."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    for name, bad in (("time before 0", t < 0), ("time at or after --steps", t >= steps),
                      ("channel outside the model's inputs", (ch < 0) | (ch >= n_in)),
                      ("time earlier than the event before it", np.r_[False, np.diff(t) < 0])):
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"event {i} (t={int(t[i])}, ch={int(ch[i])}): {name} "
                             f"(steps {steps}, inputs {n_in})")


@kernel
def _raster(net, st, key, t, ch, hidden, out):
    i = 0
    for now in range(out.shape[0]):
        j = i
        while j < t.shape[0] and t[j] == now:
            j += 1
        neurons.step_layers(net, st, 0, key, now, ch[i:j], hidden[now], out[now])
        i = j


def raster(net: neurons.Net, t: np.ndarray, ch: np.ndarray, steps: int, stream: str = "file") -> Raster:
    """Spike trains of both layers of cold stream ``stream`` over ``[0, steps)`` (events checked)."""
    from edged.rng import stream_key

    t = np.ascontiguousarray(t, np.int64)
    ch = np.ascontiguousarray(ch, np.int64)
    check_events(t, ch, net.w_in.shape[0], steps)
    r = Raster(np.zeros((steps, net.w_in.shape[1]), np.uint8), np.zeros((steps, net.w_out.shape[1]), np.uint8))
    _raster(net, neurons.zero_state(net, 1), stream_key(stream), t, ch, r.hidden, r.output)
    return r


def decisions(model, t: np.ndarray, ch: np.ndarray, steps: int, stream: str = "file") -> list[dict[str, Any]]:
    """The decisions ``edged serve`` makes on stream ``stream`` for events ``(t, ch)``
    and a clock advanced to ``steps``; the model must have a readout."""
    from edged.engine import Engine
    from edged.protocol import VERSION
    from edged.readout import Readout

    if not model.has_readout:
        raise ValueError("the model has no readout: no decisions (use --raster for spike trains)")
    t = np.ascontiguousarray(t, np.int64)
    ch = np.ascontiguousarray(ch, np.int64)
    check_events(t, ch, model.n_in, steps)
    eng = Engine.for_model(model)
    eng.reset(0, stream)
    d = eng.advance(0, t, ch, steps)
    scores = Readout(model.readout).scores(d.features)
    classes = np.argmax(scores, axis=1).tolist()
    return [{"v": VERSION, "stream": stream, "seq": i, "t": int(end), "label": model.classes[c],
             "class": c, "scores": scores[i].tolist(), "lzc": d.lzc[i].tolist(), "model": model.sha256}
            for i, (end, c) in enumerate(zip(d.t.tolist(), classes))]
