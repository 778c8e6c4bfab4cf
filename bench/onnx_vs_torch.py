"""CPU inference speed of the backends: PyTorch eager (NCHW), PyTorch channels_last, ONNX Runtime fp32.

    python bench/onnx_vs_torch.py [--threads N] [--tiles 256 512] [--reps 3]

Megapixels of network input per second, best of ``--reps`` after one warm-up, on the shipped
sRGB model; prints a markdown table and checks that the backends agree. Writes only a temp file.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_of, cpu_name  # noqa: E402
from n2ncli.backends.onnx import OnnxPredictor, physical_cores  # noqa: E402
from n2ncli.backends.torch import TorchPredictor  # noqa: E402
from n2ncli.export import export_onnx  # noqa: E402
from n2ncli.nets.unet import gflop_per_megapixel  # noqa: E402
from n2ncli.store import build_model, default_model  # noqa: E402





def main() -> None:
    import onnxruntime

    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=physical_cores())
    ap.add_argument("--tiles", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    record = default_model("srgb")
    model = build_model(record)
    gflop = gflop_per_megapixel()
    backends = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(record, Path(tmp) / "model.onnx")
        backends["torch eager (NCHW)"] = TorchPredictor(model, "cpu", channels_last=False)
        backends["torch channels_last"] = TorchPredictor(model, "cpu", channels_last=True)
        backends["ONNX Runtime fp32"] = OnnxPredictor(path, 3, threads=args.threads)
        results: dict[tuple[str, int], float] = {}
        diffs: dict[int, float] = {}
        for tile in args.tiles:
            x = np.random.default_rng(0).random((1, tile, tile, 3), dtype=np.float32)
            outs = {}
            for name, pred in backends.items():
                outs[name] = pred.predict(x)  # warm-up (and the output for the agreement check)
                results[name, tile] = tile * tile / 1e6 / best_of(lambda: pred.predict(x), args.reps)
                print(f"  {name}, tile {tile}: {results[name, tile]:.3f} MP/s", file=sys.stderr, flush=True)
            ref = outs["torch eager (NCHW)"]
            diffs[tile] = max(float(np.abs(o - ref).max()) for o in outs.values())

    print(f"CPU: {cpu_name()}; {args.threads} threads; torch {torch.__version__}, onnxruntime "
          f"{onnxruntime.__version__}; {gflop:.0f} GFLOP/MP; best of {args.reps}\n")
    head = "| backend | " + " | ".join(f"tile {t} MP/s (GFLOP/s)" for t in args.tiles) + " |"
    print(head)
    print("|---|" + "---:|" * len(args.tiles))
    for name in backends:
        cells = [f"{results[name, t]:.3f} ({results[name, t] * gflop:.0f})" for t in args.tiles]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\nmax |difference| to torch eager: " + ", ".join(f"tile {t}: {d:.1e}" for t, d in diffs.items()))


if __name__ == "__main__":
    main()
