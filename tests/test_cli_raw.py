"""`n2n fit` and `n2n denoise` on raw files, through the real entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rawpy

from cli_run import Run, error_line
from n2ncli.io.dng import read_processing_record, write_dng
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


def test_denoise_raw_without_a_fitted_raw_model_uses_the_shipped_one(n2n: Callable[..., Run], chart: Path,
                                                                      tmp_path: Path) -> None:
    run = n2n("denoise", chart, "-o", tmp_path / "out.dng")
    assert run.code == 0, run.err
    assert "raw-camera" in run.out + run.err
    assert read_processing_record(tmp_path / "out.dng")["model"] == "raw-camera"


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


def _damaged(source: Path, target: Path, share: float, flip: bool = False) -> Path:
    """``source`` cut at ``share`` of its length, or with 4 KiB inverted there (``flip``)."""
    data = bytearray(source.read_bytes())
    at = int(len(data) * share)
    if flip:
        data[at:at + 4096] = bytes(b ^ 0xFF for b in data[at:at + 4096])
    else:
        del data[at:]
    target.write_bytes(bytes(data))
    return target


@pytest.mark.parametrize("target", ["out.tiff", "out.dng"])
def test_a_truncated_real_raw_named_alone_is_one_error_line(n2n: Callable[..., Run], chart: Path, tmp_path: Path,
                                                            tiny_raw_model: str, target: str) -> None:
    bad = _damaged(chart, tmp_path / "bad.dng", 0.5)
    run = n2n("denoise", bad, "-o", tmp_path / target)
    assert run.code == 1
    assert error_line(run) == f"error: {bad}: truncated raw file (LibRaw: Unexpected end of file)"
    assert "internal error" not in run.err and not (tmp_path / target).exists()


def test_a_folder_run_writes_the_good_real_raws_and_reports_each_damaged_one(
        n2n: Callable[..., Run], shared_data: Path, kdc: Path, chart: Path, tmp_path: Path,
        tiny_raw_model: str) -> None:
    """Real raws cut short or corrupted, beside good ones: one error line each naming the file and
    the reason, the good ones written, a summary, exit 1 (docs/usage.md)."""
    import synthetic_raw

    folder = tmp_path / "card"
    folder.mkdir()
    (folder / "good.kdc").write_bytes(kdc.read_bytes())
    synthetic_raw.bayer_dng(folder / "good.dng", "GRBG", 64, 96)
    _damaged(chart, folder / "cut.dng", 0.9)
    _damaged(shared_data / "raw" / "canon_powershot_s40.crw", folder / "flipped.crw", 0.5, flip=True)
    _damaged(shared_data / "raw" / "kodak_dc120_jpeg.kdc", folder / "short.kdc", 0.5)
    run = n2n("denoise", folder, "-o", tmp_path / "out", "--format", "tif")
    assert run.code == 1, run.err
    assert "Traceback" not in run.err and "internal error" not in run.err
    errors = sorted(line for line in run.err.splitlines() if line.startswith("error:"))
    assert errors == [f"error: {folder / 'cut.dng'}: truncated raw file (LibRaw: Unexpected end of file)",
                      f"error: {folder / 'flipped.crw'}: corrupt raw data (LibRaw: data corrupted at 1261959)",
                      f"error: {folder / 'short.kdc'}: truncated raw file (LibRaw: Premature end of JPEG file)"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.dng.n2n.tif", "good.kdc.n2n.tif"]
    assert "wrote 2" in run.err and "failed 3" in run.err


def test_a_kind_found_only_by_the_decode_is_skipped_not_failed(n2n: Callable[..., Run], tmp_path: Path,
                                                               tiny_raw_model: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Without LibRaw's C API the header cannot tell X-Trans: the decode refuses it, and the run
    counts it as skipped exactly as a header refusal (exit 0 in a folder, 1 named alone)."""
    import synthetic_raw
    from n2ncli.io import raw as raw_module

    monkeypatch.setattr(raw_module, "_libraw_c", lambda: None)
    folder = tmp_path / "card"
    folder.mkdir()
    synthetic_raw.bayer_dng(folder / "a.dng", "RGGB", 64, 96)
    synthetic_raw.xtrans_dng(folder / "b.dng")
    run = n2n("denoise", folder, "-o", tmp_path / "out")
    assert run.code == 0, run.err
    text = " ".join(run.err.split())
    assert f"warning: skipped {folder / 'b.dng'}: X-Trans sensor" in text and "wrote 1, skipped 1 file(s)" in text
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.n2n.dng"]
    alone = n2n("denoise", folder / "b.dng", "-o", tmp_path / "b.tif")
    assert alone.code == 1 and f"{folder / 'b.dng'}: X-Trans sensor" in error_line(alone)


