"""Temperature policies against formulas evaluated entry by entry with the math module."""

from __future__ import annotations

import math

import pytest
import torch

from tempnlp.objectives import InfoNCE, SogCLR
from tempnlp.temperature import (
    POLICIES,
    CooldownTemperature,
    CosineScheduleTemperature,
    DySTreSSTemperature,
    FixedTemperature,
    GlobalDROTemperature,
    IndividualTemperature,
    LearnableTemperature,
    MACLTemperature,
    TempNetTemperature,
    as_policy,
)


def _similarities(rows: int = 5, cols: int = 9, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    sims = torch.rand(rows, cols, generator=generator, dtype=torch.float64) * 2 - 1
    return sims, sims.diagonal()


def test_fixed_returns_its_scalar_and_records_it():
    sims, pos = _similarities()
    policy = FixedTemperature(0.05)
    tau = policy(sims, pos)
    assert tau.dim() == 0 and float(tau) == pytest.approx(0.05)
    assert policy.temperature_stats() == pytest.approx({"tau_mean": 0.05, "tau_min": 0.05, "tau_max": 0.05})


def test_learnable_starts_at_init_and_projects_into_the_bound():
    sims, pos = _similarities()
    policy = LearnableTemperature(init=0.07, min_tau=0.01)
    assert float(policy(sims, pos).detach()) == pytest.approx(0.07)
    with torch.no_grad():
        policy.log_inverse_tau.fill_(math.log(1 / 0.001))  # beyond 1/tau = 100, as an optimizer step may leave it
    tau = policy(sims, pos)
    assert float(tau.detach()) == pytest.approx(0.01)
    assert float(policy.log_inverse_tau.detach()) == pytest.approx(math.log(100))  # the parameter itself is projected
    tau.backward()
    assert float(policy.log_inverse_tau.grad) == pytest.approx(-0.01)  # d tau / d p = -tau at the bound too


def test_learnable_leaves_the_bound_at_the_first_step_that_asks():
    # CLIP's behaviour: steps that push tau below min_tau leave it at the bound, and the first step in the other
    # direction raises it. A straight-through clamp lets the parameter run past the bound meanwhile, and tau
    # then stays at min_tau for as many steps as it ran past.
    sims, pos = _similarities()
    policy = LearnableTemperature(init=0.0101, min_tau=0.01)
    optimizer = torch.optim.SGD(policy.parameters(), lr=1.0)
    for _ in range(5):  # minimising tau pushes the parameter up, against the bound
        optimizer.zero_grad()
        policy(sims, pos).backward()
        optimizer.step()
    assert float(policy(sims, pos).detach()) == pytest.approx(0.01)
    optimizer.zero_grad()
    (-policy(sims, pos)).backward()  # one step that asks for a higher tau
    optimizer.step()
    assert float(policy(sims, pos).detach()) > 0.01 * (1 + 1e-3)


def test_learnable_projection_keeps_autograd_intact_across_calls():
    # Symmetric objectives call the policy twice in one graph; the second call's projection must not bump the
    # parameter's version counter, or a graph that saved the parameter would fail in backward.
    sims, pos = _similarities()
    policy = LearnableTemperature(init=0.05, min_tau=0.01).double()
    version = policy.log_inverse_tau._version
    total = (sims / policy(sims, pos)).sum() + (sims.T / policy(sims.T, pos)).sum()
    assert policy.log_inverse_tau._version == version
    total.backward()
    tau = math.exp(-float(policy.log_inverse_tau.detach()))
    assert float(policy.log_inverse_tau.grad) == pytest.approx(2 * float(sims.sum()) / tau, rel=1e-9)


def test_learnable_loaded_state_is_projected():
    policy = LearnableTemperature(init=0.07, min_tau=0.01)
    policy.load_state_dict({"log_inverse_tau": torch.tensor(9.0)})
    assert float(policy.log_inverse_tau.detach()) == pytest.approx(math.log(100))


def test_learnable_gradcheck():
    sims, pos = _similarities()
    policy = LearnableTemperature(init=0.07, min_tau=0.01).double()

    def tau_of(log_inverse_tau):
        return torch.func.functional_call(policy, {"log_inverse_tau": log_inverse_tau}, (sims, pos))

    # Inside the bound; at and beyond it see the projection tests above.
    start = torch.tensor(math.log(1 / 0.07), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(tau_of, (start,))


@pytest.mark.parametrize("tau0,alpha,a0", [(0.05, 2.0, 0.8), (0.1, 0.5, 0.0), (0.2, -1.0, 0.3)])
def test_macl_formula(tau0, alpha, a0):
    sims, pos = _similarities()
    policy = MACLTemperature(tau0=tau0, alpha=alpha, A0=a0, min_tau=1e-4)
    alignment = sum(float(v) for v in pos) / len(pos)
    expected = max(tau0 * (1 + alpha * (alignment - a0)), 1e-4)
    assert float(policy(sims, pos)) == pytest.approx(expected, rel=1e-12)


def test_macl_clamps_positive_and_detaches():
    sims, pos = _similarities()
    pos = torch.full_like(pos, -1.0).requires_grad_()
    policy = MACLTemperature(tau0=0.05, alpha=2.0, A0=0.8, min_tau=0.01)
    tau = policy(sims, pos)
    assert float(tau) == pytest.approx(0.01)
    assert not tau.requires_grad  # the alignment is read detached


def test_macl_reweighting_is_one_over_one_minus_p():
    """observe() returns each row's -log P_i times the detached 1 / (1 - P_i)."""
    probs = torch.tensor([0.1, 0.5, 0.9, 0.999], dtype=torch.float64)
    negative_log_probs = (-probs.log()).requires_grad_()

    class Statistics:  # what InfoNCE hands the policy: -log P_i, differentiable
        def row_log_probability(self):
            return negative_log_probs

    row_losses = torch.zeros(4, dtype=torch.float64)
    reweighted = MACLTemperature(reweight=True).observe(row_losses, Statistics())
    reweighted.sum().backward()
    for p, value, grad in zip(probs.tolist(), reweighted.tolist(), negative_log_probs.grad.tolist(), strict=True):
        assert value == pytest.approx(-math.log(p) / (1 - p), rel=1e-9)
        assert grad == pytest.approx(1 / (1 - p), rel=1e-9)  # the weight is a constant
    assert MACLTemperature(reweight=False).observe(row_losses, Statistics()) is row_losses


def _dystress_paper(s: float, lo: float, hi: float) -> float:
    return lo + (hi - lo) / 2 * (1 + math.cos(math.pi * (1 + s)))


def _dystress_shifted(s: float, lo: float, hi: float, offset: float = 0.4, scale: float = 0.7) -> float:
    if s > offset:
        return hi
    return lo + (hi - lo) / 2 * (1 + math.cos(math.pi * (s - offset) / scale))


@pytest.mark.parametrize("variant,reference", [("paper", _dystress_paper), ("shifted", _dystress_shifted)])
def test_dystress_per_entry(variant, reference):
    sims, pos = _similarities()
    policy = DySTreSSTemperature(tau_min=0.04, tau_max=0.05, variant=variant)
    tau = policy(sims, pos)
    assert tau.shape == sims.shape
    for i in range(sims.size(0)):
        for j in range(sims.size(1)):
            assert float(tau[i, j]) == pytest.approx(reference(float(sims[i, j]), 0.04, 0.05), rel=1e-12)


def test_dystress_paper_extremes():
    policy = DySTreSSTemperature(tau_min=0.1, tau_max=0.2)
    s = torch.tensor([[-1.0, 0.0, 1.0]], dtype=torch.float64)
    assert policy(s, s[:, 0])[0].tolist() == pytest.approx([0.2, 0.1, 0.2])


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: FixedTemperature(0.0), "tau must be a finite number > 0"),
        (lambda: FixedTemperature(-0.05), "tau must be a finite number > 0"),
        (lambda: FixedTemperature(float("nan")), "tau must be a finite number > 0"),
        (lambda: LearnableTemperature(init=0.005, min_tau=0.01), "min_tau .* must not exceed init"),
        (lambda: DySTreSSTemperature(tau_min=0.2, tau_max=0.1), "tau_min .* must not exceed tau_max"),
        (lambda: DySTreSSTemperature(variant="cosine"), "variant must be 'paper' or 'shifted'"),
        (lambda: MACLTemperature(tau0=-1.0), "tau0 must be a finite number > 0"),
        (lambda: MACLTemperature(A0=1.5), r"A0 .* must lie in \[-1, 1\]"),
        (lambda: MACLTemperature(tau0=0.05, min_tau=0.5), r"min_tau \(0.5\) must not exceed tau0"),
        (lambda: DySTreSSTemperature(offset=float("nan")), "offset must be finite"),
        (lambda: CosineScheduleTemperature(period_epochs=float("inf")), "period_epochs must be a finite number > 0"),
        (lambda: CooldownTemperature(cooldown_epochs=0), "cooldown_epochs must be a finite number > 0"),
    ],
)
def test_bad_arguments_name_the_argument(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: MACLTemperature(reweight="False"), r"reweight must be True or False, got str \('False'\)"),
        (lambda: InfoNCE(symmetric="False"), "symmetric must be True or False"),
        (lambda: InfoNCE(same_view_negatives=1), "same_view_negatives must be True or False"),
        (lambda: IndividualTemperature(10, share_directions="no"), "share_directions must be True or False"),
        (lambda: SogCLR(10, gamma_schedule="cosine", gamma_decay_epochs="2"), "gamma_decay_epochs must be a number"),
        (lambda: CosineScheduleTemperature(period_epochs=True), "period_epochs must be a number"),
    ],
)
def test_switches_and_lengths_of_the_wrong_type_are_refused_not_read(build, match):
    """bool("False") is True and float("2") is 2.0: such arguments would be read as something else."""
    with pytest.raises(TypeError, match=match):
        build()


