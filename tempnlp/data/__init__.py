"""Data: Hub-or-mirror resolution and dataset builders."""

from tempnlp.data.hub import MIRROR_ENV, mirror_root, read_jsonl, resolve_dataset_dir, resolve_model
from tempnlp.data.nli import nli_triplets, snli_triplets

__all__ = [
    "MIRROR_ENV",
    "mirror_root",
    "nli_triplets",
    "read_jsonl",
    "resolve_dataset_dir",
    "resolve_model",
    "snli_triplets",
]
