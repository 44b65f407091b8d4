"""Run one workload's requests through the simulated platforms under a policy.

Time advances step by step (the trace's step, 60 s by default, which is also the controller tick here). At the
start of each step the policy sees what a metrics system would have shown it (requests per past step, p99 latency
of the last step, mean service time, where it runs, the month-to-date bill) and answers with controls; the
requests of the step are then served in arrival order on the target that holds the traffic.

A move is make-before-break: the new target is provisioned (deploy, replicas or instances started and warm),
traffic switches when it is ready, the old target drains for ``migration.drain_seconds`` and is retired; both are
billed meanwhile. Controls may carry a time inside the step (the offline optimum starts moves early so they are
ready on a step boundary).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol

import numpy as np
import numpy.typing as npt

from inference_placement.api.spec import AcceleratorOption, InferenceWorkloadSpec, LatencyMeasure, TargetName
from inference_placement.policy.accelerators import memory_share_gb, spec_on, speed_factor
from inference_placement.policy.capacity import ClusterCapacity
from inference_placement.policy.economics import TargetEconomics, economics_for, workload_economics
from inference_placement.policy.feasibility import assess_feasibility
from inference_placement.policy.price_book import PriceBook
from inference_placement.routing.envoy import DEFAULT_LATENCY_BUCKETS_MS
from inference_placement.sim.aggregate import AGGREGATE_MIN_ARRIVALS, ServiceLaw, WaitMixture, demand_peak
from inference_placement.sim.platforms import Activator, ClusterPool, Dispatch, Pool, ServerlessPool, make_pool
from inference_placement.sim.traces import Requests, StepRequests

__all__ = [
    "Control",
    "Observation",
    "SimPolicy",
    "SimWorkload",
    "WorkloadResult",
    "ClusterOption",
    "cluster_options",
    "feasible_economics",
    "simulate",
    "FloatArray",
    "TARGET_INDEX",
    "FIRST_TOKEN_BOUNDS_SECONDS",
]

FloatArray = npt.NDArray[np.float64]
TARGET_INDEX = {TargetName.CLUSTER: 0, TargetName.CLOUDRUN: 1, TargetName.LAMBDA: 2}
FIRST_TOKEN_BOUNDS_SECONDS: FloatArray = np.asarray(DEFAULT_LATENCY_BUCKETS_MS, dtype=np.float64) / 1000.0
"""The bounds of the router's first-token histogram, seconds (``routing.envoy.FIRST_TOKEN_STAT``)."""


@dataclass(frozen=True)
class SimWorkload:
    """One workload of a benchmark row (or of a ``simulate`` run): its requests, and the spec every policy, the
    scoring (``spec.slo``) and the platform model read (nothing of the spec is copied)."""

    name: str
    spec: InferenceWorkloadSpec
    requests: Requests | StepRequests
    start: datetime


@dataclass(frozen=True)
class Control:
    """What a policy asks for: where the traffic goes and the capacity there."""

    target: TargetName
    replicas: int = 0
    """Cluster replicas."""
    warm_floor: int = 0
    """Serverless instances kept warm and billed while enabled (provisioned concurrency / min instances)."""
    warm_pings: int = 0
    """Serverless instances kept warm by pings."""
    idle_timeout_seconds: float | None = None
    """Cluster: scale to zero this long after the last request (Knative); None = keep the replicas."""
    activator: Activator | None = None
    """Cluster: how a request that finds no replica wakes one (the operator's router); None = at once."""
    overflow: TargetName | None = None
    """Cluster: the serverless target that takes the requests the replicas refuse (burst spillover); None = none."""
    overflow_warm_floor: int = 0
    overflow_warm_pings: int = 0
    zero_fall_through: TargetName | None = None
    """Cluster at zero: the serverless target a request that finds no ready replica goes to while one starts
    (serverless as the activator: ``policy.actuation.zero_answer``; deployed on first use, kept at no warm
    instance); None = the activator holds it."""
    accelerator: AcceleratorOption | None = None
    """Cluster: the acceptable accelerator its replicas run on; None = the spec's first. A change is a make-
    before-break move inside the cluster (replicas on the new one start, traffic moves when they are ready, the
    old ones drain)."""
    spot: bool | None = None
    """Cluster: for a workload asking for spot (``spec.cluster.spot``), True bills its replicas at the spot price,
    False at the on-demand price (the decision's capacity type, ``policy/spot.py``); None = the spec's pricing."""
    at: float | None = None
    """Seconds since the start of the trace; None = at the start of the current step."""


