"""The verl adapter's logic that runs without verl: its refusals of verl settings, the launcher's reading of
``+metahp.`` overrides, each row's advantage from verl's token-level ones, the version rule, and that importing it
imports no verl. verl itself runs in `make verl-test` (tests_verl/), outside this suite."""

import subprocess
import sys

import pytest
import torch
from metahp.integrations import verl, verl_0_9, verl_v1

from metahp import ConfigError, InputError


def config(**changes):
    """A verl config as nested dicts, with the settings check_config reads (a GRPO run on vLLM)."""
    base = {"trainer": {"use_v1": False}, "algorithm": {"adv_estimator": "grpo"},
            "actor_rollout_ref": {"rollout": {"name": "vllm", "n": 4}, "model": {"use_fused_kernels": False}}}
    for dotted, value in changes.items():
        node = base
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return base


def test_a_grpo_run_on_vllm_is_accepted_per_batch_and_per_completion():
    verl.check_config(config(), "batch")
    verl.check_config(config(), "completion")
    verl.check_config(config(**{"actor_rollout_ref.model.use_fused_kernels": True}), "batch")  # one value: fine


@pytest.mark.parametrize("changes, per, words", [
    ({"trainer.use_v1": True}, "batch", "trainer.use_v1=True: attach metahp to the trainer that config runs"),
    ({"algorithm.adv_estimator": "remax"}, "batch", "greedy baseline"),
    ({"actor_rollout_ref.rollout.name": "trtllm"}, "batch", "each request's temperature"),
    ({"algorithm.adv_estimator": "gae"}, "completion", "group estimator"),
    ({"actor_rollout_ref.rollout.n": 1}, "completion", "at least 2"),
    ({"actor_rollout_ref.model.use_fused_kernels": True}, "completion", "use_fused_kernels=False"),
])
def test_settings_that_cannot_honour_the_drawn_values_are_refused_saying_what_works(changes, per, words):
    with pytest.raises(ConfigError, match=words):
        verl.check_config(config(**changes), per)


def test_each_rows_advantage_is_the_mean_over_its_response_tokens():
    advantages = torch.tensor([[0.5, 0.5, 0.0], [-1.0, 0.0, 0.0], [2.0, 2.0, 2.0], [3.0, 3.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 0]])
    torch.testing.assert_close(verl.row_advantages(advantages, mask), torch.tensor([0.5, -1.0, 2.0, 0.0]))


def test_the_launcher_takes_metahp_fields_and_leaves_verls_overrides_alone():
    argv = ["algorithm.adv_estimator=grpo", "+metahp.per=completion", "+metahp.values=[0.6,1.0,1.4]",
            "+metahp.updater=softmax_gradient", "+metahp.lr=0.25", "trainer.use_v1=False"]
    fields, rest = verl.launch_fields(argv)
    assert fields == {"per": "completion", "values": [0.6, 1.0, 1.4], "updater": "softmax_gradient", "lr": 0.25}
    assert rest == ["algorithm.adv_estimator=grpo", "trainer.use_v1=False"]
    assert verl.config_fields({"metahp": {"per": "completion"}}) == {"per": "completion"}
    assert verl.config_fields({}) == {}
    with pytest.raises(ConfigError, match=r"\+metahp.<field>=<value>"):
        verl.launch_fields(["+metahp.per"])


def test_the_v1_trainer_is_accepted_in_sync_mode_per_batch_and_per_completion():
    v1 = config(**{"trainer.use_v1": True})
    verl.check_config(v1, "batch", v1=True)
    verl_v1.check_v1_config(v1)
    verl.check_config(v1, "completion", v1=True)
    verl_v1.check_v1_config({**v1, "trainer": {"use_v1": True, "v1": {"trainer_mode": "sync"}}})
    verl_v1.check_v1_config({**v1, "algorithm": {"filter_groups": {"enable": False}}})  # off: fine


