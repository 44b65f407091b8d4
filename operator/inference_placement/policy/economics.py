"""What one workload costs per unit on each target, and how each target behaves for it.

``TargetEconomics`` turns a spec and the price book into rates (USD per replica-second, per busy second, per request,
per cold start, per ping) and timings (cold start, provisioning lead, keep-alive). The cost model, the policy and
the simulator's billing all read these numbers, so a price is computed in exactly one place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from inference_placement.api.spec import GPUSharing, InferenceWorkloadSpec, TargetName
from inference_placement.policy.price_book import PriceBook

__all__ = [
    "Billing",
    "TargetEconomics",
    "cluster_replica_usd_per_hour",
    "economics_for",
    "workload_economics",
]


class Billing(StrEnum):
    REPLICA = "replica"
    """Cluster: every replica billed for its whole life (GPU share or vCPU-hours)."""
    PER_REQUEST = "per-request"
    """Lambda: each invocation billed for its duration (cold start included) plus a request fee."""
    REQUEST_BASED = "request-based"
    """Cloud Run without GPU: an instance is billed while it handles at least one request."""
    INSTANCE_BASED = "instance-based"
    """Cloud Run with GPU: an instance is billed from start until it is reclaimed."""


@dataclass(frozen=True)
class TargetEconomics:
    """Rates and timings of one workload on one target."""

    target: TargetName
    billing: Billing
    concurrency: int
    """Requests in flight per replica or instance."""
    cold_start_seconds: float
    """A new replica or instance until it serves (pod start + model load, or the serverless cold start)."""
    provision_seconds: float
    """A migration's lead: deploy plus the first replica or instance warm."""
    keep_alive_seconds: float | None
    """Idle instances are reclaimed after this (serverless); None for the cluster (replicas stay until removed)."""
    instance_usd_per_second: float
    """A replica (cluster), a live instance (instance-based Cloud Run) or a kept-warm floor instance (provisioned
    concurrency / min instances) per second."""
    busy_usd_per_second: float
    """Per second an instance works: Lambda GB-seconds, request-based Cloud Run vCPU + memory seconds."""
    per_request_usd: float
    """Fee per request (not the duration)."""
    ping_usd: float
    """A warm-up ping, billed as one request of ``prewarm.ping_billed_seconds``."""
    cold_start_usd: float
    """What one cold start adds to the bill (Lambda bills INIT, Cloud Run bills start-up)."""
    floor_instances: int
    """Instances the spec keeps warm whatever the policy says (min replicas / min instances / provisioned)."""
    max_instances: int
    """Cap on replicas or instances."""
    billing_granularity_seconds: float = 0.0
    """Billed duration rounds up to this (Lambda)."""
    floor_busy_usd_per_second: float | None = None
    """Busy rate on floor instances when it differs (Lambda provisioned duration price)."""

    def request_usd(self, service_seconds: float, *, provisioned: bool = False) -> float:
        """Duration charge plus fee of one warm request (serverless); 0 on the cluster (replicas are billed).

        ``provisioned``: served by a floor instance whose duration has its own price (Lambda provisioned
        concurrency: a lower rate per GB-second, on top of the per-second charge while it is enabled)."""
        if self.billing is Billing.REPLICA or self.billing is Billing.INSTANCE_BASED:
            return self.per_request_usd
        billed = service_seconds
        if self.billing_granularity_seconds > 0:
            billed = math.ceil(service_seconds / self.billing_granularity_seconds - 1e-9) * (
                self.billing_granularity_seconds
            )
        rate = self.busy_usd_per_second
        if provisioned and self.floor_busy_usd_per_second is not None:
            rate = self.floor_busy_usd_per_second
        return billed * rate + self.per_request_usd

    @property
    def ping_interval_seconds(self) -> float | None:
        """Pings keep an instance warm when sent a little inside the keep-alive (one controller tick of margin)."""
        if self.keep_alive_seconds is None:
            return None
        return max(self.keep_alive_seconds / 2.0, self.keep_alive_seconds - 60.0)


def _memory_gib(spec: InferenceWorkloadSpec) -> float:
    return spec.model.memory_mib / 1024.0


def cluster_replica_usd_per_hour(spec: InferenceWorkloadSpec, price_book: PriceBook) -> float | None:
    """One in-cluster replica per hour: its GPU share (MIG g/7, time-slicing 1/N, whole GPUs) or its vCPU-hours.

    None when the price book has no price for what the spec asks (an unknown GPU type or MIG profile).
    """
    prices = price_book.prices.cluster
    acc = spec.accelerator
    if not acc.needs_gpu:
        vcpu_hours = max(spec.model.cpu_cores, _memory_gib(spec) / prices.memory_gib_per_vcpu)
        return vcpu_hours * prices.cpu_vcpu_hour
    gpu_price = prices.gpu_hour.get(acc.type.value)
    if gpu_price is None:
        return None
    if acc.sharing is GPUSharing.MIG:
        slices = prices.mig_profiles.get(acc.type.value, {}).get(acc.mig_profile or "")
        if slices is None:
            return None
        share = slices / prices.mig_slices_per_gpu
    elif acc.sharing is GPUSharing.TIME_SLICING:
        share = 1.0 / float(acc.time_slicing_replicas or 1)
    else:
        share = float(acc.count)
    spot = 1.0 - prices.spot_discount if spec.cluster.spot else 1.0
    return gpu_price * share * spot


