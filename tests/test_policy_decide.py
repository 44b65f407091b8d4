"""The placement decision: decision tables for each rule, then properties (hypothesis)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inference_placement.api.spec import (
    AcceleratorSpec,
    AcceleratorType,
    BudgetAction,
    BudgetSpec,
    ClusterSpec,
    ComplianceSpec,
    GPUSharing,
    InferenceWorkloadSpec,
    ModelSpec,
    PlacementSpec,
    ScalingSpec,
    SLOSpec,
    TargetName,
    ThresholdMode,
    ThresholdsSpec,
)
from inference_placement.policy.budget import seconds_to_month_end
from inference_placement.policy.capacity import ClusterCapacity, NodeCapacity
from inference_placement.policy.decide import Decision, PlacementState, TrafficWindow, assess, decide
from inference_placement.policy.forecast import (
    measured_service_scv,
    poisson_shrunk_rates,
    rate_variability,
    service_scv,
)
from inference_placement.policy.price_book import default_price_book

PB = default_price_book()
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
ALL = [TargetName.CLUSTER, TargetName.CLOUDRUN, TargetName.LAMBDA]
UNKNOWN = ClusterCapacity()


def cpu_spec(**placement: object) -> InferenceWorkloadSpec:
    """A small CPU classifier (seed 000's 'lightweight inference')."""
    return InferenceWorkloadSpec(
        model=ModelSpec(image="x", size_mb=300, cpu="1", memory="2Gi", service_seconds=0.04),
        slo=SLOSpec(objective_seconds=0.3, attainment=0.99),
        placement=PlacementSpec(**({"allowed_targets": ALL} | placement)),
    )


def gpu_spec(**overrides: object) -> InferenceWorkloadSpec:
    base: dict[str, object] = {
        "model": ModelSpec(image="x", size_mb=1300, cpu="4", memory="16Gi", service_seconds=0.025),
        "accelerator": AcceleratorSpec(type=AcceleratorType.NVIDIA_L4),
        "slo": SLOSpec(objective_seconds=0.2),
        "placement": PlacementSpec(allowed_targets=[TargetName.CLUSTER, TargetName.CLOUDRUN]),
        "scaling": ScalingSpec(target_concurrency=8),
    }
    base.update(overrides)
    return InferenceWorkloadSpec(**base)


def window(
    rps: float | list[float], steps: int = 120, *, end: datetime = NOW, p99: float | None = None
) -> TrafficWindow:
    rates = [float(rps)] * steps if not isinstance(rps, list) else [float(r) for r in rps]
    return TrafficWindow(step_seconds=60.0, rps=tuple(rates), observed_p99_seconds=p99, end=end)


def state(current: TargetName | None, *, finished: datetime | None = None, mtd: float = 0.0) -> PlacementState:
    return PlacementState(current=current, last_migration_finished_at=finished, month_to_date_usd=mtd)


def run(
    spec: InferenceWorkloadSpec, w: TrafficWindow | None, s: PlacementState, capacity: ClusterCapacity = UNKNOWN
) -> Decision:
    return decide(spec, w, s, PB, capacity, NOW)


# ------------------------------------------------------------------------------------------------ decision tables


def test_first_placement_without_metrics_takes_the_cheapest_target_kept_warm() -> None:
    d = run(cpu_spec(), None, state(None))
    assert d.metrics_ok is False
    assert d.target in (TargetName.LAMBDA, TargetName.CLOUDRUN)
    assert d.migrate is True
    # a cold start (2.2 s) would break a 300 ms objective: the first request must find a warm instance
    assert d.keep_warm_instances + d.replicas >= 1
    assert "no traffic seen yet" in d.reason


@pytest.mark.parametrize(
    "w",
    [
        pytest.param(None, id="missing"),
        pytest.param(window(5.0, end=NOW - timedelta(seconds=600)), id="stale"),
        pytest.param(window([1.0] * 10 + [float("nan")]), id="latest-sample-invalid"),
        pytest.param(TrafficWindow(60.0, (), None, NOW), id="empty"),
    ],
)
def test_no_change_while_metrics_are_missing_or_stale(w: TrafficWindow | None) -> None:
    d = run(cpu_spec(), w, state(TargetName.CLUSTER))
    assert d.metrics_ok is False
    assert d.target is None
    assert d.migrate is False


def test_gpu_model_is_never_placed_on_lambda_and_says_why() -> None:
    spec = gpu_spec(placement=PlacementSpec(allowed_targets=[TargetName.CLUSTER, TargetName.CLOUDRUN]))
    d = run(spec, window(0.0), state(None))
    assert d.target is not TargetName.LAMBDA
    assert d.projected_monthly_cost_usd[TargetName.LAMBDA] is None
    assert TargetName.LAMBDA in d.infeasible


def test_cloud_run_offers_only_l4() -> None:
    spec = gpu_spec(accelerator=AcceleratorSpec(type=AcceleratorType.NVIDIA_A100_80GB))
    d = run(spec, window(0.0), state(None))
    assert "nvidia-l4" in d.infeasible[TargetName.CLOUDRUN]
    assert d.target is TargetName.CLUSTER


def test_lambda_memory_and_duration_limits() -> None:
    big = InferenceWorkloadSpec(
        model=ModelSpec(image="x", size_mb=300, cpu="4", memory="16Gi", service_seconds=0.04),
        placement=PlacementSpec(allowed_targets=ALL),
    )
    assert "10,240" in run(big, window(0.0), state(None)).infeasible[TargetName.LAMBDA]
    slow = InferenceWorkloadSpec(
        model=ModelSpec(image="x", size_mb=300, cpu="1", memory="2Gi", service_seconds=120),
        placement=PlacementSpec(allowed_targets=ALL),
    )
    assert "timeout" in run(slow, window(0.0), state(None)).infeasible[TargetName.LAMBDA]


def test_pin_wins_over_cost() -> None:
    spec = cpu_spec(pin=TargetName.CLUSTER)
    d = run(spec, window(0.01), state(TargetName.LAMBDA))
    assert d.target is TargetName.CLUSTER and d.migrate is True
    assert "pinned" in d.reason


def test_single_tenant_keeps_it_in_the_cluster_and_reports_the_price_of_the_rule() -> None:
    spec = cpu_spec().model_copy(update={"compliance": ComplianceSpec(single_tenant=True)})
    d = run(spec, window(0.01), state(None))
    assert d.target is TargetName.CLUSTER
    assert "singleTenant" in d.infeasible[TargetName.LAMBDA]


def test_allowed_targets_are_honoured() -> None:
    spec = cpu_spec(allowed_targets=[TargetName.CLUSTER, TargetName.CLOUDRUN])
    d = run(spec, window(0.01), state(None))
    assert d.target is TargetName.CLOUDRUN
    assert "allowedTargets" in d.infeasible[TargetName.LAMBDA]


def _gpu_node(product: str, resource: str, allocatable: float, free: float, **labels: str) -> NodeCapacity:
    """A GPU node with room for plenty of replicas' CPU and memory."""
    return NodeCapacity(
        name=f"{product}-{resource}",
        labels={"nvidia.com/gpu.product": product, **labels},
        allocatable={"cpu": 48, "memory": 192 * 1024, resource: allocatable},
        free={"cpu": 40, "memory": 160 * 1024, resource: free},
    )


def _l4_capacity(free: float) -> ClusterCapacity:
    return ClusterCapacity(nodes=(_gpu_node("NVIDIA-L4", "nvidia.com/gpu", 4, free),), known=True)


@pytest.mark.parametrize(
    ("capacity", "autoscaler", "cluster_ok"),
    [
        pytest.param(_l4_capacity(1), False, True, id="free-l4"),
        pytest.param(_l4_capacity(0), False, False, id="no-free-l4"),
        pytest.param(_l4_capacity(0), True, True, id="no-free-l4-but-node-autoscaler"),
        pytest.param(ClusterCapacity(known=True), False, False, id="no-l4-node-at-all"),
        pytest.param(ClusterCapacity(known=False), False, True, id="capacity-not-read-yet"),
    ],
)
def test_cluster_capacity_gates_moving_in(capacity: ClusterCapacity, autoscaler: bool, cluster_ok: bool) -> None:
    spec = gpu_spec(cluster=ClusterSpec(node_autoscaler=autoscaler))
    d = run(spec, window(0.0), state(TargetName.CLOUDRUN), capacity)
    assert (TargetName.CLUSTER not in d.infeasible) is cluster_ok
    if not cluster_ok:
        assert d.target is not TargetName.CLUSTER


def test_mig_slice_capacity_is_matched_by_profile_resource() -> None:
    spec = gpu_spec(
        accelerator=AcceleratorSpec(
            type=AcceleratorType.NVIDIA_A100_80GB, sharing=GPUSharing.MIG, mig_profile="1g.10gb"
        ),
        placement=PlacementSpec(allowed_targets=[TargetName.CLUSTER]),
    )
    mixed = ClusterCapacity(nodes=(_gpu_node("NVIDIA-A100-SXM4-80GB", "nvidia.com/mig-1g.10gb", 7, 1),), known=True)
    other_profile = ClusterCapacity(
        nodes=(_gpu_node("NVIDIA-A100-SXM4-80GB", "nvidia.com/mig-3g.40gb", 2, 2),), known=True
    )
    assert TargetName.CLUSTER not in run(spec, window(0.0), state(None), mixed).infeasible
    assert TargetName.CLUSTER in run(spec, window(0.0), state(None), other_profile).infeasible


def test_offloads_after_sustained_low_traffic() -> None:
    d = run(cpu_spec(), window(0.05), state(TargetName.CLUSTER))
    assert d.target in (TargetName.LAMBDA, TargetName.CLOUDRUN)
    assert d.migrate is True
    assert "offload" in d.reason and "break-even" in d.reason
    assert d.thresholds_rps is not None and d.thresholds_rps[0] > 0.05


def test_a_spike_inside_the_sustain_window_holds_the_offload() -> None:
    rates = [0.05] * 115 + [0.05, 40.0, 0.05, 0.05, 0.05]  # the sustain window is the last 5 steps
    d = run(cpu_spec(), window(rates), state(TargetName.CLUSTER))
    assert d.target is TargetName.CLUSTER
    assert d.migrate is False
    assert d.preferred in (TargetName.LAMBDA, TargetName.CLOUDRUN)


def test_reclaims_into_the_cluster_after_sustained_high_traffic() -> None:
    d = run(cpu_spec(), window(60.0), state(TargetName.LAMBDA))
    assert d.target is TargetName.CLUSTER and d.migrate is True
    assert "reclaim" in d.reason


def test_explicit_thresholds_decide_whatever_the_cost() -> None:
    spec = cpu_spec(
        thresholds=ThresholdsSpec(mode=ThresholdMode.EXPLICIT, offload_below_rps=0.5, reclaim_above_rps=2.0)
    )
    # 1 rps is between the thresholds: stay where it is, on either side
    assert run(spec, window(1.0), state(TargetName.CLUSTER)).target is TargetName.CLUSTER
    assert run(spec, window(1.0), state(TargetName.LAMBDA)).target is TargetName.LAMBDA
    # 3 rps is above reclaim: back to the cluster, even though Lambda would be cheaper at 3 rps
    d = run(spec, window(3.0), state(TargetName.LAMBDA))
    assert d.target is TargetName.CLUSTER and d.migrate
    assert "explicit" in d.reason


def test_cooldown_holds_a_move_and_then_lets_it_go() -> None:
    spec = cpu_spec(cooldown_seconds=900)
    held = run(spec, window(0.05), state(TargetName.CLUSTER, finished=NOW - timedelta(seconds=300)))
    assert held.target is TargetName.CLUSTER and held.migrate is False
    assert "cooldown" in held.reason and held.preferred is not None
    free = run(spec, window(0.05), state(TargetName.CLUSTER, finished=NOW - timedelta(seconds=1000)))
    assert free.migrate is True


def test_budget_projection_is_month_to_date_plus_forecast() -> None:
    spec = gpu_spec(
        budget=BudgetSpec(monthly_usd=300, action=BudgetAction.ALERT),
        placement=PlacementSpec(allowed_targets=[TargetName.CLUSTER]),
    )
    d = run(spec, window(1.0), state(TargetName.CLUSTER, mtd=200.0))
    hours_left = seconds_to_month_end(NOW) / 3600
    assert d.projected_month_usd == pytest.approx(200.0 + 0.805 * hours_left, rel=0.02)
    assert d.budget_exceeded is True
    assert "budget" in d.reason


def test_budget_cap_scaling_caps_replicas() -> None:
    spec = gpu_spec(
        budget=BudgetSpec(monthly_usd=400, action=BudgetAction.CAP_SCALING),
        placement=PlacementSpec(allowed_targets=[TargetName.CLUSTER]),
    )
    d = run(spec, window(400.0), state(TargetName.CLUSTER, mtd=100.0))
    assert d.budget_exceeded is True
    assert d.max_replicas is not None and d.replicas <= d.max_replicas
    assert "cap-scaling" in d.reason


def test_budget_prefer_cheaper_takes_the_cheapest_even_when_riskier() -> None:
    # without warm capacity Cloud Run would be cheapest; the 200 ms SLO makes it risky, the budget makes it win
    spec = gpu_spec(budget=BudgetSpec(monthly_usd=1, action=BudgetAction.PREFER_CHEAPER))
    d = run(spec, window(0.0), state(TargetName.CLUSTER))
    assert d.budget_exceeded is True
    assert "prefer-cheaper" in d.reason


def test_reason_carries_the_numbers() -> None:
    d = run(cpu_spec(), window(0.05), state(TargetName.CLUSTER))
    assert "$" in d.reason and "/mo" in d.reason and "rps" in d.reason and "%" in d.reason
    assert all(v is None or v >= 0 for v in d.projected_monthly_cost_usd.values())
    assert d.slo_risk is not None and 0.0 <= d.slo_risk <= 1.0


def test_cluster_replicas_follow_the_recent_peak_and_react_to_observed_latency() -> None:
    spec = gpu_spec(placement=PlacementSpec(allowed_targets=[TargetName.CLUSTER]))
    quiet = run(spec, window(1.0), state(TargetName.CLUSTER))
    busy = run(spec, window([1.0] * 100 + [400.0] * 20), state(TargetName.CLUSTER))
    assert busy.replicas > quiet.replicas >= 1
    slow = run(spec, window([1.0] * 100 + [400.0] * 20, p99=0.5), state(TargetName.CLUSTER))
    assert slow.replicas == busy.replicas + 1 or slow.replicas == spec.scaling.max_replicas


# ------------------------------------------------------------------------------------------------ properties

SPECS = [cpu_spec(), gpu_spec(), cpu_spec(allowed_targets=[TargetName.CLUSTER, TargetName.LAMBDA])]


@settings(max_examples=60, deadline=None)
@given(
    spec_index=st.integers(0, len(SPECS) - 1),
    rates=st.lists(st.floats(0.0, 200.0), min_size=1, max_size=40),
    current=st.sampled_from([None, *TargetName]),
    free_gpus=st.sampled_from([None, 0.0, 2.0]),
)
def test_never_an_infeasible_target(
    spec_index: int, rates: list[float], current: TargetName | None, free_gpus: float | None
) -> None:
    spec = SPECS[spec_index]
    capacity = UNKNOWN if free_gpus is None else _l4_capacity(free_gpus)
    d = run(spec, window(rates), state(current), capacity)
    if d.target is not None and d.target is not current:
        assert d.target not in d.infeasible
        assert d.target in spec.placement.allowed_targets
    if d.migrate:
        assert d.target is not None and d.target not in d.infeasible


@settings(max_examples=25, deadline=None)
@given(
    spec_index=st.integers(0, len(SPECS) - 1), start=st.sampled_from(list(TargetName)), position=st.floats(-0.95, 0.95)
)
def test_no_flapping_under_constant_traffic_inside_the_hysteresis_band(
    spec_index: int, start: TargetName, position: float
) -> None:
    """Constant traffic inside the band around the break-even never moves the workload, tick after tick."""
    spec = SPECS[spec_index]
    if start not in spec.placement.allowed_targets or start in run(spec, window(0.0), state(None)).infeasible:
        return
    probe = run(spec, window(0.0), state(TargetName.CLUSTER))
    probe = (
        run(
            spec,
            window(100.0),
            state(TargetName.LAMBDA if TargetName.LAMBDA in spec.placement.allowed_targets else TargetName.CLOUDRUN),
        )
        if probe.thresholds_rps is None
        else probe
    )
    if probe.thresholds_rps is None:
        return
    offload, reclaim = probe.thresholds_rps
    if not np.isfinite(reclaim) or reclaim <= 0:
        return
    rate = offload + (reclaim - offload) * (position + 1.0) / 2.0
    current = start
    moves = 0
    now = NOW
    finished: datetime | None = None
    for _ in range(12):
        d = decide(spec, window(rate, end=now), state(current, finished=finished), PB, UNKNOWN, now)
        if d.migrate and d.target is not None and d.target is not current:
            moves += 1
            current = d.target
            finished = now
        now += timedelta(minutes=20)
    # inside the band the cluster/serverless boundary is never crossed; one serverless-to-serverless move at most
    assert moves <= 1


@settings(max_examples=25, deadline=None)
@given(spec_index=st.integers(0, len(SPECS) - 1), rate=st.floats(0.0, 300.0), start=st.sampled_from(list(TargetName)))
def test_constant_traffic_settles_after_at_most_one_move(spec_index: int, rate: float, start: TargetName) -> None:
    spec = SPECS[spec_index]
    if start not in spec.placement.allowed_targets or start in run(spec, window(0.0), state(None)).infeasible:
        return
    current = start
    history = [current]
    now = NOW
    finished: datetime | None = None
    for _ in range(10):
        d = decide(spec, window(rate, end=now), state(current, finished=finished), PB, UNKNOWN, now)
        if d.migrate and d.target is not None and d.target is not current:
            current = d.target
            finished = now
            history.append(current)
        now += timedelta(minutes=20)
    assert len(history) <= 3, history
    assert len(set(history)) == len(history), f"came back: {history}"


def test_observed_in_flight_peaks_size_for_bursts_the_rates_average_away() -> None:
    spec = gpu_spec(placement=PlacementSpec(allowed_targets=[TargetName.CLUSTER]))
    rates = [2.0] * 60
    smooth = TrafficWindow(60.0, tuple(rates), None, NOW, peak_in_flight=tuple([1.0] * 60))
    bursty = TrafficWindow(60.0, tuple(rates), None, NOW, peak_in_flight=tuple([1.0] * 58 + [400.0, 2.0]))
    calm = run(spec, smooth, state(TargetName.CLUSTER))
    burst = run(spec, bursty, state(TargetName.CLUSTER))
    # 400 in flight on 8-slot replicas; a 200 ms objective lets a 25 ms request queue 7 service times behind busy
    # slots (``queueing.queued_in_time``): 2 replicas would take a burst of 40, 400 needs 7
    assert burst.replicas >= 7 > calm.replicas
    assert "in flight" in burst.reason and "in flight" not in calm.reason  # the observed peak, or its peakedness
    forty = TrafficWindow(60.0, tuple(rates), None, NOW, peak_in_flight=tuple([1.0] * 58 + [40.0, 2.0]))
    assert run(spec, forty, state(TargetName.CLUSTER)).replicas <= 2


def test_observed_slo_misses_tighten_the_sizing_of_the_current_target() -> None:
    spec = gpu_spec(placement=PlacementSpec(allowed_targets=[TargetName.CLUSTER]))
    rates = tuple([30.0] * 60)
    fine = run(spec, TrafficWindow(60.0, rates, None, NOW, slo_miss_share=0.0), state(TargetName.CLUSTER))
    missing = run(spec, TrafficWindow(60.0, rates, None, NOW, slo_miss_share=0.05), state(TargetName.CLUSTER))
    assert missing.replicas >= fine.replicas
    assert "observed 5.00% of requests over the SLO" in missing.reason
    assert "stricter" in missing.reason


def l4_cluster_spec(size_mb: int, memory: str, service: float, objective: float, slots: int) -> InferenceWorkloadSpec:
    """A model on a whole L4, cluster only, up to 20 replicas of ``slots`` requests each."""
    return InferenceWorkloadSpec(
        model=ModelSpec(image="x", size_mb=size_mb, cpu="4", memory=memory, service_seconds=service),
        accelerator=AcceleratorSpec(type=AcceleratorType.NVIDIA_L4),
        slo=SLOSpec(objective_seconds=objective),
        placement=PlacementSpec(allowed_targets=[TargetName.CLUSTER]),
        scaling=ScalingSpec(target_concurrency=slots, max_replicas=20),
    )


def llm_spec() -> InferenceWorkloadSpec:
    """LLM-like: 16 slots per replica, a 2 s time-to-first-token objective on a 4.45 s mean generation."""
    return l4_cluster_spec(14000, "32Gi", 4.45, 2.0, 16)


def llm_window(rates: list[float], peaks: list[float] | None = None) -> TrafficWindow:
    """Per-minute rates with the LLM's observed service time and time to first token (0.3 s)."""
    return TrafficWindow(
        60.0,
        tuple(rates),
        None,
        NOW,
        service_seconds=4.45,
        warm_latency_seconds=0.3,
        peak_in_flight=tuple(peaks) if peaks is not None else None,
    )


def test_a_steady_stream_under_a_peak_works_off_its_excess_a_lone_burst_does_not() -> None:
    spec = llm_spec()
    # 4.5 rps: 20 in flight all along (2 replicas by Erlang C), with Poisson peaks of 36 in flight
    on_steady = run(spec, llm_window([4.5] * 60, [36.0] * 60), state(TargetName.CLUSTER))
    # the same peak reached by a burst on a near-idle stream: its own requests free no slot within the slack
    on_lone = run(spec, llm_window([0.05] * 60, [1.0] * 59 + [36.0]), state(TargetName.CLUSTER))
    assert on_lone.replicas == 3  # 36 in flight on 16-slot replicas
    # held by the peak itself or by the peakedness it shows (a burst of 36 on a near-idle stream)
    assert "observed peak 36 in flight" in on_lone.reason or "in-flight peaks show bursts" in on_lone.reason
    # 2 x 16 slots, and the 20 steady requests free slots fast enough for the other 4 to start within 1.7 s
    assert on_steady.replicas == 2, on_steady.reason
    assert "observed peak" not in on_steady.reason


def test_only_a_trend_that_stands_out_of_the_noise_is_carried_over_a_replica_start() -> None:
    spec = llm_spec()
    rng = np.random.default_rng(7)
    # Poisson counts of a steady 8.6 rps whose last five minutes happen to rise a little (a slope of one
    # standard error): sized for the sustain window's peak, as flat traffic at that peak is
    noisy = [float(c) / 60.0 for c in rng.poisson(8.6 * 60.0, 55)] + [8.4, 8.5, 8.6, 8.7, 8.8]
    calm = run(spec, llm_window(noisy), state(TargetName.CLUSTER))
    flat = run(spec, llm_window([8.8] * 60), state(TargetName.CLUSTER))
    assert calm.replicas == flat.replicas == 3, calm.reason
    # a real ramp: sized beyond its last step, for where it will be once a new replica serves
    ramp = [5.5] * 55 + [6.0, 8.0, 10.0, 12.0, 14.0]
    rising = run(spec, llm_window(ramp), state(TargetName.CLUSTER))
    at_last_step = run(spec, llm_window([14.0] * 60), state(TargetName.CLUSTER))
    assert rising.replicas > at_last_step.replicas


def test_calibration_reads_the_misses_of_the_capacity_in_place_now() -> None:
    spec = gpu_spec(placement=PlacementSpec(allowed_targets=[TargetName.CLUSTER]))
    rates = tuple([30.0] * 60)
    share = 3000 / 108000  # the window's share in both cases
    early = tuple([300.0] * 10 + [0.0] * 50)  # misses while capacity was short, 50 minutes ago
    recent = tuple([0.0] * 50 + [300.0] * 10)
    old = run(
        spec, TrafficWindow(60.0, rates, None, NOW, slo_miss_share=share, slo_misses=early), state(TargetName.CLUSTER)
    )
    now = run(
        spec, TrafficWindow(60.0, rates, None, NOW, slo_miss_share=share, slo_misses=recent), state(TargetName.CLUSTER)
    )
    assert "stricter" not in old.reason
    assert "over the last 5 min" in now.reason and "stricter" in now.reason
    assert now.replicas >= old.replicas
    # too few recent requests for the budget to allow a single miss: the whole window's share speaks
    sparse = tuple([0.2] * 60)
    few = run(
        spec,
        TrafficWindow(60.0, sparse, None, NOW, slo_miss_share=0.2, slo_misses=tuple([0.0] * 60)),
        state(TargetName.CLUSTER),
    )
    assert "over the window" in few.reason


def test_a_move_under_way_is_not_charged_again_halfway() -> None:
    """Just above the break-even, over a near-term horizon of seconds (an 8 s sustain window, a 20 s cooldown), the
    cluster is cheaper than serverless only without the cost of moving there; once that move is under way
    (``status.migration.target``) its cost is being paid, and a decision made halfway keeps to it instead of turning
    back to the source (the live operator decides every tick during a migration)."""
    spec = cpu_spec(sustain_seconds=8, cooldown_seconds=20)
    rates = np.geomspace(5.0, 40.0, 60)

    def short(r: float) -> TrafficWindow:
        return TrafficWindow(step_seconds=2.0, rps=(r,) * 30, observed_p99_seconds=None, end=NOW)

    placed = [run(spec, short(float(r)), state(TargetName.CLOUDRUN)) for r in rates]
    moving_to = PlacementState(TargetName.CLOUDRUN, None, 0.0, moving_to=TargetName.CLUSTER)
    moving = [run(spec, short(float(r)), moving_to) for r in rates]
    band = [i for i, (a, b) in enumerate(zip(placed, moving, strict=True)) if a.target != b.target]
    assert band, "no rate where the move's own cost decides: the test shows nothing"
    assert all(placed[i].target is TargetName.CLOUDRUN and moving[i].target is TargetName.CLUSTER for i in band)
    # below the band both stay, above it both move: only the sunk move's cost differs
    assert all(placed[i].target is moving[i].target is TargetName.CLOUDRUN for i in range(min(band)))
    assert all(placed[i].target is moving[i].target is TargetName.CLUSTER for i in range(max(band) + 1, len(rates)))


def test_a_rate_that_varies_beyond_poisson_noise_gets_more_headroom_than_a_poisson_one() -> None:
    """Issue 17: at volume, Poisson noise vanishes and the rate's own step-to-step variability is what a replica
    start must ride out. Same mean (100 rps on an LLM-like spec, ~445 in flight), same sustain-window peak: the
    series whose per-minute counts vary far more than Poisson gets more replicas, and the reason says why."""
    spec = llm_spec().model_copy(update={"scaling": ScalingSpec(target_concurrency=16, max_replicas=200)})
    rng = np.random.default_rng(17)
    poisson = [float(c) / 60.0 for c in rng.poisson(100.0 * 60.0, 60)]
    # the same mean with +-8 % swings from minute to minute (overdispersed: ~50x the Poisson variance)
    swings = [float(c) / 60.0 for c in rng.poisson(100.0 * 60.0 * (1.0 + 0.08 * rng.standard_normal(60)))]
    tail = [100.0, 101.0, 99.0, 100.5, 100.2]  # the same last five minutes: the same sustain-window peak
    calm = run(spec, llm_window(poisson[:-5] + tail), state(TargetName.CLUSTER))
    varied = run(spec, llm_window(swings[:-5] + tail), state(TargetName.CLUSTER))
    assert "rate varies" not in calm.reason, calm.reason
    assert "rate varies" in varied.reason and "x Poisson between steps" in varied.reason
    assert varied.replicas > calm.replicas, (varied.reason, calm.reason)


def test_rate_variability_is_the_excess_over_poisson_around_a_local_trend() -> None:
    rng = np.random.default_rng(5)
    step = 60.0
    steady = rng.poisson(50.0 * step, 60) / step
    assert rate_variability(steady, step).excess_sd_rps == 0.0
    assert 0.5 < rate_variability(steady, step).dispersion < 1.5
    # a slow daily-like ramp is a trend, not variability: successive differences ignore it
    ramp = rng.poisson(np.linspace(20.0, 80.0, 60) * step) / step
    assert rate_variability(ramp, step).excess_sd_rps == 0.0
    # a rate jumping by +-10 % from step to step: its excess is about those 10 % (5 rps)
    jumpy = rng.poisson(50.0 * step * (1.0 + 0.1 * rng.standard_normal(60))) / step
    excess = rate_variability(jumpy, step).excess_sd_rps
    assert 3.5 < excess < 6.5


def test_bursts_the_in_flight_peaks_showed_earlier_in_the_window_keep_their_capacity() -> None:
    """A gauge read at scrapes sees a burst now and then, not every one (issue 17's code trace: 5-second bursts
    between quiet minutes). A reading far beyond what Poisson arrivals at the step's rate reach is a burst; the
    in-flight count's peakedness it shows sizes the replicas for the window (bursts recur), not only while the
    reading is in the sustain window. Readings within Poisson's reach change nothing."""
    spec = llm_spec()
    rates = [3.0] * 60
    poisson_peaks = [18.0] * 60  # 13.4 in flight, within 3 standard deviations
    burst_peaks = [18.0] * 30 + [60.0] + [18.0] * 29  # a burst half an hour ago, long out of the sustain window
    calm = run(spec, llm_window(rates, poisson_peaks), state(TargetName.CLUSTER))
    bursty = run(spec, llm_window(rates, burst_peaks), state(TargetName.CLUSTER))
    assert "in-flight peaks show bursts" not in calm.reason
    assert "in-flight peaks show bursts" in bursty.reason
    assert "observed peak" not in bursty.reason  # the sustain window alone would not hold it
    assert bursty.replicas > calm.replicas, (bursty.reason, calm.reason)


def image_gen_spec() -> InferenceWorkloadSpec:
    """Long service, one request per replica: ~23 s per image on an L4, a 60 s objective (issue 17's regime)."""
    return l4_cluster_spec(7000, "16Gi", 23.0, 60.0, 1)


def test_poisson_shrunk_rates_drop_the_counts_noise_and_keep_what_moves() -> None:
    """A step's count is a Poisson draw around its rate; the estimate keeps the rate, not the draw."""
    rng = np.random.default_rng(11)
    step = 60.0
    # a sparse stream at 2 a minute: its busiest minutes are chance, the estimate stays near the rate
    sparse = rng.poisson(2.0, 60).astype(np.float64) / step
    estimated = poisson_shrunk_rates(sparse, step, 2)
    assert sparse.max() * step >= 5.0
    assert estimated.max() * step < 3.5
    assert bool(((estimated > 0) == (sparse > 0)).all()), "idle steps stay idle, busy ones stay busy"
    assert abs(estimated.mean() - sparse.mean()) < 0.25 * sparse.mean()
    # a jump from 2 to 30 a minute is the rate moving: the estimate follows each level away from the jump
    jump = np.concatenate([rng.poisson(2.0, 30), rng.poisson(30.0, 30)]).astype(np.float64) / step
    levels = poisson_shrunk_rates(jump, step, 2) * step
    assert 1.0 < levels[:25].mean() < 3.0 and 25.0 < levels[35:].mean() < 35.0
    # a burst of 40 in one minute of that sparse stream is far beyond Poisson: it keeps most of its count
    burst = sparse.copy()
    burst[40] = 40.0 / step
    assert poisson_shrunk_rates(burst, step, 2)[40] * step > 30.0
    # at volume the Poisson noise is negligible against the rate's own swings: the counts are the rates
    busy = rng.poisson(6000.0 * (1.0 + 0.08 * rng.standard_normal(60))).astype(np.float64) / step
    assert np.allclose(poisson_shrunk_rates(busy, step, 2), busy, rtol=0.02)


def test_a_sparse_stream_of_long_requests_is_sized_for_its_rate_not_its_busiest_minute() -> None:
    """Issue 17's long-service regime: 23 s images at a steady 2 a minute (0.77 Erlang) are 1-5 requests a
    minute by chance. Erlang C at the rate already counts that chance; sizing for the busiest minute of the
    sustain window as if it were its rate (5 a minute, 1.9 Erlang) held 5 replicas. Read as the rates the counts
    estimate (at most 3 a minute: the window's last steps have neighbours on one side only), 4 keep the wait tail
    within the risk budget."""
    counts = [2, 1, 3, 2, 0, 2, 3, 1, 2, 2, 1, 4, 2, 2, 1, 3, 2, 0, 2, 1, 3, 2, 1, 2, 2, 1, 5, 2, 1, 2]
    rates = [c / 60.0 for c in counts]
    w = TrafficWindow(60.0, tuple(rates), 23.0, NOW, service_seconds=23.0)
    d = run(image_gen_spec(), w, state(TargetName.CLUSTER))
    assert d.target is TargetName.CLUSTER
    assert d.replicas <= 4, d.reason
    assert "SLO risk" in d.reason and "<= 0.50% budget" in d.reason


def test_the_cost_model_lets_a_burst_queue_behind_long_service_slots_within_the_slack() -> None:
    """A burst of 6 in flight three minutes ago on a stream of ~2 images a minute. With 23 s images and a 60 s
    objective a request queued behind a busy replica still starts in time (``queueing.late_in_queue``): the
    holding plan keeps 2 replicas warm over the window, where counting every request beyond the slots as a miss
    held all 6 for the whole window. With a slack under one service time (the LLM spec) nothing may queue."""
    counts = [2, 1, 3, 2, 0, 2, 3, 1, 2, 2, 1, 2, 2, 2, 1, 3, 2, 0, 2, 1, 3, 2, 1, 2, 2, 1, 2, 2, 1, 2]
    peaks = [1.0] * 30
    peaks[-3] = 6.0
    w = TrafficWindow(
        60.0, tuple(c / 60.0 for c in counts), 23.0, NOW, service_seconds=23.0, peak_in_flight=tuple(peaks)
    )
    plan = assess(image_gen_spec(), w, state(TargetName.CLUSTER), PB, UNKNOWN, NOW).plans[TargetName.CLUSTER]
    assert plan.warm <= 3 and plan.miss_share() <= 0.005, (plan.warm, plan.miss_share())
    llm_peaks = [18.0] * 29 + [40.0]  # 40 in flight on 16-slot replicas, 2 s against 4.45 s: no queueing slack
    llm = assess(llm_spec(), llm_window([3.0] * 30, llm_peaks), state(TargetName.CLUSTER), PB, UNKNOWN, NOW)
    assert llm.plans[TargetName.CLUSTER].capacity[-1] >= 3


def test_service_scv_bounds_the_service_laws_variability_from_the_steps_means() -> None:
    """Each step's mean of n service times varies by sigma^2 / n: the steps' means bound c_s^2 from above (95 %)."""
    rng = np.random.default_rng(4)
    counts = rng.integers(1, 4, 60).astype(np.float64)
    constant = np.full(60, 23.0)
    assert service_scv(constant, counts) == 0.0
    exponential = np.array([rng.exponential(23.0, int(n)).mean() for n in counts])
    assert 0.9 <= (service_scv(exponential, counts) or 0.0) <= 2.0
    gamma = np.array([rng.gamma(4.0, 23.0 / 4.0, int(n)).mean() for n in counts])
    assert 0.2 <= (service_scv(gamma, counts) or 0.0) <= 0.5
    # three steps cannot show a law as regular as sixty do: the bound is wide, or there is none
    few = service_scv(gamma[:3], counts[:3])
    assert few is None or few > 1.0
    assert service_scv(gamma[:1], counts[:1]) is None
    # a step without requests (NaN), a garbage point, a misaligned series: skipped, skipped, unknown
    rates = counts / 60.0
    with_gaps = [*constant[:30].tolist(), float("nan"), -1.0, float("inf"), *constant[33:].tolist()]
    assert measured_service_scv(rates, 60.0, with_gaps, None) == 0.0
    assert measured_service_scv(rates, 60.0, constant[:59].tolist(), None) is None
    # each point a mean over a 60 s rate window at a 30 s step: the counts behind it are the window's
    assert measured_service_scv(rates, 30.0, exponential.tolist(), 60.0) == pytest.approx(
        service_scv(exponential, counts), rel=1e-9
    )


def test_near_constant_long_service_is_sized_for_its_queueing_not_for_memoryless_service() -> None:
    """Issue 17's image generation: every image takes 23 s. The router's per-step mean service times show a law
    that regular (c_s^2 bounded at 0), and a queued image then waits for a slot freeing within one service time,
    not for memoryless residuals: fewer replicas hold the same wait tail and the same observed burst. Without the
    per-step means (the law unknown) the sizing stays with Erlang C's exponential law."""
    counts = [2, 1, 3, 2, 0, 2, 3, 1, 2, 2, 1, 4, 2, 2, 1, 3, 2, 0, 2, 1, 3, 2, 1, 2, 2, 1, 5, 2, 1, 2]
    peaks = [min(c, 3) for c in counts]
    peaks[-4] = 5
    rates = tuple(c / 60.0 for c in counts)
    means = tuple(23.0 if c else float("nan") for c in counts)
    unknown = TrafficWindow(60.0, rates, 23.0, NOW, service_seconds=23.0, peak_in_flight=tuple(map(float, peaks)))
    measured = TrafficWindow(
        60.0,
        rates,
        23.0,
        NOW,
        service_seconds=23.0,
        peak_in_flight=tuple(map(float, peaks)),
        service_per_step=means,
        rate_window_seconds=60.0,
    )
    before = run(image_gen_spec(), unknown, state(TargetName.CLUSTER))
    after = run(image_gen_spec(), measured, state(TargetName.CLUSTER))
    assert before.target is after.target is TargetName.CLUSTER
    assert after.replicas < before.replicas, (before.replicas, after.replicas, after.reason)
    plan = assess(image_gen_spec(), measured, state(TargetName.CLUSTER), PB, UNKNOWN, NOW).plans[TargetName.CLUSTER]
    assert plan.miss_share() <= 0.005


def test_a_lone_request_among_idle_steps_reads_as_the_windows_level_not_a_request_a_minute() -> None:
    """A night's image stream, a request every five minutes: a busy step's neighbours carry none, and a level of
    0 left its count as the rate (a request a minute, 0.38 Erlang, where the window says 0.2 a minute), which the
    cost model priced as a queue that never forms. Read against the window's level instead, each lone request
    estimates a rate near the window's; idle steps stay idle."""
    counts = [0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0]
    rates = np.array(counts, dtype=np.float64) / 60.0
    estimated = poisson_shrunk_rates(rates, 60.0, 2) * 60.0
    busy = rates > 0
    assert bool((estimated[busy] < 0.5).all()) and bool((estimated[~busy] == 0).all()), estimated
    assert bool((estimated[busy] >= (sum(counts) - 1) / (len(counts) - 1) - 1e-9).all()), estimated


def test_in_flight_peaks_are_read_against_each_steps_own_service_time() -> None:
    """Issue 17's conversation trace: the request mix drifts, and a step's mean generation time with it (2.7-6.3 s
    per minute around a 4 s window mean). The mean in flight of a step is its rate times its own mean service time
    (Little's law per step, both measured at the router over the same span); read against the window's mean
    instead, the long-answer minutes' in-flight peaks look like bursts Poisson arrivals never reach, and buy
    replicas for bursts that never came. With the per-step means they are what their load predicts."""
    spec = llm_spec()
    rates = [6.0] * 30
    means = [6.0] * 15 + [3.0] * 15  # window mean 4.5 s
    # peaks within Poisson's reach of each step's own load: 36 in flight (+2.7 sd), then 18 (+2.7 sd)
    peaks = [52.0] * 15 + [29.0] * 15
    measured = TrafficWindow(
        60.0,
        tuple(rates),
        None,
        NOW,
        service_seconds=4.5,
        peak_in_flight=tuple(peaks),
        service_per_step=tuple(means),
        rate_window_seconds=60.0,
    )
    mean_only = replace(measured, service_per_step=None)
    per_step = run(spec, measured, state(TargetName.CLUSTER))
    window_mean = run(spec, mean_only, state(TargetName.CLUSTER))
    assert "in-flight peaks show bursts" in window_mean.reason
    assert "in-flight peaks show bursts" not in per_step.reason, per_step.reason
    assert per_step.replicas < window_mean.replicas, (per_step.reason, window_mean.reason)
