"""Every temperature policy on every objective, against a naive float64 reference written from the formulas.

The reference below shares no code with tempnlp: cosines, temperatures, row losses, SogCLR's moving averages and
the robust temperature gradient of IndividualTemperature / TempNetTemperature are written loop by loop on scalar
float64 tensors, with stop-gradients exactly where the formulas put them, so that autograd through it gives the
reference gradients. It reads from tempnlp only the values a module holds (the learnable parameter, TempNet's
weights, the initial per-sample temperature), never a computation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor

from tempnlp.objectives import DCL, InfoNCE, SogCLR
from tempnlp.temperature import (
    DySTreSSTemperature,
    FixedTemperature,
    Hardness,
    IndividualTemperature,
    LearnableTemperature,
    MACLTemperature,
    TempNetTemperature,
)

NUM_SAMPLES = 8
BATCH = 5
DIM = 6
QUEUE = 3
# Five batches of distinct dataset indices; every batch after the first revisits indices seen before.
INDEX_SETS = [[0, 1, 2, 3, 4], [3, 4, 5, 6, 7], [6, 7, 0, 1, 2], [1, 3, 5, 7, 0], [4, 2, 0, 6, 5]]
RTOL, ATOL = 1e-9, 1e-12

# ----------------------------------------------------------------------------------------------------------------
# The naive reference
# ----------------------------------------------------------------------------------------------------------------


def cos(u: Tensor, v: Tensor) -> Tensor:
    return (u * v).sum() / ((u * u).sum().sqrt() * (v * v).sum().sqrt())


def sg(x, stop: bool):
    """The stop-gradient of the formulas; ``stop=False`` removes it (to show the comparison would notice)."""
    return x.detach() if stop and isinstance(x, Tensor) else x


def clip(x: float, low: float, high: float) -> float:
    return max(low, min(high, x))


class RefPolicy:
    """tau of every entry of one direction's B x N block: ``taus(...)[i][j]``."""

    reweight = False
    robust = False  # Individual / TempNet: the robust temperature gradient G_i is computed for them
    hardness = 0.0  # LLaVE's alpha: alpha * stopgrad(s_ij) joins the forward direction's in-batch negatives' logits
    grad_clip = math.inf

    def __init__(self) -> None:
        self.raw_gradients: list[float] = []  # every G_i before its clip, to check that the clip was exercised

    def clipped(self, gradients: list[float]) -> list[float]:
        self.raw_gradients += gradients
        return [clip(g, -self.grad_clip, self.grad_clip) for g in gradients]

    def taus(self, direction, queries, sims, alignment, indices, training, stop):
        raise NotImplementedError

    def robust_step(self, direction, indices, gradients, training) -> Tensor | float:
        """Consume G_i (unclipped) of every row of a direction; return a zero-valued term carrying the policy's
        gradient."""
        return 0.0


class RefFixed(RefPolicy):
    def __init__(self, tau: float) -> None:
        super().__init__()
        self.tau = tau

    def taus(self, direction, queries, sims, alignment, indices, training, stop):
        return [[self.tau for _ in row] for row in sims]


class RefLearnable(RefPolicy):
    def __init__(self, log_inverse_tau: float) -> None:
        super().__init__()
        self.parameter = torch.tensor(log_inverse_tau, dtype=torch.float64, requires_grad=True)

    def taus(self, direction, queries, sims, alignment, indices, training, stop):
        tau = torch.exp(-self.parameter)
        return [[tau for _ in row] for row in sims]


class RefMACL(RefPolicy):
    def __init__(self, tau0: float, alpha: float, A0: float, min_tau: float, reweight: bool) -> None:
        super().__init__()
        self.tau0, self.alpha, self.A0, self.min_tau, self.reweight = tau0, alpha, A0, min_tau, reweight

    def taus(self, direction, queries, sims, alignment, indices, training, stop):
        tau = torch.clamp(self.tau0 * (1 + self.alpha * (alignment - self.A0)), min=self.min_tau)
        return [[tau for _ in row] for row in sims]


