"""Which iSogCLR ``rho`` leaves a given temperature where it is, for all-MiniLM-L6-v2 on grid 1's SNLI batches?

iSogCLR moves each tau_i by ``G_i = rho - KL(w_i || uniform)`` (with ``s`` at its batch value), where ``w_i`` is the
softmax of the row's negatives' margins ``h_ij / tau``: tau rises while the softmax is more concentrated than
``rho`` allows and stops where ``KL = rho``. So the KL a temperature produces on real batches is the rho at which
that temperature is stationary. This script encodes grid 1's training triplets with the untrained model, forms
its batches (64 anchors; each row's negatives are the other 63 positives and all 64 hard negatives, 127 in all, as
in MNRL), and reports the distribution of that KL over rows for a few temperatures.

    TEMPNLP_MIRROR=../shared/mirror python -m eval.isogclr_rho   # writes eval/results/isogclr_rho.{json,md}
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from tempnlp._io import write_json_atomic, write_text_atomic
from tempnlp.data.nli import snli_triplets

RESULTS = Path(__file__).parent / "results"
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TEMPERATURES = (0.02, 0.05, 0.1, 0.2)


def kl_to_uniform(anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, tau: float) -> torch.Tensor:
    """KL(w_i || uniform) per row of one batch, ``w_i`` the softmax of ``h_ij / tau`` over the row's negatives."""
    similarities = anchors @ torch.cat([positives, negatives]).T
    rows = torch.arange(len(anchors))
    margins = similarities - similarities[rows, rows].unsqueeze(1)
    mask = torch.ones_like(margins, dtype=torch.bool)
    mask[rows, rows] = False
    count = margins.size(1) - 1
    log_w = torch.log_softmax((margins / tau).masked_fill(~mask, float("-inf")), dim=1)
    return torch.where(mask, log_w.exp() * (log_w + math.log(count)), torch.zeros_like(log_w)).sum(dim=1)


def run(triplets: int, batch_size: int, max_seq_length: int) -> dict:
    from tempnlp.models import load_model

    data = snli_triplets("train", limit=triplets)
    model = load_model(MODEL)
    model.max_seq_length = max_seq_length
    encoded = [
        model.encode(data[column], batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True).cpu()
        for column in ("anchor", "positive", "negative")
    ]
    full = len(data) - len(data) % batch_size  # full batches only, as training sees them
    rows = {}
    for tau in TEMPERATURES:
        batches = [[e[start : start + batch_size] for e in encoded] for start in range(0, full, batch_size)]
        kl = torch.cat([kl_to_uniform(*batch, tau) for batch in batches]).numpy()
        rows[str(tau)] = {
            "median": round(float(np.median(kl)), 3),
            "mean": round(float(np.mean(kl)), 3),
            "q10": round(float(np.quantile(kl, 0.1)), 3),
            "q90": round(float(np.quantile(kl, 0.9)), 3),
        }
    return {
        "command": "TEMPNLP_MIRROR=../shared/mirror python -m eval.isogclr_rho",
        "model": MODEL,
        "data": f"the first {len(data)} SNLI training triplets (grid 1's set), "
        f"{full // batch_size} consecutive batches of {batch_size}",
        "max_seq_length": max_seq_length,
        "negatives_per_row": 2 * batch_size - 1,
        "rho_limit": round(math.log(2 * batch_size - 1), 3),
        "kl_by_tau": rows,
    }


def markdown(result: dict) -> str:
    table = "".join(
        f"| {tau} | {row['median']:.2f} | {row['mean']:.2f} | {row['q10']:.2f} - {row['q90']:.2f} |\n"
        for tau, row in result["kl_by_tau"].items()
    )
    return (
        "# Which rho keeps iSogCLR's tau where it is\n\n"
        f"Command: `{result['command']}`. Model: untrained `{result['model']}`, length {result['max_seq_length']}; "
        f"data: {result['data']}; {result['negatives_per_row']} negatives a row, so rho must stay below "
        f"log({result['negatives_per_row']}) = {result['rho_limit']}.\n\n"
        "KL(w_i || uniform) of each row's softmax over its negatives at temperature tau: the rho at which that tau "
        "is stationary for the row. A rho below it raises tau_i; above it, lowers it.\n\n"
        "| tau | median KL | mean | 10% - 90% of rows |\n|---|---|---|---|\n" + table
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--triplets", type=int, default=5120, help="grid 1 trains on the first 5,120")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-seq-length", type=int, default=32)
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = run(args.triplets, args.batch_size, args.max_seq_length)
    write_json_atomic(args.output_dir / "isogclr_rho.json", result)
    text = markdown(result)
    write_text_atomic(args.output_dir / "isogclr_rho.md", text)
    print(text)


if __name__ == "__main__":
    main()
