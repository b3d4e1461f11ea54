"""``edged serve --workers N``: N serving processes behind one ingest and one publish endpoint.

The process systemd starts is the supervisor (``main``); it spawns N workers, each an
``edged.service.main`` run with a ``Link``, on private ``ipc://`` endpoints in a 0700
temporary directory (``edged.link``: the bundles and how a frame's worker is found)::

    sources -> ingest (PULL|SUB, public) -> router -> PUSH ipc w<i>.in -> worker i (PULL)
    worker i PUSH -> ipc out -> PULL router -> PUB publish (public) -> subscribers

* Routing: the router's loop (``edged.link.Relay``, compiled between housekeeping)
  receives a batch of frames as one process does, reads each frame's stream id on its
  bytes and sends worker ``shard_of(id) = crc32(UTF-8 id) % N`` its frames as one bundle,
  one ZeroMQ message, with their receive times (so latency counts from the public
  socket). The bytes go on untouched; the worker validates everything, as a single
  process does. One stream is one
  worker over one FIFO pipe, so per-stream order and the decisions are those of
  ``--workers 1``. A frame with no stream id to route on (not msgpack, not a map, no
  string ``stream``) is rejected by the router, counted under ``worker="router"``.
* Back-pressure: a bundle for a worker whose queue (``edged.link.link_hwm`` bundles, about
  ``--ingest-hwm`` frames) is full waits; the router then stops reading ingest (PULL pushes
  back on every source) and goes on publishing and supervising.
* Publish: each worker sends a batch's decisions to the router as one bundle, which the
  router publishes on the public PUB one decision per message, as one process does (one
  compiled call); heartbeats pass as they are, each worker's with its own epoch (a
  stream's decisions always carry its worker's). The workers connect to the router, so
  what a worker sends before the connection is up waits in its queue instead of being lost.
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
  it as soon as its queue has room (everything received is served), publish while the
  workers drain, publish, checkpoint and exit, then until the workers' side is quiet for
  ``QUIET_S``. A second signal is passed on: workers stop without checkpoint.
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
import time
from multiprocessing.connection import wait
from typing import Any, Callable

import zmq

from edged import link
from edged.config import Config
from edged.link import STOP
from edged.protocol import Limits
from edged.sockets import QUIET_S  # (and the stop publishes until the workers are quiet this long)

POLL_MS = 100
CHECK_S = 0.05  # supervision (pipes, deaths, restarts, metrics) runs at most this often
PING_S = 1.0  # worker -> supervisor liveness ping interval
WORKER_TIMEOUT = 10.0  # a ready worker silent this long is killed and restarted
START_TIMEOUT = 120.0  # a restarted worker not ready this long is too (the unit's TimeoutStartSec)
RESTART_BACKOFF_S = 10.0  # a worker dying sooner after its start is restarted after a delay
STOP_WAIT_S = 15.0  # beyond the drain timeout: the workers' checkpoint and close


class StartError(Exception):
    """A worker failed before it was ready; ``code`` is its exit code (2: bad model/config)."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


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
    from edged.link import LinkSockets
    from edged.model import ModelError
    from edged.security import SecurityError
    from edged.service import Service, main, setup_logging

    class Worker(Service):
        """A service on the router's link (``edged.link``) that stops at ``STOP``: the router
        sends it after the last frame, so its drain waits for nothing more."""

        SOCKETS = LinkSockets
        DRAIN_QUIET_S = 0.0  # its input ends at STOP: nothing is in flight behind it

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.sockets.on_stop = lambda: self.request_stop(signal.SIGTERM)

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
        self.decisions: zmq.Socket | None = None  # the workers' decision bundles
        self.relay: link.Relay | None = None
        self.cpu = 0.0
        self._next_check = 0.0
        env = os.environ if env is None else env
        usec = env.get("WATCHDOG_USEC", "")
        self.worker_timeout = max(WORKER_TIMEOUT, int(usec) / 1e6) if usec.isdigit() else WORKER_TIMEOUT
        import multiprocessing

        self.mp = multiprocessing.get_context("spawn")

    def endpoint(self, name: str) -> str:
        """The private endpoint ``name``: ``w<i>.in``, worker ``i``'s ingest; ``out``, the
        workers' decisions."""
        return f"ipc://{self.dir}/{name}"

    def worker_config(self, i: int) -> dict[str, Any]:
        """Worker ``i``'s settings: private endpoints, no CURVE, metrics on a free port."""
        cfg = dataclasses.replace(
            self.cfg, ingest_endpoint=self.endpoint(f"w{i}.in"), ingest_socket="pull", ingest_bind=True,
            publish_endpoint=self.endpoint("out"), security_secret_key="", security_client_keys="",
            metrics_listen="off" if self.cfg.metrics_listen in ("", "off") else "127.0.0.1:0",
            service_workers=1)
        return dataclasses.asdict(cfg)

    # -- lifecycle -------------------------------------------------------------------------

    def bind(self) -> dict[str, str]:
        """Bind the public ingest and publish and the workers' decision endpoint, connect to
        the workers' ingest; return the public endpoints."""
        endpoints = self.sockets.bind()
        self.decisions = self.ctx.socket(zmq.PULL)
        self.decisions.linger = 0
        self.decisions.bind(self.endpoint("out"))
        for i in range(self.n):
            push = self.ctx.socket(zmq.PUSH)
            push.linger = 0
            push.sndhwm = link.link_hwm(self.cfg.ingest_hwm)
            push.connect(self.endpoint(f"w{i}.in"))
            self.pushes.append(push)
        from edged.service import BATCH_BYTES, READOUT_WAIT

        monitors = [m for m in (self.sockets.monitor, self.sockets.publish_monitor) if m is not None]
        self.relay = link.Relay(self.sockets.ingest, self.decisions, self.sockets.publish, self.pushes,
                                monitors, self.limits, self.sockets.compiled, READOUT_WAIT, BATCH_BYTES)
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
        """Spawn every worker, warm the router's kernels and wait until all are ready (or a
        stop is requested); return the longest warm-up. Raises ``StartError`` if one fails
        first. With no kernel cached yet (``edged.jit.cached``: the first start after an
        install or upgrade) worker 0 compiles them alone and the others start once it is
        ready, loading them: N workers compiling at once would take N times the memory (each
        keeps LLVM's) and, past the cores, N times as long."""
        from edged.jit import cached

        compiled = cached()
        if not compiled and self.n > 1:
            self.log.info("no compiled kernels cached yet: worker 0 compiles them, the others start "
                          "once it is ready")
        for i in range(self.n if compiled else 1):
            self.spawn(i)
        self.relay.warm()  # the router's compiled calls, while the workers warm theirs
        while not all(s.ready for s in self.slots):
            if self.stop_requests:
                return 0.0
            self.watchdog.ping(self.clock())
            for i, slot in enumerate(self.slots):
                if slot.proc is None:
                    continue
                self._read(i, slot)
                if not slot.ready and not slot.proc.is_alive():
                    slot.proc.join()
                    self._read(i, slot)  # what it said before it exited
                    code = slot.proc.exitcode
                    code, message = slot.info.get("failed", (code if code and code > 0 else 1,
                                                             f"exit code {code}"))
                    raise StartError(code, f"worker {i}: {message}")
            if self.slots[0].ready:
                for i, slot in enumerate(self.slots):
                    if slot.proc is None:
                        self.spawn(i)
            started = [s for s in self.slots if s.proc is not None]
            wait([s.conn for s in started] + [s.proc.sentinel for s in started], POLL_MS / 1000)
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
        """Route, publish and supervise until a stop is requested."""
        while not self.stop_requests:
            self.relay_for(CHECK_S)
            self.tick(self.clock())

    def relay_for(self, seconds: float, take: bool = True) -> None:
        """Route (``take``) and publish for ``seconds`` (``edged.link.Relay``), counting the
        frames it rejects and the monitors' events."""
        cpu0 = time.thread_time()
        status, rejected = self.relay.run(time.perf_counter() + seconds, take)
        self.cpu += time.thread_time() - cpu0
        for at, e in rejected:
            self.metrics.rejected.labels(e.reason).inc()
            self.rejects.reject(e, at)
        if status == link.MONITOR:
            for refused in self.sockets.monitor_events(dict.fromkeys(self.relay.monitors, zmq.POLLIN)):
                self.rejects.reject(refused, self.clock())

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
        for i, k in enumerate(self.relay.routed.tolist()):
            if k:
                m.routed.labels(str(i)).inc(k)
        self.relay.routed[:] = 0
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
            if slot.proc is None:  # not started (a stop during the start): nothing routed to it
                continue
            self._supervise(i, slot, now)  # notices a worker that died since the last check
            if slot.start_at is not None:  # dead, waiting to restart: it serves what waits for it
                self.log.info("worker %d: starting it at once to serve the frames queued for it", i)
                self.spawn(i)
        deadline = self.clock() + self.cfg.service_drain_timeout
        stats = self.relay.stats
        received, last = int(stats[0]), self.clock()
        while self.clock() < deadline and len(self.stop_requests) < 2:  # what ingest holds
            self.watchdog.ping(self.clock())
            seen = int(stats[0])
            self.relay_for(min(QUIET_S / 4, max(deadline - self.clock(), 0.0)))
            if stats[0] > seen:
                last = self.clock()
            elif not self.relay.pending.any() and self.clock() - last >= QUIET_S:
                break  # ingest quiet for QUIET_S: the rest of a burst in flight is in
        for w, frames in self.relay.waiting().items():  # past the drain timeout: dropped, as one process would
            self.log.warning("worker %d's queue stayed full: %d frames for it dropped at the stop", w, frames)
        self.relay.pending[:] = 0
        self.log.info("routed %d frames still queued at the stop", int(stats[0]) - received)
        deadline = self.clock() + self.cfg.service_drain_timeout + STOP_WAIT_S
        unsent = [push for push, slot in zip(self.pushes, self.slots) if slot.proc is not None]
        # (STOP behind every routed frame, to each worker as it has room)
        while unsent and self.clock() < deadline and len(self.stop_requests) < 2:
            self.watchdog.ping(self.clock())
            for push in list(unsent):
                try:
                    push.send(STOP, zmq.NOBLOCK)
                    unsent.remove(push)
                except zmq.Again:
                    pass
            if unsent:
                self.relay_for(POLL_MS / 1000, take=False)  # publishing meanwhile
        forwarded = False
        while self.clock() < deadline:
            self.watchdog.ping(self.clock())
            if len(self.stop_requests) >= 2 and not forwarded:  # a second signal: stop now
                forwarded = True
                for s in self.slots:
                    if s.proc is not None and s.proc.is_alive():
                        os.kill(s.proc.pid, signal.SIGTERM)
            if not any(s.proc is not None and s.proc.is_alive() for s in self.slots):
                break
            self.relay_for(POLL_MS / 2000, take=False)
        worst = 0
        for i, s in enumerate(self.slots):
            if s.proc is None:
                continue
            if s.proc.is_alive():
                self.log.error("worker %d (pid %d) did not stop in time: killing it", i, s.proc.pid)
                s.proc.kill()
            s.proc.join()
            worst = max(worst, abs(s.proc.exitcode or 0))
        deadline = self.clock() + STOP_WAIT_S
        while self.clock() < deadline:  # the last decisions, until quiet
            published = int(stats[1])
            self.relay_for(QUIET_S, take=False)
            if stats[1] == published:
                break
        self.flush_metrics()
        self.rejects.flush(float("inf"))
        return worst

    def close(self, linger_s: float = 1.0) -> None:
        """Stop anything still running and close every socket; remove the ipc directory."""
        for s in self.slots:
            if s.proc is not None and s.proc.is_alive():
                s.proc.kill()
                s.proc.join()
        for sock in [*self.pushes, self.decisions]:
            if sock is not None:
                sock.close(linger=0)
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
