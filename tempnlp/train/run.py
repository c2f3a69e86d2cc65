"""``tempnlp train``: run a validated recipe with sentence-transformers' trainer and write a model folder.

The output folder holds, when the run ends::

    recipe.yaml             the resolved recipe (every default written out): `tempnlp train recipe.yaml` repeats it
    checkpoint-N/           the trainer's checkpoints, with loss_state.pt for losses that keep state
    log_history.json/.csv   loss, learning rate, temperature and evaluation scores at every log
    tau_histograms.json/png per-sample temperatures at every evaluation (per-sample losses)
    model/                  a sentence-transformers model folder; its README.md names loss, temperature, data, scores
    results.json            scores before and after, wall time, peak memory, package versions, machine and boot
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import torch
from sentence_transformers import (
    SentenceTransformer,
    SentenceTransformerTrainer,
    SentenceTransformerTrainingArguments,
)
from transformers import TrainerCallback, set_seed

from tempnlp._io import write_json_atomic, write_text_atomic
from tempnlp.data.hub import MIRROR_ENV, mirror_root, resolve_model
from tempnlp.data.sources import Located, beir_folder, build_train_dataset, locate
from tempnlp.evaluation.sts import stsb_evaluator
from tempnlp.models import model_not_found
from tempnlp.modules import SimCSEMLP, finish_simcse_mlp
from tempnlp.provenance import boot_id, machine_description, package_versions
from tempnlp.train.callbacks import log_temperature
from tempnlp.train.folder import LOCK_FILE, RunLock, check_writable, checkpoint_problem, remove_leftovers
from tempnlp.train.logs import (
    StepTimer,
    TemperatureHistogramCallback,
    TrainingLogCallback,
    keeps_sample_temperatures,
    write_history,
)
from tempnlp.train.recipe import (
    ModelSpec,
    Recipe,
    RecipeError,
    TaskSpec,
    check_loss,
    loss_arguments,
    loss_classes,
    parse_yaml,
)
from tempnlp.train.state import add_index_column, has_loss_state, track_loss_state

RECIPE_FILE = "recipe.yaml"
RESULTS_FILE = "results.json"
BEFORE_FILE = "scores_before.json"
DATA_FILE = "training_data.json"  # where the training data came from, for --resume to check
MODEL_DIR = "model"
CURVE_KEYS = {"step", "epoch", "loss", "learning_rate", "tau_mean", "tau_min", "tau_max"}


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): node}


def _training_part(recipe: dict[str, Any]) -> dict[str, Any]:
    """A recipe's flattened settings without its description and the evaluation that acts after training, or
    before it: a resume may change those; anything that shapes training may not. Validation during training does
    (the trainer's evaluations draw from the random generator the training then uses, and may pick the best
    checkpoint), so ``evaluation.stsb_validation`` stays."""
    flat = _flatten(recipe)
    return {
        k: v
        for k, v in flat.items()
        if (not k.startswith("evaluation.") or k == "evaluation.stsb_validation") and k != "description"
    }


def _read_recipe(path: Path) -> dict[str, Any]:
    return parse_yaml(path.read_text(encoding="utf-8"), str(path))


def _same_recipe(saved: Path, recipe: Recipe) -> bool:
    return saved.is_file() and saved.read_text(encoding="utf-8") == recipe.to_yaml()


def prepare_output_dir(output_dir: Path, recipe: Recipe, resume: bool) -> None:
    """Refuse to mix runs: a fresh run needs a fresh folder, a resumed one the same recipe."""
    checkpoints = sorted(output_dir.glob("checkpoint-*"))
    saved = output_dir / RECIPE_FILE
    if resume:
        if not checkpoints:
            raise FileNotFoundError(
                f"--resume: {output_dir} has no checkpoint-* folder to resume from. Run without --resume to start, "
                "or point --output-dir at the interrupted run."
            )
        if saved.is_file():
            before, now = _training_part(_read_recipe(saved)), _training_part(recipe.to_dict())
            changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
            if changed:
                details = "; ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed[:5])
                raise RecipeError(
                    f"--resume: the recipe differs from the one {output_dir} was started with ({details}). Resume "
                    f"with the same recipe (tempnlp train {saved} --resume --output-dir {output_dir}) or start a new "
                    "run in another folder."
                )
    elif checkpoints or (output_dir / RESULTS_FILE).exists():
        raise RecipeError(
            f"{output_dir} already holds a run ({(checkpoints or [output_dir / RESULTS_FILE])[-1].name}). Pass "
            "--resume to continue it, or choose another --output-dir."
        )
    elif (
        output_dir.is_dir()
        # a folder holding only a recipe is an attempt that stopped before training (bad data, say): reusable
        and any(path.name not in (LOCK_FILE, RECIPE_FILE, DATA_FILE) for path in output_dir.iterdir())
        and not _same_recipe(saved, recipe)
    ):
        # A run writes model/ and more: never over other files. The folder of the same run that stopped before
        # its first checkpoint is fine: it holds nothing a restart would trust.
        raise RecipeError(
            f"{output_dir} is not empty and holds no run to resume. A run needs an empty or new folder: choose "
            "another --output-dir."
        )


def last_complete_checkpoint(output_dir: Path, say: Callable[[str], None]) -> Path:
    """The newest checkpoint the trainer finished writing. It writes ``trainer_state.json`` after the model,
    optimizer and loss state, and only then rotates older checkpoints out, so a run killed while saving leaves a
    newer folder without it next to the complete one it resumes from; a kill during a save by another writer, or
    a disk that filled up, can also leave files cut short, which :func:`checkpoint_problem` finds."""
    steps = {folder: folder.name.removeprefix("checkpoint-") for folder in output_dir.glob("checkpoint-*")}
    numbered = {folder: int(step) for folder, step in steps.items() if step.isdigit()}
    for folder in sorted(numbered, key=numbered.__getitem__, reverse=True):
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        say(f"--resume: skipping {folder.name}, which the run stopped writing ({problem})")
    raise FileNotFoundError(
        f"--resume: no checkpoint in {output_dir} was written completely, so there is nothing to resume from. Run "
        "again without --resume in a new --output-dir."
    )


def resolve_precision(precision: str, *, use_cpu: bool = False) -> str:
    """``auto``: bf16 on a GPU with native bf16 (Ampere and later), fp16 on an older GPU, fp32 on CPU. Emulated
    bf16 (what ``is_bf16_supported()`` reports by default on a T4 or V100) would be slower than fp16."""
    if precision != "auto":
        return precision
    if not torch.cuda.is_available() or use_cpu:
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"


def training_arguments(recipe: Recipe, output_dir: Path) -> SentenceTransformerTrainingArguments:
    """The recipe's ``training`` section plus tempnlp's defaults for what it leaves unset."""
    values = dict(recipe.training)
    values.setdefault("batch_sampler", "no_duplicates")  # in-batch negatives must not be copies of the positive
    values.setdefault("dataloader_pin_memory", torch.cuda.is_available())
    values.setdefault("report_to", ["tensorboard"] if find_spec("tensorboard") else "none")
    if recipe.evaluation.stsb_validation:
        values.setdefault("eval_strategy", "steps")
    precision = resolve_precision(recipe.precision, use_cpu=bool(values.get("use_cpu", False)))
    if precision != "fp32":
        values[precision] = True
    try:
        return SentenceTransformerTrainingArguments(output_dir=str(output_dir), seed=recipe.seed, **values)
    except (TypeError, ValueError) as error:
        raise RecipeError(f"training: {error}") from error


def build_loss(task: TaskSpec, model: SentenceTransformer, num_samples: int) -> torch.nn.Module:
    check_loss(task.loss, task.data)
    cls = loss_classes()[task.loss.name]
    try:
        return cls(model, **loss_arguments(task.loss, cls, num_samples, model.get_embedding_dimension()))
    except (TypeError, ValueError) as error:
        raise RecipeError(f"loss {task.loss.name}: {error}") from error


def _load_model(spec: ModelSpec, path: str) -> SentenceTransformer:
    try:
        return build_model(spec, path)
    except OSError as error:
        raise model_not_found(spec.name, error) from error


def _model_source(name: str) -> tuple[str, str]:
    local = Path(name).expanduser()
    if local.is_file():
        raise ValueError(
            f"model.name {name} is a file; give the folder that holds the model (its config.json or modules.json)."
        )
    resolved = resolve_model(name)
    if Path(name).expanduser().exists():
        return resolved, f"model: {name} (local folder)"
    root = mirror_root()
    if root is not None and Path(resolved).is_relative_to(root):
        return resolved, f"model: {name} from the mirror ({resolved})"
    return resolved, f"model: {name} from the Hugging Face Hub"


def build_model(spec: ModelSpec, path: str) -> SentenceTransformer:
    """The model to train: the model saved at ``path``, or, with ``spec.pooling``, Transformer + Pooling over a
    bare transformer checkpoint; with ``spec.simcse_mlp``, SimCSE's MLP after the last module."""

    def mlp(dimension: int) -> SimCSEMLP:
        return SimCSEMLP(dimension, train_only=spec.simcse_mlp == "train-only")

    if spec.pooling is None:
        model = SentenceTransformer(path, trust_remote_code=spec.trust_remote_code)
        if spec.simcse_mlp is not None:
            model.append(mlp(model.get_embedding_dimension()).to(model.device))
        return model
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from sentence_transformers.util import is_sentence_transformer_model

    if is_sentence_transformer_model(path):
        raise RecipeError(
            f"model.pooling: {spec.name} is a sentence-transformers model, whose saved modules set the pooling, "
            "while model.pooling builds the model over a bare transformer checkpoint (such as bert-base-uncased). "
            "Remove model.pooling (--set model.pooling=null) to train the model as it was saved."
        )
    trust = {"trust_remote_code": spec.trust_remote_code}
    transformer = Transformer(path, model_kwargs=dict(trust), processor_kwargs=dict(trust), config_kwargs=dict(trust))
    dimension = transformer.get_embedding_dimension()
    modules = [transformer, Pooling(dimension, pooling_mode=spec.pooling)]
    if spec.simcse_mlp is not None:
        modules.append(mlp(dimension))
    return SentenceTransformer(modules=modules, trust_remote_code=spec.trust_remote_code)


