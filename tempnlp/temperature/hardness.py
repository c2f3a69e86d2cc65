from __future__ import annotations

from typing import Any, Literal

from torch import Tensor

from tempnlp._checks import finite_float
from tempnlp.temperature.base import LOGIT_OFFSET, RowStatistics, TemperaturePolicy

MODES = ("in_batch_negatives", "hard_negatives", "all_negatives")

LLAVE_CITATION = """
@misc{lan2025llave,
    title = {LLaVE: Large Language and Vision Embedding Models with Hardness-Weighted Contrastive Learning},
    author = {Lan, Zhibin and Niu, Liqiang and Meng, Fandong and Zhou, Jie and Su, Jinsong},
    year = {2025},
    eprint = {2503.04812},
    archivePrefix = {arXiv},
}
"""


class Hardness(TemperaturePolicy):
    """Hardness-aware logits on top of any temperature policy, with sentence-transformers' semantics.

    The wrapped policy gives the temperature; this adds ``strength * stopgrad(cos)`` to the negatives' logits after
    the temperature scaling (so the penalty is not divided by tau), which makes hard negatives weigh more in the
    softmax (Lan et al. 2025, LLaVE; EmbeddingGemma). As in ``MultipleNegativesRankingLoss(hardness_mode=...,
    hardness_strength=...)`` it applies to the anchor-to-document direction only:

    * ``in_batch_negatives``: every document that is not the row's own (other rows' positives and hard
      negatives; here also the momentum queue's entries);
    * ``hard_negatives``: the row's own hard-negative columns only;
    * ``all_negatives``: every document but the row's own positive (and the queue's entries).

    A DRO policy inside (individual, global DRO) learns its temperature from the statistics of the unpenalised
    logits: the robust gradient does not see the penalty.

    The defaults of sentence-transformers' docstring: strength 9 for ``in_batch_negatives`` (LLaVE), 5 for
    ``hard_negatives`` (EmbeddingGemma). Objectives that take a logit offset: InfoNCE and DCL.

    Args:
        temperature: the wrapped temperature policy (or a number, a fixed tau); in a recipe,
            ``{policy: hardness, temperature: macl, mode: in_batch_negatives, strength: 9}``.
        mode: which negatives get the penalty.
        strength: alpha >= 0.

    Example::

        loss = InfoNCELoss(model, temperature=Hardness(MACLTemperature(), "in_batch_negatives", 9.0))
    """

    name = "hardness"
    summary = "wraps any policy: adds strength * stopgrad(cos) to the negatives' logits, as ST's hardness_mode"
    paper = "Lan et al. 2025 (LLaVE); sentence-transformers hardness_mode"
    usage = 'Hardness(temperature, mode="in_batch_negatives", strength=9.0)'

    def __init__(
        self,
        temperature: TemperaturePolicy | float = 0.05,
        mode: Literal["in_batch_negatives", "hard_negatives", "all_negatives"] = "in_batch_negatives",
        strength: float = 9.0,
    ) -> None:
        super().__init__()
        from tempnlp.temperature import as_policy

        self.policy = as_policy(temperature, argument="temperature")
        if isinstance(self.policy, Hardness):
            raise ValueError("Hardness wraps a temperature policy, not another Hardness: give one mode and strength.")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}.")
        self.mode = mode
        self.strength = finite_float("strength", strength)
        if self.strength < 0:
            raise ValueError(f"strength must be >= 0 (sentence-transformers' hardness_strength), got {strength}.")
        self.granularity = self.policy.granularity
        # what the wrapped policy declares, it declares too
        self.needs_indices = self.policy.needs_indices
        self.acts_on_revisit = self.policy.acts_on_revisit

    @property
    def requires(self) -> frozenset[str]:
        return self.policy.requires | {LOGIT_OFFSET}

    @property
    def citation(self) -> str:  # type: ignore[override]
        return self.policy.citation + LLAVE_CITATION

    def __getattr__(self, name: str) -> Any:
        # What the wrapped policy knows (num_samples, tau_min/tau_max, sample_temperatures, set_progress,
        # check_partition_size, tau, ...) the wrapper answers with.
        try:
            return super().__getattr__(name)
        except AttributeError:
            policy = self.__dict__.get("_modules", {}).get("policy")
            if policy is None:
                raise
            return getattr(policy, name)

    def attach(self, directions: int) -> None:
        self.policy.attach(directions)

    def compute(self, similarities: Tensor, positive_similarities: Tensor, **context: Any) -> Tensor:
        return self.policy(similarities, positive_similarities, **context)

    def observe(self, row_losses: Tensor, statistics: RowStatistics) -> Tensor:
        return self.policy.observe(row_losses, statistics)

    def logit_offset(self, direction: Any) -> Tensor | None:
        if direction.index != 0 or self.strength == 0:
            return None
        own = direction.own_documents()
        penalised = direction.documents_and_extra()
        if self.mode == "in_batch_negatives":
            penalised = penalised & ~own
        elif self.mode == "hard_negatives":
            penalised = own.clone()
            penalised[:, : direction.batch_size] = False  # the positives' block
        else:
            own_positive = own.clone()
            own_positive[:, direction.batch_size :] = False
            penalised = penalised & ~own_positive
        return (self.strength * direction.similarities.detach()).masked_fill(~penalised, 0.0)

    def get_config_dict(self) -> dict[str, Any]:
        return {"temperature": self.policy, "mode": self.mode, "strength": self.strength}
