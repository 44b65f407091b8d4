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
            # The same rule, and the same numbers, as the controller's CapacityAvailable condition.
            fit = replica_fit(spec, capacity)
            if fit.known and not fit.fits_now:
                if fit.ok:
                    needs_node = True  # a node autoscaler adds what is missing
                else:
                    out[TargetName.CLUSTER] = fit.message
    return Feasibility(infeasible=out, cluster_needs_node=needs_node)
