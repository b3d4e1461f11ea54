"""``edged-train experiment paper``: does learning intrinsics beat tuning size and rate?

Grid: neuron {lif, meta} x rule {bptt, stdp, tempotron} x intrinsics {fixed, learned}.
For each cell, the same tuning budget: network size x learning rate (``TUNE``), each
config trained once (seed 0) and scored on the ``validation`` split; the best config is
then trained with ``seeds`` fresh seeds (1, 2, ...) and scored on the ``test`` split.
``learned`` gets exactly the same grid and epochs as ``fixed`` (its intrinsics'
learning rate is tied to the weights'). Every row carries the spike-count floor (a
logistic regression on per-channel input counts) and the paper-style nearest-mean
readout on output LZC beside the fitted readout's accuracy.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np

from trainer.pipeline import Spec, run

NEURONS = ("lif", "meta")
RULES = ("bptt", "stdp", "tempotron")
INTRINSICS = ("fixed", "learned")
TASK = "poisson-structure"
TASK_PARAMS = {"depth": 0.6, "jitter": 0.1, "shared": 1.0}
HIDDEN = (32, 64)
LR = {"bptt": (0.01, 0.03), "stdp": (0.01, 0.05), "tempotron": (0.02, 0.1)}
EPOCHS = {"bptt": 6, "stdp": 4, "tempotron": 4}
N_TRAIN, N_TEST = 400, 300

QUICK = {"hidden": (32,), "lr": {"bptt": (0.03,), "stdp": (0.05,), "tempotron": (0.1,)},
         "epochs": {"bptt": 2, "stdp": 1, "tempotron": 1}, "n_train": 120, "n_test": 90}


def paper(out: str | Path, quick: bool = False, seeds: int = 3,
          log: Callable[[str], None] | None = None, rules: tuple[str, ...] | None = None,
          neurons: tuple[str, ...] | None = None) -> list[dict]:
    """Run the grid (or the ``rules`` x ``neurons`` part of it, replacing those cells'
    rows in an existing ``out`` and keeping the others); return all rows."""
    log = log or (lambda m: None)
    subset = rules is not None or neurons is not None
    rules, neurons = rules or RULES, neurons or NEURONS
    kept: list[dict] = []
    if subset and Path(out).exists():
        kept = [r for r in json.loads(Path(out).read_text())
                if not (r["rule"] in rules and r["neuron"] in neurons)]
    hidden = QUICK["hidden"] if quick else HIDDEN
    lrs = QUICK["lr"] if quick else LR
    epochs = QUICK["epochs"] if quick else EPOCHS
    n_train, n_test = (QUICK["n_train"], QUICK["n_test"]) if quick else (N_TRAIN, N_TEST)
    seeds = 1 if quick else seeds
    rows: list[dict] = []
    t0 = time.perf_counter()
    for neuron in neurons:
        for rule in rules:
            for intr in INTRINSICS:
                base = Spec(task=TASK, task_params=TASK_PARAMS, neuron=neuron, rule=rule,
                            intrinsics=intr, epochs=epochs[rule], n_train=n_train,
                            n_test=n_test)
                tuning = []
                configs = [(h, lr) for h in hidden for lr in lrs[rule]]
                if len(configs) > 1:
                    for h, lr in configs:
                        _, m, _ = run(replace(base, hidden=h, lr=lr, seed=0, eval_split="validation"))
                        tuning.append({"hidden": h, "lr": lr, "validation_accuracy": m["accuracy"]})
                        log(f"tune {neuron} {rule} {intr} hidden {h} lr {lr}: "
                            f"validation {m['accuracy']:.3f} ({time.perf_counter() - t0:.0f} s)")
                    best = max(tuning, key=lambda r: r["validation_accuracy"])
                    h, lr = best["hidden"], best["lr"]
                else:
                    h, lr = configs[0]
                for seed in range(1, seeds + 1):
                    spec = replace(base, hidden=h, lr=lr, seed=seed)
                    _, m, _ = run(spec)
                    row = {"neuron": neuron, "rule": rule, "intrinsics": intr, "seed": seed,
                           "accuracy": m["accuracy"], "task": TASK, "task_params": TASK_PARAMS,
                           "hidden": h, "lr": lr, "epochs": spec.epochs, "n_train": n_train,
                           "n_test": n_test,
                           "count_floor_accuracy": m["count_floor_accuracy"],
                           "nearest_mean_lzc_accuracy": m["nearest_mean_lzc_accuracy"],
                           "train_seconds": m["train_seconds"],
                           "train_samples_per_s": m["train_samples_per_s"], "tuning": tuning,
                           "quick": quick}
                    rows.append(row)
                    log(f"{neuron} {rule} {intr} seed {seed}: accuracy {m['accuracy']:.3f} "
                        f"(count floor {m['count_floor_accuracy']:.3f}, nearest-mean LZC "
                        f"{m['nearest_mean_lzc_accuracy']:.3f}) ({time.perf_counter() - t0:.0f} s)")
                    _write(out, kept + rows)
    rows = kept + rows
    log(f"paper experiment done in {time.perf_counter() - t0:.0f} s")
    print(markdown(rows))
    return rows


def _write(out: str | Path, rows: list[dict]) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n")
    tmp.replace(out)


def markdown(rows: list[dict]) -> str:
    """Mean +- sd over seeds per cell, and learned - fixed per (neuron, rule)."""
    lines = ["| neuron | rule | fixed | learned | learned - fixed (pp) | count floor | nearest-mean LZC (fixed / learned) |",
             "|---|---|---|---|---|---|---|"]
    for neuron in NEURONS:
        for rule in RULES:
            cell = {i: [r for r in rows if (r["neuron"], r["rule"], r["intrinsics"]) == (neuron, rule, i)]
                    for i in INTRINSICS}
            if not all(cell.values()):
                continue
            acc = {i: np.array([r["accuracy"] for r in cell[i]]) for i in INTRINSICS}
            nm = {i: np.mean([r["nearest_mean_lzc_accuracy"] for r in cell[i]]) for i in INTRINSICS}
            floor = np.mean([r["count_floor_accuracy"] for i in INTRINSICS for r in cell[i]])
            fmt = {i: f"{100 * acc[i].mean():.1f} ± {100 * acc[i].std():.1f} (n={len(acc[i])})" for i in INTRINSICS}
            diff = 100 * (acc["learned"].mean() - acc["fixed"].mean())
            lines.append(f"| {neuron} | {rule} | {fmt['fixed']} | {fmt['learned']} | {diff:+.1f} | "
                         f"{100 * floor:.1f} | {100 * nm['fixed']:.1f} / {100 * nm['learned']:.1f} |")
    return "\n".join(lines)
