"""STS evaluation: the seven tasks of the SimCSE table, under MTEB's protocol or SentEval's.

Both protocols score a pair by the cosine of its two embeddings and report Spearman x 100 against the gold
scores; they differ in the data they read and how subsets are aggregated:

* ``mteb``: MTEB's copies (``mteb/<task>-sts``, raw text), the test split, one correlation per task. The
  numbers equal ``mteb.evaluate`` on the same model (a test runs mteb and compares).
* ``senteval``: SentEval's files (Moses-tokenised, lower-cased), aggregated as in the SimCSE paper: STS12-16 in
  the "all" setting (one Spearman over the pooled pairs of every subset), STS-B and SICK-R on their test split.

Sentences are encoded once for all tasks: duplicates across pairs and tasks are embedded a single time.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from scipy.stats import spearmanr
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator
from sklearn.metrics.pairwise import paired_cosine_distances

from tempnlp._io import folder_written_aside, write_json_atomic
from tempnlp.data.hub import MIRROR_ENV, cache_root, mirror_root, split_rows

Protocol = Literal["mteb", "senteval"]
PROTOCOLS: tuple[str, ...] = ("mteb", "senteval")


@dataclass(frozen=True)
class STSTask:
    """One STS task: where MTEB keeps it and where SentEval keeps it."""

    name: str  # MTEB's task name
    dataset_id: str  # Hub id of MTEB's copy
    senteval_dir: str  # folder under the SentEval root
    senteval_subsets: tuple[str, ...] = ()  # STS12-16: pooled in the "all" setting
    senteval_file: str = ""  # STS-B / SICK-R: the test file
    split: str = "test"


@dataclass(frozen=True)
class PairSet:
    sentences1: list[str]
    sentences2: list[str]
    scores: np.ndarray

    def __post_init__(self) -> None:
        if not (len(self.sentences1) == len(self.sentences2) == len(self.scores)):
            raise ValueError("sentence and score columns differ in length")


STS_TASKS: dict[str, STSTask] = {
    task.name: task
    for task in (
        STSTask(
            "STS12",
            "mteb/sts12-sts",
            "STS/STS12-en-test",
            ("MSRpar", "MSRvid", "SMTeuroparl", "surprise.OnWN", "surprise.SMTnews"),
        ),
        STSTask("STS13", "mteb/sts13-sts", "STS/STS13-en-test", ("FNWN", "headlines", "OnWN")),
        STSTask(
            "STS14",
            "mteb/sts14-sts",
            "STS/STS14-en-test",
            ("deft-forum", "deft-news", "headlines", "images", "OnWN", "tweet-news"),
        ),
        STSTask(
            "STS15",
            "mteb/sts15-sts",
            "STS/STS15-en-test",
            ("answers-forums", "answers-students", "belief", "headlines", "images"),
        ),
        STSTask(
            "STS16",
            "mteb/sts16-sts",
            "STS/STS16-en-test",
            ("answer-answer", "headlines", "plagiarism", "postediting", "question-question"),
        ),
        STSTask("STSBenchmark", "mteb/stsbenchmark-sts", "STS/STSBenchmark", senteval_file="sts-test.csv"),
        STSTask("SICK-R", "mteb/sickr-sts", "SICK", senteval_file="SICK_test_annotated.txt"),
    )
}


def _normalised(name: str) -> str:
    return "".join(character for character in name.lower() if character.isalnum())


# Other names the field uses for these tasks, to suggest the canonical one.
_ALIASES = {
    **{_normalised(name): name for name in STS_TASKS},
    "stsb": "STSBenchmark",
    "stsbenchmark": "STSBenchmark",
    "sick": "SICK-R",
    "sickrelatedness": "SICK-R",
}


def closest_task(name: str) -> str:
    if _normalised(name) in _ALIASES:
        return _ALIASES[_normalised(name)]
    return difflib.get_close_matches(name, list(STS_TASKS), n=1, cutoff=0.0)[0]


def resolve_tasks(names: Iterable[str] | None) -> list[STSTask]:
    """Tasks by name (all seven when None); an unknown name is an error that suggests the closest."""
    if names is None:
        return list(STS_TASKS.values())
    tasks = []
    for name in names:
        if name not in STS_TASKS:
            raise ValueError(
                f"Unknown STS task {name!r}; did you mean {closest_task(name)!r}? Known: {', '.join(STS_TASKS)}."
            )
        tasks.append(STS_TASKS[name])
    if not tasks:
        raise ValueError("No STS task given: name at least one, e.g. STS12,STSBenchmark.")
    return tasks


# --- data --------------------------------------------------------------------------------------------


def mteb_revision(task_name: str) -> str | None:
    """The dataset revision mteb pins for a task, so that Hub rows are the rows mteb scores."""
    import mteb

    return mteb.get_task(task_name).metadata.dataset.get("revision")


def load_mteb_pairs(task: STSTask) -> PairSet:
    where, rows = split_rows(task.dataset_id, task.split, hub_revision=lambda: mteb_revision(task.name))
    sentences1, sentences2, scores = [], [], []
    for line, row in enumerate(rows, start=1):
        try:
            sentences1.append(str(row["sentence1"]))
            sentences2.append(str(row["sentence2"]))
            scores.append(float(row["score"]))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{where}: row {line} lacks a sentence1/sentence2/score value ({error!r}).") from error
    if not scores:
        raise ValueError(f"{task.name}: {where} holds no rows.")
    return PairSet(sentences1, sentences2, np.asarray(scores, dtype=np.float64))


#: SimCSE's copy of SentEval's data on the Hub (what SimCSE's SentEval/data/downstream/download_dataset.sh fetches)
SENTEVAL_HUB = ("princeton-nlp/datasets-for-simcse", "senteval.tar")
#: the folders of the tar (and of SentEval's data/downstream) that the seven STS tasks read
SENTEVAL_FOLDERS = ("STS", "SICK")


def senteval_root() -> Path:
    """SentEval's data folder (``STS/``, ``SICK/``): the mirror's ``senteval/`` when the mirror has one, else
    SimCSE's ``senteval.tar`` from the Hub, unpacked once under the tempnlp cache."""
    root = mirror_root()
    if root is not None and (root / "senteval").is_dir():
        return root / "senteval"
    absent = f"{MIRROR_ENV} is not set" if root is None else f"the mirror has no {root / 'senteval'}"
    folder = cache_root() / "senteval"
    if all((folder / name).is_dir() for name in SENTEVAL_FOLDERS):
        return folder
    from huggingface_hub import hf_hub_download

    repo, file = SENTEVAL_HUB
    try:
        archive = Path(hf_hub_download(repo, file, repo_type="dataset"))
    except Exception as error:  # offline, gated, moved: each means "no SentEval files from the Hub"
        raise FileNotFoundError(
            f"The senteval protocol reads SentEval's files: {absent}, and {file} of the Hub dataset {repo} could "
            f"not be downloaded ({type(error).__name__}: {error}). Put SentEval's STS/ and SICK/ folders in "
            f"<mirror>/senteval and set {MIRROR_ENV}, or use the mteb protocol."
        ) from error
    unpack_senteval(archive, folder)
    return folder


