"""The fit's self-check: which images are held back, and a loss that ranks denoisers as PSNR does."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from n2ncli.data import load_training_images
from n2ncli.selfcheck import SelfCheck, held_out_count, held_out_loss, split_held_out
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
    assert len(train.arrays) == 8 and len(held) == 1
    assert held[0][0, 0, 0] == pytest.approx(8 / 255)  # the last of each 9
    assert Path("8.png") not in train.paths


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
    assert not check.passed and check.change == pytest.approx(0.2)
    assert check.to_json()["passed"] is False
    assert SelfCheck(2, 0.01, 0.009, "x").passed


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
