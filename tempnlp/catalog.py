"""What tempnlp offers, read from the losses' and policies' own declarations (``name``, ``summary``, ``paper``,
``usage``): the text of ``tempnlp losses`` and the README's two tables (a test keeps the README equal to them)."""

from __future__ import annotations


def _registries():
    from tempnlp.losses import LOSSES
    from tempnlp.temperature import POLICIES

    return LOSSES, POLICIES


def describe() -> str:
    losses, policies = _registries()
    lines = ["Losses (tempnlp.losses):"]
    lines += [f"  {name:<22} {cls.summary}  [{cls.paper}]" for name, cls in losses.items()]
    lines += ["", "Temperature policies (tempnlp.temperature; recipes name them by key):"]
    lines += [f"  {key:<11} {cls.__name__:<22} {cls.summary}  [{cls.paper}]" for key, cls in policies.items()]
    lines += [
        "",
        "Any policy goes with any loss (loss.temperature in a recipe); the few combinations that make no sense are "
        "refused with the reason. Recipes name a loss by its class name, or sentence-transformers' "
        "MultipleNegativesRankingLoss (scale = 1/tau) as the fixed-temperature reference.",
    ]
    return "\n".join(lines)


def readme_tables() -> str:
    """The loss and policy tables of the README, as markdown."""
    losses, policies = _registries()
    rows = ["| `tempnlp.losses` | objective | paper | usage |", "|---|---|---|---|"]
    rows += [f"| `{name}` | {cls.summary} | {cls.paper} | `{cls.usage}` |" for name, cls in losses.items()]
    rows += ["", "| `tempnlp.temperature` | recipe key | tau is ... | paper | usage |", "|---|---|---|---|---|"]
    rows += [
        f"| `{cls.__name__}` | `{key}` | {cls.summary} | {cls.paper} | `{cls.usage}` |" for key, cls in policies.items()
    ]
    return "\n".join(rows)
