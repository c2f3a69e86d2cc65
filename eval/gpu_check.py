"""A GPU check anyone can run: tempnlp's losses on one device, against sentence-transformers' MNRL.

For the loss variants of :data:`VARIANTS` (built by ``eval.bench_loss.variants``), six sections:

1. Loss checks, random 384-d embeddings (anchor, positive, one hard negative; ``bench_loss.random_embeddings``):
   the fp32 loss of a freshly built loss; host synchronisations of one forward + backward, counted with
   ``torch.cuda.set_sync_debug_mode("warn")`` (CUDA only); the dtypes the loss computes in when called inside
   ``torch.autocast(bf16)``: the similarity matmul's output (recorded at the aten level), what the temperature
   policy is handed, the loss value; and every tensor of the loss (buffers, parameters, tensor attributes) that
   is not on the device or not float32 after a step.
2. A whole training step of all-MiniLM-L6-v2 (encode, loss, backward; max length 32) against MNRL's at two batch
   sizes, under the autocast ``tempnlp train`` would pick (bf16 on a recent GPU, none on the CPU): interleaved
   rounds, medians, ratios (CUDA events on a GPU, perf_counter on the CPU).
3. Loss only at a gathered batch (4096): forward + backward time against MNRL and, on CUDA, the peak memory one
   step allocates above its inputs (``torch.cuda.max_memory_allocated``).
4. bf16 autocast against fp32 for the loss alone: loss difference, relative error of the embeddings' gradient,
   and for losses that learn, the relative difference of one update of their state (per-sample tau, u, SogCLR's
   estimate: buffer after - buffer before) or of the gradient of their own parameters (a learnable tau, TempNet).
5. GradCache (``mini_batch_size``) against none, both under bf16 autocast on MiniLM (dropout off so both see
   the same network): loss difference and relative error of the encoder's gradient; the same in fp32, which
   tells GradCache's own error from bf16 rounding.
6. ``tempnlp train`` (recipes/sup-simcse-nli.yaml on the mirror's SNLI, run in this process) with two
   ``dataloader_num_workers`` settings: median and p90 step time, peak CUDA memory, and the encoder's MFU:
   6 x (encoder parameters outside the embedding tables) x (tokens the encoder processed per step, padding
   included) / median step time / the GPU's peak bf16 FLOP/s (``--peak-tflops`` or a table of known GPUs).

``--quick`` runs every section at toy sizes with a tiny random BERT in place of MiniLM, in about a minute on a
CPU (CI runs it). Anything that needs CUDA reads "n/a" on the CPU instead of a number. Writes
eval/results/gpu_check.json and .md (or ``--output``, a .json path, with the .md beside it).

    TEMPNLP_MIRROR=../shared/mirror python eval/gpu_check.py --device cuda     # sized for < 10 minutes on one GPU
    TEMPNLP_MIRROR=../shared/mirror python -m eval.gpu_check --device cpu --quick --output /tmp/gpu_check.json
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file (python eval/gpu_check.py): make eval and tempnlp importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import contextlib
import gc
import math
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import TrainerCallback

from eval.bench_loss import (
    MNRL,
    MODEL,
    _Dimension384,
    bench_loss_only,
    bench_training_step,
    default_device,
    load_encoder,
    loss_value,
    random_embeddings,
    snli_features,
    synchronize,
    variants,
)
from tempnlp._io import write_json_atomic, write_text_atomic
from tempnlp.data import resolve_model
from tempnlp.provenance import machine_description, package_versions
from tempnlp.train.run import resolve_precision

RESULTS = Path(__file__).parent / "results"
RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "sup-simcse-nli.yaml"

#: The variants checked, by their names in eval.bench_loss.
VARIANTS = [
    "InfoNCE fixed 0.05",
    "InfoNCE learnable",
    "InfoNCE MACL",
    "InfoNCE DySTreSS",
    "DCL",
    "InfoNCE individual",
    "InfoNCE TempNet",
    "SogCLR",
    "iSogCLR",
]

#: Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's data sheets, TFLOP/s, matched against
#: torch.cuda.get_device_name() in this order. Any other GPU: pass --peak-tflops.
PEAK_BF16_TFLOPS = [
    (r"H100.*PCIe", 756.0),
    (r"H100 NVL", 835.0),
    (r"\bH100\b", 989.0),
    (r"\bH200\b", 989.0),
    (r"\bA100\b", 312.0),
    (r"\bL40S\b", 362.0),
    (r"\bL4\b", 121.0),
    (r"\bA10\b", 125.0),
]

NA_CPU = "n/a (CPU)"


@dataclass(frozen=True)
class Sizes:
    check_batch: int  # sections 1 and 4
    step_batches: tuple[int, ...]  # section 2
    step_rounds: int
    step_warmup: int
    gathered_batch: int  # section 3
    gathered_rounds: int
    gradcache_batch: int  # section 5
    mini_batch_size: int
    train_batch: int  # section 6
    train_steps: int
    workers: tuple[int, ...]


FULL = Sizes(512, (64, 512), 10, 2, 4096, 10, 512, 64, 512, 20, (0, 4))
QUICK = Sizes(16, (8, 16), 2, 1, 256, 2, 16, 4, 16, 3, (0, 1))

#: The quick mode's encoder: a random BERT this small (with MiniLM's tokenizer) keeps every section to seconds.
TINY_BERT = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}


# -- helpers ---------------------------------------------------------------------------------------------------


def tiny_bert(folder: Path) -> Path:
    """A sentence-transformers folder: a random :data:`TINY_BERT` with all-MiniLM-L6-v2's tokenizer, mean pooling."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(MODEL))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tokenizer), **TINY_BERT)).save_pretrained(folder / "bert")
    tokenizer.save_pretrained(folder / "bert")
    transformer = Transformer(str(folder / "bert"), max_seq_length=32)
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(folder / "model"))
    return folder / "model"