def _scores(
    model: SentenceTransformer, recipe: Recipe, name: str, retrieval: Path | None, log: Callable[[str], None]
) -> dict[str, Any]:
    from tempnlp.evaluation.retrieval import evaluate_retrieval
    from tempnlp.evaluation.sts import evaluate_sts

    scores: dict[str, Any] = {}
    if recipe.evaluation.sts is not None:
        spec = recipe.evaluation.sts
        result = evaluate_sts(
            model, model_name=name, tasks=spec.tasks, protocol=spec.protocol, batch_size=spec.batch_size
        )
        scores["sts"] = {**result.to_dict(), "scores": result.scores, "avg": result.avg}
        log(f"{name}: STS average {result.avg:.2f} ({result.seconds:.0f} s)")
    if retrieval is not None:
        spec = recipe.evaluation.retrieval
        values = evaluate_retrieval(
            model,
            retrieval,
            model_name=name,
            split=spec.split,
            batch_size=spec.batch_size,
            ignore_identical_ids=spec.ignore_identical_ids,
        )
        scores["retrieval"] = {"split": spec.split, "scores": values}
        log(f"{name}: nDCG@10 {values['ndcg@10']:.2f}")
    return scores


def score_table(before: dict[str, Any] | None, after: dict[str, Any]) -> str:
    """The before/after table (x 100) printed at the end of a run and written into the model card."""
    before = before or {}
    rows: list[tuple[str, float | None, float]] = []
    if "sts" in after:
        first = before.get("sts", {}).get("scores", {})
        rows += [(task, first.get(task), value) for task, value in after["sts"]["scores"].items()]
        if len(after["sts"]["scores"]) > 1:
            rows.append(("STS avg.", before.get("sts", {}).get("avg"), after["sts"]["avg"]))
    if "retrieval" in after:
        first = before.get("retrieval", {}).get("scores", {})
        rows += [(metric, first.get(metric), value) for metric, value in after["retrieval"]["scores"].items()]
    lines = [
        f"| {'task':<14} | {'before':>7} | {'after':>7} | {'change':>7} |",
        f"|{'-' * 16}|{'-' * 9}|{'-' * 9}|{'-' * 9}|",
    ]
    for task, first_value, value in rows:
        left = f"{first_value:7.2f}" if first_value is not None else " " * 7
        change = f"{value - first_value:+7.2f}" if first_value is not None else " " * 7
        lines.append(f"| {task:<14} | {left} | {value:7.2f} | {change} |")
    return "\n".join(lines)


