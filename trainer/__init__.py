"""edged-train: offline training of edged models.

Layout (imports flow trainer -> edged, never back):

- ``data``       seeded tasks (``poisson-rate``, ``poisson-structure``, ``binary-chunks``,
                 ``motif-surrogate``)
- ``params``     raw parameters <-> valid intrinsics <-> kernel step coefficients
- ``bptt``       surrogate-gradient BPTT through ``edged.neurons.layer_step`` (hand-derived
                 backward); data-dependent initialisation; run health warnings
- ``stdp``       trace STDP (hidden), teacher-forced STDP (output), named homeostasis rules
- ``tempotron``  the Tempotron rule for the output neurons, single- and multi-spike
- ``linear``     NumPy multinomial logistic regression (readout, count floor) and Adam
- ``baselines``  non-spiking baselines: counts, binned counts, Fano/spectral, input LZC, MLP
- ``stats``      paired tests and intervals for the experiment tables (SciPy)
- ``features``   readout features through ``edged.engine`` (the daemon's own path)
- ``events``     event-folder datasets (``edged.events`` encoding), stratified split,
                 augmentation, early stopping
- ``pipeline``   one run end to end -> ``edged.model.Model``; ``evaluate`` on fresh samples
- ``readout``    fit a readout to an existing network (e.g. a NIR import)
- ``experiment`` the paper table (protocol v2), the surrogate task, the ablation;
                 ``crossval`` nested CV on an event folder; ``card`` model-card numbers;
                 ``report`` PNG report
- ``cli``        ``edged-train run [--events-dir] | evaluate | readout | experiment NAME | card``
"""
