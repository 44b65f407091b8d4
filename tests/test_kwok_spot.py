"""Spot capacity on the local cluster (issue 17, item 6): the real apiserver, controller-manager and kube-scheduler
place a spot workload's replicas, rendered by the real cluster target, on KWOK fake nodes of this test's own.

Two fake L4 nodes: one labelled and tainted as GKE labels and taints a Spot VM node (``cloud.google.com/gke-spot:
"true"``, ``cloud.google.com/gke-spot=true:NoSchedule``), one on-demand. The replicas prefer the spot node and
tolerate its taint; a simulated pre-emption (the spot node cordoned and its Pods evicted through the eviction API,
as a drain does when the cloud's notice arrives) brings them back on the on-demand node: the on-demand fallback
needs no decision. A decision that keeps the workload on on-demand requires on-demand nodes.

Only this test's fake nodes are cordoned and drained (never the shared node), and only this test's Pods evicted.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient, AppsV1Api, CoreV1Api, CustomObjectsApi
from kubernetes_asyncio.client.exceptions import ApiException
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from inference_placement.api.workload import GROUP, PLURAL, VERSION, InferenceWorkload
from inference_placement.devtools.kwok import (
    FLEET_LABEL,
    GPU_TAINT,
    NODE_LIFECYCLE_TAINT_PREFIX,
    KwokFleet,
    create_fleet,
    delete_fleet,
)
from inference_placement.policy.node_labels import GKE_SPOT_LABEL, GKE_SPOT_TOLERATION
from inference_placement.targets.base import DesiredTarget
from inference_placement.targets.capacity import CapacityCache
from inference_placement.targets.cluster import ClusterTarget
from tests.plugins.cluster import KubeCluster
from tests.test_target_cluster import client_for, eventually

pytestmark = [pytest.mark.cluster]

L4_SHARED = {"type": "nvidia-l4", "sharing": "time-slicing", "timeSlicingReplicas": 8}


@pytest.fixture
async def api(kube_kwok: KubeCluster) -> AsyncIterator[ApiClient]:
    client = await client_for(kube_kwok)
    yield client
    await client.close()


@pytest.fixture
async def nodes(api: ApiClient) -> AsyncIterator[tuple[KwokFleet, str, str]]:
    """(the fleet, its spot node, its on-demand node): two fake L4 nodes, the first made a GKE Spot VM node."""
    fleet = await create_fleet(api, {"l4-ts": 2}, ready_timeout=120)
    spot, on_demand = fleet.pools["l4-ts"]
    core = CoreV1Api(api)
    try:
        # Node.spec.taints is replaced whole by a patch, so the patch carries the Node's taints plus the spot one;
        # not the Node's taints as read, though: a read while the node lifecycle controller's not-ready taint was
        # still on put it back after the controller lifted it, and both replicas went to the on-demand node (1 run
        # in 8 here, and once in CI). create_fleet now returns once that taint is gone; the patch keeps only the
        # fleet's own taints, and the resourceVersion makes a concurrent change a conflict instead of lost.
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(lambda e: isinstance(e, ApiException) and e.status == 409),
            stop=stop_after_attempt(10),
            reraise=True,
        ):
            with attempt:  # kwok's heartbeats change the Node too: a conflict reads it again
                node = await core.read_node(spot)
                taints = [{"key": t.key, "value": t.value, "effect": t.effect} for t in node.spec.taints or []]
                taints = [t for t in taints if not t["key"].startswith(NODE_LIFECYCLE_TAINT_PREFIX)]
                taints.append({k: v for k, v in GKE_SPOT_TOLERATION.items() if k != "operator"})
                body: Any = {
                    "metadata": {"labels": {GKE_SPOT_LABEL: "true"}, "resourceVersion": node.metadata.resource_version},
                    "spec": {"taints": taints},
                }
                await core.patch_node(spot, body)
        node = await core.read_node(spot)
        assert {t.key for t in node.spec.taints} == {GPU_TAINT["key"], GKE_SPOT_LABEL}, node.spec.taints
        yield fleet, spot, on_demand
    finally:
        await delete_fleet(api, fleet)


@pytest.fixture
async def namespace(
    api: ApiClient, crd_installed: KubeCluster, nodes: tuple[KwokFleet, str, str]
) -> AsyncIterator[str]:
    """Its Pods are removed before the fleet (kwok finishes a Pod's deletion only while its Node exists)."""
    name = f"ipspot-{uuid.uuid4().hex[:8]}"
    body: Any = {"metadata": {"name": name}}
    core = CoreV1Api(api)
    await core.create_namespace(body)
    yield name
    apps = AppsV1Api(api)
    await apps.delete_collection_namespaced_deployment(name)
    await apps.delete_collection_namespaced_replica_set(name)
    await core.delete_collection_namespaced_pod(name, grace_period_seconds=0)
    await core.delete_namespace(name, grace_period_seconds=0)


async def spot_workload(api: ApiClient, namespace: str, fleet: KwokFleet) -> InferenceWorkload:
    """A GPU workload asking for spot, kept on this test's nodes by ``spec.cluster.nodeSelector``."""
    manifest = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceWorkload",
        "metadata": {"name": "spot", "namespace": namespace},
        "spec": {
            "model": {"image": "registry.local/model:1", "sizeMb": 500, "cpu": "500m", "memory": "1Gi"},
            "accelerator": L4_SHARED,
            "cluster": {"spot": True, "nodeSelector": {FLEET_LABEL: fleet.fleet}},
        },
    }
    created = await CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
    return InferenceWorkload.model_validate(created)


