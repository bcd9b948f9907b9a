"""Learning-rate schedules.

Burda et al. (2015): stage i = 0..7 runs 3^i epochs at lr 0.001 * 10^(-i/7): 3,280 epochs in all.
"""
from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def burda_total_epochs(stages: int = 8) -> int:
    """Epochs in the whole schedule: sum_i 3^i = (3^stages - 1) / 2 (3,280 for 8 stages)."""
    return (3**stages - 1) // 2


def burda_stage(epoch: int, stages: int = 8) -> int:
    """The stage that a (0-based) epoch falls in; epochs past the end stay in the last stage."""
    stage, end = 0, 1
    while epoch >= end and stage < stages - 1:
        stage += 1
        end += 3**stage
    return stage


def burda_lr_factor(epoch: int, stages: int = 8) -> float:
    """Multiplier of the base lr (0.001 in the paper) at a 0-based epoch."""
    return 10.0 ** (-burda_stage(epoch, stages) / 7.0)


class BurdaSchedule(LambdaLR):
    """Burda et al.'s stagewise schedule; step it once per epoch (Lightning's default interval)."""

    def __init__(self, optimizer: Optimizer, stages: int = 8, last_epoch: int = -1):
        super().__init__(optimizer, lambda epoch: burda_lr_factor(epoch, stages), last_epoch)
