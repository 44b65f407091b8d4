"""Burst spillover: the cluster keeps replicas for the base load and the requests its replicas refuse overflow to
serverless (``policy/spillover.py``); the simulator carries it out as the router would (``sim/simulator.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pytest

from inference_placement.api.spec import (
    InferenceWorkloadSpec,
    LambdaSpec,
    ModelSpec,
    PlacementSpec,
    ScalingSpec,
    SLOSpec,
    TargetName,
    ThresholdsSpec,
)
from inference_placement.policy.actuation import Actuators, target_settings
from inference_placement.policy.capacity import ClusterCapacity
from inference_placement.policy.decide import PlacementState, TrafficWindow, decide
from inference_placement.policy.economics import TargetEconomics
from inference_placement.policy.price_book import PriceBook, default_price_book
from inference_placement.policy.spillover import erlang_b
from inference_placement.sim.policies import OursPolicy, control_from_decision
from inference_placement.sim.simulator import Control, Observation, SimWorkload, simulate
from inference_placement.sim.traces import Requests

PB = default_price_book()
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
SPILLS = Actuators(spillover=True)
ON_CLUSTER = PlacementState(current=TargetName.CLUSTER, last_migration_finished_at=None, month_to_date_usd=0.0)


def spec() -> InferenceWorkloadSpec:
    """A CPU model, 200 ms a request, 1 s objective; Lambda's 2.2 s cold start would miss it."""
    return InferenceWorkloadSpec(
        model=ModelSpec(image="x", size_mb=300, cpu="1", memory="2Gi", service_seconds=0.2),
        slo=SLOSpec(objective_seconds=1.0, attainment=0.99, tolerable_cold_start_seconds=3.0),
        # a 5 % band: spilling saves about a tenth here (a cheap CPU replica against warm Lambda instances)
        placement=PlacementSpec(
            allowed_targets=[TargetName.CLUSTER, TargetName.LAMBDA], thresholds=ThresholdsSpec(hysteresis_fraction=0.05)
        ),
        scaling=ScalingSpec(min_replicas=1, max_replicas=20, target_concurrency=4),
        **{"lambda": LambdaSpec(region="us-east-1", role_arn="arn:aws:iam::123456789012:role/x")},
    )


def bursty_window() -> TrafficWindow:
    """8 requests/s, with a one-step burst of 60/s every 10 steps (30 s steps)."""
    rates = [60.0 if i % 10 == 5 else 8.0 for i in range(60)]
    peaks = [r * 0.2 * 1.5 for r in rates]
    return TrafficWindow(
        step_seconds=30.0,
        rps=tuple(rates),
        observed_p99_seconds=0.3,
        end=NOW,
        peak_in_flight=tuple(peaks),
        slo_miss_share=0.0,
    )


def steady_window() -> TrafficWindow:
    return TrafficWindow(step_seconds=30.0, rps=(8.0,) * 60, observed_p99_seconds=0.3, end=NOW, slo_miss_share=0.0)


@pytest.mark.parametrize(
    ("slots", "offered", "expected"),
    [(0, 3.0, 1.0), (1, 1.0, 0.5), (2, 1.0, 0.2), (5, 0.0, 0.0), (10, 5.0, 0.01838457)],
)
def test_erlang_b_is_the_loss_formula(slots: int, offered: float, expected: float) -> None:
    assert float(erlang_b(slots, np.array([offered]))[0]) == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_bursts_spill_to_serverless_when_that_is_cheaper_than_holding_the_peak() -> None:
    held = decide(spec(), bursty_window(), ON_CLUSTER, PB, ClusterCapacity(), NOW)
    spilled = decide(spec(), bursty_window(), ON_CLUSTER, PB, ClusterCapacity(), NOW, actuators=SPILLS)
    assert held.spill is None
    plan = spilled.spill
    assert plan is not None and plan.target is TargetName.LAMBDA
    assert spilled.replicas == plan.base_replicas < held.replicas
    assert plan.usd_per_second < plan.holding_usd_per_second
    assert plan.miss_share <= (1 - 0.99) / 2 + 1e-9  # the SLO's risk budget holds, cold starts of the overflow included
    assert 0 < plan.overflow_share < 0.5
    # the reason says the split in numbers
    assert f"base {plan.base_replicas} replica(s) on cluster; overflow above" in spilled.reason
    assert "to lambda" in spilled.reason and "holding the peak" in spilled.reason


