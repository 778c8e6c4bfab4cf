"""The TIFF structure of every TIFF-based file n2n writes: typed tags, IFDs with sub-IFDs, and one
image per IFD stored as strips or tiles, raw or encoded.

One reader and one writer serve the DNG output (:mod:`n2ncli.io.dng`, which decides the tags) and
the TIFF image output (:mod:`n2ncli.io.image`); tests build synthetic DNGs with them too. Our own
because tifffile cannot write nested IFDs (Exif, GPS, Interop), and one writer means one layout to
test. tifffile still reads TIFF images.

Layout: header, then each IFD with its values (word-aligned, entries sorted) and its sub-IFDs,
then the pixel data of every image, its segments contiguous. How a segment is encoded is the
caller's (:attr:`Ifd.encode`): :func:`deflate` for zlib strips with a predictor as tifffile writes
them, DNG's lossless JPEG tiles, or none for uncompressed data in the file's byte order.
"""

from __future__ import annotations

import io
import math
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from fractions import Fraction
from typing import TYPE_CHECKING, BinaryIO, Union

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Collection

# ------------------------------------------------------------------------------------ TIFF model


class TagType(IntEnum):
    """TIFF 6 / TIFF-EP field types (13 = IFD, from the TIFF technical notes)."""

    BYTE = 1
    ASCII = 2
    SHORT = 3
    LONG = 4
    RATIONAL = 5
    SBYTE = 6
    UNDEFINED = 7
    SSHORT = 8
    SLONG = 9
    SRATIONAL = 10
    FLOAT = 11
    DOUBLE = 12
    IFD = 13


_SIZE = {TagType.BYTE: 1, TagType.ASCII: 1, TagType.SHORT: 2, TagType.LONG: 4, TagType.RATIONAL: 8,
         TagType.SBYTE: 1, TagType.UNDEFINED: 1, TagType.SSHORT: 2, TagType.SLONG: 4,
         TagType.SRATIONAL: 8, TagType.FLOAT: 4, TagType.DOUBLE: 8, TagType.IFD: 4}
_STRUCT = {TagType.SHORT: "H", TagType.LONG: "I", TagType.SSHORT: "h", TagType.SLONG: "i",
           TagType.FLOAT: "f", TagType.DOUBLE: "d", TagType.IFD: "I",
           TagType.RATIONAL: "I", TagType.SRATIONAL: "i"}
_BYTES_TYPES = frozenset({TagType.BYTE, TagType.ASCII, TagType.SBYTE, TagType.UNDEFINED})
_RATIONAL_TYPES = frozenset({TagType.RATIONAL, TagType.SRATIONAL})
_INT_RANGE = {TagType.SHORT: (0, 0xFFFF), TagType.LONG: (0, 0xFFFFFFFF), TagType.IFD: (0, 0xFFFFFFFF),
              TagType.SSHORT: (-0x8000, 0x7FFF), TagType.SLONG: (-0x80000000, 0x7FFFFFFF),
              TagType.RATIONAL: (0, 0xFFFFFFFF), TagType.SRATIONAL: (-0x80000000, 0x7FFFFFFF)}

TagValue = Union[bytes, tuple]
#: Encodes one strip or tile (rows x columns x samples, native byte order) for a file of the given byte order.
Encoder = Callable[[np.ndarray, str], bytes]


