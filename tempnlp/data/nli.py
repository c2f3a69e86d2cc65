"""NLI triplets for supervised SimCSE: (premise, entailment hypothesis, contradiction hypothesis)."""

from __future__ import annotations

from datasets import Dataset

from tempnlp.data.hub import split_rows

ENTAILMENT, CONTRADICTION = 0, 2


NLI_COLUMNS = ("premise", "hypothesis", "label")


def nli_triplets(rows, limit: int | None = None, source: str = "the NLI rows") -> Dataset:
    """Group NLI rows by premise into (anchor, positive, negative) triplets, in first-seen order.

    ``rows`` is an iterable of dicts with ``premise``, ``hypothesis`` and ``label`` (0 entailment, 1 neutral,
    2 contradiction, -1 no gold label). A premise gives one triplet when it has both an entailment and a
    contradiction hypothesis (the first of each), as in SimCSE's supervised data. ``source`` names the data in
    errors.
    """
    by_premise: dict[str, dict[int, str]] = {}
    for number, row in enumerate(rows, start=1):
        missing = [column for column in NLI_COLUMNS if column not in row]
        if missing:
            raise ValueError(
                f"{source}, row {number}: no {', '.join(missing)} column (it has {', '.join(map(str, row))}). "
                "data.format 'nli-triplets' reads NLI pairs (premise, hypothesis, label); for data that already "
                "holds triplets (anchor, positive, negative), use data.format 'columns'."
            )
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
        raise ValueError(
            f"{source}: no premise has both an entailment (label 0) and a contradiction (label 2) hypothesis, so "
            "there are no triplets to build. Check that the labels follow SNLI's (0, 1, 2)."
        )
    return Dataset.from_dict({"anchor": anchors, "positive": positives, "negative": negatives})


def snli_triplets(split: str = "train", limit: int | None = None) -> Dataset:
    """SNLI triplets from ``stanfordnlp/snli``: the mirror's copy when there is one, else the Hub."""
    _, rows = split_rows("stanfordnlp/snli", split)
    return nli_triplets(rows, limit=limit, source=f"stanfordnlp/snli split {split!r}")
