"""CPU backends side by side in one run: the network at three tile sizes, a 12 MP photo end to
end, training steps/s, and the machine's own matrix-multiply ceiling to read them against.

    python bench/onnx_vs_torch.py [--threads N] [--tiles 256 512 1024] [--reps 3] [--quick]

Network: megapixels of input per second, best of ``--reps`` after one warm-up, shipped sRGB
model; the fp32 backends must agree to 1e-4. End to end: a 4000x3000 noisy PNG made from
Kodak images, read -> tiles (``--tile auto`` as the CLI picks it) -> PNG, once per backend.
bf16 (PyTorch autocast, fp32 output head) is listed apart: it is lower precision, opt-in.
Ceilings: fp32 GEMM through numpy's BLAS and bf16 GEMM through PyTorch (4096^3, best of 3).
Writes only temp files.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_of, cpu_name, training_rate  # noqa: E402
from n2ncli.backends.onnx import OnnxPredictor, physical_cores  # noqa: E402
from n2ncli.backends.torch import TorchPredictor  # noqa: E402
from n2ncli.denoise import TileOptions, choose_tile, run_job  # noqa: E402
from n2ncli.jobs import Job  # noqa: E402
from n2ncli.export import export_onnx  # noqa: E402
from n2ncli.io.image import write_image  # noqa: E402
from n2ncli.nets.unet import gflop_per_megapixel  # noqa: E402
from n2ncli.store import build_model, default_model  # noqa: E402

KODAK = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak24"
FP32 = ("torch eager (NCHW)", "torch channels_last", "ONNX Runtime fp32")
BF16 = "torch bf16 autocast"


def gemm_ceilings(n: int = 4096) -> dict[str, float]:
    """GFLOP/s of one n x n x n matrix product: fp32 via numpy's BLAS, bf16 via PyTorch."""
    out = {}
    a, b = (np.random.default_rng(i).random((n, n), dtype=np.float32) for i in (0, 1))
    out["fp32 GEMM (numpy BLAS)"] = 2 * n**3 / 1e9 / best_of(lambda: a @ b, 3)
    ta, tb = torch.from_numpy(a).bfloat16(), torch.from_numpy(b).bfloat16()
    torch.mm(ta, tb)
    out["bf16 GEMM (PyTorch)"] = 2 * n**3 / 1e9 / best_of(lambda: torch.mm(ta, tb), 3)
    return out


def noisy_photo(path: Path, h: int, w: int) -> None:
    """An h x w 8-bit PNG tiled from Kodak images with Gaussian noise (sigma 25)."""
    from PIL import Image

    tiles = []
    for i in range(1, 25):
        with Image.open(KODAK / f"kodim{i:02d}.png") as im:
            tiles.append(np.asarray(im.convert("RGB").resize((768, 512))))
    rows = [np.concatenate([tiles[(r * 6 + c) % 24] for c in range(6)], axis=1) for r in range(-(-h // 512))]
    clean = np.concatenate(rows, axis=0)[:h, :w] / 255.0
    noisy = clean + np.random.default_rng(0).normal(0, 25 / 255, clean.shape)
    write_image(path, np.clip(noisy, 0, 1).astype(np.float32), bit_depth=8)


def main() -> None:
    import onnxruntime

    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=physical_cores())
    ap.add_argument("--tiles", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="network only: no end-to-end image, no training")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    record = default_model("srgb")
    gflop = gflop_per_megapixel()
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(record, Path(tmp) / "model.onnx")
        backends = {
            FP32[0]: TorchPredictor(build_model(record), "cpu", channels_last=False, precision="fp32"),
            FP32[1]: TorchPredictor(build_model(record), "cpu", channels_last=True, precision="fp32"),
            FP32[2]: OnnxPredictor(path, 3, threads=args.threads),
            BF16: TorchPredictor(build_model(record), "cpu", precision="bf16"),
        }
        net: dict[tuple[str, int], float] = {}
        diffs: dict[int, float] = {}
        for tile in args.tiles:
            x = np.random.default_rng(0).random((1, tile, tile, 3), dtype=np.float32)
            outs = {}
            for name, pred in backends.items():
                outs[name] = pred.predict(x)  # warm-up (and the output for the agreement check)
                net[name, tile] = tile * tile / 1e6 / best_of(lambda: pred.predict(x), args.reps)
                log(f"  {name}, tile {tile}: {net[name, tile]:.3f} MP/s")
            diffs[tile] = max(float(np.abs(outs[n] - outs[FP32[0]]).max()) for n in FP32)
            assert diffs[tile] < 1e-4, f"fp32 backends disagree by {diffs[tile]:.1e} at tile {tile}"
        e2e: dict[str, tuple[float, int]] = {}
        if not args.quick:
            src = Path(tmp) / "photo.png"
            noisy_photo(src, 3000, 4000)
            for name, pred in backends.items():
                tile = choose_tile(pred)
                t = time.perf_counter()
                run_job(Job(src, Path(tmp) / "out.png"), pred, TileOptions(tile=tile))
                e2e[name] = (time.perf_counter() - t, tile)
                log(f"  {name}, 12 MP end to end: {e2e[name][0]:.1f} s (tile {tile})")
    ceilings = gemm_ceilings()
    train = {crop: training_rate(crop, steps=12) for crop in (128, 256)} if not args.quick else {}

    print(f"CPU: {cpu_name()}; {args.threads} threads; torch {torch.__version__}, onnxruntime "
          f"{onnxruntime.__version__}; {gflop:.0f} GFLOP/MP; best of {args.reps}\n")
    print("| backend | " + " | ".join(f"tile {t}: MP/s (GFLOP/s)" for t in args.tiles)
          + (" | 12 MP PNG end to end" if e2e else "") + " |")
    print("|---|" + "---:|" * (len(args.tiles) + bool(e2e)))
    for name in backends:
        cells = [f"{net[name, t]:.3f} ({net[name, t] * gflop:.0f})" for t in args.tiles]
        if e2e:
            cells.append(f"{e2e[name][0]:.1f} s, {12 / e2e[name][0]:.3f} MP/s (tile {e2e[name][1]})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    best_torch = {t: max(net[FP32[0], t], net[FP32[1], t]) for t in args.tiles}
    print("\nONNX Runtime / best fp32 PyTorch: " + ", ".join(
        f"tile {t}: {net[FP32[2], t] / best_torch[t]:.2f}x" for t in args.tiles))
    print("ONNX Runtime / torch eager: " + ", ".join(
        f"tile {t}: {net[FP32[2], t] / net[FP32[0], t]:.2f}x" for t in args.tiles))
    print("max |difference| between fp32 backends: " + ", ".join(f"tile {t}: {d:.1e}" for t, d in diffs.items()))
    print("ceilings: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in ceilings.items()))
    for crop, rate in train.items():
        print(f"training (PyTorch fp32, batch 4, crop {crop}): {rate:.2f} steps/s")


if __name__ == "__main__":
    main()
