"""Trainer: tasks, the BPTT backward against finite differences, each learning rule,
the readout swap and the ``edged-train`` CLI round trip (real files, real processes)."""

from __future__ import annotations

import json
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest

from edged import neurons
from edged.intrinsics import INTRINSICS, defaults
from trainer import bptt, data, linear
from trainer import params as P

SHORT = {"T": 256}  # short samples keep the rule tests fast; the window follows T


# --- tasks ---------------------------------------------------------------------------

@pytest.mark.parametrize("task", sorted(data.TASKS))
def test_tasks_are_seeded_and_splits_differ(task):
    a = data.make(task, 6, seed=3, **SHORT)
    b = data.make(task, 6, seed=3, **SHORT)
    c = data.make(task, 6, seed=3, split="test", **SHORT)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    assert not np.array_equal(a.x, c.x)
    assert a.x.shape == (6, 256, a.params["n_in"]) and a.x.dtype == np.uint8
    assert set(np.unique(a.x)) <= {0, 1}
    t, ch = data.events(a.x[0])
    assert np.all(np.diff(t) >= 0) and len(t) == a.x[0].sum()


@pytest.mark.parametrize("task", ["poisson-structure", "binary-chunks"])
def test_default_difficulty_is_not_count_separable(task):
    """Logistic regression on per-channel spike counts stays near chance (1/3)."""
    tr, te = data.make(task, 300, 0), data.make(task, 300, 0, split="test")
    floor = linear.accuracy(linear.fit(data.counts(tr), tr.y, 3), data.counts(te), te.y)
    assert floor < 0.45


def test_poisson_rate_count_floor_is_far_from_perfect():
    tr, te = data.make("poisson-rate", 300, 0), data.make("poisson-rate", 300, 0, split="test")
    floor = linear.accuracy(linear.fit(data.counts(tr), tr.y, 4), data.counts(te), te.y)
    assert 0.3 < floor < 0.8


def test_unknown_task_parameter_is_an_error():
    with pytest.raises(ValueError, match="no parameter"):
        data.make("poisson-rate", 2, 0, depth=0.1)


# --- parameterisation ----------------------------------------------------------------

@pytest.mark.parametrize("kind", ["lif", "meta"])
def test_any_raw_value_gives_valid_intrinsics(kind):
    from edged.intrinsics import check_intrinsics

    rng = np.random.default_rng(0)
    for scale in (0.1, 10.0, 1e4):
        raw = {n: rng.normal(0, scale, 50) for n in INTRINSICS[kind]}
        check_intrinsics(kind, {k: v.astype(np.float32) for k, v in P.from_raw(kind, raw).items()})
    values = defaults(kind, 7, rng)
    back = P.from_raw(kind, P.to_raw(kind, values))
    for name in values:
        np.testing.assert_allclose(back[name], values[name], atol=1e-6)


# --- BPTT ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["lif", "meta"])
def test_recorded_forward_is_the_kernels_forward(kind):
    d = data.make("poisson-structure", 3, 0, **SHORT)
    raw = P.init(kind, 32, 24, 3, 0, input_rate=float(d.x.mean()))
    g = bptt.gradient(kind, raw, d.x, d.y)
    net = P.to_net(kind, raw, 1e-3)
    for i in range(3):
        st = neurons.zero_state(net, 1)
        out = np.zeros((256, 3), np.uint8)
        neurons.simulate(net, st, 0, np.uint64(0), *data.events(d.x[i]), 0, out)
        assert np.array_equal(out.sum(0), g.counts[i])
    assert g.hidden_counts.sum() > 0 and g.counts.sum() > 0


