"""The planner's accounting: hand-computed bytes on a small model, estimate against measure, analytic counts
of a LLaMA plan, and what each technique changes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from memopt.harness.memory.profile import estimate, measure
from memopt.harness.memory.techniques import Techniques
from memopt.harness.memory.workloads import Workload, preset_workload
from memopt.harness.train.errors import ConfigError


def mlp_workload() -> Workload:
    """Linear(10, 16) -> ReLU -> Linear(16, 4), loss = mean of squared outputs."""

    def build() -> nn.Module:
        return nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 4))

    return Workload(
        "mlp", build, lambda n, device: torch.randn(n, 10, device=device), lambda m, x: m(x).square().mean(),
        lambda m: None, (10,),
    )  # fmt: skip


@pytest.mark.parametrize("profile", [measure, estimate])
def test_components_of_a_small_mlp_match_hand_computed_bytes(profile):
    batch = 3
    params = (10 * 16 + 16) + (16 * 4 + 4)  # 244 parameters in 4 tensors
    adamw = profile(mlp_workload(), "adamw", batch_size=batch)
    assert adamw["parameters"] == 4 * params
    assert adamw["gradients"] == 4 * params
    assert adamw["optimizer_state"] == 2 * 4 * params + 4 * 8  # two fp32 moments, a Python step per tensor
    # saved for backward: the input of the first Linear (3 x 10), the ReLU output that the second Linear
    # also saves (3 x 16, one storage), the second Linear's output that square() saves (3 x 4); the weights
    # are parameters, not activations
    assert adamw["activations"] == 4 * batch * (10 + 16 + 4)
    assert adamw.peak == sum(adamw.at_peak.values())
    sgd = profile(mlp_workload(), "sgd", {"momentum": 0.0}, batch_size=batch)
    assert sgd["optimizer_state"] == 4 * 8  # plain SGD: step counters only
    assert adamw.peak - sgd.peak == 2 * 4 * params  # the resident moments add exactly their bytes to the peak


def _within(estimated, measured, tolerance=0.10):
    for key, value in measured.components.items():
        assert estimated.components[key] == pytest.approx(value, rel=tolerance, abs=1024), key
    assert estimated.peak == pytest.approx(measured.peak, rel=tolerance)


CASES = [
    ("tiny", "adamw", Techniques()),
    ("tiny", "adamw_snsm", Techniques(checkpointing=True)),
    ("tiny", "adamw8bit", Techniques(microbatches=2)),
    ("tiny", "adamw", Techniques(precision="bf16-autocast")),
    ("tiny", "adamw", Techniques(precision="bf16-master", sparsity=0.5)),
    ("wrn-10-2", "sgd", Techniques()),
    ("wrn-10-2", "adamw_snsm", Techniques(microbatches=4, checkpointing=True)),
    ("wrn-10-2", "adamw8bit", Techniques(precision="bf16-sr", sparsity=0.8)),
]


@pytest.mark.parametrize(("preset", "optimizer", "techniques"), CASES, ids=lambda v: getattr(v, "label", lambda: v)())
def test_estimate_is_within_ten_percent_of_measure_on_cpu(preset, optimizer, techniques):
    workload = preset_workload(preset, seq_len=32, vocab_size=256)
    batch = 8
    hparams = {"rank": 8} if "snsm" in optimizer else {}
    measured = measure(workload, optimizer, hparams, batch_size=batch, techniques=techniques)
    estimated = estimate(workload, optimizer, hparams, batch_size=batch, techniques=techniques)
    _within(estimated, measured)


def llama_analytic(workload, optimizer: str, rank: int) -> tuple[int, int]:
    """Parameters and optimizer-state bytes from the shapes alone (state as memopt.state_bytes counts it)."""
    from tests.state.test_accounting import analytic_bytes

    with torch.device("meta"):
        model = workload.build()
    return sum(p.numel() for p in model.parameters()), analytic_bytes(model, optimizer, rank=rank)


@pytest.mark.parametrize("optimizer", ["adamw", "adamw_snsm"])
@pytest.mark.parametrize(
    ("preset", "rank", "params"),
    [("60m", 128, 58_073_600), ("llama-7b", 1024, 6_738_415_616)],
)
def test_a_llama_plan_equals_the_analytic_counts_and_takes_under_a_minute(preset, rank, params, optimizer):
    workload = preset_workload(preset, seq_len=2048 if preset == "llama-7b" else 64)
    hparams = {"rank": rank, "proj_type": "svd"} if optimizer == "adamw_snsm" else {}
    plan = estimate(workload, optimizer, hparams, batch_size=1, steps=1)
    count, state = llama_analytic(workload, optimizer, rank=rank)
    assert count == params
    assert plan["parameters"] == plan["gradients"] == 4 * params
    assert plan["optimizer_state"] == state
    assert plan.seconds < 60


# ------------------------------------------------------------------------------------- techniques


def _measure(techniques: Techniques, optimizer: str = "adamw", batch: int = 64):
    """A measured step of a WRN-10-1 (the study's net at width 1, so that the test is quick)."""
    from memopt.harness.memory.workloads import image_workload

    workload = image_workload(depth=10, widen=1)
    return measure(
        workload, optimizer, {"rank": 8} if "snsm" in optimizer else {}, batch_size=batch, techniques=techniques
    )


def test_each_technique_moves_the_measured_figure_the_expected_way():
    base = _measure(Techniques())
    n_bytes = base["parameters"]
    micro = _measure(Techniques(microbatches=4))
    assert micro["activations"] < 0.3 * base["activations"] and micro.peak < base.peak
    ckpt = _measure(Techniques(checkpointing=True))
    assert ckpt["activations"] < 0.5 * base["activations"] and ckpt.peak < base.peak
    autocast = _measure(Techniques(precision="bf16-autocast"))
    assert autocast["parameters"] == n_bytes and autocast["activations"] < base["activations"]
    sr = _measure(Techniques(precision="bf16-sr"))
    assert sr["parameters"] == sr["gradients"] == n_bytes // 2  # bf16 parameters and gradients
    assert sr["optimizer_state"] < base["optimizer_state"]  # bf16 moments
    master = _measure(Techniques(precision="bf16-master"))
    assert master["parameters"] == n_bytes // 2 and master["master_weights"] == n_bytes
    compact = _measure(Techniques(sparsity=0.9))
    assert compact["parameters"] < 0.2 * n_bytes and compact["optimizer_state"] < 0.2 * base["optimizer_state"]
    masked = _measure(Techniques(sparsity=0.9, sparse_storage="mask"))
    assert masked["parameters"] == n_bytes and masked["buffers"] > 0  # dense weights and a dense mask
    snsm = _measure(Techniques(), optimizer="adamw_snsm")
    assert snsm["optimizer_state"] < base["optimizer_state"]


def test_compact_sparsity_holds_exactly_the_kept_entries():
    from memopt.harness.memory.sparsity import kept_count, prunable_weights

    workload = preset_workload("wrn-10-2", 0)
    model = workload.build()
    prunable = sum(m.weight.numel() for m in prunable_weights(model))
    other = sum(p.numel() for p in model.parameters()) - prunable
    kept = sum(kept_count(m.weight.numel(), 0.75) for m in prunable_weights(model))
    plan = estimate(workload, "sgd", batch_size=4, techniques=Techniques(sparsity=0.75))
    assert plan["parameters"] == 4 * (kept + other)
    assert plan["buffers"] == 4 * kept  # the int32 positions of the kept entries


# ------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: preset_workload("tinny", 32), "--preset 'tinny': unknown model preset (did you mean 'tiny'"),
        (lambda: _measure(Techniques(microbatches=3)), "--microbatches 3: does not divide --batch-size 64"),
        (lambda: _measure(Techniques(), batch=0), "--batch-size 0: must be a positive integer"),
        (lambda: _measure(Techniques(sparsity=-0.1)), "--sparsity -0.1: the fraction of weights pruned must be in"),
        (lambda: _measure(Techniques(precision="fp8")), "--precision 'fp8': choose one of"),
        (lambda: _measure(Techniques(), optimizer="adamx"), "--optimizer 'adamx': unknown optimizer"),
        (lambda: preset_workload("tiny", 4096), "--seq-len 4096: longer than the model's 1024 positions"),
    ],
)
def test_bad_input_is_a_clear_error(call, message):
    with pytest.raises(ConfigError) as info:
        call()
    assert message in str(info.value)


