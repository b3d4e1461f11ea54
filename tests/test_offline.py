"""``edged run``: offline decisions equal the daemon's, rasters agree with the engine, bad
input is refused in one line; models without readout load, run, and are refused by serve."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time

import numpy as np
import zmq

from conftest import ROOT, join, small_model, start_serve
from edged.model import load, save

TIMEOUT = 60


def edged(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edged.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def spike_file(path, n_in: int, steps: int, rate: float, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.random((steps, n_in)) < rate
    t, ch = np.nonzero(x)
    np.savez(path, t=t.astype(np.int64), ch=ch.astype(np.int64))
    return t, ch


def test_run_decisions_equal_the_daemons(tmp_path):
    from edged.client import Sender, Subscriber

    model_path, spikes = tmp_path / "m.npz", tmp_path / "s.npz"
    save(model_path, small_model(window=64, hop=8))
    t, _ = spike_file(spikes, 8, 700, 0.05, seed=1)
    steps = int(t[-1]) + 1  # where `edged send --file` leaves the stream's clock
    proc, (ingest, publish, _), _ = start_serve(model_path)
    ctx = zmq.Context()
    try:
        with Sender(ingest, context=ctx, linger=0) as tx, Subscriber(publish, context=ctx) as rx:
            join(tx, rx, load(model_path))
            sent = edged("send", "--connect", ingest, "--file", str(spikes), "--stream", "rec",
                         "--rate", "0")
            assert sent.returncode == 0, sent.stderr
            offline = edged("run", "--model", str(model_path), "--file", str(spikes), "--steps",
                            str(steps), "--stream", "rec", "--json")
            assert offline.returncode == 0, offline.stderr
            want = [json.loads(line) for line in offline.stdout.splitlines()]
            assert len(want) == (steps - 64) // 8 + 1 > 50
            got, deadline = [], time.monotonic() + TIMEOUT
            while len(got) < len(want) and time.monotonic() < deadline:
                d = rx.recv(1.0)
                if d is not None and d.stream == "rec":
                    got.append(d)
        assert [(d.seq, d.t, d.label, d.class_id) for d in got] == \
            [(w["seq"], w["t"], w["label"], w["class"]) for w in want]
        np.testing.assert_allclose([d.scores for d in got], [w["scores"] for w in want], rtol=1e-5)
        np.testing.assert_allclose([d.lzc for d in got], [w["lzc"] for w in want], rtol=1e-6)
        assert {w["model"] for w in want} == {d.model for d in got} == {load(model_path).sha256}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
        proc.stdout.close()
        ctx.term()


def test_raster_agrees_with_the_engine(tmp_path):
    from edged.engine import Engine

    model = small_model(window=64, hop=8)
    save(tmp_path / "m.npz", model)
    t, ch = spike_file(tmp_path / "s.npz", 8, 512, 0.05, seed=2)
    r = edged("run", "--model", str(tmp_path / "m.npz"), "--file", str(tmp_path / "s.npz"),
              "--steps", "512", "--raster", str(tmp_path / "r.npz"))
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "r.npz") as z:
        hidden, output = z["hidden"], z["output"]
    assert hidden.dtype == output.dtype == np.uint8
    assert hidden.shape == (512, 16) and output.shape == (512, 3)
    assert 0 < hidden.mean() < 1 and 0 < output.mean() < 1
    d = Engine.for_model(model).advance(0, t, ch, 512)
    windows = np.array([output[end - 64:end].sum(0) for end in d.t])
    np.testing.assert_array_equal(windows, d.spikes)
    assert len(r.stdout.splitlines()) == len(d.t)  # one text line per decision


def test_shipped_escape_noise_model_is_keyed_by_stream(tmp_path):
    """models/meta-esc.npz: the same stream id gives the same spikes and decisions on every
    run; another id draws other numbers."""
    model = ROOT / "models" / "meta-esc.npz"
    spike_file(tmp_path / "s.npz", 32, 1100, 0.02, seed=4)
    runs = {}
    for name, stream in (("a", "cam-a"), ("again", "cam-a"), ("b", "cam-b")):
        r = edged("run", "--model", str(model), "--file", str(tmp_path / "s.npz"), "--steps", "1100",
                  "--stream", stream, "--json", "--raster", str(tmp_path / f"{name}.npz"))
        assert r.returncode == 0, r.stderr
        with np.load(tmp_path / f"{name}.npz") as z:
            runs[name] = (r.stdout.replace(stream, ""), z["hidden"].copy())
    assert runs["a"][0] == runs["again"][0] and np.array_equal(runs["a"][1], runs["again"][1])
    assert not np.array_equal(runs["a"][1], runs["b"][1])


def test_run_refuses_bad_input_in_one_line(tmp_path):
    save(tmp_path / "m.npz", small_model())
    spike_file(tmp_path / "s.npz", 8, 100, 0.1, seed=3)
    np.savez(tmp_path / "wide.npz", t=np.array([0, 5]), ch=np.array([1, 8]))
    np.savez(tmp_path / "float.npz", t=np.array([0.5]), ch=np.array([1]))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    m = str(tmp_path / "m.npz")
    for args, msg in (
            (["--file", str(tmp_path / "wide.npz"), "--steps", "10"], "event 1 (t=5, ch=8): channel outside"),
            (["--file", str(tmp_path / "s.npz"), "--steps", "50"], "at or after --steps"),
            (["--file", str(tmp_path / "float.npz"), "--steps", "10"], "integer arrays"),
            (["--file", str(tmp_path / "junk.npz"), "--steps", "10"], "junk.npz"),
            (["--file", str(tmp_path / "missing.npz"), "--steps", "10"], "missing.npz"),
            (["--file", str(tmp_path / "s.npz"), "--steps", "0"], "steps must be >= 1"),
            (["--file", str(tmp_path / "s.npz"), "--steps", "100", "--raster",
              str(tmp_path / "no" / "r.npz")], "--raster")):
        r = edged("run", "--model", m, *args)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and msg in lines[0], r.stderr
    r = edged("run", "--model", str(tmp_path / "missing-model.npz"), "--file",
              str(tmp_path / "s.npz"), "--steps", "100")
    assert r.returncode == 2 and "cannot read model file" in r.stderr


def without_readout(model):
    return dataclasses.replace(model, readout=b"", classes=())


def test_model_without_readout_runs_but_is_not_served(tmp_path):
    from edged.model import ModelError

    path = tmp_path / "bare.npz"
    save(path, without_readout(small_model()))
    bare = load(path)
    assert not bare.has_readout and bare.classes == ()
    info = edged("inspect", str(path))
    assert info.returncode == 0 and "readout   none" in info.stdout, info.stderr
    spike_file(tmp_path / "s.npz", 8, 200, 0.1, seed=4)
    r = edged("run", "--model", str(path), "--file", str(tmp_path / "s.npz"), "--steps", "200",
              "--raster", str(tmp_path / "r.npz"))
    assert r.returncode == 0 and r.stdout == "" and "no readout" in r.stderr, r.stderr
    with np.load(tmp_path / "r.npz") as z:
        assert z["hidden"].shape == (200, 16)
    serve = edged("serve", "--model", str(path), "--ingest", "tcp://127.0.0.1:*", "--publish",
                  "tcp://127.0.0.1:*", "--metrics", "off")
    assert serve.returncode == 2 and "has no readout" in serve.stderr.strip().splitlines()[-1], serve.stderr
    for broken, msg in ((dataclasses.replace(small_model(), readout=b""), "must have no classes"),
                        (dataclasses.replace(small_model(), classes=()), "classes must be")):
        try:
            save(tmp_path / "x.npz", broken)
        except ModelError as e:
            assert msg in str(e)
        else:
            raise AssertionError(f"saved a model with {msg!r} broken")
