"""Giving memory that Python and torch have freed back to the operating system."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc


def trim_heap() -> bool:
    """Collect garbage, then return the C heap's free pages to the system (glibc ``malloc_trim``).

    torch's CPU tensors live on the C heap, and glibc keeps pages that a large computation freed
    (the memory estimate's probes, a finished stage's prior) as the process's resident memory, where
    a later stage that needs them differently sized may not reuse them. Returns whether anything
    was trimmed; a no-op (False) where the C library has no ``malloc_trim`` (macOS, musl)."""
    gc.collect()
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return bool(trim(0))
