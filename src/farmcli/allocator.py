"""glibc's malloc told to keep freed memory for the next training step (Linux with glibc only).

Each CPU step frees and reallocates the same large activations (19 MB on ``default``); glibc hands them back to the
kernel, so the next step faults them in again: 23,000-27,000 page faults, 63-77 ms of kernel time per step
(docs/PERFORMANCE.md). A fixed 32 MiB mmap threshold and trimming only above 1 GiB keep them; the process keeps its
peak heap until it exits, as a training process does anyway.
"""

from __future__ import annotations

import ctypes
import platform
from functools import cache

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 << 20  # glibc's 64-bit ceiling: only blocks above it are mapped and unmapped each time
TRIM_THRESHOLD = 1 << 30
TOP_PAD = 64 << 20  # each growth of the heap asks for this much more, so growing takes few system calls


@cache
def keep_freed_memory() -> bool:
    """Apply the settings above once per process; True where they took effect (glibc)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD))
        return all(libc.mallopt(param, value) == 1 for param, value in settings)
    except (OSError, AttributeError):
        return False
