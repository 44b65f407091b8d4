"""Projected cost of serving a traffic window on each target, and the warm capacity that keeps the SLO.

Every figure is an expected value computed from the price book's rates (``economics.py``) and the per-step
instance, cold-start and miss estimates of ``slo_risk.py``:

- cluster: replicas sized per step (never below the floor) x replica price; idle replicas are billed too;
- Lambda: requests x (billed duration x GB x price + request fee) + cold starts (INIT billed) + pings keeping
  instances warm + provisioned concurrency while enabled (the requests it serves at its lower duration price);
- Cloud Run request-based (no GPU): instances busy x (vCPU + memory price) + request fees + cold starts + pings
  (+ min instances at the instance-based price);
- Cloud Run instance-based (GPU): instances alive (busy, idle within the keep-alive, or kept warm) x
  (vCPU + memory + GPU price);
- a migration: both targets billed while the new one starts and the old one drains (make before break).

``plan_target`` picks the warm capacity (cluster replica floor / serverless warm instances) with the lowest cost
whose expected misses stay within the risk budget; ``steady_cost_per_second`` and ``break_even_rps`` give the
cost at a constant rate, from which ``auto`` thresholds come.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from inference_placement.api.spec import TargetName
from inference_placement.policy.budget import MONTH_SECONDS
from inference_placement.policy.economics import Billing, TargetEconomics
from inference_placement.policy.forecast import TrafficForecast
from inference_placement.policy.queueing import (
    FloatArray,
    busy_instances,
    poisson_sf,
    poisson_slots,
    replicas_for_wait,
    replicas_for_wait_scalar,
    slots_scalar,
    wait_slack,
)
from inference_placement.policy.slo_risk import SloTerms, StepTraffic, cluster_rows, serverless_rows, step_traffic

__all__ = [
    "Projection",
    "break_even_rps",
    "migration_cost_usd",
    "plan_target",
    "queue_slack",
    "project",
    "project_many",
    "slack",
    "steady_cost_per_second",
]

_MAX_WARM_CANDIDATES = 16


@dataclass(frozen=True)
class Projection:
    """One target, one warm capacity, over the forecast window (per-step arrays; sums over any slice)."""

    target: TargetName
    warm: int
    """Cluster: replica floor. Serverless: instances kept warm (pings or min instances / provisioned)."""
    step_seconds: float
    cost: FloatArray
    """USD per step."""
    requests: FloatArray
    misses: FloatArray
    cold_starts: FloatArray
    capacity: FloatArray
    """Replicas (cluster) or instances alive (serverless) per step."""
    idle_next_request_misses: float = 0.0
    """Whether the next request after a window without traffic would miss (1.0) when nothing is kept warm."""
    observed: bool = True
    model_error: float = 1.0
    """Calibration the sizing used (see ``SloTerms.model_error``)."""

    def cost_usd(self, part: slice | None = None) -> float:
        return float(self.cost[part].sum()) if part is not None else float(self.cost.sum())

    def seconds(self, part: slice | None = None) -> float:
        n = self.cost[part].size if part is not None else self.cost.size
        return n * self.step_seconds

    def usd_per_second(self, part: slice | None = None) -> float:
        seconds = self.seconds(part)
        return self.cost_usd(part) / seconds if seconds > 0 else 0.0

    def monthly_usd(self, part: slice | None = None) -> float:
        return self.usd_per_second(part) * MONTH_SECONDS

    def miss_share(self, part: slice | None = None) -> float:
        """Expected share of requests missing the SLO; with no traffic, whether the next request would (0 or 1)."""
        requests = float(self.requests[part].sum()) if part is not None else float(self.requests.sum())
        misses = float(self.misses[part].sum()) if part is not None else float(self.misses.sum())
        if requests <= 0:
            return 0.0 if self.warm > 0 else self.idle_next_request_misses
        return min(1.0, misses / requests)


@dataclass(frozen=True)
class _Rows:
    warm: FloatArray
    cost: FloatArray
    misses: FloatArray
    cold_starts: FloatArray
    capacity: FloatArray
    requests: FloatArray
    idle_next_request_misses: float


def _rows(
    econ: TargetEconomics,
    traffic: StepTraffic,
    warm: FloatArray,
    service: float,
    slo: SloTerms,
    lag_steps: int,
    slack_over_service: float,
    peak_in_flight: FloatArray | None = None,
    service_scv: float | None = None,
) -> _Rows:
    """``slack_over_service``: the slack itself (``slack``); ``service_scv``: the measured service law."""
    step = traffic.step_seconds
    cold_misses = slo.cold_request_misses(econ.cold_start_seconds, service)
    if econ.billing is Billing.REPLICA:
        risk = cluster_rows(
            traffic,
            warm,
            econ.concurrency,
            slo.sizing_tail,
            slack_over_service,
            econ.cold_start_seconds,
            cold_misses,
            econ.max_instances,
            lag_steps,
            peak_in_flight,
            service_scv,
        )
        cost = risk.capacity * (econ.instance_usd_per_second * step) + risk.cold_starts * econ.cold_start_usd
        idle_miss = 1.0 if cold_misses else 0.0
        return _Rows(warm, cost, risk.misses, risk.cold_starts, risk.capacity, traffic.requests, idle_miss)
    floor = float(econ.floor_instances)
    risk = serverless_rows(
        traffic,
        warm + floor,
        econ.concurrency,
        econ.keep_alive_seconds or step,
        econ.cold_start_seconds,
        cold_misses,
        peak_in_flight,
    )
    idle_miss = 1.0 if cold_misses and econ.floor_instances == 0 else 0.0
    if econ.billing is Billing.INSTANCE_BASED:
        cost = risk.capacity * (econ.instance_usd_per_second * step)
        return _Rows(warm, cost, risk.misses, risk.cold_starts, risk.capacity, traffic.requests, idle_miss)
    interval = econ.ping_interval_seconds or step
    fixed = warm[:, None] * (econ.ping_usd * step / interval) + floor * econ.instance_usd_per_second * step
    if econ.billing is Billing.PER_REQUEST:
        work = traffic.requests * _per_request_usd(econ, service, traffic.in_flight)
    else:  # request-based Cloud Run: instance busy time, plus the fee per request
        work = busy_instances(traffic.in_flight, econ.concurrency) * (econ.busy_usd_per_second * step)
        work = work + traffic.requests * econ.per_request_usd
    cost = work[None, :] + risk.cold_starts * econ.cold_start_usd + fixed
    return _Rows(warm, cost, risk.misses, risk.cold_starts, risk.capacity, traffic.requests, idle_miss)


def _per_request_usd(econ: TargetEconomics, service: float, in_flight: FloatArray) -> FloatArray:
    """Expected duration charge plus fee of one request on Lambda, per step (element-wise in the mean in flight).

    Lambda serves from provisioned concurrency first and bills those requests at its provisioned duration price;
    a request that finds every provisioned instance busy runs on demand, at the on-demand price. By PASTA that is
    the share ``P(N >= floor x concurrency)`` of the arrivals."""
    on_demand = econ.request_usd(service)
    if econ.floor_instances <= 0 or econ.floor_busy_usd_per_second is None:
        return np.full(np.shape(in_flight), on_demand)
    provisioned = econ.request_usd(service, provisioned=True)
    beyond = poisson_sf(np.asarray(in_flight, dtype=np.float64), float(econ.floor_instances * max(1, econ.concurrency)))
    result: FloatArray = provisioned + (on_demand - provisioned) * beyond
    return result


def _projection(
    econ: TargetEconomics, rows: _Rows, i: int, step: float, observed: bool, model_error: float = 1.0
) -> Projection:
    return Projection(
        target=econ.target,
        warm=int(rows.warm[i]),
        step_seconds=step,
        cost=rows.cost[i],
        requests=rows.requests,
        misses=rows.misses[i],
        cold_starts=rows.cold_starts[i],
        capacity=rows.capacity[i],
        idle_next_request_misses=rows.idle_next_request_misses,
        observed=observed,
        model_error=model_error,
    )


def project_many(econ: TargetEconomics, forecast: TrafficForecast, warm: list[int], slo: SloTerms) -> list[Projection]:
    """Expected cost, misses and cold starts per step on one target, for each warm capacity."""
    traffic = step_traffic(forecast.rps, forecast.step_seconds, forecast.service_seconds, forecast.estimated_rps)
    rows = _rows(
        econ,
        traffic,
        np.asarray(warm, dtype=np.float64),
        forecast.service_seconds,
        slo,
        forecast.sustain_steps,
        slack(forecast, slo),
        forecast.peak_in_flight,
        forecast.service_scv,
    )
    return [_projection(econ, rows, i, forecast.step_seconds, forecast.observed) for i in range(len(warm))]


def project(econ: TargetEconomics, forecast: TrafficForecast, warm: int, slo: SloTerms) -> Projection:
    """Expected cost, misses and cold starts per step of serving ``forecast`` on one target with ``warm``."""
    return project_many(econ, forecast, [warm], slo)[0]


def slack(forecast: TrafficForecast, slo: SloTerms) -> float:
    """How long a request may queue before it misses, in service times."""
    return slo.slack_over_service(forecast.warm_latency, forecast.service_seconds)


def queue_slack(forecast: TrafficForecast, slo: SloTerms) -> float:
    """The slack as Erlang C's exponential waits count it under the measured service law: ``slack`` over the
    forecast's ``wait_scale`` (``queueing.allen_cunneen_scale``; twice the slack for constant service times)."""
    return wait_slack(slack(forecast, slo), forecast.wait_scale)


