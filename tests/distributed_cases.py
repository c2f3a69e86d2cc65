"""Shared by the 2-process worker and the single-process reference in tests/test_distributed.py."""

from __future__ import annotations

import torch

from tempnlp.objectives import DCL, InfoNCE, ISogCLR, SogCLR
from tempnlp.objectives.isogclr import TempNet
from tempnlp.temperature import DySTreSSTemperature, IndividualTemperature, LearnableTemperature, MACLTemperature

GLOBAL_BATCH, STEPS, DIM, NUM_SAMPLES = 8, 3, 12, 12

CASES = {
    "isogclr": lambda gather, n=NUM_SAMPLES: ISogCLR(
        n, eta=0.05, symmetric=True, gather_across_devices=gather
    ).double(),
    "infonce-macl": lambda gather: InfoNCE(
        MACLTemperature(reweight=True), symmetric=True, gather_across_devices=gather
    ).double(),
    "dcl-dystress": lambda gather: DCL(DySTreSSTemperature(), sigma=0.5, gather_across_devices=gather).double(),
    # Loss parameters (a learnable tau, TempNet) sit outside DDP: every rank must compute identical gradients.
    "infonce-learnable": lambda gather: InfoNCE(LearnableTemperature(), gather_across_devices=gather).double(),
    "tempnet": lambda gather, n=NUM_SAMPLES: _tempnet(gather, n),
    # a per-sample tau on InfoNCE, and a per-batch tau on SogCLR's per-sample estimator
    "infonce-individual": lambda gather, n=NUM_SAMPLES: InfoNCE(
        IndividualTemperature(n, eta=0.05), symmetric=True, gather_across_devices=gather
    ).double(),
    "sogclr-macl": lambda gather, n=NUM_SAMPLES: SogCLR(n, MACLTemperature(), gather_across_devices=gather).double(),
}
# How the global batch is split across the two ranks: rows per rank, and whether rank 1's first row repeats rank
# 0's first dataset index (a sampler refilling its last batches with used samples).
LAYOUTS = {"even": ((4, 4), False), "unequal": ((5, 3), False), "duplicate": ((4, 4), True)}


def rank_rows(layout: str, rank: int) -> slice:
    sizes, _ = LAYOUTS[layout]
    return slice(sum(sizes[:rank]), sum(sizes[: rank + 1]))


def layout_indices(layout: str, indices: torch.Tensor) -> torch.Tensor:
    """The dataset indices the ranks hold: with a duplicate, rank 1's first row takes rank 0's first index."""
    sizes, duplicate = LAYOUTS[layout]
    if duplicate:
        indices = indices.clone()
        indices[sizes[0]] = indices[0]
    return indices


def _tempnet(gather: bool, num_samples: int = NUM_SAMPLES) -> ISogCLR:
    torch.manual_seed(1)
    network = TempNet(16, 8, tau_init=0.1, tau_min=0.05, tau_max=1.0)
    torch.nn.init.normal_(network.output.weight, std=0.5)  # start away from the constant tau_init
    return ISogCLR(num_samples, temperature_network=network, gather_across_devices=gather).double()


def make_encoder() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(DIM, 16).double()


def global_inputs(step: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(anchors, positives, negatives) inputs of the global batch and their dataset indices; steps overlap."""
    generator = torch.Generator().manual_seed(100 + step)
    anchors = torch.randn(GLOBAL_BATCH, DIM, generator=generator, dtype=torch.float64)
    positives = anchors + 0.5 * torch.randn(GLOBAL_BATCH, DIM, generator=generator, dtype=torch.float64)
    negatives = torch.randn(GLOBAL_BATCH, DIM, generator=generator, dtype=torch.float64)
    indices = torch.randperm(NUM_SAMPLES, generator=generator)[:GLOBAL_BATCH]
    return [anchors, positives, negatives], indices


def finish_worker(record: object, path) -> None:
    """A worker's end: save what it recorded, wait for the other rank, and leave without Python's teardown.

    gloo's worker threads can abort ("terminate called without an active exception") in static destructors at
    interpreter exit, after all work is done and saved: the process exits before running them.
    """
    import os
    import sys

    import torch.distributed as dist

    torch.save(record, path)
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
