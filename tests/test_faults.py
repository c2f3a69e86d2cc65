"""Bad input and faults, through the command line as a user meets them: every case ends in a correct run or in
exit code 2 with a one-paragraph message naming the input, the problem and the fix, and nothing half-done.

Each class of problem has a test: data that cannot train (empty, all copies, null cells, a row missing a column,
not UTF-8, a corrupt gzip), training values the trainer would take and misuse, output folders that cannot be used
(a file, not writable, held by another run), models that are files or nowhere, checkpoints cut short, a resume
whose evaluation changed, and a run killed at random moments that resumes to the same weights and state.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from tempnlp.cli import main

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [f"sentence number {i} about {topic}" for i, topic in enumerate(["dogs", "cats", "rain", "music"] * 6)]


def _recipe(tmp_path: Path, model: Path, data: Path, **changes) -> Path:
    recipe = {
        "model": {"name": str(model)},
        "data": {"dataset": str(data), "format": "columns", "columns": ["anchor", "positive"]},
        "loss": {"name": "InfoNCELoss", "temperature": 0.05},
        "training": {
            "per_device_train_batch_size": 4,
            "max_steps": 6,
            "save_steps": 2,
            "logging_steps": 1,
            "learning_rate": 1e-3,
            "report_to": "none",
            "use_cpu": True,
        },
        "evaluation": {"stsb_validation": False, "before": False, "sts": None},
        "seed": 7,
    }
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        recipe[section][key] = value
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def _columns(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


def _pairs(count: int = 24) -> list[dict]:
    return [{"anchor": text, "positive": text.replace("about", "on")} for text in TEXTS[:count]]


@pytest.fixture
def no_model_load(monkeypatch):
    """Fails the test if anything tries to load the model: the error must come first."""
    import tempnlp.train.run as run

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the error")

    monkeypatch.setattr(run, "SentenceTransformer", refuse)


def _fails(capsys, argv: list[str], *fragments: str) -> str:
    assert main(argv) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "Traceback" not in err and err.startswith("tempnlp ")
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


# ------------------------------------------------------------------------------------------------ training data


def test_data_that_cannot_train_stops_before_the_model_loads(tmp_path, tiny_model_path, capsys, no_model_load):
    out = ["--output-dir", str(tmp_path / "out")]
    # a sentences file that is empty, or holds only blank lines
    sentences = tmp_path / "sentences"
    sentences.mkdir()
    (sentences / "lines.txt").write_text("\n  \n\n")
    recipe = _recipe(tmp_path, tiny_model_path, sentences, data__format="sentences", data__file="lines.txt")
    data = yaml.safe_load(recipe.read_text())
    del data["data"]["columns"]
    recipe.write_text(yaml.safe_dump(data))
    _fails(capsys, ["train", str(recipe), *out], "lines.txt gives no training examples", "empty file")
    assert not (tmp_path / "out" / "model").exists()

    # every row the same text: the no-duplicates sampler would make batches of one, with no negatives
    same = _columns(tmp_path / "same", [{"anchor": "one text", "positive": "its pair"}] * 12)
    _fails(capsys, ["train", str(_recipe(tmp_path, tiny_model_path, same)), *out], "all 12 training examples")

    # a null cell, and a later row without the column: never trained on as the text "None"
    rows = _pairs()
    rows[5]["positive"] = None
    data = _columns(tmp_path / "null", rows)
    _fails(capsys, ["train", str(_recipe(tmp_path, tiny_model_path, data)), *out], "row 6", "'positive'", "null")
    rows = _pairs()
    del rows[9]["anchor"]
    data = _columns(tmp_path / "missing", rows)
    _fails(capsys, ["train", str(_recipe(tmp_path, tiny_model_path, data)), *out], "row 10", "'anchor'")

    # not UTF-8: the file and line, not the codec's message alone
    latin = tmp_path / "latin"
    latin.mkdir()
    (latin / "train.jsonl").write_bytes(
        b"".join(json.dumps(row).encode() + b"\n" for row in _pairs(3)) + b'{"anchor": "caf\xe9", "positive": "x"}\n'
    )
    _fails(capsys, ["train", str(_recipe(tmp_path, tiny_model_path, latin)), *out], "train.jsonl:4: not UTF-8")

    # a truncated gzip: the file's name
    packed = tmp_path / "packed"
    packed.mkdir()
    payload = gzip.compress("".join(json.dumps(row) + "\n" for row in _pairs()).encode())
    (packed / "train.jsonl.gz").write_bytes(payload[: len(payload) // 2])
    _fails(capsys, ["train", str(_recipe(tmp_path, tiny_model_path, packed)), *out], "train.jsonl.gz", "truncated")


def test_evaluation_data_that_is_missing_stops_before_the_model_loads(
    tmp_path, tiny_model_path, capsys, monkeypatch, no_model_load
):
    """With evaluation.before false the scores come after training: a missing split must not wait for them."""
    from test_evaluation import _beir_folder

    monkeypatch.setenv("TEMPNLP_MIRROR", str(tmp_path / "empty-mirror"))
    (tmp_path / "empty-mirror").mkdir()

    def offline(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr("datasets.load_dataset", offline)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", offline)
    data = _columns(tmp_path / "data", _pairs())
    out = ["--output-dir", str(tmp_path / "out")]
    beir = _beir_folder(tmp_path / "beir")
    recipe = _recipe(tmp_path, tiny_model_path, data)
    raw = yaml.safe_load(recipe.read_text())
    raw["evaluation"]["retrieval"] = {"dataset": str(beir), "split": "dev"}
    recipe.write_text(yaml.safe_dump(raw))
    _fails(capsys, ["train", str(recipe), *out], "beir/qrels/dev.tsv")
    raw["evaluation"] = {"stsb_validation": False, "before": False, "sts": {"tasks": ["STS12"]}}
    recipe.write_text(yaml.safe_dump(raw))
    _fails(capsys, ["train", str(recipe), *out], "mteb/sts12-sts", "split 'test'")
    raw["evaluation"]["sts"]["protocol"] = "senteval"
    recipe.write_text(yaml.safe_dump(raw))
    _fails(capsys, ["train", str(recipe), *out], "The senteval protocol reads SentEval's files")
    assert not (tmp_path / "out" / "model").exists()


def test_qrels_without_a_header_keep_their_first_judgment_and_a_bad_score_is_named(tmp_path):
    from tempnlp.data.beir import load_beir

    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    corpus = [{"_id": f"d{i}", "title": "", "text": f"document {i}"} for i in range(3)]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(row) + "\n" for row in corpus))
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q{i}", "text": f"q {i}"}) + "\n" for i in range(2))
    )
    (folder / "qrels" / "test.tsv").write_text("q0\td0\t1\nq1\td2\t2\n")
    _, _, qrels = load_beir(folder, "test")
    assert qrels == {"q0": {"d0": 1}, "q1": {"d2": 2}}
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td0\t1\nq1\td2\t2\n")
    assert load_beir(folder, "test")[2] == qrels
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td0\t1\nq1\td2\tinf\n")
    with pytest.raises(ValueError, match=r"test\.tsv:3: score 'inf' is not a finite number"):
        load_beir(folder, "test")


def test_a_loss_with_no_negative_is_refused_not_zero():
    """A batch of one pair: InfoNCE's partition is the positive alone and the loss would be exactly 0."""
    from tempnlp.objectives import InfoNCE

    with pytest.raises(ValueError, match="needs at least one negative"):
        InfoNCE(0.05)(torch.randn(1, 8), torch.randn(1, 8))
    assert InfoNCE(0.05)(torch.randn(1, 8), [torch.randn(1, 8), torch.randn(1, 8)]) > 0  # a hard negative: fine


