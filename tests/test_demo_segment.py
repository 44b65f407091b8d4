"""The demo's choice of a trace segment (``devtools.replay.segment.find_demo_segment``): pure, no cluster.

The classifier here stands for ``policy.decide`` (the demo asks the policy itself, ``devtools.demo.live``); the
finder must find what it says in any row and at any scale, and say what the trace lacks."""

from __future__ import annotations

import numpy as np

from inference_placement.devtools.replay.segment import (
    DemoSegment,
    FloatArray,
    RateClasses,
    find_demo_segment,
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


def _find(trace: MinuteTrace) -> DemoSegment:
    return find_demo_segment(
        trace,
        classify,
        steps=30,
        step_seconds=60.0,
        seconds_per_step=6.0,
        max_rps=8.0,
        smooth_steps=1,
        hold_steps=3,
        idle_steps=4,
        cooldown_steps=3,
        settle_steps=2,
    )


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
