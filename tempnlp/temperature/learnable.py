from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from tempnlp._checks import ordered_bounds, positive_float
from tempnlp.temperature.base import GRADIENT_TRAINED_TAU, TemperaturePolicy


class LearnableTemperature(TemperaturePolicy):
    """A single temperature learned with the encoder, parametrised as CLIP's ``logit_scale = log(1/tau)``.

    The temperature is kept at ``tau >= min_tau`` (CLIP keeps ``1/tau <= 100``, i.e. ``min_tau=0.01``) as CLIP
    keeps it: the parameter itself is projected back into the bound, in place, before every forward pass (so
    after each optimizer step) and when a state dict is loaded. A temperature pressed against the bound
    therefore leaves it as soon as the update points back (with SGD at the first such step; with Adam once its
    first moment turns). A plain ``clamp`` in the graph would give it zero gradient there for good, and a
    straight-through clamp would let the parameter drift past the bound, leaving a dead zone to cross on the
    way back. Because the projection is in place, a tensor passed in for the parameter through
    ``torch.func.functional_call`` is projected too.

    The parameter is named ``log_inverse_tau``; inside a tempnlp loss it is ``objective.temperature.log_inverse_tau``,
    so a regular expression gives it its own learning rate through sentence-transformers' training arguments::

        args = SentenceTransformerTrainingArguments(..., learning_rate_mapping={r"temperature\\.": 1e-3})

    Weight decay pulls ``log(1/tau)`` towards 0 (tau towards 1); keep ``weight_decay=0`` (the default) or
    exclude it, as CLIP does. Only InfoNCE takes it: DCL's and SogCLR's gradients in tau would drive it to a bound
    (``tempnlp/objectives/rules.py``).

    Args:
        init: initial temperature (CLIP: 0.07).
        min_tau: lower bound of the temperature (CLIP: 0.01).

    Reference: Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision",
    arXiv 2103.00020.
    """

    name = "learnable"
    summary = "tau learned as log(1/tau), projected to tau >= min_tau before every forward pass (CLIP)"
    paper = "Radford et al. 2021 (CLIP)"
    usage = "LearnableTemperature(init=0.07, min_tau=0.01)"
    citation = """
@inproceedings{radford2021clip,
    title = {Learning Transferable Visual Models From Natural Language Supervision},
    author = {Radford, Alec and Kim, Jong Wook and Hallacy, Chris and others},
    booktitle = {International Conference on Machine Learning (ICML)},
    year = {2021},
    url = {https://arxiv.org/abs/2103.00020},
}
"""

    def __init__(self, init: float = 0.07, min_tau: float = 0.01) -> None:
        super().__init__()
        self.init = positive_float("init", init, hint="CLIP starts at 0.07.")
        self.min_tau = positive_float("min_tau", min_tau, hint="CLIP uses 0.01 (1/tau <= 100).")
        ordered_bounds("min_tau", self.min_tau, "init", self.init)
        self.log_inverse_tau = nn.Parameter(torch.tensor(math.log(1.0 / self.init)))
        self._max_log_inverse_tau = math.log(1.0 / self.min_tau)

    @property
    def requires(self) -> frozenset[str]:
        return frozenset({GRADIENT_TRAINED_TAU})

    def compute(self, similarities: Tensor, positive_similarities: Tensor, **context: Any) -> Tensor:
        # Projection, not a clamp in the graph; unconditional, so that no host sync decides whether to project.
        # Through .data, so that the version counter stays put: a second call in the same graph (the symmetric
        # direction) must not invalidate what the first call saved, and only the first call can change the value.
        self._project()
        return torch.exp(-self.log_inverse_tau)

    def _project(self) -> None:
        self.log_inverse_tau.data.clamp_(max=self._max_log_inverse_tau)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._project()

    def get_config_dict(self) -> dict[str, Any]:
        return {"init": self.init, "min_tau": self.min_tau}
