"""A task whose prompts differ, as real datasets do: two prompt families whose best temperatures differ.

Half the prompts ask to reverse a string of ``difficulty`` letters (family ``reverse``: ``"rev:abcde="`` ->
``"edcba"``), half to reverse a 2-letter string and sign it with an ``s`` (family ``sign``: ``"revs:ab="`` ->
``"bas"``), a skill the warm start leaves rare (``rare_skill``'s signature, 1 demonstration in 200).

Why the families want different temperatures. A family's best fixed temperature is set by what limits its groups:
- ``reverse`` (5 letters): its warm-start demonstrations replace each letter by a random one with probability
  ``noise`` (0.3), the way pre-training data is noisy. The mode stays right, but the spread is wide. If the model
  matched that distribution, a letter would be right with probability 0.97 at T = 0.6, 0.72 at 1.0 and 0.43 at 1.5,
  and a whole answer with 0.84, 0.19 and 0.015. Hot groups are then mostly all wrong, which gives no gradient.
- ``sign``: the signature has probability r ~ 0.002 at T = 1, so a group finds it only when hot (r_T is 3e-5 at
  0.6 and 0.016 at 1.5; ``rare_skill``'s docstring). Cold groups are all alike, which gives no gradient either.

With plain demonstrations the mixture's warm start leaves ``reverse`` strong enough that no temperature hurts it.
On tuning seeds it reached 0.91-1.0 at 0.6, 1.0 and 1.5 alike (docs/benchmarks.md, the mixed task), hence
``noise``.

So one fixed temperature for the whole dataset is a compromise, and a value per prompt family could beat every
single fixed value: whether it does is measured, not assumed (docs/benchmarks.md).

``Mixed(family="reverse")`` (``make_task("mixed.reverse")``) trains and evaluates one family alone, from the
*mixture's* warm start (``warm_start_task``), which is how per-family sweeps compare like with like.

``family_context()`` is the per-prompt context that reads a prompt's family from its text, for
``metahp.adapt(trainer, per="prompt", context=task.family_context(), ...)``.

Example: ``Mixed().family_of(Mixed().sample_prompts(1, rng=0)[0])`` is ``"reverse"`` or ``"sign"``.
"""

from __future__ import annotations

import numpy as np

from metahp.errors import ConfigError
from metahp.lab.tasks.base import Problem, Task
from metahp.lab.tasks.rare_skill import COMMON, RARE, RareSkill
from metahp.lab.tasks.strings import LETTERS

# each family's name and the instruction its prompts start with
FAMILIES = {"reverse": COMMON, "sign": RARE}
_FAMILY_OF_INSTRUCTION = {instruction: family for family, instruction in FAMILIES.items()}


class Mixed(RareSkill):
    """Two prompt families, ``reverse`` and ``sign``, with different best temperatures; see the module docstring."""

    name = "mixed"
    env_name = "Mixed"
    default_difficulty = 5

    def __init__(self, difficulty: int | None = None, seed: int | None = 0, rare: float = 0.005,
                 family: str | None = None, noise: float = 0.3):
        super().__init__(difficulty, seed, rare)
        if family is not None and family not in FAMILIES:
            raise ConfigError(f"mixed: family={family!r} is not one of its families {list(FAMILIES)}; pass None for "
                              f"both (the mixture).")
        if not 0.0 <= noise < 1.0:
            raise ConfigError(f"mixed: noise={noise!r} must be in [0, 1): it is the chance that each letter of a "
                              f"reverse demonstration is replaced by a random one (1 would teach no reversal).")
        self.family = family
        self.noise = float(noise)

    def __repr__(self) -> str:
        return f"Mixed(difficulty={self.difficulty}, seed={self.seed}, family={self.family!r})"

    @property
    def spec(self):
        return {**super().spec, "family": self.family, "noise": self.noise}

    def warm_start_completion(self, problem: Problem, rng: np.random.Generator) -> str:
        """A reverse demonstration with each letter replaced by a random one with probability ``noise`` (the mode
        stays right, the spread around it is wide); a sign demonstration as rare_skill's (the signature rare)."""
        if self.family_of(problem) == "sign":
            return super().warm_start_completion(problem, rng)
        answer = self.demonstration(problem)
        return "".join(LETTERS[rng.integers(len(LETTERS))] if rng.random() < self.noise else c for c in answer)

    def family_of(self, problem: Problem | str) -> str:
        """``"reverse"`` or ``"sign"``: the family of a problem or of a prompt's text."""
        prompt = problem.prompt if isinstance(problem, Problem) else problem
        instruction = prompt.split(":", 1)[0]
        if instruction not in _FAMILY_OF_INSTRUCTION:
            raise ConfigError(f"mixed: the prompt {prompt!r:.40} is from neither family {list(FAMILIES)}.")
        return _FAMILY_OF_INSTRUCTION[instruction]

    def family_context(self):
        """The per-prompt context of this task: a prompt's family, read from its text (labels: the families)."""
        from metahp.knobset import prompt_context  # here: the tasks import no torch

        return prompt_context(self.family_of, labels=tuple(FAMILIES))

    def warm_start_task(self) -> Task:
        """The mixture, whichever family this task trains on: every family variant starts from the same policy."""
        return self if self.family is None else Mixed(self.difficulty, self.seed, self.rare, noise=self.noise)

    def _generate(self, rng: np.random.Generator) -> Problem:
        while True:  # a family alone: redraw the other family's problems (a fair coin each: 2 draws on average)
            problem = super()._generate(rng)
            if self.family is None or self.family_of(problem) == self.family:
                return problem
