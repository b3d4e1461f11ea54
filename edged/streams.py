"""The stream table, its event-time rule, and the frames admitted in one batch.

Event time, per stream (``edged.engine.Engine`` does the simulation)::

    clock   = steps completed; a new stream starts at 0
    frame   = events (t, ch), t non-decreasing, optional ``until``
    late    : any t < clock                      -> whole frame rejected ("late")
    L       = the last event time (frame or held), end = max(clock, until, L)
    advance : steps [clock, end) with the events before end
    held    : events at L stay pending when until <= L (a later frame may add to step L);
              they are simulated once a later frame has a later time or until passes L

so the decisions equal one offline ``Engine.advance`` over the same events, whatever the
frame boundaries. ``rule`` is that table (``event_time`` its Python face); held events sit
at the clock, before the frame's own.

Stream table (``Streams``): one row per engine slot, beside the engine's state. Rules:

* seq: a frame whose ``seq`` is not the stream's previous accepted seq + 1 is a gap
  (``edged_seq_gaps_total``; a new stream expects 0); it is still served.
* capacity: a new stream takes a free slot (its engine state reset); with none free,
  ``admit`` raises ``Full`` (reason "capacity") and the caller may ``expire`` and retry.
* expiry: a stream with no accepted frame for ``idle_timeout`` seconds is dropped (state,
  held events, seqs); the same id later starts over as a new stream (clock 0, seq 0).
* a rejected frame changes no row.

``admit`` takes one decoded frame. ``admit_all`` takes the frames of a batch scanned
together (``edged.protocol.scan``): runs of plain frames (a known stream, nothing held
before or after, not late, within ``max_advance``: a real-time client's every frame) go
through one compiled call each (``admit_frames``, the same ``rule`` compiled), any other
frame through ``admit``; a property test holds the two to the same tables and batches.
``snapshot`` hands the checkpoint the active rows (``Rows``); ``restore`` takes them back.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from edged.jit import bind, inline_kernel, kernel
from edged.protocol import Frame, FrameError, Scan

EMPTY = np.empty(0, np.int64)


class Advance(NamedTuple):
    """What one frame does to its stream (see the module table)."""

    end: int   # the stream's clock afterwards
    keep: int  # events simulated now, counting held ones first; the rest are held


def rule(clock, t, until, n_held):
    """The event-time table: ``(end, keep)`` for sorted times ``t`` on a stream at
    ``clock`` holding ``n_held`` events; ``until`` -1 for none; ``keep`` -1 for a late
    frame. Written for Numba: ``event_time`` runs it as it is, the compiled admission
    (``admit_frames``) compiled."""
    n = t.shape[0]
    if n and t[0] < clock:
        return clock, -1
    last = t[n - 1] if n else clock
    end = max(clock, last, until)
    if last < end:
        return end, n_held + n
    if end == clock:  # everything sits at the clock: all of it stays held
        return end, 0
    return end, n_held + np.searchsorted(t, end)


def event_time(clock: int, t: np.ndarray, until: int | None, n_held: int) -> Advance:
    """``rule`` for a frame (``until`` None for none); raises ``FrameError("late")``."""
    end, keep = rule(clock, t, -1 if until is None else until, n_held)
    if keep < 0:
        raise FrameError("late", f"event at step {t.item(0)} before the stream's clock {clock}")
    return Advance(int(end), int(keep))


class Batch:
    """Frames admitted since the last engine call, in arrival order: the engine's arrays
    (``arrays``; grown as needed), each frame's stream and arrival time, and the clock of
    each of ``slots`` slots after the frames already here (``clock``)."""

    def __init__(self, slots: int, cpu0: float = 0.0):
        self.pending = np.zeros(slots, np.int64)  # a slot's clock after its frames here ...
        self.stamp = np.zeros(slots, np.int64)  # ... if its stamp is this batch's id
        self.id = 0
        self._rows(16, 256)
        self.clear(cpu0)

    def _rows(self, rows: int, events: int) -> None:
        """Buffers for at least ``rows`` frames and ``events`` events, keeping those here."""
        old = getattr(self, "buffers", None)
        self.buffers = (np.empty(rows, np.int64), np.empty(rows, np.int64), np.empty(rows, np.int64),
                        np.zeros(rows + 1, np.int64), np.empty(events, np.int64),
                        np.empty(events, np.int64), np.empty(rows, np.int64), self.pending, self.stamp)
        if old is not None:
            for a, b in zip(self.buffers[:7], old[:7]):
                n = min(a.size, b.size)
                a[:n] = b[:n]
        (self.slots, self.starts, self.ends, self.offsets, self.t, self.ch, self.src,
         *_) = self.buffers  # src: the index of each frame among those scanned together

    def reserve(self, rows: int, events: int) -> None:
        """Room for ``rows`` more frames holding ``events`` more events."""
        if self.n + rows > self.slots.size or self.n_events + events > self.t.size:
            self._rows(max(2 * self.slots.size, self.n + rows), max(2 * self.t.size, self.n_events + events))

    def clear(self, cpu0: float) -> None:
        """Empty the batch; a new one begins at CPU clock ``cpu0``."""
        self.cpu0 = cpu0  # CPU clock when the batch began (shared per decision)
        self.n = self.n_events = 0
        self.id += 1
        self.streams: list[str] = []
        self.received: list[float] = []

    def __len__(self) -> int:
        return self.n

    def clock(self, slot: int, default: int) -> int:
        """``slot``'s clock after the frames already here, ``default`` if it has none."""
        return int(self.pending[slot]) if self.stamp[slot] == self.id else default

    def add(self, slot: int, start: int, end: int, t: np.ndarray, ch: np.ndarray,
            stream: str, received_at: float) -> None:
        self.reserve(1, t.size)
        self.n, self.n_events = append_row(self.buffers, self.n, self.n_events, slot, start, end, t, ch,
                                           -1, self.id)
        self.streams.append(stream)
        self.received.append(received_at)

    def arrays(self) -> tuple[np.ndarray, ...]:
        """``(slots, starts, ends, offsets, t, ch)`` for ``Engine.advance_many`` (views,
        valid until the batch is cleared)."""
        n, e = self.n, self.n_events
        return self.slots[:n], self.starts[:n], self.ends[:n], self.offsets[:n + 1], self.t[:e], self.ch[:e]


