"""``edged demo``: labelled examples through a real ``edged serve``, truth beside prediction.

It starts ``edged serve`` as a subprocess on free loopback ports (waiting for its ready
line), sends each example on its own stream, collects the published decisions and
prints, per example, the true class beside the predicted one, then ``accuracy NN.N%``
and the confusion matrix.

Examples are of the model's own classes. For a task model (``provenance.task`` one of
``trainer.data.TASKS``) they are fresh samples of that task (``evaluate`` split, the
recorded task parameters, ``seed``): the generator lives in ``trainer.data``, imported
only here, so the daemon never depends on the trainer. Each sample is one cold stream
advanced to the sample's length, so its decision covers the whole sample, as in
``edged-train evaluate``. For an event model they are the recordings of an event folder
(``events_dir``, default the one in the model's provenance; only the held-back
validation recordings its provenance lists, where it lists them), replayed as ``edged
send --events`` does.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from edged.model import Model


class DemoError(ValueError):
    """The model or the examples cannot be demonstrated; the message says why."""


def examples(model: Model, n: int, seed: int) -> tuple[list[tuple[str, np.ndarray, np.ndarray]], int]:
    """``([(true label, t, ch), ...], steps per example)`` of a task model's own task."""
    try:
        from trainer import data
    except ImportError:
        raise DemoError("task examples come from trainer.data, which is not installed") from None
    task = model.provenance.get("task")
    if task not in data.TASKS:
        raise DemoError(f"the model's provenance names no task edged can generate (task {task!r}); "
                        "for an event model give --events DIR")
    try:
        d = data.make(task, n, seed, "evaluate", **dict(model.provenance.get("task_params", {})))
    except (TypeError, ValueError) as e:
        raise DemoError(f"cannot generate task {task}: {e}") from None
    if d.x.shape[2] != model.n_in or d.classes != model.classes:
        raise DemoError(f"task {task} gives {d.x.shape[2]} channels and classes {d.classes}, the "
                        f"model has {model.n_in} inputs and classes {model.classes}")
    return [(d.classes[y], *data.events(x)) for x, y in zip(d.x, d.y)], d.x.shape[1]


def start_serve(model_path: str, streams: int) -> tuple[subprocess.Popen, dict]:
    """``edged serve`` on free loopback ports, ready: ``(process, ready line fields)``."""
    from edged.client import wait_ready

    proc = subprocess.Popen(
        [sys.executable, "-m", "edged.cli", "serve", "--model", model_path,
         "--ingest", "tcp://127.0.0.1:*", "--publish", "tcp://127.0.0.1:*", "--metrics", "off",
         "--max-streams", str(streams), "--log-level", "warning"], stdout=subprocess.PIPE, text=True)
    try:
        return proc, wait_ready(proc, 120)
    except RuntimeError:
        proc.kill()
        proc.wait()
        raise


def confusion_lines(classes: tuple[str, ...], truth: list[str], pred: list[str]) -> list[str]:
    width = max(len(c) for c in classes) + 2
    m = np.zeros((len(classes), len(classes)), np.int64)
    index = {c: k for k, c in enumerate(classes)}
    for a, b in zip(truth, pred):
        m[index[a], index[b]] += 1
    lines = ["confusion (rows: truth, columns: predicted)",
             " " * width + "".join(f"{c:>{width}}" for c in classes)]
    lines += [f"{c:<{width}}" + "".join(f"{v:>{width}}" for v in row) for c, row in zip(classes, m)]
    return lines


def run(model_path: str, n: int, seed: int, events_dir: str | None = None,
        out: Callable[[str], None] = print, timeout: float = 120.0) -> float:
    """Run the demo; return the accuracy (a fraction)."""
    from edged.client import Sender, Subscriber, replay_events, replay_steps
    from edged.model import load

    model = load(model_path)
    if not model.has_readout:
        raise DemoError("the model has no readout to decide with (edged-train readout fits one)")
    event_model = (model.encoding or {}).get("kind") in ("nmnist", "events")
    if event_model:
        events_dir = events_dir or model.provenance.get("events_dir")
        if not events_dir or not (Path(events_dir) / "labels.csv").is_file():
            raise DemoError(f"an event model needs recordings: --events DIR (labels.csv) "
                            f"(its provenance names {events_dir!r})")
        held = set(model.provenance.get("split", {}).get("validation_ids", ())) or None
        source = f"{'held-back ' if held else ''}recordings of {events_dir}"
    else:
        batch, steps = examples(model, n, seed)
        source = f"fresh samples of its task {model.provenance['task']} (seed {seed})"
    out(f"edged demo: {model_path} ({model.neuron}, {model.n_in} inputs, classes "
        f"{', '.join(model.classes)}), {n} {source}")
    proc, ready = start_serve(model_path, n + 1)
    out(f"edged serve ready in {ready['warm_s']:.2f}s: ingest {ready['ingest']}, publish {ready['publish']}")
    truth: dict[str, str] = {}
    got: dict[str, object] = {}
    try:
        with Sender(ready["ingest"], linger=1.0) as tx, Subscriber(ready["publish"]) as rx:
            for i in range(400):  # slow joiner: decisions reach us from here on
                tx.send("demo-probe", [], [], until=model.window + i * model.hop)
                if rx.recv(0.05) is not None:
                    break
            else:
                raise RuntimeError("no decision from edged serve for the probe stream")
            if event_model:
                def sent(sample: dict) -> None:
                    truth[sample["stream"]] = sample["label"]

                replay_events(tx, events_dir, model.encoding, prefix="demo-", limit=n,
                              on_sample=sent, only=held)
            else:
                for i, (label, t, ch) in enumerate(batch):
                    truth[f"demo-{i}"] = label
                    replay_steps(tx, f"demo-{i}", t, ch, steps)
            deadline = time.monotonic() + timeout
            while len(got) < len(truth) and time.monotonic() < deadline:
                d = rx.recv(1.0)
                if d is None or d.stream not in truth or d.stream in got:
                    continue
                got[d.stream] = d
                mark = "ok" if d.label == truth[d.stream] else "WRONG"
                out(f"{d.stream:<12} truth {truth[d.stream]:<14} predicted {d.label:<14} {mark:<5} "
                    f"latency {d.latency_s * 1e6:6.0f} us")
    finally:
        proc.terminate()
        proc.wait(30)
        proc.stdout.close()
    missing = len(truth) - len(got)
    streams = [s for s in truth if s in got]
    t, p = [truth[s] for s in streams], [got[s].label for s in streams]
    correct = sum(a == b for a, b in zip(t, p))
    accuracy = correct / len(truth) if truth else 0.0
    out("")
    for line in confusion_lines(model.classes, t, p):
        out(line)
    out(f"{missing} decisions missing" if missing else "every example decided")
    out(f"accuracy {100 * accuracy:.1f}% ({correct}/{len(truth)})")
    return accuracy
