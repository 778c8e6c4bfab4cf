"""DNG output: the mosaic reads back bit-exact, the source's metadata is carried, raw tools open it."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rawpy
import tifffile

from n2ncli.errors import ConfigError, ImageReadError, ImageWriteError
from n2ncli.io import dng, tiff
from n2ncli.io.dng import (
    DNG_VERSION, LINEARIZATION_TABLE, MAKER_NOTE, NOISE_PROFILE, NOISE_REDUCTION_APPLIED, OPCODE_LIST_1,
    OPCODE_LIST_2, OPCODE_LIST_3, read_processing_record, write_dng,
)
from n2ncli.io.tiff import (
    EXIF_IFD, GPS_IFD, ORIENTATION, SUB_IFDS, XMP, Ifd, Tag, TagType, TiffFormatError, read_tiff_ifds,
    write_tiff_ifds,
)
from synthetic_raw import bayer_dng, linear_raw_dng, monochrome_dng, unnamed_camera_dng, xtrans_dng

SOFTWARE = "n2ncli 0.1.0 (test)"
RECORD = {"model": "raw-test", "sha256": "ab" * 32, "version": "0.1.0",
          "settings": {"backend": "torch", "tile": 256, "self_ensemble": False}}
DC_NS, XMP_NS = "http://purl.org/dc/elements/1.1/", "http://ns.adobe.com/xap/1.0/"
SOURCE_XMP = (
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
    '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
    f'xmlns:dc="{DC_NS}" xmlns:xmp="{XMP_NS}" xmp:CreatorTool="Camera firmware 1.0" xmp:Rating="3">'
    '<dc:title><rdf:Alt><rdf:li xml:lang="x-default">Test scene</rdf:li></rdf:Alt></dc:title>'
    '</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>').encode()


def opcode_list(*opcodes: tuple[int, bytes]) -> bytes:
    """A DNG opcode list (always big-endian): count, then id, DNG version, flags, size, parameters."""
    out = struct.pack(">I", len(opcodes))
    for opcode_id, params in opcodes:
        out += struct.pack(">IIII", opcode_id, 0x01030000, 1, len(params)) + params
    return out


# FixBadPixelsConstant (id 4): constant 0, Bayer phase 0; TrimBounds (id 6): top, left, bottom, right.
OPCODES_1 = opcode_list((4, struct.pack(">II", 0, 0)))
OPCODES_2 = opcode_list((6, struct.pack(">IIII", 0, 0, 30, 40)))
OPCODES_3 = opcode_list((4, struct.pack(">II", 0, 1)), (6, struct.pack(">IIII", 1, 1, 29, 39)))


def raw_tool(name: str) -> str:
    """Path of an external raw tool. Missing: skip, or fail under N2N_REQUIRE_RAW_TOOLS=1 (CI)."""
    found = shutil.which(name)
    if found is None:
        message = f"{name} is not installed (Debian: apt install exiftool dcraw libraw-bin rawtherapee darktable)"
        if os.environ.get("N2N_REQUIRE_RAW_TOOLS") == "1":
            pytest.fail(f"{message}, and N2N_REQUIRE_RAW_TOOLS=1 requires it")
        pytest.skip(message)
    return found


def raw_facts(path: Path) -> dict:
    """What rawpy reports about a raw, copied out before the file closes."""
    with rawpy.imread(str(path)) as raw:
        s = raw.sizes
        return {"raw": raw.raw_image.copy(), "pattern": raw.raw_pattern.tolist(),
                "black": raw.black_level_per_channel, "white": raw.white_level,
                "sizes": (s.raw_height, s.raw_width, s.height, s.width, s.top_margin, s.left_margin, s.flip)}


def tags_of(path: Path) -> dict[int, Tag]:
    return read_tiff_ifds(path).ifds[0].tags


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def outputs(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path, np.ndarray]]:
    """name -> (source, our DNG, the mosaic written): the real DNG and KDC, unchanged and altered,
    and a synthetic DNG rich in metadata (NoiseProfile, opcodes, XMP, GPS, old DNGVersion)."""
    folder = tmp_path_factory.mktemp("dng")
    rng = np.random.default_rng(7)
    rich = folder / "rich_source.dng"
    gps = Ifd().add(Tag.byte(0, (2, 3, 0, 0)), Tag.ascii(1, "N"), Tag.rational(2, (47, 1), (22, 1), (3015, 100)))
    bayer_dng(rich, "BGGR", 48, 64, black=600, white=15000, seed=3, extra_tags=[
        Tag.double(NOISE_PROFILE, 2e-4, 3e-6), Tag.undefined(OPCODE_LIST_1, OPCODES_1),
        Tag.undefined(OPCODE_LIST_2, OPCODES_2), Tag.undefined(OPCODE_LIST_3, OPCODES_3),
        Tag.byte(DNG_VERSION, (1, 2, 0, 0)), Tag.short(ORIENTATION, 6), Tag.byte(XMP, SOURCE_XMP),
        Tag.ifds(GPS_IFD, gps)])
    sources = {"chart": shared_data / "raw" / "colorchart.dng", "kdc": shared_data / "raw" / "RAW_KODAK_DC50.KDC",
               "rich": rich}
    out: dict[str, tuple[Path, Path, np.ndarray]] = {}
    for name, source in sources.items():
        if not source.is_file():
            pytest.skip(f"raw sample not found at {source}")
        with rawpy.imread(str(source)) as raw:
            mosaic = raw.raw_image.copy()
        altered = np.clip(mosaic.astype(np.int32) + rng.integers(-64, 64, mosaic.shape), 0, 65535).astype(np.uint16)
        for suffix, data in (("", mosaic), ("_altered", altered)):
            target = folder / f"{name}{suffix}.dng"
            write_dng(target, data, source, software=SOFTWARE, record=RECORD)
            out[name + suffix] = (source, target, data)
    return out


@pytest.fixture(scope="module")
def exif(outputs: dict[str, tuple[Path, Path, np.ndarray]]) -> dict[str, dict]:
    """exiftool's reading (numeric, grouped, with -validate) of every source and output, one run."""
    tool = raw_tool("exiftool")
    files = sorted({str(p) for source, target, _ in outputs.values() for p in (source, target)})
    run = subprocess.run([tool, "-j", "-n", "-G1", "-a", "-validate", "-all", *files],
                         capture_output=True, text=True, check=False, timeout=60)
    return {Path(entry["SourceFile"]).name: entry for entry in json.loads(run.stdout)}


