"""Temperature policies: where tau is computed.

Every policy is an ``nn.Module`` mapping a block of cosine similarities to the temperature that divides them,
and may observe the objective's row statistics after the loss (see :mod:`tempnlp.temperature.base`).
"""

from tempnlp.temperature.base import RowStatistics, TemperaturePolicy, temperature_stats
from tempnlp.temperature.cooldown import CooldownTemperature
from tempnlp.temperature.cosine_schedule import CosineScheduleTemperature
from tempnlp.temperature.dystress import DySTreSSTemperature
from tempnlp.temperature.fixed import FixedTemperature
from tempnlp.temperature.global_dro import GlobalDROTemperature
from tempnlp.temperature.hardness import Hardness
from tempnlp.temperature.individual import IndividualTemperature
from tempnlp.temperature.learnable import LearnableTemperature
from tempnlp.temperature.macl import MACLTemperature
from tempnlp.temperature.tempnet import TempNetTemperature

__all__ = [
    "POLICIES",
    "CooldownTemperature",
    "CosineScheduleTemperature",
    "DySTreSSTemperature",
    "FixedTemperature",
    "GlobalDROTemperature",
    "Hardness",
    "IndividualTemperature",
    "LearnableTemperature",
    "MACLTemperature",
    "RowStatistics",
    "TempNetTemperature",
    "TemperaturePolicy",
    "as_policy",
    "temperature_stats",
]

#: The policies by the name each declares (recipes' ``loss.temperature.policy``), in the order of the README.
POLICIES: dict[str, type[TemperaturePolicy]] = {
    cls.name: cls
    for cls in (
        FixedTemperature,
        LearnableTemperature,
        MACLTemperature,
        DySTreSSTemperature,
        IndividualTemperature,
        TempNetTemperature,
        GlobalDROTemperature,
        CosineScheduleTemperature,
        CooldownTemperature,
        Hardness,
    )
}


def as_policy(temperature: object, *, argument: str = "temperature") -> TemperaturePolicy:
    """Accept a number (a fixed temperature) or a policy instance; anything else is a TypeError."""
    if isinstance(temperature, TemperaturePolicy):
        return temperature
    if isinstance(temperature, type) and issubclass(temperature, TemperaturePolicy):
        raise TypeError(
            f"{argument} got the class {temperature.__name__}, not an instance: pass {temperature.__name__}(...)."
        )
    if isinstance(temperature, (int, float)) and not isinstance(temperature, bool):
        return FixedTemperature(temperature)
    raise TypeError(
        f"{argument} must be a positive number or a TemperaturePolicy (e.g. FixedTemperature(0.05), "
        f"MACLTemperature(), DySTreSSTemperature()), got {type(temperature).__name__} ({temperature!r})."
    )
