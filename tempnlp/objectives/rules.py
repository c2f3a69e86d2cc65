"""Which temperature policy goes with which objective: the one place a combination is refused.

A policy lists what it needs from the objective in ``policy.requires``; an objective lists what it offers in
``objective.offers``. Today one fact is needed by a policy: MACL's ``1 / (1 - P_i)`` reweighting multiplies the
row loss ``-log P_i``, which InfoNCE offers (``row_log_probability``); with the positive outside the partition
(DCL, SogCLR) the row loss does not vanish as ``P_i -> 1`` and the product grows without bound.
"""

from __future__ import annotations

from tempnlp.temperature.base import ROW_LOG_PROBABILITY

WHY = {
    ROW_LOG_PROBABILITY: (
        "weights each row by 1 / (1 - P), which is defined for InfoNCE, whose loss -log P vanishes as P -> 1; {name}'s "
        "loss does not, so the product grows without bound. Use InfoNCE / InfoNCELoss, or reweight=False with {name}."
    ),
}


def check_combination(objective, policy) -> None:
    """Raise a ValueError naming the policy, the objective and the reason when they cannot work together."""
    missing = sorted(policy.requires - objective.offers)
    if missing:
        name = objective.display_name or type(objective).__name__
        reasons = " ".join(WHY[need].format(name=name) for need in missing)
        raise ValueError(f"{policy!r} {reasons}")
