"""Synthetic traffic for N workloads as OpenMetrics text, in the shape the default PromQL templates read.

Per workload (labels ``namespace`` and ``workload``, as ``metrics/promql.py`` groups by): the counter
``model_requests_total`` and the histogram ``model_request_duration_seconds`` (buckets ``0.1`` and ``+Inf``, all
requests in the first; ``_sum`` at ``MEAN_SERVICE_SECONDS`` each). Samples every 15 s: at 1-minute samples
``rate(...[1m])`` is empty. Written series by series (each series' samples in time order), streamed to a file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

__all__ = ["MEAN_SERVICE_SECONDS", "SAMPLE_INTERVAL_SECONDS", "write_traffic"]

SAMPLE_INTERVAL_SECONDS = 15
MEAN_SERVICE_SECONDS = 0.05
_BUCKETS = ("0.1", "+Inf")


def _series(out: TextIO, name: str, labels: str, times: Sequence[int], values: Sequence[str]) -> None:
    prefix = f"{name}{{{labels}}} "
    out.write("".join(f"{prefix}{v} {t}\n" for t, v in zip(times, values, strict=True)))


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
    with path.open("w", encoding="ascii", buffering=1 << 20) as out:
        out.write("# TYPE model_requests counter\n")
        for i, name in enumerate(names):
            rate = rps(i)
            counts = [str(rate * (t - start)) for t in times]
            _series(out, "model_requests_total", f'namespace="{namespace}",workload="{name}"', times, counts)
            samples += len(times)
        out.write("# TYPE model_request_duration_seconds histogram\n")
        for i, name in enumerate(names):
            rate = rps(i)
            labels = f'namespace="{namespace}",workload="{name}"'
            lines: list[str] = []
            for t in times:
                total = rate * (t - start)
                for bound in _BUCKETS:
                    lines.append(f'model_request_duration_seconds_bucket{{{labels},le="{bound}"}} {total} {t}\n')
                lines.append(f"model_request_duration_seconds_count{{{labels}}} {total} {t}\n")
                lines.append(f"model_request_duration_seconds_sum{{{labels}}} {total * MEAN_SERVICE_SECONDS!r} {t}\n")
            out.write("".join(lines))
            samples += len(times) * (len(_BUCKETS) + 2)
        out.write("# EOF\n")
    return samples
