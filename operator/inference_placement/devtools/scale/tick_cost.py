"""CPU and memory of the fleet loop's per-tick work at N workloads, in process: no apiserver, no Prometheus.

A harness, not the operator and not ``bench-scale``: the real ``Fleet`` (fingerprints, skips, resync, status
diffing) and the real ``Reconciler`` (``decide()``, conditions, the status write decision, Events) with the
``cluster.dryRun`` target, over N synthetic workloads (``bench-scale``'s body) whose metrics windows have the shape
``PrometheusSource`` hands the policy (the request rate, in-flight peaks and SLO misses per 30 s step over 30 min,
the latest p99 / service time / miss share, a day of history at 300 s), built from per-signal numpy matrices and
handed out as the source does (the rate as a tuple of floats, the other series as views of the arrays). What the
harness leaves out: the metrics fetch itself (HTTP, JSON; measured apart by ``fetch_cost``),
kopf, and the apiserver (a status write is merged into an in-memory object and its watch event fed back through
``Fleet.observe``, as the watch does).

Traffic (``--traffic``): ``steady`` - every step of a workload has the same rate, as the backfilled series of
``bench-scale`` give (a steady tick then reconciles only the resync share); ``noisy`` - Poisson counts per step
around each workload's level, as real traffic is (the window's newest point moves every tick, so most windows'
fingerprints change). ``--history filling`` starts with an hour of history that grows by one 300 s point per tick
(the operator's first ~20 ticks after a start); ``complete`` has the whole day.

    python -m inference_placement.devtools.scale.tick_cost --workloads 1000 --ticks 5 --traffic noisy
    python -m inference_placement.devtools.scale.tick_cost --workloads 2000 --ticks 3 --profile /tmp/tick.prof

CPU is ``time.process_time()`` around each ``Fleet.tick()`` (the fetch from the in-memory source is a few ms);
RSS is the process's VmRSS after the measured ticks (VmHWM: the peak, settling included).
"""

from __future__ import annotations

import asyncio
import cProfile
import enum
import gc
import json
import math
import pstats
import statistics
import sys
import time
import tracemalloc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Optional, cast

import numpy as np
import typer

from inference_placement.api.spec import TargetName
from inference_placement.api.workload import WorkloadKey
from inference_placement.commandline import run_app
from inference_placement.controller.fleet import Fleet
from inference_placement.controller.gc_tuning import tune_gc
from inference_placement.controller.kube import KubeWriter
from inference_placement.controller.reconciler import Reconciler
from inference_placement.controller.telemetry import Telemetry
from inference_placement.devtools.merge_patch import apply_merge_patch
from inference_placement.devtools.scale.cluster import workload_body
from inference_placement.metrics.source import MetricsSnapshot
from inference_placement.policy.decide import TrafficWindow
from inference_placement.policy.price_book import default_price_book
from inference_placement.policy.series import FloatSeries
from inference_placement.targets.dry_run import DryRunTarget

__all__ = ["History", "MemoryWriter", "SyntheticSource", "Traffic", "app", "build", "main", "measure", "tick_cost"]

_NAMESPACE = "tick-cost"
_STEP = 30
_WINDOW_POINTS = 60
_HISTORY_STEP = 300
_HISTORY_POINTS = 288
_START = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


