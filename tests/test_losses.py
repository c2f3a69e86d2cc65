"""tempnlp's sentence-transformers losses: parity with ST's MNRL, trainer runs, logging, model card, errors."""

from __future__ import annotations

import random
import string

import pytest
import torch
from datasets import Dataset
from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

from tempnlp.losses import DCLLoss, InfoNCELoss
from tempnlp.temperature import (
    DySTreSSTemperature,
    FixedTemperature,
    LearnableTemperature,
    MACLTemperature,
)
from tempnlp.train import log_temperature

TEXTS = [
    "a man is playing a guitar.",
    "the cat sits on the mat.",
    "stocks fell sharply on monday.",
    "she is cooking pasta for dinner.",
    "two dogs run across the field.",
    "the train arrives at noon.",
    "children are swimming in the lake.",
    "he reads a book about history.",
]


def _features(model, columns: list[list[str]]):
    return [model.preprocess(texts) for texts in columns]


def _loss_and_grads(model, loss, columns):
    model.zero_grad()
    value = loss(_features(model, columns), None)
    value.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
    return value.detach(), grads


# The parity tests run the tiny model in float64: a random BERT maps all sentences to nearly the same direction
# (cosines ~0.999), where float32 gradients are dominated by cancellation noise that differs with the order of
# operations. In float64 any difference left is a difference in the math. The integration test repeats the
# comparison in float32 on the real MiniLM, whose embeddings are spread out.


@pytest.mark.parametrize("negatives", [0, 1, 2])
@pytest.mark.parametrize("tau", [0.05, 0.01])
def test_infonce_equals_st_mnrl(tiny_model, negatives, tau):
    tiny_model.double()
    columns = [TEXTS, TEXTS[1:] + TEXTS[:1]] + [TEXTS[k + 2 :] + TEXTS[: k + 2] for k in range(negatives)]
    columns[1] = [text.replace("a ", "one ") for text in TEXTS]  # positives close to their anchors
    ours, our_grads = _loss_and_grads(tiny_model, InfoNCELoss(tiny_model, temperature=tau), columns)
    theirs, their_grads = _loss_and_grads(tiny_model, MultipleNegativesRankingLoss(tiny_model, scale=1 / tau), columns)
    assert float(ours) == pytest.approx(float(theirs), abs=1e-6)
    assert our_grads.keys() == their_grads.keys() and len(our_grads) > 10
    for name in their_grads:
        torch.testing.assert_close(our_grads[name], their_grads[name], atol=1e-6, rtol=0, msg=name)


@pytest.mark.parametrize("negatives", [0, 1])
def test_symmetric_infonce_equals_st_symmetric_mnrl(tiny_model, negatives):
    tiny_model.double()
    columns = [TEXTS, [text.replace("a ", "one ") for text in TEXTS]] + [TEXTS[3:] + TEXTS[:3]] * negatives
    ours, our_grads = _loss_and_grads(tiny_model, InfoNCELoss(tiny_model, 0.05, symmetric=True), columns)
    mnrl = MultipleNegativesRankingLoss(
        tiny_model, scale=20.0, directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction"
    )
    theirs, their_grads = _loss_and_grads(tiny_model, mnrl, columns)
    assert float(ours) == pytest.approx(float(theirs), abs=1e-6)
    for name in their_grads:
        torch.testing.assert_close(our_grads[name], their_grads[name], atol=1e-6, rtol=0, msg=name)


@pytest.mark.parametrize("negatives", [0, 1])
def test_same_view_infonce_equals_st_joint_query_to_query_mnrl(tiny_model, negatives):
    """The NT-Xent layout of the candidate builder (each anchor also against the other anchors) is MNRL's
    ``directions=("query_to_doc", "query_to_query")`` with one joint partition: loss and every gradient."""
    tiny_model.double()
    columns = [TEXTS, [text.replace("a ", "one ") for text in TEXTS]] + [TEXTS[3:] + TEXTS[:3]] * negatives
    ours, our_grads = _loss_and_grads(tiny_model, InfoNCELoss(tiny_model, 0.05, same_view_negatives=True), columns)
    mnrl = MultipleNegativesRankingLoss(
        tiny_model, scale=20.0, directions=("query_to_doc", "query_to_query"), partition_mode="joint"
    )
    theirs, their_grads = _loss_and_grads(tiny_model, mnrl, columns)
    plain, _ = _loss_and_grads(tiny_model, InfoNCELoss(tiny_model, 0.05), columns)
    assert float(ours) == pytest.approx(float(theirs), abs=1e-6) and float(ours) != pytest.approx(float(plain))
    for name in their_grads:
        torch.testing.assert_close(our_grads[name], their_grads[name], atol=1e-6, rtol=0, msg=name)


