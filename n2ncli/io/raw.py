"""Read camera raw files through LibRaw (rawpy): the Bayer mosaic, its pattern and levels.

Only Bayer sensors are accepted: the network works on 2x2 cells packed into four channels
(``n2ncli.bayer``). X-Trans, already-demosaiced files (LinearRaw DNG, sRAW/mRAW), Foveon and
monochrome sensors are refused with one line naming the file and the reason, from the header
(``probe_raw``); the body is decoded once (``read_raw``), and a damaged one is one line too.
LibRaw prints to C's stderr ("<file>: Unexpected end of file"); that text is caught around every
LibRaw call and goes into our line (or the result's warnings), never loose onto the terminal.

Normalised values are ``(DN - black) / (white - black)``, *not* clipped at 0: the noise of dark
pixels swings below black, and clipping it would bias shadows and stop an identity model from
returning the input exactly. Values above 1 (past the white level) are kept too.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from n2ncli.errors import ImageReadError, N2nError, UnsupportedRawError

_log = logging.getLogger(__name__)

#: Extensions of raw formats LibRaw reads (case-insensitive). Others are not tried as raw.
RAW_EXTENSIONS: frozenset[str] = frozenset({
    ".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".orf", ".rw2", ".raf",
    ".pef", ".ptx", ".kdc", ".dcr", ".k25", ".mrw", ".erf", ".srw", ".3fr", ".fff", ".iiq", ".mos",
    ".mef", ".rwl", ".x3f", ".gpr", ".raw", ".rwz",
})

#: Training crops keep values down to this far below black (in white-black units) when stored as
#: uint16; read noise never reaches it (a few DN against thousands).
TRAIN_FLOOR = 1.0 / 16.0


def is_raw(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in RAW_EXTENSIONS


@dataclass(frozen=True, eq=False)
class RawData:
    """A Bayer raw file as read by LibRaw.

    ``mosaic``: the whole sensor (``raw_image``, masked borders included) as HxW uint16 DN.
    ``top/left/height/width``: the visible area within it. ``pattern``: colours of the visible
    area's top-left cell, e.g. "GRBG". ``black``: 2x2 black levels in the visible area's phase.
    ``decoded``: LibRaw's state, kept by ``read_raw(keep_decoded=True)`` for one ``render``.
    """

    source: Path
    mosaic: np.ndarray
    top: int
    left: int
    height: int
    width: int
    pattern: str
    black: np.ndarray
    white: float
    warnings: tuple[str, ...] = ()
    decoded: _Decoded | None = field(default=None, repr=False)

    @property
    def visible(self) -> np.ndarray:
        return self.mosaic[self.top:self.top + self.height, self.left:self.left + self.width]

    def _level_maps(self) -> tuple[np.ndarray, np.ndarray]:
        reps = (-(-self.height // 2), -(-self.width // 2))
        black = np.tile(self.black.astype(np.float32), reps)[: self.height, : self.width]
        return black, np.float32(self.white) - black

    def normalised(self) -> np.ndarray:
        """The visible mosaic as HxW float32, 0 at black and 1 at white (not clipped)."""
        black, span = self._level_maps()
        return (self.visible.astype(np.float32) - black) / span

    def to_dn(self, values: np.ndarray) -> np.ndarray:
        """Inverse of ``normalised``: HxW values back to uint16 DN (rounded, clipped to 0..65535)."""
        black, span = self._level_maps()
        return np.clip(np.rint(values * span + black), 0, 65535).astype(np.uint16)

    def with_visible(self, visible_dn: np.ndarray) -> np.ndarray:
        """A copy of the whole-sensor mosaic with the visible area replaced (masked borders kept)."""
        full = self.mosaic.copy()
        full[self.top:self.top + self.height, self.left:self.left + self.width] = visible_dn
        return full


def _existing(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if path.is_dir():
        raise ImageReadError(f"{path}: is a directory, not a raw file")
    if not path.is_file():
        raise ImageReadError(f"{path}: file not found")
    return path


# ------------------------------------------------------------------ LibRaw's stderr and its errors

#: fd 2 is one per process: one LibRaw call at a time redirects it, so two captures never nest
#: and never restore each other's descriptor. This serialises LibRaw work across reader and
#: writer threads (a decode waits for another file's development); the network runs meanwhile.
_FD2_LOCK = threading.Lock()
_SHOWN_LINES = 3  # of what LibRaw said, in one error line


@contextmanager
def _libraw_stderr(path: Path, said: list[str]) -> Iterator[None]:
    """Run the body with C's stderr (fd 2) sent to a temporary file; LibRaw's and libjpeg's lines
    ("<file>: Unexpected end of file", "Premature end of JPEG file") land in ``said``, without
    the file name and repeats, even when the body raises.

    The CLI gives Python's stderr a descriptor of its own (``n2ncli.cli``), so progress drawn
    by other threads meanwhile still reaches the terminal; elsewhere, what is written to fd 2
    during the call (by any thread) lands in ``said`` too.
    """
    with _FD2_LOCK:
        try:
            sink = tempfile.TemporaryFile()
        except OSError:  # no temporary folder: LibRaw may talk, the reading still works
            yield
            return
        with sink:
            try:
                saved = os.dup(2)
            except OSError:  # no fd 2 at all (a daemon): nothing to keep clean
                yield
                return
            with contextlib.suppress(Exception):
                sys.stderr.flush()  # our own pending text goes out before fd 2 moves
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                sink.seek(0)
                text = sink.read().decode("utf-8", "replace")
                prefix = f"{path}: "
                for line in text.splitlines():
                    line = line.strip().removeprefix(prefix)
                    if line and line not in said:
                        said.append(line)


@contextmanager
def quiet_libraw(path: str | os.PathLike[str]) -> Iterator[None]:
    """For a caller of rawpy outside this module (the DNG writer): LibRaw's stderr kept off the
    terminal and logged at debug level."""
    said: list[str] = []
    try:
        with _libraw_stderr(Path(path), said):
            yield
    finally:
        if said:
            _log.debug("%s: LibRaw said: %s", path, "; ".join(said))


_T = TypeVar("_T")


def _libraw(path: Path, doing: str, work: Callable[[], _T]) -> tuple[_T, list[str]]:
    """``work()`` (rawpy calls on ``path``) with LibRaw's stderr caught: its result and what
    LibRaw said, or one ImageReadError line for whatever rawpy raised."""
    said: list[str] = []
    try:
        with _libraw_stderr(path, said):
            result = work()
    except N2nError:
        raise
    except Exception as exc:  # noqa: BLE001 - rawpy raises LibRaw*, OSError, RuntimeError, NotImplementedError
        raise _failure(path, exc, said, doing) from None
    if said:
        _log.debug("%s: LibRaw said: %s", path, "; ".join(said))
    return result, said


def _truncation(said: list[str]) -> list[str]:
    return [line for line in said if "end of file" in line.lower() or "end of jpeg" in line.lower()]


def _said(said: list[str]) -> str:
    more = f"; and {len(said) - _SHOWN_LINES} more" if len(said) > _SHOWN_LINES else ""
    return "LibRaw: " + "; ".join(said[:_SHOWN_LINES]) + more


#: How raw containers LibRaw reads start (TIFF and its ORF/RW2 variants, CIFF, Fujifilm, Sigma,
#: ISO media for CR3): a file that starts so but does not open is damaged, or a camera LibRaw lacks.
_RAW_MAGIC = (b"II*\0", b"MM\0*", b"IIRO", b"IIRS", b"IIU\0", b"FUJIFILM", b"FOVb")


def _looks_raw(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except OSError:
        return False
    return head.startswith(_RAW_MAGIC) or head[6:14] == b"HEAPCCDR" or head[4:8] == b"ftyp"


def _failure(path: Path, exc: Exception, said: list[str], doing: str) -> ImageReadError:
    """One line naming ``path`` and the reason, for anything rawpy raised while ``doing`` it."""
    import rawpy

    if isinstance(exc, rawpy.LibRawFileUnsupportedError):
        if _looks_raw(path):
            return ImageReadError(f"{path}: LibRaw cannot read it: a camera it does not support, "
                                  "or a truncated or corrupt file")
        return ImageReadError(f"{path}: not a raw file LibRaw can read")
    if isinstance(exc, (MemoryError, rawpy.LibRawUnsufficientMemoryError, rawpy.LibRawMemPoolOverflowError)):
        return ImageReadError(f"{path}: not enough memory to {doing} it")
    if isinstance(exc, rawpy.LibRawTooBigError):
        return ImageReadError(f"{path}: too large for LibRaw to {doing}")
    if isinstance(exc, OSError):  # rawpy's own is OSError((errno, strerror)), from opening the file
        args = exc.args[0] if exc.args and isinstance(exc.args[0], tuple) else exc.args
        return ImageReadError(f"{path}: cannot read file: {exc.strerror or (args[-1] if args else 'I/O error')}")
    text = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
    detail = _said(said) if said else f"{type(exc).__name__}: {' '.join(text.split())}".rstrip(": ")
    if _truncation(said):
        return ImageReadError(f"{path}: truncated raw file ({detail})")
    if said or isinstance(exc, rawpy.LibRawDataError):
        return ImageReadError(f"{path}: corrupt raw data ({detail})")
    if isinstance(exc, rawpy.LibRawIOError):
        return ImageReadError(f"{path}: truncated or corrupt raw file ({detail})")
    return ImageReadError(f"{path}: LibRaw cannot {doing} it ({detail})")


# ------------------------------------------------------------------ the colour filter, from the header

#: ``libraw_init`` flag: no data-error callback, so the header probe's own LibRaw prints nothing.
_NO_DATAERR_CALLBACK = 2
#: ``libraw_COLOR``'s answer where the file has no colour filter array (filters == 0).
_NO_CFA = 6
#: Colours read per side: two periods of X-Trans's 6x6, and more than LibRaw's Bayer word repeats
#: (8 rows of 2 columns), so a 2x2 pattern found in them holds everywhere.
_CELLS = 12


def _libraw_files() -> list[Path]:
    """LibRaw libraries to try: the one rawpy loaded (Linux), then those bundled beside rawpy."""
    import rawpy

    found: list[Path] = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/maps").read_text().splitlines():
            fields = line.split(None, 5)  # address, perms, offset, device, inode, path
            if len(fields) == 6 and "/libraw" in fields[5] and Path(fields[5]).is_file():
                found.append(Path(fields[5]))
    here = Path(rawpy.__file__).parent
    for pattern in ("libraw*.so*", ".dylibs/libraw*.dylib", "libraw*.dylib", "*raw*.dll", "../rawpy.libs/libraw*"):
        found += sorted(here.glob(pattern))
    return list(dict.fromkeys(found))


@functools.lru_cache(maxsize=1)
def _libraw_c():  # noqa: ANN202 - a ctypes.CDLL, or None
    """LibRaw's C API, for the one header fact rawpy gives only after decoding the whole file:
    the colour filter layout. Only plain C functions are called (no struct layout is assumed),
    so another LibRaw version answers the same; None when no library is found (then the
    decode itself refuses what is not Bayer)."""
    import ctypes

    for candidate in _libraw_files():
        try:
            lib = ctypes.CDLL(str(candidate))
            init, open_file, color, close = lib.libraw_init, lib.libraw_open_file, lib.libraw_COLOR, lib.libraw_close
        except (OSError, AttributeError):
            continue
        init.restype, init.argtypes = ctypes.c_void_p, [ctypes.c_uint]
        open_file.restype, open_file.argtypes = ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p]
        color.restype, color.argtypes = ctypes.c_int, [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        close.restype, close.argtypes = None, [ctypes.c_void_p]
        return lib
    return None


def _header_pattern_size(path: Path) -> int | None:
    """The file's colour pattern from LibRaw's header, where it is certain: 0 (no colour filter
    array), 2 (Bayer) or 6 (X-Trans); None for anything else (Leaf's 16x16, Fujifilm's rotated
    SuperCCD, 4x4 words) or without LibRaw's C API, left to the decode."""
    lib = _libraw_c()
    if lib is None:
        return None
    handle = lib.libraw_init(_NO_DATAERR_CALLBACK)
    if not handle:
        return None
    try:
        if lib.libraw_open_file(handle, os.fsencode(path)) != 0:
            return None  # rawpy opened it: leave the verdict to the decode
        cells = np.array([[lib.libraw_COLOR(handle, y, x) for x in range(_CELLS)] for y in range(_CELLS)])
    finally:
        lib.libraw_close(handle)
    def repeats(n: int) -> bool:
        return bool((cells[n:] == cells[:-n]).all() and (cells[:, n:] == cells[:, :-n]).all())

    if (cells == _NO_CFA).all():
        return 0
    if repeats(2):
        return 2
    if repeats(6) and not (cells[:, 2:] == cells[:, :-2]).all():  # 6x6 and no Bayer word: LibRaw's X-Trans table
        return 6
    return None


