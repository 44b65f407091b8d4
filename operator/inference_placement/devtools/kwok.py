"""Fleets of fake GPU nodes kept Ready by KWOK (``e2e/local-cluster.sh up --kwok``), for bench-scale and tests.

Each Node carries what NVIDIA's device plugin and GPU feature discovery publish on a real GPU node pool
(``../shared/DOMAIN.md``; ``policy/gpu_scheduling.py`` and ``targets/capacity.py`` read it): whole GPUs as
``nvidia.com/gpu``, MIG slices as ``nvidia.com/mig-<profile>`` (strategy mixed), time-sliced shares as
``nvidia.com/gpu`` (``<product>-SHARED``) or ``nvidia.com/gpu.shared`` (``renameByDefault``), the GFD labels
(product, count, memory, MIG strategy, sharing strategy, replicas, MIG config), node-pool labels
(``cloud.google.com/gke-nodepool``, ``node.kubernetes.io/instance-type``) and the taint GPU node pools carry
(``nvidia.com/gpu=present:NoSchedule``: the operator's GPU replicas tolerate it, nothing else lands there). The
annotation ``kwok.x-k8s.io/node=fake`` hands the Node to the kwok controller: it makes the Node Ready, renews its
lease and marks the Pods the real kube-scheduler binds there Running and Ready (no kubelet, no containers).

Nodes are created through the API, their capacity through the status subresource as a kubelet would, concurrently
through one async client; every fleet has a run label (``FLEET_LABEL``) so it is listed and deleted as one.

A DRA fleet (``create_fleet(..., dra=True)``) publishes the same GPUs as NVIDIA's DRA driver does instead: no
``nvidia.com/*`` extended resources on the Node, one ResourceSlice per Node (driver ``gpu.nvidia.com``, owned by
the Node) with whole GPUs (``type: gpu``), MIG devices (``type: mig``, ``profile``, ``parentUUID``) and GPUs shared
by consumable capacity (``allowMultipleAllocations``, ``shares: N``: the driver's ``--consumable-shares=N``).
The real kube-scheduler allocates claims from them; nothing prepares the devices (kwok runs no kubelet plugin).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.rest import ApiException

from inference_placement.policy.dra import DRIVER

__all__ = [
    "FLEET_LABEL",
    "GPU_POOLS",
    "KWOK_ANNOTATION",
    "GPU_TAINT",
    "INSTANCE_TYPE_LABEL",
    "MAX_NODES",
    "POOL_LABEL",
    "KwokError",
    "NODE_LIFECYCLE_TAINT_PREFIX",
    "KwokFleet",
    "NodePool",
    "create_fleet",
    "delete_fleet",
    "dra_devices",
    "fleet_plan",
    "node_body",
    "resource_slice_body",
    "wait_ready",
]

KWOK_ANNOTATION: Final = ("kwok.x-k8s.io/node", "fake")
"""The annotation kwok selects its Nodes by (``KWOK_NODE_ANNOTATION`` in e2e/lib/common.sh)."""
FLEET_LABEL: Final = "inference-placement.dev/kwok-fleet"
POOL_LABEL: Final = "cloud.google.com/gke-nodepool"
INSTANCE_TYPE_LABEL: Final = "node.kubernetes.io/instance-type"
MAX_NODES: Final = 6 * 256
GPU_TAINT: Final = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
"""GKE's GPU node-pool taint; ``policy/gpu_scheduling.py`` gives every GPU replica a toleration of it."""


class KwokError(RuntimeError):
    pass


@dataclass(frozen=True)
class NodePool:
    """One node shape as a GPU node pool publishes it (labels, allocatable GPU resources)."""

    name: str
    instance_type: str
    gfd_labels: Mapping[str, str]
    gpu_resources: Mapping[str, str]
    cpu: str = "96"
    memory: str = "1360Gi"
    pods: str = "256"
    nvml_name: str = ""
    """The GPU's NVML name, as NVIDIA's DRA driver publishes it (``productName``; GFD's label has ``-`` for spaces)."""

    def allocatable(self, *, dra: bool = False) -> dict[str, str]:
        """``status.allocatable``; a DRA node advertises no GPU extended resources (no device plugin runs there)."""
        return {
            "cpu": self.cpu,
            "memory": self.memory,
            "pods": self.pods,
            "ephemeral-storage": "2Ti",
            **({} if dra else self.gpu_resources),
        }


def _gfd(product: str, count: int, memory_mib: int, **extra: str) -> dict[str, str]:
    return {
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": product,
        "nvidia.com/gpu.count": str(count),
        "nvidia.com/gpu.memory": str(memory_mib),
        "nvidia.com/gpu.replicas": "1",
        "nvidia.com/gpu.sharing-strategy": "none",
        "nvidia.com/mig.capable": "false",
        "nvidia.com/mig.strategy": "none",
        **extra,
    }


