"""Process memory knobs for a controller holding many streams (glibc only; no-ops elsewhere).

Each TLS stream on uvloop holds a 256 KiB read buffer (malloc'd, touched only as far as data
arrives). glibc raises its mmap threshold the first time such a block is freed, after which
these buffers come from the heap and fragment it: ~50 KB per idle stream instead of ~30 KB
(measured with a bare TLS server). `pin_mmap_threshold` keeps the threshold at glibc's own
initial value. `trim` hands memory freed after a burst (ten thousand proxies reconnecting and
their audit records written) back to the system.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

_M_MMAP_THRESHOLD = -3
_state: dict[str, Any] = {"pinned": False, "libc": None}


def _glibc() -> Any:
    if _state["libc"] is None:
        name = ctypes.util.find_library("c")
        libc: Any = False
        try:
            if name:
                libc = ctypes.CDLL(name)
        except OSError:
            libc = False
        if libc is not False and not hasattr(libc, "gnu_get_libc_version"):
            libc = False  # not glibc: leave the allocator alone
        _state["libc"] = libc
    return _state["libc"] or None


def pin_mmap_threshold(threshold: int = 128 * 1024) -> bool:
    """mallopt(M_MMAP_THRESHOLD, threshold) once per process; False where not glibc."""
    if _state["pinned"]:
        return True
    libc = _glibc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    _state["pinned"] = bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold))
    return bool(_state["pinned"])


def trim() -> bool:
    """malloc_trim(0): return free heap pages to the system. False where not glibc."""
    libc = _glibc()
    if libc is None or not hasattr(libc, "malloc_trim"):
        return False
    return bool(libc.malloc_trim(0))
