"""Reading a BEIR-layout folder: corpus, queries and qrels, checked against each other.

A BEIR folder holds ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl`` (``_id``, ``text``) and
``qrels/<split>.tsv`` (``query-id``, ``corpus-id``, ``score`` with a header line); the JSON-lines files may be
gzipped. Training (hard-negative mining) and evaluation (retrieval metrics, mteb's retrieval tasks from the
mirror) read it through :func:`load_beir`, and embed a document as :func:`document_text` gives it.
"""

from __future__ import annotations

import math
from pathlib import Path

from tempnlp.data.hub import read_jsonl, read_lines

Corpus = dict[str, dict[str, str]]
Queries = dict[str, str]
Qrels = dict[str, dict[str, int]]

__all__ = ["Corpus", "Qrels", "Queries", "document_text", "load_beir"]


def _jsonl(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.jsonl", f"{stem}.jsonl.gz"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"BEIR folder {folder} has no {stem}.jsonl (or {stem}.jsonl.gz).")


def _records(path: Path, required: tuple[str, ...]) -> list[dict]:
    rows = []
    for line, row in enumerate(read_jsonl(path), start=1):
        missing = [key for key in required if key not in row]
        if missing:
            raise ValueError(f"{path}: line {line} lacks {', '.join(missing)}.")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path} is empty.")
    return rows


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def load_beir(folder: str | Path, split: str = "test") -> tuple[Corpus, Queries, Qrels]:
    """Corpus, queries and qrels of a BEIR folder, checked against each other."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"BEIR folder {folder} does not exist.")
    corpus_path = _jsonl(folder, "corpus")
    corpus = {
        str(row["_id"]): {"title": str(row.get("title") or ""), "text": str(row["text"])}
        for row in _records(corpus_path, ("_id", "text"))
    }
    queries = {str(row["_id"]): str(row["text"]) for row in _records(_jsonl(folder, "queries"), ("_id", "text"))}
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        raise FileNotFoundError(f"BEIR folder {folder} has no qrels for split {split!r} ({qrels_path}).")
    qrels: Qrels = {}
    lines = [(number, line.rstrip("\r\n")) for number, line in read_lines(qrels_path)]
    lines = [(number, line) for number, line in lines if line.strip()]
    if not lines:
        raise ValueError(f"{qrels_path} is empty.")
    if not _is_number(lines[0][1].split("\t")[2] if lines[0][1].count("\t") >= 2 else ""):
        lines = lines[1:]  # the header line (query-id, corpus-id, score); a file without one starts with a judgment
    for line, text in lines:
        row = text.split("\t")
        if len(row) < 3:
            raise ValueError(
                f"{qrels_path}:{line}: expected query-id, corpus-id and score (tab-separated), got {text!r}."
            )
        query_id, doc_id, score = row[0], row[1], row[2]
        if doc_id not in corpus:
            raise ValueError(f"{qrels_path}:{line}: document {doc_id!r} is not in {corpus_path.name}.")
        if query_id not in queries:
            raise ValueError(f"{qrels_path}:{line}: query {query_id!r} is not in the queries file.")
        if not _is_number(score):
            raise ValueError(f"{qrels_path}:{line}: score {score!r} is not a finite number (BEIR uses 0, 1, 2...).")
        qrels.setdefault(query_id, {})[doc_id] = int(float(score))
    if not any(score > 0 for docs in qrels.values() for score in docs.values()):
        raise ValueError(f"{qrels_path} names no relevant document (no score > 0): nothing to evaluate.")
    return corpus, queries, qrels


def document_text(document: dict[str, str]) -> str:
    """A BEIR document as mteb embeds it: ``title + " " + text``, stripped."""
    return f"{document['title']} {document['text']}".strip()