def fresh(name: str, device: torch.device, model: Any = None, **options: Any) -> nn.Module:
    """The variant built anew from the same seed (TempNet's network starts the same each time), on ``device``."""
    torch.manual_seed(0)
    return variants(model if model is not None else _Dimension384(), False, [name], **options)[name].to(device)


def relative_error(test: Tensor, reference: Tensor) -> float:
    """||test - reference|| / ||reference|| in float64 (0 when both are zero, inf when only the reference is)."""
    difference = (test.double() - reference.double()).norm().item()
    scale = reference.double().norm().item()
    if scale == 0.0:
        return 0.0 if difference == 0.0 else math.inf
    return difference / scale


def float_buffers(loss: nn.Module) -> dict[str, Tensor]:
    return {name: buffer.detach().clone() for name, buffer in loss.named_buffers() if buffer.is_floating_point()}


def own_parameters(loss: nn.Module) -> list[tuple[str, nn.Parameter]]:
    model = getattr(loss, "model", None)
    encoder = {id(p) for p in model.parameters()} if isinstance(model, nn.Module) else set()
    return [(name, p) for name, p in loss.named_parameters() if p.requires_grad and id(p) not in encoder]


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def bf16_autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 where the device runs it (any CPU; a GPU that reports bf16 support), else None (fp32)."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return None
    return torch.bfloat16


