"""``edged serve --workers N``: N serving processes behind one ingest and one publish endpoint.

The process systemd starts is the supervisor (``main``); it spawns N workers, each an
``edged.service.main`` run with a ``Link``, on private ``ipc://`` endpoints in a 0700
temporary directory::

    sources -> ingest (PULL|SUB, public) -> router -> PUSH ipc w<i>.in -> worker i (PULL)
    worker i XPUB ipc w<i>.out -> XSUB -> zmq.proxy -> PUB publish (public) -> subscribers

* Routing: a frame goes to worker ``shard_of(stream id) = crc32(UTF-8 bytes) % N``. The
  router unpacks the msgpack map only to read ``stream`` (``stream_key``, msgpack's C
  unpacker under the same limits as ``edged.protocol.decode_frame``) and passes the bytes
  on untouched; the worker validates everything, as a single process does. One stream is
  one worker over one FIFO pipe, so per-stream order and the decisions are those of
  ``--workers 1``. A frame with no stream id to route on (not msgpack, not a map, no
  string ``stream``) is rejected by the router, counted under ``worker="router"``.
* Back-pressure: a send to a worker whose queue (``--ingest-hwm``) is full waits; the
  router then stops reading ingest (PULL pushes back on every source) and goes on
  supervising.
* Publish: decisions pass through ``zmq.proxy`` (C, in a thread, no GIL); the public PUB
  filters for the subscribers. The proxy's XSUB subscribes to everything, and a (re)started
  worker serves nothing before that subscription reached its XPUB (``Link.ready``): a
  PUB drops what it sends before its first subscriber, and a restarted worker would
  otherwise decide the frames queued for it before the XSUB had reconnected. Each worker
  has its own epoch; a stream's decisions always carry its worker's.
* Supervision: workers ping over their pipe from their loop (``LinkWatchdog``); the
  supervisor pings systemd's watchdog from its own loop. A worker that exits or stays
  silent for ``WORKER_TIMEOUT`` (or a restarted one not ready within ``START_TIMEOUT``)
  is killed if need be, logged, counted
  (``edged_worker_restarts_total{worker}``) and started again on its shard; it warm-
  restarts from its shard's checkpoint. A worker dying within ``RESTART_BACKOFF_S`` of
  its start is restarted after a delay doubling from 1 s to 30 s.
* Shutdown (SIGTERM/SIGINT): ``STOPPING=1``, start at once a worker waiting to be
  restarted (it serves what was routed to it), route what ingest has queued until it is
  quiet for ``QUIET_S`` (at most ``--drain-timeout``), send each worker ``STOP`` behind
  it as soon as its queue has room (everything received is served), wait while
  the workers drain, publish, checkpoint and exit, then let the proxy run until the
  publish side is quiet. A second signal is passed on: workers stop without checkpoint.
* Checkpoints: one file per shard (``edged.checkpoint``). Once every worker is ready (each
  wrote its own file if it restored from another layout), the supervisor deletes the
  files of other layouts.
* Metrics: one ``/metrics`` (``edged.metrics.Aggregate``), label ``worker``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import zlib
from multiprocessing.connection import wait
from typing import Any, Callable

import zmq

from edged.config import Config
from edged.protocol import FrameError, Limits, unpack_frame
from edged.sockets import QUIET_S  # (and the publish proxy stops once quiet this long)

POLL_MS = 100
BATCH = 256  # frames routed per wake-up before housekeeping runs
CHECK_S = 0.05  # supervision (pipes, deaths, restarts, metrics) runs at most this often
PING_S = 1.0  # worker -> supervisor liveness ping interval
SUBSCRIBED_S = 30.0  # a starting worker waits this long at most for the proxy's subscription
WORKER_TIMEOUT = 10.0  # a ready worker silent this long is killed and restarted
START_TIMEOUT = 120.0  # a restarted worker not ready this long is too (the unit's TimeoutStartSec)
RESTART_BACKOFF_S = 10.0  # a worker dying sooner after its start is restarted after a delay
STOP_WAIT_S = 15.0  # beyond the drain timeout: the workers' checkpoint and close
STOP = b"\xc1edged-stop"  # 0xc1 is never valid msgpack: no source frame can equal it


class StartError(Exception):
    """A worker failed before it was ready; ``code`` is its exit code (2: bad model/config)."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def shard_of(stream: bytes, n: int) -> int:
    """The worker of a stream id (its UTF-8 bytes) among ``n``: stable across processes,
    restarts and machines (never Python's salted ``hash``)."""
    return zlib.crc32(stream) % n


