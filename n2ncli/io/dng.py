"""Write a DNG that holds a denoised CFA mosaic, with the source raw's metadata carried over.

The output is one 16-bit CFA image in IFD0, lossless JPEG tiles by default (Compression 7, what
Adobe's converter writes; see :func:`_lossless_jpeg`) or uncompressed contiguous strips, an Exif
sub-IFD and, when the source has one, a GPS sub-IFD. No preview or thumbnail is written: raw
editors render their own, and the source's preview would show the noisy original.

Values stay in the source's DN scale (same black and white levels), so the source's colour,
linearity and opcode metadata keep describing the data. Two kinds of source:

* a DNG: every tag of IFD0 and of the CFA IFD is copied as stored (type and bytes), except the
  ones describing the image data layout (written fresh) and a few that the new data would make
  false (see ``_DROPPED``). NoiseProfile goes (it describes the noise we removed, and raw editors
  would denoise a second time) and NoiseReductionApplied is set to 1, which tells them not to.
  A LinearizationTable is dropped too: LibRaw's ``raw_image`` has already been mapped through it
  (so an OpcodeList1, meant for the stored values, now meets linearised ones; in practice these
  are bad-pixel fixes, indifferent to scale).
* any other raw LibRaw reads: the DNG tags are built from rawpy (CFA phase, black and white
  levels, active area, DefaultScale for non-square pixels, colour matrix, white balance,
  orientation); Make, Model and the Exif and GPS IFDs are the camera's own values
  (:func:`read_camera_tags`, which developed images' EXIF uses too): the file's TIFF tags when it
  is TIFF-based (CR2, NEF, ARW, KDC...), a CRW's CIFF records, else the Exif block of its embedded
  JPEG preview; rawpy's shot info only for what those lack. A MakerNote moves into DNGPrivateData
  as DNG asks (its internal offsets may point outside it; see ``_makn_block``). ColorMatrix1 is
  LibRaw's (Adobe's D65 matrix) or, for a camera LibRaw has none for, one made from the file's own
  camera -> sRGB matrix (Kodak) or XYZ to linear sRGB: what LibRaw develops the source with, and
  DNG requires one for a colour CFA. AsShotNeutral is the camera's white balance or, when the file
  stores none, LibRaw's grey-world balance of the mosaic (what its camera-WB development uses).

The processing record (model, hash, settings) travels as XMP in the ``n2n`` namespace, merged
into the source's XMP packet when there is one, so :func:`read_processing_record` can tell our
outputs from camera files by reading IFD0's tags only. Its properties are all named
``Denoise...`` (``n2n:DenoiseModel``...), so no reader takes one for a standard tag; the older
``n2n:Record`` still reads.

The TIFF structure (tags, IFDs, reading and writing) is :mod:`n2ncli.io.tiff`'s; this module
decides which tags a DNG carries and where they come from.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import math
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING
from xml.dom import minidom
from xml.parsers.expat import ExpatError

import numpy as np

from n2ncli import __version__
from n2ncli.errors import ConfigError, ImageReadError, ImageWriteError
from n2ncli.fsutil import atomic_path
from n2ncli.io.tiff import (
    ARTIST, BITS_PER_SAMPLE, COMPRESSION_JPEG, COPYRIGHT, DATE_TIME, EXIF_IFD, GPS_IFD, IMAGE_LENGTH, IMAGE_WIDTH, INTEROP_IFD, MAKE,
    MODEL, NEW_SUBFILE_TYPE, ORIENTATION, PHOTOMETRIC, SOFTWARE, SUB_IFDS, XMP, Ifd, Tag, TagType, TiffData,
    TiffFormatError, image_tags, portable_tags, read_at, read_tiff_ifds, write_tiff_ifds,
)

if TYPE_CHECKING:
    import rawpy

_log = logging.getLogger(__name__)

#: How the mosaic is stored: lossless JPEG tiles (Compression 7, what Adobe's converter writes;
#: the default) or uncompressed strips.
DNG_COMPRESSIONS = ("lossless", "none")
_TILE = 256

# Tag numbers (TIFF-EP, Exif 2.32, DNG 1.7) of the DNG policy; the structure's are io/tiff's.
CFA_REPEAT_PATTERN_DIM, CFA_PATTERN = 33421, 33422
EXPOSURE_TIME, F_NUMBER, ISO, EXIF_VERSION, DATE_TIME_ORIGINAL = 33434, 33437, 34855, 36864, 36867
FOCAL_LENGTH, MAKER_NOTE, LENS_MAKE, LENS_MODEL = 37386, 37500, 42035, 42036
DNG_VERSION, DNG_BACKWARD_VERSION, UNIQUE_CAMERA_MODEL = 50706, 50707, 50708
CFA_PLANE_COLOR, CFA_LAYOUT, LINEARIZATION_TABLE = 50710, 50711, 50712
BLACK_LEVEL_REPEAT_DIM, BLACK_LEVEL, WHITE_LEVEL, DEFAULT_SCALE = 50713, 50714, 50717, 50718
DEFAULT_CROP_ORIGIN, DEFAULT_CROP_SIZE, COLOR_MATRIX_1, AS_SHOT_NEUTRAL = 50719, 50720, 50721, 50728
DNG_PRIVATE_DATA, MAKER_NOTE_SAFETY, CALIBRATION_ILLUMINANT_1 = 50740, 50741, 50778
RAW_DATA_UNIQUE_ID, ACTIVE_AREA, NOISE_REDUCTION_APPLIED = 50781, 50829, 50935
OPCODE_LIST_1, OPCODE_LIST_2, OPCODE_LIST_3, NOISE_PROFILE = 51008, 51009, 51022, 51041

PHOTOMETRIC_CFA, PHOTOMETRIC_LINEAR_RAW = 32803, 34892


# ------------------------------------------------------------------------------------ DNG policy

# Tags describing how the source stored its pixels (or its preview's); written fresh or not at all.
_LAYOUT = frozenset({
    254, 255, 256, 257, 258, 259, 262, 263, 264, 265, 266, 273, 277, 278, 279, 280, 281, 284, 290, 291,
    292, 293, 317, 318, 319, 320, 322, 323, 324, 325, 338, 339, 340, 341, 347, 512, 513, 514, 515,
    517, 518, 519, 520, 521, 529, 530, 531, 532,
    50974,   # SubTileBlockSize
    50975,   # RowInterleaveFactor
    52547,   # ColumnInterleaveFactor
    52553, 52554, 52555,  # JXLDistance, JXLEffort, JXLDecodeSpeed
})
# Tags a DNG copy leaves out on purpose, with the reason (kept short: it goes to the debug log).
_DROPPED = {
    NOISE_PROFILE: "its noise model describes the noise we removed; raw editors would denoise again",
    LINEARIZATION_TABLE: "LibRaw's raw_image is already linearised through it",
    50972: "RawImageDigest no longer matches the new pixels",
    51111: "NewRawImageDigest no longer matches the new pixels",
    RAW_DATA_UNIQUE_ID: "replaced: the raw data changed",
    NOISE_REDUCTION_APPLIED: "replaced by 1 (fully denoised)",
    34675: "ICC profile of the source's IFD0 image (a preview), meaningless for a CFA image",
    50933: "ExtraCameraProfiles are offsets to profile blocks we do not relocate",
    50966: "preview metadata (no preview is written)", 50967: "preview metadata", 50968: "preview metadata",
    50969: "preview metadata", 50970: "preview metadata", 50971: "preview metadata",
    51112: "RawToPreviewGain (no preview is written)", 51114: "CacheVersion of a preview",
    SUB_IFDS: "previews and other sub-images of the source are not carried",
    # Private tags known to hold file offsets (they would point into nothing after a copy).
    33424: "Kodak IFD offset", 65024: "Kodak KDC IFD offset", 29184: "Sony SR2Private offset",
    29185: "Sony SR2 offset", 29217: "Sony SR2 offset",
}
# Rebuilt from the copy: pointers laid out again, our own fields.
_REBUILT = frozenset({EXIF_IFD, GPS_IFD, INTEROP_IFD, XMP, SOFTWARE})

# Exif-IFD tags (Exif 2.32); a TIFF-EP raw (KDC, some NEF) keeps them in IFD0, DNG wants them in
# the Exif IFD.
_EXIF_TAGS = frozenset({
    33434, 33437, 34850, 34852, 34855, 34856, 34864, 34865, 34866, 34867, 34868, 34869, 36864, 36867,
    36868, 36880, 36881, 36882, 37121, 37122, 37377, 37378, 37379, 37380, 37381, 37382, 37383, 37384,
    37385, 37386, 37396, 37500, 37510, 37520, 37521, 37522, 37888, 37889, 37890, 37891, 37892, 37893,
    40960, 40961, 40962, 40963, 40964, 41483, 41484, 41486, 41487, 41488, 41492, 41493, 41495, 41728,
    41729, 41730, 41985, 41986, 41987, 41988, 41989, 41990, 41991, 41992, 41993, 41994, 41995, 41996,
    42016, 42032, 42033, 42034, 42035, 42036, 42037, 42038, 42039, 42040, 42240,
})
# IFD0 tags of a non-DNG raw worth keeping: who, what, when, rights (270 ImageDescription,
# 33723 IPTC), and the TIFF-EP fields DNG validators accept in IFD0: TimeZoneOffset,
# ImageNumber, TIFF/EPStandardID. Other TIFF-EP fields (BatteryLevel, SelfTimerMode...) are
# dropped; TIFF-EP's SensingMethod (37399) becomes Exif's (41495), which has the same values.
_KEPT_IFD0 = frozenset({270, MAKE, MODEL, DATE_TIME, ARTIST, COPYRIGHT, 33723, 34858, 37393, 37398})
_TIFF_EP_SENSING_METHOD, _EXIF_SENSING_METHOD = 37399, 41495

# XYZ (D65) -> linear sRGB (IEC 61966-2-1), the fallback ColorMatrix1: it declares the camera's
# channels to be sRGB primaries, the usual guess for a camera without a matrix (LibRaw's too).
_XYZ_TO_SRGB = ((3.2404542, -1.5371385, -0.4985314),
                (-0.9692660, 1.8760108, 0.0415560),
                (0.0556434, -0.2040259, 1.0572252))
_D65 = 21  # EXIF LightSource / DNG CalibrationIlluminant
# LibRaw's flip (0 none, 3 180 deg, 5 90 deg CCW, 6 90 deg CW; dcraw's "50132467" table) -> EXIF Orientation.
_FLIP_TO_ORIENTATION = {0: 1, 1: 2, 2: 4, 3: 3, 4: 5, 5: 8, 6: 6, 7: 7}


@dataclass
class _Meta:
    """The metadata of the DNG to write, gathered from the source."""

    byte_order: str
    ifd0: dict[int, Tag]
    exif: dict[int, Tag]
    gps: Ifd | None
    xmp: bytes | None
    notes: list[str] = field(default_factory=list)


def _dng_meta(source: Path, tiff: TiffData, shape: tuple[int, int]) -> _Meta:
    """Metadata from a DNG source: IFD0 and its CFA IFD copied, minus layout and dropped tags."""
    ifd0 = tiff.ifds[0]
    raw_ifd = _find_raw_ifd(source, tiff)
    width, height = _first(raw_ifd, IMAGE_WIDTH), _first(raw_ifd, IMAGE_LENGTH)
    if (height, width) != shape:
        raise ImageWriteError(f"{source}: the mosaic is {shape[0]}x{shape[1]} but the source's CFA image "
                              f"is {height}x{width}")
    notes = list(tiff.notes)
    tags: dict[int, Tag] = {}
    for ifd in (ifd0, raw_ifd) if raw_ifd is not ifd0 else (ifd0,):
        for code, tag in ifd.tags.items():
            if code in _LAYOUT or code in _REBUILT:
                continue
            if code in _DROPPED:
                notes.append(f"tag {code} dropped: {_DROPPED[code]}")
                continue
            if tag.type == TagType.IFD:
                notes.append(f"tag {code} dropped: an IFD offset of unknown meaning")
                continue
            tags[code] = tag
    if WHITE_LEVEL not in tags:
        # The default white is 2**BitsPerSample - 1; we store 16 bits, so the source's must be said.
        tags[WHITE_LEVEL] = Tag.long(WHITE_LEVEL, (1 << _first(raw_ifd, BITS_PER_SAMPLE, 16)) - 1)
    if any(c in tags for c in (OPCODE_LIST_1, OPCODE_LIST_2, OPCODE_LIST_3)):
        version = tags.get(DNG_VERSION)
        if version is None or tuple(version.value) < (1, 3, 0, 0):
            tags[DNG_VERSION] = Tag.byte(DNG_VERSION, (1, 3, 0, 0))
    exif_src = ifd0.sub_ifds(EXIF_IFD) or raw_ifd.sub_ifds(EXIF_IFD)
    exif = _copy_exif(exif_src[0], notes) if exif_src else {}
    gps = (ifd0.sub_ifds(GPS_IFD) or (None,))[0]
    xmp_tag = ifd0.get(XMP) or raw_ifd.get(XMP)
    return _Meta(tiff.byte_order, tags, exif, gps, None if xmp_tag is None else bytes(xmp_tag.value), notes)


def _find_raw_ifd(source: Path, tiff: TiffData) -> Ifd:
    """The main raw IFD: NewSubFileType 0 in IFD0's chain or SubIFD tree, CFA preferred."""
    candidates: list[Ifd] = []

    def walk(ifds: Iterable[Ifd]) -> None:
        for ifd in ifds:
            if _first(ifd, NEW_SUBFILE_TYPE, 0) == 0 and IMAGE_WIDTH in ifd:
                candidates.append(ifd)
            walk(ifd.sub_ifds(SUB_IFDS))

    walk(tiff.ifds)
    for ifd in candidates:
        if _first(ifd, PHOTOMETRIC) == PHOTOMETRIC_CFA:
            dims = ifd.get(CFA_REPEAT_PATTERN_DIM)
            if dims is not None and tuple(dims.value) != (2, 2):
                raise ImageReadError(f"{source}: a {dims.value[0]}x{dims.value[1]} CFA (e.g. X-Trans); "
                                     "only 2x2 Bayer mosaics are supported")
            return ifd
    if any(_first(ifd, PHOTOMETRIC) == PHOTOMETRIC_LINEAR_RAW for ifd in candidates):
        raise ImageReadError(f"{source}: a LinearRaw DNG (already demosaiced or monochrome), not a CFA mosaic")
    raise ImageReadError(f"{source}: DNG without a CFA raw image")


