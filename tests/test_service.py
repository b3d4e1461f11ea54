"""edged serve end to end on real loopback sockets: the service runs in a thread with an
injected context and registry; the CLI and signal handling run as a subprocess.

Every wait is on a condition with a deadline (``wait_for``, ``Subscriber.recv(timeout)``),
never a bare sleep; every socket closes with LINGER 0.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import given, settings, strategies as hst
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from conftest import join, small_model, start_serve, wait_for
from edged.client import Sender, Subscriber
from edged.config import Config
from edged.engine import Engine
from edged.metrics import LATENCY_BUCKETS, LoopHistogram, serve_http
from edged.model import load, save
from edged.readout import Readout
from edged.service import Service

TIMEOUT = 20.0
PROBE = "~probe"




class Served:
    """A Service in a thread with a Sender and a Subscriber on random loopback ports."""

    def __init__(self, model, **settings):
        self.model = model
        self.ctx = zmq.Context()
        self.registry = CollectorRegistry()
        cfg = Config(ingest_endpoint="tcp://127.0.0.1:*", publish_endpoint="tcp://127.0.0.1:*",
                     metrics_listen="off", **settings)
        self.svc = Service(model, cfg, context=self.ctx, registry=self.registry)
        self.endpoints = self.svc.bind()
        self.svc.warm()
        self.thread = threading.Thread(target=self.svc.run, daemon=True)
        self.thread.start()
        self.tx = Sender(self.endpoints["ingest"], context=self.ctx, linger=0)
        self.rx = Subscriber(self.endpoints["publish"], context=self.ctx)
        self.decisions: dict[str, list] = {}
        join(self.tx, self.rx, self.model, PROBE, drain=True)  # nothing later is missed

    def value(self, name: str, **labels) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def collect(self, stream: str, n: int, timeout: float = TIMEOUT) -> list:
        """Wait until ``n`` decisions of ``stream`` arrived; return them all."""
        deadline = time.monotonic() + timeout
        got = self.decisions.setdefault(stream, [])
        while len(got) < n:
            d = self.rx.recv(max(0.0, deadline - time.monotonic()))
            if d is None:
                raise AssertionError(f"{stream}: {len(got)} of {n} decisions before timeout")
            self.decisions.setdefault(d.stream, []).append(d)
        return got

    def close(self) -> None:
        self.svc.request_stop()
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive()
        self.tx.close()
        self.rx.close()
        self.svc.close(linger_s=0)
        self.ctx.term()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "small.npz"
    save(path, small_model(window=64, hop=8))
    return load(path)


@pytest.fixture
def served(model):
    s = Served(model, streams_max=8)
    yield s
    s.close()


def offline(model, t, ch, end, stream=""):
    """The same events through one ``Engine.advance`` and the readout, row by row."""
    eng = Engine.for_model(model, streams=1)
    eng.reset(0, stream)
    d = eng.advance(0, np.asarray(t, np.int64), np.asarray(ch, np.int64), end)
    return d, Readout(model.readout).scores(d.features)


def assert_same(model, decisions, t, ch, end, stream=""):
    """``decisions`` of stream ``stream`` equal ``offline``'s (its id keys escape noise)."""
    d, scores = offline(model, t, ch, end, stream)
    assert [x.t for x in decisions] == d.t.tolist()
    assert [x.seq for x in decisions] == list(range(len(decisions)))
    lzc_cols = slice(0, model.n_out)  # small_model's features start with "lzc"
    for x, i in zip(decisions, range(len(d.t))):
        np.testing.assert_array_equal(np.array(x.scores, np.float32), scores[i])
        np.testing.assert_array_equal(np.array(x.lzc, np.float32), d.features[i, lzc_cols])
        assert x.class_id == int(np.argmax(scores[i]))
        assert x.label == model.classes[x.class_id]
        assert x.model == model.sha256 and x.latency_s > 0 and x.energy_j > 0


def events(seed: int, n: int, end: int, n_in: int):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, end, n))
    return t, rng.integers(0, n_in, n)


