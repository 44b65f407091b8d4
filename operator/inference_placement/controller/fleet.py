"""The fleet: a plain dict of workloads filled by kopf's event stream, and ONE loop that reconciles them.

This is the shape measured to scale (DOMAIN.md, "kopf at fleet scale"): no per-object timers, daemons or change
handlers (which cost ~3x the memory and write an annotation and a finalizer on every object). The loop
  - every ``tick_seconds``: one batched metrics fetch for all workloads, then a reconcile of each;
  - in between: reconciles promptly whatever changed (spec edits, deletions) and whatever is mid-migration.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import json
import logging
import math
import os
import random
import time
import traceback
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final

import aiohttp
import numpy as np
from kubernetes_asyncio.client.rest import ApiException

from inference_placement.api.spec import InferenceWorkloadSpec, TargetName
from inference_placement.api.validation import SpecProblem, parse_spec
from inference_placement.api.workload import WorkloadKey
from inference_placement.controller.gc_tuning import collector_paused, release_free_memory
from inference_placement.controller.leader import NotLeaderError
from inference_placement.controller.log_context import workload_context
from inference_placement.controller.reconciler import Reconciler, ReconcileResult, TickInputs
from inference_placement.controller.router_sync import RouterSync
from inference_placement.controller.telemetry import Telemetry
from inference_placement.controller.tenancy import spend_by_target
from inference_placement.controller.wake import WakeSignal
from inference_placement.metrics.source import MetricsSnapshot, MetricsSource
from inference_placement.policy.capacity import ClusterCapacity
from inference_placement.policy.decide import TrafficWindow, history_fingerprint, reads_history
from inference_placement.policy.first_request import (
    FirstRequestSample,
    FirstRequestState,
    observe_first_request,
    wants_bins,
)
from inference_placement.policy.forecast import measured_service_scv
from inference_placement.policy.price_book import PriceBook
from inference_placement.policy.queueing import allen_cunneen_scale
from inference_placement.policy.series import FloatSeries
from inference_placement.policy.traffic_health import TargetCounters

__all__ = [
    "Fleet",
    "FleetStats",
    "ParsedSpec",
    "ACTIVE_RECONCILE_SECONDS",
    "DROPPED_ANNOTATIONS",
    "DROPPED_METADATA",
    "SPEC_CACHE_SIZE",
    "RECONCILE_CAUSES",
]

log = logging.getLogger(__name__)

ACTIVE_RECONCILE_SECONDS = 2.0
"""How often a workload with something in flight (migration, provisioning) is revisited between ticks."""


DROPPED_METADATA = frozenset({"managedFields"})
"""Metadata keys the fleet does not keep: nothing downstream reads them (1.5 KB per object for managedFields)."""

DROPPED_ANNOTATIONS = frozenset({"kubectl.kubernetes.io/last-applied-configuration"})
"""Annotations the fleet does not keep: ``kubectl apply``'s copy of the whole object (nothing reads it)."""

SPEC_CACHE_SIZE = 4096
"""Distinct specs whose parse is kept for sharing between workloads (a workload keeps its own parse anyway)."""

ParsedSpec = tuple[InferenceWorkloadSpec | None, list[SpecProblem]]
"""What ``parse_spec`` returns: shared, never mutated."""


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
    causes: collections.Counter[str] = field(default_factory=collections.Counter)
    """Reconciles since the start, by cause (``RECONCILE_CAUSES``)."""


_NO_SPEC: Any = object()


@dataclass(slots=True)
class _Entry:
    metadata: dict[str, Any]
    """The object's metadata without ``DROPPED_METADATA``/``DROPPED_ANNOTATIONS`` (the event's own values)."""
    spec: Any
    """The object's spec, by reference (``_NO_SPEC``: none); identical specs share one object."""
    status: str | Mapping[str, Any] | None
    """The object's status as compact JSON (a decoded status is ~4x its JSON: 10.8 KB against 2.6 KB measured with
    metadata), decoded again only when the workload is reconciled; a status that is not JSON is kept as is."""
    generation: int
    resource_version: str
    uid: str = ""
    parsed: ParsedSpec | None = None
    """``parse_spec(body["spec"])``, filled on first use and kept while uid and generation stay the same."""
    inputs: tuple[Any, ...] | None = None
    """Fingerprint of everything the last successful reconcile read (None: reconcile at the next tick)."""
    reconciled_at: float = -math.inf
    """Fleet clock (POSIX seconds) of the last successful reconcile: the resync takes the oldest first."""
    revisit_at: float | None = None
    """The last reconcile's earliest clock-only deadline (e.g. a cooldown ending): reconciled once it passed."""

    @property
    def body(self) -> dict[str, Any]:
        """The object as the reconciler reads it (a fresh status each call: nothing the caller does sticks)."""
        body: dict[str, Any] = {"metadata": self.metadata}
        if self.spec is not _NO_SPEC:
            body["spec"] = self.spec
        if isinstance(self.status, str):
            body["status"] = json.loads(self.status)
        elif self.status is not None:
            body["status"] = self.status
        return body


