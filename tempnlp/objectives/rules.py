"""Which temperature policy goes with which objective: the one place a combination is refused.

A policy lists what it needs from the objective in ``policy.requires``; an objective lists what it offers in
``objective.offers``. Three facts are needed today:

* MACL's ``1 / (1 - P_i)`` reweighting multiplies the row loss ``-log P_i``, which InfoNCE offers
  (``row_log_probability``); with the positive outside the partition (DCL, SogCLR) the row loss does not vanish as
  ``P_i -> 1`` and the product grows without bound.
* A temperature trained by the loss's own gradient (CLIP's learnable tau) needs a loss whose gradient in tau does
  not drive it to a bound (``gradient_trained_tau``). InfoNCE's does not: the derivative of a row's ``-log P_i`` in
  tau is ``sum_j p_ij (s_ii - s_ij) / tau^2``, which turns negative at small tau in a row whose hardest negative
  beats its positive, and in a row that ranks its positive first fades like ``exp(-margin / tau) / tau^2``.
  SogCLR's objective ``tau * log s`` has the derivative ``-KL(p || uniform) <= 0``, so such a tau only grows; the
  DRO policies add the KL radius ``rho`` that bounds it. DCL's row loss ``log sum_{j != i} exp(s_ij / tau) -
  w_i s_ii / tau`` (``w_i = 1``; DCLW's weights otherwise) has the derivative ``(w_i s_ii - E_q[s_ij]) / tau^2``,
  ``q`` the softmax over the negatives, and ``E_q[s_ij] <= max_j s_ij``. Once the (weighted) positives beat the
  hardest negative on average over the batch, which is what training achieves, the batch's derivative is at least
  that mean margin over ``tau^2`` at every tau: there is no stationary point, the loss falls without bound as
  tau -> 0, and such a tau slides to its floor.
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
        "is, or holds, a tau trained by the loss's own gradient, which needs a loss whose gradient in tau does not "
        "drive it to a bound (InfoNCE's does not). {tau_reason}"
    ),
}

#: how an objective's gradient in tau drives a learnable tau to a bound, by ``display_name``
TAU_REASONS = {
    "SogCLR": (
        "SogCLR's objective tau * log s has the derivative -KL(p || uniform) <= 0 in tau: the temperature would "
        "only grow. Use IndividualTemperature or TempNetTemperature (their DRO update adds the KL radius rho), or a "
        "learnable tau on InfoNCE."
    ),
    "DCL": (
        "DCL's does once the positives (DCLW: weighted by w_i) beat the hardest negative on average, as training "
        "makes them: each row's derivative in tau is at least (positive - hardest negative) / tau^2, so descent "
        "lowers tau at every scale, the loss falls without bound as tau -> 0 and the temperature slides to "
        "min_tau. Use a learnable tau on InfoNCE, or a fixed tau or another policy on DCL."
    ),
}


def check_combination(objective, policy) -> None:
    """Raise a ValueError naming the policy, the objective and the reason when they cannot work together."""
    missing = sorted(policy.requires - objective.offers)
    if missing:
        name = objective.display_name or type(objective).__name__
        tau_reason = TAU_REASONS.get(name, f"{name}'s does.")
        reasons = " ".join(WHY[need].format(name=name, tau_reason=tau_reason) for need in missing)
        raise ValueError(f"{policy!r} {reasons}")
