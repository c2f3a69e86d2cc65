"""Per-sample state addressed by dataset index: the index column, and saving the state with checkpoints.

sentence-transformers' collator tokenises every text column and hands exactly one other column to the loss
untokenised: ``label``. tempnlp's stateful losses therefore read the dataset index of each row from a ``label``
column, which :func:`add_index_column` adds.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from datasets import Dataset
from torch import nn

from tempnlp._io import write_bytes_atomic

INDEX_COLUMN = "label"
STATE_FILE = "loss_state.pt"

__all__ = ["INDEX_COLUMN", "STATE_FILE", "add_index_column", "load_loss_state", "save_loss_state"]


def add_index_column(dataset: Dataset) -> Dataset:
    """Add the row number as the ``label`` column that stateful losses read their dataset indices from."""
    if INDEX_COLUMN in dataset.column_names:
        raise ValueError(
            f"The dataset already has a {INDEX_COLUMN!r} column, which sentence-transformers passes to the loss: "
            f"stateful losses need it for the dataset index. Remove or rename it first "
            f"(dataset.remove_columns({INDEX_COLUMN!r}))."
        )
    return dataset.add_column(INDEX_COLUMN, list(range(len(dataset))))


def save_loss_state(module: nn.Module, folder: str | Path) -> Path:
    """Write the module's buffers and parameters to ``folder/loss_state.pt`` atomically."""
    buffer = io.BytesIO()
    state = {key: value for key, value in module.state_dict().items() if not key.startswith("model.")}
    torch.save(state, buffer)
    return write_bytes_atomic(Path(folder) / STATE_FILE, buffer.getvalue())


def load_loss_state(module: nn.Module, folder: str | Path) -> None:
    """Restore what :func:`save_loss_state` wrote (read with ``weights_only=True``)."""
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: this checkpoint was written without the loss state, so the per-sample "
            "state cannot be resumed exactly. Restart the run, or resume from a checkpoint tempnlp saved."
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [key for key in missing if not key.startswith("model.")]
    if missing or unexpected:
        raise ValueError(f"{path} does not fit this loss: missing {missing}, unexpected {unexpected}.")