@dataclass
class Fleet:
    reconciler: Reconciler
    metrics: MetricsSource
    price_book: Callable[[], PriceBook]
    price_book_problem: Callable[[], str | None] = lambda: None
    """Why the configured price book is not in force (``PriceBookHolder.error``); None = it is."""
    capacity: Callable[[], ClusterCapacity] = ClusterCapacity
    capacity_verdict: Callable[[WorkloadKey, InferenceWorkloadSpec], tuple[bool, str] | None] = lambda key, spec: None
    """(enough free capacity, numbers) for a workload with a valid spec; None when not applicable."""
    tick_seconds: float = 30.0
    debounce_seconds: float = 0.5
    reconcile_concurrency: int = 32
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    skip_unchanged: bool = True
    """Full ticks reconcile only workloads whose inputs changed, whose deadline passed, plus the resync share."""
    resync_seconds: float = 300.0
    """Every workload is reconciled at least once per this many seconds even when nothing it depends on changed
    (spread evenly: each full tick resyncs the ``ceil(N x tick_seconds / resync_seconds)`` least recently
    reconciled), unless ``max_resyncs_per_tick`` caps that; see ``_resync_picks`` for the bound."""
    max_resyncs_per_tick: int | None = 100
    """Cap on the resync share of one full tick (None = no cap); what exceeds it is carried over, oldest first.
    With the cap, the resync period is ``max(resync_seconds, ceil(N / max_resyncs_per_tick) x tick_seconds)``
    (100: 300 s up to 1,000 workloads at 30 s ticks, 50 min at 10,000)."""
    stats: FleetStats = field(default_factory=FleetStats)
    telemetry: Telemetry | None = None
    router: RouterSync | None = None
    """The stable endpoints' router; None = routing is not managed by this operator (no traffic gating)."""
    fence: Callable[[], None] | None = None
    """Raises ``NotLeaderError`` when this replica may not act (``leader.LeaseElector.fence``); the loop checks it
    before every pass and ends when it raises. None = a single replica, always acting."""
    relist: Callable[[], Awaitable[int]] | None = None
    """Re-reads every workload from the apiserver into the fleet (one paginated LIST): a new leader's first step."""
    failure_backoff_initial_seconds: float = 2.0
    """First wait after a failed reconcile of a workload (an exception, or a target error recorded in status); each
    further failure doubles it (each wait drawn between half and all of its step), up to
    ``failure_backoff_max_seconds``; never shorter than the cloud's ``Retry-After``. A spec edit or a deletion is
    reconciled at once regardless."""
    failure_backoff_max_seconds: float = 300.0
    """Longest wait between two failed reconciles of one workload."""
    rng: random.Random = field(default_factory=random.Random)
    """Jitter of the failure backoff (a seeded one in tests)."""

    def __post_init__(self) -> None:
        self._workloads: dict[WorkloadKey, _Entry] = {}
        self._dirty: set[WorkloadKey] = set()
        self._active: set[WorkloadKey] = set()
        self._wake = asyncio.Event()
        self._snapshot = MetricsSnapshot(problem="no metrics fetched yet")
        self._stopping = False
        self._specs: OrderedDict[str, tuple[Any, ParsedSpec]] = OrderedDict()
        self._signals: dict[WorkloadKey, WakeSignal] = {}
        """What the router's activators saw per workload since its last reconcile (``controller/wake.py``)."""
        self._router_dirty = False
        self._first_requests: dict[tuple[WorkloadKey, TargetName], FirstRequestState] = {}
        """Per serverless target, what the router's counters showed at the last full tick (``policy.first_request``:
        the idle gap and the first request after it). In memory only: a restart delays a sample, never invents one."""
        self._cold_samples: dict[WorkloadKey, dict[TargetName, FirstRequestSample]] = {}
        """Serverless cold starts measured at the router, waiting for the workload's next reconcile."""
        self._backoff: dict[WorkloadKey, tuple[int, float]] = {}
        """Workloads whose last reconcile failed: (failures in a row, fleet clock before which none is retried)."""
        self.spec_parses = 0
        """How many times a spec was parsed (at most once per distinct spec content in ``SPEC_CACHE_SIZE``)."""

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
            self._backoff.pop(key, None)
            self._cold_samples.pop(key, None)  # its first-request states go at the next full tick (not read)
            if self.telemetry is not None:
                self.telemetry.workloads.set(len(self._workloads))
            return
        generation = int(meta.get("generation") or 0)
        previous = self._workloads.get(key)
        self._store(key, body)
        if previous is None and self.telemetry is not None:
            # as they are seen, not only per tick: a standby (no ticks) shows the cache it keeps warm
            self.telemetry.workloads.set(len(self._workloads))
        changed = (
            previous is None
            or previous.generation != generation
            or (meta.get("deletionTimestamp") is not None and previous.metadata.get("deletionTimestamp") is None)
        )
        if changed:
            self._dirty.add(key)
            self._wake.set()

    def observe_endpoints(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """An EndpointSlice event of a model Service: the routes reaching its pods follow at once (no tick)."""
        if self.router is None or self.router.pods is None:
            return
        service = self.router.pods.observe(event_type, body)
        if service is not None and self.router.pods_changed(service):
            self._router_dirty = True
            self._wake.set()

    def on_wake_signals(self, signals: Mapping[WorkloadKey, WakeSignal]) -> None:
        """Signals of one activator poll: a workload with held or new requests (or requests just answered) is
        reconciled at once, not at the next tick."""
        falling = self.router.falling_through() if self.router is not None else set()
        for key, signal in signals.items():
            if key not in self._workloads:
                continue
            if not (signal.demand or signal.answered) and key not in falling:
                continue  # serverless counters of a workload no serverless target answers at zero for: not a wake
            self._signals[key] = _merge(self._signals.get(key), signal)
            self._dirty.add(key)
        if signals:
            self._wake.set()

    def _store(self, key: WorkloadKey, body: Mapping[str, Any]) -> None:
        """Keep what the reconcile, the capacity verdict and the router read: trimmed metadata, spec and status.

        Nothing is deep-copied: watch events and API answers are freshly decoded JSON that nobody mutates (kopf
        replaces a body's source, never edits it; the reconciler and the router only read). An unchanged spec
        (same uid and generation) keeps the previous entry's spec object and its parse, so the spec decoded with
        each status write is dropped at once."""
        meta = body.get("metadata") or {}
        rv = str(meta.get("resourceVersion", ""))
        previous = self._workloads.get(key)
        if previous is not None and _rv_older(rv, previous.resource_version):
            return  # a late watch event must not undo what we already know from our own write
        generation = int(meta.get("generation") or 0)
        uid = str(meta.get("uid") or "")
        entry = _Entry(
            metadata=_trimmed_metadata(meta),
            spec=body.get("spec", _NO_SPEC),
            status=_compact(body.get("status")),
            generation=generation,
            resource_version=rv,
            uid=uid,
        )
        if previous is not None:
            entry.reconciled_at = previous.reconciled_at
            entry.revisit_at = previous.revisit_at
            if previous.uid == uid and previous.generation == generation and previous.spec is not _NO_SPEC:
                entry.spec = previous.spec
                entry.parsed = previous.parsed
            if previous.resource_version == rv and rv:
                entry.inputs = previous.inputs  # the same object version again (our write, then its watch event)
        self._workloads[key] = entry
        if self.router is not None:
            self.router.observe(key, body)

    def _parsed(self, entry: _Entry) -> ParsedSpec:
        """The entry's parsed spec: parsed once per distinct spec content (shared between workloads)."""
        if entry.parsed is not None:
            return entry.parsed
        raw = None if entry.spec is _NO_SPEC else entry.spec
        try:
            text = json.dumps(raw, sort_keys=True, separators=(",", ":"))
        except (TypeError, ValueError):  # not JSON (only from a caller that is not the apiserver): no sharing
            self.spec_parses += 1
            entry.parsed = parse_spec(raw)
            return entry.parsed
        hit = self._specs.get(text)
        if hit is None:
            self.spec_parses += 1
            hit = (raw, parse_spec(raw))
            self._specs[text] = hit
            if len(self._specs) > SPEC_CACHE_SIZE:
                self._specs.popitem(last=False)
        else:
            self._specs.move_to_end(text)
            entry.spec = hit[0]  # one copy of an identical spec (they are read only)
        entry.parsed = hit[1]
        return entry.parsed

    async def _reconcile_failed(self, key: WorkloadKey, err: Exception, now_ts: float) -> None:
        if isinstance(err, ApiException) and err.status == 409:
            # our copy is stale (another writer, or another replica, changed the object): read it again, no backoff
            self.stats.reconcile_errors += 1
            self._active.add(key)
            log.info(
                "reconcile of %s refused: 409 on %s (stale copy: %s); re-read and retried",
                key,
                _failed_call(err),
                err.reason,
            )
            await self._reread(key)
            return
        self._reconcile_raised(key, err, now_ts)

    async def _reread(self, key: WorkloadKey) -> None:
        """Replace the stored copy of ``key`` with the apiserver's (after a refused conditional write)."""
        try:
            body = await self.reconciler.writer.read(key.namespace, key.name)
        except Exception as err:  # the watch delivers it later anyway
            log.warning("could not re-read %s: %s", key, err)
            return
        if body is None:
            self.observe("DELETED", {"metadata": {"namespace": key.namespace, "name": key.name}})
        else:
            self._store(key, body)

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
            if not self._may_act():
                return
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
                if not self._signals and not self._router_dirty:
                    await asyncio.sleep(self.debounce_seconds)  # let a burst of edits settle (a wake-up waits not)
            except TimeoutError:
                pass
            self._wake.clear()
            keys = self._dirty | self._active
            urgent = set(self._dirty)
            self._dirty.clear()
            if keys:
                await self._reconcile_keys(keys, urgent=urgent)
            elif self._router_dirty:
                await self._sync_router()

    def _may_act(self) -> bool:
        if self.fence is None:
            return True
        try:
            self.fence()
        except NotLeaderError as err:
            log.warning("fleet loop stops acting: %s", err)
            return False
        return True

    async def tick(self) -> None:
        """One full tick: fetch metrics for every workload in one batch, then reconcile all of them."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        cpu_started = time.process_time()
        keys = list(self._workloads)
        now = self.clock()
        try:
            with collector_paused():  # the answers' containers are freed by reference counting (gc_tuning.py)
                self._snapshot = await self.metrics.fetch(keys, now, self._slo_seconds())
        except Exception as err:  # a broken metrics source freezes placement; it never stops the loop
            log.exception("metrics fetch failed")
            self._snapshot = MetricsSnapshot(problem=f"metrics source error: {type(err).__name__}")
        self.stats.last_metrics_queries = self._snapshot.queries
        if self.telemetry is not None:
            self.telemetry.metrics_queries.set(self._snapshot.queries)
            if self._snapshot.problem is None and self._snapshot.windows:
                self.telemetry.metrics_fresh.set(now.timestamp())
        await self._refresh_tenancy()
        self._dirty.clear()
        await self._reconcile_keys(set(keys), full_tick=True, resync=self._resync_picks(_posix(now)))
        await self._write_tenancy(now)
        release_free_memory()  # the tick's transient high-water is not kept resident (gc_tuning.py)
        self.stats.ticks += 1
        self.stats.last_tick_seconds = loop.time() - started
        self.stats.last_tick_at = now
        if self.telemetry is not None:
            self.telemetry.tick_duration.set(self.stats.last_tick_seconds)
            self.telemetry.tick_cpu.set(time.process_time() - cpu_started)
            self.telemetry.ticks.inc()
            self.telemetry.workloads.set(len(self._workloads))

    async def _refresh_tenancy(self) -> None:
        """The ServerlessTargets and the spend on each (from the workloads placed there through a targetRef)."""
        tenancy = self.reconciler.tenancy
        placed: list[tuple[InferenceWorkloadSpec, Mapping[str, Any]]] = []
        for entry in self._workloads.values():
            spec = self._parsed(entry)[0]
            if spec is None or (spec.cloud_run.target_ref is None and spec.lambda_.target_ref is None):
                continue
            status = entry.body.get("status")
            if isinstance(status, Mapping):
                placed.append((spec, status))
        tenancy.set_spend(*spend_by_target(placed))
        try:
            await tenancy.refresh()
        except Exception:  # never stops the tick: the last view stays
            log.exception("reading ServerlessTargets failed")

    async def _write_tenancy(self, now: datetime) -> None:
        try:
            await self.reconciler.tenancy.write_statuses(self.reconciler.writer, now)
        except NotLeaderError:
            raise
        except Exception:
            log.exception("writing ServerlessTarget status failed")

    def _slo_seconds(self) -> dict[WorkloadKey, float]:
        """Each workload's latency objective, from its parsed spec (parsed once per distinct spec): what the metrics
        source counts misses against. A spec that does not parse has none."""
        out: dict[WorkloadKey, float] = {}
        for key, entry in self._workloads.items():
            spec = self._parsed(entry)[0]
            if spec is not None:
                out[key] = spec.slo.objective_seconds
        return out

    def _resync_picks(self, now: float) -> set[WorkloadKey]:
        """The workloads a full tick reconciles although nothing they depend on changed: the least recently
        reconciled ``min(ceil(N x tick_seconds / resync_seconds), max_resyncs_per_tick)``.

        Bound: a workload is reconciled at least every ``max(resync_seconds, ceil(N / max_resyncs_per_tick) x
        tick_seconds)`` seconds (+ one tick's wall time), whatever else happens: what depends on the clock alone and
        has no deadline of its own (a slow drift inside the fingerprint's rounding, projected month cost) is seen
        within that. A cooldown ending is a deadline of its own (``ReconcileResult.revisit_at``), a month turning
        and a window growing stale are in the fingerprint: those are seen at the next full tick."""
        count = len(self._workloads)
        if not count or not self.skip_unchanged:
            return set()
        share = math.ceil(count * self.tick_seconds / max(self.resync_seconds, self.tick_seconds))
        if self.max_resyncs_per_tick is not None:
            share = min(share, self.max_resyncs_per_tick)
        entries = self._workloads
        return set(heapq.nsmallest(share, entries, key=lambda k: entries[k].reconciled_at))

    def backoff_until(self, key: WorkloadKey) -> float | None:
        """Fleet clock (POSIX seconds) before which ``key`` is not retried after a failure; None = not backed off."""
        entry = self._backoff.get(key)
        return entry[1] if entry is not None else None

    def _failed(self, key: WorkloadKey, now_ts: float, retry_after: float | None) -> tuple[int, float]:
        """Record one more failure of ``key``: exponential backoff with jitter, at least ``retry_after``."""
        failures = self._backoff.get(key, (0, 0.0))[0] + 1
        ceiling = min(self.failure_backoff_max_seconds, self.failure_backoff_initial_seconds * 2 ** (failures - 1))
        delay = self.rng.uniform(ceiling / 2, ceiling)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.failure_backoff_max_seconds))
        self._backoff[key] = (failures, now_ts + delay)
        if self.telemetry is not None:
            self.telemetry.reconcile_backoffs.set(len(self._backoff))
        return failures, delay

    def _record_outcome(self, key: WorkloadKey, result: ReconcileResult, now_ts: float) -> None:
        """Back ``key`` off after target errors (honouring the longest ``Retry-After``); clear it once its status
        shows none (a reconcile that only rolled back a failed placement keeps the count: the next failure waits
        longer, not the first interval again)."""
        if result.failures:
            asked = [f.retry_after_seconds for f in result.failures if f.retry_after_seconds is not None]
            self._failed(key, now_ts, max(asked) if asked else None)
            if self.telemetry is not None:
                self.telemetry.reconcile_failures.labels("target").inc()
        elif not result.erroring and self._backoff.pop(key, None) is not None and self.telemetry is not None:
            self.telemetry.reconcile_backoffs.set(len(self._backoff))

    def _reconcile_raised(self, key: WorkloadKey, err: Exception, now_ts: float) -> None:
        """One log line per failure (the traceback only at DEBUG: it is the same one every time), then back off."""
        self.stats.reconcile_errors += 1
        self._active.add(key)
        if _unreachable(err):  # one line per pass while the apiserver is down; not this workload's fault
            log.warning("reconcile of %s waits for the apiserver (%s); retried on the next pass", key, err)
            return
        failures, delay = self._failed(key, now_ts, None)
        if self.telemetry is not None:
            self.telemetry.reconcile_failures.labels("exception").inc()
        log.warning(
            "reconcile of %s failed (%s: %s); next attempt in %.1fs (failure %d in a row)",
            key, type(err).__name__, str(err)[:300], delay, failures,
        )  # fmt: skip
        log.debug("reconcile of %s failed", key, exc_info=err)

    def _count_reconcile(self, cause: str) -> None:
        self.stats.reconciles += 1
        self.stats.causes[cause] += 1
        if self.telemetry is not None:
            self.telemetry.reconcile_causes.labels(cause).inc()

    async def _reconcile_keys(
        self,
        keys: set[WorkloadKey],
        *,
        full_tick: bool = False,
        resync: set[WorkloadKey] | None = None,
        urgent: set[WorkloadKey] | None = None,
    ) -> None:
        price_book = self.price_book()
        price_book_problem = self.price_book_problem()
        capacity = self.capacity()
        now = self.clock()
        now_ts = _posix(now)
        slots = asyncio.Semaphore(self.reconcile_concurrency)
        # a month turning resets budgets: every workload is reconciled at the first tick of a month
        shared = (
            id(price_book),
            price_book_problem,
            capacity.fingerprint,
            now.year,
            now.month,
            self.reconciler.tenancy.fingerprint,
        )
        staleness = self.reconciler.max_metrics_staleness_seconds
        resync = resync or set()
        skipped = 0

        def prepare(key: WorkloadKey) -> tuple[_Entry, tuple[Any, ...], TickInputs, ParsedSpec, str] | None:
            """What a reconcile of ``key`` reads, or None when it can be skipped (decided without a task)."""
            nonlocal skipped
            entry = self._workloads.get(key)
            if entry is None:
                return None
            held = self._backoff.get(key)
            if held is not None and now_ts < held[1] and key not in (urgent or ()):
                return None  # failed lately: waits out its backoff (a spec edit or a deletion does not)
            window = windows.get(key)
            problem = snapshot.problem_for(key)
            parsed = self._parsed(entry)
            spec, problems = parsed
            verdict = self.capacity_verdict(key, spec) if spec is not None and not problems else None
            routed = self.router.confirmed(key) if self.router is not None else None
            spill_routed = self.router.confirmed_spill(key) if self.router is not None else None
            no_pod_answered = self.router.answers_without_pods(key) if self.router is not None else False
            signal = self._signals.pop(key, None)
            cold = self._cold_samples.pop(key, None)
            # a window whose last sample grows too old freezes placement: that flip is an input of its own
            stale = window is not None and now_ts - _posix(window.end) > staleness
            history = spec is not None and reads_history(spec, self.reconciler.actuators)
            fingerprint = (
                shared,
                _window_fingerprint(window, history=history),
                stale,
                problem,
                verdict,
                _weights(routed),
                spill_routed,
                no_pod_answered,
                signal,
            )
            if (
                full_tick
                and self.skip_unchanged
                and key not in self._active
                and signal is None
                and cold is None
                and entry.inputs == (entry.resource_version, fingerprint)
                and key not in resync
                and (entry.revisit_at is None or now_ts < entry.revisit_at)
            ):
                skipped += 1
                return None
            inputs = TickInputs(
                now=now,
                price_book=price_book,
                capacity=capacity,
                window=window,
                metrics_problem=problem,
                capacity_verdict=verdict,
                router_enabled=self.router is not None,
                router_weights=routed,
                router_spill=spill_routed,
                router_answers_without_pods=no_pod_answered,
                router_traffic=traffic.get(key) if traffic is not None else None,
                wake=signal,
                serverless_first_requests=cold,
                history_loading=snapshot.history_loading,
                price_book_problem=price_book_problem,
            )
            cause = _cause(
                full_tick=full_tick,
                skip_unchanged=self.skip_unchanged,
                active=key in self._active,
                woken=signal is not None or cold is not None,
                before=entry.inputs,
                now=(entry.resource_version, fingerprint),
                resync=key in resync,
            )
            return entry, fingerprint, inputs, parsed, cause

        async def one(
            key: WorkloadKey,
            entry: _Entry,
            fingerprint: tuple[Any, ...],
            inputs: TickInputs,
            parsed: ParsedSpec,
            cause: str,
        ) -> None:
            async with slots:
                started = asyncio.get_running_loop().time()
                with workload_context(key):  # every line logged meanwhile names the workload (log_context.py)
                    try:
                        result = await self.reconciler.reconcile(entry.body, inputs, parsed_spec=parsed)
                    except NotLeaderError:
                        return  # leadership ended mid-pass: the loop stops at its next check; nothing to retry
                    except Exception as err:
                        await self._reconcile_failed(key, err, now_ts)
                        self._keep_for_retry(key, inputs)
                        return
            self._count_reconcile(cause)
            if self.telemetry is not None:
                self.telemetry.reconcile_duration.observe(asyncio.get_running_loop().time() - started)
            if result.body is not None:
                self._store(key, result.body)
            stored = self._workloads.get(key)
            if stored is not None:
                stored.inputs = (stored.resource_version, fingerprint)
                stored.reconciled_at = now_ts
                stored.revisit_at = _posix(result.revisit_at) if result.revisit_at is not None else None
            self._record_outcome(key, result, now_ts)
            if result.active or result.failures:
                self._active.add(key)
            else:
                self._active.discard(key)

        snapshot = self._snapshot
        windows = snapshot.windows
        traffic = await self._router_traffic(keys)
        if full_tick:
            await self._watch_first_requests(price_book, now_ts)
        work = [(key, prepared) for key in keys if (prepared := prepare(key)) is not None]
        await asyncio.gather(*(one(key, *prepared) for key, prepared in work))
        if full_tick:
            self.stats.skipped_unchanged = skipped
            if self.telemetry is not None:
                self.telemetry.skipped_unchanged.set(skipped)
        await self._sync_router()

    async def _router_traffic(
        self, keys: set[WorkloadKey]
    ) -> dict[WorkloadKey, dict[TargetName, TargetCounters]] | None:
        """The router's per-target counters, read once per pass and only while one of ``keys`` migrates (its
        target's traffic gates each step: ``policy.traffic_health``)."""
        if self.router is None:
            return None
        migrating = any(_migrating(entry) for key in keys if (entry := self._workloads.get(key)) is not None)
        return await self.router.target_traffic() if migrating else None

    def _keep_for_retry(self, key: WorkloadKey, inputs: TickInputs) -> None:
        """A reconcile that raised acted on nothing: its wake signal and measured cold starts wait for the retry."""
        if inputs.wake is not None:
            self._signals[key] = _merge(inputs.wake, self._signals.get(key))
        if inputs.serverless_first_requests:
            kept = self._cold_samples.setdefault(key, {})
            for target, sample in inputs.serverless_first_requests.items():
                kept.setdefault(target, sample)

    async def _watch_first_requests(self, price_book: PriceBook, now_ts: float) -> None:
        """Once per full tick: the router's serverless counters (one read per router replica), then the latency
        bins of just the targets crossing an idle gap (a second read, only when there are some); each target's idle
        gap and first request after it (``policy.first_request``). A cold start measured is handed to that
        workload's reconcile of this pass (it records it in ``status.coldStart``)."""
        if self.router is None:
            return
        counters = await self.router.serverless_counters()
        if counters is None:
            return  # unreadable: the states keep their last reading (the gap is measured from it)
        lifetimes = {
            TargetName.LAMBDA: price_book.platforms.lambda_.keep_alive_idle_seconds,
            TargetName.CLOUDRUN: price_book.platforms.cloudrun.keep_alive_idle_seconds,
        }
        readings = {
            (key, target): reading
            for key, targets in counters.items()
            if key in self._workloads
            for target, reading in targets.items()
        }
        wanted = {
            watched
            for watched, reading in readings.items()
            if wants_bins(self._first_requests.get(watched), reading, now_ts, lifetimes[watched[1]])
        }
        if wanted:
            bins = await self.router.serverless_bins({key for key, _ in wanted})
            if bins is None:
                wanted = set()  # unreadable now: the counters are still recorded, the bins wait for a next tick
            for watched in wanted:
                key, target = watched
                found = (bins or {}).get(key, {}).get(target)
                if found is None and readings[watched].requests == 0:
                    found = ()  # no request yet: Envoy has no histogram to show (missing after requests: unread)
                readings[watched] = replace(readings[watched], bins=found)
        for watched, reading in readings.items():
            key, target = watched
            state, sample = observe_first_request(self._first_requests.get(watched), reading, now_ts, lifetimes[target])
            self._first_requests[watched] = state
            if sample is not None:
                self._cold_samples.setdefault(key, {})[target] = sample
        for gone in set(self._first_requests) - set(readings):
            del self._first_requests[gone]  # the target's cluster left the router, or its workload is gone

    async def _sync_router(self) -> None:
        if self.router is None:
            return
        self._router_dirty = False
        try:
            await self.router.sync()
        except NotLeaderError:
            return  # leadership ended: the loop stops at its next check
        if self.router.busy:
            # come back soon for the workloads waiting on the router (applying, or to be retried)
            self._active.update(self.router.waiting() & set(self._workloads))


def _migrating(entry: _Entry) -> bool:
    """The workload's status records a migration in flight (read without decoding the compact JSON)."""
    if isinstance(entry.status, str):
        return '"migration":{' in entry.status
    return isinstance(entry.status, Mapping) and entry.status.get("migration") is not None


def _merge(older: WakeSignal | None, newer: WakeSignal | None) -> WakeSignal:
    """Two polls' signals as one: the newer held count, arrivals, answers and fall-throughs added, the answers' mean
    weighted."""
    if older is None or newer is None:
        return newer or older or WakeSignal()
    answered = older.answered + newer.answered
    fell = older.fell_answered + newer.fell_answered
    fell_total = sum(s.fell_answered * s.fell_mean_seconds for s in (older, newer) if s.fell_mean_seconds is not None)
    total = sum(s.answered * s.mean_hold_seconds for s in (older, newer) if s.mean_hold_seconds is not None)
    return WakeSignal(
        held=newer.held,
        arrived=older.arrived + newer.arrived,
        answered=answered,
        mean_hold_seconds=total / answered if answered else None,
        fell_through=older.fell_through + newer.fell_through,
        fell_answered=fell,
        fell_mean_seconds=fell_total / fell if fell else None,
    )


def _unreachable(err: BaseException) -> bool:
    """An apiserver that cannot be reached or answers 5xx: expected during its restarts, not a bug."""
    status = getattr(err, "status", None)
    if isinstance(status, int) and status >= 500:
        return True
    return isinstance(err, aiohttp.ClientConnectionError | TimeoutError)


def _q(value: float | None) -> float | None:
    """Two significant digits: the status diff's tolerance is 5 %, so a finer change cannot change what is written."""
    return None if value is None else float(f"{value:.2g}")


RECONCILE_CAUSES: Final = (
    "event",
    "always",
    "active",
    "wake",
    "object",
    "shared",
    "metrics",
    "capacity",
    "router",
    "resync",
    "deadline",
)
"""Why a workload was reconciled (``inference_placement_reconciles_total{cause}``, ``FleetStats.causes``): between
full ticks, for a watch event or a wake-up (``event``); on a full tick, because inputs are not compared
(``always``), a migration is in flight or a target is not ready (``active``), the router or a serverless cold start
reported on it (``wake``), its object is new or changed (``object``), an input it
depends on changed: the price book, cluster capacity, month or tenancy (``shared``), its metrics window
(``metrics``), its capacity verdict (``capacity``), what the router serves for it (``router``); the periodic resync
(``resync``), or a deadline it asked for (``deadline``: a cooldown's end, a wake-up's keep)."""

_FINGERPRINT_CAUSES: Final = (
    "shared",
    "metrics",
    "metrics",
    "metrics",
    "capacity",
    "router",
    "router",
    "router",
    "wake",
)
"""The cause of each part of a full tick's input fingerprint, in ``prepare``'s order."""


def _cause(
    *,
    full_tick: bool,
    skip_unchanged: bool,
    active: bool,
    woken: bool,
    before: tuple[Any, ...] | None,
    now: tuple[Any, ...],
    resync: bool,
) -> str:
    """The first reason, in ``RECONCILE_CAUSES``' order, a workload that was not skipped is reconciled."""
    if not full_tick:
        return "event"
    if not skip_unchanged:
        return "always"
    if active:
        return "active"
    if woken:
        return "wake"
    if before is None or before[0] != now[0]:
        return "object"
    if before[1] != now[1]:
        changed = next(
            (i for i, (a, b) in enumerate(zip(before[1], now[1], strict=False)) if a != b), len(_FINGERPRINT_CAUSES) - 1
        )
        return _FINGERPRINT_CAUSES[min(changed, len(_FINGERPRINT_CAUSES) - 1)]
    return "resync" if resync else "deadline"


def _window_fingerprint(window: TrafficWindow | None, *, history: bool = True) -> tuple[Any, ...] | None:
    """What of a metrics window can change a decision, rounded: levels over the whole window and its recent end
    (a sustain window sliding over a threshold shows in the recent max/min), latency, service time, and the
    history where the policy reads it (``history``: ``policy.decide.reads_history``; nothing else a reconcile
    writes depends on it), as much of it as the policy reads (``policy.decide.history_fingerprint``: a busy
    workload's history moving by a point every 300 s re-decides nothing)."""
    if window is None:
        return None
    summary = _levels_fingerprint(window)
    if not history:
        return summary
    return (*summary, *history_fingerprint(window))


def _levels_fingerprint(window: TrafficWindow) -> tuple[Any, ...]:
    # the live source's FloatSeries as a list once (one C call), not a float made per point and per builtin below
    rps = window.rps.tolist() if isinstance(window.rps, FloatSeries) else window.rps
    recent = rps[-10:]
    return (
        window.step_seconds,
        len(rps),
        _q(sum(rps) / len(rps)) if rps else None,
        _q(max(rps)) if rps else None,
        _q(max(recent)) if recent else None,
        _q(min(recent)) if recent else None,
        _q(rps[-1]) if rps else None,
        _q(window.observed_p99_seconds),
        _q(window.service_seconds),
        _q(window.warm_latency_seconds),
        _q(window.slo_miss_share),
        _q(_peak(window.peak_in_flight)) if window.peak_in_flight else None,
        _q(sum(window.slo_misses[-10:])) if window.slo_misses else None,
        _q(sum(window.slo_misses)) if window.slo_misses else None,
        _q(_wait_scale(window)) if window.service_per_step is not None else None,
    )


def _wait_scale(window: TrafficWindow) -> float:
    """The queueing models' wait scale the window's per-step service times give (``forecast.service_scv``; a
    garbage rate only drops its step)."""
    rates = np.asarray(window.rps, dtype=np.float64)
    scv = measured_service_scv(rates, window.step_seconds, window.service_per_step, window.rate_window_seconds)
    return allen_cunneen_scale(scv)


def _peak(values: Sequence[float | None]) -> float:
    """The largest of ``values`` (None skipped; 0 for none): a source's series (``FloatSeries``) holds no None."""
    if isinstance(values, FloatSeries):
        return max(values.tolist(), default=0.0)
    return max((v for v in values if v is not None), default=0.0)


def _weights(weights: Mapping[Any, int] | None) -> tuple[tuple[str, int], ...] | None:
    return None if weights is None else tuple(sorted((str(k), v) for k, v in weights.items()))


def _posix(moment: datetime) -> float:
    """POSIX seconds; a naive time is UTC (as in the policy)."""
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).timestamp()


def _trimmed_metadata(meta: Mapping[str, Any]) -> dict[str, Any]:
    """metadata without what nothing reads: references into the event's metadata, not copies."""
    kept = {k: v for k, v in meta.items() if k not in DROPPED_METADATA}
    annotations = meta.get("annotations")
    if annotations and not DROPPED_ANNOTATIONS.isdisjoint(annotations):
        kept["annotations"] = {k: v for k, v in annotations.items() if k not in DROPPED_ANNOTATIONS}
    return kept


def _compact(status: Any) -> str | Mapping[str, Any] | None:
    if status is None:
        return None
    try:
        return json.dumps(status, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):  # not JSON (only from a caller that is not the apiserver)
        return status  # type: ignore[no-any-return]


def _rv_older(candidate: str, known: str) -> bool:
    try:
        return int(candidate) < int(known)
    except ValueError:
        return False


def _failed_call(err: BaseException) -> str:
    """The operator's own function a raised error left last (``patch_status``, ``set_finalizers``): which write a
    409 refused, on one log line instead of a traceback."""
    frames = traceback.extract_tb(err.__traceback__)
    ours = [frame.name for frame in frames if f"{os.sep}inference_placement{os.sep}" in frame.filename]
    return ours[-1] if ours else type(err).__name__