def _cluster(spec: InferenceWorkloadSpec, pb: PriceBook, node_provision: bool) -> TargetEconomics | None:
    hourly = cluster_replica_usd_per_hour(spec, pb)
    if hourly is None:
        return None
    platform = pb.platforms.cluster
    start = platform.pod_start_seconds + spec.model.size_mb / platform.model_load_mb_per_second
    lead = start + (platform.node_provision_seconds if node_provision else 0.0)
    per_second = hourly / 3600.0
    return TargetEconomics(
        target=TargetName.CLUSTER,
        billing=Billing.REPLICA,
        concurrency=spec.scaling.target_concurrency,
        cold_start_seconds=start,
        provision_seconds=lead,
        keep_alive_seconds=None,
        instance_usd_per_second=per_second,
        busy_usd_per_second=0.0,
        per_request_usd=0.0,
        ping_usd=0.0,
        cold_start_usd=start * per_second,
        floor_instances=spec.scaling.min_replicas,
        max_instances=spec.scaling.max_replicas,
    )


def _lambda(spec: InferenceWorkloadSpec, pb: PriceBook) -> TargetEconomics:
    prices = pb.prices.lambda_
    platform = pb.platforms.lambda_
    memory_gb = (spec.lambda_.memory_mb or math.ceil(spec.model.memory_mib)) / 1024.0
    cold = platform.cold_start_base_seconds + spec.model.size_mb / platform.model_load_mb_per_second
    busy = memory_gb * prices.gb_second
    cap = spec.lambda_.reserved_concurrency or platform.account_concurrency_limit
    return TargetEconomics(
        target=TargetName.LAMBDA,
        billing=Billing.PER_REQUEST,
        concurrency=platform.concurrency_per_instance,
        cold_start_seconds=cold,
        provision_seconds=platform.deploy_seconds + cold,
        keep_alive_seconds=platform.keep_alive_idle_seconds,
        instance_usd_per_second=memory_gb * prices.provisioned_gb_second,
        busy_usd_per_second=busy,
        per_request_usd=prices.per_request,
        ping_usd=pb.prewarm.ping_billed_seconds * busy + prices.per_request,
        cold_start_usd=cold * busy,
        floor_instances=spec.lambda_.provisioned_concurrency,
        max_instances=max(1, cap),
        billing_granularity_seconds=prices.billing_granularity_ms / 1000.0,
        floor_busy_usd_per_second=memory_gb * prices.provisioned_duration_gb_second,
    )


def _cloudrun(spec: InferenceWorkloadSpec, pb: PriceBook) -> TargetEconomics | None:
    prices = pb.prices.cloudrun
    platform = pb.platforms.cloudrun
    acc = spec.accelerator
    vcpu = spec.model.cpu_cores
    memory = _memory_gib(spec)
    if acc.needs_gpu:
        gpu_second = pb.cloudrun_gpu_second(acc.type.value)  # with or without zonal redundancy, as deployed
        if gpu_second is None:
            return None
        shape = platform.gpu_instance(acc.type.value)
        vcpu = max(vcpu, shape.min_vcpu)
        memory = max(memory, shape.min_memory_gib)
        rates = prices.instance_based
        instance = vcpu * rates.vcpu_second + memory * rates.gib_second + gpu_second
        cold = platform.gpu_cold_start_base_seconds + spec.model.size_mb / platform.model_load_mb_per_second
        billing = Billing.INSTANCE_BASED
        busy = 0.0
        per_request = 0.0
        cold_usd = cold * instance
        ping = 0.0  # an instance-based instance is billed for its whole life; a ping adds nothing
    else:
        ib = prices.instance_based
        rb = prices.request_based
        instance = vcpu * ib.vcpu_second + memory * ib.gib_second
        busy = vcpu * rb.vcpu_second + memory * rb.gib_second
        per_request = rb.per_request
        cold = platform.cold_start_base_seconds + spec.model.size_mb / platform.model_load_mb_per_second
        billing = Billing.REQUEST_BASED
        cold_usd = cold * busy
        ping = pb.prewarm.ping_billed_seconds * busy + per_request
    return TargetEconomics(
        target=TargetName.CLOUDRUN,
        billing=billing,
        concurrency=spec.cloud_run.concurrency,
        cold_start_seconds=cold,
        provision_seconds=platform.deploy_seconds + cold,
        keep_alive_seconds=platform.keep_alive_idle_seconds,
        instance_usd_per_second=instance,
        busy_usd_per_second=busy,
        per_request_usd=per_request,
        ping_usd=ping,
        cold_start_usd=cold_usd,
        floor_instances=spec.cloud_run.min_instances,
        max_instances=spec.cloud_run.max_instances,
    )


def economics_for(
    target: TargetName, spec: InferenceWorkloadSpec, price_book: PriceBook, *, node_provision: bool = False
) -> TargetEconomics | None:
    """Economics of one target, or None when the price book cannot price what the spec asks there."""
    if target is TargetName.CLUSTER:
        return _cluster(spec, price_book, node_provision)
    if target is TargetName.LAMBDA:
        return _lambda(spec, price_book)
    return _cloudrun(spec, price_book)


def workload_economics(
    spec: InferenceWorkloadSpec, price_book: PriceBook, *, node_provision: bool = False
) -> dict[TargetName, TargetEconomics]:
    """Economics of every target the price book can price for this spec (feasibility is decided elsewhere)."""
    out: dict[TargetName, TargetEconomics] = {}
    for target in TargetName:
        econ = economics_for(target, spec, price_book, node_provision=node_provision)
        if econ is not None:
            out[target] = econ
    return out
