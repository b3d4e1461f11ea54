"""Seeded spike tasks: each sample is ``T`` steps of ``n_in`` binary input channels.

Every task draws, per sample and step, a spike on channel ``i`` with probability
``p[t, i] = rate[t, i] * dt`` (a binary Poisson process, at most one spike per bin),
with ``dt = 1 ms`` and ``T = 1024`` bins by default (the paper's window). A sample is
returned dense (``uint8[T, n_in]``); ``events`` turns it into the ``(t, ch)`` columns
the engine and the daemon consume. Same ``(task, params, n, seed)`` -> same data.

Tasks (parameters and defaults in ``TASKS``):

``poisson-rate``
    ``classes`` classes of homogeneous Poisson channels; class ``k`` fires at
    ``rate * (1 + step) ** k`` Hz, every sample scaled by a common gain drawn from
    ``U(1 - jitter, 1 + jitter)``. The class *is* the rate, so spike counts carry all of
    the information; ``jitter`` keeps the count floor well below 100 %.
``poisson-structure``
    Three classes with the same mean rate (and the same per-sample gain jitter):
    ``homogeneous`` (constant rate), ``modulated`` (``rate * (1 + depth*sin(2 pi f t + phi))``,
    ``f ~ U(f_lo, f_hi)``, random phase) and ``bursty`` (``rate * (1 + depth*z(t))``,
    ``z`` a +-1 telegraph process with mean dwell ``dwell`` s). The drive is shared by a
    fraction ``shared`` of the channels, the rest are homogeneous. Whole-window counts
    cannot separate the classes (the count floor is chance), but second-order statistics
    can: Fano factors and band powers of the population rate score ~99 % at
    ``depth=0.6`` (``trainer.baselines``). ``depth`` is the difficulty knob: smaller is
    harder. (``motif-surrogate`` is the task where only higher-order structure differs.)
``binary-chunks``
    The paper's encoding: one binary sequence of ``T * n_in`` bits, presented ``n_in``
    bits per step (bit ``i`` of step ``t`` is ``seq[t * n_in + i]``). Class ``k`` is a
    stationary binary Markov source with ``P(1) = p`` and lag-1 correlation
    ``corr * k / (classes - 1)``, so all classes have the same expected count; ``corr``
    is the difficulty knob. The correlation shows in the power spectrum (the
    ``fano-spectral`` baseline scores ~98 %).
``motif-surrogate``
    Temporal structure with nothing else to tell the classes apart (surrogate-data
    testing, Theiler et al. 1992). Per sample a source spike train is built from
    inter-spike intervals ``min_isi + Geometric`` (mean ``1 / (rate dt)`` steps): a
    dictionary of ``words`` random words of ``word_len`` intervals, concatenated in random
    order (class ``motif``: the same interval patterns recur), or exactly the same
    intervals in shuffled order (class ``surrogate``: the ISI-shuffled surrogate of the
    same train). Both classes therefore have, sample by sample, the same spike count and
    the same ISI distribution; their power spectra differ only through the order of the
    intervals (recurring words put peaks at per-sample random lags, so the expected
    spectrum is the same). Each input channel carries the source train, every spike kept
    with probability ``keep``, plus homogeneous background at ``background`` Hz.
    ``words`` and ``keep`` are the difficulty knobs.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

DT = 1e-3

TASKS: dict[str, dict[str, Any]] = {
    "poisson-rate": {"n_in": 32, "T": 1024, "classes": 4, "rate": 10.0, "step": 0.25, "jitter": 0.3},
    "poisson-structure": {"n_in": 32, "T": 1024, "rate": 20.0, "depth": 0.3, "f_lo": 4.0,
                          "f_hi": 12.0, "dwell": 0.05, "shared": 0.5, "jitter": 0.3},
    "binary-chunks": {"n_in": 8, "T": 1024, "classes": 3, "p": 0.1, "corr": 0.3},
    "motif-surrogate": {"n_in": 16, "T": 1024, "rate": 60.0, "min_isi": 2, "words": 4,
                        "word_len": 4, "keep": 1.0, "background": 1.0},
}


class Dataset(NamedTuple):
    x: np.ndarray  # uint8[n, T, n_in] input spikes
    y: np.ndarray  # int64[n] class index
    classes: tuple[str, ...]
    task: str
    params: dict[str, Any]  # every task parameter, defaults filled in
    seed: int


def task_params(task: str, **overrides: Any) -> dict[str, Any]:
    """The task's defaults with ``overrides`` applied; unknown names are errors."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {sorted(TASKS)}")
    bad = set(overrides) - set(TASKS[task])
    if bad:
        raise ValueError(f"task {task} has no parameter(s) {sorted(bad)}; it has {sorted(TASKS[task])}")
    p = dict(TASKS[task])
    for k, v in overrides.items():
        p[k] = type(TASKS[task][k])(v)
    return p


SPLITS = {"train": 1, "validation": 2, "test": 3, "evaluate": 4}


