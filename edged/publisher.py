"""Decisions and heartbeats out on PUB (the wire format: ``edged/PROTOCOL.md``).

A served batch's decisions are encoded in one call (``edged.protocol.encode_decisions``)
and sent in frame order, each as two frames (topic = stream id, payload); PUB drops
rather than blocks. A decision carries its frame's latency (received to published), the
energy estimate of the synaptic ops since its stream's previous decision, and the batch's
CPU time shared per decision. Heartbeats ``{v, epoch, heartbeat: n}`` on
``HEARTBEAT_TOPIC`` go out from the loop (``tick``), so their absence means the loop is
stuck or the process stopped.
"""

from __future__ import annotations

import msgpack
import numpy as np
import zmq

from edged.protocol import HEARTBEAT_TOPIC, encode_decisions

_MORE = zmq.SNDMORE | zmq.NOBLOCK


class Publisher:
    """Publishes on ``sockets.publish`` (``edged.sockets.Sockets``) for ``model``; the
    metrics and the energy model are injected."""

    def __init__(self, sockets, model, epoch: int, metrics, energy, heartbeat_interval: float = 0.0):
        self.sockets, self.epoch, self.metrics, self.energy = sockets, epoch, metrics, energy
        self.labels = [str(c) for c in model.classes]
        self.hop, self.window, self.sha256 = model.hop, model.window, model.sha256
        i = model.features.index("lzc") if "lzc" in model.features else None
        self._lzc_cols = None if i is None else slice(i * model.n_out, (i + 1) * model.n_out)
        self.heartbeat_interval = heartbeat_interval
        self.heartbeats = 0
        self._next_heartbeat = 0.0

    def lzc_of(self, d) -> np.ndarray:
        """Normalised LZ complexity per decision and output neuron (``float32[k, n_out]``):
        the readout's own ``lzc`` feature columns when it has them, so both agree."""
        if self._lzc_cols is not None:
            return d.features[:, self._lzc_cols]
        from edged.lzc import normalise

        return (np.asarray(d.lz, np.float64) * normalise(1, self.window)).astype(np.float32)

    def decisions(self, batch, d, scores: np.ndarray, first: list[int], seq0: list[int],
                  ops_per_decision: list[float], now: float, cpu_s: float) -> None:
        """Publish ``d`` (``Engine.advance_many``'s decisions for ``batch``, scored
        ``scores``): frame ``f``'s are rows ``first[f]:first[f + 1]``, numbered from
        ``seq0[f]``, each billed ``ops_per_decision[f]`` synaptic ops."""
        streams, seqs, latency, energy_j, frame_latency = [], [], [], [], []
        for f, stream in enumerate(batch.streams):
            k = first[f + 1] - first[f]
            if k:
                lat = now - batch.received[f]
                frame_latency.append(lat)
                streams += [stream] * k
                seqs += range(seq0[f], seq0[f] + k)
                latency += [lat] * k
                energy_j += [self.energy.decision(ops_per_decision[f], self.hop)] * k
        classes = np.argmax(scores, axis=1).tolist()
        labels = self.labels
        payloads = encode_decisions(streams, self.epoch, seqs, d.t.tolist(), [labels[c] for c in classes],
                                    classes, scores.tolist(), self.lzc_of(d).tolist(), latency,
                                    energy_j, cpu_s, self.sha256)
        send = self.sockets.publish.send
        for stream, payload in zip(streams, payloads):
            try:
                send(stream.encode(), _MORE)
                send(payload, zmq.NOBLOCK)
            except zmq.Again:  # PUB drops rather than blocks; kept for other socket types
                pass
        for observe, values in ((self.metrics.latency.observe, latency),
                                (self.metrics.frame_seconds.observe, frame_latency)):
            for lat in values:
                observe(lat)

    def tick(self, now: float) -> None:
        """Send a heartbeat when one is due."""
        if self.heartbeat_interval > 0 and now >= self._next_heartbeat:
            self.heartbeat(now)

    def heartbeat(self, now: float) -> None:
        """Publish ``{v, epoch, heartbeat: n}`` on ``HEARTBEAT_TOPIC`` (never blocks)."""
        self._next_heartbeat = now + self.heartbeat_interval
        self.heartbeats += 1
        try:
            self.sockets.publish.send_multipart(
                [HEARTBEAT_TOPIC, msgpack.packb({"v": 1, "epoch": self.epoch, "heartbeat": self.heartbeats})],
                zmq.NOBLOCK)
        except zmq.Again:
            pass
