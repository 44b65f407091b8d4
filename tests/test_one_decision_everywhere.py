"""Each decision has one implementation in ``policy/``: the controller, the simulator and ``explain`` agree on it
for the same inputs (issue 23 item 1). No apiserver: the reconciler writes to a writer that applies its merge
patches, and its cluster target records what it was asked to apply."""

from __future__ import annotations

import asyncio
import copy
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import numpy as np
import pytest
from rich.console import Console

from inference_placement.api.spec import InferenceWorkloadSpec, TargetName
from inference_placement.api.status import BudgetStatus
from inference_placement.api.validation import parse_spec
from inference_placement.api.workload import InferenceWorkload
from inference_placement.controller.reconciler import Reconciler, TickInputs
from inference_placement.devtools.merge_patch import apply_merge_patch
from inference_placement.explain import explain_workload, render
from inference_placement.policy.actuation import Actuators, target_settings
from inference_placement.policy.budget import MONTH_SECONDS, accrue_spend
from inference_placement.policy.capacity import ClusterCapacity
from inference_placement.policy.decide import PlacementState, TrafficWindow, assess, decide
from inference_placement.policy.price_book import default_price_book
from inference_placement.sim.policies import OursPolicy, control_from_decision
from inference_placement.sim.simulator import FIRST_TOKEN_BOUNDS_SECONDS, Observation
from inference_placement.targets.base import DesiredTarget, TargetState

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
PB = default_price_book()


class Writer:
    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body

    async def patch_status(
        self, namespace: str, name: str, patch: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        # a new status object, as the apiserver answers (a test may hold the one it read before)
        self.body["status"] = apply_merge_patch(copy.deepcopy(self.body.get("status") or {}), patch)
        return self.body

    async def post_event(self, **_: Any) -> None:
        return None

    async def set_finalizers(self, *_: Any, **__: Any) -> dict[str, Any]:
        return self.body


class RecordingTarget:
    """A cluster target that is ready at once and records every ``DesiredTarget`` it was asked to apply."""

    def __init__(self) -> None:
        self.applied: list[DesiredTarget] = []

    async def ensure(self, workload: InferenceWorkload, desired: DesiredTarget) -> TargetState:
        self.applied.append(desired)
        return TargetState(name=workload.metadata.name, endpoint=None, ready=True, replicas=desired.replicas)

    async def observe(self, workload: InferenceWorkload) -> TargetState | None:
        return None

    async def retire(self, workload: InferenceWorkload) -> bool:
        return True


def _body(min_replicas: int = 1, budget: float | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"image": "registry.example/m:1", "sizeMb": 100, "cpu": "1", "memory": "1Gi", "serviceSeconds": 0.05},
        "slo": {"latencyP99Seconds": 0.2, "attainment": 0.99},
        "placement": {"allowedTargets": ["cluster"]},
        "scaling": {"minReplicas": min_replicas, "maxReplicas": 8, "targetConcurrency": 4},
    }
    if budget is not None:
        spec["budget"] = {"monthlyUsd": budget}
    return {
        "apiVersion": "placement.inference.dev/v1alpha1",
        "kind": "InferenceWorkload",
        "metadata": {"name": "w", "namespace": "unit", "uid": "uid-w", "generation": 1, "resourceVersion": "1"},
        "spec": spec,
    }


def _spec(body: dict[str, Any]) -> InferenceWorkloadSpec:
    spec, problems = parse_spec(body["spec"])
    assert spec is not None and not problems
    return spec


def _window(rps: float, *, end: datetime, p99: float | None = 0.1, miss_share: float | None = 0.0) -> TrafficWindow:
    return TrafficWindow(
        step_seconds=30.0,
        rps=(rps,) * 30,
        observed_p99_seconds=p99,
        end=end - timedelta(seconds=30),
        slo_miss_share=miss_share,
    )


def _reconcile(body: dict[str, Any], window: TrafficWindow | None, now: datetime, target: RecordingTarget) -> None:
    reconciler = Reconciler(cast(Any, Writer(body)), {TargetName.CLUSTER: cast(Any, target)})
    inputs = TickInputs(now=now, price_book=PB, capacity=ClusterCapacity(), window=window)
    asyncio.run(reconciler.reconcile(body, inputs))


