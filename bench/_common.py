"""Helpers shared by the benchmark scripts: best-of timing and naming the machine."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path


def best_of(fn: Callable[[], object], reps: int) -> float:
    """Fastest of ``reps`` wall-clock runs, in seconds (the least disturbed by other load)."""
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
