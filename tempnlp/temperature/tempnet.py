from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from tempnlp._rows import write_rows
from tempnlp.temperature.base import RowStatistics
from tempnlp.temperature.dro import RobustTemperature
from tempnlp.temperature.individual import check_num_samples


class SamplePredictions(nn.Module):
    """The last tau predicted for every dataset index in one direction, and whether it was seen (histograms)."""

    def __init__(self, num_samples: int, tau_init: float) -> None:
        super().__init__()
        self.register_buffer("tau", torch.full((num_samples,), float(tau_init), dtype=torch.float32))
        self.register_buffer("seen", torch.zeros(num_samples, dtype=torch.bool))


class TempNet(nn.Module):
    """A small network mapping a (detached) embedding to a temperature in [tau_min, tau_max] (Qiu et al. 2024).

    ``Linear(d, hidden) -> ReLU -> Linear(hidden, 1) -> sigmoid``, rescaled to the bounds; the last layer starts
    at zero weight with the bias that gives ``tau_init``, so every sample begins at ``tau_init``.
    """

    def __init__(self, embedding_dim: int, hidden: int, tau_init: float, tau_min: float, tau_max: float) -> None:
        super().__init__()
        if not tau_min < tau_init < tau_max:
            raise ValueError(f"TempNet needs tau_min < tau_init < tau_max, got {tau_min}, {tau_init}, {tau_max}.")
        for name, value in (("embedding_dim", embedding_dim), ("hidden", hidden)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}.")
        self.tau_min, self.tau_max = tau_min, tau_max
        self.hidden = nn.Linear(embedding_dim, hidden)
        self.output = nn.Linear(hidden, 1)
        nn.init.zeros_(self.output.weight)
        fraction = (tau_init - tau_min) / (tau_max - tau_min)
        nn.init.constant_(self.output.bias, math.log(fraction / (1.0 - fraction)))

    def forward(self, embeddings: Tensor) -> Tensor:
        hidden = torch.relu(self.hidden(embeddings.detach().to(self.hidden.weight.dtype)))
        return self.tau_min + (self.tau_max - self.tau_min) * torch.sigmoid(self.output(hidden).squeeze(-1))


