"""SimCSE's pieces: its model from a bare checkpoint (Transformer, [CLS] pooling and its MLP as a
sentence-transformers module, train-only or kept) and its supervised data, nli_for_simcse.csv."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Dense, Pooling, Transformer

from tempnlp.modules import SimCSEMLP, finish_simcse_mlp
from tempnlp.train.recipe import ModelSpec, RecipeError, load_recipe, validate

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
SENTENCES = ["a man plays the guitar", "two dogs run across the field", "the woman reads a book on monday"]
WORDS = ["a", "the", "man", "woman", "child", "dog", "cat", "plays", "reads", "runs", "walks", "guitar", "book",
         "field", "lake", "street", "red", "big", "small", "old"]  # fmt: skip


@pytest.fixture(scope="module")
def simcse_data(tmp_path_factory) -> Path:
    """A folder laid out like princeton-nlp/datasets-for-simcse: wiki1m_for_simcse.txt (one sentence a line) and
    nli_for_simcse.csv (header sent0,sent1,hard_neg; fields quoted where they hold commas or quotes)."""
    folder = tmp_path_factory.mktemp("datasets-for-simcse")
    draw = random.Random(0)

    def sentence() -> str:
        return " ".join(draw.choice(WORDS) for _ in range(draw.randint(4, 9)))

    (folder / "wiki1m_for_simcse.txt").write_text("\n".join(sentence() for _ in range(40)) + "\n", encoding="utf-8")
    with (folder / "nli_for_simcse.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sent0", "sent1", "hard_neg"])
        writer.writerow(["a man, a dog", 'he said "hi"', ""])  # a comma, quotes and an empty field
        writer.writerows([sentence(), sentence(), sentence()] for _ in range(23))
    return folder


def test_the_new_keys_are_checked_and_left_out_of_recipes_that_do_not_use_them():
    raw = {
        "model": {"name": "x/y"},
        "data": {"dataset": "princeton-nlp/datasets-for-simcse", "format": "sentences", "file": "w.txt"},
        "loss": {"name": "InfoNCELoss", "temperature": 0.05},
    }

    def error(**changes) -> str:
        with pytest.raises(RecipeError) as info:
            validate({**raw, **changes})
        return str(info.value)

    assert "model.pooling must be one of 'cls', 'mean', 'max'" in error(model={"name": "x/y", "pooling": "first"})
    assert "model.simcse_mlp must be one of 'train-only', 'keep'" in error(model={"name": "x/y", "simcse_mlp": "none"})
    table = {"dataset": "x/y", "format": "columns", "columns": ["a", "b"], "file": "t.csv"}
    validate({**raw, "data": table})
    assert "reads a .csv, .tsv, .jsonl or .jsonl.gz file" in error(data={**table, "file": "t.parquet"})
    assert "data.subset names a Hub configuration" in error(data={**table, "subset": "s"})
    nli = {"dataset": "x/y", "format": "nli-triplets", "file": "t.csv"}
    assert "data.file only applies to format sentences or columns" in error(data=nli)
    for path in RECIPES.glob("*.yaml"):  # the existing recipes resolve exactly as before
        model = load_recipe(path)[0].to_dict()["model"]
        assert set(model) == {"name", "max_seq_length", "trust_remote_code"}, path.name


def test_nli_for_simcse_csv_is_read_as_its_three_columns(simcse_data):
    from tempnlp.data.sources import build_train_dataset, locate

    raw = {
        "model": {"name": "x/y"},
        "data": {"dataset": str(simcse_data), "format": "columns", "file": "nli_for_simcse.csv", "limit": 5},
        "loss": {"name": "InfoNCELoss", "temperature": 0.05},
    }
    raw["data"]["columns"] = ["sent0", "sent1", "hard_neg"]
    spec = validate(raw).data
    located = locate(spec.dataset, spec.format, spec.split, file=spec.file, subset=spec.subset)
    dataset = build_train_dataset(spec, located, log=lambda text: None)
    assert dataset.column_names == ["sent0", "sent1", "hard_neg"] and len(dataset) == 5
    assert dataset[0] == {"sent0": "a man, a dog", "sent1": 'he said "hi"', "hard_neg": ""}
    with (simcse_data / "nli_for_simcse.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))[:5]
    assert dataset.to_list() == rows
    raw["data"]["columns"] = ["sent0", "premise"]
    with pytest.raises(ValueError, match=r"data.columns \['premise'\] are not columns"):
        build_train_dataset(validate(raw).data, located, log=lambda text: None)


# ------------------------------------------------------------------------------------------------ SimCSE's MLP


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
