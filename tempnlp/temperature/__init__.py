"""Temperature policies: where tau is computed.

Every policy is an ``nn.Module`` mapping a block of cosine similarities to the temperature that divides them.
See :mod:`tempnlp.temperature.base` for the shapes a policy may return.
"""

from tempnlp.temperature.base import TemperaturePolicy, temperature_stats
from tempnlp.temperature.dystress import DySTreSSTemperature
from tempnlp.temperature.fixed import FixedTemperature
from tempnlp.temperature.learnable import LearnableTemperature
from tempnlp.temperature.macl import MACLTemperature

__all__ = [
    "POLICIES",
    "DySTreSSTemperature",
    "FixedTemperature",
    "LearnableTemperature",
    "MACLTemperature",
    "TemperaturePolicy",
    "as_policy",
    "temperature_stats",
]

#: Short names of the policies, as used on the command line and in recipes.
POLICIES: dict[str, type[TemperaturePolicy]] = {
    "fixed": FixedTemperature,
    "learnable": LearnableTemperature,
    "macl": MACLTemperature,
    "dystress": DySTreSSTemperature,
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
