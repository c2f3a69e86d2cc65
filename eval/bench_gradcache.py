"""Peak memory of one training step with and without GradCache, as the batch grows past the mini-batch size.

Each (loss, batch) runs in a fresh process: all-MiniLM-L6-v2 (TEMPNLP_MIRROR or the Hub), max length 32, SNLI
(anchor, positive) pairs, one forward + backward. The process's peak resident memory is reset after the model
and data are loaded (Linux ``clear_refs``), so the reported figure is what the step itself added: activations,
gradients and the loss. CPU only; on a GPU the same comparison is ``torch.cuda.max_memory_allocated``.

    TEMPNLP_MIRROR=../shared/mirror python -m eval.bench_gradcache     # writes eval/results/bench_gradcache.*
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from tempnlp._io import write_json_atomic, write_text_atomic

RESULTS = Path(__file__).parent / "results"
MINI_BATCH = 32


def _kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(loss_name: str, batch: int, cached: bool) -> None:
    import torch

    from tempnlp.data import resolve_model, snli_triplets
    from tempnlp.losses import InfoNCELoss, ISogCLRLoss
    from tempnlp.models import load_model
    from tempnlp.temperature import MACLTemperature

    torch.manual_seed(0)
    model = load_model(resolve_model("sentence-transformers/all-MiniLM-L6-v2"), device="cpu")
    model.max_seq_length = 32
    data = snli_triplets("train", limit=batch)
    features = [model.preprocess(data["anchor"]), model.preprocess(data["positive"])]
    mini = MINI_BATCH if cached else None
    if loss_name == "InfoNCE (MACL)":
        loss = InfoNCELoss(model, MACLTemperature(), mini_batch_size=mini)
    else:
        loss = ISogCLRLoss(model, num_samples=batch, mini_batch_size=mini)
    labels = torch.arange(batch)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    baseline = _kib("VmRSS")
    value = loss(features, labels)
    value.backward()
    print(json.dumps({"peak_mib": (_kib("VmHWM") - baseline) / 1024, "loss_value": value.item()}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    parser.add_argument("--batches", default="32,64,128,256")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2] == "cached")
        return
    rows = []
    for loss_name in ("InfoNCE (MACL)", "iSogCLR"):
        for batch in (int(b) for b in args.batches.split(",")):
            for mode in ("uncached", "cached"):
                output = (
                    subprocess.run(
                        [sys.executable, "-m", "eval.bench_gradcache", "--child", loss_name, str(batch), mode],
                        check=True,
                        capture_output=True,
                        text=True,
                    )
                    .stdout.strip()
                    .splitlines()[-1]
                )
                rows.append({"loss": loss_name, "batch": batch, "mode": mode, **json.loads(output)})
                print(rows[-1], flush=True)
    result = {"command": "python -m eval.bench_gradcache", "mini_batch_size": MINI_BATCH, "rows": rows}
    write_json_atomic(args.output_dir / "bench_gradcache.json", result)
    markdown = to_markdown(result)
    write_text_atomic(args.output_dir / "bench_gradcache.md", markdown)
    print(markdown)


def to_markdown(result: dict) -> str:
    rows = result["rows"]
    lines = [
        "# GradCache peak memory",
        "",
        f"Command: `{result['command']}`. Memory one training step adds on top of the loaded model (peak RSS, MiB), "
        f"all-MiniLM-L6-v2, max length 32, CPU; cached runs use mini-batches of {result['mini_batch_size']}.",
        "",
        "| loss | batch | uncached MiB | cached MiB | loss value uncached / cached |",
        "|---|---|---|---|---|",
    ]
    for loss_name in dict.fromkeys(r["loss"] for r in rows):
        for batch in sorted({r["batch"] for r in rows}):
            pair = {r["mode"]: r for r in rows if r["loss"] == loss_name and r["batch"] == batch}
            lines.append(
                f"| {loss_name} | {batch} | {pair['uncached']['peak_mib']:.0f} | {pair['cached']['peak_mib']:.0f} | "
                f"{pair['uncached']['loss_value']:.6f} / {pair['cached']['loss_value']:.6f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