@dataclass(frozen=True)
class Tag:
    """One IFD entry with its value decoded but its TIFF type kept, so a copy is exact.

    ``value`` is ``bytes`` for BYTE, SBYTE, UNDEFINED and ASCII (ASCII with its NUL), a tuple of
    ints or floats for the numeric types, a tuple of ``(numerator, denominator)`` pairs for
    (S)RATIONAL, and a tuple of :class:`Ifd` for pointer tags (Exif, GPS, SubIFDs), which the
    writer lays out as sub-IFDs. ``offset`` is where the value sat in the file it was read from
    (a MakerNote's original position; None for new tags).
    """

    code: int
    type: TagType
    value: TagValue
    offset: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not 0 <= self.code <= 0xFFFF:
            raise ValueError(f"tag code {self.code} outside 0..65535")
        if self.type in _BYTES_TYPES:
            if not isinstance(self.value, bytes):
                raise TypeError(f"tag {self.code}: {self.type.name} needs bytes")
            return
        if not isinstance(self.value, tuple):
            raise TypeError(f"tag {self.code}: {self.type.name} needs a tuple")
        if self.is_pointer:
            return
        lo_hi = _INT_RANGE.get(self.type)
        if lo_hi is None:
            return
        flat = [v for pair in self.value for v in pair] if self.type in _RATIONAL_TYPES else self.value
        lo, hi = lo_hi
        for v in flat:
            if not (isinstance(v, (int, np.integer)) and lo <= v <= hi):
                raise ValueError(f"tag {self.code}: {v!r} is not a valid {self.type.name} value")

    @property
    def is_pointer(self) -> bool:
        """True when the value is a tuple of sub-IFDs (written as their offsets)."""
        return bool(self.value) and isinstance(self.value, tuple) and isinstance(self.value[0], Ifd)

    @property
    def count(self) -> int:
        return len(self.value)

    # Constructors for new tags; read tags come from the file as they are.
    @classmethod
    def ascii(cls, code: int, text: str | bytes) -> Tag:
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        return cls(code, TagType.ASCII, data if data.endswith(b"\0") else data + b"\0")

    @classmethod
    def byte(cls, code: int, data: bytes | Sequence[int]) -> Tag:
        return cls(code, TagType.BYTE, bytes(data))

    @classmethod
    def undefined(cls, code: int, data: bytes) -> Tag:
        return cls(code, TagType.UNDEFINED, bytes(data))

    @classmethod
    def short(cls, code: int, *values: int) -> Tag:
        return cls(code, TagType.SHORT, tuple(int(v) for v in values))

    @classmethod
    def long(cls, code: int, *values: int) -> Tag:
        return cls(code, TagType.LONG, tuple(int(v) for v in values))

    @classmethod
    def rational(cls, code: int, *values: float | Fraction | tuple[int, int]) -> Tag:
        return cls(code, TagType.RATIONAL, tuple(_to_rational(v, signed=False) for v in values))

    @classmethod
    def srational(cls, code: int, *values: float | Fraction | tuple[int, int]) -> Tag:
        return cls(code, TagType.SRATIONAL, tuple(_to_rational(v, signed=True) for v in values))

    @classmethod
    def float32(cls, code: int, *values: float) -> Tag:
        return cls(code, TagType.FLOAT, tuple(float(v) for v in values))

    @classmethod
    def double(cls, code: int, *values: float) -> Tag:
        return cls(code, TagType.DOUBLE, tuple(float(v) for v in values))

    @classmethod
    def ifds(cls, code: int, *ifds: Ifd) -> Tag:
        """A pointer tag (Exif 34665, GPS 34853, SubIFDs 330...) to sub-IFDs, typed LONG."""
        if not ifds:
            raise ValueError(f"tag {code}: a pointer tag needs at least one IFD")
        return cls(code, TagType.LONG, tuple(ifds))

    def numbers(self) -> tuple[float, ...]:
        """The value as plain numbers (rationals divided out; 0/0 reads as nan)."""
        if self.type in _BYTES_TYPES:
            return tuple(self.value)
        if self.type in _RATIONAL_TYPES:
            return tuple(n / d if d else math.nan for n, d in self.value)
        return tuple(self.value)

    def text(self) -> str:
        """An ASCII value as text, cut at the first NUL and stripped."""
        return bytes(self.value).split(b"\0", 1)[0].decode("utf-8", "replace").strip()


def _to_rational(value: float | Fraction | tuple[int, int], *, signed: bool) -> tuple[int, int]:
    """The nearest fraction whose parts fit 32 bits (exact for the 4-decimal matrices of cameras)."""
    if isinstance(value, tuple):
        return int(value[0]), int(value[1])
    limit = 0x7FFFFFFF if signed else 0xFFFFFFFF
    value = value if isinstance(value, Fraction) else float(value)
    if not math.isfinite(value) or abs(value) > limit or (value < 0 and not signed):
        raise ValueError(f"{value!r} does not fit a {'S' if signed else ''}RATIONAL")
    den = 1_000_000
    while True:
        frac = Fraction(value).limit_denominator(den)
        if abs(frac.numerator) <= limit:
            return frac.numerator, frac.denominator
        den //= 10


