"""Model presets and --model-config files."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from memopt.harness.train.errors import ConfigError
from memopt.harness.train.models import PRESETS, build_model, count_parameters, model_config, preset_config

# Parameter counts of the paper's sizes (untied 32000-token embeddings), counted on the meta device.
PAPER_SIZES = {
    "9m": 9.0e6,
    "20m": 19.5e6,
    "35m": 35.2e6,
    "60m": 58.1e6,
    "130m": 134.1e6,
    "350m": 368.0e6,
    "1b": 1339.1e6,
}


@pytest.mark.parametrize("name", list(PAPER_SIZES))
def test_paper_presets_have_the_papers_sizes(name):
    config = preset_config(name, tokenizer_vocab=2048)
    assert config.vocab_size == 32000 and config.max_position_embeddings == 1024
    assert not config.tie_word_embeddings
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    assert isinstance(model, LlamaForCausalLM)
    assert count_parameters(model) == pytest.approx(PAPER_SIZES[name], rel=0.01)


def test_paper_preset_shapes():
    assert PRESETS["60m"].hidden_size == 512 and PRESETS["60m"].intermediate_size == 1376
    assert (PRESETS["1b"].hidden_size, PRESETS["1b"].intermediate_size, PRESETS["1b"].num_layers) == (
        2048,
        5461,
        24,
    )


def test_small_presets_take_the_tokenizers_vocabulary():
    assert preset_config("tiny", tokenizer_vocab=777).vocab_size == 777
    model = build_model(preset_config("tiny", tokenizer_vocab=300), seed=1)
    again = build_model(preset_config("tiny", tokenizer_vocab=300), seed=1)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters(), strict=False))


def test_unknown_preset_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"--preset '60M': unknown model preset \(did you mean '60m'"):
        preset_config("60M", 100)


def test_model_config_file_galore_style(tmp_path):
    path = tmp_path / "llama_9m.json"
    path.write_text(
        json.dumps(
            {
                "architectures": ["LLaMAForCausalLM"],
                "hidden_act": "silu",
                "hidden_size": 128,
                "intermediate_size": 352,
                "max_sequence_length": 1024,
                "model_type": "llama",
                "num_attention_heads": 4,
                "num_hidden_layers": 4,
                "pad_token_id": -1,
                "rms_norm_eps": 1e-06,
                "vocab_size": 32000,
            }
        )
    )
    config = model_config("small", str(path), tokenizer_vocab=2048, seq_len=128)
    assert config.hidden_size == 128 and config.pad_token_id is None and config.vocab_size == 32000


def test_model_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"--model-config .*missing\.json: no such file"):
        model_config("small", str(tmp_path / "missing.json"), 100, 16)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match=r"--model-config .*bad\.json: not a JSON file"):
        model_config("small", str(bad), 100, 16)
    typeless = tmp_path / "typeless.json"
    typeless.write_text('{"hidden_size": 64}')
    with pytest.raises(ConfigError, match="no 'model_type' field"):
        model_config("small", str(typeless), 100, 16)
    with pytest.raises(
        ConfigError,
        match=r"--preset 9m: the model's vocabulary \(32000\) is smaller than the "
        r"tokenizer's \(40000\)\. Lower --vocab-size",
    ):
        model_config("9m", None, tokenizer_vocab=40000, seq_len=16)
    with pytest.raises(ConfigError, match="--seq-len 2048: longer than the model's 1024 positions"):
        model_config("tiny", None, tokenizer_vocab=300, seq_len=2048)
