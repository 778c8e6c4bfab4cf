"""Synthetic raw files for tests: small DNGs built with n2ncli's own TIFF writer (io/tiff).

Every function writes ``path`` and returns the pixels written (the whole sensor, as rawpy's
``raw_image`` reads it back for the Bayer ones). Pixel values are a seeded smooth scene plus
noise between the black and white levels, so demosaicing and denoising see real structure.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from n2ncli.io.dng import (
    ACTIVE_AREA, AS_SHOT_NEUTRAL, BLACK_LEVEL, BLACK_LEVEL_REPEAT_DIM, CALIBRATION_ILLUMINANT_1, CFA_LAYOUT,
    CFA_PATTERN, CFA_PLANE_COLOR, CFA_REPEAT_PATTERN_DIM, COLOR_MATRIX_1, DATE_TIME_ORIGINAL,
    DEFAULT_CROP_ORIGIN, DEFAULT_CROP_SIZE, DNG_BACKWARD_VERSION, DNG_VERSION, EXIF_VERSION, EXPOSURE_TIME,
    F_NUMBER, ISO, PHOTOMETRIC_CFA, PHOTOMETRIC_LINEAR_RAW, UNIQUE_CAMERA_MODEL, WHITE_LEVEL,
)
from n2ncli.io.tiff import (
    EXIF_IFD, MAKE, MODEL, ORIENTATION, SUB_IFDS, Ifd, Tag, image_tags, read_tiff_ifds, write_tiff_ifds,
)

# Colour at the sensor's top-left 2x2 (0 R, 1 G, 2 B), row by row.
BAYER = {"RGGB": (0, 1, 1, 2), "GRBG": (1, 0, 2, 1), "GBRG": (1, 2, 0, 1), "BGGR": (2, 1, 1, 0)}
# Fujifilm's X-Trans 6x6 layout (each row and column holds R, G and B).
XTRANS = ((1, 2, 1, 1, 0, 1),
          (0, 1, 0, 2, 1, 2),
          (1, 2, 1, 1, 0, 1),
          (1, 0, 1, 1, 2, 1),
          (2, 1, 2, 0, 1, 0),
          (1, 0, 1, 1, 2, 1))
SRGB_MATRIX = (3.2404542, -1.5371385, -0.4985314, -0.9692660, 1.8760108, 0.0415560,
               0.0556434, -0.2040259, 1.0572252)


def synthetic_mosaic(height: int, width: int, black: int, white: int, seed: int, channels: int = 0) -> np.ndarray:
    """HxW (or HxWxC with ``channels``) uint16: a smooth gradient scene plus Gaussian noise in [black, white]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    scene = 0.5 + 0.3 * np.sin(x / max(width, 1) * 6.0 + rng.uniform(0, 6)) * np.cos(y / max(height, 1) * 4.0)
    shape = (height, width) if not channels else (height, width, channels)
    if channels:
        scene = scene[..., None] * rng.uniform(0.6, 1.0, channels)
    values = black + (white - black) * (scene + rng.normal(0, 0.03, shape))
    return np.clip(np.rint(values), black, white).astype(np.uint16)


def _camera_tags(model: str) -> list[Tag]:
    return [Tag.ascii(MAKE, "n2ncli"), Tag.ascii(MODEL, model), Tag.ascii(UNIQUE_CAMERA_MODEL, f"n2ncli {model}"),
            Tag.short(ORIENTATION, 1), Tag.byte(DNG_VERSION, (1, 4, 0, 0)), Tag.byte(DNG_BACKWARD_VERSION, (1, 1, 0, 0)),
            Tag.srational(COLOR_MATRIX_1, *SRGB_MATRIX), Tag.short(CALIBRATION_ILLUMINANT_1, 21)]


def _exif() -> Tag:
    return Tag.ifds(EXIF_IFD, Ifd().add(
        Tag.rational(EXPOSURE_TIME, (1, 125)), Tag.rational(F_NUMBER, (28, 10)), Tag.short(ISO, 1600),
        Tag.undefined(EXIF_VERSION, b"0232"), Tag.ascii(DATE_TIME_ORIGINAL, "2024:05:06 07:08:09")))


