"""Retrieval metrics on a BEIR-layout folder, scored as mteb scores them.

The folder is read by :func:`tempnlp.data.beir.load_beir` (its module describes the layout). sentence-transformers'
``InformationRetrievalEvaluator`` embeds and ranks (documents as ``title + " " + text``, stripped, as mteb embeds
them); :class:`MtebScoredRetrievalEvaluator` then scores the rankings with mteb's definitions rather than
sentence-transformers' own: nDCG with graded relevance and Recall@k from ``pytrec_eval``, MRR@k with pytrec_eval's
tie order (score, then document id, both descending), every query with a judgment counted (one whose documents are
all judged 0 scores 0), and optionally the query's own id left out of its ranking (mteb's ``ignore_identical_ids``,
set for ArguAna, Quora and other tasks whose queries are also documents). A test checks the numbers against
mteb's on the same folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytrec_eval
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
from sentence_transformers.util import cos_sim

from tempnlp._io import write_json_atomic
from tempnlp.data.beir import Qrels, document_text, load_beir

#: the reported cut-offs: (metric, k)
NDCG_AT, MRR_AT, RECALL_AT = 10, 10, 100


def mteb_retrieval_scores(
    qrels: Qrels, rankings: Mapping[str, Mapping[str, float]], *, ignore_identical_ids: bool = False
) -> dict[str, float]:
    """nDCG@10, MRR@10, Recall@100, Accuracy@1, Precision@100 and MAP@100 (fractions) of ``rankings``
    (query id to {document id: score}), averaged over the queries with a judgment, as mteb computes them."""
    runs = {
        query: {doc: float(score) for doc, score in ranked.items() if not (ignore_identical_ids and doc == query)}
        for query, ranked in rankings.items()
        if qrels.get(query)
    }
    judged = {query: dict(qrels[query]) for query in runs}
    measures = {f"ndcg_cut.{NDCG_AT}", f"recall.{RECALL_AT}", f"P.{RECALL_AT}", "success.1", f"map_cut.{RECALL_AT}"}
    per_query = pytrec_eval.RelevanceEvaluator(judged, measures).evaluate(runs)

    def mean(measure: str) -> float:
        return float(np.mean([scores[measure] for scores in per_query.values()]))

    reciprocal_ranks = []
    for query, ranked in runs.items():
        relevant = {doc for doc, grade in judged[query].items() if grade > 0}
        top = sorted(ranked.items(), key=lambda item: (item[1], item[0]), reverse=True)[:MRR_AT]
        reciprocal_ranks.append(next((1.0 / rank for rank, (doc, _) in enumerate(top, 1) if doc in relevant), 0.0))
    return {
        f"ndcg@{NDCG_AT}": mean(f"ndcg_cut_{NDCG_AT}"),
        f"mrr@{MRR_AT}": float(np.mean(reciprocal_ranks)),
        f"recall@{RECALL_AT}": mean(f"recall_{RECALL_AT}"),
        "accuracy@1": mean("success_1"),
        f"precision@{RECALL_AT}": mean(f"P_{RECALL_AT}"),
        f"map@{RECALL_AT}": mean(f"map_cut_{RECALL_AT}"),
    }


class MtebScoredRetrievalEvaluator(InformationRetrievalEvaluator):
    """sentence-transformers' retrieval evaluator (embedding, ranking, logging, model card) with mteb's metric
    definitions. Its ``*_at_k`` settings are fixed to the metrics above; with ``ignore_identical_ids`` it ranks
    one document deeper, so that the query's own id, when left out, leaves 100 documents for Recall@100."""

    def __init__(
        self,
        queries: dict[str, str],
        corpus: dict[str, str],
        qrels: Qrels,
        *,
        ignore_identical_ids: bool = False,
        batch_size: int = 64,
        name: str = "",
        show_progress_bar: bool = True,
    ) -> None:
        depth = RECALL_AT + int(ignore_identical_ids)
        super().__init__(
            # every judged query, as mteb keeps them (sentence-transformers keeps those with a non-empty set)
            queries={query: queries[query] for query in qrels if qrels[query]},
            corpus=corpus,
            relevant_docs={query: set(docs) for query, docs in qrels.items()},
            mrr_at_k=[MRR_AT],
            ndcg_at_k=[NDCG_AT],
            accuracy_at_k=[1],
            precision_recall_at_k=[RECALL_AT],
            map_at_k=[depth],
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
            name=name,
            write_csv=False,
            score_functions={"cosine": cos_sim},
            main_score_function="cosine",
        )
        self.qrels = qrels
        self.ignore_identical_ids = ignore_identical_ids

    def compute_metrics(self, queries_result_list: list[list[dict]]) -> dict[str, dict[int, float]]:
        rankings = {
            query: {hit["corpus_id"]: hit["score"] for hit in hits}
            for query, hits in zip(self.queries_ids, queries_result_list, strict=True)
        }
        scores = mteb_retrieval_scores(self.qrels, rankings, ignore_identical_ids=self.ignore_identical_ids)
        return {
            "accuracy@k": {1: scores["accuracy@1"]},
            "precision@k": {RECALL_AT: scores[f"precision@{RECALL_AT}"]},
            "recall@k": {RECALL_AT: scores[f"recall@{RECALL_AT}"]},
            "ndcg@k": {NDCG_AT: scores[f"ndcg@{NDCG_AT}"]},
            "mrr@k": {MRR_AT: scores[f"mrr@{MRR_AT}"]},
            "map@k": {RECALL_AT: scores[f"map@{RECALL_AT}"]},
        }


def retrieval_evaluator(
    folder: str | Path,
    split: str = "test",
    batch_size: int = 64,
    name: str = "",
    *,
    ignore_identical_ids: bool = False,
) -> MtebScoredRetrievalEvaluator:
    corpus, queries, qrels = load_beir(folder, split)
    return MtebScoredRetrievalEvaluator(
        queries,
        {doc_id: document_text(doc) for doc_id, doc in corpus.items()},
        qrels,
        ignore_identical_ids=ignore_identical_ids,
        batch_size=batch_size,
        name=name,
    )


def evaluate_retrieval(
    model: SentenceTransformer,
    folder: str | Path,
    *,
    model_name: str,
    split: str = "test",
    batch_size: int = 64,
    ignore_identical_ids: bool = False,
    output_dir: str | Path | None = None,
) -> dict[str, float]:
    """nDCG@10, MRR@10 and Recall@100 (x 100); with ``output_dir``, written to ``retrieval.json``."""
    evaluator = retrieval_evaluator(folder, split, batch_size, ignore_identical_ids=ignore_identical_ids)
    metrics = evaluator(model)
    prefix = f"{evaluator.name}_cosine_" if evaluator.name else "cosine_"
    scores = {
        f"ndcg@{NDCG_AT}": 100 * metrics[f"{prefix}ndcg@{NDCG_AT}"],
        f"mrr@{MRR_AT}": 100 * metrics[f"{prefix}mrr@{MRR_AT}"],
        f"recall@{RECALL_AT}": 100 * metrics[f"{prefix}recall@{RECALL_AT}"],
    }
    if output_dir is not None:
        write_json_atomic(
            Path(output_dir) / "retrieval.json",
            {
                "model": model_name,
                "data": str(folder),
                "split": split,
                "ignore_identical_ids": ignore_identical_ids,
                "queries": len(evaluator.queries),
                "documents": len(evaluator.corpus),
                "scores": {key: round(value, 4) for key, value in scores.items()},
            },
        )
    return scores
