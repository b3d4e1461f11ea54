"""``edged-train readout``: fit a readout to a trained network, leaving the network as it is.

For a model whose network came from elsewhere (``edged nir import``: NIR carries no
readout) or whose readout should serve another task. The network's features come from
``edged.engine`` exactly as in ``edged-train run`` (``trainer.features`` for tasks,
``trainer.events.extract`` for event folders); the readout is the same multinomial
logistic regression (``trainer.linear``) on ``lzc`` and ``rate``, scored on held-out data
through the ONNX graph the model file carries, beside the spike-count baseline.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from edged import versions
from trainer import data, linear

FEATURES = ("lzc", "rate")


def _scored(readout: bytes, f_test: np.ndarray, y_test: np.ndarray) -> float:
    from edged.readout import Readout

    return float(np.mean(np.argmax(Readout(readout).scores(f_test), axis=1) == y_test))


def for_task(model, task: str, overrides: dict[str, Any], n_train: int, n_test: int, seed: int,
             hop: int = 16):
    """``(model with a readout for task, metrics)``: fitted on ``n_train`` samples of the
    ``train`` split, scored on ``n_test`` of the ``test`` split."""
    from edged.engine import Engine
    from trainer.features import extract

    tr = data.make(task, n_train, seed, "train", **overrides)
    te = data.make(task, n_test, seed, "test", **overrides)
    T, n_in = tr.x.shape[1:]
    if n_in != model.n_in:
        raise ValueError(f"task {task} has {n_in} channels but the model {model.n_in} inputs "
                         f"(--set n_in={model.n_in} where the task allows it)")
    if not 1 <= hop <= T:
        raise ValueError(f"--hop {hop} must be in [1, {T}] (the task's sample length)")
    eng = Engine(model.net(), window=T, hop=hop, features=FEATURES)
    (f_tr, _, _), (f_te, _, _) = extract(eng, tr), extract(eng, te)
    K = len(tr.classes)
    fit = linear.fit(f_tr, tr.y, K)
    readout = fit.onnx()
    floor = linear.accuracy(linear.fit(data.counts(tr), tr.y, K), data.counts(te), te.y)
    metrics = {"accuracy": _scored(readout, f_te, te.y), "n_test": len(te.y),
               "count_floor_accuracy": floor, "train_readout_accuracy": linear.accuracy(fit, f_tr, tr.y)}
    provenance = {**model.provenance, "task": task, "task_params": tr.params, "seed": seed,
                  "readout_fit": {"trainer": "edged-train readout --task", "n_train": n_train,
                                  "metrics": metrics, "versions": versions()}}
    return dataclasses.replace(
        model, readout=readout, classes=tr.classes, window=T, hop=hop, features=FEATURES,
        encoding={"kind": "channels", "n_in": n_in, "dt": model.dt, "task": task},
        provenance=provenance, sha256=""), metrics


def for_events(model, folder: str, steps: int, pool: int, channels: int, n_val: int, seed: int):
    """``(model with a readout for the event folder, metrics)``: recordings encoded at the
    model's ``dt``, ``steps`` long (``window = hop = steps``), stratified split as in
    ``edged-train run --events-dir``; fitted on the train part, scored on the rest."""
    from edged import events as E
    from edged.engine import Engine
    from trainer.events import counts, encode_all, extract, read_labels, split

    enc = (E.make_encoding("events", model.dt, steps, n_in=channels) if channels
           else E.make_encoding("nmnist", model.dt, steps, pool))
    if E.n_inputs(enc) != model.n_in:
        raise ValueError(f"the encoding gives {E.n_inputs(enc)} channels but the model has "
                         f"{model.n_in} inputs (--channels {model.n_in} for generic files)")
    labels = read_labels(folder)
    tr_idx, va_idx = split(labels.y, n_val, seed)
    tr, va = encode_all(labels, enc, tr_idx), encode_all(labels, enc, va_idx)
    eng = Engine(model.net(), window=steps, hop=steps, features=FEATURES)
    f_tr, f_va = extract(eng, tr, steps), extract(eng, va, steps)
    K = len(labels.classes)
    fit = linear.fit(f_tr, tr.y, K)
    readout = fit.onnx()
    n_in = model.n_in
    baseline = linear.accuracy(linear.fit(counts(tr, n_in), tr.y, K), counts(va, n_in), va.y)
    metrics = {"validation_accuracy": _scored(readout, f_va, va.y), "n_validation": len(va.y),
               "n_train": len(tr.y), "count_baseline_accuracy": baseline,
               "train_readout_accuracy": linear.accuracy(fit, f_tr, tr.y)}
    provenance = {**model.provenance, "task": "events", "events_dir": str(folder),
                  "split": {"seed": seed, "n_val": n_val, "method": "stratified",
                            "validation_ids": [labels.sample_id[i] for i in va_idx]},
                  "readout_fit": {"trainer": "edged-train readout --events-dir", "metrics": metrics,
                                  "versions": versions()}}
    return dataclasses.replace(
        model, readout=readout, classes=labels.classes, window=steps, hop=steps,
        features=FEATURES, encoding=enc, provenance=provenance, sha256=""), metrics
