"""Figures without pyplot: no global backend switch, no figure registry to close.

``matplotlib.use("Agg")`` at import would change the backend of every program that imports
remul-ff (a notebook's inline plots included); a bare :class:`~matplotlib.figure.Figure` draws
with Agg when saved, whatever the backend.
"""

from __future__ import annotations

from matplotlib.figure import Figure


def subplots(*args, figsize: tuple[float, float] | None = None, **kwargs):
    """``(figure, axes)`` as ``plt.subplots`` returns them, for :meth:`Figure.savefig`."""
    figure = Figure(figsize=figsize)
    return figure, figure.subplots(*args, **kwargs)
