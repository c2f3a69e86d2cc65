"""Forward+backward time of every tempnlp loss against sentence-transformers' MNRL, measured side by side.

Two parts, each timing all variants in one run, interleaved round by round so that machine noise hits them
alike; a variant's time is the median over rounds and its ratio is against MNRL's median from the same rounds.

1. Loss only: random 384-d embeddings (anchor, positive, one hard negative) at batch 64, 256 and 1024.
2. Whole training step: all-MiniLM-L6-v2 (from TEMPNLP_MIRROR or the Hub), batch 64 (anchor, positive),
   max length 32: encode, loss, backward.

Runs on ``--device`` (CUDA when available, else the CPU). Each timed call is bracketed by the device's clock: CUDA
events recorded after a synchronisation on a GPU, ``time.perf_counter`` on the CPU, so a GPU time is the kernels'
time and not the time to queue them.

Writes eval/results/bench_loss.json and eval/results/bench_loss.md, or ``--output`` (a .json path; the .md beside it).

    TEMPNLP_MIRROR=../shared/mirror python -m eval.bench_loss                 # full run (~20 minutes on 2 cores)
    TEMPNLP_MIRROR=../shared/mirror python -m eval.bench_loss --device cuda   # the same on a GPU
    TEMPNLP_MIRROR=../shared/mirror python -m eval.bench_loss --quick --output /tmp/bench.json   # smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import random
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

import tempnlp
from tempnlp._io import write_text_atomic
from tempnlp.data import resolve_model, snli_triplets
from tempnlp.losses import DCLLoss, InfoNCELoss, ISogCLRLoss, SogCLRLoss, TempNetLoss
from tempnlp.provenance import machine_description
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

RESULTS = Path(__file__).parent / "results"
NUM_SAMPLES = 4096  # per-sample state of the stateful losses; each step addresses indices 0..batch-1
MNRL = "MNRL (ST, scale 20)"
MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step: Callable[[], None], device: torch.device) -> float:
    """Seconds one call of ``step`` takes on ``device``: CUDA events around it on a GPU (after a synchronisation,
    so the call starts on an idle device and ends when its kernels do), ``perf_counter`` on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000
    begin = time.perf_counter()
    step()
    return time.perf_counter() - begin


class _Dimension384:
    """Stands in for the encoder in the loss-only part: the losses only ask it for the embedding size."""

    def get_embedding_dimension(self) -> int:
        return 384


def _at_step(schedule, step: int = 100, steps_per_epoch: int = 1000):
    """A schedule told where training is, as the trainer's callback tells it before every step."""
    schedule.set_progress(step, steps_per_epoch)
    return schedule


