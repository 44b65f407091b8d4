"""GPUs claimed through DRA on the real apiserver, controller-manager and kube-scheduler, with a KWOK GPU fleet.

The fleet (one node per pool of ``devtools/kwok.py``) publishes its GPUs as NVIDIA's DRA driver does: one
ResourceSlice per node (driver ``gpu.nvidia.com``) with whole H100s, A100 MIG 1g.10gb devices, and L4s / T4s shared
by consumable capacity (8 shares each), and no ``nvidia.com/*`` extended resources. The test creates DeviceClasses
with NVIDIA's selectors under names of its own (the shared cluster's other users must not see ``gpu.nvidia.com``
appear) and hands them to the operator as its settings would. In ``auto`` mode the capacity cache sees the classes,
so ``ClusterTarget`` creates a ResourceClaimTemplate and a Deployment whose Pods claim from it; the controller-
manager makes each Pod's ResourceClaim, the real scheduler allocates it a device of the right node, and the capacity
view counts the device (or the share) as taken.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from kubernetes_asyncio.client import (
    ApiClient,
    AppsV1Api,
    CoreV1Api,
    CustomObjectsApi,
    ResourceV1Api,
)

from inference_placement.api.workload import GROUP, PLURAL, VERSION, InferenceWorkload
from inference_placement.devtools.kwok import FLEET_LABEL, KwokFleet, create_fleet, delete_fleet, fleet_plan
from inference_placement.policy.dra import DRIVER, DRAClasses
from inference_placement.targets.base import DesiredTarget
from inference_placement.targets.capacity import CapacityCache
from inference_placement.targets.cluster import ClusterTarget
from tests.plugins.cluster import KubeCluster
from tests.plugins.operator import OperatorProcess
from tests.test_target_cluster import client_for, eventually

pytestmark = [pytest.mark.cluster]

NVIDIA_SELECTOR = "device.driver == 'gpu.nvidia.com' && device.attributes['gpu.nvidia.com'].type == '{}'"
"""The CEL selector of NVIDIA's DeviceClasses gpu.nvidia.com ('gpu') and mig.nvidia.com ('mig')."""

CASES: dict[str, tuple[dict[str, Any], str, str, str]] = {
    # accelerator -> (pool it must land on, capacity key, devices one replica takes)
    "h100": ({"type": "nvidia-h100-80gb", "count": 2}, "h100", "dra.gpu.nvidia.com/nvidia-h100-80gb", "2"),
    "mig": (
        {"type": "nvidia-a100-80gb", "sharing": "mig", "migProfile": "1g.10gb"},
        "a100-mig",
        "dra.gpu.nvidia.com/nvidia-a100-80gb-mig-1g.10gb",
        "1",
    ),
    "l4-time-sliced": (
        {"type": "nvidia-l4", "sharing": "time-slicing", "timeSlicingReplicas": 8},
        "l4-ts",
        "dra.gpu.nvidia.com/nvidia-l4-shares-max8",
        "1",
    ),
}
TOTALS = {"h100": 8, "a100-mig": 56, "l4-ts": 32}
"""What each pool's node publishes under the case's key (8 GPUs; 8 x 7 MIG devices; 4 GPUs x 8 shares)."""


@pytest.fixture
async def api(kube_kwok: KubeCluster) -> AsyncIterator[ApiClient]:
    client = await client_for(kube_kwok)
    yield client
    await client.close()


@pytest.fixture
async def classes(api: ApiClient) -> AsyncIterator[DRAClasses]:
    """NVIDIA's two DeviceClasses under names only this test uses (cluster-scoped: removed afterwards)."""
    run = uuid.uuid4().hex[:8]
    names = DRAClasses(
        gpu=f"gpu-{run}.dra.inference-placement.test",
        mig=f"mig-{run}.dra.inference-placement.test",
        sharing_strategy="TimeSlicing",  # --set cluster.draSharingStrategy=TimeSlicing
    )
    resource = ResourceV1Api(api)
    for name, kind in ((names.gpu, "gpu"), (names.mig, "mig")):
        body: Any = {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "DeviceClass",
            "metadata": {"name": name},
            "spec": {"selectors": [{"cel": {"expression": NVIDIA_SELECTOR.format(kind)}}]},
        }
        await resource.create_device_class(body)
    yield names
    for name in (names.gpu, names.mig):
        assert name is not None
        await resource.delete_device_class(name)


