"""SimCSE's model from a bare checkpoint: Transformer, [CLS] pooling and its MLP as a sentence-transformers
module, saved and loaded with the model, train-only or kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Dense, Pooling, Transformer

from tempnlp.modules import SimCSEMLP, finish_simcse_mlp
from tempnlp.train.recipe import ModelSpec, RecipeError

SENTENCES = ["a man plays the guitar", "two dogs run across the field", "the woman reads a book on monday"]


def _cls_model(tiny_model_path: Path, *extra: torch.nn.Module) -> SentenceTransformer:
    transformer = Transformer(str(tiny_model_path), max_seq_length=32)
    return SentenceTransformer(modules=[transformer, Pooling(32, pooling_mode="cls"), *extra], device="cpu")


def _plain_cls(model: SentenceTransformer) -> torch.Tensor:
    """Embeddings of the model's first two modules (Transformer and [CLS] pooling) alone."""
    return SentenceTransformer(modules=[model[0], model[1]], device="cpu").encode(SENTENCES, convert_to_tensor=True)


def test_the_mlp_module_saves_and_loads(tmp_path, tiny_model_path):
    mlp = SimCSEMLP(32, train_only=True)
    mlp.save(str(tmp_path / "mlp"))
    assert json.loads((tmp_path / "mlp" / "config.json").read_text()) == {"embedding_dimension": 32, "train_only": True}
    again = SimCSEMLP.load(str(tmp_path / "mlp"))
    assert again.get_config_dict() == mlp.get_config_dict() and again.get_embedding_dimension() == 32
    assert again.state_dict().keys() == mlp.state_dict().keys()
    assert all(torch.equal(again.state_dict()[key], value) for key, value in mlp.state_dict().items())
    with pytest.raises(ValueError, match="positive int"):
        SimCSEMLP(0)
    with pytest.raises(TypeError, match="train_only must be True or False"):
        SimCSEMLP(32, train_only="yes")

    # With the model: saved as a module folder of its own and loaded back, weights and all. sentence-transformers
    # imports a class of another package only with trust_remote_code, which the checkpoints of a run are read with.
    model = _cls_model(tiny_model_path, SimCSEMLP(32))
    expected = model.encode(SENTENCES, convert_to_tensor=True)
    model.save(str(tmp_path / "model"))
    assert json.loads((tmp_path / "model" / "modules.json").read_text())[2]["type"] == "tempnlp.modules.SimCSEMLP"
    with pytest.raises(ValueError, match=r"(?s)module class 'tempnlp\.modules\.SimCSEMLP'.*trust_remote_code=True"):
        SentenceTransformer(str(tmp_path / "model"), device="cpu")
    loaded = SentenceTransformer(str(tmp_path / "model"), device="cpu", trust_remote_code=True)
    assert isinstance(loaded[2], SimCSEMLP) and not loaded[2].train_only
    torch.testing.assert_close(loaded.encode(SENTENCES, convert_to_tensor=True), expected)


def test_a_train_only_mlp_acts_in_training_mode_and_is_dropped_at_the_end(tiny_model_path):
    mlp = SimCSEMLP(32, train_only=True)
    model = _cls_model(tiny_model_path, mlp)
    cls = _plain_cls(model)
    torch.testing.assert_close(model.encode(SENTENCES, convert_to_tensor=True), cls)  # eval mode: plain [CLS]
    features = model.preprocess(SENTENCES)
    model.train()
    with torch.no_grad():
        trained = model(features)["sentence_embedding"]
        through_mlp = torch.tanh(mlp.linear(cls.clone()))
    torch.testing.assert_close(trained, through_mlp)  # training mode: through the MLP
    assert finish_simcse_mlp(model) == "train-only" and [type(m) for m in model] == [Transformer, Pooling]
    torch.testing.assert_close(model.encode(SENTENCES, convert_to_tensor=True), cls)

    kept = _cls_model(tiny_model_path, SimCSEMLP(32, train_only=False))
    before = kept.encode(SENTENCES, convert_to_tensor=True)
    assert not torch.allclose(before, _plain_cls(kept))  # it acts at evaluation
    assert finish_simcse_mlp(kept) == "keep" and isinstance(kept[2], Dense)
    torch.testing.assert_close(kept.encode(SENTENCES, convert_to_tensor=True), before)
    assert finish_simcse_mlp(kept) is None  # nothing left to finish


def test_pooling_builds_a_bare_checkpoint_and_refuses_a_sentence_transformers_model(tmp_path, tiny_model_path):
    from tempnlp.train.run import build_model

    bare = str(tiny_model_path)
    model = build_model(ModelSpec(name=bare, pooling="cls", simcse_mlp="keep"), bare)
    assert [type(m) for m in model] == [Transformer, Pooling, SimCSEMLP] and not model[2].train_only
    assert model[1].get_config_dict()["pooling_mode"] == "cls"
    assert [type(m) for m in build_model(ModelSpec(name=bare, pooling="mean"), bare)] == [Transformer, Pooling]
    saved = tmp_path / "st-model"
    SentenceTransformer(bare, device="cpu").save(str(saved))  # a sentence-transformers model (mean pooling)
    with pytest.raises(RecipeError, match="is a sentence-transformers model, whose saved modules set the pooling"):
        build_model(ModelSpec(name=str(saved), pooling="cls"), str(saved))
    appended = build_model(ModelSpec(name=str(saved), simcse_mlp="train-only"), str(saved))
    assert [type(m) for m in appended] == [Transformer, Pooling, SimCSEMLP] and appended[2].train_only
    assert appended[1].get_config_dict()["pooling_mode"] == "mean"


# ------------------------------------------------------------------------------------------------ end to end
