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

__all__ = ["BadSample", "SeriesMatrix", "fill", "moved"]

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
    if type(point) is not list or len(point) != 2 or not isinstance(point[0], _TIME_TYPES):
        text = repr(point)
        raise BadSample(f"a sample is not [time, value]: {text[:200]}")
    return point[0], point[1]
