"""Synthetic traffic for N workloads as OpenMetrics text, in the shape the default PromQL templates read.

Per workload, as the stable-endpoint router reports it (labels ``namespace``, ``workload`` and ``target="cluster"``,
``metrics/promql.py`` groups by the first two): the counter ``envoy_cluster_upstream_rq_total`` and the histogram
``envoy_cluster_upstream_rq_time`` in milliseconds (buckets ``100`` and ``+Inf``, all requests in the first;
``_sum`` at ``MEAN_SERVICE_SECONDS`` each); and the router's scrape health ``up{job="inference-router"} 1``.
Samples every 15 s: at 1-minute samples ``rate(...[1m])`` is empty. Written series by series (each series' samples
in time order), streamed to a file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

__all__ = ["MEAN_SERVICE_SECONDS", "SAMPLE_INTERVAL_SECONDS", "write_traffic"]

SAMPLE_INTERVAL_SECONDS = 15
MEAN_SERVICE_SECONDS = 0.05
_BUCKETS = ("100", "+Inf")
_REQUESTS = "envoy_cluster_upstream_rq_total"
_TIME = "envoy_cluster_upstream_rq_time"
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
) -> int:
    """Write constant traffic of ``rps(i)`` requests/s for workload ``names[i]`` from ``start`` to ``end``
    (Unix seconds, multiples of the sample interval). Returns the number of samples written."""
    step = SAMPLE_INTERVAL_SECONDS
    times = list(range(start, end + 1, step))
    samples = 0
    mean_ms = MEAN_SERVICE_SECONDS * 1000
    with path.open("w", encoding="ascii", buffering=1 << 20) as out:
        out.write("# TYPE up gauge\n")
        out.write("".join(f"{_ROUTER_UP} 1 {t}\n" for t in times))
        samples += len(times)
        out.write(f"# TYPE {_REQUESTS.removesuffix('_total')} counter\n")
        for i, name in enumerate(names):
            rate = rps(i)
            counts = [str(rate * (t - start)) for t in times]
            _series(out, _REQUESTS, _labels(namespace, name), times, counts)
            samples += len(times)
        out.write(f"# TYPE {_TIME} histogram\n")
        for i, name in enumerate(names):
            rate = rps(i)
            labels = _labels(namespace, name)
            lines: list[str] = []
            for t in times:
                total = rate * (t - start)
                for bound in _BUCKETS:
                    lines.append(f'{_TIME}_bucket{{{labels},le="{bound}"}} {total} {t}\n')
                lines.append(f"{_TIME}_count{{{labels}}} {total} {t}\n")
                lines.append(f"{_TIME}_sum{{{labels}}} {total * mean_ms!r} {t}\n")
            out.write("".join(lines))
            samples += len(times) * (len(_BUCKETS) + 2)
        out.write("# EOF\n")
    return samples
