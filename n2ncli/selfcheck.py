"""A fit measures itself: the self-supervised loss on a few of the user's images it never trained on.

Users have no clean images, so the check is the reconstruction term of the Neighbor2Neighbor
loss, ``|f(g1 y) - g2 y|^2``, on held-out images with fixed crops, masks and (for synthetic
noise) fixed draws: the same numbers for the model before and after the fit, so the two compare
pair for pair. For independent noise it is the true error of predicting the neighbour plus a
constant (the noise variance), so lower means a better denoiser; with ``pd`` matching the noise's
correlation that stays nearly true. (The regulariser is no measure: the identity zeroes it.)
A fit whose held-out loss rose made things worse, and is reported as such.

A ruined model can still lower that loss (on colorchart.dng at high ISO, fits from scratch of 400
and 1500 steps did, by 39 % and 44 %, with a channel off by 43 % and 34 %), so the check also
compares each channel's mean of the model's output with the input's on the same crops: denoising
keeps means, a colour cast or a flat pink field does not.
With fewer than MIN_IMAGES images, a strip along the bottom of every image is held back instead.

On photos whose luma noise is correlated (the ``--pd auto`` statistic above CORRELATED: real camera
JPEGs) the loss certifies nothing: the neighbour target shares part of the noise, so a model that
keeps noise predicts it better. On the 41 real pairs ``denoise --adapt 100`` lowered it
(0.001602 -> 0.001573) and lost 0.6 dB, a 200-step ``eval --fit-first`` lowered it and lost
0.7 dB. Such a check is marked unverifiable, and an unverifiable check does not pass.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from n2ncli.bayer import CHANNELS as BAYER_CHANNELS
from n2ncli.data import LoadedImages
from n2ncli.loss import n2n_loss
from n2ncli.noise import parse_noise
from n2ncli.pd import CORRELATED
from n2ncli.train import TrainConfig, pd_subimages

#: Images held back: one in eight, at least 1 and at most 4, from folders of 5 images or more.
MIN_IMAGES, SHARE, MAX_HELD = 5, 8, 4
CHECK_CROP = 256
CHECK_SEED = 7919
#: Largest shift of a channel's mean (a fraction of that mean) a fitted model may make on the
#: held-out crops. Measured with this statistic on strip and centre crops of the four sample raws
#: (their own noise, and shot noise 2e-4..1e-2 added) and of Kodak and real camera JPEGs. Raw:
#: raw-camera at most 9 % (RAW_KODAK_DC50), fits of 10-100 steps from it at most 7 % on their own
#: camera; from scratch on colorchart.dng 1500 steps 23-52 %, 400 steps 26-57 %, 20 steps (the pink
#: field) 72-350 %; random nets 118-396 %. sRGB: the shipped models at most 1.6 %, 10-300 steps from
#: them 2.1 %; 100 steps from scratch 11-234 %, random nets 97-101 %. (1-3 steps from a shipped
#: model, before Adam settles, shift 5 % (sRGB) to 35 % (raw): flagged, rightly.)
COLOUR_LIMIT = {"srgb": 0.05, "raw": 0.15}
#: Channel means below this (fraction of white) count as this much: in the deep shadows a bias of
#: a few DN (raw-camera adds ~0.001 on the chart's darkest crop, 30 % of its mean) is no colour cast.
DARK_FLOOR = 0.02


def loss_can_tell(noise_luma: float | None) -> bool:
    """Whether the held-out loss ranks models on photos with this luma noise statistic (None: not
    measured): not when it is correlated (module docstring). fit, the check and --adapt share it."""
    return noise_luma is None or noise_luma <= CORRELATED


@dataclass(frozen=True)
class ColourShift:
    """How far a model moves each channel's mean on the held-out crops, as a fraction of it."""

    channels: tuple[str, ...]
    shifts: tuple[float, ...]

    @property
    def worst(self) -> float:
        return max(abs(s) for s in self.shifts)

    def describe(self) -> str:
        """The channels moved by 1 % or more (else the largest), e.g. ``R -26%, B +30%``."""
        moved = [(c, s) for c, s in zip(self.channels, self.shifts) if abs(s) >= 0.01]
        if not moved:
            moved = [max(zip(self.channels, self.shifts), key=lambda cs: abs(cs[1]))]
        return ", ".join(f"{c} {s:+.0%}" for c, s in moved)


