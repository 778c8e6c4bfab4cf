"""`n2n fit` as a library call: gather images, pick the warm start, train, store the model.

The same call trains in one process, in each process of a torchrun job (DDP), or starts
``gpus`` local processes itself; see docs/distributed.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from n2ncli.data import LoadedImages, StreamedImages, load_training_images
from n2ncli.device import free_ram, resolve_device
from n2ncli.distributed import (DistributedError, World, agreed, env_world_size, join_from_env, launch,
                                per_process_batch)
from n2ncli.errors import CheckpointError, ConfigError, DatasetError, ModelNotFoundError
from n2ncli.io.image import IMAGE_EXTENSIONS, float_to_native, list_images, read_image
from n2ncli.io.raw import RAW_EXTENSIONS, TRAIN_FLOOR, is_raw, read_packed, read_training_raw
from n2ncli.noise import parse_noise
from n2ncli.pd import CORRELATED, CORRELATED_STRIDE, median_correlation, median_correlations, parse_pd
from n2ncli.selfcheck import (COLOUR_LIMIT, HeldOut, SelfCheck, held_out_colour, held_out_loss, loss_can_tell,
                              split_held_out)
from n2ncli.store import (ModelRecord, check_name, correlated_default, default_model, find_model, grey_default,
                          load_state, models_dir, runs_dir, save_model, slugify, trained_blend)
from n2ncli.train import (Progress, TrainConfig, TrainResult, ValidationPairs, load_checkpoint, train,
                          training_autocast)

PAPER_EPOCHS = 100
PAPER_LR = 3e-4
#: The paper's raw settings (SIDD): lr 1e-4 and gamma ramping to 1 instead of 2.
RAW_LR = 1e-4
GAMMA_END = {"srgb": 2.0, "raw": 1.0}
KINDS = ("auto", "srgb", "raw")
#: Fine-tuning the shipped model at the paper's 3e-4 first loses ~0.5 dB before it gains;
#: 1e-4 is better at every point measured (docs/benchmarks.md, warm start).
WARM_START_LR = 1e-4
BATCH_SIZE = 4  # crops per process and step, the paper's batch
LR_SCALINGS = ("none", "linear")
SHARDINGS = ("auto", "shard", "replicate")
#: A fit from scratch (``--init none``) shorter than this is reported as trained too briefly: on
#: colorchart.dng 20, 100, 400 and 1500 steps (batch 4, crop 64) all shifted a channel's mean by
#: 23-350 % (a pink field at 20); the shipped from-scratch srgb-gaussian5-50 took 16242 steps of 32 crops.
SCRATCH_MIN_STEPS = 10_000


@dataclass(frozen=True)
class FitRequest:
    """What the user asked for; ``steps``/``epochs`` None means the paper's 100 epochs."""

    inputs: tuple[Path, ...]
    name: str
    noise: str | None = None
    steps: int | None = None
    epochs: float | None = None
    batch_size: int | None = None  # per process; None: 4 (a resume keeps the run's global batch)
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
    gpus: int = 1  # local processes to start (DDP); under torchrun leave 1, the job gives the processes
    lr_scaling: str = "none"  # linear: lr x number of processes
    sharding: str = "auto"  # with several processes: each decodes its own share of the files?
    pd: str = "auto"  # pixel-shuffle stride of the training inputs: auto (from the images' noise), 1, 2, 3
    self_check: bool = True  # hold back a few images and measure the fit on them


@dataclass(frozen=True)
class FitOutcome:
    record: ModelRecord
    result: TrainResult
    images: int
    skipped: tuple[str, ...]
    init: str
    pd: int = 1
    pd_reason: str = ""
    check: SelfCheck | None = None
    resumed_from: int | None = None  # the checkpoint's step, for a resumed run
    unchecked: str = ""  # why a fit that was to check itself could not (too few pixels to hold back, streamed, DDP)
    raw_default: str | None = None  # raw fits: the default raw model after this one (None: there is none)

    @property
    def too_brief(self) -> bool:
        """Trained from scratch for fewer than SCRATCH_MIN_STEPS steps."""
        return self.init == "none" and self.result.steps < SCRATCH_MIN_STEPS


