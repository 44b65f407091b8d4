"""Synthetic traffic for N workloads as OpenMetrics text, in the shape the default PromQL templates read.

Per workload, as the stable-endpoint router reports it (labels ``namespace``, ``workload`` and ``target="cluster"``,
``metrics/promql.py`` groups by the first two): the counter ``envoy_cluster_upstream_rq_total`` and the histogram
``envoy_cluster_upstream_rq_time`` in milliseconds (buckets ``100`` and ``+Inf``, all requests in the first;
``_sum`` at ``MEAN_SERVICE_SECONDS`` each); the gauge ``envoy_cluster_upstream_rq_active`` (requests in flight:
the rate times the service time); and the router's scrape health ``up{job="inference-router"} 1``.

Only what the operator's queries read (``docs/promql.md``):

- samples every 15 s from ``start`` to ``end`` (at 1-minute samples ``rate(...[1m])`` is empty) for the request
  counter, the buckets and the in-flight gauge (the window's per-step rate, SLO misses and in-flight peaks);
- ``_sum`` and ``_count`` (service time: only the newest points are ever asked for) from ``recent_from`` only;
- ``history_from`` adds samples every ``HISTORY_SAMPLE_SECONDS`` before ``start`` for the request counter and the
  two buckets only: what the day of 300 s request-rate and SLO-miss history reads (two samples per 300 s window).

``promtool tsdb create-blocks-from openmetrics`` reads its whole input into memory and parses it once per 2-hour block
the samples span: one file of a day for 10,000 workloads (~40 M samples) was parsed ~14 times and did not finish in
14 minutes here. ``traffic_chunks`` therefore cuts the data into files that each lie within one 2-hour block and
hold at most ``max_lines`` samples (a slice of the workloads); each is parsed once, and the blocks they make (disjoint
series where they overlap in time) are what Prometheus serves. Each series' samples are written as one C-level
``join`` over value/time strings computed once per distinct rate and block (the rates take three values).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

__all__ = [
    "BLOCK_SECONDS",
    "HISTORY_SAMPLE_SECONDS",
    "MEAN_SERVICE_SECONDS",
    "SAMPLE_INTERVAL_SECONDS",
    "Chunk",
    "Traffic",
    "iter_chunk_files",
    "traffic_chunks",
    "write_chunk",
    "write_traffic",
]

SAMPLE_INTERVAL_SECONDS = 15
HISTORY_SAMPLE_SECONDS = 150
BLOCK_SECONDS = 7200
"""promtool's block range (2 h, aligned to the epoch): a file inside one is parsed once."""
MEAN_SERVICE_SECONDS = 0.05
_BUCKETS = ("100", "+Inf")
_REQUESTS = "envoy_cluster_upstream_rq_total"
_TIME = "envoy_cluster_upstream_rq_time"
_ACTIVE = "envoy_cluster_upstream_rq_active"
_ROUTER_UP = 'up{job="inference-router",instance="router-0"}'


@dataclass(frozen=True)
class Traffic:
    """Constant traffic of ``rps(i)`` requests/s for workload ``names[i]``: every 15 s from ``start`` to ``end`` (Unix
    seconds, multiples of the sample interval), every ``HISTORY_SAMPLE_SECONDS`` from ``history_from`` (a multiple of
    it) to ``start``, ``_sum``/``_count`` from ``recent_from`` (default ``start``)."""

    namespace: str
    names: Sequence[str]
    rps: Callable[[int], int]
    start: int
    end: int
    history_from: int | None = None
    recent_from: int | None = None

    @property
    def origin(self) -> int:
        return self.start if self.history_from is None else self.history_from

    def fine(self, lo: int, hi: int) -> list[int]:
        """The 15 s sample times in ``[lo, hi)``."""
        first = max(self.start, lo + (-lo) % SAMPLE_INTERVAL_SECONDS)
        return list(range(first, min(self.end + 1, hi), SAMPLE_INTERVAL_SECONDS))

    def coarse(self, lo: int, hi: int) -> list[int]:
        """The history's sample times in ``[lo, hi)``."""
        if self.history_from is None:
            return []
        first = max(self.history_from, lo + (-lo) % HISTORY_SAMPLE_SECONDS)
        return list(range(first, min(self.start, hi), HISTORY_SAMPLE_SECONDS))

    def recent(self, lo: int, hi: int) -> list[int]:
        return self.fine(max(lo, self.recent_from or self.start), hi)


@dataclass(frozen=True)
class Chunk:
    """The samples of workloads ``first`` to ``last - 1`` in ``[lo, hi)`` (one promtool block at most)."""

    lo: int
    hi: int
    first: int
    last: int
    with_router: bool


def _lines_per_workload(traffic: Traffic, lo: int, hi: int) -> int:
    fine, coarse, recent = traffic.fine(lo, hi), traffic.coarse(lo, hi), traffic.recent(lo, hi)
    return (1 + len(_BUCKETS)) * (len(fine) + len(coarse)) + len(fine) + 2 * len(recent)


