"""Starting and ending burst spillover without failing a request: the router retries on the overflow target before
any replica refuses, and no replica refuses once the router stops (``controller/spill.py``, the reconciler)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from inference_placement.api.spec import TargetName
from inference_placement.api.status import MigrationStep, SpillStep
from inference_placement.api.timestamps import format_time
from inference_placement.api.workload import InferenceWorkload
from inference_placement.controller.reconciler import Reconciler, TickInputs
from inference_placement.controller.spill import SpillObservation, advance_spill
from inference_placement.policy.actuation import Actuators
from inference_placement.policy.capacity import ClusterCapacity
from inference_placement.policy.decide import TrafficWindow
from inference_placement.policy.price_book import default_price_book
from inference_placement.targets.base import DesiredTarget, TargetState
from tests.plugins.memory_api import inline_tenancy
from tests.test_one_decision_everywhere import Writer
from tests.test_policy_spillover import bursty_window, spec, steady_window

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
PB = default_price_book()


class Recorder:
    """A target that is ready at once; records what it was asked to apply and what it retired."""

    def __init__(self, name: TargetName) -> None:
        self.name = name
        self.applied: list[DesiredTarget] = []
        self.retired = 0

    async def ensure(self, workload: InferenceWorkload, desired: DesiredTarget) -> TargetState:
        self.applied.append(desired)
        endpoint = None if self.name is TargetName.CLUSTER else "https://w.lambda-url.us-east-1.on.aws"
        return TargetState(name=f"{self.name.value}-w", endpoint=endpoint, ready=True, replicas=desired.replicas)

    async def observe(self, workload: InferenceWorkload) -> TargetState | None:
        return None

    async def retire(self, workload: InferenceWorkload) -> bool:
        self.retired += 1
        return True


def _body() -> dict[str, Any]:
    s = spec()
    return {
        "apiVersion": "placement.inference.dev/v1alpha1",
        "kind": "InferenceWorkload",
        "metadata": {"name": "w", "namespace": "unit", "uid": "uid-w", "generation": 1, "resourceVersion": "1"},
        "spec": s.model_dump(by_alias=True, exclude_none=True, mode="json"),
        "status": {"placement": "cluster"},
    }


def _at(window: TrafficWindow, now: datetime) -> TrafficWindow:
    return TrafficWindow(
        step_seconds=window.step_seconds,
        rps=window.rps,
        observed_p99_seconds=window.observed_p99_seconds,
        end=now,
        peak_in_flight=window.peak_in_flight,
        slo_miss_share=window.slo_miss_share,
    )


def _spilling_reconciler(writer: Writer) -> tuple[Reconciler, Recorder, Recorder]:
    """A reconciler allowed to spill from the cluster to Lambda, its two targets recording what they apply."""
    cluster, lam = Recorder(TargetName.CLUSTER), Recorder(TargetName.LAMBDA)
    reconciler = Reconciler(
        cast(Any, writer),
        {TargetName.CLUSTER: cast(Any, cluster), TargetName.LAMBDA: cast(Any, lam)},
        actuators=Actuators(spillover=True),
        tenancy=inline_tenancy(),
    )
    return reconciler, cluster, lam


def _spill_tick(
    reconciler: Reconciler, body: dict[str, Any], window: TrafficWindow, router_spill: TargetName | None
) -> TargetName | None:
    """One reconcile at ``window.end`` behind a router spilling to ``router_spill``; returns where the router spills
    next, following status as ``router_sync`` does (ROUTED, SPILLING, UNCAPPING route the overflow)."""
    inputs = TickInputs(
        now=window.end,
        price_book=PB,
        capacity=ClusterCapacity(),
        window=window,
        router_enabled=True,
        router_weights={TargetName.CLUSTER: 100},
        router_spill=router_spill,
    )
    asyncio.run(reconciler.reconcile(body, inputs))
    spill = body["status"].get("spill")
    return TargetName.LAMBDA if spill and spill["step"] in ("Routed", "Spilling", "Uncapping") else None


def test_spill_starts_route_first_and_ends_cap_first_without_a_refusal_the_router_does_not_retry() -> None:
    body = _body()
    reconciler, cluster, lam = _spilling_reconciler(Writer(body))
    router_spill: TargetName | None = None
    steps: list[SpillStep | None] = []
    now = NOW

    def tick(window: TrafficWindow) -> None:
        nonlocal now, router_spill
        now += timedelta(seconds=20)
        routed_before = router_spill
        router_spill = _spill_tick(reconciler, body, _at(window, now), router_spill)
        spill = body["status"].get("spill")
        steps.append(SpillStep(spill["step"]) if spill else None)
        # the cap is only ever applied while the router confirmed it retries refusals on the overflow target
        if cluster.applied and cluster.applied[-1].max_in_flight is not None:
            assert routed_before is TargetName.LAMBDA

    for _ in range(5):
        tick(bursty_window())
    assert steps[:3] == [SpillStep.PROVISIONING, SpillStep.ROUTED, SpillStep.SPILLING]
    spill = body["status"]["spill"]
    assert spill["target"] == "lambda" and spill["baseReplicas"] >= 1
    assert "overflow above" in spill["message"] and "holding the peak" in spill["message"]
    assert cluster.applied[-1].max_in_flight == spill["slotsPerReplica"]
    assert lam.applied, "the overflow target is deployed before anything spills"

    for _ in range(6):
        tick(steady_window())
    assert SpillStep.UNCAPPING in steps and SpillStep.DRAINING in steps
    assert steps[-1] is None and lam.retired == 1
    assert cluster.applied[-1].max_in_flight is None
    assert body["status"]["placement"] == "cluster" and "lambda" not in (body["status"].get("targets") or {})


@pytest.mark.parametrize(
    ("step", "seen", "expected"),
    [
        pytest.param(SpillStep.PROVISIONING, SpillObservation(), SpillStep.PROVISIONING, id="waits-for-the-target"),
        pytest.param(SpillStep.PROVISIONING, SpillObservation(target_ready=True), SpillStep.ROUTED, id="target-ready"),
        pytest.param(SpillStep.ROUTED, SpillObservation(target_ready=True), SpillStep.ROUTED, id="waits-for-router"),
        pytest.param(
            SpillStep.ROUTED, SpillObservation(target_ready=True, router_spills=True), SpillStep.SPILLING, id="routed"
        ),
    ],
)
def test_a_spill_starts_one_observed_step_at_a_time(
    step: SpillStep, seen: SpillObservation, expected: SpillStep
) -> None:
    from inference_placement.policy.actuation import Actuators as A
    from inference_placement.policy.decide import PlacementState, decide

    on_cluster = PlacementState(current=TargetName.CLUSTER, last_migration_finished_at=None, month_to_date_usd=0.0)
    plan = decide(spec(), bursty_window(), on_cluster, PB, ClusterCapacity(), NOW, actuators=A(spillover=True)).spill
    assert plan is not None
    started = advance_spill(None, plan, "m", SpillObservation(), NOW, 30.0).spill
    assert started is not None
    current = started.model_copy(update={"step": step})
    moved = advance_spill(current, plan, "m", seen, NOW, 30.0).spill
    assert moved is not None and moved.step is expected


def test_an_ending_spill_drains_before_its_target_retires() -> None:
    from inference_placement.policy.decide import PlacementState, decide

    on_cluster = PlacementState(current=TargetName.CLUSTER, last_migration_finished_at=None, month_to_date_usd=0.0)
    plan = decide(spec(), bursty_window(), on_cluster, PB, ClusterCapacity(), NOW, actuators=Actuators(spillover=True))
    assert plan.spill is not None
    spilling = advance_spill(None, plan.spill, "m", SpillObservation(), NOW, 30.0).spill
    assert spilling is not None
    spilling = spilling.model_copy(update={"step": SpillStep.SPILLING})
    uncapping = advance_spill(spilling, None, "", SpillObservation(router_spills=True), NOW, 30.0).spill
    assert uncapping is not None and uncapping.step is SpillStep.UNCAPPING
    # the replicas still refuse until their rollout without the cap finished: the router keeps retrying
    still = advance_spill(uncapping, None, "", SpillObservation(router_spills=True), NOW, 30.0).spill
    assert still is not None and still.step is SpillStep.UNCAPPING
    draining = advance_spill(uncapping, None, "", SpillObservation(replicas_uncapped=True), NOW, 30.0).spill
    assert draining is not None and draining.step is SpillStep.DRAINING
    early = advance_spill(draining, None, "", SpillObservation(), NOW + timedelta(seconds=10), 30.0)
    assert early.spill is not None and early.retire is None
    done = advance_spill(draining, None, "", SpillObservation(), NOW + timedelta(seconds=31), 30.0)
    assert done.spill is None and done.retire is TargetName.LAMBDA


# ------------------------------------------------------------------------------------------------ the router


class _Applier:
    def __init__(self) -> None:
        self.routes: list[Any] = []

    async def apply(self, routes: Any) -> None:
        self.routes = list(routes)


@pytest.mark.parametrize(
    ("step", "routed"),
    [
        pytest.param("Provisioning", False, id="provisioning-nothing-spills"),
        pytest.param("Routed", True, id="routed"),
        pytest.param("Spilling", True, id="spilling"),
        pytest.param("Uncapping", True, id="uncapping-still-retries"),
        pytest.param("Draining", False, id="draining-no-more"),
    ],
)
def test_the_router_retries_on_the_overflow_target_exactly_while_a_replica_may_refuse(step: str, routed: bool) -> None:
    from inference_placement.api.names import lambda_function_name
    from inference_placement.api.workload import WorkloadKey
    from inference_placement.controller.router_sync import RouterSync

    arn = f"arn:aws:lambda:us-east-1:123456789012:function:{lambda_function_name('unit', 'w')}"
    body = {
        "metadata": {"name": "w", "namespace": "unit", "uid": "u", "resourceVersion": "7"},
        "status": {
            "placement": "cluster",
            "targets": {
                "cluster": {"name": "w-model", "endpoint": "http://w-model.unit.svc:8080", "ready": True},
                "lambda": {"name": arn, "endpoint": "https://0a1b2c.lambda-url.us-east-1.on.aws/", "ready": True},
            },
            "spill": {
                "target": "lambda",
                "step": step,
                "baseReplicas": 2,
                "overflowAboveInFlight": 8,
                "slotsPerReplica": 4,
                "stepStartedAt": "2026-03-10T12:00:00Z",
            },
        },
    }
    applier = _Applier()
    sync = RouterSync(cast(Any, applier))
    key = WorkloadKey("unit", "w")
    sync.observe(key, body)
    assert asyncio.run(sync.sync())
    (route,) = applier.routes
    assert (route.overflow is not None) is routed
    assert sync.confirmed_spill(key) is (TargetName.LAMBDA if routed else None)
    assert sync.confirmed(key) == {TargetName.CLUSTER: 100}


class _Unobserved(Recorder):
    """A cluster target whose new Deployment generation (this tick's replica count) the controller has not observed
    yet: not ready, ``ready_replicas`` still serving."""

    def __init__(self, ready_replicas: int) -> None:
        super().__init__(TargetName.CLUSTER)
        self.ready_replicas = ready_replicas

    async def ensure(self, workload: InferenceWorkload, desired: DesiredTarget) -> TargetState:
        self.applied.append(desired)
        return TargetState(name="cluster-w", endpoint=None, ready=False, replicas=self.ready_replicas)


@pytest.mark.parametrize(("ready_replicas", "rolls_back"), [(1, False), (0, True)])
def test_a_migration_taking_traffic_rolls_back_only_when_its_target_has_no_ready_replica(
    ready_replicas: int, rolls_back: bool
) -> None:
    """Found by the demo on the policy's own thresholds: the decision changed the cluster's replicas while traffic
    shifted to it, the Deployment's new generation was not observed yet at the next read, and the migration rolled
    back although the replicas served. A target with ready replicas serves; one with none has failed."""
    body = _body()
    started = format_time(NOW - timedelta(seconds=1))
    body["status"] = {
        "placement": "lambda",
        "migration": {
            "source": "lambda",
            "target": "cluster",
            "step": MigrationStep.SHIFTING.value,
            "trafficPercent": 50,
            "startedAt": started,
            "stepStartedAt": started,
        },
    }
    cluster, lam = _Unobserved(ready_replicas), Recorder(TargetName.LAMBDA)
    reconciler = Reconciler(
        cast(Any, Writer(body)),
        {TargetName.CLUSTER: cast(Any, cluster), TargetName.LAMBDA: cast(Any, lam)},
        tenancy=inline_tenancy(),
    )
    inputs = TickInputs(
        now=NOW,
        price_book=PB,
        capacity=ClusterCapacity(),
        window=_at(bursty_window(), NOW),
        router_enabled=True,
        router_weights={TargetName.LAMBDA: 50, TargetName.CLUSTER: 50},
    )
    asyncio.run(reconciler.reconcile(body, inputs))
    migration = body["status"]["migration"]
    assert (migration["step"] == MigrationStep.ROLLING_BACK.value) is rolls_back, migration


def test_a_steady_spill_keeps_its_status_while_the_split_holds() -> None:
    """The message's figures move with each tick's traffic; the status changes only with the split (else every tick
    of a spill is a status write)."""
    from inference_placement.policy.actuation import Actuators as A
    from inference_placement.policy.decide import PlacementState, decide

    on_cluster = PlacementState(current=TargetName.CLUSTER, last_migration_finished_at=None, month_to_date_usd=0.0)
    plan = decide(spec(), bursty_window(), on_cluster, PB, ClusterCapacity(), NOW, actuators=A(spillover=True)).spill
    assert plan is not None
    seen = SpillObservation(target_ready=True, router_spills=True)
    spilling = advance_spill(None, plan, "as first decided", seen, NOW, 30.0).spill
    assert spilling is not None
    spilling = spilling.model_copy(update={"step": SpillStep.SPILLING})
    kept = advance_spill(spilling, plan, "same split, other dollars", seen, NOW, 30.0).spill
    assert kept == spilling
    resized = replace(plan, base_replicas=plan.base_replicas + 1)
    moved = advance_spill(spilling, resized, "a new split", seen, NOW, 30.0).spill
    assert moved is not None and moved.message == "a new split" and moved.base_replicas == plan.base_replicas + 1


class _CountingWriter(Writer):
    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body)
        self.writes = 0

    async def patch_status(
        self, namespace: str, name: str, patch: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        self.writes += 1
        return await super().patch_status(namespace, name, patch, resource_version)


def test_a_steady_spill_writes_no_status_tick_after_tick() -> None:
    """A burst that lasts, its rates moving by a few percent a tick (as measured traffic does): once spilling, the
    split holds and no tick writes the status (the message's dollars moved every tick before)."""
    body = _body()
    writer = _CountingWriter(body)
    reconciler, _, _ = _spilling_reconciler(writer)
    rng = random.Random(7)
    router_spill: TargetName | None = None
    now = NOW
    writes_while_spilling: list[int] = []
    for _ in range(12):
        now += timedelta(seconds=30)
        burst = bursty_window()
        jittered = replace(_at(burst, now), rps=tuple(r * (1 + 0.03 * rng.random()) for r in burst.rps))
        before, routed_before = writer.writes, router_spill
        router_spill = _spill_tick(reconciler, body, jittered, router_spill)
        spill = body["status"].get("spill")
        if spill and spill["step"] == "Spilling" and routed_before is TargetName.LAMBDA:
            writes_while_spilling.append(writer.writes - before)
    assert len(writes_while_spilling) >= 8
    assert writes_while_spilling[1:] == [0] * (len(writes_while_spilling) - 1), writes_while_spilling