def field(entry: dict, name: str) -> object:
    """A TIFF/Exif tag by name whatever its IFD (``IFD0:Make`` or ``ExifIFD:ISO``); None when absent."""
    return next((v for k, v in entry.items() if k.split(":")[-1] == name and not k.startswith("XMP")), None)


# ------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("name", ["chart", "chart_altered", "kdc", "kdc_altered", "rich", "rich_altered"])
def test_rawpy_reads_back_the_mosaic_and_its_geometry(outputs: dict, name: str) -> None:
    source, target, mosaic = outputs[name]
    ours, theirs = raw_facts(target), raw_facts(source)
    np.testing.assert_array_equal(ours["raw"], mosaic)
    for key in ("pattern", "black", "white", "sizes"):
        assert ours[key] == theirs[key], key


def test_kdc_keeps_its_grbg_phase(outputs: dict) -> None:
    _, target, _ = outputs["kdc"]
    assert raw_facts(target)["pattern"] == [[1, 0], [2, 3]]  # G R / B G on the whole sensor
    assert tags_of(target)[dng.CFA_PATTERN].value == bytes((1, 0, 2, 1))


def test_unchanged_dng_renders_exactly_like_its_source(outputs: dict) -> None:
    source, target, _ = outputs["chart"]
    with rawpy.imread(str(source)) as raw:
        expected = raw.postprocess()
    with rawpy.imread(str(target)) as raw:
        np.testing.assert_array_equal(raw.postprocess(), expected)


@pytest.mark.parametrize("colour", [rawpy.ColorSpace.raw, rawpy.ColorSpace.sRGB], ids=["camera", "sRGB"])
@pytest.mark.parametrize("name", ["kdc", "dc120"])
def test_unchanged_kodaks_develop_like_their_sources(outputs: dict, camera_dngs: dict, name: str,
                                                     colour: rawpy.ColorSpace) -> None:
    """LibRaw has no Adobe matrix for these Kodaks but develops them with the file's own camera ->
    sRGB matrix (tag 37400), and the DC120 (no stored white balance) with its grey-world balance:
    ours carries both (ColorMatrix1, AsShotNeutral), so even the sRGB development agrees."""
    source, target = outputs[name][:2] if name in outputs else camera_dngs[name]
    options = dict(output_color=colour, use_camera_wb=True, no_auto_bright=True, gamma=(1, 1))
    with rawpy.imread(str(source)) as raw:
        expected = raw.postprocess(**options).astype(np.float64)
    with rawpy.imread(str(target)) as raw:
        got = raw.postprocess(**options).astype(np.float64)
    assert got.shape == expected.shape
    assert np.abs(got - expected).mean() < 0.5


def test_tifffile_reads_the_same_pixels(outputs: dict) -> None:
    """An independent TIFF reader sees our lossless JPEG tiles as the mosaic (layout and byte order right)."""
    _, target, mosaic = outputs["kdc_altered"]  # big-endian, like its source
    with tifffile.TiffFile(target) as tif:
        assert tif.byteorder == ">"
        np.testing.assert_array_equal(tif.pages[0].asarray(), mosaic)


# ------------------------------------------------------------------------------------ metadata

CARRIED = ("Make", "Model", "UniqueCameraModel", "CFAPattern2", "CFARepeatPatternDim", "BlackLevel", "WhiteLevel",
           "ActiveArea", "DefaultCropOrigin", "DefaultCropSize", "ColorMatrix1", "CalibrationIlluminant1",
           "AsShotNeutral", "AnalogBalance", "BaselineSharpness", "Orientation", "ExposureTime", "ISO", "FNumber",
           "FocalLength", "DateTimeOriginal", "Copyright", "ImageDescription")


@pytest.mark.parametrize("name", ["chart", "rich"])
def test_exiftool_sees_the_dng_sources_metadata(exif: dict, outputs: dict, name: str) -> None:
    source, target, _ = outputs[name]
    theirs, ours = exif[source.name], exif[target.name]
    for tag in CARRIED:
        if field(theirs, tag) is not None:
            assert field(ours, tag) == field(theirs, tag), tag
    assert field(ours, "Software") == SOFTWARE
    assert field(ours, "NoiseReductionApplied") == 1
    assert json.loads(ours["XMP-n2n:DenoiseRecord"]) == RECORD
    assert ours["XMP-n2n:DenoiseModel"] == RECORD["model"]
    assert ours["XMP-n2n:DenoiseModelSha256"] == RECORD["sha256"]


def test_exiftool_sees_the_kdc_metadata_in_dng_places(exif: dict) -> None:
    """A TIFF-EP source keeps shot details in IFD0; ours has them in the Exif IFD, plus the DNG tags."""
    ours = exif["kdc.dng"]
    assert ours["IFD0:Make"] == "Eastman Kodak Company"
    assert ours["IFD0:Model"] == "Kodak Digital Science DC50 Zoom Camera"
    assert ours["IFD0:UniqueCameraModel"] == "Eastman Kodak Company Kodak Digital Science DC50 Zoom Camera"
    assert ours["IFD0:CFAPattern2"] == "1 0 2 1" and ours["IFD0:CFAPlaneColor"] == "0 1 2"
    assert ours["IFD0:BlackLevel"] == "0 0 0 0" and ours["IFD0:WhiteLevel"] == 16383
    assert ours["IFD0:ActiveArea"] == "0 0 512 768" and ours["IFD0:DefaultCropSize"] == "768 512"
    assert ours["IFD0:CalibrationIlluminant1"] == 21 and len(ours["IFD0:ColorMatrix1"].split()) == 9
    assert ours["IFD0:AsShotNeutral"] == "1 1 1" and ours["IFD0:Orientation"] == 1
    assert ours["ExifIFD:ExposureTime"] == pytest.approx(1 / 230, rel=1e-3)
    assert ours["ExifIFD:FNumber"] == 6.2 and ours["ExifIFD:FocalLength"] == 37
    assert ours["ExifIFD:ISO"] == 84  # not among the KDC's tags: from LibRaw
    assert ours["ExifIFD:DateTimeOriginal"] == "1997:04:23 08:00:47"
    assert ours["IFD0:Software"] == SOFTWARE and ours["IFD0:TIFF-EPStandardID"] == "0 9 0 0"
    assert ours["ExifIFD:SensingMethod"] == 2  # TIFF-EP's IFD0 tag, moved to its Exif twin


