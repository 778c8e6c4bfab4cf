"""Choose and build the inference backend for a model: PyTorch or ONNX Runtime.

``auto`` takes ONNX Runtime on CPU (measurably faster there, see bench/onnx_vs_torch.py) when
it is installed, and PyTorch on GPUs unless ONNX Runtime's own CUDA provider really starts.
"""

from __future__ import annotations

from n2ncli.backends import Predictor
from n2ncli.device import DEVICE_CHOICES, DEVICES, cpu_has_native_bf16
from n2ncli.errors import ConfigError
from n2ncli.store import ModelRecord

BACKENDS = ("auto", "torch", "onnx")
#: ``auto`` is each backend's own choice (fp32 on CPU, fp16 on GPUs); the others run on PyTorch.
#: bf16 on CPU: at most -0.015 dB on Kodak for 1.3-1.45x speed on AVX-512 bf16 CPUs (docs/benchmarks.md),
#: so ``auto`` takes it there (n2ncli.device.cpu_has_native_bf16).
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class _Cpu:
    """The CPU as ``resolve_device`` would give it, for the auto path without torch."""

    type, index = "cpu", None

    def __str__(self) -> str:
        return "cpu"


_CPU = _Cpu()


def _torch(record: ModelRecord, device: str, precision: str = "auto", compile: bool = False) -> Predictor:  # noqa: A002
    from n2ncli.backends.torch import TorchPredictor
    from n2ncli.device import resolve_device
    from n2ncli.store import build_model

    return TorchPredictor(build_model(record), resolve_device(device), precision=precision, compile=compile)


def _ort_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _onnx(record: ModelRecord, gpu: bool, notes: list[str], device_id: int = 0) -> Predictor:
    """An OnnxPredictor; on GPUs fp16 (as the torch backend), falling back to an fp32 CPU session."""
    from n2ncli.backends.onnx import CPU, CUDA, TENSORRT, OnnxPredictor
    from n2ncli.export import cached_onnx

    if gpu and not _gpu_provider_listed():
        from n2ncli.backends.onnx import import_ort

        have = ", ".join(import_ort().get_available_providers())
        notes.append(f"ONNX Runtime: no GPU provider in this build (have: {have}; pip install onnxruntime-gpu); using CPU")
    elif gpu:
        predictor = OnnxPredictor(cached_onnx(record, fp16=True, notes=notes), record.in_channels,
                                  providers=[TENSORRT, CUDA], device_id=device_id)
        notes.extend(predictor.notes)
        if predictor.provider != CPU:
            return predictor
        notes.append("ONNX Runtime: no GPU provider started; using the fp32 model on CPU")
    predictor = OnnxPredictor(cached_onnx(record, notes=notes), record.in_channels, providers=[CPU])
    notes.extend(predictor.notes)
    return predictor


def _gpu_provider_listed() -> bool:
    from n2ncli.backends.onnx import CUDA, TENSORRT, import_ort

    available = import_ort().get_available_providers()
    return CUDA in available or TENSORRT in available


