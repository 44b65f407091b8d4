"""A segment of a real trace whose traffic swings high -> low -> high, time-compressed for a live replay.

The live tests and the demo need a trace segment that crosses a workload's offload and reclaim thresholds in both
directions. Rather than a synthetic square wave, ``find_swing`` searches a per-step trace (any row, any start) for
the segment whose middle third is lowest relative to its outer thirds, after smoothing over the sustain window the
operator will apply; the thresholds are then placed between the two levels (geometric thirds of the gap), so the
crossing is a property of the data, not of a constant. ``compress`` maps trace steps onto wall-clock seconds.

Counts stay in requests per trace step; ``rates_rps`` turns them into the request rates the replay produces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from inference_placement.sim.traces import MinuteTrace, RequestTrace, Trace

__all__ = ["SwingSegment", "find_swing", "minute_counts", "FloatArray"]

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