def _placed_on_cluster(body: dict[str, Any], window: TrafficWindow) -> RecordingTarget:
    """Reconcile until the workload serves on the cluster (first placement: provision, healthy, placed)."""
    target = RecordingTarget()
    for k in range(6):
        _reconcile(body, window, NOW + timedelta(seconds=k), target)
        if (body.get("status") or {}).get("placement") == "cluster" and not body["status"].get("migration"):
            return target
    raise AssertionError(f"not placed: {body.get('status')}")


# ------------------------------------------------------------------------------------------------ actuation


@pytest.mark.parametrize("rps", [0.0, 0.5, 20.0, 150.0], ids=["idle", "light", "busy", "peak"])
@pytest.mark.parametrize("min_replicas", [0, 1])
def test_the_controller_applies_what_the_simulator_applies_for_the_same_decision(rps: float, min_replicas: int) -> None:
    body = _body(min_replicas)
    window = _window(rps, end=NOW)
    target = _placed_on_cluster(body, window)
    last = target.applied[-1]

    state = PlacementState(current=TargetName.CLUSTER, last_migration_finished_at=None, month_to_date_usd=0.0)
    decision = decide(_spec(body), window, state, PB, ClusterCapacity(), NOW + timedelta(seconds=5))
    control = control_from_decision(decision, _spec(body))
    assert control is not None and control.target is TargetName.CLUSTER
    assert last.replicas == control.replicas == decision.replicas
    # nothing wakes the cluster from zero in this operator: no decision, Event or record claims a scale to zero
    assert decision.replicas >= 1
    assert body["status"]["lastDecision"]["replicas"] == decision.replicas


def test_a_withheld_decision_keeps_the_last_recorded_settings_live_and_in_the_simulator() -> None:
    body = _body()
    window = _window(20.0, end=NOW)
    target = _placed_on_cluster(body, window)
    recorded = body["status"]["lastDecision"]["replicas"]
    stale_now = NOW + timedelta(hours=1)  # the window is an hour old: metrics stale, the decision withheld
    _reconcile(body, window, stale_now, target)
    assert target.applied[-1].replicas == recorded
    state = PlacementState(current=TargetName.CLUSTER, last_migration_finished_at=None, month_to_date_usd=0.0)
    decision = decide(_spec(body), window, state, PB, ClusterCapacity(), stale_now)
    assert decision.target is None
    assert control_from_decision(decision, _spec(body)) is None  # the simulator keeps the controls in force


def test_with_an_activator_both_scale_the_cluster_to_zero_and_a_migration_target_still_gets_a_replica() -> None:
    spec = _spec(_body(min_replicas=0))
    wakes = Actuators(cluster_scale_to_zero=True)
    state = PlacementState(current=TargetName.CLUSTER, last_migration_finished_at=None, month_to_date_usd=0.0)
    # a decision for zero replicas (the idle-gap plan's; see test_policy_idle_gaps for when decide makes one)
    decision = replace(
        decide(spec, _window(0.0, end=NOW), state, PB, ClusterCapacity(), NOW, actuators=wakes), replicas=0
    )
    control = control_from_decision(decision, spec, wakes)
    assert control is not None and control.replicas == 0
    assert target_settings(TargetName.CLUSTER, decision, spec, None, wakes).replicas == 0
    assert target_settings(TargetName.CLUSTER, decision, spec, None, wakes, provisioning=True).replicas == 1


# ------------------------------------------------------------------------------------------------ verdicts


@pytest.mark.parametrize(
    ("miss_share", "p99", "reason"),
    [
        pytest.param(0.03, 0.15, "MissesAboveBudget", id="misses"),
        pytest.param(0.004, 0.25, "LatencyAboveSLO", id="p99"),
        pytest.param(0.0, 0.1, "SLOMet", id="met"),
    ],
)
def test_explain_prints_the_slo_verdict_the_controller_wrote(miss_share: float, p99: float, reason: str) -> None:
    body = _body()
    _placed_on_cluster(body, _window(5.0, end=NOW, p99=p99, miss_share=miss_share))
    condition = next(c for c in body["status"]["conditions"] if c["type"] == "SLOAtRisk")
    assert condition["reason"] == reason
    explanation = explain_workload(body, PB)
    assert f"({reason})" in explanation.slo_now
    if reason != "SLOMet":  # measured verdicts carry the same numbers (the modelled risk reads the whole series)
        assert explanation.slo_now.endswith(condition["message"])


