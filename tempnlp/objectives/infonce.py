from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from tempnlp.objectives.base import ContrastiveObjective
from tempnlp.objectives.candidates import CandidateBatch, Direction
from tempnlp.temperature import TemperaturePolicy
from tempnlp.temperature.base import GRADIENT_TRAINED_TAU, LOGIT_OFFSET, ROW_LOG_PROBABILITY, RowStatistics


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
        check_finite: raise a ValueError on NaN/inf embeddings or, under a per-sample temperature, an index out
            of range or repeated in the batch (one host read per call; False skips both checks).
        gather_across_devices: in multi-process training, evaluate the loss on the global batch (see
            :mod:`tempnlp.objectives.distributed`).
        same_view_negatives: also contrast each row with the other rows of its own side (the NT-Xent / SimCLR
            layout); one direction of it is MNRL's ``directions=("query_to_doc", "query_to_query")`` with
            ``partition_mode="joint"``.

    Call it as ``objective(anchors, documents, indices=None, extra_negatives=None)`` with anchors (B, d) and
    documents a (B, d) tensor of positives, a list ``[positives, negatives_1, ...]`` of (B, d) tensors, or a
    (B, 1 + n, d) tensor; ``extra_negatives`` (K, d) are negatives shared by every row (a momentum queue), used
    in the anchor-to-document direction.

    References: van den Oord, Li and Vinyals 2018, arXiv 1807.03748; Gao, Yao and Chen 2021 (SimCSE),
    arXiv 2104.08821.
    """

    positive_in_partition = True
    offers = frozenset({ROW_LOG_PROBABILITY, GRADIENT_TRAINED_TAU, LOGIT_OFFSET})
    display_name = "InfoNCE"

    def __init__(
        self,
        temperature: TemperaturePolicy | float = 0.05,
        symmetric: bool = False,
        check_finite: bool = True,
        gather_across_devices: bool = False,
        same_view_negatives: bool = False,
    ) -> None:
        super().__init__(
            temperature,
            symmetric=symmetric,
            same_view_negatives=same_view_negatives,
            check_finite=check_finite,
            gather_across_devices=gather_across_devices,
        )

    def row_losses(self, direction: Direction, tau: Tensor, batch: CandidateBatch) -> tuple[Tensor, RowStatistics]:
        logits = self.scaled_logits(direction, tau)
        self_entries = direction.self_entries()
        if self_entries is not None:
            logits = logits.masked_fill(self_entries, float("-inf"))
        rows = torch.arange(direction.batch_size, device=logits.device)
        positive_logits = logits[rows, rows]
        # log-partition minus the positive logit, as MNRL computes it, so that a fixed temperature reproduces
        # its loss and gradients to float32 rounding.
        losses = torch.logsumexp(logits, dim=1) - positive_logits

        def precise_negative_log_probability() -> Tensor:
            # -log P = softplus(lse_{j != i} l_ij - l_ii) keeps its digits as P -> 1, where lse - l_ii rounds to 0
            # in float32; in float64 (B values) a reweighting by 1 / (1 - P) stays finite down to tau = 0.01.
            negatives = logits.masked_fill(rows.unsqueeze(1) == torch.arange(logits.size(1), device=logits.device),
                                           float("-inf"))  # fmt: skip
            return F.softplus((torch.logsumexp(negatives, dim=1) - positive_logits).double())

        return losses, self.statistics(direction, tau, batch, row_log_probability=precise_negative_log_probability)

    def extra_repr(self) -> str:
        return f"symmetric={self.symmetric}" + (", same_view_negatives=True" if self.same_view_negatives else "")
