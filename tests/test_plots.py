import matplotlib.pyplot as plt
import pytest
import torch

from course.plots import plot_history, show_images
from course.train import History


def test_plot_history_draws_train_and_val_curves_per_run():
    a = History(
        train_loss=[1.0, 0.5],
        train_acc=[0.5, 0.7],
        val_loss=[1.1, 0.6],
        val_acc=[0.4, 0.6],
        lr=[0.1, 0.05],
        seconds=[1, 1],
    )
    b = History(
        train_loss=[2.0, 1.0],
        train_acc=[0.2, 0.4],
        val_loss=[float("nan")] * 2,
        val_acc=[float("nan")] * 2,
        lr=[0.1, 0.1],
        seconds=[1, 1],
    )
    fig = plot_history({"a": a, "b": b}, metrics=("loss", "acc", "lr"))
    loss_ax, acc_ax, lr_ax = fig.axes
    assert len(loss_ax.lines) == 3  # a train + a val + b train (b has no validation)
    assert list(loss_ax.lines[0].get_ydata()) == [1.0, 0.5]
    assert len(lr_ax.lines) == 2
    plt.close(fig)


def test_show_images_titles_and_grid():
    images = torch.rand(5, 3, 8, 8)
    fig = show_images(images, labels=[0, 1, 0, 1, 1], class_names=["cat", "dog"], ncols=3)
    assert len(fig.axes) == 6
    assert [ax.get_title() for ax in fig.axes[:5]] == ["cat", "dog", "cat", "dog", "dog"]
    plt.close(fig)
    with pytest.raises(ValueError, match="N, C, H, W"):
        show_images(torch.rand(3, 8, 8))


def test_moving_average_clips_diverged_values():
    from course.plots import moving_average

    assert moving_average([1, 2, 3, 4], k=2).tolist() == [1.5, 2.5, 3.5]
    assert moving_average([1.0, float("inf")], k=1, clip=5.0).tolist() == [1.0, 5.0]
