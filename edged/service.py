"""The serve loop: ZeroMQ frames in, per-stream simulation, decisions out on PUB.

Each wake-up receives the queued frames, decodes and admits them one by one (the
event-time rule, ``edged.streams.event_time``: late, end and held events), then advances
all admitted frames in one compiled engine call (``Engine.advance_many``), scores all
their decisions in one readout call and publishes them in order. The decisions equal one
offline ``engine.advance`` over the same events, whatever the frame and batch boundaries.
A decision happens at each step boundary ``b`` with ``b % hop == 0`` and ``b >= window``.

Stream table: data, one row per engine slot (``Streams``). Rules:

* seq: a frame whose ``seq`` is not the stream's previous accepted seq + 1 counts one
  ``edged_seq_gaps_total`` (a new stream expects 0); it is still served.
* expiry: a stream with no accepted frame for ``streams.idle_timeout`` seconds (the
  injected monotonic clock) is dropped (state, held events, seqs); the same id later
  starts over as a new stream (clock 0, decision seq 0). Checked once a second, and at
  once when a new stream finds the table full; if none is idle the frame is rejected
  ("capacity").
* a rejected frame changes no stream state.

Shutdown: signal handlers only append to ``stop_requests``; the loop notices within its
poll interval, stops polling, handles frames already queued (``service.drain_timeout``;
a second signal cuts the drain short), publishes their decisions and returns.
``Service.close`` lingers on PUB so they leave. A checkpoint step slots in between.

systemd (``edged.sdnotify``, injected as ``notify`` and ``watchdog``): ``READY=1`` once the
model is verified, sockets bound, kernels and readout warmed and any checkpoint restored;
``WATCHDOG=1`` from ``tick`` (the loop) and the drain only; ``STOPPING=1`` when a stop
request is noticed.

State (``--state-dir``, ``edged.checkpoint``): ``restore`` before READY (a refused file is
a logged, counted cold start); ``checkpoint`` every ``--checkpoint-interval`` from ``tick``
and once after the drain. Restored streams keep their clocks, held events and seqs; the
epoch is new, so subscribers see a restart, not a gap.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import zmq

from edged import checkpoint as ckpt
from edged.config import Config
from edged.energy import EnergyModel
from edged.jit import kernel
from edged.metrics import Metrics
from edged.sdnotify import Watchdog
from edged.protocol import (EVENTS_CHANNEL, EVENTS_DECREASING, EVENTS_NEGATIVE, EVENTS_OK,
                            HEARTBEAT_TOPIC, Frame, FrameError, Limits, decode_frame,
                            encode_decision, encode_frame, ready_line)
from edged.streams import EMPTY, Batch, event_time

POLL_MS = 100
BATCH = 256  # frames read per wake-up before housekeeping runs
READOUT_WAIT = 0.5e-3  # the longest a frame waits in a batch for frames queued behind it
SWEEP_S = 1.0
FLUSH_S = 0.01  # loop tallies reach the Prometheus counters at most this often
SD_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
               logging.CRITICAL: 2}


@kernel
def check_events(t, ch, n_in):
    """``edged.protocol.numpy_check_events`` in one compiled pass (frame validation)."""
    if t.shape[0] == 0:
        return EVENTS_OK
    if t[0] < 0:
        return EVENTS_NEGATIVE
    for i in range(1, t.shape[0]):
        if t[i] < t[i - 1]:
            return EVENTS_DECREASING
    for i in range(ch.shape[0]):
        if ch[i] < 0 or ch[i] >= n_in:
            return EVENTS_CHANNEL
    return EVENTS_OK


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
class Streams:
    """Per-stream bookkeeping beside the engine's state; row ``slot`` of each array."""

    capacity: int
    slots: dict[str, int] = field(default_factory=dict)
    next_seq: list[int] = None  # expected frame seq
    out_seq: list[int] = None  # next decision seq
    last_seen: list[float] = None  # clock of the last accepted frame
    unbilled_ops: list[int] = None  # synaptic ops since the last decision
    held_ch: list[np.ndarray] = None  # int64[] channels held at step engine.now[slot]
    free: list[int] = None

    def __post_init__(self):
        n = self.capacity
        self.next_seq, self.out_seq, self.unbilled_ops = [0] * n, [0] * n, [0] * n
        self.last_seen = [0.0] * n
        self.held_ch = [EMPTY] * n
        self.free = list(range(n - 1, -1, -1))


