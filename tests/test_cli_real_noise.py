"""The real-photo path through the CLI: PD chosen from the photos, the self-check, --adapt."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from cli_run import Run, error_line

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def real_jpegs(shared_data: Path, tmp_path: Path) -> Path:
    """Six real noisy camera JPEGs (both cameras), cut to 160x160 so a fit step is cheap."""
    from PIL import Image

    sources = sorted((shared_data / "real-pairs").glob("*_real.JPG"))[::7][:6]
    if len(sources) < 6:
        pytest.skip("no real pairs")
    folder = tmp_path / "shots"
    folder.mkdir()
    for p in sources:
        with Image.open(p) as im:
            im.crop((0, 0, 160, 160)).save(folder / p.name, quality=95, subsampling=2)
    return folder


def test_bad_pd_is_one_line(n2n: Callable[..., Run], real_jpegs: Path, tmp_path: Path) -> None:
    run = n2n("denoise", next(real_jpegs.iterdir()), "-o", tmp_path / "o.png", "--pd", "4")
    assert run.code == 1
    assert "--pd must be auto or one of 1, 2, 3" in error_line(run)


def test_fit_on_camera_jpegs_picks_pd2_and_checks_itself(n2n: Callable[..., Run], real_jpegs: Path) -> None:
    run = n2n("fit", real_jpegs, "--name", "shots", "--steps", "2", "--crop", "64", "--batch-size", "2")
    assert run.code == 0, run.err
    text = " ".join((run.out + run.err).split())
    assert "pd 2: noise correlation" in text
    assert "the self-check will not be able to tell whether this fit helps" in text  # said before training
    assert "this fit cannot be checked on these photos: their noise is correlated" in text or "made things WORSE" in text
    assert "or --pd 2" not in text  # it trained at pd 2 already
    from n2ncli.store import find_model

    record = find_model("shots")
    assert record.extra["pd"] == 2 and record.extra["self_check"]["images"] == 1
    assert record.extra["self_check"]["verifiable"] is False and record.extra["self_check"]["passed"] is False
    assert record.training["init"] == "srgb-camera"  # correlated noise: the real-photo model, not the blind one
    assert record.extra["pd_blend"] == find_model("srgb-camera").extra["pd_blend"]  # and --pd auto's blend with it


def test_denoise_adapt_leaves_a_camera_jpeg_to_the_model(n2n: Callable[..., Run], real_jpegs: Path,
                                                       tmp_path: Path) -> None:
    from n2ncli.io.image import read_image

    photo = next(real_jpegs.iterdir())
    run = n2n("denoise", photo, "-o", tmp_path / "o.png", "--adapt", "50")
    assert run.code == 0, run.err
    assert "--adapt: skipped: these photos' noise is correlated" in " ".join((run.out + run.err).split())
    assert n2n("denoise", photo, "-o", tmp_path / "plain.png").code == 0
    assert np.array_equal(read_image(tmp_path / "o.png").pixels, read_image(tmp_path / "plain.png").pixels)


def test_denoise_adapt_on_a_folder_goes_on_past_a_broken_file(n2n: Callable[..., Run], real_jpegs: Path,
                                                              tmp_path: Path) -> None:
    photo = next(real_jpegs.iterdir())
    (real_jpegs / "broken.jpg").write_bytes(photo.read_bytes()[:500])  # a truncated JPEG
    run = n2n("denoise", real_jpegs, "-o", tmp_path / "out", "--adapt", "20")
    assert run.code == 1  # one file failed
    text = " ".join((run.out + run.err).split())
    assert "--adapt: skipped" in text and "broken.jpg" in text and "wrote 6, failed 1" in text
    assert len(list((tmp_path / "out").iterdir())) == 6


@pytest.mark.slow
def test_denoise_adapt_reports_whether_it_used_the_fine_tune(n2n: Callable[..., Run], kodak_crop,  # noqa: ANN001
                                                            tmp_path: Path) -> None:
    from PIL import Image

    clean = kodak_crop(0, 0, 128, 128).astype(np.float32)
    noisy = np.clip(clean + np.random.default_rng(1).normal(0, 25, clean.shape), 0, 255).round().astype(np.uint8)
    Image.fromarray(noisy).save(tmp_path / "noisy.png")
    run = n2n("denoise", tmp_path / "noisy.png", "-o", tmp_path / "o.png", "--adapt", "1")
    assert run.code == 0, run.err
    text = " ".join((run.out + run.err).split())
    assert "--adapt: 1 step(s) of srgb-gaussian5-50" in text and ("used:" in text or "not used:" in text)
    assert (tmp_path / "o.png").is_file()


def test_pd_auto_and_pd_2_agree_on_a_camera_jpeg(n2n: Callable[..., Run], real_jpegs: Path, tmp_path: Path) -> None:
    from n2ncli.io.image import read_image

    photo = next(real_jpegs.iterdir())
    for pd in ("auto", "2", "1"):
        assert n2n("denoise", photo, "-o", tmp_path / f"{pd}.png", "--pd", pd, "-m", "srgb-gaussian5-50").code == 0
    auto, two, one = (read_image(tmp_path / f"{pd}.png").pixels for pd in ("auto", "2", "1"))
    assert np.array_equal(auto, two)
    assert not np.array_equal(auto, one)


def test_eval_pairs_scores_what_denoise_writes(n2n: Callable[..., Run], shared_data: Path, tmp_path: Path) -> None:
    """Without -m, real pairs are scored through the real-photo model as `n2n denoise` runs them."""
    import json

    from PIL import Image

    from n2ncli.io.image import read_image
    from n2ncli.metrics import psnr

    pairs = tmp_path / "pairs"
    pairs.mkdir()
    for real in sorted((shared_data / "real-pairs").glob("*_real.JPG"))[8::30]:  # a Canon and a Sony pair, ISO 6400
        for part in ("real", "mean"):
            with Image.open(real.with_name(real.name.replace("_real", f"_{part}"))) as im:
                im.crop((96, 96, 224, 224)).save(pairs / real.name.replace(".JPG", ".png").replace("_real", f"_{part}"))
    run = n2n("eval", "--pairs", pairs, "--backend", "torch", "--json", tmp_path / "default.json")
    assert run.code == 0, run.err
    assert "model srgb-camera for correlated noise" in run.err
    named = n2n("eval", "--pairs", pairs, "--backend", "torch", "-m", "srgb-gaussian5-50", "--json", tmp_path / "b.json")
    assert named.code == 0, named.err
    default = json.loads((tmp_path / "default.json").read_text())
    blind = {s["name"]: s["psnr"] for s in json.loads((tmp_path / "b.json").read_text())["images"]}
    assert default["model"] == "srgb-gaussian5-50 + srgb-camera"
    for score in default["images"]:
        noisy = pairs / f"{score['name']}_real.png"
        out = tmp_path / f"{score['name']}.png"
        assert n2n("denoise", noisy, "-o", out, "--backend", "torch", "--precision", "fp32").code == 0
        clean = read_image(pairs / f"{score['name']}_mean.png").pixels
        assert score["psnr"] == pytest.approx(psnr(clean, read_image(out).pixels), abs=1e-6)
        assert score["psnr"] > blind[score["name"]] > score["noisy_psnr"]


def test_no_keep_mean_writes_the_networks_own_colour(n2n: Callable[..., Run], real_jpegs: Path, tmp_path: Path) -> None:
    """By default the output keeps the photo's local mean; --no-keep-mean leaves the network's shift."""
    from n2ncli.io.image import read_image

    photo = sorted(real_jpegs.iterdir())[0]
    for flag in ("--keep-mean", "--no-keep-mean"):
        assert n2n("denoise", photo, "-o", tmp_path / f"{flag}.png", flag).code == 0
    noisy = read_image(photo).pixels.astype(np.float64)
    kept, own = (read_image(tmp_path / f"{flag}.png").pixels.astype(np.float64) for flag in ("--keep-mean", "--no-keep-mean"))
    shift = lambda out: np.abs((out - noisy).mean(axis=(0, 1))).max()  # noqa: E731 - the largest channel's mean shift
    assert not np.array_equal(kept, own)
    assert shift(kept) < shift(own)
