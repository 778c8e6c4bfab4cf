"""Read camera raw files through LibRaw (rawpy): the Bayer mosaic, its pattern and levels.

Only Bayer sensors are accepted: the network works on 2x2 cells packed into four channels
(``n2ncli.bayer``). X-Trans, already-demosaiced files (LinearRaw DNG, sRAW/mRAW), Foveon and
monochrome sensors are refused with one line naming the file and the reason.

Normalised values are ``(DN - black) / (white - black)``, *not* clipped at 0: the noise of dark
pixels swings below black, and clipping it would bias shadows and stop an identity model from
returning the input exactly. Values above 1 (past the white level) are kept too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from n2ncli.errors import ImageReadError, UnsupportedRawError

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


def _open(path: Path, unpack: bool = True):  # noqa: ANN202 - rawpy.RawPy, imported lazily
    import rawpy

    if path.is_dir():
        raise ImageReadError(f"{path}: is a directory, not a raw file")
    if not path.is_file():
        raise ImageReadError(f"{path}: file not found")
    try:
        raw = rawpy.imread(str(path))
    except rawpy.LibRawFileUnsupportedError:
        raise ImageReadError(f"{path}: not a raw file LibRaw can read") from None
    except (rawpy.LibRawIOError, rawpy.LibRawDataError) as exc:
        raise ImageReadError(f"{path}: corrupt or truncated raw file ({type(exc).__name__})") from None
    except rawpy.LibRawError as exc:
        raise ImageReadError(f"{path}: LibRaw cannot read it ({type(exc).__name__}: {exc})") from None
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read file: {exc.strerror or exc}") from None
    if not unpack:
        return raw
    try:
        raw.unpack()  # decode now, so a truncated file fails here with our message
    except rawpy.LibRawError as exc:
        raw.close()
        raise ImageReadError(f"{path}: corrupt or truncated raw data ({type(exc).__name__})") from None
    return raw


def _check_bayer(path: Path, raw) -> None:  # noqa: ANN001
    """UnsupportedRawError saying why the file is not a Bayer mosaic (header only, no decoding)."""
    import rawpy

    desc = raw.color_desc.decode("ascii", "replace")  # header-only, unlike raw_type which decodes
    other = sorted(set(desc[: max(raw.num_colors, 1)]) - set("RGB"))
    if other:
        raise UnsupportedRawError(f"{path}: colour filter {desc!r} has {', '.join(other)} filters, not R/G/B "
                                  "(e.g. CMYG); n2n supports R/G/B Bayer only")
    if raw.raw_type != rawpy.RawType.Flat:
        raise UnsupportedRawError(f"{path}: not a mosaic (already demosaiced, e.g. LinearRaw DNG or "
                                  "sRAW/mRAW, or a layered Foveon sensor); n2n needs a Bayer raw")
    pattern = raw.raw_pattern
    if pattern is None or raw.num_colors < 3 or len(set(desc)) < 3:
        raise UnsupportedRawError(f"{path}: monochrome sensor (no colour filter array); n2n needs a Bayer raw")
    if pattern.shape == (6, 6):
        raise UnsupportedRawError(f"{path}: X-Trans sensor (6x6 colour pattern); n2n supports Bayer (2x2) only")
    if pattern.shape != (2, 2):
        raise UnsupportedRawError(f"{path}: {pattern.shape[0]}x{pattern.shape[1]} colour pattern; "
                                  "n2n supports Bayer (2x2) only")


def probe_raw(path: str | os.PathLike[str]) -> None:
    """Refuse a raw n2n cannot denoise from its header alone (milliseconds): ImageReadError or
    UnsupportedRawError with one line, so a folder run can skip it before any work."""
    import rawpy

    path = Path(path)
    with _open(path, unpack=False) as raw:
        try:
            _check_bayer(path, raw)
        except rawpy.LibRawError as exc:  # some headers make LibRaw read on, and fail there
            raise ImageReadError(f"{path}: corrupt or truncated raw file ({type(exc).__name__})") from None


def _bayer_pattern(path: Path, raw) -> str:  # noqa: ANN001
    """The visible area's 2x2 colours, or UnsupportedRawError saying why it is not Bayer."""
    _check_bayer(path, raw)
    desc = raw.color_desc.decode("ascii", "replace")
    try:
        cell = raw.raw_colors_visible[:2, :2]
        letters = "".join(desc[int(c)] for c in cell.flat)
    except (IndexError, ValueError):
        letters = ""
    if sorted(letters) != ["B", "G", "G", "R"]:
        raise UnsupportedRawError(f"{path}: colour filter {letters or desc!r} is not R/G/B Bayer "
                                  "(e.g. CMYG); n2n supports Bayer only")
    return letters