def append_row(buffers, n, n_events, slot, start, end, t, ch, src, batch_id):
    """Row ``n`` of a batch's ``buffers`` (``Batch.buffers``, with room): ``slot`` advances
    over ``[start, end)`` with events ``t``/``ch`` (copied from ``n_events`` on), the frame
    ``src`` of those scanned together (-1: none); returns the new ``(n, n_events)``.
    Written for Numba: ``Batch.add`` runs it as it is, ``admit_frames`` compiled."""
    slots, starts, ends, offsets, bt, bch, srcs, pending, stamp = buffers
    k = t.shape[0]
    slots[n], starts[n], ends[n], srcs[n] = slot, start, end, src
    bt[n_events:n_events + k] = t
    bch[n_events:n_events + k] = ch
    offsets[n + 1] = n_events + k
    pending[slot], stamp[slot] = end, batch_id
    return n + 1, n_events + k


rule_k = kernel(rule)
append_row_k = inline_kernel(append_row)


@kernel
def admit_frames(rows, t, ch, slot_of, times, f, clocks, next_seq, last_seen, held_n, max_advance,
                 buffers, n, n_events, batch_id):
    """``Streams.admit`` for scanned frames ``f, f + 1, ...`` (``edged.protocol.Scan``:
    ``rows``, ``t``, ``ch``) of known streams (``slot_of``), arrived at ``times``, while
    each is of the plain kind: no events held before or after, not late, within
    ``max_advance``. Returns ``(the first frame not admitted, n, n_events, seq gaps,
    events)``; that frame is for ``Streams.admit`` (which names its problem, if any)."""
    pending, stamp = buffers[7], buffers[8]
    gaps = events = 0
    while f < rows.shape[0]:
        slot = slot_of[f]
        if slot < 0 or held_n[slot]:
            break
        clock = pending[slot] if stamp[slot] == batch_id else clocks[slot]
        k, e = rows[f, 5], rows[f, 6]
        end, keep = rule_k(clock, t[e:e + k], rows[f, 4] if rows[f, 3] else -1, 0)
        if keep != k or end - clock > max_advance:
            break
        gaps += rows[f, 2] != next_seq[slot]
        next_seq[slot] = rows[f, 2] + 1
        last_seen[slot] = times[f]
        events += k
        if end > clock:
            n, n_events = append_row_k(buffers, n, n_events, slot, clock, end, t[e:e + k], ch[e:e + k], f,
                                       batch_id)
        f += 1
    return f, n, n_events, gaps, events


