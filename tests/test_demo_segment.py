"""The demo's choice of a trace segment (``devtools.replay.segment.find_demo_segment``, and ``find_round_trip`` for
its Lambda phase): pure, no cluster.

The classifier here stands for ``policy.decide`` (the demo asks the policy itself, ``devtools.demo.live``); the
finder must find what it says in any row and at any scale, and say what the trace lacks."""

from __future__ import annotations

from typing import Any

import numpy as np

from inference_placement.devtools.replay.segment import (
    DemoSegment,
    FloatArray,
    RateClasses,
    SearchTimings,
    find_demo_segment,
    find_round_trip,
)
from inference_placement.sim.traces import MinuteTrace


def classify(rates: FloatArray) -> RateClasses:
    """Offload below 0.5 rps, reclaim above 1.5 rps, spill between 4 and 6 rps (no request: no class)."""
    busy = rates > 0
    return RateClasses(busy & (rates < 0.5), rates > 1.5, (rates > 4) & (rates < 6))


def _trace(*rows: list[int]) -> MinuteTrace:
    counts = np.array(rows, dtype=np.int64)
    return MinuteTrace("synthetic.csv", tuple(f"w{i}" for i in range(len(rows))), counts)


# requests per one-minute step: high, a burst 2.5x the high, an idle gap, back up, then a low tail
HIGH, BURST, LOW = 20, 50, 2
FULL = [0] * 5 + [HIGH] * 6 + [BURST] * 4 + [0] * 5 + [HIGH] * 3 + [LOW] * 8 + [0] * 9
NO_IDLE = [HIGH] * 10 + [BURST] * 4 + [HIGH] * 6 + [LOW] * 20


TIMINGS: dict[str, Any] = {
    "step_seconds": 60.0,
    "seconds_per_step": 6.0,
    "max_rps": 8.0,
    "smooth_steps": 1,
    "hold_steps": 3,
    "cooldown_steps": 3,
    "settle_steps": 2,
}


def _find(trace: MinuteTrace) -> DemoSegment:
    return find_demo_segment(trace, classify, steps=30, idle_steps=4, forecast_steps=10, **TIMINGS)


def test_the_segment_holding_a_swing_a_burst_and_an_idle_gap_is_found_in_any_row_at_its_scale() -> None:
    segment = _find(_trace(NO_IDLE, FULL))
    assert segment.row == 1
    assert all(segment.features[f] is not None for f in ("swing", "burst", "idle")), segment.features
    assert segment.lacks == ()
    # at the scale chosen, the busiest step (the burst) lands where the policy spills
    burst_rps = BURST * segment.scale / 6.0
    high_rps = HIGH * segment.scale / 6.0
    assert 4 < burst_rps < 6 and high_rps > 1.5
    assert segment.counts == tuple(float(c) for c in FULL[segment.start_step : segment.start_step + 30])


def test_what_no_segment_holds_is_what_the_trace_lacks() -> None:
    segment = _find(_trace(NO_IDLE))
    assert segment.features["idle"] is None and segment.lacks == ("idle",)
    assert segment.features["swing"] is not None and segment.features["burst"] is not None


def test_a_gap_the_trace_ends_in_is_no_idle_gap_for_the_demo() -> None:
    """The demo shows an idle gap woken by a request: a gap with no request after it (the segment ends in it)
    wakes nothing, so it does not count; the same gap followed by one request does."""
    tail_gap = [HIGH] * 10 + [BURST] * 4 + [HIGH] * 6 + [BURST] * 6 + [0] * 4
    segment = _find(_trace(tail_gap))
    assert segment.features["idle"] is None and "idle" in segment.lacks
    woken = _find(_trace([*tail_gap[1:], HIGH]))
    assert woken.features["idle"] is not None


def test_a_gap_where_the_forecast_belongs_on_serverless_is_no_idle_gap_for_the_demo() -> None:
    """The policy sits a gap out at zero replicas only where the rate it forecasts from (the mean over its window)
    keeps the workload on the cluster; a gap after a stretch of low traffic moves it off instead."""
    busy_gap = [HIGH] * 10 + [BURST] * 4 + [HIGH] * 6 + [BURST] * 5 + [0] * 4 + [HIGH]
    quiet_gap = [HIGH] * 10 + [BURST] * 4 + [HIGH] * 6 + [LOW] * 5 + [0] * 4 + [HIGH]
    assert _find(_trace(busy_gap)).features["idle"] is not None
    assert _find(_trace(quiet_gap)).features["idle"] is None


# the workload starts on the cluster: high, then low (off it), high again (back); each level held 5 steps or more
ROUND = [HIGH] * 5 + [LOW] * 6 + [HIGH] * 6 + [LOW] * 5
ONE_WAY = [HIGH] * 10 + [LOW] * 12
# a low stretch over before the policy may move the workload (step 5), then no request (no class here) at any scale
EARLY_DIP = [LOW] * 4 + [0] * 18


def _round_trip(trace: MinuteTrace, free_from: int = 0) -> DemoSegment:
    timings = SearchTimings(steps=20, **{k: v for k, v in TIMINGS.items() if k != "step_seconds"})
    return find_round_trip(trace, classify, timings, step_seconds=TIMINGS["step_seconds"], free_from=free_from)


def test_a_round_trip_through_serverless_is_found_in_any_row_at_a_scale_where_the_low_level_offloads() -> None:
    segment = _round_trip(_trace(ONE_WAY, ROUND))
    assert segment.row == 1 and segment.lacks == (), segment
    off, back = (segment.features[f] for f in ("off_cluster", "back_to_cluster"))
    assert off is not None and back is not None, segment.features
    # the return waits for the move off to complete and cool down (3 steps), and completes a step before the end
    assert off + 3 <= back and back + 2 < 20, segment.features
    rates = [c * segment.scale / 6.0 for c in segment.counts]
    assert all(0 < r < 0.5 for r in rates[off : off + 3]) and all(r > 1.5 for r in rates[back : back + 3]), rates


def test_a_trace_that_never_comes_back_lacks_the_return_and_still_gives_the_move_off() -> None:
    segment = _round_trip(_trace(ONE_WAY))
    assert segment.lacks == ("back_to_cluster",), segment
    assert segment.features["off_cluster"] is not None and segment.features["back_to_cluster"] is None


def test_a_fall_over_before_the_policy_may_move_the_workload_is_no_move_off() -> None:
    """Pinned to the cluster until step 5, the workload cannot leave on a fall that ended before then."""
    assert _round_trip(_trace(EARLY_DIP), free_from=0).features["off_cluster"] is not None
    assert _round_trip(_trace(EARLY_DIP), free_from=5).lacks == ("off_cluster", "back_to_cluster")
