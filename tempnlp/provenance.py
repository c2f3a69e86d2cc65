"""What a result was produced with: package versions, the machine and its boot, and a revision for a local model.

Training (``results.json``), the grid runner and the benchmarks under ``eval/`` record these; ``tempnlp eval mteb``
files a local model's results under :func:`content_revision`.
"""

from __future__ import annotations

import hashlib
import platform
from importlib.metadata import version
from pathlib import Path

import torch

__all__ = ["boot_id", "content_revision", "machine_description", "package_versions"]


def package_versions() -> dict[str, str]:
    """The versions of Python and of the packages a result depends on ("not installed" for a missing one)."""
    packages = ["tempnlp", "torch", "transformers", "sentence-transformers", "datasets", "mteb"]
    found = {"python": platform.python_version()}
    for package in packages:
        try:
            found[package] = version(package)
        except Exception:
            found[package] = "not installed"
    return found


def machine_description() -> str:
    """What the timings ran on: the CPU model (or GPU), architecture and torch's thread count."""
    processor = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        models = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        processor = models[0] if models else processor
    if torch.cuda.is_available():
        processor = f"{torch.cuda.get_device_name()} (GPU), {processor}"
    return f"{processor}, {platform.machine()}, {torch.get_num_threads()} torch threads"


def boot_id() -> str | None:
    """The kernel's id of this boot (Linux), or None where there is none.

    A machine description names a CPU model, not a host: a shared machine with the same description can run at
    another speed after a restart, so timings are only compared between results of one boot.
    """
    path = Path("/proc/sys/kernel/random/boot_id")
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def content_revision(model_path: Path) -> str:
    """A revision for a local model without one: the first 12 hex digits of a SHA-256 over its files (weights,
    module configs, tokenizer), each with its path, so that another pooling or token length in the same folder is
    another revision. The model card (README.md) and tempnlp's own records are left out: they describe the model."""
    model_path = Path(model_path)
    weights = sorted(model_path.rglob("*.safetensors")) or sorted(model_path.rglob("*.bin"))
    if not weights:
        raise FileNotFoundError(f"No weights (*.safetensors or *.bin) under {model_path} to derive a revision from.")
    described = {"README.md", "tempnlp_recipe.yaml"}
    digest = hashlib.sha256()
    for path in sorted(p for p in model_path.rglob("*") if p.is_file()):
        relative = path.relative_to(model_path)
        if relative.as_posix() in described or any(part.startswith(".") for part in relative.parts):
            continue
        digest.update(relative.as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:12]