def unpack_senteval(archive: Path, folder: Path) -> None:
    """Unpack the STS and SICK folders of SentEval's tar into ``folder``: only plain files and folders, none
    outside it, and atomically (a cut or refused unpack leaves no half folder)."""
    import shutil
    import tarfile

    shutil.rmtree(folder, ignore_errors=True)  # an incomplete copy (one of the two folders) is replaced
    with folder_written_aside(folder) as temporary:
        try:
            with tarfile.open(archive) as tar:
                members = [
                    member
                    for member in tar.getmembers()
                    if member.name.split("/")[0] in SENTEVAL_FOLDERS and (member.isfile() or member.isdir())
                ]
                tops = {member.name.split("/")[0] for member in members}
                missing = [name for name in SENTEVAL_FOLDERS if name not in tops]
                if missing:
                    raise tarfile.TarError(f"no {', '.join(missing)} folder at its top")
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(temporary, members=members, filter="data")
                else:  # Python < 3.10.12: refuse what the data filter would
                    for member in members:
                        if member.name.startswith("/") or ".." in Path(member.name).parts:
                            raise tarfile.TarError(f"member {member.name!r} would unpack outside the folder")
                    tar.extractall(temporary, members=members)
        except tarfile.TarError as error:
            raise ValueError(
                f"{archive}: not SentEval's tar as SimCSE publishes it ({error}). Delete it (it is in the Hugging "
                "Face cache) and run again."
            ) from error


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist.")
    return path.read_text(encoding="utf-8").splitlines()


