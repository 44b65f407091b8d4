"""Spot capacity in the policy (issue 17, item 6): the pre-emption risk priced from each provider's documented facts
(a pre-empted replica is a new node and a cold start unless burst spillover covers it), folded into the SLO risk
and the cost, so the policy runs on spot only while spot keeps the SLO budget and is cheaper."""

from __future__ import annotations

import asyncio
import math
from datetime import timedelta
from typing import Any, cast

import numpy as np
import pytest

from inference_placement.api.spec import (
    ClusterSpec,
    InferenceWorkloadSpec,
    PlacementSpec,
    ScalingSpec,
    SLOSpec,
    TargetName,
)
from inference_placement.controller.reconciler import Reconciler, TickInputs
from inference_placement.explain import explain_workload
from inference_placement.policy.actuation import Actuators, target_settings
from inference_placement.policy.capacity import ClusterCapacity
from inference_placement.policy.cost_model import plan_target, project
from inference_placement.policy.decide import Decision, PlacementState, TrafficWindow, decide
from inference_placement.policy.economics import economics_for
from inference_placement.policy.forecast import forecast_from_rates
from inference_placement.policy.price_book import PriceBook, SpotInterruption, default_price_book
from inference_placement.policy.slo_risk import SloTerms
from inference_placement.policy.spot import preemption_risk
from tests.plugins.memory_api import inline_tenancy
from tests.test_explain import _status, _workload
from tests.test_one_decision_everywhere import RecordingTarget, Writer
from tests.test_policy_decide import NOW, PB, UNKNOWN, gpu_spec, state, window

AWS = Actuators(spot_provider="aws")
GCP = Actuators(spot_provider="gcp")


def spot_spec(
    attainment: float = 0.99, *, spill: bool = False, max_replicas: int = 10, objective: float = 0.2
) -> InferenceWorkloadSpec:
    allowed = [TargetName.CLUSTER, TargetName.CLOUDRUN] if spill else [TargetName.CLUSTER]
    return gpu_spec(
        cluster=ClusterSpec(spot=True),
        slo=SLOSpec(objective_seconds=objective, attainment=attainment),
        placement=PlacementSpec(allowed_targets=allowed),
        scaling=ScalingSpec(target_concurrency=8, max_replicas=max_replicas),
    )


def on_cluster(
    spec: InferenceWorkloadSpec,
    rps: float,
    actuators: Actuators,
    *,
    book: PriceBook = PB,
    s: PlacementState | None = None,
) -> Decision:
    return decide(spec, window(rps), s or state(TargetName.CLUSTER), book, UNKNOWN, NOW, actuators=actuators)


def _book(**cluster_prices: float) -> PriceBook:
    prices = PB.prices.model_copy(update={"cluster": PB.prices.cluster.model_copy(update=cluster_prices)})
    return PB.model_copy(update={"prices": prices})


# ------------------------------------------------------------------------------------------------ the facts


def test_the_packaged_price_book_states_each_providers_preemption_facts_with_a_source() -> None:
    facts = default_price_book().platforms.cluster.spot_interruption
    # AWS: the top of the Spot Instance Advisor's 15-20% per month band, two-minute notice
    assert facts["aws"].interruptions_per_node_hour * 730 == pytest.approx(-math.log(0.8), rel=0.01)
    assert facts["aws"].notice_seconds == 120
    # GCP publishes no rate: one reclaim per node-day assumed (preemptible VMs' 24 h cap), 30 s notice
    assert facts["gcp"].interruptions_per_node_hour == pytest.approx(1 / 24, rel=0.01)
    assert facts["gcp"].notice_seconds == 30
    assert all(f.source for f in facts.values())


# ------------------------------------------------------------------------------------------------ decisions


def test_a_steady_workload_runs_on_spot_and_the_decision_says_so_in_numbers() -> None:
    d = on_cluster(spot_spec(), 20.0, AWS)
    assert d.target is TargetName.CLUSTER
    assert d.spot is not None and d.spot.spot is True
    spot_usd, demand_usd = d.spot.spot_monthly_usd(), d.spot.on_demand_monthly_usd()
    assert spot_usd is not None and demand_usd is not None
    assert spot_usd < demand_usd * 0.4  # the 65% discount
    assert d.projected_monthly_cost_usd[TargetName.CLUSTER] == pytest.approx(spot_usd)
    assert "spot: within the SLO budget and cheaper" in d.reason
    assert "pre-emptions/month (aws" in d.reason and "new node + cold start" in d.reason


