"""One benchmark run per fleet size: create, backfill, start, settle, measure steady ticks, shift traffic, clean up.

Per size N (``RunResult``):
  rss_mb            operator resident set at the end of the steady ticks (/proc VmRSS; ``rss_peak_mb`` = VmHWM)
  tick_cpu_seconds  mean of the operator's ``inference_placement_tick_cpu_seconds`` over the steady ticks (CPU of
                    the whole process while one full tick ran: one metrics fetch + a reconcile of every workload)
  queries_per_tick  the operator's ``inference_placement_metrics_queries_per_tick`` (checked against the range
                    queries the switch forwarded per tick)
  writes_per_tick   apiserver writes (``inference_placement_apiserver_writes_total``, every kind) over the steady
                    ticks / ticks; steady = every workload placed with a decision recorded, plus one settle tick
  steady_reconciles, steady_full_collections  per steady tick: workloads reconciled, and the cyclic collector's full
                    collections (``python_gc_collections_total{generation="2"}``), between the scrape that saw the
                    tick end and the one before (what tells a long tick's cause); steady_reconcile_causes: those
                    reconciles by cause (``inference_placement_reconciles_total{cause}``)
  react_seconds     from the flip of the traffic switch (low -> high traffic for every workload) until the watch has
                    seen every workload's new decision in status (includes waiting for the next tick)

With ``replicas`` 2 (``--replicas 2``) two operator processes run with leader election (on by default): the figures
above are the leader's (the replica whose ``inference_placement_leader`` is 1), and ``standby_*`` are the other's:
its RSS at the end of the steady ticks and its CPU-seconds per minute over them.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from inference_placement.controller.memory_report import REPORT_PREFIX
from inference_placement.devtools.kwok import KwokFleet, create_fleet, delete_fleet, fleet_plan
from inference_placement.devtools.processes import free_port
from inference_placement.devtools.prometheus import (
    PrometheusServer,
    Switch,
    backfill,
    find_binaries,
    start_prometheus,
)
from inference_placement.devtools.scale.cluster import BenchCluster
from inference_placement.devtools.scale.openmetrics import (
    HISTORY_SAMPLE_SECONDS,
    SAMPLE_INTERVAL_SECONDS,
    Traffic,
    iter_chunk_files,
)
from inference_placement.devtools.scale.operator import OperatorMetrics, OperatorProcess

__all__ = [
    "BenchConfig",
    "RunResult",
    "run_bench",
    "run_one",
    "BenchError",
    "DAY_SECONDS",
    "FILL_TICKS",
    "HISTORY_SECONDS",
    "default_future_seconds",
]

_TRACEMALLOC_FRAMES = 1
"""Frames kept per traced allocation with ``trace_memory`` (the report groups by the allocating line)."""

_RECENT_SECONDS = 900
"""Before "now", the service time's ``_sum``/``_count`` (latest-only: read within ``max_staleness_seconds``)."""
HISTORY_SECONDS = 1800 + 300
"""Backfilled before "now" at 15 s: the operator's default 30-minute window plus the rate window and a margin."""
FILL_TICKS = 24
"""Ticks after which the day of history is in whatever the queries say (a day at 300 s in spans of 15 points: the
first fetch and 19 more)."""
DAY_SECONDS = 86400 + 600
"""Backfilled before that at 150 s: the day of request-rate and SLO-miss history the source keeps (300 s steps)."""


