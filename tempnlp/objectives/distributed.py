"""Gathering across processes for the objectives.

With ``gather_across_devices=True`` every rank gathers the embeddings (with gradient) and the dataset indices of
all ranks and evaluates the objective on the whole global batch. The loss is then the global loss on every
rank, and per-sample state is updated for every global row, identically on every rank. Each rank's gathered
copy sends the gradient of that global loss back to its own rows (the gather's backward sums over ranks, a
factor of world size, which DistributedDataParallel's gradient averaging divides out again), so the parameter
gradients equal those of one process on the global batch. The loss itself is computed world-size times; it is
small next to the encoder.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sums the incoming gradients over ranks and returns this rank's rows.

    Written out (all_gather forward, all_reduce backward) because it then runs on every backend, gloo included,
    and needs no deprecated or private collective.
    """

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:
        ctx.rank, ctx.rows = dist.get_rank(), tensor.size(0)
        return gather(tensor)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_with_grad(tensor: Tensor) -> Tensor:
    return _GatherWithGrad.apply(tensor)


def gather(tensor: Tensor) -> Tensor:
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def gather_batch(
    anchors: Tensor, columns: list[Tensor], indices: Tensor | None
) -> tuple[Tensor, list[Tensor], Tensor | None]:
    """The global batch: every rank's rows, in rank order, with gradient to the local ones."""
    if not distributed():
        return anchors, columns, indices
    return (
        gather_with_grad(anchors),
        [gather_with_grad(column) for column in columns],
        None if indices is None else gather(indices.to(anchors.device)),
    )


def global_batch(
    objective: torch.nn.Module, anchors: Tensor, columns: list[Tensor], indices: Tensor | None, per_sample: bool = False
) -> tuple[Tensor, list[Tensor], Tensor | None]:
    """The batch an objective evaluates: the global one with ``gather_across_devices``, else this rank's own.

    Without gathering under several processes, anything the objective learns itself would part ways across ranks:
    DistributedDataParallel averages the encoder's gradients, not those of a learnable tau or TempNet, and each
    rank would update per-sample state from its own rows only. That is refused here, at the first step.
    """
    if getattr(objective, "gather_across_devices", False):
        return gather_batch(anchors, columns, indices)
    if distributed() and torch.is_grad_enabled():
        learned = [name for name, parameter in objective.named_parameters() if parameter.requires_grad]
        learned += [name for name, module in objective.named_modules() if getattr(module, "learns_state", False)]
        if learned or per_sample:
            what = "per-sample state" if per_sample else f"its own parameters ({', '.join(learned)})"
            raise ValueError(
                f"{type(objective).__name__} learns {what}, which would diverge across the "
                f"{dist.get_world_size()} processes when each sees only its own batch: pass "
                "gather_across_devices=True so every rank computes the loss of the global batch."
            )
    return anchors, columns, indices
