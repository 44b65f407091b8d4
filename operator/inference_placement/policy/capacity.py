"""What the cluster can offer, node by node, and whether a workload's replicas fit it (pure).

``ClusterCapacity`` is filled by ``targets/capacity.py`` from Nodes and the Pods bound to them. ``replica_fit`` is
the one rule for "does a replica fit the cluster", called by the policy's feasibility (``feasibility.py``, so by
``decide``, the simulator and ``explain``) and by the controller's ``CapacityAvailable`` verdict: a replica fits on
a node when that node takes new Pods, matches the replica's node affinity (GPU product, MIG strategy, time-slicing;
``gpu_scheduling.py``) and the spec's node selector, and has free there, at once, the replica's GPU resource, CPU
and memory. Free capacity is never added up across nodes: two nodes with half a replica's CPU each hold none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Final

from inference_placement.api.spec import InferenceWorkloadSpec
from inference_placement.api.status import Reason
from inference_placement.policy.dra import DRA_KEY_PREFIX, DRAClasses, is_bound_key
from inference_placement.policy.gpu_scheduling import GPU_PRODUCT_LABEL, GPUNodeFacts, GPUScheduling, scheduling_for

__all__ = ["CPU", "MEMORY", "ClusterCapacity", "Fit", "NodeCapacity", "ResourceCapacity", "replica_fit"]

CPU: Final = "cpu"
"""Resource key of CPU, in cores."""
MEMORY: Final = "memory"
"""Resource key of memory, in MiB (not bytes) everywhere in ``ClusterCapacity``."""

_EPSILON: Final = 1e-9


@dataclass(frozen=True)
class NodeCapacity:
    """One Node as the fit rule reads it."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    """All labels: the replica's node affinity reads the GPU ones, the spec's node selector may read any."""
    allocatable: Mapping[str, float] = field(default_factory=dict)
    """``status.allocatable``: ``cpu`` in cores, ``memory`` in MiB, extended resources (``nvidia.com/...``) counted;
    where DRA applies also the node's published GPU devices, counted under ``policy/dra.py``'s keys
    (``dra.gpu.nvidia.com/...``: devices, MIG devices, shares of shared GPUs)."""
    free: Mapping[str, float] = field(default_factory=dict)
    """Allocatable minus the requests of the Pods bound to the node (never below 0), same keys and units; DRA
    keys: minus what allocated ResourceClaims hold of the node's devices."""
    schedulable: bool = True
    """False when cordoned (``spec.unschedulable``): the node takes no new Pod."""
    gpu_busy_share: float | None = None
    """Share of time its GPUs are busy with the Pods already there (DCGM ``DCGM_FI_DEV_GPU_UTIL`` / 100, the
    busiest GPU); None = not measured. Prices the contention a time-sliced replica would meet there."""

    @property
    def product(self) -> str:
        """``nvidia.com/gpu.product`` label ("" on a node without GPUs)."""
        return self.labels.get(GPU_PRODUCT_LABEL, "")

    @cached_property
    def fingerprint(self) -> int:
        """Hash of everything above (computed once per node object; snapshots reuse unchanged nodes)."""
        return hash(
            (
                self.name,
                tuple(sorted(self.labels.items())),
                tuple(sorted(self.allocatable.items())),
                tuple(sorted(self.free.items())),
                self.schedulable,
                self.gpu_busy_share,
            )
        )


@dataclass(frozen=True)
class ResourceCapacity:
    """One extended resource on one GPU product, summed over the schedulable nodes that offer it (a summary to
    show; whether a replica fits is decided per node by ``replica_fit``)."""

    resource: str
    """Resource name as the device plugin advertises it, e.g. ``nvidia.com/gpu``, ``nvidia.com/mig-1g.10gb``."""
    product: str
    """``nvidia.com/gpu.product`` label of the nodes, e.g. ``NVIDIA-A100-SXM4-80GB``."""
    allocatable: float
    """Sum of ``status.allocatable`` over the matching nodes."""
    requested: float
    """Sum of what the Pods bound to those nodes hold of it (allocatable minus free)."""
    nodes: int
    """How many nodes offer it."""

    @property
    def free(self) -> float:
        return max(0.0, self.allocatable - self.requested)