def _refusal(path: Path, colors: int, desc: str, size: int | None) -> UnsupportedRawError | None:
    """Why the file is not an R/G/B Bayer mosaic, or None. ``size``: side of its colour pattern
    (1: single colour, 0: none, i.e. demosaiced or layered data; None: not known yet)."""
    other = sorted(set(desc[: max(colors, 1)]) - set("RGB"))
    if other:
        return UnsupportedRawError(f"{path}: colour filter {desc!r} has {', '.join(other)} filters, not R/G/B "
                                   "(e.g. CMYG); n2n supports R/G/B Bayer only")
    if size == 0:
        return UnsupportedRawError(f"{path}: not a mosaic (already demosaiced, e.g. LinearRaw DNG or "
                                   "sRAW/mRAW, or a layered Foveon sensor); n2n needs a Bayer raw")
    if size == 1 or colors < 3 or len(set(desc)) < 3:
        return UnsupportedRawError(f"{path}: monochrome sensor (no colour filter array); n2n needs a Bayer raw")
    if size == 6:
        return UnsupportedRawError(f"{path}: X-Trans sensor (6x6 colour pattern); n2n supports Bayer (2x2) only")
    if size not in (None, 2):
        return UnsupportedRawError(f"{path}: {size}x{size} colour pattern; n2n supports Bayer (2x2) only")
    return None


