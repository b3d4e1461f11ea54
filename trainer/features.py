"""Readout features of a dataset through ``edged.engine`` (the daemon's own path).

Each sample ``i`` runs on a cold engine slot, as stream ``sample-<i>`` (the key of its
escape noise), over its ``T`` steps; the sample's features are those of the last decision (window ``[T - window, T)``; with ``T = window`` the only
one), so training, ``edged-train evaluate`` and ``edged serve`` decide identically.
"""

from __future__ import annotations

import numpy as np

from edged.engine import Engine
from trainer.data import Dataset, events



def extract(engine: Engine, d: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(features float32[n, n_features], lz int64[n, n_out], spikes int64[n, n_out])``."""
    T = d.x.shape[1]
    if T < engine.window:
        raise ValueError(f"samples of {T} steps are shorter than the window {engine.window}")
    n_out = engine.net.w_out.shape[1]
    feats = np.empty((len(d.y), n_out * len(engine.features)), np.float32)
    lz = np.empty((len(d.y), n_out), np.int64)
    spikes = np.empty((len(d.y), n_out), np.int64)
    for i in range(len(d.y)):
        engine.reset(0, f"sample-{i}")
        t, ch = events(d.x[i])
        dec = engine.advance(0, t, ch, T)
        feats[i], lz[i], spikes[i] = dec.features[-1], dec.lz[-1], dec.spikes[-1]
    return feats, lz, spikes
