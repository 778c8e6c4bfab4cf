"""`fit` as a library call: which files it trains on, and the raw settings it picks."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from n2ncli.errors import ConfigError, DatasetError
from n2ncli.fit import FitRequest, default_name, fit, gather_images, read_pixels
from n2ncli.store import check_name


@pytest.fixture
def mixed(tmp_path: Path, shared_data: Path) -> Path:
    """A folder with one raw, one image and a text file."""
    folder = tmp_path / "shots"
    folder.mkdir()
    shutil.copy(shared_data / "raw" / "RAW_KODAK_DC50.KDC", folder / "a.KDC")
    shutil.copy(shared_data / "kodak24" / "kodim01.png", folder / "b.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_gather_refuses_to_guess_between_raws_and_images(mixed: Path) -> None:
    with pytest.raises(ConfigError, match=r"mix 1 raw file\(s\) and 1 image\(s\); choose with --kind"):
        gather_images([mixed])
    assert gather_images([mixed], "raw") == ([mixed / "a.KDC"], "raw")
    assert gather_images([mixed], "srgb") == ([mixed / "b.png"], "srgb")


def test_gather_detects_raw_folders_and_says_what_is_missing(tmp_path: Path, shared_data: Path) -> None:
    assert gather_images([shared_data / "raw"])[1] == "raw"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no raw files"):
        gather_images([tmp_path / "empty"], "raw")
    with pytest.raises(ConfigError, match="--kind must be one of"):
        gather_images([tmp_path], "jpeg")


def test_fit_on_raws_trains_a_raw_model_with_the_papers_raw_settings(shared_data: Path, one_thread: None) -> None:
    request = FitRequest(inputs=(shared_data / "raw" / "RAW_KODAK_DC50.KDC",), name="dc50", steps=3, crop=32,
                         batch_size=2, noise="poisson-gaussian:0.002,1e-5", checkpoint_every=100)
    outcome = fit(request)
    record = outcome.record
    assert (record.kind, record.in_channels, record.out_channels) == ("raw", 4, 4)
    assert record.training["lr"] == 1e-4 and record.training["gamma_end"] == 1.0
    assert record.noise == "poisson-gaussian:0.002,1e-5" and outcome.init == "raw-camera"  # the shipped raw model


def test_a_second_raw_fit_warm_starts_from_the_first_and_never_crosses_kinds(shared_data: Path,
                                                                            one_thread: None) -> None:
    kdc = shared_data / "raw" / "RAW_KODAK_DC50.KDC"
    # one step from raw-camera can fail its self-check (Adam's first steps): not what this test is about
    fit(FitRequest(inputs=(kdc,), name="dc50", steps=1, crop=32, batch_size=1, checkpoint_every=100,
                   self_check=False))
    again = fit(FitRequest(inputs=(kdc,), name="dc50-2", steps=1, crop=32, batch_size=1, checkpoint_every=100))
    assert again.init == "dc50" and again.record.training["lr"] == 1e-4
    with pytest.raises(ConfigError, match="a raw model with 4 channels cannot start a srgb model"):
        fit(FitRequest(inputs=(shared_data / "kodak24" / "kodim01.png",), name="s", steps=1, crop=32,
                       init="dc50"))


def test_gather_leaves_out_our_own_denoised_outputs(tmp_path: Path, shared_data: Path) -> None:
    from n2ncli.io.dng import write_dng
    from n2ncli.io.raw import read_raw

    kdc = shared_data / "raw" / "RAW_KODAK_DC50.KDC"
    folder = tmp_path / "shots"
    folder.mkdir()
    shutil.copy(kdc, folder / "a.kdc")
    mosaic = read_raw(kdc).mosaic
    write_dng(folder / "renamed.dng", mosaic, kdc, software="n2ncli", record={"model": "m"})  # denoised
    write_dng(folder / "copy.dng", mosaic, kdc, software="converter", record=None)  # just another raw
    shutil.copy(folder / "a.kdc", folder / "a.n2n.kdc")
    assert gather_images([folder]) == ([folder / "a.kdc", folder / "copy.dng"], "raw")


# ----------------------------------------------------------------------------- default names


@pytest.mark.parametrize("folder", ["Photos-été", ".shots", "_raw", "Holiday Photos", "北京"])
def test_default_names_from_folder_names_are_valid_and_stable(tmp_path: Path, folder: str) -> None:
    (tmp_path / folder).mkdir()
    name = default_name([tmp_path / folder])
    assert check_name(name) == name and default_name([tmp_path / folder]) == name
    if folder in ("Photos-été", "Holiday Photos"):
        assert name == {"Photos-été": "photos-ete", "Holiday Photos": "holiday-photos"}[folder]


def test_default_name_of_a_file_is_its_stem(tmp_path: Path) -> None:
    (tmp_path / "Été.png").write_bytes(b"")
    assert default_name([tmp_path / "Été.png"]) == "ete"


def test_cli_fit_on_a_folder_with_accents_names_the_model_after_it(tmp_path: Path, shared_data: Path, n2n,
                                                                   n2n_home: Path, one_thread: None) -> None:
    """The reported bug: `n2n fit Photos-été/` failed with "bad model name" for a name never typed."""
    folder = tmp_path / "Photos-été"
    folder.mkdir()
    shutil.copy(shared_data / "kodak24" / "kodim01.png", folder / "a.png")
    run = n2n("fit", folder, "--steps", "1", "--crop", "32", "--batch-size", "1", "--init", "none",
              "--no-self-check")
    assert run.code == 0, run.err
    assert (n2n_home / "models" / "photos-ete" / "model.json").is_file()


def test_fp16_fit_on_cpu_is_refused_before_any_image_is_read(tmp_path: Path) -> None:
    request = FitRequest(inputs=(tmp_path / "not-there",), name="m", steps=1, device="cpu", precision="fp16")
    with pytest.raises(ConfigError, match="--precision bf16"):
        fit(request)


# ----------------------------------------------------------------------------- --val, --epochs, --sampler


def _crops(shared_data: Path, folder: Path, names: tuple[str, ...], size: int = 64) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, name in enumerate(names):
        with Image.open(shared_data / "kodak24" / f"kodim0{i + 1}.png") as im:
            path = folder / name
            im.crop((100, 100, 100 + size, 100 + size)).save(path)
            out.append(path)
    return out


def test_validation_pairs_noisy_and_clean_subfolders_pair_by_stem(tmp_path: Path, shared_data: Path) -> None:
    import numpy as np

    from n2ncli.fit import load_validation, read_float

    _crops(shared_data, tmp_path / "val" / "clean", ("a.png", "b.png"))
    _crops(shared_data, tmp_path / "val" / "noisy", ("b.png", "c.png"))  # only b has a namesake
    pairs = load_validation(tmp_path / "val", None, 3, seed=0)
    assert len(pairs.noisy) == 1
    np.testing.assert_array_equal(pairs.noisy[0], read_float(tmp_path / "val" / "noisy" / "b.png"))
    np.testing.assert_array_equal(pairs.clean[0], read_float(tmp_path / "val" / "clean" / "b.png"))
    (tmp_path / "val" / "noisy" / "b.png").rename(tmp_path / "val" / "noisy" / "d.png")
    with pytest.raises(DatasetError, match="no file in noisy/ has a namesake in clean/"):
        load_validation(tmp_path / "val", None, 3, seed=0)


def test_validation_from_clean_images_adds_the_noise_reproducibly(tmp_path: Path, shared_data: Path) -> None:
    import numpy as np

    from n2ncli.fit import load_validation

    _crops(shared_data, tmp_path / "val", ("a.png", "b.png"))
    with pytest.raises(DatasetError, match="needs noisy/ and clean/ subfolders"):
        load_validation(tmp_path / "val", None, 3, seed=0)
    a = load_validation(tmp_path / "val", "gaussian25", 3, seed=4)
    b = load_validation(tmp_path / "val", "gaussian25", 3, seed=4)
    assert len(a.noisy) == 2
    np.testing.assert_array_equal(a.noisy[0], b.noisy[0])
    assert abs(float(np.std(a.noisy[0] - a.clean[0])) - 25 / 255) < 0.01


def test_validate_scores_psnr_against_the_clean_images() -> None:
    import math

    import numpy as np
    import torch

    from n2ncli.train import ValidationPairs, validate

    class Identity(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    rng = np.random.default_rng(0)
    clean = rng.uniform(0.2, 0.8, (32, 32, 3)).astype(np.float32)
    noisy = (clean + rng.normal(0, 0.05, clean.shape)).astype(np.float32)
    expected = 10 * math.log10(1 / float(np.mean((np.clip(noisy, 0, 1) - clean) ** 2)))
    assert validate(Identity(), ValidationPairs([noisy], [clean]), torch.device("cpu")) == pytest.approx(expected, abs=1e-4)


def test_fit_with_val_epochs_and_the_fixed_sampler(tmp_path: Path, shared_data: Path, one_thread: None) -> None:
    """--epochs 2 over 6 images at batch 4 is ceil(2 * 6 / 4) = 3 steps; --val reports a PSNR;
    --sampler fixed is what the model records."""
    _crops(shared_data, tmp_path / "train", tuple(f"{k}.png" for k in "abcdef"))
    _crops(shared_data, tmp_path / "val", ("v.png",))
    outcome = fit(FitRequest(inputs=(tmp_path / "train",), name="val-epochs", epochs=2, batch_size=4, crop=32,
                             val=tmp_path / "val", noise="gaussian25", sampler="fixed", self_check=False,
                             checkpoint_every=100))
    assert outcome.result.steps == 3
    assert outcome.result.val_psnr is not None and 15 < outcome.result.val_psnr < 60
    assert outcome.record.training["sampler"] == "fixed"
    with pytest.raises(ConfigError, match="--steps or --epochs"):
        fit(FitRequest(inputs=(tmp_path / "train",), name="both", epochs=1, steps=1))


def test_float_tiffs_train_as_16_bit_of_their_unit_range(tmp_path: Path) -> None:
    from n2ncli.io.image import write_image

    wide = np.linspace(-0.5, 1.5, 5 * 8 * 3, dtype=np.float32).reshape(5, 8, 3)
    pixels = read_pixels(write_image(tmp_path / "hdr.tif", wide, bit_depth=32))
    assert pixels.dtype == np.uint16
    np.testing.assert_array_equal(pixels, np.clip(np.floor(wide * 65535.0 + 0.5), 0, 65535))


# ----------------------------------------------------------------------------- the colour guard on raws


def _raw_default() -> str | None:
    from n2ncli.errors import ModelNotFoundError
    from n2ncli.store import default_model

    try:
        return default_model("raw").name
    except ModelNotFoundError:
        return None


def test_a_brief_raw_fit_from_scratch_is_refused_as_the_default_and_says_why(chart: Path, n2n, n2n_home: Path,
                                                                             one_thread: None) -> None:
    """The reported failure: 20 steps from scratch on one DNG developed it to a flat pink field, and
    all the fit said was its final loss. A strip of the chart is held back even from one file."""
    import json

    before = _raw_default()
    run = n2n("fit", chart, "--name", "scratch", "--steps", "20", "--crop", "64", "--init", "none")
    assert run.code == 0, run.err
    text = " ".join((run.out + run.err).split())
    assert "trained from scratch for only 20 steps" in text
    assert "the fitted model shifts the colours (" in text and "on held-out patches" in text
    assert "strips of 1 raw file(s)" in text
    check = json.loads((n2n_home / "models" / "scratch" / "model.json").read_text())["self_check"]
    assert check["held"] == "strips" and check["passed"] is False and check["colour"]["passed"] is False
    assert max(abs(v) for v in check["colour"]["after"]) > 0.15 and check["colour"]["before"] == [0.0] * 4
    assert _raw_default() == before != "scratch"
    if before:
        assert f"kept {before} as the default raw model" in text


def test_a_short_raw_fit_from_the_shipped_model_keeps_the_colours(chart: Path, one_thread: None) -> None:
    outcome = fit(FitRequest(inputs=(chart,), name="warm", steps=10, crop=64, checkpoint_every=100))
    check = outcome.check
    assert outcome.init == "raw-camera" and not outcome.too_brief
    assert check is not None and check.held == "strips" and check.colour_passed
    assert check.colour_after.worst < 0.15 / 2 and outcome.record.extra["self_check"]["colour"]["passed"] is True


def test_a_fit_on_grey_photos_starts_from_the_shipped_grey_model(tmp_path: Path, kodak_crop,  # noqa: ANN001
                                                                 one_thread: None) -> None:
    from PIL import Image

    folder = tmp_path / "scans"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, image in enumerate(("kodim01.png", "kodim23.png")):
        grey = kodak_crop(0, 0, 96, 96, image=image).mean(axis=2)
        Image.fromarray(np.clip(np.rint(grey + rng.normal(0, 20, grey.shape)), 0, 255).astype(np.uint8),
                        mode="L").save(folder / f"{i}.png")
    outcome = fit(FitRequest(inputs=(folder,), name="scans", steps=1, crop=64, batch_size=1, checkpoint_every=100,
                             self_check=False))
    assert outcome.record.in_channels == 1
    assert outcome.init == "grey-gaussian5-50"  # not from scratch, as before there was a grey model
