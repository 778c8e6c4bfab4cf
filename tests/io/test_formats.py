"""Float TIFF, HEIF/HEIC, AVIF and WebP; lossy quality and chroma subsampling; in-memory streams."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms, ImageOps
from PIL.JpegImagePlugin import get_sampling

from n2ncli.errors import ConfigError, ImageReadError, ImageWriteError
from n2ncli.io.image import (
    DEFAULT_QUALITY,
    FLOAT_DEPTH,
    ImageData,
    encode_image,
    image_format,
    list_images,
    read_image,
    read_image_bytes,
    writable_bit_depth,
    write_image,
)
from n2ncli.jobs import expand_inputs

MAKE, ORIENTATION = 271, 274
LOSSY_NEW = ["heic", "avif", "webp"]
KIND = {"png": "PNG", "jpg": "JPEG", "tif": "TIFF", "heic": "HEIF", "avif": "AVIF", "webp": "WEBP"}


@pytest.fixture(scope="module")
def crop(kodak_crop: Callable[..., np.ndarray]) -> np.ndarray:
    """A 64x96x3 uint8 crop of kodim01: real texture, small enough for x265 and aom to stay fast."""
    return kodak_crop(200, 300, 64, 96)


@pytest.fixture(scope="module")
def icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.fixture(scope="module")
def wide(crop: np.ndarray) -> np.ndarray:
    """float32 values from about -0.5 to 1.9 (HDR highlights and wide-gamut negatives), not on any
    8- or 16-bit grid."""
    rng = np.random.default_rng(3)
    return (crop / 255.0 * 3.0 - 0.5 + rng.normal(0, 1e-4, crop.shape)).astype(np.float32)


def _exif(orientation: int | None = None) -> bytes:
    exif = Image.Exif()
    exif[MAKE] = "TestCam"
    if orientation is not None:
        exif[ORIENTATION] = orientation
    return exif.tobytes()


def _parse(exif: bytes | None) -> Image.Exif:
    assert exif is not None
    parsed = Image.Exif()
    parsed.load(exif)
    return parsed


def _psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10.0 * math.log10(peak * peak / mse)


# ------------------------------------------------------------------------------------ float TIFF


def test_float32_tiff_round_trip_is_exact_outside_unit_range(tmp_path: Path, wide: np.ndarray,
                                                             icc: bytes) -> None:
    assert wide.min() < -0.4 and wide.max() > 1.5
    out = write_image(tmp_path / "hdr.tif", wide, bit_depth=32, exif=_exif(), icc_profile=icc)
    data = read_image(out)
    assert data.bit_depth == FLOAT_DEPTH and data.is_float and data.format == "TIFF"
    assert data.pixels.dtype == np.float32
    np.testing.assert_array_equal(data.pixels, wide)
    assert data.icc_profile == icc and _parse(data.exif)[MAKE] == "TestCam"
    with tifffile.TiffFile(out) as tif:  # what other programs see: a 32-bit IEEE float TIFF
        page = tif.pages[0]
        assert int(page.sampleformat) == 3 and page.bitspersample == 32


def test_float_tiff_keeps_nan_and_infinities(tmp_path: Path, wide: np.ndarray) -> None:
    odd = wide.copy()
    odd[0, 0], odd[1, 1, 2], odd[2, 3, 1] = np.nan, np.inf, -np.inf
    data = read_image(write_image(tmp_path / "odd.tif", odd, bit_depth=32))
    np.testing.assert_array_equal(data.pixels, odd)  # NaN compares equal here
    unit = data.to_float()
    assert unit.min() == 0.0 and unit.max() == 1.0 and np.isfinite(unit).all()
    assert unit[0, 0, 0] == 0.0 and unit[1, 1, 2] == 1.0 and unit[2, 3, 1] == 0.0


def test_float16_tiff_is_read_as_float32(tmp_path: Path, wide: np.ndarray) -> None:
    half = wide.astype(np.float16)
    tifffile.imwrite(tmp_path / "half.tif", half, photometric="rgb", compression="zlib")
    tifffile.imwrite(tmp_path / "grey.tif", half[..., 0], photometric="minisblack")
    data = read_image(tmp_path / "half.tif")
    assert data.bit_depth == 32 and data.pixels.dtype == np.float32
    np.testing.assert_array_equal(data.pixels, half.astype(np.float32))
    grey = read_image(tmp_path / "grey.tif")
    assert grey.pixels.shape == (*half.shape[:2], 1) and grey.is_float


def test_integer_pixels_can_be_written_as_float(tmp_path: Path, crop: np.ndarray) -> None:
    data = read_image(write_image(tmp_path / "f.tif", crop.astype(np.uint16) * 257, bit_depth=32))
    np.testing.assert_allclose(data.pixels, crop / 255.0, atol=1e-7)


@pytest.mark.parametrize("name", ["f.png", "f.jpg", "f.heic", "f.webp"])
def test_float_output_needs_tiff(tmp_path: Path, wide: np.ndarray, name: str) -> None:
    with pytest.raises(ImageWriteError, match="32-bit float pixels can only be written as TIFF"):
        write_image(tmp_path / name, wide, bit_depth=32)
    assert list(tmp_path.iterdir()) == []


def test_float_source_to_an_integer_format_is_clipped(tmp_path: Path, wide: np.ndarray) -> None:
    data = read_image(write_image(tmp_path / "f.png", wide, bit_depth=16))
    assert data.bit_depth == 16
    assert data.pixels[wide >= 1].min() == 65535 and data.pixels[wide <= 0].max() == 0


# ------------------------------------------------------------------------ HEIF, AVIF and WebP


@pytest.mark.parametrize("ext", LOSSY_NEW)
def test_lossy_formats_round_trip_with_exif_and_icc(tmp_path: Path, crop: np.ndarray, icc: bytes,
                                                    ext: str) -> None:
    out = write_image(tmp_path / f"a.{ext}", crop, exif=_exif(), icc_profile=icc)
    data = read_image(out)
    assert data.format == KIND[ext] and data.bit_depth == 8 and data.warnings == ()
    assert data.pixels.shape == crop.shape and data.pixels.dtype == np.uint8
    assert _psnr(data.pixels, crop) > 38  # default qualities: about JPEG 95's fidelity
    assert data.icc_profile == icc
    assert _parse(data.exif)[MAKE] == "TestCam"
    with Image.open(out) as im:  # other programs see the metadata too (HEIF: once pillow-heif is registered)
        assert im.info["icc_profile"] == icc


@pytest.mark.parametrize("ext", LOSSY_NEW)
def test_exif_orientation_is_applied_once(tmp_path: Path, crop: np.ndarray, ext: str) -> None:
    """Orientation 6 (turn 90 degrees clockwise): HEIF and AVIF store it as the container's
    irot/imir transform (libheif applies it, Pillow reports it as EXIF), WebP as the EXIF tag
    alone; either way the pixels come back turned once and the tag reads 1."""
    data = read_image(write_image(tmp_path / f"rot.{ext}", crop, exif=_exif(orientation=6)))
    expected = np.rot90(crop, -1)
    assert data.pixels.shape == expected.shape
    assert _psnr(data.pixels, expected) > 38
    assert _parse(data.exif)[ORIENTATION] == 1 and _parse(data.exif)[MAKE] == "TestCam"
    if ext == "webp":  # as Pillow would turn it
        with Image.open(tmp_path / "rot.webp") as im:
            np.testing.assert_array_equal(data.pixels, np.asarray(ImageOps.exif_transpose(im)))


@pytest.mark.parametrize("ext", ["jpg", *LOSSY_NEW])
def test_quality_changes_the_file_size(crop: np.ndarray, ext: str) -> None:
    low, high = (len(encode_image(crop, ext, quality=q)) for q in (30, 90))
    assert low < high
    assert encode_image(crop, ext) == encode_image(crop, ext, quality=DEFAULT_QUALITY[KIND[ext]])


@pytest.mark.parametrize("ext", ["heic", "avif"])
def test_grey_stays_grey(tmp_path: Path, crop: np.ndarray, ext: str) -> None:
    data = read_image(write_image(tmp_path / f"g.{ext}", crop[..., 1]))
    assert data.pixels.shape == (*crop.shape[:2], 1)
    assert _psnr(data.pixels[..., 0], crop[..., 1]) > 38


@pytest.mark.parametrize("twelve", [False, True])
def test_high_bit_depth_heic_is_read_at_16_bits(tmp_path: Path, crop: np.ndarray, twelve: bool,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """16-bit pixels are written as 10-bit HEIC (12 with pillow-heif's option); reading gives
    16 bits stretched to the full range (white stays 65535)."""
    import pillow_heif

    monkeypatch.setattr(pillow_heif.options, "SAVE_HDR_TO_12_BIT", twelve)
    deep = crop.astype(np.uint16) * 257
    deep[:8] = 65535
    out = write_image(tmp_path / "deep.heic", deep, quality=90)
    assert pillow_heif.open_heif(out).info["bit_depth"] == (12 if twelve else 10)
    data = read_image(out)
    assert data.bit_depth == 16 and data.pixels.dtype == np.uint16
    assert (data.pixels[:8] == 65535).all()
    assert _psnr(data.pixels, deep, 65535) > 40
    assert writable_bit_depth(".heic") == 16


def test_heif_reports_its_chroma_subsampling(tmp_path: Path, crop: np.ndarray) -> None:
    assert read_image(write_image(tmp_path / "a.heic", crop)).subsampling == "4:2:0"
    full = read_image(write_image(tmp_path / "b.heic", crop, subsampling="4:4:4"))
    assert full.subsampling == "4:4:4"
    assert _psnr(full.pixels, crop) > 38


# ------------------------------------------------------------------ JPEG quality and subsampling


@pytest.mark.parametrize(("quality", "subsampling"), [(20, "4:2:0"), (75, "4:2:0"), (88, "4:2:2"), (97, "4:4:4")])
def test_jpeg_quality_and_subsampling_are_read_and_can_be_matched(
        tmp_path: Path, crop: np.ndarray, quality: int, subsampling: str) -> None:
    """A JPEG written elsewhere (Pillow here, as a camera would) reports its quality and chroma
    subsampling; writing with them gives the same quantisation tables and sampling back."""
    source = tmp_path / "camera.jpg"
    Image.fromarray(crop).save(source, quality=quality, subsampling=subsampling)
    data = read_image(source)
    assert (data.quality, data.subsampling) == (quality, subsampling)
    out = write_image(tmp_path / "out.jpg", data.pixels, quality=data.quality, subsampling=data.subsampling)
    with Image.open(source) as a, Image.open(out) as b:
        assert a.quantization == b.quantization
        assert get_sampling(a) == get_sampling(b)


def test_jpeg_default_stays_quality_95_at_444(tmp_path: Path, crop: np.ndarray) -> None:
    data = read_image(write_image(tmp_path / "a.jpg", crop))
    assert (data.quality, data.subsampling) == (95, "4:4:4")
    data = read_image(write_image(tmp_path / "b.jpg", crop, quality=95, subsampling="4:2:0"))
    assert (data.quality, data.subsampling) == (95, "4:2:0")


def test_grey_and_non_jpeg_sources_have_no_subsampling(tmp_path: Path, crop: np.ndarray) -> None:
    grey = read_image(write_image(tmp_path / "g.jpg", crop[..., 0]))
    assert grey.quality == 95 and grey.subsampling is None
    png = read_image(write_image(tmp_path / "a.png", crop))
    assert png.quality is None and png.subsampling is None and png.format == "PNG"


@pytest.mark.parametrize(("option", "value"), [("quality", 0), ("quality", 101), ("subsampling", "4:1:1")])
def test_bad_lossy_options_are_refused(tmp_path: Path, crop: np.ndarray, option: str, value: object) -> None:
    with pytest.raises(ConfigError, match=option if option == "quality" else "subsampling"):
        write_image(tmp_path / "a.jpg", crop, **{option: value})
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------- streams


@pytest.mark.parametrize("ext", list(KIND))
def test_streams_round_trip_and_sniff_the_format(tmp_path: Path, crop: np.ndarray, ext: str) -> None:
    payload = encode_image(crop, ext, exif=_exif())
    data = read_image_bytes(payload)
    assert data.format == KIND[ext] and data.source == Path("<stdin>")
    assert data.pixels.shape == crop.shape and _parse(data.exif)[MAKE] == "TestCam"
    if ext in ("png", "tif"):
        np.testing.assert_array_equal(data.pixels, crop)
    else:
        assert _psnr(data.pixels, crop) > 38
    # the file functions wrap the same encoder and decoder
    path = write_image(tmp_path / f"a.{ext}", crop, exif=_exif())
    assert path.read_bytes() == payload
    np.testing.assert_array_equal(read_image(path).pixels, data.pixels)


def test_float_tiff_stream(wide: np.ndarray) -> None:
    data = read_image_bytes(encode_image(wide, "TIFF", bit_depth=32), name="<pipe>")
    assert data.is_float and data.source == Path("<pipe>")
    np.testing.assert_array_equal(data.pixels, wide)


@pytest.mark.parametrize("brand", [b"heic", b"heix", b"mif1"])
def test_heif_is_sniffed_by_its_brand(crop: np.ndarray, brand: bytes) -> None:
    payload = bytearray(encode_image(crop, "heic"))
    assert payload[4:12] == b"ftypheic"
    payload[8:12] = brand
    assert read_image_bytes(bytes(payload)).format == "HEIF"


def test_avif_and_webp_are_sniffed(tmp_path: Path, crop: np.ndarray) -> None:
    avif, webp = encode_image(crop, "avif"), encode_image(crop, "webp")
    assert avif[4:12] == b"ftypavif" and webp[:4] == b"RIFF" and webp[8:12] == b"WEBP"
    (tmp_path / "really_avif.webp").write_bytes(avif)  # the content wins, with a warning
    data = read_image(tmp_path / "really_avif.webp")
    assert data.format == "AVIF" and any("content is AVIF" in note for note in data.warnings)


def test_image_format_names() -> None:
    assert [image_format(f) for f in (".JPG", "jpeg", "heic", "HEIF", ".hif", "tif", "webp")] == [
        "JPEG", "JPEG", "HEIF", "HEIF", "HEIF", "TIFF", "WEBP"]
    with pytest.raises(ConfigError, match=r"unsupported image format 'bmp'.*\.heic"):
        image_format("bmp")


# ------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("ext", LOSSY_NEW)
def test_truncated_file_is_a_one_line_error(tmp_path: Path, crop: np.ndarray, ext: str) -> None:
    whole = encode_image(crop, ext)
    path = tmp_path / f"cut.{ext}"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ImageReadError) as caught:
        read_image(path)
    message = str(caught.value)
    assert "\n" not in message and "BytesIO" not in message
    assert message.startswith(f"{path}: cannot decode {KIND[ext]}: ")
    with pytest.raises(ImageReadError, match=rf"^<stdin>: cannot decode {KIND[ext]}: "):
        read_image_bytes(whole[: len(whole) // 2])


def test_empty_and_unknown_streams(crop: np.ndarray) -> None:
    with pytest.raises(ImageReadError, match="^<stdin>: empty input"):
        read_image_bytes(b"")
    with pytest.raises(ImageReadError, match="^x: not a PNG, JPEG, TIFF, HEIF/HEIC, AVIF or WebP image"):
        read_image_bytes(b"GIF89a" + bytes(32), name="x")


def test_unsupported_files_list_the_new_formats(tmp_path: Path, crop: np.ndarray) -> None:
    (tmp_path / "a.bmp").write_bytes(b"BM" + bytes(64))
    with pytest.raises(ImageReadError, match=r"unsupported file type '\.bmp'.*\.avif.*\.heic.*\.webp"):
        read_image(tmp_path / "a.bmp")
    with pytest.raises(ImageWriteError, match=r"unsupported output extension '\.gif'.*\.avif.*\.heic.*\.webp"):
        write_image(tmp_path / "a.gif", crop)


def test_folder_runs_find_the_new_formats(tmp_path: Path) -> None:
    names = ["a.HEIC", "b.avif", "c.webp", "d.heif", "e.hif", "f.jpg", "g.bmp", "h.gif"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    found = [p.name for p in list_images(tmp_path)]
    assert found == ["a.HEIC", "b.avif", "c.webp", "d.heif", "e.hif", "f.jpg"]
    assert [p.name for p in expand_inputs([tmp_path])] == found


def test_importing_n2ncli_does_not_import_pillow_heif() -> None:
    code = "import sys, n2ncli.io.image, n2ncli.jobs; print('pillow_heif' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_image_data_defaults_keep_old_constructor(tmp_path: Path, crop: np.ndarray) -> None:
    data = ImageData(crop, 8, None, None, tmp_path / "x.png")
    assert (data.format, data.quality, data.subsampling, data.is_float) == (None, None, None, False)
