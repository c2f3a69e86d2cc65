from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from tempnlp._checks import positive_float
from tempnlp.objectives.base import (
    ContrastiveObjective,
    as_columns,
    check_extra_negatives,
    logits_dtype,
    normalized_similarities,
    scale_by_temperature,
    validate_batch,
)
from tempnlp.objectives.distributed import global_batch
from tempnlp.temperature import TemperaturePolicy


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
        check_finite: raise a ValueError on NaN/inf embeddings (one host read per call; False skips it).

    Reference: Yeh, Hong, Hsu, Liu, Chen and LeCun 2022, "Decoupled Contrastive Learning", ECCV,
    arXiv 2110.06848.
    """

    def __init__(
        self,
        temperature: TemperaturePolicy | float = 0.05,
        sigma: float | None = None,
        symmetric: bool = False,
        anchor_negatives: bool = False,
        check_finite: bool = True,
        gather_across_devices: bool = False,
    ) -> None:
        super().__init__(temperature)
        self.gather_across_devices = bool(gather_across_devices)
        if self.temperature.reweights:
            raise ValueError(
                f"{type(self.temperature).__name__}(reweight=True) weights each row by 1 / (1 - P), which is "
                "defined for InfoNCE, whose loss -log P vanishes as P -> 1; DCL's loss does not, so the product "
                "grows without bound. Use InfoNCE / InfoNCELoss, or reweight=False with DCL."
            )
        self.sigma = None if sigma is None else positive_float("sigma", sigma, hint="DCLW uses 0.5.")
        self.symmetric = bool(symmetric)
        self.anchor_negatives = bool(anchor_negatives)
        self.check_finite = bool(check_finite)

    def forward(
        self,
        anchors: Tensor,
        documents: Tensor | Sequence[Tensor],
        indices: Tensor | None = None,
        extra_negatives: Tensor | None = None,
    ) -> Tensor:
        columns = as_columns(documents)
        validate_batch(anchors, columns, check_values=self.check_finite)
        check_extra_negatives(extra_negatives, anchors)
        anchors, columns, indices = global_batch(self, anchors, columns, indices)
        batch_size = anchors.size(0)
        forward_negatives = batch_size * len(columns) - 1 + (0 if extra_negatives is None else len(extra_negatives))
        backward_negatives = (batch_size - 1) * (2 if self.anchor_negatives else 1)
        if forward_negatives < 1 or (self.symmetric and backward_negatives < 1):
            raise ValueError(
                "DCL needs at least one negative in each direction: a batch of one (anchor, positive) pair has none"
                + (" for the document-to-anchor term" if self.symmetric else "")
                + ". Use a batch size > 1, or add a hard-negative column (symmetric=False)."
            )
        self.last_temperatures = []
        similarities, anchors_normalized = normalized_similarities(anchors, columns, extra_negatives)
        dtype = logits_dtype(similarities.dtype)
        similarities = similarities.to(dtype)
        rows = torch.arange(batch_size, device=anchors.device)
        positives = similarities[rows, rows]
        weights = self.positive_weights(positives)

        forward = similarities
        if self.anchor_negatives:
            forward = torch.cat([forward, (anchors_normalized @ anchors_normalized.T).to(dtype)], dim=1)
        losses = self._row_losses(forward, positives, weights, anchors, indices, rows)
        if self.symmetric:
            backward = similarities[:, :batch_size].T  # the queue, if any, serves the forward direction only
            if self.anchor_negatives:
                positives_normalized = F.normalize(columns[0], p=2, dim=1)
                backward = torch.cat([backward, (positives_normalized @ positives_normalized.T).to(dtype)], dim=1)
            backward_losses = self._row_losses(backward, positives, weights, columns[0], indices, rows)
            losses = 0.5 * (losses + backward_losses)
        return losses.mean()

    def positive_weights(self, positive_similarities: Tensor) -> Tensor | None:
        """DCLW's von Mises-Fisher weights ``2 - B * softmax(s_ii / sigma)`` (detached, mean 1); None for DCL."""
        if self.sigma is None:
            return None
        batch_size = positive_similarities.size(0)
        return 2.0 - batch_size * torch.softmax(positive_similarities.detach() / self.sigma, dim=0)

    def _row_losses(
        self,
        similarities: Tensor,
        positives: Tensor,
        weights: Tensor | None,
        anchors: Tensor,
        indices: Tensor | None,
        rows: Tensor,
    ) -> Tensor:
        tau = self._temperature(similarities, positives, anchors, indices)
        logits = scale_by_temperature(similarities, tau)
        positive_logits = logits[rows, rows]
        # Out of the denominator: the positive itself and, in the anchor block, each anchor's self-similarity.
        excluded = torch.zeros_like(logits, dtype=torch.bool)
        excluded[rows, rows] = True
        if self.anchor_negatives:  # the self block is always last
            excluded[rows, similarities.size(1) - rows.numel() + rows] = True
        negative_lse = torch.logsumexp(logits.masked_fill(excluded, float("-inf")), dim=1)
        return negative_lse - (positive_logits if weights is None else weights * positive_logits)

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
    ) -> None:
        super().__init__(temperature, sigma, symmetric, anchor_negatives, check_finite)
