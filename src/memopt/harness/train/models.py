"""LLaMA-style causal language models built from ``transformers`` configurations (nothing is downloaded).

Presets ``9m`` to ``1b`` are the sizes of the Subset-Norm / Subspace-Momentum paper (the GaLore
``configs/llama_*.json`` files: vocabulary 32000, 1024 positions, untied embeddings). ``tiny`` and ``small``
train in minutes on a laptop CPU and take their vocabulary from the tokenizer. Any ``transformers``
causal-LM configuration file can be used instead (``--model-config PATH``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, PretrainedConfig

from memopt.harness.train.choices import check_choice
from memopt.harness.train.errors import ConfigError, reason


@dataclass(frozen=True)
class ModelPreset:
    """Shape of a LLaMA model.

    Attributes:
        hidden_size, intermediate_size, num_layers, num_heads: the transformer's shape.
        vocab_size: fixed vocabulary, or None to use the tokenizer's.
        max_positions: longest sequence the rotary embedding is set up for.
    """

    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    vocab_size: int | None = None
    max_positions: int = 1024


PRESETS: dict[str, ModelPreset] = {
    "tiny": ModelPreset(64, 176, 2, 4),
    "small": ModelPreset(128, 352, 4, 4),
    "9m": ModelPreset(128, 352, 4, 4, vocab_size=32000),
    "20m": ModelPreset(256, 688, 4, 4, vocab_size=32000),
    "35m": ModelPreset(384, 1024, 6, 8, vocab_size=32000),
    "60m": ModelPreset(512, 1376, 8, 8, vocab_size=32000),
    "130m": ModelPreset(768, 2048, 12, 12, vocab_size=32000),
    "350m": ModelPreset(1024, 2736, 24, 16, vocab_size=32000),
    "1b": ModelPreset(2048, 5461, 24, 32, vocab_size=32000),
}


def check_preset(name: str, extra: tuple[str, ...] = (), hint: str = "") -> None:
    """Raise :class:`ConfigError` with the closest names unless ``name`` is a preset (or one of ``extra``)."""
    check_choice(
        "--preset",
        name,
        [*PRESETS, *extra],
        unknown="model preset",
        hint=hint or ", or give a transformers config file with --model-config PATH",
    )


def preset_config(name: str, tokenizer_vocab: int) -> LlamaConfig:
    """``LlamaConfig`` of the preset ``name``.

    Args:
        name: a key of :data:`PRESETS`.
        tokenizer_vocab: the tokenizer's vocabulary size (used by presets without a fixed vocabulary).

    Raises:
        ConfigError: unknown preset.
    """
    check_preset(name)
    p = PRESETS[name]
    return LlamaConfig(
        vocab_size=p.vocab_size or tokenizer_vocab,
        hidden_size=p.hidden_size,
        intermediate_size=p.intermediate_size,
        num_hidden_layers=p.num_layers,
        num_attention_heads=p.num_heads,
        num_key_value_heads=p.num_heads,
        max_position_embeddings=p.max_positions,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        use_cache=False,
        bos_token_id=None,
        eos_token_id=0,
        pad_token_id=None,
    )


def file_config(path: str | Path) -> PretrainedConfig:
    """Load a ``transformers`` configuration from a JSON file (``--model-config``).

    Raises:
        ConfigError: the file is missing, is not JSON, or is not a causal-LM configuration.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"--model-config {path}: no such file. Give a transformers config.json.")
    try:
        raw = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--model-config {path}: not a JSON file ({exc}).") from exc
    if not isinstance(raw, dict) or "model_type" not in raw:
        raise ConfigError(
            f"--model-config {path}: no 'model_type' field; a transformers config.json names its model "
            'type, e.g. "model_type": "llama".'
        )
    try:
        config = AutoConfig.from_pretrained(str(file))
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"--model-config {path}: transformers cannot read it: {reason(exc)}.") from exc
    if getattr(config, "pad_token_id", None) is not None and config.pad_token_id < 0:
        config.pad_token_id = None  # GaLore-style configs say -1 for "no padding"
    config.use_cache = False
    return config


def model_config(preset: str, config_path: str | None, tokenizer_vocab: int, seq_len: int) -> PretrainedConfig:
    """The model configuration for a run: ``config_path`` if given, else the preset; checked against the data.

    Raises:
        ConfigError: the vocabulary is smaller than the tokenizer's, or ``seq_len`` exceeds the positions.
    """
    config = file_config(config_path) if config_path else preset_config(preset, tokenizer_vocab)
    source = f"--model-config {config_path}" if config_path else f"--preset {preset}"
    if config.vocab_size < tokenizer_vocab:
        raise ConfigError(
            f"{source}: the model's vocabulary ({config.vocab_size}) is smaller than the tokenizer's "
            f"({tokenizer_vocab}). Lower --vocab-size to at most {config.vocab_size}."
        )
    max_positions = getattr(config, "max_position_embeddings", None)
    if max_positions is not None and seq_len > max_positions:
        raise ConfigError(
            f"--seq-len {seq_len}: longer than the model's {max_positions} positions ({source}). "
            f"Use --seq-len {max_positions} or less."
        )
    return config


def build_model(config: PretrainedConfig, seed: int) -> torch.nn.Module:
    """A freshly initialised causal LM for ``config``; the same ``seed`` gives the same weights.

    Raises:
        ConfigError: ``transformers`` has no causal-LM class for the configuration.
    """
    torch.manual_seed(seed)
    try:
        model = AutoModelForCausalLM.from_config(config)
    except ValueError as exc:
        raise ConfigError(
            f"the model configuration is not a causal LM that transformers knows: {reason(exc)}."
        ) from exc
    return model


def count_parameters(model: torch.nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
