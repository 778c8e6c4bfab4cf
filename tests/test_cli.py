"""The `n2n` command end to end: real images, the shipped model, exit codes and messages.

Exit codes come from ``n2ncli.cli.main`` (it turns ``N2nError`` into one line and exit 1), so
those tests call ``main()`` with a patched ``sys.argv`` or run ``python -m n2ncli``; output-only
checks go through Typer's ``CliRunner`` on ``app``. Torch runs on one thread throughout (see
conftest's ``one_thread``): on a busy 2-core machine that is several times faster.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from n2ncli import __version__, cli
from n2ncli.backends.torch import TorchPredictor
from n2ncli.store import DEFAULT_MODELS, SHIPPED_DIR, build_model, read_record
from cli_run import Run, error_line

SHIPPED = DEFAULT_MODELS["srgb"]
WIDE = {"COLUMNS": "200"}  # rich tables squeeze columns to 80 characters without a terminal


def run_subprocess(*args: object, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m n2ncli ARGS`` in a child process (inherits the test's N2N_HOME)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **WIDE}
    return subprocess.run([sys.executable, "-m", "n2ncli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (peak 255) of two uint8 images, computed here independently of n2ncli.metrics."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10.0 * math.log10(255.0**2 / mse)


def _quantize(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def _noisy_u8(clean: np.ndarray, seed: int, sigma: float = 25.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return _quantize(clean / 255.0 + rng.normal(0.0, sigma / 255.0, clean.shape))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _flat(text: str) -> str:
    """Text without whitespace: rich wraps long lines (paths) at 80 columns without a terminal."""
    return "".join(text.split())


@pytest.fixture
def photo(tmp_path: Path, kodak_crop: Callable[..., np.ndarray]) -> Path:
    """A small noisy 8-bit PNG (48x64 Kodak crop, sigma 25)."""
    path = tmp_path / "photo.png"
    Image.fromarray(_noisy_u8(kodak_crop(200, 300, 48, 64), seed=3)).save(path)
    return path


# ----------------------------------------------------------------------------- denoise


@pytest.mark.slow
def test_denoise_end_to_end_gains_4_db(tmp_path: Path, kodak_crop: Callable[..., np.ndarray]) -> None:
    clean = kodak_crop(0, 0, 192, 192)
    noisy = _noisy_u8(clean, seed=25)
    Image.fromarray(noisy).save(tmp_path / "noisy.png")

    proc = run_subprocess("denoise", "noisy.png", "-o", "out.png", cwd=tmp_path)

    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "wrote out.png" in proc.stderr
    with Image.open(tmp_path / "out.png") as im:
        out = np.asarray(im)
    assert out.shape == clean.shape and out.dtype == np.uint8
    assert _psnr(out, clean) >= _psnr(noisy, clean) + 4.0


@pytest.mark.slow
def test_denoise_self_ensemble_is_at_least_as_good(tmp_path: Path, kodak_crop: Callable[..., np.ndarray]) -> None:
    """--self-ensemble averages 8 flips/rotations: a different output, no worse against the clean crop."""
    clean = kodak_crop(64, 64, 96, 128)
    noisy = _noisy_u8(clean, seed=7)
    Image.fromarray(noisy).save(tmp_path / "noisy.png")

    plain = run_subprocess("denoise", "noisy.png", "-o", "plain.png", cwd=tmp_path)
    ens = run_subprocess("denoise", "noisy.png", "-o", "ens.png", "--self-ensemble", cwd=tmp_path)

    assert plain.returncode == 0 and ens.returncode == 0, ens.stderr
    assert "self-ensemble" in ens.stderr
    with Image.open(tmp_path / "plain.png") as a, Image.open(tmp_path / "ens.png") as b:
        out_plain, out_ens = np.asarray(a), np.asarray(b)
    assert not np.array_equal(out_plain, out_ens)
    assert _psnr(out_ens, clean) >= _psnr(out_plain, clean) - 0.05


@pytest.mark.slow
def test_denoise_ctrl_c_exits_130_and_leaves_no_output(tmp_path: Path) -> None:
    """Ctrl-C mid-image: exit code 130, a message, and no output or temp file left behind."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (1200, 1600, 3), dtype=np.uint8)).save(tmp_path / "big.png")
    env = {**os.environ, "OMP_NUM_THREADS": "1", **WIDE}
    proc = subprocess.Popen([sys.executable, "-m", "n2ncli", "denoise", "big.png", "-o", "out.png", "--tile", "256"],
                            cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stderr is not None
    line = proc.stderr.readline()  # "model ... on ...; 1 image(s)": the network is about to run
    assert "model" in line, line
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]

    assert proc.returncode == 130, err
    assert "interrupted after 0 of 1 file(s)" in err and "Traceback" not in err
    assert "run the same command again with --skip-existing" in err and err.count("interrupted") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.png"]


