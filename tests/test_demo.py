"""``edged demo``: labelled examples through a real ``edged serve`` subprocess, truth beside
prediction, a confusion matrix and the accuracy; the shipped model must reach 90 %."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

from conftest import ROOT, small_model
from edged.model import save
from test_events import event_model, write_folder


def demo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edged.cli", "demo", *args], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)


def test_demo_on_the_shipped_model_decides_correctly():
    r = demo("--model", "models/meta.npz", "--n", "30", "--seed", "3")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    rows = [re.match(r"demo-\d+\s+truth (\S+)\s+predicted (\S+)\s+(ok|WRONG)", x) for x in lines]
    rows = [m.groups() for m in rows if m]
    assert len(rows) == 30 and {t for t, _, _ in rows} == {"homogeneous", "modulated", "bursty"}
    assert all((t == p) == (mark == "ok") for t, p, mark in rows)
    m = re.fullmatch(r"accuracy (\d+\.\d)% \((\d+)/30\)", lines[-1])
    assert m and int(m.group(2)) == sum(mark == "ok" for _, _, mark in rows)
    assert float(m.group(1)) >= 90.0, r.stdout
    i = lines.index("confusion (rows: truth, columns: predicted)")
    matrix = [[int(v) for v in x.split()[1:]] for x in lines[i + 2:i + 5]]
    assert sum(map(sum, matrix)) == 30 and sum(matrix[k][k] for k in range(3)) == int(m.group(2))


def test_demo_replays_an_event_models_recordings(tmp_path):
    folder = write_folder(tmp_path / "ev", 6)
    model = event_model(tmp_path / "m.npz")
    assert model.provenance.get("events_dir") is None
    r = demo("--model", str(tmp_path / "m.npz"), "--events", str(folder), "--n", "4")
    assert r.returncode == 0, r.stderr
    truth = re.findall(r"truth (\S+)", r.stdout)
    assert truth == ["0", "1", "0", "1"] and re.search(r"accuracy \d+\.\d% \(\d/4\)$", r.stdout)


def test_demo_refuses_what_it_cannot_show(tmp_path):
    save(tmp_path / "bare.npz", dataclasses.replace(small_model(), readout=b"", classes=()))
    save(tmp_path / "untasked.npz", small_model())
    for model, msg in (("bare.npz", "no readout"), ("untasked.npz", "names no task"),
                       ("missing.npz", "cannot read model file")):
        r = demo("--model", str(tmp_path / model), "--n", "3")
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and msg in lines[0], r.stderr
    model = event_model(tmp_path / "ev.npz")
    r = demo("--model", str(tmp_path / "ev.npz"), "--events", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and "needs recordings: --events DIR" in r.stderr, r.stderr
    assert model.encoding["kind"] == "nmnist"
    r = demo("--n", "0")
    assert r.returncode == 2 and "--n must be >= 1" in r.stderr
