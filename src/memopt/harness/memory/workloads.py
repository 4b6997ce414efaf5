"""What the planner trains: a model factory, a batch of inputs, a loss, and how to checkpoint activations.

A :class:`Workload` can come from a harness preset (:func:`preset_workload`), any ``transformers`` causal-LM
configuration (:func:`lm_workload`), the image classifier of the memory study (:func:`image_workload`), or
any module factory with an input shape (:func:`module_workload`). The factory is called inside the
planner's device or fake-tensor context, so that an estimate allocates nothing.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from memopt.harness.train.errors import ConfigError


@dataclass
class Workload:
    """A model to plan for.

    Attributes:
        name: shown in reports.
        build: ``build() -> nn.Module``; creates the model on the current default device (fake or real).
        batch: ``batch(n, device) -> inputs`` for ``n`` samples.
        loss: ``loss(model, inputs) -> scalar tensor``.
        enable_checkpointing: switches the model to activation checkpointing.
        sample_shape: shape of one sample (for reports), e.g. ``(seq_len,)``.
        info: extra facts for reports (the model configuration).
    """

    name: str
    build: Callable[[], nn.Module]
    batch: Callable[[int, torch.device], Any]
    loss: Callable[[nn.Module, Any], torch.Tensor]
    enable_checkpointing: Callable[[nn.Module], None]
    sample_shape: tuple[int, ...]
    info: dict[str, Any] = field(default_factory=dict)


def lm_workload(config, seq_len: int, name: str = "lm") -> Workload:
    """A ``transformers`` causal LM built from ``config``, trained on random token sequences of ``seq_len``.

    Raises:
        ConfigError: ``seq_len`` is not positive or exceeds the model's positions.
    """
    from transformers import AutoModelForCausalLM

    from memopt.harness.memory.techniques import enable_activation_checkpointing

    if seq_len < 1:
        raise ConfigError(f"--seq-len {seq_len}: must be a positive integer.")
    positions = getattr(config, "max_position_embeddings", None)
    if positions is not None and seq_len > positions:
        raise ConfigError(
            f"--seq-len {seq_len}: longer than the model's {positions} positions; use at most {positions}."
        )
    config.use_cache = False

    def batch(n: int, device: torch.device) -> torch.Tensor:
        return torch.randint(0, config.vocab_size, (n, seq_len), device=device)

    def loss(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        return model(input_ids=inputs, labels=inputs).loss

    info = {
        k: getattr(config, k, None) for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "vocab_size")
    }
    return Workload(
        name,
        lambda: AutoModelForCausalLM.from_config(config),
        batch,
        loss,
        enable_activation_checkpointing,
        (seq_len,),
        {"model_type": config.model_type, **info, "seq_len": seq_len},
    )


#: LLaMA-7B's shapes (Touvron et al., 2023), for planning
LLAMA_7B = dict(
    hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, vocab_size=32000
)


def preset_workload(name: str, seq_len: int, vocab_size: int = 2048) -> Workload:
    """A harness preset (``memopt.harness.train.models.PRESETS``), ``llama-7b``, or the image net ``wrn-16-2``.

    Args:
        name: the preset.
        seq_len: tokens per sequence (language models).
        vocab_size: the tokenizer's vocabulary, for presets that take it from the tokenizer.

    Raises:
        ConfigError: unknown preset (with the closest names).
    """
    from transformers import LlamaConfig

    from memopt.harness.train.models import check_preset, preset_config

    if name == "llama-7b":
        config = LlamaConfig(
            **LLAMA_7B, max_position_embeddings=4096, tie_word_embeddings=False, use_cache=False, rms_norm_eps=1e-6
        )
        return lm_workload(config, seq_len, name)
    if name in IMAGE_PRESETS:
        return image_workload(**IMAGE_PRESETS[name], name=name)
    check_preset(
        name,
        ("llama-7b", *IMAGE_PRESETS),
        ", or give a transformers config file with --model-config PATH or a module factory with --factory",
    )
    return lm_workload(preset_config(name, vocab_size), seq_len, name)


#: image classifiers of the memory study (8x8 grey digits, 10 classes)
IMAGE_PRESETS: dict[str, dict[str, Any]] = {
    "wrn-16-2": dict(depth=16, widen=2),
    "wrn-10-2": dict(depth=10, widen=2),
    "wrn-16-4": dict(depth=16, widen=4),
}


def image_workload(depth: int = 16, widen: int = 2, name: str = "wrn", image: int = 8, classes: int = 10) -> Workload:
    """The memory study's WideResNet on ``image`` x ``image`` grey images (random pixels for planning)."""
    from memopt.harness.train.wide_resnet import WideResNet

    def batch(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(n, 1, image, image, device=device), torch.randint(0, classes, (n,), device=device)

    def loss(model: nn.Module, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return nn.functional.cross_entropy(model(inputs[0].to(_param_dtype(model))).float(), inputs[1])

    def checkpointing(model: nn.Module) -> None:
        model.checkpointing = True

    return Workload(
        name,
        lambda: WideResNet(depth=depth, widen=widen, classes=classes),
        batch,
        loss,
        checkpointing,
        (1, image, image),
        {"depth": depth, "widen": widen, "image": image, "classes": classes},
    )


def module_workload(factory: str | Callable[[], nn.Module], input_shape: tuple[int, ...]) -> Workload:
    """Any module: ``factory()`` builds it (a callable, or ``"package.module:function"``); it takes a float
    tensor of shape ``(batch, *input_shape)`` and returns logits ``(batch, classes)``, trained with
    cross-entropy on random labels. Checkpointing wraps each child module in ``torch.utils.checkpoint``.

    Raises:
        ConfigError: the factory cannot be imported, or the shape is empty or not positive.
    """
    if not input_shape or any(d < 1 for d in input_shape):
        raise ConfigError(f"--input-shape {input_shape}: give positive sizes of one sample, e.g. 3,32,32.")
    if isinstance(factory, str):
        module_name, _, attr = factory.partition(":")
        try:
            build = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(
                f"--factory {factory!r}: cannot import it ({exc}); write it as package.module:function."
            ) from exc
        name = factory
    else:
        build, name = factory, getattr(factory, "__name__", "module")

    def batch(n: int, device: torch.device) -> torch.Tensor:
        return torch.randn(n, *input_shape, device=device)

    def loss(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        logits = model(inputs.to(_param_dtype(model))).float()
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        return nn.functional.cross_entropy(logits.reshape(logits.shape[0], -1), labels)

    return Workload(name, build, batch, loss, checkpoint_children, tuple(input_shape), {"factory": name})


def _param_dtype(model: nn.Module) -> torch.dtype:
    """The dtype inputs are given in: the model's floating-point parameters' (bf16 models take bf16 images)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


class _Checkpointed(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, *args):
        from torch.utils.checkpoint import checkpoint

        return checkpoint(self.inner, *args, use_reentrant=False)


def checkpoint_children(model: nn.Module) -> None:
    """Recompute each child's activations in backward: every child module with parameters becomes one
    checkpointed segment; the items of a ``ModuleList``/``ModuleDict`` (which are not called as a whole)
    are segments each."""
    for name, child in list(model.named_children()):
        if isinstance(child, (nn.ModuleList, nn.ModuleDict)):
            checkpoint_children(child)
        elif any(p.requires_grad for p in child.parameters()):
            setattr(model, name, _Checkpointed(child))
