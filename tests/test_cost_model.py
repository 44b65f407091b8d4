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
from inference_placement.policy.slo_risk import SloTerms, level_cold_starts
from inference_placement.sim.platforms import ServerlessPool, make_pool

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


def test_lambda_requests_on_provisioned_concurrency_pay_its_duration_price_and_on_demand_beyond() -> None:
    """AWS Lambda pricing: provisioned concurrency is billed per second while enabled, plus requests and duration at
    its own duration price ($0.0000097222 per GB-s) for what it serves; requests beyond it run on demand
    ($0.0000166667). By hand: 1 GB, 0.5 s, 1 req/s, one provisioned instance: a request finds it busy with the
    chance P(N >= 1) = 1 - exp(-0.5) = 0.3935 (Poisson arrivals see the time average)."""
    spec = _spec(lambda_mb=1024, service=0.5)
    spec = spec.model_copy(update={"lambda_": spec.lambda_.model_copy(update={"provisioned_concurrency": 1})})
    lam = _econ(spec, TargetName.LAMBDA)
    slo = SloTerms.from_spec(spec)
    beyond = 1.0 - math.exp(-0.5)
    per_request = 0.5 * 0.0000097222 + beyond * 0.5 * (0.0000166667 - 0.0000097222) + 0.0000002
    enabled = 1.0 * 0.0000041667
    steady = steady_cost_per_second(lam, np.array([1.0]), 0.5, 0, slo)
    assert float(steady[0]) == pytest.approx(per_request + enabled, rel=1e-6)
    # the projection prices its requests the same way
    forecast = forecast_from_rates(spec, np.full(10, 1.0), 60.0)
    projection = project(lam, forecast, 0, slo)
    cold = float(projection.cold_starts.sum()) * lam.cold_start_usd
    assert projection.cost_usd() - cold == pytest.approx(600.0 * (per_request + enabled), rel=1e-6)


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
    warm=st.integers(0, 2),
)
def test_projected_cost_besides_cold_starts_is_monotone_in_traffic(
    spec_index: int, rate: float, extra: float, warm: int
) -> None:
    """At the same warm capacity, more traffic never costs less in duration, request fees, pings, provisioned
    concurrency or instance time. The total may: a cold start's INIT is billed (Lambda since August 2025, Cloud
    Run's start-up), and more traffic keeps an instance warm that less traffic lets the keep-alive reclaim, so
    it avoids cold starts (see ``test_more_traffic_can_cost_less_by_avoiding_billed_cold_starts``)."""
    spec = SPECS[spec_index]
    slo = SloTerms.from_spec(spec)
    for econ in workload_economics(spec, PB).values():
        # instance-based Cloud Run bills an instance's whole life, its start-up included: no separate cold start bill
        per_cold_start = 0.0 if econ.billing is Billing.INSTANCE_BASED else econ.cold_start_usd
        besides = []
        for r in (rate, rate + extra):
            p = project(econ, forecast_from_rates(spec, np.full(30, r), 60.0), warm, slo)
            besides.append(p.cost_usd() - float(p.cold_starts.sum()) * per_cold_start)
        assert besides[1] >= besides[0] - 1e-12


def _steady_lambda_cold_starts_per_step(rate: float, warm: int, service: float, keep_alive: float) -> float:
    """Cold starts per 60 s step of a steady Poisson stream on Lambda (one request per instance, the most recently
    used free instance serves, an idle one is reclaimed ``keep_alive`` after its last use, ``warm`` kept warm):
    the ``j``-th instance is needed by the arrivals finding ``j - 1`` or more in flight, at ``rate P(N >= j - 1)``
    per second, and one of them starts it cold when none came in the keep-alive before it: ``lam exp(-lam K)``."""
    a = rate * service
    total = 0.0
    for j in range(warm + 1, warm + 12):
        below = sum(math.exp(-a) * a**m / math.factorial(m) for m in range(j - 1))
        lam = rate * (1.0 - below)
        total += lam * math.exp(-lam * keep_alive) * 60.0
    return total


def _simulated_cold_starts_per_step(econ: TargetEconomics, rate: float, warm: int, seconds: float) -> float:
    """The project's simulator (``sim.platforms``) serving a seeded Poisson stream: cold starts per 60 s step."""
    pool = make_pool(econ)
    assert isinstance(pool, ServerlessPool)
    pool.set_levels(0.0, 0, warm, prewarmed=True)
    rng = np.random.default_rng(7)
    arrivals = np.cumsum(rng.exponential(1.0 / rate, int(rate * seconds * 1.1)))
    for t in arrivals[arrivals < seconds].tolist():
        pool.dispatch(t, 0.025)
    return pool.cold_starts / seconds * 60.0


