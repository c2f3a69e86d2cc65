"""The papers' recipes (recipes/papers/): SimCSE on BERT-base as published, and with MACL's and DySTreSS's
temperatures. Each recipe validates and dry-runs with the settings the papers state, and trains 3 real steps on the
tiny random BERT, saved bare (no sentence-transformers files), on data in the format of the real files, with the
STS-B evaluation every 2 steps so the best checkpoint is restored. SimCSE's MLP module is tested on its own: save
and load, train-only and kept."""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Dense, Pooling, Transformer
from transformers import TrainerCallback

from tempnlp.cli import main
from tempnlp.modules import SimCSEMLP, finish_simcse_mlp
from tempnlp.train.recipe import ModelSpec, RecipeError, load_recipe, validate

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
PAPERS = RECIPES / "papers"
SUP = "sup-simcse-bert.yaml"
UNSUP = ("unsup-simcse-bert.yaml", "unsup-simcse-bert-macl.yaml", "unsup-simcse-bert-dystress.yaml")
ALL = (SUP, *UNSUP)
#: the STS average each recipe's description must name (None: no published number could be confirmed)
PUBLISHED = {
    "unsup-simcse-bert.yaml": "76.25",
    "sup-simcse-bert.yaml": "81.57",
    "unsup-simcse-bert-macl.yaml": "76.66",
    "unsup-simcse-bert-dystress.yaml": None,
}
TEMPERATURES = {
    "unsup-simcse-bert.yaml": 0.05,
    "sup-simcse-bert.yaml": 0.05,
    "unsup-simcse-bert-macl.yaml": {"policy": "macl", "tau0": 0.05, "alpha": 2.0, "A0": 0.8, "reweight": True},
    "unsup-simcse-bert-dystress.yaml": {
        "policy": "dystress", "tau_min": 0.04, "tau_max": 0.05, "variant": "shifted", "offset": 0.4, "scale": 0.7,
    },
}  # fmt: skip
SENTENCES = ["a man plays the guitar", "two dogs run across the field", "the woman reads a book on monday"]
WORDS = ["a", "the", "man", "woman", "child", "dog", "cat", "plays", "reads", "runs", "walks", "guitar", "book",
         "field", "lake", "street", "red", "big", "small", "old"]  # fmt: skip


def test_the_papers_settings_and_descriptions():
    assert sorted(path.name for path in PAPERS.glob("*.yaml")) == sorted(ALL)
    for name in ALL:
        recipe, _ = load_recipe(PAPERS / name)
        supervised = name == SUP
        model, training = recipe.model, recipe.training
        assert (model.name, model.max_seq_length, model.pooling) == ("google-bert/bert-base-uncased", 32, "cls")
        assert model.simcse_mlp == ("keep" if supervised else "train-only"), name
        assert recipe.data.dataset == "princeton-nlp/datasets-for-simcse"
        if supervised:
            assert (recipe.data.format, recipe.data.file) == ("columns", "nli_for_simcse.csv")
            assert recipe.data.columns == ["sent0", "sent1", "hard_neg"]
        else:
            assert (recipe.data.format, recipe.data.file) == ("sentences", "wiki1m_for_simcse.txt")
        assert recipe.loss.name == "InfoNCELoss" and recipe.loss.temperature == TEMPERATURES[name]
        expected = (512, 5e-5, 3) if supervised else (64, 3e-5, 1)
        assert (training["per_device_train_batch_size"], training["learning_rate"], training["num_train_epochs"]) == (
            pytest.approx(expected[0]), pytest.approx(expected[1]), pytest.approx(expected[2])
        )  # fmt: skip
        assert training["eval_steps"] == training["save_steps"] == 250 and training["load_best_model_at_end"]
        assert training["metric_for_best_model"] == "eval_sts-validation_spearman_cosine"
        assert recipe.evaluation.stsb_validation and recipe.evaluation.sts.protocol == "senteval"
        assert recipe.evaluation.sts.tasks is None  # all seven tasks of the SimCSE table
        description = recipe.description
        assert "GPU" in description and "estimate" in description, name
        if PUBLISHED[name] is not None:
            assert f"{PUBLISHED[name]} STS avg" in description, name
        else:
            assert "No published number" in description
    macl, _ = load_recipe(PAPERS / "unsup-simcse-bert-macl.yaml")
    assert "not confirmed" in macl.description  # the MACL authors' SimCSE settings are not published
    four, _ = load_recipe(PAPERS / SUP, variant="four-gpus")
    assert four.training["per_device_train_batch_size"] == 128 and four.loss.params["gather_across_devices"]
    for path in PAPERS.glob("*.yaml"):  # a GPU run reads nothing back from the device each step
        recipe, _ = load_recipe(path)
        assert recipe.loss.params["check_finite"] is False and not recipe.training["logging_nan_inf_filter"], path
        assert recipe.training["dataloader_num_workers"] == 4, path


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


