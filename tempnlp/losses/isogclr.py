from __future__ import annotations

from typing import Any, Literal

from sentence_transformers.sentence_transformer.model import SentenceTransformer
from torch import Tensor, nn

from tempnlp.losses.base import TemperatureContrastiveLoss
from tempnlp.objectives.isogclr import ISogCLR, TempNet


class ISogCLRLoss(TemperatureContrastiveLoss):
    """SogCLR's objective with :class:`~tempnlp.temperature.IndividualTemperature`: iSogCLR (Qiu et al. 2023)."""

    name = "ISogCLRLoss"
    summary = "SogCLR with one learned tau per training sample (DRO over a KL ball of radius rho)"
    paper = "Qiu et al. 2023 (iSogCLR), arXiv 2305.11965"
    usage = "ISogCLRLoss(model, num_samples, rho=0.3, symmetric=False)"
    paper_citation = ""  # the policy's citation is iSogCLR's

    def __init__(
        self,
        model: SentenceTransformer,
        num_samples: int,
        tau_init: float = 0.1,
        tau_min: float = 0.05,
        tau_max: float = 1.0,
        gamma: float = 0.9,
        rho: float = 0.3,
        eta: float = 0.01,
        beta: float = 0.8,
        grad_clip: float | None = 5.0,
        symmetric: bool = False,
        check_finite: bool = True,
        temperature_network: nn.Module | None = None,
        queue_size: int = 0,
        queue_momentum: float = 0.995,
        mini_batch_size: int | None = None,
        gather_across_devices: bool = False,
        gamma_schedule: Literal["constant", "cosine"] = "constant",
        gamma_decay_epochs: float | None = None,
    ) -> None:
        """
        iSogCLR: a contrastive loss with one learned temperature per training sample (Qiu et al. 2023).

        Every training sample keeps its own temperature, learned by distributionally robust optimisation:
        samples whose negatives look alike (frequent semantics) end with a larger temperature, rare ones a
        smaller one. It also keeps SogCLR's moving average of each sample's partition function, so small batches
        give a consistent gradient. The state is addressed by dataset index: add it with
        :func:`tempnlp.state.add_index_column`, and save it with every checkpoint with
        :func:`tempnlp.train.track_loss_state`.

        A per-sample temperature is read the next time its sample is seen: with a single epoch it never acts.
        Train for several epochs (the trainer integration warns otherwise).

        Args:
            model: SentenceTransformer model.
            num_samples: the size of the training set.
            tau_init: initial temperature; 0.1, the authors' unimodal setting.
            tau_min, tau_max: bounds of the temperatures (0.05, 1.0).
            gamma: moving-average weight of the partition estimate (0.9).
            rho: radius of the KL ball around the uniform weighting of the negatives (0.3; the authors use
                0.3-0.4 for unimodal data). A small rho drives tau up, a rho near log(number of negatives) down;
                it must stay below log(number of negatives).
            eta: temperature step size (0.01-0.03).
            beta: moving-average weight of the temperature gradient (0.8).
            grad_clip: clip of the temperature gradient (5.0, as in the authors' code); None turns it off.
            symmetric: also score each document against the queries, with a separate state for documents (the
                bimodal query/document form).
            check_finite: raise a ValueError on NaN/inf embeddings or an index out of range or repeated in the
                batch (one host read per step; False skips both checks).
            temperature_network: predict tau from the embedding instead (see :class:`TempNetLoss`).
            queue_size: keep a momentum queue of this many extra negatives (MoCo / ESimCSE); 0 disables it.
            queue_momentum: EMA rate of the queue's encoder copy (0.995).
            mini_batch_size: GradCache mini-batch size (same loss, gradients and state updates); None: off.
            gather_across_devices: in multi-process training, gather embeddings and dataset indices of every rank:
                loss and state updates are those of the global batch, identical on every rank. The momentum
                queue is not synchronised across ranks: do not combine the two.
            gamma_schedule: ``"cosine"`` decays gamma from 1 over ``gamma_decay_epochs`` epochs, as LibAUC and
                FastCLIP do (see :class:`~tempnlp.objectives.SogCLR`).
            gamma_decay_epochs: the length of that decay in epochs.

        Requirements:
            1. (anchor, positive[, negative_1, ...]) columns and a ``label`` column holding the dataset index.

        Example:
            ::

                from tempnlp.losses import ISogCLRLoss
                from tempnlp.state import add_index_column
                from tempnlp.train import track_loss_state

                train_dataset = add_index_column(train_dataset)
                loss = ISogCLRLoss(model, num_samples=len(train_dataset))
                trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train_dataset, loss=loss)
                track_loss_state(trainer)  # saves/restores the per-sample state with checkpoints, logs tau
                trainer.train()
        """
        objective = ISogCLR(
            num_samples,
            tau_init=tau_init,
            tau_min=tau_min,
            tau_max=tau_max,
            gamma=gamma,
            rho=rho,
            eta=eta,
            beta=beta,
            grad_clip=grad_clip,
            symmetric=symmetric,
            check_finite=check_finite,
            temperature_network=temperature_network,
            gather_across_devices=gather_across_devices,
            gamma_schedule=gamma_schedule,
            gamma_decay_epochs=gamma_decay_epochs,
        )
        super().__init__(model, objective, queue_size, queue_momentum, mini_batch_size)

    @property
    def tau(self) -> Tensor:
        """Per-sample temperatures, one per dataset index."""
        return self.objective.tau

    def get_config_dict(self) -> dict[str, Any]:
        o = self.objective
        config = {"num_samples": o.num_samples, "tau_init": o.tau_init, "gamma": o.gamma, "symmetric": o.symmetric}
        if self.queue is not None:
            config.update(queue_size=self.queue.size, queue_momentum=self.queue.momentum)
        if self.mini_batch_size is not None:
            config["mini_batch_size"] = self.mini_batch_size
        config.update(tau_min=o.tau_min, tau_max=o.tau_max, rho=o.rho, eta=o.eta, beta=o.beta, grad_clip=o.grad_clip)
        if o.gamma_schedule != "constant":
            config.update(gamma_schedule=o.gamma_schedule, gamma_decay_epochs=o.gamma_decay_epochs)
        return config


