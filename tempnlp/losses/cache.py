"""GradCache for tempnlp's losses, on sentence-transformers' own CachedLossMixin.

With ``mini_batch_size`` set, a loss embeds its batch in mini-batches without gradients, computes the objective
once over the whole batch (so per-sample state and the momentum queue advance exactly once), caches the
gradient of every embedding, and replays the mini-batches with gradients in the backward pass (Gao et al. 2021,
"Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup"). Loss and gradients equal the
uncached loss; peak activation memory is that of one mini-batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from sentence_transformers.base.losses.gradcache import CachedLossMixin
from sentence_transformers.base.losses.merged_forward import embed_columns
from torch import Tensor

from tempnlp.losses.queue import MomentumQueue


class GradCacheMixin(CachedLossMixin):
    """The forward pass shared by tempnlp's losses: GradCache when ``mini_batch_size`` is set, and the momentum
    queue. Subclasses define ``_loss_from(embeddings, labels)`` and call :meth:`_set_up_forward` in ``__init__``."""

    mini_batch_size: int | None = None
    queue: MomentumQueue | None  # set by _set_up_forward (a class default would shadow the submodule)

    def _set_up_forward(
        self, queue_size: int, queue_momentum: float, mini_batch_size: int | None, gather_across_devices: bool
    ) -> None:
        if queue_size and gather_across_devices:
            raise ValueError("The momentum queue is kept per process: use it without gather_across_devices.")
        self.queue = MomentumQueue(self.model, queue_size, queue_momentum) if queue_size else None
        self._set_mini_batch_size(mini_batch_size)

    def _forward(self, features: list[dict[str, Tensor]], labels: Tensor | None) -> Tensor:
        # The model writes its outputs into the dicts it is given: keep the positives' inputs for the queue.
        queue_features = dict(features[1]) if self.queue is not None else None
        loss = self._cached_or_direct(
            features, labels, lambda: self._loss_from(embed_columns(self.model, features), labels)
        )
        if self.queue is not None and torch.is_grad_enabled():  # training steps only
            self.queue.update(self.model, queue_features, self.mini_batch_size, self.mini_batch_num_tokens)
        return loss

    def _set_mini_batch_size(self, mini_batch_size: int | None) -> None:
        if mini_batch_size is not None and (
            isinstance(mini_batch_size, bool) or not isinstance(mini_batch_size, int) or mini_batch_size < 1
        ):
            raise ValueError(f"mini_batch_size must be a positive int or None, got {mini_batch_size!r}.")
        self.mini_batch_size = mini_batch_size
        self.uses_gradient_cache = mini_batch_size is not None

    def calculate_loss(self, reps: list[list[Tensor]], labels: Tensor | None = None, *, with_backward: bool = False):
        embeddings = [torch.cat(column) for column in reps]
        loss = self._loss_from(embeddings, labels)
        if with_backward:
            # The embeddings' gradients become the cache. The loss's own parameters (a learnable tau, TempNet)
            # must instead receive theirs in the outer backward pass, scaled by whatever it hands down
            # (gradient accumulation, the fp16 scaler): keep them until then.
            leaves = [rep for column in reps for rep in column]
            model_parameters = {id(p) for p in self.model.parameters()}
            own = [p for p in self.parameters() if p.requires_grad and id(p) not in model_parameters]
            grads = torch.autograd.grad(loss, leaves + own, allow_unused=True)
            for rep, grad in zip(leaves, grads[: len(leaves)], strict=True):
                rep.grad = grad
            self._pending_parameter_grads = list(zip(own, grads[len(leaves) :], strict=True))
            loss = loss.detach()
        return loss

    def _cached_or_direct(
        self, features: list[dict[str, Tensor]], labels: Tensor | None, direct: Callable[[], Tensor]
    ) -> Tensor:
        if self.mini_batch_size is None:
            return direct()
        self._pending_parameter_grads = []
        loss = self.forward_cached(features, labels)
        pending, self._pending_parameter_grads = self._pending_parameter_grads, []
        if pending and loss.requires_grad:

            def apply_parameter_grads(grad_output: Tensor) -> None:
                for parameter, grad in pending:
                    if grad is not None:
                        scaled = grad * grad_output
                        parameter.grad = scaled if parameter.grad is None else parameter.grad + scaled

            loss.register_hook(apply_parameter_grads)
        return loss

    _loss_from: Callable[[list[Tensor], Tensor | None], Tensor]
