"""Tasks: gymnasium conformance, strict verifiers, disjoint deterministic splits, reproducible sampling."""

import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given
from hypothesis import strategies as st

from metahp.errors import ConfigError, InputError
from metahp.lab.tasks import TASKS, Countdown, Problem, RareSkill, WordArithmetic, env_id, make_env, make_task, split_of
from metahp.lab.tasks.countdown import evaluate
from metahp.lab.tasks.word_arithmetic import EXAMPLE

NAMES = sorted(TASKS)


@pytest.mark.parametrize("name", NAMES)
def test_env_checker_passes(name):
    env = gymnasium.make(env_id(name)).unwrapped
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a checker warning is a failure too
        check_env(env, skip_render_check=True)


@pytest.mark.parametrize("name", NAMES)
def test_env_single_step(name):
    env = gymnasium.make(env_id(name), difficulty=TASKS[name].min_difficulty + 1)
    prompt, info = env.reset(seed=3)
    assert prompt in env.observation_space and info["split"] == "train"
    assert env.reset(seed=3)[0] == prompt  # seeded reset is reproducible
    obs, reward, terminated, truncated, info = env.step(info["answer"])
    assert (reward, terminated, truncated) == (1.0, True, False) and obs == prompt
    env.reset(seed=3)
    assert env.step(info["answer"] + "0")[1] == 0.0
    prompt, info = env.reset(seed=4, options={"split": "eval"})
    assert info["split"] == "eval" and split_of(prompt, TASKS[name].eval_fraction) == "eval"


def test_env_render_and_errors():
    env = make_env("addition", difficulty=2, render_mode="ansi")
    with pytest.raises(InputError, match="reset"):
        env.step("1")
    prompt, _ = env.reset(seed=0)
    env.step("7")
    assert env.render() == prompt + "7"
    with pytest.raises(InputError, match="str"):
        env.step(7)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("split", ["train", "eval"])
def test_demonstrations_pass_and_fit_the_spaces(name, split):
    for difficulty in (TASKS[name].min_difficulty, TASKS[name].default_difficulty, TASKS[name].min_difficulty + 3):
        task = make_task(name, difficulty)
        obs_space, act_space = task.observation_space(), task.action_space()
        for p in task.sample_prompts(200, rng=1, split=split):
            demo = task.demonstration(p)
            assert task.reward(p, demo) == 1.0, (p, demo)
            assert p.prompt in obs_space and demo in act_space
            assert task.split_of(p) == split


@pytest.mark.parametrize("name", NAMES)
def test_splits_are_disjoint_and_deterministic(name):
    task = make_task(name, TASKS[name].min_difficulty + 1)
    train = {p.prompt for p in task.sample_prompts(3000, rng=0, split="train")}
    evals = {p.prompt for p in task.sample_prompts(1000, rng=0, split="eval")}
    assert train and evals and not train & evals
    # the split depends on the problem only: another task instance with another seed agrees
    other = make_task(name, TASKS[name].min_difficulty + 1, seed=99)
    assert all(other.split_of(Problem(q, "")) == "eval" for q in evals)


def test_small_problem_space_splits_cover_it():
    task = make_task("addition", 1)  # 100 problems
    train = {p.prompt for p in task.sample_prompts(3000, rng=0)}
    evals = {p.prompt for p in task.sample_prompts(1000, rng=0, split="eval")}
    assert len(train | evals) == 100 and not train & evals and 5 <= len(evals) <= 40


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_problems(name):
    task = make_task(name)
    assert task.sample_prompts(30, rng=7) == task.sample_prompts(30, rng=7)
    assert task.sample_prompts(30, rng=7) != task.sample_prompts(30, rng=8)
    assert task.sample_prompts(30) == make_task(name, seed=0).sample_prompts(30, rng=0)  # rng=None: the task seed
    g1, g2 = np.random.default_rng(5), np.random.default_rng(5)
    assert task.sample_prompts(10, g1, "eval") == task.sample_prompts(10, g2, "eval")
    assert task.eval_problems(16) == task.eval_problems(16)


def test_make_task_errors():
    with pytest.raises(ConfigError, match="valid tasks: .*addition.*countdown"):
        make_task("multiplication")
    with pytest.raises(ConfigError, match=r"pick an int in \[1, 9\]"):
        make_task("addition", difficulty=0)
    with pytest.raises(ConfigError, match="int"):
        make_task("addition", difficulty=2.5)
    with pytest.raises(InputError, match="split"):
        make_task("addition").sample_prompts(1, 0, split="test")
    with pytest.raises(InputError, match="non-negative"):
        make_task("addition").sample_prompts(-1, 0)
    task = make_task("reverse")
    assert make_task(task) is task


