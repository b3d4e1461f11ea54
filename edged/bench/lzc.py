"""``edged bench lzc``: LZ76 one-shot and sliding-window cost against antropy and plain Numba.

Inputs are seeded Bernoulli spike trains (one-shot: densities 0.5, 0.3 and 0.05; sliding:
0.05, 0.3, 0.5, 0.65) and periodic trains (a random period of 1-39 bits, 1 % of the bits
flipped). One-shot rows time ``edged.lzc.lz76`` on 1024-bit windows against antropy's
``lziv_complexity`` and a plain Numba Kaspar-Schuster loop. Sliding rows push 10 output
neurons through a full W = 1024 window and read ``counts`` every H steps: at H = 16 in us
per decision (16 steps pushed in one run, as the engine does, and one read) against the
same loop recounting every window with ``lz76_jit``; at H = 1 in us per step against the
Kaspar-Schuster loop recounting every window; at H = 32 and 64 (d = 0.3) in us per step
against H = 16 (a read's cost in part does not grow with the steps pushed since the last).
Every reported number is checked for exactness first.
"""

from __future__ import annotations

import argparse

from edged.bench import best_time, result

BITS = 1024
WINDOW = 1024
NEURONS = 10
DENSITIES = (0.5, 0.3, 0.05)
SLIDING = (("d=0.05", 0.05), ("d=0.3", 0.3), ("d=0.5", 0.5), ("d=0.65", 0.65), ("periodic", None))
HOP = 16
LONGER_HOPS = (32, 64)  # per step against H = HOP: what a read costs whatever was pushed
N_INPUTS = 256  # distinct one-shot inputs per density, each timed call goes through all
# (with a few, the CPU learns their branches and the one-shot rows read ~20 % cheap)
STEPS = 2048   # timed sliding steps after the window is full
CHECK_EVERY = 256  # the untimed exactness pass compares with lz76 this often


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeat", type=int, default=7,
                        help="timing samples per measure (the best is kept)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the spike trains")


def _kaspar_schuster():
    """Plain Numba Kaspar-Schuster LZ76 count: the baseline an engineer would write first."""
    import numba

    @numba.njit(cache=True)
    def ks(s):
        n = s.size
        if n < 2:
            return n
        c, l, i, k, k_max = 1, 1, 0, 1, 1
        while True:
            if s[i + k - 1] == s[l + k - 1]:
                k += 1
                if l + k > n:
                    return c + 1
            else:
                k_max = max(k, k_max)
                i += 1
                if i == l:
                    c += 1
                    l += k_max
                    if l + 1 > n:
                        return c
                    i, k, k_max = 0, 1, 1
                else:
                    k = 1

    return ks


def _drivers():
    import numba
    import numpy as np

    from edged import lzc

    @numba.njit
    def drive(st, stream, spikes, hop, out):  # the daemon's per-stream loop, in miniature:
        held = np.zeros(out.size, np.uint64)  # the steps' bits pushed in runs, as the engine does
        work = lzc.workspace(st)  # (one work space for all reads, as the engine has)
        k = 0
        for t in range(spikes.shape[0]):
            for n in range(out.size):
                held[n] = (held[n] << np.uint64(1)) | np.uint64(spikes[t, n])
            k += 1
            if (t + 1) % hop == 0 or k == lzc.MAX_PUSH:
                lzc.push_many(st, stream, held, k)
                k = 0
            if (t + 1) % hop == 0:
                lzc.read(st, stream, out, work)

    @numba.njit
    def recount(st, stream, spikes, hop, out):  # the same loop, recounting each window
        for t in range(spikes.shape[0]):
            lzc.push(st, stream, spikes[t])
            if (t + 1) % hop == 0:
                for n in range(out.size):
                    out[n] = lzc.lz76_jit(lzc.window_bits(st, stream, n))

    return drive, recount


