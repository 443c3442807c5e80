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


def tiny_qwen2(tok, seed: int = 0, hidden: int = 64, layers: int = 2, attention_dropout: float = 0.0):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=128, tie_word_embeddings=True, attention_dropout=attention_dropout,
                         pad_token_id=tok.pad_token_id,
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

    # METAHP_TEST_DEVICE=cuda runs the TRL tests on a GPU (the device check); CI and the default are the CPU.
    on_cpu = os.environ.get("METAHP_TEST_DEVICE", "cpu") == "cpu"
    kwargs = dict(output_dir=str(output_dir), use_cpu=on_cpu, bf16=False, gradient_checkpointing=False,
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


class FakeSamplingParams:
    """The fields of vllm.SamplingParams that TRL's colocate call sets and metahp reads, with its ``clone``. (A plain
    class: this module is loaded by path, outside sys.modules, where dataclasses cannot resolve it.)"""

    def __init__(self, temperature: float, top_p: float = 1.0, top_k: int = 0, min_p: float | None = None, n: int = 1):
        self.temperature, self.top_p, self.top_k, self.min_p, self.n = temperature, top_p, top_k, min_p, n

    def clone(self) -> FakeSamplingParams:
        return FakeSamplingParams(self.temperature, self.top_p, self.top_k, self.min_p, self.n)


class FakeLLM:
    """A stand-in for vllm.LLM: ``generate(prompts, sampling_params)`` with one SamplingParams or one per prompt,
    sampling each prompt through transformers at its settings and returning processed log-probs.
    ``.temperatures`` lists, per call, the temperature each prompt was sampled at."""

    def __init__(self, model, tokenizer, max_tokens):
        self.model, self.tokenizer, self.max_tokens = model, tokenizer, max_tokens
        self.temperatures: list[list[float]] = []

    def generate(self, prompts, sampling_params=None, use_tqdm=False):
        from transformers import GenerationConfig

        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        assert len(params) == len(prompts)
        self.temperatures.append([p.temperature for p in params])
        outputs = []
        for prompt, p in zip(prompts, params, strict=True):
            ids = prompt["prompt_token_ids"]
            config = GenerationConfig(do_sample=True, temperature=p.temperature, top_p=p.top_p, top_k=p.top_k,
                                      min_p=p.min_p, max_new_tokens=self.max_tokens, output_scores=True,
                                      return_dict_in_generate=True, pad_token_id=self.tokenizer.pad_token_id,
                                      eos_token_id=self.tokenizer.eos_token_id)
            with torch.no_grad():
                out = self.model.generate(input_ids=torch.tensor([ids]), generation_config=config)
            tokens = out.sequences[0, len(ids):].tolist()
            logp = torch.stack(out.scores, dim=1)[0].float().log_softmax(-1)
            if self.tokenizer.eos_token_id in tokens:
                tokens = tokens[:tokens.index(self.tokenizer.eos_token_id) + 1]
            outputs.append((tokens, [[logp[t, tok].item()] for t, tok in enumerate(tokens)]))
        return outputs


class FakeVLLMGeneration:
    """A stand-in for trl's VLLMGeneration in colocate mode: at every generate() call it builds the sampling
    settings from its own .temperature / .top_p / .top_k / .min_p (as VLLMGeneration builds SamplingParams, n=1)
    and calls ``.llm.generate`` once for all prompts; it returns processed log-probs (vLLM's
    logprobs_mode="processed_logprobs": after temperature and truncation). ``.calls`` records the settings of every
    call."""

    mode = "colocate"
    tensor_parallel_size = 1

    def __init__(self, model, tokenizer, max_tokens, temperature, top_p=1.0, top_k=0, min_p=None):
        self.llm = FakeLLM(model, tokenizer, max_tokens)
        self.temperature, self.top_p, self.top_k, self.min_p = temperature, top_p, top_k, min_p
        self.calls = []

    @property
    def temperatures(self):
        return [c["temperature"] for c in self.calls]

    def sync_weights(self):
        pass

    def generate(self, prompts, images, num_generations, profiler=None):
        settings = dict(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k, min_p=self.min_p)
        self.calls.append(settings)
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompts],
                                    sampling_params=FakeSamplingParams(**settings), use_tqdm=False)
        return prompts, [tokens for tokens, _ in outputs], [logp for _, logp in outputs], None