class RefDySTreSS(RefPolicy):
    def __init__(self, tau_min: float, tau_max: float) -> None:
        super().__init__()
        self.tau_min, self.tau_max = tau_min, tau_max

    def taus(self, direction, queries, sims, alignment, indices, training, stop):
        half = (self.tau_max - self.tau_min) / 2
        return [[self.tau_min + half * (1 + torch.cos(math.pi * (1 + sg(s, stop)))) for s in row] for row in sims]


class RefIndividual(RefPolicy):
    robust = True

    def __init__(self, tau_start, tau_init, tau_min, tau_max, rho, eta, beta, grad_clip, directions) -> None:
        super().__init__()
        self.tau = [[tau_start] * NUM_SAMPLES for _ in range(directions)]
        self.u = [[0.0] * NUM_SAMPLES for _ in range(directions)]
        self.seen = [[False] * NUM_SAMPLES for _ in range(directions)]
        self.tau_init, self.tau_min, self.tau_max = tau_init, tau_min, tau_max
        self.rho, self.eta, self.beta, self.grad_clip = rho, eta, beta, grad_clip

    def taus(self, direction, queries, sims, alignment, indices, training, stop):
        self.used = [self.tau[direction][k] if training else self.tau_init for k in indices]
        return [[tau for _ in row] for tau, row in zip(self.used, sims, strict=True)]

    def robust_step(self, direction, indices, gradients, training):
        if not training:
            return 0.0
        for k, tau, gradient in zip(indices, self.used, self.clipped(gradients), strict=True):
            self.u[direction][k] = (1 - self.beta) * self.u[direction][k] + self.beta * gradient
            self.tau[direction][k] = clip(tau - self.eta * self.u[direction][k], self.tau_min, self.tau_max)
            self.seen[direction][k] = True
        return 0.0


class RefTempNet(RefPolicy):
    robust = True

    def __init__(self, network, tau_min: float, tau_max: float, rho: float, grad_clip: float) -> None:
        super().__init__()
        self.w1, self.b1 = (p.detach().clone().requires_grad_() for p in network.hidden.parameters())
        self.w2, self.b2 = (p.detach().clone().requires_grad_() for p in network.output.parameters())
        self.tau_min, self.tau_max, self.rho, self.grad_clip = tau_min, tau_max, rho, grad_clip

    def parameters(self) -> list[Tensor]:
        return [self.w1, self.b1, self.w2, self.b2]

    def predict(self, query: Tensor) -> Tensor:
        hidden = [torch.relu((row * query).sum() + bias) for row, bias in zip(self.w1, self.b1, strict=True)]
        logit = sum(w * x for w, x in zip(self.w2[0], hidden, strict=True)) + self.b2[0]
        return self.tau_min + (self.tau_max - self.tau_min) * torch.sigmoid(logit)

    def taus(self, direction, queries, sims, alignment, indices, training, stop):
        self.predicted = [self.predict(sg(q, stop)) for q in queries]  # TempNet reads stopgrad(query)
        return [[tau.detach() for _ in row] for tau, row in zip(self.predicted, sims, strict=True)]

    def robust_step(self, direction, indices, gradients, training):
        if not training:
            return 0.0
        # d/dtheta of (1/B) sum_i G_i tau_i(theta), G_i a constant; its value is zero.
        gradients = self.clipped(gradients)
        batch = len(self.predicted)
        return sum(g * (tau - tau.detach()) for g, tau in zip(gradients, self.predicted, strict=True)) / batch