@dataclass
class MemoryWriter:
    """The reconciler's writer against in-memory objects: a status merge patch applied, the resourceVersion bumped,
    the object returned freshly decoded (as the apiserver's answer is), Events counted and dropped."""

    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    status_writes: int = 0
    events: int = 0
    echoes: list[dict[str, Any]] = field(default_factory=list)
    """Written objects whose watch event is still to be delivered (``Fleet.observe``)."""
    _version: int = 1000

    def put(self, body: dict[str, Any]) -> dict[str, Any]:
        self._version += 1
        body["metadata"]["resourceVersion"] = str(self._version)
        self.objects[(body["metadata"]["namespace"], body["metadata"]["name"])] = body
        return cast(dict[str, Any], json.loads(json.dumps(body)))

    async def patch_status(
        self, namespace: str, name: str, patch: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        body = self.objects[(namespace, name)]
        body["status"] = apply_merge_patch(body.get("status") or {}, patch)
        self.status_writes += 1
        self._version += 1
        body["metadata"]["resourceVersion"] = str(self._version)
        answer = cast(dict[str, Any], json.loads(json.dumps(body)))
        self.echoes.append(cast(dict[str, Any], json.loads(json.dumps(body))))
        return answer

    async def set_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str
    ) -> dict[str, Any]:
        body = self.objects[(namespace, name)]
        body["metadata"]["finalizers"] = list(finalizers)
        return self.put(body)

    async def post_event(self, **event: Any) -> None:
        self.events += 1

    async def read(self, namespace: str, name: str) -> dict[str, Any] | None:
        body = self.objects.get((namespace, name))
        return None if body is None else cast(dict[str, Any], json.loads(json.dumps(body)))