@dataclass(frozen=True)
class BenchConfig:
    kubeconfig: str | None = None
    tick_seconds: float = 30.0
    steady_ticks: int = 3
    low_rps: int = 1
    high_rps: int = 200
    future_seconds: float | None = None
    """Backfilled data after "now" (the whole run must end before it); None = ``default_future_seconds``."""
    create_concurrency: int = 32
    workdir: Path | None = None
    operator_command: list[str] | None = None
    """How to start the operator (default: this interpreter, ``-m inference_placement.devtools.scale.as_deployed``:
    the command line with only the image's packages importable, so RSS is the deployed operator's)."""
    operator_extra: tuple[str, ...] = ()
    keep_namespace: bool = False
    wait_history: bool = True
    """Measure the steady ticks once the day of history is in (the source asks for one older span per tick for
    ~20 ticks after a start, two more queries each: those ticks are reported apart as ``filling_*``)."""
    kwok_nodes: int = 0
    """Create this many fake GPU nodes (``devtools/kwok.py``; kwok must run: ``local-cluster.sh up --kwok``) and give
    the workloads GPUs (``GPU_MIX``); 0: CPU-only workloads on whatever nodes the cluster has."""
    deployments_up_to: int = 0
    """Sizes up to this run the real cluster target (Deployments, Pods scheduled onto the fake nodes and kept Running
    by kwok); larger sizes ``cluster.dryRun``. Needs ``kwok_nodes``."""
    replicas: int = 1
    """Operator processes (leader election decides which acts); 2: the standby's RSS and CPU are reported too."""
    trace_memory: bool = False
    """Start the operators with allocation tracing (``PYTHONTRACEMALLOC``) and record the leader's
    ``memory_report`` at the end of the steady ticks (``RunResult.memory_report``); CPU figures of such a run are
    inflated by the tracing."""
    wait_cleanup: bool = True
    """Wait until the namespace (and every workload in it) is gone before the next size; else only request it."""
    log: Callable[[str], None] = print


