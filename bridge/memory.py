"""Big buffers reused instead of mapped afresh each frame (glibc).

Every frame makes arrays of a few megabytes (the audio picture at 512², the conditioning tensor,
the RGBA frame). glibc serves blocks that large with mmap and gives them back on free, so the
next frame's array is fresh memory that the kernel faults in page by page: on the 2-core test
machine drawing the 512² waveform took 8.8 ms that way and 1.7 ms with the memory kept (the
history 6.4 -> 2.5 ms, the bands 10.4 -> 4.6). `keep_freed_memory()` raises glibc's mmap and trim
thresholds once at start so freed blocks go back to the heap and are reused; the process keeps
its high-water mark of memory, which it reaches every frame anyway."""
from __future__ import annotations

import ctypes
import os
import sys

MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's ceiling for it on 64-bit; larger blocks stay mmapped
TRIM_THRESHOLD = 256 * 1024 * 1024  # free memory kept at the heap's top before it is returned
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)


def user_tuned_malloc(environ=os.environ) -> bool:
    return "malloc" in environ.get("GLIBC_TUNABLES", "") or any(k.startswith("MALLOC_") for k in environ)


def keep_freed_memory() -> bool:
    """Set the thresholds (Linux with glibc; nothing elsewhere, or where the user tuned malloc
    through GLIBC_TUNABLES or MALLOC_* themselves). True when set."""
    if not sys.platform.startswith("linux") or user_tuned_malloc():
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no glibc mallopt
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
