"""Process-wide settings that the networks' speed on the CPU depends on.

glibc's malloc serves blocks above its mmap threshold (at most 32 MB, however it adapts) with a
fresh mmap and returns them with munmap when freed. A 3-D network's activations on a batch of
tiles are just above that (4 x 8 channels x 64^3 float32 = 33.5 MB), so every layer of every
batch faulted in fresh pages from the kernel: measured on 2 cores, g(y) took 47 ms per 64^3 tile,
a third of it in the kernel, and 28 ms with the threshold raised so the blocks are reused from
the heap. What is freed is kept for reuse, up to the trim threshold, instead of being handed back at
once: a network's process peaks ~15 % higher (reconstruct 529 MB against 469 at 17 Mvoxel), still
flat in the tomogram's size. Verbs that run no network keep glibc's defaults (cryogen.cli.main).
"""

from __future__ import annotations

import ctypes
import functools

# mallopt parameters, from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: blocks below this come from the heap; this much free memory may stay at its top
MALLOC_THRESHOLD = 256 << 20


@functools.lru_cache(maxsize=1)
def tune_malloc(threshold: int = MALLOC_THRESHOLD) -> bool:
    """Raise glibc's mmap and trim thresholds for this process (once); False where the C library
    is not glibc (nothing changes there)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, threshold))