def stream_key(buf: bytes, limits: Limits) -> bytes:
    """The UTF-8 stream id of a raw ingest frame, for routing; raises ``FrameError``."""
    msg = unpack_frame(buf, limits)
    if not isinstance(msg, dict):
        raise FrameError("schema", f"frame is a msgpack {type(msg).__name__}, not a map")
    stream = msg.get("stream")
    if not isinstance(stream, str):
        raise FrameError("stream" if "stream" in msg else "schema", "no string stream id to route on")
    return stream.encode()


# -- the worker side -----------------------------------------------------------------------

class LinkWatchdog:
    """The worker's half of the supervisor's liveness check, shaped like
    ``edged.sdnotify.Watchdog``: ``ping`` (from the serving loop) sends ``alive`` every
    ``PING_S``. If the supervisor is gone the worker stops once (drain and checkpoint)."""

    def __init__(self, conn):
        self.conn, self.next, self.stop, self.lost = conn, float("-inf"), None, False

    def ping(self, now: float) -> None:
        if now < self.next or self.lost:
            return
        self.next = now + PING_S
        try:
            self.conn.send("alive")
        except OSError:
            self.lost = True
            if self.stop is not None:
                self.stop(signal.SIGTERM)


class Link:
    """What worker ``shard = (i, n)`` hands ``edged.service.main`` (see its docstring)."""

    def __init__(self, conn, shard: tuple[int, int], service_class):
        self.conn, self.shard, self.service_class = conn, shard, service_class
        self.watchdog = LinkWatchdog(conn)

    def ready(self, svc, endpoints: dict[str, str], seconds: float, restored: str) -> None:
        self.watchdog.stop = svc.request_stop
        if svc.sockets.publish.poll(int(SUBSCRIBED_S * 1000)):  # the proxy's XSUB: everything
            svc.sockets.publish.recv()
        else:
            svc.log.warning("no subscription from the publish proxy within %.0fs: serving anyway",
                            SUBSCRIBED_S)
        self.conn.send(("ready", {"pid": os.getpid(), "epoch": svc.epoch, "warm_s": seconds,
                                  "metrics": endpoints.get("metrics"), "restored": restored,
                                  "streams": len(svc.streams)}))


class _Prefix(logging.LoggerAdapter):
    def process(self, msg, kwargs):
        return f"worker {self.extra['worker']}: {msg}", kwargs


