"""`n2n eval` end to end on tiny Kodak crops: noise lists, baselines, real pairs, --fit-first, outputs."""

from __future__ import annotations

import csv
import importlib.machinery
import json
import math
import sys
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from n2ncli import cli
from n2ncli.noise import PRESETS

WIDE = {"COLUMNS": "200"}


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10.0 * math.log10(255.0**2 / mse)


@pytest.fixture
def clean_dir(tmp_path: Path, kodak_crop: Callable[..., np.ndarray]) -> Path:
    """Two 96x128 clean crops."""
    folder = tmp_path / "clean-set"
    folder.mkdir()
    Image.fromarray(kodak_crop(100, 200, 96, 128)).save(folder / "a.png")
    Image.fromarray(kodak_crop(250, 300, 96, 128, image="kodim05.png")).save(folder / "b.png")
    return folder


@pytest.fixture
def pairs_dir(tmp_path: Path, kodak_crop: Callable[..., np.ndarray]) -> Path:
    """noisy/ + clean/ with two 96x128 pairs (noisy: sigma 20, rounded to uint8)."""
    folder = tmp_path / "real"
    for sub in ("noisy", "clean"):
        (folder / sub).mkdir(parents=True)
    rng = np.random.default_rng(5)
    for name, (top, left) in {"x": (100, 200), "y": (300, 400)}.items():
        clean = kodak_crop(top, left, 96, 128)
        noisy = np.clip(clean + rng.normal(0, 20, clean.shape), 0, 255).round().astype(np.uint8)
        Image.fromarray(clean).save(folder / "clean" / f"{name}.png")
        Image.fromarray(noisy).save(folder / "noisy" / f"{name}.png")
    return folder


def _eval(*args: object) -> tuple[int, str]:
    result = CliRunner(env=WIDE).invoke(cli.app, ["eval", "--backend", "torch", "--device", "cpu",
                                                  *map(str, args)])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_noise_all_runs_the_four_presets_and_csv_has_a_row_per_image(clean_dir: Path, tmp_path: Path,
                                                                    one_thread: None) -> None:
    code, output = _eval("--dataset", clean_dir, "--noise", "all", "--limit", "1",
                         "--json", tmp_path / "r.json", "--csv", tmp_path / "r.csv")

    assert code == 0, output
    data = json.loads((tmp_path / "r.json").read_text())
    assert [r["summary"]["noise"] for r in data["runs"]] == list(PRESETS)
    assert "summary" not in data  # top-level summary only for a single run
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert [(r["noise"], r["image"]) for r in rows] == [(n, "a.png") for n in PRESETS]
    for row, run in zip(rows, data["runs"]):
        assert float(row["psnr"]) == pytest.approx(run["images"][0]["psnr"])
    for noise in PRESETS:
        assert noise in output


def test_self_ensemble_column_and_bm3d_skipped_with_a_note(clean_dir: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch, one_thread: None) -> None:
    monkeypatch.setattr("n2ncli.baselines.bm3d_available", lambda: False)

    code, output = _eval("--dataset", clean_dir, "--self-ensemble", "--bm3d", "--json", tmp_path / "r.json")

    assert code == 0, output
    assert "BM3D skipped" in output and "n2ncli[bm3d]" in output
    summary = json.loads((tmp_path / "r.json").read_text())["summary"]
    assert list(summary["baselines"]) == ["self-ensemble"]
    assert summary["baselines"]["self-ensemble"]["psnr"] > summary["noisy_psnr"] + 5
    assert "self-ensemble" in output


def test_bm3d_column_when_the_package_is_present(clean_dir: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch, one_thread: None) -> None:
    calls: list[float] = []
    fake = types.ModuleType("bm3d")
    fake.__spec__ = importlib.machinery.ModuleSpec("bm3d", None)

    def bm3d_rgb(img: np.ndarray, sigma: float) -> np.ndarray:
        calls.append(sigma)
        return img  # a stand-in: "denoised" = noisy

    fake.bm3d_rgb = bm3d_rgb
    monkeypatch.setitem(sys.modules, "bm3d", fake)

    code, output = _eval("--dataset", clean_dir, "--noise", "gaussian:15", "--bm3d", "--json", tmp_path / "r.json")

    assert code == 0, output
    data = json.loads((tmp_path / "r.json").read_text())
    assert calls == [pytest.approx(15 / 255)] * 2  # the known sigma, on the 0-1 scale
    for score in data["images"]:
        assert score["baselines"]["bm3d"]["psnr"] == score["noisy_psnr"]
    assert "BM3D" in output


def test_real_pairs_are_scored_against_their_clean_image(pairs_dir: Path, tmp_path: Path, one_thread: None) -> None:
    code, output = _eval("--pairs", pairs_dir, "--json", tmp_path / "r.json")

    assert code == 0, output
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["summary"]["noise"] == "real" and data["summary"]["images"] == 2
    for score in data["images"]:
        noisy = np.asarray(Image.open(pairs_dir / "noisy" / f"{score['name']}.png"))
        clean = np.asarray(Image.open(pairs_dir / "clean" / f"{score['name']}.png"))
        assert score["noisy_psnr"] == pytest.approx(_psnr(noisy, clean), abs=1e-9)
        assert score["psnr"] > score["noisy_psnr"]


def test_fit_first_fits_on_the_noisy_images_then_scores(pairs_dir: Path, tmp_path: Path, n2n_home: Path,
                                                        one_thread: None) -> None:
    code, output = _eval("--pairs", pairs_dir, "--fit-first", "--fit-steps", "2", "--json", tmp_path / "r.json")

    assert code == 0, output
    meta = json.loads((n2n_home / "models" / "eval-fit-real" / "model.json").read_text())
    assert meta["training"]["steps"] == 2 and meta["training"]["images"] == 2
    assert json.loads((tmp_path / "r.json").read_text())["model"] == "eval-fit-real"


def test_precision_is_fp32_unless_asked_and_verbose_says_why_pytorch_runs(clean_dir: Path, one_thread: None) -> None:
    default = CliRunner(env=WIDE).invoke(cli.app, ["eval", "--dataset", str(clean_dir), "--limit", "1",
                                                   "--device", "cpu"])
    code, output = _eval_verbose("--dataset", clean_dir, "--limit", "1", "--precision", "bf16")

    assert default.exit_code == 0, default.output
    model_line = next(line for line in default.output.splitlines() if line.startswith("model "))
    assert "16" not in model_line  # fp32: ONNX Runtime or PyTorch, no reduced precision named
    assert code == 0, output
    assert "backend auto: PyTorch, for --precision bf16" in output and "on torch cpu bf16" in output


def _eval_verbose(*args: object) -> tuple[int, str]:
    result = CliRunner(env=WIDE).invoke(cli.app, ["--verbose", "eval", "--device", "cpu", *map(str, args)])
    return result.exit_code, result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--fit-first"], "--fit-first needs --pairs"),
    (["--noise", "all,speckle"], "unknown noise 'speckle'"),
    (["--dataset", "kodak,set14", "--data-dir", "."], "--data-dir applies to one dataset"),
    (["--precision", "fp8"], "unknown precision 'fp8'"),
])
def test_bad_eval_options_are_one_line_errors(args: list[str], message: str, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["n2n", "eval", *args])

    with pytest.raises(SystemExit) as info:
        cli.main()

    assert info.value.code == 1
    assert message in capsys.readouterr().err
