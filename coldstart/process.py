"""Process plumbing: children that never outlive their parent, and the collector settings of a
long-running worker."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import signal
import sys
from collections.abc import Iterator

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


@contextlib.contextmanager
def settled_heap(young_threshold: int | None = None) -> Iterator[None]:
    """While inside: the objects alive on entry are out of the cyclic collector's reach and, with
    ``young_threshold``, young objects are collected less often; both undone on exit (a process that
    embeds the worker, e.g. a test, gets its collector back).

    For a process that has finished starting up. Start-up leaves ~10^6 long-lived objects (Feast's
    registry, protobuf descriptors, pandas, numpy, an API replica's pool); a full collection rescans
    all of them. Frozen, they are never rescanned. A busy warm-up stage at the default young threshold
    (700 net allocations) also ran ~35 collections per 2,000-interaction batch, 13% of its time with
    the start-up objects in reach, 4% frozen (``WarmupStage.process`` in one process, measured with
    ``gc.callbacks``); with a young threshold of 50,000 most batches run none: nearly all its objects
    are freed by reference counting, cycles are still collected, and the threshold bounds how much
    cyclic garbage waits (a few MB). A request path that must not pause keeps the default threshold
    (one young collection of 50,000 objects is milliseconds).
    """
    gc.collect()
    gc.freeze()
    before = gc.get_threshold()
    if young_threshold is not None:
        gc.set_threshold(young_threshold, before[1], before[2])
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
