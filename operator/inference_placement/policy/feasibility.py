"""Which targets can run a workload at all: platform limits, the spec's constraints and cluster capacity.

Hard limits only (a target listed here is never chosen): Lambda has no GPU and caps memory, duration and image
size; Cloud Run offers one whole L4 per instance; the cluster offers only the GPU types its price book and nodes
have, and only while ``max(1, minReplicas)`` replicas fit on its nodes, each wholly on one node
(``capacity.replica_fit``), unless a node autoscaler adds nodes, which lengthens the migration lead instead. Cold
starts longer than the SLO tolerates are not a hard limit: they make the target keep instances warm, which the cost
model prices and the SLO risk checks (``slo_risk.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from inference_placement.api.spec import GPUSharing, InferenceWorkloadSpec, TargetName
from inference_placement.policy.capacity import ClusterCapacity, replica_fit
from inference_placement.policy.economics import cluster_replica_usd_per_hour
from inference_placement.policy.price_book import PriceBook

__all__ = ["Feasibility", "assess_feasibility"]


@dataclass(frozen=True)
class Feasibility:
    infeasible: dict[TargetName, str] = field(default_factory=dict)
    """Why each excluded target is excluded (including targets the spec does not allow)."""
    cluster_needs_node: bool = False
    """The cluster is feasible only through the node autoscaler (no free capacity now): longer lead."""

    def feasible(self, target: TargetName) -> bool:
        return target not in self.infeasible


def assess_feasibility(
    spec: InferenceWorkloadSpec,
    price_book: PriceBook,
    capacity: ClusterCapacity,
    current: TargetName | None = None,
) -> Feasibility:
    """Every hard reason a target cannot run this workload now."""
    out: dict[TargetName, str] = {}
    allowed = set(spec.placement.allowed_targets)
    for target in TargetName:
        if target not in allowed:
            out[target] = f"{target.value} is not in placement.allowedTargets"
        elif spec.compliance.single_tenant and target is not TargetName.CLUSTER:
            out[target] = "compliance.singleTenant keeps the workload in the cluster"
    if TargetName.LAMBDA not in out and (problem := _lambda_problem(spec, price_book)) is not None:
        out[TargetName.LAMBDA] = problem
    if TargetName.CLOUDRUN not in out and (problem := _cloudrun_problem(spec, price_book)) is not None:
        out[TargetName.CLOUDRUN] = problem
    needs_node = False
    if TargetName.CLUSTER not in out:
        cluster_problem, needs_node = _cluster_problem(spec, price_book, capacity, current)
        if cluster_problem is not None:
            out[TargetName.CLUSTER] = cluster_problem
    return Feasibility(infeasible=out, cluster_needs_node=needs_node)


def _lambda_problem(spec: InferenceWorkloadSpec, price_book: PriceBook) -> str | None:
    acc = spec.accelerator
    lam = price_book.platforms.lambda_
    memory_mb = spec.lambda_.memory_mb or spec.model.memory_mib
    timeout = min(lam.max_duration_seconds, spec.lambda_.timeout_seconds)
    model_gb = spec.model.size_mb / 1000.0
    if acc.needs_gpu and not lam.gpu:
        return f"lambda has no GPU (model needs {acc.type.value})"
    if memory_mb > lam.max_memory_mb:
        return f"needs {memory_mb:,.0f} MB > lambda max {lam.max_memory_mb:,} MB"
    if spec.model.service_seconds > timeout:
        return f"service {spec.model.service_seconds:g} s > lambda timeout {timeout:g} s"
    if model_gb > lam.max_image_gb:
        return f"model {model_gb:g} GB > lambda image limit {lam.max_image_gb:g} GB"
    return None


def _cloudrun_problem(spec: InferenceWorkloadSpec, price_book: PriceBook) -> str | None:
    acc = spec.accelerator
    run = price_book.platforms.cloudrun
    memory_gib = spec.model.memory_mib / 1024.0
    if acc.needs_gpu:
        memory_gib = max(memory_gib, run.gpu_min_memory_gib)
        if acc.type.value not in run.gpu_types:
            offered = ", ".join(run.gpu_types) or "none"
            return f"cloudrun GPUs are {offered} only, not {acc.type.value}"
        if acc.sharing is not GPUSharing.EXCLUSIVE or acc.count != 1:
            return "cloudrun offers exactly one whole GPU per instance (no MIG/time-slicing)"
    if memory_gib > run.max_memory_gib:
        return f"needs {memory_gib:g} GiB > cloudrun max {run.max_memory_gib:g} GiB"
    return None


def _cluster_problem(
    spec: InferenceWorkloadSpec, price_book: PriceBook, capacity: ClusterCapacity, current: TargetName | None
) -> tuple[str | None, bool]:
    """(why the cluster cannot run it, or None; whether it can only through a node the autoscaler adds)."""
    acc = spec.accelerator
    if acc.needs_gpu and acc.type.value not in price_book.platforms.cluster.gpu_types:
        return f"the cluster offers no {acc.type.value} (price book gpu_types)", False
    if cluster_replica_usd_per_hour(spec, price_book) is None:
        what = f"{acc.type.value} MIG {acc.mig_profile}" if acc.sharing is GPUSharing.MIG else acc.type.value
        return f"the price book has no price for {what}", False
    if current is TargetName.CLUSTER:
        return None, False  # it holds its own resources: capacity gates moving in, not staying
    # The same rule, and the same numbers, as the controller's CapacityAvailable condition.
    fit = replica_fit(spec, capacity)
    if not fit.known or fit.fits_now:
        return None, False
    if fit.ok:
        return None, True  # a node autoscaler adds what is missing
    return fit.message, False
