"""Pictures used across the chapters: readable character labels and labelled heatmaps."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch

# Characters that would be invisible (or break a line) as a tick label.
VISIBLE = {"\n": "\\n", " ": "␣", "\t": "\\t"}


def char_label(ch: str) -> str:
    """A character as it should appear on a plot: newline as ``\\n``, space as ``␣``."""
    return VISIBLE.get(ch, ch)


def heatmap(
    matrix,
    row_labels=None,
    col_labels=None,
    ax=None,
    title: str | None = None,
    colorbar: bool = True,
    fontsize: float | None = None,
    **imshow_kwargs,
):
    """Draw a 2-D matrix as an image, one labelled tick per row and column.

    Labels are passed through :func:`char_label`, so a list of characters can be
    given as it is. Extra keyword arguments go to ``ax.imshow`` (``cmap``, ``norm``,
    ``vmin``...). Returns the ``AxesImage``.
    """
    if isinstance(matrix, torch.Tensor):
        matrix = matrix.detach().cpu().float().numpy()
    if matrix.ndim != 2:
        raise ValueError(f"heatmap needs a 2-D matrix, got shape {matrix.shape}")
    ax = ax if ax is not None else plt.gca()
    image = ax.imshow(matrix, **{"cmap": "viridis", "interpolation": "nearest", **imshow_kwargs})
    for labels, set_ticks, set_labels, size in (
        (row_labels, ax.set_yticks, ax.set_yticklabels, matrix.shape[0]),
        (col_labels, ax.set_xticks, ax.set_xticklabels, matrix.shape[1]),
    ):
        if labels is not None:
            if len(labels) != size:
                raise ValueError(f"{len(labels)} labels for {size} rows or columns")
            set_ticks(range(size))
            set_labels([char_label(str(label)) for label in labels], fontsize=fontsize)
    if title:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return image