def _fd_check(kind: str, reset: str, names: list[str]) -> None:
    """Surrogate-free check: with ``scale=0`` the backward claims the exact derivative of
    the forward with spikes held fixed. A smooth probe loss ``sum c * u`` over both
    layers' pre-reset potentials makes that derivative non-trivial for every parameter;
    central differences agree wherever the perturbation moves no spike (checked: an
    index is used only if FD at 4e-3 and 1e-3 agree, i.e. no discontinuity inside)."""
    rng = np.random.default_rng(1)
    T, B = 200, 2
    x = (rng.random((B, T, 6)) < 0.1).astype(np.uint8)
    y = np.full(B, -1)
    raw = P.init(kind, 6, 5, 3, 1, input_rate=0.1, hidden_rate=0.05)
    ph, po = rng.normal(size=(B, T, 5)), rng.normal(size=(B, T, 3))

    def loss(r):
        return bptt.gradient(kind, r, x, y, reset=reset, scale=0.0, probe_h=ph, probe_o=po).loss.sum()

    g = bptt.gradient(kind, raw, x, y, reset=reset, scale=0.0, probe_h=ph, probe_o=po).raw

    def fd(name, idx, eps):
        rp = {k: v.copy() for k, v in raw.items()}
        rm = {k: v.copy() for k, v in raw.items()}
        rp[name][idx] += eps
        rm[name][idx] -= eps
        return (loss(rp) - loss(rm)) / (2 * eps)

    for name in names:
        checked = 0
        for flat in np.argsort(-np.abs(g[name]).ravel())[:4]:
            idx = np.unravel_index(flat, raw[name].shape)
            if abs(g[name][idx]) < 1e-6:
                break
            a, b = fd(name, idx, 4e-3), fd(name, idx, 1e-3)
            if abs(a - b) > 0.1 * abs(a) + 1e-2:
                continue  # a spike moved inside [-eps, eps]: not a smooth point
            # the forward is float32: FD noise is ~1e-3 here, so compare at the larger eps
            np.testing.assert_allclose(g[name][idx], a, rtol=0.02, atol=3e-3, err_msg=name)
            checked += 1
        assert checked, f"no smooth, non-zero gradient entry to check for {name}"


@pytest.mark.parametrize("kind", ["lif", "meta"])
def test_gradient_matches_finite_differences_for_every_parameter(kind):
    """Value reset covers the weights, time constants, gain, v_reset, kappa and tau_r;
    threshold, beta and tau_a act on the smooth path only through the subtractive reset
    (``v <- u - theta``), so they are checked with it."""
    names = INTRINSICS[kind]
    value = ["w_in", "w_out"] + [f"{layer}.{n}" for layer in ("hidden", "output")
                                 for n in names if n not in ("theta", "beta", "tau_a")]
    subtract = [f"{layer}.{n}" for layer in ("hidden", "output")
                for n in names if n in ("theta", "beta", "tau_a")]
    _fd_check(kind, "value", value)
    _fd_check(kind, "subtract", subtract)


def test_surrogate_reaches_thresholds():
    """With the surrogate on, the count loss has a gradient on every threshold."""
    d = data.make("poisson-structure", 4, 0, **SHORT)
    raw = P.init("meta", 32, 16, 3, 0, input_rate=float(d.x.mean()))
    g = bptt.gradient("meta", raw, d.x, d.y, scale=0.3).raw
    assert np.all(np.abs(g["output.theta"]) > 0)
    assert np.count_nonzero(g["hidden.theta"]) > 8


# --- each rule learns ----------------------------------------------------------------

TINY = {"T": 256, "depth": 1.0, "jitter": 0.05, "shared": 1.0}


@pytest.fixture(scope="module")
def tiny():
    tr = data.make("poisson-structure", 60, 0, **TINY)
    return tr, P.init("meta", 32, 16, 3, 0, input_rate=float(tr.x.mean()))


@pytest.mark.parametrize("learn", [False, True])
def test_bptt_lowers_the_loss(tiny, learn):
    tr, raw0 = tiny
    cfg = bptt.Config(epochs=4, batch=10, lr=0.03, lr_intrinsics=0.03)
    raw, hist = bptt.train("meta", raw0, tr.x, tr.y, learn, cfg, 0)
    before = bptt.gradient("meta", raw0, tr.x, tr.y).loss.mean()
    after = bptt.gradient("meta", raw, tr.x, tr.y).loss.mean()
    assert after < before - 0.02
    changed = not np.array_equal(raw["hidden.tau"], raw0["hidden.tau"])
    assert changed == learn


def test_bptt_trains_escape_noise_neurons(tiny):
    """meta-esc: the loss falls (same noise keys before and after) and the noise
    intrinsics take a gradient through the spike probability."""
    tr, _ = tiny
    raw0 = P.init("meta-esc", 32, 16, 3, 0, input_rate=float(tr.x.mean()))
    keys = np.arange(len(tr.y), dtype=np.uint64) + np.uint64(1 << 40)
    g = bptt.gradient("meta-esc", raw0, tr.x, tr.y, keys=keys, seed=3)
    for name in ("hidden.delta_u", "output.delta_u", "hidden.rho0", "output.rho0"):
        assert np.count_nonzero(g.raw[name]) > 0, name
    assert not np.any(bptt.gradient("meta-esc", raw0, tr.x, tr.y, keys=keys, seed=3, scale=0.0).raw["output.rho0"])
    raw, _ = bptt.train("meta-esc", raw0, tr.x, tr.y, True, bptt.Config(epochs=4, batch=10, lr=0.03,
                                                                        lr_intrinsics=0.03), 3)
    after = bptt.gradient("meta-esc", raw, tr.x, tr.y, keys=keys, seed=3)
    assert after.loss.mean() < g.loss.mean() - 0.02
    assert not np.array_equal(raw["output.delta_u"], raw0["output.delta_u"])


