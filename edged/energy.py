"""The energy ESTIMATE attached to every decision and to ``edged_energy_joules_total``.

Not a measurement: it prices the arithmetic the model does at the per-operation energies
Horowitz reports for a 45 nm process (ISSCC 2014, "Computing's energy problem"):
32-bit float add 0.9 pJ (an accumulate, AC), float multiply 3.7 pJ (so a multiply-
accumulate, MAC, 4.6 pJ), 32-bit integer add 0.1 pJ. Memory traffic, which dominates on
real CPUs, is left out; CPU seconds per decision are reported beside it for that reason.

Terms, per decision of a stream::

    E = ops * 0.9 pJ                                synaptic accumulates since the stream's
                                                    previous decision (one per weight row
                                                    element added: event -> hidden, spike -> output)
      + (n_hidden + n_out) * hop * m * 4.6 pJ       neuron updates over the hop, m MACs per update
                                                    (meta 13: traces, exp polynomial, membrane,
                                                    threshold; lif 3; meta-esc 68: meta + 15 for
                                                    the hazard's two exponentials and division
                                                    + 40 for the Philox draw, 10 rounds of two
                                                    64-bit products); an upper bound for lif and
                                                    meta, whose quiet stretches are skipped in
                                                    closed form (meta-esc steps every step)
      + n_out * window * 0.1 pJ                     LZ76 parse of each output window (linear time)
      + n_features * n_classes * 4.6 pJ             linear readout

``edged_energy_joules_total`` adds the same terms as work happens: synaptic ops and
neuron updates per completed step, LZ and readout per decision.
"""

from __future__ import annotations

from typing import NamedTuple

AC_J = 0.9e-12  # 32-bit float add, 45 nm
MAC_J = 4.6e-12  # 32-bit float multiply (3.7 pJ) + add (0.9 pJ)
INT_OP_J = 0.1e-12  # 32-bit integer add
NEURON_MACS = {"lif": 3, "meta": 13, "meta-esc": 68}


class EnergyModel(NamedTuple):
    """Joules per unit of work for one model (see the module docstring)."""

    per_op: float  # per synaptic accumulate
    per_step: float  # neuron updates of one stream for one step
    per_decision: float  # LZ parse + readout of one decision

    @classmethod
    def for_model(cls, neuron: str, n_hidden: int, n_out: int, n_features: int,
                  n_classes: int, window: int) -> "EnergyModel":
        return cls(per_op=AC_J,
                   per_step=(n_hidden + n_out) * NEURON_MACS[neuron] * MAC_J,
                   per_decision=n_out * window * INT_OP_J + n_features * n_classes * MAC_J)

    def decision(self, ops: float, hop: int) -> float:
        """Estimated joules of one decision that carries ``ops`` synaptic ops."""
        return ops * self.per_op + hop * self.per_step + self.per_decision

    def work(self, ops: int, steps: int, decisions: int) -> float:
        """Estimated joules of ``ops`` synaptic ops, ``steps`` stream steps, ``decisions``."""
        return ops * self.per_op + steps * self.per_step + decisions * self.per_decision
