"""Trainer integration for tempnlp losses."""

from tempnlp.train.callbacks import TemperatureLoggingCallback, log_temperature
from tempnlp.train.state import LossStateCallback, track_loss_state

__all__ = ["LossStateCallback", "TemperatureLoggingCallback", "log_temperature", "track_loss_state"]
