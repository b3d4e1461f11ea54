"""Event files and their encoding (edged.events), event-folder training and evaluation
(trainer.events), and replay into a running daemon (edged send --events).

Synthetic recordings are written by the tests; tests on the real N-MNIST subset find it
under ``$EDGED_DATA/nmnist_small`` and skip, saying why, when it is absent."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import small_model
from edged import events as E
from edged.model import load, save

DATA = Path(os.environ.get("EDGED_DATA", "")) / "nmnist_small"
needs_data = pytest.mark.skipif(
    "EDGED_DATA" not in os.environ or not (DATA / "labels.csv").is_file(),
    reason=f"N-MNIST subset not found at {DATA} (set EDGED_DATA to the directory holding "
           "nmnist_small/)" if "EDGED_DATA" in os.environ else
           "EDGED_DATA is not set (the directory holding nmnist_small/, e.g. ../shared/data)")
REPO = Path(__file__).resolve().parent.parent


def synthetic(seed: int, n: int, span_us: int = 60_000) -> E.Events:
    rng = np.random.default_rng(seed)
    return E.Events(np.sort(rng.integers(0, span_us, n)).astype(np.int64),
                    rng.integers(0, E.SENSOR_CHANNELS, n).astype(np.int64))


# --- reading -------------------------------------------------------------------------

def test_bs2_golden_event(tmp_path):
    f = tmp_path / "one.bs2"
    f.write_bytes(bytes([3, 5, 0x80 | 0x01, 0x02, 0x03, 33, 0, 0x01, 0x02, 0x04]))
    ev = E.read_bs2(f)
    assert ev.t_us.tolist() == [0x010203, 0x010204]
    assert ev.ch.tolist() == [1156 + 5 * 34 + 3, 33]  # ON at (3, 5); OFF at (33, 0)
    assert ev.t_us.dtype == np.int64 and ev.ch.dtype == np.int64


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31), st.integers(0, 300))
def test_bs2_write_read_round_trip(tmp_path_factory, seed, n):
    f = tmp_path_factory.mktemp("rt") / "x.bs2"
    ev = synthetic(seed, n, span_us=1 << 23)
    E.write_bs2(f, ev)
    back = E.read_bs2(f)
    np.testing.assert_array_equal(back.t_us, ev.t_us)
    np.testing.assert_array_equal(back.ch, ev.ch)


def test_bs2_corrupt_files_name_file_and_byte_offset(tmp_path):
    good = tmp_path / "good.bs2"
    E.write_bs2(good, E.Events(np.array([10, 20, 30]), np.array([0, 1, 2])))
    data = good.read_bytes()
    cases = {"trunc.bs2": (data[:12], "byte offset 10"),
             "addr.bs2": (data[:5] + bytes([34]) + data[6:], "byte offset 5"),
             "time.bs2": (data[:10] + data[:5], "byte offset 10")}
    for name, (raw, where) in cases.items():
        (tmp_path / name).write_bytes(raw)
        with pytest.raises(E.EventFileError, match=where) as e:
            E.load(tmp_path / name)
        assert name in str(e.value)
    with pytest.raises(E.EventFileError, match="missing.bs2"):
        E.load(tmp_path / "missing.bs2")


def test_generic_npz_and_csv(tmp_path):
    np.savez(tmp_path / "a.npz", t_us=np.array([0, 5, 5, 900]), ch=np.array([3, 1, 2, 0]))
    (tmp_path / "a.csv").write_text("t_us,ch\n0,3\n5,1\n5,2\n900,0\n")
    for name in ("a.npz", "a.csv"):
        ev = E.load(tmp_path / name)
        assert ev.t_us.tolist() == [0, 5, 5, 900] and ev.ch.tolist() == [3, 1, 2, 0]
    (tmp_path / "back.csv").write_text("t_us,ch\n0,3\n9,1\n5,2\n")
    with pytest.raises(E.EventFileError, match=r"back\.csv: line 4"):
        E.load(tmp_path / "back.csv")
    (tmp_path / "head.csv").write_text("t,ch\n0,3\n")
    with pytest.raises(E.EventFileError, match="header"):
        E.load(tmp_path / "head.csv")
    np.savez(tmp_path / "neg.npz", t_us=np.array([0, 1]), ch=np.array([0, -1]))
    with pytest.raises(E.EventFileError, match="event 1 has a negative channel"):
        E.load(tmp_path / "neg.npz")
    np.savez(tmp_path / "keys.npz", t=np.array([0]), ch=np.array([0]))
    with pytest.raises(E.EventFileError, match="t_us"):
        E.load(tmp_path / "keys.npz")
    with pytest.raises(E.EventFileError, match="unknown event file type"):
        E.load(tmp_path / "x.aedat")


# --- encoding ------------------------------------------------------------------------

def test_encode_golden_pool_and_dt():
    enc = E.make_encoding("nmnist", dt=0.002, steps=10, pool=4)
    assert E.n_inputs(enc) == 2 * 9 * 9 and json.loads(json.dumps(enc)) == enc
    # ON (33, 33) at 1999 us, OFF (4, 8) at 2000 us, OFF (0, 0) at 20000 us (dropped: step 10)
    ev = E.Events(np.array([1999, 2000, 20000]), np.array([1156 + 33 * 34 + 33, 8 * 34 + 4, 0]))
    t, ch = E.encode(ev, enc)
    assert t.tolist() == [0, 1] and ch.tolist() == [81 + 8 * 9 + 8, 2 * 9 + 1]
    assert E.n_inputs(E.make_encoding("nmnist", pool=1)) == E.SENSOR_CHANNELS


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31), st.integers(0, 500), st.sampled_from([1, 2, 3, 4, 17]),
       st.sampled_from([0.0005, 0.001, 0.004]))
def test_encode_properties(seed, n, pool, dt):
    ev = synthetic(seed, n)
    enc = E.make_encoding("nmnist", dt=dt, steps=40, pool=pool)
    t, ch = E.encode(ev, enc)
    keep = ev.t_us // round(dt * 1e6) < 40
    assert t.size == int(keep.sum()) and np.all(np.diff(t) >= 0) and np.all(t < 40)
    assert ch.size == 0 or (ch.min() >= 0 and ch.max() < E.n_inputs(enc))
    # polarity is kept: ON events land in the upper half of the channels
    half = E.n_inputs(enc) // 2
    np.testing.assert_array_equal(ch >= half, ev.ch[keep] >= 1156)
    if pool == 1:
        np.testing.assert_array_equal(ch, ev.ch[keep])
    x = E.dense(t, ch, 40, E.n_inputs(enc))
    assert int(x.sum()) == t.size


def test_generic_encoding_and_bad_encodings():
    enc = E.make_encoding("events", dt=0.001, steps=5, n_in=4)
    t, ch = E.encode(E.Events(np.array([0, 999, 1000, 4999, 5000]), np.array([0, 1, 2, 3, 3])), enc)
    assert t.tolist() == [0, 0, 1, 4] and ch.tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="n_in 4"):
        E.encode(E.Events(np.array([0]), np.array([4])), enc)
    for bad in ({"kind": "nmnist", "dt": 0.001, "steps": 5}, {"kind": "x"}, None,
                {"kind": "nmnist", "dt": 1.5e-6, "steps": 5, "pool": 2},
                {"kind": "nmnist", "dt": 0.001, "steps": 5, "pool": 0}):
        with pytest.raises(ValueError):
            E.check_encoding(bad)


# --- folders, split, evaluate ----------------------------------------------------------

def write_folder(root: Path, n: int, seed: int = 0, labels=("0", "1")) -> Path:
    (root / "events").mkdir(parents=True)
    rows = ["sample_id,file,label,split"]
    for i in range(n):
        E.write_bs2(root / "events" / f"{i}.bs2", synthetic(seed + i, 150 + 40 * i, span_us=60_000))
        rows.append(f"{i},events/{i}.bs2,{labels[i % len(labels)]},train")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def event_model(path: Path, steps: int = 64, pool: int = 4):
    enc = E.make_encoding("nmnist", dt=0.001, steps=steps, pool=pool)
    m = small_model("lif", n_in=E.n_inputs(enc), window=steps, hop=steps, classes=2)
    save(path, dataclasses.replace(m, encoding=enc, classes=("0", "1")))
    return load(path)


def test_stratified_split_is_fixed_and_proportional():
    from trainer.events import split

    y = np.repeat(np.arange(10), [97, 116, 99, 93, 105, 92, 94, 117, 87, 100])
    tr, va = split(y, 200, 0)
    assert len(va) == 200 and len(tr) == 800 and not set(tr) & set(va)
    per = np.bincount(y[va], minlength=10)
    assert np.all(np.abs(per - np.bincount(y) * 0.2) < 1)
    np.testing.assert_array_equal(split(y, 200, 0)[1], va)
    assert not np.array_equal(split(y, 200, 1)[1], va)


def test_evaluate_matches_engine_per_sample(tmp_path):
    from edged.engine import Engine
    from edged.readout import Readout
    from trainer.events import evaluate

    folder = write_folder(tmp_path / "ev", 6)
    model = event_model(tmp_path / "m.npz")
    r = evaluate(model, folder)
    assert r["n"] == 6 and sum(c["n"] for c in r["per_class"].values()) == 6
    ro = Readout(model.readout)
    for i in range(6):
        eng = Engine.for_model(model)
        t, ch = E.encode(E.load(folder / "events" / f"{i}.bs2"), model.encoding)
        dec = eng.advance(0, t, ch, 64)
        assert len(dec.t) == 1 and dec.t[0] == 64
        assert r["predictions"][str(i)] == model.classes[int(np.argmax(ro.scores(dec.features)[0]))]


def test_train_cli_events_dir_small(tmp_path):
    folder = write_folder(tmp_path / "ev", 12)
    out = tmp_path / "m.npz"
    r = subprocess.run([sys.executable, "-m", "trainer.cli", "run", "--events-dir", str(folder),
                        "--pool", "4", "--steps", "64", "--hidden", "8", "--epochs", "1",
                        "--n-val", "4", "--neuron", "lif", "--out", str(out)],
                       capture_output=True, text=True, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stderr
    metrics = json.loads(r.stdout)
    assert metrics["n_validation"] == 4 and 0 <= metrics["count_baseline_accuracy"] <= 1
    model = load(out)
    assert model.encoding == E.make_encoding("nmnist", 0.001, 64, 4)
    assert len(model.provenance["split"]["validation_ids"]) == 4
    e = subprocess.run([sys.executable, "-m", "trainer.cli", "evaluate", "--model", str(out),
                        "--events-dir", str(folder), "--json"],
                       capture_output=True, text=True, timeout=600, cwd=REPO)
    assert e.returncode == 0, e.stderr
    assert json.loads(e.stdout)["n"] == 12
    h = subprocess.run([sys.executable, "-m", "trainer.cli", "evaluate", "--model", str(out),
                        "--events-dir", str(folder), "--held-back", "--json"],
                       capture_output=True, text=True, timeout=600, cwd=REPO)
    assert h.returncode == 0, h.stderr
    held = json.loads(h.stdout)
    assert held["n"] == 4 and set(held["predictions"]) == set(model.provenance["split"]["validation_ids"])
    assert held["accuracy"] == metrics["validation_accuracy"]
    assert set(held["baselines"]) == {"count", "binned-count"}  # fitted on the other 8
    from trainer.events import EventSpec, run

    model, metrics = run(EventSpec(str(folder), pool=4, steps=64, neuron="lif", hidden=8,
                                   epochs=2, n_val=0, patience=0))  # every recording, 2 epochs
    assert metrics["n_train"] == 12 and metrics["epochs_run"] == 2
    assert metrics["validation_accuracy"] is None and not model.provenance["split"]["validation_ids"]


def test_train_generic_npz_folder_with_channels(tmp_path):
    from trainer.events import EventSpec, evaluate, run

    folder = tmp_path / "gen"
    folder.mkdir()
    rows = ["sample_id,file,label,split"]
    for i in range(10):
        rng = np.random.default_rng(i)
        lo = 0 if i % 2 else 8  # class a drives channels 0..7, class b 8..15
        np.savez(folder / f"{i}.npz", t_us=np.sort(rng.integers(0, 30_000, 300)),
                 ch=rng.integers(lo, lo + 8, 300))
        rows.append(f"{i},{i}.npz,{'ab'[i % 2]},")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    model, metrics = run(EventSpec(str(folder), steps=32, neuron="lif", hidden=8,
                                   outputs_per_class=1, epochs=2, n_val=4, channels=16))
    assert model.encoding == {"kind": "events", "dt": 0.001, "steps": 32, "n_in": 16}
    assert model.n_in == 16 and model.classes == ("a", "b")
    assert metrics["count_baseline_accuracy"] == 1.0  # the channels tell the classes apart
    assert evaluate(model, folder)["n"] == 10


def test_replay_steps_paces_frames_by_until():
    from edged.client import replay_steps

    class FakeSender:
        def __init__(self):
            self.sent = []

        def send(self, stream, t, ch, until=None):
            self.sent.append((now[0], list(t), until))

    now = [0.0]
    tx = FakeSender()
    t = np.array([0, 0, 5, 9, 9, 9])
    frames = replay_steps(tx, "x", t, np.zeros(6, np.int64), 20, offset=100, dt=0.01, speed=2.0,
                          start=0.0, frame_events=2, clock=lambda: now[0],
                          sleep=lambda s: now.__setitem__(0, now[0] + s))
    # until = the next frame's first step; a step with more events than a frame is split
    # (its events held by the daemon until a later frame); the last frame completes 120
    assert [(list(x[1]), x[2]) for x in tx.sent] == [([100, 100], 105), ([105], 109),
                                                     ([109], 109), ([109, 109], 120)]
    assert frames == 4
    for at, _, until in tx.sent:  # never before the recorded time / speed
        assert at >= until * 0.01 / 2.0 - 1e-12


# --- replay into a daemon --------------------------------------------------------------

def replay_and_collect(model, model_path: Path, folder: Path, *extra: str) -> tuple[list, list]:
    from test_service import Served

    served = Served(model, streams_max=64)
    try:
        r = subprocess.run([sys.executable, "-m", "edged.cli", "send", "--connect",
                            served.endpoints["ingest"], "--events", str(folder), "--model",
                            str(model_path), "--json", *extra],
                           capture_output=True, text=True, timeout=300, cwd=REPO)
        assert r.returncode == 0, r.stderr
        sent = [json.loads(x) for x in r.stdout.splitlines()]
        per_stream: dict[str, int] = {}
        for s in sent:
            per_stream[s["stream"]] = per_stream.get(s["stream"], 0) + 1
        for stream, n in per_stream.items():
            served.collect(stream, n)
        by_key = {(d.stream, d.t): d for ds in served.decisions.values() for d in ds}
        return sent, [by_key[s["stream"], s["t"]] for s in sent]
    finally:
        served.close()


def test_send_events_daemon_equals_evaluate(tmp_path):
    from trainer.events import evaluate

    folder = write_folder(tmp_path / "ev", 5)
    model = event_model(tmp_path / "m.npz")
    sent, got = replay_and_collect(model, tmp_path / "m.npz", folder, "--speed", "max")
    assert [s["stream"] for s in sent] == [f"s{i}" for i in range(5)]
    want = evaluate(model, folder)["predictions"]
    assert [d.label for d in got] == [want[s["sample_id"]] for s in sent]


def test_send_events_back_to_back_equals_one_offline_run(tmp_path):
    from edged.engine import Engine
    from edged.readout import Readout

    folder = write_folder(tmp_path / "ev", 4)
    model = event_model(tmp_path / "m.npz")
    sent, got = replay_and_collect(model, tmp_path / "m.npz", folder, "--back-to-back",
                                   "--stream", "b", "--speed", "50")
    assert [s["t"] for s in sent] == [64, 128, 192, 256]
    parts = [E.encode(E.load(folder / "events" / f"{i}.bs2"), model.encoding) for i in range(4)]
    t = np.concatenate([p[0] + 64 * i for i, p in enumerate(parts)])
    ch = np.concatenate([p[1] for p in parts])
    dec = Engine.for_model(model).advance(0, t, ch, 256)
    scores = Readout(model.readout).scores(dec.features)
    assert [d.t for d in got] == [64, 128, 192, 256]
    assert [d.class_id for d in got] == np.argmax(scores, 1).tolist()


def test_send_events_usage_errors(tmp_path):
    folder = write_folder(tmp_path / "ev", 1)
    save(tmp_path / "plain.npz", small_model())
    task = dataclasses.replace(small_model(), encoding={"kind": "channels", "n_in": 8, "dt": 1e-3,
                                                        "task": "poisson-structure"})
    save(tmp_path / "task.npz", task)
    for extra, msg in ((["--model", str(tmp_path / "plain.npz")], "no event encoding"),
                       (["--model", str(tmp_path / "task.npz")],
                        "trained on the task 'poisson-structure': its inputs are task channels"),
                       ([], "needs --model"),
                       (["--model", str(tmp_path / "plain.npz"), "--speed", "0"], "--speed")):
        r = subprocess.run([sys.executable, "-m", "edged.cli", "send", "--connect",
                            "tcp://127.0.0.1:9", "--events", str(folder), *extra],
                           capture_output=True, text=True, timeout=60, cwd=REPO)
        assert r.returncode == 2 and msg in r.stderr, r.stderr


# --- the real N-MNIST subset -------------------------------------------------------------

@needs_data
def test_real_files_all_read_and_encode():
    from trainer.events import read_labels

    labels = read_labels(DATA)
    assert len(labels.y) == 1000 and labels.classes == tuple(str(k) for k in range(10))
    enc = E.make_encoding("nmnist", 0.001, 340, 2)
    for p in labels.path[::50]:
        ev = E.load(p)
        t, ch = E.encode(ev, enc)
        assert 500 < t.size == ev.t_us.size and ch.max() < E.n_inputs(enc)


@needs_data
def test_shipped_model_on_real_samples_daemon_equals_evaluate(tmp_path):
    from trainer.events import evaluate

    model_path = REPO / "models" / "nmnist.npz"
    if not model_path.is_file():
        pytest.skip("models/nmnist.npz not built yet")
    model = load(model_path)
    folder = tmp_path / "few"
    folder.mkdir()
    rows = (DATA / "labels.csv").read_text().splitlines()
    (folder / "labels.csv").write_text("\n".join(
        [rows[0]] + [r.replace("events/", f"{DATA}/events/") for r in rows[1:9]]) + "\n")
    want = evaluate(model, folder)
    sent, got = replay_and_collect(model, model_path, folder, "--speed", "max")
    assert [d.label for d in got] == [want["predictions"][s["sample_id"]] for s in sent]
    assert want["accuracy"] >= 0.75


def test_outer_folds_are_stratified_and_disjoint():
    from trainer.crossval import outer_folds

    y = np.repeat(np.arange(4), [10, 11, 12, 7])
    folds = outer_folds(y, 5)
    assert sorted(np.concatenate(folds).tolist()) == list(range(len(y)))
    for c in range(4):
        per_fold = [int(np.sum(y[f] == c)) for f in folds]
        assert max(per_fold) - min(per_fold) <= 1


def test_nested_cv_machinery(tmp_path, monkeypatch):
    """``experiment nmnist-cv --quick`` on a small synthetic .bs2 folder: a row per fold
    and seed with the same-fold baselines; the outer fold never reaches tuning."""
    from trainer import crossval

    folder = write_folder(tmp_path / "ev", 16)
    monkeypatch.setitem(crossval.CV_QUICK, "inner_val", 4)
    out = tmp_path / "cv.json"
    doc = crossval.nmnist_cv(out, str(folder), quick=True)
    assert json.loads(out.read_text()) == doc
    assert [(r["fold"], r["seed"]) for r in doc["rows"]] == [(0, 1), (1, 1)]
    for r in doc["rows"]:
        assert r["n"] == 8 and 0 <= r["accuracy"] <= 1 and r["correct"] == round(8 * r["accuracy"])
        assert 0 <= r["binned_count"] <= 1 and 0 <= r["counts"] <= 1 and r["epochs_used"] == 1
    assert {t["fold"] for t in doc["tuning"]} == {0, 1}
    assert "Wilson" in crossval.markdown(doc)
    assert crossval.selected(doc) == {"lr": 0.01, "weight_decay": 0.0, "epochs": 1}


@needs_data
def test_bench_replay_decides_the_recordings():
    """``edged bench replay --limit 20``: a real edged serve decides each recording once."""
    import json
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "edged.cli", "bench", "replay", "--limit", "20",
                        "--events", str(DATA), "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    rows = {row["name"]: row["value"] for row in out["results"]}
    assert out["params"]["decisions"] == 20 and rows["recorded time"] == pytest.approx(6.0)
    assert rows["real-time factor (recorded / wall)"] > 0
    assert 0.5 <= rows["decision accuracy vs labels.csv"] <= 1.0  # the model has seen them
