"""core/heap.py: freed CPU tensors' pages go back to the system."""

from __future__ import annotations

import ctypes.util

import pytest
import torch

from threestudio_like.core.heap import trim_heap
from threestudio_like.systems.memory_estimate import runtime_bytes


def resident_bytes() -> int:
    return runtime_bytes(torch.device("cpu"))


GLIBC = bool(ctypes.util.find_library("c")) and hasattr(ctypes.CDLL(None), "malloc_trim")


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's")
def test_trim_gives_freed_heap_pages_back():
    """Many small tensors (below glibc's mmap threshold: on the heap) freed under one that stays:
    the heap cannot shrink from its top, so their pages stay resident until trimmed."""
    trim_heap()
    before = resident_bytes()
    tensors = [torch.ones(16 * 1024) for _ in range(6000)]  # 64 KiB each, 375 MiB, written
    keep = torch.ones(16 * 1024)
    grown = resident_bytes()
    assert grown - before > 300 << 20
    del tensors
    kept = resident_bytes()
    assert trim_heap()
    assert kept - resident_bytes() > 200 << 20
    assert keep.sum() == 16 * 1024