@pytest.mark.parametrize("learn", [False, True])
def test_tempotron_reduces_errors(tiny, learn):
    from trainer import tempotron

    tr, raw0 = tiny
    raw, hist = tempotron.train("meta", raw0, tr.x, tr.y, learn, tempotron.Config(epochs=4, lr=0.1), 0)
    assert hist[-1]["errors_per_sample"] < hist[0]["errors_per_sample"]
    assert np.array_equal(raw["w_in"], raw0["w_in"])  # hidden layer untouched
    assert (not np.array_equal(raw["output.theta"], raw0["output.theta"])) == learn


def test_stdp_moves_outputs_towards_the_teacher(tiny):
    """Teacher-forced output STDP: each output neuron becomes more selective for its
    label (mean count on its class minus mean count on the others, per mean count)."""
    from trainer import stdp

    tr, raw0 = tiny

    def selectivity(raw):
        c = bptt.gradient("meta", raw, tr.x, tr.y).counts
        own = [c[tr.y == k, k].mean() - c[tr.y != k, k].mean() for k in range(3)]
        return np.mean(own) / (c.mean() + 1)

    raw, hist = stdp.train("meta", raw0, tr.x, tr.y, False, stdp.Config(epochs=3, lr_out=0.1), 0)
    assert selectivity(raw) > selectivity(raw0) + 0.1
    assert not np.array_equal(raw["w_in"], raw0["w_in"])
    assert np.array_equal(raw["hidden.theta"], raw0["hidden.theta"])
    raw, hist = stdp.train("meta", raw0, tr.x, tr.y, True, stdp.Config(epochs=3, lr_out=0.1), 0)
    assert selectivity(raw) > selectivity(raw0) + 0.03
    assert not np.array_equal(raw["hidden.theta"], raw0["hidden.theta"])  # IP ran


def test_stdp_intrinsic_plasticity_moves_rates_to_target():
    from trainer import stdp

    tr = data.make("poisson-structure", 32, 1, **TINY)
    raw0 = P.init("lif", 32, 16, 3, 0, input_rate=float(tr.x.mean()), drive=1.5)
    cfg = stdp.Config(epochs=6, batch=8, lr=0.0, lr_out=0.0, eta_theta=0.4, eta_tau=0.2)
    _, hist = stdp.train("lif", raw0, tr.x, tr.y, True, cfg, 0)
    err = [abs(h["hidden_rate"] - cfg.target_hidden) for h in hist]
    assert err[-1] < 0.5 * err[0]


# --- readout -------------------------------------------------------------------------

def test_sklearn_readout_via_skl2onnx_drops_in():
    skl2onnx = pytest.importorskip("skl2onnx")
    from sklearn.linear_model import LogisticRegression
    from skl2onnx.common.data_types import FloatTensorType

    from edged.model import check_readout
    from edged.readout import Readout

    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6)).astype(np.float32)
    y = np.argmax(x[:, :3] + 0.3 * rng.normal(size=(120, 3)), axis=1)
    clf = LogisticRegression(max_iter=500).fit(x, y)
    onx = skl2onnx.convert_sklearn(clf, initial_types=[("features", FloatTensorType([None, 6]))],
                                   options={id(clf): {"zipmap": False}}, target_opset=17)
    graph = onx.SerializeToString()  # label (int64) first, probabilities second
    check_readout(graph, 6, 3)
    scores = Readout(graph).scores(x)
    assert scores.shape == (120, 3)
    np.testing.assert_allclose(scores, clf.predict_proba(x), atol=1e-5)


def test_numpy_logistic_readout_matches_its_onnx_graph():
    from edged.readout import Readout

    rng = np.random.default_rng(2)
    x = rng.normal(size=(90, 4)) * [1, 10, 0.1, 1] + [0, 5, 0, 0]
    y = np.argmax((x - [0, 5, 0, 0]) / [1, 10, 0.1, 1] @ rng.normal(size=(4, 3)), axis=1)
    fit = linear.fit(x, y, 3)
    assert linear.accuracy(fit, x, y) > 0.9
    np.testing.assert_allclose(Readout(fit.onnx()).scores(x), fit.scores(x), rtol=1e-4, atol=1e-4)


