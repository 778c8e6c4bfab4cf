"""Model store: save/find/list/remove, hash-verified weights_only loads, defaults, shadowing."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
import torch

from n2ncli import store
from n2ncli.errors import ChecksumMismatchError, ConfigError, IncompatibleModelError, ModelNotFoundError
from n2ncli.nets.unet import UNet
from n2ncli.store import (
    META_FILE,
    SHIPPED_DIR,
    WEIGHTS_FILE,
    build_model,
    default_model,
    find_model,
    list_models,
    load_state,
    models_dir,
    read_record,
    remove_model,
    save_model,
    sha256_file,
    write_record,
)

SHIPPED = "srgb-gaussian5-50"
TRAINING = {"steps": 10, "noise": "gaussian25", "lr": 3e-4}


def _small_net(channels: int = 3, seed: int = 0) -> UNet:
    """A narrow U-Net (8 features): the store code path of the real one at a fraction of the size."""
    torch.manual_seed(seed)
    return UNet(channels, features=8)


def _save(name: str, kind: str = "srgb", channels: int = 3, seed: int = 0, **kw) -> store.ModelRecord:
    return save_model(name, _small_net(channels, seed), kind=kind, noise="gaussian25", training=TRAINING, **kw)


def _rewrite_json(folder: Path, **changes) -> None:
    meta = folder / META_FILE
    data = json.loads(meta.read_text())
    data.update(changes)
    meta.write_text(json.dumps(data))


def test_user_store_lives_under_n2n_home(n2n_home: Path) -> None:
    record = _save("mine")
    assert models_dir() == n2n_home / "models"
    assert record.folder == n2n_home / "models" / "mine"
    assert sorted(p.name for p in record.folder.iterdir()) == [META_FILE, WEIGHTS_FILE]  # no temp files left


def test_saved_record_describes_the_model() -> None:
    record = _save("mine")
    assert record.sha256 == sha256_file(record.weights_path)
    data = json.loads((record.folder / META_FILE).read_text())
    assert data["name"] == "mine" and data["kind"] == "srgb" and data["noise"] == "gaussian25"
    assert (data["in_channels"], data["out_channels"], data["features"]) == (3, 3, 8)
    assert data["sha256"] == record.sha256
    assert data["training"] == TRAINING
    assert data["created"]


@pytest.mark.parametrize("how", ["name", "folder", "json", "weights"])
def test_find_model_by_name_and_by_path(how: str) -> None:
    saved = _save("mine")
    spec = {"name": "mine", "folder": str(saved.folder), "json": str(saved.folder / META_FILE),
            "weights": str(saved.weights_path)}[how]
    found = find_model(spec)
    assert found.name == "mine"
    assert found.folder == saved.folder
    assert found.sha256 == saved.sha256
    assert not found.shipped


def test_build_model_restores_the_saved_weights() -> None:
    net = _small_net(seed=3)
    record = save_model("mine", net, kind="srgb", noise="gaussian25", training=TRAINING)
    built = build_model(find_model("mine"))
    assert not built.training
    assert built.features == 8
    saved, loaded = net.state_dict(), built.state_dict()
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    assert record.in_channels == built.in_channels == 3


def test_fp16_weights_load_as_float32() -> None:
    record = _save("half", dtype=torch.float16)
    assert json.loads((record.folder / META_FILE).read_text())["weights_dtype"] == "float16"
    state = load_state(record)
    assert all(v.dtype == torch.float32 for v in state.values())


def test_a_flipped_byte_in_the_weights_is_a_checksum_mismatch() -> None:
    record = _save("mine")
    data = bytearray(record.weights_path.read_bytes())
    data[len(data) // 2] ^= 0x01
    record.weights_path.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match="mine"):
        build_model(find_model("mine"))


def test_missing_weights_file_is_reported() -> None:
    record = _save("mine")
    record.weights_path.unlink()
    with pytest.raises(ModelNotFoundError, match="missing"):
        build_model(find_model("mine"))


class _Opener:
    """Unpickling this would create a file: a stand-in for arbitrary code in a weights file."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_weights_are_loaded_weights_only_even_with_a_matching_hash(tmp_path: Path) -> None:
    record = _save("mine")
    marker = tmp_path / "pwned"
    torch.save({"enc_conv0.weight": torch.zeros(1), "payload": _Opener(str(marker))}, record.weights_path)
    _rewrite_json(record.folder, sha256=sha256_file(record.weights_path))
    with pytest.raises(ChecksumMismatchError, match="cannot read weights"):
        build_model(find_model("mine"))
    assert not marker.exists()


