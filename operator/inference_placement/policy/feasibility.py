"""Which targets can run a workload at all: platform limits, the spec's constraints and cluster capacity.

Hard limits only (a target listed here is never chosen): Lambda has no GPU (Lambda Managed Instances have GPUs, but
the Lambda target does not deploy there: the reason says what they would offer) and caps memory, duration and image
size; Cloud Run offers one whole GPU per instance of the types the price book lists, each within the instance sizes
Cloud Run accepts with it (``platforms.cloudrun.gpu_instances``); an image whose packaging cannot start on a
serverless target (``packaging.py``) is refused there too; the cluster offers only the GPU types its price book and
nodes have, and only while ``max(1, minReplicas)`` replicas fit on its nodes, each wholly on one node
(``capacity.replica_fit``), unless a node autoscaler adds nodes, which lengthens the migration lead instead. Cold
starts longer than the SLO tolerates are not a hard limit: they make the target keep instances warm, which the cost
model prices and the SLO risk checks (``slo_risk.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from inference_placement.api.spec import GPUSharing, InferenceWorkloadSpec, TargetName
from inference_placement.policy.capacity import ClusterCapacity, replica_fit
from inference_placement.policy.economics import cluster_replica_usd_per_hour
from inference_placement.policy.packaging import packaging_problems
from inference_placement.policy.price_book import PriceBook

__all__ = ["Feasibility", "assess_feasibility", "lambda_managed_instances_fact"]


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
    for packaging in packaging_problems(spec):  # the image would not start there (the spec says so)
        out.setdefault(packaging.target, f"packaging: {packaging}")
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
        lmi = lambda_managed_instances_fact(spec, price_book)
        return f"lambda has no GPU (model needs {acc.type.value})" + (f"; {lmi}" if lmi else "")
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
    vcpu = spec.model.cpu_cores
    if not acc.needs_gpu:
        if vcpu > run.max_vcpu:
            return f"needs {vcpu:g} vCPU > cloudrun max {run.max_vcpu:g} vCPU"
        if memory_gib > run.max_memory_gib:
            return f"needs {memory_gib:g} GiB > cloudrun max {run.max_memory_gib:g} GiB"
        return None
    if acc.type.value not in run.gpu_types:
        offered = ", ".join(run.gpu_types) or "none"
        return f"cloudrun GPUs are {offered} only, not {acc.type.value}"
    if acc.sharing is not GPUSharing.EXCLUSIVE or acc.count != 1:
        return "cloudrun offers exactly one whole GPU per instance (no MIG/time-slicing)"
    # the operator raises CPU and memory to the GPU's minimum; above its maximum Cloud Run rejects the revision
    shape = run.gpu_instance(acc.type.value)
    if vcpu > shape.max_vcpu:
        return f"needs {vcpu:g} vCPU > cloudrun max {shape.max_vcpu:g} vCPU with {acc.type.value}"
    if memory_gib > shape.max_memory_gib:
        return f"needs {memory_gib:g} GiB > cloudrun max {shape.max_memory_gib:g} GiB with {acc.type.value}"
    return None


def lambda_managed_instances_fact(spec: InferenceWorkloadSpec, price_book: PriceBook) -> str | None:
    """What Lambda Managed Instances would offer this GPU workload, as a fact beside plain Lambda's refusal (they are
    never a placement: the Lambda target does not deploy there, and they do not scale to zero the way the policy's
    serverless targets do); None when the price book does not describe them or the workload needs no GPU."""
    lmi = price_book.platforms.lambda_managed_instances
    acc = spec.accelerator
    if lmi is None or not acc.needs_gpu:
        return None
    prices = price_book.prices.lambda_managed_instances
    fee = prices.management_fee_fraction if prices is not None else 0.0
    hosts = sorted(
        (name, kind)
        for name, kind in lmi.instance_types.items()
        if kind.gpu_type == acc.type.value and kind.gpus >= acc.count
    )
    zero = (
        f"scaling from zero takes ~{lmi.gpu_scale_from_zero_seconds / 60:g} min"
        if not lmi.scale_to_zero
        else "scales to zero"
    )
    if not hosts:
        return (
            f"Lambda Managed Instances offer GPUs (x86_64 {lmi.gpu_package_type} functions) but the price book lists "
            f"no instance with {acc.describe()}; not deployed by this operator"
        )
    name, _ = hosts[0]
    hour = prices.instance_hour[name] * (1.0 + fee) if prices is not None else None
    price = f" at ${hour:.3f}/h with the {fee:.0%} management fee" if hour is not None else ""
    return (
        f"Lambda Managed Instances could run it on {name}{price}, billed while instances run ({zero}); "
        "not deployed by this operator"
    )


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
