"""The README's first command: a short supervised-SimCSE run of MiniLM on SNLI with an adaptive temperature.

It reads the model and data through the mirror (``TEMPNLP_MIRROR``) or the Hub, measures STS-B test Spearman
before and after, and prints the loss and temperature every few steps.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from sentence_transformers import (
    SentenceTransformer,
    SentenceTransformerTrainer,
    SentenceTransformerTrainingArguments,
)
from sentence_transformers.base.sampler import BatchSamplers
from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from tempnlp.data import resolve_model, snli_triplets
from tempnlp.evaluation import stsb_evaluator
from tempnlp.losses import InfoNCELoss
from tempnlp.temperature import POLICIES
from tempnlp.train import log_temperature


class PrintLogCallback(TrainerCallback):
    """One readable line per training log: step, loss, learning rate and temperature."""

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:
        if not logs or "loss" not in logs:
            return
        tau = ""
        if "tau_mean" in logs:
            tau = f"  tau {logs['tau_mean']:.4f} (min {logs['tau_min']:.4f}, max {logs['tau_max']:.4f})"
        print(
            f"step {state.global_step:>4}/{state.max_steps}  loss {logs['loss']:.4f}  "
            f"lr {logs.get('learning_rate', 0.0):.2e}{tau}",
            flush=True,
        )


def run_quickstart(
    model_id: str = "sentence-transformers/all-MiniLM-L6-v2",
    temperature: str = "macl",
    steps: int = 60,
    batch_size: int = 32,
    learning_rate: float = 5e-5,
    max_seq_length: int = 32,
    output_dir: str = "runs/quickstart",
    seed: int = 42,
) -> dict[str, float]:
    if temperature not in POLICIES:
        raise ValueError(f"Unknown temperature policy {temperature!r}; choose one of {', '.join(POLICIES)}.")
    logging.getLogger("tempnlp").setLevel(logging.INFO)
    start = time.perf_counter()
    path = resolve_model(model_id)
    print(f"model: {model_id} -> {path}", flush=True)
    model = SentenceTransformer(path, trust_remote_code=False)
    eval_seq_length = model.max_seq_length  # evaluate at the model's own length, train at SimCSE's 32
    train_dataset = snli_triplets("train", limit=steps * batch_size)
    print(f"data: {len(train_dataset)} SNLI triplets (premise, entailment, contradiction)", flush=True)
    evaluator = stsb_evaluator("test")
    before = evaluator(model)[evaluator.primary_metric]
    print(f"STS-B test Spearman before training: {100 * before:.2f}", flush=True)

    policy = POLICIES[temperature]()
    loss = InfoNCELoss(model, temperature=policy)
    print(f"loss: InfoNCELoss(temperature={policy})", flush=True)
    args = SentenceTransformerTrainingArguments(
        output_dir=output_dir,
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        warmup_steps=0.1,  # a float is a ratio of the run
        logging_steps=max(1, steps // 12),
        save_strategy="no",
        report_to="none",
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        seed=seed,
    )
    model.max_seq_length = max_seq_length
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train_dataset, loss=loss)
    trainer.remove_callback(ProgressCallback)  # our one-line-per-log printer replaces the dict dumps
    log_temperature(trainer)
    trainer.add_callback(PrintLogCallback())
    trainer.train()
    model.max_seq_length = eval_seq_length

    after = evaluator(model)[evaluator.primary_metric]
    model.save_pretrained(str(Path(output_dir) / "final"))
    elapsed = time.perf_counter() - start
    print(
        f"\nSTS-B test Spearman (cosine, x100)\n  before  {100 * before:6.2f}\n  after   {100 * after:6.2f}"
        f"   ({100 * (after - before):+.2f})\nsaved to {Path(output_dir) / 'final'}  ({elapsed:.0f} s)",
        flush=True,
    )
    return {"stsb_before": before, "stsb_after": after, "seconds": elapsed}
