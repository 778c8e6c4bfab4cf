"""Tiled inference for images larger than memory allows: where tiles go, and how they are stitched.

Pure numpy, no torch: a backend's ``predict(array) -> array`` runs on each tile and
:class:`TileAccumulator` cross-fades the results, so tiling never knows which backend runs.

Tile placement rule (per axis, see :func:`tile_starts`): starts are multiples of ``align``
(``align=2`` keeps raw 2x2 CFA cells whole), neighbours share at least ``overlap`` pixels, the
first tile starts at 0 and the last one reaches the image edge. When ``length - tile`` is not a
multiple of ``align`` the last tile starts at the next aligned position past ``length - tile``
and is clamped to the image, i.e. it is shorter than ``tile`` by less than ``align`` pixels;
callers (backends) pad short tiles themselves, exactly as for images smaller than one tile.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from n2ncli.errors import ConfigError


@dataclass(frozen=True)
class Tile:
    """Half-open window ``[y0, y1) x [x0, x1)`` of the image; slice as ``img[y0:y1, x0:x1]``."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0


def _check_geometry(tile: int, overlap: int, align: int) -> int:
    """Validate tile options; return the largest aligned step that still honours ``overlap``."""
    if tile < 1:
        raise ConfigError(f"tile size must be at least 1, got {tile}")
    if overlap < 0:
        raise ConfigError(f"tile overlap must be >= 0, got {overlap}")
    if overlap >= tile:
        raise ConfigError(f"tile overlap {overlap} must be smaller than the tile size {tile}")
    if align < 1:
        raise ConfigError(f"tile alignment must be at least 1, got {align}")
    if tile % align:
        raise ConfigError(f"tile size {tile} must be a multiple of the alignment {align}")
    step = (tile - overlap) // align * align
    if step < 1:
        raise ConfigError(
            f"tile overlap {overlap} leaves no aligned step for tile {tile} and alignment {align}"
        )
    return step


