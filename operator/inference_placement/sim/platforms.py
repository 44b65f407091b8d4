"""The simulated platforms: replicas and instances with slots, cold starts, keep-alive, scaling and billing.

Rates and timings come from the same ``TargetEconomics`` the policy prices with (one source of truth); the
mechanics below are what the cost model only estimates:

- cluster: every replica has ``concurrency`` slots; a new replica serves after pod start + model load; requests
  queue FIFO for the earliest free slot; a request that arrives with no replica starts one (activator); an idle
  timeout (Knative) scales to zero; replicas are billed from creation until removed (after their in-flight work);
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

from inference_placement.policy.economics import Billing, TargetEconomics

__all__ = ["ClusterPool", "Dispatch", "Pool", "ServerlessPool", "make_pool"]


Dispatch = tuple[float, bool]
"""(when the request starts being served: arrival + queueing + cold start, whether it waited for a cold start)."""


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
    replicas: list[_Replica] = field(default_factory=list)
    _closed: list[tuple[float, float]] = field(default_factory=list)
    _last_activity: float = 0.0
    _request_cost: float = 0.0
    cold_starts: int = 0

    @property
    def size(self) -> int:
        return len(self.replicas)

    def _add(self, t: float, ready: float) -> _Replica:
        c = max(1, self.econ.concurrency)
        replica = _Replica(created=t, ready=ready, slots=[ready] * c, busy_until=ready, billed_until=t)
        self.replicas.append(replica)
        self._last_activity = max(self._last_activity, ready)
        if ready > t:
            self.cold_starts += 1
        return replica

    def provision(self, t: float, n: int, *, prewarmed: bool = False) -> float:
        """Set ``n`` replicas at ``t``; returns when the last new one is ready."""
        self._scale_to_zero_check(t)
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

    def dispatch(self, t: float, service: float) -> Dispatch:
        if self.idle_timeout_seconds is not None:
            self._scale_to_zero_check(t)
        replicas = self.replicas
        if not replicas:
            self._add(t, t + self.econ.cold_start_seconds)  # activator: a request wakes a replica
            replicas = self.replicas
        best = replicas[0]
        if len(replicas) > 1:
            free = best.slots[0]
            for r in replicas:
                if r.slots[0] < free:
                    best, free = r, r.slots[0]
        slot = best.slots[0]
        start = slot if slot > t else t
        end = start + service
        heapq.heapreplace(best.slots, end)
        if end > best.busy_until:
            best.busy_until = end
        if end > self._last_activity:
            self._last_activity = end
        return start, best.ready > t

    def has_free_slot(self, t: float) -> bool:
        """Whether a ready replica has a free slot at ``t`` (else its model server refuses: the queue cap)."""
        return any(r.ready <= t and r.slots[0] <= t for r in self.replicas)

    def retire(self, t: float) -> None:
        for r in self.replicas:
            self._closed.append((r.billed_until, max(t, r.busy_until)))
        self.replicas = []

    def accrue(self, t0: float, t1: float) -> float:
        """USD billed in [t0, t1) (replica time; the cluster has no per-request charge)."""
        if self.idle_timeout_seconds is not None:
            self._scale_to_zero_check(t1)
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