@dataclass
class RefObjective:
    kind: str  # "infonce", "dcl" or "sogclr"
    policy: RefPolicy
    sigma: float | None = None
    symmetric: bool = False
    anchor_negatives: bool = False
    gamma: float = 0.9

    def __post_init__(self) -> None:
        self.s: list[dict[int, float]] = [{}, {}]  # SogCLR's moving average per direction and dataset index

    def loss(self, anchors, columns, indices, extra=None, training=True, stop=True) -> Tensor:
        batch = anchors.size(0)
        anchors_, positives = list(anchors.unbind(0)), list(columns[0].unbind(0))
        documents = [row for column in columns for row in column.unbind(0)]
        extras = [] if extra is None else list(extra.unbind(0))
        positive_cosines = [cos(anchors_[i], positives[i]) for i in range(batch)]
        alignment = sg(sum(positive_cosines) / batch, stop)
        weights = [1.0] * batch
        if self.sigma is not None:
            normaliser = sum(torch.exp(s / self.sigma) for s in positive_cosines)
            weights = [sg(2 - batch * torch.exp(s / self.sigma) / normaliser, stop) for s in positive_cosines]

        directions = [(anchors_, documents + extras, anchors_)]
        if self.symmetric:
            directions.append((positives, anchors_, positives))
        total = 0.0
        for direction, (queries, candidates, own) in enumerate(directions):
            pool = candidates + (own if self.anchor_negatives else [])
            size = len(pool)
            sims = [[cos(q, c) for c in pool] for q in queries]
            taus = self.policy.taus(direction, queries, sims, alignment, indices, training, stop)
            # hardness (in-batch negatives): documents and queue entries but the row's own column entries
            offsets = [
                [
                    self.policy.hardness * sg(sims[i][j], stop)
                    if direction == 0
                    and j < len(documents) + len(extras)
                    and not (j < len(documents) and j % batch == i)
                    else 0.0
                    for j in range(size)
                ]
                for i in range(batch)
            ]
            losses, gradients, tau_term = [], [], 0.0
            for i in range(batch):
                excluded = set() if self.kind == "infonce" else {i}
                if self.anchor_negatives:
                    excluded.add(size - batch + i)  # the row's own entry in the added block
                members = [j for j in range(size) if j not in excluded]
                count = len(members)
                s, t = sims[i], taus[i]
                h = {j: s[j] - s[i] for j in members}
                o = offsets[i]
                if self.kind == "infonce":
                    log_partition = torch.log(sum(torch.exp(s[j] / t[j] + o[j]) for j in members))
                    row = log_partition - s[i] / t[i]
                    if self.policy.reweight:
                        probability = sg(torch.exp(s[i] / t[i] - log_partition), stop)
                        row = row * (1 / (1 - probability))
                    estimate = None
                elif self.kind == "dcl":
                    row = torch.log(sum(torch.exp(s[j] / t[j] + o[j]) for j in members)) - weights[i] * s[i] / t[i]
                    estimate = None
                else:
                    # margins of the scaled logits, in units of the positive's tau: h_ij / tau_i for one tau a row
                    t_i = float(t[i])
                    margin = {j: s[j] / float(t[j]) - s[i] / t_i for j in members}
                    k = indices[i]
                    g = float(sum(torch.exp(margin[j]) for j in members).detach()) / count
                    if training:
                        previous = self.s[direction].get(k)
                        estimate = g if previous is None else (1 - self.gamma) * previous + self.gamma * g
                        self.s[direction][k] = estimate
                    else:
                        estimate = g
                    p = {j: sg(torch.exp(margin[j]) / estimate, stop) for j in members}
                    row = t_i * sum(p[j] * margin[j] for j in members) / count
                    if isinstance(self.policy, RefLearnable):  # d/dtau of tau * log s at a fixed estimate
                        tau = t[i]
                        weighted = float(sum(p[j] * h[j] for j in members).detach()) / count
                        g0 = math.log(estimate) - weighted / tau.item()
                        tau_term = tau_term + g0 * (tau - tau.detach()) / batch
                losses.append(row)
                if self.policy.robust and training:  # from the unpenalised margins: the penalty is not seen
                    tau = float(t[i])
                    assert self.policy.rho < math.log(count), "choose rho below log(n_i) for a tau step"
                    margins = [h[j].item() for j in members]
                    if estimate is None:  # InfoNCE / DCL: this batch's estimate over the row's candidate set
                        estimate = sum(math.exp(x / tau) for x in margins) / count
                    weighted = sum(math.exp(x / tau) / estimate * x for x in margins) / count
                    gradients.append(math.log(estimate) + self.policy.rho - weighted / tau)
            if self.policy.robust and self.kind != "sogclr":
                # iSogCLR's objective is tau_i log s_i, with tau_i a constant; InfoNCE's and DCL's row loss is
                # log s_i at tau_i, so each is weighted by tau_i, over the starting tau (0.1 in every case here)
                losses = [row * (float(taus[i][0]) / 0.1) for i, row in enumerate(losses)]
            policy_term = self.policy.robust_step(direction, indices, gradients, training)
            # the directions are averaged: each direction's policy term carries a factor 1/2 when symmetric
            total = total + (sum(losses) / batch + tau_term + policy_term) / len(directions)
        return total


