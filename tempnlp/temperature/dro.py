"""What the DRO-trained temperatures share: the KL radius rho, the clipped robust gradient, the rho check.

iSogCLR (Qiu et al. 2023) learns a temperature by distributionally robust optimisation over a KL ball of radius
``rho`` around the uniform weighting of a row's partition. The gradient of that objective with respect to the
row's temperature is :meth:`~tempnlp.temperature.base.RowStatistics.robust_gradient`; the policies here differ
only in what they move with it (one buffer entry per sample, or a network's weights).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from tempnlp._checks import moving_average_weight, ordered_bounds, positive_float
from tempnlp.temperature.base import RowStatistics, TemperaturePolicy


class RobustTemperature(TemperaturePolicy):
    """Base of the policies moved by the robust gradient ``G_i``; not used on its own."""

    granularity = "row"

    def __init__(self, tau_init: float, tau_min: float, tau_max: float, rho: float, grad_clip: float | None) -> None:
        super().__init__()
        self.tau_init = positive_float("tau_init", tau_init)
        self.tau_min = positive_float("tau_min", tau_min)
        self.tau_max = positive_float("tau_max", tau_max)
        ordered_bounds("tau_min", self.tau_min, "tau_max", self.tau_max)
        if not self.tau_min <= self.tau_init <= self.tau_max:
            raise ValueError(
                f"tau_init ({self.tau_init}) must lie in [tau_min, tau_max] = [{self.tau_min}, {self.tau_max}]."
            )
        self.rho = positive_float("rho", rho, hint="The authors use 0.3-0.4 for unimodal data.")
        self.grad_clip = None if grad_clip is None else positive_float("grad_clip", grad_clip)
        # The largest batch seen, to tell a trailing short batch from a misconfigured rho: read on the host, kept in
        # a buffer too so that a resumed run (which may start on the short batch) knows it.
        self._largest_batch = 0
        self.register_buffer("largest_batch", torch.zeros((), dtype=torch.long))
        self._directions = 1
        self._pending: Tensor | None = None  # the first direction's gradient, waiting for the second

    def attach(self, directions: int) -> None:
        self._directions = directions

    def set_step_size(self, eta: float, beta: float) -> None:
        """For the policies that take iSogCLR's step themselves (see :meth:`moved`)."""
        self.eta = positive_float("eta", eta)
        self.beta = moving_average_weight("beta", beta)

    def get_config_dict(self) -> dict[str, Any]:
        """The DRO arguments, in the constructors' order; eta and beta for the policies that take the step."""
        config: dict[str, Any] = {"tau_init": self.tau_init, "tau_min": self.tau_min, "tau_max": self.tau_max}
        config["rho"] = self.rho
        if hasattr(self, "eta"):
            config.update(eta=self.eta, beta=self.beta)
        config["grad_clip"] = self.grad_clip
        return config

    def moved(self, tau: Tensor, u: Tensor, gradient: Tensor) -> tuple[Tensor, Tensor]:
        """iSogCLR's step: ``u = (1 - beta) u + beta G``, ``tau = clip(tau - eta u, tau_min, tau_max)``."""
        u = (1.0 - self.beta) * u + self.beta * gradient
        return (tau - self.eta * u).clamp(self.tau_min, self.tau_max), u

    def once_for_both_directions(self, gradient: Tensor, direction: int) -> Tensor | None:
        """For a temperature both directions share: None after the first direction (its gradient waits, so that
        the second reads the temperature the first used), the mean of the two after the second."""
        if self._directions < 2:
            return gradient
        if direction == 0:
            self._pending = gradient
            return None
        gradient = gradient if self._pending is None else 0.5 * (self._pending + gradient)
        self._pending = None
        return gradient

    def observe(self, row_losses: Tensor, statistics: RowStatistics) -> Tensor:
        """Row losses whose gradient is that of the robust objective ``sum_i tau_i log s_i`` which moves the
        temperature, so that encoder and temperature descend one objective as in the papers; then the policy's own
        :meth:`update`. SogCLR's row losses have that form. InfoNCE's and DCL's, ``log s_i`` at tau_i, would weight
        row i's gradient by 1 / tau_i: they are weighted by ``tau_i / tau_init`` (constants), the robust objective
        divided by one number for every row, direction and step, so that at ``tau_init`` the loss is the
        objective's own."""
        if not statistics.robust_form:
            row_losses = row_losses * (statistics.tau / self.tau_init).to(row_losses.dtype)
        return self.update(row_losses, statistics)

    def update(self, row_losses: Tensor, statistics: RowStatistics) -> Tensor:
        """Move the temperature from the statistics (in training) and return the row losses to average."""
        raise NotImplementedError

    def check_partition_size(self, size: int, what: str = "negatives") -> None:
        """A tau step needs rho below log(partition size): a KL ball that wide contains every weighting."""
        if self.rho >= math.log(max(size, 1)):
            raise ValueError(
                f"rho ({self.rho}) must be below log(number of {what}) = log({size}) = {math.log(max(size, 1)):.3f}: "
                "the KL ball would contain every weighting. Lower rho or raise the batch size."
            )

    def steps(self, statistics: RowStatistics) -> bool:
        """Whether this call moves the temperature: in training only, and not on a short trailing batch whose
        partition is too small for rho (a full batch that small is an error)."""
        if not torch.is_grad_enabled():
            return False
        batch = statistics.batch_size
        steps = True
        if self.rho >= math.log(max(statistics.candidates, 1)):
            if batch >= self._largest_batch:
                what = "candidates, the positive included" if statistics.positive_in_partition else "negatives"
                self.check_partition_size(statistics.candidates, what)
            steps = False  # the epoch's remainder: train on it, leave its temperatures as they are
            self._pending = None
        if batch > self._largest_batch:
            self._largest_batch = batch
            self.largest_batch.fill_(batch)  # a device write, no read
        return steps

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        if prefix + "largest_batch" in missing_keys:  # a loss state written before it was kept: resumes as then
            missing_keys.remove(prefix + "largest_batch")
        self._largest_batch = int(self.largest_batch)  # one read, on restore

    def clipped_gradient(self, statistics: RowStatistics) -> Tensor:
        with torch.no_grad():
            gradient = statistics.robust_gradient(self.rho)
            if self.grad_clip is not None:
                gradient = gradient.clamp(-self.grad_clip, self.grad_clip)
        return gradient
