"""Which targets can run a workload at all: platform limits, the spec's constraints and cluster capacity.

Hard limits only (a target listed here is never chosen): Lambda has no GPU and caps memory, duration and image
size; Cloud Run offers one whole L4 per instance; the cluster offers only the GPU types its price book and nodes
have, and only while a node has free capacity for one more replica (unless a node autoscaler adds nodes, which
lengthens the migration lead instead). Cold starts longer than the SLO tolerates are not a hard limit: they make
the target keep instances warm, which the cost model prices and the SLO risk checks (``slo_risk.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from inference_placement.api.spec import GPUSharing, InferenceWorkloadSpec, TargetName
from inference_placement.policy.capacity import ClusterCapacity, ResourceCapacity
from inference_placement.policy.economics import cluster_replica_usd_per_hour
from inference_placement.policy.price_book import PriceBook

__all__ = ["Feasibility", "assess_feasibility", "gpu_resource_names", "product_matches"]


@dataclass(frozen=True)
class Feasibility:
    infeasible: dict[TargetName, str] = field(default_factory=dict)
    """Why each excluded target is excluded (including targets the spec does not allow)."""
    cluster_needs_node: bool = False
    """The cluster is feasible only through the node autoscaler (no free capacity now): longer lead."""

    def feasible(self, target: TargetName) -> bool:
        return target not in self.infeasible


def product_matches(accelerator: str, product_label: str) -> bool:
    """Whether a ``nvidia.com/gpu.product`` label is a GPU of this accelerator type.

    ``nvidia-a100-80gb`` matches ``NVIDIA-A100-SXM4-80GB``, ``NVIDIA-A100-80GB-PCIe`` and their ``-MIG-<profile>``
    / ``-SHARED`` forms; ``nvidia-t4`` matches ``Tesla-T4``. Every token of the type (``a100``, ``80gb``) must be a
    token of the label's base product.
    """
    base = product_label.lower()
    for marker in ("-mig-", "-shared"):
        index = base.find(marker)
        if index >= 0:
            base = base[:index]
    tokens = set(base.split("-"))
    wanted = [t for t in accelerator.lower().split("-") if t != "nvidia"]
    return bool(wanted) and all(t in tokens for t in wanted)


def gpu_resource_names(spec: InferenceWorkloadSpec) -> tuple[str, ...]:
    """Extended resources that can hold one replica's GPU (MIG mixed and single strategies, time-slicing renamed)."""
    acc = spec.accelerator
    if acc.sharing is GPUSharing.MIG:
        return (f"nvidia.com/mig-{acc.mig_profile}", "nvidia.com/gpu")
    if acc.sharing is GPUSharing.TIME_SLICING:
        return ("nvidia.com/gpu", "nvidia.com/gpu.shared")
    return ("nvidia.com/gpu",)


def _offers(spec: InferenceWorkloadSpec, entry: ResourceCapacity) -> bool:
    acc = spec.accelerator
    if entry.resource not in gpu_resource_names(spec):
        return False
    if not product_matches(acc.type.value, entry.product):
        return False
    if acc.sharing is GPUSharing.MIG and entry.resource == "nvidia.com/gpu":
        # MIG strategy single: the slice is nvidia.com/gpu on nodes whose product names the profile
        return entry.product.lower().endswith(f"-mig-{(acc.mig_profile or '').lower()}")
    if acc.sharing is not GPUSharing.MIG and "-mig-" in entry.product.lower():
        return False
    return True


def _cluster_capacity_problem(spec: InferenceWorkloadSpec, capacity: ClusterCapacity) -> tuple[str | None, bool]:
    """(why the cluster cannot take one more replica, or None; whether that is fixed by adding a node)."""
    if not capacity.known:
        return None, False
    acc = spec.accelerator
    if not acc.needs_gpu:
        cpu, memory = spec.model.cpu_cores, spec.model.memory_mib
        if capacity.cpu_free_cores + 1e-9 >= cpu and capacity.memory_free_mib + 1e-9 >= memory:
            return None, False
        return (
            f"no free CPU capacity: {capacity.cpu_free_cores:g} cores / {capacity.memory_free_mib:,.0f} MiB free, "
            f"a replica needs {cpu:g} / {memory:,.0f} MiB",
            True,
        )
    offers = [r for r in capacity.resources if _offers(spec, r)]
    need = float(acc.count) if acc.sharing is GPUSharing.EXCLUSIVE else 1.0
    what = acc.type.value + (f" MIG {acc.mig_profile}" if acc.sharing is GPUSharing.MIG else "")
    if not offers:
        return f"no node offers {what} ({', '.join(gpu_resource_names(spec))})", True
    free = sum(r.free for r in offers)
    if max(r.free for r in offers) + 1e-9 >= need:
        return None, False
    total = sum(r.allocatable for r in offers)
    return f"no free {what}: {free:g} of {total:g} free on {sum(r.nodes for r in offers)} node(s), need {need:g}", True


