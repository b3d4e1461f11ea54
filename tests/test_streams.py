"""edged.streams: the event-time rule, row by row of its table, and the batch arrays."""

from __future__ import annotations

import numpy as np
import pytest

from edged.protocol import FrameError
from edged.streams import Advance, Batch, event_time


def t(*times):
    return np.array(times, np.int64)


@pytest.mark.parametrize("clock, times, until, held, want", [
    # advance: steps [clock, end), end = max(clock, until, L), events before end simulated
    (0, t(), 16, 0, Advance(16, 0)),
    (5, t(5, 7), 16, 0, Advance(16, 2)),
    (5, t(5, 7), None, 0, Advance(7, 1)),          # no until: events at L = 7 are held
    (5, t(5, 7, 7), 7, 0, Advance(7, 1)),          # until <= L: held
    (5, t(5, 7, 7), 3, 0, Advance(7, 1)),          # until below the clock changes nothing
    (5, t(5, 7, 7), 8, 0, Advance(8, 3)),          # until passes L: everything runs
    # held events sit at the clock, before the frame's own
    (5, t(), None, 2, Advance(5, 0)),              # nothing later yet: still held
    (5, t(5), None, 2, Advance(5, 0)),             # more events at the same step: held
    (5, t(6), None, 2, Advance(6, 2)),             # a later time releases them
    (5, t(), 9, 2, Advance(9, 2)),                 # so does an until past them
    (0, t(), None, 0, Advance(0, 0)),
])
def test_event_time_table(clock, times, until, held, want):
    assert event_time(clock, times, until, held) == want


def test_late_frames_are_rejected_whole():
    with pytest.raises(FrameError) as e:
        event_time(10, t(9, 12), 20, 0)
    assert e.value.reason == "late"
    assert event_time(10, t(10, 12), 20, 0) == Advance(20, 2)


def test_batch_arrays_concatenate_frames_in_order():
    b = Batch(0.0)
    b.add(3, 0, 16, t(1, 2), t(0, 5), "a", 1.0)
    b.add(1, 4, 8, t(), t(), "b", 2.0)
    b.add(3, 16, 32, t(20), t(7), "a", 3.0)
    slots, starts, ends, offsets, times, ch = b.arrays()
    assert slots.tolist() == [3, 1, 3] and starts.tolist() == [0, 4, 16] and ends.tolist() == [16, 8, 32]
    assert offsets.tolist() == [0, 2, 2, 3] and times.tolist() == [1, 2, 20] and ch.tolist() == [0, 5, 7]
    assert b.clock == {3: 32, 1: 8} and len(b) == 3
    b.clear(1.0)
    assert len(b) == 0 and b.clock == {} and b.arrays()[3].tolist() == [0]
