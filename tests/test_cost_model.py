"""Cost formulas against figures worked by hand from the seed articles and the price book, plus properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inference_placement.api.spec import (
    AcceleratorSpec,
    AcceleratorType,
    ClusterSpec,
    GPUSharing,
    InferenceWorkloadSpec,
    LambdaSpec,
    ModelSpec,
    PlacementSpec,
    TargetName,
)
from inference_placement.policy.budget import MONTH_SECONDS
from inference_placement.policy.cost_model import plan_target, project, steady_cost_per_second
from inference_placement.policy.economics import (
    Billing,
    TargetEconomics,
    cluster_replica_usd_per_hour,
    economics_for,
    workload_economics,
)
from inference_placement.policy.forecast import forecast_from_rates
from inference_placement.policy.price_book import default_price_book
from inference_placement.policy.queueing import poisson_sf, poisson_slots, queue_miss_share
from inference_placement.policy.slo_risk import SloTerms

PB = default_price_book()
ALL = [TargetName.CLUSTER, TargetName.CLOUDRUN, TargetName.LAMBDA]


def _spec(
    *,
    memory: str = "2Gi",
    cpu: str = "1",
    service: float = 0.04,
    size_mb: int = 300,
    accelerator: AcceleratorSpec | None = None,
    lambda_mb: int | None = None,
    spot: bool = False,
    allowed: list[TargetName] | None = None,
) -> InferenceWorkloadSpec:
    return InferenceWorkloadSpec(
        model=ModelSpec(image="x", size_mb=size_mb, cpu=cpu, memory=memory, service_seconds=service),
        accelerator=accelerator or AcceleratorSpec(),
        placement=PlacementSpec(allowed_targets=allowed or ALL),
        lambda_=LambdaSpec(memory_mb=lambda_mb),
        cluster=ClusterSpec(spot=spot),
    )


def _econ(spec: InferenceWorkloadSpec, target: TargetName) -> TargetEconomics:
    econ = economics_for(target, spec, PB)
    assert econ is not None
    return econ


# ------------------------------------------------------------------------------------------- hand-worked figures


def test_seed_002_lambda_2s_1gb_3m_requests_costs_about_100_to_110_a_month() -> None:
    """Seed 002: "Invoking a 2-second inference, 1 GB memory, 3 M requests/mo -> $100-110/mo".

    By hand: 3e6 x 2 s x 1 GB x $0.0000166667 = $100.00 of duration, + 3e6 x $0.20/1e6 = $0.60 of requests.
    """
    lam = _econ(_spec(lambda_mb=1024, service=2.0), TargetName.LAMBDA)
    per_request = lam.request_usd(2.0)
    assert per_request == pytest.approx(2.0 * 1.0 * 0.0000166667 + 0.0000002)
    monthly = 3_000_000 * per_request
    assert monthly == pytest.approx(100.6, abs=0.01)
    assert 100 <= monthly <= 110

    # the same figure out of the projection: a steady 3M requests/month, kept warm by one cheap ping
    rate = 3_000_000 / MONTH_SECONDS
    forecast = forecast_from_rates(_spec(lambda_mb=1024, service=2.0), np.full(60, rate), 60.0)
    slo = SloTerms(objective_seconds=5.0, attainment=0.99, tolerable_cold_start_seconds=10.0)
    projection = plan_target(lam, forecast, slo)
    assert 100 <= projection.monthly_usd() <= 110


def test_lambda_bills_whole_milliseconds() -> None:
    lam = _econ(_spec(lambda_mb=2048), TargetName.LAMBDA)
    assert lam.request_usd(0.0401) == pytest.approx(0.041 * 2 * 0.0000166667 + 0.0000002)


@pytest.mark.parametrize(
    ("accelerator", "spot", "cpu", "memory", "hourly"),
    [
        pytest.param(None, False, "1", "2Gi", 0.048, id="cpu-1vcpu-2gib"),
        pytest.param(None, False, "2", "16Gi", 4 * 0.048, id="cpu-memory-bound-16gib-is-4-vcpu-hours"),
        pytest.param(AcceleratorSpec(type=AcceleratorType.NVIDIA_L4), False, "4", "16Gi", 0.805, id="whole-l4"),
        pytest.param(
            AcceleratorSpec(type=AcceleratorType.NVIDIA_A100_80GB, sharing=GPUSharing.MIG, mig_profile="1g.10gb"),
            False,
            "2",
            "8Gi",
            5.12 / 7,
            id="mig-1g-is-a-seventh",
        ),
        pytest.param(
            AcceleratorSpec(type=AcceleratorType.NVIDIA_A100_80GB, sharing=GPUSharing.MIG, mig_profile="3g.40gb"),
            False,
            "4",
            "32Gi",
            5.12 * 3 / 7,
            id="mig-3g-is-three-sevenths",
        ),
        pytest.param(
            AcceleratorSpec(type=AcceleratorType.NVIDIA_T4, sharing=GPUSharing.TIME_SLICING, time_slicing_replicas=4),
            False,
            "1",
            "4Gi",
            0.526 / 4,
            id="time-sliced-t4-quarter",
        ),
        pytest.param(
            AcceleratorSpec(type=AcceleratorType.NVIDIA_A10G, count=2),
            True,
            "8",
            "32Gi",
            2 * 1.006 * (1 - 0.65),
            id="two-a10g-on-spot",
        ),
    ],
)
def test_cluster_replica_price(
    accelerator: AcceleratorSpec | None, spot: bool, cpu: str, memory: str, hourly: float
) -> None:
    spec = _spec(accelerator=accelerator, spot=spot, cpu=cpu, memory=memory, allowed=[TargetName.CLUSTER])
    assert cluster_replica_usd_per_hour(spec, PB) == pytest.approx(hourly)


def test_cloud_run_l4_instance_costs_gpu_plus_minimum_cpu_and_memory() -> None:
    """An L4 instance is billed at least 4 vCPU and 16 GiB, instance-based:
    4 x $0.000018 + 16 x $0.000002 + $0.0001867 = $0.0002907/s = $1.0465/h (vs $0.805/h for an L4 in the cluster)."""
    spec = _spec(
        accelerator=AcceleratorSpec(type=AcceleratorType.NVIDIA_L4),
        cpu="2",
        memory="8Gi",
        allowed=[TargetName.CLUSTER, TargetName.CLOUDRUN],
    )
    run = _econ(spec, TargetName.CLOUDRUN)
    assert run.billing is Billing.INSTANCE_BASED
    assert run.instance_usd_per_second == pytest.approx(4 * 0.000018 + 16 * 0.000002 + 0.0001867)
    assert run.instance_usd_per_second * 3600 == pytest.approx(1.0465, abs=1e-3)
    # cold start: GPU base 5 s + 1300 MB at 400 MB/s
    spec_1300 = _spec(
        accelerator=AcceleratorSpec(type=AcceleratorType.NVIDIA_L4),
        size_mb=1300,
        cpu="4",
        memory="16Gi",
        allowed=[TargetName.CLUSTER, TargetName.CLOUDRUN],
    )
    assert _econ(spec_1300, TargetName.CLOUDRUN).cold_start_seconds == pytest.approx(5.0 + 1300 / 400)


def test_cloud_run_request_based_request_cost() -> None:
    """1 vCPU, 2 GiB, 40 ms: 0.04 x (0.000024 + 2 x 0.0000025) + $0.0000004 = $1.56e-6 per request."""
    run = _econ(_spec(), TargetName.CLOUDRUN)
    assert run.billing is Billing.REQUEST_BASED
    assert run.request_usd(0.04) == pytest.approx(0.04 * 0.000029 + 0.0000004)
    # at 1 request/s the instance is busy (1 - e^-0.04) of the time (overlapping requests share billed time)
    per_second = float(steady_cost_per_second(run, np.array([1.0]), 0.04, 0, SloTerms(1, 0.99, 10))[0])
    assert per_second == pytest.approx((1 - math.exp(-0.04)) * 0.000029 + 0.0000004, rel=1e-6)


def test_cold_starts_follow_the_platform_model() -> None:
    spec = _spec(size_mb=300)
    assert _econ(spec, TargetName.LAMBDA).cold_start_seconds == pytest.approx(1.0 + 300 / 250)
    assert _econ(spec, TargetName.CLOUDRUN).cold_start_seconds == pytest.approx(1.5 + 300 / 400)
    assert _econ(spec, TargetName.CLUSTER).cold_start_seconds == pytest.approx(6.0 + 300 / 500)
    assert _econ(spec, TargetName.LAMBDA).provision_seconds == pytest.approx(30 + 1.0 + 300 / 250)


def test_pinging_an_idle_lambda_costs_cents_a_month_where_provisioned_concurrency_costs_dollars() -> None:
    lam = _econ(_spec(lambda_mb=2048), TargetName.LAMBDA)
    interval = lam.ping_interval_seconds
    assert interval is not None and interval < 600
    pings_month = MONTH_SECONDS / interval * lam.ping_usd
    provisioned_month = MONTH_SECONDS * lam.instance_usd_per_second
    assert pings_month < 0.05
    assert provisioned_month == pytest.approx(2 * 0.0000041667 * MONTH_SECONDS)  # ~$21.90
    assert provisioned_month > 100 * pings_month


def test_idle_cluster_replica_is_billed_all_month() -> None:
    spec = _spec(
        accelerator=AcceleratorSpec(type=AcceleratorType.NVIDIA_L4),
        cpu="4",
        memory="16Gi",
        allowed=[TargetName.CLUSTER],
    )
    cluster = _econ(spec, TargetName.CLUSTER)
    forecast = forecast_from_rates(spec, np.zeros(60), 60.0)
    slo = SloTerms.from_spec(spec)
    proj = plan_target(cluster, forecast, slo)
    # the next request must be served warm: one replica stays, $0.805 x 730 h
    assert proj.warm == 1
    assert proj.monthly_usd() == pytest.approx(0.805 * 730, rel=1e-6)


# ------------------------------------------------------------------------------------------- queueing math


def test_poisson_helpers_match_exact_sums() -> None:
    def exact_sf(a: float, n: int) -> float:
        return 1.0 - sum(math.exp(-a) * a**k / math.factorial(k) for k in range(n))

    for a in (0.01, 0.5, 3.0, 12.0):
        for n in (1, 2, 5, 20):
            assert float(poisson_sf(a, n)) == pytest.approx(exact_sf(a, n), abs=1e-12)
    for a, tail in ((0.2, 0.005), (5.0, 0.001), (15.0, 0.05)):
        n = int(poisson_slots(a, tail))
        assert exact_sf(a, n) <= tail < exact_sf(a, n - 1)


def test_erlang_c_matches_the_textbook_formula() -> None:
    def erlang_c(c: int, a: float) -> float:
        top = a**c / math.factorial(c) * c / (c - a)
        return top / (sum(a**k / math.factorial(k) for k in range(c)) + top)

    for c, a in ((8, 5.0), (16, 9.4), (4, 0.5)):
        assert float(queue_miss_share(np.array([a]), np.array([float(c)]), 0.0)[0]) == pytest.approx(
            erlang_c(c, a), rel=1e-6
        )
    # saturated: everybody waits
    assert float(queue_miss_share(np.array([10.0]), np.array([8.0]), 1.0)[0]) == 1.0


# ------------------------------------------------------------------------------------------- properties

SPECS = [
    _spec(lambda_mb=2048),
    _spec(
        accelerator=AcceleratorSpec(type=AcceleratorType.NVIDIA_L4),
        size_mb=1300,
        cpu="4",
        memory="16Gi",
        service=0.025,
        allowed=[TargetName.CLUSTER, TargetName.CLOUDRUN],
    ),
]


@settings(max_examples=60, deadline=None)
@given(
    spec_index=st.integers(0, len(SPECS) - 1),
    low=st.floats(0.0, 50.0),
    extra=st.floats(0.0, 50.0),
    warm=st.integers(0, 3),
)
def test_steady_cost_is_monotone_in_traffic(spec_index: int, low: float, extra: float, warm: int) -> None:
    spec = SPECS[spec_index]
    slo = SloTerms.from_spec(spec)
    for econ in workload_economics(spec, PB).values():
        rates = np.array([low, low + extra])
        cost = steady_cost_per_second(econ, rates, spec.model.service_seconds, warm, slo)
        assert cost[1] >= cost[0] - 1e-15


@settings(max_examples=40, deadline=None)
@given(
    spec_index=st.integers(0, len(SPECS) - 1),
    rate=st.floats(0.0, 30.0),
    extra=st.floats(0.0, 30.0),
)
def test_projected_cost_of_a_steady_window_is_monotone_in_traffic(spec_index: int, rate: float, extra: float) -> None:
    spec = SPECS[spec_index]
    slo = SloTerms.from_spec(spec)
    for econ in workload_economics(spec, PB).values():
        costs = []
        for r in (rate, rate + extra):
            forecast = forecast_from_rates(spec, np.full(30, r), 60.0)
            # at the same warm capacity, more traffic never costs less
            costs.append(project(econ, forecast, 1, slo).cost_usd())
        assert costs[1] >= costs[0] - 1e-12
