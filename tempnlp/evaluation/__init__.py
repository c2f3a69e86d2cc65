"""Evaluation: STS (MTEB and SentEval protocols), MTEB runner, retrieval metrics, diagnostics."""

from tempnlp.data.beir import load_beir  # its home is tempnlp.data.beir; kept here for existing imports
from tempnlp.evaluation.retrieval import evaluate_retrieval, retrieval_evaluator
from tempnlp.evaluation.sts import STS_TASKS, STSResult, evaluate_sts, stsb_evaluator

__all__ = [
    "STS_TASKS",
    "STSResult",
    "evaluate_retrieval",
    "evaluate_sts",
    "load_beir",
    "retrieval_evaluator",
    "stsb_evaluator",
]
