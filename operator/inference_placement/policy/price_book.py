"""The price book and platform model: what each target costs and how it behaves (cold starts, limits, timings).

pydantic models loaded from YAML (the operator reads it from a ConfigMap; ``data/price-book.yaml`` is the packaged
default). The shape follows ``scenario/reference.yaml`` (sections ``prices``, ``platforms``, ``prewarm``,
``migration``), so the benchmark's scenario file is a price book plus profiles. Units are in the field names.
Pure: parsing text is not I/O; reading the packaged default goes through ``importlib.resources``.
"""

from __future__ import annotations

import math
from importlib import resources
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "CloudRunGPUInstance",
    "CloudRunPlatform",
    "CloudRunPrices",
    "CloudRunRates",
    "ClusterPlatform",
    "ClusterPrices",
    "SpotInterruption",
    "LambdaManagedInstanceType",
    "LambdaManagedInstancesPlatform",
    "LambdaManagedInstancesPrices",
    "LambdaPlatform",
    "LambdaPrices",
    "MigrationModel",
    "Platforms",
    "PrewarmModel",
    "PriceBook",
    "PriceBookError",
    "Prices",
    "default_price_book",
    "load_price_book",
    "price_book_from_mapping",
]


class _Model(BaseModel):
    # NaN and infinity would pass the gt/ge bounds of a dict value or an unbounded field and poison every cost.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ClusterPrices(_Model):
    gpu_hour: dict[str, float] = Field(description="USD per whole GPU hour by GPU type (host share included).")
    cpu_vcpu_hour: float = Field(gt=0, description="USD per vCPU hour for CPU-only replicas.")
    memory_gib_per_vcpu: float = Field(
        default=4.0, gt=0, description="GiB of memory included with each vCPU (more memory buys more vCPU-hours)."
    )
    spot_discount: float = Field(default=0.0, ge=0, lt=1, description="Share of the GPU price saved on spot nodes.")
    control_plane_hour: float = Field(default=0.0, ge=0, description="Cluster fee, shared; not charged per workload.")
    mig_profiles: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="Compute slices (g) of each MIG profile, by GPU type."
    )
    mig_slices_per_gpu: int = Field(default=7, ge=1, description="Compute slices of a whole MIG-capable GPU.")

    @model_validator(mode="after")
    def _prices_positive(self) -> ClusterPrices:
        for gpu, price in self.gpu_hour.items():
            if price <= 0:
                raise ValueError(f"gpu_hour.{gpu} must be > 0, got {price}")
        for gpu, profiles in self.mig_profiles.items():
            if gpu not in self.gpu_hour:
                raise ValueError(f"mig_profiles.{gpu} has no gpu_hour price")
            for name, slices in profiles.items():
                if not 1 <= slices <= self.mig_slices_per_gpu:
                    raise ValueError(f"mig_profiles.{gpu}.{name} must be 1..{self.mig_slices_per_gpu}, got {slices}")
        return self


class LambdaPrices(_Model):
    gb_second: float = Field(gt=0, description="USD per GB-second of execution (on demand).")
    per_request: float = Field(ge=0, description="USD per invocation.")
    provisioned_gb_second: float = Field(ge=0, description="USD per GB-second of provisioned concurrency enabled.")
    provisioned_duration_gb_second: float = Field(
        ge=0, description="USD per GB-second of execution on provisioned instances."
    )
    billing_granularity_ms: float = Field(default=1.0, gt=0, description="Billed duration rounds up to this.")


class CloudRunRates(_Model):
    vcpu_second: float = Field(ge=0, description="USD per vCPU-second.")
    gib_second: float = Field(ge=0, description="USD per GiB-second.")
    per_request: float = Field(default=0.0, ge=0, description="USD per request (request-based billing only).")


