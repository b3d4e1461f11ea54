"""``edged-train experiment paper``: does learning intrinsics beat tuning them?

Protocol (v2). Cells: neuron {lif, meta} x rule {bptt, stdp, tempotron}; three
conditions per cell, all trained to convergence (at most ``CAP[rule]`` epochs, early
stopping on the readout's validation accuracy with patience ``PATIENCE``, the best
epoch's parameters kept):

``fixed``        intrinsics at the untrained defaults (``edged.intrinsics.SPECS``);
``fixed-tuned``  global intrinsic values (tau, theta; meta also beta, tau_a) tuned;
``learned``      intrinsics learned by the rule, starting from the defaults;
``tuned-learned`` intrinsics learned by the rule, starting from ``fixed-tuned``'s values
                 at its size and rate (does learning add to tuning?).

Tuning, on seed 0's data and its validation split, the same budget of runs for
``fixed-tuned`` and ``learned``:

1. stage ``size-lr``: hidden size x learning rate (``HIDDEN`` x ``LR[rule]``). An axis
   whose optimum sits on its edge is widened by one value beyond it (at most
   ``MAX_WIDEN`` times per axis), so the optimum ends inside the grid or at a recorded
   limit. ``fixed`` and ``fixed-tuned`` share this stage (it is run with the defaults);
   ``learned`` runs its own.
2. stage ``intrinsics`` (at the stage-1 optimum): ``fixed-tuned`` tries the global
   values ``fixed_tuned[neuron]`` (LIF: tau x theta, 3 x 3; meta: an L9 orthogonal array
   over tau, theta, beta, tau_a at 3 levels); while the best sits on the edge of a
   value's levels it steps that value one level beyond (``max_widen`` times at most,
   within ``fixed_tuned_limits``); the defaults stay a candidate. Then, at the chosen
   values, it re-tunes the weights' rate (``lr_around`` times the stage-1 rate, widened
   like stage 1): tuned intrinsics move the best rate, and ``learned`` tunes its rate too.
   ``learned`` tries the intrinsic learning rate (``lr_intrinsics`` times the rule's own
   rate(s)) x the weights' rate (``lr_around`` times the stage-1 optimum), widened like
   stage 1. So ``fixed-tuned`` gets at least ``learned``'s budget of tuning runs.
   ``tuned-learned`` tunes the same two rates as ``learned``, around ``fixed-tuned``'s.

Rule variants that change only the intrinsic rule (``SHARED``: the STDP homeostasis
variants) take their ``fixed`` and ``fixed-tuned`` tuning and rows from their base rule,
with which they coincide; they run only ``learned`` and ``tuned-learned``.

The chosen configuration of each condition is then trained with seeds 1..``SEEDS``, each
seed drawing fresh train/validation/test data; conditions are paired by seed (same data,
same initial weights). Every final row carries the non-spiking baselines
(``trainer.baselines``) fitted, tuned and scored on that seed's same splits. The table
(``markdown``) gives mean +- sd (ddof 1) and, for learned - fixed-tuned,
tuned-learned - fixed-tuned and learned - fixed, the mean paired difference, its 95 % CI, the paired t-test and the
Wilcoxon signed-rank p (``trainer.stats``).

Results are one JSON document (``protocol``, ``tuning``, ``baselines``, ``rows``),
rewritten atomically after every run; ``resume=True`` skips every run already in it.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edged.intrinsics import INTRINSICS
from trainer import baselines as B
from trainer import data, stats
from trainer.pipeline import VARIANTS, Spec, run

NEURONS = ("lif", "meta", "meta-esc")
RULES = ("bptt", "stdp", "tempotron", *VARIANTS)
STDP_FAMILY = ("stdp", *(v for v, (base, _) in VARIANTS.items() if base == "stdp"))
CONDITIONS = ("fixed", "fixed-tuned", "learned", "tuned-learned")
SHARED = {v: base for v, (base, options) in VARIANTS.items() if set(options) <= {"homeostasis"}}
TASK = "poisson-structure"
TASK_PARAMS = {"depth": 0.6, "jitter": 0.1, "shared": 1.0}
L9 = ((0, 0, 0, 0), (0, 1, 1, 1), (0, 2, 2, 2), (1, 0, 1, 2), (1, 1, 2, 0), (1, 2, 0, 1),
      (2, 0, 2, 1), (2, 1, 0, 2), (2, 2, 1, 0))
LEVELS = {"tau": (0.01, 0.02, 0.04), "theta": (0.5, 1.0, 2.0), "beta": (0.0, 0.2, 0.8),
          "tau_a": (0.05, 0.125, 0.4)}
FULL = {
    "task": TASK, "task_params": TASK_PARAMS, "n_train": 300, "n_val": 150, "n_test": 300,
    "cap": {"bptt": 30, "stdp": 12, "tempotron": 16}, "patience": 6, "seeds": 5,
    "hidden": (16, 32, 64), "hidden_limits": (8, 256),
    "lr": {"bptt": (0.003, 0.01, 0.03), "stdp": (0.003, 0.01, 0.03),
           "tempotron": (0.01, 0.03, 0.1)},
    "lr_intrinsics": (0.3, 1.0, 3.0), "lr_around": (0.5, 1.0, 2.0), "max_widen": 2,
    "fixed_tuned": {
        "lif": tuple({"tau": t, "theta": th} for t in LEVELS["tau"] for th in LEVELS["theta"]),
        "meta": tuple({k: LEVELS[k][i] for k, i in zip(("tau", "theta", "beta", "tau_a"), row)}
                      for row in L9)},
    "baselines": B.NAMES,
}
FULL["fixed_tuned"]["meta-esc"] = FULL["fixed_tuned"]["meta"]  # noise intrinsics at their defaults
FULL["fixed_tuned_limits"] = {"tau": (0.0025, 0.16), "theta": (0.125, 8.0), "beta": (0.0, 3.2),
                              "tau_a": (0.0125, 1.6)}
FULL["fixed_tuned_lr"] = True  # protocol v2.1: fixed-tuned re-tunes the weights' rate
FULL["tuned_learned"] = True  # protocol v2.1: learning that starts from the tuned values
# rule variants (trainer.pipeline.VARIANTS) take their base rule's cap and grid; the
# STDP variants' learned stage 2 tunes the homeostatic set point (Hz) instead of the
# weights' rate (own-rate has no set point: it keeps the weights' rate axis)
FULL["cap"] |= {v: FULL["cap"][base] for v, (base, _) in VARIANTS.items()}
FULL["lr"] |= {v: FULL["lr"][base] for v, (base, _) in VARIANTS.items()}
FULL["set_point"] = {v: (10.0, 20.0, 40.0) for v in STDP_FAMILY[1:] if VARIANTS[v][1].get("homeostasis") != "own-rate"}
QUICK = FULL | {
    "n_train": 48, "n_val": 24, "n_test": 48, "cap": {"bptt": 2, "stdp": 1, "tempotron": 1},
    "patience": 1, "seeds": 2, "hidden": (8, 16),
    "lr": {"bptt": (0.03,), "stdp": (0.01,), "tempotron": (0.1,)},
    "lr_intrinsics": (1.0,), "lr_around": (1.0, 2.0), "max_widen": 0,
    "fixed_tuned": {"lif": FULL["fixed_tuned"]["lif"][3:5], "meta": FULL["fixed_tuned"]["meta"][:2],
                    "meta-esc": FULL["fixed_tuned"]["meta"][:2]},
    "baselines": ("count", "binned-count"),
}
QUICK["cap"] = QUICK["cap"] | {v: 1 for v in VARIANTS}
QUICK["lr"] = QUICK["lr"] | {v: QUICK["lr"][base] for v, (base, _) in VARIANTS.items()}
QUICK["set_point"] = {v: (10.0, 20.0) for v in FULL["set_point"]}


def widen(values: tuple, best: int, limits: tuple[float, float] | None = None,
          integer: bool = False) -> tuple:
    """``values`` (sorted, geometric) with one more value beyond ``best`` when it is an
    edge (ratio of the two nearest values, clipped to ``limits``); unchanged otherwise."""
    if len(values) < 2 or 0 < best < len(values) - 1:
        return values
    lo, hi = limits or (-np.inf, np.inf)
    if best == 0:
        new = values[0] * values[0] / values[1]
        new = round(new) if integer else new
        return values if new < lo or new >= values[0] else (new,) + tuple(values)
    new = values[-1] * values[-1] / values[-2]
    new = round(new) if integer else new
    return values if new > hi or new <= values[-1] else tuple(values) + (new,)


def extends(old: Any, new: Any) -> bool:
    """Whether protocol ``new`` keeps every setting of ``old`` and only adds (new keys in
    its objects: more cells, rules or tasks). Rows of ``old`` stay valid under ``new``."""
    if isinstance(old, dict) and isinstance(new, dict):
        return all(k in new and extends(v, new[k]) for k, v in old.items())
    return old == new


class Runner:
    """One JSON document of results; ``once`` runs a spec unless its key is already in
    ``section`` and writes the document after every new row."""

    def __init__(self, out: str | Path, protocol: dict, keep: Callable[[dict], bool],
                 resume: bool, log: Callable[[str], None]):
        self.out, self.log, self.t0 = Path(out), log, time.perf_counter()
        self.protocol = json.loads(json.dumps(protocol))
        doc = {"protocol": self.protocol, "tuning": [], "baselines": [], "rows": []}
        if self.out.exists():
            old = json.loads(self.out.read_text())
            if isinstance(old, dict) and extends(old.get("protocol"), self.protocol):
                doc = old | {"protocol": self.protocol}
                if not resume:  # redo the selected cells, keep the others
                    for section in ("tuning", "rows"):
                        doc[section] = [r for r in doc[section] if not keep(r)]
            elif resume:
                raise ValueError(f"{out} was written by another protocol; cannot --resume it")
        self.doc = doc

    def find(self, section: str, key: dict) -> dict | None:
        for r in self.doc[section]:
            if all(r.get(k) == v for k, v in key.items()):
                return r
        return None

    def add(self, section: str, row: dict) -> None:
        self.doc[section].append(json.loads(json.dumps(row)))
        tmp = self.out.with_name(f".{self.out.name}.tmp")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(self.doc, indent=1, sort_keys=True) + "\n")
        tmp.replace(self.out)

    def elapsed(self) -> str:
        return f"{time.perf_counter() - self.t0:.0f} s"


def _config(spec: Spec) -> dict[str, Any]:
    out = {"hidden": spec.hidden, "lr": spec.lr, "lr_intrinsics": spec.lr_intrinsics,
           "centres": dict(spec.centres)}
    return out | ({"set_point": spec.set_point} if spec.set_point else {})


def _tune(rn: Runner, base: Spec, condition: str, stage: str, grid: list[Spec]) -> dict:
    """Run every spec of ``grid`` on seed 0 (cached); return the best tuning row."""
    rows = []
    for spec in grid:
        key = {"task": base.task, "neuron": base.neuron, "rule": base.rule,
               "intrinsics": condition, "stage": stage, **json.loads(json.dumps(_config(spec)))}
        row = rn.find("tuning", key)
        if row is None:
            _, m, _ = run(spec)
            row = key | {"validation_accuracy": m["validation_accuracy"],
                         "epochs_used": m["epochs_used"], "epochs_run": m["epochs_run"],
                         "train_seconds": m["train_seconds"]}
            rn.add("tuning", row)
            rn.log(f"tune {base.neuron} {base.rule} {condition} {stage} {_config(spec)}: "
                   f"validation {row['validation_accuracy']:.3f} after {row['epochs_used']} "
                   f"epochs ({rn.elapsed()})")
        rows.append(row)
    return max(rows, key=lambda r: r["validation_accuracy"])


def _grid_search(rn: Runner, base: Spec, condition: str, stage: str,
                 axes: dict[str, tuple], p: dict, make: Callable[[dict], Spec]) -> dict:
    """Full grid over ``axes``, widened at edges (``p["max_widen"]`` per axis)."""
    widened = {k: 0 for k in axes}
    while True:
        points = [{}]
        for k, values in axes.items():
            points = [q | {k: v} for q in points for v in values]
        best = _tune(rn, base, condition, stage, [make(q) for q in points])
        grown = False
        for k, values in axes.items():
            if widened[k] >= p["max_widen"]:
                continue
            chosen = best["hidden"] if k == "hidden" else best[k]
            limits = tuple(p["hidden_limits"]) if k == "hidden" else None
            new = widen(values, values.index(chosen), limits, integer=k == "hidden")
            if new != values:
                axes[k], widened[k], grown = new, widened[k] + 1, True
        if not grown:
            return best


def _source(rule: str, condition: str) -> str:
    """The rule whose tuning and rows serve ``condition`` of ``rule``'s cell (``SHARED``)."""
    return SHARED.get(rule, rule) if condition in ("fixed", "fixed-tuned") else rule


