"""edged.streams: the event-time rule, row by row of its table, the batch arrays, and the
stream table's rules (seq, capacity, expiry, no change on reject, snapshot/restore)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

from edged.protocol import Frame, FrameError
from edged.streams import Advance, Batch, Full, Streams, event_time


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
    b = Batch(4)
    b.add(3, 0, 16, t(1, 2), t(0, 5), "a", 1.0)
    b.add(1, 4, 8, t(), t(), "b", 2.0)
    b.add(3, 16, 32, t(20), t(7), "a", 3.0)
    slots, starts, ends, offsets, times, ch = b.arrays()
    assert slots.tolist() == [3, 1, 3] and starts.tolist() == [0, 4, 16] and ends.tolist() == [16, 8, 32]
    assert offsets.tolist() == [0, 2, 2, 3] and times.tolist() == [1, 2, 20] and ch.tolist() == [0, 5, 7]
    assert [b.clock(s, -1) for s in range(4)] == [-1, 8, -1, 32] and len(b) == 3
    assert b.streams == ["a", "b", "a"] and b.received == [1.0, 2.0, 3.0]
    b.clear(1.0)
    assert len(b) == 0 and b.clock(3, -1) == -1 and b.arrays()[3].tolist() == [0] and b.streams == []


def test_batch_grows_and_keeps_its_frames():
    b = Batch(1)
    for i in range(100):
        b.add(0, i, i + 1, t(*[i] * i), t(*range(i)), "a", float(i))
    slots, starts, ends, offsets, times, ch = b.arrays()
    assert starts.tolist() == list(range(100)) and offsets.tolist() == [i * (i - 1) // 2 for i in range(101)]
    assert times.tolist() == [i for i in range(100) for _ in range(i)]
    assert ch.tolist() == [c for i in range(100) for c in range(i)] and b.clock(0, -1) == 100


def frame(stream, seq, times, ch=None, until=None):
    times = t(*times)
    return Frame(stream, seq, times, np.zeros(times.size, np.int64) if ch is None else t(*ch), until)


def table(n=2, **kw):
    clocks = np.zeros(n, np.int64)
    sizes, resets = [], []

    def reset(slot, stream):
        resets.append(slot)
        clocks[slot] = 0

    return Streams(n, clocks=clocks, reset=reset, on_size=sizes.append, **kw), clocks, sizes, resets


def test_table_admits_opens_and_counts_seq_gaps():
    st, clocks, sizes, resets = table()
    b = Batch(4)
    assert st.admit(frame("a", 0, (1, 2), until=16), 1.0, b) is False
    assert st.slots == {"a": 0} and resets == [0] and sizes == [1]
    assert st.admit(frame("a", 3, (16,), until=20), 2.0, b) is True  # seq 1, 2 lost
    assert st.next_seq[0] == 4 and st.last_seen[0] == 2.0
    # the second frame starts where the first (still in the batch) ends
    _, starts, ends, *_ = b.arrays()
    assert starts.tolist() == [0, 16] and ends.tolist() == [16, 20] and b.clock(0, -1) == 20


def test_table_holds_events_at_the_last_step_until_time_passes_it():
    st, clocks, *_ = table()
    b = Batch(4)
    st.admit(frame("a", 0, (3, 5, 5), ch=(1, 2, 3)), 0.0, b)  # no until: events at L = 5 held
    assert b.arrays()[2].tolist() == [5] and b.arrays()[4].tolist() == [3] and st.held_ch[0].tolist() == [2, 3]
    clocks[0] = 5  # the engine ran the batch
    b.clear(0.0)
    st.admit(frame("a", 1, (7,), ch=(4,), until=8), 0.0, b)
    _, starts, _, _, times, ch = b.arrays()
    assert starts.tolist() == [5] and times.tolist() == [5, 5, 7] and ch.tolist() == [2, 3, 4]
    assert st.held_ch[0].size == 0


def test_table_rejected_frame_changes_no_row():
    st, clocks, sizes, _ = table(1, max_advance=100)
    b = Batch(4)
    st.admit(frame("a", 0, (5,), until=10), 0.0, b)
    before = (dict(st.slots), st.next_seq.tolist(), st.last_seen.tolist(), list(st.free), len(b))
    for bad, reason in ((frame("a", 1, (9,)), "late"), (frame("a", 1, (), until=200), "time"),
                        (frame("b", 0, (), until=16), "capacity")):
        with pytest.raises(FrameError) as e:
            st.admit(bad, 9.0, b)
        assert e.value.reason == reason and e.value.detail.startswith(f"stream {bad.stream!r}: ")
        assert (dict(st.slots), st.next_seq.tolist(), st.last_seen.tolist(), list(st.free), len(b)) == before
    assert sizes == [1]
    with pytest.raises(Full):
        st.admit(frame("b", 0, (), until=16), 9.0, b)


def test_table_expires_idle_streams_and_reopens_them_cold():
    st, clocks, sizes, resets = table(2, idle_timeout=5.0)
    b = Batch(4)
    st.admit(frame("a", 0, (), until=16), 0.0, b)
    st.admit(frame("b", 0, (), until=16), 4.0, b)
    clocks[:] = 16
    assert st.expire(5.0) == 0 and st.expire(5.5) == 1 and list(st.slots) == ["b"]
    assert sizes == [1, 2, 1]
    b.clear(0.0)
    st.admit(frame("a", 7, (3,), until=16), 6.0, b)  # late for the old a, fine for a new one
    assert st.slots["a"] == 0 and resets == [0, 1, 0] and b.arrays()[1].tolist() == [0] and st.next_seq[0] == 8


def test_table_bills_decisions_and_numbers_them_per_stream():
    st, *_ = table(2)
    for s in ("a", "b"):
        st.open(s)
    # frames: a (no decision), b (2 decisions), a (1 decision)
    seq0, per = st.decided([0, 1, 0], [10, 8, 20], [0, 0, 2, 3])
    assert seq0.tolist() == [0, 0, 0] and per.tolist() == [0.0, 4.0, 30.0]
    seq0, per = st.decided([1], [3], [0, 1])
    assert seq0.tolist() == [2] and per.tolist() == [3.0]
    assert st.out_seq.tolist() == [1, 3] and st.unbilled_ops.tolist() == [0, 0]


def test_table_snapshot_restores_into_a_fresh_table():
    st, *_ = table(3)
    b = Batch(4)
    st.admit(frame("x", 0, (1, 4), ch=(1, 2)), 0.0, b)  # holds ch 2 at step 4
    st.admit(frame("y", 5, (), until=8), 0.0, b)
    st.decided([0, 1], [7, 2], [0, 0, 0])
    rows = st.snapshot()
    assert rows.streams == ["x", "y"] and rows.slots.tolist() == [0, 1]
    assert rows.next_seq.tolist() == [1, 6] and rows.unbilled_ops.tolist() == [7, 2]
    assert [h.tolist() for h in rows.held_ch] == [[2], []]
    fresh, _, sizes, _ = table(3)
    assert fresh.restore(rows, 9.0) == 2 and sizes == [2]
    assert fresh.slots == st.slots and fresh.free == [2] and fresh.last_seen[:2].tolist() == [9.0, 9.0]
    assert fresh.snapshot().held_ch[0].tolist() == [2] and fresh.next_seq[:2].tolist() == [1, 6]


def _frames(ops):
    """Wire frames for ``ops`` (stream, seq skip, events, spread, until mode, late, encoding):
    mostly on time, some late, some holding events, some gaps, some not binary or not msgpack."""
    from edged.protocol import encode_frame

    clock, seq, out = {}, {}, []
    for stream, skip, n, spread, until_mode, late, enc in ops:
        s = f"s{stream}"
        c = clock.get(s, 0)
        times = sorted(c - 3 * late + (k * spread) // max(n, 1) for k in range(n))
        until = (None, c + spread + 1, c, times[-1] if times else c)[until_mode]
        seq[s] = seq.get(s, -1) + 1 + skip
        if enc == 2:
            out.append(b"\xc1" + s.encode())  # not msgpack: the reference path rejects it
            continue
        out.append(encode_frame(s, seq[s], times, [k % 4 for k in range(n)], until, binary=enc == 0))
        clock[s] = max([c, *times, until or 0])
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.sampled_from([0, 0, 0, 2]), st.integers(0, 6),
                          st.integers(0, 40), st.integers(0, 3), st.sampled_from([0, 0, 0, 1]),
                          st.sampled_from([0, 0, 0, 1, 2])), max_size=40),
       st.integers(1, 8))
@example([(0, 0, 1, 10, 1, 0, 0), (1, 0, 1, 10, 1, 0, 0), (2, 0, 1, 10, 1, 0, 0), (3, 0, 1, 10, 1, 0, 0),
          (1, 0, 1, 10, 1, 0, 0), (1, 0, 1, 10, 1, 0, 0), (1, 0, 1, 10, 1, 0, 0), (1, 0, 1, 10, 1, 0, 0),
          (4, 0, 1, 10, 1, 0, 0), (0, 0, 1, 10, 1, 0, 0)], 8)  # s4 expires s0, whose frame follows
def test_admit_all_equals_admitting_one_by_one(ops, per_pump):
    """``Streams.admit_all`` (runs of plain frames compiled) leaves the table, the batches
    and the rejects exactly as ``admit`` frame by frame from the reference decoder does,
    across new streams, gaps, late frames, held events, expiry on a full table, the
    ``max_advance`` limit and frames the scan does not take."""
    from edged.protocol import Limits, concat, decode_frame, scan
    from edged.service import scan_frames

    limits = Limits(4)
    bufs = _frames(ops)

    def run(together: bool):
        st_, clocks, sizes, resets = table(4, idle_timeout=1.0, max_advance=30)
        b, log, count = Batch(4), [], [0, 0, 0]  # frames admitted, seq gaps, events

        def serve():  # what the engine call does to the clocks
            slots, starts, ends, offsets, times, ch = b.arrays()
            log.append(("batch", slots.tolist(), starts.tolist(), ends.tolist(), offsets.tolist(),
                        times.tolist(), ch.tolist(), list(b.streams), list(b.received)))
            clocks[slots] = ends
            b.clear(0.0)

        def one(buf, now, frame=None):
            try:
                frame = frame or decode_frame(buf, limits)
                try:
                    gap = st_.admit(frame, now, b)
                except Full:
                    serve()
                    st_.expire(now)
                    gap = st_.admit(frame, now, b)
                count[:] = count[0] + 1, count[1] + gap, count[2] + frame.t.size
            except FrameError as e:
                log.append(("reject", e.reason))

        for k in range(0, len(bufs), per_pump):
            chunk = bufs[k:k + per_pump]
            times = [0.3 * (k + i) for i in range(len(chunk))]
            if together:
                scanned = scan(*concat(chunk), limits, scan_frames)
                got = st_.admit_all(scanned, times, b, lambda f: one(chunk[f], times[f], scanned.frame(f)))
                count[:] = [c + g for c, g in zip(count, got)]
            else:
                for buf, now in zip(chunk, times):
                    one(buf, now)
            serve()
        table_ = (dict(st_.slots), st_.next_seq.tolist(), st_.last_seen.tolist(),
                  [h.tolist() for h in st_.held_ch], st_.held_n.tolist(), sorted(st_.free), resets, sizes)
        return log, table_, clocks.tolist(), count

    assert run(True) == run(False)
