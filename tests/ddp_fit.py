"""One process of a data-parallel ``fit``, for the tests (``torchrun`` starts two).

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_fit.py \\
        OUT EPOCHS [CHECKPOINT [noisy|numpy|order]]

Trains a BN-free model on a fixed data set with ``course.train.fit``: 8 samples
per process and batch, plain SGD. Rank 0 saves the weights and the history to OUT.
With ``noisy``, every sample read gets random noise from its process's own random
stream (torch's, seeded with the rank), as augmentations do: what a resumed run must
restore on every process; with ``numpy``, the noise comes from NumPy's global
generator (``np.random``, seeded with the rank), as students' augmentations draw it.
With ``order``, OUT also gets ``orders``: the indices each process read, in order.
"""

import sys

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from course.runstate import save_state
from course.train import fit

SAMPLES, BATCH_PER_PROCESS, LR = 64, 8, 0.2


def data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(SAMPLES, 10, generator=g)
    return TensorDataset(x, (x[:, 0] + x[:, 1] > 0).long())


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 2))


class Noisy(torch.utils.data.Dataset):
    """``base`` with random noise on every read (torch's or NumPy's global generator),
    recording the indices read."""

    def __init__(self, base: TensorDataset, noise: str | None) -> None:
        self.base, self.noise, self.read = base, noise, []

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        self.read.append(int(i))
        x, y = self.base[i]
        if self.noise == "noisy":
            x = x + 0.3 * torch.randn(x.shape)
        elif self.noise == "numpy":
            x = x + 0.3 * torch.from_numpy(np.random.standard_normal(x.shape)).float()  # noqa: NPY002
        return x, y


def main(out: str, epochs: int, checkpoint: str | None, mode: str | None = None) -> None:
    dist.init_process_group("gloo")
    net = model()  # the same initial weights everywhere (model() seeds)
    torch.manual_seed(dist.get_rank())  # then each process its own random stream
    np.random.seed(dist.get_rank())  # noqa: NPY002
    dataset = Noisy(data(), mode)
    loader = DataLoader(dataset, batch_size=BATCH_PER_PROCESS, shuffle=True)
    history = fit(
        net,
        loader,
        epochs=epochs,
        optimizer=torch.optim.SGD(net.parameters(), lr=LR),
        device="cpu",
        checkpoint_path=checkpoint,
        progress=False,
    )
    orders: list = [None] * dist.get_world_size()
    dist.all_gather_object(orders, dataset.read)
    if dist.get_rank() == 0:
        save_state(out, {"model": net.state_dict(), "history": history.to_dict(), "orders": orders})
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    checkpoint = sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] != "-" else None
    main(sys.argv[1], int(sys.argv[2]), checkpoint, sys.argv[4] if len(sys.argv) > 4 else None)