@pytest.mark.parametrize("changes, words", [
    ({"trainer": {"v1": {"trainer_mode": "colocate_async"}}}, "trainer_mode=sync"),
    ({"trainer": {"v1": {"trainer_mode": "separate_async"}}}, "steps ahead"),
    ({"trainer": {"v1": {"trainer_mode": "sync", "sync": {"parameter_sync_step": 2}}}}, "leave it at 1"),
    # settings that submit more prompts within a step (the replay buffer's refill): one draw per step cannot cover them
    ({"algorithm": {"filter_groups": {"enable": True}}}, r"filter_groups.enable=True .* set it to False"),
    ({"trainer": {"v1": {"sampler": {"sync_refill_failed_groups": True}}}}, "sync_refill_failed_groups=True"),
    ({"trainer": {"v1": {"sampler": {"custom_sampler": {"path": "my.py", "name": "Mine"}}}}}, "sampler of your own"),
])
def test_v1_settings_one_drawn_value_cannot_honour_are_refused_saying_what_works(changes, words):
    with pytest.raises(ConfigError, match=words):
        verl_v1.check_v1_config({"trainer": {"use_v1": True}, **changes})
    verl_v1.check_v1_config({"trainer": {"use_v1": True, "v1": {"sampler": {"custom_sampler": {"path": None}}}}})


def test_v1_rows_find_their_place_in_the_drawn_order_and_padding_rows_find_none():
    prompts = {"a": 0, "b": 1}  # the step's prompts in drawn order, groups of 2
    grids = [[0.8, 1.0], [0.6, 1.4], [0.6, 1.4], [0.8, 1.0], [0.8, 1.0]]  # each row: its prompt's values
    keys = ["b_1_0", "a_0_0", "a_1_0", "b_0_0", "pad3f2a_0_0"]  # verl's balance reorders; padding copies row 0
    tags = [{}, {}, {}, {}, {"is_padding": True}]
    values, places = verl.row_places(keys, tags, grids, prompts, 2)
    assert places == [3, 0, 1, 2, None]
    assert values == [1.0, 0.6, 1.4, 0.8, 0.8]  # each row at its session's value; padding at a value it carries
    with pytest.raises(RuntimeError, match="not one of the 2 completions of this step's prompts"):
        verl.row_places(["c_0_0"], [{}], [[0.6, 1.4]], prompts, 2)  # another step's prompt
    with pytest.raises(RuntimeError, match="not one of the 2 completions"):
        verl.row_places(["a_2_0"], [{}], [[0.6, 1.4, 1.0]], prompts, 2)  # a session past the group
    with pytest.raises(RuntimeError, match="not one of the 2 completions"):
        verl.row_places(["pad3f2a_0_0"], [{}], [[0.6, 1.4]], prompts, 2)  # a padding key without verl's tag


def test_supports_tells_the_v1_trainer_from_the_legacy_one_by_class_and_module():
    class PPOTrainer:  # a class of that name outside verl.trainer.ppo.v1 is not verl's
        pass

    assert not verl_v1.supports(PPOTrainer())
    PPOTrainer.__module__ = "verl.trainer.ppo.v1.trainer_base"
    assert verl_v1.supports(PPOTrainer()) and not verl.supports(PPOTrainer())


def test_the_launcher_refuses_bad_fields_and_v1_settings_before_starting_anything():
    with pytest.raises(ConfigError, match="per='group'"):
        verl.main(["trainer.use_v1=False", "+metahp.per=group"])
    # verl's default runs the v1 trainer: the checks both trainers share apply to it too
    with pytest.raises(ConfigError, match="use_fused_kernels=False"):
        verl.main(["algorithm.adv_estimator=grpo", "actor_rollout_ref.rollout.name=vllm", "+metahp.per=completion",
                   "actor_rollout_ref.rollout.n=4", "actor_rollout_ref.model.use_fused_kernels=True",
                   "+metahp.updater=softmax_gradient", "+metahp.reward=informativeness"])
    with pytest.raises(ConfigError, match="trainer_mode=sync"):
        verl.main(["algorithm.adv_estimator=grpo", "trainer.v1.trainer_mode=colocate_async"])
    with pytest.raises(ConfigError, match="use_fused_kernels=False"):
        verl.main(["trainer.use_v1=False", "algorithm.adv_estimator=grpo", "actor_rollout_ref.rollout.name=vllm",
                   "actor_rollout_ref.rollout.n=4", "actor_rollout_ref.model.use_fused_kernels=True",
                   "+metahp.per=completion", "+metahp.updater=softmax_gradient", "+metahp.reward=informativeness"])


