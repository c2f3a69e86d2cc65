"""iSogCLR / SogCLR against a naive per-row implementation of the six steps, written here in plain floats."""

from __future__ import annotations

import math

import pytest
import torch
from reference import cosine

from tempnlp.objectives.isogclr import ISogCLR


class NaiveISogCLR:
    """The algorithm exactly as specified, one row at a time, in Python floats (float64)."""

    def __init__(self, n, tau_init, tau_min, tau_max, gamma, rho, eta, beta, grad_clip, learn):
        # A learned tau lives in a float32 buffer (the test then moves it to float64): start from the same value.
        # SogCLR's fixed tau is a FixedTemperature, exact in the similarities' dtype.
        self.tau = [float(torch.tensor(tau_init, dtype=torch.float32)) if learn else tau_init] * n
        self.s = [None] * n
        self.u = [0.0] * n
        self.p = dict(tau_min=tau_min, tau_max=tau_max, gamma=gamma, rho=rho, eta=eta, beta=beta, clip=grad_clip)
        self.learn = learn

    def step(self, queries, documents, indices):
        """Returns the loss value; ``documents`` is the flat list of every document column, positives first."""
        p = self.p
        batch = len(queries)
        total = 0.0
        updates = []
        for i, k in enumerate(indices):
            sims = [cosine(queries[i], d) for d in documents]
            h = [sims[j] - sims[i] for j in range(len(documents)) if j != i]
            n = len(h)
            tau = self.tau[k]  # 1. before the update
            g = sum(math.exp(x / tau) for x in h) / n  # 2.
            self.s[k] = g if self.s[k] is None else (1 - p["gamma"]) * self.s[k] + p["gamma"] * g  # 3.
            weights = [math.exp(x / tau) / self.s[k] for x in h]  # 4.
            row = sum(w * x for w, x in zip(weights, h, strict=True)) / n
            total += row
            if self.learn:
                grad = math.log(self.s[k]) + p["rho"] - sum(w * x for w, x in zip(weights, h, strict=True)) / n / tau
                if p["clip"] is not None:
                    grad = max(-p["clip"], min(p["clip"], grad))  # 5.
                self.u[k] = (1 - p["beta"]) * self.u[k] + p["beta"] * grad  # 6.
                updates.append((k, min(p["tau_max"], max(p["tau_min"], tau - p["eta"] * self.u[k]))))
        for k, tau in updates:
            self.tau[k] = tau
        return total / batch


SETTINGS = [
    dict(tau_init=0.1, tau_min=0.05, tau_max=1.0, gamma=0.9, rho=0.3, eta=0.03, beta=0.8, grad_clip=5.0, learn=True),
    dict(tau_init=0.2, tau_min=0.05, tau_max=0.5, gamma=0.5, rho=1.0, eta=0.5, beta=0.5, grad_clip=None, learn=True),
    dict(tau_init=0.1, tau_min=0.05, tau_max=1.0, gamma=0.9, rho=0.3, eta=0.01, beta=0.8, grad_clip=0.05, learn=True),
    dict(tau_init=0.1, tau_min=0.05, tau_max=1.0, gamma=0.9, rho=0.3, eta=0.01, beta=0.8, grad_clip=5.0, learn=False),
]


@pytest.mark.parametrize("negatives", [0, 1])
@pytest.mark.parametrize("setting", SETTINGS, ids=["default", "strong", "clipped", "sogclr"])
def test_isogclr_matches_naive_six_steps_over_revisited_indices(setting, negatives):
    num_samples, batch, dim = 10, 4, 6
    generator = torch.Generator().manual_seed(0)
    objective = ISogCLR(
        num_samples,
        **{key: value for key, value in setting.items() if key != "learn"},
        learn_temperature=setting["learn"],
    ).double()
    naive = NaiveISogCLR(
        num_samples,
        *(setting[k] for k in ("tau_init", "tau_min", "tau_max", "gamma", "rho", "eta", "beta", "grad_clip", "learn")),
    )
    for step in range(8):  # batches overlap, so every index is revisited with its state
        indices = torch.randperm(num_samples, generator=generator)[:batch]
        queries = torch.randn(batch, dim, generator=generator, dtype=torch.float64)
        columns = [queries + 0.5 * torch.randn(batch, dim, generator=generator, dtype=torch.float64)]
        columns += [torch.randn(batch, dim, generator=generator, dtype=torch.float64) for _ in range(negatives)]
        loss = objective(queries, columns, indices)
        expected = naive.step(queries.tolist(), [d for c in columns for d in c.tolist()], indices.tolist())
        assert loss.item() == pytest.approx(expected, rel=1e-9, abs=1e-12), f"step {step}"
        assert objective.tau.tolist() == pytest.approx(naive.tau, rel=1e-6), f"step {step}"
        assert objective.query_state.u.tolist() == pytest.approx(naive.u, rel=1e-6, abs=1e-7)
        seen = [s is not None for s in naive.s]
        assert objective.query_state.seen.tolist() == seen
        s = objective.query_state.s.tolist()
        assert [s[k] for k in range(num_samples) if seen[k]] == pytest.approx(
            [v for v in naive.s if v is not None], rel=1e-6
        )
    if setting["learn"]:
        assert len(set(objective.tau.tolist())) > 2  # temperatures became individual
    else:
        assert set(objective.tau.tolist()) == {naive.tau[0]}  # SogCLR: one fixed temperature


