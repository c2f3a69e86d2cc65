"""Trainer integration: put the temperature of tempnlp losses into the trainer's logs."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torch import nn
from transformers import Trainer, TrainerCallback


class TemperatureLoggingCallback(TrainerCallback):
    """Adds ``tau_mean``, ``tau_min`` and ``tau_max`` of the last training step to every training log line.

    The values land in ``trainer.state.log_history`` and in the logs the reporting integrations receive
    (TensorBoard, CSV, ...) provided this callback runs before them, which :func:`log_temperature` arranges.
    With several losses (a dict of losses) the keys are prefixed by the dataset name: ``nli_tau_mean``.

    The statistics are read from the device only here, at logging time, never in the loss's forward pass.
    """

    def __init__(self, loss: Any) -> None:
        losses = loss if isinstance(loss, Mapping) else {"": loss}
        self.losses = {name: fn for name, fn in losses.items() if hasattr(fn, "temperature_stats")}

    def on_log(self, args, state, control, logs: dict[str, float] | None = None, **kwargs) -> None:
        if logs is None or "loss" not in logs:  # evaluation and final summaries carry no training step
            return
        stats: dict[str, float] = {}
        for name, loss in self.losses.items():
            prefix = f"{name}_" if name else ""
            stats.update({f"{prefix}{key}": round(value, 6) for key, value in loss.temperature_stats().items()})
        logs.update(stats)
        # The trainer appended a copy of ``logs`` to the history just before calling back.
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(stats)


def log_temperature(trainer: Trainer) -> TemperatureLoggingCallback:
    """Log the temperature of ``trainer.loss`` (a tempnlp loss or a dict of them) with every training log.

    The callback is placed first, so reporting integrations registered by ``report_to`` see the values too.
    """
    callback = TemperatureLoggingCallback(trainer.loss)
    if not callback.losses:
        raise TypeError(
            f"trainer.loss ({type(trainer.loss).__name__}) exposes no temperature_stats(); log_temperature works "
            "with tempnlp losses such as tempnlp.losses.InfoNCELoss."
        )
    trainer.callback_handler.callbacks.insert(0, callback)
    return callback


class ProgressCallback(TrainerCallback):
    """Tells every policy that follows training (a temperature schedule) the optimizer step before it is taken.

    The step is ``state.global_step``, which a resumed run restores, so a schedule continues exactly; the epoch
    length (for schedules counted in epochs) is the trainer's number of optimizer steps per epoch.
    """

    def __init__(self, loss: Any) -> None:
        losses = loss if isinstance(loss, Mapping) else {"": loss}
        self.policies = [
            module
            for fn in losses.values()
            if isinstance(fn, nn.Module)
            for module in fn.modules()
            if getattr(module, "needs_progress", False) and hasattr(module, "set_progress")
        ]
        self.steps_per_epoch: int | None = None

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs) -> None:
        from transformers.trainer_utils import has_length

        if train_dataloader is not None and has_length(train_dataloader):
            # as the trainer counts them: a last, partial accumulation still makes an optimizer step
            self.steps_per_epoch = max(math.ceil(len(train_dataloader) / max(args.gradient_accumulation_steps, 1)), 1)
        else:  # a stream of unknown length: schedules counted in epochs refuse it at their first step
            self.steps_per_epoch = None
        self._tell(state.global_step)

    def on_step_begin(self, args, state, control, **kwargs) -> None:
        self._tell(state.global_step)

    def _tell(self, step: int) -> None:
        for policy in self.policies:
            policy.set_progress(step, self.steps_per_epoch)


def follow_progress(trainer: Trainer) -> ProgressCallback:
    """Keep the temperature schedules of ``trainer.loss`` at the trainer's step (``track_loss_state`` calls it)."""
    callback = ProgressCallback(trainer.loss)
    if not callback.policies:
        raise TypeError(f"trainer.loss ({type(trainer.loss).__name__}) has no temperature that follows training.")
    trainer.add_callback(callback)
    return callback