def default_name(inputs: Sequence[Path]) -> str:
    """The model name ``fit`` uses when none is given: the first input's folder (or file stem)
    as a slug, so a folder such as ``Photos-été/`` or ``.shots/`` still gives a valid name."""
    if not inputs:
        raise ConfigError("no inputs to name the model after; give --name")
    base = Path(inputs[0]).resolve()
    return slugify(base.stem if base.is_file() else base.name)


def choose_training_stride(request: FitRequest, kind: str, images: LoadedImages | StreamedImages) -> tuple[int, str]:
    """The PD stride of a fit, and why: the user's, 1 for raws and synthetic noise (independent
    per pixel), else measured on the photos (median ``noise_correlation`` of up to 8 of them)."""
    chosen = parse_pd(request.pd)
    if chosen is not None:
        return chosen, "--pd"
    if kind == "raw" or request.noise:
        return 1, "raw mosaics" if kind == "raw" else "synthetic noise is independent per pixel"
    picks = np.linspace(0, len(images.paths) - 1, min(8, len(images.paths))).astype(int)
    c = median_correlation(read_image(images.paths[i]).to_float() for i in sorted(set(picks)))
    stride = CORRELATED_STRIDE if c > CORRELATED else 1
    if stride > 1 and request.crop // stride < 32:  # sub-images under the U-Net's 32 px
        return 1, f"noise correlation {c:.2f}, but --crop {request.crop} is too small for PD{stride}"
    return stride, f"noise correlation {c:.2f} ({'>' if stride > 1 else '<='} {CORRELATED})"


def gather_images(inputs: Sequence[Path], kind: str = "auto") -> tuple[list[Path], str]:
    """Training files from files and folders, in a stable order, and their kind (srgb or raw).

    ``auto`` trains on raws when every file is raw, on images when none is; a folder mixing
    both needs ``kind`` to say which to use (the other files are left out).
    """
    if kind not in KINDS:
        raise ConfigError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    from n2ncli.jobs import is_denoised_output

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
        what = "raw files" if kind == "raw" else "images (PNG, JPEG, TIFF, HEIC, AVIF, WebP)"
        raise DatasetError(f"no {what} in {', '.join(map(str, inputs))}")
    return chosen, kind


def pairs_fit_request(folder: Path, noisy: Sequence[Path], steps: int, device: str = "auto",
                      prefix: str = "eval-fit") -> FitRequest:
    """The fit ``eval --pairs FOLDER --fit-first`` runs on the pairs' noisy images: the fit's own
    defaults (PD and warm start from their noise), stored as ``<prefix>-<folder>``, replacing an
    earlier one, one checkpoint at the end."""
    name = f"{prefix}-{slugify(Path(folder).resolve().name, max_len=48)}"
    return FitRequest(inputs=tuple(noisy), name=name, steps=steps, device=device, overwrite=True,
                      checkpoint_every=max(steps, 1))


def fingerprint(paths: Sequence[Path]) -> str:
    """Names and sizes of the training files: a resume on different data is refused."""
    return _digest(_file_line(p) for p in paths)


def _file_line(path: Path) -> str:
    return f"{path.name}:{path.stat().st_size}"


def _digest(lines: Iterable[str]) -> str:
    h = hashlib.sha256()
    for line in lines:
        h.update(f"{line}\n".encode())
    return h.hexdigest()[:16]


def read_pixels(path: Path) -> np.ndarray:
    """Native uint8/uint16 pixels for the training store; float TIFFs as 16-bit of their [0,1] part."""
    data = read_image(path)
    return float_to_native(data.to_float(), 16) if data.is_float else data.pixels


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


def resolve_init(init: str, kind: str, channels: int, correlated: bool = False) -> tuple[dict[str, torch.Tensor] | None, str]:
    """Weights to warm-start from: the shipped default of this kind, none, or a named model.

    ``correlated``: photos whose noise is correlated between pixels (camera JPEGs) start from the
    real-photo model, which ``denoise`` would use on them, rather than the blind default.
    Greyscale photos start from the shipped grey model.
    """
    if init == "none":
        return None, "none"
    try:
        photo = None
        if init == "default" and kind == "srgb":
            photo = grey_default() if channels == 1 else correlated_default() if correlated else None
        record = photo or (default_model(kind) if init == "default" else find_model(init))
    except ModelNotFoundError:
        if init == "default":  # no model of this kind installed: start from scratch
            return None, "none"
        raise
    if record.kind != kind or record.in_channels != channels:
        if init == "default":
            return None, "none"
        raise ConfigError(f"--init {init}: a {record.kind} model with {record.in_channels} channels "
                          f"cannot start a {kind} model with {channels}")
    return load_state(record), record.name


