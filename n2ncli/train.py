"""Self-supervised training loop: checkpoints, exact resume, progress through a callback, DDP.

Every random draw of step k comes from generators seeded by (seed, k): the crops from one per
step, the synthetic noise and sub-sampler masks from one per sample of the batch, keyed by
(seed, k, sample index). The learning rate and gamma are functions of k. So a run resumed from a
checkpoint at step k continues exactly as the uninterrupted run would have, and N processes that
each take their slice of a batch draw what one process with the whole batch would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from n2ncli.data import CropBatches, DeviceCropSource, LoadedImages, RankSlice
from n2ncli.device import autocast_dtype
from n2ncli.distributed import DistributedError, World, agreed, first_line, is_peer_failure, per_process_batch
from n2ncli.errors import CheckpointError, ConfigError, N2nError, TrainingInterrupted  # noqa: F401 - re-exported
from n2ncli.fsutil import atomic_path
from n2ncli.loss import GammaSchedule, level_weights, n2n_loss
from n2ncli.nets.unet import UNet
from n2ncli.noise import parse_noise
from n2ncli.pd import STRIDES as PD_STRIDES
from n2ncli.pd import split_torch
from n2ncli.sampler import SAMPLERS

CHECKPOINT_FORMAT = "n2ncli-checkpoint-1"
#: Settings that do not change what a run computes: a resume may change them.
BOOKKEEPING = frozenset({"checkpoint_every", "checkpoint_seconds", "compile", "precision"})
#: Decoded training sets up to this size live on the GPU (crops then cost one gather).
DEVICE_CACHE_BYTES = 8 << 30
#: Steps in a row whose gradients are not finite (each one skipped) before the run counts as
#: diverged. fp16 loss scaling alone skips a few while it finds its scale.
MAX_SKIPPED_STEPS = 20


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what a run computes; saved in every checkpoint and model."""

    steps: int
    batch_size: int = 4  # crops per step in all processes together (the global batch)
    crop: int = 256
    lr: float = 3e-4
    lr_milestones: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)
    lr_decay: float = 0.5
    lr_schedule: str = "step"  # step (paper) | cosine
    warmup_steps: int = 0
    gamma_end: float = 2.0
    gamma_constant: bool = False
    sampler: str = "random"
    pd: int = 1  # pixel-shuffle stride: each crop trains as its pd*pd sub-images (n2ncli.pd)
    target: str = "same"  # same: g2 from the input itself (the paper); independent: from a second noise draw
    full_pd: int = 1  # stride of f(y) in the regulariser (as the model's inference --pd)
    clip_aware: bool = False  # leave clipped target pixels out of the loss (8-bit photos)
    level_weight: float = 0.0  # weigh each crop's loss by its noise variance^-this (n2ncli.loss.level_weights)
    noise: str | None = None  # None: the images are already noisy (the default use)
    seed: int = 0
    channels: int = 3
    kind: str = "srgb"
    net_init: str = "torch"
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = False
    clip_spikes: float = 4.0  # clip gradients over this x their running norm (0 = off)
    checkpoint_every: int = 500
    checkpoint_seconds: float = 300.0

    def __post_init__(self) -> None:
        checks = [
            (self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (self.crop >= 32 and self.crop % 2 == 0, f"crop must be even and >= 32, got {self.crop}"),
            (self.lr > 0, f"learning rate must be > 0, got {self.lr}"),
            (self.sampler in SAMPLERS, f"sampler must be one of {SAMPLERS}, got {self.sampler!r}"),
            (self.pd in PD_STRIDES, f"pd must be one of {PD_STRIDES}, got {self.pd!r}"),
            (self.full_pd in PD_STRIDES, f"full_pd must be one of {PD_STRIDES}, got {self.full_pd!r}"),
            (self.target in ("same", "independent"), f"target must be same or independent, got {self.target!r}"),
            (self.target == "same" or self.noise is not None, "an independent target needs synthetic noise"),
            (self.level_weight == 0 or self.target == "independent",
             "noise-level weights need an independent target (two draws measure the level)"),
            (0 <= self.level_weight <= 2, f"level weight must be in [0, 2], got {self.level_weight}"),
            (self.crop // self.pd >= 32, f"crop {self.crop} is too small for pd {self.pd} (sub-images under 32 px)"),
            (self.lr_schedule in ("step", "cosine"), f"lr schedule must be step or cosine, got {self.lr_schedule!r}"),
            (self.checkpoint_every >= 1, "checkpoint interval must be >= 1"),
            (self.net_init in ("torch", "official"), f"network init must be torch or official, got {self.net_init!r}"),
            (self.precision in ("auto", "fp32", "bf16", "fp16"), f"precision must be auto, fp32, bf16 or fp16, got {self.precision!r}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
        GammaSchedule(self.gamma_end)  # validates
        if self.noise is not None:
            parse_noise(self.noise)

    def lr_at(self, step: int) -> float:
        """Learning rate of step ``step`` (0-based): the paper's halvings, or cosine, after warm-up."""
        if self.warmup_steps and step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        progress = step / self.steps
        if self.lr_schedule == "cosine":
            return self.lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        passed = sum(progress >= m for m in self.lr_milestones)
        return self.lr * self.lr_decay**passed

    def gamma_at(self, step: int) -> float:
        return GammaSchedule(self.gamma_end, constant=self.gamma_constant)(step / self.steps)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise CheckpointError(f"checkpoint has unknown settings: {', '.join(sorted(unknown))}")
        data = dict(data)
        data["lr_milestones"] = tuple(data.get("lr_milestones", ()))
        return cls(**data)


@dataclass(frozen=True)
class Progress:
    """What the trainer reports to its caller (the CLI draws it; tests read it)."""

    event: str  # "resumed" | "step" | "checkpoint" | "validation" | "done" | "interrupted" | "unverifiable"
    step: int
    total: int
    loss: float = math.nan
    reconstruction: float = math.nan
    regulariser: float = math.nan
    gamma: float = math.nan
    lr: float = math.nan
    steps_per_second: float = math.nan
    val_psnr: float | None = None
    checkpoint: Path | None = None
    noise_luma: float | None = None  # "unverifiable" (from fit, before training): the held-out photos' statistic


@dataclass
class TrainResult:
    model: UNet
    steps: int
    seconds: float
    final_loss: float
    val_psnr: float | None
    history: list[tuple[int, float]] = field(default_factory=list)
    skipped_steps: int = 0  # steps of this call whose gradients were not finite (no update made)


@dataclass(frozen=True)
class ValidationPairs:
    """Noisy/clean float32 HxWxC pairs in [0,1] scored by PSNR during training."""

    noisy: Sequence[np.ndarray]
    clean: Sequence[np.ndarray]


def sample_generator(seed: int, step: int, sample: int, device: torch.device) -> torch.Generator:
    """Device-side generator of one sample of step ``step`` (its noise and sub-sampler draws).

    ``sample`` is the index in the global batch: whichever process cuts that crop draws the same.
    """
    g = torch.Generator(device=device)
    key = np.random.SeedSequence([seed, step, sample]).generate_state(1, np.uint64)[0]
    g.manual_seed(int(key) >> 1)
    return g


def save_checkpoint(path: Path, config: TrainConfig, model: UNet, optimizer: torch.optim.Optimizer,
                    step: int, elapsed: float, extra: dict[str, Any], grad_ema: float | None = None,
                    scaler: torch.amp.GradScaler | None = None) -> None:
    """Atomic checkpoint: a kill mid-write leaves the previous one intact.

    ``scaler``: the fp16 loss scale, so a resumed run does not search for it again (older
    checkpoints have none; they resume with a fresh one).
    """
    state = {
        "format": CHECKPOINT_FORMAT, "config": config.to_dict(), "step": step, "elapsed": elapsed,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(), "extra": extra, "grad_ema": grad_ema,
        "scaler": scaler.state_dict() if scaler is not None else None,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"no checkpoint to resume at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise CheckpointError(f"{path}: checkpoint is unreadable ({exc.__class__.__name__})") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not an n2ncli checkpoint")
    return state


def training_autocast(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype training uses; fp16 only on CUDA, where its loss scaler runs."""
    amp = autocast_dtype(device, precision)
    if amp == torch.float16 and device.type != "cuda":
        raise ConfigError(f"--precision fp16 trains on CUDA GPUs only (float16 gradients need loss scaling); "
                          f"on {device.type} use --precision bf16 (or fp32)")
    return amp


def _strip_compiled(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix("_orig_mod."): v for k, v in state.items()}


def train(config: TrainConfig, images: LoadedImages, *, device: torch.device, run_dir: Path,
          resume: bool = False, init_state: dict[str, torch.Tensor] | None = None,
          workers: int = 0, validation: ValidationPairs | None = None, val_every: int | None = None,
          on_progress: Callable[[Progress], None] | None = None,
          extra: dict[str, Any] | None = None, world: World | None = None,
          state: dict[str, Any] | None = None, sharded: bool = False,
          max_seconds: float | None = None) -> TrainResult:
    """Train a U-Net with Neighbor2Neighbor on ``images``; checkpoints go to ``run_dir``.

    ``init_state`` warm-starts the network (ignored on resume). ``extra`` is stored in the
    checkpoint (e.g. the data fingerprint, so a resume on other data can be refused). ``state``
    is the checkpoint to resume from when the caller has read it already.

    Under DDP (``world`` of several ranks) every rank calls this with the same config: each
    computes ``config.batch_size / world.size`` crops of every step (its slice of the one-process
    batch, or crops of its own shard of the files if ``sharded``), gradients are averaged, and
    only rank 0 checkpoints, validates and reports progress.

    ``max_seconds`` ends a single-process run early, after the step that passes it (a time-bounded
    fine-tune such as ``denoise --adapt``); the result then says how many steps ran.
    """
    world = world or World(device=device)
    amp = training_autocast(device, config.precision)
    is_main = world.is_main
    report = (on_progress or (lambda p: None)) if is_main else (lambda p: None)
    ckpt_path = run_dir / "checkpoint.pt"
    if resume and state is None:
        state = world.on_main(lambda: load_checkpoint(ckpt_path))
    run = _restore(config, device, amp, state if resume else None, init_state)
    ddp = None
    if world.distributed:
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(run.model, device_ids=[device.index] if device.type == "cuda" else None)
    net = run.model if ddp is None else ddp
    net = torch.compile(net) if config.compile else net
    noise = parse_noise(config.noise) if config.noise else None
    per_rank = per_process_batch(config.batch_size, world.size)

    batches = _batch_stream(config, images, device, run.start_step, workers, RankSlice(world.rank, world.size, sharded))
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    last_ckpt_time, rate, loss_value = t0, math.nan, math.nan
    history: list[tuple[int, float]] = []
    val_psnr: float | None = None
    completed = run.start_step
    stop = _GracefulStop(terminate=world.distributed)
    last_saved = run.start_step if resume else None  # rank 0's

    def checkpoint(at: int) -> None:
        nonlocal last_saved
        if is_main:
            save_checkpoint(ckpt_path, config, run.model, run.optimizer, at, run.elapsed0 + time.perf_counter() - t0,
                            extra or {}, run.grad_ema, run.scaler)
            last_saved = at

    if resume:
        report(Progress("resumed", run.start_step, config.steps))
    try:
        stop.install()
        for step in range(run.start_step, config.steps):
            lr, gamma = config.lr_at(step), config.gamma_at(step)
            for group in run.optimizer.param_groups:
                group["lr"] = lr
            run.optimizer.zero_grad(set_to_none=True)
            loss_sum, rec_sum, reg_sum = _backward(config, net, ddp, noise, next(batches), step, gamma, device, amp,
                                                   run.scaler, per_rank)
            stop_now = None
            if world.distributed:  # every rank sees the global loss and whether any was asked to stop
                totals = world.sum(torch.tensor([loss_sum, rec_sum, reg_sum, float(stop.requested)],
                                                dtype=torch.float64, device=device)).tolist()
                loss_sum, rec_sum, reg_sum = (v / world.size for v in totals[:3])
                stop_now = totals[3] > 0
            _update(config, run, loss_sum, step)
            completed = done = step + 1
            loss_value = loss_sum
            now = time.perf_counter()
            rate = (done - run.start_step) / max(now - t0, 1e-9)
            if done % 25 == 0 or done == config.steps:
                history.append((done, loss_value))
            report(Progress("step", done, config.steps, loss_value, rec_sum, reg_sum, gamma, lr, rate))
            if is_main and validation is not None and val_every and (done % val_every == 0 or done == config.steps):
                val_psnr = validate(run.model, validation, device)
                report(Progress("validation", done, config.steps, loss_value, val_psnr=val_psnr))
            if done % config.checkpoint_every == 0 or now - last_ckpt_time > config.checkpoint_seconds:
                checkpoint(done)
                last_ckpt_time = now
                report(Progress("checkpoint", done, config.steps, loss_value, checkpoint=ckpt_path))
            if stop.requested if stop_now is None else stop_now:
                raise KeyboardInterrupt
            if max_seconds is not None and not world.distributed and now - t0 > max_seconds:
                break
    except KeyboardInterrupt:
        if stop.hard:  # a second Ctrl-C may have landed inside optimizer.step: keep the last good file
            raise TrainingInterrupted(
                f"stopped at once; the last checkpoint ({ckpt_path}) is intact, continue with --resume") from None
        checkpoint(completed)
        report(Progress("interrupted", completed, config.steps, loss_value, checkpoint=ckpt_path))
        world.barrier()  # the checkpoint is on disk before any rank exits (a launcher then ends the rest)
        raise agreed(TrainingInterrupted(f"interrupted at step {completed}/{config.steps}; checkpoint saved to "
                                         f"{ckpt_path}, continue with --resume")) from None
    except Exception as exc:
        if not world.distributed or not (isinstance(exc, _Terminated) or is_peer_failure(exc)):
            raise
        raise _lost_peers(world, exc, completed, last_saved) from None
    finally:
        stop.uninstall()
    checkpoint(completed)
    seconds = run.elapsed0 + time.perf_counter() - t0
    report(Progress("done", completed, config.steps, loss_value, steps_per_second=rate, val_psnr=val_psnr))
    model = run.model.to("cpu", memory_format=torch.contiguous_format).eval()
    return TrainResult(model, completed, seconds, loss_value, val_psnr, history, run.skipped)


@dataclass
class _Run:
    """The mutable state of a training run: network, optimizer, loss scaler and counters."""

    model: UNet
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    start_step: int = 0
    elapsed0: float = 0.0
    grad_ema: float | None = None  # running gradient norm, for spike clipping
    skipped: int = 0  # steps with non-finite gradients (no update made)
    skipped_in_a_row: int = 0


def _restore(config: TrainConfig, device: torch.device, amp: torch.dtype | None, state: dict[str, Any] | None,
             init_state: dict[str, torch.Tensor] | None) -> _Run:
    """The network and optimizer from the checkpoint ``state`` (refused if its settings differ),
    else from ``init_state`` or the seed."""
    with torch.random.fork_rng(devices=[]):  # the init depends on the seed alone
        torch.manual_seed(config.seed)
        model = UNet(config.channels, init=config.net_init)
    if state is not None:
        saved = TrainConfig.from_dict(state["config"])
        diff = [f"{f.name} {getattr(config, f.name)!r} (the checkpoint's: {getattr(saved, f.name)!r})"
                for f in dataclasses.fields(config)
                if f.name not in BOOKKEEPING and getattr(saved, f.name) != getattr(config, f.name)]
        if diff:
            raise CheckpointError(f"settings differ from the checkpoint's: {'; '.join(diff)}; "
                                  "resume with the same options")
        model.load_state_dict(_strip_compiled(state["model"]))
    elif init_state is not None:
        model.load_state_dict(init_state)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    # fp16 gradients underflow without loss scaling; bf16 has float32's range and needs none
    scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None
    run = _Run(model, optimizer, scaler)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        run.start_step, run.elapsed0 = int(state["step"]), float(state.get("elapsed", 0.0))
        run.grad_ema = state.get("grad_ema")
    return run


def _backward(config: TrainConfig, net: torch.nn.Module, ddp: Any, noise: Any, groups: list, step: int, gamma: float,
              device: torch.device, amp: torch.dtype | None, scaler: torch.amp.GradScaler | None,
              per_rank: int) -> tuple[float, float, float]:
    """One step's losses over its crop groups, gradients accumulated: (total, reconstruction, regulariser)."""
    loss_sum = rec_sum = reg_sum = 0.0
    for k, (samples, crops) in enumerate(groups):
        gens = [sample_generator(config.seed, step, int(i), device) for i in samples]
        x = crops.to(device, non_blocking=True)
        second = None
        weights = None
        if config.target == "independent":
            noisy, second = noise.apply_twice(x, gens)
            if config.level_weight:
                weights = level_weights(noisy, second, config.level_weight)
        else:
            noisy = noise.apply(x, generator=gens) if noise else x
        if config.pd > 1:  # each crop becomes its pd*pd sub-images, with its own draws
            if second is not None:
                second = pd_subimages(second, gens, config.pd)[0]
            noisy, gens = pd_subimages(noisy, gens, config.pd)
            if weights is not None:
                weights = weights.repeat_interleave(config.pd * config.pd)
        if config.channels_last:
            noisy = noisy.contiguous(memory_format=torch.channels_last)
        # DDP averages the gradients once per step, after the last group (ranks may hold
        # different numbers of crop sizes): each rank's mean loss, averaged over the ranks,
        # is the mean over the global batch.
        last = k == len(groups) - 1
        with contextlib.nullcontext() if ddp is None or last else ddp.no_sync():
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                terms = n2n_loss(net, noisy, gamma, sampler=config.sampler, generator=gens, target=second,
                                 full_stride=config.full_pd, clip_aware=config.clip_aware, weights=weights)
            weight = x.shape[0] / per_rank
            scaled = terms.total * weight
            (scaled if scaler is None else scaler.scale(scaled)).backward()
        loss_sum += float(terms.total.detach()) * weight
        rec_sum += float(terms.reconstruction) * weight
        reg_sum += float(terms.regulariser) * weight
    return loss_sum, rec_sum, reg_sum


def _update(config: TrainConfig, run: _Run, loss_sum: float, step: int) -> None:
    """Clip a gradient spike and take the optimizer step, or skip it when a gradient is not
    finite; a non-finite loss, or too many skips in a row, is divergence."""
    if run.scaler is not None:
        run.scaler.unscale_(run.optimizer)  # clipping and the finiteness check see the true gradients
    grad_norm = _clip_spikes(run.model, run.grad_ema, config.clip_spikes)  # inf/nan if any gradient is
    finite = math.isfinite(grad_norm)  # the same on every rank: DDP has averaged the gradients
    if finite and config.clip_spikes:
        run.grad_ema = grad_norm if run.grad_ema is None else 0.98 * run.grad_ema + 0.02 * grad_norm
    if not math.isfinite(loss_sum):  # the global loss: every rank stops here together
        raise agreed(N2nError(f"training diverged at step {step + 1} (loss {loss_sum}); "
                              "lower --lr (the last checkpoint is kept)"))
    if not finite:  # a finite loss with overflowing gradients: leave the weights as they are
        run.skipped, run.skipped_in_a_row = run.skipped + 1, run.skipped_in_a_row + 1
        if run.skipped_in_a_row >= MAX_SKIPPED_STEPS:
            raise agreed(N2nError(f"training diverged at step {step + 1} (gradients not finite for "
                                  f"{run.skipped_in_a_row} steps in a row); lower --lr (the last checkpoint is kept)"))
    else:
        run.skipped_in_a_row = 0
        if run.scaler is None:
            run.optimizer.step()
        else:
            run.scaler.step(run.optimizer)
    if run.scaler is not None:
        run.scaler.update()  # lowers the scale after an overflow, raises it after a calm stretch


def _lost_peers(world: World, exc: BaseException, completed: int, last_saved: int | None) -> DistributedError:
    """The one-line error of a DDP run that lost a process or was sent SIGTERM."""
    if not world.is_main:
        kept = "rank 0 keeps its last checkpoint"
    else:
        kept = f"the checkpoint at step {last_saved} is kept" if last_saved else "no checkpoint was saved yet"
    why = ("received SIGTERM (from its launcher, which ends the run when a process fails, or a scheduler)"
           if isinstance(exc, _Terminated) else f"lost the other processes ({first_line(exc)})")
    return DistributedError(f"{world.describe()} {why} at step {completed + 1}; {kept}, continue with --resume")


def pd_subimages(noisy: torch.Tensor, gens: list[torch.Generator], stride: int) -> tuple[torch.Tensor, list]:
    """Crops -> their stride-``stride`` sub-images (trimmed to even sub-image sizes), and a
    generator list to match: the sub-images of one crop draw their masks from its generator."""
    h, w = noisy.shape[-2:]
    m = 2 * stride
    sub = split_torch(noisy[..., : h - h % m, : w - w % m].contiguous(), stride)
    return sub, [g for g in gens for _ in range(stride * stride)]


def _clip_spikes(model: torch.nn.Module, ema: float | None, factor: float) -> float:
    """Scale a gradient spike down to ``factor`` x the running norm (0: never); return the
    (clipped) norm, inf or nan when a gradient is not finite.

    Adam is nearly invariant to a steady gradient scale, so this only acts on sudden spikes,
    which without batch norm can throw this U-Net off (seen at large batch and lr on a GPU).
    """
    params = [p for p in model.parameters() if p.grad is not None]
    norm = float(torch.nn.utils.clip_grad_norm_(params, float("inf")))
    if factor and ema is not None and math.isfinite(norm) and norm > factor * ema:
        for p in params:
            p.grad.mul_(factor * ema / norm)
        return factor * ema
    return norm


class _Terminated(Exception):
    """SIGTERM under DDP: a launcher (torchrun, SLURM) ends the ranks, usually because one failed."""


def _raise_terminated(signum, frame) -> None:  # noqa: ANN001
    raise _Terminated


class _GracefulStop:
    """First Ctrl-C: finish the current step, checkpoint, stop. Second: stop at once.

    With ``terminate`` (DDP), SIGTERM stops at once with a clear error instead of silently.
    """

    def __init__(self, terminate: bool = False) -> None:
        self.requested = self.hard = False
        self.terminate = terminate
        self._previous = None
        self._previous_term = None

    def _handler(self, signum, frame) -> None:  # noqa: ANN001
        if self.requested:
            self.hard = True
            raise KeyboardInterrupt
        self.requested = True

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
            if self.terminate:
                self._previous_term = signal.signal(signal.SIGTERM, _raise_terminated)

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        if self._previous_term is not None:
            signal.signal(signal.SIGTERM, self._previous_term)
            self._previous_term = None


def _batch_stream(config: TrainConfig, images: LoadedImages, device: torch.device, start: int, workers: int,
                  part: RankSlice):
    """Yield this rank's crop groups of steps start, start+1, ... from the device cache or a DataLoader."""
    if device.type == "cuda" and isinstance(images, LoadedImages) and images.nbytes <= DEVICE_CACHE_BYTES:
        torch.backends.cudnn.benchmark = True
        source = DeviceCropSource(images, config.batch_size, config.crop, config.seed, device, part)
        return (source.batch_for(s) for s in range(start, config.steps))
    dataset = CropBatches(images, config.batch_size, config.crop, config.seed, part)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, sampler=range(start, config.steps), num_workers=workers,
        pin_memory=device.type == "cuda", prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )
    return iter(loader)


@torch.no_grad()
def validate(model: UNet, pairs: ValidationPairs, device: torch.device) -> float:
    """Mean PSNR (dB, peak 1, after clamping) of the model on the validation pairs."""
    was_training = model.training
    model.eval()
    scores = []
    for noisy, clean in zip(pairs.noisy, pairs.clean):
        x = torch.from_numpy(np.ascontiguousarray(noisy.transpose(2, 0, 1)))[None].to(device)
        y = model(x).clamp(0, 1)[0].permute(1, 2, 0).float().cpu().numpy()
        mse = float(np.mean((y.astype(np.float64) - clean) ** 2))
        scores.append(10 * math.log10(1.0 / max(mse, 1e-12)))
    model.train(was_training)
    return float(np.mean(scores))
