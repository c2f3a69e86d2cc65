"""Objectives against the naive references in tests/reference.py, gradcheck, and mixed precision."""

from __future__ import annotations

import math
from typing import Any

import pytest
import reference
import torch
from torch import Tensor

from tempnlp.objectives import DCL, DCLW, InfoNCE
from tempnlp.temperature import (
    DySTreSSTemperature,
    FixedTemperature,
    LearnableTemperature,
    MACLTemperature,
    RowStatistics,
    TemperaturePolicy,
)
from tempnlp.temperature.base import ROW_LOG_PROBABILITY


class RowTemperature(TemperaturePolicy):
    """A per-row test policy: tau_i = 0.04 + 0.02 * sigmoid(s_ii), exercising the (B,) shape."""

    granularity = "row"

    def compute(self, similarities: Tensor, positive_similarities: Tensor, **context: Any) -> Tensor:
        return 0.04 + 0.02 * torch.sigmoid(positive_similarities.detach())


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# The learnable policy stores log(1/tau) in float32: the reference uses the value it actually holds.
_LEARNABLE_TAU = math.exp(-float(torch.tensor(math.log(1 / 0.07), dtype=torch.float32)))

# name -> (policy factory, naive tau(i, j, s, alignment, s_ii), reweight)
POLICY_CASES = {
    "fixed": (lambda: FixedTemperature(0.05), lambda i, j, s, a, p: 0.05, False),
    "learnable": (lambda: LearnableTemperature(init=0.07), lambda i, j, s, a, p: _LEARNABLE_TAU, False),
    "macl": (
        lambda: MACLTemperature(tau0=0.1, alpha=0.5, A0=0.2, min_tau=1e-4),
        lambda i, j, s, a, p: max(0.1 * (1 + 0.5 * (a - 0.2)), 1e-4),
        False,
    ),
    "macl-reweight": (
        lambda: MACLTemperature(tau0=0.1, alpha=0.5, A0=0.2, min_tau=1e-4, reweight=True),
        lambda i, j, s, a, p: max(0.1 * (1 + 0.5 * (a - 0.2)), 1e-4),
        True,
    ),
    "dystress": (
        lambda: DySTreSSTemperature(0.04, 0.05),
        lambda i, j, s, a, p: 0.04 + 0.005 * (1 + math.cos(math.pi * (1 + s))),
        False,
    ),
    "dystress-shifted": (
        lambda: DySTreSSTemperature(0.04, 0.05, variant="shifted"),
        lambda i, j, s, a, p: 0.05 if s > 0.4 else 0.04 + 0.005 * (1 + math.cos(math.pi * (s - 0.4) / 0.7)),
        False,
    ),
    "row": (RowTemperature, lambda i, j, s, a, p: 0.04 + 0.02 * _sigmoid(p), False),
}


