"""Recipes: the YAML a user copies and edits, validated before anything heavy is loaded.

A recipe has five sections and three top-level settings::

    model:      name (Hub id), max_seq_length (training length), trust_remote_code, pooling (of a bare
                checkpoint), simcse_mlp (SimCSE's MLP: train-only | keep)
    data:       dataset (Hub id), format (nli-triplets | sentences | beir | columns) and its options
    loss:       name (a tempnlp loss or MultipleNegativesRankingLoss), temperature, and the loss's own parameters
    training:   passed to SentenceTransformerTrainingArguments unchanged (batch size, learning rate, epochs, ...)
    evaluation: STS-B validation during training; STS / retrieval scores before and after
    seed, precision (auto | fp32 | bf16 | fp16), description

``variants`` maps a variant name to dotted overrides (``training.max_steps: 300``), applied with ``--variant``.

Validation reads only the recipe and the classes' signatures: unknown keys (with the closest valid key), wrong
types, a negative temperature or an impossible column layout stop the run before a model or dataset is loaded.
"""

from __future__ import annotations

import difflib
import enum
import functools
import inspect
import math
import re
import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator


class RecipeError(ValueError):
    """A recipe that cannot run; the message names the key, the problem and the fix."""


#: YAML 1.1 reads ``3e-5`` (no dot) as a string; every training script writes learning rates that way.
_EXPONENT_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