def frames(seed: int, t, ch, end: int):
    """Random frame cuts, some inside one step's events, random ``until``s; the last
    frame completes ``end``. Yields ``(t, ch, until)``."""
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, t.size), size=min(12, t.size - 1), replace=False))
    lo = 0
    for hi in [*cuts.tolist(), t.size]:
        last = hi == t.size
        until = end if last else (int(t[hi - 1]) + int(rng.integers(0, 2)) if rng.random() < 0.5 else None)
        if until is not None and not last and until > t[hi]:
            until = int(t[hi])  # never complete a step a later frame still has events for
        yield t[lo:hi], ch[lo:hi], until
        lo = hi


@pytest.mark.parametrize("binary", [True, False])
def test_decisions_equal_offline_run(served, model, binary):
    end = 640
    t, ch = events(1, 900, end - 5, model.n_in)
    for ft, fch, until in frames(2, t, ch, end):
        served.tx.send("a", ft, fch, until=until, binary=binary)
    want = (end - model.window) // model.hop + 1
    got = served.collect("a", want)
    assert_same(model, got, t, ch, end)
    assert served.value("edged_seq_gaps_total") == 0
    assert served.value("edged_frames_rejected_total", reason="late") == 0


def test_two_streams_interleaved_equal_each_alone(served, model):
    end = 400
    ta, cha = events(3, 500, end, model.n_in)
    tb, chb = events(4, 300, end, model.n_in)
    fa, fb = list(frames(5, ta, cha, end)), list(frames(6, tb, chb, end))
    for i in range(max(len(fa), len(fb))):
        for name, fs in (("a", fa), ("b", fb)):
            if i < len(fs):
                served.tx.send(name, *fs[i][:2], until=fs[i][2])
    want = (end - model.window) // model.hop + 1
    assert_same(model, served.collect("a", want), ta, cha, end)
    assert_same(model, served.collect("b", want), tb, chb, end)
    assert served.value("edged_streams_active") == 3  # a, b and the probe


def raw(**fields) -> bytes:
    msg = {"v": 1, "stream": "a", "seq": 0, "t": [], "ch": []} | fields
    return msgpack.packb({k: v for k, v in msg.items() if v is not ...})


def test_every_bad_frame_rejected_counted_and_next_served(model):
    s = Served(model, streams_max=3, limits_max_events=50, limits_max_advance=10_000)
    try:
        good_t, good_ch = events(7, 200, 600, model.n_in)
        sent_t, sent_ch = [], []
        step = 0
        bad = [
            ("decode", b"\xc1\x00"), ("decode", b"\x91" * 2000 + b"\x00"), ("decode", msgpack.packb({1: 1})),
            ("oversize", b"\xdd\x7f\xff\xff\xff"), ("oversize", raw(t=list(range(51)), ch=[0] * 51)),
            ("schema", raw(extra=1)), ("schema", raw(t=[1.5], ch=[0])),
            ("schema", msgpack.packb(msgpack.ExtType(1, b"x"))), ("schema", raw(seq=msgpack.Timestamp(0))),
            ("version", raw(v=2)), ("stream", raw(stream="")), ("stream", raw(stream="x" * 129)),
            ("channel", raw(t=[10_000], ch=[model.n_in])), ("time", raw(t=[5, 4], ch=[0, 0])),
            ("time", raw(t=[-1], ch=[0])), ("time", raw(until=-3)),
            ("time", raw(stream="a", until=10**6)),  # beyond limits.max_advance
            ("late", raw(stream="a", t=[0], ch=[0])),
            ("capacity", raw(stream="c", t=[0], ch=[0])),  # probe, a, b hold all 3 slots
        ]
        # fill the table: the probe holds one slot; a and b the others
        s.tx.send("b", [], [], until=1)
        for i, (reason, buf) in enumerate(bad):
            before = s.value("edged_frames_rejected_total", reason=reason)
            lo = step
            step = 100 + 20 * i
            sel = (good_t >= lo) & (good_t < step)
            s.tx.send("a", good_t[sel], good_ch[sel], until=step)  # a good frame first
            sent_t.append(good_t[sel]), sent_ch.append(good_ch[sel])
            s.tx.send_frame(buf)
            wait_for(lambda: s.value("edged_frames_rejected_total", reason=reason) == before + 1,
                     what=f"reject {reason}")
        sel = good_t >= step
        s.tx.send("a", good_t[sel], good_ch[sel], until=step + 200)
        sent_t.append(good_t[sel]), sent_ch.append(good_ch[sel])
        end = step + 200
        want = (end - model.window) // model.hop + 1
        assert_same(model, s.collect("a", want), np.concatenate(sent_t), np.concatenate(sent_ch), end)
        total = sum(s.value("edged_frames_rejected_total", reason=r) for r in {r for r, _ in bad})
        assert total == len(bad)
        assert s.value("edged_seq_gaps_total") == 0
    finally:
        s.close()