def _first(ifd: Ifd, code: int, default: int | None = None) -> int | None:
    """The first number of a numeric tag, or ``default``."""
    tag = ifd.get(code)
    if tag is None or not tag.value or tag.is_pointer or tag.type in (TagType.ASCII, TagType.UNDEFINED):
        return default
    return int(tag.numbers()[0])


def _copy_exif(exif: Ifd, notes: list[str]) -> dict[int, Tag]:
    """All Exif tags as stored (MakerNote as bytes), the Interop IFD re-laid, other offsets dropped."""
    return portable_tags(exif, notes, keep=(INTEROP_IFD,), label="Exif tag")


def _rawpy_meta(source: Path, raw: rawpy.RawPy, tiff: TiffData | None, mosaic: np.ndarray) -> _Meta:
    """Metadata for a non-DNG source: DNG tags from LibRaw, descriptive tags from the file."""
    shape = mosaic.shape
    pattern = raw.raw_pattern
    if pattern is None or pattern.shape != (2, 2):
        kind = "an X-Trans or other non-Bayer" if pattern is not None and pattern.size > 1 else "not a CFA"
        raise ImageReadError(f"{source}: {kind} raw; only 2x2 Bayer mosaics are supported")
    if raw.raw_image.shape != shape:
        raise ImageWriteError(f"{source}: the mosaic is {shape[0]}x{shape[1]} but LibRaw's raw image is "
                              f"{'x'.join(map(str, raw.raw_image.shape))}")
    desc = raw.color_desc.decode("ascii", "replace")
    plane_of = {"R": 0, "G": 1, "B": 2}
    if any(ch not in plane_of for ch in desc[:raw.num_colors]) or len(set(desc[:raw.num_colors])) != 3:
        raise ImageReadError(f"{source}: CFA colours {desc!r} are not red, green and blue")
    s = raw.sizes
    top, left = s.top_margin, s.left_margin
    height, width = min(s.height, shape[0] - top), min(s.width, shape[1] - left)
    if height < 2 or width < 2:
        raise ImageReadError(f"{source}: LibRaw reports an empty visible area")
    # DNG's CFA and black-level patterns start at the ActiveArea's corner; rawpy's raw_colors is
    # indexed on the whole sensor, so take the 2x2 cell at the active area's corner.
    cell = raw.raw_colors[top:top + 2, left:left + 2]
    cfa = bytes(plane_of[desc[c]] for c in cell.ravel())
    blacks = raw.black_level_per_channel
    built = [
        Tag.byte(DNG_VERSION, (1, 4, 0, 0)), Tag.byte(DNG_BACKWARD_VERSION, (1, 1, 0, 0)),
        Tag.short(CFA_REPEAT_PATTERN_DIM, 2, 2), Tag.byte(CFA_PATTERN, cfa),
        Tag.byte(CFA_PLANE_COLOR, (0, 1, 2)), Tag.short(CFA_LAYOUT, 1),
        Tag.short(BLACK_LEVEL_REPEAT_DIM, 2, 2),
        Tag.long(BLACK_LEVEL, *(int(blacks[c]) for c in cell.ravel())),
        Tag.long(WHITE_LEVEL, int(raw.white_level)),
        Tag.long(ACTIVE_AREA, top, left, top + height, left + width),
        *_default_crop(s, top, left, height, width),
        Tag.short(ORIENTATION, _FLIP_TO_ORIENTATION.get(s.flip, 1)),
        # LibRaw's matrices are Adobe's D65 ones (ColorMatrix2 of Adobe's converter)
        Tag.short(CALIBRATION_ILLUMINANT_1, _D65),
    ]
    scale = _default_scale(float(s.pixel_aspect))
    if scale is not None:
        built.append(scale)
    rows = [desc.index(ch) for ch in "RGB"]  # camera channel of each CFA plane colour
    matrix = np.asarray(raw.rgb_xyz_matrix, dtype=np.float64)[rows]
    if not (np.any(matrix) and np.all(np.isfinite(matrix))):
        matrix = _matrix_from_file(tiff, rows)
    built.append(Tag.srational(COLOR_MATRIX_1, *(round(float(v), 6) for v in matrix.ravel())))
    neutral = _as_shot_neutral(raw, rows, mosaic[top:top + height, left:left + width])
    if neutral is not None:
        built.append(neutral)
    tags = {t.code: t for t in built}

    camera = _camera_tags(source, raw, tiff)
    tags.update(camera.ifd0)
    exif = dict(camera.exif)
    maker_note = exif.pop(MAKER_NOTE, None)
    if maker_note is not None:
        tags[DNG_PRIVATE_DATA] = Tag.byte(DNG_PRIVATE_DATA, _makn_block(maker_note, camera.byte_order))
    make, model = _text(tags.get(MAKE)), _text(tags.get(MODEL))
    unique = model if make and model.lower().startswith(make.split()[0].lower()) else f"{make} {model}".strip()
    tags[UNIQUE_CAMERA_MODEL] = Tag.ascii(UNIQUE_CAMERA_MODEL, unique or "Unknown camera")
    return _Meta(camera.byte_order, tags, exif, camera.gps, camera.xmp, camera.notes)


