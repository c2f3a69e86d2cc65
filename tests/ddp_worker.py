"""Run by tests/test_distributed.py under torchrun: one rank of a 2-process gloo job.

Usage: torchrun --standalone --nproc_per_node=2 tests/ddp_worker.py NAME OUTPUT_DIR [LAYOUT]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, str(Path(__file__).parent))
from distributed_cases import CASES, STEPS, finish_worker, global_inputs, layout_indices, make_encoder, rank_rows


def main() -> None:
    name, output = sys.argv[1], Path(sys.argv[2])
    layout = sys.argv[3] if len(sys.argv) > 3 else "even"
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    rows = rank_rows(layout, rank)
    local = rows.stop - rows.start
    encoder = DistributedDataParallel(make_encoder())
    objective = CASES[name](gather=True)
    record = {"losses": [], "grads": [], "state": None}
    for step in range(STEPS):
        inputs, indices = global_inputs(step)
        indices = layout_indices(layout, indices)
        # One forward for all columns: DDP expects one forward per backward.
        embeddings = encoder(torch.cat([column[rows] for column in inputs])).split(local)
        loss = objective(embeddings[0], list(embeddings[1:]), indices[rows])
        loss.backward()
        record["losses"].append(loss.item())
        grads = {n: p.grad.clone() for n, p in encoder.module.named_parameters()}
        grads.update({f"loss.{n}": p.grad.clone() for n, p in objective.named_parameters()})
        record["grads"].append(grads)
        encoder.zero_grad()
        objective.zero_grad()
    record["state"] = {k: v.clone() for k, v in objective.state_dict().items()}
    finish_worker(record, output / f"rank{rank}.pt")


if __name__ == "__main__":
    main()
