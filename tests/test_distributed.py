"""Two processes (gloo, CPU, torchrun) equal one process on the same global batch: loss, gradients, state."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from distributed_cases import CASES, GLOBAL_BATCH, STEPS, global_inputs, make_encoder


def _single_process(name: str):
    encoder = make_encoder()
    objective = CASES[name](gather=False)
    losses, grads = [], []
    for step in range(STEPS):
        inputs, indices = global_inputs(step)
        embeddings = encoder(torch.cat(inputs)).split(GLOBAL_BATCH)
        loss = objective(embeddings[0], list(embeddings[1:]), indices)
        loss.backward()
        losses.append(loss.item())
        step_grads = {n: p.grad.clone() for n, p in encoder.named_parameters()}
        step_grads.update({f"loss.{n}": p.grad.clone() for n, p in objective.named_parameters()})
        grads.append(step_grads)
        encoder.zero_grad()
        objective.zero_grad()
    return losses, grads, objective.state_dict()


@pytest.mark.parametrize("name", list(CASES))
def test_two_processes_equal_one(name, tmp_path):
    worker = Path(__file__).parent / "ddp_worker.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(worker)]
    result = subprocess.run([*command, name, str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    losses, grads, state = _single_process(name)
    for rank in (0, 1):
        record = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert record["losses"] == pytest.approx(losses, abs=1e-6), rank
        for step in range(STEPS):
            assert record["grads"][step].keys() == grads[step].keys()
            for key, grad in grads[step].items():
                torch.testing.assert_close(record["grads"][step][key], grad, atol=1e-6, rtol=0, msg=f"{rank} {key}")
        for key, buffer in state.items():
            torch.testing.assert_close(record["state"][key], buffer, atol=1e-6, rtol=0, msg=f"{rank} {key}")