def _tokens(text: str) -> str:
    # SentEval splits on whitespace and SimCSE's batcher joins the tokens with single spaces.
    return " ".join(text.split())


def load_senteval_pairs(task: STSTask, root: Path | None = None) -> PairSet:
    """SentEval's pairs of a task, with the gold-less lines of STS.gs files dropped as SentEval drops them."""
    folder = (root or senteval_root()) / task.senteval_dir
    sentences1: list[str] = []
    sentences2: list[str] = []
    scores: list[float] = []
    if task.senteval_subsets:
        for subset in task.senteval_subsets:
            inputs = _read_lines(folder / f"STS.input.{subset}.txt")
            gold = _read_lines(folder / f"STS.gs.{subset}.txt")
            if len(inputs) != len(gold):
                raise ValueError(
                    f"{folder}: STS.input.{subset}.txt has {len(inputs)} lines but STS.gs.{subset}.txt has {len(gold)}."
                )
            for number, (pair, score) in enumerate(zip(inputs, gold, strict=True), start=1):
                if not score.strip():
                    continue
                parts = pair.split("\t")
                if len(parts) < 2:
                    raise ValueError(f"{folder}/STS.input.{subset}.txt:{number}: expected two tab-separated sentences.")
                sentences1.append(_tokens(parts[0]))
                sentences2.append(_tokens(parts[1]))
                scores.append(float(score))
    else:
        path = folder / task.senteval_file
        lines = _read_lines(path)
        is_sick = task.name == "SICK-R"
        columns = (1, 2, 3) if is_sick else (5, 6, 4)  # sentence A, sentence B, score
        for number, line in enumerate(lines[1:] if is_sick else lines, start=2 if is_sick else 1):
            parts = line.rstrip("\n").split("\t")
            if len(parts) <= max(columns):
                raise ValueError(f"{path}:{number}: expected at least {max(columns) + 1} tab-separated fields.")
            sentences1.append(_tokens(parts[columns[0]]))
            sentences2.append(_tokens(parts[columns[1]]))
            scores.append(float(parts[columns[2]]))
    if not scores:
        raise ValueError(f"{task.name}: no scored pairs under {folder}.")
    return PairSet(sentences1, sentences2, np.asarray(scores, dtype=np.float64))


# --- scoring -----------------------------------------------------------------------------------------


def encode_unique(
    model: SentenceTransformer, sentences: Iterable[str], *, batch_size: int = 64, show_progress_bar: bool = True
) -> dict[str, np.ndarray]:
    """Embed each distinct sentence once (one ``encode`` call, so ST sorts all of them by length)."""
    unique = list(dict.fromkeys(sentences))
    embeddings = model.encode(unique, batch_size=batch_size, show_progress_bar=show_progress_bar, convert_to_numpy=True)
    return dict(zip(unique, embeddings, strict=True))


def pair_cosines(pairs: PairSet, embeddings: dict[str, np.ndarray], protocol: Protocol) -> np.ndarray:
    """Cosine of each pair, computed as the protocol's reference code does (both in float32).

    Near-tied cosines decide Spearman's ranks, so the exact formula matters to the third decimal: mteb uses
    ``1 - sklearn.metrics.pairwise.paired_cosine_distances``; SentEval ``u.v / (sqrt(u.u) sqrt(v.v))``.
    """
    first = np.stack([embeddings[s] for s in pairs.sentences1]).astype(np.float32)
    second = np.stack([embeddings[s] for s in pairs.sentences2]).astype(np.float32)
    if protocol == "mteb":
        return 1.0 - paired_cosine_distances(first, second)
    dots = np.einsum("ij,ij->i", first, second)
    norms = np.sqrt(np.einsum("ij,ij->i", first, first)) * np.sqrt(np.einsum("ij,ij->i", second, second))
    return np.nan_to_num(dots / norms)