@pytest.mark.parametrize("name", ["chart", "kdc", "rich_altered"])
def test_exiftool_validates_ours_as_well_as_the_source(exif: dict, outputs: dict, name: str) -> None:
    """errors / warnings / minor warnings: no more than the source has (colorchart: 3 minor, its own)."""
    source, target, _ = outputs[name]
    errors, warnings, _ = map(int, str(exif[target.name]["ExifTool:Validate"]).split())
    assert errors == 0
    if source.suffix.lower() == ".dng":
        assert exif[target.name]["ExifTool:Validate"] == exif[source.name]["ExifTool:Validate"]
    else:
        assert warnings == 0


def test_noise_profile_goes_and_opcodes_survive_byte_for_byte(outputs: dict) -> None:
    source, target, _ = outputs["rich"]
    theirs, ours = tags_of(source), tags_of(target)
    assert NOISE_PROFILE in theirs and NOISE_PROFILE not in ours
    for code in (OPCODE_LIST_1, OPCODE_LIST_2, OPCODE_LIST_3):
        assert ours[code].value == theirs[code].value and ours[code].type == TagType.UNDEFINED
    assert ours[DNG_VERSION].value == bytes((1, 3, 0, 0))  # raised: opcode lists need DNG 1.3
    assert ours[NOISE_REDUCTION_APPLIED].value == ((1, 1),)
    assert ours[ORIENTATION].value == (6,)
    assert SUB_IFDS not in ours and LINEARIZATION_TABLE not in ours
    assert ours[GPS_IFD].value[0].tags[2].value == ((47, 1), (22, 1), (3015, 100))


def test_source_xmp_is_kept_and_extended(exif: dict) -> None:
    ours = exif["rich.dng"]
    assert ours["XMP-dc:Title"] == "Test scene" and ours["XMP-xmp:Rating"] == 3
    assert ours["XMP-xmp:CreatorTool"] == SOFTWARE  # replaced, not duplicated
    assert json.loads(ours["XMP-n2n:DenoiseSettings"]) == RECORD["settings"]
    assert ours["XMP-n2n:DenoiseVersion"] == "0.1.0"


def test_a_raw_in_subifds_is_found(tmp_path: Path) -> None:
    """Adobe's layout: IFD0 a preview, the raw in SubIFDs. Ours: the raw in IFD0, no SubIFDs."""
    source = tmp_path / "subifd.dng"
    mosaic = bayer_dng(source, "GBRG", 40, 54, layout="subifd", active_area=(2, 2, 38, 52))
    target = tmp_path / "out.dng"
    write_dng(target, mosaic, source, software=SOFTWARE, record={})
    facts = raw_facts(target)
    np.testing.assert_array_equal(facts["raw"], mosaic)
    assert facts["pattern"] == raw_facts(source)["pattern"] == [[3, 2], [0, 1]]
    tags = tags_of(target)
    assert SUB_IFDS not in tags and tags[254].value == (0,) and tags[tiff.MAKE].text() == "n2ncli"
    assert read_processing_record(target) == {}


def test_a_linearization_table_is_dropped_because_rawpy_applied_it(tmp_path: Path) -> None:
    source = tmp_path / "table.dng"
    table = np.arange(4096) * 4
    stored = bayer_dng(source, "RGGB", 24, 32, black=0, white=4095,
                       extra_tags=[Tag.short(LINEARIZATION_TABLE, *table.tolist())])
    with rawpy.imread(str(source)) as raw:
        linear = raw.raw_image.copy()
    np.testing.assert_array_equal(linear, table[stored])  # LibRaw's raw_image is linearised
    target = tmp_path / "out.dng"
    write_dng(target, linear, source, software=SOFTWARE, record={})
    assert LINEARIZATION_TABLE not in tags_of(target)
    np.testing.assert_array_equal(raw_facts(target)["raw"], linear)


def test_white_level_is_stated_when_the_source_relied_on_its_bit_depth(tmp_path: Path) -> None:
    """Without WhiteLevel a DNG's white is 2**BitsPerSample - 1: 255 for this 8-bit source, but
    65535 for our 16-bit copy, unless we say 255."""
    source = tmp_path / "8bit.dng"
    bayer_dng(source, "RGGB", mosaic=np.random.default_rng(2).integers(8, 256, (24, 32)).astype(np.uint8), black=8)
    ifd0 = read_tiff_ifds(source).ifds[0]
    del ifd0.tags[dng.WHITE_LEVEL]
    with tifffile.TiffFile(source) as tif:
        ifd0.image = tif.pages[0].asarray()
    write_tiff_ifds(source, [ifd0])
    with rawpy.imread(str(source)) as raw:
        mosaic, white = raw.raw_image.copy(), raw.white_level
    target = tmp_path / "out.dng"
    write_dng(target, mosaic, source, software=SOFTWARE, record={})
    assert tags_of(target)[dng.WHITE_LEVEL].value == (255,)
    assert raw_facts(target)["white"] == white == 255


def test_reprocessing_our_own_output_replaces_the_record(tmp_path: Path, outputs: dict) -> None:
    _, first, mosaic = outputs["rich"]
    target = tmp_path / "again.dng"
    write_dng(target, mosaic, first, software="n2ncli again", record={"model": "second"})
    assert read_processing_record(target) == {"model": "second"}
    packet = tags_of(target)[XMP].value
    assert packet.count(b"n2n:DenoiseRecord") == 2 and packet.count(b"CreatorTool") == 2  # one element each
    assert b"Test scene" in packet


# --------------------------------------------------------------------- the rawpy-built path


