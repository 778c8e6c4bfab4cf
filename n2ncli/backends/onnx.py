"""ONNX Runtime backend: the exported U-Net in an ORT session, TensorRT > CUDA > CPU.

Inputs are padded here, in numpy, to a multiple of 32 exactly as ``nets.unet.pad_to_multiple``
does (reflect; replicate when the image is too small to reflect) and the output is cropped
back, so results match the PyTorch backend at every size, including sides under 32 px.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from n2ncli.backends import OutOfMemory
from n2ncli.errors import ConfigError, IncompatibleModelError, N2nError
from n2ncli.nets import DEPTH_MULTIPLE

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
#: Preference order when the caller names no providers.
PREFERRED = (TENSORRT, CUDA, CPU)


def import_ort():  # noqa: ANN201 - the module, typed by whoever imports it
    """``onnxruntime``, or a ConfigError that says how to install it."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ConfigError("the onnx backend needs ONNX Runtime: pip install onnxruntime "
                          "(or onnxruntime-gpu for CUDA)") from exc
    return onnxruntime


def physical_cores() -> int:
    """Physical CPU cores (ORT runs best with one thread per core), else usable logical CPUs."""
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
        if n:
            return int(n)
    except ImportError:
        pass
    try:
        cores = set()
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            block: dict[str, str] = {}
            for line in list(fh) + [""]:
                if not line.strip():
                    if "core id" in block:
                        cores.add((block.get("physical id", "0"), block["core id"]))
                    block = {}
                elif ":" in line:
                    key, _, value = line.partition(":")
                    block[key.strip()] = value.strip()
        usable = len(os.sched_getaffinity(0))
        if cores:
            return max(1, min(len(cores), usable))
    except (OSError, AttributeError):
        pass
    return os.cpu_count() or 1


def _translate(exc: Exception, what: str) -> N2nError:
    """ORT's exceptions as ours: a bad or unsupported file is an incompatible model."""
    name = exc.__class__.__name__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else name
    if name == "NoSuchFile":
        return ConfigError(f"{what}: file not found ({text})")
    if name in ("InvalidProtobuf", "InvalidGraph", "NotImplemented", "ModelLoaded"):
        return IncompatibleModelError(f"{what}: ONNX Runtime cannot run this model ({text})")
    if name == "InvalidArgument":
        return IncompatibleModelError(f"{what}: input does not fit the model ({text})")
    if "allocate" in text.lower() or isinstance(exc, MemoryError):
        return OutOfMemory(f"{what}: out of memory ({text}); try a smaller --tile or --batch")
    return N2nError(f"{what}: ONNX Runtime failed ({name}: {text})")


def with_device(providers: Sequence[str], device_id: int) -> list[str | tuple[str, dict[str, str]]]:
    """Providers as InferenceSession takes them, the GPU ones pinned to GPU ``device_id``."""
    return [(p, {"device_id": str(device_id)}) if p in (CUDA, TENSORRT) else p for p in providers]


def choose_providers(requested: Sequence[str] | None, available: Sequence[str]) -> tuple[list[str], list[str]]:
    """The providers to ask for, in order, and notes on requested ones this build lacks.

    ``None`` means the best present of TensorRT > CUDA > CPU. CPU always ends the list so a
    session can start even when the GPU libraries fail to load.
    """
    wanted = list(PREFERRED if requested is None else requested)
    notes = []
    chosen = [p for p in wanted if p in available]
    if requested is not None:
        notes += [f"ONNX Runtime: {p} is not available in this build (have: {', '.join(available)})"
                  for p in wanted if p not in available]
    if CPU not in chosen:
        chosen.append(CPU)
    return chosen, notes


class OnnxPredictor:
    """Runs an exported U-Net (NCHW, float32 I/O) on NxHxWxC float32 batches.

    ``providers``: ORT provider names in order of preference (default TensorRT > CUDA > CPU,
    those present). The provider the session really got is ``self.provider``; when it is not
    the first one asked for, ``self.notes`` says so (the CLI prints notes with --verbose).
    ``threads``: intra-op threads on CPU (default: physical cores). ``device_id``: which GPU the
    CUDA and TensorRT providers run on (``--device cuda:N``).
    """

    def __init__(self, onnx_path: str | os.PathLike[str], channels: int, providers: Sequence[str] | None = None,
                 threads: int | None = None, device_id: int = 0) -> None:
        ort = import_ort()
        self.path = Path(onnx_path)
        self.channels = channels
        if not self.path.is_file():
            raise ConfigError(f"{self.path}: ONNX file not found")
        if threads is not None and threads < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        asked, self.notes = choose_providers(providers, ort.get_available_providers())
        if device_id < 0:
            raise ConfigError(f"GPU index must be >= 0, got {device_id}")
        self.device_id = device_id
        #: Peak bytes per input pixel of one call, for choosing tiles: the CPU arena (kept on: it is
        #: 11-14 % faster than plain malloc at 512-1024 px tiles) grows in powers of two and keeps
        #: what it took, 2.1-2.6 KB/px at 1024-1792 px (docs/benchmarks.md).
        self.bytes_per_pixel = 2816
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or physical_cores()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # provider load failures become our note, not stderr noise
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options,
                                                providers=with_device(asked, device_id))
        except Exception as exc:  # noqa: BLE001 - ORT raises its own classes, translated here
            if asked == [CPU]:
                raise _translate(exc, str(self.path)) from exc
            # a GPU provider that is listed but cannot start (missing CUDA/cuDNN libraries)
            self.notes.append(f"ONNX Runtime: {asked[0]} failed to start ({exc.__class__.__name__}); using CPU")
            asked = [CPU]
            try:
                self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=asked)
            except Exception as exc2:  # noqa: BLE001
                raise _translate(exc2, str(self.path)) from exc2
        got = self.session.get_providers()
        self.provider = got[0] if got else CPU
        if self.provider != asked[0]:
            self.notes.append(f"ONNX Runtime: {asked[0]} could not be used; running on {self.provider}")
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise IncompatibleModelError(f"{self.path}: expected one NCHW input, found {[i.shape for i in inputs]}")
        self.input_name = inputs[0].name
        c = inputs[0].shape[1]
        if isinstance(c, int) and c != channels:
            raise IncompatibleModelError(f"{self.path}: the model takes {c} channels, not {channels}")

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Denoise NxHxWxC float32 (any H, W) -> NxHxWxC float32 (not clamped)."""
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim != 4 or batch.shape[3] != self.channels:
            raise IncompatibleModelError(f"expected Nx H x W x {self.channels} input, got shape {batch.shape}")
        n, h, w, _ = batch.shape
        ph, pw = (-h) % DEPTH_MULTIPLE, (-w) % DEPTH_MULTIPLE
        x = batch.transpose(0, 3, 1, 2)
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "edge"  # as pad_to_multiple: reflect, else replicate
            x = np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode=mode)
        try:
            y = self.session.run(None, {self.input_name: np.ascontiguousarray(x)})[0]
        except Exception as exc:  # noqa: BLE001
            raise _translate(exc, str(self.path)) from exc
        return np.ascontiguousarray(y[:, :, :h, :w].transpose(0, 2, 3, 1), dtype=np.float32)
