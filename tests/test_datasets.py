"""Dataset registry: local copies verified by sha256, downloads into the cache, clear offline errors."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

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