# ---------------------------------------------------------------------------------------- values, folders, model


@pytest.mark.parametrize(
    ("setting", "fragment"),
    [
        ("training.max_steps=0", "training.max_steps must be a positive number"),
        ("training.learning_rate=.nan", "training.learning_rate must be a learning rate above 0"),
        ("training.per_device_train_batch_size=0", "per_device_train_batch_size must be a batch of at least 1"),
    ],
)
def test_training_values_the_trainer_would_misuse_stop_first(tmp_path, tiny_model_path, capsys, setting, fragment):
    data = _columns(tmp_path / "data", _pairs())
    recipe = _recipe(tmp_path, tiny_model_path, data)
    _fails(capsys, ["train", str(recipe), "--dry-run", "--set", setting], fragment)
    _fails(capsys, ["train", str(recipe), "--output-dir", str(tmp_path / "o"), "--set", setting], fragment)
    assert not (tmp_path / "o").exists()


def test_unusable_output_folders_and_models_are_named(tmp_path, tiny_model_path, capsys, monkeypatch):
    data = _columns(tmp_path / "data", _pairs())
    recipe = _recipe(tmp_path, tiny_model_path, data)
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    _fails(capsys, ["train", str(recipe), "--output-dir", str(a_file)], "a-file is a file, not a folder")
    import tempnlp.train.folder as folder

    monkeypatch.setattr(folder.os, "access", lambda path, mode: False)  # tests run as root, which writes anywhere
    _fails(capsys, ["train", str(recipe), "--output-dir", str(tmp_path / "ro")], "is not writable")
    monkeypatch.undo()

    weights = tiny_model_path / "model.safetensors"
    recipe = _recipe(tmp_path, weights, data)
    _fails(capsys, ["train", str(recipe), "--output-dir", str(tmp_path / "m")], "is a file; give the folder")
    monkeypatch.setenv("TEMPNLP_MIRROR", str(tmp_path))  # a mirror without it, and no Hub here
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    recipe = _recipe(tmp_path, Path("nobody/no-such-model"), data)
    _fails(
        capsys,
        ["train", str(recipe), "--output-dir", str(tmp_path / "h")],
        "Model 'nobody/no-such-model' is not a local folder",
    )