def make(task: str, n: int, seed: int, split: str = "train", **overrides: Any) -> Dataset:
    """``n`` samples of ``task``, classes balanced (round robin) then shuffled. Each
    ``split`` draws from its own random stream, so no seed of one split can reproduce
    another split's samples."""
    p = task_params(task, **overrides)
    rng = np.random.default_rng([seed, SPLITS[split], 0x5EED])
    gen, classes = _GENERATORS[task](p)
    y = rng.permutation(np.arange(n) % len(classes)).astype(np.int64)
    x = np.empty((n, p["T"], p["n_in"]), np.uint8)
    for i in range(n):
        x[i] = gen(int(y[i]), rng)
    return Dataset(x, y, classes, task, p, seed)


def events(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(t, ch)`` int64 columns of one dense sample, sorted by time."""
    t, ch = np.nonzero(x)
    return t.astype(np.int64), ch.astype(np.int64)


def counts(d: Dataset) -> np.ndarray:
    """Per-channel spike counts ``float64[n, n_in]`` (the count-floor features)."""
    return d.x.sum(axis=1, dtype=np.float64)


def _bernoulli(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (rng.random(p.shape) < np.clip(p, 0.0, 1.0)).astype(np.uint8)


def _poisson_rate(p):
    T, n_in = p["T"], p["n_in"]

    def gen(k, rng):
        gain = rng.uniform(1 - p["jitter"], 1 + p["jitter"])
        return _bernoulli(np.full((T, n_in), p["rate"] * (1 + p["step"]) ** k * gain * DT), rng)

    return gen, tuple(f"rate{k}" for k in range(p["classes"]))


def _telegraph(T: int, dwell_steps: float, rng: np.random.Generator) -> np.ndarray:
    flips = rng.random(T) < 1.0 / dwell_steps
    return np.where((np.cumsum(flips) + rng.integers(2)) % 2 == 0, 1.0, -1.0)


def _poisson_structure(p):
    T, n_in = p["T"], p["n_in"]
    n_shared = int(round(p["shared"] * n_in))
    t = np.arange(T) * DT

    def gen(k, rng):
        base = p["rate"] * rng.uniform(1 - p["jitter"], 1 + p["jitter"]) * DT
        if k == 0:
            drive = np.ones(T)
        elif k == 1:
            f = rng.uniform(p["f_lo"], p["f_hi"])
            drive = 1 + p["depth"] * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
        else:
            drive = 1 + p["depth"] * _telegraph(T, p["dwell"] / DT, rng)
        prob = np.full((T, n_in), base)
        prob[:, :n_shared] *= drive[:, None]
        return _bernoulli(prob, rng)

    return gen, ("homogeneous", "modulated", "bursty")


def _binary_chunks(p):
    T, n_in, K = p["T"], p["n_in"], p["classes"]
    q = p["p"]

    def gen(k, rng):
        lam = p["corr"] * k / max(K - 1, 1)
        # with probability lam repeat the previous bit, else draw a fresh Bernoulli(q): a
        # Markov chain with P(1 | 1) = q + lam (1 - q), P(1 | 0) = q (1 - lam)
        n = T * n_in
        fresh = rng.random(n) < q
        keep = rng.random(n) < lam
        keep[0] = False
        last = np.maximum.accumulate(np.where(keep, 0, np.arange(n)))
        seq = fresh[last].astype(np.uint8)
        return seq.reshape(T, n_in)

    return gen, tuple(f"corr{k}" for k in range(K))


def motif_intervals(p: dict[str, Any], k: int, rng: np.random.Generator) -> np.ndarray:
    """Source inter-spike intervals (steps) of one ``motif-surrogate`` sample of class ``k``:
    words from a fresh dictionary in random order (``k = 0``), or the same intervals
    shuffled (``k = 1``); long enough to cover ``T``."""
    q = 1.0 / max(1.0 / (p["rate"] * DT) - p["min_isi"] + 1, 1.0)  # geometric success prob
    words = p["min_isi"] - 1 + rng.geometric(q, (p["words"], p["word_len"]))
    n_words = 2 * p["T"] // max(int(words.sum(axis=1).min()), 1) + 2
    isi = words[rng.integers(p["words"], size=n_words)].ravel()
    return rng.permutation(isi) if k == 1 else isi


def _motif_surrogate(p):
    T, n_in = p["T"], p["n_in"]

    def gen(k, rng):
        isi = motif_intervals(p, k, rng)
        t = rng.integers(isi[0]) + np.cumsum(isi)
        src = np.zeros(T, bool)
        src[t[t < T]] = True
        keep = rng.random((T, n_in)) < p["keep"]
        noise = rng.random((T, n_in)) < p["background"] * DT
        return ((src[:, None] & keep) | noise).astype(np.uint8)

    return gen, ("motif", "surrogate")


_GENERATORS = {"poisson-rate": _poisson_rate, "poisson-structure": _poisson_structure,
               "binary-chunks": _binary_chunks, "motif-surrogate": _motif_surrogate}