class CloudRunPrices(_Model):
    request_based: CloudRunRates = Field(description="Billed while an instance handles requests (no GPU).")
    instance_based: CloudRunRates = Field(description="Billed for the whole life of an instance (GPU, min instances).")
    gpu_second: dict[str, float] = Field(
        default_factory=dict,
        description="USD per GPU-second by GPU type, without GPU zonal redundancy (gpuZonalRedundancyDisabled: true).",
    )
    gpu_second_zonal_redundancy: dict[str, float] = Field(
        default_factory=dict,
        description="USD per GPU-second by GPU type with GPU zonal redundancy (Cloud Run's default for a GPU service).",
    )

    @model_validator(mode="after")
    def _gpu_prices_positive(self) -> CloudRunPrices:
        for table, prices in (
            ("gpu_second", self.gpu_second),
            ("gpu_second_zonal_redundancy", self.gpu_second_zonal_redundancy),
        ):
            for gpu, price in prices.items():
                if price <= 0:
                    raise ValueError(f"{table}.{gpu} must be > 0, got {price}")
        return self


class LambdaManagedInstancesPrices(_Model):
    """Lambda Managed Instances: the EC2 instances of a capacity provider, a management fee on top, and requests
    (no per-GB-second duration charge)."""

    instance_hour: dict[str, float] = Field(
        default_factory=dict, description="EC2 on-demand USD per instance hour by instance type."
    )
    management_fee_fraction: float = Field(
        default=0.15, ge=0, description="Lambda's management fee as a share of the EC2 on-demand instance price."
    )
    per_request: float = Field(default=0.0000002, ge=0, description="USD per invocation.")

    @model_validator(mode="after")
    def _instance_prices_positive(self) -> LambdaManagedInstancesPrices:
        for instance, price in self.instance_hour.items():
            if price <= 0:
                raise ValueError(f"instance_hour.{instance} must be > 0, got {price}")
        return self


