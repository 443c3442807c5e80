"""verl 0.9 on a CPU: a platform, a process-group fix and a rollout server on transformers' ``generate``.

verl has no CPU platform and its rollout servers are vLLM, SGLang and TensorRT-LLM only. This module is loaded into
every verl process (driver and Ray workers) by ``VERL_USE_EXTERNAL_MODULES=cpu_platform VERL_PLATFORM=cpu``, with
this folder on ``PYTHONPATH`` (``harness.run_verl`` sets all three). Importing it

1. registers a ``cpu`` platform (gloo collectives, device calls as no-ops, fake "GPU" Ray resources that the run
   declares with ``+ray_kwargs.ray_init.num_gpus``);
2. replaces verl's process-group start-up, which hard-codes ``cpu:gloo,<device>:<backend>`` (``cpu:gloo,cpu:gloo``
   is refused by torch), with plain gloo, and drops the pinned memory of FSDP2's CPU offload (the reference
   model's), which needs an accelerator;
3. registers a rollout named ``hf`` (``actor_rollout_ref.rollout.name=hf``): one Ray actor per replica that samples
   with ``generate`` and takes the trainer's weights at every sync.

The server honours each request's own ``sampling_params`` (temperature, top_p, top_k) and returns the log-probs
of the sampled tokens under the distribution it sampled from (``log_softmax`` of generate's processed scores: the
logits divided by the temperature, top-k / top-p cut), so verl's ``training/rollout_probs_diff_*`` metrics show
whether the trainer scores at the temperature the rollout sampled at.

When the environment variable ``METAHP_VERL_RECORD`` names a file, every request appends one JSON line to it:
``temperature``, ``top_p``, ``top_k``, ``prompt_length``, and every key of the request's keyword arguments or
sampling params whose name starts with ``metahp``. The file is opened in append mode per write and flushed at
once, because several processes may write to it. ``METAHP_VERL_FORCE_TEMPERATURE`` makes the server sample at
that temperature instead of the request's: a broken rollout for the negative control of the gap metrics.
``METAHP_VERL_FAIL_REQUEST=N`` makes the server's N-th request (counted from 1 in each server process) raise, as a
rollout that fails; its record line says ``failed``.
"""

from __future__ import annotations

import contextlib
import json
import os
import types

import ray
import torch
import verl.utils.distributed as _verl_distributed
import verl.utils.fsdp_utils as _verl_fsdp_utils
from verl.plugin.platform import PlatformBase, PlatformRegistry
from verl.workers.rollout.base import BaseRollout

RECORD_ENV = "METAHP_VERL_RECORD"
# A deliberately broken rollout, for the test that shows the gap metrics catch a mismatch: sample at this
# temperature whatever the request says (the record keeps the request's value and adds sampled_temperature).
FORCE_TEMPERATURE_ENV = "METAHP_VERL_FORCE_TEMPERATURE"
# A rollout that fails: the server's N-th request raises (verl then marks that prompt's group as failed).
FAIL_REQUEST_ENV = "METAHP_VERL_FAIL_REQUEST"
ROLLOUT_NAME = "hf"
SERVER_NAME = "metahp_hf_server_{}"


def _nothing(*args, **kwargs):
    return None


def _zero(*args, **kwargs):
    return 0


# What verl calls on ``get_torch_device()`` (torch.cuda's role), answered for a CPU.
_device_module = types.SimpleNamespace(
    is_available=lambda: True, is_initialized=lambda: True, current_device=lambda: "cpu", device_count=lambda: 1,
    get_device_name=lambda *a, **k: "CPU", set_device=_nothing, synchronize=_nothing, empty_cache=_nothing,
    ipc_collect=_nothing, reset_peak_memory_stats=_nothing, set_per_process_memory_fraction=_nothing,
    memory_allocated=_zero, memory_reserved=_zero, max_memory_allocated=_zero, max_memory_reserved=_zero,
    mem_get_info=lambda *a, **k: (1 << 34, 1 << 34), manual_seed=torch.manual_seed, manual_seed_all=torch.manual_seed,
    get_rng_state=torch.get_rng_state, set_rng_state=torch.set_rng_state, Stream=None, current_stream=_nothing,
    stream=lambda *a, **k: contextlib.nullcontext(),
)


