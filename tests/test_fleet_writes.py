"""At steady state the fleet loop writes nothing: no status, no Events, no child-object patches."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import yaml

from inference_placement.controller.runtime import build_fleet
from inference_placement.controller.settings import OperatorSettings
from inference_placement.targets.cluster import ClusterTarget
from tests.plugins.cluster import REPO_ROOT, KubeCluster
from tests.plugins.operator import load_example

pytestmark = pytest.mark.cluster


def _workloads(ns: str) -> list[dict[str, Any]]:
    valid = load_example(REPO_ROOT / "examples" / "sentiment-bursty.yaml", ns)
    valid["metadata"]["name"] = "steady"
    valid["spec"]["placement"] = {"allowedTargets": ["cluster"]}
    invalid = load_example(REPO_ROOT / "examples" / "sentiment-bursty.yaml", ns)
    invalid["metadata"]["name"] = "broken"
    invalid["spec"]["placement"] = {"allowedTargets": ["cluster"]}
    # invalid for the operator, let through by the CRD (its CEL rules refuse e.g. a pin outside allowedTargets)
    invalid["spec"]["model"]["cpu"] = -1
    return [valid, invalid]


async def _tick_writes(fleet: Any, cluster_target: ClusterTarget) -> int:
    before = fleet.reconciler.writer.total_writes + cluster_target.writes
    await fleet.tick()
    return int(fleet.reconciler.writer.total_writes + cluster_target.writes - before)


def test_second_pass_over_unchanged_workloads_writes_nothing(crd_installed: KubeCluster, namespace: str) -> None:
    for doc in _workloads(namespace):
        crd_installed.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))

    async def scenario() -> tuple[list[int], list[int], list[dict[str, Any]]]:
        # this namespace only: another test's workloads (e.g. a namespace still terminating) are not ours to count
        settings = OperatorSettings(
            namespaces=(namespace,), kubeconfig=crd_installed.kubeconfig, metrics_port=0, health_port=0
        )
        fleet, close = await build_fleet(settings)
        try:
            cluster_target = fleet.reconciler.targets[next(iter(fleet.reconciler.targets))]
            assert isinstance(cluster_target, ClusterTarget)

            async def one_tick() -> int:
                for obj in crd_installed.kubectl_json("get", "iw", "-n", namespace)["items"]:
                    fleet.observe("MODIFIED", obj)
                return await _tick_writes(fleet, cluster_target)

            settling: list[int] = []
            for _ in range(60):  # until the end state: placed (a real node) or waiting for one (no node)
                settling.append(await one_tick())
                steady = crd_installed.kubectl_json("get", "iw", "steady", "-n", namespace)
                placed = steady.get("status", {}).get("placement") == "cluster"
                if (placed or not crd_installed.node_enabled) and len(settling) >= 3:
                    # one more pass: the first one that starts from the new placement (its decision path differs)
                    settling.append(await one_tick())
                    break
                await asyncio.sleep(1)
            steady_writes = [await one_tick() for _ in range(3)]
            ours = [entry.body for key, entry in fleet._workloads.items() if key.namespace == namespace]
            return settling, steady_writes, ours
        finally:
            await close()

    settling, steady_writes, stored = asyncio.run(scenario())
    assert settling[0] > 0, "the first pass places one workload and marks the other invalid"
    assert steady_writes == [0, 0, 0], f"writes per tick while settling {settling}, then {steady_writes}"
    # what the fleet keeps of the real objects (applied with kubectl: managedFields and last-applied are on them)
    assert len(stored) == 2
    for body in stored:
        assert set(body) == {"metadata", "spec", "status"}
        assert "managedFields" not in body["metadata"]
        assert "kubectl.kubernetes.io/last-applied-configuration" not in (body["metadata"].get("annotations") or {})
