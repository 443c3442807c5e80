"""Device neutrality of the knobs' scoring code, and the rule for positions whose logits are all -inf.

There is no GPU in CI, and the ``meta`` device cannot run the knobs' data-dependent indexing, so neutrality is
checked on the CPU by auditing what the scoring code calls: every tensor it creates must name the logits' device,
and nothing may be moved to the CPU except the single final transfer of ``Knob.sequence_logprobs``.
``METAHP_TEST_DEVICE=cuda`` runs the equivalence test on a GPU (tests/device_check.py is the fuller GPU check).
"""

import importlib.util
import json
import os
import re
import sys
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import pytest
import torch
from torch.overrides import TorchFunctionMode

from metahp import InputError
from metahp.knobs import MinP, ProductKnob, Temperature, TopK, TopP, base, truncation

KNOBS = {
    "temperature": lambda: Temperature(),
    "temperature+top_p": lambda: Temperature([0.7, 1.0, 1.3], truncation=("top_p", 0.9)),
    "temperature+min_p": lambda: Temperature([0.7, 1.3], truncation=("min_p", 0.1)),
    "top_p": lambda: TopP([0.3, 0.5, 0.9, 1.0], temperature=0.8),
    "top_p_eps": lambda: TopP([0.5, 0.9], temperature=1.2, epsilon=0.05),
    "top_k": lambda: TopK([1, 3, 10, 50, 500], temperature=1.3),
    "top_k_eps": lambda: TopK([2, 20], epsilon=0.1),
    "min_p": lambda: MinP([0.0, 0.05, 0.2, 0.5], temperature=0.7),
    "min_p_eps": lambda: MinP([0.1, 0.3], epsilon=0.01),
    "product": lambda: ProductKnob(Temperature([0.7, 1.2]), TopP([0.8, 1.0])),
    "product_eps": lambda: ProductKnob(TopK([5, 20], epsilon=0.05), Temperature([0.9, 1.1])),
}

FACTORIES = {torch.tensor, torch.as_tensor, torch.zeros, torch.ones, torch.empty, torch.full, torch.arange,
             torch.linspace, torch.logspace, torch.eye, torch.rand, torch.randn, torch.randint, torch.randperm,
             torch.empty_strided, torch.scalar_tensor}
# Reads of device values by the host: each is a device -> host synchronisation on an accelerator.
# (Data-dependent shapes, from nonzero, unique or a boolean index, are syncs too; so is torch.tensor(data,
# device=cuda): its copy from pageable host memory waits for the stream.)
HOST_READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__, torch.Tensor.__int__,
              torch.Tensor.__float__, torch.Tensor.__index__, torch.nonzero, torch.Tensor.nonzero, torch.unique,
              torch.Tensor.unique, torch.masked_select, torch.Tensor.masked_select}
KNOB_DIR = str(Path(base.__file__).parent)


def _caller() -> str:
    """'file.py:function' of the innermost metahp knob frame that made the current call."""
    frame = sys._getframe(2)
    while frame is not None and not frame.f_code.co_filename.startswith(KNOB_DIR):
        frame = frame.f_back
    return "?" if frame is None else f"{Path(frame.f_code.co_filename).name}:{frame.f_code.co_name}"


class DeviceAudit(TorchFunctionMode):
    """Records tensor factories called without device=, and every move to the CPU, made by the knobs' code."""

    def __init__(self):
        super().__init__()
        self.flagged: list[tuple[str, str]] = []
        self.host_reads: list[tuple[str, str]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        if func in FACTORIES and "device" not in kwargs:
            if not (func is torch.as_tensor and isinstance(args[0], torch.Tensor)):  # as_tensor(t) keeps t's device
                self.flagged.append((name, _caller()))
        elif func is torch.Tensor.cpu or (func is torch.Tensor.to and _to_cpu(args[1:], kwargs)):
            self.flagged.append((name, _caller()))
        elif func in HOST_READS or (func in (torch.Tensor.__getitem__, torch.Tensor.__setitem__)
                                    and _boolean_index(args[1])) or func is torch.tensor:
            self.host_reads.append((name, _caller()))
        return func(*args, **kwargs)


def _boolean_index(index) -> bool:
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (
        index if isinstance(index, tuple) else (index,)))


def _to_cpu(args, kwargs) -> bool:
    target = kwargs.get("device", args[0] if args else None)
    return isinstance(target, str | torch.device) and torch.device(target).type == "cpu"


def batch(seed=0, b=5, length=7, vocab=64, ties=False):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, length, vocab, generator=gen) * 3
    if ties:
        logits = logits.round()
    logits[0, :3, :20] = float("-inf")  # banned tokens
    tokens = torch.randint(20, vocab, (b, length), generator=gen)
    mask = torch.rand(b, length, generator=gen) > 0.25
    mask[:, 0] = True
    return logits, tokens, mask


