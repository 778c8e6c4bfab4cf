"""Pick the compute device the user asked for, or the best one present."""

from __future__ import annotations

import functools
import os
import sys
from typing import TYPE_CHECKING

from n2ncli.errors import ConfigError

if TYPE_CHECKING:  # torch is imported where a device is resolved, so `n2n --help` does without it
    import torch

DEVICES = ("auto", "cpu", "cuda", "mps")
#: The one wording of what --device takes, for every command's help and error.
DEVICE_CHOICES = "auto (CUDA, then Apple MPS, then CPU), cpu, cuda, cuda:N or mps"


def resolve_device(name: str = "auto") -> "torch.device":
    """``auto`` prefers CUDA, then Apple MPS, then CPU; asking for a missing one is an error."""
    import torch

    name = name.lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA GPU is available to this torch build")
        return torch.device(name)
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError("--device mps: Apple MPS is not available here")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"unknown device {name!r} (use {DEVICE_CHOICES})")


def autocast_dtype(device: "torch.device", precision: str) -> "torch.dtype | None":
    """The autocast dtype for ``precision`` (auto: bf16 on CUDA, fp32 elsewhere); None = fp32."""
    import torch

    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    table = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in table:
        raise ConfigError(f"unknown precision {precision!r} (use auto, fp32, bf16 or fp16)")
    return table[precision]


#: CPU flags (Linux /proc/cpuinfo) of native bf16 arithmetic: AVX-512 BF16 and AMX.
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_only_host() -> bool:
    """True on a Linux machine with no GPU device files (NVIDIA, ROCm, WSL's GPU): ``auto`` is the
    CPU there, known without importing torch (a second or more of start-up on the ONNX path)."""
    if not sys.platform.startswith("linux"):
        return False  # macOS may have MPS, Windows CUDA: ask torch
    return not any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg"))


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX-512 BF16 or AMX), so that bf16 inference
    is the fast path; other CPUs emulate it and are faster in fp32.

    Read from the kernel's CPU flags on Linux; elsewhere False (fp32). ``N2N_CPU_BF16`` (1/0)
    overrides the detection either way.
    """
    forced = os.environ.get("N2N_CPU_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    return _cpu_flags_have_bf16()


@functools.lru_cache(maxsize=1)
def _cpu_flags_have_bf16() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return not BF16_CPU_FLAGS.isdisjoint(line.split(":", 1)[1].split())
    except OSError:
        pass
    return False


def free_ram() -> int:
    """Available system memory in bytes (psutil if installed, else /proc/meminfo; 4 GiB if unknown)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 4 << 30