LAUNCH = ["trainer.use_v1=False", "algorithm.adv_estimator=grpo", "actor_rollout_ref.rollout.name=vllm",
          "actor_rollout_ref.rollout.n=4", "data.train_batch_size=8"]


@pytest.mark.parametrize("fields, words", [
    (["+metahp.updater=tampo"], "stay in verl's rollout servers"),  # likelihoods: refused, naming what works
    (["+metahp.per=completion", "+metahp.updater=softmax_gradient", "+metahp.reward=informativeness",
      "+metahp.values=[0.6,0.8,1.0,1.2,1.5]"], "at most 4 candidates"),  # a group of 4 cannot hold five values
    (["+metahp.knob=top_p"], "temperature"),  # verl's log-prob passes apply no truncation
    (["+metahp.per=prompt"], "per='prompt'"),
])
def test_the_launcher_runs_the_knob_layers_checks_before_ray_starts(fields, words):
    with pytest.raises(ConfigError, match=words):
        verl.main([*LAUNCH, *fields])


@pytest.mark.parametrize("found, ok", [("0.9.1", True), ("0.9.0", True), ("0.8.5", False), ("0.10.0", False),
                                       ("unknown", False)])
def test_only_verl_0_9_is_supported(found, ok):
    if ok:
        verl_0_9.check_version(found)
    else:
        with pytest.raises(ConfigError, match="supports verl 0.9.x"):
            verl_0_9.check_version(found)


def test_supports_recognises_verls_trainer_by_its_class_without_importing_verl():
    class RayPPOTrainer:  # a class of that name outside verl is not verl's
        pass

    assert not verl.supports(RayPPOTrainer())
    assert not verl.supports(object())


def test_importing_the_verl_adapter_imports_no_verl():
    code = ("import sys, metahp.integrations.verl, metahp.integrations.verl_0_9, metahp.integrations.verl_v1; "
            "print(any(m == 'verl' or m.startswith('verl.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_agent_loop_takes_the_rows_value_or_the_one_of_its_completions_session():
    row_value = verl.row_value
    assert row_value(0.7) == 0.7  # the legacy loop: one value per row
    assert row_value(torch.tensor(1.4, dtype=torch.float64)) == 1.4
    # v1, per completion: the prompt's n values
    assert row_value(torch.tensor([0.6, 1.0, 1.4, 1.0], dtype=torch.float64), 2) == 1.4
    with pytest.raises(RuntimeError, match="session_id"):
        row_value(torch.tensor([0.6, 1.0]), None)


@pytest.mark.parametrize("per, columns, words", [
    ("completion", {"__rollout_n__": [4, 4]}, r"__rollout_n__ .* drop that column, or use per='batch'"),
    ("batch", {"__do_sample__": [True, False]}, r"1 of the step's prompts ask for greedy decoding"),
])
def test_v1_prompts_with_their_own_number_of_completions_or_greedy_decoding_are_refused(per, columns, words):
    from types import SimpleNamespace

    adapter = SimpleNamespace(per=per, group_size=4)  # the two attributes the check reads
    with pytest.raises(InputError, match=words):
        verl_v1.VerlV1Adapter._check_prompt_columns(adapter, columns)
    # what verl's own training path sends: neither column, or sampling asked for on every prompt
    verl_v1.VerlV1Adapter._check_prompt_columns(adapter, {"uid": ["a", "b"]})
    verl_v1.VerlV1Adapter._check_prompt_columns(SimpleNamespace(per="batch", group_size=4), {"__rollout_n__": [2, 8]})
    verl_v1.VerlV1Adapter._check_prompt_columns(adapter, {"__do_sample__": [True, True]})


def test_v1_a_greedy_flag_given_once_for_all_prompts_is_read_as_one_value():
    from types import SimpleNamespace

    class NonTensorData:  # tensordict's one-value-for-all-rows column: the value is its .data
        def __init__(self, data):
            self.data = data

    adapter = SimpleNamespace(per="batch", group_size=4)
    with pytest.raises(InputError, match="1 of the step's prompts ask for greedy decoding"):
        verl_v1.VerlV1Adapter._check_prompt_columns(adapter, {"__do_sample__": NonTensorData(False)})
    verl_v1.VerlV1Adapter._check_prompt_columns(adapter, {"__do_sample__": NonTensorData(True)})