def forced_growth():
    """Patches that make the truncation knobs grow their slices and count tie groups over whole rows."""
    top_p = importlib.import_module("metahp.knobs.top_p")
    every_row_one = lambda probs, cut: torch.ones(len(probs), device=probs.device)  # noqa: E731
    return [mock.patch.object(top_p, "FIRST_SLICE", 1), mock.patch.object(truncation, "_GROWTH", 2),
            mock.patch.object(top_p, "nucleus_slice_sizes", every_row_one),
            mock.patch.object(base, "CPU_BLOCK_ELEMENTS", 64 * 6)]  # several blocks per call


def test_the_audit_sees_factories_and_transfers():
    with DeviceAudit() as audit:
        torch.zeros(2, device="cpu")
        torch.as_tensor(torch.ones(1, device="cpu"))
        torch.ones(2, device="cpu").to(torch.float64)
    assert audit.flagged == []
    with DeviceAudit() as audit:
        x = torch.tensor([1.0])
        torch.arange(3)
        x.cpu()
        x.to("cpu")
    assert [name for name, _ in audit.flagged] == ["tensor", "arange", "cpu", "to"]


@pytest.mark.parametrize("name", list(KNOBS))
@pytest.mark.parametrize("growth", [False, True], ids=["sized", "grown"])
def test_scoring_creates_tensors_on_the_logits_device_and_moves_nothing_to_the_cpu(name, growth):
    knob = KNOBS[name]()
    logits, tokens, mask = batch(seed=1, ties=growth)
    with ExitStack() as stack:
        for patch in forced_growth() if growth else []:
            stack.enter_context(patch)
        with DeviceAudit() as audit:
            knob.token_logprobs(logits[mask], tokens[mask])
        assert audit.flagged == [], f"{knob}.token_logprobs: {audit.flagged}"
        with DeviceAudit() as audit:
            out = knob.sequence_logprobs(logits, tokens, mask)
    # The one allowed transfer: the [B, K] result of sequence_logprobs, once, at its end.
    assert audit.flagged == [("cpu", "base.py:sequence_logprobs")], f"{knob}.sequence_logprobs: {audit.flagged}"
    assert out.device.type == "cpu" and out.dtype == torch.float32 and out.shape == (5, len(knob))


@pytest.mark.parametrize("name", ["temperature", "top_p", "top_k", "min_p"])
def test_host_reads_do_not_grow_with_the_number_of_candidates(name):
    # A read of a device value by the host (.item(), .tolist(), int(), bool(), a data-dependent shape) is a sync
    # on an accelerator: a few per block are allowed, one per candidate is not. (top_p's tie branch runs only when
    # a taken token sits on a cut boundary, which more candidates make likelier: a difference of 2 is allowed.)
    small, large = {"temperature": ([1.0], [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]),
                    "top_p": ([0.5, 1.0], [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0]),
                    "top_k": ([1, 50], [1, 2, 3, 5, 10, 20, 50]),
                    "min_p": ([0.0, 0.05], [0.0, 0.05, 0.1, 0.2, 0.3, 0.5])}[name]
    cls = {"temperature": Temperature, "top_p": TopP, "top_k": TopK, "min_p": MinP}[name]
    logits, tokens, mask = batch(seed=2)
    counts = []
    for values in (small, large):
        with DeviceAudit() as audit:
            cls(values).sequence_logprobs(logits, tokens, mask)
        counts.append(len(audit.host_reads))
    assert counts[1] <= counts[0] + 2, f"{name}: {counts[0]} host reads for {len(small)} candidates, {counts[1]} for " \
                                   f"{len(large)}: {audit.host_reads}"


@pytest.mark.parametrize("name", list(KNOBS))
def test_results_on_the_test_device_equal_the_cpu_results(name):
    device = torch.device(os.environ.get("METAHP_TEST_DEVICE", "cpu"))  # an unavailable device fails, never skips
    knob = KNOBS[name]()
    logits, tokens, mask = batch(seed=3, b=6, length=9, vocab=300)
    want_tokens = knob.token_logprobs(logits[mask], tokens[mask])
    want = knob.sequence_logprobs(logits, tokens, mask)
    logits, tokens, mask = logits.to(device), tokens.to(device), mask.to(device)
    got_tokens = knob.token_logprobs(logits[mask], tokens[mask])
    got = knob.sequence_logprobs(logits, tokens, mask)
    assert got_tokens.device == logits.device and got_tokens.dtype == torch.float32
    assert got.device.type == "cpu" and got.dtype == torch.float32
    for a, b in ((got_tokens.cpu(), want_tokens), (got, want)):
        assert torch.equal(torch.isfinite(a), torch.isfinite(b)), f"{knob}: supports differ on {device}"
        assert torch.allclose(a, b, atol=1e-5, rtol=0), f"{knob}: max diff {(a - b).nan_to_num().abs().max()}"


