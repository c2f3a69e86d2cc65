"""The paper's unimodal iSogCLR: two views of each sample, 2B - 2 negatives per row, one tau_i and one s_i per
sample shared by both views (SogCLR(symmetric, same_view_negatives, share_directions) with
IndividualTemperature(share_directions)), against a naive float64 reference written from the formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tempnlp.losses import SogCLRLoss
from tempnlp.objectives import SogCLR
from tempnlp.temperature import IndividualTemperature

NUM_SAMPLES, BATCH, DIM = 10, 5, 6
TAU_INIT, TAU_MIN, TAU_MAX, GAMMA, RHO, ETA, BETA = 0.1, 0.05, 1.0, 0.9, 0.3, 0.05, 0.8


class NaiveUnimodal:
    def __init__(self, clip: float | None) -> None:
        self.tau = [float(torch.tensor(TAU_INIT, dtype=torch.float32))] * NUM_SAMPLES
        self.s: list[float | None] = [None] * NUM_SAMPLES
        self.u = [0.0] * NUM_SAMPLES
        self.clip = clip

    def step(self, anchors: torch.Tensor, positives: torch.Tensor, indices: list[int]) -> torch.Tensor:
        a, p = F.normalize(anchors, dim=1), F.normalize(positives, dim=1)
        views = [(a, p), (p, a)]  # direction 0: anchors against positives and anchors; direction 1: the reverse
        total = anchors.new_zeros(())
        updates = []
        for i, k in enumerate(indices):
            tau, previous = self.tau[k], self.s[k]
            row_losses, gradients, estimates = [], [], []
            for queries, others in views:
                positive = queries[i] @ others[i]
                gaps = [queries[i] @ others[j] - positive for j in range(BATCH) if j != i]
                gaps += [queries[i] @ queries[j] - positive for j in range(BATCH) if j != i]
                n = len(gaps)
                g = sum(math.exp(x.item() / tau) for x in gaps) / n
                s = g if previous is None else (1 - GAMMA) * previous + GAMMA * g
                weights = [math.exp(x.item() / tau) / s for x in gaps]
                row_losses.append(sum(w * x for w, x in zip(weights, gaps, strict=True)) / n)
                gradients.append(
                    math.log(s) + RHO - sum(w * x.item() for w, x in zip(weights, gaps, strict=True)) / n / tau
                )
                estimates.append(s)
            total = total + 0.5 * (row_losses[0] + row_losses[1])
            gradient = 0.5 * (gradients[0] + gradients[1])
            if self.clip is not None:
                gradient = max(-self.clip, min(self.clip, gradient))
            u = (1 - BETA) * self.u[k] + BETA * gradient
            updates.append((k, 0.5 * (estimates[0] + estimates[1]), u, min(TAU_MAX, max(TAU_MIN, tau - ETA * u))))
        for k, s, u, tau in updates:
            self.s[k], self.u[k], self.tau[k] = s, u, tau
        return total / BATCH


@pytest.mark.parametrize("built_as", ["objective", "loss"])
@pytest.mark.parametrize("clip", [5.0, 0.2])
def test_unimodal_isogclr_shares_tau_and_s_between_the_two_views(clip, built_as, request):
    policy = IndividualTemperature(NUM_SAMPLES, TAU_INIT, TAU_MIN, TAU_MAX, RHO, ETA, BETA, clip, share_directions=True)
    options = dict(gamma=GAMMA, symmetric=True, same_view_negatives=True, share_directions=True)
    if built_as == "objective":
        objective = SogCLR(NUM_SAMPLES, policy, **options).double()
    else:  # the README's form: SogCLRLoss passes share_directions to its objective
        model = request.getfixturevalue("tiny_model")
        objective = SogCLRLoss(model, NUM_SAMPLES, temperature=policy, **options).objective.double()
    naive = NaiveUnimodal(clip)
    generator = torch.Generator().manual_seed(3)
    for step in range(6):
        indices = torch.randperm(NUM_SAMPLES, generator=generator)[:BATCH]
        anchors = torch.randn(BATCH, DIM, generator=generator, dtype=torch.float64)
        positives = anchors + 0.5 * torch.randn(BATCH, DIM, generator=generator, dtype=torch.float64)
        ours = [anchors.clone().requires_grad_(), positives.clone().requires_grad_()]
        theirs = [anchors.clone().requires_grad_(), positives.clone().requires_grad_()]
        loss = objective(ours[0], [ours[1]], indices)
        loss.backward()
        expected = naive.step(theirs[0], theirs[1], indices.tolist())
        expected.backward()
        assert loss.item() == pytest.approx(expected.item(), rel=1e-10), f"step {step}"
        for mine, reference in zip(ours, theirs, strict=True):
            torch.testing.assert_close(mine.grad, reference.grad, rtol=1e-9, atol=1e-12)
        assert policy.tau.tolist() == pytest.approx(naive.tau, rel=1e-6)
        assert policy.state(0).u.tolist() == pytest.approx(naive.u, rel=1e-6, abs=1e-7)
        assert policy.state(1) is policy.state(0) and len(objective.estimates) == 1
        seen = [s is not None for s in naive.s]
        stored = objective.estimates[0].s.tolist()
        assert [stored[k] for k in range(NUM_SAMPLES) if seen[k]] == pytest.approx(
            [s for s in naive.s if s is not None], rel=1e-6
        )
    assert len(set(policy.tau.tolist())) >= 3  # the temperatures moved apart


def test_shared_directions_need_two():
    with pytest.raises(ValueError, match="needs symmetric=True"):
        SogCLR(NUM_SAMPLES, 0.1, share_directions=True)
