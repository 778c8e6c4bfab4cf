"""`n2n eval --json/--csv` contents, from real scores of Kodak crops (identity "denoiser")."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from identity import Identity
from n2ncli.eval_output import results_csv, results_json, write_results
from n2ncli.evaluate import EvalResult, evaluate
from n2ncli.noise import parse_noise


@pytest.fixture
def runs(kodak_crop: Callable[..., np.ndarray]) -> list[EvalResult]:
    """Two runs on two crops: gaussian25 x 2 repeats with a baseline, poisson30 x 1 without."""
    images = [("a.png", kodak_crop(100, 100, 24, 32)), ("b.png", kodak_crop(300, 500, 24, 32, image="kodim05.png"))]
    return [evaluate(Identity(), images, parse_noise("gaussian25"), dataset="kodak", repeats=2,
                     baselines={"self-ensemble": Identity()}),
            evaluate(Identity(), images, parse_noise("poisson30"), dataset="kodak", repeats=1)]


def test_json_of_one_run_has_its_summary_at_the_top_too(runs: list[EvalResult]) -> None:
    data = json.loads(results_json(runs[:1], model="m", seed=7))

    assert data["model"] == "m" and data["seed"] == 7
    assert data["summary"] == runs[0].summary() and data["summary"]["paper_psnr"] == 32.08
    assert data["images"] == data["runs"][0]["images"]
    assert [(s["name"], s["repeat"]) for s in data["images"]] == [
        ("a.png", 0), ("a.png", 1), ("b.png", 0), ("b.png", 1)]
    assert data["images"][1]["psnr"] == runs[0].scores[1].psnr
    assert data["images"][1]["baselines"]["self-ensemble"]["ssim"] == runs[0].scores[1].ssim


def test_json_of_several_runs_lists_them_in_order(runs: list[EvalResult]) -> None:
    text = results_json(runs, model="m", seed=101)

    data = json.loads(text)
    assert text.endswith("}\n") and "summary" not in data and "images" not in data
    assert [r["summary"]["noise"] for r in data["runs"]] == ["gaussian25", "poisson30"]
    assert [len(r["images"]) for r in data["runs"]] == [4, 2]


def test_csv_has_a_row_per_draw_and_blank_baselines_where_a_run_had_none(runs: list[EvalResult]) -> None:
    rows = list(csv.reader(io.StringIO(results_csv(runs))))

    assert rows[0] == ["dataset", "noise", "image", "repeat", "noisy_psnr", "noisy_ssim", "psnr", "ssim",
                       "self-ensemble_psnr", "self-ensemble_ssim"]
    assert [r[1:4] for r in rows[1:]] == [["gaussian25", "a.png", "0"], ["gaussian25", "a.png", "1"],
                                          ["gaussian25", "b.png", "0"], ["gaussian25", "b.png", "1"],
                                          ["poisson30", "a.png", "0"], ["poisson30", "b.png", "0"]]
    first = runs[0].scores[0]
    assert [float(v) for v in rows[1][4:]] == [first.noisy_psnr, first.noisy_ssim, first.psnr, first.ssim,
                                                first.psnr, first.ssim]  # identity baseline = the model
    assert rows[-1][8:] == ["", ""]


def test_write_results_writes_exactly_the_files_asked_for(runs: list[EvalResult], tmp_path: Path) -> None:
    write_results(runs, model="m", seed=1, json_path=tmp_path / "r.json", csv_path=tmp_path / "r.csv")
    write_results(runs, model="m", seed=1, csv_path=tmp_path / "only.csv")

    assert (tmp_path / "r.json").read_text() == results_json(runs, model="m", seed=1)
    assert (tmp_path / "r.csv").read_text() == results_csv(runs) == (tmp_path / "only.csv").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["only.csv", "r.csv", "r.json"]  # no temp files left
