"""Read and write PNG, JPEG and TIFF images with their bit depth, EXIF and ICC profile intact.

Pixels travel as ``HxWxC`` arrays of native values (``uint8`` or ``uint16``, C = 1 or 3), already
turned upright by their EXIF orientation. 16-bit PNG goes through imagecodecs (Pillow would cut it
to 8 bits), TIFF through tifffile, JPEG through Pillow. EXIF is always passed around in Pillow's
form: the bytes ``b"Exif\\0\\0"`` followed by a TIFF-structured block (what ``Image.Exif.tobytes()``
returns and what a JPEG's APP1 segment holds); writers also accept the block without that header.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import struct
import warnings as _pywarnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import imagecodecs
import numpy as np
import tifffile
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from n2ncli.errors import ConfigError, ImageReadError, ImageWriteError
from n2ncli.fsutil import atomic_path

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff"})

_KIND_BY_EXTENSION = {
    ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"
}
_EXIF_HEADER = b"Exif\x00\x00"
_ORIENTATION_TAG = 0x0112
_EXIF_IFD_TAG = 0x8769
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_ICC_TAG = 34675
# Descriptive IFD0 tags a TIFF can carry directly (tifffile cannot write an EXIF sub-IFD).
# Make, Model, Software, DateTime, Artist, Copyright.
_TIFF_TEXT_TAGS = (271, 272, 305, 306, 315, 33432)
#: Exif tags stored as (S)RATIONAL, which tifffile hands over as flat (numerator, denominator) tuples:
#: exposure time, f-number, shutter/aperture/brightness/bias/max aperture values, subject distance,
#: focal length, lens specification.
_EXIF_RATIONALS = frozenset({33434, 33437, 37377, 37378, 37379, 37380, 37381, 37382, 37386, 42034})
_SUB_IFD_TAGS = (0x8769, 0x8825)  # Exif, GPS: appended after tifffile's output (_append_sub_ifd)
_MAXVAL = {8: 255, 16: 65535}


@dataclass(frozen=True, eq=False)
class ImageData:
    """A decoded image plus the metadata a denoised copy should carry over.

    ``pixels``: HxWxC uint8 or uint16 native values, C = 1 (grey) or 3 (RGB), upright.
    ``exif``: ``b"Exif\\0\\0"`` + TIFF block, with Orientation reset to 1 (pixels are upright).
    ``warnings``: human-readable notes on what was changed (the CLI shows them).
    """

    pixels: np.ndarray
    bit_depth: int
    exif: bytes | None
    icc_profile: bytes | None
    source: Path
    warnings: tuple[str, ...] = ()

    def to_float(self) -> np.ndarray:
        """Return HxWxC float32 in [0,1]: native values divided by 255 or 65535."""
        out = self.pixels.astype(np.float32)
        out /= np.float32(_MAXVAL[self.bit_depth])
        return out


# --------------------------------------------------------------------------------------- reading


def read_image(path: str | os.PathLike[str]) -> ImageData:
    """Decode a PNG, JPEG or TIFF file into upright native pixels plus its EXIF and ICC profile.

    Raises ImageReadError with a one-line ``"<path>: <reason>"`` for anything it cannot read.
    """
    path = Path(path)
    data = _read_bytes(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        raise ImageReadError(f"{path}: unsupported file type '{path.suffix}' ({_supported()})")
    kind = _sniff(data)
    if kind is None:
        raise ImageReadError(f"{path}: not a PNG, JPEG or TIFF image (unrecognised content)")
    notes: list[str] = []
    if kind != _KIND_BY_EXTENSION[suffix]:
        notes.append(f"file content is {kind} although the extension is {path.suffix}")
    decoder: Callable[[Path, bytes, list[str]], tuple[np.ndarray, bytes | None, bytes | None]]
    decoder = {"PNG": _decode_png, "JPEG": _decode_jpeg, "TIFF": _decode_tiff}[kind]
    try:
        pixels, exif, icc = decoder(path, data, notes)
    except ImageReadError:
        raise
    except Exception as exc:  # translate whatever the codec library raises into one clean line
        raise ImageReadError(f"{path}: cannot decode {kind}: {_one_line(exc)}") from exc
    pixels = _normalise_channels(path, pixels, notes)
    pixels, exif = _upright(pixels, exif, notes)
    return ImageData(
        pixels=np.ascontiguousarray(pixels),
        bit_depth=8 if pixels.dtype == np.uint8 else 16,
        exif=exif,
        icc_profile=icc or None,
        source=path,
        warnings=tuple(notes),
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
    return None


def _decode_png(
    path: Path, data: bytes, notes: list[str]
) -> tuple[np.ndarray, bytes | None, bytes | None]:
    pixels = imagecodecs.png_decode(data)  # palette and 1/2/4-bit grey come back expanded to 8 bits
    exif, icc = _png_metadata(data, notes)
    return pixels, exif, icc


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


def _decode_jpeg(
    path: Path, data: bytes, notes: list[str]
) -> tuple[np.ndarray, bytes | None, bytes | None]:
    with Image.open(io.BytesIO(data), formats=["JPEG"]) as im:
        im.load()
        exif = im.info.get("exif")
        icc = im.info.get("icc_profile")
        if im.mode not in ("L", "RGB"):
            notes.append(f"converted {im.mode} JPEG to RGB (colours may shift)")
            return np.asarray(im.convert("RGB")), exif, icc
        return np.asarray(im), exif, icc


def _decode_tiff(
    path: Path, data: bytes, notes: list[str]
) -> tuple[np.ndarray, bytes | None, bytes | None]:
    with _collect_logs("tifffile") as logged, tifffile.TiffFile(io.BytesIO(data)) as tif:
        pages = tif.pages
        if len(pages) > 1:
            notes.append(f"multi-page TIFF: read the first of {len(pages)} pages")
        page = pages[0]
        if not isinstance(page, tifffile.TiffPage):
            raise ImageReadError(f"{path}: unsupported TIFF structure")
        dtype = page.dtype
        if dtype is None or dtype not in (np.uint8, np.uint16, np.bool_):
            raise ImageReadError(
                f"{path}: unsupported sample format {dtype} (only 8 and 16-bit integer images)"
            )
        axes = page.axes
        if set(axes) - {"Y", "X", "S"}:
            raise ImageReadError(f"{path}: unsupported TIFF layout (axes {axes}), not a 2D image")
        photometric = int(page.photometric)
        if photometric == 6 and int(page.compression) not in (6, 7):
            raise ImageReadError(f"{path}: unsupported TIFF colour space YCbCr without JPEG")
        if photometric not in (0, 1, 2, 3, 6):
            name = getattr(page.photometric, "name", str(photometric))
            raise ImageReadError(f"{path}: unsupported TIFF colour space {name}")
        pixels = page.asarray()
        pixels = np.transpose(pixels, [axes.index(a) for a in "YXS" if a in axes])
        if photometric == 3:
            pixels = _apply_colormap(path, pixels, page.colormap)
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
    return pixels, exif, icc


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


def _apply_colormap(path: Path, index: np.ndarray, colormap: np.ndarray | None) -> np.ndarray:
    if colormap is None or index.ndim != 2:
        raise ImageReadError(f"{path}: palette TIFF without a usable colour map")
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


def _normalise_channels(path: Path, pixels: np.ndarray, notes: list[str]) -> np.ndarray:
    """Return HxWxC with C in {1, 3}: alpha dropped, grey given a channel axis, bits in uint8."""
    if pixels.dtype == np.bool_:
        pixels = pixels.astype(np.uint8) * np.uint8(255)
    if pixels.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(f"{path}: unsupported sample format {pixels.dtype}")
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3 or pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ImageReadError(f"{path}: unsupported image shape {pixels.shape}")
    channels = pixels.shape[2]
    if channels in (2, 4):
        notes.append("dropped alpha channel")
        pixels = pixels[..., : channels - 1]
    elif channels not in (1, 3):
        raise ImageReadError(f"{path}: unsupported number of channels ({channels}), expected 1-4")
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
    jpeg_quality: int = 95,
) -> Path:
    """Write HxWxC (C 1 or 3) or HxW pixels atomically, format chosen by the extension.

    ``pixels``: uint8/uint16 native values, or float in [0,1] (``bit_depth`` then required).
    ``bit_depth`` (8/16) converts integer input too (8->16 by *257). JPEG is always 8-bit;
    PNG and TIFF keep 8 or 16 bits. TIFF carries only the IFD0 text tags of ``exif`` (Make,
    Model, Software, DateTime, Artist, Copyright), not the EXIF sub-IFD. Returns ``Path(path)``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        shown = f"'{path.suffix}'" if path.suffix else "(none)"
        raise ImageWriteError(f"{path}: unsupported output extension {shown} ({_supported()})")
    if bit_depth is not None and bit_depth not in _MAXVAL:
        raise ConfigError(f"bit depth must be 8 or 16, got {bit_depth!r}")
    if not 1 <= int(jpeg_quality) <= 100:
        raise ConfigError(f"JPEG quality must be 1..100, got {jpeg_quality!r}")
    native = _to_native(path, pixels, bit_depth)
    kind = _KIND_BY_EXTENSION[suffix]
    encoder = {"PNG": _encode_png, "JPEG": _encode_jpeg, "TIFF": _encode_tiff}[kind]
    try:
        payload = encoder(native, exif, icc_profile, int(jpeg_quality))
    except ImageWriteError:
        raise
    except Exception as exc:  # translate codec errors (e.g. EXIF too long for JPEG)
        raise ImageWriteError(f"{path}: cannot encode {kind}: {_one_line(exc)}") from exc
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(payload)
    except OSError as exc:
        reason = exc.strerror or _one_line(exc)
        raise ImageWriteError(f"{path}: cannot write file: {reason}") from exc
    return path