def worker_main(values: dict[str, Any], shard: tuple[int, int], conn) -> None:
    """A worker process (multiprocessing spawn target): ``edged.service.main`` on the
    private endpoints in ``values``; a start-up failure is reported on ``conn``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C reaches the whole group
    from edged.model import ModelError
    from edged.security import SecurityError
    from edged.service import Service, main, setup_logging

    class Worker(Service):
        """A service that stops at ``STOP``: the router sends it after the last frame, so
        its drain waits for nothing more. It publishes on XPUB, to see the proxy's
        subscription (``Link.ready``)."""

        PUBLISH_KIND = zmq.XPUB
        DRAIN_QUIET_S = 0.0  # its input ends at STOP: nothing is in flight behind it

        def admit(self, buf, received_at, batch, frame=None):
            if buf == STOP:
                self.request_stop(signal.SIGTERM)
                return
            super().admit(buf, received_at, batch, frame)

    cfg = Config(**values)
    log = _Prefix(setup_logging(cfg.log_level), {"worker": shard[0]})
    code, failure = 0, None
    try:
        code = main(cfg, log=log, env={}, link=Link(conn, shard, Worker))
    except (ModelError, SecurityError) as e:
        code, failure = 2, f"{cfg.model_path}: {e}"
    except (OSError, zmq.ZMQError) as e:
        code, failure = 1, f"cannot serve: {e}"
        log.error("%s", failure)
    if failure is not None:
        try:
            conn.send(("failed", code, failure))
        except OSError:
            pass
    sys.exit(code)


# -- the supervisor ------------------------------------------------------------------------

@dataclasses.dataclass
class Slot:
    """One worker process as the supervisor tracks it."""

    proc: Any = None
    conn: Any = None
    started: float = 0.0
    ready: bool = False
    last_ping: float = 0.0
    info: dict = dataclasses.field(default_factory=dict)  # its ready report
    delay: float = 0.0  # restart back-off
    start_at: float | None = None  # a restart is due at this time


class Proxy:
    """``zmq.proxy_steerable(xsub, xpub)`` in a thread; ``stop`` waits for quiet first."""

    def __init__(self, ctx: zmq.Context, xsub: zmq.Socket, xpub: zmq.Socket):
        self.control = ctx.socket(zmq.PAIR)
        self.control.linger = 0
        self.control.rcvtimeo = 1000  # a proxy that is gone does not answer
        address = f"inproc://edged-proxy-{id(self)}"
        self.control.bind(address)
        self.peer = ctx.socket(zmq.PAIR)
        self.peer.linger = 0
        self.peer.connect(address)
        self.thread = threading.Thread(target=zmq.proxy_steerable, args=(xsub, xpub, None, self.peer),
                                       name="edged-publish-proxy", daemon=True)
        self.thread.start()

    def forwarded(self) -> int | None:
        """Message parts received from the workers so far (the proxy's STATISTICS); None
        when the proxy does not answer within a second (its thread has ended)."""
        self.control.send(b"STATISTICS")
        try:
            return int.from_bytes(self.control.recv_multipart()[0], "little")
        except zmq.Again:
            return None

    def stop(self, clock: Callable[[], float], timeout: float = 2.0) -> None:
        deadline, last, quiet_since = clock() + timeout, -1, clock()
        while clock() < deadline:
            n = self.forwarded()
            if n is None:
                break
            if n != last:
                last, quiet_since = n, clock()
            elif clock() - quiet_since >= QUIET_S:
                break
            time.sleep(QUIET_S / 4)
        self.control.send(b"TERMINATE")
        self.thread.join(timeout)
        self.peer.close()
        self.control.close()


class Supervisor:
    """The router and supervisor of ``cfg.service_workers`` workers (module docstring).
    Inject the ZeroMQ ``context``, its own metrics ``registry``, the ``log``, the systemd
    ``notify`` and ``watchdog``, and the CURVE keys of the public sockets."""

    def __init__(self, cfg: Config, *, context: zmq.Context, registry, log: logging.Logger,
                 notify: Callable[[str], object], watchdog, curve=None,
                 clock: Callable[[], float] = time.perf_counter, env=None):
        from edged.metrics import RouterMetrics
        from edged.service import RejectLog
        from edged.sockets import Sockets

        self.cfg, self.ctx, self.log, self.notify, self.watchdog = cfg, context, log, notify, watchdog
        self.clock, self.n = clock, cfg.service_workers
        self.metrics = RouterMetrics(registry, self.n)
        self.sockets = Sockets(context, cfg, self.metrics, curve)
        self.limits = Limits(0, cfg.limits_max_events, cfg.ingest_max_frame_bytes)
        self.rejects = RejectLog(log, cfg.log_reject_burst, cfg.log_reject_interval)
        self.stop_requests: list[int] = []  # appended to by signal handlers, read by the loop
        self.epoch = time.time_ns()
        self.dir = tempfile.mkdtemp(prefix="edged-")  # 0700: only this user reaches the workers
        self.slots = [Slot() for _ in range(self.n)]
        self.pushes: list[zmq.Socket] = []
        self.xsub = self.proxy = None
        self.pending: tuple[int, bytes] | None = None  # a frame waiting for a full worker
        self.routed = [0] * self.n
        self.cpu = 0.0
        self._next_check = 0.0
        env = os.environ if env is None else env
        usec = env.get("WATCHDOG_USEC", "")
        self.worker_timeout = max(WORKER_TIMEOUT, int(usec) / 1e6) if usec.isdigit() else WORKER_TIMEOUT
        import multiprocessing

        self.mp = multiprocessing.get_context("spawn")

    def endpoint(self, i: int, side: str) -> str:
        return f"ipc://{self.dir}/w{i}.{side}"

    def worker_config(self, i: int) -> dict[str, Any]:
        """Worker ``i``'s settings: private endpoints, no CURVE, metrics on a free port."""
        cfg = dataclasses.replace(
            self.cfg, ingest_endpoint=self.endpoint(i, "in"), ingest_socket="pull", ingest_bind=True,
            publish_endpoint=self.endpoint(i, "out"), security_secret_key="", security_client_keys="",
            metrics_listen="off" if self.cfg.metrics_listen in ("", "off") else "127.0.0.1:0",
            service_workers=1)
        return dataclasses.asdict(cfg)

    # -- lifecycle -------------------------------------------------------------------------

    def bind(self) -> dict[str, str]:
        """Bind the public ingest and publish, connect to the workers' endpoints (an XSUB
        subscribed to everything) and start the publish proxy; return the public endpoints."""
        endpoints = self.sockets.bind()
        self.xsub = self.ctx.socket(zmq.XSUB)
        self.xsub.linger = 0
        self.xsub.rcvhwm = self.cfg.publish_hwm
        self.xsub.send(b"\x01")  # subscribe to everything: sent to every worker on connection
        for i in range(self.n):
            self.xsub.connect(self.endpoint(i, "out"))
            push = self.ctx.socket(zmq.PUSH)
            push.linger = 0
            push.sndhwm = self.cfg.ingest_hwm
            push.connect(self.endpoint(i, "in"))
            self.pushes.append(push)
        self.proxy = Proxy(self.ctx, self.xsub, self.sockets.publish)
        return endpoints

    def spawn(self, i: int) -> None:
        slot = self.slots[i]
        ours, theirs = self.mp.Pipe()
        proc = self.mp.Process(target=worker_main, args=(self.worker_config(i), (i, self.n), theirs),
                               name=f"edged-worker-{i}", daemon=True)
        proc.start()
        theirs.close()
        slot.proc, slot.conn, slot.started, slot.ready, slot.start_at = proc, ours, self.clock(), False, None
        slot.info = {}
        self.log.info("worker %d of %d started: pid %d", i, self.n, proc.pid)

    def start(self) -> float:
        """Spawn every worker and wait until all are ready (or a stop is requested); return
        the longest warm-up. Raises ``StartError`` if one fails first."""
        for i in range(self.n):
            self.spawn(i)
        while not all(s.ready for s in self.slots):
            if self.stop_requests:
                return 0.0
            self.watchdog.ping(self.clock())
            for i, slot in enumerate(self.slots):
                self._read(i, slot)
                if not slot.ready and not slot.proc.is_alive():
                    slot.proc.join()
                    self._read(i, slot)  # what it said before it exited
                    code = slot.proc.exitcode
                    code, message = slot.info.get("failed", (code if code and code > 0 else 1,
                                                             f"exit code {code}"))
                    raise StartError(code, f"worker {i}: {message}")
            wait([s.conn for s in self.slots] + [s.proc.sentinel for s in self.slots], POLL_MS / 1000)
        for i in range(self.n):
            self.metrics.up.labels(str(i)).set(1)
        self.metrics.ready.set(1)
        return max(s.info["warm_s"] for s in self.slots)

    def cleanup_layouts(self) -> list[str]:
        """Delete the checkpoint files of other layouts once each of this layout's files is
        at least as new as all of them; return the names removed."""
        from edged import checkpoint as ckpt

        state_dir = self.cfg.service_state_dir
        if not state_dir or not os.path.isdir(state_dir):
            return []
        layout = {ckpt.file_name(i, self.n) for i in range(self.n)}
        files = {os.path.basename(p): os.stat(p).st_mtime for p in ckpt.paths(state_dir)}
        old = [name for name in files if name not in layout]
        if not old or not layout <= files.keys():
            return []
        if min(files[name] for name in layout) < max(files[name] for name in old):
            return []
        for name in old:
            os.unlink(os.path.join(state_dir, name))
            ckpt.remove_stale(state_dir, name)
        self.log.info("checkpoint layout of %d workers in %s: removed %s", self.n, state_dir, ", ".join(old))
        return old

    def metrics_urls(self) -> dict[int, str]:
        """``{worker: /metrics URL}`` of the ready workers (``edged.metrics.Aggregate``)."""
        return {i: s.info["metrics"] for i, s in enumerate(self.slots)
                if s.ready and s.info.get("metrics")}

    def request_stop(self, signum: int = 0) -> None:
        self.stop_requests.append(signum)

    def run(self) -> None:
        """Route and supervise until a stop is requested."""
        poller = self.sockets.poller()
        ingest = self.sockets.ingest
        while not self.stop_requests:
            if self.pending is not None:
                self.send_pending()
                ready = dict(poller.poll(0))
            else:
                ready = dict(poller.poll(POLL_MS))
                if ingest in ready:
                    self.route(BATCH)
            for refused in self.sockets.monitor_events(ready):
                self.rejects.reject(refused, self.clock())
            self.tick(self.clock())

    def route(self, budget: int) -> int:
        """Pass up to ``budget`` queued frames to their workers without blocking; stop at a
        worker whose queue is full (the frame waits in ``pending``). Returns frames read."""
        recv, pushes, limits, n, routed = self.sockets.ingest.recv, self.pushes, self.limits, self.n, self.routed
        cpu0 = time.thread_time()
        got = 0
        while got < budget:
            try:
                buf = recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            got += 1
            try:
                w = zlib.crc32(stream_key(buf, limits)) % n  # shard_of, inlined
            except FrameError as e:
                self.metrics.rejected.labels(e.reason).inc()
                self.rejects.reject(e, self.clock())
                continue
            try:
                pushes[w].send(buf, zmq.NOBLOCK)
            except zmq.Again:
                self.pending = (w, buf)
                break
            routed[w] += 1
        self.cpu += time.thread_time() - cpu0
        return got

    def send_pending(self) -> None:
        """Pass on the frame waiting for a full worker if it has room within ``POLL_MS``."""
        w, buf = self.pending
        if self.pushes[w].poll(POLL_MS, zmq.POLLOUT):
            self.pushes[w].send(buf, zmq.NOBLOCK)
            self.routed[w] += 1
            self.pending = None

    def tick(self, now: float) -> None:
        """Watchdog; and every ``CHECK_S``: worker pipes, deaths, silences, restarts due,
        reject summaries, metrics."""
        self.watchdog.ping(now)
        if now < self._next_check:
            return
        self._next_check = now + CHECK_S
        for i, slot in enumerate(self.slots):
            self._supervise(i, slot, now)
        self.metrics.ready.set(int(all(s.ready for s in self.slots)))
        self.rejects.flush(now)
        self.flush_metrics()

    def flush_metrics(self) -> None:
        m = self.metrics
        for i, k in enumerate(self.routed):
            if k:
                m.routed.labels(str(i)).inc(k)
        self.routed = [0] * self.n
        m.cpu.inc(self.cpu)
        self.cpu = 0.0

    def _read(self, i: int, slot: Slot) -> None:
        """Take the worker's pipe messages: pings, its ready report, a start-up failure."""
        try:
            while slot.conn.poll(0):
                msg = slot.conn.recv()
                slot.last_ping = self.clock()
                if msg == "alive":
                    continue
                if msg[0] == "ready":
                    slot.ready, slot.info = True, msg[1]
                    self.log.info("worker %d ready: pid %d epoch %d, checkpoint %s, %d streams, "
                                  "warm-up %.2fs", i, msg[1]["pid"], msg[1]["epoch"], msg[1]["restored"],
                                  msg[1]["streams"], msg[1]["warm_s"])
                elif msg[0] == "failed":
                    slot.info["failed"] = (msg[1], msg[2])
        except (EOFError, OSError):  # the worker is gone; its exit is handled by the caller
            pass

    def _supervise(self, i: int, slot: Slot, now: float) -> None:
        if slot.start_at is not None:
            if now >= slot.start_at:
                self.spawn(i)
            return
        was_ready = slot.ready
        self._read(i, slot)
        if slot.ready and not was_ready:
            self.metrics.up.labels(str(i)).set(1)
        if slot.proc.is_alive():
            if slot.ready and now - slot.last_ping > self.worker_timeout:
                self.log.error("worker %d (pid %d) sent no sign of life for %.0fs: killing it", i,
                               slot.proc.pid, now - slot.last_ping)
                slot.proc.kill()
            elif not slot.ready and now - slot.started > START_TIMEOUT:
                self.log.error("worker %d (pid %d) not ready %.0fs after its restart: killing it", i,
                               slot.proc.pid, now - slot.started)
                slot.proc.kill()
            return
        slot.proc.join()
        self._read(i, slot)  # what it said before it exited
        code = slot.proc.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        short = now - slot.started < RESTART_BACKOFF_S
        slot.delay = min(30.0, max(1.0, 2 * slot.delay)) if short else 0.0
        failure = slot.info.get("failed")
        self.log.error("worker %d (pid %d) died (%s%s): restarting it in %.0fs; its streams resume "
                       "from its shard's last checkpoint", i, slot.proc.pid, how,
                       f": {failure[1]}" if failure else "", slot.delay)
        slot.conn.close()
        slot.ready, slot.start_at = False, now + slot.delay
        self.metrics.up.labels(str(i)).set(0)
        self.metrics.restarts.labels(str(i)).inc()

    def stop(self) -> int:
        """The shutdown sequence (module docstring); return the workers' worst exit code."""
        self.metrics.ready.set(0)
        self.notify(f"STOPPING=1\nSTATUS=draining {self.n} workers")
        now = self.clock()
        for i, slot in enumerate(self.slots):
            self._supervise(i, slot, now)  # notices a worker that died since the last check
            if slot.start_at is not None:  # dead, waiting to restart: it serves what waits for it
                self.log.info("worker %d: starting it at once to serve the frames queued for it", i)
                self.spawn(i)
        drained, deadline = 0, self.clock() + self.cfg.service_drain_timeout
        while self.clock() < deadline and len(self.stop_requests) < 2:  # what ingest holds
            self.watchdog.ping(self.clock())
            if self.pending is not None:
                self.send_pending()
            else:
                got = self.route(BATCH)
                drained += got
                if got < BATCH and self.pending is None and not self.sockets.ingest.poll(QUIET_S * 1000):
                    break  # ingest quiet for QUIET_S: the rest of a burst in flight is in
        if self.pending is not None:  # past the drain timeout: dropped, as a single process would
            self.log.warning("worker %d's queue stayed full: 1 frame for it dropped at the stop",
                             self.pending[0])
            self.pending = None
        self.log.info("routed %d frames still queued at the stop", drained)
        deadline = self.clock() + self.cfg.service_drain_timeout + STOP_WAIT_S
        unsent = zmq.Poller()  # STOP behind every routed frame, to each worker as it has room
        for push in self.pushes:
            unsent.register(push, zmq.POLLOUT)
        while unsent.sockets and self.clock() < deadline and len(self.stop_requests) < 2:
            self.watchdog.ping(self.clock())
            for push, _ in unsent.poll(POLL_MS):
                push.send(STOP, zmq.NOBLOCK)
                unsent.unregister(push)
        forwarded = False
        while self.clock() < deadline:
            self.watchdog.ping(self.clock())
            if len(self.stop_requests) >= 2 and not forwarded:  # a second signal: stop now
                forwarded = True
                for s in self.slots:
                    if s.proc is not None and s.proc.is_alive():
                        os.kill(s.proc.pid, signal.SIGTERM)
            alive = [s.proc for s in self.slots if s.proc is not None and s.proc.is_alive()]
            if not alive:
                break
            wait([p.sentinel for p in alive], POLL_MS / 1000)
        worst = 0
        for i, s in enumerate(self.slots):
            if s.proc is None:
                continue
            if s.proc.is_alive():
                self.log.error("worker %d (pid %d) did not stop in time: killing it", i, s.proc.pid)
                s.proc.kill()
            s.proc.join()
            worst = max(worst, abs(s.proc.exitcode or 0))
        self.proxy.stop(self.clock)
        self.proxy = None
        self.flush_metrics()
        self.rejects.flush(float("inf"))
        return worst

    def close(self, linger_s: float = 1.0) -> None:
        """Stop anything still running and close every socket; remove the ipc directory."""
        for s in self.slots:
            if s.proc is not None and s.proc.is_alive():
                s.proc.kill()
                s.proc.join()
        if self.proxy is not None:
            self.proxy.stop(self.clock, timeout=0.5)
        for push in self.pushes:
            push.close(linger=0)
        if self.xsub is not None:
            self.xsub.close(linger=0)
        self.sockets.close(linger_s)
        shutil.rmtree(self.dir, ignore_errors=True)


def main(cfg: Config, *, log: logging.Logger, env=None) -> int:
    """``edged serve --workers N`` (N > 1): bind the public endpoints, start the workers,
    READY once all are, route and supervise until SIGTERM/SIGINT, then stop them in order.
    Raises ``StartError`` when a worker fails before it is ready."""
    import functools

    from prometheus_client import CollectorRegistry, ProcessCollector

    from edged import sdnotify
    from edged.config import metrics_address
    from edged.metrics import Aggregate, exposed
    from edged.protocol import ready_line
    from edged.security import server_keys
    from edged.service import settle_heap

    env = os.environ if env is None else env
    notify = functools.partial(sdnotify.notify, env=env)
    curve = server_keys(cfg.security_secret_key, cfg.security_client_keys)  # SecurityError: exit 2
    own = CollectorRegistry()
    ProcessCollector(registry=own)
    ctx = zmq.Context()
    sup = Supervisor(cfg, context=ctx, registry=own, log=log, notify=notify,
                     watchdog=sdnotify.Watchdog(env), curve=curve, env=env)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: sup.stop_requests.append(signum))
    try:
        endpoints = sup.bind()
        served = CollectorRegistry(auto_describe=False)
        served.register(Aggregate(own, sup.metrics_urls))
        with exposed(served, metrics_address(cfg), endpoints):
            notify(f"STATUS=starting {sup.n} workers")
            seconds = sup.start()
            if not sup.stop_requests:
                sup.cleanup_layouts()
                log.info("ready: %d workers, ingest %s (%s) publish %s metrics %s%s", sup.n, endpoints["ingest"],
                         cfg.ingest_socket, endpoints["publish"], endpoints.get("metrics", "off"),
                         f" curve {cfg.security_client_keys}" if curve is not None else "")
                print(ready_line(sup.epoch, endpoints["ingest"], cfg.ingest_socket, endpoints["publish"],
                                 endpoints.get("metrics", "off"), seconds), flush=True)
                notify(f"READY=1\nSTATUS=serving, {sup.n} workers")
                settle_heap()
                sup.run()
            log.info("stopping on signal %s: stopping %d workers", ",".join(map(str, sup.stop_requests)), sup.n)
            worst = sup.stop()
            log.info("workers stopped (worst exit code %d)", worst)
    finally:
        sup.close()
        ctx.term()
    return 0
