"""`tempnlp train RECIPE.yaml`: validation before anything loads, every bundled recipe end to end (shrunk with
--set to the tiny BERT and a few steps), exact resume, outputs and model cards."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from tempnlp.cli import main
from tempnlp.train.recipe import RecipeError, load_recipe, parse_override, validate

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
BUNDLED = sorted(path.name for path in RECIPES.glob("*.yaml"))


def _minimal(**changes) -> dict:
    raw = {
        "model": {"name": "sentence-transformers/all-MiniLM-L6-v2"},
        "data": {"dataset": "stanfordnlp/snli", "format": "nli-triplets"},
        "loss": {"name": "InfoNCELoss", "temperature": 0.05},
        "training": {"max_steps": 2},
    }
    for dotted, value in changes.items():
        section, _, key = dotted.partition("__")
        if key:
            raw.setdefault(section, {})[key] = value
        else:
            raw[section] = value
    return raw


def _error(raw: dict) -> str:
    with pytest.raises(RecipeError) as info:
        validate(raw)
    return str(info.value)


# ------------------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"evaluation__stsb_validation": True, "training": {"eval_strategy": "no"}}, "eval_strategy 'no' never runs"),
        (
            {"evaluation__stsb_validation": False, "training": {"eval_strategy": "steps"}},
            "eval_strategy 'steps' evaluates during training, but evaluation.stsb_validation is false",
        ),
        (
            {"evaluation__stsb_validation": False, "training": {"load_best_model_at_end": True}},
            "load_best_model_at_end picks a checkpoint by its validation score",
        ),
        (
            {"evaluation__stsb_validation": True, "training": {"load_best_model_at_end": True}},
            "needs training.metric_for_best_model",
        ),
        (
            {"evaluation__stsb_validation": True, "training": {"metric_for_best_model": "eval_sts-dev_spearman"}},
            "'eval_sts-dev_spearman' is not a metric of the STS-B validation: use one of "
            "eval_sts-validation_spearman_cosine",
        ),
        (
            {"data": {"dataset": "princeton-nlp/datasets-for-simcse", "format": "sentences", "file": "wiki.txt",
                      "split": "validation"}},
            "data.split is not read when data.file names the file to read ('wiki.txt')",
        ),
    ],
)  # fmt: skip
def test_settings_that_would_be_ignored_or_fail_mid_training_are_refused(changes, message):
    assert message in _error(_minimal(**changes))


def test_validation_settings_that_agree_pass():
    validate(_minimal(evaluation__stsb_validation=False, training={"metric_for_best_model": "anything"}))
    best = {"load_best_model_at_end": True, "metric_for_best_model": "sts-validation_pearson_cosine"}
    validate(_minimal(training={**best, "eval_strategy": "steps", "save_strategy": "steps"}))


def test_every_bundled_recipe_and_variant_validates():
    assert {"quickstart.yaml", "sup-simcse-nli.yaml", "unsup-simcse.yaml", "retrieval.yaml"} <= set(BUNDLED)
    for name in BUNDLED:
        raw = yaml.safe_load((RECIPES / name).read_text())
        for variant in [None, *(raw.get("variants") or {})]:
            recipe, _ = load_recipe(RECIPES / name, variant=variant)
            assert "/" in recipe.model.name and not Path(recipe.model.name).exists()  # Hub ids, never paths
            assert not Path(recipe.data.dataset).exists()


def test_unknown_keys_name_the_closest_valid_key():
    assert "Unknown key trainig. Did you mean 'training'?" in _error({**_minimal(), "trainig": {}})
    assert "Unknown key training.learning_rat. Did you mean 'learning_rate'?" in _error(
        _minimal(training__learning_rat=1e-4)
    )
    assert "Unknown key loss.symetric. Did you mean 'symmetric'?" in _error(_minimal(loss__symetric=True))
    assert "Unknown key data.fromat. Did you mean 'format'?" in _error(_minimal(data__fromat="x"))
    message = _error(_minimal(loss={"name": "InfoNCELoss", "temperature": {"policy": "macl", "tau": 0.05}}))
    assert "Unknown key loss.temperature.tau. Did you mean 'tau0'?" in message


def test_wrong_types_and_values_are_named():
    assert "training.learning_rate must be float, got str ('fast')" in _error(_minimal(training__learning_rate="fast"))
    assert "model.max_seq_length must be int or null" in _error(_minimal(model__max_seq_length=3.5))
    assert "data.format must be one of 'nli-triplets'" in _error(_minimal(data__format="pairs"))
    assert "loss.symmetric must be bool" in _error(_minimal(loss__symmetric="yes please"))
    message = _error(_minimal(loss={"name": "InfoNCELoss", "temperature": -0.05}))
    assert "loss.temperature: tau must be a finite number > 0, got -0.05" in message
    assert "loss.tau_init must be a temperature > 0, got -1.0" in _error(
        _minimal(loss={"name": "ISogCLRLoss", "tau_init": -1.0})
    )
    assert "loss.temperature does not apply to ISogCLRLoss" in _error(
        _minimal(loss={"name": "ISogCLRLoss", "temperature": 0.1})
    )
    assert "set scale (= 1/tau" in _error(_minimal(loss={"name": "MultipleNegativesRankingLoss", "temperature": 0.05}))
    assert "loss.num_samples is set by tempnlp" in _error(_minimal(loss={"name": "ISogCLRLoss", "num_samples": 10}))
    assert "training.output_dir is not set in recipes: use --output-dir" in _error(_minimal(training__output_dir="x"))
    assert "training.bf16 is not set in recipes: use the top-level precision: bf16" in _error(
        _minimal(training__bf16=True)
    )
    assert "evaluation.sts.tasks must be list[str] or null, got list ([12])" in _error(
        _minimal(evaluation={"sts": {"tasks": [12]}})
    )
    assert "evaluation.sts.tasks: " in _error(_minimal(evaluation={"sts": {"tasks": ["STSB-typo"]}}))
    message = _error(_minimal(data__file="x.txt"))
    assert "data.file only applies to format sentences or columns, not 'nli-triplets'" in message


def test_loss_arguments_are_checked_by_building_the_loss_before_the_model_loads():
    message = _error(_minimal(loss={"name": "ISogCLRLoss", "tau_min": 0.5, "tau_max": 0.1}))
    assert message.startswith("recipe: loss: tau_min (0.5) must not exceed tau_max (0.1)")
    message = _error(_minimal(loss={"name": "DCLLoss", "temperature": 0.05, "queue_size": -3}))
    assert "loss: queue size must be a positive int, got -3" in message
    assert "loss.similarity_fct must be" in _error(
        _minimal(loss={"name": "MultipleNegativesRankingLoss", "similarity_fct": "cos_sim"})
    )


def test_unknown_loss_and_policy_suggest_the_closest():
    assert "unknown loss 'InfoNCE'. Did you mean 'InfoNCELoss'?" in _error(_minimal(loss={"name": "InfoNCE"}))
    message = _error(_minimal(loss={"name": "DCLLoss", "temperature": "mcal"}))
    assert "unknown temperature policy 'mcal'. Did you mean 'macl'?" in message


def test_a_column_layout_the_loss_cannot_take_fails_before_training():
    raw = _minimal(data={"dataset": "sentence-transformers/all-nli", "format": "columns", "columns": ["anchor"]})
    assert "InfoNCELoss needs at least two text columns" in _error(raw) and "format: sentences" in _error(raw)
    raw = _minimal(
        data={"dataset": "x/y", "format": "columns", "columns": ["anchor", "label"]}, loss={"name": "ISogCLRLoss"}
    )
    assert "reads the dataset index from the 'label' column" in _error(raw)
    # a policy the objective cannot take is refused by the one combination rule, before anything loads
    reweighted_dcl = _minimal(loss={"name": "DCLLoss", "temperature": {"policy": "macl", "reweight": True}})
    assert "weights each row by 1 / (1 - P)" in _error(reweighted_dcl) and "Use InfoNCE" in _error(reweighted_dcl)
    validate(_minimal(loss={"name": "TempNetLoss", "symmetric": True}))  # one network serves both directions
    # the schedules and the global DRO tau by their recipe keys
    for policy in ({"policy": "cosine", "tau_min": 0.03, "tau_max": 0.1, "period_epochs": 1.0}, "cooldown",
                   {"policy": "global-dro", "tau_init": 0.05, "tau_min": 0.01}):  # fmt: skip
        validate(_minimal(loss={"name": "InfoNCELoss", "temperature": policy}))
    both = {"policy": "cosine", "period_steps": 10, "period_epochs": 1.0}
    assert "or in epochs (period_epochs), one" in _error(_minimal(loss={"name": "InfoNCELoss", "temperature": both}))


def test_yaml_reads_exponent_floats_and_set_values_as_yaml_scalars(tmp_path):
    path = tmp_path / "r.yaml"
    raw = _minimal(training={"learning_rate": "placeholder"})
    path.write_text(yaml.safe_dump(raw).replace("placeholder", "3e-5"))
    recipe, _ = load_recipe(path)
    assert recipe.training["learning_rate"] == pytest.approx(3e-5)
    assert parse_override("training.max_steps=100") == ("training.max_steps", 100)
    assert parse_override("loss.symmetric=true") == ("loss.symmetric", True)
    assert parse_override("data.limit=null") == ("data.limit", None)
    recipe, _ = load_recipe(path, ["loss.temperature=macl", "training.learning_rate=1e-4", "loss.symmetric=true"])
    assert recipe.loss.temperature == "macl" and recipe.loss.params == {"symmetric": True}
    with pytest.raises(RecipeError, match=r"loss.temperature is 0.05, not a mapping"):
        load_recipe(path, ["loss.temperature.policy=macl"])
    with pytest.raises(RecipeError, match="expected key=value"):
        load_recipe(path, ["training.max_steps"])
    with pytest.raises(RecipeError, match="has no variant 'gpu'"):
        load_recipe(path, variant="gpu")


def test_a_rho_the_batch_cannot_take_is_refused_before_the_model_loads():
    # nli-triplets: 3 text columns, so batch 8 gives each row 8 * 2 - 1 = 15 negatives; symmetric: the 7 queries
    isogclr = {"name": "ISogCLRLoss", "rho": 2.5}
    validate(_minimal(loss=isogclr, training={"per_device_train_batch_size": 8}))  # log(15) = 2.71
    message = _error(_minimal(loss={**isogclr, "symmetric": True}, training={"per_device_train_batch_size": 8}))
    assert "loss.rho: at training.per_device_train_batch_size 8, rho (2.5) must be below" in message
    assert "log(7) = 1.946" in message
    trainer_default = _error(_minimal(loss={**isogclr, "rho": 2.8}))  # the trainer's own default batch size, 8
    assert "per_device_train_batch_size 8" in trainer_default and "log(15)" in trainer_default
    validate(_minimal(loss={**isogclr, "rho": 2.8}, training={"per_device_train_batch_size": 16}))
    validate(_minimal(loss={**isogclr, "rho": 2.8, "gather_across_devices": True}))  # the global batch decides
    validate(_minimal(loss={"name": "SogCLRLoss", "temperature": 0.1}, training={"per_device_train_batch_size": 2}))


def test_python_tags_in_a_set_value_are_refused():
    with pytest.raises(RecipeError, match="not valid YAML"):
        parse_override("model.name=!!python/object/apply:os.system ['echo hacked']")


def test_cli_reports_recipe_errors_without_a_traceback(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_minimal(loss={"name": "InfoNCELoss", "temperature": -1})))
    assert main(["train", str(path)]) == 2
    assert "tempnlp train: error:" in capsys.readouterr().err


def test_a_dataset_in_neither_mirror_nor_hub_stops_before_the_model_loads(tmp_path, mirror, monkeypatch, capsys):
    import tempnlp.train.run as run

    monkeypatch.setenv("TEMPNLP_MIRROR", str(mirror))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(run, "SentenceTransformer", lambda *a, **k: pytest.fail("the model was loaded"))
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(_minimal(data={"dataset": "nobody/no-such-nli", "format": "nli-triplets"})))
    assert main(["train", str(path), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "'nobody/no-such-nli' is in neither the mirror nor the Hub" in err
    assert f"the mirror has no {mirror}/datasets/nobody/no-such-nli" in err and "HF_HUB_OFFLINE is set" in err


def test_hub_answers_are_reported(monkeypatch):
    import huggingface_hub

    from tempnlp.data import sources

    monkeypatch.delenv("TEMPNLP_MIRROR", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.HfApi, "repo_exists", lambda self, *a, **k: False)
    with pytest.raises(FileNotFoundError, match="TEMPNLP_MIRROR is not set, and the Hub has no dataset of that id"):
        sources.locate("nobody/nothing", "nli-triplets")
    monkeypatch.setattr(huggingface_hub.HfApi, "repo_exists", lambda self, *a, **k: True)
    located = sources.locate("stanfordnlp/snli", "nli-triplets")
    assert located.source == "hub" and located.describe() == "stanfordnlp/snli from the Hugging Face Hub"


def test_a_used_output_dir_needs_resume_and_the_same_recipe(tmp_path):
    from tempnlp.train.run import RECIPE_FILE, prepare_output_dir

    recipe = validate(_minimal())
    foreign = tmp_path / "project"
    (foreign / "model").mkdir(parents=True)
    with pytest.raises(RecipeError, match="is not empty and holds no run to resume"):
        prepare_output_dir(foreign, recipe, resume=False)
    (foreign / "model").rmdir()
    (foreign / RECIPE_FILE).write_text(recipe.to_yaml())  # the same run, stopped before its first checkpoint
    prepare_output_dir(foreign, recipe, resume=False)
    (tmp_path / "checkpoint-2").mkdir()
    with pytest.raises(RecipeError, match=r"already holds a run.*Pass --resume"):
        prepare_output_dir(tmp_path, recipe, resume=False)
    (tmp_path / RECIPE_FILE).write_text(recipe.to_yaml())
    prepare_output_dir(tmp_path, recipe, resume=True)
    changed = validate(_minimal(training={"max_steps": 2, "learning_rate": 1e-4}))
    with pytest.raises(RecipeError, match=r"recipe differs .*training.learning_rate: None -> 0.0001"):
        prepare_output_dir(tmp_path, changed, resume=True)
    evaluation_only = validate(_minimal(evaluation={"sts": {"tasks": ["STSBenchmark"]}}))
    prepare_output_dir(tmp_path, evaluation_only, resume=True)  # evaluation acts after training: may change
    unvalidated = validate(_minimal(evaluation={"stsb_validation": False}))  # validation acts during training
    with pytest.raises(RecipeError, match=r"recipe differs .*evaluation.stsb_validation: True -> False"):
        prepare_output_dir(tmp_path, unvalidated, resume=True)
    with pytest.raises(FileNotFoundError, match="no checkpoint-\\* folder"):
        prepare_output_dir(tmp_path / "empty", recipe, resume=True)


def test_precision_auto_picks_native_bf16_then_fp16_on_a_gpu_and_fp32_on_cpu(monkeypatch):
    from tempnlp.train.run import resolve_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_precision("auto") == "fp32" and resolve_precision("bf16") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    native = {"value": False}
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native["value"])
    assert resolve_precision("auto") == "fp16"  # a T4 / V100: emulated bf16 is not taken
    native["value"] = True
    assert resolve_precision("auto") == "bf16" and resolve_precision("auto", use_cpu=True) == "fp32"
    assert resolve_precision("fp32") == "fp32"


def test_every_override_a_recipe_description_suggests_validates(mirror, monkeypatch, capsys):
    monkeypatch.setenv("TEMPNLP_MIRROR", str(mirror))
    suggested = []
    for path in sorted(RECIPES.rglob("*.yaml")):
        description = yaml.safe_load(path.read_text())["description"]
        for quoted, bare in re.findall(r"--set (?:'([^']+)'|(\S+))", description):
            suggested.append((path, quoted or bare.rstrip(".,)")))
    assert len(suggested) >= 4, suggested
    for path, value in suggested:
        assert main(["train", str(path), "--dry-run", "--set", value]) == 0, (path.name, value)


def test_dry_run_validates_and_prints_the_resolved_recipe(mirror, monkeypatch, capsys):
    monkeypatch.setenv("TEMPNLP_MIRROR", str(mirror))
    assert main(["train", str(RECIPES / "sup-simcse-nli.yaml"), "--variant", "cpu", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "per_device_train_batch_size: 64" in out and "# data: stanfordnlp/snli from the mirror" in out
    assert main(["train", str(RECIPES / "quickstart.yaml"), "--dry-run", "--set", "training.eval_strategy=step"]) == 2
    assert "training:" in capsys.readouterr().err


def test_save_model_never_replaces_a_foreign_model(tmp_path, static_model):
    from tempnlp.train.run import MODEL_DIR, save_model

    (tmp_path / MODEL_DIR).mkdir()
    (tmp_path / MODEL_DIR / "weights.bin").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="holds another model"):
        save_model(static_model, tmp_path, "", "recipe: 1\n")
    assert (tmp_path / MODEL_DIR / "weights.bin").read_bytes() == b"precious"
    (tmp_path / MODEL_DIR / "weights.bin").unlink()
    (tmp_path / MODEL_DIR / "tempnlp_recipe.yaml").write_text("recipe: 1\n")  # this run's own: replaced
    save_model(static_model, tmp_path, "", "recipe: 1\n")
    assert (tmp_path / MODEL_DIR / "modules.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [MODEL_DIR]  # no temporary or old folder left


def test_the_resolved_recipe_round_trips(tmp_path):
    recipe, _ = load_recipe(RECIPES / "retrieval.yaml")
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe.to_yaml())
    again, _ = load_recipe(path)
    assert again == recipe


# ------------------------------------------------------------------------------------------------ end to end

SHRINK = [
    "training.max_steps=8",
    "training.learning_rate=1e-3",
    "training.warmup_steps=0.0",
    "training.logging_steps=1",
    "training.eval_steps=4",
    "training.save_steps=4",
    "training.per_device_train_batch_size=8",
    "training.report_to=none",
    "training.load_best_model_at_end=false",
    "training.use_cpu=true",
    "evaluation.sts.tasks=[STSBenchmark]",
    "data.limit=64",
]


@pytest.fixture
def run_env(mirror, monkeypatch, tmp_path):
    monkeypatch.setenv("TEMPNLP_MIRROR", str(mirror))
    monkeypatch.setenv("TEMPNLP_CACHE", str(tmp_path / "cache"))
    return tmp_path


def _check_outputs(out: Path, loss_name: str) -> dict:
    from sentence_transformers import SentenceTransformer

    results = json.loads((out / "results.json").read_text())
    losses = [entry["loss"] for entry in json.loads((out / "log_history.json").read_text()) if "loss" in entry]
    assert len(losses) == 8 and sum(losses[-3:]) < sum(losses[:3]), losses  # the loss fell
    assert (out / "log_history.csv").read_text().splitlines()[0].startswith("loss,")
    model = SentenceTransformer(str(out / "model"), device="cpu")
    assert model.encode(["a dog runs"]).shape[0] == 1
    card = (out / "model" / "README.md").read_text()
    assert "## tempnlp run" in card and f"Loss: `{loss_name}(" in card and "Final scores" in card
    assert f"{loss_name}</code> with these parameters" in card  # ST's own section, which eval mteb reads
    assert (out / "model" / "tempnlp_recipe.yaml").read_text() == (out / "recipe.yaml").read_text()
    assert results["train"]["steps"] == 8 and results["versions"]["torch"] == torch.__version__
    return results


def test_quickstart_recipe_end_to_end(run_env, tiny_model_path, capsys):
    out = run_env / "qs"
    assert (
        main(
            [
                "train",
                str(RECIPES / "quickstart.yaml"),
                "--set",
                f"model.name={tiny_model_path}",
                *_sets(),
                "--output-dir",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "data: stanfordnlp/snli from the mirror" in printed and "| STSBenchmark" in printed
    results = _check_outputs(out, "InfoNCELoss")
    scores = results["scores"]
    assert set(scores["before"]["sts"]["scores"]) == set(scores["after"]["sts"]["scores"]) == {"STSBenchmark"}
    history = json.loads((out / "log_history.json").read_text())
    assert any("eval_sts-validation_spearman_cosine" in entry for entry in history)
    assert all("tau_mean" in entry for entry in history if "loss" in entry)
    assert "MACLTemperature(tau0=0.05" in (out / "model" / "README.md").read_text()
    # tempnlp eval sts runs on the output folder as it is
    assert main(["eval", "sts", str(out / "model"), "--tasks", "STSBenchmark", "--output-dir", str(out / "e")]) == 0
    again = json.loads((out / "e" / "sts.json").read_text())["scores"]["STSBenchmark"]
    assert again == pytest.approx(scores["after"]["sts"]["scores"]["STSBenchmark"], abs=1e-3)


def _sets(*extra: str, drop: str | None = None) -> list[str]:
    pairs = [pair for pair in [*SHRINK, *extra] if drop is None or not pair.startswith(drop)]
    return [item for pair in pairs for item in ("--set", pair)]


def test_sup_simcse_recipe_cpu_variant_end_to_end(run_env, tiny_model_path):
    out = run_env / "sup"
    args = ["train", str(RECIPES / "sup-simcse-nli.yaml"), "--variant", "cpu", "--output-dir", str(out)]
    assert main([*args, "--set", f"model.name={tiny_model_path}", *_sets("evaluation.before=false")]) == 0
    results = _check_outputs(out, "InfoNCELoss")
    assert results["scores"]["before"] is None and results["recipe"]["training"]["per_device_train_batch_size"] == 8
    assert results["train"]["weights_from"] == {"checkpoint": None, "step": 8}  # no load_best_model_at_end


def test_the_best_checkpoint_is_recorded_and_one_that_does_not_load_fails_the_run(
    run_env, tiny_model_path, monkeypatch
):
    """sentence-transformers logs a failure to load the best checkpoint and keeps the last step's weights; the run
    must not save those as its best and exit 0."""
    from sentence_transformers import SentenceTransformerTrainer

    def run(out: Path) -> None:
        args = ["train", str(RECIPES / "sup-simcse-nli.yaml"), "--variant", "cpu", "--output-dir", str(out)]
        sets = _sets("evaluation.before=false", "training.max_steps=4", "training.eval_steps=2",
                     "training.save_steps=2", "training.load_best_model_at_end=true")  # fmt: skip
        assert main([*args, "--set", f"model.name={tiny_model_path}", *sets]) == 0

    run(run_env / "best")
    best = json.loads((run_env / "best" / "results.json").read_text())["train"]["weights_from"]
    assert best["checkpoint"] in ("checkpoint-2", "checkpoint-4") and -1 <= best["metric"] <= 1

    def unreadable(self, checkpoint, *args, **kwargs):
        raise OSError(f"{checkpoint} cannot be read")

    monkeypatch.setattr(SentenceTransformerTrainer, "_load_from_checkpoint", unreadable)
    with pytest.raises(RuntimeError, match=r"load_best_model_at_end: Could not load the best model .*last step's"):
        run(run_env / "broken")
    assert not (run_env / "broken" / "model").exists() and not (run_env / "broken" / "results.json").exists()


def test_unsup_simcse_per_sample_variant_end_to_end(run_env, tiny_model_path, capsys):
    out = run_env / "unsup"
    args = ["train", str(RECIPES / "unsup-simcse.yaml"), "--variant", "per-sample", "--output-dir", str(out)]
    sets = _sets("evaluation.before=false", "training.num_train_epochs=2", "data.limit=32")
    assert main([*args, "--set", f"model.name={tiny_model_path}", *sets]) == 0
    assert "using its sample wiki1m_for_simcse.head.txt" in capsys.readouterr().out
    results = _check_outputs(out, "ISogCLRLoss")
    # the records name the sample that was read, not the file the recipe asked for
    wiki = Path(os.environ["TEMPNLP_MIRROR"]) / "datasets" / "princeton-nlp" / "datasets-for-simcse"
    assert results["data"] == {
        "source": "mirror",
        "folder": str(wiki.resolve()),
        "examples": 32,
        "file": "wiki1m_for_simcse.head.txt",
        "sample_of": "wiki1m_for_simcse.txt",
    }
    card = (out / "model" / "README.md").read_text()
    assert "file `wiki1m_for_simcse.head.txt`, the mirror's sample of `wiki1m_for_simcse.txt`" in card
    histograms = json.loads((out / "tau_histograms.json").read_text())
    assert [h["step"] for h in histograms["histograms"]] == [4, 8]
    assert histograms["histograms"][-1]["seen"] == 32 and sum(histograms["histograms"][-1]["counts"]) == 32
    assert (out / "tau_histograms.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "checkpoint-8" / "loss_state.pt").is_file()


def test_retrieval_recipe_end_to_end(run_env, tiny_model_path, capsys):
    out = run_env / "ret"
    args = [
        "train",
        str(RECIPES / "retrieval.yaml"),
        "--output-dir",
        str(out),
        "--set",
        f"model.name={tiny_model_path}",
    ]
    # a random BERT scores every document within 1% of the positive: no relative margin for it
    sets = _sets(
        "model.max_seq_length=64", "data.hard_negatives.relative_margin=null", "data.limit=32", drop="evaluation.sts"
    )
    assert main([*args, *sets]) == 0
    printed = capsys.readouterr().out
    assert "mining 1 hard negative(s) for 32 pairs" in printed and "| ndcg@10" in printed
    results = _check_outputs(out, "ISogCLRLoss")
    assert set(results["scores"]["after"]["retrieval"]["scores"]) == {"ndcg@10", "mrr@10", "recall@100"}
    last = json.loads((out / "tau_histograms.json").read_text())["histograms"][-1]
    assert last["seen"] == 32 and last["document"]["seen"] == 32  # bimodal: both sides' temperatures
    # a second run mines nothing: the mined set is cached by data, settings and model weights
    assert main([*args[:3], str(run_env / "ret2"), *args[4:], *sets]) == 0
    assert "hard negatives from the cache" in capsys.readouterr().out


def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(run_env, tiny_model_path):
    from transformers import TrainerCallback

    from tempnlp.train.run import run_recipe

    class Interrupt(TrainerCallback):
        """Stops the run right after checkpoint-4 is written, as a kill would."""

        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt

    sets = [f"model.name={tiny_model_path}", *SHRINK, "evaluation.before=false", "evaluation.sts=null"]
    # 32 sentences at batch 8: 4 steps an epoch, 2 epochs; checkpoints at 3 and 6, so the run stops mid-epoch
    sets += ["data.limit=32", "training.save_steps=3", "training.eval_steps=3"]
    recipe, _ = load_recipe(RECIPES / "unsup-simcse.yaml", sets, "per-sample")
    run_recipe(recipe, run_env / "straight", log=lambda text: None)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe, run_env / "resumed", callbacks=[Interrupt()], log=lambda text: None)
    assert not (run_env / "resumed" / "model").exists() and (run_env / "resumed" / "checkpoint-3").is_dir()
    with pytest.raises(RecipeError, match="Pass --resume"):
        run_recipe(recipe, run_env / "resumed", log=lambda text: None)
    # A second kill while writing checkpoint-6 (before trainer_state.json): that folder must be passed over.
    partial = run_env / "resumed" / "checkpoint-6"
    partial.mkdir()
    shutil.copy(run_env / "resumed" / "checkpoint-3" / "loss_state.pt", partial)
    printed: list[str] = []
    run_recipe(recipe, run_env / "resumed", resume=True, log=printed.append)
    assert any("skipping checkpoint-6" in line for line in printed)

    from safetensors.torch import load_file

    straight = load_file(run_env / "straight" / "model" / "model.safetensors")
    resumed = load_file(run_env / "resumed" / "model" / "model.safetensors")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    state_a = torch.load(run_env / "straight" / "checkpoint-6" / "loss_state.pt", weights_only=True)
    state_b = torch.load(run_env / "resumed" / "checkpoint-6" / "loss_state.pt", weights_only=True)
    assert state_a.keys() == state_b.keys() and all(torch.equal(state_a[key], state_b[key]) for key in state_a)
    assert bool(state_a["objective.estimates.0.seen"].all())  # the state compared has seen every sample
    history = json.loads((run_env / "resumed" / "log_history.json").read_text())
    assert [entry["step"] for entry in history if "loss" in entry] == list(range(1, 9))  # no step logged twice


@pytest.mark.parametrize(
    "loss,policy",
    [
        ("InfoNCELoss", "{policy: individual, tau_init: 0.05, tau_min: 0.02, tau_max: 0.2, rho: 0.3}"),
        ("DCLLoss", "{policy: tempnet, hidden: 16, tau_init: 0.05, tau_min: 0.02, tau_max: 0.2}"),
        (  # wrapped: what the inner policy needs, the run still gives it (grid 4's hardness strategies)
            "InfoNCELoss",
            "{policy: hardness, temperature: {policy: individual, tau_init: 0.05, tau_min: 0.02, tau_max: 0.2, "
            "rho: 0.3}}",
        ),
    ],
    ids=["individual-infonce", "tempnet-dcl", "hardness-individual-infonce"],
)
def test_a_per_sample_policy_on_another_objective_through_tempnlp_train(run_env, tiny_model_path, loss, policy):
    """A recipe puts iSogCLR's per-sample tau on InfoNCE and TempNet on DCL: the run adds the index column, fills
    in num_samples (and TempNet's embedding size), checkpoints the state and draws the per-sample histograms."""
    out = run_env / loss
    sets = _sets("evaluation.before=false", "evaluation.sts=null", "training.num_train_epochs=2", "data.limit=32")
    sets += ["--set", f"loss={{name: {loss}, temperature: {policy}}}", "--set", "loss.symmetric=true"]
    args = ["train", str(RECIPES / "unsup-simcse.yaml"), "--output-dir", str(out)]
    assert main([*args, "--set", f"model.name={tiny_model_path}", *sets]) == 0
    card = (out / "model" / "README.md").read_text()
    name = "IndividualTemperature(num_samples=32" if "individual" in policy else "TempNetTemperature(embedding_dim="
    assert f"Loss: `{loss}(" in card and name in card
    histograms = json.loads((out / "tau_histograms.json").read_text())["histograms"][-1]
    assert histograms["seen"] == 32 and histograms["document"]["seen"] == 32  # both directions, every sample
    state = torch.load(out / "checkpoint-8" / "loss_state.pt", weights_only=True)
    if "individual" in policy:
        prefix = "objective.temperature.policy." if "hardness" in policy else "objective.temperature."
        tau = state[f"{prefix}states.0.tau"]
        assert len(set(tau.tolist())) > 5  # the temperatures moved, one per sample
    else:
        assert any(key.startswith("objective.temperature.network.") for key in state)


def test_several_datasets_each_with_its_own_loss_and_temperature(run_env, tiny_model_path):
    """datasets: sentence-transformers' dicts of datasets and losses, one temperature policy each; both logged,
    the per-sample one checkpointed under its dataset's name, the recipe written back as it was read."""
    recipe = {
        "model": {"name": str(tiny_model_path), "max_seq_length": 32},
        "datasets": {
            "nli": {
                "data": {"dataset": "stanfordnlp/snli", "format": "nli-triplets", "limit": 32},
                "loss": {"name": "InfoNCELoss", "temperature": "macl"},
            },
            "wiki": {
                "data": {
                    "dataset": "princeton-nlp/datasets-for-simcse",
                    "format": "sentences",
                    "file": "wiki1m_for_simcse.txt",
                    "limit": 32,
                },
                "loss": {
                    "name": "InfoNCELoss",
                    "temperature": {"policy": "individual", "tau_init": 0.05, "tau_min": 0.02, "tau_max": 0.2},
                },
            },
        },
        "training": {
            "max_steps": 8, "per_device_train_batch_size": 8, "learning_rate": 1e-3, "logging_steps": 1,
            "save_steps": 4, "report_to": "none", "use_cpu": True, "multi_dataset_batch_sampler": "round_robin",
        },
        "evaluation": {"stsb_validation": False, "before": False, "sts": None},
    }  # fmt: skip
    path = run_env / "multi.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    out = run_env / "multi"
    assert main(["train", str(path), "--output-dir", str(out)]) == 0
    history = json.loads((out / "log_history.json").read_text())
    steps = [entry for entry in history if "loss" in entry]
    # round robin: step 1 draws from nli, step 2 from wiki; from then on both temperatures are in every log line
    assert len(steps) == 8 and "nli_tau_mean" in steps[0] and "wiki_tau_mean" not in steps[0]
    assert all("nli_tau_mean" in entry and "wiki_tau_mean" in entry for entry in steps[1:])
    assert (out / "checkpoint-8" / "loss_wiki" / "loss_state.pt").is_file()
    card = (out / "model" / "README.md").read_text()
    assert "Dataset `nli`" in card and "MACLTemperature(" in card and "IndividualTemperature(num_samples=32" in card
    results = json.loads((out / "results.json").read_text())
    assert results["data"]["nli"]["examples"] == 32 and results["data"]["wiki"]["examples"] == 32
    again, _ = load_recipe(out / "recipe.yaml")
    assert set(again.tasks) == {"nli", "wiki"} and again.to_yaml() == (out / "recipe.yaml").read_text()