# ----------------------------------------------------------------------------------------------------------------
# The cases
# ----------------------------------------------------------------------------------------------------------------


def _individual():
    return IndividualTemperature(NUM_SAMPLES, tau_init=0.1, tau_min=0.05, tau_max=1.0, rho=0.3, eta=0.05, beta=0.8)


def _individual_clipped():
    return IndividualTemperature(
        NUM_SAMPLES, tau_init=0.1, tau_min=0.05, tau_max=1.0, rho=0.3, eta=0.05, beta=0.8, grad_clip=0.6
    )


def _tempnet():
    torch.manual_seed(0)
    policy = TempNetTemperature(DIM, hidden=16, tau_init=0.1, tau_min=0.05, tau_max=1.0, rho=0.3)
    torch.nn.init.normal_(policy.network.output.weight, std=0.5)  # so that tau varies across rows
    return policy


def _individual_reference(clip_at: float) -> Callable:
    def build(policy, directions):
        start = policy.state(0).tau
        assert torch.all(start == start[0]) and float(start[0]) == pytest.approx(0.1, rel=1e-7)
        return RefIndividual(float(start[0]), 0.1, 0.05, 1.0, 0.3, 0.05, 0.8, clip_at, directions)

    return build


def _with_hardness(reference: RefPolicy, strength: float) -> RefPolicy:
    reference.hardness = strength
    return reference


# name -> (tempnlp policy factory, reference factory(policy after .double(), number of directions))
POLICIES: dict[str, tuple[Callable, Callable]] = {
    "fixed": (lambda: FixedTemperature(0.05), lambda policy, n: RefFixed(0.05)),
    "learnable": (
        lambda: LearnableTemperature(init=0.07),
        lambda policy, n: RefLearnable(policy.log_inverse_tau.item()),  # the float32 value it holds
    ),
    "macl": (
        lambda: MACLTemperature(tau0=0.1, alpha=0.5, A0=0.2, min_tau=1e-4),
        lambda policy, n: RefMACL(0.1, 0.5, 0.2, 1e-4, reweight=False),
    ),
    "macl-reweight": (
        lambda: MACLTemperature(tau0=0.1, alpha=0.5, A0=0.2, min_tau=1e-4, reweight=True),
        lambda policy, n: RefMACL(0.1, 0.5, 0.2, 1e-4, reweight=True),
    ),
    "dystress": (lambda: DySTreSSTemperature(0.04, 0.05), lambda policy, n: RefDySTreSS(0.04, 0.05)),
    "individual": (_individual, _individual_reference(5.0)),
    "individual-clipped": (_individual_clipped, _individual_reference(0.6)),  # clips about half the rows
    "tempnet": (_tempnet, lambda policy, n: RefTempNet(policy.network, 0.05, 1.0, 0.3, 5.0)),
    "hardness-macl": (
        lambda: Hardness(MACLTemperature(tau0=0.1, alpha=0.5, A0=0.2, min_tau=1e-4), "in_batch_negatives", 2.0),
        lambda policy, n: _with_hardness(RefMACL(0.1, 0.5, 0.2, 1e-4, reweight=False), 2.0),
    ),
    "hardness-individual": (
        lambda: Hardness(_individual(), "in_batch_negatives", 2.0),
        lambda policy, n: _with_hardness(_individual_reference(5.0)(policy.policy, n), 2.0),
    ),
}