GPU_POOLS: Final[Mapping[str, NodePool]] = {
    # 8 x H100, whole GPUs
    "h100": NodePool(
        "h100",
        "a3-highgpu-8g",
        _gfd("NVIDIA-H100-80GB-HBM3", 8, 81559, **{"nvidia.com/mig.capable": "true"}),
        {"nvidia.com/gpu": "8"},
        cpu="208",
        memory="1872Gi",
        nvml_name="NVIDIA H100 80GB HBM3",
    ),
    # 8 x A100-80GB, MIG strategy mixed, every GPU cut into 7 x 1g.10gb (mig.config all-1g.10gb)
    "a100-mig": NodePool(
        "a100-mig",
        "a2-ultragpu-8g",
        _gfd(
            "NVIDIA-A100-SXM4-80GB",
            8,
            81920,
            **{
                "nvidia.com/mig.capable": "true",
                "nvidia.com/mig.strategy": "mixed",
                "nvidia.com/mig.config": "all-1g.10gb",
                "nvidia.com/mig-1g.10gb.count": "56",
                "nvidia.com/mig-1g.10gb.product": "NVIDIA-A100-SXM4-80GB-MIG-1g.10gb",
                "nvidia.com/mig-1g.10gb.memory": "9728",
            },
        ),
        {"nvidia.com/gpu": "0", "nvidia.com/mig-1g.10gb": "56"},
        cpu="96",
        nvml_name="NVIDIA A100-SXM4-80GB",
    ),
    # 4 x L4 time-sliced 8 ways, resource kept as nvidia.com/gpu (renameByDefault false: product gets -SHARED)
    "l4-ts": NodePool(
        "l4-ts",
        "g2-standard-48",
        _gfd(
            "NVIDIA-L4-SHARED",
            4,
            23034,
            **{
                "nvidia.com/gpu.replicas": "8",
                "nvidia.com/gpu.sharing-strategy": "time-slicing",
                "nvidia.com/device-plugin.config": "l4-time-slicing-8",
            },
        ),
        {"nvidia.com/gpu": "32"},
        cpu="48",
        memory="192Gi",
        nvml_name="NVIDIA L4",
    ),
    # 4 x T4 time-sliced 8 ways with renameByDefault: nvidia.com/gpu.shared
    "t4-shared": NodePool(
        "t4-shared",
        "n1-standard-32",
        _gfd(
            "Tesla-T4-SHARED",
            4,
            15360,
            **{
                "nvidia.com/gpu.replicas": "8",
                "nvidia.com/gpu.sharing-strategy": "time-slicing",
                "nvidia.com/device-plugin.config": "t4-time-slicing-8-renamed",
            },
        ),
        {"nvidia.com/gpu.shared": "32"},
        cpu="32",
        memory="120Gi",
        nvml_name="Tesla T4",
    ),
}
"""The node shapes of a fleet; ``fleet_plan`` splits a node count over them."""

_POOL_SHARES: Final = (("h100", 0.5), ("l4-ts", 0.2), ("t4-shared", 0.15), ("a100-mig", 0.15))


def fleet_plan(nodes: int) -> dict[str, int]:
    """``nodes`` split over the pools (half whole-GPU H100 nodes: they hold 8 replicas each, the shared pools 32-56)."""
    if nodes < len(_POOL_SHARES):
        raise ValueError(f"a fleet needs at least {len(_POOL_SHARES)} nodes (one per pool), got {nodes}")
    plan = {name: max(1, int(nodes * share)) for name, share in _POOL_SHARES}
    plan["h100"] += nodes - sum(plan.values())
    return plan