def _inherited_blend(init_name: str) -> float:
    """The ``pd_blend`` of the model a fit started from (0 from scratch or for an unknown one)."""
    if init_name in ("none", "resume"):
        return 0.0
    try:
        return trained_blend(find_model(init_name))
    except ModelNotFoundError:
        return 0.0


def scale_lr(lr: float, scaling: str, processes: int) -> float:
    """The learning rate of a run over ``processes`` processes: ``linear`` multiplies by their number."""
    if scaling not in LR_SCALINGS:
        raise ConfigError(f"--lr-scaling must be one of {', '.join(LR_SCALINGS)}, got {scaling!r}")
    return lr * processes if scaling == "linear" else lr


def fit(request: FitRequest, on_progress: Callable[[Progress], None] | None = None,
        on_loading: Callable[[int, int], None] | None = None) -> FitOutcome:
    """Train a model on ``request.inputs`` and save it in the store under ``request.name``.

    Under torchrun (WORLD_SIZE > 1) every process calls this and they train one model together;
    ``request.gpus > 1`` starts that many local processes first. Either way only rank 0 writes
    checkpoints and the model and calls ``on_progress``/``on_loading``; every rank returns the outcome.
    """
    _check_request(request)
    if request.gpus > 1:
        return _launch(request, on_progress, on_loading)
    world = join_from_env(request.device)
    try:
        return _fit(request, world, on_progress, on_loading)
    finally:
        world.close()


def _check_request(request: FitRequest) -> None:
    """What can be refused before any image is read or process started."""
    check_name(request.name)
    if request.steps is not None and request.epochs is not None:
        raise ConfigError("give --steps or --epochs, not both")
    if request.noise:
        parse_noise(request.noise)
    if request.batch_size is not None and request.batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {request.batch_size}")
    if request.gpus < 1:
        raise ConfigError(f"--gpus must be >= 1, got {request.gpus}")
    scale_lr(1.0, request.lr_scaling, 1)
    if request.sharding not in SHARDINGS:
        raise ConfigError(f"--sharding must be one of {', '.join(SHARDINGS)}, got {request.sharding!r}")
    parse_pd(request.pd)


def _check_store(request: FitRequest) -> None:
    """Refuse to replace a model or an unfinished run by accident (rank 0: the store is its)."""
    if not request.overwrite and not request.resume and (models_dir() / request.name / "model.json").exists():
        raise ConfigError(f"a model named {request.name!r} exists already; use another --name or --overwrite")
    if not request.resume and (runs_dir() / request.name / "checkpoint.pt").exists() and not request.overwrite:
        raise ConfigError(f"an unfinished run named {request.name!r} exists; continue it with --resume "
                          "or start over with --overwrite")


