"""`n2n fit` as a library call: gather images, pick the warm start, train, store the model."""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from n2ncli.data import StreamedImages, load_training_images
from n2ncli.device import free_ram, resolve_device
from n2ncli.errors import CheckpointError, ConfigError, DatasetError, ModelNotFoundError
from n2ncli.io.image import IMAGE_EXTENSIONS, list_images, read_image
from n2ncli.io.raw import RAW_EXTENSIONS, TRAIN_FLOOR, is_raw, read_packed, read_training_raw
from n2ncli.noise import parse_noise
from n2ncli.store import (ModelRecord, check_name, default_model, find_model, load_state, models_dir,
                          runs_dir, save_model)
from n2ncli.train import Progress, TrainConfig, TrainResult, ValidationPairs, load_checkpoint, train

PAPER_EPOCHS = 100
PAPER_LR = 3e-4
#: The paper's raw settings (SIDD): lr 1e-4 and gamma ramping to 1 instead of 2.
RAW_LR = 1e-4
GAMMA_END = {"srgb": 2.0, "raw": 1.0}
KINDS = ("auto", "srgb", "raw")
#: Fine-tuning the shipped model at the paper's 3e-4 first loses ~0.5 dB before it gains;
#: 1e-4 is better at every point measured (docs/benchmarks.md, warm start).
WARM_START_LR = 1e-4


@dataclass(frozen=True)
class FitRequest:
    """What the user asked for; ``steps``/``epochs`` None means the paper's 100 epochs."""

    inputs: tuple[Path, ...]
    name: str
    noise: str | None = None
    steps: int | None = None
    epochs: float | None = None
    batch_size: int = 4
    crop: int = 256
    lr: float | None = None  # None: 3e-4 from scratch (the paper), 1e-4 when warm-starting or raw
    gamma_end: float | None = None  # None: 2 for sRGB, 1 for raw (the paper's)
    kind: str = "auto"  # auto: raw if the inputs are raw files, else srgb
    gamma_constant: bool = False
    sampler: str = "random"
    seed: int = 0
    device: str = "auto"
    workers: int | None = None  # None: 0 for in-memory images, a few when streaming from files
    resume: bool = False
    val: Path | None = None
    init: str = "default"
    precision: str = "auto"
    compile: bool = False
    checkpoint_every: int = 500
    overwrite: bool = False


@dataclass(frozen=True)
class FitOutcome:
    record: ModelRecord
    result: TrainResult
    images: int
    skipped: tuple[str, ...]
    init: str


def gather_images(inputs: Sequence[Path], kind: str = "auto") -> tuple[list[Path], str]:
    """Training files from files and folders, in a stable order, and their kind (srgb or raw).

    ``auto`` trains on raws when every file is raw, on images when none is; a folder mixing
    both needs ``kind`` to say which to use (the other files are left out).
    """
    if kind not in KINDS:
        raise ConfigError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    from n2ncli.denoise import is_denoised_output

    files: list[Path] = []
    for p in inputs:
        if p.is_dir():  # our own outputs in the folder are clean already: not training data
            files.extend(f for f in list_images(p, IMAGE_EXTENSIONS | RAW_EXTENSIONS) if not is_denoised_output(f))
        elif p.is_file():
            files.append(p)
        else:
            raise DatasetError(f"{p}: no such file or folder")
    files = list(dict.fromkeys(files))
    raws = [f for f in files if is_raw(f)]
    images = [f for f in files if not is_raw(f)]
    if kind == "auto":
        if raws and images:
            raise ConfigError(f"the inputs mix {len(raws)} raw file(s) and {len(images)} image(s); "
                              "choose with --kind raw or --kind srgb")
        kind = "raw" if raws else "srgb"
    chosen = raws if kind == "raw" else images
    if not chosen:
        what = "raw files" if kind == "raw" else "PNG, JPEG or TIFF images"
        raise DatasetError(f"no {what} in {', '.join(map(str, inputs))}")
    return chosen, kind


