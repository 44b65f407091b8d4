"""The cluster target against the real local apiserver + controller-manager, with fake GPU Nodes.

The fake Nodes carry the labels GPU feature discovery writes and the allocatable the device plugin advertises (set
through the status subresource). They are tainted so no real scheduler binds to them (there is no kubelet behind
them); where a Pod "lands" is checked by evaluating its required node affinity against every fake node of the run,
with the scheduler's semantics. Each Node gets a run label, and the capacity cache only watches that run's Nodes,
so tests running in parallel do not see each other's GPUs.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import kubernetes
import pytest
from kubernetes_asyncio import config as async_config
from kubernetes_asyncio.client import ApiClient, AppsV1Api, Configuration, CoreV1Api, CustomObjectsApi

from inference_placement.api.workload import GROUP, PLURAL, VERSION, InferenceWorkload
from inference_placement.policy.gpu_scheduling import requirement_matches
from inference_placement.targets import cluster as cluster_module
from inference_placement.targets.base import DesiredTarget, NotOwnedError
from inference_placement.targets.capacity import CapacityCache
from inference_placement.targets.cluster import ClusterTarget
from tests.plugins.cluster import KubeCluster

RUN_LABEL = "inference-placement.test/run"
FAKE_TAINT = {"key": "inference-placement.test/fake", "value": "true", "effect": "NoSchedule"}
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists"}
MERGE_PATCH = "application/merge-patch+json"


# ------------------------------------------------------------------------------------------------ helpers


async def eventually(
    probe: Callable[[], Awaitable[bool]], *, timeout: float, what: str, interval: float = 0.25
) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


@dataclass(frozen=True)
class FakeNode:
    """A GPU node as GFD and the device plugin publish it."""

    key: str
    labels: Mapping[str, str]
    allocatable: Mapping[str, str]


def gfd_labels(product: str, count: int, memory_mib: int, **extra: str) -> dict[str, str]:
    return {
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": product,
        "nvidia.com/gpu.count": str(count),
        "nvidia.com/gpu.memory": str(memory_mib),
        "nvidia.com/gpu.replicas": "1",
        "nvidia.com/gpu.sharing-strategy": "none",
        "nvidia.com/mig.capable": "false",
        **extra,
    }


BASE_ALLOCATABLE = {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "500Gi"}

A100_MIXED = FakeNode(
    "a100-mixed",
    gfd_labels(
        "NVIDIA-A100-SXM4-80GB",
        1,
        81920,
        **{
            "nvidia.com/mig.capable": "true",
            "nvidia.com/mig.strategy": "mixed",
            "nvidia.com/mig-3g.40gb.count": "1",
            "nvidia.com/mig-3g.40gb.product": "NVIDIA-A100-SXM4-80GB-MIG-3g.40gb",
            "nvidia.com/mig-2g.20gb.count": "2",
            "nvidia.com/mig-2g.20gb.product": "NVIDIA-A100-SXM4-80GB-MIG-2g.20gb",
        },
    ),
    {**BASE_ALLOCATABLE, "nvidia.com/gpu": "0", "nvidia.com/mig-3g.40gb": "1", "nvidia.com/mig-2g.20gb": "2"},
)
A100_SINGLE = FakeNode(
    "a100-single",
    gfd_labels(
        "NVIDIA-A100-SXM4-80GB-MIG-1g.10gb",
        7,
        9728,
        **{"nvidia.com/mig.capable": "true", "nvidia.com/mig.strategy": "single"},
    ),
    {**BASE_ALLOCATABLE, "nvidia.com/gpu": "7"},
)
L4_TIME_SLICED = FakeNode(
    "l4-ts",
    gfd_labels(
        "NVIDIA-L4-SHARED",
        1,
        23034,
        **{"nvidia.com/gpu.replicas": "4", "nvidia.com/gpu.sharing-strategy": "time-slicing"},
    ),
    {**BASE_ALLOCATABLE, "nvidia.com/gpu": "4"},
)
T4 = FakeNode("t4", gfd_labels("Tesla-T4", 1, 15360), {**BASE_ALLOCATABLE, "nvidia.com/gpu": "1"})
H100 = FakeNode(
    "h100",
    gfd_labels("NVIDIA-H100-80GB-HBM3", 8, 81559, **{"nvidia.com/mig.capable": "true"}),
    {**BASE_ALLOCATABLE, "nvidia.com/gpu": "8"},
)
ALL_FAKE_NODES = (A100_MIXED, A100_SINGLE, L4_TIME_SLICED, T4, H100)


@dataclass(frozen=True)
class FakeNodes:
    run: str
    names: Mapping[str, str]
    """FakeNode.key -> Node name."""
    labels: Mapping[str, Mapping[str, str]]
    """Node name -> labels as created."""

    @property
    def selector(self) -> str:
        return f"{RUN_LABEL}={self.run}"


def sync_core(cluster: KubeCluster) -> Any:
    return kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(config_file=cluster.kubeconfig))


def create_fake_nodes(cluster: KubeCluster, nodes: tuple[FakeNode, ...]) -> FakeNodes:
    """Nodes through the API; allocatable/capacity through the status subresource, as a kubelet would."""
    core = sync_core(cluster)
    run = uuid.uuid4().hex[:8]
    names: dict[str, str] = {}
    labels: dict[str, dict[str, str]] = {}
    for fake in nodes:
        name = f"fake-gpu-{run}-{fake.key}"
        node_labels = {**fake.labels, RUN_LABEL: run, "kubernetes.io/hostname": name}
        core.create_node({"metadata": {"name": name, "labels": node_labels}, "spec": {"taints": [FAKE_TAINT]}})
        core.patch_node_status(
            name, {"status": {"capacity": dict(fake.allocatable), "allocatable": dict(fake.allocatable)}}
        )
        names[fake.key] = name
        labels[name] = node_labels
    return FakeNodes(run=run, names=names, labels=labels)


def delete_fake_nodes(cluster: KubeCluster, fake: FakeNodes) -> None:
    core = sync_core(cluster)
    for name in fake.names.values():
        try:
            core.delete_node(name)
        except kubernetes.client.ApiException as e:
            if e.status != 404:
                raise


@pytest.fixture(scope="module")
def crd(crd_installed: KubeCluster) -> KubeCluster:
    """The CRD installed and established (the shared session fixture)."""
    return crd_installed


@pytest.fixture(scope="module")
def gpu_nodes(kube_cluster: KubeCluster) -> Iterator[FakeNodes]:
    fake = create_fake_nodes(kube_cluster, ALL_FAKE_NODES)
    yield fake
    delete_fake_nodes(kube_cluster, fake)


async def client_for(cluster: KubeCluster) -> ApiClient:
    configuration = Configuration()
    await async_config.load_kube_config(config_file=cluster.kubeconfig, client_configuration=configuration)
    return ApiClient(configuration)


@pytest.fixture
async def api(kube_cluster: KubeCluster) -> AsyncIterator[ApiClient]:
    client = await client_for(kube_cluster)
    yield client
    await client.close()


@pytest.fixture
async def namespace(api: ApiClient) -> AsyncIterator[str]:
    name = f"ipc-{uuid.uuid4().hex[:8]}"
    body: Any = {"metadata": {"name": name}}
    await CoreV1Api(api).create_namespace(body)
    yield name
    await CoreV1Api(api).delete_namespace(name, grace_period_seconds=0)


@pytest.fixture
async def capacity(api: ApiClient, gpu_nodes: FakeNodes) -> AsyncIterator[CapacityCache]:
    cache = CapacityCache(api, node_label_selector=gpu_nodes.selector)
    await cache.start()
    assert cache.synced
    yield cache
    await cache.stop()


def workload_manifest(
    name: str, namespace: str, accelerator: dict[str, Any] | None = None, **spec: Any
) -> dict[str, Any]:
    model = {"image": "registry.local/model:1", "sizeMb": 500, "cpu": "500m", "memory": "1Gi"}
    model.update(spec.pop("model", {}))
    body: dict[str, Any] = {"model": model, **spec}
    if accelerator is not None:
        body["accelerator"] = accelerator
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceWorkload",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


async def create_workload(api: ApiClient, manifest: dict[str, Any]) -> InferenceWorkload:
    namespace = manifest["metadata"]["namespace"]
    created = await CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
    return InferenceWorkload.model_validate(created)


async def delete_workload(api: ApiClient, workload: InferenceWorkload) -> None:
    await CustomObjectsApi(api).delete_namespaced_custom_object(
        GROUP, VERSION, workload.metadata.namespace, PLURAL, workload.metadata.name
    )


async def raw_get(call: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> dict[str, Any] | None:
    """GET as JSON, None on 404."""
    response = await call(*args, _preload_content=False, **kwargs)
    try:
        body = await response.read()
        status = response.status
    finally:
        response.release()
    if status == 404:
        return None
    assert 200 <= status < 300, (status, body[:300])
    parsed: dict[str, Any] = json.loads(body)
    return parsed


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in (obj.get("metadata") or {}).get("ownerReferences") or [])


async def children(api: ApiClient, namespace: str, label_selector: str) -> tuple[list[Any], list[Any]]:
    apps = AppsV1Api(api)
    core = CoreV1Api(api)
    replica_sets = (await raw_get(apps.list_namespaced_replica_set, namespace, label_selector=label_selector)) or {}
    pods = (await raw_get(core.list_namespaced_pod, namespace, label_selector=label_selector)) or {}
    return list(replica_sets.get("items") or []), list(pods.get("items") or [])


class CallRecorder:
    """Every HTTP request an ApiClient really sends: (method, path, body)."""

    def __init__(self, client: ApiClient) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        original = client.request

        async def recording(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            self.calls.append((method, url.split("?")[0], kwargs.get("body")))
            return await original(method, url, *args, **kwargs)

        client.request = recording  # type: ignore[method-assign]  # instruments the real client's transport

    @property
    def writes(self) -> list[tuple[str, str, Any]]:
        return [c for c in self.calls if c[0] != "GET"]

    def clear(self) -> None:
        self.calls.clear()


# ------------------------------------------------------------------------------------------------ examples


@dataclass(frozen=True)
class Example:
    accelerator: dict[str, Any]
    replicas: int
    resource: str
    amount: str
    lands_on: FakeNode
    expressions: list[dict[str, Any]]
    tolerations: list[dict[str, str]]


A100_80GB = ["NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-80GB-PCIe", "A100-SXM4-80GB", "A100-SXM-80GB", "A100-80GB-PCIe"]


def products(values: list[str]) -> dict[str, Any]:
    return {"key": "nvidia.com/gpu.product", "operator": "In", "values": values}


EXAMPLES = [
    pytest.param(
        Example(
            {"type": "nvidia-a100-80gb", "sharing": "mig", "migProfile": "3g.40gb"},
            1,
            "nvidia.com/mig-3g.40gb",
            "1",
            A100_MIXED,
            [products(A100_80GB)],
            [GPU_TOLERATION, {"key": "nvidia.com/mig-3g.40gb", "operator": "Exists"}],
        ),
        id="a100-80gb-mig-mixed",
    ),
    pytest.param(
        Example(
            {"type": "nvidia-a100-80gb", "sharing": "mig", "migProfile": "1g.10gb"},
            2,
            "nvidia.com/gpu",
            "1",
            A100_SINGLE,
            [products([f"{p}-MIG-1g.10gb" for p in A100_80GB])],
            [GPU_TOLERATION],
        ),
        id="a100-80gb-mig-single",
    ),
    pytest.param(
        Example(
            {"type": "nvidia-l4", "sharing": "time-slicing", "timeSlicingReplicas": 4},
            4,
            "nvidia.com/gpu",
            "1",
            L4_TIME_SLICED,
            [
                products(["NVIDIA-L4", "NVIDIA-L4-SHARED"]),
                {"key": "nvidia.com/gpu.sharing-strategy", "operator": "In", "values": ["time-slicing"]},
                {"key": "nvidia.com/gpu.replicas", "operator": "Lt", "values": ["5"]},
            ],
            [GPU_TOLERATION],
        ),
        id="l4-time-sliced-4-replicas",
    ),
    pytest.param(
        Example({"type": "nvidia-t4"}, 1, "nvidia.com/gpu", "1", T4, [products(["Tesla-T4"])], [GPU_TOLERATION]),
        id="t4-exclusive",
    ),
    pytest.param(
        Example(
            {"type": "nvidia-h100-80gb", "count": 2},
            1,
            "nvidia.com/gpu",
            "2",
            H100,
            [products(["NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-PCIe"])],
            [GPU_TOLERATION],
        ),
        id="h100-exclusive",
    ),
]


def gpu_resources(pod_spec: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    (container,) = pod_spec["containers"]
    resources = container["resources"]

    def pick(part: str) -> dict[str, str]:
        return {k: v for k, v in (resources.get(part) or {}).items() if k.startswith("nvidia.com/")}

    return pick("requests"), pick("limits")


def required_expressions(pod_spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    terms = pod_spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert len(terms) == 1
    expressions: list[dict[str, Any]] = terms[0]["matchExpressions"]
    return expressions


@pytest.mark.cluster
@pytest.mark.parametrize("example", EXAMPLES)
async def test_accelerator_example_lands_with_the_right_scheduling_and_is_garbage_collected(
    crd: KubeCluster,
    api: ApiClient,
    namespace: str,
    gpu_nodes: FakeNodes,
    capacity: CapacityCache,
    example: Example,
) -> None:
    workload = await create_workload(api, workload_manifest("llm", namespace, example.accelerator))
    target = ClusterTarget(api, capacity)

    state = await target.ensure(workload, DesiredTarget(replicas=example.replicas))
    assert state.name == "llm-model"
    assert not state.ready  # nothing can run on fake nodes

    deployment = await raw_get(AppsV1Api(api).read_namespaced_deployment, "llm-model", namespace)
    assert deployment is not None
    assert owned_by(deployment, workload.metadata.uid)
    assert deployment["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "inference-placement"
    assert deployment["spec"]["replicas"] == example.replicas
    template = deployment["spec"]["template"]["spec"]
    assert gpu_resources(template) == ({example.resource: example.amount}, {example.resource: example.amount})
    assert required_expressions(template) == example.expressions
    assert template["tolerations"] == example.tolerations

    # Lands: the required affinity matches exactly the intended fake node, which advertises the resource.
    matching = [
        name
        for name, labels in gpu_nodes.labels.items()
        if all(requirement_matches(e, labels) for e in example.expressions)
    ]
    assert matching == [gpu_nodes.names[example.lands_on.key]]
    assert float(example.lands_on.allocatable[example.resource]) >= float(example.amount)

    service = await raw_get(CoreV1Api(api).read_namespaced_service, "llm-model", namespace)
    assert service is not None and owned_by(service, workload.metadata.uid)

    # The controller-manager turns the Deployment into a ReplicaSet and Pods carrying the same scheduling.
    selector = "placement.inference.dev/workload=llm"

    async def pods_created() -> bool:
        replica_sets, pods = await children(api, namespace, selector)
        return len(replica_sets) == 1 and len(pods) == example.replicas

    await eventually(pods_created, timeout=30, what="ReplicaSet and Pods")
    replica_sets, pods = await children(api, namespace, selector)
    assert owned_by(replica_sets[0], deployment["metadata"]["uid"])
    for pod in pods:
        assert gpu_resources(pod["spec"]) == ({example.resource: example.amount}, {example.resource: example.amount})
        assert required_expressions(pod["spec"]) == example.expressions
        for toleration in example.tolerations:
            assert toleration in pod["spec"]["tolerations"]
        assert not pod["spec"].get("nodeName")  # fake nodes take no Pods

    # Deleting the workload garbage-collects everything through the owner references.
    await delete_workload(api, workload)

    async def all_collected() -> bool:
        replica_sets, pods = await children(api, namespace, selector)
        d = await raw_get(AppsV1Api(api).read_namespaced_deployment, "llm-model", namespace)
        s = await raw_get(CoreV1Api(api).read_namespaced_service, "llm-model", namespace)
        return d is None and s is None and not replica_sets and not pods

    await eventually(all_collected, timeout=90, what="garbage collection of Deployment, Service, ReplicaSet, Pods")


@pytest.mark.cluster
@pytest.mark.parametrize(
    "accelerator",
    [
        pytest.param({"type": "nvidia-a100-80gb", "sharing": "mig", "migProfile": "3g.40gb"}, id="mig-mixed"),
        pytest.param(None, id="cpu-only"),
    ],
)
async def test_second_reconcile_of_an_unchanged_workload_makes_zero_writes(
    crd: KubeCluster,
    kube_cluster: KubeCluster,
    namespace: str,
    api: ApiClient,
    capacity: CapacityCache,
    accelerator: dict[str, Any] | None,
) -> None:
    manifest = workload_manifest(
        "steady",
        namespace,
        accelerator,
        model={"env": [{"name": "MODEL_NAME", "value": "steady"}, {"name": "EMPTY"}], "cpu": "1", "memory": "0.5Gi"},
        cluster={"nodeSelector": {"pool": "inference"}},
    )
    workload = await create_workload(api, manifest)
    target_client = await client_for(kube_cluster)
    recorder = CallRecorder(target_client)
    try:
        # the namespace's autoscalers are listed once here, not again on the steady reconcile below
        target = ClusterTarget(target_client, capacity, image_pull_policy="IfNotPresent", autoscalers_ttl_seconds=600)
        await target.ensure(workload, DesiredTarget(replicas=2))
        # server-side apply creates them: one PATCH each
        assert [(m, p.rsplit("/", 1)[-1]) for m, p, _ in recorder.writes] == [
            ("PATCH", "steady-model"),
            ("PATCH", "steady-model"),
        ]
        assert [p.split("/")[-2] for _, p, _ in recorder.writes] == ["deployments", "services"]
        assert target.writes == 2

        # Let the controller-manager do its part (status, revision annotation): none of it may cause a write.
        async def rolled_out() -> bool:
            d = await raw_get(AppsV1Api(api).read_namespaced_deployment, "steady-model", namespace)
            return d is not None and (d.get("status") or {}).get("observedGeneration") == 1

        await eventually(rolled_out, timeout=30, what="deployment observed")
        before = await raw_get(AppsV1Api(api).read_namespaced_deployment, "steady-model", namespace)
        assert before is not None

        recorder.clear()
        state = await target.ensure(workload, DesiredTarget(replicas=2))
        assert recorder.writes == []
        assert [m for m, _, _ in recorder.calls] == ["GET", "GET"]
        assert target.writes == 2
        after = await raw_get(AppsV1Api(api).read_namespaced_deployment, "steady-model", namespace)
        assert after is not None
        assert after["metadata"]["generation"] == before["metadata"]["generation"]
        assert state.replicas == 0

        # A changed decision is one apply of the rendered Deployment, which changes exactly that field.
        recorder.clear()
        await target.ensure(workload, DesiredTarget(replicas=3))
        ((method, _, body),) = recorder.writes
        assert method == "PATCH" and body["kind"] == "Deployment" and body["spec"]["replicas"] == 3
        changed = await raw_get(AppsV1Api(api).read_namespaced_deployment, "steady-model", namespace)
        assert changed is not None
        assert changed["metadata"]["generation"] == after["metadata"]["generation"] + 1
        assert {k: v for k, v in changed["spec"].items() if k != "replicas"} == {
            k: v for k, v in after["spec"].items() if k != "replicas"
        }
    finally:
        await target_client.close()
        await delete_workload(api, workload)


@pytest.mark.cluster
async def test_someone_elses_deployment_is_never_touched(
    crd: KubeCluster, namespace: str, api: ApiClient, capacity: CapacityCache
) -> None:
    workload = await create_workload(api, workload_manifest("taken", namespace))
    foreign: Any = {
        "metadata": {"name": "taken-model", "labels": {"app": "theirs"}},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "theirs"}},
            "template": {
                "metadata": {"labels": {"app": "theirs"}},
                "spec": {"containers": [{"name": "c", "image": "theirs:1"}]},
            },
        },
    }
    await AppsV1Api(api).create_namespaced_deployment(namespace, foreign)
    before = await raw_get(AppsV1Api(api).read_namespaced_deployment, "taken-model", namespace)
    assert before is not None
    target = ClusterTarget(api, capacity)
    with pytest.raises(NotOwnedError, match="taken-model"):
        await target.ensure(workload, DesiredTarget(replicas=1))
    with pytest.raises(NotOwnedError):
        await target.retire(workload)
    assert target.writes == 0
    after = await raw_get(AppsV1Api(api).read_namespaced_deployment, "taken-model", namespace)
    assert after is not None
    # The deployment controller may have written its status meanwhile; spec and metadata are untouched.
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["spec"] == before["spec"]
    assert after["metadata"]["labels"] == {"app": "theirs"}
    assert "ownerReferences" not in after["metadata"]
    await delete_workload(api, workload)


@pytest.mark.cluster
async def test_labelled_orphan_is_adopted_with_an_owner_reference(
    crd: KubeCluster, namespace: str, api: ApiClient, capacity: CapacityCache
) -> None:
    workload = await create_workload(api, workload_manifest("orphan", namespace, scaling={"minReplicas": 0}))
    target = ClusterTarget(api, capacity)
    await target.ensure(workload, DesiredTarget(replicas=0))
    # Simulate an object whose owner reference was stripped (e.g. restored from a backup).
    patch: Any = AppsV1Api(api).patch_namespaced_deployment  # the stub lacks _content_type; the client has it
    await patch("orphan-model", namespace, {"metadata": {"ownerReferences": None}}, _content_type=MERGE_PATCH)
    target.write_log.clear()
    await target.ensure(workload, DesiredTarget(replicas=0))
    assert [(w.method, w.kind) for w in target.write_log] == [("PATCH", "Deployment")]
    deployment = await raw_get(AppsV1Api(api).read_namespaced_deployment, "orphan-model", namespace)
    assert deployment is not None and owned_by(deployment, workload.metadata.uid)
    await delete_workload(api, workload)


@pytest.mark.cluster
@pytest.mark.node
async def test_ready_when_available_replicas_meet_the_decision_then_retired_after_drain(
    kube_node: KubeCluster, crd: KubeCluster, namespace: str, api: ApiClient, capacity: CapacityCache
) -> None:
    manifest = workload_manifest(
        "served",
        namespace,
        model={
            "image": kube_node.model_server_image,
            "port": 8080,
            "healthPath": "/healthz",
            "cpu": "50m",
            "memory": "64Mi",
        },
        scaling={"minReplicas": 0, "maxReplicas": 2},
    )
    workload = await create_workload(api, manifest)
    target = ClusterTarget(api, capacity, image_pull_policy="Never")
    state = await target.ensure(workload, DesiredTarget(replicas=1))
    assert not state.ready

    async def ready() -> bool:
        observed = await target.observe(workload)
        return observed is not None and observed.ready

    await eventually(ready, timeout=90, what="model server Ready", interval=0.5)
    observed = await target.observe(workload)
    assert observed is not None
    assert observed.replicas == 1
    assert observed.endpoint == f"http://served-model.{namespace}.svc:8080"

    # Retire: first a scale to zero, the Deployment stays until its Pods are gone, then it is deleted.
    assert await target.retire(workload) is False
    scaled = await raw_get(AppsV1Api(api).read_namespaced_deployment, "served-model", namespace)
    assert scaled is not None and scaled["spec"]["replicas"] == 0
    deadline = time.monotonic() + 90
    while not await target.retire(workload):
        assert time.monotonic() < deadline, "retire did not finish"
        await asyncio.sleep(0.5)
    assert await raw_get(AppsV1Api(api).read_namespaced_deployment, "served-model", namespace) is None
    assert await raw_get(CoreV1Api(api).read_namespaced_service, "served-model", namespace) is None
    _, pods = await children(api, namespace, "placement.inference.dev/workload=served")
    assert pods == []
    assert [(w.method, w.kind) for w in target.write_log][-3:] == [
        ("PATCH", "Deployment"),
        ("DELETE", "Deployment"),
        ("DELETE", "Service"),
    ]
    assert await target.observe(workload) is None
    await delete_workload(api, workload)


def test_public_names_are_exported() -> None:
    for name in cluster_module.__all__:
        assert hasattr(cluster_module, name), name


# ------------------------------------------------------------------------------------------------ pure parts


def deployment(replicas: int, available: int, generation: int = 2, observed: int = 2, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "llm-model", "generation": generation},
        "spec": {"replicas": replicas},
        "status": {"availableReplicas": available, "observedGeneration": observed, **status},
    }


def _rolling(wanted: int, *, available: int, total: int, updated: int) -> dict[str, Any]:
    """A Deployment during or after a rolling update: ``total`` replicas, ``updated`` of the current template."""
    obj = deployment(wanted, available)
    obj["status"].update({"replicas": total, "updatedReplicas": updated})
    return obj


@pytest.mark.parametrize(
    ("obj", "ready", "message"),
    [
        pytest.param(deployment(2, 2), True, "2/2 replicas available", id="all-available"),
        pytest.param(deployment(2, 1), False, "1/2 replicas available", id="one-missing"),
        pytest.param(deployment(2, 2, observed=1), False, "new spec not yet observed", id="not-observed"),
        pytest.param(deployment(0, 0), False, "0/0 replicas available", id="scaled-to-zero-serves-nothing"),
        pytest.param(
            _rolling(1, available=2, total=2, updated=1),
            False,
            "1 replica(s) of the previous template",
            id="rolling-update-still-has-an-old-replica",
        ),
        pytest.param(_rolling(1, available=1, total=1, updated=1), True, "1/1", id="rolled-out"),
        pytest.param(
            deployment(
                1,
                0,
                conditions=[{"type": "ReplicaFailure", "status": "True", "message": "exceeded quota: gpu"}],
            ),
            False,
            "exceeded quota: gpu",
            id="replica-failure-surfaces",
        ),
    ],
)
def test_ready_when_available_replicas_meet_the_decision(obj: dict[str, Any], ready: bool, message: str) -> None:
    state = cluster_module.deployment_state(obj, "http://x")
    assert state.ready is ready
    assert state.message is not None and message in state.message


@pytest.mark.parametrize(
    ("scaling", "desired", "expected"),
    [
        pytest.param({}, DesiredTarget(replicas=3), 3, id="decision"),
        pytest.param({"minReplicas": 2}, DesiredTarget(replicas=1), 2, id="min-from-spec"),
        pytest.param({"maxReplicas": 4}, DesiredTarget(replicas=9), 4, id="max-from-spec"),
        pytest.param({"maxReplicas": 4}, DesiredTarget(replicas=9, max_replicas=2), 2, id="budget-cap"),
        pytest.param({"minReplicas": 0}, DesiredTarget(replicas=0), 0, id="zero-allowed"),
    ],
)
def test_replicas_follow_the_decision_within_the_spec(
    scaling: dict[str, Any], desired: DesiredTarget, expected: int
) -> None:
    w = InferenceWorkload.model_validate(workload_manifest("llm", "ml", scaling=scaling))
    assert ClusterTarget.replicas(w, desired) == expected
