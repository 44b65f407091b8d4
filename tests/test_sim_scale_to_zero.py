"""Cluster scale to zero in the simulator, as the live operator does it (issue 16 item 3, the parity rule).

The scenario's router decides whether ``ours`` may scale a cluster target to zero (``platforms.router``); a request
that arrives at zero replicas is held by the router's activator, noticed at the operator's next poll, served after
the replica's cold start, and fails once held longer than the spec's tolerable cold start; a woken workload keeps
a replica ``wakeKeepSeconds``; the optimum knows the same zero and stays a lower bound."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml

from inference_placement.api.spec import (
    AcceleratorSpec,
    AcceleratorType,
    CloudRunSpec,
    InferenceWorkloadSpec,
    ModelSpec,
    PlacementSpec,
    ScalingSpec,
    SLOSpec,
    TargetName,
)
from inference_placement.policy.actuation import Actuators, WakeTimings, zero_allowed
from inference_placement.policy.economics import TargetEconomics, economics_for
from inference_placement.policy.price_book import PriceBook, default_price_book
from inference_placement.sim.optimum import optimum, workload_modes
from inference_placement.sim.platforms import Activator, ClusterPool
from inference_placement.sim.policies import OursPolicy
from inference_placement.sim.registry import online_policies
from inference_placement.sim.scenario import RouterPlatform, ScenarioError, load_scenario
from inference_placement.sim.simulator import (
    Control,
    Observation,
    SimWorkload,
    feasible_economics,
    simulate,
)
from inference_placement.sim.traces import MinuteTrace, requests_for

PB = default_price_book()
ROOT = Path(__file__).resolve().parents[1]
PACKAGED = ROOT / "operator" / "inference_placement" / "data" / "price-book.yaml"
START = datetime(2026, 1, 1, tzinfo=UTC)


def gpu_spec(objective_seconds: float = 0.2, tolerable_seconds: float = 10.0) -> InferenceWorkloadSpec:
    return InferenceWorkloadSpec(
        model=ModelSpec(image="x", size_mb=1300, cpu="2", memory="8Gi", service_seconds=0.025),
        accelerator=AcceleratorSpec(type=AcceleratorType.NVIDIA_L4),
        slo=SLOSpec(
            objective_seconds=objective_seconds, attainment=0.99, tolerable_cold_start_seconds=tolerable_seconds
        ),
        placement=PlacementSpec(allowed_targets=[TargetName.CLUSTER]),
        scaling=ScalingSpec(min_replicas=0, target_concurrency=8),
    )


def cluster_econ(spec: InferenceWorkloadSpec, price_book: PriceBook = PB) -> TargetEconomics:
    econ = economics_for(TargetName.CLUSTER, spec, price_book)
    assert econ is not None
    return econ


def workload(spec: InferenceWorkloadSpec, counts: Sequence[int]) -> SimWorkload:
    trace = MinuteTrace(path="synthetic", names=("w",), counts=np.array([list(counts)], dtype=np.int64))
    return SimWorkload(
        name="w", spec=spec, requests=requests_for(trace, 0, service_seconds=spec.model.service_seconds), start=START
    )


# ------------------------------------------------------------------------------------------ the scenario


def _scenario(tmp_path: Path, router: object | None) -> Path:
    data = yaml.safe_load(PACKAGED.read_text(encoding="utf-8"))
    if router is not None:
        data["platforms"]["router"] = router
    data["profiles"] = {}
    data["benchmark"] = []
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_scenario_silent_on_the_router_runs_the_activator(tmp_path: Path) -> None:
    scenario = load_scenario(_scenario(tmp_path, None))
    assert scenario.router == RouterPlatform()
    assert scenario.router.actuators() == Actuators(cluster_scale_to_zero=True)
    assert scenario.router.wake() == WakeTimings()  # the live operator's router.wakePollSeconds / wakeKeepSeconds


def test_the_scenario_platform_model_decides_what_ours_may_carry_out(tmp_path: Path) -> None:
    off = load_scenario(_scenario(tmp_path, {"activator": False}))
    on = load_scenario(_scenario(tmp_path, {"activator": True, "wake_poll_seconds": 2, "wake_keep_seconds": 120}))
    ours_off = next(p for p in online_policies(router=off.router) if isinstance(p, OursPolicy))
    ours_on = next(p for p in online_policies(router=on.router) if isinstance(p, OursPolicy))
    assert ours_off.actuators == Actuators()
    assert ours_on.actuators == Actuators(cluster_scale_to_zero=True)
    assert ours_on.wake == WakeTimings(poll_seconds=2, keep_seconds=120)
    with pytest.raises(ScenarioError, match=r"platforms\.router\.holds"):
        load_scenario(_scenario(tmp_path, {"holds": True}))


# ------------------------------------------------------------------------------------------ the data path


def test_a_request_at_zero_is_held_until_the_operator_polls_and_a_replica_starts() -> None:
    econ = cluster_econ(gpu_spec())
    live = ClusterPool(econ, activator=Activator(notice_seconds=0.5, hold_seconds=30.0))
    live.provision(0.0, 0)
    start, cold = live.dispatch(10.2, 0.025)
    assert cold and start == pytest.approx(10.5 + econ.cold_start_seconds)
    assert live.woken_at == pytest.approx(10.5) and live.ordered == 1  # the operator's scale-up: one replica
    # Knative's activator (the baselines) starts a replica at the very arrival
    knative = ClusterPool(econ)
    knative.provision(0.0, 0)
    assert knative.dispatch(10.2, 0.025)[0] == pytest.approx(10.2 + econ.cold_start_seconds)


def test_a_hold_longer_than_the_tolerable_cold_start_fails_and_the_replica_still_starts() -> None:
    econ = cluster_econ(gpu_spec())
    pool = ClusterPool(econ, activator=Activator(notice_seconds=0.5, hold_seconds=econ.cold_start_seconds / 2))
    pool.provision(0.0, 0)
    start, cold = pool.dispatch(10.0, 0.025)
    assert cold and start == float("inf")  # answered 503 by the activator
    ready = 10.0 + econ.cold_start_seconds
    assert pool.size == 1 and pool.waking(ready - 0.01) and not pool.waking(ready + 0.01)
    assert pool.dispatch(ready + 1.0, 0.025) == (ready + 1.0, False)


def test_the_optimum_zero_lets_a_woken_replica_go_once_idle_after_the_keep() -> None:
    econ = cluster_econ(gpu_spec())
    pool = ClusterPool(econ, activator=Activator(0.5, 30.0, release_after_seconds=60.0))
    pool.provision(0.0, 0)
    pool.dispatch(10.2, 0.025)
    assert pool.accrue(0.0, 60.0) == pytest.approx((60.0 - 10.5) * econ.instance_usd_per_second)
    assert pool.accrue(60.0, 120.0) == pytest.approx(10.5 * econ.instance_usd_per_second)  # until 70.5
    assert pool.size == 0


class HoldAtZero:
    name = "hold-at-zero"

    def __init__(self, activator: Activator | None) -> None:
        self.activator = activator

    def reset(self, workload: SimWorkload, economics: dict[TargetName, TargetEconomics], price_book: PriceBook) -> None:
        return None

    def tick(self, obs: Observation) -> Sequence[Control]:
        return [Control(TargetName.CLUSTER, replicas=0, activator=self.activator)]


def test_the_wake_is_driven_by_the_arriving_request_not_by_the_next_tick() -> None:
    # an objective a cold start fits in: the held request is answered within it, as the live router answers it
    spec = gpu_spec(objective_seconds=15.0, tolerable_seconds=20.0)
    w = workload(spec, [0, 1, 0, 0])
    econ = feasible_economics(spec, PB)
    result = simulate(w, HoldAtZero(Activator(0.5, 20.0)), PB, economics=econ)
    assert result.requests == 1 and result.misses == 0 and result.cold_starts == 1
    # the same request with a bound shorter than the start is not served
    short = gpu_spec(objective_seconds=15.0, tolerable_seconds=1.0)
    failed = simulate(workload(short, [0, 1, 0, 0]), HoldAtZero(Activator(0.5, 1.0)), PB, economics=econ)
    assert failed.misses == 1


# ------------------------------------------------------------------------------------------ ours


def _obs(t: float, woken_at: float | None, held: bool = False) -> Observation:
    empty = np.zeros(0)
    return Observation(
        step=int(t // 60),
        t=t,
        now=START + timedelta(seconds=t),
        step_seconds=60.0,
        requests_per_step=empty,
        service_sum_per_step=empty,
        misses_per_step=empty,
        peak_in_flight_per_step=empty,
        observed_p99_seconds=None,
        placement=TargetName.CLUSTER,
        migrating=False,
        last_migration_finished_at=None,
        month_to_date_usd=0.0,
        cluster_woken_at=woken_at,
        cluster_requests_held=held,
    )


@pytest.mark.parametrize(
    ("woken_at", "held", "zero"),
    [
        pytest.param(None, False, True, id="never-woken"),
        pytest.param(100.0, False, False, id="woken-59s-ago-keeps-a-replica"),
        pytest.param(99.0, False, True, id="woken-60s-ago"),
        pytest.param(None, True, False, id="requests-held-wake-now"),
    ],
)
def test_ours_asks_the_reconcilers_rule_on_each_tick(woken_at: float | None, held: bool, zero: bool) -> None:
    ours = OursPolicy(actuators=Actuators(cluster_scale_to_zero=True))
    assert ours.tick_actuators(_obs(159.0, woken_at, held)).cluster_scale_to_zero is zero
    assert (
        zero_allowed(
            answers_without_pods=True,
            requests_held=held,
            seconds_since_wake=None if woken_at is None else 159.0 - woken_at,
            keep_seconds=60.0,
        )
        is zero
    )
    assert not OursPolicy().tick_actuators(_obs(159.0, None)).cluster_scale_to_zero  # no activator: never


class Recording(OursPolicy):
    """``ours``, recording the replicas it asks for on each tick and when the cluster was last woken."""

    def __init__(self, actuators: Actuators) -> None:
        super().__init__(actuators=actuators)
        self.asked: list[tuple[float, float | None, int]] = []

    def tick(self, obs: Observation) -> Sequence[Control]:
        controls = super().tick(obs)
        for c in controls:
            self.asked.append((obs.t, obs.cluster_woken_at, c.replicas))
        return controls


def test_ours_scales_a_timer_workload_to_zero_wakes_on_its_requests_and_the_optimum_stays_below() -> None:
    # 60 requests every 20 minutes for a day, every 9th burst 12 minutes early: the idle-gap plan scales to zero
    # between bursts once it has seen the cycle, and an early burst finds no replica and wakes one
    spec = gpu_spec()
    counts = [0] * 1440
    for k, minute in enumerate(range(2, 1440, 20)):
        counts[minute - 12 if k % 9 == 8 else minute] += 60
    w = workload(spec, counts)
    econ = feasible_economics(spec, PB)
    on = Recording(Actuators(cluster_scale_to_zero=True))
    with_zero = simulate(w, on, PB, economics=econ)
    without = simulate(w, OursPolicy(), PB, economics=econ)
    assert any(replicas == 0 for _, _, replicas in on.asked)
    assert with_zero.cost_usd < without.cost_usd
    assert with_zero.meets_slo
    # a woken workload keeps a replica wakeKeepSeconds, whatever the decision
    woken = [(t, at, replicas) for t, at, replicas in on.asked if at is not None and t - at < 60.0]
    assert woken and all(replicas >= 1 for _, _, replicas in woken)
    assert with_zero.cold_starts > 0  # requests that found zero replicas and were answered after a wake
    best = optimum(w, econ, PB, router=RouterPlatform())
    assert best.meets_slo and best.cost_usd <= with_zero.cost_usd


def test_the_optimum_knows_the_live_zero() -> None:
    # a cold start fits the objective and calls come every 3 minutes: a replica kept 60 s after its wake (the
    # operator's zero) costs less than one kept 90 s after its last request (Knative's), so only the optimum that
    # knows the operator's zero reaches that price
    spec = gpu_spec(objective_seconds=15.0, tolerable_seconds=20.0)
    counts = [1 if minute % 3 == 1 else 0 for minute in range(60)]
    w = workload(spec, counts)
    econ = feasible_economics(spec, PB)
    router = RouterPlatform()
    assert sum(1 for m in workload_modes(econ, w, activator=Activator(0.5, 20.0, 60.0)) if m.activator) == 1
    knowing = optimum(w, econ, PB, router=router)
    not_knowing = optimum(w, econ, PB)
    assert knowing.meets_slo and knowing.cost_usd < not_knowing.cost_usd
    ours = simulate(w, OursPolicy(actuators=router.actuators(), wake=router.wake()), PB, economics=econ)
    if ours.meets_slo:
        assert knowing.cost_usd <= ours.cost_usd


# ------------------------------------------------------------------------------------------ serverless as the activator


def fall_through_spec(tolerable_seconds: float = 20.0) -> InferenceWorkloadSpec:
    """The GPU model allowed on Cloud Run too (its cold start within the tolerable one), pinned to the cluster."""
    spec = gpu_spec(objective_seconds=15.0, tolerable_seconds=tolerable_seconds)
    placement = PlacementSpec(allowed_targets=[TargetName.CLUSTER, TargetName.CLOUDRUN], pin=TargetName.CLUSTER)
    return spec.model_copy(update={"placement": placement, "cloud_run": CloudRunSpec(project="p")})


class FallAtZero:
    """The cluster ordered to zero, Cloud Run answering what finds no ready replica (``Control.zero_fall_through``)."""

    name = "fall-at-zero"

    def __init__(self, fall_through: TargetName | None, from_step: int = 0) -> None:
        self.fall_through = fall_through
        self.from_step = from_step
        self.woken: list[float | None] = []

    def reset(self, workload: SimWorkload, economics: dict[TargetName, TargetEconomics], price_book: PriceBook) -> None:
        return None

    def tick(self, obs: Observation) -> Sequence[Control]:
        self.woken.append(obs.cluster_woken_at)
        activator = Activator(0.5, 20.0)
        if obs.step < self.from_step:
            return [Control(TargetName.CLUSTER, replicas=1, activator=activator)]
        return [Control(TargetName.CLUSTER, replicas=0, activator=activator, zero_fall_through=self.fall_through)]


def test_at_zero_a_request_falls_through_to_serverless_and_wakes_the_cluster_at_the_next_poll() -> None:
    spec = fall_through_spec()
    econ = feasible_economics(spec, PB)
    assert TargetName.CLOUDRUN in econ
    counts = [0, 0, 0, 0, 1, 0, 0]  # Cloud Run is deployed well before the request (minute 4)
    falls = FallAtZero(TargetName.CLOUDRUN)
    result = simulate(workload(spec, counts), falls, PB, economics=econ)
    assert result.requests == 1 and result.fell_through == 1 and result.misses == 0
    # the cluster was woken by it, at the operator's poll after the arrival (as by a held request)
    woken = [w for w in falls.woken if w is not None]
    assert woken and 240.0 <= woken[0] <= 300.0
    # held instead: the same request waits for the cluster's cold start, no fall-through
    held = simulate(workload(spec, counts), FallAtZero(None), PB, economics=econ)
    assert held.requests == 1 and held.fell_through == 0
    assert result.cost_usd > 0 and held.cost_usd > 0


def test_before_the_serverless_target_is_deployed_the_activator_holds() -> None:
    spec = fall_through_spec()
    econ = feasible_economics(spec, PB)
    deploy = econ[TargetName.CLOUDRUN].provision_seconds - econ[TargetName.CLOUDRUN].cold_start_seconds
    w = workload(spec, [0, 1, 0, 0, 0, 0])
    (arrival,) = w.requests.arrivals.tolist()  # type: ignore[union-attr]
    assert 60.0 < arrival < 60.0 + deploy  # zero asked at the minute-1 tick: Cloud Run is not deployed yet
    result = simulate(w, FallAtZero(TargetName.CLOUDRUN, from_step=1), PB, economics=econ)
    assert result.fell_through == 0 and result.cold_starts == 1 and result.misses == 0  # held, then served


def test_ours_falls_through_at_zero_only_with_the_routers_overflow_hop_and_misses_fewer() -> None:
    # a CPU model whose Cloud Run cold start (2.25 s) fits the 4 s objective and a replica's (6.6 s) does not: held
    # requests at zero miss, those that fall through to Cloud Run do not
    spec = InferenceWorkloadSpec(
        model=ModelSpec(image="x", size_mb=300, cpu="1", memory="1Gi", service_seconds=0.05),
        slo=SLOSpec(objective_seconds=4.0, attainment=0.99, tolerable_cold_start_seconds=30.0),
        placement=PlacementSpec(allowed_targets=[TargetName.CLUSTER, TargetName.CLOUDRUN], pin=TargetName.CLUSTER),
        scaling=ScalingSpec(min_replicas=0, target_concurrency=4),
        cloud_run=CloudRunSpec(project="p"),
    )
    counts = [0] * 1440
    for k, minute in enumerate(range(2, 1440, 20)):
        counts[minute - 12 if k % 9 == 8 else minute] += 60
    w = workload(spec, counts)
    econ = feasible_economics(spec, PB)
    hold = simulate(w, OursPolicy(actuators=Actuators(cluster_scale_to_zero=True)), PB, economics=econ)
    falls = simulate(
        w, OursPolicy(actuators=Actuators(cluster_scale_to_zero=True, zero_fall_through=True)), PB, economics=econ
    )
    assert hold.fell_through == 0 and hold.misses > 0
    assert falls.fell_through > 0 and falls.misses < hold.misses and falls.meets_slo
    assert falls.cold_starts < hold.cold_starts  # fewer requests wait for a replica's start
    # the benchmark's router runs it only where the scenario says the router has the overflow hop
    assert RouterPlatform().actuators().zero_fall_through is False
    assert RouterPlatform(fall_through=True).actuators() == Actuators(
        cluster_scale_to_zero=True, zero_fall_through=True
    )
    assert RouterPlatform(activator=False, fall_through=True).actuators() == Actuators()
