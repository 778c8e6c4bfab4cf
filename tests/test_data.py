"""Training data: loading (skips, even sizes, bit depths), crop plans, deterministic batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from n2ncli.data import (
    MIN_SIDE,
    CropBatches,
    CropGroup,
    CropPlan,
    DeviceCropSource,
    LoadedImages,
    RankSlice,
    group_crops,
    load_training_images,
    plan_crops,
    step_generator,
)
from n2ncli.errors import DatasetError, ImageReadError
from n2ncli.io.image import read_image


def _rgb(h: int, w: int, seed: int = 0, dtype: type = np.uint8) -> np.ndarray:
    top = 255 if dtype == np.uint8 else 65535
    return np.random.default_rng(seed).integers(0, top + 1, (h, w, 3)).astype(dtype)


def _dict_reader(images: dict[Path, np.ndarray]):
    def read(path: Path) -> np.ndarray:
        if path not in images:
            raise ImageReadError(f"{path}: cannot decode PNG: broken")
        return images[path]
    return read


def _loaded(*arrays: np.ndarray) -> LoadedImages:
    """LoadedImages from HxWxC arrays (even sizes), as load_training_images builds them."""
    paths = [Path(f"img{i}.png") for i in range(len(arrays))]
    return load_training_images(paths, _dict_reader(dict(zip(paths, arrays))), arrays[0].shape[2])


# ------------------------------------------------------------------------------------ loading


def test_load_skips_tiny_and_unreadable_files_with_reasons(tmp_path: Path) -> None:
    good = _rgb(40, 30, seed=1)
    Image.fromarray(good).save(tmp_path / "good.png")
    Image.fromarray(_rgb(MIN_SIDE - 1, 64, seed=2)).save(tmp_path / "tiny.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (tmp_path / "text.png").write_text("not an image")
    paths = sorted(tmp_path.iterdir())
    seen: list[tuple[int, int]] = []

    loaded = load_training_images(paths, lambda p: read_image(p).pixels, 3,
                                  progress=lambda i, n: seen.append((i, n)))

    assert loaded.paths == (tmp_path / "good.png",)
    assert len(loaded.arrays) == 1
    assert np.array_equal(loaded.arrays[0], good.transpose(2, 0, 1))
    assert len(loaded.skipped) == 3
    reasons = "\n".join(loaded.skipped)
    for name in ("tiny.png", "broken.png", "text.png"):
        assert name in reasons
    tiny = next(s for s in loaded.skipped if "tiny.png" in s)
    assert "too small" in tiny and f"64x{MIN_SIDE - 1}" in tiny
    assert seen == [(i + 1, 4) for i in range(4)]  # progress also counts the skipped files


def test_load_skips_images_with_the_wrong_channel_count() -> None:
    grey, rgb = Path("grey.png"), Path("rgb.png")
    reader = _dict_reader({grey: np.zeros((32, 32, 1), np.uint8), rgb: _rgb(32, 32)})
    loaded = load_training_images([grey, rgb], reader, 3)
    assert loaded.paths == (rgb,)
    assert len(loaded.skipped) == 1 and "grey.png" in loaded.skipped[0] and "1 channel" in loaded.skipped[0]


def test_load_crops_odd_sizes_to_even_and_stores_chw() -> None:
    img = _rgb(41, 33, seed=3)
    loaded = _loaded(img)
    arr = loaded.arrays[0]
    assert arr.shape == (3, 40, 32)
    assert arr.flags.c_contiguous
    assert np.array_equal(arr, img[:40, :32].transpose(2, 0, 1))
    assert loaded.max_value == 255.0 and arr.dtype == np.uint8
    assert loaded.nbytes == arr.nbytes


def test_mixed_8_and_16_bit_are_stored_on_the_16_bit_scale() -> None:
    eight = _rgb(32, 32, seed=4, dtype=np.uint8)
    sixteen = _rgb(32, 34, seed=5, dtype=np.uint16)
    loaded = _loaded(eight, sixteen)
    assert loaded.max_value == 65535.0
    assert all(a.dtype == np.uint16 for a in loaded.arrays)
    assert np.array_equal(loaded.arrays[0], eight.transpose(2, 0, 1).astype(np.uint16) * 257)
    assert int(loaded.arrays[0].max()) <= 65535 and int(loaded.arrays[0].max()) == 255 * 257
    assert np.array_equal(loaded.arrays[1], sixteen.transpose(2, 0, 1))


def test_no_usable_images_is_a_dataset_error() -> None:
    with pytest.raises(DatasetError, match="no usable training images"):
        load_training_images([], _dict_reader({}), 3)
    with pytest.raises(DatasetError, match=r": a\.png: .* \(and 1 more skipped\)$"):
        load_training_images([Path("a.png"), Path("b.png")], _dict_reader({}), 3)


# ------------------------------------------------------------------------------------ planning


SIZES = np.array([[100, 80], [40, 30], [64, 200], [20, 50]], dtype=np.int64)


@pytest.mark.parametrize("crop", [32, 64, 34])
def test_planned_crops_are_even_inside_and_small_images_are_used_whole(crop: int) -> None:
    plan = plan_crops(SIZES, 2000, crop, np.random.default_rng(0))
    hs, ws = SIZES[plan.image, 0], SIZES[plan.image, 1]
    assert set(plan.image.tolist()) == set(range(len(SIZES)))
    assert np.all(plan.y % 2 == 0) and np.all(plan.x % 2 == 0)
    assert np.all(plan.height % 2 == 0) and np.all(plan.width % 2 == 0)
    assert np.all(plan.y >= 0) and np.all(plan.x >= 0)
    assert np.all(plan.y + plan.height <= hs) and np.all(plan.x + plan.width <= ws)
    assert np.array_equal(plan.height, np.minimum(hs, crop))
    assert np.array_equal(plan.width, np.minimum(ws, crop))
    small = plan.image == 3  # 20x50: used at full height
    assert np.all(plan.height[small] == 20) and np.all(plan.y[small] == 0)


def test_planned_offsets_reach_both_edges() -> None:
    sizes = np.array([[100, 80]], dtype=np.int64)
    plan = plan_crops(sizes, 3000, 32, np.random.default_rng(1))
    assert plan.y.min() == 0 and plan.y.max() == 100 - 32
    assert plan.x.min() == 0 and plan.x.max() == 80 - 32
    assert len(np.unique(plan.y)) == (100 - 32) // 2 + 1


def test_plans_are_a_pure_function_of_seed_and_step() -> None:
    def plan(seed: int, step: int) -> CropPlan:
        return plan_crops(SIZES, 8, 32, step_generator(seed, step))

    def same(a: CropPlan, b: CropPlan) -> bool:
        return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("image", "y", "x", "height", "width"))

    assert same(plan(3, 10), plan(3, 10))
    assert not same(plan(3, 10), plan(3, 11))
    assert not same(plan(3, 10), plan(4, 10))


def test_group_crops_stacks_crops_by_size() -> None:
    a = np.arange(3 * 40 * 60, dtype=np.uint8).reshape(3, 40, 60)
    b = np.arange(3 * 20 * 24, dtype=np.uint8).reshape(3, 20, 24) + 7
    plan = CropPlan(image=np.array([0, 1, 0, 1]), y=np.array([2, 0, 8, 0]), x=np.array([4, 0, 10, 0]),
                    height=np.array([32, 20, 32, 20]), width=np.array([32, 24, 32, 24]))
    groups = group_crops([a, b], plan)
    assert sorted(g.shape for g in groups) == [(2, 3, 20, 24), (2, 3, 32, 32)]
    big = next(g for g in groups if g.shape[2] == 32)
    small = next(g for g in groups if g.shape[2] == 20)
    assert np.array_equal(big[0], a[:, 2:34, 4:36])
    assert np.array_equal(big[1], a[:, 8:40, 10:42])
    assert np.array_equal(small[0], b) and np.array_equal(small[1], b)


def test_group_crops_accepts_loaded_images() -> None:
    loaded = _loaded(_rgb(40, 40, seed=6))
    plan = CropPlan(np.array([0]), np.array([2]), np.array([4]), np.array([32]), np.array([32]))
    (group,) = group_crops(loaded, plan)
    assert np.array_equal(group[0], loaded.arrays[0][:, 2:34, 4:36])


# ------------------------------------------------------------------------------------ batches


def _crops(groups: list[CropGroup]) -> list[torch.Tensor]:
    return [g.crops for g in groups]


def _by_sample(groups: list[CropGroup]) -> dict[int, torch.Tensor]:
    """Each crop of a step under its index in the global batch."""
    return {int(i): c for g in groups for i, c in zip(g.samples, g.crops)}


def test_crop_batches_item_k_is_the_same_for_two_instances() -> None:
    loaded = _loaded(_rgb(64, 80, seed=7), _rgb(40, 36, seed=8))
    one, two = CropBatches(loaded, 4, 32, seed=5), CropBatches(loaded, 4, 32, seed=5)
    for step in (0, 1, 17, 10**9):
        a, b = one[step], two[step]
        assert len(a) == len(b)
        assert all(torch.equal(x.crops, y.crops) and torch.equal(x.samples, y.samples) for x, y in zip(a, b))
    first, other = _crops(one[3]), _crops(one[4])
    assert not all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(first, other))


def test_crop_batches_are_float32_in_unit_range_with_the_batch_size() -> None:
    loaded = _loaded(_rgb(64, 80, seed=9, dtype=np.uint16), _rgb(32, 36, seed=10, dtype=np.uint16))
    groups = _crops(CropBatches(loaded, 6, 32, seed=1)[0])
    assert sum(g.shape[0] for g in groups) == 6
    for g in groups:
        assert g.dtype == torch.float32 and g.shape[1:] == (3, 32, 32)
        assert float(g.min()) >= 0.0 and float(g.max()) <= 1.0
    assert float(torch.cat(groups).max()) > 0.9  # divided by 65535, not left on the 0-65535 scale


def test_crop_batches_values_are_the_planned_crops_scaled() -> None:
    loaded = _loaded(_rgb(50, 48, seed=11))
    groups = _crops(CropBatches(loaded, 3, 32, seed=2)[5])
    plan = plan_crops(np.array([[50, 48]]), 3, 32, step_generator(2, 5))
    expected = group_crops(loaded, plan)
    assert len(groups) == len(expected)
    for got, want in zip(groups, expected):
        assert torch.allclose(got, torch.from_numpy(want.astype(np.float32) / 255.0))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_device_crop_source_cuts_the_same_crops_as_crop_batches(dtype: type) -> None:
    loaded = _loaded(_rgb(64, 80, seed=12, dtype=dtype), _rgb(20, 36, seed=13, dtype=dtype),
                     _rgb(48, 48, seed=14, dtype=dtype))
    host = CropBatches(loaded, 5, 32, seed=3)
    device = DeviceCropSource(loaded, 5, 32, seed=3, device=torch.device("cpu"))
    for step in (0, 1, 2):
        a = sorted(_crops(host[step]), key=lambda t: tuple(t.shape))
        b = sorted(_crops(device.batch_for(step)), key=lambda t: tuple(t.shape))
        assert [t.shape for t in a] == [t.shape for t in b]
        for x, y in zip(a, b):
            assert torch.allclose(x, y, atol=1e-6)


def test_streamed_images_give_the_same_crops_as_in_memory(shared_data: Path) -> None:
    """Past the memory budget only shapes are kept; crops decoded again from the files are equal."""
    from n2ncli.data import CropBatches, StreamedImages
    from n2ncli.fit import read_pixels

    paths = sorted((shared_data / "kodak24").glob("kodim0[1-3].png"))
    held = load_training_images(paths, read_pixels, 3)
    streamed = load_training_images(paths, read_pixels, 3, memory_budget=1_000_000)
    assert isinstance(held, LoadedImages) and isinstance(streamed, StreamedImages)
    assert streamed.shapes == held.shapes
    a, b = CropBatches(held, 4, 64, seed=3), CropBatches(streamed, 4, 64, seed=3)
    for step in (0, 7):
        for x, y in zip(_crops(a[step]), _crops(b[step])):
            assert torch.equal(x, y)


def test_raw_crops_keep_values_below_black_in_memory_and_streamed(shared_data: Path) -> None:
    """Packed raws stored as uint16 with a floor decode to the normalised values (negatives
    included), whether held in memory or streamed from the files by workers."""
    from n2ncli.data import StreamedImages
    from n2ncli.io.raw import TRAIN_FLOOR, read_packed, read_training_raw

    paths = [shared_data / "raw" / "colorchart.dng", shared_data / "raw" / "RAW_KODAK_DC50.KDC"]
    held = load_training_images(paths, read_training_raw, 4, floor=TRAIN_FLOOR)
    streamed = load_training_images(paths, read_training_raw, 4, memory_budget=1_000_000, floor=TRAIN_FLOOR)
    assert isinstance(held, LoadedImages) and isinstance(streamed, StreamedImages)
    a, b = CropBatches(held, 4, 64, seed=2), CropBatches(streamed, 4, 64, seed=2)
    for x, y in zip(_crops(a[0]), _crops(b[0])):
        assert torch.allclose(x, y, atol=1e-6)
    chart = read_packed(paths[0])
    whole = held.arrays[0].astype(np.float32) * np.float32(held.scale) - np.float32(held.floor)
    assert np.abs(whole.transpose(1, 2, 0) - chart[: whole.shape[1], : whole.shape[2]]).max() < 2e-5
    assert whole.min() < 0  # the chart's darkest photosites sit below black


# ------------------------------------------------------------------------------------ ranks


@pytest.mark.parametrize("ranks", [2, 3])
def test_rank_slices_together_are_the_one_process_batch(ranks: int) -> None:
    """N processes cutting their slices of a 6-crop batch cut exactly the crops of one process."""
    loaded = _loaded(_rgb(64, 80, seed=15), _rgb(20, 36, seed=16), _rgb(48, 48, seed=17))
    whole = CropBatches(loaded, 6, 32, seed=4)
    parts = [CropBatches(loaded, 6, 32, seed=4, part=RankSlice(r, ranks)) for r in range(ranks)]
    for step in (0, 5, 9):
        expected = _by_sample(whole[step])
        assert sorted(expected) == list(range(6))
        got: dict[int, torch.Tensor] = {}
        for r, part in enumerate(parts):
            mine = _by_sample(part[step])
            assert sorted(mine) == list(range(r * 6 // ranks, (r + 1) * 6 // ranks))
            got.update(mine)
        assert all(torch.equal(got[i], expected[i]) for i in range(6))


def test_device_crop_source_cuts_the_rank_slice_too() -> None:
    loaded = _loaded(_rgb(64, 80, seed=18), _rgb(20, 36, seed=19))
    host = CropBatches(loaded, 4, 32, seed=6, part=RankSlice(1, 2))
    device = DeviceCropSource(loaded, 4, 32, seed=6, device=torch.device("cpu"), part=RankSlice(1, 2))
    a, b = _by_sample(host[3]), _by_sample(device.batch_for(3))
    assert sorted(a) == sorted(b) == [2, 3]
    assert all(torch.allclose(a[i], b[i], atol=1e-6) for i in a)


def test_sharded_ranks_plan_their_own_crops() -> None:
    """With sharded files each rank draws its share of the batch from its own images."""
    shard = _loaded(_rgb(64, 80, seed=20))
    one, two = (CropBatches(shard, 4, 32, seed=1, part=RankSlice(r, 2, sharded=True)) for r in (0, 1))
    a, b = _by_sample(one[2]), _by_sample(two[2])
    assert sorted(a) == [0, 1] and sorted(b) == [2, 3]
    assert not torch.equal(a[0], b[2])  # not the same draw on both ranks
    assert all(torch.equal(x, y) for x, y in zip(_crops(one[2]), _crops(one[2])))
