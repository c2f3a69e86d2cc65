"""Run mteb 2.x on its own task classes, with task data from the mirror when one is configured.

Results go to mteb's result-cache layout (``<output_dir>/results/<org>__<name>/<revision>/<Task>.json`` plus
``model_meta.json``), which is what the MTEB results repository takes.

With ``TEMPNLP_MIRROR`` set, every task's data is read from ``<mirror>/datasets/<the task's Hub dataset id>``;
a task the mirror lacks is an error naming the missing path, never a silent skip. Without the mirror mteb
downloads from the Hub as usual.
"""

from __future__ import annotations

import difflib
import json
import logging
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict
from sentence_transformers import SentenceTransformer

from tempnlp._io import write_json_atomic
from tempnlp.data.beir import load_beir
from tempnlp.data.hub import mirror_root, read_jsonl
from tempnlp.provenance import content_revision

logger = logging.getLogger(__name__)


def get_tasks(task_names: Sequence[str] | None = None, benchmark: str | None = None) -> list:
    """mteb task objects by name or benchmark; unknown names are errors that suggest the closest."""
    import mteb

    if (task_names is None) == (benchmark is None):
        raise ValueError("Give either tasks (e.g. STS12,STSBenchmark) or a benchmark name, not both or neither.")
    if benchmark is not None:
        try:
            return list(mteb.get_benchmark(benchmark).tasks)
        except (KeyError, ValueError) as error:
            known = [b.name for b in mteb.get_benchmarks()]
            close = difflib.get_close_matches(benchmark, known, n=1, cutoff=0.0)
            raise ValueError(f"Unknown MTEB benchmark {benchmark!r}; did you mean {close[0]!r}?") from error
    known_names = {task.metadata.name for task in mteb.get_tasks(exclude_superseded=False)}
    for name in task_names:
        if name not in known_names:
            close = difflib.get_close_matches(name, sorted(known_names), n=1, cutoff=0.0)
            raise ValueError(f"Unknown MTEB task {name!r}; did you mean {close[0]!r}?")
    return list(mteb.get_tasks(tasks=list(task_names)))


def inject_mirror_data(task: Any, root: Path) -> None:
    """Give an mteb task its data from the mirror, so that ``mteb.evaluate`` never reaches for the Hub."""
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.sts import AbsTaskSTS

    folder = root / "datasets" / task.metadata.dataset["path"]
    if isinstance(task, AbsTaskSTS):
        splits = {}
        for split in task.eval_splits:
            path = folder / f"{split}.jsonl.gz"
            if not path.is_file():
                raise FileNotFoundError(f"MTEB task {task.metadata.name}: its data is not in the mirror ({path}).")
            rows = list(read_jsonl(path))
            if not rows:
                raise ValueError(f"MTEB task {task.metadata.name}: {path} holds no rows.")
            splits[split] = Dataset.from_dict(
                {column: [row[column] for row in rows] for column in ("sentence1", "sentence2", "score")}
            )
        task.dataset = {"default": DatasetDict(splits)}
    elif isinstance(task, AbsTaskRetrieval):
        subset = {}
        for split in task.eval_splits:
            corpus, queries, qrels = load_beir(folder, split=split)
            subset[split] = {
                "corpus": Dataset.from_dict(
                    {
                        "id": list(corpus),
                        "title": [doc["title"] for doc in corpus.values()],
                        "text": [doc["text"] for doc in corpus.values()],
                    }
                ),
                "queries": Dataset.from_dict({"id": list(queries), "text": list(queries.values())}),
                "relevant_docs": qrels,
                "top_ranked": None,
            }
        task.dataset = {"default": subset}
    else:
        raise NotImplementedError(
            f"MTEB task {task.metadata.name} ({type(task).__mro__[1].__name__}) has no mirror loader in tempnlp; "
            "unset TEMPNLP_MIRROR to load it from the Hub."
        )
    task.data_loaded = True


