"""``edged bench e2e --quick``, ``streams`` and ``stages`` run end to end on loopback and
report every row."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import small_model

from edged.model import save


def test_bench_e2e_quick(tmp_path):
    path = tmp_path / "m.npz"
    save(path, small_model(window=64, hop=8))
    r = subprocess.run([sys.executable, "-m", "edged.cli", "bench", "e2e", "--quick", "--json",
                        "--model", str(path), "--duration", "0.3", "--rates", "20000", "--no-nats"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    names = [row["name"] for row in out["results"]]
    assert any(n.startswith("echo client latency p99") for n in names)
    assert any(n.startswith("edged client latency p99") for n in names)
    assert "capacity flat out" in names and "daemon CPU per event" in names
    rows = {row["name"]: row for row in out["results"]}
    assert rows["capacity flat out"]["value"] > 0
    assert rows["daemon RSS"]["value"] > 0


def test_bench_streams_ladder(tmp_path):
    """Two rungs of real-time streams (40 ms frames), the first after an unscored warm-up
    rung: the first is kept up with, every frame sent on time and answered; the echo runs at
    the count kept."""
    path = tmp_path / "m.npz"
    save(path, dataclasses.replace(small_model(window=64, hop=8), dt=5e-3))
    r = subprocess.run([sys.executable, "-m", "edged.cli", "bench", "streams", "--json",
                        "--model", str(path), "--ladder", "4,8", "--duration", "0.6"],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    rows = {row["name"]: row for row in out["results"]}
    kept = rows["largest stream count kept up with"]["value"]
    assert kept in (4, 8), out["notes"]
    assert rows[f"daemon CPU per stream @{kept:g}"]["value"] > 0
    assert rows[f"frames per serve-loop batch @{kept:g}"]["value"] >= 1  # from the daemon's /metrics
    daemon_cores = rows[f"daemon CPU per stream @{kept:g}"]["value"] * kept / 1e3
    assert 0 <= rows[f"busiest serving thread @{kept:g}"]["value"] <= daemon_cores + 0.05  # (10 ms ticks)
    assert rows[f"edged client latency p99 @{kept:g}"]["baseline"] == f"echo client latency p99 @{kept:g}"
    assert any(n.startswith("4 streams: ") and "0 sent late, 0 decisions missing" in n
               for n in out["notes"]), out["notes"]
    rungs = [n.split(":")[0] + (" warm-up" if n.endswith("(warm-up, not scored)") else "")
             for n in out["notes"] if " streams: " in n and not n.startswith("echo")]
    assert rungs[:2] == ["4 streams warm-up", "4 streams"], out["notes"]  # the first count only
    assert "8 streams warm-up" not in rungs, out["notes"]
    inside = [float(m) for n in out["notes"] for m in re.findall(r"receipt to publish: p99 <= ([\d.e+-]+|inf) ms", n)]
    assert len(inside) == len(rungs) and all(0 < x < 100 for x in inside), out["notes"]  # (the daemon's histogram)
    steal = [float(m) for n in out["notes"] for m in re.findall(r"CPU steal ([\d.]+) %", n)]
    assert len(steal) >= 1 and all(0 <= x <= 100 for x in steal), out["notes"]
    for when in ("before", "after"):  # the engine timed in the benchmark process
        assert rows[f"host speed {when} the ladder: engine per frame"]["value"] > 0


def test_bench_streams_workers_reports_the_routing_hop(tmp_path):
    """``--workers 2``: one short rung through the router; its CPU per frame is reported
    beside the workers' (the full ladder is a benchmark run, not a test)."""
    path = tmp_path / "m.npz"
    save(path, dataclasses.replace(small_model(window=64, hop=8), dt=5e-3))
    r = subprocess.run([sys.executable, "-m", "edged.cli", "bench", "streams", "--json", "--workers", "2",
                        "--model", str(path), "--ladder", "4", "--duration", "0.4"],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    rows = {row["name"]: row for row in out["results"]}
    assert out["params"]["workers"] == 2
    assert rows["largest stream count kept up with"]["value"] == 4, out["notes"]
    router, worker = rows["router CPU per frame @4"]["value"], rows["worker CPU per frame-and-decision @4"]["value"]
    assert router > 0 and worker > 0
    assert rows["frames per serve-loop batch @4"]["value"] >= 1  # both workers' edged_batch_frames
    assert rows["busiest serving thread @4"]["value"] >= 0  # the workers' main threads were found
    assert rows["router / worker CPU per frame @4"]["value"] == pytest.approx(100 * router / worker)


def test_bench_stages(tmp_path):
    path = tmp_path / "m.npz"
    save(path, small_model(window=64, hop=8))
    r = subprocess.run([sys.executable, "-m", "edged.cli", "bench", "stages", "--json",
                        "--model", str(path), "--streams", "20", "--hops", "3"],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {row["name"]: row for row in json.loads(r.stdout)["results"]}
    for stage in ("receive (one call per batch)", "decode + admit", "engine (advance_many)",
                  "readout (one call per batch)", "encode + publish", "bare recv + publish"):
        assert rows[stage]["value"] > 0, stage
    assert rows["serve loop total"]["baseline"] == "bare recv + publish"


def test_p99_bound_reads_the_daemons_latency_histogram():
    """The least bound holding 99 % of the decisions: cumulative counts per bound."""
    from edged.bench.streams import _latency_bounds, _p99_bound

    bounds = _latency_bounds()
    within = np.zeros(len(bounds))
    assert np.isnan(_p99_bound(within))
    within[bounds.index(1e-3):] = 990  # 990 decisions within 1 ms
    within[bounds.index(2.5e-2):] = 1000  # 10 more within 25 ms
    assert _p99_bound(within) == 1e-3
    within[-1] = 1100  # 100 past the last finite bound
    assert _p99_bound(within) == float("inf")