def _numbers(node: Any) -> Any:
    if isinstance(node, str) and _EXPONENT_FLOAT.match(node):
        return float(node)
    if isinstance(node, dict):
        return {key: _numbers(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_numbers(value) for value in node]
    return node


def parse_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load``, then ``3e-5`` read as the number it means."""
    try:
        return _numbers(yaml.safe_load(text))
    except yaml.YAMLError as error:
        raise RecipeError(f"{source} is not valid YAML: {error}") from error


# ---------------------------------------------------------------------------------------------------------------
# Schema: pydantic models, strict (no "yes" read as true, no 3.5 as an int) and closed (unknown keys are errors).


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ModelSpec(_Section):
    #: Hub id (resolved through TEMPNLP_MIRROR when set) or a local model folder
    name: str
    #: token length while training (SimCSE: 32); evaluation and the saved model keep the model's own length
    max_seq_length: int | None = None
    trust_remote_code: bool = False
    #: a bare transformer checkpoint (no modules.json, e.g. bert-base-uncased) becomes Transformer + Pooling with
    #: this mode: cls ([CLS] of the last layer), mean or max. null: sentence-transformers' own choice (mean for a
    #: bare checkpoint; a sentence-transformers model keeps its saved pooling, which this may not override)
    pooling: Literal["cls", "mean", "max"] | None = None
    #: SimCSE's MLP (Linear + Tanh) over the pooled embedding: train-only (used while training, left out of
    #: evaluation and of the saved model: the authors' --mlp_only_train, unsupervised SimCSE), keep (used
    #: throughout and saved: supervised SimCSE), or null (none)
    simcse_mlp: Literal["train-only", "keep"] | None = None


class HardNegativeSpec(_Section):
    """Arguments of sentence-transformers' ``mine_hard_negatives`` (the base model mines before training)."""

    num_negatives: int = 1
    range_min: int = 10
    range_max: int = 50
    relative_margin: float | None = 0.05
    sampling_strategy: Literal["top", "random"] = "top"
    batch_size: int = 64


DATA_FORMATS = ("nli-triplets", "sentences", "beir", "columns")


class DataSpec(_Section):
    #: Hub id of the training data (``stanfordnlp/snli``, ``mteb/scifact``, ...)
    dataset: str
    #: nli-triplets: (premise, entailment, contradiction) from NLI rows; sentences: one sentence a line, each its
    #: own positive (unsupervised SimCSE); beir: (query, relevant document, mined hard negatives) from a BEIR
    #: split; columns: the listed columns of a dataset, in loss order
    format: Literal["nli-triplets", "sentences", "beir", "columns"]
    split: str = "train"
    #: keep the first N training examples (null: all)
    limit: int | None = None
    #: sentences: the text file in the dataset repository; columns: a .csv, .tsv or .jsonl[.gz] file of it, read
    #: instead of a split (SimCSE's nli_for_simcse.csv)
    file: str | None = None
    #: columns: the Hub configuration (subset) name
    subset: str | None = None
    #: columns: text columns in loss order (anchor, positive, negatives...)
    columns: list[str] | None = None
    #: beir: hard-negative mining settings
    hard_negatives: HardNegativeSpec | None = None

    @model_validator(mode="after")
    def _consistent(self) -> DataSpec:
        if self.limit is not None and self.limit < 1:
            raise RecipeError(f"data.limit must be a positive number of examples or null, got {self.limit}.")
        if self.format == "sentences" and not self.file:
            raise RecipeError("data.format 'sentences' reads a text file: set data.file (e.g. wiki1m_for_simcse.txt).")
        if self.format == "columns" and not self.columns:
            raise RecipeError("data.format 'columns' needs data.columns: the text columns in loss order.")
        for option, formats in (("file", ("sentences", "columns")), ("subset", ("columns",)),
                                ("columns", ("columns",)), ("hard_negatives", ("beir",))):  # fmt: skip
            if getattr(self, option) is not None and self.format not in formats:
                raise RecipeError(
                    f"data.{option} only applies to format {' or '.join(formats)}, not {self.format!r}: remove it."
                )
        if self.format == "columns" and self.file is not None:
            from tempnlp.data.sources import table_kind

            if self.subset is not None:
                raise RecipeError(
                    "data.subset names a Hub configuration, but data.file is read as it is: remove one of them."
                )
            if table_kind(self.file) is None:
                raise RecipeError(
                    f"data.file {self.file!r}: format columns reads a .csv, .tsv, .jsonl or .jsonl.gz file."
                )
        # another split than the default (a saved recipe spells the default out, and must load again)
        if self.split != "train" and (self.format == "sentences" or self.file is not None):
            raise RecipeError(
                f"data.split is not read when data.file names the file to read ({self.file!r}): remove data.split."
            )
        if self.format == "beir" and self.hard_negatives is None:
            self.hard_negatives = HardNegativeSpec()
        return self

    @property
    def text_columns(self) -> int:
        """How many text columns the built dataset has, known before anything is read."""
        if self.format == "nli-triplets":
            return 3
        if self.format == "sentences":
            return 2
        if self.format == "beir":
            return 2 + (self.hard_negatives.num_negatives if self.hard_negatives else 0)
        return len(self.columns or [])


class STSSpec(_Section):
    protocol: Literal["mteb", "senteval"] = "mteb"
    #: STS task names (null: all seven: STS12-16, STSBenchmark, SICK-R)
    tasks: list[str] | None = None
    batch_size: int = 64


class RetrievalSpec(_Section):
    #: Hub id of a BEIR-layout dataset (``mteb/scifact``)
    dataset: str
    split: str = "test"
    batch_size: int = 64
    #: leave a query's own id out of its ranking: mteb does for tasks whose queries are also documents (ArguAna,
    #: Quora, FiQA and others; see the task's ``ignore_identical_ids``)
    ignore_identical_ids: bool = False


class EvaluationSpec(_Section):
    #: follow STS-B validation Spearman during training (at the trainer's eval_steps)
    stsb_validation: bool = True
    #: also score the model before training, for the before/after table
    before: bool = True
    sts: STSSpec | None = Field(default_factory=STSSpec)
    retrieval: RetrievalSpec | None = None


class LossSpec(_Section):
    """``name``, ``temperature`` and any other keyword of the loss's constructor (``symmetric``, ``rho``, ...).

    The loss's own keywords are checked against its constructor's signature (:func:`check_loss`), not here."""

    name: str
    temperature: Any = None
    params: dict[str, Any] = Field(default_factory=dict)


class TaskSpec(_Section):
    """One training dataset and its loss, with its own temperature (an entry of ``datasets``)."""

    data: DataSpec
    loss: LossSpec


class Recipe(_Section):
    model: ModelSpec
    #: one dataset and its loss; or, instead of both, ``datasets``: several, each with its own loss
    data: DataSpec | None = None
    loss: LossSpec | None = None
    #: name -> {data, loss}: sentence-transformers' dict of datasets and losses, sampled as
    #: training.multi_dataset_batch_sampler says (round_robin or proportional)
    datasets: dict[str, TaskSpec] | None = None
    training: dict[str, Any] = Field(default_factory=dict)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    seed: int = 42
    #: auto: bf16 on a GPU that supports it, else fp16 on a GPU, else fp32
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    description: str = ""

    @model_validator(mode="after")
    def _one_layout(self) -> Recipe:
        if self.datasets is None:
            for key in ("data", "loss"):
                if getattr(self, key) is None:
                    raise RecipeError(
                        f"{key} is missing: the recipe must set it (or datasets: several, each with data and loss)."
                    )
        else:
            if self.data is not None or self.loss is not None:
                raise RecipeError(
                    "datasets gives every dataset its data and loss: remove the top-level data and loss, or datasets."
                )
            if not self.datasets:
                raise RecipeError("datasets is empty: name at least one dataset, each with data and loss.")
            for name in self.datasets:
                if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", name):
                    raise RecipeError(
                        f"datasets.{name}: a dataset name starts with a letter and holds letters, digits, _ and - "
                        "(it prefixes the dataset's log keys and names its loss state)."
                    )
        return self

    @property
    def tasks(self) -> dict[str, TaskSpec]:
        """Every dataset with its loss: the named ``datasets``, or the one ``data`` and ``loss`` (named "")."""
        if self.datasets is not None:
            return dict(self.datasets)
        return {"": TaskSpec.model_construct(data=self.data, loss=self.loss)}

    def to_dict(self) -> dict[str, Any]:
        raw = self.model_dump()

        def flat(loss: dict[str, Any]) -> dict[str, Any]:
            return {
                "name": loss["name"],
                **({"temperature": loss["temperature"]} if loss["temperature"] is not None else {}),
                **loss["params"],
            }

        for key in ("pooling", "simcse_mlp"):  # left out when unset: recipes without them resolve as before
            if raw["model"][key] is None:
                del raw["model"][key]
        if raw["datasets"] is None:
            raw["loss"] = flat(raw["loss"])
            ordered = ["description", "model", "data", "loss", "training", "evaluation", "seed", "precision"]
        else:
            raw["datasets"] = {
                name: {"data": task["data"], "loss": flat(task["loss"])} for name, task in raw["datasets"].items()
            }
            ordered = ["description", "model", "datasets", "training", "evaluation", "seed", "precision"]
        return {key: raw[key] for key in ordered}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=120)


