from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tempnlp._checks import positive_float
from tempnlp.temperature.base import TemperaturePolicy


class FixedTemperature(TemperaturePolicy):
    """One constant temperature, as in SimCSE (0.05) and sentence-transformers' MNRL (scale 20 = 1/0.05).

    Args:
        tau: the temperature, > 0. ``FixedTemperature(0.05)`` reproduces ``MultipleNegativesRankingLoss(scale=20)``.

    Example::

        from tempnlp.losses import InfoNCELoss
        from tempnlp.temperature import FixedTemperature

        loss = InfoNCELoss(model, temperature=FixedTemperature(0.05))  # same as temperature=0.05
    """

    name = "fixed"
    summary = "one constant tau (SimCSE, MNRL: 0.05)"
    paper = "Gao et al. 2021 (SimCSE)"
    usage = "FixedTemperature(0.05), or temperature=0.05"

    def __init__(self, tau: float = 0.05) -> None:
        super().__init__()
        self.tau = positive_float("tau", tau, hint="SimCSE and MNRL use 0.05.")

    def compute(self, similarities: Tensor, positive_similarities: Tensor, **context: Any) -> Tensor:
        # A fill on the similarities' device and dtype: no host-to-device copy, no synchronisation.
        return torch.full((), self.tau, dtype=similarities.dtype, device=similarities.device)

    def get_config_dict(self) -> dict[str, Any]:
        return {"tau": self.tau}