def node_body(name: str, pool: NodePool, fleet: str, index: int) -> dict[str, Any]:
    """The Node object (status comes separately, through the status subresource)."""
    labels = {
        **pool.gfd_labels,
        FLEET_LABEL: fleet,
        POOL_LABEL: pool.name,
        INSTANCE_TYPE_LABEL: pool.instance_type,
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
    }
    # one /24 per node of 10.250.0.0-10.255.255.255 for the Pod IPs kwok hands out (its default pool is one /24)
    if not 0 <= index < MAX_NODES:
        raise ValueError(f"node index {index} outside 0..{MAX_NODES - 1}")
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {KWOK_ANNOTATION[0]: KWOK_ANNOTATION[1], "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {"taints": [dict(GPU_TAINT)], "podCIDR": f"10.{250 + index // 256}.{index % 256}.0/24"},
    }


def _attributes(pool: NodePool, kind: str, uuid_: str) -> dict[str, Any]:
    return {
        "type": {"string": kind},
        "uuid": {"string": uuid_},
        "productName": {"string": pool.nvml_name},
        "brand": {"string": "Nvidia"},
        "driverVersion": {"version": "580.95.5"},
    }


def dra_devices(pool: NodePool, node: str) -> list[dict[str, Any]]:
    """The devices NVIDIA's DRA driver would publish for this pool's GPUs (GFD labels give count, memory, sharing)."""
    labels = pool.gfd_labels
    gpus = int(labels["nvidia.com/gpu.count"])
    memory = f"{labels['nvidia.com/gpu.memory']}Mi"
    devices: list[dict[str, Any]] = []
    mig = {
        r[len("nvidia.com/mig-") :]: int(n) for r, n in pool.gpu_resources.items() if r.startswith("nvidia.com/mig-")
    }
    mig_memory = {p: f"{labels.get(f'nvidia.com/mig-{p}.memory', '0')}Mi" for p in mig}
    shares = int(labels.get("nvidia.com/gpu.replicas", "1"))
    for gpu in range(gpus):
        parent = f"GPU-{node}-{gpu}"
        if mig:
            for profile, total in mig.items():
                for slot in range(total // gpus):
                    attributes = _attributes(pool, "mig", f"MIG-{node}-{gpu}-{slot}")
                    attributes["profile"] = {"string": profile}
                    attributes["parentUUID"] = {"string": parent}
                    name = f"gpu-{gpu}-mig-{profile.replace('.', '')}-{slot}"
                    devices.append(
                        {"name": name, "attributes": attributes, "capacity": {"memory": {"value": mig_memory[profile]}}}
                    )
            continue
        device: dict[str, Any] = {
            "name": f"gpu-{gpu}",
            "attributes": _attributes(pool, "gpu", parent),
            "capacity": {"memory": {"value": memory}},
        }
        if labels.get("nvidia.com/gpu.sharing-strategy") == "time-slicing" and shares > 1:
            # consumable shares (--consumable-shares=N): each claim takes one share unless it asks for more
            device["allowMultipleAllocations"] = True
            device["capacity"] = {
                "memory": {
                    "value": memory,
                    "requestPolicy": {"default": "0", "validRange": {"min": "0", "max": memory, "step": "1Mi"}},
                },
                "shares": {
                    "value": str(shares),
                    "requestPolicy": {"default": "1", "validRange": {"min": "1", "max": str(shares), "step": "1"}},
                },
            }
        devices.append(device)
    return devices


def resource_slice_body(node: dict[str, Any], pool: NodePool, fleet: str) -> dict[str, Any]:
    """The ResourceSlice of one Node's GPUs (owned by the Node, as the driver's kubelet plugin makes it)."""
    name = str(node["metadata"]["name"])
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {
            "name": f"{name}-{DRIVER}",
            "labels": {FLEET_LABEL: fleet},
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Node", "name": name, "uid": node["metadata"]["uid"], "controller": True}
            ],
        },
        "spec": {
            "driver": DRIVER,
            "nodeName": name,
            "pool": {"name": name, "generation": 1, "resourceSliceCount": 1},
            "devices": dra_devices(pool, name),
        },
    }


@dataclass
class KwokFleet:
    """Fake GPU nodes created by ``create_fleet``."""

    fleet: str
    pools: dict[str, list[str]] = field(default_factory=dict)
    """Pool name -> Node names."""
    dra: bool = False
    """GPUs published as DRA ResourceSlices instead of extended resources."""
    create_seconds: float = 0.0
    ready_seconds: float = 0.0

    @property
    def selector(self) -> str:
        return f"{FLEET_LABEL}={self.fleet}"

    @property
    def names(self) -> list[str]:
        return [n for names in self.pools.values() for n in names]

    def capacity(self) -> dict[str, int]:
        """Total allocatable GPU resources of the fleet, per resource name."""
        total: dict[str, int] = {}
        for pool, names in self.pools.items():
            for resource, value in GPU_POOLS[pool].gpu_resources.items():
                total[resource] = total.get(resource, 0) + int(value) * len(names)
        return {k: v for k, v in total.items() if v}


async def _retrying(call: Any, *args: Any, **kwargs: Any) -> Any:
    for attempt in range(6):
        try:
            return await call(*args, **kwargs)
        except ApiException as err:
            if err.status in (429, 500, 503, 504) and attempt < 5:
                await asyncio.sleep(0.5 * (attempt + 1))
                continue
            raise
    raise AssertionError("unreachable")