def _write(path: str | Path, raw: Ifd, camera: list[Tag], layout: str = "ifd0", byte_order: str = "<",
           extra_tags: Sequence[Tag] = ()) -> None:
    """IFD0 = the raw itself (``layout="ifd0"``), or a small RGB preview with the raw in SubIFDs
    (``"subifd"``, how Adobe's converter and most cameras lay DNGs out). ``extra_tags`` go into
    the raw IFD last, overriding any default."""
    if layout == "ifd0":
        write_tiff_ifds(path, [raw.add(*camera, _exif(), *extra_tags)], byte_order)
        return
    if layout != "subifd":
        raise ValueError(f"layout {layout!r} is not 'ifd0' or 'subifd'")
    preview = np.full((16, 24, 3), 128, np.uint8)
    raw.add(*extra_tags)
    ifd0 = Ifd(image=preview).add(*image_tags(preview, 2), Tag.long(254, 1), *camera, _exif(), Tag.ifds(SUB_IFDS, raw))
    write_tiff_ifds(path, [ifd0], byte_order)


def bayer_dng(path: str | Path, pattern: str = "RGGB", height: int = 64, width: int = 96, black: int = 512,
              white: int = 16383, seed: int = 0, active_area: tuple[int, int, int, int] | None = None,
              mosaic: np.ndarray | None = None, *, layout: str = "ifd0", extra_tags: Sequence[Tag] = (),
              byte_order: str = "<") -> np.ndarray:
    """A Bayer CFA DNG; returns the HxW mosaic written: ``mosaic`` when given (uint16, or uint8 for
    an 8-bit file), else a uint16 synthetic one of ``height`` x ``width``.

    ``pattern`` names the colours of the sensor's top-left 2x2, which is what rawpy's
    ``raw_pattern`` reports (green 2 as 3). DNG states the pattern from the ActiveArea's corner
    (``active_area`` = top, left, bottom, right), so the file's CFAPattern is that one shifted.
    ``extra_tags`` go into the raw IFD last (NoiseProfile, OpcodeList..., or to override defaults).
    rawpy refuses sensors under 22 pixels on either side (dcraw's rule).
    """
    if mosaic is None:
        mosaic = synthetic_mosaic(height, width, black, white, seed)
    height, width = mosaic.shape
    top, left, bottom, right = active_area or (0, 0, height, width)
    cells = np.array(BAYER[pattern], np.uint8).reshape(2, 2)
    cfa = np.roll(cells, (-top, -left), axis=(0, 1))
    raw = Ifd(image=mosaic).add(
        *image_tags(mosaic, PHOTOMETRIC_CFA),
        Tag.short(CFA_REPEAT_PATTERN_DIM, 2, 2), Tag.byte(CFA_PATTERN, cfa.ravel().tolist()),
        Tag.byte(CFA_PLANE_COLOR, (0, 1, 2)), Tag.short(CFA_LAYOUT, 1),
        Tag.short(BLACK_LEVEL_REPEAT_DIM, 1, 1), Tag.long(BLACK_LEVEL, black), Tag.long(WHITE_LEVEL, white),
        Tag.long(DEFAULT_CROP_ORIGIN, 0, 0), Tag.long(DEFAULT_CROP_SIZE, right - left, bottom - top),
        Tag.rational(AS_SHOT_NEUTRAL, (1, 2), (1, 1), (2, 3)))
    if active_area is not None:
        raw.add(Tag.long(ACTIVE_AREA, top, left, bottom, right))
    _write(path, raw, _camera_tags(f"Bayer {pattern}"), layout, byte_order, extra_tags)
    return mosaic


def unnamed_camera_dng(path: str | Path, pattern: str = "RGGB", height: int = 40, width: int = 56,
                       seed: int = 0) -> np.ndarray:
    """A Bayer DNG (as :func:`bayer_dng`, IFD0 layout) without Make, Model or UniqueCameraModel,
    as some converters write. Returns the HxW mosaic."""
    mosaic = bayer_dng(path, pattern, height, width, seed=seed)
    ifd0 = read_tiff_ifds(path).ifds[0]
    for code in (MAKE, MODEL, UNIQUE_CAMERA_MODEL):
        del ifd0.tags[code]
    ifd0.image = mosaic
    write_tiff_ifds(path, [ifd0])
    return mosaic