# --- CLI round trip ------------------------------------------------------------------

def _cli(*args, check=True):
    p = subprocess.run([sys.executable, "-m", "trainer.cli", *args], capture_output=True,
                       text=True, timeout=300)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def test_run_then_evaluate_round_trip(tmp_path):
    from edged.model import load

    path = tmp_path / "m.npz"
    out = _cli("run", "--task", "poisson-structure", "--set", "T=256", "--set", "depth=1.0",
               "--set", "shared=1.0", "--neuron", "lif", "--rule", "bptt", "--hidden", "16",
               "--epochs", "2", "--n-train", "60", "--n-test", "30", "--seed", "4",
               "--out", str(path))
    run = json.loads(out.stdout)
    m = load(path)
    assert m.provenance["task"] == "poisson-structure" and m.provenance["seed"] == 4
    assert m.provenance["task_params"]["T"] == 256 == m.window
    assert m.provenance["rule"] == "bptt" and m.provenance["intrinsics"] == "learned"
    assert run["accuracy"] == m.provenance["accuracy"]
    ev = [json.loads(_cli("evaluate", "--model", str(path), "--seed", "9", "--n", "30",
                          "--json").stdout) for _ in range(2)]
    assert ev[0] == ev[1]  # deterministic
    assert ev[0]["n"] == 30 and 0 <= ev[0]["accuracy"] <= 1
    assert sum(c["n"] for c in ev[0]["per_class"].values()) == 30
    assert sum(c["correct"] for c in ev[0]["per_class"].values()) == round(30 * ev[0]["accuracy"])
    from trainer.baselines import NAMES

    assert set(ev[0]["baselines"]) == set(NAMES)  # scored on the same 30 samples
    assert all(0 <= a <= 1 for a in ev[0]["baselines"].values())


def test_run_early_stops_on_validation(tmp_path):
    path = tmp_path / "m.npz"
    out = json.loads(_cli("run", "--task", "poisson-structure", "--set", "T=128", "--neuron", "lif",
                          "--hidden", "8", "--epochs", "6", "--n-train", "40", "--n-test", "20",
                          "--n-val", "20", "--patience", "1", "--out", str(path)).stdout)
    assert 1 <= out["epochs_used"] <= out["epochs_run"] <= 6
    assert out["epochs_run"] == 6 or out["epochs_run"] == out["epochs_used"] + 1
    assert 0 <= out["validation_accuracy"] <= 1


def test_cli_errors_are_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    for args in (("evaluate", "--model", str(bad), "--seed", "1"),
                 ("run", "--set", "depth", "--out", str(tmp_path / "x.npz")),
                 ("run", "--set", "nosuch=1", "--out", str(tmp_path / "x.npz")),
                 ("evaluate", "--model", str(tmp_path / "missing.npz"), "--seed", "1")):
        p = _cli(*args, check=False)
        assert p.returncode == 2, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1 and p.stderr.startswith("edged-train: ")


