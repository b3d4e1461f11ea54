"""NIR in and out: NIR's published LIF traces through the kernel, export -> import round
trips, an snnTorch-convention graph against a direct simulation of that convention, and
graphs edged cannot represent refused by node name (``edged.nir_io``)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

nir = pytest.importorskip("nir", reason="nir not installed: pip install 'edged[nir]' (or '.[test]')")

from conftest import ROOT, small_model  # noqa: E402
from edged import neurons  # noqa: E402
from edged.intrinsics import INTRINSICS  # noqa: E402
from edged.model import load, save  # noqa: E402
from edged.nir_io import NIRError, from_graph, lif_intrinsics, read  # noqa: E402
from edged.offline import raster  # noqa: E402

REF = Path(os.environ.get("EDGED_DATA", "/nonexistent")) / "nir_reference"
needs_ref = pytest.mark.skipif(not (REF / "lif_norse.nir").is_file(),
                               reason=f"NIR reference graphs not found at {REF} (set EDGED_DATA)")
DT = 1e-4  # the NIR paper's step for its LIF comparison


def edged(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edged.cli", *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)


def one_error_line(r: subprocess.CompletedProcess, *words: str) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and all(w in lines[0] for w in words), r.stderr
    return lines[0]


# -- NIR's reference neuron through the kernel ----------------------------------------------

def kernel_trace(graph, discretisation: str, steps_input: np.ndarray):
    """v after each step and the spikes of the reference graph's one LIF neuron."""
    affine, lif = graph.nodes["0"], graph.nodes["1"]
    p = lif_intrinsics("1", lif, 1, DT, discretisation)
    net = neurons.net("lif", np.asarray(affine.weight, np.float32).T, np.zeros((1, 1), np.float32),
                      p, p, DT, "value")
    st = neurons.zero_state(net, 1)
    v, s = np.zeros(len(steps_input)), np.zeros(len(steps_input), np.uint8)
    hidden, out = np.zeros(1, np.uint8), np.zeros(1, np.uint8)
    for i, x in enumerate(steps_input):
        neurons.step_layers(net, st, 0, np.uint64(0), i, np.zeros(int(x), np.int64), hidden, out)
        v[i], s[i] = st.hidden.v[0, 0], hidden[0]
    return v, s


@needs_ref
def test_reference_lif_matches_nirs_exact_and_euler_traces():
    graph = read(REF / "lif_norse.nir")
    exact = np.loadtxt(REF / "lif_exact.csv", delimiter=",")
    v, s = kernel_trace(graph, "zoh", exact[:, 0])
    np.testing.assert_array_equal(s, exact[:, 2])
    assert s.sum() == 4
    first = int(np.flatnonzero(s)[0])  # the exact solver resets mid-step; we at the step's end
    np.testing.assert_allclose(v[:first], exact[:first, 1], rtol=1e-5, atol=1e-9)
    for name, scale in (("lif_norse.csv", 1.0), ("lif_snntorch.csv", 2.5e-3 / DT)):
        ref = np.loadtxt(REF / name, delimiter=",")
        v, s = kernel_trace(graph, "euler", ref[:, 0])
        np.testing.assert_array_equal(s, ref[:, 2])
        np.testing.assert_allclose(v * scale, ref[:, 1], rtol=1e-4, atol=1e-6)


@needs_ref
@pytest.mark.parametrize("discretisation, trace", [("zoh", "lif_exact.csv"), ("euler", "lif_norse.csv"),
                                                   ("euler", "lif_snntorch.csv")])
def test_reference_graph_imports_and_runs_to_the_published_spikes(tmp_path, discretisation, trace):
    """One LIF layer: edged's output layer relays it, so both rasters are its spikes."""
    r = edged("nir", "import", str(REF / "lif_norse.nir"), "--dt", "1e-4", "--discretisation",
              discretisation, "--reset", "zero", "--out", str(tmp_path / "m.npz"))
    assert r.returncode == 0, r.stderr
    ref = np.loadtxt(REF / trace, delimiter=",")
    t = np.flatnonzero(ref[:, 0])
    np.savez(tmp_path / "in.npz", t=t, ch=np.zeros_like(t))
    r = edged("run", "--model", str(tmp_path / "m.npz"), "--file", str(tmp_path / "in.npz"),
              "--steps", str(len(ref)), "--raster", str(tmp_path / "r.npz"))
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "r.npz") as z:
        np.testing.assert_array_equal(z["hidden"][:, 0], ref[:, 2])
        np.testing.assert_array_equal(z["output"][:, 0], ref[:, 2])


