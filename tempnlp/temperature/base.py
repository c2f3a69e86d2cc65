"""The contract every temperature policy follows.

A policy looks at one block of cosine similarities (each anchor against its candidates) and returns the
temperature to divide them by. Its answer has one of three shapes, and every objective accepts all three:

* ``()``: one temperature for the whole batch (fixed, learnable, MACL);
* ``(B,)``: one temperature per anchor row (per-sample policies: individual, TempNet);
* ``(B, N)``: one temperature per similarity entry (DySTreSS).

After computing a direction's row losses, the objective hands them to :meth:`TemperaturePolicy.observe` with the
direction's :class:`RowStatistics` and averages what comes back. Stateless policies return the losses unchanged;
MACL reweights them; the DRO policies weight them into the robust objective that moves their temperatures (on
InfoNCE and DCL) and move them, TempNet adding the zero-valued term that trains its network. No objective knows
which policy it holds, and no policy knows which objective calls it.

Policies never synchronise with the device: whatever they record for logging stays a detached tensor
until someone asks for :meth:`TemperaturePolicy.temperature_stats`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cached_property
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

Granularity = Literal["batch", "row", "entry"]

#: What an objective can offer a policy; a policy lists what it needs in ``requires`` (see objectives.rules).
ROW_LOG_PROBABILITY = "row_log_probability"
#: the loss itself is a sensible objective for a temperature trained by its gradient
GRADIENT_TRAINED_TAU = "gradient_trained_tau"
#: the objective adds a policy's logit offset (hardness penalties) to its scaled logits
LOGIT_OFFSET = "logit_offset"


class RowStatistics:
    """What one direction of an objective tells its policy after computing the row losses.

    Everything is detached. ``h_ij = s_ij - s_ii`` is each candidate's cosine gap to the row's positive; the row's
    candidate set ``C_i`` is the objective's partition (InfoNCE: every entry, the positive included; DCL and
    SogCLR: every entry but the positive). ``log_partition`` is the objective's estimate ``log s_i`` of
    ``(1/|C_i|) sum_{j in C_i} exp(h_ij / tau_ij)``: this batch's value for InfoNCE and DCL, SogCLR's moving
    average for SogCLR. ``robust_form`` says whether the row losses are already the robust objective's
    ``tau_i log s_i`` (SogCLR) or ``log s_i`` (InfoNCE, DCL).
    """

    def __init__(
        self,
        *,
        similarities: Tensor,
        tau: Tensor,
        in_partition: Tensor | None,
        candidates: int,
        direction: int,
        indices: Tensor | None,
        anchors: Tensor,
        positive_in_partition: bool,
        robust_form: bool = False,
        log_partition: Tensor | None = None,
        row_log_probability: Callable[[], Tensor] | None = None,
    ) -> None:
        self.similarities = similarities.detach()
        self.tau = tau.detach()
        self.in_partition = in_partition  # (B, N) bool, None for every entry
        self.candidates = candidates  # |C_i|, the same for every row of the direction
        self.direction = direction
        self.indices = indices
        self.anchors = anchors
        self.positive_in_partition = positive_in_partition
        self.robust_form = robust_form
        self._log_partition = log_partition
        self._row_log_probability = row_log_probability

    @property
    def batch_size(self) -> int:
        return self.similarities.size(0)

    @cached_property
    def scaled_gaps(self) -> Tensor:
        """``h_ij / tau_ij`` over the row's candidate set, zero elsewhere."""
        rows = torch.arange(self.batch_size, device=self.similarities.device)
        gaps = self.similarities - self.similarities[rows, rows].unsqueeze(1)
        tau = self.tau.unsqueeze(1) if self.tau.dim() == 1 else self.tau
        scaled = gaps / tau
        return scaled if self.in_partition is None else scaled.masked_fill(~self.in_partition, 0.0)

    @cached_property
    def log_partition(self) -> Tensor:
        """``log s_i`` (B,): the objective's estimate, or this batch's mean over the candidate set."""
        if self._log_partition is not None:
            return self._log_partition.detach()
        scaled = self.scaled_gaps
        if self.in_partition is not None:
            scaled = scaled.masked_fill(~self.in_partition, float("-inf"))
        return torch.logsumexp(scaled, dim=1) - math.log(self.candidates)

    def robust_gradient(self, rho: float) -> Tensor:
        """The DRO temperature gradient of each row (iSogCLR, eq. 9; Qiu et al. 2023)::

        G_i = log s_i + rho - (1/|C_i|) sum_{j in C_i} p_ij h_ij / tau_i,   p_ij = exp(h_ij / tau_i) / s_i
        """
        weights = torch.exp(self.scaled_gaps - self.log_partition.unsqueeze(1))
        if self.in_partition is not None:
            weights = weights.masked_fill(~self.in_partition, 0.0)
        weighted = (weights * self.scaled_gaps).sum(dim=1) / self.candidates
        return self.log_partition + rho - weighted

    def row_log_probability(self) -> Tensor:
        """``-log P_i`` of each row's positive, differentiable and precise as ``P_i -> 1`` (InfoNCE only)."""
        if self._row_log_probability is None:
            raise RuntimeError("This objective does not define a probability of the positive (see objectives.rules).")
        return self._row_log_probability()


