"""edged-train: offline training of edged models (tasks, learning rules, readout, CLI)."""
