"""Bayer packing: exact round trips and the canonical R, G1, G2, B order for every pattern."""

from __future__ import annotations

import numpy as np
import pytest

from n2ncli.bayer import BAYER_PATTERNS, layout_for, pack, unpack
from n2ncli.errors import ConfigError


def _mosaic_with_colours(pattern: str, h: int, w: int) -> np.ndarray:
    """A mosaic whose every pixel holds its colour's code (R=1, G1=2, G2=3, B=4) times 1000 plus
    a unique index, so a test can tell colour and position apart after packing."""
    codes = np.empty((h, w), dtype=np.int64)
    cell = [pattern[0:2], pattern[2:4]]
    for r in range(2):
        for c in range(2):
            colour = cell[r][c]
            if colour == "G":  # green on the red row is G1, on the blue row G2
                colour = "G1" if "R" in cell[r] else "G2"
            codes[r::2, c::2] = {"R": 1, "G1": 2, "G2": 3, "B": 4}[colour]
    return codes * 100_000 + np.arange(h * w).reshape(h, w)


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
@pytest.mark.parametrize("shape", [(8, 12), (37, 53), (38, 53), (37, 54), (3, 3)])
def test_unpack_inverts_pack_exactly(pattern: str, shape: tuple[int, int]) -> None:
    mosaic = _mosaic_with_colours(pattern, *shape)
    packed, layout = pack(mosaic, pattern)
    assert np.array_equal(unpack(packed, layout), mosaic)
    assert packed.shape == (*layout.packed_shape, 4)


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
@pytest.mark.parametrize("shape", [(8, 12), (37, 53)])
def test_packed_channels_are_r_g1_g2_b_whatever_the_pattern(pattern: str, shape: tuple[int, int]) -> None:
    packed, _ = pack(_mosaic_with_colours(pattern, *shape), pattern)
    for channel, code in enumerate((1, 2, 3, 4)):
        assert np.all(packed[..., channel] // 100_000 == code), f"channel {channel} mixes colours"


def test_pack_keeps_every_pixel_once_when_no_padding_is_needed() -> None:
    mosaic = _mosaic_with_colours("RGGB", 6, 10)
    packed, layout = pack(mosaic, "RGGB")
    assert (layout.top, layout.left, layout.bottom, layout.right) == (0, 0, 0, 0)
    assert sorted(packed.ravel().tolist()) == sorted(mosaic.ravel().tolist())


@pytest.mark.parametrize(("pattern", "top", "left"), [("RGGB", 0, 0), ("GRBG", 0, 1), ("GBRG", 1, 0), ("BGGR", 1, 1)])
def test_layout_shifts_by_the_red_pixels_position(pattern: str, top: int, left: int) -> None:
    layout = layout_for(pattern, 10, 10)
    assert (layout.top, layout.left) == (top, left)
    assert (layout.top + layout.height + layout.bottom) % 2 == 0
    assert (layout.left + layout.width + layout.right) % 2 == 0


def test_refuses_what_is_not_a_bayer_pattern() -> None:
    with pytest.raises(ConfigError, match="not a Bayer pattern"):
        pack(np.zeros((8, 8)), "RGBG")
    with pytest.raises(ConfigError, match="2-D"):
        pack(np.zeros((8, 8, 1)), "RGGB")
    with pytest.raises(ConfigError, match="packed array has shape"):
        unpack(np.zeros((4, 4, 4)), layout_for("RGGB", 10, 10))