def test_weights_that_do_not_fit_the_description_are_incompatible() -> None:
    record = _save("mine")
    _rewrite_json(record.folder, in_channels=4, out_channels=4)
    with pytest.raises(IncompatibleModelError, match="do not fit"):
        build_model(find_model("mine"))


def test_unknown_architecture_is_refused_on_read() -> None:
    record = _save("mine")
    _rewrite_json(record.folder, arch="transformer")
    with pytest.raises(ModelNotFoundError, match="'arch'.*unknown architecture.*'transformer'"):
        find_model(str(record.folder))


# model.json values reach paths (weights file, ONNX cache entry) and allocations: each is checked on read
@pytest.mark.parametrize(("field", "value"), [
    ("weights", "../../../../etc/hostname"),
    ("weights", "/etc/hostname"),
    ("weights", ".."),
    ("weights", "."),
    ("weights", "sub/weights.pt"),
    ("weights", "sub\\weights.pt"),
    ("weights", "C:weights.pt"),
    ("weights", ""),
    ("weights", 7),
    ("sha256", "../../../../tmp/x"),
    ("sha256", "B4F64AC69B9FD173F18666BD6E18F284366DAF40514C29EFC6E530A091351320"),
    ("sha256", "b4f64ac69b9fd173f18666bd6e18f284366daf40514c29efc6e530a09135132"),
    ("sha256", None),
    ("kind", "jpeg"),
    ("in_channels", 2),
    ("in_channels", 0),
    ("in_channels", "3"),
    ("in_channels", True),
    ("out_channels", 3.0),
    ("out_channels", -4),
    ("features", 0),
    ("features", 10**9),
    ("features", "48"),
    ("name", "../../evil"),
    ("training", "steps=10"),
    ("metrics", [1, 2]),
    ("format", 2),
])
def test_a_bad_model_json_field_is_refused_naming_field_and_file(field: str, value: object) -> None:
    record = _save("mine")
    _rewrite_json(record.folder, **{field: value})
    meta = record.folder / META_FILE
    with pytest.raises(ModelNotFoundError) as info:
        read_record(record.folder)
    assert f"'{field}'" in str(info.value) and str(meta) in str(info.value)
    with pytest.raises(ModelNotFoundError, match=f"'{field}'"):
        find_model(str(record.folder))
    assert "mine" not in [r.name for r in list_models()]


def test_a_missing_required_field_is_named() -> None:
    record = _save("mine")
    data = json.loads((record.folder / META_FILE).read_text())
    del data["sha256"]
    (record.folder / META_FILE).write_text(json.dumps(data))
    with pytest.raises(ModelNotFoundError, match="missing field 'sha256'"):
        read_record(record.folder)


def test_a_json_that_is_not_an_object_is_refused() -> None:
    record = _save("mine")
    (record.folder / META_FILE).write_text("[1, 2, 3]")
    with pytest.raises(ModelNotFoundError, match="JSON object"):
        read_record(record.folder)


def test_records_built_in_code_are_checked_too() -> None:
    record = _save("mine")
    with pytest.raises(ConfigError, match="weights"):
        dataclasses.replace(record, weights="../../../../etc/hostname")
    with pytest.raises(ConfigError, match="sha256"):
        dataclasses.replace(record, sha256="../x")