def test_explain_prints_the_budget_verdict_the_controller_wrote() -> None:
    body = _body(budget=1.0)
    _placed_on_cluster(body, _window(20.0, end=NOW))
    condition = next(c for c in body["status"]["conditions"] if c["type"] == "BudgetExceeded")
    assert (condition["status"], condition["reason"]) == ("True", "OverBudget")
    assert "(OverBudget)" in explain_workload(body, PB).budget_now


def test_explain_sizes_a_first_token_objective_with_the_warm_latency_the_controller_recorded() -> None:
    """A streamed answer of 4 s against a 2 s first-token objective: the warm latency the router measured (its first
    byte's median) is in the status the controller writes, and explain's assessment reads it as the live decision
    did (without it, a request would be given no time to queue, and explain would price more replicas than the
    operator runs)."""
    body = _body()
    body["spec"]["model"]["serviceSeconds"] = 4.0
    body["spec"]["slo"] = {"latencyP99Seconds": 2.0, "latencyMeasure": "FirstToken"}
    body["spec"]["scaling"]["targetConcurrency"] = 16
    window = replace(_window(6.0, end=NOW, p99=0.4), service_seconds=4.0, warm_latency_seconds=0.3)
    _placed_on_cluster(body, window)
    assert body["status"]["observed"]["warmLatencySeconds"] == 0.3
    explained = explain_workload(body, PB)
    console = Console(record=True, width=200)
    render(explained, console)
    assert "first token 300 ms (median)" in console.export_text()
    with_warm = next(r for r in explained.targets if r.target is TargetName.CLUSTER)
    del body["status"]["observed"]["warmLatencySeconds"]
    without = next(r for r in explain_workload(body, PB).targets if r.target is TargetName.CLUSTER)
    # the same traffic, sized for the queueing the objective leaves room for: fewer replicas, at a risk still within
    # the budget
    assert with_warm.projected_monthly_cost_usd is not None and without.projected_monthly_cost_usd is not None
    assert with_warm.projected_monthly_cost_usd < without.projected_monthly_cost_usd
    assert with_warm.slo_risk is not None and with_warm.slo_risk <= 0.005


# ------------------------------------------------------------------------------------------------ thresholds


def test_explain_shows_the_thresholds_decide_moves_by() -> None:
    body = _body()
    body["spec"]["placement"]["allowedTargets"] = ["cluster", "lambda"]
    body["spec"]["lambda"] = {"region": "us-east-1", "roleArn": "arn:aws:iam::123456789012:role/inference"}
    spec = _spec(body)
    window = _window(0.2, end=NOW)
    state = PlacementState(current=TargetName.CLUSTER, last_migration_finished_at=None, month_to_date_usd=0.0)
    decision = decide(spec, window, state, PB, ClusterCapacity(), NOW)
    assert decision.thresholds_rps is not None, decision.reason
    offload, reclaim, _how = assess(spec, window, state, PB, ClusterCapacity(), NOW).thresholds()[TargetName.LAMBDA]
    assert (offload, reclaim) == decision.thresholds_rps
    # explain, on the status the controller writes, shows the same rows its own assessment gives
    body["status"] = {
        "placement": "cluster",
        "observed": {"rps": 0.2, "windowSeconds": 900, "sampledAt": "2026-11-23T11:59:30Z"},
    }
    rows = explain_workload(body, PB).thresholds
    assert [(r.serverless, r.offload_below_rps, r.reclaim_above_rps) for r in rows] == [
        (t, o, r) for t, (o, r, _h) in assess_from_status(body).thresholds().items()
    ]
    assert rows and "break-even" in rows[0].how


def assess_from_status(body: dict[str, Any]) -> Any:
    spec = _spec(body)
    end = NOW - timedelta(seconds=30)
    window = TrafficWindow(step_seconds=60.0, rps=(0.2,) * 15, observed_p99_seconds=None, end=end)
    state = PlacementState(current=TargetName.CLUSTER, last_migration_finished_at=None, month_to_date_usd=0.0)
    return assess(spec, window, state, PB, ClusterCapacity(), window.end)


# ------------------------------------------------------------------------------------------------ the month


