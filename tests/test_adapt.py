"""denoise --adapt: a bounded fine-tune on the photos themselves, kept only if it measured better."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from n2ncli.adapt import adapt, adapt_to_files
from n2ncli.errors import ConfigError
from n2ncli.nets.unet import UNet
from n2ncli.pd import CORRELATED
from n2ncli.store import build_model, find_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def real_noisy(shared_data: Path) -> list[np.ndarray]:
    from n2ncli.io.image import read_image

    path = shared_data / "real-pairs" / "Sony_4_200_3200_door_10_real.JPG"
    if not path.is_file():
        pytest.skip("no real pairs")
    return [read_image(path).to_float()[:256, :256]]


@pytest.fixture
def gaussian_noisy(kodak_crop) -> list[np.ndarray]:  # noqa: ANN001 - the conftest factory
    """A Kodak crop with independent sigma-25 noise, clipped and quantised as a PNG would hold it."""
    clean = kodak_crop(0, 0, 256, 256).astype(np.float32) / 255
    noisy = clean + np.random.default_rng(0).normal(0, 25 / 255, clean.shape).astype(np.float32)
    return [np.round(np.clip(noisy, 0, 1) * 255).astype(np.float32) / 255]


def test_adapt_leaves_correlated_camera_noise_alone(real_noisy: list[np.ndarray]) -> None:
    model = build_model(find_model("srgb-camera"))
    done = adapt(model, real_noisy, 50)
    assert done.skipped == "correlated" and done.luma > CORRELATED  # a camera JPEG: its self-check could not tell
    assert done.steps == 0 and done.check is None and not done.used and done.model is model


def test_adapt_fine_tunes_the_grey_model_on_grey_photos(gaussian_noisy: list[np.ndarray]) -> None:
    grey = [img @ np.array([[0.299], [0.587], [0.114]], np.float32) for img in gaussian_noisy]
    model = build_model(find_model("grey-gaussian5-50"))
    done = adapt(model, [g[:128, :128] for g in grey], 2)
    assert done.steps == 2 and done.check.images == 1 and done.pd == 1
    assert done.model.in_channels == 1 and np.isfinite(done.check.after)
    with pytest.raises(ConfigError, match="1-channel model on \\[3\\]-channel photos"):
        adapt(model, gaussian_noisy, 1)


@pytest.mark.slow
def test_adapt_measures_the_photos_noise_and_reports_its_check(gaussian_noisy: list[np.ndarray]) -> None:
    model = build_model(find_model("srgb-gaussian5-50"))
    done = adapt(model, gaussian_noisy, 2)
    assert done.pd == 1 and not done.skipped and done.luma < CORRELATED  # independent noise
    assert done.steps == 2 and done.check.images == 1
    assert np.isfinite(done.check.before) and np.isfinite(done.check.after)
    assert (done.model is model) == (not done.used)


@pytest.mark.slow
def test_adapt_stops_at_its_time_limit(gaussian_noisy: list[np.ndarray]) -> None:
    done = adapt(build_model(find_model("srgb-gaussian5-50")), gaussian_noisy, 100, max_seconds=0.0)
    assert done.steps == 1


def test_adapt_refuses_what_it_cannot_do(real_noisy: list[np.ndarray], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 1 step"):
        adapt(UNet(3), real_noisy, 0)
    with pytest.raises(ConfigError, match="sRGB and grey models"):
        adapt(UNet(4), real_noisy, 1)
    with pytest.raises(ConfigError, match="at least 64 px"):
        adapt(UNet(3), [real_noisy[0][:40, :40]], 1)
    with pytest.raises(ConfigError, match="adapt-minutes"):
        adapt_to_files(UNet(3), [tmp_path / "x.png"], 1, minutes=0)
