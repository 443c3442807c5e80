"""The mixed task (two prompt families whose best temperatures differ) and values per prompt family.

A family variant (``mixed.reverse``) trains on one family from the mixture's warm start; ``prompt_context`` gives
each family its own meta-policy, read from the prompt's text."""

import pytest
import torch

import metahp
from metahp.errors import ConfigError, InputError
from metahp.knobset import KnobSet, context_reads, pass_rate_bucket, prompt_context
from metahp.lab.grpo import GRPOTrainer
from metahp.lab.models import char_tokenizer, tiny_model
from metahp.lab.tasks import FAMILIES, TASKS, Mixed, make_task
from metahp.lab.warmstart import WarmStartSettings, cache_key


def test_the_mixture_draws_both_families_and_a_variant_only_its_own():
    mixed = make_task("mixed", seed=0)
    problems = mixed.sample_prompts(64, rng=0)
    families = [mixed.family_of(p) for p in problems]
    assert set(families) == set(FAMILIES) and 16 < families.count("sign") < 48
    assert all(mixed.reward(p, mixed.demonstration(p)) == 1.0 for p in problems)
    assert all(len(p.answer) == 5 for p in problems if mixed.family_of(p) == "reverse")
    assert all(p.answer.endswith("s") and len(p.answer) == 3 for p in problems if mixed.family_of(p) == "sign")
    for family in FAMILIES:
        alone = make_task(f"mixed.{family}", seed=0)
        assert isinstance(alone, Mixed) and alone.family == family
        assert {alone.family_of(p) for p in alone.sample_prompts(32, rng=1, split="eval")} == {family}
    assert "mixed" in TASKS and "mixed.sign" not in TASKS  # a variant is a name, not another registered task


def test_every_family_variant_starts_from_the_mixtures_warm_start():
    mixed = make_task("mixed", seed=3)
    tok = char_tokenizer(mixed.alphabet)
    model = tiny_model(tok, hidden=16, layers=1, heads=2, seed=3)
    key = cache_key(mixed, model, tok, 3, WarmStartSettings())
    for family in FAMILIES:
        variant = make_task(f"mixed.{family}", seed=3)
        assert variant.spec != mixed.spec  # its runs are its own ...
        assert cache_key(variant.warm_start_task(), model, tok, 3, WarmStartSettings()) == key  # ... its start is not
    assert mixed.warm_start_task() is mixed and make_task("addition").warm_start_task().name == "addition"


def test_bad_families_and_foreign_prompts_are_refused_with_what_works():
    with pytest.raises(ConfigError, match=r"family='nope'.*\['reverse', 'sign'\]"):
        Mixed(family="nope")
    with pytest.raises(ConfigError, match=r"only the mixed task has families.*mixed.reverse"):
        make_task("mixed.nope")
    with pytest.raises(ConfigError, match="only the mixed task has families"):
        make_task("addition.reverse")
    with pytest.raises(ConfigError, match="neither family"):
        Mixed().family_of("12+34=")


def test_a_prompt_context_reads_the_prompts_text_and_checks_what_it_is_given():
    ctx = Mixed().family_context()
    assert ctx.labels == ("reverse", "sign") and context_reads(ctx) == "prompt"
    assert context_reads(None) == context_reads(pass_rate_bucket) == "pass_rate"
    assert ctx("revs:ab=") == "sign" and ctx("rev:abcde=") == "reverse"
    with pytest.raises(InputError, match="reads each prompt's text"):
        ctx(0.5)  # a pass rate where the text belongs: an adapter wired to the wrong field
    with pytest.raises(ConfigError, match="classify must be a function"):
        prompt_context("family", labels=("a",))
    ks = KnobSet("temperature", "softmax_gradient", [0.6, 1.5], 0, per="prompt", group_size=2,
                 reward="informativeness", context=ctx)
    assert set(ks.policies) == set(FAMILIES) and ks.context_reads == "prompt"
    values = ks.draw(rows=4, contexts=["rev:abcde=", "revs:ab="])["temperature"]
    metrics = ks.update(advantages=[1.0, -1.0, 0.0, 0.0], used={"temperature": values},
                        contexts=["rev:abcde=", "revs:ab="])
    assert ks.policies["reverse"].step == ks.policies["sign"].step == 1
    assert metrics["metahp/groups/sign"] == 0.5

    class ReadsLoss:
        labels = ("a",)
        reads = "loss"

        def __call__(self, x):
            return "a"

    with pytest.raises(ConfigError, match=r"context.reads='loss'.*'pass_rate', 'prompt'"):
        KnobSet("temperature", "softmax_gradient", [0.6, 1.5], 0, per="prompt", group_size=2,
                reward="informativeness", context=ReadsLoss())


def test_the_reference_trainer_gives_a_prompt_context_each_groups_prompt_and_each_family_its_policy():
    task = make_task("mixed", seed=0)
    tok = char_tokenizer(task.alphabet)
    trainer = GRPOTrainer(tiny_model(tok, hidden=32, layers=1, heads=2, seed=0), tok, task, prompts_per_step=4,
                          num_generations=4, max_completion_tokens=6, seed=0)
    with torch.no_grad():  # a random init is near-uniform: make the temperatures matter
        trainer.model.lm_head.weight.mul_(4.0)
    seen: list[str] = []

    def family(prompt):
        seen.append(prompt)
        return task.family_of(prompt)

    adapter = metahp.adapt(trainer, per="prompt", updater="softmax_gradient", reward="informativeness",
                           values=[0.6, 1.5], lr=5.0, context=prompt_context(family, labels=tuple(FAMILIES)))
    rollout = trainer.generate()
    # the draw read the batch's own prompts, one per group, and each group shares its family policy's value
    assert seen == [trainer.tokenizer.decode(ids, skip_special_tokens=True) for ids in rollout.prompt_ids[::4]]
    temps = rollout.knobs["temperature"]
    assert all(len(set(temps[g * 4:(g + 1) * 4])) == 1 for g in range(4))
    metrics = adapter.after_batch(rollout)
    share = sum(task.family_of(p) == "sign" for p in seen[:4]) / 4
    assert metrics.get("metahp/groups/sign", 0.0) == pytest.approx(share)
    assert sum(p.step for p in adapter.knobset.policies.values()) == (0 < share) + (share < 1)


def test_reverse_demonstrations_are_noisy_at_the_set_rate_and_sign_ones_keep_the_signature_rare():
    import numpy as np

    task = Mixed(noise=0.3)
    rng = np.random.default_rng(0)
    problems = task.sample_prompts(400, rng=1)
    reverse = [p for p in problems if task.family_of(p) == "reverse"]
    letters = [(a, b) for p in reverse for a, b in zip(task.warm_start_completion(p, rng), p.answer, strict=True)]
    wrong = np.mean([a != b for a, b in letters])
    assert abs(wrong - 0.3 * 15 / 16) < 0.04  # a replaced letter is a random one: 1 in 16 is right by chance
    signs = [task.warm_start_completion(p, rng) for p in problems if task.family_of(p) == "sign"]
    assert sum(s.endswith("s") and len(s) == 3 for s in signs) <= 3  # rare (0.005), as in rare_skill
    assert Mixed(noise=0.0).warm_start_completion(reverse[0], rng) == reverse[0].answer
    assert Mixed(noise=0.3).spec != Mixed(noise=0.0).spec  # a different warm start, a different cache entry
    with pytest.raises(ConfigError, match=r"noise=1.0 must be in \[0, 1\)"):
        Mixed(noise=1.0)
