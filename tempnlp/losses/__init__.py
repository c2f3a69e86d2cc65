"""sentence-transformers losses with a swappable temperature; use them like ST's own.

>>> from tempnlp.losses import InfoNCELoss
>>> loss = InfoNCELoss(model, temperature=0.05)  # doctest: +SKIP
"""

from tempnlp.losses.base import TemperatureContrastiveLoss
from tempnlp.losses.dcl import DCLLoss
from tempnlp.losses.infonce import InfoNCELoss
from tempnlp.losses.isogclr import ISogCLRLoss, SogCLRLoss, TempNetLoss

__all__ = ["DCLLoss", "ISogCLRLoss", "InfoNCELoss", "SogCLRLoss", "TempNetLoss", "TemperatureContrastiveLoss"]
