"""Neighbour sub-sampler: shapes, 4-neighbour pairs only, uniform choice, fixed mode, seeding."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from n2ncli.sampler import (
    DISTINCT_PAIRS,
    NEIGHBOUR_PAIRS,
    draw_pair_indices,
    gather_cells,
    subsample_pair,
)


def _coordinate_image(n: int, c: int, h: int, w: int) -> torch.Tensor:
    """NxCxHxW float64 whose value encodes (channel, y, x): c*H*W + y*W + x (exact in float64)."""
    y = torch.arange(h, dtype=torch.float64).view(h, 1)
    x = torch.arange(w, dtype=torch.float64).view(1, w)
    plane = y * w + x
    chans = torch.stack([plane + k * h * w for k in range(c)])
    return chans.unsqueeze(0).repeat(n, 1, 1, 1)


def _decode(values: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of ``_coordinate_image``: (channel, y, x) int64 tensors."""
    v = values.round().to(torch.int64)
    return v // (h * w), (v % (h * w)) // w, v % w


def _sample(n: int, c: int, h: int, w: int, seed: int, mode: str = "random"):
    img = _coordinate_image(n, c, h, w)
    gen = torch.Generator().manual_seed(seed)
    positions = draw_pair_indices(n, h, w, mode=mode, generator=gen)
    g1, g2 = subsample_pair(img, positions)
    return img, positions, g1, g2


def test_halves_have_half_size() -> None:
    _, (p1, p2), g1, g2 = _sample(2, 3, 12, 20, seed=0)
    assert g1.shape == g2.shape == (2, 3, 6, 10)
    assert p1.shape == p2.shape == (2, 1, 6, 10)
    assert p1.dtype == p2.dtype == torch.int64


