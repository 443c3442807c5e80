"""Rewards: what each batch tells the meta-policy. One file per reward; add one export line below."""

from metahp.rewards.base import Batch, Reward
from metahp.rewards.informativeness import Informativeness
from metahp.rewards.reward_improvement import RewardImprovement
from metahp.rewards.trajectory_likelihood import NORMALIZERS, TrajectoryLikelihood
from metahp.rewards.within_group_advantage import WithinGroupAdvantage

REWARDS: dict[str, type[Reward]] = {cls.name: cls for cls in (TrajectoryLikelihood, RewardImprovement,
                                                              Informativeness, WithinGroupAdvantage)}

__all__ = ["NORMALIZERS", "REWARDS", "Batch", "Informativeness", "Reward", "RewardImprovement",
           "TrajectoryLikelihood", "WithinGroupAdvantage"]