def fingerprint(paths: Sequence[Path]) -> str:
    """Names and sizes of the training files: a resume on different data is refused."""
    h = hashlib.sha256()
    for p in paths:
        h.update(f"{p.name}:{p.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


def read_pixels(path: Path) -> np.ndarray:
    return read_image(path).pixels


def read_float(path: Path) -> np.ndarray:
    """HxWxC float32 as the network sees the file: [0,1] image, or packed normalised raw."""
    return read_packed(path) if is_raw(path) else read_image(path).to_float()


def load_validation(folder: Path, noise: str | None, channels: int, seed: int,
                    kind: str = "srgb") -> ValidationPairs:
    """``noisy/`` + ``clean/`` subfolders paired by name, or clean files given synthetic noise."""
    if not folder.is_dir():
        raise DatasetError(f"--val {folder}: folder not found")
    extensions = RAW_EXTENSIONS if kind == "raw" else IMAGE_EXTENSIONS
    noisy_dir, clean_dir = folder / "noisy", folder / "clean"
    if noisy_dir.is_dir() and clean_dir.is_dir():
        clean_by_stem = {p.stem: p for p in list_images(clean_dir, extensions)}
        pairs = [(p, clean_by_stem[p.stem]) for p in list_images(noisy_dir, extensions) if p.stem in clean_by_stem]
        if not pairs:
            raise DatasetError(f"--val {folder}: no file in noisy/ has a namesake in clean/")
        return ValidationPairs([read_float(a) for a, _ in pairs], [read_float(b) for _, b in pairs])
    if noise is None:
        raise DatasetError(f"--val {folder}: needs noisy/ and clean/ subfolders (or --noise to add noise)")
    spec = parse_noise(noise)
    rng = np.random.default_rng(seed)
    clean = [read_float(p) for p in list_images(folder, extensions)]
    if not clean:
        raise DatasetError(f"--val {folder}: no images")
    return ValidationPairs([spec.apply_numpy(c, rng) for c in clean], clean)


def resolve_init(init: str, kind: str, channels: int) -> tuple[dict[str, torch.Tensor] | None, str]:
    """Weights to warm-start from: the shipped default of this kind, none, or a named model."""
    if init == "none":
        return None, "none"
    try:
        record = default_model(kind) if init == "default" else find_model(init)
    except ModelNotFoundError:
        if init == "default":  # no raw model yet: the first raw fit starts from scratch
            return None, "none"
        raise
    if record.kind != kind or record.in_channels != channels:
        if init == "default":
            return None, "none"
        raise ConfigError(f"--init {init}: a {record.kind} model with {record.in_channels} channels "
                          f"cannot start a {kind} model with {channels}")
    return load_state(record), record.name


def fit(request: FitRequest, on_progress: Callable[[Progress], None] | None = None,
        on_loading: Callable[[int, int], None] | None = None) -> FitOutcome:
    """Train a model on ``request.inputs`` and save it in the store under ``request.name``."""
    check_name(request.name)
    if not request.overwrite and not request.resume and (models_dir() / request.name / "model.json").exists():
        raise ConfigError(f"a model named {request.name!r} exists already; use another --name or --overwrite")
    if request.steps is not None and request.epochs is not None:
        raise ConfigError("give --steps or --epochs, not both")
    if request.noise:
        parse_noise(request.noise)
    device = resolve_device(request.device)
    paths, kind = gather_images(request.inputs, request.kind)
    if kind == "raw":
        images = load_training_images(paths, read_training_raw, channels=4, progress=on_loading,
                                      memory_budget=free_ram() / 2, floor=TRAIN_FLOOR)
    else:
        images = load_training_images(paths, read_pixels, channels=None, progress=on_loading,
                                      memory_budget=free_ram() / 2)
    channels = images.shapes[0][0]
    workers = request.workers
    if workers is None:  # streamed crops need decoding ahead; in-memory crops are cheap
        workers = min(4, os.cpu_count() or 1) if isinstance(images, StreamedImages) else 0
    if request.steps is not None:
        steps = request.steps
    else:
        epochs = request.epochs if request.epochs is not None else PAPER_EPOCHS
        steps = max(1, math.ceil(epochs * len(images.paths) / request.batch_size))
    run_dir = runs_dir() / request.name
    saved = load_checkpoint(run_dir / "checkpoint.pt") if request.resume else None
    init_state, init_name = (None, "resume") if saved else resolve_init(request.init, kind, channels)
    if request.lr is not None:
        lr = request.lr
    elif saved:
        lr = float(saved["config"]["lr"])  # a resume keeps the run's own
    elif kind == "raw":
        lr = RAW_LR
    else:
        lr = WARM_START_LR if init_state is not None else PAPER_LR
    gamma_end = request.gamma_end if request.gamma_end is not None else GAMMA_END[kind]
    config = TrainConfig(
        steps=steps, batch_size=request.batch_size, crop=request.crop, lr=lr,
        gamma_end=gamma_end, gamma_constant=request.gamma_constant, sampler=request.sampler,
        noise=request.noise, seed=request.seed, channels=channels, kind=kind,
        precision=request.precision, compile=request.compile, checkpoint_every=request.checkpoint_every,
    )
    validation = load_validation(request.val, request.noise, channels, request.seed, kind) if request.val else None
    if not request.resume and (run_dir / "checkpoint.pt").exists() and not request.overwrite:
        raise ConfigError(f"an unfinished run named {request.name!r} exists; continue it with --resume "
                          "or start over with --overwrite")
    data_id = fingerprint(images.paths)
    if saved:
        extra = saved.get("extra", {})
        if extra.get("data") not in (None, data_id):
            raise CheckpointError(f"{request.name}: the training files changed since the checkpoint; "
                                  "resume with the same folder")
        init_name = extra.get("init", init_name)
    val_every = max(1, min(request.checkpoint_every, steps // 10 or 1))
    result = train(config, images, device=device, run_dir=run_dir, resume=request.resume, init_state=init_state,
                   workers=workers, validation=validation, val_every=val_every, on_progress=on_progress,
                   extra={"data": data_id, "init": init_name})
    training = {
        "dataset": ", ".join(str(p) for p in request.inputs), "images": len(images.paths),
        "steps": steps, "batch_size": config.batch_size, "crop": config.crop, "lr": config.lr,
        "lr_schedule": "x0.5 at 20/40/60/80 % of steps", "gamma_end": config.gamma_end,
        "gamma": "constant" if config.gamma_constant else "linear ramp from 0", "sampler": config.sampler,
        "seed": config.seed, "init": init_name, "device": str(device), "seconds": round(result.seconds, 1),
        "final_loss": result.final_loss, "noise_added": request.noise,
    }
    metrics = {"val_psnr": round(result.val_psnr, 3)} if result.val_psnr is not None else {}
    record = save_model(request.name, result.model, kind=kind, noise=request.noise or "real (as in the images)",
                        training=training, metrics=metrics, overwrite=True)
    (run_dir / "checkpoint.pt").unlink(missing_ok=True)  # the run is finished: its model is in the store
    return FitOutcome(record, result, len(images.paths), images.skipped, init_name)

