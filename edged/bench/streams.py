"""``edged bench streams``: how many real-time streams one ``edged serve`` keeps up with.

Every stream sends one frame per hop of wall-clock time (``hop x dt``: 16 ms for
``models/meta.npz``) holding that hop's events, ``--rate`` events/s spread uniformly
over the model's channels and the hop's steps, with ``until`` at the hop's end; the N
streams' send times are spread evenly over each hop. Every frame completes exactly one
decision (streams are primed to ``window - hop`` steps first). A sender process paces
the frames (PUSH) while this process receives the decisions (SUB) and matches them per
stream: the k-th decision on stream s answers its k-th frame.

A ladder of N: a count is kept up with when no frame was sent more than one hop after its
due time, every decision came back, and client p99 (decision arrival - frame send) is
below one hop. The first count not kept up with ends the ladder. Before it, the first
count runs a window's worth of hops unscored (the warm-up rung: its LZ windows fill with
traffic instead of the primer's zeros, and a daemon just started settles; first rungs had
failed at loads later rungs kept). Daemon CPU is ``utime +
stime`` of the ``edged serve`` process and its children, from ``/proc``, over each rung,
and the busiest serving thread's (the main thread of the daemon, or of each worker: one
core is its limit, so near 1.0 it is saturated); frames per serve-loop batch from the
daemon's ``edged_batch_frames``, and the decisions it made and the frames it rejected (so
a missing decision can be told apart from one lost on the way) and its own p99 from a
frame's receipt to its decision's publish (the least bound of its
``edged_decision_latency_seconds`` holding 99 %: the rest of a client p99 is queueing
before the serve loop reads a frame, or transport), from its ``/metrics`` (every
worker's) before and after, and the CPU time the hypervisor stole from the
machine's CPUs over the rung (``/proc/stat``: other guests' load, which can fail a rung on
p99 whatever edged does). Client CPU: the receiver (this process) and the sender,
each over the rung with its ZeroMQ I/O thread; their loops are compiled
(``edged.bench.pace``). The bare echo (PULL -> PUB republishing each frame untouched, the
floor of any Python ZeroMQ service) gets the same frames at the largest count kept.

With ``--workers N`` the daemon is ``edged serve --workers N``: the router (the parent
process: ingest, routing, publishing and their ZeroMQ I/O threads) is measured on
its own, and its CPU per frame is reported against the workers' (the routing hop's cost).

The client shares the machine with the daemon (and with whatever else runs there): the
sender and the receiver are two Python processes on the same cores. Shared machines also
run edged's code at speeds that move by the hour (up to ~2x on the machines measured), so
before and after the ladder this process times the engine alone on the same traffic
(``host_speed``): a count kept is read against the speed of the hour.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import tempfile
import time
from pathlib import Path

DEFAULT_LADDER = "100,200,400,600,800,1000,1300,1600,2000"
LATE_HOPS = 1.0  # a frame sent more than this many hops after its due time is late
SETTLE_S = 2.0  # wait this long after the last send for outstanding replies
FLUSH_WAIT_S = 0.2  # and this long after the last reply (edged.service.FLUSH_S is 0.01)
HOST_STREAMS = 200  # streams of the host-speed measure (``host_speed``)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="models/meta.npz", help="model file (default models/meta.npz)")
    p.add_argument("--rate", type=float, default=1000.0, help="events/s per stream")
    p.add_argument("--ladder", default=DEFAULT_LADDER,
                   help="stream counts to try, ascending")
    p.add_argument("--duration", type=float, default=3.0, help="seconds of real time per count")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="short run for tests (~30 s)")
    p.add_argument("--workers", type=int, default=1,
                   help="edged serve --workers N (default 1: one process, no router)")
    p.add_argument("--serve-cpus", default="",
                   help="edged serve --serve-cpus (default '': the serving threads unpinned)")


# -- processes --------------------------------------------------------------------------------

def _tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its live descendants."""
    tck = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        p = int(entry.name)
        parent[p] = int(fields[1])
        cpu[p] = (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / tck
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += cpu.get(p, 0.0)
        todo += [c for c, pp in parent.items() if pp == p]
    return total


def _steal() -> float:
    """CPU seconds stolen from this machine's CPUs so far (by the hypervisor, for other
    guests; ``/proc/stat``), nan where unknown."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def _serving_threads(pid: int, workers: int) -> dict[int, float]:
    """CPU seconds (user + system) of each serving thread: the main thread of ``pid`` (one
    process) or of each of its child processes (``--workers``)."""
    from edged.bench.e2e import _proc_cpu

    pids = [pid]
    if workers > 1:
        pids = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    out = {}
    for p in pids:
        try:
            out[p] = _proc_cpu(p, thread=p)
        except OSError:  # a worker ended meanwhile
            continue
    return out


# -- traffic ----------------------------------------------------------------------------------

class Traffic:
    """Per-stream clocks and seqs, so each rung continues the streams of the one before."""

    def __init__(self, model, rate: float, seed: int):
        import numpy as np

        self.model, self.rng = model, np.random.default_rng(seed)
        self.per_hop = rate * model.hop * model.dt  # events per stream per hop
        self.clock: list[int] = []
        self.seq: list[int] = []

    def prime(self, n: int) -> list[bytes]:
        """Frames bringing new streams up to ``n`` to ``window - hop`` steps."""
        from edged.protocol import encode_frame

        out = []
        while len(self.clock) < n:
            s = len(self.clock)
            out.append(encode_frame(f"s{s}", 0, [], [], until=self.model.window - self.model.hop))
            self.clock.append(self.model.window - self.model.hop)
            self.seq.append(1)
        return out

    @property
    def window_hops(self) -> int:
        """Hops that fill a stream's LZ window with traffic (after priming, its zeros)."""
        return -(-self.model.window // self.model.hop)

    def hop(self, n: int):
        """One hop of streams ``0..n-1`` as ``Engine.advance_many`` takes it: ``(slots,
        starts, ends, offsets, t, ch)``."""
        import numpy as np

        m = self.model
        starts = np.array(self.clock[:n], np.int64)
        counts = np.zeros(n, np.int64)
        t, ch = [], []
        for s in range(n):
            counts[s] = self.rng.poisson(self.per_hop)
            t.append(np.sort(self.rng.integers(starts[s], starts[s] + m.hop, counts[s])))
            ch.append(self.rng.integers(0, m.n_in, counts[s]))
            self.clock[s] += m.hop
            self.seq[s] += 1
        offsets = np.concatenate([[0], np.cumsum(counts)])
        return (np.arange(n, dtype=np.int64), starts, starts + m.hop, offsets,
                np.concatenate(t).astype(np.int64), np.concatenate(ch).astype(np.int64))

    def hops(self, n: int, k: int) -> list[bytes]:
        """``k`` hops of streams ``0..n-1``, in send order (hop-major), as frames."""
        from edged.protocol import encode_frame

        out = []
        for _ in range(k):
            slots, starts, ends, offsets, t, ch = self.hop(n)
            for s in range(n):
                a, b = offsets[s], offsets[s + 1]
                out.append(encode_frame(f"s{s}", self.seq[s] - 1, t[a:b], ch[a:b], until=ends[s]))
        return out


def host_speed(model, rate: float, seed: int, n: int = HOST_STREAMS, timed: int = 16) -> float:
    """CPU us per frame-and-decision of ``Engine.advance_many`` in this process on ``n``
    streams of this traffic, after a window's worth of hops: how fast the machine runs
    edged's engine at the moment (it varies by the hour on shared machines), to read a
    ladder against."""
    import numpy as np

    from edged.engine import Engine

    engine, traffic = Engine.for_model(model, n), Traffic(model, rate, seed)
    traffic.prime(n)  # the streams' clocks at window - hop, the engine's brought there
    none = np.zeros(0, np.int64)
    engine.advance_many(np.arange(n, dtype=np.int64), np.zeros(n, np.int64),
                        np.array(traffic.clock, np.int64), np.zeros(n + 1, np.int64), none, none)
    for _ in range(traffic.window_hops):
        engine.advance_many(*traffic.hop(n))
    cpu = 0.0
    for _ in range(timed):
        frames = traffic.hop(n)
        t0 = time.thread_time()
        engine.advance_many(*frames)
        cpu += time.thread_time() - t0
    return cpu / (timed * n) * 1e6


def _rung(ctx, ingest: str, publish: str, frames: list[bytes], n: int, hop_s: float,
          echo: bool, usage, serving=dict) -> dict:
    """Send ``frames`` (hop-major over ``n`` streams) on schedule from a child process;
    receive and match the replies here; return the rung's measurements."""
    import multiprocessing

    import numpy as np
    import zmq

    from edged.bench import pace

    sub = ctx.socket(zmq.SUB)
    sub.linger = 0
    sub.rcvhwm = 1 << 22
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(publish)
    tmp = tempfile.TemporaryDirectory(prefix="edged-streams-")
    frames_path = os.path.join(tmp.name, "frames.pkl")
    result_path = os.path.join(tmp.name, "sent.npz")
    with open(frames_path, "wb") as f:
        pickle.dump(frames, f)
    replies = pace.Replies(sub, n, len(frames), echo)
    mp = multiprocessing.get_context("spawn")
    ours, theirs = mp.Pipe()
    proc = mp.Process(target=pace.sender, args=(ingest, frames_path, n, hop_s, theirs, result_path))
    proc.start()
    if not ours.poll(120) or ours.recv() != "ready":  # also covers the SUB's slow join
        proc.kill()
        raise RuntimeError("the sender process did not start")
    start = time.perf_counter() + 0.3  # the PUSH connects meanwhile
    ours.send(start)
    before = usage()  # (daemon tree CPU, router CPU, batches, frames in them, decisions, rejects)
    threads = serving()  # {pid: CPU seconds of its serving thread}
    client0 = time.process_time()  # this process, its ZeroMQ I/O thread included
    steal0, wall0 = _steal(), time.perf_counter()
    send_end = start + len(frames) * hop_s / n
    deadline = send_end + SETTLE_S + 30.0  # bounded even if the sender is slow to start
    clock = time.perf_counter
    while replies.count < len(frames) and clock() < deadline:
        replies.collect(min(deadline, clock() + 0.05))
        if clock() > send_end + SETTLE_S and not proc.is_alive():
            break
    time.sleep(FLUSH_WAIT_S)  # the daemon's counters reach /metrics
    cpu, router_cpu, batches, batched, decided, rejected, within = (b - a for a, b in zip(before, usage()))
    busiest = max((c - threads[p] for p, c in serving().items() if p in threads), default=float("nan"))
    client = time.process_time() - client0
    steal = (_steal() - steal0) / ((time.perf_counter() - wall0) * (os.cpu_count() or 1))
    proc.join(60)
    with np.load(result_path) as result:
        sent = result["sent"]
        client += float(result["cpu"])  # + the sender's, over its sending
    tmp.cleanup()
    sub.close()
    checked, mismatched = replies.mismatched()
    due = start + np.arange(len(frames)) * hop_s / n
    lat = replies.arrived - sent
    ok = ~np.isnan(lat)
    return {"frames": len(frames), "missing": int((~ok).sum()),
            "late": int((sent - due > LATE_HOPS * hop_s).sum()),
            "p50": float(np.percentile(lat[ok], 50)) if ok.any() else float("nan"),
            "p99": float(np.percentile(lat[ok], 99)) if ok.any() else float("nan"),
            "cpu": cpu, "router_cpu": router_cpu, "client_cpu": client,
            "seconds": len(frames) * hop_s / n, "checked": checked, "mismatched": mismatched,
            "batch": batched / batches if batches else float("nan"), "serving_cpu": busiest,
            "decided": int(decided), "rejected": int(rejected), "steal": steal,
            "daemon_p99": _p99_bound(within)}


def _daemon_counts(metrics: str) -> tuple:
    """The daemon's serve-loop batches so far, the frames in them, its decisions, its
    rejected frames and its decisions within each bound of ``_latency_bounds()`` (receipt
    to publish; every worker's)."""
    import numpy as np

    from edged.bench.e2e import _scrape

    m = _scrape(metrics)

    def total(name: str) -> float:
        return sum(v for k, v in m.items() if k == name or k.startswith(name + "{"))
    bounds = _latency_bounds()
    within = np.zeros(len(bounds))
    for k, v in m.items():
        le = re.search(r'le="([^"]+)"', k)
        if k.startswith("edged_decision_latency_seconds_bucket") and le:
            within[bounds.index(float(le.group(1)))] += v
    return (total("edged_batch_frames_count"), total("edged_batch_frames_sum"),
            total("edged_decisions_total"), total("edged_frames_rejected_total"), within)


def _latency_bounds() -> tuple[float, ...]:
    """The bounds of the daemon's latency histogram (``edged_decision_latency_seconds``)."""
    from edged.metrics import LATENCY_BUCKETS

    return (*LATENCY_BUCKETS, float("inf"))


def _p99_bound(within) -> float:
    """The least bound of ``_latency_bounds()`` that 99 % of the decisions counted in
    ``within`` (per bound, cumulative) fall within; nan for none."""
    import numpy as np

    if not len(within) or within[-1] <= 0:
        return float("nan")
    return _latency_bounds()[int(np.searchsorted(within, 0.99 * within[-1]))]


def _wait_ready(ctx, ingest: str, publish: str, probe: str, model, workers: int = 1) -> None:
    """Slow joiner and backlog: advance a probe stream per worker until each decides."""
    import zmq

    from edged.protocol import encode_frame
    from edged.link import shard_of

    probes: dict[int, str] = {}
    for k in range(1000 * workers):
        probes.setdefault(shard_of(f"{probe}.{k}".encode(), workers), f"{probe}.{k}")
    waiting = set(probes.values())
    push, sub = ctx.socket(zmq.PUSH), ctx.socket(zmq.SUB)
    for s in (push, sub):
        s.linger = 0
    sub.setsockopt(zmq.SUBSCRIBE, probe.encode())
    push.connect(ingest)
    sub.connect(publish)
    try:
        for k in range(3000):  # bounded: 3000 x 20 ms
            for p in waiting:
                push.send(encode_frame(p, k, [], [], until=model.window + k * model.hop))
            while sub.poll(20):
                waiting.discard(sub.recv_multipart()[0].decode())
            if not waiting:
                return
        raise RuntimeError("no decision from edged serve")
    finally:
        push.close()
        sub.close()


def run(args: argparse.Namespace) -> dict:
    import numpy as np
    import zmq

    from edged.bench.e2e import _proc_cpu, _proc_rss, _start_echo, _start_serve
    from edged.model import load

    ladder = [int(x) for x in args.ladder.split(",") if x]
    if args.quick:
        ladder, args.duration = [min(ladder), 2 * min(ladder)] if args.ladder != DEFAULT_LADDER else [20, 40], 1.0
    if not ladder or ladder != sorted(ladder) or ladder[0] < 1:
        raise ValueError("--ladder must be ascending positive stream counts")
    model = load(args.model)
    hop_s = model.hop * model.dt
    hops = max(2, round(args.duration / hop_s))
    traffic = Traffic(model, args.rate, args.seed)
    ctx = zmq.Context()
    if args.workers < 1:
        raise ValueError("--workers must be >= 1")
    speed = [host_speed(model, args.rate, args.seed)]  # (compiles the kernels if the cache is cold)
    capacity = ladder[-1] + (len(ladder) + 8) * args.workers  # + the probes (each worker may hold all)
    serve, s_in, s_out, metrics = _start_serve(args.model, capacity, "--workers", str(args.workers),
                                               "--serve-cpus", args.serve_cpus)
    echo, e_in, e_out = _start_echo()
    notes = [f"load average {os.getloadavg()[0]:.1f} at the start"]
    kept, at_kept, ref, rss = 0, None, None, 0
    try:
        for n in ladder:
            prime = traffic.prime(n)
            _send_all(ctx, s_in, prime)
            _wait_ready(ctx, s_in, s_out, f"~probe{n}", model, args.workers)
            warm_up = [(traffic.window_hops, False)] if n == ladder[0] else []
            for k, scored in warm_up + [(hops, True)]:
                out = _rung(ctx, s_in, s_out, traffic.hops(n, k), n, hop_s, False,
                            lambda: (_tree_cpu(serve.pid), _proc_cpu(serve.pid),
                                     *_daemon_counts(metrics)),
                            lambda: _serving_threads(serve.pid, args.workers))
                ok = out["late"] == 0 and out["missing"] == 0 and out["p99"] < hop_s and not out["mismatched"]
                notes.append(_rung_note(out, n, args.workers)
                             + (f" -> {'kept' if ok else 'NOT kept'}" if scored else " (warm-up, not scored)"))
            if not ok:
                break
            kept, at_kept = n, out
        rss = _proc_rss(serve.pid)
        if at_kept is not None:  # the bare echo: the same kind of frames, count and pacing
            echo_traffic = Traffic(model, args.rate, args.seed)
            echo_traffic.prime(kept)
            ref = _rung(ctx, e_in, e_out, echo_traffic.hops(kept, hops), kept, hop_s, True,
                        lambda: (_tree_cpu(echo.pid), 0.0, 0.0, 0.0, 0.0, 0.0, np.zeros(0)))
    finally:
        for proc in (serve, echo):
            proc.terminate()
        for proc in (serve, echo):
            proc.wait(30)
        ctx.term()
    speed.append(host_speed(model, args.rate, args.seed))
    return _report(args, model, kept, at_kept, ref, notes, hop_s, rss, speed)


def _rung_note(out: dict, n: int, workers: int) -> str:
    return (f"{n} streams: {out['frames']} frames over {out['seconds']:.1f}s, "
            f"{out['late']} sent late, {out['missing']} decisions missing (the daemon "
            f"made {out['decided']}, rejected {out['rejected']} frames), client p50 "
            f"{out['p50'] * 1e3:.2f} ms p99 {out['p99'] * 1e3:.2f} ms (in the daemon, receipt to "
            f"publish: p99 <= {out['daemon_p99'] * 1e3:g} ms), daemon "
            f"{out['cpu'] / out['seconds']:.2f} cores = {out['cpu'] / out['frames'] * 1e6:.1f} us "
            f"per frame-and-decision, busiest serving thread "
            f"{out['serving_cpu'] / out['seconds']:.2f} cores (client "
            f"{out['client_cpu'] / out['seconds']:.2f} cores), "
            f"{out['batch']:.1f} frames per batch, CPU steal {100 * out['steal']:.1f} %"
            + (f", router {out['router_cpu'] / out['frames'] * 1e6:.1f} us per frame" if workers > 1 else ""))


def _send_all(ctx, endpoint: str, frames: list[bytes]) -> None:
    import zmq

    push = ctx.socket(zmq.PUSH)
    push.linger = 5000
    push.sndhwm = 1 << 20
    push.connect(endpoint)
    for f in frames:
        push.send(f)
    push.close()


def _report(args, model, kept, at_kept, ref, notes, hop_s, rss, speed) -> dict:
    from edged.bench import result

    rows = [result("largest stream count kept up with", kept, "n")]
    if at_kept is not None:
        per_stream = at_kept["cpu"] / at_kept["seconds"] / kept
        rows.append(result(f"daemon CPU per stream @{kept}", per_stream * 1e3, "mcore"))
        rows.append(result(f"real-time streams per daemon core @{kept}", 1 / per_stream, "n"))
        rows.append(result(f"daemon CPU per frame-and-decision @{kept}",
                           at_kept["cpu"] / at_kept["frames"] * 1e6, "us"))
        rows.append(result(f"frames per serve-loop batch @{kept}", at_kept["batch"], "n"))
        rows.append(result(f"busiest serving thread @{kept}", at_kept["serving_cpu"] / at_kept["seconds"],
                           "cores"))
        rows.append(result(f"client CPU per frame-and-decision @{kept}",
                           at_kept["client_cpu"] / at_kept["frames"] * 1e6, "us"))
        if args.workers > 1:  # the routing hop: the router process against the workers
            router = at_kept["router_cpu"] / at_kept["frames"] * 1e6
            worker = (at_kept["cpu"] - at_kept["router_cpu"]) / at_kept["frames"] * 1e6
            rows.append(result(f"worker CPU per frame-and-decision @{kept}", worker, "us"))
            rows.append(result(f"router CPU per frame @{kept}", router, "us"))
            rows.append(result(f"router / worker CPU per frame @{kept}", 100 * router / worker, "%"))
    if ref is not None:
        echo_cpu = ref["cpu"] / ref["frames"] * 1e6
        rows.append(result(f"echo CPU per frame @{kept}", echo_cpu, "us"))
        for q in ("p50", "p99"):
            rows.append(result(f"echo client latency {q} @{kept}", ref[q] * 1e6, "us"))
        for q in ("p50", "p99"):
            rows.append(result(f"edged client latency {q} @{kept}", at_kept[q] * 1e6, "us",
                               (f"echo client latency {q} @{kept}", ref[q] * 1e6)))
        notes.append(f"echo @{kept}: {ref['late']} sent late, {ref['missing']} replies missing")
    rows.append(result("daemon RSS after the ladder", rss / 2**20, "MiB"))
    for when, us in zip(("before", "after"), speed):
        rows.append(result(f"host speed {when} the ladder: engine per frame", us, "us"))
    notes.append(f"model {args.model}: {model.n_in} channels, window {model.window}, hop {model.hop} "
                 f"x dt {model.dt * 1e3:g} ms = {hop_s * 1e3:g} ms per frame; {args.rate:g} events/s "
                 f"per stream; the client (a sender and a receiver process) runs on the same "
                 f"{os.cpu_count()} CPUs; ratio = echo / edged")
    notes.append(f"load average {os.getloadavg()[0]:.1f} at the end")
    notes.append("host speed: Engine.advance_many in the benchmark process, the daemon idle, "
                 f"CPU us per frame-and-decision on {HOST_STREAMS} streams of the same traffic "
                 "(edged bench stages' engine row measures the same)")
    if args.workers > 1:
        notes.append(f"edged serve --workers {args.workers}: daemon CPU = router + workers; router = "
                     "the parent process (ingest, routing, publishing, ZeroMQ I/O threads)")
    return {"bench": "streams", "params": {"rate": args.rate, "ladder": args.ladder,
                                           "duration": args.duration, "quick": args.quick,
                                           "workers": args.workers},
            "results": rows, "notes": notes}
