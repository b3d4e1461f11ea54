"""``edged-train readout``: a network without readout (as ``edged nir import`` writes)
gets one fitted on a task or an event folder, and is then decided and served."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np

from conftest import ROOT, small_model, start_serve
from edged import events as E
from edged.model import load, save
from test_events import write_folder


def run(*args: str, module: str = "trainer.cli") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


def bare(path, n_in: int):
    save(path, dataclasses.replace(small_model("lif", n_in=n_in), readout=b"", classes=()))
    return path


def test_readout_on_a_task_makes_a_model_that_serves(tmp_path):
    model = bare(tmp_path / "bare.npz", 8)
    r = run("readout", "--model", str(model), "--task", "poisson-rate", "--set", "n_in=8",
            "--set", "T=256", "--n-train", "60", "--n-test", "40", "--hop", "64",
            "--out", str(tmp_path / "fit.npz"))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    fitted = load(tmp_path / "fit.npz")
    assert fitted.has_readout and len(fitted.classes) == 4 and (fitted.window, fitted.hop) == (256, 64)
    assert out["n_test"] == 40 and 0 <= out["accuracy"] <= 1 and "count_floor_accuracy" in out
    np.testing.assert_array_equal(fitted.w_in, load(model).w_in)
    assert fitted.provenance["task"] == "poisson-rate" and fitted.encoding["kind"] == "channels"
    proc, _, _ = start_serve(tmp_path / "fit.npz")  # serve accepts it now
    proc.terminate()
    assert proc.wait(timeout=60) == 0
    proc.stderr.close()
    proc.stdout.close()


def test_readout_on_an_event_folder(tmp_path):
    folder = write_folder(tmp_path / "ev", 8)
    enc = E.make_encoding("nmnist", dt=1e-3, steps=64, pool=4)
    model = bare(tmp_path / "bare.npz", E.n_inputs(enc))
    r = run("readout", "--model", str(model), "--events-dir", str(folder), "--steps", "64",
            "--pool", "4", "--n-val", "2", "--out", str(tmp_path / "fit.npz"))
    assert r.returncode == 0, r.stderr
    fitted = load(tmp_path / "fit.npz")
    assert fitted.classes == ("0", "1") and fitted.encoding == enc and fitted.window == 64
    assert json.loads(r.stdout)["n_validation"] == 2
    e = run("evaluate", "--model", str(tmp_path / "fit.npz"), "--events-dir", str(folder), "--json")
    assert e.returncode == 0 and json.loads(e.stdout)["n"] == 8, e.stderr


def test_readout_usage_errors(tmp_path):
    model = str(bare(tmp_path / "bare.npz", 8))
    out = str(tmp_path / "o.npz")
    for args, msg in ((["--task", "poisson-rate"], "32 channels but the model 8 inputs"),
                      ([], "exactly one of --task"),
                      (["--task", "poisson-rate", "--set", "bogus=1"], "no parameter"),
                      (["--events-dir", str(tmp_path)], "no labels.csv")):
        r = run("readout", "--model", model, "--out", out, *args)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and msg in lines[0], r.stderr