OBJECTIVES = {
    "infonce": lambda policy, symmetric, anchor_negatives: InfoNCE(
        policy, symmetric=symmetric, same_view_negatives=anchor_negatives
    ),
    "dcl": lambda policy, symmetric, anchor_negatives: DCL(
        policy, symmetric=symmetric, anchor_negatives=anchor_negatives
    ),
    "dclw": lambda policy, symmetric, anchor_negatives: DCL(
        policy, sigma=0.5, symmetric=symmetric, anchor_negatives=anchor_negatives
    ),
    "sogclr": lambda policy, symmetric, anchor_negatives: SogCLR(
        NUM_SAMPLES, temperature=policy, gamma=0.9, symmetric=symmetric, same_view_negatives=anchor_negatives
    ),
}


def _reference_objective(name, policy, symmetric, anchor_negatives=False) -> RefObjective:
    kind = {"infonce": "infonce", "dcl": "dcl", "dclw": "dcl", "sogclr": "sogclr"}[name]
    sigma = 0.5 if name == "dclw" else None
    return RefObjective(kind, policy, sigma=sigma, symmetric=symmetric, anchor_negatives=anchor_negatives)


def _pairs(policies=POLICIES, objectives=OBJECTIVES) -> list[tuple[str, str]]:
    """(policy, objective) pairs that are valid: MACL's reweighting is defined for InfoNCE only, and so is a tau
    trained by the loss's own gradient (see test_a_learnable_tau_is_refused_on_sogclr and _on_dcl); SogCLR refuses
    the hardness penalty, a logit offset its estimator does not take."""
    return [
        (p, o)
        for o in objectives
        for p in policies
        if (o == "infonce" or "reweight" not in p)
        and (o == "infonce" or p != "learnable")
        and not (p.startswith("hardness") and o == "sogclr")  # SogCLR takes no logit offset
    ]


def _stateful(policy: str, objective: str) -> bool:
    return "individual" in policy or objective == "sogclr"


def _batch(step: int, negatives: int, queue: bool):
    generator = torch.Generator().manual_seed(1000 + step)
    anchors = torch.randn(BATCH, DIM, generator=generator, dtype=torch.float64)
    positives = anchors + 0.7 * torch.randn(BATCH, DIM, generator=generator, dtype=torch.float64)
    columns = [positives] + [
        torch.randn(BATCH, DIM, generator=generator, dtype=torch.float64) for _ in range(negatives)
    ]
    extra = torch.randn(QUEUE, DIM, generator=generator, dtype=torch.float64) if queue else None
    return anchors, columns, extra


def _leaves(anchors, columns, extra):
    return (
        anchors.clone().requires_grad_(),
        [column.clone().requires_grad_() for column in columns],
        None if extra is None else extra.clone().requires_grad_(),
    )


def _grad(tensor: Tensor) -> Tensor:
    return tensor.grad if tensor.grad is not None else torch.zeros_like(tensor)


def _assert_close(actual: Tensor, expected: Tensor, what: str) -> None:
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=ATOL, msg=lambda message: f"{what}: {message}")


def _assert_gradient_close(actual: Tensor, expected: Tensor, what: str) -> None:
    assert expected.abs().max() > 1e-6, f"{what}: the reference gradient vanishes, the comparison would be vacuous"
    _assert_close(actual, expected, what)


def _build(policy_name, objective_name, symmetric, anchor_negatives=False):
    make_policy, make_reference = POLICIES[policy_name]
    objective = OBJECTIVES[objective_name](make_policy(), symmetric, anchor_negatives).double()
    directions = 2 if symmetric else 1
    reference_policy = make_reference(objective.temperature, directions)
    return objective, _reference_objective(objective_name, reference_policy, symmetric, anchor_negatives)


