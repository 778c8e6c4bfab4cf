"""Real camera noise, every method on every pair in one run: the real-pairs table of docs/benchmarks.md.

Scores (PSNR/SSIM on uint8, the eval protocol) on all the real noisy/clean pairs of a folder:
the noisy input, BM3D at fixed sigmas (if the bm3d package is installed), the blind model
plain and through PD2, ``srgb-camera`` with ``--pd auto``, the default ``n2n denoise`` path
(what a user gets: each photo routed to one of the two by its noise), and optionally a fit on
the noisy images (``--fit-steps``, as ``eval --fit-first``) and ``--adapt`` (``--adapt-steps``).
Per-image rows go to ``--json``.

    python bench/real_pairs.py ../shared/data/real-pairs --json runs/real-pairs.json
    python bench/real_pairs.py ../shared/data/real-pairs --bm3d 5,10 --fit-steps 200 --adapt-steps 100 \
        --json runs/real-pairs-all.json   # docs/benchmarks.md's one-run table (56 min on 2 cores)

``--fit-steps`` stores its model in the store (``bench-fit-<folder>``); set ``N2N_HOME`` to keep
it out of yours.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from n2ncli.backends.torch import TorchPredictor
from n2ncli.datasets import find_pairs
from n2ncli.denoise import TileOptions, denoise_array
from n2ncli.io.image import read_image
from n2ncli.metrics import psnr, quantize_uint8, ssim
from n2ncli.pd import PdSelector, PixelShufflePredictor
from n2ncli.store import build_model, find_model, trained_blend, trained_second_pass, trained_stride


def fit_first(folder: Path, steps: int) -> PdSelector:
    """As ``n2n eval --pairs FOLDER --fit-first``: the library's self-supervised fit on the noisy
    images (its defaults: PD and init from their measured noise), stored as ``bench-fit-<folder>``,
    then served as ``denoise -m`` serves it."""
    from n2ncli.fit import fit, pairs_fit_request

    t = time.perf_counter()
    done = fit(pairs_fit_request(folder, [n for _, n, _ in find_pairs(folder)], steps, "cpu", prefix="bench-fit"))
    print(f"fit: {done.result.steps} steps in {time.perf_counter() - t:.0f} s, init {done.init}, pd {done.pd}"
          + ("" if done.check is None else f", {done.check.summary()}"), flush=True)
    record = done.record
    return PdSelector(TorchPredictor(build_model(record), precision="fp32"), None, trained_stride(record),
                      blend=trained_blend(record), second_pass=trained_second_pass(record))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pairs", type=Path)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bm3d", default="5,10", help="BM3D sigmas (0-255), comma-separated; empty for none")
    ap.add_argument("--camera", default="srgb-camera", help="the real-photo model ('' to leave out)")
    ap.add_argument("--fit-steps", type=int, default=0)
    ap.add_argument("--adapt-steps", type=int, default=0)
    ap.add_argument("--methods", default="", help="only these methods (names separated by ;)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pairs = [(n, read_image(a).to_float(), read_image(b).pixels) for n, a, b in find_pairs(args.pairs)]
    blind_record = find_model("srgb-gaussian5-50")
    blind = TorchPredictor(build_model(blind_record), precision="fp32")
    methods: dict[str, object] = {
        "blind, plain": blind,
        "blind, PD2": PixelShufflePredictor(blind, 2),
        "blind, --pd auto": PdSelector(blind, None, trained_stride(blind_record)),
    }
    if args.camera:
        record = find_model(args.camera)
        camera = TorchPredictor(build_model(record), precision="fp32")
        methods[f"{record.name}, plain"] = camera
        methods[f"{record.name}, --pd auto"] = PdSelector(camera, None, trained_stride(record),
                                                          blend=trained_blend(record))
        methods[f"{record.name}, PD2 + 0.25 plain"] = PixelShufflePredictor(camera, 2, blend=0.25)
        # what `n2n denoise` and `n2n eval --pairs` run: each photo picks the blind model or this
        # one from its measured noise correlation, with each model's stride, blend and second pass
        methods["the default (n2n denoise)"] = PdSelector(
            blind, None, trained_stride(blind_record), camera, trained_stride(record),
            blend=trained_blend(blind_record), correlated_blend=trained_blend(record),
            second_pass=trained_second_pass(blind_record), correlated_second_pass=trained_second_pass(record))
    if args.bm3d:
        from n2ncli.baselines import BM3D, bm3d_available

        if bm3d_available():
            for s in args.bm3d.split(","):
                methods[f"BM3D sigma {s}"] = BM3D(3, float(s))
    noisy_images = [p[1] for p in pairs]
    if args.fit_steps:
        methods[f"--fit-first {args.fit_steps}"] = fit_first(args.pairs, args.fit_steps)
    if args.adapt_steps:
        from n2ncli.adapt import adapt

        t = time.perf_counter()
        done = adapt(build_model(args.camera and find_model(args.camera) or blind_record), noisy_images,
                     args.adapt_steps)
        check = (f"check {done.check.before:.6f} -> {done.check.after:.6f}" if done.check
                 else f"skipped ({done.skipped} noise, luma {done.luma:.2f})")
        print(f"adapt: {done.steps} steps in {time.perf_counter() - t:.0f} s, pd {done.pd}, used {done.used}, {check}",
              flush=True)
        init = find_model(args.camera) if args.camera else blind_record
        methods[f"--adapt {args.adapt_steps}"] = PdSelector(TorchPredictor(done.model, precision="fp32"), None,
                                                            trained_stride(init),
                                                            blend=trained_blend(init))
    if args.methods:
        wanted = set(args.methods.split(";"))
        methods = {k: v for k, v in methods.items() if k in wanted}
    rows: list[dict[str, object]] = []
    for name, noisy, clean in pairs:
        row: dict[str, object] = {"image": name, "noisy": {"psnr": psnr(clean, quantize_uint8(noisy)),
                                                           "ssim": ssim(clean, quantize_uint8(noisy))}}
        for method, predictor in methods.items():
            if isinstance(predictor, PdSelector):
                out = denoise_array(noisy, predictor.for_image(noisy), TileOptions(tile=0))
            else:
                out = denoise_array(noisy, predictor, TileOptions(tile=0))
            est = quantize_uint8(out)
            row[method] = {"psnr": psnr(clean, est), "ssim": ssim(clean, est)}
        rows.append(row)
        print(name, " ".join(f"{k}={v['psnr']:.2f}" for k, v in row.items() if k != "image"), flush=True)
    names = ["noisy", *methods]
    print(f"\n{len(rows)} pairs from {args.pairs}")
    print("| method | PSNR | gain | SSIM |\n| --- | --- | --- | --- |")
    base = np.mean([r["noisy"]["psnr"] for r in rows])
    for m in names:
        p = np.mean([r[m]["psnr"] for r in rows])
        s = np.mean([r[m]["ssim"] for r in rows])
        print(f"| {m} | {p:.2f} | {p - base:+.2f} | {s:.4f} |")
    if args.json:
        args.json.write_text(json.dumps({"pairs": str(args.pairs), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