@dataclass(frozen=True)
class Observation:
    step: int
    t: float
    now: datetime
    step_seconds: float
    requests_per_step: FloatArray
    """Requests of every completed step so far (a view; do not modify)."""
    service_sum_per_step: FloatArray
    misses_per_step: FloatArray
    """Requests of every completed step that were slower than the SLO (what a latency histogram shows)."""
    peak_in_flight_per_step: FloatArray
    """Peak demand in flight during each completed step: requests that would be in flight had none waited (what
    the router's in-flight gauge reads while capacity suffices). For a policy with ``in_flight_sample_seconds``,
    the largest of the gauge's readings at those intervals (as scraped: a burst between two scrapes is not seen;
    a step without a scrape reads 0); else the exact peak."""
    observed_p99_seconds: float | None
    """p99 latency of the requests of the last completed step (None when it had none)."""
    placement: TargetName | None
    migrating: bool
    last_migration_finished_at: datetime | None
    month_to_date_usd: float
    accelerator: AcceleratorOption | None = None
    """The accelerator the cluster's replicas run on (None = the spec's first)."""
    migrating_to: TargetName | None = None
    """The target of the migration in progress (the live ``status.migration.target``)."""
    spilling: bool = False
    """Burst spillover is in force (the live ``status.spill``, not ending)."""
    cluster_woken_at: float | None = None
    """Seconds since the trace's start of the cluster's last wake-up from zero by a request (None: never); what
    ``status.scaleToZero.lastWake`` holds live."""
    cluster_requests_held: bool = False
    """Requests wait for a woken replica now (the router's activator holds them)."""
    first_token_le_per_step: FloatArray | None = None
    """For a workload whose objective bounds the first token: each completed step's requests at or under each bound
    of the router's latency ladder (``FIRST_TOKEN_BOUNDS_SECONDS``), cumulative, its last column every request (the
    ``le="+Inf"`` bucket): the router's first-token histogram, per step (a view; do not modify). None otherwise."""


class SimPolicy(Protocol):
    name: str

    def reset(self, workload: SimWorkload, economics: dict[TargetName, TargetEconomics], price_book: PriceBook) -> None:
        """Called once per workload before its first step."""

    def tick(self, obs: Observation) -> Sequence[Control]:
        """Controls to apply from this step on (empty: no change)."""
        ...


@dataclass
class WorkloadResult:
    name: str
    policy: str
    requests: int
    misses: int
    cold_starts: int
    """Requests that waited for a cold start (a new instance or replica)."""
    migrations: int
    cost_usd: float
    attainment_target: float
    days: float
    cost_per_step: FloatArray = field(repr=False)
    requests_per_step: FloatArray = field(repr=False)
    misses_per_step: FloatArray = field(repr=False)
    placement_per_step: npt.NDArray[np.int8] = field(repr=False)
    capacity_per_step: FloatArray = field(repr=False)
    note: str = ""
    spilled: int = 0
    """Requests the cluster's replicas refused and the overflow target served (burst spillover)."""
    fell_through: int = 0
    """Requests that found the cluster with no ready replica and the serverless target answered (serverless as the
    activator), each also waking the cluster as the router's counters do live."""

    @property
    def attainment(self) -> float:
        return 1.0 - self.misses / self.requests if self.requests else 1.0

    @property
    def meets_slo(self) -> bool:
        return self.attainment >= self.attainment_target - 1e-12


@dataclass(frozen=True)
class ClusterOption:
    """One acceptable accelerator of the workload, as the simulator runs it."""

    option: AcceleratorOption
    econ: TargetEconomics
    speed: float
    """Service time relative to the trace's (``policy.accelerators.speed_factor`` on an unknown cluster: the
    time-slicing bound, every other tenant busy)."""


def cluster_options(spec: InferenceWorkloadSpec, price_book: PriceBook) -> list[ClusterOption]:
    """The spec's acceptable accelerators the cluster can run (priced, the model fits their memory), in order."""
    out: list[ClusterOption] = []
    capacity = ClusterCapacity()
    for option in spec.accelerator.options():
        memory = memory_share_gb(option)
        if memory is not None and spec.model.size_mb / 1000.0 > memory + 1e-9:
            continue
        on = spec_on(spec, option)
        if not assess_feasibility(on, price_book, capacity).feasible(TargetName.CLUSTER):
            continue
        econ = economics_for(TargetName.CLUSTER, on, price_book)
        if econ is not None:
            out.append(ClusterOption(option, econ, speed_factor(spec, option, capacity)))
    return out