@PlatformRegistry.register(platform="cpu")
class PlatformCPU(PlatformBase):
    """A CPU as verl's accelerator: gloo collectives, no memory accounting, Ray's ``GPU`` resource as the slot."""

    device_name = property(lambda self: "cpu")
    vendor_name = property(lambda self: "cpu")
    device_module = property(lambda self: _device_module)

    def is_available(self):
        return True

    def is_platform_available(self, use_smi_check=False):
        return True

    def current_device(self):
        return "cpu"  # verl moves tensors with .to(get_device_id())

    def device_count(self):
        return 1

    def set_device(self, device_index):
        pass

    def synchronize(self, device_index=None):
        pass

    def manual_seed(self, seed):
        torch.manual_seed(seed)

    def manual_seed_all(self, seed):
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings):
        pass

    def empty_cache(self):
        pass

    def get_device_capability(self, device_index=0):
        return (None, None)

    def communication_backend_name(self):
        return "gloo"

    def visible_devices_envvar(self):
        return "CUDA_VISIBLE_DEVICES"

    @contextlib.contextmanager
    def nvtx_range(self, msg):
        yield

    def profiler_start(self):
        pass

    def profiler_stop(self):
        pass

    def ray_resource_name(self):
        return "GPU"  # fake GPUs, declared with +ray_kwargs.ray_init.num_gpus

    def ray_noset_envvars(self):
        return ["RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"]

    def is_ipc_supported(self):
        return False

    def cudart(self):
        return None


# verl builds the backend string f"cpu:gloo,{device}:{backend}"; on this platform that is "cpu:gloo,cpu:gloo",
# which torch refuses. Callers import these names after this module has run (verl/__init__ loads it first).
_initialize_ray = _verl_distributed.initialize_global_process_group_ray


def _initialize_global_process_group_ray(timeout_second=None, backend=None):
    return _initialize_ray(timeout_second=timeout_second, backend=backend or "gloo")


def _initialize_global_process_group(timeout_second=36000):
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    return int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


_verl_distributed.initialize_global_process_group_ray = _initialize_global_process_group_ray
_verl_distributed.initialize_global_process_group = _initialize_global_process_group


class UnpinnedCPUOffloadPolicy(_verl_fsdp_utils.CPUOffloadPolicy):
    """FSDP2's CPU offload without pinned memory: verl's FSDP2 engine builds every forward-only model (the
    reference) with ``CPUOffloadPolicy(pin_memory=True)``, and pinning needs an accelerator."""

    def __init__(self, pin_memory: bool = True):
        super().__init__(pin_memory=False)


# The FSDP engine imports the name from verl.utils.fsdp_utils after this module has run.
_verl_fsdp_utils.CPUOffloadPolicy = UnpinnedCPUOffloadPolicy


def record(entry: dict) -> None:
    """Append ``entry`` as one JSON line to the file named by METAHP_VERL_RECORD, if set (open, write, close)."""
    path = os.environ.get(RECORD_ENV)
    if not path:
        return
    with open(path, "a") as f:
        f.write(json.dumps(entry, default=str) + "\n")
        f.flush()


def request_record(prompt_ids, sampling_params: dict, kwargs: dict) -> dict:
    """What one generate request carried: its sampling settings, metahp's own keys, and its prompt length."""
    entry = {k: sampling_params.get(k) for k in ("temperature", "top_p", "top_k")}
    for source in (sampling_params, kwargs):
        entry.update({k: v for k, v in source.items() if k.startswith("metahp")})
    entry["prompt_length"] = len(prompt_ids)
    return entry


def generate_kwargs(sampling_params: dict, max_new_tokens: int) -> dict:
    """transformers ``generate`` settings for one request of verl's sampling params (vLLM's names and defaults).

    top_k -1 / None / 0 means no cut (``top_k=0`` disables generate's warper, where None would fall back to the
    generation config's default); temperature 0 means greedy.
    """
    temperature = float(sampling_params.get("temperature", 1.0) or 0.0)
    kwargs = {"max_new_tokens": max_new_tokens}
    if temperature <= 0:
        return {**kwargs, "do_sample": False}
    top_k = sampling_params.get("top_k", -1)
    top_p = sampling_params.get("top_p", 1.0)
    return {**kwargs, "do_sample": True, "temperature": temperature,
            "top_k": 0 if top_k in (None, -1) else int(top_k), "top_p": 1.0 if top_p is None else float(top_p)}


