"""Pixel-shuffle downsampling: exact split/merge, the wrapped predictor, the correlation statistic."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from identity import Identity
from PIL import Image

from n2ncli.errors import ConfigError
from n2ncli.pd import (CORRELATED, PdSelector, PixelShufflePredictor, choose_stride, merge, noise_correlation, split,
                       split_torch)


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize(("h", "w"), [(19, 37), (32, 32), (5, 8)])
def test_split_then_merge_is_exact_for_odd_sizes(stride: int, h: int, w: int) -> None:
    x = np.random.default_rng(0).random((2, h, w, 3), dtype=np.float32)
    sub = split(x, stride)
    assert sub.shape == (2 * stride * stride, -(-h // stride), -(-w // stride), 3)
    np.testing.assert_array_equal(merge(sub, stride, h, w), x)


def test_sub_image_ij_holds_the_pixels_i_j_apart_by_the_stride() -> None:
    x = np.random.default_rng(1).random((1, 12, 18, 3), dtype=np.float32)
    sub = split(x, 3)
    for i in range(3):
        for j in range(3):
            np.testing.assert_array_equal(sub[i * 3 + j], x[0, i::3, j::3])


def test_torch_split_matches_numpy_split() -> None:
    x = np.random.default_rng(2).random((2, 16, 24, 3), dtype=np.float32)
    t = torch.from_numpy(x).permute(0, 3, 1, 2)
    np.testing.assert_array_equal(split_torch(t, 2).permute(0, 2, 3, 1).numpy(), split(x, 2))


def test_wrapped_predictor_sees_sub_images_and_returns_the_image() -> None:
    inner = Identity()
    x = np.random.default_rng(3).random((1, 33, 50, 3), dtype=np.float32)
    out = PixelShufflePredictor(inner, 2).predict(x)
    assert inner.shapes == [(4, 17, 25, 3)]
    np.testing.assert_array_equal(out, x)


def test_blend_mixes_in_the_plain_output() -> None:
    class Halve(Identity):
        def predict(self, batch: np.ndarray) -> np.ndarray:
            super().predict(batch)
            return batch * (0.5 if batch.shape[0] > 1 else 1.0)  # PD calls: 4 sub-images

    x = np.ones((1, 8, 8, 3), dtype=np.float32)
    out = PixelShufflePredictor(Halve(), 2, blend=0.25).predict(x)
    np.testing.assert_allclose(out, 0.75 * 0.5 + 0.25 * 1.0)


@pytest.mark.parametrize("bad", [0, 4, -1])
def test_bad_strides_are_refused(bad: int) -> None:
    with pytest.raises(ConfigError, match="--pd"):
        PixelShufflePredictor(Identity(), bad)


def _jpeg(u8: np.ndarray, subsampling: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="JPEG", quality=92, subsampling=subsampling)
    return np.asarray(Image.open(buf)).astype(np.float32) / 255.0


def _noisy_u8(clean: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    noisy = clean + np.random.default_rng(seed).normal(0, sigma / 255, clean.shape)
    return np.clip(np.round(noisy * 255), 0, 255).astype(np.uint8)


def test_independent_noise_is_not_correlated_but_jpeg_420_and_blurred_noise_are(kodak_crop) -> None:
    clean = kodak_crop(0, 0, 256, 384, image="kodim23.png").astype(np.float32) / 255.0
    png = _noisy_u8(clean, 15, 0)
    assert noise_correlation(png / 255.0) < CORRELATED
    assert noise_correlation(_jpeg(png, 2)) > CORRELATED  # 4:2:0: chroma shared by 2x2 pixels
    flat = np.full((128, 128, 3), 0.5, np.float32)
    noise = np.random.default_rng(1).normal(0, 0.02, flat.shape).astype(np.float32)
    blurred = (noise + np.roll(noise, 1, 0) + np.roll(noise, 1, 1) + np.roll(noise, (1, 1), (0, 1))) / 2
    assert abs(noise_correlation(flat + noise)) < 0.1
    assert noise_correlation(flat + blurred) > CORRELATED


def test_real_camera_jpegs_are_correlated_and_choose_pd2(shared_data: Path) -> None:
    from n2ncli.io.image import read_image

    noisy = sorted((shared_data / "real-pairs").glob("*_real.JPG"))
    if not noisy:
        pytest.skip("no real pairs")
    for path in noisy[::10]:  # both cameras, a few ISO settings
        assert choose_stride(read_image(path).to_float()) == 2, path.name


def test_tiny_images_measure_as_uncorrelated() -> None:
    assert noise_correlation(np.zeros((8, 8, 3), np.float32)) == 0.0
    assert choose_stride(np.zeros((8, 8, 3), np.float32)) == 1


def test_wrappers_copy_and_forward_backend_attributes() -> None:
    import copy

    inner = Identity()
    inner.bytes_per_pixel = 1234
    for wrapper in (PixelShufflePredictor(inner, 2), PdSelector(inner, None)):
        assert wrapper.bytes_per_pixel == 1234
        assert copy.deepcopy(wrapper).bytes_per_pixel == 1234


def test_selector_sends_correlated_images_to_the_real_photo_model(shared_data: Path) -> None:
    from n2ncli.io.image import read_image

    real = read_image(next((shared_data / "real-pairs").glob("*_real.JPG"))).to_float()[:128, :128]
    flat = np.full((128, 128, 3), 0.5, np.float32)
    flat += np.random.default_rng(0).normal(0, 0.05, flat.shape).astype(np.float32)
    blind, camera = Identity(), Identity()
    selector = PdSelector(blind, None, 2, camera, 3)
    assert selector.choice(real) == (camera, 3)
    assert selector.choice(flat) == (blind, 1)
    assert PdSelector(blind, 2, 3, camera).choice(flat) == (blind, 2)  # --pd fixed, model still per image
    assert PdSelector(blind, None, 3).choice(real) == (blind, 3)


def test_auto_mixes_in_the_models_plain_share_and_an_explicit_stride_does_not() -> None:
    """`--pd auto` runs a model's own recipe (model.json pd_blend: PD output with that share of
    the plain pass); `--pd 2` is pixel-shuffle alone."""
    from n2ncli.store import SHIPPED_DIR, read_record, trained_blend

    rng = np.random.default_rng(0)
    flat = rng.normal(0.5, 0.03, (64, 64, 3)).astype(np.float32)
    correlated = np.repeat(np.repeat(flat[::2, ::2], 2, axis=0), 2, axis=1)  # noise shared by 2x2 cells
    assert noise_correlation(correlated) > CORRELATED
    blind, camera = Identity(3), Identity(3)
    auto = PdSelector(blind, None, 2, camera, 2, blend=0.0, correlated_blend=0.5).route(correlated)
    assert isinstance(auto, PixelShufflePredictor) and auto.inner is camera and auto.blend == 0.5
    fixed = PdSelector(blind, 2, 2, camera, 2, blend=0.0, correlated_blend=0.5).route(correlated)
    assert isinstance(fixed, PixelShufflePredictor) and fixed.blend == 0.0
    assert trained_blend(read_record(SHIPPED_DIR / "srgb-camera", shipped=True)) == 0.5
    assert trained_blend(read_record(SHIPPED_DIR / "srgb-gaussian5-50", shipped=True)) == 0.0


def test_auto_keeps_stride_1_when_only_a_jpegs_chroma_is_correlated(kodak_crop, shared_data: Path) -> None:
    """4:2:0 chroma over independent luma noise goes to the real-photo model at full resolution;
    a real camera JPEG, correlated in luma too, goes through PD."""
    from n2ncli.io.image import read_image
    from n2ncli.pd import noise_correlations

    clean = kodak_crop(0, 0, 256, 384, image="kodim23.png").astype(np.float32) / 255.0
    jpeg = _jpeg(_noisy_u8(clean, 15, 0), 2)
    luma, chroma = noise_correlations(jpeg)
    assert luma < CORRELATED < chroma
    real = read_image(next((shared_data / "real-pairs").glob("*_real.JPG"))).to_float()[:256, :256]
    assert noise_correlations(real)[0] > CORRELATED
    blind, camera = Identity(3), Identity(3)
    selector = PdSelector(blind, None, 2, camera, 2, correlated_blend=0.5)
    assert selector.choice(jpeg) == (camera, 1)
    assert selector.choice(real) == (camera, 2)
    assert PdSelector(blind, None, 2).choice(jpeg) == (blind, 1)
    assert PdSelector(blind, 2, 2, camera).choice(jpeg) == (camera, 2)  # an explicit --pd still rules
    assert selector.route(jpeg) is camera


def test_strong_jpeg_noise_gets_a_second_pass_and_weak_noise_does_not(kodak_crop) -> None:
    """srgb-camera on 4:2:0 JPEGs over independent luma noise: a second pass where the first
    removed much (sigma 25), none where it removed little (sigma 5)."""
    from n2ncli.backends.torch import TorchPredictor
    from n2ncli.metrics import psnr, quantize_uint8
    from n2ncli.pd import SecondPass
    from n2ncli.store import build_model, find_model, trained_second_pass

    record = find_model("srgb-camera")
    camera = TorchPredictor(build_model(record), precision="fp32")
    selector = PdSelector(Identity(3), None, 2, camera, 2, correlated_second_pass=trained_second_pass(record))
    clean = kodak_crop(0, 0, 128, 192, image="kodim23.png").astype(np.float32) / 255.0
    target = quantize_uint8(clean)
    scores = {}
    for sigma in (5, 25):
        jpeg = _jpeg(_noisy_u8(clean, sigma, 1), 2)
        chosen = selector.route(jpeg)
        assert isinstance(chosen, SecondPass) and chosen.inner is camera
        once = camera.predict(jpeg[None])
        scores[sigma] = (chosen.share(jpeg[None], once), psnr(target, quantize_uint8(chosen.predict(jpeg[None])[0])),
                         psnr(target, quantize_uint8(once[0])))
    assert scores[5][0] == 0.0 and scores[5][1] == scores[5][2]  # weak noise: the first pass alone
    assert scores[25][0] > 0.5 and scores[25][1] > scores[25][2] + 0.5  # strong: the second pass pays
    plain = PdSelector(Identity(3), None, 2, camera, 2)  # a model without the setting: one pass
    assert plain.route(_jpeg(_noisy_u8(clean, 25, 1), 2)) is camera


def test_selector_sends_grey_images_to_the_grey_model(kodak_crop) -> None:
    """A 1-channel image with independent noise goes to the grey model (at stride 1, or an
    explicit --pd); one whose noise neighbours share goes where a colour one would (the real-photo
    model through PD); colour images never go to it."""
    rng = np.random.default_rng(0)
    clean = kodak_crop(0, 0, 128, 128, image="kodim23.png").astype(np.float32).mean(axis=2, keepdims=True) / 255
    grey_img = clean + rng.normal(0, 25 / 255, clean.shape).astype(np.float32)
    shared = clean + np.repeat(np.repeat(rng.normal(0, 25 / 255, (64, 64, 1)), 2, 0), 2, 1).astype(np.float32)
    colour = np.repeat(grey_img, 3, axis=2)
    blind, camera, grey = Identity(3), Identity(3), Identity(1)
    selector = PdSelector(blind, None, 2, camera, 2, correlated_blend=0.5, grey=grey)
    assert selector.choice(grey_img) == (grey, 1)
    assert selector.route(grey_img) is grey
    assert selector.choice(shared) == (camera, 2)
    assert selector.choice(colour)[0] is not grey
    assert PdSelector(blind, 3, 2, grey=grey).choice(grey_img) == (grey, 3)
    assert PdSelector(blind, None, 2).choice(grey_img) == (blind, 1)  # no grey model: the RGB one, as before
    with pytest.raises(ConfigError, match="grey model"):
        PdSelector(blind, None, 2, grey=Identity(3))

