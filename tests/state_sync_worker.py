"""Run by tests/test_distributed.py under torchrun: the loss-state callback across 2 gloo ranks.

Usage: torchrun --standalone --nproc_per_node=2 tests/state_sync_worker.py OUTPUT_DIR

Each rank builds a loss whose learnable tau and per-sample state differ by rank (as a rank-dependent seed
would make them). The callback's train start must leave every rank with rank 0's values; a save must pass while
the ranks agree, and stop on every rank, naming the tensor and the rank, once rank 1 has drifted.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from distributed_cases import finish_worker

from tempnlp.objectives import InfoNCE
from tempnlp.temperature import IndividualTemperature, LearnableTemperature
from tempnlp.train.state import LossStateCallback


class Loss(nn.Module):
    has_state = True

    def __init__(self, rank: int) -> None:
        super().__init__()
        self.objective = InfoNCE(IndividualTemperature(6, tau_init=0.05 + 0.01 * rank), gather_across_devices=True)
        self.learned = InfoNCE(LearnableTemperature(init=0.05 + 0.01 * rank), gather_across_devices=True)
        self.objective.temperature.states[0].seen[rank] = True


class PerProcess(nn.Module):
    """A loss whose state is per process by design (a momentum queue): never broadcast, never compared."""

    has_state = True

    def __init__(self, rank: int) -> None:
        super().__init__()
        self.objective = InfoNCE(0.05)
        self.register_buffer("queue", torch.full((3,), float(rank)))


def main() -> None:
    output = Path(sys.argv[1])
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    losses = {"nli": Loss(rank), "other": Loss(rank), "queue": PerProcess(rank)}
    callback = LossStateCallback(losses)
    args = SimpleNamespace(world_size=2, output_dir=str(output), num_train_epochs=3)
    state = SimpleNamespace(global_step=0, num_train_epochs=3, is_world_process_zero=rank == 0)
    callback.on_train_begin(args, state, None)
    after_start = {f"{n}.{k}": v.clone() for n, loss in losses.items() for k, v in loss.state_dict().items()}

    state.global_step = 5
    callback.on_step_end(args, state, SimpleNamespace(should_save=True))  # the ranks agree: rank 0 saves
    agreed = (output / "checkpoint-5" / "loss_nli" / "loss_state.pt").is_file() if rank == 0 else None

    if rank == 1:  # drift: one per-sample temperature moves by one step of float32
        tau = losses["other"].objective.temperature.states[0].tau
        tau[3] = torch.nextafter(tau[3], torch.tensor(1.0))
    state.global_step = 10
    try:
        callback.on_step_end(args, state, SimpleNamespace(should_save=True))
        error = None
    except ValueError as caught:
        error = str(caught)
    written = (output / "checkpoint-10").exists()
    # a duplicate index within rank 1's own batch: every rank raises (none is left waiting in a collective)
    objective = InfoNCE(IndividualTemperature(6), gather_across_devices=True)
    indices = torch.tensor([0, 0]) if rank == 1 else torch.tensor([2, 3])
    try:
        objective(torch.randn(2, 4), torch.randn(2, 4), indices).backward()
        duplicate = None
    except ValueError as caught:
        duplicate = str(caught)
    record = {"state": after_start, "agreed": agreed, "error": error, "written": written, "duplicate": duplicate}
    finish_worker(record, output / f"rank{rank}.pt")


if __name__ == "__main__":
    main()
