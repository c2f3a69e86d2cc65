"""The one candidate-set builder every objective uses.

Given a batch (anchors, a positive column, any hard-negative columns) it validates it, gathers it across
processes when asked, and lays out the similarity block of each direction. Row ``i`` of a direction holds, in
this order:

* anchor to document (direction 0): every document of the batch (the B positives, then each hard-negative
  column), then the extra negatives shared by every row (a momentum queue), then, with ``same_view_negatives``,
  the B anchors (the NT-Xent / SimCLR layout: 2B - 2 negatives over two views without hard negatives);
* document to anchor (direction 1, ``symmetric``): the B anchors, then, with ``same_view_negatives``, the B
  positives.

The positive of row ``i`` is always column ``i``; in a same-view block the row's own entry (its similarity with
itself) is never a candidate. Whether the positive belongs to the partition is the objective's decision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from tempnlp._checks import check_embeddings, check_finite_and_indices, check_index_tensor
from tempnlp.objectives.distributed import global_batch


@dataclass
class Direction:
    index: int
    #: the embeddings of the rows, as the encoder gave them (TempNet predicts from these)
    queries: Tensor
    #: (B, N) cosines in at least float32
    similarities: Tensor
    #: first column of the same-view block (whose diagonal is the row itself), or None without one
    same_view_start: int | None
    #: document columns laid out first (B entries each; the row's own documents are i, B + i, 2B + i, ...)
    document_columns: int = 1
    #: extra negatives (a momentum queue) after the documents
    extra: int = 0

    # The masks are built by comparing index grids, on the device: writing a Python True through a tensor index
    # would copy it from the host, which waits for the device's queued work.
    def _grid(self) -> tuple[Tensor, Tensor]:
        device = self.similarities.device
        rows = torch.arange(self.batch_size, device=device).unsqueeze(1)
        return rows, torch.arange(self.width, device=device).unsqueeze(0)

    def own_documents(self) -> Tensor:
        """(B, N) mask of each row's own documents: its positive and its own hard negatives."""
        rows, columns = self._grid()
        in_documents = columns < self.document_columns * self.batch_size
        return in_documents & ((columns - rows) % self.batch_size == 0)

    def documents_and_extra(self) -> Tensor:
        """(B, N) mask of the document block and the extra negatives (everything but a same-view block)."""
        mask = torch.zeros_like(self.similarities, dtype=torch.bool)
        mask[:, : self.document_columns * self.batch_size + self.extra] = True
        return mask

    @property
    def batch_size(self) -> int:
        return self.similarities.size(0)

    @property
    def width(self) -> int:
        return self.similarities.size(1)

    def self_entries(self) -> Tensor | None:
        """(B, N) mask of the rows' similarities with themselves, or None without a same-view block."""
        if self.same_view_start is None:
            return None
        rows, columns = self._grid()
        return columns == rows + self.same_view_start

    def partition_mask(self, positive_in_partition: bool) -> Tensor | None:
        """(B, N) mask of each row's partition, or None when it is every entry."""
        excluded = self.self_entries()
        if not positive_in_partition:
            rows, columns = self._grid()
            positives = columns == rows
            excluded = positives if excluded is None else excluded | positives
        return None if excluded is None else ~excluded

    def partition_size(self, positive_in_partition: bool) -> int:
        return self.width - (self.same_view_start is not None) - (not positive_in_partition)


@dataclass
class CandidateBatch:
    anchors: Tensor
    columns: list[Tensor]
    indices: Tensor | None
    #: cosine of each anchor with its positive (B,)
    positive_similarities: Tensor
    directions: list[Direction]


def as_columns(documents: Tensor | Sequence[Tensor]) -> list[Tensor]:
    """Documents as a list of (B, d) columns: positives first, then any hard-negative columns.

    A single (B, d) tensor is the positives alone; a (B, 1 + n, d) tensor is split along its second axis.
    """
    if isinstance(documents, Tensor):
        if documents.dim() == 3:
            return list(documents.unbind(1))
        return [documents]
    columns = list(documents)
    if not columns:
        raise ValueError(
            "documents is empty: pass at least the positives, as a (B, d) tensor or a list "
            "[positives, negatives_1, ...]."
        )
    return columns


