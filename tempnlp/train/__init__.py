"""Trainer integration for tempnlp losses."""

from tempnlp.train.callbacks import TemperatureLoggingCallback, log_temperature

__all__ = ["TemperatureLoggingCallback", "log_temperature"]
