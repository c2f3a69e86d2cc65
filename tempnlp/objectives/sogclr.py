"""SogCLR: the contrastive objective with a per-sample moving average of the partition function.

For every dataset index k the objective keeps ``s[k]``, a moving average of the row's partition function over
its negatives, which makes the gradient estimator consistent with small batches (Yuan et al. 2022, arXiv
2202.12387). For row i with dataset index k, its n_i negatives and ``h_ij = s(q_i, d_j) - s(q_i, d_i)``::

    g_i  = (1/n_i) sum_j exp(h_ij / tau_ij)                  (detached)
    s[k] = g_i on the first visit, else (1 - gamma) s[k] + gamma g_i
    p_ij = exp(h_ij / tau_ij) / s[k]                         (detached)
    l_i  = (1/n_i) sum_j p_ij h_ij                           (gradient through h_ij only)

which is the gradient of ``tau * log s`` with the moving average standing in for the batch's partition function.
With one temperature per entry (DySTreSS), ``h_ij / tau_ij`` becomes ``s_ij / tau_ij - s_ii / tau_ii`` (the margin of
the scaled logits, as in InfoNCE and DCL at those temperatures) and ``h_ij`` that margin times ``tau_ii``, which is
the formula above when the row has one temperature.
The temperature comes from any policy. A temperature with a gradient of its own (a learnable tau, one value or
one per row) receives that of ``tau_i * log s[k]``, ``log s[k] - (1/n_i) sum_j p_ij h_ij / tau_i``, through a
term whose value is zero. Everything is computed in log space (``log s`` is stored), in at least float32.

Outside training (no gradient) the state is neither read nor written: each row uses its own batch estimate.
iSogCLR is this objective with :class:`~tempnlp.temperature.IndividualTemperature`; SogCLR in the paper is it
with one fixed temperature.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from tempnlp._checks import flag, moving_average_weight, positive_float
from tempnlp._rows import write_rows
from tempnlp.objectives.base import ContrastiveObjective
from tempnlp.objectives.candidates import CandidateBatch, Direction
from tempnlp.temperature import TemperaturePolicy
from tempnlp.temperature.base import RowStatistics
from tempnlp.temperature.individual import check_num_samples
from tempnlp.temperature.schedule import TrainingPosition


class PartitionEstimate(nn.Module):
    """Per-sample buffers of one direction: ``log s`` and whether the sample has been seen."""

    def __init__(self, num_samples: int) -> None:
        super().__init__()
        self.register_buffer("log_s", torch.zeros(num_samples, dtype=torch.float32))
        self.register_buffer("seen", torch.zeros(num_samples, dtype=torch.bool))

    @property
    def s(self) -> Tensor:
        return self.log_s.exp()


class SogCLR(TrainingPosition, ContrastiveObjective):
    """SogCLR at tensor level: ``objective(anchors, documents, indices)`` with any temperature policy.

    Args:
        num_samples: size of the training set (indices must lie in ``[0, num_samples)``).
        temperature: a number (fixed tau; 0.1 in the SogCLR paper) or any policy.
        gamma: moving-average weight of the new partition estimate (0.9); with ``gamma_schedule="cosine"`` the
            value it decays to.
        gamma_schedule: ``"constant"``, or ``"cosine"`` as LibAUC defines it: in epoch e (counted from 0) the weight
            is ``(1 - gamma) (1 + cos(pi e / E)) / 2 + gamma`` for e < E, then ``gamma``: the estimate starts as the
            batch's own (weight 1) and averages over more batches as training goes on. LibAUC's and FastCLIP's runs
            use gamma 0.2 with E half the epochs. The epoch comes from the trainer, like a temperature schedule's
            position (:func:`tempnlp.train.follow_progress`; ``set_progress(step, steps_per_epoch)`` at tensor
            level).
        gamma_decay_epochs: E, for the cosine schedule.
        symmetric: add the document-to-anchor direction, with its own moving averages (the bimodal form).
        same_view_negatives: also contrast each row with the other rows of its own side (the paper's unimodal
            two-view form: 2B - 2 negatives).
        share_directions: one moving average per sample for both directions (the unimodal form, where anchor and
            positive are two views of one sample): each direction moves the stored ``s`` from the same previous
            value, and the sample keeps the mean of the two, as LibAUC's ``GCLoss_v1`` does. Needs ``symmetric``.
        check_finite: raise a ValueError on NaN/inf embeddings or an index out of range or repeated in the batch
            (one host read per call; False skips both checks).
        gather_across_devices: in multi-process training, evaluate and update the state of the global batch.
    """

    positive_in_partition = False
    robust_form = True
    display_name = "SogCLR"

    def __init__(
        self,
        num_samples: int,
        temperature: TemperaturePolicy | float = 0.1,
        gamma: float = 0.9,
        symmetric: bool = False,
        same_view_negatives: bool = False,
        check_finite: bool = True,
        gather_across_devices: bool = False,
        share_directions: bool = False,
        gamma_schedule: Literal["constant", "cosine"] = "constant",
        gamma_decay_epochs: float | None = None,
    ) -> None:
        if share_directions and not symmetric:
            raise ValueError("share_directions=True shares the state of two directions: it needs symmetric=True.")
        super().__init__(
            temperature,
            symmetric=symmetric,
            same_view_negatives=same_view_negatives,
            check_finite=check_finite,
            gather_across_devices=gather_across_devices,
        )
        self._num_samples = check_num_samples(num_samples)
        policy_samples = getattr(self.temperature, "num_samples", None)
        if policy_samples is not None and policy_samples != num_samples:
            raise ValueError(
                f"The temperature policy keeps {policy_samples} samples but SogCLR {num_samples}: both index the "
                "same training set, so give them the same num_samples."
            )
        self.gamma = moving_average_weight("gamma", gamma)
        if gamma_schedule not in ("constant", "cosine"):
            raise ValueError(f"gamma_schedule must be 'constant' or 'cosine', got {gamma_schedule!r}.")
        if gamma_schedule == "cosine" and gamma_decay_epochs is None:
            raise ValueError("gamma_schedule='cosine' needs gamma_decay_epochs > 0 (LibAUC: half the epochs).")
        self.gamma_schedule = gamma_schedule
        self.gamma_decay_epochs = (
            None if gamma_decay_epochs is None else positive_float("gamma_decay_epochs", gamma_decay_epochs)
        )
        if gamma_schedule == "cosine":  # the schedule's position, saved with the loss state
            self._register_position()
        self.share_directions = flag("share_directions", share_directions)
        count = 1 if self.share_directions else self.directions
        self.estimates = nn.ModuleList(PartitionEstimate(num_samples) for _ in range(count))
        self._shared_step: tuple[Tensor, Tensor, Tensor] | None = None  # (previous log s, seen, this direction's)

    @property
    def needs_indices(self) -> bool:
        return True

    @property
    def needs_progress(self) -> bool:
        return self.gamma_schedule == "cosine"

    def current_gamma(self) -> float:
        """The moving-average weight of this step (host-side: the schedule needs no device read)."""
        if self.gamma_schedule == "constant":  # (read only in training: evaluation keeps no moving average)
            return self.gamma
        position = self.training_position()
        if position is None or not position[1]:
            raise ValueError(
                "SogCLR's cosine gamma schedule follows the epoch, but nobody told it where training is: call "
                "tempnlp.train.follow_progress(trainer) (track_loss_state does it too), or "
                "objective.set_progress(step, steps_per_epoch) before each step."
            )
        step, steps_per_epoch = position
        epoch = step // steps_per_epoch
        if epoch >= self.gamma_decay_epochs:
            return self.gamma
        return (1.0 - self.gamma) * 0.5 * (1.0 + math.cos(math.pi * epoch / self.gamma_decay_epochs)) + self.gamma

    @property
    def num_samples(self) -> int:
        return self._num_samples

    def row_losses(self, direction: Direction, tau: Tensor, batch: CandidateBatch) -> tuple[Tensor, RowStatistics]:
        if tau.requires_grad and tau.dim() == 2:
            raise ValueError(
                "SogCLR takes a learned temperature of one value or one per row, not one per entry: the "
                "gradient of tau * log s is defined per row."
            )
        similarities = direction.similarities
        rows = torch.arange(direction.batch_size, device=similarities.device)
        if tau.dim() == 2:
            # one tau per entry: margins between scaled logits, in units of the positive's tau (see the module)
            logits = similarities / tau.detach()
            positive_tau = tau.detach()[rows, rows].unsqueeze(1)
            h = (logits - logits[rows, rows].unsqueeze(1)) * positive_tau
            tau_rows = positive_tau
        else:
            h = similarities - similarities[rows, rows].unsqueeze(1)  # h_ij; gradients flow through it
            tau_rows = tau.unsqueeze(1) if tau.dim() == 1 else tau
        in_partition = direction.partition_mask(positive_in_partition=False)
        count = direction.partition_size(positive_in_partition=False)
        indices = batch.indices
        with torch.no_grad():
            scaled = (h.detach() / tau_rows.detach()).masked_fill(~in_partition, float("-inf"))
            log_g = torch.logsumexp(scaled, dim=1) - math.log(count)  # log of (1/n_i) sum_j exp(h_ij / tau)
            # evaluation (no indices) is stateless
            log_s = log_g if indices is None else self._moving_average(direction.index, indices, log_g)
            weights = torch.exp(scaled - log_s.unsqueeze(1))  # p_ij, zero off the partition
        losses = (weights * h).sum(dim=1) / count
        statistics = self.statistics(direction, tau, batch, in_partition=in_partition, log_partition=log_s)
        if tau.requires_grad:
            # d(tau log s)/d tau = log s - (1/n) sum_j p_ij h_ij / tau: the robust gradient without the KL radius
            with torch.no_grad():
                tau_gradient = statistics.robust_gradient(0.0)
            losses = losses + (tau - tau.detach()) * tau_gradient
        return losses, statistics

    def _moving_average(self, direction: int, indices: Tensor, log_g: Tensor) -> Tensor:
        """``log s`` of the rows after this step, written to the state (with shared directions, after the second)."""
        state = self.estimates[0 if self.share_directions else direction]
        if self.share_directions and direction == 1 and self._shared_step is not None:
            previous, seen, first = self._shared_step  # both directions start from the same stored value
        else:
            previous, seen = state.log_s[indices].to(log_g.dtype), state.seen[indices]
        gamma = self.current_gamma()
        moving = torch.logaddexp(math.log1p(-gamma) + previous, math.log(gamma) + log_g) if gamma < 1 else log_g
        log_s = torch.where(seen, moving, log_g)
        if self.share_directions and direction == 0:
            self._shared_step = (previous, seen, log_s)
            return log_s
        if self.share_directions:
            log_s_stored = torch.logaddexp(first, log_s) - math.log(2.0)  # the mean of the two directions' s
            self._shared_step = None
        else:
            log_s_stored = log_s
        write_rows(state.log_s, indices, log_s_stored)
        state.seen.index_fill_(0, indices, True)  # no host-to-device copy of the value
        return log_s

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        _upgrade_legacy_state(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if self.gamma_schedule == "cosine":
            self._forget_host_position()

    def extra_repr(self) -> str:
        return (
            f"num_samples={self.num_samples}, gamma={self.gamma}, symmetric={self.symmetric}"
            + (", same_view_negatives=True" if self.same_view_negatives else "")
            + (", share_directions=True" if self.share_directions else "")
        )


def _upgrade_legacy_state(objective: SogCLR, state_dict: dict, prefix: str) -> None:
    """Rename, in place, the keys a loss state written before tempnlp 0.2 uses (``query_state.*``,
    ``document_state.*`` and ``temperature_network.*`` of the iSogCLR objective) to today's layout, so that its
    checkpoints resume. What has no place any more (a fixed tau's constant buffer) is dropped."""
    policy = objective.temperature
    sides = {"query_state.": 0, "document_state.": 1}
    for key in [key for key in state_dict if key.startswith(prefix)]:
        name = key[len(prefix) :]
        if name.startswith("temperature_network.") and "temperature_network" not in objective._modules:
            state_dict[f"{prefix}temperature.network.{name.removeprefix('temperature_network.')}"] = state_dict.pop(key)
            continue
        side = next((sides[start] for start in sides if name.startswith(start)), None)
        if side is None:
            continue
        value, buffer = state_dict.pop(key), name.split(".", 1)[1]
        if buffer in ("log_s", "seen"):
            state_dict[f"{prefix}estimates.{side}.{buffer}"] = value
        container = "states" if hasattr(policy, "states") else "records" if getattr(policy, "records", None) else None
        if container is not None and (buffer in ("tau", "seen") or (buffer == "u" and container == "states")):
            state_dict[f"{prefix}temperature.{container}.{side}.{buffer}"] = value.clone()
