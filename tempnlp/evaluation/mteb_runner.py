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

import yaml
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
    subsets = list(task.hf_subsets or ["default"])
    if subsets != ["default"]:
        # the mirror lays out one file per split; a task split into subsets would read one file as all of them
        raise NotImplementedError(
            f"MTEB task {task.metadata.name} is split into subsets ({', '.join(subsets[:4])}"
            f"{', ...' if len(subsets) > 4 else ''}), which tempnlp's mirror loader does not read; unset "
            "TEMPNLP_MIRROR to load it from the Hub."
        )
    if isinstance(task, AbsTaskSTS):
        splits = {}
        for split in task.eval_splits:
            path = folder / f"{split}.jsonl.gz"
            if not path.is_file():
                raise FileNotFoundError(
                    f"MTEB task {task.metadata.name}: its data is not in the mirror ({path}). Put it there, or "
                    "unset TEMPNLP_MIRROR to load it from the Hub."
                )
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


def _registry_entry(name: str | None):
    """mteb's registry entry (ModelMeta) for the model ``name``, or None for a model it does not know."""
    import mteb

    try:
        return mteb.get_model_meta(name, fetch_from_hf=False) if name else None
    except (KeyError, ValueError):
        return None


def registry_revision(name: str) -> str | None:
    """The revision mteb's registry gives the model ``name``, or None for a model it does not know."""
    entry = _registry_entry(name)
    return entry.revision if entry is not None else None


def local_model_name(folder: Path) -> str:
    """``local/<folder name>``; for the ``model`` folder a ``tempnlp train`` run writes, the run's folder name (every
    such model would otherwise be ``local/model``)."""
    folder = folder.resolve()
    if folder.name == "model" and (folder / "tempnlp_recipe.yaml").is_file():
        return f"local/{folder.parent.name}"
    return f"local/{folder.name}"


def _saved_recipe(model_path: Path) -> dict[str, Any] | None:
    """The recipe a ``tempnlp train`` run saved into the model folder it wrote (``tempnlp_recipe.yaml``)."""
    path = model_path / "tempnlp_recipe.yaml"
    if not path.is_file():
        return None
    recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    return recipe if isinstance(recipe, dict) else None


def _hub_id(name: Any) -> str | None:
    """``name`` when it reads as a Hub id (``org/name``, not a path on this machine), else None."""
    if not isinstance(name, str) or name.count("/") != 1 or name.startswith((".", "~")) or Path(name).exists():
        return None
    return name


def recipe_training_datasets(recipe: dict[str, Any]) -> set[str]:
    """The MTEB tasks whose data a recipe trained on: those whose Hub dataset is one of the recipe's training
    datasets (``mteb/scifact`` is SciFact's). Data no MTEB task evaluates (SNLI, Wikipedia) names no task."""
    import mteb

    sections = [recipe] + [task for task in (recipe.get("datasets") or {}).values() if isinstance(task, dict)]
    trained = {
        section["data"]["dataset"]
        for section in sections
        if isinstance(section.get("data"), dict) and isinstance(section["data"].get("dataset"), str)
    }
    return {
        task.metadata.name
        for task in mteb.get_tasks(exclude_superseded=False)
        if (task.metadata.dataset or {}).get("path") in trained
    }


