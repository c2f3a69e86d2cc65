"""Naive per-row, per-entry reference implementations in plain Python floats (float64).

Written from the papers' formulas, loop by loop, sharing no code with tempnlp: the objectives are tested
against these.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

Vector = Sequence[float]
# tau(row, column, similarity, alignment, positive_similarity_of_row) -> temperature of that entry
TauFn = Callable[[int, int, float, float, float], float]


def cosine(u: Vector, v: Vector) -> float:
    dot = sum(a * b for a, b in zip(u, v, strict=True))
    return dot / (math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v)))


def logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def _rows(anchors, candidates_per_row, positive_index, tau: TauFn, alignment: float):
    """Yield (similarities, temperatures, positive_similarity) of each row."""
    for i, anchor in enumerate(anchors):
        sims = [cosine(anchor, c) for c in candidates_per_row(i)]
        pos = sims[positive_index(i)]
        taus = [tau(i, j, s, alignment, pos) for j, s in enumerate(sims)]
        yield sims, taus, pos


def infonce(
    anchors: list[Vector],
    columns: list[list[Vector]],
    tau: TauFn,
    symmetric: bool = False,
    reweight: bool = False,
) -> float:
    batch = len(anchors)
    documents = [doc for column in columns for doc in column]
    positives = columns[0]
    alignment = sum(cosine(anchors[i], positives[i]) for i in range(batch)) / batch

    def direction(queries, candidates):
        losses = []
        for i, (sims, taus, _) in enumerate(_rows(queries, lambda _: candidates, lambda i: i, tau, alignment)):
            logits = [s / t for s, t in zip(sims, taus, strict=True)]
            loss = logsumexp(logits) - logits[i]
            if reweight:
                loss *= 1.0 / (1.0 - math.exp(logits[i] - logsumexp(logits)))
            losses.append(loss)
        return losses

    forward = direction(anchors, documents)
    if not symmetric:
        return sum(forward) / batch
    backward = direction(positives, anchors)
    return sum(0.5 * (f + b) for f, b in zip(forward, backward, strict=True)) / batch


def dcl(
    anchors: list[Vector],
    columns: list[list[Vector]],
    tau: TauFn,
    sigma: float | None = None,
    symmetric: bool = False,
    anchor_negatives: bool = False,
) -> float:
    batch = len(anchors)
    documents = [doc for column in columns for doc in column]
    positives = columns[0]
    pos_sims = [cosine(anchors[i], positives[i]) for i in range(batch)]
    alignment = sum(pos_sims) / batch
    if sigma is None:
        weights = [1.0] * batch
    else:
        normaliser = sum(math.exp(s / sigma) for s in pos_sims)
        weights = [2.0 - batch * math.exp(s / sigma) / normaliser for s in pos_sims]

    def direction(queries, candidates, same_side):
        losses = []
        for i, query in enumerate(queries):
            pool = list(candidates) + (list(same_side) if anchor_negatives else [])
            sims = [cosine(query, c) for c in pool]
            taus = [tau(i, j, s, alignment, sims[i]) for j, s in enumerate(sims)]
            positive_logit = sims[i] / taus[i]
            negatives = [
                s / t
                for j, (s, t) in enumerate(zip(sims, taus, strict=True))
                if j != i and not (anchor_negatives and j == len(candidates) + i)
            ]
            losses.append(-weights[i] * positive_logit + logsumexp(negatives))
        return losses

    forward = direction(anchors, documents, anchors)
    if not symmetric:
        return sum(forward) / batch
    backward = direction(positives, anchors, positives)
    return sum(0.5 * (f + b) for f, b in zip(forward, backward, strict=True)) / batch
