"""Chapter 0, exercise 0.4: DataLoader workers started by *spawn* (macOS, Windows).

A spawned worker is a fresh interpreter: it unpickles the dataset by reference
to its class's module, so a class or a function defined in a notebook
(``__main__``) cannot be found there. The exercise's dataset and transform are
in the package; this test runs them under the spawn start method, as a laptop
of the cpu profile would.
"""

import torch
from torch.utils.data import DataLoader, Subset

from course.data import Transformed, make_shapes, slow_blur


def _batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def test_exercise_0_4_dataset_works_with_spawned_workers():
    base = make_shapes(24, image_size=16, seed=0)
    blurred = Transformed(Subset(base, range(20)), slow_blur)
    in_process = _batches(DataLoader(blurred, batch_size=8, num_workers=0))
    spawned = _batches(
        DataLoader(blurred, batch_size=8, num_workers=2, multiprocessing_context="spawn")
    )
    assert [len(y) for _, y in spawned] == [8, 8, 4]
    for (x0, y0), (x1, y1) in zip(in_process, spawned, strict=True):
        assert torch.equal(y0, y1)
        torch.testing.assert_close(x0, x1)
    image = base[0][0]
    assert slow_blur(image).shape == image.shape
    # the blur changes the image, and keeps it in [0, 1]
    assert (slow_blur(image) - image).abs().max() > 0.05
    assert 0 <= slow_blur(image).min() and slow_blur(image).max() <= 1
