"""Folder denoise, serial (``run_job`` one by one) against pipelined (``run_jobs``: decoding and
encoding in worker threads beside the network), on the same files and predictor.

    python bench/pipeline.py [--images 6] [--threads N] [--backend onnx] [--tile 512] [--format png]

Reads Kodak images from ../shared/data/kodak24, writes outputs to a temp folder, checks the two
runs wrote the same bytes and prints wall times. Alternates serial and pipelined runs and keeps
the best of ``--reps`` of each, the least disturbed by other load.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_name  # noqa: E402
from n2ncli.backends.onnx import physical_cores  # noqa: E402
from n2ncli.backends.select import describe, make_predictor  # noqa: E402
from n2ncli.denoise import TileOptions, run_job, run_jobs  # noqa: E402
from n2ncli.jobs import plan_jobs  # noqa: E402
from n2ncli.store import default_model  # noqa: E402

KODAK = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak24"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--threads", type=int, default=physical_cores())
    ap.add_argument("--backend", default="onnx")
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--format", default="png")
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp())
    src = tmp / "src"
    src.mkdir()
    for i in range(1, args.images + 1):
        shutil.copyfile(KODAK / f"kodim{i:02d}.png", src / f"kodim{i:02d}.png")
    predictor = make_predictor(default_model("srgb"), args.backend, "cpu")
    options = TileOptions(tile=args.tile)
    times: dict[str, float] = {"serial": float("inf"), "pipelined": float("inf")}
    digests: dict[str, dict[str, str]] = {}
    for rep in range(args.reps):
        for mode in times:
            out = tmp / f"{mode}{rep}"
            out.mkdir()
            jobs = plan_jobs([src], out, suffix="." + args.format)
            t = time.perf_counter()
            if mode == "serial":
                for job in jobs:
                    run_job(job, predictor, options)
            else:
                run_jobs(jobs, predictor, options)
            times[mode] = min(times[mode], time.perf_counter() - t)
            digests[mode] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()}
    same = digests["serial"] == digests["pipelined"]
    print(f"{cpu_name()}, {describe(predictor)}, {args.threads} threads, {args.images} Kodak images "
          f"-> {args.format}, tile {args.tile}, best of {args.reps}")
    print(f"serial {times['serial']:.2f} s, pipelined {times['pipelined']:.2f} s "
          f"({times['serial'] / times['pipelined']:.2f}x); identical outputs: {same}")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