@kernel
def bill(slots, ops, first, out_seq, unbilled):
    """``Streams.decided``: frame ``f`` adds ``ops[f]`` to its slot's unbilled ops; if it
    made decisions (``first[f]:first[f + 1]``) they share them and take the next seqs."""
    seq0 = np.zeros(slots.shape[0], np.int64)
    per_decision = np.zeros(slots.shape[0])
    for f in range(slots.shape[0]):
        slot, k = slots[f], first[f + 1] - first[f]
        unbilled[slot] += ops[f]
        if k:
            per_decision[f] = unbilled[slot] / k
            unbilled[slot] = 0
            seq0[f] = out_seq[slot]
            out_seq[slot] += k
    return seq0, per_decision


class Full(FrameError):
    """A new stream found no free slot (reason "capacity"); nothing was changed."""


class Rows(NamedTuple):
    """Active streams as the checkpoint stores them, in table order."""

    streams: list[str]
    slots: np.ndarray  # int64[k]: their engine slots
    next_seq: np.ndarray  # int64[k]: next expected frame seq
    out_seq: np.ndarray  # int64[k]: next decision seq
    unbilled_ops: np.ndarray  # int64[k]: synaptic ops since the last decision
    held_ch: list[np.ndarray]  # int64[] channels held at each stream's clock


