"""The daemon's ZeroMQ sockets: ingest (PULL, or SUB to all topics), publish (PUB), their
monitors, and CURVE (keys and allow-list: ``edged.security``).

``bind`` starts the ZAP authenticator before any socket exists when CURVE is on, makes
both sockets CURVE servers, binds publish and binds (or connects) ingest. The ingest
monitor reports disconnects (``edged_zmq_disconnects_total``); with CURVE both monitors
report refused handshakes (``edged_zmq_auth_failures_total{socket}``). ``close`` lingers
on PUB only, so decisions already queued leave.

The service sees a transport through this class's methods; ``edged.jetstream.Transport``
is the other one (NATS). ``wake`` is the socket whose readability means frames are
queued (a drain waits ``QUIET_S`` on it for frames still in flight);
``receive`` takes a batch of queued frames and ``send_decisions`` sends each decision as
two frames (topic = stream id, payload) without blocking (PUB drops), both in one
compiled call (``edged.zmqjit``) where libzmq is reachable from compiled code, else one
pyzmq call per message; over ZeroMQ there is no resume point and nothing to confirm.
"""

from __future__ import annotations

import concurrent.futures
import time
from typing import Callable, NamedTuple

import numpy as np
import zmq

from edged import security
from edged.config import Config
from edged.protocol import HEARTBEAT_TOPIC, FrameError, Packed, concat

QUIET_S = 0.1  # a stop's drain ends once nothing arrived for this long: frames in flight are in

_MORE = zmq.SNDMORE | zmq.NOBLOCK


class Received(NamedTuple):
    """A batch of frames (``receive``): frame ``f`` is ``joined[ends[f]:ends[f + 1]]``,
    received at ``times[f]``; ``more``: the batch closed on a limit, so more may be queued."""

    joined: bytes
    ends: list[int]
    times: list[float]
    bufs: list | None  # the frames as the transport gave them, where they carry more (NATS)
    more: bool

    @classmethod
    def of(cls, buf: np.ndarray, ends: np.ndarray, times: np.ndarray, n: int, more: bool) -> "Received":
        """The first ``n`` frames of a compiled receive's buffers (``ends``: ``n + 1`` used)."""
        bounds = ends[:n + 1].tolist()
        return cls(buf[:bounds[-1]].tobytes(), bounds, times[:n].tolist(), None, more)

    def buf(self, f: int):
        """Frame ``f`` as received."""
        return self.joined[self.ends[f]:self.ends[f + 1]] if self.bufs is None else self.bufs[f]


def receive_each(recv: Callable, clock: Callable[[], float], budget: int, wait_s: float,
                 close_bytes: int, keep: bool = False) -> Received:
    """Up to ``budget`` frames by one non-blocking ``recv`` each, until none is waiting,
    ``wait_s`` after the first or ``close_bytes`` in all (``keep``: the frames as ``bufs``)."""
    bufs, times, size = [], [], 0
    while len(bufs) < budget:
        try:
            buf = recv(zmq.NOBLOCK)
        except zmq.Again:
            break
        bufs.append(buf)
        times.append(clock())
        size += len(buf)
        if times[-1] - times[0] >= wait_s or size >= close_bytes:
            return Received(*concat(bufs), times, bufs if keep else None, True)
    return Received(*concat(bufs), times, bufs if keep else None, len(bufs) == budget)


def send_packed(sock: zmq.Socket, packed: Packed, compiled: bool) -> None:
    """Each decision of ``packed`` as two frames (topic, payload) without blocking, by one
    ``edged.zmqjit.send`` (``compiled``) or one pyzmq call per frame; what a full queue
    refuses is dropped (PUB drops anyway)."""
    if compiled:
        from edged import zmqjit

        _, err = zmqjit.send(sock.underlying, *packed)
        if err:
            raise zmq.ZMQError(err)
        return
    ids, id_ends, out, ends = packed
    id_bounds, bounds = id_ends.tolist(), ends.tolist()
    for k in range(len(bounds) - 1):
        try:
            sock.send(ids[id_bounds[k]:id_bounds[k + 1]], _MORE)
            sock.send(out[bounds[k]:bounds[k + 1]], zmq.NOBLOCK)
        except zmq.Again:
            pass


