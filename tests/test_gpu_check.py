"""eval/gpu_check.py and eval/bench_loss.py at toy sizes on the CPU (``--quick``): they run, report every section
and variant, and the numbers they report are the ones the losses compute."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ["loss_checks", "bf16_vs_fp32", "step_vs_mnrl", "loss_only_gathered", "gradcache_bf16", "train"]

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def report(mirror, tmp_path_factory) -> dict:
    """One quick CPU run of the script, as a user starts it (a file, not a module), into a temporary folder."""
    output = tmp_path_factory.mktemp("gpu-check") / "gpu_check.json"
    env = {**os.environ, "TEMPNLP_MIRROR": str(mirror), "TEMPNLP_CACHE": str(output.parent / "cache")}
    command = [sys.executable, str(ROOT / "eval" / "gpu_check.py"), "--device", "cpu", "--quick"]
    done = subprocess.run(
        [*command, "--output", str(output)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert output.with_suffix(".md").read_text(encoding="utf-8").startswith("# GPU check")
    return json.loads(output.read_text(encoding="utf-8"))


def test_every_section_reports_every_variant(report):
    from eval.gpu_check import TINY_BERT, VARIANTS

    assert report["device"] == "cpu" and report["quick"] and report["variants"] == VARIANTS
    assert all(section in report for section in SECTIONS)
    for section in ("loss_checks", "bf16_vs_fp32", "loss_only_gathered", "gradcache_bf16"):
        assert set(VARIANTS) <= set(report[section]["rows"]), section
    for batch in report["step_vs_mnrl"]["batches"]:
        row = report["step_vs_mnrl"]["rows"][str(batch)]
        assert set(VARIANTS) <= set(row) and row["MNRL (ST, scale 20)"]["ratio_vs_mnrl"] == 1.0
        assert all(cell["ms"] > 0 and math.isfinite(cell["ratio_vs_mnrl"]) for cell in row.values())
    for name in VARIANTS:
        check, numbers = report["loss_checks"]["rows"][name], report["bf16_vs_fp32"]["rows"][name]
        assert math.isfinite(check["loss"]) and check["loss"] == numbers["loss_fp32"]
        # what needs CUDA says so instead of giving a number
        assert check["host_syncs_per_step"] == "n/a (CPU)"
        assert report["loss_only_gathered"]["rows"][name]["peak_mib_above_inputs"] == "n/a (CPU)"
        # the objectives leave autocast: the similarity product, the policy and the loss are float32
        assert check["similarity_matmul_dtype"] == ["float32"]
        assert check["policy_input_dtype"] == ["float32"] and check["loss_dtype"] == "float32"
        assert all(t["device"] == "cpu" and t["dtype"] != "float32" for t in check["not_on_device_or_not_float32"])
        assert numbers["loss_abs_diff"] < 0.01 and numbers["embedding_grad_rel_err"] < 0.05
        cached = report["gradcache_bf16"]["rows"][name]
        assert cached["loss_abs_diff"] < 0.01 and cached["encoder_grad_rel_err"] < 0.05
        assert cached["fp32_loss_abs_diff"] < 1e-5 and cached["fp32_encoder_grad_rel_err"] < 1e-4
    # the learning policies report the update of what they learn; the stateless ones have none
    state = {name: report["bf16_vs_fp32"]["rows"][name]["state_update_rel_diff"] for name in VARIANTS}
    assert "gradient of objective.temperature.log_inverse_tau" in state["InfoNCE learnable"]
    assert "update of objective.temperature.states.0.tau" in state["iSogCLR"]
    assert "update of objective.estimates.0.log_s" in state["SogCLR"]
    assert isinstance(state["InfoNCE fixed 0.05"], str) and isinstance(state["DCL"], str)
    assert all(value < 0.05 for row in state.values() if isinstance(row, dict) for value in row.values())

    train = report["train"]
    assert [run["dataloader_num_workers"] for run in train["runs"]] == [0, 1]
    for run in train["runs"]:
        assert run["steps"] == train["steps"] and 0 < run["median_step_seconds"] <= run["p90_step_seconds"]
        assert run["tokens_per_step"] > 0 and run["mfu"] == "n/a (CPU)" and run["peak_cuda_mib"] == "n/a (CPU)"
    # the tiny BERT outside its embedding tables: its layers (attention, MLP, two LayerNorms), the embeddings'
    # LayerNorm and the pooler
    hidden, mlp = TINY_BERT["hidden_size"], TINY_BERT["intermediate_size"]
    layer = 4 * (hidden * hidden + hidden) + (hidden * mlp + mlp) + (mlp * hidden + hidden) + 2 * 2 * hidden
    expected = TINY_BERT["num_hidden_layers"] * layer + 2 * hidden + (hidden * hidden + hidden)
    assert train["encoder_parameters_outside_embeddings"] == expected


def test_reported_losses_are_what_the_losses_compute(report):
    from eval.bench_loss import loss_value, random_embeddings
    from eval.gpu_check import fresh

    batch = report["loss_checks"]["batch"]
    cpu = torch.device("cpu")
    for name in ("InfoNCE fixed 0.05", "InfoNCE TempNet", "iSogCLR"):
        direct = loss_value(fresh(name, cpu), random_embeddings(batch), torch.arange(batch)).item()
        assert report["loss_checks"]["rows"][name]["loss"] == pytest.approx(direct, rel=1e-5), name
    # and the fixed-tau InfoNCE by hand: cross-entropy of the cosines / 0.05 against positives and hard negatives
    anchors, positives, negatives = (e.detach() for e in random_embeddings(batch))
    cosines = F.normalize(anchors, dim=1) @ F.normalize(torch.cat([positives, negatives]), dim=1).T
    by_hand = F.cross_entropy(cosines / 0.05, torch.arange(batch)).item()
    assert report["loss_checks"]["rows"]["InfoNCE fixed 0.05"]["loss"] == pytest.approx(by_hand, rel=1e-5)


def test_bench_loss_quick_runs_on_the_cpu_without_touching_the_committed_results(mirror, monkeypatch, tmp_path):
    from eval import bench_loss

    monkeypatch.setenv("TEMPNLP_MIRROR", str(mirror))
    results = ROOT / "eval" / "results"
    committed = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in results.glob("bench_loss.*")}
    output = tmp_path / "bench.json"
    bench_loss.main(["--device", "cpu", "--quick", "--output", str(output)])
    result = json.loads(output.read_text(encoding="utf-8"))
    assert result["device"] == "cpu" and result["command"] == "python -m eval.bench_loss --quick"
    names = list(bench_loss.variants(bench_loss._Dimension384(), with_queue=False))
    for batch in (16, 64):
        rows = {row["loss"]: row for row in result["loss_only"] if row["batch"] == batch}
        assert list(rows) == names and all(row["ms"] > 0 for row in rows.values())
    assert len(result["training_step"]) == len(names) + 1 and result["training_step"][0]["batch"] == 8
    assert output.with_suffix(".md").read_text(encoding="utf-8").startswith("# Loss benchmark")
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in results.glob("bench_loss.*")}
    assert after == committed


def test_the_committed_results_are_a_cpu_quick_run_of_this_code():
    from eval.bench_loss import loss_value, random_embeddings
    from eval.gpu_check import VARIANTS, fresh

    committed = json.loads((ROOT / "eval" / "results" / "gpu_check.json").read_text(encoding="utf-8"))
    assert committed["command"] == "python eval/gpu_check.py --device cpu --quick"
    assert committed["variants"] == VARIANTS and all(section in committed for section in SECTIONS)
    assert "await a GPU run" in (ROOT / "eval" / "results" / "gpu_check.md").read_text(encoding="utf-8")
    batch = committed["loss_checks"]["batch"]
    for name in VARIANTS:
        direct = loss_value(fresh(name, torch.device("cpu")), random_embeddings(batch), torch.arange(batch)).item()
        assert committed["loss_checks"]["rows"][name]["loss"] == pytest.approx(direct, rel=1e-5), name