BAD_INPUTS = [
    pytest.param(lambda d: ["denoise", d / "missing.png"], "file not found", id="missing-file"),
    pytest.param(lambda d: ["denoise", d / "notes.png", "-o", d / "out.png"], "not a PNG, JPEG, TIFF, HEIF/HEIC, AVIF or WebP image",
                 id="text-named-png"),
    pytest.param(lambda d: ["denoise", d / "photo.png", "--model", "no-such-model"], "unknown model 'no-such-model'",
                 id="unknown-model"),
    pytest.param(lambda d: ["denoise", d / "photo.png", "--tile", "30"], "--tile must be 0", id="tile-30"),
    pytest.param(lambda d: ["denoise", d / "photo.png", "--device", "cuda"], "no CUDA GPU",
                 id="device-cuda", marks=pytest.mark.skipif(torch.cuda.is_available(), reason="has CUDA")),
    pytest.param(lambda d: ["eval", "--noise", "speckle9"], "unknown noise 'speckle9'", id="eval-noise"),
    pytest.param(lambda d: ["eval", "--dataset", "nope"], "unknown dataset 'nope'", id="eval-dataset"),
    pytest.param(lambda d: ["fit", d, "--noise", "speckle9"], "unknown noise 'speckle9'", id="fit-noise"),
    pytest.param(lambda d: ["fit", d / "empty"], "no images (PNG, JPEG, TIFF, HEIC, AVIF, WebP)", id="fit-empty-folder"),
    pytest.param(lambda d: ["models", "show", "nope"], "unknown model 'nope'", id="models-show-unknown"),
    pytest.param(lambda d: ["models", "show", "[red]x[/]"], "unknown model '[red]x[/]'", id="brackets-kept"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS)
def test_bad_input_exits_1_with_one_line(n2n: Callable[..., Run], tmp_path: Path, photo: Path,
                                         args: Callable[[Path], list[object]], message: str) -> None:
    (tmp_path / "notes.png").write_text("this is not an image\n")
    (tmp_path / "empty").mkdir()

    run = n2n(*args(tmp_path))

    assert run.code == 1
    assert message in error_line(run)
    assert not (tmp_path / "out.png").exists()


def test_bad_input_in_a_real_process(tmp_path: Path) -> None:
    proc = run_subprocess("denoise", "missing.png", cwd=tmp_path)

    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: missing.png: file not found"]


@pytest.mark.parametrize("args", [["denoise", "--bogus", "x.png"], ["fit"], ["frobnicate"]],
                         ids=["unknown-option", "missing-argument", "unknown-command"])
def test_usage_error_exits_2(n2n: Callable[..., Run], args: list[str]) -> None:
    run = n2n(*args)

    assert run.code == 2
    assert "Traceback" not in run.err and "Usage" in run.err + run.out


def test_no_arguments_shows_help(n2n: Callable[..., Run]) -> None:
    run = n2n()

    assert run.code in (0, 2)
    assert "Usage" in run.out + run.err and "denoise" in run.out + run.err


def test_existing_output_is_kept_without_overwrite(n2n: Callable[..., Run], tmp_path: Path, photo: Path,
                                                   one_thread: None) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"precious")

    run = n2n("denoise", photo, "-o", target)

    assert run.code == 1 and "--overwrite" in error_line(run)
    assert target.read_bytes() == b"precious"


def test_overwrite_replaces_the_output(n2n: Callable[..., Run], tmp_path: Path, photo: Path,
                                       one_thread: None) -> None:
    target = tmp_path / "out.png"
    target.write_bytes(b"precious")

    run = n2n("denoise", photo, "-o", target, "--overwrite")

    assert run.code == 0, run.err
    with Image.open(target) as im:
        assert im.size == (64, 48) and im.mode == "RGB"