@dataclass(eq=False)
class Ifd:
    """An image file directory: tags by code, plus optional pixels and how to encode them.

    ``image`` (HxW or HxWxS, any unsigned/float dtype) is cut into strips by the RowsPerStrip tag
    (all rows in one strip without it), or into tiles by TileWidth and TileLength (edge tiles
    padded by repeating the last row and column); the writer adds the offsets and byte counts.
    ``encode`` turns one segment (rows x columns x samples, native byte order) and the file's byte
    order into the bytes stored; None stores them as they are, which Compression 1 says. The other
    layout tags are the caller's (see :func:`image_tags`).
    """

    tags: dict[int, Tag] = field(default_factory=dict)
    image: np.ndarray | None = None
    encode: Encoder | None = None

    def add(self, *tags: Tag) -> Ifd:
        for tag in tags:
            self.tags[tag.code] = tag
        return self

    def get(self, code: int) -> Tag | None:
        return self.tags.get(code)

    def __contains__(self, code: int) -> bool:
        return code in self.tags

    def sub_ifds(self, code: int) -> tuple[Ifd, ...]:
        """The sub-IFDs of a pointer tag, or () when absent or not parsed."""
        tag = self.tags.get(code)
        return tag.value if tag is not None and tag.is_pointer else ()


# Tag numbers (TIFF 6, TIFF technical notes, Exif 2.32) of the structure: image layout, the
# descriptive tags images and DNGs share, and the pointers to sub-IFDs.
NEW_SUBFILE_TYPE, IMAGE_WIDTH, IMAGE_LENGTH, BITS_PER_SAMPLE, COMPRESSION = 254, 256, 257, 258, 259
PHOTOMETRIC, MAKE, MODEL, STRIP_OFFSETS, ORIENTATION = 262, 271, 272, 273, 274
SAMPLES_PER_PIXEL, ROWS_PER_STRIP, STRIP_BYTE_COUNTS, X_RESOLUTION, Y_RESOLUTION = 277, 278, 279, 282, 283
PLANAR_CONFIG, RESOLUTION_UNIT, SOFTWARE, DATE_TIME, ARTIST, PREDICTOR = 284, 296, 305, 306, 315, 317
TILE_WIDTH, TILE_LENGTH, TILE_OFFSETS, TILE_BYTE_COUNTS, SUB_IFDS, SAMPLE_FORMAT = 322, 323, 324, 325, 330, 339
XMP, COPYRIGHT, ICC_PROFILE, EXIF_IFD, GPS_IFD, INTEROP_IFD = 700, 33432, 34675, 34665, 34853, 40965

# Compression and Predictor values
COMPRESSION_NONE, COMPRESSION_JPEG, COMPRESSION_DEFLATE = 1, 7, 8
PREDICTOR_HORIZONTAL, PREDICTOR_FLOAT = 2, 3

# ----------------------------------------------------------------------------------- TIFF reading


class TiffFormatError(ValueError):
    """The bytes are not a TIFF structure we can follow (bad header, offsets, loops)."""


# Tags whose value is the offset of one or more IFDs of ordinary TIFF form; the reader follows
# them, so a copy can lay them out again at new offsets.
_IFD_POINTERS = frozenset({SUB_IFDS, EXIF_IFD, GPS_IFD, INTEROP_IFD})
_MAX_ENTRIES = 4096
_MAX_DEPTH = 6
_MAX_CHAIN = 64
_TIFF_MAGICS = (42, 0x4F52, 0x5352, 0x55)  # TIFF, Olympus ORF ("RO", "RS"), Panasonic RW2


@dataclass
class TiffData:
    """What :func:`read_tiff_ifds` found: byte order (``"<"``/``">"``), the IFD0 chain, notes."""

    byte_order: str
    ifds: list[Ifd]
    notes: list[str] = field(default_factory=list)


def read_at(fh: BinaryIO, size: int, offset: int, n: int) -> bytes:
    """``n`` bytes at ``offset`` of a file of ``size`` bytes; TiffFormatError when they lie outside
    it (offsets read from a file are never trusted)."""
    if offset < 0 or n < 0 or offset + n > size:
        raise TiffFormatError(f"data at {offset}+{n} lies outside the file ({size} bytes)")
    fh.seek(offset)
    data = fh.read(n)
    if len(data) != n:
        raise TiffFormatError(f"file ends inside data at {offset}")
    return data


