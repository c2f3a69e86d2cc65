"""Per-sample state of stateful losses: the dataset-index column, and saving and restoring the state with the
trainer's checkpoints.

sentence-transformers' collator tokenises every text column and hands exactly one other column to the loss
untokenised: ``label``. tempnlp's stateful losses therefore read the dataset index of each row from a ``label``
column, which :func:`add_index_column` adds. :func:`save_loss_state` and :func:`load_loss_state` write and read a
loss's buffers and parameters (``loss_state.pt``); :class:`LossStateCallback` (added by :func:`track_loss_state`)
does so with every checkpoint of a trainer. ``tempnlp.state`` re-exports the index column and the two functions.
"""

from __future__ import annotations

import io
import json
import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.distributed as dist
from datasets import Dataset
from torch import nn
from transformers import Trainer, TrainerCallback
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from tempnlp._io import write_bytes_atomic
from tempnlp._processes import several_processes
from tempnlp.temperature.individual import warn_single_epoch

INDEX_COLUMN = "label"
STATE_FILE = "loss_state.pt"


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
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as error:
        raise ValueError(
            f"{path} is empty or cut short ({error}), so the loss state cannot be restored. Resume from an earlier "
            "checkpoint (move this one away), or restart the run."
        ) from error
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [key for key in missing if not key.startswith("model.")]
    if missing or unexpected:
        raise ValueError(f"{path} does not fit this loss: missing {missing}, unexpected {unexpected}.")


def has_loss_state(loss) -> bool:
    """Per-sample buffers, a momentum queue, or trainable parameters of its own (a learnable tau, TempNet):
    anything a resumed run needs back that sentence-transformers does not save with the model. tempnlp's losses
    say so themselves; for any other loss, its own trainable parameters count."""
    declared = getattr(loss, "has_state", None)
    if isinstance(declared, bool):
        return declared
    model = getattr(loss, "model", None)
    model_parameters = {id(p) for p in model.parameters()} if model is not None else set()
    return any(p.requires_grad and id(p) not in model_parameters for p in loss.parameters())


def _own_state(loss: nn.Module) -> dict[str, torch.Tensor]:
    """The loss's buffers and parameters, the encoder's excluded: tensors that share storage with the loss."""
    return {key: value for key, value in loss.state_dict().items() if not key.startswith("model.")}


