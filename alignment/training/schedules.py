"""Learning-rate and weight-decay schedules as pure functions of the step.

Being stateless, they need no scheduler state in checkpoints: a resumed run recomputes them.
"""

from __future__ import annotations

import math

from alignment.config import LRScheduleConfig, WeightDecayScheduleConfig


def learning_rate(base: float, schedule: LRScheduleConfig, epoch: int, epochs: int) -> float:
    """lr during ``epoch`` (0-based).

    multistep: base · gamma^#{m ∈ milestones : m ≤ epoch} (``torch.optim.lr_scheduler.MultiStepLR``
    semantics: the decay takes effect from epoch m on); cosine: base · (1 + cos(π·epoch/epochs))/2;
    constant: base.
    """
    if schedule.name == "multistep":
        return base * schedule.gamma ** sum(m <= epoch for m in schedule.milestones)
    if schedule.name == "cosine":
        return base * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    return base


def weight_decay(
    base: float, schedule: WeightDecayScheduleConfig, step: int, steps_per_epoch: int
) -> float:
    """Weight decay at ``step``: ``base`` during the burst, ``base · gamma`` after it.

    The paper (arXiv 2405.20594, experiments) applies the configured weight decay during epoch 0
    only and wd × gamma from epoch 1 on: ``burst_epochs: 1``. (The authors' MultiStepWD reaches the
    same epochs through a milestone that is off by one from MultiStepLR's convention, which is why
    the burst is spelled out here as a length rather than a milestone.) ``burst_steps`` expresses
    the burst in steps, for data sets whose epochs are much shorter than the paper's 937 MNIST
    steps: what aligns R is the decay factor ∏(1 − η λ) accumulated over the burst, which depends
    on the number of steps, not of epochs.
    """
    burst = (
        schedule.burst_steps
        if schedule.burst_steps is not None
        else schedule.burst_epochs * steps_per_epoch
    )
    return base if step < burst else base * schedule.gamma