@pytest.fixture
async def fleet(api: ApiClient) -> AsyncIterator[KwokFleet]:
    created = await create_fleet(api, fleet_plan(4), ready_timeout=120, dra=True)
    yield created
    await delete_fleet(api, created)
    left = await ResourceV1Api(api).list_resource_slice(label_selector=created.selector)
    assert not left.items, "the fleet's ResourceSlices outlived it"


@pytest.fixture
async def namespace(api: ApiClient, crd_installed: KubeCluster, fleet: KwokFleet) -> AsyncIterator[str]:
    """Its Pods are removed before the fleet (kwok finishes a Pod's deletion only while its Node exists)."""
    name = f"ipdra-{uuid.uuid4().hex[:8]}"
    body: Any = {"metadata": {"name": name}}
    core = CoreV1Api(api)
    await core.create_namespace(body)
    yield name
    apps = AppsV1Api(api)
    await apps.delete_collection_namespaced_deployment(name)
    await apps.delete_collection_namespaced_replica_set(name)
    await core.delete_collection_namespaced_pod(name, grace_period_seconds=0)
    await core.delete_namespace(name, grace_period_seconds=0)


@pytest.fixture
async def cache(api: ApiClient, fleet: KwokFleet, classes: DRAClasses) -> AsyncIterator[CapacityCache]:
    """The operator's capacity cache as ``--set cluster.draGpuDeviceClass=... cluster.draMigDeviceClass=...`` makes
    it (``cluster.gpuRequest`` left at ``auto``: DRA because those classes exist)."""
    capacity = CapacityCache(api, node_label_selector=fleet.selector, gpu_request="auto", dra_classes=classes)
    await capacity.start()
    yield capacity
    await capacity.stop()


def workload_manifest(namespace: str, name: str, accelerator: dict[str, Any], fleet: KwokFleet) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceWorkload",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"image": "registry.local/model:1", "sizeMb": 500, "cpu": "500m", "memory": "1Gi"},
            "accelerator": accelerator,
            "cluster": {"nodeSelector": {FLEET_LABEL: fleet.fleet}},
        },
    }


async def test_the_published_devices_are_the_capacity_when_the_device_classes_exist(
    cache: CapacityCache, fleet: KwokFleet
) -> None:
    for accelerator, pool, key, _ in CASES.values():
        spec = InferenceWorkload.model_validate(workload_manifest("default", "probe", accelerator, fleet)).spec
        ok, message = cache.check(spec)
        assert ok, message
        total = TOTALS[pool]
        assert f"{total} of {total} {key} free" in message, message
    node = cache.snapshot().nodes
    assert not any(k.startswith("nvidia.com/") and v > 0 for n in node for k, v in n.allocatable.items()), (
        "a DRA fleet advertises no extended GPU resources"
    )


