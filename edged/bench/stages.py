"""``edged bench stages``: where the serve loop's time goes, per frame-and-decision.

One ``Service`` runs in this process on loopback sockets (random ports) with ``--streams``
streams, primed and then fed a window's worth of hops (their LZ windows full of traffic, as
a running daemon's); ``--hops`` hops of real-time-shaped frames (one frame per stream per hop,
``--rate`` events/s per stream, each completing one decision) are queued on its ingest
socket, then ``pump`` works them off, ``--batch`` frames per call. The total is measured
as the better of two passes without stage timers; a third pass over as many fresh hops
times each stage around the calls that do it: receive (``Sockets.receive``), decode +
admit (``Service.admit_all``), the engine (``Engine.advance_many``), the readout
(``Readout.scores``), encode + publish (``Publisher.decisions``); ``loop`` is that pass's
total less its stages (the rest of ``pump``, and the timers' own cost: ten clock reads per
batch). The two totals differ by that cost and by the machine's drift between passes.
Times are CPU seconds of the serving thread (``time.thread_time``), so other jobs on the
machine inflate them less than wall time. The baseline, in the same process on the same
kind of sockets, is the bare loop of a Python ZeroMQ service: receive each of the same
frames and publish one two-part message for it, a pyzmq call per message (the serve
loop makes one compiled call per batch each way instead: ``edged.zmqjit``).
"""

from __future__ import annotations

import argparse
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="models/meta.npz", help="model file (default models/meta.npz)")
    p.add_argument("--streams", type=int, default=500)
    p.add_argument("--hops", type=int, default=8, help="frames per stream (one decision each)")
    p.add_argument("--rate", type=float, default=1000.0, help="events/s per stream")
    p.add_argument("--batch", type=int, default=256,
                   help="frames per pump (the serve loop's batch; 1: every frame alone, as a "
                        "lightly loaded daemon sees them)")
    p.add_argument("--seed", type=int, default=0)


def _timed(fn, bucket: list):
    """``fn``, adding the CPU seconds of this thread it takes to ``bucket[0]``."""
    def wrapper(*a, **k):
        t0 = time.thread_time()
        try:
            return fn(*a, **k)
        finally:
            bucket[0] += time.thread_time() - t0
    return wrapper