def test_gradient_flows_through_h_only():
    """d loss / d embeddings equals the gradient of mean_i (1/n_i) sum_j p_ij h_ij with p held fixed."""
    torch.manual_seed(0)
    queries = torch.randn(5, 8, dtype=torch.float64, requires_grad=True)
    documents = torch.randn(5, 8, dtype=torch.float64, requires_grad=True)
    indices = torch.arange(5)
    objective = ISogCLR(5, rho=0.3).double()
    loss = objective(queries, documents, indices)
    loss.backward()
    # Replay with the weights frozen from the objective's own state after the step.
    with torch.no_grad():
        q, d = torch.nn.functional.normalize(queries, dim=1), torch.nn.functional.normalize(documents, dim=1)
        h = q @ d.T - (q * d).sum(1, keepdim=True)
        tau = torch.full((5,), 0.1, dtype=torch.float64)
        mask = ~torch.eye(5, dtype=torch.bool)
        weights = torch.exp(h / tau[:, None]) / objective.query_state.s[:, None].double() * mask
    q2 = queries.detach().clone().requires_grad_()
    d2 = documents.detach().clone().requires_grad_()
    qn, dn = torch.nn.functional.normalize(q2, dim=1), torch.nn.functional.normalize(d2, dim=1)
    h2 = qn @ dn.T - (qn * dn).sum(1, keepdim=True)
    ((weights * h2).sum(1) / 4).mean().backward()
    torch.testing.assert_close(queries.grad, q2.grad)
    torch.testing.assert_close(documents.grad, d2.grad)


def test_symmetric_keeps_a_separate_document_state():
    torch.manual_seed(0)
    objective = ISogCLR(8, symmetric=True, eta=0.05)
    for _ in range(3):
        objective(torch.randn(4, 6), torch.randn(4, 6), torch.randperm(8)[:4])
    assert objective.document_state is not None
    assert not torch.equal(objective.query_state.tau, objective.document_state.tau)


def test_buffers_stay_float32_under_bf16_autocast():
    torch.manual_seed(0)
    encoder = torch.nn.Linear(16, 32)
    objective = ISogCLR(8, tau_min=0.05)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = objective(encoder(torch.randn(4, 16)), encoder(torch.randn(4, 16)), torch.arange(4))
    loss.backward()
    assert torch.isfinite(loss)
    for buffer in (objective.tau, objective.query_state.log_s, objective.query_state.u):
        assert buffer.dtype == torch.float32 and torch.isfinite(buffer).all()


def test_state_round_trips_through_state_dict():
    torch.manual_seed(0)
    objective = ISogCLR(8)
    objective(torch.randn(4, 6), torch.randn(4, 6), torch.arange(4))
    restored = ISogCLR(8)
    restored.load_state_dict(objective.state_dict())
    for name, buffer in objective.state_dict().items():
        assert torch.equal(buffer, restored.state_dict()[name]), name


def test_bad_inputs_are_clear_errors():
    objective = ISogCLR(6)
    q, d = torch.randn(4, 5), torch.randn(4, 5)
    with pytest.raises(ValueError, match="needs the dataset index of every row"):
        objective(q, d, None)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 6\)"):
        objective(q, d, torch.tensor([0, 1, 2, 6]))
    with pytest.raises(ValueError, match="Duplicate dataset indices"):
        objective(q, d, torch.tensor([0, 1, 1, 2]))
    with pytest.raises(ValueError, match="one entry per row"):
        objective(q, d, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"rho \(1.5\) must be below log\(number of negatives\) = log\(3\)"):
        ISogCLR(6, rho=1.5)(q, d, torch.arange(4))
    bad = q.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="Non-finite"):
        objective(bad, d, torch.arange(4))
    with pytest.raises(ValueError, match=r"tau_init \(0.01\) must lie in \[tau_min, tau_max\]"):
        ISogCLR(6, tau_init=0.01)
    with pytest.raises(ValueError, match="gamma is a moving-average weight"):
        ISogCLR(6, gamma=0.0)
    with pytest.raises(ValueError, match="num_samples must be a positive int"):
        ISogCLR(0)


