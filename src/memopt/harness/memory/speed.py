"""A cost model of training speed for ``memopt fit``: what recomputation, smaller microbatches, the precision
and the optimizer's step cost, in tokens per second, and its calibration by short timed steps.

The model of one optimizer step of ``m`` microbatches of ``u`` sequences:

    time = m * (overhead + u * seq_flops * (3 + checkpointing) / rate[precision]) + optimizer_time[optimizer]

* ``seq_flops`` is one sequence's forward FLOPs: ``seq_len * (2 N + 2 L seq_len d)`` for a language model
  (N parameters outside the embeddings, L layers of width d: Kaplan et al. 2020, "Scaling Laws for Neural
  Language Models", arXiv 2001.08361, Table 1); ``2 N`` per sample for another model. A backward pass costs
  two forwards, so training costs three, and activation checkpointing adds a fourth (the recomputation).
* ``overhead`` is a microbatch's fixed cost (kernel launches, Python), which makes small microbatches slow.
* ``optimizer_time`` is the update's cost, paid once per step whatever the split.
* An offloaded step (:mod:`memopt.offload`) updates on the host, so its update costs the nominal model at the
  host's bandwidth (:data:`NOMINAL` ``"cpu"``) instead of the device's, plus, on a GPU, the gradients going to
  the host and the parameters coming back over the host link (``2 * parameter bytes / link``), plus, on the
  disk tier, the state and masters read and written once (``2 * offloaded bytes / disk``). No overlap with
  the backward pass is credited (the hooks do overlap it): an upper bound of the cost.

Uncalibrated, the model uses nominal figures (:data:`NOMINAL`): an effective rate, a fixed overhead, and an
optimizer update that moves its parameters, gradients and state through memory at a nominal bandwidth, the
same for every precision. They rank configurations, and their tokens/s are rough: ``--calibrate`` replaces
them by timed steps of the real model on the device (:func:`calibrate`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from memopt.harness.memory.techniques import Techniques
from memopt.harness.memory.workloads import Workload

#: nominal effective rate (FLOP/s), per-microbatch overhead (s) and memory bandwidth (B/s) per device type
NOMINAL = {
    "cuda": {"rate": 1e14, "overhead": 3e-3, "bandwidth": 1e12},
    "cpu": {"rate": 5e10, "overhead": 2e-2, "bandwidth": 1e10},
}
#: nominal host link (B/s: PCIe 4.0 x16 in practice) and disk bandwidth (B/s: a modest NVMe SSD) of offload
LINK_BANDWIDTH = 2e10
DISK_BANDWIDTH = 1e9


def forward_flops(workload: Workload, num_params: int) -> float:
    """One sample's forward FLOPs (see the module docstring)."""
    info = workload.info
    if info.get("seq_len") and info.get("hidden_size") and info.get("num_hidden_layers"):
        seq, width, layers = info["seq_len"], info["hidden_size"], info["num_hidden_layers"]
        non_embedding = max(num_params - 2 * info.get("vocab_size", 0) * width, num_params // 2)
        return seq * (2 * non_embedding + 2 * layers * seq * width)
    return 2.0 * num_params


@dataclass
class SpeedModel:
    """The cost model's constants (see the module docstring).

    Attributes:
        seq_flops: one sample's forward FLOPs.
        tokens_per_sample: tokens in one sample (sequence length; 1 for other models).
        rate: effective FLOP/s per precision (the key ``"*"`` for any precision not listed).
        overhead: seconds per microbatch.
        recompute: extra forwards that checkpointing costs, in units of one forward.
        optimizer_time: seconds of an update per optimizer choice (the key ``"*"`` for the nominal
            bandwidth model).
        bandwidth: bytes/s of the nominal optimizer model.
        on_host: whether the device is the host (offload to "cpu" crosses no link).
        calibrated: whether timed steps set the constants.
    """

    seq_flops: float
    tokens_per_sample: int
    rate: dict[str, float]
    overhead: float
    recompute: float = 1.0
    optimizer_time: dict[str, float] = field(default_factory=dict)
    bandwidth: float = 1e10
    calibrated: bool = False
    on_host: bool = True  # the device is the host (a CPU run): offload crosses no link

    @classmethod
    def nominal(cls, workload: Workload, num_params: int, device: str) -> SpeedModel:
        """The uncalibrated model for ``device`` (``"cpu"`` or ``"cuda"``)."""
        figures = NOMINAL["cuda" if device.startswith("cuda") else "cpu"]
        return cls(
            forward_flops(workload, num_params),
            int(workload.sample_shape[0]) if workload.info.get("seq_len") else 1,
            {"*": figures["rate"]},
            figures["overhead"],
            bandwidth=figures["bandwidth"],
            on_host=not device.startswith("cuda"),
        )

    def step_seconds(self, choice: str, precision: str, checkpointing: bool, microbatch: int, microbatches: int,
                     update_bytes: int, offload: str = "none", offloaded_bytes: int = 0,
                     param_bytes: int = 0) -> float:  # fmt: skip
        """Seconds of one optimizer step; ``update_bytes`` (parameters, gradients and state) feeds the
        nominal optimizer model when ``choice`` was not timed. ``offload`` (``"cpu"``/``"disk"``): the state
        and masters (``offloaded_bytes``) live off the device and ``param_bytes`` cross the host link."""
        rate = self.rate.get(precision, self.rate["*"])
        passes = 3.0 + (self.recompute if checkpointing else 0.0)
        compute = microbatches * (self.overhead + microbatch * self.seq_flops * passes / rate)
        if offload != "none":
            update = 2 * update_bytes / NOMINAL["cpu"]["bandwidth"]
            if not self.on_host:
                update += 2 * param_bytes / LINK_BANDWIDTH
            if offload == "disk":
                update += 2 * offloaded_bytes / DISK_BANDWIDTH
            return compute + update
        update = self.optimizer_time.get(choice)
        if update is None:
            update = 2 * update_bytes / self.bandwidth
        return compute + update

    def tokens_per_second(self, choice: str, precision: str, checkpointing: bool, microbatch: int,
                          microbatches: int, update_bytes: int, offload: str = "none", offloaded_bytes: int = 0,
                          param_bytes: int = 0) -> float:  # fmt: skip
        """Tokens (samples for other models) per second of the configuration."""
        seconds = self.step_seconds(choice, precision, checkpointing, microbatch, microbatches, update_bytes,
                                    offload, offloaded_bytes, param_bytes)  # fmt: skip
        return microbatch * microbatches * self.tokens_per_sample / seconds


def _timed(run, repeats: int) -> float:
    """The fastest of ``repeats`` timings of ``run()`` after one warm-up call (the fastest is the least
    disturbed by other jobs on a shared machine)."""
    run()
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - began)
    return best