# ---------------------------------------------------------------------------------------------------------------
# Errors in the recipe's words


def closest(key: str, valid: typing.Iterable[str]) -> str:
    valid = list(valid)
    lowered = {name.lower(): name for name in valid}
    match = difflib.get_close_matches(key.lower(), list(lowered), n=1, cutoff=0.5)
    suggestion = f" Did you mean {lowered[match[0]]!r}?" if match else ""
    if len(valid) > 20:  # TrainingArguments has ~150: point at the documentation instead of listing them
        return f"{suggestion} ({len(valid)} valid keys; see the documentation of the class they are passed to.)"
    return f"{suggestion} Valid keys: {', '.join(sorted(valid))}."


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _unknown(where: str, key: str, valid: typing.Iterable[str]) -> RecipeError:
    return RecipeError(f"Unknown key {_join(where, key)}.{closest(key, valid)}")


def _type_name(annotation: Any) -> str:
    if get_origin(annotation) in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(annotation))
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(annotation))
    if annotation is type(None):
        return "null"
    if get_origin(annotation) is not None:  # list[str], dict[str, Any]: the full form says what the items are
        return str(annotation).replace("typing.", "")
    return getattr(annotation, "__name__", str(annotation))


def _section(annotation: Any) -> type[BaseModel] | None:
    candidates = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    return next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)


