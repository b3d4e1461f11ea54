"""Model-card numbers: CPU time and estimated energy per decision on the model's task.

Runs ``n`` fresh samples (``evaluate`` split) through ``edged.engine`` exactly as the
daemon would (one stream, decisions every ``hop`` steps once the window is full) and
times it; the readout is timed separately on single decisions (batch of 1, as served).
``bptt_samples_per_s`` is the surrogate-gradient BPTT throughput (forward + backward
of batches of 16 on this architecture, all cores of ``trainer.bptt.THREADS``).
Energy is the ``edged.energy`` estimate (not a measurement) for the measured synaptic
operations per decision.
"""

from __future__ import annotations

import time

import numpy as np


def measure(model, seed: int = 0, n: int = 50) -> dict:
    from edged.energy import EnergyModel
    from edged.engine import Engine
    from edged.readout import Readout
    from trainer import data

    prov = model.provenance
    d = data.make(prov["task"], n, seed, "evaluate", **prov.get("task_params", {}))
    eng = Engine.for_model(model)
    T = d.x.shape[1]
    evs = [data.events(x) for x in d.x]
    eng.advance(0, *evs[0], T)  # compile and warm
    eng.reset(0)
    sim_s, ops, samples = 0.0, 0, 0
    for t, ch in evs:
        eng.reset(0)
        t0 = time.perf_counter()
        dec = eng.advance(0, t, ch, T)
        sim_s += time.perf_counter() - t0
        ops += dec.ops
        samples += 1
    ro = Readout(model.readout)
    x = dec.features[-1:]
    ro.scores(x)
    reps = 2000
    t0 = time.perf_counter()
    for _ in range(reps):
        ro.scores(x)
    readout_s = (time.perf_counter() - t0) / reps
    steps = samples * T
    bptt_rate = bptt_samples_per_s(model, d)
    energy = EnergyModel.for_model(model.neuron, model.n_hidden, model.n_out, model.n_features,
                                   len(model.classes), model.window)
    ops_per_decision = ops / steps * model.hop
    return {"steps_per_s": steps / sim_s, "us_per_step": sim_s / steps * 1e6,
            "engine_us_per_decision": sim_s / steps * model.hop * 1e6,
            "readout_us_per_decision": readout_s * 1e6,
            "synaptic_ops_per_decision": ops_per_decision,
            "energy_joules_per_decision_estimate": energy.decision(ops_per_decision, model.hop),
            "state_bytes_per_stream": eng.state_bytes(), "hop": model.hop,
            "bptt_samples_per_s": bptt_rate,
            "window": model.window, "samples": samples,
            "note": "engine time per decision = the hop's steps with their LZ76 window "
                    "updates (steady state); "
                    "energy is the edged.energy estimate, not a measurement"}


def bptt_samples_per_s(model, d, batch: int = 16, repeats: int = 3) -> float:
    from trainer import bptt
    from trainer import params as P

    raw = {"w_in": model.w_in.astype(np.float64), "w_out": model.w_out.astype(np.float64)}
    for layer, values in (("hidden", model.hidden), ("output", model.output)):
        raw |= {f"{layer}.{k}": v for k, v in P.to_raw(model.neuron, values).items()}
    x, y = d.x[:batch], d.y[:batch] % model.n_out
    bptt.gradient(model.neuron, raw, x, y, n_classes=len(model.classes))
    t0 = time.perf_counter()
    for _ in range(repeats):
        bptt.gradient(model.neuron, raw, x, y, n_classes=len(model.classes))
    return batch * repeats / (time.perf_counter() - t0)
