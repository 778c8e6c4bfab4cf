"""Dataset registry: local copies verified by sha256, downloads into the cache, clear offline errors."""

from __future__ import annotations

import dataclasses
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from n2ncli.datasets import DATASETS, KODAK_SHA256, cache_dir, resolve_dataset
from n2ncli.errors import DatasetError


@pytest.fixture
def kodak24(shared_data: Path) -> Path:
    folder = shared_data / "kodak24"
    if not folder.is_dir():
        pytest.skip(f"Kodak24 not found at {folder}")
    return folder


def _mirror(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Point the Kodak registry entry at a local file:// mirror, so no test touches the network."""
    spec = DATASETS["kodak"]
    monkeypatch.setitem(DATASETS, "kodak", dataclasses.replace(spec, url=f"file://{folder}/{{file}}"))


def test_local_copy_gives_all_24_verified_files(kodak24: Path) -> None:
    paths = resolve_dataset("kodak", data_dir=kodak24)

    assert [p.name for p in paths] == [f"kodim{i:02d}.png" for i in range(1, 25)]
    assert all(p.parent == kodak24 and p.is_file() for p in paths)


def test_one_changed_byte_fails_verification_naming_the_file(kodak24: Path, tmp_path: Path) -> None:
    data = bytearray((kodak24 / "kodim01.png").read_bytes())
    data[len(data) // 2] ^= 0x01
    (tmp_path / "kodim01.png").write_bytes(bytes(data))

    with pytest.raises(DatasetError, match=r"kodim01\.png: sha256 does not match"):
        resolve_dataset("kodak", data_dir=tmp_path)


def test_partial_copy_names_the_first_missing_file(kodak24: Path, tmp_path: Path) -> None:
    for name in ("kodim01.png", "kodim02.png"):
        shutil.copyfile(kodak24 / name, tmp_path / name)

    with pytest.raises(DatasetError, match=r"kodim03\.png is missing"):
        resolve_dataset("kodak", data_dir=tmp_path)


def test_missing_data_dir_is_a_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="folder not found"):
        resolve_dataset("kodak", data_dir=tmp_path / "nowhere")


def test_offline_download_says_where_to_put_the_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                      n2n_home: Path) -> None:
    _mirror(monkeypatch, tmp_path / "unreachable-mirror")

    with pytest.raises(DatasetError) as info:
        resolve_dataset("kodak")

    message = str(info.value)
    target = n2n_home / "datasets" / "kodak"
    assert cache_dir() == n2n_home / "datasets"
    assert str(target) in message and "--data-dir" in message
    assert not target.exists() or not any(target.iterdir()), "a failed download left files in the cache"


def test_download_fills_the_cache_once(monkeypatch: pytest.MonkeyPatch, kodak24: Path, n2n_home: Path) -> None:
    _mirror(monkeypatch, kodak24)
    first_calls: list[str] = []
    second_calls: list[str] = []

    first = resolve_dataset("kodak", on_download=lambda f, done, total: first_calls.append(f))
    second = resolve_dataset("kodak", on_download=lambda f, done, total: second_calls.append(f))

    assert set(first_calls) == set(KODAK_SHA256)
    assert second_calls == []
    assert first == second == [n2n_home / "datasets" / "kodak" / name for name in KODAK_SHA256]
    assert all((n2n_home / "datasets" / "kodak" / name).read_bytes() == (kodak24 / name).read_bytes()
               for name in ("kodim01.png", "kodim24.png"))


@pytest.mark.parametrize("name", ["kodakk", "bsd68", ""])
def test_unknown_dataset_name(name: str) -> None:
    with pytest.raises(DatasetError, match="unknown dataset"):
        resolve_dataset(name)


# ----------------------------------------------------------------------------- sets checked by count and size


def _png(path: Path, width: int, height: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (90, 120, 150)).save(path)


def _tiny_bsd(monkeypatch: pytest.MonkeyPatch, url: str | None, prefix: str = "BSDS300/images/test/") -> None:
    """bsd300 shrunk to 2 images of 12x8 (either orientation), fetched from ``url``."""
    spec = dataclasses.replace(DATASETS["bsd300"], url=url, count=2, sizes=frozenset({(12, 8), (8, 12)}),
                               member_prefix=prefix)
    monkeypatch.setitem(DATASETS, "bsd300", spec)


