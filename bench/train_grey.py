"""Train the shipped grey blind model ``grey-gaussian5-50`` (1 -> 1 channel) on a CPU.

Why a grey model: a grey photo run through the RGB blind model as three equal channels has
its noise equal in the three channels, which the RGB model never saw (its noise was
independent per channel) and reads as signal (docs/models.md). Training data: the luma
(BT.601, as JPEG) of CBSD432's 432 clean images, Gaussian noise sigma ~ U[5, 50]/255 per crop as
the RGB blind model; Neighbor2Neighbor (gamma 0 -> 2) with g2 from a second noise draw,
warm-started from ``srgb-gaussian5-50`` collapsed to one channel
(``n2ncli.nets.unet.grey_from_rgb``: exactly the RGB network on three equal channels).

Resumable: run it again with the same arguments and it continues from
``runs/<name>/checkpoint.pt``; every 500 steps a copy is kept (``checkpoint-<step>.pt``).

    python bench/train_grey.py --steps 3000 --threads 2
    python bench/train_grey.py --steps 3000 --from-checkpoint runs/grey-gaussian5-50/checkpoint-2000.pt --ship
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from _common import checkpoint_progress, cpu_name, model_from_checkpoint

from n2ncli.data import LoadedImages
from n2ncli.fit import read_pixels
from n2ncli.io.image import list_images
from n2ncli.luma import LUMA
from n2ncli.nets.unet import grey_from_rgb
from n2ncli.store import SHIPPED_DIR, build_model, find_model, save_model
from n2ncli.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]


def config_for(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(steps=args.steps, batch_size=8, crop=128, lr=args.lr, lr_schedule="cosine", warmup_steps=50,
                       gamma_end=args.gamma, gamma_constant=args.gamma_constant, noise="gaussian5-50",
                       target=args.target, full_pd=args.full_pd, seed=args.seed, channels=1,
                       kind="srgb", precision="fp32", checkpoint_every=100, checkpoint_seconds=240)


def grey_images(folder: Path) -> LoadedImages:
    """Every image of ``folder`` as its 8-bit luma, 1xHxW with even sizes."""
    arrays, paths = [], []
    for path in list_images(folder):
        img = read_pixels(path).astype(np.float32)
        y = img @ LUMA if img.shape[2] == 3 else img[..., 0]
        h, w = y.shape
        arrays.append(np.rint(y[: h - h % 2, : w - w % 2]).clip(0, 255).astype(np.uint8)[None])
        paths.append(path)
    return LoadedImages(tuple(arrays), tuple(paths), (), 255.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--name", default="grey-gaussian5-50")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/cbsd432")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target", default="independent", choices=("same", "independent"))
    ap.add_argument("--gamma", type=float, default=2.0)
    ap.add_argument("--gamma-constant", action="store_true")
    ap.add_argument("--full-pd", type=int, default=1)
    ap.add_argument("--ship", action="store_true", help="write the model into the package (n2ncli/models)")
    ap.add_argument("--from-checkpoint", type=Path, default=None,
                    help="write the model from this checkpoint now (e.g. the best of the kept copies)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    config = config_for(args)
    run_dir = ROOT / "runs" / args.name
    run_dir.mkdir(parents=True, exist_ok=True)
    blind = find_model("srgb-gaussian5-50")
    if args.from_checkpoint:
        model, seconds, config, done, _ = model_from_checkpoint(args.from_checkpoint, 1)
        loss = float("nan")
    else:
        ckpt = run_dir / "checkpoint.pt"
        images = grey_images(args.data)
        print(f"{len(images.arrays)} grey images ({images.nbytes / 2**20:.0f} MiB)", flush=True)

        progress = checkpoint_progress(run_dir)
        result = train(config, images, device=torch.device("cpu"), run_dir=run_dir, resume=ckpt.exists(),
                       init_state=grey_from_rgb(build_model(blind).state_dict()), on_progress=progress,
                       extra={"init": blind.name})
        model, seconds, loss, done = result.model, result.seconds, result.final_loss, result.steps
    training = {
        "dataset": "cbsd432 (BSDS500 train+val, 432 clean colour images) as 8-bit BT.601 luma",
        "noise": "gaussian5-50 (sigma ~ U[5, 50]/255 per crop, float, unclipped)",
        "method": "Neighbor2Neighbor (gamma 0 -> 2); g2 from an independent second draw of the noise",
        "steps": done, "steps_planned": config.steps, "batch_size": config.batch_size, "crop": config.crop,
        "lr": config.lr, "lr_schedule": f"cosine over {config.steps} steps, {config.warmup_steps} warm-up",
        "gamma": "0 -> 2.0 linear", "init": f"{blind.name} collapsed to 1 channel (grey_from_rgb)",
        "device": f"cpu ({cpu_name()}, {os.cpu_count()} cores)", "threads": args.threads, "precision": "fp32",
        "seconds": round(seconds, 1), "final_loss": loss, "crops_seen": done * config.batch_size,
        "command": f"python bench/train_grey.py --steps {config.steps} --threads {args.threads}"
                   + (f" (then --from-checkpoint {args.from_checkpoint.name} --ship)" if args.from_checkpoint else ""),
    }
    root = SHIPPED_DIR if args.ship else run_dir / "models"
    record = save_model(args.name, model, kind="srgb", noise="gaussian5-50", training=training, root=root,
                        overwrite=True, dtype=torch.float16)
    print(f"saved {record.folder}")


if __name__ == "__main__":
    main()