def probe_raw(path: str | os.PathLike[str]) -> None:
    """Refuse a raw n2n cannot denoise from its header alone (about a millisecond, nothing
    decoded): ImageReadError or UnsupportedRawError with one line, so a folder run skips it
    before any work. A damaged body is found by the one decode, ``read_raw``."""
    import rawpy

    path = _existing(path)

    def header() -> tuple[int, str, int | None]:
        with rawpy.imread(str(path)) as raw:  # opening reads the header only; no property here decodes
            colors, desc = int(raw.num_colors), raw.color_desc.decode("ascii", "replace")
        size = _header_pattern_size(path)
        return colors, desc, (1 if size == 0 and colors == 1 else size)  # one colour and no CFA: monochrome

    (colors, desc, size), _ = _libraw(path, "read", header)
    refusal = _refusal(path, colors, desc, size)
    if refusal is not None:
        raise refusal


def _bayer_pattern(path: Path, raw) -> str:  # noqa: ANN001 - an unpacked rawpy.RawPy
    """The visible area's 2x2 colours, or UnsupportedRawError saying why it is not Bayer."""
    import rawpy

    desc = raw.color_desc.decode("ascii", "replace")
    try:
        pattern = raw.raw_pattern if raw.raw_type == rawpy.RawType.Flat else None
    except NotImplementedError as exc:  # rawpy's "filters: N", a layout it cannot describe
        raise UnsupportedRawError(f"{path}: colour filter layout LibRaw cannot describe ({exc}); "
                                  "n2n supports Bayer (2x2) only") from None
    refusal = _refusal(path, raw.num_colors, desc, 0 if pattern is None else pattern.shape[0])
    if refusal is not None:
        raise refusal
    try:
        cell = raw.raw_colors_visible[:2, :2]
        letters = "".join(desc[int(c)] for c in cell.flat)
    except (IndexError, ValueError):
        letters = ""
    if sorted(letters) != ["B", "G", "G", "R"]:
        raise UnsupportedRawError(f"{path}: colour filter {letters or desc!r} is not R/G/B Bayer "
                                  "(e.g. CMYG); n2n supports Bayer only")
    return letters


