"""Protocol v1 boundary: every bad-frame kind is rejected with its reason; good frames
decode to the same arrays in readable and binary form."""

from __future__ import annotations

import time

import msgpack
import numpy as np
import pytest

from edged.protocol import (DECISION_KEYS, EVENTS_CHANNEL, EVENTS_DECREASING, EVENTS_NEGATIVE,
                            EVENTS_OK, REASONS, FrameError, Limits, check_events, decode_decision,
                            decode_frame, encode_decision, encode_decisions, encode_frame)

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


def test_decisions_encode_in_bulk_to_the_documented_map():
    """One ``encode_decisions`` call: the bytes of ``msgpack.packb`` of each decision map
    in ``DECISION_KEYS`` order (PROTOCOL.md), decision by decision."""
    rng = np.random.default_rng(3)
    k = 5
    rows = dict(streams=[f"s{i % 2}" for i in range(k)], seqs=list(range(7, 7 + k)),
                t=[64 + 16 * i for i in range(k)], labels=["yes", "no", "yes", "no", "no"],
                classes=[0, 1, 0, 1, 1], scores=rng.random((k, 2)).tolist(),
                lzc=rng.random((k, 3)).astype(np.float32).tolist(), latency_s=rng.random(k).tolist(),
                energy_j=(rng.random(k) * 1e-9).tolist())
    got = encode_decisions(rows["streams"], 12345678901234567, rows["seqs"], rows["t"], rows["labels"],
                           rows["classes"], rows["scores"], rows["lzc"], rows["latency_s"],
                           rows["energy_j"], 3e-6, "ab" * 32)
    for i, buf in enumerate(got):
        values = (1, rows["streams"][i], 12345678901234567, rows["seqs"][i], rows["t"][i], rows["labels"][i],
                  rows["classes"][i], rows["scores"][i], rows["lzc"][i], rows["latency_s"][i],
                  rows["energy_j"][i], 3e-6, "ab" * 32)
        assert buf == msgpack.packb(dict(zip(DECISION_KEYS, values)), use_bin_type=True)
        assert buf == encode_decision(*values[1:7], *values[7:])
    assert encode_decisions([], 1, [], [], [], [], [], [], [], [], 0.0, "m") == []


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_decisions_packed_compiled_are_the_bytes_of_encode_decisions(data):
    """``pack_decisions`` (compiled, as the publisher runs it) writes exactly what
    ``encode_decisions`` packs, for any ids, ints, labels and floats (nan and inf too)."""
    from edged.protocol import Packed, decision_layout, pack_decisions_with
    from edged.publisher import pack_decisions

    labels = data.draw(st.lists(st.text(max_size=40), min_size=1, max_size=5))
    n_lzc = data.draw(st.integers(1, 17))
    k = data.draw(st.integers(0, 6))
    ids = data.draw(st.lists(st.text(min_size=1, max_size=40).filter(lambda x: len(x.encode()) <= 128),
                             min_size=k, max_size=k))
    ints = st.integers(0, 2**62 - 1) | st.sampled_from([0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32])
    seqs, t = (data.draw(st.lists(ints, min_size=k, max_size=k)) for _ in range(2))
    classes = data.draw(st.lists(st.integers(0, len(labels) - 1), min_size=k, max_size=k))
    f32 = st.floats(width=32)
    scores = np.array(data.draw(st.lists(st.lists(f32, min_size=len(labels), max_size=len(labels)),
                                         min_size=k, max_size=k)), np.float32).reshape(k, len(labels))
    lzc = np.array(data.draw(st.lists(st.lists(f32, min_size=n_lzc, max_size=n_lzc), min_size=k, max_size=k)),
                   np.float32).reshape(k, n_lzc)
    latency, energy = (data.draw(st.lists(st.floats(), min_size=k, max_size=k)) for _ in range(2))
    epoch, cpu_s = data.draw(st.integers(0, 2**64 - 1)), data.draw(st.floats())
    model = data.draw(st.text(max_size=70))
    got = pack_decisions_with(pack_decisions, decision_layout(epoch, labels, n_lzc, model), ids, seqs,
                              np.array(t, np.int64), np.array(classes, np.int64), scores, lzc, latency,
                              energy, cpu_s)
    want = encode_decisions(ids, epoch, seqs, t, [labels[c] for c in classes], classes,
                            scores.tolist(), lzc.tolist(), latency, energy, cpu_s, model)
    assert got.payloads() == want
    topics = Packed.of(ids, want)  # each decision's topic: its stream id
    assert (got.ids.tobytes(), got.id_ends.tolist()) == (topics.ids.tobytes(), topics.id_ends.tolist())


def _numpy_check_events(t: np.ndarray, ch: np.ndarray, n_in: int) -> int:
    """Reference for ``check_events`` in array operations."""
    if t.size == 0:
        return EVENTS_OK
    if t[0] < 0:
        return EVENTS_NEGATIVE
    if t.size > 1 and (t[1:] < t[:-1]).any():
        return EVENTS_DECREASING
    if ((ch < 0) | (ch >= n_in)).any():
        return EVENTS_CHANNEL
    return EVENTS_OK


def test_event_check_plain_and_compiled_agree_with_numpy_reference():
    from edged.service import check_events as compiled

    rng = np.random.default_rng(5)
    for _ in range(2000):
        n = int(rng.integers(0, 6))
        t = rng.integers(-2, 6, n).astype(np.int64)
        if rng.random() < 0.7:
            t.sort()
        ch = rng.integers(-1, 5, n).astype(rng.choice([np.int32, np.int64]))
        want = _numpy_check_events(t, ch, 4)
        assert check_events(t, ch, 4) == compiled(t, ch, 4) == want, (t, ch)


