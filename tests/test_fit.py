"""`fit` as a library call: which files it trains on, and the raw settings it picks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from n2ncli.errors import ConfigError, DatasetError
from n2ncli.fit import FitRequest, fit, gather_images


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
    assert record.noise == "poisson-gaussian:0.002,1e-5" and outcome.init == "none"


def test_a_second_raw_fit_warm_starts_from_the_first_and_never_crosses_kinds(shared_data: Path,
                                                                            one_thread: None) -> None:
    kdc = shared_data / "raw" / "RAW_KODAK_DC50.KDC"
    fit(FitRequest(inputs=(kdc,), name="dc50", steps=1, crop=32, batch_size=1, checkpoint_every=100))
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
