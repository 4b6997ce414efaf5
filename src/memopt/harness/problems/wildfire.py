"""Wildfire spread on synthetic landscapes with PyTorchFire's differentiable cellular automaton.

The simulator is ``pytorchfire.WildfireModel`` (Xia & Cheng, "PyTorchFire: A GPU-Accelerated Wildfire Simulator
with Differentiable Cellular Automata", arXiv 2502.18738; PyPI ``pytorchfire``, ``pip install 'memopt[apps]'``),
which implements the CA of Alexandridis et al. (2008): a burning cell ignites a burnable neighbour with

    p_propagate = tanh(1.1486 * p_h (1 + p_veg)(1 + p_den) p_w p_s),
    p_w = exp(c_1 V) exp(c_2 V (cos(theta) - 1)),   p_s = exp(a * slope[deg]),

and a cell ignites with ``1 - prod_j (1 - p_propagate_j)`` over its burning neighbours ``j``; a burning cell
goes out with probability ``1 - p_continue``. The four calibrated parameters are ``a, p_h, c_1, c_2``.

What this module adds: seeded synthetic landscapes (vegetation and density classes, a smooth elevation, a
wind field), observed fires (simulated frames, optionally corrupted by random cell flips), and the
calibration objective :func:`transition_nll`, the exact negative log-likelihood of the observed one-step
ignitions under the CA given the observed previous frame. It is differentiable in the parameters through
``WildfireModel.p_ignite`` and, unlike a loss on a simulated rollout, has the true parameters as its
population minimizer (the rollout is random; its burn map is not a smooth function of the parameters).
"""

from __future__ import annotations

import importlib
import math
import time
from dataclasses import dataclass

import torch
from torch import nn

#: the calibrated parameters of the CA, in the package's names
PARAMS = ("a", "p_h", "c_1", "c_2")
#: the values Alexandridis et al. (2008) fitted to the 1990 Spetses fire: a, p_h, c_1, c_2
SPETSES = {"a": 0.078, "p_h": 0.58, "c_1": 0.045, "c_2": 0.131}
#: PyTorchFire's box constraints (its ``BaseTrainer.backward`` clamps to these after every step)
BOUNDS = {"a": (0.0, 1.0), "p_h": (0.2, 1.0), "c_1": (0.0, 1.0), "c_2": (0.0, 1.0)}


def pytorchfire():
    """The ``pytorchfire`` module, or ``ImportError`` saying how to install it."""
    try:
        return importlib.import_module("pytorchfire")
    except ImportError as error:
        raise ImportError(
            "The wildfire study needs PyTorchFire: pip install 'memopt[apps]' (or pip install pytorchfire)."
        ) from error


def _smooth_field(size: int, generator: torch.Generator, scale: float, dtype: torch.dtype) -> torch.Tensor:
    """Gaussian noise low-pass filtered with a Gaussian of width ``scale`` cells (FFT), scaled to [-1, 1]."""
    noise = torch.randn(size, size, generator=generator, dtype=torch.float64)
    freqs = torch.fft.fftfreq(size, dtype=torch.float64)
    k2 = freqs[:, None] ** 2 + freqs[None, :] ** 2
    field = torch.fft.ifft2(torch.fft.fft2(noise) * torch.exp(-2 * (math.pi * scale) ** 2 * k2)).real
    field = field - field.min()
    return (2 * field / field.max() - 1).to(dtype)


