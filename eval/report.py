"""Build ``eval/report.md`` and its plots from the grids' result files; never typed by hand.

    python -m eval.report

For every grid in ``eval/grids/``: mean +- std over seeds per task and on average; the difference to the
grid's reference strategy with a paired Wilcoxon signed-rank test over (seed, task) pairs and the count of seeds
that gain or lose; seconds per training step, wall time and peak memory against the reference; and PNG plots
(temperature over training, learned per-sample temperatures, score against wall time). The output depends only
on the result files, so running the command again on the same files reproduces the report and the plots byte
for byte.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from eval.grid import ROOT, expected_seeds, load_grid, post_hoc
from tempnlp._io import write_bytes_atomic, write_text_atomic
from tempnlp._plots import figure_png, pyplot

GRIDS = ROOT / "eval" / "grids"
RESULTS = ROOT / "eval" / "results" / "grids"
REPORT = ROOT / "eval" / "report.md"
PLOTS = ROOT / "eval" / "results" / "plots"
ORDER = [  # grids 1, 2, 3 and 4
    *("nli-minilm", "wiki-minilm-1ep", "wiki-minilm-5ep", "scifact-minilm"),
    *("nli-tau-regret", "scifact-tau-regret"),
]
# Strategies whose temperature is not one fixed number, and their variants (isogclr-queue). SogCLR and DCL change
# the objective at a fixed tau: they are compared like every strategy, but are not candidates for "best adaptive".
ADAPTIVE = {
    *("learnable", "macl", "dystress", "isogclr", "tempnet", "individual"),
    *("global-dro", "cosine", "cooldown", "hardness"),
}
# The gain over the best fixed tau that counts as worth having, per metric (x 100): grid 4's stretch targets.
STRETCH = {"sts": 0.3, "retrieval": 1.0}
# A 15-minute load average above this, as a cell ends, says something ran beside the cell's two threads.
BUSY_LOAD = 3.0
# The score a grid's verdicts are read on, per metric.
SUMMARY = {"sts": "avg", "retrieval": "ndcg@10"}


def is_adaptive(strategy: str) -> bool:
    return any(strategy == name or strategy.startswith(f"{name}-") for name in ADAPTIVE)


def fixed_temperatures(grid: dict[str, Any]) -> dict[str, float]:
    """The strategies that set nothing but ``loss.temperature: <number>`` on the grid's shared loss, with that number:
    the points of the grid's fixed-tau curve (a strategy that also changes the loss is not on it)."""
    found = {}
    for name, strategy in grid["strategies"].items():
        value = (strategy or {}).get("loss.temperature")
        if len(strategy or {}) == 1 and isinstance(value, int | float) and not isinstance(value, bool):
            found[name] = float(value)
    return dict(sorted(found.items(), key=lambda item: item[1]))


def load_results(results: Path, grid: dict[str, Any]) -> dict[str, dict[int, dict[str, Any]]]:
    """``{strategy: {seed: record}}`` for the cells that have finished, in the grid's strategy and seed order."""
    found: dict[str, dict[int, dict[str, Any]]] = {}
    for strategy in grid["strategies"]:
        folder = results / grid["name"] / strategy
        paths = [folder / f"seed-{seed}.json" for seed in expected_seeds(grid, strategy)]
        records = [json.loads(path.read_text()) for path in paths if path.is_file()]  # none the grid does not run
        if records:
            found[strategy] = {record["seed"]: record for record in records}
    return found


def _metrics(found: dict[str, dict[int, dict[str, Any]]]) -> list[str]:
    for cells in found.values():
        for record in cells.values():
            return list(record["scores"])
    return []


