from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tempnlp._checks import finite_float, flag, ordered_bounds, positive_float
from tempnlp.temperature.base import ROW_LOG_PROBABILITY, RowStatistics, TemperaturePolicy


class MACLTemperature(TemperaturePolicy):
    """Alignment-adaptive temperature of Model-Aware Contrastive Learning (MACL).

    Each step the temperature follows how well the positives are aligned::

        A   = mean over the batch of cos(anchor_i, positive_i)     (detached)
        tau = max(tau0 * (1 + alpha * (A - A0)), min_tau)

    Well-aligned batches (large A) get a larger temperature, which spreads the penalty over more negatives;
    poorly aligned ones a smaller, harder one. Optionally (``reweight=True``, always on in the authors' code)
    each anchor's loss is multiplied by the detached factor ``1 / (1 - P_i)``, where ``P_i`` is the softmax
    probability of its positive, which restores the gradient of pairs the model already separates.

    Defaults are those the DySTreSS authors used for MACL on SimCSE (tau0 0.05, alpha 2, A0 0.8); the MACL code
    itself fixes none. ``min_tau`` keeps the temperature positive when the alignment collapses.

    Args:
        tau0: temperature at alignment ``A0``.
        alpha: sensitivity to the alignment (any finite value; 0 gives a fixed ``tau0``).
        A0: reference alignment, a cosine in [-1, 1].
        min_tau: lower clamp of the temperature.
        reweight: multiply each anchor's loss by ``1 / (1 - P_i)`` (detached).

    Reference: Huang et al., "Model-Aware Contrastive Learning: Towards Escaping the Dilemmas", ICML 2023,
    arXiv 2207.07874.

    Example::

        loss = InfoNCELoss(model, temperature=MACLTemperature(tau0=0.05, alpha=2.0, A0=0.8, reweight=True))
    """

    name = "macl"
    summary = "tau per batch from the positives' alignment, optional 1/(1-P) loss reweighting (InfoNCE)"
    paper = "Huang et al. 2023 (MACL), arXiv 2207.07874"
    usage = "MACLTemperature(tau0=0.05, alpha=2.0, A0=0.8, reweight=False)"
    citation = """
@misc{huang2022macl,
    title = {Model-Aware Contrastive Learning: Towards Escaping the Dilemmas},
    author = {Huang, Zizheng and Chen, Haoxing and Wen, Ziqi and Zhang, Chao and Li, Huaxiong and Wang, Bo
              and Chen, Chunlin},
    year = {2022},
    eprint = {2207.07874},
    archivePrefix = {arXiv},
}
"""

    def __init__(
        self,
        tau0: float = 0.05,
        alpha: float = 2.0,
        A0: float = 0.8,
        min_tau: float = 0.01,
        reweight: bool = False,
    ) -> None:
        super().__init__()
        self.tau0 = positive_float("tau0", tau0)
        self.alpha = finite_float("alpha", alpha)
        self.A0 = finite_float("A0", A0)
        if not -1.0 <= self.A0 <= 1.0:
            raise ValueError(f"A0 is a reference cosine similarity and must lie in [-1, 1], got {self.A0}.")
        self.min_tau = positive_float("min_tau", min_tau)
        ordered_bounds("min_tau", self.min_tau, "tau0", self.tau0)  # above tau0 it would pin tau at min_tau
        self.reweight = flag("reweight", reweight)

    def compute(self, similarities: Tensor, positive_similarities: Tensor, **context: Any) -> Tensor:
        alignment = positive_similarities.detach().mean()
        return (self.tau0 * (1.0 + self.alpha * (alignment - self.A0))).clamp(min=self.min_tau)

    @property
    def requires(self) -> frozenset[str]:
        return frozenset({ROW_LOG_PROBABILITY}) if self.reweight else frozenset()

    def observe(self, row_losses: Tensor, statistics: RowStatistics) -> Tensor:
        """With ``reweight``: each row's ``-log P_i`` times the detached ``1 / (1 - P_i)``."""
        if not self.reweight:
            return row_losses
        negative_log_probs = statistics.row_log_probability()  # precise, differentiable, float64
        # 1 - exp(log P) via expm1 keeps its digits when P is close to 1.
        one_minus_p = -torch.expm1(-negative_log_probs.detach())
        weights = 1.0 / one_minus_p.clamp(min=torch.finfo(one_minus_p.dtype).tiny)
        return (negative_log_probs * weights).to(row_losses.dtype)

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "tau0": self.tau0,
            "alpha": self.alpha,
            "A0": self.A0,
            "min_tau": self.min_tau,
            "reweight": self.reweight,
        }
