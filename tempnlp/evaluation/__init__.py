"""Evaluation: STS and diagnostics."""

from tempnlp.evaluation.sts import stsb_evaluator

__all__ = ["stsb_evaluator"]