def test_the_simulator_accrues_the_month_as_the_live_status_does() -> None:
    """``ours`` never sees a bill: month-to-date is the projected cost of where it ran, accrued like status."""
    body = _body(budget=10_000.0)
    spec = _spec(body)
    window = _window(20.0, end=NOW)
    target = _placed_on_cluster(body, window)
    start = NOW + timedelta(seconds=10)
    # 5 days stay inside November. The live month-to-date is the status record accrued to the day's end: what the
    # reconciler, explain and a restarted operator read (the record alone is re-written only with a real change)
    days = 5
    hours = 24 * days
    for d in range(1, days + 1):
        _reconcile(body, _window(20.0, end=start + timedelta(days=d)), start + timedelta(days=d), target)
    record = BudgetStatus.model_validate(body["status"]["budget"])
    monthly = body["status"]["currentMonthlyCostUsd"]
    live = accrue_spend(record, monthly, start + timedelta(days=days)).month_to_date_usd
    assert monthly > 0 and live > 0

    policy = OursPolicy()
    policy.reset(cast(Any, type("W", (), {"spec": spec})), {}, PB)
    steps = 60
    requests = np.full(steps, 20.0 * 60)
    decisions: list[float] = []
    for d in range(days + 1):
        obs = Observation(
            step=steps,
            t=0.0,
            now=start + timedelta(days=d),
            step_seconds=60.0,
            requests_per_step=requests,
            service_sum_per_step=requests * 0.05,
            misses_per_step=np.zeros(steps),
            peak_in_flight_per_step=np.zeros(steps),
            observed_p99_seconds=0.1,
            placement=TargetName.CLUSTER,
            migrating=False,
            last_migration_finished_at=None,
            month_to_date_usd=123456.0,  # the simulated bill: never read by ours
        )
        policy.tick(obs)
        assert policy.month_to_date_usd is not None
        decisions.append(policy.month_to_date_usd)
    sim_monthly = policy.monthly_cost_usd
    assert sim_monthly is not None
    # both accrue their own projection over the same hours; equal projections give equal month-to-date
    assert decisions[-1] == pytest.approx(sim_monthly * hours * 3600 / MONTH_SECONDS, rel=1e-3)
    assert live == pytest.approx(monthly * hours * 3600 / MONTH_SECONDS, rel=0.02)


# ------------------------------------------------------------------------------------------------ the observation


def test_the_simulator_shows_ours_the_window_the_live_operator_fetches_by_default() -> None:
    """The parity rule's resolution: the operator's default window and step are what ``ours`` is shown."""
    from inference_placement.controller.settings import OperatorSettings
    from inference_placement.policy.observation import LIVE_OBSERVATION

    settings = OperatorSettings()
    assert settings.metrics_range_seconds == LIVE_OBSERVATION.window_seconds
    assert settings.metrics_step_seconds == LIVE_OBSERVATION.step_seconds
    assert OursPolicy().window_seconds == LIVE_OBSERVATION.window_seconds


