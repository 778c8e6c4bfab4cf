"""Pipelined folder denoise, automatic tile size and the out-of-memory retry."""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from n2ncli.backends import OutOfMemory
from n2ncli.backends.torch import TorchPredictor
from n2ncli.denoise import (ALIGN, AUTO_TILE_RANGE, TileOptions, auto_tile, denoise_array, free_memory,
                            is_out_of_memory, run_job, run_jobs)
from n2ncli.jobs import Job, plan_jobs
from n2ncli.device import free_ram
from n2ncli.errors import ConfigError, ImageReadError, ImageWriteError
from n2ncli.store import DEFAULT_MODELS, SHIPPED_DIR, build_model, read_record

OPTIONS = TileOptions(tile=64, overlap=16, context=32)


@pytest.fixture(scope="module")
def predictor() -> TorchPredictor:
    record = read_record(SHIPPED_DIR / DEFAULT_MODELS["srgb"], shipped=True)
    return TorchPredictor(build_model(record), "cpu")


class Budget:
    """A predictor that runs out of memory above ``pixels`` input pixels per call (a simulated
    small GPU), recording the size of every call it accepted."""

    def __init__(self, inner: TorchPredictor, pixels: int) -> None:
        self.inner, self.pixels, self.channels = inner, pixels, inner.channels
        self.calls: list[tuple[int, ...]] = []

    def predict(self, batch: np.ndarray) -> np.ndarray:
        n, h, w, _ = batch.shape
        if n * h * w > self.pixels:
            raise OutOfMemory(f"simulated: {n}x{h}x{w} is over the budget of {self.pixels} pixels")
        self.calls.append(batch.shape)
        return self.inner.predict(batch)


