"""`n2n denoise` with the formats photographers have and in shell pipelines: stdin/stdout,
--quality (matching a lossy input by default), --suffix, float TIFF, HEIC/AVIF/WebP folders.

Files are written in the tests from Kodak crops; pipes run the real command in a child process.
"""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from n2ncli.io.image import read_image, read_image_bytes
from cli_run import Run, error_line


def _n2n_proc(*args: object, cwd: Path, stdin: bytes | None = None, stdout: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "n2ncli", *map(str, args)], cwd=cwd, env=env, input=stdin,
                          stdout=stdout if stdout is not None else subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)


def _noisy(crop: np.ndarray, seed: int = 1, sigma: float = 12.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(crop + rng.normal(0, sigma, crop.shape), 0, 255).round().astype(np.uint8)


@pytest.fixture
def camera_jpeg(tmp_path: Path, kodak_crop: Callable[..., np.ndarray]) -> Path:
    """A noisy 96x128 JPEG as a camera writes it: quality 88, 4:2:0 chroma."""
    path = tmp_path / "IMG_1.jpg"
    Image.fromarray(_noisy(kodak_crop(100, 200, 96, 128))).save(path, quality=88, subsampling=2)
    return path


def test_stdin_to_stdout_with_a_chosen_format(tmp_path: Path, camera_jpeg: Path) -> None:
    proc = _n2n_proc("denoise", "-", "-o", "-", "--format", "png", cwd=tmp_path, stdin=camera_jpeg.read_bytes())
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout[:8] == b"\x89PNG\r\n\x1a\n"
    out = read_image_bytes(proc.stdout)
    assert out.pixels.shape == (96, 128, 3) and out.format == "PNG"
    assert b"wrote stdout" in proc.stderr and b"model" in proc.stderr  # messages stay off stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["IMG_1.jpg"]


def test_stdin_without_o_goes_to_stdout_in_the_inputs_format_and_quality(tmp_path: Path, camera_jpeg: Path) -> None:
    proc = _n2n_proc("denoise", "-", cwd=tmp_path, stdin=camera_jpeg.read_bytes())
    assert proc.returncode == 0, proc.stderr.decode()
    out, src = read_image_bytes(proc.stdout), read_image(camera_jpeg)
    assert out.format == "JPEG" and (out.quality, out.subsampling) == (src.quality, src.subsampling) == (88, "4:2:0")


def test_a_file_to_stdout_and_a_terminal_is_refused(tmp_path: Path, camera_jpeg: Path) -> None:
    to_file = _n2n_proc("denoise", camera_jpeg, "-o", "-", "--format", "webp", cwd=tmp_path)
    assert to_file.returncode == 0 and read_image_bytes(to_file.stdout).format == "WEBP"
    leader, follower = pty.openpty()
    try:
        tty = _n2n_proc("denoise", camera_jpeg, "-o", "-", cwd=tmp_path, stdout=follower)
    finally:
        os.close(follower)
        os.close(leader)
    assert tty.returncode == 1
    assert b"error: refusing to write image bytes to a terminal" in tty.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["-", "IMG_1.jpg"], "- (stdin) is the only input of its run"),
    (["IMG_1.jpg", "IMG_1.jpg", "-o", "-"], "-o - (stdout) takes one image"),
    (["-", "-o", "out.dng"], "give an image file name with -o"),
    (["IMG_1.jpg", "--quality", "0"], "--quality must be 1..100"),
    (["IMG_1.jpg", "--format", "bmp"], "unsupported image format 'bmp'"),
    (["IMG_1.jpg", "--suffix", "a/b"], "--suffix 'a/b'"),
])
def test_bad_stream_and_format_options_are_one_line(n2n: Callable[..., Run], camera_jpeg: Path,
                                                    monkeypatch: pytest.MonkeyPatch, args: list[str], message: str) -> None:
    monkeypatch.chdir(camera_jpeg.parent)
    run = n2n("denoise", *args)
    assert run.code == 1 and message in error_line(run)


