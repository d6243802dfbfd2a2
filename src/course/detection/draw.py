"""Boxes drawn over an image with matplotlib (chapter 7).

Used in chapter 7.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from matplotlib.patches import Rectangle


def draw_boxes(
    ax,
    image: torch.Tensor,
    boxes: torch.Tensor,
    labels: Sequence[int] | torch.Tensor,
    class_names: Sequence[str],
    scores: Sequence[float] | torch.Tensor | None = None,
    difficult: Sequence[bool] | torch.Tensor | None = None,
) -> None:
    """Show ``image`` (3, H, W) in [0, 1] with xyxy pixel ``boxes``, one colour per class.

    Difficult objects are drawn dashed; with ``scores`` each label shows its score.
    """
    ax.imshow(image.detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy())
    ax.axis("off")
    for i, (box, label) in enumerate(
        zip(torch.as_tensor(boxes).tolist(), torch.as_tensor(labels).tolist(), strict=True)
    ):
        x1, y1, x2, y2 = box
        colour = f"C{int(label) % 10}"
        dashed = difficult is not None and bool(difficult[i])
        ax.add_patch(
            Rectangle(
                (x1, y1),
                x2 - x1,
                y2 - y1,
                fill=False,
                edgecolor=colour,
                linewidth=1.5,
                linestyle="--" if dashed else "-",
            )
        )
        text = class_names[int(label)] + (f" {float(scores[i]):.2f}" if scores is not None else "")
        ax.text(
            x1,
            y1,
            text,
            fontsize=6,
            color="white",
            va="bottom",
            bbox={"facecolor": colour, "alpha": 0.7, "pad": 1, "linewidth": 0},
        )