@pytest.mark.parametrize("name", sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / META_FILE).is_file()))
def test_every_shipped_model_passes_the_checks_and_loads(name: str) -> None:
    record = read_record(SHIPPED_DIR / name, shipped=True)
    assert record.weights_path.parent == SHIPPED_DIR / name
    assert build_model(record).in_channels == record.in_channels


# ----------------------------------------------------------------------------- default names


@pytest.mark.parametrize(("text", "expected"), [("Photos-été", "photos-ete"), ("shots", "shots"),
                                                ("Été 2024", "ete-2024"), ("Holiday  Photos", "holiday-photos"), (".shots", None), ("_raw", None),
                                                ("北京", None), ("", None), ("x" * 100, None)])
def test_slugify_gives_a_valid_stable_name(text: str, expected: str | None) -> None:
    slug = store.slugify(text)
    assert store.check_name(slug) == slug and slug.isascii() and slug == slug.lower()
    assert store.slugify(text) == slug  # stable
    if expected is not None:
        assert slug == expected
    else:  # lossy: the readable part (if any) and a 6-hex hash of the original text
        head, _, tag = slug.rpartition("-")
        assert len(tag) == 6 and int(tag, 16) >= 0
        assert head == text.lower().strip("._").replace("é", "e").replace(" ", "-")[: len(head)]


def test_slugify_keeps_different_folders_apart() -> None:
    import unicodedata

    names = ["北京", "東京", ".shots", "shots", "_shots", "Photos-été", "Photos_été", "a" * 70, "a" * 71]
    slugs = [store.slugify(n) for n in names]
    assert len(set(slugs)) == len(slugs), slugs
    # one folder, two Unicode spellings (macOS hands out decomposed names): one name
    assert store.slugify(unicodedata.normalize("NFD", "Été 2024")) == store.slugify("Été 2024")
    assert len(store.slugify("x" * 100, max_len=48)) == 48


def test_list_models_shows_user_models_first_then_shipped() -> None:
    _save("zz-user")
    _save("aa-user")
    records = list_models()
    names = [r.name for r in records]
    assert names[:2] == ["aa-user", "zz-user"]
    assert SHIPPED in names
    shipped = next(r for r in records if r.name == SHIPPED)
    assert shipped.shipped and shipped.folder == SHIPPED_DIR / SHIPPED
    assert not any(r.shipped for r in records[:2])


def test_only_shipped_models_in_a_fresh_store() -> None:
    records = list_models()
    assert records and all(r.shipped for r in records)
    assert SHIPPED in [r.name for r in records]


def test_a_user_model_shadows_the_shipped_one_of_the_same_name(n2n_home: Path) -> None:
    _save(SHIPPED)
    found = find_model(SHIPPED)
    assert not found.shipped
    assert found.folder == n2n_home / "models" / SHIPPED
    assert [r.name for r in list_models()].count(SHIPPED) == 1
    assert (SHIPPED_DIR / SHIPPED / META_FILE).is_file()  # the shipped copy is untouched


def test_shipped_default_model_verifies_and_runs(one_thread: None) -> None:
    record = default_model("srgb")
    assert record.name == SHIPPED and record.shipped and record.kind == "srgb"
    net = build_model(record)
    with torch.no_grad():
        out = net(torch.rand(1, 3, 8, 10))
    assert out.shape == (1, 3, 8, 10) and torch.isfinite(out).all()


def test_remove_a_user_model() -> None:
    record = _save("mine")
    assert remove_model("mine") == record.folder
    assert not record.folder.exists()
    with pytest.raises(ModelNotFoundError, match="mine"):
        find_model("mine")


def test_shipped_models_cannot_be_removed() -> None:
    with pytest.raises(ModelNotFoundError, match="ships with n2ncli"):
        remove_model(SHIPPED)
    assert (SHIPPED_DIR / SHIPPED / WEIGHTS_FILE).is_file()


def test_removing_an_unknown_model_is_an_error() -> None:
    with pytest.raises(ModelNotFoundError, match="no such model"):
        remove_model("nothing-here")


