"""The exact-answer rate by temperature (benchmarks/discovery_rate.py): its teacher-forced probability is the
probability of the sampler's own draw, its mixture arithmetic is right, and its smoke mode runs end to end."""

import json

import pytest
import torch
from benchmark_module import load_benchmark


@pytest.fixture(scope="module")
def discovery():
    return load_benchmark("discovery_rate")


def _sampled_answer(model, tokenizer, prompt_ids, temperature):
    """One completion that generate samples at ``temperature`` (plain characters, then <eos>), with the probability
    the sampler gave it, read from generate's own raw logits."""
    special = set(tokenizer.all_special_ids)
    for seed in range(20):
        torch.manual_seed(seed)
        out = model.generate(torch.tensor([prompt_ids] * 64), do_sample=True, temperature=temperature, top_k=0,
                             top_p=1.0, max_new_tokens=6, output_logits=True, return_dict_in_generate=True,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        completions = out.sequences[:, len(prompt_ids):]
        logits = torch.stack(out.logits, dim=1).double()
        for row, tokens in enumerate(completions.tolist()):
            if tokenizer.eos_token_id not in tokens:
                continue
            end = tokens.index(tokenizer.eos_token_id)
            if end == 0 or special & set(tokens[:end]):
                continue
            taken = torch.tensor(tokens[:end + 1])
            logp = torch.log_softmax(logits[row, :end + 1] / temperature, dim=-1).gather(1, taken[:, None]).sum()
            return tokenizer.decode(tokens[:end]), float(logp.exp())
    raise AssertionError("no clean completion sampled")


def test_the_rate_is_the_probability_of_the_samplers_own_draw(discovery):
    from metahp.lab.models import char_tokenizer, tiny_model
    from metahp.lab.tasks.base import Problem

    tokenizer = char_tokenizer("abcdefg=:")
    model = tiny_model(tokenizer, hidden=32, layers=1, heads=2, seed=0).eval()
    prompt = "ab="
    for temperature in (0.7, 1.5):
        answer, expected = _sampled_answer(model, tokenizer, tokenizer(prompt).input_ids, temperature)
        got = discovery.answer_probability(model, tokenizer, [Problem(prompt=prompt, answer=answer)], [temperature])
        assert got.shape == (1, 1)
        assert got[0, 0] == pytest.approx(expected, rel=1e-5)
    # one answer's probability depends on the temperature it is sampled at
    p = discovery.answer_probability(model, tokenizer, [Problem(prompt=prompt, answer="ba")], [0.5, 1.0])
    assert p[0, 0] != pytest.approx(p[0, 1])


def test_the_mixture_arithmetic(discovery):
    rates = {0.6: 0.0, 0.8: 0.0, 1.0: 0.1, 1.2: 0.2, 1.5: 0.4, 2.0: 0.8, 3.0: 0.2}
    m = discovery.mixture_rates(rates)
    assert m["uniform_vs_reference"] == pytest.approx((0.1 + 0.2 + 0.4) / 5 / 0.4)
    assert m["share_needed_at"] == pytest.approx({"1.5": 1.0, "2": 0.5, "3": 2.0})


def test_smoke_mode_writes_a_report(discovery, tmp_path, monkeypatch):
    monkeypatch.setenv("METAHP_CACHE", str(tmp_path / "cache"))
    result = discovery.main(["--smoke", "--output", str(tmp_path / "out")])
    assert list(result["per_seed"]) == ["0"] and set(result["mean"]) == {"rev", "revs"}
    rates = result["per_seed"]["0"]["revs"]["rate"]
    assert all(0.0 <= v <= 1.0 for v in rates.values())
    saved = json.loads((tmp_path / "out" / "discovery_rate.json").read_text())
    assert saved["rare_instruction"] == "revs"
    assert "share needed at 2" in (tmp_path / "out" / "report.md").read_text()
    assert (tmp_path / "out" / "discovery_rate.png").stat().st_size > 0


def test_no_prompts_is_refused_with_a_message(discovery, capsys):
    with pytest.raises(SystemExit):
        discovery.main(["--prompts", "0"])
    assert "--prompts must be at least 1" in capsys.readouterr().err