@needs_ref
@pytest.mark.parametrize("name, node, kind", [
    ("braille_noDelay_bias_zero.nir", "lif1.lif", "CubaLIF"),
    ("braille_noDelay_noBias_subtract.nir", "lif1.lif", "CubaLIF"),
    ("cnn_sinabs.nir", "'0'", "Conv2d"),
    ("two_lif_neurons.nir", "lif1", "v_leak must be 0")])
def test_reference_graphs_edged_cannot_represent_are_refused_by_name(tmp_path, name, node, kind):
    r = edged("nir", "import", str(REF / name), "--dt", "1e-4", "--discretisation", "euler",
              "--reset", "zero", "--out", str(tmp_path / "m.npz"))
    one_error_line(r, name, node, kind)
    assert not (tmp_path / "m.npz").exists()


# -- export -> import -----------------------------------------------------------------------

def spikes(n_in: int, steps: int, rate: float, seed: int):
    t, ch = np.nonzero(np.random.default_rng(seed).random((steps, n_in)) < rate)
    return t.astype(np.int64), ch.astype(np.int64)


def test_export_import_round_trip_is_exact(tmp_path):
    model = small_model("lif", window=64, hop=8)
    save(tmp_path / "m.npz", model)
    r = edged("nir", "export", str(tmp_path / "m.npz"), str(tmp_path / "m.nir"))
    assert r.returncode == 0, r.stderr
    graph = nir.read(tmp_path / "m.nir")
    assert [type(graph.nodes[k]).__name__ for k in ("input", "fc1", "lif1", "fc2", "lif2", "output")] == \
        ["Input", "Linear", "LIF", "Linear", "LIF", "Output"]
    lif1 = graph.nodes["lif1"]
    theta = model.hidden["theta"]
    assert np.all(lif1.v_threshold < theta) and np.all(np.nextafter(lif1.v_threshold, np.float32(1e9)) == theta)
    assert float(graph.metadata["dt"]) == model.dt and graph.metadata["discretisation"] in ("zoh", b"zoh")
    r = edged("nir", "import", str(tmp_path / "m.nir"), "--out", str(tmp_path / "back.npz"))
    assert r.returncode == 0, r.stderr
    back = load(tmp_path / "back.npz")
    for a, b in ((model.w_in, back.w_in), (model.w_out, back.w_out),
                 *((model.hidden[k], back.hidden[k]) for k in model.hidden),
                 *((model.output[k], back.output[k]) for k in model.output)):
        np.testing.assert_array_equal(a, b)
    assert (back.readout, back.classes, back.window, back.hop, back.features, back.reset) == \
        (model.readout, model.classes, model.window, model.hop, model.features, model.reset)
    t, ch = spikes(model.n_in, 2000, 0.05, seed=1)
    a, b = raster(model.net(), t, ch, 2000), raster(back.net(), t, ch, 2000)
    assert a.hidden.sum() > 100 and a.output.sum() > 10
    np.testing.assert_array_equal(a.hidden, b.hidden)
    np.testing.assert_array_equal(a.output, b.output)


def test_subtractive_reset_round_trips(tmp_path):
    model = dataclasses.replace(small_model("lif"), reset="subtract")
    save(tmp_path / "m.npz", model)
    assert edged("nir", "export", str(tmp_path / "m.npz"), str(tmp_path / "m.nir")).returncode == 0
    back = from_graph(read(tmp_path / "m.nir"))
    assert back.reset == "subtract"
    t, ch = spikes(model.n_in, 1000, 0.05, seed=2)
    np.testing.assert_array_equal(raster(model.net(), t, ch, 1000).output,
                                  raster(back.net(), t, ch, 1000).output)