def _default_crop(s: rawpy.ImageSizes, top: int, left: int, height: int, width: int) -> list[Tag]:
    """DefaultCrop from the camera's own crop when LibRaw has one inside the active area, else all of it.

    LibRaw's raw_inset_crops are relative to the whole sensor; DNG's crop to the active area.
    """
    ct, cl, ch, cw = s.crop_top_margin - top, s.crop_left_margin - left, s.crop_height, s.crop_width
    if not (0 < ch and 0 < cw and 0 <= ct and 0 <= cl and ct + ch <= height and cl + cw <= width):
        ct, cl, ch, cw = 0, 0, height, width
    return [Tag.long(DEFAULT_CROP_ORIGIN, cl, ct), Tag.long(DEFAULT_CROP_SIZE, cw, ch)]


def _default_scale(pixel_aspect: float) -> Tag | None:
    """DefaultScale for non-square pixels (LibRaw's pixel_aspect: a pixel's width over its height),
    or None for square ones. The short side is stretched, as LibRaw does; LibRaw reads the tag back
    as horizontal / vertical, so the DNG develops at the camera's aspect (Kodak DC120: 1301x976).
    """
    if not (math.isfinite(pixel_aspect) and pixel_aspect > 0) or abs(pixel_aspect - 1) < 1e-6:
        return None
    ratio = Fraction(pixel_aspect).limit_denominator(10_000)
    return Tag.rational(DEFAULT_SCALE, *((ratio, 1) if ratio > 1 else (1, 1 / ratio)))


