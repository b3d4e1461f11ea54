"""Model file: save/load round trip, and every kind of bad file refused in one line."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from edged.model import ModelError, content_hash, load, save
from edged.readout import linear_onnx

from conftest import small_model


def test_round_trip(tmp_path):
    m = small_model("meta")
    path = tmp_path / "m.npz"
    digest = save(path, m)
    back = load(path)
    assert back.sha256 == digest
    assert back.neuron == "meta" and back.classes == m.classes and back.features == m.features
    assert (back.window, back.hop, back.variant, back.dt) == (m.window, m.hop, m.variant, m.dt)
    assert np.array_equal(back.w_in, m.w_in) and np.array_equal(back.w_out, m.w_out)
    for k in m.hidden:
        assert np.array_equal(back.hidden[k], m.hidden[k]) and np.array_equal(back.output[k], m.output[k])
    assert back.readout == m.readout and back.provenance == m.provenance


def test_lif_round_trip(tmp_path):
    save(tmp_path / "lif.npz", small_model("lif"))
    assert set(load(tmp_path / "lif.npz").hidden) == {"tau", "theta", "v_reset", "R"}


def old_names(path, keep_current: bool = False) -> None:
    """Rewrite a meta model as files before the canonical names were: ``tau0``, ``theta0``."""
    arrays = dict(np.load(path))
    header = json.loads(arrays.pop("header").tobytes())
    for layer in ("hidden", "output"):
        for new, old in (("tau", "tau0"), ("theta", "theta0")):
            arrays[f"{layer}.{old}"] = arrays[f"{layer}.{new}"] if keep_current else arrays.pop(f"{layer}.{new}")
    header["content_sha256"] = content_hash(header, arrays)
    np.savez(path, header=np.frombuffer(json.dumps(header).encode(), np.uint8), **arrays)


def test_old_intrinsic_names_still_load(tmp_path):
    m = small_model("meta")
    save(tmp_path / "m.npz", m)
    old_names(tmp_path / "m.npz")
    assert "hidden.tau0" in np.load(tmp_path / "m.npz").files
    back = load(tmp_path / "m.npz")
    for k in m.hidden:
        assert np.array_equal(back.hidden[k], m.hidden[k]) and np.array_equal(back.output[k], m.output[k])


def test_old_and_current_name_together_is_refused(tmp_path):
    save(tmp_path / "m.npz", small_model("meta"))
    old_names(tmp_path / "m.npz", keep_current=True)
    with pytest.raises(ModelError, match=r"'hidden.tau0'.* duplicate .*'hidden.tau'"):
        load(tmp_path / "m.npz")


def members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def write_members(path, items: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in items.items():
            z.writestr(name, data)


def npy(a) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=True)
    return buf.getvalue()


def edited(path, name, array):
    m = members(path)
    m[f"{name}.npy"] = npy(array)
    write_members(path, m)


def edit_header(path, **changes):
    m = members(path)
    header = json.loads(np.load(io.BytesIO(m["header.npy"])).tobytes())
    header.update(changes)
    m["header.npy"] = npy(np.frombuffer(json.dumps(header).encode(), np.uint8))
    write_members(path, m)


def inspect(path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edged.cli", "inspect", str(path)],
                          capture_output=True, text=True, timeout=60)


BAD_FILES = {
    "garbage": (lambda p: p.write_bytes(b"\x00garbage" * 50), "bad zip"),
    "truncated zip": (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "bad zip"),
    "object array": (lambda p: edited(p, "w_in", np.array([{"a": 1}], dtype=object)), "'w_in' has dtype object"),
    "missing member": (lambda p: write_members(p, {k: v for k, v in members(p).items() if k != "output.R.npy"}),
                       "missing ['output.R']"),
    "extra member": (lambda p: edited(p, "bonus", np.zeros(3, np.float32)), "unexpected ['bonus']"),
    "wrong dtype": (lambda p: edited(p, "w_in", np.zeros((8, 16), np.float64)), "'w_in' has dtype float64"),
    "wrong shape": (lambda p: edited(p, "w_in", np.zeros((16, 8), np.float32)), "'w_in' has shape (16, 8)"),
    "nan weight": (lambda p: edited(p, "w_out", np.full((16, 3), np.nan, np.float32)), "'w_out' has non-finite"),
    "out-of-range intrinsic": (lambda p: edited(p, "hidden.tau", -np.ones(16, np.float32)), "tau[0]"),
    "edited weights": (lambda p: edited(p, "w_in", np.ones((8, 16), np.float32)), "content hash mismatch"),
    "future version": (lambda p: edit_header(p, version=2), "version 2 is not supported"),
    "extra header key": (lambda p: edit_header(p, colour="red"), "unexpected ['colour']"),
    "bad window": (lambda p: edit_header(p, lzc={"variant": "lz76", "window": 1, "hop": 1}), "window 1"),
    "readout width": (lambda p: edited(p, "readout", np.frombuffer(
        linear_onnx(np.zeros((5, 2)), np.zeros(2)), np.uint8)), "input width 5 does not match 6"),
    "readout garbage": (lambda p: edited(p, "readout", np.frombuffer(b"not onnx" * 4, np.uint8)), "not a valid ONNX"),
    "zip bomb": (lambda p: write_members(p, {**members(p), "w_in.npy": npy(np.zeros((8, 16), np.float32))
                                             + bytes(70 << 20)}), "inflates to"),
    "missing file": (lambda p: p.unlink(), "cannot read model file"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_is_refused_in_one_line(model_file, case):
    damage, message = BAD_FILES[case]
    damage(model_file)
    with pytest.raises(ModelError, match=None) as err:
        load(model_file)
    assert message in str(err.value)
    proc = inspect(model_file)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and str(model_file) in lines[0]


def test_inspect_json(model_file):
    proc = subprocess.run([sys.executable, "-m", "edged.cli", "inspect", "--json", str(model_file)],
                          capture_output=True, text=True, timeout=60, check=True)
    info = json.loads(proc.stdout)
    assert {k: info[k] for k in ("n_in", "n_hidden", "n_out", "neuron", "dt", "window", "hop")} == \
        {"n_in": 8, "n_hidden": 16, "n_out": 3, "neuron": "meta", "dt": 1e-3, "window": 64, "hop": 8}
    assert info["classes"] == ["c0", "c1"] and info["sha256"] == load(model_file).sha256


def test_inspect_text(model_file):
    proc = subprocess.run([sys.executable, "-m", "edged.cli", "inspect", str(model_file)],
                          capture_output=True, text=True, timeout=60, check=True)
    assert "8 inputs -> 16 hidden -> 3 output meta neurons" in proc.stdout


def test_help_imports_neither_numba_nor_onnxruntime():
    code = ("import sys; from edged import cli\n"
            "try: cli.main(['--help'])\nexcept SystemExit: pass\n"
            "print(sorted(m for m in ('numba', 'onnxruntime', 'onnx', 'zmq') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_save_refuses_invalid_model(tmp_path):
    m = small_model()
    bad = type(m)(**{**m.__dict__, "classes": ("only",)})
    with pytest.raises(ModelError, match="classes"):
        save(tmp_path / "x.npz", bad)
    assert not (tmp_path / "x.npz").exists()