def test_the_output_folder_is_locked_and_a_killed_holder_leaves_no_stale_lock(tmp_path, tiny_model_path, capsys):
    from tempnlp.train.folder import LOCK_FILE

    data = _columns(tmp_path / "data", _pairs())
    recipe = _recipe(tmp_path, tiny_model_path, data, training__max_steps=2)
    out = tmp_path / "out"
    out.mkdir()
    holder_code = (
        "import fcntl, json, os, sys, time\n"
        f"handle = open({str(out / LOCK_FILE)!r}, 'a+')\n"
        "fcntl.flock(handle.fileno(), fcntl.LOCK_EX)\n"
        "handle.write(json.dumps({'pid': os.getpid(), 'host': 'here', 'started': 'today'})); handle.flush()\n"
        "print('locked', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", holder_code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        message = f"in use by another tempnlp run (process {holder.pid} on host here, started today)"
        _fails(capsys, ["train", str(recipe), "--output-dir", str(out)], message)
    finally:
        holder.kill()  # kill -9: the kernel drops its lock, its record stays in the file
        holder.wait()
    # leftovers of a killed run's atomic writes are removed
    (out / ".results.json.abc123.tmp").write_text("half")
    (out / ".model.tmp999").mkdir()
    assert main(["train", str(recipe), "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"the run that held it (process {holder.pid}) is gone" in printed
    assert "removed 2 leftover temp file(s)" in printed
    assert (out / LOCK_FILE).read_text() == "" and not list(out.glob(".*.tmp")) and (out / "model").is_dir()


def test_a_model_whose_final_rename_a_kill_interrupted_is_restored(tmp_path):
    from tempnlp.train.folder import remove_leftovers

    (tmp_path / ".model.old12").mkdir()
    (tmp_path / ".model.old12" / "weights").write_text("old")
    (tmp_path / ".model.tmp12").mkdir()
    (tmp_path / ".model.tmp12" / "weights").write_text("new")
    said = []
    remove_leftovers(tmp_path, said.append)
    assert (tmp_path / "model" / "weights").read_text() == "new" and not list(tmp_path.glob(".model.*"))
    assert "restored model/ from .model.tmp12" in said[0]


# --------------------------------------------------------------------------------------------------- checkpoints


def test_a_checkpoint_cut_short_is_passed_over_and_an_empty_loss_state_is_named(tmp_path):
    from tempnlp.state import load_loss_state, save_loss_state
    from tempnlp.temperature import LearnableTemperature
    from tempnlp.train.run import last_complete_checkpoint

    said = []
    for step in (2, 4):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        save_loss_state(LearnableTemperature(), folder)
        torch.save({"step": step}, folder / "optimizer.pt")
        header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
        (folder / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(16))
    assert last_complete_checkpoint(tmp_path, said.append).name == "checkpoint-4"
    newest = tmp_path / "checkpoint-4"
    data = (newest / "model.safetensors").read_bytes()
    (newest / "model.safetensors").write_bytes(data[:-5])  # the weights cut short
    assert last_complete_checkpoint(tmp_path, said.append).name == "checkpoint-2"
    assert "skipping checkpoint-4" in said[-1] and "model.safetensors is empty or cut short" in said[-1]
    (newest / "model.safetensors").write_bytes(data)
    (newest / "loss_state.pt").write_bytes(b"")  # an empty loss state
    assert last_complete_checkpoint(tmp_path, said.append).name == "checkpoint-2"
    with pytest.raises(ValueError, match=r"checkpoint-4/loss_state\.pt is empty or cut short"):
        load_loss_state(LearnableTemperature(), newest)


def test_a_resume_after_an_evaluation_change_scores_the_untrained_model_again(
    tmp_path, tiny_model_path, mirror, monkeypatch, capsys
):
    monkeypatch.setenv("TEMPNLP_MIRROR", str(mirror))
    data = _columns(tmp_path / "data", _pairs())
    recipe = _recipe(
        tmp_path,
        tiny_model_path,
        data,
        evaluation__before=True,
        evaluation__sts={"tasks": ["STSBenchmark"], "protocol": "mteb"},
        training__max_steps=2,
    )
    out = tmp_path / "out"
    assert main(["train", str(recipe), "--output-dir", str(out)]) == 0
    first = json.loads((out / "results.json").read_text())["scores"]["before"]["sts"]
    (out / "results.json").unlink()  # as if it had stopped after its last checkpoint
    changed = ["--set", "evaluation.sts.tasks=[STSBenchmark, SICK-R]"]
    assert main(["train", str(recipe), "--output-dir", str(out), "--resume", *changed]) == 0
    assert "the evaluation settings changed, so the scores before training are recomputed" in capsys.readouterr().out
    before = json.loads((out / "results.json").read_text())["scores"]["before"]["sts"]
    after = json.loads((out / "results.json").read_text())["scores"]["after"]["sts"]
    assert set(before["scores"]) == set(after["scores"]) == {"STSBenchmark", "SICK-R"}
    assert before["scores"]["STSBenchmark"] == first["scores"]["STSBenchmark"]


# ---------------------------------------------------------------------------------------------------- the CLI


def test_debug_shows_the_traceback_and_a_bug_keeps_it(tmp_path, tiny_model_path, capsys, monkeypatch):
    data = _columns(tmp_path / "data", _pairs())
    recipe = _recipe(tmp_path, tiny_model_path, data)
    with pytest.raises(Exception, match="max_steps must be a positive"):
        main(["train", str(recipe), "--dry-run", "--set", "training.max_steps=0", "--debug"])
    import tempnlp.cli as cli

    def broken(args):
        raise AttributeError("a bug in tempnlp")

    monkeypatch.setattr(cli, "_losses", broken)
    with pytest.raises(AttributeError, match="a bug in tempnlp"):
        main(["losses"])


# ------------------------------------------------------------------------------------------------- kill -9 loop


def _final_state(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    weights = load_file(str(next((out / "model").rglob("model.safetensors"))))
    return weights


def test_a_run_killed_at_random_moments_resumes_to_the_same_weights_and_loss_state(tmp_path, tiny_model_path):
    """kill -9 at random times (loading, training, saving a checkpoint, the final save), then --resume, until the
    run finishes: the final weights and the per-sample temperatures equal an uninterrupted run's bit for bit."""
    data = _columns(tmp_path / "data", _pairs())
    recipe = _recipe(
        tmp_path,
        tiny_model_path,
        data,
        loss__temperature={"policy": "individual", "tau_init": 0.05, "tau_min": 0.01},
        training__max_steps=12,
    )
    command = [sys.executable, "-m", "tempnlp.cli", "train", str(recipe)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    reference = tmp_path / "reference"

    out = tmp_path / "killed"
    rng = random.Random(0)
    kills, attempts = 0, 0
    finished = subprocess.run([*command, "--output-dir", str(reference)], env=env, check=True, capture_output=True)
    lines = finished.stdout.count(b"\n")  # the reference run's lines of output: loading, steps, saves, the end
    assert lines > 8
    while not (out / "results.json").is_file():
        attempts += 1
        assert attempts < 12, "the run never finished"
        resume = ["--resume"] if any(out.glob("checkpoint-*")) else []
        process = subprocess.Popen(
            [*command, "--output-dir", str(out), *resume], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        # four kills, each at a random line of the run's output plus a random fraction of a second (which lands in
        # the middle of loading, a step or a save), then one run left to finish
        # a resumed run prints one log line fewer for every step its checkpoint already holds
        done = max((int(path.name.split("-")[1]) for path in out.glob("checkpoint-*")), default=0)
        target = rng.randrange(1, max(2, int(0.8 * (lines - done)))) if kills < 4 else None
        for number, _ in enumerate(process.stdout, start=1):
            if number == target:
                time.sleep(rng.uniform(0.0, 0.5))
                process.send_signal(signal.SIGKILL)
                kills += 1
                break
        process.stdout.close()
        process.wait()
        assert process.returncode in (0, -signal.SIGKILL), process.returncode
    assert kills >= 3, kills
    expected, got = _final_state(reference), _final_state(out)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    state = {}
    for run in (reference, out):
        last = max(run.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        state[run] = torch.load(last / "loss_state.pt", weights_only=True)
    for key, value in state[reference].items():
        assert torch.equal(value, state[out][key]), key


def test_epochs_do_not_matter_under_max_steps_and_a_bom_is_not_part_of_the_first_line(tmp_path, tiny_model_path):
    from tempnlp.data.hub import read_lines
    from tempnlp.train.recipe import check_training_values

    check_training_values({"num_train_epochs": 0, "max_steps": 3})  # the trainer ignores epochs here
    with pytest.raises(ValueError, match="num_train_epochs must be a number of epochs above 0"):
        check_training_values({"num_train_epochs": 0})
    path = tmp_path / "table.csv"
    path.write_bytes("\ufeffsent0,sent1\nx,y\n".encode())
    assert [line for _, line in read_lines(path)] == ["sent0,sent1\n", "x,y\n"]


def test_a_resume_reading_its_training_data_from_elsewhere_is_refused(tmp_path):
    """The same recipe resumed without TEMPNLP_MIRROR reads the Hub's full dataset instead of the mirror's copy:
    other data, which the trainer would skip into as if it were the same."""
    from tempnlp.data.sources import Located
    from tempnlp.train.recipe import RecipeError
    from tempnlp.train.run import DATA_FILE, _data_record, check_same_data

    mirror = Located("org/wiki", "mirror", tmp_path, "lines.head.txt", "lines.txt")
    started = {"": _data_record(mirror)}
    check_same_data(tmp_path, started, resume=False, main=True)
    assert json.loads((tmp_path / DATA_FILE).read_text()) == started
    check_same_data(tmp_path, {"": _data_record(mirror)}, resume=True, main=True)
    hub = {"": _data_record(Located("org/wiki", "hub", file="lines.txt"))}
    with pytest.raises(RecipeError, match=r"not read from where the run started \(data: \{'source': 'mirror'.*"
                       r"-> \{'source': 'hub', 'file': 'lines.txt'\}\)\. Resume as the run started"):  # fmt: skip
        check_same_data(tmp_path, hub, resume=True, main=True)
    assert json.loads((tmp_path / DATA_FILE).read_text()) == started  # the record of the start is kept
