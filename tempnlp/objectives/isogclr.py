"""iSogCLR, SogCLR and TempNet as they were spelled before the temperature became its own axis.

``ISogCLR(num_samples, ...)`` is :class:`~tempnlp.objectives.SogCLR` with
:class:`~tempnlp.temperature.IndividualTemperature` (``learn_temperature=True``), a fixed temperature
(``False``) or :class:`~tempnlp.temperature.TempNetTemperature` (``temperature_network=...``). Its numbers,
attributes (``tau``, ``query_state``, ``document_state``, ``temperature_network``) and state-dict keys are those of
the earlier class; new code composes the objective and the policy directly.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import Tensor, nn

from tempnlp._checks import ordered_bounds, positive_float
from tempnlp.objectives.sogclr import SogCLR
from tempnlp.temperature import FixedTemperature, IndividualTemperature, TempNetTemperature
from tempnlp.temperature.individual import check_num_samples, warn_single_epoch
from tempnlp.temperature.tempnet import TempNet

__all__ = ["ISogCLR", "TempNet", "warn_single_epoch"]


class ISogCLR(SogCLR):
    """iSogCLR (``learn_temperature=True``, the default) or SogCLR (``False``) at tensor level.

    Call as ``objective(queries, documents, indices)``: queries (B, d), documents positives (B, d) or a list
    ``[positives, negatives_1, ...]``, indices the dataset index of each row (B,), all distinct.

    Args:
        num_samples: size of the training set (indices must lie in ``[0, num_samples)``).
        tau_init: initial temperature (0.1: the authors' unimodal setting; SogCLR's fixed tau).
        tau_min, tau_max: bounds of the per-sample temperature (0.05, 1.0).
        gamma: moving-average weight of the new partition estimate (0.9).
        rho: KL radius (0.3-0.4 in the authors' unimodal runs); must be below log(number of negatives).
        eta: temperature step size (0.01-0.03).
        beta: moving-average weight of the temperature gradient (0.8).
        grad_clip: clip of the temperature gradient G_i (5.0, as in the authors' code); None disables it.
        learn_temperature: False gives SogCLR (one fixed temperature ``tau_init``).
        symmetric: add the document-to-query direction, which keeps its own state (the bimodal form).
        check_finite: raise a ValueError on NaN/inf embeddings or an index out of range or repeated in the batch
            (one host read per call; False skips both checks).
        temperature_network: a :class:`TempNet` (or any module mapping (B, d) embeddings to (B,) temperatures)
            that predicts tau_i from the detached query embedding (see
            :class:`~tempnlp.temperature.TempNetTemperature`).
        gather_across_devices: in multi-process training, evaluate and update the state of the global batch.
    """

    def __init__(
        self,
        num_samples: int,
        tau_init: float = 0.1,
        tau_min: float = 0.05,
        tau_max: float = 1.0,
        gamma: float = 0.9,
        rho: float = 0.3,
        eta: float = 0.01,
        beta: float = 0.8,
        grad_clip: float | None = 5.0,
        learn_temperature: bool = True,
        symmetric: bool = False,
        check_finite: bool = True,
        temperature_network: nn.Module | None = None,
        gather_across_devices: bool = False,
        same_view_negatives: bool = False,
        gamma_schedule: str = "constant",
        gamma_decay_epochs: float | None = None,
    ) -> None:
        num_samples = check_num_samples(num_samples)
        tau_init = positive_float("tau_init", tau_init)
        ordered_bounds("tau_min", positive_float("tau_min", tau_min), "tau_max", positive_float("tau_max", tau_max))
        if temperature_network is not None:
            hidden = getattr(temperature_network, "hidden", None)
            policy = TempNetTemperature(
                getattr(hidden, "in_features", 0),
                tau_init=tau_init,
                tau_min=tau_min,
                tau_max=tau_max,
                rho=rho,
                grad_clip=grad_clip,
                num_samples=num_samples,
                network=temperature_network,
            )
            if not learn_temperature:
                raise ValueError("temperature_network learns the temperature: leave learn_temperature=True.")
        elif learn_temperature:
            policy = IndividualTemperature(num_samples, tau_init, tau_min, tau_max, rho, eta, beta, grad_clip)
        else:
            policy = FixedTemperature(tau_init)
        super().__init__(
            num_samples,
            policy,
            gamma=gamma,
            symmetric=symmetric,
            same_view_negatives=same_view_negatives,
            check_finite=check_finite,
            gather_across_devices=gather_across_devices,
            gamma_schedule=gamma_schedule,
            gamma_decay_epochs=gamma_decay_epochs,
        )
        self.tau_init, self.tau_min, self.tau_max = tau_init, float(tau_min), float(tau_max)
        self.rho, self.eta, self.beta, self.grad_clip = float(rho), float(eta), float(beta), grad_clip
        self.learn_temperature = bool(learn_temperature)
        self.temperature_network = temperature_network
        if temperature_network is not None:
            # The network keeps its earlier place, objective.temperature_network: its parameter names (which
            # learning_rate_mapping patterns in recipes and grids match) and its state-dict keys are unchanged.
            del self.temperature._modules["network"]
            object.__setattr__(self.temperature, "network", temperature_network)

    @property
    def tau(self) -> Tensor:
        """Per-sample temperatures of the queries (one per dataset index)."""
        return self.query_state.tau

    @property
    def query_state(self) -> SimpleNamespace:
        return self._state_view(0)

    @property
    def document_state(self) -> SimpleNamespace | None:
        return self._state_view(1) if self.symmetric else None

    def _state_view(self, direction: int) -> SimpleNamespace:
        """The earlier per-direction state (tau, log_s, u, seen, s) assembled from the estimator and the policy."""
        estimate = self.estimates[direction]
        policy = self.temperature
        if isinstance(policy, IndividualTemperature):
            tau, u = policy.state(direction).tau, policy.state(direction).u
        elif isinstance(policy, TempNetTemperature):
            tau, u = policy.records[direction].tau, torch.zeros_like(estimate.log_s)
        else:
            tau, u = torch.full_like(estimate.log_s, self.tau_init), torch.zeros_like(estimate.log_s)
        return SimpleNamespace(tau=tau, log_s=estimate.log_s, u=u, seen=estimate.seen, s=estimate.s)

    def negatives_per_row(self, batch: int, document_columns: int, extra: int = 0) -> int:
        """The fewest negatives a row has in either direction."""
        return min(self.candidate_counts(batch, document_columns, extra))

    def check_rho(self, negatives: int) -> None:
        """A tau step needs rho below log(negatives): a KL ball that wide contains every weighting."""
        check = getattr(self.temperature, "check_partition_size", None)
        if self.learn_temperature and check is not None:
            check(negatives, "negatives")

    def extra_repr(self) -> str:
        kind = "iSogCLR" if self.learn_temperature else "SogCLR"
        return f"{kind}, {super().extra_repr()}"