class MatmulDtypes(TorchDispatchMode):
    """Records the shape and dtype of every matrix product's output, below autocast (what really ran)."""

    PRODUCTS = (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.bmm, torch.ops.aten.baddbmm)

    def __init__(self) -> None:
        super().__init__()
        self.outputs: list[dict[str, Any]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket in self.PRODUCTS:
            self.outputs.append({"op": str(func), "shape": list(out.shape), "dtype": str(out.dtype)})
        return out


def count_host_syncs(step: Callable[[], None], device: torch.device) -> tuple[int | str, list[str]]:
    """Synchronising CUDA calls during ``step`` and where Python raised them; n/a on the CPU."""
    if device.type != "cuda":
        return NA_CPU, []
    synchronize(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    sites = [f"{Path(w.filename).name}:{w.lineno}" for w in caught if "synchroniz" in str(w.message).lower()]
    return len(sites), sites


def misplaced_tensors(loss: nn.Module, device: torch.device) -> list[dict[str, str]]:
    """Buffers, parameters and tensor attributes of the loss (the encoder excluded) that are not on ``device`` or
    not float32. Integer and bool buffers (indices, counters, seen flags) are listed too, as what they are."""
    model = getattr(loss, "model", None)
    encoder = {id(m) for m in model.modules()} if isinstance(model, nn.Module) else set()
    found = []
    for prefix, module in loss.named_modules():
        if id(module) in encoder:
            continue
        tensors: list[tuple[str, str, Tensor]] = [
            *(("buffer", name, t) for name, t in module.named_buffers(recurse=False) if t is not None),
            *(("parameter", name, t) for name, t in module.named_parameters(recurse=False)),
        ]
        for name, value in vars(module).items():
            if isinstance(value, Tensor):
                tensors.append(("attribute", name, value))
            elif isinstance(value, list | tuple):
                tensors += [("attribute", f"{name}[{i}]", t) for i, t in enumerate(value) if isinstance(t, Tensor)]
        for kind, name, tensor in tensors:
            issues = [
                *(["off the device"] if tensor.device.type != device.type else []),
                *(["not float32"] if tensor.dtype != torch.float32 else []),
            ]
            if issues:
                found.append(
                    {
                        "name": f"{prefix}.{name}" if prefix else name,
                        "kind": kind,
                        "dtype": str(tensor.dtype).removeprefix("torch."),
                        "device": str(tensor.device),
                        "issue": " and ".join(issues),
                    }
                )
    return found


# -- sections 1 and 4: one variant's loss, numerics and dtypes ----------------------------------------------------


def check_variant(name: str, batch: int, device: torch.device) -> tuple[dict[str, Any], dict[str, Any]]:
    """Section 1's and section 4's rows of one variant, from the same inputs."""
    embeddings = random_embeddings(batch, device)
    labels = torch.arange(batch, device=device)
    low = bf16_autocast_dtype(device)

    def run(loss: nn.Module, dtype: torch.dtype | None, recorder: MatmulDtypes | None = None):
        before = float_buffers(loss)
        with autocast(device, dtype), recorder if recorder is not None else contextlib.nullcontext():
            value = loss_value(loss, embeddings, labels)
        value.backward()
        grads = torch.cat([e.grad.reshape(-1) for e in embeddings])
        for e in embeddings:
            e.grad = None
        after = float_buffers(loss)
        updates = {key: after[key] - before[key] for key in before}
        parameter_grads = {key: p.grad.detach().clone() for key, p in own_parameters(loss) if p.grad is not None}
        return value, grads, updates, parameter_grads

    value, grads, updates, parameter_grads = run(fresh(name, device), None)

    test = fresh(name, device)
    recorder, handed = MatmulDtypes(), []
    hook = test.temperature.register_forward_pre_hook(lambda module, args: handed.append(str(args[0].dtype)))
    value_low, grads_low, updates_low, parameter_grads_low = run(test, low, recorder)
    hook.remove()

    # the similarity products: each anchor (batch rows) against the positives and hard negatives (2 x batch)
    similarity = sorted({o["dtype"] for o in recorder.outputs if o["shape"] == [batch, 2 * batch]})
    state: dict[str, float] = {
        f"update of {key}": relative_error(updates_low[key], delta)
        for key, delta in updates.items()
        if bool(delta.any()) or bool(updates_low[key].any())
    }
    state.update(
        {f"gradient of {key}": relative_error(parameter_grads_low[key], g) for key, g in parameter_grads.items()}
    )

    probe = fresh(name, device)

    def step() -> None:
        loss_value(probe, embeddings, labels).backward()
        for e in embeddings:
            e.grad = None

    step()  # first-call work (cuBLAS handles, lazy allocations) is not a per-step cost
    syncs, sites = count_host_syncs(step, device)
    checks = {
        "loss": value.item(),
        "host_syncs_per_step": syncs,
        "host_sync_sites": sites,
        "autocast_dtype": str(low).removeprefix("torch.") if low is not None else "none (fp32)",
        "similarity_matmul_dtype": [d.removeprefix("torch.") for d in similarity] or "no similarity matmul seen",
        "policy_input_dtype": sorted({d.removeprefix("torch.") for d in handed}),
        "loss_dtype": str(value_low.dtype).removeprefix("torch."),
        "matmul_outputs": recorder.outputs,
        "not_on_device_or_not_float32": misplaced_tensors(probe, device),
    }
    numerics = {
        "loss_fp32": value.item(),
        "loss_bf16": value_low.item(),
        "loss_abs_diff": abs(value_low.item() - value.item()),
        "embedding_grad_rel_err": relative_error(grads_low, grads),
        "state_update_rel_diff": state or "n/a (nothing learned in a step)",
    }
    return checks, numerics


# -- section 3: loss only at a gathered batch -----------------------------------------------------------------


def gathered_batch(batch: int, rounds: int, device: torch.device) -> dict[str, Any]:
    rows = bench_loss_only([batch], rounds, device, [MNRL, *VARIANTS])
    result: dict[str, Any] = {
        "batch": batch,
        "rounds": rounds,
        "inputs": "random 384-d anchor, positive and hard negative (a gathered batch: one device's loss)",
        "rows": {row["loss"]: {"ms": row["ms"], "ratio_vs_mnrl": row["ratio_vs_mnrl"]} for row in rows},
    }
    labels = torch.arange(batch, device=device)
    for name in [MNRL, *VARIANTS]:
        if device.type != "cuda":
            result["rows"][name]["peak_mib_above_inputs"] = NA_CPU
            continue
        loss = fresh(name, device)
        embeddings = random_embeddings(batch, device)

        def step(loss=loss, embeddings=embeddings) -> None:
            loss_value(loss, embeddings, labels).backward()
            for e in embeddings:
                e.grad = None

        step()
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        synchronize(device)
        result["rows"][name]["peak_mib_above_inputs"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        del loss, embeddings
    return result


# -- section 5: GradCache against none --------------------------------------------------------------------------


def gradcache(model: nn.Module, batch: int, mini_batch_size: int, device: torch.device) -> dict[str, Any]:
    low = bf16_autocast_dtype(device)
    features = snli_features(model, batch)
    labels = torch.arange(batch, device=device)
    parameters = [p for p in model.parameters() if p.requires_grad]
    model.eval()  # no dropout: both runs see one network (GradCache replays its own dropout, not the other run's)

    def step(name: str, dtype: torch.dtype | None, **options: Any) -> tuple[float, Tensor]:
        loss = fresh(name, device, model, **options)
        model.zero_grad(set_to_none=True)
        # backward inside autocast: GradCache's replay of the encoder runs in it, as under the trainer, whose
        # accelerate wraps the encoder's forward in autocast
        with autocast(device, dtype):
            value = loss([dict(f) for f in features], labels)
            value.backward()
        grads = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in parameters]
        return value.item(), torch.cat(grads).float()

    rows = {}
    try:
        for name in VARIANTS:
            plain, plain_grads = step(name, low)
            cached, cached_grads = step(name, low, mini_batch_size=mini_batch_size)
            rows[name] = {
                "loss_uncached": plain,
                "loss_cached": cached,
                "loss_abs_diff": abs(cached - plain),
                "encoder_grad_rel_err": relative_error(cached_grads, plain_grads),
            }
            # the same comparison in fp32 tells GradCache's own error from bf16 rounding
            plain, plain_grads = step(name, None)
            cached, cached_grads = step(name, None, mini_batch_size=mini_batch_size)
            rows[name]["fp32_loss_abs_diff"] = abs(cached - plain)
            rows[name]["fp32_encoder_grad_rel_err"] = relative_error(cached_grads, plain_grads)
    finally:
        model.zero_grad(set_to_none=True)
        model.train()
    return {
        "batch": batch,
        "mini_batch_size": mini_batch_size,
        "autocast_dtype": str(low).removeprefix("torch.") if low is not None else "none (fp32)",
        "inputs": "SNLI (anchor, positive), the encoder at max length 32, in eval mode",
        "rows": rows,
    }


# -- section 6: tempnlp train ----------------------------------------------------------------------------------


class TokenCounter(TrainerCallback):
    """Tokens the encoder's first module receives in each optimizer step (padding included: shapes only, so
    counting never synchronises with the device)."""

    def __init__(self) -> None:
        self.per_step: list[int] = []
        self.parameters: int | None = None
        self._current = 0
        self._hook: Any = None

    def _count(self, module: nn.Module, args: tuple) -> None:
        features = args[0] if args and isinstance(args[0], dict) else {}
        ids = features.get("input_ids")
        if isinstance(ids, Tensor):
            self._current += ids.numel()

    def on_train_begin(self, args, state, control, model=None, **kwargs) -> None:
        self.parameters = non_embedding_parameters(model)
        self._hook = model[0].register_forward_pre_hook(self._count)

    def on_step_begin(self, args, state, control, **kwargs) -> None:
        self._current = 0

    def on_step_end(self, args, state, control, **kwargs) -> None:
        self.per_step.append(self._current)

    def on_train_end(self, args, state, control, **kwargs) -> None:
        if self._hook is not None:
            self._hook.remove()


def peak_tflops(device: torch.device, given: float | None) -> tuple[float | None, str]:
    if given is not None:
        return given, "--peak-tflops"
    if device.type != "cuda":
        return None, NA_CPU
    name = torch.cuda.get_device_name(device)
    for pattern, value in PEAK_BF16_TFLOPS:
        if re.search(pattern, name):
            return value, f"data-sheet dense bf16 peak of {name}"
    return None, f"{name} is not in the table: pass --peak-tflops"


def non_embedding_parameters(model: nn.Module) -> int:
    embedding = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in embedding)


def train_runs(sizes: Sizes, device: torch.device, given_peak: float | None, encoder: str) -> dict[str, Any]:
    from tempnlp.train.recipe import load_recipe
    from tempnlp.train.run import run_recipe

    batch, steps = sizes.train_batch, sizes.train_steps
    common = [
        f"model.name={encoder}",
        f"training.max_steps={steps}",
        f"training.per_device_train_batch_size={batch}",
        f"training.logging_steps={steps}",
        "training.save_strategy='no'",  # quoted: YAML reads a bare no as false
        "training.load_best_model_at_end=false",
        "training.metric_for_best_model=null",
        "training.report_to=none",
        "training.disable_tqdm=true",
        f"data.limit={batch * steps}",
        "evaluation.stsb_validation=false",
        "evaluation.before=false",
        "evaluation.sts=null",
    ]
    if device.type == "cpu" and torch.cuda.is_available():
        common.append("training.use_cpu=true")
    precision = resolve_precision("auto", use_cpu=device.type == "cpu")
    peak, peak_source = peak_tflops(device, given_peak)
    if peak is not None and precision != "bf16" and given_peak is None:
        peak, peak_source = None, f"trained in {precision}, the table holds bf16 peaks: pass --peak-tflops"
    runs = []
    parameters = None
    for workers in sizes.workers:
        recipe, _ = load_recipe(RECIPE, [*common, f"training.dataloader_num_workers={workers}"])
        counter = TokenCounter()
        gc.collect()
        before = None
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device) / 2**20
        with tempfile.TemporaryDirectory(prefix="gpu-check-train-") as folder:
            results = run_recipe(recipe, Path(folder) / "run", callbacks=[counter], log=lambda text: None)
        parameters = counter.parameters
        train = results["train"]
        median = train.get("median_step_seconds")
        tokens = sum(counter.per_step) / len(counter.per_step) if counter.per_step and any(counter.per_step) else None
        flops = 6 * parameters * tokens if tokens is not None and parameters is not None else None
        achieved = flops / median / 1e12 if flops is not None and median else None
        if device.type != "cuda" and given_peak is None:
            mfu: float | str = NA_CPU
        elif achieved is None:
            mfu = "n/a (no step time or token count)"
        else:
            mfu = achieved / peak if peak is not None else f"n/a ({peak_source})"
        runs.append(
            {
                "dataloader_num_workers": workers,
                "steps": train["steps"],
                "timed_steps": train.get("timed_steps"),
                "median_step_seconds": median,
                "p90_step_seconds": train.get("p90_step_seconds"),
                "peak_cuda_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else NA_CPU,
                "cuda_mib_allocated_before": before if before is not None else NA_CPU,
                "tokens_per_step": tokens,
                "achieved_tflops": achieved,
                "mfu": mfu,
            }
        )
    return {
        "recipe": str(RECIPE.relative_to(RECIPE.parents[1])),
        # the quick mode's encoder lives in a temporary folder: name it rather than the folder
        "overrides": [
            "model.name=<encoder>" if item.startswith("model.name=") else item
            for item in [*common, "training.dataloader_num_workers=<workers>"]
        ],
        "batch": batch,
        "steps": steps,
        "precision": precision,
        "peak_tflops": peak,
        "peak_source": peak_source,
        "encoder_parameters_outside_embeddings": parameters,
        "flops_per_step": "6 x encoder_parameters_outside_embeddings x tokens_per_step",
        "runs": runs,
    }


