"""Read and write PNG, JPEG, TIFF, HEIF, AVIF and WebP images with their bit depth, EXIF and ICC
profile intact.

Pixels travel as ``HxWxC`` arrays of native values (``uint8``, ``uint16``, or ``float32`` for
float TIFF; C = 1 or 3), already turned upright by their EXIF orientation. 16-bit PNG goes
through imagecodecs (Pillow would cut it to 8 bits), TIFF is read by tifffile and written by
:mod:`n2ncli.io.tiff` (which nests the Exif and GPS IFDs), JPEG, WebP and AVIF through Pillow, HEIF through pillow-heif (imported, and its Pillow opener registered, only when a
HEIF file is read or written). EXIF is always passed around in Pillow's form: the bytes
``b"Exif\\0\\0"`` followed by a TIFF-structured block (what ``Image.Exif.tobytes()`` returns and
what a JPEG's APP1 segment holds); writers also accept the block without that header.

Files and byte strings share one decoder and one encoder: ``read_image``/``read_image_bytes`` and
``write_image``/``encode_image`` differ only in where the bytes come from or go.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import struct
import warnings as _pywarnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError
from PIL.TiffImagePlugin import IFDRational

from n2ncli.errors import ConfigError, ImageReadError, ImageWriteError
from n2ncli.fsutil import atomic_path
from n2ncli.io.tiff import (
    COMPRESSION_DEFLATE, GPS_IFD, ICC_PROFILE, INTEROP_IFD, NEW_SUBFILE_TYPE, PLANAR_CONFIG, RESOLUTION_UNIT,
    X_RESOLUTION, Y_RESOLUTION, Ifd, Tag, TagType, TiffFormatError, deflate, deflate_predictor, image_tags,
    portable_tags, read_tiff_ifds, write_tiff_ifds,
)

IMAGE_EXTENSIONS: frozenset[str] = frozenset({
    ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".heic", ".heif", ".hif", ".avif", ".webp"
})

_KIND_BY_EXTENSION = {
    ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF",
    ".heic": "HEIF", ".heif": "HEIF", ".hif": "HEIF", ".avif": "AVIF", ".webp": "WEBP",
}
_KINDS_SHOWN = "PNG, JPEG, TIFF, HEIF/HEIC, AVIF or WebP"
#: The quality a lossy format is written at when none is asked for (1..100, each format's own
#: scale). Chosen to match JPEG 95's fidelity: on two 384x256 Kodak crops JPEG 95 (4:4:4) gives
#: 41.5/43.8 dB PSNR, WebP 95 42.5/43.3, AVIF 90 (4:2:0) 41.3/43.2, HEIC 70 (4:2:0) 42.3/44.1.
DEFAULT_QUALITY: dict[str, int] = {"JPEG": 95, "WEBP": 95, "AVIF": 90, "HEIF": 70}
#: The deepest pixels each format keeps: HEIF stores 16-bit input as 10 bits, float needs TIFF.
_MAX_BIT_DEPTH = {"PNG": 16, "TIFF": 32, "HEIF": 16, "JPEG": 8, "WEBP": 8, "AVIF": 8}
SUBSAMPLINGS = ("4:4:4", "4:2:2", "4:2:0")
#: Brands of an ISO-BMFF ``ftyp`` box (major or compatible) that name an AVIF or a HEIF image.
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"})
_EXIF_HEADER = b"Exif\x00\x00"
_ORIENTATION_TAG = 0x0112
_EXIF_IFD_TAG = 0x8769
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_ICC_TAG = 34675
# Descriptive IFD0 tags a TIFF carries beside its Exif and GPS sub-IFDs: Make, Model, Software,
# DateTime, Artist, Copyright.
_TIFF_TEXT_TAGS = (271, 272, 305, 306, 315, 33432)
#: Exif tags stored as (S)RATIONAL, which tifffile hands over as flat (numerator, denominator) tuples:
#: exposure time, f-number, shutter/aperture/brightness/bias/max aperture values, subject distance,
#: focal length, lens specification.
_EXIF_RATIONALS = frozenset({33434, 33437, 37377, 37378, 37379, 37380, 37381, 37382, 37386, 42034})
_MAXVAL = {8: 255, 16: 65535}
#: ``bit_depth`` of float images: their pixels are float32 (float16 and float64 TIFFs included).
FLOAT_DEPTH = 32
_BIT_DEPTHS = (8, 16, FLOAT_DEPTH)


@dataclass(frozen=True, eq=False)
class ImageData:
    """A decoded image plus the metadata a denoised copy should carry over.

    ``pixels``: HxWxC, C = 1 (grey) or 3 (RGB), upright: uint8 or uint16 native values, or
    float32 as stored (float TIFF; may hold values outside [0,1], NaN and infinities).
    ``bit_depth``: 8, 16, or ``FLOAT_DEPTH`` (32) for float pixels. 10/12-bit HEIF comes as 16.
    ``exif``: ``b"Exif\\0\\0"`` + TIFF block, with Orientation reset to 1 (pixels are upright).
    ``warnings``: human-readable notes on what was changed (the CLI shows them).
    ``format``: what the content was: "PNG", "JPEG", "TIFF", "HEIF", "AVIF" or "WEBP".
    ``quality``: a JPEG's quality on the IJG scale (1..100), estimated from its quantisation
    tables; None for other formats. ``subsampling``: "4:4:4", "4:2:2" or "4:2:0" for JPEG and
    HEIF colour images, else None. Both can be handed to ``write_image`` to match the source.
    """

    pixels: np.ndarray
    bit_depth: int
    exif: bytes | None
    icc_profile: bytes | None
    source: Path
    warnings: tuple[str, ...] = ()
    format: str | None = None
    quality: int | None = None
    subsampling: str | None = None

    @property
    def is_float(self) -> bool:
        """Whether the pixels are float32 as stored (a float TIFF), not integer native values."""
        return self.bit_depth == FLOAT_DEPTH

    def to_float(self) -> np.ndarray:
        """Return HxWxC float32 in [0,1]: native values divided by 255 or 65535.

        Float pixels are clipped to [0,1] (NaN becomes 0, +inf 1); what was cut off is
        ``pixels - to_float()`` (``denoise_image_data`` adds it back after the network).
        """
        if self.is_float:
            out = np.nan_to_num(self.pixels, nan=0.0, posinf=1.0, neginf=0.0)
            return np.clip(out, 0.0, 1.0, out=out)
        out = self.pixels.astype(np.float32)
        out /= np.float32(_MAXVAL[self.bit_depth])
        return out


@dataclass
class _Decoded:
    """What a format's decoder hands back before channels and orientation are normalised."""

    pixels: np.ndarray
    exif: bytes | None = None
    icc: bytes | None = None
    quality: int | None = None
    subsampling: str | None = None


