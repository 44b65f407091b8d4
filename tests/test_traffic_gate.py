"""The router's counters of a migration's target gate every step: what is read from Envoy's /stats, how a step's
window is judged (``policy.traffic_health``), and what the state machine does with the verdict in each step.
The same gate on the live stack: ``tests/test_traffic_gate_live.py``."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from inference_placement.api.spec import TargetName
from inference_placement.api.status import InferenceWorkloadStatus, MigrationOutcome, MigrationStatus, MigrationStep
from inference_placement.controller.migration import (
    MigrationAction,
    MigrationObservation,
    MigrationTimings,
    actions_for,
    advance,
    start_migration,
)
from inference_placement.controller.reconciler import Reconciler, TickInputs
from inference_placement.controller.router_sync import positive_weights
from inference_placement.controller.settings import build_settings
from inference_placement.policy.capacity import ClusterCapacity
from inference_placement.policy.decide import TrafficWindow
from inference_placement.policy.price_book import default_price_book
from inference_placement.policy.traffic_health import TargetCounters, TrafficGate, traffic_problem
from inference_placement.routing.model import traffic_weights
from inference_placement.routing.traffic_stats import (
    TRAFFIC_STATS_QUERY,
    parse_target_counters,
    sum_target_counters,
)
from tests.plugins.memory_api import inline_tenancy
from tests.test_one_decision_everywhere import Writer
from tests.test_policy_spillover import spec
from tests.test_spill_lifecycle import Recorder

T0 = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)
TIMINGS = MigrationTimings(step_hold_seconds=10, drain_seconds=30)
GATE = TrafficGate()
FAILING = "cloudrun failed 9 of 20 requests while draining at 100%"


# ----------------------------------------------------------------------------------------------- Envoy's /stats


def _buckets(*counts: float) -> list[dict[str, float]]:
    bounds = (25, 50, 100, 250, 500, 1000)
    return [{"upper_bound": b, "interval": 0, "cumulative": c} for b, c in zip(bounds, counts, strict=True)]


def _payload(prefix: str, total: int, fivexx: int, histogram: list[dict[str, float]]) -> dict[str, Any]:
    """One router replica's ``/stats?format=json&histogram_buckets=cumulative`` answer, as Envoy 1.40 shapes it."""
    return {
        "stats": [
            {"name": f"{prefix}.upstream_rq_total", "value": total},
            {"name": f"{prefix}.upstream_rq_5xx", "value": fivexx},
            {"name": f"{prefix}.upstream_rq_rx_reset", "value": 1},
            {"name": f"{prefix}.upstream_rq_tx_reset", "value": 0},
            {"name": f"{prefix}.upstream_rq_403", "value": 2},
            {"name": f"{prefix}.external.upstream_rq_5xx", "value": 999},  # the same requests again: not read
            {"name": "cluster.ip|team|chat|composite.upstream_rq_total", "value": 77},  # a spill's composite
            {"name": "cluster.gcp-metadata.upstream_rq_total", "value": 5},
            {
                "histograms": [
                    {"name": f"{prefix}.upstream_rq_time", "buckets": histogram},
                    {"name": f"{prefix}.external.upstream_rq_time", "buckets": _buckets(9, 9, 9, 9, 9, 9)},
                ]
            },
        ]
    }


def test_the_router_counters_are_read_per_workload_target_and_summed_over_replicas() -> None:
    prefix = "cluster.ip|team|chat|cloudrun"
    one = parse_target_counters(_payload(prefix, 40, 3, _buckets(10, 20, 30, 35, 38, 40)))
    assert set(one) == {("team", "chat", TargetName.CLOUDRUN)}
    counters = one["team", "chat", TargetName.CLOUDRUN]
    assert (counters.requests, counters.server_errors, counters.resets, counters.auth_refusals) == (40, 3, 1, 2)
    assert counters.latency_buckets[2] == (100.0, 30.0)
    two = parse_target_counters(_payload(prefix, 10, 0, _buckets(5, 10, 10, 10, 10, 10)))
    both = sum_target_counters([one, two])["team", "chat", TargetName.CLOUDRUN]
    assert (both.requests, both.server_errors, both.latency_buckets[0]) == (50, 3, (25.0, 15.0))
    # the query asks Envoy for exactly these, with cumulative bucket counts
    assert "histogram_buckets=cumulative" in TRAFFIC_STATS_QUERY and "format=json" in TRAFFIC_STATS_QUERY
    assert parse_target_counters({"stats": "garbage"}) == {} and parse_target_counters(None) == {}


