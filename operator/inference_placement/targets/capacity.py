"""What the cluster can offer: Nodes (labels, ``status.allocatable``) minus the requests of the Pods bound to them,
and where GPUs are claimed through DRA, the devices ResourceSlices publish minus what allocated ResourceClaims hold.

``CapacityCache`` keeps that in memory from one list + watch per kind (Nodes, bound non-terminated Pods; with DRA
also DeviceClasses, ResourceSlices and ResourceClaims), resuming
from the last resourceVersion, re-listing on 410 Gone and backing off on errors; reading it (``snapshot``,
``check``, ``gpu_facts``) makes no API call. ``CapacityIndex`` is the pure part: it folds objects into per-node
sums and fills the policy's ``ClusterCapacity``; whether a workload fits is ``policy.capacity.replica_fit``'s
answer, the same one the policy's feasibility gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

import aiohttp
from kubernetes_asyncio.client import ApiClient, CoreV1Api, ResourceV1Api

from inference_placement.api.quantity import parse_quantity
from inference_placement.api.spec import InferenceWorkloadSpec
from inference_placement.policy.capacity import MEMORY, ClusterCapacity, Fit, NodeCapacity, replica_fit
from inference_placement.policy.dra import DRIVER, DeviceKeys, DRAClasses, GPURequest, device_keys
from inference_placement.policy.gpu_scheduling import GPUNodeFacts, NodeView
from inference_placement.targets.cluster_render import MANAGED_BY, MANAGED_BY_LABEL, WORKLOAD_LABEL

__all__ = [
    "CapacityCache",
    "CapacityIndex",
    "ClaimUsage",
    "PodUsage",
    "PublishedSlice",
    "claim_usage_from_object",
    "slice_from_object",
    "node_view_from_object",
    "pod_usage_from_object",
    "ListFunc",
]

log = logging.getLogger(__name__)

_MIB: Final = 2.0**20
_TERMINATED_PHASES: Final = frozenset({"Succeeded", "Failed"})
_BOUND_AND_RUNNING: Final = "spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed"


# ------------------------------------------------------------------------------------------------ pure folding


@dataclass(frozen=True)
class PodUsage:
    """Resources one bound, non-terminated Pod holds on its node."""

    node: str
    requests: Mapping[str, float]
    owner: str | None = None
    """``<namespace>/<workload>`` when the Pod belongs to a workload of ours (its own usage is not a competitor)."""


def _number(quantity: Any) -> float:
    return float(parse_quantity(quantity))


def node_view_from_object(obj: Mapping[str, Any]) -> NodeView:
    """A Node as the API returns it (JSON) -> the parts capacity reads."""
    metadata = obj.get("metadata") or {}
    allocatable: dict[str, float] = {}
    for resource, quantity in ((obj.get("status") or {}).get("allocatable") or {}).items():
        try:
            allocatable[resource] = _number(quantity)
        except ValueError:
            log.warning("node %s: unparsable allocatable %s=%r", metadata.get("name"), resource, quantity)
    return NodeView(
        name=str(metadata.get("name", "")),
        labels=dict(metadata.get("labels") or {}),
        allocatable=allocatable,
        unschedulable=bool((obj.get("spec") or {}).get("unschedulable", False)),
    )


def _container_requests(container: Mapping[str, Any]) -> dict[str, Decimal]:
    resources = container.get("resources") or {}
    # The apiserver defaults requests from limits; an object read before defaulting may only have limits.
    merged = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
    out: dict[str, Decimal] = {}
    for resource, quantity in merged.items():
        try:
            out[resource] = parse_quantity(quantity)
        except ValueError:
            continue
    return out


def pod_usage_from_object(obj: Mapping[str, Any]) -> PodUsage | None:
    """A Pod (JSON) -> what it holds on its node; None when unbound or terminated (it holds nothing)."""
    spec = obj.get("spec") or {}
    node = spec.get("nodeName")
    phase = (obj.get("status") or {}).get("phase")
    if not node or phase in _TERMINATED_PHASES:
        return None
    # Effective request, as the scheduler computes it: max(sum of containers, largest init container) + overhead.
    total: dict[str, Decimal] = {}
    for container in spec.get("containers") or []:
        for resource, amount in _container_requests(container).items():
            total[resource] = total.get(resource, Decimal(0)) + amount
    for init in spec.get("initContainers") or []:
        for resource, amount in _container_requests(init).items():
            total[resource] = max(total.get(resource, Decimal(0)), amount)
    for resource, quantity in (spec.get("overhead") or {}).items():
        with contextlib.suppress(ValueError):
            total[resource] = total.get(resource, Decimal(0)) + parse_quantity(quantity)
    metadata = obj.get("metadata") or {}
    labels = metadata.get("labels") or {}
    owner = None
    if labels.get(MANAGED_BY_LABEL) == MANAGED_BY and labels.get(WORKLOAD_LABEL):
        owner = f"{metadata.get('namespace', '')}/{labels[WORKLOAD_LABEL]}"
    return PodUsage(node=str(node), requests={k: float(v) for k, v in total.items()}, owner=owner)


@dataclass(frozen=True)
class ClaimUsage:
    """The devices one allocated ResourceClaim holds: (driver, pool, device) -> shares consumed (None: the device)."""

    devices: Mapping[tuple[str, str, str], float | None]
    owner: str | None = None
    """``<namespace>/<workload>`` when the claim was made from one of our ResourceClaimTemplates."""


def claim_usage_from_object(obj: Mapping[str, Any]) -> ClaimUsage | None:
    """A ResourceClaim (JSON) -> the devices its allocation holds; None while it is not allocated."""
    allocation = (obj.get("status") or {}).get("allocation") or {}
    results = (allocation.get("devices") or {}).get("results") or []
    devices: dict[tuple[str, str, str], float | None] = {}
    for result in results:
        key = (str(result.get("driver", "")), str(result.get("pool", "")), str(result.get("device", "")))
        consumed = (result.get("consumedCapacity") or {}).get("shares")
        shares: float | None = None
        if consumed is not None:
            with contextlib.suppress(ValueError):
                shares = _number(consumed)
        elif result.get("shareID"):
            shares = 1.0  # a share of a device that allows several allocations, consumed capacity unrecorded
        previous = devices.get(key)
        devices[key] = shares if previous is None or shares is None else previous + shares
    if not devices:
        return None
    metadata = obj.get("metadata") or {}
    labels = metadata.get("labels") or {}
    owner = None
    if labels.get(MANAGED_BY_LABEL) == MANAGED_BY and labels.get(WORKLOAD_LABEL):
        owner = f"{metadata.get('namespace', '')}/{labels[WORKLOAD_LABEL]}"
    return ClaimUsage(devices=devices, owner=owner)


@dataclass(frozen=True)
class PublishedSlice:
    """The GPU devices one ResourceSlice of NVIDIA's driver publishes on one node, with their capacity keys."""

    node: str
    pool: str
    devices: Mapping[str, DeviceKeys]


