"""GRPO with TRL while metahp learns the sampling temperature online (TAMPO), on a CPU, in about a minute.

    .venv/bin/python examples/trl_grpo_temperature.py            # or --steps 5 for a smoke run

Everything is local: a character-level tokenizer built with `tokenizers`, a tiny Qwen2 with random weights, and a
toy reward (answer an addition with digits; exact answers earn a bonus). The only metahp line is
`metahp.adapt(trainer, ...)`: before every generation it draws a temperature and applies it to TRL's sampling and to
the log-probs of the policy and reference model; after it, it updates its distribution from the same rollouts.
"""

from __future__ import annotations

import argparse
import random
import tempfile
from dataclasses import dataclass

import torch
from datasets import Dataset
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
from trl import GRPOConfig, GRPOTrainer

import metahp


@dataclass
class Args:
    steps: int = 60  # GRPO steps (one generation batch each)
    prompts_per_step: int = 4  # distinct prompts per batch
    generations: int = 8  # completions per prompt (GRPO group size)
    max_completion_length: int = 6
    hidden: int = 64  # width of the tiny Qwen2
    layers: int = 2
    learning_rate: float = 3e-3
    updater: str = "tampo"  # any of metahp.UPDATERS: tampo, softmax_gradient, exp3, ...
    seed: int = 0
    output_dir: str | None = None  # checkpoints and metahp_state.json; a temporary folder when None


def char_tokenizer(alphabet: str = "0123456789+= ") -> PreTrainedTokenizerFast:
    """One token per character, plus <pad> and <eos>; pads on the left as GRPO generation needs."""
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    for c in alphabet:
        vocab.setdefault(c, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    tok.padding_side = "left"
    return tok


def tiny_qwen2(tok: PreTrainedTokenizerFast, args: Args) -> Qwen2ForCausalLM:
    torch.manual_seed(args.seed)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=args.hidden, intermediate_size=2 * args.hidden,
                         num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64, tie_word_embeddings=True, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id, bos_token_id=None)
    model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return model


def addition_dataset(n: int, seed: int) -> Dataset:
    rng = random.Random(seed)
    pairs = [(rng.randint(0, 9), rng.randint(0, 9)) for _ in range(n)]
    return Dataset.from_dict({"prompt": [f"{a}+{b}=" for a, b in pairs], "answer": [str(a + b) for a, b in pairs]})


def addition_reward(completions, answer, **kwargs) -> list[float]:
    """Share of digits in the completion, plus 1 when it starts with the right sum."""
    return [sum(c.isdigit() for c in text) / max(1, len(text)) + float(text.strip().startswith(ans))
            for text, ans in zip(completions, answer, strict=True)]


def main(args: Args) -> metahp.MetaPolicy:
    tok = char_tokenizer()
    output_dir = args.output_dir or tempfile.mkdtemp(prefix="metahp-trl-")
    config = GRPOConfig(
        output_dir=output_dir, use_cpu=True, bf16=False, gradient_checkpointing=False, report_to="none",
        per_device_train_batch_size=args.prompts_per_step * args.generations, num_generations=args.generations,
        max_completion_length=args.max_completion_length, max_steps=args.steps, learning_rate=args.learning_rate,
        logging_steps=max(1, args.steps // 10), save_strategy="no", seed=args.seed, disable_tqdm=True,
    )
    trainer = GRPOTrainer(model=tiny_qwen2(tok, args), reward_funcs=addition_reward, args=config,
                          train_dataset=addition_dataset(args.steps * args.prompts_per_step, args.seed),
                          processing_class=tok)
    adapter = metahp.adapt(trainer, "temperature", args.updater)  # TAMPO's grid 0.6..1.5, alpha 0.05, nucleus 0.7
    trainer.train()

    policy = adapter.policy
    chosen = [h["value"] for h in adapter.history]
    print(f"\ntemperatures used (one per generation batch): {chosen}")
    print("final meta-policy:", {f"{v:g}": round(float(p), 3) for v, p in zip(policy.values, policy.probs,
                                                                               strict=True)})
    rewards = [log["reward"] for log in trainer.state.log_history if "reward" in log]
    print(f"mean reward: first log {rewards[0]:.3f}, last log {rewards[-1]:.3f}")
    return policy


if __name__ == "__main__":
    torch.set_num_threads(2)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in vars(Args()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(default) if default is not None else str,
                            default=default)
    main(Args(**vars(parser.parse_args())))