# --------------------------------------------------------------------------------------- reading


def read_image(path: str | os.PathLike[str]) -> ImageData:
    """Decode an image file into upright native pixels plus its EXIF and ICC profile.

    PNG, JPEG, TIFF (8/16-bit integer, 16/32/64-bit float), HEIF/HEIC, AVIF and WebP; the
    content decides the format (a mismatching extension only adds a warning).
    Raises ImageReadError with a one-line ``"<path>: <reason>"`` for anything it cannot read.
    """
    path = Path(path)
    data = _read_bytes(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        raise ImageReadError(f"{path}: unsupported file type '{path.suffix}' ({_supported()})")
    return _decode(data, str(path), path, expected=_KIND_BY_EXTENSION[suffix])


def read_image_bytes(data: bytes, name: str = "<stdin>") -> ImageData:
    """``read_image`` for an image held in memory (e.g. read from stdin): the format is sniffed
    from the bytes; ``name`` labels error messages and becomes ``ImageData.source``."""
    if not data:
        raise ImageReadError(f"{name}: empty input (0 bytes)")
    return _decode(bytes(data), name, Path(name), expected=None)


def _decode(data: bytes, label: str, source: Path, expected: str | None) -> ImageData:
    kind = _sniff(data)
    if kind is None:
        raise ImageReadError(f"{label}: not a {_KINDS_SHOWN} image (unrecognised content)")
    notes: list[str] = []
    if expected is not None and kind != expected:
        notes.append(f"file content is {kind} although the extension is {source.suffix}")
    decoder: Callable[[str, bytes, list[str]], _Decoded] = _DECODERS[kind]
    try:
        decoded = decoder(label, data, notes)
    except ImageReadError:
        raise
    except ImportError as exc:
        raise ImageReadError(f"{label}: reading {kind} needs {_missing_module(exc)}") from exc
    except UnidentifiedImageError as exc:  # Pillow's message names a BytesIO object: useless
        raise ImageReadError(f"{label}: cannot decode {kind}: damaged or truncated file") from exc
    except Exception as exc:  # translate whatever the codec library raises into one clean line
        raise ImageReadError(f"{label}: cannot decode {kind}: {_one_line(exc)}") from exc
    pixels = _normalise_channels(label, decoded.pixels, notes)
    pixels, exif = _upright(pixels, decoded.exif, notes)
    depth = {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16}.get(pixels.dtype, FLOAT_DEPTH)
    return ImageData(
        pixels=np.ascontiguousarray(pixels),
        bit_depth=depth,
        exif=exif,
        icc_profile=decoded.icc or None,
        source=source,
        warnings=tuple(notes),
        format=kind,
        quality=decoded.quality,
        subsampling=decoded.subsampling if pixels.shape[2] == 3 else None,
    )


def _read_bytes(path: Path) -> bytes:
    if path.is_dir():
        raise ImageReadError(f"{path}: is a directory, not an image file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except PermissionError:
        raise ImageReadError(f"{path}: permission denied") from None
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read file: {exc.strerror or _one_line(exc)}") from exc
    if not data:
        raise ImageReadError(f"{path}: empty file (0 bytes)")
    return data


def _sniff(data: bytes) -> str | None:
    if data.startswith(_PNG_SIGNATURE):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[4:8] == b"ftyp":  # ISO-BMFF: the major brand, then compatible brands, 4 bytes each
        size = min(max(struct.unpack(">I", data[:4])[0], 16), len(data), 4096)
        major = data[8:12]
        brands = {major} | {data[i : i + 4] for i in range(16, size - 3, 4)}
        if major in _AVIF_BRANDS or (major not in _HEIF_BRANDS - {b"mif1", b"msf1"} and brands & _AVIF_BRANDS):
            return "AVIF"  # AVIF files list the generic mif1 too: av01 wins unless HEVC is the major brand
        if brands & _HEIF_BRANDS:
            return "HEIF"
    return None


def _decode_png(label: str, data: bytes, notes: list[str]) -> _Decoded:
    pixels = imagecodecs.png_decode(data)  # palette and 1/2/4-bit grey come back expanded to 8 bits
    exif, icc = _png_metadata(data, notes)
    return _Decoded(pixels, exif, icc)


def _png_metadata(data: bytes, notes: list[str]) -> tuple[bytes | None, bytes | None]:
    """Pull the eXIf and iCCP chunks out of a PNG byte string (the decoder does not expose them)."""
    exif = icc = None
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if len(body) < length or ctype == b"IEND":
            break
        if ctype == b"eXIf":
            exif = body
        elif ctype == b"iCCP":
            _name, _, rest = body.partition(b"\x00")
            try:
                icc = zlib.decompress(rest[1:])
            except zlib.error:
                notes.append("ignored a corrupt ICC profile")
        pos += 12 + length
    return exif, icc


def _decode_jpeg(label: str, data: bytes, notes: list[str]) -> _Decoded:
    from PIL.JpegImagePlugin import get_sampling

    with Image.open(io.BytesIO(data), formats=["JPEG"]) as im:
        im.load()
        quality = estimate_jpeg_quality(getattr(im, "quantization", None) or {})
        sampling = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}.get(get_sampling(im))
        decoded = _Decoded(np.asarray(im), im.info.get("exif"), im.info.get("icc_profile"), quality, sampling)
        if im.mode not in ("L", "RGB"):
            notes.append(f"converted {im.mode} JPEG to RGB (colours may shift)")
            decoded.pixels = np.asarray(im.convert("RGB"))
        return decoded


def _decode_pillow(kind: str, label: str, data: bytes, notes: list[str]) -> _Decoded:
    """WebP and AVIF through Pillow: 8 bits per sample (Pillow's AVIF decoder gives no more).

    Pillow reports an AVIF's irot/imir transform as its EXIF orientation, so ``_upright``
    turns AVIF, WebP and JPEG upright the same way."""
    with Image.open(io.BytesIO(data), formats=[kind]) as im:
        frames = getattr(im, "n_frames", 1)
        if frames > 1:
            notes.append(f"animated {kind}: read the first of {frames} frames")
        im.load()
        exif, icc = im.info.get("exif"), im.info.get("icc_profile")
        if im.mode not in ("L", "RGB", "RGBA", "LA"):
            notes.append(f"converted {im.mode} {kind} to RGB (colours may shift)")
            im = im.convert("RGB")
        return _Decoded(np.asarray(im), exif, icc)


def _decode_heif(label: str, data: bytes, notes: list[str]) -> _Decoded:
    """HEIF/HEIC through pillow-heif, 10/12-bit images at 16 bits (stretched to the full range).

    libheif applies the container's irot/imir transforms while decoding, and HEIF says they win
    over the EXIF orientation: the EXIF tag is reset to 1 (as pillow-heif's Pillow plugin does).
    """
    library = _pillow_heif()
    heif = library.open_heif(io.BytesIO(data), convert_hdr_to_8bit=False)
    if len(heif) > 1:
        notes.append(f"HEIF holds {len(heif)} images: read the primary one")
    info = dict(heif.info)
    library.set_orientation(info)
    pixels = np.asarray(heif)
    bits = int(info.get("bit_depth") or 8)
    if pixels.dtype == np.uint16 and 8 < bits < 16:  # libheif hands them over shifted to the top bits
        pixels = _stretch_bits(pixels >> np.uint16(16 - bits), bits)
    sampling = {444: "4:4:4", 422: "4:2:2", 420: "4:2:0"}.get(info.get("chroma"))  # type: ignore[arg-type]
    return _Decoded(pixels, info.get("exif"), info.get("icc_profile"), None, sampling)


@functools.cache
def _pillow_heif() -> Any:
    """pillow-heif, imported (and its Pillow opener registered) on first use: it is slow to
    import and only HEIF files need it."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    return pillow_heif


def _decode_tiff(label: str, data: bytes, notes: list[str]) -> _Decoded:
    with _collect_logs("tifffile") as logged, tifffile.TiffFile(io.BytesIO(data)) as tif:
        pages = tif.pages
        if len(pages) > 1:
            notes.append(f"multi-page TIFF: read the first of {len(pages)} pages")
        page = pages[0]
        if not isinstance(page, tifffile.TiffPage):
            raise ImageReadError(f"{label}: unsupported TIFF structure")
        dtype = page.dtype
        floating = dtype is not None and dtype.kind == "f"
        if dtype is None or not (floating or dtype in (np.uint8, np.uint16, np.bool_)):
            raise ImageReadError(f"{label}: unsupported sample format {dtype} "
                                 "(only 8 and 16-bit integer and 16/32/64-bit float images)")
        axes = page.axes
        if set(axes) - {"Y", "X", "S"}:
            raise ImageReadError(f"{label}: unsupported TIFF layout (axes {axes}), not a 2D image")
        photometric = int(page.photometric)
        if photometric == 6 and int(page.compression) not in (6, 7):
            raise ImageReadError(f"{label}: unsupported TIFF colour space YCbCr without JPEG")
        if photometric not in ((1, 2) if floating else (0, 1, 2, 3, 6)):
            name = getattr(page.photometric, "name", str(photometric))
            what = " for float samples" if floating else ""
            raise ImageReadError(f"{label}: unsupported TIFF colour space {name}{what}")
        pixels = page.asarray()
        pixels = np.transpose(pixels, [axes.index(a) for a in "YXS" if a in axes])
        if floating:
            if dtype == np.float64:
                notes.append("64-bit float TIFF read as 32-bit float")
            pixels = pixels.astype(np.float32, copy=False)  # float16 widens exactly
        elif photometric == 3:
            pixels = _apply_colormap(label, pixels, page.colormap)
        elif pixels.dtype == np.bool_:
            pixels = pixels.astype(np.uint8) * np.uint8(255)
        else:
            pixels = _stretch_bits(pixels, page.bitspersample)
        if photometric == 0:  # 0 is white: invert the grey channel (values now span the dtype)
            if pixels.ndim == 2:
                pixels = np.invert(pixels)
            else:
                pixels = pixels.copy()
                pixels[..., 0] = np.invert(pixels[..., 0])
        icc_tag = page.tags.get(_TIFF_ICC_TAG)
        icc = bytes(icc_tag.value) if icc_tag is not None else None
        exif = _tiff_exif(page, notes)
    notes.extend(f"TIFF reader: {message}" for message in dict.fromkeys(logged))
    return _Decoded(pixels, exif, icc)


_DECODERS: dict[str, Callable[[str, bytes, list[str]], _Decoded]] = {
    "PNG": _decode_png,
    "JPEG": _decode_jpeg,
    "TIFF": _decode_tiff,
    "HEIF": _decode_heif,
    "AVIF": functools.partial(_decode_pillow, "AVIF"),
    "WEBP": functools.partial(_decode_pillow, "WEBP"),
}


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(_one_line(record.getMessage()))


@contextlib.contextmanager
def _collect_logs(name: str) -> Iterator[list[str]]:
    """Catch a library's log warnings as notes (unhandled, Python would print them to stderr)."""
    handler = _ListHandler()
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def _stretch_bits(pixels: np.ndarray, bits: int) -> np.ndarray:
    """Scale odd bit depths (e.g. 12-bit in uint16) to the full 8/16-bit range of their dtype."""
    full = 8 * pixels.dtype.itemsize
    if bits in (full, 0) or bits > full:
        return pixels
    top = (1 << bits) - 1
    wide = pixels.astype(np.uint32) * _MAXVAL[full] + top // 2
    return (wide // top).astype(pixels.dtype)


def _apply_colormap(label: str, index: np.ndarray, colormap: np.ndarray | None) -> np.ndarray:
    if colormap is None or index.ndim != 2:
        raise ImageReadError(f"{label}: palette TIFF without a usable colour map")
    cmap = np.asarray(colormap)
    rgb = np.moveaxis(cmap[:, index.astype(np.intp)], 0, -1)
    # Most palettes are 8-bit colours stored as 16-bit: v*257 (libtiff) or v*256 (Pillow).
    for scale in (257, 256):
        if not np.any(cmap % scale):
            return (rgb // scale).astype(np.uint8)
    if int(cmap.max()) <= 255:
        return rgb.astype(np.uint8)
    return rgb.astype(np.uint16)


def _tiff_exif(page: tifffile.TiffPage, notes: list[str]) -> bytes | None:
    """Build a Pillow EXIF block from a TIFF's descriptive IFD0 tags and its EXIF sub-IFD."""
    exif = Image.Exif()
    for code in (*_TIFF_TEXT_TAGS, _ORIENTATION_TAG):
        tag = page.tags.get(code)
        if tag is not None and isinstance(tag.value, (str, int)):
            exif[code] = tag.value if isinstance(tag.value, str) else int(tag.value)
    sub = page.tags.get(_EXIF_IFD_TAG)
    if sub is not None and isinstance(sub.value, dict):
        fields = {}
        for name, value in sub.value.items():
            try:
                code = tifffile.TIFF.TAGS[name]
            except KeyError:
                continue
            if isinstance(value, str):
                fields[code] = value
            elif isinstance(value, int) and not isinstance(value, bool):
                fields[code] = int(value)
            elif code in _EXIF_RATIONALS and isinstance(value, tuple) and value and len(value) % 2 == 0:
                parts = [IFDRational(n, d) for n, d in zip(value[0::2], value[1::2]) if d]
                if len(parts) == len(value) // 2:
                    fields[code] = parts[0] if len(parts) == 1 else tuple(parts)
        if fields:
            exif[_EXIF_IFD_TAG] = fields
    if not len(exif):
        return None
    try:
        return exif.tobytes()
    except Exception:  # odd tag values Pillow cannot serialise: metadata is optional
        notes.append("dropped TIFF EXIF tags that could not be converted")
        return None


def _normalise_channels(label: str, pixels: np.ndarray, notes: list[str]) -> np.ndarray:
    """Return HxWxC with C in {1, 3}: alpha dropped, grey given a channel axis, bits in uint8."""
    if pixels.dtype == np.bool_:
        pixels = pixels.astype(np.uint8) * np.uint8(255)
    if pixels.dtype not in (np.uint8, np.uint16, np.float32):
        raise ImageReadError(f"{label}: unsupported sample format {pixels.dtype}")
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3 or pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ImageReadError(f"{label}: unsupported image shape {pixels.shape}")
    channels = pixels.shape[2]
    if channels in (2, 4):
        notes.append("dropped alpha channel")
        pixels = pixels[..., : channels - 1]
    elif channels not in (1, 3):
        raise ImageReadError(f"{label}: unsupported number of channels ({channels}), expected 1-4")
    return pixels


def _upright(
    pixels: np.ndarray, exif: bytes | None, notes: list[str]
) -> tuple[np.ndarray, bytes | None]:
    """Apply the EXIF orientation to the pixels and reset the tag to 1 in the returned block."""
    if not exif:
        return pixels, None
    exif = _with_exif_header(exif)
    parsed = Image.Exif()
    with _pywarnings.catch_warnings(record=True) as caught:
        _pywarnings.simplefilter("always")
        try:
            parsed.load(exif)
            orientation = parsed.get(_ORIENTATION_TAG)
        except Exception:
            notes.append("dropped an unreadable EXIF block")
            return pixels, None
    if caught:
        notes.append("EXIF block is partly damaged")
    if orientation in (None, 1):
        return pixels, exif
    if not isinstance(orientation, int) or not 2 <= orientation <= 8:
        notes.append(f"ignored invalid EXIF orientation {orientation!r}")
    else:
        pixels = apply_orientation(pixels, orientation)
    parsed[_ORIENTATION_TAG] = 1
    try:
        return pixels, parsed.tobytes()
    except Exception:  # a block we cannot rewrite would claim the wrong orientation: drop it
        notes.append("dropped EXIF block (could not reset its orientation)")
        return pixels, None


def apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Turn HxW[xC] pixels stored with EXIF ``orientation`` (1..8) upright (as exif_transpose)."""
    ops: dict[int, Callable[[np.ndarray], np.ndarray]] = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: np.swapaxes(a, 0, 1),
        6: lambda a: np.rot90(a, k=-1),
        7: lambda a: np.swapaxes(a[::-1, ::-1], 0, 1),
        8: lambda a: np.rot90(a, k=1),
    }
    if orientation not in ops:
        raise ConfigError(f"EXIF orientation must be 1..8, got {orientation!r}")
    return np.ascontiguousarray(ops[orientation](pixels))


# The quantisation tables of the JPEG standard (Annex K), in natural (row-major) order: libjpeg's
# quality q scales them by 5000/q (q < 50) or 200 - 2q percent.
_IJG_TABLES = (
    np.array([16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
              14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
              18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
              49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]),
    np.array([17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
              24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32),
)


def estimate_jpeg_quality(quantization: dict[int, Any]) -> int | None:
    """The IJG quality (1..100) whose tables come closest to a JPEG's quantisation ``tables``
    (Pillow's ``im.quantization``: table id -> 64 values in natural order); None without any.

    Exact for files written by libjpeg (Pillow, most software); for a camera's own tables it is
    the nearest IJG equivalent, good enough to re-encode at about the source's quality.
    """
    tables = [np.asarray(quantization[k], dtype=np.int64) for k in sorted(quantization)[:2]]
    if not tables or any(t.shape != (64,) for t in tables):
        return None
    top = 32767 if max(int(t.max()) for t in tables) > 255 else 255  # 16-bit tables at low quality
    best, best_error = None, None
    for q in range(1, 101):
        scale = 5000 // q if q < 50 else 200 - 2 * q
        error = sum(int(np.abs(np.clip((ref * scale + 50) // 100, 1, top) - t).sum())
                    for ref, t in zip(_IJG_TABLES, tables))
        if best_error is None or error < best_error:
            best, best_error = q, error
    return best


# --------------------------------------------------------------------------------------- writing


def float_to_native(img: np.ndarray, bit_depth: int) -> np.ndarray:
    """Convert float values in [0,1] to uint8/uint16: clip, then round half up (floor(x*max + 0.5)).

    NaN becomes 0. Works on any shape (HxWxC expected); computes in the input's float precision.
    """
    if bit_depth not in _MAXVAL:
        raise ConfigError(f"bit depth must be 8 or 16, got {bit_depth!r}")
    arr = np.asarray(img)
    if arr.dtype.kind != "f":
        raise ConfigError(f"float_to_native expects float pixels, got {arr.dtype}")
    work = np.float64 if arr.dtype == np.float64 else np.float32
    maxval = _MAXVAL[bit_depth]
    out = np.multiply(arr, maxval, dtype=work)
    out += 0.5
    np.floor(out, out=out)
    np.clip(out, 0, maxval, out=out)
    np.nan_to_num(out, copy=False, nan=0.0)
    return out.astype(np.uint8 if bit_depth == 8 else np.uint16)


def write_image(
    path: str | os.PathLike[str],
    pixels: np.ndarray,
    *,
    bit_depth: int | None = None,
    exif: bytes | None = None,
    icc_profile: bytes | None = None,
    quality: int | None = None,
    subsampling: str | None = None,
) -> Path:
    """Write HxWxC (C 1 or 3) or HxW pixels atomically, format chosen by the extension.

    Encodes exactly as ``encode_image`` (see there for the pixels, ``bit_depth``, ``quality``
    and ``subsampling``); the file is either the old one or the complete new one, never half.
    Returns ``Path(path)``.
    """
    path = Path(path)
    kind = _KIND_BY_EXTENSION.get(path.suffix.lower())
    if kind is None:
        shown = f"'{path.suffix}'" if path.suffix else "(none)"
        raise ImageWriteError(f"{path}: unsupported output extension {shown} ({_supported()})")
    payload = _encode(str(path), kind, pixels, bit_depth, exif, icc_profile, quality, subsampling)
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(payload)
    except OSError as exc:
        reason = exc.strerror or _one_line(exc)
        raise ImageWriteError(f"{path}: cannot write file: {reason}") from exc
    return path


def encode_image(
    pixels: np.ndarray,
    fmt: str,
    *,
    bit_depth: int | None = None,
    exif: bytes | None = None,
    icc_profile: bytes | None = None,
    quality: int | None = None,
    subsampling: str | None = None,
    name: str = "<stdout>",
) -> bytes:
    """Encode HxWxC (C 1 or 3) or HxW pixels as the bytes of an image file (e.g. for stdout).

    ``fmt``: a format or extension (``image_format``). ``pixels``: uint8/uint16 native values,
    or float (``bit_depth`` then required): 8/16 take values in [0,1] (clipped), 32 writes the
    floats as they are into a float32 TIFF. ``bit_depth`` converts integer input too (8->16 by
    *257, to 32 by /255 or /65535). JPEG, WebP and AVIF are 8-bit, HEIF 8 or 10-bit (from 16),
    PNG 8/16, TIFF 8/16/32. ``quality`` (1..100) for the lossy formats, None for
    ``DEFAULT_QUALITY``; ignored by PNG and TIFF. ``subsampling`` ("4:4:4", "4:2:2", "4:2:0")
    for JPEG, AVIF and HEIF; None: JPEG 4:4:4 at quality >= 90 else 4:2:0, AVIF and HEIF 4:2:0
    (what every decoder plays); lossy WebP is always 4:2:0. TIFF carries the IFD0 text tags of
    ``exif`` and its Exif and GPS sub-IFDs; the other formats carry the whole block. ``name``
    labels error messages.
    """
    return _encode(name, image_format(fmt), pixels, bit_depth, exif, icc_profile, quality, subsampling)


def image_format(fmt: str) -> str:
    """The format named by an extension or format name: ".jpg", "jpeg", "HEIC", "tif" -> "JPEG",
    "JPEG", "HEIF", "TIFF". Raises ConfigError for anything n2n does not write."""
    key = fmt.strip().lower().lstrip(".")
    kind = _KIND_BY_EXTENSION.get("." + key) or {k.lower(): k for k in _MAX_BIT_DEPTH}.get(key)
    if kind is None:
        raise ConfigError(f"unsupported image format {fmt!r} ({_supported()})")
    return kind


def writable_bit_depth(fmt: str) -> int:
    """The deepest pixels ``fmt`` (see ``image_format``) keeps: 8 (JPEG, WebP, AVIF), 16 (PNG,
    HEIF, stored as 10 bits) or 32 (TIFF: float)."""
    return _MAX_BIT_DEPTH[image_format(fmt)]


def _encode(label: str, kind: str, pixels: np.ndarray, bit_depth: int | None, exif: bytes | None,
            icc: bytes | None, quality: int | None, subsampling: str | None) -> bytes:
    if bit_depth is not None and bit_depth not in _BIT_DEPTHS:
        raise ConfigError(f"bit depth must be 8, 16 or 32 (float), got {bit_depth!r}")
    if bit_depth == FLOAT_DEPTH and kind != "TIFF":
        raise ImageWriteError(f"{label}: 32-bit float pixels can only be written as TIFF, not {kind}")
    if quality is not None and not (isinstance(quality, (int, np.integer)) and 1 <= quality <= 100):
        raise ConfigError(f"quality must be 1..100, got {quality!r}")
    if subsampling is not None and subsampling not in SUBSAMPLINGS:
        raise ConfigError(f"chroma subsampling must be one of {', '.join(SUBSAMPLINGS)}, got {subsampling!r}")
    native = _to_native(label, pixels, bit_depth)
    options = _Options(int(quality) if quality is not None else DEFAULT_QUALITY.get(kind, 0), subsampling)
    try:
        return _ENCODERS[kind](native, exif, icc, options)
    except ImageWriteError:
        raise
    except ImportError as exc:
        raise ImageWriteError(f"{label}: writing {kind} needs {_missing_module(exc)}") from exc
    except Exception as exc:  # translate codec errors (e.g. EXIF too long for JPEG)
        raise ImageWriteError(f"{label}: cannot encode {kind}: {_one_line(exc)}") from exc


@dataclass(frozen=True)
class _Options:
    quality: int  # resolved: the caller's or the format's default (0 for lossless formats)
    subsampling: str | None


def _to_native(label: str, pixels: np.ndarray, bit_depth: int | None) -> np.ndarray:
    """Validate and convert writer input to HxWxC uint8/uint16/float32 with C in {1, 3}."""
    arr = np.asarray(pixels)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageWriteError(f"{label}: pixels must be HxW or HxWxC with C 1 or 3, got {arr.shape}")
    if bit_depth == FLOAT_DEPTH:
        if arr.dtype.kind == "f":
            return arr.astype(np.float32, copy=False)
        if arr.dtype in (np.uint8, np.uint16):
            return arr.astype(np.float32) / np.float32(_MAXVAL[8 * arr.dtype.itemsize])
    elif arr.dtype.kind == "f":
        if bit_depth is None:
            raise ImageWriteError(f"{label}: float pixels need an explicit bit depth (8, 16 or 32)")
        return float_to_native(arr, bit_depth)
    if arr.dtype == np.uint8:
        return arr.astype(np.uint16) * np.uint16(257) if bit_depth == 16 else arr
    if arr.dtype == np.uint16:
        return to_8bit(arr) if bit_depth == 8 else arr
    raise ImageWriteError(f"{label}: unsupported pixel type {arr.dtype} (use uint8, uint16, float)")


def to_8bit(arr: np.ndarray) -> np.ndarray:
    """Scale uint16 to uint8 with rounding: (v*255 + 32767) // 65535."""
    return ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def _with_exif_header(exif: bytes) -> bytes:
    return exif if exif.startswith(_EXIF_HEADER) else _EXIF_HEADER + exif


def _encode_png(pixels: np.ndarray, exif: bytes | None, icc: bytes | None, _options: _Options) -> bytes:
    plane = pixels[..., 0] if pixels.shape[2] == 1 else pixels
    encoded = bytes(imagecodecs.png_encode(np.ascontiguousarray(plane)))  # it refuses strided views
    chunks = b""
    if icc:
        chunks += _png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc))
    if exif:
        body = exif[len(_EXIF_HEADER) :] if exif.startswith(_EXIF_HEADER) else exif
        chunks += _png_chunk(b"eXIf", body)
    ihdr_end = len(_PNG_SIGNATURE) + 8 + 13 + 4  # length, type, 13-byte IHDR, crc
    return encoded[:ihdr_end] + chunks + encoded[ihdr_end:]


def _png_chunk(ctype: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(ctype + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", crc)


def _encode_jpeg(pixels: np.ndarray, exif: bytes | None, icc: bytes | None, options: _Options) -> bytes:
    save: dict[str, object] = {"quality": options.quality}
    if options.subsampling is not None:
        save["subsampling"] = options.subsampling
    elif options.quality >= 90:
        save["subsampling"] = 0  # 4:4:4: chroma blur would undo fine denoised detail
    return _pillow_save("JPEG", pixels, exif, icc, save)


def _encode_webp(pixels: np.ndarray, exif: bytes | None, icc: bytes | None, options: _Options) -> bytes:
    return _pillow_save("WEBP", pixels, exif, icc, {"quality": options.quality})


def _encode_avif(pixels: np.ndarray, exif: bytes | None, icc: bytes | None, options: _Options) -> bytes:
    save: dict[str, object] = {"quality": options.quality}
    if pixels.shape[2] == 3:
        save["subsampling"] = options.subsampling or "4:2:0"
    return _pillow_save("AVIF", pixels, exif, icc, save)


def _pillow_save(kind: str, pixels: np.ndarray, exif: bytes | None, icc: bytes | None,
                 save: dict[str, object]) -> bytes:
    """Encode 8-bit pixels through Pillow's ``kind`` writer, with the EXIF block and ICC profile."""
    if pixels.dtype == np.uint16:
        pixels = to_8bit(pixels)
    image = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
    if exif:
        save["exif"] = _with_exif_header(exif)
    if icc:
        save["icc_profile"] = icc
    buffer = io.BytesIO()
    image.save(buffer, format=kind, **save)
    return buffer.getvalue()


def _encode_heif(pixels: np.ndarray, exif: bytes | None, icc: bytes | None, options: _Options) -> bytes:
    """HEIC through pillow-heif's x265 encoder: 8-bit, or 10-bit from 16-bit pixels.

    An EXIF orientation other than 1 is written as the container's irot/imir transform (the
    pixels stay as given, viewers turn them), as pillow-heif does for Pillow images."""
    grey = pixels.shape[2] == 1
    mode = ("L" if grey else "RGB") + (";16" if pixels.dtype == np.uint16 else "")
    plane = np.ascontiguousarray(pixels[..., 0] if grey else pixels)
    heif = _pillow_heif().from_bytes(mode, (plane.shape[1], plane.shape[0]), plane.tobytes())
    save: dict[str, object] = {"quality": options.quality}
    if not grey:
        save["chroma"] = int((options.subsampling or "4:2:0").replace(":", ""))
    if exif:
        save["exif"] = _with_exif_header(exif)
    if icc:
        save["icc_profile"] = icc
    buffer = io.BytesIO()
    heif.save(buffer, **save)
    return buffer.getvalue()


def _encode_tiff(pixels: np.ndarray, exif: bytes | None, icc: bytes | None, _options: _Options) -> bytes:
    """8/16-bit integer or float32 TIFF: deflate strips with the horizontal or floating-point
    predictor, the ICC profile, and the EXIF block's IFD0 text tags and Exif and GPS sub-IFDs.

    Written by io/tiff (tifffile cannot nest IFDs) with tifffile's tags, strips and 16-byte data
    alignment, so a TIFF without EXIF is byte for byte what n2ncli wrote through tifffile.
    """
    grey = pixels.shape[2] == 1
    layout = image_tags(pixels, 1 if grey else 2, compression=COMPRESSION_DEFLATE, predictor=deflate_predictor(pixels))
    ifd = Ifd(image=pixels, encode=deflate(pixels)).add(
        *(t for t in layout if t.code != NEW_SUBFILE_TYPE and not (grey and t.code == PLANAR_CONFIG)),
        Tag.rational(X_RESOLUTION, (1, 1)), Tag.rational(Y_RESOLUTION, (1, 1)), Tag.short(RESOLUTION_UNIT, 1))
    if icc:
        ifd.add(Tag.undefined(ICC_PROFILE, icc))
    if exif:
        ifd.add(*_tiff_exif_tags(exif))
    buffer = io.BytesIO()
    write_tiff_ifds(buffer, [ifd], "<", data_align=16)
    return buffer.getvalue()


def _tiff_exif_tags(exif: bytes) -> list[Tag]:
    """The IFD0 text tags (ASCII only) and the Exif (with Interop) and GPS sub-IFDs of an EXIF
    block, types and values as stored. A block the reader cannot follow gives none (metadata is
    optional), a damaged sub-IFD is left out."""
    block = exif[len(_EXIF_HEADER):] if exif.startswith(_EXIF_HEADER) else exif
    try:
        ifd0 = read_tiff_ifds(block, chain=False).ifds[0]
    except TiffFormatError:
        return []
    tags = [Tag.ascii(code, tag.value) for code in _TIFF_TEXT_TAGS
            if (tag := ifd0.get(code)) is not None and tag.type == TagType.ASCII and tag.value.isascii()]
    notes: list[str] = []  # the IFD offsets a copy drops: nothing a user could act on
    for code, keep in ((_EXIF_IFD_TAG, (INTEROP_IFD,)), (GPS_IFD, ())):
        found = ifd0.sub_ifds(code)
        if found and (entries := portable_tags(found[0], notes, keep=keep)):
            tags.append(Tag.ifds(code, Ifd(entries)))
    return tags


_ENCODERS: dict[str, Callable[[np.ndarray, bytes | None, bytes | None, _Options], bytes]] = {
    "PNG": _encode_png,
    "JPEG": _encode_jpeg,
    "TIFF": _encode_tiff,
    "HEIF": _encode_heif,
    "AVIF": _encode_avif,
    "WEBP": _encode_webp,
}


# ------------------------------------------------------------------------------------- listing


def list_images(folder: str | os.PathLike[str], extensions: frozenset[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Return every file with one of ``extensions`` under ``folder`` (recursive, sorted), skipping
    hidden names."""
    root = Path(folder)
    if not root.exists():
        raise ImageReadError(f"{root}: folder not found")
    if not root.is_dir():
        raise ImageReadError(f"{root}: not a folder")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(
            Path(dirpath, name)
            for name in filenames
            if not name.startswith(".") and Path(name).suffix.lower() in extensions
        )
    return sorted(found)


def _supported() -> str:
    return "supported: " + ", ".join(sorted(IMAGE_EXTENSIONS))


def _missing_module(exc: ImportError) -> str:
    name = exc.name or "a missing module"
    package = {"pillow_heif": "pillow-heif"}.get(name, name)
    return f"the {package} package (pip install {package})"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
