"""The offline optimum: a lower bound on the cost of every policy that meets the SLO, meeting it wherever it can."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference_placement.api.spec import (
    AcceleratorSpec,
    AcceleratorType,
    InferenceWorkloadSpec,
    LambdaSpec,
    ModelSpec,
    PlacementSpec,
    ScalingSpec,
    SLOSpec,
    TargetName,
)
from inference_placement.policy.actuation import Actuators
from inference_placement.policy.price_book import default_price_book
from inference_placement.sim.optimum import Mode, PlanPolicy, econ_lookup, optimum, workload_modes
from inference_placement.sim.platforms import Activator
from inference_placement.sim.policies import OursPolicy
from inference_placement.sim.registry import online_policies
from inference_placement.sim.scenario import RouterPlatform
from inference_placement.sim.simulator import SimWorkload, feasible_economics, simulate
from inference_placement.sim.traces import MinuteTrace, requests_for

PB = default_price_book()


def cpu_spec() -> InferenceWorkloadSpec:
    return InferenceWorkloadSpec(
        model=ModelSpec(image="x", size_mb=300, cpu="1", memory="2Gi", service_seconds=0.04),
        slo=SLOSpec(objective_seconds=0.3, attainment=0.99),
        placement=PlacementSpec(allowed_targets=list(TargetName)),
        scaling=ScalingSpec(min_replicas=0, target_concurrency=4),
        lambda_=LambdaSpec(memory_mb=2048),
    )


def gpu_spec() -> InferenceWorkloadSpec:
    return InferenceWorkloadSpec(
        model=ModelSpec(image="x", size_mb=1300, cpu="2", memory="8Gi", service_seconds=0.025),
        accelerator=AcceleratorSpec(type=AcceleratorType.NVIDIA_L4),
        slo=SLOSpec(objective_seconds=0.2, attainment=0.99),
        placement=PlacementSpec(allowed_targets=[TargetName.CLUSTER, TargetName.CLOUDRUN]),
        scaling=ScalingSpec(min_replicas=0, target_concurrency=8),
    )


def workload(spec: InferenceWorkloadSpec, counts: list[int]) -> SimWorkload:
    trace = MinuteTrace(path="synthetic", names=("w",), counts=np.array([counts], dtype=np.int64))
    return SimWorkload(
        name="w",
        spec=spec,
        requests=requests_for(trace, 0, service_seconds=spec.model.service_seconds),
        start=datetime(2026, 1, 1, tzinfo=UTC),
    )


traffic = st.lists(st.one_of(st.just(0), st.integers(0, 3), st.integers(20, 400)), min_size=20, max_size=60)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(counts=traffic, gpu=st.booleans())
def test_optimum_is_no_dearer_than_any_policy_that_meets_the_slo(counts: list[int], gpu: bool) -> None:
    w = workload(gpu_spec() if gpu else cpu_spec(), counts)
    economics = feasible_economics(w.spec, PB)
    # the router runs the activator: ours may scale the cluster to zero, and the optimum knows that zero too; it
    # knows every action of the product whatever the router enables, so ours with every actuator (burst spillover,
    # serverless answering at zero) is checked too
    best = optimum(w, economics, PB, router=RouterPlatform())
    everything = Actuators(cluster_scale_to_zero=True, spillover=True, zero_fall_through=True)
    for policy in [
        *online_policies(router=RouterPlatform()),
        *online_policies(router=RouterPlatform(fall_through=True)),
        OursPolicy(),
        OursPolicy(actuators=everything),
        OursPolicy(actuators=Actuators(spillover=True)),
    ]:
        check = getattr(policy, "applicable", None)
        if check is not None and not check(economics):
            continue
        result = simulate(w, policy, PB, economics=economics)
        if result.meets_slo:
            assert best.meets_slo, f"{policy.name} meets the SLO but the optimum does not"
            assert best.cost_usd <= result.cost_usd * (1 + 1e-9) + 1e-12, (
                f"optimum ${best.cost_usd:.6f} > {policy.name} ${result.cost_usd:.6f}"
            )


def test_optimum_meets_the_slo_where_a_fixed_placement_can() -> None:
    counts = [0] * 20 + [300] * 10 + [0] * 30 + [2] * 10
    w = workload(gpu_spec(), counts)
    economics = feasible_economics(w.spec, PB)
    held = simulate(
        w,
        PlanPolicy([Mode(TargetName.CLUSTER, 2)] * len(counts), econ_lookup(economics, ()), 60.0),
        PB,
        economics=economics,
    )
    assert held.meets_slo
    best = optimum(w, economics, PB)
    assert best.meets_slo
    assert best.cost_usd <= held.cost_usd


def test_optimum_moves_with_foresight_and_pays_for_its_moves() -> None:
    # an hour of heavy traffic in a day of silence on a CPU model: serverless around a cluster hour, or all
    # serverless; either way each move is billed (both placements during make-before-break)
    counts = [0] * 60 + [6000] * 60 + [0] * 60
    w = workload(cpu_spec(), counts)
    economics = feasible_economics(w.spec, PB)
    best = optimum(w, economics, PB)
    assert best.meets_slo
    modes = workload_modes(economics, w)
    assert {m.target for m in modes} == set(TargetName)


def test_plan_policy_issues_moves_early_by_their_lead() -> None:
    w = workload(cpu_spec(), [10] * 10)
    economics = feasible_economics(w.spec, PB)
    plan = [Mode(TargetName.CLUSTER, 1)] * 5 + [Mode(TargetName.LAMBDA, 1)] * 5
    policy = PlanPolicy(plan, econ_lookup(economics, ()), 60.0)
    lead = economics[TargetName.LAMBDA].provision_seconds
    issued = [c for controls in policy.events.values() for c in controls if c.target is TargetName.LAMBDA]
    assert issued and issued[0].at == pytest.approx(300.0 - lead)
    result = simulate(w, policy, PB, economics=economics)
    assert result.migrations == 1
    assert result.placement_per_step[5] == 2  # serving on Lambda from the boundary on


def test_the_optimum_knows_base_plus_overflow_and_the_serverless_answer_at_zero() -> None:
    # bursts a replica's slots cannot hold: ours with burst spillover sends the refused requests to Lambda; the
    # optimum has that action too (it spills, and costs no more), and the serverless answer at zero is one of its
    # modes where the router runs the activator
    from tests.test_policy_spillover import SPILLS, bursty_workload

    w = bursty_workload()
    economics = feasible_economics(w.spec, PB)
    ours = simulate(w, OursPolicy(actuators=SPILLS), PB, economics=economics, warmup_seconds=600)
    best = optimum(w, economics, PB, warmup_seconds=600, router=RouterPlatform())
    assert ours.meets_slo and ours.spilled > 0
    assert best.meets_slo and best.spilled > 0 and best.cost_usd <= ours.cost_usd
    modes = workload_modes(economics, w, activator=Activator(0.5, w.spec.slo.tolerable_cold_start(), 60.0))
    assert {m.overflow for m in modes if m.overflow is not None} == {TargetName.LAMBDA}
    assert all(m.level >= 1 and m.target is TargetName.CLUSTER for m in modes if m.overflow is not None)