def test_seq_gaps_counted_and_served(served, model):
    served.tx.send("g", [0], [1], until=8)
    served.tx.seq["g"] = 5  # frames 1..4 lost on the way
    served.tx.send("g", [8], [2], until=model.window)
    assert len(served.collect("g", 1)) == 1
    wait_for(lambda: served.value("edged_seq_gaps_total") == 1, what="gap counted")


def test_idle_streams_expire_and_restart_cold(model):
    s = Served(model, streams_max=4, streams_idle_timeout=5.0)
    clock = [time.perf_counter()]
    s.svc.clock = lambda: clock[0]
    try:
        s.tx.send("x", [3], [1], until=model.window)
        assert s.collect("x", 1)[0].seq == 0
        clock[0] += 100.0  # the loop's next sweep finds x (and the probe) idle
        wait_for(lambda: s.value("edged_streams_expired_total") >= 2, what="expiry")
        assert "x" not in s.svc.streams.slots
        s.tx.seq["x"] = 0
        s.tx.send("x", [3], [1], until=model.window)  # late for the old stream, fine for a new one
        d = s.collect("x", 2)[1]
        assert (d.seq, d.t) == (0, model.window)
        assert s.rx.restarts == 1
    finally:
        s.close()


def test_metrics_scrape_counts_every_decision(served, model):
    http, port = serve_http(served.registry, "127.0.0.1", 0)
    try:
        end = 64 * 6
        t, ch = events(9, 300, end, model.n_in)
        served.tx.send("m", t[:150], ch[:150], until=int(t[150]))
        served.tx.send("m", t[150:], ch[150:], until=end)
        served.collect("m", (end - model.window) // model.hop + 1)
        wait_for(lambda: served.value("edged_decisions_total")  # flushed from the loop every 10 ms
                 == served.value("edged_decision_latency_seconds_count"), what="counters flushed")
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        http.shutdown()
        http.server_close()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(text) for s in fam.samples}
    value = {name: v for (name, labels), v in samples.items() if not labels}
    published = sum(len(v) for v in served.decisions.values()) + 1  # + the probe's first decision
    assert value["edged_decision_latency_seconds_count"] >= published
    assert value["edged_decision_latency_seconds_count"] == value["edged_decisions_total"]
    assert 1 <= value["edged_batch_frames_count"] <= value["edged_batch_frames_sum"] <= value["edged_frames_total"]
    assert value["edged_events_total"] >= 300
    assert value["edged_synaptic_ops_total"] > 0 and value["edged_energy_joules_total"] > 0
    assert value["edged_ready"] == 1 and value["edged_streams_capacity"] == 8
    for name in ("edged_frames_total", "edged_seq_gaps_total", "edged_streams_active",
                 "edged_processing_cpu_seconds_total", "edged_steps_total"):
        assert name in value
    assert ("edged_frames_rejected_total", (("reason", "late"),)) in samples
    info = [labels for (name, labels), _ in samples.items() if name == "edged_model_info"]
    assert dict(info[0])["sha256"] == model.sha256
    buckets = [dict(labels)["le"] for (name, labels), _ in samples.items()
               if name == "edged_decision_latency_seconds_bucket"]
    assert float(buckets[0]) <= 5e-6 and 0.1 in map(float, buckets)


def test_drain_publishes_queued_frames(model):
    s = Served(model, streams_max=4)
    try:
        s.svc.request_stop()  # the loop stops polling within POLL_MS ...
        s.thread.join(TIMEOUT)
        s.tx.send("d", [1, 2], [0, 1], until=model.window + model.hop)  # ... queued, not yet read
        wait_for(lambda: s.svc.sockets.ingest.poll(0), what="frame queued")
        s.svc.drain()
        assert [d.t for d in s.collect("d", 2)] == [model.window, model.window + model.hop]
    finally:
        s.close()


