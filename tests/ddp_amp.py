"""One process of the data-parallel mixed-precision checks (``torchrun`` starts two).

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_amp.py OUT

Two checks of ``course.train.fit`` under DDP on the CPU (gloo), whose results rank 0
saves to OUT (``course.runstate.save_state``) for tests/test_amp.py:

- ``skips``: float16 with a gradient scaler, the loss blown up (x 1e6) on the second
  batch of rank 0 only. DDP averages the gradients before the scaler looks at them, so
  rank 1 sees the overflow too: every process skips that step, and no process steps its
  scheduler. Saved: each rank's ``History.steps`` and ``scheduler.last_epoch``.
- ``accumulation``: batches of 4 in groups of 2 (``grad_accum_steps=2``) against batches
  of 8, both in float32: the same weights, and the gradients are averaged over the
  processes once per group (DDP's ``no_sync`` on the first micro-batch), which a
  communication hook counts. Saved: both models' weights, and the all-reduces of each run.
"""

import sys

import torch
import torch.distributed as dist
from ddp_fit import data, model  # the same data and network as the other DDP checks (tests/)
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.utils.data import DataLoader

from course.runstate import save_state
from course.train import fit

ALL_REDUCES = [0]  # the gradient all-reduces of this process, counted by the hook


def _counting_hook(state, bucket):
    ALL_REDUCES[0] += 1
    return allreduce_hook(None, bucket)


def _count_all_reduces() -> None:
    """Every DistributedDataParallel built from now on counts its gradient all-reduces."""
    ddp = nn.parallel.DistributedDataParallel
    init = ddp.__init__

    def counting_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.register_comm_hook(None, _counting_hook)

    ddp.__init__ = counting_init


def _train(batch_size: int, accum: int, amp, loss_fn=nn.functional.cross_entropy):
    net = model()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.2, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    ALL_REDUCES[0] = 0
    history = fit(
        net,
        DataLoader(data(), batch_size=batch_size, shuffle=True),
        epochs=2,
        optimizer=optimizer,
        scheduler=scheduler,
        loss_fn=loss_fn,
        device="cpu",
        amp=amp,
        grad_accum_steps=accum,
        progress=False,
    )
    return net, history, scheduler, ALL_REDUCES[0]


class Rank0Overflow:
    """Cross-entropy, times 1e6 on rank 0's second training batch."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, output, target):
        loss = nn.functional.cross_entropy(output, target)
        if torch.is_grad_enabled():
            if dist.get_rank() == 0 and self.calls == 1:
                loss = loss * 1e6
            self.calls += 1
        return loss


def main(out: str) -> None:
    dist.init_process_group("gloo")
    _count_all_reduces()
    _, history, scheduler, _ = _train(8, 1, "fp16", Rank0Overflow())
    skips = {"steps": history.steps, "last_epoch": scheduler.last_epoch}
    big, _, _, big_reduces = _train(8, 1, False)
    accumulated, _, _, accumulated_reduces = _train(4, 2, False)
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, skips)
    if dist.get_rank() == 0:
        save_state(
            out,
            {
                "skips": gathered,
                "big": big.state_dict(),
                "accumulated": accumulated.state_dict(),
                "all_reduces": {"big": big_reduces, "accumulated": accumulated_reduces},
            },
        )
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
