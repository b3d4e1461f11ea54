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
frame boundaries. ``event_time`` is that table; held events sit at the clock, before the
frame's own.

Stream table (``Streams``): one row per engine slot, beside the engine's state. Rules:

* seq: a frame whose ``seq`` is not the stream's previous accepted seq + 1 is a gap
  (``edged_seq_gaps_total``; a new stream expects 0); it is still served.
* capacity: a new stream takes a free slot (its engine state reset); with none free,
  ``admit`` raises ``Full`` (reason "capacity") and the caller may ``expire`` and retry.
* expiry: a stream with no accepted frame for ``idle_timeout`` seconds is dropped (state,
  held events, seqs); the same id later starts over as a new stream (clock 0, seq 0).
* a rejected frame changes no row.

``snapshot`` hands the checkpoint the active rows (``Rows``); ``restore`` takes them back.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from edged.protocol import Frame, FrameError

EMPTY = np.empty(0, np.int64)


class Advance(NamedTuple):
    """What one frame does to its stream (see the module table)."""

    end: int   # the stream's clock afterwards
    keep: int  # events simulated now, counting held ones first; the rest are held


def event_time(clock: int, t: np.ndarray, until: int | None, n_held: int) -> Advance:
    """The event-time rule for a frame with sorted times ``t`` on a stream at ``clock``
    holding ``n_held`` events; raises ``FrameError("late")``."""
    n = t.size
    if n and t.item(0) < clock:
        raise FrameError("late", f"event at step {t.item(0)} before the stream's clock {clock}")
    last = t.item(-1) if n else clock
    end = max(clock, last, clock if until is None else until)
    if last < end:
        return Advance(end, n_held + n)
    if end == clock:  # everything sits at the clock: all of it stays held
        return Advance(end, 0)
    return Advance(end, n_held + int(np.searchsorted(t, end, "left")))


class Batch:
    """Frames admitted since the last engine call, in arrival order."""

    def __init__(self, cpu0: float):
        self.clear(cpu0)

    def clear(self, cpu0: float) -> None:
        """Empty the batch; a new one begins at CPU clock ``cpu0``."""
        self.cpu0 = cpu0  # CPU clock when the batch began (shared per decision)
        self.slots: list[int] = []
        self.offsets: list[int] = [0]
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.t: list[np.ndarray] = []
        self.ch: list[np.ndarray] = []
        self.streams: list[str] = []
        self.received: list[float] = []
        self.clock: dict[int, int] = {}  # slot -> its clock after the frames already here

    def __len__(self) -> int:
        return len(self.slots)

    def add(self, slot: int, start: int, end: int, t: np.ndarray, ch: np.ndarray,
            stream: str, received_at: float) -> None:
        self.slots.append(slot)
        self.offsets.append(self.offsets[-1] + t.size)
        self.starts.append(start)
        self.ends.append(end)
        self.t.append(t)
        self.ch.append(ch)
        self.streams.append(stream)
        self.received.append(received_at)
        self.clock[slot] = end

    def arrays(self) -> tuple[np.ndarray, ...]:
        """``(slots, starts, ends, offsets, t, ch)`` for ``Engine.advance_many``."""
        one = len(self.t) == 1
        t = self.t[0] if one else np.concatenate(self.t) if self.t else EMPTY
        ch = self.ch[0] if one else np.concatenate(self.ch) if self.ch else EMPTY
        return (np.array(self.slots, np.int64), np.array(self.starts, np.int64),
                np.array(self.ends, np.int64), np.array(self.offsets, np.int64), t, ch)


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
        self.next_seq, self.out_seq, self.unbilled_ops = [0] * n, [0] * n, [0] * n
        self.last_seen = [0.0] * n  # clock of the last accepted frame
        self.held_ch = [EMPTY] * n  # int64[] channels held at step clocks[slot]
        self.free = list(range(n - 1, -1, -1))

    def __len__(self) -> int:
        return len(self.slots)

    def admit(self, frame: Frame, now: float, batch: Batch) -> bool:
        """Apply the event-time rule to ``frame`` (its stream's clock counts the frames
        already in ``batch``), open its row if new, add what it advances to ``batch``.
        Returns whether its seq was a gap. Raises ``FrameError`` ("late", "time") or
        ``Full``, changing nothing."""
        slot = self.slots.get(frame.stream, -1)
        if slot >= 0:
            clock = batch.clock.get(slot)
            if clock is None:
                clock = int(self.clocks[slot])
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
        gap = frame.seq != self.next_seq[slot]
        self.next_seq[slot] = frame.seq + 1
        self.last_seen[slot] = now
        t, ch = frame.t, frame.ch
        if held.size:
            t = np.concatenate([np.full(held.size, clock, np.int64), t])
            ch = np.concatenate([held, ch])
        keep = adv.keep
        if keep < ch.size:
            self.held_ch[slot] = ch[keep:].copy()
            t, ch = t[:keep], ch[:keep]
        else:
            self.held_ch[slot] = EMPTY
        if adv.end > clock:
            batch.add(slot, clock, adv.end, t, ch, frame.stream, now)
        return gap

    def open(self, stream: str) -> int:
        """A cold row for a new ``stream``; raises ``Full``."""
        if not self.free:
            raise Full("capacity", f"stream {stream!r}: {self.capacity} streams active")
        slot = self.free.pop()
        self.reset(slot, stream)
        self.slots[stream] = slot
        self.next_seq[slot] = self.out_seq[slot] = self.unbilled_ops[slot] = 0
        self.held_ch[slot] = EMPTY
        self.on_size(len(self.slots))
        return slot

    def expire(self, now: float) -> int:
        """Drop the streams idle for longer than ``idle_timeout``; return how many."""
        cutoff = now - self.idle_timeout
        idle = [s for s, slot in self.slots.items() if self.last_seen[slot] < cutoff]
        for stream in idle:
            slot = self.slots.pop(stream)
            self.held_ch[slot] = EMPTY
            self.free.append(slot)
        if idle:
            self.on_size(len(self.slots))
        return len(idle)

    def decided(self, slots: list[int], ops: list[int], first: list[int]) -> tuple[list[int], list[float]]:
        """Bill frame ``f`` (of ``slots[f]``, ``ops[f]`` synaptic ops, decisions
        ``first[f]:first[f + 1]``). Returns per frame the seq of its first decision and the
        ops per decision since the stream's last one (both 0 for a frame without any)."""
        unbilled, out_seq = self.unbilled_ops, self.out_seq
        seq0, per_decision = [0] * len(slots), [0.0] * len(slots)
        for f, (slot, frame_ops) in enumerate(zip(slots, ops)):
            k = first[f + 1] - first[f]
            unbilled[slot] += frame_ops
            if k:
                per_decision[f] = unbilled[slot] / k
                unbilled[slot] = 0
                seq0[f] = out_seq[slot]
                out_seq[slot] += k
        return seq0, per_decision

    def snapshot(self) -> Rows:
        """The active rows, for ``edged.checkpoint.snapshot``."""
        ids = list(self.slots)
        rows = [self.slots[s] for s in ids]

        def column(values: list[int]) -> np.ndarray:
            return np.array([values[r] for r in rows], np.int64)

        return Rows(ids, np.array(rows, np.int64), column(self.next_seq), column(self.out_seq),
                    column(self.unbilled_ops), [np.asarray(self.held_ch[r], np.int64) for r in rows])

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
            self.held_ch[slot] = rows.held_ch[i]
        taken = set(self.slots.values())
        self.free[:] = [s for s in self.free if s not in taken]
        self.on_size(len(self.slots))
        return len(self.slots)