class _Reader:
    def __init__(self, fh: BinaryIO, size: int, byte_order: str, notes: list[str],
                 codes: Collection[int] | None) -> None:
        self.fh, self.size, self.bo, self.notes, self.codes = fh, size, byte_order, notes, codes
        self.seen: set[int] = set()

    def read(self, offset: int, n: int) -> bytes:
        return read_at(self.fh, self.size, offset, n)

    def ifd(self, offset: int, depth: int, follow: bool) -> tuple[Ifd, int]:
        if offset in self.seen:
            raise TiffFormatError(f"IFD at {offset} is referenced twice (a loop)")
        if depth > _MAX_DEPTH:
            raise TiffFormatError("sub-IFDs nested too deep")
        self.seen.add(offset)
        (n,) = struct.unpack(self.bo + "H", self.read(offset, 2))
        if n == 0 or n > _MAX_ENTRIES:
            raise TiffFormatError(f"IFD at {offset} claims {n} entries")
        table = self.read(offset + 2, 12 * n + 4)
        out = Ifd()
        for i in range(n):
            code, typ, count = struct.unpack_from(self.bo + "HHI", table, 12 * i)
            if self.codes is not None and code not in self.codes:
                continue
            try:
                tag_type = TagType(typ)
            except ValueError:
                self.notes.append(f"tag {code}: unknown type {typ}, skipped")
                continue
            nbytes = count * _SIZE[tag_type]
            if nbytes > self.size:
                self.notes.append(f"tag {code}: {count} values do not fit the file, skipped")
                continue
            if nbytes <= 4:
                raw, at = table[12 * i + 8:12 * i + 8 + nbytes], offset + 2 + 12 * i + 8
            else:
                (at,) = struct.unpack_from(self.bo + "I", table, 12 * i + 8)
                try:
                    raw = self.read(at, nbytes)
                except TiffFormatError as exc:
                    self.notes.append(f"tag {code}: {exc}, skipped")
                    continue
            value = self.decode(tag_type, count, raw)
            if follow and code in _IFD_POINTERS and tag_type in (TagType.LONG, TagType.IFD) and value:
                try:
                    value = tuple(self.ifd(off, depth + 1, follow)[0] for off in value)
                except (TiffFormatError, struct.error) as exc:
                    self.notes.append(f"sub-IFD of tag {code} unreadable ({exc}), skipped")
                    continue
            out.tags[code] = Tag(code, tag_type, value, offset=at)
        (next_offset,) = struct.unpack_from(self.bo + "I", table, 12 * n)
        return out, next_offset

    def decode(self, tag_type: TagType, count: int, raw: bytes) -> TagValue:
        if tag_type in _BYTES_TYPES:
            return bytes(raw)
        fmt = _STRUCT[tag_type]
        flat = struct.unpack(f"{self.bo}{count * (2 if tag_type in _RATIONAL_TYPES else 1)}{fmt}", raw)
        if tag_type in _RATIONAL_TYPES:
            return tuple(zip(flat[0::2], flat[1::2]))
        return flat


def _read_tiff_stream(fh: BinaryIO, size: int, *, follow: bool = True, chain: bool = True,
                      codes: Collection[int] | None = None) -> TiffData:
    head = fh.read(8)
    if len(head) < 8 or head[:2] not in (b"II", b"MM"):
        raise TiffFormatError("not a TIFF structure (no II/MM byte-order mark)")
    bo = "<" if head[:2] == b"II" else ">"
    magic, first = struct.unpack(bo + "HI", head[2:8])
    if magic not in _TIFF_MAGICS:
        raise TiffFormatError(f"not a TIFF structure (magic {magic})")
    data = TiffData(bo, [])
    reader = _Reader(fh, size, bo, data.notes, codes)
    offset = first
    while offset and len(data.ifds) < (_MAX_CHAIN if chain else 1):
        try:
            ifd, offset = reader.ifd(offset, 0, follow)
        except (TiffFormatError, struct.error) as exc:
            if not data.ifds:
                raise TiffFormatError(str(exc)) from None
            data.notes.append(f"IFD chain cut short: {exc}")
            break
        data.ifds.append(ifd)
    if not data.ifds:
        raise TiffFormatError("no IFD")
    return data


