"""Argument validation shared by policies, objectives and losses.

Every check raises an error that names the argument, what was given and how to fix it.
"""

from __future__ import annotations

import math
from numbers import Real

import torch
from torch import Tensor


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


def check_finite(embeddings: list[Tensor], names: list[str]) -> None:
    """Raise when an embedding holds NaN or inf.

    This is the loss's only host synchronisation (one fused reduction, one boolean read); losses expose
    ``check_finite=False`` to skip it when throughput on an accelerator matters more than the early error.
    """
    flags = [emb.isfinite().all() for emb in embeddings]
    if bool(torch.stack(flags).all()):
        return
    bad = [name for name, flag in zip(names, flags, strict=True) if not bool(flag)]
    raise ValueError(
        f"Non-finite (NaN or inf) values in the embeddings of {', '.join(bad)}. The encoder diverged or "
        "overflowed: lower the learning rate, use bf16 instead of fp16, or enable gradient clipping "
        "(max_grad_norm)."
    )


def _hint(hint: str) -> str:
    return f" {hint}" if hint else ""
