"""Every number the README's results section quotes is the one the generated eval/report.md holds.

The report is itself checked byte for byte against the committed result files (tests/test_grid_report.py), so a
README number that passes here is a number the grid produced. The test reads the report's tables as a reader
would (by grid, table and row), formats each quoted sentence from them, and also fails on any number in the
results section that no check here covers, so a number cannot be added to the README unchecked.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS_HEADING = "## Results: temperature strategies compared"


def _tables(report: str) -> dict[str, dict[str, list[dict[str, str]]]]:
    """``{grid: {subsection heading: [row as {column: cell}]}}`` for every markdown table in the report."""
    grids: dict[str, dict[str, list[dict[str, str]]]] = {}
    grid = section = ""
    header: list[str] | None = None
    for line in report.splitlines():
        if line.startswith("## "):
            grid, section, header = line[3:].strip(), "", None
            grids[grid] = {}
        elif line.startswith("### "):
            section, header = line[4:].strip(), None
        elif line.startswith("|") and grid:
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if header is None:  # a repeated column name gets its position: "× reference", "× reference 2", ...
                header = [
                    name if cells[:i].count(name) == 0 else f"{name} {cells[:i].count(name) + 1}"
                    for i, name in enumerate(cells)
                ]
            elif not set("".join(cells)) <= set("-"):
                grids[grid].setdefault(section, []).append(dict(zip(header, cells, strict=True)))
        else:
            header = None
    return grids


class Report:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tables = _tables(text)

    def row(self, grid: str, section: str, strategy: str) -> dict[str, str]:
        matches = [name for name in self.tables[grid] if name.startswith(section)]
        assert matches, f"{grid}: no table under a heading starting with {section!r}"
        for row in self.tables[grid][matches[0]]:
            if row["strategy"] == strategy:
                return row
        raise AssertionError(f"{grid}/{section}: no row {strategy!r}")

    def score(self, grid: str, strategy: str, metric: str = "avg") -> str:
        return self.row(grid, "Scores", strategy)[metric].split(" ± ")[0]

    def delta(self, grid: str, strategy: str, column: str = "Δ avg") -> str:
        return self.row(grid, "Against the reference", strategy)[column]

    def seeds_better(self, grid: str, strategy: str) -> str:
        return self.delta(grid, strategy, "seeds better / worse").split(" / ")[0]

    def pairs(self, grid: str, strategy: str) -> tuple[str, str]:
        better, worse = self.delta(grid, strategy, "better / worse").split(" / ")
        return better, worse

    def per_task(self, grid: str, strategy: str, task: str) -> str:
        # the per-task table has no heading of its own: it is the second table under "Against the reference"
        section = next(name for name in self.tables[grid] if name.startswith("Against the reference"))
        rows = [row for row in self.tables[grid][section] if task in row and row["strategy"] == strategy]
        assert rows, f"{grid}: no per-task row {strategy!r}"
        return rows[0][task]

    def step_ratios(self, grid: str) -> list[float]:
        section = next(name for name in self.tables[grid] if name.startswith("Cost"))
        reference = next(name for name in self.tables[grid] if name.startswith("Against the reference"))
        ref = reference.split("`")[1]
        return [
            float(row["× reference"])
            for row in self.tables[grid][section]
            if row["strategy"] != ref and row["× reference"] != "-"
        ]

    def on_seed(self, grid: str, strategy: str, seed: int) -> tuple[str, str]:
        """(score, regret against the best fixed tau) of one seed, from the per-seed table."""
        cell = self.row(grid, "Per seed", strategy)[f"seed {seed}"]
        assert cell != "-", f"{grid}: {strategy} has not finished seed {seed}"
        score, regret = cell.rstrip(")").split(" (")
        return score, regret

    def finished(self, grid: str) -> tuple[int, int]:
        block = self.text.split(f"## {grid}\n")[1]
        done, total = re.search(r"Cells finished: (\d+) of (\d+)\.", block).groups()
        return int(done), int(total)


@pytest.fixture(scope="module")
def report() -> Report:
    return Report((ROOT / "eval" / "report.md").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def results_section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert RESULTS_HEADING in readme
    return readme.split(RESULTS_HEADING)[1].split("\n## ")[0]


def _quoted_sentences(r: Report) -> list[str]:
    nli, wiki1, wiki5, scifact = "nli-minilm", "wiki-minilm-1ep", "wiki-minilm-5ep", "scifact-minilm"

    def against(grid: str, strategy: str) -> str:
        return f"{r.delta(grid, strategy)}, above it in {r.seeds_better(grid, strategy)} of 3 seeds"

    objective_losses = ["sogclr", "dcl", "isogclr", "isogclr-queue", "tempnet"]
    worse = {name: r.pairs(nli, name)[1] for name in objective_losses}
    sentences = [
        # grid 1
        f"the untrained model scores {r.score(nli, 'base-model')} and MNRL (fixed tau 0.05) {r.score(nli, 'mnrl')}",
        f"learnable tau {r.score(nli, 'learnable')} ({against(nli, 'learnable')}, Wilcoxon p "
        f"{r.delta(nli, 'learnable', 'Wilcoxon p')} over the 21 (seed, task) pairs)",
        f"DySTreSS {r.score(nli, 'dystress')} ({against(nli, 'dystress')})",
        f"MACL {r.score(nli, 'macl')} ({against(nli, 'macl')})",
        f"loses {r.per_task(nli, 'macl', 'STS13')} on STS13",
        "every loss without the positive in its denominator is below MNRL on average and on at least "
        f"{min(int(n) for n in worse.values())} of the 21 (seed, task) pairs: "
        + ", ".join(
            f"{label} {r.delta(nli, name)} ({worse[name]} of 21)"
            for label, name in zip(
                ["SogCLR", "DCL", "iSogCLR", "iSogCLR with the queue", "TempNet"], objective_losses, strict=True
            )
        ),
        f"at that rho both score as SogCLR does ({r.score(nli, 'isogclr-rho3.8')}, {r.score(nli, 'tempnet-rho3.8')} "
        f"vs {r.score(nli, 'sogclr')})",
        f"the remaining {r.delta(nli, 'sogclr')} to MNRL is the SogCLR/RGCL estimator itself",
        # grid 2
        f"iSogCLR and SogCLR score the same at one epoch ({r.score(wiki1, 'isogclr')} and {r.score(wiki1, 'sogclr')})",
        f"MACL is the closest any adaptive temperature comes to the +0.3 target: {r.delta(wiki1, 'macl')} over MNRL "
        f"at one epoch, above it in {r.seeds_better(wiki1, 'macl')} of 3 seeds ({r.pairs(wiki1, 'macl')[0]} of 21 "
        f"(seed, task) pairs, Wilcoxon p {r.delta(wiki1, 'macl', 'Wilcoxon p')}); at five epochs "
        f"{r.delta(wiki5, 'macl')}",
        f"iSogCLR scores {r.score(wiki5, 'isogclr')} against SogCLR's {r.score(wiki5, 'sogclr')}",
        f"its difference to MNRL moves from {r.delta(wiki1, 'isogclr')} at one epoch to {r.delta(wiki5, 'isogclr')} "
        "at five",
        f"DCL ({r.delta(wiki1, 'dcl')} and {r.delta(wiki5, 'dcl')}) and SogCLR ({r.delta(wiki1, 'sogclr')} and "
        f"{r.delta(wiki5, 'sogclr')})",
        f"TempNet goes from {r.delta(wiki1, 'tempnet')} to {r.delta(wiki5, 'tempnet')}",
        # grid 3
        f"fixed symmetric InfoNCE lifts the model from {r.score(scifact, 'base-model', 'ndcg@10')} to "
        f"{r.score(scifact, 'fixed', 'ndcg@10')}",
        f"bimodal iSogCLR ({r.score(scifact, 'isogclr', 'ndcg@10')}) and TempNet "
        f"({r.score(scifact, 'tempnet', 'ndcg@10')}) stay near the untrained model, "
        f"{r.delta(scifact, 'isogclr', 'Δ ndcg@10')} and {r.delta(scifact, 'tempnet', 'Δ ndcg@10')} against fixed "
        f"InfoNCE (below it in {r.pairs(scifact, 'isogclr')[1]} and {r.pairs(scifact, 'tempnet')[1]} of 3 seeds)",
        f"SogCLR, iSogCLR's objective at the fixed tau 0.05, scores {r.score(scifact, 'sogclr', 'ndcg@10')}, "
        f"{r.delta(scifact, 'sogclr', 'Δ ndcg@10')} against fixed InfoNCE",
    ]
    for grid, number in ((nli, 1), (wiki1, 2), (wiki5, 2), (scifact, 3)):
        ratios = r.step_ratios(grid)
        sentences.append(f"grid {number} ({grid}): {min(ratios):.2f}x to {max(ratios):.2f}x")
    # grid 4, seed by seed until its seeds finish: scores and regrets from the report's per-seed table
    regret, retrieval = "nli-tau-regret", "scifact-tau-regret"
    fixed = [f"fixed-{tau}" for tau in ("0.01", "0.02", "0.05", "0.1")]

    def seed_one(grid: str, strategy: str) -> str:
        return r.on_seed(grid, strategy, 1)[0]

    def peak(grid: str) -> str:
        top = max(fixed, key=lambda strategy: float(seed_one(grid, strategy)))
        assert r.on_seed(grid, top, 1)[1] == "+0.00"  # the regrets are against this tau: "that best fixed tau"
        return top

    nli_peak = peak(regret)
    sentences.append(
        f"Seed 1 of `{regret}`: the fixed-tau curve peaks at {nli_peak.removeprefix('fixed-')} "
        f"({seed_one(regret, nli_peak)}), the tau MiniLM was trained at; 0.02 and 0.1 score "
        f"{seed_one(regret, 'fixed-0.02')} and {seed_one(regret, 'fixed-0.1')}, below the untrained model's "
        f"{r.score(regret, 'base-model')}, and 0.01, E5's and BGE's choice, {seed_one(regret, 'fixed-0.01')}"
    )
    assert nli_peak == "fixed-0.05"  # "the tau MiniLM was trained at"
    assert all(  # "below the untrained model's"
        float(seed_one(regret, s)) < float(r.score(regret, "base-model")) for s in ("fixed-0.02", "fixed-0.1")
    )

    def scored(grid: str, strategy: str) -> str:
        score, regret_on_seed = r.on_seed(grid, strategy, 1)
        return f"{score} ({regret_on_seed})"

    sentences.append(
        f"the adaptive temperatures at their defaults, with their regret against that best fixed tau: learnable tau "
        f"{scored(regret, 'learnable')}, the cool-down {scored(regret, 'cooldown')}, DySTreSS "
        f"{scored(regret, 'dystress')}, MACL {scored(regret, 'macl')} and the cosine schedule "
        f"{scored(regret, 'cosine')} stay close to it; the DRO temperatures, at the authors' rho 0.3, raise tau well "
        "above 0.05 and fall below the untrained model: the per-sample tau "
        f"{scored(regret, 'individual')}, TempNet {scored(regret, 'tempnet')} and the global DRO tau "
        f"{scored(regret, 'global-dro')}"
    )
    assert all(
        float(seed_one(regret, s)) < float(r.score(regret, "base-model"))
        for s in ("individual", "tempnet", "global-dro")
    )

    # seed 2 of the NLI grid, in the same order as the README, with its drift from seed 1
    peak_two = max(fixed, key=lambda strategy: float(r.on_seed(regret, strategy, 2)[0]))
    assert peak_two == nli_peak and r.on_seed(regret, peak_two, 2)[1] == "+0.00"  # "again 0.05"
    labels = {
        "learnable": "learnable tau", "dystress": "DySTreSS", "cooldown": "the cool-down", "macl": "MACL",
        "cosine": "the cosine schedule", "individual": "the per-sample tau", "tempnet": "TempNet",
        "global-dro": "the global DRO tau",
    }  # fmt: skip
    drift = max(abs(float(r.on_seed(regret, s, 2)[1]) - float(r.on_seed(regret, s, 1)[1])) for s in labels)
    assert drift < 0.35  # "each within 0.35 of its seed-1 regret"
    sentences.append(
        f"Seed 2 repeats this: its best fixed tau is again {peak_two.removeprefix('fixed-')} "
        f"({r.on_seed(regret, peak_two, 2)[0]}), and the regrets are "
        + ", ".join(f"{label} {r.on_seed(regret, s, 2)[1]}" for s, label in list(labels.items())[:-1])
        + f" and {labels['global-dro']} {r.on_seed(regret, 'global-dro', 2)[1]}, each within 0.35 of its seed-1 regret"
    )
    hardness_two, learnable_two = r.on_seed(regret, "hardness", 2), r.on_seed(regret, "learnable", 2)
    assert float(hardness_two[0]) < float(learnable_two[0])  # "below the learnable tau it wraps"
    sentences.append(f"on seed 2 it scores {hardness_two[0]} ({hardness_two[1]}), below the learnable tau it wraps")

    # SciFact: the best fixed tau by mean is the one the report names; every per-seed regret is against it
    best = re.search(r"Best fixed tau: ([\d.]+) \(`(fixed-[\d.]+)`\)", r.text.split(f"## {retrieval}\n")[1]).groups()
    tau, best_fixed = best
    assert all(r.on_seed(retrieval, best_fixed, seed)[1] == "+0.00" for seed in (1, 2))

    def on_seed_scores(grid: str, seed: int) -> list[float]:
        return [float(r.on_seed(grid, strategy, seed)[0]) for strategy in fixed]

    for seed in (1, 2):  # "flatter", seed by seed
        assert max(on_seed_scores(retrieval, seed)) - min(on_seed_scores(retrieval, seed)) < max(
            on_seed_scores(regret, seed)
        ) - min(on_seed_scores(regret, seed))
    peaks = [fixed[int(np.argmax(on_seed_scores(retrieval, seed)))] for seed in (1, 2)]
    assert peaks[0] != peaks[1]  # "its peak moves with the seed"
    base = r.score(retrieval, "base-model", "ndcg@10")
    assert min(on_seed_scores(retrieval, 1) + on_seed_scores(retrieval, 2)) > float(base)
    sentences.append(
        f"On `{retrieval}` the fixed-tau curve is flatter and its peak moves with the seed: 0.01, 0.02, 0.05 and "
        f"0.1 score {', '.join(r.on_seed(retrieval, s, 1)[0] for s in fixed[:3])} and "
        f"{r.on_seed(retrieval, fixed[3], 1)[0]} nDCG@10 on seed 1 and "
        f"{', '.join(r.on_seed(retrieval, s, 2)[0] for s in fixed[:3])} and {r.on_seed(retrieval, fixed[3], 2)[0]} "
        f"on seed 2, all above the untrained model's {base}. Over the two seeds {tau} has the best mean, so the "
        f"regrets below are against {tau}, seed by seed"
    )

    def regret_on(seed: int, strategy: str) -> float:
        return float(r.on_seed(retrieval, strategy, seed)[1])

    above = ["individual", "macl", "cooldown", "cosine", "learnable"]  # in the README's order, lowest regret first
    below = ["dystress", "tempnet"]
    adaptive = [*above, *below, "global-dro"]
    assert [regret_on(1, s) for s in above] == sorted(regret_on(1, s) for s in above)
    assert all(regret_on(1, s) < 0 for s in above) and all(0 < regret_on(1, s) < 0.5 for s in below)
    assert sum(regret_on(1, s) < 0 for s in adaptive) == len(above) == 5  # "five", and no other
    assert float(r.on_seed(retrieval, "global-dro", 1)[0]) < float(base)
    sentences.append(
        "Seed 1 puts five adaptive temperatures above it: "
        + ", ".join(f"{labels[s]} {scored(retrieval, s)}" for s in above[:-1])
        + f" and {labels[above[-1]]} {scored(retrieval, above[-1])}; "
        + " and ".join(f"{labels[s]} {scored(retrieval, s)}" for s in below)
        + f" sit just below, and the global DRO tau {scored(retrieval, 'global-dro')} below the untrained model"
    )
    rest = sorted((s for s in adaptive if s != "macl"), key=lambda s: regret_on(2, s))
    assert regret_on(2, "macl") < 0 and all(regret_on(2, s) > 0 for s in rest)  # "only MACL"
    sentences.append(
        f"On seed 2, where {tau} scores {r.on_seed(retrieval, best_fixed, 2)[0]}, only MACL stays above it: "
        f"{r.on_seed(retrieval, 'macl', 2)[0]} ({r.on_seed(retrieval, 'macl', 2)[1]}); then "
        + ", ".join(f"{labels[s]} {r.on_seed(retrieval, s, 2)[1]}" for s in rest[:-1])
        + f" and {labels[rest[-1]]} {r.on_seed(retrieval, rest[-1], 2)[1]}"
    )
    assert min(adaptive, key=lambda s: regret_on(1, s)) == "individual"  # "the lowest regret on seed 1"
    assert float(seed_one(regret, "individual")) < float(r.score(regret, "base-model"))  # "below ... on NLI"
    hardness = r.on_seed(retrieval, "hardness", 2)
    assert float(hardness[0]) < float(r.on_seed(retrieval, "individual", 2)[0])  # "below the per-sample tau"
    sentences.append(
        "The per-sample tau, below the untrained model on NLI, has the lowest regret on seed 1, so SciFact's "
        f"hardness strategy wraps it; on seed 2 the hardness strategy scores {hardness[0]} ({hardness[1]}), below "
        "the per-sample tau"
    )
    moved = float(r.on_seed(retrieval, best_fixed, 2)[0]) - float(r.on_seed(retrieval, best_fixed, 1)[0])
    assert moved > max(regret_on(1, s) for s in adaptive if s != "global-dro")
    sentences.append(
        f"Between the two seeds {tau} alone moves by {moved:.2f} nDCG@10, more than any seed-1 regret but the global "
        "DRO tau's"
    )
    for grid in ("nli-tau-regret", "scifact-tau-regret"):
        done, total = r.finished(grid)
        sentences.append(f"`{grid}`: {done} of {total} cells")
    return sentences


def test_every_sentence_the_readme_quotes_from_the_report_holds(report, results_section):
    flat = " ".join(results_section.split())
    missing = [sentence for sentence in _quoted_sentences(report) if sentence not in flat]
    assert not missing, "README results section does not say (from eval/report.md):\n" + "\n".join(missing)


def test_no_number_in_the_readme_results_goes_unchecked(report, results_section):
    number = re.compile(r"(?<![\d.])[+-]?\d+\.\d+")
    checked = {value.lstrip("+") for value in number.findall(" ".join(_quoted_sentences(report)))}
    flat = " ".join(results_section.split())
    # commands, file names and the grids' settings (lr 5e-5, tau 0.05) are not results from the report
    prose = re.sub(r"`[^`]*`|\[[^\]]*\]\([^)]*\)", " ", flat)
    settings = {"0.05", "0.3", "0.01", "0.02", "0.1", "3.8", "0.005"}
    unchecked = [value for value in number.findall(prose) if value.lstrip("+") not in checked | settings]
    assert not unchecked, f"README results quote numbers no check covers: {unchecked}"


def test_the_scifact_cell_time_quoted_is_the_reference_cells(results_section):
    """The README and the grid's description quote the SciFact reference cell's wall time in minutes."""
    import json

    record = json.loads((ROOT / "eval/results/grids/scifact-tau-regret/fixed-0.05/seed-1.json").read_text())
    minutes = round(record["wall_seconds"] / 60)
    step = record["training"]["median_step_seconds"]
    assert f"the seed-1 cell at fixed tau 0.05 took {minutes} minutes on an idle machine at 128" in " ".join(
        results_section.split()
    )
    description = " ".join((ROOT / "eval/grids/scifact-tau-regret.yaml").read_text().split())
    assert f"took {minutes} minutes on an idle machine (a {step:.1f} s median step" in description
    assert record["load_average"][2] < 3  # idle: its own two threads, nothing beside it