def variants(
    model, with_queue: bool, names: Iterable[str] | None = None, **options: object
) -> dict[str, torch.nn.Module]:
    """Every loss and policy, plus MNRL, by name (``names``: only those, in that order). ``options`` go to
    tempnlp's losses (``mini_batch_size``); sentence-transformers' MNRL rows take none. In the loss-only part
    ``model`` is never called; the momentum queue needs a real encoder (its cost is the EMA copy's forward pass),
    so it is timed in the training step only."""
    stateful = {"tau_init": 0.05, "tau_min": 0.02, "tau_max": 0.2}

    def ours(cls, *args, **kwargs) -> torch.nn.Module:
        return cls(model, *args, **kwargs, **options)

    def mnrl(**kwargs) -> torch.nn.Module:
        if options:
            raise ValueError(f"sentence-transformers' MNRL takes none of {sorted(options)}")
        return MultipleNegativesRankingLoss(model, scale=20.0, **kwargs)

    builders: dict[str, Callable[[], torch.nn.Module]] = {
        MNRL: mnrl,
        "InfoNCE fixed 0.05": lambda: ours(InfoNCELoss, temperature=0.05),
        "InfoNCE fixed 0.05, no finite check": lambda: ours(InfoNCELoss, temperature=0.05, check_finite=False),
        "InfoNCE learnable": lambda: ours(InfoNCELoss, temperature=LearnableTemperature()),
        "InfoNCE MACL": lambda: ours(InfoNCELoss, temperature=MACLTemperature()),
        "InfoNCE MACL reweight": lambda: ours(InfoNCELoss, temperature=MACLTemperature(reweight=True)),
        "InfoNCE DySTreSS": lambda: ours(InfoNCELoss, temperature=DySTreSSTemperature()),
        "InfoNCE DySTreSS shifted": lambda: ours(InfoNCELoss, temperature=DySTreSSTemperature(variant="shifted")),
        "InfoNCE symmetric": lambda: ours(InfoNCELoss, temperature=0.05, symmetric=True),
        "DCL": lambda: ours(DCLLoss, temperature=0.05),
        "DCLW": lambda: ours(DCLLoss, temperature=0.05, sigma=0.5),
        "SogCLR": lambda: ours(SogCLRLoss, NUM_SAMPLES, temperature=0.05),
        "iSogCLR": lambda: ours(ISogCLRLoss, NUM_SAMPLES, **stateful),
        "TempNet": lambda: ours(TempNetLoss, NUM_SAMPLES, **stateful),
        # policies on other objectives, composed as any user would
        "InfoNCE individual": lambda: ours(InfoNCELoss, temperature=IndividualTemperature(NUM_SAMPLES, **stateful)),
        "InfoNCE TempNet": lambda: ours(
            InfoNCELoss, temperature=TempNetTemperature(model.get_embedding_dimension(), **stateful)
        ),
        "InfoNCE same-view negatives": lambda: ours(InfoNCELoss, temperature=0.05, same_view_negatives=True),
        "DCL individual": lambda: ours(DCLLoss, temperature=IndividualTemperature(NUM_SAMPLES, **stateful)),
        "SogCLR MACL": lambda: ours(SogCLRLoss, NUM_SAMPLES, temperature=MACLTemperature()),
        "SogCLR DySTreSS": lambda: ours(SogCLRLoss, NUM_SAMPLES, temperature=DySTreSSTemperature()),
        "InfoNCE global DRO": lambda: ours(InfoNCELoss, temperature=GlobalDROTemperature(**stateful)),
        "InfoNCE cosine schedule": lambda: ours(
            InfoNCELoss, temperature=_at_step(CosineScheduleTemperature(0.03, 0.1))
        ),
        "InfoNCE cool-down": lambda: ours(
            InfoNCELoss, temperature=_at_step(CooldownTemperature(0.1, 0.05, mode="linear"))
        ),
        "InfoNCE hardness (in-batch, 9)": lambda: ours(
            InfoNCELoss, temperature=Hardness(0.05, "in_batch_negatives", 9.0)
        ),
        "MNRL hardness (in-batch, 9)": lambda: mnrl(hardness_mode="in_batch_negatives", hardness_strength=9.0),
    }
    if with_queue:
        builders["iSogCLR, queue 256"] = lambda: ours(ISogCLRLoss, NUM_SAMPLES, queue_size=256, **stateful)
    selected = list(builders) if names is None else list(names)
    unknown = [name for name in selected if name not in builders]
    if unknown:
        raise KeyError(f"no loss variant {unknown}; the variants are {list(builders)}")
    return {name: builders[name]() for name in selected}


def loss_value(loss: torch.nn.Module, embeddings: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """The loss on given embeddings; the stateful losses take the dataset indices as labels."""
    if hasattr(loss, "compute_loss_from_embeddings"):
        return loss.compute_loss_from_embeddings(embeddings, labels)
    return loss.calculate_loss([[embedding] for embedding in embeddings], labels)


def interleaved_medians(
    steps: dict[str, Callable[[], None]], rounds: int, warmup: int, device: torch.device | str = "cpu"
) -> dict[str, float]:
    """Median time of each step over ``rounds`` rounds; each round runs every step once, in a shuffled order."""
    device = torch.device(device)
    for step in steps.values():
        for _ in range(warmup):
            step()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in steps}
    order = list(steps)
    shuffler = random.Random(0)
    for _ in range(rounds):
        shuffler.shuffle(order)
        for name in order:
            times[name].append(timed(steps[name], device))
    return {name: statistics.median(values) for name, values in times.items()}


def random_embeddings(batch: int, device: torch.device | str = "cpu", columns: int = 3) -> list[torch.Tensor]:
    """The loss-only inputs: ``columns`` (anchor, positive, hard negative) random 384-d leaves, seeded by ``batch``."""
    generator = torch.Generator().manual_seed(batch)
    return [torch.randn(batch, 384, generator=generator).to(device).requires_grad_() for _ in range(columns)]


def bench_loss_only(
    batch_sizes: list[int], rounds: int, device: torch.device | str = "cpu", names: Iterable[str] | None = None
) -> list[dict]:
    device = torch.device(device)
    rows = []
    for batch in batch_sizes:
        embeddings = random_embeddings(batch, device)
        losses = {name: loss.to(device) for name, loss in variants(_Dimension384(), False, names).items()}
        labels = torch.arange(batch, device=device)

        def step(loss, embeddings=embeddings, labels=labels):
            value = loss_value(loss, embeddings, labels)
            value.backward()
            for tensor in embeddings:
                tensor.grad = None

        medians = interleaved_medians(
            {name: (lambda loss=loss: step(loss)) for name, loss in losses.items()}, rounds, warmup=3, device=device
        )
        reference = medians[MNRL]
        for name, seconds in medians.items():
            rows.append({"batch": batch, "loss": name, "ms": 1000 * seconds, "ratio_vs_mnrl": seconds / reference})
    return rows