def test_as_policy_accepts_numbers_and_policies_only():
    assert isinstance(as_policy(0.05), FixedTemperature)
    policy = MACLTemperature()
    assert as_policy(policy) is policy
    with pytest.raises(TypeError, match="pass MACLTemperature"):
        as_policy(MACLTemperature)
    with pytest.raises(TypeError, match="must be a positive number or a TemperaturePolicy"):
        as_policy("0.05")
    with pytest.raises(TypeError, match="must be a number"):
        FixedTemperature("0.05")


def test_every_named_policy_builds_with_defaults():
    sims, pos = _similarities()
    run = {"num_samples": 10, "embedding_dim": 4}  # what a run fills in for the policies that declare it
    anchors = torch.randn(sims.size(0), 4)
    for name, cls in POLICIES.items():
        assert cls.name == name and cls.summary and cls.paper, name  # declared once, read by the registry
        policy = cls(**{key: run[key] for key in cls.run_arguments})
        if cls.needs_progress:  # a schedule is told where training is before it is used
            policy.set_progress(0, 10)
        tau = policy(sims.float(), pos.float(), anchors=anchors)
        assert torch.isfinite(tau).all() and (tau > 0).all(), name


@pytest.mark.parametrize(
    "build",
    [
        lambda: IndividualTemperature(num_samples=8, tau_init=0.05, tau_min=0.01),
        lambda: GlobalDROTemperature(tau_init=0.05, tau_min=0.01),
        lambda: TempNetTemperature(embedding_dim=16, num_samples=8, tau_init=0.05, tau_min=0.01),
    ],
    ids=["individual", "global-dro", "tempnet"],
)
def test_what_a_dro_policy_reads_after_the_step_carries_no_gradient(build, monkeypatch):
    """The robust gradient G_i moves tau by its own update, never through autograd. Today every path that reads it
    is also multiplied by zero or sits under no_grad, so the losses' gradients cannot show a leak; this pins the
    detaches themselves, so that a refactor which drops that multiplier fails here first."""
    policy = build()
    seen = []
    update = type(policy).update

    def recording(self, row_losses, statistics):
        seen.append((statistics, self.clipped_gradient(statistics)))
        return update(self, row_losses, statistics)

    monkeypatch.setattr(type(policy), "update", recording)
    generator = torch.Generator().manual_seed(3)
    anchors = torch.randn(8, 16, generator=generator, requires_grad=True)
    positives = torch.randn(8, 16, generator=generator, requires_grad=True)
    InfoNCE(policy, symmetric=True)(anchors, [positives], indices=torch.arange(8)).backward()
    assert len(seen) == 2  # both directions
    for statistics, gradient in seen:
        assert not statistics.similarities.requires_grad and not statistics.tau.requires_grad
        assert not gradient.requires_grad and gradient.grad_fn is None