def test_a_step_window_is_what_was_counted_since_its_start_and_restarts_with_a_router_replica() -> None:
    start = TargetCounters(requests=100, server_errors=1, latency_buckets=((100.0, 90.0), (1000.0, 100.0)))
    now = TargetCounters(requests=130, server_errors=7, resets=2, latency_buckets=((100.0, 100.0), (1000.0, 130.0)))
    window = now.since(start)
    assert window is not None
    assert (window.requests, window.server_errors, window.resets) == (30, 6, 2)
    assert window.latency_buckets == ((100.0, 10.0), (1000.0, 30.0))
    assert window.slower_than(0.1) == (20.0, 30.0)
    restarted = TargetCounters(requests=3)
    assert restarted.since(start) is None


def _window(requests: float, **counts: Any) -> TargetCounters:
    return TargetCounters(requests=requests, **counts)


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        pytest.param(_window(9, server_errors=9), None, id="too-few-requests-say-nothing"),
        pytest.param(_window(100, server_errors=5), None, id="5-percent-is-allowed"),
        pytest.param(_window(100, server_errors=6), "failed 6 of 100 requests", id="5xx"),
        pytest.param(_window(100, resets=8), "failed 8 of 100 requests", id="resets"),
        pytest.param(_window(100, server_errors=8, resets=8), "failed 8 of 100", id="a-reset-503-counts-once"),
        pytest.param(_window(100, auth_refusals=10), "10 401/403", id="no-token-gcp-authn-fails-open"),
        pytest.param(
            _window(40, latency_buckets=((250.0, 20.0), (500.0, 25.0), (1000.0, 40.0))),
            "answered 15 of 40 requests slower than the 500 ms objective",
            id="slow",
        ),
        pytest.param(
            _window(40, latency_buckets=((250.0, 30.0), (500.0, 35.0), (1000.0, 40.0))), None, id="fast-enough"
        ),
    ],
)
def test_a_targets_window_is_judged_on_failures_and_latency(window: TargetCounters, expected: str | None) -> None:
    problem = traffic_problem(TargetName.CLOUDRUN, window, 0.5, GATE, step="draining at 100%")
    if expected is None:
        assert problem is None
    else:
        assert problem is not None and expected in problem and "while draining at 100%" in problem, problem


def test_the_gate_is_an_operator_setting() -> None:
    settings = build_settings(
        ["migration.trafficMaxFailureShare=0.01", "migration.trafficMaxSlowShare=0.5", "migration.trafficMinRequests=3"]
    )
    assert settings.migration.timings().traffic_gate == TrafficGate(0.01, 0.5, 3)


# ----------------------------------------------------------------------------------------------- the state machine


def _at(step: MigrationStep, percent: int, **changes: Any) -> MigrationStatus:
    m = start_migration(TargetName.CLUSTER, TargetName.CLOUDRUN, "cheaper", T0)
    stamp = T0.strftime("%Y-%m-%dT%H:%M:%SZ")
    return m.model_copy(update={"step": step, "traffic_percent": percent, "step_started_at": stamp, **changes})


@pytest.mark.parametrize(
    ("step", "percent"),
    [
        pytest.param(MigrationStep.SHIFTING, 10, id="first-shift"),
        pytest.param(MigrationStep.SHIFTING, 50, id="half"),
        pytest.param(MigrationStep.SHIFTING, 100, id="all"),
        pytest.param(MigrationStep.DRAINING, 100, id="drain"),
    ],
)
def test_a_target_failing_its_traffic_rolls_back_to_the_source(step: MigrationStep, percent: int) -> None:
    for seconds in (1, 45):  # mid-step, and when the step's hold (or the drain) is over
        moved = advance(
            _at(step, percent),
            MigrationObservation(target_ready=True, traffic_problem=FAILING),
            T0 + timedelta(seconds=seconds),
            TIMINGS,
        )
        assert moved.migration is not None and moved.migration.step is MigrationStep.ROLLING_BACK
        assert moved.migration.traffic_percent == 0 and moved.placement is TargetName.CLUSTER
        assert moved.event_reason == "MigrationRollingBack" and FAILING in (moved.event_message or "")
        assert actions_for(moved.migration) == {MigrationAction.RETIRE_TARGET}, "the target goes, the source stays"


def test_the_drain_ends_in_retiring_only_with_a_serving_target() -> None:
    done = T0 + timedelta(seconds=31)
    healthy = advance(_at(MigrationStep.DRAINING, 100), MigrationObservation(target_ready=True), done, TIMINGS)
    assert healthy.migration is not None and healthy.migration.step is MigrationStep.RETIRING
    failing = MigrationObservation(target_ready=True, traffic_problem=FAILING)
    held = advance(_at(MigrationStep.DRAINING, 100), failing, done, TIMINGS)
    assert held.migration is not None and held.migration.step is MigrationStep.ROLLING_BACK


