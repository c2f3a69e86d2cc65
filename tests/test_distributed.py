"""Two processes (gloo, CPU, torchrun) equal one process on the same global batch: loss, gradients, state."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from distributed_cases import CASES, GLOBAL_BATCH, LAYOUTS, NUM_SAMPLES, STEPS, global_inputs, make_encoder


def _single_process(name: str, layout: str = "even"):
    """One process on the global batch. With a dataset index on both ranks, the reference gives the second copy
    a spare index whose state is, before every step, a copy of the first one's: the stored state of the real index
    is then what the first row (rank 0) writes, which is what the ranks must agree on."""
    encoder = make_encoder()
    (first_of_rank_1,), duplicate = LAYOUTS[layout][0][:1], LAYOUTS[layout][1]
    objective = CASES[name](gather=False, n=NUM_SAMPLES + 1) if duplicate else CASES[name](gather=False)
    losses, grads = [], []
    for step in range(STEPS):
        inputs, indices = global_inputs(step)
        if duplicate:
            indices = indices.clone()
            indices[first_of_rank_1] = NUM_SAMPLES  # the spare slot
            with torch.no_grad():
                for buffer in objective.buffers():
                    if buffer.dim() >= 1 and buffer.size(0) == NUM_SAMPLES + 1:
                        buffer[NUM_SAMPLES] = buffer[indices[0]]
        embeddings = encoder(torch.cat(inputs)).split(GLOBAL_BATCH)
        loss = objective(embeddings[0], list(embeddings[1:]), indices)
        loss.backward()
        losses.append(loss.item())
        step_grads = {n: p.grad.clone() for n, p in encoder.named_parameters()}
        step_grads.update({f"loss.{n}": p.grad.clone() for n, p in objective.named_parameters()})
        grads.append(step_grads)
        encoder.zero_grad()
        objective.zero_grad()
    state = objective.state_dict()
    if duplicate:  # drop the spare slot
        state = {k: v[:NUM_SAMPLES] if v.dim() >= 1 and v.size(0) == NUM_SAMPLES + 1 else v for k, v in state.items()}
    return losses, grads, state


CASES_AND_LAYOUTS = [
    *((name, "even") for name in CASES),
    # ranks with different numbers of rows (a short last batch): the gather pads, and nothing else changes
    *((name, "unequal") for name in ("isogclr", "infonce-learnable", "tempnet")),
    # one dataset index on both ranks: the loss counts both rows, the state is written once, by rank 0's row
    *((name, "duplicate") for name in ("isogclr", "infonce-individual", "sogclr-macl", "tempnet")),
]


@pytest.mark.parametrize(("name", "layout"), CASES_AND_LAYOUTS)
def test_two_processes_equal_one(name, layout, tmp_path):
    worker = Path(__file__).parent / "ddp_worker.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(worker)]
    result = subprocess.run(
        [*command, name, str(tmp_path), layout], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    losses, grads, state = _single_process(name, layout)
    for rank in (0, 1):
        record = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert record["losses"] == pytest.approx(losses, abs=1e-6), rank
        for step in range(STEPS):
            assert record["grads"][step].keys() == grads[step].keys()
            for key, grad in grads[step].items():
                torch.testing.assert_close(record["grads"][step][key], grad, atol=1e-6, rtol=0, msg=f"{rank} {key}")
        for key, buffer in state.items():
            torch.testing.assert_close(record["state"][key], buffer, atol=1e-6, rtol=0, msg=f"{rank} {key}")


def test_without_gathering_anything_the_loss_learns_is_refused_under_several_processes(monkeypatch):
    """A learnable tau, TempNet or per-sample state would part ways across ranks that each see their own batch."""
    from tempnlp.objectives import candidates, distributed

    inputs, indices = global_inputs(0)
    embeddings = make_encoder()(torch.cat(inputs)).split(GLOBAL_BATCH)
    learnable, per_sample, tempnet = CASES["infonce-learnable"], CASES["isogclr"], CASES["tempnet"]
    fixed = CASES["dcl-dystress"]
    monkeypatch.setattr(distributed, "distributed", lambda: True)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 2)
    assert candidates.global_batch is distributed.global_batch  # the one builder every objective uses
    with pytest.raises(ValueError, match=r"own parameters \(temperature\.log_inverse_tau\).*gather_across_devices"):
        learnable(gather=False)(embeddings[0], list(embeddings[1:]))
    for case in (per_sample, tempnet):
        with pytest.raises(ValueError, match="per-sample state, which would diverge across the 2 processes"):
            case(gather=False)(embeddings[0], list(embeddings[1:]), indices)
    assert torch.isfinite(fixed(gather=False)(embeddings[0], list(embeddings[1:])))  # nothing learned: allowed
    with torch.no_grad():  # evaluation updates nothing
        assert torch.isfinite(learnable(gather=False)(embeddings[0], list(embeddings[1:])))


def test_tempnlp_train_refuses_a_learned_temperature_without_gathering_before_loading(monkeypatch):
    from tempnlp.train.recipe import RecipeError, load_recipe
    from tempnlp.train.run import _check_processes

    recipes = Path(__file__).resolve().parents[1] / "recipes"
    monkeypatch.setenv("WORLD_SIZE", "2")
    learnable, _ = load_recipe(recipes / "quickstart.yaml", ["loss.temperature=learnable"])
    with pytest.raises(RecipeError, match=r"learns its temperature.*loss\.gather_across_devices: true"):
        _check_processes(learnable)
    per_sample, _ = load_recipe(recipes / "unsup-simcse.yaml", ["loss={name: ISogCLRLoss}"])
    with pytest.raises(RecipeError, match="keeps per-sample state"):
        _check_processes(per_sample)
    _check_processes(load_recipe(recipes / "quickstart.yaml")[0])  # MACL learns nothing
    _check_processes(
        load_recipe(recipes / "quickstart.yaml", ["loss.temperature=learnable", "loss.gather_across_devices=true"])[0]
    )


def test_loss_state_starts_from_rank_0_and_a_drifted_rank_stops_the_save(tmp_path):
    worker = Path(__file__).parent / "state_sync_worker.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(worker)]
    result = subprocess.run([*command, str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    # rank 1 started with tau 0.06 and its own seen flag: after the start it holds rank 0's values, bit for bit
    assert ranks[0]["state"].keys() == ranks[1]["state"].keys()
    for key, value in ranks[0]["state"].items():
        if key.startswith("queue."):  # per process by design: left as each rank has it
            assert not torch.equal(value, ranks[1]["state"][key]), key
        else:
            assert torch.equal(value, ranks[1]["state"][key]), key
    assert torch.allclose(ranks[1]["state"]["nli.objective.temperature.states.0.tau"], torch.tensor(0.05))
    assert ranks[1]["state"]["nli.objective.temperature.states.0.seen"].tolist() == [True] + [False] * 5
    assert (
        ranks[1]["state"]["nli.learned.temperature.log_inverse_tau"]
        == ranks[0]["state"]["nli.learned.temperature.log_inverse_tau"]
    )
    assert ranks[0]["agreed"] is True
    for record in ranks:  # one float32 step of one entry on rank 1 stops both ranks, and nothing is written
        assert record["error"] is not None and not record["written"]
        assert (
            "differs across processes at step 10: other.objective.temperature.states.0.tau on rank 1"
            in (record["error"])
        )
        assert record["duplicate"] is not None and "Duplicate dataset indices" in record["duplicate"]


def test_tempnlp_train_refuses_data_parallel_on_several_gpus_without_torchrun(monkeypatch, tmp_path):
    """Several visible GPUs and no torchrun: the trainer would wrap the model in nn.DataParallel. Refused before the
    output folder is made or anything loads, with the torchrun command."""
    from tempnlp.train.recipe import RecipeError, load_recipe
    from tempnlp.train.run import run_recipe

    recipe, _ = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml")
    for name in ("WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    with pytest.raises(RecipeError, match=r"4 GPUs.*DataParallel.*torchrun --nproc_per_node=4 -m tempnlp\.cli train"):
        run_recipe(recipe, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    monkeypatch.setenv("WORLD_SIZE", "1")  # started by torchrun: one process per GPU, nothing to refuse here
    from tempnlp.train import run

    run._check_devices()
