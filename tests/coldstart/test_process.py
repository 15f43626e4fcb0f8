"""The collector settings of a running worker (``coldstart.process.settled_heap``)."""

from __future__ import annotations

import gc

import pytest

from coldstart.process import settled_heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_settled_heap_freezes_start_up_objects_and_restores_the_collector() -> None:
    before = gc.get_threshold()
    frozen_before = gc.get_freeze_count()
    start_up = [_Node() for _ in range(100)]
    with settled_heap(50_000):
        assert gc.get_freeze_count() >= frozen_before + 100  # the start-up objects are out of reach
        assert gc.get_threshold() == (50_000, before[1], before[2])
        del start_up
        garbage = _Node()
        del garbage
        assert gc.collect() >= 1  # cycles made after start-up are still collected
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_settled_heap_keeps_the_threshold_when_none_is_given() -> None:
    before = gc.get_threshold()
    with settled_heap():
        assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_settled_heap_restores_the_collector_when_the_worker_fails() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), settled_heap(10_000):
        raise RuntimeError("worker failed")
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
