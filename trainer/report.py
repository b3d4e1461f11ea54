"""PNG report of a run (needs the optional ``report`` extra, matplotlib): training
curves, output spike rasters of one test sample per class, and the distribution of
each output neuron's LZC per class."""

from __future__ import annotations

import numpy as np


def write_report(path: str, model, extras: dict) -> bool:
    """Write the report; return False (and write nothing) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    from edged import neurons
    from trainer.data import events

    hist, te = extras["history"], extras["test"]
    K, n_out = len(model.classes), model.n_out
    fig, axes = plt.subplots(3, max(K, 2), figsize=(4 * max(K, 2), 10))
    ax = axes[0, 0]
    keys = [k for k in hist[0] if k not in ("epoch", "samples_per_s")]
    for k in keys:
        ax.plot([h["epoch"] for h in hist], [h[k] for h in hist], marker="o", label=k)
    ax.set_xlabel("epoch")
    ax.set_title(f"{model.provenance['rule']} training ({model.neuron}, {model.provenance['intrinsics']})")
    ax.legend()
    ax = axes[0, 1]
    m = model.provenance["metrics"]
    names = ["accuracy", "nearest_mean_lzc_accuracy", "count_floor_accuracy"]
    ax.bar(["readout", "nearest-mean LZC", "count floor"], [m[n] for n in names])
    ax.set_ylim(0, 1)
    ax.set_title("test accuracy")
    for a in axes[0, 2:]:
        a.axis("off")
    net = model.net()
    for k, c in enumerate(model.classes):
        i = int(np.flatnonzero(te.y == k)[0])
        st = neurons.zero_state(net, 1)
        out = np.zeros((te.x.shape[1], n_out), np.uint8)
        neurons.simulate(net, st, 0, np.uint64(0), *events(te.x[i]), 0, out)
        t, j = np.nonzero(out)
        axes[1, k].scatter(t, j, s=2, marker="|")
        axes[1, k].set_title(f"output spikes, class {c}")
        axes[1, k].set_xlabel("step")
        axes[1, k].set_ylabel("output neuron")
        lzc = extras["features_test"][:, :n_out]
        for k2, c2 in enumerate(model.classes):
            if k < n_out:
                axes[2, k].hist(lzc[te.y == k2, k], bins=20, alpha=0.5, label=c2)
        if k < n_out:
            axes[2, k].set_title(f"LZC of output neuron {k} by class")
            axes[2, k].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True
