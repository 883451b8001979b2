"""Keep freed memory in the process for reuse, so MD steps do not pay page faults for the same buffers again.

PyTorch's CPU allocator takes every tensor from ``malloc`` and gives it back on free. Under glibc's
defaults, a buffer above the mmap threshold (128 KiB, raised adaptively) gets fresh pages from the
kernel, and a free that leaves more than twice that at the top of the heap returns it to the kernel.
An MD step allocates and frees the same tens of buffers every step, so each step can fault the same
memory in again: 260 page faults per compiled 3BPA ASE step and 1608 per step of 64 batched ethanol
replicas on the project's CPU, 1 and 0 with this setting (``benchmarks/results/allocator_2threads.md``).
PyTorch's CPU tuning guide suggests swapping in jemalloc or tcmalloc for the same reason; this
module needs no extra library and changes only two of glibc's settings.

The setting is global to the process and is never undone. Its cost is memory: up to
:data:`KEEP_FREED_BYTES` of freed heap stays with the process instead of going back to the system.
Set ``REMUL_FF_KEEP_FREED_MEMORY=0`` to leave the allocator alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD_BYTES = 32 * 2**20  # glibc's largest allowed value on 64-bit: larger blocks are still mapped
KEEP_FREED_BYTES = 512 * 2**20  # free heap at the top kept for reuse before any is returned to the system

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Make glibc's malloc reuse freed memory instead of returning it to the kernel (idempotent).

    Returns:
        Whether the setting is in force: ``False`` without glibc (macOS, Windows, musl) or with
        ``REMUL_FF_KEEP_FREED_MEMORY=0`` in the environment.
    """
    global _applied
    if _applied is None:
        _applied = os.environ.get("REMUL_FF_KEEP_FREED_MEMORY", "1") != "0" and _set_glibc_thresholds()
    return _applied


def _set_glibc_thresholds() -> bool:
    """``mallopt`` the trim and mmap thresholds; ``False`` where the C library has no ``mallopt``."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # Fixing either threshold also stops glibc's adaptive raising of the other, so both are set.
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES))


__all__ = ["KEEP_FREED_BYTES", "keep_freed_memory"]
