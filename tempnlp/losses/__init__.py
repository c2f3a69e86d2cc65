"""sentence-transformers losses with a swappable temperature; use them like ST's own.

>>> from tempnlp.losses import InfoNCELoss
>>> loss = InfoNCELoss(model, temperature=0.05)  # doctest: +SKIP
"""

from tempnlp.losses.base import TemperatureContrastiveLoss
from tempnlp.losses.dcl import DCLLoss
from tempnlp.losses.infonce import InfoNCELoss
from tempnlp.losses.isogclr import ISogCLRLoss, TempNetLoss
from tempnlp.losses.sogclr import SogCLRLoss

__all__ = ["LOSSES", "DCLLoss", "ISogCLRLoss", "InfoNCELoss", "SogCLRLoss", "TempNetLoss", "TemperatureContrastiveLoss"]

#: The losses by the name each declares (recipes' ``loss.name``), in the order of the README.
LOSSES: dict[str, type[TemperatureContrastiveLoss]] = {
    cls.name: cls for cls in (InfoNCELoss, DCLLoss, SogCLRLoss, ISogCLRLoss, TempNetLoss)
}
