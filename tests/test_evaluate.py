"""The evaluation protocol with a predictor that changes nothing: scores, seeds, repeats, grey images."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from n2ncli.evaluate import evaluate
from n2ncli.noise import parse_noise


class Identity:
    """A backend whose 'denoised' output is its input; records the batch shapes it was given."""

    def __init__(self, channels: int = 3) -> None:
        self.channels = channels
        self.shapes: list[tuple[int, ...]] = []

    def predict(self, batch: np.ndarray) -> np.ndarray:
        self.shapes.append(batch.shape)
        return batch.copy()


def _psnr(clean_u8: np.ndarray, est: np.ndarray) -> float:
    est_u8 = (np.clip(est, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    mse = np.mean((clean_u8.astype(np.float64) - est_u8.astype(np.float64)) ** 2)
    return 10.0 * math.log10(255.0**2 / mse)


@pytest.fixture
def images(kodak_crop: Callable[..., np.ndarray]) -> list[tuple[str, np.ndarray]]:
    return [("a", kodak_crop(100, 100, 40, 48)), ("b", kodak_crop(300, 500, 40, 48, image="kodim05.png"))]


def test_identity_scores_equal_the_noisy_input(images: list[tuple[str, np.ndarray]]) -> None:
    result = evaluate(Identity(), images, parse_noise("gaussian25"), repeats=2)

    assert [(s.name, s.repeat) for s in result.scores] == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    for s in result.scores:
        assert s.psnr == s.noisy_psnr and s.ssim == s.noisy_ssim
        assert 19.0 < s.psnr < 23.0  # sigma 25 on 0-255: about 20.2 dB before clipping effects
    summary = result.summary()
    assert summary["psnr"] == summary["noisy_psnr"] and summary["images"] == 2 and summary["repeats"] == 2


def test_scores_follow_the_seeded_draw_order(images: list[tuple[str, np.ndarray]]) -> None:
    """One generator, image by image and repeat by repeat: recomputed here by hand."""
    result = evaluate(Identity(), images, parse_noise("gaussian25"), repeats=2, seed=7)

    rng = np.random.default_rng(7)
    expected = []
    for _, clean_u8 in images:
        clean = (clean_u8.astype(np.float32) / 255.0).astype(np.float64)  # as evaluate(): float32 / 255
        for _ in range(2):
            noisy = (clean + rng.normal(0.0, 25.0 / 255.0, clean.shape)).astype(np.float32)
            expected.append(_psnr(clean_u8, noisy))
    assert [s.noisy_psnr for s in result.scores] == pytest.approx(expected, abs=1e-9)


def test_same_seed_same_scores_other_seed_other_scores(images: list[tuple[str, np.ndarray]]) -> None:
    noise = parse_noise("gaussian5-50")
    one = evaluate(Identity(), images, noise, repeats=3, seed=101, with_ssim=False)
    again = evaluate(Identity(), images, noise, repeats=3, seed=101, batch=2, with_ssim=False)
    other = evaluate(Identity(), images, noise, repeats=3, seed=102, with_ssim=False)

    assert [s.psnr for s in one.scores] == [s.psnr for s in again.scores]
    assert [s.psnr for s in one.scores] != [s.psnr for s in other.scores]
    assert len({s.psnr for s in one.scores}) == 6  # every repeat is a fresh draw (and level)


def test_repeats_are_batched(images: list[tuple[str, np.ndarray]]) -> None:
    predictor = Identity()

    evaluate(predictor, images, parse_noise("gaussian25"), repeats=3, batch=2, with_ssim=False)

    assert predictor.shapes == [(2, 40, 48, 3), (1, 40, 48, 3)] * 2


def test_grey_images_are_replicated_for_an_rgb_predictor(kodak_crop: Callable[..., np.ndarray]) -> None:
    grey = kodak_crop(100, 100, 40, 48).mean(axis=2, keepdims=True).round().astype(np.uint8)
    predictor = Identity(channels=3)

    result = evaluate(predictor, [("g", grey)], parse_noise("gaussian25"), seed=3)

    assert predictor.shapes == [(1, 40, 48, 3)]
    clean3 = np.repeat(grey, 3, axis=2)
    rng = np.random.default_rng(3)
    noisy = ((clean3.astype(np.float32) / 255.0).astype(np.float64)
             + rng.normal(0.0, 25.0 / 255.0, clean3.shape)).astype(np.float32)
    (score,) = result.scores
    assert score.noisy_psnr == pytest.approx(_psnr(clean3, noisy), abs=1e-9)
    assert score.psnr == score.noisy_psnr