async def create_fleet(
    api: k8s.ApiClient,
    plan: Mapping[str, int],
    *,
    fleet: str | None = None,
    concurrency: int = 16,
    ready_timeout: float = 300.0,
    dra: bool = False,
) -> KwokFleet:
    """Create ``plan`` (pool -> node count) and wait until kwok has made every Node Ready and the node lifecycle
    controller has lifted its ``not-ready`` taint (each can take a Pod: a Pod created the moment a Node turned Ready
    can only go to the others); ``dra``: the GPUs as DRA ResourceSlices of NVIDIA's driver instead of extended
    resources.

    Raises ``KwokError`` when the Nodes do not become Ready (kwok not running: ``e2e/local-cluster.sh up --kwok``)."""
    core = k8s.CoreV1Api(api)
    resource = k8s.ResourceV1Api(api)
    result = KwokFleet(fleet=fleet or uuid.uuid4().hex[:8], dra=dra)
    slots = asyncio.Semaphore(concurrency)
    jobs: list[tuple[str, NodePool, int]] = []
    index = 0
    for pool_name, count in plan.items():
        pool = GPU_POOLS[pool_name]
        names = [f"kwok-{result.fleet}-{pool_name}-{i:04d}" for i in range(count)]
        result.pools[pool_name] = names
        for name in names:
            jobs.append((name, pool, index))
            index += 1

    async def one(name: str, pool: NodePool, i: int) -> None:
        async with slots:
            body = node_body(name, pool, result.fleet, i)
            try:
                await _retrying(core.create_node, body, _preload_content=False)
            except ApiException as err:
                if err.status != 409:
                    raise
            allocatable = pool.allocatable(dra=dra)
            status = {"status": {"capacity": allocatable, "allocatable": allocatable}}
            await _retrying(core.patch_node_status, name, status, _preload_content=False)
            if dra:
                node = await _retrying(core.read_node, name, _preload_content=False)
                published = resource_slice_body(json.loads(await node.read()), pool, result.fleet)
                try:
                    await _retrying(resource.create_resource_slice, published, _preload_content=False)
                except ApiException as err:
                    if err.status != 409:
                        raise

    started = time.monotonic()
    try:
        await asyncio.gather(*(one(*job) for job in jobs))
        result.create_seconds = time.monotonic() - started
        await wait_ready(api, result, timeout=ready_timeout)
    except BaseException:
        await delete_fleet(api, result)  # nothing is left behind by a fleet that did not come up
        raise
    result.ready_seconds = time.monotonic() - started
    return result


NODE_LIFECYCLE_TAINT_PREFIX: Final = "node.kubernetes.io/"
"""The node lifecycle controller's taints (``not-ready``, ``unreachable``, ...): it lifts ``not-ready`` a moment
(its monitor period, 5 s by default) after the Node turned Ready, and until then nothing is scheduled there."""


def _schedulable(node: Any) -> bool:
    ready = any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))
    lifecycle = any(t.key.startswith(NODE_LIFECYCLE_TAINT_PREFIX) for t in node.spec.taints or [])
    return ready and not lifecycle


async def _ready_count(core: k8s.CoreV1Api, selector: str) -> tuple[int, int]:
    nodes = await core.list_node(label_selector=selector)
    return sum(_schedulable(n) for n in nodes.items), len(nodes.items)


async def wait_ready(api: k8s.ApiClient, fleet: KwokFleet, *, timeout: float) -> None:
    core = k8s.CoreV1Api(api)
    want = len(fleet.names)
    deadline = time.monotonic() + timeout
    ready = total = 0
    while time.monotonic() < deadline:
        ready, total = await _ready_count(core, fleet.selector)
        if ready >= want:
            return
        await asyncio.sleep(1.0)
    raise KwokError(
        f"{ready} of {want} fake nodes Ready after {timeout:.0f}s ({total} listed): is kwok running? "
        "(e2e/local-cluster.sh up --kwok; its log: <run dir>/logs/kwok.log)"
    )


async def delete_fleet(api: k8s.ApiClient, fleet: KwokFleet | str, *, concurrency: int = 16) -> int:
    """Delete every Node of the fleet and its ResourceSlices (by its run label); returns how many Nodes were deleted."""
    core = k8s.CoreV1Api(api)
    name = fleet.fleet if isinstance(fleet, KwokFleet) else fleet
    if not isinstance(fleet, KwokFleet) or fleet.dra:
        with contextlib.suppress(ApiException):  # absent API: no slices
            await k8s.ResourceV1Api(api).delete_collection_resource_slice(label_selector=f"{FLEET_LABEL}={name}")
    nodes = await core.list_node(label_selector=f"{FLEET_LABEL}={name}")
    slots = asyncio.Semaphore(concurrency)

    async def one(node: str) -> None:
        async with slots:
            try:
                await _retrying(core.delete_node, node, _preload_content=False)
            except ApiException as err:
                if err.status != 404:
                    raise

    names: Sequence[str] = [n.metadata.name for n in nodes.items]
    await asyncio.gather(*(one(n) for n in names))
    return len(names)