def outcome(buf: bytes, scan=None):
    from edged.service import check_events as compiled

    try:
        f = decode_frame(buf, LIMITS, compiled, scan)
    except FrameError as e:
        return ("rejected", e.reason)
    assert f.t.dtype == f.ch.dtype == np.int64 and f.t.flags.writeable and f.ch.flags.writeable
    return (f.stream, f.seq, f.t.tolist(), f.ch.tolist(), f.until)


def _int_forms(v: int) -> list[bytes]:
    """Every msgpack encoding of the non-negative integer ``v`` that fits."""
    forms = [bytes([v])] if v < 0x80 else []
    for code, fmt, lim in ((0xCC, ">B", 2**8), (0xCD, ">H", 2**16), (0xCE, ">I", 2**32), (0xCF, ">Q", 2**64),
                           (0xD0, ">b", 2**7), (0xD1, ">h", 2**15), (0xD2, ">i", 2**31), (0xD3, ">q", 2**63)):
        if v < lim:
            import struct
            forms.append(bytes([code]) + struct.pack(fmt, v))
    return forms


@st.composite
def wire_frames(draw):
    """Frames in the shape ``scan_frame`` takes, with any key order and integer encodings,
    then perhaps one byte flipped, cut or added."""
    n = draw(st.integers(0, 6))
    t = sorted(draw(st.lists(st.integers(0, 40), min_size=n, max_size=n)))
    ch = draw(st.lists(st.integers(0, 7), min_size=n, max_size=n))
    stream = draw(st.text(min_size=1, max_size=40))
    fields = {"v": b"".join([draw(st.sampled_from(_int_forms(1)))]),
              "stream": msgpack.packb(stream, use_bin_type=True),
              "seq": draw(st.sampled_from(_int_forms(draw(st.sampled_from([0, 5, 300, 2**40]))))),
              "t": msgpack.packb(np.array(t, "<i8").tobytes(), use_bin_type=True),
              "ch": msgpack.packb(np.array(ch, "<i4").tobytes(), use_bin_type=True)}
    if draw(st.booleans()):
        fields["until"] = draw(st.sampled_from([b"\xc0", *_int_forms(draw(st.integers(0, 60)))]))
    keys = draw(st.permutations(list(fields)))
    buf = bytearray([0x80 | len(keys)]) + b"".join(msgpack.packb(k) + fields[k] for k in keys)
    edit = draw(st.sampled_from(["none", "flip", "cut", "add"]))
    at = draw(st.integers(0, len(buf) - 1))
    if edit == "flip":
        buf[at] = draw(st.integers(0, 255))
    elif edit == "cut":
        del buf[at:]
    elif edit == "add":
        buf.insert(at, draw(st.integers(0, 255)))
    return bytes(buf)


@settings(max_examples=3000, deadline=None)
@given(wire_frames())
def test_scanned_frames_decode_as_the_reference_does(buf):
    """Whatever ``scan_frame`` takes from the bytes, the reference decoder gives the same
    frame; everything else is the reference decoder's to judge."""
    from edged.service import scan_frames

    assert outcome(buf, scan_frames) == outcome(buf)


@settings(max_examples=300, deadline=None)
@given(st.lists(wire_frames(), max_size=8))
def test_frames_decoded_together_decode_as_one_by_one(bufs):
    """``decode_frames`` over many frames at once takes each as the reference decoder does
    (their events side by side in one array), and leaves the rest to it."""
    from edged.protocol import decode_frames
    from edged.service import scan_frames

    for buf, frame in zip(bufs, decode_frames(bufs, LIMITS, scan_frames), strict=True):
        if frame is not None:
            assert (frame.stream, frame.seq, frame.t.tolist(), frame.ch.tolist(), frame.until) == outcome(buf)


def test_a_stream_id_that_is_not_utf8_leaves_the_others_of_its_batch_scanned():
    from edged.protocol import decode_frames
    from edged.service import scan_frames

    good = encode_frame("sensor-α", 3, [1, 2], [0, 1], until=4)
    bad = good.replace("sensor-α".encode(), b"sensor-\xff\xfe")
    frames = decode_frames([good, bad, good], LIMITS, scan_frames)
    assert [f and f.stream for f in frames] == ["sensor-α", None, "sensor-α"]
    assert outcome(bad) == ("rejected", "decode") == outcome(bad, scan_frames)


def test_scan_frame_takes_the_frames_clients_send():
    from edged.protocol import SCAN_FIELDS, decode_frames, scan_frame as plain
    from edged.service import scan_frame, scan_frames

    out = np.empty(SCAN_FIELDS, np.int64)
    for n in (0, 1, 5, 100):
        for until in (None, 0, 2**62 - 1):
            buf = encode_frame("sensor-α", 2**40, np.arange(n), np.arange(n) % 8, until=until)
            raw = np.frombuffer(buf, np.uint8)
            assert scan_frame(raw, LIMITS.n_in, LIMITS.max_events, out)
            assert plain(raw, LIMITS.n_in, LIMITS.max_events, out)
            assert outcome(buf, scan_frames) == outcome(buf) != ("rejected",) * 2
            assert None not in decode_frames([buf, buf], LIMITS, scan_frames)
    for bufs in BAD.values():  # the bad frames are the reference's to reject
        for buf in bufs:
            assert outcome(buf, scan_frames) == outcome(buf)
