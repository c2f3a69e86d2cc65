"""eval/grid.py expands, skips and resumes cells; eval/report.py computes what it claims and is reproducible."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from eval import grid as grid_module
from eval import report as report_module
from tempnlp.train.recipe import RecipeError, load_recipe

ROOT = Path(__file__).resolve().parents[1]
TASKS = ["STS12", "STS13", "STSBenchmark"]


def _grid_file(tmp_path: Path, strategies: dict, **extra) -> Path:
    grid = {
        "name": "tiny",
        "description": "a test grid",
        "recipe": "recipes/quickstart.yaml",
        "metric": "sts",
        "reference": "mnrl",
        "seeds": [1, 2],
        "settings": {"training.max_steps": 2},
        "strategies": strategies,
        **extra,
    }
    path = tmp_path / "grids" / f"{grid['name']}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


STRATEGIES = {
    "base-model": {"train": False},
    "mnrl": {"loss": {"name": "MultipleNegativesRankingLoss", "scale": 20.0}},
    "macl": {"loss.temperature": "macl"},
}


def test_cells_expand_strategies_by_seeds_with_one_untrained_cell(tmp_path):
    grid = grid_module.load_grid(_grid_file(tmp_path, STRATEGIES))
    cells = grid_module.cells(grid)
    assert [(c.strategy, c.seed) for c in cells] == [
        ("base-model", 1),
        ("mnrl", 1),
        ("macl", 1),
        ("mnrl", 2),
        ("macl", 2),
    ]
    macl = cells[2]
    assert macl.overrides == ["training.max_steps=2", "loss.temperature=macl"] and macl.train


def test_the_untrained_cell_follows_the_shared_settings(tmp_path):
    settings = {
        "model.name": "some/other-model",
        "evaluation.sts.protocol": "senteval",
        "evaluation.sts.tasks": ["STS12", "STSBenchmark"],
        "evaluation.sts.batch_size": 16,
        "training.max_steps": 2,
    }
    grid = grid_module.load_grid(_grid_file(tmp_path, STRATEGIES, settings=settings))
    base = grid_module.cells(grid)[0]
    assert not base.train
    command = grid_module._command(grid, base)
    assert command[command.index("sts") + 1] == "some/other-model"
    assert command[command.index("--protocol") + 1] == "senteval"
    # the same tasks as the trained cells, or the averages would not compare
    assert command[command.index("--tasks") + 1] == "STS12,STSBenchmark"
    assert command[command.index("--batch-size") + 1] == "16"


def _cell_with_a_run_folder(tmp_path, monkeypatch, number: int):
    """The tiny grid's cell ``number`` with an empty run folder, results and runs under tmp_path."""
    monkeypatch.setattr(grid_module, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(grid_module, "RUNS", tmp_path / "runs")
    grid = grid_module.load_grid(_grid_file(tmp_path, STRATEGIES))
    cell = grid_module.cells(grid)[number]
    cell.run_dir.mkdir(parents=True)
    return grid, cell


def test_a_run_that_finished_before_its_cell_was_recorded_is_recorded_not_retrained(tmp_path, monkeypatch):
    grid, cell = _cell_with_a_run_folder(tmp_path, monkeypatch, 1)
    # the recipe the run records: the one the cell's own command trains, every --set of it included (the seed too)
    command = grid_module._command(grid, cell)
    sets = [command[i + 1] for i, item in enumerate(command) if item == "--set"]
    assert "seed=1" in sets
    recipe, _ = load_recipe(ROOT / grid["recipe"], sets)
    (cell.run_dir / "results.json").write_text(
        json.dumps(
            {
                "recipe": json.loads(json.dumps(recipe.to_dict())),
                "versions": {"tempnlp": "0.1.0"},
                "train": {"steps": 2, "median_step_seconds": 0.5},
                "curve": [],
                "peak_memory": {"host_rss_mib": 900.0},
                "scores": {"after": {"sts": {"scores": {"STS12": 70.0, "STSBenchmark": 80.0}}}},
                "wall_seconds": 42.0,
            }
        )
    )

    def refuse(*args, **kwargs):
        raise AssertionError("the finished run was started again")

    monkeypatch.setattr(grid_module.subprocess, "Popen", refuse)
    record = grid_module.run_cell(grid, cell)
    assert record["wall_seconds"] == 42.0 and record["scores"]["avg"] == 75.0
    assert json.loads(cell.result_path.read_text()) == record
    assert len(record["load_average"]) == 3


def test_a_finished_run_of_another_recipe_is_not_recorded_as_the_cell(tmp_path, monkeypatch):
    """A run folder left from before the grid's settings changed would otherwise become the cell's result."""
    grid, cell = _cell_with_a_run_folder(tmp_path, monkeypatch, 2)
    recipe = grid_module._cell_recipe(grid, cell)
    recipe["training"]["max_steps"] = 3  # the grid said 3 steps when this run was made; it says 2 now
    finished = {"recipe": recipe, "wall_seconds": 42.0}
    (cell.run_dir / "results.json").write_text(json.dumps(finished))
    monkeypatch.setattr(grid_module.subprocess, "Popen", lambda *args, **kwargs: pytest.fail("trained"))
    with pytest.raises(RuntimeError, match=r"holds a finished run of another recipe.*Move or delete that folder"):
        grid_module.run_cell(grid, cell)
    assert not cell.result_path.exists() and json.loads((cell.run_dir / "results.json").read_text()) == finished


def test_a_typo_in_any_strategy_stops_the_grid_before_a_cell_runs(tmp_path):
    path = _grid_file(tmp_path, {**STRATEGIES, "typo": {"loss.temprature": 0.1}})
    with pytest.raises(RecipeError, match="Did you mean 'temperature'"):
        grid_module.cells(grid_module.load_grid(path))
    with pytest.raises(RecipeError, match="reference 'fixed' is not one of the strategies"):
        grid_module.load_grid(_grid_file(tmp_path, STRATEGIES, reference="fixed"))


def test_finished_cells_are_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(grid_module, "RESULTS", tmp_path / "results")
    path = _grid_file(tmp_path, STRATEGIES)
    done = tmp_path / "results" / "tiny" / "mnrl" / "seed-1.json"
    done.parent.mkdir(parents=True)
    done.write_text("{}")
    ran = []
    monkeypatch.setattr(
        grid_module,
        "run_cell",
        lambda grid, cell, keep_run=False: ran.append(cell) or {"scores": {"avg": 1.0}, "wall_seconds": 1},
    )
    assert grid_module.main([str(path)]) == 0
    assert [(c.strategy, c.seed) for c in ran] == [("base-model", 1), ("macl", 1), ("mnrl", 2), ("macl", 2)]


def test_a_tiny_grid_runs_cells_in_subprocesses_and_records_them(tmp_path, monkeypatch, mirror, tiny_model_path):
    monkeypatch.setenv("TEMPNLP_MIRROR", str(mirror))
    monkeypatch.setattr(grid_module, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(grid_module, "RUNS", tmp_path / "runs")
    settings = {
        "model.name": str(tiny_model_path),
        "training.max_steps": 4,
        "training.per_device_train_batch_size": 8,
        "training.logging_steps": 1,
        "training.save_steps": 2,
        "training.report_to": "none",
        "training.use_cpu": True,
        "data.limit": 16,
        "evaluation.before": False,
        "evaluation.stsb_validation": False,
        "evaluation.sts.tasks": ["STSBenchmark"],
    }
    strategies = {
        "mnrl": {"loss": {"name": "MultipleNegativesRankingLoss", "scale": 20.0}},
        "isogclr": {"loss": {"name": "ISogCLRLoss", "tau_init": 0.05, "tau_min": 0.02, "tau_max": 0.2}},
    }
    path = _grid_file(tmp_path, strategies, settings=settings, seeds=[7])
    assert grid_module.main([str(path)]) == 0
    record = json.loads((tmp_path / "results" / "tiny" / "isogclr" / "seed-7.json").read_text())
    assert record["recipe"]["seed"] == 7 and record["recipe"]["loss"]["name"] == "ISogCLRLoss"
    assert set(record["scores"]) == {"STSBenchmark", "avg"} and record["training"]["steps"] == 4
    assert [entry["step"] for entry in record["curve"] if "loss" in entry] == [1, 2, 3, 4]
    assert record["training"]["timed_steps"] == 4 and record["training"]["median_step_seconds"] > 0
    assert record["tau_histogram"]["histograms"][-1]["seen"] == 16
    assert record["peak_memory_mib"] > 0 and record["versions"]["tempnlp"] and "torch threads" in record["machine"]
    # the boot the cell trained in, so that the report pairs step times of one host only
    boot = Path("/proc/sys/kernel/random/boot_id")
    assert record["boot_id"] == (boot.read_text().strip() if boot.is_file() else None)
    assert not (tmp_path / "runs" / "tiny" / "isogclr" / "seed-7" / "model").exists()  # only the record is kept
    mtime = (tmp_path / "results" / "tiny" / "mnrl" / "seed-7.json").stat().st_mtime_ns
    assert grid_module.main([str(path)]) == 0  # all done: nothing reruns
    assert (tmp_path / "results" / "tiny" / "mnrl" / "seed-7.json").stat().st_mtime_ns == mtime


# ------------------------------------------------------------------------------------------------------ report


def _record(strategy: str, seed: int, scores: dict[str, float], train: bool = True, step: float = 1.0) -> dict:
    scores = {**scores, "avg": round(float(np.mean(list(scores.values()))), 4)}
    record = {
        "grid": "tiny",
        "strategy": strategy,
        "seed": seed,
        "trained": train,
        "scores": scores,
        "wall_seconds": 100.0 * step,
        "peak_memory_mib": 1000.0,
        "versions": {"tempnlp": "0.1.0"},
    }
    if train:
        record["training"] = {"median_step_seconds": step}
        record["recipe"] = {"loss": {"name": "X"}}
        record["curve"] = [{"step": s, "loss": 1.0 / s, "tau_mean": 0.05 + 0.001 * s} for s in (1, 2, 3)]
    return record


def _write_results(folder: Path, rng: np.random.Generator, grid: str = "tiny", macl_shift: float = 0.5) -> dict:
    cells = {
        "base-model": {1: _record("base-model", 1, dict(zip(TASKS, [70.0, 80.0, 82.0], strict=True)), train=False)}
    }
    for strategy, shift, step in (("mnrl", 0.0, 1.0), ("macl", macl_shift, 1.02)):
        cells[strategy] = {}
        for seed in (1, 2, 3):
            values = [round(base + shift + rng.normal(0, 0.2), 4) for base in (71.0, 81.0, 82.5)]
            cells[strategy][seed] = _record(strategy, seed, dict(zip(TASKS, values, strict=True)), step=step)
    for strategy, seeds in cells.items():
        for seed, record in seeds.items():
            path = folder / grid / strategy / f"seed-{seed}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record))
    return cells


def test_report_tables_match_a_naive_computation_and_rebuild_byte_for_byte(tmp_path):
    grids = _grid_file(tmp_path, STRATEGIES, seeds=[1, 2, 3]).parent
    results = tmp_path / "eval" / "results" / "grids"
    cells = _write_results(results, np.random.default_rng(0))
    report = tmp_path / "eval" / "report.md"
    plots = tmp_path / "eval" / "results" / "plots"
    text = report_module.build_report(grids, results, report, plots)

    macl = [cells["macl"][s]["scores"] for s in (1, 2, 3)]
    mnrl = [cells["mnrl"][s]["scores"] for s in (1, 2, 3)]
    mean, std = np.mean([m["STS12"] for m in macl]), np.std([m["STS12"] for m in macl], ddof=1)
    assert f"| macl | 3 | {mean:.2f} ± {std:.2f} |" in text
    differences = [a[t] - b[t] for a, b in zip(macl, mnrl, strict=True) for t in TASKS]
    p_value = stats.wilcoxon(differences).pvalue
    delta = np.mean([m["avg"] for m in macl]) - np.mean([m["avg"] for m in mnrl])
    seeds_better = sum(a["avg"] > b["avg"] for a, b in zip(macl, mnrl, strict=True))
    assert np.isclose(delta, np.mean(differences))  # avg is the task mean: the paired Δ of the average
    assert (
        f"| macl | {delta:+.2f} | 9 | " in text and f"| {p_value:.3g} | {seeds_better} / {3 - seeds_better} |" in text
    )
    per_task = [np.mean([a[t] - b[t] for a, b in zip(macl, mnrl, strict=True)]) for t in TASKS]
    assert "| macl | " + " | ".join(f"{d:+.2f}" for d in per_task) + " |" in text  # where the Δ comes from
    base = cells["base-model"][1]["scores"]
    base_per_task = [base[t] - np.mean([m[t] for m in mnrl]) for t in TASKS]
    assert "| base-model | " + " | ".join(f"{d:+.2f}" for d in base_per_task) + " |" in text
    assert "| macl | 1.020 | 1.020 |" in text  # seconds per step against the reference
    assert "Best adaptive strategy: **macl**" in text and "Time per step within 1.05x of the reference: all" in text
    assert "Cells finished: 7 of 7." in text
    for name in ("tiny-temperature.png", "tiny-cost.png"):
        assert (plots / name).read_bytes()[:4] == b"\x89PNG" and f"(results/plots/{name})" in text

    snapshot = {path: path.read_bytes() for path in [report, *plots.iterdir()]}
    report_module.build_report(grids, results, report, plots)
    assert {path: path.read_bytes() for path in [report, *plots.iterdir()]} == snapshot


def test_package_versions_name_each_package_once_and_count_the_cells_of_each_differing_version():
    cells = [{"torch": "2.13.0", "transformers": "5.23.0"}, *[{"torch": "2.13.0", "transformers": "5.24.0"}] * 2]
    assert report_module._versions_text(cells) == "torch 2.13.0, transformers 5.23.0 (1 cell) / 5.24.0 (2 cells)"
    assert report_module._versions_text([{"torch": "2.13.0"}, {}]) == "torch 2.13.0 (1 cell) / not recorded (1 cell)"


def test_report_says_which_cells_are_missing(tmp_path):
    grids = _grid_file(tmp_path, {**STRATEGIES, "dcl": {"loss.name": "DCLLoss"}}, seeds=[1, 2, 3]).parent
    results = tmp_path / "eval" / "results" / "grids"
    cells = _write_results(results, np.random.default_rng(1))
    (results / "tiny" / "macl" / "seed-3.json").unlink()
    # seed 3 ran on a machine twice as slow: only the reference has it, so it must not move macl's cost ratio
    slow = {**cells["mnrl"][3], "training": {"median_step_seconds": 2.0}, "machine": "slow CPU"}
    (results / "tiny" / "mnrl" / "seed-3.json").write_text(json.dumps(slow))
    text = report_module.build_report(grids, results, tmp_path / "eval" / "report.md", tmp_path / "eval" / "plots")
    assert "Cells finished: 6 of 10." in text
    assert "Still to run: dcl (all seeds), macl (seed 3)." in text
    # the Δ of the average is paired too: macl's two seeds against the reference's same two seeds
    delta = np.mean([cells["macl"][s]["scores"]["avg"] - cells["mnrl"][s]["scores"]["avg"] for s in (1, 2)])
    assert f"| macl | {delta:+.2f} | " in text.split("### Against the reference")[1]
    assert f"Best adaptive strategy: **macl**, {delta:+.2f} avg over `mnrl`" in text
    assert "| macl | 1.020 | 1.020 |" in text  # seeds 1 and 2 against the reference's seeds 1 and 2
    assert "| mnrl | 1.333 | 1.000 |" in text and "slow CPU: 1 cell." in text
    # a strategy's cell from another machine than the reference's cell of its seed is not paired at all
    other = {**cells["macl"][2], "training": {"median_step_seconds": 5.0}, "machine": "slow CPU"}
    (results / "tiny" / "macl" / "seed-2.json").write_text(json.dumps(other))
    text = report_module.build_report(grids, results, tmp_path / "eval" / "report.md", tmp_path / "eval" / "plots")
    assert "| macl | 3.010 | 1.020 |" in text  # seed 1 alone: mean step (1.02 + 5.0) / 2, ratio 1.02
    # one machine description in two boots: a shared host ran slower after a restart, so a cell from another boot
    # than the reference's cell of its seed is not paired either, while cells of one boot are
    (results / "tiny" / "mnrl" / "seed-2.json").write_text(json.dumps({**cells["mnrl"][2], "boot_id": "monday"}))
    tuesday = {**cells["macl"][2], "training": {"median_step_seconds": 5.0}, "boot_id": "tuesday"}
    (results / "tiny" / "macl" / "seed-2.json").write_text(json.dumps(tuesday))
    text = report_module.build_report(grids, results, tmp_path / "eval" / "report.md", tmp_path / "eval" / "plots")
    assert "| macl | 3.010 | 1.020 |" in text
    assert "(2 of them in 2 recorded boots)" in text
    (results / "tiny" / "macl" / "seed-2.json").write_text(json.dumps({**tuesday, "boot_id": "monday"}))
    text = report_module.build_report(grids, results, tmp_path / "eval" / "report.md", tmp_path / "eval" / "plots")
    assert "| macl | 3.010 | 3.010 |" in text  # seed 2 pairs again: 5.0 / 1.0, mean with seed 1's 1.02


def test_targets_count_only_adaptive_temperatures_and_name_strategies_without_a_cost_pair(tmp_path):
    # SogCLR keeps one fixed tau (it changes the objective): however well it scores, it is not the best *adaptive*
    # strategy. Its cells ran on another machine than the reference's, so no step-time ratio exists for it, and the
    # cost target must say so instead of counting it among "all strategies".
    strategies = {**STRATEGIES, "sogclr": {"loss": {"name": "SogCLRLoss", "temperature": 0.05}}}
    grids = _grid_file(tmp_path, strategies, seeds=[1, 2, 3]).parent
    results = tmp_path / "eval" / "results" / "grids"
    cells = _write_results(results, np.random.default_rng(2))
    for seed, record in cells["macl"].items():
        scores = {task: value + 1.0 for task, value in record["scores"].items()}  # above macl everywhere
        sogclr = {**record, "strategy": "sogclr", "scores": scores, "machine": "another CPU"}
        path = results / "tiny" / "sogclr" / f"seed-{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(sogclr))
    text = report_module.build_report(grids, results, tmp_path / "eval" / "report.md", tmp_path / "eval" / "plots")
    targets = text.split("### Targets")[1]
    assert "Best adaptive strategy: **macl**" in targets
    assert (
        "Time per step within 1.05x of the reference: all paired strategies; no reference cell of the same seed "
        "in the same boot of the same machine for sogclr." in targets
    )


def test_a_grid_compared_with_another_shows_how_each_gain_over_the_reference_moved(tmp_path):
    _grid_file(tmp_path, STRATEGIES, seeds=[1, 2, 3])
    grids = _grid_file(tmp_path, STRATEGIES, seeds=[1, 2, 3], name="tiny-more", compare_with="tiny").parent
    results = tmp_path / "eval" / "results" / "grids"
    before = _write_results(results, np.random.default_rng(2))
    after = _write_results(results, np.random.default_rng(3), grid="tiny-more", macl_shift=1.5)
    (results / "tiny-more" / "macl" / "seed-3.json").unlink()  # an unfinished seed must not bias the gain
    del after["macl"][3]
    text = report_module.build_report(grids, results, tmp_path / "eval" / "report.md", tmp_path / "eval" / "plots")

    def mean(cells, strategy, seeds=(1, 2, 3)):
        return np.mean([cells[strategy][seed]["scores"]["avg"] for seed in seeds])

    gain_before = mean(before, "macl") - mean(before, "mnrl")
    gain_after = np.mean([after["macl"][s]["scores"]["avg"] - after["mnrl"][s]["scores"]["avg"] for s in (1, 2)])
    assert not np.isclose(gain_after, mean(after, "macl", (1, 2)) - mean(after, "mnrl"), atol=0.005)  # pairing shows
    row = (
        f"| macl | {mean(before, 'macl'):.2f} | {mean(after, 'macl', (1, 2)):.2f} | {gain_before:+.2f} | "
        f"{gain_after:+.2f} | {gain_after - gain_before:+.2f} | 3 / 2 | - | - |"
    )
    assert "### Against `tiny`" in text and row in text
    assert "| base-model |" not in text.split("### Against `tiny`")[1].split("###")[0]  # untrained: nothing to gain

    (grids / "tiny.yaml").unlink()
    with pytest.raises(FileNotFoundError, match="compare_with names 'tiny'"):
        report_module.build_report(grids, results, tmp_path / "eval" / "report.md", tmp_path / "eval" / "plots")


def test_the_committed_report_is_what_the_committed_results_rebuild(tmp_path):
    """eval/report.md is generated, never edited: rebuilding it from the committed result files gives it back."""
    committed = ROOT / "eval" / "report.md"
    assert committed.is_file(), "eval/report.md is missing: run python -m eval.report"
    rebuilt = report_module.build_report(
        report_module.GRIDS,
        report_module.RESULTS,
        tmp_path / "eval" / "report.md",
        tmp_path / "eval" / "results" / "plots",
    )
    assert rebuilt == committed.read_text()


def test_resumed_cells_count_for_step_time_only_and_one_resumed_after_its_last_step_has_none(tmp_path):
    grids = _grid_file(tmp_path, STRATEGIES, seeds=[1, 2, 3]).parent
    results = tmp_path / "eval" / "results" / "grids"
    cells = _write_results(results, np.random.default_rng(4))
    resumed = {2: {"resumed": True}, 3: {"resumed": True, "median_step_seconds": 1.5}}  # seed 2: no step timed
    for seed, training in resumed.items():
        record = {**cells["macl"][seed], "training": training, "wall_seconds": 5.0, "peak_memory_mib": 10.0}
        (results / "tiny" / "macl" / f"seed-{seed}.json").write_text(json.dumps(record))
    text = report_module.build_report(grids, results, tmp_path / "eval" / "report.md", tmp_path / "eval" / "plots")
    step = np.mean([1.02, 1.5])  # seeds 1 and 3; the reference's steps all take 1.0 s
    wall = cells["macl"][1]["wall_seconds"]  # seed 1 alone: the resumed seeds' wall times are partial
    assert f"| macl | {step:.3f} | {step:.3f} | {wall:.0f} | {wall / 100.0:.2f} | 1000 | 1.00 |" in text
    assert "left out of wall time and memory: macl seed 2, macl seed 3." in text
    assert "not for macl (1.260x)" in text


def _fixed_tau_grid(
    tmp_path: Path, rng: np.random.Generator, name: str, shifts: dict[str, float], extra=None, **grid_extra
) -> dict:
    """A grid with three fixed taus and two adaptive strategies (and ``extra`` ones); each strategy's scores are a
    shift plus noise."""
    strategies = {
        "base-model": {"train": False},
        "fixed-0.01": {"loss.temperature": 0.01},
        "fixed-0.05": {"loss.temperature": 0.05},
        "fixed-0.1": {"loss.temperature": 0.1},
        "macl": {"loss.temperature": "macl"},
        "cosine": {"loss.temperature": {"policy": "cosine", "tau_min": 0.03, "tau_max": 0.1}},
        **(extra or {}),
    }
    _grid_file(tmp_path, strategies, seeds=[1, 2, 3], name=name, reference="fixed-0.05", **grid_extra)
    results = tmp_path / "eval" / "results" / "grids"
    cells = {"base-model": {1: _record("base-model", 1, dict(zip(TASKS, [70.0, 80.0, 82.0], strict=True)), False)}}
    for strategy, shift in shifts.items():
        cells[strategy] = {}
        for seed in (1, 2, 3):
            values = [round(base + shift + rng.normal(0, 0.3), 4) for base in (71.0, 81.0, 82.5)]
            cells[strategy][seed] = _record(strategy, seed, dict(zip(TASKS, values, strict=True)))
    for strategy, seeds in cells.items():
        for seed, record in seeds.items():
            path = results / name / strategy / f"seed-{seed}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({**record, "grid": name}))
    return cells


def test_regret_against_the_fixed_tau_curve_matches_a_naive_computation(tmp_path):
    rng = np.random.default_rng(5)
    first = {"fixed-0.01": -0.8, "fixed-0.05": 0.4, "fixed-0.1": 0.0, "macl": 0.2, "cosine": 0.9}
    second = {"fixed-0.01": 0.6, "fixed-0.05": 0.0, "fixed-0.1": -1.0, "macl": -0.2, "cosine": 0.8}
    cells = _fixed_tau_grid(tmp_path, rng, "tiny", first)
    other = _fixed_tau_grid(tmp_path, rng, "tiny-other", second)
    (tmp_path / "eval" / "results" / "grids" / "tiny" / "cosine" / "seed-3.json").unlink()  # unfinished: paired
    del cells["cosine"][3]
    for strategy in ("macl", "cosine"):  # tau wanders; the last entry of a curve may log no tau
        for seed, record in cells[strategy].items():
            record["curve"] = [
                *({"step": step, "loss": 1.0, "tau_mean": float(rng.uniform(0.01, 0.5))} for step in (10, 20)),
                {"step": 20, "train_runtime": 9.0},
            ]
            path = tmp_path / "eval" / "results" / "grids" / "tiny" / strategy / f"seed-{seed}.json"
            path.write_text(json.dumps({**record, "grid": "tiny"}))
    grids = tmp_path / "grids"
    text = report_module.build_report(
        grids, tmp_path / "eval" / "results" / "grids", tmp_path / "eval" / "report.md", tmp_path / "eval" / "plots"
    )
    section = text.split("## tiny\n")[1].split("## tiny-other")[0]

    def avg(strategy, seed, found=cells):
        return found[strategy][seed]["scores"]["avg"]

    regret_table, per_seed = section.split("### Per seed")
    fixed = ["fixed-0.01", "fixed-0.05", "fixed-0.1"]
    means = {s: np.mean([avg(s, seed) for seed in cells[s]]) for s in cells if s != "base-model"}
    best = max(fixed, key=means.get)
    assert best == "fixed-0.05"
    order = sorted(means, key=lambda s: -means[s])
    for strategy in ("macl", "cosine", "fixed-0.1"):
        seeds = sorted(cells[strategy])
        regret = np.mean([avg(best, seed) - avg(strategy, seed) for seed in seeds])
        at_or_above = sum(avg(strategy, seed) >= avg(best, seed) for seed in seeds)
        median = np.mean([np.median([avg(f, seed) for f in fixed]) - avg(strategy, seed) for seed in seeds])
        row = f"| {regret:+.2f} | {at_or_above} / {len(seeds)} | {median:+.2f} | {order.index(strategy) + 1} |"
        assert row in regret_table.split(f"| {strategy} | ")[-1].splitlines()[0], strategy
        last = 2 if strategy == "fixed-0.1" else 1  # the last entry that logs a tau
        last_tau = np.mean([cells[strategy][seed]["curve"][last]["tau_mean"] for seed in seeds])
        kind = "0.1" if strategy == "fixed-0.1" else "adaptive"
        assert f"| {strategy} | {kind} | {last_tau:.3g} | " in regret_table, strategy
        # per seed: the score, and its regret on that seed against the best fixed tau by mean; "-" if unfinished
        shown = [
            f"{avg(strategy, seed):.2f} ({avg(best, seed) - avg(strategy, seed):+.2f})" if seed in seeds else "-"
            for seed in (1, 2, 3)
        ]
        assert f"| {strategy} | {' | '.join(shown)} |" in per_seed, strategy
    cosine_regret = np.mean([avg(best, s) - avg("cosine", s) for s in (1, 2)])
    assert cosine_regret < 0  # shifted 0.5 above the best fixed tau
    verdict = f"met by cosine ({cosine_regret:+.2f}, 2 of 2 seeds at or above). Provisional: `tiny` has 15 of 16"
    assert verdict in section
    assert "Best fixed tau: 0.05 (`fixed-0.05`)" in section
    assert "| macl | adaptive |" in section and "| fixed-0.1 | 0.1 |" in section
    for plot in ("tiny-fixed-tau.png", "tiny-regret-by-strategy.png"):
        assert (tmp_path / "eval" / "plots" / plot).read_bytes()[:4] == b"\x89PNG"
        assert f"(plots/{plot})" in section

    # across grids: cosine is at or above the best fixed tau in both, macl in neither
    across = text.split("## Adaptive temperatures against the best fixed tau, every grid")[1]
    other_best = max(fixed, key=lambda s: np.mean([avg(s, seed, other) for seed in (1, 2, 3)]))
    other_regret = np.mean([avg(other_best, s, other) - avg("cosine", s, other) for s in (1, 2, 3)])
    assert f"| cosine | {cosine_regret:+.2f} | {other_regret:+.2f} |" in across
    assert "One adaptive strategy at or above the best fixed tau in every grid: met by cosine." in across


def test_a_strategy_chosen_after_seed_one_counts_towards_no_target(tmp_path):
    """hardness wraps the policy that did best on seed 1's test scores: it is reported on seeds 2 and 3 only, and
    neither meets a target nor ties the verdict across grids, however far above the fixed taus it scores."""
    rng = np.random.default_rng(7)
    hardness = {"hardness": {"loss.temperature": {"policy": "hardness", "temperature": "macl"}}}
    shifts = {"fixed-0.01": -0.8, "fixed-0.05": 0.4, "fixed-0.1": 0.0, "macl": 0.0, "cosine": 0.1, "hardness": 2.0}
    cells = _fixed_tau_grid(tmp_path, rng, "tiny", shifts, hardness, post_hoc=["hardness"])
    other = _fixed_tau_grid(tmp_path, rng, "tiny-other", shifts, hardness, post_hoc=["hardness"])
    for found in (cells, other):  # cosine and macl tie, on every seed, so they share a rank
        for seed in (1, 2, 3):
            found["cosine"][seed]["scores"] = found["macl"][seed]["scores"]
    for name, found in (("tiny", cells), ("tiny-other", other)):
        for seed in (1, 2, 3):
            path = tmp_path / "eval" / "results" / "grids" / name / "cosine" / f"seed-{seed}.json"
            path.write_text(json.dumps({**found["cosine"][seed], "grid": name}))
    text = report_module.build_report(
        tmp_path / "grids", tmp_path / "eval" / "results" / "grids", tmp_path / "eval" / "report.md",
        tmp_path / "eval" / "plots",
    )  # fmt: skip
    section = text.split("## tiny\n")[1].split("## tiny-other")[0]

    def avg(strategy, seed):
        return cells[strategy][seed]["scores"]["avg"]

    later = [avg("fixed-0.05", seed) - avg("hardness", seed) for seed in (2, 3)]
    assert np.mean(later) < 0
    assert (
        f"- hardness, chosen after seeing seed 1's test scores, counts towards no target: regret {np.mean(later):+.2f} "
        "on seeds 2, 3, 2 of 2 at or above." in section
    )
    verdicts = [line for line in section.splitlines() if "(regret <=" in line]
    assert len(verdicts) == 2 and not any("hardness" in line for line in verdicts)
    assert "Provisional" not in section  # every cell has finished
    assert "| hardness | adaptive (chosen after seed 1) |" in section
    macl_rank = section.split("| macl | adaptive |")[1].splitlines()[0].rstrip(" |").rsplit("| ", 1)[1]
    cosine_rank = section.split("| cosine | adaptive |")[1].splitlines()[0].rstrip(" |").rsplit("| ", 1)[1]
    assert macl_rank == cosine_rank
    across = text.split("## Adaptive temperatures against the best fixed tau, every grid")[1]
    assert "| hardness (chosen after seed 1) |" in across
    assert "in every grid: met by hardness" not in across and "Provisional" not in across
    # the grid runs it on the later seeds only: its first seed would share the luck that chose it
    scheduled = grid_module.cells(grid_module.load_grid(tmp_path / "grids" / "tiny.yaml"))
    assert [c.seed for c in scheduled if c.strategy == "hardness"] == [2, 3]
    regret_row = section.split("| hardness | adaptive (chosen after seed 1) |")[1].splitlines()[0]
    assert "| 2 / 2 |" in regret_row  # seeds 2 and 3, both at or above the best fixed tau
    with pytest.raises(RecipeError, match=r"post_hoc names \['hardnes'\], which are not strategies"):
        grid_module.load_grid(_grid_file(tmp_path, STRATEGIES, post_hoc=["hardnes"]))


def test_cells_run_beside_other_work_are_named_in_the_cost_section(tmp_path):
    rng = np.random.default_rng(3)
    cells = _fixed_tau_grid(tmp_path, rng, "tiny", {"fixed-0.01": 0.0, "fixed-0.05": 0.0, "fixed-0.1": 0.0})
    busy = tmp_path / "eval" / "results" / "grids" / "tiny" / "fixed-0.1" / "seed-2.json"
    busy.write_text(json.dumps({**cells["fixed-0.1"][2], "grid": "tiny", "load_average": [4.1, 3.9, 3.6]}))
    quiet = tmp_path / "eval" / "results" / "grids" / "tiny" / "fixed-0.1" / "seed-1.json"
    quiet.write_text(json.dumps({**cells["fixed-0.1"][1], "grid": "tiny", "load_average": [2.0, 2.1, 2.4]}))
    text = report_module.build_report(
        tmp_path / "grids", tmp_path / "eval" / "results" / "grids", tmp_path / "eval" / "report.md",
        tmp_path / "eval" / "plots",
    )  # fmt: skip
    assert "so their times may be inflated: fixed-0.1 seed 2 (3.6)." in text


def test_while_a_fixed_tau_misses_a_seed_every_regret_is_read_on_the_seeds_all_fixed_taus_finished():
    """fixed-0.01 has not run seed 2: the best fixed tau, the regrets, the medians, the ranks and the verdicts are
    all read on seed 1. Pairing macl's seed 2 with the best tau's would call macl above a curve that fixed-0.02
    tops on that seed."""
    taus = {"fixed-0.01": 0.01, "fixed-0.02": 0.02, "fixed-0.05": 0.05, "fixed-0.1": 0.1}
    grid = {
        "name": "partial",
        "metric": "sts",
        "seeds": [1, 2],
        "strategies": {
            **{name: {"loss.temperature": tau} for name, tau in taus.items()},
            "macl": {"loss.temperature": "macl"},
            "learnable": {"loss.temperature": "learnable"},
        },
    }
    scores = {
        "fixed-0.01": {1: 70.0},
        "fixed-0.02": {1: 78.0, 2: 80.0},
        "fixed-0.05": {1: 79.0, 2: 77.0},
        "fixed-0.1": {1: 77.0, 2: 77.0},
        "macl": {1: 78.5, 2: 78.5},
        "learnable": {2: 81.0},  # no seed the curve has: no regret yet
    }
    found = {
        name: {
            seed: {"trained": True, "scores": {"avg": value}, "training": {"median_step_seconds": 1.0}}
            for seed, value in by_seed.items()
        }
        for name, by_seed in scores.items()
    }
    curve = report_module.regrets(grid, found, "avg", done=10, total=12)
    best = max(taus, key=lambda name: scores[name][1])  # seed 1 is the only seed every fixed tau has
    assert (curve.best, curve.tau) == (best, 0.05)
    median = float(np.median([scores[name][1] for name in taus]))
    expected = {
        name: (scores[best][1] - scores[name][1], median - scores[name][1])
        for name in [*taus, "macl"]  # learnable has only seed 2
    }
    got = {row.strategy: (row.best, row.median) for row in curve.rows}
    assert got.keys() == expected.keys()
    assert all(got[name] == pytest.approx(expected[name]) for name in expected), (got, expected)
    assert all(row.seeds == 1 and list(row.best_per_seed) == [1] for row in curve.rows)
    ranked = sorted(expected, key=lambda name: expected[name][0])
    assert [row.strategy for row in sorted(curve.rows, key=lambda row: row.rank)] == ranked
    verdicts = report_module.regret_targets(grid, curve, "avg")
    assert "not met; the closest is macl (+0.50, 0 of 1 seed at or above)" in verdicts[1]
    table = report_module.per_seed_table(grid, found, curve, "avg")
    assert "| fixed-0.02 | 78.00 (+1.00) | 80.00 |" in table  # seed 2 has no curve yet: the score alone
    assert "| learnable | - | 81.00 |" in table
    # before two fixed taus share a seed there is no curve, and grid 1's "+0.3 over the reference" is not its target
    early = {"fixed-0.05": found["fixed-0.05"], "macl": found["macl"]}
    assert report_module.regrets({**grid, "reference": "fixed-0.05"}, early, "avg", done=4, total=12) is None
    lines = report_module.targets({**grid, "reference": "fixed-0.05"}, early, "avg", has_curve=False)
    assert "- The fixed-tau curve and its targets: once two fixed taus share a finished seed." in lines
    assert not any("target +0.3" in line for line in lines)


@pytest.mark.parametrize("name", ["nli-tau-regret", "scifact-tau-regret"])
def test_the_strategy_chosen_after_seed_one_wraps_the_lowest_seed_one_regret(name):
    """The post-hoc hardness strategy wraps the adaptive policy (as the grid sets it) with the lowest seed-1 regret
    against that seed's best fixed tau, read from the result files, and the description quotes that regret."""
    grid = grid_module.load_grid(ROOT / "eval" / "grids" / f"{name}.yaml")
    results = ROOT / "eval" / "results" / "grids" / name
    metric = report_module.SUMMARY[grid["metric"]]

    def seed_one(strategy):
        return json.loads((results / strategy / "seed-1.json").read_text())["scores"][metric]

    best = max(seed_one(strategy) for strategy in report_module.fixed_temperatures(grid))
    later = set(grid["post_hoc"])
    candidates = [s for s in grid["strategies"] if report_module.is_adaptive(s) and s not in later]
    regrets = {strategy: best - seed_one(strategy) for strategy in candidates}
    chosen = min(regrets, key=regrets.get)
    (wrapper,) = later
    assert (
        grid["strategies"][wrapper]["loss.temperature"]["temperature"]
        == (grid["strategies"][chosen]["loss.temperature"])
    )
    assert f"(regret {regrets[chosen]:+.2f})." in " ".join(grid["description"].split()).split("Seed 1 chose")[1]