def _to_native(path: Path, pixels: np.ndarray, bit_depth: int | None) -> np.ndarray:
    """Validate and convert writer input to HxWxC uint8/uint16 with C in {1, 3}."""
    arr = np.asarray(pixels)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageWriteError(f"{path}: pixels must be HxW or HxWxC with C 1 or 3, got {arr.shape}")
    if arr.dtype.kind == "f":
        if bit_depth is None:
            raise ImageWriteError(f"{path}: float pixels need an explicit bit depth (8 or 16)")
        return float_to_native(arr, bit_depth)
    if arr.dtype == np.uint8:
        return arr.astype(np.uint16) * np.uint16(257) if bit_depth == 16 else arr
    if arr.dtype == np.uint16:
        return to_8bit(arr) if bit_depth == 8 else arr
    raise ImageWriteError(f"{path}: unsupported pixel type {arr.dtype} (use uint8, uint16, float)")


def to_8bit(arr: np.ndarray) -> np.ndarray:
    """Scale uint16 to uint8 with rounding: (v*255 + 32767) // 65535."""
    return ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def _with_exif_header(exif: bytes) -> bytes:
    return exif if exif.startswith(_EXIF_HEADER) else _EXIF_HEADER + exif


def _encode_png(
    pixels: np.ndarray, exif: bytes | None, icc: bytes | None, _quality: int
) -> bytes:
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


