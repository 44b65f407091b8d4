"""What the cluster can offer: Nodes (labels, ``status.allocatable``) minus the requests of the Pods bound to them.

``CapacityCache`` keeps that in memory from one list + watch per kind (Nodes, bound non-terminated Pods), resuming
from the last resourceVersion, re-listing on 410 Gone and backing off on errors; reading it (``snapshot``,
``check``, ``gpu_facts``) makes no API call. ``CapacityIndex`` is the pure part: it folds objects into per-node
sums and answers the questions, so it is tested without a cluster.
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
from kubernetes_asyncio.client import ApiClient, CoreV1Api

from inference_placement.api import InferenceWorkloadSpec, Reason
from inference_placement.policy.capacity import ClusterCapacity, ResourceCapacity
from inference_placement.policy.gpu_scheduling import (
    GPUNodeFacts,
    NodeView,
    scheduling_for,
)
from inference_placement.targets.cluster_render import MANAGED_BY, MANAGED_BY_LABEL, WORKLOAD_LABEL, parse_quantity

__all__ = [
    "CapacityAssessment",
    "CapacityCache",
    "CapacityIndex",
    "PodUsage",
    "node_view_from_object",
    "pod_usage_from_object",
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
class CapacityAssessment:
    """Can one more replica set of this workload be placed in the cluster, with the numbers."""

    ok: bool
    known: bool
    reason: Reason
    """``CapacityFree``, ``CapacityExhausted`` or ``NoMatchingNodes`` (for the ``CapacityAvailable`` condition)."""
    message: str
    resource: str | None = None
    """Extended resource needed per replica, e.g. ``nvidia.com/mig-3g.40gb`` (None for CPU-only)."""
    free: float = 0.0
    allocatable: float = 0.0
    nodes: int = 0
    replicas_that_fit: int = 0


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _fmt(value: float) -> str:
    return f"{value:g}"


class CapacityIndex:
    """Nodes and bound Pods folded into per-node sums (pure; fed by ``CapacityCache``'s watches)."""

    def __init__(self) -> None:
        self._nodes: dict[str, NodeView] = {}
        self._pods: dict[str, PodUsage] = {}
        self._requested: dict[str, dict[str, float]] = {}
        self._owned: dict[str, dict[str, PodUsage]] = {}
        self._facts: GPUNodeFacts | None = None
        self._memo: dict[tuple[Any, ...], CapacityAssessment] = {}
        self.version = 0
        """Bumped on every change; equal versions mean equal answers."""

    # -- updates
    def _changed(self) -> None:
        self.version += 1
        self._facts = None
        self._memo.clear()

    def replace_nodes(self, nodes: Iterable[NodeView]) -> None:
        self._nodes = {n.name: n for n in nodes}
        self._changed()

    def upsert_node(self, node: NodeView) -> None:
        if self._nodes.get(node.name) != node:
            self._nodes[node.name] = node
            self._changed()

    def remove_node(self, name: str) -> None:
        if self._nodes.pop(name, None) is not None:
            self._changed()

    def replace_pods(self, pods: Mapping[str, PodUsage]) -> None:
        self._pods = {}
        self._requested = {}
        self._owned = {}
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
        sums = self._requested.setdefault(usage.node, {})
        for resource, amount in usage.requests.items():
            sums[resource] = sums.get(resource, 0.0) + amount
        if usage.owner is not None:
            self._owned.setdefault(usage.owner, {})[key] = usage

    def _remove_pod(self, key: str) -> None:
        usage = self._pods.pop(key, None)
        if usage is None:
            return
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

    # -- reads
    @property
    def nodes(self) -> Mapping[str, NodeView]:
        return self._nodes

    def requested(self, node: str) -> Mapping[str, float]:
        return self._requested.get(node, {})

    def gpu_facts(self) -> GPUNodeFacts:
        """MIG strategy and time-slicing resource names per GPU product, from the schedulable nodes."""
        if self._facts is None:
            self._facts = GPUNodeFacts.from_nodes(n for n in self._nodes.values() if not n.unschedulable)
        return self._facts

    def _free(self, node: NodeView, resource: str, own: Mapping[str, float]) -> float:
        used = self._requested.get(node.name, {}).get(resource, 0.0) - own.get(resource, 0.0)
        return max(0.0, node.allocatable.get(resource, 0.0) - used)

    def snapshot(self, *, known: bool = True) -> ClusterCapacity:
        """Per (extended resource, GPU product): allocatable, requested, node count; CPU and memory free."""
        sums: dict[tuple[str, str], list[float]] = {}
        cpu_free = 0.0
        memory_free = 0.0
        for node in self._nodes.values():
            if node.unschedulable:
                continue
            requested = self._requested.get(node.name, {})
            cpu_free += max(0.0, node.allocatable.get("cpu", 0.0) - requested.get("cpu", 0.0))
            memory_free += max(0.0, node.allocatable.get("memory", 0.0) - requested.get("memory", 0.0))
            for resource, amount in node.allocatable.items():
                if not resource.startswith("nvidia.com/") or amount <= 0:
                    continue
                entry = sums.setdefault((resource, node.product), [0.0, 0.0, 0.0])
                entry[0] += amount
                entry[1] += requested.get(resource, 0.0)
                entry[2] += 1
        resources = tuple(
            ResourceCapacity(resource=r, product=p, allocatable=a, requested=q, nodes=int(n))
            for (r, p), (a, q, n) in sorted(sums.items())
        )
        return ClusterCapacity(
            resources=resources, cpu_free_cores=cpu_free, memory_free_mib=memory_free / _MIB, known=known
        )

    def assess(self, spec: InferenceWorkloadSpec, *, owner: str | None = None) -> CapacityAssessment:
        """Whether ``max(1, minReplicas)`` replicas fit on the nodes the workload may use, with the numbers.

        ``owner`` (``namespace/name``) excludes the workload's own Pods: the slice it already holds is not taken.
        """
        acc = spec.accelerator
        key = (
            self.version,
            owner,
            acc.type,
            acc.sharing,
            acc.count,
            acc.mig_profile,
            acc.time_slicing_replicas,
            tuple(sorted(spec.cluster.node_selector.items())),
            spec.cluster.node_autoscaler,
            spec.model.cpu,
            spec.model.memory,
            spec.scaling.min_replicas,
        )
        cached = self._memo.get(key)
        if cached is None:
            cached = self._assess(spec, owner)
            self._memo[key] = cached
        return cached

    def _assess(self, spec: InferenceWorkloadSpec, owner: str | None) -> CapacityAssessment:
        try:
            scheduling = scheduling_for(spec, self.gpu_facts())
        except ValueError as e:
            return CapacityAssessment(ok=False, known=True, reason=Reason.NO_MATCHING_NODES, message=str(e))
        needed = max(1, spec.scaling.min_replicas)
        cpu = spec.model.cpu_cores
        memory = spec.model.memory_mib * _MIB
        own: dict[str, dict[str, float]] = {}
        for usage in self._owned.get(owner, {}).values() if owner else ():
            sums = own.setdefault(usage.node, {})
            for name, amount in usage.requests.items():
                sums[name] = sums.get(name, 0.0) + amount

        candidates = [
            n
            for n in self._nodes.values()
            if not n.unschedulable
            and scheduling.node_matches(n.labels)
            and all(n.labels.get(k) == v for k, v in spec.cluster.node_selector.items())
        ]
        autoscaler = spec.cluster.node_autoscaler
        autoscaler_note = "; a node autoscaler is expected to add capacity" if autoscaler else ""
        resource = scheduling.resource_name
        per_replica = f"{_fmt(cpu)} CPU, {_fmt(spec.model.memory_mib)} MiB"

        def fits(node: NodeView) -> int:
            node_own = own.get(node.name, {})
            limits = [
                self._free(node, "cpu", node_own) / cpu if cpu > 0 else float("inf"),
                self._free(node, "memory", node_own) / memory if memory > 0 else float("inf"),
            ]
            if resource is not None:
                limits.append(self._free(node, resource, node_own) / scheduling.resource_count)
            best = min(limits)
            return int(best + 1e-9) if best != float("inf") else needed

        if resource is None:
            if not candidates:
                reason = "no schedulable node matches the workload's node selector"
                return CapacityAssessment(
                    ok=autoscaler, known=True, reason=Reason.NO_MATCHING_NODES, message=reason + autoscaler_note
                )
            replicas = sum(fits(n) for n in candidates)
            best = max(candidates, key=lambda n: self._free(n, "cpu", own.get(n.name, {})))
            message = (
                f"{replicas} replicas of {per_replica} fit on {_plural(len(candidates), 'node')} "
                f"(most CPU free: {_fmt(self._free(best, 'cpu', own.get(best.name, {})))} cores on {best.name}); "
                f"needs {needed}"
            )
            ok = replicas >= needed
            return CapacityAssessment(
                ok=ok or autoscaler,
                known=True,
                reason=Reason.CAPACITY_FREE if ok else Reason.CAPACITY_EXHAUSTED,
                message=message + ("" if ok else autoscaler_note),
                nodes=len(candidates),
                replicas_that_fit=replicas,
            )

        offering = [n for n in candidates if n.allocatable.get(resource, 0.0) > 0]
        if not offering:
            products = ", ".join(scheduling.products)
            message = f"no schedulable node offers {resource} on {spec.accelerator.type.value} ({products})"
            return CapacityAssessment(
                ok=autoscaler,
                known=True,
                reason=Reason.NO_MATCHING_NODES,
                message=message + autoscaler_note,
                resource=resource,
            )
        by_product: dict[str, list[float]] = {}
        for node in offering:
            entry = by_product.setdefault(node.product, [0.0, 0.0, 0.0])
            entry[0] += self._free(node, resource, own.get(node.name, {}))
            entry[1] += node.allocatable.get(resource, 0.0)
            entry[2] += 1
        numbers = "; ".join(
            f"{_fmt(free)} of {_fmt(alloc)} {resource} free on {product} ({_plural(int(n), 'node')})"
            for product, (free, alloc, n) in sorted(by_product.items())
        )
        replicas = sum(fits(n) for n in offering)
        free_total = sum(v[0] for v in by_product.values())
        alloc_total = sum(v[1] for v in by_product.values())
        ok = replicas >= needed
        each = f"{scheduling.resource_count} x {resource} + {per_replica}"
        detail = f"; {replicas} replicas of {each} fit, needs {needed}"
        return CapacityAssessment(
            ok=ok or autoscaler,
            known=True,
            reason=Reason.CAPACITY_FREE if ok else Reason.CAPACITY_EXHAUSTED,
            message=numbers + detail + ("" if ok else autoscaler_note),
            resource=resource,
            free=free_total,
            allocatable=alloc_total,
            nodes=len(offering),
            replicas_that_fit=replicas,
        )


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


class CapacityCache:
    """Nodes and bound Pods, kept current by watches; every read is served from memory.

    ``node_label_selector`` limits which Nodes count (e.g. one node pool). Counters ``list_requests`` and
    ``watch_requests`` show that reads cost no API calls.
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
    ) -> None:
        """``list_nodes`` / ``list_pods`` replace ``CoreV1Api.list_node`` / ``list_pod_for_all_namespaces``
        (same keyword arguments, ``_preload_content=False`` answers); tests use them to script the API."""
        if api_client is None and (list_nodes is None or list_pods is None):
            raise ValueError("CapacityCache needs an api_client unless both list functions are given")
        core = CoreV1Api(api_client) if api_client is not None else None
        self.index = CapacityIndex()
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
        self._feeds = (
            _Feed("nodes", nodes_func, node_selectors, self._on_node_list, self._on_node_event),
            _Feed("pods", pods_func, {"field_selector": _BOUND_AND_RUNNING}, self._on_pod_list, self._on_pod_event),
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

    def assess(self, spec: InferenceWorkloadSpec, *, owner: str | None = None) -> CapacityAssessment:
        if not self.synced:
            return CapacityAssessment(
                ok=False, known=False, reason=Reason.NO_MATCHING_NODES, message="cluster capacity not read yet"
            )
        return self.index.assess(spec, owner=owner)

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
            except _Gone:
                self.relists_after_gone += 1
                log.info("capacity %s: resourceVersion %s expired; listing again", feed.kind, feed.resource_version)
                feed.resource_version = None
            except Exception as e:  # the loop must survive anything: log, back off, resume
                self.errors += 1
                log.warning("capacity %s watch failed (%s); retrying in %.1fs", feed.kind, e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.backoff_max_seconds)

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
