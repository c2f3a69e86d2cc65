"""Matplotlib without a display, and figures as PNG bytes for atomic writes."""

from __future__ import annotations

import io
from typing import Any


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(figure, *, dpi: int, **savefig: Any) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    plt = pyplot()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, **savefig)
    plt.close(figure)
    return buffer.getvalue()
