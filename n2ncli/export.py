"""Export store models to ONNX, and keep one exported copy per model in the user cache.

The graph takes ``input`` Nx C xHxW float32 in [0,1] (NCHW, as ONNX tools expect) and gives
``output`` of the same shape; batch, height and width are dynamic. The U-Net's own padding to a
multiple of 32 is traced into the graph (ONNX ``Pad``, reflect mode, pad amounts computed from
the input's shape), so the file works standalone at any size whose padding is smaller than the
side (any side >= 17 px suffices). The ONNX Runtime backend pads in numpy to a multiple of 32
before calling it, which makes the in-graph pad a no-op and also handles smaller inputs exactly
as PyTorch does (replication).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from n2ncli import __version__
from n2ncli.errors import ConfigError, N2nError
from n2ncli.fsutil import atomic_path, atomic_write_text
from n2ncli.store import ModelRecord, build_model, sha256_file

if TYPE_CHECKING:  # torch is imported to export only: a cached, verified file runs without it
    import torch
    from torch import nn

    from n2ncli.nets.unet import UNet

INPUT_NAME = "input"
OUTPUT_NAME = "output"
DEFAULT_OPSET = 17
#: Traced with a size that is not a multiple of 32 (and large enough to reflect), so the
#: reflect-padding branch of ``pad_to_multiple`` is recorded with shape-derived pad amounts.
_TRACE_SHAPE = (75, 101)


def _fp16(net: nn.Module) -> nn.Module:
    """float32 in and out, float16 inside: callers keep one input dtype whatever the file."""
    from torch import nn

    class Fp16(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.net = inner.half()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x.half()).float()

    return Fp16(net)


def _resolve(record_or_model: ModelRecord | UNet) -> tuple[UNet, dict[str, str]]:
    from n2ncli.nets.unet import UNet

    if isinstance(record_or_model, ModelRecord):
        rec = record_or_model
        meta = {"n2ncli_model": rec.name, "n2ncli_sha256": rec.sha256, "n2ncli_kind": rec.kind,
                "n2ncli_noise": rec.noise}
        return build_model(rec), meta
    if isinstance(record_or_model, UNet):
        return record_or_model, {}
    raise ConfigError(f"cannot export a {type(record_or_model).__name__}: give a model record or a UNet")


def export_onnx(record_or_model: ModelRecord | UNet, path: str | os.PathLike[str], opset: int = DEFAULT_OPSET,
                fp16: bool = False) -> Path:
    """Write ``record_or_model`` as a checked ONNX file at ``path`` (atomically); returns the path.

    Uses the TorchScript-based exporter (``dynamo=False``): it needs nothing beyond torch and
    onnx, runs offline, and records the shape arithmetic of the U-Net's padding with dynamic
    height and width. ``fp16`` stores float16 weights and computes in float16 (for GPU
    providers) while input and output stay float32.
    """
    import onnx
    import torch

    from n2ncli.nets.unet import UNet

    if not 13 <= opset <= 20:
        raise ConfigError(f"--opset must be between 13 and 20, got {opset}")
    net, meta = _resolve(record_or_model)
    net = net.to("cpu").float().eval()
    module: nn.Module = _fp16(UNet(net.in_channels, net.out_channels, features=net.features)) if fp16 else net
    if fp16:
        module.net.load_state_dict(net.state_dict())
    module = module.eval()
    dummy = torch.rand(1, net.in_channels, *_TRACE_SHAPE, generator=torch.Generator().manual_seed(0))
    if fp16 and torch.cuda.is_available():  # tracing runs the net once; CPU float16 convs are slow
        module, dummy = module.to("cuda"), dummy.to("cuda")
    axes = {0: "batch", 2: "height", 3: "width"}
    target = Path(path)
    with atomic_path(target) as tmp:
        try:
            with warnings.catch_warnings(), torch.inference_mode():
                # TracerWarnings about the pad branch are expected: the branch is taken
                # deliberately with _TRACE_SHAPE and the numpy side guarantees its premise.
                warnings.simplefilter("ignore")
                torch.onnx.export(module, (dummy,), str(tmp), dynamo=False, opset_version=opset,
                                  input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                  dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes}, do_constant_folding=True)
            proto = onnx.load(str(tmp))
            meta.update({"n2ncli_version": __version__, "n2ncli_precision": "fp16" if fp16 else "fp32",
                         "n2ncli_channels": str(net.in_channels), "n2ncli_layout": "NCHW float32 in [0,1]"})
            for key, value in meta.items():
                entry = proto.metadata_props.add()
                entry.key, entry.value = key, value
            proto.producer_name = "n2ncli"
            onnx.checker.check_model(proto)
            onnx.save(proto, str(tmp))
        except N2nError:
            raise
        except Exception as exc:  # noqa: BLE001 - torch.onnx and onnx raise many unrelated kinds
            raise N2nError(f"ONNX export failed ({exc.__class__.__name__}: {exc})") from exc
    return target


def onnx_cache_dir() -> Path:
    """``$N2N_HOME/cache/onnx`` when ``N2N_HOME`` is set, else the platform's user cache dir."""
    env = os.environ.get("N2N_HOME")
    if env:
        return Path(env).expanduser() / "cache" / "onnx"
    import platformdirs

    return Path(platformdirs.user_cache_dir("n2ncli", appauthor=False)) / "onnx"


def cached_onnx(record: ModelRecord, fp16: bool = False, notes: list[str] | None = None) -> Path:
    """The ONNX export of ``record``, made once and reused; named by the weights' sha256.

    The name follows the weights' hash, so retrained weights never reuse a stale export. The
    cache is not trusted by name: beside each export a small JSON file records what it was made
    from and the export's own sha256, checked on every use. A file that differs (replaced,
    truncated, another opset) or has no such record is exported again, and ``notes`` says so.
    Both writes are atomic: concurrent runs may both export, but a reader only sees complete
    files, and a mismatch between them costs one more export.
    """
    path = onnx_cache_dir() / f"{record.sha256}{'-fp16' if fp16 else ''}.onnx"
    expected = _cache_key(record, fp16)
    why = _stale(path, expected) if path.exists() else None
    if why is None and path.is_file():
        return path
    if why is not None and notes is not None:
        notes.append(f"ONNX cache: {path.name} {why}; exported it again")
    with atomic_path(path) as tmp:
        export_onnx(record, tmp, opset=DEFAULT_OPSET, fp16=fp16)
        digest = sha256_file(tmp)  # the bytes that are renamed into place, not a later reader's
    atomic_write_text(path.with_suffix(".json"), json.dumps({**expected, "onnx_sha256": digest}, indent=2) + "\n")
    return path


def _cache_key(record: ModelRecord, fp16: bool) -> dict[str, object]:
    """What a cached export must have been made from to be reused."""
    return {"weights_sha256": record.sha256, "fp16": bool(fp16), "opset": DEFAULT_OPSET}


def _stale(path: Path, expected: dict[str, object]) -> str | None:
    """Why the cached export at ``path`` cannot be used, or None when it is the recorded one."""
    try:
        saved = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "has no integrity record"
    except (OSError, ValueError):
        return "has an unreadable integrity record"
    if not isinstance(saved, dict) or any(saved.get(k) != v for k, v in expected.items()):
        return "was made from other weights or settings"
    if not path.is_file() or sha256_file(path) != saved.get("onnx_sha256"):
        return "does not match its recorded sha256 (changed since it was exported)"
    return None
