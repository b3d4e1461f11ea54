"""Summary statistics for experiment tables (SciPy, the ``train`` extra).

``summary``: mean and sample standard deviation (``ddof = 1``) of per-seed accuracies.
``paired``: for accuracies paired by seed, ``d_i = a_i - b_i``: the mean difference, its
95 % confidence interval ``mean(d) -+ t_{0.975, n-1} sd(d) / sqrt(n)``, the two-sided
paired t-test p and the two-sided Wilcoxon signed-rank p (exact for small ``n``; 1.0
when every difference is zero). ``wilson``: the Wilson score interval of a proportion.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def summary(values) -> dict[str, float]:
    v = np.asarray(values, np.float64)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else float("nan"),
            "n": int(len(v))}


def paired(a, b) -> dict[str, Any]:
    """``a - b`` over seeds: ``{n, mean_diff, ci95, t_p, wilcoxon_p}``."""
    try:
        from scipy import stats
    except ImportError:
        raise ImportError("the experiment statistics need SciPy: pip install 'edged[train]'") from None

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples need equal 1-D shapes, got {a.shape} and {b.shape}")
    d = a - b
    n = len(d)
    out: dict[str, Any] = {"n": n, "mean_diff": float(d.mean())}
    if n < 2:
        return out | {"ci95": [float("nan")] * 2, "t_p": float("nan"), "wilcoxon_p": float("nan")}
    sd = d.std(ddof=1)
    half = float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n))
    out["ci95"] = [float(d.mean() - half), float(d.mean() + half)]
    out["t_p"] = float(stats.ttest_rel(a, b).pvalue) if sd > 0 else (1.0 if d.mean() == 0 else 0.0)
    out["wilcoxon_p"] = float(stats.wilcoxon(a, b).pvalue) if np.any(d != 0) else 1.0
    return out


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval (95 % by default) for ``k`` successes in ``n`` trials."""
    if n <= 0:
        raise ValueError("wilson needs n >= 1")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half