def _mapping_values_section(annotation: Any) -> type[BaseModel] | None:
    candidates = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    for candidate in candidates:
        if get_origin(candidate) is dict and len(get_args(candidate)) == 2:
            return _section(get_args(candidate)[1])
    return None


def _schema_error(error: ValidationError, model: type[BaseModel], raw: Any) -> RecipeError:
    """The first problem pydantic found, said as the recipe's key path, what it must be and what it got.

    Unknown keys come first (a typo is the likeliest cause of everything else); a check of the recipe's own (a
    ``RecipeError`` raised by a validator) keeps its words."""
    problems = sorted(error.errors(), key=lambda problem: problem["type"] != "extra_forbidden")
    problem = problems[0]
    loc = list(problem["loc"])
    # walk the models along the location: the last field reached names the key, and its annotation the type
    section, path, annotation, value = model, [], None, raw
    values_section = None  # the model of a mapping's values (datasets: name -> {data, loss})
    for part in loc:
        if values_section is not None:  # a key of the mapping: step into its value
            path.append(str(part))
            value = value.get(part) if isinstance(value, dict) else None
            section, values_section, annotation = values_section, None, values_section
            continue
        if section is None or not isinstance(part, str) or part not in section.model_fields:
            break
        annotation = section.model_fields[part].annotation
        path.append(part)
        value = value.get(part) if isinstance(value, dict) else None
        section = _section(annotation)
        values_section = _mapping_values_section(annotation)
    where = ".".join(path)
    kind = problem["type"]
    if kind == "extra_forbidden":
        valid = list(section.model_fields) if section is not None else []
        return _unknown(where, str(loc[len(path)]), valid)
    if kind == "missing":
        return RecipeError(f"{where} is missing: the recipe must set it.")
    if kind == "value_error" and isinstance(problem.get("ctx", {}).get("error"), RecipeError):
        return problem["ctx"]["error"]
    if kind in ("model_type", "model_attributes_type", "dict_type") and len(path) == len(loc):
        return RecipeError(
            f"{where or 'The recipe'} must be a mapping of keys to values, got {type(value).__name__} ({value!r})."
        )
    if annotation is None:
        return RecipeError(f"{where or 'The recipe'}: {problem['msg']}.")
    return RecipeError(f"{where} must be {_type_name(annotation)}, got {type(value).__name__} ({value!r}).")


def _adapter(annotation: Any) -> TypeAdapter | None:
    """A strict validator for a constructor's type hint; None where pydantic cannot express the type."""
    try:
        return _cached_adapter(annotation)
    except TypeError:  # an unhashable hint
        return _new_adapter(annotation)


def _new_adapter(annotation: Any) -> TypeAdapter | None:
    try:
        return TypeAdapter(annotation, config=ConfigDict(strict=True, arbitrary_types_allowed=True))
    except Exception:  # a hint pydantic has no schema for: its constructor checks the value
        return None


_cached_adapter = functools.cache(_new_adapter)


def _enum_values(annotation: Any) -> set[Any]:
    """Values a YAML file may give for the enums in a hint (TrainingArguments takes ``"steps"`` for an enum)."""
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return {member.value for member in annotation}
    return {value for argument in get_args(annotation) for value in _enum_values(argument)}


def check_value(where: str, value: Any, annotation: Any) -> None:
    """Check a value from YAML against a constructor's type hint (strictly: ``"yes"`` is no bool)."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return
    adapter = _adapter(annotation)
    if adapter is None:
        return
    try:
        adapter.validate_python(value)
        return
    except ValidationError:
        if isinstance(value, (str, int, float)) and value in _enum_values(annotation):
            return
    raise RecipeError(f"{where} must be {_type_name(annotation)}, got {type(value).__name__} ({value!r}).")


# ---------------------------------------------------------------------------------------------------------------
# Losses and temperatures


def loss_classes() -> dict[str, type]:
    """Losses a recipe may name: tempnlp's and sentence-transformers' MNRL (the fixed-temperature reference)."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from tempnlp.losses import LOSSES

    return {**LOSSES, "MultipleNegativesRankingLoss": MultipleNegativesRankingLoss}