@pytest.mark.parametrize("extra", [[], ["--overwrite"]], ids=["plain", "overwrite"])
def test_input_is_never_overwritten(n2n: Callable[..., Run], photo: Path, extra: list[str]) -> None:
    before = _sha(photo)

    run = n2n("denoise", photo, "-o", photo, *extra)

    assert run.code == 1 and "refusing to overwrite the input" in error_line(run)
    assert _sha(photo) == before


def test_default_output_name(n2n: Callable[..., Run], photo: Path, one_thread: None) -> None:
    run = n2n("denoise", photo)

    assert run.code == 0, run.err
    assert (photo.parent / "photo.n2n.png").is_file()


# ----------------------------------------------------------------------------- models


def test_version() -> None:
    result = CliRunner().invoke(cli.app, ["--version"])

    assert result.exit_code == 0 and result.stdout.strip() == f"n2ncli {__version__}"


def test_models_list_shows_the_shipped_model() -> None:
    result = CliRunner(env=WIDE).invoke(cli.app, ["models", "list"])

    assert result.exit_code == 0
    assert re.search(rf"{SHIPPED}\s.*\sshipped\s", result.stdout)


def test_models_list_names_survive_80_columns() -> None:
    result = CliRunner(env={"COLUMNS": "80"}).invoke(cli.app, ["models", "list"])

    assert SHIPPED in result.stdout


def test_models_show_prints_json_with_the_weights_hash() -> None:
    result = CliRunner().invoke(cli.app, ["models", "show", SHIPPED])

    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["name"] == SHIPPED and data["shipped"] is True and data["kind"] == "srgb"
    assert data["sha256"] == _sha(SHIPPED_DIR / SHIPPED / "weights.pt")


def test_models_path(n2n_home: Path) -> None:
    store = CliRunner().invoke(cli.app, ["models", "path"])
    one = CliRunner().invoke(cli.app, ["models", "path", SHIPPED])

    assert store.stdout.strip() == str(n2n_home / "models")
    assert one.stdout.strip() == str(SHIPPED_DIR / SHIPPED)


def test_shipped_model_cannot_be_removed(n2n: Callable[..., Run]) -> None:
    run = n2n("models", "rm", SHIPPED)

    assert run.code == 1 and "ships with n2ncli" in error_line(run)
    assert (SHIPPED_DIR / SHIPPED / "weights.pt").is_file()


# ----------------------------------------------------------------------------- fit


