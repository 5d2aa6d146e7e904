"""The clustering gate on its own: the wait is bounded by the call's deadline, slots come back."""

from __future__ import annotations

import time

import pytest

from feedbackloop.recall.limits import ClusteringBusy, ClusteringGate


def test_a_call_whose_deadline_is_nearer_than_the_wait_is_not_held_past_it() -> None:
    gate = ClusteringGate(1, wait_seconds=30.0)
    with gate.slot():
        started = time.monotonic()
        with pytest.raises(ClusteringBusy) as refused, gate.slot(time_remaining=0.05):
            pass
        assert time.monotonic() - started < 5
    assert "none ended within 0.05s" in refused.value.message
    with gate.slot(time_remaining=0.0):  # free again: taken at once, without waiting
        pass


def test_a_slot_comes_back_when_the_block_raises() -> None:
    gate = ClusteringGate(1, wait_seconds=0.0)
    with pytest.raises(RuntimeError), gate.slot():
        raise RuntimeError("clustering failed")
    with gate.slot():
        pass


@pytest.mark.parametrize(("slots", "wait"), [(0, 1.0), (1, -1.0)])
def test_a_gate_that_could_never_admit_a_call_is_refused(slots: int, wait: float) -> None:
    with pytest.raises(ValueError):
        ClusteringGate(slots, wait)
