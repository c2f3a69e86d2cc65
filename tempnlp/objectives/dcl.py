from __future__ import annotations

import torch
from torch import Tensor

from tempnlp._checks import positive_float
from tempnlp.objectives.base import ContrastiveObjective
from tempnlp.objectives.candidates import CandidateBatch, Direction
from tempnlp.temperature import TemperaturePolicy
from tempnlp.temperature.base import LOGIT_OFFSET, RowStatistics


class DCL(ContrastiveObjective):
    """Decoupled contrastive learning: InfoNCE with the positive taken out of the denominator.

    ::

        l_i = -w_i * s_ii / tau_ii + log sum_{j != i} exp(s_ij / tau_ij)

    The negatives of anchor ``i`` are every other document of the batch (other rows' positives and all
    hard-negative columns); with ``anchor_negatives=True`` the other anchors are negatives too, which is the
    paper's SimCLR setting (2N - 2 negatives). ``w_i = 1`` for DCL; DCLW (``sigma`` set, paper: 0.5) weights the
    positive term by the von Mises-Fisher factor ``w_i = 2 - B * softmax_i(s_ii / sigma)`` over the batch's
    positive pairs (detached, mean 1), which emphasises the hard, poorly aligned positives.
    ``symmetric=True`` averages with the document-to-anchor direction, as the paper and lightly do.

    Args:
        temperature: a number (fixed tau) or a :class:`~tempnlp.temperature.TemperaturePolicy`.
        sigma: None for DCL, a positive number for DCLW.
        symmetric: add the document-to-anchor direction.
        anchor_negatives: also contrast each anchor with the other anchors.
        check_finite: raise a ValueError on NaN/inf embeddings or, under a per-sample temperature, an index out
            of range or repeated in the batch (one host read per call; False skips both checks).

    Reference: Yeh, Hong, Hsu, Liu, Chen and LeCun 2022, "Decoupled Contrastive Learning", ECCV,
    arXiv 2110.06848.
    """

    positive_in_partition = False
    offers = frozenset({LOGIT_OFFSET})
    display_name = "DCL"

    def __init__(
        self,
        temperature: TemperaturePolicy | float = 0.05,
        sigma: float | None = None,
        symmetric: bool = False,
        anchor_negatives: bool = False,
        check_finite: bool = True,
        gather_across_devices: bool = False,
    ) -> None:
        super().__init__(
            temperature,
            symmetric=symmetric,
            same_view_negatives=anchor_negatives,
            check_finite=check_finite,
            gather_across_devices=gather_across_devices,
        )
        self.sigma = None if sigma is None else positive_float("sigma", sigma, hint="DCLW uses 0.5.")

    @property
    def anchor_negatives(self) -> bool:
        return self.same_view_negatives

    def positive_weights(self, positive_similarities: Tensor) -> Tensor | None:
        """DCLW's von Mises-Fisher weights ``2 - B * softmax(s_ii / sigma)`` (detached, mean 1); None for DCL."""
        if self.sigma is None:
            return None
        batch_size = positive_similarities.size(0)
        return 2.0 - batch_size * torch.softmax(positive_similarities.detach() / self.sigma, dim=0)

    def row_losses(self, direction: Direction, tau: Tensor, batch: CandidateBatch) -> tuple[Tensor, RowStatistics]:
        logits = self.scaled_logits(direction, tau)
        rows = torch.arange(direction.batch_size, device=logits.device)
        positive_logits = logits[rows, rows]
        in_partition = direction.partition_mask(positive_in_partition=False)
        negative_lse = torch.logsumexp(logits.masked_fill(~in_partition, float("-inf")), dim=1)
        weights = self.positive_weights(batch.positive_similarities)
        losses = negative_lse - (positive_logits if weights is None else weights * positive_logits)
        return losses, self.statistics(direction, tau, batch, in_partition=in_partition)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, symmetric={self.symmetric}, anchor_negatives={self.anchor_negatives}"


class DCLW(DCL):
    """:class:`DCL` with the von Mises-Fisher weighting of the positives (``sigma=0.5`` as in the paper)."""

    def __init__(
        self,
        temperature: TemperaturePolicy | float = 0.05,
        sigma: float = 0.5,
        symmetric: bool = False,
        anchor_negatives: bool = False,
        check_finite: bool = True,
        gather_across_devices: bool = False,
    ) -> None:
        super().__init__(temperature, sigma, symmetric, anchor_negatives, check_finite, gather_across_devices)
