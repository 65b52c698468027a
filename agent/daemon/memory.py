"""The C allocator tuned for the commands that run many upload threads.

glibc gives a thread that meets another in ``malloc`` an arena of its own, up to eight
per core, and an arena keeps what was freed into it for that thread; and it raises its
``mmap`` threshold each time a large block is freed, so that file chunks (64 KiB each,
one or two per request in flight) end up in the arenas and stay there. With up to 32
upload threads (``concurrency = "auto"``) both together held about 6 MB of resident
memory that no request used: on a device with 512 MB and other work to do, that is a
seventh of the agent. Two arenas cost nothing here (the interpreter's lock already
serialises the threads that would contend for them), and mapping a 64 KiB block costs
microseconds per chunk.
"""

from __future__ import annotations

import logging
import os
import sys

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
"""glibc's ``mallopt`` parameter numbers (malloc.h)."""
ARENAS = 2
MMAP_THRESHOLD_BYTES = 64 * 1024

log = logging.getLogger(__name__)


def tune_malloc() -> bool:
    """Cap the arenas and fix the mmap threshold before the threads start; False where
    it does not apply: not glibc, or ``MALLOC_ARENA_MAX`` / ``MALLOC_MMAP_THRESHOLD_``
    set by the user (their choice stands)."""
    if not sys.platform.startswith("linux"):
        return False
    if os.environ.get("MALLOC_ARENA_MAX") or os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        return False
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, ImportError):
        return False
    # musl and others accept the calls and do nothing (0)
    if mallopt(M_ARENA_MAX, ARENAS) != 1 or mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) != 1:
        log.debug("mallopt was refused; memory use stays the C library's")
        return False
    return True