class _Decoded:
    """LibRaw's decoded state of a read file, kept for one development (``render``) so a raw
    written as TIFF/PNG/JPEG is decoded once. Taken by the first development, then closed."""

    def __init__(self, raw) -> None:  # noqa: ANN001 - an unpacked rawpy.RawPy
        self._raw = raw
        self._lock = threading.Lock()

    def peek(self):  # noqa: ANN202
        return self._raw

    def take(self):  # noqa: ANN202
        with self._lock:
            raw, self._raw = self._raw, None
        return raw


def read_raw(path: str | os.PathLike[str], *, keep_decoded: bool = False) -> RawData:
    """Decode a Bayer raw file, once; ImageReadError (or UnsupportedRawError) with one line otherwise.

    ``keep_decoded``: keep LibRaw's decoded state in the result for ``render`` and
    ``rendered_exif`` (one more mosaic in memory until then, instead of a second decode).
    What LibRaw says about a file it still decodes becomes the result's warnings; a file cut
    short is refused (LibRaw would fill the missing part).
    """
    import rawpy

    path = _existing(path)

    def decode() -> tuple[RawData, Any]:
        raw = rawpy.imread(str(path))
        try:
            raw.unpack()
            pattern = _bayer_pattern(path, raw)
            mosaic = np.array(raw.raw_image, dtype=np.uint16, copy=True)
            s = raw.sizes
            black = np.asarray(raw.black_level_per_channel, dtype=np.float32)[raw.raw_colors_visible[:2, :2]]
            white = float(raw.white_level)
        except BaseException:
            raw.close()
            raise
        if not keep_decoded:
            raw.close()
            raw = None
        return _bayer_data(path, mosaic, s, pattern, black, white), raw

    (data, raw), said = _libraw(path, "decode", decode)
    cut = _truncation(said)
    if cut:
        if raw is not None:
            raw.close()
        raise ImageReadError(f"{path}: truncated raw file ({_said(cut)})")
    return replace(data, warnings=tuple(f"LibRaw: {line}" for line in said),
                   decoded=None if raw is None else _Decoded(raw))


