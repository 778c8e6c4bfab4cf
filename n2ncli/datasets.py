"""Evaluation datasets: a registry of names, files, sources and sha256, resolved to local files.

``--data-dir`` points at a local copy; otherwise files are downloaded once into the user cache
and verified. Offline, the error says exactly where to put the files.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from n2ncli.errors import DatasetError
from n2ncli.fsutil import atomic_path


@dataclass(frozen=True)
class DatasetSpec:
    """One evaluation set: file name -> sha256, and where each file can be fetched."""

    name: str
    description: str
    url: str  # format string with {file}
    files: Mapping[str, str]
    repeats: int = 1  # the paper's repeats per image for this set


KODAK_SHA256 = {
    "kodim01.png": "a56e27cbf5f843c048b6af1d6e090760e9c92fadba88b7dee0205918a37523bd",
    "kodim02.png": "4f4b74a79237e311d72cad958237b5f7088d8bce1c82305ebefe1a70e3022dfd",
    "kodim03.png": "e25ca1ff2f0c0cb5fdfd5f9b0a0bb21ac4c3de3c84a67f35b09a85d3306249db",
    "kodim04.png": "e3b946107c5d3441c022f678d0c3caf1e224d81b1604ba840a4f88e562de61aa",
    "kodim05.png": "10349e963c5c813d327852f82c1795fa4148d69fedffc4c589bee458e3ac3d53",
    "kodim06.png": "363510303b715d4cbc384e1ce227e466b613a09e1b71ae985882bf8e7fbd9b18",
    "kodim07.png": "b77d3f006f42414bb242222e0482e750c0fb9e5ee8d4bed2f6f11c5605fe54a4",
    "kodim08.png": "ba23983c76b4832ee0e8af0592664756841a16779acd69f792e268fb6d13d6e7",
    "kodim09.png": "6a4361c2fc194feb4edaa9f9a4a0620fb9943e460ac7fdf037fb0f6dd6607a7d",
    "kodim10.png": "9dfb70f5867c29ff9ed6313683f19b3d867849e40fbc0c4c54a4a89df341cf23",
    "kodim11.png": "7936814b58b5387fce2e4e2488b4ec830dadd95fa9520f358ddb30990b50f2b6",
    "kodim12.png": "d78c37c2f04f23761ed2367dd77e2db584ddd4c3950833fecf89f199a8126980",
    "kodim13.png": "bc34a3ce58dea09dce1704c997171602de90cb34d0c8503a988b77f473d39b08",
    "kodim14.png": "55a94550ff18f3246c4074fd32b77b0c74447c26b6ad274d564d999c0450ba6e",
    "kodim15.png": "7538cbb80cb9103606c48b806eae57d56c885c7f90b9b3be70a41160f9cbb683",
    "kodim16.png": "a89c7268ccd4718ba424a99fc4643c572cf692ca6eae887185ceb4e9f11d2e54",
    "kodim17.png": "37afcc89fbdcb76d9518e04b2fc011027e2f4cd14b3b2f83cefd721641a47c5b",
    "kodim18.png": "1a9258c365988961d87a0598725b609139c303ad48a5aad6c503c3b1a87849aa",
    "kodim19.png": "b7450b264b1b0a411390d8931b112c27905a992520fc90569dc4b920aa32bbdc",
    "kodim20.png": "3b46c71e3b92a563820ba32936be8330c586c41f938efd94be938386aae4328a",
    "kodim21.png": "ac958597c82073f6bb65129c68f72b651db5b9efd82e11547d07350214bc268b",
    "kodim22.png": "1cee58eb1f2d9c7ebb254d208a03c783ce6cf2c4d8c2cf45e235dd23b4ce1b29",
    "kodim23.png": "e3111a2fd4da24af15d6459ef9eacfe54106b38e27b4a21821b75c3f5d2d5baf",
    "kodim24.png": "1071c68372cc5a01435c2c225a5cf7d4bb803846ec08bb6b3d6721b156d7cb96",
}

DATASETS: dict[str, DatasetSpec] = {
    "kodak": DatasetSpec(
        "kodak", "Kodak PhotoCD, 24 images 768x512 (the paper's main test set)",
        "https://r0k.us/graphics/kodak/kodak/{file}", KODAK_SHA256, repeats=10),
}


def cache_dir() -> Path:
    """Downloaded datasets live here (``$N2N_HOME/datasets`` when set, else the user cache)."""
    env = os.environ.get("N2N_HOME")
    if env:
        return Path(env).expanduser() / "datasets"
    import platformdirs

    return Path(platformdirs.user_cache_dir("n2ncli", appauthor=False)) / "datasets"


def get_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name.lower()]
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r} (known: {', '.join(DATASETS)}; or give a folder)") from None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def resolve_dataset(name: str, data_dir: Path | None = None, *, download: bool = True, verify: bool = True,
                    on_download: Callable[[str, int, int], None] | None = None) -> list[Path]:
    """Local paths of every file of dataset ``name``, downloading missing ones into the cache.

    ``on_download(file, bytes_done, bytes_total)`` reports download progress.
    """
    spec = get_spec(name)
    folder = Path(data_dir) if data_dir is not None else cache_dir() / spec.name
    if data_dir is not None and not folder.is_dir():
        raise DatasetError(f"--data-dir {folder}: folder not found")
    paths = []
    for file, digest in spec.files.items():
        path = folder / file
        if not path.is_file():
            if data_dir is not None or not download:
                raise DatasetError(f"{spec.name}: {path} is missing; the folder must hold "
                                   f"{', '.join(list(spec.files)[:2])} ... ({len(spec.files)} files)")
            _download(spec, file, path, on_download)
        if verify and _sha256(path) != digest:
            raise DatasetError(f"{path}: sha256 does not match the registry ({spec.name}); "
                               "a different copy of the set would give numbers not comparable with the paper")
        paths.append(path)
    return paths


def _download(spec: DatasetSpec, file: str, path: Path,
              on_download: Callable[[str, int, int], None] | None) -> None:
    url = spec.url.format(file=file)
    try:
        with urllib.request.urlopen(url, timeout=30) as response, atomic_path(path) as tmp:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            with open(tmp, "wb") as out:
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    done += len(chunk)
                    if on_download:
                        on_download(file, done, total)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DatasetError(
            f"cannot download {spec.name} ({url}: {reason}); offline, put the {len(spec.files)} files "
            f"({', '.join(list(spec.files)[:2])} ...) in {path.parent} or pass --data-dir DIR") from None