def _mean_std(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"


def score_table(found: dict[str, dict[int, dict[str, Any]]], metrics: list[str]) -> list[str]:
    header = ["strategy", "seeds", *map(_task_label, metrics)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for strategy, cells in found.items():
        row = [strategy, str(len(cells))]
        row += [_mean_std([cell["scores"][metric] for cell in cells.values()]) for metric in metrics]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _trained(cells: dict[int, dict[str, Any]]) -> bool:
    """Whether a strategy's cells are trained runs (the untrained model is one cell with no seed to pair)."""
    return bool(next(iter(cells.values()))["trained"])


def paired_differences(
    found: dict[str, dict[int, dict[str, Any]]], strategy: str, reference: str, tasks: list[str]
) -> np.ndarray:
    """Strategy minus reference, one value per (seed, task) both ran; an untrained model (one cell, no seed)
    is compared with the reference's mean over seeds, one value per task."""
    mine, theirs = found[strategy], found[reference]
    if not _trained(mine):
        only = next(iter(mine.values()))
        return np.array([only["scores"][t] - np.mean([c["scores"][t] for c in theirs.values()]) for t in tasks])
    seeds = sorted(set(mine) & set(theirs))
    return np.array([mine[s]["scores"][t] - theirs[s]["scores"][t] for s in seeds for t in tasks])


def _differences_by_strategy(found: dict[str, dict[int, dict[str, Any]]], reference: str, tasks: list[str]):
    """(strategy, paired differences to the reference) for every other strategy that shares a seed with it."""
    for strategy in found:
        if strategy == reference:
            continue
        differences = paired_differences(found, strategy, reference, tasks)
        if differences.size:
            yield strategy, differences


def _task_label(task: str) -> str:
    return task.replace("STSBenchmark", "STS-B")


def _p_value(differences: np.ndarray) -> float | None:
    if differences.size < 2 or not np.any(differences):
        return None
    return float(stats.wilcoxon(differences).pvalue)


def difference_table(found: dict[str, dict[int, dict[str, Any]]], reference: str, tasks: list[str], summary: str):
    lines = [
        f"| strategy | Δ {summary} | pairs | better / worse | Wilcoxon p | seeds better / worse |",
        "|---|---|---|---|---|---|",
    ]
    for strategy, differences in _differences_by_strategy(found, reference, tasks):
        # the summary paired by seed: a strategy missing a seed is not compared with that seed's reference
        by_seed = paired_differences(found, strategy, reference, [summary])
        p_value = _p_value(differences)
        seeds = (
            f"{int((by_seed > 0).sum())} / {int((by_seed < 0).sum())}"
            if _trained(found[strategy])
            else "-"  # one untrained cell against the reference's mean: no seeds to count
        )
        lines.append(
            f"| {strategy} | {by_seed.mean():+.2f} | {differences.size} | "
            f"{int((differences > 0).sum())} / {int((differences < 0).sum())} | "
            f"{'n/a' if p_value is None else f'{p_value:.3g}'} | {seeds} |"
        )
    return lines


def per_task_table(found: dict[str, dict[int, dict[str, Any]]], reference: str, tasks: list[str]) -> list[str]:
    """Where each strategy's difference to the reference comes from: the mean paired Δ on every task."""
    header = ["strategy", *map(_task_label, tasks)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for strategy, differences in _differences_by_strategy(found, reference, tasks):
        per_task = differences.reshape(-1, len(tasks)).mean(axis=0)  # rows are seeds, columns tasks
        lines.append(f"| {strategy} | " + " | ".join(f"{d:+.2f}" for d in per_task) + " |")
    return lines


def _resumed(cell: dict[str, Any]) -> bool:
    return bool(cell["trained"] and cell["training"].get("resumed"))


def _step_seconds(cell: dict[str, Any]) -> float | None:
    """The median step time; None for an untrained cell, or a cell resumed after its last step (no step timed)."""
    return cell["training"].get("median_step_seconds") if cell["trained"] else None


def _mean_cost(cells: dict[int, dict[str, Any]], read) -> float | None:
    values = [value for value in map(read, cells.values()) if value is not None]
    return float(np.mean(values)) if values else None


def _cost_ratio(found: dict[str, dict[int, dict[str, Any]]], strategy: str, reference: str, read) -> float | None:
    """The mean over shared seeds of the strategy's cost over the reference's in the same seed, where both cells
    ran in one boot of one machine (as recorded: a machine description names a CPU model, not a host, and one
    description ran at different speeds across sessions; cells that recorded no boot or no machine are paired on
    what they recorded, which the report says), so machines that differ between seeds cancel out. The untrained
    model (one cell) is set against the reference's mean."""
    mine, theirs = found[strategy], found.get(reference, {})
    if not _trained(mine):
        value, base = _mean_cost(mine, read), _mean_cost(theirs, read)
        return value / base if value is not None and base else None
    same_host = [seed for seed in sorted(set(mine) & set(theirs)) if _host(mine[seed]) == _host(theirs[seed])]
    pairs = [(read(mine[seed]), read(theirs[seed])) for seed in same_host]
    ratios = [value / base for value, base in pairs if value is not None and base]
    return float(np.mean(ratios)) if ratios else None


def _host(cell: dict[str, Any]) -> tuple[str | None, str | None]:
    return cell.get("machine"), cell.get("boot_id")


def _machines(found: dict[str, dict[int, dict[str, Any]]]) -> str:
    counts: dict[str, int] = {}
    boots: dict[str, list[str]] = {}  # per machine, the boot of every cell that recorded one
    for cells in found.values():
        for cell in cells.values():
            machine = cell.get("machine") or "not recorded (cells run before machines were recorded)"
            counts[machine] = counts.get(machine, 0) + 1
            if cell.get("boot_id"):
                boots.setdefault(machine, []).append(cell["boot_id"])
    described = []
    for machine, count in sorted(counts.items()):
        text = f"{machine}: {count} cell{'s' * (count != 1)}"
        if machine in boots:
            distinct = len(set(boots[machine]))
            text += f" ({len(boots[machine])} of them in {distinct} recorded boot{'s' * (distinct != 1)})"
        described.append(text)
    return "; ".join(described)


def cost_table(found: dict[str, dict[int, dict[str, Any]]], reference: str) -> list[str]:
    # A resumed cell's wall time and peak memory cover its last process only: they count for nothing here.
    costs = {
        "step": _step_seconds,
        "wall": lambda cell: None if _resumed(cell) else cell["wall_seconds"],
        "memory": lambda cell: None if _resumed(cell) else cell["peak_memory_mib"],
    }

    def shown(strategy: str, kind: str, digits: int, ratio_digits: int) -> str:
        value = _mean_cost(found[strategy], costs[kind])
        if value is None:
            return "- | -"
        ratio = _cost_ratio(found, strategy, reference, costs[kind])
        return f"{value:.{digits}f} | " + ("-" if ratio is None else f"{ratio:.{ratio_digits}f}")

    lines = [
        "| strategy | median s / step | × reference | wall time (s) | × reference | peak RSS (MiB) | × reference |",
        "|---|---|---|---|---|---|---|",
    ]
    for strategy in found:
        lines.append(
            f"| {strategy} | {shown(strategy, 'step', 3, 3)} | {shown(strategy, 'wall', 0, 2)} | "
            f"{shown(strategy, 'memory', 0, 2)} |"
        )
    resumed = [f"{s} seed {seed}" for s, cells in found.items() for seed, cell in cells.items() if _resumed(cell)]
    if resumed:
        lines += ["", f"Resumed after an interruption, so left out of wall time and memory: {', '.join(resumed)}."]
    busy = [
        f"{s} seed {seed} ({cell['load_average'][2]:.1f})"
        for s, cells in found.items()
        for seed, cell in cells.items()
        if cell.get("load_average") and cell["load_average"][2] > BUSY_LOAD
    ]
    if busy:
        lines += [
            "",
            f"Ran beside other work (load over the last 15 minutes above {BUSY_LOAD:g} as the cell ended, where the "
            f"cell's own threads count about 2), so their times may be inflated: {', '.join(busy)}.",
        ]
    lines += ["", f"Machines: {_machines(found)}."]
    return lines


def targets(
    grid: dict[str, Any], found: dict[str, dict[int, dict[str, Any]]], summary: str, has_curve: bool
) -> list[str]:
    """The targets of grids 1-3 against the reference; with a fixed-tau curve the regret targets replace the gain
    over the reference."""
    reference = grid["reference"]
    lines = []
    trained = [s for s in found if _trained(found[s])]
    averages = {s: float(np.mean([c["scores"][summary] for c in found[s].values()])) for s in found}
    adaptive = [s for s in trained if is_adaptive(s)]
    gains = {s: paired_differences(found, s, reference, [summary]) for s in adaptive} if reference in found else {}
    gains = {s: float(d.mean()) for s, d in gains.items() if d.size}  # paired: unfinished seeds do not count
    if fixed_temperatures(grid) and not has_curve:
        lines.append("- The fixed-tau curve and its targets: once two fixed taus share a finished seed.")
    elif gains and not has_curve:
        best = max(gains, key=gains.get)
        gain = gains[best]
        verdict = "met" if gain >= 0.3 else "not met"
        lines.append(
            f"- Best adaptive strategy: **{best}**, {gain:+.2f} {summary} over `{reference}` (target +0.3: {verdict})."
        )
    base = [s for s in found if not _trained(found[s])]
    if base and trained:
        above = [s for s in trained if averages[s] > averages[base[0]]]
        lines.append(
            f"- Above the untrained model's {averages[base[0]]:.2f}: {len(above)} of {len(trained)} strategies."
        )
    if reference in found and len(trained) > 1:
        ratios = {s: _cost_ratio(found, s, reference, _step_seconds) for s in trained if s != reference}
        unpaired = [s for s, ratio in ratios.items() if ratio is None]
        ratios = {s: ratio for s, ratio in ratios.items() if ratio is not None}
        slow = [f"{s} ({ratios[s]:.3f}x)" for s in ratios if ratios[s] > 1.05]
        if slow:
            verdict = "not for " + ", ".join(slow)
        elif ratios:
            verdict = "all paired strategies" if unpaired else "all strategies"
        else:
            verdict = "not measured"
        if unpaired:
            verdict += (
                f"; no reference cell of the same seed in the same boot of the same machine for {', '.join(unpaired)}"
            )
        lines.append(f"- Time per step within 1.05x of the reference: {verdict}.")
    return lines


@dataclass
class Regret:
    """One strategy against the fixed-tau curve of its grid: regret is the fixed tau's score minus the strategy's,
    paired by seed (positive: the strategy scores below), so ``<= 0`` means at or above."""

    strategy: str
    mean: float
    spread: str
    best: float  # against the fixed tau with the best mean over seeds, per seed
    best_per_seed: dict[int, float]
    seeds_at_or_above: int
    seeds: int
    median: float  # against the median of the fixed taus' scores, per seed
    rank: int
    last_tau: float | None  # the mean tau of the last logged step, averaged over the same seeds


@dataclass
class Curve:
    """A grid's fixed-tau curve: its best fixed strategy and tau, every trained strategy's regret against it, and
    how many of the grid's cells have finished (a verdict on an unfinished grid is provisional)."""

    best: str
    tau: float
    rows: list[Regret]
    done: int
    total: int

    @property
    def complete(self) -> bool:
        return self.done == self.total

    def provisional(self, name: str) -> str:
        return "" if self.complete else f" Provisional: `{name}` has {self.done} of {self.total} cells."


def curve_seeds(grid: dict[str, Any], found: dict[str, dict[int, dict[str, Any]]]) -> list[int]:
    """The seeds every fixed tau of the grid has finished: the fixed-tau curve and every regret are read on these,
    so that a fixed tau missing a seed cannot sit above the best one on the seeds it has."""
    fixed = [name for name in fixed_temperatures(grid) if name in found]
    return sorted(set.intersection(*(set(found[name]) for name in fixed))) if fixed else []


def _mean_last_tau(records: list[dict[str, Any]]) -> float | None:
    """The mean temperature of the last logged step's batch, averaged over the records; None if one logged none.
    Per-sample and per-pair policies log the mean over the batch's temperatures."""
    last = []
    for record in records:
        logged = [entry["tau_mean"] for entry in record.get("curve") or [] if "tau_mean" in entry]
        if not logged:
            return None
        last.append(logged[-1])
    return float(np.mean(last))


def regrets(
    grid: dict[str, Any], found: dict[str, dict[int, dict[str, Any]]], summary: str, done: int, total: int
) -> Curve | None:
    """The grid's fixed-tau curve and every trained strategy's regret against it, or None without two fixed taus
    that share a finished seed. Every number is read on the seeds every fixed tau has finished."""
    fixed = {name: tau for name, tau in fixed_temperatures(grid).items() if name in found}
    complete = curve_seeds(grid, found)
    if len(fixed) < 2 or not complete:
        return None

    def score(strategy: str, seed: int) -> float:
        return found[strategy][seed]["scores"][summary]

    # the best fixed tau by its mean over those seeds, as a user tuning tau on them would pick it
    best = max(fixed, key=lambda name: (np.mean([score(name, seed) for seed in complete]), -fixed[name]))
    medians = {seed: float(np.median([score(name, seed) for name in fixed])) for seed in complete}
    rows = []
    for strategy in (s for s in found if _trained(found[s])):
        shared = [seed for seed in complete if seed in found[strategy]]
        if not shared:
            continue  # no seed to pair with the fixed-tau curve yet
        # rounded so that float noise in a difference of equal scores does not decide "at or above"
        against_best = [round(score(best, seed) - score(strategy, seed), 9) for seed in shared]
        against_median = [round(medians[seed] - score(strategy, seed), 9) for seed in shared]
        rows.append(
            Regret(
                strategy=strategy,
                mean=float(np.mean([score(strategy, seed) for seed in shared])),
                spread=_mean_std([score(strategy, seed) for seed in shared]),
                best=float(np.mean(against_best)),
                best_per_seed=dict(zip(shared, against_best, strict=True)),
                seeds_at_or_above=sum(value <= 0 for value in against_best),
                seeds=len(shared),
                median=float(np.mean(against_median)),
                rank=0,
                last_tau=_mean_last_tau([found[strategy][seed] for seed in shared]),
            )
        )
    # ranked by regret, which is paired by seed, so a strategy with fewer seeds is compared on its own seeds
    ranks = stats.rankdata([round(row.best, 9) for row in rows], method="min").astype(int)
    for row, rank in zip(rows, ranks, strict=True):
        row.rank = int(rank)
    return Curve(best, fixed[best], rows, done, total)


def _tau_text(tau: float) -> str:
    return f"{tau:g}"


def regret_table(grid: dict[str, Any], curve: Curve, summary: str) -> list[str]:
    tau, rows = curve.tau, curve.rows
    fixed = fixed_temperatures(grid)
    lines = [
        f"| strategy | tau | tau at the last step | {summary} | regret vs best fixed tau ({_tau_text(tau)}) | "
        "seeds at or above it | regret vs median fixed tau | rank |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        kind = "adaptive" if is_adaptive(row.strategy) else "-"
        kind = _tau_text(fixed[row.strategy]) if row.strategy in fixed else kind
        kind += " (chosen after seed 1)" if row.strategy in post_hoc(grid) else ""
        last = "-" if row.last_tau is None else f"{row.last_tau:.3g}"
        lines.append(
            f"| {row.strategy} | {kind} | {last} | {row.spread} | {row.best:+.2f} | "
            f"{row.seeds_at_or_above} / {row.seeds} | {row.median:+.2f} | {row.rank} |"
        )
    return lines


def per_seed_table(
    grid: dict[str, Any], found: dict[str, dict[int, dict[str, Any]]], curve: Curve, summary: str
) -> list[str]:
    """Each trained strategy's score on each seed, with its regret on that seed against the grid's best fixed tau
    (the best by mean over the curve's seeds, not the best of that seed alone): the pairs the regret table averages."""
    seeds = grid["seeds"]
    lines = ["| strategy | " + " | ".join(f"seed {seed}" for seed in seeds) + " |", "|---" * (len(seeds) + 1) + "|"]
    regrets_by_strategy = {row.strategy: row.best_per_seed for row in curve.rows}
    for strategy in (s for s in found if _trained(found[s])):
        cells, against_best = found[strategy], regrets_by_strategy.get(strategy, {})
        shown = [
            f"{cells[seed]['scores'][summary]:.2f} ({against_best[seed]:+.2f})"
            if seed in against_best
            else f"{cells[seed]['scores'][summary]:.2f}"
            if seed in cells
            else "-"
            for seed in seeds
        ]
        lines.append(f"| {strategy} | " + " | ".join(shown) + " |")
    return lines


def _at_or_above(row: Regret) -> str:
    return f"{row.best:+.2f}, {row.seeds_at_or_above} of {row.seeds} seed{'s' * (row.seeds > 1)} at or above"


def regret_targets(grid: dict[str, Any], curve: Curve, summary: str) -> list[str]:
    rows, chosen_later = curve.rows, post_hoc(grid)
    adaptive = sorted(
        (row for row in rows if is_adaptive(row.strategy) and row.strategy not in chosen_later), key=lambda r: r.best
    )
    if not adaptive:
        return []
    stretch = STRETCH[grid["metric"]]
    closest = adaptive[0]
    best_mean = next(row.mean for row in rows if row.strategy == curve.best)
    lines = [f"- Best fixed tau: {_tau_text(curve.tau)} (`{curve.best}`), {best_mean:.2f} {summary}."]
    winners = [row for row in adaptive if row.best <= 0]
    if winners:
        named = "; ".join(f"{row.strategy} ({_at_or_above(row)})" for row in winners)
        verdict = f"met by {named}"
    else:
        verdict = f"not met; the closest is {closest.strategy} ({_at_or_above(closest)})"
    lines.append(
        "- An adaptive strategy at its defaults at or above the best fixed tau (regret <= 0): "
        f"{verdict}.{curve.provisional(grid['name'])}"
    )
    verdict = f"met by {closest.strategy} ({_at_or_above(closest)})" if closest.best <= -stretch else "not met"
    lines.append(
        f"- Stretch, {stretch:+.1f} {summary} above the best fixed tau (regret <= {-stretch:.1f}): {verdict}."
        f"{curve.provisional(grid['name'])}"
    )
    first = grid["seeds"][0]
    for row in rows:
        if row.strategy not in chosen_later:
            continue
        later = {seed: value for seed, value in row.best_per_seed.items() if seed != first}
        result = (
            f"regret {np.mean(list(later.values())):+.2f} on seed{'s' * (len(later) > 1)} "
            f"{', '.join(str(seed) for seed in later)}, {sum(v <= 0 for v in later.values())} of {len(later)} at "
            "or above"
            if later
            else "no later seed has finished"
        )
        lines.append(
            f"- {row.strategy}, chosen after seeing seed {first}'s test scores, counts towards no target: {result}."
        )
    return lines


def plot_fixed_curve(grid: dict[str, Any], found: dict[str, dict[int, dict[str, Any]]], summary: str) -> bytes | None:
    fixed = {name: tau for name, tau in fixed_temperatures(grid).items() if name in found}
    if len(fixed) < 2:
        return None
    # on the curve's seeds, as the regret table reads them; each fixed tau's own seeds until they share one
    seeds = curve_seeds(grid, found)

    def values(strategy: str) -> list[float]:
        cells = found[strategy]
        return [cells[seed]["scores"][summary] for seed in (seeds or cells) if seed in cells]

    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.5))
    taus = list(fixed.values())
    scores = [values(name) for name in fixed]
    axis.errorbar(
        taus,
        [np.mean(points) for points in scores],
        yerr=[np.std(points, ddof=1) if len(points) > 1 else 0.0 for points in scores],
        fmt="o-",
        color="black",
        capsize=3,
        label="fixed tau (mean ± std over seeds every fixed tau finished)",
    )
    colours = plt.get_cmap("tab10")
    adaptive = [s for s in found if is_adaptive(s) and _trained(found[s]) and values(s)]
    for number, strategy in enumerate(adaptive):
        points, colour = values(strategy), colours(number % 10)
        band = "band: seed range" if len(points) > 1 else "one seed"
        later = ", chosen after seed 1" if strategy in post_hoc(grid) else ""
        axis.axhspan(min(points), max(points), color=colour, alpha=0.15, linewidth=0)
        axis.axhline(float(np.mean(points)), color=colour, linewidth=1, label=f"{strategy} ({band}{later})")
    axis.set_xscale("log")
    axis.set_xticks(taus, [_tau_text(tau) for tau in taus])
    axis.minorticks_off()
    return _png(
        figure,
        axis,
        xlabel="fixed temperature tau",
        ylabel=summary,
        title=f"{grid['name']}: fixed tau against adaptive strategies at their defaults",
    )


def plot_regrets(grid: dict[str, Any], curve: Curve, summary: str) -> bytes | None:
    """Each adaptive strategy's regret against the best fixed tau: one dot a seed, a bar at the mean, with the
    lines the targets draw; the strategies sit side by side where the fixed-tau plot stacks their bands."""
    tau, rows = curve.tau, curve.rows
    adaptive = sorted((row for row in rows if is_adaptive(row.strategy)), key=lambda row: -row.best)
    if not adaptive:
        return None
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, max(3.0, 1.4 + 0.35 * len(adaptive))))
    for place, row in enumerate(adaptive):
        values = list(row.best_per_seed.values())
        axis.plot(values, [place] * len(values), "o", color="tab:blue", alpha=0.6)
        axis.plot([row.best, row.best], [place - 0.3, place + 0.3], color="black", linewidth=2)
    axis.plot([], [], "o", color="tab:blue", alpha=0.6, label="one seed")
    axis.plot([], [], color="black", linewidth=2, label="mean over seeds")
    axis.axvline(0.0, color="grey", linewidth=1, label=f"best fixed tau ({_tau_text(tau)})")
    stretch = STRETCH[grid["metric"]]
    axis.axvline(-stretch, color="grey", linewidth=1, linestyle="--", label=f"stretch target ({-stretch:.1f})")
    labels = [row.strategy + (" (chosen after seed 1)" if row.strategy in post_hoc(grid) else "") for row in adaptive]
    axis.set_yticks(range(len(adaptive)), labels)
    return _png(
        figure,
        axis,
        xlabel=f"regret: best fixed tau's {summary} minus the strategy's (left of 0: the strategy is above)",
        ylabel="",
        title=f"{grid['name']}: regret of adaptive strategies at their defaults",
    )


