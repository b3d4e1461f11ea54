"""Per-stream event time, and the frames admitted to the engine in one batch.

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
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from edged.protocol import FrameError

EMPTY = np.empty(0, np.int64)


class Advance(NamedTuple):
    """What one frame does to its stream (see the module table)."""

    end: int   # the stream's clock afterwards
    keep: int  # events simulated now, counting held ones first; the rest are held


def event_time(clock: int, t: np.ndarray, until: int | None, n_held: int) -> Advance:
    """The event-time rule for a frame with sorted times ``t`` on a stream at ``clock``
    holding ``n_held`` events; raises ``FrameError("late")``."""
    if t.size and t[0] < clock:
        raise FrameError("late", f"event at step {int(t[0])} before the stream's clock {clock}")
    last = int(t[-1]) if t.size else clock
    end = max(clock, last, clock if until is None else until)
    if last < end:
        return Advance(end, n_held + t.size)
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
