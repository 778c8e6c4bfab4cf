"""CPU throughput: denoise megapixels/s (network alone and a 12 MP file end to end) and training steps/s.

    python bench/cpu_throughput.py [--threads N] [--quick]

Prints a table and writes nothing. Timings are best-of-N wall-clock on this machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_of, cpu_name, training_rate  # noqa: E402
from n2ncli.backends.select import make_predictor  # noqa: E402
from n2ncli.backends.torch import TorchPredictor  # noqa: E402
from n2ncli.denoise import TileOptions, run_job  # noqa: E402
from n2ncli.jobs import Job  # noqa: E402
from n2ncli.io.image import write_image  # noqa: E402
from n2ncli.nets.unet import gflop_per_megapixel  # noqa: E402
from n2ncli.store import build_model, default_model  # noqa: E402





def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--quick", action="store_true", help="fewer repeats, smaller end-to-end image")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    reps = 1 if args.quick else 3
    print(f"# {cpu_name()}, {args.threads} threads, torch {torch.__version__}, "
          f"{gflop_per_megapixel():.0f} GFLOP/MP (3 channels)")
    model = build_model(default_model("srgb"))
    rows = []
    for tile in (256, 512, 1024):
        x = np.random.default_rng(0).random((1, tile, tile, 3), dtype=np.float32)
        for cl in (False, True):
            pred = TorchPredictor(model, "cpu", channels_last=cl)
            pred.predict(x)  # warm-up
            t = best_of(lambda: pred.predict(x), reps)
            mp = tile * tile / 1e6
            rows.append((f"network, tile {tile}, {'channels_last' if cl else 'contiguous'}", f"{mp / t:.3f} MP/s",
                         f"{mp * gflop_per_megapixel() / t:.0f} GFLOP/s"))
            print(rows[-1], flush=True)

    h, w = (1500, 2000) if args.quick else (3000, 4000)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.png"
        rng = np.random.default_rng(1)
        base = np.linspace(0, 1, w, dtype=np.float32)[None, :, None] * np.ones((h, 1, 3), np.float32)
        write_image(src, np.clip(base + rng.normal(0, 0.1, (h, w, 3)).astype(np.float32), 0, 1), bit_depth=8)
        opts = TileOptions()
        for backend in ("torch", "onnx"):
            pred = make_predictor(default_model("srgb"), backend, "cpu")
            t = time.perf_counter()
            run_job(Job(src, Path(tmp) / f"out-{backend}.png"), pred, opts)
            t = time.perf_counter() - t
            mp = h * w / 1e6
            rows.append((f"end to end {mp:.0f} MP PNG, --backend {backend} (read, tile {opts.tile}+{opts.context} "
                         "context, write)", f"{mp / t:.3f} MP/s", f"{t:.1f} s"))
            print(rows[-1], flush=True)

    for crop in (128, 256):
        rate = training_rate(crop, steps=6 if args.quick else 12)
        rows.append((f"training, batch 4, crop {crop}", f"{rate:.2f} steps/s", f"{rate * 4:.1f} crops/s"))
        print(rows[-1], flush=True)
    print("\n| measurement | rate | note |\n| --- | --- | --- |")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")


if __name__ == "__main__":
    main()