def test_a_spill_in_force_ends_only_when_holding_the_peak_beats_it_by_more_than_the_band() -> None:
    """The band the move thresholds and the accelerator choice keep: a spill saving about a third does not start
    under a 45 % band, but one already in force is kept (holding the peak does not beat it by 45 %); steady
    traffic, where holding the peak is far cheaper, ends it."""
    band = spec().model_copy(deep=True)
    band.placement.thresholds.hysteresis_fraction = 0.45
    spilling = PlacementState(
        current=TargetName.CLUSTER, last_migration_finished_at=None, month_to_date_usd=0.0, spilling=True
    )
    starts = decide(band, bursty_window(), ON_CLUSTER, PB, ClusterCapacity(), NOW, actuators=SPILLS)
    kept = decide(band, bursty_window(), spilling, PB, ClusterCapacity(), NOW, actuators=SPILLS)
    assert starts.spill is None
    assert kept.spill is not None and kept.replicas == kept.spill.base_replicas < starts.replicas
    saving = 1 - kept.spill.usd_per_second / kept.spill.holding_usd_per_second
    assert 0 < saving < 0.45
    assert decide(band, steady_window(), spilling, PB, ClusterCapacity(), NOW, actuators=SPILLS).spill is None


def test_steady_traffic_keeps_the_cluster_alone() -> None:
    decision = decide(spec(), steady_window(), ON_CLUSTER, PB, ClusterCapacity(), NOW, actuators=SPILLS)
    assert decision.spill is None


def test_the_overflow_target_is_set_to_the_plans_warm_pool_live_and_in_the_simulator() -> None:
    decision = decide(spec(), bursty_window(), ON_CLUSTER, PB, ClusterCapacity(), NOW, actuators=SPILLS)
    plan = decision.spill
    assert plan is not None
    overflow = target_settings(TargetName.LAMBDA, decision, spec(), None, SPILLS)
    assert (overflow.replicas, overflow.keep_warm_pings) == (plan.warm_floor, plan.warm_pings)
    cluster = target_settings(TargetName.CLUSTER, decision, spec(), None, SPILLS)
    assert cluster.replicas == plan.base_replicas
    control = control_from_decision(decision, spec(), SPILLS)
    assert control == Control(
        TargetName.CLUSTER,
        replicas=plan.base_replicas,
        overflow=TargetName.LAMBDA,
        overflow_warm_floor=plan.warm_floor,
        overflow_warm_pings=plan.warm_pings,
    )


# ------------------------------------------------------------------------------------------------ simulator


class Script:
    name = "script"

    def __init__(self, plan: dict[int, list[Control]]) -> None:
        self.plan = plan

    def reset(self, workload: SimWorkload, economics: dict[TargetName, TargetEconomics], price_book: PriceBook) -> None:
        return None

    def tick(self, obs: Observation) -> Sequence[Control]:
        return self.plan.get(obs.step, [])


def bursty_workload(steps: int = 60, seed: int = 7) -> SimWorkload:
    """Poisson arrivals at 8/s with a 60/s burst in one minute of every ten (60 s steps)."""
    rng = np.random.default_rng(seed)
    arrivals: list[float] = []
    for k in range(steps):
        rate = 60.0 if k % 10 == 5 else 8.0
        arrivals.extend(k * 60.0 + rng.uniform(0, 60.0, rng.poisson(rate * 60.0)))
    a = np.sort(np.array(arrivals))
    service = np.full(a.size, 0.2)
    return SimWorkload("w", spec(), Requests(a, service, service.copy(), steps, 60.0), datetime(2026, 1, 1, tzinfo=UTC))


def test_the_simulator_sends_what_the_replicas_refuse_to_the_overflow_target() -> None:
    wl = bursty_workload(steps=20)
    spill = Control(TargetName.CLUSTER, replicas=1, overflow=TargetName.LAMBDA, overflow_warm_pings=2)
    alone = simulate(wl, Script({0: [Control(TargetName.CLUSTER, replicas=1)]}), PB)
    spilled = simulate(wl, Script({0: [spill]}), PB)
    assert alone.spilled == 0 and spilled.spilled > 0
    # the burst queues on one replica (4 slots, 12 in flight at 60/s): it misses alone, not when it spills
    assert spilled.misses < alone.misses
    assert spilled.requests == alone.requests


def test_ours_with_spillover_costs_less_than_holding_the_peak_at_the_same_slo() -> None:
    wl = bursty_workload()
    # scored from minute 10: the first burst (minute 5) finds one replica whatever the policy (nothing foretold it)
    results = {
        name: simulate(wl, OursPolicy(actuators=actuators), PB, warmup_seconds=600)
        for name, actuators in (("hold", Actuators()), ("spill", SPILLS))
    }
    hold, spill = results["hold"], results["spill"]
    assert hold.meets_slo and spill.meets_slo
    assert spill.spilled > 0 and hold.spilled == 0
    assert spill.cost_usd < hold.cost_usd