def _n2n_process(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "n2ncli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_raw_refused_by_its_header_is_exactly_one_line_in_a_real_process(kdc: Path, tmp_path: Path) -> None:
    _damaged(kdc, tmp_path / "cut.kdc", 0.001)
    proc = _n2n_process("denoise", "cut.kdc", "-o", "out.tif", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == ["error: cut.kdc: truncated or corrupt raw file (LibRawIOError: Input/output error)"]


@pytest.mark.slow
def test_libraws_own_stderr_stays_off_a_real_processs_stderr(chart: Path, tmp_path: Path) -> None:
    """LibRaw prints "<file>: Unexpected end of file" to C's stderr while decoding: only our line
    (after the model's status line) reaches the terminal, no traceback."""
    _damaged(chart, tmp_path / "cut.dng", 0.5)
    proc = _n2n_process("denoise", "cut.dng", "-m", "raw-camera", "-o", "out.tif", cwd=tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert lines[-1] == "error: cut.dng: truncated raw file (LibRaw: Unexpected end of file)"
    assert [line for line in lines if "end of file" in line or line.startswith("error")] == lines[-1:]
    assert "Traceback" not in proc.stderr and len(lines) == 2 and lines[0].startswith("model raw-camera")


def test_progress_printed_while_libraw_holds_fd_2_still_reaches_the_terminal(tmp_path: Path) -> None:
    """fd 2 is one per process: while a reader thread has it in LibRaw's capture, what Python
    prints on another thread (progress, warnings) goes out on the CLI's own copy of it."""
    script = """
import os, sys, threading
from pathlib import Path
from n2ncli.cli import _own_stderr
from n2ncli.io.raw import _libraw_stderr
held, done, said = threading.Event(), threading.Event(), []
def libraw():
    with _libraw_stderr(Path("x.dng"), said):
        os.write(2, b"x.dng: Unexpected end of file\\n")
        held.set()
        done.wait()
with _own_stderr():
    reader = threading.Thread(target=libraw)
    reader.start()
    held.wait()
    print("images 1/2", file=sys.stderr)
    done.set()
    reader.join()
print(said, file=sys.stderr)
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == ["images 1/2", "['Unexpected end of file']"]


def test_dngs_are_lossless_jpeg_unless_dng_compression_none(n2n: Callable[..., Run], kdc: Path, tmp_path: Path,
                                                             tiny_raw_model: str) -> None:
    from n2ncli.io.tiff import COMPRESSION, read_tiff_ifds

    for flags, name, compression in (((), "default.dng", 7), (("--dng-compression", "none"), "plain.dng", 1)):
        run = n2n("denoise", kdc, "-o", tmp_path / name, *flags)
        assert run.code == 0, run.err
        assert read_tiff_ifds(tmp_path / name).ifds[0].tags[COMPRESSION].value == (compression,)
    with rawpy.imread(str(tmp_path / "default.dng")) as a, rawpy.imread(str(tmp_path / "plain.dng")) as b:
        np.testing.assert_array_equal(a.raw_image, b.raw_image)
    assert (tmp_path / "default.dng").stat().st_size < (tmp_path / "plain.dng").stat().st_size


def test_an_unknown_dng_compression_is_one_error_line(n2n: Callable[..., Run], kdc: Path, tmp_path: Path) -> None:
    run = n2n("denoise", kdc, "-o", tmp_path / "out.dng", "--dng-compression", "zip")
    assert run.code == 1
    assert error_line(run) == "error: --dng-compression must be lossless or none, got 'zip'"
    assert not (tmp_path / "out.dng").exists()


def test_a_raw_keeps_its_local_mean_unless_no_keep_mean(n2n: Callable[..., Run], kdc: Path, tmp_path: Path) -> None:
    """The shipped raw model after its noise guard, with the local mean kept (the default) and
    without: different mosaics, each recorded in the DNG's processing record."""
    for flags, name in (((), "kept.dng"), (("--no-keep-mean",), "bare.dng")):
        run = n2n("denoise", kdc, "-m", "raw-camera", "-o", tmp_path / name, *flags)
        assert run.code == 0, run.err
        assert read_processing_record(tmp_path / name)["settings"]["keep_mean"] is (not flags)
    kept, bare = _visible(tmp_path / "kept.dng"), _visible(tmp_path / "bare.dng")
    assert kept.shape == bare.shape and not np.array_equal(kept, bare)
