"""The C allocator tuned for the commands that run many upload threads.

glibc gives a thread that meets another in ``malloc`` an arena of its own, up to eight
per core, and an arena keeps what was freed into it for that thread. With up to 32
upload threads (``concurrency = "auto"``) that held about 4 MB of resident memory that no
request used: on a device with 512 MB and other work to do, that is a tenth of the
agent. Two arenas cost nothing here: the interpreter's lock already serialises the
threads that would contend for them. (A fixed 64 KiB ``mmap`` threshold saved another
megabyte, but every socket read then mapped and unmapped its buffer: two system calls
per request.)
"""

from __future__ import annotations

import logging
import os
import sys

M_ARENA_MAX = -8
"""glibc's ``mallopt`` parameter number (malloc.h)."""
ARENAS = 2

log = logging.getLogger(__name__)


def tune_malloc() -> bool:
    """Cap the arenas before the threads start; False where it does not apply: not
    glibc, or ``MALLOC_ARENA_MAX`` set by the user (their choice stands)."""
    if not sys.platform.startswith("linux") or os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, ImportError):
        return False
    if mallopt(M_ARENA_MAX, ARENAS) != 1:  # musl and others accept it and do nothing (0)
        log.debug("mallopt was refused; memory use stays the C library's")
        return False
    return True
