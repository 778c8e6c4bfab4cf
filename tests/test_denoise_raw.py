"""Denoising raw files: the mosaic path end to end on the real DNG and KDC.

An identity network (returns its input) isolates everything around the network: reading,
normalising, packing, tiling, unpacking, scaling back to DN and writing must then reproduce the
input mosaic, and the TIFF must be LibRaw's own development of the input.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rawpy
import torch

from n2ncli.backends.torch import TorchPredictor
from n2ncli.denoise import OutputSettings, TileOptions, denoise_raw, run_job, run_jobs
from n2ncli.jobs import Job, expand_inputs, plan_jobs
from n2ncli.errors import ConfigError, ImageWriteError, IncompatibleModelError
from n2ncli.io.image import read_image
from n2ncli.io.raw import read_raw, render
from n2ncli.local_mean import SIGMA_RAW
from n2ncli.noise_guard import NoiseGuarded
from n2ncli.pd import MeanKept
from identity import Identity
from n2ncli.nets.unet import UNet


def _raw_image(path: Path) -> np.ndarray:
    with rawpy.imread(str(path)) as raw:
        return raw.raw_image.copy()


@pytest.mark.parametrize("name", ["colorchart.dng", "RAW_KODAK_DC50.KDC"])
def test_identity_model_returns_the_input_mosaic_in_dn(shared_data: Path, name: str) -> None:
    raw = read_raw(shared_data / "raw" / name)
    out = denoise_raw(raw, Identity(4), TileOptions(tile=128, overlap=16))
    assert out.dtype == np.uint16 and np.array_equal(out, raw.mosaic)


@pytest.mark.parametrize("name", ["colorchart.dng", "RAW_KODAK_DC50.KDC"])
def test_identity_dng_holds_the_input_mosaic_within_one_dn(shared_data: Path, tmp_path: Path, name: str) -> None:
    source = shared_data / "raw" / name
    target = tmp_path / "out.dng"
    run_job(Job(source, target), Identity(4), TileOptions(tile=0), writing=OutputSettings(record={"model": "identity"}))
    ours, theirs = _raw_image(target), _raw_image(source)
    assert ours.shape == theirs.shape
    assert np.abs(ours.astype(np.int64) - theirs).max() <= 1
    with rawpy.imread(str(target)) as a, rawpy.imread(str(source)) as b:
        assert np.array_equal(a.raw_colors_visible[:2, :2], b.raw_colors_visible[:2, :2])  # the camera's own phase


def test_identity_tiff_equals_libraws_own_render_of_the_input(chart: Path, tmp_path: Path) -> None:
    target = tmp_path / "out.tif"
    run_job(Job(chart, target), Identity(4), TileOptions(tile=256, overlap=32))
    ours = read_image(target)
    assert ours.bit_depth == 16
    assert np.array_equal(ours.pixels, render(chart, read_raw(chart).mosaic))


def test_linear_tiff_and_8_bit_jpeg(kdc: Path, tmp_path: Path) -> None:
    mosaic = read_raw(kdc).mosaic
    run_job(Job(kdc, tmp_path / "lin.tif"), Identity(4), writing=OutputSettings(linear=True))
    assert np.array_equal(read_image(tmp_path / "lin.tif").pixels, render(kdc, mosaic, linear=True))
    run_job(Job(kdc, tmp_path / "out.jpg"), Identity(4))
    jpeg = read_image(tmp_path / "out.jpg")
    assert jpeg.bit_depth == 8 and jpeg.pixels.shape == (512, 768, 3)
    reference = (render(kdc, mosaic).astype(np.float64) / 257).round()
    assert np.abs(jpeg.pixels.astype(np.float64) - reference).mean() < 3  # JPEG compression only


@pytest.mark.slow
def test_tiles_fall_between_bayer_cells(chart: Path) -> None:
    """Tiles are cut on the packed grid: a tile of T packed pixels covers 2T mosaic pixels, and a
    real network gives the same result tiled as whole (up to the float noise of blending)."""
    raw = read_raw(chart)
    identity = Identity(4)
    denoise_raw(raw, identity, TileOptions(tile=128, overlap=16, context=64))
    assert {shape[-1] for shape in identity.shapes} == {4}
    torch.manual_seed(0)
    net = TorchPredictor(UNet(4), "cpu")
    small = type(raw)(raw.source, raw.mosaic, raw.top + 300, raw.left + 400, 300, 420, raw.pattern, raw.black, raw.white)
    whole = denoise_raw(small, net, TileOptions(tile=0)).astype(np.int64)
    tiled = denoise_raw(small, net, TileOptions(tile=128, overlap=32)).astype(np.int64)
    assert np.abs(whole - tiled).max() <= 2


class _Darkening(Identity):
    def predict(self, batch: np.ndarray) -> np.ndarray:
        return super().predict(batch) * 0.9


def test_a_raw_keeps_its_local_mean_after_the_guard_and_an_identity_stays_exact(kdc: Path) -> None:
    """``MeanKept`` around the guard: the packed input's local mean comes back once the guard is
    done (a 10 % darkening is undone), and the identity still returns the mosaic bit for bit."""
    raw = read_raw(kdc)
    tiles = TileOptions(tile=128, overlap=16)
    assert np.array_equal(denoise_raw(raw, MeanKept(NoiseGuarded(Identity(4)), SIGMA_RAW), tiles), raw.mosaic)
    dark = denoise_raw(raw, NoiseGuarded(_Darkening(4)), tiles).astype(np.float64)
    kept = denoise_raw(raw, MeanKept(NoiseGuarded(_Darkening(4)), SIGMA_RAW), tiles).astype(np.float64)
    visible = raw.mosaic.astype(np.float64)
    assert abs(kept.mean() - visible.mean()) < 0.1 * abs(dark.mean() - visible.mean())


def test_an_srgb_model_refuses_raw_input(chart: Path) -> None:
    with pytest.raises(IncompatibleModelError, match="raw files need a raw model"):
        denoise_raw(read_raw(chart), Identity(3))


def test_raw_outputs_default_to_dng_and_images_cannot_become_dng(tmp_path: Path, chart: Path, kdc: Path,
                                                                  shared_data: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for src in (chart, kdc, shared_data / "kodak24" / "kodim01.png"):
        shutil.copy(src, folder / src.name)
    jobs = plan_jobs([folder], tmp_path / "out")
    assert sorted(j.target.name for j in jobs) == ["RAW_KODAK_DC50.n2n.dng", "colorchart.n2n.dng", "kodim01.n2n.png"]
    assert {j.kind for j in jobs} == {"raw", "srgb"}
    assert sorted(j.target.name for j in plan_jobs([folder / "colorchart.dng"], tmp_path, suffix=".tif")) == [
        "colorchart.n2n.tif"]
    with pytest.raises(ConfigError, match="only raw files can be written as DNG"):
        plan_jobs([folder / "kodim01.png"], tmp_path / "x.dng")


def test_folder_runs_skip_our_own_dngs_even_renamed_and_can_skip_existing(tmp_path: Path, kdc: Path) -> None:
    folder = tmp_path / "shots"
    folder.mkdir()
    shutil.copy(kdc, folder / "a.kdc")
    run_jobs(plan_jobs([folder], None), Identity(4), writing=OutputSettings(record={"model": "identity"}))
    (folder / "a.n2n.dng").rename(folder / "renamed.dng")
    assert expand_inputs([folder]) == [folder / "a.kdc"]  # renamed output still recognised by its record
    shutil.copy(folder / "renamed.dng", folder / "a.n2n.dng")
    with pytest.raises(ImageWriteError, match="exists already"):
        plan_jobs([folder], None)
    assert plan_jobs([folder], None, skip_existing=True) == []


def test_mixed_folders_use_one_predictor_per_kind(tmp_path: Path, kdc: Path, shared_data: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(kdc, folder / "a.kdc")
    shutil.copy(shared_data / "kodak24" / "kodim02.png", folder / "b.png")
    raw_net, rgb_net = Identity(4), Identity(3)
    run_jobs(plan_jobs([folder], tmp_path / "out"), {"raw": raw_net, "srgb": rgb_net})
    assert raw_net.shapes and rgb_net.shapes
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.n2n.dng", "b.n2n.png"]


def test_developed_images_carry_the_cameras_exif(kdc: Path, tmp_path: Path) -> None:
    """Make, model, date and exposure from the raw (the KDC keeps them in IFD0 and Exif; LibRaw
    supplies the ISO), so photo managers still know the shot."""
    run_job(Job(kdc, tmp_path / "out.jpg"), Identity(4))
    from PIL import Image

    with Image.open(tmp_path / "out.jpg") as im:
        exif = im.getexif()
        shot = exif.get_ifd(0x8769)
    assert exif[271] == "Eastman Kodak Company" and exif[306] == "1997:04:23 08:00:47"
    assert float(shot[33434]) == pytest.approx(1 / 230, rel=1e-3) and shot[34855] == 84
    assert float(shot[33437]) == pytest.approx(6.2)


def _bytes_read() -> int:
    """This process's bytes read so far (Linux): a decode reads the whole file."""
    io = Path("/proc/self/io")
    if not io.is_file():
        pytest.skip("no /proc/self/io")
    return next(int(line.split()[1]) for line in io.read_text().splitlines() if line.startswith("rchar"))


def test_a_crw_to_dng_is_decoded_once(shared_data: Path, tmp_path: Path) -> None:
    """The DNG's metadata comes from the decode the network's input did (it read the file 2.3x)."""
    source = shared_data / "raw" / "canon_powershot_s40.crw"
    start = _bytes_read()
    run_job(Job(source, tmp_path / "s40.dng"), Identity(4), TileOptions(tile=0),
            writing=OutputSettings(record={"model": "identity"}))
    assert _bytes_read() - start < 1.6 * source.stat().st_size  # measured 1.2x: one decode, the CIFF tags
    with rawpy.imread(str(tmp_path / "s40.dng")) as out, rawpy.imread(str(source)) as src:
        np.testing.assert_array_equal(out.raw_image, src.raw_image)
