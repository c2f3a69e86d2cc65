"""Gathering across processes for the objectives.

With ``gather_across_devices=True`` every rank gathers the embeddings (with gradient) and the dataset indices of
all ranks and evaluates the objective on the whole global batch. The loss is then the global loss on every
rank, and per-sample state is updated for every global row, identically on every rank. Each rank's gathered
copy sends the gradient of that global loss back to its own rows (the gather's backward sums over ranks, a
factor of world size, which DistributedDataParallel's gradient averaging divides out again), so the parameter
gradients equal those of one process on the global batch. The loss itself is computed world-size times; it is
small next to the encoder.

Ranks may hold different numbers of rows (a short last batch, a loop without ``drop_last``): the gather exchanges
the row counts first, one host read of a ``world_size``-long tensor per step, and pads to the longest. Ranks may
also hold the same dataset index in one step (a sampler that refills its last batches with used samples): the
loss counts each row, and per-sample state is written once per index, from the row of the lowest rank
(:func:`tempnlp._rows.write_rows`), so every rank stores the same value whatever order the writes land in.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from tempnlp._processes import several_processes

distributed = several_processes  # a module attribute, so tests can stand in for a multi-process job


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sums the incoming gradients over ranks and returns this rank's rows.

    Written out (all_gather forward, all_reduce backward) because it then runs on every backend, gloo included,
    and needs no deprecated or private collective.
    """

    @staticmethod
    def forward(ctx, tensor: Tensor, sizes: list[int]) -> Tensor:
        rank = dist.get_rank()
        ctx.start, ctx.stop = sum(sizes[:rank]), sum(sizes[: rank + 1])
        return gather(tensor, sizes)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.start : ctx.stop], None


def gather_with_grad(tensor: Tensor, sizes: list[int] | None = None) -> Tensor:
    return _GatherWithGrad.apply(tensor, row_counts(tensor) if sizes is None else sizes)


def row_counts(tensor: Tensor) -> list[int]:
    """Every rank's number of rows, in rank order (a collective, and a host read of ``world_size`` numbers)."""
    local = torch.tensor([tensor.size(0)], dtype=torch.long, device=tensor.device)
    counts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, local)
    return torch.cat(counts).tolist()


def gather(tensor: Tensor, sizes: list[int] | None = None) -> Tensor:
    """Every rank's rows in rank order; ranks may hold different numbers of rows (padded for the collective)."""
    sizes = row_counts(tensor) if sizes is None else sizes
    longest = max(sizes)
    padded = tensor.contiguous()
    if padded.size(0) < longest:
        padded = torch.cat([padded, padded.new_zeros((longest - padded.size(0), *padded.shape[1:]))])
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([part[:rows] for part, rows in zip(parts, sizes, strict=True)], dim=0)


def gather_batch(
    anchors: Tensor, columns: list[Tensor], indices: Tensor | None
) -> tuple[Tensor, list[Tensor], Tensor | None]:
    """The global batch: every rank's rows, in rank order, with gradient to the local ones."""
    if not distributed():
        return anchors, columns, indices
    sizes = row_counts(anchors)
    return (
        gather_with_grad(anchors, sizes),
        [gather_with_grad(column, sizes) for column in columns],
        None if indices is None else gather(indices.to(anchors.device), sizes),
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
