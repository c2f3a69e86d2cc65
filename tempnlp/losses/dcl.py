from __future__ import annotations

from typing import Any

from sentence_transformers.sentence_transformer.model import SentenceTransformer

from tempnlp.losses.base import TemperatureContrastiveLoss
from tempnlp.objectives import DCL
from tempnlp.temperature import TemperaturePolicy


class DCLLoss(TemperatureContrastiveLoss):
    name = "DCLLoss"
    summary = "decoupled contrastive loss (positive removed from the denominator); DCLW with sigma"
    paper = "Yeh et al. 2022 (ECCV), arXiv 2110.06848"
    usage = "DCLLoss(model, temperature=..., sigma=None or 0.5)"
    paper_citation = """
@inproceedings{yeh2022decoupled,
    title = {Decoupled Contrastive Learning},
    author = {Yeh, Chun-Hsiao and Hong, Cheng-Yao and Hsu, Yen-Chi and Liu, Tyng-Luh and Chen, Yubei and LeCun, Yann},
    booktitle = {European Conference on Computer Vision (ECCV)},
    year = {2022},
    url = {https://arxiv.org/abs/2110.06848},
}
"""

    def __init__(
        self,
        model: SentenceTransformer,
        temperature: TemperaturePolicy | float = 0.05,
        sigma: float | None = None,
        symmetric: bool = False,
        anchor_negatives: bool = False,
        check_finite: bool = True,
        queue_size: int = 0,
        queue_momentum: float = 0.995,
        mini_batch_size: int | None = None,
        gather_across_devices: bool = False,
    ) -> None:
        """
        Decoupled contrastive loss (DCL), and DCLW when ``sigma`` is set, with a swappable temperature.

        Like InfoNCE, but the positive is removed from the softmax denominator, which removes the
        negative-positive coupling that makes InfoNCE need large batches. DCLW additionally weights each
        positive pair by ``2 - B * softmax(cos / sigma)`` over the batch (paper: ``sigma=0.5``), so poorly
        aligned positives pull harder.

        Args:
            model: SentenceTransformer model.
            temperature: a positive number or a :class:`~tempnlp.temperature.TemperaturePolicy`; not a
                :class:`~tempnlp.temperature.LearnableTemperature`, which DCL's loss would drive to its floor.
            sigma: None for DCL; the von Mises-Fisher width for DCLW (0.5 in the paper).
            symmetric: average with the document-to-anchor direction (the paper's two-view form).
            anchor_negatives: also use the other anchors as negatives (the paper's SimCLR setting).
            queue_size: keep a momentum queue of this many extra negatives (MoCo / ESimCSE); 0 disables it.
            queue_momentum: EMA rate of the queue's encoder copy (0.995).
            mini_batch_size: embed in mini-batches of this size with GradCache (same loss and gradients, the
                memory of one mini-batch), like ST's CachedMultipleNegativesRankingLoss; None embeds at once.
            gather_across_devices: in multi-process training, compute the loss over the global batch.
            check_finite: raise a ValueError on NaN/inf embeddings or, under a per-sample temperature, an index
                out of range or repeated in the batch (one host read per step; False skips both checks).

        Requirements:
            1. (anchor, positive) pairs or (anchor, positive, negative_1, ..., negative_n) tuples; a batch needs
               at least one negative (batch size > 1 or a negative column).

        Inputs:
            +-------------------------------------------------+--------+
            | Texts                                           | Labels |
            +=================================================+========+
            | (anchor, positive) pairs                        | none   |
            +-------------------------------------------------+--------+
            | (anchor, positive, negative_1, ..., negative_n) | none   |
            +-------------------------------------------------+--------+

        Example:
            ::

                from tempnlp.losses import DCLLoss

                loss = DCLLoss(model, temperature=0.05)             # DCL
                loss = DCLLoss(model, temperature=0.05, sigma=0.5)  # DCLW
        """
        objective = DCL(
            temperature,
            sigma=sigma,
            symmetric=symmetric,
            anchor_negatives=anchor_negatives,
            check_finite=check_finite,
            gather_across_devices=gather_across_devices,
        )
        super().__init__(model, objective, queue_size, queue_momentum, mini_batch_size)

    def get_config_dict(self) -> dict[str, Any]:
        config = {**super().get_config_dict(), "sigma": self.objective.sigma}
        config.pop("same_view_negatives", None)
        return {**config, "anchor_negatives": self.objective.anchor_negatives}
