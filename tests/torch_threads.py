"""One torch thread while a block runs: on a busy 2-core machine two threads spin against each
other and a tiny U-Net step gets ~10x slower. The previous setting is restored afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
