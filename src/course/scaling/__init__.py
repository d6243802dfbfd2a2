"""Large minibatches: the linear scaling rule, warmup and data-parallel training (chapter 6).

- ``course.scaling.rule``: the rule, warmup, the schedules and the batch-size
  experiment (what the notebook imports, re-exported here);
- ``course.scaling.programs``: the torchrun programs,
  ``torchrun --standalone --nproc_per_node=2 -m course.scaling shapes|hornets``.
"""

from course.scaling.rule import (
    DECAYS,
    BatchSizeRun,
    accumulated_gradients,
    check_scaling_rule,
    ddp_example_data,
    ddp_example_model,
    first_global_batch,
    flat_parameters,
    linear_scaled_lr,
    sgd_step,
    small_steps_vs_big_step,
    synced_batch_norm_statistics,
    train_at_batch_size,
    warmup_factor,
    warmup_schedule,
)

__all__ = [
    "BatchSizeRun",
    "DECAYS",
    "accumulated_gradients",
    "check_scaling_rule",
    "ddp_example_data",
    "ddp_example_model",
    "first_global_batch",
    "flat_parameters",
    "linear_scaled_lr",
    "sgd_step",
    "small_steps_vs_big_step",
    "synced_batch_norm_statistics",
    "train_at_batch_size",
    "warmup_factor",
    "warmup_schedule",
]
