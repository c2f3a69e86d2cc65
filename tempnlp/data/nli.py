"""NLI triplets for supervised SimCSE: (premise, entailment hypothesis, contradiction hypothesis)."""

from __future__ import annotations

from datasets import Dataset

from tempnlp.data.hub import split_rows

ENTAILMENT, CONTRADICTION = 0, 2


def nli_triplets(rows, limit: int | None = None) -> Dataset:
    """Group NLI rows by premise into (anchor, positive, negative) triplets, in first-seen order.

    ``rows`` is an iterable of dicts with ``premise``, ``hypothesis`` and ``label`` (0 entailment, 1 neutral,
    2 contradiction, -1 no gold label). A premise gives one triplet when it has both an entailment and a
    contradiction hypothesis (the first of each), as in SimCSE's supervised data.
    """
    by_premise: dict[str, dict[int, str]] = {}
    for row in rows:
        label = row["label"]
        if label in (ENTAILMENT, CONTRADICTION):
            by_premise.setdefault(row["premise"], {}).setdefault(label, row["hypothesis"])
    anchors, positives, negatives = [], [], []
    for premise, hypotheses in by_premise.items():
        if ENTAILMENT in hypotheses and CONTRADICTION in hypotheses:
            anchors.append(premise)
            positives.append(hypotheses[ENTAILMENT])
            negatives.append(hypotheses[CONTRADICTION])
            if limit is not None and len(anchors) >= limit:
                break
    if not anchors:
        raise ValueError("No premise has both an entailment and a contradiction hypothesis: no triplets to build.")
    return Dataset.from_dict({"anchor": anchors, "positive": positives, "negative": negatives})


def snli_triplets(split: str = "train", limit: int | None = None) -> Dataset:
    """SNLI triplets from ``stanfordnlp/snli``: the mirror's copy when there is one, else the Hub."""
    _, rows = split_rows("stanfordnlp/snli", split)
    return nli_triplets(rows, limit=limit)
