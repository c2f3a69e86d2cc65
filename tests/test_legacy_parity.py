"""Old versus new: the compositions that replaced the iSogCLR objective give its numbers, and read its checkpoints.

The old side is tests/legacy_isogclr.py, a frozen copy of the objective before per-sample temperature became a
policy. Every configuration the comparison grids ran with per-sample state is replayed over several steps with
revisited indices: loss, the gradients of every embedding and of TempNet's weights, and every state buffer.
"""

from __future__ import annotations

import copy

import pytest
import torch
from legacy_isogclr import ISogCLR as LegacyISogCLR
from legacy_isogclr import TempNet as LegacyTempNet

from tempnlp.objectives import ISogCLR, SogCLR
from tempnlp.objectives.isogclr import TempNet
from tempnlp.temperature import FixedTemperature, IndividualTemperature, TempNetTemperature

NUM_SAMPLES, BATCH, DIM = 12, 6, 8

# name -> (ISogCLR keyword arguments, hard-negative columns, queue entries): the grids' per-sample cells
CONFIGS = {
    "isogclr-nli": (dict(tau_init=0.05, tau_min=0.02, tau_max=0.2, rho=0.3, eta=0.05), 1, 0),
    "isogclr-wiki": (dict(tau_init=0.05, tau_min=0.02, tau_max=0.2, rho=0.3, eta=0.05), 0, 0),
    "isogclr-rho-high": (dict(tau_init=0.05, tau_min=0.02, tau_max=0.2, rho=1.5, eta=0.05), 1, 0),
    "isogclr-queue": (dict(tau_init=0.05, tau_min=0.02, tau_max=0.2, rho=0.3, eta=0.005), 1, 5),
    "isogclr-bimodal": (dict(tau_init=0.05, tau_min=0.01, tau_max=0.5, rho=0.3, eta=0.05, symmetric=True), 1, 0),
    "sogclr": (dict(tau_init=0.05, tau_min=0.05, tau_max=0.05, learn_temperature=False), 1, 0),
    "sogclr-bimodal": (dict(tau_init=0.05, tau_min=0.05, tau_max=0.05, learn_temperature=False, symmetric=True), 1, 0),
    "tempnet": (dict(tau_init=0.05, tau_min=0.02, tau_max=0.2, rho=0.3, temperature_network="tempnet"), 1, 0),
}


def _pair(config: dict):
    """The legacy objective and today's ISogCLR, with identical TempNet weights where there is one."""
    old_kwargs, new_kwargs = dict(config), dict(config)
    if not config.get("learn_temperature", True):
        # The old SogCLR kept its fixed tau in a float32 buffer; today's FixedTemperature is exact in the
        # similarities' dtype. Give it the value the buffer held (in float32 training the two are the same).
        held = float(torch.tensor(config["tau_init"], dtype=torch.float32))
        new_kwargs.update(tau_init=held, tau_min=held, tau_max=held)
    if config.get("temperature_network"):
        torch.manual_seed(0)
        old_network = LegacyTempNet(DIM, 5, config["tau_init"], config["tau_min"], config["tau_max"])
        torch.nn.init.normal_(old_network.output.weight, std=0.5)  # tau varies across rows from the start
        new_network = TempNet(DIM, 5, config["tau_init"], config["tau_min"], config["tau_max"])
        new_network.load_state_dict(old_network.state_dict())
        old_kwargs["temperature_network"], new_kwargs["temperature_network"] = old_network, new_network
    return LegacyISogCLR(NUM_SAMPLES, **old_kwargs).double(), ISogCLR(NUM_SAMPLES, **new_kwargs).double()


def _batches(negatives: int, queue: int, steps: int = 6):
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        indices = torch.randperm(NUM_SAMPLES, generator=generator)[:BATCH]  # overlapping: indices come back
        anchors = torch.randn(BATCH, DIM, generator=generator, dtype=torch.float64)
        columns = [anchors + 0.6 * torch.randn(BATCH, DIM, generator=generator, dtype=torch.float64)]
        columns += [torch.randn(BATCH, DIM, generator=generator, dtype=torch.float64) for _ in range(negatives)]
        extra = torch.randn(queue, DIM, generator=generator, dtype=torch.float64) if queue else None
        yield indices, anchors, columns, extra