#: constructor arguments the run fills in itself
AUTOMATIC_LOSS_ARGUMENTS = {
    "model": "the loaded model",
    "num_samples": "the training set size",
    "embedding_dim": "the model's embedding size",
}
NOT_FROM_RECIPES = {"temperature_network", "network", "self"}
#: stand-ins for the run's facts while a recipe is validated, before anything loads
PROBE_RUN = {"num_samples": 1, "embedding_dim": 8}


def _signature(callable_: Any) -> tuple[dict[str, inspect.Parameter], dict[str, Any]]:
    parameters = dict(inspect.signature(callable_).parameters)
    try:
        hints = get_type_hints(callable_)
    except Exception:  # annotations that do not resolve: check names only
        hints = {}
    return parameters, hints


def check_keywords(where: str, callable_: Any, kwargs: dict[str, Any], skip: typing.Iterable[str] = ()) -> None:
    parameters, hints = _signature(callable_)
    valid = [name for name in parameters if name not in set(skip) | NOT_FROM_RECIPES | set(AUTOMATIC_LOSS_ARGUMENTS)]
    valid = [
        name
        for name in valid
        if parameters[name].kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    ]
    for key, value in kwargs.items():
        if key in AUTOMATIC_LOSS_ARGUMENTS:
            raise RecipeError(f"{where}.{key} is set by tempnlp ({AUTOMATIC_LOSS_ARGUMENTS[key]}); remove it.")
        if key not in valid:  # the skipped keys are valid too, just set elsewhere: suggest them
            raise _unknown(where, key, [*valid, *(name for name in skip if name in parameters)])
        if key in hints:
            check_value(f"{where}.{key}", value, hints[key])


def build_policy(value: Any, where: str = "loss.temperature", run: dict[str, int] | None = None):
    """A number (fixed tau), a policy name (its defaults) or ``{policy: name, <its parameters>}``.

    ``run`` holds the facts of the run a policy may declare it needs (``num_samples``, ``embedding_dim``); while
    a recipe is validated, before anything loads, stand-ins take their place."""
    from tempnlp.temperature import POLICIES, FixedTemperature

    if isinstance(value, bool):
        raise RecipeError(f"{where} must be a number, a policy name or a mapping, got {value!r}.")
    if isinstance(value, (int, float)):
        return _construct(where, FixedTemperature, {"tau": value})
    if isinstance(value, str):
        value = {"policy": value}
    if not isinstance(value, dict):
        raise RecipeError(
            f"{where} must be a number (fixed tau), a policy name ({', '.join(POLICIES)}) or a mapping "
            f"{{policy: macl, tau0: 0.05}}, got {type(value).__name__} ({value!r})."
        )
    options = dict(value)
    name = options.pop("policy", None)
    if name not in POLICIES:
        hint = closest(str(name), POLICIES).replace("Valid keys", "Policies")
        raise RecipeError(f"{where}.policy: unknown temperature policy {name!r}.{hint}")
    cls = POLICIES[name]
    parameters, _ = _signature(cls.__init__)
    nested = "temperature" in parameters and "temperature" in options  # a wrapper (hardness) of another policy
    if nested:
        options["temperature"] = build_policy(options["temperature"], f"{where}.temperature", run)
    checked = {key: value for key, value in options.items() if not (nested and key == "temperature")}
    check_keywords(where, cls.__init__, checked, skip=("temperature",) if nested else ())
    facts = run or PROBE_RUN
    options.update({key: facts[key] for key in cls.run_arguments})
    return _construct(where, cls, options)


def _construct(where: str, cls: type, kwargs: dict[str, Any]):
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise RecipeError(f"{where}: {error}") from error


