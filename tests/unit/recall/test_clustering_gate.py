"""The clustering bounds on their own: the gate's wait is bounded by the call's deadline, slots
come back, and a window over the size bound is refused before any slot is waited for."""

from __future__ import annotations

import time

import pytest

from feedbackloop.errors import InvalidArgument
from feedbackloop.recall.limits import ClusteringBusy, ClusteringGate, ClusteringLimits


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


def test_a_window_over_the_bound_is_refused_on_its_field_even_while_every_slot_is_taken() -> None:
    clustering = ClusteringLimits(4, ClusteringGate(1, wait_seconds=30.0))
    with clustering.admit("window", (4, 4), time_remaining=None):  # at the bound: admitted
        started = time.monotonic()
        with (
            pytest.raises(InvalidArgument) as refused,
            clustering.admit("window", (0, 5), time_remaining=None),
        ):
            pass
        assert time.monotonic() - started < 5  # refused at once, not after the 30 s wait
        with pytest.raises(ClusteringBusy), clustering.admit("window", (0, 0), time_remaining=0.0):
            pass  # within the bound, so it waits for the one slot, which the outer call holds
    assert [v.field for v in refused.value.violations] == ["window"]
    assert refused.value.message.startswith(
        "window: the window of the same length before it (the one growth is measured against) holds 5; "
        "this server clusters at most 4 complaints a window"
    )
    with clustering.admit("window", (0, 0), time_remaining=0.0):  # the slot came back
        pass
