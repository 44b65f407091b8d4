"""Synthetic traffic for N workloads as OpenMetrics text, in the shape the default PromQL templates read.

Per workload, as the stable-endpoint router reports it (labels ``namespace``, ``workload`` and ``target="cluster"``,
``metrics/promql.py`` groups by the first two): the counter ``envoy_cluster_upstream_rq_total`` and the histogram
``envoy_cluster_upstream_rq_time`` in milliseconds (buckets ``100`` and ``+Inf``, all requests in the first;
``_sum`` at ``MEAN_SERVICE_SECONDS`` each); the gauge ``envoy_cluster_upstream_rq_active`` (requests in flight:
the rate times the service time); and the router's scrape health ``up{job="inference-router"} 1``.
Samples every 15 s: at 1-minute samples ``rate(...[1m])`` is empty. ``history_from`` adds samples every
``HISTORY_SAMPLE_SECONDS`` before ``start`` (the request counter and the histogram's buckets only, what the source's
day of 300 s request-rate and SLO-miss history reads: two samples per 300 s rate window). Written series by series
(each series' samples in time order), streamed to a file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

__all__ = ["HISTORY_SAMPLE_SECONDS", "MEAN_SERVICE_SECONDS", "SAMPLE_INTERVAL_SECONDS", "write_traffic"]

SAMPLE_INTERVAL_SECONDS = 15
HISTORY_SAMPLE_SECONDS = 150
MEAN_SERVICE_SECONDS = 0.05
_BUCKETS = ("100", "+Inf")
_REQUESTS = "envoy_cluster_upstream_rq_total"
_TIME = "envoy_cluster_upstream_rq_time"
_ACTIVE = "envoy_cluster_upstream_rq_active"
_ROUTER_UP = 'up{job="inference-router",instance="router-0"}'


def _series(out: TextIO, name: str, labels: str, times: Sequence[int], values: Sequence[str]) -> None:
    prefix = f"{name}{{{labels}}} "
    out.write("".join(f"{prefix}{v} {t}\n" for t, v in zip(times, values, strict=True)))


def _labels(namespace: str, name: str) -> str:
    return f'namespace="{namespace}",workload="{name}",target="cluster"'


def write_traffic(
    path: Path,
    namespace: str,
    names: Sequence[str],
    rps: Callable[[int], int],
    start: int,
    end: int,
    history_from: int | None = None,
) -> int:
    """Write constant traffic of ``rps(i)`` requests/s for workload ``names[i]`` from ``start`` to ``end``
    (Unix seconds, multiples of the sample interval), and from ``history_from`` (a multiple of
    ``HISTORY_SAMPLE_SECONDS``) to ``start`` at that coarser interval. Returns the number of samples written."""
    step = SAMPLE_INTERVAL_SECONDS
    fine = list(range(start, end + 1, step))
    origin = start if history_from is None else history_from
    times = ([] if history_from is None else list(range(history_from, start, HISTORY_SAMPLE_SECONDS))) + fine
    samples = 0
    mean_ms = MEAN_SERVICE_SECONDS * 1000
    with path.open("w", encoding="ascii", buffering=1 << 20) as out:
        out.write("# TYPE up gauge\n")
        out.write("".join(f"{_ROUTER_UP} 1 {t}\n" for t in fine))
        samples += len(fine)
        out.write(f"# TYPE {_ACTIVE} gauge\n")
        for i, name in enumerate(names):
            active = str(rps(i) * MEAN_SERVICE_SECONDS)
            _series(out, _ACTIVE, _labels(namespace, name), fine, [active] * len(fine))
            samples += len(fine)
        out.write(f"# TYPE {_REQUESTS.removesuffix('_total')} counter\n")
        for i, name in enumerate(names):
            rate = rps(i)
            counts = [str(rate * (t - origin)) for t in times]
            _series(out, _REQUESTS, _labels(namespace, name), times, counts)
            samples += len(times)
        out.write(f"# TYPE {_TIME} histogram\n")
        for i, name in enumerate(names):
            rate = rps(i)
            labels = _labels(namespace, name)
            lines: list[str] = []
            for t in times:
                total = rate * (t - origin)
                for bound in _BUCKETS:
                    lines.append(f'{_TIME}_bucket{{{labels},le="{bound}"}} {total} {t}\n')
                if t >= start:  # _count and _sum feed service time: only its newest points are ever asked for
                    lines.append(f"{_TIME}_count{{{labels}}} {total} {t}\n")
                    lines.append(f"{_TIME}_sum{{{labels}}} {total * mean_ms!r} {t}\n")
            out.write("".join(lines))
            samples += len(times) * len(_BUCKETS) + len(fine) * 2
        out.write("# EOF\n")
    return samples