def broadcast_loss_state(losses: Mapping[str, nn.Module]) -> None:
    """Copy rank 0's loss parameters and state to every rank, in place.

    With gathering, every rank computes the same global loss and so the same updates; they start equal only if
    the state does, which a rank-dependent seed, a per-rank initialisation or a checkpoint read differently would
    break silently.
    """
    for loss in losses.values():
        for tensor in _own_state(loss).values():
            dist.broadcast(tensor, src=0)


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor as integers of its width, so that equality is bitwise (a NaN equals itself, -0.0 differs)."""
    if tensor.is_floating_point():
        return tensor.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[tensor.element_size()])
    return tensor


def check_loss_state_agrees(losses: Mapping[str, nn.Module], step: int) -> None:
    """Every rank's loss parameters and state equal rank 0's, bit for bit, or a ValueError on every rank naming
    the tensors and ranks that differ (a collective: every rank calls it at the same point)."""
    names, differs = [], []
    for name, loss in losses.items():
        for key, tensor in _own_state(loss).items():
            reference = tensor.clone()
            dist.broadcast(reference, src=0)
            names.append(f"{name}.{key}" if name else key)
            differs.append((_bits(reference) != _bits(tensor)).any())
    if not names:
        return
    local = torch.stack(differs).to(torch.uint8)
    every_rank = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(every_rank, local)
    found = [
        f"{names[position]} on rank {rank}"
        for rank, flags in enumerate(torch.stack(every_rank).tolist())
        for position, flag in enumerate(flags)
        if flag
    ]
    if found:
        raise ValueError(
            f"The loss state differs across processes at step {step}: {', '.join(found)} differs from rank 0. "
            "Every rank computes the global batch's loss and should hold the same state; one of them computed "
            "different numbers (nondeterministic kernels, a different loss configuration, or a rank that skipped "
            "a step). Training stops before a checkpoint mixes them: resume from the last checkpoint, and if it "
            "happens again, run with torch.use_deterministic_algorithms(True)."
        )


def _stateful(loss) -> dict[str, object]:
    losses = loss if isinstance(loss, Mapping) else {"": loss}
    return {name: fn for name, fn in losses.items() if has_loss_state(fn)}


def _check_checkpoint_is_this_run(folder: str, state) -> None:
    """The trainer does not tell callbacks which checkpoint it resumed from, so the loss state is read from
    ``output_dir/checkpoint-<step>``. A resume from a checkpoint elsewhere, with a different run's checkpoint of the
    same step in output_dir, would restore that run's loss state; its training log would differ from the one the
    trainer restored, so compare them."""
    trainer_state = os.path.join(folder, TRAINER_STATE_NAME)
    if not os.path.isfile(trainer_state):
        return
    with open(trainer_state, encoding="utf-8") as file:
        saved = json.load(file)
    if saved.get("global_step") != state.global_step or saved.get("log_history") != state.log_history:
        raise ValueError(
            f"Resuming at step {state.global_step}, but {folder} belongs to a different run (its training log "
            "differs from the checkpoint the trainer resumed from), so its loss state would not fit. If you resumed "
            "from a checkpoint outside output_dir, pass the same folder to "
            "track_loss_state(trainer, resume_from_checkpoint=...)."
        )


class LossStateCallback(TrainerCallback):
    """Writes ``loss_state.pt`` (one per stateful loss) into every checkpoint and reads it back on resume.

    A resumed run starts its ``train()`` with ``state.global_step`` at the checkpoint's step, which names the
    checkpoint folder to read from (``output_dir/checkpoint-<step>``, where ``resume_from_checkpoint=True`` finds
    it); a run resumed from a checkpoint elsewhere passes that folder as ``resume_from_checkpoint`` here too. The
    state is restored before the first step, so the run continues exactly.
    """

    def __init__(self, loss, resume_from_checkpoint: str | os.PathLike | None = None) -> None:
        self.losses = _stateful(loss)
        self.resume_from_checkpoint = resume_from_checkpoint
        self._saved_step: int | None = None

    def _folder(self, args, state, name: str, resuming: bool = False) -> str:
        if resuming and self.resume_from_checkpoint is not None:
            folder = os.fspath(self.resume_from_checkpoint)
        else:
            folder = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        return os.path.join(folder, name) if name else folder

    def on_train_begin(self, args, state, control, **kwargs) -> None:
        self._saved_step = None
        if args.world_size > 1:
            for loss in self.losses.values():
                objective = getattr(loss, "objective", None)
                if getattr(loss, "needs_global_batch", False) and not getattr(
                    objective, "gather_across_devices", False
                ):
                    what = "keeps per-sample state" if loss.needs_dataset_indices else "learns parameters of its own"
                    raise ValueError(
                        f"{type(loss).__name__} {what}, which would diverge across the {args.world_size} processes: "
                        "pass gather_across_devices=True so every rank computes the loss of the global batch."
                    )
        if state.global_step > 0:  # resuming from a checkpoint
            if self.resume_from_checkpoint is None:
                _check_checkpoint_is_this_run(self._folder(args, state, ""), state)
            for name, loss in self.losses.items():
                folder = self._folder(args, state, f"loss_{name}" if name else "", resuming=True)
                if self.resume_from_checkpoint is None and not os.path.isdir(folder):
                    raise FileNotFoundError(
                        f"Resuming at step {state.global_step}, but {folder} does not exist, so the loss state "
                        "cannot be restored. If you resumed from a checkpoint outside output_dir, pass the same "
                        "folder to track_loss_state(trainer, resume_from_checkpoint=...)."
                    )
                load_loss_state(loss, folder)
        epochs = state.num_train_epochs or args.num_train_epochs  # the trainer's count, max_steps included
        for loss in self.losses.values():
            if getattr(loss, "acts_on_revisit", False):
                warn_single_epoch(float(epochs), type(loss).__name__)
        if several_processes():  # after a resume's read, so that every rank starts from what rank 0 holds
            broadcast_loss_state(self._gathering())

    def _gathering(self) -> dict[str, object]:
        """The losses every rank computes on the global batch, whose state must agree across ranks. A momentum
        queue is per process (it refuses gathering), so its contents differ by rank by design."""
        return {
            name: loss
            for name, loss in self.losses.items()
            if getattr(getattr(loss, "objective", None), "gather_across_devices", False)
        }

    def _save(self, args, state) -> None:
        if self._saved_step == state.global_step:
            return
        if several_processes():  # every rank takes part; a rank that drifted stops the run before the save
            check_loss_state_agrees(self._gathering(), state.global_step)
        self._saved_step = state.global_step
        if not state.is_world_process_zero:
            return
        for name, loss in self.losses.items():
            save_loss_state(loss, self._folder(args, state, f"loss_{name}" if name else ""))

    # The trainer rotates older checkpoints out before it calls on_save: a run killed in between would keep only a
    # checkpoint without its loss state. So the state is written when a save is decided (at the end of the step or
    # epoch, before the trainer writes anything), and on_save only covers saves decided later (save_strategy "best").
    def on_step_end(self, args, state, control, **kwargs) -> None:
        if control.should_save:
            self._save(args, state)

    def on_epoch_end(self, args, state, control, **kwargs) -> None:
        if control.should_save:
            self._save(args, state)

    def on_save(self, args, state, control, **kwargs) -> None:
        self._save(args, state)


def track_loss_state(trainer: Trainer, resume_from_checkpoint: str | os.PathLike | None = None) -> LossStateCallback:
    """Checkpoint the per-sample state of ``trainer.loss`` and log its temperatures; returns the callback.

    ``resume_from_checkpoint``: the checkpoint folder a later ``trainer.train(resume_from_checkpoint=...)`` reads,
    when it is not ``output_dir/checkpoint-<step>``.
    """
    from tempnlp.train.callbacks import ProgressCallback, log_temperature

    callback = LossStateCallback(trainer.loss, resume_from_checkpoint)
    if not callback.losses:
        raise TypeError(
            f"trainer.loss ({type(trainer.loss).__name__}) keeps no state of its own to checkpoint (no per-sample "
            "buffers, momentum queue or trainable parameters); log_temperature(trainer) logs its temperature."
        )
    trainer.add_callback(callback)
    progress = ProgressCallback(trainer.loss)
    if progress.policies:  # a schedule follows the trainer's step, restored with the checkpoint on resume
        trainer.add_callback(progress)
    log_temperature(trainer)
    return callback
