"""Forward+backward time of every tempnlp loss against sentence-transformers' MNRL, measured side by side.

Two parts, each timing all variants in one run, interleaved round by round so that machine noise hits them
alike; a variant's time is the median over rounds and its ratio is against MNRL's median from the same rounds.

1. Loss only: random 384-d embeddings (anchor, positive, one hard negative) at batch 64, 256 and 1024.
2. Whole training step: all-MiniLM-L6-v2 (from TEMPNLP_MIRROR or the Hub), batch 64 (anchor, positive),
   max length 32: encode, loss, backward.

Writes eval/results/bench_loss.json and eval/results/bench_loss.md.

    TEMPNLP_MIRROR=../shared/mirror python -m eval.bench_loss            # full run (~5 minutes on 2 cores)
    TEMPNLP_MIRROR=../shared/mirror python -m eval.bench_loss --quick    # smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

import tempnlp
from tempnlp._io import write_text_atomic
from tempnlp.data import resolve_model, snli_triplets
from tempnlp.losses import DCLLoss, InfoNCELoss, ISogCLRLoss, SogCLRLoss, TempNetLoss
from tempnlp.temperature import (
    CooldownTemperature,
    CosineScheduleTemperature,
    DySTreSSTemperature,
    GlobalDROTemperature,
    Hardness,
    IndividualTemperature,
    LearnableTemperature,
    MACLTemperature,
    TempNetTemperature,
)
from tempnlp.train.run import machine_description

RESULTS = Path(__file__).parent / "results"
NUM_SAMPLES = 4096  # per-sample state of the stateful losses; each step addresses indices 0..batch-1


class _Dimension384:
    """Stands in for the encoder in the loss-only part: the losses only ask it for the embedding size."""

    def get_embedding_dimension(self) -> int:
        return 384


def _at_step(schedule, step: int = 100, steps_per_epoch: int = 1000):
    """A schedule told where training is, as the trainer's callback tells it before every step."""
    schedule.set_progress(step, steps_per_epoch)
    return schedule


def variants(model, with_queue: bool) -> dict[str, torch.nn.Module]:
    """Every loss and policy, plus MNRL. In the loss-only part ``model`` is never called; the momentum queue
    needs a real encoder (its cost is the EMA copy's forward pass), so it is timed in the training step only."""
    stateful = {"tau_init": 0.05, "tau_min": 0.02, "tau_max": 0.2}
    losses = {
        "MNRL (ST, scale 20)": MultipleNegativesRankingLoss(model, scale=20.0),
        "InfoNCE fixed 0.05": InfoNCELoss(model, temperature=0.05),
        "InfoNCE fixed 0.05, no finite check": InfoNCELoss(model, temperature=0.05, check_finite=False),
        "InfoNCE learnable": InfoNCELoss(model, temperature=LearnableTemperature()),
        "InfoNCE MACL": InfoNCELoss(model, temperature=MACLTemperature()),
        "InfoNCE MACL reweight": InfoNCELoss(model, temperature=MACLTemperature(reweight=True)),
        "InfoNCE DySTreSS": InfoNCELoss(model, temperature=DySTreSSTemperature()),
        "InfoNCE DySTreSS shifted": InfoNCELoss(model, temperature=DySTreSSTemperature(variant="shifted")),
        "InfoNCE symmetric": InfoNCELoss(model, temperature=0.05, symmetric=True),
        "DCL": DCLLoss(model, temperature=0.05),
        "DCLW": DCLLoss(model, temperature=0.05, sigma=0.5),
        "SogCLR": SogCLRLoss(model, NUM_SAMPLES, temperature=0.05),
        "iSogCLR": ISogCLRLoss(model, NUM_SAMPLES, **stateful),
        "TempNet": TempNetLoss(model, NUM_SAMPLES, **stateful),
        # policies on other objectives, composed as any user would
        "InfoNCE individual": InfoNCELoss(model, temperature=IndividualTemperature(NUM_SAMPLES, **stateful)),
        "InfoNCE TempNet": InfoNCELoss(
            model, temperature=TempNetTemperature(model.get_embedding_dimension(), **stateful)
        ),
        "InfoNCE same-view negatives": InfoNCELoss(model, temperature=0.05, same_view_negatives=True),
        "DCL individual": DCLLoss(model, temperature=IndividualTemperature(NUM_SAMPLES, **stateful)),
        "SogCLR MACL": SogCLRLoss(model, NUM_SAMPLES, temperature=MACLTemperature()),
        "SogCLR DySTreSS": SogCLRLoss(model, NUM_SAMPLES, temperature=DySTreSSTemperature()),
        "InfoNCE global DRO": InfoNCELoss(model, temperature=GlobalDROTemperature(**stateful)),
        "InfoNCE cosine schedule": InfoNCELoss(model, temperature=_at_step(CosineScheduleTemperature(0.03, 0.1))),
        "InfoNCE cool-down": InfoNCELoss(model, temperature=_at_step(CooldownTemperature(0.1, 0.05, mode="linear"))),
        "InfoNCE hardness (in-batch, 9)": InfoNCELoss(model, temperature=Hardness(0.05, "in_batch_negatives", 9.0)),
        "MNRL hardness (in-batch, 9)": MultipleNegativesRankingLoss(
            model, scale=20.0, hardness_mode="in_batch_negatives", hardness_strength=9.0
        ),
    }
    if with_queue:
        losses["iSogCLR, queue 256"] = ISogCLRLoss(model, NUM_SAMPLES, queue_size=256, **stateful)
    return losses


