"""GlobalDROTemperature (RGCL-g) against a naive float64 reference: one tau for every row, moved once a step by the
mean of the rows' clipped robust gradients over both directions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tempnlp.objectives import DCL, InfoNCE
from tempnlp.temperature import GlobalDROTemperature

BATCH, DIM = 6, 8
TAU_INIT, TAU_MIN, TAU_MAX, RHO, ETA, BETA, CLIP = 0.05, 0.01, 0.5, 0.3, 0.05, 0.8, 1.0


def _reference_step(anchors, positives, tau, u, *, positive_in_partition, symmetric):
    """Loss (differentiable in the embeddings, tau a constant) and the next (tau, u), from the formulas."""
    a, p = F.normalize(anchors, dim=1), F.normalize(positives, dim=1)
    directions = [(a, p)] + ([(p, a)] if symmetric else [])
    losses, gradients = [], []
    for queries, candidates in directions:
        rows = []
        for i in range(BATCH):
            sims = [queries[i] @ candidates[j] for j in range(BATCH)]
            partition = [j for j in range(BATCH) if positive_in_partition or j != i]
            logits = torch.stack([sims[j] / tau for j in partition])
            # the encoder descends the robust objective tau log s_i (over tau_init): the row loss log s_i times tau
            rows.append((torch.logsumexp(logits, 0) - sims[i] / tau) * tau / TAU_INIT)
            gaps = [(sims[j] - sims[i]).item() for j in partition]
            s = sum(math.exp(h / tau) for h in gaps) / len(gaps)
            weighted = sum(math.exp(h / tau) / s * h / tau for h in gaps) / len(gaps)
            gradients.append(max(-CLIP, min(CLIP, math.log(s) + RHO - weighted)))
        losses.append(torch.stack(rows))
    loss = (losses[0] if len(losses) == 1 else 0.5 * (losses[0] + losses[1])).mean()
    per_direction = [sum(gradients[k * BATCH : (k + 1) * BATCH]) / BATCH for k in range(len(directions))]
    mean = sum(per_direction) / len(per_direction)
    u = (1 - BETA) * u + BETA * mean
    return loss, min(TAU_MAX, max(TAU_MIN, tau - ETA * u)), u


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("objective_cls", [InfoNCE, DCL])
def test_global_dro_tau_follows_the_mean_robust_gradient(objective_cls, symmetric):
    policy = GlobalDROTemperature(TAU_INIT, TAU_MIN, TAU_MAX, RHO, ETA, BETA, CLIP)
    objective = objective_cls(policy, symmetric=symmetric).double()
    tau, u = float(torch.tensor(TAU_INIT, dtype=torch.float32)), 0.0
    generator = torch.Generator().manual_seed(0)
    taus = []
    for step in range(6):
        anchors = torch.randn(BATCH, DIM, generator=generator, dtype=torch.float64)
        positives = anchors + 0.4 * torch.randn(BATCH, DIM, generator=generator, dtype=torch.float64)
        ours = [anchors.clone().requires_grad_(), positives.clone().requires_grad_()]
        theirs = [anchors.clone().requires_grad_(), positives.clone().requires_grad_()]
        loss = objective(ours[0], [ours[1]])
        loss.backward()
        expected, tau, u = _reference_step(
            *theirs, tau, u, positive_in_partition=objective_cls is InfoNCE, symmetric=symmetric
        )
        expected.backward()
        assert loss.item() == pytest.approx(expected.item(), rel=1e-10), f"step {step}"
        for mine, reference in zip(ours, theirs, strict=True):
            torch.testing.assert_close(mine.grad, reference.grad, rtol=1e-9, atol=1e-12)
        assert policy.tau.item() == pytest.approx(tau, rel=1e-9) and policy.u.item() == pytest.approx(u, rel=1e-9)
        taus.append(tau)
    assert len(set(taus)) == len(taus)  # it moved every step
    with torch.no_grad():  # evaluation uses the learned value and moves nothing
        objective(anchors, [positives])
    assert policy.tau.item() == pytest.approx(tau, rel=1e-12)


@pytest.mark.parametrize("symmetric", [False, True])
def test_in_float32_the_logged_tau_is_the_one_the_step_used_not_the_updated_buffer(symmetric):
    """In float32 ``tau.to(float32)`` is the buffer itself; the update after the step would then rewrite the tau the
    loss logs (the float64 test above casts, so a copy, and cannot see it)."""
    policy = GlobalDROTemperature(0.1, 0.01, 1.0, rho=0.3, eta=0.5, beta=1.0, grad_clip=None)
    objective = InfoNCE(policy, symmetric=symmetric)
    generator = torch.Generator().manual_seed(1)
    anchors = torch.randn(BATCH, DIM, generator=generator, requires_grad=True)
    positives = torch.randn(BATCH, DIM, generator=generator, requires_grad=True)
    used = policy.tau.item()
    objective(anchors, [positives]).backward()
    assert policy.tau.item() != pytest.approx(used, abs=1e-3)  # it moved
    stats = objective.temperature_stats()
    assert stats["tau_mean"] == pytest.approx(used, rel=1e-6) and stats["tau_max"] == pytest.approx(used, rel=1e-6)


def test_global_dro_tau_stays_within_its_bounds_under_a_large_step():
    """A step size that would carry tau far past either bound leaves it on the bound (the paper's projection)."""
    generator = torch.Generator().manual_seed(2)
    anchors = torch.randn(BATCH, DIM, generator=generator, dtype=torch.float64)
    for rho, bound in ((1e-6, 0.5), (math.log(BATCH) - 1e-3, 0.01)):  # a small rho pushes tau up, near log(n) down
        policy = GlobalDROTemperature(0.05, 0.01, 0.5, rho=rho, eta=1e3, beta=1.0, grad_clip=None)
        objective = InfoNCE(policy).double()
        for _ in range(3):
            positives = anchors + 0.4 * torch.randn(BATCH, DIM, generator=generator, dtype=torch.float64)
            objective(anchors.clone().requires_grad_(), [positives]).backward()
        assert policy.tau.item() == pytest.approx(bound, rel=1e-6), rho


def test_global_dro_state_is_checkpointed_and_refused_without_gathering_under_ddp(tiny_model):
    from tempnlp.losses import InfoNCELoss

    loss = InfoNCELoss(tiny_model, temperature=GlobalDROTemperature())
    assert loss.has_state and loss.needs_global_batch and not loss.needs_dataset_indices
    assert {"objective.temperature.tau", "objective.temperature.u"} <= set(loss.state_dict())


def test_under_several_processes_a_global_tau_needs_gathering_and_a_schedule_does_not(monkeypatch, tiny_model):
    """A learned global tau would drift across ranks that each see their own batch; a schedule cannot."""
    from tempnlp.losses import InfoNCELoss
    from tempnlp.objectives import distributed
    from tempnlp.temperature import CosineScheduleTemperature

    monkeypatch.setattr(distributed, "distributed", lambda: True)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 2)
    anchors, positives = torch.randn(4, 6), torch.randn(4, 6)
    with pytest.raises(ValueError, match=r"own parameters.*gather_across_devices=True"):
        InfoNCE(GlobalDROTemperature())(anchors, [positives])
    schedule = CosineScheduleTemperature(0.03, 0.1, period_steps=10)
    schedule.set_progress(0)
    assert torch.isfinite(InfoNCE(schedule)(anchors, [positives]))
    loss = InfoNCELoss(tiny_model, temperature=CosineScheduleTemperature(0.03, 0.1, period_steps=10))
    assert loss.has_state and not loss.needs_global_batch  # its position is checkpointed; it learns nothing