def run(args: argparse.Namespace) -> dict:
    import numpy as np

    from edged import lzc

    try:
        from antropy import lziv_complexity
    except ImportError:
        lziv_complexity = None
    ks = _kaspar_schuster()
    drive, recount = _drivers()
    rng = np.random.default_rng(args.seed)
    results, notes = [], []

    def time_per(fn, calls):
        return best_time(fn, repeat=args.repeat) / calls * 1e6

    ks_us = {}
    for d in DENSITIES:
        xs = [(rng.random(BITS) < d).astype(np.uint8) for _ in range(N_INPUTS)]
        expect = [ks(x) for x in xs]
        if [lzc.lz76(x) for x in xs] != expect:
            raise RuntimeError("lz76 disagrees with the Kaspar-Schuster baseline")
        ks_us[d] = time_per(lambda: [ks(x) for x in xs], N_INPUTS)
        ours = time_per(lambda: [lzc.lz76(x) for x in xs], N_INPUTS)
        if lziv_complexity is not None:
            bools = [x.astype(bool) for x in xs]  # antropy's fast path (uint8 goes via str)
            if [lziv_complexity(x) for x in bools] != expect:
                raise RuntimeError("antropy disagrees with the Kaspar-Schuster baseline")
            ant = (f"antropy lziv_complexity d={d}",
                   time_per(lambda: [lziv_complexity(x) for x in bools], N_INPUTS))
            results.append(result(*ant, "us"))
        else:
            ant = None
        results.append(result(f"numba Kaspar-Schuster d={d}", ks_us[d], "us", ant))
        results.append(result(f"lz76 d={d}", ours, "us", ant))
        notes.append(f"lz76 d={d}: {ks_us[d] / ours:.1f}x faster than the plain Numba loop")
    if lziv_complexity is None:
        notes.append("antropy not installed: no antropy baseline")

    out = np.zeros(NEURONS, np.int64)

    def train(d):
        if d is not None:
            return (rng.random((WINDOW + STEPS, NEURONS)) < d).astype(np.uint8)
        cols = []
        for _ in range(NEURONS):
            x = np.resize(rng.random(int(rng.integers(1, 40))) < 0.5, WINDOW + STEPS)
            x[rng.random(x.size) < 0.01] ^= True
            cols.append(x)
        return np.stack(cols, axis=1).astype(np.uint8)

    def sliding(spikes, hop):
        """Per-step us of ``drive`` and ``recount`` at read interval ``hop``, checked first."""
        full = lzc.sliding_state(1, NEURONS, WINDOW, hop)
        drive(full, 0, spikes[:WINDOW], hop, out)
        st = lzc.SlidingLZ(*(a.copy() for a in full))
        for end in range(WINDOW + CHECK_EVERY, WINDOW + STEPS + 1, CHECK_EVERY):
            drive(st, 0, spikes[end - CHECK_EVERY:end], hop, out)
            lzc.counts(st, 0, out)
            window = spikes[end - WINDOW:end]
            if [lzc.lz76(window[:, n]) for n in range(NEURONS)] != out.tolist():
                raise RuntimeError("sliding counts disagree with lz76 of the window")

        def timed(loop):
            return time_per(lambda: loop(lzc.SlidingLZ(*(a.copy() for a in full)), 0,
                                         spikes[WINDOW:], hop, out), STEPS)

        return timed(drive), timed(recount)

    per_step = {}
    for label, d in SLIDING:  # per decision: HOP steps and one read
        ours, theirs = sliding(train(d), HOP)
        per_step[label] = ours
        base = (f"recount every hop H={HOP} {label}", theirs * HOP)
        results.append(result(*base, "us"))
        results.append(result(f"sliding H={HOP} {label}", ours * HOP, "us", base))
    ours, _ = sliding(train(0.5), 1)  # per step, against the derived cost of a KS recount
    base = ("KS recount every step H=1 d=0.5", ks_us[0.5] * NEURONS)
    results.append(result(*base, "us"))
    results.append(result("sliding H=1 d=0.5", ours, "us", base))
    base = (f"sliding H={HOP} d=0.3 per step", per_step["d=0.3"])  # a read's cost spread
    results.append(result(*base, "us"))  # over longer hops
    for hop in LONGER_HOPS:
        ours, _ = sliding(train(0.3), hop)
        results.append(result(f"sliding H={hop} d=0.3 per step", ours, "us", base))
    state = lzc.sliding_state(1, NEURONS, WINDOW, HOP)
    results.append(result("sliding state", sum(a.nbytes for a in state) / 1024, "KiB"))
    notes.append(f"sliding rows, {NEURONS} neurons, W={WINDOW}: H={HOP} in us per decision "
                 f"({HOP} steps pushed in one run + one read of the counts) against the same "
                 f"loop recounting each window with lz76_jit; H=1 in us per step against the "
                 f"derived cost of the KS loop recounting every window (KS us x neurons); "
                 f"H={'/'.join(map(str, LONGER_HOPS))} per step against H={HOP} per step")
    notes.append(f"sliding state: KiB per stream of {NEURONS} neurons")
    return {
        "bench": "lzc",
        "params": {"bits": BITS, "window": WINDOW, "neurons": NEURONS, "steps": STEPS,
                   "repeat": args.repeat, "seed": args.seed},
        "results": results,
        "notes": notes,
    }