def test_every_paper_recipe_dry_runs(mirror, simcse_data, monkeypatch, capsys):
    monkeypatch.setenv("TEMPNLP_MIRROR", str(mirror))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in UNSUP:
        assert main(["train", str(PAPERS / name), "--dry-run"]) == 0
        out = capsys.readouterr().out
        assert "  pooling: cls\n  simcse_mlp: train-only\n" in out
        assert "# data: princeton-nlp/datasets-for-simcse from the mirror" in out
    # The mirror has no nli_for_simcse.csv: offline, the run stops before anything loads and names the file.
    assert main(["train", str(PAPERS / SUP), "--dry-run"]) == 2
    assert "nli_for_simcse.csv" in capsys.readouterr().err
    local = ["--set", f"data.dataset={simcse_data}"]
    assert main(["train", str(PAPERS / SUP), "--dry-run", *local]) == 0
    out = capsys.readouterr().out
    assert "simcse_mlp: keep" in out and f"from the local folder ({simcse_data})" in out
    assert main(["train", str(PAPERS / SUP), "--variant", "four-gpus", "--dry-run", *local]) == 0
    assert "per_device_train_batch_size: 128" in capsys.readouterr().out


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


def test_a_changed_description_does_not_block_resuming_a_run(tmp_path):
    """The two MiniLM recipes' descriptions were corrected: a run started before resumes; training changes do not."""
    from tempnlp.train.run import RECIPE_FILE, prepare_output_dir

    recipe, raw = load_recipe(RECIPES / "unsup-simcse.yaml")
    (tmp_path / "checkpoint-1").mkdir()
    (tmp_path / RECIPE_FILE).write_text(validate({**raw, "description": "the paper's settings"}).to_yaml())
    prepare_output_dir(tmp_path, recipe, resume=True)
    changed, _ = load_recipe(RECIPES / "unsup-simcse.yaml", ["training.learning_rate=1e-4"])
    with pytest.raises(RecipeError, match=r"recipe differs .*training.learning_rate"):
        prepare_output_dir(tmp_path, changed, resume=True)


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

SHRINK = [
    "training.max_steps=3",
    "training.eval_steps=2",
    "training.save_steps=2",
    "training.per_device_train_batch_size=4",
    "training.learning_rate=1e-3",
    "training.logging_steps=1",
    "training.use_cpu=true",
    "training.report_to=none",
    "evaluation.before=false",
    "evaluation.sts=null",
]


class _EmbedAtTrainEnd(TrainerCallback):
    """Embeds SENTENCES with the model as training leaves it (best checkpoint restored), before it is saved."""

    embeddings: torch.Tensor | None = None

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.embeddings = model.encode(SENTENCES, convert_to_tensor=True).cpu()


@dataclass
class Run:
    out: Path
    embeddings: torch.Tensor
    printed: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory, mirror, tiny_model_path, simcse_data):
    """Trains a paper recipe once per module: 3 steps of batch 4 on the tiny bare BERT and the tiny data. The STS-B
    validation evaluator keeps its first 40 pairs, so the 2 evaluations (steps 2 and 3) take a moment."""
    import tempnlp.train.run as run_module

    real_evaluator = run_module.stsb_evaluator

    def small_evaluator(*args, **kwargs):
        evaluator = real_evaluator(*args, **kwargs)
        evaluator.sentences1, evaluator.sentences2 = evaluator.sentences1[:40], evaluator.sentences2[:40]
        evaluator.scores = evaluator.scores[:40]
        return evaluator

    runs: dict[str, Run] = {}

    def run(name: str) -> Run:
        if name not in runs:
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("TEMPNLP_MIRROR", str(mirror))
                patch.setenv("TEMPNLP_CACHE", str(tmp_path_factory.mktemp("cache")))
                patch.setattr(run_module, "stsb_evaluator", small_evaluator)
                sets = [f"model.name={tiny_model_path}", f"data.dataset={simcse_data}", *SHRINK]
                recipe, _ = load_recipe(PAPERS / name, sets)
                out = tmp_path_factory.mktemp(name.removesuffix(".yaml")) / "run"
                embed = _EmbedAtTrainEnd()
                printed: list[str] = []
                run_module.run_recipe(recipe, out, callbacks=[embed], log=printed.append)
            runs[name] = Run(out, embed.embeddings, printed)
        return runs[name]

    return run


def _best_checkpoint(out: Path) -> str:
    """The name of the checkpoint the trainer found best (and restored at the end)."""
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    return Path(state["best_model_checkpoint"]).name