def calibrate(
    model: SpeedModel,
    workload: Workload,
    device: str,
    precisions: Iterable[str],
    optimizers: dict[str, tuple[str, dict[str, Any]]],
    *,
    repeats: int = 2,
) -> SpeedModel:
    """Time short steps of the real model on ``device`` and set ``model``'s constants from them.

    Forward and backward of 1 and 2 samples (fp32) give the overhead and the per-sample cost; 2 samples
    with checkpointing the recomputation; 2 samples in each other precision its rate; one update of each
    optimizer choice (``choice -> (registry name, hparams)``) its time. ``repeats`` timings each after a
    warm-up, the fastest kept.
    """
    from memopt.harness.memory.profile import build_optimizer, prepare_model, resolve_device

    dev = resolve_device(device, fake=False)

    def fwd_bwd_seconds(techniques: Techniques, samples: int) -> float:
        torch.manual_seed(0)
        with torch.device(dev):
            net, _ = prepare_model(workload, techniques)
        inputs = workload.batch(samples, dev)

        def run():
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=techniques.autocast):
                loss = workload.loss(net, inputs)
            loss.backward()
            net.zero_grad(set_to_none=True)

        return _timed(run, repeats)

    one, two = fwd_bwd_seconds(Techniques(), 1), fwd_bwd_seconds(Techniques(), 2)
    per_sample = max(two - one, 1e-9)
    model.overhead = max(one - per_sample, 0.0)
    fp32_rate = 3 * model.seq_flops / per_sample
    model.rate = {"*": fp32_rate, "fp32": fp32_rate}
    recomputed = fwd_bwd_seconds(Techniques(checkpointing=True), 2)
    model.recompute = max((recomputed - model.overhead) / (per_sample * 2) * 3 - 3, 0.0)
    for precision in set(precisions) - {"fp32"}:
        seconds = fwd_bwd_seconds(Techniques(precision=precision), 2) - model.overhead
        model.rate[precision] = 3 * model.seq_flops * 2 / max(seconds, 1e-9)
    for choice, (name, hparams) in optimizers.items():
        torch.manual_seed(0)
        with torch.device(dev):
            net, master = prepare_model(workload, Techniques())
        opt = build_optimizer(net, master, name, hparams, Techniques())
        for p in net.parameters():
            p.grad = torch.randn_like(p) * 1e-3

        def update(opt=opt):
            opt.step()

        model.optimizer_time[choice] = _timed(update, repeats)
    model.calibrated = True
    return model
