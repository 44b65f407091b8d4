"""Burst spillover: the cluster keeps replicas for the base load, and requests beyond their slots overflow to a
serverless target on the same endpoint (Spock, LIBRA: the bursty part of demand to serverless).

The mechanism the router carries out: each model server refuses a request beyond its slots (429 at its queue cap)
and the router retries it on the serverless target; so the cluster part is a loss system and the overflow is what
it refuses. Per step, with Poisson arrivals at the observed rate and ``c`` slots busy for the service time, the
share refused is Erlang's loss formula B(c, a) with a = rate x service time; a burst shorter than a step that the
router saw (the step's in-flight peak) adds its excess over ``c`` to the overflow's own in-flight peak.

The plan: for a few base replica counts below what holding the peak needs, price the base replicas (billed all
window) plus the serverless target serving the overflow stream with its cheapest warm pool whose expected misses
(cold starts of the overflow) keep the whole workload within the SLO's risk budget; keep the cheapest, and use it
only when it is cheaper than holding the peak on the cluster by more than the hysteresis band; a spill already in
force ends only when holding the peak is cheaper by more than that band (the band the accelerator choice and the
move thresholds keep too: a rate that jitters around the break-even starts and ends no spill). No constant is
fitted: the loss formula, the cost model and the SLO's budget decide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from inference_placement.api.spec import SERVERLESS, TargetName
from inference_placement.policy.cost_model import Projection, project_many
from inference_placement.policy.economics import Billing, TargetEconomics
from inference_placement.policy.forecast import TrafficForecast
from inference_placement.policy.queueing import FloatArray, slots_scalar
from inference_placement.policy.slo_risk import SloTerms

__all__ = ["SpillPlan", "erlang_b", "spill_plan"]

_MAX_BASE_CANDIDATES = 8
_MAX_WARM_CANDIDATES = 6


def erlang_b(slots: int, offered: FloatArray) -> FloatArray:
    """Erlang's loss formula per step: the share of Poisson arrivals that find all ``slots`` busy, for each offered
    load ``offered`` (arrival rate x service time), by the stable recursion B(k) = a B(k-1) / (k + a B(k-1))."""
    a = np.maximum(np.asarray(offered, dtype=np.float64), 0.0)
    b = np.ones_like(a)
    for k in range(1, max(0, slots) + 1):
        b = a * b / (k + a * b)
    return b


@dataclass(frozen=True)
class SpillPlan:
    """Base replicas on the cluster, the overflow to one serverless target, and what it costs against holding."""

    target: TargetName
    """The serverless target that takes the overflow."""
    base_replicas: int
    slots_per_replica: int
    """Requests in flight per replica beyond which its model server refuses (and the router spills)."""
    overflow: Projection
    """The serverless target serving the overflow stream (``warm``: instances kept warm)."""
    overflow_share: float
    """Expected share of the window's requests that overflow."""
    miss_share: float
    """Expected share of the window's requests missing the SLO (cold starts of the overflow)."""
    usd_per_second: float
    holding_usd_per_second: float
    """The cluster holding the peak (its own plan), for comparison."""
    warm_floor: int = 0
    """Overflow instances the platform keeps warm and bills while enabled (Cloud Run min instances; a GPU
    instance-based service keeps its warm pool this way)."""
    warm_pings: int = 0
    """Overflow instances the operator keeps warm by pinging them."""
    ping_interval_seconds: float | None = None

    @property
    def overflow_above_in_flight(self) -> int:
        return self.base_replicas * self.slots_per_replica

    def describe(self, month_seconds: float) -> str:
        warm = self.overflow.warm
        kept = f", {warm} kept warm" if warm else ""
        return (
            f"base {self.base_replicas} replica(s) on cluster; overflow above {self.overflow_above_in_flight} in "
            f"flight to {self.target.value}{kept} ({self.overflow_share:.1%} of requests); projected "
            f"${self.usd_per_second * month_seconds:,.2f}/mo vs ${self.holding_usd_per_second * month_seconds:,.2f}"
            "/mo holding the peak"
        )


def _base_candidates(low: int, high: int) -> list[int]:
    if high < low:
        return []
    if high - low + 1 <= _MAX_BASE_CANDIDATES:
        return list(range(low, high + 1))
    grid = np.unique(np.round(np.geomspace(low, high, _MAX_BASE_CANDIDATES)).astype(int))
    return sorted({low, high, *[int(g) for g in grid]})