def test_preemptions_add_to_the_slo_risk_the_decision_reports() -> None:
    d = on_cluster(spot_spec(), 20.0, GCP)
    assert d.spot is not None and d.spot.spot and d.spot.risk is not None
    extra = float(d.spot.risk.misses.sum())
    assert extra > 0
    # 30.4 reclaims a month of one replica, each 159 s without it (150 s node + 9 s cold start): ~0.18% of requests
    assert d.slo_risk == pytest.approx(30.44 * 159 / (30.44 * 86400), rel=0.05)
    assert "+0.18" in d.reason


def test_a_strict_slo_with_no_room_for_a_spare_replica_falls_back_to_on_demand() -> None:
    d = on_cluster(spot_spec(0.999, max_replicas=1), 20.0, GCP)
    assert d.spot is not None and d.spot.spot is False
    assert "on-demand: spot's pre-emption risk breaks the SLO budget" in d.reason
    assert d.slo_risk is not None and d.slo_risk <= 0.0005
    assert d.projected_monthly_cost_usd[TargetName.CLUSTER] == pytest.approx(d.spot.on_demand_monthly_usd())


def test_a_spare_replica_on_spot_beats_on_demand_when_one_replica_breaks_the_budget() -> None:
    d = on_cluster(spot_spec(0.999), 20.0, GCP)
    assert d.spot is not None and d.spot.spot is True
    assert d.replicas == 2  # one replica would miss 0.18% > 0.05%; two absorb a reclaim
    assert "2 replica floor" in d.reason
    assert (d.spot.spot_monthly_usd() or 0) < (d.spot.on_demand_monthly_usd() or 0)


def test_spillover_in_force_covers_a_preempted_replica_and_keeps_spot_within_the_budget() -> None:
    alone = on_cluster(spot_spec(0.999, max_replicas=1), 20.0, GCP)
    spilling = PlacementState(TargetName.CLUSTER, None, 0.0, spilling=True)
    covered = on_cluster(spot_spec(0.999, spill=True, max_replicas=1), 20.0, replace_spill(GCP), s=spilling)
    # the router has the overflow hop only while a spill is in force: a router that could spill covers nothing yet
    not_yet = on_cluster(spot_spec(0.999, spill=True, max_replicas=1), 20.0, replace_spill(GCP))
    assert not_yet.spot is not None and not not_yet.spot.spot
    assert alone.spot is not None and not alone.spot.spot
    assert covered.spot is not None and covered.spot.spot
    assert covered.spot.risk is not None and covered.spot.risk.covered_by is TargetName.CLOUDRUN
    assert "spilled to cloudrun" in covered.reason
    # the spilled requests are billed on Cloud Run
    assert float(covered.spot.risk.cost.sum()) > 0


def replace_spill(actuators: Actuators) -> Actuators:
    return Actuators(spot_provider=actuators.spot_provider, spillover=True)


def test_back_to_spot_from_on_demand_takes_savings_beyond_the_hysteresis_band() -> None:
    book = _book(spot_discount=0.1)  # spot 10% cheaper, the band is 20%
    first = on_cluster(spot_spec(), 20.0, AWS, book=book, s=state(None))
    on_demand_now = PlacementState(TargetName.CLUSTER, None, 0.0, on_spot=False)
    held = on_cluster(spot_spec(), 20.0, AWS, book=book, s=on_demand_now)
    on_spot_now = PlacementState(TargetName.CLUSTER, None, 0.0, on_spot=True)
    stays = on_cluster(spot_spec(), 20.0, AWS, book=book, s=on_spot_now)
    assert first.spot is not None and first.spot.spot
    assert held.spot is not None and not held.spot.spot
    assert "not cheaper by more than the 20% hysteresis band" in held.reason
    assert stays.spot is not None and stays.spot.spot