def traffic_chunks(traffic: Traffic, max_lines: int = 2_000_000) -> list[Chunk]:
    """The files to write: each within one ``BLOCK_SECONDS`` block, at most ~``max_lines`` samples."""
    begin = traffic.origin
    chunks: list[Chunk] = []
    lo = begin - begin % BLOCK_SECONDS
    while lo <= traffic.end:
        hi = lo + BLOCK_SECONDS
        per = _lines_per_workload(traffic, lo, hi)
        if per:
            size = max(1, max_lines // per)
            n = len(traffic.names)
            for first in range(0, n, size):
                chunks.append(Chunk(lo, hi, first, min(n, first + size), with_router=first == 0))
        lo = hi
    return chunks


def _labels(namespace: str, name: str) -> str:
    return f'namespace="{namespace}",workload="{name}",target="cluster"'


def _write_series(out: TextIO, prefix: str, suffixes: Sequence[str]) -> None:
    """``prefix`` + each ``"value time"`` suffix, one line each (one join in C)."""
    if suffixes:
        out.write(prefix)
        out.write(("\n" + prefix).join(suffixes))
        out.write("\n")


def _write(out: TextIO, traffic: Traffic, chunk: Chunk) -> int:
    lo, hi = chunk.lo, chunk.hi
    fine, recent = traffic.fine(lo, hi), traffic.recent(lo, hi)
    every = traffic.coarse(lo, hi) + fine
    origin = traffic.origin
    mean_ms = MEAN_SERVICE_SECONDS * 1000
    cache: dict[tuple[str, int], list[str]] = {}

    def suffixes(kind: str, rate: int) -> list[str]:
        key = (kind, rate)
        found = cache.get(key)
        if found is None:
            if kind == "active":
                value = str(rate * MEAN_SERVICE_SECONDS)
                found = [f"{value} {t}" for t in fine]
            elif kind == "count":
                found = [f"{rate * (t - origin)} {t}" for t in every]
            elif kind == "recent_count":
                found = [f"{rate * (t - origin)} {t}" for t in recent]
            else:  # sum
                found = [f"{rate * (t - origin) * mean_ms!r} {t}" for t in recent]
            cache[key] = found
        return found

    samples = 0
    indices = range(chunk.first, chunk.last)
    rates = {i: traffic.rps(i) for i in indices}
    labels = {i: _labels(traffic.namespace, traffic.names[i]) for i in indices}
    if chunk.with_router and fine:
        out.write("# TYPE up gauge\n")
        _write_series(out, _ROUTER_UP + " ", [f"1 {t}" for t in fine])
        samples += len(fine)
    if fine:
        out.write(f"# TYPE {_ACTIVE} gauge\n")
        for i in indices:
            _write_series(out, f"{_ACTIVE}{{{labels[i]}}} ", suffixes("active", rates[i]))
            samples += len(fine)
    out.write(f"# TYPE {_REQUESTS.removesuffix('_total')} counter\n")
    for i in indices:
        _write_series(out, f"{_REQUESTS}{{{labels[i]}}} ", suffixes("count", rates[i]))
        samples += len(every)
    out.write(f"# TYPE {_TIME} histogram\n")
    for i in indices:
        for bound in _BUCKETS:
            _write_series(out, f'{_TIME}_bucket{{{labels[i]},le="{bound}"}} ', suffixes("count", rates[i]))
            samples += len(every)
        _write_series(out, f"{_TIME}_count{{{labels[i]}}} ", suffixes("recent_count", rates[i]))
        _write_series(out, f"{_TIME}_sum{{{labels[i]}}} ", suffixes("sum", rates[i]))
        samples += 2 * len(recent)
    out.write("# EOF\n")
    return samples


def write_chunk(path: Path, traffic: Traffic, chunk: Chunk) -> int:
    """Write one chunk to ``path``; returns the number of samples written."""
    with path.open("w", encoding="ascii", buffering=1 << 22) as out:
        return _write(out, traffic, chunk)


def write_traffic(
    path: Path,
    namespace: str,
    names: Sequence[str],
    rps: Callable[[int], int],
    start: int,
    end: int,
    history_from: int | None = None,
) -> int:
    """All of it in one file (small fleets; promtool parses it once per 2-hour block it spans). Returns the number of
    samples written."""
    traffic = Traffic(namespace, names, rps, start, end, history_from)
    begin = traffic.origin
    chunk = Chunk(begin - begin % BLOCK_SECONDS, end + 1, 0, len(names), with_router=True)
    return write_chunk(path, traffic, chunk)


def iter_chunk_files(directory: Path, traffic: Traffic, max_lines: int = 2_000_000) -> Iterator[tuple[Path, int]]:
    """Write the chunks one by one into ``directory`` (``chunk-K.om``), yielding each file and its samples as it is
    complete (the caller backfills and removes it while the next is written)."""
    for k, chunk in enumerate(traffic_chunks(traffic, max_lines)):
        path = directory / f"chunk-{k:04d}.om"
        yield path, write_chunk(path, traffic, chunk)