def feasible_economics(spec: InferenceWorkloadSpec, price_book: PriceBook) -> dict[TargetName, TargetEconomics]:
    """Economics of the targets this workload may run on (allowed, within platform limits; capacity unknown)."""
    feasibility = assess_feasibility(spec, price_book, ClusterCapacity())
    return {t: e for t, e in workload_economics(spec, price_book).items() if feasibility.feasible(t)}


@dataclass
class _Migration:
    source: TargetName | None
    target: TargetName
    switch_at: float
    retire_at: float | None = None


class _Engine:
    def __init__(self, workload: SimWorkload, economics: dict[TargetName, TargetEconomics], price_book: PriceBook):
        self.workload = workload
        self.economics = economics
        self.price_book = price_book
        self.pools: dict[TargetName, Pool] = {}
        self.active: TargetName | None = None
        self.migration: _Migration | None = None
        self.retiring: list[tuple[float, TargetName]] = []
        self.migrations = 0
        self.last_finished: float | None = None
        self.retired_cold_starts = 0
        self.overflow: TargetName | None = None
        self.overflow_from = math.inf
        """When the overflow target is deployed and the router may spill to it (make before break)."""
        self.spilled = 0
        self.fall_through: TargetName | None = None
        """The serverless target a request finding no ready cluster replica goes to (``Control.zero_fall_through``)."""
        self.fall_through_from: dict[TargetName, float] = {}
        """When each fall-through target deployed so far may take requests (the live operator deploys it on the
        first zero decision and keeps it: free while idle)."""
        self.fell_through = 0
        self.options = {o.option.key(): o for o in cluster_options(workload.spec, price_book)}
        """The acceptable accelerators the cluster can run, by ``AcceleratorOption.key``."""
        self.on_demand: dict[tuple[str, int, str, str, int], TargetEconomics] = {}
        """For a workload asking for spot: each accelerator's economics on on-demand nodes (what a decision to
        keep it off spot bills)."""
        if workload.spec.cluster.spot:
            cluster = workload.spec.cluster.model_copy(update={"spot": False})
            plain = workload.spec.model_copy(update={"cluster": cluster})
            self.on_demand = {o.option.key(): o.econ for o in cluster_options(plain, price_book)}
        self.spot: bool | None = None
        """The capacity type the last cluster control asked for (``Control.spot``)."""
        self.first_key = workload.spec.accelerator.key()
        self.switch: tuple[float, ClusterPool] | None = None
        """A change of accelerator under way: when the new replicas are ready, and their pool."""
        self.old_pools: list[ClusterPool] = []
        """Pools left behind by a change of accelerator, billed until they drained."""

    def _key(self, option: AcceleratorOption | None) -> tuple[str, int, str, str, int]:
        key = option.key() if option is not None else self.first_key
        return key if key in self.options else self.first_key

    def _cluster_econ(self, key: tuple[str, int, str, str, int] | None) -> TargetEconomics:
        """The replicas' economics on accelerator ``key``, on the capacity type the last control asked for."""
        known = self.options.get(key) if key is not None else None
        econ = known.econ if known is not None else self.economics[TargetName.CLUSTER]
        if self.spot is False and key is not None:
            return self.on_demand.get(key, econ)
        return econ

    def _cluster_pool(self, key: tuple[str, int, str, str, int]) -> ClusterPool:
        known = self.options.get(key)
        speed = known.speed if known is not None else 1.0
        return ClusterPool(self._cluster_econ(key), service_factor=speed, accelerator_key=key)

    @property
    def accelerator(self) -> AcceleratorOption | None:
        pool = self.pools.get(TargetName.CLUSTER)
        if not isinstance(pool, ClusterPool) or pool.accelerator_key is None:
            return None
        known = self.options.get(pool.accelerator_key)
        return known.option if known is not None else None

    def all_pools(self) -> list[Pool]:
        pools = [*self.pools.values(), *self.old_pools]
        if self.switch is not None:
            pools.append(self.switch[1])
        return pools

    def part_factor(self) -> float:
        pool = self.pools.get(self.active) if self.active is not None else None
        return pool.service_factor if isinstance(pool, ClusterPool) else 1.0

    def dispatcher(self) -> Callable[[float, float], Dispatch] | None:
        """Where the next request goes: the active target's pool, or, while spilling, the cluster's replicas with
        the overflow target taking what they refuse."""
        if self.active is None:
            return None
        active = self.pools[self.active]
        overflow = self.overflow
        fall = self.fall_through
        if overflow is None and fall is not None and isinstance(active, ClusterPool):
            fall_to = self.pool(fall)
            since = self.fall_through_from.get(fall, math.inf)

            def fall_through(t: float, service: float) -> Dispatch:
                # the composite's pods sub-cluster has no healthy host: the request goes to the serverless target,
                # and the router's counter of it wakes the cluster at the operator's next poll
                if t >= since and not active.any_ready(t):
                    active.notice(t)
                    self.fell_through += 1
                    return fall_to.dispatch(t, service)
                return active.dispatch(t, service)

            return fall_through
        if overflow is None or not isinstance(active, ClusterPool):
            return active.dispatch
        spill_to = self.pool(overflow)

        def spill(t: float, service: float) -> Dispatch:
            if t >= self.overflow_from and not active.has_free_slot(t):
                self.spilled += 1
                return spill_to.dispatch(t, service)
            return active.dispatch(t, service)

        return spill

    def falls_through_at(self, t: float) -> bool:
        """A request at ``t`` may fall through to serverless (the cluster serves with no ready replica)."""
        cluster = self.pools.get(TargetName.CLUSTER)
        return (
            self.fall_through is not None
            and self.active is TargetName.CLUSTER
            and isinstance(cluster, ClusterPool)
            and not cluster.any_ready(t)
        )

    def _set_fall_through(self, control: Control, t: float) -> None:
        """The cluster's answer at zero, as the live reconciler keeps ``status.scaleToZero.answeredBy``: set by a
        control that asks for it (the target deployed on first use, at no warm instance), kept by one that does
        not while the cluster has no ready replica (a wake under way), else cleared (its target stays deployed:
        free while idle)."""
        target = control.zero_fall_through if control.target is TargetName.CLUSTER else None
        if target is not None and target in self.economics:
            if target not in self.fall_through_from:
                econ = self.economics[target]
                self.fall_through_from[target] = t + econ.provision_seconds - econ.cold_start_seconds
            self.fall_through = target
            return
        cluster = self.pools.get(TargetName.CLUSTER)
        waking = isinstance(cluster, ClusterPool) and not cluster.any_ready(t)
        if control.target is not TargetName.CLUSTER or not waking:
            self.fall_through = None

    def _set_overflow(self, control: Control, t: float) -> None:
        """Start, change or end the spill to ``control.overflow`` (deployed first; drained before it retires)."""
        target = control.overflow if control.target is TargetName.CLUSTER else None
        if target is not None and target not in self.economics:
            target = None
        if self.overflow is not None and self.overflow is not target:
            self.retiring.append((t + self.price_book.migration.drain_seconds, self.overflow))
            self.overflow, self.overflow_from = None, math.inf
        if target is None:
            return
        econ = self.economics[target]
        if self.overflow is None:
            self.overflow_from = t + econ.provision_seconds - econ.cold_start_seconds
            self.retiring = [(when, source) for when, source in self.retiring if source is not target]
        self.overflow = target
        pool = self.pool(target)
        assert isinstance(pool, ServerlessPool), "the overflow is a serverless target"
        pool.set_levels(t, control.overflow_warm_floor, control.overflow_warm_pings, available_from=self.overflow_from)

    def pool(self, target: TargetName, accelerator: AcceleratorOption | None = None) -> Pool:
        pool = self.pools.get(target)
        stale = isinstance(pool, ClusterPool) and pool.accelerator_key != self._key(accelerator)
        if isinstance(pool, ClusterPool) and stale and target is not self.active:
            # the cluster comes back on another accelerator: a new pool (the old one's bill runs out as it drained)
            self.old_pools.append(pool)
            pool = None
        if pool is None or (isinstance(pool, ServerlessPool) and pool.retired_at is not None):
            if pool is not None:
                self.retired_cold_starts += pool.cold_starts
            if target is TargetName.CLUSTER:
                pool = self._cluster_pool(self._key(accelerator))
            else:
                pool = make_pool(self.economics[target])
            self.pools[target] = pool
        return pool

    def _change_accelerator(self, control: Control, t: float) -> bool:
        """On the cluster, a control naming another accelerator starts a make-before-break change; True if so
        (or one is under way for it: the control sizes the new replicas)."""
        key = self._key(control.accelerator)
        if self.switch is not None:
            if self.switch[1].accelerator_key == key:
                self.switch[1].idle_timeout_seconds = control.idle_timeout_seconds
                self.switch[1].activator = control.activator
                self.switch[1].provision(t, max(1, control.replicas))
                return True
            return False  # one change at a time
        pool = self.pools.get(TargetName.CLUSTER)
        if not isinstance(pool, ClusterPool) or pool.accelerator_key == key:
            return False
        self.spot = control.spot
        new = self._cluster_pool(key)
        new.idle_timeout_seconds = control.idle_timeout_seconds
        new.activator = control.activator
        ready = new.provision(t, max(1, control.replicas))
        self.switch = (max(ready, t), new)
        self.migrations += 1
        return True

    def _set_level(
        self,
        target: TargetName,
        control: Control,
        t: float,
        *,
        available_from: float | None = None,
        prewarmed: bool = False,
        serving_check: bool = False,
    ) -> float:
        if target is TargetName.CLUSTER:
            self.spot = control.spot
        pool = self.pool(target, control.accelerator)
        if isinstance(pool, ClusterPool):
            # a change of capacity type rolls the replicas onto spot or on-demand nodes: billed at that price on
            pool.econ = self._cluster_econ(pool.accelerator_key)
            pool.idle_timeout_seconds = control.idle_timeout_seconds
            pool.activator = control.activator
            replicas = max(1, control.replicas) if serving_check else control.replicas
            ready = pool.provision(t, replicas, prewarmed=prewarmed)
            pool.ordered = control.replicas  # the replica a health check needed is not asked for
            return ready
        # a target serves only after its own health check passed on a warm instance (kept only if asked)
        return pool.set_levels(
            t,
            control.warm_floor,
            control.warm_pings,
            available_from=available_from,
            prewarmed=prewarmed,
            warm_up=1 if serving_check else 0,
        )

    def apply(self, control: Control, t: float) -> None:
        target = control.target
        if target not in self.economics:
            return
        if self.active is None and self.migration is None:
            # first placement: deployed before the trace starts, warm at t (as for every policy)
            self._set_level(target, control, t, prewarmed=True, serving_check=True)
            self.active = target
            self._set_overflow(control, t)
            self._set_fall_through(control, t)
            return
        if self.migration is not None:
            if target is self.migration.target:
                self._set_level(target, control, t)
            return
        if target is self.active:
            if target is TargetName.CLUSTER and self._change_accelerator(control, t):
                self._set_overflow(control, t)
                self._set_fall_through(control, t)
                return
            self._set_level(target, control, t)
            self._set_overflow(control, t)
            self._set_fall_through(control, t)
            return
        # make before break: provision the target, switch when it is ready (a spill ends: the cluster leaves)
        self._set_overflow(control, t)
        self._set_fall_through(control, t)
        econ = self.economics[target]
        deploy = econ.provision_seconds - econ.cold_start_seconds
        ready = self._set_level(target, control, t, available_from=t + deploy, serving_check=True)
        if isinstance(self.pools[target], ClusterPool):
            ready = max(ready, t + econ.provision_seconds)
        self.migration = _Migration(self.active, target, switch_at=max(ready, t))
        self.migrations += 1

    def serve_aggregate(
        self,
        t0: float,
        t1: float,
        lam: float,
        law: ServiceLaw,
        peak: float,
        pending: list[tuple[float, Control]],
    ) -> tuple[WaitMixture, float]:
        """Serve a high-volume step in aggregate: cut it where a control applies, a migration event is due or a
        replica becomes ready, and serve each piece on the target holding the traffic (``sim/aggregate.py``)."""
        waits = WaitMixture()
        cold = 0.0
        t = t0
        while t < t1:
            if pending and pending[0][0] <= t:
                when, control = pending.pop(0)
                self.advance(when)
                self.apply(control, when)
                continue
            if self.due() <= t:
                self.advance(t)
                continue
            pool = self.pools[self.active] if self.active is not None else None
            end = min(t1, pending[0][0] if pending else math.inf, self.due())
            if pool is not None:
                end = min(end, pool.next_ready(t))
            end = max(end, math.nextafter(t, math.inf))
            if pool is None:
                # nothing placed: the requests fail
                waits.fixed_weights.append(lam * (end - t))
                waits.fixed_waits.append(math.inf)
            elif isinstance(pool, ClusterPool):
                part, c = pool.serve_aggregate(t, end, lam, law)
                waits.add(part)
                cold += c
            else:
                part, c = pool.serve_aggregate(t, end, lam, law, peak)
                waits.add(part)
                cold += c
            t = end
        return waits, cold

    def leave_aggregate(self, t: float, law: ServiceLaw) -> None:
        for pool in self.pools.values():
            pool.leave_aggregate(t, law)

    def due(self) -> float:
        """Next time a migration event is due (switch or retire), or +inf."""
        times = [when for when, _ in self.retiring]
        if self.migration is not None:
            times.append(self.migration.switch_at)
        if self.switch is not None:
            times.append(self.switch[0])
        return min(times) if times else float("inf")

    def advance(self, t: float) -> None:
        """Run the migration events due at or before ``t``."""
        drain = self.price_book.migration.drain_seconds
        if self.switch is not None and self.switch[0] <= t:
            when, new = self.switch
            old = self.pools[TargetName.CLUSTER]
            assert isinstance(old, ClusterPool)
            old.retire(when + drain)  # in-flight requests finish; billed until the drain is over
            self.old_pools.append(old)
            self.pools[TargetName.CLUSTER] = new
            self.switch = None
            self.last_finished = when + drain
        m = self.migration
        if m is not None and m.switch_at <= t:
            if m.source is not None:
                self.retiring.append((m.switch_at + drain, m.source))
                self.last_finished = m.switch_at + drain
            else:
                self.last_finished = m.switch_at
            self.active = m.target
            self.migration = None
        if self.retiring:
            keep = []
            for when, source in self.retiring:
                kept = (self.active, self.overflow, self.fall_through)
                if when <= t and source not in kept:
                    pool = self.pools.get(source)
                    if pool is not None:
                        pool.retire(when)
                elif source not in kept:
                    keep.append((when, source))
            self.retiring = keep