def test_without_spot_labels_a_spot_workload_runs_and_is_priced_on_demand() -> None:
    d = on_cluster(spot_spec(), 20.0, Actuators())
    assert d.spot is None
    assert "cannot tell spot nodes" in d.reason
    on_demand = gpu_spec(
        slo=SLOSpec(objective_seconds=0.2, attainment=0.99),
        placement=PlacementSpec(allowed_targets=[TargetName.CLUSTER]),
        scaling=ScalingSpec(target_concurrency=8),
    )
    plain = on_cluster(on_demand, 20.0, Actuators())
    assert d.projected_monthly_cost_usd[TargetName.CLUSTER] == pytest.approx(
        plain.projected_monthly_cost_usd[TargetName.CLUSTER]
    )


def test_a_workload_not_asking_for_spot_is_never_weighed_for_it() -> None:
    spec = gpu_spec(placement=PlacementSpec(allowed_targets=[TargetName.CLUSTER]))
    d = on_cluster(spec, 20.0, GCP)
    assert d.spot is None
    assert "spot" not in d.reason


def test_the_decided_capacity_type_reaches_the_cluster_target_settings() -> None:
    spot = on_cluster(spot_spec(), 20.0, AWS)
    demand = on_cluster(spot_spec(0.999, max_replicas=1), 20.0, GCP)
    assert target_settings(TargetName.CLUSTER, spot, spot_spec(), None, AWS).spot is True
    assert target_settings(TargetName.CLUSTER, demand, spot_spec(), None, GCP).spot is False
    plain = gpu_spec()
    assert target_settings(TargetName.CLUSTER, spot, plain, None, AWS).spot is None


# ------------------------------------------------------------------------------------------------ the model


def _risk(
    rps: float, floor: int, fact: SpotInterruption, *, service: float = 0.025, attainment: float = 0.99
) -> tuple[float, float]:
    """(expected extra misses, requests) over the window for ``floor`` replicas on spot."""
    spec = spot_spec(attainment)
    spec = spec.model_copy(update={"model": spec.model.model_copy(update={"service_seconds": service})})
    econ = economics_for(TargetName.CLUSTER, spec, PB)
    assert econ is not None
    forecast = forecast_from_rates(spec, np.full(120, rps), 60.0, None, None, None)
    slo = SloTerms.from_spec(spec)
    plan = plan_target(econ, forecast, slo)
    plan = plan if plan.warm == floor else project(econ, forecast, floor, slo)
    risk = preemption_risk(plan, econ, forecast, slo, "test", fact, PB.platforms.cluster.node_provision_seconds)
    return float(risk.misses.sum()), float(plan.requests.sum())


def test_no_reclaims_no_extra_misses_and_misses_grow_with_the_reclaim_rate() -> None:
    none = SpotInterruption(interruptions_per_node_hour=0.0, notice_seconds=30)
    low = SpotInterruption(interruptions_per_node_hour=0.01, notice_seconds=30)
    high = SpotInterruption(interruptions_per_node_hour=0.04, notice_seconds=30)
    assert _risk(20.0, 1, none)[0] == 0.0
    assert _risk(20.0, 1, high)[0] == pytest.approx(4 * _risk(20.0, 1, low)[0], rel=1e-6)


def test_a_single_replicas_reclaim_delays_every_request_until_a_new_node_and_a_cold_start() -> None:
    fact = SpotInterruption(interruptions_per_node_hour=0.01, notice_seconds=30)
    misses, requests = _risk(20.0, 1, fact)
    outage = PB.platforms.cluster.node_provision_seconds + PB.platforms.cluster.pod_start_seconds + 1300 / 500
    # 2 hours x 0.01/h x 20 rps x outage
    assert misses == pytest.approx(2 * 0.01 * 20.0 * outage, rel=0.01)
    assert misses / requests == pytest.approx(0.01 * outage / 3600, rel=0.01)


def test_a_spare_replica_absorbs_a_reclaim() -> None:
    fact = SpotInterruption(interruptions_per_node_hour=0.04, notice_seconds=30)
    one, _ = _risk(20.0, 1, fact)
    two, _ = _risk(20.0, 2, fact)
    assert two < one / 1000


