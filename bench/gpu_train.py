"""Train a shipped sRGB model on a GPU within a time budget, then score it on Kodak.

Used for the shipped models (docs/models.md records each command). The training set is decoded
once onto the GPU; crops, noise and the sub-sampler run there; bf16 autocast; channels_last.
The step count is fixed up front from a short timing probe so the lr and gamma schedules run
their full course inside the budget.

    python bench/gpu_train.py --noise gaussian5-50 --minutes 8 --data DIR --kodak DIR --out DIR
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from n2ncli.backends.torch import TorchPredictor  # noqa: E402
from n2ncli.data import LoadedImages  # noqa: E402
from n2ncli.evaluate import evaluate  # noqa: E402
from n2ncli.nets.unet import gflop_per_megapixel  # noqa: E402
from n2ncli.noise import parse_noise  # noqa: E402
from n2ncli.store import build_model, load_state, read_record, save_model, write_record  # noqa: E402
from n2ncli.train import TrainConfig, train  # noqa: E402


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def load_set(folder: Path) -> LoadedImages:
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".png"})
    arrays = []
    for p in paths:
        a = read_rgb(p)
        h, w = a.shape[:2]
        arrays.append(np.ascontiguousarray(a[: h - h % 2, : w - w % 2].transpose(2, 0, 1)))
    return LoadedImages(tuple(arrays), tuple(paths), (), 255.0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--noise", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--minutes", type=float, default=8.0)
    ap.add_argument("--steps", type=int, default=0, help="fixed step count instead of a time budget")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--schedule", default="cosine")
    ap.add_argument("--gamma-end", type=float, default=2.0)
    ap.add_argument("--init", default="", help="model folder to warm-start from")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--kodak", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--run-dir", type=Path, default=None, help="checkpoints (default OUT/run)")
    ap.add_argument("--eval-images", type=int, default=24)
    ap.add_argument("--eval-repeats", type=int, default=10)
    ap.add_argument("--eval-ssim", action="store_true", help="SSIM too (slow on the host CPU)")
    ap.add_argument("--eval-noise", default="", help="comma list; default: the training noise")
    args = ap.parse_args()

    torch.backends.cudnn.benchmark = True
    device = torch.device(args.device)
    images = load_set(args.data)
    init_state = load_state(read_record(Path(args.init))) if args.init else None
    print(f"{len(images.arrays)} training images, {images.nbytes / 1e6:.0f} MB decoded", flush=True)

    def config(steps: int) -> TrainConfig:
        return TrainConfig(steps=steps, batch_size=args.batch, crop=args.crop, lr=args.lr,
                           lr_schedule=args.schedule, warmup_steps=min(args.warmup, steps // 10),
                           gamma_end=args.gamma_end, noise=args.noise, seed=args.seed,
                           checkpoint_every=2000, checkpoint_seconds=120)

    steps = args.steps
    if not steps:  # timing probe on the real code path; its weights are thrown away
        probe = config(60)
        marks: list[float] = []
        train(probe, images, device=device, run_dir=Path("/tmp/n2n-probe"),
              on_progress=lambda p: marks.append(time.perf_counter()) if p.event == "step" else None)
        rate = 40 / (marks[-1] - marks[19])
        steps = int(rate * args.minutes * 60)
        print(f"probe: {rate:.1f} steps/s at batch {args.batch} -> {steps} steps", flush=True)
    cfg = config(steps)
    t0 = time.perf_counter()
    last = [t0]

    def show(p) -> None:
        now = time.perf_counter()
        if p.event == "step" and (now - last[0] > 30 or p.step == p.total):
            last[0] = now
            print(f"step {p.step}/{p.total} loss {p.loss:.5f} rec {p.reconstruction:.5f} "
                  f"gamma {p.gamma:.2f} lr {p.lr:.2e} {p.steps_per_second:.1f} it/s", flush=True)

    result = train(cfg, images, device=device, run_dir=args.run_dir or args.out / "run", init_state=init_state, on_progress=show)
    seconds = time.perf_counter() - t0
    crops_per_s = steps * args.batch / seconds
    mp_crop = args.crop**2 / 1e6
    flop_per_crop = gflop_per_megapixel(3) * 1e9 * (mp_crop + 3 * mp_crop / 4)  # f(y) + f(g1 y) fwd+bwd
    tflops = crops_per_s * flop_per_crop / 1e12
    print(f"trained {steps} steps in {seconds:.0f} s: {crops_per_s:.0f} crops/s, ~{tflops:.0f} TFLOP/s", flush=True)

    training = {
        "dataset": "cbsd432 (BSDS500 train+val, 432 clean colour images)", "noise": args.noise,
        "steps": steps, "batch_size": args.batch, "crop": args.crop, "lr": args.lr,
        "lr_schedule": f"{args.schedule}, {cfg.warmup_steps} warm-up steps", "gamma": f"0 -> {args.gamma_end} linear",
        "init": args.init or "pytorch default", "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "precision": "bf16 autocast",
        "seconds": round(seconds, 1), "crops_per_second": round(crops_per_s, 1), "approx_tflops": round(tflops, 1),
        "command": " ".join(sys.argv),
    }
    record = save_model(args.name, result.model, kind="srgb", noise=args.noise, training=training,
                        root=args.out / "models", overwrite=True, dtype=torch.float16)
    model = build_model(record)  # the shipped fp16 weights, re-read and verified
    predictor = TorchPredictor(model, device, precision="fp32")
    kodak = sorted(args.kodak.glob("kodim*.png"))[: args.eval_images]
    clean = [(p.name, read_rgb(p)) for p in kodak]
    metrics = {}
    for noise_name in (args.eval_noise.split(",") if args.eval_noise else [args.noise]):
        t1 = time.perf_counter()
        res = evaluate(predictor, clean, parse_noise(noise_name), dataset="kodak", repeats=args.eval_repeats, batch=args.eval_repeats,
                       with_ssim=args.eval_ssim, threads=4)
        summary = res.summary()
        metrics[f"kodak/{noise_name}" if args.eval_images == 24 else f"kodak[:{args.eval_images}]/{noise_name}"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()}
        print(f"kodak {noise_name}: PSNR {summary['psnr']:.3f} SSIM {summary['ssim']:.4f} "
              f"(noisy {summary['noisy_psnr']:.2f}; paper {summary['paper_psnr']}) [{time.perf_counter() - t1:.0f} s]", flush=True)
    write_record(replace(record, metrics=metrics))
    report = {"metrics": metrics, "training": training, "loss_history": result.history}
    (args.out / f"{args.name}.report.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