def logits_dtype(dtype: torch.dtype) -> torch.dtype:
    """Similarities are scaled and exponentiated in at least float32, so bf16/fp16 autocast stays finite."""
    return torch.promote_types(dtype, torch.float32)


def candidate_counts(
    batch_size: int,
    document_columns: int,
    *,
    symmetric: bool,
    same_view_negatives: bool,
    positive_in_partition: bool,
    extra: int = 0,
) -> list[int]:
    """The size of a row's partition in each direction, known from shapes alone (recipes check it early)."""
    forward = batch_size * document_columns + extra + (batch_size - 1 if same_view_negatives else 0)
    counts = [forward]
    if symmetric:
        counts.append(batch_size + (batch_size - 1 if same_view_negatives else 0))
    return [count - (not positive_in_partition) for count in counts]


def build_candidates(
    objective: torch.nn.Module,
    anchors: Tensor,
    documents: Tensor | Sequence[Tensor],
    indices: Tensor | None,
    extra_negatives: Tensor | None,
) -> CandidateBatch:
    """Validate, gather (``objective.gather_across_devices``) and lay out the directions of one batch.

    ``indices`` are read only in training (gradient enabled) and only by objectives whose policy or estimator
    needs them: an evaluation set's ``label`` column does not index the training samples.
    """
    columns = as_columns(documents)
    check_embeddings("anchors", anchors, batch_size=None, dim=None)
    batch_size, dim = anchors.shape
    for position, column in enumerate(columns):
        check_embeddings(
            "positives" if position == 0 else f"negatives_{position}", column, batch_size=batch_size, dim=dim
        )
    if extra_negatives is not None and (extra_negatives.dim() != 2 or extra_negatives.size(1) != dim):
        raise ValueError(f"extra_negatives must be (K, {dim}) embeddings, got shape {tuple(extra_negatives.shape)}.")
    training = torch.is_grad_enabled()
    wants_indices = objective.needs_indices and training
    if wants_indices:
        indices = check_index_tensor(indices, batch_size, type(objective).__name__)
        indices = indices.to(device=anchors.device)
    else:
        indices = None
    local_indices = indices
    # under gathering a rank may hold no rows; it still joins the collectives, and only an empty global batch fails
    anchors, columns, indices = global_batch(objective, anchors, columns, indices, per_sample=wants_indices)
    if anchors.size(0) < 1:
        raise ValueError("anchors is empty: a contrastive loss needs at least one (anchor, positive) pair.")
    if objective.check_finite:
        names = ["anchors", "positives"] + [f"negatives_{i}" for i in range(1, len(columns))]
        gathered = local_indices is not indices
        local = local_indices if gathered else None
        check_finite_and_indices([anchors, *columns], names, indices, objective.num_samples, local)

    anchors_normalized = F.normalize(anchors, p=2, dim=1)
    documents_all = torch.cat([*columns, extra_negatives] if extra_negatives is not None else columns, dim=0)
    forward = anchors_normalized @ F.normalize(documents_all, p=2, dim=1).T
    dtype = logits_dtype(forward.dtype)
    rows = torch.arange(anchors.size(0), device=anchors.device)
    positive_similarities = forward[rows, rows].to(dtype)
    same_view = objective.same_view_negatives
    first = torch.cat([forward, anchors_normalized @ anchors_normalized.T], dim=1) if same_view else forward
    extra = 0 if extra_negatives is None else extra_negatives.size(0)
    directions = [Direction(0, anchors, first.to(dtype), forward.size(1) if same_view else None, len(columns), extra)]
    if objective.symmetric:
        backward = forward[:, : anchors.size(0)].T  # the queue and hard negatives serve the forward direction only
        if same_view:
            positives_normalized = F.normalize(columns[0], p=2, dim=1)
            backward = torch.cat([backward, positives_normalized @ positives_normalized.T], dim=1)
        directions.append(Direction(1, columns[0], backward.to(dtype), anchors.size(0) if same_view else None))
    return CandidateBatch(anchors, columns, indices, positive_similarities, directions)