def test_empty_stdin_is_one_line(tmp_path: Path) -> None:
    proc = _n2n_proc("denoise", "-", "-o", "-", cwd=tmp_path, stdin=b"")
    assert proc.returncode == 1 and proc.stdout == b""
    assert proc.stderr.decode().strip().splitlines()[-1] == "error: <stdin>: empty input (0 bytes)"


def test_quality_matches_a_lossy_input_unless_given(n2n: Callable[..., Run], tmp_path: Path, camera_jpeg: Path) -> None:
    assert n2n("denoise", camera_jpeg, "-o", tmp_path / "same.jpg").code == 0
    assert n2n("denoise", camera_jpeg, "-o", tmp_path / "q60.jpg", "--quality", "60").code == 0
    assert n2n("denoise", camera_jpeg, "-o", tmp_path / "as.webp").code == 0
    same, q60 = read_image(tmp_path / "same.jpg"), read_image(tmp_path / "q60.jpg")
    assert (same.quality, same.subsampling) == (88, "4:2:0")
    assert (q60.quality, q60.subsampling) == (60, "4:2:0")  # the input's chroma kept
    assert (tmp_path / "q60.jpg").stat().st_size < (tmp_path / "same.jpg").stat().st_size
    assert read_image(tmp_path / "as.webp").format == "WEBP"


def test_suffix_names_outputs_and_folder_reruns_skip_them(n2n: Callable[..., Run], camera_jpeg: Path) -> None:
    folder = camera_jpeg.parent
    assert n2n("denoise", folder, "--suffix", "_clean").code == 0
    assert sorted(p.name for p in folder.iterdir()) == ["IMG_1.jpg", "IMG_1_clean.jpg"]
    again = n2n("denoise", folder, "--suffix", "_clean", "--skip-existing")
    assert again.code == 0 and "nothing to do" in again.err  # IMG_1_clean.jpg is not an input
    run = n2n("denoise", camera_jpeg, "--suffix", "")
    assert run.code == 1 and "refusing to overwrite the input" in error_line(run)


def test_float_tiff_stays_float_with_values_outside_0_1(n2n: Callable[..., Run], tmp_path: Path,
                                                        kodak_crop: Callable[..., np.ndarray]) -> None:
    rng = np.random.default_rng(4)
    scene = kodak_crop(0, 0, 64, 96).astype(np.float32) / 255 * 1.6 - 0.2  # highlights > 1, shadows < 0
    noisy = (scene + rng.normal(0, 0.05, scene.shape)).astype(np.float32)
    tifffile.imwrite(tmp_path / "hdr.tif", noisy, photometric="rgb")
    run = n2n("denoise", tmp_path / "hdr.tif", "-o", tmp_path / "out.tif")
    assert run.code == 0, run.err
    out = tifffile.imread(tmp_path / "out.tif")
    assert out.dtype == np.float32 and out.shape == noisy.shape
    assert out.max() > 1.2 and out.min() < -0.1  # the excess went through
    inside = (noisy > 0.05) & (noisy < 0.95)
    err_in, err_out = np.abs(noisy - scene)[inside].mean(), np.abs(out - scene)[inside].mean()
    assert err_out < 0.75 * err_in  # denoised where the network sees the values


def test_a_folder_of_phone_formats_keeps_each_format(n2n: Callable[..., Run], tmp_path: Path,
                                                     kodak_crop: Callable[..., np.ndarray]) -> None:
    folder = tmp_path / "phone"
    folder.mkdir()
    img = Image.fromarray(_noisy(kodak_crop(50, 50, 64, 96)))
    import pillow_heif

    pillow_heif.from_pillow(img).save(folder / "a.heic", quality=90)
    img.save(folder / "b.avif", quality=90)
    img.save(folder / "c.webp", quality=90)
    run = n2n("denoise", folder, "-o", tmp_path / "out")
    assert run.code == 0, run.err
    formats = {p.name: read_image(p).format for p in sorted((tmp_path / "out").iterdir())}
    assert formats == {"a.n2n.heic": "HEIF", "b.n2n.avif": "AVIF", "c.n2n.webp": "WEBP"}
    with Image.open(io.BytesIO((tmp_path / "out" / "c.n2n.webp").read_bytes())) as im:
        assert im.size == (96, 64)
