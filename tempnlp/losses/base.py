"""The thin sentence-transformers layer: embed the columns, hand them to an objective, expose its temperature."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sentence_transformers.sentence_transformer.model import SentenceTransformer
from torch import Tensor, nn

from tempnlp.losses.cache import GradCacheMixin
from tempnlp.objectives.base import ContrastiveObjective
from tempnlp.temperature import TemperaturePolicy


class TemperatureContrastiveLoss(GradCacheMixin, nn.Module):
    """Base of tempnlp's sentence-transformers losses.

    Subclasses build ``self.objective`` (a :class:`~tempnlp.objectives.base.ContrastiveObjective`) and define
    ``citation``. The loss takes the batch columns in dataset order: anchor, positive, then any number of
    hard-negative columns.
    """

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
        gather = getattr(objective, "gather_across_devices", False)
        self._set_up_forward(queue_size, queue_momentum, mini_batch_size, gather)

    @property
    def temperature(self) -> TemperaturePolicy:
        """The temperature policy; its parameters, if any, are ``objective.temperature.*`` of this loss."""
        return self.objective.temperature

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        features = list(sentence_features)
        self._check_columns(len(features))
        return self._forward(features, labels)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Tensor:
        self._check_columns(len(embeddings))
        extra = self.queue.negatives() if self.queue is not None else None
        return self.objective(embeddings[0], embeddings[1:], extra_negatives=extra)

    def _loss_from(self, embeddings: list[Tensor], labels: Tensor | None) -> Tensor:
        return self.compute_loss_from_embeddings(embeddings, labels)

    def temperature_stats(self) -> dict[str, float]:
        """``tau_mean``, ``tau_min``, ``tau_max`` of the last step (one host read: call it when logging)."""
        return self.objective.temperature_stats()

    def get_config_dict(self) -> dict[str, Any]:
        # The policy is passed as a module so the model card renders it as ``MACLTemperature(tau0=..., ...)``.
        config: dict[str, Any] = {"temperature": self.temperature}
        if self.queue is not None:
            config.update(queue_size=self.queue.size, queue_momentum=self.queue.momentum)
        if self.mini_batch_size is not None:
            config["mini_batch_size"] = self.mini_batch_size
        return config

    def _check_columns(self, count: int) -> None:
        if count < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least two columns (anchor, positive[, negative_1, ...]) but the "
                f"batch has {count}. For unsupervised SimCSE, where a sentence is its own positive, duplicate "
                "the text column: dataset.map(lambda row: {'positive': row['anchor']})."
            )
