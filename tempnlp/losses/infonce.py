from __future__ import annotations

from sentence_transformers.sentence_transformer.model import SentenceTransformer

from tempnlp.losses.base import TemperatureContrastiveLoss
from tempnlp.objectives import InfoNCE
from tempnlp.temperature import TemperaturePolicy


class InfoNCELoss(TemperatureContrastiveLoss):
    name = "InfoNCELoss"
    summary = "InfoNCE / SimCSE / MNRL: in-batch and hard negatives; optional symmetric term"
    paper = "van den Oord et al. 2018; Gao et al. 2021 (SimCSE)"
    usage = "InfoNCELoss(model, temperature=..., symmetric=False)"
    paper_citation = """
@inproceedings{gao2021simcse,
    title = "{S}im{CSE}: Simple Contrastive Learning of Sentence Embeddings",
    author = "Gao, Tianyu and Yao, Xingcheng and Chen, Danqi",
    booktitle = "Proceedings of the 2021 Conference on Empirical Methods in Natural Language Processing",
    year = "2021",
    url = "https://arxiv.org/abs/2104.08821",
}
"""

    def __init__(
        self,
        model: SentenceTransformer,
        temperature: TemperaturePolicy | float = 0.05,
        symmetric: bool = False,
        check_finite: bool = True,
        queue_size: int = 0,
        queue_momentum: float = 0.995,
        mini_batch_size: int | None = None,
        gather_across_devices: bool = False,
        same_view_negatives: bool = False,
    ) -> None:
        """
        InfoNCE (in-batch negatives, SimCSE, MultipleNegativesRankingLoss) with a swappable temperature.

        For each anchor, the positive must score higher than every other document in the batch: the other
        anchors' positives and every hard-negative column. Cosine similarities are divided by the temperature
        that ``temperature`` returns for them, which may be a constant, learned, adapted per batch (MACL), per
        similarity entry (DySTreSS) or per sample.

        With a fixed temperature this is ``MultipleNegativesRankingLoss(model, scale=1 / temperature)``, same
        loss and same gradients; ``symmetric=True`` matches MNRL with ``directions=("query_to_doc",
        "doc_to_query")`` and ``partition_mode="per_direction"``.

        Args:
            model: SentenceTransformer model.
            temperature: a positive number (fixed tau; SimCSE and MNRL use 0.05) or a
                :class:`~tempnlp.temperature.TemperaturePolicy` such as ``LearnableTemperature()``,
                ``MACLTemperature()`` or ``DySTreSSTemperature()``.
            symmetric: also score each positive against all anchors and average the two directions.
            queue_size: keep a momentum queue of this many extra negatives (MoCo / ESimCSE); 0 disables it.
            queue_momentum: EMA rate of the queue's encoder copy (0.995).
            mini_batch_size: embed in mini-batches of this size with GradCache (same loss and gradients, the
                memory of one mini-batch), like ST's CachedMultipleNegativesRankingLoss; None embeds at once.
            gather_across_devices: in multi-process training, compute the loss over the global batch (every
                rank's embeddings, gathered with gradient); the result equals one process on that batch.
            check_finite: raise a ValueError when an embedding holds NaN/inf or, under a per-sample temperature,
                an index is out of range or repeated in the batch. This reads one boolean from the device per
                step; pass False to skip both checks.
            same_view_negatives: also contrast each anchor with the other anchors (and, symmetric, each positive
                with the other positives): the NT-Xent / SimCLR layout.

        Requirements:
            1. (anchor, positive) pairs or (anchor, positive, negative_1, ..., negative_n) tuples.

        Inputs:
            +-------------------------------------------------+--------+
            | Texts                                           | Labels |
            +=================================================+========+
            | (anchor, positive) pairs                        | none   |
            +-------------------------------------------------+--------+
            | (anchor, positive, negative_1, ..., negative_n) | none   |
            +-------------------------------------------------+--------+

        Recommendations:
            - Use ``BatchSamplers.NO_DUPLICATES`` so that no in-batch negative duplicates an anchor's positive.
            - Log the temperature with :func:`tempnlp.train.log_temperature`.

        Relations:
            - :class:`DCLLoss` removes the positive from the denominator.

        Example:
            ::

                from datasets import Dataset
                from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
                from tempnlp.losses import InfoNCELoss
                from tempnlp.temperature import MACLTemperature
                from tempnlp.train import log_temperature

                model = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")
                train_dataset = Dataset.from_dict({
                    "anchor": ["It's nice weather outside today.", "He drove to work."],
                    "positive": ["It's so sunny.", "He took the car to the office."],
                })
                loss = InfoNCELoss(model, temperature=MACLTemperature())
                trainer = SentenceTransformerTrainer(model=model, train_dataset=train_dataset, loss=loss)
                log_temperature(trainer)  # tau_mean / tau_min / tau_max in the logs
                trainer.train()
        """
        objective = InfoNCE(
            temperature,
            symmetric=symmetric,
            check_finite=check_finite,
            gather_across_devices=gather_across_devices,
            same_view_negatives=same_view_negatives,
        )
        super().__init__(model, objective, queue_size, queue_momentum, mini_batch_size)
        self.symmetric = self.objective.symmetric