def read_tiff_ifds(path: str | os.PathLike[str] | bytes, *, follow: bool = True, chain: bool = True,
                   codes: Collection[int] | None = None) -> TiffData:
    """Parse the IFD tree of a classic TIFF (file path or in-memory bytes), tags only.

    Pixel data is never read. ``follow`` parses Exif, GPS, Interop and SubIFD pointers into
    sub-IFDs; ``chain=False`` stops after IFD0; ``codes`` reads only those tags (the others'
    values are not even loaded). Raises TiffFormatError for what is not a TIFF, OSError for I/O.
    """
    options = {"follow": follow, "chain": chain, "codes": None if codes is None else frozenset(codes)}
    if isinstance(path, (bytes, bytearray)):
        return _read_tiff_stream(io.BytesIO(path), len(path), **options)
    with open(path, "rb") as fh:
        return _read_tiff_stream(fh, os.fstat(fh.fileno()).st_size, **options)


# ----------------------------------------------------------------------------------- TIFF writing


def image_tags(image: np.ndarray, photometric: int, *, compression: int = COMPRESSION_NONE,
               predictor: int | None = None, rows_per_strip: int | None = None,
               tile: tuple[int, int] | None = None) -> list[Tag]:
    """The layout tags of a full-resolution image (NewSubFileType 0), in strips or tiles.

    ``image``: HxW or HxWxS array (uint8/uint16/uint32, or float32 with SampleFormat 3).
    Strips of about 256 KiB (what tifffile cuts) unless ``rows_per_strip`` says otherwise;
    ``tile`` = (length, width) writes tiles instead. ``compression`` and ``predictor`` only
    state what :attr:`Ifd.encode` does.
    """
    height, width = image.shape[:2]
    samples = 1 if image.ndim == 2 else image.shape[2]
    bits = image.dtype.itemsize * 8
    tags = [Tag.long(NEW_SUBFILE_TYPE, 0), Tag.long(IMAGE_WIDTH, width), Tag.long(IMAGE_LENGTH, height),
            Tag.short(BITS_PER_SAMPLE, *([bits] * samples)), Tag.short(COMPRESSION, compression),
            Tag.short(PHOTOMETRIC, photometric), Tag.short(SAMPLES_PER_PIXEL, samples), Tag.short(PLANAR_CONFIG, 1)]
    if tile is not None:
        tags += [Tag.long(TILE_LENGTH, tile[0]), Tag.long(TILE_WIDTH, tile[1])]
    else:
        row_bytes = width * samples * image.dtype.itemsize
        tags.append(Tag.long(ROWS_PER_STRIP, rows_per_strip or max(1, min(height, (256 * 1024) // max(row_bytes, 1)))))
    if predictor is not None:
        tags.append(Tag.short(PREDICTOR, predictor))
    if image.dtype.kind == "f":
        tags.append(Tag.short(SAMPLE_FORMAT, *([3] * samples)))  # IEEE float
    elif image.dtype.kind != "u":
        raise ValueError(f"image dtype {image.dtype} is not unsigned or float")
    return tags


def deflate(image: np.ndarray) -> Encoder:
    """The encoder of zlib strips with the predictor :func:`image_tags` should state for
    ``image`` (PREDICTOR_FLOAT for float, else PREDICTOR_HORIZONTAL): byte for byte what
    tifffile writes (libdeflate's default level), which earlier n2ncli TIFFs were."""
    import imagecodecs

    predict = imagecodecs.floatpred_encode if image.dtype.kind == "f" else imagecodecs.delta_encode

    def encode(segment: np.ndarray, byte_order: str) -> bytes:
        data = np.ascontiguousarray(segment, dtype=segment.dtype.newbyteorder(byte_order))
        return bytes(imagecodecs.deflate_encode(predict(data, axis=-2)))

    return encode


def deflate_predictor(image: np.ndarray) -> int:
    """The Predictor tag that goes with :func:`deflate`'s encoder for ``image``."""
    return PREDICTOR_FLOAT if image.dtype.kind == "f" else PREDICTOR_HORIZONTAL


@dataclass
class _Pixels:
    """One IFD's image as laid out: where its offsets go, its segments' sizes and, when encoded,
    their bytes (None: the array is written as it is, in the file's byte order)."""

    offsets_at: int
    image: np.ndarray
    sizes: list[int]
    pieces: list[bytes] | None
    start: int = 0


def _first_int(tags: dict[int, Tag], code: int, default: int) -> int:
    tag = tags.get(code)
    return int(tag.value[0]) if tag is not None and tag.value and not tag.is_pointer else default


def _segments(ifd: Ifd, byte_order: str) -> tuple[int, int, list[int], list[bytes] | None]:
    """(offsets tag, byte-counts tag, segment sizes, encoded segments or None) of ``ifd``'s image."""
    image = ifd.image if ifd.image.ndim == 3 else ifd.image[..., None]
    height, width = image.shape[:2]
    if _first_int(ifd.tags, COMPRESSION, COMPRESSION_NONE) != COMPRESSION_NONE and ifd.encode is None:
        raise ValueError("a compressed image needs an encoder (Ifd.encode)")
    encode = ifd.encode or (lambda seg, bo: np.ascontiguousarray(seg, dtype=seg.dtype.newbyteorder(bo)).tobytes())
    if TILE_WIDTH in ifd.tags:
        length, tile_width = _first_int(ifd.tags, TILE_LENGTH, 0), _first_int(ifd.tags, TILE_WIDTH, 0)
        if length < 1 or tile_width < 1:
            raise ValueError("TileWidth and TileLength must be positive")
        pieces = []
        for top in range(0, height, length):
            for left in range(0, width, tile_width):
                tile = image[top:top + length, left:left + tile_width]
                pad = ((0, length - tile.shape[0]), (0, tile_width - tile.shape[1]), (0, 0))
                pieces.append(encode(np.pad(tile, pad, mode="edge") if any(p[1] for p in pad) else tile, byte_order))
        return TILE_OFFSETS, TILE_BYTE_COUNTS, [len(p) for p in pieces], pieces
    rows = max(1, _first_int(ifd.tags, ROWS_PER_STRIP, height))
    if ifd.encode is None:  # written straight from the array: no copy of a 48 MB mosaic
        row_bytes = image.nbytes // max(height, 1)
        return STRIP_OFFSETS, STRIP_BYTE_COUNTS, [row_bytes * min(rows, height - r) for r in range(0, height, rows)], None
    pieces = [encode(image[r:r + rows], byte_order) for r in range(0, height, rows)]
    return STRIP_OFFSETS, STRIP_BYTE_COUNTS, [len(p) for p in pieces], pieces


class _Builder:
    """Lays out IFDs and their values in one buffer; each image's segments go after it, contiguous."""

    def __init__(self, byte_order: str, data_align: int) -> None:
        self.bo, self.data_align = byte_order, data_align
        self.buf = bytearray(b"II*\0" if byte_order == "<" else b"MM\0*") + bytes(4)
        self.images: list[_Pixels] = []

    def align(self) -> None:
        if len(self.buf) % 2:
            self.buf.append(0)

    def encode(self, tag: Tag) -> bytes:
        if tag.is_pointer:
            return bytes(4 * tag.count)
        if tag.type in _BYTES_TYPES:
            return bytes(tag.value)
        flat = [v for pair in tag.value for v in pair] if tag.type in _RATIONAL_TYPES else tag.value
        return struct.pack(f"{self.bo}{len(flat)}{_STRUCT[tag.type]}", *flat)

    def emit(self, ifd: Ifd) -> int:
        tags = dict(ifd.tags)
        layout = None
        if ifd.image is not None:
            offsets_code, counts_code, sizes, pieces = layout = _segments(ifd, self.bo)
            for code in (STRIP_OFFSETS, STRIP_BYTE_COUNTS, TILE_OFFSETS, TILE_BYTE_COUNTS):
                tags.pop(code, None)
            tags[offsets_code] = Tag.long(offsets_code, *([0] * len(sizes)))
            tags[counts_code] = Tag.long(counts_code, *sizes)
        entries = [tags[c] for c in sorted(tags)]
        self.align()
        start = len(self.buf)
        self.buf += bytes(2 + 12 * len(entries) + 4)
        struct.pack_into(self.bo + "H", self.buf, start, len(entries))
        pointers: list[tuple[int, tuple[Ifd, ...]]] = []
        offsets_at = -1
        for i, tag in enumerate(entries):
            pos = start + 2 + 12 * i
            raw = self.encode(tag)
            struct.pack_into(self.bo + "HHI", self.buf, pos, tag.code, int(tag.type), tag.count)
            if len(raw) <= 4:
                self.buf[pos + 8:pos + 8 + len(raw)] = raw
                value_at = pos + 8
            else:
                self.align()
                value_at = len(self.buf)
                self.buf += raw
                struct.pack_into(self.bo + "I", self.buf, pos + 8, value_at)
            if tag.is_pointer:
                pointers.append((value_at, tag.value))
            if layout is not None and tag.code == layout[0]:
                offsets_at = value_at
        for value_at, subs in pointers:
            for k, sub in enumerate(subs):
                struct.pack_into(self.bo + "I", self.buf, value_at + 4 * k, self.emit(sub))
        if layout is not None:
            self.images.append(_Pixels(offsets_at, ifd.image, layout[2], layout[3]))
        return start

    def build(self, ifds: Sequence[Ifd]) -> None:
        previous_next = 4  # the header's first-IFD offset
        for ifd in ifds:
            start = self.emit(ifd)
            struct.pack_into(self.bo + "I", self.buf, previous_next, start)
            (n,) = struct.unpack_from(self.bo + "H", self.buf, start)
            previous_next = start + 2 + 12 * n
        offset = len(self.buf)
        for pixels in self.images:
            offset = pixels.start = -(-offset // self.data_align) * self.data_align
            for k, size in enumerate(pixels.sizes):
                struct.pack_into(self.bo + "I", self.buf, pixels.offsets_at + 4 * k, offset)
                offset += size
        if offset > 0xFFFFFFFF:
            raise ValueError(f"{offset} bytes is over the 4 GiB limit of classic TIFF")

    def write(self, fh: BinaryIO) -> None:
        fh.write(self.buf)
        at = len(self.buf)
        for pixels in self.images:
            fh.write(bytes(pixels.start - at))
            if pixels.pieces is None:
                image = pixels.image
                data = np.ascontiguousarray(image, dtype=image.dtype.newbyteorder(self.bo))
                fh.write(memoryview(data).cast("B"))
            else:
                for piece in pixels.pieces:
                    fh.write(piece)
            at = pixels.start + sum(pixels.sizes)


def write_tiff_ifds(path: str | os.PathLike[str] | BinaryIO, ifds: Sequence[Ifd], byte_order: str = "<", *,
                    data_align: int = 2) -> None:
    """Write a classic TIFF: ``ifds`` chained from IFD0, pointer tags laid out as sub-IFDs.

    Entries are sorted, values and IFDs word-aligned, pixels written after all metadata, each
    image's segments contiguous from a multiple of ``data_align`` bytes. ``byte_order``: ``"<"``
    (II) or ``">"`` (MM). Not atomic by itself: pass the temp path of
    :func:`n2ncli.fsutil.atomic_path` (or an open binary file). Raises ValueError for what classic
    TIFF cannot hold (over 4 GiB, a compressed image without an encoder).
    """
    if byte_order not in ("<", ">"):
        raise ValueError(f"byte order {byte_order!r} is not '<' or '>'")
    if data_align < 1:
        raise ValueError(f"data alignment {data_align} is not positive")
    builder = _Builder(byte_order, data_align)
    builder.build(ifds)
    if hasattr(path, "write"):
        builder.write(path)  # type: ignore[arg-type]
        return
    with open(path, "wb") as fh:
        builder.write(fh)


def portable_tags(ifd: Ifd, notes: list[str], *, keep: Collection[int] = (), label: str = "tag") -> dict[int, Tag]:
    """``ifd``'s tags that survive a copy into a new file: values as stored, the sub-IFDs of the
    pointer tags in ``keep`` (re-laid by the writer), and no other IFD offset (a note each,
    ``"<label> <code> dropped: ..."``)."""
    tags: dict[int, Tag] = {}
    for code, tag in ifd.tags.items():
        if code in keep:
            if tag.is_pointer:
                tags[code] = tag
            continue
        if tag.type == TagType.IFD or tag.is_pointer:
            notes.append(f"{label} {code} dropped: an IFD offset")
            continue
        tags[code] = tag
    return tags


__all__ = [
    "Encoder", "Ifd", "Tag", "TagType", "TiffData", "TiffFormatError", "deflate", "deflate_predictor",
    "image_tags", "portable_tags", "read_at", "read_tiff_ifds", "write_tiff_ifds",
]
