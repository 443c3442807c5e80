"""Countdown: reach a target from given numbers with + - * and parentheses; ``"3,5,7:22="`` -> ``"3*5+7"``.

Difficulty = how many numbers are given (digits 1-9). The rules the verifier enforces, strictly:

* only the characters ``0123456789+-*()``, no spaces;
* every number in the expression is one of the given numbers, each given number used at most once (a number
  given twice may be used twice); numbers have no leading zeros and cannot be glued together ("35" is not 3, 5);
* binary operators only (no unary minus), balanced parentheses, standard precedence (``*`` before ``+ -``);
* the value equals the target exactly. The expression is parsed and evaluated by a small parser, never eval().

The demonstration uses all numbers in the given order, left to right with standard precedence.

Example: ``Countdown(difficulty=3).reward(p, "3*5+7")``.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

from metahp.errors import InputError
from metahp.lab.tasks.base import Problem, Task

_TOKEN = re.compile(r"[1-9][0-9]*|0|[-+*()]")
_ALLOWED = frozenset("0123456789+-*()")
_MAX_TARGET = 999  # keeps prompts short and targets learnable


class _Invalid(Exception):
    """The completion breaks a rule; the verifier turns it into reward 0."""


class _Parser:
    """Recursive descent over tokens: expr := term (('+'|'-') term)*; term := factor ('*' factor)*;
    factor := NUMBER | '(' expr ')'. Consumes the available numbers as it reads them."""

    def __init__(self, tokens: list[str], available: Counter[int]):
        self.tokens, self.i, self.available = tokens, 0, available

    def parse(self) -> int:
        value = self.expr()
        if self.i != len(self.tokens):
            raise _Invalid("trailing tokens")
        return value

    def _peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def expr(self) -> int:
        value = self.term()
        while self._peek() in ("+", "-"):
            op = self.tokens[self.i]
            self.i += 1
            rhs = self.term()
            value = value + rhs if op == "+" else value - rhs
        return value

    def term(self) -> int:
        value = self.factor()
        while self._peek() == "*":
            self.i += 1
            value *= self.factor()
        return value

    def factor(self) -> int:
        tok = self._peek()
        if tok is None:
            raise _Invalid("unexpected end")
        self.i += 1
        if tok == "(":
            value = self.expr()
            if self._peek() != ")":
                raise _Invalid("unbalanced parenthesis")
            self.i += 1
            return value
        if not tok.isdigit():
            raise _Invalid(f"unexpected {tok!r}")
        n = int(tok)
        if self.available[n] <= 0:
            raise _Invalid(f"{n} is not available")
        self.available[n] -= 1
        return n


def evaluate(expression: str, numbers: tuple[int, ...]) -> int | None:
    """The value of ``expression`` if it obeys the countdown rules for ``numbers``, else None.

    Example: ``evaluate("3*5+7", (3, 5, 7)) == 22``; ``evaluate("35+7", (3, 5, 7)) is None``.
    """
    if not expression or not set(expression) <= _ALLOWED:
        return None
    tokens = _TOKEN.findall(expression)
    # findall skips what it cannot match (e.g. "07" reads as "0","7"): the tokens must rebuild the text exactly
    if "".join(tokens) != expression or any(len(t) > 1 and t[0] == "0" for t in tokens):
        return None
    try:
        return _Parser(tokens, Counter(numbers)).parse()
    except _Invalid:
        return None


class Countdown(Task):
    """Reach the target from ``difficulty`` given digits with + - * ( ), each number used at most once."""

    name = "countdown"
    env_name = "Countdown"
    default_difficulty = 3
    min_difficulty = 2
    max_difficulty = 6
    alphabet = "0123456789,:=+-*()"

    def __init__(self, difficulty: int | None = None, seed: int | None = 0):
        super().__init__(difficulty, seed)
        k = self.difficulty
        self.max_prompt_chars = 2 * k - 1 + 1 + len(str(_MAX_TARGET)) + 1
        # k digits, k-1 operators and up to k-1 pairs of parentheses
        self.max_completion_chars = 4 * k - 3

    def _generate(self, rng: np.random.Generator) -> Problem:
        while True:
            numbers = tuple(int(x) for x in rng.integers(1, 10, size=self.difficulty))
            ops = rng.choice(["+", "-", "*"], size=self.difficulty - 1)
            expression = "".join(f"{n}{op}" for n, op in zip(numbers, ops, strict=False)) + str(numbers[-1])
            target = evaluate(expression, numbers)
            assert target is not None
            if 0 <= target <= _MAX_TARGET:
                break
        prompt = ",".join(map(str, numbers)) + f":{target}="
        return Problem(prompt=prompt, answer=expression, extra={"numbers": numbers, "target": target})

    def reward(self, problem: Problem, completion: str) -> float:
        if len(completion) > self.max_completion_chars:
            return 0.0
        numbers, target = self._numbers_and_target(problem)
        value = evaluate(completion, numbers)
        return 1.0 if value is not None and value == target else 0.0

    @staticmethod
    def _numbers_and_target(problem: Problem) -> tuple[tuple[int, ...], int]:
        if "numbers" in problem.extra:
            return problem.extra["numbers"], problem.extra["target"]
        # A Problem rebuilt from its prompt alone (e.g. from a dataset column): read them back from the prompt.
        m = re.fullmatch(r"([0-9,]+):([0-9]+)=", problem.prompt)
        if m is None:
            raise InputError(f"not a countdown prompt: {problem.prompt!r}; expected e.g. '3,5,7:22='.")
        return tuple(int(x) for x in m.group(1).split(",")), int(m.group(2))