def test_the_simulated_window_holds_only_what_the_live_source_measures() -> None:
    from inference_placement.policy.observation import LIVE_OBSERVATION
    from inference_placement.sim.policies import window_from_observation

    steps = 120
    requests = np.full(steps, 600.0)
    obs = Observation(
        step=steps,
        t=0.0,
        now=NOW,
        step_seconds=60.0,
        requests_per_step=requests,
        service_sum_per_step=requests * 0.05,
        misses_per_step=np.r_[np.zeros(steps - 5), np.full(5, 60.0)],
        peak_in_flight_per_step=np.full(steps, 40.0),
        observed_p99_seconds=0.3,
        placement=TargetName.CLUSTER,
        migrating=False,
        last_migration_finished_at=None,
        month_to_date_usd=0.0,
    )
    window = window_from_observation(obs, LIVE_OBSERVATION)
    assert window is not None
    assert len(window.rps) == LIVE_OBSERVATION.window_seconds // 60  # a 60 s trace step is coarser than 30 s
    # the miss share spans the last 5 minutes, as the live histogram query does: 60 of 600 per step
    assert window.slo_miss_share == pytest.approx(0.1)
    # per step, aligned with the rate: the in-flight peaks and the misses
    assert window.peak_in_flight == (40.0,) * len(window.rps)
    assert window.slo_misses == (0.0,) * (len(window.rps) - 5) + (60.0,) * 5
    # a day of history at the live source's coarse step (here all 120 minutes the trace has: 24 points of 300 s)
    assert window.history_step_seconds == LIVE_OBSERVATION.history_step_seconds == 300
    assert window.history_rps == (10.0,) * 24 and window.history_slo_misses == 300.0
    # the warm latency is measured for a workload whose objective bounds the first token only (the router keeps a
    # first-token histogram for it alone): none here
    assert window.warm_latency_seconds is None and LIVE_OBSERVATION.warm_latency
    # ... and for one that does, the window's median of that histogram, as Prometheus' histogram_quantile reads it:
    # 600 requests a step, 450 within 250 ms and all within 500 ms -> the median lies in 0..250 ms, at 300/450 of it
    ladder = FIRST_TOKEN_BOUNDS_SECONDS
    per_step = np.where(ladder >= 0.5, 600.0, np.where(ladder >= 0.25, 450.0, 0.0))
    le = np.tile(np.r_[per_step, 600.0], (steps, 1))
    first_token = window_from_observation(replace(obs, first_token_le_per_step=le), LIVE_OBSERVATION)
    assert first_token is not None and first_token.warm_latency_seconds is not None
    below = float(ladder[ladder < 0.25].max())
    assert first_token.warm_latency_seconds == pytest.approx(below + (0.25 - below) * 300 / 450)


def test_the_operator_source_with_default_settings_measures_what_live_observation_declares() -> None:
    """``LIVE_OBSERVATION`` (what the benchmark shows ``ours``) is what the operator's own source, built with the
    operator's default settings, says it measures; a setting changed on one side only fails here."""
    from inference_placement.controller.settings import OperatorSettings
    from inference_placement.metrics.prometheus import PrometheusSource
    from inference_placement.policy.observation import LIVE_OBSERVATION

    settings = OperatorSettings()
    source = PrometheusSource(
        "http://prometheus.monitoring:9090",
        range_seconds=settings.metrics_range_seconds,
        step_seconds=settings.metrics_step_seconds,
    )
    assert source.observed_signals() == LIVE_OBSERVATION


def _observation(requests: np.ndarray, misses: np.ndarray, step_seconds: float = 2.0) -> Observation:
    steps = requests.size
    return Observation(
        step=steps,
        t=steps * step_seconds,
        now=NOW,
        step_seconds=step_seconds,
        requests_per_step=requests,
        service_sum_per_step=requests * 0.2,
        misses_per_step=misses,
        peak_in_flight_per_step=np.zeros(steps),
        observed_p99_seconds=0.2,
        placement=TargetName.CLUSTER,
        migrating=False,
        last_migration_finished_at=None,
        month_to_date_usd=0.0,
    )


def test_each_simulated_rate_is_the_rate_over_the_live_rate_window() -> None:
    """A live point is ``rate()`` over the rate window ending at it: a one-step burst spreads over the next points
    (and a window that reaches back before the first step counts nothing there); so are the per-step misses."""
    from inference_placement.policy.observation import ObservedSignals
    from inference_placement.sim.policies import window_from_observation

    signals = ObservedSignals(
        window_seconds=20.0,
        step_seconds=2.0,
        slo_miss_window_seconds=20.0,
        rate_window_seconds=6.0,
        slo_misses_per_step=True,
    )
    requests = np.array([6.0, 0.0, 0.0, 0.0, 12.0, 0.0, 0.0, 0.0])
    window = window_from_observation(_observation(requests, requests / 6), signals)
    assert window is not None
    # counts over the last 3 steps of 2 s, per second: 6/6, 6/6, 6/6, 0, 12/6, 12/6, 12/6, 0
    assert window.rps == pytest.approx((1.0, 1.0, 1.0, 0.0, 2.0, 2.0, 2.0, 0.0))
    assert window.slo_misses == pytest.approx((1 / 3, 1 / 3, 1 / 3, 0.0, 2 / 3, 2 / 3, 2 / 3, 0.0))
    assert window.service_seconds == pytest.approx(0.2)
    # without a rate window (or one no longer than the step) each point is its own step's rate
    plain = window_from_observation(_observation(requests, requests / 6), replace(signals, rate_window_seconds=0.0))
    assert plain is not None and plain.rps == pytest.approx(tuple(requests / 2))


