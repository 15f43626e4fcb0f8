"""Child processes that never outlive their parent."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int | None = None) -> None:
    """Have Linux SIGKILL this process when its parent dies, even by SIGKILL.

    Call it first thing in a child (or in ``preexec_fn`` before an exec). ``parent_pid``: the pid the
    parent had when it started the child; if the parent is already gone (the child was re-parented
    before the call), the child exits at once. Linux ties the signal to the parent *thread* that
    started the child: start children from a thread that lives as long as they should.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(0)