@dataclass(frozen=True)
class SelfCheck:
    """Held-out loss of the model a fit started from (``before``) and of the fitted one (``after``),
    and their colour shifts (None: not measured)."""

    images: int
    before: float
    after: float
    baseline: str  # what ``before`` scored: the warm-start model, or the noisy input itself
    colour_before: ColourShift | None = None
    colour_after: ColourShift | None = None
    colour_limit: float = COLOUR_LIMIT["srgb"]
    held: str = "images"  # what was held back: whole "images", or "strips" of each image
    noise_luma: float | None = None  # the held-out photos' luma noise statistic (None: not measured)

    @property
    def loss_passed(self) -> bool:
        return self.after <= self.before

    @property
    def colour_passed(self) -> bool:
        """Within the limit, or no further off than the model the fit started from (a camera the
        warm start already shifts is not the fit's doing)."""
        if self.colour_after is None:
            return True
        allowed = max(self.colour_limit, self.colour_before.worst if self.colour_before else 0.0)
        return self.colour_after.worst <= allowed

    @property
    def verifiable(self) -> bool:
        """Whether the loss can tell at all: not on correlated luma noise (module docstring)."""
        return loss_can_tell(self.noise_luma)

    def summary(self) -> str:
        """One line for people: the held-out loss before and after, and whether it can tell."""
        return (f"self-check {self.before:.6f} -> {self.after:.6f} ({self.change:+.1%}) on {self.images} held-out image(s)"
                + ("" if self.verifiable else ", which cannot tell on correlated noise"))

    @property
    def passed(self) -> bool:
        return self.loss_passed and self.colour_passed and self.verifiable

    @property
    def change(self) -> float:
        """Relative change of the held-out loss (negative: better)."""
        return (self.after - self.before) / self.before if self.before > 0 else 0.0

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"images": self.images, "held": self.held, "before": self.before,
                                  "after": self.after, "baseline": self.baseline, "loss_passed": self.loss_passed}
        if self.colour_after is not None:
            out["colour"] = {"channels": list(self.colour_after.channels),
                             "before": list(self.colour_before.shifts) if self.colour_before else None,
                             "after": list(self.colour_after.shifts), "limit": self.colour_limit,
                             "passed": self.colour_passed}
        if self.noise_luma is not None:
            out["noise_luma_correlation"] = round(self.noise_luma, 3)
            out["verifiable"] = self.verifiable
        out["passed"] = self.passed
        return out


