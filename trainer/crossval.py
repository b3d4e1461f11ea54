"""``edged-train experiment nmnist-cv``: nested cross-validation on an event folder.

Outer: stratified ``folds``-fold split of every recording (``outer_folds``). Per outer
fold, the remaining recordings are split once more, stratified (``inner_val`` of them
for validation, the fold's inner split). Every grid point of ``grid`` is trained on the
inner train part with seed 0 and early-stopped on the inner validation part; the point
with the best inner validation accuracy is the fold's choice. That choice is trained with
seeds 1..``seeds`` (the same inner split, early stopping on it); its readout is then
refitted on the engine features of all the fold's training recordings (out of the outer
fold) and scored once on the outer fold. The outer fold decides nothing.

The baselines (``trainer.baselines``: ``count``, ``binned-count``) are fitted on the
same inner train part, tuned on the same inner validation part and scored on the same
outer fold. Rows (one per fold and seed): ``fold``, ``seed``, ``accuracy``, ``correct``,
``n``, ``binned_count``, ``counts``, ``epochs_used`` and the chosen grid point.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from trainer import baselines as B
from trainer import linear, stats
from trainer.events import (EventSpec, dense, encoded, encoding, extract, read_labels, split,
                            train)

CV = {"folds": 5, "inner_val": 160, "seeds": 3, "steps": 300, "pool": 2, "hidden": 128,
      "outputs_per_class": 2, "cap": 24, "patience": 5, "augment": True, "calibrate": True,
      "grid": ({"lr": 0.003, "weight_decay": 0.0}, {"lr": 0.01, "weight_decay": 1e-4}),
      "baselines": ("count", "binned-count")}
CV_QUICK = CV | {"folds": 2, "inner_val": 20, "seeds": 1, "steps": 60, "pool": 4, "hidden": 16,
                 "outputs_per_class": 1, "cap": 1, "patience": 1,
                 "grid": ({"lr": 0.01, "weight_decay": 0.0},)}


def outer_folds(y: np.ndarray, folds: int, seed: int = 0) -> list[np.ndarray]:
    """Stratified folds (sorted index arrays): each class is permuted and dealt round
    robin, so fold sizes per class differ by at most one."""
    rng = np.random.default_rng([seed, 0xF01D])
    fold_of = np.empty(len(y), np.int64)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        fold_of[idx] = (np.arange(len(idx)) + rng.integers(folds)) % folds
    return [np.flatnonzero(fold_of == f) for f in range(folds)]


def nmnist_cv(out, folder: str, quick: bool = False, log: Callable[[str], None] | None = None,
              resume: bool = False, neuron: str = "meta") -> dict:
    """Run (or resume) the nested CV over ``folder``; return the result document."""
    from edged import events as E
    from edged.engine import Engine
    from trainer import params as P
    from trainer.experiment import Runner

    p = dict(CV_QUICK if quick else CV) | {"events_dir": str(folder), "neuron": neuron}
    rn = Runner(out, p, lambda r: True, resume, log or (lambda m: None))
    labels = read_labels(folder)
    recordings = [E.load(path) for path in labels.path]
    spec0 = EventSpec(str(folder), pool=p["pool"], steps=p["steps"], neuron=neuron,
                      hidden=p["hidden"], outputs_per_class=p["outputs_per_class"],
                      epochs=p["cap"], patience=p["patience"], augment=p["augment"],
                      calibrate=p["calibrate"])
    enc = encoding(spec0)
    K = len(labels.classes)
    folds = outer_folds(labels.y, p["folds"])
    for f, test_idx in enumerate(folds):
        rest = np.setdiff1d(np.arange(len(labels.y)), test_idx)
        inner_tr, inner_va = (rest[i] for i in split(labels.y[rest], p["inner_val"], f))
        tune = []
        for point in p["grid"]:
            key = {"fold": f, **point}
            row = rn.find("tuning", key)
            if row is None:
                spec = spec0._replace(seed=0, **point)
                _, history, used = train(spec, labels, recordings, inner_tr, inner_va)
                row = key | {"validation_accuracy": history[used - 1]["validation_accuracy"],
                             "epochs_used": used, "epochs_run": len(history)}
                rn.add("tuning", row)
                rn.log(f"fold {f} tune {point}: inner validation {row['validation_accuracy']:.3f} "
                       f"after {used} epochs ({rn.elapsed()})")
            tune.append(row)
        best = max(tune, key=lambda r: r["validation_accuracy"])
        chosen = {k: best[k] for k in p["grid"][0]}
        te = encoded(recordings, labels.y, test_idx, enc)
        base = None
        for seed in range(1, p["seeds"] + 1):
            if rn.find("rows", {"fold": f, "seed": seed}):
                continue
            if base is None:
                d = lambda idx: B.Split(dense(encoded(recordings, labels.y, idx, enc), enc), labels.y[idx])
                res = B.score(d(inner_tr), d(inner_va), d(test_idx), K, tuple(p["baselines"]))
                base = B.accuracies(res)
            raw, history, used = train(spec0._replace(seed=seed, **chosen), labels, recordings,
                                       inner_tr, inner_va)
            eng = Engine(P.to_net(neuron, raw, spec0.dt), window=p["steps"], hop=p["steps"],
                         features=("lzc", "rate"))
            fit = linear.fit(extract(eng, encoded(recordings, labels.y, rest, enc), p["steps"]),
                             labels.y[rest], K)
            pred = fit.predict(extract(eng, te, p["steps"]))
            correct = int(np.sum(pred == te.y))
            row = {"fold": f, "seed": seed, "accuracy": correct / len(te.y), "correct": correct,
                   "n": int(len(te.y)), "binned_count": base["binned-count"], "counts": base["count"],
                   "epochs_used": used, "epochs_run": len(history), "chosen": chosen}
            rn.add("rows", row)
            rn.log(f"fold {f} seed {seed}: {row['accuracy']:.3f} (binned count {base['binned-count']:.3f}, "
                   f"counts {base['count']:.3f}) after {used} epochs ({rn.elapsed()})")
    return rn.doc


def markdown(doc: dict) -> str:
    """CV accuracy mean +- sd over folds x seeds, pooled Wilson interval, baselines."""
    rows = doc["rows"]
    if not rows:
        return "(no rows yet)"
    acc = [r["accuracy"] for r in rows]
    seeds = sorted({r["seed"] for r in rows})
    per_seed = [sum(r["correct"] for r in rows if r["seed"] == s) / sum(r["n"] for r in rows if r["seed"] == s)
                for s in seeds]
    k, n = sum(r["correct"] for r in rows), sum(r["n"] for r in rows)
    lo, hi = stats.wilson(k, n)
    folds = {r["fold"]: r for r in rows}
    bc = [r["binned_count"] for r in folds.values()]
    ct = [r["counts"] for r in folds.values()]
    s = stats.summary(acc)
    d = stats.paired([np.mean([r["accuracy"] for r in rows if r["fold"] == f]) for f in sorted(folds)],
                     [folds[f]["binned_count"] for f in sorted(folds)])
    return "\n".join([
        "| | accuracy (%) |", "|---|---|",
        f"| SNN-LZC ({doc['protocol']['neuron']}), {len(folds)} folds x {len(seeds)} seeds | "
        f"{100 * s['mean']:.1f} ± {100 * s['sd']:.1f} (per fold and seed) |",
        f"| SNN-LZC, pooled over folds ({k}/{n} correct, per seed {', '.join(f'{100 * a:.1f}' for a in per_seed)}) | "
        f"{100 * k / n:.1f}, Wilson 95 % CI [{100 * lo:.1f}, {100 * hi:.1f}] |",
        f"| time-binned counts, logistic (same folds) | {100 * np.mean(bc):.1f} ± {100 * np.std(bc, ddof=1) if len(bc) > 1 else float('nan'):.1f} |",
        f"| per-channel counts, logistic (same folds) | {100 * np.mean(ct):.1f} ± {100 * np.std(ct, ddof=1) if len(ct) > 1 else float('nan'):.1f} |",
        f"| SNN − binned counts, paired by fold | {100 * d['mean_diff']:+.1f} pp, 95 % CI "
        f"[{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}], t p {d['t_p']:.3f} |"])


def selected(doc: dict) -> dict[str, Any]:
    """The settings to ship: the grid point chosen by most folds (ties: the first) and
    the median of its runs' ``epochs_used``."""
    chosen = [tuple(sorted(r["chosen"].items())) for r in doc["rows"]]
    point = max(set(chosen), key=lambda c: (chosen.count(c), -chosen.index(c)))
    used = [r["epochs_used"] for r in doc["rows"] if tuple(sorted(r["chosen"].items())) == point]
    return dict(point) | {"epochs": int(np.median(used))}
