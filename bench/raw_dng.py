"""Seconds and bytes of the raw outputs alone: a 24-megapixel raw to a lossless DNG, an
uncompressed DNG and a 16-bit TIFF, through a model that returns its input.

    python bench/raw_dng.py [--width 6000 --height 4000] [--repeats 3]

Builds the synthetic 6000x4000 14-bit RGGB DNG of bench/raw_denoise.py (the colour chart of
../shared/data/raw/colorchart.dng mirrored to size, plus Poisson-Gaussian noise; written
uncompressed), then times, best of ``--repeats``:

* end to end, ``run_job`` with an identity model (tests/identity.py) as `n2n denoise` runs it:
  LibRaw's decode, normalising and packing, the "network" (a copy), unpacking, writing (LibRaw's
  AHD development first for the TIFF);
* writing alone: ``write_dng`` of the mosaic (both compressions), ``write_image`` of the
  developed 16-bit image (deflate strips).

Prints the machine, the seconds and the file sizes. Run it on a quiet machine: the timings are
CPU-bound and another job on the cores changes them.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # synthetic_raw and identity: the tests' DNG maker and model
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_of, cpu_name  # noqa: E402
from identity import Identity  # noqa: E402
from raw_denoise import big_mosaic  # noqa: E402
from synthetic_raw import bayer_dng  # noqa: E402

from n2ncli.denoise import OutputSettings, TileOptions, run_job  # noqa: E402
from n2ncli.io.dng import write_dng  # noqa: E402
from n2ncli.io.image import write_image  # noqa: E402
from n2ncli.io.raw import read_raw, render  # noqa: E402
from n2ncli.jobs import Job  # noqa: E402

OUTPUTS = (("lossless DNG", ".dng", "lossless"), ("uncompressed DNG", ".dng", "none"), ("16-bit TIFF", ".tif", None))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=6000)
    ap.add_argument("--height", type=int, default=4000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        big = folder / "big.dng"
        mosaic = bayer_dng(big, "RGGB", black=2056, white=16383, mosaic=big_mosaic(args.height, args.width))
        print(f"{cpu_name()}, {os.cpu_count()} logical CPUs, load average {os.getloadavg()[0]:.2f}; "
              f"{args.width}x{args.height} ({mosaic.size / 1e6:.1f} MP) 14-bit RGGB DNG, uncompressed "
              f"{big.stat().st_size / 1e6:.1f} MB; best of {args.repeats}")
        identity = Identity(channels=4)
        for label, ext, compression in OUTPUTS:
            out = folder / f"out-{compression or 'tif'}{ext}"
            writing = OutputSettings(software="n2ncli bench", record={"model": "identity"},
                                     dng_compression=compression or "lossless")
            seconds = best_of(lambda: run_job(Job(big, out), identity, TileOptions(tile=0), writing=writing),
                              args.repeats)
            print(f"  -> {label:17s} {seconds:6.2f} s end to end, {out.stat().st_size / 1e6:7.1f} MB")
        for label, _, compression in OUTPUTS[:2]:
            out = folder / f"alone-{compression}.dng"
            seconds = best_of(lambda: write_dng(out, mosaic, big, software="n2ncli bench", record=None,
                                                compression=compression), args.repeats)
            print(f"  write_dng, {label:17s} {seconds:6.2f} s")
        rgb = render(read_raw(big), mosaic)
        out = folder / "alone.tif"
        seconds = best_of(lambda: write_image(out, rgb), args.repeats)
        print(f"  write_image, 16-bit TIFF {seconds:6.2f} s ({rgb.shape[1]}x{rgb.shape[0]}x3, "
              f"{out.stat().st_size / 1e6:.1f} MB)")
        assert np.array_equal(read_raw(folder / "out-lossless.dng").mosaic, mosaic)  # the same mosaic came back


if __name__ == "__main__":
    main()
