"""Training crops: images decoded once, random crops drawn as a pure function of (seed, step).

Drawing every batch from its own seeded generator makes a resumed run draw exactly the crops
the uninterrupted run would have, without saving any RNG state, and lets DataLoader workers
prepare batches ahead in any order. Under DDP every process plans the whole batch of a step and
cuts its own slice (``RankSlice``), so N processes draw what one process with N times the batch
would; with sharded files each process plans from its own files instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from n2ncli.errors import DatasetError, N2nError

MIN_SIDE = 16  # smaller images cannot give a useful sub-sampled pair for the U-Net


@dataclass(frozen=True)
class LoadedImages:
    """Decoded training images: CxHxW uint8/uint16 arrays (even sizes) and what was skipped."""

    arrays: tuple[np.ndarray, ...]
    paths: tuple[Path, ...]
    skipped: tuple[str, ...]  # "path: reason" lines for the user
    max_value: float  # 255 or 65535: the scale of the stored integers
    floor: float = 0.0  # stored 0 means -floor, max_value means 1 (raw keeps values below black)

    @property
    def scale(self) -> float:
        """Float value = stored * scale - floor."""
        return (1.0 + self.floor) / self.max_value

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays)

    @property
    def shapes(self) -> list[tuple[int, int, int]]:
        return [a.shape for a in self.arrays]


@dataclass(frozen=True)
class StreamedImages:
    """Training images too large to hold decoded: only their (even) shapes are kept.

    Crops are cut after decoding the file again, in DataLoader workers, with a small per-process
    cache; a folder of hundreds of 24-megapixel photos then trains in bounded memory.
    """

    paths: tuple[Path, ...]
    shape_list: tuple[tuple[int, int, int], ...]
    skipped: tuple[str, ...]
    reader: Callable[[Path], np.ndarray]
    floor: float = 0.0  # as LoadedImages.floor
    cache_size: int = 4
    nbytes: float = float("inf")  # never cached on the accelerator
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def shapes(self) -> list[tuple[int, int, int]]:
        return list(self.shape_list)

    def crop_float(self, i: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        """CxhXw float32 in [0,1] from image ``i`` (decoded again unless recently used)."""
        img = self._cache.pop(i, None)
        if img is None:
            native = self.reader(self.paths[i])
            scale = np.float32((1.0 + self.floor) / (65535.0 if native.dtype == np.uint16 else 255.0))
            c, hh, ww = self.shape_list[i]
            img = (native[:hh, :ww].transpose(2, 0, 1).astype(np.float32)) * scale - np.float32(self.floor)
        self._cache[i] = img  # most recently used last
        while len(self._cache) > self.cache_size:
            self._cache.pop(next(iter(self._cache)))
        return img[:, y:y + h, x:x + w]


def load_training_images(paths: Sequence[Path], reader: Callable[[Path], np.ndarray],
                         channels: int | None, progress: Callable[[int, int], None] | None = None,
                         memory_budget: float = float("inf"), floor: float = 0.0) -> LoadedImages | StreamedImages:
    """Decode ``paths`` with ``reader`` (path -> HxWxC uint8/uint16); skip tiny or unreadable files.

    Images are cropped to even sizes so the 2x2 sub-sampler never sees a half cell. Mixed
    8/16-bit folders are stored on the 16-bit scale. Past ``memory_budget`` bytes of decoded
    pixels, only shapes are kept and training streams crops from the files (StreamedImages).
    ``channels=None`` trains RGB unless every usable image is grey; images with another channel
    count are skipped. ``floor``: the reader's encoding of values below 0 (see LoadedImages).
    """
    arrays: list[np.ndarray] = []
    shapes: list[tuple[int, int, int]] = []
    kept: list[Path] = []
    skipped: list[str] = []
    held = 0
    for i, path in enumerate(paths):
        try:
            img = reader(path)
        except N2nError as exc:
            skipped.append(str(exc))
            continue
        finally:
            if progress:
                progress(i + 1, len(paths))
        h, w = img.shape[:2]
        if min(h, w) < MIN_SIDE:
            skipped.append(f"{path}: too small ({w}x{h}, need at least {MIN_SIDE}x{MIN_SIDE})")
            continue
        if channels is not None and img.shape[2] != channels:
            skipped.append(f"{path}: has {img.shape[2]} channel(s), the model needs {channels}")
            continue
        even = np.ascontiguousarray(img[: h - h % 2, : w - w % 2].transpose(2, 0, 1))
        shapes.append(even.shape)
        kept.append(path)
        held += even.nbytes
        if held <= memory_budget:
            arrays.append(even)
        else:
            arrays.clear()
    if channels is None and kept:
        channels = 3 if any(s[0] == 3 for s in shapes) else 1
        keep = [k for k, s in enumerate(shapes) if s[0] == channels]
        skipped += [f"{kept[k]}: has {shapes[k][0]} channel(s), the model needs {channels}"
                    for k in range(len(kept)) if shapes[k][0] != channels]
        arrays = [arrays[k] for k in keep] if arrays else arrays
        kept, shapes = [kept[k] for k in keep], [shapes[k] for k in keep]
    if not kept:
        detail = ""
        if skipped:  # the first reason, so a single bad file explains itself
            more = f" (and {len(skipped) - 1} more skipped)" if len(skipped) > 1 else ""
            detail = f": {skipped[0]}{more}"
        raise DatasetError(f"no usable training images{detail}")
    if held > memory_budget:
        return StreamedImages(tuple(kept), tuple(shapes), tuple(skipped), reader, floor)
    sixteen = any(a.dtype == np.uint16 for a in arrays)
    if sixteen:
        arrays = [a.astype(np.uint16) * (257 if a.dtype == np.uint8 else 1) for a in arrays]
    return LoadedImages(tuple(arrays), tuple(kept), tuple(skipped), 65535.0 if sixteen else 255.0, floor)


def step_generator(seed: int, step: int) -> np.random.Generator:
    """The generator for one training step: independent streams per (seed, step)."""
    return np.random.default_rng([seed, step])


@dataclass(frozen=True)
class CropPlan:
    """Which image and where: the crops of one batch, grouped by their (even) size."""

    image: np.ndarray  # B int
    y: np.ndarray  # B int
    x: np.ndarray  # B int
    height: np.ndarray  # B int
    width: np.ndarray  # B int

    def take(self, sel: slice | np.ndarray) -> "CropPlan":
        """The crops ``sel`` of this plan (a rank's slice of the batch)."""
        return CropPlan(self.image[sel], self.y[sel], self.x[sel], self.height[sel], self.width[sel])


@dataclass(frozen=True)
class RankSlice:
    """Which crops of each step's batch this process cuts: its share, rank ``rank`` of ``ranks``.

    ``sharded``: the images are this rank's own shard of the files, so it plans its crops from
    them with a generator of its own instead of slicing the one-process plan.
    """

    rank: int = 0
    ranks: int = 1
    sharded: bool = False

    def plan(self, sizes: np.ndarray, batch: int, crop: int, seed: int, step: int) -> tuple[CropPlan, np.ndarray]:
        """This rank's crops of step ``step`` of a ``batch``-crop global batch, and their indices in it."""
        per = batch // self.ranks
        mine = np.arange(self.rank * per, (self.rank + 1) * per)
        if self.sharded:
            return plan_crops(sizes, per, crop, np.random.default_rng([seed, step, self.ranks, self.rank])), mine
        return plan_crops(sizes, batch, crop, step_generator(seed, step)).take(mine), mine


class CropGroup(NamedTuple):
    """Crops of one size: ``crops`` Bx C x h x w float32 in [0,1]; ``samples`` their B indices in the
    step's global batch (per-sample noise and sub-sampler draws are keyed by them)."""

    samples: torch.Tensor  # B int64
    crops: torch.Tensor


def plan_crops(sizes: np.ndarray, batch: int, crop: int, rng: np.random.Generator) -> CropPlan:
    """Random ``crop``-sized windows (even offsets) of random images; small images are used whole.

    ``sizes`` is Nx2 (H, W), all even. Offsets are even so the sub-sampler's 2x2 cells stay on
    the original grid (this matters for Bayer mosaics and costs nothing for sRGB).
    """
    idx = rng.integers(0, len(sizes), size=batch)
    hs, ws = sizes[idx, 0], sizes[idx, 1]
    ch, cw = np.minimum(hs, crop) & ~1, np.minimum(ws, crop) & ~1
    y = (rng.integers(0, (hs - ch) // 2 + 1) * 2).astype(np.int64)
    x = (rng.integers(0, (ws - cw) // 2 + 1) * 2).astype(np.int64)
    return CropPlan(idx, y, x, ch, cw)


def group_positions(plan: CropPlan) -> list[np.ndarray]:
    """Positions in ``plan`` of the crops of each size, sizes in order of first appearance."""
    groups: dict[tuple[int, int], list[int]] = {}
    for k, (h, w) in enumerate(zip(plan.height, plan.width)):
        groups.setdefault((int(h), int(w)), []).append(k)
    return [np.array(g, dtype=np.int64) for g in groups.values()]


def group_crops(images: LoadedImages | Sequence[np.ndarray], plan: CropPlan) -> list[np.ndarray]:
    """Cut the planned crops; crops of equal size are stacked into one BxCxhxw array."""
    arrays = images.arrays if isinstance(images, LoadedImages) else images

    def cut(k: int) -> np.ndarray:
        y, x = plan.y[k], plan.x[k]
        return arrays[plan.image[k]][:, y:y + plan.height[k], x:x + plan.width[k]]

    return [np.stack([cut(k) for k in pos]) for pos in group_positions(plan)]


class CropBatches(torch.utils.data.Dataset):
    """Map-style dataset whose item ``k`` is the list of crop groups of training step ``k``.

    ``batch`` is the global batch of a step; ``part`` says which share of it this process cuts.
    """

    def __init__(self, images: LoadedImages | StreamedImages, batch: int, crop: int, seed: int,
                 part: RankSlice = RankSlice()) -> None:
        self.images, self.batch, self.crop, self.seed, self.part = images, batch, crop, seed, part
        self.sizes = np.array([s[1:] for s in images.shapes], dtype=np.int64)

    def __len__(self) -> int:  # steps are unbounded; the sampler decides which are drawn
        return 2**62

    def __getitem__(self, step: int) -> list[CropGroup]:
        """Float32 crops in [0,1] for ``step``, grouped by size (converted here, in the worker)."""
        plan, samples = self.part.plan(self.sizes, self.batch, self.crop, self.seed, step)
        positions = group_positions(plan)
        if isinstance(self.images, StreamedImages):
            cut = self.images.crop_float
            crops = [np.stack([cut(int(plan.image[k]), plan.y[k], plan.x[k], plan.height[k], plan.width[k])
                               for k in pos]) for pos in positions]
        else:
            scale, floor = np.float32(self.images.scale), np.float32(self.images.floor)
            crops = [g.astype(np.float32) * scale - floor for g in group_crops(self.images, plan)]
        return [CropGroup(torch.from_numpy(samples[pos]), torch.from_numpy(c)) for pos, c in zip(positions, crops)]


class DeviceCropSource:
    """All training images resident on the accelerator; crops cut there in one gather.

    Images are zero-padded into one NxCxHmaxxWmax integer tensor; a batch is a single indexed
    read, so the GPU never waits on the host. Used when the decoded set fits the memory budget.
    """

    def __init__(self, images: LoadedImages, batch: int, crop: int, seed: int, device: torch.device,
                 part: RankSlice = RankSlice()) -> None:
        self.batch, self.crop, self.seed, self.device, self.part = batch, crop, seed, device, part
        self.sizes = np.array([a.shape[1:] for a in images.arrays], dtype=np.int64)
        c = images.arrays[0].shape[0]
        hmax, wmax = self.sizes.max(axis=0)
        dtype = torch.int16 if images.max_value > 255 else torch.uint8
        store = torch.zeros((len(images.arrays), c, int(hmax), int(wmax)), dtype=dtype)
        for i, a in enumerate(images.arrays):
            # uint16 does not exist in older torch: keep the bits in int16 and undo on read
            t = torch.from_numpy(a.astype(np.int32) - 32768 if dtype == torch.int16 else a)
            store[i, :, : a.shape[1], : a.shape[2]] = t
        self.store = store.to(device)
        self.offset = 32768.0 if dtype == torch.int16 else 0.0
        self.scale, self.floor = images.scale, images.floor
        self.arange = torch.arange(crop, device=device)

    def batch_for(self, step: int) -> list[CropGroup]:
        """Float32 crops in [0,1] for ``step``, grouped by size, on the device."""
        plan, samples = self.part.plan(self.sizes, self.batch, self.crop, self.seed, step)
        out = []
        for sel in group_positions(plan):
            h, w = int(plan.height[sel[0]]), int(plan.width[sel[0]])
            img = torch.as_tensor(plan.image[sel], device=self.device)
            ys = torch.as_tensor(plan.y[sel], device=self.device)[:, None] + self.arange[:h]
            xs = torch.as_tensor(plan.x[sel], device=self.device)[:, None] + self.arange[:w]
            crops = self.store[img[:, None, None], :, ys[:, :, None], xs[:, None, :]]  # B h w C
            out.append(CropGroup(torch.from_numpy(samples[sel]),
                                 (crops.permute(0, 3, 1, 2).float() + self.offset) * self.scale - self.floor))
        return out
