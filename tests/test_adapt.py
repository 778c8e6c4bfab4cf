"""denoise --adapt: a bounded fine-tune on the photos themselves, kept only if it measured better."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from n2ncli.adapt import adapt, adapt_to_files
from n2ncli.errors import ConfigError
from n2ncli.nets.unet import UNet
from n2ncli.store import build_model, find_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def real_noisy(shared_data: Path) -> list[np.ndarray]:
    from n2ncli.io.image import read_image

    path = shared_data / "real-pairs" / "Sony_4_200_3200_door_10_real.JPG"
    if not path.is_file():
        pytest.skip("no real pairs")
    return [read_image(path).to_float()[:256, :256]]


@pytest.mark.slow
def test_adapt_measures_the_photos_noise_and_reports_its_check(real_noisy: list[np.ndarray]) -> None:
    model = build_model(find_model("srgb-gaussian5-50"))
    done = adapt(model, real_noisy, 2)
    assert done.pd == 2  # a camera JPEG: correlated noise
    assert done.steps == 2 and done.check.images == 1
    assert np.isfinite(done.check.before) and np.isfinite(done.check.after)
    assert (done.model is model) == (not done.used)


@pytest.mark.slow
def test_adapt_stops_at_its_time_limit(real_noisy: list[np.ndarray]) -> None:
    done = adapt(build_model(find_model("srgb-gaussian5-50")), real_noisy, 100, max_seconds=0.0)
    assert done.steps == 1


def test_adapt_refuses_what_it_cannot_do(real_noisy: list[np.ndarray], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 1 step"):
        adapt(UNet(3), real_noisy, 0)
    with pytest.raises(ConfigError, match="sRGB models only"):
        adapt(UNet(4), real_noisy, 1)
    with pytest.raises(ConfigError, match="at least 64 px"):
        adapt(UNet(3), [real_noisy[0][:40, :40]], 1)
    with pytest.raises(ConfigError, match="adapt-minutes"):
        adapt_to_files(UNet(3), [tmp_path / "x.png"], 1, minutes=0)
