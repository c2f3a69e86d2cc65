"""What every objective shares: the policy, the candidate set, one direction's loop, temperature scaling."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from tempnlp._checks import flag
from tempnlp.objectives.candidates import (
    CandidateBatch,
    Direction,
    as_columns,
    build_candidates,
    candidate_counts,
    logits_dtype,
)
from tempnlp.objectives.rules import check_combination
from tempnlp.temperature import TemperaturePolicy, as_policy, temperature_stats
from tempnlp.temperature.base import RowStatistics

__all__ = ["ContrastiveObjective", "as_columns", "logits_dtype", "scale_by_temperature"]


def at_least_float32(embeddings: Tensor) -> Tensor:
    """bf16/fp16 embeddings as float32 (the gradient flows back in their dtype); float32/float64 unchanged."""
    if isinstance(embeddings, Tensor) and embeddings.is_floating_point() and embeddings.element_size() < 4:
        return embeddings.float()
    return embeddings


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


class ContrastiveObjective(nn.Module):
    """Base of the objectives: ``objective(anchors, documents, indices=None, extra_negatives=None) -> loss``.

    A subclass says whether the positive belongs to the partition (``positive_in_partition``), what it offers a
    policy (``offers``) and how a direction's row losses follow from its scaled similarities (:meth:`row_losses`).
    This class builds the candidate set, asks the policy for the temperature of each direction, hands the row
    losses to the policy's ``observe`` hook, and averages directions and rows.
    """

    positive_in_partition: ClassVar[bool] = True
    #: whether a row's loss is already the robust objective's ``tau_i log s_i`` (SogCLR) rather than ``log s_i``
    robust_form: ClassVar[bool] = False
    offers: ClassVar[frozenset[str]] = frozenset()
    #: a human name for error messages
    display_name: ClassVar[str] = ""

    def __init__(
        self,
        temperature: TemperaturePolicy | float = 0.05,
        *,
        symmetric: bool = False,
        same_view_negatives: bool = False,
        check_finite: bool = True,
        gather_across_devices: bool = False,
    ) -> None:
        super().__init__()
        self.temperature = as_policy(temperature)
        self.symmetric = flag("symmetric", symmetric)
        self.same_view_negatives = flag("same_view_negatives", same_view_negatives)
        self.check_finite = flag("check_finite", check_finite)
        self.gather_across_devices = flag("gather_across_devices", gather_across_devices)
        check_combination(self, self.temperature)
        self.temperature.attach(self.directions)
        self.last_temperatures: list[Tensor] = []

    @property
    def directions(self) -> int:
        return 2 if self.symmetric else 1

    @property
    def needs_indices(self) -> bool:
        """Whether a training step reads the dataset index of each row (for per-sample state)."""
        return self.temperature.needs_indices

    @property
    def num_samples(self) -> int | None:
        return getattr(self.temperature, "num_samples", None)

    @property
    def partition_name(self) -> str:
        return "candidates, the positive included" if self.positive_in_partition else "negatives"

    def candidate_counts(self, batch_size: int, document_columns: int, extra: int = 0) -> list[int]:
        """The size of a row's partition in each direction for a batch of this shape."""
        return candidate_counts(
            batch_size,
            document_columns,
            symmetric=self.symmetric,
            same_view_negatives=self.same_view_negatives,
            positive_in_partition=self.positive_in_partition,
            extra=extra,
        )

    def check_batch_shape(self, batch_size: int, document_columns: int, extra: int = 0) -> None:
        """Refuse a batch shape that leaves a row without a partition, or that the policy cannot step at."""
        counts = self.candidate_counts(batch_size, document_columns, extra)
        self._check_partitions(counts)
        check = getattr(self.temperature, "check_partition_size", None)
        if check is not None:
            for count in counts:
                check(count, self.partition_name)

    def _check_partitions(self, counts: list[int]) -> None:
        # a partition of the positive alone gives a loss of exactly 0 and no gradient: a run that "trains" on nothing
        negatives = [count - int(self.positive_in_partition) for count in counts]
        if min(negatives) < 1:
            raise ValueError(
                f"{self.display_name or type(self).__name__} needs at least one negative in each direction: a batch "
                "of one (anchor, positive) pair has none"
                + (" for the document-to-anchor term" if self.symmetric else "")
                + ". Use a batch size > 1"
                + (
                    ": hard negatives do not serve the document-to-anchor direction."
                    if self.symmetric
                    else ", or add a hard-negative column."
                )
            )

    def forward(
        self,
        anchors: Tensor,
        documents: Tensor | Sequence[Tensor],
        indices: Tensor | None = None,
        extra_negatives: Tensor | None = None,
    ) -> Tensor:
        # Similarities, tau and the log-sum-exp in at least float32 whatever autocast surrounds the loss: under bf16
        # a similarity of 0.9 carries an error of 0.004, which 1/tau = 100 turns into 0.4 in a logit.
        device_type = anchors.device.type if isinstance(anchors, Tensor) else "cpu"
        with torch.autocast(device_type=device_type, enabled=False):
            return self._forward(
                at_least_float32(anchors),
                [at_least_float32(column) for column in as_columns(documents)],
                indices,
                None if extra_negatives is None else at_least_float32(extra_negatives),
            )

    def _forward(
        self, anchors: Tensor, documents: list[Tensor], indices: Tensor | None, extra_negatives: Tensor | None
    ) -> Tensor:
        batch = build_candidates(self, anchors, documents, indices, extra_negatives)
        extra = 0 if extra_negatives is None else extra_negatives.size(0)
        self._check_partitions(self.candidate_counts(batch.anchors.size(0), len(batch.columns), extra))
        self.last_temperatures = []
        losses = [self._direction(direction, batch) for direction in batch.directions]
        rows = losses[0] if len(losses) == 1 else 0.5 * (losses[0] + losses[1])
        return rows.mean()

    def _direction(self, direction: Direction, batch: CandidateBatch) -> Tensor:
        similarities = direction.similarities
        tau = self.temperature(
            similarities,
            batch.positive_similarities,
            anchors=direction.queries,
            indices=batch.indices,
            direction=direction.index,
        )
        self.last_temperatures.append(tau.detach())
        row_losses, statistics = self.row_losses(direction, tau, batch)
        return self.temperature.observe(row_losses, statistics)

    def row_losses(self, direction: Direction, tau: Tensor, batch: CandidateBatch) -> tuple[Tensor, RowStatistics]:
        """Each row's loss (B,) and the statistics the policy may observe."""
        raise NotImplementedError

    def scaled_logits(self, direction: Direction, tau: Tensor) -> Tensor:
        """The direction's similarities divided by the temperature, plus the policy's logit offset if it has one."""
        logits = scale_by_temperature(direction.similarities, tau)
        offset = self.temperature.logit_offset(direction)
        return logits if offset is None else logits + offset.to(logits.dtype)

    def statistics(
        self, direction: Direction, tau: Tensor, batch: CandidateBatch, in_partition: Tensor | None = None, **extra
    ) -> RowStatistics:
        """The statistics of one direction; ``in_partition`` is the partition mask when the objective built it."""
        if in_partition is None:
            in_partition = direction.partition_mask(self.positive_in_partition)
        return RowStatistics(
            similarities=direction.similarities,
            tau=tau,
            in_partition=in_partition,
            candidates=direction.partition_size(self.positive_in_partition),
            direction=direction.index,
            indices=batch.indices,
            anchors=direction.queries,
            positive_in_partition=self.positive_in_partition,
            robust_form=self.robust_form,
            **extra,
        )

    def temperature_stats(self) -> dict[str, float]:
        """Mean, min and max over every temperature the last call used (host read; call it at log time)."""
        return temperature_stats(self.last_temperatures)
