"""The wildfire CA (PyTorchFire) on synthetic landscapes: the paper's spread rule, differentiability
(autograd against finite differences), the strip layout, noise, and calibration from noise-free frames."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

pytestmark = pytest.mark.skipif(importlib.util.find_spec("pytorchfire") is None, reason="needs pytorchfire")

from memopt.harness.problems import wildfire as wf  # noqa: E402
from memopt.registry.specs import build_optimizer  # noqa: E402

PARAMS = {"a": 0.05, "p_h": 0.5, "c_1": 0.04, "c_2": 0.1}


def reference_p_ignite(env, params, burning):
    """Alexandridis et al. (2008) as written: p = 1 - prod over burning neighbours of (1 - p_propagate), with
    p_propagate = tanh(1.1486328125 p_h (1+p_veg)(1+p_den) p_w p_s) (PyTorchFire's squashing), p_s = exp(a
    slope), p_w = exp(c_1 V) exp(c_2 V (cos(angle between wind and spread) - 1)); the
    direction of spread from the burning cell, in degrees counterclockwise from East. The slope is PyTorchFire's
    ``slope[i, j, 1 - di, 1 - dj]`` for a source at offset ``(di, dj)``: the slope from the cell onward in the
    direction of spread (Alexandridis et al. take the slope between the two cells)."""
    h, w = burning.shape
    out = torch.zeros(h, w, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            survive = 1.0
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    if (di, dj) == (0, 0):
                        continue
                    si, sj = i + di, j + dj  # the burning source
                    if not (0 <= si < h and 0 <= sj < w) or not burning[si, sj]:
                        continue
                    spread = math.degrees(math.atan2(di, -dj)) % 360  # from source to (i, j); rows grow south
                    v = float(env["wind_velocity"][i, j])
                    theta = math.radians(spread - float(env["wind_towards_direction"][i, j]))
                    p_w = math.exp(params["c_1"] * v) * math.exp(params["c_2"] * v * (math.cos(theta) - 1))
                    p_s = math.exp(params["a"] * float(env["slope"][i, j, 1 - di, 1 - dj]))
                    base = params["p_h"] * (1 + float(env["p_veg"][i, j])) * (1 + float(env["p_den"][i, j]))
                    survive *= 1 - math.tanh(1.1486328125 * base * p_w * p_s)
            out[i, j] = 1 - survive
    return out


def test_p_ignite_is_the_papers_rule():
    env = wf.synthetic_landscape(10, seed=3, dtype=torch.float64)
    model = wf.make_model(env, PARAMS)
    burning = torch.rand(10, 10, generator=torch.Generator().manual_seed(0)) < 0.3
    model.state = torch.stack([burning, torch.zeros_like(burning)])
    ours = model.p_ignite().detach()
    assert torch.allclose(ours, reference_p_ignite(env, PARAMS, burning), atol=1e-12)


def _accumulator_sum(values: dict[str, float], env, seed: int = 4, steps: int = 6) -> torch.Tensor:
    model = wf.make_model(env, values)
    model.train()
    model.reset(seed=seed)
    for _ in range(steps):
        model.compute(attach=True)
    return model.accumulator.sum(), model


@pytest.mark.parametrize("name", wf.PARAMS)
def test_rollout_gradients_match_finite_differences(name):
    env = wf.synthetic_landscape(12, seed=1, dtype=torch.float64)
    value, model = _accumulator_sum(PARAMS, env)
    value.backward()
    grad = float(getattr(model, name).grad)
    h = 1e-6  # small enough that no random threshold is crossed: the rollout is locally smooth
    plus, _ = _accumulator_sum({**PARAMS, name: PARAMS[name] + h}, env)
    minus, _ = _accumulator_sum({**PARAMS, name: PARAMS[name] - h}, env)
    fd = (float(plus.detach()) - float(minus.detach())) / (2 * h)
    assert grad != 0 and grad == pytest.approx(fd, rel=1e-6)


def test_transition_nll_gradients_match_finite_differences():
    env = wf.synthetic_landscape(12, seed=2, dtype=torch.float64)
    frames = wf.simulate(wf.make_model(env, wf.SPETSES), 6, seed=0)
    strip = wf.strip_env(env, 6)

    def nll(values):
        model = wf.make_model(strip, values)
        return wf.transition_nll(model, frames[:-1], frames[1:]), model

    loss, model = nll(PARAMS)
    loss.backward()
    for name in wf.PARAMS:
        h = 1e-6
        plus, minus = nll({**PARAMS, name: PARAMS[name] + h})[0], nll({**PARAMS, name: PARAMS[name] - h})[0]
        fd = float(plus.detach() - minus.detach())
        assert float(getattr(model, name).grad) == pytest.approx(fd / (2 * h), rel=1e-6), name


def test_the_strip_evaluates_each_frame_independently():
    env = wf.synthetic_landscape(12, seed=5, dtype=torch.float64)
    frames = wf.simulate(wf.make_model(env, wf.SPETSES), 5, seed=1)
    strip = wf.make_model(wf.strip_env(env, 5), PARAMS)
    strip.state = wf.to_strip(frames[:-1])
    together = strip.p_ignite().detach()
    single = wf.make_model(env, PARAMS)
    for k in range(5):
        single.state = frames[k]
        alone = single.p_ignite().detach()
        assert torch.equal(together[:, k * 13 : k * 13 + 12], alone)
        assert not together[:, k * 13 + 12].any()  # the fire-break column never ignites


def test_noise_free_observations_are_the_frames_and_flips_are_counted():
    frames = wf.simulate(wf.make_model(wf.synthetic_landscape(16, seed=0), wf.SPETSES), 8, seed=0)
    assert torch.equal(wf.observe(frames, 0.0, seed=0), frames)
    noisy = wf.observe(frames, 0.2, seed=0)
    changed = (wf.burned_area(noisy) != wf.burned_area(frames))[1:].float().mean()
    assert 0.15 < float(changed) < 0.25 and torch.equal(noisy[0], frames[0])
    with pytest.raises(ValueError, match="flip"):
        wf.observe(frames, 0.6, seed=0)


def test_calibration_recovers_the_parameters_from_noise_free_frames():
    """Full-batch AdamW on the transition likelihood of one 24x24 fire over 16 steps, from PyTorchFire's defaults:
    the relative parameter error falls from 1.0 to below 10% (the rest is the finite sample's MLE error)."""
    env = wf.synthetic_landscape(24, seed=0)
    frames = wf.simulate(wf.make_model(env, wf.SPETSES), 16, seed=1)
    start = {"a": 0.0, "p_h": 0.3, "c_1": 0.0, "c_2": 0.0}
    model = wf.make_model(wf.strip_env(env, 16), start)
    optimizer = build_optimizer(model, "adamw", lr=0.01, weight_decay=0.0)
    result = wf.calibrate(model, frames, optimizer, steps=100)
    assert wf.relative_error(result.params[0], wf.SPETSES) > 0.5
    assert wf.relative_error(result.params[-1], wf.SPETSES) < 0.10
    assert len(result.seconds) == 101 and result.seconds[-1] > 0


def test_bad_inputs_are_refused():
    env = wf.synthetic_landscape(12, seed=0)
    frames = wf.simulate(wf.make_model(env, wf.SPETSES), 4, seed=0)
    with pytest.raises(ValueError, match="strip_env"):
        wf.transition_nll(wf.make_model(env, PARAMS), frames[:-1], frames[1:])
    with pytest.raises(ValueError, match="lacks"):
        wf.make_model(env, {"a": 0.1})
    with pytest.raises(ValueError, match="size"):
        wf.synthetic_landscape(4, seed=0)