_MORE = zmq.SNDMORE | zmq.NOBLOCK


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
    """One daemon: sockets, engine, readout, stream table, metrics. Inject the ZeroMQ
    ``context``, the metrics ``registry``, the monotonic ``clock``, the ``log`` and the
    systemd ``notify`` / ``watchdog`` (default: no-ops)."""

    def __init__(self, model, cfg: Config, *, context: zmq.Context, registry,
                 clock: Callable[[], float] = time.perf_counter,
                 cpu_clock: Callable[[], float] = time.thread_time,
                 log: logging.Logger | None = None, epoch: int | None = None,
                 notify: Callable[[str], object] | None = None, watchdog: Watchdog | None = None,
                 wall: Callable[[], float] = time.time, curve=None):
        from edged.engine import Engine
        from edged.model import ModelError
        from edged.readout import Readout

        if not model.has_readout:
            raise ModelError("the model has no readout, so it cannot decide: fit one with "
                             "'edged-train readout --model M --task T' (or --events-dir DIR)")
        self.model, self.cfg, self.ctx, self.clock, self.cpu_clock = model, cfg, context, clock, cpu_clock
        self.log = log or logging.getLogger("edged.service")
        self.metrics = Metrics(registry)
        self.engine = Engine.for_model(model, streams=cfg.streams_max)
        self.readout = Readout(model.readout)
        self.streams = Streams(cfg.streams_max)
        self.limits = Limits(model.n_in, cfg.limits_max_events, cfg.ingest_max_frame_bytes)
        self.energy = EnergyModel.for_model(model.neuron, model.n_hidden, model.n_out,
                                            model.n_features, len(model.classes), model.window)
        self.epoch = time.time_ns() if epoch is None else epoch
        self.stop_requests: list[int] = []  # appended to by signal handlers, read by the loop
        self.rejects = RejectLog(self.log, cfg.log_reject_burst, cfg.log_reject_interval)
        self.tally = Tally()
        self.notify = notify or (lambda state: None)
        self.watchdog = watchdog or Watchdog(env={})
        self.wall = wall
        self.curve = curve  # edged.security.ServerKeys: CURVE + allow-list on both sockets
        self.auth = self.publish_monitor = None
        self._next_checkpoint = float("inf")
        self._next_heartbeat = 0.0
        self.heartbeats = 0
        self.drained = 0  # frames handled by the drain after a stop request
        self.ingest = self.publish = self.monitor = None
        self.endpoints: dict[str, str] = {}
        self._next_sweep = 0.0
        self._next_flush = 0.0
        self._labels = [str(c) for c in model.classes]
        i = model.features.index("lzc") if "lzc" in model.features else None
        self._lzc_cols = None if i is None else slice(i * model.n_out, (i + 1) * model.n_out)
        m = self.metrics
        m.describe_model(model)
        m.describe_build(zmq.zmq_version())
        m.streams_capacity.set(cfg.streams_max)
        m.epoch.set(self.epoch)

    # -- lifecycle ---------------------------------------------------------------------

    def bind(self) -> dict[str, str]:
        """Open ingest and publish sockets; return the endpoints actually bound."""
        cfg = self.cfg
        monitor_events = zmq.EVENT_DISCONNECTED
        if self.curve is not None:
            from edged import security

            self.auth = security.start_authenticator(self.ctx, self.curve)  # before any bind
            monitor_events |= security.HANDSHAKE_FAILED
        self.publish = self.ctx.socket(zmq.PUB)
        self.publish.linger = 0
        self.publish.sndhwm = cfg.publish_hwm
        if self.curve is not None:
            security.make_server(self.publish, self.curve)
            self.publish_monitor = self.publish.get_monitor_socket(security.HANDSHAKE_FAILED)
        self.publish.bind(cfg.publish_endpoint)
        kind = zmq.PULL if cfg.ingest_socket == "pull" else zmq.SUB
        self.ingest = self.ctx.socket(kind)
        self.ingest.linger = 0
        self.ingest.rcvhwm = cfg.ingest_hwm
        self.ingest.maxmsgsize = cfg.ingest_max_frame_bytes
        if kind == zmq.SUB:
            self.ingest.setsockopt(zmq.SUBSCRIBE, b"")
        if self.curve is not None:
            security.make_server(self.ingest, self.curve)
        self.monitor = self.ingest.get_monitor_socket(monitor_events)
        if cfg.ingest_bind:
            self.ingest.bind(cfg.ingest_endpoint)
            ingest = self.ingest.last_endpoint.decode()
        else:
            self.ingest.connect(cfg.ingest_endpoint)
            ingest = cfg.ingest_endpoint
        self.endpoints = {"ingest": ingest, "publish": self.publish.last_endpoint.decode()}
        return self.endpoints

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
            frame = decode_frame(encode_frame("warm", 0, t, ch, end, binary), self.limits, check_events)
        batch = Batch(0.0)
        for lo, hi in ((0, end // 2), (end // 2, end)):  # a split run and a closed-form gap
            sel = (frame.t >= lo) & (frame.t < hi)
            batch.add(0, lo, hi, frame.t[sel], frame.ch[sel], "warm", 0.0)
        batch.add(0, end, end + 3 * m.window, EMPTY, EMPTY, "warm", 0.0)
        d = self.engine.advance_many(*batch.arrays())[0]
        self.engine.reset(0)
        self.engine.advance(0, frame.t, frame.ch, end)  # the validating entry point
        if len(d.t) == 0:
            raise RuntimeError("warm-up produced no decision: engine contract broken")
        scores = self.readout.scores(d.features)
        encode_decision("warm", self.epoch, 0, int(d.t[0]), self._labels[int(np.argmax(scores[0]))],
                        0, scores[0].tolist(), self.lzc_of(d)[0].tolist(),
                        0.0, 0.0, 0.0, m.sha256)
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
        poller = zmq.Poller()
        poller.register(self.ingest, zmq.POLLIN)
        poller.register(self.monitor, zmq.POLLIN)
        if self.publish_monitor is not None:
            poller.register(self.publish_monitor, zmq.POLLIN)
        while not self.stop_requests:
            ready = dict(poller.poll(POLL_MS))
            if self.ingest in ready:
                self.pump(BATCH)
            if self.monitor in ready:
                self._monitor_events(self.monitor, "ingest")
            if self.publish_monitor is not None and self.publish_monitor in ready:
                self._monitor_events(self.publish_monitor, "publish")
            self.tick(self.clock())
        self.metrics.ready.set(0)
        self.notify(f"STOPPING=1\nSTATUS=draining, {len(self.streams.slots)} streams")
        self.drained = self.drain()

    def drain(self) -> int:
        """Handle frames already queued, up to ``service.drain_timeout`` seconds."""
        deadline = self.clock() + self.cfg.service_drain_timeout
        n = 0
        while self.clock() < deadline and len(self.stop_requests) < 2:  # a 2nd signal: stop now
            got = self.pump(BATCH)
            self.watchdog.ping(self.clock())
            n += got
            if got < BATCH:
                break
        self.rejects.flush(float("inf"))
        self.flush_metrics()
        return n

    def close(self, linger_s: float = 1.0) -> None:
        """Close sockets; decisions already queued on PUB get ``linger_s`` to leave."""
        self.metrics.ready.set(0)
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

    # -- the loop's work -----------------------------------------------------------------

    def pump(self, budget: int) -> int:
        """Receive and handle up to ``budget`` queued frames without blocking.

        Admitted frames are batched: one engine call advances them all, one readout call
        scores their decisions, which are then published in order. A batch closes when no
        frame is waiting or ``READOUT_WAIT`` after its first frame arrived, so an idle
        daemon publishes each frame's decisions at once and a busy one pays the engine
        and onnxruntime calls once per batch."""
        n = 0
        recv, admit, clock, cpu_clock = self.ingest.recv, self.admit, self.clock, self.cpu_clock
        cpu0 = cpu_clock()
        batch = Batch(cpu0)
        while n < budget:
            try:
                buf = recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            now = clock()
            admit(buf, now, batch)
            n += 1
            if batch.received and now - batch.received[0] >= READOUT_WAIT:
                self.serve(batch)
                batch.clear(cpu_clock())
        self.serve(batch)
        self.tally.cpu += cpu_clock() - cpu0
        return n

    def admit(self, buf: bytes, received_at: float, batch: Batch) -> None:
        """Validate one frame against its stream and add it to ``batch``. A rejected
        frame is counted and logged (rate-limited) and changes no stream."""
        self.tally.frames += 1
        try:
            self._admit(decode_frame(buf, self.limits, check_events), received_at, batch)
        except FrameError as e:
            self.metrics.rejected.labels(e.reason).inc()
            self.rejects.reject(e, received_at)
        except Exception as e:  # noqa: BLE001 - the loop must survive any one frame
            self.metrics.rejected.labels("internal").inc()
            self.log.exception("internal error on a frame: %s", e)

    def _admit(self, frame: Frame, now: float, batch: Batch) -> None:
        st, tally = self.streams, self.tally
        slot = st.slots.get(frame.stream, -1)
        if slot >= 0:
            clock = batch.clock.get(slot)
            if clock is None:
                clock = int(self.engine.now[slot])
            held = st.held_ch[slot]
        else:
            clock, held = 0, EMPTY
        try:
            adv = event_time(clock, frame.t, frame.until, held.size)
        except FrameError as e:
            raise FrameError(e.reason, f"stream {frame.stream!r}: {e.detail}") from None
        if adv.end - clock > self.cfg.limits_max_advance:
            raise FrameError("time", f"stream {frame.stream!r}: frame advances {adv.end - clock} steps "
                                     f"> limits.max_advance {self.cfg.limits_max_advance}")
        if slot < 0:
            if not st.free:
                self.serve(batch)  # expiry may free a slot; the batch must not span it
                batch.clear(self.cpu_clock())
                self.expire(now)
                if not st.free:
                    raise FrameError("capacity", f"stream {frame.stream!r}: {st.capacity} streams active")
            slot = st.free.pop()
            self.engine.reset(slot, frame.stream)
            st.slots[frame.stream] = slot
            st.next_seq[slot] = st.out_seq[slot] = st.unbilled_ops[slot] = 0
            st.held_ch[slot] = EMPTY
            self.metrics.streams_active.set(len(st.slots))
        if frame.seq != st.next_seq[slot]:
            tally.seq_gaps += 1
        st.next_seq[slot] = frame.seq + 1
        st.last_seen[slot] = now
        tally.events += frame.t.size
        t, ch = frame.t, frame.ch
        if held.size:
            t = np.concatenate([np.full(held.size, clock, np.int64), t])
            ch = np.concatenate([held, ch])
        keep = adv.keep
        st.held_ch[slot] = ch[keep:].copy() if keep < ch.size else EMPTY
        if adv.end > clock:
            batch.add(slot, clock, adv.end, t[:keep], ch[:keep], frame.stream, now)

    def serve(self, batch: Batch) -> int:
        """Advance every frame of ``batch`` in one engine call, read out all their
        decisions in one readout call and publish them in order; return how many."""
        if not len(batch):
            return 0
        st, tally, model = self.streams, self.tally, self.model
        slots, starts, ends, offsets, t, ch = batch.arrays()
        try:
            d, first, ops = self.engine.advance_many(slots, starts, ends, offsets, t, ch)
        except Exception as e:  # noqa: BLE001 - a broken invariant: count it, keep serving
            self.metrics.rejected.labels("internal").inc(len(batch))
            self.log.exception("internal error advancing %d frames: %s", len(batch), e)
            return 0
        tally.ops += int(ops.sum())
        tally.steps += int((ends - starts).sum())
        rows = len(d.t)
        tally.decisions += rows
        hop, energy, unbilled, out_seq = model.hop, self.energy, st.unbilled_ops, st.out_seq
        energy_j, seq0 = [0.0] * len(batch), [0] * len(batch)
        first_rows = first.tolist()
        for f, (slot, frame_ops) in enumerate(zip(slots.tolist(), ops.tolist())):
            k = first_rows[f + 1] - first_rows[f]
            unbilled[slot] += frame_ops
            if k:
                energy_j[f] = energy.decision(unbilled[slot] / k, hop)
                unbilled[slot] = 0
                seq0[f] = out_seq[slot]
                out_seq[slot] += k
        if rows:
            self.publish_decisions(batch, d, first_rows, seq0, energy_j)
        return rows

    def publish_decisions(self, batch: Batch, d, first: list[int], seq0: list[int],
                          energy_j: list[float]) -> None:
        """Score ``d`` (the batch's decisions) in one readout call and publish them."""
        scores = self.readout.scores(d.features)
        classes = np.argmax(scores, axis=1).tolist()
        lzc = self.lzc_of(d).tolist()
        score_rows = scores.tolist()
        ends = d.t.tolist()
        cpu = (self.cpu_clock() - batch.cpu0) / len(ends)  # the batch's CPU, shared per decision
        send, observe = self.publish.send, self.metrics.latency.observe
        labels, epoch, sha, frame_seconds = self._labels, self.epoch, self.model.sha256, self.metrics.frame_seconds
        now = self.clock()
        for f, stream in enumerate(batch.streams):
            k0, k1 = first[f], first[f + 1]
            if k0 == k1:
                continue
            topic = stream.encode()
            lat = now - batch.received[f]
            for row in range(k0, k1):
                c = classes[row]
                payload = encode_decision(stream, epoch, seq0[f] + row - k0, ends[row], labels[c], c,
                                          score_rows[row], lzc[row], lat, energy_j[f], cpu, sha)
                try:
                    send(topic, _MORE)
                    send(payload, zmq.NOBLOCK)
                except zmq.Again:  # PUB drops rather than blocks; kept for other socket types
                    pass
                observe(lat)
            frame_seconds.observe(lat)

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
        """Housekeeping between frames: watchdog, idle expiry, log summaries, checkpoints."""
        self.watchdog.ping(now)
        if self.cfg.publish_heartbeat_interval > 0 and now >= self._next_heartbeat:
            self.heartbeat(now)
        if now >= self._next_checkpoint:
            self.checkpoint()
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_S
            self.expire(now)
        self.rejects.flush(now)
        if now >= self._next_flush:
            self._next_flush = now + FLUSH_S
            self.flush_metrics()

    def heartbeat(self, now: float) -> None:
        """Publish ``{v, epoch, heartbeat: n}`` on ``HEARTBEAT_TOPIC`` (never blocks): sent from
        the loop, so its absence means the loop is stuck or the process stopped."""
        import msgpack

        self._next_heartbeat = now + self.cfg.publish_heartbeat_interval
        self.heartbeats += 1
        try:
            self.publish.send_multipart(
                [HEARTBEAT_TOPIC, msgpack.packb({"v": 1, "epoch": self.epoch, "heartbeat": self.heartbeats})],
                zmq.NOBLOCK)
        except zmq.Again:
            pass

    # -- state -------------------------------------------------------------------------

    def restore(self) -> str:
        """Load ``<state_dir>/checkpoint.npz`` into the (empty) stream table; return the
        result counted in ``edged_checkpoint_restore_total``: ``ok``, ``none``, or a cold
        start on ``mismatch`` / ``corrupt`` (one warning line says why)."""
        state_dir = self.cfg.service_state_dir
        if not state_dir:
            return "none"
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        if ckpt.remove_stale(state_dir):
            self.log.info("removed an unfinished checkpoint temp file in %s", state_dir)
        path = os.path.join(state_dir, ckpt.NAME)
        self._schedule_checkpoint()
        if not os.path.exists(path):
            self.log.info("no checkpoint in %s: cold start", state_dir)
            result = "none"
        else:
            try:
                restored = ckpt.read(path, self.engine, self.streams.capacity, self.model.sha256)
                k = ckpt.apply(restored, self.engine, self.streams.slots, self.streams, self.clock())
                self.metrics.streams_active.set(k)
                age = self.wall() - float(restored.header.get("written_at", 0))
                self.log.info("restored %d streams from %s (epoch %d, written %.0fs ago)", k, path,
                              restored.header["epoch"], age)
                result = "ok"
            except ckpt.CheckpointError as e:
                self.log.warning("checkpoint %s refused (%s): %s; cold start", path, e.result, e.detail)
                result = e.result
        self.metrics.checkpoint_restore.labels(result).inc()
        return result

    def checkpoint(self) -> bool:
        """Write every stream's state atomically to ``--state-dir``; a failure (e.g. disk
        full) is logged and counted, the previous checkpoint stays, serving goes on."""
        self._schedule_checkpoint()
        state_dir = self.cfg.service_state_dir
        if not state_dir:
            return False
        t0 = time.perf_counter()
        try:
            members = ckpt.snapshot(self.engine, self.streams.slots, self.streams, self.model.sha256,
                                    self.epoch, self.wall())
            ckpt.write(state_dir, members)
        except OSError as e:
            self.metrics.checkpoint_writes.labels("error").inc()
            self.log.error("checkpoint to %s failed: %s (the previous one is kept)", state_dir, e)
            return False
        m = self.metrics
        m.checkpoint_writes.labels("ok").inc()
        m.checkpoint_last_success.set(self.wall())
        m.checkpoint_seconds.set(time.perf_counter() - t0)
        m.checkpoint_streams.set(len(self.streams.slots))
        return True

    def _schedule_checkpoint(self) -> None:
        interval = self.cfg.service_checkpoint_interval
        on = self.cfg.service_state_dir and interval > 0
        self._next_checkpoint = self.clock() + interval if on else float("inf")

    def expire(self, now: float) -> int:
        st = self.streams
        cutoff = now - self.cfg.streams_idle_timeout
        idle = [s for s, slot in st.slots.items() if st.last_seen[slot] < cutoff]
        for stream in idle:
            slot = st.slots.pop(stream)
            st.held_ch[slot] = EMPTY
            st.free.append(slot)
        if idle:
            self.metrics.streams_expired.inc(len(idle))
            self.metrics.streams_active.set(len(st.slots))
            self.log.info("expired %d idle streams (%d active)", len(idle), len(st.slots))
        return len(idle)

    def lzc_of(self, d) -> np.ndarray:
        """Normalised LZ complexity per decision and output neuron (``float32[k, n_out]``):
        the readout's own ``lzc`` feature columns when it has them, so both agree."""
        if self._lzc_cols is not None:
            return d.features[:, self._lzc_cols]
        from edged.lzc import normalise

        return (np.asarray(d.lz, np.float64) * normalise(1, self.model.window)).astype(np.float32)

    def _monitor_events(self, monitor: zmq.Socket, name: str) -> None:
        from zmq.utils.monitor import recv_monitor_message

        while True:
            try:
                event = recv_monitor_message(monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            if event["event"] == zmq.EVENT_DISCONNECTED and name == "ingest":
                self.metrics.zmq_disconnects.inc()
            elif event["event"] & (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                   | zmq.EVENT_HANDSHAKE_FAILED_AUTH):
                self.metrics.zmq_auth_failures.labels(name).inc()
                self.rejects.reject(FrameError("auth", f"{name}: CURVE handshake refused "
                                                       f"({event['endpoint'].decode(errors='replace')})"),
                                    self.clock())


def main(cfg: Config, *, log: logging.Logger, registry=None, context: zmq.Context | None = None,
         install_signals: bool = True, env=None) -> int:
    """``edged serve``: load, bind, warm, restore, READY, serve until SIGTERM/SIGINT, drain,
    checkpoint, exit 0. Raises ``edged.model.ModelError`` for a bad model file (the CLI
    exits 2). ``env`` (default ``os.environ``) supplies ``NOTIFY_SOCKET`` / ``WATCHDOG_*``."""
    import signal

    from prometheus_client import CollectorRegistry, ProcessCollector

    from edged import sdnotify
    from edged.config import metrics_address
    from edged.metrics import serve_http
    from edged.model import load

    env = os.environ if env is None else env

    def notify(state: str) -> None:
        sdnotify.notify(state, env)

    from edged.security import server_keys

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
    watchdog = sdnotify.Watchdog(env)
    svc = Service(model, cfg, context=ctx, registry=registry, log=log, notify=notify,
                  watchdog=watchdog, curve=curve)
    per_stream = svc.engine.state_bytes()
    log.info("stream state: %d bytes per stream, %.1f MiB reserved for %d streams", per_stream,
             per_stream * cfg.streams_max / 2**20, cfg.streams_max)
    http = None
    try:
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda signum, _frame: svc.stop_requests.append(signum))
        endpoints = svc.bind()
        address = metrics_address(cfg)
        if address is not None:
            http, port = serve_http(registry, *address)
            endpoints["metrics"] = f"http://{address[0]}:{port}/metrics"
        notify("STATUS=compiling and warming kernels")
        seconds = svc.warm()
        restored = svc.restore()
        log.info("ready in %.2fs warm-up: epoch %d ingest %s (%s) publish %s metrics %s%s",
                 seconds, svc.epoch, endpoints["ingest"], cfg.ingest_socket, endpoints["publish"],
                 endpoints.get("metrics", "off"),
                 f" curve {cfg.security_client_keys}" if curve is not None else "")
        print(ready_line(svc.epoch, endpoints["ingest"], cfg.ingest_socket, endpoints["publish"],
                         endpoints.get("metrics", "off"), seconds), flush=True)
        notify(f"READY=1\nSTATUS=serving, epoch {svc.epoch}, checkpoint {restored}, "
               f"{len(svc.streams.slots)} streams")
        svc.run()
        log.info("stopping on signal %s: drained %d queued frames, %d streams active",
                 ",".join(map(str, svc.stop_requests)), svc.drained, len(svc.streams.slots))
        if cfg.service_state_dir and len(svc.stop_requests) < 2:
            notify("STATUS=writing checkpoint")
            if svc.checkpoint():
                log.info("checkpoint of %d streams written to %s", len(svc.streams.slots),
                         cfg.service_state_dir)
    finally:
        svc.close()
        if http is not None:
            http.shutdown()
            http.server_close()
        if own_context:
            ctx.term()
    return 0