@pytest.fixture
def train_dir(tmp_path: Path, kodak_crop: Callable[..., np.ndarray]) -> Path:
    """Three noisy 96x128 Kodak crops and one corrupt PNG."""
    folder = tmp_path / "train"
    folder.mkdir()
    for i, image in enumerate(("kodim01.png", "kodim02.png", "kodim03.png")):
        Image.fromarray(_noisy_u8(kodak_crop(100, 100, 96, 128, image=image), seed=i)).save(folder / f"n{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return folder


FIT = ("--steps", "4", "--crop", "64", "--batch-size", "2", "--init", "none")


def test_fit_end_to_end(n2n: Callable[..., Run], train_dir: Path, n2n_home: Path, one_thread: None) -> None:
    run = n2n("fit", train_dir, *FIT, "--name", "t1")

    assert run.code == 0, run.err
    assert "warning:" in run.err and "skipped" + str(train_dir / "broken.png") in _flat(run.err)
    assert "done:modelt1from3image(s),4steps" in _flat(run.err)
    folder = n2n_home / "models" / "t1"
    meta = json.loads((folder / "model.json").read_text())
    assert meta["kind"] == "srgb" and meta["in_channels"] == 3 and meta["name"] == "t1"
    assert meta["training"]["steps"] == 4 and meta["training"]["images"] == 3
    assert meta["training"]["init"] == "none" and meta["training"]["crop"] == 64
    assert meta["sha256"] == _sha(folder / "weights.pt")
    listing = CliRunner(env=WIDE).invoke(cli.app, ["models", "list"])
    assert re.search(r"t1\s.*\syours\s", listing.stdout)


def test_fitted_model_can_be_removed(n2n: Callable[..., Run], train_dir: Path, n2n_home: Path,
                                     one_thread: None) -> None:
    assert n2n("fit", train_dir, *FIT, "--name", "t3").code == 0

    run = n2n("models", "rm", "t3")

    assert run.code == 0, run.err
    assert not (n2n_home / "models" / "t3").exists()
    assert n2n("models", "show", "t3").code == 1


def test_fit_refuses_an_existing_name(n2n: Callable[..., Run], train_dir: Path, one_thread: None) -> None:
    assert n2n("fit", train_dir, *FIT, "--name", "t4").code == 0

    run = n2n("fit", train_dir, *FIT, "--name", "t4")

    assert run.code == 1 and "exists already" in error_line(run)


@pytest.mark.slow
def test_fit_interrupted_then_resumed(tmp_path: Path, train_dir: Path, n2n_home: Path) -> None:
    """Ctrl-C once a checkpoint exists: exit 130 and a hint; --resume then finishes the run."""
    options = ("fit", train_dir, "--steps", "16", "--checkpoint-every", "2", "--crop", "64",
               "--batch-size", "2", "--init", "none", "--name", "t2")
    checkpoint = n2n_home / "runs" / "t2" / "checkpoint.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", **WIDE}
    proc = subprocess.Popen([sys.executable, "-m", "n2ncli", *map(str, options)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert checkpoint.exists(), "no checkpoint appeared"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert proc.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err
    stopped = int(re.search(r"interruptedatstep(\d+)/16", _flat(err)).group(1))
    assert 2 <= stopped < 16
    assert torch.load(checkpoint, weights_only=True)["step"] == stopped
    assert not (n2n_home / "models" / "t2").exists()

    resumed = run_subprocess("--verbose", *options, "--resume", cwd=tmp_path)

    assert resumed.returncode == 0, resumed.stderr
    saved_at = [int(n) for n in re.findall(r"checkpointatstep(\d+):", _flat(resumed.stderr))]
    assert saved_at and min(saved_at) > stopped, "the resumed run started over instead of continuing"
    meta = json.loads((n2n_home / "models" / "t2" / "model.json").read_text())
    assert meta["training"]["steps"] == 16 and meta["training"]["init"] == "none"


def test_denoise_folder_goes_on_past_a_broken_file(n2n: Callable[..., Run], tmp_path: Path, photo: Path) -> None:
    """A broken file and a dangling link are reported and counted; the others are written; exit 1."""
    folder = tmp_path / "shots"
    folder.mkdir()
    (folder / "IMG_1.png").write_bytes(photo.read_bytes())
    with Image.open(photo) as im:
        im.save(folder / "IMG_1.tiff")  # same stem, another format: both written under --format
    (folder / "broken.png").write_bytes(b"not a png at all")
    (folder / "gone.png").symlink_to(tmp_path / "nowhere.png")

    run = n2n("denoise", folder, "-o", tmp_path / "out", "--format", "png", "--tile", "0")

    assert run.code == 1, run.err
    assert "Traceback" not in run.err and "internal error" not in run.err
    flat = _flat(run.err)
    assert _flat(f"error: {folder / 'broken.png'}") in flat and _flat(f"{folder / 'gone.png'}: dangling symlink") in flat
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["IMG_1.png.n2n.png", "IMG_1.tiff.n2n.png"]
    assert "wrote 2" in run.err and "failed 2" in run.err


def test_overwrite_with_skip_existing_is_refused(n2n: Callable[..., Run], photo: Path, tmp_path: Path) -> None:
    run = n2n("denoise", photo, "-o", tmp_path / "out.png", "--overwrite", "--skip-existing")
    assert run.code == 1 and "contradict each other" in error_line(run)
    assert not (tmp_path / "out.png").exists()


def test_denoise_one_broken_file_is_one_error_line(n2n: Callable[..., Run], tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"not a png at all")

    run = n2n("denoise", tmp_path / "broken.png", "-o", tmp_path / "out.png")

    assert run.code == 1
    assert "broken.png" in error_line(run)
    assert not (tmp_path / "out.png").exists()


# ----------------------------------------------------------------------------- eval


@pytest.fixture(scope="module")
def shipped_predictor() -> TorchPredictor:
    record = read_record(SHIPPED_DIR / SHIPPED, shipped=True)
    return TorchPredictor(build_model(record), "cpu", precision="fp32")  # as eval: bf16 CPUs would differ


def _read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _protocol_noisy(clean_u8: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gaussian sigma 25 as the paper's protocol: float32 image / 255, noise in float64, not clipped."""
    clean = (clean_u8.astype(np.float32) / 255.0).astype(np.float64)
    return (clean + rng.normal(0.0, 25.0 / 255.0, clean.shape)).astype(np.float32)


def _official_predict(predictor: TorchPredictor, noisy: np.ndarray) -> np.ndarray:
    """The official test code's inference, by hand: reflect-pad to a square of side
    ceil(max(H, W) / 32) * 32 on the bottom/right, run the network, crop back."""
    h, w = noisy.shape[:2]
    side = -(-max(h, w) // 32) * 32
    padded = np.pad(noisy, ((0, side - h), (0, side - w), (0, 0)), mode="reflect")
    return predictor.predict(padded[None])[0, :h, :w]


@pytest.mark.slow
def test_eval_kodak_matches_an_independent_computation(tmp_path: Path, shared_data: Path, one_thread: None,
                                                       shipped_predictor: TorchPredictor) -> None:
    kodak24 = shared_data / "kodak24"
    report = tmp_path / "out.json"

    # torch, as shipped_predictor: ONNX Runtime's fp32 differs in the last bits and can flip a quantised pixel
    result = CliRunner(env=WIDE).invoke(cli.app, [
        "eval", "--dataset", "kodak", "--data-dir", str(kodak24), "--noise", "gaussian25", "--limit", "2",
        "--repeats", "1", "--backend", "torch", "--device", "cpu", "--json", str(report)])

    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["model"] == SHIPPED and data["seed"] == 101
    assert data["summary"]["images"] == 2 and data["summary"]["repeats"] == 1
    scores = {s["name"]: s for s in data["images"]}
    assert sorted(scores) == ["kodim01.png", "kodim02.png"]
    rng = np.random.default_rng(101)
    for name in ("kodim01.png", "kodim02.png"):  # the draw order: image by image, repeat by repeat
        clean = _read_rgb(kodak24 / name)
        noisy = _protocol_noisy(clean, rng)
        assert scores[name]["noisy_psnr"] == pytest.approx(_psnr(_quantize(noisy), clean), abs=1e-6)
        if name == "kodim01.png":  # one full-size network run suffices to check the pipeline
            est = _official_predict(shipped_predictor, noisy)
            assert scores[name]["psnr"] == pytest.approx(_psnr(_quantize(est), clean), abs=1e-6)
        assert scores[name]["psnr"] > scores[name]["noisy_psnr"] + 8.0


def test_eval_on_a_folder(tmp_path: Path, kodak_crop: Callable[..., np.ndarray], one_thread: None,
                          shipped_predictor: TorchPredictor) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    crops = {"a.png": kodak_crop(100, 100, 64, 96, image="kodim03.png"),
             "b.png": kodak_crop(200, 300, 64, 96, image="kodim04.png")}
    for name, crop in crops.items():
        Image.fromarray(crop).save(folder / name)
    report = tmp_path / "out.json"

    result = CliRunner(env=WIDE).invoke(cli.app, [  # torch, as shipped_predictor (see above)
        "eval", "--dataset", str(folder), "--noise", "gaussian25", "--backend", "torch", "--device", "cpu",
        "--json", str(report)])

    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["summary"]["dataset"] == "mine" and data["summary"]["repeats"] == 1
    assert data["summary"]["paper_psnr"] is None
    rng = np.random.default_rng(101)
    for score, (name, clean) in zip(data["images"], crops.items()):
        noisy = _protocol_noisy(clean, rng)
        est = _official_predict(shipped_predictor, noisy)
        assert score["name"] == name
        assert score["noisy_psnr"] == pytest.approx(_psnr(_quantize(noisy), clean), abs=1e-6)
        assert score["psnr"] == pytest.approx(_psnr(_quantize(est), clean), abs=1e-6)
