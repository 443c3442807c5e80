"""A task whose best sampling temperature moves during training: a common skill and a rare one.

Half the prompts ask to reverse a string of ``difficulty`` letters (``"rev:abcdefg="`` -> ``"gfedcba"``), half to
reverse a 2-letter string and sign it with an ``s`` (``"revs:ab="`` -> ``"bas"``). The verifier is exact for
both. What makes the task special is the warm start: its demonstrations leave the ``s`` off except a fraction
``rare`` of the time (0.005 by default), so GRPO starts with a skill the policy has only at low probability, the
way an LLM starts RL with a skill that was rare in its pre-training data (measured after the default warm start:
p(s | correct reversal) = 0.001-0.002 at T = 1). The rare skill is one token on a short string, so finding it is
one decision, not a new algorithm.

Why the best temperature moves. Sampling at temperature T turns a token probability ``r`` into

    r_T = r^(1/T) / (r^(1/T) + (1 - r)^(1/T)),

and GRPO learns only from groups that mix successes and failures, so hot sampling finds the signature far sooner
(with r = 0.002, r_T is 3e-5 at T = 0.6 and 0.016 at T = 1.5). But hot sampling also breaks the long reversals,
so until the signature is found cold sampling collects more reward. Measured (docs/benchmarks.md, 5 seeds,
250 steps): the fixed temperature with the most training reward goes 0.6 -> 0.8 -> 1.0 -> 1.0 -> 1.5 over the
five fifths of the run, and the signature was learned on 0 of 5 seeds at T <= 0.8 and on 3 of 5 at T = 1.5.

Difficulty = the length of the reversed strings (default 7). ``rare = 1.0`` gives a plain two-instruction task.

Example: ``RareSkill(difficulty=7).sample_prompts(2, rng=0)``; ``task.instruction(problem)`` is ``"rev"`` or
``"revs"``.
"""

from __future__ import annotations

import numpy as np

from metahp.errors import ConfigError
from metahp.lab.tasks.base import Problem, Task
from metahp.lab.tasks.strings import LETTERS

INSTRUCTIONS = {"rev": lambda s: s[::-1], "revs": lambda s: s[::-1] + "s"}
COMMON, RARE = "rev", "revs"
# Rare-skill strings are short, so that finding the signature (not reversing) limits them; see the docstring.
RARE_LENGTH = 2


class RareSkill(Task):
    """Reverse a string (common skill), or reverse and sign it (rare in the warm start); see the module docstring."""

    name = "rare_skill"
    env_name = "RareSkill"
    default_difficulty = 7
    min_difficulty = 2
    max_difficulty = 24
    # the same characters as reverse's alphabet ("s" is one of them), so the tokenizers match
    alphabet = "".join(sorted(set(LETTERS + "rev:s=")))

    def __init__(self, difficulty: int | None = None, seed: int | None = 0, rare: float = 0.005):
        super().__init__(difficulty, seed)
        if not 0.0 < rare <= 1.0:
            raise ConfigError(f"rare_skill: rare={rare!r} must be in (0, 1]: it is the fraction of warm-start "
                              "demonstrations that sign a revs answer (0 would make the signature unlearnable).")
        self.rare = float(rare)
        self.max_prompt_chars = len("revs:") + self.difficulty + 1
        self.max_completion_chars = self.difficulty + 1

    @property
    def spec(self):
        # what shapes the warm start, so a different value is a different cache entry
        return {**super().spec, "rare": self.rare, "rare_length": RARE_LENGTH}

    @staticmethod
    def instruction(problem: Problem) -> str:
        """``"rev"`` or ``"revs"``: which skill the problem asks for."""
        return problem.prompt.split(":", 1)[0]

    def _generate(self, rng: np.random.Generator) -> Problem:
        which = COMMON if rng.random() < 0.5 else RARE
        length = self.difficulty if which == COMMON else RARE_LENGTH
        s = "".join(LETTERS[i] for i in rng.integers(0, len(LETTERS), size=length))
        return Problem(prompt=f"{which}:{s}=", answer=INSTRUCTIONS[which](s), extra={"input": s})

    def reward(self, problem: Problem, completion: str) -> float:
        return 1.0 if completion == problem.answer else 0.0

    def warm_start_completion(self, problem: Problem, rng: np.random.Generator) -> str:
        """The unsigned reversal for a revs prompt, except with probability ``rare``: the skill is rare, not absent."""
        if self.instruction(problem) == RARE and rng.random() >= self.rare:
            return INSTRUCTIONS[COMMON](problem.extra["input"])
        return self.demonstration(problem)
