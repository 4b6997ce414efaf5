"""memopt optimizers in the Hugging Face ``transformers.Trainer``: passed as ``optimizers=(optimizer,
scheduler)`` or as ``optimizer_cls_and_kwargs``, trained a few steps, and resumed from a checkpoint
(``train(resume_from_checkpoint=...)``) to exactly where an uninterrupted run goes.

The Trainer steps the optimizer as ``optimizer.step()``, without a closure: the closure optimizers
(``needs_closure``) cannot run there and say so with a ``ValueError`` at the first step.
"""

from __future__ import annotations

import pytest
import torch
from tests.integrations.trainer_setup import ALL, CLOSURE, build
from torch.optim.lr_scheduler import StepLR
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

import memopt

STEPS, SAVE_AT = 6, 3


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16)  # fmt: skip
    return LlamaForCausalLM(config)


def dataset() -> list[dict[str, torch.Tensor]]:
    tokens = torch.randint(0, 64, (4 * STEPS, 12), generator=torch.Generator().manual_seed(0))
    return [{"input_ids": row, "labels": row} for row in tokens]


def arguments(folder, **overrides) -> TrainingArguments:
    settings = dict(output_dir=str(folder), max_steps=STEPS, per_device_train_batch_size=4, save_strategy="steps",
                    save_steps=SAVE_AT, logging_strategy="no", report_to=[], use_cpu=True, seed=0,
                    dataloader_num_workers=0, disable_tqdm=True)  # fmt: skip
    return TrainingArguments(**{**settings, **overrides})


def parameters(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _with_optimizer(folder, name: str, resume=None) -> LlamaForCausalLM:
    model = tiny_llama()
    optimizer = build(model, name)
    trainer = Trainer(model=model, args=arguments(folder), train_dataset=dataset(),
                      optimizers=(optimizer, StepLR(optimizer, 2, 0.5)))  # fmt: skip
    trainer.train(resume_from_checkpoint=resume)
    assert trainer.state.global_step == STEPS
    return model


@pytest.mark.parametrize("name", [name for name in ALL if name not in CLOSURE])
def test_optimizers_argument_trains_and_resumes_exactly(tmp_path, name):
    straight = _with_optimizer(tmp_path / "straight", name)
    resumed = _with_optimizer(tmp_path / "resumed", name, resume=str(tmp_path / "straight" / f"checkpoint-{SAVE_AT}"))
    assert any(not torch.equal(a, b) for a, b in zip(parameters(straight), parameters(tiny_llama())))
    assert all(torch.equal(a, b) for a, b in zip(parameters(straight), parameters(resumed)))


def test_optimizer_cls_and_kwargs_builds_the_memopt_class(tmp_path):
    def run(folder, resume=None):
        model = tiny_llama()
        trainer = Trainer(model=model, args=arguments(folder, weight_decay=0.01), train_dataset=dataset(),
                          optimizer_cls_and_kwargs=(memopt.AdamWSN, {"lr": 1e-2}))  # fmt: skip
        trainer.train(resume_from_checkpoint=resume)
        assert isinstance(trainer.optimizer.optimizer, memopt.AdamWSN)
        # the Trainer's own grouping: weight decay for the matrices, none for the norms and biases
        assert sorted(g["weight_decay"] for g in trainer.optimizer.param_groups) == [0.0, 0.01]
        return model

    straight = run(tmp_path / "straight")
    resumed = run(tmp_path / "resumed", resume=str(tmp_path / "straight" / f"checkpoint-{SAVE_AT}"))
    assert all(torch.equal(a, b) for a, b in zip(parameters(straight), parameters(resumed)))


@pytest.mark.parametrize("name", CLOSURE)
def test_closure_optimizers_say_the_trainer_cannot_step_them(tmp_path, name):
    model = tiny_llama()
    trainer = Trainer(model=model, args=arguments(tmp_path), train_dataset=dataset(),
                      optimizers=(build(model, name), None))  # fmt: skip
    with pytest.raises(ValueError, match=r"\.step\(\) needs a closure: .*needs_closure"):
        trainer.train()
