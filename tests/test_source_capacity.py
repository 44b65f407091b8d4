"""A migration's source keeps the replicas it served with until it is retired: it carries its share of the traffic
while the target takes the rest, and all of it again if the migration rolls back (issue 18 item 6). Through the
real reconciler and migration state machine, with targets that record what they are asked to apply."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from inference_placement.api.spec import TargetName
from inference_placement.api.status import InferenceWorkloadStatus, MigrationStep
from inference_placement.controller.reconciler import Reconciler, TickInputs
from inference_placement.controller.router_sync import positive_weights
from inference_placement.policy.actuation import Actuators, target_settings
from inference_placement.policy.capacity import ClusterCapacity
from inference_placement.policy.decide import PlacementState, TrafficWindow, decide
from inference_placement.policy.price_book import default_price_book
from inference_placement.policy.traffic_health import TargetCounters
from inference_placement.routing.model import traffic_weights
from tests.plugins.memory_api import inline_tenancy
from tests.test_one_decision_everywhere import Writer
from tests.test_policy_spillover import spec
from tests.test_spill_lifecycle import Recorder

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
PB = default_price_book()
ON_CLUSTER = PlacementState(current=TargetName.CLUSTER, last_migration_finished_at=None, month_to_date_usd=0.0)
SERVING = 4
"""The cluster replicas the workload is served with when the traffic falls and it moves to Lambda."""


def _body() -> dict[str, Any]:
    return {
        "apiVersion": "placement.inference.dev/v1alpha1",
        "kind": "InferenceWorkload",
        "metadata": {"name": "w", "namespace": "unit", "uid": "uid-w", "generation": 1, "resourceVersion": "1"},
        "spec": spec().model_dump(by_alias=True, exclude_none=True, mode="json"),
        "status": {
            "placement": "cluster",
            "targets": {"cluster": {"name": "w", "ready": True, "replicas": SERVING}},
        },
    }


def _quiet(now: datetime) -> TrafficWindow:
    """Traffic low enough that the policy moves the workload to Lambda."""
    return TrafficWindow(step_seconds=30.0, rps=(0.05,) * 60, observed_p99_seconds=0.3, end=now, slo_miss_share=0.0)


def _walk(lambda_fails_at: int | None) -> tuple[list[tuple[str | None, int]], dict[str, Any], Recorder]:
    """Reconcile every 6 s with the router following each step; returns (step@percent, cluster replicas applied)
    per tick while the cluster was the migration's source, the final status, and the cluster target."""
    body = _body()
    cluster, lam = Recorder(TargetName.CLUSTER), Recorder(TargetName.LAMBDA)
    reconciler = Reconciler(
        cast(Any, Writer(body)),
        {TargetName.CLUSTER: cast(Any, cluster), TargetName.LAMBDA: cast(Any, lam)},
        tenancy=inline_tenancy(),
    )
    seen: list[tuple[str | None, int]] = []
    now, requests, failed = NOW, 0.0, 0.0
    for _ in range(40):
        now += timedelta(seconds=6)
        status = InferenceWorkloadStatus.model_validate(body["status"])
        migration = status.migration
        share = migration.traffic_percent if migration is not None else 0
        requests += 3 * share / 100 * 6
        if lambda_fails_at is not None and share >= lambda_fails_at:
            failed += 3 * share / 100 * 6  # passes its health check, fails every request
        inputs = TickInputs(
            now=now,
            price_book=PB,
            capacity=ClusterCapacity(),
            window=_quiet(now),
            router_enabled=True,
            router_weights=positive_weights(traffic_weights(status)),
            router_traffic={TargetName.LAMBDA: TargetCounters(requests=requests, server_errors=failed)},
        )
        applied = len(cluster.applied)
        asyncio.run(reconciler.reconcile(body, inputs))
        if migration is not None and migration.source is TargetName.CLUSTER:
            step = f"{migration.step.value}@{migration.traffic_percent}"
            seen += [(step, d.replicas) for d in cluster.applied[applied:]]
        if body["status"].get("lastMigration") and not body["status"].get("migration"):
            break
    return seen, body["status"], cluster


def test_the_source_keeps_its_replicas_through_every_step_until_it_is_retired() -> None:
    seen, status, cluster = _walk(lambda_fails_at=None)
    assert status["lastMigration"]["outcome"] == "Succeeded" and status["placement"] == "lambda"
    steps = {step for step, _ in seen}
    assert {"Shifting@10", "Shifting@50", "Draining@100"} <= steps, steps
    assert all(replicas == SERVING for _, replicas in seen), seen
    assert cluster.retired == 1


@pytest.mark.parametrize("fails_at", [10, 50, 100], ids=lambda p: f"target-fails-at-{p}")
def test_a_rollback_lands_the_traffic_on_the_replicas_the_source_served_with(fails_at: int) -> None:
    seen, status, cluster = _walk(lambda_fails_at=fails_at)
    assert status["lastMigration"]["outcome"] == "RolledBack", status["lastMigration"]
    assert status["placement"] == "cluster" and cluster.retired == 0
    assert "lambda failed" in status["lastMigration"]["message"]
    assert all(replicas == SERVING for _, replicas in seen), seen
    # after the rollback the cluster serves with them still
    assert cluster.applied[-1].replicas == SERVING
    assert status["targets"]["cluster"]["replicas"] == SERVING


def test_a_withheld_decision_keeps_the_migrations_source_at_its_replicas() -> None:
    """Metrics missing mid-migration (the decision withheld): the source is sized from the migration's record,
    not from a decision about another target or the spec's floor."""
    moving = decide(spec(), _quiet(NOW), ON_CLUSTER, PB, ClusterCapacity(), NOW)
    assert moving.target is TargetName.LAMBDA
    withheld = replace(moving, target=None, migrate=False)
    settings = target_settings(TargetName.CLUSTER, withheld, spec(), None, Actuators(), serving_replicas=SERVING)
    assert settings.replicas == SERVING
    floor = target_settings(TargetName.CLUSTER, withheld, spec(), None, Actuators())
    assert floor.replicas == 1


def test_the_record_is_the_serving_replicas_and_survives_a_restart() -> None:
    body = _body()
    cluster, lam = Recorder(TargetName.CLUSTER), Recorder(TargetName.LAMBDA)
    targets = {TargetName.CLUSTER: cast(Any, cluster), TargetName.LAMBDA: cast(Any, lam)}
    inputs = TickInputs(now=NOW, price_book=PB, capacity=ClusterCapacity(), window=_quiet(NOW), router_enabled=True)
    asyncio.run(Reconciler(cast(Any, Writer(body)), targets, tenancy=inline_tenancy()).reconcile(body, inputs))
    migration = body["status"]["migration"]
    assert migration["sourceReplicas"] == SERVING and migration["step"] == MigrationStep.AWAITING_HEALTHY.value
    # a new operator (nothing in memory) sizes the source from status alone
    later = TickInputs(
        now=NOW + timedelta(seconds=6),
        price_book=PB,
        capacity=ClusterCapacity(),
        window=_quiet(NOW + timedelta(seconds=6)),
        router_enabled=True,
        router_weights={TargetName.CLUSTER: 100},
    )
    asyncio.run(Reconciler(cast(Any, Writer(body)), targets, tenancy=inline_tenancy()).reconcile(body, later))
    assert cluster.applied[-1].replicas == SERVING
