"""The thin sentence-transformers layer: embed the columns, hand them to an objective, expose its temperature.

A loss declares itself once (class attributes ``name``, ``summary``, ``paper``, ``paper_citation``), which
``tempnlp losses``, recipes, the README table and the model card read, and answers the trainer integration's
questions through capabilities (:attr:`needs_dataset_indices`, :attr:`has_state`, :attr:`needs_global_batch`,
:attr:`acts_on_revisit`) instead of being told apart by class.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from sentence_transformers.sentence_transformer.model import SentenceTransformer
from torch import Tensor, nn

from tempnlp.losses.cache import GradCacheMixin
from tempnlp.objectives.base import ContrastiveObjective
from tempnlp.temperature import TemperaturePolicy


class TemperatureContrastiveLoss(GradCacheMixin, nn.Module):
    """Base of tempnlp's sentence-transformers losses: any objective with any temperature policy.

    The loss takes the batch columns in dataset order: anchor, positive, then any number of hard-negative
    columns; when the objective needs dataset indices (per-sample state), they come in the ``label`` column
    (:func:`tempnlp.state.add_index_column`).
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    usage: ClassVar[str] = ""
    #: BibTeX of the objective's paper; :attr:`citation` adds the policy's.
    paper_citation: ClassVar[str] = ""

    def __init__(
        self,
        model: SentenceTransformer,
        objective: ContrastiveObjective,
        queue_size: int = 0,
        queue_momentum: float = 0.995,
        mini_batch_size: int | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.objective = objective
        self._set_up_forward(queue_size, queue_momentum, mini_batch_size, objective.gather_across_devices)

    @property
    def temperature(self) -> TemperaturePolicy:
        """The temperature policy; its parameters, if any, are ``objective.temperature.*`` of this loss."""
        return self.objective.temperature

    @property
    def citation(self) -> str:
        return self.temperature.citation + self.paper_citation

    # -- capabilities, read by tempnlp.train -------------------------------------------------------------------

    @property
    def needs_dataset_indices(self) -> bool:
        """A training step reads each row's dataset index from the ``label`` column."""
        return self.objective.needs_indices

    @property
    def has_state(self) -> bool:
        """Anything a resumed run needs back that sentence-transformers does not save with the model: per-sample
        buffers, a momentum queue, or trainable parameters of the loss's own (a learnable tau, TempNet)."""
        return (
            self.needs_dataset_indices
            or self.queue is not None
            or bool(self.own_parameters())
            or self._policy_has_buffers()
        )

    @property
    def needs_global_batch(self) -> bool:
        """Under several processes, whether every rank must see the global batch (``gather_across_devices``):
        per-sample state and the loss's own parameters would otherwise part ways across ranks."""
        return (
            self.needs_dataset_indices
            or bool(self.own_parameters())
            or any(getattr(module, "learns_state", False) for module in self.temperature.modules())
        )

    @property
    def acts_on_revisit(self) -> bool:
        """The temperature of a sample acts only when that sample comes back (warn for one-epoch runs)."""
        return self.temperature.acts_on_revisit

    def _policy_has_buffers(self) -> bool:
        """A policy that learns a value of its own in buffers (a global DRO tau, a schedule's position)."""
        return any(True for _ in self.temperature.buffers())

    @property
    def needs_progress(self) -> bool:
        """The temperature follows the training step (a schedule): see :func:`tempnlp.train.follow_progress`."""
        return any(getattr(module, "needs_progress", False) for module in self.temperature.modules())

    def own_parameters(self) -> list[nn.Parameter]:
        model_parameters = {id(p) for p in self.model.parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in model_parameters]

    def sample_temperatures(self, direction: int = 0) -> Tensor | None:
        """Per-sample temperatures of the samples seen so far in one direction, for policies that keep them."""
        method = getattr(self.temperature, "sample_temperatures", None)
        return None if method is None else method(direction)

    def check_batch_shape(self, batch_size: int, document_columns: int) -> None:
        """Refuse, before any data loads, a per-device batch whose rows cannot take a step (see the objective)."""
        self.objective.check_batch_shape(batch_size, document_columns)

    # -- forward ---------------------------------------------------------------------------------------------

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        features = list(sentence_features)
        self._check_columns(len(features))
        return self._forward(features, labels)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        self._check_columns(len(embeddings))
        extra = self.queue.negatives() if self.queue is not None else None
        indices = labels if self.needs_dataset_indices else None
        return self.objective(embeddings[0], embeddings[1:], indices, extra_negatives=extra)

    def _loss_from(self, embeddings: list[Tensor], labels: Tensor | None) -> Tensor:
        return self.compute_loss_from_embeddings(embeddings, labels)

    def temperature_stats(self) -> dict[str, float]:
        """``tau_mean``, ``tau_min``, ``tau_max`` of the last step (one host read: call it when logging)."""
        return self.objective.temperature_stats()

    def get_config_dict(self) -> dict[str, Any]:
        # The policy is passed as a module so the model card renders it as ``MACLTemperature(tau0=..., ...)``.
        config: dict[str, Any] = {"temperature": self.temperature, "symmetric": self.objective.symmetric}
        if self.objective.same_view_negatives:
            config["same_view_negatives"] = True
        if self.queue is not None:
            config.update(queue_size=self.queue.size, queue_momentum=self.queue.momentum)
        if self.mini_batch_size is not None:
            config["mini_batch_size"] = self.mini_batch_size
        if self.objective.gather_across_devices:
            config["gather_across_devices"] = True
        return config

    def _check_columns(self, count: int) -> None:
        if count < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least two columns (anchor, positive[, negative_1, ...]) but the "
                f"batch has {count}. For unsupervised SimCSE, where a sentence is its own positive, duplicate "
                "the text column: dataset.map(lambda row: {'positive': row['anchor']})."
            )