def _in_flight_at(in_flight: list[float], t: float) -> int:
    """Requests in flight at ``t`` (of those that arrived by then): drops the ones that ended from the heap."""
    while in_flight and in_flight[0] <= t:
        heapq.heappop(in_flight)
    return len(in_flight)


def simulate(  # noqa: C901 - shrinks when replicas come from policy/ (issue 23)
    workload: SimWorkload,
    policy: SimPolicy,
    price_book: PriceBook,
    *,
    economics: dict[TargetName, TargetEconomics] | None = None,
    warmup_seconds: float = 0.0,
    aggregate_min_arrivals: float = AGGREGATE_MIN_ARRIVALS,
) -> WorkloadResult:
    """Serve the workload's requests under ``policy``; bill, count misses, cold starts and migrations.

    The first ``warmup_seconds`` run (the policy observes them) but are neither billed nor scored: the operator
    is taken as already running when scoring starts, as it would be in production.

    A workload kept as counts per step (``StepRequests``) is served step by step: request by request where a step
    has fewer than ``aggregate_min_arrivals`` requests or burst spillover is in force, else in aggregate
    (``sim/aggregate.py``: M/G/c with a fluid backlog), producing the same observation signals. Memory stays
    O(steps + one step's requests) whatever the volume; ``aggregate_min_arrivals=math.inf`` serves every request.
    """
    econ = economics if economics is not None else feasible_economics(workload.spec, price_book)
    reqs = workload.requests
    step = reqs.step_seconds
    steps = reqs.steps
    engine = _Engine(workload, econ, price_book)
    policy.reset(workload, econ, price_book)

    cost = np.zeros(steps)
    requests = np.zeros(steps)
    misses = np.zeros(steps)
    service_sum = np.zeros(steps)
    peaks = np.zeros(steps)
    in_flight: list[float] = []  # when each request would end had it not waited (a heap): the demand in flight
    track_peaks = bool(getattr(policy, "observes_in_flight", False))
    sample_every = float(getattr(policy, "in_flight_sample_seconds", 0.0) or 0.0) if track_peaks else 0.0
    samples_taken = 0  # the in-flight gauge is read at samples_taken x sample_every (a scrape)
    placement = np.full(steps, -1, dtype=np.int8)
    capacity = np.zeros(steps)
    law = ServiceLaw.of(reqs.service, reqs.latency_part) if isinstance(reqs, StepRequests) else None
    arrivals: list[float] = reqs.arrivals.tolist() if isinstance(reqs, Requests) else []
    services: list[float] = reqs.service.tolist() if isinstance(reqs, Requests) else []
    parts: list[float] = reqs.latency_part.tolist() if isinstance(reqs, Requests) else []
    n = len(arrivals)
    expected_misses = 0.0
    counted_misses = 0
    slo = workload.spec.slo.objective_seconds + 1e-9
    i = 0
    total_cost = 0.0
    total_misses = 0
    cold_requests = 0
    warmup_steps = min(steps, round(warmup_seconds / step)) if warmup_seconds > 0 else 0
    scored_migrations = 0
    p99: float | None = None
    # the router's first-token histogram, per step, for a workload whose objective bounds the first token
    measures_first_token = workload.spec.slo.latency_measure is LatencyMeasure.FIRST_TOKEN
    first_token_le = np.zeros((steps, FIRST_TOKEN_BOUNDS_SECONDS.size + 1)) if measures_first_token else None
    start = workload.start
    for k in range(steps):
        t0 = k * step
        t1 = t0 + step
        finished = engine.last_finished
        cluster = engine.pools.get(TargetName.CLUSTER)
        woken_at = cluster.woken_at if isinstance(cluster, ClusterPool) else None
        obs = Observation(
            step=k,
            t=t0,
            now=start + timedelta(seconds=t0),
            step_seconds=step,
            requests_per_step=requests[:k],
            service_sum_per_step=service_sum[:k],
            misses_per_step=misses[:k],
            peak_in_flight_per_step=peaks[:k],
            observed_p99_seconds=p99,
            first_token_le_per_step=first_token_le[:k] if first_token_le is not None else None,
            placement=engine.active,
            accelerator=engine.accelerator,
            migrating=engine.migration is not None or engine.switch is not None,
            migrating_to=engine.migration.target if engine.migration is not None else None,
            spilling=engine.overflow is not None,
            last_migration_finished_at=start + timedelta(seconds=finished) if finished is not None else None,
            month_to_date_usd=total_cost,
            cluster_woken_at=woken_at,
            cluster_requests_held=isinstance(cluster, ClusterPool) and cluster.waking(t0),
        )
        controls = sorted(policy.tick(obs), key=lambda c: t0 if c.at is None else c.at)
        migrations_before = engine.migrations
        pending = [(t0 if c.at is None else max(c.at, t0), c) for c in controls]
        step_latencies: list[float] = []
        step_peak = 0
        step_misses = 0
        step_services = 0.0
        if isinstance(reqs, StepRequests) and law is not None:
            count = int(reqs.counts[k])
            spilling = engine.overflow is not None or any(c.overflow is not None for _, c in pending)
            # at zero with a serverless answer, each request may find no ready replica: served one by one
            spilling = spilling or engine.falls_through_at(t0) or any(c.zero_fall_through for _, c in pending)
            if count >= aggregate_min_arrivals and not spilling:
                lam = count / step
                # the work poured in is the step's own (the very requests the per-request path would serve)
                step_law = replace(law, mean=reqs.service_sum(k) / count)
                a_now = lam * law.mean
                a_before = float(requests[k - 1]) / step * law.mean if k > 0 else a_now
                peak = demand_peak(a_now, a_before, step, law.mean)
                waits, cold = engine.serve_aggregate(t0, t1, lam, step_law, peak, pending)
                share = waits.miss_share(law, slo) if waits.weight > 0 else 0.0
                expected_misses += count * share
                step_misses = math.floor(expected_misses + 1e-9) - counted_misses
                counted_misses += step_misses
                step_services = reqs.service_sum(k)
                if first_token_le is not None:
                    # no wait recorded: each request's latency is its part alone
                    bounds = FIRST_TOKEN_BOUNDS_SECONDS
                    late = waits.late_share(law, bounds) if waits.weight > 0 else law.part_above(bounds)
                    first_token_le[k, :-1] = count * np.clip(1.0 - late, 0.0, 1.0)
                    first_token_le[k, -1] = count
                if cold and k >= warmup_steps:
                    cold_requests += round(cold)
                in_flight = []
                step_peak = round(peak)
                p99 = waits.latency_quantile(law, 0.99) if count else None
                engine.advance(t1 - 1e-9)
                step_cost = 0.0
                for pool in engine.pools.values():
                    step_cost += pool.accrue(t0, t1)
                if k >= warmup_steps:
                    scored_migrations += engine.migrations - migrations_before
                    total_misses += step_misses
                else:
                    step_cost = 0.0
                cost[k] = step_cost
                total_cost += step_cost
                requests[k] = count
                misses[k] = step_misses
                service_sum[k] = step_services
                peaks[k] = step_peak
                if engine.active is not None:
                    placement[k] = TARGET_INDEX[engine.active]
                    capacity[k] = engine.pools[engine.active].size
                continue
            engine.leave_aggregate(t0, law)
            step_arrivals, step_service, step_parts = reqs.step_requests(k)
            arrivals, services, parts = step_arrivals.tolist(), step_service.tolist(), step_parts.tolist()
            i, n = 0, len(arrivals)
        due = engine.due()
        dispatch = engine.dispatcher()
        while True:
            arrival = arrivals[i] if i < n and arrivals[i] < t1 else None
            if pending and pending[0][0] <= (arrival if arrival is not None else t1):
                when, control = pending.pop(0)
                engine.advance(when)
                engine.apply(control, when)
                due = engine.due()
                dispatch = engine.dispatcher()
                continue
            if arrival is None:
                break
            if due <= arrival:
                engine.advance(arrival)
                due = engine.due()
                dispatch = engine.dispatcher()
            if dispatch is None:
                # nothing placed: the request fails
                step_misses += 1
                step_latencies.append(float("inf"))
                i += 1
                continue
            service = services[i]
            begin, cold = dispatch(arrival, service)
            if track_peaks:
                if sample_every:
                    while samples_taken * sample_every <= arrival:
                        step_peak = max(step_peak, _in_flight_at(in_flight, samples_taken * sample_every))
                        samples_taken += 1
                while in_flight and in_flight[0] <= arrival:
                    heapq.heappop(in_flight)
                heapq.heappush(in_flight, arrival + service)
                if not sample_every and len(in_flight) > step_peak:
                    step_peak = len(in_flight)
            factor = engine.part_factor()
            part = parts[i] * factor
            latency = begin - arrival + part
            step_latencies.append(latency)
            step_services += service * factor
            if latency > slo:
                step_misses += 1
            if cold and k >= warmup_steps:
                cold_requests += 1
            i += 1
        engine.advance(t1 - 1e-9)
        step_cost = 0.0
        for pool in engine.all_pools():
            step_cost += pool.accrue(t0, t1)
        if k >= warmup_steps:
            scored_migrations += engine.migrations - migrations_before
        else:
            step_cost = 0.0
        cost[k] = step_cost
        total_cost += step_cost
        requests[k] = len(step_latencies)
        misses[k] = step_misses
        if k >= warmup_steps:
            total_misses += step_misses
        service_sum[k] = step_services
        if sample_every:
            while samples_taken * sample_every < t1:
                step_peak = max(step_peak, _in_flight_at(in_flight, samples_taken * sample_every))
                samples_taken += 1
            peaks[k] = step_peak
        else:
            while in_flight and in_flight[0] <= t0:
                heapq.heappop(in_flight)
            peaks[k] = max(step_peak, len(in_flight))
        engine.old_pools = [p for p in engine.old_pools if not p.drained(t1)]
        if engine.active is not None:
            placement[k] = TARGET_INDEX[engine.active]
            capacity[k] = engine.pools[engine.active].size
        if step_latencies:
            step_latencies.sort()
            p99 = step_latencies[min(len(step_latencies) - 1, int(0.99 * len(step_latencies)))]
            if first_token_le is not None:
                first_token_le[k, :-1] = np.searchsorted(step_latencies, FIRST_TOKEN_BOUNDS_SECONDS, side="right")
                first_token_le[k, -1] = len(step_latencies)
        else:
            p99 = None
    scored_requests = int(requests[warmup_steps:].sum())
    return WorkloadResult(
        name=workload.name,
        policy=policy.name,
        requests=scored_requests,
        misses=total_misses,
        cold_starts=cold_requests,
        migrations=scored_migrations,
        cost_usd=total_cost,
        attainment_target=workload.spec.slo.attainment,
        days=(steps - warmup_steps) * step / 86400.0,
        cost_per_step=cost,
        requests_per_step=np.where(np.arange(steps) >= warmup_steps, requests, 0.0),
        misses_per_step=np.where(np.arange(steps) >= warmup_steps, misses, 0.0),
        placement_per_step=placement,
        capacity_per_step=capacity,
        spilled=engine.spilled,
        fell_through=engine.fell_through,
    )
