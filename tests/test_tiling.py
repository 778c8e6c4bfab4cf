"""Tile placement (coverage, overlap, alignment) and stitching (reconstruction, cross-fade)."""

from __future__ import annotations

import numpy as np
import pytest

from n2ncli.errors import ConfigError
from n2ncli.tiling import Tile, TileAccumulator, balanced_tile, blend_window, tile_grid, tile_starts

# (length, tile, overlap, align): odd lengths, length == tile, tile + 1, tiny images, raw alignment.
AXIS_CASES = [
    (1, 8, 2, 1),
    (1, 8, 2, 2),
    (19, 8, 2, 1),
    (37, 8, 3, 1),
    (37, 8, 3, 2),
    (16, 16, 4, 1),
    (17, 16, 4, 1),
    (17, 16, 4, 2),
    (18, 16, 4, 2),
    (100, 32, 0, 1),
    (100, 32, 31, 1),
    (101, 32, 8, 4),
    (1000, 64, 16, 2),
    (7, 4, 2, 2),
]


def _coverage(length: int, starts: list[int], tile: int) -> np.ndarray:
    count = np.zeros(length, dtype=int)
    for s in starts:
        count[s : min(s + tile, length)] += 1
    return count


@pytest.mark.parametrize(("length", "tile", "overlap", "align"), AXIS_CASES)
def test_tile_starts_cover_every_pixel(length: int, tile: int, overlap: int, align: int) -> None:
    starts = tile_starts(length, tile, overlap, align)
    assert starts[0] == 0
    assert (_coverage(length, starts, tile) >= 1).all()


@pytest.mark.parametrize(("length", "tile", "overlap", "align"), AXIS_CASES)
def test_tile_starts_honour_overlap_and_stay_inside(
    length: int, tile: int, overlap: int, align: int
) -> None:
    starts = tile_starts(length, tile, overlap, align)
    assert all(b > a for a, b in zip(starts, starts[1:]))
    for a, b in zip(starts, starts[1:]):
        shared = min(a + tile, length) - b
        assert shared >= overlap
    assert all(0 <= s < length for s in starts)


@pytest.mark.parametrize(("length", "tile", "overlap", "align"), AXIS_CASES)
def test_tile_starts_are_aligned_and_last_reaches_edge(
    length: int, tile: int, overlap: int, align: int
) -> None:
    starts = tile_starts(length, tile, overlap, align)
    assert all(s % align == 0 for s in starts)
    if length > tile:
        # Last tile ends at or past the edge, and is clamped by fewer than ``align`` pixels.
        assert length - tile <= starts[-1] < length - tile + align


def test_tile_starts_snap_last_tile_to_edge_without_alignment() -> None:
    assert tile_starts(17, 16, 4) == [0, 1]
    assert tile_starts(20, 8, 2) == [0, 6, 12]
    assert tile_starts(16, 16, 4) == [0]
    assert tile_starts(1, 16, 4) == [0]


def test_tile_starts_aligned_example() -> None:
    # length - tile = 1 is odd: the last tile starts at 2 and is clamped to 15 pixels.
    assert tile_starts(17, 16, 4, align=2) == [0, 2]


def test_tile_starts_spread_overlaps_evenly() -> None:
    starts = tile_starts(100, 32, 8)
    steps = np.diff(starts)
    assert steps.max() - steps.min() <= 1
    assert steps.max() <= 24


@pytest.mark.parametrize(
    ("length", "tile", "overlap", "align"),
    [
        (10, 0, 0, 1),
        (10, 4, 4, 1),
        (10, 4, 5, 1),
        (10, 4, -1, 1),
        (10, 5, 1, 2),
        (10, 4, 3, 2),
        (10, 4, 1, 0),
        (0, 4, 1, 1),
    ],
)
def test_tile_starts_rejects_bad_options(length: int, tile: int, overlap: int, align: int) -> None:
    with pytest.raises(ConfigError):
        tile_starts(length, tile, overlap, align)


def test_tile_grid_is_row_major_and_clamped() -> None:
    tiles = tile_grid(19, 37, 16, 4)
    assert tiles[0] == Tile(0, 16, 0, 16)
    assert tiles[-1].y1 == 19 and tiles[-1].x1 == 37
    assert [t.y0 for t in tiles] == sorted(t.y0 for t in tiles)
    assert all(t.height <= 16 and t.width <= 16 for t in tiles)


def test_tile_grid_single_pixel_image() -> None:
    assert tile_grid(1, 1, 8, 2) == [Tile(0, 1, 0, 1)]


@pytest.mark.parametrize(
    ("height", "width", "tile", "overlap", "align"), [(19, 37, 8, 2, 2), (33, 20, 16, 5, 1)]
)
def test_tile_grid_covers_every_pixel(
    height: int, width: int, tile: int, overlap: int, align: int
) -> None:
    count = np.zeros((height, width), dtype=int)
    for t in tile_grid(height, width, tile, overlap, align):
        assert t.y0 % align == 0 and t.x0 % align == 0
        count[t.y0 : t.y1, t.x0 : t.x1] += 1
    assert count.min() >= 1


