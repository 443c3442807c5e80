"""Built-in tasks: single-turn text problems with strict verifiers, as plain Python and as gymnasium envs.

One file per task family; add the class to ``TASKS`` below and it is registered with gymnasium as
``metahp/<EnvName>-v0``.

Example::

    from metahp.lab.tasks import make_task
    task = make_task("addition", difficulty=3, seed=0)
    problems = task.sample_prompts(8, rng=0, split="train")
    rewards = [task.reward(p, task.demonstration(p)) for p in problems]   # all 1.0

    import gymnasium
    env = gymnasium.make("metahp/Countdown-v0", difficulty=3)
"""

from __future__ import annotations

import gymnasium

from metahp.errors import ConfigError
from metahp.lab.tasks.addition import Addition
from metahp.lab.tasks.base import Problem, Task, TextEnv, split_of
from metahp.lab.tasks.countdown import Countdown
from metahp.lab.tasks.mixed import FAMILIES, Mixed
from metahp.lab.tasks.rare_skill import RareSkill
from metahp.lab.tasks.strings import Reverse, Sort
from metahp.lab.tasks.word_arithmetic import WordArithmetic

TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (Addition, Countdown, Reverse, Sort, RareSkill, Mixed,
                                                          WordArithmetic)}

# Every character any char-level built-in task can use: a tiny char tokenizer over it serves all those tasks.
ALL_TASKS_ALPHABET = "".join(sorted({c for cls in TASKS.values() if cls.char_level for c in cls(None).alphabet}))


def make_task(name: str | Task, difficulty: int | None = None, seed: int | None = 0) -> Task:
    """A task from its name (``"addition"``, ``"countdown"``, ``"reverse"``, ``"sort"``, ``"rare_skill"``,
    ``"mixed"``, ``"word_arithmetic"``) or an instance; ``"mixed.<family>"`` is one family of the mixed task alone
    (``"mixed.reverse"``, ``"mixed.sign"``), from the mixture's warm start.

    ``difficulty=None`` takes the task's default. Example: ``make_task("reverse", difficulty=6)``.
    """
    if isinstance(name, Task):
        return name
    if isinstance(name, str) and "." in name:
        base, family = name.split(".", 1)
        if base != Mixed.name or family not in FAMILIES:
            raise ConfigError(f"unknown task {name!r}: only the mixed task has families, "
                              f"{[f'{Mixed.name}.{f}' for f in FAMILIES]}; valid tasks: {sorted(TASKS)}.")
        return Mixed(difficulty, seed, family=family)
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; valid tasks: {sorted(TASKS)}.")
    return TASKS[name](difficulty, seed)


def make_env(task: str, difficulty: int | None = None, seed: int | None = 0, render_mode: str | None = None):
    """The gymnasium env of a task (the entry point of the registered ``metahp/<EnvName>-v0`` ids)."""
    return TextEnv(make_task(task, difficulty, seed), render_mode=render_mode)


def env_id(name: str) -> str:
    """The gymnasium id of a task name: ``env_id("addition") == "metahp/Addition-v0"``."""
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; valid tasks: {sorted(TASKS)}.")
    return f"metahp/{TASKS[name].env_name}-v0"


for _name in TASKS:
    # Guarded so a module reload does not trigger gymnasium's "overriding environment" warning.
    if env_id(_name) not in gymnasium.registry:
        gymnasium.register(id=env_id(_name), entry_point="metahp.lab.tasks:make_env", kwargs={"task": _name})

__all__ = [
    "ALL_TASKS_ALPHABET", "FAMILIES", "TASKS", "Addition", "Countdown", "Mixed", "Problem", "RareSkill", "Reverse",
    "Sort", "Task", "TextEnv", "WordArithmetic", "env_id", "make_env", "make_task", "split_of",
]