def _noisy(crop: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(crop / 255.0 + rng.normal(0, 25 / 255, crop.shape), 0, 1)


@pytest.fixture(scope="module")
def inputs(kodak_crop: Callable[..., np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Four small noisy Kodak crops: 8-bit PNG, 16-bit PNG, 16-bit TIFF and a grey PNG."""
    folder = tmp_path_factory.mktemp("in")
    a = _noisy(kodak_crop(0, 0, 96, 128), 1)
    b = _noisy(kodak_crop(100, 200, 80, 112, image="kodim05.png"), 2)
    c = _noisy(kodak_crop(200, 100, 96, 96, image="kodim23.png"), 3)
    d = _noisy(kodak_crop(50, 60, 64, 100, image="kodim13.png"), 4)
    Image.fromarray((a * 255).round().astype(np.uint8)).save(folder / "a.png")
    import imagecodecs

    (folder / "b.png").write_bytes(imagecodecs.png_encode((b * 65535).round().astype(np.uint16)))
    tifffile.imwrite(folder / "c.tif", (c * 65535).round().astype(np.uint16), photometric="rgb")
    Image.fromarray((d.mean(axis=2) * 255).round().astype(np.uint8)).save(folder / "d.png")
    return sorted(folder.iterdir())


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.slow
def test_pipelined_folder_run_is_byte_identical_to_serial(inputs: list[Path], predictor: TorchPredictor,
                                                          tmp_path: Path, one_thread: None) -> None:
    serial, piped = tmp_path / "serial", tmp_path / "piped"
    serial.mkdir(), piped.mkdir()
    for job in plan_jobs(inputs, serial):
        run_job(job, predictor, OPTIONS)
    done: list[Path] = []
    run_jobs(plan_jobs(inputs, piped), predictor, OPTIONS, workers=2, ahead=1,
             on_done=lambda job, warnings: done.append(job.source))
    assert done == inputs
    assert len(_digests(serial)) == 4
    assert _digests(piped) == _digests(serial)


def test_callbacks_run_on_the_calling_thread_in_order(inputs: list[Path], predictor: TorchPredictor,
                                                      tmp_path: Path, one_thread: None) -> None:
    events: list[tuple[str, str, int]] = []
    me = threading.get_ident()
    run_jobs(plan_jobs(inputs[:2], tmp_path), predictor, OPTIONS,
             on_start=lambda job: events.append(("start", job.source.name, threading.get_ident())),
             on_tile=lambda d, n: events.append(("tile", f"{d}/{n}", threading.get_ident())),
             on_done=lambda job, w: events.append(("done", job.source.name, threading.get_ident())))
    assert {ident for *_, ident in events} == {me}
    kinds = [(k, name) for k, name, _ in events if k != "tile"]
    assert kinds == [("start", "a.png"), ("done", "a.png"), ("start", "b.png"), ("done", "b.png")] \
        or kinds == [("start", "a.png"), ("start", "b.png"), ("done", "a.png"), ("done", "b.png")]
    assert sum(k == "tile" for k, *_ in events) > 2


def test_an_unreadable_file_is_reported_and_the_others_are_written(inputs: list[Path], predictor: TorchPredictor,
                                                                   tmp_path: Path, one_thread: None) -> None:
    """The broken file fails alone, with a line naming it; the files before and after it are written."""
    src = tmp_path / "src"
    src.mkdir()
    for p in inputs[:3]:
        (src / p.name).write_bytes(p.read_bytes())
    (src / "b.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    out.mkdir()
    reported: list[str] = []
    result = run_jobs(plan_jobs([src], out), predictor, OPTIONS, ahead=1, on_failed=lambda job, line: reported.append(line))
    assert sorted(p.name for p in out.iterdir()) == ["a.n2n.png", "c.n2n.tif"]
    assert [j.source.name for j in result.written] == ["a.png", "c.tif"]
    assert [j.source.name for j, _ in result.failed] == ["b.png"]
    assert len(reported) == 1 and "b.png" in reported[0] and "\n" not in reported[0]


def test_a_failed_write_fails_that_file_only(inputs: list[Path], predictor: TorchPredictor, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch, one_thread: None) -> None:
    """An encoder error fails its own file; the others are written whole, no temp files are left."""
    import n2ncli.denoise as denoise_module

    real = denoise_module._write

    def failing(job: Job, data, out, raw_output) -> None:  # noqa: ANN001
        if job.source.name == "b.png":
            raise ImageWriteError(f"{job.target}: disk full (simulated)")
        real(job, data, out, raw_output)

    monkeypatch.setattr(denoise_module, "_write", failing)
    done: list[str] = []
    result = run_jobs(plan_jobs(inputs, tmp_path), predictor, OPTIONS, ahead=1,
                      on_done=lambda job, w: done.append(job.source.name))
    assert done == [p.name for p in inputs if p.name != "b.png"]
    assert [line for _, line in result.failed] == [f"{tmp_path / 'b.n2n.png'}: disk full (simulated)"]
    written = sorted(p.name for p in tmp_path.iterdir())
    assert "b.n2n.png" not in written and "a.n2n.png" in written
    assert all(not n.startswith(".") for n in written)  # no temp files left by the atomic writes


def test_bad_worker_counts_are_refused(predictor: TorchPredictor) -> None:
    with pytest.raises(ConfigError, match="workers"):
        run_jobs([Job(Path("x.png"), Path("y.png"))], predictor, workers=0)


# ----------------------------------------------------------------------------- out of memory


@pytest.mark.slow
def test_oom_retries_at_half_the_tile_and_matches_a_direct_run(kodak_crop: Callable[..., np.ndarray],
                                                                predictor: TorchPredictor, one_thread: None) -> None:
    """The issue's "simulate with a tile budget": whole image (96x128 + 2x64 context) is over the
    budget, a 64 px tile (192x192 with context) is under it."""
    image = _noisy(kodak_crop(0, 0, 96, 128), 7).astype(np.float32)
    limited = Budget(predictor, 40_000)
    retries: list[int] = []
    out = denoise_array(image, limited, TileOptions(tile=0), on_retry=lambda o, e: retries.append(o.tile))
    assert retries == [64]
    assert all(h * w <= 40_000 for _, h, w, _ in limited.calls)
    direct = denoise_array(image, predictor, TileOptions(tile=64, overlap=16))
    np.testing.assert_array_equal(out, direct)


def test_oom_at_the_smallest_tile_is_raised(kodak_crop: Callable[..., np.ndarray], predictor: TorchPredictor) -> None:
    image = _noisy(kodak_crop(0, 0, 96, 128), 7).astype(np.float32)
    retries: list[int] = []
    with pytest.raises(OutOfMemory, match="simulated"):
        denoise_array(image, Budget(predictor, 1000), TileOptions(tile=256), on_retry=lambda o, e: retries.append(o.tile))
    assert retries == [128, 64]


@pytest.mark.slow
def test_run_jobs_keeps_the_smaller_tile_for_later_files(inputs: list[Path], predictor: TorchPredictor,
                                                         tmp_path: Path, one_thread: None) -> None:
    retries: list[int] = []
    final = run_jobs(plan_jobs(inputs[:2], tmp_path), Budget(predictor, 40_000), TileOptions(tile=0),
                     on_retry=lambda o, e: retries.append(o.tile))
    assert retries == [64]  # once, for the first file; the second starts at 64
    assert final.options.tile == 64
    assert [j.source for j in final.written] == inputs[:2] and final.failed == []


@pytest.mark.parametrize("exc, expected", [
    (OutOfMemory("x"), True),
    (MemoryError(), True),
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"), True),
    (type("OutOfMemoryError", (RuntimeError,), {})("boom"), True),
    (RuntimeError("shape mismatch"), False),
    (ValueError("out of memory"), False),
])
def test_is_out_of_memory(exc: BaseException, expected: bool) -> None:
    assert is_out_of_memory(exc) is expected


# ----------------------------------------------------------------------------- auto tile


@pytest.mark.parametrize("free_mib, batch, expected", [
    (8192, 1, 1024),   # 2 GiB budget / 1536 B/px -> 1182 px side, minus 2x64 context, down to 32
    (8192, 4, 448),    # four tiles share the budget
    (1024, 1, 288),
    (512, 1, 256),     # clamped up to the minimum
    (81920, 1, 2048),  # clamped down to the maximum
])
def test_auto_tile(free_mib: int, batch: int, expected: int) -> None:
    assert auto_tile(free_mib << 20, 1536, batch, 64) == expected


@pytest.mark.parametrize("free_bytes", [0, 10**8, 3 * 10**9 + 7, 10**11])
def test_auto_tile_is_aligned_and_in_range(free_bytes: int) -> None:
    t = auto_tile(free_bytes)
    assert t % ALIGN == 0 and AUTO_TILE_RANGE[0] <= t <= AUTO_TILE_RANGE[1]
    TileOptions(tile=t)  # a valid tile


def test_free_memory_on_cpu_is_the_ram(predictor: TorchPredictor) -> None:
    assert free_ram() > 0
    assert abs(free_memory(predictor) - free_ram()) < 2 << 30


# ----------------------------------------------------------------------------- CLI


def test_cli_tile_auto_is_the_default_and_said_with_verbose(inputs: list[Path], tmp_path: Path,
                                                            one_thread: None) -> None:
    from typer.testing import CliRunner

    from n2ncli import cli

    result = CliRunner(env={"COLUMNS": "200"}).invoke(
        cli.app, ["--verbose", "denoise", str(inputs[0]), str(inputs[3]), "-o", str(tmp_path), "--backend", "torch",
                  "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert re.search(r"--tile auto: \d+ px", result.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.n2n.png", "d.n2n.png"]


def test_cli_tile_must_be_auto_or_a_number(inputs: list[Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from n2ncli import cli

    result = CliRunner().invoke(cli.app, ["denoise", str(inputs[0]), "-o", str(tmp_path), "--tile", "big"])
    assert result.exit_code == 1
    assert "--tile must be auto or a number" in str(result.exception)


def test_bf16_on_cpu_stays_close_to_fp32(kodak_crop: Callable[..., np.ndarray], one_thread: None) -> None:
    """The opt-in ``--precision bf16``: the same denoised crop to within a fraction of a grey level."""
    record = read_record(SHIPPED_DIR / DEFAULT_MODELS["srgb"], shipped=True)
    image = _noisy(kodak_crop(0, 0, 64, 96), 9).astype(np.float32)[None]
    fp32 = TorchPredictor(build_model(record), "cpu", precision="fp32").predict(image)
    bf16 = TorchPredictor(build_model(record), "cpu", precision="bf16").predict(image)
    assert np.abs(bf16 - fp32).mean() < 1 / 255


def test_bf16_runs_the_output_head_in_fp32(kodak_crop: Callable[..., np.ndarray], one_thread: None) -> None:
    """The 1x1 head in fp32 cuts bf16's error where it shows most, at low noise (sigma 5)."""
    record = read_record(SHIPPED_DIR / DEFAULT_MODELS["srgb"], shipped=True)
    crop = kodak_crop(0, 0, 96, 128) / 255.0
    image = (crop + np.random.default_rng(3).normal(0, 5 / 255, crop.shape)).astype(np.float32)[None]
    fp32 = TorchPredictor(build_model(record), "cpu", precision="fp32").predict(image)
    bf16 = TorchPredictor(build_model(record), "cpu", precision="bf16")
    assert bf16.model.head_fp32
    with_head = bf16.predict(image)
    bf16.model.head_fp32 = False
    all_bf16 = bf16.predict(image)
    rms = lambda a: float(np.sqrt(np.mean((a - fp32) ** 2)))  # noqa: E731
    # measured: 5.8e-4 against 1.07e-3 (on all Kodak at sigma 5: -0.015 dB against -0.094 dB)
    assert rms(with_head) < 0.7 * rms(all_bf16)
