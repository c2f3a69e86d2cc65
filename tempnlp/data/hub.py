"""Resolve Hub ids to a local mirror when one is configured, to the Hub otherwise.

Recipes and code name models and datasets by their Hub id (``sentence-transformers/all-MiniLM-L6-v2``,
``stanfordnlp/snli``). When the environment variable ``TEMPNLP_MIRROR`` points at a folder laid out by Hub id
(``<root>/models/<org>/<name>``, ``<root>/datasets/<org>/<name>``), that copy is used, which is how tempnlp runs
where the Hub cannot be reached; otherwise, or when the mirror lacks it, the id goes to the Hub unchanged.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

MIRROR_ENV = "TEMPNLP_MIRROR"
CACHE_ENV = "TEMPNLP_CACHE"


def cache_root() -> Path:
    """Where tempnlp keeps what it derives from downloaded data (mined negatives, unpacked SentEval files)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "tempnlp")


def mirror_root() -> Path | None:
    """The configured mirror root, or None. A set but missing folder is an error, not a silent Hub fallback."""
    value = os.environ.get(MIRROR_ENV)
    if not value:
        return None
    root = Path(value).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"{MIRROR_ENV}={value!r} is not a directory. Point it at the mirror root (the folder holding "
            f"models/ and datasets/), or unset it to use the Hugging Face Hub."
        )
    return root


def resolve_model(name_or_path: str) -> str:
    """A local path stays as is; a Hub id becomes its mirror folder when the mirror has it."""
    if Path(name_or_path).expanduser().exists():
        return str(Path(name_or_path).expanduser())
    root = mirror_root()
    if root is not None:
        candidate = root / "models" / name_or_path
        if (candidate / "config.json").is_file() or (candidate / "modules.json").is_file():
            logger.info("model %s: using the mirror copy at %s", name_or_path, candidate)
            return str(candidate)
        logger.info("model %s: not in the mirror %s, trying the Hugging Face Hub", name_or_path, root)
    return name_or_path


def split_file(folder: Path, split: str, subset: str | None = None) -> Path | None:
    """A split's JSON-lines file in a dataset folder (``[<subset>/]<split>.jsonl[.gz]``), or None."""
    base = folder / subset if subset else folder
    for suffix in (".jsonl.gz", ".jsonl"):
        if (base / f"{split}{suffix}").is_file():
            return base / f"{split}{suffix}"
    return None


def split_rows(
    dataset_id: str, split: str, hub_revision: Callable[[], str | None] | None = None
) -> tuple[str, Iterable[dict]]:
    """Where one split of a Hub dataset is read from, and its rows.

    The mirror's ``datasets/<id>/<split>.jsonl[.gz]`` when the mirror holds it, else the Hub through
    ``datasets.load_dataset`` (which caches it), at the revision ``hub_revision()`` names (asked only then: looking
    it up may be slow). Either way the rows carry the Hub dataset's own columns.
    """
    root = mirror_root()
    if root is not None:
        folder = root / "datasets" / dataset_id
        path = split_file(folder, split)
        if path is not None:
            return str(path), read_jsonl(path)
        absent = f"the mirror has no {folder / split}.jsonl.gz or .jsonl"
    else:
        absent = f"{MIRROR_ENV} is not set"
    from datasets import load_dataset

    revision = hub_revision() if hub_revision is not None else None
    try:
        rows = load_dataset(dataset_id, split=split, revision=revision)
    except Exception as error:  # offline, unknown id, unknown split: each means "not from the Hub either"
        raise FileNotFoundError(
            f"Dataset {dataset_id!r}, split {split!r}: {absent}, and the Hugging Face Hub did not give it "
            f"({type(error).__name__}: {error}). Check the network, or set {MIRROR_ENV} to a mirror holding "
            f"datasets/{dataset_id}/{split}.jsonl.gz."
        ) from error
    at = f" at {revision}" if revision else ""
    return f"{dataset_id} ({split} split{at}, Hugging Face Hub)", rows


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of a text file, gzipped when it ends in ``.gz``; any error names the file, and the
    line when it has one (a byte that is not UTF-8, a corrupt or truncated gzip stream)."""
    opener = gzip.open if path.suffix == ".gz" else open
    line_number = 0
    try:
        with opener(path, "rb") as handle:
            for line_number, raw in enumerate(handle, start=1):
                try:
                    yield line_number, raw.decode("utf-8-sig" if line_number == 1 else "utf-8")  # drop a BOM
                except UnicodeDecodeError as error:
                    raise ValueError(
                        f"{path}:{line_number}: not UTF-8 text ({error.reason} at byte {error.start} of the line). "
                        "Save the file as UTF-8."
                    ) from error
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise ValueError(
            f"{path}: the gzip file is corrupt or truncated after line {line_number} ({error}). Download or copy it "
            "again."
        ) from error


def read_jsonl(path: Path) -> Iterator[dict]:
    """Rows of a (gzipped) JSON-lines file; a malformed line is an error naming file and line."""
    for line_number, line in read_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{line_number}: not a JSON object ({error.msg}).") from error
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{line_number}: not a JSON object (a {type(row).__name__}).")
        yield row