class _Observer:
    """A policy that stays on one cluster replica and keeps what it was shown."""

    name = "observer"
    observes_in_flight = True

    def __init__(self, sample_seconds: float) -> None:
        self.in_flight_sample_seconds = sample_seconds
        self.seen: list[Observation] = []

    def reset(self, workload: Any, economics: Any, price_book: Any) -> None:
        self.seen = []

    def tick(self, obs: Observation) -> list[Any]:
        from inference_placement.sim.simulator import Control

        self.seen.append(obs)
        return [Control(TargetName.CLUSTER, replicas=1)] if obs.step == 0 else []


def test_the_simulated_in_flight_peak_is_what_the_routers_scrapes_read() -> None:
    """The router's in-flight gauge is scraped, not watched: a burst between two scrapes shows only in the scrapes
    that fall inside it. Exact peaks (no sample interval) stay as they were."""
    from inference_placement.sim.simulator import SimWorkload, simulate
    from inference_placement.sim.traces import Requests

    # step 0: a burst of 5 requests of 0.3 s from 0.2 s (between the scrapes at 0 s and 1 s);
    # step 1: 3 requests of 1.5 s from 2.5 s, in flight at the scrapes at 3 s
    arrivals = np.array([0.2, 0.21, 0.22, 0.23, 0.24, 2.5, 2.6, 2.7])
    service = np.array([0.3] * 5 + [1.5] * 3)
    requests = Requests(arrivals, service, service, 3, 2.0)
    spec = InferenceWorkloadSpec.model_validate(
        {"model": {"image": "m", "sizeMb": 100}, "slo": {"latencyP99Seconds": 2.0}}
    )
    peaks = {}
    for sample in (0.0, 1.0):
        observer = _Observer(sample)
        simulate(SimWorkload("w", spec, requests, NOW), observer, PB)
        peaks[sample] = observer.seen[-1].peak_in_flight_per_step.tolist()
    assert peaks[1.0] == [0.0, 3.0]  # scrapes at 0, 1 | 2, 3: the burst of step 0 is missed
    assert peaks[0.0] == [5.0, 3.0]  # the exact peaks


def test_the_simulator_shows_ours_the_first_tokens_median_of_the_requests_it_served() -> None:
    """A first-token workload's window carries the median of what its served requests waited for their first token
    (the router's first-token histogram, read as Prometheus reads it); a whole-answer workload's carries none."""
    from inference_placement.sim.simulator import SimWorkload, feasible_economics, simulate
    from inference_placement.sim.traces import Requests

    body = _body()
    body["spec"]["model"]["serviceSeconds"] = 2.0
    body["spec"]["slo"] = {"latencyP99Seconds": 2.0, "latencyMeasure": "FirstToken"}
    steps, step = 20, 60.0
    arrivals = np.arange(0.0, steps * step, 2.0)  # one request every 2 s: 1 in flight, no queue
    requests = Requests(
        arrivals=arrivals,
        service=np.full(arrivals.size, 2.0),
        latency_part=np.full(arrivals.size, 0.23),  # the first token after 230 ms
        steps=steps,
        step_seconds=step,
    )
    seen: list[TrafficWindow] = []
    for measure, expect_warm in (("FirstToken", True), ("Response", False)):
        body["spec"]["slo"]["latencyMeasure"] = measure
        spec = _spec(body)
        policy = OursPolicy()
        window = policy.window

        def spy(obs: Observation, window: Any = window) -> TrafficWindow | None:
            shown: TrafficWindow | None = window(obs)
            if shown is not None:
                seen.append(shown)
            return shown

        policy.window = spy  # type: ignore[method-assign]
        workload = SimWorkload(name="w", spec=spec, requests=requests, start=NOW)
        simulate(workload, policy, PB, economics=feasible_economics(spec, PB), warmup_seconds=0.0)
        last = seen[-1]
        if expect_warm:
            # 230 ms lies in the ladder's 200..250 ms bucket, which holds every request: its middle, as interpolated
            assert last.warm_latency_seconds is not None and 0.2 < last.warm_latency_seconds <= 0.25
        else:
            assert last.warm_latency_seconds is None