@pytest.mark.parametrize(("pattern", "orientation"), [("RGGB", 1), ("GRBG", 3), ("GBRG", 6), ("BGGR", 8)])
def test_tags_built_from_rawpy_describe_the_same_raw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     pattern: str, orientation: int) -> None:
    """A raw whose TIFF tags we cannot read (CR3, RAF...): everything comes from LibRaw. A DNG with
    its tag reader switched off stands in for one, so both files can be compared in rawpy."""
    source = tmp_path / "source.dng"
    mosaic = bayer_dng(source, pattern, 41, 57, black=300, white=12000, active_area=(2, 4, 40, 56),
                       extra_tags=[Tag.short(ORIENTATION, orientation)])

    def not_tiff(path: object, **kwargs: object) -> None:
        raise TiffFormatError("pretend this raw is not TIFF-based")

    target = tmp_path / "out.dng"
    with monkeypatch.context() as patched:
        patched.setattr(dng, "read_tiff_ifds", not_tiff)
        write_dng(target, mosaic, source, software=SOFTWARE, record=RECORD)
    ours, theirs = raw_facts(target), raw_facts(source)
    np.testing.assert_array_equal(ours["raw"], mosaic)
    for key in ("pattern", "black", "white", "sizes"):
        assert ours[key] == theirs[key], key
    tags = tags_of(target)
    assert tags[ORIENTATION].value == (orientation,)
    assert tags[dng.UNIQUE_CAMERA_MODEL].text() == "Unknown camera"
    shot = tags[EXIF_IFD].value[0].tags
    assert shot[dng.ISO].value == (1600,) and shot[dng.EXPOSURE_TIME].value == ((1, 125),)
    assert shot[dng.F_NUMBER].numbers() == (2.8,)
    assert shot[dng.DATE_TIME_ORIGINAL].text() == "2024:05:06 07:08:09"
    assert read_processing_record(target) == RECORD


def test_a_maker_note_moves_into_dng_private_data_as_adobe_lays_it_out() -> None:
    note = Tag(MAKER_NOTE, TagType.UNDEFINED, b"Nikon\0\2\0\0\0MM\0*\0\0\0\x08", offset=1234)
    block = dng._makn_block(note, ">")
    assert block.startswith(b"Adobe\0MakN")
    (size,) = struct.unpack(">I", block[10:14])
    assert block[14:16] == b"MM" and struct.unpack(">I", block[16:20]) == (1234,)
    assert block[20:20 + size - 6] == note.value and size == 6 + len(note.value)
    assert len(block) % 2 == 0


# ----------------------------------------------------------------------- synthetic raws in rawpy


@pytest.mark.parametrize("pattern", ["RGGB", "GRBG", "GBRG", "BGGR"])
@pytest.mark.parametrize("active_area", [None, (2, 4, 35, 51)], ids=["whole", "margins"])
def test_synthetic_bayer_dngs_open_in_rawpy(tmp_path: Path, pattern: str, active_area: tuple | None) -> None:
    path = tmp_path / "bayer.dng"
    mosaic = bayer_dng(path, pattern, 37, 53, active_area=active_area, seed=1)
    facts = raw_facts(path)
    np.testing.assert_array_equal(facts["raw"], mosaic)
    colours = np.where(np.array(facts["pattern"]) == 3, 1, facts["pattern"])  # rawpy calls green 2 "3"
    expected = {"RGGB": [[0, 1], [1, 2]], "GRBG": [[1, 0], [2, 1]], "GBRG": [[1, 2], [0, 1]], "BGGR": [[2, 1], [1, 0]]}
    assert colours.tolist() == expected[pattern]
    assert facts["black"] == [512] * 4 and facts["white"] == 16383


def test_odd_active_area_corners_keep_the_sensor_phase(tmp_path: Path) -> None:
    """DNG states CFAPattern from the ActiveArea's corner; LibRaw moves an odd corner to the next
    even row/column but reports the same whole-sensor pattern."""
    path = tmp_path / "odd.dng"
    bayer_dng(path, "GRBG", 37, 53, active_area=(1, 3, 35, 51))
    facts = raw_facts(path)
    assert facts["pattern"] == [[1, 0], [2, 3]]
    assert facts["sizes"][4:6] == (2, 4)


def test_what_rawpy_reports_for_non_bayer_dngs(tmp_path: Path) -> None:
    """The facts n2n's raw reader uses to refuse these (see the module's report)."""
    xtrans_dng(tmp_path / "x.dng")
    linear_raw_dng(tmp_path / "l.dng")
    monochrome_dng(tmp_path / "m.dng")
    with rawpy.imread(str(tmp_path / "x.dng")) as raw:
        assert raw.raw_type == rawpy.RawType.Flat and raw.raw_pattern.shape == (6, 6) and raw.num_colors == 3
    with rawpy.imread(str(tmp_path / "l.dng")) as raw:
        assert raw.raw_type == rawpy.RawType.Stack and raw.raw_pattern is None
        assert raw.raw_image.shape == (40, 56, 4)
    with rawpy.imread(str(tmp_path / "m.dng")) as raw:
        assert raw.raw_type == rawpy.RawType.Flat and raw.num_colors == 1 and raw.raw_pattern.shape == (1, 1)


@pytest.mark.parametrize("make", [xtrans_dng, linear_raw_dng, monochrome_dng], ids=["xtrans", "linear", "mono"])
def test_non_bayer_sources_are_refused(tmp_path: Path, make) -> None:  # noqa: ANN001
    source = tmp_path / "source.dng"
    image = make(source)
    mosaic = image if image.ndim == 2 else image[..., 0].copy()
    with pytest.raises(ImageReadError, match="source.dng"):
        write_dng(tmp_path / "out.dng", mosaic, source, software=SOFTWARE, record={})
    assert not (tmp_path / "out.dng").exists()


# ----------------------------------------------------------------------------------------- errors


def test_bad_mosaics_and_sources_raise_one_line_errors(tmp_path: Path, outputs: dict) -> None:
    source, _, mosaic = outputs["rich"]
    target = tmp_path / "out.dng"
    with pytest.raises(ImageWriteError, match="mosaic is 48x63"):
        write_dng(target, mosaic[:, :-1], source, software=SOFTWARE, record={})
    with pytest.raises(ImageWriteError, match="uint16"):
        write_dng(target, mosaic.astype(np.float32), source, software=SOFTWARE, record={})
    with pytest.raises(ImageReadError, match="missing.dng"):
        write_dng(target, mosaic, tmp_path / "missing.dng", software=SOFTWARE, record={})
    text = tmp_path / "notes.txt"
    text.write_text("not a raw file")
    with pytest.raises(ImageReadError, match="notes.txt"):
        write_dng(target, mosaic, text, software=SOFTWARE, record={})
    folder = tmp_path / "taken.dng"
    folder.mkdir()
    with pytest.raises(ImageWriteError, match="taken.dng"):
        write_dng(folder, mosaic, source, software=SOFTWARE, record={})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "taken.dng"]  # no temp files left