@pytest.mark.parametrize("name", list(KNOBS))
def test_a_position_with_all_logits_minus_inf_is_an_input_error_naming_it(name):
    knob = KNOBS[name]()
    logits, tokens, mask = batch(seed=4)
    mask[2, 5] = mask[3, 1] = mask[4, 6] = True
    logits[2, 5] = logits[3, 1] = logits[4, 6] = float("-inf")
    logits[1, 6] = float("-inf")  # padding: ignored
    mask[1, 6] = False
    label = re.escape(knob.name)
    with pytest.raises(InputError, match=rf"^{label}\.sequence_logprobs: .*\(row 2, token 5\) are all -inf "
                                         r"\(3 such positions\): no token could have been sampled"):
        knob.sequence_logprobs(logits, tokens, mask)
    rows = logits[mask]
    first = int(mask.flatten().cumsum(0)[2 * 7 + 5]) - 1  # index of (2, 5) among the masked positions
    with pytest.raises(InputError, match=rf"^{label}\.token_logprobs: logits of row {first} are all -inf "
                                         r"\(3 such rows\)"):
        knob.token_logprobs(rows, tokens[mask])
    with mock.patch.object(base, "CPU_BLOCK_ELEMENTS", 64 * 4):  # found across blocks too, by its global index
        with pytest.raises(InputError, match=rf"row {first} are all -inf"):
            knob.token_logprobs(rows, tokens[mask])


@pytest.mark.parametrize("name", list(KNOBS))
def test_banned_tokens_are_as_if_removed_from_the_vocabulary(name):
    knob = KNOBS[name]()
    logits, _, mask = batch(seed=5, vocab=50)
    tokens = logits[..., 20:].argmax(-1) + 20  # in every candidate's support: finite results to compare
    banned = logits.clone()
    banned[..., :20] = float("-inf")  # every position, and not only row 0
    got = knob.sequence_logprobs(banned, tokens, mask)
    want = knob.sequence_logprobs(logits[..., 20:], tokens - 20, mask)
    assert torch.equal(torch.isfinite(got), torch.isfinite(want))
    finite = torch.isfinite(want)
    assert finite.any() and torch.allclose(got[finite], want[finite], atol=1e-5)


def test_nan_is_still_reported_as_nan_before_all_minus_inf():
    logits, tokens, mask = batch(seed=6)
    logits[1, 0] = float("-inf")
    logits[1, 0, 3] = float("nan")
    with pytest.raises(InputError, match="NaN or \\+inf"):
        TopP().sequence_logprobs(logits, tokens, mask)


def test_device_check_script_smoke(tmp_path):
    path = Path(__file__).with_name("device_check.py")
    spec = importlib.util.spec_from_file_location("device_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--out", str(tmp_path), "--device", "cpu", "--vocab", "300", "--batch", "2", "--length",
                        "8", "--repeats", "1"]) == 0
    report = json.loads((tmp_path / "device_check.json").read_text())
    assert report["ok"] and set(report["knobs"]) >= {"temperature", "top_p", "top_k", "min_p", "product"}
    for result in report["knobs"].values():
        for dtype in ("float32", "bfloat16"):
            assert result[dtype]["max_abs_diff"] <= 1e-5 and result[dtype]["support_rows_differ"] == 0


def test_reference_trainer_and_its_adapter_run_on_the_test_device():
    # The reference trainer keeps rollouts where the model is; the adapter scores them there (METAHP_TEST_DEVICE).
    import metahp
    from metahp.lab.grpo import GRPOTrainer
    from metahp.lab.models import char_tokenizer, tiny_model
    from metahp.lab.tasks import make_task

    device = torch.device(os.environ.get("METAHP_TEST_DEVICE", "cpu"))
    task = make_task("addition", difficulty=1)
    tok = char_tokenizer(task.alphabet)
    model = tiny_model(tok, hidden=32, layers=1, heads=2, seed=0).to(device)
    trainer = GRPOTrainer(model, tok, task, prompts_per_step=3, num_generations=4, max_completion_tokens=4, seed=0)
    adapter = metahp.adapt(trainer, knob=("temperature", "top_p"), updater="tampo")
    rollout = trainer.generate()
    assert rollout.logits.device.type == device.type and rollout.advantages.device.type == device.type
    trainer.train(3, progress=False)
    assert adapter.policies["temperature"].step == 3
    assert all(torch.isfinite(torch.tensor([m["loss"], m["entropy"]])).all() for m in trainer.history)
    assert set(trainer.evaluate(task.sample_prompts(4, rng=1, split="eval"), k=2)) >= {"greedy_accuracy", "pass@2"}