class SyntheticSource:
    """Windows for N workloads from per-signal matrices slid one step per fetch (as ``metrics/matrix.py`` keeps
    them), read out as the tuples ``PrometheusSource`` hands the policy."""

    def __init__(self, keys: Sequence[WorkloadKey], *, traffic: str, history: str, seed: int = 7) -> None:
        self.keys = list(keys)
        self.rows = {key: i for i, key in enumerate(self.keys)}
        self.traffic = traffic
        self.rng = np.random.default_rng(seed)
        n = len(self.keys)
        # levels from 0.2 to 200 rps, log-uniform (the fleet of a real cluster: many small, a few large)
        self.level = np.exp(self.rng.uniform(math.log(0.2), math.log(200.0), n))
        self.rates = np.vstack([self._step_rates() for _ in range(_WINDOW_POINTS)]).T.copy()
        self.peaks = self._peaks(self.rates)
        self.misses = self.rates * _STEP * 0.002
        hist = np.repeat(self.level[:, None], _HISTORY_POINTS, axis=1)
        if traffic == "noisy":
            hist = hist * self.rng.uniform(0.8, 1.2, hist.shape)
        self.history = hist
        self.history_points = 12 if history == "filling" else _HISTORY_POINTS
        self.fetches = 0
        self._history_series: dict[WorkloadKey, tuple[FloatSeries, float]] = {}

    def _step_rates(self) -> np.ndarray:
        if self.traffic == "steady":
            return self.level.copy()
        counts = self.rng.poisson(self.level * _STEP)
        return np.asarray(counts, dtype=np.float64) / _STEP

    def _peaks(self, rates: np.ndarray) -> np.ndarray:
        in_flight = rates * 0.05
        if self.traffic == "steady":
            return np.ceil(in_flight + 1.0)
        return np.ceil(in_flight + 2.0 * np.sqrt(in_flight + 1e-9))

    async def fetch(
        self, keys: Sequence[WorkloadKey], now: datetime, objective_seconds: Mapping[WorkloadKey, float] | None = None
    ) -> MetricsSnapshot:
        self.fetches += 1
        if self.fetches > 1:  # the grid moved one step: slide, and the newest point arrives
            new = self._step_rates()
            self.rates = np.hstack([self.rates[:, 1:], new[:, None]])
            self.peaks = np.hstack([self.peaks[:, 1:], self._peaks(new)[:, None]])
            self.misses = np.hstack([self.misses[:, 1:], (new * _STEP * 0.002)[:, None]])
            if self.history_points < _HISTORY_POINTS:
                self.history_points += 1
                self._history_series = {}
            elif self.fetches % (_HISTORY_STEP // _STEP) == 0:
                self._history_series = {}  # the history moves one point per its step
        end = now.replace(second=(now.second // _STEP) * _STEP, microsecond=0)
        # as PrometheusSource: the request rate as a tuple of floats (kept as lists per workload), the per-step
        # signals and the day (float32) as views of the arrays (matrix.PerStepReadout, HistoryReadout)
        rates = self.rates.tolist()
        peaks, misses = self.peaks.copy(), self.misses * 1.0
        if not self._history_series:
            history = self.history[:, _HISTORY_POINTS - self.history_points :].astype(np.float32)
            sums = history.astype(np.float64).sum(axis=1)
            self._history_series = {
                key: (FloatSeries(history[row]), float(sums[row])) for key, row in self.rows.items()
            }
        windows: dict[WorkloadKey, TrafficWindow] = {}
        for key in keys:
            row = self.rows[key]
            hist, total = self._history_series[key]
            level = float(self.level[row])
            windows[key] = TrafficWindow(
                step_seconds=float(_STEP),
                rps=tuple(rates[row]),
                observed_p99_seconds=0.05 + 0.0001 * level,
                end=end,
                service_seconds=0.05,
                peak_in_flight=FloatSeries(peaks[row]),
                slo_miss_share=0.002,
                slo_misses=FloatSeries(misses[row]),
                history_rps=hist,
                history_slo_misses=total * _HISTORY_STEP * 0.002,
                history_step_seconds=float(_HISTORY_STEP),
            )
        return MetricsSnapshot(windows=windows, queries=13, history_loading=self.history_points < _HISTORY_POINTS)


def _rss_mb() -> tuple[float, float]:
    fields: dict[str, float] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = float(value.split()[0]) / 1024.0
    return fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0)


class _Clock:
    def __init__(self) -> None:
        self.now = _START

    def __call__(self) -> datetime:
        return self.now


@dataclass
class _Harness:
    fleet: Fleet
    writer: MemoryWriter
    source: SyntheticSource
    clock: _Clock

    async def tick(self) -> tuple[float, int, int]:
        """One full tick; then the written objects' watch events. Returns (CPU s, reconciles, status writes)."""
        reconciles, writes = self.fleet.stats.reconciles, self.writer.status_writes
        started = time.process_time()
        await self.fleet.tick()
        echoes, self.writer.echoes = self.writer.echoes, []
        for body in echoes:
            self.fleet.observe("MODIFIED", body)
        cpu = time.process_time() - started
        self.clock.now += timedelta(seconds=_STEP)
        return cpu, self.fleet.stats.reconciles - reconciles, self.writer.status_writes - writes


def build(workloads: int, *, traffic: str, history: str) -> _Harness:
    writer = MemoryWriter()
    reconciler = Reconciler(cast(KubeWriter, writer), {TargetName.CLUSTER: DryRunTarget()}, telemetry=Telemetry())
    keys = [WorkloadKey(_NAMESPACE, f"w-{i:05d}") for i in range(workloads)]
    source = SyntheticSource(keys, traffic=traffic, history=history)
    book = default_price_book()
    clock = _Clock()
    fleet = Fleet(
        reconciler=reconciler,
        metrics=source,
        price_book=lambda: book,
        clock=clock,
        tick_seconds=float(_STEP),
        telemetry=reconciler.telemetry,
    )
    for i, key in enumerate(keys):
        body = workload_body(key.namespace, key.name)
        body["metadata"].update({"uid": f"uid-{i}", "generation": 1})
        fleet.observe("ADDED", writer.put(body))
    return _Harness(fleet, writer, source, clock)


async def measure(
    workloads: int,
    *,
    ticks: int,
    traffic: str,
    history: str,
    profile: Path | None = None,
    trace_memory: bool = False,
) -> dict[str, Any]:
    if trace_memory:
        tracemalloc.start(1)
    harness = build(workloads, traffic=traffic, history=history)
    tune_gc()
    settle: list[float] = []
    for _ in range(8):  # first placement: a decision, then the migration's steps, one per tick here
        cpu, reconciles, _ = await harness.tick()
        settle.append(cpu)
        if not harness.fleet._active and reconciles and harness.fleet.stats.skipped_unchanged:
            break
    placed = sum(1 for body in harness.writer.objects.values() if (body.get("status") or {}).get("placement"))
    profiler = cProfile.Profile() if profile is not None else None
    cpus: list[float] = []
    counts: list[int] = []
    writes: list[int] = []
    for _ in range(ticks):
        if profiler is not None:
            profiler.enable()
        cpu, reconciles, wrote = await harness.tick()
        if profiler is not None:
            profiler.disable()
        cpus.append(cpu)
        counts.append(reconciles)
        writes.append(wrote)
    rss, hwm = _rss_mb()
    result: dict[str, Any] = {
        "workloads": workloads,
        "traffic": traffic,
        "history": history,
        "placed": placed,
        "settle_ticks": len(settle),
        "settle_cpu_seconds": [round(c, 3) for c in settle],
        "tick_cpu_seconds": [round(c, 3) for c in cpus],
        "tick_cpu_mean": round(statistics.fmean(cpus), 3),
        "reconciles_per_tick": counts,
        "status_writes_per_tick": writes,
        "cpu_ms_per_reconcile": round(1000 * sum(cpus) / max(1, sum(counts)), 3),
        "cpu_ms_per_workload": round(1000 * statistics.fmean(cpus) / workloads, 4),
        "rss_mb": round(rss, 1),
        "rss_peak_mb": round(hwm, 1),
    }
    if trace_memory:
        gc.collect()
        snapshot = tracemalloc.take_snapshot()
        current, peak = tracemalloc.get_traced_memory()
        result["traced_mb"] = round(current / 2**20, 1)
        result["traced_peak_mb"] = round(peak / 2**20, 1)
        result["traced_kb_per_workload"] = round(current / 1024 / workloads, 2)
        result["traced_top"] = [str(s) for s in snapshot.statistics("lineno")[:20]]
        tracemalloc.stop()
    if profiler is not None and profile is not None:
        profiler.dump_stats(str(profile))
    del harness
    gc.collect()
    return result


class Traffic(enum.StrEnum):
    """``--traffic``: the same rate every step, or noise that changes every workload's window each tick."""

    STEADY = "steady"
    NOISY = "noisy"


class History(enum.StrEnum):
    """``--history``: the day of history still being read back, or complete."""

    FILLING = "filling"
    COMPLETE = "complete"


app = typer.Typer(add_completion=False, help=__doc__, rich_markup_mode=None)


@app.command()
def tick_cost(
    workloads: Annotated[str, typer.Option(help="comma-separated fleet sizes")] = "1000",
    ticks: Annotated[int, typer.Option(help="measured ticks after settling")] = 3,
    traffic: Annotated[Traffic, typer.Option(help="steady or noisy per-workload traffic")] = Traffic.NOISY,
    history: Annotated[History, typer.Option(help="the day of history still filling or complete")] = History.COMPLETE,
    profile: Annotated[Optional[Path], typer.Option(help="cProfile of the measured ticks (pstats file)")] = None,
    top: Annotated[int, typer.Option(help="profile lines printed")] = 25,
    trace_memory: Annotated[
        bool, typer.Option("--tracemalloc", help="what is kept at the end (traced from the start)")
    ] = False,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="append the results here (a JSON list)")] = None,
) -> None:
    """Per-tick CPU and memory of the fleet loop on synthetic workloads (module docstring)."""
    results = []
    for size in (int(s) for s in workloads.split(",")):
        result = asyncio.run(
            measure(
                size,
                ticks=ticks,
                traffic=traffic.value,
                history=history.value,
                profile=profile,
                trace_memory=trace_memory,
            )
        )
        results.append(result)
        print(json.dumps(result), flush=True)
        if profile is not None:
            stats = pstats.Stats(str(profile), stream=sys.stdout)
            stats.sort_stats("tottime").print_stats(top)
            stats.sort_stats("cumulative").print_stats(top)
    if json_out is not None:
        previous = json.loads(json_out.read_text()) if json_out.exists() else []
        json_out.write_text(json.dumps([*previous, *results], indent=2) + "\n")


def main() -> None:
    run_app(app, "tick_cost")


if __name__ == "__main__":
    main()
