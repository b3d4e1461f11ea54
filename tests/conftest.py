"""Shared fixtures: small real models written to disk, a real `edged serve` subprocess."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edged import neurons
from edged.intrinsics import defaults
from edged.model import Model, save
from edged.readout import linear_onnx


def example_intrinsics(kind: str, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The default intrinsics made heterogeneous in every parameter the kernels see."""
    p = {k: v * rng.uniform(0.6, 1.4, n) for k, v in defaults(kind, n, rng).items()}
    if kind == "meta":
        p |= {"beta": rng.uniform(0.0, 0.5, n), "kappa": rng.uniform(0.0, 1.0, n)}
    return p


def firing_weights(n_in: int, n_hidden: int, n_out: int, rng: np.random.Generator):
    """Positive-mean weights strong enough that hidden and output layers both fire."""
    return (rng.normal(2.0, 1.0, (n_in, n_hidden)).astype(np.float32),
            rng.normal(3.0 / np.sqrt(n_hidden / 12), 1.0, (n_hidden, n_out)).astype(np.float32))


def firing_net(kind: str, n_in: int, n_hidden: int, n_out: int, seed: int, reset: str = "value"):
    rng = np.random.default_rng(seed)
    w_in, w_out = firing_weights(n_in, n_hidden, n_out, rng)
    return neurons.net(kind, w_in, w_out, example_intrinsics(kind, n_hidden, rng),
                       example_intrinsics(kind, n_out, rng), 1e-3, reset)


def small_model(kind: str = "meta", n_in: int = 8, n_hidden: int = 16, n_out: int = 3,
                classes: int = 2, seed: int = 0, window: int = 64, hop: int = 8,
                features: tuple[str, ...] = ("lzc", "rate")) -> Model:
    """A small random but valid model (not trained: for format and plumbing tests)."""
    rng = np.random.default_rng(seed)
    n_feat = n_out * len(features)
    w_in, w_out = firing_weights(n_in, n_hidden, n_out, rng)
    return Model(neuron=kind, w_in=w_in, w_out=w_out,
                 hidden={k: v.astype(np.float32) for k, v in example_intrinsics(kind, n_hidden, rng).items()},
                 output={k: v.astype(np.float32) for k, v in example_intrinsics(kind, n_out, rng).items()},
                 readout=linear_onnx(rng.normal(size=(n_feat, classes)), rng.normal(size=classes)),
                 classes=tuple(f"c{i}" for i in range(classes)), window=window, hop=hop,
                 features=features, provenance={"task": "test", "seed": seed})


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model.npz"
    save(path, small_model())
    return path


def pytest_collection_modifyitems(config, items):
    """Long soak and benchmark-sized tests (``@pytest.mark.slow``) run only with EDGED_SLOW=1."""
    import os

    if os.environ.get("EDGED_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set EDGED_SLOW=1 to run the long version")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


ROOT = Path(__file__).resolve().parent.parent


def wait_for(condition, timeout: float = 20.0, what: str = "condition", interval: float = 0.005):
    """``condition()``'s first truthy value within ``timeout`` s, polled every ``interval``;
    AssertionError naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)  # polling interval of the condition, not a wait for an event
    raise AssertionError(f"timed out waiting for {what}")


READY_S = 240.0  # a cold start compiles every kernel: ~60-75 s on a loaded 2-core box


def join(tx, rx, model, *streams: str, drain: bool = False):
    """Past the slow joiner: advance probe ``streams`` (default ``"probe"``; one per worker
    with ``--workers``) of ``model`` (its ``window`` and ``hop``) until each has a decision
    back on ``rx``; ``drain``: then read until none comes for 0.05 s. Returns the first."""
    waiting, first = set(streams or ("probe",)), None
    for k in range(400):
        for s in sorted(waiting):
            tx.send(s, [], [], until=model.window + k * model.hop)
        d = rx.recv(0.05)
        while d is not None:
            first = first or d
            waiting.discard(d.stream)
            d = rx.recv(0)
        if not waiting:
            while drain and rx.recv(0.05) is not None:
                pass
            return first
    raise AssertionError(f"no decision from {sorted(waiting)}: the subscription never became live")


def start_serve(model_path, *extra: str, metrics: str = "off", env: dict | None = None):
    """Start ``edged serve`` on random loopback ports (``extra`` flags override them; ``env``
    adds to the environment) and wait for its ready line: ``(proc, (ingest, publish,
    metrics), stderr lines so far)``."""
    from edged.client import wait_ready

    proc = subprocess.Popen(
        [sys.executable, "-m", "edged.cli", "serve", "--model", str(model_path),
         "--ingest", "tcp://127.0.0.1:*", "--publish", "tcp://127.0.0.1:*", "--metrics", metrics,
         *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})), cwd=ROOT)
    try:
        ready = wait_ready(proc, READY_S)
    except RuntimeError as e:
        proc.kill()
        proc.wait()
        raise AssertionError(f"{e}:\n{proc.stderr.read()}") from None
    return proc, (ready["ingest"], ready["publish"], ready["metrics"]), _pending_lines(proc.stderr)


def _pending_lines(pipe) -> list[str]:
    """The lines already written to ``pipe`` (not yet read through it), without blocking."""
    fd, chunks = pipe.fileno(), []
    while select.select([fd], [], [], 0)[0]:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode().splitlines(keepends=True)
