from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor

from tempnlp._checks import finite_float, ordered_bounds, positive_float
from tempnlp.temperature.base import TemperaturePolicy


class DySTreSSTemperature(TemperaturePolicy):
    """One temperature per similarity entry, a cosine-shaped function of that (detached) similarity.

    ``variant="paper"`` is the published schedule::

        tau(s) = tau_min + (tau_max - tau_min) / 2 * (1 + cos(pi * (1 + s)))

    lowest (``tau_min``) for orthogonal pairs, highest (``tau_max``) for s = +-1, so confident positives and
    the hardest negatives are treated with the softest temperature.

    ``variant="shifted"`` is the schedule the authors' SimCSE code uses (``get_temp2``)::

        tau(s) = tau_min + (tau_max - tau_min) / 2 * (1 + cos(pi * (s - offset) / scale))   for s <= offset
        tau(s) = tau_max                                                                   for s >  offset

    with ``offset=0.4`` and ``scale=0.7`` (minimum at s = -0.3), matching where sentence-embedding
    similarities actually lie.

    The defaults (``tau_min=0.04``, ``tau_max=0.05``) are those of the authors' SimCSE runs; their image
    experiments use 0.07-0.2. The temperature is computed from detached similarities: it rescales the
    logits but is not itself differentiated.

    Reference: Manna, Chattopadhyay, Dey, Bhattacharya and Pal 2023, "DySTreSS: Dynamically Scaled Temperature
    in Self-Supervised Contrastive Learning", arXiv 2308.01140.

    Example::

        loss = InfoNCELoss(model, temperature=DySTreSSTemperature(tau_min=0.04, tau_max=0.05))
    """

    name = "dystress"
    summary = "tau per similarity entry, a cosine function of the (detached) similarity"
    paper = "Manna et al. 2023 (DySTreSS), arXiv 2308.01140"
    usage = 'DySTreSSTemperature(0.04, 0.05, variant="paper" or "shifted")'
    citation = """
@misc{manna2023dystress,
    title = {DySTreSS: Dynamically Scaled Temperature in Self-Supervised Contrastive Learning},
    author = {Manna, Siladittya and Chattopadhyay, Soumitri and Dey, Rakesh and Bhattacharya, Saumik and Pal, Umapada},
    year = {2023},
    eprint = {2308.01140},
    archivePrefix = {arXiv},
}
"""

    granularity = "entry"

    def __init__(
        self,
        tau_min: float = 0.04,
        tau_max: float = 0.05,
        variant: Literal["paper", "shifted"] = "paper",
        offset: float = 0.4,
        scale: float = 0.7,
    ) -> None:
        super().__init__()
        self.tau_min = positive_float("tau_min", tau_min)
        self.tau_max = positive_float("tau_max", tau_max)
        ordered_bounds("tau_min", self.tau_min, "tau_max", self.tau_max)
        if variant not in ("paper", "shifted"):
            raise ValueError(f"variant must be 'paper' or 'shifted', got {variant!r}.")
        self.variant = variant
        self.offset = finite_float("offset", offset)
        self.scale = positive_float("scale", scale)

    def compute(self, similarities: Tensor, positive_similarities: Tensor, **context: Any) -> Tensor:
        s = similarities.detach()
        half_range = 0.5 * (self.tau_max - self.tau_min)
        if self.variant == "paper":
            return self.tau_min + half_range * (1.0 + torch.cos(math.pi * (1.0 + s)))
        shifted = self.tau_min + half_range * (1.0 + torch.cos(math.pi * (s - self.offset) / self.scale))
        return torch.where(s <= self.offset, shifted, torch.full_like(s, self.tau_max))

    def get_config_dict(self) -> dict[str, Any]:
        config: dict[str, Any] = {"tau_min": self.tau_min, "tau_max": self.tau_max, "variant": self.variant}
        if self.variant == "shifted":
            config.update(offset=self.offset, scale=self.scale)
        return config
