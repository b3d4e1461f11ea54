"""The serve loop: frames in, per-stream simulation, decisions out (ZeroMQ, or NATS JetStream).

``Service`` only sequences the work of its parts: ``edged.sockets`` (bind, close, monitor
events, CURVE; or ``edged.jetstream`` for ``nats://`` endpoints: subjects, partitions,
resume points, deduplicated decisions), ``edged.protocol`` (decode and validate a
frame), ``edged.streams`` (the stream table and its event-time rule: late, end and held
events), ``edged.engine`` (the
simulation), ``edged.readout`` (scores), ``edged.publisher`` (decisions and heartbeats)
and ``edged.state`` (restore and checkpoints in ``--state-dir``).

Each wake-up receives the queued frames (``Sockets.receive``, one compiled call per
batch), decodes those of the common shape in one compiled call, admits them, then
advances all admitted frames in one compiled engine call (``Engine.advance_many``),
scores all their decisions in one readout call and publishes them in order. The
decisions equal one offline ``engine.advance`` over the same events, whatever the frame
and batch boundaries. A decision happens at each step boundary ``b`` with
``b % hop == 0`` and ``b >= window``. Idle streams expire once a second, and at once when
a new stream finds the table full; if none is idle the frame is rejected ("capacity").
A rejected frame changes no stream state.

Shutdown: signal handlers only append to ``stop_requests``; the loop notices within its
poll interval, stops polling, handles frames already queued (``service.drain_timeout``;
a second signal cuts the drain short), publishes their decisions and returns.
``Service.close`` lingers on PUB so they leave. A checkpoint step slots in between.

systemd (``edged.sdnotify``, injected as ``notify`` and ``watchdog``): ``READY=1`` once the
model is verified, sockets bound, kernels and readout warmed, any checkpoint restored and
the serving thread pinned (``--serve-cpus``: ``pin_serving_thread``);
``WATCHDOG=1`` from ``tick`` (the loop) and the drain only; ``STOPPING=1`` when a stop
request is noticed.

State (``--state-dir``, ``edged.state``): restored before READY, checkpointed every
``--checkpoint-interval`` from ``tick`` (the file written by a thread while the loop
serves) and once after the drain. As worker ``i`` of ``N`` (``shard``, ``edged.workers``)
the service writes its shard's file and restores the streams that hash to it. Over NATS
the checkpoint also holds each partition's last input sequence, and ingest starts after
it: a replay, not only a warm restart.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import zmq
from prometheus_client import CollectorRegistry

from edged import protocol
from edged.config import Config, uses_nats
from edged.energy import EnergyModel
from edged.jit import bound, kernel
from edged.metrics import LoopHistogram, Metrics
from edged.protocol import Frame, FrameError, Limits, concat, decode_frame, encode_frame, ready_line, scan
from edged.publisher import Publisher, decision_rows, pack_decisions
from edged.sdnotify import Watchdog
from edged.sockets import QUIET_S, Received, Sockets
from edged.state import StateDir
from edged.streams import EMPTY, Batch, Full, Streams

POLL_MS = 100
BATCH = 256  # frames read per wake-up before housekeeping runs
BATCH_BYTES = 1 << 20  # a batch closes once its frames hold this many bytes (cache, memory)
READOUT_WAIT = 0.5e-3  # the longest a frame waits in a batch for frames queued behind it
SWEEP_S = 1.0
FLUSH_S = 0.01  # loop tallies reach the Prometheus counters at most this often
SD_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
               logging.CRITICAL: 2}


check_events = kernel(protocol.check_events)  # the frame's event rule, compiled
scan_frame = kernel(protocol.scan_frame)  # the common frame shape, checked on its bytes
scan_frames = bound(protocol.scan_frames, scan_frame=scan_frame)  # many frames at once


class SdFormatter(logging.Formatter):
    """One line per record with the sd-daemon ``<N>`` priority prefix (journald reads it)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record).replace("\n", " | ")
        return f"<{SD_PRIORITY.get(record.levelno, 6)}>{record.name}: {text}"


