"""`n2n eval --json/--csv`: evaluation results as JSON and CSV text, and their atomic writes.

The JSON holds every run (summary and per-image scores) under ``runs``, and for a single run
the same at the top level too; the CSV has one row per image and noise draw.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

from n2ncli.evaluate import EvalResult
from n2ncli.fsutil import atomic_write_text

_METRICS = ("psnr", "ssim")


def _methods(results: Sequence[EvalResult]) -> list[str]:
    return list(dict.fromkeys(m for r in results for m in r.methods))


def results_json(results: Sequence[EvalResult], *, model: str, seed: int) -> str:
    """The ``--json`` document: model, seed, and each run's summary and image scores."""
    runs = [{"summary": r.summary(), "images": [vars(s) for s in r.scores]} for r in results]
    payload: dict = {"model": model, "seed": seed}
    if len(runs) == 1:
        payload.update(runs[0])
    payload["runs"] = runs
    return json.dumps(payload, indent=2) + "\n"


def results_csv(results: Sequence[EvalResult]) -> str:
    """The ``--csv`` table: a row per image and draw; baseline columns ``METHOD_psnr``, ``METHOD_ssim``."""
    methods = _methods(results)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["dataset", "noise", "image", "repeat", "noisy_psnr", "noisy_ssim", "psnr", "ssim",
                     *(f"{m}_{k}" for m in methods for k in _METRICS)])
    for r in results:
        for s in r.scores:
            extra = [s.baselines.get(m, {}).get(k, "") for m in methods for k in _METRICS]
            writer.writerow([r.dataset, r.noise, s.name, s.repeat, s.noisy_psnr, s.noisy_ssim, s.psnr, s.ssim, *extra])
    return buffer.getvalue()


def write_results(results: Sequence[EvalResult], *, model: str, seed: int, json_path: Path | None = None,
                  csv_path: Path | None = None) -> None:
    """Write the JSON and/or CSV files asked for, each atomically (a crash leaves no half file)."""
    if json_path:
        atomic_write_text(json_path, results_json(results, model=model, seed=seed))
    if csv_path:
        atomic_write_text(csv_path, results_csv(results))
