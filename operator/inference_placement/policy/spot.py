"""Spot capacity: what pre-emptions cost in SLO misses and money, and whether the cluster's replicas run on spot
(pure).

``spec.cluster.spot`` asks for spot nodes; the policy runs the replicas there only when the pre-emption risk keeps
the SLO budget and spot stays cheaper, and on on-demand nodes otherwise. The model, per step of the forecast with
``R`` replicas on spot:

- a spot node is reclaimed at ``h`` per node-hour (Poisson): a documented platform fact per provider, in the price
  book (``platforms.cluster.spot_interruption``: AWS's interruption-frequency bands, GCP's unpublished rate and
  what is assumed for it). One replica per node (a GPU replica fills its node; packed replicas make reclaims
  coarser, not more frequent per replica), so a step expects ``p = R h step / 3600`` pre-emptions;
- a pre-empted replica is drained at the notice: its in-flight requests finish when the service time fits in the
  notice, and are lost otherwise (``a / R`` of them);
- it serves again after ``D`` = a new node (``platforms.cluster.node_provision_seconds``: the reclaimed node is
  gone) plus the cluster cold start (``cold_start.py``'s estimate, in the calibrated price book). When another
  node has room the replacement only pays the cold start, so ``D`` is the conservative figure;
- meanwhile arrivals find ``R - 1`` replicas: the extra share that waits past the SLO's slack is
  ``q(R - 1) - q(R)`` (Erlang C, ``queueing.queue_miss_share``); with ``R = 1`` every arrival waits for the
  replacement, and misses when ``D`` plus the service exceeds what the SLO tolerates;
- burst spillover in force covers it (the router's composite route exists then; ``decide`` asks
  ``spill_cover`` only while ``status.spill`` is): the requests the remaining replicas refuse (all of them when
  none is left: a pods cluster without hosts falls through at once) go to the serverless overflow target. They
  miss only during its cold start, and only when that start breaks the SLO; they are billed there
  (``P(N >= (R-1)c) - P(N >= Rc)`` of the arrivals during ``D``, PASTA).

So a step expects ``p (rate x D_missed x (q(R-1) - q(R)) + lost in flight)`` extra misses, folded into the plan's
misses (the SLO risk ``decide`` compares with the budget) and the spill's serverless bill into its cost. A plan
with one replica more (a spare that absorbs a reclaim) is weighed too: redundancy on spot is often cheaper than
on-demand. A workload on on-demand returns to spot only when spot is cheaper by more than the hysteresis band.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from inference_placement.api.spec import SERVERLESS, TargetName
from inference_placement.policy.budget import MONTH_SECONDS
from inference_placement.policy.cost_model import Projection, project, queue_slack
from inference_placement.policy.economics import Billing, TargetEconomics
from inference_placement.policy.forecast import TrafficForecast
from inference_placement.policy.price_book import SpotInterruption
from inference_placement.policy.queueing import FloatArray, poisson_sf, queue_miss_many
from inference_placement.policy.slo_risk import SloTerms

__all__ = ["PreemptionRisk", "SpotChoice", "choose_capacity", "preemption_risk", "spill_cover"]


@dataclass(frozen=True)
class PreemptionRisk:
    """What pre-emptions add to one plan on spot, per step of the forecast."""

    provider: str
    interruptions_per_node_hour: float
    notice_seconds: float
    outage_seconds: float
    """A pre-empted replica's absence: a new node plus the cluster cold start."""
    covered_by: TargetName | None
    """The serverless target burst spillover sends the refused requests to meanwhile; None = nothing covers."""
    preemptions: FloatArray
    """Expected pre-emptions per step."""
    misses: FloatArray
    """Expected extra requests over the SLO per step."""
    cost: FloatArray
    """Expected extra USD per step (the spilled requests' serverless bill)."""

    def preemptions_per_month(self, step_seconds: float) -> float:
        seconds = self.preemptions.size * step_seconds
        return float(self.preemptions.sum()) * MONTH_SECONDS / seconds if seconds > 0 else 0.0


def spill_cover(econs: dict[TargetName, TargetEconomics], spillover: bool) -> TargetEconomics | None:
    """The serverless target that takes what a pre-empted replica leaves when the router spills (``spillover``:
    the router has the overflow hop now): the feasible one with the shortest cold start (then Cloud Run before
    Lambda); None without spillover or a feasible target."""
    if not spillover:
        return None
    options = [econs[t] for t in SERVERLESS if t in econs]
    if not options:
        return None
    return min(options, key=lambda e: (e.cold_start_seconds, SERVERLESS.index(e.target)))


