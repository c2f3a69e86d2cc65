"""What the temperature does to the embedding space: alignment, uniformity, similarity distributions, tau_i.

* Alignment and uniformity (Wang and Isola 2020, arXiv 2005.10242) on STS Benchmark's validation split, as
  SimCSE's figure does: positive pairs are those scored above 4 (of 5); uniformity is taken over all its
  distinct sentences. ``align = E ||f(x) - f(y)||^2`` over positive pairs, ``uniform = log E exp(-2 ||f(x) -
  f(y)||^2)`` over all pairs of sentences, on unit-normalised embeddings; lower is better for both.
* The cosine similarity of positive pairs and of random pairs (each first sentence against a shuffled second).
* Given a saved loss state (a ``torch.save`` file holding a 1-D ``tau`` tensor, or a dict with ``*.tau`` entries),
  the distribution of the per-sample temperatures of the samples training visited, one per direction.

Writes ``diagnostics.json`` and PNG plots to the output folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer

from tempnlp._io import write_bytes_atomic, write_json_atomic
from tempnlp._plots import figure_png, pyplot
from tempnlp.evaluation.sts import STSTask, encode_unique, load_mteb_pairs

POSITIVE_THRESHOLD = 4.0


def alignment(first: torch.Tensor, second: torch.Tensor) -> float:
    return float((F.normalize(first, dim=1) - F.normalize(second, dim=1)).pow(2).sum(dim=1).mean())


def uniformity(embeddings: torch.Tensor, t: float = 2.0) -> float:
    distances = torch.pdist(F.normalize(embeddings, dim=1), p=2).pow(2)
    return float(torch.logsumexp(-t * distances, dim=0) - np.log(distances.numel()))


def _summary(values: np.ndarray) -> dict[str, float]:
    quantiles = np.quantile(values, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        **{f"q{int(q * 100):02d}": float(v) for q, v in zip((0.05, 0.25, 0.5, 0.75, 0.95), quantiles, strict=True)},
    }


def load_temperatures(path: str | Path) -> dict[str, np.ndarray]:
    """The per-sample temperatures of a saved loss state (read with ``weights_only=True``): one array per ``tau``
    buffer, named by its key without ``.tau`` (a two-direction loss keeps one per direction), holding the samples
    training visited when the buffer has a ``seen`` beside it (the others still sit at their starting value)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Loss state {path} does not exist.")
    state: Any = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        state = {"tau": state}
    keys = [str(key) for key in state if str(key) == "tau" or str(key).endswith(".tau")]
    if not keys:
        raise ValueError(f"Loss state {path} has no 'tau' entry (keys: {', '.join(map(str, state))}).")
    temperatures = {}
    for key in keys:
        tau = state[key]
        if not isinstance(tau, torch.Tensor) or tau.dim() != 1 or tau.numel() == 0:
            raise ValueError(f"Loss state {path}: {key} is not a non-empty 1-D tensor of temperatures.")
        seen = state.get(key[: -len("tau")] + "seen")
        if isinstance(seen, torch.Tensor) and seen.shape == tau.shape:
            tau = tau[seen.bool()]
        if tau.numel() == 0:
            raise ValueError(f"Loss state {path}: no sample of {key} was visited in training (its 'seen' is all 0).")
        temperatures[key.removesuffix(".tau").removesuffix("tau") or "tau"] = tau.float().numpy()
    return temperatures


def diagnose(
    model: SentenceTransformer,
    *,
    model_name: str,
    output_dir: str | Path,
    loss_state: str | Path | None = None,
    batch_size: int = 64,
    seed: int = 0,
) -> dict[str, Any]:
    output_dir = Path(output_dir)
    pairs = load_mteb_pairs(STSTask("STSBenchmark", "mteb/stsbenchmark-sts", "", split="validation"))
    embeddings = encode_unique(model, [*pairs.sentences1, *pairs.sentences2], batch_size=batch_size)
    first = torch.from_numpy(np.stack([embeddings[s] for s in pairs.sentences1])).float()
    second = torch.from_numpy(np.stack([embeddings[s] for s in pairs.sentences2])).float()
    positive = torch.from_numpy(pairs.scores > POSITIVE_THRESHOLD)
    permutation = torch.randperm(len(second), generator=torch.Generator().manual_seed(seed))
    cos_positive = F.cosine_similarity(first[positive], second[positive]).numpy()
    cos_random = F.cosine_similarity(first, second[permutation]).numpy()
    report: dict[str, Any] = {
        "model": model_name,
        "data": "mteb/stsbenchmark-sts, validation split",
        "positive_pairs": int(positive.sum()),
        "sentences": len(embeddings),
        "alignment": alignment(first[positive], second[positive]),
        "uniformity": uniformity(torch.from_numpy(np.stack(list(embeddings.values()))).float()),
        "cosine": {"positive_pairs": _summary(cos_positive), "random_pairs": _summary(cos_random)},
    }
    plots = {"similarities": _plot_similarities(model_name, cos_positive, cos_random, report)}
    if loss_state is not None:
        temperatures = load_temperatures(loss_state)
        report["temperature"] = {
            "loss_state": str(loss_state),
            "per_sample": {
                name: {"samples": int(values.size), **_summary(values)} for name, values in temperatures.items()
            },
        }
        plots["temperatures"] = _plot_temperatures(model_name, temperatures)
    for name, png in plots.items():
        write_bytes_atomic(output_dir / f"{name}.png", png)
    report["plots"] = [f"{name}.png" for name in plots]
    write_json_atomic(output_dir / "diagnostics.json", report)
    return report


def _plot_similarities(model_name: str, positive: np.ndarray, random: np.ndarray, report: dict) -> bytes:
    plt = pyplot()

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
    bins = np.linspace(-1, 1, 81)
    left.hist(random, bins=bins, density=True, alpha=0.6, label=f"random pairs (n={random.size})", color="tab:gray")
    left.hist(positive, bins=bins, density=True, alpha=0.6, label=f"positive pairs, score > 4 (n={positive.size})")
    left.set_xlabel("cosine similarity")
    left.set_ylabel("density")
    left.set_title("Cosine similarity of STS-B validation pairs")
    left.legend(loc="upper left")
    right.scatter([report["uniformity"]], [report["alignment"]], s=60, color="tab:red")
    right.annotate(
        model_name.split("/")[-1],
        (report["uniformity"], report["alignment"]),
        textcoords="offset points",
        xytext=(0, 8),
        ha="center",
    )
    right.set_xlabel("uniformity loss (lower is better)")
    right.set_ylabel("alignment loss (lower is better)")
    right.set_title("Alignment and uniformity (Wang and Isola 2020)")
    right.grid(alpha=0.3)
    figure.suptitle(model_name)
    return figure_png(figure, dpi=120, bbox_inches="tight")


def _plot_temperatures(model_name: str, temperatures: dict[str, np.ndarray]) -> bytes:
    plt = pyplot()

    figure, axis = plt.subplots(figsize=(7, 4))
    low = min(values.min() for values in temperatures.values())
    high = max(values.max() for values in temperatures.values())
    bins = np.linspace(low, high, 61) if high > low else 60
    for name, values in temperatures.items():
        axis.hist(values, bins=bins, alpha=0.6 if len(temperatures) > 1 else 1.0, label=f"{name} ({values.size})")
    axis.set_xlabel("per-sample temperature tau_i")
    axis.set_ylabel("number of training samples")
    axis.set_title(f"Learned per-sample temperatures of the samples trained on\n{model_name}")
    axis.legend()
    return figure_png(figure, dpi=120, bbox_inches="tight")
