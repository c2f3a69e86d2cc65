"""Contrastive objectives on embeddings: ``objective(anchors, documents, indices=None) -> loss``.

Each owns a temperature policy (:mod:`tempnlp.temperature`) and accepts scalar, per-row and per-entry
temperatures. They know nothing of sentence-transformers; :mod:`tempnlp.losses` wraps them for the trainer.
"""

from tempnlp.objectives.base import ContrastiveObjective
from tempnlp.objectives.dcl import DCL, DCLW
from tempnlp.objectives.infonce import InfoNCE
from tempnlp.objectives.isogclr import ISogCLR

__all__ = ["DCL", "DCLW", "ContrastiveObjective", "ISogCLR", "InfoNCE"]