def held_out_count(images: int) -> int:
    return 0 if images < MIN_IMAGES else max(1, min(MAX_HELD, images // SHARE))


@dataclass(frozen=True)
class HeldOut:
    """What a fit holds back: CxHxW float32 arrays, where each comes from, and whether they are
    strips of the training images (too few images to spare whole ones)."""

    arrays: tuple[np.ndarray, ...] = ()
    sources: tuple[str, ...] = ()
    strips: bool = False


def strip_rows(height: int, multiple: int = 64) -> int:
    """Rows held back at the bottom of an image of ``height`` rows when there are too few images:
    about one in SHARE, a multiple of ``multiple`` (what the check's crop needs), at most
    CHECK_CROP; 0 where that would leave training less than two thirds of the image."""
    rows = min(max(1, height // SHARE // multiple), max(1, CHECK_CROP // multiple)) * multiple
    return rows if height >= 3 * rows else 0


def split_held_out(images: LoadedImages, multiple: int = 64) -> tuple[LoadedImages, HeldOut]:
    """Training images and what is held back: every SHARE-th image from MIN_IMAGES images on,
    else a bottom strip of each image (``strip_rows``; ``multiple``: 64 x the fit's PD stride)."""
    scale, floor = np.float32(images.scale), np.float32(images.floor)

    def as_float(a: np.ndarray) -> np.ndarray:
        return a.astype(np.float32) * scale - floor

    n = held_out_count(len(images.arrays))
    if n == 0:
        rows = [strip_rows(a.shape[1], multiple) for a in images.arrays]
        if not any(rows):
            return images, HeldOut()
        train = LoadedImages(tuple(a[:, :a.shape[1] - r] if r else a for a, r in zip(images.arrays, rows)),
                             images.paths, images.skipped, images.max_value, images.floor)
        held = [(as_float(a[:, a.shape[1] - r:]), f"{p} (bottom {r} rows)")
                for a, p, r in zip(images.arrays, images.paths, rows) if r]
        return train, HeldOut(tuple(a for a, _ in held), tuple(t for _, t in held), strips=True)
    step = len(images.arrays) // n
    held = set(range(step - 1, len(images.arrays), step)[:n])
    keep = [i for i in range(len(images.arrays)) if i not in held]
    train = LoadedImages(tuple(images.arrays[i] for i in keep), tuple(images.paths[i] for i in keep),
                         images.skipped, images.max_value, images.floor)
    return train, HeldOut(tuple(as_float(images.arrays[i]) for i in sorted(held)),
                          tuple(str(images.paths[i]) for i in sorted(held)))


def _check_crops(held: Sequence[np.ndarray], config: TrainConfig):  # noqa: ANN202 - yields tensors
    """(noisy crop or its PD sub-images, their generators) per held-out image: the centre crop,
    a multiple of the U-Net's 32 px after sub-sampling, with fixed synthetic noise."""
    noise = parse_noise(config.noise) if config.noise else None
    multiple = 2 * config.pd * 32
    for k, img in enumerate(held):
        c, h, w = img.shape
        ch, cw = min(h, CHECK_CROP) // multiple * multiple, min(w, CHECK_CROP) // multiple * multiple
        if ch == 0 or cw == 0:
            continue
        y0, x0 = (h - ch) // 2, (w - cw) // 2
        x = torch.from_numpy(np.ascontiguousarray(img[:, y0:y0 + ch, x0:x0 + cw]))[None]
        gens = [torch.Generator().manual_seed(CHECK_SEED + k)]
        noisy = noise.apply(x, generator=gens) if noise else x
        if config.pd > 1:
            noisy, gens = pd_subimages(noisy, gens, config.pd)
        yield noisy, gens


@contextlib.contextmanager
def _evaluating(model: torch.nn.Module | None):  # noqa: ANN202
    """The model (or the identity for None) in eval mode, its training flag restored after."""
    if model is None:
        yield lambda x: x
        return
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)


@torch.no_grad()
def held_out_loss(model: torch.nn.Module | None, held: Sequence[np.ndarray], config: TrainConfig) -> float:
    """Mean reconstruction loss ``|f(g1 y) - g2 y|^2`` on the centre crop of each held-out image.

    ``model=None`` scores the identity (the noisy input as its own estimate): the bar for a fit
    from scratch. Crops, masks and synthetic noise come from fixed seeds.
    """
    with _evaluating(model) as net:
        total = [float(n2n_loss(net, noisy, 0.0, sampler=config.sampler, generator=gens).reconstruction)
                 for noisy, gens in _check_crops(held, config)]
    return float(np.mean(total)) if total else math.nan


def channel_names(channels: int) -> tuple[str, ...]:
    return {4: BAYER_CHANNELS, 3: ("R", "G", "B"), 1: ("grey",)}.get(channels, tuple(f"c{i}" for i in range(channels)))


@torch.no_grad()
def held_out_colour(model: torch.nn.Module | None, held: Sequence[np.ndarray],
                    config: TrainConfig) -> ColourShift | None:
    """Per-channel ``(mean out - mean in) / max(mean in, DARK_FLOOR)`` of the model applied to the
    held-out crops as ``denoise`` applies it (whole crop, PD sub-images at the fit's stride), the
    means pooled over all crops. None when no crop fits."""
    moved, level = [], []
    with _evaluating(model) as net:
        for noisy, _ in _check_crops(held, config):
            seen = noisy.mean(dim=(0, 2, 3))
            moved.append(net(noisy).mean(dim=(0, 2, 3)) - seen)
            level.append(seen)
    if not moved:
        return None
    shifts = torch.stack(moved).mean(0) / torch.stack(level).mean(0).clamp(min=DARK_FLOOR)
    return ColourShift(channel_names(len(shifts)), tuple(round(float(v), 4) for v in shifts))
