"""One process of a data-parallel ``fit``, for the tests (``torchrun`` starts two).

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_fit.py \\
        OUT EPOCHS [CHECKPOINT [noisy]]

Trains a BN-free model on a fixed data set with ``course.train.fit``: 8 samples
per process and batch, plain SGD. Rank 0 saves the weights and the history to OUT.
With ``noisy``, every sample read gets random noise from its process's own random
stream (seeded with the rank), as augmentations do: what a resumed run must restore
on every process. OUT also holds ``orders``: the indices each process read, in order.
"""

import sys

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
    """``base``, with random noise on every read when ``noisy``; records the indices read."""

    def __init__(self, base: TensorDataset, noisy: bool) -> None:
        self.base, self.noisy, self.read = base, noisy, []

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        self.read.append(int(i))
        x, y = self.base[i]
        if self.noisy:
            x = x + 0.3 * torch.randn(x.shape)
        return x, y


def main(out: str, epochs: int, checkpoint: str | None, noisy: bool = False) -> None:
    dist.init_process_group("gloo")
    net = model()  # the same initial weights everywhere (model() seeds)
    torch.manual_seed(dist.get_rank())  # then each process its own random stream
    dataset = Noisy(data(), noisy)
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
    main(sys.argv[1], int(sys.argv[2]), checkpoint, noisy="noisy" in sys.argv[4:])