# -- the report ------------------------------------------------------------------------------------------------


def _cell(value: Any, spec: str) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return format(value, spec)
    return str(value)


def to_markdown(result: dict[str, Any]) -> str:
    sizes = result["sizes"]
    checks, numerics = result["loss_checks"]["rows"], result["bf16_vs_fp32"]["rows"]
    steps, gathered = result["step_vs_mnrl"], result["loss_only_gathered"]
    cached = result["gradcache_bf16"]
    batches = steps["batches"]
    lines = [
        "# GPU check",
        "",
        f"Device: {result['device']} ({result['device_name']}). Machine: {result['machine']}; load average "
        f"{result['load_average_1min_at_start']:.1f} at the start, {result['load_average_1min_at_end']:.1f} at the "
        f"end, on {result['cpus']} CPUs. Command: `{result['command']}`.",
        "",
    ]
    if result["quick"]:
        lines += [
            "**CPU quick mode**: toy sizes and a tiny random encoder that show every section runs, not figures to "
            "judge the losses by. The GPU figures (all-MiniLM-L6-v2, batches 64 / 512, a gathered batch of 4096, "
            "training at batch 512) await a GPU run of `python eval/gpu_check.py --device cuda`."
            if result["device"] == "cpu"
            else "**Quick mode**: toy sizes and a tiny random encoder that show every section runs, not figures to "
            "judge the losses by.",
            "",
        ]
    lines += [
        f"Encoder of the training steps, GradCache and `tempnlp train`: {result['encoder']}.",
        "",
        f"Loss checks and bf16 at batch {sizes['check_batch']} (random anchor, positive, hard negative); step "
        f"time x MNRL for a whole training step at batch {' / '.join(map(str, batches))} "
        f"(autocast {steps['autocast_dtype']}); loss only at a gathered batch of {gathered['batch']}; GradCache "
        f"at batch {cached['batch']}, mini-batches of {cached['mini_batch_size']}, both under autocast "
        f"{cached['autocast_dtype']} (and both in fp32). Relative errors are ||x - x_fp32|| / ||x_fp32||.",
        "",
        "| variant | loss (fp32) | host syncs / step | similarity dtype (bf16 autocast) | step x MNRL "
        + " / ".join(map(str, batches))
        + f" | loss only @{gathered['batch']}: ms (x MNRL) | peak MiB @{gathered['batch']} | bf16: abs loss diff "
        "| bf16: grad rel. err | bf16: state update rel. diff (max) | GradCache: abs loss diff / grad rel. err "
        "| GradCache fp32: grad rel. err |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in result["variants"]:
        check, number = checks[name], numerics[name]
        ratios = " / ".join(_cell(steps["rows"][str(b)][name]["ratio_vs_mnrl"], ".2f") + "x" for b in batches)
        only = gathered["rows"][name]
        state = number["state_update_rel_diff"]
        state_text = _cell(max(state.values()), ".1e") if isinstance(state, dict) else "-"
        cache = cached["rows"][name]
        dtype = check["similarity_matmul_dtype"]
        lines.append(
            f"| {name} | {check['loss']:.4f} | {check['host_syncs_per_step']} | "
            f"{', '.join(dtype) if isinstance(dtype, list) else dtype} | {ratios} | "
            f"{only['ms']:.2f} ({only['ratio_vs_mnrl']:.2f}x) | {_cell(only['peak_mib_above_inputs'], '.0f')} | "
            f"{number['loss_abs_diff']:.1e} | {number['embedding_grad_rel_err']:.1e} | {state_text} | "
            f"{cache['loss_abs_diff']:.1e} / {cache['encoder_grad_rel_err']:.1e} | "
            f"{cache['fp32_encoder_grad_rel_err']:.1e} |"
        )
    train = result["train"]
    lines += [
        "",
        f"`tempnlp train` ({train['recipe']}, batch {train['batch']}, {train['steps']} steps, {train['precision']}); "
        f"MFU = 6 x {train['encoder_parameters_outside_embeddings']:,} encoder parameters x tokens per step "
        f"/ median step time / peak bf16 FLOP/s ("
        + (
            f"{train['peak_tflops']:.0f} TFLOP/s, {train['peak_source']}"
            if train["peak_tflops"]
            else train["peak_source"]
        )
        + ").",
        "",
        "| dataloader workers | median step s | p90 step s | peak CUDA MiB | tokens / step | TFLOP/s | MFU |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in train["runs"]:
        lines.append(
            f"| {run['dataloader_num_workers']} | {_cell(run['median_step_seconds'], '.3f')} | "
            f"{_cell(run['p90_step_seconds'], '.3f')} | {_cell(run['peak_cuda_mib'], '.0f')} | "
            f"{_cell(run['tokens_per_step'], '.0f')} | {_cell(run['achieved_tflops'], '.3g')} | "
            f"{_cell(run['mfu'], '.1%')} |"
        )
    lines += ["", "Tensors of the losses not on the device or not float32 after a step:", ""]
    for name in result["variants"]:
        found = checks[name]["not_on_device_or_not_float32"]
        listed = ", ".join(f"`{t['name']}` ({t['kind']}, {t['dtype']}, {t['device']})" for t in found) or "none"
        lines.append(f"- {name}: {listed}")
    return "\n".join(lines) + "\n"


# -- main ------------------------------------------------------------------------------------------------------


def run(device: torch.device, quick: bool, given_peak: float | None, command: str) -> dict[str, Any]:
    if not quick:
        return _run(device, FULL, given_peak, command, MODEL, MODEL)
    with tempfile.TemporaryDirectory(prefix="gpu-check-tiny-bert-") as folder:
        encoder = tiny_bert(Path(folder))
        described = (
            "a random BERT ({num_hidden_layers} layers, hidden {hidden_size}, {num_attention_heads} heads, MLP "
            "{intermediate_size})".format(**TINY_BERT)
            + f" with the tokenizer of {MODEL}, mean pooling"
        )
        return _run(device, QUICK, given_peak, command, str(encoder), described)


def _run(
    device: torch.device, sizes: Sizes, given_peak: float | None, command: str, encoder: str, described: str
) -> dict[str, Any]:
    start = time.perf_counter()

    def say(text: str) -> None:
        print(f"[gpu_check {time.perf_counter() - start:5.0f} s] {text}", flush=True)

    result: dict[str, Any] = {
        "command": command,
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
        "machine": machine_description(),
        # timings from a machine busy with other work are noise: say how busy it was
        "load_average_1min_at_start": os.getloadavg()[0],
        "cpus": os.cpu_count(),
        "versions": package_versions(),
        "quick": sizes == QUICK,
        "sizes": asdict(sizes),
        "encoder": described,
        "variants": VARIANTS,
    }
    say("loss checks and bf16 against fp32")
    pairs = {name: check_variant(name, sizes.check_batch, device) for name in VARIANTS}
    inputs = f"bench_loss.random_embeddings({sizes.check_batch}): anchor, positive, hard negative; labels 0..B-1"
    result["loss_checks"] = {
        "batch": sizes.check_batch,
        "inputs": inputs,
        "rows": {name: pair[0] for name, pair in pairs.items()},
    }
    result["bf16_vs_fp32"] = {
        "batch": sizes.check_batch,
        "inputs": inputs,
        "rows": {name: pair[1] for name, pair in pairs.items()},
    }
    model = load_encoder(device, encoder)
    # the precision tempnlp train would pick here (bf16 on a GPU with native bf16, fp16 on an older one, fp32 on
    # the CPU)
    precision = resolve_precision("auto", use_cpu=device.type == "cpu")
    step_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    say("whole training step against MNRL")
    rows: dict[str, dict[str, Any]] = {}
    for batch in sizes.step_batches:
        measured = bench_training_step(
            sizes.step_rounds,
            batch,
            model=model,
            names=[MNRL, *VARIANTS],
            autocast=step_dtype,
            warmup=sizes.step_warmup,
        )
        rows[str(batch)] = {row["loss"]: {"ms": row["ms"], "ratio_vs_mnrl": row["ratio_vs_mnrl"]} for row in measured}
    result["step_vs_mnrl"] = {
        "batches": list(sizes.step_batches),
        "rounds": sizes.step_rounds,
        "autocast_dtype": str(step_dtype).removeprefix("torch.") if step_dtype is not None else "none (fp32)",
        "what": "encode (max length 32) + loss + backward of SNLI (anchor, positive): interleaved rounds, medians",
        "rows": rows,
    }
    say(f"loss only at a gathered batch of {sizes.gathered_batch}")
    result["loss_only_gathered"] = gathered_batch(sizes.gathered_batch, sizes.gathered_rounds, device)
    say("GradCache against none under bf16")
    result["gradcache_bf16"] = gradcache(model, sizes.gradcache_batch, sizes.mini_batch_size, device)
    del model
    say(f"tempnlp train at batch {sizes.train_batch}, dataloader workers {sizes.workers}")
    result["train"] = train_runs(sizes, device, given_peak, encoder)
    result["load_average_1min_at_end"] = os.getloadavg()[0]
    say("done")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default=default_device())
    parser.add_argument(
        "--quick", action="store_true", help="toy sizes and a tiny random BERT: a CPU smoke run of every section"
    )
    parser.add_argument("--peak-tflops", type=float, help="the GPU's peak bf16 TFLOP/s, for the MFU")
    parser.add_argument("--output", type=Path, default=RESULTS / "gpu_check.json", help="JSON path; .md beside")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    command = f"python eval/gpu_check.py --device {args.device}" + (" --quick" if args.quick else "")
    command += f" --peak-tflops {args.peak_tflops:g}" if args.peak_tflops is not None else ""
    result = run(torch.device(args.device), args.quick, args.peak_tflops, command)
    markdown = to_markdown(result)
    write_json_atomic(args.output, result)
    write_text_atomic(args.output.with_suffix(".md"), markdown)
    print(markdown)


if __name__ == "__main__":
    main()
