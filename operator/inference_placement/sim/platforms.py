"""The simulated platforms: replicas and instances with slots, cold starts, keep-alive, scaling and billing.

Rates and timings come from the same ``TargetEconomics`` the policy prices with (one source of truth); the
mechanics below are what the cost model only estimates:

- cluster: every replica has ``concurrency`` slots; a new replica serves after pod start + model load; requests
  queue FIFO for the earliest free slot; a request that arrives with no replica starts one: at once (Knative's
  activator, the baselines), or as the operator's router does (``Activator``: the request is held, the operator
  notices it at its next poll and scales up, a hold longer than the bound fails); an idle timeout (Knative) scales
  to zero; replicas are billed from creation until removed (after their in-flight work);
- serverless: instances with ``concurrency`` slots; a request that finds no free warm slot starts a new instance
  (cold start; Lambda never queues, Cloud Run queues on an instance that frees sooner than a cold start) unless the
  instance cap is reached; idle instances are reclaimed ``keep_alive`` after their last use, except the ones kept
  warm (pings, or billed floor instances: provisioned concurrency / min instances); billing per the price book
  (Lambda: duration incl. INIT + fee, at provisioned concurrency's lower duration price when one of its instances
  serves; Cloud Run request-based: busy time + fee; instance-based: whole life).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from inference_placement.policy.economics import Billing, TargetEconomics
from inference_placement.policy.queueing import busy_instances
from inference_placement.sim.aggregate import ServiceLaw, WaitMixture, fill_slots, segment_waits

__all__ = ["Activator", "ClusterPool", "Dispatch", "Pool", "ServerlessPool", "make_pool"]

_FAST_PICK_FROM = 64
"""From this many replicas the earliest free slot is found with numpy over a cached array of each replica's
earliest slot (the same choice: the first replica holding the minimum) instead of a Python loop."""


def _settle_slots(slots: list[float], t: float, wait: float, busy: int, residual_mean: float) -> int:
    """Set a replica's or instance's slots as a fluid backlog and a steady load leave them: every slot busy until
    ``t + wait``, and ``busy`` of them busy for a residual service time beyond it (spread evenly over twice the mean
    residual). Returns how many busy slots it took."""
    taken = min(busy, len(slots))
    for i in range(len(slots)):
        residual = (i + 0.5) / taken * 2.0 * residual_mean if i < taken else 0.0
        slots[i] = max(slots[i], t + wait + residual)
    heapq.heapify(slots)
    return taken


Dispatch = tuple[float, bool]
"""(when the request starts being served: arrival + queueing + cold start, whether it waited for a cold start)."""


@dataclass(frozen=True)
class Activator:
    """The live data path of a cluster workload at zero replicas (``routing/activator.py``, ``controller/wake.py``):
    a request that finds no ready pod is held by the router's activator; the operator reads the held requests every
    ``notice_seconds`` (its polls fall on a fixed grid from the trace's start, so a request waits for the next one)
    and scales the Deployment up at once; the replica serves after its cold start. A request still held
    ``hold_seconds`` after its arrival (the spec's tolerable cold start) is answered 503: it fails."""

    notice_seconds: float
    hold_seconds: float
    release_after_seconds: float | None = None
    """While the pool is ordered to zero, a woken replica leaves once idle and this long after its wake, with no
    further control (the offline optimum's zero mode: the earliest the live operator may let it go); None = it
    stays until a control says otherwise (``ours``: the operator's next decision, which may not be zero before
    ``WakeTimings.keep_seconds``)."""

    def noticed(self, t: float) -> float:
        """When the operator's poll sees a request held since ``t``."""
        poll = self.notice_seconds
        return math.ceil(t / poll - 1e-9) * poll if poll > 0 else t


@dataclass
class _Replica:
    created: float
    ready: float
    slots: list[float]
    busy_until: float
    provisioned: bool = False
    last_used: float = 0.0
    billed_until: float = 0.0


@dataclass
class ClusterPool:
    econ: TargetEconomics
    idle_timeout_seconds: float | None = None
    """Scale to zero this long after the last request (Knative stable window + grace); None = never."""
    service_factor: float = 1.0
    """Service time on this pool's accelerator relative to the trace's (``policy.accelerators.speed_factor``)."""
    accelerator_key: tuple[str, int, str, str, int] | None = None
    """The accelerator its replicas run on (``AcceleratorOption.key``); None = the spec's first."""
    activator: Activator | None = None
    """How a request at zero replicas wakes one: None = at once (Knative's activator, as the baselines have it)."""
    woken_at: float | None = None
    """When the pool last went from zero to a replica because a request arrived (the operator's scale-up)."""
    wakes: int = 0
    ordered: int = 0
    """Replicas the last control asked for."""
    replicas: list[_Replica] = field(default_factory=list)
    _closed: list[tuple[float, float]] = field(default_factory=list)
    _last_activity: float = 0.0
    _request_cost: float = 0.0
    cold_starts: int = 0
    _aggregate_load: float | None = None
    """The demand (``lam x mean service``) of the last aggregate segment; None while serving request by request."""
    _heads: npt.NDArray[np.float64] | None = None

    @property
    def size(self) -> int:
        return len(self.replicas)

    def ready_slots(self, t: float) -> float:
        c = max(1, self.econ.concurrency)
        return float(c * sum(1 for r in self.replicas if r.ready <= t))

    def next_ready(self, t: float) -> float:
        """When the next replica still starting at ``t`` becomes ready (+inf: none)."""
        return min((r.ready for r in self.replicas if r.ready > t), default=math.inf)

    def serve_aggregate(self, t0: float, t1: float, lam: float, law: ServiceLaw) -> tuple[WaitMixture, float]:
        """Serve ``lam`` requests per second over [t0, t1) in aggregate (``sim/aggregate.py: fill_slots``, each
        replica's slots taken as free from its earliest free slot); returns the wait law of those requests and how
        many waited for a replica's start. The caller cuts segments where a replica becomes ready."""
        if not self.replicas and lam > 0:
            self._wake(t0)  # activator: a request wakes a replica
        if not self.replicas:
            return WaitMixture(), 0.0
        c = float(max(1, self.econ.concurrency))
        free_at = np.array([r.slots[0] for r in self.replicas])
        if self._aggregate_load is not None:
            # the load before left this much work in flight (equilibrium residuals of its requests)
            in_flight_work = self._aggregate_load * law.mean * (1.0 + law.scv) / 2.0
        else:
            in_flight_work = sum(s - t0 for r in self.replicas if r.slots[0] <= t0 for s in r.slots if s > t0)
        fresh = np.array([r.busy_until <= r.slots[0] for r in self.replicas])
        fill = fill_slots(free_at, np.full(free_at.size, c), t0, t1, lam, law, in_flight_work, fresh)
        self._aggregate_load = lam * law.mean
        cold = 0.0
        level = fill.level
        if level is not None:
            for r in self.replicas:
                if r.slots[0] < level:
                    if r.ready > t0:
                        cold += c  # bound to a replica still starting: its first requests wait for the start
                    r.slots = [level] * len(r.slots)
            self._heads = None
        if lam > 0:
            busy_until = (level if level is not None else t1) + law.mean
            for r in self.replicas:
                if r.ready <= t1 and busy_until > r.busy_until:
                    r.busy_until = busy_until
            if busy_until > self._last_activity:
                self._last_activity = busy_until
        return fill.waits, min(cold, lam * (t1 - t0))

    def leave_aggregate(self, t: float, law: ServiceLaw) -> None:
        """Back to request-by-request serving: the backlog and the steady load become busy slots."""
        load = self._aggregate_load
        if load is None:
            return
        slots = self.ready_slots(t)
        busy = round(min(load, slots))
        residual = law.mean * (1.0 + law.scv) / 2.0
        for r in self.replicas:
            if r.ready <= t:
                busy -= _settle_slots(r.slots, t, 0.0, busy, residual)
        self._aggregate_load = None
        self._heads = None

    def _add(self, t: float, ready: float) -> _Replica:
        c = max(1, self.econ.concurrency)
        replica = _Replica(created=t, ready=ready, slots=[ready] * c, busy_until=ready, billed_until=t)
        self.replicas.append(replica)
        self._heads = None
        self._last_activity = max(self._last_activity, ready)
        if ready > t:
            self.cold_starts += 1
        return replica

    def _wake(self, t: float) -> None:
        """A request arrived at ``t`` with no replica: start one (at once, or when the operator notices it)."""
        activator = self.activator
        if activator is None:
            self._add(t, t + self.econ.cold_start_seconds)
            return
        at = activator.noticed(t)
        self._add(at, at + self.econ.cold_start_seconds)
        self.woken_at = at
        self.wakes += 1
        if activator.release_after_seconds is None:
            self.ordered = max(self.ordered, 1)  # the operator's scale-up sets the Deployment to a replica

    def _release_check(self, t: float) -> None:
        """The optimum's zero mode: a woken replica leaves once idle, ``release_after_seconds`` after its wake."""
        activator = self.activator
        if activator is None or activator.release_after_seconds is None or self.ordered > 0 or not self.replicas:
            return
        end = max(r.busy_until for r in self.replicas)
        if self.woken_at is not None:
            end = max(end, self.woken_at + activator.release_after_seconds)
        if t >= end:
            for r in self.replicas:
                self._closed.append((r.billed_until, max(end, r.billed_until)))
            self.replicas = []
            self._heads = None

    def any_ready(self, t: float) -> bool:
        """A replica is ready at ``t`` (the router's pods cluster has a healthy host)."""
        return any(r.ready <= t for r in self.replicas)

    def notice(self, t: float) -> None:
        """A request that found no ready replica at ``t`` was answered elsewhere (serverless as the activator): with
        no replica yet, one starts as the operator orders it on noticing the request."""
        if not self.replicas:
            self._wake(t)

    def waking(self, t: float) -> bool:
        """Requests are held at ``t``: the pool was woken and none of its replicas is ready yet."""
        return self.woken_at is not None and bool(self.replicas) and all(r.ready > t for r in self.replicas)

    def provision(self, t: float, n: int, *, prewarmed: bool = False) -> float:
        """Set ``n`` replicas at ``t``; returns when the last new one is ready."""
        self._scale_to_zero_check(t)
        self.ordered = n
        if self.idle_timeout_seconds is not None and self.replicas:
            # with an idle timeout, the last replica leaves when the workload has been idle that long, not on order
            n = max(n, 1)
        ready = t if prewarmed else t + self.econ.cold_start_seconds
        last_ready = t
        while len(self.replicas) < n:
            self._add(t, ready)
            last_ready = ready
        if len(self.replicas) > n:
            # remove the ones still starting first, then the least busy
            victims = sorted(self.replicas, key=lambda r: (r.ready <= t, r.busy_until))[: len(self.replicas) - n]
            for victim in victims:
                self.replicas.remove(victim)
                self._closed.append((victim.billed_until, max(t, victim.busy_until)))
            self._heads = None
        if self.replicas:
            last_ready = max(last_ready, min(r.ready for r in self.replicas))
        return last_ready

    def _scale_to_zero_check(self, t: float) -> None:
        timeout = self.idle_timeout_seconds
        if timeout is None or not self.replicas:
            return
        idle_from = max(self._last_activity, max(r.busy_until for r in self.replicas))
        if t >= idle_from + timeout:
            end = idle_from + timeout
            for r in self.replicas:
                self._closed.append((r.billed_until, max(end, r.billed_until)))
            self.replicas = []
            self._heads = None

    def dispatch(self, t: float, service: float) -> Dispatch:
        if self.idle_timeout_seconds is not None:
            self._scale_to_zero_check(t)
        elif self.activator is not None:
            self._release_check(t)
        replicas = self.replicas
        if not replicas:
            self._wake(t)  # activator: a request wakes a replica
            replicas = self.replicas
        heads = None
        if len(replicas) >= _FAST_PICK_FROM:
            heads = self._heads
            if heads is None:
                heads = self._heads = np.array([r.slots[0] for r in replicas])
            index = int(heads.argmin())
            best = replicas[index]
        else:
            best = replicas[0]
            if len(replicas) > 1:
                free = best.slots[0]
                for r in replicas:
                    if r.slots[0] < free:
                        best, free = r, r.slots[0]
        slot = best.slots[0]
        start = slot if slot > t else t
        activator = self.activator
        if activator is not None and best.ready > t:
            first_ready = min(r.ready for r in replicas)
            if first_ready > t + activator.hold_seconds:
                return math.inf, True  # held by the activator past its bound: answered 503, never served
        end = start + service * self.service_factor
        heapq.heapreplace(best.slots, end)
        if heads is not None:
            heads[index] = best.slots[0]
        if end > best.busy_until:
            best.busy_until = end
        if end > self._last_activity:
            self._last_activity = end
        return start, best.ready > t

    def has_free_slot(self, t: float) -> bool:
        """Whether a ready replica has a free slot at ``t`` (else its model server refuses: the queue cap)."""
        return any(r.ready <= t and r.slots[0] <= t for r in self.replicas)

    def drained(self, t: float) -> bool:
        """No replica left and nothing billed after ``t`` (a pool left behind by a change of accelerator)."""
        return not self.replicas and all(end <= t for _, end in self._closed)

    def retire(self, t: float) -> None:
        for r in self.replicas:
            self._closed.append((r.billed_until, max(t, r.busy_until)))
        self.replicas = []
        self._heads = None

    def accrue(self, t0: float, t1: float) -> float:
        """USD billed in [t0, t1) (replica time; the cluster has no per-request charge)."""
        if self.idle_timeout_seconds is not None:
            self._scale_to_zero_check(t1)
        elif self.activator is not None:
            self._release_check(t1)
        rate = self.econ.instance_usd_per_second
        seconds = 0.0
        for r in self.replicas:
            begin = max(t0, r.billed_until)
            if t1 > begin:
                seconds += t1 - begin
                r.billed_until = t1
        if self._closed:
            keep: list[tuple[float, float]] = []
            for begin, end in self._closed:
                b = max(begin, t0)
                if end > b:
                    seconds += min(end, t1) - b
                if end > t1:
                    keep.append((max(begin, t1), end))
            self._closed = keep
        return seconds * rate


@dataclass
class _Instance:
    created: float
    ready: float
    slots: list[float]
    busy_until: float
    last_used: float
    billed_until: float
    """Request-based: end of the busy time already billed. Instance-based: end of the life already billed."""


@dataclass
class ServerlessPool:
    econ: TargetEconomics
    instances: list[_Instance] = field(default_factory=list)
    floor: int = 0
    """Instances billed while enabled (provisioned concurrency / min instances)."""
    pinged: int = 0
    """Instances kept warm by pings."""
    retired_at: float | None = None
    cold_starts: int = 0
    _request_cost: float = 0.0
    _closed_life: list[tuple[float, float]] = field(default_factory=list)
    _next_expiry: float = math.inf
    _levels_since: float = 0.0
    backlog: float = 0.0
    """Requests waiting in the fluid queue of the aggregate model (high-volume steps, at the instance cap)."""
    _aggregate_load: float | None = None

    def next_ready(self, t: float) -> float:
        return math.inf

    def serve_aggregate(
        self, t0: float, t1: float, lam: float, law: ServiceLaw, peak: float
    ) -> tuple[WaitMixture, float]:
        """Serve ``lam`` requests per second over [t0, t1) in aggregate: instances grow to hold the peak demand
        ``peak`` (up to the cap), each new one serving its first ``concurrency`` requests after its cold start;
        the rest queue as M/G/c over the instances' slots (a fluid backlog at the cap). Bills as the per-request
        path does: Lambda per request (duration rounded up: + half the granularity on average, INIT on a cold
        start), Cloud Run request-based for busy instance time (M/G/infinity packing, ``busy_instances``) plus the
        fee, instance-based for the instances' lives (``accrue``)."""
        self._reclaim(t0)
        econ = self.econ
        conc = max(1, econ.concurrency)
        if self._aggregate_load is None:
            self.backlog = 0.0
        arrivals = lam * (t1 - t0)
        need = min(econ.max_instances, max(self.warm_target, math.ceil(peak / conc - 1e-9))) if lam > 0 else 0
        new = max(0, need - len(self.instances))
        for _ in range(new):
            self._new_instance(t0, t0 + econ.cold_start_seconds, request_path=True)
        slots = float(conc * len(self.instances))
        outcome = segment_waits(lam, slots, self.backlog, t1 - t0, law)
        self.backlog = outcome.backlog_end
        self._aggregate_load = lam * law.mean
        waits = outcome.waits
        cold = min(float(new * conc), arrivals)
        if cold > 0 and arrivals > 0:
            keep = 1.0 - cold / arrivals
            waits.fixed_weights = [w * keep for w in waits.fixed_weights]
            waits.queue_weights = [w * keep for w in waits.queue_weights]
            waits.fixed_weights.append(cold)
            waits.fixed_waits.append(econ.cold_start_seconds)
        if lam > 0:
            busy_until = t1 + law.mean
            for inst in sorted(self.instances, key=lambda i: i.last_used, reverse=True)[:need]:
                inst.last_used = max(inst.last_used, busy_until)
                inst.busy_until = max(inst.busy_until, busy_until)
        billing = econ.billing
        if billing is Billing.PER_REQUEST:
            provisioned = self.floor > 0 and econ.floor_busy_usd_per_second is not None
            rate = (econ.floor_busy_usd_per_second if provisioned else econ.busy_usd_per_second) or 0.0
            billed = law.mean + econ.billing_granularity_seconds / 2.0
            self._request_cost += (
                arrivals * (billed * rate + econ.per_request_usd) + cold * econ.cold_start_seconds * rate
            )
        elif billing is Billing.REQUEST_BASED:
            busy = float(busy_instances(np.array([lam * law.mean]), conc)[0])
            self._request_cost += busy * (t1 - t0) * econ.busy_usd_per_second + arrivals * econ.per_request_usd
        return waits, cold

    def leave_aggregate(self, t: float, law: ServiceLaw) -> None:
        load = self._aggregate_load
        if load is None:
            return
        conc = max(1, self.econ.concurrency)
        slots = float(conc * len(self.instances))
        wait = self.backlog * law.mean / slots if slots > 0 else 0.0
        busy = round(min(load, slots))
        residual = law.mean * (1.0 + law.scv) / 2.0
        for inst in self.instances:
            busy -= _settle_slots(inst.slots, t, wait, busy, residual)
        self.backlog = 0.0
        self._aggregate_load = None

    @property
    def size(self) -> int:
        return len(self.instances)

    @property
    def warm_target(self) -> int:
        return self.floor + self.pinged

    def _new_instance(self, t: float, ready: float, *, request_path: bool, prewarmed: bool = False) -> _Instance:
        c = max(1, self.econ.concurrency)
        inst = _Instance(created=t, ready=ready, slots=[ready] * c, busy_until=ready, last_used=ready, billed_until=t)
        self.instances.append(inst)
        if prewarmed:
            # deployed and warmed before the trace starts: nothing of its start is in this bill
            return inst
        self.cold_starts += 1
        billing = self.econ.billing
        if billing is Billing.REQUEST_BASED:
            # start-up is billed; the instance's busy time is billed from here
            self._request_cost += (ready - t) * self.econ.busy_usd_per_second
            inst.billed_until = ready
        elif billing is Billing.PER_REQUEST and not request_path:
            # a ping that finds no warm instance pays the INIT of a cold start (a request pays it in its own bill)
            self._request_cost += self.econ.cold_start_usd
        self._next_expiry = min(self._next_expiry, inst.last_used + (self.econ.keep_alive_seconds or 0.0))
        return inst

    def set_levels(
        self,
        t: float,
        floor: int,
        pinged: int,
        *,
        available_from: float | None = None,
        prewarmed: bool = False,
        warm_up: int = 0,
    ) -> float:
        """Keep ``floor + pinged`` instances warm from ``t`` (and start at least ``warm_up`` now, e.g. the
        instance a new target's health check warms, without keeping it); returns when the last new one is ready."""
        self._reclaim(t)
        self._bill_levels(t)
        start = t if available_from is None else max(t, available_from)
        self.floor, self.pinged = floor, pinged
        last_ready = start
        need = max(floor + pinged, warm_up) - len(self.instances)
        for _ in range(max(0, need)):
            ready = start if prewarmed else start + self.econ.cold_start_seconds
            self._new_instance(start, ready, request_path=False, prewarmed=prewarmed)
            last_ready = ready
        self._next_expiry = -math.inf  # recompute on the next reclaim
        return last_ready

    def _reclaim(self, t: float) -> None:
        if t < self._next_expiry:
            return
        keep_alive = self.econ.keep_alive_seconds or 0.0
        warm = self.warm_target
        if len(self.instances) <= warm:
            self._next_expiry = math.inf
            return
        ordered = sorted(self.instances, key=lambda i: i.last_used, reverse=True)
        kept = ordered[:warm]
        next_expiry = math.inf
        survivors = list(kept)
        for inst in ordered[warm:]:
            expires = max(inst.last_used, inst.busy_until) + keep_alive
            if expires <= t:
                self._close(inst, expires)
            else:
                survivors.append(inst)
                next_expiry = min(next_expiry, expires)
        self.instances = survivors
        self._next_expiry = next_expiry

    def _close(self, inst: _Instance, end: float) -> None:
        if self.econ.billing is Billing.INSTANCE_BASED:
            self._closed_life.append((inst.billed_until, max(end, inst.billed_until)))

    def dispatch(self, t: float, service: float) -> Dispatch:
        if t >= self._next_expiry:
            self._reclaim(t)
        econ = self.econ
        best: _Instance | None = None
        earliest: _Instance | None = None
        earliest_free = math.inf
        busy = 0
        for inst in self.instances:
            free = inst.slots[0]
            if free <= t:
                if best is None or inst.last_used > best.last_used:
                    best = inst
            else:
                busy += 1
                if free < earliest_free:
                    earliest, earliest_free = inst, free
        cold = False
        if best is not None:
            start = t
            inst = best
        else:
            can_grow = len(self.instances) < econ.max_instances
            queue_ok = econ.concurrency > 1 and earliest is not None and earliest_free <= t + econ.cold_start_seconds
            if can_grow and not queue_ok:
                inst = self._new_instance(t, t + econ.cold_start_seconds, request_path=True)
                start = inst.ready
                cold = True
            else:
                assert earliest is not None
                inst = earliest
                start = earliest_free
                cold = inst.ready > t
        end = start + service
        heapq.heapreplace(inst.slots, end)
        if end > inst.busy_until:
            inst.busy_until = end
        if end > inst.last_used:
            inst.last_used = end
        billing = econ.billing
        if billing is Billing.PER_REQUEST:
            billed = service + (econ.cold_start_seconds if cold and inst.created >= t else 0.0)
            gran = econ.billing_granularity_seconds
            if gran > 0:
                billed = math.ceil(billed / gran - 1e-9) * gran
            # provisioned concurrency serves first, at its own duration price; beyond it, on demand
            provisioned = busy < self.floor and econ.floor_busy_usd_per_second is not None
            rate = econ.floor_busy_usd_per_second if provisioned else econ.busy_usd_per_second
            self._request_cost += billed * (rate or 0.0) + econ.per_request_usd
        elif billing is Billing.REQUEST_BASED:
            begin = start if start > inst.billed_until else inst.billed_until
            if end > begin:
                self._request_cost += (end - begin) * econ.busy_usd_per_second
                inst.billed_until = end
            self._request_cost += econ.per_request_usd
        return start, cold

    def _bill_levels(self, t: float) -> None:
        """Floor instances and pings are billed per second while set; bill them up to ``t``."""
        econ = self.econ
        span = t - self._levels_since
        if span <= 0:
            return
        if econ.billing is not Billing.INSTANCE_BASED:
            if self.floor:
                self._request_cost += self.floor * econ.instance_usd_per_second * span
            if self.pinged:
                interval = econ.ping_interval_seconds or 60.0
                self._request_cost += self.pinged * econ.ping_usd * span / interval
        self._levels_since = t

    def retire(self, t: float) -> None:
        self._bill_levels(t)
        for inst in self.instances:
            self._close(inst, max(t, inst.busy_until))
        self.instances = []
        self.floor = self.pinged = 0
        self.retired_at = t
        self._next_expiry = math.inf

    def accrue(self, t0: float, t1: float) -> float:
        """USD billed in [t0, t1): per-request charges made in it, pings, floor instances, instance lifetimes."""
        self._reclaim(t1)
        self._bill_levels(t1)
        econ = self.econ
        cost = self._request_cost
        self._request_cost = 0.0
        if econ.billing is Billing.INSTANCE_BASED:
            seconds = 0.0
            for inst in self.instances:
                begin = max(t0, inst.billed_until)
                if t1 > begin:
                    seconds += t1 - begin
                    inst.billed_until = t1
            if self._closed_life:
                keep: list[tuple[float, float]] = []
                for begin, end in self._closed_life:
                    b = max(begin, t0)
                    if end > b:
                        seconds += min(end, t1) - b
                    if end > t1:
                        keep.append((max(begin, t1), end))
                self._closed_life = keep
            cost += seconds * econ.instance_usd_per_second
        return cost


Pool = ClusterPool | ServerlessPool


def make_pool(econ: TargetEconomics) -> Pool:
    if econ.billing is Billing.REPLICA:
        return ClusterPool(econ)
    return ServerlessPool(econ)