def _fit(request: FitRequest, world: World, on_progress: Callable[[Progress], None] | None,
         on_loading: Callable[[int, int], None] | None) -> FitOutcome:
    """The fit of one process (rank ``world.rank`` of ``world.size``)."""
    training_autocast(world.device, request.precision)  # refuse fp16 on CPU before loading any image
    world.on_main(lambda: _check_store(request), share=False)
    paths, kind = world.everywhere(lambda: gather_images(request.inputs, request.kind))
    if world.distributed:  # shards and plans index one list: every rank must see the same files
        listings = world.all_gather(_digest(map(str, paths)))
        if len(set(listings)) > 1:
            other = next(r for r, d in enumerate(listings) if d != listings[0])
            raise agreed(DatasetError(f"rank {other} of {world.size} sees other training files than rank 0 in "
                                      f"{', '.join(map(str, request.inputs))}; every machine needs the same folder"))
    data = _load_images(paths, kind, world, request.sharding, on_loading if world.is_main else None)
    images = data.images
    channels = images.shapes[0][0]
    workers = request.workers
    if workers is None:  # streamed crops need decoding ahead; in-memory crops are cheap
        cores = max(1, (os.cpu_count() or 1) // world.local_size)
        workers = min(4, cores) if isinstance(images, StreamedImages) else 0
    run_dir = runs_dir() / request.name
    saved = world.on_main(lambda: load_checkpoint(run_dir / "checkpoint.pt")) if request.resume else None
    global_batch = _global_batch(request, saved, world.size)
    if request.steps is not None:
        steps = request.steps
    else:
        epochs = request.epochs if request.epochs is not None else PAPER_EPOCHS
        steps = max(1, math.ceil(epochs * data.count / global_batch))
    if saved:
        stride, stride_reason = int(saved["config"].get("pd", 1)), "resumed run"
    else:
        stride, stride_reason = world.everywhere(lambda: choose_training_stride(request, kind, images))
    init_state, init_name = (None, "resume") if saved else world.on_main(
        lambda: resolve_init(request.init, kind, channels, correlated=stride > 1 and not request.noise))
    if request.lr is not None:
        lr = scale_lr(request.lr, request.lr_scaling, world.size)
    elif saved:
        lr = float(saved["config"]["lr"])  # a resume keeps the run's own, whatever the processes
    elif kind == "raw":
        lr = scale_lr(RAW_LR, request.lr_scaling, world.size)
    else:
        lr = scale_lr(WARM_START_LR if init_state is not None else PAPER_LR, request.lr_scaling, world.size)
    gamma_end = request.gamma_end if request.gamma_end is not None else GAMMA_END[kind]
    config = TrainConfig(
        steps=steps, batch_size=global_batch, crop=request.crop, lr=lr,
        gamma_end=gamma_end, gamma_constant=request.gamma_constant, sampler=request.sampler,
        noise=request.noise, seed=request.seed, channels=channels, kind=kind, pd=stride,
        clip_aware=kind == "srgb" and not request.noise and not (saved and "clip_aware" not in saved["config"]),
        precision=request.precision, compile=request.compile, checkpoint_every=request.checkpoint_every,
    )
    held, unchecked = HeldOut(), ""
    if request.self_check and world.size == 1 and isinstance(images, LoadedImages):
        images, held = split_held_out(images, 64 * stride)
        unchecked = "" if held.arrays else "the images are too small to hold a strip back"
    elif request.self_check:
        unchecked = "a run over several processes" if world.size > 1 else "the images stream from the files"
    held_luma = _held_luma(held) if held.arrays and kind == "srgb" and not request.noise else None
    if not loss_can_tell(held_luma) and on_progress is not None:
        on_progress(Progress("unverifiable", 0, steps, noise_luma=held_luma))  # said before a long run, not after
    start_model = _init_model(init_state, channels)
    before = held_out_loss(start_model, held.arrays, config) if held.arrays else None
    colour_before = held_out_colour(start_model, held.arrays, config) if held.arrays else None
    validation = world.on_main(
        lambda: load_validation(request.val, request.noise, channels, request.seed, kind),
        share=False) if request.val else None
    lr_scaling = request.lr_scaling
    if saved:
        extra = saved.get("extra", {})
        if extra.get("data") not in (None, data.fingerprint):
            raise CheckpointError(f"{request.name}: the training files changed since the checkpoint; "
                                  "resume with the same folder")
        init_name = extra.get("init", init_name)
        lr_scaling = extra.get("lr_scaling", "none")
    val_every = max(1, min(request.checkpoint_every, steps // 10 or 1))
    result = train(config, images, device=world.device, run_dir=run_dir, resume=request.resume,
                   init_state=init_state, workers=workers, validation=validation, val_every=val_every,
                   on_progress=on_progress,
                   extra={"data": data.fingerprint, "init": init_name, "lr_scaling": lr_scaling},
                   world=world, state=saved, sharded=data.sharded)
    training = {
        "dataset": ", ".join(str(p) for p in request.inputs), "images": data.count,
        "steps": steps, "batch_size": config.batch_size, "crop": config.crop, "lr": config.lr,
        "lr_schedule": "x0.5 at 20/40/60/80 % of steps", "gamma_end": config.gamma_end,
        "gamma": "constant" if config.gamma_constant else "linear ramp from 0", "sampler": config.sampler,
        "seed": config.seed, "init": init_name, "device": str(world.device) if world.size == 1 else world.device.type,
        "processes": world.size, "lr_scaling": lr_scaling,
        "sharding": "shard" if data.sharded else "none" if world.size == 1 else "replicate",
        "seconds": round(result.seconds, 1), "final_loss": result.final_loss, "noise_added": request.noise,
    }
    metrics = {"val_psnr": round(result.val_psnr, 3)} if result.val_psnr is not None else {}
    check = None
    if held.arrays and before is not None and math.isfinite(before):
        check = SelfCheck(len(held.arrays), before, held_out_loss(result.model, held.arrays, config),
                          "the warm-start model" if init_state is not None else "the noisy input",
                          colour_before=colour_before, colour_after=held_out_colour(result.model, held.arrays, config),
                          colour_limit=COLOUR_LIMIT[kind], held="strips" if held.strips else "images",
                          noise_luma=held_luma)
        training["held_out"] = list(held.sources)
    training["pd"] = stride
    training["clip_aware"] = config.clip_aware

    def store() -> ModelRecord:
        extra = {"pd": stride, **({"self_check": check.to_json()} if check else {})}
        blend = _inherited_blend(init_name) if stride > 1 else 0.0
        if blend:  # a fine-tune of srgb-camera errs as it does: --pd auto keeps its blend
            extra["pd_blend"] = blend
        record = save_model(request.name, result.model, kind=kind, noise=request.noise or "real (as in the images)",
                            training=training, metrics=metrics, overwrite=True, extra=extra)
        (run_dir / "checkpoint.pt").unlink(missing_ok=True)  # the run is finished: its model is in the store
        return record

    record = world.on_main(store)
    raw_default = world.on_main(_raw_default) if kind == "raw" else None
    return FitOutcome(record, result, data.count, data.skipped, init_name, stride, stride_reason, check,
                      resumed_from=int(saved["step"]) if saved else None, unchecked=unchecked,
                      raw_default=raw_default)


def _held_luma(held: HeldOut) -> float:
    """The held-out photos' median luma noise statistic: whether their self-check can tell."""
    return median_correlations([a.transpose(1, 2, 0) for a in held.arrays])[0]


def _raw_default() -> str | None:
    """The raw model ``denoise`` now uses when none is named (None: none, ``-m`` is needed)."""
    try:
        return default_model("raw").name
    except ModelNotFoundError:
        return None


def _init_model(state: dict[str, torch.Tensor] | None, channels: int) -> torch.nn.Module | None:
    """The network a fit starts from (None: from scratch, scored as the identity)."""
    if state is None:
        return None
    from n2ncli.nets.unet import UNet

    model = UNet(channels)
    model.load_state_dict(state)
    return model


def _global_batch(request: FitRequest, saved: dict[str, Any] | None, processes: int) -> int:
    """Crops per step over all processes: per-process batch x processes, or a resumed run's own."""
    if saved is None:
        return (request.batch_size or BATCH_SIZE) * processes
    run = int(saved["config"]["batch_size"])
    if request.batch_size is not None and request.batch_size * processes != run:
        raise ConfigError(f"--batch-size {request.batch_size} over {processes} process(es) makes a global batch of "
                          f"{request.batch_size * processes}, but the run's is {run}; leave --batch-size out "
                          "when resuming (each process then takes its share)")
    per_process_batch(run, processes)
    return run


@dataclass(frozen=True)
class _TrainingData:
    images: LoadedImages | StreamedImages  # this rank's: all usable images, or its shard
    count: int  # usable images of all ranks
    skipped: tuple[str, ...]  # of all ranks
    fingerprint: str  # of all usable files, as one process would compute it
    sharded: bool


def _load_images(paths: list[Path], kind: str, world: World, sharding: str,
                 progress: Callable[[int, int], None] | None) -> _TrainingData:
    """Decode the training files: all of them in every process, or each process its own shard.

    ``auto`` shards only when the decoded set is larger than one process's memory budget: smaller
    sets are replicated, so N processes train exactly as one process with N times the batch.
    """
    budget = free_ram() / 2 / world.local_size

    def load(files: list[Path]) -> LoadedImages | StreamedImages:
        if kind == "raw":  # packed mosaics, uint16 with values below black kept (TRAIN_FLOOR)
            return load_training_images(files, read_training_raw, channels=4, progress=progress,
                                        memory_budget=budget, floor=TRAIN_FLOOR)
        return load_training_images(files, read_pixels, channels=None, progress=progress, memory_budget=budget)

    def replicated() -> _TrainingData:
        images = world.everywhere(lambda: load(paths))
        return _TrainingData(images, len(images.paths), images.skipped, fingerprint(images.paths), False)

    if not world.distributed or sharding == "replicate":
        return replicated()
    mine = paths[world.rank::world.size]

    def load_shard() -> LoadedImages | StreamedImages:
        try:
            return load(mine)
        except DatasetError as exc:
            raise DatasetError(f"the shard of {world.describe()} ({len(mine)} of {len(paths)} files): {exc}; "
                               "use fewer processes or --sharding replicate") from None

    shard = world.everywhere(load_shard)
    index = {p: i for i, p in enumerate(paths)}
    summary = world.all_gather((shard.nbytes, shard.shapes[0][0],
                                [(index[p], _file_line(p)) for p in shard.paths], shard.skipped))
    if sharding == "auto" and sum(s[0] for s in summary) <= budget:
        del shard
        return replicated()
    if len({s[1] for s in summary}) > 1:
        raise agreed(DatasetError("the files mix grey and colour images and some shards hold only grey ones; "
                                  "use --sharding replicate"))
    lines = sorted(line for s in summary for line in s[2])
    skipped = tuple(line for s in summary for line in s[3])
    return _TrainingData(shard, len(lines), skipped, _digest(text for _, text in lines), True)


def _launch(request: FitRequest, on_progress: Callable[[Progress], None] | None,
            on_loading: Callable[[int, int], None] | None) -> FitOutcome:
    """``--gpus N``: start N local ranks (torchrun's launcher as a library) and relay rank 0's progress."""
    if env_world_size() > 1:
        raise ConfigError("--gpus starts its own processes; under torchrun leave it out")
    n = request.gpus
    device = resolve_device(request.device)
    if device.type == "cuda" and n > torch.cuda.device_count():
        raise ConfigError(f"--gpus {n}: only {torch.cuda.device_count()} CUDA GPU(s) visible")
    if device.type == "cpu" and request.device.lower() != "cpu":
        raise ConfigError(f"--gpus {n} needs {n} CUDA GPUs and none is visible; "
                          f"add --device cpu to run {n} CPU processes (gloo; for testing)")
    if device.type not in ("cuda", "cpu"):
        raise ConfigError(f"--device {device.type}: distributed training runs on CUDA GPUs (NCCL) or CPUs (gloo)")
    _check_store(request)
    if request.resume:  # refuse a resume that cannot split over n processes before starting them
        _global_batch(request, load_checkpoint(runs_dir() / request.name / "checkpoint.pt"), n)

    def relay(message: tuple[str, Any]) -> None:
        kind, payload = message
        if kind == "progress" and on_progress:
            on_progress(payload)
        elif kind == "loading" and on_loading:
            on_loading(*payload)

    try:
        return launch(_fit_rank, (dataclasses.replace(request, gpus=1),), n, on_message=relay)
    except DistributedError as exc:
        checkpoint = runs_dir() / request.name / "checkpoint.pt"
        if not checkpoint.is_file():
            raise
        step = load_checkpoint(checkpoint)["step"]
        raise DistributedError(f"{exc}; the checkpoint at step {step} is kept, continue with --resume") from None


def _fit_rank(request: FitRequest, send: Any) -> FitOutcome:
    """One rank started by ``_launch``: rank 0 sends its progress to the launching process."""
    return fit(request, on_progress=lambda p: send.put(("progress", p)),
               on_loading=lambda done, total: send.put(("loading", (done, total))))
