"""Windowed signals kept between fetches as one numpy array per signal: a row per workload, a column per grid point.

Used for the per-step signals read next to the request rate (the in-flight peak and the SLO misses of each step) and
for the day of coarse history (request rate and SLO misses at ``history_step_seconds``): the fleet's points stay
floats in one array (10,000 workloads x 288 points: 11.5 MB as float32), a fetch slides the array by whole steps and
writes the answer's newest points into it; no Python object per kept point. A missing sample is NaN.

Pure (no I/O): the source (``prometheus.py``) asks the queries and hands their parsed answers here.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from inference_placement.policy.series import FloatSeries

__all__ = ["BadSample", "HistoryReadout", "PerStepReadout", "SeriesMatrix", "fill", "moved", "with_rows"]

_TIME_TYPES = (int, float)


class BadSample(ValueError):
    """A sample of the answer is not ``[time, value]``."""


@dataclass(frozen=True)
class SeriesMatrix:
    """Many workloads' series of one signal on one step grid ending at ``end_ts``."""

    rows: Mapping[tuple[str, str], int]
    """Workload (namespace, name) -> its row."""
    values: npt.NDArray[np.floating[Any]]
    """Shape (rows, points); NaN = no sample, or one that was not a number."""
    end_ts: int
    step: int

    @property
    def start_ts(self) -> int:
        return self.end_ts - (int(self.values.shape[1]) - 1) * self.step

    def row(self, key: tuple[str, str]) -> npt.NDArray[np.floating[Any]] | None:
        index = self.rows.get(key)
        return None if index is None else self.values[index]


