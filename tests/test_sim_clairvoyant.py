"""The clairvoyant reference line (``sim/policies.py: ClairvoyantOursPolicy``): ``ours``'s own decision procedure fed
the true coming traffic in place of its forecast; a reference in the tables, never a policy that claims credit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest

from inference_placement.api.spec import TargetName
from inference_placement.policy.actuation import Actuators
from inference_placement.policy.capacity import ClusterCapacity
from inference_placement.policy.decide import PlacementState, TrafficWindow, decide
from inference_placement.policy.economics import TargetEconomics
from inference_placement.policy.idle_gaps import known_idle_gap_plan
from inference_placement.policy.observation import LIVE_OBSERVATION
from inference_placement.policy.price_book import PriceBook
from inference_placement.sim.optimum import optimum
from inference_placement.sim.policies import ClairvoyantOursPolicy, OursPolicy, demand_peaks
from inference_placement.sim.registry import CLAIRVOYANT, POLICIES, SINGLE_PLATFORM_BASELINES
from inference_placement.sim.scenario import RouterPlatform
from inference_placement.sim.simulator import Control, Observation, SimWorkload, feasible_economics, simulate
from tests.test_sim_scale_to_zero import PB, START, gpu_spec, workload

ROUTER = RouterPlatform()


class PeakProbe:
    """Reads the per-step in-flight peaks the simulator records for a policy that observes them."""

    name = "probe"
    observes_in_flight = True

    def __init__(self, sample_seconds: float) -> None:
        self.in_flight_sample_seconds = sample_seconds
        self.seen: list[float] = []

    def reset(self, workload: SimWorkload, economics: dict[TargetName, TargetEconomics], price_book: PriceBook) -> None:
        return None

    def tick(self, obs: Observation) -> Sequence[Control]:
        self.seen = obs.peak_in_flight_per_step.tolist()
        return [Control(TargetName.CLUSTER, replicas=1)] if obs.step == 0 else []


@pytest.mark.parametrize("sample_seconds", [0.0, 15.0])
def test_the_true_in_flight_readings_are_those_the_simulator_shows_a_policy(sample_seconds: float) -> None:
    counts = [0, 5, 200, 3, 0, 0, 90, 1, 0, 40, 0]
    w = workload(gpu_spec(), counts)
    w = replace(w, requests=replace(w.requests, service=w.requests.service * 80))  # 2 s requests: they overlap
    probe = PeakProbe(sample_seconds)
    simulate(w, probe, PB)
    # the probe's last tick sees every step but the last
    assert demand_peaks(w.requests, sample_seconds)[:-1].tolist() == probe.seen


def test_the_clairvoyant_window_ends_with_the_true_coming_sustain_window() -> None:
    counts = [3] * 10 + [0, 0, 0, 120, 0, 0, 0, 0, 0, 0]
    w = workload(gpu_spec(), counts)
    policy = ClairvoyantOursPolicy(actuators=ROUTER.actuators(), wake=ROUTER.wake())
    policy.reset(w, feasible_economics(w.spec, PB), PB)
    obs = Observation(
        step=11,
        t=660.0,
        now=START,
        step_seconds=60.0,
        requests_per_step=np.array(counts[:11], dtype=np.float64),
        service_sum_per_step=np.zeros(11),
        misses_per_step=np.zeros(11),
        peak_in_flight_per_step=np.zeros(11),
        observed_p99_seconds=None,
        placement=TargetName.CLUSTER,
        migrating=False,
        last_migration_finished_at=None,
        month_to_date_usd=0.0,
    )
    window = policy.window(obs)
    assert window is not None
    # 11 steps of the past, then the coming sustain window (5 steps of 60 s): steps 11..15
    assert [round(r * 60) for r in window.rps] == counts[:16]
    assert window.peak_in_flight is not None and len(window.peak_in_flight) == 16
    assert window.known_idle_steps == 2  # steps 11 and 12 carry nothing; 13 does
    assert window.slo_misses is None  # calibration reads the measured share, not the coming steps
    ours = OursPolicy(actuators=ROUTER.actuators(), wake=ROUTER.wake())
    ours.reset(w, feasible_economics(w.spec, PB), PB)
    live = ours.window(obs)
    assert live is not None and live.known_idle_steps is None and [round(r * 60) for r in live.rps] == counts[:11]


@pytest.mark.parametrize(("idle", "zero"), [(0, False), (1, False), (2, True), (9, True)])
def test_a_known_idle_future_scales_to_zero_when_this_step_and_the_next_are_idle(idle: int, zero: bool) -> None:
    # a replica started at the next tick is ready within that step: zero now needs this step and the next idle
    assert known_idle_gap_plan(idle, 1.0, 60.0).scale_to_zero is zero
    spec = gpu_spec()
    history = tuple([0.0] * 50 + [0.05] + [0.0] * 9)
    window = TrafficWindow(
        step_seconds=60.0,
        rps=history[-30:],
        observed_p99_seconds=None,
        end=START,
        history_rps=history,
        known_idle_steps=idle,
    )
    state = PlacementState(current=TargetName.CLUSTER, last_migration_finished_at=None, month_to_date_usd=0.0)
    actuators = Actuators(cluster_scale_to_zero=True)
    decision = decide(spec, window, state, PB, ClusterCapacity(), START, actuators=actuators)
    assert decision.idle_gap is not None and decision.idle_gap.known
    assert (decision.replicas == 0) is zero
    # the live window never knows: the same window without it is decided by the hazard estimate
    live = decide(
        spec, replace(window, known_idle_steps=None), state, PB, ClusterCapacity(), START, actuators=actuators
    )
    assert live.idle_gap is None or not live.idle_gap.known


def test_knowing_the_future_lets_a_sparse_workload_go_cold_between_calls() -> None:
    # a call every 2 hours: a 99 % objective over 12 requests allows no miss, so ours keeps its replica all day; fed
    # the coming steps, the same procedure lets it go between calls; the optimum stays below both
    counts = [1 if minute % 120 == 60 else 0 for minute in range(1440)]
    w = workload(gpu_spec(), counts)
    econ = feasible_economics(w.spec, PB)
    ours = simulate(w, OursPolicy(actuators=ROUTER.actuators(), wake=ROUTER.wake()), PB, economics=econ)
    seer = simulate(w, ClairvoyantOursPolicy(actuators=ROUTER.actuators(), wake=ROUTER.wake()), PB, economics=econ)
    best = optimum(w, econ, PB, router=ROUTER)
    assert ours.meets_slo and seer.meets_slo and best.meets_slo
    assert seer.cost_usd < 0.2 * ours.cost_usd
    assert best.cost_usd <= seer.cost_usd


def test_the_clairvoyant_line_is_a_reference_never_a_baseline() -> None:
    (entry,) = [p for p in POLICIES if p.name == CLAIRVOYANT]
    assert entry.reference and not entry.single_platform
    assert CLAIRVOYANT not in SINGLE_PLATFORM_BASELINES
    assert LIVE_OBSERVATION.in_flight_sample_seconds > 0  # it reads the gauge as ours does, not the exact peak