def _encode_jpeg(
    pixels: np.ndarray, exif: bytes | None, icc: bytes | None, quality: int
) -> bytes:
    if pixels.dtype == np.uint16:
        pixels = to_8bit(pixels)
    image = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
    options: dict[str, object] = {"quality": quality}
    if quality >= 90:
        options["subsampling"] = 0  # 4:4:4: chroma blur would undo fine denoised detail
    if exif:
        options["exif"] = _with_exif_header(exif)
    if icc:
        options["icc_profile"] = icc
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **options)
    return buffer.getvalue()


def _encode_tiff(
    pixels: np.ndarray, exif: bytes | None, icc: bytes | None, _quality: int
) -> bytes:
    extratags = []
    sub_ifds: dict[int, dict] = {}
    if exif:
        parsed = Image.Exif()
        with _pywarnings.catch_warnings():
            _pywarnings.simplefilter("ignore")
            parsed.load(_with_exif_header(exif))
            for code in _SUB_IFD_TAGS:
                with contextlib.suppress(Exception):  # a damaged sub-IFD is left out, not fatal
                    if entries := dict(parsed.get_ifd(code)):
                        sub_ifds[code] = entries
        for code in _TIFF_TEXT_TAGS:
            value = parsed.get(code)
            if isinstance(value, str) and value.isascii():
                extratags.append((code, "s", 0, value, True))
        # tifffile refuses to write pointer tags: a placeholder one code below each (same sorted
        # place in IFD0) is renamed and pointed at the sub-IFD appended below
        extratags += [(code - 1, "I", 1, 0, True) for code in sub_ifds]
    grey = pixels.shape[2] == 1
    buffer = io.BytesIO()
    tifffile.imwrite(
        buffer,
        pixels[..., 0] if grey else pixels,
        photometric="minisblack" if grey else "rgb",
        compression="zlib",
        predictor=True,
        iccprofile=icc or None,
        extratags=extratags,
        software=False,
        datetime=None,
        metadata=None,
    )
    data = bytearray(buffer.getvalue())
    for code, entries in sub_ifds.items():
        _append_sub_ifd(data, code, entries)
    return bytes(data)


def _append_sub_ifd(data: bytearray, code: int, entries: dict) -> None:
    """Append ``entries`` as an IFD at the end of the little-endian TIFF in ``data``, and turn
    IFD0's placeholder entry ``code - 1`` (a LONG 0 from tifffile) into ``code`` pointing at it.

    tifffile cannot write nested IFDs; Pillow serialises one for a given file offset.
    """
    from PIL.TiffImagePlugin import ImageFileDirectory_v2

    (ifd0,) = struct.unpack_from("<I", data, 4)
    (count,) = struct.unpack_from("<H", data, ifd0)
    for i in range(count):
        entry = ifd0 + 2 + 12 * i
        if struct.unpack_from("<H", data, entry)[0] == code - 1:
            break
    else:
        return
    if len(data) % 2:
        data.append(0)
    ifd = ImageFileDirectory_v2(ifh=b"II\x2a\x00\x08\x00\x00\x00")
    for tag, value in entries.items():
        ifd[tag] = value
    start = len(data)
    data += ifd.tobytes(start)
    struct.pack_into("<HHII", data, entry, code, 4, 1, start)  # LONG, count 1


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


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