@pytest.mark.parametrize("case", sorted(CASES))
async def test_the_scheduler_allocates_the_targets_claims_on_the_right_node(
    api: ApiClient, fleet: KwokFleet, namespace: str, cache: CapacityCache, classes: DRAClasses, case: str
) -> None:
    accelerator, pool, key, per_replica = CASES[case]
    created = await CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, workload_manifest(namespace, f"w-{case}", accelerator, fleet)
    )
    workload = InferenceWorkload.model_validate(created)
    target = ClusterTarget(api, cache)
    replicas = 2

    async def ready() -> bool:
        return (await target.ensure(workload, DesiredTarget(replicas=replicas))).ready

    await eventually(ready, timeout=90, what=f"{replicas} replicas of {case} with allocated claims Running")
    writes = target.writes
    assert (await target.ensure(workload, DesiredTarget(replicas=replicas))).ready
    assert target.writes == writes, f"a steady workload was written again: {target.write_log[writes:]}"

    resource = ResourceV1Api(api)
    templates = (await resource.list_namespaced_resource_claim_template(namespace)).items
    assert len(templates) == 1, [t.metadata.name for t in templates]
    request = templates[0].spec.spec.devices.requests[0].exactly
    wanted_class = classes.mig if accelerator.get("sharing") == "mig" else classes.gpu
    assert request.device_class_name == wanted_class
    assert request.count == int(per_replica)
    owner = templates[0].metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.controller) == ("InferenceWorkload", f"w-{case}", True)

    deployment = await AppsV1Api(api).read_namespaced_deployment(f"w-{case}-model", namespace)
    pod_spec = deployment.spec.template.spec
    assert [c.resource_claim_template_name for c in pod_spec.resource_claims] == [templates[0].metadata.name]
    limits = pod_spec.containers[0].resources.limits or {}
    assert not [r for r in limits if r.startswith("nvidia.com/")], "DRA replaces the extended resources"

    expected_node = fleet.pools[pool][0]
    slice_ = await resource.read_resource_slice(f"{expected_node}-{DRIVER}")
    published = {d.name for d in slice_.spec.devices}
    pods = (await CoreV1Api(api).list_namespaced_pod(namespace)).items
    ours = [p for p in pods if p.metadata.name.startswith(f"w-{case}-model-")]
    assert len(ours) == replicas
    assert {p.spec.node_name for p in ours} == {expected_node}, "the scheduler bound a replica elsewhere"
    allocated: list[str] = []
    for pod in ours:
        statuses = pod.status.resource_claim_statuses or []
        assert len(statuses) == 1 and statuses[0].name == "gpu", statuses
        claim = await resource.read_namespaced_resource_claim(statuses[0].resource_claim_name, namespace)
        allocation = claim.status.allocation
        assert allocation is not None, f"claim {claim.metadata.name} not allocated"
        terms = allocation.node_selector.node_selector_terms
        assert [f.values for t in terms for f in t.match_fields or []] == [[expected_node]], terms
        for result in allocation.devices.results:
            assert (result.driver, result.pool) == (DRIVER, expected_node)
            assert result.device in published
            allocated.append(result.device)
        assert claim.metadata.labels["placement.inference.dev/workload"] == f"w-{case}"
    assert len(allocated) == replicas * int(per_replica)
    if case == "l4-time-sliced":
        # consumable capacity: the scheduler packs the shares; the GpuConfig reaches the driver through the claim
        config = templates[0].spec.spec.devices.config[0].opaque
        assert (config.driver, config.parameters["kind"]) == (DRIVER, "GpuConfig")
        assert config.parameters["sharing"]["strategy"] == "TimeSlicing"
    else:
        assert len(set(allocated)) == len(allocated), "an exclusive device was allocated twice"

    total = TOTALS[pool]
    left = total - replicas * int(per_replica)
    seen: list[str] = []

    async def counted() -> bool:
        seen[:] = [cache.check(workload.spec)[1]]
        return f"{left} of {total} {key} free" in seen[0]

    try:
        await eventually(counted, timeout=30, what=f"{left} of {total} {key} free in the capacity view")
    except AssertionError as err:
        raise AssertionError(f"{err}; it says: {seen}") from err
    # the workload's own claims are not a competitor for it
    own = cache.check(workload.spec, owner=f"{namespace}/w-{case}")[1]
    assert own.startswith(f"{total} of {total} {key} free"), own

    # retiring removes the claim template with the Deployment
    async def retired() -> bool:
        return await target.retire(workload)

    await eventually(retired, timeout=60, what="the target retired")
    assert not (await resource.list_namespaced_resource_claim_template(namespace)).items


