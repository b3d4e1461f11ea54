"""edged-train: offline training of edged models.

Layout (imports flow trainer -> edged, never back):

- ``data``       seeded tasks (``poisson-rate``, ``poisson-structure``, ``binary-chunks``)
- ``params``     raw parameters <-> valid intrinsics <-> kernel step coefficients
- ``bptt``       surrogate-gradient BPTT through ``edged.neurons.layer_step`` (hand-derived backward)
- ``stdp``       trace STDP (hidden), teacher-forced STDP (output), intrinsic plasticity
- ``tempotron``  the Tempotron rule for the output neurons (+ threshold, time constant)
- ``linear``     NumPy multinomial logistic regression (readout, count floor) and Adam
- ``features``   readout features through ``edged.engine`` (the daemon's own path)
- ``events``     event-folder datasets (``edged.events`` encoding), stratified split
- ``pipeline``   one run end to end -> ``edged.model.Model``; ``evaluate`` on fresh samples
- ``experiment`` the paper table; ``card`` model-card numbers; ``report`` PNG report
- ``cli``        ``edged-train run [--events-dir] | evaluate | experiment paper | card``
"""