class TemperaturePolicy(nn.Module):
    """Base class: subclasses implement :meth:`compute` and :meth:`get_config_dict`, and declare themselves.

    Declarations (class attributes, read by ``tempnlp losses``, recipes, the README table and the model card):
    ``name`` (the recipe key), ``summary``, ``paper``, ``citation``. Capabilities, read by the objectives and
    ``tempnlp train``: ``needs_indices`` (reads the dataset index of each row), ``acts_on_revisit`` (a sample's
    temperature is only used when that sample comes back), ``needs_progress`` (follows the training step),
    ``requires`` (what the objective must offer).
    """

    granularity: ClassVar[Granularity] = "batch"
    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    usage: ClassVar[str] = ""
    #: BibTeX of the paper the policy comes from (added to the loss's citation in the model card).
    citation: ClassVar[str] = ""
    needs_indices: ClassVar[bool] = False
    acts_on_revisit: ClassVar[bool] = False
    #: follows the training position (schedules): a trainer callback or ``set_progress`` tells it where it is
    needs_progress: ClassVar[bool] = False
    #: learns a value in buffers from the batches it sees (a global DRO tau): ranks would drift without gathering
    learns_state: ClassVar[bool] = False
    #: run-time facts a recipe fills in (``num_samples``: the training set size; ``embedding_dim``)
    run_arguments: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        super().__init__()
        self.last_temperature: Tensor | None = None

    @property
    def requires(self) -> frozenset[str]:
        """What the objective must offer for this policy (an instance property: MACL's depends on ``reweight``)."""
        return frozenset()

    def attach(self, directions: int) -> None:
        """Called by the objective that takes this policy, with its number of directions (1, or 2 when
        symmetric), before any step; policies with per-direction state allocate it here."""

    def compute(self, similarities: Tensor, positive_similarities: Tensor, **context: Any) -> Tensor:
        """Return the temperature; ``context`` holds ``anchors``, ``indices`` (either may be None), ``direction``."""
        raise NotImplementedError

    def forward(
        self,
        similarities: Tensor,
        positive_similarities: Tensor,
        *,
        anchors: Tensor | None = None,
        indices: Tensor | None = None,
        direction: int = 0,
    ) -> Tensor:
        """Temperature for ``similarities`` (B, N), given each anchor's positive similarity (B,).

        ``anchors`` (the embeddings of the rows), ``indices`` (their dataset indices; None outside training) and
        ``direction`` (0: anchor to document, 1: document to anchor) are passed along for policies that need them.
        """
        tau = self.compute(similarities, positive_similarities, anchors=anchors, indices=indices, direction=direction)
        self.last_temperature = tau.detach()
        return tau

    def logit_offset(self, direction: Any) -> Tensor | None:
        """An optional detached (B, N) term added to a direction's logits after the temperature scaling (hardness
        penalties); ``direction`` describes the candidate layout (:class:`~tempnlp.objectives.candidates.Direction`).
        Objectives that offer ``logit_offset`` apply it; None (the default) adds nothing."""
        return None

    def observe(self, row_losses: Tensor, statistics: RowStatistics) -> Tensor:
        """Called once per direction after the objective computed its row losses (B,); returns the row losses the
        objective averages. The default returns them unchanged."""
        return row_losses

    def temperature_stats(self) -> dict[str, float]:
        """Mean, min and max of the temperature used in the last call (reads the device once)."""
        return temperature_stats([self.last_temperature] if self.last_temperature is not None else [])

    def get_config_dict(self) -> dict[str, Any]:
        return {}

    def extra_repr(self) -> str:
        return ", ".join(f"{key}={value!r}" for key, value in self.get_config_dict().items())

    def __repr__(self) -> str:
        # One line, as model cards and logs print it; a network or per-sample buffers inside are not listed.
        return f"{type(self).__name__}({self.extra_repr()})"


def temperature_stats(temperatures: list[Tensor]) -> dict[str, float]:
    """Summarise the temperatures of one step as floats for a log line (empty if nothing was recorded)."""
    if not temperatures:
        return {}
    flat = torch.cat([tau.detach().float().reshape(-1) for tau in temperatures])
    summary = torch.stack([flat.mean(), flat.min(), flat.max()]).tolist()
    return dict(zip(("tau_mean", "tau_min", "tau_max"), summary, strict=True))
