"""Run a temperature-strategy grid: strategies x seeds over one recipe, one result file per cell, resumable.

    TEMPNLP_MIRROR=../shared/mirror python -m eval.grid eval/grids/nli-minilm.yaml [--only mnrl,macl] [--seeds 1]

A grid file names a recipe, dotted ``settings`` shared by every cell (the equal budget), ``seeds``, a
``reference`` strategy and ``strategies``: each a mapping of dotted overrides, or ``{train: false}`` for the
untrained base model; ``compare_with`` optionally names another grid that the report sets beside this one.
Every cell runs ``tempnlp train`` (or ``tempnlp eval sts`` / ``eval retrieval`` for the base model) in a fresh
process, so its wall time and peak memory are its own, then writes
``eval/results/grids/<grid>/<strategy>/seed-<n>.json`` atomically. A cell whose file exists is skipped; a cell
interrupted after a checkpoint resumes from it (its wall time and peak memory then cover the resumed part only,
so the report counts only its step time), and a run that finished before its file was written is recorded
without training again, provided it ran the cell's recipe as the grid now states it. Stop the grid at any time
and run the same command again, on this machine or another with the same checkout. To run a finished cell again,
delete its result file and its run folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tempnlp._io import write_json_atomic
from tempnlp.train.recipe import RecipeError, load_recipe, parse_yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "eval" / "results" / "grids"
RUNS = ROOT / "runs" / "grids"
GRID_KEYS = {
    *("name", "description", "recipe", "variant", "settings", "seeds"),
    *("reference", "compare_with", "strategies", "metric", "post_hoc"),
}


@dataclass
class Cell:
    grid: str
    strategy: str
    seed: int
    overrides: list[str]
    train: bool

    @property
    def result_path(self) -> Path:
        return RESULTS / self.grid / self.strategy / f"seed-{self.seed}.json"

    @property
    def run_dir(self) -> Path:
        return RUNS / self.grid / self.strategy / f"seed-{self.seed}"

    @property
    def training_overrides(self) -> list[str]:
        """What ``tempnlp train`` is told on top of the recipe: the grid's settings, the strategy's, the seed."""
        return [*self.overrides, f"seed={self.seed}"]


def _dump(value: Any) -> str:
    """A ``--set`` value: JSON is valid YAML flow syntax, so lists and mappings pass through unchanged."""
    return "null" if value is None else json.dumps(value) if not isinstance(value, str) else value


def load_grid(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    grid = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    unknown = set(grid) - GRID_KEYS
    if unknown:
        raise RecipeError(f"{path}: unknown keys {sorted(unknown)}; a grid has {sorted(GRID_KEYS)}.")
    if grid.get("reference") not in grid.get("strategies", {}):
        raise RecipeError(f"{path}: reference {grid.get('reference')!r} is not one of the strategies.")
    unknown = post_hoc(grid) - set(grid.get("strategies", {}))
    if unknown:
        raise RecipeError(f"{path}: post_hoc names {sorted(unknown)}, which are not strategies of the grid.")
    grid.setdefault("metric", "sts")
    return grid


def post_hoc(grid: dict[str, Any]) -> set[str]:
    """Strategies the grid chose after seeing its first seed's test scores (``post_hoc``): reported, but never
    counted towards a target, and run on the later seeds only."""
    return set(grid.get("post_hoc") or [])


def expected_seeds(grid: dict[str, Any], strategy: str) -> list[int]:
    """The seeds a strategy runs: the first only for the untrained model (its scores do not depend on a seed),
    all but the first for a post_hoc strategy (that seed would share the luck that chose it), else every seed."""
    seeds = [int(seed) for seed in grid["seeds"]]
    if (grid["strategies"][strategy] or {}).get("train", True) is False:
        return seeds[:1]
    return seeds[1:] if strategy in post_hoc(grid) else seeds


def cells(grid: dict[str, Any]) -> list[Cell]:
    """Every cell, validated: a typo in any strategy stops the grid before the first cell runs."""
    shared = [f"{key}={_dump(value)}" for key, value in (grid.get("settings") or {}).items()]
    out = []
    for seed in grid["seeds"]:
        for name, strategy in grid["strategies"].items():
            strategy = dict(strategy or {})
            train = strategy.pop("train", True)
            if seed not in expected_seeds(grid, name):
                continue
            overrides = [*shared, *(f"{key}={_dump(value)}" for key, value in strategy.items())]
            load_recipe(ROOT / grid["recipe"], overrides, grid.get("variant"))
            out.append(Cell(grid["name"], name, int(seed), overrides, bool(train)))
    return out


def _command(grid: dict[str, Any], cell: Cell) -> list[str]:
    base = [sys.executable, "-m", "tempnlp.cli"]
    # the untrained cell reads the shared settings too: model.name or evaluation.* there apply to it as well
    recipe, _ = load_recipe(ROOT / grid["recipe"], cell.overrides, grid.get("variant"))
    if cell.train:
        command = [*base, "train", str(ROOT / grid["recipe"]), "--output-dir", str(cell.run_dir)]
        if grid.get("variant"):
            command += ["--variant", grid["variant"]]
        command += [item for override in cell.training_overrides for item in ("--set", override)]
        if any(cell.run_dir.glob("checkpoint-*")) and not (cell.run_dir / "results.json").exists():
            command.append("--resume")
        return command
    if grid["metric"] == "retrieval":
        from tempnlp.data.sources import beir_folder, locate

        spec = recipe.evaluation.retrieval
        folder = beir_folder(locate(spec.dataset, "beir", spec.split))
        command = [*base, "eval", "retrieval", recipe.model.name, "--data", str(folder), "--split", spec.split,
                   "--output-dir", str(cell.run_dir), "--batch-size", str(spec.batch_size)]  # fmt: skip
        return [*command, "--ignore-identical-ids"] if spec.ignore_identical_ids else command
    sts = recipe.evaluation.sts
    command = [*base, "eval", "sts", recipe.model.name, "--output-dir", str(cell.run_dir)]
    command += ["--protocol", sts.protocol, "--batch-size", str(sts.batch_size)]
    return [*command, "--tasks", ",".join(sts.tasks)] if sts.tasks else command


def _cell_recipe(grid: dict[str, Any], cell: Cell) -> dict[str, Any]:
    """The recipe the cell trains, as its run records it (``results.json``'s ``recipe``)."""
    recipe, _ = load_recipe(ROOT / grid["recipe"], cell.training_overrides, grid.get("variant"))
    return json.loads(json.dumps(recipe.to_dict()))


def _record(grid: dict[str, Any], cell: Cell, seconds: float, peak_mib: float) -> dict[str, Any]:
    record: dict[str, Any] = {"grid": grid["name"], "strategy": cell.strategy, "seed": cell.seed, "trained": cell.train}
    if cell.train:
        results = json.loads((cell.run_dir / "results.json").read_text())
        after = results["scores"]["after"]
        histograms = cell.run_dir / "tau_histograms.json"
        record.update(
            recipe=results["recipe"],
            versions=results["versions"],
            machine=results.get("machine"),
            boot_id=results.get("boot_id"),
            training=results["train"],
            curve=results["curve"],
            peak_memory_mib=results["peak_memory"]["host_rss_mib"],
            tau_histogram=json.loads(histograms.read_text()) if histograms.is_file() else None,
        )
    else:
        from tempnlp.provenance import boot_id, machine_description, package_versions

        name = "retrieval.json" if grid["metric"] == "retrieval" else "sts.json"
        after = {grid["metric"]: json.loads((cell.run_dir / name).read_text())}
        record.update(
            versions=package_versions(), machine=machine_description(), boot_id=boot_id(), peak_memory_mib=peak_mib
        )
    if grid["metric"] == "retrieval":
        record["scores"] = {key: round(value, 4) for key, value in after["retrieval"]["scores"].items()}
    else:
        record["scores"] = {key: round(value, 4) for key, value in after["sts"]["scores"].items()}
        record["scores"]["avg"] = round(sum(after["sts"]["scores"].values()) / len(after["sts"]["scores"]), 4)
    record["wall_seconds"] = round(seconds, 1)
    # the machine's load over the last 1, 5 and 15 minutes as the cell ends: the cell's own threads count about
    # 2, more says something else ran beside it and its times are inflated
    record["load_average"] = [round(value, 2) for value in os.getloadavg()]
    return record


def run_cell(grid: dict[str, Any], cell: Cell, keep_run: bool = False) -> dict[str, Any]:
    finished = cell.run_dir / "results.json"
    if cell.train and finished.is_file():
        # the run finished but its cell file was never written (the grid stopped in between): record it, since
        # training again would be refused (the folder holds a finished run) and would waste the run
        results = json.loads(finished.read_text())
        if results.get("recipe") != _cell_recipe(grid, cell):
            raise RuntimeError(
                f"cell {cell.strategy} seed {cell.seed}: {cell.run_dir} holds a finished run of another recipe than "
                "the grid now gives this cell, so it is not recorded as the cell's result. Move or delete that "
                "folder and run the grid again to train the cell."
            )
        seconds, peak_mib = results["wall_seconds"], 0.0
    else:
        command = _command(grid, cell)
        cell.run_dir.parent.mkdir(parents=True, exist_ok=True)
        log = cell.run_dir.parent / f"seed-{cell.seed}.log"
        start = time.perf_counter()
        with log.open("a", encoding="utf-8") as handle:
            handle.write("$ " + " ".join(command) + "\n")
            handle.flush()
            process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT)
            _, status, usage = os.wait4(process.pid, 0)  # this child's own resource usage, peak memory included
            process.returncode = os.waitstatus_to_exitcode(status)
        seconds, peak_mib = time.perf_counter() - start, round(usage.ru_maxrss / 1024, 1)
        if process.returncode != 0:
            raise RuntimeError(f"cell {cell.strategy} seed {cell.seed} failed (exit {process.returncode}); see {log}")
    record = _record(grid, cell, seconds, peak_mib)
    write_json_atomic(cell.result_path, record)
    if not keep_run:
        shutil.rmtree(cell.run_dir / "model", ignore_errors=True)
        for checkpoint in cell.run_dir.glob("checkpoint-*"):
            shutil.rmtree(checkpoint, ignore_errors=True)
    return record


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.grid", description=__doc__.split("\n\n")[0])
    parser.add_argument("grid", help="a grid file, e.g. eval/grids/nli-minilm.yaml")
    parser.add_argument("--only", help="comma-separated strategies to run (default: all)")
    parser.add_argument("--seeds", help="comma-separated seeds to run (default: the grid's)")
    parser.add_argument("--dry-run", action="store_true", help="list the cells and their state, run nothing")
    parser.add_argument("--keep-runs", action="store_true", help="keep each cell's model and checkpoints")
    args = parser.parse_args(argv)
    grid = load_grid(args.grid)
    selected = cells(grid)
    if args.only:
        wanted = {name.strip() for name in args.only.split(",")}
        unknown = wanted - set(grid["strategies"])
        if unknown:
            parser.error(f"--only: unknown strategies {sorted(unknown)}; the grid has {', '.join(grid['strategies'])}")
        selected = [cell for cell in selected if cell.strategy in wanted]
    if args.seeds:
        seeds = {int(seed) for seed in args.seeds.split(",")}
        selected = [cell for cell in selected if cell.seed in seeds]
    for number, cell in enumerate(selected, start=1):
        label = f"[{number}/{len(selected)}] {grid['name']} {cell.strategy} seed {cell.seed}"
        if cell.result_path.is_file():
            print(f"{label}: done ({_shown(cell.result_path)})", flush=True)
            continue
        if args.dry_run:
            print(f"{label}: to run", flush=True)
            continue
        print(f"{label}: running", flush=True)
        record = run_cell(grid, cell, keep_run=args.keep_runs)
        score = record["scores"].get("avg", record["scores"].get("ndcg@10"))
        print(f"{label}: {score:.2f} in {record['wall_seconds']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