def build_model_meta(
    model: SentenceTransformer,
    *,
    name: str,
    model_path: Path | None,
    revision: str | None = None,
    training_datasets: Sequence[str] | None = None,
    adapted_from: str | None = None,
):
    """The ModelMeta mteb files the results under.

    A Hub id keeps mteb's registry entry when it has one (at its revision). A local folder never does: it is
    described from the model itself, revision :func:`~tempnlp.provenance.content_revision` unless given. For a
    folder ``tempnlp train`` wrote, the base model (``adapted_from``) and the MTEB tasks trained on come from its
    saved recipe; ``training_datasets`` adds to them. Otherwise the training data is unknown (None, which mteb
    reads as unknown rather than zero-shot) unless given.
    """
    from mteb.models import ModelMeta, SentenceTransformerEncoderWrapper

    if "/" not in name:
        raise ValueError(f"MTEB model names look like 'organisation/model', got {name!r}: pass --model-name.")

    known = _registry_entry(name)
    if model_path is None:
        if known is not None and known.revision is not None and revision in (None, known.revision):
            return known
        if revision is None:
            raise ValueError(f"{name} is not in mteb's registry: pass --revision (its Hub commit).")
        trained = set(training_datasets) if training_datasets is not None else None
    else:
        if known is not None:
            raise ValueError(
                f"--model-name {name} is mteb's entry for the published model, but {model_path} is a local folder, "
                f"whose results would be filed as that model's. Evaluate the published model by its Hub id ({name}), "
                "or give this one a name of its own (--model-name your-org/your-model)."
            )
        recipe = _saved_recipe(model_path)
        revision = revision or content_revision(model_path)
        if recipe is not None:
            adapted_from = adapted_from or _hub_id((recipe.get("model") or {}).get("name"))
            trained = recipe_training_datasets(recipe) | set(training_datasets or [])
        else:
            trained = set(training_datasets) if training_datasets is not None else None
    if adapted_from is not None and _hub_id(adapted_from) is None:
        raise ValueError(f"--adapted-from takes the base model's Hub id (organisation/name), got {adapted_from!r}.")
    base = _registry_entry(adapted_from)
    weights = sorted(model_path.rglob("*.safetensors")) or sorted(model_path.rglob("*.bin")) if model_path else []
    released = date.fromtimestamp(weights[0].stat().st_mtime) if weights else date.today()
    return ModelMeta(
        loader=SentenceTransformerEncoderWrapper,
        name=name,
        revision=revision,
        release_date=released.isoformat(),  # a local model's: when its weights were written
        languages=list(base.languages) if base is not None and base.languages else ["eng-Latn"],
        n_parameters=sum(parameter.numel() for parameter in model.parameters()),
        memory_usage_mb=round(sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20, 1),
        max_tokens=model.max_seq_length,
        embed_dim=model.get_embedding_dimension(),
        license=base.license if base is not None else None,  # a fine-tune's weights inherit its base's licence
        open_weights=True,
        public_training_code=None,
        public_training_data=None,
        framework=["Sentence Transformers", "PyTorch"],
        similarity_fn_name="cosine",
        use_instructions=False,
        training_datasets=trained,
        adapted_from=adapted_from,
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
    cache = mteb.ResultCache(cache_path=output_dir)
    results = mteb.evaluate(
        wrapper,
        tasks,
        cache=cache,
        overwrite_strategy="only-missing",  # a rerun picks up where an interrupted one stopped
        encode_kwargs={"batch_size": batch_size},
        co2_tracker=False,
    )
    scores = {result.task_name: 100.0 * result.get_score() for result in results.task_results}
    folder = cache.get_task_result_path(tasks[0].metadata.name, meta).parent if tasks else None
    write_json_atomic(
        run_record_path(output_dir, meta),
        {
            "model": meta.name,
            "revision": meta.revision,
            "data": f"mirror {root}" if root is not None else "Hugging Face Hub",
            "scores": {task: round(score, 4) for task, score in scores.items()},
            "results_folder": str(folder),
            **(run_info or {}),
        },
    )
    return scores


def run_record_path(output_dir: str | Path, meta) -> Path:
    """Where tempnlp records a model's run (weights source, data source, training losses) beside mteb's results:
    ``<output_dir>/tempnlp_runs/<org>__<name>/<revision>.json``, one file a model and revision, outside mteb's tree
    (``ModelMeta`` has no field for them)."""
    return Path(output_dir) / "tempnlp_runs" / meta.model_name_as_path() / f"{meta.revision}.json"
