"""The denoise pipeline on the shipped model: tiling, output planning, bit depth and metadata."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms

import torch_threads

from n2ncli.backends.torch import TorchPredictor
from identity import Identity
from n2ncli.denoise import ALIGN, TileOptions, denoise_array, denoise_image_data, mirror_index, run_job
from n2ncli.jobs import Job, plan_batch, plan_jobs
from n2ncli.errors import ConfigError, ImageReadError, ImageWriteError
from n2ncli.io.image import FLOAT_DEPTH, ImageData, float_to_native, read_image, write_image
from n2ncli.store import DEFAULT_MODELS, SHIPPED_DIR, build_model, read_record
from n2ncli.tiling import tile_grid

MAKE, ARTIST = 271, 315


class Counting:
    """The real predictor, plus a record of how many images each network call received."""

    def __init__(self, inner: TorchPredictor) -> None:
        self.inner = inner
        self.channels = inner.channels
        self.batch_sizes: list[int] = []

    def predict(self, batch: np.ndarray) -> np.ndarray:
        self.batch_sizes.append(batch.shape[0])
        return self.inner.predict(batch)


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """One torch thread for module-scoped model runs (two threads thrash on a busy 2-core box)."""
    with torch_threads.single_thread():
        yield


@pytest.fixture(scope="module")
def predictor() -> TorchPredictor:
    """The shipped default sRGB model on CPU, loaded from the package (not the user store)."""
    record = read_record(SHIPPED_DIR / DEFAULT_MODELS["srgb"], shipped=True)
    return TorchPredictor(build_model(record), "cpu")


def _psnr(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10.0 * math.log10(peak * peak / mse)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _png(path: Path, shape: tuple[int, ...] = (8, 8, 3)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros(shape, np.uint8)).save(path)
    return path


# ----------------------------------------------------------------------------- tiled == whole


@pytest.fixture(scope="module")
def noisy_crop(kodak_crop: Callable[..., np.ndarray]) -> np.ndarray:
    """160x224 Kodak crop + seeded Gaussian noise sigma 25, float32 (not clipped, as the protocol)."""
    clean = kodak_crop(100, 200, 160, 224).astype(np.float32) / 255.0
    rng = np.random.default_rng(5)
    return (clean + rng.normal(0.0, 25.0 / 255.0, clean.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def whole(noisy_crop: np.ndarray, predictor: TorchPredictor, single_thread: None) -> np.ndarray:
    return np.clip(denoise_array(noisy_crop, predictor, TileOptions(tile=0)), 0.0, 1.0)


@pytest.mark.parametrize("batch", [1, 2])
def test_tiled_output_matches_whole_image(noisy_crop: np.ndarray, whole: np.ndarray, predictor: TorchPredictor,
                                          single_thread: None, batch: int) -> None:
    """4 tiles of 128 px with 64 px context stay within one 8-bit level of the whole-image result.

    Measured max |diff| here: 0.57/255. Tiling is not exact (the U-Net's receptive field is
    wider than tile + context); on other crops tile 128 reached 1.05-1.5/255.
    """
    options = TileOptions(tile=128, overlap=32, context=64, batch=batch)
    assert len(tile_grid(160, 224, 128, 32, align=ALIGN)) == 4
    counting = Counting(predictor)
    progress: list[tuple[int, int]] = []

    tiled = denoise_array(noisy_crop, counting, options, on_tile=lambda done, total: progress.append((done, total)))

    assert counting.batch_sizes == [batch] * (4 // batch)
    assert progress[-1] == (4, 4)
    diff = np.abs(np.clip(tiled, 0.0, 1.0) - whole)
    assert diff.max() <= 1.0 / 255.0, f"max diff {diff.max() * 255:.3f}/255"
    assert diff.mean() <= 0.05 / 255.0, f"mean diff {diff.mean() * 255:.4f}/255"


@pytest.mark.parametrize(("n", "margin"), [(1, 0), (1, 5), (2, 3), (3, 7), (5, 4), (7, 20), (33, 64)])
def test_mirror_index_matches_numpy_reflect(n: int, margin: int) -> None:
    positions = np.arange(-margin, n + margin)

    expected = np.pad(np.arange(n), margin, mode="reflect")

    np.testing.assert_array_equal(mirror_index(positions, n), expected)


# ----------------------------------------------------------------------------- plan_jobs


def test_default_output_goes_beside_the_input(tmp_path: Path) -> None:
    a = _png(tmp_path / "a.png")
    b = tmp_path / "sub" / "b.JPG"
    b.parent.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(b, format="JPEG")

    jobs = plan_jobs([a, b], None)

    assert jobs == [Job(a, tmp_path / "a.n2n.png"), Job(b, tmp_path / "sub" / "b.n2n.jpg")]


def test_format_option_changes_the_extension(tmp_path: Path) -> None:
    a = _png(tmp_path / "a.png")

    assert plan_jobs([a], None, suffix=".tif") == [Job(a, tmp_path / "a.n2n.tif")]


def test_output_folder(tmp_path: Path) -> None:
    a, b = _png(tmp_path / "in" / "a.png"), _png(tmp_path / "in" / "b.png")
    out = tmp_path / "out"
    out.mkdir()

    assert plan_jobs([a, b], out) == [Job(a, out / "a.n2n.png"), Job(b, out / "b.n2n.png")]


def test_output_file_for_one_input(tmp_path: Path) -> None:
    a = _png(tmp_path / "a.png")

    assert plan_jobs([a], tmp_path / "clean.tif") == [Job(a, tmp_path / "clean.tif")]


def test_output_file_with_two_inputs_is_refused(tmp_path: Path) -> None:
    a, b = _png(tmp_path / "a.png"), _png(tmp_path / "b.png")

    with pytest.raises(ConfigError, match="names one file but there are 2 inputs"):
        plan_jobs([a, b], tmp_path / "out.png")


@pytest.mark.parametrize("overwrite", [False, True])
def test_output_equal_to_input_is_refused(tmp_path: Path, overwrite: bool) -> None:
    a = _png(tmp_path / "a.png")

    with pytest.raises(ImageWriteError, match="refusing to overwrite the input"):
        plan_jobs([a], tmp_path / "." / "a.png", overwrite=overwrite)


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    a = _png(tmp_path / "a.png")
    existing = _png(tmp_path / "a.n2n.png")

    with pytest.raises(ImageWriteError, match="exists already"):
        plan_jobs([a], None)
    assert plan_jobs([a], None, overwrite=True) == [Job(a, existing)]


def test_folder_input_skips_previous_outputs(tmp_path: Path) -> None:
    a = _png(tmp_path / "a.png")
    _png(tmp_path / "a.n2n.png")
    c = _png(tmp_path / "deeper" / "c.png")
    (tmp_path / "notes.txt").write_text("not an image")

    jobs = plan_jobs([tmp_path], None, overwrite=True)

    assert [j.source for j in jobs] == [a, c]


def test_missing_input_is_a_read_error(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="file not found"):
        plan_jobs([tmp_path / "missing.png"], None)


def test_two_inputs_with_one_output_name_are_refused(tmp_path: Path) -> None:
    a1, a2 = _png(tmp_path / "one" / "a.png"), _png(tmp_path / "two" / "a.png")
    out = tmp_path / "out"
    out.mkdir()

    with pytest.raises(ImageWriteError, match="same output name"):
        plan_jobs([a1, a2], out)


def test_same_stem_in_two_formats_keeps_the_source_extension(tmp_path: Path) -> None:
    a_png = _png(tmp_path / "IMG_1.png")
    a_tif = tmp_path / "IMG_1.tiff"
    write_image(a_tif, np.zeros((8, 8, 3), np.uint8))
    b = _png(tmp_path / "b.png")

    jobs = plan_jobs([tmp_path], None, suffix=".png")

    assert jobs == [Job(a_png, tmp_path / "IMG_1.png.n2n.png"), Job(a_tif, tmp_path / "IMG_1.tiff.n2n.png"),
                    Job(b, tmp_path / "b.n2n.png")]
    assert plan_jobs([tmp_path], None, suffix=".png") == jobs  # predictable: the same names every time


def test_camera_raw_plus_jpeg_pair_gets_two_outputs(tmp_path: Path) -> None:
    """IMG_0001.JPG + IMG_0001.DNG (a camera's RAW+JPEG) under --format tif: both written, told apart."""
    jpg = tmp_path / "IMG_0001.JPG"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(jpg, format="JPEG")
    dng = tmp_path / "IMG_0001.DNG"
    dng.write_bytes(b"")  # planning never decodes

    targets = sorted(j.target.name for j in plan_jobs([tmp_path], tmp_path / "out", suffix=".tif"))

    assert targets == ["IMG_0001.DNG.n2n.tif", "IMG_0001.JPG.n2n.tif"]


def test_a_folder_input_keeps_its_subfolders_under_the_output_folder(tmp_path: Path) -> None:
    a1, a2 = _png(tmp_path / "in" / "one" / "a.png"), _png(tmp_path / "in" / "two" / "a.png")
    out = tmp_path / "out"

    assert plan_jobs([tmp_path / "in"], out) == [Job(a1, out / "one" / "a.n2n.png"), Job(a2, out / "two" / "a.n2n.png")]


def test_unreadable_folder_entries_are_listed_not_raised(tmp_path: Path) -> None:
    good = _png(tmp_path / "good.png")
    (tmp_path / "loop.png").symlink_to("loop.png")
    (tmp_path / "dangling.png").symlink_to(tmp_path / "gone.png")

    plan = plan_batch([tmp_path], tmp_path / "out")

    assert plan.jobs == [Job(good, tmp_path / "out" / "good.n2n.png")]
    assert plan.unreadable == [f"{tmp_path / 'dangling.png'}: dangling symlink (its target does not exist)",
                               f"{tmp_path / 'loop.png'}: symlink loop"]


def test_a_missing_file_among_several_is_listed(tmp_path: Path) -> None:
    a = _png(tmp_path / "a.png")

    plan = plan_batch([a, tmp_path / "missing.png"], None)

    assert plan.jobs == [Job(a, tmp_path / "a.n2n.png")]
    assert plan.unreadable == [f"{tmp_path / 'missing.png'}: file not found"]


# ----------------------------------------------------------------------------- run_job


@pytest.fixture(scope="module")
def clean16(kodak_crop: Callable[..., np.ndarray]) -> np.ndarray:
    return kodak_crop(200, 300, 64, 96).astype(np.uint16) * 257


@pytest.fixture
def noisy16_png(tmp_path: Path, clean16: np.ndarray) -> Path:
    """A 16-bit PNG: Kodak crop x257 + Gaussian noise sigma 25/255 of full scale, seeded."""
    rng = np.random.default_rng(16)
    noisy = np.clip(clean16 + rng.normal(0.0, 25.0 * 257, clean16.shape), 0, 65535).round().astype(np.uint16)
    path = tmp_path / "noisy16.png"
    write_image(path, noisy)
    return path


def _decode(path: Path) -> np.ndarray:
    """Read an output with the codec libraries directly, not through n2ncli's reader."""
    if path.suffix == ".png":
        return imagecodecs.png_decode(path.read_bytes())
    if path.suffix == ".tif":
        return tifffile.imread(path)
    with Image.open(path) as im:
        assert im.mode == "RGB"
        return np.asarray(im)


@pytest.mark.parametrize(("suffix", "dtype"), [(".png", np.uint16), (".tif", np.uint16), (".jpg", np.uint8)])
def test_run_job_keeps_16_bit_where_the_format_can(noisy16_png: Path, clean16: np.ndarray, tmp_path: Path,
                                                   predictor: TorchPredictor, one_thread: None,
                                                   suffix: str, dtype: type) -> None:
    target = tmp_path / f"out{suffix}"

    run_job(Job(noisy16_png, target), predictor)

    out = _decode(target)
    assert out.dtype == dtype and out.shape == clean16.shape
    noisy = imagecodecs.png_decode(noisy16_png.read_bytes())
    if dtype is np.uint16:
        assert np.count_nonzero(out % 257) > out.size // 2, "16-bit output holds only 8-bit values"
        assert _psnr(out, clean16, 65535) > _psnr(noisy, clean16, 65535) + 4.0
    else:
        assert _psnr(out, clean16 // 257, 255) > _psnr(noisy, clean16, 65535) + 4.0


@pytest.fixture(scope="module")
def icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif"])
def test_run_job_carries_exif_and_icc(tmp_path: Path, kodak_crop: Callable[..., np.ndarray], icc: bytes,
                                      predictor: TorchPredictor, one_thread: None, suffix: str) -> None:
    exif = Image.Exif()
    exif[MAKE] = "TestCam"
    exif[ARTIST] = "N. Neighbour"
    source = tmp_path / "photo.png"
    Image.fromarray(kodak_crop(0, 0, 48, 64)).save(source, exif=exif.tobytes(), icc_profile=icc)
    target = tmp_path / f"photo.n2n{suffix}"

    run_job(Job(source, target), predictor)

    with Image.open(target) as im:
        assert im.info.get("icc_profile") == icc
        tags = im.getexif()
        assert tags.get(MAKE) == "TestCam" and tags.get(ARTIST) == "N. Neighbour"


def test_grey_input_stays_grey(tmp_path: Path, kodak_crop: Callable[..., np.ndarray], predictor: TorchPredictor,
                               one_thread: None) -> None:
    clean = kodak_crop(200, 300, 64, 96).mean(axis=2).round().astype(np.uint8)
    rng = np.random.default_rng(1)
    noisy = np.clip(clean + rng.normal(0.0, 25.0, clean.shape), 0, 255).round().astype(np.uint8)
    source, target = tmp_path / "grey.png", tmp_path / "grey.n2n.png"
    Image.fromarray(noisy, mode="L").save(source)

    run_job(Job(source, target), predictor)

    with Image.open(target) as im:
        assert im.mode == "L"
        out = np.asarray(im)
    assert out.shape == clean.shape
    assert read_image(target).pixels.shape == (64, 96, 1)
    # Only ~+2.3 dB here (colour crops gain ~+8 dB): the three replicated channels carry identical
    # noise, unlike the independent per-channel noise the RGB model was trained on.
    assert _psnr(out, clean, 255) > _psnr(noisy, clean, 255) + 1.0


def test_input_file_is_never_modified(noisy16_png: Path, tmp_path: Path, predictor: TorchPredictor,
                                      one_thread: None) -> None:
    before, mtime = _sha(noisy16_png), noisy16_png.stat().st_mtime_ns

    run_job(Job(noisy16_png, tmp_path / "elsewhere.png"), predictor)

    assert _sha(noisy16_png) == before and noisy16_png.stat().st_mtime_ns == mtime


# ------------------------------------------------------------------ float TIFF outside [0, 1]


def test_float_tiff_values_outside_unit_range_survive_the_denoise_path(
        tmp_path: Path, kodak_crop: Callable[..., np.ndarray]) -> None:
    """Through a model that changes nothing, a float TIFF comes back as a float TIFF bit for bit:
    highlights above 1, negatives, NaN and infinity included. To PNG it is clipped to 16 bits."""
    wide = (kodak_crop(200, 300, 64, 96) / 255.0 * 3.0 - 0.8).astype(np.float32)
    wide[0, 0, 0], wide[1, 1, 1], wide[2, 2, 2] = np.nan, np.inf, -np.inf
    assert np.sum(wide > 1) > 1000 and np.sum(wide < 0) > 1000
    source = write_image(tmp_path / "hdr.tif", wide, bit_depth=32)

    run_job(Job(source, tmp_path / "hdr.n2n.tif"), Identity())
    run_job(Job(source, tmp_path / "hdr.n2n.png"), Identity())

    out = read_image(tmp_path / "hdr.n2n.tif")
    assert out.is_float
    np.testing.assert_array_equal(out.pixels, wide)
    png = read_image(tmp_path / "hdr.n2n.png")
    assert png.bit_depth == 16
    np.testing.assert_array_equal(png.pixels, float_to_native(np.where(np.isnan(wide), 0.0, wide), 16))


def test_float_tiff_in_range_pixels_are_denoised_as_in_a_16_bit_image(
        kodak_crop: Callable[..., np.ndarray], predictor: TorchPredictor, one_thread: None) -> None:
    """The network sees the float image clipped to [0, 1], so every output pixel equals the
    16-bit path's on the same clipped values, plus the excess cut off (only where there was one)."""
    clean = kodak_crop(100, 200, 64, 96) / 255.0
    rng = np.random.default_rng(11)
    noisy16 = float_to_native(clean + rng.normal(0.0, 25.0 / 255.0, clean.shape), 16)
    wide = noisy16.astype(np.float32) / np.float32(65535)  # as to_float() of the 16-bit image
    wide[:16, :24] += np.float32(1.2)  # a highlight patch, all above 1
    wide[-16:, -24:] = -np.float32(0.2) - wide[-16:, -24:]  # a patch of negatives
    clipped16 = noisy16.copy()
    clipped16[:16, :24], clipped16[-16:, -24:] = 65535, 0

    out = denoise_image_data(ImageData(wide, FLOAT_DEPTH, None, None, Path("hdr.tif")), predictor)
    as16 = denoise_image_data(ImageData(clipped16, 16, None, None, Path("clipped.png")), predictor)

    excess = wide - np.clip(wide, 0.0, 1.0)
    np.testing.assert_array_equal(out, as16 + excess)
    assert (out[:16, :24] > 1).all() and (out[-16:, -24:] < 0).all()
    inside = np.ones(clean.shape[:2], bool)
    inside[:16, :24] = inside[-16:, -24:] = False
    assert _psnr(out[inside], clean[inside], 1.0) > _psnr(noisy16[inside] / 65535, clean[inside], 1.0) + 4.0


def test_a_second_pass_is_decided_once_for_the_whole_tiled_image(kodak_crop) -> None:
    """srgb-camera on a 4:2:0 JPEG at sigma 10, in 128 px tiles whose own shares of the second pass
    would differ (busy and flat parts): every tile takes the image's share, and the second pass
    reads the first pass's output around each tile, so the tiled output is the whole image's."""
    import io

    from n2ncli.pd import SecondPass
    from n2ncli.store import find_model

    clean = kodak_crop(0, 0, 256, 256, image="kodim08.png").astype(np.float32) / 255.0
    noisy = np.clip(np.round((clean + np.random.default_rng(1).normal(0, 10 / 255, clean.shape)) * 255), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(noisy.astype(np.uint8)).save(buf, format="JPEG", quality=92, subsampling=2)
    jpeg = np.asarray(Image.open(buf)).astype(np.float32) / 255.0
    camera = TorchPredictor(build_model(find_model("srgb-camera")), precision="fp32")
    second = SecondPass(camera, 1.0)
    tiled, whole = TileOptions(tile=128, overlap=32), TileOptions(tile=0)
    once = denoise_array(jpeg, camera, tiled)
    per_tile = [second.share(jpeg[y:y + 128, x:x + 128], once[y:y + 128, x:x + 128]) for y in (0, 128) for x in (0, 128)]
    assert max(per_tile) - min(per_tile) > 0.1  # the tiles alone would have disagreed
    share = second.share(jpeg, once)
    assert 0.0 < share < 1.0
    twice = denoise_array(np.clip(once, 0, 1).astype(np.float32), camera, tiled)
    out = denoise_array(jpeg, second, tiled)
    np.testing.assert_allclose(out, (1 - share) * once + share * twice, atol=1e-6)
    assert np.abs(out - denoise_array(jpeg, second, whole)).mean() < 1e-3
    ticks: list[tuple[int, int]] = []
    denoise_array(jpeg, second, tiled, on_tile=lambda d, n: ticks.append((d, n)))
    assert ticks[-1][0] == ticks[-1][1] and ticks[-1][1] == 2 * ticks[0][1]  # progress counts both passes