def _policy_parameters(objective, reference: RefObjective) -> list[tuple[str, Tensor, Tensor]]:
    """(name, tempnlp parameter, reference leaf) for the policies that have parameters."""
    policy = reference.policy
    if isinstance(policy, RefLearnable):
        return [("log_inverse_tau", objective.temperature.log_inverse_tau, policy.parameter)]
    if isinstance(policy, RefTempNet):
        network = objective.temperature.network
        ours = [network.hidden.weight, network.hidden.bias, network.output.weight, network.output.bias]
        names = ["hidden.weight", "hidden.bias", "output.weight", "output.bias"]
        return list(zip(names, ours, policy.parameters(), strict=True))
    return []


def _compare_state(objective, reference: RefObjective, step: int) -> None:
    policy = reference.policy
    if not isinstance(policy, RefIndividual):
        return
    ours = objective.temperature
    _assert_close(ours.tau, ours.state(0).tau, f"step {step}: .tau is direction 0's")
    for direction in range(len(policy.tau)):
        state = ours.state(direction)
        expected_tau = torch.tensor(policy.tau[direction], dtype=state.tau.dtype)
        expected_u = torch.tensor(policy.u[direction], dtype=state.u.dtype)
        _assert_close(state.tau, expected_tau, f"step {step}, direction {direction}: tau")
        _assert_close(state.u, expected_u, f"step {step}, direction {direction}: u")
        assert state.seen.tolist() == policy.seen[direction], f"step {step}, direction {direction}: seen"


def _run(policy_name, objective_name, symmetric, negatives, queue=False, anchor_negatives=False) -> None:
    objective, reference = _build(policy_name, objective_name, symmetric, anchor_negatives)
    steps = len(INDEX_SETS) if _stateful(policy_name, objective_name) else 1
    for step in range(steps):
        indices = INDEX_SETS[step]
        anchors, columns, extra = _batch(step, negatives, queue)
        ours = _leaves(anchors, columns, extra)
        theirs = _leaves(anchors, columns, extra)
        objective.zero_grad()
        for _, _, leaf in _policy_parameters(objective, reference):
            leaf.grad = None

        loss = objective(ours[0], ours[1], torch.tensor(indices), extra_negatives=ours[2])
        loss.backward()
        expected = reference.loss(theirs[0], theirs[1], indices, theirs[2])
        expected.backward()

        assert loss.item() == pytest.approx(expected.item(), rel=1e-9), f"step {step}: loss"
        _assert_gradient_close(_grad(ours[0]), _grad(theirs[0]), f"step {step}: d loss / d anchors")
        for position, (column, want) in enumerate(zip(ours[1], theirs[1], strict=True)):
            _assert_gradient_close(_grad(column), _grad(want), f"step {step}: d loss / d column {position}")
        if queue:
            _assert_gradient_close(_grad(ours[2]), _grad(theirs[2]), f"step {step}: d loss / d extra_negatives")
        for name, parameter, leaf in _policy_parameters(objective, reference):
            _assert_gradient_close(_grad(parameter), _grad(leaf), f"step {step}: d / d {name}")
        _compare_state(objective, reference, step)

    policy = reference.policy
    if isinstance(policy, RefIndividual):  # the temperatures did become individual: the comparison has teeth
        assert len({round(tau, 12) for tau in policy.tau[-1]}) > 2
        if policy.grad_clip < 5.0:  # the clipped variant (not the default 5.0) clips some rows and not others
            assert any(abs(g) > policy.grad_clip for g in policy.raw_gradients)
            assert any(abs(g) < policy.grad_clip for g in policy.raw_gradients)
    if isinstance(policy, RefTempNet):
        predicted = torch.stack([tau.detach() for tau in policy.predicted])
        assert float(predicted.max() - predicted.min()) > 0.01


# ----------------------------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("negatives", [0, 1])
@pytest.mark.parametrize("symmetric", [False, True], ids=["one-way", "symmetric"])
@pytest.mark.parametrize("policy,objective", _pairs())
def test_policy_on_objective_matches_reference(policy, objective, symmetric, negatives):
    """Loss, gradients w.r.t. every input and the policy's parameters, and the per-sample state, step by step."""
    _run(policy, objective, symmetric, negatives)