def test_retiring_holds_the_source_while_the_target_fails_and_goes_on_once_it_serves() -> None:
    failing = MigrationObservation(target_ready=True, traffic_problem=FAILING)
    first = advance(_at(MigrationStep.RETIRING, 100), failing, T0 + timedelta(seconds=5), TIMINGS)
    assert first.migration is not None and first.migration.step is MigrationStep.RETIRING
    assert first.placement is TargetName.CLOUDRUN and first.event_reason == "RetireHeld" and first.warning
    assert "retire of cluster held" in (first.migration.last_error or "")
    again = advance(first.migration, failing, T0 + timedelta(seconds=7), TIMINGS)
    assert again.migration == first.migration and again.event_reason is None, "one Event, no status churn"
    retired = MigrationObservation(target_ready=True, retired=True)
    done = advance(first.migration, retired, T0 + timedelta(seconds=9), TIMINGS)
    assert done.migration is None and done.finished is not None
    assert done.finished.outcome is MigrationOutcome.SUCCEEDED


# ----------------------------------------------------------------------------------------------- the reconciler


def test_the_reconciler_never_retires_the_source_while_the_router_counts_the_target_failing() -> None:
    """Through the real reconciler: the drain's window is healthy, so it moves to retiring; then the router counts
    the target failing, and no retire is issued (one RetireHeld Event) until the window is healthy again."""
    events: list[str] = []

    class EventWriter(Writer):
        async def post_event(self, **kwargs: Any) -> None:
            events.append(str(kwargs.get("reason")))

    start = T0.strftime("%Y-%m-%dT%H:%M:%SZ")
    body: dict[str, Any] = {
        "apiVersion": "placement.inference.dev/v1alpha1",
        "kind": "InferenceWorkload",
        "metadata": {"name": "w", "namespace": "unit", "uid": "uid-w", "generation": 1, "resourceVersion": "1"},
        "spec": spec().model_dump(by_alias=True, exclude_none=True, mode="json"),
        "status": {
            "placement": "lambda",
            "targets": {
                "cluster": {"name": "w", "ready": True, "replicas": 2},
                "lambda": {"name": "w", "ready": True, "replicas": 0, "endpoint": "https://w.lambda-url.on.aws"},
            },
            "migration": {
                "source": "cluster",
                "target": "lambda",
                "step": "Draining",
                "trafficPercent": 100,
                "startedAt": start,
                "stepStartedAt": start,
                "sourceReplicas": 2,
            },
        },
    }
    cluster, lam = Recorder(TargetName.CLUSTER), Recorder(TargetName.LAMBDA)
    reconciler = Reconciler(
        cast(Any, EventWriter(body)),
        {TargetName.CLUSTER: cast(Any, cluster), TargetName.LAMBDA: cast(Any, lam)},
        timings=TIMINGS,
        tenancy=inline_tenancy(),
    )

    def tick(seconds: float, requests: float, failed: float) -> str:
        now = T0 + timedelta(seconds=seconds)
        status = InferenceWorkloadStatus.model_validate(body["status"])
        window = TrafficWindow(step_seconds=30.0, rps=(0.05,) * 60, observed_p99_seconds=0.3, end=now)
        inputs = TickInputs(
            now=now,
            price_book=default_price_book(),
            capacity=ClusterCapacity(),
            window=window,
            router_enabled=True,
            router_weights=positive_weights(traffic_weights(status)),
            router_traffic={TargetName.LAMBDA: TargetCounters(requests=requests, server_errors=failed)},
        )
        asyncio.run(reconciler.reconcile(body, inputs))
        migration = body["status"].get("migration")
        return str(migration["step"]) if migration else "done"

    assert tick(5, 100, 0) == "Draining"  # the window starts
    assert tick(31, 140, 1) == "Retiring"  # the drain is over and its window healthy: 1 of 40 failed
    assert tick(33, 160, 15) == "Retiring" and cluster.retired == 0  # 15 of 60: held
    assert tick(35, 170, 20) == "Retiring" and cluster.retired == 0
    assert events.count("RetireHeld") == 1, events
    assert "retire of cluster held" in body["status"]["migration"]["lastError"]
    assert cluster.applied[-1].replicas == 2, "the held source keeps its replicas"
    assert tick(60, 600, 20) == "done" and cluster.retired == 1  # 20 of 500: the target serves, the source goes
    assert body["status"]["lastMigration"]["outcome"] == "Succeeded"