def across_grids(with_curve: list[tuple[dict[str, Any], Curve]]) -> list[str]:
    """Every adaptive strategy's regret in each grid that has a fixed-tau curve, and whether one strategy is at or
    above the best fixed tau in all of them."""
    if len(with_curve) < 2:
        return []
    names = [grid["name"] for grid, _ in with_curve]
    table = {grid["name"]: {row.strategy: row for row in curve.rows} for grid, curve in with_curve}
    chosen_later = set().union(*(post_hoc(grid) for grid, _ in with_curve))
    strategies = [s for s in table[names[0]] if is_adaptive(s) and all(s in table[name] for name in names)]
    lines = [
        "## Adaptive temperatures against the best fixed tau, every grid",
        "",
        "Regret is the best fixed tau's score minus the strategy's, paired by seed (positive: below it); a "
        "strategy needs regret <= 0 in every grid to replace tuning tau. A strategy chosen after seeing a grid's "
        "first seed (and which, in each grid, may wrap a different policy) counts towards no verdict.",
        "",
        "| strategy | " + " | ".join(f"regret {name}" for name in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for strategy in strategies:
        label = strategy + (" (chosen after seed 1)" if strategy in chosen_later else "")
        lines.append(f"| {label} | " + " | ".join(f"{table[n][strategy].best:+.2f}" for n in names) + " |")
    counted = [s for s in strategies if s not in chosen_later]
    everywhere = [s for s in counted if all(table[n][s].best <= 0 for n in names)]
    verdict = "met by " + ", ".join(everywhere) if everywhere else "not met"
    unfinished = [
        f"`{grid['name']}` has {curve.done} of {curve.total} cells" for grid, curve in with_curve if not curve.complete
    ]
    provisional = f" Provisional: {', '.join(unfinished)}." if unfinished else ""
    return [
        *lines,
        "",
        f"- One adaptive strategy at or above the best fixed tau in every grid: {verdict}.{provisional}",
        "",
    ]


def _final_median_tau(record: dict[str, Any]) -> float | None:
    histograms = record.get("tau_histogram")
    if not histograms or "median" not in histograms["histograms"][-1]:
        return None
    return float(histograms["histograms"][-1]["median"])


def comparison_table(
    grid: dict[str, Any],
    found: dict[str, dict[int, dict[str, Any]]],
    other: dict[str, Any],
    other_found: dict[str, dict[int, dict[str, Any]]],
    summary: str,
) -> list[str]:
    """Each trained strategy both grids ran: its score and its gain over the reference in each, and how that gain
    moved from the other grid to this one; per-sample strategies also show their median learned tau_i. Gains are
    paired over the seeds a strategy shares with its grid's reference, so unfinished seeds do not bias them."""
    reference = grid["reference"]
    if reference not in found or other["reference"] not in other_found:
        return []

    def mean(cells: dict[int, dict[str, Any]]) -> float:
        return float(np.mean([c["scores"][summary] for c in cells.values()]))

    def tau(cells: dict[int, dict[str, Any]]) -> str:
        value = _final_median_tau(cells[min(cells)])
        return "-" if value is None else f"{value:.3f}"

    mine, theirs = grid["name"], other["name"]
    lines = [
        f"| strategy | {summary} {theirs} | {summary} {mine} | Δ reference {theirs} | Δ reference {mine} | "
        f"change in Δ | paired seeds {theirs} / {mine} | median tau_i {theirs} | median tau_i {mine} |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for strategy, cells in found.items():
        if strategy not in other_found or not _trained(cells):
            continue
        then = paired_differences(other_found, strategy, other["reference"], [summary])
        now = paired_differences(found, strategy, reference, [summary])
        if not then.size or not now.size:
            continue
        lines.append(
            f"| {strategy} | {mean(other_found[strategy]):.2f} | {mean(cells):.2f} | {then.mean():+.2f} | "
            f"{now.mean():+.2f} | {now.mean() - then.mean():+.2f} | {then.size} / {now.size} | "
            f"{tau(other_found[strategy])} | {tau(cells)} |"
        )
    return lines if len(lines) > 2 else []


# ----------------------------------------------------------------------------------------------------- plots


def _png(figure, axis, *, xlabel: str, ylabel: str, title: str) -> bytes:
    """Label, legend and grid as every report plot has them; PNG without a version stamp, so reproducible."""
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure_png(figure, dpi=100, metadata={"Software": None})


def plot_temperatures(grid: dict[str, Any], found: dict[str, dict[int, dict[str, Any]]]) -> bytes | None:
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 4))
    drawn = False
    for strategy, cells in found.items():
        record = cells[min(cells)]
        curve = [entry for entry in record.get("curve") or [] if "tau_mean" in entry]
        if curve:
            axis.plot([e["step"] for e in curve], [e["tau_mean"] for e in curve], label=strategy)
            drawn = True
        elif record["trained"] and record.get("recipe", {}).get("loss", {}).get("scale"):
            axis.axhline(1 / record["recipe"]["loss"]["scale"], color="black", linestyle="--", label=strategy)
    if not drawn:
        plt.close(figure)
        return None
    return _png(
        figure,
        axis,
        xlabel="training step",
        ylabel="mean temperature of the step's batch",
        title=f"{grid['name']}: temperature during training (first seed)",
    )


def plot_per_sample(grid: dict[str, Any], found: dict[str, dict[int, dict[str, Any]]]) -> bytes | None:
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 4))
    drawn = False
    for strategy, cells in found.items():
        record = cells[min(cells)]
        histograms = record.get("tau_histogram")
        if not histograms or "counts" not in histograms["histograms"][-1]:
            continue
        edges = np.asarray(histograms["edges"])
        last = histograms["histograms"][-1]
        centres = np.sqrt(edges[:-1] * edges[1:])
        axis.plot(
            centres,
            np.asarray(last["counts"]) / max(1, last["seen"]),
            label=f"{strategy} (median {last['median']:.3f})",
        )
        drawn = True
    if not drawn:
        plt.close(figure)
        return None
    axis.set_xscale("log")
    return _png(
        figure,
        axis,
        xlabel="learned per-sample temperature tau_i (end of training)",
        ylabel="fraction of training samples",
        title=f"{grid['name']}: per-sample temperatures (first seed)",
    )