# Kodak's camera -> linear sRGB matrix (KDC, DCR): 3 rows of (unused, then 3 coefficients), which
# LibRaw develops with (dcraw's parse_tiff_ifd, tag 37400) when it has no Adobe matrix.
_KODAK_RGB_CAM = 37400


def _matrix_from_file(tiff: TiffData | None, rows: list[int]) -> np.ndarray:
    """ColorMatrix1 (XYZ -> camera, rows in CFA plane order) for a camera LibRaw has no Adobe matrix
    for: from the file's own camera -> sRGB matrix (Kodak's tag 37400, as LibRaw's development
    uses it), else XYZ -> linear sRGB (camera channels taken as sRGB primaries, LibRaw's guess).
    Either way rawpy develops the DNG in the colours it develops the source in.
    """
    found = []

    def walk(ifds: Iterable[Ifd]) -> None:
        for ifd in ifds:
            tag = ifd.get(_KODAK_RGB_CAM)
            if tag is not None and tag.type in (TagType.RATIONAL, TagType.SRATIONAL, TagType.FLOAT, TagType.DOUBLE) and tag.count == 12:
                found.append(np.array(tag.numbers(), dtype=np.float64).reshape(3, 4)[:, 1:])
            walk(ifd.sub_ifds(SUB_IFDS))

    walk(tiff.ifds if tiff is not None else ())
    for rgb_cam in found:
        if np.all(np.isfinite(rgb_cam)) and abs(np.linalg.det(rgb_cam)) > 1e-6:
            return np.linalg.inv(rgb_cam)[rows] @ np.array(_XYZ_TO_SRGB)
    return np.array(_XYZ_TO_SRGB)


def _as_shot_neutral(raw: rawpy.RawPy, rows: list[int], visible: np.ndarray) -> Tag | None:
    """AsShotNeutral (1 / multiplier, green 1) from the camera's white balance. When the file stores
    none (Kodak DC120), LibRaw's camera-WB development falls back to its automatic (grey-world)
    balance, so ours is that balance of ``visible`` (the mosaic written); daylight multipliers
    only when it finds no usable block. Without the tag readers guess their own (RawTherapee:
    camera-native 1, 1, 1, a warm cast on the DC120).
    """
    sources = (lambda: raw.camera_whitebalance, lambda: _grey_world(raw, visible), lambda: raw.daylight_whitebalance)
    for multipliers in sources:
        wb = np.asarray(multipliers()[:4], dtype=np.float64)[rows]
        if np.all(np.isfinite(wb)) and np.all(wb > 0):
            return Tag.rational(AS_SHOT_NEUTRAL, *(float(wb[1] / v) for v in wb))
    return None


