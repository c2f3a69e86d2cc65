"""Evaluation on small data made here: STS protocols against references from the file formats, retrieval
against mteb's own retrieval evaluation, the mteb runner's errors, diagnostics against naive formulas."""

from __future__ import annotations

import gzip
import io
import json
import random
import tarfile

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from tempnlp.cli import main
from tempnlp.data.beir import load_beir
from tempnlp.evaluation.diagnostics import diagnose, load_temperatures
from tempnlp.evaluation.retrieval import evaluate_retrieval
from tempnlp.evaluation.sts import STS_TASKS, evaluate_sts, resolve_tasks

WORDS = [
    "the",
    "a",
    "man",
    "woman",
    "dog",
    "cat",
    "plays",
    "runs",
    "eats",
    "guitar",
    "food",
    "park",
    "street",
    "red",
    "big",
    "small",
    "old",
    "young",
]


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choices(WORDS, k=rng.randint(3, 8)))


def _write_jsonl_gz(path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")


@pytest.fixture
def fake_mirror(tmp_path, monkeypatch):
    """A mirror with all seven STS tasks in MTEB's layout and in SentEval's, small and with repeated sentences."""
    rng = random.Random(0)
    root = tmp_path / "mirror"
    for task in STS_TASKS.values():
        rows = []
        for _ in range(40):
            first = _sentence(rng)
            second = first if rng.random() < 0.1 else _sentence(rng)
            rows.append({"sentence1": first, "sentence2": second, "score": round(rng.uniform(0, 5), 2)})
        split = "validation" if task.name == "STSBenchmark" else task.split
        _write_jsonl_gz(root / "datasets" / task.dataset_id / "test.jsonl.gz", rows)
        if task.name == "STSBenchmark":
            _write_jsonl_gz(root / "datasets" / task.dataset_id / f"{split}.jsonl.gz", rows)
        folder = root / "senteval" / task.senteval_dir
        folder.mkdir(parents=True, exist_ok=True)
        if task.senteval_subsets:
            for subset in task.senteval_subsets:
                pairs = [(_sentence(rng), _sentence(rng)) for _ in range(12)]
                gold = [("" if rng.random() < 0.15 else f"{rng.uniform(0, 5):.3f}") for _ in pairs]
                (folder / f"STS.input.{subset}.txt").write_text("\n".join(f"{a}\t{b}" for a, b in pairs) + "\n")
                (folder / f"STS.gs.{subset}.txt").write_text("\n".join(gold) + "\n")
        elif task.name == "SICK-R":
            lines = ["pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment"]
            lines += [f"{i}\t{_sentence(rng)}\t{_sentence(rng)}\t{rng.uniform(1, 5):.1f}\tNEUTRAL" for i in range(30)]
            (folder / task.senteval_file).write_text("\n".join(lines) + "\n")
        else:
            lines = [
                f"main-captions\tMSRvid\t2012test\t{i:04d}\t{rng.uniform(0, 5):.3f}\t{_sentence(rng)}\t{_sentence(rng)}"
                for i in range(30)
            ]
            (folder / task.senteval_file).write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("TEMPNLP_MIRROR", str(root))
    return root


def _reference_cosine_spearman(model, first: list[str], second: list[str], gold: list[float]) -> float:
    a = model.encode(first, convert_to_numpy=True).astype(np.float64)
    b = model.encode(second, convert_to_numpy=True).astype(np.float64)
    cos = [float(u @ v / np.sqrt((u @ u) * (v @ v))) for u, v in zip(a, b, strict=True)]
    return 100 * spearmanr(gold, cos).statistic


def _senteval_reference(folder, task) -> tuple[list[str], list[str], list[float]]:
    """SentEval's loaders, written again from its file format: gold-less lines dropped, subsets pooled."""
    first, second, gold = [], [], []
    if task.senteval_subsets:
        for subset in task.senteval_subsets:
            inputs = (folder / f"STS.input.{subset}.txt").read_text().splitlines()
            scores = (folder / f"STS.gs.{subset}.txt").read_text().splitlines()
            for pair, score in zip(inputs, scores, strict=True):
                if score != "":
                    a, b = pair.split("\t")
                    first.append(" ".join(a.split()))
                    second.append(" ".join(b.split()))
                    gold.append(float(score))
    else:
        lines = (folder / task.senteval_file).read_text().splitlines()
        for line in lines[1:] if task.name == "SICK-R" else lines:
            fields = line.split("\t")
            a, b, score = (
                (fields[1], fields[2], fields[3]) if task.name == "SICK-R" else (fields[5], fields[6], fields[4])
            )
            first.append(a)
            second.append(b)
            gold.append(float(score))
    return first, second, gold


def test_senteval_protocol_matches_a_reference_from_the_file_format(static_model, fake_mirror):
    result = evaluate_sts(static_model, model_name="tiny", protocol="senteval", show_progress_bar=False)
    for task in STS_TASKS.values():
        first, second, gold = _senteval_reference(fake_mirror / "senteval" / task.senteval_dir, task)
        assert result.pairs[task.name] == len(gold)
        expected = _reference_cosine_spearman(static_model, first, second, gold)
        assert result.scores[task.name] == pytest.approx(expected, abs=1e-3), task.name
    assert result.avg == pytest.approx(np.mean(list(result.scores.values())))


def test_mteb_protocol_matches_a_reference_and_writes_sts_json(static_model, fake_mirror, tmp_path):
    result = evaluate_sts(static_model, model_name="tiny", output_dir=tmp_path / "out", show_progress_bar=False)
    for task in STS_TASKS.values():
        with gzip.open(fake_mirror / "datasets" / task.dataset_id / "test.jsonl.gz", "rt") as handle:
            rows = [json.loads(line) for line in handle]
        expected = _reference_cosine_spearman(
            static_model, [r["sentence1"] for r in rows], [r["sentence2"] for r in rows], [r["score"] for r in rows]
        )
        assert result.scores[task.name] == pytest.approx(expected, abs=1e-3), task.name
    written = json.loads((tmp_path / "out" / "sts.json").read_text())
    assert written["model"] == "tiny" and written["protocol"] == "mteb"
    assert list(written["scores"]) == list(STS_TASKS)
    assert written["avg"] == pytest.approx(np.mean(list(written["scores"].values())), abs=1e-3)


def test_without_a_mirror_both_protocols_read_the_hub(static_model, fake_mirror, tmp_path, monkeypatch):
    """No mirror: MTEB's copies come through ``datasets.load_dataset``, SentEval's files from SimCSE's tar on the
    Hub, unpacked once (plain files only, nothing outside the cache); the scores are those of the mirror."""
    from_mirror = {
        protocol: evaluate_sts(static_model, model_name="tiny", protocol=protocol, show_progress_bar=False).scores
        for protocol in ("mteb", "senteval")
    }

    import mteb

    revisions = {task.dataset_id: mteb.get_task(task.name).metadata.dataset["revision"] for task in STS_TASKS.values()}

    def hub_split(dataset_id, split, revision):
        assert revision == revisions[dataset_id]  # the rows mteb scores
        with gzip.open(fake_mirror / "datasets" / dataset_id / f"{split}.jsonl.gz", "rt") as handle:
            return [json.loads(line) for line in handle]

    archive = tmp_path / "senteval.tar"
    outside = tmp_path / "cache" / "escaped.txt"
    with tarfile.open(archive, "w") as tar:
        for folder in ("STS", "SICK"):
            tar.add(fake_mirror / "senteval" / folder, arcname=folder)
        escaping = tarfile.TarInfo("STS/../../escaped.txt")
        escaping.size = 1
        tar.addfile(escaping, io.BytesIO(b"x"))
        link = tarfile.TarInfo("SICK/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    downloads: list[tuple[str, str]] = []

    def hub_file(repo_id, filename, repo_type):
        downloads.append((repo_id, filename))
        assert repo_type == "dataset"
        return str(archive)

    monkeypatch.setattr("datasets.load_dataset", hub_split)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", hub_file)
    monkeypatch.setenv("TEMPNLP_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TEMPNLP_MIRROR")
    with pytest.raises(ValueError, match=r"senteval.tar: not SentEval's tar as SimCSE publishes it"):
        evaluate_sts(static_model, model_name="tiny", protocol="senteval", show_progress_bar=False)
    assert not outside.exists() and [p.name for p in (tmp_path / "cache").iterdir()] == []  # nothing half unpacked
    with tarfile.open(archive) as source, tarfile.open(tmp_path / "clean.tar", "w") as clean:
        for member in source.getmembers():
            if ".." not in member.name:
                clean.addfile(member, source.extractfile(member) if member.isfile() else None)
    archive = tmp_path / "clean.tar"
    for protocol in ("mteb", "senteval", "senteval"):
        scores = evaluate_sts(static_model, model_name="tiny", protocol=protocol, show_progress_bar=False).scores
        assert scores == pytest.approx(from_mirror[protocol], abs=1e-9), protocol
    assert downloads == [("princeton-nlp/datasets-for-simcse", "senteval.tar")] * 2  # the second run reused it
    assert not (tmp_path / "cache" / "senteval" / "SICK" / "link").exists()


def test_each_distinct_sentence_is_encoded_once(static_model, fake_mirror, monkeypatch):
    seen: list[str] = []
    original = static_model.encode

    def counting_encode(sentences, **kwargs):
        seen.extend(sentences)
        return original(sentences, **kwargs)

    monkeypatch.setattr(static_model, "encode", counting_encode)
    evaluate_sts(static_model, model_name="tiny", show_progress_bar=False)
    assert len(seen) == len(set(seen))


def test_unknown_task_suggests_the_closest():
    with pytest.raises(ValueError, match="Unknown STS task 'STS-B'; did you mean 'STSBenchmark'"):
        resolve_tasks(["STS-B"])
    with pytest.raises(ValueError, match="did you mean 'SICK-R'"):
        resolve_tasks(["SICKR"])


def test_empty_and_malformed_files_are_clear_errors(static_model, fake_mirror):
    path = fake_mirror / "datasets" / "mteb" / "sts13-sts" / "test.jsonl.gz"
    _write_jsonl_gz(path, [])
    with pytest.raises(ValueError, match=r"STS13: .*test.jsonl.gz holds no rows"):
        evaluate_sts(static_model, model_name="tiny", tasks=["STS13"])
    _write_jsonl_gz(path, [{"sentence1": "a", "score": 1.0}])
    with pytest.raises(ValueError, match=r"row 1 lacks a sentence1/sentence2/score"):
        evaluate_sts(static_model, model_name="tiny", tasks=["STS13"])
    gold = fake_mirror / "senteval" / "STS" / "STS13-en-test" / "STS.gs.FNWN.txt"
    gold.write_text("1.0\n")
    with pytest.raises(ValueError, match=r"STS.input.FNWN.txt has 12 lines but STS.gs.FNWN.txt has 1"):
        evaluate_sts(static_model, model_name="tiny", tasks=["STS13"], protocol="senteval")


def test_cli_reports_a_missing_model_and_an_unknown_task(fake_mirror, tmp_path, capsys):
    assert main(["eval", "sts", str(tmp_path / "no-such-model"), "--output-dir", str(tmp_path)]) == 2
    assert "is not a local folder" in capsys.readouterr().err
    assert main(["eval", "sts", "x/y", "--tasks", "sts-15", "--output-dir", str(tmp_path)]) == 2
    assert "did you mean 'STS15'" in capsys.readouterr().err


# --- retrieval ---------------------------------------------------------------------------------------


def _beir_folder(root, queries: int = 12, documents: int = 40, seed: int = 0):
    rng = random.Random(seed)
    docs = [
        {"_id": f"d{i}", "title": rng.choice(["", "Title " + _sentence(rng)]), "text": _sentence(rng)}
        for i in range(documents)
    ]
    _write_jsonl_gz(root / "corpus.jsonl.gz", docs)
    (root / "queries.jsonl").write_text(
        "\n".join(json.dumps({"_id": f"q{i}", "text": _sentence(rng)}) for i in range(queries)) + "\n"
    )
    lines = ["query-id\tcorpus-id\tscore"]
    for i in range(queries - 2):  # the last two queries have no relevant document: both evaluators drop them
        for doc in rng.sample(range(documents), k=rng.randint(1, 3)):
            lines.append(f"q{i}\td{doc}\t1")
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    (root / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return root


def _hard_beir_folder(root):
    """:func:`_beir_folder` plus what separates mteb's retrieval metrics from sentence-transformers' own: graded
    relevance, a query whose only judgment is 0, two identical documents (an exact tie, at the top for q2, whose
    text is theirs) and a document carrying query q1's id and text."""
    folder = _beir_folder(root)
    with gzip.open(folder / "corpus.jsonl.gz", "rt") as handle:
        corpus = [json.loads(line) for line in handle]
    queries = [json.loads(line) for line in (folder / "queries.jsonl").read_text().splitlines()]
    corpus.append({"_id": "d40", "title": corpus[3]["title"], "text": corpus[3]["text"]})
    corpus.append({"_id": "q1", "title": "", "text": queries[1]["text"]})
    queries[2]["text"] = f"{corpus[3]['title']} {corpus[3]['text']}".strip()
    _write_jsonl_gz(folder / "corpus.jsonl.gz", corpus)
    (folder / "queries.jsonl").write_text("".join(json.dumps(query) + "\n" for query in queries))
    with (folder / "qrels" / "test.tsv").open("a") as handle:
        handle.write("q0\td3\t2\nq0\td40\t1\nq2\td3\t1\nq10\td5\t0\n")
    return folder


@pytest.mark.parametrize(("task_name", "folder_name"), [("SciFact", "scifact"), ("ArguAna", "arguana")])
def test_retrieval_metrics_equal_mtebs_on_the_same_folder(static_model, tmp_path, task_name, folder_name):
    """SciFact keeps a query's own id among its documents, ArguAna (mteb's ignore_identical_ids) leaves it out."""
    import mteb
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    from tempnlp.evaluation.mteb_runner import inject_mirror_data

    folder = _hard_beir_folder(tmp_path / "mirror" / "datasets" / "mteb" / folder_name)
    task = mteb.get_task(task_name)  # mteb's own retrieval task class, fed the same folder
    ignore = task.ignore_identical_ids
    assert ignore == (task_name == "ArguAna")
    ours = evaluate_retrieval(
        static_model, folder, model_name="tiny", ignore_identical_ids=ignore, output_dir=tmp_path / "out"
    )
    inject_mirror_data(task, tmp_path / "mirror")
    result = mteb.evaluate(
        static_model, [task], cache=None, co2_tracker=False, show_progress_bar=False, encode_kwargs={"batch_size": 64}
    )
    theirs = result.task_results[0].scores["test"][0]
    assert ours["ndcg@10"] == pytest.approx(100 * theirs["ndcg_at_10"], abs=1e-3)
    assert ours["mrr@10"] == pytest.approx(100 * theirs["mrr_at_10"], abs=1e-3)
    assert ours["recall@100"] == pytest.approx(100 * theirs["recall_at_100"], abs=1e-3)
    written = json.loads((tmp_path / "out" / "retrieval.json").read_text())
    assert written["queries"] == 11 and written["documents"] == 42 and written["ignore_identical_ids"] == ignore

    # the folder tells the two definitions apart: sentence-transformers' evaluator scores it differently
    corpus, queries, qrels = load_beir(folder)
    relevant = {query: {doc for doc, grade in docs.items() if grade > 0} for query, docs in qrels.items()}
    plain = InformationRetrievalEvaluator(
        queries=queries,
        corpus={doc: f"{text['title']} {text['text']}".strip() for doc, text in corpus.items()},
        relevant_docs=relevant,
        precision_recall_at_k=[100],
        write_csv=False,
    )(static_model)
    assert abs(100 * plain["cosine_ndcg@10"] - ours["ndcg@10"]) > 0.1
    assert abs(100 * plain["cosine_mrr@10"] - ours["mrr@10"]) > 0.1


def test_beir_errors_name_the_problem(tmp_path):
    folder = _beir_folder(tmp_path / "beir")
    with (folder / "qrels" / "test.tsv").open("a") as handle:
        handle.write("q0\tunknown-doc\t1\n")
    with pytest.raises(ValueError, match=r"test.tsv:\d+: document 'unknown-doc' is not in corpus.jsonl.gz"):
        load_beir(folder)
    with pytest.raises(FileNotFoundError, match="no qrels for split 'dev'"):
        load_beir(folder, split="dev")
    (folder / "queries.jsonl").write_text('{"_id": "q0"}\n')
    with pytest.raises(ValueError, match=r"queries.jsonl: line 1 lacks text"):
        load_beir(folder)
    (folder / "queries.jsonl").write_text("")
    with pytest.raises(ValueError, match=r"queries.jsonl is empty"):
        load_beir(folder)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_beir(tmp_path / "nowhere")


# --- mteb runner -------------------------------------------------------------------------------------


def test_mteb_runner_names_unknown_tasks_and_missing_data(tmp_path, monkeypatch):
    from tempnlp.evaluation.mteb_runner import get_tasks, inject_mirror_data

    with pytest.raises(ValueError, match="Unknown MTEB task 'STS-12'; did you mean 'STS12'"):
        get_tasks(["STS-12"])
    with pytest.raises(ValueError, match=r"either tasks .* or a benchmark"):
        get_tasks(None, None)
    (task,) = get_tasks(["STS15"])
    with pytest.raises(FileNotFoundError, match=r"STS15: its data is not in the mirror .*mteb/sts15-sts/test.jsonl.gz"):
        inject_mirror_data(task, tmp_path)
    # a task split into language subsets is refused, even with its file in place, rather than read as each subset
    (multilingual,) = get_tasks(["STS17"])
    folder = tmp_path / "datasets" / multilingual.metadata.dataset["path"]
    folder.mkdir(parents=True)
    with gzip.open(folder / "test.jsonl.gz", "wt") as handle:
        handle.write(json.dumps({"sentence1": "a", "sentence2": "b", "score": 1.0}) + "\n")
    with pytest.raises(NotImplementedError, match=r"STS17 is split into subsets \(ko-ko, .*unset TEMPNLP_MIRROR"):
        inject_mirror_data(multilingual, tmp_path)


# --- diagnostics -------------------------------------------------------------------------------------


def test_diagnostics_against_naive_formulas(static_model, fake_mirror, tmp_path):
    state = tmp_path / "loss_state.pt"
    seen = torch.arange(100) % 4 != 0  # samples 0, 4, 8, ... never visited: still at tau_init, left out
    torch.save(
        {
            "temperature.states.0.tau": torch.where(seen, torch.linspace(0.05, 0.5, 100), torch.tensor(0.07)),
            "temperature.states.0.seen": seen,
            "temperature.states.1.tau": torch.full((100,), 0.2),  # no seen buffer: every sample counts
        },
        state,
    )
    report = diagnose(static_model, model_name="tiny", output_dir=tmp_path / "diag", loss_state=state)

    with gzip.open(fake_mirror / "datasets/mteb/stsbenchmark-sts/validation.jsonl.gz", "rt") as handle:
        rows = [json.loads(line) for line in handle]
    positives = [r for r in rows if r["score"] > 4.0]
    unit = lambda texts: torch.nn.functional.normalize(  # noqa: E731
        torch.tensor(static_model.encode(texts)), dim=1
    )
    a, b = unit([r["sentence1"] for r in positives]), unit([r["sentence2"] for r in positives])
    assert report["positive_pairs"] == len(positives)
    assert report["alignment"] == pytest.approx(float(((a - b) ** 2).sum(1).mean()), rel=1e-4)
    sentences = list(dict.fromkeys([r["sentence1"] for r in rows] + [r["sentence2"] for r in rows]))
    e = unit(sentences)
    total = [float(torch.exp(-2 * ((e[i] - e[j]) ** 2).sum())) for i in range(len(e)) for j in range(i + 1, len(e))]
    assert report["uniformity"] == pytest.approx(float(np.log(np.mean(total))), rel=1e-4)
    first, second = report["temperature"]["per_sample"].values()
    assert list(report["temperature"]["per_sample"]) == ["temperature.states.0", "temperature.states.1"]
    visited = torch.linspace(0.05, 0.5, 100)[seen].double()
    assert first["samples"] == 75 and first["mean"] == pytest.approx(float(visited.mean()), rel=1e-6)
    assert first["min"] == pytest.approx(float(visited.min())) and first["max"] == pytest.approx(0.5)
    assert second["samples"] == 100 and second["std"] == pytest.approx(0.0, abs=1e-7)
    for name in ("similarities.png", "temperatures.png"):
        assert (tmp_path / "diag" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "diag" / "diagnostics.json").read_text())["plots"] == [
        "similarities.png",
        "temperatures.png",
    ]


def test_bad_loss_state_is_a_clear_error(tmp_path):
    path = tmp_path / "state.pt"
    torch.save({"u": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="has no 'tau' entry"):
        load_temperatures(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_temperatures(tmp_path / "absent.pt")


def test_mteb_cli_on_a_fine_tuned_local_model(tiny_model, fake_mirror, tmp_path, capsys):
    from test_losses import _pairs, _train

    from tempnlp.losses import InfoNCELoss
    from tempnlp.temperature import MACLTemperature

    _train(tiny_model, InfoNCELoss(tiny_model, MACLTemperature()), _pairs(count=16), tmp_path / "train", steps=2)
    tiny_model.save_pretrained(str(tmp_path / "model"))
    output = tmp_path / "mteb"
    code = main(
        ["eval", "mteb", str(tmp_path / "model"), "--tasks", "STS12", "--output-dir", str(output),
         "--model-name", "me/tiny-minilm", "--training-datasets", "SNLI"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    (folder,) = (output / "results" / "me__tiny-minilm").iterdir()
    assert len(folder.name) == 12  # a revision made from the hash of the weights
    result = json.loads((folder / "STS12.json").read_text())
    assert result["task_name"] == "STS12" and -1 <= result["scores"]["test"][0]["main_score"] <= 1
    meta = json.loads((folder / "model_meta.json").read_text())
    assert meta["name"] == "me/tiny-minilm" and meta["embed_dim"] == 32 and meta["n_parameters"] > 10_000
    assert meta["training_datasets"] == ["SNLI"] and meta["adapted_from"] is None
    run = json.loads((output / "tempnlp_runs" / "me__tiny-minilm" / f"{folder.name}.json").read_text())
    (loss,) = run["training_losses"]
    assert loss["loss"].endswith("InfoNCELoss") and loss["parameters"]["temperature"].startswith("MACLTemperature(")
    assert run["results_folder"] == str(folder) and run["weights"].startswith("the local folder")


def test_mteb_metadata_of_a_tempnlp_model_comes_from_its_recipe(tiny_model, tmp_path):
    """A model folder ``tempnlp train`` wrote names its base (adapted_from, whose licence and training data it
    inherits) and the MTEB tasks whose data it trained on; a folder without one has unknown training data (None),
    not none (which mteb would count as zero-shot on everything)."""
    from tempnlp.evaluation.mteb_runner import build_model_meta, local_model_name

    base = "sentence-transformers/all-MiniLM-L6-v2"
    folder = tmp_path / "scifact-run" / "model"
    tiny_model.save_pretrained(str(folder))
    (folder / "tempnlp_recipe.yaml").write_text(
        f"model: {{name: {base}}}\ndata: {{dataset: mteb/scifact, format: beir}}\n"
    )
    assert local_model_name(folder) == "local/scifact-run"
    meta = build_model_meta(tiny_model, name="me/scifact-minilm", model_path=folder, training_datasets=["MSMARCO"])
    assert meta.adapted_from == base and meta.training_datasets == {"SciFact", "MSMARCO"}
    assert meta.license == "apache-2.0"  # all-MiniLM-L6-v2's, in mteb's registry
    assert meta.zero_shot_percentage(["SciFact", "STS12"]) == 50
    assert "NQ" in meta.get_training_datasets()  # the base model's own, through adapted_from

    (folder / "tempnlp_recipe.yaml").unlink()
    plain = build_model_meta(tiny_model, name="me/plain", model_path=folder)
    assert (
        plain.training_datasets is None and plain.adapted_from is None and plain.zero_shot_percentage(["STS12"]) is None
    )
    with pytest.raises(ValueError, match=r"mteb's entry for the published model.*name of its own"):
        build_model_meta(tiny_model, name=base, model_path=folder)
    with pytest.raises(ValueError, match=r"--adapted-from takes the base model's Hub id"):
        build_model_meta(tiny_model, name="me/plain", model_path=folder, adapted_from=str(folder))


def test_a_local_revision_changes_with_the_modules_not_with_the_card(tiny_model, tmp_path):
    """mteb reuses results filed under the same revision: a folder whose pooling changed is another model."""
    from tempnlp.provenance import content_revision

    tiny_model.save_pretrained(str(tmp_path / "model"))
    revision = content_revision(tmp_path / "model")
    (tmp_path / "model" / "README.md").write_text("another card")
    assert content_revision(tmp_path / "model") == revision
    pooling = next((tmp_path / "model").glob("*Pooling/config.json"))
    config = json.loads(pooling.read_text())
    config["pooling_mode_cls_token"], config["pooling_mode_mean_tokens"] = True, False
    pooling.write_text(json.dumps(config))
    assert content_revision(tmp_path / "model") != revision


def test_mteb_cli_on_a_hub_id_from_the_mirror_keeps_the_registry_revision(tiny_model, fake_mirror, tmp_path, capsys):
    """The mirror's copy records no revision: it is filed under mteb's entry, and another --revision is refused
    (it could not be loaded from there) before anything is evaluated."""
    name = "sentence-transformers/all-MiniLM-L6-v2"
    tiny_model.save_pretrained(str(fake_mirror / "models" / name))  # a stand-in for the copy
    output = tmp_path / "mteb"
    assert main(["eval", "mteb", name, "--tasks", "STS12", "--output-dir", str(output), "--revision", "abc"]) == 2
    assert "cannot load another one. Unset TEMPNLP_MIRROR" in capsys.readouterr().err and not output.exists()
    assert main(["eval", "mteb", name, "--tasks", "STS12", "--output-dir", str(output)]) == 0
    revision = "8b3219a92973c328a8e22fadcfa821b5dc75636a"
    run = json.loads(
        (output / "tempnlp_runs" / "sentence-transformers__all-MiniLM-L6-v2" / f"{revision}.json").read_text()
    )
    assert run["weights"].startswith("the mirror's copy") and revision in run["weights"]
