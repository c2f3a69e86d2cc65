"""The contract every temperature policy follows.

A policy looks at one block of cosine similarities (each anchor against its candidates) and returns the
temperature to divide them by. Its answer has one of three shapes, and every objective accepts all three:

* ``()``: one temperature for the whole batch (fixed, learnable, MACL);
* ``(B,)``: one temperature per anchor row (per-sample policies such as iSogCLR or TempNet);
* ``(B, N)``: one temperature per similarity entry (DySTreSS).

Policies never synchronise with the device: whatever they record for logging stays a detached tensor
until someone asks for :meth:`TemperaturePolicy.temperature_stats`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

Granularity = Literal["batch", "row", "entry"]


class TemperaturePolicy(nn.Module):
    """Base class: subclasses implement :meth:`compute` and :meth:`get_config_dict`."""

    granularity: ClassVar[Granularity] = "batch"
    #: BibTeX of the paper the policy comes from (added to the loss's citation in the model card).
    citation: ClassVar[str] = ""

    def __init__(self) -> None:
        super().__init__()
        self.last_temperature: Tensor | None = None

    def compute(self, similarities: Tensor, positive_similarities: Tensor, **context: Any) -> Tensor:
        """Return the temperature; ``context`` holds ``anchors`` and ``indices`` (either may be None)."""
        raise NotImplementedError

    def forward(
        self,
        similarities: Tensor,
        positive_similarities: Tensor,
        *,
        anchors: Tensor | None = None,
        indices: Tensor | None = None,
    ) -> Tensor:
        """Temperature for ``similarities`` (B, N), given each anchor's positive similarity (B,).

        ``anchors`` (the anchor embeddings) and ``indices`` (dataset indices of the rows) are passed along for
        policies that need them; the stateless policies ignore them.
        """
        tau = self.compute(similarities, positive_similarities, anchors=anchors, indices=indices)
        self.last_temperature = tau.detach()
        return tau

    @property
    def reweights(self) -> bool:
        """True when :meth:`loss_weights` returns weights (objectives then compute ``log P`` precisely)."""
        return False

    def loss_weights(self, positive_log_probs: Tensor) -> Tensor | None:
        """Optional per-anchor loss weights from the detached log-probability of each positive (B,).

        None (the default) means unweighted; MACL's reweighting overrides this.
        """
        return None

    def temperature_stats(self) -> dict[str, float]:
        """Mean, min and max of the temperature used in the last call (reads the device once)."""
        return temperature_stats([self.last_temperature] if self.last_temperature is not None else [])

    def get_config_dict(self) -> dict[str, Any]:
        return {}

    def extra_repr(self) -> str:
        return ", ".join(f"{key}={value!r}" for key, value in self.get_config_dict().items())


def temperature_stats(temperatures: list[Tensor]) -> dict[str, float]:
    """Summarise the temperatures of one step as floats for a log line (empty if nothing was recorded)."""
    if not temperatures:
        return {}
    flat = torch.cat([tau.detach().float().reshape(-1) for tau in temperatures])
    summary = torch.stack([flat.mean(), flat.min(), flat.max()]).tolist()
    return dict(zip(("tau_mean", "tau_min", "tau_max"), summary, strict=True))