def xtrans_dng(path: str | Path, height: int = 48, width: int = 72, black: int = 1024, white: int = 16383,
               seed: int = 0) -> np.ndarray:
    """An X-Trans DNG: CFARepeatPatternDim 6x6 with Fujifilm's layout. Returns the HxW mosaic."""
    mosaic = synthetic_mosaic(height, width, black, white, seed)
    raw = Ifd(image=mosaic).add(
        *image_tags(mosaic, PHOTOMETRIC_CFA),
        Tag.short(CFA_REPEAT_PATTERN_DIM, 6, 6), Tag.byte(CFA_PATTERN, [c for row in XTRANS for c in row]),
        Tag.byte(CFA_PLANE_COLOR, (0, 1, 2)), Tag.short(CFA_LAYOUT, 1),
        Tag.long(BLACK_LEVEL, black), Tag.long(WHITE_LEVEL, white),
        Tag.long(DEFAULT_CROP_ORIGIN, 0, 0), Tag.long(DEFAULT_CROP_SIZE, width, height))
    _write(path, raw, _camera_tags("X-Trans"))
    return mosaic


def cmyg_dng(path: str | Path, height: int = 48, width: int = 64, black: int = 256, white: int = 4095,
             seed: int = 0) -> np.ndarray:
    """A CMYG colour-filter DNG (CFAPlaneColor cyan, magenta, yellow, green: old compacts'
    complementary mosaic). Returns the HxW mosaic."""
    mosaic = synthetic_mosaic(height, width, black, white, seed)
    raw = Ifd(image=mosaic).add(
        *image_tags(mosaic, PHOTOMETRIC_CFA),
        Tag.short(CFA_REPEAT_PATTERN_DIM, 2, 2), Tag.byte(CFA_PATTERN, (0, 1, 2, 3)),
        Tag.byte(CFA_PLANE_COLOR, (3, 4, 5, 1)), Tag.short(CFA_LAYOUT, 1),
        Tag.long(BLACK_LEVEL, black), Tag.long(WHITE_LEVEL, white),
        Tag.long(DEFAULT_CROP_ORIGIN, 0, 0), Tag.long(DEFAULT_CROP_SIZE, width, height))
    _write(path, raw, _camera_tags("CMYG"))
    return mosaic


def linear_raw_dng(path: str | Path, height: int = 40, width: int = 56, black: int = 0, white: int = 65535,
                   seed: int = 0) -> np.ndarray:
    """A LinearRaw DNG (PhotometricInterpretation 34892, 3 samples: already demosaiced). Returns HxWx3."""
    image = synthetic_mosaic(height, width, black, white, seed, channels=3)
    raw = Ifd(image=image).add(*image_tags(image, PHOTOMETRIC_LINEAR_RAW),
                               Tag.long(BLACK_LEVEL, black, black, black), Tag.long(WHITE_LEVEL, white, white, white),
                               Tag.long(DEFAULT_CROP_ORIGIN, 0, 0), Tag.long(DEFAULT_CROP_SIZE, width, height),
                               Tag.rational(AS_SHOT_NEUTRAL, (1, 1), (1, 1), (1, 1)))
    _write(path, raw, _camera_tags("LinearRaw"))
    return image


def monochrome_dng(path: str | Path, height: int = 40, width: int = 56, black: int = 256, white: int = 4095,
                   seed: int = 0) -> np.ndarray:
    """A monochrome DNG (LinearRaw with 1 sample, as Leica's Monochrom writes). Returns HxW."""
    image = synthetic_mosaic(height, width, black, white, seed)
    camera = [t for t in _camera_tags("Monochrome") if t.code != COLOR_MATRIX_1]
    raw = Ifd(image=image).add(*image_tags(image, PHOTOMETRIC_LINEAR_RAW),
                               Tag.long(BLACK_LEVEL, black), Tag.long(WHITE_LEVEL, white),
                               Tag.long(DEFAULT_CROP_ORIGIN, 0, 0), Tag.long(DEFAULT_CROP_SIZE, width, height))
    # A one-channel ColorMatrix1 (1x3, the Y of XYZ) as DNG asks of monochrome cameras
    _write(path, raw, [*camera, Tag.srational(COLOR_MATRIX_1, 0.0, 1.0, 0.0)])
    return image