class LeafTemperatures(torch.nn.Module):
    """A stand-in temperature network whose outputs are leaf parameters: their .grad is d loss / d tau_i."""

    def __init__(self, values: list[float]) -> None:
        super().__init__()
        self.values = torch.nn.Parameter(torch.tensor(values, dtype=torch.float64))

    def forward(self, embeddings):
        return self.values


def test_temperature_network_gets_the_robust_gradient():
    """With TempNet, tau_i comes from the network and its gradient is G_i / B, G_i as in step 5."""
    torch.manual_seed(1)
    batch, dim = 4, 6
    queries = torch.randn(batch, dim, dtype=torch.float64)
    documents = torch.randn(batch, dim, dtype=torch.float64)
    taus = [0.08, 0.12, 0.3, 0.6]
    network = LeafTemperatures(taus)
    objective = ISogCLR(8, rho=0.5, grad_clip=None, temperature_network=network).double()
    loss = objective(queries, documents, torch.arange(batch))
    loss.backward()
    for i, tau in enumerate(taus):
        sims = [cosine(queries[i].tolist(), d) for d in documents.tolist()]
        h = [sims[j] - sims[i] for j in range(batch) if j != i]
        s = sum(math.exp(x / tau) for x in h) / len(h)  # first visit: s = g
        weights = [math.exp(x / tau) / s for x in h]
        grad = math.log(s) + 0.5 - sum(w * x for w, x in zip(weights, h, strict=True)) / len(h) / tau
        assert network.values.grad[i].item() == pytest.approx(grad / batch, rel=1e-9)
    assert objective.tau[:batch].tolist() == pytest.approx(taus)  # the buffer records the predictions


def test_tempnet_predicts_bounded_temperatures_starting_at_tau_init():
    from tempnlp.objectives.isogclr import TempNet

    network = TempNet(6, 16, tau_init=0.1, tau_min=0.05, tau_max=1.0)
    tau = network(torch.randn(5, 6))
    assert tau.shape == (5,) and torch.allclose(tau, torch.full((5,), 0.1))
    with torch.no_grad():
        network.output.weight.normal_(0, 10.0)
    tau = network(torch.randn(100, 6))
    assert (tau >= 0.05).all() and (tau <= 1.0).all() and tau.std() > 0.01


def test_rho_is_checked_against_the_document_direction_too():
    """Symmetric: documents have only the other B - 1 queries as negatives, even with hard-negative columns."""
    q, d, n = torch.randn(4, 5), torch.randn(4, 5), torch.randn(4, 5)
    ISogCLR(6, rho=1.5)(q, [d, n], torch.arange(4))  # log(7) = 1.95: fine one-directional
    with pytest.raises(ValueError, match=r"log\(number of negatives\) = log\(3\)"):
        ISogCLR(6, rho=1.5, symmetric=True)(q, [d, n], torch.arange(4))


def test_evaluation_neither_reads_nor_writes_the_state():
    """An evaluation batch's 'label' column (NLI labels, say) is no index into the training samples: evaluation
    uses tau_init and its own batch estimate, whatever indices come with it, and changes no buffer."""
    torch.manual_seed(0)
    objective = ISogCLR(8, eta=0.05, rho=0.3)
    for _ in range(3):
        objective(torch.randn(4, 6), torch.randn(4, 6), torch.arange(4))
    assert not torch.allclose(objective.tau[:4], torch.full((4,), objective.tau_init))  # the state has moved
    before = {k: v.clone() for k, v in objective.state_dict().items()}
    queries, documents = torch.randn(4, 6), torch.randn(4, 6)
    stateless = ISogCLR(8, eta=0.05, rho=0.3)
    with torch.no_grad():
        expected = stateless(queries, documents, None)
        for labels in (torch.arange(4), torch.tensor([0, 1, 0, 2]), None):  # indices, NLI labels, none
            assert torch.equal(objective(queries, documents, labels), expected)
        assert torch.isfinite(objective(torch.randn(2, 6), torch.randn(2, 6), None))  # log(1) <= rho: no tau step
    for key, value in objective.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_a_short_trailing_batch_trains_without_updating_tau():
    torch.manual_seed(0)
    objective = ISogCLR(10, rho=0.3)
    objective(torch.randn(4, 6), torch.randn(4, 6), torch.arange(4))
    tau = objective.tau.clone()
    queries = torch.randn(2, 6, requires_grad=True)
    loss = objective(queries, torch.randn(2, 6), torch.tensor([4, 5]))  # log(1) = 0 <= rho
    loss.backward()
    assert queries.grad is not None
    assert torch.equal(objective.tau, tau) and objective.query_state.seen[[4, 5]].all()
    with pytest.raises(ValueError, match="must be below log"):
        ISogCLR(10, rho=0.3)(torch.randn(2, 6), torch.randn(2, 6), torch.tensor([0, 1]))  # first batch: misconfigured
    ISogCLR(10, learn_temperature=False)(torch.randn(2, 6), torch.randn(2, 6), torch.tensor([0, 1]))  # SogCLR: no rho


