"""Writing per-sample state rows, once per dataset index.

With ``gather_across_devices``, two ranks can hold the same dataset index in one step. An indexed write with a
repeated index keeps one of the written values, and which one is up to the device. :func:`write_rows` makes every
copy of an index write the value of its first row (the lowest rank), so the stored state is the same on every
rank and in every run. Within one rank a batch of distinct samples is required and checked (``check_finite``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from tempnlp._processes import several_processes


def first_rows(indices: Tensor) -> Tensor:
    """For each row, the first row holding the same index (itself when the index is unique); no host sync."""
    same = indices[:, None] == indices[None, :]
    return same.to(torch.uint8).argmax(dim=1)  # argmax returns the first of equal maxima


def write_rows(buffer: Tensor, indices: Tensor, values: Tensor | bool) -> None:
    """``buffer[indices] = values``, with repeated indices (only possible across ranks) written once, by their
    first row."""
    if isinstance(values, Tensor) and several_processes():
        values = values[first_rows(indices)]
    buffer[indices] = values.to(buffer.dtype) if isinstance(values, Tensor) else values
