"""Benchmarks: each module measures edged against a baseline run in the same process.

A benchmark module exposes ``add_arguments(parser)`` and ``run(args) -> dict`` and keeps
heavy imports inside ``run`` so ``edged --help`` stays instant. ``run`` returns::

    {"bench": str, "params": {...},
     "results": [{"name": str, "value": float, "unit": str,
                  "baseline": str | None, "ratio": float | None}, ...],
     "notes": [str, ...]}

``ratio`` is ``baseline value / value`` (how many times faster or smaller than the
baseline row named by ``baseline``); the CLI prints the table or, with ``--json``, the dict.
"""

from __future__ import annotations

import json
import time
from typing import Callable


def best_time(fn: Callable[[], object], repeat: int = 7, min_time: float = 0.05) -> float:
    """Best-of-``repeat`` seconds per call of ``fn``, each sample at least ``min_time`` long."""
    fn()
    number = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        if time.perf_counter() - t0 >= min_time:
            break
        number *= 2
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number)
    return best


def result(name: str, value: float, unit: str, baseline: tuple[str, float] | None = None) -> dict:
    """One result row; ``baseline`` is ``(name, value)`` of the row to compare against."""
    ratio = None if baseline is None or value == 0 else baseline[1] / value
    return {"name": name, "value": value, "unit": unit,
            "baseline": None if baseline is None else baseline[0], "ratio": ratio}


def report(outcome: dict, as_json: bool) -> str:
    """Render a benchmark outcome as a text table or as one JSON object."""
    if as_json:
        return json.dumps(outcome, sort_keys=True)
    params = ", ".join(f"{k}={v}" for k, v in outcome["params"].items())
    lines = [f"edged bench {outcome['bench']}  ({params})", ""]
    width = max(len(r["name"]) for r in outcome["results"])
    lines.append(f"{'measure':<{width}}  {'value':>12}  unit   vs baseline")
    for r in outcome["results"]:
        vs = "" if r["ratio"] is None else f"{r['ratio']:.1f}x vs {r['baseline']}"
        lines.append(f"{r['name']:<{width}}  {r['value']:>12.3f}  {r['unit']:<5}  {vs}")
    lines += [f"note: {n}" for n in outcome.get("notes", [])]
    return "\n".join(lines)
