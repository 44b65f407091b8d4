"""The fleet: a plain dict of workloads filled by kopf's event stream, and ONE loop that reconciles them.

This is the shape measured to scale (DOMAIN.md, "kopf at fleet scale"): no per-object timers, daemons or change
handlers (which cost ~3x the memory and write an annotation and a finalizer on every object). The loop
  - every ``tick_seconds``: one batched metrics fetch for all workloads, then a reconcile of each;
  - in between: reconciles promptly whatever changed (spec edits, deletions) and whatever is mid-migration.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp

from inference_placement.controller.reconciler import Reconciler, TickInputs
from inference_placement.controller.router_sync import RouterSync
from inference_placement.controller.telemetry import Telemetry
from inference_placement.metrics.source import MetricsSnapshot, MetricsSource, WorkloadKey
from inference_placement.policy.capacity import ClusterCapacity
from inference_placement.policy.decide import TrafficWindow
from inference_placement.policy.price_book import PriceBook

__all__ = ["Fleet", "FleetStats"]

log = logging.getLogger(__name__)

ACTIVE_RECONCILE_SECONDS = 2.0
"""How often a workload with something in flight (migration, provisioning) is revisited between ticks."""


RESYNC_TICKS = 10
"""A workload whose inputs did not change is still reconciled every this many ticks (staggered by name), so what
depends on the clock alone (a cooldown ending, a month turning, a slow drift inside the fingerprint's rounding)
is seen within ``RESYNC_TICKS x tick_seconds``."""


@dataclass
class FleetStats:
    ticks: int = 0
    reconciles: int = 0
    skipped_unchanged: int = 0
    """Workloads the last full tick did not reconcile: nothing they depend on had changed."""
    reconcile_errors: int = 0
    last_tick_seconds: float = 0.0
    last_metrics_queries: int = 0
    last_tick_at: datetime | None = None


@dataclass
class _Entry:
    body: dict[str, Any]
    generation: int
    resource_version: str
    inputs: tuple[Any, ...] | None = None
    """Fingerprint of everything the last successful reconcile read (None: reconcile at the next tick)."""


@dataclass
class Fleet:
    reconciler: Reconciler
    metrics: MetricsSource
    price_book: Callable[[], PriceBook]
    capacity: Callable[[], ClusterCapacity] = ClusterCapacity
    capacity_verdict: Callable[[Mapping[str, Any]], tuple[bool, str] | None] = lambda body: None
    tick_seconds: float = 30.0
    debounce_seconds: float = 0.5
    reconcile_concurrency: int = 32
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    skip_unchanged: bool = True
    """Full ticks reconcile only workloads whose inputs changed (plus a staggered resync, ``RESYNC_TICKS``)."""
    stats: FleetStats = field(default_factory=FleetStats)
    telemetry: Telemetry | None = None
    router: RouterSync | None = None
    """The stable endpoints' router; None = routing is not managed by this operator (no traffic gating)."""

    def __post_init__(self) -> None:
        self._workloads: dict[WorkloadKey, _Entry] = {}
        self._dirty: set[WorkloadKey] = set()
        self._active: set[WorkloadKey] = set()
        self._wake = asyncio.Event()
        self._snapshot = MetricsSnapshot(problem="no metrics fetched yet")
        self._stopping = False

    # ------------------------------------------------------------------ fed by kopf's event handler

    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        key = WorkloadKey(meta.get("namespace", "default"), meta.get("name", ""))
        if event_type == "DELETED":
            self._workloads.pop(key, None)
            if self.router is not None:
                self.router.forget(key)
            if self.reconciler.pinger is not None:
                self.reconciler.pinger.plan(key, None)
            if self.telemetry is not None:
                self.telemetry.forget_workload(key.namespace, key.name)
            self._dirty.discard(key)
            self._active.discard(key)
            return
        generation = int(meta.get("generation") or 0)
        previous = self._workloads.get(key)
        self._store(key, body)
        changed = (
            previous is None
            or previous.generation != generation
            or (
                meta.get("deletionTimestamp") is not None and previous.body["metadata"].get("deletionTimestamp") is None
            )
        )
        if changed:
            self._dirty.add(key)
            self._wake.set()

    def _store(self, key: WorkloadKey, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        rv = str(meta.get("resourceVersion", ""))
        previous = self._workloads.get(key)
        if previous is not None and _rv_older(rv, previous.resource_version):
            return  # a late watch event must not undo what we already know from our own write
        self._workloads[key] = _Entry(
            body={k: copy.deepcopy(v) for k, v in body.items()},
            generation=int(meta.get("generation") or 0),
            resource_version=rv,
        )
        if self.router is not None:
            self.router.observe(key, body)

    def __len__(self) -> int:
        return len(self._workloads)

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    # ------------------------------------------------------------------ the one loop

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while not self._stopping:
            now_mono = loop.time()
            if now_mono >= next_tick:
                try:
                    await self.tick()
                except Exception:  # the loop is the operator: it must outlive any one tick
                    log.exception("fleet tick failed; the next one runs on schedule")
                next_tick = loop.time() + self.tick_seconds
                continue
            timeout = min(next_tick - now_mono, ACTIVE_RECONCILE_SECONDS if self._active else self.tick_seconds)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)
                await asyncio.sleep(self.debounce_seconds)  # let a burst of edits settle
            except TimeoutError:
                pass
            self._wake.clear()
            keys = self._dirty | self._active
            self._dirty.clear()
            if keys:
                await self._reconcile_keys(keys)

    async def tick(self) -> None:
        """One full tick: fetch metrics for every workload in one batch, then reconcile all of them."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        cpu_started = time.process_time()
        keys = list(self._workloads)
        now = self.clock()
        try:
            self._snapshot = await self.metrics.fetch(keys, now)
        except Exception as err:  # a broken metrics source freezes placement; it never stops the loop
            log.exception("metrics fetch failed")
            self._snapshot = MetricsSnapshot(problem=f"metrics source error: {type(err).__name__}")
        self.stats.last_metrics_queries = self._snapshot.queries
        if self.telemetry is not None:
            self.telemetry.metrics_queries.set(self._snapshot.queries)
            if self._snapshot.problem is None and self._snapshot.windows:
                self.telemetry.metrics_fresh.set(now.timestamp())
        self._dirty.clear()
        await self._reconcile_keys(set(keys), full_tick=True)
        self.stats.ticks += 1
        self.stats.last_tick_seconds = loop.time() - started
        self.stats.last_tick_at = now
        if self.telemetry is not None:
            self.telemetry.tick_duration.set(self.stats.last_tick_seconds)
            self.telemetry.tick_cpu.set(time.process_time() - cpu_started)
            self.telemetry.ticks.inc()
            self.telemetry.workloads.set(len(self._workloads))

    async def reconcile_now(self, keys: set[WorkloadKey] | None = None) -> None:
        """Reconcile the given workloads (all when None) with the last metrics snapshot. For tests and tools."""
        await self._reconcile_keys(set(self._workloads) if keys is None else keys)

    async def _reconcile_keys(self, keys: set[WorkloadKey], *, full_tick: bool = False) -> None:
        price_book = self.price_book()
        capacity = self.capacity()
        now = self.clock()
        slots = asyncio.Semaphore(self.reconcile_concurrency)
        shared = (id(price_book), hash(repr(capacity)))
        skipped = 0

        async def one(key: WorkloadKey) -> None:
            nonlocal skipped
            entry = self._workloads.get(key)
            if entry is None:
                return
            window = self._snapshot.windows.get(key)
            problem = self._snapshot.problem_for(key)
            verdict = self.capacity_verdict(entry.body)
            routed = self.router.confirmed(key) if self.router is not None else None
            fingerprint = (shared, _window_fingerprint(window), problem, verdict, _weights(routed))
            if (
                full_tick
                and self.skip_unchanged
                and key not in self._active
                and entry.inputs == (entry.resource_version, fingerprint)
                and not _resync_due(key, self.stats.ticks)
            ):
                skipped += 1
                return
            inputs = TickInputs(
                now=now,
                price_book=price_book,
                capacity=capacity,
                window=window,
                metrics_problem=problem,
                capacity_verdict=verdict,
                router_enabled=self.router is not None,
                router_weights=routed,
            )
            async with slots:
                started = asyncio.get_running_loop().time()
                try:
                    result = await self.reconciler.reconcile(entry.body, inputs)
                except Exception as err:
                    self.stats.reconcile_errors += 1
                    if _unreachable(err):  # one line per pass, not a traceback, while the apiserver is down
                        log.warning("reconcile of %s waits for the apiserver (%s); retried on the next pass", key, err)
                    else:
                        log.exception("reconcile of %s failed; retried on the next pass", key)
                    self._active.add(key)
                    return
            self.stats.reconciles += 1
            if self.telemetry is not None:
                self.telemetry.reconcile_duration.observe(asyncio.get_running_loop().time() - started)
            if result.body is not None:
                self._store(key, result.body)
            stored = self._workloads.get(key)
            if stored is not None:
                stored.inputs = (stored.resource_version, fingerprint)
            if result.active:
                self._active.add(key)
            else:
                self._active.discard(key)

        await asyncio.gather(*(one(k) for k in keys))
        if full_tick:
            self.stats.skipped_unchanged = skipped
            if self.telemetry is not None:
                self.telemetry.skipped_unchanged.set(skipped)
        if self.router is not None:
            await self.router.sync()
            if self.router.busy:
                # come back soon for the workloads waiting on the router (applying, or to be retried)
                self._active.update(self.router.waiting() & set(self._workloads))


def _unreachable(err: BaseException) -> bool:
    """An apiserver that cannot be reached or answers 5xx: expected during its restarts, not a bug."""
    status = getattr(err, "status", None)
    if isinstance(status, int) and status >= 500:
        return True
    return isinstance(err, aiohttp.ClientConnectionError | TimeoutError)


def _q(value: float | None) -> float | None:
    """Two significant digits: the status diff's tolerance is 5 %, so a finer change cannot change what is written."""
    return None if value is None else float(f"{value:.2g}")


def _window_fingerprint(window: TrafficWindow | None) -> tuple[Any, ...] | None:
    """What of a metrics window can change a decision, rounded: levels over the whole window and its recent end
    (a sustain window sliding over a threshold shows in the recent max/min), latency, service time, history."""
    if window is None:
        return None
    rps = window.rps
    recent = rps[-10:]
    return (
        window.step_seconds,
        len(rps),
        _q(sum(rps) / len(rps)) if rps else None,
        _q(max(rps)) if rps else None,
        _q(max(recent)) if recent else None,
        _q(min(recent)) if recent else None,
        _q(rps[-1]) if rps else None,
        _q(window.latency_p99_seconds),
        _q(window.service_seconds),
        _q(window.warm_latency_seconds),
        _q(window.slo_miss_share),
        _q(max((p for p in window.peak_in_flight if p is not None), default=0.0)) if window.peak_in_flight else None,
        len(window.history_rps) if window.history_rps else None,
        _q(sum(window.history_rps)) if window.history_rps else None,
        _q(window.history_slo_misses),
    )


def _weights(weights: Mapping[Any, int] | None) -> tuple[tuple[str, int], ...] | None:
    return None if weights is None else tuple(sorted((str(k), v) for k, v in weights.items()))


def _resync_due(key: WorkloadKey, tick: int) -> bool:
    slot = zlib.crc32(f"{key.namespace}/{key.name}".encode()) % RESYNC_TICKS
    return tick % RESYNC_TICKS == slot


def _rv_older(candidate: str, known: str) -> bool:
    try:
        return int(candidate) < int(known)
    except ValueError:
        return False
