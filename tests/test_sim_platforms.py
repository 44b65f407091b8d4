"""The simulated platforms and the simulator: queueing, cold starts, keep-alive, billing, make-before-break."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pytest

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
from inference_placement.policy.economics import TargetEconomics, economics_for
from inference_placement.policy.price_book import PriceBook, default_price_book
from inference_placement.sim.platforms import ClusterPool, ServerlessPool
from inference_placement.sim.simulator import Control, Observation, SimWorkload, feasible_economics, simulate
from inference_placement.sim.traces import Requests

PB = default_price_book()
ALL = [TargetName.CLUSTER, TargetName.CLOUDRUN, TargetName.LAMBDA]


def cpu_spec(concurrency: int = 4) -> InferenceWorkloadSpec:
    return InferenceWorkloadSpec(
        model=ModelSpec(image="x", size_mb=300, cpu="1", memory="2Gi", service_seconds=0.04),
        slo=SLOSpec(objective_seconds=0.3),
        placement=PlacementSpec(allowed_targets=ALL),
        scaling=ScalingSpec(target_concurrency=concurrency),
        lambda_=LambdaSpec(memory_mb=2048),
    )


def gpu_spec() -> InferenceWorkloadSpec:
    return InferenceWorkloadSpec(
        model=ModelSpec(image="x", size_mb=1300, cpu="4", memory="16Gi", service_seconds=0.025),
        accelerator=AcceleratorSpec(type=AcceleratorType.NVIDIA_L4),
        slo=SLOSpec(objective_seconds=0.2),
        placement=PlacementSpec(allowed_targets=[TargetName.CLUSTER, TargetName.CLOUDRUN]),
    )


def econ(spec: InferenceWorkloadSpec, target: TargetName) -> TargetEconomics:
    e = economics_for(target, spec, PB)
    assert e is not None
    return e


# ------------------------------------------------------------------------------------------------ cluster


def test_cluster_replicas_queue_requests_fifo_on_their_slots() -> None:
    pool = ClusterPool(econ(cpu_spec(concurrency=2), TargetName.CLUSTER))
    pool.provision(0.0, 1, prewarmed=True)
    starts = [pool.dispatch(10.0, 1.0)[0] for _ in range(5)]
    # two slots: pairs start at 10, 11, 12
    assert starts == [10.0, 10.0, 11.0, 11.0, 12.0]


def test_a_new_replica_serves_after_pod_start_and_model_load() -> None:
    e = econ(cpu_spec(concurrency=1), TargetName.CLUSTER)
    pool = ClusterPool(e)
    pool.provision(0.0, 1, prewarmed=True)
    pool.dispatch(0.0, 100.0)  # the warm replica is busy for 100 s
    pool.provision(1.0, 2)
    start, cold = pool.dispatch(2.0, 1.0)
    assert start == pytest.approx(1.0 + 6.0 + 300 / 500)
    assert cold is True


def test_cluster_bills_every_replica_second_idle_or_not() -> None:
    e = econ(gpu_spec(), TargetName.CLUSTER)
    pool = ClusterPool(e)
    pool.provision(0.0, 2, prewarmed=True)
    cost = pool.accrue(0.0, 3600.0)
    assert cost == pytest.approx(2 * 0.805)


def test_knative_idle_timeout_scales_to_zero_and_a_request_wakes_a_replica() -> None:
    e = econ(cpu_spec(), TargetName.CLUSTER)
    pool = ClusterPool(e, idle_timeout_seconds=90.0)
    pool.provision(0.0, 1, prewarmed=True)
    pool.dispatch(10.0, 0.04)
    cost = pool.accrue(0.0, 600.0)
    # billed from 0 until 90 s after the last request ended
    assert cost == pytest.approx((10.04 + 90.0) * e.instance_usd_per_second)
    assert pool.size == 0
    start, cold = pool.dispatch(700.0, 0.04)
    assert cold is True and start == pytest.approx(700.0 + e.cold_start_seconds)


# ------------------------------------------------------------------------------------------------ serverless


def test_lambda_cold_start_then_warm_then_reclaimed_after_keep_alive() -> None:
    e = econ(cpu_spec(), TargetName.LAMBDA)
    pool = ServerlessPool(e)
    start, cold = pool.dispatch(0.0, 0.04)
    assert cold and start == pytest.approx(2.2)
    start, cold = pool.dispatch(100.0, 0.04)
    assert not cold and start == 100.0
    # concurrency 1: a second request while the first runs starts another instance
    pool.dispatch(200.0, 5.0)
    _, cold = pool.dispatch(200.5, 0.04)
    assert cold
    # idle for more than the keep-alive (600 s): cold again
    _, cold = pool.dispatch(200.5 + 5 + 601.0, 0.04)
    assert cold


def test_lambda_bills_duration_with_init_and_the_request_fee() -> None:
    e = econ(cpu_spec(), TargetName.LAMBDA)
    pool = ServerlessPool(e)
    pool.dispatch(0.0, 0.04)  # cold: INIT 2.2 s billed
    pool.dispatch(10.0, 0.04)  # warm
    cost = pool.accrue(0.0, 60.0)
    gb_s = 2.0 * 0.0000166667
    assert cost == pytest.approx((2.2 + 0.04) * gb_s + 0.04 * gb_s + 2 * 0.0000002)


def test_lambda_provisioned_concurrency_bills_its_lower_duration_price_and_on_demand_beyond() -> None:
    """AWS: provisioned concurrency is billed while enabled, the requests it serves at its own (lower) duration
    price; a request beyond the configured concurrency runs on demand at the on-demand price."""
    e = econ(cpu_spec(), TargetName.LAMBDA)
    pool = ServerlessPool(e)
    pool.set_levels(0.0, floor=1, pinged=0, prewarmed=True)
    start, cold = pool.dispatch(10.0, 5.0)  # the provisioned instance serves, warm
    assert not cold and start == 10.0
    _, cold = pool.dispatch(11.0, 0.04)  # it is busy: an on-demand instance, cold (INIT billed)
    assert cold
    cost = pool.accrue(0.0, 60.0)
    gb = 2.0
    enabled = 60.0 * gb * 0.0000041667
    provisioned = 5.0 * gb * 0.0000097222
    on_demand = (2.2 + 0.04) * gb * 0.0000166667
    assert cost == pytest.approx(enabled + provisioned + on_demand + 2 * 0.0000002)


def test_pings_keep_an_instance_warm_for_cents() -> None:
    e = econ(cpu_spec(), TargetName.LAMBDA)
    pool = ServerlessPool(e)
    pool.set_levels(0.0, floor=0, pinged=1, prewarmed=True)
    _, cold = pool.dispatch(5000.0, 0.04)
    assert cold is False
    interval = e.ping_interval_seconds
    assert interval is not None
    cost = pool.accrue(0.0, 86400.0)
    assert cost == pytest.approx(86400.0 / interval * e.ping_usd + e.request_usd(0.04), rel=1e-6)


def test_cloud_run_gpu_instance_is_billed_through_its_keep_alive() -> None:
    e = econ(gpu_spec(), TargetName.CLOUDRUN)
    pool = ServerlessPool(e)
    start, cold = pool.dispatch(0.0, 0.025)
    assert cold and start == pytest.approx(e.cold_start_seconds)
    cost = pool.accrue(0.0, 3600.0)
    lifetime = e.cold_start_seconds + 0.025 + 900.0
    assert cost == pytest.approx(lifetime * e.instance_usd_per_second, rel=1e-6)


def test_cloud_run_queues_on_a_busy_instance_when_that_is_sooner_than_a_cold_start() -> None:
    e = econ(cpu_spec(), TargetName.CLOUDRUN)
    assert e.concurrency == 80
    pool = ServerlessPool(e)
    pool.set_levels(0.0, floor=0, pinged=1, prewarmed=True)
    starts = {pool.dispatch(1.0, 0.5)[0] for _ in range(80)}
    assert starts == {1.0}
    start, cold = pool.dispatch(1.0, 0.5)
    assert start == pytest.approx(1.5) and cold is False


# ------------------------------------------------------------------------------------------------ simulator


class Script:
    """A policy that plays controls at given steps."""

    name = "script"

    def __init__(self, plan: dict[int, list[Control]]) -> None:
        self.plan = plan
        self.seen: list[Observation] = []

    def reset(self, workload: SimWorkload, economics: dict[TargetName, TargetEconomics], price_book: PriceBook) -> None:
        self.seen = []

    def tick(self, obs: Observation) -> Sequence[Control]:
        self.seen.append(obs)
        return self.plan.get(obs.step, [])


def workload(spec: InferenceWorkloadSpec, arrivals: list[float], steps: int) -> SimWorkload:
    a = np.array(sorted(arrivals), dtype=float)
    service = np.full(a.size, spec.model.service_seconds)
    return SimWorkload(
        name="w",
        spec=spec,
        requests=Requests(a, service, service.copy(), steps, 60.0),
        start=datetime(2026, 1, 1, tzinfo=UTC),
    )


def test_make_before_break_bills_both_and_drops_nothing() -> None:
    spec = cpu_spec()
    arrivals = [float(t) for t in range(0, 600, 2)]
    wl = workload(spec, arrivals, steps=10)
    policy = Script({0: [Control(TargetName.CLUSTER, replicas=1)], 3: [Control(TargetName.LAMBDA, warm_pings=1)]})
    result = simulate(wl, policy, PB)
    assert result.migrations == 1
    assert result.requests == len(arrivals) and result.misses == 0  # the new target served only once warm
    lam = econ(spec, TargetName.LAMBDA)
    cluster = econ(spec, TargetName.CLUSTER)
    switch = 180.0 + lam.provision_seconds
    # the cluster replica is billed until traffic moved plus the drain
    cluster_part = (switch + PB.migration.drain_seconds) * cluster.instance_usd_per_second
    assert result.cost_usd > cluster_part
    placement = result.placement_per_step
    assert placement[0] == 0 and placement[-1] == 2
    # the policy saw the migration's end (when the source was retired)
    finished = [o.last_migration_finished_at for o in policy.seen if o.last_migration_finished_at is not None]
    assert finished and (finished[0] - wl.start).total_seconds() == pytest.approx(switch + PB.migration.drain_seconds)


def test_misses_are_requests_slower_than_the_slo() -> None:
    spec = cpu_spec()
    wl = workload(spec, [30.0, 700.0], steps=13)  # a 670 s gap: longer than Lambda's 600 s keep-alive
    policy = Script({0: [Control(TargetName.LAMBDA)]})
    result = simulate(wl, policy, PB)
    # the first request finds the pre-deployed warm instance, the second a cold start (2.2 s > 300 ms)
    assert result.misses == 1 and result.cold_starts == 1
    assert not result.meets_slo


def test_feasible_economics_excludes_what_the_spec_cannot_run_on() -> None:
    assert set(feasible_economics(gpu_spec(), PB)) == {TargetName.CLUSTER, TargetName.CLOUDRUN}
    assert set(feasible_economics(cpu_spec(), PB)) == set(ALL)
