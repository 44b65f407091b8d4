"""CPU of the metrics fetch per steady tick at N workloads, with and without the per-step and history signals.

A harness, not the operator: a real Prometheus over blocks backfilled with ``promtool`` (``openmetrics.py``: what
the router reports per workload, a day of it at ``HISTORY_SAMPLE_SECONDS`` and the last 35 minutes every 15 s), and
the real ``PrometheusSource`` with the operator's default templates and GC settings (the collector paused while it
fetches, as ``Fleet.tick`` does), fetched tick after tick on the operator's 30 s grid. ``with`` is the source as the
operator runs it; ``without`` is the same source asking none of the per-step in-flight peaks, per-step SLO misses
and the day's history (what the source fetched before them). The two alternate tick by tick, so load on the machine
hits both alike. CPU is ``time.process_time()`` of this process (every thread: the queries run in worker threads)
around each ``fetch``; Prometheus' own CPU is not counted.

    python -m inference_placement.devtools.scale.fetch_cost --workloads 1000,10000 --ticks 6
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from inference_placement.api.workload import WorkloadKey
from inference_placement.controller.gc_tuning import collector_paused, tune_gc
from inference_placement.devtools.prometheus import backfill, find_binaries, start_prometheus
from inference_placement.devtools.scale.openmetrics import HISTORY_SAMPLE_SECONDS, write_traffic
from inference_placement.metrics.prometheus import PrometheusSource

__all__ = ["main", "measure"]

_STEP = 30
_BACKFILL_TICKS = 19
"""Fetches after the first until the day's history is in (one older span of 15 points each)."""
_OBJECTIVE_SECONDS = 0.1


class _Without(PrometheusSource):
    """The source without the per-step and history signals (the matrix signals)."""

    def _matrix_tasks(self, *args: Any, **kwargs: Any) -> tuple[list[Any], None]:
        return [], None


async def _tick(source: PrometheusSource, keys: list[WorkloadKey], ts: int) -> tuple[float, float, int]:
    objectives = dict.fromkeys(keys, _OBJECTIVE_SECONDS)
    cpu, wall = time.process_time(), time.perf_counter()
    with collector_paused():  # as the operator's tick fetches (controller/fleet.py)
        snapshot = await source.fetch(keys, datetime.fromtimestamp(ts, UTC), objectives)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if snapshot.problem is not None or len(snapshot.windows) != len(keys):
        raise RuntimeError(f"fetch failed: {snapshot.problem or snapshot.per_workload_problem}")
    return cpu, wall, snapshot.queries


async def measure(workloads: int, ticks: int, workdir: Path) -> dict[str, Any]:
    prometheus, promtool = find_binaries()
    now = int(time.time()) // 3600 * 3600 - 3600
    start = now - 35 * 60
    end = now + (ticks + _BACKFILL_TICKS + 2) * _STEP
    history_from = (now - 86400 - 600) // HISTORY_SAMPLE_SECONDS * HISTORY_SAMPLE_SECONDS
    names = [f"w{i:05d}" for i in range(workloads)]
    om = workdir / "data.om"
    began = time.perf_counter()
    samples = write_traffic(om, "scale", names, lambda i: 1 + i % 3, start, end, history_from=history_from)
    backfill(promtool, om, workdir / "tsdb")
    om.unlink(missing_ok=True)
    prepared = time.perf_counter() - began
    server = start_prometheus(prometheus, workdir)
    try:
        keys = [WorkloadKey("scale", name) for name in names]
        sources = {
            "with": PrometheusSource(server.url, range_seconds=1800),
            "without": _Without(server.url, range_seconds=1800),
        }
        first = {}
        for label, source in sources.items():  # the whole-window fetches (not measured as steady)
            first[label] = await _tick(source, keys, now)
        steady: dict[str, list[tuple[float, float, int]]] = {label: [] for label in sources}
        filling: dict[str, list[tuple[float, float, int]]] = {label: [] for label in sources}
        for k in range(1, _BACKFILL_TICKS + ticks + 1):
            order = list(sources.items()) if k % 2 else list(reversed(sources.items()))
            for label, source in order:
                complete = sources["with"].history_complete
                (steady if complete else filling)[label].append(await _tick(source, keys, now + k * _STEP))
        last = datetime.fromtimestamp(now + (_BACKFILL_TICKS + ticks) * _STEP, UTC)
        snapshot = await sources["with"].fetch(keys, last, dict.fromkeys(keys, _OBJECTIVE_SECONDS))
        window = next(iter(snapshot.windows.values()))
    finally:
        server.stop()
    out: dict[str, Any] = {"workloads": workloads, "samples": samples, "prepare_seconds": round(prepared, 1)}
    for label, runs in steady.items():
        cpu = [c for c, _, _ in runs]
        out[label] = {
            "first_fetch_cpu_seconds": round(first[label][0], 3),
            "first_fetch_queries": first[label][2],
            "steady_cpu_seconds": [round(c, 3) for c in cpu],
            "steady_cpu_mean": round(statistics.mean(cpu), 3),
            "steady_cpu_median": round(statistics.median(cpu), 3),
            "steady_wall_mean": round(statistics.mean(w for _, w, _ in runs), 3),
            "queries_per_tick": sorted({q for _, _, q in runs}),
            "backfill_cpu_mean": round(statistics.mean(c for c, _, _ in filling[label]), 3),
            "backfill_queries_per_tick": sorted({q for _, _, q in filling[label]}),
        }
    out["sample_window"] = {
        "rps_points": len(window.rps),
        "peak_in_flight_points": None if window.peak_in_flight is None else len(window.peak_in_flight),
        "slo_misses_points": None if window.slo_misses is None else len(window.slo_misses),
        "history_points": None if window.history_rps is None else len(window.history_rps),
        "history_slo_misses": window.history_slo_misses,
    }
    out["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="1000,10000")
    parser.add_argument("--ticks", type=int, default=6)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    tune_gc()
    results = []
    for n in (int(x) for x in args.workloads.split(",")):
        workdir = Path(tempfile.mkdtemp(prefix=f"fetch-cost-{n}-"))
        try:
            result = asyncio.run(measure(n, args.ticks, workdir))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        print(json.dumps(result), flush=True)
        results.append(result)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
