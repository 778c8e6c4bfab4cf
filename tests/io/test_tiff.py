"""The TIFF layer: every tag type and nested IFDs round-trip, strips and tiles read back in an
independent reader (tifffile), and TIFF images are what tifffile wrote before io/tiff did."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
import tifffile

from n2ncli.io import tiff
from n2ncli.io.image import encode_image
from n2ncli.io.tiff import (
    EXIF_IFD, GPS_IFD, INTEROP_IFD, Ifd, Tag, TagType, TiffFormatError, read_tiff_ifds, write_tiff_ifds,
)


def segments(data: bytes) -> list[bytes]:
    """The stored strips or tiles of a TIFF's first page, as the file holds them."""
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        page = tif.pages[0]
        return [data[o:o + n] for o, n in zip(page.dataoffsets, page.databytecounts)]


@pytest.fixture(scope="module")
def icc() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


# ------------------------------------------------------------------------------ tags and IFDs


@pytest.mark.parametrize("byte_order", ["<", ">"])
def test_tiff_writer_round_trips_every_type_and_nested_ifds(tmp_path: Path, byte_order: str) -> None:
    interop = Ifd().add(Tag.ascii(1, "R98"))
    exif = Ifd().add(Tag.rational(33434, (1, 60)), Tag.ifds(40965, interop), Tag.undefined(37500, b"\x00\x01\x02"))
    image = np.arange(30 * 22, dtype=np.uint16).reshape(30, 22)
    ifd0 = Ifd(image=image).add(
        *tiff.image_tags(image, 1, rows_per_strip=7), Tag.ascii(305, "x"), Tag.byte(50706, (1, 4, 0, 0)),
        Tag(1000, TagType.SBYTE, b"\xff\x01"), Tag(1001, TagType.SSHORT, (-3, 4)), Tag(1002, TagType.SLONG, (-70000,)),
        Tag.srational(1003, -0.25, 1.5), Tag.float32(1004, 0.5, -2.0), Tag.double(1005, 1e-300),
        Tag.long(1006, 0xFFFFFFFF), Tag.short(1007, *range(100)), Tag.ifds(EXIF_IFD, exif))
    path = tmp_path / "t.tif"
    write_tiff_ifds(path, [ifd0, Ifd().add(Tag.ascii(305, "second"))], byte_order)
    back = read_tiff_ifds(path)
    assert back.byte_order == byte_order and len(back.ifds) == 2 and not back.notes
    tags = back.ifds[0].tags
    for code in (305, 50706, 1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007):
        assert tags[code] == ifd0.tags[code], code
    assert tags[1003].numbers() == (-0.25, 1.5)
    sub = tags[EXIF_IFD].value[0].tags
    assert sub[33434].value == ((1, 60),) and sub[37500].value == b"\x00\x01\x02"
    assert sub[40965].value[0].tags[1].text() == "R98"
    assert tags[tiff.STRIP_BYTE_COUNTS].value == (7 * 44,) * 4 + (2 * 44,)
    np.testing.assert_array_equal(tifffile.imread(path, key=0), image)
    offsets = tags[tiff.STRIP_OFFSETS].value
    assert all(o % 2 == 0 for o in offsets) and list(np.diff(offsets)) == [7 * 44] * 4  # contiguous


def test_tiff_reader_rejects_what_is_not_tiff() -> None:
    with pytest.raises(TiffFormatError):
        read_tiff_ifds(b"GIF89a" + bytes(16))
    with pytest.raises(TiffFormatError):
        read_tiff_ifds(b"II*\0" + struct.pack("<I", 4))  # IFD0 points into itself, no room for entries
    looped = bytearray(b"II*\0\x08\0\0\0") + struct.pack("<HHHII", 1, 305, 2, 2, ord("x")) + struct.pack("<I", 8)
    assert len(read_tiff_ifds(bytes(looped)).ifds) == 1  # a chain pointing back to IFD0 stops there