def cosine_spearman(pairs: PairSet, embeddings: dict[str, np.ndarray], protocol: Protocol = "mteb") -> float:
    """Spearman x 100 between the gold scores and the cosine of each pair."""
    return 100.0 * float(spearmanr(pairs.scores, pair_cosines(pairs, embeddings, protocol)).statistic)


@dataclass
class STSResult:
    model: str
    protocol: str
    scores: dict[str, float]
    seconds: float = 0.0
    pairs: dict[str, int] = field(default_factory=dict)

    @property
    def avg(self) -> float:
        return float(np.mean(list(self.scores.values())))

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "protocol": self.protocol,
            "scores": {name: round(score, 4) for name, score in self.scores.items()},
            "avg": round(self.avg, 4),
            "pairs": self.pairs,
            "seconds": round(self.seconds, 1),
        }

    def table(self) -> str:
        names = list(self.scores)
        header = " | ".join(f"{name:>12}" for name in [*names, "Avg."])
        values = " | ".join(f"{score:>12.2f}" for score in [*self.scores.values(), self.avg])
        rule = "-" * len(header)
        return f"{self.model} ({self.protocol} protocol, cosine Spearman x 100)\n{header}\n{rule}\n{values}"


def evaluate_sts(
    model: SentenceTransformer,
    *,
    model_name: str,
    tasks: Sequence[str] | None = None,
    protocol: Protocol = "mteb",
    batch_size: int = 64,
    show_progress_bar: bool = True,
    output_dir: str | Path | None = None,
) -> STSResult:
    """Evaluate on the STS tasks; with ``output_dir``, write ``sts.json`` there (atomically)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}.")
    start = time.perf_counter()
    selected = resolve_tasks(tasks)
    if protocol == "mteb":
        data = {task.name: load_mteb_pairs(task) for task in selected}
    else:
        root = senteval_root()
        data = {task.name: load_senteval_pairs(task, root) for task in selected}
    sentences = (s for pairs in data.values() for s in (*pairs.sentences1, *pairs.sentences2))
    embeddings = encode_unique(model, sentences, batch_size=batch_size, show_progress_bar=show_progress_bar)
    result = STSResult(
        model=model_name,
        protocol=protocol,
        scores={name: cosine_spearman(pairs, embeddings, protocol) for name, pairs in data.items()},
        pairs={name: len(pairs.scores) for name, pairs in data.items()},
    )
    result.seconds = time.perf_counter() - start
    if output_dir is not None:
        write_json_atomic(Path(output_dir) / "sts.json", result.to_dict())
    return result


class _AtLength(EmbeddingSimilarityEvaluator):
    """Evaluates at a fixed token length while the model trains at a shorter one."""

    def __init__(self, *args, max_seq_length: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.max_seq_length = max_seq_length

    def __call__(self, model, *args, **kwargs):
        training_length, model.max_seq_length = model.max_seq_length, self.max_seq_length
        try:
            return super().__call__(model, *args, **kwargs)
        finally:
            model.max_seq_length = training_length


def stsb_evaluator(
    split: str = "validation", batch_size: int = 64, max_seq_length: int | None = None
) -> EmbeddingSimilarityEvaluator:
    """sentence-transformers' EmbeddingSimilarityEvaluator on STS Benchmark (``mteb/stsbenchmark-sts``).

    Gold scores are divided by 5 (the evaluator reports Spearman, which the scaling leaves unchanged).
    Pass it to ``SentenceTransformerTrainer(evaluator=...)`` to follow STS-B during training. With
    ``max_seq_length``, it encodes at that length whatever length the model trains at.
    """
    if split not in ("train", "validation", "test"):
        raise ValueError(f"split must be 'train', 'validation' or 'test', got {split!r}.")
    pairs = load_mteb_pairs(STSTask("STSBenchmark", "mteb/stsbenchmark-sts", "", split=split))
    at_length = {} if max_seq_length is None else {"max_seq_length": max_seq_length}
    return (_AtLength if at_length else EmbeddingSimilarityEvaluator)(
        sentences1=pairs.sentences1,
        sentences2=pairs.sentences2,
        scores=(pairs.scores / 5.0).tolist(),
        batch_size=batch_size,
        main_similarity="cosine",
        similarity_fn_names=["cosine"],
        name=f"sts-{split}",
        write_csv=False,
        **at_length,
    )
