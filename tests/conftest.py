"""Shared fixtures: an isolated user store for every test, and the project's real test data."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def fp32_cpu() -> Iterator[None]:
    """CPU inference in fp32 on every machine (``auto`` takes bf16 on CPUs with bf16 units), so
    results do not depend on the CPU, module-scoped fixtures included. Tests of the bf16 path set
    ``N2N_CPU_BF16`` themselves."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("N2N_CPU_BF16", "0")
        yield


@pytest.fixture(autouse=True)
def n2n_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``N2N_HOME`` points at a fresh temp dir, so no test reads or writes the real user store."""
    home = tmp_path_factory.mktemp("n2n_home")
    monkeypatch.setenv("N2N_HOME", str(home))
    return home


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run torch on one thread for the test (see torch_threads.single_thread)."""
    from torch_threads import single_thread

    with single_thread():
        yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the repository (Kodak24, CBSD432, raw samples)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def kodak_crop(shared_data: Path) -> Callable[..., np.ndarray]:
    """Factory: ``kodak_crop(top, left, height, width, image="kodim01.png")`` -> HxWx3 uint8 crop."""
    cache: dict[str, np.ndarray] = {}

    def crop(top: int = 200, left: int = 300, height: int = 64, width: int = 64,
             image: str = "kodim01.png") -> np.ndarray:
        if image not in cache:
            path = shared_data / "kodak24" / image
            if not path.is_file():
                pytest.skip(f"Kodak image not found at {path}")
            from PIL import Image

            with Image.open(path) as im:
                cache[image] = np.asarray(im.convert("RGB"))
        full = cache[image]
        if top + height > full.shape[0] or left + width > full.shape[1]:
            raise ValueError(f"crop {height}x{width}+{top}+{left} outside {image} {full.shape[:2]}")
        return np.ascontiguousarray(full[top:top + height, left:left + width])

    return crop


@pytest.fixture
def n2n(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Callable[..., object]:
    """Run the real entry point in-process: ``n2n(*args) -> Run(exit code, stdout, stderr)``."""
    from cli_run import run_n2n

    return lambda *args: run_n2n(monkeypatch, capsys, *args)


@pytest.fixture(scope="session")
def chart(shared_data: Path) -> Path:
    """The real Canon DNG (RGGB, 14-bit, black 2056, white 15000, ActiveArea 26,152)."""
    return shared_data / "raw" / "colorchart.dng"


@pytest.fixture(scope="session")
def kdc(shared_data: Path) -> Path:
    """The real Kodak DC50 raw (GRBG, not a DNG)."""
    return shared_data / "raw" / "RAW_KODAK_DC50.KDC"