def check_loss(spec: LossSpec, data: DataSpec, batch_size: int | None = None) -> torch.nn.Module:
    """Check the loss's name, parameters, temperature, the data's column layout and, given the per-device batch
    size, that every row can take a step at it (a partition to contrast, a rho the policy can step at). Returns
    the loss built on a stand-in model, whose capabilities (``needs_dataset_indices``, ``needs_global_batch``,
    ...) tell the run what it needs before anything loads."""
    classes = loss_classes()
    if spec.name not in classes:
        raise RecipeError(
            f"loss.name: unknown loss {spec.name!r}.{closest(spec.name, classes).replace('Valid keys', 'Losses')}"
        )
    cls = classes[spec.name]
    parameters, _ = _signature(cls.__init__)
    if spec.temperature is not None:
        if "temperature" not in parameters:
            fix = (
                "set scale (= 1/tau; 20 for tau 0.05)"
                if "scale" in parameters
                else "it learns its own temperatures: set tau_init, tau_min and tau_max"
            )
            raise RecipeError(f"loss.temperature does not apply to {spec.name}: {fix}.")
        build_policy(spec.temperature)
    check_keywords("loss", cls.__init__, spec.params, skip=("temperature",))
    for key, value in spec.params.items():  # temperatures in any form are positive; the rest the loss checks
        if key.startswith("tau") and isinstance(value, (int, float)) and value <= 0:
            raise RecipeError(f"loss.{key} must be a temperature > 0, got {value}.")
    if data.text_columns < 2:
        raise RecipeError(
            f"{spec.name} needs at least two text columns (anchor, positive[, negatives...]) but data gives "
            f"{data.text_columns} ({data.columns}). For unsupervised training, where a sentence is its own "
            "positive, use data.format: sentences."
        )
    loss = _construct("loss", cls, {**loss_arguments(spec, cls, **PROBE_RUN), "model": _ShapeOnlyModel()})
    if getattr(loss, "needs_dataset_indices", False) and data.format == "columns" and "label" in (data.columns or []):
        raise RecipeError(
            f"{spec.name} reads the dataset index from the 'label' column, which data.columns uses for text. "
            "Rename that column."
        )
    if batch_size is not None and hasattr(loss, "check_batch_shape") and not spec.params.get("gather_across_devices"):
        # checked on the first batch too, but that comes after loading, mining and the "before" scores
        try:
            loss.check_batch_shape(batch_size, data.text_columns - 1)
        except ValueError as error:
            if "rho (" not in str(error):
                key = "loss"
            else:  # the loss's own rho (ISogCLRLoss, TempNetLoss), or its policy's
                key = "loss.rho" if "rho" in _signature(cls.__init__)[0] else "loss.temperature.rho"
            raise RecipeError(f"{key}: at training.per_device_train_batch_size {batch_size}, {error}") from None
    return loss


class _ShapeOnlyModel(torch.nn.Module):
    """Stands in for the encoder so a loss can be built, and its arguments checked, before the model loads."""

    def get_embedding_dimension(self) -> int:
        return PROBE_RUN["embedding_dim"]


def loss_arguments(spec: LossSpec, cls: type, num_samples: int, embedding_dim: int) -> dict[str, Any]:
    """The loss's keyword arguments: the recipe's parameters, the built temperature policy, the run's facts."""
    run = {"num_samples": num_samples, "embedding_dim": embedding_dim}
    kwargs = dict(spec.params)
    if spec.temperature is not None:
        kwargs["temperature"] = build_policy(spec.temperature, run=run)
    parameters, _ = _signature(cls.__init__)
    kwargs.update({key: value for key, value in run.items() if key in parameters})
    return kwargs


# ---------------------------------------------------------------------------------------------------------------
# Loading, variants and overrides

FORBIDDEN_TRAINING_KEYS = {
    "output_dir": "use --output-dir",
    "bf16": "use the top-level precision: bf16",
    "fp16": "use the top-level precision: fp16",
    "seed": "use the top-level seed",
    "resume_from_checkpoint": "use --resume",
}