def read_raw(path: str | os.PathLike[str]) -> RawData:
    """Decode a Bayer raw file; ImageReadError (or UnsupportedRawError) with one line otherwise."""
    path = Path(path)
    with _open(path) as raw:
        pattern = _bayer_pattern(path, raw)
        try:
            mosaic = np.array(raw.raw_image, dtype=np.uint16, copy=True)
        except Exception as exc:  # noqa: BLE001 - LibRaw unpack errors surface here
            raise ImageReadError(f"{path}: corrupt raw data ({type(exc).__name__})") from None
        s = raw.sizes
        cell = raw.raw_colors_visible[:2, :2]
        levels = np.asarray(raw.black_level_per_channel, dtype=np.float32)
        black = levels[cell]
        white = float(raw.white_level)
    height, width = int(s.height), int(s.width)
    top, left = int(s.top_margin), int(s.left_margin)
    if top + height > mosaic.shape[0] or left + width > mosaic.shape[1]:  # LibRaw reports odd sizes for some
        height, width = min(height, mosaic.shape[0] - top), min(width, mosaic.shape[1] - left)
    if min(height, width) < 4:
        raise ImageReadError(f"{path}: raw image too small ({width}x{height})")
    if not white > float(black.max()):
        raise ImageReadError(f"{path}: white level {white:g} is not above the black level {float(black.max()):g}")
    return RawData(path, mosaic, top, left, height, width, pattern, black, white)


def render(source: Path, mosaic: np.ndarray, *, linear: bool = False) -> np.ndarray:
    """LibRaw's development of ``source`` with its sensor data replaced by ``mosaic``.

    Camera white balance, sRGB primaries, sRGB gamma (or linear), no auto-brightening, the
    file's orientation; HxWx3 uint16. ``mosaic`` has the shape of ``RawData.mosaic``.
    """
    import rawpy

    with _open(source) as raw:
        if raw.raw_image.shape != mosaic.shape:
            raise ImageReadError(f"{source}: mosaic shape {mosaic.shape} does not match the file's {raw.raw_image.shape}")
        raw.raw_image[...] = mosaic
        try:
            return raw.postprocess(
                use_camera_wb=True, no_auto_bright=True, output_bps=16, output_color=rawpy.ColorSpace.sRGB,
                gamma=(1.0, 1.0) if linear else (2.4, 12.92),
            )
        except rawpy.LibRawError as exc:
            raise ImageReadError(f"{source}: LibRaw cannot develop it ({type(exc).__name__})") from None


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


def rendered_exif(source: str | os.PathLike[str]) -> bytes | None:
    """EXIF for an image developed from ``source``: camera, date, exposure and lens.

    The same reading as the DNG writer's (:func:`n2ncli.io.dng.read_camera_tags`): the raw's own
    TIFF tags (DNG, CR2, NEF, ARW, KDC, ...) or CIFF records (CRW), then LibRaw's shot information
    for what they lack. Orientation is left out: the development is upright. Returns Pillow's
    ``b"Exif\\0\\0..."`` form, or None when nothing is known.
    """
    import rawpy
    from PIL import Image
    from PIL.TiffImagePlugin import IFDRational

    from n2ncli.io.dng import TagType, read_camera_tags

    def value(tag):  # noqa: ANN001, ANN202 - a dng.Tag -> what Pillow writes back in kind
        if tag.type == TagType.ASCII:
            return tag.text() or None
        if tag.type in (TagType.RATIONAL, TagType.SRATIONAL):
            parts = [IFDRational(n, d) for n, d in tag.value if d]
            return (parts[0] if len(parts) == 1 else tuple(parts)) if parts else None
        if tag.type in (TagType.SHORT, TagType.LONG):
            return tag.value[0] if len(tag.value) == 1 else tuple(tag.value)
        return None

    path = Path(source)
    try:
        try:
            with _open(path, unpack=False) as raw:
                camera = read_camera_tags(path, raw)
        except (ImageReadError, rawpy.LibRawError):  # LibRaw adds nothing: the file's own tags alone
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