def test_paper_experiment_protocol(tmp_path, monkeypatch):
    """The protocol runs end to end (a miniature of ``experiment paper --quick``): three
    conditions x two seeds per cell with early stopping, baselines on the same splits,
    atomic rewrites; ``resume`` reruns nothing that is recorded and finishes what is not."""
    from trainer import experiment

    monkeypatch.setitem(experiment.QUICK, "task_params", {"T": 256, "depth": 1.0, "shared": 1.0})
    out = tmp_path / "table.json"
    doc = experiment.paper(out, quick=True, rules=("bptt", "stdp"), neurons=("lif",))
    assert json.loads(out.read_text()) == doc
    rows = doc["rows"]
    assert len(rows) == 2 * 4 * 2
    for r in rows:
        assert {"neuron", "rule", "intrinsics", "seed", "accuracy", "task", "epochs_used",
                "baselines"} <= set(r)
        assert 0 <= r["accuracy"] <= 1 and r["task"] == "poisson-structure"
        assert 1 <= r["epochs_used"] <= r["epoch_cap"]
        assert set(r["baselines"]) == {"count", "binned-count"}
    assert {r["intrinsics"] for r in rows} == {"fixed", "fixed-tuned", "learned", "tuned-learned"}
    tl = next(r for r in rows if r["intrinsics"] == "tuned-learned" and r["rule"] == "bptt")
    ft = next(r for r in rows if r["intrinsics"] == "fixed-tuned" and r["rule"] == "bptt")
    assert tl["centres"] == ft["centres"] and tl["hidden"] == ft["hidden"]
    assert {t["stage"] for t in doc["tuning"]} == {"size-lr", "intrinsics"}
    table = experiment.markdown(doc)
    assert "| lif | bptt |" in table and "| lif | stdp |" in table

    def no_run(spec):
        raise AssertionError(f"resume reran {spec}")

    monkeypatch.setattr(experiment, "run", no_run)
    assert experiment.paper(out, quick=True, rules=("bptt", "stdp"), neurons=("lif",),
                            resume=True)["rows"] == rows
    cut = dict(doc, rows=rows[:-1])  # a run stopped before its last row
    out.write_text(json.dumps(cut))
    monkeypatch.undo()
    monkeypatch.setitem(experiment.QUICK, "task_params", {"T": 256, "depth": 1.0, "shared": 1.0})
    again = experiment.paper(out, quick=True, rules=("bptt", "stdp"), neurons=("lif",), resume=True)
    timeless = lambda rs: [{k: v for k, v in r.items() if k != "train_seconds"} for r in rs]
    assert timeless(again["rows"]) == timeless(rows)  # deterministic: the missing row comes back

    ab = experiment.ablation(tmp_path / "ablation.json", out, quick=True, neurons=("lif",))
    learn = {r["learn"] for r in ab["rows"] if r["study"] == "learn"}
    assert learn == set(experiment.ABLATION["lif"])
    budget = [r for r in ab["rows"] if r["study"] == "budget"]
    assert {(r["intrinsics"], r["epochs"]) for r in budget} == {
        (c, e) for c in ("fixed-tuned", "learned") for e in (1, 2)}
    assert all(r["epochs_used"] == r["epochs"] for r in budget)  # no early stopping
    table = experiment.ablation_markdown(ab, again)
    assert "| lif | theta |" in table and "| lif | 2 |" in table


def test_a_protocol_may_grow_but_not_change():
    from trainer.experiment import extends

    old = {"lr": {"bptt": [0.01]}, "seeds": 5}
    assert extends(old, {"lr": {"bptt": [0.01], "stdp-triesch": [0.1]}, "seeds": 5, "x": 1})
    assert not extends(old, {"lr": {"bptt": [0.03]}, "seeds": 5})
    assert not extends(old, {"lr": {"bptt": [0.01]}})
    assert not extends(None, old)


def test_grid_widens_at_edges():
    from trainer.experiment import widen

    assert widen((16, 32, 64), 1) == (16, 32, 64)
    assert widen((16, 32, 64), 2, (8, 256), integer=True) == (16, 32, 64, 128)
    assert widen((16, 32, 64), 0, (8, 256), integer=True) == (8, 16, 32, 64)
    assert widen((8, 16, 32), 0, (8, 256), integer=True) == (8, 16, 32)  # at the limit
    assert widen((0.003, 0.01, 0.03), 2) == pytest.approx((0.003, 0.01, 0.03, 0.09))


def test_motif_surrogate_classes_share_intervals():
    """The surrogate class is the ISI shuffle of the same intervals (same count, same ISI
    distribution, sample by sample); the motif class is made of recurring words."""
    p = data.task_params("motif-surrogate")
    motif = data.motif_intervals(p, 0, np.random.default_rng(5))
    shuffled = data.motif_intervals(p, 1, np.random.default_rng(5))
    assert sorted(motif) == sorted(shuffled) and not np.array_equal(motif, shuffled)
    words = {tuple(w) for w in motif.reshape(-1, p["word_len"])}
    assert len(words) <= p["words"]
    d = data.make("motif-surrogate", 40, 1, "train")
    rate = [d.x[d.y == k].mean() for k in (0, 1)]
    assert abs(rate[0] - rate[1]) < 0.1 * rate[0]


def test_baselines_fit_tune_and_score():
    """Every baseline is fitted on train, tuned on validation and scored on test; on a
    rate task the count features beat chance, and names outside the list are errors."""
    from trainer import baselines as B

    split = lambda name, n: (lambda d: B.Split(d.x, d.y))(
        data.make("poisson-rate", n, 0, name, step=1.0, jitter=0.1, T=256))
    res = B.score(split("train", 60), split("validation", 40), split("test", 60), 4)
    assert set(res) == set(B.NAMES)
    for r in res.values():
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["validation_accuracy"] <= 1 and r["chosen"]
    assert res["count"]["accuracy"] > 0.6
    with pytest.raises(ValueError, match="unknown baselines"):
        B.score(split("train", 8), split("validation", 8), split("test", 8), 4, ("nope",))