def test_requests_longer_than_the_notice_are_lost_with_the_replica() -> None:
    fact = SpotInterruption(interruptions_per_node_hour=0.04, notice_seconds=30)
    short, _ = _risk(0.05, 2, fact, service=20.0)
    quick_notice = SpotInterruption(interruptions_per_node_hour=0.04, notice_seconds=10)
    lost, _ = _risk(0.05, 2, quick_notice, service=20.0)
    # 2 h x 0.04/h x 2 replicas reclaims, each losing a/R = 0.05 x 20 / 2 = 0.5 requests in flight
    assert lost - short == pytest.approx(2 * 0.04 * 2 * 0.5, rel=0.01)


# ------------------------------------------------------------------------------------------------ explain


def test_explain_says_spot_or_on_demand_in_numbers_with_the_operators_spot_labels() -> None:
    spec = {
        "accelerator": {"type": "nvidia-l4"},
        "placement": {"allowedTargets": ["cluster"]},
        "cluster": {"spot": True},
    }
    status = _status(rps=20.0, placement="cluster")
    status["lastDecision"] = {**status["lastDecision"], "capacityType": "spot"}
    expl = explain_workload(_workload(spec, status), PB, spot_labels="gke")
    assert expl.spot_now.startswith("spot: within the SLO budget")
    assert "pre-emptions/month (gcp" in expl.spot_now and "vs on-demand $" in expl.spot_now
    assert expl.spot_recorded == "spot"
    assert expl.to_dict()["spot_now"] == expl.spot_now
    without = explain_workload(_workload(spec, status), PB)
    assert "cannot tell spot nodes" in without.spot_now


def test_when_neither_capacity_keeps_the_budget_the_cheaper_one_serves() -> None:
    # 400 rps needs more than the one replica allowed on spot and on-demand alike
    d = on_cluster(spot_spec(max_replicas=1), 400.0, AWS)
    assert d.spot is not None and d.spot.spot_plan is not None and d.spot.on_demand_plan is not None
    assert d.spot.on_demand_plan.miss_share() > 0.005
    assert d.spot.spot is True
    assert "on-demand breaks the SLO budget too, and spot is cheaper" in d.reason


# ------------------------------------------------------------------------------------------------ the reconciler


def _reconcile_twice(spec: InferenceWorkloadSpec, actuators: Actuators) -> tuple[dict[str, Any], list[Any]]:
    """Two reconciles of a workload placed on the cluster, steady traffic: (its status, what the cluster target was
    asked to apply)."""
    body: dict[str, Any] = {
        "apiVersion": "placement.inference.dev/v1alpha1",
        "kind": "InferenceWorkload",
        "metadata": {"name": "w", "namespace": "unit", "uid": "uid-w", "generation": 1, "resourceVersion": "1"},
        "spec": spec.model_dump(by_alias=True, exclude_none=True, mode="json"),
        "status": {"placement": "cluster"},
    }
    cluster = RecordingTarget()
    reconciler = Reconciler(
        cast(Any, Writer(body)), {TargetName.CLUSTER: cast(Any, cluster)}, actuators=actuators, tenancy=inline_tenancy()
    )
    for i in range(2):
        now = NOW + timedelta(seconds=30 * i)
        w = window(20.0)
        inputs = TickInputs(
            now=now,
            price_book=PB,
            capacity=ClusterCapacity(),
            window=TrafficWindow(step_seconds=w.step_seconds, rps=w.rps, observed_p99_seconds=None, end=now),
        )
        asyncio.run(reconciler.reconcile(body, inputs))
    return body["status"], cluster.applied


@pytest.mark.parametrize(
    ("spec", "actuators", "capacity_type", "desired"),
    [
        pytest.param(spot_spec(), AWS, "spot", True, id="spot"),
        pytest.param(spot_spec(0.999, max_replicas=1), GCP, "on-demand", False, id="kept-on-demand"),
        pytest.param(spot_spec(), Actuators(), None, False, id="no-spot-labels"),
    ],
)
def test_the_reconciler_records_the_capacity_type_and_the_cluster_target_applies_it(
    spec: InferenceWorkloadSpec, actuators: Actuators, capacity_type: str | None, desired: bool
) -> None:
    status, applied = _reconcile_twice(spec, actuators)
    assert status["lastDecision"].get("capacityType") == capacity_type
    assert applied and all(d.spot is desired for d in applied)
    if capacity_type is not None:
        assert "pre-emptions/month" in status["lastDecision"]["reason"]