def _edge_steps(rn: Runner, base: Spec, best: dict, levels: dict[str, tuple], p: dict,
                make: Callable[[dict], Spec]) -> dict:
    """From ``best`` (a tuning row), step each value on an edge of its ``levels`` one
    level beyond, keep the best, and repeat while that moves it (``max_widen`` rounds)."""
    limits = p.get("fixed_tuned_limits", {})
    for _ in range(p["max_widen"]):
        probes = []
        for k, values in levels.items():
            at = best["centres"][k]
            new = widen(values, values.index(at), tuple(limits[k]) if k in limits else None)
            if new != values:
                levels[k] = new
                probes.append(make(best["centres"] | {k: new[0] if new[0] != values[0] else new[-1]}))
        if not probes:
            break
        stepped = _tune(rn, base, "fixed-tuned", "intrinsics", probes)
        if stepped["validation_accuracy"] <= best["validation_accuracy"]:
            break
        best = stepped
    return best


def _choose(rn: Runner, base: Spec, p: dict) -> dict[str, Spec]:
    """The tuned spec (seed 0) of each condition of ``base``'s cell."""
    size_lr = {"hidden": tuple(p["hidden"]), "lr": tuple(p["lr"][base.rule])}
    chosen = {}
    for condition in ("fixed", "learned"):
        cond_base = replace(base, intrinsics=condition, rule=_source(base.rule, condition))
        best = _grid_search(rn, cond_base, condition, "size-lr", dict(size_lr), p,
                            lambda q: replace(cond_base, hidden=q["hidden"], lr=q["lr"]))
        chosen[condition] = replace(cond_base, hidden=best["hidden"], lr=best["lr"])
        if condition == "fixed":
            fixed_best = best
    at = replace(chosen["fixed"], intrinsics="fixed-tuned")
    design = p["fixed_tuned"][base.neuron]
    best = _tune(rn, at, "fixed-tuned", "intrinsics", [replace(at, centres=c) for c in design])
    if p.get("fixed_tuned_lr"):
        levels = {k: tuple(sorted({c[k] for c in design})) for k in design[0]}
        best = _edge_steps(rn, at, best, levels, p, lambda c: replace(at, centres=c))
    if best["validation_accuracy"] < fixed_best["validation_accuracy"]:
        best = fixed_best  # the defaults are one of fixed-tuned's candidates too
    at = replace(at, centres=best["centres"])
    if p.get("fixed_tuned_lr"):
        best = _grid_search(rn, at, "fixed-tuned", "intrinsics",
                            {"lr": tuple(at.lr * m for m in p["lr_around"])}, p,
                            lambda q: replace(at, **q))
        at = replace(at, lr=best["lr"])
    chosen["fixed-tuned"] = at
    starts = {"learned": chosen["learned"]}
    if p.get("tuned_learned"):  # the rule's own learning from the tuned values and rate
        starts["tuned-learned"] = replace(at, intrinsics="learned", rule=base.rule)
    for condition, at in starts.items():
        second = ({"set_point": tuple(p["set_point"][base.rule])} if base.rule in p.get("set_point", {})
                  else {"lr": tuple(at.lr * m for m in p["lr_around"])})
        best = _grid_search(rn, at, condition, "intrinsics",
                            {"lr_intrinsics": tuple(p["lr_intrinsics"]), **second},
                            p | {"max_widen": p["max_widen"] if len(p["lr_intrinsics"]) > 1 else 0},
                            lambda q: replace(at, **q))
        chosen[condition] = replace(at, **{k: best[k] for k in ("lr_intrinsics", *second)})
    return chosen