def _step(objective, indices, anchors, columns, extra):
    leaves = [anchors.clone().requires_grad_(), *(c.clone().requires_grad_() for c in columns)]
    objective.zero_grad()
    loss = objective(leaves[0], leaves[1:], indices, extra_negatives=extra)
    loss.backward()
    network = getattr(objective, "temperature_network", None)
    parameter_grads = [p.grad.clone() for p in network.parameters()] if network is not None else []
    return loss.detach(), [leaf.grad for leaf in leaves], parameter_grads


def _state(objective, side: str) -> dict[str, torch.Tensor]:
    state = getattr(objective, f"{side}_state")
    return {name: getattr(state, name).clone() for name in ("tau", "log_s", "u", "seen")}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_new_compositions_reproduce_the_legacy_objective(name):
    config, negatives, queue = CONFIGS[name]
    old, new = _pair(config)
    for step, batch in enumerate(_batches(negatives, queue)):
        old_loss, old_grads, old_network_grads = _step(old, *batch)
        new_loss, new_grads, new_network_grads = _step(new, *batch)
        assert new_loss.item() == pytest.approx(old_loss.item(), rel=1e-12, abs=1e-15), f"{name} step {step}"
        for old_grad, new_grad in zip(old_grads + old_network_grads, new_grads + new_network_grads, strict=True):
            torch.testing.assert_close(new_grad, old_grad, rtol=1e-10, atol=1e-13, msg=f"{name} step {step}")
        for side in ("query", "document") if config.get("symmetric") else ("query",):
            old_state, new_state = _state(old, side), _state(new, side)
            for key, value in old_state.items():
                if key == "u" and config.get("temperature_network"):
                    continue  # TempNet never moved u: the old buffer stayed zero and has no successor
                torch.testing.assert_close(new_state[key], value, rtol=1e-10, atol=1e-13, msg=f"{side}.{key}")
    if config.get("learn_temperature", True) and not config.get("temperature_network"):
        assert len(set(new.tau.tolist())) > 3  # the comparison covered temperatures that became individual


@pytest.mark.parametrize("name", ["isogclr-bimodal", "sogclr", "tempnet"])
def test_a_legacy_loss_state_resumes_in_the_new_objective(name):
    """A state_dict the old objective wrote (a checkpoint's loss_state.pt) loads into today's ISogCLR and into the
    plain composition, and the run continues with the old numbers."""
    config, negatives, queue = CONFIGS[name]
    old, new = _pair(config)
    batches = list(_batches(negatives, queue, steps=6))
    for batch in batches[:3]:
        _step(old, *batch)
    legacy_state = copy.deepcopy(old.state_dict())
    missing, unexpected = new.load_state_dict(copy.deepcopy(legacy_state), strict=False)
    assert not missing and not unexpected
    policy = {
        "isogclr-bimodal": lambda: IndividualTemperature(NUM_SAMPLES, 0.05, 0.01, 0.5, rho=0.3, eta=0.05),
        "sogclr": lambda: FixedTemperature(float(torch.tensor(0.05, dtype=torch.float32))),
        "tempnet": lambda: TempNetTemperature(DIM, 5, 0.05, 0.02, 0.2, rho=0.3, num_samples=NUM_SAMPLES),
    }[name]()
    composed = SogCLR(NUM_SAMPLES, policy, symmetric=bool(config.get("symmetric"))).double()
    missing, unexpected = composed.load_state_dict(copy.deepcopy(legacy_state), strict=False)
    assert not missing and not unexpected
    for batch in batches[3:]:
        old_loss, old_grads, _ = _step(old, *batch)
        for resumed in (new, composed):
            loss, grads, _ = _step(resumed, *batch)
            assert loss.item() == pytest.approx(old_loss.item(), rel=1e-12, abs=1e-15)
            for old_grad, grad in zip(old_grads, grads, strict=True):
                torch.testing.assert_close(grad, old_grad, rtol=1e-10, atol=1e-13)
    if name == "isogclr-bimodal":
        torch.testing.assert_close(composed.temperature.state(1).tau, old.document_state.tau, rtol=1e-10, atol=0)
