"""String tasks: reverse (``"rev:abcd="`` -> ``"dcba"``) or sort (``"sort:dbca="`` -> ``"abcd"``) a string.

Difficulty = the string length. Letters come from a small lowercase alphabet (``a``-``p``) to keep the tiny
char-level vocabulary small while the problem space stays large (16**length).

Example: ``Reverse(difficulty=5).sample_prompts(2, rng=0)``.
"""

from __future__ import annotations

import numpy as np

from metahp.lab.tasks.base import Problem, Task

LETTERS = "abcdefghijklmnop"


class _StringTask(Task):
    prefix: str
    default_difficulty = 5
    min_difficulty = 2
    max_difficulty = 24

    def __init__(self, difficulty: int | None = None, seed: int | None = 0):
        super().__init__(difficulty, seed)
        self.alphabet = "".join(sorted(set(LETTERS + self.prefix + "=")))
        self.max_prompt_chars = len(self.prefix) + self.difficulty + 1
        self.max_completion_chars = self.difficulty

    def _transform(self, s: str) -> str:
        raise NotImplementedError

    def _generate(self, rng: np.random.Generator) -> Problem:
        s = "".join(LETTERS[i] for i in rng.integers(0, len(LETTERS), size=self.difficulty))
        return Problem(prompt=f"{self.prefix}{s}=", answer=self._transform(s), extra={"input": s})

    def reward(self, problem: Problem, completion: str) -> float:
        return 1.0 if completion == problem.answer else 0.0


class Reverse(_StringTask):
    """Reverse the string: ``"rev:abcd="`` -> ``"dcba"``."""

    name = "reverse"
    env_name = "Reverse"
    prefix = "rev:"

    def _transform(self, s: str) -> str:
        return s[::-1]


class Sort(_StringTask):
    """Sort the letters: ``"sort:dbca="`` -> ``"abcd"``."""

    name = "sort"
    env_name = "Sort"
    prefix = "sort:"

    def _transform(self, s: str) -> str:
        return "".join(sorted(s))
