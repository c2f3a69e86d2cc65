"""Integration tests on the real all-MiniLM-L6-v2 and data from the offline mirror (TEMPNLP_MIRROR).

They fail, never skip, in CI when the mirror is missing (see conftest.mirror).
"""

from __future__ import annotations

import gzip
import json

import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

from tempnlp.data import resolve_model, snli_triplets
from tempnlp.evaluation import stsb_evaluator
from tempnlp.losses import InfoNCELoss

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def minilm(minilm_path, monkeypatch_module):
    monkeypatch_module.setenv("TEMPNLP_MIRROR", str(minilm_path.parents[2]))
    path = resolve_model(MINILM)
    assert path == str(minilm_path)  # resolved through the mirror, by Hub id
    model = SentenceTransformer(path, device="cpu")
    model.max_seq_length = 32
    return model


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_snli_triplets_follow_the_labels(mirror, monkeypatch):
    monkeypatch.setenv("TEMPNLP_MIRROR", str(mirror))
    triplets = snli_triplets("train", limit=200)
    assert triplets.column_names == ["anchor", "positive", "negative"] and len(triplets) == 200
    labels = {}
    with gzip.open(mirror / "datasets/stanfordnlp/snli/train.jsonl.gz", "rt", encoding="utf-8") as handle:
        for line, _ in zip(handle, range(5000), strict=False):
            row = json.loads(line)
            labels[(row["premise"], row["hypothesis"])] = row["label"]
    for row in triplets:
        assert labels[(row["anchor"], row["positive"])] == 0
        assert labels[(row["anchor"], row["negative"])] == 2


def test_infonce_equals_mnrl_on_minilm_in_float32(minilm, mirror, monkeypatch):
    """The float32 counterpart of the tiny-model parity test, on well-spread embeddings."""
    monkeypatch.setenv("TEMPNLP_MIRROR", str(mirror))
    batch = snli_triplets("train", limit=16)
    columns = [batch["anchor"], batch["positive"], batch["negative"]]
    results = []
    for loss in (InfoNCELoss(minilm, temperature=0.05), MultipleNegativesRankingLoss(minilm, scale=20.0)):
        minilm.zero_grad()
        value = loss([minilm.preprocess(texts) for texts in columns], None)
        value.backward()
        grads = {n: p.grad.clone() for n, p in minilm.named_parameters() if p.grad is not None}
        results.append((value.item(), grads))
    (ours, our_grads), (theirs, their_grads) = results
    assert ours == pytest.approx(theirs, abs=1e-6)
    for name, grad in their_grads.items():
        torch.testing.assert_close(our_grads[name], grad, atol=1e-6, rtol=0, msg=name)


def test_minilm_matches_its_published_stsb_score(minilm, mirror, monkeypatch):
    """MTEB reports 82.03 cosine Spearman on STSBenchmark (test) for all-MiniLM-L6-v2 at its own max length."""
    monkeypatch.setenv("TEMPNLP_MIRROR", str(mirror))
    minilm.max_seq_length = 256
    try:
        evaluator = stsb_evaluator("test")
        score = evaluator(minilm)[evaluator.primary_metric]
    finally:
        minilm.max_seq_length = 32
    assert 100 * score == pytest.approx(82.03, abs=0.01)
