"""The task interface: problems from a seed, a strict verifier, a demonstration, and a one-step gymnasium env.

A task is a family of single-turn text problems (``"12+345="`` -> ``"357"``). The trainer uses the plain-Python
API in bulk (``sample_prompts``, ``reward``, ``demonstration``); ``TextEnv`` wraps the same task as a gymnasium
environment whose observation is the prompt and whose action is the completion.

Every problem belongs to exactly one split, decided by a hash of its prompt, so the train and eval splits never
share a problem whatever the seed:

    >>> from metahp.lab.tasks import make_task
    >>> task = make_task("addition", difficulty=2)
    >>> p = task.sample_prompts(1, rng=0, split="eval")[0]
    >>> task.reward(p, task.demonstration(p))
    1.0
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import gymnasium
import numpy as np
from gymnasium import spaces

from metahp.errors import ConfigError, InputError

Split = Literal["train", "eval"]
SPLITS: tuple[str, ...] = ("train", "eval")

# Rejection sampling gives up after this many draws per requested problem: only a problem space far smaller
# than a split could need more, and then the difficulty is too low to be useful anyway.
_MAX_DRAWS_PER_PROBLEM = 10_000


@dataclass(frozen=True)
class Problem:
    """One problem: the prompt the policy sees, the reference answer, and task-specific data for the verifier.

    Example: ``Problem(prompt="12+345=", answer="357")``.
    """

    prompt: str
    answer: str
    # Task-specific data (countdown's numbers and target); not part of equality, since the prompt decides it.
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def split_of(prompt: str, eval_fraction: float) -> Split:
    """The split a prompt belongs to: a fixed hash of the prompt, so it never depends on a seed or the platform.

    Example: ``split_of("12+345=", 0.2)`` is always the same string.
    """
    # blake2b, not hash(): Python's str hash is salted per process.
    digest = hashlib.blake2b(prompt.encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2**64
    return "eval" if u < eval_fraction else "train"


def as_generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    """A numpy Generator from a Generator (used as is), an int seed or None (fresh entropy)."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