def moved(
    previous: SeriesMatrix | None,
    wanted: Collection[tuple[str, str]],
    *,
    start_ts: int,
    from_ts: int,
    end_ts: int,
    step: int,
    dtype: type[np.floating[Any]] = np.float64,
) -> SeriesMatrix:
    """A new matrix for ``[start_ts, end_ts]``: ``previous`` slid to it with its points from ``from_ts`` on blanked
    (the answer about to be written replaces them), or, when there is no previous matrix or ``from_ts`` is the
    start (a whole fetch), a blank one with a row per wanted workload. ``previous`` itself is never changed (a fetch
    that fails later keeps it)."""
    points = (end_ts - start_ts) // step + 1
    if previous is None or from_ts <= start_ts:
        rows = {key: i for i, key in enumerate(sorted(wanted))}
        return SeriesMatrix(rows, np.full((len(rows), points), np.nan, dtype=dtype), end_ts, step)
    values = np.full((len(previous.rows), points), np.nan, dtype=dtype)
    keep = min(points, (from_ts - start_ts) // step)
    shift = (end_ts - previous.end_ts) // step
    old = previous.values
    # old column j holds the time of new column j - shift - (old columns - new columns)
    first_old = shift + old.shape[1] - points
    lo = max(0, -first_old)
    hi = min(keep, old.shape[1] - first_old)
    if hi > lo:
        values[:, lo:hi] = old[:, first_old + lo : first_old + hi]
    return SeriesMatrix(previous.rows, values, end_ts, step)


def fill(
    matrix: SeriesMatrix,
    series: Mapping[tuple[str, str], list[Any]],
    duplicated: Collection[tuple[str, str]],
    *,
    from_ts: int,
    to_ts: int | None = None,
    only: Mapping[tuple[str, str], str] | None = None,
    only_value: str | None = None,
) -> None:
    """Write an answer's points (``[[time, "value"], ...]`` per workload, as Prometheus sends them) for the span
    ``from_ts``..``to_ts`` (default: the matrix's end) into ``matrix`` (in place: it is the fetch's own new
    matrix). A text that is not a number is NaN. A workload the answer has several series for gets its whole row
    blanked. ``only``/``only_value``: write only the workloads ``only`` maps to ``only_value`` (the answer of one
    bucket bound). Raises ``BadSample`` for a sample that is not ``[time, value]``."""
    values = matrix.values
    start_ts, step = matrix.start_ts, matrix.step
    first_index = (from_ts - start_ts) // step
    last_ts = matrix.end_ts if to_ts is None else min(to_ts, matrix.end_ts)
    last_index = (last_ts - start_ts) // step
    if first_index > last_index:
        return
    wanted = [
        (row, pts)
        for key, pts in series.items()
        if pts and (row := matrix.rows.get(key)) is not None and (only is None or only.get(key) == only_value)
    ]
    # the usual answer: every point of the span, on the grid; parsed as one array (no Python float per point)
    span = last_index + 1 - first_index
    full: list[tuple[int, list[Any]]] = []
    others: list[tuple[int, list[Any]]] = []
    texts: list[Any] = []
    for row, pts in wanted:
        try:
            if len(pts) == span and pts[0][0] == from_ts and pts[-1][0] == last_ts:
                texts.extend([p[1] for p in pts])
                full.append((row, pts))
                continue
        except (TypeError, IndexError, KeyError):
            del texts[len(full) * span :]
        others.append((row, pts))
    if full:
        try:
            parsed = np.array(texts, dtype=np.float64)
        except (TypeError, ValueError):  # a text that is not a number somewhere: those series point by point
            others.extend(full)
        else:
            rows = np.fromiter((row for row, _ in full), dtype=np.intp, count=len(full))
            values[rows[:, None], np.arange(first_index, last_index + 1)] = parsed.reshape(-1, span)
    _write_points(values, others, start_ts, step, first_index)
    for key in duplicated:
        row = matrix.rows.get(key)
        if row is not None and (only is None or only.get(key) == only_value):
            values[row] = np.nan


def _write_points(
    values: npt.NDArray[np.floating[Any]],
    series: list[tuple[int, list[Any]]],
    start_ts: int,
    step: int,
    first_index: int,
) -> None:
    """The answer's points one by one (a series with points missing, off the grid, or not numbers)."""
    points = values.shape[1]
    for row, pts in series:
        for point in pts:
            ts, text = _pair(point)
            index = round((ts - start_ts) / step)
            if first_index <= index < points:
                try:
                    values[row, index] = float(text)
                except (TypeError, ValueError):
                    values[row, index] = np.nan


def _pair(point: Any) -> tuple[float, Any]:
    if type(point) is tuple:  # decoded as floats (``prometheus._MATRIX_DECODER``)
        return point
    if type(point) is not list or len(point) != 2 or not isinstance(point[0], _TIME_TYPES):
        text = repr(point)
        raise BadSample(f"a sample is not [time, value]: {text[:200]}")
    return point[0], point[1]


def _last_true(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.intp]:
    """Per row, the index of the last True (-1: none)."""
    if mask.shape[1] == 0:
        return np.full(mask.shape[0], -1, dtype=np.intp)
    reverse = mask[:, ::-1]
    last = mask.shape[1] - 1 - reverse.argmax(axis=1)
    return np.where(reverse.any(axis=1), last, -1).astype(np.intp)


class PerStepReadout:
    """A per-step matrix read out row by row for the windows, checked for every row at once.

    ``part(key, first, last)``: the workload's points ``first..last`` times ``scale`` (a ``FloatSeries``), or None
    when it has no row or one of those points is missing, not finite, or (unless ``negative_is_zero``, which reads
    them as 0) negative. ``gaps_are_zero``: such points read as 0 instead (a per-step mean over a step without
    requests has no value: 0 is none) and only a missing row gives None."""

    def __init__(
        self, matrix: SeriesMatrix, *, scale: float, negative_is_zero: bool, gaps_are_zero: bool = False
    ) -> None:
        values = matrix.values
        if gaps_are_zero:
            values = np.where(np.isfinite(values) & (values >= 0), values, 0.0)
            invalid = np.zeros(values.shape, dtype=bool)
        elif negative_is_zero:
            values = np.maximum(values, 0.0)
            invalid = ~np.isfinite(values)
        else:
            invalid = ~np.isfinite(values) | (values < 0)
        self._values = values * scale if scale != 1.0 else values
        self._invalid = invalid
        self._last_invalid = _last_true(invalid).tolist()
        self._rows = matrix.rows

    def part(self, key: tuple[str, str], first: int, last: int) -> FloatSeries | None:
        row = self._rows.get(key)
        if row is None:
            return None
        last_invalid = self._last_invalid[row]
        if last_invalid >= first and (last_invalid <= last or bool(self._invalid[row, first : last + 1].any())):
            return None
        # a view of the read-out array (one per fetch and signal), no Python float per point
        return FloatSeries(self._values[row, first : last + 1])


class HistoryReadout:
    """The history matrices read out for the windows: each workload's run of valid rates ending at the newest
    point (None when that point is missing) and the misses over the same span (None: unknown).

    Each history is a ``FloatSeries``: a view of the kept rates matrix's row (float32), no Python float per point.
    While the matrices are what they were at ``previous`` (the history moves one point per its step; in between
    a fetch re-asks for the newest points and usually gets the same), a workload's result is ``previous``'s (a view
    of the previous matrix, equal to this one: at most that one older matrix is kept alive by them). ``results``
    holds what was read out, for the next readout."""

    def __init__(
        self,
        rates: SeriesMatrix,
        misses: SeriesMatrix | None,
        previous: HistoryReadout | None = None,
    ) -> None:
        self.rates = rates
        self.misses = misses
        self.results: dict[tuple[str, str], tuple[FloatSeries | None, float | None]] = {}
        self._previous: Mapping[tuple[str, str], tuple[FloatSeries | None, float | None]] = {}
        self._all_same = False
        self._prepared = False
        if previous is not None and _comparable(previous.rates, rates):
            self._previous = previous.results
            if _equal(previous.rates, rates) and (
                (misses is None and previous.misses is None)
                or (misses is not None and previous.misses is not None and _equal(previous.misses, misses))
            ):
                self._all_same = True

    def _prepare(self) -> None:
        values = self.rates.values
        self._start = (_last_true(~np.isfinite(values) | (values < 0)) + 1).tolist()
        self._suffix: npt.NDArray[np.float64] | None = None
        self._misses_bad: list[int] | None = None
        if self.misses is not None:
            missed = np.maximum(self.misses.values.astype(np.float64), 0.0)
            self._misses_bad = _last_true(~np.isfinite(missed)).tolist()
            self._suffix = np.cumsum(missed[:, ::-1], axis=1)[:, ::-1] * self.misses.step
        self._prepared = True

    def release(self) -> None:
        """Drop the arrays the read-out used (kept: the matrices and ``results``)."""
        self._prepared = False
        self._suffix = None
        self._misses_bad = None

    def read(self, key: tuple[str, str]) -> tuple[FloatSeries | None, float | None]:
        known = self._previous.get(key) if self._all_same else None
        if known is None:
            known = self._read(key)
        self.results[key] = known
        return known

    def _read(self, key: tuple[str, str]) -> tuple[FloatSeries | None, float | None]:
        row = self.rates.rows.get(key)
        if row is None:
            return None, None
        if not self._prepared:
            self._prepare()
        points = self.rates.values.shape[1]
        first = self._start[row]
        if first >= points:
            return None, None
        history = FloatSeries(self.rates.values[row, first:])
        missed = None
        if self.misses is not None and self._suffix is not None and self._misses_bad is not None:
            miss_row = self.misses.rows.get(key)
            if miss_row is not None and self._misses_bad[miss_row] < first:
                missed = float(self._suffix[miss_row, first])
        return history, missed


def _comparable(old: SeriesMatrix, new: SeriesMatrix) -> bool:
    return old.end_ts == new.end_ts and old.rows is new.rows and old.values.shape == new.values.shape


def _equal(old: SeriesMatrix, new: SeriesMatrix) -> bool:
    return _comparable(old, new) and bool(np.array_equal(old.values, new.values, equal_nan=True))


def with_rows(matrix: SeriesMatrix, keys: Collection[tuple[str, str]]) -> SeriesMatrix:
    """``matrix`` with a blank row added for each of ``keys`` it has none for (itself when it has them all)."""
    missing = sorted(set(keys) - matrix.rows.keys())
    if not missing:
        return matrix
    rows = dict(matrix.rows)
    for key in missing:
        rows[key] = len(rows)
    blank = np.full((len(missing), matrix.values.shape[1]), np.nan, dtype=matrix.values.dtype)
    return SeriesMatrix(rows, np.vstack([matrix.values, blank]), matrix.end_ts, matrix.step)
