"""The CPU default against this CPU's ceilings, in one run: what `n2n denoise` does by default.

Prints, measured here and now:
- the matrix-product ceilings: torch 4096^3 products in fp32 and bf16 (GFLOP/s);
- whether this CPU has bf16 units (``n2ncli.device.cpu_has_native_bf16``) and so what the
  default precision is;
- start-up: `n2n --help`, and a one-image denoise of a 256x256 PNG with the ONNX file cached;
- the default `n2n denoise` of a 12 MP noisy PNG end to end (a real subprocess: decode, tiles,
  network, encode), as MP/s and as GFLOP/s of the network's own arithmetic, with its share of
  the bf16 and fp32 ceilings;
- the same image through each CPU path side by side (ONNX Runtime fp32, PyTorch fp32 and bf16
  channels_last), network only, with the PSNR difference of each against fp32.

    python bench/cpu_default.py [--megapixels 12] [--repeats 2]

Timings are best-of-N wall clock; nothing is written outside a temp folder.
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
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_of, cpu_name  # noqa: E402
from n2ncli.backends.select import describe, make_predictor  # noqa: E402
from n2ncli.denoise import TileOptions, denoise_array  # noqa: E402
from n2ncli.device import cpu_has_native_bf16  # noqa: E402
from n2ncli.io.image import write_image  # noqa: E402
from n2ncli.metrics import psnr  # noqa: E402
from n2ncli.nets.unet import gflop_per_megapixel  # noqa: E402
from n2ncli.store import default_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def matmul_gflops(dtype: torch.dtype, n: int = 4096, repeats: int = 3) -> float:
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)  # warm-up
    seconds = best_of(lambda: torch.mm(a, b), repeats)
    return 2 * n**3 / seconds / 1e9


def n2n_seconds(*args: str, cwd: Path, env: dict[str, str], repeats: int) -> float:
    def once() -> None:
        subprocess.run([sys.executable, "-m", "n2ncli", *args], cwd=cwd, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    return best_of(once, repeats)


def noisy_photo(megapixels: float, seed: int = 0) -> np.ndarray:
    """A Kodak photo tiled to the size asked, with sigma-15 noise (float32 in [0, 1])."""
    from n2ncli.io.image import read_image

    base = read_image(ROOT.parent / "shared/data/kodak24/kodim05.png").to_float()
    side = int((megapixels * 1e6 * 4 / 3) ** 0.5)
    h, w = side * 3 // 4, side
    reps = (-(-h // base.shape[0]), -(-w // base.shape[1]), 1)
    clean = np.tile(base, reps)[:h, :w]
    rng = np.random.default_rng(seed)
    return np.clip(clean + rng.normal(0, 15 / 255, clean.shape), 0, 1).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--megapixels", type=float, default=12.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--matmul", type=int, default=4096, help="side of the square matrix products (smaller on CPUs that emulate bf16)")
    args = ap.parse_args()
    threads = torch.get_num_threads()
    print(f"{cpu_name()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, {threads} threads")
    fp32_peak, bf16_peak = matmul_gflops(torch.float32, args.matmul), matmul_gflops(torch.bfloat16, args.matmul)
    native = cpu_has_native_bf16()
    print(f"matrix products {args.matmul}^3: fp32 {fp32_peak:.0f} GFLOP/s, bf16 {bf16_peak:.0f} GFLOP/s; "
          f"bf16 units: {'yes' if native else 'no'} -> default precision {'bf16' if native else 'fp32'}")

    record = default_model("srgb")
    image = noisy_photo(args.megapixels)
    mp = image.shape[0] * image.shape[1] / 1e6
    gflop = gflop_per_megapixel(record.in_channels) * mp
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env = {**os.environ, "N2N_HOME": str(folder / "home")}
        write_image(folder / "big.png", image, bit_depth=8)
        write_image(folder / "small.png", image[:256, :256], bit_depth=8)
        n2n_seconds("denoise", "small.png", "-o", "warm.png", "--overwrite", cwd=folder, env=env, repeats=1)
        help_s = n2n_seconds("--help", cwd=folder, env=env, repeats=args.repeats)
        small_s = n2n_seconds("denoise", "small.png", "-o", "s.png", "--overwrite", cwd=folder, env=env,
                              repeats=args.repeats)
        big_s = n2n_seconds("denoise", "big.png", "-o", "b.png", "--overwrite", cwd=folder, env=env,
                            repeats=args.repeats)
    print(f"start-up: `n2n --help` {help_s:.2f} s; a 256x256 denoise (ONNX file cached) {small_s:.2f} s")
    rate = gflop / big_s
    print(f"default `n2n denoise` (Gaussian noise: {record.name}) of a {mp:.1f} MP PNG end to end: {big_s:.1f} s, "
          f"{mp / big_s:.3f} MP/s, {rate:.0f} GFLOP/s of network arithmetic = {rate / bf16_peak:.0%} of the bf16 "
          f"ceiling, {rate / fp32_peak:.0%} of the fp32 ceiling")

    print("\nnetwork only, the same image, whole-image tiles of the default size (best of "
          f"{args.repeats}):")
    print("| path | s | MP/s | PSNR vs fp32 |")
    print("| --- | --- | --- | --- |")
    reference = None
    for label, backend, precision in (("ONNX Runtime fp32", "onnx", "auto"), ("PyTorch fp32", "torch", "fp32"),
                                      ("PyTorch bf16 (fp32 head)", "torch", "bf16")):
        predictor = make_predictor(record, backend, "cpu", [], precision=precision)
        options = TileOptions(tile=1024, overlap=32)
        out = denoise_array(image, predictor, options)
        seconds = best_of(lambda p=predictor: denoise_array(image, p, options), args.repeats)
        if reference is None:
            reference = out
        diff = "—" if out is reference else f"{psnr(reference, out, peak=1.0):.1f} dB"
        print(f"| {label} ({describe(predictor)}) | {seconds:.1f} | {mp / seconds:.3f} | {diff} |", flush=True)


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"\n({time.perf_counter() - t0:.0f} s in all)")