@pytest.mark.parametrize("symmetric", [False, True], ids=["one-way", "symmetric"])
@pytest.mark.parametrize("policy,objective", _pairs())
def test_queue_negatives_serve_the_forward_direction(policy, objective, symmetric):
    _run(policy, objective, symmetric, negatives=0, queue=True)


@pytest.mark.parametrize("symmetric", [False, True], ids=["one-way", "symmetric"])
@pytest.mark.parametrize("policy,objective", _pairs())
def test_same_view_negatives(policy, objective, symmetric):
    """DCL's anchor_negatives (same_view_negatives of InfoNCE and SogCLR): the other anchors join the forward
    candidates, the other positives the backward ones, the row's own entry excluded."""
    _run(policy, objective, symmetric, negatives=1, anchor_negatives=True)


@pytest.mark.parametrize("objective_name", list(OBJECTIVES))
@pytest.mark.parametrize("policy_name", ["individual", "tempnet", "fixed"])
def test_evaluation_reads_and_writes_no_state(policy_name, objective_name):
    """Under no_grad Individual uses tau_init, SogCLR its batch estimate (s_k = g_i), and no buffer changes."""
    objective, _ = _build(policy_name, objective_name, symmetric=True)
    for step in range(3):  # move the state away from its start
        anchors, columns, _ = _batch(step, 1, False)
        objective(anchors, columns, torch.tensor(INDEX_SETS[step]))
    before = {key: value.clone() for key, value in objective.state_dict().items()}
    anchors, columns, _ = _batch(7, 1, False)
    fresh = _build(policy_name, objective_name, symmetric=True)[1]  # a reference without any state (same TempNet)
    with torch.no_grad():
        loss = objective(anchors, columns, torch.tensor(INDEX_SETS[3]))
        expected = fresh.loss(anchors, columns, INDEX_SETS[3], training=False)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-9)
    for key, value in objective.state_dict().items():
        assert torch.equal(value, before[key]), key


# A stop-gradient taken out of the reference changes the gradient it gives, by far more than the tolerance: the
# comparison above would notice one missing (or one too many) in tempnlp.
SENSITIVITY = [
    ("dystress", "infonce"),  # DySTreSS's input
    ("dystress", "sogclr"),  # and SogCLR's p_ij
    ("macl", "dcl"),  # MACL's alignment A
    ("macl-reweight", "infonce"),  # MACL's alignment and its 1 / (1 - P_i) weights
    ("fixed", "dclw"),  # DCLW's weights
    ("fixed", "sogclr"),  # SogCLR's p_ij
    ("tempnet", "infonce"),  # TempNet's input
    ("hardness-macl", "infonce"),  # the hardness penalty
]


@pytest.mark.parametrize("policy_name,objective_name", SENSITIVITY)
def test_a_missing_stop_gradient_would_be_detected(policy_name, objective_name):
    objective, reference = _build(policy_name, objective_name, symmetric=True)
    _, leaky = _build(policy_name, objective_name, symmetric=True)
    anchors, columns, _ = _batch(0, 1, False)
    indices = INDEX_SETS[0]
    ours, exact, without = (_leaves(anchors, columns, None) for _ in range(3))
    objective(ours[0], ours[1], torch.tensor(indices)).backward()
    reference.loss(exact[0], exact[1], indices).backward()
    leaky.loss(without[0], without[1], indices, stop=False).backward()
    gradients = [
        torch.cat([x[0].grad.reshape(-1), *(c.grad.reshape(-1) for c in x[1])]) for x in (ours, exact, without)
    ]
    _assert_close(gradients[0], gradients[1], "with the stop-gradients")
    difference = (gradients[0] - gradients[2]).abs().max().item()
    assert difference > 1e-4 * gradients[0].abs().max().item(), f"only {difference:.3g} apart"