def preemption_risk(
    plan: Projection,
    econ: TargetEconomics,
    forecast: TrafficForecast,
    slo: SloTerms,
    provider: str,
    interruption: SpotInterruption,
    node_provision_seconds: float,
    cover: TargetEconomics | None = None,
) -> PreemptionRisk:
    """The misses and cost pre-emptions add to ``plan`` (the cluster on spot), step by step (module docstring)."""
    step = forecast.step_seconds
    service = forecast.service_seconds
    rate = np.asarray(forecast.rps, dtype=np.float64)
    a = rate * service
    c = float(max(1, econ.concurrency))
    replicas = np.maximum(np.asarray(plan.capacity, dtype=np.float64), 0.0)
    preemptions = replicas * interruption.interruptions_per_node_hour * step / 3600.0
    outage = node_provision_seconds + econ.cold_start_seconds
    slack_over_service = queue_slack(forecast, slo)
    left = np.maximum(replicas - 1.0, 0.0)
    full = queue_miss_many(a, np.maximum(replicas, 1.0) * c, slack_over_service)
    if cover is not None:
        # the refused requests (all, with no replica left) go to the overflow target: they miss only while it
        # starts cold, and only when that start breaks the SLO
        missed_seconds = min(outage, cover.cold_start_seconds)
        if not slo.cold_request_misses(cover.cold_start_seconds, service):
            missed_seconds = 0.0
        reduced = np.where(left > 0, queue_miss_many(a, np.maximum(left, 1.0) * c, slack_over_service), 1.0)
    else:
        missed_seconds = outage
        waits = 1.0 if slo.cold_request_misses(outage, service) else 0.0
        reduced = np.where(left > 0, queue_miss_many(a, np.maximum(left, 1.0) * c, slack_over_service), waits)
    extra_share = np.clip(reduced - full, 0.0, 1.0)
    # in flight on the reclaimed replica: finished within the notice, or lost
    lost = np.where(replicas > 0, a / np.maximum(replicas, 1.0), 0.0) if service > interruption.notice_seconds else 0.0
    per_preemption = rate * missed_seconds * extra_share + lost
    misses = np.minimum(preemptions * per_preemption, rate * step)
    cost = np.zeros_like(rate)
    if cover is not None:
        spilled_share = np.clip(
            np.where(left > 0, poisson_sf(a, left * c), 1.0) - poisson_sf(a, replicas * c), 0.0, 1.0
        )
        spilled = rate * outage * spilled_share
        if cover.billing is Billing.INSTANCE_BASED:
            needed = np.ceil(np.maximum(a * spilled_share, 1e-9) / max(1, cover.concurrency))
            instances = np.where(spilled > 0, needed, 0.0)
            per = instances * cover.instance_usd_per_second * (outage + cover.cold_start_seconds)
        else:
            per = spilled * cover.request_usd(service) + np.where(spilled > 0, cover.cold_start_usd, 0.0)
        cost = preemptions * per
    return PreemptionRisk(
        provider=provider,
        interruptions_per_node_hour=interruption.interruptions_per_node_hour,
        notice_seconds=interruption.notice_seconds,
        outage_seconds=outage,
        covered_by=cover.target if cover is not None else None,
        preemptions=preemptions,
        misses=misses,
        cost=cost,
    )


def _with_risk(plan: Projection, risk: PreemptionRisk) -> Projection:
    return replace(plan, misses=np.minimum(plan.requests, plan.misses + risk.misses), cost=plan.cost + risk.cost)


@dataclass(frozen=True)
class SpotChoice:
    """The capacity type the cluster's replicas run on, and the numbers that chose it."""

    spot: bool
    """True: spot nodes (preferred, on-demand as the scheduler's fallback); False: on-demand nodes."""
    provider: str | None
    """The cloud whose pre-emption facts priced it; None when this operator cannot run on spot."""
    risk: PreemptionRisk | None
    """Pre-emptions on the spot plan weighed (the chosen one when on spot)."""
    spot_plan: Projection | None
    """The best plan on spot, pre-emptions included."""
    on_demand_plan: Projection | None
    note: str

    def spot_monthly_usd(self) -> float | None:
        return self.spot_plan.monthly_usd() if self.spot_plan is not None else None

    def on_demand_monthly_usd(self) -> float | None:
        return self.on_demand_plan.monthly_usd() if self.on_demand_plan is not None else None


def _money(value: float) -> str:
    return f"${value:,.0f}" if value >= 100 else f"${value:,.2f}"


