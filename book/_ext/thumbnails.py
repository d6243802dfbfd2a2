"""The home page's figure per chapter, drawn by the course package at build time.

The notebooks are not executed when CI builds the book, so their figures do not
exist then; each chapter's signature picture is instead drawn here, in about a
second, by the same package functions the chapter uses, into
``book/_static/thumbs/chN.png`` (generated, never committed). ``book/intro.md``
shows them next to what each chapter teaches and its measured run times.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import chapters  # noqa: E402  (book/_ext/chapters.py: the registry)

SIZE = (3.0, 2.0)  # inches, at 80 dpi: 240 x 160 px


def _images(ax, images: torch.Tensor) -> None:
    grid = torch.cat([torch.cat(list(row), dim=2) for row in images], dim=1)  # (3, H, W)
    ax.imshow(grid.permute(1, 2, 0).clamp(0, 1).numpy())
    ax.axis("off")


def ch0(ax) -> None:  # the data: the synthetic shapes every early chapter trains on
    from course.data import make_shapes

    x, _ = make_shapes(8, image_size=32, seed=0).tensors
    _images(ax, x.reshape(2, 4, 3, 32, 32))


def ch1(ax) -> None:  # BN: activations before and after normalisation
    from course.norm import BatchNorm2d

    torch.manual_seed(0)
    x = 3 * torch.randn(64, 4, 8, 8) + 2
    y = BatchNorm2d(4).train()(x).detach()
    ax.hist(x.flatten().numpy(), bins=40, alpha=0.6, label="before BN")
    ax.hist(y.flatten().numpy(), bins=40, alpha=0.6, label="after BN")
    ax.legend(fontsize=7)
    ax.set_yticks([])


def ch2(ax) -> None:  # gradient norm per block, plain vs residual
    from course.models import DeepCNN
    from course.residual import block_gradient_norms

    torch.manual_seed(0)
    x, y = torch.rand(16, 3, 16, 16), torch.randint(0, 4, (16,))
    for residual in (False, True):
        model = DeepCNN(20, width=8, residual=residual, batch_norm=False)
        norms = block_gradient_norms(model, x, y)
        ax.semilogy(np.maximum(norms, 1e-30), label="residual" if residual else "plain")
    ax.set_xlabel("block", fontsize=7)
    ax.legend(fontsize=7)


def ch3(ax) -> None:  # the hornet task: presence and absence
    from course.data.hornets import render_hornet_scene

    scenes = [render_hornet_scene(s, s % 2 == 0, 64) for s in range(8)]
    images = torch.stack([torch.from_numpy(np.array(s)).permute(2, 0, 1) / 255 for s in scenes])
    _images(ax, images.reshape(2, 4, 3, 64, 64))


def ch4(ax) -> None:  # an image, FGSM's perturbation (amplified), the sum
    from course.adversarial import fgsm
    from course.data.hornets import render_hornet_scene
    from course.models import SmallCNN

    torch.manual_seed(0)
    x = torch.from_numpy(np.array(render_hornet_scene(3, True, 64))).permute(2, 0, 1)[None] / 255
    x_adv = fgsm(SmallCNN(num_classes=2), x, torch.tensor([1]), 8 / 255)
    delta = 0.5 + (x_adv - x) * 255 / 16
    _images(ax, torch.stack([x[0], delta[0], x_adv[0]])[None])


def ch5(ax) -> None:  # which activations backprop keeps, with checkpoints
    from course.checkpointing import backprop_schedule, draw_schedule

    draw_schedule(ax, backprop_schedule(8, (3, 6)), 8)
    ax.set_title("")
    ax.set_xticks([])
    ax.set_yticks([])


def ch6(ax) -> None:  # warmup then decay of the learning rate
    from course.scaling import warmup_factor

    steps = range(90)
    for decay in ("cosine", "step"):
        ax.plot(
            steps,
            [warmup_factor(s, 5, 90, decay, milestones=(30, 60, 80)) for s in steps],
            label=decay,
        )
    ax.set_xlabel("epoch", fontsize=7)
    ax.legend(fontsize=7)


def ch7(ax) -> None:  # a detection scene with its boxes
    from course.data import SHAPE_CLASSES
    from course.data.voc import render_voc_scene
    from course.detection import draw_boxes

    image, boxes, labels, difficult = render_voc_scene(3, 128)
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1) / 255
    draw_boxes(ax, x, boxes, labels, SHAPE_CLASSES, difficult=difficult)


def drawer(chapter: int):
    """The function that draws chapter ``chapter``'s thumbnail: ``ch<number>`` above."""
    draw = globals().get(f"ch{chapter}")
    if draw is None:
        raise LookupError(
            f"book/_ext/thumbnails.py has no ch{chapter}(ax): write one that draws "
            f"chapter {chapter}'s signature figure with the course package"
        )
    return draw


def draw_all(folder: Path) -> list[Path]:
    """Draw every chapter of book/chapters.yml into ``folder/ch<number>.png``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for chapter in (c.number for c in chapters.load()):
        draw = drawer(chapter)
        fig, ax = plt.subplots(figsize=SIZE, dpi=80)
        draw(ax)
        ax.tick_params(labelsize=6)
        fig.tight_layout(pad=0.3)
        paths.append(folder / f"ch{chapter}.png")
        fig.savefig(paths[-1])
        plt.close(fig)
    return paths


def _build(app) -> None:
    draw_all(Path(app.srcdir) / "book" / "_static" / "thumbs")


def setup(app):
    app.connect("builder-inited", _build)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