def test_registry_records_every_paper_set() -> None:
    assert {"kodak", "bsd300", "cbsd68", "set14", "mcmaster"} <= set(DATASETS)
    assert (DATASETS["kodak"].repeats, DATASETS["bsd300"].repeats, DATASETS["set14"].repeats) == (10, 3, 20)
    assert DATASETS["bsd300"].count == 100 and DATASETS["cbsd68"].count == 68 and DATASETS["mcmaster"].count == 18
    assert DATASETS["kodak"].verification == "sha256 of every file"
    assert DATASETS["bsd300"].verification == "100 images of the recorded sizes"


def test_counted_set_from_a_folder_checks_count_and_sizes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _tiny_bsd(monkeypatch, None)
    _png(tmp_path / "1.png", 12, 8)
    with pytest.raises(DatasetError, match="holds 1 images, expected 2"):
        resolve_dataset("bsd300", data_dir=tmp_path)
    _png(tmp_path / "2.png", 12, 9)
    with pytest.raises(DatasetError, match=r"2\.png: 12x9 is not a size of bsd300"):
        resolve_dataset("bsd300", data_dir=tmp_path)
    _png(tmp_path / "2.png", 8, 12)
    assert [p.name for p in resolve_dataset("bsd300", data_dir=tmp_path)] == ["1.png", "2.png"]


def test_set_without_a_known_source_says_where_to_put_it(n2n_home: Path) -> None:
    with pytest.raises(DatasetError) as info:
        resolve_dataset("set14")

    assert str(n2n_home / "datasets" / "set14") in str(info.value) and "--data-dir" in str(info.value)


@pytest.mark.parametrize("kind", ["tgz", "zip"])
def test_archive_download_extracts_only_safe_members_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                          n2n_home: Path, kind: str) -> None:
    import tarfile
    import zipfile

    src = tmp_path / "src"
    _png(src / "a.png", 12, 8)
    _png(src / "b.png", 8, 12)
    members = {"BSDS300/images/test/a.png": src / "a.png", "BSDS300/images/test/b.png": src / "b.png",
               "BSDS300/images/train/c.png": src / "a.png",  # another split: not extracted
               "BSDS300/images/test/../../../../evil.png": src / "a.png", "/abs.png": src / "a.png"}
    archive = tmp_path / f"BSDS300-images.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as zf:
            for name, path in members.items():
                zf.write(path, name)
    else:
        with tarfile.open(archive, "w:gz") as tf:
            for name, path in members.items():
                tf.add(path, name)
            link = tarfile.TarInfo("BSDS300/images/test/link.png")
            link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tf.addfile(link)
    _tiny_bsd(monkeypatch, f"file://{archive}")
    progress: list[str] = []

    paths = resolve_dataset("bsd300", on_download=lambda f, d, t: progress.append(f))
    again = resolve_dataset("bsd300", on_download=lambda f, d, t: progress.append("again"))

    target = n2n_home / "datasets" / "bsd300"
    assert paths == again == [target / "a.png", target / "b.png"]
    assert progress and "again" not in progress
    assert sorted(p.name for p in target.iterdir()) == [".complete", "a.png", "b.png"]
    assert not list(n2n_home.rglob("evil.png")) and not list(n2n_home.rglob("abs.png"))
    assert not list((n2n_home / "datasets").glob(".bsd300-download*")), "the archive was kept"


def test_offline_archive_download_says_where_to_put_the_images(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                               n2n_home: Path) -> None:
    _tiny_bsd(monkeypatch, f"file://{tmp_path}/missing.tgz")

    with pytest.raises(DatasetError) as info:
        resolve_dataset("bsd300")

    assert str(n2n_home / "datasets" / "bsd300") in str(info.value) and "BSDS300/images/test/" in str(info.value)


def test_pairs_by_subfolder_and_by_real_mean_names(tmp_path: Path) -> None:
    from n2ncli.datasets import find_pairs

    for sub in ("noisy", "clean"):
        _png(tmp_path / "a" / sub / "x.png", 4, 4)
    _png(tmp_path / "a" / "noisy" / "lonely.png", 4, 4)
    _png(tmp_path / "b" / "Canon_1_real.png", 4, 4)
    _png(tmp_path / "b" / "Canon_1_mean.png", 4, 4)
    _png(tmp_path / "b" / "cam2" / "s_noisy.png", 4, 4)
    _png(tmp_path / "b" / "cam2" / "s_gt.png", 4, 4)

    assert find_pairs(tmp_path / "a") == [("x", tmp_path / "a/noisy/x.png", tmp_path / "a/clean/x.png")]
    assert find_pairs(tmp_path / "b") == [
        ("Canon_1", tmp_path / "b/Canon_1_real.png", tmp_path / "b/Canon_1_mean.png"),
        ("cam2/s", tmp_path / "b/cam2/s_noisy.png", tmp_path / "b/cam2/s_gt.png")]
    with pytest.raises(DatasetError, match="NAME_real"):
        find_pairs(tmp_path / "a" / "noisy")