class TempNetLoss(ISogCLRLoss):
    """iSogCLR's robust objective with the temperature predicted by a small network (TempNet, Qiu et al. 2024).

    ``tau_i = TempNet(embedding_i)``, bounded in [tau_min, tau_max] and computed from the detached embedding, so a
    sample seen for the first time already gets its own temperature; this is what makes individual temperatures
    useful in one-epoch runs such as unsupervised SimCSE. The network lives in the loss, so the trainer's optimizer
    updates it; ``learning_rate_mapping={r"temperature_network\\.": 1e-4}`` gives it its own learning rate.

    Reference: Qiu, Guo, Xu, Zhao, Zhang and Yang 2024, "To Cool or not to Cool? Temperature Network Meets Large
    Foundation Models via DRO", arXiv 2404.04575.
    """

    name = "TempNetLoss"
    summary = "the iSogCLR objective with tau predicted from the embedding by a small network"
    paper = "Qiu et al. 2024 (TempNet), arXiv 2404.04575"
    usage = "TempNetLoss(model, num_samples, hidden=256)"

    def __init__(
        self,
        model: SentenceTransformer,
        num_samples: int,
        hidden: int = 256,
        tau_init: float = 0.1,
        tau_min: float = 0.05,
        tau_max: float = 1.0,
        gamma: float = 0.9,
        rho: float = 0.3,
        grad_clip: float | None = 5.0,
        symmetric: bool = False,
        check_finite: bool = True,
        queue_size: int = 0,
        queue_momentum: float = 0.995,
        mini_batch_size: int | None = None,
        gather_across_devices: bool = False,
    ) -> None:
        network = TempNet(model.get_embedding_dimension(), hidden, tau_init, tau_min, tau_max)
        super().__init__(
            model,
            num_samples,
            tau_init=tau_init,
            tau_min=tau_min,
            tau_max=tau_max,
            gamma=gamma,
            rho=rho,
            grad_clip=grad_clip,
            symmetric=symmetric,
            check_finite=check_finite,
            temperature_network=network,
            queue_size=queue_size,
            queue_momentum=queue_momentum,
            mini_batch_size=mini_batch_size,
            gather_across_devices=gather_across_devices,
        )

    def get_config_dict(self) -> dict[str, Any]:
        config = super().get_config_dict()
        config["hidden"] = self.objective.temperature_network.hidden.out_features
        for key in ("eta", "beta"):  # TempNet has no buffer step
            config.pop(key)
        return config
