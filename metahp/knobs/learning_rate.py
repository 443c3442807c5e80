"""The learning rate as a knob: a multiplier m on the learning rate the optimizer's scheduler set.

At every optimizer step of a batch drawn at m, each parameter group steps with

    lr_step = m * lr_scheduled(step)

and its ``lr`` goes back to lr_scheduled(step) right after: the scheduler (warm-up, decay, plateau rules that read
``lr``) and the checkpointed optimizer state only ever see the schedule. ``scaled_learning_rate`` does it for one
step; ``LearningRateScale`` does it for every step of an optimizer.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch

from metahp.knobs.hyperparameter import HyperparameterKnob


class LearningRate(HyperparameterKnob):
    """A multiplier m > 0 on the scheduled learning rate; 1 leaves the run as configured.

    >>> LearningRate().values
    (0.5, 0.7, 1.0, 1.4, 2.0)
    """

    name = "learning_rate"
    off_value = 1.0
    lower, lower_open = 0.0, True
    default_values = (0.5, 0.7, 1.0, 1.4, 2.0)  # about factors of sqrt(2) around the configured rate
    meaning = "a multiplier on the scheduled learning rate"


@contextlib.contextmanager
def scaled_learning_rate(optimizer: torch.optim.Optimizer, multiplier: float) -> Iterator[None]:
    """Within the block every parameter group's ``lr`` is ``multiplier`` times what it was; restored after."""
    scheduled = [group["lr"] for group in optimizer.param_groups]
    for group, lr in zip(optimizer.param_groups, scheduled, strict=True):
        group["lr"] = lr * multiplier
    try:
        yield
    finally:
        for group, lr in zip(optimizer.param_groups, scheduled, strict=True):
            group["lr"] = lr


class LearningRateScale:
    """``multiplier`` applied to every ``optimizer.step()`` (a torch optimizer, or a wrapper such as accelerate's
    that forwards ``param_groups``): the instance's ``step`` is replaced by one that runs the original inside
    ``scaled_learning_rate``, so whatever the scheduler set is multiplied for the step and comes back after it.
    ``remove()`` gives the optimizer its own ``step`` back. ``lr_last`` is the first group's rate at the last step."""

    def __init__(self, optimizer, multiplier: float = 1.0):
        self.optimizer, self.multiplier = optimizer, float(multiplier)
        self.lr_last: float | None = None
        self._own = vars(optimizer).get("step")  # a step set on the instance before us (a scheduler's counter)
        original = optimizer.step

        @functools.wraps(original)  # keeps what an LR scheduler marked on the step it wrapped (_wrapped_by_lr_sched)
        def step(*args, **kwargs):
            with scaled_learning_rate(optimizer, self.multiplier):
                self.lr_last = float(optimizer.param_groups[0]["lr"])
                return original(*args, **kwargs)

        optimizer.step = step

    def remove(self) -> None:
        if self._own is None:
            vars(self.optimizer).pop("step", None)
        else:
            self.optimizer.step = self._own
