"""Benchmarks run end to end (short versions) and report sane, self-checked numbers."""

from __future__ import annotations

import json
import subprocess
import sys


def bench(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "edged.cli", "bench", *args, "--json"],
                          capture_output=True, text=True, timeout=300, check=True)
    return json.loads(proc.stdout)


def test_bench_kernels_json():
    out = bench("kernels", "--steps", "200", "--hidden", "64")
    rows = {r["name"]: r for r in out["results"]}
    assert rows["edged_step_us"]["baseline"] == "numpy_step_us" and rows["edged_step_us"]["ratio"] > 0
    assert rows["edged_inloop_step_us"]["value"] > 0
    assert rows["stream_state_bytes"]["value"] > rows["neuron_state_bytes_per_stream"]["value"]


def test_bench_lzc_json():
    out = bench("lzc", "--repeat", "1")
    names = [r["name"] for r in out["results"]]
    assert any(n.startswith("lz76 d=0.5") for n in names)
    assert any(n == "sliding H=1 d=0.5" for n in names)
    assert any(n == "sliding H=16 periodic" for n in names)
    assert any("recount every hop H=16" in n for n in names)
    longer = {r["name"]: r for r in out["results"] if r["name"].startswith("sliding H=64")}
    assert longer["sliding H=64 d=0.3 per step"]["baseline"] == "sliding H=16 d=0.3 per step"