def check_training(training: dict[str, Any]) -> None:
    from sentence_transformers import SentenceTransformerTrainingArguments

    hints = get_type_hints(SentenceTransformerTrainingArguments)
    valid = [f.name for f in fields(SentenceTransformerTrainingArguments) if f.init]
    for key, value in training.items():
        if key in FORBIDDEN_TRAINING_KEYS:
            raise RecipeError(f"training.{key} is not set in recipes: {FORBIDDEN_TRAINING_KEYS[key]}.")
        if key not in valid:
            raise _unknown("training", key, valid)
        if key in hints:
            check_value(f"training.{key}", value, hints[key])
    check_training_values(training)


#: training values the trainer accepts but cannot train with; each with what it must be
_POSITIVE = {
    "per_device_train_batch_size": "a batch of at least 1 example",
    "gradient_accumulation_steps": "at least 1",
    "learning_rate": "a learning rate above 0 (e.g. 5e-5)",
    "num_train_epochs": "a number of epochs above 0",
}


#: what the STS-B validation evaluator reports, as the trainer's metric_for_best_model names them (without "eval_")
STSB_VALIDATION_METRICS = ("sts-validation_spearman_cosine", "sts-validation_pearson_cosine")


def check_validation(training: dict[str, Any], evaluation: EvaluationSpec) -> None:
    """Validation during training and the trainer settings that use it agree, before anything loads: the trainer
    would otherwise fail at its construction or first evaluation, or skip the validation silently."""
    validating = evaluation.stsb_validation
    strategy = str(training.get("eval_strategy", "steps" if validating else "no"))
    if validating and strategy == "no":
        raise RecipeError(
            "evaluation.stsb_validation is true, but training.eval_strategy 'no' never runs it: set "
            "evaluation.stsb_validation: false, or training.eval_strategy to steps or epoch."
        )
    if not validating and strategy != "no":
        raise RecipeError(
            f"training.eval_strategy {strategy!r} evaluates during training, but evaluation.stsb_validation is "
            "false, so there is nothing to evaluate: remove training.eval_strategy, or set "
            "evaluation.stsb_validation: true."
        )
    metric = training.get("metric_for_best_model")
    if training.get("load_best_model_at_end"):
        if not validating:
            raise RecipeError(
                "training.load_best_model_at_end picks a checkpoint by its validation score, but "
                "evaluation.stsb_validation is false: set load_best_model_at_end: false, or turn validation on."
            )
        if metric is None:
            raise RecipeError(
                "training.load_best_model_at_end needs training.metric_for_best_model (the trainer's default, the "
                f"evaluation loss, is not computed): set it to eval_{STSB_VALIDATION_METRICS[0]}."
            )
    if validating and metric is not None and str(metric).removeprefix("eval_") not in STSB_VALIDATION_METRICS:
        raise RecipeError(
            f"training.metric_for_best_model {metric!r} is not a metric of the STS-B validation: use one of "
            f"{', '.join('eval_' + name for name in STSB_VALIDATION_METRICS)}."
        )


def check_training_values(training: dict[str, Any]) -> None:
    """Values that pass the trainer's types but would fail later, silently or after the model and data loaded:
    a NaN learning rate, batch size 0, max_steps 0 (which trains one step)."""
    max_steps = training.get("max_steps")
    for key, meaning in _POSITIVE.items():
        if key == "num_train_epochs" and isinstance(max_steps, int) and max_steps > 0:
            continue  # max_steps overrides the epochs
        value = training.get(key)
        if value is not None and not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise RecipeError(f"training.{key} must be {meaning}, got {value!r}.")
    for key in ("weight_decay", "warmup_steps", "warmup_ratio", "max_grad_norm"):
        value = training.get(key)
        if isinstance(value, int | float) and not (math.isfinite(value) and value >= 0):
            raise RecipeError(f"training.{key} must be a finite number >= 0, got {value!r}.")
    if isinstance(max_steps, int) and (max_steps == 0 or max_steps < -1):
        raise RecipeError(
            f"training.max_steps must be a positive number of optimizer steps, or -1 to train for "
            f"num_train_epochs, got {max_steps}."
        )