def assess_feasibility(  # noqa: C901 - rewritten as the one per-node fit check (issue 23)
    spec: InferenceWorkloadSpec,
    price_book: PriceBook,
    capacity: ClusterCapacity,
    current: TargetName | None = None,
) -> Feasibility:
    """Every hard reason a target cannot run this workload now."""
    out: dict[TargetName, str] = {}
    acc = spec.accelerator
    allowed = set(spec.placement.allowed_targets)
    for target in TargetName:
        if target not in allowed:
            out[target] = f"{target.value} is not in placement.allowedTargets"
        elif spec.compliance.single_tenant and target is not TargetName.CLUSTER:
            out[target] = "compliance.singleTenant keeps the workload in the cluster"

    model_gb = spec.model.size_mb / 1000.0
    # Lambda
    lam = price_book.platforms.lambda_
    if TargetName.LAMBDA not in out:
        memory_mb = spec.lambda_.memory_mb or spec.model.memory_mib
        if acc.needs_gpu and not lam.gpu:
            out[TargetName.LAMBDA] = f"lambda has no GPU (model needs {acc.type.value})"
        elif memory_mb > lam.max_memory_mb:
            out[TargetName.LAMBDA] = f"needs {memory_mb:,.0f} MB > lambda max {lam.max_memory_mb:,} MB"
        elif spec.model.service_seconds > min(lam.max_duration_seconds, spec.lambda_.timeout_seconds):
            out[TargetName.LAMBDA] = (
                f"service {spec.model.service_seconds:g} s > lambda timeout "
                f"{min(lam.max_duration_seconds, spec.lambda_.timeout_seconds):g} s"
            )
        elif model_gb > lam.max_image_gb:
            out[TargetName.LAMBDA] = f"model {model_gb:g} GB > lambda image limit {lam.max_image_gb:g} GB"

    # Cloud Run
    run = price_book.platforms.cloudrun
    if TargetName.CLOUDRUN not in out:
        memory_gib = spec.model.memory_mib / 1024.0
        if acc.needs_gpu:
            memory_gib = max(memory_gib, run.gpu_min_memory_gib)
            if acc.type.value not in run.gpu_types:
                offered = ", ".join(run.gpu_types) or "none"
                out[TargetName.CLOUDRUN] = f"cloudrun GPUs are {offered} only, not {acc.type.value}"
            elif acc.sharing is not GPUSharing.EXCLUSIVE or acc.count != 1:
                out[TargetName.CLOUDRUN] = "cloudrun offers exactly one whole GPU per instance (no MIG/time-slicing)"
        if TargetName.CLOUDRUN not in out and memory_gib > run.max_memory_gib:
            out[TargetName.CLOUDRUN] = f"needs {memory_gib:g} GiB > cloudrun max {run.max_memory_gib:g} GiB"

    # Cluster
    needs_node = False
    if TargetName.CLUSTER not in out:
        cluster = price_book.platforms.cluster
        if acc.needs_gpu and acc.type.value not in cluster.gpu_types:
            out[TargetName.CLUSTER] = f"the cluster offers no {acc.type.value} (price book gpu_types)"
        elif cluster_replica_usd_per_hour(spec, price_book) is None:
            what = f"{acc.type.value} MIG {acc.mig_profile}" if acc.sharing is GPUSharing.MIG else acc.type.value
            out[TargetName.CLUSTER] = f"the price book has no price for {what}"
        elif current is not TargetName.CLUSTER:
            # A workload already in the cluster holds its own resources; capacity gates moving in, not staying.
            problem, fixable = _cluster_capacity_problem(spec, capacity)
            if problem is not None:
                if fixable and spec.cluster.node_autoscaler:
                    needs_node = True
                else:
                    out[TargetName.CLUSTER] = problem
    return Feasibility(infeasible=out, cluster_needs_node=needs_node)
