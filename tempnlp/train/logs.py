"""Training logs in the output folder: the trainer's log history as JSON and CSV, and per-sample temperature
histograms at every evaluation (JSON, TensorBoard when it is reporting, and a PNG at the end)."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback
from transformers.integrations import TensorBoardCallback

from tempnlp._io import write_bytes_atomic, write_json_atomic, write_text_atomic
from tempnlp._plots import figure_png, pyplot

LOG_JSON = "log_history.json"
LOG_CSV = "log_history.csv"
HISTOGRAM_JSON = "tau_histograms.json"
HISTOGRAM_PNG = "tau_histograms.png"


class StepTimer(TrainerCallback):
    """Time of each optimizer step (forward, backward, optimizer; not logging, evaluation or saving).

    The median is the step cost to compare between runs: on a shared machine a few disturbed steps move the mean,
    not the median. On a GPU the host runs ahead of the device, so the clock is a pair of CUDA events recorded on
    the stream at the step's start and end: nothing waits for the device during training, and the times are read
    once, by :meth:`summary`.
    """

    def __init__(self) -> None:
        self.durations: list[float] = []
        self._start = 0.0
        self._begin_event = None
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []

    @staticmethod
    def _cuda() -> bool:
        return torch.cuda.is_available() and torch.cuda.is_initialized()

    def on_step_begin(self, args, state, control, **kwargs) -> None:
        if self._cuda():
            self._begin_event = torch.cuda.Event(enable_timing=True)
            self._begin_event.record()
        else:
            self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs) -> None:
        if self._begin_event is not None:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._events.append((self._begin_event, end))
            self._begin_event = None
        else:
            self.durations.append(time.perf_counter() - self._start)

    def summary(self) -> dict[str, float]:
        if self._events:  # the one wait for the device, after training
            self._events[-1][1].synchronize()
            self.durations += [begin.elapsed_time(end) / 1000.0 for begin, end in self._events]
            self._events.clear()
        if not self.durations:
            return {}
        values = np.asarray(self.durations)
        return {
            "median_step_seconds": round(float(np.median(values)), 4),
            "p90_step_seconds": round(float(np.quantile(values, 0.9)), 4),
            "timed_steps": int(values.size),
        }


class TrainingLogCallback(TrainerCallback):
    """Rewrites ``log_history.json`` and ``log_history.csv`` (atomically) after every log.

    The files hold the trainer's own ``state.log_history``, which a resumed run restores from its checkpoint, so
    they never hold the steps an interrupted run logged after its last checkpoint twice.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:
        if state.is_world_process_zero:
            write_history(self.folder, state.log_history)


def write_history(folder: Path, history: list[dict[str, Any]]) -> None:
    write_json_atomic(folder / LOG_JSON, history)
    columns: list[str] = []
    for entry in history:
        columns += [key for key in entry if key not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    write_text_atomic(folder / LOG_CSV, buffer.getvalue())


def per_sample_temperatures(loss, direction: int = 0) -> np.ndarray | None:
    """The temperatures of the samples seen so far in one direction (0: anchors, 1: documents of a symmetric loss),
    for losses whose policy keeps one per sample; None otherwise."""
    method = getattr(loss, "sample_temperatures", None)
    values = method(direction) if method is not None else None
    return None if values is None else values.detach().float().cpu().numpy()


def keeps_sample_temperatures(loss) -> bool:
    return per_sample_temperatures(loss) is not None


class TemperatureHistogramCallback(TrainerCallback):
    """At every evaluation and at the end: a histogram of the per-sample temperatures tau_i of the samples seen.

    Bins are log-spaced over the loss's ``[tau_min, tau_max]``. The histograms go to ``tau_histograms.json``,
    to TensorBoard when the trainer reports there, and as curves over training to ``tau_histograms.png``.
    """

    def __init__(self, loss, folder: str | Path, bins: int = 30) -> None:
        self.loss = loss
        self.folder = Path(folder)
        policy = loss.temperature
        low, high = policy.tau_min, policy.tau_max
        if high <= low:  # one value: widen so the bins have room
            low, high = low * 0.9, high * 1.1
        self.edges = np.geomspace(low, high, bins + 1)
        self.histograms: list[dict[str, Any]] = []
        self.trainer = None

    def _summary(self, values: np.ndarray) -> dict[str, Any]:
        if not values.size:
            return {"seen": 0}
        counts, _ = np.histogram(np.clip(values, self.edges[0], self.edges[-1]), bins=self.edges)
        q05, q50, q95 = np.quantile(values, [0.05, 0.5, 0.95])
        return {
            "seen": int(values.size),
            "mean": float(values.mean()),
            "q05": float(q05),
            "median": float(q50),
            "q95": float(q95),
            "counts": counts.tolist(),
        }

    def record(self, state) -> None:
        values = per_sample_temperatures(self.loss)
        if values is None or not state.is_world_process_zero:
            return
        entry: dict[str, Any] = {"step": state.global_step, "epoch": state.epoch, **self._summary(values)}
        self._tensorboard("train/tau_i", values, state.global_step)
        documents = per_sample_temperatures(self.loss, 1)  # the symmetric loss's second side
        if documents is not None:
            entry["document"] = self._summary(documents)
            self._tensorboard("train/tau_i_document", documents, state.global_step)
        self.histograms = [h for h in self.histograms if h["step"] != state.global_step] + [entry]
        write_json_atomic(
            self.folder / HISTOGRAM_JSON, {"edges": self.edges.round(6).tolist(), "histograms": self.histograms}
        )

    def _tensorboard(self, tag: str, values: np.ndarray, step: int) -> None:
        if self.trainer is None or not values.size:
            return
        for callback in self.trainer.callback_handler.callbacks:
            if isinstance(callback, TensorBoardCallback) and getattr(callback, "tb_writer", None) is not None:
                callback.tb_writer.add_histogram(tag, torch.from_numpy(values), step)

    def on_train_begin(self, args, state, control, **kwargs) -> None:
        path = self.folder / HISTOGRAM_JSON
        if state.global_step > 0 and path.is_file():  # resumed: keep the histograms of the steps before
            import json

            self.histograms = [h for h in json.loads(path.read_text())["histograms"] if h["step"] <= state.global_step]

    def on_evaluate(self, args, state, control, **kwargs) -> None:
        self.record(state)

    def on_train_end(self, args, state, control, **kwargs) -> None:
        self.record(state)
        if state.is_world_process_zero and any("counts" in h for h in self.histograms):
            write_bytes_atomic(self.folder / HISTOGRAM_PNG, plot_histograms(self.edges, self.histograms))


def plot_histograms(edges: np.ndarray, histograms: list[dict[str, Any]]) -> bytes:
    plt = pyplot()

    figure, axis = plt.subplots(figsize=(7, 4))
    centres = np.sqrt(edges[:-1] * edges[1:])
    drawn = [h for h in histograms if "counts" in h]
    colours = plt.cm.viridis(np.linspace(0.1, 0.9, len(drawn)))
    for colour, entry in zip(colours, drawn, strict=True):
        fraction = np.asarray(entry["counts"], dtype=float) / max(1, entry["seen"])
        axis.plot(centres, fraction, color=colour, label=f"step {entry['step']} ({entry['seen']} seen)")
    axis.set_xscale("log")
    axis.set_xlabel("per-sample temperature tau_i")
    axis.set_ylabel("fraction of samples seen")
    axis.set_title("Per-sample temperatures during training")
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return figure_png(figure, dpi=110)