def run(args: argparse.Namespace) -> dict:
    import zmq
    from prometheus_client import CollectorRegistry

    from edged.bench import result
    from edged.bench.streams import Traffic
    from edged.config import Config
    from edged.model import load
    from edged.service import Service

    model = load(args.model)
    n, hops = args.streams, args.hops
    cfg = Config(ingest_endpoint="tcp://127.0.0.1:*", publish_endpoint="tcp://127.0.0.1:*",
                 metrics_listen="off", streams_max=n + 8, ingest_hwm=1 << 24,
                 publish_hwm=1 << 24)
    ctx = zmq.Context()
    svc = Service(model, cfg, context=ctx, registry=CollectorRegistry())
    endpoints = svc.bind()
    svc.warm()
    push = ctx.socket(zmq.PUSH)
    push.sndhwm = 0
    push.linger = 0
    push.connect(endpoints["ingest"])
    sub = ctx.socket(zmq.SUB)  # keeps PUB sending to a real subscriber
    sub.rcvhwm = 0
    sub.linger = 0
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoints["publish"])
    traffic = Traffic(model, args.rate, args.seed)

    def work_off(frames: list[bytes]) -> tuple[float, float]:
        for f in frames:
            push.send(f)
        while svc.sockets.ingest.poll(0) == 0:  # bounded by the frames just sent
            time.sleep(0.001)
        time.sleep(0.2)  # let the I/O thread queue them all (loopback)
        done, t0, c0 = 0, time.perf_counter(), time.thread_time()
        for _ in range(100 * len(frames) + 100):  # bounded: each pump handles >= 1 or ends
            if done >= len(frames):
                break
            got = svc.pump(args.batch)
            done += got
            if not got and not svc.sockets.ingest.poll(100):
                break
        if done != len(frames):
            raise RuntimeError(f"only {done} of {len(frames)} frames handled")
        return time.perf_counter() - t0, time.thread_time() - c0

    def drain_sub() -> None:
        for _ in range(10_000_000):  # bounded
            try:
                sub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return

    try:
        work_off(traffic.prime(n))
        # a window of traffic: every path compiled, the LZ windows free of the primer's zeros
        work_off(traffic.hops(n, traffic.window_hops))
        drain_sub()
        runs = []
        for _ in range(2):  # the better of two untimed passes (the first may still warm caches)
            frames = traffic.hops(n, hops)
            svc.flush_metrics()  # the tally now counts this pass only
            runs.append(work_off(frames))
            decisions = svc.tally.decisions
            drain_sub()
            if decisions != len(frames):
                raise RuntimeError(f"{decisions} decisions for {len(frames)} frames")
        wall, cpu = min(runs, key=lambda r: r[1])
        buckets = {k: [0.0] for k in ("receive", "admit", "engine", "readout", "publish")}
        svc.sockets.receive = _timed(svc.sockets.receive, buckets["receive"])
        svc.admit_all = _timed(svc.admit_all, buckets["admit"])
        svc.engine.advance_many = _timed(svc.engine.advance_many, buckets["engine"])
        svc.readout.scores = _timed(svc.readout.scores, buckets["readout"])
        svc.publisher.decisions = _timed(svc.publisher.decisions, buckets["publish"])
        _, timed_cpu = work_off(traffic.hops(n, hops))
        drain_sub()

        # the baseline: the same frames through a bare recv -> two-part send loop
        pull, pub = ctx.socket(zmq.PULL), ctx.socket(zmq.PUB)
        for s in (pull, pub):
            s.linger = 0
            s.rcvhwm = s.sndhwm = 0
        pull.bind("tcp://127.0.0.1:*")
        pub.bind("tcp://127.0.0.1:*")
        sub2 = ctx.socket(zmq.SUB)
        sub2.linger = 0
        sub2.setsockopt(zmq.SUBSCRIBE, b"")
        sub2.connect(pub.last_endpoint.decode())
        push2 = ctx.socket(zmq.PUSH)
        push2.linger = 0
        push2.sndhwm = 0
        push2.connect(pull.last_endpoint.decode())
        for f in frames:
            push2.send(f)
        time.sleep(0.2)
        t0 = time.thread_time()
        for _ in range(len(frames)):
            buf = pull.recv()
            pub.send(b"s", zmq.SNDMORE)
            pub.send(buf)
        echo = time.thread_time() - t0
        for s in (pull, pub, sub2, push2):
            s.close()
    finally:
        push.close()
        sub.close()
        svc.close(0)
        ctx.term()

    k = len(frames)
    per = {name: b[0] / k * 1e6 for name, b in buckets.items()}
    rows = [result("receive (one call per batch)", per["receive"], "us"),
            result("loop", timed_cpu / k * 1e6 - sum(per.values()), "us"),
            result("decode + admit", per["admit"], "us"),
            result("engine (advance_many)", per["engine"], "us"),
            result("readout (one call per batch)", per["readout"], "us"),
            result("encode + publish", per["publish"], "us")]
    base = ("bare recv + publish", echo / k * 1e6)
    rows.append(result(*base, "us"))
    rows.append(result("serve loop total", cpu / k * 1e6, "us", base))
    import os

    notes = [f"CPU us per frame-and-decision (wall {wall / k * 1e6:.1f} us); {k} frames of {n} streams x {hops} hops, "
             f"{args.rate:g} events/s per stream, {model.hop}-step frames, {args.batch} per pump; "
             f"ratio = baseline / edged",
             f"stages (and loop) from a third, timed pass: its total {timed_cpu / k * 1e6:.1f} us",
             f"model {args.model}: {model.n_in}-{model.n_hidden}-{model.n_out}, window {model.window}",
             f"load average {os.getloadavg()[0]:.1f} (other jobs share the {os.cpu_count()} CPUs)"]
    return {"bench": "stages", "params": {"streams": n, "hops": hops, "rate": args.rate, "batch": args.batch},
            "results": rows, "notes": notes}
