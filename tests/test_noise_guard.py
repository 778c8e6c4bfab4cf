"""The noise guard on the real colour chart: its noise estimate, and what it keeps of the input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from n2ncli.backends.torch import TorchPredictor
from n2ncli.bayer import pack
from n2ncli.denoise import TileOptions, denoise_array
from n2ncli.io.raw import read_raw
from n2ncli.noise_guard import NoiseLevel, estimate_noise, keep_within_noise
from n2ncli.store import build_model, find_model
from n2ncli.synthesis import heteroscedastic, read_for


@pytest.fixture(scope="module")
def chart_whole(shared_data: Path) -> np.ndarray:
    """colorchart.dng packed to R, G1, G2, B (its own low-ISO noise included)."""
    raw = read_raw(shared_data / "raw" / "colorchart.dng")
    return pack(raw.normalised(), raw.pattern)[0]


@pytest.fixture(scope="module")
def chart_packed(chart_whole: np.ndarray) -> np.ndarray:
    """The middle 256x256 packed pixels of the chart."""
    h, w = chart_whole.shape[0] // 2, chart_whole.shape[1] // 2
    return np.ascontiguousarray(chart_whole[h - 128:h + 128, w - 128:w + 128])


def noisy(clean: np.ndarray, shot: float, seed: int = 3) -> np.ndarray:
    return heteroscedastic(torch.from_numpy(clean), shot, read_for(shot), torch.Generator().manual_seed(seed)).numpy()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * math.log10(1.0 / float(np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2)))


@pytest.mark.parametrize("shot", [2e-3, 1e-2])
def test_the_estimate_finds_added_sensor_noise(chart_whole: np.ndarray, shot: float) -> None:
    level = estimate_noise(noisy(chart_whole, shot))
    for x in np.percentile(chart_whole, [50, 95]).astype(np.float32):  # the chart's own brightness range
        true = shot * float(x) + read_for(shot)
        assert 0.85 * true < float(level.variance(x)) < 1.2 * true


def test_a_noise_free_image_is_kept_whatever_the_model_did(chart_packed: np.ndarray) -> None:
    clean = np.full_like(chart_packed, 0.3)
    clean[:, 128:] = 0.6  # an edge a blurring model would soften
    assert estimate_noise(clean) == NoiseLevel(0.0, 0.0)
    blurred = (clean + np.roll(clean, 1, axis=1)) / 2
    np.testing.assert_array_equal(keep_within_noise(clean, blurred), clean)


def test_an_unchanged_image_stays_bit_exact(chart_packed: np.ndarray) -> None:
    y = noisy(chart_packed, 2e-3)
    np.testing.assert_array_equal(keep_within_noise(y, y.copy()), y)


def test_a_model_that_removes_only_noise_keeps_its_output(chart_packed: np.ndarray) -> None:
    y = noisy(chart_packed, 1e-2)
    out = keep_within_noise(y, chart_packed)  # the perfect denoiser: its change is the noise
    assert psnr(out, chart_packed) > psnr(y, chart_packed) + 10


def test_the_shipped_raw_model_at_low_and_high_iso(chart_packed: np.ndarray, one_thread: None) -> None:
    """Guarded, raw-camera keeps its high-ISO gain and gives back most of what it took at low ISO
    (the reference keeps the file's own low-ISO noise, so no gain can show there)."""
    predictor = TorchPredictor(build_model(find_model("raw-camera")), "cpu")
    scores = {}
    for shot in (2e-4, 1e-2):
        y = noisy(chart_packed, shot)
        bare = denoise_array(y, predictor, TileOptions(tile=0))
        scores[shot] = psnr(y, chart_packed), psnr(bare, chart_packed), psnr(keep_within_noise(y, bare), chart_packed)
    noisy_high, bare_high, guarded_high = scores[1e-2]
    assert guarded_high > noisy_high + 8 and guarded_high > bare_high - 1.0
    noisy_low, bare_low, guarded_low = scores[2e-4]
    assert guarded_low > bare_low + 2 and guarded_low > noisy_low - 1.5


def test_keeping_the_local_mean_after_the_guard_raises_the_shipped_raw_model(chart_packed: np.ndarray,
                                                                             one_thread: None) -> None:
    """As ``denoise`` runs a raw: guard, then the packed input's local mean over SIGMA_RAW (mid ISO)."""
    from n2ncli.local_mean import SIGMA_RAW, keep_local_mean

    predictor = TorchPredictor(build_model(find_model("raw-camera")), "cpu")
    y = noisy(chart_packed, 2e-3)
    guarded = keep_within_noise(y, denoise_array(y, predictor, TileOptions(tile=0)))
    assert psnr(keep_local_mean(y, guarded, SIGMA_RAW), chart_packed) > psnr(guarded, chart_packed) + 0.5  # measured +2.2