def check_same_data(output_dir: Path, sources: dict[str, dict[str, Any]], resume: bool, main: bool) -> None:
    """A resumed run reads its training data from where the run started (``training_data.json``): the same
    dataset from the mirror rather than the Hub, or a file rather than its sample, is other data under the same
    recipe, and the trainer would skip into it as if it were the same."""
    path = output_dir / DATA_FILE
    if resume and path.is_file():
        started = json.loads(path.read_text(encoding="utf-8"))
        if started != sources:
            changed = [name for name in sources if sources[name] != started.get(name)]
            details = "; ".join(f"{name or 'data'}: {started.get(name)} -> {sources[name]}" for name in changed)
            raise RecipeError(
                f"--resume: the training data is not read from where the run started ({details}). Resume as the run "
                f"started (the same {MIRROR_ENV}, the same files), or start a new run in another folder."
            )
    elif main:
        write_json_atomic(path, sources)


class _BestModelLoadFailures(logging.Handler):
    """Collects sentence-transformers' "Could not load the best model" errors while training: its trainer logs the
    failure and goes on with the last step's weights, which the run would then save as its best."""

    LOGGER = "sentence_transformers.base.trainer"

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "Could not load the best model" in record.getMessage():
            self.messages.append(record.getMessage())

    def __enter__(self) -> _BestModelLoadFailures:
        logging.getLogger(self.LOGGER).addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger(self.LOGGER).removeHandler(self)