async def test_the_operator_claims_a_mig_slice_through_dra_and_counts_the_published_devices(
    api: ApiClient,
    fleet: KwokFleet,
    namespace: str,
    classes: DRAClasses,
    operator_factory: Callable[..., OperatorProcess],
) -> None:
    """The whole operator, configured as a user would (``--set cluster.dra*DeviceClass``), places a MIG workload:
    its Pod's claim is allocated a MIG device of the A100 node, and ``CapacityAvailable`` counts the published ones."""
    op = operator_factory(
        namespace,
        "--set",
        f"cluster.draGpuDeviceClass={classes.gpu}",
        "--set",
        f"cluster.draMigDeviceClass={classes.mig}",
    )
    manifest = workload_manifest(namespace, "mig-llm", CASES["mig"][0], fleet)
    manifest["spec"]["placement"] = {"allowedTargets": ["cluster"]}
    await CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
    resource = ResourceV1Api(api)
    expected_node = fleet.pools["a100-mig"][0]

    async def allocated() -> bool:
        claims = (await resource.list_namespaced_resource_claim(namespace)).items
        return any(c.status and c.status.allocation for c in claims) and all(
            r.pool == expected_node for c in claims if c.status.allocation for r in c.status.allocation.devices.results
        )

    try:
        await eventually(allocated, timeout=90, what="the operator's replica claim allocated on the A100 node")
    except AssertionError as err:
        raise AssertionError(f"{err}\n{op.logs()[-3000:]}") from err
    templates = (await resource.list_namespaced_resource_claim_template(namespace)).items
    assert [t.spec.spec.devices.requests[0].exactly.device_class_name for t in templates] == [classes.mig]

    async def capacity_reported() -> bool:
        obj = await CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "mig-llm")
        conditions = {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}
        message = conditions.get("CapacityAvailable", {}).get("message", "")
        return "dra.gpu.nvidia.com/nvidia-a100-80gb-mig-1g.10gb free" in message

    await eventually(capacity_reported, timeout=60, what="CapacityAvailable counting the published MIG devices")


async def test_a_new_accelerator_is_a_new_claim_template_and_the_old_one_goes_after_the_rollout(
    api: ApiClient, fleet: KwokFleet, namespace: str, cache: CapacityCache
) -> None:
    """A claim template's spec is immutable: moving the replicas from a whole H100 to an L4 share (the policy's
    choice among ``alternatives``) rolls the Deployment onto a second template, and the first is deleted once no
    replica claims from it."""
    accelerator = {**CASES["h100"][0], "count": 1, "alternatives": [CASES["l4-time-sliced"][0]]}
    created = await CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, workload_manifest(namespace, "moving", accelerator, fleet)
    )
    workload = InferenceWorkload.model_validate(created)
    h100, l4 = workload.spec.accelerator.options()
    target = ClusterTarget(api, cache)
    resource = ResourceV1Api(api)

    async def ready_on(option: Any) -> bool:
        return (await target.ensure(workload, DesiredTarget(replicas=1, accelerator=option))).ready

    async def template_names() -> list[str]:
        return sorted(
            t.metadata.name for t in (await resource.list_namespaced_resource_claim_template(namespace)).items
        )

    await eventually(lambda: ready_on(h100), timeout=90, what="the replica Running on an H100")
    first = await template_names()
    assert len(first) == 1
    await target.ensure(workload, DesiredTarget(replicas=1, accelerator=l4))
    during = await template_names()
    assert len(during) == 2 and first[0] in during, "the old template stays while its replica still serves"
    await eventually(lambda: ready_on(l4), timeout=90, what="the rollout onto an L4 share done")
    after = await template_names()
    assert len(after) == 1 and after[0] != first[0]
    pods = [p for p in (await CoreV1Api(api).list_namespaced_pod(namespace)).items if not p.metadata.deletion_timestamp]
    assert {p.spec.node_name for p in pods} == {fleet.pools["l4-ts"][0]}