class Task(ABC):
    """A family of single-turn text problems with a strict 0/1 verifier.

    Subclasses set ``name``, ``alphabet``, ``max_prompt_chars``, ``max_completion_chars`` and implement
    ``_generate`` (one random problem), ``reward`` and, when the reference answer is not the only correct
    completion, ``demonstration``.

    Example: ``make_task("addition", difficulty=3).sample_prompts(8, rng=0)``.
    """

    name: ClassVar[str]
    # gymnasium id suffix, e.g. "Addition" registers "metahp/Addition-v0"
    env_name: ClassVar[str]
    default_difficulty: ClassVar[int]
    min_difficulty: ClassVar[int] = 1
    max_difficulty: ClassVar[int] = 12
    eval_fraction: ClassVar[float] = 0.2
    # False for tasks written for a pretrained tokenizer (English prompts): their characters stay out of the
    # tiny char-level models' shared vocabulary.
    char_level: ClassVar[bool] = True

    alphabet: str
    max_prompt_chars: int
    max_completion_chars: int

    def __init__(self, difficulty: int | None = None, seed: int | None = 0):
        if difficulty is None:
            difficulty = self.default_difficulty
        if isinstance(difficulty, bool) or not isinstance(difficulty, int | np.integer):
            raise ConfigError(f"{self.name}: difficulty must be an int, got {difficulty!r}.")
        if not self.min_difficulty <= difficulty <= self.max_difficulty:
            raise ConfigError(
                f"{self.name}: difficulty {difficulty} is out of range; "
                f"pick an int in [{self.min_difficulty}, {self.max_difficulty}]."
            )
        self.difficulty = int(difficulty)
        self.seed = seed

    def __repr__(self) -> str:
        return f"{type(self).__name__}(difficulty={self.difficulty}, seed={self.seed})"

    @property
    def spec(self) -> dict[str, Any]:
        """What identifies the generated problem space (used in cache keys)."""
        return {"task": self.name, "difficulty": self.difficulty}

    @abstractmethod
    def _generate(self, rng: np.random.Generator) -> Problem:
        """One random problem, from either split."""

    @abstractmethod
    def reward(self, problem: Problem, completion: str) -> float:
        """1.0 if ``completion`` is exactly a correct answer to ``problem``, else 0.0 (no partial credit)."""

    def demonstration(self, problem: Problem) -> str:
        """A correct completion, for supervised warm start: ``task.reward(p, task.demonstration(p)) == 1.0``."""
        return problem.answer

    def warm_start_completion(self, problem: Problem, rng: np.random.Generator) -> str:
        """The completion the supervised warm start trains on (default: ``demonstration``, ignoring ``rng``).

        A task overrides it to shape what the warm-started policy knows, e.g. ``rare_skill`` makes one skill rare.
        """
        return self.demonstration(problem)

    def warm_start_task(self) -> Task:
        """The task the supervised warm start trains on (default: this one). A variant that trains on part of a
        task (``mixed.reverse``) names the whole task here, so every variant starts from the same policy."""
        return self

    def split_of(self, problem: Problem) -> Split:
        """The split ``problem`` belongs to."""
        return split_of(problem.prompt, self.eval_fraction)

    def sample_prompts(
        self, n: int, rng: np.random.Generator | int | None = None, split: Split = "train"
    ) -> list[Problem]:
        """``n`` problems of ``split`` drawn with replacement; ``rng=None`` uses the task's seed.

        Example: ``task.sample_prompts(4, rng=np.random.default_rng(0), split="eval")``.
        """
        if split not in SPLITS:
            raise InputError(f"split must be one of {SPLITS}, got {split!r}.")
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise InputError(f"n must be a non-negative int, got {n!r}.")
        gen = as_generator(self.seed if rng is None else rng)
        out: list[Problem] = []
        for _ in range(int(n) * _MAX_DRAWS_PER_PROBLEM):
            if len(out) == n:
                break
            p = self._generate(gen)
            if self.split_of(p) == split:
                out.append(p)
        if len(out) < n:
            raise ConfigError(
                f"{self.name}: could not draw {n} {split!r} problems at difficulty {self.difficulty}; "
                "the problem space is too small, raise the difficulty."
            )
        return out

    def eval_problems(self, n: int = 128, seed: int = 0) -> list[Problem]:
        """A fixed evaluation set: the same ``n`` eval-split problems for a given ``seed``, across runs."""
        return self.sample_prompts(n, np.random.default_rng(seed), split="eval")

    # gymnasium spaces, shared by TextEnv
    def observation_space(self) -> spaces.Text:
        """The prompts: text over the task alphabet, at most ``max_prompt_chars`` long."""
        return spaces.Text(max_length=self.max_prompt_chars, min_length=1, charset=self.alphabet)

    def action_space(self) -> spaces.Text:
        """The completions: text over the task alphabet, at most ``max_completion_chars`` long."""
        return spaces.Text(max_length=self.max_completion_chars, min_length=0, charset=self.alphabet)


class TextEnv(gymnasium.Env):
    """A single-step text environment: observation = prompt, action = completion, reward from the verifier.

    ``reset(options={"split": "eval"})`` draws from the eval split (default "train"). ``info`` carries the
    expected ``answer`` and the ``split``; every episode terminates after one step.

    Example::

        env = gymnasium.make("metahp/Addition-v0", difficulty=2)
        prompt, info = env.reset(seed=0)
        _, reward, terminated, truncated, info = env.step(info["answer"])   # reward == 1.0
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"]}

    def __init__(self, task: Task, render_mode: str | None = None):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigError(f"render_mode must be None or one of {self.metadata['render_modes']}.")
        self.task = task
        self.render_mode = render_mode
        self.observation_space = task.observation_space()
        self.action_space = task.action_space()
        self.problem: Problem | None = None
        self._last: str | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        split = (options or {}).get("split", "train")
        # self.np_random is seeded by super().reset, so reset(seed=s) is reproducible
        self.problem = self.task.sample_prompts(1, self.np_random, split=split)[0]
        self._last = None
        return self.problem.prompt, self._info()

    def step(self, action: str):
        if self.problem is None:
            raise InputError("call reset() before step().")
        if not isinstance(action, str):
            raise InputError(f"the action is the completion text (a str), got {type(action).__name__}.")
        reward = self.task.reward(self.problem, action)
        self._last = action
        # The observation after the single step is the same prompt: a text space has no "empty" element.
        return self.problem.prompt, reward, True, False, self._info()

    def render(self) -> str | None:
        if self.render_mode == "ansi" and self.problem is not None:
            return self.problem.prompt + (self._last or "")
        return None

    def _info(self) -> dict[str, Any]:
        assert self.problem is not None
        return {"answer": self.problem.answer, "split": self.task.split_of(self.problem), **self.problem.extra}
