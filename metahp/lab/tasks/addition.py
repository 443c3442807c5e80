"""Multi-digit addition: ``"12+345="`` -> ``"357"``; difficulty = the number of digits of each operand.

Operands are uniform in [0, 10**difficulty), so some have fewer digits; the answer is written without leading
zeros, most significant digit first.

Example: ``Addition(difficulty=3).sample_prompts(2, rng=0)``.
"""

from __future__ import annotations

import numpy as np

from metahp.lab.tasks.base import Problem, Task


class Addition(Task):
    """Add two non-negative integers of up to ``difficulty`` digits each; the verifier wants the exact sum."""

    name = "addition"
    env_name = "Addition"
    default_difficulty = 2
    max_difficulty = 9
    alphabet = "0123456789+="

    def __init__(self, difficulty: int | None = None, seed: int | None = 0):
        super().__init__(difficulty, seed)
        self.max_prompt_chars = 2 * self.difficulty + 2
        self.max_completion_chars = self.difficulty + 1

    def _generate(self, rng: np.random.Generator) -> Problem:
        a, b = (int(x) for x in rng.integers(0, 10**self.difficulty, size=2))
        return Problem(prompt=f"{a}+{b}=", answer=str(a + b))

    def reward(self, problem: Problem, completion: str) -> float:
        # Exact string match: rejects leading zeros, signs, spaces and trailing text that int() would accept.
        return 1.0 if completion == problem.answer else 0.0
