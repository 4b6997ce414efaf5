"""``memopt memory --offload``: the offloaded plan's device peak, host RAM and disk bytes, in closed form."""

from __future__ import annotations

from memopt.harness.memory.breakdown import MemoryBreakdown
from memopt.harness.memory.offload import WINDOW, parameter_state_bytes, plan_offload
from memopt.harness.memory.techniques import Techniques
from memopt.harness.memory.workloads import preset_workload


def breakdown(device: str) -> MemoryBreakdown:
    components = {"parameters": 100, "master_weights": 0, "buffers": 0, "gradients": 100, "optimizer_state": 800,
                  "activations": 300, "temporaries": 50}  # fmt: skip
    at_peak = {**components, "optimizer_state": 700}
    return MemoryBreakdown(components, at_peak, peak=1250, mode="estimate", device=device)


def test_state_bytes_per_parameter_in_closed_form():
    workload = preset_workload("tiny", 32, 512)
    sizes = parameter_state_bytes(workload, Techniques(), "adamw", {})
    numels = [p.numel() for p in workload.build().parameters() if p.requires_grad]
    assert sorted(sizes) == sorted(8 * n for n in numels)  # two float32 moments, no master on a CPU fp32 run
    bf16 = parameter_state_bytes(workload, Techniques(precision="bf16-master"), "adamw8bit", {})
    assert sum(bf16) > 4 * sum(numels)  # the fp32 masters travel with the state


def test_plan_on_a_gpu_moves_the_state_off_the_device():
    sizes = [300, 200, 100, 100, 100]
    cpu = plan_offload(breakdown("cuda"), "cpu", sizes)
    assert (cpu.device_peak, cpu.host_ram, cpu.disk) == (1250 - 700, 800, 0)
    disk = plan_offload(breakdown("cuda"), "disk", sizes)
    assert WINDOW == 3 and disk.window == 600
    assert (disk.device_peak, disk.host_ram, disk.disk) == (1250 - 700, 600, 800)


def test_plan_on_the_cpu_keeps_only_the_window_in_ram():
    sizes = [300, 200, 100, 100, 100]
    cpu = plan_offload(breakdown("cpu"), "cpu", sizes)
    assert (cpu.device_peak, cpu.host_ram, cpu.disk) == (1250, 0, 0)
    disk = plan_offload(breakdown("cpu"), "disk", sizes)
    assert (disk.device_peak, disk.host_ram, disk.disk) == (1250 - 700 + 600, 0, 800)


def test_memopt_memory_offload_prints_and_writes_the_plan(tmp_path, capsys):
    import json

    from memopt.harness.cli import main

    path = tmp_path / "plan.json"
    argv = ["memory", "--preset", "tiny", "--seq-len", "32", "--batch-size", "8", "--no-savings", "--offload", "disk"]
    assert main([*argv, "--json", str(path)]) == 0
    assert "offload to disk: device peak" in capsys.readouterr().out
    payload = json.loads(path.read_text())
    plan, state = payload["offload"], payload["components"]["optimizer_state"]
    assert plan["disk"] == state and plan["host_ram"] == 0
    held = payload["at_peak"]["optimizer_state"]
    assert plan["device_peak"] == payload["peak"] - held + min(plan["window"], held)