def _bayer_data(path: Path, mosaic: np.ndarray, s, pattern: str, black: np.ndarray,  # noqa: ANN001
                white: float) -> RawData:
    height, width = int(s.height), int(s.width)
    top, left = int(s.top_margin), int(s.left_margin)
    if top + height > mosaic.shape[0] or left + width > mosaic.shape[1]:  # LibRaw reports odd sizes for some
        height, width = min(height, mosaic.shape[0] - top), min(width, mosaic.shape[1] - left)
    if min(height, width) < 4:
        raise ImageReadError(f"{path}: raw image too small ({width}x{height})")
    if not white > float(black.max()):
        raise ImageReadError(f"{path}: white level {white:g} is not above the black level {float(black.max()):g}")
    return RawData(path, mosaic, top, left, height, width, pattern, black, white)


def render(source: str | os.PathLike[str] | RawData, mosaic: np.ndarray, *, linear: bool = False) -> np.ndarray:
    """LibRaw's development of ``source`` with its sensor data replaced by ``mosaic``.

    Camera white balance, sRGB primaries, sRGB gamma (or linear), no auto-brightening, the
    file's orientation; HxWx3 uint16. ``mosaic`` has the shape of ``RawData.mosaic``. A
    ``RawData`` read with ``keep_decoded`` is developed without decoding its file again.
    """
    import rawpy

    kept = source.decoded.take() if isinstance(source, RawData) and source.decoded is not None else None
    path = Path(source.source if isinstance(source, RawData) else source)
    if kept is None:
        path = _existing(path)

    def develop() -> np.ndarray:
        raw = kept if kept is not None else rawpy.imread(str(path))
        with raw:
            if raw.raw_image.shape != mosaic.shape:
                raise ImageReadError(f"{path}: mosaic shape {mosaic.shape} does not match the file's "
                                     f"{raw.raw_image.shape}")
            raw.raw_image[...] = mosaic
            return raw.postprocess(
                use_camera_wb=True, no_auto_bright=True, output_bps=16, output_color=rawpy.ColorSpace.sRGB,
                gamma=(1.0, 1.0) if linear else (2.4, 12.92),
            )

    return _libraw(path, "develop", develop)[0]


