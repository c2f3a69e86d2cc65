"""The loss benchmark's numbers that the README quotes are the ones eval/results/bench_loss.json holds."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_quotes_the_committed_loss_benchmark():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    result = json.loads((ROOT / "eval" / "results" / "bench_loss.json").read_text(encoding="utf-8"))
    ratio = {(row["loss"], row["batch"]): row["ratio_vs_mnrl"] for row in result["loss_only"]}
    step = {row["loss"]: row["ratio_vs_mnrl"] for row in result["training_step"]}
    # "`InfoNCE individual` 1.63x / 1.50x / 1.09x at batch 64 / 256 / 1024"
    quoted = re.findall(r"`([^`]+)`\s+\(?(\d+\.\d\d)x / (\d+\.\d\d)x / (\d+\.\d\d)x", readme)
    assert len(quoted) >= 6
    for name, *values in quoted:
        for batch, value in zip((64, 256, 1024), values, strict=True):
            assert f"{ratio[name, batch]:.2f}" == value, (name, batch)
    stateless = [
        "InfoNCE fixed 0.05", "InfoNCE learnable", "InfoNCE MACL", "InfoNCE MACL reweight", "InfoNCE DySTreSS",
        "InfoNCE DySTreSS shifted", "InfoNCE symmetric", "DCL", "DCLW",
    ]  # fmt: skip
    for batch, claim in ((64, "1.13x to 1.37x at batch 64"), (256, "1.07x to 1.28x at batch 256"),
                         (1024, "0.96x to 1.16x at batch 1024")):  # fmt: skip
        low, high = min(ratio[n, batch] for n in stateless), max(ratio[n, batch] for n in stateless)
        assert f"{low:.2f}x to {high:.2f}x at batch {batch}" == claim and claim in readme
    without_queue = [value for name, value in step.items() if "queue" not in name]
    assert f"{min(without_queue):.2f}x to {max(without_queue):.2f}x for every loss" in readme
    assert f"momentum queue is {step['iSogCLR, queue 256']:.2f}x" in readme
