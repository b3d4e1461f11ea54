"""One training run end to end: task -> rule -> engine features -> readout -> ``Model``.

``run(spec)`` draws the ``train`` and ``test`` splits of the task, initialises the net
(``trainer.params.init``), trains it with the rule, extracts features through
``edged.engine`` (``trainer.features``), fits the multinomial logistic readout
(``trainer.linear``) or the nearest-class-mean baseline on the train features, and
measures test accuracy through the ONNX graph the model file will carry
(``edged.readout.Readout``). ``evaluate(model, seed, n)`` does the last step on fresh
samples (the ``evaluate`` split) of the task recorded in the model's provenance.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Literal

import numpy as np

from edged import versions
from edged.intrinsics import NeuronKind
from trainer import data, linear
from trainer import params as P

Rule = Literal["bptt", "stdp", "tempotron", "stdp-sample", "stdp-own", "stdp-triesch",
               "stdp-kwta", "stdp-reward", "tempotron-multi"]
# a variant is a base rule with named options (trainer/stdp.py documents them)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "stdp-sample": ("stdp", {"homeostasis": "sample-rate"}),
    "stdp-own": ("stdp", {"homeostasis": "own-rate"}),
    "stdp-triesch": ("stdp", {"homeostasis": "triesch"}),
    "stdp-kwta": ("stdp", {"homeostasis": "sample-rate", "kwta": -8}),  # k = hidden / 8
    "stdp-reward": ("stdp", {"homeostasis": "sample-rate", "modulation": "reward"}),  # three-factor
    "tempotron-multi": ("tempotron", {"mode": "multi", "hidden": "surrogate"}),
}
RULES: tuple[str, ...] = ("bptt", "stdp", "tempotron", *VARIANTS)
DT = 1e-3


@dataclass(frozen=True)
class Spec:
    task: str = "poisson-structure"
    task_params: dict[str, Any] = field(default_factory=dict)
    neuron: NeuronKind = "meta"
    rule: Rule = "bptt"
    intrinsics: Literal["fixed", "fixed-tuned", "learned"] = "learned"
    hidden: int = 64
    outputs_per_class: int = 1
    epochs: int = 6  # the budget, or the cap when n_val > 0
    lr: float = 0.02
    n_train: int = 600
    n_test: int = 400
    seed: int = 0
    hop: int = 16
    readout: Literal["linear", "nearest-mean"] = "linear"
    eval_split: Literal["test", "validation"] = "test"
    n_val: int = 0  # > 0: early stopping on that many validation samples
    patience: int = 4  # epochs without a better validation accuracy before stopping
    lr_intrinsics: float = 1.0  # multiplier of the rule's intrinsic learning rate(s)
    centres: dict[str, float] = field(default_factory=dict)  # overrides of edged.intrinsics defaults
    learn: tuple[str, ...] = ()  # learned: only these intrinsics (empty: all)
    weight_decay: float = 0.0  # bptt: L2 on the weights
    baselines: tuple[str, ...] = ()  # trainer.baselines names scored on the same splits
    set_point: float = 0.0  # stdp: homeostatic target rate in Hz (0: the rule's default)


def rule_module(rule: str):
    from trainer import bptt, stdp, tempotron

    return {"bptt": bptt, "stdp": stdp, "tempotron": tempotron}[VARIANTS.get(rule, (rule,))[0]]


def rule_config(spec: Spec):
    """The rule's config with the spec's budget (epochs) and learning rate. The intrinsic
    learning rate is ``spec.lr_intrinsics`` times: the weights' rate (bptt), the
    homeostatic rates ``eta_theta``, ``eta_tau``, ``eta_gain`` (stdp), ``lr_intrinsics``
    (tempotron). A variant's options follow (``VARIANTS``; ``kwta = -d`` means hidden / d)."""
    base, options = VARIANTS.get(spec.rule, (spec.rule, {}))
    mod = rule_module(spec.rule)
    cfg = mod.Config(epochs=spec.epochs, lr=spec.lr)
    m = spec.lr_intrinsics
    if base == "bptt":
        cfg = cfg._replace(lr_intrinsics=spec.lr * m, weight_decay=spec.weight_decay)
    elif base == "stdp":
        cfg = cfg._replace(lr_out=spec.lr, eta_theta=cfg.eta_theta * m, eta_tau=cfg.eta_tau * m,
                           eta_gain=cfg.eta_gain * m)
        if spec.set_point:
            cfg = cfg._replace(target_hidden=spec.set_point * DT, target_out=spec.set_point * DT)
        if options.get("kwta", 0) < 0:
            options = options | {"kwta": max(1, spec.hidden // -options["kwta"])}
    else:
        cfg = cfg._replace(lr_intrinsics=cfg.lr_intrinsics * m)
    return cfg._replace(**options)


class EarlyStop:
    """``on_epoch`` hook: scores each epoch's parameters with ``score(raw)`` (validation
    accuracy), keeps the best, asks to stop after ``patience`` epochs without a better one."""

    def __init__(self, score: Callable[[dict], float], patience: int,
                 log: Callable[[str], None] | None = None):
        self.score, self.patience, self.log = score, patience, log
        self.best, self.best_epoch, self.best_raw = -1.0, 0, None
        self.scores: list[float] = []

    def __call__(self, epoch: int, raw: dict) -> bool:
        acc = self.score(raw)
        self.scores.append(acc)
        if acc > self.best:
            self.best, self.best_epoch = acc, epoch
            self.best_raw = {k: v.copy() for k, v in raw.items()}
        stop = epoch - self.best_epoch >= self.patience
        if self.log:
            self.log(f"epoch {epoch}: readout validation accuracy {acc:.4f} (best {self.best:.4f} "
                     f"at epoch {self.best_epoch}){'; stopping' if stop else ''}")
        return stop


def engine_for(kind: str, raw: dict, spec: Spec, features=("lzc", "rate"), window: int = 1024):
    from edged.engine import Engine

    return Engine(P.to_net(kind, raw, DT, seed=spec.seed), window=window, hop=spec.hop,
                  features=features)


def readout_fit(kind: str, raw: dict, spec: Spec, tr, window: int):
    """Engine features of ``tr`` and the logistic readout fitted on them:
    ``(engine, fit, train features)``."""
    from trainer.features import extract

    eng = engine_for(kind, raw, spec, window=window)
    f_tr = extract(eng, tr)[0]
    return eng, linear.fit(f_tr, tr.y, len(tr.classes)), f_tr


def run(spec: Spec, log: Callable[[str], None] | None = None):
    """Train per ``spec``; return ``(model, metrics, extras)`` (extras: raw params, history,
    test features and rasters for reports). With ``spec.n_val > 0`` the rule runs at most
    ``spec.epochs`` epochs, the readout accuracy on the validation split is measured after
    each, and the best epoch's parameters are kept (``epochs_used``)."""
    from edged.model import Model
    from edged.readout import Readout, nearest_mean_onnx
    from trainer.features import extract

    t_start = time.perf_counter()
    tr = data.make(spec.task, spec.n_train, spec.seed, "train", **spec.task_params)
    te = data.make(spec.task, spec.n_test, spec.seed, spec.eval_split, **spec.task_params)
    va = data.make(spec.task, spec.n_val, spec.seed, "validation", **spec.task_params) if spec.n_val else None
    T, n_in = tr.x.shape[1:]
    K = len(tr.classes)
    n_out = K * spec.outputs_per_class  # output k serves class k % K
    raw = P.init(spec.neuron, n_in, spec.hidden, n_out, spec.seed, input_rate=float(tr.x.mean()),
                 centres=spec.centres)
    mod = rule_module(spec.rule)
    stop = None
    if va is not None:
        def val_accuracy(r: dict) -> float:
            eng, fit, _ = readout_fit(spec.neuron, r, spec, tr, T)
            return linear.accuracy(fit, extract(eng, va)[0], va.y)

        stop = EarlyStop(val_accuracy, spec.patience, log)
    learn = (spec.learn or True) if spec.intrinsics == "learned" else False
    t0 = time.perf_counter()
    raw, history = mod.train(spec.neuron, raw, tr.x, tr.y, learn, rule_config(spec), spec.seed,
                             log=log, dt=DT, on_epoch=stop)
    train_s = time.perf_counter() - t0
    epochs_run = len(history)
    if stop is not None:
        raw = stop.best_raw
        for h, acc in zip(history, stop.scores):
            h["validation_accuracy"] = acc
    eng, fit, f_tr = readout_fit(spec.neuron, raw, spec, tr, T)
    f_te, lz_te, spikes_te = extract(eng, te)
    means = linear.class_means(f_tr[:, :n_out], tr.y, K)  # paper baseline: output LZC only
    readout = fit.onnx() if spec.readout == "linear" else None
    features = ("lzc", "rate")
    if spec.readout == "nearest-mean":
        readout, features = nearest_mean_onnx(means), ("lzc",)
    x_te = f_te if features == ("lzc", "rate") else f_te[:, :n_out]
    scores = Readout(readout).scores(x_te)
    acc = float(np.mean(np.argmax(scores, axis=1) == te.y))
    nm = float(np.mean(np.argmax(Readout(nearest_mean_onnx(means)).scores(f_te[:, :n_out]), 1) == te.y))
    floor = linear.accuracy(linear.fit(data.counts(tr), tr.y, K), data.counts(te), te.y)
    metrics = {"accuracy": acc, "n_test": len(te.y), "split": spec.eval_split,
               "nearest_mean_lzc_accuracy": nm, "count_floor_accuracy": floor,
               "train_readout_accuracy": linear.accuracy(fit, f_tr, tr.y),
               "epochs_run": epochs_run,
               "epochs_used": stop.best_epoch if stop is not None else epochs_run,
               "train_seconds": round(train_s, 2),
               "train_samples_per_s": round(spec.n_train * max(epochs_run, 1) / train_s, 1),
               "total_seconds": round(time.perf_counter() - t_start, 2)}
    if stop is not None:
        metrics["validation_accuracy"] = stop.best
    if spec.rule == "bptt":
        metrics["warnings"] = mod.health(history, DT)
        for w in metrics["warnings"]:
            (log or (lambda m: None))(f"warning: {w}")
    if spec.baselines:
        from trainer import baselines as B

        if va is None:
            raise ValueError("baselines are tuned on the validation split: set n_val > 0")
        metrics["baselines"] = B.accuracies(B.score(B.Split(tr.x, tr.y), B.Split(va.x, va.y),
                                                    B.Split(te.x, te.y), K, spec.baselines,
                                                    spec.seed, DT))
    hidden = {k: v.astype(np.float32) for k, v in P.intrinsics(spec.neuron, raw, "hidden").items()}
    output = {k: v.astype(np.float32) for k, v in P.intrinsics(spec.neuron, raw, "output").items()}
    provenance = {"task": spec.task, "task_params": tr.params, "rule": spec.rule,
                  "intrinsics": spec.intrinsics, "seed": spec.seed, "spec": asdict(spec),
                  "metrics": metrics, "accuracy": acc, "history": history,
                  "versions": versions(), "trainer": "edged-train run"}
    model = Model(neuron=spec.neuron, w_in=raw["w_in"].astype(np.float32),
                  w_out=raw["w_out"].astype(np.float32), hidden=hidden, output=output,
                  readout=readout, classes=tr.classes, dt=DT, reset="value", window=T,
                  hop=spec.hop, variant="lz76", features=features,
                  encoding={"kind": "channels", "n_in": n_in, "dt": DT, "task": spec.task},
                  provenance=provenance, seed=spec.seed)
    extras = {"raw": raw, "history": history, "test": te, "features_test": f_te,
              "lz_test": lz_te, "spikes_test": spikes_te}
    return model, metrics, extras


def evaluate(model, seed: int, n: int = 300, baselines: tuple[str, ...] = ()) -> dict[str, Any]:
    """Accuracy of ``model`` on ``n`` fresh samples (``evaluate`` split, ``seed``) of the
    task in its provenance, decided by ``edged.engine`` + the model's ONNX readout; with
    ``baselines``, those of ``trainer.baselines`` fitted on ``n`` fresh train and tuned on
    ``n // 2`` fresh validation samples (same seed) and scored on the same ``n`` samples."""
    from edged.engine import Engine
    from edged.readout import Readout
    from trainer.features import extract

    prov = model.provenance
    if "task" not in prov or prov["task"] not in data.TASKS:
        raise ValueError(f"model provenance names no known task (got {prov.get('task')!r})")
    params = dict(prov.get("task_params", {}))
    d = data.make(prov["task"], n, seed, "evaluate", **params)
    if d.x.shape[2] != model.n_in:
        raise ValueError(f"task has {d.x.shape[2]} channels but the model {model.n_in} inputs")
    if d.classes != model.classes:
        raise ValueError(f"task classes {d.classes} differ from the model's {model.classes}")
    feats, _, _ = extract(Engine.for_model(model), d)
    pred = np.argmax(Readout(model.readout).scores(feats), axis=1)
    out = {**scores_report(d.y, pred, d.classes), "seed": seed, "task": prov["task"],
           "task_params": d.params, "model_sha256": model.sha256}
    if baselines:
        from trainer import baselines as B

        tr = data.make(prov["task"], n, seed, "train", **params)
        va = data.make(prov["task"], max(n // 2, len(d.classes)), seed, "validation", **params)
        res = B.score(B.Split(tr.x, tr.y), B.Split(va.x, va.y), B.Split(d.x, d.y),
                      len(d.classes), baselines, seed)
        out["baselines"] = B.accuracies(res)
    return out


def scores_report(y: np.ndarray, pred: np.ndarray, classes: tuple[str, ...]) -> dict[str, Any]:
    """``accuracy``, ``n``, ``per_class`` {n, correct, predicted} and ``confusion`` (rows: truth)."""
    per_class = {c: {"n": int(np.sum(y == k)), "correct": int(np.sum((y == k) & (pred == k))),
                     "predicted": int(np.sum(pred == k))} for k, c in enumerate(classes)}
    confusion = np.zeros((len(classes), len(classes)), np.int64)
    np.add.at(confusion, (y, pred), 1)
    return {"accuracy": float(np.mean(pred == y)), "n": int(len(y)), "per_class": per_class,
            "confusion": confusion.tolist()}