def _batch(batch: int = 6, negatives: int = 0, dim: int = 8, seed: int = 0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    anchors = torch.randn(batch, dim, generator=generator, dtype=dtype)
    # Positives correlated with their anchors, so losses are in a realistic range.
    positives = anchors + 0.7 * torch.randn(batch, dim, generator=generator, dtype=dtype)
    columns = [positives] + [torch.randn(batch, dim, generator=generator, dtype=dtype) for _ in range(negatives)]
    return anchors, columns


def _lists(anchors, columns):
    return anchors.tolist(), [column.tolist() for column in columns]


@pytest.mark.parametrize("negatives", [0, 2])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("case", list(POLICY_CASES))
def test_infonce_matches_naive_reference(case, symmetric, negatives):
    make_policy, tau, reweight = POLICY_CASES[case]
    anchors, columns = _batch(negatives=negatives)
    objective = InfoNCE(make_policy(), symmetric=symmetric).double()
    expected = reference.infonce(*_lists(anchors, columns), tau, symmetric=symmetric, reweight=reweight)
    assert float(objective(anchors, columns).detach()) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("anchor_negatives", [False, True])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("sigma", [None, 0.5])
@pytest.mark.parametrize("case", list(POLICY_CASES))
def test_dcl_matches_naive_reference(case, sigma, symmetric, anchor_negatives):
    make_policy, tau, reweight = POLICY_CASES[case]
    if reweight:
        with pytest.raises(ValueError, match=r"reweight=True\) weights each row by 1 / \(1 - P\)"):
            DCL(make_policy())
        return
    if case == "learnable":  # DCL's gradient drives it to its floor (objectives/rules.py)
        with pytest.raises(ValueError, match=r"DCL's does once the positives \(DCLW: weighted by w_i\) beat"):
            DCL(make_policy(), sigma=sigma)
        return
    anchors, columns = _batch(negatives=1)
    objective = DCL(make_policy(), sigma=sigma, symmetric=symmetric, anchor_negatives=anchor_negatives).double()
    expected = reference.dcl(
        *_lists(anchors, columns),
        tau,
        sigma=sigma,
        symmetric=symmetric,
        anchor_negatives=anchor_negatives,
    )
    assert float(objective(anchors, columns).detach()) == pytest.approx(expected, rel=1e-10)


def test_dclw_is_dcl_with_sigma_half():
    anchors, columns = _batch()
    assert float(DCLW(0.1)(anchors, columns)) == pytest.approx(float(DCL(0.1, sigma=0.5)(anchors, columns)))


def test_documents_accept_tensor_list_and_stacked_forms():
    anchors, columns = _batch(negatives=2)
    objective = InfoNCE(0.05)
    from_list = objective(anchors, columns)
    from_stack = objective(anchors, torch.stack(columns, dim=1))
    assert float(from_list) == pytest.approx(float(from_stack), rel=1e-12)
    only_positives = objective(anchors, columns[0])
    assert float(only_positives) == pytest.approx(float(objective(anchors, columns[:1])), rel=1e-12)


class FrozenTemperature(TemperaturePolicy):
    """Replays the temperatures and loss weights another policy produced on the nominal inputs.

    MACL, DySTreSS and per-row policies read the similarities detached (a stop-gradient), so finite differences
    would see tau move while the analytic gradient, by design, does not. Freezing them checks the gradient the
    objective actually defines: the one at fixed temperature.
    """

    def __init__(self, taus: list[Tensor], weights: list[Tensor | None]) -> None:
        super().__init__()
        self.taus, self.weights = taus, weights
        self.calls = 0
        self.weight_calls = 0

    def compute(self, similarities: Tensor, positive_similarities: Tensor, **context: Any) -> Tensor:
        tau = self.taus[self.calls % len(self.taus)]
        self.calls += 1
        return tau

    @property
    def requires(self) -> frozenset[str]:
        return frozenset({ROW_LOG_PROBABILITY}) if any(w is not None for w in self.weights) else frozenset()

    def observe(self, row_losses: Tensor, statistics: RowStatistics) -> Tensor:
        weights = self.weights[self.weight_calls % len(self.weights)]
        self.weight_calls += 1
        if weights is None:
            return row_losses
        return (statistics.row_log_probability() * weights).to(row_losses.dtype)


def _freeze(policy: TemperaturePolicy, run) -> FrozenTemperature:
    """Record the temperatures and MACL's weights 1 / (1 - P_i) (from the formula) of one run."""
    weights: list[Tensor | None] = []
    original = policy.observe

    def recording(row_losses, statistics):
        if getattr(policy, "reweight", False):
            weights.append(1.0 / -torch.expm1(-statistics.row_log_probability().detach()))
        else:
            weights.append(None)
        return original(row_losses, statistics)

    policy.observe = recording
    objective = run(policy)
    return FrozenTemperature(list(objective.last_temperatures), weights)


def _combinations(cases) -> list[tuple[type, str]]:
    """(objective, policy) pairs that are valid: MACL's reweighting is defined for InfoNCE only, and so is a
    learnable tau (DCL's gradient drives it to its floor)."""
    return [
        (objective_cls, case)
        for objective_cls in (InfoNCE, DCL, DCLW)
        for case in cases
        if objective_cls is InfoNCE or ("reweight" not in case and case != "learnable")
    ]


@pytest.mark.parametrize("objective_cls,case", _combinations(POLICY_CASES))
def test_gradcheck_float64(case, objective_cls):
    make_policy, _, _ = POLICY_CASES[case]
    anchors, columns = _batch(batch=4, negatives=1, dim=5)

    def run(policy):
        objective = objective_cls(policy, symmetric=True).double()
        objective(anchors, columns)
        return objective

    policy = make_policy()
    if case != "learnable":  # the learnable temperature does not depend on the inputs: keep it live
        policy = _freeze(policy, run)
    objective = objective_cls(policy, symmetric=True).double()
    if isinstance(objective, DCL) and objective.sigma is not None:  # DCLW's weights are a stop-gradient too
        frozen = objective.positive_weights(
            anchors.new_tensor(
                [float(torch.cosine_similarity(a, p, dim=0)) for a, p in zip(anchors, columns[0], strict=True)]
            )
        )
        objective.positive_weights = lambda positives: frozen
    inputs = (
        anchors.clone().requires_grad_(),
        columns[0].clone().requires_grad_(),
        columns[1].clone().requires_grad_(),
    )
    assert torch.autograd.gradcheck(lambda a, p, n: objective(a, [p, n]), inputs)


def test_gradcheck_reaches_the_learnable_temperature():
    anchors, columns = _batch(batch=4, negatives=1, dim=5)
    objective = InfoNCE(LearnableTemperature(init=0.1), symmetric=True).double()

    def loss_of(log_inverse_tau):
        state = {"temperature.log_inverse_tau": log_inverse_tau}
        return torch.func.functional_call(objective, state, (anchors, columns))

    start = torch.tensor(math.log(10.0), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(loss_of, (start,))


class ConstantRowTemperature(TemperaturePolicy):
    granularity = "row"

    def compute(self, similarities: Tensor, positive_similarities: Tensor, **context: Any) -> Tensor:
        return torch.full_like(positive_similarities, 0.01)


# Every shape of temperature at (or from) tau = 0.01, where exp(s / tau) overflows float32 without a shift.
LOW_TAU_POLICIES = {
    "fixed": lambda: FixedTemperature(0.01),
    "learnable": lambda: LearnableTemperature(init=0.01, min_tau=0.01),
    "macl": lambda: MACLTemperature(tau0=0.01, alpha=0.5, A0=0.0, min_tau=0.01),
    "macl-reweight": lambda: MACLTemperature(tau0=0.01, alpha=0.5, A0=0.0, min_tau=0.01, reweight=True),
    "dystress": lambda: DySTreSSTemperature(0.01, 0.02),
    "row": ConstantRowTemperature,
}


@pytest.mark.parametrize("objective_cls,case", _combinations(LOW_TAU_POLICIES))
def test_tau_001_is_stable_in_float32(case, objective_cls):
    anchors, _ = _batch(batch=8, dtype=torch.float32)
    positives = anchors + 1e-3  # similarity ~1: exp(1 / 0.01) = 2.7e43 > float32 max
    negatives = -anchors  # similarity -1: the other extreme
    objective = objective_cls(LOW_TAU_POLICIES[case](), symmetric=True)
    exact = objective.double()(anchors.double(), [positives.double(), negatives.double()]).item()
    loss32 = objective.float()(anchors, [positives, negatives])
    assert torch.isfinite(loss32)
    assert loss32.item() == pytest.approx(exact, rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("objective_cls,case", _combinations(LOW_TAU_POLICIES))
def test_low_precision_autocast_at_tau_001(dtype, case, objective_cls):
    """A linear encoder under CPU autocast feeds the objective bf16/fp16 embeddings: loss and grads stay finite."""
    torch.manual_seed(0)
    encoder = torch.nn.Linear(16, 32)
    tokens = torch.randn(3, 32, 16)
    objective = objective_cls(LOW_TAU_POLICIES[case](), symmetric=True)
    with torch.autocast("cpu", dtype=dtype):
        anchors, positives, negatives = (encoder(t) for t in tokens)
        assert anchors.dtype == dtype
        loss = objective(anchors, [positives, negatives])
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters())
    assert all(torch.isfinite(p.grad).all() for p in objective.parameters())
    with torch.no_grad():
        exact = objective.double()(
            *(encoder.double()(t.double()) for t in tokens[:1]), [encoder(t.double()) for t in tokens[1:]]
        ).item()
    tolerance = 0.05 if dtype == torch.bfloat16 else 0.01  # bf16 keeps 8 bits of mantissa
    assert loss.item() == pytest.approx(exact, rel=tolerance)


def test_temperature_stats_cover_both_directions():
    anchors, columns = _batch()
    objective = InfoNCE(DySTreSSTemperature(0.04, 0.05), symmetric=True).double()
    objective(anchors, columns)
    assert len(objective.last_temperatures) == 2
    stats = objective.temperature_stats()
    every = torch.cat([t.reshape(-1) for t in objective.last_temperatures])
    assert stats["tau_min"] == pytest.approx(float(every.min()))
    assert stats["tau_max"] == pytest.approx(float(every.max()))
    assert stats["tau_mean"] == pytest.approx(float(every.mean()))
    assert 0.04 <= stats["tau_min"] <= stats["tau_mean"] <= stats["tau_max"] <= 0.05


class BadShapeTemperature(TemperaturePolicy):
    def compute(self, similarities: Tensor, positive_similarities: Tensor, **context: Any) -> Tensor:
        return torch.full((similarities.size(0) + 1,), 0.05)


@pytest.mark.parametrize("objective_cls", [InfoNCE, DCL])
def test_bad_inputs_raise_clear_errors(objective_cls):
    anchors, columns = _batch(batch=4, negatives=1, dtype=torch.float32)
    objective = objective_cls(0.05)
    with pytest.raises(ValueError, match="positives has 3 rows but the anchors have 4"):
        objective(anchors, [columns[0][:3]])
    with pytest.raises(ValueError, match="negatives_1 has embedding dimension 7"):
        objective(anchors, [columns[0], torch.randn(4, 7)])
    with pytest.raises(ValueError, match=r"anchors must be 2-D"):
        objective(anchors[0], [columns[0]])
    with pytest.raises(ValueError, match="documents is empty"):
        objective(anchors, [])
    nan_positives = columns[0].clone()
    nan_positives[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"Non-finite .* positives.*lower the learning rate"):
        objective(anchors, [nan_positives])
    with pytest.raises(ValueError, match=r"policy returned shape \(5,\)"):
        objective_cls(BadShapeTemperature())(anchors, columns)
    with pytest.raises(TypeError, match="TemperaturePolicy"):
        objective_cls(temperature="hot")
    with pytest.raises(ValueError, match="tau must be a finite number > 0"):
        objective_cls(temperature=-0.1)


def test_check_finite_can_be_turned_off():
    anchors, columns = _batch(batch=4, dtype=torch.float32)
    anchors[0, 0] = float("nan")
    assert torch.isnan(InfoNCE(0.05, check_finite=False)(anchors, columns))


def test_dcl_without_negatives_is_an_error():
    anchors, columns = _batch(batch=1)
    with pytest.raises(ValueError, match="DCL needs at least one negative"):
        DCL(0.05)(anchors, columns)
    anchors, columns = _batch(batch=1, negatives=1)
    assert torch.isfinite(DCL(0.05)(anchors, columns))  # the hard negative suffices one way
    with pytest.raises(ValueError, match="for the document-to-anchor term"):
        DCL(0.05, symmetric=True)(anchors, columns)  # but the documents have no negative: -inf otherwise
    anchors, columns = _batch(batch=1)
    assert torch.isfinite(DCL(0.05)(anchors, columns, extra_negatives=torch.randn(3, 8, dtype=torch.float64)))


def test_a_per_sample_policy_and_sogclr_index_the_same_training_set():
    from tempnlp.objectives import SogCLR
    from tempnlp.temperature import IndividualTemperature

    with pytest.raises(ValueError, match=r"keeps 10 samples but SogCLR 100.*same num_samples"):
        SogCLR(100, IndividualTemperature(10))
    SogCLR(10, IndividualTemperature(10))
