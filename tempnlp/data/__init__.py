"""Data: Hub-or-mirror resolution and dataset builders."""

from tempnlp.data.hub import MIRROR_ENV, mirror_root, read_jsonl, resolve_model, split_rows
from tempnlp.data.nli import nli_triplets, snli_triplets

__all__ = [
    "MIRROR_ENV",
    "mirror_root",
    "nli_triplets",
    "read_jsonl",
    "resolve_model",
    "snli_triplets",
    "split_rows",
]