@dataclass
class RunResult:
    workloads: int
    rss_mb: float
    tick_cpu_seconds: float
    queries_per_tick: float
    writes_per_tick: float
    react_seconds: float
    # details
    rss_peak_mb: float = 0.0
    tick_cpu_seconds_max: float = 0.0
    tick_wall_seconds: float = 0.0
    process_cpu_seconds_per_tick: float = 0.0
    switch_queries_per_tick: float = 0.0
    steady_ticks: int = 0
    memory_report: dict[str, Any] | None = None
    """With ``trace_memory``: the leader's ``controller.memory_report.memory_report()`` after the steady ticks."""
    standby_memory_report: dict[str, Any] | None = None
    """With ``trace_memory`` and a standby: the same report of the (first) standby, right after the leader's."""
    steady_reconciles: list[float] = field(default_factory=list)
    steady_full_collections: list[float] = field(default_factory=list)
    steady_reconcile_causes: list[dict[str, float]] = field(default_factory=list)
    writes_by_kind: dict[str, float] = field(default_factory=dict)
    reaction_writes: float = 0.0
    create_seconds: float = 0.0
    settle_seconds: float = 0.0
    tick_seconds: float = 0.0
    cluster_mode: str = "dryRun"
    """``dryRun`` (decisions recorded, no Deployment) or ``deployments`` (the real cluster target on KWOK nodes)."""
    kwok_nodes: int = 0
    pods_running: int = 0
    """Deployments mode: Pods Running and Ready at the end of the steady ticks (one per workload expected)."""
    pods_nodes: int = 0
    """... on this many distinct (fake) nodes."""
    history_seconds: int = 0
    filling_ticks: int = 0
    """Ticks after settling while the source still filled the day of history (``wait_history``)."""
    filling_tick_cpu_seconds: float = 0.0
    filling_tick_cpu_seconds_max: float = 0.0
    filling_queries_per_tick: float = 0.0
    backfill_seconds: float = 0.0
    """Writing the OpenMetrics files and promtool's backfill of both servers (they run side by side)."""
    backfill_samples: int = 0
    replicas: int = 1
    standby_rss_mb: float = 0.0
    """With 2 replicas: the standby's resident set at the end of the steady ticks (``standby_rss_peak_mb``: VmHWM)."""
    standby_rss_peak_mb: float = 0.0
    standby_cpu_seconds_per_minute: float = 0.0
    """... its CPU-seconds (user + system, /proc) per minute over the steady ticks."""
    standby_workloads: float = 0.0
    """... the workloads its cache held (``inference_placement_workloads``)."""
    leader_transitions: float = 0.0
    """Times any replica became the leader during the run (1: no failover)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class BenchError(RuntimeError):
    pass


def default_future_seconds(n: int, config: BenchConfig) -> float:
    """Data after "now" for a run of ``n``: the backfill itself (~0.01-0.02 s per workload), settling (~0.06 s per
    workload at 10,000), the ticks that fill the day of history, the steady ticks and the shift, with a margin (ticks
    at 10,000 can take longer than the tick period on a loaded machine)."""
    ticks = (FILL_TICKS if config.wait_history else 2) + config.steady_ticks + 4
    return 900 + 0.3 * n + 1.5 * ticks * config.tick_seconds


def _settled(obj: Mapping[str, Any]) -> bool:
    status = obj.get("status") or {}
    return status.get("placement") == "cluster" and not status.get("migration") and bool(status.get("lastDecision"))


def _replicas(obj: Mapping[str, Any]) -> int | None:
    decision = (obj.get("status") or {}).get("lastDecision") or {}
    value = decision.get("replicas")
    return int(value) if value is not None else None


def _spread(rps: int) -> Callable[[int], int]:
    """Requests/s of workload ``i``: ``rps`` plus 0-10 % (three levels), so the series are not all identical."""
    return lambda i: rps + (i % 3) * max(1, rps // 20)


async def _wait_scrape(
    op: OperatorProcess, predicate: Callable[[OperatorMetrics], bool], *, timeout: float, interval: float, what: str
) -> OperatorMetrics:
    deadline = time.monotonic() + timeout
    last: OperatorMetrics | None = None
    while time.monotonic() < deadline:
        if not op.alive():
            raise BenchError(f"operator exited while waiting for {what}:\n{op.log_tail()}")
        last = op.scrape()
        if last is not None and predicate(last):
            return last
        await asyncio.sleep(interval)
    raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}; last scrape {last}")


async def _wait_leader(ops: list[OperatorProcess], *, timeout: float, interval: float) -> OperatorProcess:
    """The replica that reports itself the leader (``inference_placement_leader`` 1; the only one with one replica)."""
    if len(ops) == 1:
        return ops[0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for each in ops:
            if not each.alive():
                raise BenchError(f"operator PID {each.pid} exited before a leader was elected:\n{each.log_tail()}")
        leaders = [o for o in ops if (m := o.scrape()) is not None and m.leader == 1]
        if len(leaders) == 1:
            return leaders[0]
        await asyncio.sleep(interval)
    raise BenchError(f"no single leader among {len(ops)} replicas after {timeout:.0f}s")


async def run_one(  # noqa: C901 - issue 23 item 2
    n: int, config: BenchConfig, cluster: BenchCluster, root: Path, fleet: KwokFleet | None = None
) -> RunResult:
    log = config.log
    namespace = f"scale-{n}-{uuid.uuid4().hex[:6]}"
    names = [f"w{i:05d}" for i in range(n)]
    directory = root / namespace
    directory.mkdir(parents=True)
    servers: list[PrometheusServer] = []
    switch: Switch | None = None
    ops: list[OperatorProcess] = []
    scrape_every = max(1.0, min(5.0, config.tick_seconds / 4))
    try:
        # ---------------------------------------------------------------- workloads on the apiserver
        await cluster.create_namespace(namespace)
        started = time.monotonic()
        await cluster.create_workloads(namespace, names, concurrency=config.create_concurrency, gpus=fleet is not None)
        deployments = fleet is not None and n <= config.deployments_up_to
        create_seconds = time.monotonic() - started
        log(f"[{n}] {n} workloads created in {namespace} in {create_seconds:.1f}s")

        # ---------------------------------------------------------------- Prometheus: low and high traffic
        prometheus, promtool = find_binaries()
        now = int(time.time())
        anchor = now - now % SAMPLE_INTERVAL_SECONDS
        future = config.future_seconds if config.future_seconds is not None else default_future_seconds(n, config)
        start = anchor - HISTORY_SECONDS
        history_from = (start - DAY_SECONDS) // HISTORY_SAMPLE_SECONDS * HISTORY_SAMPLE_SECONDS
        end = anchor + int(future) - int(future) % SAMPLE_INTERVAL_SECONDS
        data_end_mono = time.monotonic() + (end - now)
        started = time.monotonic()

        sample_counts: list[int] = []

        async def serve(label: str, rps: int) -> PrometheusServer:
            # the day of history only where the run starts: after the shift the source asks only for new points
            traffic = Traffic(
                namespace,
                names,
                _spread(rps),
                start,
                end,
                history_from if label == "low" else None,
                recent_from=anchor - _RECENT_SECONDS,
            )
            tsdb = directory / label / "tsdb"
            tsdb.mkdir(parents=True, exist_ok=True)
            # one file per 2-hour block and slice of the fleet, each parsed once by promtool (openmetrics.py); the
            # next file is written while promtool reads the last, which it then removes
            chunks = iter_chunk_files(directory / label, traffic)
            samples = 0
            pending: asyncio.Future[None] | None = None
            try:
                while (item := await asyncio.to_thread(next, chunks, None)) is not None:
                    if pending is not None:
                        await pending
                    path, count = item
                    samples += count
                    pending = asyncio.ensure_future(
                        asyncio.to_thread(backfill, promtool, path, tsdb, timeout_seconds=1800)
                    )
            finally:
                if pending is not None:
                    await pending
            sample_counts.append(samples)
            started_server = await asyncio.to_thread(start_prometheus, prometheus, directory / label)
            log(f"[{n}] {label}-traffic Prometheus: {samples:,} samples backfilled, serving at {started_server.url}")
            return started_server

        # both backfills at once (promtool is single-threaded); a failure stops the one that did start
        made = await asyncio.gather(
            serve("low", config.low_rps), serve("high", config.high_rps), return_exceptions=True
        )
        servers.extend(m for m in made if isinstance(m, PrometheusServer))
        for m in made:
            if isinstance(m, BaseException):
                raise m
        switch = Switch([s.url for s in servers])
        backfill_seconds = time.monotonic() - started
        log(f"[{n}] metrics ready in {backfill_seconds:.1f}s; data until {end - now}s from now")

        # ---------------------------------------------------------------- the operator(s), until settled
        for replica in range(config.replicas):
            ops.append(
                OperatorProcess.start(
                    kubeconfig=config.kubeconfig,
                    namespace=namespace,
                    prometheus_url=switch.url,
                    metrics_port=free_port(),
                    tick_seconds=config.tick_seconds,
                    log_path=directory / ("operator.log" if config.replicas == 1 else f"operator-{replica}.log"),
                    extra=list(config.operator_extra),
                    python=config.operator_command,
                    dry_run=not deployments,
                    env={"PYTHONTRACEMALLOC": str(_TRACEMALLOC_FRAMES)} if config.trace_memory else None,
                )
            )
        started = time.monotonic()
        settle_timeout = 300 + 0.2 * n + 4 * config.tick_seconds
        op = await _wait_leader(ops, timeout=120 + 0.02 * n, interval=scrape_every)
        standbys = [o for o in ops if o is not op]
        if standbys:
            log(f"[{n}] {len(ops)} replicas; the leader is PID {op.pid}, standby PID(s) {[o.pid for o in standbys]}")
        await _wait_scrape(
            op, lambda m: m.workloads >= n, timeout=settle_timeout, interval=scrape_every, what=f"{n} workloads seen"
        )
        pending = set(names)
        poll = max(1.0, n / 1000)
        while pending:
            if time.monotonic() - started > settle_timeout:
                raise BenchError(f"{len(pending)} workloads not settled after {settle_timeout:.0f}s")
            if not op.alive():
                raise BenchError(f"operator exited while settling:\n{op.log_tail()}")
            items, _ = await cluster.list_workloads(namespace)
            pending = {o["metadata"]["name"] for o in items if not _settled(o)} | (
                set(names) - {o["metadata"]["name"] for o in items}
            )
            if pending:
                await asyncio.sleep(poll)
        settle_seconds = time.monotonic() - started
        log(f"[{n}] all placed with a decision {settle_seconds:.1f}s after the operator started")

        # ---------------------------------------------------------------- steady ticks
        first = await _wait_scrape(op, lambda m: True, timeout=30, interval=1, what="metrics")
        base = await _wait_scrape(
            op,
            # +2: the tick running when the fleet settled may have started before it; the next one is a full tick
            lambda m: m.ticks >= first.ticks + 2,
            timeout=120 + 6 * config.tick_seconds + 0.06 * n,
            interval=scrape_every,
            what="a settle tick",
        )
        filling_cpu: list[float] = []
        filling_queries = 0.0
        if config.wait_history:
            # the ticks that still fill the day of history ask two more queries than a steady one: wait for the
            # drop, or until the operator has ticked past the fill (FILL_TICKS after its first fetch)
            most = base.queries_per_tick
            seen = base.ticks
            while not base.queries_per_tick < most and base.ticks < FILL_TICKS:
                await asyncio.sleep(scrape_every)
                scraped = op.scrape()
                if scraped is None:
                    if not op.alive():
                        raise BenchError(f"operator exited while the history filled:\n{op.log_tail()}")
                    continue
                if scraped.ticks > seen:
                    seen = scraped.ticks
                    if scraped.queries_per_tick >= most:
                        most = scraped.queries_per_tick
                        filling_cpu.append(scraped.tick_cpu_seconds)
                        filling_queries = most
                    base = scraped
            log(
                f"[{n}] history in after {len(filling_cpu)} more ticks ({filling_queries:g} queries, tick CPU "
                f"mean {sum(filling_cpu) / max(1, len(filling_cpu)):.2f} s); steady ticks from here"
            )
        cpu0, queries0, t0 = op.cpu_seconds(), switch.range_queries, time.monotonic()
        standby_cpu0 = [o.cpu_seconds() for o in standbys]
        seen_ticks = base.ticks
        tick_cpu: list[float] = []
        tick_wall: list[float] = []
        queries: list[float] = []
        reconciles: list[float] = []
        collections: list[float] = []
        causes: list[dict[str, float]] = []
        last = base
        while last.ticks < base.ticks + config.steady_ticks:
            if time.monotonic() - t0 > config.steady_ticks * (config.tick_seconds + 60 + 0.03 * n) + 60:
                raise BenchError("steady ticks take too long")
            await asyncio.sleep(scrape_every)
            scraped = op.scrape()
            if scraped is None:
                if not op.alive():
                    raise BenchError(f"operator exited during steady ticks:\n{op.log_tail()}")
                continue
            previous, last = last, scraped
            if last.ticks > seen_ticks:
                seen_ticks = last.ticks
                reconciles.append(last.reconciles - previous.reconciles)
                collections.append(last.full_collections - previous.full_collections)
                causes.append(last.causes_since(previous))
                tick_cpu.append(last.tick_cpu_seconds)
                tick_wall.append(last.tick_duration_seconds)
                queries.append(last.queries_per_tick)
        ticks = last.ticks - base.ticks
        rss, peak = op.rss_mb()
        if standbys and last.leader != 1:
            raise BenchError(f"the leader PID {op.pid} lost the Lease during the steady ticks:\n{op.log_tail()}")
        standby_rss, standby_peak, standby_cpu_per_minute, standby_workloads = 0.0, 0.0, 0.0, 0.0
        if standbys:
            standby = standbys[0]
            minutes = (time.monotonic() - t0) / 60.0
            standby_rss, standby_peak = standby.rss_mb()
            standby_cpu_per_minute = (standby.cpu_seconds() - standby_cpu0[0]) / minutes
            standby_scrape = standby.scrape()
            if standby_scrape is not None:
                if standby_scrape.leader:
                    raise BenchError(f"the standby PID {standby.pid} became the leader during the steady ticks")
                standby_workloads = standby_scrape.workloads
            log(
                f"[{n}] standby: RSS {standby_rss:.0f} MB (peak {standby_peak:.0f}), "
                f"{standby_cpu_per_minute:.2f} CPU-s per minute, {standby_workloads:g} workloads cached"
            )
        pods_running, pods_nodes = await cluster.running_pods(namespace) if deployments else (0, 0)
        cpu_per_tick = (op.cpu_seconds() - cpu0) / ticks
        switch_queries = (switch.range_queries - queries0) / ticks
        writes = {k: last.writes.get(k, 0.0) - base.writes.get(k, 0.0) for k in set(last.writes) | set(base.writes)}
        writes_per_tick = sum(writes.values()) / ticks
        log(
            f"[{n}] steady over {ticks:.0f} ticks: tick CPU {tick_cpu}, RSS {rss:.0f} MB, "
            f"writes/tick {writes_per_tick:g}, queries/tick {queries}, reconciles {reconciles} by cause {causes}, "
            f"full collections {collections}"
            + (f", {pods_running} Pods Running on {pods_nodes} fake nodes" if deployments else "")
        )

        memory = await _memory_report(op, timeout=120 + 0.05 * n) if config.trace_memory else None
        standby_memory = (
            await _memory_report(standbys[0], timeout=120 + 0.05 * n) if config.trace_memory and standbys else None
        )
        for role, report in (("leader", memory), ("standby", standby_memory)):
            if report is not None:
                log(f"[{n}] {role}: traced heap {report['traced_mb']} MB (peak {report['traced_peak_mb']}); largest:")
                for site in report["top"][:12]:
                    log(f"    {site['mb']:8.2f} MB  {site['count']:>9,}  {site['site']}")

        # ---------------------------------------------------------------- fleet-wide traffic shift
        if time.monotonic() + 60 + 3 * (config.tick_seconds + max(tick_wall, default=0.0)) > data_end_mono:
            raise BenchError("the backfilled data ends too soon for the traffic shift: raise --future-seconds")
        items, resource_version = await cluster.list_workloads(namespace)
        before = {o["metadata"]["name"]: _replicas(o) for o in items}
        before_shift = op.scrape() or last
        pending = set(names)
        switch.flip(1)
        flipped = time.monotonic()
        done_at = await cluster.watch_until(
            namespace,
            resource_version,
            lambda o: _replicas(o) != before.get(o["metadata"]["name"]),
            pending,
            timeout=settle_timeout,
        )
        if done_at is None:
            items, _ = await cluster.list_workloads(namespace)
            still = {o["metadata"]["name"] for o in items if _replicas(o) == before.get(o["metadata"]["name"])}
            if still:
                raise BenchError(f"{len(still)} workloads kept their decision after the traffic shift")
            done_at = time.monotonic()
        react = done_at - flipped
        after_shift = op.scrape() or before_shift
        scrapes = [o.scrape() for o in ops]
        transitions = sum(each.leader_transitions for each in scrapes if each is not None)
        log(f"[{n}] every decision changed and recorded {react:.1f}s after the traffic shift")

        return RunResult(
            workloads=n,
            rss_mb=round(rss, 1),
            tick_cpu_seconds=round(sum(tick_cpu) / len(tick_cpu), 3) if tick_cpu else float("nan"),
            queries_per_tick=queries[-1] if queries else last.queries_per_tick,
            writes_per_tick=round(writes_per_tick, 3),
            react_seconds=round(react, 2),
            rss_peak_mb=round(peak, 1),
            tick_cpu_seconds_max=round(max(tick_cpu), 3) if tick_cpu else float("nan"),
            tick_wall_seconds=round(sum(tick_wall) / len(tick_wall), 3) if tick_wall else float("nan"),
            process_cpu_seconds_per_tick=round(cpu_per_tick, 3),
            switch_queries_per_tick=round(switch_queries, 2),
            steady_ticks=int(ticks),
            memory_report=memory,
            standby_memory_report=standby_memory,
            steady_reconciles=reconciles,
            steady_full_collections=collections,
            steady_reconcile_causes=causes,
            writes_by_kind={k: v for k, v in sorted(writes.items()) if v},
            reaction_writes=after_shift.total_writes - before_shift.total_writes,
            create_seconds=round(create_seconds, 1),
            settle_seconds=round(settle_seconds, 1),
            tick_seconds=config.tick_seconds,
            cluster_mode="deployments" if deployments else "dryRun",
            kwok_nodes=len(fleet.names) if fleet is not None else 0,
            pods_running=pods_running,
            pods_nodes=pods_nodes,
            history_seconds=anchor - history_from,
            filling_ticks=len(filling_cpu),
            filling_tick_cpu_seconds=round(sum(filling_cpu) / len(filling_cpu), 3) if filling_cpu else 0.0,
            filling_tick_cpu_seconds_max=round(max(filling_cpu), 3) if filling_cpu else 0.0,
            filling_queries_per_tick=filling_queries,
            backfill_seconds=round(backfill_seconds, 1),
            backfill_samples=sum(sample_counts),
            replicas=config.replicas,
            standby_rss_mb=round(standby_rss, 1),
            standby_rss_peak_mb=round(standby_peak, 1),
            standby_cpu_seconds_per_minute=round(standby_cpu_per_minute, 3),
            standby_workloads=standby_workloads,
            leader_transitions=transitions,
        )
    finally:
        for each in ops:
            each.stop()
        if switch is not None:
            switch.close()
        for server in servers:
            server.stop()
        if not config.keep_namespace:
            if fleet is not None:
                try:
                    await cluster.remove_pods(namespace)
                except Exception as err:  # clean-up goes on: the namespace and the fleet still go
                    log(f"[{n}] could not remove the Pods of {namespace} first: {err!r}")
            wait = 120 + 0.06 * n if config.wait_cleanup else 0.0
            gone = await cluster.delete_namespace(namespace, wait_seconds=wait)
            log(f"[{n}] namespace {namespace} {'deleted' if wait and gone else 'deletion requested'}")
        shutil.rmtree(directory / "low" / "tsdb", ignore_errors=True)
        shutil.rmtree(directory / "high" / "tsdb", ignore_errors=True)


async def run_bench(
    sizes: list[int], config: BenchConfig, on_result: Callable[[list[RunResult]], None] | None = None
) -> list[RunResult]:
    """Run each size in turn; ``on_result`` gets the results so far after each (a partial JSON survives a crash)."""
    if config.deployments_up_to and not config.kwok_nodes:
        raise BenchError("real Deployments (--deployments-up-to) need a KWOK fleet (--kwok-nodes)")
    cluster = await BenchCluster.connect(config.kubeconfig)
    root = config.workdir or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    fleet: KwokFleet | None = None
    try:
        if not await cluster.crd_established():
            raise BenchError(
                "the InferenceWorkload CRD is not installed: kubectl apply -f crds/inferenceworkloads.yaml"
            )
        if config.kwok_nodes:
            # kwok makes ~1-10 nodes Ready per second here, depending on the load
            fleet = await create_fleet(
                cluster.api, fleet_plan(config.kwok_nodes), ready_timeout=120 + 2.0 * config.kwok_nodes
            )
            config.log(
                f"KWOK fleet {fleet.fleet}: {len(fleet.names)} fake GPU nodes "
                f"({', '.join(f'{k} {len(v)}' for k, v in fleet.pools.items())}; {fleet.capacity()}) "
                f"Ready in {fleet.ready_seconds:.1f}s"
            )
        elif not await cluster.ready_nodes():
            raise BenchError(
                "no Ready node: the operator's capacity check would place nothing (e2e/local-cluster.sh up --with-node)"
            )
        results: list[RunResult] = []
        for n in sizes:
            results.append(await run_one(n, config, cluster, root, fleet))
            if on_result is not None:
                on_result(results)
        return results
    finally:
        if fleet is not None:
            await delete_fleet(cluster.api, fleet)
        await cluster.close()


async def _memory_report(op: OperatorProcess, timeout: float) -> dict[str, Any]:
    """The operator's ``memory_report``: SIGUSR2, then its log line (``controller/memory_report.py``)."""
    seen = op.log_path.read_bytes().count(REPORT_PREFIX.encode())
    os.kill(op.pid, signal.SIGUSR2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        lines = [line for line in op.log_path.read_text(errors="replace").splitlines() if REPORT_PREFIX in line]
        if len(lines) > seen:
            report: dict[str, Any] = json.loads(lines[-1].split(REPORT_PREFIX, 1)[1])
            return report
    raise BenchError(f"no memory report from PID {op.pid} within {timeout:.0f} s (traced?):\n{op.log_tail()}")
