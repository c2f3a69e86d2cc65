"""Retrieval metrics on a BEIR-layout folder with sentence-transformers' InformationRetrievalEvaluator.

A BEIR folder holds ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl`` (``_id``, ``text``) and
``qrels/<split>.tsv`` (``query-id``, ``corpus-id``, ``score`` with a header line); the JSON-lines files may be
gzipped. Documents are embedded as ``title + " " + text`` (stripped) and queries without a relevant document
are left out, both as mteb does, so nDCG@10, MRR@10 and Recall@100 equal mteb's on the same folder (a test
checks it). Relevance is binary (score > 0), which is what BEIR's qrels hold for SciFact.
"""

from __future__ import annotations

import csv
from pathlib import Path

from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
from sentence_transformers.util import cos_sim

from tempnlp._io import write_json_atomic
from tempnlp.data.hub import read_jsonl

Corpus = dict[str, dict[str, str]]
Queries = dict[str, str]
Qrels = dict[str, dict[str, int]]


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
    with qrels_path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{qrels_path} is empty.")
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) < 3:
                raise ValueError(f"{qrels_path}:{line}: expected query-id, corpus-id and score, got {row!r}.")
            query_id, doc_id, score = row[0], row[1], row[2]
            if doc_id not in corpus:
                raise ValueError(f"{qrels_path}:{line}: document {doc_id!r} is not in {corpus_path.name}.")
            if query_id not in queries:
                raise ValueError(f"{qrels_path}:{line}: query {query_id!r} is not in the queries file.")
            try:
                qrels.setdefault(query_id, {})[doc_id] = int(float(score))
            except ValueError as error:
                raise ValueError(f"{qrels_path}:{line}: score {score!r} is not a number.") from error
    if not any(score > 0 for docs in qrels.values() for score in docs.values()):
        raise ValueError(f"{qrels_path} names no relevant document (no score > 0): nothing to evaluate.")
    return corpus, queries, qrels


def document_text(document: dict[str, str]) -> str:
    """A BEIR document as mteb embeds it: ``title + " " + text``, stripped."""
    return f"{document['title']} {document['text']}".strip()


def retrieval_evaluator(
    folder: str | Path, split: str = "test", batch_size: int = 64, name: str = ""
) -> InformationRetrievalEvaluator:
    corpus, queries, qrels = load_beir(folder, split)
    relevant = {qid: {doc for doc, score in docs.items() if score > 0} for qid, docs in qrels.items()}
    return InformationRetrievalEvaluator(
        queries={qid: queries[qid] for qid in relevant if relevant[qid]},
        corpus={doc_id: document_text(doc) for doc_id, doc in corpus.items()},
        relevant_docs=relevant,
        mrr_at_k=[10],
        ndcg_at_k=[10],
        accuracy_at_k=[1],
        precision_recall_at_k=[100],
        map_at_k=[100],
        batch_size=batch_size,
        show_progress_bar=True,
        name=name,
        write_csv=False,
        score_functions={"cosine": cos_sim},
        main_score_function="cosine",
    )


def evaluate_retrieval(
    model: SentenceTransformer,
    folder: str | Path,
    *,
    model_name: str,
    split: str = "test",
    batch_size: int = 64,
    output_dir: str | Path | None = None,
) -> dict[str, float]:
    """nDCG@10, MRR@10 and Recall@100 (x 100); with ``output_dir``, written to ``retrieval.json``."""
    evaluator = retrieval_evaluator(folder, split, batch_size)
    metrics = evaluator(model)
    prefix = f"{evaluator.name}_cosine_" if evaluator.name else "cosine_"
    scores = {
        "ndcg@10": 100 * metrics[f"{prefix}ndcg@10"],
        "mrr@10": 100 * metrics[f"{prefix}mrr@10"],
        "recall@100": 100 * metrics[f"{prefix}recall@100"],
    }
    if output_dir is not None:
        write_json_atomic(
            Path(output_dir) / "retrieval.json",
            {
                "model": model_name,
                "data": str(folder),
                "split": split,
                "queries": len(evaluator.queries),
                "documents": len(evaluator.corpus),
                "scores": {key: round(value, 4) for key, value in scores.items()},
            },
        )
    return scores