@pytest.mark.parametrize("negatives", [0, 2])
@pytest.mark.parametrize("mode", ["in_batch_negatives", "hard_negatives", "all_negatives"])
def test_hardness_on_a_fixed_tau_equals_st_mnrl_hardness_mode(tiny_model, mode, negatives):
    """Hardness(FixedTemperature) is MNRL(hardness_mode=..., hardness_strength=...): loss and every gradient."""
    from tempnlp.temperature import Hardness

    tiny_model.double()
    columns = [TEXTS, [text.replace("a ", "one ") for text in TEXTS]]
    columns += [TEXTS[k + 2 :] + TEXTS[: k + 2] for k in range(negatives)]
    loss = InfoNCELoss(tiny_model, temperature=Hardness(0.05, mode, 5.0))
    ours, our_grads = _loss_and_grads(tiny_model, loss, columns)
    mnrl = MultipleNegativesRankingLoss(tiny_model, scale=20.0, hardness_mode=mode, hardness_strength=5.0)
    theirs, their_grads = _loss_and_grads(tiny_model, mnrl, columns)
    plain, _ = _loss_and_grads(tiny_model, InfoNCELoss(tiny_model, 0.05), columns)
    assert float(ours) == pytest.approx(float(theirs), abs=1e-6)
    if mode != "hard_negatives" or negatives:
        assert float(ours) != pytest.approx(float(plain), abs=1e-6)  # the penalty changed something
    for name in their_grads:
        torch.testing.assert_close(our_grads[name], their_grads[name], atol=1e-6, rtol=0, msg=name)


def test_hardness_is_refused_on_sogclr(tiny_model):
    from tempnlp.losses import SogCLRLoss
    from tempnlp.temperature import Hardness

    with pytest.raises(ValueError, match="adds a penalty to the scaled logits, which SogCLR does not take"):
        SogCLRLoss(tiny_model, 8, temperature=Hardness(0.05))


def _pairs(count: int = 96, seed: int = 0, negatives: bool = False) -> Dataset:
    """Random 'sentences' whose positive is a lightly corrupted copy: learnable by a tiny model in a few steps."""
    rng = random.Random(seed)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 7))) for _ in range(200)]
    anchors = [" ".join(rng.choices(words, k=6)) for _ in range(count)]
    positives = [" ".join(w for w in a.split() if rng.random() > 0.25) or a for a in anchors]
    data = {"anchor": anchors, "positive": positives}
    if negatives:
        data["negative"] = [" ".join(rng.choices(words, k=6)) for _ in range(count)]
    return Dataset.from_dict(data)


POLICIES = {
    "fixed": lambda: FixedTemperature(0.05),
    "learnable": lambda: LearnableTemperature(init=0.07),
    "macl": lambda: MACLTemperature(reweight=True),
    "dystress": lambda: DySTreSSTemperature(),
}


def _train(model, loss, dataset, output_dir, steps: int = 30, **overrides):
    args = SentenceTransformerTrainingArguments(
        output_dir=str(output_dir),
        max_steps=steps,
        per_device_train_batch_size=16,
        learning_rate=overrides.pop("learning_rate", 1e-3),
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=False,  # CPU only: silences torch's pin_memory warning
        seed=0,
        **overrides,
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss)
    log_temperature(trainer)
    trainer.train()
    return trainer


@pytest.mark.parametrize(
    ("loss_cls", "policy"),
    [
        (loss_cls, policy)
        for loss_cls in (InfoNCELoss, DCLLoss)
        for policy in POLICIES
        if not (loss_cls is DCLLoss and policy == "learnable")  # refused: DCL's gradient drives tau to its floor
    ],
)
def test_trainer_run_lowers_the_loss_and_logs_tau(tiny_model, tmp_path, loss_cls, policy):
    # MACL's reweighting is defined for InfoNCE only.
    policy_obj = MACLTemperature() if loss_cls is DCLLoss and policy == "macl" else POLICIES[policy]()
    loss = loss_cls(tiny_model, temperature=policy_obj)
    trainer = _train(tiny_model, loss, _pairs(negatives=loss_cls is DCLLoss), tmp_path)
    history = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(history) == 30
    losses = [entry["loss"] for entry in history]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.1, losses
    for entry in history:
        assert {"tau_mean", "tau_min", "tau_max"} <= entry.keys()
        assert 0 < entry["tau_min"] <= entry["tau_mean"] <= entry["tau_max"]
    if policy == "dystress":
        assert any(entry["tau_min"] < entry["tau_max"] for entry in history)  # one tau per entry
    if policy == "macl":
        assert len({entry["tau_mean"] for entry in history}) > 1  # follows the alignment


