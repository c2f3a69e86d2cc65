"""Integration tests on the real all-MiniLM-L6-v2 and data from the offline mirror (TEMPNLP_MIRROR).

They fail, never skip, in CI when the mirror is missing (see conftest.mirror).
"""

from __future__ import annotations

import gzip
import json

import numpy as np
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


# Published MTEB results of all-MiniLM-L6-v2 (cosine Spearman x 100, test split), from the MTEB results
# repository: embeddings-benchmark/results, results/sentence-transformers__all-MiniLM-L6-v2/
# 8b3219a92973c328a8e22fadcfa821b5dc75636a/<Task>.json (computed with mteb 1.12.75).
PUBLISHED = {
    "STS12": 72.369,
    "STS13": 80.603,
    "STS14": 75.589,
    "STS15": 85.390,
    "STS16": 78.989,
    "STSBenchmark": 82.032,
    "SICK-R": 77.582,
}


class RememberedEncode:
    """``model.encode`` that embeds a text once per setting and answers repeats from what it computed.

    Arguments that only shape the call (batch size, progress bar, output type) are not part of the setting; any
    other one (a prompt, normalisation, precision), and the model's maximum length, is, so a request the first
    caller did not make is embedded afresh. ``embedded`` counts the texts that reached the model, ``asked`` holds
    every text asked for.
    """

    SHAPE_ONLY = frozenset({"batch_size", "show_progress_bar", "convert_to_numpy", "convert_to_tensor"})

    def __init__(self, model: SentenceTransformer) -> None:
        self.model, self.model_encode = model, model.encode
        self.remembered: dict[tuple, np.ndarray] = {}
        self.embedded = 0
        self.asked: set[str] = set()

    def __call__(self, inputs=None, **kwargs):
        inputs = kwargs.pop("sentences") if inputs is None else inputs  # sentence-transformers 6 names it inputs
        if kwargs.get("convert_to_numpy") is False and not kwargs.get("convert_to_tensor"):
            raise NotImplementedError("RememberedEncode returns an array or a tensor, not a list of tensors")
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        # prompt=None and prompt_name=None mean no prompt, as when they are left out
        setting = {
            k: v for k, v in kwargs.items() if k not in self.SHAPE_ONLY and not (k.startswith("prompt") and v is None)
        }
        key = (self.model.max_seq_length, *sorted((k, repr(v)) for k, v in setting.items()))
        missing = list(dict.fromkeys(t for t in texts if (key, t) not in self.remembered))
        if missing:
            computed = self.model_encode(
                missing,
                batch_size=kwargs.get("batch_size", 32),
                show_progress_bar=False,
                convert_to_numpy=True,
                **setting,
            )
            self.remembered.update(((key, t), e) for t, e in zip(missing, computed, strict=True))
            self.embedded += len(missing)
        self.asked.update(texts)
        embeddings = np.stack([self.remembered[key, t] for t in texts])
        if kwargs.get("convert_to_tensor"):
            embeddings = torch.from_numpy(embeddings)
        return embeddings[0] if isinstance(inputs, str) else embeddings


@pytest.fixture(scope="module")
def sts_both_ways(minilm, mirror, tmp_path_factory):
    """Our 7-task STS evaluation and mteb's own (real task classes, mirror data, via the runner), once.

    mteb's encode calls are answered from the embeddings our evaluation computed for the same texts under the
    same settings (the same model, at the same length), which halves the fixture's time; what it asks for beyond
    them is embedded afresh. test_mteb_asks_for_the_sentences_ours_embedded checks that both asked for the same
    texts and nothing was embedded twice, so the scores below compare the two protocols on the same embeddings."""
    from tempnlp.evaluation.mteb_runner import build_model_meta, get_tasks, run_mteb
    from tempnlp.evaluation.sts import evaluate_sts

    remembered = RememberedEncode(minilm)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TEMPNLP_MIRROR", str(mirror))
        patch.setattr(minilm, "encode", remembered)
        minilm.max_seq_length = 256
        try:
            ours = evaluate_sts(minilm, model_name=MINILM, show_progress_bar=False)
            embedded_by_ours, asked_by_ours = remembered.embedded, remembered.asked
            remembered.asked = set()
            output = tmp_path_factory.mktemp("mteb")
            meta = build_model_meta(minilm, name=MINILM, model_path=None)
            theirs = run_mteb(minilm, meta, get_tasks(list(PUBLISHED)), output_dir=output)
        finally:
            minilm.max_seq_length = 32
    requests = {
        "ours": asked_by_ours,
        "mteb": remembered.asked,
        "embedded_by_mteb": remembered.embedded - embedded_by_ours,
    }
    return ours, theirs, output, meta, requests


def test_mteb_asks_for_the_sentences_ours_embedded(sts_both_ways):
    """Both read the same sentences of the same seven tasks and ask the model for them the same way."""
    _, _, _, _, requests = sts_both_ways
    assert len(requests["ours"]) > 10_000
    assert requests["mteb"] == requests["ours"]
    assert requests["embedded_by_mteb"] == 0


def test_sts_equals_mtebs_own_evaluation(sts_both_ways):
    """On the same embeddings, our protocol (pairs, cosine, Spearman) gives mteb's scores to float precision."""
    ours, theirs, _, _, _ = sts_both_ways
    assert set(theirs) == set(PUBLISHED)
    for task, score in theirs.items():
        assert ours.scores[task] == pytest.approx(score, abs=1e-4), task


def test_sts_matches_the_published_leaderboard(sts_both_ways):
    """Within 0.01 on six tasks. STS14 is 0.011 above the published 75.589 here, and so is mteb 2.26 itself on
    this machine (the test above pins ours to mteb's): the offset comes with today's torch/transformers, not the
    protocol. 0.015 bounds that drift for every task; the closing note lists the exact differences."""
    ours, _, _, _, _ = sts_both_ways
    for task, published in PUBLISHED.items():
        assert ours.scores[task] == pytest.approx(published, abs=0.015), task
    assert sum(abs(ours.scores[t] - p) <= 0.01 for t, p in PUBLISHED.items()) >= 6


def test_mteb_results_are_in_the_result_cache_layout(sts_both_ways):
    _, _, output, meta, _ = sts_both_ways
    folder = output / "results" / "sentence-transformers__all-MiniLM-L6-v2" / meta.revision
    assert meta.revision == "8b3219a92973c328a8e22fadcfa821b5dc75636a"  # mteb's own entry for the known model
    for task in PUBLISHED:
        result = json.loads((folder / f"{task}.json").read_text())
        assert result["task_name"] == task and "test" in result["scores"]
    model_meta = json.loads((folder / "model_meta.json").read_text())
    assert model_meta["name"] == MINILM and model_meta["n_parameters"] > 20_000_000
    run = output / "tempnlp_runs" / "sentence-transformers__all-MiniLM-L6-v2" / f"{meta.revision}.json"
    assert json.loads(run.read_text())["data"].startswith("mirror")
