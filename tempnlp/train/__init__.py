"""Trainer integration for tempnlp losses."""

from tempnlp.train.callbacks import ProgressCallback, TemperatureLoggingCallback, follow_progress, log_temperature
from tempnlp.train.state import LossStateCallback, track_loss_state

__all__ = [
    "LossStateCallback",
    "ProgressCallback",
    "TemperatureLoggingCallback",
    "follow_progress",
    "log_temperature",
    "track_loss_state",
]