def read_packed(path: str | os.PathLike[str]) -> np.ndarray:
    """A Bayer raw as the network sees it: H/2 x W/2 x 4 float32 (R, G1, G2, B), normalised."""
    from n2ncli.bayer import pack

    raw = read_raw(path)
    return pack(raw.normalised(), raw.pattern)[0]


def encode_for_training(values: np.ndarray) -> np.ndarray:
    """Normalised values as uint16 on the scale ``-TRAIN_FLOOR..1`` (training sets stay compact)."""
    scaled = (np.clip(values, -TRAIN_FLOOR, 1.0) + TRAIN_FLOOR) * np.float32(65535.0 / (1.0 + TRAIN_FLOOR))
    return np.rint(scaled).astype(np.uint16)


def read_training_raw(path: str | os.PathLike[str]) -> np.ndarray:
    """``read_packed`` encoded by ``encode_for_training``: the reader `n2n fit` uses for raws."""
    return encode_for_training(read_packed(path))


#: Tags a developed image keeps from its raw: IFD0 text, and the Exif shot description.
_IFD0_TEXT = {271: "Make", 272: "Model", 306: "DateTime", 315: "Artist", 33432: "Copyright"}
_EXIF_TAGS = {33434: "ExposureTime", 33437: "FNumber", 34855: "ISOSpeedRatings", 36867: "DateTimeOriginal",
              36868: "DateTimeDigitized", 37380: "ExposureBiasValue", 37386: "FocalLength",
              41989: "FocalLengthIn35mmFilm", 42033: "BodySerialNumber", 42034: "LensSpecification",
              42035: "LensMake", 42036: "LensModel"}
_EXIF_IFD = 0x8769


def rendered_exif(source: str | os.PathLike[str] | RawData) -> bytes | None:
    """EXIF for an image developed from ``source``: camera, date, exposure and lens.

    The same reading as the DNG writer's (:func:`n2ncli.io.dng.read_camera_tags`): the raw's own
    TIFF tags (DNG, CR2, NEF, ARW, KDC, ...) or CIFF records (CRW), then LibRaw's shot information
    for what they lack. Orientation is left out: the development is upright. Returns Pillow's
    ``b"Exif\\0\\0..."`` form, or None when nothing is known.
    """
    import rawpy
    from PIL import Image
    from PIL.TiffImagePlugin import IFDRational

    from n2ncli.io.dng import read_camera_tags
    from n2ncli.io.tiff import TagType

    def value(tag):  # noqa: ANN001, ANN202 - a dng.Tag -> what Pillow writes back in kind
        if tag.type == TagType.ASCII:
            return tag.text() or None
        if tag.type in (TagType.RATIONAL, TagType.SRATIONAL):
            parts = [IFDRational(n, d) for n, d in tag.value if d]
            return (parts[0] if len(parts) == 1 else tuple(parts)) if parts else None
        if tag.type in (TagType.SHORT, TagType.LONG):
            return tag.value[0] if len(tag.value) == 1 else tuple(tag.value)
        return None

    kept = source.decoded.peek() if isinstance(source, RawData) and source.decoded is not None else None
    path = Path(source.source if isinstance(source, RawData) else source)

    def tags():  # noqa: ANN202 - dng.CameraTags
        if kept is not None:  # read_raw's decoded state: LibRaw's shot fields without a second decode
            return read_camera_tags(path, kept)
        with rawpy.imread(str(path)) as raw:
            return read_camera_tags(path, raw)

    try:
        try:
            camera = _libraw(path, "read", tags)[0]
        except ImageReadError:  # LibRaw adds nothing: the file's own tags alone
            camera = read_camera_tags(path)
    except (OSError, ValueError):
        return None
    exif = Image.Exif()
    shot = exif.get_ifd(_EXIF_IFD)
    for codes, found, target in ((_IFD0_TEXT, camera.ifd0, exif), (_EXIF_TAGS, camera.exif, shot)):
        for code in codes:
            if code in found and (v := value(found[code])) is not None:
                target[code] = v
    for code in [c for c, v in shot.items() if isinstance(v, (int, float, IFDRational)) and not float(v)]:
        del shot[code]  # zeros mean "unknown" (some writers fill every field)
    if not exif and not shot:
        return None
    data = exif.tobytes()
    return data if data.startswith(b"Exif") else b"Exif\x00\x00" + data