def test_learnable_temperature_trains_with_its_own_learning_rate(tiny_model, tmp_path):
    loss = InfoNCELoss(tiny_model, temperature=LearnableTemperature(init=0.07))
    names = [name for name, _ in loss.named_parameters() if not name.startswith("model.")]
    assert names == ["objective.temperature.log_inverse_tau"]
    trainer = _train(
        tiny_model,
        loss,
        _pairs(),
        tmp_path,
        steps=10,
        learning_rate=1e-5,
        learning_rate_mapping={r"temperature\.": 0.05},
    )
    groups = trainer.optimizer.param_groups
    temperature_group = [g for g in groups if any(p is loss.temperature.log_inverse_tau for p in g["params"])]
    assert len(temperature_group) == 1 and temperature_group[0]["initial_lr"] == pytest.approx(0.05)
    taus = [entry["tau_mean"] for entry in trainer.state.log_history if "tau_mean" in entry]
    assert abs(taus[-1] - 0.07) > 0.005  # moved far more than a 1e-5 learning rate could move it


def test_model_card_records_loss_policy_and_citation(tiny_model, tmp_path):
    loss = InfoNCELoss(tiny_model, temperature=MACLTemperature(tau0=0.05, alpha=2.0, A0=0.8))
    assert loss.get_config_dict()["symmetric"] is False
    _train(tiny_model, loss, _pairs(count=32), tmp_path, steps=2)
    tiny_model.save_pretrained(str(tmp_path / "model"))
    card = (tmp_path / "model" / "README.md").read_text(encoding="utf-8")
    assert "InfoNCELoss" in card
    assert "MACLTemperature(tau0=0.05, alpha=2.0, A0=0.8, min_tau=0.01, reweight=False)" in card
    assert "Model-Aware Contrastive Learning" in card and "Simple Contrastive Learning of Sentence Embeddings" in card


def test_dcl_config_and_citation(tiny_model):
    loss = DCLLoss(tiny_model, temperature=0.1, sigma=0.5, symmetric=True)
    config = loss.get_config_dict()
    assert isinstance(config["temperature"], FixedTemperature) and config["temperature"].tau == 0.1
    assert config["sigma"] == 0.5 and config["symmetric"] is True and config["anchor_negatives"] is False
    assert "Decoupled Contrastive Learning" in loss.citation


def test_one_column_dataset_is_a_clear_error(tiny_model):
    loss = InfoNCELoss(tiny_model)
    with pytest.raises(ValueError, match=r"needs at least two columns .* duplicate the text column"):
        loss(_features(tiny_model, [TEXTS]), None)


def test_mismatched_columns_are_a_clear_error(tiny_model):
    loss = InfoNCELoss(tiny_model)
    with pytest.raises(ValueError, match="positives has 7 rows but the anchors have 8"):
        loss(_features(tiny_model, [TEXTS, TEXTS[:7]]), None)


@pytest.mark.parametrize("loss_cls", [InfoNCELoss, DCLLoss])
def test_policy_of_the_wrong_type_is_a_clear_error(tiny_model, loss_cls):
    with pytest.raises(TypeError, match="must be a positive number or a TemperaturePolicy"):
        loss_cls(tiny_model, temperature="0.05")
    with pytest.raises(TypeError, match="pass MACLTemperature"):
        loss_cls(tiny_model, temperature=MACLTemperature)
    with pytest.raises(ValueError, match="tau must be a finite number > 0"):
        loss_cls(tiny_model, temperature=0.0)


def test_nan_embeddings_are_a_clear_error(tiny_model):
    loss = InfoNCELoss(tiny_model)
    embeddings = [torch.randn(4, 32), torch.randn(4, 32)]
    embeddings[0][2, 0] = float("nan")
    with pytest.raises(ValueError, match=r"Non-finite .* anchors"):
        loss.compute_loss_from_embeddings(embeddings)


def test_log_temperature_rejects_a_loss_without_temperature(tiny_model, tmp_path):
    args = SentenceTransformerTrainingArguments(output_dir=str(tmp_path), report_to="none", max_steps=1)
    trainer = SentenceTransformerTrainer(
        model=tiny_model, args=args, train_dataset=_pairs(8), loss=MultipleNegativesRankingLoss(tiny_model)
    )
    with pytest.raises(TypeError, match="exposes no temperature_stats"):
        log_temperature(trainer)