def test_read_processing_record_tells_ours_from_camera_files(tmp_path: Path, outputs: dict, shared_data: Path) -> None:
    assert read_processing_record(outputs["chart"][1]) == RECORD
    assert read_processing_record(outputs["chart"][0]) is None
    assert read_processing_record(outputs["kdc"][0]) is None
    assert read_processing_record(outputs["rich"][0]) is None  # has XMP, but not ours
    png = tmp_path / "image.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(32))
    assert read_processing_record(png) is None
    with pytest.raises(ImageReadError, match="missing.dng"):
        read_processing_record(tmp_path / "missing.dng")


# ---------------------------------------------------------------- the writer's bytes, kept

# sha256 of files written before the TIFF layer moved into io/tiff (n2ncli 0.2.0's dng.py): a
# synthetic source (little-endian; big-endian with the raw in a SubIFD), our DNG of it, and our
# DNG of the colour chart. Equal hashes: the move changed no byte of an uncompressed DNG.
GOLDEN = {
    "le": ("50c91a5af4d0a7486df2514df04ca3cfcb31a3974a612c979d2431cc1e10279f",
           "985e634d51d09c1d5c94837a32f328ed470775df37b7ca17a6a7ead22a620571"),
    "be_subifd": ("663a203efeb36da2ba889bb97f963382ac51fe43bd897f3f087244b4fd43677e",
                  "367ffca8d61fb10ab59139373cf782bcff69daf21ad3fc5e7b99e19c5a847933"),
    "chart": (None, "0080f52616c8cf2f5446e3c5e5ba5142c63acb2fcebb96fdc0ed3335d62e3c9b"),
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", list(GOLDEN))
def test_uncompressed_dngs_are_byte_for_byte_what_the_old_writer_wrote(tmp_path: Path, shared_data: Path,
                                                                         name: str) -> None:
    source_sha, dng_sha = GOLDEN[name]
    if name == "chart":
        source = shared_data / "raw" / "colorchart.dng"
        with rawpy.imread(str(source)) as raw:
            mosaic = raw.raw_image.copy()
    else:
        source = tmp_path / "source.dng"
        layout = {"byte_order": ">", "layout": "subifd", "active_area": (2, 2, 38, 52)} if name == "be_subifd" else {}
        mosaic = bayer_dng(source, "GRBG", 40, 54, seed=5, **layout)
        assert sha256(source) == source_sha
    target = tmp_path / "out.dng"
    write_dng(target, mosaic, source, software="n2ncli golden", record=None, compression="none")
    assert sha256(target) == dng_sha


# ------------------------------------------------------------------ lossless JPEG compression

# The tags that say how pixels are stored: the only ones a compressed DNG may have of its own.
LAYOUT = frozenset({tiff.COMPRESSION, tiff.ROWS_PER_STRIP, tiff.STRIP_OFFSETS, tiff.STRIP_BYTE_COUNTS, tiff.TILE_WIDTH,
                    tiff.TILE_LENGTH, tiff.TILE_OFFSETS, tiff.TILE_BYTE_COUNTS})
REAL_RAWS = {"chart": "colorchart.dng", "kdc": "RAW_KODAK_DC50.KDC", "crw": "canon_powershot_s40.crw",
             "dc120": "kodak_dc120_jpeg.kdc"}


@pytest.fixture(scope="module")
def both_ways(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path, np.ndarray]]:
    """name -> (compressed DNG, uncompressed DNG, the mosaic) of every real raw's unchanged mosaic."""
    folder = tmp_path_factory.mktemp("compression")
    out = {}
    for name, file in REAL_RAWS.items():
        source = shared_data / "raw" / file
        if not source.is_file():
            pytest.skip(f"raw sample not found at {source}")
        with rawpy.imread(str(source)) as raw:
            mosaic = raw.raw_image.copy()
        paths = folder / f"{name}.dng", folder / f"{name}.none.dng"
        for path, compression in zip(paths, ("lossless", "none")):
            write_dng(path, mosaic, source, software=SOFTWARE, record=None, compression=compression)
        out[name] = (*paths, mosaic)
    return out


@pytest.mark.parametrize("name", list(REAL_RAWS))
def test_lossless_dngs_hold_the_mosaic_bit_exact_in_tiles(both_ways: dict, name: str) -> None:
    compressed, plain, mosaic = both_ways[name]
    for path in (compressed, plain):
        with rawpy.imread(str(path)) as raw:
            np.testing.assert_array_equal(raw.raw_image, mosaic)
    tags = tags_of(compressed)
    assert tags[tiff.COMPRESSION].value == (7,) and tags[tiff.TILE_WIDTH].value == (256,)
    assert tiff.STRIP_OFFSETS not in tags and tags_of(plain)[tiff.COMPRESSION].value == (1,)
    assert compressed.stat().st_size < 0.7 * plain.stat().st_size
    theirs = tags_of(plain)
    for ours_, theirs_ in ((tags, theirs), (tags[EXIF_IFD].value[0].tags, theirs[EXIF_IFD].value[0].tags)):
        kept = {c for c in ours_.keys() | theirs_.keys() if c not in LAYOUT and c != EXIF_IFD}
        assert {c: ours_.get(c) for c in kept} == {c: theirs_.get(c) for c in kept}  # only the layout differs


@pytest.mark.parametrize("name", list(REAL_RAWS))
def test_dcraw_decodes_the_same_mosaic_from_both(both_ways: dict, name: str) -> None:
    """``dcraw -D``: the raw values of the visible area, unscaled."""
    dcraw = raw_tool("dcraw")
    decoded = []
    for path in both_ways[name][:2]:
        run = subprocess.run([dcraw, "-D", "-4", "-T", "-c", str(path)], capture_output=True, timeout=120)
        assert run.returncode == 0, run.stderr
        decoded.append(tifffile.imread(io.BytesIO(run.stdout)))
    assert decoded[0].dtype == np.uint16
    np.testing.assert_array_equal(*decoded)


