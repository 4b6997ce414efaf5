"""``memopt fit``: budgets parsed, the chosen configuration's measured peak within the budget and monotone in
it, a clear report when nothing fits, bad input, the penalty table's citations, and a printed command that
trains."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from memopt.harness.memory import penalties
from memopt.harness.memory.fit import FIT_PRECISIONS, OPTIMIZERS, Axes, Fitter, parse_budget
from memopt.harness.memory.profile import estimate, measure
from memopt.harness.memory.techniques import Techniques
from memopt.harness.memory.workloads import preset_workload
from memopt.harness.train.errors import ConfigError
from memopt.harness.train.optimizers import resolve_hparams

ROOT = Path(__file__).resolve().parents[3]
MiB = 2**20


@pytest.mark.parametrize(
    ("text", "expected"),
    [("24GiB", 24 * 2**30), ("24GB", 24 * 10**9), ("24gib", 24 * 2**30), ("512MiB", 512 * MiB), ("1.5GiB", 3 * 2**29),
     ("64kB", 64_000), ("1e9", 10**9), ("2048", 2048), ("2TB", 2 * 10**12)],
)  # fmt: skip
def test_budgets_in_binary_and_si_units(text, expected):
    assert parse_budget(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [("0", "must be positive"), ("0GiB", "must be positive"), ("24Gx", "give a size with a unit"),
     ("24G", "give a size with a unit"), ("-3GiB", "give a size with a unit"), ("", "give a size with a unit")],
)  # fmt: skip
def test_bad_budgets_are_clear_errors(text, message):
    with pytest.raises(ConfigError, match=re.escape(f"--budget {text!r}: {message}")):
        parse_budget(text)


def test_m_microbatches_are_planned_as_two():
    """Every microbatch after the first holds the same tensors, so 4 microbatches of 2 peak as 2 of 2."""
    workload = preset_workload("tiny", 32, 256)
    four = estimate(workload, "adamw", batch_size=8, techniques=Techniques(microbatches=4))
    two = estimate(workload, "adamw", batch_size=4, techniques=Techniques(microbatches=2))
    assert four.peak == two.peak and four.at_peak == two.at_peak


@pytest.fixture(scope="module")
def fitter():
    axes = Axes(choices=("adamw", "adamw8bit", "adamw_snsm"), precisions=("fp32", "bf16-sr"))
    return Fitter(preset_workload("tiny", 32, 256), 8, axes)


def _measured_peak(item) -> int:
    candidate = item.candidate
    hparams = resolve_hparams(candidate.optimizer, candidate.hparams(), None, 64)
    return measure(
        preset_workload("tiny", 32, 256), candidate.optimizer, hparams, batch_size=8,
        techniques=candidate.techniques(),
    ).peak  # fmt: skip


def test_the_chosen_configuration_fits_when_measured_and_tighter_budgets_never_measure_more(fitter):
    measured = []
    for budget in (64 * MiB, 4 * MiB, 3 * MiB, int(2.2 * MiB)):
        result = fitter.fit(budget)
        assert result.fits, budget
        best = result.fits[0]
        assert best.peak is not None and best.peak <= result.usable
        peak = _measured_peak(best)  # a real run of all its microbatches, under the live-tensor tracker
        assert peak <= budget, (best.candidate.label(), peak, budget)
        measured.append(peak)
    assert measured == sorted(measured, reverse=True)
    assert measured[0] > 2 * measured[-1]  # the budgets did force different configurations


def test_when_nothing_fits_the_closest_and_the_way_out_are_reported(fitter):
    result = fitter.fit(MiB)
    assert result.fits == [] and result.closest is not None
    assert result.closest.peak > result.usable
    assert result.closest.candidate.precision == "bf16-sr"  # the smallest tensors searched
    text = " ".join(result.advice)
    assert "a budget of at least" in text and "no split of the batch can fit" in text and "offloading" in text


def test_every_optimizer_choice_has_a_penalty_and_each_measured_one_cites_a_study_that_exists():
    assert set(penalties.OPTIMIZER_PENALTIES) == set(OPTIMIZERS)
    tables = [penalties.OPTIMIZER_PENALTIES, penalties.PRECISION_PENALTIES, penalties.SPARSITY_PENALTIES]
    for entry in [*(e for table in tables for e in table.values()), penalties.EXACT_TECHNIQUES]:
        if entry.measured and entry.nats:
            path, _, section = entry.study.partition(", ")
            assert section.strip('"') in (ROOT / path).read_text(), entry.study
        elif not entry.measured:
            assert entry.study == "unmeasured"
    assert penalties.combined([penalties.OPTIMIZER_PENALTIES["adamw8bit"], penalties.UNMEASURED]).nats is None


def test_calibration_times_the_real_steps():
    from memopt.harness.memory.speed import SpeedModel, calibrate

    workload = preset_workload("tiny", 32, 256)
    model = calibrate(SpeedModel.nominal(workload, 231_744, "cpu"), workload, "cpu", ["fp32", "bf16-sr"],
                      {"adamw": ("adamw", {"lr": 1e-3})}, repeats=1)  # fmt: skip
    assert model.calibrated and model.rate["fp32"] > 0 and model.rate["bf16-sr"] > 0
    assert model.optimizer_time["adamw"] > 0 and model.recompute >= 0
    slow = model.tokens_per_second("adamw", "fp32", True, 1, 8, 0)
    assert slow < model.tokens_per_second("adamw", "fp32", False, 8, 1, 0)


# ------------------------------------------------------------------------------------------ command line


def _fit(*argv):
    from memopt.harness.cli import main

    return main(["fit", "--preset", "tiny", "--seq-len", "32", "--batch-size", "8", "--vocab-size", "512",
                 "--device", "cpu", "--optimizers", "adamw8bit", "--param-dtype", "fp32", *argv])  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--budget", "0"], "--budget '0': must be positive"),
     (["--budget", "24Gx"], "--budget '24Gx': give a size with a unit"),
     (["--budget", "1GiB", "--device", "tpu"], "--device 'tpu'"),
     (["--budget", "1GiB", "--optimizers", "adamw9bit"], "--optimizers 'adamw9bit': not a choice of memopt fit")],
)  # fmt: skip
def test_bad_input_on_the_command_line(argv, message, capsys):
    assert _fit(*argv) == 2
    assert message in capsys.readouterr().err


def test_nothing_fits_on_the_command_line(capsys):
    assert _fit("--budget", "1MiB") == 1
    out = capsys.readouterr().out
    assert "nothing fits." in out and "closest: adamw8bit fp32 1x8" in out and "what would make one fit" in out


def test_the_printed_command_trains(tmp_path, capsys):
    from memopt.harness.cli import main

    common = ["--data", "builtin:python-reference", "--cache-dir", str(tmp_path / "cache"), "--max-steps", "1",
              "--eval-batches", "1", "--out", str(tmp_path / "run"), "--quiet"]  # fmt: skip
    assert _fit("--budget", "4MiB", *common) == 0
    printed = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("    memopt train")]
    assert printed and "--grad-accum" in printed[0]
    assert main(printed[0][1:]) == 0  # the first printed command, as printed
    assert (tmp_path / "run" / "result.json").exists()


# ------------------------------------------------------------------------------------------ offload


def test_offload_is_searched_only_where_memopt_train_takes_it():
    axes = Axes(choices=("adamw", "adafactor"), precisions=FIT_PRECISIONS, offload=("none", "cpu", "disk"))
    found = axes.candidates(2)
    offloaded = {(c.choice, c.precision, c.offload) for c in found if c.offload != "none"}
    assert offloaded == {("adamw", p, t) for p in ("fp32", "bf16-autocast", "bf16-master") for t in ("cpu", "disk")}
    assert {c.choice for c in found if c.offload == "none"} == {"adamw", "adafactor"}  # not engine: never offloaded
    with pytest.raises(ConfigError, match="no configuration searched can be offloaded"):
        Axes(choices=("adafactor",), offload=("disk",)).candidates(2)
    with pytest.raises(ConfigError, match="--offload cpu with --device cpu"):
        Fitter(preset_workload("tiny", 32, 256), 2, Axes(choices=("adamw",), precisions=("fp32",), offload=("cpu",)))


def test_offload_on_a_gpu_moves_state_and_masters_off_the_device_and_costs_link_and_disk_time():
    """Planned for CUDA (CPU tensors of the same shapes): the offloaded peak is the plain one less the state and
    masters; host RAM holds them (cpu tier) or the window (disk), the disk holds them; the speed model charges
    2 x parameter bytes over the link, and the disk tier 2 x offloaded bytes more."""
    from memopt.harness.memory.speed import DISK_BANDWIDTH, LINK_BANDWIDTH, NOMINAL

    workload = preset_workload("tiny", 32, 256)
    axes = Axes(choices=("adamw",), precisions=("fp32",), checkpointing=(False,), microbatches=(1,),
                offload=("none", "cpu", "disk"))  # fmt: skip
    fitter = Fitter(workload, 2, axes, device="cuda")
    items = {s.candidate.offload: s for s in fitter.scored}
    params = sum(p.numel() for p in workload.build().parameters())
    state, master = 8 * params, 4 * params  # AdamW's two fp32 moments; the fp32 master a CUDA parameter gets
    # the device keeps no master without offload; its state template also counts a few bytes of step counters
    assert 0 <= items["none"].resident - items["cpu"].resident - state <= 256
    assert items["cpu"].host_ram == state + master and items["cpu"].disk == 0
    assert items["disk"].disk == state + master and 0 < items["disk"].host_ram < state + master
    seconds = {k: fitter.batch * fitter.speed.tokens_per_sample / v.tokens_per_s for k, v in items.items()}
    update = items["none"].resident
    link = 2 * 4 * params / LINK_BANDWIDTH
    host_update = 2 * update / NOMINAL["cpu"]["bandwidth"]  # the update runs on the host
    expected_cpu = seconds["none"] - 2 * update / NOMINAL["cuda"]["bandwidth"] + host_update
    assert seconds["cpu"] == pytest.approx(expected_cpu + link)
    assert seconds["disk"] == pytest.approx(seconds["cpu"] + 2 * (state + master) / DISK_BANDWIDTH)


def test_a_budget_only_offload_meets_chooses_it_and_its_command_trains(tmp_path, capsys):
    """On the CPU device the disk tier keeps a window of three parameters' state in memory: at 2.6 MiB nothing
    fits without it (the smallest plain peak is 2.8 MiB), and the offloaded configuration's command trains."""
    from memopt.harness.cli import main

    argv = ["fit", "--preset", "tiny", "--seq-len", "32", "--batch-size", "8", "--vocab-size", "512", "--device",
            "cpu", "--optimizers", "adamw", "--param-dtype", "fp32", "--budget", "2.6MiB", "--data",
            "builtin:python-reference",
            "--cache-dir", str(tmp_path / "cache"), "--max-steps", "2", "--eval-batches", "1",
            "--out", str(tmp_path / "run"), "--quiet"]  # fmt: skip
    assert main([*argv, "--offload", "none"]) == 1
    assert "nothing fits." in capsys.readouterr().out
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "offload to disk: host RAM 0.0 MiB, disk 1.3 MiB" in out
    printed = [line.split() for line in out.splitlines() if line.startswith("    memopt train")]
    assert printed[0][-2:] == ["--offload", "disk"] and "adamw" in printed[0]
    assert main(printed[0][1:]) == 0
    assert (tmp_path / "run" / "result.json").exists() and any((tmp_path / "run" / "optimizer-state").iterdir())
