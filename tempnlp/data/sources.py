"""Training data named by Hub id: found in a local folder, the mirror or the Hub, then built into loss columns.

:func:`locate` decides where a dataset comes from without reading it (so a recipe with a missing dataset stops
before a model loads) and says which source it used; :func:`build_train_dataset` reads it and returns the
columns the loss takes, in order.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from datasets import Dataset

from tempnlp._io import folder_written_aside
from tempnlp.data.hub import MIRROR_ENV, cache_root, mirror_root, read_jsonl, read_lines, split_file
from tempnlp.data.nli import nli_triplets


@dataclass(frozen=True)
class Located:
    """Where a dataset is read from: a local folder (``local``), the mirror, or the Hugging Face Hub."""

    dataset_id: str
    source: Literal["local", "mirror", "hub"]
    folder: Path | None = None
    #: the file read for a recipe's data.file: itself, or the mirror's sample of it (``<stem>.head.<suffix>``)
    file: str | None = None
    #: the data.file the recipe named, when ``file`` is its sample
    sample_of: str | None = None

    def describe(self) -> str:
        if self.source == "hub":
            return f"{self.dataset_id} from the Hugging Face Hub"
        sample = f", its sample {self.file} of {self.sample_of}" if self.sample_of else ""
        where = "mirror" if self.source == "mirror" else "local folder"
        return f"{self.dataset_id} from the {where} ({self.folder}{sample})"


def _named_file(folder: Path, name: str, *, sample: bool) -> Path | None:
    """The named file, or, with ``sample``, the mirror's ``.head`` sample of it (``wiki1m_for_simcse.head.txt``)."""
    if (folder / name).is_file():
        return folder / name
    stem, dot, suffix = name.rpartition(".")
    head = folder / (f"{stem}.head.{suffix}" if dot else f"{name}.head")
    return head if sample and head.is_file() else None


def _missing_in_folder(
    folder: Path, fmt: str, split: str, file: str | None, subset: str | None, *, sample: bool = False
) -> str | None:
    """What the folder lacks for this format, or None when it has everything."""
    if fmt == "sentences" or (fmt == "columns" and file):
        if _named_file(folder, file or "", sample=sample) is None:
            return str(folder / (file or ""))
    elif fmt in ("nli-triplets", "columns"):
        if split_file(folder, split, subset) is None:
            return f"{(folder / subset) if subset else folder}/{split}.jsonl[.gz]"
    elif fmt == "beir":
        for stem in ("corpus", "queries"):
            if not any((folder / f"{stem}{s}").is_file() for s in (".jsonl", ".jsonl.gz")):
                return f"{folder}/{stem}.jsonl[.gz]"
        if not (folder / "qrels" / f"{split}.tsv").is_file():
            return str(folder / "qrels" / f"{split}.tsv")
    return None


