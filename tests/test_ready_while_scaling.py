"""Ready stays True while a placed cluster workload scales up: the Deployment's wanted replicas are not all available
yet, but at least ``scaling.minReplicas`` are and serve, so Argo CD (argocd-health.lua) never shows Degraded for a
normal scale-up. Below the minimum, or with a target error, Placed and Ready turn False as before. No apiserver: the
reconciler writes to a recording writer; the cluster target reports what a real Deployment would
(``deployment_state``)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from inference_placement.api.spec import TargetName
from inference_placement.api.workload import InferenceWorkload
from inference_placement.controller.reconciler import Reconciler, TickInputs
from inference_placement.controller.telemetry import Telemetry
from inference_placement.devtools.scale.cluster import workload_body
from inference_placement.policy.capacity import ClusterCapacity
from inference_placement.policy.decide import TrafficWindow
from inference_placement.policy.price_book import default_price_book
from inference_placement.targets.base import DesiredTarget, TargetState
from inference_placement.targets.cluster import deployment_state
from inference_placement.targets.cluster_render import deployment_name

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


class Writer:
    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    async def patch_status(
        self, namespace: str, name: str, patch: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        self.patches.append(patch)
        return {"metadata": {"name": name, "namespace": namespace}, "status": patch}

    async def post_event(self, **_: Any) -> None:
        return None


class ScalingCluster:
    """A cluster target whose Deployment has ``available`` replicas of what the decision wants."""

    name = TargetName.CLUSTER

    def __init__(self) -> None:
        self.available: int | None = None  # None: every wanted replica
        self.wanted = 0

    async def ensure(self, workload: InferenceWorkload, desired: DesiredTarget) -> TargetState:
        self.wanted = desired.replicas
        available = self.wanted if self.available is None else self.available
        deployment = {
            "metadata": {"name": deployment_name(workload), "generation": 2},
            "spec": {"replicas": self.wanted},
            "status": {
                "observedGeneration": 2,
                "availableReplicas": available,
                "replicas": self.wanted,
                "updatedReplicas": self.wanted,
            },
        }
        return deployment_state(deployment, "http://w.unit.svc:8080")

    async def observe(self, workload: InferenceWorkload) -> TargetState | None:
        return None

    async def retire(self, workload: InferenceWorkload) -> bool:
        return True


def _apply(doc: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386: the status the apiserver stores after the reconciler's merge patch."""
    out = dict(doc)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _apply(out[key], value)
        else:
            out[key] = value
    return out


def _conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def _reconcile(
    min_replicas: int, available: int | None, telemetry: Telemetry | None = None
) -> tuple[dict[str, Any], dict[str, Any], int]:
    """Place the workload on the cluster with every replica available, then reconcile again with ``available``."""
    body = workload_body("unit", "w")
    body["metadata"].update({"uid": "uid-w", "generation": 1, "resourceVersion": "1"})
    body["spec"]["placement"]["allowedTargets"] = ["cluster"]
    body["spec"]["scaling"] = {"minReplicas": min_replicas, "maxReplicas": 10, "targetConcurrency": 1}
    writer = Writer()
    target = ScalingCluster()
    reconciler = Reconciler(cast(Any, writer), {TargetName.CLUSTER: target}, telemetry=telemetry)
    window = TrafficWindow(
        step_seconds=30.0, rps=(40.0,) * 30, observed_p99_seconds=None, end=NOW - timedelta(seconds=30)
    )
    status: dict[str, Any] = {}
    before: dict[str, Any] = {}
    for tick in range(4):
        if tick == 3:
            before = status
            target.available = available
        inputs = TickInputs(
            now=NOW + timedelta(seconds=30 * tick),
            price_book=default_price_book(),
            capacity=ClusterCapacity(),
            window=window,
        )
        asyncio.run(reconciler.reconcile({**body, "status": status}, inputs))
        if writer.patches:
            status = _apply(status, writer.patches[-1])
    return before, status, target.wanted


def test_a_scale_up_above_the_minimum_stays_ready() -> None:
    before, after, wanted = _reconcile(min_replicas=2, available=2)
    assert before["placement"] == "cluster" and _conditions(before)["Ready"]["status"] == "True"
    assert wanted > 2, "the traffic asks for more replicas than are available"
    conditions = _conditions(after)
    assert conditions["Placed"]["status"] == "True", conditions["Placed"]
    assert f"2/{wanted} replicas available" in conditions["Placed"]["message"]
    assert conditions["Ready"]["status"] == "True", conditions["Ready"]
    assert after["targets"]["cluster"]["ready"] is False, "the target itself still waits for every replica"


@pytest.mark.parametrize(("min_replicas", "available"), [(2, 1), (1, 0)])
def test_below_the_minimum_a_placement_is_not_ready(min_replicas: int, available: int) -> None:
    _, after, _ = _reconcile(min_replicas=min_replicas, available=available)
    conditions = _conditions(after)
    assert conditions["Placed"]["status"] == "False"
    assert conditions["Placed"]["reason"] == "TargetNotReady"
    assert conditions["Ready"]["status"] == "False"
