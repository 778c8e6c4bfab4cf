"""`n2n fit` and `n2n denoise` on raw files, through the real entry point."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rawpy

from cli_run import Run, error_line
from n2ncli.io.dng import write_dng
from n2ncli.io.raw import read_raw

RAW_CAMERA_RMSE_SHARE = 0.45  # raw-camera on shot0.dng: measured 0.37 (a 200-step fit: 0.77)
SHOT, READ = 0.002, 4e-6  # Poisson-Gaussian noise in normalised units: ~125 DN RMS on this chart


def _visible(path: Path) -> np.ndarray:
    with rawpy.imread(str(path)) as raw:
        return raw.raw_image_visible.astype(np.float64)


@pytest.fixture
def tiny_raw_model(kdc: Path, one_thread: None) -> str:
    """A 1-step raw model in the test's store: the default for raws, quality beside the point."""
    from n2ncli.fit import FitRequest, fit

    return fit(FitRequest(inputs=(kdc,), name="tiny-raw", steps=1, crop=32)).record.name


@pytest.fixture(scope="module")
def noisy_copies(chart: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three DNG copies of the chart with synthetic camera noise (different draws)."""
    folder = tmp_path_factory.mktemp("noisy-raws")
    raw = read_raw(chart)
    clean = np.clip(raw.normalised(), 0, None)
    for i in range(3):
        rng = np.random.default_rng(i)
        noisy = rng.poisson(clean / SHOT) * SHOT + rng.normal(0.0, READ**0.5, clean.shape)
        write_dng(folder / f"shot{i}.dng", raw.with_visible(raw.to_dn(noisy.astype(np.float32))), chart,
                  software="n2ncli tests", record=None)
    return folder


@pytest.mark.slow
def test_fit_on_noisy_raws_then_denoise_lowers_the_error(n2n: Callable[..., Run], noisy_copies: Path, chart: Path,
                                                         tmp_path: Path, one_thread: None) -> None:
    fitted = n2n("fit", noisy_copies, "--name", "chart-raw", "--steps", 50, "--crop", 64)  # from raw-camera
    assert fitted.code == 0, fitted.err
    assert "from 3 raw file(s)" in " ".join(fitted.err.split())
    out = tmp_path / "clean.dng"
    run = n2n("denoise", noisy_copies / "shot0.dng", "-o", out)  # the newest raw model is the default
    assert run.code == 0, run.err
    reference = _visible(chart)
    noisy_rmse = np.sqrt(np.mean((_visible(noisy_copies / "shot0.dng") - reference) ** 2))
    denoised_rmse = np.sqrt(np.mean((_visible(out) - reference) ** 2))
    assert noisy_rmse > 100  # the test's noise dominates the chart's own
    assert denoised_rmse < 0.5 * noisy_rmse  # measured 0.39 (50 steps from raw-camera; 0.77 after 200 from scratch)


@pytest.mark.slow
def test_the_shipped_raw_model_denoises_a_noisy_chart(n2n: Callable[..., Run], noisy_copies: Path,
                                                     chart: Path, tmp_path: Path, one_thread: None) -> None:
    """No fit first: `n2n denoise photo.dng -m raw-camera -o out.dng` lowers the error."""
    out = tmp_path / "clean.dng"
    run = n2n("denoise", noisy_copies / "shot0.dng", "-m", "raw-camera", "-o", out)
    assert run.code == 0, run.err
    reference = _visible(chart)
    noisy_rmse = np.sqrt(np.mean((_visible(noisy_copies / "shot0.dng") - reference) ** 2))
    denoised_rmse = np.sqrt(np.mean((_visible(out) - reference) ** 2))
    assert denoised_rmse < RAW_CAMERA_RMSE_SHARE * noisy_rmse


def test_denoise_raw_without_a_fitted_raw_model_says_what_to_do(n2n: Callable[..., Run], chart: Path,
                                                                 tmp_path: Path) -> None:
    run = n2n("denoise", chart, "-o", tmp_path / "out.tif")
    assert run.code == 1
    line = error_line(run)
    assert "no raw model available - run `n2n fit` on a folder of raw files first" in line
    assert "-m raw-camera" in line
    assert not (tmp_path / "out.tif").exists()


def test_an_srgb_model_is_refused_for_raws(n2n: Callable[..., Run], chart: Path, tmp_path: Path) -> None:
    run = n2n("denoise", chart, "-m", "srgb-gaussian5-50", "-o", tmp_path / "out.dng")
    assert run.code == 1
    assert "is a srgb model; it cannot denoise raw files" in error_line(run)


def test_writing_an_image_as_dng_is_refused(n2n: Callable[..., Run], shared_data: Path, tmp_path: Path) -> None:
    run = n2n("denoise", shared_data / "kodak24" / "kodim01.png", "-o", tmp_path / "out.dng")
    assert run.code == 1
    assert "only raw files can be written as DNG" in error_line(run)


@pytest.mark.parametrize(("maker", "reason"), [
    ("xtrans_dng", "X-Trans sensor"),
    ("linear_raw_dng", "not a mosaic"),
    ("monochrome_dng", "monochrome sensor"),
    ("cmyg_dng", "colour filter 'GMCY' has C, M, Y filters, not R/G/B"),
])
def test_each_refused_kind_exits_1_with_the_file_and_reason(n2n: Callable[..., Run], tmp_path: Path,
                                                            maker: str, reason: str) -> None:
    import synthetic_raw

    path = tmp_path / "odd.dng"
    getattr(synthetic_raw, maker)(path)
    for command in (["denoise", path, "-o", tmp_path / "out.dng"], ["fit", path, "--steps", 1]):
        run = n2n(*command)
        assert run.code == 1
        assert f"{path}: {reason}" in error_line(run)


def test_a_folder_run_skips_refused_raws_with_a_warning_list(n2n: Callable[..., Run], tmp_path: Path,
                                                             tiny_raw_model: str) -> None:
    import synthetic_raw

    folder = tmp_path / "card"
    folder.mkdir()
    synthetic_raw.bayer_dng(folder / "a.dng", "GBRG", 64, 96)
    synthetic_raw.xtrans_dng(folder / "b.dng")
    synthetic_raw.linear_raw_dng(folder / "c.dng")
    run = n2n("denoise", folder, "-o", tmp_path / "out")
    assert run.code == 0, run.err
    text = " ".join(run.err.split())
    assert "skipped" in text and "b.dng: X-Trans sensor" in text and "c.dng: not a mosaic" in text
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.n2n.dng"]


def test_skip_existing_with_only_a_refused_raw_left_succeeds_with_its_warning(
        n2n: Callable[..., Run], tmp_path: Path, tiny_raw_model: str) -> None:
    """A folder run again with --skip-existing, the only file left being one n2n refuses: the same
    warning as the first run and 'nothing left to do', exit 0 - not that file's error."""
    import synthetic_raw

    folder = tmp_path / "card"
    folder.mkdir()
    synthetic_raw.bayer_dng(folder / "a.dng", "RGGB", 64, 96)
    synthetic_raw.xtrans_dng(folder / "b.dng")
    assert n2n("denoise", folder, "-o", tmp_path / "out").code == 0
    again = n2n("denoise", folder, "-o", tmp_path / "out", "--skip-existing")
    assert again.code == 0, again.err
    text = " ".join(again.err.split())
    assert "b.dng: X-Trans" in text and "nothing left to do" in text
    only_bad = n2n("denoise", folder / "b.dng", "-o", tmp_path / "b.tif")  # named alone: its own error
    assert only_bad.code == 1 and "X-Trans sensor" in error_line(only_bad)


def test_a_folder_run_reports_a_truncated_raw_and_a_symlink_loop_and_writes_the_rest(
        n2n: Callable[..., Run], tmp_path: Path, tiny_raw_model: str) -> None:
    """One line per bad entry, every good file written, a summary, and exit 1 (docs/usage.md)."""
    import synthetic_raw

    folder = tmp_path / "card"
    folder.mkdir()
    synthetic_raw.bayer_dng(folder / "a.dng", "RGGB", 64, 96)
    synthetic_raw.bayer_dng(tmp_path / "whole.dng", "RGGB", 64, 96)
    data = (tmp_path / "whole.dng").read_bytes()
    (folder / "b.dng").write_bytes(data[: len(data) * 2 // 3])  # the pixel data cut short
    synthetic_raw.bayer_dng(folder / "c.dng", "GRBG", 64, 96)
    (folder / "loop.dng").symlink_to("loop.dng")
    run = n2n("denoise", folder, "-o", tmp_path / "out")
    assert run.code == 1, run.err
    assert "Traceback" not in run.err and "internal error" not in run.err
    errors = [line for line in run.err.splitlines() if line.startswith("error:")]
    assert any("b.dng" in line for line in errors) and any("loop.dng: symlink loop" in line for line in errors)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.n2n.dng", "c.n2n.dng"]
    assert "wrote 2" in run.err and "failed 2" in run.err