def _hub_status(dataset_id: str) -> str | None:
    """None when the Hub has the dataset; otherwise why it cannot be used."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return "HF_HUB_OFFLINE is set"
    try:
        from huggingface_hub import HfApi

        if HfApi().repo_exists(dataset_id, repo_type="dataset"):
            return None
        return "the Hub has no dataset of that id"
    except Exception as error:  # no network, proxy, DNS...: all mean "not from the Hub"
        return f"the Hub could not be reached ({type(error).__name__}: {error})"


def locate(
    dataset_id: str, fmt: str, split: str = "train", *, file: str | None = None, subset: str | None = None
) -> Located:
    """Find a dataset for a recipe: a local folder path, else ``<mirror>/datasets/<id>``, else the Hub."""
    reads_file = file is not None and fmt in ("sentences", "columns")

    def found(source: Literal["local", "mirror"], folder: Path) -> Located:
        if not reads_file:
            return Located(dataset_id, source, folder)
        path = _named_file(folder, file, sample=source == "mirror")
        return Located(dataset_id, source, folder, path.name, None if path.name == file else file)

    local = Path(dataset_id).expanduser()
    if local.is_dir():
        missing = _missing_in_folder(local, fmt, split, file, subset)
        if missing:
            raise FileNotFoundError(f"Dataset folder {local} has no {missing} (needed by data.format {fmt!r}).")
        return found("local", local)
    root = mirror_root()
    mirror_note = f"{MIRROR_ENV} is not set"
    if root is not None:
        folder = root / "datasets" / dataset_id
        missing = _missing_in_folder(folder, fmt, split, file, subset, sample=True) if folder.is_dir() else str(folder)
        if missing is None:
            return found("mirror", folder)
        mirror_note = f"the mirror has no {missing}"
    problem = _hub_status(dataset_id)
    if problem is None:
        return Located(dataset_id, "hub", file=file if reads_file else None)
    raise FileNotFoundError(
        f"Dataset {dataset_id!r} is in neither the mirror nor the Hub: {mirror_note}, and {problem}. Check the id "
        f"(Hub ids look like stanfordnlp/snli), or set {MIRROR_ENV} to a mirror that holds it."
    )


# ---------------------------------------------------------------------------------------------------------------
# Readers


def _rows(located: Located, split: str, subset: str | None = None) -> Iterator[dict]:
    if located.source == "hub":
        from datasets import load_dataset

        yield from load_dataset(located.dataset_id, subset, split=split)
        return
    path = split_file(located.folder, split, subset)
    yield from read_jsonl(path)


def _file_path(located: Located, file: str, log: Callable[[str], None]) -> Path:
    """A file of the dataset repository: downloaded from the Hub, or found in the folder (or its sample)."""
    if located.source == "hub":
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(located.dataset_id, file, repo_type="dataset"))
    if located.sample_of is not None:
        log(f"data: {file} is not in {located.folder}; using its sample {located.file}")
    return located.folder / (located.file or file)


def _sentences(located: Located, file: str, log: Callable[[str], None]) -> Iterator[str]:
    for _, line in read_lines(_file_path(located, file, log)):
        if line.strip():
            yield line.strip()


def table_kind(file: str) -> Literal["csv", "tsv", "jsonl"] | None:
    """How a data file of format columns is read, from its name; None when it cannot be."""
    name = file.lower()
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".tsv"):
        return "tsv"
    if name.endswith((".jsonl", ".jsonl.gz")):
        return "jsonl"
    return None


def _table_rows(path: Path) -> Iterator[dict]:
    """Rows of a .csv or .tsv file with a header line (every value a string, a missing one ""), or of JSON lines."""
    kind = table_kind(path.name)
    if kind == "jsonl":
        yield from read_jsonl(path)
        return
    if kind is None:
        raise ValueError(f"{path}: format columns reads a .csv, .tsv, .jsonl or .jsonl.gz file.")
    lines = (line for _, line in read_lines(path))  # UTF-8 errors and corrupt files named with the line
    # a row shorter than the header has None in its missing cells, which the columns check names
    yield from csv.DictReader(lines, delimiter="," if kind == "csv" else "\t")


def beir_folder(located: Located) -> Path:
    if located.source == "hub":
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(located.dataset_id, repo_type="dataset"))
    return located.folder


def _first(items: Iterable, limit: int | None) -> list:
    out = []
    for item in items:
        out.append(item)
        if limit is not None and len(out) >= limit:
            break
    return out


def beir_pairs(folder: Path, split: str, limit: int | None = None) -> tuple[Dataset, list[str]]:
    """(query, relevant document) pairs of a BEIR split and the corpus texts, documents as mteb embeds them."""
    from tempnlp.data.beir import document_text, load_beir

    corpus, queries, qrels = load_beir(folder, split)
    pairs = [
        (queries[qid], document_text(corpus[doc]))
        for qid, docs in qrels.items()
        for doc, score in docs.items()
        if score > 0
    ]
    pairs = _first(pairs, limit)
    dataset = Dataset.from_dict({"anchor": [q for q, _ in pairs], "positive": [d for _, d in pairs]})
    return dataset, [document_text(doc) for doc in corpus.values()]


# ---------------------------------------------------------------------------------------------------------------
# Building the training columns


def build_train_dataset(
    spec,
    located: Located,
    model=None,
    *,
    log: Callable[[str], None] = print,
) -> Dataset:
    """The training columns of a :class:`~tempnlp.train.recipe.DataSpec`, in loss order.

    ``beir`` mines hard negatives with ``model`` (sentence-transformers' ``mine_hard_negatives``); the mined set
    is cached under ``$TEMPNLP_CACHE`` (default ``~/.cache/tempnlp``) by data, settings and the loaded model.
    """
    if spec.format == "nli-triplets":
        dataset = nli_triplets(
            _rows(located, spec.split), limit=spec.limit, source=f"{located.describe()} split {spec.split!r}"
        )
    elif spec.format == "sentences":
        sentences = _first(_sentences(located, spec.file, log), spec.limit)
        dataset = Dataset.from_dict({"anchor": sentences, "positive": sentences})
    elif spec.format == "columns":
        if spec.file:
            rows = _first(_table_rows(_file_path(located, spec.file, log)), spec.limit)
            where = f"file {spec.file!r}"
        else:
            rows = _first(_rows(located, spec.split, spec.subset), spec.limit)
            where = f"split {spec.split!r}"
        if not rows:
            raise ValueError(f"{located.describe()} {where} is empty.")
        missing = [column for column in spec.columns if column not in rows[0]]
        if missing:
            raise ValueError(
                f"data.columns {missing} are not columns of {located.dataset_id} (it has {', '.join(rows[0])})."
            )
        for number, row in enumerate(rows, start=1):
            empty = [column for column in spec.columns if row.get(column) is None]
            if empty:  # a null would be trained on as the text "None"; a missing key is the same hole
                raise ValueError(
                    f"{located.describe()} {where}, row {number}: no value (missing or null) in "
                    f"column{'s' * (len(empty) > 1)} {', '.join(map(repr, empty))}. Drop or fill such rows before "
                    "training."
                )
        dataset = Dataset.from_dict({column: [str(row[column]) for row in rows] for column in spec.columns})
    elif spec.format == "beir":
        if model is None:
            raise ValueError("data.format 'beir' mines hard negatives and needs the model.")
        dataset = _mined(spec, located, model, log)
    else:
        raise ValueError(f"Unknown data.format {spec.format!r}.")
    check_trainable(dataset, located, spec)
    return dataset


def check_trainable(dataset: Dataset, located: Located, spec) -> None:
    """A training set with something to contrast: rows, and at least two different anchors (the no-duplicates
    sampler puts copies of one text into separate batches, so a set of copies trains on batches of one)."""
    where = f"{located.describe()}{f', file {spec.file}' if spec.file else ''}"
    if len(dataset) == 0:
        raise ValueError(
            f"{where} gives no training examples (an empty file, only blank lines, or no row of the format "
            f"{spec.format!r}). Check data.dataset, data.file and data.split."
        )
    anchors = dataset[dataset.column_names[0]]
    if len(set(anchors)) < 2:
        raise ValueError(
            f"{where}: all {len(dataset)} training examples have the same text ({anchors[0][:60]!r}), so a batch "
            "holds one example and the loss has no negatives. A contrastive loss needs different examples."
        )


def _model_fingerprint(model) -> str:
    """A hash of what decides the model's rankings, read from the loaded model: its modules, token length, prompts,
    similarity function, tokenizer and every weight, and the sentence-transformers version that mines with it. The
    weights are hashed in memory rather than from the folder, so that what a recipe adds on loading (a pooling over
    a bare checkpoint, SimCSE's seeded MLP) counts too."""
    import sentence_transformers
    import torch

    digest = hashlib.sha256()

    def add(text: str) -> None:
        digest.update(text.encode())
        digest.update(b"\0")

    add(repr(model))  # module types and their configs: pooling mode, normalisation
    settings = [model.max_seq_length, model.prompts, model.default_prompt_name, model.similarity_fn_name]
    add(json.dumps([*settings, sentence_transformers.__version__], sort_keys=True))
    tokenizer = model.tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    add(backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items())))
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            add(f"{name} {tensor.dtype} {tuple(tensor.shape)}")
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _mined(spec, located: Located, model, log: Callable[[str], None]) -> Dataset:
    import random

    from sentence_transformers.util import mine_hard_negatives

    folder = beir_folder(located)
    pairs, documents = beir_pairs(folder, spec.split, spec.limit)
    settings = spec.hard_negatives.model_dump()
    # The data enter the key by path, size and modification time of their files (hashing SciFact's corpus on every
    # run would cost more than it saves), the model by what decides its embeddings, and random sampling by the
    # state of the generator it draws from (seeded by the recipe).
    files = sorted(p for p in Path(folder).resolve().rglob("*") if p.is_file())
    stamps = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    draws = repr(random.getstate()) if settings["sampling_strategy"] == "random" else None
    key = json.dumps(
        {"data": stamps, "split": spec.split, "limit": spec.limit, "mining": settings, "draws": draws},
        sort_keys=True,
    )
    key += _model_fingerprint(model)
    cache = cache_root() / "mined" / hashlib.sha256(key.encode()).hexdigest()[:16]
    if (cache / "dataset_info.json").is_file():
        log(f"data: hard negatives from the cache {cache}")
        return Dataset.load_from_disk(str(cache))
    log(f"data: mining {settings['num_negatives']} hard negative(s) for {len(pairs)} pairs with the base model")
    mined = mine_hard_negatives(
        pairs,
        model,
        anchor_column_name="anchor",
        positive_column_name="positive",
        corpus=documents,
        range_min=settings["range_min"],
        range_max=settings["range_max"],
        relative_margin=settings["relative_margin"],
        num_negatives=settings["num_negatives"],
        sampling_strategy=settings["sampling_strategy"],
        batch_size=settings["batch_size"],
        output_format="n-tuple",
        verbose=False,
    )
    if len(mined) == 0:
        raise ValueError(
            "Hard-negative mining kept no pair: loosen data.hard_negatives (a larger range_max, a smaller "
            "relative_margin or range_min)."
        )
    log(f"data: {len(mined)} of {len(pairs)} pairs kept a full set of hard negatives")
    with folder_written_aside(cache) as temporary:  # a half-written cache is never read
        mined.save_to_disk(str(temporary))
    return mined