def test_meta_models_export_only_lossy_as_their_lif_case(tmp_path):
    model = small_model("meta")
    save(tmp_path / "m.npz", model)
    one_error_line(edged("nir", "export", str(tmp_path / "m.npz"), str(tmp_path / "m.nir")), "--lossy")
    r = edged("nir", "export", str(tmp_path / "m.npz"), str(tmp_path / "m.nir"), "--lossy")
    assert r.returncode == 0 and "lossy" in r.stderr, r.stderr
    graph = nir.read(tmp_path / "m.nir")
    np.testing.assert_array_equal(graph.metadata["hidden.beta"], model.hidden["beta"])
    back = from_graph(graph)
    assert not back.has_readout and back.neuron == "lif"
    lif_case = {layer: {k: p[k] for k in INTRINSICS["lif"]}
                for layer, p in (("hidden", model.hidden), ("output", model.output))}
    want = neurons.net("lif", model.w_in, model.w_out, lif_case["hidden"], lif_case["output"], model.dt)
    t, ch = spikes(model.n_in, 1000, 0.05, seed=3)
    np.testing.assert_array_equal(raster(want, t, ch, 1000).hidden, raster(back.net(), t, ch, 1000).hidden)


# -- graphs from other frameworks -------------------------------------------------------------

def snntorch_graph(rng, sizes=(12, 40, 5)):
    """Input -> Linear -> Leaky -> Linear -> Leaky -> Output the way snnTorch's
    ``export_to_nir`` writes it: dt = 1e-4, tau = dt / (1 - beta), r = tau / dt."""
    nodes, edges, prev = {"input": nir.Input(input_type={"input": np.array([sizes[0]])})}, [], "input"
    params = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = rng.normal(0.6 if i == 0 else 0.05, 0.5 if i == 0 else 0.3, (b, a)).astype(np.float32)
        beta = rng.uniform(0.8, 0.98, b).astype(np.float32)
        thr = rng.uniform(0.8, 1.2, b).astype(np.float32)
        tau = DT / (1 - beta)
        nodes[f"fc{i}"] = nir.Affine(weight=w, bias=np.zeros(b, np.float32)) if i else nir.Linear(weight=w)
        nodes[f"lif{i}"] = nir.LIF(tau=tau, r=tau / DT, v_leak=np.zeros(b, np.float32),
                                   v_threshold=thr, v_reset=np.zeros(b, np.float32))
        edges += [(prev, f"fc{i}"), (f"fc{i}", f"lif{i}")]
        prev = f"lif{i}"
        params.append((w.astype(np.float64), beta.astype(np.float64), thr.astype(np.float64)))
    nodes["output"] = nir.Output(output_type={"output": np.array([sizes[-1]])})
    edges.append((prev, "output"))
    return nir.NIRGraph(nodes=nodes, edges=edges), params


def snntorch_simulate(params, x: np.ndarray) -> list[np.ndarray]:
    """snnTorch's Leaky with reset_mechanism='zero': mem = beta * mem * (1 - spk_prev) + W x,
    spk = mem > threshold; each layer's spikes drive the next in the same step."""
    mems = [np.zeros(len(beta)) for _, beta, _ in params]
    prev = [np.zeros(len(beta)) for _, beta, _ in params]
    out = [np.zeros((len(x), len(beta)), np.uint8) for _, beta, _ in params]
    for t in range(len(x)):
        inp = x[t].astype(np.float64)
        for k, (w, beta, thr) in enumerate(params):
            mems[k] = beta * mems[k] * (1 - prev[k]) + w @ inp
            prev[k] = (mems[k] > thr).astype(np.float64)
            out[k][t] = prev[k]
            inp = prev[k]
    return out


def test_snntorch_convention_graph_imports_to_identical_spike_trains(tmp_path):
    rng = np.random.default_rng(0)
    graph, params = snntorch_graph(rng)
    nir.write(tmp_path / "snn.nir", graph)
    r = edged("nir", "import", str(tmp_path / "snn.nir"), "--dt", "1e-4", "--discretisation", "euler",
              "--reset", "zero", "--out", str(tmp_path / "m.npz"))
    assert r.returncode == 0 and "no readout" in r.stderr, r.stderr
    x = (rng.random((3000, 12)) < 0.08).astype(np.uint8)
    t, ch = np.nonzero(x)
    np.savez(tmp_path / "in.npz", t=t, ch=ch)
    r = edged("run", "--model", str(tmp_path / "m.npz"), "--file", str(tmp_path / "in.npz"),
              "--steps", "3000", "--raster", str(tmp_path / "r.npz"))
    assert r.returncode == 0, r.stderr
    hidden, output = snntorch_simulate(params, x)
    with np.load(tmp_path / "r.npz") as z:
        assert 0.02 < hidden.mean() < 0.5 and 0.01 < output.mean() < 0.5
        np.testing.assert_array_equal(z["hidden"], hidden)
        np.testing.assert_array_equal(z["output"], output)


