"""Keep freed memory in the process instead of handing it back to the OS (glibc only).

glibc serves large allocations (over 32 MB at most, often far less) with fresh mmap'ed pages and unmaps
them when freed, so every step of a network whose activations are that large (the 512 px upsampler's,
a decoder training batch's) first-touches its buffers again: page faults that cost as much as some of
the kernels (docs/experiments/speed.md). With mmap off and trimming raised, freed blocks are reused; the
process keeps its peak footprint instead of shrinking between steps.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger("core.memory")

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


@functools.cache
def keep_freed_memory() -> bool:
    """Tune glibc's malloc once per process; False where there is no glibc (nothing changes then)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        done = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**30))
    except (OSError, AttributeError):
        return False
    log.debug("malloc keeps freed memory: %s", done)
    return done