@dataclass(frozen=True)
class Fit:
    """Whether ``max(1, minReplicas)`` replicas of a workload fit on the cluster's nodes now, with the numbers."""

    known: bool
    """False when the cluster has not been read yet: nothing may be gated on this answer."""
    fits_now: bool
    """Enough replicas fit on the nodes as they are."""
    ok: bool
    """The cluster can take the workload: it fits now, or a node autoscaler is expected to add what is missing
    (never for a request no node can satisfy, e.g. MIG on a GPU without MIG)."""
    reason: Reason
    """``CapacityFree``, ``CapacityExhausted`` or ``NoMatchingNodes`` (for the ``CapacityAvailable`` condition)."""
    message: str
    """The numbers, e.g. ``0 of 1 nvidia.com/mig-3g.40gb free on NVIDIA-A100-SXM4-80GB (1 node); 0 replicas of
    1 x nvidia.com/mig-3g.40gb + 1 CPU, 1024 MiB fit, needs 1``."""
    needed: int = 1
    replicas_that_fit: int = 0
    """Replicas that fit now, each wholly on one node (summed over nodes)."""
    nodes_with_room: int = 0
    """Nodes that can hold at least one replica now."""
    resource: str | None = None
    """Extended resource one replica needs, e.g. ``nvidia.com/mig-3g.40gb`` (None for CPU-only)."""
    free: float = 0.0
    """Free ``resource`` on the nodes that offer it (a sum, for the message; the fit itself is per node)."""
    allocatable: float = 0.0
    nodes: int = 0
    """Nodes the replica may use: that offer ``resource`` (GPU) or match the node selector (CPU-only)."""


_NOT_READ: Final = Fit(
    known=False, fits_now=False, ok=False, reason=Reason.NO_MATCHING_NODES, message="cluster capacity not read yet"
)


@dataclass(frozen=True)
class _Group:
    """Nodes that are alike for one placement (same free CPU, memory and GPU resource): counted once."""

    cpu: float
    memory: float
    gpu_free: float
    gpu_allocatable: float
    product: str
    first: int
    """Position of its first node in ``ClusterCapacity.nodes`` (ties go to the earlier node)."""
    name: str
    """Name of its first node."""
    count: int


@dataclass(frozen=True)
class _Pool:
    """The nodes a replica of one placement shape (accelerator, node selector) may use, grouped."""

    scheduling: GPUScheduling | None
    problem: str | None
    """Why no node can ever take it (``scheduling_for`` refused the accelerator)."""
    groups: tuple[_Group, ...]
    """The schedulable nodes that match the affinity and the node selector and offer the GPU resource (any
    amount, free or not; CPU-only: all that match)."""
    where: Mapping[str, tuple[int, int, NodeCapacity]]
    """Node name -> (its group, its position, the node) for the nodes in ``groups``."""

    @property
    def nodes(self) -> int:
        return len(self.where)


@dataclass(frozen=True)
class ClusterCapacity:
    """Every node's capacity; ``known=False`` when it has not been read yet (no decision may rely on it)."""

    nodes: tuple[NodeCapacity, ...] = ()
    known: bool = False
    dra: DRAClasses | None = None
    """Where DRA applies, the DeviceClasses GPUs are claimed through (``policy/dra.py``); None: extended resources."""
    _memo: dict[tuple[Any, ...], Any] = field(default_factory=dict, init=False, repr=False, compare=False)
    """Pools and fits already computed on this (immutable) capacity."""

    @cached_property
    def gpu_facts(self) -> GPUNodeFacts:
        """MIG strategy and time-slicing resource names per GPU product, from the schedulable nodes."""
        return GPUNodeFacts.from_nodes((n for n in self.nodes if n.schedulable), dra=self.dra)

    @cached_property
    def resources(self) -> tuple[ResourceCapacity, ...]:
        """Per (extended resource, GPU product) over the schedulable nodes: allocatable, requested, node count."""
        sums: dict[tuple[str, str], list[float]] = {}
        for node in self.nodes:
            if not node.schedulable:
                continue
            for resource, amount in node.allocatable.items():
                counted = resource.startswith(("nvidia.com/", DRA_KEY_PREFIX)) and not is_bound_key(resource)
                if not counted or amount <= 0:
                    continue
                entry = sums.setdefault((resource, node.product), [0.0, 0.0, 0.0])
                entry[0] += amount
                entry[1] += amount - node.free.get(resource, 0.0)
                entry[2] += 1
        return tuple(
            ResourceCapacity(resource=r, product=p, allocatable=a, requested=q, nodes=int(n))
            for (r, p), (a, q, n) in sorted(sums.items())
        )

    @cached_property
    def fingerprint(self) -> int:
        """Equal for equal capacities (the fleet skips reconciles whose inputs did not change)."""
        return hash((self.known, self.dra, tuple(n.fingerprint for n in self.nodes)))


def _placement_key(spec: InferenceWorkloadSpec) -> tuple[Any, ...]:
    acc = spec.accelerator
    selector = tuple(sorted(spec.cluster.node_selector.items()))
    return (acc.type, acc.sharing, acc.count, acc.mig_profile, acc.time_slicing_replicas, selector)