def slice_from_object(obj: Mapping[str, Any]) -> PublishedSlice | None:
    """A ResourceSlice (JSON) of NVIDIA's GPU driver on one node -> its devices' capacity keys."""
    spec = obj.get("spec") or {}
    node = spec.get("nodeName")
    if spec.get("driver") != DRIVER or not node:
        return None
    pool = str((spec.get("pool") or {}).get("name", ""))
    devices = {str(d.get("name", "")): device_keys(d) for d in spec.get("devices") or []}
    return PublishedSlice(node=str(node), pool=pool, devices={k: v for k, v in devices.items() if v.keys})


class CapacityIndex:
    """Nodes and bound Pods folded into per-node sums (pure; fed by ``CapacityCache``'s watches).

    ``snapshot`` turns them into the policy's ``ClusterCapacity``, once per change (a node's entry is rebuilt only
    when the node or a Pod on it changed); whether a workload fits is ``policy.capacity.replica_fit``'s answer.
    """

    def __init__(self, *, gpu_request: GPURequest = "auto", dra_classes: DRAClasses | None = None) -> None:
        self.gpu_request: GPURequest = gpu_request
        """``extendedResources``, ``dra``, or ``auto``: DRA for the kinds whose DeviceClass exists."""
        self.dra_classes = dra_classes if dra_classes is not None else DRAClasses()
        """The DeviceClass names GPUs are claimed through (NVIDIA's by default)."""
        self._device_classes: set[str] = set()
        self._slices: dict[str, PublishedSlice] = {}
        self._node_slices: dict[str, set[str]] = {}
        """Node -> names of the ResourceSlices publishing its devices."""
        self._devices: dict[tuple[str, str], tuple[str, DeviceKeys]] = {}
        """(pool, device) -> (its node, what it counts for)."""
        self._claims: dict[str, ClaimUsage] = {}
        self._whole: dict[tuple[str, str], int] = {}
        """(pool, device) -> allocations of the whole device."""
        self._shares: dict[tuple[str, str], float] = {}
        """(pool, device) -> shares allocated of a device that allows several allocations."""
        self._owned_claims: dict[str, dict[str, ClaimUsage]] = {}
        """``namespace/workload`` -> its allocated claims (their devices are not a competitor for it)."""
        self._nodes: dict[str, NodeView] = {}
        self._pods: dict[str, PodUsage] = {}
        self._requested: dict[str, dict[str, float]] = {}
        self._owned: dict[str, dict[str, PodUsage]] = {}
        self._node_capacity: dict[str, NodeCapacity] = {}
        self._snapshots: dict[bool, ClusterCapacity] = {}
        self.version = 0
        """Bumped on every change; equal versions mean equal answers."""

    # -- updates
    def _changed(self) -> None:
        """A new version: snapshots are rebuilt (the nodes' entries were dropped where they changed)."""
        self.version += 1
        self._snapshots.clear()

    def replace_nodes(self, nodes: Iterable[NodeView]) -> None:
        self._nodes = {n.name: n for n in nodes}
        self._node_capacity.clear()
        self._changed()

    def upsert_node(self, node: NodeView) -> None:
        if self._nodes.get(node.name) != node:
            self._nodes[node.name] = node
            self._node_capacity.pop(node.name, None)
            self._changed()

    def remove_node(self, name: str) -> None:
        if self._nodes.pop(name, None) is not None:
            self._node_capacity.pop(name, None)
            self._changed()

    def replace_pods(self, pods: Mapping[str, PodUsage]) -> None:
        self._pods = {}
        self._requested = {}
        self._owned = {}
        self._node_capacity.clear()
        for key, usage in pods.items():
            self._add_pod(key, usage)
        self._changed()

    def upsert_pod(self, key: str, usage: PodUsage | None) -> None:
        """Record what Pod ``namespace/name`` holds now (None: nothing, e.g. it terminated)."""
        if self._pods.get(key) == usage:
            return
        self._remove_pod(key)
        if usage is not None:
            self._add_pod(key, usage)
        self._changed()

    def remove_pod(self, key: str) -> None:
        if key in self._pods:
            self._remove_pod(key)
            self._changed()

    def _add_pod(self, key: str, usage: PodUsage) -> None:
        self._pods[key] = usage
        self._node_capacity.pop(usage.node, None)
        sums = self._requested.setdefault(usage.node, {})
        for resource, amount in usage.requests.items():
            sums[resource] = sums.get(resource, 0.0) + amount
        if usage.owner is not None:
            self._owned.setdefault(usage.owner, {})[key] = usage

    def _remove_pod(self, key: str) -> None:
        usage = self._pods.pop(key, None)
        if usage is None:
            return
        self._node_capacity.pop(usage.node, None)
        sums = self._requested.get(usage.node, {})
        for resource, amount in usage.requests.items():
            left = sums.get(resource, 0.0) - amount
            if abs(left) < 1e-9:
                sums.pop(resource, None)
            else:
                sums[resource] = left
        if not sums:
            self._requested.pop(usage.node, None)
        if usage.owner is not None:
            owned = self._owned.get(usage.owner, {})
            owned.pop(key, None)
            if not owned:
                self._owned.pop(usage.owner, None)

    # -- DRA updates
    def replace_device_classes(self, names: Iterable[str]) -> None:
        self._device_classes = set(names)
        self._changed()

    def upsert_device_class(self, name: str, present: bool) -> None:
        if (name in self._device_classes) != present:
            if present:
                self._device_classes.add(name)
            else:
                self._device_classes.discard(name)
            self._changed()

    def _add_slice(self, name: str, published: PublishedSlice) -> None:
        self._slices[name] = published
        self._node_slices.setdefault(published.node, set()).add(name)
        for device, counted in published.devices.items():
            self._devices[(published.pool, device)] = (published.node, counted)
        self._node_capacity.pop(published.node, None)

    def _remove_slice(self, name: str) -> None:
        published = self._slices.pop(name, None)
        if published is None:
            return
        names = self._node_slices.get(published.node, set())
        names.discard(name)
        if not names:
            self._node_slices.pop(published.node, None)
        for device in published.devices:
            if self._devices.get((published.pool, device), (None,))[0] == published.node:
                del self._devices[(published.pool, device)]
        self._node_capacity.pop(published.node, None)

    def replace_slices(self, slices: Mapping[str, PublishedSlice]) -> None:
        for name in list(self._slices):
            self._remove_slice(name)
        for name, published in slices.items():
            self._add_slice(name, published)
        self._changed()

    def upsert_slice(self, name: str, published: PublishedSlice | None) -> None:
        if self._slices.get(name) == published:
            return
        self._remove_slice(name)
        if published is not None:
            self._add_slice(name, published)
        self._changed()

    def _count_claim(self, key: str, usage: ClaimUsage, sign: int) -> None:
        """Add (``sign`` 1) or take away (-1) what one claim holds, and forget the nodes' entries it touches."""
        for (driver, pool, device), shares in usage.devices.items():
            if driver != DRIVER:
                continue
            where = (pool, device)
            if shares is None:
                self._whole[where] = self._whole.get(where, 0) + sign
                if self._whole[where] <= 0:
                    del self._whole[where]
            else:
                left = self._shares.get(where, 0.0) + sign * shares
                if abs(left) < 1e-9:
                    self._shares.pop(where, None)
                else:
                    self._shares[where] = left
            located = self._devices.get(where)
            if located is not None:
                self._node_capacity.pop(located[0], None)
        if usage.owner is not None:
            owned = self._owned_claims.setdefault(usage.owner, {})
            if sign > 0:
                owned[key] = usage
            else:
                owned.pop(key, None)
                if not owned:
                    del self._owned_claims[usage.owner]

    def replace_claims(self, claims: Mapping[str, ClaimUsage]) -> None:
        for key, usage in self._claims.items():
            self._count_claim(key, usage, -1)
        self._claims = dict(claims)
        for key, usage in self._claims.items():
            self._count_claim(key, usage, 1)
        self._changed()

    def upsert_claim(self, key: str, usage: ClaimUsage | None) -> None:
        old = self._claims.get(key)
        if old == usage:
            return
        if old is not None:
            self._count_claim(key, old, -1)
            del self._claims[key]
        if usage is not None:
            self._claims[key] = usage
            self._count_claim(key, usage, 1)
        self._changed()

    def dra(self) -> DRAClasses | None:
        """The DeviceClasses GPUs are claimed through, or None where extended resources are requested."""
        if self.gpu_request == "extendedResources":
            return None
        wanted = self.dra_classes
        if self.gpu_request == "dra":
            return wanted
        gpu = wanted.gpu if wanted.gpu in self._device_classes else None
        mig = wanted.mig if wanted.mig in self._device_classes else None
        if gpu is None and mig is None:
            return None
        return DRAClasses(gpu=gpu, mig=mig, sharing_strategy=wanted.sharing_strategy)

    def _dra_capacity(self, node: str) -> tuple[dict[str, float], dict[str, float]]:
        """(allocatable, free) of the node's published GPU devices under their capacity keys."""
        allocatable: dict[str, float] = {}
        free: dict[str, float] = {}
        for name in self._node_slices.get(node, ()):
            published = self._slices[name]
            for device, counted in published.devices.items():
                where = (published.pool, device)
                whole = self._whole.get(where, 0) > 0
                taken = self._shares.get(where, 0.0)
                for key, amount in counted.keys.items():
                    allocatable[key] = allocatable.get(key, 0.0) + amount
                    if whole or (taken > 0 and not counted.shared):
                        left = 0.0
                    else:
                        left = max(0.0, amount - taken)
                    free[key] = free.get(key, 0.0) + left
        return allocatable, free

    def _held_devices(self, owner: str) -> dict[str, dict[str, float]]:
        """What the claims of workload ``owner`` hold of DRA devices, per node, under the capacity keys."""
        out: dict[str, dict[str, float]] = {}
        for usage in self._owned_claims.get(owner, {}).values():
            for (driver, pool, device), shares in usage.devices.items():
                located = self._devices.get((pool, device)) if driver == DRIVER else None
                if located is None:
                    continue
                node, counted = located
                sums = out.setdefault(node, {})
                for key, amount in counted.keys.items():
                    held = amount if shares is None or not counted.shared else min(amount, shares)
                    sums[key] = sums.get(key, 0.0) + held
        return out

    # -- reads
    @property
    def nodes(self) -> Mapping[str, NodeView]:
        return self._nodes

    def requested(self, node: str) -> Mapping[str, float]:
        return self._requested.get(node, {})

    def gpu_facts(self) -> GPUNodeFacts:
        """MIG strategy and time-slicing resource names per GPU product, from the schedulable nodes."""
        return self.snapshot().gpu_facts

    def _capacity_of(self, node: NodeView) -> NodeCapacity:
        cached = self._node_capacity.get(node.name)
        if cached is None:
            requested = self._requested.get(node.name, {})
            allocatable = dict(node.allocatable)
            free = {r: max(0.0, a - requested.get(r, 0.0)) for r, a in allocatable.items()}
            if MEMORY in allocatable:  # bytes -> MiB, the policy's unit
                allocatable[MEMORY] /= _MIB
                free[MEMORY] /= _MIB
            if node.name in self._node_slices:
                published, unclaimed = self._dra_capacity(node.name)
                allocatable.update(published)
                free.update(unclaimed)
            cached = NodeCapacity(
                name=node.name,
                labels=node.labels,
                allocatable=allocatable,
                free=free,
                schedulable=not node.unschedulable,
            )
            self._node_capacity[node.name] = cached
        return cached

    def snapshot(self, *, known: bool = True) -> ClusterCapacity:
        """Every node's labels, allocatable and free capacity (cached until a Node or a bound Pod changes)."""
        cached = self._snapshots.get(known)
        if cached is None:
            cached = ClusterCapacity(
                nodes=tuple(self._capacity_of(n) for n in self._nodes.values()), known=known, dra=self.dra()
            )
            self._snapshots[known] = cached
        return cached

    def held(self, owner: str | None) -> dict[str, dict[str, float]]:
        """What the Pods of workload ``owner`` (``namespace/name``) hold, per node, in ``ClusterCapacity`` units."""
        out: dict[str, dict[str, float]] = {}
        for usage in self._owned.get(owner, {}).values() if owner else ():
            sums = out.setdefault(usage.node, {})
            for name, amount in usage.requests.items():
                sums[name] = sums.get(name, 0.0) + (amount / _MIB if name == MEMORY else amount)
        if owner and owner in self._owned_claims:
            for node, devices in self._held_devices(owner).items():
                sums = out.setdefault(node, {})
                for key, amount in devices.items():
                    sums[key] = sums.get(key, 0.0) + amount
        return out

    def assess(self, spec: InferenceWorkloadSpec, *, owner: str | None = None, known: bool = True) -> Fit:
        """Whether ``max(1, minReplicas)`` replicas fit on the nodes the workload may use, with the numbers.

        ``owner`` (``namespace/name``) excludes the workload's own Pods: the slice it already holds is not taken.
        """
        return replica_fit(spec, self.snapshot(known=known), self.held(owner))


