"""Simulated multi-coil MRI: the SENSE operator is adjoint-consistent, DC layers keep the sampled k-space,
masks have the requested acceleration, CS by FISTA beats zero filling, and the CIRIM runs both DC kinds."""

from __future__ import annotations

import importlib.util

import pytest
import torch

needs = [m for m in ("skimage", "sigpy", "pywt") if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(bool(needs), reason=f"needs {needs}")

from memopt.harness.problems import mri  # noqa: E402
from memopt.harness.problems.cirim import CIRIM  # noqa: E402

N = 32


def _random_complex(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(*shape, generator=g, dtype=torch.float64),
                         torch.randn(*shape, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("kind", ["cartesian", "poisson"])
def test_forward_operator_is_adjoint_consistent(kind):
    n = 48  # sigpy's Poisson disc needs room around the 12x12 calibration region
    sens = mri.coil_maps(4, n)
    mask = (mri.cartesian_mask(n, 4, seed=0) if kind == "cartesian" else mri.poisson_mask(n, 4, seed=0)).double()
    x, y = _random_complex(2, n, n, seed=1), _random_complex(2, 4, n, n, seed=2)
    lhs = torch.vdot(mri.forward(x, sens, mask).flatten(), y.flatten())
    rhs = torch.vdot(x.flatten(), mri.adjoint(y, sens, mask).flatten())
    assert abs(lhs - rhs) <= 1e-6 * abs(lhs) and abs(lhs) > 1


def test_coil_maps_are_normalised_and_full_sampling_is_lossless():
    sens = mri.coil_maps(4, N)
    assert torch.allclose((sens.abs() ** 2).sum(0), torch.ones(N, N, dtype=torch.float64))
    x = _random_complex(N, N, seed=3)
    full = torch.ones(N, N, dtype=torch.float64)
    assert torch.allclose(mri.adjoint(mri.forward(x, sens, full), sens, full), x, atol=1e-12)


def test_dc_layers_leave_the_sampled_kspace_consistent():
    sens, mask = mri.coil_maps(4, N), mri.cartesian_mask(N, 4, seed=5).double()
    x_true, x_other = _random_complex(N, N, seed=6), _random_complex(N, N, seed=7)
    measured = mri.forward(x_true, sens, mask)
    k = mri.fft2c(sens * x_other)
    hard = mri.data_consistency(k, measured, mask)
    assert torch.allclose(mask * hard, measured, atol=1e-12)  # sampled entries are the measurements
    assert torch.equal((1 - mask) * hard, (1 - mask) * k)  # the others are untouched
    soft = mri.data_consistency(k, measured, mask, weight=0.25)
    assert torch.allclose(mask * soft, mask * (0.75 * k + 0.25 * measured), atol=1e-12)
    # the image-domain layer: coil-combining a DC'd k-space of S x keeps M F(S x_dc) = y when x_dc = x_true
    x_dc = mri.dc_image(x_true, measured, sens, mask)
    assert torch.allclose(mri.forward(x_dc, sens, mask), measured, atol=1e-10)


@pytest.mark.parametrize("acceleration", [4, 8])
def test_masks_have_the_requested_acceleration(acceleration):
    cart = mri.cartesian_mask(64, acceleration, seed=0)
    assert 64 * 64 / float(cart.sum()) == pytest.approx(acceleration, rel=0.05)
    assert (cart[:, 30:34] == 1).all() and torch.equal(cart[0], cart[17])  # centre lines, whole columns
    poisson = mri.poisson_mask(64, acceleration, seed=0)
    assert 64 * 64 / float(poisson.sum()) == pytest.approx(acceleration, rel=0.15)
    with pytest.raises(ValueError, match="acceleration"):
        mri.cartesian_mask(64, 0.5, seed=0)


def test_wavelet_is_orthonormal_and_cs_beats_zero_filling():
    n = 48
    wavelet = mri.Wavelet(n)
    x = _random_complex(n, n, seed=8)
    c = wavelet.analysis(x)
    assert torch.allclose(wavelet.synthesis(c), x, atol=1e-10) and float(c.norm()) == pytest.approx(float(x.norm()))
    names, images = mri.test_images(n)
    phantom = images[names.index("shepp_logan_phantom")].to(torch.complex128)
    sens, mask = mri.coil_maps(4, n), mri.poisson_mask(n, 4, seed=1).double()
    y = mri.acquire(phantom, sens, mask, noise=0.0, seed=0)
    zero_filled = mri.psnr_ssim(phantom, mri.adjoint(y, sens, mask))
    cs = mri.psnr_ssim(phantom, mri.compressed_sensing(y, sens, mask, lam=1e-3, steps=60, wavelet=wavelet))
    assert cs[0] > zero_filled[0] + 3 and cs[1] > zero_filled[1]


@pytest.mark.parametrize("dc", ["implicit", "explicit"])
def test_cirim_runs_and_learns_its_dc_weight(dc):
    torch.manual_seed(0)
    model = CIRIM(cascades=2, steps=2, hidden=4, dc=dc)
    sens = mri.coil_maps(2, 16).to(torch.complex64)
    mask = mri.cartesian_mask(16, 4, seed=0)
    x = _random_complex(2, 16, 16, seed=9).to(torch.complex64)
    outputs = model(mri.forward(x, sens, mask), sens, mask)
    assert len(outputs) == 2 and outputs[-1].shape == x.shape and outputs[-1].dtype == torch.complex64
    loss = (outputs[-1] - x).abs().mean()
    loss.backward()
    assert (model.dc_weight is None) == (dc == "implicit")
    if dc == "explicit":
        assert model.dc_weight.grad is not None and torch.isfinite(model.dc_weight.grad).all()
    with pytest.raises(ValueError, match="dc must be"):
        CIRIM(dc="hard")
