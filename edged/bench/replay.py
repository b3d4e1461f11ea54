"""``edged bench replay``: recorded event files through ``edged serve`` as fast as it takes them.

Starts the real ``edged serve`` (its own process, one serving thread, random loopback
ports), replays an event folder with ``edged.client.replay_events`` (one stream per
recording, ``--speed max``: only ZeroMQ back-pressure paces the sender) and waits for
every recording's decision. Rows: recorded seconds, wall seconds from the first frame
to the last decision, the real-time factor (recorded / wall), the daemon's CPU seconds
(its process, so one core's worth of work) and the real-time factor per daemon CPU
second, the accuracy of the decisions against ``labels.csv``.

The folder defaults to ``$EDGED_DATA/nmnist_small`` (the benchmark stops with a clear
message when it is absent), the model to ``models/nmnist.npz``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    default = Path(os.environ.get("EDGED_DATA", "../shared/data")) / "nmnist_small"
    p.add_argument("--events", default=str(default),
                   help=f"event folder (default $EDGED_DATA/nmnist_small = {default})")
    p.add_argument("--model", default="models/nmnist.npz", help="model with an event encoding")
    p.add_argument("--limit", type=int, help="only the first N recordings")


def run(args: argparse.Namespace) -> dict:
    import zmq

    from edged.bench import result
    from edged.bench.e2e import _proc_cpu, _start_serve
    from edged.client import Sender, Subscriber, replay_events
    from edged.events import read_index
    from edged.model import load

    if not (Path(args.events) / "labels.csv").is_file():
        raise SystemExit(f"edged bench replay: no labels.csv in {args.events} "
                         "(set EDGED_DATA to the directory holding nmnist_small/, or --events DIR)")
    model = load(args.model)
    n = len(read_index(args.events)[:args.limit])
    proc, ingest, publish, _ = _start_serve(args.model, n + 1)  # + the probe stream
    ctx = zmq.Context()
    sent: dict[str, dict] = {}
    got: dict[str, str] = {}
    try:
        with Sender(ingest, context=ctx, linger=1.0) as tx, Subscriber(publish, context=ctx) as rx:
            for i in range(600):  # slow joiner: a probe stream until a decision comes back
                tx.send("~probe", [], [], until=(i + 1) * model.hop)
                if rx.recv(0.05) is not None:
                    break
            cpu0 = _proc_cpu(proc.pid)
            t0 = time.perf_counter()
            stats = replay_events(tx, args.events, model.encoding, prefix="r", limit=args.limit,
                                  on_sample=lambda s: sent.__setitem__(s["stream"], s))
            deadline = time.monotonic() + 600
            while len(got) < n and time.monotonic() < deadline:
                d = rx.recv(30.0)
                if d is None:
                    break  # stalled: report what arrived
                if d is not None and d.stream in sent and d.t == sent[d.stream]["t"]:
                    got[d.stream] = d.label
            wall = time.perf_counter() - t0
            cpu = _proc_cpu(proc.pid) - cpu0
    finally:
        proc.terminate()
        proc.wait(30)
        ctx.term()
    recorded = stats["recorded_seconds"]
    correct = sum(got.get(s) == v["label"] for s, v in sent.items())
    return {"bench": "replay",
            "params": {"events": args.events, "model": args.model, "recordings": n,
                       "events_total": stats["events"], "decisions": len(got)},
            "results": [result("recorded time", recorded, "s"),
                        result("wall time, first frame to last decision", wall, "s"),
                        result("real-time factor (recorded / wall)", recorded / wall, "x"),
                        result("daemon CPU time", cpu, "s"),
                        result("real-time factor per daemon CPU second", recorded / max(cpu, 1e-9), "x"),
                        result("decision accuracy vs labels.csv", correct / max(n, 1), "")],
            "notes": ["one stream per recording, --speed max; the daemon serves on one thread",
                      "accuracy covers every listed recording, training samples included"]}