def test_a_learnable_tau_is_refused_on_sogclr():
    """SogCLR's objective tau * log s has the derivative -KL(p || uniform) <= 0 in tau: descent only raises tau.
    The reference shows it (the gradient of a learnable tau is never positive), and the combination is refused."""
    generator = torch.Generator().manual_seed(5)
    gradients = []
    for tau_value in (0.02, 0.05, 0.2, 1.0):
        gaps = torch.randn(6, 9, generator=generator, dtype=torch.float64) * 0.3  # h_ij of 6 rows, 9 negatives
        tau = torch.tensor(tau_value, dtype=torch.float64, requires_grad=True)
        (tau * torch.log(torch.exp(gaps / tau).mean(dim=1))).mean().backward()
        gradients.append(tau.grad.item())
    assert all(gradient <= 1e-15 for gradient in gradients) and min(gradients) < -1e-3
    with pytest.raises(ValueError, match=r"KL\(p \|\| uniform\) <= 0 in tau: the temperature would only grow"):
        OBJECTIVES["sogclr"](POLICIES["learnable"][0](), False, False)


def test_a_learnable_tau_is_refused_on_dcl():
    """DCL's row loss lse_{j != i}(s_ij / tau) - w_i s_ii / tau (w_i = 1; DCLW's weights otherwise) has a derivative
    in tau of at least (w_i s_ii - max_j s_ij) / tau^2: once the (weighted) positives beat the hardest negative on
    average, descent lowers tau at every scale and the loss falls without bound. InfoNCE's derivative
    sum_j p_ij (s_ii - s_ij) / tau^2 turns negative at small tau in a row whose hardest negative beats its positive,
    and the same batch has one. The references show both; DCL, DCLW and a Hardness around a learnable tau on DCL
    refuse the combination."""
    generator = torch.Generator().manual_seed(11)
    positives = 0.7 + 0.2 * torch.rand(6, generator=generator, dtype=torch.float64)
    negatives = 0.1 + 0.4 * torch.rand(6, 9, generator=generator, dtype=torch.float64)
    negatives[0, 3] = positives[0] + 0.05  # one hard row; the batch's mean margin stays positive
    dclw_weights = 2.0 - 6 * torch.softmax(positives / 0.5, dim=0)  # detached, mean 1
    hardest = negatives.max(dim=1).values
    assert (positives - hardest).mean() > 0 and (dclw_weights * positives - hardest).mean() > 0
    losses = {"dcl": [], "dclw": [], "infonce": []}  # the batch loss at each tau, as derivative() computes it

    def derivative(kind: str, tau_value: float) -> float:
        tau = torch.tensor(tau_value, dtype=torch.float64, requires_grad=True)
        rows = []
        for i in range(6):
            partition = negatives[i] / tau
            weight = dclw_weights[i] if kind == "dclw" else 1.0
            if kind == "infonce":
                partition = torch.cat([(positives[i] / tau).reshape(1), partition])
            rows.append(torch.logsumexp(partition, dim=0) - weight * positives[i] / tau)
        (loss := torch.stack(rows).mean()).backward()
        losses[kind].append(loss.item())
        return tau.grad.item()

    taus = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 2.0)
    for kind in ("dcl", "dclw"):
        assert all(derivative(kind, t) > 0 for t in taus), kind  # descent lowers tau at every scale
        assert losses[kind][0] < 2 * losses[kind][1] < 0, kind  # ~ -(mean margin) / tau: unbounded below
    infonce = [derivative("infonce", t) for t in taus]
    assert infonce[0] < 0 < infonce[-1] and min(losses["infonce"]) >= 0
    for name in ("dcl", "dclw"):
        with pytest.raises(ValueError, match=r"DCL's does once the positives \(DCLW: weighted by w_i\) beat"):
            OBJECTIVES[name](POLICIES["learnable"][0](), False, False)
    with pytest.raises(ValueError, match=r"Hardness.* is, or holds, a tau trained by the loss's own gradient"):
        DCL(Hardness(LearnableTemperature()))


@pytest.mark.parametrize("objective_name", ["dcl", "dclw", "sogclr"])
def test_macl_reweighting_is_refused_outside_infonce(objective_name):
    with pytest.raises(ValueError):
        OBJECTIVES[objective_name](POLICIES["macl-reweight"][0](), False, False)