@pytest.mark.parametrize("policy", ["individual", "global-dro", "tempnet"])
def test_a_run_resumed_just_before_the_short_trailing_batch_takes_it_as_the_uninterrupted_run(policy):
    """The largest batch seen travels with the loss state: without it, the restored run would take its first
    batch, the epoch's short remainder, for a misconfigured rho and stop."""
    from tempnlp.objectives import SogCLR
    from tempnlp.temperature import GlobalDROTemperature, IndividualTemperature, TempNetTemperature

    def objective() -> SogCLR:
        torch.manual_seed(0)
        made = {
            "individual": lambda: IndividualTemperature(10, rho=0.3),
            "global-dro": lambda: GlobalDROTemperature(rho=0.3),
            "tempnet": lambda: TempNetTemperature(6, rho=0.3),
        }[policy]()
        return SogCLR(10, made)

    torch.manual_seed(1)
    batches = [(torch.randn(4, 6), torch.randn(4, 6), torch.arange(4 * k, 4 * k + 4)) for k in range(2)]
    short = (torch.randn(2, 6), torch.randn(2, 6), torch.tensor([8, 9]))  # log(1) <= rho: no tau step
    uninterrupted = objective()
    for batch in batches:
        uninterrupted(*batch)
    saved = {key: value.clone() for key, value in uninterrupted.state_dict().items()}
    uninterrupted(*short)
    resumed = objective()
    resumed.load_state_dict(saved)
    resumed(*short)
    for key, value in uninterrupted.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    with pytest.raises(ValueError, match="must be below log"):
        objective()(*short)  # a first batch that small is a misconfiguration


def test_tempnet_records_the_tau_it_predicts_for_a_short_trailing_batch():
    from tempnlp.objectives.isogclr import TempNet

    torch.manual_seed(0)
    network = TempNet(6, 16, tau_init=0.1, tau_min=0.05, tau_max=1.0)
    with torch.no_grad():  # away from its start, where it predicts tau_init for everything
        for parameter in network.parameters():
            parameter.add_(torch.randn_like(parameter))
    objective = ISogCLR(10, rho=0.3, temperature_network=network)
    objective(torch.randn(4, 6), torch.randn(4, 6), torch.arange(4))
    queries = torch.randn(2, 6)
    objective(queries, torch.randn(2, 6), torch.tensor([4, 5]))  # log(1) = 0 <= rho: the network takes no step
    with torch.no_grad():
        predicted = network(queries).float()
        assert not torch.allclose(predicted, torch.full_like(predicted, 0.1))
        assert torch.allclose(objective.tau[[4, 5]], predicted)
    assert objective.query_state.seen[[4, 5]].all() and len(objective.last_temperatures) == 1


def test_the_kl_of_eval_isogclr_rho_is_the_rho_at_which_the_objective_leaves_tau_unchanged():
    """eval/isogclr_rho.py reads a stationary rho off KL(w || uniform): with rho set to that KL, the first step
    leaves tau where it was; a smaller rho raises it, a larger one lowers it."""
    from eval.isogclr_rho import kl_to_uniform

    generator = torch.Generator().manual_seed(3)
    anchors, positives, negatives = (torch.randn(8, 16, generator=generator) for _ in range(3))
    normalized = [torch.nn.functional.normalize(x, dim=1) for x in (anchors, positives, negatives)]
    tau = 0.1
    kl = kl_to_uniform(*normalized, tau)

    # naive: row by row, the softmax over the 15 negatives and its KL to the uniform weighting
    for i in range(8):
        candidates = torch.cat([normalized[1], normalized[2]])
        margins = [(normalized[0][i] @ candidates[j] - normalized[0][i] @ normalized[1][i]) / tau for j in range(16)]
        weights = torch.softmax(torch.stack([m for j, m in enumerate(margins) if j != i]), dim=0)
        assert kl[i].item() == pytest.approx(float((weights * (weights * 15).log()).sum()), abs=1e-5)

    for shift, direction in ((0.0, 0), (-0.2, 1), (0.2, -1)):
        row = 0
        objective = ISogCLR(8, tau_init=tau, tau_min=0.01, tau_max=1.0, rho=kl[row].item() + shift, eta=0.1, beta=1.0)
        objective(anchors, [positives, negatives], torch.arange(8))
        change = objective.tau[row].item() - tau
        if direction == 0:
            assert change == pytest.approx(0.0, abs=1e-5)
        else:
            assert change * direction > 0 and abs(change) == pytest.approx(0.1 * 0.2, rel=1e-3)