# ---------------------------------------------------------------------------------------------- list + watch


class _Gone(Exception):
    """The resourceVersion we resume from is too old (HTTP 410): list again."""


class _WatchError(Exception):
    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


ListFunc = Callable[..., Awaitable[Any]]


def _required(core: CoreV1Api | None) -> CoreV1Api:
    assert core is not None
    return core


@dataclass
class _Feed:
    """One list+watch of one kind."""

    kind: str
    list_func: ListFunc
    selectors: dict[str, str]
    on_list: Callable[[list[dict[str, Any]]], None]
    on_event: Callable[[str, dict[str, Any]], None]
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    resource_version: str | None = None
    optional: bool = False
    """An API the cluster may not serve (``resource.k8s.io/v1`` before 1.34): a 404 reads as no objects."""


class CapacityCache:
    """Nodes and bound Pods (and, unless ``gpu_request`` is ``extendedResources``, DeviceClasses, ResourceSlices and
    ResourceClaims), kept current by watches; every read is served from memory.

    ``node_label_selector`` limits which Nodes count (e.g. one node pool). ``gpu_request`` and ``dra_classes``: how
    GPUs are requested (``policy/dra.py``; ``auto``: through DRA where the DeviceClasses exist). Counters
    ``list_requests`` and ``watch_requests`` show that reads cost no API calls.
    """

    def __init__(
        self,
        api_client: ApiClient | None,
        *,
        node_label_selector: str | None = None,
        watch_timeout_seconds: int = 300,
        page_size: int = 500,
        backoff_initial_seconds: float = 0.5,
        backoff_max_seconds: float = 30.0,
        sync_timeout_seconds: float = 30.0,
        list_nodes: ListFunc | None = None,
        list_pods: ListFunc | None = None,
        gpu_request: GPURequest = "auto",
        dra_classes: DRAClasses | None = None,
        list_dra: tuple[ListFunc, ListFunc, ListFunc] | None = None,
    ) -> None:
        """``list_nodes`` / ``list_pods`` replace ``CoreV1Api.list_node`` / ``list_pod_for_all_namespaces``, and
        ``list_dra`` ``ResourceV1Api``'s ``list_device_class``, ``list_resource_slice`` and
        ``list_resource_claim_for_all_namespaces`` (same keyword arguments, ``_preload_content=False`` answers);
        tests use them to script the API."""
        if api_client is None and (list_nodes is None or list_pods is None):
            raise ValueError("CapacityCache needs an api_client unless both list functions are given")
        core = CoreV1Api(api_client) if api_client is not None else None
        self.index = CapacityIndex(gpu_request=gpu_request, dra_classes=dra_classes)
        self.node_label_selector = node_label_selector
        self.watch_timeout_seconds = watch_timeout_seconds
        self.page_size = page_size
        self.backoff_initial_seconds = backoff_initial_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self.sync_timeout_seconds = sync_timeout_seconds
        self.list_requests = 0
        self.watch_requests = 0
        self.relists_after_gone = 0
        self.errors = 0
        self._tasks: list[asyncio.Task[None]] = []
        node_selectors = {"label_selector": node_label_selector} if node_label_selector else {}
        nodes_func = list_nodes if list_nodes is not None else _required(core).list_node
        pods_func = list_pods if list_pods is not None else _required(core).list_pod_for_all_namespaces
        self._feeds: tuple[_Feed, ...] = (
            _Feed("nodes", nodes_func, node_selectors, self._on_node_list, self._on_node_event),
            _Feed("pods", pods_func, {"field_selector": _BOUND_AND_RUNNING}, self._on_pod_list, self._on_pod_event),
        )
        if gpu_request != "extendedResources" and (list_dra is not None or api_client is not None):
            if list_dra is None:
                resource = ResourceV1Api(api_client)
                list_dra = (
                    resource.list_device_class,
                    resource.list_resource_slice,
                    resource.list_resource_claim_for_all_namespaces,
                )
            classes, slices, claims = list_dra
            self._feeds += (
                _Feed("deviceclasses", classes, {}, self._on_class_list, self._on_class_event, optional=True),
                _Feed("resourceslices", slices, {}, self._on_slice_list, self._on_slice_event, optional=True),
                _Feed("resourceclaims", claims, {}, self._on_claim_list, self._on_claim_event, optional=True),
            )

    # -- lifecycle
    async def start(self) -> None:
        """Start the watches and wait (up to ``sync_timeout_seconds``) for the first full list of both kinds."""
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._run(f), name=f"capacity-{f.kind}") for f in self._feeds]
        if not await self.wait_synced(self.sync_timeout_seconds):
            log.warning("cluster capacity not read within %.0fs; it stays unknown", self.sync_timeout_seconds)

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def synced(self) -> bool:
        return all(f.synced.is_set() for f in self._feeds)

    async def wait_synced(self, timeout: float | None = None) -> bool:
        """True once Nodes and Pods have both been listed; False if ``timeout`` passes first."""
        try:
            await asyncio.wait_for(asyncio.gather(*(f.synced.wait() for f in self._feeds)), timeout)
        except TimeoutError:
            return False
        return True

    # -- reads (no API calls)
    def snapshot(self) -> ClusterCapacity:
        return self.index.snapshot(known=self.synced)

    def gpu_facts(self) -> GPUNodeFacts:
        return self.index.gpu_facts()

    def assess(self, spec: InferenceWorkloadSpec, *, owner: str | None = None) -> Fit:
        return self.index.assess(spec, owner=owner, known=self.synced)

    def check(self, spec: InferenceWorkloadSpec, *, owner: str | None = None) -> tuple[bool, str]:
        """(enough free capacity for the workload, the numbers); ``owner`` = ``namespace/name`` of the workload."""
        result = self.assess(spec, owner=owner)
        return result.ok, result.message

    # -- event folding
    def _on_node_list(self, items: list[dict[str, Any]]) -> None:
        self.index.replace_nodes(node_view_from_object(o) for o in items)

    def _on_node_event(self, kind: str, obj: dict[str, Any]) -> None:
        if kind == "DELETED":
            self.index.remove_node(str((obj.get("metadata") or {}).get("name", "")))
        else:
            self.index.upsert_node(node_view_from_object(obj))

    @staticmethod
    def _pod_key(obj: Mapping[str, Any]) -> str:
        metadata = obj.get("metadata") or {}
        return f"{metadata.get('namespace', '')}/{metadata.get('name', '')}"

    def _on_pod_list(self, items: list[dict[str, Any]]) -> None:
        usages = {self._pod_key(o): pod_usage_from_object(o) for o in items}
        self.index.replace_pods({k: v for k, v in usages.items() if v is not None})

    def _on_pod_event(self, kind: str, obj: dict[str, Any]) -> None:
        key = self._pod_key(obj)
        if kind == "DELETED":
            self.index.remove_pod(key)
        else:
            self.index.upsert_pod(key, pod_usage_from_object(obj))

    @staticmethod
    def _name(obj: Mapping[str, Any]) -> str:
        return str((obj.get("metadata") or {}).get("name", ""))

    def _on_class_list(self, items: list[dict[str, Any]]) -> None:
        self.index.replace_device_classes(self._name(o) for o in items)

    def _on_class_event(self, kind: str, obj: dict[str, Any]) -> None:
        self.index.upsert_device_class(self._name(obj), kind != "DELETED")

    def _on_slice_list(self, items: list[dict[str, Any]]) -> None:
        slices = {self._name(o): slice_from_object(o) for o in items}
        self.index.replace_slices({k: v for k, v in slices.items() if v is not None})

    def _on_slice_event(self, kind: str, obj: dict[str, Any]) -> None:
        self.index.upsert_slice(self._name(obj), None if kind == "DELETED" else slice_from_object(obj))

    def _on_claim_list(self, items: list[dict[str, Any]]) -> None:
        claims = {self._pod_key(o): claim_usage_from_object(o) for o in items}
        self.index.replace_claims({k: v for k, v in claims.items() if v is not None})

    def _on_claim_event(self, kind: str, obj: dict[str, Any]) -> None:
        self.index.upsert_claim(self._pod_key(obj), None if kind == "DELETED" else claim_usage_from_object(obj))

    # -- the loop
    async def _run(self, feed: _Feed) -> None:
        backoff = self.backoff_initial_seconds
        while True:
            try:
                if feed.resource_version is None:
                    await self._list(feed)
                await self._watch(feed)
                backoff = self.backoff_initial_seconds
            except asyncio.CancelledError:
                raise
            except _WatchError as e:
                if not (feed.optional and e.status in (403, 404)):
                    self._failed(feed, e, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.backoff_max_seconds)
                    continue
                # not served (404: no resource.k8s.io/v1) or not granted to us (403): none of this kind is seen
                if e.status == 403:
                    log.warning("capacity %s: forbidden (%s); GPUs are requested as extended resources", feed.kind, e)
                feed.resource_version = None
                feed.on_list([])
                feed.synced.set()
                await asyncio.sleep(self.backoff_max_seconds)
            except _Gone:
                self.relists_after_gone += 1
                log.info("capacity %s: resourceVersion %s expired; listing again", feed.kind, feed.resource_version)
                feed.resource_version = None
            except Exception as e:  # the loop must survive anything: log, back off, resume
                self._failed(feed, e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.backoff_max_seconds)

    def _failed(self, feed: _Feed, error: Exception, backoff: float) -> None:
        self.errors += 1
        log.warning("capacity %s watch failed (%s); retrying in %.1fs", feed.kind, error, backoff)

    async def _json(self, response: Any) -> dict[str, Any]:
        try:
            body = await response.read()
            status = int(response.status)
        finally:
            response.release()
        if status == 410:
            raise _Gone()
        if not 200 <= status < 300:
            raise _WatchError(f"HTTP {status}: {body[:300]!r}", status=status)
        parsed: dict[str, Any] = json.loads(body)
        return parsed

    async def _list(self, feed: _Feed) -> None:
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {**feed.selectors, "limit": self.page_size}
            if token:
                kwargs["_continue"] = token
            self.list_requests += 1
            page = await self._json(await feed.list_func(_preload_content=False, _request_timeout=60, **kwargs))
            items.extend(page.get("items") or [])
            metadata = page.get("metadata") or {}
            token = metadata.get("continue")
            if not token:
                feed.resource_version = metadata.get("resourceVersion")
                break
        feed.on_list(items)
        feed.synced.set()

    async def _watch(self, feed: _Feed) -> None:
        self.watch_requests += 1
        response = await feed.list_func(
            watch=True,
            resource_version=feed.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=self.watch_timeout_seconds,
            _preload_content=False,
            _request_timeout=aiohttp.ClientTimeout(total=self.watch_timeout_seconds + 30, sock_connect=10),
            **feed.selectors,
        )
        try:
            if response.status == 410:
                raise _Gone()
            if not 200 <= response.status < 300:
                body = await response.read()
                raise _WatchError(f"watch HTTP {response.status}: {body[:300]!r}", status=response.status)
            while True:
                line = await response.content.readline()
                if not line:
                    return  # the server ended the watch (timeout): resume from the last resourceVersion
                if not line.strip():
                    continue
                event = json.loads(line)
                kind = event.get("type")
                obj = event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Gone()
                    raise _WatchError(f"watch error: {obj.get('message')}", status=obj.get("code"))
                version = (obj.get("metadata") or {}).get("resourceVersion")
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    feed.on_event(kind, obj)
                if version:
                    feed.resource_version = version
        finally:
            response.release()