def _baselines(rn: Runner, p: dict, seed: int) -> dict[str, float]:
    row = rn.find("baselines", {"seed": seed})
    if row is None:
        split = lambda name, n: data.make(p["task"], n, seed, name, **p["task_params"])
        tr, va, te = split("train", p["n_train"]), split("validation", p["n_val"]), split("test", p["n_test"])
        res = B.score(B.Split(tr.x, tr.y), B.Split(va.x, va.y), B.Split(te.x, te.y),
                      len(tr.classes), tuple(p["baselines"]), seed)
        row = {"seed": seed, "accuracy": B.accuracies(res),
               "chosen": {k: v["chosen"] for k, v in res.items()}}
        rn.add("baselines", row)
        rn.log(f"baselines seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in row["accuracy"].items()))
    return row["accuracy"]


def paper(out: str | Path, quick: bool = False, log: Callable[[str], None] | None = None,
          rules: tuple[str, ...] | None = None, neurons: tuple[str, ...] | None = None,
          resume: bool = False, seeds: int | None = None) -> dict:
    """Run the protocol for the ``neurons`` x ``rules`` cells (default all); return the
    document. Cells not selected keep their rows from ``out``."""
    p = dict(QUICK if quick else FULL)
    if seeds is not None:
        p["seeds"] = seeds
    rules, neurons = rules or RULES, neurons or NEURONS
    rn = Runner(out, p, lambda r: r["rule"] in rules and r["neuron"] in neurons, resume,
                log or (lambda m: None))
    for neuron in neurons:
        for rule in rules:
            base = Spec(task=p["task"], task_params=p["task_params"], neuron=neuron, rule=rule,
                        epochs=p["cap"][rule], n_train=p["n_train"], n_val=p["n_val"],
                        n_test=p["n_test"], patience=p["patience"], seed=0)
            for condition, spec in _choose(rn, base, p).items():
                config = json.loads(json.dumps(_config(spec)))
                for seed in range(1, p["seeds"] + 1):
                    key = {"neuron": neuron, "rule": spec.rule, "intrinsics": condition, "seed": seed}
                    old = rn.find("rows", key)
                    if old is not None and rn.find("rows", key | config) is old:
                        continue
                    if old is not None:  # tuned under an earlier protocol: its choice moved
                        rn.doc["rows"].remove(old)
                    _, m, _ = run(replace(spec, seed=seed))
                    row = key | _config(spec) | {
                        "accuracy": m["accuracy"], "task": p["task"], "task_params": p["task_params"],
                        "validation_accuracy": m["validation_accuracy"],
                        "epochs_used": m["epochs_used"], "epochs_run": m["epochs_run"],
                        "epoch_cap": spec.epochs, "n_train": p["n_train"], "n_val": p["n_val"],
                        "n_test": p["n_test"], "nearest_mean_lzc_accuracy": m["nearest_mean_lzc_accuracy"],
                        "baselines": _baselines(rn, p, seed), "train_seconds": m["train_seconds"],
                        "quick": quick}
                    rn.add("rows", row)
                    rn.log(f"{neuron} {rule} {condition} seed {seed}: accuracy {m['accuracy']:.3f} "
                           f"after {m['epochs_used']} epochs ({rn.elapsed()})")
    rn.log(f"paper experiment done in {rn.elapsed()}")
    return rn.doc


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def markdown(doc: dict) -> str:
    """The paper table: per cell mean +- sd (ddof 1) per condition, the paired tests of
    learned and tuned-learned against fixed-tuned, and the baselines on the same test splits."""
    rows = doc["rows"]
    lines = ["| neuron | rule | fixed | fixed-tuned | learned | tuned-learned | learned − fixed-tuned "
             "(pp, 95 % CI; t p, Wilcoxon p) | tuned-learned − fixed-tuned (pp, 95 % CI; t p, Wilcoxon p) "
             "| learned − fixed (pp, t p) | epochs used (f / ft / l / tl) |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def diff(a: list[float], b: list[float]) -> str:
        d = stats.paired(a, b)
        return (f"{100 * d['mean_diff']:+.1f} [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}]; "
                f"{d['t_p']:.3f}, {d['wilcoxon_p']:.3f}")

    for neuron in NEURONS:
        for rule in RULES:
            cell = {c: {r["seed"]: r for r in rows
                        if (r["neuron"], r["rule"], r["intrinsics"]) == (neuron, _source(rule, c), c)}
                    for c in CONDITIONS}
            if not all(cell[c] for c in CONDITIONS[:3]):
                continue
            have = [c for c in CONDITIONS if cell[c]]
            seeds = sorted(set.intersection(*(set(cell[c]) for c in have)))
            acc = {c: [cell[c][s]["accuracy"] for s in seeds] for c in have}
            fmt = {c: (f"{_pct(stats.summary(acc[c])['mean'])} ± {_pct(stats.summary(acc[c])['sd'])}"
                       if c in acc else "–") for c in CONDITIONS}
            tl = diff(acc["tuned-learned"], acc["fixed-tuned"]) if "tuned-learned" in acc else "–"
            vs_f = stats.paired(acc["learned"], acc["fixed"])
            ep = " / ".join(f"{np.mean([cell[c][s]['epochs_used'] for s in seeds]):.0f}" if c in acc else "–"
                            for c in CONDITIONS)
            lines.append(f"| {neuron} | {rule} | {fmt['fixed']} | {fmt['fixed-tuned']} | {fmt['learned']} | "
                         f"{fmt['tuned-learned']} | {diff(acc['learned'], acc['fixed-tuned'])} | {tl} | "
                         f"{100 * vs_f['mean_diff']:+.1f} ({vs_f['t_p']:.3f}) | {ep} |")
    base = doc.get("baselines", [])
    if base:
        names = list(base[0]["accuracy"])
        lines += ["", "| baseline (same test splits) | " + " | ".join(names) + " |",
                  "|---|" + "---|" * len(names),
                  f"| mean ± sd over {len(base)} seeds | " + " | ".join(
                      f"{_pct(stats.summary([b['accuracy'][n] for b in base])['mean'])} ± "
                      f"{_pct(stats.summary([b['accuracy'][n] for b in base])['sd'])}" for n in names) + " |"]
    return "\n".join(lines)


SURROGATE = {
    "tasks": {"motif-surrogate": {}, "binary-chunks": {}}, "n_train": 300, "n_val": 150,
    "n_test": 300, "cap": 20, "patience": 3, "seeds": 5, "hidden": 32,
    "lr": (0.003, 0.01, 0.03), "snn": (("meta", "bptt", "learned"), ("lif", "bptt", "learned")),
    "baselines": B.NAMES,
}
SURROGATE_QUICK = SURROGATE | {"n_train": 48, "n_val": 24, "n_test": 48, "cap": 1, "patience": 1,
                               "seeds": 2, "hidden": 8, "lr": (0.03,),
                               "snn": (("lif", "bptt", "learned"),),
                               "baselines": ("count", "input-lzc")}


def surrogate(out: str | Path, quick: bool = False, log: Callable[[str], None] | None = None,
              resume: bool = False, seeds: int | None = None) -> dict:
    """Tasks where only temporal structure separates the classes (``trainer.data``:
    ``motif-surrogate``, and the paper's ``binary-chunks``): the SNN-LZC pipeline (learning
    rate tuned on seed 0's validation split, early-stopped) against every baseline, on
    the same splits of seeds 1..``seeds``. Rows: ``task``, ``model`` (``snn-lzc`` or a
    baseline name), ``seed``, ``accuracy``."""
    p = dict(SURROGATE_QUICK if quick else SURROGATE)
    if seeds is not None:
        p["seeds"] = seeds
    rn = Runner(out, p, lambda r: True, resume, log or (lambda m: None))
    for task, params in p["tasks"].items():
        for neuron, rule, intr in p["snn"]:
            base = Spec(task=task, task_params=params, neuron=neuron, rule=rule, intrinsics=intr,
                        hidden=p["hidden"], epochs=p["cap"], patience=p["patience"],
                        n_train=p["n_train"], n_val=p["n_val"], n_test=p["n_test"], seed=0)
            best = _tune(rn, base, intr, "lr", [replace(base, lr=lr) for lr in p["lr"]])
            for seed in range(1, p["seeds"] + 1):
                key = {"task": task, "model": "snn-lzc", "neuron": neuron, "rule": rule,
                       "intrinsics": intr, "seed": seed}
                if rn.find("rows", key):
                    continue
                _, m, _ = run(replace(base, lr=best["lr"], seed=seed))
                rn.add("rows", key | {"accuracy": m["accuracy"], "lr": best["lr"],
                                      "hidden": p["hidden"], "epochs_used": m["epochs_used"],
                                      "nearest_mean_lzc_accuracy": m["nearest_mean_lzc_accuracy"]})
                rn.log(f"{task} snn-lzc {neuron} seed {seed}: {m['accuracy']:.3f} ({rn.elapsed()})")
        for seed in range(1, p["seeds"] + 1):
            if rn.find("rows", {"task": task, "model": p["baselines"][0], "seed": seed}):
                continue
            split = lambda name, n: data.make(task, n, seed, name, **params)
            tr, va, te = split("train", p["n_train"]), split("validation", p["n_val"]), split("test", p["n_test"])
            res = B.score(B.Split(tr.x, tr.y), B.Split(va.x, va.y), B.Split(te.x, te.y),
                          len(tr.classes), tuple(p["baselines"]), seed)
            for name, r in res.items():
                rn.add("rows", {"task": task, "model": name, "seed": seed, "accuracy": r["accuracy"],
                                "chosen": r["chosen"]})
            rn.log(f"{task} baselines seed {seed}: " + ", ".join(f"{k} {v['accuracy']:.3f}" for k, v in res.items()))
    return rn.doc


def surrogate_markdown(doc: dict) -> str:
    """Accuracy mean +- sd (ddof 1) per task and model."""
    lines = ["| task | model | accuracy (%) | seeds |", "|---|---|---|---|"]
    for task in doc["protocol"]["tasks"]:
        models: dict[str, list[float]] = {}
        for r in doc["rows"]:
            if r["task"] == task:
                name = r["model"] if r["model"] != "snn-lzc" else f"snn-lzc ({r['neuron']}, {r['rule']}, {r['intrinsics']})"
                models.setdefault(name, []).append(r["accuracy"])
        for name, acc in models.items():
            s = stats.summary(acc)
            lines.append(f"| {task} | {name} | {_pct(s['mean'])} ± {_pct(s['sd'])} | {s['n']} |")
    return "\n".join(lines)


GROUPS = {"tau": ("tau",), "theta": ("theta",), "R": ("R",), "v_reset": ("v_reset",),
          "adaptation": ("beta", "tau_a"), "drive": ("kappa", "tau_r"), "noise": ("delta_u", "rho0")}
ABLATION = {kind: {g: names for g, names in GROUPS.items() if set(names) <= set(INTRINSICS[kind])}
            for kind in INTRINSICS}
BUDGET_EPOCHS = (4, 12, 36)


def ablation(out: str | Path, table: str | Path, quick: bool = False,
             log: Callable[[str], None] | None = None, resume: bool = False,
             neurons: tuple[str, ...] | None = None) -> dict:
    """BPTT cells of the paper table (``table``, its tuned configurations and seeds):
    (1) ``learn``: the learned condition with only one group of intrinsics learned
    (``ABLATION``), early-stopped as in the table; (2) ``budget``: fixed-tuned and learned
    trained for exactly 1x, 3x and 9x ``BUDGET_EPOCHS[0]`` epochs, no early stopping.
    Rows: ``study``, ``neuron``, ``intrinsics``, ``learn`` or ``epochs``, ``seed``, ``accuracy``."""
    paper_doc = json.loads(Path(table).read_text())
    p = dict(paper_doc["protocol"]) | {"table": str(table), "ablation": ABLATION,
                                       "budget_epochs": BUDGET_EPOCHS}
    if quick:
        p |= {"budget_epochs": (1, 2), "seeds": min(p["seeds"], 2)}
    neurons = neurons or NEURONS
    rn = Runner(out, p, lambda r: r["neuron"] in neurons, resume, log or (lambda m: None))
    for neuron in neurons:
        chosen = {}
        for condition in ("fixed-tuned", "learned"):
            rows = [r for r in paper_doc["rows"] if (r["neuron"], r["rule"], r["intrinsics"]) == (neuron, "bptt", condition)]
            if not rows:
                raise ValueError(f"{table} has no {neuron} bptt {condition} rows: run "
                                 f"'edged-train experiment paper --rules bptt' first")
            r = rows[0]
            chosen[condition] = Spec(task=p["task"], task_params=p["task_params"], neuron=neuron,
                                     rule="bptt", intrinsics=condition, hidden=r["hidden"], lr=r["lr"],
                                     lr_intrinsics=r["lr_intrinsics"], centres=r["centres"],
                                     epochs=p["cap"]["bptt"], n_train=p["n_train"], n_val=p["n_val"],
                                     n_test=p["n_test"], patience=p["patience"])
        jobs = [({"study": "learn", "intrinsics": "learned", "learn": group},
                 replace(chosen["learned"], learn=names)) for group, names in ABLATION[neuron].items()]
        jobs += [({"study": "budget", "intrinsics": c, "epochs": e},
                  replace(chosen[c], epochs=e, n_val=0)) for e in p["budget_epochs"] for c in chosen]
        for tag, spec in jobs:
            for seed in range(1, p["seeds"] + 1):
                key = {"neuron": neuron, **tag, "seed": seed}
                if rn.find("rows", key):
                    continue
                _, m, _ = run(replace(spec, seed=seed))
                rn.add("rows", key | {"accuracy": m["accuracy"], "epochs_used": m["epochs_used"]})
                rn.log(f"ablation {key}: {m['accuracy']:.3f} ({rn.elapsed()})")
    return rn.doc


def ablation_markdown(doc: dict, table: dict) -> str:
    """Per neuron: each single-group ablation against fixed-tuned and full learning (paired
    by seed with the paper table's rows), and the budget study's gap per epoch budget."""
    ref = {(r["neuron"], r["intrinsics"], r["seed"]): r["accuracy"] for r in table["rows"] if r["rule"] == "bptt"}
    lines = ["| neuron | learned only | accuracy (%) | − fixed-tuned (pp, t p) | − all learned (pp, t p) |",
             "|---|---|---|---|---|"]
    for neuron in NEURONS:
        for group in ABLATION[neuron]:
            rows = [r for r in doc["rows"] if r["neuron"] == neuron and r.get("learn") == group]
            rows = [r for r in rows if (neuron, "fixed-tuned", r["seed"]) in ref and (neuron, "learned", r["seed"]) in ref]
            if len(rows) < 2:
                continue
            a = [r["accuracy"] for r in rows]
            ft = stats.paired(a, [ref[(neuron, "fixed-tuned", r["seed"])] for r in rows])
            full = stats.paired(a, [ref[(neuron, "learned", r["seed"])] for r in rows])
            s = stats.summary(a)
            lines.append(f"| {neuron} | {group} | {_pct(s['mean'])} ± {_pct(s['sd'])} | "
                         f"{100 * ft['mean_diff']:+.1f} ({ft['t_p']:.3f}) | {100 * full['mean_diff']:+.1f} ({full['t_p']:.3f}) |")
    lines += ["", "| neuron | epochs | fixed-tuned (%) | learned (%) | learned − fixed-tuned (pp, 95 % CI, t p) |",
              "|---|---|---|---|---|"]
    for neuron in NEURONS:
        for e in doc["protocol"]["budget_epochs"]:
            by = {c: {r["seed"]: r["accuracy"] for r in doc["rows"] if r["neuron"] == neuron
                      and r.get("epochs") == e and r["intrinsics"] == c} for c in ("fixed-tuned", "learned")}
            seeds = sorted(set(by["fixed-tuned"]) & set(by["learned"]))
            if len(seeds) < 2:
                continue
            a, b = [by["learned"][s] for s in seeds], [by["fixed-tuned"][s] for s in seeds]
            d = stats.paired(a, b)
            lines.append(f"| {neuron} | {e} | {_pct(np.mean(b))} ± {_pct(np.std(b, ddof=1))} | "
                         f"{_pct(np.mean(a))} ± {_pct(np.std(a, ddof=1))} | {100 * d['mean_diff']:+.1f} "
                         f"[{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}], {d['t_p']:.3f} |")
    return "\n".join(lines)
