from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor, nn

from tempnlp._checks import flag
from tempnlp._rows import write_rows
from tempnlp.temperature.base import RowStatistics
from tempnlp.temperature.dro import RobustTemperature


def check_num_samples(num_samples: object) -> int:
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int (the training set size), got {num_samples!r}.")
    return num_samples


class SampleTemperatures(nn.Module):
    """Per-sample buffers of one direction: tau, the moving average u of its gradient, and whether it was seen."""

    def __init__(self, num_samples: int, tau_init: float) -> None:
        super().__init__()
        self.register_buffer("tau", torch.full((num_samples,), float(tau_init), dtype=torch.float32))
        self.register_buffer("u", torch.zeros(num_samples, dtype=torch.float32))
        self.register_buffer("seen", torch.zeros(num_samples, dtype=torch.bool))


class IndividualTemperature(RobustTemperature):
    """One temperature per training sample, learned by iSogCLR's distributionally robust update.

    Each sample keeps its own tau_i. After each step, the objective's statistics give the row's robust gradient
    ``G_i = log s_i + rho - (1/|C_i|) sum_j p_ij h_ij / tau_i`` (see
    :meth:`~tempnlp.temperature.base.RowStatistics.robust_gradient`), and for dataset index k::

        u[k]   = (1 - beta) u[k] + beta clip(G_i, -grad_clip, grad_clip)
        tau[k] = clip(tau[k] - eta u[k], tau_min, tau_max)

    Samples whose partition looks alike (frequent semantics) end with a larger tau, rare ones a smaller one. The
    objective uses the temperature as a constant; only this update moves it. The encoder descends the same
    objective, ``tau_i log s_i``: on SogCLR it is the paper's iSogCLR; on InfoNCE or DCL the partition estimate
    ``s_i`` is the batch's own, and each row's loss ``log s_i`` is weighted by ``tau_i / tau_init`` (see
    :meth:`~tempnlp.temperature.dro.RobustTemperature.observe`). A symmetric objective gives each direction its
    own temperatures (the bimodal form), or, with ``share_directions=True``, both directions one tau_i moved by
    the mean of their two gradients (the unimodal form, as LibAUC's ``GCLoss_v1``). Outside training (no
    gradient) every row uses ``tau_init``.

    A tau_i is read the next time its sample comes back: with one pass over the data it never acts.

    Defaults are the authors' unimodal settings (``tau_init`` 0.1 as SogCLR's fixed tau, bounds 0.05-1.0,
    ``rho`` 0.3-0.4, ``eta`` 0.01-0.03, ``beta`` 0.8, gradient clip 5 as in their code). ``rho`` must stay below
    log(size of a row's partition).

    Args:
        num_samples: the size of the training set (dataset indices lie in ``[0, num_samples)``).
        tau_init, tau_min, tau_max: initial temperature and its bounds.
        rho: radius of the KL ball around the uniform weighting of the partition. A small rho drives tau up, a
            rho near log(partition size) down.
        eta: temperature step size.
        beta: moving-average weight of the temperature gradient.
        grad_clip: clip of G_i; None disables it.
        share_directions: one tau_i for both directions of a symmetric objective (the unimodal form).

    Reference: Qiu, Hu, Yuan, Zhou, Zhang and Yang 2023, "Not All Semantics are Created Equal: Contrastive
    Self-supervised Learning with Automatic Temperature Individualization", ICML, arXiv 2305.11965.

    Example::

        from tempnlp.losses import InfoNCELoss
        from tempnlp.state import add_index_column
        from tempnlp.temperature import IndividualTemperature

        train_dataset = add_index_column(train_dataset)
        loss = InfoNCELoss(model, temperature=IndividualTemperature(num_samples=len(train_dataset)))
    """

    name = "individual"
    summary = "one tau per training sample, learned by iSogCLR's DRO update (KL radius rho); checkpointed"
    paper = "Qiu et al. 2023 (iSogCLR), arXiv 2305.11965"
    usage = "IndividualTemperature(num_samples, rho=0.3)"
    citation = """
@inproceedings{qiu2023isogclr,
    title = {Not All Semantics are Created Equal: Contrastive Self-supervised Learning with Automatic
             Temperature Individualization},
    author = {Qiu, Zi-Hao and Hu, Quanqi and Yuan, Zhuoning and Zhou, Denny and Zhang, Lijun and Yang, Tianbao},
    booktitle = {International Conference on Machine Learning (ICML)},
    year = {2023},
    url = {https://arxiv.org/abs/2305.11965},
}
"""
    needs_indices = True
    acts_on_revisit = True
    run_arguments = ("num_samples",)

    def __init__(
        self,
        num_samples: int,
        tau_init: float = 0.1,
        tau_min: float = 0.05,
        tau_max: float = 1.0,
        rho: float = 0.3,
        eta: float = 0.01,
        beta: float = 0.8,
        grad_clip: float | None = 5.0,
        share_directions: bool = False,
    ) -> None:
        super().__init__(tau_init, tau_min, tau_max, rho, grad_clip)
        self.share_directions = flag("share_directions", share_directions)
        self.num_samples = check_num_samples(num_samples)
        self.set_step_size(eta, beta)
        self.states = nn.ModuleList([SampleTemperatures(num_samples, self.tau_init)])

    def attach(self, directions: int) -> None:
        super().attach(directions)
        while len(self.states) < (1 if self.share_directions else directions):
            self.states.append(SampleTemperatures(self.num_samples, self.tau_init).to(self.states[0].tau.device))

    def state(self, direction: int = 0) -> SampleTemperatures:
        return self.states[0 if self.share_directions else direction]

    @property
    def tau(self) -> Tensor:
        """The temperatures of the first direction, one per dataset index."""
        return self.states[0].tau

    def compute(self, similarities: Tensor, positive_similarities: Tensor, **context: Any) -> Tensor:
        indices = context.get("indices")
        if indices is None:  # evaluation: no training sample's state applies
            return torch.full(
                (similarities.size(0),), self.tau_init, dtype=similarities.dtype, device=similarities.device
            )
        return self.state(context.get("direction", 0)).tau[indices].to(similarities.dtype)

    def update(self, row_losses: Tensor, statistics: RowStatistics) -> Tensor:
        indices = statistics.indices
        if indices is None or not torch.is_grad_enabled():
            return row_losses
        state = self.state(statistics.direction)
        state.seen.index_fill_(0, indices, True)  # no host-to-device copy of the value
        if not self.steps(statistics):
            return row_losses
        with torch.no_grad():
            gradient = statistics.robust_gradient(self.rho)
            if self.share_directions:  # clipped after averaging the two directions, as LibAUC does
                gradient = self.once_for_both_directions(gradient, statistics.direction)
                if gradient is None:
                    return row_losses
            if self.grad_clip is not None:
                gradient = gradient.clamp(-self.grad_clip, self.grad_clip)
            tau, u = self.moved(statistics.tau, state.u[indices].to(statistics.tau.dtype), gradient)
            write_rows(state.u, indices, u)
            write_rows(state.tau, indices, tau)
        return row_losses

    def sample_temperatures(self, direction: int = 0) -> Tensor | None:
        """The temperatures of the samples seen so far in one direction (for histograms)."""
        if direction >= (1 if self.share_directions else len(self.states)):
            return None
        state = self.states[direction]
        return state.tau[state.seen]

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "num_samples": self.num_samples,
            **super().get_config_dict(),
            **({"share_directions": True} if self.share_directions else {}),
        }


def warn_single_epoch(num_epochs: float, name: str) -> None:
    """Per-sample temperatures are read the next time a sample is seen: with one pass they never act."""
    if num_epochs <= 1:
        warnings.warn(
            f"{name} learns one temperature per training sample, which is only used when that sample comes back: "
            f"with {num_epochs:g} epoch(s) every sample is seen once and trains at tau_init throughout. Train for "
            "several epochs, or use TempNet, which predicts tau for unseen samples.",
            UserWarning,
            stacklevel=3,
        )