def load_encoder(
    device: torch.device | str = "cpu", name: str = MODEL, max_seq_length: int = 32
) -> SentenceTransformer:
    """all-MiniLM-L6-v2 (from TEMPNLP_MIRROR or the Hub), or ``name``, on ``device``, in training mode, at the given
    length."""
    model = SentenceTransformer(resolve_model(name), device=str(device))
    model.max_seq_length = max_seq_length
    model.train()
    return model


def snli_features(model: SentenceTransformer, batch: int, columns: int = 2) -> list[dict[str, torch.Tensor]]:
    """The first ``batch`` SNLI triplets, tokenised on the model's device: (anchor, positive[, negative])."""
    data = snli_triplets("train", limit=batch)
    names = ["anchor", "positive", "negative"][:columns]
    return [
        {key: value.to(model.device) if isinstance(value, torch.Tensor) else value for key, value in f.items()}
        for f in (model.preprocess(data[name]) for name in names)
    ]


def bench_training_step(
    rounds: int,
    batch: int = 64,
    *,
    model: SentenceTransformer | None = None,
    names: Iterable[str] | None = None,
    autocast: torch.dtype | None = None,
    warmup: int = 1,
) -> list[dict]:
    """Encode + loss + backward of every variant (``names``: those) on MiniLM, ``model`` or a fresh one on the
    CPU; ``autocast``: the dtype to run the encoder and the loss in under ``torch.autocast``."""
    model = model if model is not None else load_encoder()
    device = model.device
    features = snli_features(model, batch)
    losses = {name: loss.to(device) for name, loss in variants(model, names is None, names).items()}
    labels = torch.arange(batch, device=device)

    def step(loss):
        # Fresh dicts: the model writes its outputs into the feature dicts it is given.
        context = torch.autocast(device.type, dtype=autocast) if autocast else contextlib.nullcontext()
        with context:
            value = loss([dict(f) for f in features], labels)
        value.backward()
        model.zero_grad(set_to_none=True)

    medians = interleaved_medians(
        {name: (lambda loss=loss: step(loss)) for name, loss in losses.items()}, rounds, warmup, device
    )
    reference = medians[MNRL]
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
        f"Machine: {result['machine']}. "
        + (f"Device: {result['device']}. " if result.get("device", "cpu") != "cpu" else "")
        + f"Command: `{result['command']}`. Median of {result['rounds_loss']} "
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
        smallest = batches[0]
        extra = max(cell[name, smallest]["ms"] - cell[MNRL, smallest]["ms"] for name in names)
        lines += [
            "",
            f"The largest loss-only overhead at batch {smallest} is {extra:.2f} ms, "
            f"{100 * extra / mnrl_step:.3f}% of an MNRL training step: differences between rows of this table are "
            "run-to-run noise of the encoder, not the loss.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--device", choices=["cuda", "cpu"], default=default_device(), help="default: cuda if available, else cpu"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: batches 16 and 64, 3 rounds, a training step at batch 8"
    )
    parser.add_argument("--output-dir", type=Path, default=RESULTS, help="writes bench_loss.json and .md here")
    parser.add_argument("--output", type=Path, help="the JSON file to write instead (the .md beside it)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    device = torch.device(args.device)
    rounds_loss, rounds_step = (3, 1) if args.quick else (30, 15)
    batches = [16, 64] if args.quick else [64, 256, 1024]
    command = "python -m eval.bench_loss" + (" --quick" if args.quick else "")
    command += f" --device {args.device}" if args.device != "cpu" else ""
    result = {
        "command": command,
        "machine": machine_description(),
        "device": args.device,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "tempnlp": tempnlp.__version__,
        },
        "rounds_loss": rounds_loss,
        "rounds_step": rounds_step,
        "loss_only": bench_loss_only(batches, rounds_loss, device),
        "training_step": bench_training_step(rounds_step, 8 if args.quick else 64, model=load_encoder(device)),
    }
    markdown = to_markdown(result)
    output = args.output if args.output is not None else args.output_dir / "bench_loss.json"
    write_text_atomic(output, json.dumps(result, indent=2) + "\n")
    write_text_atomic(output.with_suffix(".md"), markdown)
    print(markdown)


if __name__ == "__main__":
    main()