def _warm_candidates(
    econ: TargetEconomics,
    traffic: StepTraffic,
    slo: SloTerms,
    slack_over_service: float,
    observed_peak: float = 0.0,
) -> list[int]:
    a_max = float(traffic.in_flight.max()) if traffic.steps else 0.0
    if econ.billing is Billing.REPLICA:
        top = int(
            replicas_for_wait_scalar(a_max, econ.concurrency, slack_over_service, slo.sizing_tail, econ.max_instances)
        )
    else:
        peak = slots_scalar(a_max, slo.sizing_tail) if a_max > 0 else 0.0
        top = math.ceil(peak / max(1, econ.concurrency))
    top = max(1, top, math.ceil(observed_peak / max(1, econ.concurrency) - 1e-9))
    if econ.billing is Billing.REPLICA:
        low = econ.floor_instances
        top = max(low, min(top, econ.max_instances))
    else:
        low = 0
        top = max(0, min(top, econ.max_instances - econ.floor_instances))
    if top - low + 1 <= _MAX_WARM_CANDIDATES:
        return list(range(low, top + 1))
    grid = np.unique(np.round(np.geomspace(max(low, 1), top, _MAX_WARM_CANDIDATES)).astype(int))
    return sorted({low, *[int(g) for g in grid]})


def plan_target(econ: TargetEconomics, forecast: TrafficForecast, slo: SloTerms) -> Projection:
    """The warm capacity with the lowest projected cost whose expected misses stay within the risk budget.

    When no capacity meets the budget (the target is at risk), the one with the fewest expected misses.
    """
    traffic = step_traffic(forecast.rps, forecast.step_seconds, forecast.service_seconds, forecast.estimated_rps)
    candidates = _warm_candidates(econ, traffic, slo, queue_slack(forecast, slo), forecast.observed_peak())
    warm = np.asarray(candidates, dtype=np.float64)
    rows = _rows(
        econ,
        traffic,
        warm,
        forecast.service_seconds,
        slo,
        forecast.sustain_steps,
        slack(forecast, slo),
        forecast.peak_in_flight,
        forecast.service_scv,
    )
    total_cost = rows.cost.sum(axis=1)
    requests = float(rows.requests.sum())
    if requests > 0:
        share = np.minimum(1.0, rows.misses.sum(axis=1) / requests)
    else:
        share = np.where(warm > 0, 0.0, rows.idle_next_request_misses)
    ok = share <= slo.risk_budget + 1e-12
    if ok.any():
        masked = np.where(ok, total_cost, np.inf)
        i = int(np.argmin(masked))
    else:
        i = int(np.lexsort((total_cost, share))[0])
    return _projection(econ, rows, i, forecast.step_seconds, forecast.observed, slo.model_error)


