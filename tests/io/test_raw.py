"""Reading real raw files through LibRaw: pattern, levels, normalisation, rendering, refusals."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import rawpy

from n2ncli.bayer import pack, unpack
from n2ncli.errors import ImageReadError, UnsupportedRawError
from n2ncli.io.raw import (TRAIN_FLOOR, encode_for_training, is_raw, read_packed, read_raw, read_training_raw,
                           render)


def test_reads_the_canon_dng_visible_area_levels_and_pattern(chart: Path) -> None:
    raw = read_raw(chart)
    assert raw.pattern == "RGGB"
    assert raw.mosaic.shape == (1182, 1888) and raw.mosaic.dtype == np.uint16
    assert (raw.top, raw.left, raw.height, raw.width) == (26, 152, 1156, 1734)  # the DNG's ActiveArea
    assert raw.white == 15000 and np.all(raw.black == 2056)
    with rawpy.imread(str(chart)) as lib:
        assert np.array_equal(raw.visible, lib.raw_image_visible)


def test_reads_the_kodak_kdc_as_grbg(kdc: Path) -> None:
    raw = read_raw(kdc)
    assert raw.pattern == "GRBG"
    assert (raw.height, raw.width) == (512, 768) and raw.white == 16383


def test_normalised_is_zero_at_black_one_at_white_and_keeps_values_below_black(chart: Path) -> None:
    raw = read_raw(chart)
    values = raw.normalised()
    expected = (raw.visible.astype(np.float64) - 2056) / (15000 - 2056)
    assert np.abs(values - expected).max() < 1e-6
    assert values.min() < 0  # this file's darkest pixels sit below its black level: not clipped


@pytest.mark.parametrize("name", ["colorchart.dng", "RAW_KODAK_DC50.KDC"])
def test_to_dn_inverts_normalised_exactly_through_packing(shared_data: Path, name: str) -> None:
    raw = read_raw(shared_data / "raw" / name)
    packed, layout = pack(raw.normalised(), raw.pattern)
    assert packed.shape[2] == 4
    assert np.array_equal(raw.to_dn(unpack(packed, layout)), raw.visible)
    assert np.array_equal(raw.with_visible(raw.visible), raw.mosaic)


def test_packed_channels_follow_the_files_own_pattern(kdc: Path) -> None:
    """GRBG: red sits at (0, 1) of every cell, so the mosaic is shifted right by one (reflect
    padding) and packed column k >= 1 holds the reds of mosaic column 2k - 1."""
    raw = read_raw(kdc)
    packed = read_packed(kdc)
    values = raw.normalised()
    assert np.array_equal(packed[:, 1:, 0], values[0::2, 1::2])
    assert np.array_equal(packed[:, :-1, 3], values[1::2, 0::2])  # blue: row 1, column 0 of the cell
    assert np.array_equal(packed[:, 0, 0], values[0::2, 1])  # the padding mirrors column 1


def test_training_encoding_keeps_values_below_black_within_a_fraction_of_a_dn(chart: Path) -> None:
    raw = read_raw(chart)
    values = read_packed(chart)
    decoded = read_training_raw(chart).astype(np.float64) * (1 + TRAIN_FLOOR) / 65535 - TRAIN_FLOOR
    one_dn = 1.0 / (raw.white - 2056)
    assert np.abs(decoded - values).max() < 0.2 * one_dn
    assert encode_for_training(np.array([-1.0, 2.0], dtype=np.float32)).tolist() == [0, 65535]


def test_render_of_the_unchanged_mosaic_equals_libraws_own(kdc: Path) -> None:
    raw = read_raw(kdc)
    ours = render(kdc, raw.mosaic)
    with rawpy.imread(str(kdc)) as lib:
        theirs = lib.postprocess(use_camera_wb=True, no_auto_bright=True, output_bps=16,
                                 output_color=rawpy.ColorSpace.sRGB, gamma=(2.4, 12.92))
    assert ours.dtype == np.uint16 and np.array_equal(ours, theirs)
    linear = render(kdc, raw.mosaic, linear=True)
    assert linear.mean() < ours.mean()  # no gamma lift


def test_is_raw_goes_by_extension() -> None:
    assert is_raw("a/B.DNG") and is_raw("x.cr2") and is_raw("x.KDC")
    assert not is_raw("x.png") and not is_raw("x.tif")


def test_refuses_files_that_are_not_raw(tmp_path: Path, shared_data: Path) -> None:
    fake = tmp_path / "photo.dng"
    fake.write_bytes((shared_data / "kodak24" / "kodim01.png").read_bytes())
    with pytest.raises(ImageReadError, match=r"photo\.dng: not a raw file LibRaw can read"):
        read_raw(fake)
    with pytest.raises(ImageReadError, match="file not found"):
        read_raw(tmp_path / "missing.nef")
    with pytest.raises(ImageReadError, match="is a directory"):
        read_raw(tmp_path)


def test_refuses_a_truncated_raw_with_one_line(tmp_path: Path, chart: Path) -> None:
    cut = tmp_path / "cut.dng"
    cut.write_bytes(chart.read_bytes()[:200_000])
    with pytest.raises(ImageReadError) as info:
        read_raw(cut)
    assert str(info.value).startswith(str(cut)) and "\n" not in str(info.value)


def test_unsupported_raw_error_is_an_image_read_error() -> None:
    assert issubclass(UnsupportedRawError, ImageReadError)


# ----------------------------------------------------------------------- synthetic DNGs (tests/synthetic_raw.py)

@pytest.mark.parametrize("pattern", ["RGGB", "GRBG", "GBRG", "BGGR"])
@pytest.mark.parametrize("shape", [(64, 96), (37, 53)])
def test_every_bayer_pattern_and_odd_size_reads_packs_and_returns_exactly(tmp_path: Path, pattern: str,
                                                                         shape: tuple[int, int]) -> None:
    from synthetic_raw import bayer_dng

    path = tmp_path / f"{pattern}.dng"
    written = bayer_dng(path, pattern, *shape, black=512, white=16383, seed=1)
    raw = read_raw(path)
    assert raw.pattern == pattern and raw.visible.shape == shape
    packed, layout = pack(raw.normalised(), raw.pattern)
    assert np.array_equal(raw.to_dn(unpack(packed, layout)), written)
    reds = written[pattern.index("R") // 2::2, pattern.index("R") % 2::2].astype(np.float32)
    assert np.allclose(packed[layout.top:, layout.left:, 0][: reds.shape[0], : reds.shape[1]],
                       (reds - 512) / (16383 - 512))


def test_an_odd_active_area_keeps_the_visible_phase(tmp_path: Path) -> None:
    from synthetic_raw import bayer_dng

    path = tmp_path / "margins.dng"
    written = bayer_dng(path, "RGGB", 70, 100, active_area=(2, 4, 66, 98))
    raw = read_raw(path)
    assert (raw.top, raw.left, raw.height, raw.width) == (2, 4, 64, 94)
    assert np.array_equal(raw.visible, written[2:66, 4:98]) and raw.pattern == "RGGB"


@pytest.mark.parametrize(("maker", "reason"), [
    ("xtrans_dng", "X-Trans sensor (6x6 colour pattern)"),
    ("linear_raw_dng", "not a mosaic (already demosaiced"),
    ("monochrome_dng", "monochrome sensor"),
])
def test_refuses_what_is_not_a_bayer_mosaic_naming_file_and_reason(tmp_path: Path, maker: str, reason: str) -> None:
    import synthetic_raw

    path = tmp_path / f"{maker}.dng"
    getattr(synthetic_raw, maker)(path)
    with pytest.raises(UnsupportedRawError) as info:
        read_raw(path)
    assert str(info.value).startswith(f"{path}: {reason}")


# ----------------------------------------------------------------------- EXIF of developed images

@pytest.fixture(scope="module")
def crw(shared_data: Path) -> Path:
    """The real Canon PowerShot S40 CRW (CIFF: no TIFF tags)."""
    path = shared_data / "raw" / "canon_powershot_s40.crw"
    if not path.is_file():
        pytest.skip(f"raw sample not found at {path}")
    return path


def test_a_crws_development_carries_its_camera_and_shot(crw: Path, tmp_path: Path) -> None:
    """Make, Model and date from the CRW's own records, exposure as the camera recorded it
    (f/2.92, not LibRaw's target aperture 2.80), focal length from LibRaw; through a real TIFF."""
    from PIL import Image

    from n2ncli.io.image import write_image
    from n2ncli.io.raw import rendered_exif

    raw = read_raw(crw)
    target = write_image(tmp_path / "crw.tif", render(crw, raw.mosaic), exif=rendered_exif(crw))
    with Image.open(target) as im:
        exif = im.getexif()
        shot = exif.get_ifd(0x8769)
    assert exif[271] == "Canon" and exif[272] == "Canon PowerShot S40"
    assert shot[36867] == "2021:03:26 21:14:52"
    assert float(shot[33434]) == pytest.approx(1 / 5) and float(shot[33437]) == pytest.approx(2.92)
    assert shot[34855] == 50 and float(shot[37386]) == pytest.approx(7.09375)


def test_fields_a_raw_stores_as_unknown_stay_out_of_its_developments_exif(chart: Path) -> None:
    """The chart's Exif holds zeros (ExposureTime 0/1000000, FNumber 0/10): unknown. LibRaw turns
    its zero APEX fields into 1 s and f/1.0, which must not be passed off as the shot's."""
    from PIL import Image

    from n2ncli.io.raw import rendered_exif

    exif = Image.Exif()
    exif.load(rendered_exif(chart))
    shot = exif.get_ifd(0x8769)
    assert exif[272] == "Canon EOS Kiss X4"
    assert 33434 not in shot and 33437 not in shot and 34855 not in shot


# ----------------------------------------------------------------------- the header probe, one decode, damaged files

def _bytes_read() -> int:
    """This process's bytes read so far (Linux): a decode reads the whole file, a header a little."""
    io = Path("/proc/self/io")
    if not io.is_file():
        pytest.skip("no /proc/self/io")
    return next(int(line.split()[1]) for line in io.read_text().splitlines() if line.startswith("rchar"))


@pytest.mark.parametrize("name", ["colorchart.dng", "RAW_KODAK_DC50.KDC", "canon_powershot_s40.crw"])
def test_the_probe_reads_the_header_and_a_read_decodes_once(shared_data: Path, name: str) -> None:
    from n2ncli.io.raw import probe_raw

    path = shared_data / "raw" / name
    size = path.stat().st_size
    start = _bytes_read()
    probe_raw(path)
    probed = _bytes_read()
    read_raw(path)
    assert probed - start < 0.35 * size  # measured 0.01 (DNG), 0.15 (CRW), 0.32 (the 92 KB KDC)
    assert 0.9 * size < _bytes_read() - probed < 1.5 * size


@pytest.mark.parametrize("maker", ["xtrans_dng", "linear_raw_dng", "monochrome_dng", "cmyg_dng"])
def test_the_probe_refuses_each_kind_with_the_decodes_own_line(tmp_path: Path, maker: str) -> None:
    import synthetic_raw

    from n2ncli.io.raw import probe_raw

    path = tmp_path / f"{maker}.dng"
    getattr(synthetic_raw, maker)(path)
    with pytest.raises(UnsupportedRawError) as probed:
        probe_raw(path)
    with pytest.raises(UnsupportedRawError) as decoded:
        read_raw(path)
    assert str(probed.value) == str(decoded.value)


def test_without_libraws_c_api_the_decode_still_refuses_x_trans(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The C API (ctypes) is only an early answer: where it is missing, the probe passes what it
    cannot tell and the one decode refuses with the same line."""
    import synthetic_raw

    from n2ncli.io import raw as raw_module

    path = tmp_path / "x.dng"
    synthetic_raw.xtrans_dng(path)
    monkeypatch.setattr(raw_module, "_libraw_c", lambda: None)
    raw_module.probe_raw(path)
    with pytest.raises(UnsupportedRawError, match=r"x\.dng: X-Trans sensor"):
        read_raw(path)


def _damaged(source: Path, target: Path, how: str) -> Path:
    """``source`` cut at a share of its length ("cut0.5") or with 4 KiB inverted there ("flip0.5")."""
    data = bytearray(source.read_bytes())
    at = int(len(data) * float(how.removeprefix("cut").removeprefix("flip")))
    if how.startswith("cut"):
        del data[max(at, 8):]
    else:
        data[at:at + 4096] = bytes(b ^ 0xFF for b in data[at:at + 4096])
    target.write_bytes(bytes(data))
    return target


@pytest.mark.parametrize(("name", "how", "reason"), [
    ("colorchart.dng", "cut0.001", "truncated raw file (LibRaw: Unexpected end of file)"),
    ("colorchart.dng", "cut0.5", "truncated raw file (LibRaw: Unexpected end of file)"),
    ("colorchart.dng", "cut0.999", "truncated raw file (LibRaw: Unexpected end of file)"),
    ("RAW_KODAK_DC50.KDC", "cut0.5", "truncated raw file (LibRaw: Unexpected end of file)"),
    ("RAW_KODAK_DC50.KDC", "flip0.5", "truncated or corrupt raw file (LibRawIOError"),
    ("canon_powershot_s40.crw", "flip0.5", "corrupt raw data (LibRaw: data corrupted at "),
    ("canon_powershot_s40.crw", "cut0.5", "LibRaw cannot read it: a camera it does not support, or a truncated"),
    ("kodak_dc120_jpeg.kdc", "cut0.5", "truncated raw file (LibRaw: Premature end of JPEG file)"),
    ("kodak_dc120_jpeg.kdc", "flip0.5", "corrupt raw data (LibRaw: Corrupt JPEG data"),
])
def test_a_damaged_real_raw_is_one_line_and_libraw_prints_nothing(shared_data: Path, tmp_path: Path,
                                                                 capfd: pytest.CaptureFixture[str], name: str,
                                                                 how: str, reason: str) -> None:
    """Truncated or corrupt copies of the real raws: one line naming the file and the reason, at
    the probe or at the decode, and not one byte of LibRaw's own stderr."""
    from n2ncli.io.raw import probe_raw

    path = _damaged(shared_data / "raw" / name, tmp_path / f"{how}-{name}", how)
    with pytest.raises(ImageReadError) as info:
        probe_raw(path)
        read_raw(path)
    line = str(info.value)
    assert line.startswith(f"{path}: {reason}") and "\n" not in line
    out, err = capfd.readouterr()
    assert err == "" and out == ""
    os.write(2, b"fd 2 is back\n")  # the capture restored the real descriptor
    assert capfd.readouterr().err == "fd 2 is back\n"


def test_what_libraw_says_of_a_file_it_still_decodes_is_a_warning(shared_data: Path, tmp_path: Path,
                                                                   capfd: pytest.CaptureFixture[str]) -> None:
    path = _damaged(shared_data / "raw" / "kodak_dc120_jpeg.kdc", tmp_path / "late.kdc", "flip0.8")
    raw = read_raw(path)
    assert raw.warnings == ("LibRaw: Corrupt JPEG data: premature end of data segment",)
    assert capfd.readouterr().err == ""


def test_render_of_a_truncated_source_is_one_line(shared_data: Path, tmp_path: Path, chart: Path) -> None:
    mosaic = read_raw(chart).mosaic
    path = _damaged(chart, tmp_path / "cut.dng", "cut0.5")
    with pytest.raises(ImageReadError, match=r"cut\.dng: truncated raw file \(LibRaw: Unexpected end of file\)$"):
        render(path, mosaic)


@pytest.mark.parametrize("name", ["RAW_KODAK_DC50.KDC", "canon_powershot_s40.crw"])
def test_a_kept_decode_develops_as_the_file_does_without_decoding_again(shared_data: Path, name: str) -> None:
    from n2ncli.io.raw import rendered_exif

    path = shared_data / "raw" / name
    raw = read_raw(path, keep_decoded=True)
    mosaic = raw.with_visible(raw.to_dn(raw.normalised() * 0.9))
    start = _bytes_read()
    exif, developed = rendered_exif(raw), render(raw, mosaic)
    assert _bytes_read() - start < 0.35 * path.stat().st_size  # tags and thumbnail only, no decode
    assert raw.decoded is not None and raw.decoded.peek() is None  # taken by the development
    assert exif == rendered_exif(path)
    assert np.array_equal(developed, render(path, mosaic))
    assert np.array_equal(render(raw, mosaic), developed)  # once taken, the file is decoded again