def test_pixels_come_from_their_own_cell_and_are_4_neighbours() -> None:
    h, w = 16, 24
    _, _, g1, g2 = _sample(3, 2, h, w, seed=1)
    _, y1, x1 = _decode(g1, h, w)
    _, y2, x2 = _decode(g2, h, w)
    cell_y = torch.arange(h // 2).view(1, 1, -1, 1)
    cell_x = torch.arange(w // 2).view(1, 1, 1, -1)
    assert torch.equal(y1 // 2, cell_y.expand_as(y1))
    assert torch.equal(x1 // 2, cell_x.expand_as(x1))
    assert torch.equal(y2 // 2, cell_y.expand_as(y2))
    assert torch.equal(x2 // 2, cell_x.expand_as(x2))
    manhattan = (y1 - y2).abs() + (x1 - x2).abs()
    assert torch.all(manhattan == 1), "a pair is identical or diagonal"


def test_every_channel_uses_the_same_choice() -> None:
    h, w = 10, 14
    _, _, g1, g2 = _sample(2, 4, h, w, seed=2)
    for g in (g1, g2):
        chan, y, x = _decode(g, h, w)
        for k in range(4):
            assert torch.all(chan[:, k] == k)
        assert torch.equal(y, y[:, :1].expand_as(y))
        assert torch.equal(x, x[:, :1].expand_as(x))


def test_random_pairs_are_the_8_neighbour_pairs_drawn_uniformly() -> None:
    n, h, w = 2, 200, 200  # 20,000 cells
    _, (p1, p2), _, _ = _sample(n, 1, h, w, seed=3)
    counts = Counter(zip(p1.flatten().tolist(), p2.flatten().tolist()))
    assert set(counts) == set(NEIGHBOUR_PAIRS)
    cells = n * (h // 2) * (w // 2)
    expected = cells / 8
    chi2 = sum((counts[p] - expected) ** 2 / expected for p in NEIGHBOUR_PAIRS)
    assert chi2 < 24.3, f"chi-square {chi2:.1f} over 7 d.o.f. (p < 0.001): {dict(counts)}"


def test_neighbour_pair_table_is_exactly_the_4_neighbour_ordered_pairs() -> None:
    def yx(p: int) -> tuple[int, int]:
        return divmod(p, 2)

    expected = {(a, b) for a in range(4) for b in range(4)
                if abs(yx(a)[0] - yx(b)[0]) + abs(yx(a)[1] - yx(b)[1]) == 1}
    assert len(NEIGHBOUR_PAIRS) == 8
    assert set(NEIGHBOUR_PAIRS) == expected


def test_random_masks_are_fresh_on_each_draw() -> None:
    gen = torch.Generator().manual_seed(4)
    a = draw_pair_indices(1, 32, 32, generator=gen)
    b = draw_pair_indices(1, 32, 32, generator=gen)
    assert not torch.equal(a[0], b[0])


def test_fixed_mode_uses_one_pair_per_image() -> None:
    h, w = 8, 12
    _, (p1, p2), g1, g2 = _sample(5, 3, h, w, seed=5, mode="fixed")
    assert p1.shape == (5, 1, 4, 6)
    for i in range(5):
        assert torch.all(p1[i] == p1[i, 0, 0, 0])
        assert torch.all(p2[i] == p2[i, 0, 0, 0])
    assert torch.all(p1 != p2)
    # the gathered pixels follow the positions: (y % 2, x % 2) is the position in the cell
    _, y1, x1 = _decode(g1, h, w)
    assert torch.equal((y1 % 2) * 2 + x1 % 2, p1.expand(5, 3, 4, 6))


def test_fixed_mode_may_pick_any_of_the_12_distinct_pairs() -> None:
    gen = torch.Generator().manual_seed(6)
    p1, p2 = draw_pair_indices(600, 4, 4, mode="fixed", generator=gen)
    pairs = set(zip(p1[:, 0, 0, 0].tolist(), p2[:, 0, 0, 0].tolist()))
    assert pairs == set(DISTINCT_PAIRS)
    assert len(DISTINCT_PAIRS) == 12
    assert {(0, 3), (3, 0), (1, 2), (2, 1)} <= pairs  # diagonals are allowed in the ablation


@pytest.mark.parametrize(("h", "w"), [(7, 9), (9, 8), (8, 11), (3, 3)])
def test_odd_sizes_drop_the_last_row_and_column(h: int, w: int) -> None:
    img, _, g1, g2 = _sample(2, 3, h, w, seed=7)
    assert g1.shape == g2.shape == (2, 3, h // 2, w // 2)
    for g in (g1, g2):
        _, y, x = _decode(g, h, w)
        assert int(y.max()) <= h - h % 2 - 1
        assert int(x.max()) <= w - w % 2 - 1
    even = img[..., : h - h % 2, : w - w % 2]
    gen = torch.Generator().manual_seed(7)
    positions = draw_pair_indices(2, h, w, generator=gen)
    assert torch.equal(subsample_pair(even, positions)[0], g1)


def test_same_seed_gives_same_masks_and_other_seed_differs() -> None:
    def masks(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        return draw_pair_indices(2, 32, 32, generator=torch.Generator().manual_seed(seed))

    a, b, c = masks(11), masks(11), masks(12)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_gather_cells_takes_the_indexed_pixel() -> None:
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    for pos, value in enumerate([1.0, 2.0, 3.0, 4.0]):
        index = torch.full((1, 1, 1, 1), pos, dtype=torch.int64)
        assert gather_cells(x, index).item() == value


def test_unknown_sampler_is_refused() -> None:
    with pytest.raises(ValueError, match="diagonal"):
        draw_pair_indices(1, 4, 4, mode="diagonal")


@pytest.mark.parametrize("mode", ["random", "fixed"])
def test_one_generator_per_image_draws_each_image_on_its_own(mode: str) -> None:
    def gens(*seeds: int) -> list[torch.Generator]:
        return [torch.Generator().manual_seed(s) for s in seeds]

    first, second = draw_pair_indices(3, 8, 12, mode=mode, generator=gens(5, 6, 7))
    assert first.shape == second.shape == (3, 1, 4, 6)
    for i, seed in enumerate((5, 6, 7)):
        alone = draw_pair_indices(1, 8, 12, mode=mode, generator=gens(seed))
        assert torch.equal(first[i:i + 1], alone[0]) and torch.equal(second[i:i + 1], alone[1])
    with pytest.raises(ValueError, match="1 generators for 3 images"):
        draw_pair_indices(3, 8, 12, mode=mode, generator=gens(1))
