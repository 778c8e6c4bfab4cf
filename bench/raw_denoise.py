"""Seconds and peak memory for one 24-megapixel raw, end to end through `n2n denoise`.

    python bench/raw_denoise.py [--width 6000 --height 4000] [--backends auto,torch] [--outputs tif,dng]

Builds a synthetic 6000x4000 RGGB DNG (14-bit, the colour chart of ../shared/data/raw/colorchart.dng
mirrored to size, plus Poisson-Gaussian noise), fits a 1-step raw model into a temporary store
(the weights do not change the speed), then times `n2n denoise big.dng -o out.EXT` in a fresh
process per run: reading, packing, the network on the packed 3000x2000x4 grid, unpacking and
writing (LibRaw's development for TIFF). Prints seconds, peak RSS and the machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # synthetic_raw: the tests' DNG maker
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_name  # noqa: E402
from n2ncli.io.raw import read_raw  # noqa: E402
from synthetic_raw import bayer_dng  # noqa: E402

CHART = ROOT.parent / "shared" / "data" / "raw" / "colorchart.dng"
#: Runs the CLI in this process and prints its own peak RSS last on stderr.
PEAK_RSS_WRAPPER = """
import resource, sys
from n2ncli.cli import main
sys.argv = sys.argv[1:]
try:
    main()
except SystemExit as exc:
    if exc.code:
        raise
finally:
    print(f"peak_rss_kb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}", file=sys.stderr)
"""


def big_mosaic(height: int, width: int, seed: int = 0) -> np.ndarray:
    """The chart's visible RGGB mosaic mirrored (by whole cells) to height x width, with noise."""
    raw = read_raw(CHART)
    cells = raw.visible[: raw.height // 2 * 2, : raw.width // 2 * 2]
    reps = (-(-height // cells.shape[0]), -(-width // cells.shape[1]))
    tiled = np.tile(cells, reps)[:height, :width].astype(np.float64)
    rng = np.random.default_rng(seed)
    signal = np.clip(tiled - 2056, 0, None)
    noisy = rng.poisson(signal / 4.0) * 4.0 + rng.normal(0, 6.0, tiled.shape) + 2056
    return np.clip(np.rint(noisy), 0, 16383).astype(np.uint16)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=6000)
    ap.add_argument("--height", type=int, default=4000)
    ap.add_argument("--backends", default="auto,torch")
    ap.add_argument("--outputs", default="tif,dng")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        env = {**os.environ, "N2N_HOME": str(tmp_path / "home")}
        big = tmp_path / "big.dng"
        bayer_dng(big, "RGGB", black=2056, white=16383, mosaic=big_mosaic(args.height, args.width))
        subprocess.run([sys.executable, "-m", "n2ncli", "fit", str(CHART), "--name", "bench-raw", "--steps", "1",
                        "--crop", "64", "--init", "none"], env=env, check=True, capture_output=True)
        print(f"{cpu_name()}, {os.cpu_count()} logical CPUs; {args.width}x{args.height} "
              f"({args.width * args.height / 1e6:.1f} MP) 14-bit RGGB DNG, {big.stat().st_size / 1e6:.0f} MB")
        for backend in args.backends.split(","):
            for ext in args.outputs.split(","):
                out = tmp_path / f"out.{ext}"
                argv = ["n2n", "denoise", str(big), "-o", str(out), "--backend", backend, "--overwrite"]
                t = time.perf_counter()
                proc = subprocess.run([sys.executable, "-c", PEAK_RSS_WRAPPER, *argv], env=env,
                                      capture_output=True, text=True)
                seconds = time.perf_counter() - t
                if proc.returncode:
                    raise SystemExit(proc.stderr)
                peak_kb = int(proc.stderr.strip().splitlines()[-1].removeprefix("peak_rss_kb="))
                print(f"  backend {backend:5s} -> .{ext}: {seconds:6.1f} s end to end, peak RSS "
                      f"{peak_kb / 1024:.0f} MB, output {out.stat().st_size / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