def test_portable_tags_keep_values_and_named_pointers_only() -> None:
    interop = Ifd().add(Tag.ascii(1, "R98"))
    exif = Ifd().add(Tag.short(34855, 400), Tag.ifds(INTEROP_IFD, interop), Tag.ifds(40000, Ifd().add(Tag.short(1, 1))),
                     Tag(40001, TagType.IFD, (1234,)))
    notes: list[str] = []
    kept = tiff.portable_tags(exif, notes, keep=(INTEROP_IFD,))
    assert set(kept) == {34855, INTEROP_IFD} and kept[INTEROP_IFD].value == (interop,)
    assert notes == ["tag 40000 dropped: an IFD offset", "tag 40001 dropped: an IFD offset"]


# ------------------------------------------------------------------------------ strips and tiles


@pytest.mark.parametrize("encoded", [False, True], ids=["raw", "deflate"])
@pytest.mark.parametrize("byte_order", ["<", ">"])
def test_tiles_with_padded_edges_read_back_in_tifffile(encoded: bool, byte_order: str) -> None:
    """37x53 in 16x32 tiles: 3x2 tiles, the right and bottom ones padded to full size."""
    image = np.random.default_rng(3).integers(0, 65535, (37, 53), dtype=np.uint16)
    compression = tiff.COMPRESSION_DEFLATE if encoded else tiff.COMPRESSION_NONE
    predictor = tiff.deflate_predictor(image) if encoded else None
    ifd = Ifd(image=image, encode=tiff.deflate(image) if encoded else None).add(
        *tiff.image_tags(image, 1, compression=compression, predictor=predictor, tile=(16, 32)))
    buffer = io.BytesIO()
    write_tiff_ifds(buffer, [ifd], byte_order)
    data = buffer.getvalue()
    tags = read_tiff_ifds(data).ifds[0].tags
    assert len(tags[tiff.TILE_OFFSETS].value) == 6 and tiff.STRIP_OFFSETS not in tags
    if not encoded:
        assert tags[tiff.TILE_BYTE_COUNTS].value == (16 * 32 * 2,) * 6
    np.testing.assert_array_equal(tifffile.imread(io.BytesIO(data)), image)


def test_a_compressed_image_needs_an_encoder() -> None:
    image = np.zeros((4, 4), np.uint16)
    ifd = Ifd(image=image).add(*tiff.image_tags(image, 1, compression=tiff.COMPRESSION_DEFLATE))
    with pytest.raises(ValueError, match="encoder"):
        write_tiff_ifds(io.BytesIO(), [ifd])


@pytest.mark.parametrize("align", [2, 16])
def test_pixel_data_starts_at_the_alignment_asked(align: int) -> None:
    image = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3)
    buffer = io.BytesIO()
    write_tiff_ifds(buffer, [Ifd(image=image).add(*tiff.image_tags(image, 2), Tag.ascii(305, "abc"))], data_align=align)
    (offset,) = read_tiff_ifds(buffer.getvalue()).ifds[0].tags[tiff.STRIP_OFFSETS].value
    assert offset % align == 0 and buffer.getvalue()[offset:] == image.tobytes()  # no trailing padding


# ------------------------------------------------------------------ TIFF images through io/tiff


def _tifffile_bytes(pixels: np.ndarray, icc: bytes | None) -> bytes:
    """How n2ncli wrote a TIFF through tifffile before io/tiff did (``_encode_tiff``, no EXIF)."""
    grey = pixels.shape[2] == 1
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, pixels[..., 0] if grey else pixels, photometric="minisblack" if grey else "rgb",
                     compression="zlib", predictor=True, iccprofile=icc, software=False, datetime=None, metadata=None)
    return buffer.getvalue()


IMAGES = {
    "rgb8": ((48, 64, 3), np.uint8), "rgb16": ((48, 64, 3), np.uint16), "grey8": ((37, 19, 1), np.uint8),
    "grey16": ((19, 37, 1), np.uint16), "float32": ((40, 30, 3), np.float32), "grey_float32": ((30, 40, 1), np.float32),
    "strips16": ((150, 900, 3), np.uint16),  # 48 rows a strip: 4 strips, the last one short
}