def test_scale_and_flatten_fold_into_the_weights():
    rng = np.random.default_rng(1)
    graph, _ = snntorch_graph(rng, (6, 8, 3))
    w0 = np.asarray(graph.nodes["fc0"].weight)
    s = rng.uniform(0.5, 2, 8).astype(np.float32)
    nodes = dict(graph.nodes)
    nodes["flat"] = nir.Flatten(input_type={"input": np.array([6])}, start_dim=0)
    nodes["scale"] = nir.Scale(scale=s)
    edges = [e for e in graph.edges if e not in (("input", "fc0"), ("fc0", "lif0"))]
    edges += [("input", "flat"), ("flat", "fc0"), ("fc0", "scale"), ("scale", "lif0")]
    folded = from_graph(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False), DT, "euler", "zero")
    np.testing.assert_allclose(folded.w_in, (w0 * s[:, None]).T, rtol=1e-6)


def test_graphs_edged_cannot_represent_name_the_node():
    rng = np.random.default_rng(2)
    graph, _ = snntorch_graph(rng, (4, 5, 2))

    def refuse(nodes, edges, *words):
        with pytest.raises(NIRError) as e:
            from_graph(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False), DT, "euler", "zero")
        assert all(w in str(e.value) for w in words), str(e.value)

    nodes, edges = dict(graph.nodes), list(graph.edges)
    refuse(nodes | {"rec": nir.Linear(weight=np.eye(5, dtype=np.float32))},
           edges + [("lif0", "rec"), ("rec", "lif0")], "lif0", "no branching or recurrence")
    refuse(nodes | {"fc1": nir.Affine(weight=np.ones((2, 5), np.float32), bias=np.ones(2, np.float32))},
           edges, "'fc1'", "non-zero bias")
    lif = graph.nodes["lif0"]
    refuse(nodes | {"lif0": nir.LIF(tau=lif.tau, r=lif.r, v_leak=np.full(5, 0.1), v_threshold=lif.v_threshold,
                                    v_reset=lif.v_reset)}, edges, "'lif0'", "v_leak")
    refuse(nodes | {"lif0": nir.IF(r=lif.r, v_threshold=lif.v_threshold, v_reset=lif.v_reset)}, edges,
           "'lif0'", "IF")
    refuse({k: v for k, v in nodes.items() if k not in ("fc0", "lif0", "fc1", "lif1")},
           [("input", "output")], "no LIF layer")
    from edged.nir_io import to_graph

    exported = to_graph(small_model("lif"))
    del exported.metadata["lzc.window"]
    with pytest.raises(NIRError, match="edged metadata is incomplete or malformed"):
        from_graph(exported)
    with pytest.raises(NIRError, match="dt < tau"):
        from_graph(graph, 1.0, "euler", "zero")
    with pytest.raises(NIRError, match="--dt"):
        from_graph(graph)


def test_nir_cli_bad_input(tmp_path):
    (tmp_path / "junk.nir").write_bytes(b"\x89HDF junk")
    save(tmp_path / "m.npz", small_model("lif"))
    one_error_line(edged("nir", "import", str(tmp_path / "junk.nir"), "--dt", "1e-3",
                         "--discretisation", "zoh", "--reset", "zero", "--out", str(tmp_path / "o.npz")),
                   "junk.nir", "not a NIR graph")
    one_error_line(edged("nir", "import", str(tmp_path / "none.nir"), "--out", str(tmp_path / "o.npz")),
                   "no such file")
    one_error_line(edged("nir", "export", str(tmp_path / "m.npz"), str(tmp_path / "no" / "m.nir")),
                   "cannot write")
    graph, _ = snntorch_graph(np.random.default_rng(3), (3, 4, 2))
    nir.write(tmp_path / "g.nir", graph)
    one_error_line(edged("nir", "import", str(tmp_path / "g.nir"), "--dt", "0", "--discretisation",
                         "zoh", "--reset", "zero", "--out", str(tmp_path / "o.npz")), "dt")
