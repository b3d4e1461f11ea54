"""Event-folder datasets (N-MNIST and friends): train and evaluate on recordings.

A folder holds ``labels.csv`` (header ``sample_id,file,label,split``; ``file`` relative
to the folder, any ``edged.events`` format) and the files it names. Every recording is
encoded with the model's ``encoding`` (``edged.events.encode``), the same function
``edged send --events`` uses, so training, ``evaluate`` and the daemon see identical
input.

Sample -> decision: a model trained here has ``window = hop = steps`` (the encoding's
sample length), so a cold stream fed one recording and advanced to ``steps`` (``until``)
makes exactly one decision, covering the whole recording. ``extract`` does this through
``edged.engine``; the daemon does it per stream.

``split`` is the stratified train/validation split: per class, ``round`` of its share of
``n_val`` (largest remainders fill up to ``n_val`` exactly), drawn with a fixed seed.
The split column of ``labels.csv`` is ignored by training and evaluation alike.

Baseline: multinomial logistic regression (``trainer.linear``) on per-channel spike
counts of the same encoded input, fitted on the same train part and scored on the same
validation part in the same run.

Training options: early stopping on the validation part (``patience`` epochs without a
better readout accuracy; the best epoch's parameters are kept), weight decay, and
online augmentation of N-MNIST recordings (``augment``): every epoch each training
recording is redrawn with a random shift of up to ``AUGMENT["shift"]`` pixels per axis, a
rotation about the sensor centre of up to ``AUGMENT["rotate_deg"]`` degrees, each event
dropped with probability ``AUGMENT["drop"]`` and its time moved by a Gaussian jitter of
``AUGMENT["jitter_us"]`` (events leaving the sensor are dropped, the rest re-sorted).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from edged import events as E
from edged import versions
from trainer import linear
from trainer import params as P
from trainer.pipeline import scores_report


class Labels(NamedTuple):
    sample_id: list[str]
    path: list[Path]
    y: np.ndarray  # int64[n] index into classes
    classes: tuple[str, ...]


class Encoded(NamedTuple):
    t: list[np.ndarray]  # per sample, int64 steps (sorted)
    ch: list[np.ndarray]  # per sample, int64 input channels
    y: np.ndarray


def read_labels(folder: str | Path, classes: tuple[str, ...] | None = None) -> Labels:
    """Rows of ``folder/labels.csv`` (``edged.events.read_index``); classes sorted
    (numerically when all are integers) unless given (a model's), in which case an
    unknown label is an error."""
    rows = E.read_index(folder)
    labels = [r.label for r in rows]
    if any(not c for c in labels):
        raise ValueError(f"{folder}: every recording needs a label (labels.csv)")
    if classes is None:
        found = set(labels)
        key = (lambda c: (int(c), c)) if all(c.lstrip("-").isdigit() for c in found) else str
        classes = tuple(sorted(found, key=key))
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise ValueError(f"{folder}: labels {unknown[:5]} are not among the classes {list(classes)}")
    index = {c: k for k, c in enumerate(classes)}
    return Labels([r.sample_id for r in rows], [r.path for r in rows],
                  np.array([index[c] for c in labels], np.int64), tuple(classes))


def split(y: np.ndarray, n_val: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified ``(train_idx, val_idx)``, both sorted."""
    y = np.asarray(y)
    if not 0 < n_val < len(y):
        raise ValueError(f"validation size {n_val} must be in (0, {len(y)})")
    rng = np.random.default_rng([seed, 0x5B17])
    classes, counts = np.unique(y, return_counts=True)
    share = counts * n_val / len(y)
    take = np.floor(share).astype(int)
    for k in np.argsort(-(share - take), kind="stable")[:n_val - take.sum()]:
        take[k] += 1
    val = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:k] for c, k in zip(classes, take)])
    return np.setdiff1d(np.arange(len(y)), val), np.sort(val)


def encode_all(labels: Labels, enc: dict[str, Any], idx: np.ndarray | None = None) -> Encoded:
    idx = np.arange(len(labels.y)) if idx is None else idx
    ts, chs = [], []
    for i in idx:
        t, ch = E.encode(E.load(labels.path[i]), enc)
        ts.append(t)
        chs.append(ch)
    return Encoded(ts, chs, labels.y[idx])


def dense(d: Encoded, enc: dict[str, Any]) -> np.ndarray:
    """``uint8[n, steps, n_in]`` event counts (BPTT input)."""
    n_in = E.n_inputs(enc)
    return np.stack([E.dense(t, ch, enc["steps"], n_in) for t, ch in zip(d.t, d.ch)])