@pytest.mark.parametrize("name", ALL)
def test_each_paper_recipe_trains_and_saves_its_best_checkpoint(paper_run, name):
    run = paper_run(name)
    out = run.out
    results = json.loads((out / "results.json").read_text())
    assert results["train"]["steps"] == 3 and results["data"]["examples"] == (24 if name == SUP else 40)
    history = json.loads((out / "log_history.json").read_text())
    assert [entry["step"] for entry in history if "eval_sts-validation_spearman_cosine" in entry] == [2, 3]
    best = out / _best_checkpoint(out)
    assert best.name in {"checkpoint-2", "checkpoint-3"}
    # Every checkpoint holds the MLP (the trainer restores the best one with it); the saved model is the best one.
    for checkpoint in ("checkpoint-2", "checkpoint-3"):
        modules = json.loads((out / checkpoint / "modules.json").read_text())
        assert [module["type"].rsplit(".", 1)[1] for module in modules] == ["Transformer", "Pooling", "SimCSEMLP"]
    saved, kept = load_file(out / "model" / "model.safetensors"), load_file(best / "model.safetensors")
    assert saved.keys() == kept.keys() and all(torch.equal(saved[key], kept[key]) for key in saved)
    if best.name == "checkpoint-2":  # restored, not the last step's weights
        last = load_file(out / "checkpoint-3" / "model.safetensors")
        assert any(not torch.equal(saved[key], last[key]) for key in saved)
    # The saved model loads with plain sentence-transformers and embeds as the trained model did.
    model = SentenceTransformer(str(out / "model"), device="cpu")
    expected = ["Transformer", "Pooling", "Dense"] if name == SUP else ["Transformer", "Pooling"]
    assert [type(module).__name__ for module in model] == expected
    assert model[1].get_config_dict()["pooling_mode"] == "cls"
    torch.testing.assert_close(model.encode(SENTENCES, convert_to_tensor=True), run.embeddings)
    card = (out / "model" / "README.md").read_text()
    assert "Loss: `InfoNCELoss(" in card and "Transformer + Pooling (`cls`)" in card
    temperature = {
        "unsup-simcse-bert-macl.yaml": "MACLTemperature(tau0=0.05, alpha=2.0, A0=0.8, min_tau=0.01, reweight=True)",
        "unsup-simcse-bert-dystress.yaml": "DySTreSSTemperature(tau_min=0.04, tau_max=0.05, variant=shifted",
    }.get(name, "FixedTemperature(tau=0.05)")
    assert temperature in card
    assert ("was trained with the model and is kept" if name == SUP else "was used in training only") in card
    saved_recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    assert saved_recipe["model"]["pooling"] == "cls" and saved_recipe["training"]["load_best_model_at_end"]


def test_the_train_only_mlp_leaves_plain_cls_of_the_trained_encoder(paper_run, tiny_model_path):
    from transformers import AutoModel, AutoTokenizer

    out = paper_run("unsup-simcse-bert.yaml").out
    folder = out / "model"
    assert not any("SimCSEMLP" in path.name or "Dense" in path.name for path in folder.iterdir())
    encoder, tokenizer = AutoModel.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        cls = encoder(**tokenizer(SENTENCES, padding=True, return_tensors="pt")).last_hidden_state[:, 0]
    model = SentenceTransformer(str(folder), device="cpu")
    torch.testing.assert_close(model.encode(SENTENCES, convert_to_tensor=True), cls)
    initial, trained = load_file(tiny_model_path / "model.safetensors"), load_file(folder / "model.safetensors")
    assert initial.keys() == trained.keys() and any(not torch.equal(initial[k], trained[k]) for k in initial)
    # The MLP took part in training: it has weights of its own that changed from one checkpoint to the next.
    first, second = (load_file(out / f"checkpoint-{step}" / "2_SimCSEMLP" / "model.safetensors") for step in (2, 3))
    assert not torch.equal(first["linear.weight"], second["linear.weight"])
    assert json.loads((out / "checkpoint-2" / "2_SimCSEMLP" / "config.json").read_text())["train_only"] is True


def test_the_kept_mlp_reloads_and_gives_the_embeddings_of_the_trained_model(paper_run):
    run = paper_run(SUP)
    model = SentenceTransformer(str(run.out / "model"), device="cpu")  # no tempnlp class, no trust_remote_code
    dense = model[2]
    assert isinstance(dense, Dense) and isinstance(dense.activation_function, torch.nn.Tanh)
    mlp = load_file(run.out / _best_checkpoint(run.out) / "2_SimCSEMLP" / "model.safetensors")
    torch.testing.assert_close(dense.linear.weight.detach(), mlp["linear.weight"], rtol=0, atol=0)
    torch.testing.assert_close(dense.linear.bias.detach(), mlp["linear.bias"], rtol=0, atol=0)
    embeddings = model.encode(SENTENCES, convert_to_tensor=True)
    torch.testing.assert_close(embeddings, run.embeddings)
    assert not torch.allclose(embeddings, _plain_cls(model))  # the MLP acts
