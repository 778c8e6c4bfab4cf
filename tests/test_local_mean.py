"""Keeping the input's local mean (n2ncli.local_mean, pd.MeanKept): what the model moved at
coarse scales goes back, fine detail and noise removal stay."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from n2ncli.backends.torch import TorchPredictor
from n2ncli.denoise import TileOptions, denoise_array
from n2ncli.io.image import read_image
from n2ncli.local_mean import SIGMA, SIGMA_CHROMA, SIGMA_FINE, keep_local_mean, low_pass
from n2ncli.metrics import psnr, quantize_uint8
from n2ncli.pd import MeanKept, PdSelector
from n2ncli.store import build_model, find_model, trained_blend, trained_second_pass, trained_stride


def _float(crop: np.ndarray) -> np.ndarray:
    return crop.astype(np.float32) / 255


def _gaussian(a: np.ndarray, sigma: float) -> np.ndarray:
    """A plain separable Gaussian with mirrored edges, the reference for the cell-based one."""
    r = int(4 * sigma)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    for axis in (0, 1):
        p = np.pad(a, [(r, r) if i == axis else (0, 0) for i in range(a.ndim)], mode="symmetric")
        a = np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), axis, p)
    return a


def test_the_low_pass_is_close_to_a_gaussian_on_a_photo(kodak_crop) -> None:
    image = _float(kodak_crop(top=100, left=150, height=150, width=203))  # sizes not divisible by the cells
    ref = _gaussian(image.astype(np.float64), 16.0)
    ours = low_pass(image)
    assert ours.shape == image.shape and ours.dtype == np.float32
    assert np.sqrt(np.mean((ours - ref) ** 2)) < 0.05 * np.sqrt(np.mean((ref - ref.mean()) ** 2)) + 1e-3


def test_an_output_that_kept_the_input_is_returned_bit_for_bit(kodak_crop) -> None:
    image = _float(kodak_crop(height=70, width=90))
    assert np.array_equal(keep_local_mean(image, image.copy()), image)


def test_a_shift_of_brightness_and_colour_goes_back_and_noise_removal_stays(kodak_crop) -> None:
    clean = _float(kodak_crop(height=128, width=128))
    noisy = (clean + np.random.default_rng(0).normal(0, 10 / 255, clean.shape)).astype(np.float32)
    shifted = clean + np.array([0.02, -0.01, 0.03], np.float32)  # a "denoiser" that moves the colour
    kept = keep_local_mean(noisy, shifted)
    assert psnr(quantize_uint8(clean), quantize_uint8(kept)) > psnr(quantize_uint8(clean), quantize_uint8(shifted)) + 10
    assert psnr(quantize_uint8(clean), quantize_uint8(kept)) > psnr(quantize_uint8(clean), quantize_uint8(noisy)) + 10


class _Darkening:
    """A stand-in network that darkens by 2 %: the tiles' outputs then hold a coarse error."""

    channels = 3

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return batch * 0.98


def test_a_tiled_image_keeps_its_mean_once_over_the_whole_output(kodak_crop) -> None:
    image = _float(kodak_crop(height=200, width=300))
    tiles = TileOptions(tile=96, overlap=16, context=32)
    got = denoise_array(image, MeanKept(_Darkening()), tiles)
    assert np.allclose(got, keep_local_mean(image, denoise_array(image, _Darkening(), tiles)), atol=1e-6)
    # the 2 % loss of brightness is gone from the image's mean, fine detail aside
    assert abs(float((got - image).mean())) < 0.1 * abs(float((0.98 * image - image).mean()))


def test_the_selector_keeps_the_mean_unless_told_not_to(kodak_crop) -> None:
    image = _float(kodak_crop(height=64, width=64))
    fine, shuffled = PdSelector(_Darkening(), 1).for_image(image), PdSelector(_Darkening(), 2).for_image(image)
    assert isinstance(fine, MeanKept) and fine.sigma == SIGMA_FINE  # fine-grained noise: a tighter low-pass
    assert isinstance(shuffled, MeanKept) and shuffled.sigma == SIGMA  # correlated noise, through PD
    assert not isinstance(PdSelector(_Darkening(), 1, keep_mean=False).for_image(image), MeanKept)


def test_keeping_the_mean_raises_the_real_photo_model_on_a_real_pair(shared_data: Path) -> None:
    noisy_path = sorted((shared_data / "real-pairs").glob("*_real.JPG"))[0]
    noisy = read_image(noisy_path).to_float()
    clean = read_image(noisy_path.with_name(noisy_path.name.replace("_real", "_mean"))).pixels
    record = find_model("srgb-camera")
    net = TorchPredictor(build_model(record), precision="fp32")
    scores = []
    for keep in (False, True):
        selector = PdSelector(net, None, trained_stride(record), blend=trained_blend(record), keep_mean=keep)
        scores.append(psnr(clean, quantize_uint8(denoise_array(noisy, selector.for_image(noisy), TileOptions(tile=0)))))
    assert scores[1] > scores[0] + 0.02, scores


def test_a_420_jpeg_keeps_a_tighter_mean_which_gives_back_detail(kodak_crop) -> None:
    """Only the chroma noise correlated (4:2:0 over independent luma): the real-photo model at
    stride 1 smooths fine detail at low noise, and the 4 px low-pass gives more of it back than 8 px."""
    from PIL import Image

    clean = kodak_crop(0, 0, 256, 384, image="kodim23.png")
    rng = np.random.default_rng(5)
    u8 = np.clip(np.round(clean + rng.normal(0, 5, clean.shape)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="JPEG", quality=92, subsampling=2)
    noisy = np.asarray(Image.open(buf)).astype(np.float32) / 255
    record = find_model("srgb-camera")
    selector = PdSelector(TorchPredictor(build_model(record), precision="fp32"), None, trained_stride(record),
                          blend=trained_blend(record), second_pass=trained_second_pass(record))
    kept = selector.for_image(noisy)
    assert isinstance(kept, MeanKept) and kept.sigma == SIGMA_CHROMA
    route = denoise_array(noisy, kept.inner, TileOptions(tile=0))
    tight, fine = (psnr(clean, quantize_uint8(keep_local_mean(noisy, route, s))) for s in (SIGMA_CHROMA, SIGMA_FINE))
    assert tight > fine + 0.03, (tight, fine)


@pytest.mark.parametrize("bad", [0, -1])
def test_a_sigma_that_is_not_positive_is_refused(bad: float) -> None:
    from n2ncli.errors import ConfigError

    with pytest.raises(ConfigError):
        MeanKept(_Darkening(), bad)
