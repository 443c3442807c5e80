"""Tiny, hub-free GRPO setups for the TRL adapter's tests and scripts (imported by path, not a test module).

A character-level tokenizer, a 2-layer random Qwen2, a toy reward and a CPU GRPOConfig that TRL 1.16 accepts.
"""

from __future__ import annotations

import os

import torch

ALPHABET = "0123456789+= abc"
PROMPTS = ["1+1=", "2+3=", "4+4=", "7+1=", "3+5=", "6+2=", "9+0=", "5+4="]


def char_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    for c in ALPHABET:
        vocab.setdefault(c, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>",
                                  unk_token="<unk>")
    tok.padding_side = "left"
    return tok


def tiny_qwen2(tok, seed: int = 0, hidden: int = 64, layers: int = 2):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=128, tie_word_embeddings=True, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id, bos_token_id=None)
    model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return model


def digit_reward(completions, **kwargs):
    """Share of digits in each completion: varies within a group, so advantages are mostly non-zero."""
    return [sum(c.isdigit() for c in text) / max(1, len(text)) for text in completions]


def grpo_config(output_dir, **overrides):
    from trl import GRPOConfig

    kwargs = dict(output_dir=str(output_dir), use_cpu=True, bf16=False, gradient_checkpointing=False,
                  report_to="none", per_device_train_batch_size=4, num_generations=4, max_completion_length=8,
                  max_steps=2, learning_rate=1e-3, logging_steps=1, save_strategy="no", seed=0,
                  disable_tqdm=True, dataloader_num_workers=0)
    kwargs.update(overrides)
    return GRPOConfig(**kwargs)


def grpo_trainer(output_dir, *, seed: int = 0, model_kwargs=None, eval_dataset=False, **overrides):
    from datasets import Dataset
    from trl import GRPOTrainer

    tok = char_tokenizer()
    model = tiny_qwen2(tok, seed=seed, **(model_kwargs or {}))
    if overrides.get("beta", 0.0) != 0.0:  # TRL builds the reference model from a path: save one locally
        path = os.path.join(str(output_dir), "init_model")
        model.save_pretrained(path)
        model = path
    data = Dataset.from_dict({"prompt": PROMPTS})
    return GRPOTrainer(model=model, reward_funcs=digit_reward, args=grpo_config(output_dir, seed=seed, **overrides),
                       train_dataset=data, eval_dataset=data.select(range(4)) if eval_dataset else None,
                       processing_class=tok)
