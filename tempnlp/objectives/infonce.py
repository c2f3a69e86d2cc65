from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

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


class InfoNCE(ContrastiveObjective):
    """InfoNCE with in-batch negatives, hard-negative columns and an optional symmetric term.

    Row ``i`` scores its anchor against every document of the batch (the B positives, then each hard-negative
    column), divided by the policy's temperature; the loss is the cross-entropy of picking document ``i``::

        l_i = -log( exp(s_ii / tau_ii) / sum_j exp(s_ij / tau_ij) )

    With ``symmetric=True`` the document-to-anchor term (each positive against the B anchors) is added and the
    two are averaged, as in sentence-transformers' ``MultipleNegativesRankingLoss(directions=("query_to_doc",
    "doc_to_query"), partition_mode="per_direction")``. With a fixed temperature this is exactly MNRL with
    ``scale = 1 / tau``.

    Similarities are scaled and reduced in at least float32 with log-sum-exp, so tau = 0.01 is finite under bf16
    and fp16 autocast.

    Args:
        temperature: a number (fixed tau) or a :class:`~tempnlp.temperature.TemperaturePolicy`.
        symmetric: add the document-to-anchor direction.
        check_finite: raise a ValueError on NaN/inf embeddings (one host read per call; False skips it).
        gather_across_devices: in multi-process training, evaluate the loss on the global batch (see
            :mod:`tempnlp.objectives.distributed`).

    Call it as ``objective(anchors, documents, indices=None, extra_negatives=None)`` with anchors (B, d) and
    documents a (B, d) tensor of positives, a list ``[positives, negatives_1, ...]`` of (B, d) tensors, or a
    (B, 1 + n, d) tensor; ``extra_negatives`` (K, d) are negatives shared by every row (a momentum queue), used
    in the anchor-to-document direction.

    References: van den Oord, Li and Vinyals 2018, arXiv 1807.03748; Gao, Yao and Chen 2021 (SimCSE),
    arXiv 2104.08821.
    """

    def __init__(
        self,
        temperature: TemperaturePolicy | float = 0.05,
        symmetric: bool = False,
        check_finite: bool = True,
        gather_across_devices: bool = False,
    ) -> None:
        super().__init__(temperature)
        self.symmetric = bool(symmetric)
        self.check_finite = bool(check_finite)
        self.gather_across_devices = bool(gather_across_devices)

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
        self.last_temperatures = []
        similarities, _ = normalized_similarities(anchors, columns, extra_negatives)
        similarities = similarities.to(logits_dtype(similarities.dtype))
        rows = torch.arange(anchors.size(0), device=anchors.device)
        positives = similarities[rows, rows]

        directions = [(similarities, anchors)]
        if self.symmetric:
            # Each positive against all anchors: the first (positives) block, transposed.
            directions.append((similarities[:, : anchors.size(0)].T, columns[0]))
        logits = [
            scale_by_temperature(sims, self._temperature(sims, positives, queries, indices))
            for sims, queries in directions
        ]
        if self.temperature.reweights:
            losses = [self._reweighted_row_losses(block, rows) for block in logits]
            return (sum(losses) / len(losses)).mean()
        # -(mean positive logit - mean log-partition), in the order MNRL sums them, so that a fixed
        # temperature reproduces its loss and gradients to float32 rounding.
        log_partition = sum(torch.logsumexp(block, dim=1) for block in logits) / len(logits)
        positive_logits = sum(block[rows, rows] for block in logits) / len(logits)
        return -(positive_logits - log_partition).mean()

    def _reweighted_row_losses(self, logits: Tensor, rows: Tensor) -> Tensor:
        """MACL-style ``w_i * (-log P_i)`` with ``w_i = loss_weights(log P_i)``.

        Reweighting by 1 / (1 - P) needs 1 - P to keep its digits as P -> 1, where log-sum-exp - l_ii rounds to
        0 in float32. ``-log P = softplus(lse_{j != i} l_ij - l_ii)`` does not, and in float64 (B values) the
        weight and the product stay finite down to tau = 0.01: the reweighted loss of a separated row tends to 1.
        """
        positive_logits = logits[rows, rows]
        excluded = torch.zeros_like(logits, dtype=torch.bool)
        excluded[rows, rows] = True
        negative_lse = torch.logsumexp(logits.masked_fill(excluded, float("-inf")), dim=1)
        negative_log_probs = F.softplus((negative_lse - positive_logits).double())
        weights = self.temperature.loss_weights(-negative_log_probs)
        return (negative_log_probs * weights).to(logits.dtype)

    def extra_repr(self) -> str:
        return f"symmetric={self.symmetric}"
