"""Mirror resolution, NLI triplets, the command line."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tempnlp.cli import main
from tempnlp.data import nli_triplets, read_jsonl, resolve_model, snli_triplets, split_rows


def test_resolve_model_prefers_local_paths_then_the_mirror_then_the_hub(tmp_path, monkeypatch):
    model_dir = tmp_path / "models" / "org" / "name"
    model_dir.mkdir(parents=True)
    (model_dir / "config.json").write_text("{}")
    monkeypatch.setenv("TEMPNLP_MIRROR", str(tmp_path))
    assert resolve_model("org/name") == str(model_dir)
    assert resolve_model("org/absent") == "org/absent"  # left to the Hub
    assert resolve_model(str(model_dir)) == str(model_dir)
    monkeypatch.delenv("TEMPNLP_MIRROR")
    assert resolve_model("org/name") == "org/name"


def test_a_mirror_that_does_not_exist_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TEMPNLP_MIRROR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"TEMPNLP_MIRROR=.* is not a directory"):
        resolve_model("org/name")


def test_a_split_comes_from_the_mirror_when_it_has_it_else_from_the_hub(tmp_path, monkeypatch):
    path = tmp_path / "datasets" / "org" / "data" / "test.jsonl.gz"
    path.parent.mkdir(parents=True)
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write('{"premise": "p", "hypothesis": "h", "label": 0}\n')
    asked: list[tuple[str, str]] = []

    def hub(dataset_id, split, revision=None):
        asked.append((dataset_id, split))
        if dataset_id == "org/offline":
            raise ConnectionError("no route to huggingface.co")
        return [{"from": "hub"}]

    monkeypatch.setattr("datasets.load_dataset", hub)
    monkeypatch.setenv("TEMPNLP_MIRROR", str(tmp_path))
    where, rows = split_rows("org/data", "test")
    assert where == str(path) and list(rows) == [{"premise": "p", "hypothesis": "h", "label": 0}] and not asked
    where, rows = split_rows("org/data", "train")  # the mirror lacks this split: the Hub
    assert list(rows) == [{"from": "hub"}] and asked == [("org/data", "train")] and "Hub" in where
    with pytest.raises(FileNotFoundError, match=r"the mirror has no .*org/offline/test.jsonl.gz.*ConnectionError"):
        split_rows("org/offline", "test")
    monkeypatch.delenv("TEMPNLP_MIRROR")
    with pytest.raises(FileNotFoundError, match=r"TEMPNLP_MIRROR is not set, and the Hugging Face Hub did not"):
        split_rows("org/offline", "test")


def test_snli_triplets_without_a_mirror_come_from_the_hub(monkeypatch):
    rows = [
        {"premise": "a", "hypothesis": "e", "label": 0},
        {"premise": "a", "hypothesis": "c", "label": 2},
        {"premise": "b", "hypothesis": "n", "label": 1},
    ]
    monkeypatch.delenv("TEMPNLP_MIRROR", raising=False)
    hub = {"stanfordnlp/snli": rows}
    monkeypatch.setattr("datasets.load_dataset", lambda dataset_id, split, revision: hub[dataset_id])
    assert snli_triplets("train").to_list() == [{"anchor": "a", "positive": "e", "negative": "c"}]


def test_the_data_layer_does_not_import_evaluation(tmp_path):
    """tempnlp.data sits below tempnlp.evaluation: importing it and reading a BEIR folder into training pairs never
    load an evaluation module."""
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "title": "T", "text": "a document"}) + "\n")
    (beir / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "a query"}) + "\n")
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    code = f"""
import sys
from pathlib import Path
import tempnlp.data, tempnlp.data.beir
from tempnlp.data.sources import beir_pairs
pairs, documents = beir_pairs(Path({str(beir)!r}), "test")
assert pairs["anchor"] == ["a query"] and documents == ["T a document"], (pairs[:], documents)
print(sorted(name for name in sys.modules if name.startswith("tempnlp.evaluation")))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_malformed_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "rows.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(json.dumps({"a": 1}) + "\n{broken\n")
    with pytest.raises(ValueError, match=r"rows.jsonl.gz:2: not a JSON object"):
        list(read_jsonl(path))


def test_nli_triplets_pair_entailment_and_contradiction_per_premise():
    rows = [
        {"premise": "p1", "hypothesis": "neutral", "label": 1},
        {"premise": "p1", "hypothesis": "contra", "label": 2},
        {"premise": "p1", "hypothesis": "entail", "label": 0},
        {"premise": "p2", "hypothesis": "entail only", "label": 0},
        {"premise": "p3", "hypothesis": "no gold", "label": -1},
        {"premise": "p4", "hypothesis": "e4", "label": 0},
        {"premise": "p4", "hypothesis": "c4", "label": 2},
    ]
    triplets = nli_triplets(rows)
    assert triplets.to_dict() == {"anchor": ["p1", "p4"], "positive": ["entail", "e4"], "negative": ["contra", "c4"]}
    assert len(nli_triplets(rows, limit=1)) == 1
    with pytest.raises(ValueError, match=r"my rows: no premise has both an entailment \(label 0\)"):
        nli_triplets(rows[3:5], source="my rows")
    triplet_rows = [{"anchor": "a", "positive": "p", "negative": "n"}]  # sentence-transformers/all-nli's layout
    with pytest.raises(ValueError, match=r"all-nli, row 1: no premise, hypothesis, label column .*'columns'"):
        nli_triplets(triplet_rows, source="all-nli")


def test_losses_command_lists_losses_and_policies(capsys):
    assert main(["losses"]) == 0
    out = capsys.readouterr().out
    for name in ("InfoNCELoss", "DCLLoss", "ISogCLRLoss", "SogCLRLoss", "TempNetLoss", "MACLTemperature"):
        assert name in out
    assert "2207.07874" in out and "2308.01140" in out
    for key in ("individual", "tempnet"):
        assert f"  {key} " in out


def test_readme_tables_are_the_registry():
    """The README's loss and policy tables are what the classes declare (tempnlp.catalog.readme_tables())."""
    from pathlib import Path

    from tempnlp.catalog import readme_tables

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert readme_tables() in readme


def test_quickstart_recipe_runs_on_minilm_from_the_mirror(minilm_path, mirror, monkeypatch, tmp_path, capsys):
    """The README's first command, shrunk to 4 steps and one STS task: MiniLM from the mirror scores its
    published STS-B before training, and the run ends with the before/after table."""
    monkeypatch.setenv("TEMPNLP_MIRROR", str(mirror))
    sets = ["training.max_steps=4", "training.per_device_train_batch_size=8", "training.eval_steps=2"]
    sets += ["training.save_steps=4", "data.limit=32", "evaluation.sts.tasks=[STSBenchmark]"]
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml"
    args = ["train", str(recipe), "--output-dir", str(tmp_path)]
    assert main([*args, *[item for s in sets for item in ("--set", s)]]) == 0
    out = capsys.readouterr().out
    assert "model: sentence-transformers/all-MiniLM-L6-v2 from the mirror" in out
    assert "| STSBenchmark   |   82.03 |" in out
    assert (tmp_path / "model" / "model.safetensors").is_file()


def test_atomic_writes_keep_the_usual_file_mode(tmp_path):
    import os
    import stat

    from tempnlp._io import write_text_atomic

    previous = os.umask(0o022)
    try:
        path = write_text_atomic(tmp_path / "out.json", "{}")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 and path.read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary file left behind


def test_mined_hard_negatives_are_cached_by_what_decides_the_embeddings(tiny_model_path, monkeypatch, tmp_path):
    """A cached mined set is reused only by a model that ranks the same way: the same weights under another pooling,
    token length or similarity, or random sampling from another seed, mine again. The key is read from the loaded
    model, so a Hub model (no folder of its own) is cached as a local one is."""
    import random
    import shutil

    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling
    from test_evaluation import _beir_folder

    from tempnlp.data.sources import build_train_dataset, locate
    from tempnlp.train.recipe import DataSpec, HardNegativeSpec

    monkeypatch.setenv("TEMPNLP_CACHE", str(tmp_path / "cache"))
    folder = _beir_folder(tmp_path / "beir", queries=20, documents=60)
    shutil.copy(folder / "qrels" / "test.tsv", folder / "qrels" / "train.tsv")

    def model(pooling: str = "mean", length: int = 32) -> SentenceTransformer:
        transformer = Transformer(str(tiny_model_path), max_seq_length=length)
        return SentenceTransformer(
            modules=[transformer, Pooling(transformer.get_embedding_dimension(), pooling_mode=pooling)], device="cpu"
        )

    def build(encoder: SentenceTransformer, sampling: str = "top") -> tuple[bool, list[str]]:
        spec = DataSpec(
            dataset=str(folder),
            format="beir",
            hard_negatives=HardNegativeSpec(range_min=0, relative_margin=None, sampling_strategy=sampling),
        )
        said: list[str] = []
        dataset = build_train_dataset(spec, locate(spec.dataset, spec.format, spec.split), encoder, log=said.append)
        cached = any("from the cache" in line for line in said)
        assert cached != any("mining" in line for line in said), said
        return cached, dataset["negative_1"]

    def entries() -> int:
        return len(list((tmp_path / "cache" / "mined").iterdir()))

    mined, first = build(model())
    assert not mined and len(first) > 10 and entries() == 1
    assert build(model()) == (True, first)  # a fresh load of the same model
    assert build(model(length=16))[0] is False and entries() == 2
    dot = model()
    dot.similarity_fn_name = "dot"  # mining ranks by the model's similarity
    assert build(dot)[0] is False and entries() == 3
    mined_cls = build(model(pooling="cls"))
    assert mined_cls[0] is False and entries() == 4
    shutil.rmtree(tmp_path / "cache")
    assert build(model(pooling="cls")) == (False, mined_cls[1])  # what the cache held is what mining gives

    random.seed(1)
    assert build(model(), "random")[0] is False
    random.seed(1)
    assert build(model(), "random")[0] is True
    random.seed(2)
    assert build(model(), "random")[0] is False


def test_a_files_sample_stands_in_for_it_in_the_mirror_only_and_is_named_as_one(tmp_path, monkeypatch):
    """The mirror holds the head of wiki1m as wiki1m_for_simcse.head.txt; a user's own folder with only a .head file
    is missing the file the recipe names."""
    from tempnlp.data.sources import locate

    own = tmp_path / "own"
    own.mkdir()
    (own / "lines.head.txt").write_text("a\nb\n")
    with pytest.raises(FileNotFoundError, match=r"own has no .*lines.txt"):
        locate(str(own), "sentences", file="lines.txt")
    (own / "lines.txt").write_text("a\nb\nc\n")
    assert locate(str(own), "sentences", file="lines.txt").file == "lines.txt"

    mirror = tmp_path / "mirror"
    (mirror / "datasets" / "org" / "wiki").mkdir(parents=True)
    (mirror / "datasets" / "org" / "wiki" / "lines.head.txt").write_text("a\nb\n")
    monkeypatch.setenv("TEMPNLP_MIRROR", str(mirror))
    located = locate("org/wiki", "sentences", file="lines.txt")
    assert (located.source, located.file, located.sample_of) == ("mirror", "lines.head.txt", "lines.txt")
    assert "its sample lines.head.txt of lines.txt" in located.describe()
