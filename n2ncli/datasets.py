"""Evaluation datasets: a registry of names, files, sources and sha256, resolved to local files.

``--data-dir`` points at a local copy; otherwise files are downloaded once into the user cache
and verified. Offline, the error says exactly where to put the files. ``n2n eval`` reads its
``--dataset`` names and folders (:func:`load_clean_sets`) and real pairs (:func:`read_pairs`) here.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from n2ncli.errors import DatasetError
from n2ncli.fsutil import atomic_path


@dataclass(frozen=True)
class DatasetSpec:
    """One evaluation set and how to check a copy of it.

    Sets whose files are known byte for byte list ``files`` (name -> sha256) and are verified by
    hash. For the others no authoritative per-file hash can be known (copies circulate
    re-encoded), so the record gives the image ``count`` and the allowed ``sizes`` (width,
    height) and a copy is verified against those; ``verification`` says which applies.
    ``url`` is a per-file format string with ``{file}``, an archive (.tgz/.zip) whose images lie
    under ``member_prefix``, or None where no stable public download is known.
    """

    name: str
    description: str
    url: str | None
    files: Mapping[str, str | None] = field(default_factory=dict)
    repeats: int = 1  # the paper's repeats per image for this set
    count: int = 0
    sizes: frozenset[tuple[int, int]] | None = None
    member_prefix: str | None = None
    archive_sha256: str | None = None  # None: not known, the extracted images are checked instead

    @property
    def verification(self) -> str:
        if self.files and all(self.files.values()):
            return "sha256 of every file"
        return f"{self.count} images" + (" of the recorded sizes" if self.sizes else "")

    @property
    def is_archive(self) -> bool:
        return self.url is not None and self.url.lower().endswith((".tgz", ".tar.gz", ".zip"))


_BSD_SIZES = frozenset({(481, 321), (321, 481)})
_FFDNET = "https://github.com/cszn/FFDNet/archive/refs/heads/master.zip"

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
        "https://r0k.us/graphics/kodak/kodak/{file}", KODAK_SHA256, repeats=10, count=24,
        sizes=frozenset({(768, 512), (512, 768)})),
    "bsd300": DatasetSpec(
        "bsd300", "BSD300 test split, 100 JPEG images 481x321 (from the BSDS300 tarball, iids_test.txt)",
        "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/bsds/BSDS300-images.tgz",
        repeats=3, count=100, sizes=_BSD_SIZES, member_prefix="BSDS300/images/test/"),
    "cbsd68": DatasetSpec(
        "cbsd68", "CBSD68, 68 colour BSD images 481x321 (FFDNet test sets)",
        _FFDNET, count=68, sizes=_BSD_SIZES, member_prefix="FFDNet-master/testsets/CBSD68/"),
    "mcmaster": DatasetSpec(
        "mcmaster", "McMaster, 18 colour images 500x500 (FFDNet test sets)",
        _FFDNET, count=18, sizes=frozenset({(500, 500)}), member_prefix="FFDNet-master/testsets/McMaster/"),
    "set14": DatasetSpec(
        "set14", "Set14, 14 images of mixed sizes, bridge is greyscale (super-resolution benchmark copies)",
        None, repeats=20, count=14),
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
    if not spec.files:
        return _resolve_counted(spec, folder, data_dir is None and download, verify, on_download)
    paths = []
    for file, digest in spec.files.items():
        path = folder / file
        if not path.is_file():
            if data_dir is not None or not download:
                raise DatasetError(f"{spec.name}: {path} is missing; the folder must hold "
                                   f"{', '.join(list(spec.files)[:2])} ... ({len(spec.files)} files)")
            _download(spec, file, path, on_download)
        if verify and digest and _sha256(path) != digest:
            raise DatasetError(f"{path}: sha256 does not match the registry ({spec.name}); "
                               "a different copy of the set would give numbers not comparable with the paper")
        paths.append(path)
    return paths


@dataclass(frozen=True)
class CleanSet:
    """Clean images to score a model on: a registry set or a folder, read into memory."""

    name: str  # the registry name, or the folder's ("NAME (folder)" for an unverified copy of a set)
    images: list[tuple[str, np.ndarray]]  # (file name, HxWxC uint8)
    repeats: int  # the paper's noise draws per image (1 for a folder)


def load_clean_sets(datasets: str, data_dir: Path | None = None, limit: int | None = None, *,
                    on_download: Callable[[str, int, int], None] | None = None) -> list[CleanSet]:
    """``n2n eval --dataset``: comma-separated registry names or folders, each read as a :class:`CleanSet`.

    Registry sets come from ``data_dir`` (one set only) or the verified cache (downloaded once,
    ``on_download`` as in :func:`resolve_dataset`); ``limit`` keeps the first N images of each.
    """
    from n2ncli.evaluate import to_uint8
    from n2ncli.io.image import list_images, read_image

    names = [d.strip() for d in datasets.split(",") if d.strip()] or ["kodak"]
    if data_dir is not None and len(names) > 1:
        raise DatasetError("--data-dir applies to one dataset; give one --dataset with it")
    sets = []
    for item in names:
        folder = Path(item).expanduser()
        if item.lower() in DATASETS:
            name = item.lower()
            paths, repeats = resolve_dataset(name, data_dir, on_download=on_download), DATASETS[name].repeats
        elif folder.is_dir():
            name, paths, repeats = folder.name, list_images(folder), 1
            if name.lower() in DATASETS:  # an unverified copy: no paper figures beside it
                name = f"{name} (folder)"
        else:
            raise DatasetError(f"unknown dataset {item!r} (known: {', '.join(DATASETS)}; or give a folder)")
        paths = paths[:limit] if limit else paths
        if not paths:
            raise DatasetError(f"{item}: no images (PNG, JPEG, TIFF, HEIC, AVIF, WebP)")
        sets.append(CleanSet(name, [(p.name, to_uint8(read_image(p).pixels)) for p in paths], repeats))
    return sets


_COMPLETE = ".complete"


def _resolve_counted(spec: DatasetSpec, folder: Path, may_download: bool, verify: bool,
                     on_download: Callable[[str, int, int], None] | None) -> list[Path]:
    """A set checked by image count and sizes; fetched (archive) into the cache when allowed."""
    from n2ncli.io.image import list_images

    if may_download and not (folder / _COMPLETE).is_file():
        if spec.url is None:
            raise DatasetError(
                f"{spec.name}: no stable public download is known; put its {spec.count} images in {folder} "
                "or pass --data-dir DIR")
        _download_archive(spec, folder, on_download)
    paths = list_images(folder) if folder.is_dir() else []
    if verify:
        _check_counted(spec, folder, paths)
    return paths


def _check_counted(spec: DatasetSpec, folder: Path, paths: list[Path]) -> None:
    from PIL import Image

    where = f" (the images under {spec.member_prefix} in {spec.url})" if spec.member_prefix else ""
    if spec.count and len(paths) != spec.count:
        raise DatasetError(f"{spec.name}: {folder} holds {len(paths)} images, expected {spec.count}{where}")
    if spec.sizes:
        for path in paths:
            try:
                with Image.open(path) as im:
                    size = im.size
            except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad copy
                raise DatasetError(f"{path}: cannot read ({exc})") from None
            if size not in spec.sizes:
                allowed = ", ".join(f"{w}x{h}" for w, h in sorted(spec.sizes))
                raise DatasetError(f"{path}: {size[0]}x{size[1]} is not a size of {spec.name} ({allowed}); "
                                   "a different copy of the set would give numbers not comparable with the paper")


def _fetch(url: str, path: Path, label: str, on_download: Callable[[str, int, int], None] | None) -> None:
    with urllib.request.urlopen(url, timeout=30) as response, atomic_path(path) as tmp:
        total = int(response.headers.get("Content-Length") or 0)
        done = 0
        with open(tmp, "wb") as out:
            while chunk := response.read(1 << 16):
                out.write(chunk)
                done += len(chunk)
                if on_download:
                    on_download(label, done, total)


def _download(spec: DatasetSpec, file: str, path: Path,
              on_download: Callable[[str, int, int], None] | None) -> None:
    url = spec.url.format(file=file)
    try:
        _fetch(url, path, file, on_download)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DatasetError(
            f"cannot download {spec.name} ({url}: {reason}); offline, put the {len(spec.files)} files "
            f"({', '.join(list(spec.files)[:2])} ...) in {path.parent} or pass --data-dir DIR") from None


def _download_archive(spec: DatasetSpec, folder: Path, on_download: Callable[[str, int, int], None] | None) -> None:
    archive = folder.parent / f".{spec.name}-download{''.join(Path(spec.url).suffixes[-2:])}"
    try:
        _fetch(spec.url, archive, Path(spec.url).name, on_download)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DatasetError(
            f"cannot download {spec.name} ({spec.url}: {reason}); offline, put its {spec.count} images "
            f"(from {spec.member_prefix} in that archive) in {folder} or pass --data-dir DIR") from None
    try:
        if spec.archive_sha256 and _sha256(archive) != spec.archive_sha256:
            raise DatasetError(f"{spec.url}: sha256 of the download does not match the registry")
        extract_images(archive, folder, spec.member_prefix or "")
        (folder / _COMPLETE).write_text(spec.url + "\n")
    finally:
        archive.unlink(missing_ok=True)


def _safe_member(name: str, prefix: str) -> str | None:
    """The file name to extract ``name`` as, or None: outside ``prefix``, absolute or with '..'."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not name or name.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
        return None
    norm = "/".join(parts)
    prefix = prefix.strip("/")
    if prefix and not norm.startswith(prefix + "/"):
        return None
    rest = norm[len(prefix):].strip("/") if prefix else norm
    if not rest or "/" in rest or rest.startswith("."):
        return None  # only files directly in the prefix folder, flattened to their names
    return rest


