"""Non-spiking baselines: what the input alone gives, without an SNN.

Each baseline maps a sample ``x[T, C]`` (input events per step and channel) to a feature
vector, is fitted on ``train``, has its hyper-parameters chosen on ``validation`` and is
scored once on ``test`` (``score``). The classifier is the multinomial logistic
regression of ``trainer.linear`` (L2 weight ``l2`` tuned) except for ``mlp``.

``count``
    Per-channel event counts over the whole sample.
``binned-count``
    ``log1p`` of per-channel counts in ``bins`` equal time bins (``bins`` tuned among
    ``BINS`` up to ``MAX_BINNED_FEATURES`` features).
``fano-spectral``
    Of the population signal ``p(t) = sum_c x[t, c]``: the Fano factor ``var/mean`` of
    its counts in bins of 2^1 .. 2^7 steps, and ``log`` Welch band powers (Hann
    segments of 256 steps, half overlap, mean removed) in 12 log-spaced bands from
    ``1/(256 dt)`` to Nyquist, plus the mean rate.
``input-lzc``
    Normalised LZ76 complexity (``edged.lzc``) of every input channel's binary train
    over the whole sample and of the population train ``p(t) > 0``: LZC of the raw
    input, no SNN in between.
``mlp``
    One hidden ReLU layer (width tuned) on standardised ``log1p`` binned counts
    (``bins`` tuned), Adam on cross-entropy with weight decay, early-stopped on the
    validation split.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np

from trainer import linear

NAMES = ("count", "binned-count", "fano-spectral", "input-lzc", "mlp")
L2 = (1e-3, 1e-2, 1e-1)
BINS = (2, 3, 4, 8, 16, 32)
MAX_BINNED_FEATURES = 2400  # bins x channels: keeps the logistic fits small on wide inputs
FANO_WIDTHS = tuple(2 ** k for k in range(1, 8))
WELCH_SEGMENT = 256
N_BANDS = 12


class Split(NamedTuple):
    x: np.ndarray  # uint8[n, T, C] events per step and channel
    y: np.ndarray  # int64[n]


def count_features(x: np.ndarray) -> np.ndarray:
    return x.sum(axis=1, dtype=np.float64)


def binned_counts(x: np.ndarray, bins: int) -> np.ndarray:
    """``log1p`` counts ``float64[n, bins * C]`` in ``bins`` equal time bins (the last
    bin takes the remainder)."""
    n, T, C = x.shape
    edges = np.linspace(0, T, bins + 1).astype(int)
    cum = np.concatenate([np.zeros((n, 1, C)), np.cumsum(x, axis=1, dtype=np.float64)], axis=1)
    per_bin = cum[:, edges[1:]] - cum[:, edges[:-1]]
    return np.log1p(per_bin).reshape(n, -1)


def fano_spectral_features(x: np.ndarray, dt: float = 1e-3) -> np.ndarray:
    pop = x.sum(axis=2, dtype=np.float64)  # [n, T]
    n, T = pop.shape
    feats = [np.log(pop.mean(axis=1, keepdims=True) + 1e-9)]
    for w in FANO_WIDTHS:
        m = T // w
        c = pop[:, :m * w].reshape(n, m, w).sum(axis=2)
        feats.append((c.var(axis=1) / np.maximum(c.mean(axis=1), 1e-9))[:, None])
    seg = min(WELCH_SEGMENT, T)
    starts = np.arange(0, T - seg + 1, seg // 2)
    win = np.hanning(seg)
    segs = pop[:, starts[:, None] + np.arange(seg)]  # [n, k, seg]
    segs = (segs - segs.mean(axis=2, keepdims=True)) * win
    psd = (np.abs(np.fft.rfft(segs, axis=2)) ** 2).mean(axis=1)  # [n, seg // 2 + 1]
    freqs = np.fft.rfftfreq(seg, dt)
    edges = np.geomspace(freqs[1], freqs[-1] + 1e-9, N_BANDS + 1)
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (freqs >= lo) & (freqs < hi)
        sel = sel if sel.any() else np.abs(freqs - lo) == np.abs(freqs - lo).min()
        feats.append(np.log(psd[:, sel].mean(axis=1, keepdims=True) + 1e-9))
    return np.concatenate(feats, axis=1)


def input_lzc_features(x: np.ndarray) -> np.ndarray:
    from edged.lzc import lz76_jit, normalise

    n, T, C = x.shape
    out = np.empty((n, C + 1))
    bits = (x > 0).astype(np.uint8)
    for i in range(n):
        for c in range(C):
            out[i, c] = normalise(lz76_jit(np.ascontiguousarray(bits[i, :, c])), T)
        out[i, C] = normalise(lz76_jit(np.ascontiguousarray(bits[i].max(axis=1))), T)
    return out


def _logistic(features: Callable[[np.ndarray], np.ndarray], grid: dict[str, tuple],
              tr: Split, va: Split, te: Split, n_classes: int) -> dict[str, Any]:
    """Fit on train for every point of ``grid`` (feature options x ``l2``), keep the best
    on validation, score it on test."""
    best: dict[str, Any] | None = None
    cache: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
    keys = [k for k in grid if k != "l2"]
    for point in _points(grid):
        opt = tuple(point[k] for k in keys)
        if opt not in cache:
            f = (lambda x: features(x, **dict(zip(keys, opt))))
            cache[opt] = (f(tr.x), f(va.x))
        f_tr, f_va = cache[opt]
        fit = linear.fit(f_tr, tr.y, n_classes, l2=point["l2"])
        acc = linear.accuracy(fit, f_va, va.y)
        if best is None or acc > best["validation_accuracy"]:
            best = {"validation_accuracy": acc, "chosen": point, "fit": fit}
    opt = tuple(best["chosen"][k] for k in keys)
    test = linear.accuracy(best.pop("fit"), features(te.x, **dict(zip(keys, opt))), te.y)
    return {"accuracy": test, **best}


def _points(grid: dict[str, tuple]) -> list[dict[str, Any]]:
    points = [{}]
    for k, values in grid.items():
        points = [p | {k: v} for p in points for v in values]
    return points


class MLP(NamedTuple):
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    mean: np.ndarray
    scale: np.ndarray

    def scores(self, x: np.ndarray) -> np.ndarray:
        h = np.maximum(((x - self.mean) / self.scale) @ self.w1 + self.b1, 0.0)
        return h @ self.w2 + self.b2


def fit_mlp(f_tr: np.ndarray, y_tr: np.ndarray, f_va: np.ndarray, y_va: np.ndarray,
            n_classes: int, hidden: int, seed: int = 0, epochs: int = 200, batch: int = 64,
            lr: float = 3e-3, weight_decay: float = 1e-3, patience: int = 20) -> tuple[MLP, float]:
    """Train on ``(f_tr, y_tr)``; return the epoch with the best validation accuracy and
    that accuracy (stopping ``patience`` epochs after it)."""
    rng = np.random.default_rng([seed, 0x3179])
    mean = f_tr.mean(axis=0)
    scale = np.where(f_tr.std(axis=0) > 1e-9, f_tr.std(axis=0), 1.0)
    z = (f_tr - mean) / scale
    d = z.shape[1]
    w1 = rng.normal(0, np.sqrt(2.0 / d), (d, hidden))
    b1 = np.zeros(hidden)
    w2 = rng.normal(0, np.sqrt(1.0 / hidden), (hidden, n_classes))
    b2 = np.zeros(n_classes)
    opt = linear.Adam([w1, b1, w2, b2], lr)
    onehot = np.eye(n_classes)[y_tr]
    best, best_acc, since = None, -1.0, 0
    for _ in range(epochs):
        for idx in np.array_split(rng.permutation(len(y_tr)), max(1, len(y_tr) // batch)):
            h_pre = z[idx] @ w1 + b1
            h = np.maximum(h_pre, 0.0)
            g = (linear.softmax(h @ w2 + b2) - onehot[idx]) / len(idx)
            gh = (g @ w2.T) * (h_pre > 0)
            opt.step([z[idx].T @ gh + weight_decay * w1, gh.sum(0), h.T @ g + weight_decay * w2,
                      g.sum(0)])
        model = MLP(w1.copy(), b1.copy(), w2.copy(), b2.copy(), mean, scale)
        acc = float(np.mean(np.argmax(model.scores(f_va), axis=1) == y_va))
        if acc > best_acc:
            best, best_acc, since = model, acc, 0
        else:
            since += 1
            if since >= patience:
                break
    return best, best_acc


def _mlp(tr: Split, va: Split, te: Split, n_classes: int, seed: int) -> dict[str, Any]:
    best: dict[str, Any] | None = None
    for bins in (4, 16):
        f_tr, f_va = binned_counts(tr.x, bins), binned_counts(va.x, bins)
        for hidden in (32, 128):
            model, acc = fit_mlp(f_tr, tr.y, f_va, va.y, n_classes, hidden, seed)
            if best is None or acc > best["validation_accuracy"]:
                best = {"validation_accuracy": acc, "chosen": {"bins": bins, "hidden": hidden},
                        "model": model}
    f_te = binned_counts(te.x, best["chosen"]["bins"])
    test = float(np.mean(np.argmax(best.pop("model").scores(f_te), axis=1) == te.y))
    return {"accuracy": test, **best}


def score(tr: Split, va: Split, te: Split, n_classes: int, names: tuple[str, ...] = NAMES,
          seed: int = 0, dt: float = 1e-3) -> dict[str, dict[str, Any]]:
    """``{name: {accuracy (test), validation_accuracy, chosen}}`` for each baseline."""
    bins = tuple(b for b in BINS if b * tr.x.shape[2] <= MAX_BINNED_FEATURES) or BINS[:1]
    runs: dict[str, Callable[[], dict[str, Any]]] = {
        "count": lambda: _logistic(lambda x: count_features(x), {"l2": L2}, tr, va, te, n_classes),
        "binned-count": lambda: _logistic(binned_counts, {"bins": bins, "l2": L2}, tr, va, te,
                                          n_classes),
        "fano-spectral": lambda: _logistic(lambda x: fano_spectral_features(x, dt), {"l2": L2},
                                           tr, va, te, n_classes),
        "input-lzc": lambda: _logistic(lambda x: input_lzc_features(x), {"l2": L2}, tr, va, te,
                                       n_classes),
        "mlp": lambda: _mlp(tr, va, te, n_classes, seed),
    }
    unknown = set(names) - set(runs)
    if unknown:
        raise ValueError(f"unknown baselines {sorted(unknown)}; choose from {NAMES}")
    return {name: runs[name]() for name in names}


def accuracies(result: dict[str, dict[str, Any]]) -> dict[str, float]:
    """``{name: test accuracy}`` of a ``score`` result (the experiment rows' columns)."""
    return {name: r["accuracy"] for name, r in result.items()}