@pytest.mark.parametrize("with_icc", [False, True], ids=["plain", "icc"])
@pytest.mark.parametrize("name", list(IMAGES))
def test_tiffs_without_exif_are_byte_for_byte_what_tifffile_wrote(name: str, with_icc: bool, icc: bytes) -> None:
    shape, dtype = IMAGES[name]
    rng = np.random.default_rng(11)
    if dtype == np.float32:
        pixels = rng.normal(0.5, 0.6, shape).astype(np.float32)  # outside [0, 1] too
        pixels[0, 0, 0], pixels[1, 1, 0] = np.nan, np.inf
    else:
        pixels = rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)
    depth = {np.uint8: 8, np.uint16: 16, np.float32: 32}[dtype]
    ours = encode_image(pixels, "TIFF", bit_depth=depth, icc_profile=icc if with_icc else None)
    assert ours == _tifffile_bytes(pixels, icc if with_icc else None)


def _exif_block() -> bytes:
    """A camera-like EXIF block: text tags (one not ASCII), Exif with Interop and a stray IFD
    offset, GPS, in big-endian order."""
    exif = Ifd().add(Tag.rational(33434, (1, 125)), Tag.short(34855, 400), Tag.undefined(36864, b"0232"),
                     Tag.ascii(36867, "2024:05:06 07:08:09"), Tag.undefined(37500, b"Maker\0\1\2"),
                     Tag.ifds(INTEROP_IFD, Ifd().add(Tag.ascii(1, "R98"))), Tag(40001, TagType.IFD, (8,)))
    gps = Ifd().add(Tag.byte(0, (2, 3, 0, 0)), Tag.ascii(1, "N"), Tag.rational(2, (47, 1), (22, 1), (3015, 100)))
    ifd0 = Ifd().add(Tag.ascii(tiff.MAKE, "TestCam"), Tag.ascii(tiff.MODEL, "Caf\u00e9 1"), Tag.short(tiff.ORIENTATION, 1),
                     Tag.ascii(tiff.ARTIST, "Me"), Tag.ifds(EXIF_IFD, exif), Tag.ifds(GPS_IFD, gps))
    buffer = io.BytesIO()
    write_tiff_ifds(buffer, [ifd0], ">")
    return b"Exif\0\0" + buffer.getvalue()


def test_a_tiffs_exif_and_gps_ifds_keep_their_tags_as_stored() -> None:
    """Every Exif and GPS tag keeps its type and value (Pillow's rewrite used to retype them,
    GPSVersionID among them, and left the Interop offset pointing into nothing); the pixels are
    still tifffile's strips."""
    pixels = np.random.default_rng(5).integers(0, 65535, (60, 70, 3), dtype=np.uint16)
    block = _exif_block()
    data = encode_image(pixels, "TIFF", exif=block)
    source = read_tiff_ifds(block[6:]).ifds[0]
    ours = read_tiff_ifds(data)
    assert not ours.notes and ours.byte_order == "<"
    ifd0 = ours.ifds[0]
    assert ifd0.get(tiff.MAKE).text() == "TestCam" and ifd0.get(tiff.ARTIST).text() == "Me"
    assert tiff.MODEL not in ifd0 and tiff.ORIENTATION not in ifd0  # not ASCII; not a text tag
    exif, their_exif = ifd0.sub_ifds(EXIF_IFD)[0], source.sub_ifds(EXIF_IFD)[0]
    assert set(exif.tags) == set(their_exif.tags) - {40001}
    for code in (33434, 34855, 36864, 36867, 37500):
        assert exif.tags[code] == their_exif.tags[code], code
    assert exif.sub_ifds(INTEROP_IFD)[0].get(1).text() == "R98"
    assert ifd0.sub_ifds(GPS_IFD)[0].tags == source.sub_ifds(GPS_IFD)[0].tags
    assert segments(data) == segments(_tifffile_bytes(pixels, None))
    with tifffile.TiffFile(io.BytesIO(data)) as tif:  # an independent reader follows the sub-IFDs
        page = tif.pages[0]
        assert page.tags["ExifTag"].value["ISOSpeedRatings"] == 400
        assert page.tags["GPSTag"].value["GPSVersionID"] == bytes((2, 3, 0, 0))
        np.testing.assert_array_equal(page.asarray(), pixels)


def test_an_unreadable_exif_block_leaves_the_tiff_without_it() -> None:
    pixels = np.zeros((8, 8, 3), np.uint8)
    data = encode_image(pixels, "TIFF", exif=b"Exif\0\0" + b"XX" + bytes(20))
    assert data == _tifffile_bytes(pixels, None)
