"""The evaluation protocol: scores, seeds, repeats, grey images (with a predictor that changes
nothing), and the official square padding around the shipped model."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from n2ncli.backends.torch import TorchPredictor
from n2ncli.evaluate import evaluate, to_uint8
from identity import Identity
from n2ncli.noise import parse_noise


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


# ----------------------------------------------------------------------------- baselines and real pairs


class Gradient:
    """Not flip-equivariant: adds a ramp along the width, so a wrong inverse transform shows."""

    channels = 3

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def predict(self, batch: np.ndarray) -> np.ndarray:
        self.shapes.append(batch.shape)
        return batch + np.linspace(0.0, 1.0, batch.shape[2], dtype=np.float32)[None, None, :, None]


def test_self_ensemble_undoes_each_of_the_8_transforms() -> None:
    from n2ncli.baselines import SelfEnsemble

    rng = np.random.default_rng(0)
    batch = rng.random((2, 19, 37, 3), dtype=np.float32)

    assert np.allclose(SelfEnsemble(Identity()).predict(batch), batch, atol=1e-7)
    inner = Gradient()
    out = SelfEnsemble(inner).predict(batch)
    # the 8 ramps (along width, reversed, along height, ...) average to a constant 0.5
    assert np.allclose(out, batch + 0.5, atol=1e-6)
    assert sorted(s[1:3] for s in inner.shapes) == [(19, 37)] * 4 + [(37, 19)] * 4


def test_estimate_sigma_of_gaussian_noise() -> None:
    from n2ncli.baselines import estimate_sigma

    rng = np.random.default_rng(1)
    noisy = 0.5 + rng.normal(0.0, 25 / 255, (128, 160, 3))

    assert estimate_sigma(noisy) == pytest.approx(25 / 255, rel=0.05)


def test_baselines_see_the_same_draws_and_hooks_get_every_output(images: list[tuple[str, np.ndarray]]) -> None:
    seen: list[tuple[str, int, list[str]]] = []

    result = evaluate(Identity(), images, parse_noise("gaussian25"), repeats=2, baselines={"same": Identity()},
                      on_output=lambda n, r, clean, noisy, outs: seen.append((n, r, sorted(outs))))

    assert seen == [("a", 0, ["model", "same"]), ("a", 1, ["model", "same"]),
                    ("b", 0, ["model", "same"]), ("b", 1, ["model", "same"])]
    for s in result.scores:
        assert s.baselines["same"] == {"psnr": s.psnr, "ssim": s.ssim}
    assert result.summary()["baselines"]["same"]["psnr"] == result.summary()["psnr"]


def test_real_pairs_score_the_given_noisy_image(images: list[tuple[str, np.ndarray]]) -> None:
    from n2ncli.evaluate import evaluate_pairs

    name, clean = images[0]
    noisy = clean.astype(np.float32) / 255 + 0.02

    result = evaluate_pairs(Identity(), [(name, noisy, clean)])

    (score,) = result.scores
    assert result.noise == "real" and score.repeat == 0
    assert score.noisy_psnr == pytest.approx(_psnr(clean, noisy), abs=1e-9)


def test_real_pairs_of_different_sizes_are_refused(images: list[tuple[str, np.ndarray]]) -> None:
    from n2ncli.errors import DatasetError
    from n2ncli.evaluate import evaluate_pairs

    name, clean = images[0]
    with pytest.raises(DatasetError, match="differ in size"):
        evaluate_pairs(Identity(), [(name, clean[:20].astype(np.float32) / 255, clean)])


# ----------------------------------------------------------------------------- the official square padding


@pytest.mark.parametrize(("height", "width", "side"), [(512, 768, 768), (768, 512, 768), (40, 48, 64),
                                                       (64, 64, 64), (19, 37, 64), (321, 481, 512)])
def test_square_side_is_the_longer_side_rounded_up_to_32(height: int, width: int, side: int) -> None:
    from n2ncli.evaluate import square_side

    assert square_side(height, width) == side


def test_pad_square_reflects_without_repeating_the_edge(kodak_crop: Callable[..., np.ndarray]) -> None:
    from n2ncli.evaluate import pad_square

    crop = kodak_crop(100, 100, 40, 48).astype(np.float32)[None] / 255

    padded = pad_square(crop)

    assert padded.shape == (1, 64, 64, 3)
    assert np.array_equal(padded[:, :40, :48], crop)
    assert np.array_equal(padded[:, 40, :48], crop[:, 38]) and np.array_equal(padded[:, :40, 48], crop[:, :, 46])
    assert np.array_equal(padded[:, 63, :48], crop[:, 15])  # the last of 24 rows below a 40-row image


class Spy:
    """Records the batch shapes a real predictor is given, and passes them on."""

    def __init__(self, inner: TorchPredictor) -> None:
        self.inner, self.channels = inner, inner.channels
        self.shapes: list[tuple[int, ...]] = []

    def predict(self, batch: np.ndarray) -> np.ndarray:
        self.shapes.append(batch.shape)
        return self.inner.predict(batch)


@pytest.fixture(scope="module")
def shipped() -> TorchPredictor:
    from n2ncli.store import build_model, default_model

    return TorchPredictor(build_model(default_model("srgb")), "cpu")


def test_square_padded_model_is_scored_as_the_official_code_runs_it(
        kodak_crop: Callable[..., np.ndarray], shipped: TorchPredictor, one_thread: None) -> None:
    from n2ncli.evaluate import SquarePadded

    clean = kodak_crop(300, 200, 64, 96, image="kodim03.png")  # the network pads this to 64x96 itself
    spy = Spy(shipped)

    result = evaluate(SquarePadded(spy), [("c", clean)], parse_noise("gaussian25"), seed=4, with_ssim=False)

    assert spy.shapes == [(1, 96, 96, 3)]
    noisy = ((clean.astype(np.float32) / 255).astype(np.float64)
             + np.random.default_rng(4).normal(0.0, 25 / 255, clean.shape)).astype(np.float32)
    by_hand = shipped.predict(np.pad(noisy, ((0, 32), (0, 0), (0, 0)), mode="reflect")[None])[0, :64]
    per_axis = shipped.predict(noisy[None])[0]
    assert result.scores[0].psnr == pytest.approx(_psnr(clean, by_hand), abs=1e-9)
    assert abs(_psnr(clean, per_axis) - _psnr(clean, by_hand)) > 1e-4  # the two paddings differ measurably


def test_to_uint8_takes_8_16_bit_and_float_pixels() -> None:
    """Clean sets may hold 16-bit PNGs and float TIFFs (values outside [0, 1] clipped)."""
    np.testing.assert_array_equal(to_uint8(np.array([0, 128, 255], np.uint8)), [0, 128, 255])
    np.testing.assert_array_equal(to_uint8(np.array([0, 25828, 25829, 65535], np.uint16)), [0, 100, 101, 255])
    np.testing.assert_array_equal(to_uint8(np.array([-0.5, 0.5, 1.5, np.nan], np.float32)), [0, 128, 255, 0])
