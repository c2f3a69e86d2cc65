"""The loss benchmark's numbers that the README quotes are the ones eval/results/bench_loss.json holds: every
quoted ratio, range and time is found in the README by its wording and recomputed from the JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MNRL = "MNRL (ST, scale 20)"
STATELESS = [
    "InfoNCE fixed 0.05", "InfoNCE learnable", "InfoNCE MACL", "InfoNCE MACL reweight", "InfoNCE DySTreSS",
    "InfoNCE DySTreSS shifted", "InfoNCE symmetric", "DCL", "DCLW",
]  # fmt: skip


def _one(pattern: str, text: str) -> tuple[str, ...]:
    found = re.findall(pattern, text)
    assert len(found) == 1, (pattern, found)
    return found[0] if isinstance(found[0], tuple) else (found[0],)


def test_readme_quotes_the_committed_loss_benchmark():
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())  # sentences wrap anywhere
    result = json.loads((ROOT / "eval" / "results" / "bench_loss.json").read_text(encoding="utf-8"))
    ratio = {(row["loss"], row["batch"]): row["ratio_vs_mnrl"] for row in result["loss_only"]}
    ms = {(row["loss"], row["batch"]): row["ms"] for row in result["loss_only"]}
    step = {row["loss"]: row["ratio_vs_mnrl"] for row in result["training_step"]}
    step_ms = {row["loss"]: row["ms"] for row in result["training_step"]}

    # "`InfoNCE individual` 1.63x / 1.50x / 1.09x at batch 64 / 256 / 1024"
    quoted = re.findall(r"`([^`]+)`\s+\(?(\d+\.\d\d)x / (\d+\.\d\d)x / (\d+\.\d\d)x", readme)
    assert len(quoted) >= 6
    for name, *values in quoted:
        for batch, value in zip((64, 256, 1024), values, strict=True):
            assert f"{ratio[name, batch]:.2f}" == value, (name, batch)

    for batch in (64, 256, 1024):  # the stateless policies' range
        low, high = min(ratio[n, batch] for n in STATELESS), max(ratio[n, batch] for n in STATELESS)
        assert _one(rf"(\d\.\d\d)x to (\d\.\d\d)x at batch {batch}\b", readme) == (f"{low:.2f}", f"{high:.2f}")

    assert _one(r"MNRL's loss takes (\d+\.\d\d) ms at batch 64", readme) == (f"{ms[MNRL, 64]:.2f}",)
    fixed, unchecked = "InfoNCE fixed 0.05", "InfoNCE fixed 0.05, no finite check"
    check = _one(
        r"The finite check is (\d+\.\d) ms of the (\d+\.\d\d) ms of `InfoNCE fixed 0.05` at batch 64 "
        r"\((\d\.\d\d)x with it, (\d\.\d\d)x without\)",
        readme,
    )
    assert check == (
        f"{ms[fixed, 64] - ms[unchecked, 64]:.1f}",
        f"{ms[fixed, 64]:.2f}",
        f"{ratio[fixed, 64]:.2f}",
        f"{ratio[unchecked, 64]:.2f}",
    )
    extra = max(ms[name, 64] - ms[MNRL, 64] for name, batch in ms if batch == 64)
    assert _one(r"The largest extra time, (\d+\.\d) ms at batch 64, is (\d\.\d\d)% of a training step", readme) == (
        f"{extra:.1f}",
        f"{100 * extra / step_ms[MNRL]:.2f}",
    )

    without_queue = [value for name, value in step.items() if "queue" not in name]
    assert _one(r"(\d\.\d\d)x to (\d\.\d\d)x for every loss", readme) == (
        f"{min(without_queue):.2f}",
        f"{max(without_queue):.2f}",
    )
    assert _one(r"come out at (\d\.\d\d)x and (\d\.\d\d)x", readme) == (f"{step[fixed]:.2f}", f"{step[unchecked]:.2f}")
    assert _one(r"momentum queue is (\d\.\d\d)x", readme) == (f"{step['iSogCLR, queue 256']:.2f}",)
