"""Simulated multi-coil MRI: images, coil sensitivities, undersampling masks, the SENSE forward operator,
data-consistency layers and a compressed-sensing baseline.

* Images: scikit-image's bundled grayscale images and the Shepp-Logan phantom (no download), resized to
  ``size x size``, given a smooth random phase (MRI images are complex) and scaled to peak magnitude 1.
* Coils: ``sigpy.mri.birdcage_maps``, normalised so that ``sum_c |S_c|^2 = 1`` where the maps are non-zero.
* Masks (centred k-space): 1-D Cartesian, random phase-encode lines with a Gaussian density and a fully
  sampled centre (hand-written below: sigpy has no Cartesian line sampler), and 2-D variable-density
  Poisson disc (``sigpy.mri.poisson``).
* Operator: ``A x = M F (S x)`` per coil, ``F`` the centred orthonormal 2-D FFT; ``A^H y = sum_c conj(S_c)
  F^H (M y_c)``. With the normalisation above ``||A|| <= 1``.
* Compressed sensing: ``min_c 1/2 ||A W^T c - y||^2 + lam ||c||_1`` with ``W`` an orthonormal wavelet
  transform (PyWavelets, periodised; real and imaginary parts), solved by :func:`memopt.convex.fista`.

Needs ``scikit-image``, ``sigpy`` and ``PyWavelets`` (``pip install 'memopt[apps]'``).
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from memopt.convex import fista, prox_l1

Tensor = torch.Tensor

#: training images (scikit-image names; colour images are converted to gray)
TRAIN_IMAGES = ("moon", "coins", "page", "text", "clock", "brick", "grass", "gravel", "astronaut", "chelsea",
                "coffee", "immunohistochemistry", "hubble_deep_field", "rocket")
#: held-out test images: the Shepp-Logan phantom and two natural images never seen in training
TEST_IMAGES = ("shepp_logan_phantom", "camera", "cell")


def _need(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"The mri study needs {module.split('.')[0]}: pip install 'memopt[apps]'.") from error


def gray_image(name: str) -> np.ndarray:
    """The scikit-image data image ``name`` as float64 gray in [0, 1]."""
    data = _need("skimage.data")
    if not hasattr(data, name):
        raise ValueError(f"skimage.data has no image {name!r}.")
    image = np.asarray(getattr(data, name)(), dtype=np.float64)
    if image.ndim == 3:
        image = _need("skimage.color").rgb2gray(image[..., :3] / (255.0 if image.max() > 1 else 1.0))
    elif image.max() > 1:
        image = image / 255.0
    return image


def smooth_phase(size: int, rng: np.random.Generator) -> np.ndarray:
    """A random phase map: a plane plus a quadratic in normalised coordinates, at most about pi/2."""
    u = np.linspace(-1, 1, size)
    yy, xx = np.meshgrid(u, u, indexing="ij")
    c = rng.uniform(-0.5, 0.5, size=5)
    return c[0] * xx + c[1] * yy + c[2] * xx * yy + c[3] * xx**2 + c[4] * yy**2


def complex_image(gray: np.ndarray, size: int, rng: np.random.Generator, crop: bool) -> np.ndarray:
    """``gray`` (a random square crop of 40-100% of its short side if ``crop``, randomly flipped) resized to
    ``size``, with a smooth phase, peak magnitude 1 (complex128)."""
    transform = _need("skimage.transform")
    h, w = gray.shape
    if crop:
        side = int(min(h, w) * rng.uniform(0.4, 1.0))
        top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        gray = gray[top : top + side, left : left + side]
        if rng.random() < 0.5:
            gray = gray[:, ::-1]
    else:
        side = min(h, w)
        gray = gray[(h - side) // 2 : (h - side) // 2 + side, (w - side) // 2 : (w - side) // 2 + side]
    magnitude = transform.resize(gray, (size, size), anti_aliasing=True)
    magnitude = magnitude / max(magnitude.max(), 1e-8)
    return magnitude * np.exp(1j * smooth_phase(size, rng))


def training_images(size: int, count: int, seed: int, names: tuple[str, ...] = TRAIN_IMAGES) -> Tensor:
    """``count`` random crops of the images ``names`` (default :data:`TRAIN_IMAGES`), ``[count, size, size]``
    complex64."""
    held_out = set(names) & set(TEST_IMAGES)
    if held_out:
        raise ValueError(f"{sorted(held_out)} are test images; train on others (e.g. TRAIN_IMAGES).")
    rng = np.random.default_rng(seed)
    grays = [gray_image(name) for name in names]
    images = [complex_image(grays[rng.integers(len(grays))], size, rng, crop=True) for _ in range(count)]
    return torch.from_numpy(np.stack(images)).to(torch.complex64)


def test_images(size: int, seed: int = 12345) -> tuple[list[str], Tensor]:
    """The held-out images (:data:`TEST_IMAGES`), centre-cropped, ``[n, size, size]`` complex64."""
    rng = np.random.default_rng(seed)
    images = [complex_image(gray_image(name), size, rng, crop=False) for name in TEST_IMAGES]
    return list(TEST_IMAGES), torch.from_numpy(np.stack(images)).to(torch.complex64)


def coil_maps(coils: int, size: int) -> Tensor:
    """``sigpy.mri.birdcage_maps`` for ``coils`` coils, scaled so that ``sum_c |S_c|^2 = 1`` (complex128)."""
    sigpy_mri = _need("sigpy.mri")
    maps = np.asarray(sigpy_mri.birdcage_maps((coils, size, size)), dtype=np.complex128)
    norm = np.sqrt((np.abs(maps) ** 2).sum(axis=0, keepdims=True))
    return torch.from_numpy(maps / np.maximum(norm, 1e-12))


def cartesian_mask(size: int, acceleration: float, seed: int, center_fraction: float = 0.08) -> Tensor:
    """A 1-D Cartesian mask (``[size, size]`` float, whole columns = phase-encode lines): the central
    ``center_fraction`` of lines, plus lines drawn without replacement with Gaussian density (std size/4) until
    ``size / acceleration`` lines are sampled. (sigpy has no Cartesian line sampler; written here.)"""
    if acceleration < 1:
        raise ValueError(f"acceleration must be >= 1, got {acceleration}.")
    rng = np.random.default_rng(seed)
    total = max(1, round(size / acceleration))
    center = max(1, min(total, round(size * center_fraction)))
    lines = set(range(size // 2 - center // 2, size // 2 - center // 2 + center))
    k = np.arange(size)
    weights = np.exp(-0.5 * ((k - size / 2) / (size / 4)) ** 2)
    weights[list(lines)] = 0
    extra = rng.choice(size, size=total - len(lines), replace=False, p=weights / weights.sum())
    lines.update(int(e) for e in extra)
    mask = torch.zeros(size, size)
    mask[:, sorted(lines)] = 1.0
    return mask


def poisson_mask(size: int, acceleration: float, seed: int) -> Tensor:
    """A 2-D variable-density Poisson-disc mask (``sigpy.mri.poisson``, 12x12 calibration region)."""
    sigpy_mri = _need("sigpy.mri")
    mask = sigpy_mri.poisson((size, size), acceleration, calib=(12, 12), seed=seed, dtype=np.complex64)
    return torch.from_numpy(np.abs(mask).astype(np.float32))


def fft2c(x: Tensor) -> Tensor:
    """Centred orthonormal 2-D FFT over the last two dimensions."""
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))


def ifft2c(k: Tensor) -> Tensor:
    """Centred orthonormal inverse 2-D FFT (the adjoint of :func:`fft2c`)."""
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))


def forward(x: Tensor, sens: Tensor, mask: Tensor) -> Tensor:
    """``A x = M F(S x)``: images ``[..., H, W]`` -> masked coil k-space ``[..., C, H, W]``."""
    return mask * fft2c(sens * x.unsqueeze(-3))


def adjoint(y: Tensor, sens: Tensor, mask: Tensor) -> Tensor:
    """``A^H y = sum_c conj(S_c) F^H(M y_c)``: coil k-space ``[..., C, H, W]`` -> images ``[..., H, W]``."""
    return (sens.conj() * ifft2c(mask * y)).sum(dim=-3)


def acquire(x: Tensor, sens: Tensor, mask: Tensor, noise: float, seed: int) -> Tensor:
    """``A x`` plus complex Gaussian noise of standard deviation ``noise`` on the sampled entries."""
    g = torch.Generator().manual_seed(seed)
    y = forward(x, sens, mask)
    real = torch.randn(y.shape, generator=g, dtype=y.real.dtype)
    imag = torch.randn(y.shape, generator=g, dtype=y.real.dtype)
    return y + noise * mask * torch.complex(real, imag) / math.sqrt(2)


def data_consistency(kspace: Tensor, measured: Tensor, mask: Tensor, weight: Tensor | float = 1.0) -> Tensor:
    """The k-space DC layer: ``k - weight M (k - y)``. ``weight = 1`` replaces the sampled entries by the
    measurements (hard DC); a learned ``weight`` is the soft DC of the E2E VarNet (Sriram et al. 2020)."""
    return kspace - weight * mask * (kspace - measured)


def dc_image(x: Tensor, measured: Tensor, sens: Tensor, mask: Tensor, weight: Tensor | float = 1.0) -> Tensor:
    """DC applied to an image ``x``: coil k-space ``F(S x)`` through :func:`data_consistency`, then
    coil-combined with ``sum_c conj(S_c) F^H``."""
    k = data_consistency(fft2c(sens * x.unsqueeze(-3)), measured, mask, weight)
    return (sens.conj() * ifft2c(k)).sum(dim=-3)


@dataclass
class Wavelet:
    """An orthonormal 2-D wavelet transform (PyWavelets, periodisation) of complex images as a real vector."""

    size: int
    name: str = "db4"
    level: int = 3

    def __post_init__(self) -> None:
        self.pywt = _need("pywt")
        coeffs = self.pywt.wavedec2(np.zeros((self.size, self.size)), self.name, mode="periodization",
                                    level=self.level)
        self.slices = self.pywt.coeffs_to_array(coeffs)[1]
        self.shape = self.pywt.coeffs_to_array(coeffs)[0].shape

    def _forward_real(self, image: np.ndarray) -> np.ndarray:
        coeffs = self.pywt.wavedec2(image, self.name, mode="periodization", level=self.level)
        return self.pywt.coeffs_to_array(coeffs)[0]

    def _inverse_real(self, array: np.ndarray) -> np.ndarray:
        coeffs = self.pywt.array_to_coeffs(array, self.slices, output_format="wavedec2")
        return self.pywt.waverec2(coeffs, self.name, mode="periodization")

    def analysis(self, x: Tensor) -> Tensor:
        """``W x``: complex image -> real vector ``[re coefficients, im coefficients]`` (float64)."""
        z = x.detach().cpu().numpy()
        parts = [self._forward_real(z.real).ravel(), self._forward_real(z.imag).ravel()]
        return torch.from_numpy(np.concatenate(parts))

    def synthesis(self, c: Tensor) -> Tensor:
        """``W^T c``: real vector -> complex image (complex128)."""
        half = c.numel() // 2
        array = c.detach().cpu().numpy()
        re = self._inverse_real(array[:half].reshape(self.shape))
        im = self._inverse_real(array[half:].reshape(self.shape))
        return torch.from_numpy(re + 1j * im)


def compressed_sensing(
    measured: Tensor, sens: Tensor, mask: Tensor, lam: float, steps: int, wavelet: Wavelet | None = None
) -> Tensor:
    """Wavelet-l1 reconstruction by FISTA (:func:`memopt.convex.fista`, ``beta = 1`` since ``||A W^T|| <= 1``):
    ``min_c 1/2 ||A W^T c - y||^2 + lam ||c||_1`` from ``c_0 = W A^H y``; returns ``W^T c`` (complex128)."""
    size = measured.shape[-1]
    wavelet = wavelet or Wavelet(size)
    y, s, m = measured.to(torch.complex128), sens.to(torch.complex128), mask.to(torch.float64)

    def grad(c: Tensor) -> Tensor:
        return wavelet.analysis(adjoint(forward(wavelet.synthesis(c), s, m) - y, s, m))

    result = fista(grad, prox_l1(lam), wavelet.analysis(adjoint(y, s, m)), beta=1.0, n_steps=steps)
    return wavelet.synthesis(result.x)


def psnr_ssim(reference: Tensor, estimate: Tensor) -> tuple[float, float]:
    """PSNR (dB) and SSIM of the magnitudes (``skimage.metrics``, data range of the reference magnitude)."""
    metrics = _need("skimage.metrics")
    ref = reference.abs().detach().cpu().numpy().astype(np.float64)
    est = estimate.abs().detach().cpu().numpy().astype(np.float64)
    data_range = float(ref.max() - ref.min())
    return (
        float(metrics.peak_signal_noise_ratio(ref, est, data_range=data_range)),
        float(metrics.structural_similarity(ref, est, data_range=data_range)),
    )
