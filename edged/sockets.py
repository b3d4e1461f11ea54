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
``send_decisions`` sends each decision as two frames (topic = stream id, payload)
without blocking (PUB drops); over ZeroMQ there is no resume point and nothing to confirm.
"""

from __future__ import annotations

import concurrent.futures

import zmq

from edged import security
from edged.config import Config
from edged.protocol import HEARTBEAT_TOPIC, FrameError

QUIET_S = 0.1  # a stop's drain ends once nothing arrived for this long: frames in flight are in

_MORE = zmq.SNDMORE | zmq.NOBLOCK


class Sockets:
    """Ingest and publish for one ``Service`` or the ``edged.workers`` supervisor (a worker
    publishes on ``publish_kind=zmq.XPUB``); the metrics are injected."""

    def __init__(self, ctx: zmq.Context, cfg: Config, metrics, curve: security.ServerKeys | None = None,
                 publish_kind: int = zmq.PUB):
        self.ctx, self.cfg, self.metrics, self.curve = ctx, cfg, metrics, curve
        self.publish_kind = publish_kind
        self.ingest = self.publish = None
        self.monitor = self.publish_monitor = None  # PAIR sockets of the socket monitors
        self.auth = None  # the ZAP authenticator thread (CURVE only)
        self.endpoints: dict[str, str] = {}

    def bind(self) -> dict[str, str]:
        """Open ingest and publish; return the endpoints actually bound."""
        cfg, curve = self.cfg, self.curve
        monitor_events = zmq.EVENT_DISCONNECTED
        if curve is not None:
            self.auth = security.start_authenticator(self.ctx, curve)  # before any bind
            monitor_events |= security.HANDSHAKE_FAILED
        self.publish = self.ctx.socket(self.publish_kind)
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

    def send_decisions(self, streams: list[str], seqs: list[int], payloads: list[bytes]) -> None:
        send = self.publish.send
        for stream, payload in zip(streams, payloads):
            try:
                send(stream.encode(), _MORE)
                send(payload, zmq.NOBLOCK)
            except zmq.Again:  # PUB drops rather than blocks; kept for other socket types
                pass

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
