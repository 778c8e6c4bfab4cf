"""Metrics match the paper's protocol: uint8 quantisation, PSNR, MATLAB-style SSIM."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from n2ncli.errors import ConfigError
from n2ncli.metrics import PsnrSsim, psnr, psnr_torch, quantize_uint8, score_uint8, ssim

_REPO = Path(__file__).resolve().parents[1]
# The shared data folder sits beside the checkout (../shared) or, on some machines, inside it.
_CANDIDATES = [root / "shared/data/kodak24/kodim01.png" for root in (_REPO.parent, _REPO)]
KODIM01 = next((p for p in _CANDIDATES if p.is_file()), _CANDIDATES[0])


def _reference_ssim_plane(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """Straightforward SSIM: an explicit 11x11 Gaussian window at every 'valid' position."""
    r = np.arange(11, dtype=np.float64) - 5.0
    yy, xx = np.meshgrid(r, r, indexing="ij")
    win = np.exp(-(yy**2 + xx**2) / (2 * 1.5**2))
    win /= win.sum()
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    values = []
    for i in range(a.shape[0] - 10):
        for j in range(a.shape[1] - 10):
            pa, pb = a[i : i + 11, j : j + 11], b[i : i + 11, j : j + 11]
            mu_a, mu_b = (win * pa).sum(), (win * pb).sum()
            var_a = (win * (pa - mu_a) ** 2).sum()
            var_b = (win * (pb - mu_b) ** 2).sum()
            cov = (win * (pa - mu_a) * (pb - mu_b)).sum()
            num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
            den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
            values.append(num / den)
    return float(np.mean(values))


@pytest.fixture(scope="module")
def kodak_crop() -> np.ndarray:
    """A 64x96x3 uint8 crop of kodim01 (real texture, not synthetic noise)."""
    if not KODIM01.is_file():
        pytest.skip(f"Kodak data not found at {KODIM01}")
    with Image.open(KODIM01) as im:
        return np.asarray(im.convert("RGB"))[100:164, 200:296].copy()


def _noisy(clean_u8: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noisy = clean_u8.astype(np.float64) / 255.0 + rng.normal(0.0, sigma / 255.0, clean_u8.shape)
    return quantize_uint8(noisy)


# --- quantisation -----------------------------------------------------------------------------


def test_quantize_rounds_half_up_at_the_boundaries() -> None:
    eps = 1e-9
    x = np.array([0.5, 0.5, 1.5, 1.5, 254.5]) / 255 + np.array([-eps, eps, -eps, eps, eps])
    assert quantize_uint8(x).tolist() == [0, 1, 1, 2, 255]


def test_quantize_clips_out_of_range_values() -> None:
    x = np.array([-0.3, 0.0, 1.0, 1.7], dtype=np.float32)
    out = quantize_uint8(x)
    assert out.dtype == np.uint8
    assert out.tolist() == [0, 0, 255, 255]


def test_quantize_keeps_shape_and_matches_reference_formula() -> None:
    x = np.random.default_rng(1).normal(0.5, 0.4, (5, 7, 3)).astype(np.float32)
    expected = (np.clip(x, 0, 1) * 255.0 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(quantize_uint8(x), expected)


def test_quantize_round_trips_uint8_values() -> None:
    levels = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(quantize_uint8(levels.astype(np.float32) / 255.0), levels)


# --- PSNR -------------------------------------------------------------------------------------


def test_psnr_matches_hand_formula_on_kodak(kodak_crop: np.ndarray) -> None:
    noisy = _noisy(kodak_crop, 25.0)
    mse = np.mean((kodak_crop.astype(np.float64) - noisy.astype(np.float64)) ** 2)
    expected = 10 * math.log10(255.0**2 / mse)
    assert psnr(kodak_crop, noisy) == pytest.approx(expected, abs=1e-12)
    assert 19.0 < expected < 22.0  # sigma 25 with clipping: about 20.5 dB


def test_psnr_identical_is_inf(kodak_crop: np.ndarray) -> None:
    assert psnr(kodak_crop, kodak_crop.copy()) == math.inf


def test_psnr_does_not_wrap_uint8() -> None:
    a = np.array([0, 255], dtype=np.uint8)
    b = np.array([255, 0], dtype=np.uint8)
    assert psnr(a, b) == pytest.approx(0.0)


def test_psnr_peak_one_on_floats() -> None:
    a = np.zeros(4)
    b = np.full(4, 0.1)
    assert psnr(a, b, peak=1.0) == pytest.approx(20.0)


def test_psnr_rejects_shape_mismatch() -> None:
    with pytest.raises(ConfigError, match="shape"):
        psnr(np.zeros((4, 4)), np.zeros((4, 5)))


# --- SSIM -------------------------------------------------------------------------------------


def test_ssim_matches_direct_window_reference() -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (40, 50), dtype=np.uint8)
    b = np.clip(a + rng.normal(0, 30, a.shape), 0, 255).astype(np.uint8)
    assert abs(ssim(a, b) - _reference_ssim_plane(a, b)) < 1e-10


def test_ssim_matches_reference_on_kodak_crop(kodak_crop: np.ndarray) -> None:
    clean = kodak_crop[:40, :50, 1]
    noisy = _noisy(kodak_crop, 15.0)[:40, :50, 1]
    assert abs(ssim(clean, noisy) - _reference_ssim_plane(clean, noisy)) < 1e-10


def test_ssim_averages_channels(kodak_crop: np.ndarray) -> None:
    noisy = _noisy(kodak_crop, 20.0)
    per_channel = [ssim(kodak_crop[..., c], noisy[..., c]) for c in range(3)]
    assert ssim(kodak_crop, noisy) == pytest.approx(np.mean(per_channel), abs=1e-12)
    assert len({round(v, 6) for v in per_channel}) == 3  # the channels really differ


def test_ssim_single_channel_layouts_agree(kodak_crop: np.ndarray) -> None:
    clean = kodak_crop[..., 0]
    noisy = _noisy(kodak_crop, 20.0)[..., 0]
    assert ssim(clean, noisy) == ssim(clean[..., None], noisy[..., None])


def test_ssim_identical_is_one_and_symmetric(kodak_crop: np.ndarray) -> None:
    noisy = _noisy(kodak_crop, 10.0)
    assert ssim(kodak_crop, kodak_crop) == pytest.approx(1.0, abs=1e-12)
    assert ssim(kodak_crop, noisy) == pytest.approx(ssim(noisy, kodak_crop), abs=1e-12)


def test_ssim_decreases_with_noise(kodak_crop: np.ndarray) -> None:
    scores = [ssim(kodak_crop, _noisy(kodak_crop, s)) for s in (5.0, 15.0, 30.0, 50.0)]
    assert all(a > b for a, b in zip(scores, scores[1:]))
    assert 0.0 < scores[-1] < scores[0] < 1.0


def test_ssim_rejects_tiny_and_mismatched_images() -> None:
    with pytest.raises(ConfigError, match="11x11"):
        ssim(np.zeros((10, 20)), np.zeros((10, 20)))
    with pytest.raises(ConfigError, match="shape"):
        ssim(np.zeros((20, 20)), np.zeros((20, 20, 3)))


def test_ssim_of_a_full_kodak_image_at_sigma_25() -> None:
    """The whole 768x512 image (speed is benchmarked, not tested): noisy sigma 25 sits mid-range."""
    if not KODIM01.is_file():
        pytest.skip(f"Kodak data not found at {KODIM01}")
    with Image.open(KODIM01) as im:
        clean = np.asarray(im.convert("RGB"))
    value = ssim(clean, _noisy(clean, 25.0))
    assert 0.3 < value < 0.9
    assert ssim(clean, clean) == pytest.approx(1.0)


# --- convenience and torch --------------------------------------------------------------------


def test_score_uint8_returns_both(kodak_crop: np.ndarray) -> None:
    noisy = _noisy(kodak_crop, 25.0)
    scores = score_uint8(kodak_crop, noisy)
    assert scores == PsnrSsim(psnr=psnr(kodak_crop, noisy), ssim=ssim(kodak_crop, noisy))
    with pytest.raises(AttributeError):
        scores.psnr = 0.0  # type: ignore[misc]


def test_score_uint8_rejects_floats(kodak_crop: np.ndarray) -> None:
    with pytest.raises(ConfigError, match="uint8"):
        score_uint8(kodak_crop, kodak_crop / 255.0)


def test_psnr_torch_per_image_matches_numpy() -> None:
    gen = torch.Generator().manual_seed(0)
    y = torch.rand(3, 3, 16, 20, generator=gen)
    x = y + 0.05 * torch.randn(3, 3, 16, 20, generator=gen)
    got = psnr_torch(x, y)
    assert got.shape == (3,)
    for i in range(3):
        expected = psnr(x[i].clamp(0, 1).numpy(), y[i].numpy(), peak=1.0)
        assert got[i].item() == pytest.approx(expected, abs=1e-3)


def test_psnr_torch_clamps_and_handles_identical() -> None:
    y = torch.zeros(2, 1, 4, 4)
    x = torch.zeros(2, 1, 4, 4)
    x[1] = -5.0  # clamped to 0, so identical too
    assert torch.isinf(psnr_torch(x, y)).all()


def test_psnr_torch_rejects_shape_mismatch() -> None:
    with pytest.raises(ConfigError):
        psnr_torch(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))
