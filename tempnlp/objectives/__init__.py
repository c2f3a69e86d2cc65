"""Contrastive objectives on embeddings: ``objective(anchors, documents, indices=None) -> loss``.

Each owns a temperature policy (:mod:`tempnlp.temperature`) and accepts scalar, per-row and per-entry
temperatures; any policy goes with any objective, except where :mod:`tempnlp.objectives.rules` says why not.
They know nothing of sentence-transformers; :mod:`tempnlp.losses` wraps them for the trainer.
"""

from tempnlp.objectives.base import ContrastiveObjective
from tempnlp.objectives.dcl import DCL, DCLW
from tempnlp.objectives.infonce import InfoNCE
from tempnlp.objectives.isogclr import ISogCLR
from tempnlp.objectives.sogclr import SogCLR

__all__ = ["DCL", "DCLW", "ContrastiveObjective", "ISogCLR", "InfoNCE", "SogCLR"]