class TempNetTemperature(RobustTemperature):
    """tau_i predicted from the (detached) embedding of row i by a small network, trained by the robust gradient.

    The objective uses the prediction as a constant (on InfoNCE or DCL, each row's loss weighted by
    ``tau_i / tau_init``, so that the encoder descends the robust objective ``tau_i log s_i``, as with
    :class:`~tempnlp.temperature.IndividualTemperature`); the network's weights receive the gradient of
    ``mean_i G_i * tau_i(theta)``, where ``G_i`` is the row's DRO temperature gradient (as for
    :class:`~tempnlp.temperature.IndividualTemperature`), through a term added to the loss whose value is zero.
    Because tau comes from the embedding, a sample seen for the first time already has its own temperature: this
    is what makes individual temperatures act in one-epoch runs such as unsupervised SimCSE. One network serves
    both directions of a symmetric objective.

    The network lives in the loss, so the trainer's optimizer updates it; with sentence-transformers' training
    arguments ``learning_rate_mapping={r"temperature\\.network\\.": 1e-4}`` gives it its own learning rate
    (``temperature\\.policy\\.network\\.`` when :class:`Hardness` wraps it).

    Args:
        embedding_dim: the encoder's embedding size (a recipe fills it in).
        hidden: width of the hidden layer (256).
        tau_init, tau_min, tau_max: the initial prediction and the bounds (0.1, 0.05, 1.0).
        rho: KL radius of the robust objective (0.3).
        grad_clip: clip of G_i (5.0); None disables it.
        num_samples: if given, the last prediction of every dataset index is recorded (``tau``), for the
            per-sample histograms; the rows' dataset indices are then read in training.

    Reference: Qiu, Guo, Xu, Zhao, Zhang and Yang 2024, "To Cool or not to Cool? Temperature Network Meets Large
    Foundation Models via DRO", ICML, arXiv 2404.04575.

    Example::

        loss = InfoNCELoss(model, temperature=TempNetTemperature(model.get_embedding_dimension()))
    """

    name = "tempnet"
    summary = "tau predicted from the embedding by a small network, trained by the DRO gradient"
    paper = "Qiu et al. 2024 (TempNet), arXiv 2404.04575"
    usage = "TempNetTemperature(embedding_dim, hidden=256)"
    citation = """
@inproceedings{qiu2024tempnet,
    title = {To Cool or not to Cool? Temperature Network Meets Large Foundation Models via DRO},
    author = {Qiu, Zi-Hao and Guo, Siqi and Xu, Mao and Zhao, Tuo and Zhang, Lijun and Yang, Tianbao},
    booktitle = {International Conference on Machine Learning (ICML)},
    year = {2024},
    url = {https://arxiv.org/abs/2404.04575},
}
"""
    run_arguments = ("embedding_dim", "num_samples")

    def __init__(
        self,
        embedding_dim: int,
        hidden: int = 256,
        tau_init: float = 0.1,
        tau_min: float = 0.05,
        tau_max: float = 1.0,
        rho: float = 0.3,
        grad_clip: float | None = 5.0,
        num_samples: int | None = None,
        network: nn.Module | None = None,
    ) -> None:
        super().__init__(tau_init, tau_min, tau_max, rho, grad_clip)
        self.network = network if network is not None else TempNet(embedding_dim, hidden, tau_init, tau_min, tau_max)
        self.embedding_dim = embedding_dim
        self.num_samples = None if num_samples is None else check_num_samples(num_samples)
        self.needs_indices = num_samples is not None
        self.records = (
            nn.ModuleList([SamplePredictions(num_samples, self.tau_init)]) if num_samples is not None else None
        )
        self._prediction: Tensor | None = None  # differentiable in the network, until observe() takes it

    def attach(self, directions: int) -> None:
        super().attach(directions)
        while self.records is not None and len(self.records) < directions:
            device = self.records[0].tau.device
            self.records.append(SamplePredictions(self.num_samples, self.tau_init).to(device))

    @property
    def tau(self) -> Tensor | None:
        """The last prediction for every dataset index (first direction), when ``num_samples`` was given."""
        return None if self.records is None else self.records[0].tau

    def compute(self, similarities: Tensor, positive_similarities: Tensor, **context: Any) -> Tensor:
        anchors = context.get("anchors")
        if anchors is None:
            raise ValueError("TempNetTemperature predicts tau from the anchor embeddings: pass anchors=...")
        predicted = self.network(anchors).to(similarities.dtype)  # (B,), differentiable in the network only
        # the objective observes each direction right after computing it: one prediction waits at a time
        self._prediction = predicted
        return predicted.detach()

    def update(self, row_losses: Tensor, statistics: RowStatistics) -> Tensor:
        predicted, self._prediction = self._prediction, None
        if not torch.is_grad_enabled():
            return row_losses
        if self.records is not None and statistics.indices is not None:
            with torch.no_grad():  # the latest tau_i, for the histograms; a short batch's too
                record = self.records[statistics.direction]
                write_rows(record.tau, statistics.indices, statistics.tau)
                record.seen.index_fill_(0, statistics.indices, True)
        if not self.steps(statistics):
            return row_losses
        # d/d(theta) of mean_i G_i * tau_i(theta): the robust objective's descent direction for the network;
        # the term's value is zero, so the logged loss stays the contrastive one.
        return row_losses + self.clipped_gradient(statistics) * (predicted - predicted.detach())

    def sample_temperatures(self, direction: int = 0) -> Tensor | None:
        if self.records is None or direction >= len(self.records):
            return None
        record = self.records[direction]
        return record.tau[record.seen]

    def get_config_dict(self) -> dict[str, Any]:
        hidden = getattr(getattr(self.network, "hidden", None), "out_features", None)
        return {"embedding_dim": self.embedding_dim, "hidden": hidden, **super().get_config_dict()}