def setup_logging(level: str = "info", stream=None) -> logging.Logger:
    log = logging.getLogger("edged")
    log.handlers[:] = []
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(SdFormatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(level.upper())
    log.propagate = False
    return log


@dataclass
class Tally:
    """Counts since the last ``flush_metrics`` (cheaper than a locked counter per frame)."""

    frames: int = 0
    events: int = 0
    seq_gaps: int = 0
    ops: int = 0
    steps: int = 0
    decisions: int = 0
    cpu: float = 0.0


class RejectLog:
    """Log the first ``burst`` rejects per reason, then one summary line per ``interval``."""

    def __init__(self, log: logging.Logger, burst: int, interval: float):
        self.log, self.burst, self.interval = log, burst, interval
        self.logged: dict[str, int] = {}
        self.suppressed: dict[str, int] = {}
        self.last_detail: dict[str, str] = {}
        self.next_summary = 0.0

    def reject(self, e: FrameError, now: float) -> None:
        n = self.logged.get(e.reason, 0)
        if n < self.burst:
            self.logged[e.reason] = n + 1
            more = " (further rejects of this kind are summarised)" if n + 1 == self.burst else ""
            self.log.warning("rejected frame: %s: %s%s", e.reason, e.detail, more)
        else:
            self.suppressed[e.reason] = self.suppressed.get(e.reason, 0) + 1
            self.last_detail[e.reason] = e.detail
            self.flush(now)

    def flush(self, now: float) -> None:
        if not self.suppressed or now < self.next_summary:
            return
        for reason, count in sorted(self.suppressed.items()):
            self.log.warning("rejected %d more frames: %s (last: %s)", count, reason,
                             self.last_detail[reason])
        self.suppressed.clear()
        self.next_summary = now + self.interval


class Service:
    """One daemon over its parts (module docstring). Inject the ZeroMQ ``context``, the
    metrics ``registry``, the monotonic ``clock``, the ``log`` and the systemd ``notify`` /
    ``watchdog`` (default: no-ops)."""

    SOCKETS = Sockets  # (a worker of ``--workers``: ``edged.link.LinkSockets``)
    DRAIN_QUIET_S = QUIET_S  # a stop's drain waits this long for frames still in flight

    def __init__(self, model, cfg: Config, *, context: zmq.Context, registry,
                 clock: Callable[[], float] = time.perf_counter,
                 cpu_clock: Callable[[], float] = time.thread_time,
                 log: logging.Logger | None = None, epoch: int | None = None,
                 notify: Callable[[str], object] | None = None, watchdog: Watchdog | None = None,
                 wall: Callable[[], float] = time.time, curve=None,
                 shard: tuple[int, int] = (0, 1)):
        from edged.engine import Engine
        from edged.model import ModelError
        from edged.readout import Readout

        if not model.has_readout:
            raise ModelError("the model has no readout, so it cannot decide: fit one with "
                             "'edged-train readout --model M --task T' (or --events-dir DIR)")
        self.model, self.cfg, self.clock, self.cpu_clock = model, cfg, clock, cpu_clock
        self.log = log or logging.getLogger("edged.service")
        self.metrics = Metrics(registry)
        self.engine = Engine.for_model(model, streams=cfg.streams_max)
        self.readout = Readout(model.readout)
        self.streams = Streams(cfg.streams_max, cfg.streams_idle_timeout, cfg.limits_max_advance,
                               clocks=self.engine.now, reset=self.engine.reset,
                               on_size=self.metrics.streams_active.set)
        self.batch = Batch(cfg.streams_max)
        self.limits = Limits(model.n_in, cfg.limits_max_events, cfg.ingest_max_frame_bytes)
        self.energy = EnergyModel.for_model(model.neuron, model.n_hidden, model.n_out,
                                            model.n_features, len(model.classes), model.window)
        self.epoch = time.time_ns() if epoch is None else epoch
        self.stop_requests: list[int] = []  # appended to by signal handlers, read by the loop
        self.rejects = RejectLog(self.log, cfg.log_reject_burst, cfg.log_reject_interval)
        self.tally = Tally()
        self.notify = notify or (lambda state: None)
        self.watchdog = watchdog or Watchdog(env={})
        if uses_nats(cfg):
            from edged.jetstream import Transport

            largest = protocol.decision_bound([str(c) for c in model.classes], model.n_out, model.sha256)
            self.sockets = Transport(context, cfg, self.metrics, self.log, decision_bytes=largest)
        else:
            self.sockets = self.SOCKETS(context, cfg, self.metrics, curve)  # curve: edged.security.ServerKeys
        self._origin = getattr(self.sockets, "check_origin", None)  # NATS: frame on its subject?
        self.state = StateDir(cfg, self.engine, self.streams, self.sockets, self.metrics, self.log,
                              model_sha256=model.sha256, epoch=self.epoch, shard=shard, clock=clock,
                              wall=wall)
        self.drained = 0  # frames handled by the drain after a stop request
        self._next_sweep = 0.0
        self._next_flush = 0.0
        self.publisher = Publisher(self.sockets, model, self.epoch, self.metrics, self.energy,
                                   cfg.publish_heartbeat_interval)
        m = self.metrics
        m.describe_model(model)
        m.describe_build(zmq.zmq_version())
        m.streams_capacity.set(cfg.streams_max)
        m.epoch.set(self.epoch)

    # -- lifecycle ---------------------------------------------------------------------

    def bind(self) -> dict[str, str]:
        """Open ingest and publish (``edged.sockets``); return the endpoints bound."""
        return self.sockets.bind()

    def warm(self) -> float:
        """Compile and run every kernel, the readout and the codecs once on scratch state
        (slot 0, reset after); set ``edged_ready``. Returns the seconds it took."""
        t0 = time.perf_counter()
        m = self.model
        rng = np.random.default_rng(0)
        end = m.window + m.hop
        n = min(4 * end, self.limits.max_events, (self.limits.max_bytes - 256) // 12)
        t = np.sort(rng.integers(0, end, max(n, 0))).astype(np.int64)
        ch = rng.integers(0, m.n_in, t.size).astype(np.int64)
        for binary in (False, True):  # compiles the checker for both array kinds
            frame = decode_frame(encode_frame("warm", 0, t, ch, end, binary), self.limits, check_events,
                                 scan_frames)
        batch = Batch(1)  # slot 0
        warm = scan(*concat([encode_frame("warm", 0, t, ch, end, True)]), self.limits, scan_frames)
        self.streams.admit_all(warm, [0.0], batch, lambda f: None, [None])  # compiles, admits none
        for lo, hi in ((0, end // 2), (end // 2, end)):  # a split run and a closed-form gap
            sel = (frame.t >= lo) & (frame.t < hi)
            batch.add(0, lo, hi, frame.t[sel], frame.ch[sel], "warm", 0.0)
        batch.add(0, end, end + 3 * m.window, EMPTY, EMPTY, "warm", 0.0)
        d, first, ops = self.engine.advance_many(*batch.arrays())
        self.engine.reset(0)
        self.engine.advance(0, frame.t, frame.ch, end)  # the validating entry point
        if len(d.t) == 0:
            raise RuntimeError("warm-up produced no decision: engine contract broken")
        scores = self.readout.scores(d.features)
        protocol.pack_decisions_with(pack_decisions, self.publisher.layout, ["warm"], [0], d.t[:1],
                                     np.argmax(scores[:1], axis=1), scores[:1], d.lzc[:1], [0.0], [0.0], 0.0)
        self.sockets.warm()
        seq0, _ = Streams(1).decided(batch.arrays()[0], ops, first)  # billing, on a scratch table
        latency = decision_rows(first, seq0, np.zeros(len(batch)), 0.0)[2]
        LoopHistogram("warm", "warm", (1.0,), CollectorRegistry()).observe_all(latency)
        self.engine.reset(0)
        seconds = time.perf_counter() - t0
        self.metrics.warmup.set(seconds)
        self.metrics.ready.set(1)
        self.metrics.start_time.set(time.time())
        return seconds

    def request_stop(self, signum: int = 0) -> None:
        """Record a stop request (safe from a signal handler or another thread)."""
        self.stop_requests.append(signum)

    def run(self) -> None:
        """Serve until a stop is requested, then drain queued frames and return."""
        sockets = self.sockets
        poller, wake = sockets.poller(), sockets.wake
        while not self.stop_requests:
            ready = dict(poller.poll(POLL_MS))
            if wake in ready:
                self.pump(BATCH)
            for refused in sockets.monitor_events(ready):
                self.rejects.reject(refused, self.clock())
            self.tick(self.clock())
        self.metrics.ready.set(0)
        self.notify(f"STOPPING=1\nSTATUS=draining, {len(self.streams)} streams")
        self.drained = self.drain()

    def drain(self) -> int:
        """Handle frames queued or still arriving, until none has come for
        ``DRAIN_QUIET_S`` (the rest of a burst in flight is in), up to
        ``service.drain_timeout`` seconds."""
        deadline = self.clock() + self.cfg.service_drain_timeout
        n = 0
        while self.clock() < deadline and len(self.stop_requests) < 2:  # a 2nd signal: stop now
            got = self.pump(BATCH)
            self.watchdog.ping(self.clock())
            n += got
            if got < BATCH and not self.sockets.wake.poll(self.DRAIN_QUIET_S * 1000):
                break
        self.rejects.flush(float("inf"))
        self.flush_metrics()
        return n

    def close(self, linger_s: float = 1.0) -> None:
        """Close sockets; decisions already queued on PUB get ``linger_s`` to leave."""
        self.metrics.ready.set(0)
        self.state.close()  # a checkpoint being written is finished
        self.sockets.close(linger_s)

    # -- the loop's work -----------------------------------------------------------------

    def pump(self, budget: int) -> int:
        """Receive and handle up to ``budget`` queued frames without blocking.

        Frames are taken in batches: received until none is waiting, ``READOUT_WAIT``
        after the first or ``BATCH_BYTES`` in all, admitted in order (``admit_all``), then served:
        one engine call advances them all, one readout call scores their decisions, which
        are published in order. So an idle daemon publishes each frame's decisions at
        once and a busy one pays the engine and onnxruntime calls once per batch."""
        n = 0
        cpu_clock = self.cpu_clock
        cpu0 = cpu_clock()
        batch = self.batch
        batch.clear(cpu0)
        while n < budget:
            got = self.sockets.receive(budget - n, READOUT_WAIT, BATCH_BYTES, self.clock)
            if not got.times:
                break
            n += len(got.times)
            self.admit_all(got, batch)
            self.serve(batch)
            batch.clear(cpu_clock())
            if not got.more:
                break
        self.tally.cpu += cpu_clock() - cpu0
        return n

    def admit_all(self, got: Received, batch: Batch) -> None:
        """``admit`` each frame of ``got`` in order: those of the common shape scanned in
        one compiled call (``edged.protocol.scan``), runs of plain ones (over NATS, on their
        stream's subject: ``check_origin``) admitted in one more each
        (``Streams.admit_all``), the others one by one."""
        times = got.times
        try:
            scanned = scan(got.joined, got.ends, self.limits, scan_frames)
        except Exception as e:  # noqa: BLE001 - the reference decoder takes over
            self.log.exception("internal error decoding %d frames together: %s", len(times), e)
            for f, now in enumerate(times):
                self.admit(got.buf(f), now, batch)
            return
        ids = scanned.ids
        if self._origin is not None:
            ids = [s if s is not None and self._on_origin(got.buf(f), s) else None for f, s in enumerate(ids)]
        frames, gaps, events = self.streams.admit_all(
            scanned, times, batch, lambda f: self.admit(got.buf(f), times[f], batch, scanned.frame(f)), ids)
        self.tally.frames += frames
        self.tally.seq_gaps += gaps
        self.tally.events += events

    def _on_origin(self, buf, stream: str) -> bool:
        try:
            self._origin(buf, stream)
        except FrameError:
            return False  # (rejected by ``admit``, which says why)
        return True

    def admit(self, buf: bytes, received_at: float, batch: Batch, frame: Frame | None = None) -> None:
        """Validate one frame (``frame``: already decoded from ``buf``) against its stream
        and add it to ``batch``. A rejected frame is counted and logged (rate-limited) and
        changes no stream."""
        self.tally.frames += 1
        try:
            if frame is None:
                frame = decode_frame(buf, self.limits, check_events)
            if self._origin is not None:
                self._origin(buf, frame.stream)
            self._admit(frame, received_at, batch)
        except FrameError as e:
            self.metrics.rejected.labels(e.reason).inc()
            self.rejects.reject(e, received_at)
        except Exception as e:  # noqa: BLE001 - the loop must survive any one frame
            self.metrics.rejected.labels("internal").inc()
            self.log.exception("internal error on a frame: %s", e)

    def _admit(self, frame: Frame, now: float, batch: Batch) -> None:
        try:
            gap = self.streams.admit(frame, now, batch)
        except Full:
            self.serve(batch)  # expiry may free a slot; the batch must not span it
            batch.clear(self.cpu_clock())
            self.expire(now)
            gap = self.streams.admit(frame, now, batch)  # Full again: rejected ("capacity")
        self.tally.seq_gaps += gap
        self.tally.events += frame.t.size

    def serve(self, batch: Batch) -> int:
        """Advance every frame of ``batch`` in one engine call, read out all their
        decisions in one readout call and publish them in order; return how many."""
        if not len(batch):
            return 0
        tally = self.tally
        slots, starts, ends, offsets, t, ch = batch.arrays()
        try:
            d, first, ops = self.engine.advance_many(slots, starts, ends, offsets, t, ch)
        except Exception as e:  # noqa: BLE001 - a broken invariant: count it, keep serving
            self.metrics.rejected.labels("internal").inc(len(batch))
            self.log.exception("internal error advancing %d frames: %s", len(batch), e)
            return 0
        self.metrics.batch_frames.observe(len(batch))
        tally.ops += d.ops
        tally.steps += int(ends.sum() - starts.sum())
        rows = len(d.t)
        tally.decisions += rows
        seq0, ops_per = self.streams.decided(slots, ops, first)
        if rows:
            scores = self.readout.scores(d.features)
            cpu = (self.cpu_clock() - batch.cpu0) / rows  # the batch's CPU, shared per decision
            self.publisher.decisions(batch, d, scores, first, seq0, ops_per, self.clock(), cpu)
        return rows

    def flush_metrics(self) -> None:
        """Move the loop's local tallies into the Prometheus counters (from ``tick``, at
        most every ``FLUSH_S``, and at the end of a drain)."""
        t, m = self.tally, self.metrics
        if t.frames:
            m.frames.inc(t.frames)
            m.events.inc(t.events)
            m.seq_gaps.inc(t.seq_gaps)
            m.synaptic_ops.inc(t.ops)
            m.steps.inc(t.steps)
            m.decisions.inc(t.decisions)
            m.energy.inc(self.energy.work(t.ops, t.steps, t.decisions))
        m.cpu.inc(t.cpu)
        self.tally = Tally()

    def tick(self, now: float) -> None:
        """Housekeeping between frames: watchdog, heartbeat, checkpoint, idle expiry, log
        summaries, metrics."""
        self.watchdog.ping(now)
        self.publisher.tick(now)
        self.state.tick(now)
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_S
            self.expire(now)
        self.rejects.flush(now)
        if now >= self._next_flush:
            self._next_flush = now + FLUSH_S
            self.flush_metrics()

    # -- housekeeping --------------------------------------------------------------------

    def expire(self, now: float) -> int:
        """Drop idle streams (``Streams.expire``), counted and logged."""
        n = self.streams.expire(now)
        if n:
            self.metrics.streams_expired.inc(n)
            self.log.info("expired %d idle streams (%d active)", n, len(self.streams))
        return n


def pin_serving_thread(cpus: tuple[int, ...], worker: int) -> int | None:
    """Run the calling thread (the serve loop's) on CPU ``cpus[worker % len(cpus)]`` only
    (``--serve-cpus``); return it, or None for no ``cpus``. The thread keeps its caches,
    and the scheduler moves the threads left unpinned (ZeroMQ's I/O, clients) to the
    other CPUs."""
    if not cpus:
        return None
    cpu = cpus[worker % len(cpus)]
    try:
        os.sched_setaffinity(0, {cpu})  # (0: the calling thread)
    except OSError as e:  # (the CPUs allowed changed since the settings were read)
        raise OSError(e.errno, f"--serve-cpus: cannot pin the serving thread to CPU {cpu}: "
                               f"{e.strerror}") from None
    return cpu


def settle_heap() -> None:
    """Move every object alive after start-up (modules, compiled kernels, the model) out of
    the garbage collector's scans, once, before serving: a full collection over them
    stalled the loop for tens of milliseconds."""
    gc.collect()
    gc.freeze()


def main(cfg: Config, *, log: logging.Logger, registry=None, context: zmq.Context | None = None,
         install_signals: bool = True, env=None, link=None) -> int:
    """``edged serve``: load, bind, warm, restore, READY, serve until SIGTERM/SIGINT, drain,
    checkpoint, exit 0. Raises ``edged.model.ModelError`` for a bad model file (the CLI
    exits 2). ``env`` (default ``os.environ``) supplies ``NOTIFY_SOCKET`` / ``WATCHDOG_*``.
    ``link`` (``edged.workers.Link``) runs it as one worker of ``--workers``: its shard and
    service class, liveness pings to the supervisor instead of systemd's watchdog, a ready
    report instead of the ready line and ``READY=1``, and SIGTERM alone stops it."""
    import signal

    from prometheus_client import CollectorRegistry, ProcessCollector

    from edged import sdnotify
    from edged.config import metrics_address, parse_cpus
    from edged.metrics import exposed
    from edged.model import load
    from edged.security import server_keys

    env = os.environ if env is None else env
    notify = functools.partial(sdnotify.notify, env=env)
    curve = server_keys(cfg.security_secret_key, cfg.security_client_keys)  # SecurityError: exit 2
    notify("STATUS=loading model")
    model = load(cfg.model_path)
    log.info("model %s sha256 %s: %s, %d-%d-%d, window %d hop %d, classes %s", cfg.model_path,
             model.sha256, model.neuron, model.n_in, model.n_hidden, model.n_out, model.window,
             model.hop, ",".join(model.classes))
    if registry is None:
        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
    own_context = context is None
    ctx = context or zmq.Context()
    watchdog = sdnotify.Watchdog(env) if link is None else link.watchdog
    make = Service if link is None else link.service_class
    shard = (0, 1) if link is None else link.shard
    svc = make(model, cfg, context=ctx, registry=registry, log=log, notify=notify, watchdog=watchdog,
               curve=curve, shard=shard)
    per_stream = svc.engine.state_bytes()
    log.info("stream state: %d bytes per stream, %.1f MiB reserved for %d streams", per_stream,
             per_stream * cfg.streams_max / 2**20, cfg.streams_max)
    try:
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT) if link is None else (signal.SIGTERM,):
                signal.signal(sig, lambda signum, _frame: svc.stop_requests.append(signum))
        endpoints = svc.bind()
        with exposed(registry, metrics_address(cfg), endpoints):
            notify("STATUS=compiling and warming kernels")
            seconds = svc.warm()
            restored = svc.state.restore()
            svc.sockets.start(svc.state.resume)
            settle_heap()
            cpu = pin_serving_thread(parse_cpus(cfg.service_cpus), shard[0])
            if cpu is not None:
                log.info("serving thread pinned to CPU %d", cpu)
            if link is not None:
                link.ready(svc, endpoints, seconds, restored)
            log.info("ready in %.2fs warm-up: epoch %d ingest %s (%s) publish %s metrics %s%s",
                     seconds, svc.epoch, endpoints["ingest"], svc.sockets.ingest_kind, endpoints["publish"],
                     endpoints.get("metrics", "off"),
                     f" curve {cfg.security_client_keys}" if curve is not None else "")
            if link is None:
                print(ready_line(svc.epoch, endpoints["ingest"], svc.sockets.ingest_kind, endpoints["publish"],
                                 endpoints.get("metrics", "off"), seconds), flush=True)
            notify(f"READY=1\nSTATUS=serving, epoch {svc.epoch}, checkpoint {restored}, "
                   f"{len(svc.streams)} streams")
            svc.run()
            log.info("stopping on signal %s: drained %d queued frames, %d streams active",
                     ",".join(map(str, svc.stop_requests)), svc.drained, len(svc.streams))
            if cfg.service_state_dir and len(svc.stop_requests) < 2:
                notify("STATUS=writing checkpoint")
                if svc.state.checkpoint():
                    log.info("checkpoint of %d streams written to %s", len(svc.streams),
                             cfg.service_state_dir)
    finally:
        svc.close()
        if own_context:
            ctx.term()
    return 0