def test_prompt_formats():
    assert make_task("addition", 3).sample_prompts(1, 0)[0].prompt.endswith("=")
    p = make_task("reverse", 4).sample_prompts(1, 0)[0]
    assert p.prompt.startswith("rev:") and p.answer == p.prompt[4:-1][::-1]
    p = make_task("sort", 4).sample_prompts(1, 0)[0]
    assert p.prompt.startswith("sort:") and p.answer == "".join(sorted(p.prompt[5:-1]))


def test_addition_rejects_near_misses():
    task = make_task("addition", 3)
    p = Problem("12+345=", "357")
    assert task.reward(p, "357") == 1.0
    for bad in ["356", "358", "0357", " 357", "357 ", "357\n", "+357", "357.0", "3 57", "35", "3570", "", "357=",
                "357<eos>", "３５７"]:
        assert task.reward(p, bad) == 0.0, bad


@pytest.mark.parametrize("name", ["reverse", "sort"])
def test_string_tasks_reject_near_misses(name):
    task = make_task(name, 5)
    p = [q for q in task.sample_prompts(50, 0) if len(set(q.answer)) == 5][0]
    a = p.answer
    for bad in [a[:-1], a + a[-1], " " + a, a + " ", a.upper(), a[1:] + a[0], a[::-1], a[:2] + " " + a[2:]]:
        assert task.reward(p, bad) == 0.0, bad


CD = Problem("3,5,7:22=", "3*5+7", {"numbers": (3, 5, 7), "target": 22})


@pytest.mark.parametrize("good", ["3*5+7", "7+3*5", "5*3+7", "(3*5)+7", "7+(5*3)", "((3*5)+7)"])
def test_countdown_accepts_valid_expressions(good):
    assert make_task("countdown", 3).reward(CD, good) == 1.0


@pytest.mark.parametrize("bad", [
    "3+5+7",            # wrong value
    "3*5+7 ", " 3*5+7", "3 * 5 + 7", "3*5+7\n", "3*5+7\t",  # whitespace tricks
    "3*5+7=", "3*5+7=22", "=3*5+7",  # extra characters
    "35-13",            # glued numbers, and 13 not given
    "3*5+7+0",          # 0 is not given
    "3*5*1+7",          # 1 is not given
    "3*5+7-3+3",        # 3 used three times
    "3*5+7+3-3",
    "-3+25", "+3*5+7",  # unary signs; 25 not given
    "3*5+07",           # leading zero
    "3×5+7", "3x5+7", "3*5+7.0", "22",
    "(3*5+7", "3*5+7)", "3*5++7", "3**5+7", "3*(5)7", "()3*5+7", "",
    "__import__('os')",
    "7+7+7+1",
])
def test_countdown_rejects_near_misses(bad):
    assert make_task("countdown", 3).reward(CD, bad) == 0.0


def test_countdown_duplicates_and_prompt_only_problems():
    task = make_task("countdown", 3)
    dup = Problem("2,2,5:9=", "2*2+5")  # no extra: numbers and target are read back from the prompt
    assert task.reward(dup, "2*2+5") == 1.0 and task.reward(dup, "2+2+5") == 1.0
    assert task.reward(dup, "2*2*2+5") == 0.0  # 2 is given twice, not three times
    assert task.reward(Problem("2,2,5:4=", ""), "2+2") == 1.0  # at most once: unused numbers are fine
    with pytest.raises(InputError, match="countdown prompt"):
        task.reward(Problem("12+3=", "15"), "15")
    assert evaluate("3*5+7", (3, 5, 7)) == 22 and evaluate("5-7", (5, 7)) == -2
    assert evaluate("3*5+7", (3, 5)) is None
    # a too-long completion is rejected before parsing (bounded work per completion)
    assert task.reward(CD, "(" * 40 + "3*5+7" + ")" * 40) == 0.0


def test_countdown_targets_are_in_range():
    task = Countdown(6)
    for p in task.sample_prompts(300, 0):
        assert 0 <= p.extra["target"] <= 999 and len(p.extra["numbers"]) == 6
        assert evaluate(p.answer, p.extra["numbers"]) == p.extra["target"]


@st.composite
def _expressions(draw):
    """A random well-formed expression over digits 1-9 with + - * and parentheses, and the digits it uses."""
    used: list[int] = []

    def build(depth):
        if depth == 0 or draw(st.booleans()):
            n = draw(st.integers(1, 9))
            used.append(n)
            return str(n)
        left, right = build(depth - 1), build(depth - 1)
        text = f"{left}{draw(st.sampled_from('+-*'))}{right}"
        return f"({text})" if draw(st.booleans()) else text

    return build(3), used


