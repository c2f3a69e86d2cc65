from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from tempnlp._checks import ordered_bounds, positive_float
from tempnlp.temperature.schedule import ScheduledTemperature


class CosineScheduleTemperature(ScheduledTemperature):
    """A temperature that oscillates between two bounds on a cosine (Kukleva et al. 2023)::

        tau(t) = tau_min + (tau_max - tau_min) / 2 * (1 + cos(2 pi t / T))

    ``t`` is the training position and ``T`` the period, in optimizer steps or in epochs. It starts at ``tau_max``,
    reaches ``tau_min`` at half the period and returns: phases of a high temperature (group-wise, semantic
    structure) alternate with a low one (instance discrimination), which the authors found to help long-tailed data
    most. Their code counts whole epochs from 1 (``cos(pi * epoch / t_max)``, a period of ``2 t_max`` epochs);
    here the position moves with every optimizer step from 0, so ``period_epochs = 2 t_max`` gives their curve
    sampled finer and one epoch earlier (their first epoch already uses the value of t = 1).

    Defaults are from the authors' run commands (``--temperature_min 0.1 --temperature_max 1.0 --t_max 200``,
    SimCLR for 2000 epochs: a period of 400 epochs); for sentence embeddings, whose temperatures sit near 0.05,
    set the bounds and a period that fits the run (``period_epochs`` of the run's length gives one cycle).

    Args:
        tau_min, tau_max: the bounds.
        period_steps: the period in optimizer steps; or
        period_epochs: the period in epochs (one of the two).

    Reference: Kukleva, Böhle, Schiele, Kuehne and Rupprecht 2023, "Temperature Schedules for Self-Supervised
    Contrastive Methods on Long-Tail Data", ICLR, arXiv 2303.13664.

    Example::

        policy = CosineScheduleTemperature(tau_min=0.03, tau_max=0.1, period_epochs=1.0)
        loss = InfoNCELoss(model, temperature=policy)
        follow_progress(trainer)  # or track_loss_state(trainer); tempnlp train does it itself
    """

    name = "cosine"
    summary = "tau on a cosine between two bounds, by training step or epoch (long-tail schedules)"
    paper = "Kukleva et al. 2023 (ICLR), arXiv 2303.13664"
    usage = "CosineScheduleTemperature(tau_min=0.1, tau_max=1.0, period_epochs=400)"
    citation = """
@inproceedings{kukleva2023temperature,
    title = {Temperature Schedules for Self-Supervised Contrastive Methods on Long-Tail Data},
    author = {Kukleva, Anna and B{\\"o}hle, Moritz and Schiele, Bernt and Kuehne, Hilde and Rupprecht, Christian},
    booktitle = {International Conference on Learning Representations (ICLR)},
    year = {2023},
    url = {https://arxiv.org/abs/2303.13664},
}
"""

    def __init__(
        self,
        tau_min: float = 0.1,
        tau_max: float = 1.0,
        period_steps: int | None = None,
        period_epochs: float | None = None,
    ) -> None:
        if period_steps is None and period_epochs is None:
            period_epochs = 400.0
        super().__init__(period_steps, period_epochs, what="period")
        self.tau_min = positive_float("tau_min", tau_min)
        self.tau_max = positive_float("tau_max", tau_max)
        ordered_bounds("tau_min", self.tau_min, "tau_max", self.tau_max)

    def value_at(self, position: Tensor, length: float) -> Tensor:
        phase = torch.cos(2.0 * math.pi * position / length)
        return self.tau_min + 0.5 * (self.tau_max - self.tau_min) * (1.0 + phase)

    def get_config_dict(self) -> dict[str, Any]:
        period = {"period_steps": self.period_steps} if self.period_steps is not None else {
            "period_epochs": self.period_epochs}  # fmt: skip
        return {"tau_min": self.tau_min, "tau_max": self.tau_max, **period}