def tile_starts(length: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    """Start positions along one axis of ``length`` pixels for tiles of size ``tile``.

    Guarantees: starts are increasing multiples of ``align``, the first is 0, consecutive tiles
    share at least ``overlap`` pixels, and together they cover ``[0, length)``. The last start is
    the smallest aligned position >= ``length - tile`` (equal to it when ``align`` divides it),
    so the last tile may be clamped by the image by < ``align`` pixels. Starts in between are
    spread evenly, so every overlap is about the same width. ``length <= tile`` gives ``[0]``.
    """
    step = _check_geometry(tile, overlap, align)
    if length < 1:
        raise ConfigError(f"cannot tile an axis of length {length}")
    if length <= tile:
        return [0]
    units = -(-(length - tile) // align)  # last start, in units of ``align``
    intervals = -(-units // (step // align))
    # floor(i*units/intervals) grows by at most ceil(units/intervals) <= step/align per tile and
    # by at least 1 (intervals <= units), so steps stay aligned, positive and <= ``step``.
    return [(i * units // intervals) * align for i in range(intervals + 1)]


def balanced_tile(length: int, tile: int, overlap: int, align: int = 1, minimum: int = 0) -> int:
    """The smallest aligned tile size that covers ``length`` with as few tiles as ``tile`` does.

    Tiles of the largest size memory allows overlap far more than needed when the image is not
    a whole number of tiles (3000 px in tiles of 2048: two tiles sharing 1096 px); the same two
    tiles of 1536 cover it with the asked overlap, and every pixel the network computes twice is
    wasted time. Never larger than ``tile``, nor smaller than ``minimum`` (or ``tile`` if less).
    """
    count = len(tile_starts(length, tile, overlap, align))
    size = -(-(length + (count - 1) * overlap) // count)  # the count tiles just cover length
    size = min(tile, max(-(-size // align) * align, -(-minimum // align) * align))
    while size < tile and len(tile_starts(length, size, overlap, align)) > count:
        size += align  # alignment of the starts can need a little more
    return size


def tile_grid(height: int, width: int, tile: int, overlap: int, align: int = 1, *,
              balance: int | None = None) -> list[Tile]:
    """Row-major tiles covering an HxW image, each clamped to it (see :func:`tile_starts`).

    ``balance``: shrink the tile per axis to :func:`balanced_tile`, but not below this size
    (rectangular tiles, as few as before, less overlap); None keeps square ``tile`` tiles.
    """
    th = tile if balance is None else balanced_tile(height, tile, overlap, align, balance)
    tw = tile if balance is None else balanced_tile(width, tile, overlap, align, balance)
    ys = tile_starts(height, th, overlap, align)
    xs = tile_starts(width, tw, overlap, align)
    return [Tile(y, min(y + th, height), x, min(x + tw, width)) for y in ys for x in xs]


def _ramp(n: int, overlap: int, fade_start: bool, fade_end: bool) -> np.ndarray:
    """1-D weights of length ``n``: raised-cosine fade over ``overlap`` pixels at chosen ends.

    ``sin^2(pi*(d+1) / (2*(overlap+1)))`` at distance ``d`` from the edge: strictly positive,
    1 from ``d = overlap`` on, and two facing ramps over the same ``overlap`` pixels sum to
    exactly 1, so an even overlap cross-fades with no change in brightness.
    """
    weights = np.ones(n, dtype=np.float64)
    if overlap > 0:
        d = np.arange(n, dtype=np.float64)
        fade = np.sin(np.pi * (np.minimum(d, overlap) + 1.0) / (2.0 * (overlap + 1.0))) ** 2
        fade[d >= overlap] = 1.0
        if fade_start:
            weights = np.minimum(weights, fade)
        if fade_end:
            weights = np.minimum(weights, fade[::-1])
    return weights.astype(np.float32)


def blend_window(h: int, w: int, overlap_y: int, overlap_x: int) -> np.ndarray:
    """HxW float32 weights in (0, 1]: raised-cosine fades over the overlap per side, 1 inside."""
    return np.outer(_ramp(h, overlap_y, True, True), _ramp(w, overlap_x, True, True))


class TileAccumulator:
    """Stitches per-tile results into one HxWxC float32 image by weighted cross-fading.

    Holds the only full-size buffers: an HxWxC float32 weighted sum and an HxW float32 weight
    sum. Tile sides lying on the image border are not faded, so edge pixels keep full weight.
    """

    def __init__(self, height: int, width: int, channels: int, overlap: int) -> None:
        if height < 1 or width < 1 or channels < 1:
            raise ConfigError(f"cannot accumulate an image of shape {height}x{width}x{channels}")
        if overlap < 0:
            raise ConfigError(f"tile overlap must be >= 0, got {overlap}")
        self.height = height
        self.width = width
        self.channels = channels
        self.overlap = overlap
        self._sum = np.zeros((height, width, channels), dtype=np.float32)
        self._weight = np.zeros((height, width), dtype=np.float32)
        self._done = False

    def add(self, tile: Tile, values: np.ndarray) -> None:
        """Blend one tile's result, ``tile.height x tile.width x C`` (any float), into the image."""
        if self._done:
            raise RuntimeError("result() was already called; use a new TileAccumulator")
        if not (0 <= tile.y0 < tile.y1 <= self.height and 0 <= tile.x0 < tile.x1 <= self.width):
            raise ValueError(f"{tile} lies outside the {self.height}x{self.width} image")
        expected = (tile.height, tile.width, self.channels)
        if values.shape != expected:
            raise ValueError(f"tile values have shape {values.shape}, expected {expected}")
        wy = _ramp(tile.height, self.overlap, tile.y0 > 0, tile.y1 < self.height)
        wx = _ramp(tile.width, self.overlap, tile.x0 > 0, tile.x1 < self.width)
        window = np.outer(wy, wx)  # tile-sized, never image-sized
        self._sum[tile.y0 : tile.y1, tile.x0 : tile.x1] += values * window[..., None]
        self._weight[tile.y0 : tile.y1, tile.x0 : tile.x1] += window

    def result(self) -> np.ndarray:
        """The stitched HxWxC float32 image.

        Normalises the sum buffer in place (no second full-size array) and returns it, so the
        accumulator is finished afterwards; further calls return the same array.
        """
        if not self._done:
            if self._weight.min() <= 0.0:
                raise RuntimeError("some pixels were covered by no tile")
            np.divide(self._sum, self._weight[..., None], out=self._sum)
            self._done = True
        return self._sum
