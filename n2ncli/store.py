"""Model store: shipped models in the package, the user's own in the user data dir.

A model is a folder ``<name>/`` holding ``weights.pt`` (a state dict, loaded with
``weights_only=True``) and ``model.json`` (what it is, how it was trained, the sha256 of the
weights). Every load verifies the hash. ``N2N_HOME`` moves the user store (tests use a temp dir).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import re
import shutil
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from n2ncli import __version__
from n2ncli.errors import ChecksumMismatchError, ConfigError, IncompatibleModelError, ModelNotFoundError
from n2ncli.fsutil import atomic_write_bytes, atomic_write_text

if TYPE_CHECKING:  # torch is imported where weights are read or written: the ONNX path runs without it
    import torch

    from n2ncli.nets.unet import UNet

ARCH = "n2n-unet"
FORMAT = 1
WEIGHTS_FILE = "weights.pt"
META_FILE = "model.json"
SHIPPED_DIR = Path(__file__).resolve().parent / "models"
#: The shipped model each input kind falls back to when the user names none.
DEFAULT_MODELS = {"srgb": "srgb-gaussian5-50"}
#: The shipped raw model: the raw default until the user fits one, and where raw fits start. Alone
#: it smooths fine detail at low ISO; denoise's noise guard holds that back (docs/models.md).
RAW_DEFAULT = "raw-camera"
#: The shipped model for photos whose noise is correlated between pixels (camera JPEGs), used by
#: default for them instead of the blind one (docs/real-noise.md).
CORRELATED_DEFAULT = "srgb-camera"
#: The shipped 1-channel model for greyscale photos (and the luma of JPEGs whose luma noise is
#: independent): the RGB models leave most of the noise that is equal in every channel.
GREY_DEFAULT = "grey-gaussian5-50"
KINDS = ("srgb", "raw")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: Channel counts the models take: grey and RGB photos (sRGB), packed RGGB mosaics (raw).
CHANNELS = (1, 3, 4)
#: Widest U-Net a model.json may describe (the shipped ones have 48): a huge value would only
#: exhaust memory when the network is built.
MAX_FEATURES = 512
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: A bare file name: no separator, no drive, not ``.``/``..``, so it always names a file inside
#: the model folder.
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def n2n_home() -> Path:
    """Root of the user's data: ``$N2N_HOME`` or the platform's user data dir."""
    env = os.environ.get("N2N_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("n2ncli", appauthor=False))


def models_dir() -> Path:
    return n2n_home() / "models"


def runs_dir() -> Path:
    """Checkpoints of training runs, one folder per model name (resume reads them)."""
    return n2n_home() / "runs"


def check_name(name: str) -> str:
    """Model names become folder names: letters, digits, ``.``, ``_``, ``-``."""
    if not _NAME.fullmatch(name):
        raise ConfigError(f"bad model name {name!r}: use letters, digits, '.', '_' or '-' (max 64)")
    return name


def slugify(text: str, max_len: int = 64) -> str:
    """A model name made from ``text`` (a folder name the user did not type as a name).

    Lower-case ASCII, accents dropped (``Photos-été`` -> ``photos-ete``), spaces -> ``-``
    (``Holiday Photos`` -> ``holiday-photos``), other runs of characters -> ``-``; always passes
    check_name. When that loses more than case, accents and spaces (``.shots``, ``北京``, a cut
    at ``max_len``), a 6-hex hash of the text is appended, so
    different folders keep different names; the same text always gives the same name.
    """
    if not 8 <= max_len <= 64:
        raise ConfigError(f"slug length must be 8 to 64, got {max_len}")
    text = unicodedata.normalize("NFC", text)  # macOS hands out decomposed names: hash one form
    plain = "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch)).lower()
    slug = re.sub(r"[^a-z0-9._-]+", "-", plain.encode("ascii", "ignore").decode("ascii"))
    slug = re.sub(r"-{2,}", "-", slug).strip("._-")
    if slug and slug == re.sub(r" +", "-", plain) and len(slug) <= max_len:
        return slug
    tag = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:6]
    head = slug[: max_len - len(tag) - 1].rstrip("._-")
    return f"{head}-{tag}" if head else tag


@dataclass(frozen=True)
class ModelRecord:
    """What ``model.json`` says, plus where the model lives."""

    name: str
    folder: Path
    kind: str
    in_channels: int
    out_channels: int
    sha256: str
    noise: str = "unknown"
    features: int = 48
    arch: str = ARCH
    weights: str = WEIGHTS_FILE
    created: str = ""
    shipped: bool = False
    training: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # read_record checks every field with the file's name in the message; this guards the
        # two that become paths (weights file, ONNX cache entry) in records built any other way.
        if not (isinstance(self.sha256, str) and _SHA256.fullmatch(self.sha256)):
            raise ConfigError(f"model {self.name!r}: sha256 must be 64 lowercase hex digits, got {self.sha256!r}")
        if not (isinstance(self.weights, str) and _FILE_NAME.fullmatch(self.weights)):
            raise ConfigError(f"model {self.name!r}: weights must be a plain file name, got {self.weights!r}")

    @property
    def weights_path(self) -> Path:
        return self.folder / self.weights

    def to_json(self) -> dict[str, Any]:
        data = {
            "format": FORMAT, "name": self.name, "arch": self.arch, "features": self.features,
            "in_channels": self.in_channels, "out_channels": self.out_channels, "kind": self.kind,
            "noise": self.noise, "weights": self.weights, "sha256": self.sha256,
            "created": self.created, "training": dict(self.training), "metrics": dict(self.metrics),
        }
        data.update(self.extra)
        return data


_KNOWN_KEYS = {"format", "name", "arch", "features", "in_channels", "out_channels", "kind", "noise",
               "weights", "sha256", "created", "training", "metrics"}


def _checked_fields(data: Any) -> dict[str, Any]:
    """The fields of a parsed model.json, each checked (its values reach paths and allocations).

    Raises ValueError naming the first bad field; read_record adds the file.
    """
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, found {type(data).__name__}")

    def field_of(key: str, default: Any = None, required: bool = False) -> Any:
        if key not in data:
            if required:
                raise ValueError(f"missing field {key!r}")
            return default
        return data[key]

    def bad(key: str, why: str) -> ValueError:
        return ValueError(f"field {key!r} {why}, got {data.get(key)!r}")

    def integer(key: str, default: int | None, allowed: Any) -> int:
        value = field_of(key, default, required=default is None)
        if isinstance(value, bool) or not isinstance(value, int) or value not in allowed:
            raise bad(key, f"must be one of {allowed}" if isinstance(allowed, tuple)
                      else f"must be an integer from {allowed.start} to {allowed.stop - 1}")
        return value

    def text(key: str, default: str | None = None) -> str:
        value = field_of(key, default, required=default is None)
        if not isinstance(value, str):
            raise bad(key, "must be a string")
        return value

    name = text("name")
    if not _NAME.fullmatch(name):
        raise bad("name", "must be letters, digits, '.', '_' or '-' (max 64, starting with a letter or digit)")
    if field_of("format", FORMAT) != FORMAT:
        raise bad("format", f"must be {FORMAT} (written by another n2ncli version?)")
    kind = text("kind")
    if kind not in KINDS:
        raise bad("kind", f"must be one of {KINDS}")
    arch = text("arch", ARCH)
    if arch != ARCH:
        raise bad("arch", f"names an unknown architecture (this n2ncli knows {ARCH!r})")
    sha = text("sha256")
    if not _SHA256.fullmatch(sha):
        raise bad("sha256", "must be 64 lowercase hex digits")
    weights = text("weights", WEIGHTS_FILE)
    if not _FILE_NAME.fullmatch(weights):
        raise bad("weights", "must be a plain file name inside the model folder (no path)")
    mappings = {}
    for key in ("training", "metrics"):
        mappings[key] = field_of(key, {})
        if not isinstance(mappings[key], dict):
            raise bad(key, "must be a JSON object")
    return dict(
        name=name, kind=kind, arch=arch, sha256=sha, weights=weights,
        in_channels=integer("in_channels", None, CHANNELS), out_channels=integer("out_channels", None, CHANNELS),
        features=integer("features", 48, range(1, MAX_FEATURES + 1)),
        noise=str(field_of("noise", "unknown")), created=str(field_of("created", "")), **mappings,
        extra={k: v for k, v in data.items() if k not in _KNOWN_KEYS},
    )


def read_record(folder: Path, shipped: bool = False) -> ModelRecord:
    """Parse and check ``folder/model.json``; a missing, malformed or unsafe file is a ModelNotFoundError.

    Every field is checked here, once, because the rest of the code trusts the record: its
    ``weights`` and ``sha256`` become paths (the weights file, the ONNX cache entry).
    """
    folder = Path(folder)
    meta = folder / META_FILE
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelNotFoundError(f"{folder}: no {META_FILE} (not a model folder)") from exc
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"{meta}: malformed model description ({exc})") from exc
    try:
        fields = _checked_fields(data)
    except ValueError as exc:
        raise ModelNotFoundError(f"{meta}: bad model description: {exc}") from None
    return ModelRecord(folder=folder, shipped=shipped, **fields)


def _records_in(root: Path, shipped: bool) -> list[ModelRecord]:
    if not root.is_dir():
        return []
    out = []
    for folder in sorted(p for p in root.iterdir() if (p / META_FILE).is_file()):
        try:
            out.append(read_record(folder, shipped))
        except ModelNotFoundError:
            continue
    return out


def list_models() -> list[ModelRecord]:
    """User models first (they shadow shipped ones of the same name), then shipped ones."""
    user = _records_in(models_dir(), shipped=False)
    names = {r.name for r in user}
    return user + [r for r in _records_in(SHIPPED_DIR, shipped=True) if r.name not in names]


def find_model(spec: str) -> ModelRecord:
    """A model by store name, or by path to a model folder / its ``model.json`` / its weights.

    A name in the store wins over a same-named folder that is not a model (``n2n fit shots/``
    names its model ``shots``, and the folder of photos is still there).
    """
    path = Path(spec).expanduser()
    folder = path if path.is_dir() else path.parent
    if path.exists() and (folder / META_FILE).is_file():
        return read_record(folder)
    for record in list_models():
        if record.name == spec:
            return record
    if path.exists():
        return read_record(folder)  # says what is wrong with it as a model folder
    known = ", ".join(r.name for r in list_models()) or "none"
    raise ModelNotFoundError(f"unknown model {spec!r} (available: {known})")


def default_model(kind: str) -> ModelRecord:
    """The model used when the user names none.

    sRGB: the shipped blind default. Raw: the newest raw model the user fitted that passed its
    self-check, else the shipped raw-camera (which ``denoise`` runs with the noise guard, so its
    smoothing at low ISO is held back; docs/models.md).
    """
    if kind == "raw":
        fitted = [r for r in _records_in(models_dir(), False) if r.kind == "raw" and passed_self_check(r)]
        if fitted:
            # created has 1-second resolution: the weights' mtime breaks ties between quick fits
            return max(fitted, key=lambda r: (r.created, r.weights_path.stat().st_mtime_ns))
        try:
            return find_model(RAW_DEFAULT)
        except ModelNotFoundError:
            raise ModelNotFoundError("no raw model available - run `n2n fit` on a folder of raw files first") from None
    try:
        return find_model(DEFAULT_MODELS[kind])
    except ModelNotFoundError:
        raise ModelNotFoundError(f"no {kind} model available") from None


def correlated_default() -> ModelRecord | None:
    """The shipped real-photo model, or None where it is missing."""
    try:
        return find_model(CORRELATED_DEFAULT)
    except ModelNotFoundError:
        return None


def grey_default() -> ModelRecord | None:
    """The shipped grey model, or None where it is missing (grey photos then run through the RGB one)."""
    try:
        return find_model(GREY_DEFAULT)
    except ModelNotFoundError:
        return None


def passed_self_check(record: ModelRecord) -> bool:
    """False for a fit whose held-out loss rose (model.json ``self_check``): never made the default."""
    check = record.extra.get("self_check")
    return not (isinstance(check, dict) and check.get("passed") is False)


def trained_stride(record: ModelRecord) -> int:
    """The pixel-shuffle stride ``--pd auto`` uses with this model on correlated noise: the
    stride its training inputs had (model.json ``pd``), or 2 for models trained on independent
    noise (on the real pairs PD2 beat PD3 with the blind model; docs/real-noise.md)."""
    value = record.extra.get("pd", 1)
    stride = int(value) if isinstance(value, int) and value in (1, 2, 3) else 1
    return stride if stride > 1 else 2


def trained_blend(record: ModelRecord) -> float:
    """How much of the plain (stride 1) output ``--pd auto`` mixes into this model's PD output
    (model.json ``pd_blend``, 0 when absent): PD denoises a subsampled view and loses some fine
    detail, the plain pass keeps it but also more correlated noise; for srgb-camera the average
    of the two scored best on the real pairs (docs/real-noise.md)."""
    value = record.extra.get("pd_blend", 0.0)
    return float(value) if isinstance(value, (int, float)) and 0.0 <= value <= 1.0 else 0.0


def trained_second_pass(record: ModelRecord) -> float:
    """The largest share of a second pass ``--pd auto`` mixes in for this model on images whose
    chroma noise alone is correlated (model.json ``chroma_second_pass``, 0 when absent; measured
    for srgb-camera on 4:2:0 JPEGs, ``n2ncli.pd.SecondPass``). Not inherited by fits."""
    value = record.extra.get("chroma_second_pass", 0.0)
    return float(value) if isinstance(value, (int, float)) and 0.0 <= value <= 1.0 else 0.0


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_state(record: ModelRecord) -> dict[str, torch.Tensor]:
    """The verified float32 state dict of ``record`` (on CPU)."""
    import torch

    path = record.weights_path
    if not path.is_file():
        raise ModelNotFoundError(f"{record.name}: weights file {path} is missing")
    digest = sha256_file(path)
    if digest != record.sha256:
        raise ChecksumMismatchError(
            f"{record.name}: {path.name} is corrupt (sha256 {digest[:12]}..., expected {record.sha256[:12]}...)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a bad pickle
        raise ChecksumMismatchError(f"{record.name}: cannot read weights ({exc.__class__.__name__})") from exc
    return {k: v.float() for k, v in state.items()}


def build_model(record: ModelRecord) -> UNet:
    """The network described by ``record`` with its verified weights, in eval mode, on CPU."""
    from n2ncli.nets.unet import UNet

    if record.arch != ARCH:
        raise IncompatibleModelError(f"{record.name}: unknown architecture {record.arch!r}")
    net = UNet(record.in_channels, record.out_channels, features=record.features)
    try:
        net.load_state_dict(load_state(record))
    except RuntimeError as exc:
        raise IncompatibleModelError(f"{record.name}: weights do not fit the described network") from exc
    return net.eval()


def weights_bytes(model: torch.nn.Module, dtype: torch.dtype | None = None) -> bytes:
    """Serialised state dict (float32, or ``dtype`` such as fp16 to ship small files)."""
    import torch

    dtype = torch.float32 if dtype is None else dtype
    buf = io.BytesIO()
    torch.save({k: v.detach().to("cpu", dtype) for k, v in model.state_dict().items()}, buf)
    return buf.getvalue()


def save_model(name: str, model: UNet, *, kind: str, noise: str, training: Mapping[str, Any],
               metrics: Mapping[str, Any] | None = None, root: Path | None = None,
               overwrite: bool = False, dtype: torch.dtype | None = None,
               extra: Mapping[str, Any] | None = None) -> ModelRecord:
    """Write ``model`` into the store as ``name`` (weights first, then the json that names their
    hash); float32 weights unless ``dtype``."""
    check_name(name)
    if kind not in KINDS:
        raise ConfigError(f"unknown model kind {kind!r}")
    folder = (root or models_dir()) / name
    if (folder / META_FILE).exists() and not overwrite:
        raise ConfigError(f"a model named {name!r} exists already ({folder}); pick another --name or remove it")
    data = weights_bytes(model, dtype)
    atomic_write_bytes(folder / WEIGHTS_FILE, data)
    record = ModelRecord(
        name=name, folder=folder, kind=kind, in_channels=model.in_channels, out_channels=model.out_channels,
        sha256=hashlib.sha256(data).hexdigest(), noise=noise, features=model.features,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        training=dict(training), metrics=dict(metrics or {}),
        extra={"n2ncli_version": __version__, "weights_dtype": str(dtype or "float32").replace("torch.", ""),
               **(extra or {})},
    )
    write_record(record)
    return record


def write_record(record: ModelRecord) -> None:
    atomic_write_text(record.folder / META_FILE, json.dumps(record.to_json(), indent=2) + "\n")


def remove_model(name: str) -> Path:
    """Delete a user model; shipped models cannot be removed."""
    check_name(name)  # a path here could delete any folder that holds a model.json
    folder = models_dir() / name
    if not (folder / META_FILE).is_file():
        shipped = any(r.name == name for r in _records_in(SHIPPED_DIR, True))
        why = "it ships with n2ncli and cannot be removed" if shipped else "no such model in the store"
        raise ModelNotFoundError(f"cannot remove {name!r}: {why}")
    shutil.rmtree(folder)
    shutil.rmtree(runs_dir() / name, ignore_errors=True)  # its training checkpoint, if any
    return folder