def extract_images(archive: Path, folder: Path, prefix: str) -> list[Path]:
    """Extract the regular files directly under ``prefix`` of a .tgz/.zip into ``folder``.

    Members are filtered, never trusted: links, devices, absolute paths and '..' are skipped,
    and every file is written by its bare name, so nothing lands outside ``folder``.
    """
    import tarfile
    import zipfile

    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(name: str, data: bytes) -> None:
        target = folder / name
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
        written.append(target)

    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    name = _safe_member(info.filename, prefix)
                    if name and not info.is_dir():
                        save(name, zf.read(info))
        else:
            with tarfile.open(archive, "r:*") as tf:
                for member in tf:
                    name = _safe_member(member.name, prefix)
                    if name and member.isfile():
                        fh = tf.extractfile(member)
                        if fh is not None:
                            save(name, fh.read())
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetError(f"{archive}: not a readable archive ({exc})") from None
    return written


# ----------------------------------------------------------------------------- real noisy pairs

NOISY_TAGS = ("_real", "_noisy", "_noisy_srgb")
CLEAN_TAGS = ("_mean", "_clean", "_gt", "_gt_srgb")


def find_pairs(folder: Path) -> list[tuple[str, Path, Path]]:
    """(name, noisy, clean) pairs in ``folder``: ``noisy/`` + ``clean/`` subfolders matched by stem,
    or files named ``X_real.*`` / ``X_mean.*`` (as in public real-noise sets; also ``_noisy``/``_clean``/``_gt``).
    """
    from n2ncli.io.image import list_images

    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"--pairs {folder}: folder not found")
    noisy_dir, clean_dir = folder / "noisy", folder / "clean"
    if noisy_dir.is_dir() and clean_dir.is_dir():
        clean_by_stem = {p.stem: p for p in list_images(clean_dir)}
        pairs = [(p.stem, p, clean_by_stem[p.stem]) for p in list_images(noisy_dir) if p.stem in clean_by_stem]
        if not pairs:
            raise DatasetError(f"--pairs {folder}: no file in noisy/ has a namesake in clean/")
        return pairs
    noisy: dict[str, Path] = {}
    clean: dict[str, Path] = {}
    for p in list_images(folder):
        stem = p.stem.lower()
        for tags, into in ((NOISY_TAGS, noisy), (CLEAN_TAGS, clean)):
            tag = next((t for t in sorted(tags, key=len, reverse=True) if stem.endswith(t)), None)
            if tag:
                into[str(p.parent / p.stem[:-len(tag)])] = p
    keys = sorted(noisy.keys() & clean.keys())
    if not keys:
        raise DatasetError(f"--pairs {folder}: needs noisy/ and clean/ subfolders, or files named "
                           "NAME_real.* and NAME_mean.* (or _noisy/_clean, _noisy/_gt) side by side")
    return [(str(Path(k).relative_to(folder)), noisy[k], clean[k]) for k in keys]


def read_pairs(found: Sequence[tuple[str, Path, Path]]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The files of :func:`find_pairs` read for scoring: (name, noisy HxWxC float32 in [0,1], clean uint8)."""
    from n2ncli.evaluate import to_uint8
    from n2ncli.io.image import read_image

    return [(name, read_image(noisy).to_float(), to_uint8(read_image(clean).pixels)) for name, noisy, clean in found]
