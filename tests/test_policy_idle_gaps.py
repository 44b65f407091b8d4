"""Idle-gap pre-warming: an intermittent workload scales to zero between bursts only where its history says the
next burst is unlikely, within the SLO's error budget, and is warm again before the next burst is due."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inference_placement.api.spec import (
    AcceleratorSpec,
    AcceleratorType,
    InferenceWorkloadSpec,
    ModelSpec,
    PlacementSpec,
    ScalingSpec,
    SLOSpec,
    TargetName,
)
from inference_placement.policy.actuation import Actuators, target_settings
from inference_placement.policy.capacity import ClusterCapacity
from inference_placement.policy.decide import PlacementState, TrafficWindow, decide, history_fingerprint, reads_history
from inference_placement.policy.idle_gaps import idle_gap_plan, idle_gap_signature
from inference_placement.policy.price_book import default_price_book
from inference_placement.policy.queueing import poisson_mean_within

PB = default_price_book()
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
COLD = 8.6  # seconds: a pod start plus a model load, as the cluster of the reference scenario


def periodic(period: int, cycles: int, per_burst: float = 14.0, idle_after: int = 0) -> np.ndarray:
    """A timer-triggered workload: one busy step every ``period`` steps, then ``idle_after`` idle steps."""
    rates = np.zeros(period * cycles + idle_after)
    rates[::period] = per_burst / 60.0
    if idle_after:
        rates[-idle_after:] = 0.0
    return rates[: period * (cycles - 1) + 1 + idle_after]


def gpu_spec() -> InferenceWorkloadSpec:
    return InferenceWorkloadSpec(
        model=ModelSpec(image="x", size_mb=1300, cpu="2", memory="8Gi", service_seconds=0.025),
        accelerator=AcceleratorSpec(type=AcceleratorType.NVIDIA_L4),
        slo=SLOSpec(objective_seconds=0.2, attainment=0.99),
        placement=PlacementSpec(allowed_targets=[TargetName.CLUSTER, TargetName.CLOUDRUN]),
        scaling=ScalingSpec(min_replicas=0, max_replicas=50, target_concurrency=8),
    )


def window_of(history: np.ndarray, misses: float = 0.0) -> TrafficWindow:
    recent = tuple(history[-60:].tolist())
    return TrafficWindow(
        step_seconds=60.0,
        rps=recent,
        observed_p99_seconds=None,
        end=NOW,
        service_seconds=0.025,
        peak_in_flight=tuple(1.0 if r > 0 else 0.0 for r in recent),
        slo_miss_share=0.0,
        history_rps=tuple(history.tolist()),
        history_slo_misses=misses,
    )


def on_cluster() -> PlacementState:
    return PlacementState(current=TargetName.CLUSTER, last_migration_finished_at=None, month_to_date_usd=0.0)


# ------------------------------------------------------------------------------------------------ the plan


@pytest.mark.parametrize(
    ("idle_steps", "zero"),
    [
        pytest.param(1, True, id="just-after-a-burst"),
        pytest.param(2, True, id="mid-gap"),
        pytest.param(3, False, id="one-step-before-the-next-burst-is-due: start a replica now"),
        pytest.param(4, False, id="the-step-the-burst-is-due"),
    ],
)
def test_periodic_workload_is_cold_mid_gap_and_warm_before_the_next_burst(idle_steps: int, zero: bool) -> None:
    history = periodic(5, 200, idle_after=idle_steps)
    plan = idle_gap_plan(history, 60.0, COLD, 0.005)
    assert plan is not None
    assert plan.offset == idle_steps + 1
    assert plan.scale_to_zero is zero
    assert plan.cold_to == 4  # the burst comes at offset 5: the replica starts at offset 4's tick


def test_few_cycles_seen_keep_the_replica_warm() -> None:
    plan = idle_gap_plan(periodic(5, 4, idle_after=1), 60.0, COLD, 0.005)
    assert plan is not None
    assert not plan.scale_to_zero
    assert plan.cold_from == 0


def test_a_gap_longer_than_any_seen_is_kept_warm() -> None:
    history = periodic(5, 200, idle_after=30)
    plan = idle_gap_plan(history, 60.0, COLD, 0.005)
    assert plan is not None
    assert plan.offset > plan.longest_gap
    assert not plan.scale_to_zero


def test_no_idle_gap_gives_no_plan() -> None:
    assert idle_gap_plan(np.full(100, 2.0), 60.0, COLD, 0.005) is None
    assert idle_gap_plan(np.zeros(100), 60.0, COLD, 0.005) is None


def test_a_zero_budget_never_scales_to_zero() -> None:
    plan = idle_gap_plan(periodic(5, 500, idle_after=1), 60.0, COLD, 0.0)
    assert plan is not None
    assert not plan.scale_to_zero


def test_expected_misses_stay_within_the_budget() -> None:
    rng = np.random.default_rng(7)
    history = (rng.random(1440) < 0.2).astype(float) * 0.5
    plan = idle_gap_plan(history, 60.0, COLD, 0.005)
    assert plan is not None
    assert plan.expected_cold_misses_per_cycle <= plan.budget_misses_per_cycle + 1e-12


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([0.0, 0.0, 0.0, 0.1, 0.5]), min_size=2, max_size=300), st.integers(1, 40))
def test_same_signature_same_plan(rates: list[float], pad: int) -> None:
    history = np.asarray(rates)
    padded = np.concatenate([np.zeros(pad), history])  # leading idle steps change nothing the plan reads
    assert idle_gap_signature(history) == idle_gap_signature(padded)
    a = idle_gap_plan(history, 60.0, COLD, 0.005)
    b = idle_gap_plan(padded, 60.0, COLD, 0.005)
    assert (a is None) == (b is None)
    if a is not None and b is not None:
        assert a.scale_to_zero == b.scale_to_zero


def test_poisson_mean_within_allows_no_miss_when_none_is_allowed() -> None:
    assert poisson_mean_within(0, 0.01) == pytest.approx(0.01005, abs=1e-4)
    assert 0.1 < poisson_mean_within(1, 0.01) < 0.2
    assert poisson_mean_within(40, 0.01) < 40


# ------------------------------------------------------------------------------------------------ in decide()


WAKES = Actuators(cluster_scale_to_zero=True)
"""An operator that can answer a request while the cluster has no replica."""


def test_decide_scales_a_periodic_workload_to_zero_mid_gap_and_says_why() -> None:
    window = window_of(periodic(5, 288, idle_after=2))
    decision = decide(gpu_spec(), window, on_cluster(), PB, ClusterCapacity(), NOW, actuators=WAKES)
    assert decision.target is TargetName.CLUSTER
    assert decision.replicas == 0
    assert decision.idle_gap is not None and decision.idle_gap.scale_to_zero
    assert "idle-gap plan" in decision.reason and "scale to zero" in decision.reason


def test_decide_never_scales_the_cluster_to_zero_when_nothing_can_wake_it() -> None:
    """Without an activator the decision keeps a replica and says so: its Event never claims a scale to zero."""
    decision = decide(gpu_spec(), window_of(periodic(5, 288, idle_after=2)), on_cluster(), PB, ClusterCapacity(), NOW)
    assert decision.target is TargetName.CLUSTER
    assert decision.replicas == 1
    assert "scale to zero" not in decision.reason
    assert target_settings(TargetName.CLUSTER, decision, gpu_spec(), None, Actuators()).replicas == 1


def test_decide_keeps_a_replica_warm_when_the_next_burst_is_due() -> None:
    window = window_of(periodic(5, 288, idle_after=3))
    decision = decide(gpu_spec(), window, on_cluster(), PB, ClusterCapacity(), NOW, actuators=WAKES)
    assert decision.replicas >= 1


def test_decide_keeps_a_replica_warm_for_a_workload_that_may_miss_nothing() -> None:
    # 30 requests in the history: 1% of them allows no miss, so no cold start may be risked
    decision = decide(
        gpu_spec(),
        window_of(periodic(5, 30, per_burst=1.0, idle_after=2)),
        on_cluster(),
        PB,
        ClusterCapacity(),
        NOW,
        actuators=WAKES,
    )
    assert decision.replicas >= 1


def test_decide_keeps_a_replica_warm_once_the_history_spent_its_misses() -> None:
    history = periodic(5, 288, idle_after=2)
    requests = float(history.sum()) * 60.0
    decision = decide(
        gpu_spec(),
        window_of(history, misses=requests * 0.01 + 1),
        on_cluster(),
        PB,
        ClusterCapacity(),
        NOW,
        actuators=WAKES,
    )
    assert decision.replicas >= 1


# ------------------------------------------------------------------------------------------------ a coarse history


def coarse_window(history: np.ndarray, recent_busy_steps: int = 0) -> TrafficWindow:
    """The live source's shape: 30 s steps over the window, the day's history at 300 s. The window's last hour of
    fine steps follows the history (each 300 s point spread over ten 30 s steps), with traffic in its last
    ``recent_busy_steps`` steps too (a burst newer than the history's newest point)."""
    fine = np.repeat(history[-6:], 10)
    if recent_busy_steps:
        fine[-recent_busy_steps:] = 0.5
    return TrafficWindow(
        step_seconds=30.0,
        rps=tuple(fine.tolist()),
        observed_p99_seconds=None,
        end=NOW,
        service_seconds=0.025,
        peak_in_flight=tuple(1.0 if r > 0 else 0.0 for r in fine),
        slo_miss_share=0.0,
        slo_misses=(0.0,) * fine.size,
        history_rps=tuple(history.tolist()),
        history_slo_misses=0.0,
        history_step_seconds=300.0,
    )


def test_a_coarse_history_is_planned_at_its_own_step() -> None:
    """A day at 300 s (the live source's history): the gaps are counted in 300 s steps, and the reason says so."""
    history = periodic(5, 288, idle_after=2)
    decision = decide(gpu_spec(), coarse_window(history), on_cluster(), PB, ClusterCapacity(), NOW, actuators=WAKES)
    plan = decision.idle_gap
    assert plan is not None and plan.step_seconds == 300.0 and plan.offset == 3 and plan.scale_to_zero
    assert decision.replicas == 0 and "step(s) of 300 s" in decision.reason
    # offsets count 300 s steps: two idle history points since the burst (20 idle steps of the window's 30 s)
    assert plan.longest_gap == 5 and plan.cycles == 287


def test_a_burst_newer_than_the_coarse_history_keeps_a_replica() -> None:
    """The history's newest 300 s point may end minutes before the window: traffic in the window's steps since then
    means the gap the history shows is over, so the cluster keeps a replica."""
    history = periodic(5, 288, idle_after=2)
    decision = decide(
        gpu_spec(), coarse_window(history, recent_busy_steps=3), on_cluster(), PB, ClusterCapacity(), NOW,
        actuators=WAKES,
    )  # fmt: skip
    assert decision.idle_gap is not None and not decision.idle_gap.scale_to_zero
    assert decision.replicas >= 1


# ------------------------------------------------------------------------------------------------ what decide reads


def _with_history(window: TrafficWindow, history: np.ndarray | None, misses: float | None) -> TrafficWindow:
    return TrafficWindow(
        step_seconds=window.step_seconds,
        rps=window.rps,
        observed_p99_seconds=window.observed_p99_seconds,
        end=window.end,
        service_seconds=window.service_seconds,
        peak_in_flight=window.peak_in_flight,
        slo_miss_share=window.slo_miss_share,
        history_rps=None if history is None else tuple(history.tolist()),
        history_slo_misses=misses,
        history_step_seconds=300.0 if history is not None and len(history) % 2 else None,
    )


_HISTORIES = [
    (periodic(5, 288, idle_after=2), 0.0),
    (periodic(5, 30, per_burst=1.0, idle_after=2), None),
    (np.zeros(288), 0.0),
    (np.full(61, 3.0), 500.0),
    (None, None),
]


@pytest.mark.parametrize(
    ("min_replicas", "actuators"),
    [(1, WAKES), (2, WAKES), (0, Actuators())],
    ids=["minReplicas 1", "minReplicas 2", "minReplicas 0 without an activator"],
)
@pytest.mark.parametrize("recent", [periodic(5, 288, idle_after=2), np.full(60, 0.4), np.full(60, 20.0)])
def test_a_decision_that_does_not_read_the_history_is_the_same_whatever_the_history(
    min_replicas: int, actuators: Actuators, recent: np.ndarray
) -> None:
    """``reads_history`` False: windows differing in their history alone get equal Decisions (the fleet leaves the
    history out of its fingerprint on this). Fails if ``decide`` starts reading the history elsewhere."""
    spec = gpu_spec()
    spec = spec.model_copy(update={"scaling": spec.scaling.model_copy(update={"min_replicas": min_replicas})})
    assert not reads_history(spec, actuators)
    base = window_of(recent)
    decisions = [
        decide(spec, _with_history(base, h, m), state, PB, ClusterCapacity(), NOW, actuators=actuators)
        for h, m in _HISTORIES
        for state in (on_cluster(),)
    ]
    assert all(d == decisions[0] for d in decisions[1:])


def test_a_decision_that_reads_the_history_changes_with_it() -> None:
    """The converse, so the test above is not vacuous: where the cluster may go to zero, the history decides."""
    spec = gpu_spec()
    assert reads_history(spec, WAKES)
    base = window_of(periodic(5, 288, idle_after=2))
    replicas = {
        decide(spec, _with_history(base, h, m), on_cluster(), PB, ClusterCapacity(), NOW, actuators=WAKES).replicas
        for h, m in _HISTORIES
    }
    assert 0 in replicas and max(replicas) >= 1


# ------------------------------------------------------------------------------------------------ what a decision reads


def _idle_hour_with(history: np.ndarray) -> TrafficWindow:
    """The same fine window (an idle last hour) with ``history`` as its day at 300 s."""
    return TrafficWindow(
        step_seconds=30.0,
        rps=(0.0,) * 120,
        observed_p99_seconds=None,
        end=NOW,
        service_seconds=0.025,
        peak_in_flight=(0.0,) * 120,
        slo_miss_share=0.0,
        slo_misses=(0.0,) * 120,
        history_rps=tuple(history.tolist()),
        history_slo_misses=0.0,
        history_step_seconds=300.0,
    )


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.sampled_from([0.0, 0.0, 0.0, 0.1, 0.5, 3.0, float("nan")]), min_size=13, max_size=288),
    st.integers(1, 40),
    st.floats(0.05, 5.0),
)
def test_windows_with_the_same_history_fingerprint_get_the_same_decision(
    rates: list[float], pad: int, busy_rate: float
) -> None:
    """``history_fingerprint`` is what the live fleet skips an unchanged workload by (and the simulator reuses a
    decision by): whatever it leaves out must not change the decision. Leading idle steps (the day read back
    further) leave it as it is; so do the rates of a history busy at every step, which has no idle gap to plan."""
    history = np.asarray(rates)
    pairs = [
        (history, np.concatenate([np.zeros(pad), history])),
        (np.full(pad + 12, busy_rate), np.full(pad + 13, busy_rate * 2.0)),
    ]
    for a, b in pairs:
        wa, wb = _idle_hour_with(a), _idle_hour_with(b)
        assert history_fingerprint(wa) == history_fingerprint(wb)
        da, db = (decide(gpu_spec(), w, on_cluster(), PB, ClusterCapacity(), NOW, actuators=WAKES) for w in (wa, wb))
        assert (da.target, da.replicas, da.idle_gap is None) == (db.target, db.replicas, db.idle_gap is None)
        if da.idle_gap is not None and db.idle_gap is not None:
            assert da.idle_gap.scale_to_zero == db.idle_gap.scale_to_zero


def test_the_history_fingerprint_moves_with_what_the_idle_gap_plan_reads() -> None:
    gapped = periodic(5, 60, idle_after=1)
    later = np.concatenate([gapped, [0.0]])  # one more idle step: the offset moved
    assert history_fingerprint(_idle_hour_with(gapped)) != history_fingerprint(_idle_hour_with(later))
    busier = gapped.copy()
    busier[np.flatnonzero(busier)[-1]] *= 2  # the last burst's rate
    assert history_fingerprint(_idle_hour_with(gapped)) != history_fingerprint(_idle_hour_with(busier))
