"""Process memory tuning for long-lived inference and training processes. No Django, no torch."""

from __future__ import annotations

import ctypes
import ctypes.util

# glibc's mallopt() parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 64 * 1024 * 1024


def retain_freed_memory(retain_mb: int) -> bool:
    """Keep up to ``retain_mb`` of freed memory in this process for reuse (glibc only).

    Each prediction allocates the same large buffers (the decoded picture, activations, the
    overlay). With glibc's defaults these are mapped fresh and given back after every use, and
    each page is faulted in and zeroed again: ~2,300 page faults per 224-pixel prediction. Fixed
    thresholds keep them in the heap instead. Returns whether the C library took the setting.
    """
    if retain_mb <= 0:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    retain = min(retain_mb * 1024 * 1024, 2**31 - 1)
    return bool(mallopt(_M_MMAP_THRESHOLD, min(_MMAP_THRESHOLD_BYTES, retain))) and bool(
        mallopt(_M_TRIM_THRESHOLD, retain)
    )