@pytest.mark.parametrize("name", list(REAL_RAWS))
def test_dcraw_emu_decodes_the_same_mosaic_from_both(both_ways: dict, tmp_path: Path, name: str) -> None:
    """LibRaw's own tool, without demosaicing (-disinterp) and in camera colours (-o 0)."""
    dcraw_emu = raw_tool("dcraw_emu")
    decoded = []
    for path in both_ways[name][:2]:
        out = tmp_path / f"{path.stem}.tiff"
        run = subprocess.run([dcraw_emu, "-T", "-4", "-disinterp", "-o", "0", "-Z", str(out), str(path)],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        decoded.append(tifffile.imread(out))
    np.testing.assert_array_equal(*decoded)


@pytest.mark.parametrize("name", list(REAL_RAWS))
def test_rawspeed_decodes_the_same_mosaic_from_both(both_ways: dict, name: str) -> None:
    """darktable's decoder (rawspeed, through darktable-rs-identify): the same sums of the
    decoded mosaic. darktable-cli's developments are compared elsewhere: on the DC120 darktable
    itself varies by a level in a few pixels from run to run, whichever file it reads."""
    identify = raw_tool("darktable-rs-identify")
    reports = []
    for path in both_ways[name][:2]:
        run = subprocess.run([identify, str(path)], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stdout + run.stderr
        reports.append([line for line in run.stdout.splitlines() if line.startswith(("Image ", "dim", "whitePoint"))])
    assert len(reports[0]) >= 5 and reports[0] == reports[1]


@pytest.mark.parametrize("name", ["chart", "kdc"])
def test_rawtherapee_develops_both_alike(both_ways: dict, tmp_path: Path, name: str) -> None:
    rt = raw_tool("rawtherapee-cli")
    developed = []
    for path in both_ways[name][:2]:
        out = tmp_path / f"{path.stem}.tif"
        run = subprocess.run([rt, "-o", str(out), "-t", "-c", str(path)], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0 and out.is_file(), run.stdout + run.stderr
        developed.append(tifffile.imread(out))
    np.testing.assert_array_equal(*developed)


@pytest.mark.parametrize(("height", "width", "active_area"), [(41, 57, (2, 4, 40, 56)), (300, 530, None), (30, 26, None)],
                         ids=["small", "ragged-tiles", "narrow"])
def test_lossless_tiles_of_any_size_read_back(tmp_path: Path, height: int, width: int, active_area: tuple | None) -> None:
    """Edge tiles padded to the tile's size: 256, or the sensor's width rounded down to 16 (26 px
    wide: tiles of 16, the second one 10 px and padding)."""
    source = tmp_path / "source.dng"
    mosaic = bayer_dng(source, "GBRG", height, width, seed=9, active_area=active_area)
    target = tmp_path / "out.dng"
    write_dng(target, mosaic, source, software=SOFTWARE, record=RECORD)
    tags = tags_of(target)
    assert tags[tiff.TILE_WIDTH].value[0] <= width and tags[tiff.TILE_WIDTH].value[0] % 16 == 0
    np.testing.assert_array_equal(raw_facts(target)["raw"], mosaic)
    with tifffile.TiffFile(target) as tif:
        np.testing.assert_array_equal(tif.pages[0].asarray(), mosaic)


def test_an_unknown_compression_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "source.dng"
    mosaic = bayer_dng(source)
    with pytest.raises(ConfigError, match="DNG compression must be one of lossless, none, got 'zip'"):
        write_dng(tmp_path / "out.dng", mosaic, source, software=SOFTWARE, record=None, compression="zip")
    assert not (tmp_path / "out.dng").exists()


# ------------------------------------------------------------------------------- raw tools


@pytest.fixture(scope="module")
def tool_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tools")


def visible(target: Path) -> tuple[int, int]:
    sizes = raw_facts(target)["sizes"]
    return sizes[2], sizes[3]


@pytest.mark.parametrize("name", ["chart_altered", "kdc_altered"])
def test_dcraw_opens_ours(outputs: dict, tool_dir: Path, name: str) -> None:
    dcraw = raw_tool("dcraw")
    target = outputs[name][1]
    info = subprocess.run([dcraw, "-i", "-v", str(target)], capture_output=True, text=True, timeout=60)
    assert info.returncode == 0 and "DNG Version" in info.stdout
    rendered = subprocess.run([dcraw, "-c", "-4", "-T", str(target)], capture_output=True, timeout=120)
    assert rendered.returncode == 0, rendered.stderr
    out = tool_dir / f"{name}.dcraw.tiff"
    out.write_bytes(rendered.stdout)
    assert tifffile.imread(out).shape == (*visible(target), 3)


@pytest.mark.parametrize("name", ["chart_altered", "kdc_altered"])
def test_dcraw_emu_opens_ours(outputs: dict, tool_dir: Path, name: str) -> None:
    dcraw_emu = raw_tool("dcraw_emu")
    source = tool_dir / f"{name}.emu.dng"
    shutil.copyfile(outputs[name][1], source)  # dcraw_emu writes beside its input
    run = subprocess.run([dcraw_emu, "-T", "-4", str(source)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert tifffile.imread(f"{source}.tiff").shape == (*visible(source), 3)


@pytest.mark.parametrize("name", ["chart_altered", "kdc_altered"])
def test_rawtherapee_opens_ours(outputs: dict, tool_dir: Path, name: str) -> None:
    rt = raw_tool("rawtherapee-cli")
    target, out = outputs[name][1], tool_dir / f"{name}.rt.tif"
    run = subprocess.run([rt, "-o", str(out), "-t", "-c", str(target)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and out.is_file(), run.stdout + run.stderr
    height, width = visible(target)
    got = tifffile.imread(out).shape
    assert got[2] == 3 and height - 8 <= got[0] <= height and width - 8 <= got[1] <= width  # RT trims a 4 px border


@pytest.mark.parametrize("name", ["chart_altered", "kdc_altered"])
def test_darktable_opens_ours(outputs: dict, tool_dir: Path, name: str) -> None:
    darktable = raw_tool("darktable-cli")
    target, out = outputs[name][1], tool_dir / f"{name}.dt.tif"
    run = subprocess.run([darktable, str(target), str(out), "--core", "--configdir", str(tool_dir / f"dt-{name}"),
                          "--library", ":memory:"], capture_output=True, text=True, timeout=180)
    assert run.returncode == 0 and out.is_file(), run.stdout + run.stderr  # (a root warning is fine)
    assert tifffile.imread(out).shape == (*visible(target), 3)


def test_no_record_marks_nothing(tmp_path: Path, shared_data: Path) -> None:
    """``record=None`` writes a plain DNG: no n2n record, no NoiseReductionApplied claim."""
    kdc = shared_data / "raw" / "RAW_KODAK_DC50.KDC"
    with rawpy.imread(str(kdc)) as raw:
        mosaic = raw.raw_image.copy()
    target = tmp_path / "plain.dng"
    write_dng(target, mosaic, kdc, software="converter", record=None)
    assert read_processing_record(target) is None
    assert NOISE_REDUCTION_APPLIED not in read_tiff_ifds(target).ifds[0]


# ------------------------------------------- the camera's own values, pixel aspect, white balance


@pytest.fixture(scope="module")
def camera_dngs(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """name -> (source, our DNG of its unchanged mosaic) for the real CRW (CIFF, not TIFF-based)
    and the Kodak DC120 (non-square pixels, no stored white balance)."""
    folder = tmp_path_factory.mktemp("camera")
    out = {}
    for name, file in (("crw", "canon_powershot_s40.crw"), ("dc120", "kodak_dc120_jpeg.kdc")):
        source = shared_data / "raw" / file
        if not source.is_file():
            pytest.skip(f"raw sample not found at {source}")
        with rawpy.imread(str(source)) as raw:
            mosaic = raw.raw_image.copy()
        target = folder / f"{name}.dng"
        write_dng(target, mosaic, source, software=SOFTWARE, record=RECORD)
        out[name] = (source, target)
    return out


def shot_tag(path: Path, code: int) -> Tag | None:
    """A tag from the Exif IFD, else IFD0 (where TIFF-EP raws keep shot tags)."""
    ifd0 = read_tiff_ifds(path).ifds[0]
    exif = ifd0.sub_ifds(EXIF_IFD)
    return (exif[0].get(code) if exif else None) or ifd0.get(code)


def test_non_square_pixels_get_a_default_scale_that_libraw_honours(camera_dngs: dict, outputs: dict) -> None:
    """The DC120's pixels are 1.535 times as wide as tall: without DefaultScale every reader
    developed the DNG at 848x976 instead of 1301x976."""
    source, target = camera_dngs["dc120"]
    scale = tags_of(target)[dng.DEFAULT_SCALE]
    assert scale.type == TagType.RATIONAL and scale.value == ((244, 159), (1, 1))
    with rawpy.imread(str(source)) as raw:
        assert raw.sizes.pixel_aspect == pytest.approx(244 / 159)
        expected = raw.postprocess(half_size=False).shape
    with rawpy.imread(str(target)) as raw:
        assert raw.postprocess().shape == expected == (976, 1301, 3)
    for square in (outputs["kdc"][1], camera_dngs["crw"][1]):
        assert dng.DEFAULT_SCALE not in tags_of(square)


def test_a_source_without_stored_white_balance_gets_libraws_automatic_balance(camera_dngs: dict) -> None:
    """The DC120 stores no multipliers; LibRaw's camera-WB development then balances grey-world
    (not daylight: 1, 1, 1 for this camera, the warm camera-native render RawTherapee showed).
    The DNG states that balance in AsShotNeutral (greens pooled: within 0.5% of LibRaw's)."""
    source, target = camera_dngs["dc120"]
    with rawpy.imread(str(source)) as raw:
        assert raw.camera_whitebalance[0] == 0  # nothing stored
        raw.postprocess(use_auto_wb=True)
        auto = np.array(raw.auto_whitebalance)
    neutral = tags_of(target)[dng.AS_SHOT_NEUTRAL].numbers()
    green = (auto[1] + auto[3]) / 2
    np.testing.assert_allclose(neutral, [green / auto[0], 1, green / auto[2]], rtol=5e-3)
    assert neutral[0] > 1.2  # far from daylight's 1


def test_the_crws_as_shot_neutral_is_its_camera_white_balance(camera_dngs: dict) -> None:
    source, target = camera_dngs["crw"]
    neutral = np.array(tags_of(target)[dng.AS_SHOT_NEUTRAL].numbers())
    assert neutral[1] == 1 and np.all((neutral > 0) & (neutral <= 1.5))
    with rawpy.imread(str(source)) as raw:
        multipliers = np.array(raw.camera_whitebalance[:3])
    np.testing.assert_allclose(neutral, multipliers[1] / multipliers, rtol=1e-6)


@pytest.mark.parametrize("name", ["chart", "kdc"])
def test_the_dng_keeps_the_sources_own_tag_values_exactly(outputs: dict, name: str) -> None:
    """Make, Model, exposure, f-number, ISO and dates as the file stores them (type and rationals),
    not LibRaw's normalised readings."""
    source, target, _ = outputs[name]
    compared = 0
    for code in (tiff.MAKE, tiff.MODEL, dng.EXPOSURE_TIME, dng.F_NUMBER, dng.ISO, dng.DATE_TIME_ORIGINAL):
        theirs = shot_tag(source, code)
        if theirs is not None:
            assert shot_tag(target, code) == theirs, code
            compared += 1
    assert compared >= 4


def test_a_crw_gives_its_ciff_records_not_libraws_normalised_values(camera_dngs: dict) -> None:
    """The CRW has no TIFF tags. LibRaw says "PowerShot S40", f/2.80 (the target aperture) and
    0.2013 s; the file's records say "Canon PowerShot S40", f/2.92 and 2^-(2+1/3) s (exiftool's
    Canon:FNumber 2.9218, Canon:ExposureTime 0.1984, printed 1/5)."""
    _, target = camera_dngs["crw"]
    tags = tags_of(target)
    assert tags[tiff.MAKE].text() == "Canon" and tags[tiff.MODEL].text() == "Canon PowerShot S40"
    assert tags[dng.UNIQUE_CAMERA_MODEL].text() == "Canon PowerShot S40"
    shot = tags[EXIF_IFD].value[0].tags
    assert shot[dng.F_NUMBER].value == ((73, 25),)  # 2.92
    assert shot[dng.EXPOSURE_TIME].value == ((1, 5),)
    assert shot[dng.ISO].value == (50,)
    assert shot[dng.DATE_TIME_ORIGINAL].text() == "2021:03:26 21:14:52"
    assert shot[dng.FOCAL_LENGTH].value == ((227, 32),)  # 7.09375 mm: not in the records read, LibRaw's
    assert tiff.SOFTWARE in tags and tags[tiff.SOFTWARE].text() == SOFTWARE


def test_exiftool_reads_the_crws_own_values_back_from_ours(camera_dngs: dict) -> None:
    tool = raw_tool("exiftool")
    source, target = camera_dngs["crw"]
    run = subprocess.run([tool, "-j", "-n", "-G1", str(source), str(target)],
                         capture_output=True, text=True, check=False, timeout=60)
    theirs, ours = json.loads(run.stdout)
    assert ours["IFD0:Make"] == theirs["CanonRaw:Make"] and ours["IFD0:Model"] == theirs["CanonRaw:Model"]
    assert ours["ExifIFD:DateTimeOriginal"] == theirs["CanonRaw:DateTimeOriginal"]
    assert ours["ExifIFD:FNumber"] == pytest.approx(theirs["Canon:FNumber"], abs=0.005)
    assert ours["ExifIFD:ExposureTime"] == pytest.approx(theirs["Canon:ExposureTime"], rel=0.01)
    assert ours["ExifIFD:ISO"] == theirs["Composite:ISO"]


def test_a_truncated_crw_gives_what_its_records_allow_without_raising(tmp_path: Path, camera_dngs: dict) -> None:
    source, _ = camera_dngs["crw"]
    cut = tmp_path / "cut.crw"
    cut.write_bytes(source.read_bytes()[:100_000])  # the root directory sits at the end
    camera = dng.read_camera_tags(cut)
    assert not camera.ifd0 and not camera.exif and any("CIFF" in note for note in camera.notes)


def test_the_xmp_record_names_no_standard_tag(outputs: dict) -> None:
    """Readers look tags up by name across namespaces: a property named Model showed as the
    camera's model. Every n2n property is named Denoise..."""
    from xml.dom import minidom

    packet = bytes(tags_of(outputs["kdc"][1])[XMP].value).rstrip(b"\0 \t\r\n")
    doc = minidom.parseString(packet)
    names = {(n.namespaceURI, n.localName) for n in doc.getElementsByTagName("*")}
    ours = {local for ns, local in names if ns == dng.N2N_NS}
    assert ours == {"DenoiseVersion", "DenoiseModel", "DenoiseModelSha256", "DenoiseSettings", "DenoiseRecord"}
    assert not {"Model", "Make", "Version", "Record"} & {local for _, local in names}


def test_exiftool_shows_no_model_for_a_source_without_one(tmp_path: Path) -> None:
    tool = raw_tool("exiftool")
    source, target = tmp_path / "unnamed.dng", tmp_path / "out.dng"
    mosaic = unnamed_camera_dng(source)
    write_dng(target, mosaic, source, software=SOFTWARE, record=RECORD)
    run = subprocess.run([tool, "-j", "-Model", "-XMP-n2n:all", str(target)],
                         capture_output=True, text=True, check=False, timeout=60)
    (entry,) = json.loads(run.stdout)
    assert "Model" not in entry and entry["DenoiseModel"] == RECORD["model"]


def old_style_packet(record: dict, *, attribute: bool) -> bytes:
    """The XMP record as n2ncli 0.2.0 and earlier wrote it: n2n:Model, n2n:Record (element form,
    or attribute form as XMP editors may rewrite it)."""
    from xml.sax.saxutils import escape, quoteattr

    text = json.dumps(record, sort_keys=True)
    head = (f'<rdf:Description rdf:about="" xmlns:xmp="{XMP_NS}" xmlns:n2n="{dng.N2N_NS}"'
            f' n2n:Model={quoteattr(record["model"])}')
    body = (f'{head} n2n:Record={quoteattr(text)}/>' if attribute else
            f'{head}><xmp:CreatorTool>n2ncli 0.2.0</xmp:CreatorTool><n2n:Version>0.2.0</n2n:Version>'
            f'<n2n:Record>{escape(text)}</n2n:Record></rdf:Description>')
    return ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
            '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            f'{body}</rdf:RDF></x:xmpmeta><?xpacket end="w"?>').encode()


@pytest.mark.parametrize("attribute", [False, True], ids=["element", "attribute"])
def test_records_written_before_the_rename_still_read(tmp_path: Path, attribute: bool) -> None:
    """So a folder run keeps skipping the DNGs earlier versions wrote, and a rerun on one replaces
    the old properties rather than adding to them."""
    old = tmp_path / "old.dng"
    mosaic = bayer_dng(old, extra_tags=[Tag.byte(XMP, old_style_packet(RECORD, attribute=attribute))])
    assert read_processing_record(old) == RECORD
    again = tmp_path / "again.dng"
    write_dng(again, mosaic, old, software=SOFTWARE, record={"model": "second"})
    assert read_processing_record(again) == {"model": "second"}
    packet = bytes(tags_of(again)[XMP].value)
    assert b"n2n:Model" not in packet and b"n2n:Record" not in packet and b"raw-test" not in packet


@pytest.mark.parametrize("name", ["crw", "dc120"])
def test_exiftool_validates_the_new_tags(camera_dngs: dict, name: str) -> None:
    tool = raw_tool("exiftool")
    run = subprocess.run([tool, "-j", "-validate", "-DefaultScale", "-AsShotNeutral", str(camera_dngs[name][1])],
                         capture_output=True, text=True, check=False, timeout=60)
    (entry,) = json.loads(run.stdout)
    assert entry["Validate"] == "OK" and "AsShotNeutral" in entry
    assert ("DefaultScale" in entry) == (name == "dc120")


def test_darktable_develops_non_square_pixels_at_their_aspect(camera_dngs: dict, tool_dir: Path) -> None:
    """darktable honours DefaultScale (RawTherapee 5.9 does not: it develops 840x968 either way)."""
    darktable = raw_tool("darktable-cli")
    target, out = camera_dngs["dc120"][1], tool_dir / "dc120.dt.tif"
    run = subprocess.run([darktable, str(target), str(out), "--core", "--configdir", str(tool_dir / "dt-dc120"),
                          "--library", ":memory:"], capture_output=True, text=True, timeout=180)
    assert run.returncode == 0 and out.is_file(), run.stdout + run.stderr
    height, width = tifffile.imread(out).shape[:2]
    assert width / height == pytest.approx(1301 / 976, rel=0.01)
