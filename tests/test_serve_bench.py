"""``edged bench e2e --quick`` runs end to end on loopback and reports every row."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import small_model
from edged.model import save


def test_bench_e2e_quick(tmp_path):
    path = tmp_path / "m.npz"
    save(path, small_model(window=64, hop=8))
    r = subprocess.run([sys.executable, "-m", "edged.cli", "bench", "e2e", "--quick", "--json",
                        "--model", str(path), "--duration", "0.3", "--rates", "20000",
                        "--many-streams", "20", "--many-rate", "500"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    names = [row["name"] for row in out["results"]]
    assert any(n.startswith("echo client latency p99") for n in names)
    assert any(n.startswith("edged client latency p99") for n in names)
    assert "capacity flat out" in names and "daemon CPU per event" in names
    rows = {row["name"]: row for row in out["results"]}
    assert rows["capacity flat out"]["value"] > 0
    assert rows["20 streams x 500 ev/s: rejected frames"]["value"] == 0
