"""Which temperature policy goes with which objective: the one place a combination is refused.

A policy lists what it needs from the objective in ``policy.requires``; an objective lists what it offers in
``objective.offers``. Three facts are needed today:

* MACL's ``1 / (1 - P_i)`` reweighting multiplies the row loss ``-log P_i``, which InfoNCE offers
  (``row_log_probability``); with the positive outside the partition (DCL, SogCLR) the row loss does not vanish as
  ``P_i -> 1`` and the product grows without bound.
* A temperature trained by the loss's own gradient (CLIP's learnable tau) needs a loss that does not always push
  it one way (``gradient_trained_tau``): InfoNCE and DCL. SogCLR's objective is ``tau * log s``, whose derivative
  in tau is ``-KL(p || uniform) <= 0``, so such a tau only grows; the DRO policies add the KL radius ``rho`` that
  bounds it.
* A hardness penalty is added to the scaled logits (``logit_offset``), which InfoNCE and DCL take; SogCLR's
  moving-average estimator weighs the negatives by ``exp(h / tau)`` alone.
"""

from __future__ import annotations

from tempnlp.temperature.base import GRADIENT_TRAINED_TAU, LOGIT_OFFSET, ROW_LOG_PROBABILITY

WHY = {
    ROW_LOG_PROBABILITY: (
        "weights each row by 1 / (1 - P), which is defined for InfoNCE, whose loss -log P vanishes as P -> 1; {name}'s "
        "loss does not, so the product grows without bound. Use InfoNCE / InfoNCELoss, or reweight=False with {name}."
    ),
    LOGIT_OFFSET: (
        "adds a penalty to the scaled logits, which {name} does not take: its moving-average estimator weighs the "
        "negatives by exp(h / tau) alone. Use InfoNCE or DCL."
    ),
    GRADIENT_TRAINED_TAU: (
        "is trained by the loss's own gradient, and {name}'s objective tau * log s has the derivative "
        "-KL(p || uniform) <= 0 in tau: the temperature would only grow. Use IndividualTemperature or "
        "TempNetTemperature (their DRO update adds the KL radius rho), or a learnable tau on InfoNCE or DCL."
    ),
}


def check_combination(objective, policy) -> None:
    """Raise a ValueError naming the policy, the objective and the reason when they cannot work together."""
    missing = sorted(policy.requires - objective.offers)
    if missing:
        name = objective.display_name or type(objective).__name__
        reasons = " ".join(WHY[need].format(name=name) for need in missing)
        raise ValueError(f"{policy!r} {reasons}")