def _pool(spec: InferenceWorkloadSpec, capacity: ClusterCapacity) -> _Pool:
    key = ("pool", *_placement_key(spec))
    cached: _Pool | None = capacity._memo.get(key)
    if cached is not None:
        return cached
    try:
        scheduling = scheduling_for(spec, capacity.gpu_facts)
    except ValueError as e:
        pool = _Pool(scheduling=None, problem=str(e), groups=(), where={})
        capacity._memo[key] = pool
        return pool
    selector = spec.cluster.node_selector
    resource = scheduling.resource_name
    index: dict[tuple[float, float, float, float, str], int] = {}
    groups: list[list[Any]] = []
    where: dict[str, tuple[int, int, NodeCapacity]] = {}
    for position, node in enumerate(capacity.nodes):
        if not node.schedulable or not scheduling.node_matches(node.labels):
            continue
        if selector and any(node.labels.get(k) != v for k, v in selector.items()):
            continue
        gpu_allocatable = node.allocatable.get(resource, 0.0) if resource is not None else 0.0
        if resource is not None and gpu_allocatable <= 0:
            continue
        gpu_free = node.free.get(resource, 0.0) if resource is not None else 0.0
        # a node of the DRA driver need not carry GPU feature discovery's labels
        product = (node.product or "published devices") if resource is not None else ""
        shape = (node.free.get(CPU, 0.0), node.free.get(MEMORY, 0.0), gpu_free, gpu_allocatable, product)
        at = index.get(shape)
        if at is None:
            at = index[shape] = len(groups)
            groups.append([*shape, position, node.name, 0])
        groups[at][-1] += 1
        where[node.name] = (at, position, node)
    pool = _Pool(scheduling=scheduling, problem=None, groups=tuple(_Group(*g) for g in groups), where=where)
    capacity._memo[key] = pool
    return pool


def _fmt(value: float) -> str:
    return f"{value:g}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def replica_fit(
    spec: InferenceWorkloadSpec,
    capacity: ClusterCapacity,
    held: Mapping[str, Mapping[str, float]] | None = None,
) -> Fit:
    """Whether ``max(1, minReplicas)`` replicas fit, each on one node, and the numbers.

    ``held`` (node -> resources, ``ClusterCapacity`` units) is what the workload's own Pods hold: it counts as
    free for it (the slice it already has is not taken). Cheap on a large cluster: the nodes a placement shape may
    use are found once per capacity and grouped by their free resources, the sums over them are taken once per
    replica shape, and the workload's own Pods only adjust the nodes they are on.
    """
    if not capacity.known:
        return _NOT_READ
    held = {n: h for n, h in (held or {}).items() if h}
    mine = tuple(sorted((node, tuple(sorted(h.items()))) for node, h in held.items()))
    key = ("fit", *_placement_key(spec), spec.model.cpu, spec.model.memory, spec.scaling.min_replicas)
    key += (spec.cluster.node_autoscaler, mine)  # the autoscaler changes the verdict, not the sums
    cached: Fit | None = capacity._memo.get(key)
    if cached is None:
        cached = capacity._memo[key] = _fit(spec, capacity, held)
    return cached


@dataclass
class _Totals:
    """Sums over the nodes a replica may use, for one replica shape."""

    replicas: int = 0
    with_room: int = 0
    by_product: dict[str, list[float]] = field(default_factory=dict)
    """GPU product -> [free, allocatable, nodes] of the replica's GPU resource."""
    best_cpu: tuple[float, int, str] = (-1.0, 0, "")
    """(free cores, -position, name): the first node with the most free CPU."""

    def copy(self) -> _Totals:
        return _Totals(self.replicas, self.with_room, {p: list(v) for p, v in self.by_product.items()}, self.best_cpu)


class _Shape:
    """One replica's needs and how many of them a node's free resources hold."""

    def __init__(self, spec: InferenceWorkloadSpec, scheduling: GPUScheduling) -> None:
        self.resource = scheduling.resource_name
        self.per_gpu = float(scheduling.resource_count)
        self.cpu = spec.model.cpu_cores
        self.memory = spec.model.memory_mib
        self.needed = max(1, spec.scaling.min_replicas)

    def replicas_on(self, cpu_free: float, memory_free: float, gpu_free: float) -> int:
        best = float("inf")
        if self.cpu > 0:
            best = min(best, cpu_free / self.cpu)
        if self.memory > 0:
            best = min(best, memory_free / self.memory)
        if self.resource is not None:
            best = min(best, gpu_free / self.per_gpu)
        return int(best + _EPSILON) if best != float("inf") else self.needed


