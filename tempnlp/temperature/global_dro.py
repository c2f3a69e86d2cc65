from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tempnlp.temperature.base import RowStatistics
from tempnlp.temperature.dro import RobustTemperature


class GlobalDROTemperature(RobustTemperature):
    """One temperature for every row, learned by the robust objective (RGCL-g): iSogCLR's update, made global.

    After each step the rows' robust gradients ``G_i`` (see
    :meth:`~tempnlp.temperature.base.RowStatistics.robust_gradient`, each clipped as in
    :class:`~tempnlp.temperature.IndividualTemperature`) are averaged over the batch, and over both directions of
    a symmetric objective, and move the one temperature::

        u   = (1 - beta) u + beta mean_i clip(G_i)
        tau = clip(tau - eta u, tau_min, tau_max)

    This is the DRO objective ``tau (log s + rho)`` with tau shared by all samples; on InfoNCE or DCL the encoder
    descends it too, the row losses weighted by ``tau / tau_init``. FastCLIP (v3) and LibAUC's
    ``GCLoss_v2(temperature_scheme="global_learnable")`` make the same tau a parameter of the model and let the
    optimizer (with its learning rate, momentum and weight decay) follow the gradient of that surrogate; here the
    step is the policy's own (``eta``, ``beta``), as for the per-sample temperatures, so it does not depend on the
    encoder's optimizer. Unlike a per-sample tau it acts from the first step, so it suits one-pass training.

    Defaults are those of :class:`~tempnlp.temperature.IndividualTemperature` (the authors' unimodal settings).
    The temperature and its gradient average are buffers saved with the loss state.

    Args:
        tau_init, tau_min, tau_max: the initial temperature and its bounds.
        rho: radius of the KL ball; it must stay below log(size of a row's partition).
        eta: step size of the temperature.
        beta: moving-average weight of its gradient.
        grad_clip: clip of each row's G_i before averaging; None disables it.

    Reference: Qiu, Hu, Yuan, Zhou, Zhang and Yang 2023 (iSogCLR, the RGCL objective), arXiv 2305.11965; Wei,
    Lin, Zhu, Hu, Yang et al. 2024 (FastCLIP), arXiv 2407.01445.

    Example::

        loss = InfoNCELoss(model, temperature=GlobalDROTemperature(tau_init=0.05, tau_min=0.01, tau_max=0.2))
    """

    name = "global-dro"
    summary = "one tau for all rows, moved by the batch mean of the DRO gradients G_i (RGCL-g); checkpointed"
    paper = "Qiu et al. 2023 (iSogCLR); Wei et al. 2024 (FastCLIP), arXiv 2407.01445"
    usage = "GlobalDROTemperature(tau_init=0.1, rho=0.3)"
    citation = """
@misc{wei2024fastclip,
    title = {FastCLIP: A Suite of Optimization Techniques to Accelerate CLIP Training with Limited Resources},
    author = {Wei, Xiyuan and Ye, Fanjiang and Yonay, Ori and Chen, Xingyu and Sun, Baixi and Tao, Dingwen
              and Yang, Tianbao},
    year = {2024},
    eprint = {2407.01445},
    archivePrefix = {arXiv},
}
"""
    granularity = "batch"
    learns_state = True

    def __init__(
        self,
        tau_init: float = 0.1,
        tau_min: float = 0.05,
        tau_max: float = 1.0,
        rho: float = 0.3,
        eta: float = 0.01,
        beta: float = 0.8,
        grad_clip: float | None = 5.0,
    ) -> None:
        super().__init__(tau_init, tau_min, tau_max, rho, grad_clip)
        self.set_step_size(eta, beta)
        self.register_buffer("tau", torch.tensor(self.tau_init, dtype=torch.float32))
        self.register_buffer("u", torch.zeros((), dtype=torch.float32))

    def compute(self, similarities: Tensor, positive_similarities: Tensor, **context: Any) -> Tensor:
        # a 0-d device tensor: no host read; evaluation uses the learned value too
        return self.tau.to(similarities.dtype, copy=True)  # a copy: update() moves the buffer in place

    def update(self, row_losses: Tensor, statistics: RowStatistics) -> Tensor:
        if not self.steps(statistics):
            return row_losses
        # one tau for every row of both directions: it moves once a step, after both have used it
        mean = self.once_for_both_directions(self.clipped_gradient(statistics).mean(), statistics.direction)
        if mean is not None:
            with torch.no_grad():
                tau, u = self.moved(self.tau, self.u, mean.to(self.u.dtype))
                self.u.copy_(u)
                self.tau.copy_(tau)
        return row_losses