def test_blend_window_shape_range_and_interior() -> None:
    w = blend_window(20, 30, 4, 6)
    assert w.shape == (20, 30) and w.dtype == np.float32
    assert w.min() > 0.0 and w.max() == pytest.approx(1.0)
    assert np.all(w[4:16, 6:24] == 1.0)
    assert w[0, 0] < w[1, 1] < w[3, 5] < 1.0


def test_blend_window_facing_ramps_sum_to_one() -> None:
    ramp = blend_window(1, 24, 0, 8)[0]
    # The right fade of one tile over the left fade of a neighbour shifted by 24 - 8 pixels.
    np.testing.assert_allclose(ramp[-8:] + ramp[:8], 1.0, atol=1e-6)


def test_blend_window_without_overlap_is_flat() -> None:
    assert np.all(blend_window(5, 7, 0, 0) == 1.0)


@pytest.mark.parametrize(
    ("height", "width", "tile", "overlap", "align"),
    [
        (19, 37, 8, 2, 1),
        (19, 37, 8, 3, 2),
        (64, 48, 16, 8, 1),
        (16, 16, 16, 4, 1),
        (17, 17, 16, 4, 2),
        (1, 1, 8, 2, 1),
    ],
)
def test_accumulating_the_tiles_own_pixels_reconstructs_the_image(
    height: int, width: int, tile: int, overlap: int, align: int
) -> None:
    image = np.random.default_rng(7).random((height, width, 3), dtype=np.float32)
    acc = TileAccumulator(height, width, 3, overlap)
    for t in tile_grid(height, width, tile, overlap, align):
        acc.add(t, image[t.y0 : t.y1, t.x0 : t.x1])
    out = acc.result()
    assert out.shape == image.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, image, atol=1e-6)


def test_border_sides_are_not_faded() -> None:
    acc = TileAccumulator(10, 10, 1, overlap=4)
    acc.add(Tile(0, 10, 0, 10), np.ones((10, 10, 1)))
    assert np.all(acc._weight == 1.0)


def test_two_constant_tiles_cross_fade_monotonically() -> None:
    width, tile, overlap = 20, 12, 4
    tiles = tile_grid(1, width, tile, overlap)
    assert [(t.x0, t.x1) for t in tiles] == [(0, 12), (8, 20)]
    acc = TileAccumulator(1, width, 1, overlap)
    acc.add(tiles[0], np.zeros((1, 12, 1)))
    acc.add(tiles[1], np.ones((1, 12, 1)))
    row = acc.result()[0, :, 0]
    assert np.all(row[:8] == 0.0) and np.all(row[12:] == 1.0)
    assert np.all(np.diff(row) >= 0.0)
    assert np.all((row[8:12] > 0.0) & (row[8:12] < 1.0))


def test_accumulator_rejects_wrong_tile_shape() -> None:
    acc = TileAccumulator(8, 8, 3, overlap=2)
    with pytest.raises(ValueError, match="shape"):
        acc.add(Tile(0, 4, 0, 4), np.zeros((4, 4, 1)))


def test_result_is_final() -> None:
    acc = TileAccumulator(2, 2, 1, overlap=0)
    acc.add(Tile(0, 2, 0, 2), np.full((2, 2, 1), 0.25))
    first = acc.result()
    assert acc.result() is first
    with pytest.raises(RuntimeError):
        acc.add(Tile(0, 2, 0, 2), np.zeros((2, 2, 1)))


def test_uncovered_pixels_are_reported() -> None:
    acc = TileAccumulator(4, 4, 1, overlap=0)
    acc.add(Tile(0, 2, 0, 4), np.zeros((2, 4, 1)))
    with pytest.raises(RuntimeError, match="no tile"):
        acc.result()


@pytest.mark.parametrize("length", [1, 31, 100, 511, 512, 513, 768, 1000, 2000, 3000, 4000, 6016])
@pytest.mark.parametrize(("tile", "overlap", "align"), [(2048, 32, 32), (1024, 32, 32), (512, 16, 2), (256, 32, 32)])
def test_balanced_tile_keeps_the_count_and_cuts_the_overlap(length: int, tile: int, overlap: int, align: int) -> None:
    size = balanced_tile(length, tile, overlap, align, minimum=256)
    assert size % align == 0 and size <= tile and size >= min(tile, 256)
    before, after = tile_starts(length, tile, overlap, align), tile_starts(length, size, overlap, align)
    assert len(after) == len(before)
    assert after[-1] + size >= length  # still covers the axis
    assert all(b - a <= size - overlap for a, b in zip(after, after[1:]))  # and keeps the overlap
    covered_before = len(before) * min(tile, length)
    assert len(after) * min(size, length) <= covered_before


def test_balanced_grid_of_a_24_megapixel_raw_computes_a_quarter_less() -> None:
    """The packed 3000x2000 grid of a 6000x4000 raw at tile 2048: two 1536-wide tiles instead of
    two 2048-wide ones sharing 1096 px."""
    square = tile_grid(2000, 3000, 2048, 32, align=32)
    balanced = tile_grid(2000, 3000, 2048, 32, align=32, balance=256)
    assert len(square) == len(balanced) == 2
    area = lambda tiles: sum((t.height + 128) * (t.width + 128) for t in tiles)  # noqa: E731 - with context
    assert [(t.height, t.width) for t in balanced] == [(2000, 1536), (2000, 1528)]  # the last one clamped
    assert area(balanced) / area(square) < 0.78
