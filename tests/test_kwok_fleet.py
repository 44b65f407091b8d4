"""Capacity and the real cluster target on a KWOK GPU fleet: real apiserver, controller-manager, kube-scheduler.

A small fleet (one node per pool of ``devtools/kwok.py``: whole H100s, an A100 cut into MIG 1g.10gb slices, L4s
time-sliced as ``nvidia.com/gpu``, T4s time-sliced as ``nvidia.com/gpu.shared``) is kept Ready by kwok. The operator's
``CapacityCache`` reads it as GFD and the device plugin publish it; ``ClusterTarget`` creates the Deployment; the
real scheduler binds its Pods to the node its GPU resources, affinity and tolerations allow; kwok marks them Running
and Ready, so the target reports the workload ready and the capacity view counts the slices as taken.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient, AppsV1Api, CoreV1Api, CustomObjectsApi

from inference_placement.api.workload import GROUP, PLURAL, VERSION, InferenceWorkload
from inference_placement.devtools.kwok import FLEET_LABEL, GPU_POOLS, KwokFleet, create_fleet, delete_fleet, fleet_plan
from inference_placement.targets.base import DesiredTarget
from inference_placement.targets.capacity import CapacityCache
from inference_placement.targets.cluster import ClusterTarget
from tests.plugins.cluster import KubeCluster
from tests.test_target_cluster import client_for, eventually

pytestmark = [pytest.mark.cluster]

CASES: dict[str, tuple[dict[str, Any], str, str]] = {
    # accelerator -> (pool it must land on, resource it takes)
    "mig": (
        {"type": "nvidia-a100-80gb", "sharing": "mig", "migProfile": "1g.10gb"},
        "a100-mig",
        "nvidia.com/mig-1g.10gb",
    ),
    "l4-shared": (
        {"type": "nvidia-l4", "sharing": "time-slicing", "timeSlicingReplicas": 8},
        "l4-ts",
        "nvidia.com/gpu",
    ),
    "t4-renamed": (
        {"type": "nvidia-t4", "sharing": "time-slicing", "timeSlicingReplicas": 8},
        "t4-shared",
        "nvidia.com/gpu.shared",
    ),
    "h100": ({"type": "nvidia-h100-80gb", "count": 2}, "h100", "nvidia.com/gpu"),
}


@pytest.fixture
async def api(kube_kwok: KubeCluster) -> AsyncIterator[ApiClient]:
    client = await client_for(kube_kwok)
    yield client
    await client.close()


@pytest.fixture
async def fleet(api: ApiClient) -> AsyncIterator[KwokFleet]:
    created = await create_fleet(api, fleet_plan(4), ready_timeout=120)
    yield created
    await delete_fleet(api, created)


@pytest.fixture
async def namespace(api: ApiClient, crd_installed: KubeCluster, fleet: KwokFleet) -> AsyncIterator[str]:
    """Its Pods are removed before the fleet (kwok finishes a Pod's deletion only while its Node exists)."""
    name = f"ipkwok-{uuid.uuid4().hex[:8]}"
    body: Any = {"metadata": {"name": name}}
    core = CoreV1Api(api)
    await core.create_namespace(body)
    yield name
    apps = AppsV1Api(api)
    await apps.delete_collection_namespaced_deployment(name)
    await apps.delete_collection_namespaced_replica_set(name)
    await core.delete_collection_namespaced_pod(name, grace_period_seconds=0)
    await core.delete_namespace(name, grace_period_seconds=0)


async def create_workload(
    api: ApiClient, namespace: str, name: str, accelerator: dict[str, Any], fleet: KwokFleet
) -> InferenceWorkload:
    """A GPU workload kept on this test's fleet by ``spec.cluster.nodeSelector`` (other fleets may exist)."""
    manifest = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceWorkload",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"image": "registry.local/model:1", "sizeMb": 500, "cpu": "500m", "memory": "1Gi"},
            "accelerator": accelerator,
            "cluster": {"nodeSelector": {FLEET_LABEL: fleet.fleet}},
        },
    }
    created = await CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
    return InferenceWorkload.model_validate(created)


