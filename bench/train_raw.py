"""Train the shipped raw default ``raw-camera`` (packed R, G1, G2, B -> same) on a CPU.

Training data: CBSD432 unprocessed to clean camera-linear Bayer mosaics (``n2ncli.synthesis``:
inverse tone and gamma, a random mix of real cameras' colour matrices, inverse white balance,
RGGB mosaic), two cameras per image, packed to 4 channels. Each crop then gets heteroscedastic
shot + read noise (``--noise sensor``: Brooks et al.'s calibration, one exposure per crop).
Neighbor2Neighbor with the paper's raw settings (gamma 0 -> 1), g2 from a second noise draw
of the same exposure, warm-started from the shipped sRGB blind model's weights inflated to
4 channels (``n2ncli.nets.unet.bayer_from_rgb``).

Resumable: run it again with the same arguments and it continues from
``runs/<name>/checkpoint.pt``; every 500 steps a copy is kept (``checkpoint-<step>.pt``).

    python bench/train_raw.py --steps 3000 --threads 2
    python bench/train_raw.py --steps 3000 --from-checkpoint runs/raw-camera/checkpoint-2000.pt --ship
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from _common import checkpoint_progress, model_from_checkpoint

from n2ncli.data import LoadedImages
from n2ncli.fit import read_pixels
from n2ncli.io.image import list_images
from n2ncli.nets.unet import bayer_from_rgb
from n2ncli.store import SHIPPED_DIR, build_model, find_model, save_model
from n2ncli.synthesis import CameraParams, packed_mosaic
from n2ncli.train import TrainConfig, load_checkpoint, train

ROOT = Path(__file__).resolve().parents[1]
CAMERAS_PER_IMAGE = 2


def config_for(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(steps=args.steps, batch_size=8, crop=128, lr=2e-4, lr_schedule="cosine", warmup_steps=50,
                       gamma_end=1.0, noise="sensor", target="independent", seed=args.seed, channels=4,
                       kind="raw", precision="fp32", checkpoint_every=100, checkpoint_seconds=240)


def clean_mosaics(folder: Path, seed: int) -> LoadedImages:
    """Every image of ``folder`` as CAMERAS_PER_IMAGE clean packed mosaics (uint16, 4xH/2xW/2)."""
    arrays, paths = [], []
    for i, path in enumerate(list_images(folder)):
        img = read_pixels(path)
        h, w = img.shape[:2]
        srgb = torch.from_numpy(img[: h - h % 2, : w - w % 2].astype(np.float32) / 255.0).permute(2, 0, 1)[None]
        for k in range(CAMERAS_PER_IMAGE):
            gen = torch.Generator().manual_seed(seed * 1_000_003 + i * CAMERAS_PER_IMAGE + k)
            packed = packed_mosaic(srgb, CameraParams.draw(gen))[0]
            ph, pw = packed.shape[-2:]
            packed = packed[:, : ph - ph % 2, : pw - pw % 2]
            arrays.append(np.rint(packed.clamp(0, 1).numpy() * 65535).astype(np.uint16))
            paths.append(path)
    return LoadedImages(tuple(arrays), tuple(paths), (), 65535.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--name", default="raw-camera")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/cbsd432")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ship", action="store_true", help="write the model into the package (n2ncli/models)")
    ap.add_argument("--reschedule", action="store_true",
                    help="resume a run planned for another number of steps with the schedule over --steps instead")
    ap.add_argument("--from-checkpoint", type=Path, default=None,
                    help="write the model from this checkpoint now (e.g. the best of the kept copies)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    config = config_for(args)
    run_dir = ROOT / "runs" / args.name
    run_dir.mkdir(parents=True, exist_ok=True)
    blind = find_model("srgb-gaussian5-50")
    if args.from_checkpoint:
        model, seconds, config, done, state = model_from_checkpoint(args.from_checkpoint, 4)
        loss = float("nan")
        note = state.get("extra", {}).get("rescheduled", "")
    else:
        ckpt = run_dir / "checkpoint.pt"
        if args.reschedule and ckpt.exists():
            state = load_checkpoint(ckpt)
            if state["config"]["steps"] != args.steps:
                print(f"rescheduling the run from {state['config']['steps']} to {args.steps} steps at step "
                      f"{state['step']}", flush=True)
                state["extra"] = {**state.get("extra", {}), "rescheduled": (
                    f"planned for {state['config']['steps']} steps (cosine), the schedule cut to {args.steps} at step "
                    f"{state['step']} with --reschedule (CPU contention made the plan too long for the session)")}
                state["config"]["steps"] = args.steps
                torch.save(state, ckpt)
        images = clean_mosaics(args.data, args.seed)
        print(f"{len(images.arrays)} clean mosaics ({images.nbytes / 2**20:.0f} MiB)", flush=True)

        progress = checkpoint_progress(run_dir)
        resume = ckpt.exists()
        note = load_checkpoint(ckpt).get("extra", {}).get("rescheduled", "") if resume else ""
        result = train(config, images, device=torch.device("cpu"), run_dir=run_dir, resume=resume,
                       init_state=bayer_from_rgb(build_model(blind).state_dict()), on_progress=progress,
                       extra={"init": blind.name, "rescheduled": note})
        model, seconds, loss, done = result.model, result.seconds, result.final_loss, result.steps
    training = {
        "dataset": f"cbsd432 (432 clean colour images) unprocessed to camera-linear RGGB mosaics, "
                   f"{CAMERAS_PER_IMAGE} random cameras per image (n2ncli.synthesis.packed_mosaic)",
        "noise": "sensor (heteroscedastic shot + read, Brooks et al. calibration, one exposure per crop)",
        "method": "Neighbor2Neighbor, paper's raw settings (gamma 0 -> 1); g2 from an independent second "
                  "draw of the same exposure", "steps": done, "steps_planned": config.steps,
        "batch_size": config.batch_size, "crop": config.crop, "crop_unit": "packed pixels (2x2 cells)",
        "lr": config.lr, "lr_schedule": f"cosine over {config.steps} steps, {config.warmup_steps} warm-up",
        "gamma": "0 -> 1.0 linear", "init": f"{blind.name} inflated to 4 channels (bayer_from_rgb)",
        "device": "cpu (2-core AMD EPYC, shared)", "threads": args.threads, "precision": "fp32",
        "seconds": round(seconds, 1), "final_loss": loss, "crops_seen": done * config.batch_size,
        "schedule_note": note,
        "command": f"python bench/train_raw.py --steps {config.steps} --threads {args.threads}"
                   + (f" (then --from-checkpoint {args.from_checkpoint.name} --ship)" if args.from_checkpoint else ""),
    }
    root = SHIPPED_DIR if args.ship else run_dir / "models"
    record = save_model(args.name, model, kind="raw", noise="sensor", training=training, root=root,
                        overwrite=True, dtype=torch.float16)
    print(f"saved {record.folder}")


if __name__ == "__main__":
    main()