# ----------------------------------------------------------------------------- clean sets for n2n eval


def _save_crops(folder: Path, crops: dict[str, np.ndarray]) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    for name, crop in crops.items():
        Image.fromarray(crop).save(folder / name)


def test_clean_sets_from_a_folder_keep_file_order_and_pixels(tmp_path: Path,
                                                             kodak_crop: Callable[..., np.ndarray]) -> None:
    from n2ncli.datasets import load_clean_sets

    crops = {"b.png": kodak_crop(10, 20, 24, 40), "a.png": kodak_crop(50, 60, 24, 40, image="kodim05.png"),
             "c.png": kodak_crop(90, 90, 24, 40, image="kodim03.png")}
    _save_crops(tmp_path / "mine", crops)

    (every,) = load_clean_sets(str(tmp_path / "mine"))
    (two,) = load_clean_sets(str(tmp_path / "mine"), limit=2)

    assert every.name == "mine" and every.repeats == 1
    assert [n for n, _ in every.images] == ["a.png", "b.png", "c.png"]
    for name, pixels in every.images:
        assert pixels.dtype == np.uint8 and np.array_equal(pixels, crops[name])
    assert [n for n, _ in two.images] == ["a.png", "b.png"]


def test_a_folder_named_like_a_registry_set_is_not_taken_for_it(tmp_path: Path,
                                                                kodak_crop: Callable[..., np.ndarray]) -> None:
    from n2ncli.datasets import load_clean_sets

    _save_crops(tmp_path / "kodak", {"x.png": kodak_crop()})

    (clean,) = load_clean_sets(str(tmp_path / "kodak"))

    assert clean.name == "kodak (folder)" and clean.repeats == 1  # unverified: no paper figures beside it


def test_registry_set_from_data_dir_has_the_papers_repeats(kodak24: Path) -> None:
    from n2ncli.datasets import load_clean_sets

    (kodak,) = load_clean_sets("Kodak", kodak24, limit=2)

    assert kodak.name == "kodak" and kodak.repeats == 10
    assert [(n, p.shape) for n, p in kodak.images] == [("kodim01.png", (512, 768, 3)), ("kodim02.png", (512, 768, 3))]


@pytest.mark.parametrize(("datasets", "message"), [
    ("nope", "unknown dataset 'nope'"),
    ("EMPTY", "no images (PNG, JPEG, TIFF, HEIC, AVIF, WebP)"),
    ("kodak,set14", "--data-dir applies to one dataset"),
])
def test_clean_sets_refuse_what_cannot_be_scored(tmp_path: Path, datasets: str, message: str) -> None:
    from n2ncli.datasets import load_clean_sets

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here\n")
    data_dir = tmp_path if "," in datasets else None

    with pytest.raises(DatasetError, match=re.escape(message)):
        load_clean_sets(datasets.replace("EMPTY", str(tmp_path / "empty")), data_dir)


def test_read_pairs_gives_float_noisy_and_uint8_clean(tmp_path: Path,
                                                      kodak_crop: Callable[..., np.ndarray]) -> None:
    from n2ncli.datasets import find_pairs, read_pairs

    clean = kodak_crop(100, 200, 24, 40)
    noisy = kodak_crop(101, 201, 24, 40)
    _save_crops(tmp_path / "p" / "clean", {"x.png": clean})
    _save_crops(tmp_path / "p" / "noisy", {"x.png": noisy})

    ((name, noisy_f, clean_u8),) = read_pairs(find_pairs(tmp_path / "p"))

    assert name == "x"
    assert noisy_f.dtype == np.float32 and np.allclose(noisy_f * 255, noisy, atol=1e-3)
    assert clean_u8.dtype == np.uint8 and np.array_equal(clean_u8, clean)
