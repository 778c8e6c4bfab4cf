"""Image I/O: bit-exact round trips, metadata carried over, orientation, clean errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms, ImageOps

from n2ncli.errors import ConfigError, ImageReadError, ImageWriteError
from n2ncli.io.image import (
    IMAGE_EXTENSIONS,
    ImageData,
    apply_orientation,
    float_to_native,
    list_images,
    read_image,
    write_image,
)

KODIM01 = Path(__file__).resolve().parents[2].parent / "shared/data/kodak24/kodim01.png"
MAKE, DATETIME_ORIGINAL, ORIENTATION, EXIF_IFD = 271, 36867, 274, 0x8769


@pytest.fixture(scope="module")
def kodak() -> np.ndarray:
    """A 48x64x3 uint8 crop of kodim01 (real photo texture, small enough to stay fast)."""
    if not KODIM01.is_file():
        pytest.skip(f"Kodak data not found at {KODIM01}")
    with Image.open(KODIM01) as im:
        full = np.asarray(im.convert("RGB"))
    return np.ascontiguousarray(full[200:248, 300:364])


@pytest.fixture(scope="module")
def kodak16(kodak: np.ndarray) -> np.ndarray:
    """16-bit version with random low bits, so most values are not multiples of 257."""
    rng = np.random.default_rng(7)
    return kodak.astype(np.uint16) * 257 + rng.integers(0, 257, kodak.shape, dtype=np.uint16)


@pytest.fixture(scope="module")
def icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _exif(orientation: int | None = None) -> bytes:
    exif = Image.Exif()
    exif[MAKE] = "TestCam"
    if orientation is not None:
        exif[ORIENTATION] = orientation
    exif[EXIF_IFD] = {DATETIME_ORIGINAL: "2021:06:01 12:34:56"}
    return exif.tobytes()


def _parse(exif: bytes | None) -> Image.Exif:
    assert exif is not None
    parsed = Image.Exif()
    parsed.load(exif)
    return parsed


def test_extensions_are_lower_case() -> None:
    assert IMAGE_EXTENSIONS == {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".heic", ".heif", ".hif", ".avif", ".webp"}


def test_png_8bit_round_trip_is_exact(tmp_path: Path, kodak: np.ndarray) -> None:
    out = write_image(tmp_path / "a.png", kodak)
    data = read_image(out)
    assert data.bit_depth == 8 and data.pixels.dtype == np.uint8
    np.testing.assert_array_equal(data.pixels, kodak)
    assert data.source == out and data.warnings == ()


def test_png_16bit_rgb_round_trip_is_bit_exact(tmp_path: Path, kodak16: np.ndarray) -> None:
    assert np.mean(kodak16 % 257 != 0) > 0.9  # values an 8-bit path could not carry
    out = write_image(tmp_path / "a.png", kodak16)
    data = read_image(out)
    assert data.bit_depth == 16
    np.testing.assert_array_equal(data.pixels, kodak16)
    with Image.open(out) as im:  # what Pillow (imageio's default) would have given us
        assert np.asarray(im).dtype == np.uint8


def test_tiff_16bit_round_trip_is_bit_exact(tmp_path: Path, kodak16: np.ndarray) -> None:
    data = read_image(write_image(tmp_path / "a.tiff", kodak16))
    assert data.bit_depth == 16
    np.testing.assert_array_equal(data.pixels, kodak16)


@pytest.mark.parametrize("name", ["g.png", "g.tif"])
def test_grey_gives_channel_axis(tmp_path: Path, kodak: np.ndarray, name: str) -> None:
    grey = kodak[..., 1]
    data = read_image(write_image(tmp_path / name, grey))
    assert data.pixels.shape == (*grey.shape, 1)
    np.testing.assert_array_equal(data.pixels[..., 0], grey)


def test_rgba_png_drops_alpha_with_warning(tmp_path: Path, kodak: np.ndarray) -> None:
    Image.fromarray(kodak).convert("RGBA").save(tmp_path / "a.png")
    data = read_image(tmp_path / "a.png")
    np.testing.assert_array_equal(data.pixels, kodak)
    assert "dropped alpha channel" in data.warnings


def test_palette_and_1bit_png_are_expanded(tmp_path: Path, kodak: np.ndarray) -> None:
    palette = Image.fromarray(kodak).convert("P")
    palette.save(tmp_path / "p.png")
    palette.convert("1").save(tmp_path / "b.png")
    rgb = read_image(tmp_path / "p.png").pixels
    np.testing.assert_array_equal(rgb, np.asarray(palette.convert("RGB")))
    bits = read_image(tmp_path / "b.png").pixels
    assert bits.shape == (*kodak.shape[:2], 1) and set(np.unique(bits)) <= {0, 255}


def test_palette_tiff_is_expanded_to_rgb(tmp_path: Path, kodak: np.ndarray) -> None:
    palette = Image.fromarray(kodak).convert("P")
    palette.save(tmp_path / "p.tif")
    data = read_image(tmp_path / "p.tif")
    assert data.bit_depth == 8
    np.testing.assert_array_equal(data.pixels, np.asarray(palette.convert("RGB")))


def test_jpeg_keeps_exif_and_icc(tmp_path: Path, kodak: np.ndarray, icc: bytes) -> None:
    out = write_image(tmp_path / "a.jpg", kodak, exif=_exif(), icc_profile=icc, quality=95)
    data = read_image(out)
    assert data.icc_profile == icc
    exif = _parse(data.exif)
    assert exif[MAKE] == "TestCam"
    assert exif.get_ifd(EXIF_IFD)[DATETIME_ORIGINAL] == "2021:06:01 12:34:56"
    assert np.abs(data.pixels.astype(int) - kodak).mean() < 3
    with Image.open(out) as im:
        assert im.info["icc_profile"] == icc
        assert im.layer[0][1:3] == im.layer[1][1:3] == (1, 1)  # 4:4:4 at quality >= 90


@pytest.mark.parametrize("name", ["a.png", "a.tif"])
def test_lossless_formats_keep_icc_and_exif(
    tmp_path: Path, kodak16: np.ndarray, icc: bytes, name: str
) -> None:
    out = write_image(tmp_path / name, kodak16, exif=_exif(), icc_profile=icc)
    data = read_image(out)
    assert data.icc_profile == icc
    assert _parse(data.exif)[MAKE] == "TestCam"
    with Image.open(out) as im:  # other programs see the metadata too
        assert im.info["icc_profile"] == icc
        assert im.getexif()[MAKE] == "TestCam"


@pytest.mark.parametrize("bits", [8, 16])
def test_tiff_keeps_the_exif_and_gps_sub_ifds(tmp_path: Path, kodak: np.ndarray, kodak16: np.ndarray,
                                              bits: int) -> None:
    """Exposure, ISO, lens and GPS survive into a TIFF (tifffile alone cannot write the sub-IFDs),
    and read back, pixels untouched."""
    from PIL.TiffImagePlugin import IFDRational

    exif = Image.Exif()
    exif[MAKE] = "TestCam"
    exif[EXIF_IFD] = {DATETIME_ORIGINAL: "2021:06:01 12:34:56", 33434: IFDRational(1, 250),
                      33437: IFDRational(28, 10), 34855: 800, 42036: "TestLens 35mm"}
    exif[0x8825] = {1: "N", 2: (IFDRational(48), IFDRational(51), IFDRational(0))}
    pixels = kodak if bits == 8 else kodak16
    out = write_image(tmp_path / "a.tif", pixels, exif=exif.tobytes())
    data = read_image(out)
    assert np.array_equal(data.pixels, pixels)
    shot = _parse(data.exif).get_ifd(EXIF_IFD)
    assert shot[DATETIME_ORIGINAL] == "2021:06:01 12:34:56" and shot[34855] == 800
    assert float(shot[33434]) == pytest.approx(1 / 250) and float(shot[33437]) == pytest.approx(2.8)
    with tifffile.TiffFile(out) as tif:
        tags = tif.pages[0].tags
        assert tags[34665].value["LensModel"] == "TestLens 35mm"
        assert tags[34853].value["GPSLatitudeRef"] == "N"


def test_png_keeps_exif_sub_ifd(tmp_path: Path, kodak: np.ndarray) -> None:
    data = read_image(write_image(tmp_path / "a.png", kodak, exif=_exif()))
    assert _parse(data.exif).get_ifd(EXIF_IFD)[DATETIME_ORIGINAL] == "2021:06:01 12:34:56"


def test_jpeg_orientation_6_is_applied(tmp_path: Path, kodak: np.ndarray) -> None:
    path = tmp_path / "rot.jpg"
    Image.fromarray(kodak).save(path, quality=95, exif=_exif(orientation=6))
    data = read_image(path)
    assert data.pixels.shape == (kodak.shape[1], kodak.shape[0], 3)
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im))
    np.testing.assert_array_equal(data.pixels, expected)
    exif = _parse(data.exif)
    assert exif[ORIENTATION] == 1
    assert exif.get_ifd(EXIF_IFD)[DATETIME_ORIGINAL] == "2021:06:01 12:34:56"
    assert data.pixels.flags.c_contiguous


@pytest.mark.parametrize("orientation", range(1, 9))
def test_png_orientation_matches_pillow(
    tmp_path: Path, kodak: np.ndarray, orientation: int
) -> None:
    crop = kodak[:12, :20]
    data = read_image(write_image(tmp_path / "o.png", crop, exif=_exif(orientation)))
    image = Image.fromarray(crop)
    image.getexif()[ORIENTATION] = orientation
    expected = np.asarray(ImageOps.exif_transpose(image))
    np.testing.assert_array_equal(data.pixels, expected)
    np.testing.assert_array_equal(apply_orientation(crop, orientation), expected)
    assert _parse(data.exif)[ORIENTATION] == 1


def test_tiff_orientation_tag_is_applied(tmp_path: Path, kodak: np.ndarray) -> None:
    path = tmp_path / "o.tif"
    tifffile.imwrite(path, kodak, photometric="rgb", extratags=[(ORIENTATION, "H", 1, 8, True)])
    data = read_image(path)
    np.testing.assert_array_equal(data.pixels, np.rot90(kodak, 1))
    assert _parse(data.exif)[ORIENTATION] == 1


def _truncated_png(folder: Path, kodak: np.ndarray) -> Path:
    whole = write_image(folder / "whole.png", kodak).read_bytes()
    path = folder / "cut.png"
    path.write_bytes(whole[: len(whole) // 2])
    return path


def _text_as_png(folder: Path, kodak: np.ndarray) -> Path:
    path = folder / "notes.png"
    path.write_text("not an image\nsecond line\n")
    return path


def _empty_jpeg(folder: Path, kodak: np.ndarray) -> Path:
    path = folder / "empty.jpg"
    path.touch()
    return path


def _missing(folder: Path, kodak: np.ndarray) -> Path:
    return folder / "missing.png"


def _folder(folder: Path, kodak: np.ndarray) -> Path:
    path = folder / "dir.png"
    path.mkdir()
    return path


def _int32_tiff(folder: Path, kodak: np.ndarray) -> Path:
    path = folder / "int32.tif"
    tifffile.imwrite(path, kodak.astype(np.int32), photometric="rgb")
    return path


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_truncated_png, "cannot decode PNG"),
        (_text_as_png, "not a PNG, JPEG, TIFF, HEIF/HEIC, AVIF or WebP image"),
        (_empty_jpeg, "empty file"),
        (_missing, "not found"),
        (_folder, "directory"),
        (_int32_tiff, "unsupported sample format int32"),
    ],
)
def test_bad_input_gives_one_line_error(
    tmp_path: Path, kodak: np.ndarray, make, reason: str
) -> None:
    path = make(tmp_path, kodak)
    with pytest.raises(ImageReadError) as caught:
        read_image(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ") and reason in message


def test_content_wins_over_extension_with_warning(tmp_path: Path, kodak: np.ndarray) -> None:
    Image.fromarray(kodak).save(tmp_path / "really_jpeg.png", format="JPEG", quality=95)
    data = read_image(tmp_path / "really_jpeg.png")
    assert data.pixels.shape == kodak.shape
    assert any("JPEG" in note for note in data.warnings)


def test_multi_page_tiff_reads_first_page(tmp_path: Path, kodak: np.ndarray) -> None:
    stack = np.stack([kodak[..., 0], kodak[..., 1]])
    tifffile.imwrite(tmp_path / "s.tif", stack, photometric="minisblack")
    data = read_image(tmp_path / "s.tif")
    np.testing.assert_array_equal(data.pixels[..., 0], kodak[..., 0])
    assert any("multi-page" in note for note in data.warnings)


def test_unsupported_output_extension(tmp_path: Path, kodak: np.ndarray) -> None:
    with pytest.raises(ImageWriteError, match=r"out\.bmp: unsupported output extension"):
        write_image(tmp_path / "out.bmp", kodak)
    assert list(tmp_path.iterdir()) == []


def test_atomic_writes_leave_no_temp_files(tmp_path: Path, kodak: np.ndarray) -> None:
    names = ["a.png", "b.JPG", "c.jpeg", "d.tif", "e.TIFF"]
    for name in names:
        write_image(tmp_path / name, kodak)
    write_image(tmp_path / "a.png", kodak[:8, :8])  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    assert read_image(tmp_path / "a.png").pixels.shape == (8, 8, 3)


def test_failed_encode_leaves_no_file(tmp_path: Path, kodak: np.ndarray) -> None:
    huge = Image.Exif()
    huge[270] = "x" * 70000  # more than one JPEG APP1 segment can hold
    with pytest.raises(ImageWriteError, match="cannot encode JPEG"):
        write_image(tmp_path / "a.jpg", kodak, exif=huge.tobytes())
    assert list(tmp_path.iterdir()) == []


def test_float_to_native_rounds_half_up_and_clips() -> None:
    x = np.array([-0.5, 0.0, 0.49 / 255, 0.51 / 255, 0.5, 1.0, 1.5, np.nan], dtype=np.float64)
    np.testing.assert_array_equal(float_to_native(x, 8), [0, 0, 0, 1, 128, 255, 255, 0])
    np.testing.assert_array_equal(float_to_native(x, 16), [0, 0, 126, 131, 32768, 65535, 65535, 0])
    assert float_to_native(x, 8).dtype == np.uint8 and float_to_native(x, 16).dtype == np.uint16
    with pytest.raises(ConfigError):
        float_to_native(x, 12)


def test_float_pixels_need_bit_depth(tmp_path: Path, kodak: np.ndarray) -> None:
    img = kodak.astype(np.float32) / 255
    with pytest.raises(ImageWriteError, match="bit depth"):
        write_image(tmp_path / "a.png", img)
    data = read_image(write_image(tmp_path / "a.png", img, bit_depth=8))
    np.testing.assert_array_equal(data.pixels, kodak)
    data16 = read_image(write_image(tmp_path / "b.png", img, bit_depth=16))
    np.testing.assert_array_equal(data16.pixels, kodak.astype(np.uint16) * 257)


def test_16bit_jpeg_is_scaled_with_rounding(tmp_path: Path) -> None:
    # 100.5 * 257 = 25828.5: 25828 must round down to 100, 25829 up to 101.
    grey = np.full((8, 16), 25828, dtype=np.uint16)
    grey[:, 8:] = 25829
    data = read_image(write_image(tmp_path / "g.jpg", grey))
    assert data.bit_depth == 8
    np.testing.assert_array_equal(data.pixels[0, [0, 15], 0], [100, 101])


def test_to_float_is_float32_in_unit_range(tmp_path: Path, kodak16: np.ndarray) -> None:
    data = ImageData(kodak16, 16, None, None, tmp_path / "x.png", ())
    out = data.to_float()
    assert out.dtype == np.float32 and out.shape == kodak16.shape
    np.testing.assert_allclose(out, kodak16 / 65535, atol=1e-6)
    np.testing.assert_array_equal(float_to_native(out, 16), kodak16)


def test_list_images_recursive_sorted_skips_hidden(tmp_path: Path) -> None:
    names = ["b.PNG", "a.jpg", "sub/c.tiff", "sub/d.txt", ".hidden.png", ".cache/e.png", "f.bmp"]
    for rel in names:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    found = list_images(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["a.jpg", "b.PNG", "sub/c.tiff"]
    with pytest.raises(ImageReadError, match="folder not found"):
        list_images(tmp_path / "nope")


def test_image_data_is_frozen(tmp_path: Path, kodak: np.ndarray) -> None:
    data = read_image(write_image(tmp_path / "a.png", kodak))
    with pytest.raises(AttributeError):
        data.bit_depth = 16  # type: ignore[misc]