# -- the real command line ------------------------------------------------------------------

def test_serve_subprocess_sigterm_exits_zero(tmp_path):
    path = tmp_path / "m.npz"
    save(path, small_model(window=32, hop=8))
    proc, (ingest, publish, metrics), lines = start_serve(path, metrics="127.0.0.1:0")
    try:
        assert all(re.match(r"<[0-7]>", line) for line in lines), lines
        ctx = zmq.Context()
        with Sender(ingest, context=ctx, linger=0) as tx, Subscriber(publish, context=ctx) as rx:
            for i in range(400):
                tx.send("x", [], [], until=32 + 8 * i)
                if rx.recv(0.05) is not None:
                    break
            else:
                raise AssertionError("no decision from the subprocess")
        ctx.term()
        text = urllib.request.urlopen(metrics, timeout=10).read().decode()
        assert "edged_decisions_total" in text and "process_cpu_seconds_total" in text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=TIMEOUT) == 0
        rest = proc.stderr.read()
        assert "stopping on signal 15" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()


def test_serve_bad_model_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    r = subprocess.run([sys.executable, "-m", "edged.cli", "serve", "--model", str(bad),
                        "--metrics", "off"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "bad.npz" in r.stderr


def test_print_config_round_trips(tmp_path):
    r = subprocess.run([sys.executable, "-m", "edged.cli", "serve", "--print-config",
                        "--max-streams", "77", "--no-ingest-bind"],
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, EDGED_METRICS_LISTEN="127.0.0.1:9999"))
    assert r.returncode == 0, r.stderr
    (tmp_path / "c.toml").write_text(r.stdout)
    from edged.config import resolve

    cfg = resolve({}, {}, str(tmp_path / "c.toml"))
    assert (cfg.streams_max, cfg.ingest_bind, cfg.metrics_listen) == (77, False, "127.0.0.1:9999")


def test_send_file_and_listen_commands(served, model, tmp_path):
    end = 64 * 4
    t, ch = events(11, 400, end - 1, model.n_in)
    spikes = tmp_path / "spikes.txt"
    spikes.write_text("\n".join(f"{a} {b}" for a, b in zip(t, ch)))
    listen = subprocess.Popen([sys.executable, "-m", "edged.cli", "listen", "--connect",
                               served.endpoints["publish"], "--stream", "f", "--count", "2", "--json",
                               "--duration", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        r = subprocess.run([sys.executable, "-m", "edged.cli", "send", "--connect", served.endpoints["ingest"],
                            "--file", str(spikes), "--stream", "f", "--frame-events", "64"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        got = served.collect("f", (t[-1] + 1 - model.window) // model.hop + 1)
        assert_same(model, got, t, ch, int(t[-1]) + 1)
        # the listener joined at some point: keep stream f's decisions coming until it has 2
        k = int(t[-1]) + 1
        for i in range(1500):  # at most 30 s
            if listen.poll() is not None:
                break
            k = (k // model.hop + 1) * model.hop
            served.tx.send("f", [], [], until=k)
            time.sleep(0.02)  # pacing of the feed, not a wait for a result
        out, err = listen.communicate(timeout=TIMEOUT)
        assert listen.returncode == 0, err
        lines = [__import__("json").loads(x) for x in out.splitlines()]
        assert len(lines) == 2 and all(x["stream"] == "f" and x["model"] == model.sha256 for x in lines)
    finally:
        if listen.poll() is None:
            listen.kill()
            listen.communicate()


def test_sub_ingest_connects_to_a_publisher(model):
    from edged.protocol import encode_frame

    ctx = zmq.Context()
    source = ctx.socket(zmq.PUB)
    source.linger = 0
    port = source.bind_to_random_port("tcp://127.0.0.1")
    cfg = Config(ingest_endpoint=f"tcp://127.0.0.1:{port}", ingest_socket="sub", ingest_bind=False,
                 publish_endpoint="tcp://127.0.0.1:*", metrics_listen="off", streams_max=4)
    svc = Service(model, cfg, context=ctx, registry=CollectorRegistry())
    endpoints = svc.bind()
    svc.warm()
    thread = threading.Thread(target=svc.run, daemon=True)
    thread.start()
    rx = Subscriber(endpoints["publish"], context=ctx)
    try:
        for k in range(400):  # both sides are slow joiners: feed until a decision comes back
            source.send(encode_frame("s", k, [model.window + k * model.hop - 1], [1],
                                     until=model.window + k * model.hop))
            d = rx.recv(0.05)
            if d is not None:
                break
        assert d is not None and d.stream == "s"
    finally:
        svc.request_stop()
        thread.join(TIMEOUT)
        rx.close()
        source.close()
        svc.close(linger_s=0)
        ctx.term()


def test_frame_over_maxmsgsize_disconnects_peer_then_it_is_served(model):
    s = Served(model, streams_max=4, ingest_max_frame_bytes=2048)
    try:
        big = np.zeros(400, np.int64)  # 400 * 12 bytes > 2048
        s.tx.send("big", big, big)
        wait_for(lambda: s.value("edged_zmq_disconnects_total") >= 1, what="disconnect counted")
        s.tx.send("big", [1], [1], until=model.window)  # the same peer reconnects by itself
        assert s.collect("big", 1)[0].t == model.window
        wait_for(lambda: s.value("edged_seq_gaps_total") == 1, what="gap counted")  # frame 0 was dropped
    finally:
        s.close()


def test_reject_logging_is_rate_limited(model, caplog):
    s = Served(model, streams_max=4, log_reject_burst=2, log_reject_interval=60.0)
    try:
        with caplog.at_level("WARNING", logger="edged.service"):
            for _ in range(30):
                s.tx.send_frame(b"\xc1")
            wait_for(lambda: s.value("edged_frames_rejected_total", reason="decode") == 30, what="30 rejects")
            s.close()
        lines = [r for r in caplog.records if "reject" in r.getMessage()]
        assert 2 <= len(lines) <= 4, [r.getMessage() for r in lines]
        assert "28" in lines[-1].getMessage() or "more frames" in lines[-1].getMessage()
    finally:
        if s.thread.is_alive():
            s.close()


def test_lzc_field_without_lzc_readout_feature(tmp_path):
    from edged.lzc import normalise

    path = tmp_path / "rate.npz"
    save(path, small_model(window=32, hop=8, features=("rate",)))
    model = load(path)
    s = Served(model, streams_max=2)
    try:
        t, ch = events(12, 100, 64, model.n_in)
        s.tx.send("r", t, ch, until=64)
        got = s.collect("r", 5)
        d, scores = offline(model, t, ch, 64)
        want = (d.lz * normalise(1, model.window)).astype(np.float32)  # as readout.features does
        np.testing.assert_array_equal(np.array([x.lzc for x in got], np.float32), want)
        np.testing.assert_array_equal(np.array([x.scores for x in got], np.float32), scores)
    finally:
        s.close()


def test_serve_address_in_use_exits_1(tmp_path):
    path = tmp_path / "m.npz"
    save(path, small_model(window=32, hop=8))
    ctx = zmq.Context()
    taken = ctx.socket(zmq.PULL)
    taken.linger = 0
    port = taken.bind_to_random_port("tcp://127.0.0.1")
    try:
        r = subprocess.run([sys.executable, "-m", "edged.cli", "serve", "--model", str(path), "--ingest",
                            f"tcp://127.0.0.1:{port}", "--publish", "tcp://127.0.0.1:*", "--metrics", "off"],
                           capture_output=True, text=True, timeout=60)
    finally:
        taken.close()
        ctx.term()
    assert r.returncode == 1
    errors = [x for x in r.stderr.splitlines() if x.startswith("<3>")]
    assert len(errors) == 1 and "in use" in errors[0] and "Traceback" not in r.stderr


def test_thousand_streams_then_capacity_reject(model):
    s = Served(model, streams_max=1001)  # 1000 + the probe
    try:
        names = [f"n{i}" for i in range(1000)]
        for i, name in enumerate(names):
            s.tx.send(name, [i % model.window], [i % model.n_in], until=model.window)
        for name in names:
            assert s.collect(name, 1)[0].t == model.window
        wait_for(lambda: s.value("edged_streams_active") == 1001, what="1001 streams active")
        s.tx.send("one-too-many", [], [], until=1)
        wait_for(lambda: s.value("edged_frames_rejected_total", reason="capacity") == 1, what="capacity reject")
        # a known stream is still served
        s.tx.send("n7", [model.window], [0], until=model.window + model.hop)
        assert s.collect("n7", 2)[1].t == model.window + model.hop
    finally:
        s.close()


def test_a_batch_closes_at_batch_bytes(model, monkeypatch):
    """Large frames queued together are served in batches of about ``BATCH_BYTES``
    (caches and memory), not all at once; every frame is still decided."""
    from edged import service

    monkeypatch.setattr(service, "READOUT_WAIT", 60.0)  # only the byte cap may close a batch
    ctx = zmq.Context()
    cfg = Config(ingest_endpoint="tcp://127.0.0.1:*", publish_endpoint="tcp://127.0.0.1:*",
                 metrics_listen="off", streams_max=2)
    svc = Service(model, cfg, context=ctx, registry=CollectorRegistry())
    try:
        endpoints = svc.bind()
        svc.warm()
        events = service.BATCH_BYTES // 12 // 3 + 1  # a third of the cap (12 bytes an event)
        with Sender(endpoints["ingest"], context=ctx, linger=1000) as tx:
            for k in range(8):
                t = np.sort(np.random.default_rng(k).integers(k * 64, (k + 1) * 64, events))
                tx.send("big", t, t % model.n_in, until=(k + 1) * 64)
        done = 0
        for _ in range(100):  # bounded: every pump takes what arrived
            if done == 8:
                break
            if svc.sockets.ingest.poll(100):
                time.sleep(0.2)  # the rest of the burst reaches the queue
                done += svc.pump(service.BATCH)
        assert done == 8
        h = svc.metrics.batch_frames
        assert sum(h.counts) >= 3 and h.total == 8
        assert sum(h.counts[:h.bounds.index(4.0) + 1]) == sum(h.counts)  # at most 3 frames each
    finally:
        svc.close(0)
        ctx.term()


@settings(max_examples=100, deadline=None)
@given(hst.lists(hst.one_of(hst.sampled_from(LATENCY_BUCKETS), hst.floats(0, 1), hst.floats(1, 1e9)),
                 max_size=50))
def test_loop_histogram_observes_an_array_as_each_value(values):
    """``observe_all`` (the publisher's, per batch) counts as ``observe`` per value does,
    values on a bucket's bound included (Prometheus' ``le``)."""
    one, all_ = (LoopHistogram(f"h{i}", "h", LATENCY_BUCKETS, CollectorRegistry()) for i in range(2))
    for v in values:
        one.observe(v)
    all_.observe_all(np.array(values, np.float64))
    assert all_.counts.tolist() == one.counts.tolist() and all_.total == pytest.approx(one.total)


def test_warm_compiles_every_compiled_call_of_the_serve_loop(tmp_path):
    """``warm`` (before READY=1) leaves no compilation or cache load to the first frame:
    in a fresh process, every compiled call the serve loop makes has its types after it."""
    path = tmp_path / "m.npz"
    save(path, small_model(window=64, hop=8))
    code = ("import zmq\n"
            "from prometheus_client import CollectorRegistry\n"
            "from edged import engine, metrics, publisher, streams, zmqjit\n"
            "from edged.config import Config\n"
            "from edged.model import load\n"
            "from edged.service import Service, scan_frames\n"
            f"svc = Service(load({str(path)!r}), Config(metrics_listen='off'), context=zmq.Context(),"
            " registry=CollectorRegistry())\n"
            "svc.warm()\n"
            "calls = {'scan_frames': scan_frames.kernel, 'admit_frames': streams.admit_frames,\n"
            "         'advance_many': engine._advance_many, 'bill': streams.bill,\n"
            "         'decision_rows': publisher.decision_rows.kernel,\n"
            "         'pack_decisions': publisher.pack_decisions.kernel, 'count': metrics._observe_all.kernel,\n"
            "         'recv': zmqjit.recv, 'send': zmqjit.send}\n"
            "print(sorted(name for name, k in calls.items() if not k.signatures))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[-2] == "[]"