def _totals(spec: InferenceWorkloadSpec, capacity: ClusterCapacity, pool: _Pool, shape: _Shape) -> _Totals:
    """The sums over the pool's nodes as they are (memoized per replica shape on the capacity)."""
    key = ("totals", *_placement_key(spec), spec.model.cpu, spec.model.memory, spec.scaling.min_replicas)
    cached: _Totals | None = capacity._memo.get(key)
    if cached is not None:
        return cached
    totals = _Totals()
    for group in pool.groups:
        fits = shape.replicas_on(group.cpu, group.memory, group.gpu_free)
        totals.replicas += fits * group.count
        totals.with_room += group.count if fits > 0 else 0
        sums = totals.by_product.setdefault(group.product, [0.0, 0.0, 0.0])
        sums[0] += group.gpu_free * group.count
        sums[1] += group.gpu_allocatable * group.count
        sums[2] += group.count
        totals.best_cpu = max(totals.best_cpu, (group.cpu, -group.first, group.name))
    capacity._memo[key] = totals
    return totals


def _fit(spec: InferenceWorkloadSpec, capacity: ClusterCapacity, held: Mapping[str, Mapping[str, float]]) -> Fit:
    pool = _pool(spec, capacity)
    needed = max(1, spec.scaling.min_replicas)
    if pool.scheduling is None:
        return Fit(
            known=True,
            fits_now=False,
            ok=False,
            reason=Reason.NO_MATCHING_NODES,
            message=pool.problem or "no node can take this accelerator",
            needed=needed,
        )
    scheduling = pool.scheduling
    autoscaler = spec.cluster.node_autoscaler
    autoscaler_note = "; a node autoscaler is expected to add capacity" if autoscaler else ""
    shape = _Shape(spec, scheduling)
    resource = shape.resource

    if not pool.groups:
        if resource is None:
            message = "no schedulable node matches the workload's node selector"
        else:
            products = ", ".join(scheduling.products)
            message = f"no schedulable node offers {resource} on {spec.accelerator.type.value} ({products})"
        return Fit(
            known=True,
            fits_now=False,
            ok=autoscaler,
            reason=Reason.NO_MATCHING_NODES,
            message=message + autoscaler_note,
            needed=needed,
            resource=resource,
        )

    totals = _totals(spec, capacity, pool, shape)
    if held:
        totals = totals.copy()
    for name, own in held.items():
        located = pool.where.get(name)
        if located is None:
            continue
        at, position, node = located
        group = pool.groups[at]
        cpu_free, memory_free, gpu_free = (
            min(node.allocatable.get(key, 0.0), free + own.get(key, 0.0)) if key is not None else 0.0
            for key, free in ((CPU, group.cpu), (MEMORY, group.memory), (resource, group.gpu_free))
        )
        before = shape.replicas_on(group.cpu, group.memory, group.gpu_free)
        after = shape.replicas_on(cpu_free, memory_free, gpu_free)
        totals.replicas += after - before
        totals.with_room += (after > 0) - (before > 0)
        totals.by_product[group.product][0] += gpu_free - group.gpu_free
        totals.best_cpu = max(totals.best_cpu, (cpu_free, -position, name))

    replicas = totals.replicas
    fits_now = replicas >= needed
    nodes = pool.nodes
    per_replica = f"{_fmt(shape.cpu)} CPU, {_fmt(shape.memory)} MiB"
    if resource is None:
        message = (
            f"{replicas} replicas of {per_replica} fit on {_plural(nodes, 'node')} "
            f"(most CPU free: {_fmt(totals.best_cpu[0])} cores on {totals.best_cpu[2]}); needs {needed}"
        )
    else:
        numbers = "; ".join(
            f"{_fmt(free)} of {_fmt(alloc)} {resource} free on {product} ({_plural(int(n), 'node')})"
            for product, (free, alloc, n) in sorted(totals.by_product.items())
        )
        each = f"{scheduling.resource_count} x {resource} + {per_replica}"
        message = f"{numbers}; {replicas} replicas of {each} fit, needs {needed}"
    return Fit(
        known=True,
        fits_now=fits_now,
        ok=fits_now or autoscaler,
        reason=Reason.CAPACITY_FREE if fits_now else Reason.CAPACITY_EXHAUSTED,
        message=message + ("" if fits_now else autoscaler_note),
        needed=needed,
        replicas_that_fit=replicas,
        nodes_with_room=totals.with_room,
        resource=resource,
        free=sum(v[0] for v in totals.by_product.values()),
        allocatable=sum(v[1] for v in totals.by_product.values()),
        nodes=nodes,
    )
