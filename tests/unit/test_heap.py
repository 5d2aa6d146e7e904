"""`heap.freeze_startup_objects`: what exists is exempt from collection, what comes later is not."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from feedbackloop.heap import freeze_startup_objects


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def _cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture
def unfrozen_after() -> Iterator[None]:
    # No automatic collection in between: the test decides when cycles are collected.
    gc.disable()
    try:
        yield
    finally:
        gc.unfreeze()  # the rest of the test run keeps normal collection
        gc.enable()


@pytest.mark.usefixtures("unfrozen_after")
def test_existing_objects_are_frozen_and_later_cycles_are_still_collected() -> None:
    before = _cycle()  # garbage already: the collection inside the call frees it
    survivor = Node()
    frozen = freeze_startup_objects()
    assert before() is None
    assert frozen >= gc.get_freeze_count() > 0  # other threads may free frozen objects meanwhile
    assert not any(obj is survivor for obj in gc.get_objects())  # tracked objects exclude frozen

    later = _cycle()
    assert later() is not None
    gc.collect()
    assert later() is None
