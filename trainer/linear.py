"""Multinomial logistic regression in NumPy: the readout fit and the spike-count floor.

Features are standardised (``(x - mean) / scale``, the affine part of the ONNX graph of
``edged.readout.linear_onnx``), then ``W, b`` minimise the mean cross-entropy plus
``l2/2 * |W|^2`` by full-batch Adam. Small problems only (n x d of a few 10^5).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Linear(NamedTuple):
    weight: np.ndarray  # float64[d, k]
    bias: np.ndarray  # float64[k]
    mean: np.ndarray  # float64[d]
    scale: np.ndarray  # float64[d]

    def scores(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, np.float64) - self.mean) / self.scale) @ self.weight + self.bias

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.argmax(self.scores(x), axis=1)

    def onnx(self) -> bytes:
        from edged.readout import linear_onnx

        return linear_onnx(self.weight, self.bias, self.mean, self.scale)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def fit(x: np.ndarray, y: np.ndarray, n_classes: int, l2: float = 1e-3, steps: int = 800,
        lr: float = 0.05) -> Linear:
    """Fit ``Linear`` to features ``x[n, d]`` and labels ``y[n]``."""
    x = np.asarray(x, np.float64)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    z = (x - mean) / scale
    onehot = np.eye(n_classes)[y]
    w = np.zeros((x.shape[1], n_classes))
    b = np.zeros(n_classes)
    opt = Adam([w, b], lr)
    for _ in range(steps):
        p = softmax(z @ w + b)
        g = (p - onehot) / len(y)
        opt.step([z.T @ g + l2 * w, g.sum(axis=0)])
    return Linear(w, b, mean, scale)


def accuracy(model: Linear, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(model.predict(x) == y))


def class_means(x: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class mean feature vectors ``float64[k, d]`` (the nearest-mean baseline)."""
    return np.stack([np.asarray(x, np.float64)[y == c].mean(axis=0) for c in range(n_classes)])


class Adam:
    """Adam (Kingma & Ba 2015) updating a list of float64 arrays in place."""

    def __init__(self, params: list[np.ndarray], lr: float, b1: float = 0.9, b2: float = 0.999,
                 eps: float = 1e-8):
        self.params, self.lr, self.b1, self.b2, self.eps = params, lr, b1, b2, eps
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads: list[np.ndarray], lr: float | None = None) -> None:
        self.t += 1
        lr = self.lr if lr is None else lr
        c1, c2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= self.b1
            m += (1 - self.b1) * g
            v *= self.b2
            v += (1 - self.b2) * g * g
            p -= lr * (m / c1) / (np.sqrt(v / c2) + self.eps)
