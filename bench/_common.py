"""Helpers shared by the benchmark scripts: best-of timing and naming the machine."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path


def best_of(fn: Callable[[], object], reps: int) -> float:
    """Fastest of ``reps`` wall-clock runs, in seconds (the least disturbed by other load)."""
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def training_rate(crop: int, steps: int = 12, batch: int = 4) -> float:
    """Steps/s of ``n2ncli.train.train`` on CPU (8 random 320x480 images, Gaussian 25), the
    first two steps left out as warm-up."""
    import tempfile

    import numpy as np
    import torch

    from n2ncli.data import LoadedImages
    from n2ncli.train import TrainConfig, train

    arrays = tuple(np.random.default_rng(i).integers(0, 255, (3, 320, 480), dtype=np.uint8) for i in range(8))
    images = LoadedImages(arrays, tuple(Path(f"{i}") for i in range(8)), (), 255.0)
    cfg = TrainConfig(steps=steps, batch_size=batch, crop=crop, noise="gaussian25", checkpoint_every=10**6)
    marks: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, images, device=torch.device("cpu"), run_dir=Path(tmp),
              on_progress=lambda p: marks.append(time.perf_counter()) if p.event == "step" else None)
    return (len(marks) - 2) / (marks[-1] - marks[1])


def checkpoint_progress(run_dir: Path) -> Callable[[object], None]:
    """A ``train`` progress callback for the CPU training scripts: a line every 25 steps, and a
    copy of the checkpoint every 500 (``checkpoint-<step>.pt``) to ship the best of later."""
    import shutil

    def progress(p) -> None:  # noqa: ANN001 - n2ncli.train.Progress
        if p.event == "step" and p.step % 25 == 0:
            print(f"step {p.step}/{p.total} loss {p.loss:.6f} gamma {p.gamma:.2f} lr {p.lr:.2e} "
                  f"{p.steps_per_second:.3f} steps/s", flush=True)
        if p.event == "checkpoint" and p.step % 500 == 0:
            shutil.copyfile(run_dir / "checkpoint.pt", run_dir / f"checkpoint-{p.step}.pt")

    return progress


def model_from_checkpoint(path: Path, channels: int):  # noqa: ANN201 - (UNet, seconds, TrainConfig, step, state)
    """A training run's model written from one of its checkpoints (``--from-checkpoint``): the
    network in eval mode, the seconds trained, the run's config, the step, and the raw state."""
    from n2ncli.nets.unet import UNet
    from n2ncli.train import TrainConfig, load_checkpoint

    state = load_checkpoint(path)
    model = UNet(channels)
    model.load_state_dict(state["model"])
    return model.eval(), float(state["elapsed"]), TrainConfig.from_dict(state["config"]), int(state["step"]), state
