from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from tempnlp._checks import positive_float
from tempnlp.temperature.schedule import ScheduledTemperature


class CooldownTemperature(ScheduledTemperature):
    """Start hot, then cool down to the working temperature (Jeong, Han and Chae 2024)::

        switch   (TCC): tau = tau_start for t < C, then tau_end
        two-step (TCS): tau_start for t < C/2, (tau_start + tau_end)/2 for t < C, then tau_end
        linear   (TCL): tau_start - (tau_start - tau_end) t / C for t < C, then tau_end

    ``t`` counts optimizer steps from 0 and ``C`` is the cool-down length. A high temperature at the start spreads
    the early gradient over many negatives before the usual low temperature sharpens it; the authors report gains
    over SimCSE for unsupervised sentence embeddings with the abrupt switch.

    Defaults are from the authors' command for unsupervised SimCSE (``--temp 0.10 --temp2 0.05 --tc_type TCC
    --cooldown_rate 0.014``): their code sets ``C = 1e6 / batch * rate``, 1.4% of one epoch over wiki1m, which is
    ``cooldown_epochs=0.014`` here. Their step counter starts at 1 and the switch falls between steps C + 1 and
    C + 2; here the first C optimizer steps are hot.

    Args:
        tau_start, tau_end: the temperature before and after the cool-down.
        cooldown_steps: C in optimizer steps; or
        cooldown_epochs: C in epochs (one of the two).
        mode: ``"switch"`` (TCC), ``"two-step"`` (TCS) or ``"linear"`` (TCL).

    Reference: Jeong, Han and Chae 2024, "Simple Temperature Cool-down in Contrastive Framework for Unsupervised
    Sentence Representation Learning", Findings of EACL, pp. 550-559.

    Example::

        loss = InfoNCELoss(model, temperature=CooldownTemperature(0.1, 0.05, cooldown_epochs=0.014))
    """

    name = "cooldown"
    summary = "tau from a high start down to the working value early in training (sentence embeddings)"
    paper = "Jeong et al. 2024 (Findings of EACL)"
    usage = 'CooldownTemperature(0.1, 0.05, cooldown_epochs=0.014, mode="switch")'
    citation = """
@inproceedings{jeong2024cooldown,
    title = {Simple Temperature Cool-down in Contrastive Framework for Unsupervised Sentence Representation
             Learning},
    author = {Jeong, Yoo Hyun and Han, Myeong Soo and Chae, Dong-Kyu},
    booktitle = {Findings of the Association for Computational Linguistics: EACL 2024},
    pages = {550--559},
    year = {2024},
}
"""

    def __init__(
        self,
        tau_start: float = 0.1,
        tau_end: float = 0.05,
        cooldown_steps: int | None = None,
        cooldown_epochs: float | None = None,
        mode: Literal["switch", "two-step", "linear"] = "switch",
    ) -> None:
        if cooldown_steps is None and cooldown_epochs is None:
            cooldown_epochs = 0.014
        super().__init__(cooldown_steps, cooldown_epochs, what="cooldown")
        self.tau_start = positive_float("tau_start", tau_start)
        self.tau_end = positive_float("tau_end", tau_end)
        if mode not in ("switch", "two-step", "linear"):
            raise ValueError(f"mode must be 'switch', 'two-step' or 'linear', got {mode!r}.")
        self.mode = mode

    def value_at(self, position: Tensor, length: float) -> Tensor:
        start, end = position.new_full((), self.tau_start), position.new_full((), self.tau_end)
        if self.mode == "switch":
            return torch.where(position < length, start, end)
        if self.mode == "two-step":
            value = torch.where(position < length, 0.5 * (start + end), end)
            return torch.where(position < 0.5 * length, start, value)
        fraction = (position / length).clamp(max=1.0)
        return start - (start - end) * fraction

    def get_config_dict(self) -> dict[str, Any]:
        length = {"cooldown_steps": self.period_steps} if self.period_steps is not None else {
            "cooldown_epochs": self.period_epochs}  # fmt: skip
        return {"tau_start": self.tau_start, "tau_end": self.tau_end, **length, "mode": self.mode}
