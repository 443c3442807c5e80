"""Arithmetic word problems for a pretrained LM: ``"... Now Ana has"`` -> ``" 12"`` (the count, then anything).

Every prompt is a one-shot story completion, so a small instruction-tuned model (SmolLM2-135M) answers in the
right shape without a chat template::

    Ben has 4 cups. Ben gets 3 more cups. Now Ben has 7 cups.
    Ana has 9 coins. Ana gives away 5 coins. Now Ana has

Half the problems add, half subtract. Difficulty d: the first count is in [1, 10**d) for additions and in
[3, 10**d + 9) for subtractions; the second is in [2, 9] (below the first count when subtracting, so
every answer is positive). The verifier reads the completion's first token-like word: it must
be the exact count (``" 4 coins."``, ``"4"`` and ``" 4\\n"`` pass; ``" four"``, ``" 14"``, ``" 4.5"`` and
``" -4"`` do not), and what follows it is free, since a pretrained model keeps talking.

For SmolLM2-135M-Instruct difficulty 1 is hard but not hopeless: held-out greedy accuracy 0.125 and pass@8
0.43 before GRPO, 0.38-0.45 after 80 GRPO steps (``benchmarks/results/smollm2``, docs/benchmarks.md). In the
probe that chose the format, a three-shot version with two-digit first counts scored 0-0.02 at every temperature.

This is the one built-in task written in English for a real tokenizer: it is not char-level, so its letters
are left out of ``ALL_TASKS_ALPHABET`` (the tiny models' shared vocabulary).
"""

from __future__ import annotations

import re

import numpy as np

from metahp.lab.tasks.base import Problem, Task

NAMES = ("Ana", "Ben", "Eva", "Kim", "Leo", "Li", "Maya", "Omar", "Sara", "Tom")
ITEMS = ("apples", "books", "cards", "coins", "pens", "shells", "stamps", "stones")
EXAMPLE = "Ben has 4 cups. Ben gets 3 more cups. Now Ben has 7 cups.\n"
# A count, not followed by more digits, a decimal point plus digit, or glued letters ("4th").
_LEADING_COUNT = re.compile(r"\s*(\d+)(?!\w|\.\d)")


class WordArithmetic(Task):
    """Add or subtract small counts in a one-sentence story; the verifier wants the exact count first."""

    name = "word_arithmetic"
    env_name = "WordArithmetic"
    default_difficulty = 1
    max_difficulty = 4
    char_level = False

    def __init__(self, difficulty: int | None = None, seed: int | None = 0):
        super().__init__(difficulty, seed)
        self.alphabet = "".join(sorted(set("".join(NAMES) + "".join(ITEMS) + EXAMPLE + "gives away0123456789")))
        name, item = max(NAMES, key=len), max(ITEMS, key=len)
        a = "9" * (self.difficulty + 1)  # the largest first count has difficulty + 1 digits (subtractions)
        self.max_prompt_chars = len(f"{EXAMPLE}{name} has {a} {item}. {name} gives away 9 {item}. Now {name} has")
        # room for the count and the few words a pretrained model adds before it stops
        self.max_completion_chars = 64

    def _generate(self, rng: np.random.Generator) -> Problem:
        name = NAMES[int(rng.integers(len(NAMES)))]
        item = ITEMS[int(rng.integers(len(ITEMS)))]
        if rng.random() < 0.5:
            a, b = int(rng.integers(1, 10**self.difficulty)), int(rng.integers(2, 10))
            story, answer = f"{name} gets {b} more {item}.", a + b
        else:
            a = int(rng.integers(3, 10**self.difficulty + 9))
            b = int(rng.integers(2, min(a, 10)))
            story, answer = f"{name} gives away {b} {item}.", a - b
        prompt = f"{EXAMPLE}{name} has {a} {item}. {story} Now {name} has"
        return Problem(prompt=prompt, answer=str(answer))

    def demonstration(self, problem: Problem) -> str:
        return f" {problem.answer}"

    def reward(self, problem: Problem, completion: str) -> float:
        match = _LEADING_COUNT.match(completion)
        return 1.0 if match is not None and match.group(1) == problem.answer else 0.0
