"""Train the shipped real-photo model ``srgb-camera`` (or its supervised reference) on a CPU.

Neighbor2Neighbor on CBSD432 crops given synthetic camera noise (``--noise camera``:
unprocess -> sensor noise -> develop -> in-camera NR, sharpening -> 8-bit/JPEG), trained on
the PD2 sub-images of each crop, warm-started from the shipped blind model. Resumable: run it
again with the same arguments and it continues from ``runs/<name>/checkpoint.pt``.

``--supervised`` trains the clean-target reference instead (same crops, same cameras, same
steps and schedule; L2 to the noise-free development at full resolution). It is an upper
bound for docs/models.md and is never shipped.

    python bench/train_camera.py --steps 2400 --threads 1
    python bench/train_camera.py --steps 2400 --threads 1 --supervised --name srgb-camera-supervised
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from pathlib import Path

import torch
from _common import cpu_name, model_from_checkpoint

from n2ncli.data import CropBatches, load_training_images
from n2ncli.fit import read_pixels
from n2ncli.io.image import list_images
from n2ncli.store import SHIPPED_DIR, build_model, find_model, save_model
from n2ncli.synthesis import CameraParams, camera_pair
from n2ncli.train import TrainConfig, load_checkpoint, sample_generator, save_checkpoint, train

ROOT = Path(__file__).resolve().parents[1]


def config_for(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(steps=args.steps, batch_size=4, crop=256, lr=args.lr, lr_schedule="cosine", warmup_steps=args.warmup,
                       gamma_end=2.0, gamma_constant=args.init is not None, noise="camera", pd=1, target="independent", full_pd=2, seed=args.seed,
                       level_weight=args.level_weight, precision="fp32",
                       checkpoint_every=min(100, args.keep_every or 100), checkpoint_seconds=240)


def supervised(config: TrainConfig, images, run_dir: Path, init: dict) -> tuple[torch.nn.Module, float, float]:
    """The clean-target bound: the same crops and cameras, L2 to the noise-free development."""
    from n2ncli.nets.unet import UNet

    model = UNet(3)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    ckpt = run_dir / "checkpoint.pt"
    start, elapsed = 0, 0.0
    if ckpt.exists():
        state = load_checkpoint(ckpt)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, elapsed = int(state["step"]), float(state["elapsed"])
    else:
        model.load_state_dict(init)
    model.to(memory_format=torch.channels_last).train()
    batches = CropBatches(images, config.batch_size, config.crop, config.seed)
    t0, loss = time.perf_counter(), math.nan
    for step in range(start, config.steps):
        for g in opt.param_groups:
            g["lr"] = config.lr_at(step)
        opt.zero_grad(set_to_none=True)
        for samples, crops in batches[step]:
            pairs = []
            for i, c in zip(samples.tolist(), crops):
                gen = sample_generator(config.seed, step, i, torch.device("cpu"))
                pairs.append(camera_pair(c[None], CameraParams.draw(gen), gen))
            noisy = torch.cat([p[0] for p in pairs]).contiguous(memory_format=torch.channels_last)
            ref = torch.cat([p[1] for p in pairs])
            lv = (model(noisy) - ref).square().mean() * (crops.shape[0] / config.batch_size)
            lv.backward()
            loss = float(lv)
        opt.step()
        done = step + 1
        if done % 25 == 0:
            print(f"step {done}/{config.steps} loss {loss:.6f} {done - start} steps in {time.perf_counter() - t0:.0f} s",
                  flush=True)
        if done % config.checkpoint_every == 0 or done == config.steps:
            save_checkpoint(ckpt, config, model, opt, done, elapsed + time.perf_counter() - t0, {"supervised": True})
    return model.eval(), elapsed + time.perf_counter() - t0, loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--name", default="srgb-camera")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/cbsd432")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--supervised", action="store_true")
    ap.add_argument("--level-weight", type=float, default=0.0,
                    help="weigh each crop's loss by its noise variance^-W (0.65: about 1/MSE, so every level "
                         "counts alike in PSNR; 0: the plain mean)")
    ap.add_argument("--init", type=Path, default=None,
                    help="warm-start from this checkpoint.pt or weights.pt (default: the shipped blind model); "
                         "gamma then stays at its end value instead of ramping from 0")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=0,
                    help="linear lr warm-up over N steps (a later stage starts a fresh optimiser from trained weights)")
    ap.add_argument("--keep-every", type=int, default=0,
                    help="keep a copy of the checkpoint every N steps (checkpoint-<step>.pt), to evaluate later")
    ap.add_argument("--ship", action="store_true", help="write the finished model into the package (n2ncli/models)")
    ap.add_argument("--from-checkpoint", action="store_true",
                    help="write the model from the run's last checkpoint now (a run stopped before --steps)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    config = config_for(args)
    images = None if args.from_checkpoint else load_training_images(list_images(args.data), read_pixels, 3)
    run_dir = ROOT / "runs" / args.name
    run_dir.mkdir(parents=True, exist_ok=True)
    blind = find_model("srgb-gaussian5-50")
    init = build_model(blind).state_dict()
    init_name = blind.name
    if args.init is not None:  # a second stage: continue from an earlier run's weights
        state = torch.load(args.init, map_location="cpu", weights_only=True)
        init = {k: v.float() for k, v in state.get("model", state).items()}
        init_name = f"{args.init} (from {blind.name})"
    if args.from_checkpoint:
        model, seconds, config, done_steps, _ = model_from_checkpoint(run_dir / "checkpoint.pt", 3)
        loss = float("nan")
    elif args.supervised:
        model, seconds, loss = supervised(config, images, run_dir, init)
    else:
        resume = (run_dir / "checkpoint.pt").exists()

        def progress(p) -> None:  # noqa: ANN001
            if p.event == "checkpoint" and args.keep_every and p.step % args.keep_every == 0:
                shutil.copyfile(run_dir / "checkpoint.pt", run_dir / f"checkpoint-{p.step}.pt")
            if p.event == "step" and p.step % 25 == 0:
                print(f"step {p.step}/{p.total} loss {p.loss:.6f} gamma {p.gamma:.2f} lr {p.lr:.2e} "
                      f"{p.steps_per_second:.3f} steps/s", flush=True)

        result = train(config, images, device=torch.device("cpu"), run_dir=run_dir, resume=resume,
                       init_state=init, on_progress=progress, extra={"init": init_name})
        model, seconds, loss = result.model, result.seconds, result.final_loss
    if not args.from_checkpoint:
        done_steps = config.steps
    training = {
        "dataset": "cbsd432 (432 clean colour images) with synthetic camera noise (n2ncli.synthesis)",
        "noise": "camera", "method": "supervised (clean target; reference only)" if args.supervised else
        "Neighbor2Neighbor, g2 from an independent second draw of the same camera and ISO; f(y) "
        "in the regulariser through PD2, as inference", "pd": 2, "steps": done_steps,
        "steps_planned": config.steps, "lr_schedule_note": f"cosine over {config.steps} steps, stopped at {done_steps}",
        "batch_size": config.batch_size, "crop": config.crop, "lr": config.lr, "lr_schedule": "cosine",
        "warmup_steps": config.warmup_steps,
        "gamma": "2.0 constant" if args.init is not None else "0 -> 2.0 linear", "init": init_name,
        "device": f"cpu ({cpu_name()}, {os.cpu_count()} cores)",
        "threads": args.threads, "precision": "fp32", "seconds": round(seconds, 1), "final_loss": loss,
        "crops_seen": done_steps * config.batch_size,
        "command": f"python bench/train_camera.py --steps {config.steps} --threads {args.threads}"
                   + (" --supervised" if args.supervised else "") + f" --name {args.name}"
                   + (f" --lr {args.lr:g}" if args.lr != 1e-4 else "") + (f" --warmup {args.warmup}" if args.warmup else "")
                   + (f" --init {args.init}" if args.init is not None else "")
                   + (" (stopped; then --from-checkpoint --ship)" if done_steps < config.steps else ""),
    }
    root = SHIPPED_DIR if args.ship else run_dir / "models"
    record = save_model(args.name, model, kind="srgb", noise="camera", training=training, root=root,
                        overwrite=True, dtype=torch.float16)
    record_path = record.folder / "model.json"
    data = json.loads(record_path.read_text())
    data["pd"] = 1 if args.supervised else 2
    record_path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"saved {record.folder}")


if __name__ == "__main__":
    main()