@given(_expressions(), st.lists(st.integers(1, 9), max_size=3))
def test_countdown_evaluator_matches_python_arithmetic(expr_used, spare):
    expression, used = expr_used
    # Python's eval is the oracle here only, on expressions this test built itself
    assert evaluate(expression, tuple(used + spare)) == eval(expression)
    # one copy fewer of any number it uses: rejected
    assert evaluate(expression, tuple(used[1:])) is None


# -- rare_skill: the moving-optimum task (issue 7) ------------------------------------------------------------
def test_rare_skill_instructions_and_answers():
    task = make_task("rare_skill", difficulty=7, seed=0)
    problems = task.sample_prompts(400, rng=0)
    kinds = [task.instruction(p) for p in problems]
    assert 0.4 < kinds.count("revs") / len(kinds) < 0.6  # about half and half
    for p, kind in zip(problems, kinds, strict=True):
        s = p.extra["input"]
        if kind == "rev":
            assert p.prompt == f"rev:{s}=" and p.answer == s[::-1] and len(s) == 7
        else:
            assert p.prompt == f"revs:{s}=" and p.answer == s[::-1] + "s" and len(s) == 2
        assert task.reward(p, p.answer) == 1.0
        assert task.reward(p, s[::-1] + ("" if kind == "revs" else "s")) == 0.0  # the other skill's answer fails


def test_rare_skill_warm_start_signs_at_the_rare_rate():
    """The warm-start demonstrations sign a revs answer with probability ``rare`` (binomial, 5-sigma band) and
    leave rev answers, and every other task's demonstrations, untouched."""
    rare, n = 0.1, 4000
    task = RareSkill(5, seed=0, rare=rare)
    rng = np.random.default_rng(1)
    revs = [p for p in task.sample_prompts(2 * n, rng=0) if task.instruction(p) == "revs"][:n]
    signed = sum(task.warm_start_completion(p, rng).endswith("s") for p in revs)
    assert abs(signed - rare * n) < 5 * np.sqrt(n * rare * (1 - rare))
    for p in task.sample_prompts(50, rng=2):
        if task.instruction(p) == "rev":
            assert task.warm_start_completion(p, rng) == p.answer
    addition = make_task("addition")
    assert all(addition.warm_start_completion(p, rng) == p.answer for p in addition.sample_prompts(20, rng=0))


def test_rare_skill_rejects_a_bad_rare_fraction():
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match="rare"):
            RareSkill(rare=bad)
    # a different rare fraction is a different warm start, so a different cache key
    assert RareSkill(rare=0.1).spec != RareSkill(rare=0.2).spec


def _story_answer(prompt: str) -> int:
    """Re-derive a word problem's answer from its last line, independently of the generator."""
    words = prompt.rsplit("\n", 1)[1].replace(".", "").split()
    first = int(words[2])
    second = int(next(w for w in words[4:] if w.isdigit()))
    return first + second if "gets" in words else first - second


@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_word_arithmetic_answers_and_ranges(difficulty):
    task = WordArithmetic(difficulty, seed=0)
    problems = task.sample_prompts(300, 0)
    assert {("gets" in p.prompt.rsplit("\n", 1)[1]) for p in problems} == {True, False}  # both operations
    for p in problems:
        assert p.prompt.startswith(EXAMPLE) and p.prompt.endswith(" has")
        assert int(p.answer) == _story_answer(p.prompt) > 0
        assert len(p.prompt) <= task.max_prompt_chars and set(p.prompt) <= set(task.alphabet)
    firsts = [int(p.prompt.rsplit("\n", 1)[1].split()[2]) for p in problems]
    assert max(firsts) < 10**difficulty + 9 and max(firsts) >= 10 ** (difficulty - 1)


@pytest.mark.parametrize("completion", [" 7", "7", " 7 cups.", " 7\n\nKim has", "  7, then"])
def test_word_arithmetic_accepts_the_count_first(completion):
    assert WordArithmetic().reward(Problem("x", "7"), completion) == 1.0


@pytest.mark.parametrize("completion", ["", " seven", " 17", " 71", " 7.5", " -7", " 7th", " has 7", " 07"])
def test_word_arithmetic_rejects_near_misses(completion):
    assert WordArithmetic().reward(Problem("x", "7"), completion) == 0.0


def test_word_arithmetic_stays_out_of_the_char_vocabulary():
    from metahp.lab.tasks import ALL_TASKS_ALPHABET

    assert not WordArithmetic.char_level and all(TASKS[n].char_level for n in TASKS if n != "word_arithmetic")
    assert "N" not in ALL_TASKS_ALPHABET and "N" in WordArithmetic().alphabet