def loss_value(loss: torch.nn.Module, embeddings: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """The loss on given embeddings; the stateful losses take the dataset indices as labels."""
    if hasattr(loss, "compute_loss_from_embeddings"):
        return loss.compute_loss_from_embeddings(embeddings, labels)
    return loss.calculate_loss([[embedding] for embedding in embeddings], labels)


def interleaved_medians(steps: dict[str, Callable[[], None]], rounds: int, warmup: int) -> dict[str, float]:
    """Median time of each step over ``rounds`` rounds; each round runs every step once, in a shuffled order."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    order = list(steps)
    shuffler = random.Random(0)
    for _ in range(rounds):
        shuffler.shuffle(order)
        for name in order:
            step = steps[name]
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def bench_loss_only(batch_sizes: list[int], rounds: int) -> list[dict]:
    rows = []
    for batch in batch_sizes:
        generator = torch.Generator().manual_seed(batch)
        embeddings = [torch.randn(batch, 384, generator=generator).requires_grad_() for _ in range(3)]
        losses = variants(_Dimension384(), with_queue=False)
        labels = torch.arange(batch)

        def step(loss, embeddings=embeddings, labels=labels):
            value = loss_value(loss, embeddings, labels)
            value.backward()
            for tensor in embeddings:
                tensor.grad = None

        medians = interleaved_medians(
            {name: (lambda loss=loss: step(loss)) for name, loss in losses.items()}, rounds=rounds, warmup=3
        )
        reference = medians["MNRL (ST, scale 20)"]
        for name, seconds in medians.items():
            rows.append({"batch": batch, "loss": name, "ms": 1000 * seconds, "ratio_vs_mnrl": seconds / reference})
    return rows


def bench_training_step(rounds: int, batch: int = 64) -> list[dict]:
    model = SentenceTransformer(resolve_model("sentence-transformers/all-MiniLM-L6-v2"), device="cpu")
    model.max_seq_length = 32
    model.train()
    data = snli_triplets("train", limit=batch)
    features = [model.preprocess(data["anchor"]), model.preprocess(data["positive"])]
    losses = variants(model, with_queue=True)
    labels = torch.arange(batch)

    def step(loss):
        # Fresh dicts: the model writes its outputs into the feature dicts it is given.
        value = loss([dict(f) for f in features], labels)
        value.backward()
        model.zero_grad(set_to_none=True)

    medians = interleaved_medians(
        {name: (lambda loss=loss: step(loss)) for name, loss in losses.items()}, rounds=rounds, warmup=1
    )
    reference = medians["MNRL (ST, scale 20)"]
    return [
        {"batch": batch, "loss": name, "ms": 1000 * seconds, "ratio_vs_mnrl": seconds / reference}
        for name, seconds in medians.items()
    ]


def to_markdown(result: dict) -> str:
    loss_rows = result["loss_only"]
    batches = sorted({row["batch"] for row in loss_rows})
    names = list(dict.fromkeys(row["loss"] for row in loss_rows))
    cell = {(row["loss"], row["batch"]): row for row in loss_rows}
    lines = [
        "# Loss benchmark",
        "",
        f"Machine: {result['machine']}. Command: `{result['command']}`. Median of {result['rounds_loss']} "
        "interleaved rounds; ratio = time / MNRL's time in the same run.",
        "",
        "## Loss only (forward + backward, random 384-d embeddings, anchor + positive + 1 hard negative)",
        "",
        "| loss | " + " | ".join(f"batch {b}: ms (x MNRL)" for b in batches) + " |",
        "|---|" + "---|" * len(batches),
    ]
    for name in names:
        cells = [f"{cell[name, b]['ms']:.2f} ({cell[name, b]['ratio_vs_mnrl']:.2f}x)" for b in batches]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    step_rows = result["training_step"]
    if step_rows:
        lines += [
            "",
            f"## Whole MiniLM training step (batch {step_rows[0]['batch']}, max length 32, encode + loss + backward; "
            f"median of {result['rounds_step']} rounds)",
            "",
            "| loss | ms | x MNRL |",
            "|---|---|---|",
        ]
        lines += [f"| {row['loss']} | {row['ms']:.0f} | {row['ratio_vs_mnrl']:.3f}x |" for row in step_rows]
        mnrl_step = next(row["ms"] for row in step_rows if row["loss"].startswith("MNRL"))
        extra = max(
            cell[name, 64]["ms"] - cell["MNRL (ST, scale 20)", 64]["ms"] for name in names if (name, 64) in cell
        )
        lines += [
            "",
            f"The largest loss-only overhead at batch 64 is {extra:.2f} ms, {100 * extra / mnrl_step:.3f}% of an "
            "MNRL training step: differences between rows of this table are run-to-run noise of the encoder, "
            "not the loss.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few rounds, no batch 1024: a smoke run")
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rounds_loss, rounds_step = (5, 2) if args.quick else (30, 15)
    batches = [64, 256] if args.quick else [64, 256, 1024]
    command = "python -m eval.bench_loss" + (" --quick" if args.quick else "")
    result = {
        "command": command,
        "machine": machine_description(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "tempnlp": tempnlp.__version__,
        },
        "rounds_loss": rounds_loss,
        "rounds_step": rounds_step,
        "loss_only": bench_loss_only(batches, rounds_loss),
        "training_step": bench_training_step(rounds_step),
    }
    markdown = to_markdown(result)
    write_text_atomic(args.output_dir / "bench_loss.json", json.dumps(result, indent=2) + "\n")
    write_text_atomic(args.output_dir / "bench_loss.md", markdown)
    print(markdown)


if __name__ == "__main__":
    main()