class Prices(_Model):
    cluster: ClusterPrices
    lambda_: LambdaPrices = Field(alias="lambda")
    cloudrun: CloudRunPrices
    lambda_managed_instances: LambdaManagedInstancesPrices | None = Field(
        default=None, description="Lambda Managed Instances (facts only: the Lambda target does not deploy there)."
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SpotInterruption(_Model):
    """How often a cloud reclaims a spot node, and with how much notice: a documented platform fact per provider
    (``policy/spot.py`` prices the pre-emption risk from it)."""

    interruptions_per_node_hour: float = Field(
        ge=0, description="Expected reclaims of one spot node per hour (a Poisson rate; the policy's planning figure)."
    )
    notice_seconds: float = Field(
        ge=0, description="Warning before the node goes: its Pods are drained then, in-flight requests may finish."
    )
    source: str = Field(default="", description="Where the figure comes from and what it assumes.")


_AWS_SPOT_SOURCE = (
    "EC2 Spot Instance Advisor: 'frequency of interruption' is the share of a type's spot capacity reclaimed over "
    "the trailing month, in bands <5%, 5-10%, 10-15%, 15-20%, >20%; assumed 20% per node-month (the top of the "
    "15-20% band: GPU types sit in the upper bands), -ln(1-0.2)/730 h; two-minute interruption notice (EC2 user guide)"
)
_GCP_SPOT_SOURCE = (
    "Compute Engine publishes no fixed pre-emption rate for Spot VMs ('generally low', varying by day and zone; "
    "a zone's measured rate is in the capacity-history API): assumed one reclaim per node-day, the cadence of "
    "preemptible VMs, which always stop after 24 h (a deliberately conservative planning figure); Spot VMs "
    "terminate 30 s after the pre-emption notice (GKE Spot VMs)"
)


def _default_spot_interruption() -> dict[str, SpotInterruption]:
    return {
        "aws": SpotInterruption(
            interruptions_per_node_hour=-math.log(1.0 - 0.20) / 730.0, notice_seconds=120.0, source=_AWS_SPOT_SOURCE
        ),
        "gcp": SpotInterruption(interruptions_per_node_hour=1.0 / 24.0, notice_seconds=30.0, source=_GCP_SPOT_SOURCE),
    }


class ClusterPlatform(_Model):
    gpu_types: list[str] = Field(description="GPU types the cluster's node pools offer.")
    pod_start_seconds: float = Field(ge=0, description="Pod scheduled until the server process runs.")
    model_load_mb_per_second: float = Field(gt=0, description="Image pull plus weights load rate.")
    node_provision_seconds: float = Field(default=0.0, ge=0, description="A new GPU node when none is free.")
    scale_to_zero: bool = Field(default=False, description="Platform default: replicas may drop to zero.")
    spot_interruption: dict[str, SpotInterruption] = Field(
        default_factory=_default_spot_interruption,
        description=(
            "Spot pre-emption facts by cloud provider (aws: EKS and Karpenter spot nodes; gcp: GKE Spot VMs); the "
            "operator's cluster.spotNodeLabels says which provider's nodes it schedules on."
        ),
    )


class LambdaPlatform(_Model):
    gpu: bool = Field(default=False, description="Whether the platform offers GPUs.")
    max_memory_mb: int = Field(gt=0, description="Largest function memory.")
    max_duration_seconds: float = Field(gt=0, description="Longest invocation.")
    max_image_gb: float = Field(default=10.0, gt=0, description="Largest container image.")
    concurrency_per_instance: int = Field(default=1, ge=1, description="Requests in flight per instance.")
    account_concurrency_limit: int = Field(default=1000, ge=1, description="Instances per account and region.")
    cold_start_base_seconds: float = Field(ge=0, description="Cold start before the model loads.")
    model_load_mb_per_second: float = Field(gt=0, description="Model load rate during a cold start.")
    keep_alive_idle_seconds: float = Field(
        gt=0,
        description=(
            "Idle instances are reclaimed after this (Lambda calls the period non-deterministic; the figure is the "
            "commonly observed one). The router's first request to a function idle longer is measured as a cold "
            "start."
        ),
    )
    deploy_seconds: float = Field(ge=0, description="Create or update a function until Active.")


class CloudRunGPUInstance(_Model):
    """The instance sizes Cloud Run accepts with one GPU of a type (a revision outside them is rejected)."""

    min_vcpu: float = Field(gt=0, description="Fewest vCPUs of an instance with this GPU.")
    min_memory_gib: float = Field(gt=0, description="Least memory of an instance with this GPU.")
    max_vcpu: float = Field(gt=0, description="Most vCPUs the operator deploys with this GPU.")
    max_memory_gib: float = Field(gt=0, description="Most memory the operator deploys with this GPU.")

    @model_validator(mode="after")
    def _ordered(self) -> CloudRunGPUInstance:
        if self.max_vcpu < self.min_vcpu:
            raise ValueError(f"max_vcpu {self.max_vcpu:g} is below min_vcpu {self.min_vcpu:g}")
        if self.max_memory_gib < self.min_memory_gib:
            raise ValueError(f"max_memory_gib {self.max_memory_gib:g} is below min_memory_gib {self.min_memory_gib:g}")
        return self


class CloudRunPlatform(_Model):
    gpu_types: list[str] = Field(default_factory=list, description="GPU types Cloud Run offers.")
    gpu_min_vcpu: float = Field(
        default=4.0, gt=0, description="Fewest vCPUs of a GPU instance (a GPU type without gpu_instances entry)."
    )
    gpu_min_memory_gib: float = Field(
        default=16.0, gt=0, description="Least memory of a GPU instance (a GPU type without gpu_instances entry)."
    )
    gpu_instances: dict[str, CloudRunGPUInstance] = Field(
        default_factory=dict, description="Instance sizes Cloud Run accepts with each GPU type."
    )
    gpu_zonal_redundancy: bool = Field(
        default=False,
        description=(
            "GPU zonal redundancy of the services the operator deploys, and so which GPU price applies: false sets "
            "gpuZonalRedundancyDisabled: true on every GPU revision (prices.cloudrun.gpu_second); true keeps Cloud "
            "Run's default (prices.cloudrun.gpu_second_zonal_redundancy)."
        ),
    )
    max_vcpu: float = Field(default=8.0, gt=0, description="Most vCPUs of an instance without a GPU.")
    max_memory_gib: float = Field(gt=0, description="Largest instance memory without a GPU.")
    default_concurrency_per_instance: int = Field(default=80, ge=1, description="Requests in flight per instance.")
    max_instances_default: int = Field(default=100, ge=1, description="Default instance cap.")
    cold_start_base_seconds: float = Field(ge=0, description="Cold start of a CPU instance before the model loads.")
    gpu_cold_start_base_seconds: float = Field(ge=0, description="Cold start of a GPU instance before the model loads.")
    model_load_mb_per_second: float = Field(gt=0, description="Model load rate during a cold start.")
    keep_alive_idle_seconds: float = Field(
        gt=0,
        description=(
            "Idle instances are reclaimed after this (Cloud Run keeps an idle instance up to 15 minutes). The "
            "router's first request to a service idle longer is measured as a cold start."
        ),
    )
    deploy_seconds: float = Field(ge=0, description="New revision until Ready.")

    def gpu_instance(self, gpu: str) -> CloudRunGPUInstance:
        """The sizes Cloud Run accepts with ``gpu``: its ``gpu_instances`` entry, else the ``gpu_min_*`` fields up to
        the largest CPU instance."""
        found = self.gpu_instances.get(gpu)
        if found is not None:
            return found
        return CloudRunGPUInstance(
            min_vcpu=self.gpu_min_vcpu,
            min_memory_gib=self.gpu_min_memory_gib,
            max_vcpu=max(self.max_vcpu, self.gpu_min_vcpu),
            max_memory_gib=max(self.max_memory_gib, self.gpu_min_memory_gib),
        )


class LambdaManagedInstanceType(_Model):
    """One EC2 instance type a Lambda Managed Instances capacity provider may run."""

    vcpu: int = Field(ge=1, description="vCPUs of the instance.")
    memory_gib: float = Field(gt=0, description="Memory of the instance.")
    gpu_type: str | None = Field(default=None, description="GPU type of the instance (none for CPU instances).")
    gpus: int = Field(default=0, ge=0, description="GPUs of the instance.")
    gpu_memory_gib: float = Field(default=0.0, ge=0, description="Memory of each GPU.")


class LambdaManagedInstancesPlatform(_Model):
    """Lambda Managed Instances (Lambda on EC2 instances of a capacity provider): what the policy knows of them.

    The Lambda target deploys plain Lambda functions only, so these are facts for feasibility and ``explain``, never
    a placement: the policy never treats them as a target, let alone a scale-to-zero one."""

    deployed_by_operator: bool = Field(
        default=False, description="Whether the Lambda target can place a workload there (not yet: always false)."
    )
    instance_types: dict[str, LambdaManagedInstanceType] = Field(
        default_factory=dict, description="Instance types a capacity provider may run."
    )
    gpu_accelerator_memory_gib: list[int] = Field(
        default_factory=lambda: [3, 6, 12, 16, 24, 48],
        description="Valid AcceleratorConfig.AcceleratorMemorySize values (GiB of GPU memory per environment).",
    )
    gpu_package_type: str = Field(default="Image", description="Package type a GPU function must use.")
    gpu_architecture: str = Field(default="x86_64", description="Architecture a GPU function must use.")
    scale_to_zero: bool = Field(
        default=False,
        description=(
            "Whether idle capacity goes to zero by default (no: a capacity provider keeps instances running; GPU "
            "functions may set MinExecutionEnvironments to 0, then scaling from zero takes minutes)."
        ),
    )
    default_min_instances: int = Field(
        default=3, ge=0, description="Instances launched when a version is published (three, for AZ resiliency)."
    )
    gpu_scale_from_zero_seconds: float = Field(
        default=300.0,
        ge=0,
        description="GPU capacity back from zero (AWS: 'can take several minutes'; requests may fail meanwhile).",
    )
    scale_up_doubling_seconds: float = Field(
        default=300.0,
        gt=0,
        description="Traffic that more than doubles within this window may be throttled (scaling is asynchronous).",
    )

    @model_validator(mode="after")
    def _not_a_target(self) -> LambdaManagedInstancesPlatform:
        if self.deployed_by_operator:
            raise ValueError("deployed_by_operator: the Lambda target does not deploy to Lambda Managed Instances yet")
        return self


class Platforms(_Model):
    cluster: ClusterPlatform
    lambda_: LambdaPlatform = Field(alias="lambda")
    cloudrun: CloudRunPlatform
    lambda_managed_instances: LambdaManagedInstancesPlatform | None = Field(
        default=None, description="Lambda Managed Instances (facts only: the Lambda target does not deploy there)."
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class PrewarmModel(_Model):
    ping_billed_seconds: float = Field(
        default=0.1, gt=0, description="A warm-up ping is billed as a request this long."
    )


class MigrationModel(_Model):
    make_before_break: bool = Field(default=True, description="Both placements are billed until the source retires.")
    drain_seconds: float = Field(default=30.0, ge=0, description="Source serves in-flight requests after the switch.")


class PriceBook(_Model):
    """Prices and platform behaviour the cost model and the simulator read (USD, on demand)."""

    version: int = Field(default=1, ge=1, le=1)
    prices: Prices
    platforms: Platforms
    prewarm: PrewarmModel = Field(default_factory=PrewarmModel)
    migration: MigrationModel = Field(default_factory=MigrationModel)

    @model_validator(mode="after")
    def _consistent(self) -> PriceBook:
        for gpu in self.platforms.cluster.gpu_types:
            if gpu not in self.prices.cluster.gpu_hour:
                raise ValueError(f"platforms.cluster.gpu_types lists {gpu} but prices.cluster.gpu_hour has no price")
        run = self.platforms.cloudrun
        table = "gpu_second_zonal_redundancy" if run.gpu_zonal_redundancy else "gpu_second"
        for gpu in run.gpu_types:
            if self.cloudrun_gpu_second(gpu) is None:
                raise ValueError(f"platforms.cloudrun.gpu_types lists {gpu} but prices.cloudrun.{table} has no price")
        for gpu in run.gpu_instances:
            if gpu not in run.gpu_types:
                raise ValueError(f"platforms.cloudrun.gpu_instances has {gpu}, which gpu_types does not list")
        lmi = self.platforms.lambda_managed_instances
        if lmi is not None:
            priced = self.prices.lambda_managed_instances
            for instance in lmi.instance_types:
                if priced is None or instance not in priced.instance_hour:
                    raise ValueError(
                        f"platforms.lambda_managed_instances lists {instance} but "
                        "prices.lambda_managed_instances.instance_hour has no price"
                    )
        return self

    def cloudrun_gpu_second(self, gpu: str) -> float | None:
        """USD per second of one ``gpu`` on Cloud Run as the operator deploys it (with or without GPU zonal
        redundancy, per ``platforms.cloudrun.gpu_zonal_redundancy``); None = not priced."""
        prices = self.prices.cloudrun
        table = (
            prices.gpu_second_zonal_redundancy if self.platforms.cloudrun.gpu_zonal_redundancy else prices.gpu_second
        )
        return table.get(gpu)


class PriceBookError(ValueError):
    """A price book that cannot be used; the message names the field."""


def _field_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(root)"


def price_book_from_mapping(raw: Any, *, source: str = "price book") -> PriceBook:
    """Validate an already-parsed mapping; raise :class:`PriceBookError` naming the first bad field."""
    if not isinstance(raw, dict):
        raise PriceBookError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return PriceBook.model_validate(raw)
    except ValidationError as err:
        problems = [f"{_field_path(e['loc'])}: {e['msg']}" for e in err.errors(include_url=False)]
        raise PriceBookError(f"{source}: " + "; ".join(problems)) from err


def load_price_book(text: str, *, source: str = "price book") -> PriceBook:
    """Parse a price book from YAML text (a ConfigMap value). Raises :class:`PriceBookError` with the field path."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise PriceBookError(f"{source} is not valid YAML: {err}") from err
    return price_book_from_mapping(raw, source=source)


def default_price_book() -> PriceBook:
    """The price book packaged with the operator (``inference_placement/data/price-book.yaml``)."""
    text = resources.files("inference_placement").joinpath("data/price-book.yaml").read_text(encoding="utf-8")
    return load_price_book(text, source="packaged price book")