def test_lambda_cold_starts_follow_the_keep_alive_not_a_pool_threshold() -> None:
    """Regression (hypothesis falsified the projection's monotonicity with spec 1, 0.25 -> 0.5 req/s, one instance
    kept warm): the second instance was either counted cold at every arrival that found the first one busy
    (0.093 cold starts a step at 0.25 req/s, while the instance it starts stays warm for the keep-alive and serves
    the next ones) or, once a threshold made it part of the warm pool, never (0.0023 at 0.5 req/s, its own cold
    starts forgotten). At 16 GB and a 6.2 s INIT a cold start bills $0.00165, 240 requests' worth, so the
    projection came out at $0.0078 for 0.25 req/s and $0.0070 for 0.5. The keep-alive gives, and the simulator
    measures, 0.037 and 0.011-0.013 a step; the projection now costs more at 0.5 req/s."""
    spec = SPECS[1]
    slo = SloTerms.from_spec(spec)
    econ = _econ(spec, TargetName.LAMBDA)
    assert econ.cold_start_usd == pytest.approx(6.2 * 16 * 0.0000166667, rel=1e-6)
    keep_alive = econ.keep_alive_seconds
    assert keep_alive == 600.0
    costs = []
    for rate in (0.25, 0.5):
        p = project(econ, forecast_from_rates(spec, np.full(30, rate), 60.0), 1, slo)
        costs.append(p.cost_usd())
        steady = float(p.cold_starts[-1])  # 20 steps past the window's (idle) start: past any keep-alive
        assert steady == pytest.approx(_steady_lambda_cold_starts_per_step(rate, 1, 0.025, keep_alive), rel=1e-3)
        # the simulator (whose instances are also busy through their 6.2 s INIT) agrees within its noise
        assert steady == pytest.approx(_simulated_cold_starts_per_step(econ, rate, 1, 400_000.0), rel=0.25)
    assert costs[1] > costs[0]
    assert costs == pytest.approx([0.005412, 0.008293], rel=1e-3)


def test_more_traffic_can_cost_less_by_avoiding_billed_cold_starts() -> None:
    """Why the projected total is not monotone in traffic: with nothing kept warm, one request every 200 s lets
    the keep-alive (600 s) lapse before 5 % of the arrivals (exp(-3)), one every 100 s before 0.25 % (exp(-6)).
    Each lapse bills an INIT of 6.2 s at 16 GB ($0.00165, 240 requests' worth), so doubling the traffic adds
    $0.0000021 of requests a step and saves $0.000022 of INIT: steady cold starts fall from 0.0150 to 0.0016 a
    step (the simulator: 0.016 and 0.0017), and the window costs less."""
    spec = SPECS[1]
    slo = SloTerms.from_spec(spec)
    econ = _econ(spec, TargetName.LAMBDA)
    projections = [project(econ, forecast_from_rates(spec, np.full(30, r), 60.0), 0, slo) for r in (0.005, 0.01)]
    steady = [float(p.cold_starts[-1]) for p in projections]
    assert steady == pytest.approx([0.014974, 0.0016370], rel=1e-3)
    for rate, cold in zip((0.005, 0.01), steady, strict=True):
        assert cold == pytest.approx(_steady_lambda_cold_starts_per_step(rate, 0, 0.025, 600.0), rel=1e-3)
    besides = [p.cost_usd() - float(p.cold_starts.sum()) * econ.cold_start_usd for p in projections]
    assert besides[1] > besides[0]
    assert projections[1].cost_usd() < projections[0].cost_usd()
    assert projections[1].cost_usd() == pytest.approx(0.0018294, rel=1e-3)
    assert projections[0].cost_usd() == pytest.approx(0.0021286, rel=1e-3)


def test_level_cold_starts_steady_start_and_sure_use() -> None:
    k = 10
    # steady: n uses a step, K = 10 steps: the keep-alive lapses before exp(-10 n) of them
    for n in (0.05, 0.3, 2.0):
        cold = level_cold_starts(np.full((1, 40), n), k)[0]
        assert cold[k:] == pytest.approx(np.full(40 - k, n * math.exp(-k * n)), rel=1e-9)
        assert cold[0] == pytest.approx(1.0 - math.exp(-n), rel=1e-9)  # the history before the window is idle
    # a level surely used in a step starts cold there once at most, then stays warm for the keep-alive
    uses = np.zeros((1, 30))
    uses[0, [0, 5, 20]] = 40.0
    cold = level_cold_starts(uses, k)[0]
    assert cold[0] == pytest.approx(1.0)
    assert cold[5] < 1e-15
    assert cold[20] == pytest.approx(1.0)
    assert cold.sum() == pytest.approx(2.0)
