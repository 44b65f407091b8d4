"""A first placement ends (``placement`` set, ``Placed``, Ready) only once the router serves its route: a workload
shown placed and Ready while its stable endpoint still answers 503 is what teams (and the demo, whose replay starts
at Ready) must never see. Through the real reconciler and migration state machine, the router's confirmation fed
as the fleet feeds it (``TickInputs.router_weights``)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from inference_placement.api.spec import TargetName
from inference_placement.api.workload import InferenceWorkload
from inference_placement.controller.reconciler import Reconciler, TickInputs
from inference_placement.policy.capacity import ClusterCapacity
from inference_placement.policy.decide import TrafficWindow
from inference_placement.policy.price_book import default_price_book
from inference_placement.targets.base import DesiredTarget, TargetState
from tests.plugins.memory_api import inline_tenancy
from tests.test_one_decision_everywhere import Writer
from tests.test_source_capacity import _body
from tests.test_spill_lifecycle import Recorder

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def _new_workload() -> dict[str, Any]:
    """A workload just applied: the source-capacity tests' object without a status."""
    body = _body()
    del body["status"]
    return body


def _reconciler(body: dict[str, Any]) -> Reconciler:
    targets = {name: cast(Any, Recorder(name)) for name in (TargetName.CLUSTER, TargetName.LAMBDA)}
    return Reconciler(cast(Any, Writer(body)), targets, tenancy=inline_tenancy())


def _ready(status: dict[str, Any]) -> str | None:
    return next((c["status"] for c in status.get("conditions", []) if c["type"] == "Ready"), None)


def test_a_first_placement_is_placed_only_once_the_router_serves_its_route() -> None:
    body = _new_workload()
    reconciler = _reconciler(body)

    def tick(seconds: float, routed: dict[TargetName, int] | None) -> dict[str, Any]:
        now = NOW + timedelta(seconds=seconds)
        window = TrafficWindow(
            step_seconds=30.0, rps=(5.0,) * 60, observed_p99_seconds=0.3, end=now, slo_miss_share=0.0
        )
        inputs = TickInputs(
            now=now,
            price_book=default_price_book(),
            capacity=ClusterCapacity(),
            window=window,
            router_enabled=True,
            router_weights=routed,
        )
        asyncio.run(reconciler.reconcile(body, inputs))
        return cast(dict[str, Any], body["status"])

    # the router has not routed the workload yet: the target comes up and is routed all traffic, not placed
    status = {}
    for second in range(0, 30, 6):
        status = tick(second, {})
    migration = status["migration"]
    assert migration.get("source") is None
    assert migration["step"] == "Shifting" and migration["trafficPercent"] == 100, migration
    assert status.get("placement") is None and _ready(status) != "True", status
    placed = next(c for c in status["conditions"] if c["type"] == "Placed")
    assert placed["message"] == f"{migration['target']} is up; waiting for the router to serve it", placed
    target = migration["target"]
    # the router serves it: placed, Ready, the Placed migration recorded
    status = tick(36, {TargetName(target): 100})
    assert status.get("migration") is None and status["placement"] == target, status
    assert _ready(status) == "True"
    assert status["lastMigration"]["outcome"] == "Succeeded" and status["lastMigration"].get("source") is None


def test_without_a_router_a_first_placement_is_placed_the_tick_after_its_target_is_healthy() -> None:
    body = _new_workload()
    reconciler = _reconciler(body)
    steps = []
    for second in range(0, 30, 6):
        now = NOW + timedelta(seconds=second)
        inputs = TickInputs(now=now, price_book=default_price_book(), capacity=ClusterCapacity(), window=None)
        asyncio.run(reconciler.reconcile(body, inputs))
        migration = body["status"].get("migration")
        steps.append(migration["step"] if migration else body["status"].get("placement"))
        if migration is None:
            break
    assert steps[-1] in ("cluster", "lambda") and steps[-2] == "Shifting", steps


class _Pending(Recorder):
    """The cluster target whose replicas stay Pending (no node has the GPU they ask for)."""

    async def ensure(self, workload: InferenceWorkload, desired: DesiredTarget) -> TargetState:
        state = await super().ensure(workload, desired)
        return replace(state, ready=self.ready)

    ready = False


def _capacity(status: dict[str, Any]) -> tuple[str, str]:
    found = next(c for c in status["conditions"] if c["type"] == "CapacityAvailable")
    return found["status"], found["message"]


def test_a_first_placement_on_the_cluster_whose_replicas_cannot_fit_says_so_until_they_are_up() -> None:
    """``CapacityAvailable`` of a workload pinned to the cluster while its replicas wait for a node: the capacity
    verdict's (False, with its numbers), not "holds its in-cluster capacity"; once they are up, it holds it."""
    body = _new_workload()
    body["spec"]["placement"]["pin"] = "cluster"
    cluster = _Pending(TargetName.CLUSTER)
    reconciler = Reconciler(cast(Any, Writer(body)), {TargetName.CLUSTER: cast(Any, cluster)}, tenancy=inline_tenancy())
    verdict = (False, "no node has a free nvidia-l4 GPU (0 of 0)")

    def tick(seconds: float) -> dict[str, Any]:
        inputs = TickInputs(
            now=NOW + timedelta(seconds=seconds),
            price_book=default_price_book(),
            capacity=ClusterCapacity(),
            window=None,
            capacity_verdict=verdict,
        )
        asyncio.run(reconciler.reconcile(body, inputs))
        return cast(dict[str, Any], body["status"])

    status = {}
    for second in range(0, 30, 6):
        status = tick(second)
    assert status["migration"]["target"] == "cluster" and status["migration"]["step"] == "AwaitingHealthy", status
    assert _capacity(status) == ("False", verdict[1])
    cluster.ready = True
    for second in range(30, 60, 6):
        status = tick(second)
        if status.get("placement") == "cluster":
            break
    assert status.get("placement") == "cluster", status
    assert _capacity(status) == ("True", "the workload holds its in-cluster capacity")
