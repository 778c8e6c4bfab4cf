"""Synthetic noise: parsing and names, statistics of the draws, per-image levels, no clipping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from n2ncli.errors import ConfigError
from n2ncli.noise import PRESETS, NoiseSpec, parse_noise


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(("text", "spec"), [
    ("gaussian25", NoiseSpec("gaussian", 25.0, 25.0)),
    ("gaussian5-50", NoiseSpec("gaussian", 5.0, 50.0)),
    ("poisson30", NoiseSpec("poisson", 30.0, 30.0)),
    ("poisson5-50", NoiseSpec("poisson", 5.0, 50.0)),
    ("gaussian:15", NoiseSpec("gaussian", 15.0, 15.0)),
    ("gaussian:2.5-7.5", NoiseSpec("gaussian", 2.5, 7.5)),
    ("poisson:10-20", NoiseSpec("poisson", 10.0, 20.0)),
    ("poisson:0.5", NoiseSpec("poisson", 0.5, 0.5)),
    ("  Gaussian:15 ", NoiseSpec("gaussian", 15.0, 15.0)),
    ("jpeg", NoiseSpec("jpeg", 5.0, 50.0)),
    ("jpeg:15", NoiseSpec("jpeg", 15.0, 15.0)),
    ("jpeg:5-20", NoiseSpec("jpeg", 5.0, 20.0)),
])
def test_parse(text: str, spec: NoiseSpec) -> None:
    assert parse_noise(text) == spec


@pytest.mark.parametrize("bad", [
    "", "gaussian", "gaussian:", "uniform:10", "salt25", "gaussian:0", "poisson:0-5", "gaussian:50-5",
    "gaussian:1.2.3", "gaussian:.", "gaussian:-5", "poisson:abc", "gaussian:5-", "gaussian:5-10-20",
    "gaussian 25", "jpeg:", "jpeg:0", "jpeg:20-10",
])
def test_bad_noise_strings_are_config_errors_quoting_the_value(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_noise(bad)
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize("name", [
    *PRESETS, "gaussian:15", "gaussian:2.5", "gaussian:10-20", "poisson:10-20", "poisson:7.5", "gaussian:12.5-37.5",
    "poisson:1000000", "gaussian:12.3456789", "jpeg", "jpeg:15", "jpeg:5-20",
])
def test_names_round_trip(name: str) -> None:
    spec = parse_noise(name)
    assert spec.name == name
    assert parse_noise(spec.name) == spec


def test_custom_name_equal_to_a_preset_uses_the_preset_name() -> None:
    assert parse_noise("gaussian:25").name == "gaussian25"
    assert parse_noise("poisson:5-50").name == "poisson5-50"


def test_gaussian_noise_has_the_requested_std() -> None:
    clean = torch.full((1, 3, 256, 256), 0.5)
    noisy = parse_noise("gaussian25").apply(clean, generator=_gen(0))
    assert noisy.dtype == clean.dtype and noisy.shape == clean.shape
    residual = (noisy - clean).double()
    assert float(residual.std()) == pytest.approx(25 / 255, rel=0.01)
    assert abs(float(residual.mean())) < 0.002


def test_poisson_noise_preserves_the_mean_with_variance_x_over_lambda() -> None:
    x, lam = 0.4, 30.0
    clean = torch.full((1, 3, 256, 256), x)
    noisy = parse_noise("poisson30").apply(clean, generator=_gen(1)).double()
    assert float(noisy.mean()) == pytest.approx(x, rel=0.01)
    assert float(noisy.var()) == pytest.approx(x / lam, rel=0.03)
    counts = noisy * lam  # integer photon counts, rescaled
    assert torch.allclose(counts, counts.round(), atol=1e-4)


def test_poisson_noise_scales_with_intensity() -> None:
    clean = torch.cat([torch.full((1, 1, 128, 128), 0.1), torch.full((1, 1, 128, 128), 0.8)])
    noisy = NoiseSpec("poisson", 20.0, 20.0).apply(clean, generator=_gen(2)).double()
    assert float(noisy[0].var()) == pytest.approx(0.1 / 20, rel=0.06)
    assert float(noisy[1].var()) == pytest.approx(0.8 / 20, rel=0.06)


@pytest.mark.parametrize("name", ["gaussian5-50", "poisson5-50"])
def test_levels_are_drawn_per_image_inside_the_range(name: str) -> None:
    levels = parse_noise(name).levels(2000, generator=_gen(3))
    assert levels.shape == (2000,)
    assert float(levels.min()) >= 5.0 and float(levels.max()) <= 50.0
    assert float(levels.min()) < 6.0 and float(levels.max()) > 49.0  # the whole range is used
    assert float(levels.mean()) == pytest.approx(27.5, abs=1.0)


def test_gaussian_range_gives_each_image_its_own_sigma() -> None:
    clean = torch.full((16, 1, 64, 64), 0.5)
    noisy = parse_noise("gaussian5-50").apply(clean, generator=_gen(4))
    sigmas = ((noisy - clean).double().flatten(1).std(dim=1) * 255).numpy()
    assert np.all(sigmas > 5 * 0.93) and np.all(sigmas < 50 * 1.07)
    assert sigmas.max() - sigmas.min() > 15  # not one level for the whole batch


def test_fixed_level_is_the_same_for_every_image() -> None:
    levels = parse_noise("gaussian25").levels(10, generator=_gen(5))
    assert torch.all(levels == 25.0)


def test_torch_draws_are_reproducible_with_a_seeded_generator() -> None:
    clean = torch.rand(2, 3, 16, 16, generator=_gen(6))
    spec = parse_noise("poisson5-50")
    a, b = spec.apply(clean, generator=_gen(7)), spec.apply(clean, generator=_gen(7))
    c = spec.apply(clean, generator=_gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("name", ["gaussian25", "gaussian5-50", "poisson30", "poisson5-50"])
def test_apply_numpy_is_reproducible_with_a_seeded_rng(name: str) -> None:
    clean = np.random.default_rng(0).random((12, 10, 3)).astype(np.float32)
    spec = parse_noise(name)
    a = spec.apply_numpy(clean, np.random.default_rng(101))
    b = spec.apply_numpy(clean, np.random.default_rng(101))
    c = spec.apply_numpy(clean, np.random.default_rng(102))
    assert a.dtype == np.float32 and a.shape == clean.shape
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, clean)


def test_apply_numpy_gaussian_std() -> None:
    clean = np.full((256, 256, 3), 0.5, dtype=np.float32)
    noisy = parse_noise("gaussian:15").apply_numpy(clean, np.random.default_rng(1))
    assert float((noisy - clean).std()) == pytest.approx(15 / 255, rel=0.01)


def test_apply_numpy_poisson_mean_and_variance() -> None:
    clean = np.full((256, 256, 3), 0.3, dtype=np.float32)
    noisy = parse_noise("poisson30").apply_numpy(clean, np.random.default_rng(2)).astype(np.float64)
    assert noisy.mean() == pytest.approx(0.3, rel=0.01)
    assert noisy.var() == pytest.approx(0.3 / 30, rel=0.03)


def test_gaussian_noise_is_not_clipped() -> None:
    dark = torch.full((1, 3, 32, 32), 0.02)
    bright = torch.full((1, 3, 32, 32), 0.98)
    spec = parse_noise("gaussian25")
    assert float(spec.apply(dark, generator=_gen(9)).min()) < 0.0
    assert float(spec.apply(bright, generator=_gen(9)).max()) > 1.0
    assert spec.apply_numpy(dark[0].permute(1, 2, 0).numpy(), np.random.default_rng(3)).min() < 0.0
    assert spec.apply_numpy(bright[0].permute(1, 2, 0).numpy(), np.random.default_rng(3)).max() > 1.0


def test_poisson_noise_is_not_clipped_above_one() -> None:
    bright = torch.full((1, 3, 32, 32), 0.95)
    spec = parse_noise("poisson:5")
    assert float(spec.apply(bright, generator=_gen(10)).max()) > 1.0
    assert spec.apply_numpy(bright[0].permute(1, 2, 0).numpy(), np.random.default_rng(4)).max() > 1.0


@pytest.mark.parametrize("name", ["gaussian5-50", "poisson5-50"])
def test_one_generator_per_image_makes_each_image_depend_on_its_own(name: str) -> None:
    """Per-image generators: an image gets the same noise alone or in any batch (DDP slices a batch)."""
    spec = parse_noise(name)
    clean = torch.rand(3, 3, 16, 16, generator=_gen(11))
    batch = spec.apply(clean, generator=[_gen(20), _gen(21), _gen(22)])
    for i in range(3):
        assert torch.equal(batch[i:i + 1], spec.apply(clean[i:i + 1], generator=[_gen(20 + i)]))
    with pytest.raises(ValueError, match="2 generators for 3 images"):
        spec.apply(clean, generator=[_gen(1), _gen(2)])


def test_poisson_gaussian_parses_round_trips_and_has_the_camera_variance() -> None:
    spec = parse_noise("poisson-gaussian:0.002,4e-6")
    assert (spec.kind, spec.lo, spec.read) == ("poisson-gaussian", 0.002, 4e-6)
    assert parse_noise(spec.name) == spec
    x = torch.full((1, 4, 256, 256), 0.25)
    y = spec.apply(x, torch.Generator().manual_seed(0))
    assert abs(float(y.mean()) - 0.25) < 1e-3
    assert float(y.var()) == pytest.approx(0.002 * 0.25 + 4e-6, rel=0.03)
    z = spec.apply_numpy(np.full((128, 128, 4), 0.25, np.float32), np.random.default_rng(0))
    assert float(z.var()) == pytest.approx(0.002 * 0.25 + 4e-6, rel=0.05)
    for bad in ("poisson-gaussian:0,1e-5", "poisson-gaussian:0.01,-1", "poisson-gaussian:x,y"):
        with pytest.raises(ConfigError):
            parse_noise(bad)
