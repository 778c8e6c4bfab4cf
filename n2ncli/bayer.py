"""Bayer mosaics <-> 4-channel half-size images in one canonical R, G1, G2, B order.

Every Bayer camera is one of RGGB, GRBG, GBRG, BGGR: the same 2x2 cell read from a different
corner. Shifting the cell grid by a row and/or a column (reflect padding, which keeps each
pixel's colour because it mirrors about a pixel, not between two) turns each of them into RGGB,
so one raw model serves every camera. Padding also rounds odd sizes up to whole cells; unpacking
drops the padding again, so ``unpack(pack(m)) == m`` exactly for every pattern and size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from n2ncli.errors import ConfigError

#: Packed channel order: red, green on red rows, green on blue rows, blue.
CHANNELS = ("R", "G1", "G2", "B")
BAYER_PATTERNS = ("RGGB", "GRBG", "GBRG", "BGGR")


@dataclass(frozen=True)
class PackLayout:
    """How a mosaic was padded to whole RGGB cells, so unpacking can undo it exactly."""

    height: int
    width: int
    top: int
    left: int
    bottom: int
    right: int

    @property
    def packed_shape(self) -> tuple[int, int]:
        return ((self.top + self.height + self.bottom) // 2, (self.left + self.width + self.right) // 2)


def layout_for(pattern: str, height: int, width: int) -> PackLayout:
    """The padding that puts a red pixel at (0, 0) of every cell and makes both sides even.

    ``pattern``: the colours of the mosaic's top-left 2x2 cell read row by row, e.g. "GRBG".
    """
    if pattern not in BAYER_PATTERNS:
        raise ConfigError(f"not a Bayer pattern: {pattern!r} (one of {', '.join(BAYER_PATTERNS)})")
    if height < 3 or width < 3:
        raise ConfigError(f"mosaic too small to pack: {width}x{height}")
    top, left = divmod(pattern.index("R"), 2)
    return PackLayout(height, width, top, left, (top + height) % 2, (left + width) % 2)


def pack(mosaic: np.ndarray, pattern: str) -> tuple[np.ndarray, PackLayout]:
    """HxW mosaic -> (H'/2 x W'/2 x 4 array in R, G1, G2, B order, layout to unpack it)."""
    if mosaic.ndim != 2:
        raise ConfigError(f"a mosaic is 2-D, got shape {mosaic.shape}")
    layout = layout_for(pattern, *mosaic.shape)
    padded = np.pad(mosaic, ((layout.top, layout.bottom), (layout.left, layout.right)), mode="reflect")
    packed = np.stack([padded[0::2, 0::2], padded[0::2, 1::2], padded[1::2, 0::2], padded[1::2, 1::2]], axis=-1)
    return packed, layout


def unpack(packed: np.ndarray, layout: PackLayout) -> np.ndarray:
    """Inverse of ``pack``: the HxW mosaic in the camera's own pattern, padding removed."""
    ph, pw = layout.packed_shape
    if packed.shape != (ph, pw, 4):
        raise ConfigError(f"packed array has shape {packed.shape}, the layout needs {(ph, pw, 4)}")
    full = np.empty((2 * ph, 2 * pw), dtype=packed.dtype)
    full[0::2, 0::2], full[0::2, 1::2] = packed[..., 0], packed[..., 1]
    full[1::2, 0::2], full[1::2, 1::2] = packed[..., 2], packed[..., 3]
    return full[layout.top:layout.top + layout.height, layout.left:layout.left + layout.width]

