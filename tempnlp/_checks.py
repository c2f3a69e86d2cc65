"""Argument validation shared by policies, objectives and losses.

Every check raises an error that names the argument, what was given and how to fix it.
"""

from __future__ import annotations

import math
from numbers import Real

import torch
import torch.distributed as dist
from torch import Tensor

from tempnlp._processes import several_processes


def positive_float(name: str, value: object, *, hint: str = "") -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} ({value!r}).{_hint(hint)}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}.{_hint(hint)}")
    return value


def finite_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} ({value!r}).")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}.")
    return value


def flag(name: str, value: object) -> bool:
    """A switch: True or False only (``bool("False")`` is True, so a string or number is refused, not read)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} ({value!r}).")
    return value


def moving_average_weight(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 < float(value) <= 1.0:
        raise ValueError(f"{name} is a moving-average weight in (0, 1], got {value!r}.")
    return float(value)


def ordered_bounds(low_name: str, low: float, high_name: str, high: float) -> None:
    if low > high:
        raise ValueError(f"{low_name} ({low}) must not exceed {high_name} ({high}); swap them or widen the range.")


def check_embeddings(name: str, embeddings: Tensor, *, batch_size: int | None, dim: int | None) -> None:
    """Shape checks only: they read tensor metadata and never synchronise with the device."""
    if not isinstance(embeddings, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(embeddings).__name__}.")
    if embeddings.dim() != 2:
        raise ValueError(f"{name} must be 2-D (batch_size, embedding_dim), got shape {tuple(embeddings.shape)}.")
    if batch_size is not None and embeddings.size(0) != batch_size:
        raise ValueError(
            f"{name} has {embeddings.size(0)} rows but the anchors have {batch_size}: every column of a batch "
            "must hold one entry per anchor (check the dataset for ragged columns or a wrong collate)."
        )
    if dim is not None and embeddings.size(1) != dim:
        raise ValueError(
            f"{name} has embedding dimension {embeddings.size(1)} but the anchors have {dim}: "
            "encode every column with the same model."
        )


def _hint(hint: str) -> str:
    return f" {hint}" if hint else ""


def check_index_tensor(indices: object, rows: int, owner: str) -> Tensor:
    """Shape and dtype of the dataset indices a per-sample policy or estimator reads (no device read)."""
    if indices is None:
        raise ValueError(
            f"{owner} needs the dataset index of every row. Add it with tempnlp.state.add_index_column(dataset) "
            "(sentence-transformers passes the 'label' column to the loss untokenised), or pass indices=... at "
            "tensor level."
        )
    if not isinstance(indices, Tensor):
        indices = torch.as_tensor(indices)
    if indices.dim() != 1 or indices.numel() != rows or indices.is_floating_point() or indices.dtype == torch.bool:
        raise ValueError(
            f"indices must be a 1-D integer tensor with one entry per row ({rows}), got {indices.dtype} of shape "
            f"{tuple(indices.shape)}."
        )
    return indices.long()


def check_finite_and_indices(
    embeddings: list[Tensor],
    names: list[str],
    indices: Tensor | None,
    num_samples: int | None,
    local_indices: Tensor | None = None,
) -> None:
    """Finite embeddings and, given indices, indices in ``[0, num_samples)`` and distinct: one host read.

    Under gathering, ``local_indices`` are this rank's: they must be distinct, while the same index on two ranks
    is allowed (its state is written once, see :mod:`tempnlp._rows`).

    This is the loss's one host synchronisation (one fused reduction, one boolean read per check; with gathering,
    the exchange of the ranks' row counts is another); losses expose ``check_finite=False`` to skip it when
    throughput on an accelerator matters more than the early error.
    """
    flags = [emb.isfinite().all() for emb in embeddings]
    if indices is not None:
        ordered = (indices if local_indices is None else local_indices).sort().values
        flags += [(indices >= 0).all() & (indices < (num_samples or 0)).all(), (ordered[1:] != ordered[:-1]).all()]
    flags = torch.stack(flags)
    if local_indices is not None and several_processes():
        # this rank's distinctness is its own: agree on the verdict first, so that every rank raises or none
        # does (a lone rank raising would leave the others waiting in the backward pass's collectives)
        agreed = flags.to(torch.int32)
        dist.all_reduce(agreed, op=dist.ReduceOp.MIN)
        flags = agreed.bool()
    values = flags.tolist()
    finite = values[: len(embeddings)]
    if not all(finite):
        bad = [name for name, flag in zip(names, finite, strict=True) if not flag]
        raise ValueError(
            f"Non-finite (NaN or inf) values in the embeddings of {', '.join(bad)}. The encoder diverged or "
            "overflowed: lower the learning rate, use bf16 instead of fp16, or enable gradient clipping "
            "(max_grad_norm)."
        )
    if indices is not None and not values[-2]:
        raise ValueError(
            f"Dataset indices must lie in [0, {num_samples}) (num_samples), got values from {int(indices.min())} "
            f"to {int(indices.max())}: set num_samples to the training set size."
        )
    if indices is not None and not values[-1]:
        raise ValueError(
            "Duplicate dataset indices in one batch: a sample's state would be updated twice. Each row must be a "
            "distinct training sample (use add_index_column on the dataset you train on)."
        )
