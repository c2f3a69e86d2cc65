"""What the scheduled temperatures share: knowing where training is.

A schedule's temperature is a function of the training position. The position is a buffer (saved with the
loss state, so a resumed run continues the schedule exactly) that one general mechanism sets before every
optimizer step: :func:`tempnlp.train.follow_progress` (a trainer callback, which ``tempnlp train`` and
:func:`tempnlp.train.track_loss_state` install) or, at tensor level, :meth:`ScheduledTemperature.set_progress`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from tempnlp._checks import positive_float
from tempnlp.temperature.base import TemperaturePolicy


class TrainingPosition:
    """For a module that follows training: the optimizer step and the steps of one epoch, as buffers saved with
    the loss state, and their host-side copy, so that reading the position costs no device read (one, after a
    restore). Call :meth:`_register_position` in ``__init__``; until then the position lives on the host only."""

    _position: tuple[int, int | None] | None = None
    _restored = False

    def _register_position(self) -> None:
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("steps_per_epoch", torch.zeros((), dtype=torch.long))
        self._position: tuple[int, int | None] | None = None
        self._restored = False

    def set_progress(self, step: int, steps_per_epoch: int | None = None) -> None:
        """The optimizer steps taken so far (0 before the first), and the steps of one epoch; None keeps the length
        already known."""
        known = self._position[1] if self._position is not None else None
        length = int(steps_per_epoch) if steps_per_epoch is not None else known
        if "step" in self._buffers:
            self.step.fill_(int(step))
            if length is not None:
                self.steps_per_epoch.fill_(length)
        self._position = (int(step), length)

    def training_position(self) -> tuple[int, int | None] | None:
        """``(step, steps per epoch or None)``, or None when nobody has said where training is."""
        if self._position is None and self._restored:
            self._position = (int(self.step), int(self.steps_per_epoch) or None)  # read once after a restore
        return self._position

    def _forget_host_position(self) -> None:
        """After ``load_state_dict``: the restored buffers hold the position; the host copy is read from them."""
        self._position, self._restored = None, True


class ScheduledTemperature(TrainingPosition, TemperaturePolicy):
    """Base of the schedules: subclasses implement :meth:`value_at` (the temperature at a position)."""

    needs_progress: ClassVar[bool] = True

    def __init__(self, period_steps: int | None = None, period_epochs: float | None = None, *, what: str) -> None:
        super().__init__()
        if (period_steps is None) == (period_epochs is None):
            raise ValueError(f"Give the {what} in optimizer steps ({what}_steps) or in epochs ({what}_epochs), one.")
        if period_steps is not None and (
            isinstance(period_steps, bool) or not isinstance(period_steps, int) or period_steps < 1
        ):
            raise ValueError(f"{what}_steps must be a positive int, got {period_steps!r}.")
        self.period_steps = period_steps
        self.period_epochs = None if period_epochs is None else positive_float(f"{what}_epochs", period_epochs)
        self._register_position()

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._forget_host_position()

    def length_in_steps(self, steps_per_epoch: int) -> float:
        return float(self.period_steps) if self.period_steps is not None else self.period_epochs * steps_per_epoch

    def compute(self, similarities: Tensor, positive_similarities: Tensor, **context: Any) -> Tensor:
        known = self.training_position()
        if known is None and torch.is_grad_enabled():
            raise ValueError(
                f"{type(self).__name__} follows training, but nobody told it where training is. With a "
                "SentenceTransformerTrainer call tempnlp.train.follow_progress(trainer) (track_loss_state does it "
                "too); in your own loop call policy.set_progress(step, steps_per_epoch) before each step."
            )
        if known is None:
            length = 1.0  # an evaluation before training: at step 0 every schedule length gives the start value
        elif self.period_epochs is not None and not known[1]:
            raise ValueError(f"{type(self).__name__} counts in epochs but knows no epoch length: pass it to "
                             "set_progress(step, steps_per_epoch).")  # fmt: skip
        else:
            length = self.length_in_steps(known[1] or 0)
        position = self.step.to(similarities.dtype)  # the device copy of the step: no host-to-device transfer
        return self.value_at(position, length).to(similarities.dtype)

    def value_at(self, position: Tensor, length: float) -> Tensor:
        """The temperature after ``position`` optimizer steps, for a schedule of ``length`` steps."""
        raise NotImplementedError