def plot_cost(grid: dict[str, Any], found: dict[str, dict[int, dict[str, Any]]], summary: str) -> bytes:
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 4))
    for strategy, cells in found.items():
        whole = [c for c in cells.values() if not _resumed(c)]  # a resumed cell's wall time is its last part only
        if not whole:
            continue
        walls = [c["wall_seconds"] for c in whole]
        scores = [c["scores"][summary] for c in whole]
        axis.errorbar(
            np.mean(walls),
            np.mean(scores),
            xerr=np.std(walls, ddof=1) if len(walls) > 1 else None,
            yerr=np.std(scores, ddof=1) if len(scores) > 1 else None,
            fmt="o",
            capsize=3,
            label=strategy,
        )
    return _png(
        figure,
        axis,
        xlabel="wall time of the cell (s): training and evaluation",
        ylabel=summary,
        title=f"{grid['name']}: {summary} against wall time (mean ± std over seeds)",
    )


# ---------------------------------------------------------------------------------------------------- report


def grid_section(
    grid: dict[str, Any], path: Path, results: Path, plots: Path, relative_to: Path
) -> tuple[list[str], Curve | None]:
    """The grid's part of the report, and its fixed-tau curve (None without one) for the comparison across grids."""
    found = load_results(results, grid)
    total = sum(1 for _ in _expected_cells(grid))
    done = sum(len(cells) for cells in found.values())
    command = f"TEMPNLP_MIRROR=../shared/mirror python -m eval.grid eval/grids/{path.name}"
    lines = [f"## {grid['name']}", "", grid.get("description", "").strip(), "", f"Run: `{command}`", ""]
    lines.append(f"Cells finished: {done} of {total}.")
    missing = [s for s in grid["strategies"] if s not in found]
    partial = [s for s in found if len(found[s]) < len(expected_seeds(grid, s))]
    if missing or partial:
        lines.append(
            "Still to run: "
            + ", ".join(
                [
                    *(f"{s} (all seeds)" if len(expected_seeds(grid, s)) > 1 else s for s in missing),
                    *(
                        f"{s} (seed {', '.join(str(n) for n in expected_seeds(grid, s) if n not in found[s])})"
                        for s in partial
                    ),
                ]
            )
            + ". The tables below cover the finished cells only."
        )
    lines.append("")
    if not found:
        return [*lines, "No results yet.", ""], None
    metrics = _metrics(found)
    summary = SUMMARY[grid["metric"]]
    tasks = [m for m in metrics if m != "avg"] if summary == "avg" else [summary]
    reference = grid["reference"]
    curve = regrets(grid, found, summary, done, total)
    lines += ["### Scores (x 100, mean ± std over seeds)", "", *score_table(found, metrics), ""]
    if reference in found:
        lines += [
            f"### Against the reference `{reference}`",
            "",
            f"Δ is strategy minus reference, over the seeds both ran. Pairs are (seed, task) values both ran "
            f"({', '.join(tasks)}); the untrained model is compared per task with the reference's mean over seeds. "
            "p is the two-sided Wilcoxon signed-rank test on those pairs. The tasks of one seed are scored on one "
            "model and are not independent, so p says how consistent the difference is across tasks and seeds; "
            f"the last column counts the seeds whose {summary} is above or below the reference's for that seed.",
            "",
            *difference_table(found, reference, tasks, summary),
            "",
            *(
                [
                    "Where the difference comes from: Δ per task, the mean over the seeds both ran.",
                    "",
                    *per_task_table(found, reference, tasks),
                    "",
                ]
                if len(tasks) > 1
                else []
            ),
            "### Cost",
            "",
            "Median seconds per optimizer step (forward, backward and update; logging and checkpoints excluded), "
            "the cell's wall time (loading, training and the final evaluation) and its peak resident memory during "
            "training: means over seeds, and × reference the mean over seeds of the ratio to the reference's cell of "
            "the same seed run in the same boot of the same machine (the untrained model: to the reference's mean): "
            "a machine description names a CPU model, not a host, and a shared host can run slower after a "
            "restart. Cells that recorded no boot (run before boots were recorded) are paired with each other by "
            "machine and seed, and cells that recorded no machine by seed, on the assumption that one session ran "
            "them. Cells ran one after another on shared 2-core machines; the "
            "median keeps a few disturbed steps from moving the step time.",
            "",
            *cost_table(found, reference),
            "",
            "### Targets",
            "",
            *targets(grid, found, summary, has_curve=curve is not None),
            *(regret_targets(grid, curve, summary) if curve else []),
            "",
        ]
    if curve:
        lines += [
            "### Against the fixed-tau curve",
            "",
            "Every column is read on the seeds every fixed tau has finished (the curve's seeds), and on those of "
            f"them the strategy has finished. Regret is a fixed tau's {summary} minus the strategy's, paired by seed "
            "and averaged (positive: the strategy scores below). The best fixed tau is the one with the best mean "
            "on the curve's seeds, as a user tuning tau on this task would pick it; the median fixed tau is, per "
            "seed, the median of the fixed taus' scores, what an untuned pick gives. The best fixed tau is picked on "
            "the same test scores it is compared on, which favours it over the adaptive strategies. Rank is by "
            "regret against the best fixed tau (ties share a rank). Tau at the last step is the mean temperature "
            "of the batch at the last logged training step (over the batch's samples or pairs where the policy "
            "gives each its own), averaged over the same seeds: where an adaptive policy left tau.",
            "",
            *regret_table(grid, curve, summary),
            "",
            "### Per seed",
            "",
            f"Each seed's {summary}, and in brackets, once every fixed tau has finished the seed, its regret on that "
            f"seed against the best fixed tau ({_tau_text(curve.tau)}): the regrets the table above averages. That "
            "fixed tau is the best by its mean over the curve's seeds, so a later seed can change it, and with it "
            "every bracket here.",
            "",
            *per_seed_table(grid, found, curve, summary),
            "",
        ]
    if grid.get("compare_with"):
        other_path = path.parent / f"{grid['compare_with']}.yaml"
        if not other_path.is_file():
            raise FileNotFoundError(f"{path}: compare_with names {grid['compare_with']!r}; {other_path} is missing.")
        other = load_grid(other_path)
        table = comparison_table(grid, found, other, load_results(results, other), summary)
        if table:
            lines += [
                f"### Against `{other['name']}`",
                "",
                f"The same strategies in both grids. Scores are means over the seeds each has finished; Δ reference "
                f"is the strategy's {summary} minus its grid's reference, averaged over the seeds both have finished "
                f"(paired seeds); change in Δ is how much more (or less) the strategy gains over the reference here "
                f"than in `{other['name']}`. Median tau_i is the median learned "
                "per-sample temperature over the training samples at the end of training (first seed).",
                "",
                *table,
                "",
            ]
    figures = [
        ("fixed-tau", plot_fixed_curve(grid, found, summary), "fixed tau against adaptive strategies"),
        (
            "regret-by-strategy",
            plot_regrets(grid, curve, summary) if curve else None,
            "regret against the best fixed tau",
        ),
        ("temperature", plot_temperatures(grid, found), "temperature over training"),
        ("per-sample", plot_per_sample(grid, found), "learned per-sample temperatures"),
        ("cost", plot_cost(grid, found, summary), f"{summary} against wall time"),
    ]
    for kind, png, title in figures:
        if png is None:
            continue
        target = plots / f"{grid['name']}-{kind}.png"
        write_bytes_atomic(target, png)
        lines += [f"![{grid['name']}: {title}]({target.relative_to(relative_to / 'eval').as_posix()})", ""]
    versions = [cell["versions"] for cells in found.values() for cell in cells.values()]
    lines.append(f"Package versions: {_versions_text(versions)}.")
    lines.append("")
    return lines, curve