def set_dotted(raw: dict[str, Any], dotted: str, value: Any, source: str) -> None:
    keys = dotted.split(".")
    if not all(keys):
        raise RecipeError(f"{source}: {dotted!r} is not a dotted key such as training.learning_rate.")
    node = raw
    for depth, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            path = ".".join(keys[: depth + 1])
            raise RecipeError(
                f"{source}: {path} is {child!r}, not a mapping, so {dotted} cannot be set; set {path} itself "
                f"(e.g. {path}=<value>)."
            )
        node = child
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``key.path=value``, the value read as YAML (``true``, ``3e-5``, ``null``, ``[a, b]``), never evaluated."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"--set {text!r}: expected key=value, e.g. --set training.max_steps=100.")
    return key.strip(), parse_yaml(value, f"--set {key.strip()}") if value.strip() else None


def load_recipe(
    path: str | Path, overrides: typing.Sequence[str] = (), variant: str | None = None
) -> tuple[Recipe, dict[str, Any]]:
    """Read, apply the variant and ``--set`` overrides, validate. Returns the recipe and its raw mapping."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Recipe {path} does not exist. The bundled recipes are in recipes/.")
    raw = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    if not isinstance(raw, dict):
        raise RecipeError(f"{path} must be a YAML mapping with model, data, loss, training and evaluation.")
    variants = raw.pop("variants", None) or {}
    if not isinstance(variants, dict):
        raise RecipeError(f"{path}: variants must map a variant name to dotted overrides.")
    if variant is not None:
        if variant not in variants:
            names = ", ".join(variants) or "none"
            raise RecipeError(f"{path} has no variant {variant!r} (its variants: {names}).")
        changes = variants[variant]
        if not isinstance(changes, dict):
            raise RecipeError(f"{path}: variant {variant!r} must map dotted keys to values.")
        for key, value in changes.items():
            set_dotted(raw, str(key), value, f"{path} variant {variant!r}")
    for text in overrides:
        key, value = parse_override(text)
        set_dotted(raw, key, value, f"--set {key}")
    return validate(raw, str(path)), raw


def _batch_size(training: dict[str, Any]) -> int:
    """The per-device training batch size the trainer will use (its own default when the recipe sets none)."""
    from sentence_transformers import SentenceTransformerTrainingArguments

    default = SentenceTransformerTrainingArguments.__dataclass_fields__["per_device_train_batch_size"].default
    return int(training.get("per_device_train_batch_size", default))


def validate(raw: dict[str, Any], source: str = "recipe") -> Recipe:
    try:

        def split_loss(loss: Any, where: str) -> Any:
            """``{name, temperature, <the loss's own keywords>}`` as the schema's name/temperature/params."""
            if not isinstance(loss, dict):
                return loss
            loss = dict(loss)
            name = loss.pop("name", None)
            if name is None:
                raise RecipeError(f"{where}.name is missing: name a loss (see `tempnlp losses`).")
            return {"name": name, "temperature": loss.pop("temperature", None), "params": loss}

        raw = dict(raw)
        if "loss" in raw:
            raw["loss"] = split_loss(raw["loss"], "loss")
        if isinstance(raw.get("datasets"), dict):
            raw["datasets"] = {
                name: {**task, "loss": split_loss(task["loss"], f"datasets.{name}.loss")}
                if isinstance(task, dict) and "loss" in task else task
                for name, task in raw["datasets"].items()
            }  # fmt: skip
        try:
            recipe = Recipe.model_validate(raw)
        except ValidationError as error:
            raise _schema_error(error, Recipe, raw) from None
        check_training(recipe.training)
        check_validation(recipe.training, recipe.evaluation)
        for name, task in recipe.tasks.items():
            try:
                check_loss(task.loss, task.data, _batch_size(recipe.training))
            except RecipeError as error:
                raise RecipeError(f"datasets.{name}: {error}" if name else str(error)) from None
        if recipe.evaluation.sts is not None:
            from tempnlp.evaluation.sts import resolve_tasks

            try:
                resolve_tasks(recipe.evaluation.sts.tasks)
            except ValueError as error:
                raise RecipeError(f"evaluation.sts.tasks: {error}") from error
    except RecipeError as error:
        raise RecipeError(f"{source}: {error}") from None
    return recipe