def _describe_risk(risk: PreemptionRisk, plan: Projection, step_seconds: float) -> str:
    requests = float(plan.requests.sum())
    share = float(risk.misses.sum()) / requests if requests > 0 else 0.0
    cover = f", spilled to {risk.covered_by.value}" if risk.covered_by is not None else ""
    return (
        f"{risk.preemptions_per_month(step_seconds):.2f} pre-emptions/month ({risk.provider}: "
        f"{risk.interruptions_per_node_hour * 730:.2f}/node-month, {risk.notice_seconds:g}s notice) x "
        f"{risk.outage_seconds:.0f}s new node + cold start{cover}: +{share:.4%} misses"
    )


def choose_capacity(
    spot_econ: TargetEconomics,
    spot_plan: Projection,
    on_demand_econ: TargetEconomics,
    on_demand_plan: Projection,
    forecast: TrafficForecast,
    slo: SloTerms,
    provider: str,
    interruption: SpotInterruption,
    node_provision_seconds: float,
    *,
    cover: TargetEconomics | None = None,
    on_spot_now: bool | None = None,
    hysteresis: float = 0.0,
) -> tuple[SpotChoice, TargetEconomics, Projection]:
    """Spot or on-demand for the cluster's replicas: (the choice, the chosen economics, the chosen plan with the
    pre-emptions folded in when on spot).

    Spot wins when its plan's SLO risk, pre-emptions included, stays within the risk budget and it costs less
    than on-demand (by more than ``hysteresis`` when the workload runs on on-demand now, ``on_spot_now`` False).
    Of the spot plan the policy sized and the same with one replica more, the cheaper one within budget."""
    budget = slo.risk_budget + 1e-12
    step = forecast.step_seconds
    candidates: list[tuple[Projection, PreemptionRisk]] = []
    for floor in sorted({spot_plan.warm, spot_plan.warm + 1}):
        if floor > spot_econ.max_instances:
            continue
        base = spot_plan if floor == spot_plan.warm else project(spot_econ, forecast, floor, slo)
        risk = preemption_risk(base, spot_econ, forecast, slo, provider, interruption, node_provision_seconds, cover)
        candidates.append((_with_risk(base, risk), risk))
    within = [c for c in candidates if c[0].miss_share() <= budget]
    best, best_risk = (
        min(within, key=lambda c: c[0].cost_usd()) if within else min(candidates, key=lambda c: c[0].miss_share())
    )
    spot_usd = best.monthly_usd()
    demand_usd = on_demand_plan.monthly_usd()
    band = hysteresis if on_spot_now is False else 0.0
    spot_risk = best.miss_share()
    demand_risk = on_demand_plan.miss_share()
    numbers = (
        f"spot {_money(spot_usd)}/mo at SLO risk {spot_risk:.3%} ({_describe_risk(best_risk, best, step)}"
        f"{f', {best.warm} replica floor' if best.warm != spot_plan.warm else ''}) vs on-demand "
        f"{_money(demand_usd)}/mo at {demand_risk:.3%}; budget {slo.risk_budget:.3%}"
    )
    if not within and demand_risk > budget and spot_risk <= demand_risk:
        # neither keeps the budget (more traffic than the replicas allowed can hold): pre-emptions are not what
        # breaks it, so the cheaper capacity serves
        if spot_usd < demand_usd * (1.0 - band):
            note = f"spot: on-demand breaks the SLO budget too, and spot is cheaper ({numbers})"
            return SpotChoice(True, provider, best_risk, best, on_demand_plan, note), spot_econ, best
        note = f"on-demand: both break the SLO budget, spot is no cheaper ({numbers})"
        return SpotChoice(False, provider, best_risk, best, on_demand_plan, note), on_demand_econ, on_demand_plan
    if not within:
        note = f"on-demand: spot's pre-emption risk breaks the SLO budget ({numbers})"
        return SpotChoice(False, provider, best_risk, best, on_demand_plan, note), on_demand_econ, on_demand_plan
    if not spot_usd < demand_usd * (1.0 - band):
        why = "no cheaper" if band == 0.0 else f"not cheaper by more than the {band:.0%} hysteresis band"
        note = f"on-demand: spot {why} ({numbers})"
        return SpotChoice(False, provider, best_risk, best, on_demand_plan, note), on_demand_econ, on_demand_plan
    note = f"spot: within the SLO budget and cheaper ({numbers})"
    return SpotChoice(True, provider, best_risk, best, on_demand_plan, note), spot_econ, best
