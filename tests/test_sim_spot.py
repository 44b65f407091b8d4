"""Spot in the simulator (parity rule): ``ours`` weighs spot with the live policy code (``policy/spot.py`` through
``decide``), and the simulator bills its cluster replicas at the capacity type the decision picked, through the
live actuation (``target_settings``)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from inference_placement.api.spec import (
    AcceleratorSpec,
    AcceleratorType,
    ClusterSpec,
    InferenceWorkloadSpec,
    ModelSpec,
    PlacementSpec,
    ScalingSpec,
    SLOSpec,
    TargetName,
)
from inference_placement.policy.actuation import Actuators
from inference_placement.policy.price_book import default_price_book
from inference_placement.sim.policies import OursPolicy
from inference_placement.sim.scenario import RouterPlatform
from inference_placement.sim.simulator import SimWorkload, WorkloadResult, simulate
from inference_placement.sim.traces import MinuteTrace, requests_for

PB = default_price_book()


def spec(*, spot: bool, attainment: float = 0.99, max_replicas: int = 4) -> InferenceWorkloadSpec:
    return InferenceWorkloadSpec(
        model=ModelSpec(image="x", size_mb=1300, cpu="4", memory="16Gi", service_seconds=0.025),
        accelerator=AcceleratorSpec(type=AcceleratorType.NVIDIA_L4),
        slo=SLOSpec(objective_seconds=0.2, attainment=attainment),
        placement=PlacementSpec(allowed_targets=[TargetName.CLUSTER]),
        scaling=ScalingSpec(target_concurrency=8, max_replicas=max_replicas),
        cluster=ClusterSpec(spot=spot),
    )


def run(s: InferenceWorkloadSpec, actuators: Actuators) -> tuple[WorkloadResult, OursPolicy]:
    trace = MinuteTrace(path="synthetic", names=("w",), counts=np.full((1, 90), 60, dtype=np.int64))
    workload = SimWorkload(
        name="w",
        spec=s,
        requests=requests_for(trace, 0, service_seconds=s.model.service_seconds),
        start=datetime(2026, 1, 1, tzinfo=UTC),
    )
    policy = OursPolicy(actuators=actuators)
    policy.keep_decisions = True
    return simulate(workload, policy, PB, warmup_seconds=1800.0), policy


def test_ours_on_spot_is_billed_the_spot_price_it_decided_on() -> None:
    on_demand, _ = run(spec(spot=False), Actuators(spot_provider="aws"))
    on_spot, policy = run(spec(spot=True), Actuators(spot_provider="aws"))
    last = policy.decisions[-1]
    assert last.spot is not None and last.spot.spot
    assert on_spot.cost_usd == pytest.approx(on_demand.cost_usd * (1.0 - PB.prices.cluster.spot_discount), rel=0.02)


def test_ours_kept_on_demand_by_the_preemption_risk_is_billed_on_demand() -> None:
    on_demand, _ = run(spec(spot=False, attainment=0.999, max_replicas=1), Actuators(spot_provider="gcp"))
    kept, policy = run(spec(spot=True, attainment=0.999, max_replicas=1), Actuators(spot_provider="gcp"))
    last = policy.decisions[-1]
    assert last.spot is not None and not last.spot.spot
    assert kept.cost_usd == pytest.approx(on_demand.cost_usd, rel=1e-6)


def test_without_spot_labels_ours_is_billed_on_demand_as_the_live_operator_runs_it() -> None:
    on_demand, _ = run(spec(spot=False), Actuators())
    asked, _ = run(spec(spot=True), RouterPlatform().actuators())
    assert asked.cost_usd == pytest.approx(on_demand.cost_usd, rel=1e-6)


def test_the_benchmarks_router_platform_names_the_spot_labels() -> None:
    assert RouterPlatform().actuators().spot_provider is None
    assert RouterPlatform(spot_node_labels="gke").actuators().spot_provider == "gcp"
    assert RouterPlatform(spot_node_labels="karpenter").actuators().spot_provider == "aws"
