"""Pieces shared by the contrastive objectives: column handling, similarities and temperature scaling."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tempnlp._checks import check_embeddings, check_finite
from tempnlp.temperature import TemperaturePolicy, as_policy, temperature_stats


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


def validate_batch(anchors: Tensor, columns: list[Tensor], *, check_values: bool) -> None:
    check_embeddings("anchors", anchors, batch_size=None, dim=None)
    batch_size, dim = anchors.shape
    if batch_size < 1:
        raise ValueError("anchors is empty: a contrastive loss needs at least one (anchor, positive) pair.")
    for position, column in enumerate(columns):
        name = "positives" if position == 0 else f"negatives_{position}"
        check_embeddings(name, column, batch_size=batch_size, dim=dim)
    if check_values:
        names = ["anchors", "positives"] + [f"negatives_{i}" for i in range(1, len(columns))]
        check_finite([anchors, *columns], names)


def logits_dtype(dtype: torch.dtype) -> torch.dtype:
    """Similarities are scaled and exponentiated in at least float32, so bf16/fp16 autocast stays finite."""
    return torch.promote_types(dtype, torch.float32)


def scale_by_temperature(similarities: Tensor, tau: Tensor) -> Tensor:
    """Divide (B, N) similarities by a temperature of shape (), (B,) or (B, N)."""
    if tau.dim() == 0:
        # Multiplying by 1/tau (as MNRL multiplies by its scale) rounds 1/float32(0.05) to exactly 20.
        return similarities * tau.reciprocal()
    if tau.shape == similarities.shape[:1]:
        return similarities / tau.unsqueeze(1)
    if tau.shape == similarities.shape:
        return similarities / tau
    raise ValueError(
        f"The temperature policy returned shape {tuple(tau.shape)} for similarities of shape "
        f"{tuple(similarities.shape)}; a policy must return a scalar, one value per row "
        f"({similarities.shape[0]},) or one per entry {tuple(similarities.shape)}."
    )


def positive_temperature(tau: Tensor, rows: Tensor) -> Tensor:
    """The temperature applied to each row's positive, which sits at column ``i`` of row ``i``."""
    if tau.dim() == 2:
        return tau[rows, rows]
    return tau


class ContrastiveObjective(nn.Module):
    """Base for objectives that own a temperature policy and remember the temperatures of their last call."""

    def __init__(self, temperature: TemperaturePolicy | float = 0.05) -> None:
        super().__init__()
        self.temperature = as_policy(temperature)
        self.last_temperatures: list[Tensor] = []

    def _temperature(self, similarities: Tensor, positives: Tensor, anchors: Tensor, indices: Tensor | None) -> Tensor:
        tau = self.temperature(similarities, positives, anchors=anchors, indices=indices)
        self.last_temperatures.append(tau.detach())
        return tau

    def temperature_stats(self) -> dict[str, float]:
        """Mean, min and max over every temperature the last call used (host read; call it at log time)."""
        return temperature_stats(self.last_temperatures)


def normalized_similarities(
    anchors: Tensor, columns: list[Tensor], extra_negatives: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Cosine similarities of each anchor with every document of every column, and the normalised anchors.

    Returns ``(similarities, anchors_normalized)`` with similarities of shape (B, B * len(columns) + K): columns
    laid out one after the other, so the positive of row ``i`` is column ``i``, then the K ``extra_negatives``
    shared by every row (a momentum queue).
    """
    anchors_normalized = F.normalize(anchors, p=2, dim=1)
    documents = torch.cat([*columns, extra_negatives] if extra_negatives is not None else columns, dim=0)
    return anchors_normalized @ F.normalize(documents, p=2, dim=1).T, anchors_normalized


def check_extra_negatives(extra_negatives: Tensor | None, anchors: Tensor) -> None:
    if extra_negatives is not None and (extra_negatives.dim() != 2 or extra_negatives.size(1) != anchors.size(1)):
        raise ValueError(
            f"extra_negatives must be (K, {anchors.size(1)}) embeddings, got shape {tuple(extra_negatives.shape)}."
        )