def steady_cost_per_second(
    econ: TargetEconomics,
    rps: FloatArray,
    service_seconds: float,
    warm: int,
    slo: SloTerms,
    slack_over_service: float = 0.0,
) -> FloatArray:
    """Cost per second of serving a constant rate (element-wise) with ``warm`` capacity: the break-even curve."""
    rps = np.asarray(rps, dtype=np.float64)
    a = rps * service_seconds
    c = float(max(1, econ.concurrency))
    if econ.billing is Billing.REPLICA:
        needed = replicas_for_wait(a, econ.concurrency, slack_over_service, slo.risk_budget, econ.max_instances)
        replicas = np.maximum(needed, float(warm))
        result: FloatArray = replicas * econ.instance_usd_per_second
        return result
    floor = econ.floor_instances * econ.instance_usd_per_second
    if econ.billing is Billing.INSTANCE_BASED:
        instances = np.ceil(poisson_slots(a, slo.risk_budget) / c)
        instances = np.where(rps > 0, np.maximum(instances, 1.0), 0.0)
        alive: FloatArray = np.maximum(instances, float(warm + econ.floor_instances)) * econ.instance_usd_per_second
        return alive
    interval = econ.ping_interval_seconds or 60.0
    pings = warm * econ.ping_usd / interval
    if econ.billing is Billing.PER_REQUEST:
        per_request: FloatArray = rps * _per_request_usd(econ, service_seconds, a) + pings + floor
        return per_request
    busy: FloatArray = busy_instances(a, econ.concurrency) * econ.busy_usd_per_second
    return busy + rps * econ.per_request_usd + pings + floor