def _data_record(located: Located, examples: int | None = None) -> dict[str, Any]:
    """Where a run's training data came from, for results.json and the resume check: the source, its folder, the
    file read (a sample is named as one) and, once read, the number of examples."""
    record: dict[str, Any] = {"source": located.source}
    if located.folder is not None:
        record["folder"] = str(located.folder.resolve())
    if examples is not None:
        record["examples"] = examples
    if located.file is not None:
        record["file"] = located.file
    if located.sample_of is not None:
        record["sample_of"] = located.sample_of
    return record


def _peak_memory_mib() -> dict[str, float]:
    peak = {"host_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        peak["cuda_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return {key: round(value, 1) for key, value in peak.items()}


def _model_card_section(
    recipe: Recipe, losses: dict[str, torch.nn.Module], data: dict[str, Located], rows: dict[str, int]
) -> str:
    lines = []
    for name, task in recipe.tasks.items():
        loss = losses[name]
        config = loss.get_config_dict() if hasattr(loss, "get_config_dict") else {}
        parameters = ", ".join(f"{key}={value}" for key, value in config.items())
        spec = task.data
        read = data[name]
        part = f"split `{spec.split}`"
        if spec.file:
            part = f"file `{spec.file}`"
            if read.sample_of:
                part = f"file `{read.file}`, the mirror's sample of `{spec.file}`"
        lines += ([f"- Dataset `{name}`:"] if name else []) + [
            f"{'  ' if name else ''}- Loss: `{type(loss).__name__}({parameters})`",
            f"{'  ' if name else ''}- Temperature: {_temperature_text(loss)}",
            f"{'  ' if name else ''}- Training data: `{spec.dataset}` ({spec.format}, {part}, "
            f"{rows[name]} examples, read {data[name].describe().split(' ', 1)[1]})",
        ]
    if recipe.datasets is not None:
        sampler = recipe.training.get("multi_dataset_batch_sampler", "proportional")
        lines.append(f"- Batches drawn from the datasets: {sampler}")
    if recipe.model.pooling is not None:
        lines.append(f"- Built over the bare checkpoint: Transformer + Pooling (`{recipe.model.pooling}`)")
    if recipe.model.simcse_mlp == "train-only":
        lines.append(
            "- SimCSE's MLP (Linear + Tanh over the pooled embedding) was used in training only: it is not part of "
            "this model, which embeds with the pooling alone"
        )
    elif recipe.model.simcse_mlp == "keep":
        lines.append(
            "- SimCSE's MLP (Linear + Tanh over the pooled embedding) was trained with the model and is kept: its "
            "last module, sentence-transformers' `Dense` with `Tanh`"
        )
    return (
        "\n\n## tempnlp run\n\n" + "\n".join(lines) + "\n"
        f"- Base model: `{recipe.model.name}`; seed {recipe.seed}\n"
        f"- Repeat the run: `tempnlp train {RECIPE_FILE}` with the recipe saved beside this folder (and as "
        "`tempnlp_recipe.yaml` here)\n"
    )


def _temperature_text(loss: torch.nn.Module) -> str:
    temperature = getattr(loss, "temperature", None)
    if isinstance(temperature, torch.nn.Module):
        # repr of a policy with a network would list its layers: name the policy and its settings on one line
        settings = ", ".join(f"{key}={value}" for key, value in temperature.get_config_dict().items())
        return f"`{type(temperature).__name__}({settings})`"
    scale = getattr(loss, "scale", None)
    return f"fixed tau {1 / scale:.4g} (scale {scale})" if scale else "see the loss"


def save_model(model: SentenceTransformer, output_dir: Path, section: str, recipe_yaml: str) -> Path:
    """Write the model folder aside, then rename it into place: a reader never sees half a model.

    A ``model/`` already there is replaced only when it is this run's own (it holds the same recipe), as after a
    resumed run that had finished once; :func:`prepare_output_dir` refuses foreign folders before training.
    """
    final = output_dir / MODEL_DIR
    own = final / "tempnlp_recipe.yaml"
    if final.exists() and (
        not own.is_file() or _training_part(_read_recipe(own)) != _training_part(parse_yaml(recipe_yaml, RECIPE_FILE))
    ):
        raise FileExistsError(f"{final} holds another model; not replacing it. Move it away and run again.")
    temporary = output_dir / f".{MODEL_DIR}.tmp{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    model.save_pretrained(str(temporary))
    card = temporary / "README.md"
    card.write_text((card.read_text(encoding="utf-8") if card.is_file() else "") + section, encoding="utf-8")
    (temporary / "tempnlp_recipe.yaml").write_text(recipe_yaml, encoding="utf-8")
    if final.exists():
        previous = output_dir / f".{MODEL_DIR}.old{os.getpid()}"
        os.replace(final, previous)
        os.replace(temporary, final)
        shutil.rmtree(previous, ignore_errors=True)
    else:
        os.replace(temporary, final)
    return final


def _check_devices() -> None:
    """Several visible GPUs without torchrun would make the trainer wrap the model in ``nn.DataParallel``: one
    process splitting each batch across the GPUs, which re-replicates the model every step and never gathers the
    contrastive batch. Refuse, before anything loads, with the commands that do what the user meant."""
    if "WORLD_SIZE" in os.environ or "LOCAL_RANK" in os.environ:
        return
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count > 1:
        raise RecipeError(
            f"{count} GPUs are visible but tempnlp train was not started by torchrun, so the trainer would fall "
            "back to torch.nn.DataParallel. Train on all of them with one process per GPU: torchrun "
            f"--nproc_per_node={count} -m tempnlp.cli train RECIPE.yaml ... (with loss.gather_across_devices: true "
            "for a loss that learns its temperature or keeps per-sample state); or on one: CUDA_VISIBLE_DEVICES=0 "
            "tempnlp train RECIPE.yaml ..."
        )


def _check_processes(recipe: Recipe) -> None:
    """Under torchrun, per-sample state and loss parameters must see the global batch: refuse before anything
    loads (the objectives refuse at their first step too, for losses used outside ``tempnlp train``)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return
    for name, task in recipe.tasks.items():
        if task.loss.params.get("gather_across_devices", False):
            continue
        probe = check_loss(task.loss, task.data)  # built on a stand-in model: nothing loads
        if getattr(probe, "needs_dataset_indices", False):
            what = "keeps per-sample state"
        elif getattr(probe, "needs_global_batch", False):
            what = "learns its temperature"
        else:
            continue
        key = f"datasets.{name}.loss" if name else "loss"
        raise RecipeError(
            f"{task.loss.name} {what}, which would diverge across the {world_size} processes: set "
            f"{key}.gather_across_devices: true so every process computes the loss of the global batch."
        )


def run_recipe(
    recipe: Recipe,
    output_dir: str | Path,
    *,
    resume: bool = False,
    callbacks: Sequence[TrainerCallback] = (),
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train and evaluate as the recipe says; returns what ``results.json`` holds.

    The output folder is locked for the run (:class:`~tempnlp.train.folder.RunLock`), and what a killed run's
    atomic writes left in it is removed first.
    """
    main = _is_main_process()
    say = (log or (lambda text: print(text, flush=True))) if main else (lambda text: None)
    output_dir = Path(output_dir)
    _check_devices()
    check_writable(output_dir)
    if not main:  # rank 0 holds the lock for the job
        return _run_recipe(recipe, output_dir, resume, callbacks, say)
    with RunLock(output_dir, say):
        remove_leftovers(output_dir, say)
        return _run_recipe(recipe, output_dir, resume, callbacks, say)


def check_evaluation_data(recipe: Recipe, retrieval_data: Located | None) -> None:
    """Read every evaluation set the run scores, before the model loads: a missing split or file stops the run
    now, not after training (with ``evaluation.before: false`` the first read would come at the end)."""
    from tempnlp.data.beir import load_beir
    from tempnlp.evaluation.sts import load_mteb_pairs, load_senteval_pairs, resolve_tasks, stsb_evaluator

    if recipe.evaluation.stsb_validation:
        stsb_evaluator("validation")
    sts = recipe.evaluation.sts
    if sts is not None:
        load = load_mteb_pairs if sts.protocol == "mteb" else load_senteval_pairs
        for task in resolve_tasks(sts.tasks):
            load(task)
    if retrieval_data is not None:
        load_beir(beir_folder(retrieval_data), recipe.evaluation.retrieval.split)


def _run_recipe(
    recipe: Recipe,
    output_dir: Path,
    resume: bool,
    callbacks: Sequence[TrainerCallback],
    say: Callable[[str], None],
) -> dict[str, Any]:
    main = _is_main_process()
    start = time.perf_counter()
    prepare_output_dir(output_dir, recipe, resume)
    _check_processes(recipe)
    args = training_arguments(recipe, output_dir)  # bad training values fail before anything loads
    tasks = recipe.tasks
    data = {
        name: locate(task.data.dataset, task.data.format, task.data.split, file=task.data.file, subset=task.data.subset)
        for name, task in tasks.items()
    }
    check_same_data(output_dir, {name: _data_record(located) for name, located in data.items()}, resume, main)
    retrieval = recipe.evaluation.retrieval
    retrieval_data = locate(retrieval.dataset, "beir", retrieval.split) if retrieval is not None else None
    check_evaluation_data(recipe, retrieval_data)
    recipe_yaml = recipe.to_yaml()
    if main:
        write_text_atomic(output_dir / RECIPE_FILE, recipe_yaml)

    set_seed(recipe.seed)  # mining with sampling_strategy: random, and anything else drawn before the trainer
    path, message = _model_source(recipe.model.name)
    say(message)
    for name, located in data.items():
        say(f"data{f' {name}' if name else ''}: {located.describe()}")
    # Data that needs no model is read (and checked) before the model loads; mined data after.
    read = {
        name: build_train_dataset(task.data, data[name], log=say)
        for name, task in tasks.items()
        if task.data.format != "beir"
    }
    model = _load_model(recipe.model, path)
    eval_length = model.max_seq_length
    train_datasets, losses = {}, {}
    for name, task in tasks.items():
        label = f" {name}" if name else ""
        if name in read:
            dataset = read[name]
        else:
            with args.main_process_first(desc="training data"):  # rank 0 mines (and caches) first, the others follow
                dataset = build_train_dataset(task.data, data[name], model, log=say)
        say(f"data{label}: {len(dataset)} examples, columns {', '.join(dataset.column_names)}")
        losses[name] = build_loss(task, model, len(dataset))
        if getattr(losses[name], "needs_dataset_indices", False):
            dataset = add_index_column(dataset)
        train_datasets[name] = dataset
        say(f"loss{label}: {type(losses[name]).__name__}, temperature {_temperature_text(losses[name])}")
    single = recipe.datasets is None  # one dataset and one loss, or sentence-transformers' dicts of them
    train_dataset = train_datasets[""] if single else train_datasets
    loss = losses[""] if single else losses
    retrieval_folder = beir_folder(retrieval_data) if retrieval_data is not None else None

    before = None
    with args.main_process_first(desc="scores before training"):  # the other ranks wait here, not in a collective
        wanted = recipe.evaluation.sts is not None or retrieval_folder is not None
        if recipe.evaluation.before and main and wanted:
            saved_before = output_dir / BEFORE_FILE
            settings = recipe.to_dict()["evaluation"]
            saved = json.loads(saved_before.read_text()) if resume and saved_before.is_file() else None
            if saved is not None and saved.get("evaluation") == settings:
                before = saved["scores"]
            else:  # a resume whose evaluation section changed scores the untrained model again, the same way
                if saved is not None:
                    say("--resume: the evaluation settings changed, so the scores before training are recomputed")
                before = _scores(model, recipe, "before training", retrieval_folder, say)
                write_json_atomic(saved_before, {"evaluation": settings, "scores": before})

    evaluator = stsb_evaluator("validation", max_seq_length=eval_length) if recipe.evaluation.stsb_validation else None
    if recipe.model.max_seq_length is not None:
        model.max_seq_length = recipe.model.max_seq_length
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=train_dataset, loss=loss, evaluator=evaluator
    )
    if any(has_loss_state(fn) for fn in losses.values()):
        track_loss_state(trainer)
    elif any(hasattr(fn, "temperature_stats") for fn in losses.values()):
        log_temperature(trainer)
    trainer.add_callback(TrainingLogCallback(output_dir))
    timer = StepTimer()
    trainer.add_callback(timer)
    if single and keeps_sample_temperatures(loss):
        histograms = TemperatureHistogramCallback(loss, output_dir)
        histograms.trainer = trainer
        trainer.add_callback(histograms)
    for callback in callbacks:
        trainer.add_callback(callback)
    train_start = time.perf_counter()
    checkpoint = last_complete_checkpoint(output_dir, say) if resume else None
    with _BestModelLoadFailures() as failures:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)
    if failures.messages:  # sentence-transformers logs it and keeps the last step's weights
        raise RuntimeError(
            f"training.load_best_model_at_end: {failures.messages[0]} The model in memory is the last step's, not "
            f"the best checkpoint's, so it is not saved or scored as the run's result. The checkpoints are in "
            f"{output_dir}: load {trainer.state.best_model_checkpoint} yourself, or resume once the cause is fixed."
        )
    train_seconds = time.perf_counter() - train_start
    peak_memory = _peak_memory_mib()  # of training (and what came before), not of the final evaluation
    model.max_seq_length = eval_length
    finish_simcse_mlp(model)  # the model to save and score: a train-only MLP leaves it, a kept one stays
    if not trainer.is_world_process_zero():
        return {}
    write_history(output_dir, trainer.state.log_history)

    # The model is saved before the final evaluation, so a failing evaluation never costs the training.
    rows = {name: len(dataset) for name, dataset in train_datasets.items()}
    section = _model_card_section(recipe, losses, data, rows)
    model_dir = save_model(model, output_dir, section, recipe_yaml)
    after = _scores(model, recipe, "after training", retrieval_folder, say)
    table = score_table(before, after)
    card = model_dir / "README.md"
    write_text_atomic(card, card.read_text(encoding="utf-8") + f"\nFinal scores (x 100):\n\n{table}\n")
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    timing = timer.summary()
    results = {
        "recipe": recipe.to_dict(),
        "model_dir": str(model_dir),
        "data": (
            _data_record(data[""], rows[""])
            if single
            else {name: _data_record(data[name], rows[name]) for name in tasks}
        ),
        "scores": {"before": before, "after": after},
        "train": {
            "steps": trainer.state.global_step,
            "seconds": round(train_seconds, 1),  # of this process: after the checkpoint when resumed
            "seconds_per_step": round(train_seconds / max(1, timing.get("timed_steps", 0)), 4),
            **timing,
            "first_loss": losses[0] if losses else None,
            "last_loss": losses[-1] if losses else None,
            "resumed": resume,
            # the weights saved and scored: the best checkpoint's (load_best_model_at_end), else the last step's
            "weights_from": (
                {"checkpoint": Path(trainer.state.best_model_checkpoint).name, "metric": trainer.state.best_metric}
                if args.load_best_model_at_end and trainer.state.best_model_checkpoint
                else {"checkpoint": None, "step": trainer.state.global_step}
            ),
        },
        "curve": [
            {key: entry[key] for key in entry if key in CURVE_KEYS or key.startswith("eval_sts")}
            for entry in trainer.state.log_history
            if "loss" in entry or any(key.startswith("eval_") for key in entry)
        ],
        "wall_seconds": round(time.perf_counter() - start, 1),
        "peak_memory": peak_memory,
        "versions": package_versions(),
        "machine": machine_description(),
        "boot_id": boot_id(),
        "command": " ".join(["tempnlp", *sys.argv[1:]]) if sys.argv[0].endswith("tempnlp") else None,
    }
    write_json_atomic(output_dir / RESULTS_FILE, results)
    say(f"\nScores (x 100)\n{table}\n\nmodel: {model_dir}  ({results['wall_seconds']:.0f} s)")
    return results
