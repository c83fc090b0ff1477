"""Child processes that do not outlive their parent.

Linux's parent-death signal (prctl PR_SET_PDEATHSIG) is delivered to a process when the thread
that forked it exits, including by SIGKILL, where no cleanup code of the parent runs.
"""

from __future__ import annotations

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send `sig` to this process when its parent dies. Returns False where
    the call is not available (not Linux). If the parent is already gone, exits now."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent or parent == 1:  # orphaned before the call took effect
        os._exit(1)
    return True
