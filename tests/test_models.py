"""Models without a hub: char tokenizer round trips, tiny model save/load, clear errors for bad paths."""

import json

import pytest
import torch

from metahp.errors import ConfigError
from metahp.lab.models import char_tokenizer, load, load_model, save, tiny_model
from metahp.lab.tasks import ALL_TASKS_ALPHABET, TASKS, make_task


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer(ALL_TASKS_ALPHABET + " ")


def _task_strings():
    for name in TASKS:
        if not TASKS[name].char_level:  # written for a pretrained tokenizer (word_arithmetic)
            continue
        task = make_task(name)
        for p in task.sample_prompts(20, 0) + task.sample_prompts(20, 0, split="eval"):
            yield p.prompt
            yield task.demonstration(p)


def test_tokenizer_round_trips_every_task_string(tok):
    for s in [*_task_strings(), "a b", "  12 + 3 = ", " "]:
        ids = tok(s).input_ids
        assert ids[0] == tok.bos_token_id and len(ids) == len(s) + 1  # one token per character
        assert tok.decode(ids, skip_special_tokens=True) == s
        assert tok(s, add_special_tokens=False).input_ids == ids[1:]


def test_tokenizer_special_tokens_and_left_padding(tok):
    assert tok.padding_side == "left"
    assert len({tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id}) == 4
    batch = tok(["1+1=", "12+345="], padding=True)
    assert batch.input_ids[0][:3] == [tok.pad_token_id] * 3 and batch.attention_mask[0][:3] == [0, 0, 0]
    assert tok("Z").input_ids[1] == tok.unk_token_id  # outside the alphabet
    ids = tok("12", add_special_tokens=False).input_ids + [tok.eos_token_id, tok.pad_token_id]
    assert tok.decode(ids, skip_special_tokens=True) == "12"
    with pytest.raises(ConfigError, match="alphabet"):
        char_tokenizer("")


def test_tokenizer_survives_save_load_with_spaces(tok, tmp_path):
    model = tiny_model(tok, hidden=32, layers=1, heads=2, seed=0)
    save(model, tok, tmp_path)
    _, tok2 = load(tmp_path)
    assert tok2.padding_side == "left"
    for s in [*_task_strings(), "a b", " a  b "]:
        assert tok2(s).input_ids == tok(s).input_ids
        assert tok2.decode(tok2(s).input_ids, skip_special_tokens=True) == s
    assert (tok2.pad_token_id, tok2.eos_token_id) == (tok.pad_token_id, tok.eos_token_id)


def test_tiny_model_save_load_identical_logits(tok, tmp_path):
    model = tiny_model(tok, hidden=32, layers=2, heads=2, seed=3)
    assert type(model).__name__ == "Qwen2ForCausalLM" and not model.training
    batch = tok(["12+345=", "rev:abc="], return_tensors="pt", padding=True)
    path = save(model, tok, tmp_path / "m")
    loaded, _ = load(str(path))
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, loaded(**batch).logits)
    assert loaded.generation_config.pad_token_id == tok.pad_token_id


def test_tiny_model_seeded_and_left_padding_harmless(tok):
    a, b = tiny_model(tok, hidden=32, layers=1, heads=2, seed=1), tiny_model(tok, hidden=32, layers=1, heads=2, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    c = tiny_model(tok, hidden=32, layers=1, heads=2, seed=2)
    assert not torch.equal(a.model.embed_tokens.weight, c.model.embed_tokens.weight)
    # rotary positions: a left-padded prompt scores its last token like the same prompt alone
    alone = tok(["7+8="], return_tensors="pt")
    padded = tok(["7+8=", "123+456="], return_tensors="pt", padding=True)
    with torch.no_grad():
        x = a(**alone).logits[0, -1]
        y = a(**padded).logits[0, -1]
    torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-4)
    with pytest.raises(ConfigError, match="divisible"):
        tiny_model(tok, hidden=30, heads=4)


def test_load_model_tiny_and_greedy_generation():
    model, tok = load_model("tiny")
    enc = tok(["12+3="], return_tensors="pt")
    out = model.generate(**enc, do_sample=False, max_new_tokens=3, pad_token_id=tok.pad_token_id)
    assert out.shape == (1, enc.input_ids.shape[1] + 3) or out[0, -1] == tok.eos_token_id


def test_bad_model_paths_raise_clear_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_model(tmp_path / "nope")
    with pytest.raises(ConfigError, match="does not exist.*tiny"):
        load_model("not-a-model-name")
    with pytest.raises(ConfigError, match="no config.json"):
        load_model(tmp_path)
    (tmp_path / "file.bin").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        load_model(tmp_path / "file.bin")
    with pytest.raises(ConfigError, match="empty model name"):
        load_model("")
    # a config and tokenizer but no weights
    tok = char_tokenizer("ab")
    model = tiny_model(tok, hidden=32, layers=1, heads=2)
    broken = tmp_path / "broken"
    save(model, tok, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match="could not load"):
        load_model(broken)
    # a corrupt config
    save(model, tok, tmp_path / "corrupt")
    (tmp_path / "corrupt" / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="could not load"):
        load_model(tmp_path / "corrupt")
    # no tokenizer
    save(model, tok, tmp_path / "notok")
    (tmp_path / "notok" / "tokenizer.json").unlink()
    with pytest.raises(ConfigError, match="no tokenizer.json"):
        load_model(tmp_path / "notok")
    # a config of an unknown architecture
    save(model, tok, tmp_path / "arch")
    cfg = json.loads((tmp_path / "arch" / "config.json").read_text())
    (tmp_path / "arch" / "config.json").write_text(json.dumps({**cfg, "model_type": "no-such-arch"}))
    with pytest.raises(ConfigError, match="could not load"):
        load_model(tmp_path / "arch")


@pytest.mark.slow
def test_smollm2_loads_as_a_plain_model_from_the_installed_package():
    model, tok = load_model("smollm2")  # the one ~20 s load of this file
    assert getattr(model.config, "quantization_config", None) is None
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert tok.padding_side == "left" and tok.pad_token_id is not None
    enc = tok(["The capital of France is", "1+1="], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**enc, do_sample=False, max_new_tokens=4, pad_token_id=tok.pad_token_id)
    text = tok.decode(out[0, enc.input_ids.shape[1]:], skip_special_tokens=True)
    assert "Paris" in text, text  # the pretrained weights, not a random init
    # word_arithmetic is written for this tokenizer: prompts and answers survive a round trip, spaces included
    task = make_task("word_arithmetic")
    for p in task.sample_prompts(20, 0):
        s = p.prompt + task.demonstration(p)
        assert tok.decode(tok(s, add_special_tokens=False).input_ids) == s