def training_losses(model_path: Path | None) -> list[dict[str, Any]]:
    """The losses (class and parameters, temperature policy included) that the model card of a trained model
    records: sentence-transformers writes each as ``* Loss: <code>...</code> with these parameters:`` followed by a
    JSON block. Empty for a model without such a card."""
    card = model_path / "README.md" if model_path is not None else None
    if card is None or not card.is_file():
        return []
    losses, lines = [], card.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if line.startswith("* Loss: <code>"):
            entry: dict[str, Any] = {"loss": line.split("<code>")[1].split("</code>")[0]}
            if number + 1 < len(lines) and lines[number + 1].strip() == "```json":
                end = next(i for i in range(number + 2, len(lines)) if lines[i].strip() == "```")
                try:
                    entry["parameters"] = json.loads("\n".join(lines[number + 2 : end]))
                except json.JSONDecodeError:
                    entry["parameters"] = "\n".join(lines[number + 2 : end]).strip()
            losses.append(entry)
    return losses


def build_model_meta(
    model: SentenceTransformer,
    *,
    name: str,
    model_path: Path | None,
    revision: str | None = None,
    training_datasets: Sequence[str] | None = None,
    adapted_from: str | None = None,
):
    """The ModelMeta mteb writes beside the results: mteb's own entry for a known model, ours otherwise."""
    import mteb
    from mteb.models import ModelMeta, SentenceTransformerEncoderWrapper

    if "/" not in name:
        raise ValueError(f"MTEB model names look like 'organisation/model', got {name!r}: pass --model-name.")
    try:
        known = mteb.get_model_meta(name)
    except (KeyError, ValueError):
        known = None
    if known is not None and known.revision is not None and revision in (None, known.revision) and not adapted_from:
        return known
    if revision is None:
        if model_path is None:
            raise ValueError(f"{name} is not in mteb's registry: pass --revision (its Hub commit).")
        revision = content_revision(model_path)
    transformer = model[0]
    return ModelMeta(
        loader=SentenceTransformerEncoderWrapper,
        name=name,
        revision=revision,
        release_date=date.today().isoformat(),
        languages=["eng-Latn"],
        n_parameters=sum(parameter.numel() for parameter in model.parameters()),
        memory_usage_mb=round(sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20, 1),
        max_tokens=model.max_seq_length,
        embed_dim=model.get_embedding_dimension(),
        license=None,
        open_weights=True,
        public_training_code="https://pypi.org/project/tempnlp/",
        public_training_data=None,
        framework=["Sentence Transformers", "PyTorch"],
        similarity_fn_name="cosine",
        use_instructions=False,
        training_datasets=set(training_datasets or []),
        adapted_from=adapted_from or getattr(getattr(transformer, "auto_model", None), "name_or_path", None),
    )


def run_mteb(
    model: SentenceTransformer,
    meta,
    tasks: list,
    *,
    output_dir: str | Path,
    batch_size: int = 32,
    run_info: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Evaluate ``model`` on ``tasks``; return {task: main_score x 100} and write mteb's result cache."""
    import mteb
    from mteb.models import SentenceTransformerEncoderWrapper

    root = mirror_root()
    if root is not None:
        for task in tasks:
            inject_mirror_data(task, root)
    wrapper = SentenceTransformerEncoderWrapper(model)
    wrapper.mteb_model_meta = meta
    output_dir = Path(output_dir)
    results = mteb.evaluate(
        wrapper,
        tasks,
        cache=mteb.ResultCache(cache_path=output_dir),
        overwrite_strategy="only-missing",  # a rerun picks up where an interrupted one stopped
        encode_kwargs={"batch_size": batch_size},
        co2_tracker=False,
    )
    scores = {result.task_name: 100.0 * result.get_score() for result in results.task_results}
    write_json_atomic(
        output_dir / "tempnlp_mteb_run.json",
        {
            "model": meta.name,
            "revision": meta.revision,
            "data": f"mirror {root}" if root is not None else "Hugging Face Hub",
            "scores": {task: round(score, 4) for task, score in scores.items()},
            "results_folder": str(output_dir / "results" / meta.model_name_as_path() / meta.revision),
            **(run_info or {}),
        },
    )
    return scores