def _grey_world(raw: rawpy.RawPy, visible: np.ndarray) -> list[float]:
    """LibRaw's automatic white balance of the visible mosaic, per LibRaw colour index: 1 / mean
    of each colour over the 8x8 blocks (from the visible corner) without a pixel within 25 DN of
    white, both greens pooled (a DNG has one green). 0 for a colour with no usable pixel.
    """
    height, width = visible.shape
    padded = np.zeros((-(-height // 8) * 8, -(-width // 8) * 8), dtype=bool)
    padded[:height, :width] = visible > int(raw.white_level) - 25
    bad = padded.reshape(padded.shape[0] // 8, 8, padded.shape[1] // 8, 8).any(axis=(1, 3))
    keep = ~np.repeat(np.repeat(bad, 8, axis=0), 8, axis=1)[:height, :width]
    desc = raw.color_desc.decode("ascii", "replace")[:4]
    black = raw.black_level_per_channel
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for dy in (0, 1):
        for dx in (0, 1):  # one Bayer phase at a time: each is one colour
            c = int(raw.raw_colors_visible[dy, dx])
            values = visible[dy::2, dx::2][keep[dy::2, dx::2]].astype(np.int64) - int(black[c])
            sums[desc[c]] = sums.get(desc[c], 0.0) + float(np.maximum(values, 0).sum())
            counts[desc[c]] = counts.get(desc[c], 0) + values.size
    return [counts[ch] / sums[ch] if sums.get(ch) else 0.0 for ch in desc]


# ------------------------------------------------------------------------------ camera tags


@dataclass
class CameraTags:
    """A raw's own description of the shot, for a DNG's IFD0 and Exif IFD or a developed image's EXIF.

    ``ifd0``: Make, Model, DateTime, Artist, Copyright and the other IFD0 tags a DNG keeps;
    ``exif``: Exif-IFD tags (a TIFF-EP file's IFD0 shot tags moved there, MakerNote included);
    ``byte_order``: that of the structure they were read from (a MakerNote's offsets follow it).
    """

    byte_order: str = "<"
    ifd0: dict[int, Tag] = field(default_factory=dict)
    exif: dict[int, Tag] = field(default_factory=dict)
    gps: Ifd | None = None
    xmp: bytes | None = None
    notes: list[str] = field(default_factory=list)


def read_camera_tags(source: str | os.PathLike[str], raw: rawpy.RawPy | None = None) -> CameraTags:
    """The shot as ``source`` records it: camera, dates, exposure, lens.

    The file's own tags win: its TIFF/Exif tags (DNG, CR2, NEF, ARW, KDC...), a CRW's CIFF records,
    else the Exif of its embedded preview. What they lack comes from LibRaw's shot information when
    ``raw`` (the file opened in rawpy) is given; a tag the file stores as 0 ("unknown") stays so,
    since LibRaw's value would be derived from it. Raises OSError when the file cannot be read, and
    rawpy's errors when LibRaw cannot unpack it.
    """
    source = Path(source)
    try:
        tiff = read_tiff_ifds(source)
    except TiffFormatError:
        tiff = None
    return _camera_tags(source, raw, tiff)


def _camera_tags(source: Path, raw: rawpy.RawPy | None, tiff: TiffData | None) -> CameraTags:
    """:func:`read_camera_tags` with the file's TIFF structure already read (None: not TIFF-based)."""
    if tiff is not None:
        camera = _tiff_camera_tags(tiff)
    else:
        camera = _ciff_camera_tags(source) or (_thumbnail_camera_tags(raw) if raw is not None else None)
    camera = camera or CameraTags()
    if raw is not None:
        _fill_from_rawpy(raw, camera.ifd0, camera.exif)
    return camera


def _tiff_camera_tags(tiff: TiffData) -> CameraTags:
    """IFD0's descriptive tags, the Exif IFD (with TIFF-EP's IFD0 shot tags), GPS and XMP."""
    ifd0 = tiff.ifds[0]
    camera = CameraTags(tiff.byte_order, notes=list(tiff.notes))
    for code, tag in ifd0.tags.items():
        if tag.is_pointer or tag.type == TagType.IFD:
            continue
        if code in _KEPT_IFD0:
            camera.ifd0[code] = tag
        elif code in _EXIF_TAGS:
            camera.exif[code] = tag  # TIFF-EP keeps Exif fields in IFD0
        elif code == _TIFF_EP_SENSING_METHOD and tag.type == TagType.SHORT:
            camera.exif.setdefault(_EXIF_SENSING_METHOD, Tag(_EXIF_SENSING_METHOD, tag.type, tag.value[:1]))
    exif_src = ifd0.sub_ifds(EXIF_IFD)
    if exif_src:
        camera.exif.update(_copy_exif(exif_src[0], camera.notes))
    camera.gps = (ifd0.sub_ifds(GPS_IFD) or (None,))[0]
    camera.xmp = bytes(ifd0.tags[XMP].value) if XMP in ifd0 else None
    return camera


def _fill_from_rawpy(raw: rawpy.RawPy, tags: dict[int, Tag], exif: dict[int, Tag]) -> None:
    """Fill shot details the file's tags lacked from LibRaw's (works for non-TIFF raws too)."""
    other, lens = raw.other, raw.lens  # the bounds keep garbage out of 32-bit rationals
    if 0 < other.shutter_speed < 1e6 and EXPOSURE_TIME not in exif:
        exif[EXPOSURE_TIME] = _exposure_time(float(other.shutter_speed))
    if 0 < other.aperture < 1000 and F_NUMBER not in exif:
        exif[F_NUMBER] = _f_number(float(other.aperture))
    if 0 < other.iso_speed < 65536 and ISO not in exif:
        exif[ISO] = Tag.short(ISO, round(other.iso_speed))
    if 0 < other.focal_length < 1e5 and FOCAL_LENGTH not in exif:
        exif[FOCAL_LENGTH] = Tag.rational(FOCAL_LENGTH, Fraction(float(other.focal_length)).limit_denominator(100))
    stamp = other.timestamp
    if isinstance(stamp, _dt.datetime) and stamp.year > 1970 and DATE_TIME_ORIGINAL not in exif:
        exif[DATE_TIME_ORIGINAL] = Tag.ascii(DATE_TIME_ORIGINAL, stamp.strftime("%Y:%m:%d %H:%M:%S"))
    if other.artist and ARTIST not in tags:
        tags[ARTIST] = Tag.ascii(ARTIST, other.artist)
    if lens.make and LENS_MAKE not in exif:
        exif[LENS_MAKE] = Tag.ascii(LENS_MAKE, lens.make)
    if lens.model and LENS_MODEL not in exif:
        exif[LENS_MODEL] = Tag.ascii(LENS_MODEL, lens.model)


def _exposure_time(seconds: float) -> Tag:
    """ExposureTime in the form cameras state it: 1/n s below 1/4 s, else tenths of a second
    (ExifTool prints the same), from a value computed from APEX units."""
    if seconds < 0.25001:
        return Tag.rational(EXPOSURE_TIME, (1, min(max(1, round(1 / seconds)), 0xFFFFFFFF)))
    return Tag.rational(EXPOSURE_TIME, Fraction(round(seconds * 10), 10))


def _f_number(f_number: float) -> Tag:
    """FNumber to two decimals (f/2.92 from a Canon APEX value stays 2.92, LibRaw's 2.798 is 2.8)."""
    return Tag.rational(F_NUMBER, Fraction(round(f_number * 100), 100))


def _text(tag: Tag | None) -> str:
    return "" if tag is None or tag.type != TagType.ASCII else tag.text()


def _makn_block(maker_note: Tag, byte_order: str) -> bytes:
    """DNGPrivateData for a MakerNote, in Adobe's form (DNG spec, "DNGPrivateData"; what exiftool
    and Adobe's converter read): ``"Adobe\\0"``, ``"MakN"``, big-endian byte count, the source's
    byte-order mark, the MakerNote's original offset (big-endian, so readers can rebase its
    internal offsets), then the MakerNote bytes. MakerNoteSafety is not set: we cannot vouch that
    a MakerNote has no offsets pointing outside itself.
    """
    body = (b"II" if byte_order == "<" else b"MM") + struct.pack(">I", maker_note.offset or 0) + bytes(maker_note.value)
    block = b"Adobe\0MakN" + struct.pack(">I", len(body)) + body
    return block + (b"\0" if len(body) % 2 else b"")


def _exif_from_thumbnail(raw: rawpy.RawPy) -> TiffData | None:
    """The Exif block of a non-TIFF raw's embedded JPEG preview (RAF and others carry one), if any."""
    with contextlib.suppress(Exception):  # no thumbnail, unknown format: LibRaw raises many kinds
        thumb = raw.extract_thumb()
        data = thumb.data if isinstance(thumb.data, (bytes, bytearray)) else b""
        start = data.find(b"Exif\0\0", 0, 65536)
        if start >= 0:
            (length,) = struct.unpack(">H", data[start - 2:start])
            return read_tiff_ifds(bytes(data[start + 6:start - 2 + length]))
    return None


def _thumbnail_camera_tags(raw: rawpy.RawPy) -> CameraTags | None:
    """Camera tags from the embedded preview's Exif. When the preview has none, LibRaw writes one
    itself (Software "dcraw v9.xx") from its normalised values ("EOS D30" for "Canon EOS D30",
    TargetAperture for FNumber): only its Make and Model are kept, which rawpy offers nowhere else.
    """
    thumb = _exif_from_thumbnail(raw)
    if thumb is None:
        return None
    ifd0 = thumb.ifds[0]
    if _text(ifd0.get(SOFTWARE)).startswith("dcraw"):
        return CameraTags(thumb.byte_order, {code: ifd0.tags[code] for code in (MAKE, MODEL) if code in ifd0})
    return _tiff_camera_tags(thumb)


# Canon CIFF (CRW) records, by id (type and id bits; ExifTool's CanonRaw names): Make and Model,
# OwnerName, ShotInfo (Canon's int16 exposure record), TimeStamp.
_CIFF_MAKE_MODEL, _CIFF_OWNER, _CIFF_SHOT_INFO, _CIFF_TIME_STAMP = 0x080A, 0x0810, 0x102A, 0x180E
_CIFF_WANTED = frozenset({_CIFF_MAKE_MODEL, _CIFF_OWNER, _CIFF_SHOT_INFO, _CIFF_TIME_STAMP})
_CIFF_MAX_ENTRIES, _CIFF_MAX_DEPTH = 4096, 6  # a CRW's heaps hold tens of entries, nested 3 deep


def _read_ciff(source: Path) -> tuple[str, dict[int, bytes], list[str]] | None:
    """The wanted records of a CIFF file (byte order, id -> bytes, notes), or None when not CIFF.

    CIFF is a tree of heaps; a heap's last 4 bytes give its directory's offset, whose 10-byte
    entries (tag, size, offset) hold the value in themselves (storage bits 01) or in the heap,
    and some are sub-heaps (data type 0x28 or 0x30).
    """
    with open(source, "rb") as fh:
        head = fh.read(14)
        if len(head) < 14 or head[:2] not in (b"II", b"MM") or head[6:14] != b"HEAPCCDR":
            return None
        bo = "<" if head[:2] == b"II" else ">"
        size = os.fstat(fh.fileno()).st_size
        notes: list[str] = []
        records: dict[int, bytes] = {}
        seen: set[int] = set()

        def heap(start: int, length: int, depth: int) -> None:
            if start in seen or depth > _CIFF_MAX_DEPTH:
                raise TiffFormatError(f"CIFF heap at {start} loops or nests too deep")
            seen.add(start)
            (table,) = struct.unpack(bo + "I", read_at(fh, size, start + length - 4, 4))
            (count,) = struct.unpack(bo + "H", read_at(fh, size, start + table, 2))
            if count > _CIFF_MAX_ENTRIES:
                raise TiffFormatError(f"CIFF heap at {start} claims {count} entries")
            entries = read_at(fh, size, start + table + 2, 10 * count)
            for i in range(count):
                tag, n, offset = struct.unpack_from(bo + "HII", entries, 10 * i)
                code, storage = tag & 0x3FFF, tag >> 14
                if storage == 1:
                    records.setdefault(code, entries[10 * i + 2:10 * i + 10])
                elif storage == 0 and (tag >> 8) & 0x38 in (0x28, 0x30):
                    heap(start + offset, n, depth + 1)
                elif storage == 0 and code in _CIFF_WANTED:
                    records.setdefault(code, read_at(fh, size, start + offset, n))

        (first,) = struct.unpack(bo + "I", head[2:6])
        try:
            heap(first, size - first, 0)
        except (TiffFormatError, struct.error) as exc:
            notes.append(f"CIFF records cut short: {exc}")
    return bo, records, notes


def _ciff_camera_tags(source: Path) -> CameraTags | None:
    """Make, Model, Artist, DateTimeOriginal, ExposureTime, FNumber and ISO as a CRW records them
    (decoded as ExifTool does), or None when ``source`` is not a CIFF file."""
    found = _read_ciff(source)
    if found is None:
        return None
    byte_order, records, notes = found
    camera = CameraTags(byte_order, notes=notes)
    names = records.get(_CIFF_MAKE_MODEL, b"").split(b"\0")
    for code, name in zip((MAKE, MODEL), names):
        if name.strip():
            camera.ifd0[code] = Tag.ascii(code, name.strip())
    owner = records.get(_CIFF_OWNER, b"").split(b"\0", 1)[0].strip()
    if owner:
        camera.ifd0[ARTIST] = Tag.ascii(ARTIST, owner)
    stamp = records.get(_CIFF_TIME_STAMP, b"")
    if len(stamp) >= 4 and (seconds := struct.unpack(byte_order + "I", stamp[:4])[0]):
        when = _dt.datetime(1970, 1, 1) + _dt.timedelta(seconds=seconds)  # camera-local time, stored as UTC
        camera.exif[DATE_TIME_ORIGINAL] = Tag.ascii(DATE_TIME_ORIGINAL, when.strftime("%Y:%m:%d %H:%M:%S"))
    shot = records.get(_CIFF_SHOT_INFO, b"")
    values = struct.unpack(f"{byte_order}{len(shot) // 2}h", shot[:len(shot) // 2 * 2])
    if len(values) > 22:
        # ShotInfo (int16, in 1/32 EV): [1] AutoISO, [2] BaseISO, [21] FNumber, [22] ExposureTime
        if values[2]:
            iso = 2 ** (values[2] / 32) * 100 / 32 * 2 ** (values[1] / 32)
            if 0 < iso < 65536:
                camera.exif[ISO] = Tag.short(ISO, round(iso))
        if 0 < values[21] < 640:  # up to f/1024
            camera.exif[F_NUMBER] = _f_number(2 ** (_canon_ev(values[21]) / 2))
        if -1000 < values[22] < 1000:  # 0 is 1 s in a CRW
            camera.exif[EXPOSURE_TIME] = _exposure_time(2 ** -_canon_ev(values[22]))
    return camera


def _canon_ev(value: int) -> float:
    """Canon's 1/32 EV code in EV, with its 1/3 and 2/3 step codes (0x0c, 0x14) made exact."""
    magnitude = abs(value)
    fraction = magnitude & 0x1F
    steps = {0x0C: 32 / 3, 0x14: 64 / 3}.get(fraction, fraction)
    return math.copysign((magnitude - fraction + steps) / 32, value)


# ------------------------------------------------------------------------------------------ XMP

N2N_NS = "https://github.com/n2ncli/ns/1.0/"
_RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
_XMP_NS = "http://ns.adobe.com/xap/1.0/"
_X_NS = "adobe:ns:meta/"
_XMLNS_NS = "http://www.w3.org/2000/xmlns/"
_XPACKET_BEGIN = '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
_XPACKET_END = '\n<?xpacket end="w"?>'
_XMP_PADDING = 2048  # XMP convention: room for editors to grow the packet in place


def _xmp_with_record(packet: bytes | None, software: str, record: dict) -> tuple[bytes, str | None]:
    """The source's XMP (or a new packet) with our rdf:Description added and xmp:CreatorTool set.

    Earlier n2n fields and CreatorTool are removed first, so each property appears once. Returns
    the packet and a note when the source's packet could not be parsed (it is then replaced).
    """
    doc, rdf, note = None, None, None
    if packet:
        try:
            doc = minidom.parseString(packet.rstrip(b"\0 \t\r\n"))
            found = doc.getElementsByTagNameNS(_RDF_NS, "RDF")
            rdf = found[0] if found else None
            note = None if rdf is not None else "source XMP has no rdf:RDF; replaced by ours"
        except (ExpatError, ValueError) as exc:
            note = f"source XMP unreadable ({exc}); replaced by ours"
    if rdf is None:
        doc = minidom.parseString(
            f'<x:xmpmeta xmlns:x="{_X_NS}" x:xmptk="n2ncli {__version__}"><rdf:RDF xmlns:rdf="{_RDF_NS}">'
            "</rdf:RDF></x:xmpmeta>")
        rdf = doc.getElementsByTagNameNS(_RDF_NS, "RDF")[0]
    for desc in [n for n in rdf.childNodes if _is_element(n, _RDF_NS, "Description")]:
        for attr in [desc.attributes.item(i) for i in range(desc.attributes.length)]:
            if _superseded(attr.namespaceURI, attr.localName):
                desc.removeAttributeNode(attr)
        for child in [n for n in desc.childNodes if n.nodeType == n.ELEMENT_NODE]:
            if _superseded(child.namespaceURI, child.localName):
                desc.removeChild(child)
        properties = [n for n in desc.childNodes if n.nodeType == n.ELEMENT_NODE] + [
            a for a in (desc.attributes.item(i) for i in range(desc.attributes.length))
            if a.namespaceURI not in (_XMLNS_NS, _RDF_NS)]
        if not properties:
            rdf.removeChild(desc)
    # Every name says "Denoise": exiftool and others look tags up by name across namespaces, so
    # a plain n2n:Model showed as the camera's Model on a source without one.
    fields = [("xmp:CreatorTool", software), ("n2n:DenoiseVersion", str(record.get("version", __version__)))]
    if "model" in record:
        fields.append(("n2n:DenoiseModel", str(record["model"])))
    if "sha256" in record:
        fields.append(("n2n:DenoiseModelSha256", str(record["sha256"])))
    if "settings" in record:
        fields.append(("n2n:DenoiseSettings", json.dumps(record["settings"], sort_keys=True)))
    fields.append(("n2n:DenoiseRecord", json.dumps(record, sort_keys=True)))  # the one read back
    ours = doc.createElementNS(_RDF_NS, "rdf:Description")
    ours.setAttribute("rdf:about", "")
    ours.setAttribute("xmlns:xmp", _XMP_NS)
    ours.setAttribute("xmlns:n2n", N2N_NS)
    for name, text in fields:
        element = doc.createElementNS(_XMP_NS if name.startswith("xmp:") else N2N_NS, name)
        element.appendChild(doc.createTextNode(text))
        ours.appendChild(element)
    rdf.appendChild(ours)
    body = doc.documentElement.toxml()
    return (_XPACKET_BEGIN + body + "\n" + " " * _XMP_PADDING + _XPACKET_END).encode("utf-8"), note


def _is_element(node: minidom.Node, namespace: str, local: str) -> bool:
    return node.nodeType == node.ELEMENT_NODE and node.namespaceURI == namespace and node.localName == local


def _superseded(namespace: str | None, local: str | None) -> bool:
    """Properties our Description replaces: every n2n field, and xmp:CreatorTool."""
    return namespace == N2N_NS or (namespace == _XMP_NS and local == "CreatorTool")


# The record's property: n2n:DenoiseRecord; n2n:Record in DNGs written before the rename (0.2.0 and earlier).
_RECORD_NAMES = ("DenoiseRecord", "Record")


def _record_from_xmp(packet: bytes, path: Path) -> dict | None:
    """n2n:DenoiseRecord or the older n2n:Record (element or attribute form, as XMP editors may
    rewrite it) as a dict, or None."""
    try:
        doc = minidom.parseString(packet.rstrip(b"\0 \t\r\n"))
    except (ExpatError, ValueError):
        return None
    for name in _RECORD_NAMES:
        texts = doc.getElementsByTagNameNS(N2N_NS, name)
        if texts:
            text = "".join(n.data for n in texts[0].childNodes if n.nodeType == n.TEXT_NODE)
            break
        attrs = [d for d in doc.getElementsByTagNameNS(_RDF_NS, "Description") if d.hasAttributeNS(N2N_NS, name)]
        if attrs:
            text = attrs[0].getAttributeNS(N2N_NS, name)
            break
    else:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        raise ImageReadError(f"{path}: its n2n processing record is damaged (not a JSON object)")
    return record


# ------------------------------------------------------------------------------------- public API


def read_processing_record(path: str | os.PathLike[str]) -> dict | None:
    """The record :func:`write_dng` embedded, or None when the file is not one of our DNGs.

    Reads IFD0's entries and the XMP packet only (no pixels, no sub-IFDs). A file that is not
    TIFF-based, or has no n2n XMP, gives None; an unreadable file raises ImageReadError.
    """
    path = Path(path)
    try:
        tiff = read_tiff_ifds(path, follow=False, chain=False, codes=(XMP,))
    except TiffFormatError:
        return None
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read ({exc.strerror or exc})") from None
    xmp = tiff.ifds[0].get(XMP)
    if xmp is None or xmp.type not in (TagType.BYTE, TagType.UNDEFINED, TagType.ASCII):
        return None
    return _record_from_xmp(bytes(xmp.value), path)


def write_dng(path: str | os.PathLike[str], mosaic: np.ndarray, source: str | os.PathLike[str], *,
              software: str, record: dict | None, compression: str = "lossless", decoded=None) -> None:  # noqa: ANN001
    """Write ``mosaic`` as a DNG carrying ``source``'s raw metadata, atomically.

    ``mosaic``: HxW uint16, the shape of ``rawpy.imread(source).raw_image`` (whole sensor with
    masked borders), in the source's DN scale. ``software`` becomes the Software tag and
    xmp:CreatorTool; ``record`` (JSON-able) is embedded as XMP for :func:`read_processing_record`,
    and NoiseReductionApplied set; ``None`` marks nothing (the file is not a denoised output).
    ``compression``: one of :data:`DNG_COMPRESSIONS`, ``"lossless"`` (lossless JPEG tiles) or
    ``"none"`` (uncompressed strips). ``decoded``: the source already open and unpacked in rawpy
    (``read_raw(keep_decoded=True)``), so a non-DNG source is not decoded again for its metadata.
    Raises ConfigError for another compression, ImageReadError
    for a source it cannot take the metadata from (not a 2x2 Bayer raw), ImageWriteError for a
    mosaic that does not fit it or a failed write.
    """
    path, source = Path(path), Path(source)
    if compression not in DNG_COMPRESSIONS:
        raise ConfigError(f"DNG compression must be one of {', '.join(DNG_COMPRESSIONS)}, got {compression!r}")
    mosaic = np.asarray(mosaic)
    if mosaic.ndim != 2 or mosaic.dtype != np.uint16:
        raise ImageWriteError(f"{path}: the mosaic must be a 2-D uint16 array, not {mosaic.dtype} {mosaic.shape}")
    meta = _source_meta(source, mosaic, decoded)
    ifd0 = _cfa_ifd(mosaic, compression)
    ifd0.add(*meta.ifd0.values())
    ifd0.add(Tag.ascii(SOFTWARE, software),
             # 16 bytes that identify this raw data (DNG asks for a value unlikely to repeat)
             Tag.byte(RAW_DATA_UNIQUE_ID, hashlib.md5(np.ascontiguousarray(mosaic), usedforsecurity=False).digest()))
    exif = dict(meta.exif)
    exif.setdefault(EXIF_VERSION, Tag.undefined(EXIF_VERSION, b"0232"))
    ifd0.add(Tag.ifds(EXIF_IFD, Ifd(exif)))
    if meta.gps is not None and meta.gps.tags:
        ifd0.add(Tag.ifds(GPS_IFD, Ifd(dict(meta.gps.tags))))
    if record is not None:  # a denoised output; None writes other data (e.g. test noise) unmarked
        ifd0.add(Tag.rational(NOISE_REDUCTION_APPLIED, (1, 1)))
        packet, note = _xmp_with_record(meta.xmp, software, record)
        if note:
            meta.notes.append(note)
        ifd0.add(Tag.byte(XMP, packet))
    elif meta.xmp:
        ifd0.add(Tag.byte(XMP, meta.xmp))
    for note in meta.notes:
        _log.debug("%s: %s", source, note)
    try:
        with atomic_path(path) as tmp:
            write_tiff_ifds(tmp, [ifd0], meta.byte_order)
    except OSError as exc:
        raise ImageWriteError(f"{path}: cannot write ({exc.strerror or exc})") from None
    except ValueError as exc:  # a value the TIFF format cannot hold (e.g. over 4 GiB)
        raise ImageWriteError(f"{path}: {exc}") from None


def _cfa_ifd(mosaic: np.ndarray, compression: str) -> Ifd:
    """IFD0 holding the mosaic: lossless JPEG tiles, or uncompressed strips (also for a sensor
    under 16 pixels wide, narrower than the smallest tile TIFF allows)."""
    height, width = mosaic.shape
    if compression == "none" or width < 16:
        return Ifd(image=mosaic).add(*image_tags(mosaic, PHOTOMETRIC_CFA))
    # Tiles of at most 256 x 256, as Adobe writes; a multiple of 16 as TIFF asks. Never wider than
    # the sensor: dcraw and LibRaw wrap a tile's rows at the sensor's width, not the tile's.
    tile = (min(_TILE, -(-height // 16) * 16), min(_TILE, width // 16 * 16))
    return Ifd(image=mosaic, encode=_lossless_jpeg).add(
        *image_tags(mosaic, PHOTOMETRIC_CFA, compression=COMPRESSION_JPEG, tile=tile))


def _lossless_jpeg(tile: np.ndarray, byte_order: str) -> bytes:
    """One CFA tile as lossless JPEG (DNG's Compression 7), its columns paired as 2 components.

    A component then holds one Bayer colour of each row, so JPEG's predictor 1 (the left sample
    of the same component) predicts every photosite from the nearest one of its own colour
    (a third smaller than one component on the real raws, docs/raw.md). dcraw and LibRaw copy a
    tile's samples in stream order, which this keeps; rawspeed (darktable) decodes predictor 1
    only. libjpeg-turbo's lossless mode, 16-bit precision. The JPEG stream has its own byte
    order, so ``byte_order`` does not matter.
    """
    import imagecodecs

    rows, columns = tile.shape[:2]
    pairs = np.ascontiguousarray(tile.reshape(rows, columns // 2, 2))
    try:
        return bytes(imagecodecs.jpeg8_encode(pairs, lossless=True, predictor=1, bitspersample=16))
    except Exception as exc:  # imagecodecs' codec errors; write_dng reports ValueError as one line
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise ValueError(f"lossless JPEG encoding failed ({text}; imagecodecs {imagecodecs.__version__} needs "
                         "libjpeg-turbo 3's 16-bit lossless mode); write the DNG uncompressed instead "
                         "(--dng-compression none)") from None


def _source_meta(source: Path, mosaic: np.ndarray, decoded=None) -> _Meta:  # noqa: ANN001
    """Gather the metadata to carry from ``source`` (``decoded``: its open rawpy object, if the
    caller has one), translating every failure into ImageReadError."""
    tiff: TiffData | None
    try:
        tiff = read_tiff_ifds(source)
    except TiffFormatError:
        tiff = None
    except OSError as exc:
        raise ImageReadError(f"{source}: cannot read ({exc.strerror or exc})") from None
    if tiff is not None and DNG_VERSION in tiff.ifds[0]:
        return _dng_meta(source, tiff, mosaic.shape)
    import rawpy  # deferred: only raw runs pay for LibRaw

    try:
        if decoded is not None:
            return _rawpy_meta(source, decoded, tiff, mosaic)
        with rawpy.imread(str(source)) as raw:
            return _rawpy_meta(source, raw, tiff, mosaic)
    except (rawpy.LibRawError, OSError) as exc:
        raise ImageReadError(f"{source}: LibRaw cannot read it ({type(exc).__name__}: {exc})") from None


__all__ = ["DNG_COMPRESSIONS", "CameraTags", "read_camera_tags", "read_processing_record", "write_dng"]