@ray.remote(num_cpus=0)
class HFServer:
    """A rollout replica's server: samples one request at a time with ``generate`` on the synced weights."""

    def __init__(self, model_path: str, response_length: int, seed: int = 0):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32,
                                                          attn_implementation="eager").eval()
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.response_length = response_length
        self.generator_seed = seed
        self.global_steps = None  # the trainer step of the weights served, as vLLM's server reports it
        torch.manual_seed(seed)

    def load_weights(self, state: dict, global_steps: int | None = None) -> int:
        """Take the trainer's weights; refuse names the model does not have (a silent no-op sync otherwise).
        ``global_steps`` is their version: each response reports it (the v1 trainer's staleness metrics read it)."""
        if global_steps is not None:
            self.global_steps = global_steps
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        tied = {"lm_head.weight"} if self.model.config.tie_word_embeddings else set()
        if unexpected or set(missing) - tied:
            raise RuntimeError(f"weight sync does not match the model: unexpected {unexpected}, missing {missing}")
        print(f"[cpu_platform] weights synced: {len(state)} tensors", flush=True)
        return len(state)

    async def generate(self, request_id=None, prompt_ids=None, sampling_params=None, image_data=None,
                       video_data=None, **kwargs):
        from verl.workers.rollout.replica import TokenOutput

        sampling_params = dict(sampling_params or {})
        entry = request_record(prompt_ids, sampling_params, kwargs)
        if os.environ.get(FORCE_TEMPERATURE_ENV):
            sampling_params["temperature"] = float(os.environ[FORCE_TEMPERATURE_ENV])
        self.requests_served = getattr(self, "requests_served", 0) + 1
        if self.requests_served == int(os.environ.get(FAIL_REQUEST_ENV) or 0):
            record({**entry, "failed": True})
            raise RuntimeError(f"cpu_platform: request {self.requests_served} fails ({FAIL_REQUEST_ENV})")
        record({**entry, "sampled_temperature": sampling_params.get("temperature")})
        max_new_tokens = int(sampling_params.get("max_tokens") or self.response_length)
        ids = torch.tensor([list(prompt_ids)])
        with torch.no_grad():
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), return_dict_in_generate=True,
                                      output_scores=True, pad_token_id=self.tokenizer.pad_token_id,
                                      eos_token_id=self.tokenizer.eos_token_id,
                                      **generate_kwargs(sampling_params, max_new_tokens))
        response = out.sequences[0, ids.shape[1]:].tolist()
        # scores are the processed logits (divided by the temperature, cut by top-k/top-p): the sampling law
        log_probs = [torch.log_softmax(s[0].float(), -1)[t].item() for s, t in zip(out.scores, response, strict=True)]
        return TokenOutput(token_ids=response, log_probs=log_probs, stop_reason="completed",
                           extra_fields={"global_steps": self.global_steps})

    # The replica's lifecycle calls; nothing to do for an in-process model.
    async def wake_up(self):
        pass

    async def sleep(self):
        pass

    async def abort_all_requests(self, reject_request=False):
        pass

    async def resume_generation(self):
        pass

    async def clear_kv_cache(self):
        pass

    async def release_kv_cache(self):
        pass

    async def resume_kv_cache(self):
        pass

    async def start_profile(self, **kwargs):
        pass

    async def stop_profile(self):
        pass


class HFServerAdapter(BaseRollout):
    """The rollout's side in the trainer worker (hybrid mode): sends the synced weights to its replica's server."""

    async def resume(self, tags):
        pass

    async def release(self):
        pass

    async def update_weights(self, weights, wire_format="named_tensors", **kwargs):
        state = {}
        for name, tensor in weights:
            if hasattr(tensor, "full_tensor"):  # a DTensor shard of FSDP2
                tensor = tensor.full_tensor()
            state[name] = tensor.detach().to("cpu", torch.float32).clone()
        replica = int(os.environ.get("RANK", 0)) // self.config.tensor_model_parallel_size
        await ray.get_actor(SERVER_NAME.format(replica)).load_weights.remote(state, kwargs.get("global_steps"))


def _hf_replica_class():
    from verl.workers.rollout.replica import RolloutReplica

    class HFReplica(RolloutReplica):
        def get_ray_class_with_init_args(self):
            raise NotImplementedError("the hf rollout runs in its own Ray actor (launch_servers)")

        async def launch_servers(self):
            path = self.model_config.get("local_path", None) or self.model_config.path
            server = HFServer.options(name=SERVER_NAME.format(self.replica_rank), max_concurrency=64).remote(
                path, self.config.response_length, seed=self.replica_rank)
            self.servers = [server]
            self._server_handle = server
            self._server_address = f"hf-server-{self.replica_rank}"

    return HFReplica


def _register_rollout():
    import verl.workers.rollout.base as rollout_base
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    rollout_base._ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = f"{__name__}.HFServerAdapter"
    RolloutReplicaRegistry.register(ROLLOUT_NAME, _hf_replica_class)


_register_rollout()
