"""Retrieval metrics on a BEIR-layout folder with sentence-transformers' InformationRetrievalEvaluator.

The folder is read by :func:`tempnlp.data.beir.load_beir` (its module describes the layout). Documents are
embedded as ``title + " " + text`` (stripped) and queries without a relevant document are left out, both as mteb
does, so nDCG@10, MRR@10 and Recall@100 equal mteb's on the same folder (a test checks it). Relevance is binary
(score > 0), which is what BEIR's qrels hold for SciFact.
"""

from __future__ import annotations

from pathlib import Path

from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
from sentence_transformers.util import cos_sim

from tempnlp._io import write_json_atomic
from tempnlp.data.beir import document_text, load_beir


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
