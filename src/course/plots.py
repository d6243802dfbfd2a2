"""Shared matplotlib helpers: training curves, image grids, explorers.

:func:`plot_history` and :func:`show_images` draw a new figure and return it, so a
notebook can ``fig.savefig(...)`` and a test can inspect what was drawn;
:func:`moving_average` smooths a curve before it is drawn; :func:`explorer` shows a
drawing function's default figure, then the sliders that redraw it.

Used in every chapter.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import ipywidgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display
from matplotlib.figure import Figure

from course.train import History


def plot_history(
    histories: History | Mapping[str, History],
    metrics: Sequence[str] = ("loss", "acc"),
    title: str | None = None,
) -> Figure:
    """Training (solid) and validation (dashed) curves against the epoch.

    ``histories`` is one :class:`History` or a dict ``{label: History}`` to
    compare runs; one subplot per metric in ``metrics`` ("loss", "acc", "lr").
    """
    if isinstance(histories, History):
        histories = {"": histories}
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for i, (label, h) in enumerate(histories.items()):
            color = f"C{i}"
            epochs = range(1, h.epochs + 1)
            if metric == "lr":
                ax.plot(epochs, h.lr, color=color, label=label or None)
                continue
            train, val = getattr(h, f"train_{metric}"), getattr(h, f"val_{metric}")
            prefix = f"{label} " if label else ""
            ax.plot(epochs, train, color=color, label=f"{prefix}train")
            if any(not math.isnan(v) for v in val):
                ax.plot(epochs, val, color=color, linestyle="--", label=f"{prefix}val")
        ax.set_xlabel("epoch")
        ax.set_ylabel({"loss": "loss", "acc": "accuracy", "lr": "learning rate"}[metric])
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def show_images(
    images: torch.Tensor,
    labels: Sequence[int] | torch.Tensor | None = None,
    class_names: Sequence[str] | None = None,
    ncols: int = 8,
    titles: Sequence[str] | None = None,
    scale: float = 1.6,
) -> Figure:
    """A grid of images (N, 3, H, W) or (N, 1, H, W) with values in [0, 1].

    Each image is titled with ``titles[i]``, or its class name or label.
    """
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got {tuple(images.shape)}")
    n = images.shape[0]
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(scale * ncols, scale * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        image = images[i].detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy()
        if image.shape[-1] == 1:
            ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1)
        else:
            ax.imshow(image)
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
        elif labels is not None:
            label = int(labels[i])
            ax.set_title(class_names[label] if class_names else str(label), fontsize=8)
    fig.tight_layout()
    return fig


def moving_average(values: Sequence[float], k: int = 10, clip: float = 5.0) -> np.ndarray:
    """Moving average over ``k`` steps of a loss curve, values above ``clip`` clipped first,
    so that a diverged run (inf) shows as a flat line at the top of the plot.
    """
    values = np.minimum(np.asarray(values, dtype=float), clip)
    return np.convolve(values, np.ones(k) / k, mode="valid")


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def explorer(draw: Callable[..., object], **controls: object) -> None:
    """An ipywidgets explorer that also reads well in the static book.

    ``draw()`` runs once with its default arguments (the figure the book shows), then
    ``ipywidgets.interactive(draw, **controls)`` gives the sliders that redraw it in a
    running notebook (Colab, Jupyter). The sliders are displayed as a widget view only:
    the book's pages load no widget JavaScript, so they show the default figure and
    the line that says where the sliders work, with no dead slider and no widget text.
    Works with ipywidgets 7 (Colab's) and 8.
    """
    draw()
    print(
        "The figure above is the default setting. In a running notebook (the rocket icon "
        "opens this page on Colab) the sliders below redraw it."
    )
    display(ipywidgets.interactive(draw, **controls), include=[WIDGET_VIEW])
