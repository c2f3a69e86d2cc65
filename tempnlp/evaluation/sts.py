"""STS evaluation from the mirror's copy of MTEB's STS data."""

from __future__ import annotations

from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

from tempnlp.data.hub import read_jsonl, resolve_dataset_dir


def stsb_evaluator(split: str = "validation", batch_size: int = 64) -> EmbeddingSimilarityEvaluator:
    """sentence-transformers' EmbeddingSimilarityEvaluator on STS Benchmark (``mteb/stsbenchmark-sts``).

    Gold scores are divided by 5 (the evaluator reports Spearman, which the scaling leaves unchanged).
    Pass it to ``SentenceTransformerTrainer(evaluator=...)`` to follow STS-B during training.
    """
    if split not in ("train", "validation", "test"):
        raise ValueError(f"split must be 'train', 'validation' or 'test', got {split!r}.")
    path = resolve_dataset_dir("mteb/stsbenchmark-sts") / f"{split}.jsonl.gz"
    if not path.is_file():
        raise FileNotFoundError(f"STS Benchmark split {split!r} is not in the mirror: {path} does not exist.")
    rows = list(read_jsonl(path))
    if not rows:
        raise ValueError(f"{path} holds no rows.")
    return EmbeddingSimilarityEvaluator(
        sentences1=[row["sentence1"] for row in rows],
        sentences2=[row["sentence2"] for row in rows],
        scores=[float(row["score"]) / 5.0 for row in rows],
        batch_size=batch_size,
        main_similarity="cosine",
        similarity_fn_names=["cosine"],
        name=f"sts-{split}",
        write_csv=False,
    )