def _warm_candidates(econ: TargetEconomics, mean_in_flight: float, observed_peak: float, tail: float) -> list[int]:
    """Warm pools from none up to what holds the overflow's in-flight peak: the observed one, or the Poisson
    quantile of its mean at the SLO's sizing tail."""
    peak = max(observed_peak, slots_scalar(mean_in_flight, tail) if mean_in_flight > 0 else 0.0)
    top = min(max(0, econ.max_instances - econ.floor_instances), math.ceil(peak / max(1, econ.concurrency)))
    if top + 1 <= _MAX_WARM_CANDIDATES:
        return list(range(0, top + 1))
    grid = np.unique(np.round(np.geomspace(1, top, _MAX_WARM_CANDIDATES - 1)).astype(int))
    return sorted({0, *[int(g) for g in grid]})


def spill_plan(
    econs: dict[TargetName, TargetEconomics],
    holding: Projection,
    forecast: TrafficForecast,
    slo: SloTerms,
    hysteresis_fraction: float,
    in_force: bool = False,
) -> SpillPlan | None:
    """The cheapest base-plus-overflow mix that keeps the SLO's risk budget, when it beats ``holding`` (the
    cluster's own plan for the whole load) by more than ``hysteresis_fraction``, or, with a spill ``in_force``, as
    long as ``holding`` does not beat it by more than that; None otherwise."""
    cluster = econs.get(TargetName.CLUSTER)
    total_requests = forecast.requests
    if cluster is None or total_requests <= 0 or forecast.seconds <= 0:
        return None
    window_seconds = forecast.seconds
    holding_cost = holding.cost_usd()
    slots = max(1, cluster.concurrency)
    top = int(holding.capacity.max()) - 1 if holding.capacity.size else 0
    low = max(1, cluster.floor_instances)
    offered = forecast.estimated_rps * forecast.service_seconds  # the load each step's queue met
    peaks = forecast.peak_in_flight
    budget = slo.risk_budget * total_requests
    best: SpillPlan | None = None
    for target in (t for t in SERVERLESS if t in econs):
        econ = econs[target]
        if econ.billing is Billing.REPLICA:
            continue
        for base in _base_candidates(low, top):
            capacity = base * slots
            overflow_rps = forecast.rps * erlang_b(capacity, offered)
            overflow_peaks = None if peaks is None else np.maximum(peaks - capacity, 0.0)
            overflow = replace(forecast, rps=overflow_rps, peak_in_flight=overflow_peaks)
            base_cost = base * cluster.instance_usd_per_second * window_seconds
            observed_peak = float(overflow_peaks.max()) if overflow_peaks is not None and overflow_peaks.size else 0.0
            mean_in_flight = float((overflow_rps * forecast.service_seconds).max())
            warm = _warm_candidates(econ, mean_in_flight, observed_peak, slo.sizing_tail)
            for projection in project_many(econ, overflow, warm, slo):
                misses = float(projection.misses.sum())
                if misses > budget + 1e-9:
                    continue
                cost = base_cost + projection.cost_usd()
                if best is None or cost < best.usd_per_second * window_seconds:
                    instance_based = econ.billing is Billing.INSTANCE_BASED
                    best = SpillPlan(
                        target=target,
                        base_replicas=base,
                        slots_per_replica=slots,
                        overflow=projection,
                        overflow_share=float(overflow_rps.sum() * forecast.step_seconds) / total_requests,
                        miss_share=misses / total_requests,
                        usd_per_second=cost / window_seconds,
                        holding_usd_per_second=holding_cost / window_seconds,
                        warm_floor=econ.floor_instances + (projection.warm if instance_based else 0),
                        warm_pings=0 if instance_based else projection.warm,
                        ping_interval_seconds=None
                        if instance_based or not projection.warm
                        else econ.ping_interval_seconds,
                    )
    if best is None:
        return None
    best_cost = best.usd_per_second * window_seconds
    keeps = (
        best_cost * (1.0 - hysteresis_fraction) <= holding_cost
        if in_force
        else best_cost < holding_cost * (1.0 - hysteresis_fraction)
    )
    return best if keeps else None