async def replica_nodes(api: ApiClient, namespace: str) -> list[str | None]:
    """Node of each live (not terminating) replica."""
    pods = (
        await CoreV1Api(api).list_namespaced_pod(namespace, label_selector="placement.inference.dev/workload=spot")
    ).items
    return [p.spec.node_name for p in pods if p.metadata.deletion_timestamp is None]


async def pods_state(api: ApiClient, namespace: str) -> str:
    """Each Pod of the namespace (node, phase, readiness, terminating) and the namespace's Events: what a failure
    shows, since the scheduler's and the controllers' reasons are in them."""
    core = CoreV1Api(api)
    pods = (await core.list_namespaced_pod(namespace)).items
    lines = [
        f"pod {p.metadata.name} node={p.spec.node_name} phase={p.status.phase} "
        f"ready={[c.ready for c in p.status.container_statuses or []]} "
        f"terminating={p.metadata.deletion_timestamp is not None}"
        for p in pods
    ]
    events = (await core.list_namespaced_event(namespace)).items
    lines += [f"event {e.involved_object.name} {e.reason}: {e.message}" for e in events[-20:]]
    return "\n".join(lines)


async def explained(api: ApiClient, namespace: str, wait: Awaitable[None]) -> None:
    """``wait``, and when it times out, the namespace's Pods and Events with the error."""
    try:
        await wait
    except AssertionError as err:
        raise AssertionError(f"{err}\n{await pods_state(api, namespace)}") from None


async def test_spot_replicas_land_on_spot_and_come_back_on_demand_after_a_preemption(
    api: ApiClient, nodes: tuple[KwokFleet, str, str], namespace: str
) -> None:
    fleet, spot_node, on_demand_node = nodes
    core = CoreV1Api(api)
    cache = CapacityCache(api, node_label_selector=fleet.selector)
    await cache.start()
    try:
        workload = await spot_workload(api, namespace, fleet)
        target = ClusterTarget(api, cache, gpu_node_labels="gfd", spot_node_labels="gke")
        on_spot = DesiredTarget(replicas=2, spot=True)

        async def ready(desired: DesiredTarget = on_spot) -> bool:
            return (await target.ensure(workload, desired)).ready

        await explained(
            api, namespace, eventually(ready, timeout=90, what="2 replicas Running and Ready on the fake nodes")
        )
        assert await replica_nodes(api, namespace) == [spot_node, spot_node], (
            f"the replicas should prefer spot ({spot_node}):\n{await pods_state(api, namespace)}"
        )
        template = (await AppsV1Api(api).read_namespaced_deployment("spot-model", namespace)).spec.template.spec
        tolerations = [t.to_dict() for t in template.tolerations]
        assert any(t["key"] == GKE_SPOT_LABEL and t["effect"] == "NoSchedule" for t in tolerations)

        # the pre-emption: the cloud's notice arrives, the node is cordoned and drained (its Pods evicted)
        started = time.monotonic()
        await core.patch_node(spot_node, {"spec": {"unschedulable": True}})
        for pod in (await core.list_namespaced_pod(namespace, field_selector=f"spec.nodeName={spot_node}")).items:
            eviction: Any = {
                "apiVersion": "policy/v1",
                "kind": "Eviction",
                "metadata": {"name": pod.metadata.name, "namespace": namespace},
            }
            await core.create_namespaced_pod_eviction(pod.metadata.name, namespace, eviction)

        async def back_on_demand() -> bool:
            placed = await replica_nodes(api, namespace)
            return placed == [on_demand_node, on_demand_node] and await ready()

        await explained(
            api, namespace, eventually(back_on_demand, timeout=90, what="both replicas back on the on-demand node")
        )
        fallback_seconds = time.monotonic() - started
        print(f"replicas back on the on-demand node {fallback_seconds:.1f}s after the drain began")

        # the policy keeps it on on-demand (the pre-emption risk broke the SLO budget): on-demand nodes required,
        # so the spot node, back and schedulable, takes no replica of a rollout
        await core.patch_node(spot_node, {"spec": {"unschedulable": False}})
        on_demand = DesiredTarget(replicas=2, spot=False)
        await explained(
            api, namespace, eventually(lambda: ready(on_demand), timeout=90, what="the on-demand rollout Ready")
        )
        template = (await AppsV1Api(api).read_namespaced_deployment("spot-model", namespace)).spec.template.spec
        required = template.affinity.node_affinity.required_during_scheduling_ignored_during_execution
        expressions = [e.to_dict() for e in required.node_selector_terms[0].match_expressions]
        assert {"key": GKE_SPOT_LABEL, "operator": "NotIn", "values": ["true"]} in expressions
        assert template.affinity.node_affinity.preferred_during_scheduling_ignored_during_execution is None
        assert set(await replica_nodes(api, namespace)) == {on_demand_node}, await pods_state(api, namespace)
    finally:
        await cache.stop()