def test_surrogate_experiment_rows(tmp_path):
    from trainer import experiment

    doc = experiment.surrogate(tmp_path / "s.json", quick=True)
    models = {(r["task"], r["model"]) for r in doc["rows"]}
    assert {("motif-surrogate", m) for m in ("snn-lzc", "count", "input-lzc")} <= models
    assert all({"task", "model", "seed", "accuracy"} <= set(r) for r in doc["rows"])
    assert "| motif-surrogate | input-lzc |" in experiment.surrogate_markdown(doc)


def test_descent_experiment_rows_and_resume(tmp_path):
    """The descent check runs end to end; each step's verdict is the condition on its own
    numbers; a resumed run recomputes nothing."""
    from trainer import descent

    doc = descent.run(tmp_path / "d.json", quick=True)
    assert sorted((r["eta_regime"], r["gradient"]) for r in doc["rows"]) == [
        ("large", "surrogate"), ("small", "finite-difference"), ("small", "surrogate")]
    for r in doc["rows"]:
        assert r["L_hat"] > 0 and r["eta"] == pytest.approx(r["eta_times_L_hat"] / r["L_hat"])
        assert -1 <= r.get("grad_cosine", 0) <= 1 and 0 <= r["fraction_satisfied"] <= 1
        for s in r["steps"]:
            assert s["satisfied"] == (s["loss_after"] <= s["loss"] - r["eta"] / 2 * s["grad_sq"])
    again = descent.run(tmp_path / "d.json", quick=True, resume=True)
    assert again["rows"] == doc["rows"]
    table = descent.markdown(doc)
    assert "| small | 0.5 | surrogate | 1 |" in table and "| small | 0.5 | finite-difference | 1 |" in table
    # a document from before the control gains only the control's rows on --resume
    old = dict(doc, rows=[{k: v for k, v in r.items() if k != "gradient"} for r in doc["rows"]
                          if r["gradient"] == "surrogate"])
    (tmp_path / "d.json").write_text(json.dumps(old))
    more = descent.run(tmp_path / "d.json", quick=True, resume=True)
    assert more["rows"][:2] == old["rows"] and len(more["rows"]) == 3
    assert more["rows"][2]["gradient"] == "finite-difference"
    assert more["rows"][2]["L_hat"] == old["rows"][0]["L_hat"]


def test_paired_statistics():
    from trainer import stats

    s = stats.paired([0.8, 0.9, 0.85, 0.95, 0.9], [0.7, 0.8, 0.8, 0.85, 0.8])
    assert s["n"] == 5 and s["mean_diff"] == pytest.approx(0.09)
    assert s["ci95"][0] < 0.09 < s["ci95"][1] and s["t_p"] < 0.01
    assert stats.summary([1.0, 2.0, 3.0])["sd"] == pytest.approx(1.0)  # ddof 1
    lo, hi = stats.wilson(94, 100)
    assert lo < 0.94 < hi and hi - lo < 0.11


@pytest.mark.parametrize("factor", [1e-3, 30.0])
def test_calibrate_brings_silent_or_saturated_layers_into_band(tiny, factor):
    """Weights a thousand times too weak (silent) or far too strong (saturated) are
    scaled until both layers fire within the band on the training data."""
    tr, raw0 = tiny
    bad = dict(raw0, w_in=raw0["w_in"] * factor, w_out=raw0["w_out"] * factor)
    raw, info = bptt.calibrate("meta", bad, tr.x)
    lo, hi = bptt.RATE_BAND_HZ
    assert lo <= info["hidden_hz"] <= hi and lo <= info["output_hz"] <= hi
    assert (info["scale_in"] > 1) == (factor < 1)
    np.testing.assert_allclose(raw["w_in"], bad["w_in"] * info["scale_in"])
    assert raw["hidden.tau"] is not bad["hidden.tau"] and np.array_equal(raw["hidden.tau"], bad["hidden.tau"])


def test_health_warns_about_silent_saturated_and_flat_runs():
    ok = [{"loss": 1.0 - 0.1 * i, "hidden_hz": 10.0, "output_hz": 20.0} for i in range(4)]
    assert bptt.health(ok) == []
    silent = ok[:-1] + [ok[-1] | {"output_hz": 0.0}]
    assert any("output layer is silent" in w for w in bptt.health(silent))
    hot = ok[:-1] + [ok[-1] | {"hidden_hz": 900.0}]
    assert any("hidden layer is saturated" in w for w in bptt.health(hot))
    flat = [h | {"loss": 0.69} for h in ok]
    assert any("loss did not fall" in w for w in bptt.health(flat))