def make_predictor(record: ModelRecord, backend: str = "auto", device: str = "auto",
                   verbose_notes: list[str] | None = None, precision: str = "auto",
                   compile: bool = False) -> Predictor:  # noqa: A002 - torch's word
    """The predictor for ``record`` on ``backend`` ('auto', 'torch', 'onnx') and ``device``.

    ``precision`` other than 'auto' (fp32, bf16, fp16) is PyTorch autocast, and ``compile`` is
    torch.compile: backend auto then takes PyTorch, and the onnx backend refuses them. Why a choice was made or fell back is
    appended to ``verbose_notes`` (shown with --verbose).
    """
    notes = verbose_notes if verbose_notes is not None else []
    backend, device, precision = backend.lower(), device.lower(), precision.lower()
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r} (use one of {', '.join(BACKENDS)})")
    if device.split(":")[0] not in DEVICES:
        raise ConfigError(f"unknown device {device!r} (use {DEVICE_CHOICES})")
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r} (use one of {', '.join(PRECISIONS)})")
    if precision != "auto" and backend == "onnx":
        raise ConfigError(f"--precision {precision} needs the torch backend (the onnx backend picks its own)")
    if precision != "auto" and backend == "auto":
        notes.append(f"backend auto: PyTorch, for --precision {precision}")
        backend = "torch"
    if compile and backend == "onnx":
        raise ConfigError("--compile is torch.compile: it needs the torch backend (or auto)")
    if compile and backend == "auto":
        notes.append("backend auto: PyTorch, for --compile")
        backend = "torch"
    if backend == "torch":
        return _torch(record, device, precision, compile)
    if backend == "onnx":
        from n2ncli.backends.onnx import import_ort

        import_ort()  # a clear "pip install onnxruntime" before any export work
        if device == "mps":
            notes.append("ONNX Runtime has no MPS provider here; running on CPU")
        gpu = device.startswith("cuda") or (device == "auto" and _gpu_provider_listed())
        return _onnx(record, gpu, notes, gpu_index(device))
    # auto: resolve the device as torch sees it (without torch where no GPU can be), then prefer
    # ONNX Runtime where it pays off
    from n2ncli.device import cpu_only_host, resolve_device

    dev = _CPU if device == "cpu" or (device == "auto" and cpu_only_host()) else resolve_device(device)
    if not _ort_available():
        notes.append("backend auto: onnxruntime is not installed; using PyTorch")
        return _torch(record, str(dev))
    if dev.type == "cpu" and cpu_has_native_bf16():
        notes.append("backend auto: PyTorch bf16 on CPU (it has bf16 units: AVX-512 BF16 or AMX)")
        return _torch(record, "cpu")
    if dev.type == "cpu":
        notes.append("backend auto: ONNX Runtime fp32 on CPU (no bf16 units)")
        return _onnx(record, False, notes)
    if dev.type == "cuda" and _gpu_provider_listed():
        from n2ncli.backends.onnx import CPU, CUDA, TENSORRT, OnnxPredictor
        from n2ncli.export import cached_onnx

        predictor = OnnxPredictor(cached_onnx(record, fp16=True, notes=notes), record.in_channels,
                                  providers=[TENSORRT, CUDA], device_id=dev.index or 0)
        notes.extend(predictor.notes)
        if predictor.provider != CPU:
            notes.append(f"backend auto: ONNX Runtime on {predictor.provider}")
            return predictor
        notes.append("backend auto: ONNX Runtime's GPU provider did not start; using PyTorch")
    else:
        notes.append(f"backend auto: PyTorch on {dev}")
    return _torch(record, str(dev))


def gpu_index(device: str) -> int:
    """N of ``cuda:N`` (0 for ``cuda`` or any other device); ConfigError for a malformed index."""
    head, _, index = device.partition(":")
    if not index:
        return 0
    if head != "cuda" or not index.isdigit():
        raise ConfigError(f"bad device {device!r}: use cuda:N with N a GPU number")
    return int(index)


def describe(predictor: Predictor) -> str:
    """One line naming the backend and where it runs, for the CLI's status line."""
    provider = getattr(predictor, "provider", None)
    if provider is not None:
        name = provider.replace("ExecutionProvider", "")
        index = getattr(predictor, "device_id", 0)
        return f"onnxruntime {name}" + (f":{index}" if name != "CPU" and index else "")
    device = getattr(predictor, "device", None)
    if device is None:
        return type(predictor).__name__
    precision = getattr(predictor, "precision", "fp32")
    compiled = ", torch.compile" if getattr(predictor, "compiled", False) else ""
    note = getattr(predictor, "note", "")
    return f"torch {device}" + ("" if precision == "fp32" else f" {precision}") + (f" ({note})" if note else "") + compiled
