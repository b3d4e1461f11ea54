"""Decisions and heartbeats out (the wire format: ``edged/PROTOCOL.md``).

A served batch's decisions are encoded in one compiled call
(``edged.protocol.pack_decisions``, the bytes of ``encode_decisions``) and handed in frame
order to the transport (``edged.sockets.Sockets``: two frames on PUB, dropped rather than
blocking; ``edged.jetstream.Transport``: JetStream, deduplicated). A decision carries its
frame's latency (received to published), the
energy estimate of the synaptic ops since its stream's previous decision, and the batch's
CPU time shared per decision. Heartbeats ``{v, epoch, heartbeat: n}`` (ZeroMQ topic
``HEARTBEAT_TOPIC``) go out from the loop (``tick``), so their absence means the loop is
stuck or the process stopped.
"""

from __future__ import annotations

import msgpack
import numpy as np

from edged import protocol
from edged.jit import bound

pack_decisions = bound(protocol.pack_decisions)


def _decision_rows(first, seq0, received, now):
    """Per decision (frame ``f``'s are ``first[f]:first[f + 1]``): its frame, its seq (from
    ``seq0[f]``) and its latency (``now - received[f]``); and the latency of each frame
    that made any."""
    n_frames = first.shape[0] - 1
    frame = np.empty(first[n_frames], np.int64)
    seqs = np.empty(first[n_frames], np.int64)
    latency = np.empty(first[n_frames])
    frame_latency = np.empty(n_frames)
    k = 0
    for f in range(n_frames):
        for r in range(first[f], first[f + 1]):
            frame[r], seqs[r], latency[r] = f, seq0[f] + r - first[f], now - received[f]
        if first[f + 1] > first[f]:
            frame_latency[k] = now - received[f]
            k += 1
    return frame, seqs, latency, frame_latency[:k]


decision_rows = bound(_decision_rows)  # (called through its entry point: Numba's dispatch costs ~15 us here)


class Publisher:
    """Publishes through ``sockets`` (``edged.sockets.Sockets`` or its NATS twin) for ``model``; the
    metrics and the energy model are injected."""

    def __init__(self, sockets, model, epoch: int, metrics, energy, heartbeat_interval: float = 0.0):
        self.sockets, self.epoch, self.metrics, self.energy = sockets, epoch, metrics, energy
        self.layout = protocol.decision_layout(epoch, [str(c) for c in model.classes], model.n_out,
                                               model.sha256)
        self.hop = model.hop
        self.heartbeat_interval = heartbeat_interval
        self.heartbeats = 0
        self._next_heartbeat = 0.0

    def decisions(self, batch, d, scores: np.ndarray, first: np.ndarray, seq0: np.ndarray,
                  ops_per_decision: np.ndarray, now: float, cpu_s: float) -> None:
        """Publish ``d`` (``Engine.advance_many``'s decisions for ``batch``, scored
        ``scores``): frame ``f``'s are rows ``first[f]:first[f + 1]``, numbered from
        ``seq0[f]``, each billed ``ops_per_decision[f]`` synaptic ops."""
        frame, seqs, latency, frame_latency = decision_rows(first, seq0, np.array(batch.received), now)
        seqs = seqs.tolist()
        streams = [batch.streams[f] for f in frame.tolist()]
        packed = protocol.pack_decisions_with(pack_decisions, self.layout, streams, seqs, d.t,
                                              np.argmax(scores, axis=1), scores, d.lzc, latency,
                                              self.energy.decision(ops_per_decision[frame], self.hop),
                                              cpu_s)
        self.sockets.send_decisions(streams, seqs, packed)
        self.metrics.latency.observe_all(latency)
        self.metrics.frame_seconds.observe_all(frame_latency)

    def tick(self, now: float) -> None:
        """Send a heartbeat when one is due."""
        if self.heartbeat_interval > 0 and now >= self._next_heartbeat:
            self.heartbeat(now)

    def heartbeat(self, now: float) -> None:
        """Publish ``{v, epoch, heartbeat: n}`` (never blocks)."""
        self._next_heartbeat = now + self.heartbeat_interval
        self.heartbeats += 1
        self.sockets.send_heartbeat(msgpack.packb({"v": 1, "epoch": self.epoch, "heartbeat": self.heartbeats}))