def test_experiment_cli_errors_and_table_only(tmp_path):
    missing = str(tmp_path / "none.json")
    for args in (("experiment", "nope"), ("experiment", "paper", "--seeds", "1"),
                 ("experiment", "paper", "--rules", "bptt,hebb"),
                 ("experiment", "paper", "--table-only", "--out", missing),
                 ("experiment", "nmnist-cv", "--out", missing),
                 ("experiment", "ablation", "--table", missing, "--out", missing)):
        p = _cli(*args, check=False)
        assert p.returncode == 2, (args, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1 and p.stderr.startswith("edged-train: ")
    shipped = Path(__file__).resolve().parent.parent / "models/experiments/surrogate.json"
    p = _cli("experiment", "surrogate", "--table-only", "--out", str(shipped))
    assert "| motif-surrogate | input-lzc |" in p.stdout


def test_stdp_homeostasis_variants():
    """own-rate keeps each neuron near its own initial rate where batch-rate pulls the
    layer to the shared set point; triesch moves the mean towards its set point and
    adapts the gain; kwta changes only the k winners' incoming weights."""
    from trainer import stdp

    tr = data.make("poisson-structure", 32, 1, **TINY)
    raw0 = P.init("lif", 32, 16, 3, 0, input_rate=float(tr.x.mean()), drive=1.5)
    rates = lambda r: bptt.gradient("lif", r, tr.x, np.full(len(tr.y), -1), lam=0.0).hidden_counts.mean()
    base = stdp.Config(epochs=4, batch=8, lr=0.0, lr_out=0.0, eta_theta=0.3, eta_tau=0.1)
    r_batch, _ = stdp.train("lif", raw0, tr.x, tr.y, True, base, 0)
    r_own, _ = stdp.train("lif", raw0, tr.x, tr.y, True, base._replace(homeostasis="own-rate"), 0)
    start = rates(raw0)
    assert abs(rates(r_own) - start) < 0.25 * start  # stays near its own rate
    assert abs(rates(r_batch) / (16 * 256) - base.target_hidden) < abs(start / (16 * 256) - base.target_hidden)
    r_tri, hist = stdp.train("lif", raw0, tr.x, tr.y, True, base._replace(homeostasis="triesch"), 0)
    assert not np.array_equal(r_tri["hidden.R"], raw0["hidden.R"])
    assert abs(hist[-1]["hidden_rate"] - base.target_hidden) < abs(hist[0]["hidden_rate"] - base.target_hidden)
    one = stdp.Config(epochs=1, batch=1, lr=0.05, lr_out=0.0, kwta=2)
    r_k, _ = stdp.train("lif", raw0, tr.x[:1], tr.y[:1] * 0 + 2, False, one, 0)
    changed = np.flatnonzero(np.any(r_k["w_in"] != raw0["w_in"], axis=0))
    assert 1 <= len(changed) <= 2
    with pytest.raises(ValueError, match="homeostasis"):
        stdp.train("lif", raw0, tr.x, tr.y, True, base._replace(homeostasis="nope"), 0)


def test_reward_modulated_stdp_follows_the_third_factor():
    """stdp-reward: a sample the output layer gets right (reward 1 against the running mean
    0.5) moves the weights as plain STDP does; one it gets wrong moves them the other way;
    batch-rate homeostasis has no per-sample error to modulate."""
    from trainer import stdp

    tr = data.make("poisson-structure", 4, 1, **TINY)
    raw0 = P.init("lif", 32, 16, 3, 0, input_rate=float(tr.x.mean()), drive=1.5)
    x, label = tr.x[:1], np.array([2])  # (stdp reads the class count off the labels)
    spikes = bptt.gradient("lif", raw0, x, np.zeros(1, np.int64), lam=0.0).counts[0]
    top = int(np.argmax(spikes))

    def output_order(first: int) -> dict:  # the same net with output neuron ``first`` last
        order = [k for k in range(3) if k != first] + [first]
        return {k: (v[..., order] if k == "w_out" or k.startswith("output.") else v) for k, v in raw0.items()}

    one = stdp.Config(epochs=1, batch=1, lr=0.05, lr_out=0.05, homeostasis="sample-rate")
    move = {}
    for name, first, cfg in (("plain", top, one), ("right", top, one._replace(modulation="reward")),
                             ("wrong", (top + 1) % 3, one._replace(modulation="reward"))):
        raw = output_order(first)
        r, _ = stdp.train("lif", raw, x, label, False, cfg, 0)
        move[name] = (r["w_in"] - raw["w_in"]).ravel()
    cos = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert cos(move["right"], move["plain"]) > 0.9
    assert cos(move["wrong"], move["plain"]) < -0.9
    with pytest.raises(ValueError, match="per-sample"):
        stdp.train("lif", raw0, x, label, True, one._replace(homeostasis="batch-rate", modulation="reward"), 0)


def test_multi_spike_tempotron_trains_counts_and_adaptation(tiny):
    """The multi-spike rule lowers the count error, and (unlike the single-spike rule,
    whose error times carry no adaptation) moves beta and tau_a; the hybrid variant also
    moves the hidden intrinsics, never the hidden weights."""
    from trainer import tempotron

    tr, raw0 = tiny
    cfg = tempotron.Config(epochs=4, lr=0.05, mode="multi", target_spikes=4, hidden="surrogate")
    raw, hist = tempotron.train("meta", raw0, tr.x, tr.y, True, cfg, 0)
    assert hist[-1]["errors_per_sample"] < 0.9 * hist[0]["errors_per_sample"]
    for name in ("output.beta", "output.tau_a", "hidden.tau"):
        assert not np.array_equal(raw[name], raw0[name]), name
    assert np.array_equal(raw["w_in"], raw0["w_in"])
    single, _ = tempotron.train("meta", raw0, tr.x, tr.y, True, tempotron.Config(epochs=2), 0)
    assert np.array_equal(single["output.beta"], raw0["output.beta"])


def test_fixed_tuned_steps_past_edges_and_retunes_its_rate(tmp_path, monkeypatch):
    """fixed-tuned: a design optimum on an edge is stepped beyond (within limits) until it
    stops improving, then the weights' rate is re-tuned there; homeostasis-only variants
    take fixed and fixed-tuned from their base rule; a row whose tuned choice moved is
    rerun, the others are kept."""
    from trainer import experiment

    calls = []

    def fake_run(spec):  # peaks at tau 5 ms, theta 1; at lr 0.09 with defaults, else 0.06
        calls.append(spec)
        c = spec.centres
        score = -abs(np.log2(c.get("tau", 0.02) / 0.005)) - abs(np.log2(c.get("theta", 1.0)))
        score -= abs(np.log2(spec.lr / (0.06 if c else 0.09)))
        m = {"validation_accuracy": 0.9 + score / 100, "accuracy": 0.9 + score / 100,
             "epochs_used": 1, "epochs_run": 1, "train_seconds": 0.0,
             "nearest_mean_lzc_accuracy": 0.5}
        return None, m, None

    monkeypatch.setattr(experiment, "run", fake_run)
    monkeypatch.setattr(experiment, "_baselines", lambda rn, p, seed: {"count": 0.3})
    p = experiment.FULL | {"seeds": 2, "fixed_tuned": {"lif": experiment.FULL["fixed_tuned"]["lif"]}}
    monkeypatch.setattr(experiment, "FULL", p)
    out = tmp_path / "t.json"
    doc = experiment.paper(out, rules=("stdp", "stdp-sample"), neurons=("lif",))
    ft = [r for r in doc["rows"] if r["intrinsics"] == "fixed-tuned"]
    assert {r["rule"] for r in doc["rows"] if r["intrinsics"] in ("fixed", "fixed-tuned")} == {"stdp"}
    for c in ("learned", "tuned-learned"):
        assert {r["rule"] for r in doc["rows"] if r["intrinsics"] == c} == {"stdp", "stdp-sample"}
    assert all(r["centres"] == {"tau": 0.005, "theta": 1.0} for r in ft)  # one step past 10 ms
    fixed = [r for r in doc["rows"] if r["intrinsics"] == "fixed"]
    assert fixed[0]["lr"] == pytest.approx(0.09)
    assert ft[0]["lr"] == pytest.approx(0.045)  # re-tuned: half the fixed condition's rate
    assert "| lif | stdp-sample |" in experiment.markdown(doc)
    tried = {r["centres"]["tau"] for r in doc["tuning"] if r["intrinsics"] == "fixed-tuned"}
    assert tried == {0.0025, 0.005, 0.01, 0.02, 0.04}  # 2.5 ms: the step that did not help

    stale = json.loads(out.read_text())
    for r in stale["rows"]:
        if r["intrinsics"] == "fixed-tuned":
            r["centres"] = {"tau": 0.01, "theta": 2.0}
    out.write_text(json.dumps(stale))
    calls.clear()
    doc = experiment.paper(out, rules=("stdp", "stdp-sample"), neurons=("lif",), resume=True)
    assert [s.intrinsics for s in calls] == ["fixed-tuned"] * 2  # only the moved rows
    assert len(doc["rows"]) == len(stale["rows"])