def test_remove_model_refuses_paths_outside_the_store(tmp_path: Path) -> None:
    victim = tmp_path / "elsewhere" / "victim"
    victim.mkdir(parents=True)
    (victim / META_FILE).write_text("{}")
    try:
        with pytest.raises((ConfigError, ModelNotFoundError)):
            remove_model(str(victim))
    finally:
        assert victim.is_dir(), "remove_model deleted a folder outside the store"


@pytest.mark.parametrize("bad", [
    "", "../evil", "a/b", ".hidden", "-dash", "x" * 65, "with space", "caf\u00e9",
    "name\n",
])
def test_bad_names_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError, match="bad model name"):
        _save(bad)
    assert not models_dir().exists() or not any(models_dir().iterdir())


def test_longest_allowed_name() -> None:
    assert _save("a" * 64).name == "a" * 64


def test_unknown_kind_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="kind"):
        _save("mine", kind="jpeg")


def test_save_refuses_to_overwrite_unless_asked() -> None:
    first = _save("mine", seed=1)
    with pytest.raises(ConfigError, match="exists already"):
        _save("mine", seed=2)
    assert sha256_file(first.weights_path) == first.sha256  # untouched
    second = _save("mine", seed=2, overwrite=True)
    assert second.sha256 != first.sha256
    assert find_model("mine").sha256 == second.sha256
    build_model(find_model("mine"))


def test_default_raw_model_without_a_fit_is_the_shipped_one() -> None:
    _save("srgb-only")
    chosen = default_model("raw")
    assert chosen.name == "raw-camera" and chosen.shipped and chosen.kind == "raw"


def test_default_raw_model_is_the_newest_user_raw_model() -> None:
    old = _save("b-old-raw", kind="raw", channels=4)
    new = _save("a-new-raw", kind="raw", channels=4, seed=1)
    _save("z-srgb")
    write_record(dataclasses.replace(old, created="2024-01-01T10:00:00+00:00"))
    write_record(dataclasses.replace(new, created="2024-06-01T10:00:00+00:00"))
    chosen = default_model("raw")
    assert chosen.name == "a-new-raw" and chosen.kind == "raw"
    write_record(dataclasses.replace(old, created="2025-01-01T10:00:00+00:00"))
    assert default_model("raw").name == "b-old-raw"


def test_unknown_model_name_lists_the_available_ones() -> None:
    with pytest.raises(ModelNotFoundError, match=SHIPPED):
        find_model("no-such-model")


def test_a_folder_without_model_json_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="not a model folder"):
        find_model(str(tmp_path))


def test_malformed_model_json_is_reported_and_skipped_in_listings() -> None:
    record = _save("broken")
    (record.folder / META_FILE).write_text("{not json")
    with pytest.raises(ModelNotFoundError, match="malformed"):
        read_record(record.folder)
    assert "broken" not in [r.name for r in list_models()]


def test_record_json_round_trip_keeps_extra_keys() -> None:
    record = _save("mine")
    again = read_record(record.folder)
    assert again.extra.get("n2ncli_version")
    assert again.to_json() == json.loads((record.folder / META_FILE).read_text())
    assert hashlib.sha256(record.weights_path.read_bytes()).hexdigest() == again.sha256


def test_a_store_name_wins_over_a_same_named_folder_of_photos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              shared_data: Path, one_thread: None) -> None:
    """`n2n fit shots/` names its model `shots`; `-m shots` run beside that folder means the model."""
    from n2ncli.fit import FitRequest, fit

    fit(FitRequest(inputs=(shared_data / "raw" / "RAW_KODAK_DC50.KDC",), name="shots", steps=1, crop=32))
    (tmp_path / "shots").mkdir()
    monkeypatch.chdir(tmp_path)
    assert find_model("shots").kind == "raw"
    (tmp_path / "holiday").mkdir()  # a folder that is neither a model nor a model's name
    with pytest.raises(ModelNotFoundError, match="no model.json"):
        find_model("holiday")
