"""A momentum queue of extra negatives (MoCo, He et al. 2020; ESimCSE, Wu et al. 2022).

An exponential-moving-average copy of the encoder embeds each training batch's positives into a first-in-first-out
queue of ``size`` embeddings; the queue's contents serve as extra negatives, shared by every anchor, in the
following steps. The queue works with every temperature policy: the policy sees the queue's similarities as
ordinary candidate entries.

The EMA copy keeps float32 weights even when the encoder's are bf16/fp16 (a 0.995 average moves a weight by 0.5% of
the difference, below bf16's resolution), is updated by one fused ``foreach`` call, and embeds under the autocast
the encoder ran under in the same step: mixed precision wraps the training model's forward, not the loss that
calls the EMA copy.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from sentence_transformers.base.losses.gradcache import _create_minibatch, _minibatch_ranges
from sentence_transformers.sentence_transformer.model import SentenceTransformer
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from tempnlp._checks import positive_float

_optimizer_steps = 0  # optimizer steps taken in this process, counted by a hook every torch optimizer calls
_counting = False


def _count_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    global _optimizer_steps
    _optimizer_steps += 1


def _count_optimizer_steps() -> None:
    global _counting
    if not _counting:
        register_optimizer_step_post_hook(_count_step)
        _counting = True


class _AutocastRecorder:
    """A forward pre-hook that remembers the autocast the encoder runs under (None: autocast off)."""

    def __init__(self) -> None:
        self.dtype: torch.dtype | None = None

    def __call__(self, module: nn.Module, args: Any) -> None:
        parameter = next(module.parameters(), None)
        device = parameter.device.type if parameter is not None else "cpu"
        self.dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None


class MomentumQueue(nn.Module):
    def __init__(self, model: SentenceTransformer, size: int = 1024, momentum: float = 0.995) -> None:
        super().__init__()
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"queue size must be a positive int, got {size!r}.")
        momentum = positive_float("momentum", momentum) if momentum else 0.0
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}: 0.995 is usual (ESimCSE, MoCo).")
        self.size, self.momentum = size, momentum
        # Named ema_encoder, not model: the trainer swaps any child called "model" for the wrapped training model.
        self.ema_encoder = copy.deepcopy(model)
        self.ema_encoder.requires_grad_(False)
        self.ema_encoder.eval()
        for module in self.ema_encoder.modules():  # eval mode would switch off a train-only head (SimCSE's MLP),
            if getattr(module, "train_only", False):  # putting the queue in another space than the anchors
                module.train_only = False
        for parameter in self.ema_encoder.parameters():
            if parameter.is_floating_point() and parameter.element_size() < 4:
                parameter.data = parameter.data.float()
        # on the encoder's first module, whose forward runs inside any autocast wrapped around the model's forward
        self._autocast = _AutocastRecorder()
        next(iter(model.children()), model).register_forward_pre_hook(self._autocast)
        dim = model.get_embedding_dimension()
        self.register_buffer("queue", torch.zeros(size, dim, dtype=torch.float32))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self._filled_host = 0  # host-side mirror of `filled`, so negatives() never reads the device
        # the optimizer steps and the encoder weights' version counters at the last average: either moves when
        # the weights change (a fused optimizer leaves the counters as they are; a hand-written update, the step)
        self._averaged_at: tuple[int, tuple[int, ...]] | None = None
        _count_optimizer_steps()

    def negatives(self) -> Tensor | None:
        """The queued embeddings (unit-normalised, detached), or None while the queue is empty."""
        if self._filled_host == 0:
            return None
        return self.queue[: self._filled_host]

    @torch.no_grad()
    def update(
        self,
        model: nn.Module,
        features: dict[str, Any],
        mini_batch_size: int | None = None,
        mini_batch_num_tokens: int | None = None,
    ) -> None:
        """Move the EMA encoder towards ``model``, embed ``features`` with it and enqueue the embeddings.

        The average moves once per optimizer step, as MoCo's: with gradient accumulation, the micro-batches after
        the first find no optimizer step and no weight changed since the last average, and only enqueue.

        With ``mini_batch_size`` (GradCache; and ``mini_batch_num_tokens`` if the loss sets it), the EMA encoder
        embeds the mini-batches the loss itself embeds, so the queue adds no more activation memory than one of
        them.
        """
        source = model.module if hasattr(model, "module") else model  # DDP-wrapped models
        position = (_optimizer_steps, tuple(p._version for p in source.parameters()))  # host-side: no device read
        if position != self._averaged_at:
            averaged = list(self.ema_encoder.parameters())
            current = [p.detach().to(ema.dtype) for ema, p in zip(averaged, source.parameters(), strict=True)]
            torch._foreach_lerp_(averaged, current, 1.0 - self.momentum)  # ema += (1 - m) (current - ema)
            self._averaged_at = position
        if mini_batch_size is None:
            parts = [features]
        else:  # ST's own slicing, as its GradCache uses: trailing padding trimmed, flattened inputs handled
            parts = [
                _create_minibatch(features, begin, end)
                for begin, end in _minibatch_ranges(features, mini_batch_size, mini_batch_num_tokens)
            ]
        dtype = self._autocast.dtype
        with torch.autocast(self.queue.device.type, dtype=dtype, enabled=dtype is not None):
            embedded = torch.cat([self.ema_encoder(part)["sentence_embedding"] for part in parts])
        embeddings = F.normalize(embedded.float(), dim=1)
        count = min(embeddings.size(0), self.size)
        positions = (self.pointer + torch.arange(count, device=self.queue.device)) % self.size
        self.queue[positions] = embeddings[-count:].to(self.queue.dtype)
        self.pointer.copy_((self.pointer + count) % self.size)
        self._filled_host = min(self._filled_host + count, self.size)
        self.filled.fill_(self._filled_host)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + "filled" in state_dict:
            self._filled_host = int(state_dict[prefix + "filled"])

    def extra_repr(self) -> str:
        return f"size={self.size}, momentum={self.momentum}"