async def test_the_fleet_is_ready_and_read_as_gfd_publishes_it(api: ApiClient, fleet: KwokFleet) -> None:
    nodes = (await CoreV1Api(api).list_node(label_selector=fleet.selector)).items
    assert len(nodes) == 4
    assert all(any(c.type == "Ready" and c.status == "True" for c in n.status.conditions) for n in nodes), (
        "kwok did not make the fake nodes Ready"
    )
    cache = CapacityCache(api, node_label_selector=fleet.selector)
    await cache.start()
    try:
        facts = cache.gpu_facts()
        assert facts.profile_strategies, "the MIG node's profiles are not read"
        for accelerator, pool, resource in CASES.values():
            spec = InferenceWorkload.model_validate(
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "InferenceWorkload",
                    "metadata": {"name": "probe", "namespace": "default"},
                    "spec": {
                        "model": {"image": "m:1", "sizeMb": 100, "cpu": "1", "memory": "1Gi"},
                        "accelerator": accelerator,
                    },
                }
            ).spec
            ok, message = cache.check(spec)
            total = GPU_POOLS[pool].gpu_resources[resource]
            assert ok, message
            assert f"{total} of {total} {resource} free" in message, message
    finally:
        await cache.stop()


@pytest.mark.parametrize("case", sorted(CASES))
async def test_the_scheduler_places_the_targets_pods_on_the_right_fake_gpu_node(
    api: ApiClient, fleet: KwokFleet, namespace: str, case: str
) -> None:
    accelerator, pool, resource = CASES[case]
    cache = CapacityCache(api, node_label_selector=fleet.selector)
    await cache.start()
    try:
        workload = await create_workload(api, namespace, f"w-{case}", accelerator, fleet)
        target = ClusterTarget(api, cache)
        replicas = 2
        state = await target.ensure(workload, DesiredTarget(replicas=replicas))
        assert state.name == f"w-{case}-model"

        async def ready() -> bool:
            return (await target.ensure(workload, DesiredTarget(replicas=replicas))).ready

        await eventually(ready, timeout=90, what=f"{replicas} replicas of {case} Running and Ready on kwok nodes")
        pods = (await CoreV1Api(api).list_namespaced_pod(namespace)).items
        ours = [p for p in pods if p.metadata.name.startswith(f"w-{case}-model-")]
        assert len(ours) == replicas
        expected_node = fleet.pools[pool][0]
        assert {p.spec.node_name for p in ours} == {expected_node}, "the scheduler bound a replica elsewhere"
        assert all(p.status.phase == "Running" for p in ours)
        per_pod = int(accelerator.get("count", 1))
        assert all(p.spec.containers[0].resources.limits.get(resource) == str(per_pod) for p in ours)

        # the capacity view counts what the replicas took (as a competitor for another workload), and what any other
        # Pod the scheduler bound to that node took (a concurrent run's GPU workloads may land on this fleet too)
        total = int(GPU_POOLS[pool].gpu_resources[resource])

        async def taken_on_node() -> int:
            pods = await CoreV1Api(api).list_pod_for_all_namespaces(field_selector=f"spec.nodeName={expected_node}")
            return sum(
                int((p.spec.containers[0].resources.requests or {}).get(resource, "0"))
                for p in pods.items
                if p.status.phase not in ("Succeeded", "Failed")
            )

        taken = await taken_on_node()
        assert taken >= replicas * per_pod
        left = total - taken
        seen: list[str] = []

        async def counted() -> bool:
            seen[:] = [cache.check(workload.spec)[1]]
            return f"{left} of {total} {resource} free" in seen[0]

        try:
            await eventually(counted, timeout=30, what=f"{left} of {total} {resource} free in the capacity view")
        except AssertionError as err:
            raise AssertionError(f"{err}; it says: {seen}; {await taken_on_node()} taken on {expected_node}") from err
        assert cache.check(workload.spec, owner=f"{namespace}/w-{case}")[1].startswith(f"{total} of {total}")
    finally:
        await cache.stop()
