"""Neighbor sub-sampler: two half-resolution images whose pixels are neighbours in the input.

A 2x2 cell is indexed 0 1 / 2 3. The random sampler draws, per cell, one of the 8 ordered
4-neighbour pairs below (never diagonal), the same for all channels; g1 takes the first pixel,
g2 the second. The fixed-location variant (the paper's ablation, Table 4) uses one pair of
positions for every cell of an image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

#: The 8 ordered (g1, g2) neighbour pairs inside a 2x2 cell, as in the official code.
NEIGHBOUR_PAIRS: tuple[tuple[int, int], ...] = (
    (0, 1), (0, 2), (1, 3), (2, 3), (1, 0), (2, 0), (3, 1), (3, 2),
)
#: All 12 ordered pairs of distinct positions: the fix-location ablation picks any two of the
#: four down-sampled images (paper §5.3).
DISTINCT_PAIRS: tuple[tuple[int, int], ...] = tuple(
    (a, b) for a in range(4) for b in range(4) if a != b
)
SAMPLERS = ("random", "fixed")


def draw_pair_indices(n: int, height: int, width: int, *, mode: str = "random",
                      generator: torch.Generator | Sequence[torch.Generator] | None = None,
                      device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Positions (0..3) of g1 and g2 in each cell: two int64 tensors Nx1x(H/2)x(W/2).

    ``mode='random'`` draws a neighbour pair per cell; ``'fixed'`` one pair per image.
    ``generator`` may be one generator per image (each image's draw then depends on it alone).
    """
    if mode not in SAMPLERS:
        raise ValueError(f"unknown sampler {mode!r} (use one of {', '.join(SAMPLERS)})")
    table = NEIGHBOUR_PAIRS if mode == "random" else DISTINCT_PAIRS
    pairs = torch.tensor(table, dtype=torch.int64, device=device)
    shape = (1, height // 2, width // 2) if mode == "random" else (1, 1, 1)
    if isinstance(generator, Sequence):
        if len(generator) != n:
            raise ValueError(f"{len(generator)} generators for {n} images")
        choice = torch.cat([torch.randint(len(table), (1, *shape), generator=g, device=device) for g in generator])
    else:
        choice = torch.randint(len(table), (n, *shape), generator=generator, device=device)
    first, second = pairs[choice, 0], pairs[choice, 1]
    if mode == "fixed":
        first = first.expand(n, 1, height // 2, width // 2)
        second = second.expand(n, 1, height // 2, width // 2)
    return first, second


def gather_cells(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Take, from each 2x2 cell of NxCxHxW ``x``, the pixel at ``positions`` (Nx1x(H/2)x(W/2))."""
    n, c, h, w = x.shape
    cells = F.pixel_unshuffle(x[..., : h - h % 2, : w - w % 2], 2).view(n, c, 4, h // 2, w // 2)
    index = positions.unsqueeze(1).expand(n, c, 1, h // 2, w // 2)
    return torch.gather(cells, 2, index).squeeze(2)


def subsample_pair(x: torch.Tensor, positions: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(g1(x), g2(x)) for NxCxHxW ``x`` with H, W even; odd trailing rows/columns are dropped."""
    first, second = positions
    return gather_cells(x, first), gather_cells(x, second)
