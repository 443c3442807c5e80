"""Everything a verl GRPO run needs, built locally with no download: a tiny model, its tokenizer, data, a reward.

``build_assets(folder, seed=0)`` writes into ``folder``:

- ``tiny-qwen2/``: a random Qwen2 causal LM from a config (hidden 64, 2 layers, float32, tied embeddings) saved
  with ``save_pretrained``, beside a byte-level BPE tokenizer trained here on a toy corpus, with a chat template
  and ``<pad>`` / ``<|im_end|>`` (eos) tokens. transformers 5 loads a ``model_type: qwen2`` tokenizer through
  Qwen2Tokenizer's byte-level pipeline, so the tokenizer is byte-level BPE rather than character-level.
- ``train.parquet`` / ``val.parquet``: 16 / 4 toy additions ("what is 2 + 3 ?", answer "5") in verl's RL dataset
  schema: ``data_source``, ``prompt`` (chat messages), ``ability``, ``reward_model`` {``ground_truth``, ``style``},
  ``extra_info`` {``index``, ``split``}.
- ``reward.py``: ``compute_score(data_source, solution_str, ground_truth, extra_info=None)``: 1.0 when the
  response contains the answer's digit, 0.5 when it holds another digit, else 0.0. The random model earns a mean
  of about 0.4 and GRPO groups of 4 rarely tie, so the advantages are not all zero.

Deterministic given ``seed``. ``initializer_range=0.2`` (not Qwen2's 0.02) gives peaked next-token distributions
(top probability ~0.2, not ~0.004), so a mismatch shows in verl's ``training/rollout_probs_diff_*`` metrics
(|p_rollout - p_trainer| of the sampled tokens): sampling at T=0.7 and scoring at T=1.0 gives max ~0.3 and mean
~0.05 on this model, against float noise of ~1e-4 when both use the same temperature.
"""

from __future__ import annotations

import json
from pathlib import Path

MODEL_DIR = "tiny-qwen2"
DATA_SOURCE = "toy_add"
N_TRAIN = 16
N_VAL = 4
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

REWARD_SOURCE = '''"""Rule reward of the toy additions (written by tests_verl/assets.py)."""


def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    """1.0 when the response contains the answer, 0.5 when it holds another digit, else 0.0."""
    if str(ground_truth) in solution_str:
        return 1.0
    return 0.5 if any(c.isdigit() for c in solution_str) else 0.0
'''


def build_tokenizer():
    """A byte-level BPE tokenizer (vocabulary ~300) trained on toy additions, as a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [f"user\nwhat is {a} + {b} ?\nassistant\nthe answer is {a + b}\n" for a in range(10) for b in range(10)]
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<pad>", bos_token=None,
                                 additional_special_tokens=["<|im_start|>", "<|endoftext|>"])
    hf.chat_template = CHAT_TEMPLATE
    return hf


def build_model(tokenizer, seed: int = 0, hidden: int = 64, layers: int = 2, initializer_range: float = 0.2):
    """A random float32 Qwen2ForCausalLM sized for a CPU, with the tokenizer's special ids."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    vocab = tokenizer.get_vocab()
    config = Qwen2Config(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, tie_word_embeddings=True, initializer_range=initializer_range,
                         eos_token_id=vocab["<|im_end|>"], pad_token_id=vocab["<pad>"],
                         bos_token_id=vocab["<|endoftext|>"], torch_dtype="float32")
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).to(torch.float32)
    model.generation_config.eos_token_id = vocab["<|im_end|>"]
    model.generation_config.pad_token_id = vocab["<pad>"]
    return model


def toy_rows(n: int, split: str, offset: int = 0) -> list[dict]:
    """``n`` additions with one-digit answers in verl's RL dataset schema."""
    rows = []
    for i in range(offset, offset + n):
        a, b = i % 5, (i * 3) % 5
        rows.append({
            "data_source": DATA_SOURCE,
            "prompt": [{"role": "user", "content": f"what is {a} + {b} ?"}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": str(a + b)},
            "extra_info": {"index": i, "split": split},
        })
    return rows


def build_assets(folder: str | Path, seed: int = 0) -> Path:
    """Write the model, tokenizer, parquet files and reward file into ``folder``; return it.

    Idempotent: a folder that already holds a complete build (``assets.json`` with the same seed) is kept.
    """
    import pandas as pd

    folder = Path(folder)
    stamp = folder / "assets.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("seed") == seed:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, seed=seed)
    tokenizer.save_pretrained(folder / MODEL_DIR)
    model.save_pretrained(folder / MODEL_DIR)
    pd.DataFrame(toy_rows(N_TRAIN, "train")).to_parquet(folder / "train.parquet")
    pd.DataFrame(toy_rows(N_VAL, "test", offset=N_TRAIN)).to_parquet(folder / "val.parquet")
    (folder / "reward.py").write_text(REWARD_SOURCE)
    stamp.write_text(json.dumps({"seed": seed, "vocab_size": len(tokenizer),
                                 "parameters": sum(p.numel() for p in model.parameters())}))
    return folder


if __name__ == "__main__":
    import sys

    print(build_assets(sys.argv[1]))