def counts(d: Encoded, n_in: int) -> np.ndarray:
    """Per-channel event counts ``float64[n, n_in]`` (the baseline's features)."""
    return np.stack([np.bincount(ch, minlength=n_in).astype(np.float64) for ch in d.ch])


def extract(engine, d: Encoded, steps: int) -> np.ndarray:
    """Features ``float32[n, n_features]`` of each sample's decision at ``steps``, each
    on a cold slot of ``engine``, as stream ``sample-<i>`` (``window = hop = steps``:
    exactly one decision)."""
    feats = np.empty((len(d.y), engine.net.w_out.shape[1] * len(engine.features)), np.float32)
    for i, (t, ch) in enumerate(zip(d.t, d.ch)):
        engine.reset(0, f"sample-{i}")
        dec = engine.advance(0, t, ch, steps)
        feats[i] = dec.features[-1]
    return feats


AUGMENT = {"shift": 2, "rotate_deg": 10.0, "drop": 0.1, "jitter_us": 1000.0}


def augment(ev: E.Events, rng: np.random.Generator) -> E.Events:
    """One random redraw of an N-MNIST sensor recording (``AUGMENT``)."""
    ch = np.asarray(ev.ch, np.int64)
    p, pix = ch // (E.SENSOR * E.SENSOR), ch % (E.SENSOR * E.SENSOR)
    y, x = (pix // E.SENSOR).astype(np.float64), (pix % E.SENSOR).astype(np.float64)
    c = (E.SENSOR - 1) / 2
    a = np.deg2rad(rng.uniform(-AUGMENT["rotate_deg"], AUGMENT["rotate_deg"]))
    dx, dy = rng.integers(-AUGMENT["shift"], AUGMENT["shift"] + 1, 2)
    xr = np.rint(c + np.cos(a) * (x - c) - np.sin(a) * (y - c) + dx).astype(np.int64)
    yr = np.rint(c + np.sin(a) * (x - c) + np.cos(a) * (y - c) + dy).astype(np.int64)
    t = np.asarray(ev.t_us, np.int64) + np.rint(rng.normal(0, AUGMENT["jitter_us"], len(ch))).astype(np.int64)
    keep = ((xr >= 0) & (xr < E.SENSOR) & (yr >= 0) & (yr < E.SENSOR) & (t >= 0)
            & (rng.random(len(ch)) >= AUGMENT["drop"]))
    order = np.argsort(t[keep], kind="stable")
    return E.Events(t[keep][order], (p * E.SENSOR * E.SENSOR + yr * E.SENSOR + xr)[keep][order])


class EventSpec(NamedTuple):
    events_dir: str
    pool: int = 2
    dt: float = 1e-3
    steps: int = 340
    neuron: str = "meta"
    hidden: int = 128
    outputs_per_class: int = 4
    epochs: int = 20
    lr: float = 0.003
    lr_intrinsics: float = 0.01
    lam: float = 0.1
    n_val: int = 200
    seed: int = 0
    channels: int = 0  # 0: N-MNIST sensor channels, pooled by pool; N: generic channels 0..N-1
    patience: int = 0  # > 0: early stopping on the validation part
    weight_decay: float = 0.0
    augment: bool = False  # N-MNIST only: online augmentation (AUGMENT)
    calibrate: bool = True  # data-dependent initialisation (trainer.bptt.calibrate)


def encoding(spec: EventSpec) -> dict[str, Any]:
    return (E.make_encoding("events", spec.dt, spec.steps, n_in=spec.channels) if spec.channels
            else E.make_encoding("nmnist", spec.dt, spec.steps, spec.pool))


def encoded(recordings, y: np.ndarray, idx: np.ndarray, enc: dict[str, Any]) -> Encoded:
    """The recordings ``idx`` (already loaded) encoded with ``enc``."""
    pairs = [E.encode(recordings[i], enc) for i in idx]
    return Encoded([t for t, _ in pairs], [ch for _, ch in pairs], y[idx])


def train(spec: EventSpec, labels: Labels, recordings: list[E.Events], tr_idx: np.ndarray,
          va_idx: np.ndarray, log: Callable[[str], None] | None = None):
    """Train on ``tr_idx`` (early-stopped on ``va_idx`` when ``spec.patience``); return
    ``(raw, history, epochs_used)``. ``recordings`` are the loaded files of ``labels``."""
    from edged.engine import Engine
    from trainer import bptt
    from trainer.pipeline import EarlyStop

    enc = encoding(spec)
    n_in = E.n_inputs(enc)
    K = len(labels.classes)
    tr = encoded(recordings, labels.y, tr_idx, enc)
    x_tr = dense(tr, enc)
    x = x_tr
    if spec.augment:
        if enc["kind"] != "nmnist":
            raise ValueError("augment applies to N-MNIST sensor recordings only")
        rng = np.random.default_rng([spec.seed, 0xA6])

        def x(epoch: int) -> np.ndarray:
            redrawn = {i: augment(recordings[i], rng) for i in tr_idx}
            return dense(encoded(redrawn, labels.y, tr_idx, enc), enc)

    stop = None
    if spec.patience:
        va = encoded(recordings, labels.y, va_idx, enc)

        def score(r: dict) -> float:
            eng = Engine(P.to_net(spec.neuron, r, spec.dt), window=spec.steps, hop=spec.steps,
                         features=("lzc", "rate"))
            f = linear.fit(extract(eng, tr, spec.steps), tr.y, K)
            return linear.accuracy(f, extract(eng, va, spec.steps), va.y)

        stop = EarlyStop(score, spec.patience, log)
    raw = P.init(spec.neuron, n_in, spec.hidden, K * spec.outputs_per_class, spec.seed,
                 input_rate=float(x_tr.mean()))
    if spec.calibrate:
        raw, info = bptt.calibrate(spec.neuron, raw, x_tr, spec.dt, seed=spec.seed)
        if log:
            log(f"initial rates on training data: hidden {info['hidden_hz']:.1f} Hz, output "
                f"{info['output_hz']:.1f} Hz (weights scaled x{info['scale_in']:.3g} / "
                f"x{info['scale_out']:.3g} into {bptt.RATE_BAND_HZ[0]:g}-{bptt.RATE_BAND_HZ[1]:g} Hz)")
    cfg = bptt.Config(epochs=spec.epochs, lr=spec.lr, lr_intrinsics=spec.lr_intrinsics,
                      lam=spec.lam, weight_decay=spec.weight_decay)
    raw, history = bptt.train(spec.neuron, raw, x, tr.y, True, cfg, spec.seed, log=log,
                              dt=spec.dt, on_epoch=stop)
    if stop is None:
        return raw, history, len(history)
    for h, acc in zip(history, stop.scores):
        h["validation_accuracy"] = acc
    return stop.best_raw, history, stop.best_epoch


def run(spec: EventSpec, log: Callable[[str], None] | None = None):
    """Train on the train part of the split; return ``(model, metrics)``. The readout is
    the multinomial logistic regression on the engine's features (``lzc``, ``rate``).
    ``n_val = 0`` trains on every recording for exactly ``epochs`` (no validation, no
    early stopping: the settings come from elsewhere, e.g. ``experiment nmnist-cv``)."""
    from edged.engine import Engine
    from edged.model import Model
    from edged.readout import Readout
    from trainer import bptt

    log = log or (lambda _: None)
    t_start = time.perf_counter()
    enc = encoding(spec)
    n_in = E.n_inputs(enc)
    labels = read_labels(spec.events_dir)
    if spec.n_val == 0 and spec.patience:
        raise ValueError("early stopping needs validation recordings: set --patience 0 with --n-val 0")
    tr_idx, va_idx = (split(labels.y, spec.n_val, spec.seed) if spec.n_val
                      else (np.arange(len(labels.y)), np.arange(0)))
    recordings = [E.load(path) for path in labels.path]
    tr, va = encoded(recordings, labels.y, tr_idx, enc), encoded(recordings, labels.y, va_idx, enc)
    K = len(labels.classes)
    log(f"{len(tr.y)} train / {len(va.y)} validation samples, {n_in} channels, "
        f"{spec.steps} steps of {spec.dt * 1e3:g} ms")
    baseline = acc = None  # no validation recordings (n_val = 0)
    if len(va.y):
        base = linear.fit(counts(tr, n_in), tr.y, K)
        baseline = linear.accuracy(base, counts(va, n_in), va.y)
        log(f"spike-count logistic regression baseline: validation accuracy {baseline:.4f}")
    t0 = time.perf_counter()
    raw, history, epochs_used = train(spec, labels, recordings, tr_idx, va_idx, log)
    train_s = time.perf_counter() - t0
    eng = Engine(P.to_net(spec.neuron, raw, spec.dt), window=spec.steps, hop=spec.steps,
                 features=("lzc", "rate"))
    f_tr, f_va = extract(eng, tr, spec.steps), extract(eng, va, spec.steps)
    fit = linear.fit(f_tr, tr.y, K)
    readout = fit.onnx()
    if len(va.y):
        acc = float(np.mean(np.argmax(Readout(readout).scores(f_va), axis=1) == va.y))
        log(f"validation accuracy {acc:.4f} (baseline {baseline:.4f})")
    warnings = bptt.health(history, spec.dt)
    if acc is not None and acc <= baseline:
        warnings.append(f"the model ({acc:.4f}) does not beat the spike-count baseline "
                        f"({baseline:.4f}) on the validation recordings")
    for w in warnings:
        log(f"warning: {w}")
    metrics = {"warnings": warnings, "validation_accuracy": acc, "n_validation": len(va.y), "n_train": len(tr.y),
               "count_baseline_accuracy": baseline,
               "train_readout_accuracy": linear.accuracy(fit, f_tr, tr.y),
               "epochs_used": epochs_used, "epochs_run": len(history),
               "train_seconds": round(train_s, 1),
               "total_seconds": round(time.perf_counter() - t_start, 1)}
    provenance = {"task": "events", "events_dir": str(spec.events_dir), "spec": spec._asdict(),
                  "split": {"seed": spec.seed, "n_val": spec.n_val, "method": "stratified",
                            "validation_ids": [labels.sample_id[i] for i in va_idx]},
                  "metrics": metrics, "history": history, "versions": versions(),
                  "trainer": "edged-train run --events-dir"}
    model = Model(neuron=spec.neuron, w_in=raw["w_in"].astype(np.float32),
                  w_out=raw["w_out"].astype(np.float32),
                  hidden={k: v.astype(np.float32) for k, v in P.intrinsics(spec.neuron, raw, "hidden").items()},
                  output={k: v.astype(np.float32) for k, v in P.intrinsics(spec.neuron, raw, "output").items()},
                  readout=readout, classes=labels.classes, dt=spec.dt, reset="value",
                  window=spec.steps, hop=spec.steps, features=("lzc", "rate"), encoding=enc,
                  provenance=provenance)
    return model, metrics


def evaluate(model, folder: str | Path, held_back: bool = False) -> dict[str, Any]:
    """Accuracy of ``model`` on every sample listed in ``folder/labels.csv`` (with
    ``held_back``, only the validation ids in the model's provenance), encoded by the
    model's ``encoding`` and decided by ``edged.engine`` + its ONNX readout. With
    ``held_back``, also ``baselines`` (``EVENT_BASELINES``) fitted on the other recordings
    (a stratified fifth of them for tuning) and scored on the held-back ones."""
    from edged.engine import Engine
    from edged.readout import Readout

    enc = model.encoding
    try:
        E.check_encoding(enc)
    except ValueError as e:
        raise ValueError(f"model has no event encoding ({e}); train it with --events-dir") from None
    if E.n_inputs(enc) != model.n_in:
        raise ValueError(f"encoding gives {E.n_inputs(enc)} channels but the model has {model.n_in} inputs")
    if model.window != enc["steps"] or model.hop != enc["steps"]:
        raise ValueError(f"model window/hop {model.window}/{model.hop} != encoding steps {enc['steps']}")
    labels = read_labels(folder, model.classes)
    rest = None
    if held_back:
        ids = set(model.provenance.get("split", {}).get("validation_ids", ()))
        if not ids:
            raise ValueError("the model's provenance records no held-back (validation) ids")
        idx = np.array([i for i, s in enumerate(labels.sample_id) if s in ids], np.int64)
        if not idx.size:
            raise ValueError(f"none of the model's held-back ids is listed in {folder}/labels.csv")
        rest = subset(labels, np.setdiff1d(np.arange(len(labels.y)), idx))
        labels = subset(labels, idx)
    d = encode_all(labels, enc)
    pred = np.argmax(Readout(model.readout).scores(extract(Engine.for_model(model), d, enc["steps"])), 1)
    out = {**scores_report(d.y, pred, model.classes), "events_dir": str(folder),
           "held_back_only": held_back, "model_sha256": model.sha256,
           "predictions": {s: model.classes[p] for s, p in zip(labels.sample_id, pred)}}
    if rest is not None and np.all(np.bincount(rest.y, minlength=len(model.classes)) >= 2):
        from trainer import baselines as B

        tr_idx, va_idx = split(rest.y, max(len(model.classes), len(rest.y) // 5), 0)
        x = lambda lab, idx=None: dense(encode_all(lab, enc, idx), enc)
        res = B.score(B.Split(x(rest, tr_idx), rest.y[tr_idx]), B.Split(x(rest, va_idx), rest.y[va_idx]),
                      B.Split(x(labels), labels.y), len(model.classes), EVENT_BASELINES)
        out["baselines"] = B.accuracies(res)
    return out


EVENT_BASELINES = ("count", "binned-count")


def subset(labels: Labels, idx: np.ndarray) -> Labels:
    return Labels([labels.sample_id[i] for i in idx], [labels.path[i] for i in idx],
                  labels.y[idx], labels.classes)