# ------------------------------------------------------------------------------------- CUDA


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to compare with the allocator")
@pytest.mark.parametrize("techniques", [Techniques(), Techniques(checkpointing=True, precision="bf16-autocast")])
def test_cuda_peak_is_within_five_percent_of_the_allocator(techniques):
    workload = preset_workload("small", seq_len=128)
    measured = measure(workload, "adamw", batch_size=16, techniques=techniques, device="cuda")
    estimated = estimate(workload, "adamw", batch_size=16, techniques=techniques, device="cuda")
    assert measured.peak == pytest.approx(measured.allocator_peak, rel=0.05)
    assert estimated.peak == pytest.approx(measured.allocator_peak, rel=0.05)


def test_a_module_factory_is_planned_and_checkpointed_per_child():
    from memopt.harness.memory.workloads import module_workload

    workload = module_workload("memopt.harness.train.wide_resnet:WideResNet", (1, 8, 8))
    plain = measure(workload, "sgd", batch_size=16)
    checkpointed = measure(workload, "sgd", batch_size=16, techniques=Techniques(checkpointing=True))
    assert checkpointed["activations"] < 0.5 * plain["activations"]
    _within(estimate(workload, "sgd", batch_size=16, techniques=Techniques(checkpointing=True)), checkpointed)
    with pytest.raises(ConfigError, match="--factory 'nowhere:build': cannot import it"):
        module_workload("nowhere:build", (3,))