class Sockets:
    """Ingest and publish for one ``Service`` or the ``edged.workers`` supervisor; the
    metrics are injected."""

    def __init__(self, ctx: zmq.Context, cfg: Config, metrics, curve: security.ServerKeys | None = None,
                 compiled: bool | None = None):
        self.ctx, self.cfg, self.metrics, self.curve = ctx, cfg, metrics, curve
        self.ingest = self.publish = None
        self.monitor = self.publish_monitor = None  # PAIR sockets of the socket monitors
        self.auth = None  # the ZAP authenticator thread (CURVE only)
        self.endpoints: dict[str, str] = {}
        self._compiled = compiled  # batches by edged.zmqjit (else pyzmq per message); None:
        self._buf = self._ends = self._times = None  # where it is available. receive's buffers

    def bind(self) -> dict[str, str]:
        """Open ingest and publish; return the endpoints actually bound."""
        cfg, curve = self.cfg, self.curve
        monitor_events = zmq.EVENT_DISCONNECTED
        if curve is not None:
            self.auth = security.start_authenticator(self.ctx, curve)  # before any bind
            monitor_events |= security.HANDSHAKE_FAILED
        self.publish = self.ctx.socket(zmq.PUB)
        self.publish.linger = 0
        self.publish.sndhwm = cfg.publish_hwm
        if curve is not None:
            security.make_server(self.publish, curve)
            self.publish_monitor = self.publish.get_monitor_socket(security.HANDSHAKE_FAILED)
        self.publish.bind(cfg.publish_endpoint)
        kind = zmq.PULL if cfg.ingest_socket == "pull" else zmq.SUB
        self.ingest = self.ctx.socket(kind)
        self.ingest.linger = 0
        self.ingest.rcvhwm = cfg.ingest_hwm
        self.ingest.maxmsgsize = cfg.ingest_max_frame_bytes
        if kind == zmq.SUB:
            self.ingest.setsockopt(zmq.SUBSCRIBE, b"")
        if curve is not None:
            security.make_server(self.ingest, curve)
        self.monitor = self.ingest.get_monitor_socket(monitor_events)
        if cfg.ingest_bind:
            self.ingest.bind(cfg.ingest_endpoint)
            ingest = self.ingest.last_endpoint.decode()
        else:
            self.ingest.connect(cfg.ingest_endpoint)
            ingest = cfg.ingest_endpoint
        self.endpoints = {"ingest": ingest, "publish": self.publish.last_endpoint.decode()}
        return self.endpoints

    @property
    def compiled(self) -> bool:
        """Whether batches go through ``edged.zmqjit`` (imported on first use: Numba)."""
        if self._compiled is None:
            from edged import zmqjit

            self._compiled = zmqjit.AVAILABLE
        return self._compiled

    @property
    def ingest_kind(self) -> str:
        return self.cfg.ingest_socket

    @property
    def wake(self) -> zmq.Socket:
        return self.ingest

    def resume_point(self, header) -> None:
        return None

    def start(self, resume) -> None:
        """Nothing to start: ingest was bound by ``bind``."""

    def confirm(self) -> tuple[None, concurrent.futures.Future]:
        """No transport header to checkpoint, and nothing to confirm (PUB is fire-and-forget):
        a future already done."""
        done: concurrent.futures.Future = concurrent.futures.Future()
        done.set_result(None)
        return None, done

    def receive(self, budget: int, wait_s: float, close_bytes: int,
                clock: Callable[[], float] = time.perf_counter) -> Received:
        """Up to ``budget`` queued frames, without blocking, until none is waiting,
        ``wait_s`` after the first or ``close_bytes`` in all, each stamped by ``clock``
        when received (``edged.zmqjit`` for ``time.perf_counter``)."""
        if not (self.compiled and clock is time.perf_counter):
            return receive_each(self.ingest.recv, clock, budget, wait_s, close_bytes)
        from edged import zmqjit

        room = close_bytes + self.cfg.ingest_max_frame_bytes
        if self._buf is None or self._buf.size < room or self._ends.size < budget + 1:
            self._buf = np.empty(room, np.uint8)
            self._ends, self._times = np.empty(budget + 1, np.int64), np.empty(budget)
        n, err = zmqjit.recv(self.ingest.underlying, self._buf, self._ends, self._times, budget,
                             wait_s, close_bytes)
        if err not in (0, zmqjit.EAGAIN):
            raise zmq.ZMQError(err)
        return Received.of(self._buf, self._ends, self._times, n, err == 0)

    def warm(self) -> None:
        """Compile (or load) the batch calls: a receive of no frame, a send of none (no
        socket is touched: bound or not)."""
        if self.compiled:
            from edged import zmqjit

            zmqjit.recv(0, np.empty(1, np.uint8), np.zeros(1, np.int64), np.empty(1), 0, 0.0, 0)
            zmqjit.send(0, *Packed.of([], []))

    def send_decisions(self, streams: list[str], seqs: list[int], packed: Packed) -> None:
        send_packed(self.publish, packed, self.compiled)

    def send_heartbeat(self, payload: bytes) -> None:
        try:
            self.publish.send_multipart([HEARTBEAT_TOPIC, payload], zmq.NOBLOCK)
        except zmq.Again:
            pass

    def poller(self) -> zmq.Poller:
        """A poller on ingest and the monitors."""
        poller = zmq.Poller()
        for sock in (self.ingest, self.monitor, self.publish_monitor):
            if sock is not None:
                poller.register(sock, zmq.POLLIN)
        return poller

    def monitor_events(self, ready: dict) -> list[FrameError]:
        """Read the monitors among ``ready`` (``dict(poller.poll())``) and count what they
        report; return an ``auth`` ``FrameError`` per refused handshake, for the reject log."""
        refused: list[FrameError] = []
        for monitor, name in ((self.monitor, "ingest"), (self.publish_monitor, "publish")):
            if monitor is not None and monitor in ready:
                refused += self._read(monitor, name)
        return refused

    def _read(self, monitor: zmq.Socket, name: str) -> list[FrameError]:
        from zmq.utils.monitor import recv_monitor_message

        refused = []
        while True:
            try:
                event = recv_monitor_message(monitor, zmq.NOBLOCK)
            except zmq.Again:
                return refused
            if event["event"] == zmq.EVENT_DISCONNECTED and name == "ingest":
                self.metrics.zmq_disconnects.inc()
            elif event["event"] & security.HANDSHAKE_FAILED:
                self.metrics.zmq_auth_failures.labels(name).inc()
                refused.append(FrameError("auth", f"{name}: CURVE handshake refused "
                                                  f"({event['endpoint'].decode(errors='replace')})"))

    def close(self, linger_s: float = 1.0) -> None:
        """Close both sockets and their monitors; PUB gets ``linger_s`` to send its queue."""
        if self.monitor is not None:
            self.ingest.disable_monitor()
            self.monitor.close(linger=0)
        if self.ingest is not None:
            self.ingest.close(linger=0)
        if self.publish_monitor is not None:
            self.publish.disable_monitor()
            self.publish_monitor.close(linger=0)
            self.publish_monitor = None
        if self.publish is not None:
            self.publish.close(linger=int(linger_s * 1000))
        if self.auth is not None:
            self.auth.stop()
            self.auth = None