def synthetic_landscape(size: int, seed: int, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """A seeded ``size x size`` landscape as PyTorchFire's ``env_data``.

    Vegetation and density are three classes each, with Alexandridis et al.'s values (p_veg in {-0.3, 0, 0.4},
    p_den in {-0.4, 0, 0.3}), thresholded from smooth random fields; elevation is a smooth field of amplitude
    60 m on 30 m cells (slopes of a few degrees); the wind blows towards a seeded direction at 1-9 m/s with
    smooth local variation of +-30 degrees. The fire starts in a 2 x 2 block at the centre.
    """
    if size < 8:
        raise ValueError(f"size must be >= 8 cells, got {size}.")
    g = torch.Generator().manual_seed(seed)
    veg_field, den_field = _smooth_field(size, g, size / 10, dtype), _smooth_field(size, g, size / 12, dtype)
    p_veg = torch.where(veg_field < -0.3, -0.3, torch.where(veg_field < 0.3, 0.0, 0.4)).to(dtype)
    p_den = torch.where(den_field < -0.3, -0.4, torch.where(den_field < 0.3, 0.0, 0.3)).to(dtype)
    elevation = 60.0 * _smooth_field(size, g, size / 6, torch.float32)
    slope = pytorchfire().utils.calculate_slope(elevation, torch.tensor(30.0)).to(dtype)
    direction = float(torch.rand((), generator=g, dtype=torch.float64)) * 360
    wind_direction = (direction + 30.0 * _smooth_field(size, g, size / 4, dtype)) % 360
    wind_velocity = 5.0 + 4.0 * _smooth_field(size, g, size / 4, dtype)
    ignition = torch.zeros(size, size, dtype=torch.bool)
    c = size // 2
    ignition[c - 1 : c + 1, c - 1 : c + 1] = True
    return {
        "p_veg": p_veg,
        "p_den": p_den,
        "wind_velocity": wind_velocity,
        "wind_towards_direction": wind_direction,
        "slope": slope,
        "initial_ignition": ignition,
    }


def make_model(env: dict[str, torch.Tensor], params: dict[str, float], p_continue: float = 0.3) -> nn.Module:
    """A ``pytorchfire.WildfireModel`` on ``env`` with parameters ``params`` (dtype of ``env['p_veg']``)."""
    missing = [k for k in PARAMS if k not in params]
    if missing:
        raise ValueError(f"params lacks {missing}; give all of {PARAMS}.")
    dtype = env["p_veg"].dtype
    values = {k: torch.tensor(float(params[k]), dtype=dtype) for k in PARAMS}
    values["p_continue"] = torch.tensor(p_continue, dtype=dtype)
    return pytorchfire().WildfireModel(env_data=dict(env), params=values)


def parameters_of(model: nn.Module) -> dict[str, float]:
    return {k: float(getattr(model, k).detach()) for k in PARAMS}


def simulate(model: nn.Module, steps: int, seed: int) -> torch.Tensor:
    """Run the CA ``steps`` steps from its initial ignition; frames ``[steps + 1, 2, H, W]`` (bool: burning,
    burned), frame 0 the ignition. The random stream is ``torch.manual_seed(seed)`` (PyTorchFire draws from
    torch's global generator)."""
    model.reset(seed=seed)
    frames = [model.state.clone()]
    with torch.no_grad():
        for _ in range(steps):
            model.compute()
            frames.append(model.state.clone())
    return torch.stack(frames)


def observe(frames: torch.Tensor, flip: float, seed: int) -> torch.Tensor:
    """Noisy observations: every cell of every frame after the first changes its label with probability
    ``flip``, to burning (if it was unburnt) or to unburnt (if it was burning or burned)."""
    if not 0 <= flip < 0.5:
        raise ValueError(f"flip must be in [0, 0.5), got {flip}.")
    if flip == 0:
        return frames.clone()
    g = torch.Generator().manual_seed(seed)
    noisy = frames.clone()
    flips = torch.rand(noisy.shape[0], *noisy.shape[2:], generator=g) < flip
    flips[0] = False
    affected = noisy[:, 0] | noisy[:, 1]
    noisy[:, 0] = torch.where(flips, ~affected, noisy[:, 0])
    noisy[:, 1] = torch.where(flips, torch.zeros_like(flips), noisy[:, 1])
    return noisy


def strip_env(env: dict[str, torch.Tensor], copies: int) -> dict[str, torch.Tensor]:
    """``copies`` side-by-side copies of the landscape ``env``, each followed by one fire-break column (no
    vegetation: ``p_veg = -1`` makes ``p_propagate = 0`` there), so that one ``p_ignite`` call evaluates the
    CA on ``copies`` independent states. Ignition: none (states are set by :func:`transition_nll`)."""
    if copies < 1:
        raise ValueError(f"copies must be >= 1, got {copies}.")
    out = {}
    for key, value in env.items():
        gap_value = -1.0 if key == "p_veg" else 0
        gap = torch.full_like(value[:, :1], gap_value)
        out[key] = torch.cat([torch.cat([value, gap], dim=1)] * copies, dim=1)
    out["initial_ignition"] = torch.zeros_like(out["initial_ignition"])
    return out


def to_strip(maps: torch.Tensor) -> torch.Tensor:
    """``[n, ..., H, W]`` -> ``[..., H, n (W + 1)]``, the layout of :func:`strip_env` (gap columns zero/False)."""
    gap = torch.zeros_like(maps[..., :1])
    padded = torch.cat([maps, gap], dim=-1)
    return torch.cat(padded.unbind(0), dim=-1)


def transition_nll(model: nn.Module, before: torch.Tensor, after: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Mean negative log-likelihood of the observed ignitions from the states ``before`` to ``after``.

    ``before``, ``after``: ``[n, 2, H, W]`` bool frames (burning, burned); ``model`` is a
    :func:`make_model` on ``strip_env(env, n)``. With ``p = model.p_ignite()`` at the state ``before``, every
    cell unburnt before and with a burning neighbour (``p > 0``) contributes
    ``-[y log p + (1 - y) log(1 - p)]``, ``y`` = burning after; the result is the mean over those cells.
    """
    if before.shape != after.shape or before.dim() != 4 or before.shape[1] != 2:
        raise ValueError(f"before and after must both be [n, 2, H, W], got {tuple(before.shape)} and "
                         f"{tuple(after.shape)}.")
    state = to_strip(before)
    if state.shape != model.state.shape:
        raise ValueError(f"the model's map is {tuple(model.state.shape[1:])} but {before.shape[0]} frames of "
                         f"{tuple(before.shape[2:])} need {tuple(state.shape[1:])}: build it on strip_env(env, n).")
    saved = model.state
    try:
        model.state = state
        p = model.p_ignite()
    finally:
        model.state = saved
    at_risk = ~(state[0] | state[1]) & (p.detach() > eps)
    if not at_risk.any():
        raise ValueError("No cell was at risk of ignition in these frames: the observed fire never spread.")
    p = p[at_risk].clamp(eps, 1 - eps)
    y = to_strip(after)[0][at_risk].to(p.dtype)
    return -(y * torch.log(p) + (1 - y) * torch.log1p(-p)).mean()


def clamp_parameters(model: nn.Module) -> None:
    """Project ``a, p_h, c_1, c_2`` onto PyTorchFire's box (:data:`BOUNDS`), as its trainer does."""
    with torch.no_grad():
        for name, (low, high) in BOUNDS.items():
            getattr(model, name).clamp_(low, high)


def burned_area(frames: torch.Tensor) -> torch.Tensor:
    """Per frame, the cells that are burning or burned: ``[T, H, W]`` bool."""
    return frames[:, 0] | frames[:, 1]


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """Intersection over union of two boolean maps (1.0 if both are empty)."""
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def relative_error(params: dict[str, float], truth: dict[str, float]) -> float:
    """``||theta - theta*||_2 / ||theta*||_2`` over :data:`PARAMS`."""
    num = sum((params[k] - truth[k]) ** 2 for k in PARAMS)
    return math.sqrt(num / sum(truth[k] ** 2 for k in PARAMS))


@dataclass
class Calibration:
    """One calibration run: the parameters after every step (entry 0 = the start) and the cumulative wall time."""

    params: list[dict[str, float]]
    seconds: list[float]


def calibrate(
    model: nn.Module,
    frames: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    steps: int,
    seed: int = 0,
) -> Calibration:
    """Minimize :func:`transition_nll` with ``optimizer`` for ``steps`` steps, projecting onto :data:`BOUNDS`
    after each. ``model`` is built on ``strip_env(env, n)``: each step draws ``n`` of the transitions of
    ``frames`` (seeded, without replacement; all of them, in order, if ``n`` equals their number)."""
    transitions = frames.shape[0] - 1
    n = model.state.shape[-1] // (frames.shape[-1] + 1)
    if not 1 <= n <= transitions:
        raise ValueError(f"the model's strip holds {n} maps; it must hold 1 to {transitions} (the transitions).")
    g = torch.Generator().manual_seed(seed)
    history, seconds, elapsed = [parameters_of(model)], [0.0], 0.0
    for _ in range(steps):
        start = time.perf_counter()
        pick = torch.arange(transitions) if n == transitions else torch.randperm(transitions, generator=g)[:n]
        loss = transition_nll(model, frames[pick], frames[pick + 1])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        clamp_parameters(model)
        elapsed += time.perf_counter() - start
        history.append(parameters_of(model))
        seconds.append(elapsed)
    return Calibration(history, seconds)