def _versions_text(cells: list[dict[str, str]]) -> str:
    """Each package once; where the cells ran different versions, each version with its number of cells."""
    parts = []
    for name in sorted({name for versions in cells for name in versions}):
        counts = Counter(versions.get(name, "not recorded") for versions in cells)
        if len(counts) == 1:
            parts.append(f"{name} {next(iter(counts))}")
        else:
            each = [f"{value} ({n} cell{'s' * (n > 1)})" for value, n in sorted(counts.items())]
            parts.append(f"{name} {' / '.join(each)}")
    return ", ".join(parts)


def _expected_cells(grid: dict[str, Any]):
    for strategy in grid["strategies"]:
        for seed in expected_seeds(grid, strategy):
            yield strategy, seed


def build_report(grids: Path = GRIDS, results: Path = RESULTS, report: Path = REPORT, plots: Path = PLOTS) -> str:
    root = report.parent.parent
    lines = [
        "# Temperature strategies compared",
        "",
        "Generated by `python -m eval.report` from the result files under `eval/results/grids/`; do not edit by "
        "hand. Each grid runs with `python -m eval.grid eval/grids/<grid>.yaml`, one result file per (strategy, "
        "seed) cell, skipping finished cells. All runs: 2-core x86_64 CPU, no GPU, fp32.",
        "",
    ]
    paths = sorted(grids.glob("*.yaml"), key=lambda p: (ORDER.index(p.stem) if p.stem in ORDER else len(ORDER), p.stem))
    curves = []
    for path in paths:
        grid = load_grid(path)
        section, curve = grid_section(grid, path, results, plots, root)
        lines += section
        if curve is not None:
            curves.append((grid, curve))
    lines += across_grids(curves)
    text = "\n".join(lines).rstrip() + "\n"
    write_text_atomic(report, text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.report", description=__doc__.split("\n\n")[0])
    parser.parse_args(argv)
    build_report()
    print(f"written: {REPORT.relative_to(ROOT)} and {PLOTS.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
