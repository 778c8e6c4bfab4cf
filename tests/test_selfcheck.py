"""The fit's self-check: which images are held back, and a loss that ranks denoisers as PSNR does."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from n2ncli.data import load_training_images
from n2ncli.selfcheck import (COLOUR_LIMIT, ColourShift, SelfCheck, held_out_colour, held_out_count, held_out_loss,
                              split_held_out, strip_rows)
from n2ncli.store import build_model, find_model
from n2ncli.train import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(("images", "held"), [(1, 0), (4, 0), (5, 1), (16, 2), (31, 3), (100, 4)])
def test_one_in_eight_images_is_held_back_from_five_on(images: int, held: int) -> None:
    assert held_out_count(images) == held


def test_split_keeps_every_image_once() -> None:
    crops = {Path(f"{i}.png"): np.full((32, 32, 3), i, np.uint8) for i in range(9)}
    images = load_training_images(list(crops), crops.__getitem__, 3)
    train, held = split_held_out(images)
    assert len(train.arrays) == 8 and len(held.arrays) == 1 and not held.strips
    assert held.arrays[0][0, 0, 0] == pytest.approx(8 / 255)  # the last of each 9
    assert Path("8.png") not in train.paths and held.sources == ("8.png",)


def test_fewer_than_five_images_hold_back_a_bottom_strip_of_each() -> None:
    rows = np.arange(256, dtype=np.uint8)[:, None, None].repeat(40, 1).repeat(3, 2)  # pixel value = its row
    crops = {Path("tall.png"): rows, Path("short.png"): rows[:128]}
    images = load_training_images(list(crops), crops.__getitem__, 3)
    train, held = split_held_out(images)
    assert held.strips and held.sources == ("tall.png (bottom 64 rows)",)  # 128 rows cannot spare 64
    assert [a.shape[1] for a in train.arrays] == [192, 128]
    assert train.arrays[0].max() == 191 and held.arrays[0].min() == pytest.approx(192 / 255)  # no row in both
    assert strip_rows(2000) == 192 and strip_rows(578) == 64 and strip_rows(190) == 0


@pytest.mark.slow
def test_the_held_out_loss_ranks_denoisers_as_their_error_does(kodak_crop: Callable[..., np.ndarray]) -> None:
    held = [kodak_crop(0, 0, 256, 256, image=name).transpose(2, 0, 1).astype(np.float32) / 255
            for name in ("kodim05.png", "kodim13.png")]
    config = TrainConfig(steps=1, noise="gaussian25")
    blind = build_model(find_model("srgb-gaussian5-50"))
    box = torch.nn.Conv2d(3, 3, 3, padding=1, bias=False, groups=3)
    torch.nn.init.constant_(box.weight, 1 / 9)  # a 3x3 mean: removes some noise, blurs detail
    identity, blur, model = (held_out_loss(m, held, config) for m in (None, box, blind))
    assert model < blur < identity  # the shipped model beats a box blur on sigma 25, which beats nothing
    assert held_out_loss(blind, held, config) == model  # fixed crops, masks and noise


def test_a_fit_that_made_things_worse_is_flagged() -> None:
    check = SelfCheck(2, before=0.010, after=0.012, baseline="the warm-start model")
    assert not check.passed and not check.loss_passed and check.change == pytest.approx(0.2)
    assert check.to_json()["passed"] is False and "colour" not in check.to_json()
    assert SelfCheck(2, 0.01, 0.009, "x").passed


def test_a_loss_on_correlated_photo_noise_certifies_nothing() -> None:
    check = SelfCheck(2, before=0.010, after=0.009, baseline="x", noise_luma=0.62)  # a real camera JPEG's
    assert check.loss_passed and not check.verifiable and not check.passed
    assert check.to_json()["verifiable"] is False and check.to_json()["passed"] is False
    assert SelfCheck(2, 0.010, 0.009, "x", noise_luma=0.05).passed  # independent noise: the loss tells


class _Offset(torch.nn.Module):
    """A 'denoiser' that returns its input plus a constant per channel: a colour cast."""

    def __init__(self, offsets: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("offsets", torch.tensor(offsets).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.offsets


@pytest.fixture(scope="module")
def chart_strip(chart: Path) -> tuple[np.ndarray, ...]:
    """The middle 256 columns of the bottom strip of the real colorchart.dng that a fit on it alone
    holds back (4x64x256: the crop the check takes)."""
    from n2ncli.io.raw import TRAIN_FLOOR, read_training_raw

    images = load_training_images([chart], read_training_raw, channels=4, floor=TRAIN_FLOOR)
    (strip,) = split_held_out(images)[1].arrays
    x0 = (strip.shape[2] - 256) // 2
    return (np.ascontiguousarray(strip[:, :, x0:x0 + 256]),)


RAW_CONFIG = TrainConfig(steps=1, channels=4, kind="raw")


@pytest.mark.parametrize("noise", [None, "poisson-gaussian:0.01,1.45e-4"])  # the chart's own noise; high ISO
def test_the_shipped_raw_model_keeps_the_colours_of_the_real_chart(chart_strip: tuple[np.ndarray, ...],
                                                                   noise: str | None) -> None:
    import dataclasses

    config = dataclasses.replace(RAW_CONFIG, noise=noise)
    shift = held_out_colour(build_model(find_model("raw-camera")), chart_strip, config)
    assert shift is not None and shift.channels == ("R", "G1", "G2", "B")
    assert 0 < shift.worst < COLOUR_LIMIT["raw"] / 2  # measured 3-4 %
    assert held_out_colour(None, chart_strip, config).worst == 0  # the identity keeps every mean


def test_a_colour_cast_fails_the_check_whatever_the_loss(chart_strip: tuple[np.ndarray, ...]) -> None:
    means = chart_strip[0].mean(axis=(1, 2))  # about 0.034 0.051 0.053 0.026
    cast = _Offset((0.25 * float(means[0]), 0.0, 0.0, -0.2 * float(means[3])))
    shift = held_out_colour(cast, chart_strip, RAW_CONFIG)
    assert shift.shifts[0] == pytest.approx(0.25, abs=0.01) and shift.shifts[3] == pytest.approx(-0.2, abs=0.01)
    assert shift.describe() == "R +25%, B -20%"
    check = SelfCheck(1, before=0.002, after=0.001, baseline="the noisy input", colour_before=held_out_colour(
        None, chart_strip, RAW_CONFIG), colour_after=shift, colour_limit=COLOUR_LIMIT["raw"])
    assert check.loss_passed and not check.colour_passed and not check.passed
    assert check.to_json()["colour"] == {"channels": ["R", "G1", "G2", "B"], "before": [0.0] * 4,
                                         "after": list(shift.shifts), "limit": 0.15, "passed": False}


def test_a_shift_the_start_model_already_had_is_not_the_fits_doing() -> None:
    start = ColourShift(("R", "G", "B"), (0.08, 0.0, -0.07))
    kept = SelfCheck(1, 0.01, 0.009, "x", colour_before=start, colour_after=ColourShift(("R", "G", "B"), (0.07, 0, 0)),
                     colour_limit=0.05)
    worse = SelfCheck(1, 0.01, 0.009, "x", colour_before=start, colour_after=ColourShift(("R", "G", "B"), (0.09, 0, 0)),
                      colour_limit=0.05)
    assert kept.passed and not worse.passed


def test_a_ruined_fit_fails_its_self_check_and_never_becomes_the_raw_default(shared_data: Path) -> None:
    from n2ncli.fit import FitRequest, fit
    from n2ncli.store import default_model, save_model

    kodak = sorted((shared_data / "kodak24").glob("*.png"))[:5]
    outcome = fit(FitRequest(inputs=tuple(kodak), name="ruined", steps=3, crop=64, batch_size=2, lr=0.01,
                             noise="gaussian25", pd="1"))
    assert outcome.check is not None and outcome.check.images == 1
    assert not outcome.check.passed
    assert outcome.record.extra["self_check"]["passed"] is False
    assert outcome.record.training["held_out"] == [str(kodak[4])]
    good = build_model(find_model("srgb-gaussian5-50"))
    raw_good = type(good)(4)
    save_model("raw-good", raw_good, kind="raw", noise="x", training={})
    net = save_model("raw-bad", type(good)(4), kind="raw", noise="x", training={},
                     extra={"self_check": {"passed": False}})
    assert net.name == "raw-bad"
    assert default_model("raw").name == "raw-good"  # the newer fit failed its check
