"""Greyscale photos through the CLI: the shipped grey model where the RGB ones keep the noise."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from cli_run import Run
from PIL import Image

pytestmark = pytest.mark.usefixtures("one_thread")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def _grey(kodak_crop) -> np.ndarray:  # noqa: ANN001
    rgb = kodak_crop(100, 200, 128, 192, image="kodim23.png").astype(np.float32)
    return np.rint(rgb @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8)


def _scan(kodak_crop, tmp_path: Path, seed: int) -> tuple[np.ndarray, np.ndarray, Path]:  # noqa: ANN001
    """(clean, noisy, the noisy file): a grey crop with sigma-25 noise saved as a greyscale PNG."""
    clean = _grey(kodak_crop)
    noisy = np.clip(np.rint(clean + np.random.default_rng(seed).normal(0, 25, clean.shape)), 0, 255).astype(np.uint8)
    source = tmp_path / "scan.png"
    Image.fromarray(noisy, mode="L").save(source)
    return clean, noisy, source


def test_a_grey_photo_goes_to_the_grey_model_and_loses_far_more_noise(n2n: Callable[..., Run], kodak_crop,  # noqa: ANN001
                                                                      tmp_path: Path) -> None:
    clean, noisy, source = _scan(kodak_crop, tmp_path, 3)
    run = n2n("denoise", source, "-o", tmp_path / "grey.png")
    assert run.code == 0, run.err
    assert "grey-gaussian5-50 for greyscale ones" in run.err
    rgb = n2n("denoise", source, "-o", tmp_path / "rgb.png", "-m", "srgb-gaussian5-50")  # the path before it
    assert rgb.code == 0, rgb.err
    with Image.open(tmp_path / "grey.png") as im, Image.open(tmp_path / "rgb.png") as before:
        assert im.mode == "L"
        ours, theirs = _psnr(np.asarray(im), clean), _psnr(np.asarray(before), clean)
    assert theirs < _psnr(noisy, clean) + 3.5  # three equal channels: the RGB model keeps most of it
    assert ours > theirs + 3.0



def test_adapt_on_a_grey_photo_fine_tunes_the_grey_model(n2n: Callable[..., Run], kodak_crop,  # noqa: ANN001
                                                         tmp_path: Path) -> None:
    clean, _, source = _scan(kodak_crop, tmp_path, 4)
    run = n2n("denoise", source, "-o", tmp_path / "adapted.png", "--adapt", "2")
    assert run.code == 0, run.err
    assert "step(s) of grey-gaussian5-50" in " ".join(run.err.split())
    assert n2n("denoise", source, "-o", tmp_path / "plain.png").code == 0
    assert n2n("denoise", source, "-o", tmp_path / "rgb.png", "-m", "srgb-gaussian5-50").code == 0
    with (Image.open(tmp_path / "adapted.png") as a, Image.open(tmp_path / "plain.png") as p,
          Image.open(tmp_path / "rgb.png") as r):
        assert a.mode == "L"
        adapted, plain, rgb = (_psnr(np.asarray(im), clean) for im in (a, p, r))
    assert adapted > rgb + 3.0  # not the RGB model on three equal channels
    assert abs(adapted - plain) < 0.5  # two steps from the grey model, or the grey model itself
