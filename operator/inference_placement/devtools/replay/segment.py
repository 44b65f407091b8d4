"""A segment of a real trace whose traffic swings high -> low -> high, time-compressed for a live replay.

The live tests and the demo need a trace segment that crosses a workload's offload and reclaim thresholds in both
directions. Rather than a synthetic square wave, ``find_swing`` searches a per-step trace (any row, any start) for
the segment whose middle third is lowest relative to its outer thirds, after smoothing over the sustain window the
operator will apply; the thresholds are then placed between the two levels (geometric thirds of the gap), so the
crossing is a property of the data, not of a constant. ``compress`` maps trace steps onto wall-clock seconds.

Counts stay in requests per trace step; ``rates_rps`` turns them into the request rates the replay produces.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from inference_placement.sim.traces import MinuteTrace, RequestTrace, Trace

__all__ = [
    "BoolArray",
    "DemoSegment",
    "FEATURES",
    "FloatArray",
    "RateClasses",
    "ROUND_TRIP",
    "RateClassifier",
    "SearchTimings",
    "SwingSegment",
    "counts_per_step",
    "find_demo_segment",
    "find_round_trip",
    "find_swing",
    "minute_counts",
]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class SwingSegment:
    source: str
    row: int
    start_step: int
    """First trace step of the segment (in the trace's own steps)."""
    counts: tuple[float, ...]
    """Requests per segment step."""
    low_level: float
    """The lowest smoothed count in the segment (requests per step)."""
    high_level: float
    """The smoothed count at the segment's start or end, whichever is lower (requests per step)."""
    trace_steps_per_step: int = 1
    """Trace steps summed into one segment step."""

    @property
    def ratio(self) -> float:
        return (self.high_level + 1.0) / (self.low_level + 1.0)

    @property
    def offload_below(self) -> float:
        """Offload threshold (requests per step): one geometric third of the way from the low to the high level."""
        return float((self.low_level + 1.0) * self.ratio ** (1 / 3) - 1.0)

    @property
    def reclaim_above(self) -> float:
        """Reclaim threshold (requests per step): two geometric thirds of the way."""
        return float((self.low_level + 1.0) * self.ratio ** (2 / 3) - 1.0)

    def scale_to(self, peak_rps: float, seconds_per_step: float) -> float:
        """Factor on counts that makes the busiest step ``peak_rps`` when a step lasts ``seconds_per_step``."""
        peak = max(self.counts)
        return peak_rps * seconds_per_step / peak if peak > 0 else 1.0


def minute_counts(trace: Trace, per_step: int = 1) -> npt.NDArray[np.float64]:
    """Requests per step, one row per workload, for either trace shape; ``per_step`` trace steps summed into one
    (a daily swing shows over hours, not minutes)."""
    if isinstance(trace, MinuteTrace):
        matrix = trace.counts.astype(np.float64)
    else:
        assert isinstance(trace, RequestTrace)
        idx = (trace.arrivals_seconds // trace.step_seconds).astype(np.int64)
        matrix = np.bincount(idx, minlength=trace.steps).astype(np.float64)[None, :]
    usable = matrix.shape[1] // per_step * per_step
    summed: FloatArray = matrix[:, :usable].reshape(matrix.shape[0], -1, per_step).sum(axis=2)
    return summed


def _smoothed(values: FloatArray, window: int) -> FloatArray:
    """Trailing mean over ``window`` steps (what a sustain window of that length sees), valid part only."""
    kernel = np.ones(window) / window
    smoothed: FloatArray = np.convolve(values, kernel, mode="valid")
    return smoothed


def _run_length(flags: npt.NDArray[np.bool_]) -> int:
    """Longest run of True."""
    best = run = 0
    for flag in flags:
        run = run + 1 if flag else 0
        best = max(best, run)
    return best


def _leading(flags: npt.NDArray[np.bool_]) -> int:
    return int(np.argmin(flags)) if not flags.all() else int(flags.size)


def find_swing(
    trace: Trace,
    *,
    steps: int,
    smooth_steps: int,
    hold_steps: int,
    min_high_count: float = 10.0,
    stride: int = 1,
    trace_steps_per_step: int = 1,
) -> SwingSegment:
    """The segment of ``steps`` steps (any row) that swings high -> low -> high the most.

    The series is smoothed over ``smooth_steps`` (a request rate is averaged over its rate window). A segment
    qualifies when, with the thresholds between its lowest level and its start/end level (``offload_below`` /
    ``reclaim_above``), it starts above the reclaim threshold, stays below the offload threshold for ``hold_steps``
    in a row somewhere, and ends with ``hold_steps`` above the reclaim threshold: each threshold is crossed and
    held, because the data does so. The widest swing (high/low ratio) wins. ``min_high_count`` keeps it to real
    traffic; ``trace_steps_per_step`` sums trace steps into one (a daily swing shows over hours, not minutes).
    Raises ``ValueError`` when no segment qualifies.
    """
    w = smooth_steps
    if steps < w + 3 * hold_steps:
        raise ValueError(f"a segment of {steps} steps cannot hold three runs of {hold_steps} steps")
    matrix = minute_counts(trace, trace_steps_per_step)
    best: tuple[float, int, int, float, float] | None = None
    for row in range(matrix.shape[0]):
        series = matrix[row]
        if series.size < steps or series.max() < min_high_count:
            continue
        smooth_all = _smoothed(series, w)  # smooth_all[j] = mean(series[j : j + w])
        for start in range(0, series.size - steps + 1, stride):
            smooth = smooth_all[start : start + steps - w + 1]
            high = float(min(smooth[0], smooth[-1]))
            low = float(smooth.min())
            if high < min_high_count or high <= low:
                continue
            ratio = (high + 1.0) / (low + 1.0)
            if best is not None and ratio <= best[0]:
                continue
            offload = (low + 1.0) * ratio ** (1 / 3) - 1.0
            reclaim = (low + 1.0) * ratio ** (2 / 3) - 1.0
            above = smooth > reclaim
            if _leading(above) < 1 or _leading(above[::-1]) < hold_steps:
                continue
            if _run_length(smooth < offload) < hold_steps:
                continue
            best = (ratio, row, start, low, high)
    if best is None:
        raise ValueError(f"no segment of {steps} steps in {trace.path} swings high -> low -> high")
    _, row, start, low, high = best
    counts = tuple(float(c) for c in matrix[row, start : start + steps])
    return SwingSegment(trace.path, row, start * trace_steps_per_step, counts, low, high, trace_steps_per_step)


# ------------------------------------------------------------------------------------------------ the demo's segment

BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class RateClasses:
    """What the policy does at each of a set of steady request rates (one flag per rate)."""

    below_offload: BoolArray
    """Below the rate under which it offloads the cluster to serverless (its own break-even, less hysteresis)."""
    above_reclaim: BoolArray
    """Above the rate over which it reclaims the cluster (its break-even, plus hysteresis)."""
    burst: BoolArray
    """At or above the lowest rate at which, on the cluster, it keeps base replicas and spills the overflow to
    serverless (beyond what one replica holds)."""


RateClassifier = Callable[[FloatArray], RateClasses]
"""Classifies request rates (requests per second, any shape) by what the policy does at each."""

FEATURES: tuple[str, ...] = ("swing", "burst", "idle")
"""What the demo wants a segment to hold: a swing across the cost break-even (high above reclaim, then low below
offload), a burst the policy serves by spillover, an idle gap."""


@dataclass(frozen=True)
class DemoSegment:
    """A stretch of a trace and the scale it is replayed at, with the features it holds at that scale."""

    source: str
    row: int
    start_step: int
    """First step of the segment, in its own steps (``step_seconds`` of trace time each)."""
    step_seconds: float
    """Trace seconds per segment step."""
    counts: tuple[float, ...]
    """Trace requests per segment step."""
    scale: float
    """Factor on counts: the replay sends ``count x scale`` requests in a step."""
    features: dict[str, int | None]
    """Each feature the finder looks for (``FEATURES``, ``ROUND_TRIP``) -> the segment step it starts at, or None
    when the segment lacks it."""
    trace_has: dict[str, bool]
    """Each feature -> whether any segment of the trace, at any scale tried, holds it."""

    @property
    def lacks(self) -> tuple[str, ...]:
        """The features no segment of the trace holds."""
        return tuple(f for f, has in self.trace_has.items() if not has)


def counts_per_step(trace: Trace, step_seconds: float) -> tuple[FloatArray, float]:
    """Requests per step of about ``step_seconds`` (one row per workload) and the step actually used: a per-minute
    trace sums whole steps; a per-request trace is binned at any step."""
    if isinstance(trace, MinuteTrace):
        per = max(1, round(step_seconds / trace.step_seconds))
        return minute_counts(trace, per), per * trace.step_seconds
    assert isinstance(trace, RequestTrace)
    step = max(1.0, float(round(step_seconds)))
    idx = (trace.arrivals_seconds // step).astype(np.int64)
    return np.bincount(idx).astype(np.float64)[None, :], step


def _runs_start(mask: BoolArray, length: int) -> BoolArray:
    """Per row of ``mask`` (windows x steps): True where a run of ``length`` True steps starts."""
    if length <= 1:
        return mask
    if mask.shape[-1] < length:
        return np.zeros((*mask.shape[:-1], 0), dtype=bool)
    starts: BoolArray = np.asarray(sliding_window_view(mask, length, axis=-1).all(axis=-1), dtype=bool)
    return starts


def _first(flags: BoolArray) -> npt.NDArray[np.int64]:
    """Per row: the first True index, or the row length when none."""
    idx: npt.NDArray[np.int64] = np.where(flags.any(axis=-1), flags.argmax(axis=-1), flags.shape[-1]).astype(np.int64)
    return idx


def _after(flags: BoolArray, first: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Per row: the first True index at or after ``first[row]``, or -1."""
    cols = np.arange(flags.shape[-1])[None, :]
    later = flags & (cols >= first[:, None])
    return np.where(later.any(axis=-1), later.argmax(axis=-1), -1).astype(np.int64)


def _last_at_or_before(flags: BoolArray, shift: int, steps: int) -> npt.NDArray[np.int64]:
    """Per row and step t (``steps`` wide): the largest i with ``flags[i]`` and ``i + shift <= t``, or -1."""
    rows = flags.shape[0]
    marks = np.full((rows, steps), -1, dtype=np.int64)
    idx = np.nonzero(flags)
    at = idx[1] + shift
    keep = at < steps
    marks[idx[0][keep], at[keep]] = idx[1][keep]
    last: npt.NDArray[np.int64] = np.maximum.accumulate(marks, axis=1)
    return last


def _on_cluster(high: BoolArray, low: BoolArray, steps: int, hold_steps: int, settle_steps: int) -> BoolArray:
    """Per row and step: the workload serves on the cluster by then, by the classes alone: a high run moved it
    there ``settle_steps`` after it began, and no low run has completed (moved it off) since."""
    arrived = _last_at_or_before(high, settle_steps, steps)
    left = _last_at_or_before(low, hold_steps, steps)
    on: BoolArray = (arrived >= 0) & (left < arrived)
    return on


def _windows(series: FloatArray, steps: int, smooth_steps: int) -> tuple[FloatArray, FloatArray]:
    """Every segment of ``steps`` steps of ``series`` (starts x steps) and the same smoothed over ``smooth_steps``
    (a trailing mean, the first step repeated before the start, so the smoothed series keeps ``steps`` points)."""
    windows: FloatArray = sliding_window_view(series, steps)
    padded = np.concatenate([np.repeat(windows[:, :1], smooth_steps - 1, axis=1), windows], axis=1)
    smooth: FloatArray = sliding_window_view(padded, smooth_steps, axis=1).mean(axis=-1)
    return windows, smooth


def find_demo_segment(
    trace: Trace,
    classify: RateClassifier,
    *,
    steps: int,
    step_seconds: float,
    seconds_per_step: float,
    max_rps: float,
    smooth_steps: int,
    hold_steps: int,
    idle_steps: int,
    cooldown_steps: int = 0,
    settle_steps: int = 0,
    forecast_steps: int,
    burst_steps: int | None = None,
    scales: int = 16,
) -> DemoSegment:
    """The segment of ``steps`` steps (any row, any start) and the replay scale that hold the most of ``FEATURES``.

    Each step lasts ``step_seconds`` of trace time and ``seconds_per_step`` of replay; a scale maps a step's count to
    a replayed request rate, and ``classify`` says what the policy does at that rate (smoothed over
    ``smooth_steps``, the window the operator measures a rate over). At a scale, a segment holds

    * ``swing``: ``hold_steps`` above reclaim, then, ``cooldown_steps`` or more after they began, ``hold_steps``
      below offload (it moves to the cluster, then off);
    * ``burst``: ``burst_steps`` (default ``hold_steps``) at rates the policy spills at, starting while it serves on
      the cluster (a high run began ``settle_steps`` or more before, and no low run has ended since);
    * ``idle``: ``idle_steps`` without a request, starting while it serves on the cluster, where the mean rate over
      the ``forecast_steps`` up to the gap's last step (the window the policy forecasts from) is one it reclaims the
      cluster at (the cluster is where it belongs at that rate, beyond the hysteresis band: it sits the gap out at
      zero replicas; a gap in a stretch that belongs on serverless moves it off instead), then a request within
      the segment (it wakes the workload: a gap the segment ends in shows no wake).

    Scales run from the one that puts the segment's busiest step at ``max_rps`` (what the local stack carries) down
    by halves of an octave. The most features wins, then the swing, the burst, the idle gap, then the most steps
    with a request (the least dead time); ties go to the lowest row and start and the highest scale. Every
    threshold comes from ``classify`` and the operator's timings, none from the trace.
    """

    def evaluate(windows: FloatArray, classes: RateClasses, scale: float) -> dict[str, _Found]:
        high = _runs_start(classes.above_reclaim, hold_steps)
        low = _runs_start(classes.below_offload, hold_steps)
        first_high = _first(high)
        low_after = _after(low, first_high + cooldown_steps)
        on_cluster = _on_cluster(high, low, steps, hold_steps, settle_steps)
        burst = _runs_start(classes.burst, burst_steps or hold_steps)
        burst_after = _after(burst & on_cluster[:, : burst.shape[1]], first_high)
        # a gap the replay wakes from: ``idle_steps`` without a request, then a request within the segment
        idle_start = _runs_start(windows <= 0, idle_steps)[:, : steps - idle_steps] & (windows[:, idle_steps:] > 0)
        level = np.concatenate([np.zeros((windows.shape[0], forecast_steps - 1)), windows], axis=1)
        level = sliding_window_view(level, forecast_steps, axis=1).mean(axis=-1)  # the forecast's mean, per step
        gap_level = level[:, idle_steps - 1 : steps - 1]  # at each gap's last idle step
        sits_out = classify(gap_level * scale / seconds_per_step).above_reclaim
        idle_after = _after(idle_start & sits_out & on_cluster[:, : idle_start.shape[1]], first_high)
        return {
            "swing": (low_after >= 0, first_high),
            "burst": (burst_after >= 0, burst_after),
            "idle": (idle_after >= 0, idle_after),
        }

    scan = _Scan(steps, step_seconds, seconds_per_step, max_rps, smooth_steps, scales)
    return _best_segment(trace, classify, evaluate, scan)


_Found = tuple[BoolArray, npt.NDArray[np.int64]]
"""Per segment (one per start): whether it holds a feature, and the step the feature starts at."""


@dataclass(frozen=True)
class _Scan:
    """What a segment search scans: segments of ``steps`` steps of about ``step_seconds`` of trace, each replayed in
    ``seconds_per_step``, rates smoothed over ``smooth_steps``, ``scales`` scales from the one at ``max_rps``."""

    steps: int
    step_seconds: float
    seconds_per_step: float
    max_rps: float
    smooth_steps: int
    scales: int


def _best_segment(
    trace: Trace,
    classify: RateClassifier,
    evaluate: Callable[[FloatArray, RateClasses, float], dict[str, _Found]],
    scan: _Scan,
) -> DemoSegment:
    """The segment and scale whose features (``evaluate``: every segment of a row, as counts, the classes of their
    smoothed rates at a scale, and the scale -> feature -> ``_Found``) score best: the most features, then each
    feature in ``evaluate``'s order, then the most steps with a request (the least dead time); ties go to the lowest
    row and start and the highest scale. Scales run from the one that puts a row's busiest step at ``max_rps`` down
    by halves of an octave."""
    counts, step = counts_per_step(trace, scan.step_seconds)
    if counts.shape[1] < scan.steps:
        raise ValueError(f"{trace.path} has {counts.shape[1]} steps of {step:g} s; the demo needs {scan.steps}")
    best: tuple[tuple[int, ...], int, int, float, dict[str, int | None]] | None = None
    has: dict[str, bool] = {}
    for row in range(counts.shape[0]):
        series = counts[row]
        peak = float(series.max())
        if peak <= 0:
            continue
        windows, smooth = _windows(series, scan.steps, scan.smooth_steps)
        busy = (windows > 0).sum(axis=1)  # steps with a request: the more, the more the replay shows
        top = scan.max_rps * scan.seconds_per_step / peak
        for k in range(scan.scales):
            scale = top * 2.0 ** (-k / 2)
            found = evaluate(windows, classify(smooth * scale / scan.seconds_per_step), scale)
            for name, (flags, _) in found.items():
                has[name] = has.get(name, False) or bool(flags.any())
            flags_int = [f.astype(np.int64) for f, _ in found.values()]
            score = np.stack([sum(flags_int), *flags_int, busy], -1)
            order = np.lexsort(score.T[::-1])  # ascending: the last is the best (lowest start on ties)
            ranked = score[order]
            top_score = ranked[-1]
            pick = int(order[np.flatnonzero((ranked == top_score).all(axis=1))[0]])
            key = tuple(int(v) for v in top_score)
            if best is None or key > best[0]:
                feats = {name: int(at[pick]) if flags[pick] else None for name, (flags, at) in found.items()}
                best = (key, row, pick, scale, feats)
    if best is None:
        raise ValueError(f"{trace.path} has no request")
    _, row, start, scale, feats = best
    segment_counts = tuple(float(c) for c in counts[row, start : start + scan.steps])
    return DemoSegment(trace.path, row, start, step, segment_counts, scale, feats, has)


# ------------------------------------------------------------------------------- a round trip through serverless

ROUND_TRIP: tuple[str, ...] = ("off_cluster", "back_to_cluster")
"""The moves of a round trip from the cluster through a serverless target and back, each a run of rates the policy
acts on: ``hold_steps`` below offload (off the cluster, to serverless), then above reclaim (back). The workload
starts on the cluster (``find_round_trip``)."""


@dataclass(frozen=True)
class SearchTimings:
    """The replay's timings a segment search judges a segment by (in replay steps but ``seconds_per_step``)."""

    steps: int
    """Steps of the segment."""
    seconds_per_step: float
    """Wall-clock seconds one step is replayed in."""
    max_rps: float
    """The most the replay asks of the local stack (the busiest step at the highest scale)."""
    smooth_steps: int
    """Steps one measured rate averages over."""
    hold_steps: int
    """Steps a level must hold for the operator to act on it."""
    cooldown_steps: int
    """Steps from one migration's decision to the earliest next one."""
    settle_steps: int
    """Steps from a level the operator acts on to the workload having moved."""


def find_round_trip(
    trace: Trace,
    classify: RateClassifier,
    timings: SearchTimings,
    *,
    step_seconds: float,
    free_from: int = 0,
    scales: int = 16,
) -> DemoSegment:
    """The segment of ``timings.steps`` steps of about ``step_seconds`` (any row, any start) and the replay scale that
    hold the most of ``ROUND_TRIP``, for a workload that starts on the cluster and is the policy's to move from step
    ``free_from`` on (the demo pins it there until the operator's rate window holds the replay's own traffic).

    Scales, smoothing and ``classify`` as in ``find_demo_segment``, its timings ``timings``'s. At a scale a segment
    holds ``off_cluster`` at the first run of ``hold_steps`` below offload that ends at ``free_from`` or later (the
    policy acts on it once it may); ``back_to_cluster`` at the first run
    above reclaim that starts ``max(cooldown_steps, settle_steps)`` or more after it (the move done and its cooldown
    over); each only when its move also completes a step before the segment ends (``settle_steps``, then a step
    served where it moved). The most moves wins (``_best_segment``)."""
    steps, hold_steps, settle_steps = timings.steps, timings.hold_steps, timings.settle_steps
    gap = max(timings.cooldown_steps, settle_steps)

    def evaluate(_windows: FloatArray, classes: RateClasses, _scale: float) -> dict[str, _Found]:
        high = _runs_start(classes.above_reclaim, hold_steps)
        low = _runs_start(classes.below_offload, hold_steps)
        earliest = np.full(low.shape[0], max(0, free_from - hold_steps), dtype=np.int64)
        off = _after(low, earliest)
        back = np.where(off >= 0, _after(high, off + gap), -1)
        moves = [(at >= 0) & (at + settle_steps < steps) for at in (off, back)]
        done = np.minimum.accumulate(np.stack(moves), axis=0)  # a move counts only after the one before it
        return {name: (done[i], at) for i, (name, at) in enumerate(zip(ROUND_TRIP, (off, back), strict=True))}

    scan = _Scan(steps, step_seconds, timings.seconds_per_step, timings.max_rps, timings.smooth_steps, scales)
    return _best_segment(trace, classify, evaluate, scan)