_GRID = np.concatenate([[0.0], np.geomspace(1e-5, 1e5, 401)])


def break_even_rps(
    cluster: TargetEconomics,
    cluster_warm: int,
    serverless: TargetEconomics,
    serverless_warm: int,
    service_seconds: float,
    slo: SloTerms,
    slack_over_service: float = 0.0,
) -> float:
    """The constant rate above which the cluster costs less than the serverless target.

    0 when the cluster is never dearer; ``inf`` when the serverless target stays cheaper at every rate. Found on a
    log grid (1e-5..1e5 rps, 2.3% apart) then refined on a linear grid between the two bracketing points.
    """
    c = steady_cost_per_second(cluster, _GRID, service_seconds, cluster_warm, slo, slack_over_service)
    s = steady_cost_per_second(serverless, _GRID, service_seconds, serverless_warm, slo)
    cheaper = s < c
    if not cheaper.any():
        return 0.0
    last = int(np.flatnonzero(cheaper)[-1])
    if last + 1 >= _GRID.size:
        return math.inf
    fine = np.linspace(float(_GRID[last]), float(_GRID[last + 1]), 65)
    fc = steady_cost_per_second(cluster, fine, service_seconds, cluster_warm, slo, slack_over_service)
    fs = steady_cost_per_second(serverless, fine, service_seconds, serverless_warm, slo)
    still = np.flatnonzero(fs < fc)
    return float(fine[int(still[-1]) + 1]) if still.size and int(still[-1]) + 1 < fine.size else float(fine[-1])


def migration_cost_usd(
    source: Projection | None,
    source_econ: TargetEconomics | None,
    target: Projection,
    target_econ: TargetEconomics,
    drain_seconds: float,
) -> float:
    """Make before break: the new target billed while it starts, the old one while it drains."""
    new_instances = max(1, int(target.capacity[-1]) if target.capacity.size else 1, target.warm)
    if target_econ.billing in (Billing.REPLICA, Billing.INSTANCE_BASED):
        cost = new_instances * target_econ.instance_usd_per_second * target_econ.cold_start_seconds
    else:
        cost = max(1, target.warm) * (target_econ.cold_start_usd + target_econ.ping_usd)
    if source is not None and source_econ is not None and source.capacity.size:
        if source_econ.billing in (Billing.REPLICA, Billing.INSTANCE_BASED):
            cost += float(source.capacity[-1]) * source_econ.instance_usd_per_second * drain_seconds
    return cost
