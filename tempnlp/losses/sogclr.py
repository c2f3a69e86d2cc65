from __future__ import annotations

from typing import Any, Literal

from sentence_transformers.sentence_transformer.model import SentenceTransformer
from torch import Tensor

from tempnlp._checks import positive_float
from tempnlp.losses.base import TemperatureContrastiveLoss
from tempnlp.objectives import ISogCLR, SogCLR
from tempnlp.temperature import TemperaturePolicy


class SogCLRLoss(TemperatureContrastiveLoss):
    name = "SogCLRLoss"
    summary = (
        "InfoNCE gradient with a per-sample moving average of the partition function; any temperature except three "
        "(rules.py)"
    )
    paper = "Yuan et al. 2022 (SogCLR), arXiv 2202.12387"
    usage = "SogCLRLoss(model, num_samples, temperature=0.1)"
    paper_citation = """
@inproceedings{yuan2022sogclr,
    title = {Provable Stochastic Optimization for Global Contrastive Learning: Small Batch Does Not Harm
             Performance},
    author = {Yuan, Zhuoning and Wu, Yuexin and Qiu, Zi-Hao and Du, Xianzhi and Zhang, Lijun and Zhou, Denny
              and Yang, Tianbao},
    booktitle = {International Conference on Machine Learning (ICML)},
    year = {2022},
    url = {https://arxiv.org/abs/2202.12387},
}
"""

    def __init__(
        self,
        model: SentenceTransformer,
        num_samples: int,
        temperature: TemperaturePolicy | float = 0.1,
        gamma: float = 0.9,
        symmetric: bool = False,
        same_view_negatives: bool = False,
        share_directions: bool = False,
        check_finite: bool = True,
        queue_size: int = 0,
        queue_momentum: float = 0.995,
        mini_batch_size: int | None = None,
        gather_across_devices: bool = False,
        gamma_schedule: Literal["constant", "cosine"] = "constant",
        gamma_decay_epochs: float | None = None,
    ) -> None:
        """
        SogCLR: a contrastive loss whose partition function is a per-sample moving average (Yuan et al. 2022).

        Each training sample keeps a moving average of its partition function over the negatives, so a small
        batch gives a consistent gradient estimate. The state is addressed by dataset index: add it with
        :func:`tempnlp.state.add_index_column` and save it with every checkpoint with
        :func:`tempnlp.train.track_loss_state`. Any temperature policy applies except three that
        :mod:`tempnlp.objectives.rules` refuses with the reason: a learnable tau, :class:`~tempnlp.temperature.Hardness`
        and MACL's reweighting; with :class:`~tempnlp.temperature.IndividualTemperature` this is iSogCLR
        (:class:`ISogCLRLoss`).

        Args:
            model: SentenceTransformer model.
            num_samples: the size of the training set.
            temperature: a positive number (the paper's fixed tau: 0.1) or a temperature policy.
            gamma: moving-average weight of the partition estimate (0.9).
            symmetric: also score each document against the anchors, with its own moving averages.
            same_view_negatives: also contrast each row with the other rows of its side (two-view layout).
            share_directions: one moving average per sample for both directions (with ``symmetric=True``): the
                unimodal form, where anchor and positive are two views of one sample.
            check_finite: raise a ValueError on NaN/inf embeddings or an index out of range or repeated in the
                batch (one host read per step; False skips both checks).
            queue_size: keep a momentum queue of this many extra negatives; 0 disables it.
            queue_momentum: EMA rate of the queue's encoder copy (0.995).
            mini_batch_size: GradCache mini-batch size (same loss, gradients and state updates); None: off.
            gather_across_devices: in multi-process training, compute the loss and update the state of the
                global batch, identically on every rank.
            gamma_schedule: ``"cosine"`` decays the moving-average weight from 1 to ``gamma`` over
                ``gamma_decay_epochs`` epochs, as LibAUC does (see :class:`~tempnlp.objectives.SogCLR`).
            gamma_decay_epochs: the length of that decay in epochs.

        Requirements:
            1. (anchor, positive[, negative_1, ...]) columns and a ``label`` column holding the dataset index.

        Example:
            ::

                from tempnlp.losses import SogCLRLoss
                from tempnlp.state import add_index_column
                from tempnlp.train import track_loss_state

                train_dataset = add_index_column(train_dataset)
                loss = SogCLRLoss(model, num_samples=len(train_dataset), temperature=0.1)
                trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train_dataset, loss=loss)
                track_loss_state(trainer)
                trainer.train()
        """
        options = dict(
            gamma=gamma,
            symmetric=symmetric,
            same_view_negatives=same_view_negatives,
            check_finite=check_finite,
            gather_across_devices=gather_across_devices,
            gamma_schedule=gamma_schedule,
            gamma_decay_epochs=gamma_decay_epochs,
        )
        if isinstance(temperature, TemperaturePolicy) or share_directions:
            objective = SogCLR(num_samples, temperature, share_directions=share_directions, **options)
        else:  # a number: the earlier SogCLR objective, with its tau and query_state views
            tau = positive_float("temperature", temperature, hint="SogCLR uses 0.1.")
            objective = ISogCLR(num_samples, tau, tau, tau, learn_temperature=False, **options)
        super().__init__(model, objective, queue_size, queue_momentum, mini_batch_size)

    @property
    def tau(self) -> Tensor | None:
        """The temperature of every dataset index: a fixed temperature's value everywhere, a per-sample policy's
        values, or None for a policy without per-sample temperatures."""
        if hasattr(self.objective, "tau"):
            return self.objective.tau
        return getattr(self.temperature, "tau", None)

    def get_config_dict(self) -> dict[str, Any]:
        objective = self.objective
        config = {**super().get_config_dict(), "num_samples": objective.num_samples, "gamma": objective.gamma}
        if objective.gamma_schedule != "constant":
            config.update(gamma_schedule=objective.gamma_schedule, gamma_decay_epochs=objective.gamma_decay_epochs)
        return config
