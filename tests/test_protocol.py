"""Protocol v1 boundary: every bad-frame kind is rejected with its reason; good frames
decode to the same arrays in readable and binary form."""

from __future__ import annotations

import time

import msgpack
import numpy as np
import pytest

from edged.protocol import (REASONS, FrameError, Limits, decode_decision, decode_frame,
                            encode_decision, encode_frame)

LIMITS = Limits(n_in=8, max_events=100, max_bytes=4096)


def frame(**fields) -> bytes:
    msg = {"v": 1, "stream": "a", "seq": 0, "t": [0, 1, 1], "ch": [0, 7, 3]} | fields
    return msgpack.packb({k: v for k, v in msg.items() if v is not ...}, use_bin_type=True)


def reason(buf: bytes) -> str:
    with pytest.raises(FrameError) as e:
        decode_frame(buf, LIMITS)
    assert e.value.reason in REASONS
    return e.value.reason


@pytest.mark.parametrize("binary", [False, True])
def test_round_trip(binary):
    t = np.array([0, 0, 5, 9, 9], np.int64)
    ch = np.array([7, 1, 0, 3, 3], np.int64)
    f = decode_frame(encode_frame("sensor-α", 12, t, ch, until=20, binary=binary), LIMITS)
    assert (f.stream, f.seq, f.until) == ("sensor-α", 12, 20)
    assert f.t.dtype == f.ch.dtype == np.int64 and f.t.flags.writeable
    np.testing.assert_array_equal(f.t, t)
    np.testing.assert_array_equal(f.ch, ch)


def test_empty_frame_and_missing_until():
    f = decode_frame(frame(t=[], ch=[], until=...), LIMITS)
    assert f.t.size == 0 and f.until is None


BAD = {
    "decode": [b"\xc1", b"", b"\x91" * 3000 + b"\x00",  # reserved byte, nothing, deep nesting
               msgpack.packb({1: 2}),  # int map key (strict_map_key)
               b"\x85\xa1v\x01\xa6stream\xa2\xff\xfe",  # invalid UTF-8 (and truncated)
               frame() + b"\x00"],  # trailing data
    "oversize": [b"\xdd\x7f\xff\xff\xff",  # array header claiming 2**31 items
                 frame(t=list(range(101)), ch=[0] * 101), b"\x00" * 5000],
    "schema": [msgpack.packb([1, 2]), frame(extra=1), frame(ch=...), frame(t=[0.5, 1, 2]),
               frame(t=[True, 1, 1]), frame(t="abc"), frame(t=b"\x00" * 12, ch=b"\x00" * 12),
               frame(t=[0, 1], ch=[0, 1, 2]), frame(seq=-1), frame(seq=1.0),
               msgpack.packb(msgpack.ExtType(3, b"xy")), frame(seq=msgpack.Timestamp(1, 0)),
               frame(ch=[0, None, 1])],
    "version": [frame(v=2), frame(v="1"), frame(v=0), frame(v=2, extra=1)],
    "stream": [frame(stream=""), frame(stream="x" * 129), frame(stream=b"a"), frame(stream=5)],
    "channel": [frame(ch=[0, 8, 1]), frame(ch=[-1, 0, 0]), frame(ch=[0, 0, 2 ** 63])],
    "time": [frame(t=[-1, 0, 0]), frame(t=[0, 2, 1]), frame(until=-1), frame(until=1.5),
             frame(t=[0, 0, 2 ** 62])],
}


@pytest.mark.parametrize("want,buf", [(r, b) for r, bufs in BAD.items() for b in bufs],
                         ids=[f"{r}-{i}" for r, bufs in BAD.items() for i in range(len(bufs))])
def test_bad_frame_rejected_with_reason(want, buf):
    assert reason(buf) == want


def test_stream_id_limits_in_bytes():
    assert decode_frame(frame(stream="é" * 64), LIMITS).stream == "é" * 64  # 128 bytes
    assert reason(frame(stream="é" * 65)) == "stream"


def test_binary_channel_is_int32_and_time_int64():
    t = np.array([3, 4], "<i8").tobytes()
    ch = np.array([2, 5], "<i4").tobytes()
    f = decode_frame(frame(t=t, ch=ch), LIMITS)
    assert f.t.tolist() == [3, 4] and f.ch.tolist() == [2, 5]
    assert reason(frame(t=t, ch=np.array([2, 5], "<i8").tobytes())) == "schema"


def test_header_bomb_is_cheap():
    t0 = time.perf_counter()
    for _ in range(100):
        reason(b"\xdd\x7f\xff\xff\xff")
    assert (time.perf_counter() - t0) / 100 < 1e-3


def test_decision_round_trip():
    buf = encode_decision("a", 7, 3, 64, "c1", 1, [0.5, 1.5], [0.25, 0.75, 1.0], 1e-4, 2e-9, 3e-5, "ab" * 32)
    msg = decode_decision(buf)
    assert msg["class"] == 1 and msg["scores"] == [0.5, 1.5] and msg["model"] == "ab" * 32
    with pytest.raises(ValueError):
        decode_decision(msgpack.packb({"v": 1, "stream": "a"}))
    with pytest.raises(ValueError):
        decode_decision(b"\xc1")


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_never_escapes_as_anything_but_frame_error(buf):
    try:
        decode_frame(buf, LIMITS)
    except FrameError as e:
        assert e.reason in REASONS


values = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats() | st.text(max_size=5)
                      | st.binary(max_size=16), lambda c: st.lists(c, max_size=4)
                      | st.dictionaries(st.text(max_size=4), c, max_size=4), max_leaves=10)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(["v", "stream", "seq", "t", "ch", "until", "x"]), values))
def test_hostile_maps_rejected_or_valid(msg):
    try:
        f = decode_frame(msgpack.packb(msg, use_bin_type=True), LIMITS)
    except FrameError as e:
        assert e.reason in REASONS
    else:
        assert f.t.dtype == np.int64 and f.t.shape == f.ch.shape
        assert (f.ch >= 0).all() and (f.ch < LIMITS.n_in).all() and (np.diff(f.t) >= 0).all()


def test_ready_line_round_trips_and_nothing_else_parses():
    from edged.protocol import parse_ready, ready_line

    line = ready_line(3, "tcp://127.0.0.1:5555", "pull", "tcp://127.0.0.1:5556", "off", 1.23456)
    assert "\n" not in line
    assert parse_ready(line) == {"edged": "ready", "v": 1, "epoch": 3, "ingest": "tcp://127.0.0.1:5555",
                                 "ingest_socket": "pull", "publish": "tcp://127.0.0.1:5556",
                                 "metrics": "off", "warm_s": 1.235}
    for other in ("<6>ready in 1.00s warm-up: epoch 1 ingest tcp://x (pull) publish tcp://y metrics off",
                  "", "[]", '{"edged": "ready"}', line.replace('"ready"', '"starting"')):
        assert parse_ready(other) is None
