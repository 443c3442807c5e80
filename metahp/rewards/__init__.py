"""Rewards: what each batch tells the meta-policy. One file per reward plus one ``register_reward`` line.

A ``Reward`` subclass registered from outside metahp (a user's module, a test) is built by name like a built-in one
(``meta_policy(..., reward=name, **its_options)``); ``metahp.testing.check_reward`` checks its behaviour.
"""

from __future__ import annotations

from metahp.errors import ConfigError
from metahp.rewards._measured import MEASUREMENTS
from metahp.rewards.base import FEEDBACK_KINDS, Batch, Reward
from metahp.rewards.clip_target import ClipTarget
from metahp.rewards.gradient_alignment import GradientAlignment
from metahp.rewards.informativeness import Informativeness
from metahp.rewards.kl_target import KLTarget
from metahp.rewards.reward_improvement import RewardImprovement
from metahp.rewards.trajectory_likelihood import NORMALIZERS, TrajectoryLikelihood
from metahp.rewards.update_alignment import UpdateAlignment
from metahp.rewards.within_group_advantage import WithinGroupAdvantage

REWARDS: dict[str, type[Reward]] = {}


def register_reward(cls: type[Reward]) -> type[Reward]:
    """Add a reward class to ``REWARDS`` after checking what ``meta_policy`` relies on (usable as a decorator).

    The class must set ``name`` (an identifier, how ``reward=`` and saved states name it) and ``kind`` (one of
    ``FEEDBACK_KINDS``), and build with its default options (``cls()``)."""
    if not (isinstance(cls, type) and issubclass(cls, Reward)):
        raise ConfigError(f"register_reward takes a metahp.rewards.Reward subclass, got {cls!r:.80}.")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"{cls.__name__}.name must be an identifier such as 'informativeness' (it is how "
                          f"reward=... and saved states name it), got {name!r}.")
    kind = getattr(cls, "kind", None)
    if kind not in FEEDBACK_KINDS:
        raise ConfigError(f"{cls.__name__}.kind must be one of {FEEDBACK_KINDS} (a score per candidate, or one for "
                          f"the value used), got {kind!r}.")
    flags = [f for f in ("needs_likelihoods", "needs_rows", "per_group_signal")
             if not isinstance(getattr(cls, f), bool)]
    if flags:
        raise ConfigError(f"{cls.__name__}: {flags} must be True or False (what it needs of a batch; see Reward).")
    needs = cls.needs_measured
    if not (isinstance(needs, tuple) and all(isinstance(n, str) for n in needs)):
        raise ConfigError(f"{cls.__name__}.needs_measured must be a tuple of measurement names such as ('kl',), got "
                          f"{needs!r}.")
    unknown = [n for n in needs if n not in MEASUREMENTS]
    if unknown:  # a trainer measures only these: an unknown name could never be passed
        raise ConfigError(f"{cls.__name__}.needs_measured names {unknown}, which no trainer measures; the measurements "
                          f"are {list(MEASUREMENTS)} (metahp.rewards.MEASUREMENTS).")
    fitted = cls.fitted_knobs
    if fitted is not None and not (isinstance(fitted, tuple) and fitted and all(isinstance(n, str) for n in fitted)):
        raise ConfigError(f"{cls.__name__}.fitted_knobs must be None (any knob) or a tuple of knob names such as "
                          f"('beta',), got {fitted!r}.")
    if name in REWARDS and REWARDS[name] is not cls:
        raise ConfigError(f"a reward named {name!r} is registered already ({REWARDS[name].__name__}); pick another "
                          f"name.")
    try:
        cls()
    except Exception as err:  # any failure: the registry builds it by name with no options
        raise ConfigError(f"register_reward({cls.__name__}): it must build with its default options, but "
                          f"{cls.__name__}() raised {type(err).__name__}: {err}") from None
    REWARDS[name] = cls
    return cls


for _cls in (TrajectoryLikelihood, RewardImprovement, Informativeness, WithinGroupAdvantage, GradientAlignment,
             UpdateAlignment, KLTarget, ClipTarget):
    register_reward(_cls)

__all__ = ["FEEDBACK_KINDS", "MEASUREMENTS", "NORMALIZERS", "REWARDS", "Batch", "ClipTarget", "GradientAlignment",
           "Informativeness", "KLTarget", "Reward", "RewardImprovement", "TrajectoryLikelihood", "UpdateAlignment",
           "WithinGroupAdvantage", "register_reward"]