class Streams:
    """The stream table for ``capacity`` engine slots (rules in the module docstring).
    ``clocks`` is the engine's per-slot clock (``Engine.now``, read only), ``reset(slot,
    stream)`` cold-starts a slot's engine state for a stream, ``on_size`` hears the number of active streams."""

    def __init__(self, capacity: int, idle_timeout: float = float("inf"),
                 max_advance: int = 1 << 62, *, clocks: np.ndarray | None = None,
                 reset: Callable[[int, str], object] = lambda slot, stream: None,
                 on_size: Callable[[int], object] = lambda n: None):
        n = capacity
        self.capacity, self.idle_timeout, self.max_advance = capacity, idle_timeout, max_advance
        self.clocks = np.zeros(n, np.int64) if clocks is None else clocks
        self.reset, self.on_size = reset, on_size
        self.slots: dict[str, int] = {}  # stream id -> slot
        self.next_seq = np.zeros(n, np.int64)
        self.out_seq = np.zeros(n, np.int64)  # next decision seq
        self.unbilled_ops = np.zeros(n, np.int64)  # synaptic ops since the last decision
        self.last_seen = np.zeros(n)  # clock of the last accepted frame
        self.held_ch = [EMPTY] * n  # int64[] channels held at step clocks[slot]
        self.held_n = np.zeros(n, np.int64)  # their number
        self.free = list(range(n - 1, -1, -1))
        self.changes = 0  # streams opened or dropped so far
        self._admit_frames = self._bill = None

    def __len__(self) -> int:
        return len(self.slots)

    def admit(self, frame: Frame, now: float, batch: Batch) -> bool:
        """Apply the event-time rule to ``frame`` (its stream's clock counts the frames
        already in ``batch``), open its row if new, add what it advances to ``batch``.
        Returns whether its seq was a gap. Raises ``FrameError`` ("late", "time") or
        ``Full``, changing nothing."""
        slot = self.slots.get(frame.stream, -1)
        if slot >= 0:
            clock = batch.clock(slot, int(self.clocks[slot]))
            held = self.held_ch[slot]
        else:
            clock, held = 0, EMPTY
        try:
            adv = event_time(clock, frame.t, frame.until, held.size)
        except FrameError as e:
            raise FrameError(e.reason, f"stream {frame.stream!r}: {e.detail}") from None
        if adv.end - clock > self.max_advance:
            raise FrameError("time", f"stream {frame.stream!r}: frame advances {adv.end - clock} steps "
                                     f"> limits.max_advance {self.max_advance}")
        if slot < 0:
            slot = self.open(frame.stream)
        gap = frame.seq != int(self.next_seq[slot])
        self.next_seq[slot] = frame.seq + 1
        self.last_seen[slot] = now
        t, ch = frame.t, frame.ch
        if held.size:
            t = np.concatenate([np.full(held.size, clock, np.int64), t])
            ch = np.concatenate([held, ch])
        keep = adv.keep
        self._hold(slot, ch[keep:].copy() if keep < ch.size else EMPTY)
        if adv.end > clock:
            batch.add(slot, clock, adv.end, t[:keep], ch[:keep], frame.stream, now)
        return gap

    def lookup(self, ids: list[str | None]) -> np.ndarray:
        """The slot of each stream id, -1 for a new stream or None."""
        get = self.slots.get
        return np.array([-1 if s is None else get(s, -1) for s in ids], np.int64)

    def admit_all(self, scanned: Scan, times: list[float], batch: Batch,
                  one: Callable[[int], object], ids: list[str | None] | None = None) -> tuple[int, int, int]:
        """Admit the frames of ``scanned`` (arrived at ``times``) in order: runs of plain
        ones (a known stream, nothing held before or after, not late, within
        ``max_advance``) in one compiled call each (``admit_frames``), any other frame ``f``
        by ``one(f)`` (``admit`` and the caller's error handling). ``ids``: the stream id of
        each frame for the compiled path, None to send it to ``one`` (default: the scanned
        ones). Returns the frames, seq gaps and events of the compiled runs."""
        n, f = len(times), 0
        ids = scanned.ids if ids is None else ids
        slot_of = self.lookup(ids)
        arrived = np.array(times)
        taken = gaps = events = 0
        while True:
            batch.reserve(n - f, scanned.t.size)
            args = (scanned.rows, scanned.t, scanned.ch, slot_of, arrived, f, self.clocks, self.next_seq,
                    self.last_seen, self.held_n, self.max_advance, batch.buffers, batch.n,
                    batch.n_events, batch.id)
            if self._admit_frames is None:
                self._admit_frames = bind(admit_frames, *args)
            n0 = batch.n
            stop, batch.n, batch.n_events, g, e = self._admit_frames(*args)
            src = batch.src[n0:batch.n].tolist()
            batch.streams += [scanned.ids[i] for i in src]
            batch.received += [times[i] for i in src]
            taken, gaps, events = taken + stop - f, gaps + g, events + e
            if stop == n:
                return taken, gaps, events
            changes = self.changes
            one(stop)
            f = stop + 1
            if self.changes != changes:  # a stream opened or expired
                slot_of[f:] = self.lookup(ids[f:])

    def _hold(self, slot: int, ch: np.ndarray) -> None:
        self.held_ch[slot] = ch
        self.held_n[slot] = ch.size

    def open(self, stream: str) -> int:
        """A cold row for a new ``stream``; raises ``Full``."""
        if not self.free:
            raise Full("capacity", f"stream {stream!r}: {self.capacity} streams active")
        slot = self.free.pop()
        self.reset(slot, stream)
        self.slots[stream] = slot
        self.next_seq[slot] = self.out_seq[slot] = self.unbilled_ops[slot] = 0
        self._hold(slot, EMPTY)
        self.changes += 1
        self.on_size(len(self.slots))
        return slot

    def expire(self, now: float) -> int:
        """Drop the streams idle for longer than ``idle_timeout``; return how many."""
        cutoff = now - self.idle_timeout
        idle = [s for s, slot in self.slots.items() if self.last_seen[slot] < cutoff]
        for stream in idle:
            slot = self.slots.pop(stream)
            self._hold(slot, EMPTY)
            self.free.append(slot)
        if idle:
            self.changes += 1
            self.on_size(len(self.slots))
        return len(idle)

    def decided(self, slots, ops, first) -> tuple[np.ndarray, np.ndarray]:
        """Bill frame ``f`` (of ``slots[f]``, ``ops[f]`` synaptic ops, decisions
        ``first[f]:first[f + 1]``; int64 arrays) in one compiled call (``bill``). Returns
        per frame the seq of its first decision and the ops per decision since the stream's
        last one (both 0 for a frame without any)."""
        args = (np.asarray(slots, np.int64), np.asarray(ops, np.int64), np.asarray(first, np.int64),
                self.out_seq, self.unbilled_ops)
        if self._bill is None:
            self._bill = bind(bill, *args)
        return self._bill(*args)

    def snapshot(self) -> Rows:
        """The active rows, for ``edged.checkpoint.snapshot``."""
        ids = list(self.slots)
        rows = np.array([self.slots[s] for s in ids], np.int64)
        return Rows(ids, rows, self.next_seq[rows], self.out_seq[rows],
                    self.unbilled_ops[rows], [np.asarray(self.held_ch[r], np.int64) for r in rows])

    def restore(self, rows: Rows, now: float) -> int:
        """Fill an empty table with ``rows`` (slots as given; their idle clocks start at
        ``now``); return the number of streams."""
        if self.slots:
            raise RuntimeError("restore into a table that already has streams")
        for i, stream in enumerate(rows.streams):
            slot = int(rows.slots[i])
            self.slots[stream] = slot
            self.next_seq[slot] = int(rows.next_seq[i])
            self.out_seq[slot] = int(rows.out_seq[i])
            self.unbilled_ops[slot] = int(rows.unbilled_ops[i])
            self.last_seen[slot] = now
            self._hold(slot, rows.held_ch[i])
        self.changes += 1
        taken = set(self.slots.values())
        self.free[:] = [s for s in self.free if s not in taken]
        self.on_size(len(self.slots))
        return len(self.slots)
