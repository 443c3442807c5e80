"""What a reward is: a map from one batch of rollouts to the feedback an updater learns from.

Two kinds of feedback exist:
- ``per_candidate``: a vector a[K], one score for every candidate value, computed from rollouts taken at a
  single value (full information, e.g. TAMPO's trajectory-likelihood reward);
- ``chosen``: a scalar for the value that was actually used (bandit feedback).
Rewards may keep a little state (e.g. a running baseline); it lives in the policy's state dict.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal, get_args

import numpy as np

from metahp.state import require_finite, require_keys

FeedbackKind = Literal["per_candidate", "chosen"]
FEEDBACK_KINDS: tuple[str, ...] = get_args(FeedbackKind)


@dataclass(frozen=True)
class Batch:
    """One generation batch as the meta-policy sees it.

    seq_logprobs: [B, K] length-normalised log-likelihood of each scored trajectory under each candidate.
    advantages: [B] the trajectories' advantages (GRPO: group-normalised rewards).
    batch_size: N, the number of trajectories in the whole batch (>= B when zero-advantage rows were skipped).
    mean_reward: the batch's mean task reward, for scalar (bandit) feedback.
    row_candidates: [B] the index of the candidate each trajectory was sampled with, when values are drawn per
        completion (None when the whole batch used one value).
    candidates: K, the size of the grid.
    measured: what the trainer measured during this step's policy update, for rewards fitted to a hyperparameter
        (``Reward.needs_measured``): ``"grad_alignment"`` (cosine between this step's policy gradient and the previous
        step's), ``"update_alignment"`` (cosine between this step's gradient and the previous optimizer step's
        parameter change), ``"kl"`` (mean per-token KL to the reference model), ``"clip_fraction"`` (share of
        completion tokens whose ratio was clipped). A name mapped to None was not measurable this step (the first
        step has no previous gradient); None: nothing measured.
    values: [K] the candidate values (the knob's grid), so a reward can map a measured signal onto the candidates.
    """

    seq_logprobs: np.ndarray | None = None
    advantages: np.ndarray | None = None
    batch_size: int | None = None
    mean_reward: float | None = None
    row_candidates: np.ndarray | None = None
    candidates: int | None = None
    measured: Mapping[str, float | None] | None = None
    values: np.ndarray | None = None


class Reward(ABC):
    """Base class: subclasses set ``name`` and ``kind`` and implement ``__call__``."""

    name: ClassVar[str]
    kind: ClassVar[FeedbackKind]
    # What it needs of the batch, declared so that the knob layer refuses a combination that cannot work when it is
    # built, not at the first update (metahp.knobset):
    # - needs_likelihoods: it reads per-candidate likelihoods (then zero-advantage rows are never scored); a
    #   per-completion reward that reads only advantages and each row's candidate sets False and sees every row.
    # - needs_rows: it reads each row's own candidate (Batch.row_candidates), so it learns only from values drawn
    #   per completion or per prompt, never from one value for the whole batch (per="batch").
    # - per_group_signal: its feedback still tells candidates apart when each value covered whole groups (per="prompt":
    #   every completion of a prompt's group at one value). Within-group advantages sum to 0 in every group and
    #   likelihoods compare values no row mixed, so only a signal that differs between groups (e.g. |A|) qualifies.
    # - needs_measured: the names in Batch.measured it reads (what the trainer measures during its update, e.g.
    #   "grad_alignment"); metahp.adapt refuses it on an adapter whose MEASURES lack one.
    # - fitted_knobs: the knobs it is fitted to (None: any); meta_policy refuses it on another knob.
    needs_likelihoods: ClassVar[bool] = False
    needs_rows: ClassVar[bool] = False
    per_group_signal: ClassVar[bool] = False
    needs_measured: ClassVar[tuple[str, ...]] = ()
    fitted_knobs: ClassVar[tuple[str, ...] | None] = None

    def init(self) -> dict:
        """Initial state (JSON-safe values only)."""
        return {}

    def check_state(self, state) -> None:
        """Raise StateError unless ``state`` could have come from this reward (checked before a load assigns).

        The default accepts exactly the keys of ``init()``, each holding null or a finite number; a reward with
        richer state overrides this."""
        require_keys(state, set(self.init()), "reward_state")
        for key, value in state.items():
            require_finite(value, f"reward_state[{key!r}]", allow_none=True)

    @property
    def options(self) -> dict:
        """The constructor arguments, for the state dict."""
        return {}

    @abstractmethod
    def __call__(self, state: dict, batch: Batch) -> tuple[np.ndarray | float, dict]:
        """Return (feedback, new_state) without mutating ``state``."""
