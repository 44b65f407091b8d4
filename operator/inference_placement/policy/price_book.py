"""The price book and platform model: what each target costs and how it behaves (cold starts, limits, timings).

pydantic models loaded from YAML (the operator reads it from a ConfigMap; ``data/price-book.yaml`` is the packaged
default). The shape follows ``scenario/reference.yaml`` (sections ``prices``, ``platforms``, ``prewarm``,
``migration``), so the benchmark's scenario file is a price book plus profiles. Units are in the field names.
Pure: parsing text is not I/O; reading the packaged default goes through ``importlib.resources``.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "CloudRunPlatform",
    "CloudRunPrices",
    "CloudRunRates",
    "ClusterPlatform",
    "ClusterPrices",
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
    gpu_second: dict[str, float] = Field(default_factory=dict, description="USD per GPU-second by GPU type.")

    @model_validator(mode="after")
    def _gpu_prices_positive(self) -> CloudRunPrices:
        for gpu, price in self.gpu_second.items():
            if price <= 0:
                raise ValueError(f"gpu_second.{gpu} must be > 0, got {price}")
        return self


class Prices(_Model):
    cluster: ClusterPrices
    lambda_: LambdaPrices = Field(alias="lambda")
    cloudrun: CloudRunPrices

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ClusterPlatform(_Model):
    gpu_types: list[str] = Field(description="GPU types the cluster's node pools offer.")
    pod_start_seconds: float = Field(ge=0, description="Pod scheduled until the server process runs.")
    model_load_mb_per_second: float = Field(gt=0, description="Image pull plus weights load rate.")
    node_provision_seconds: float = Field(default=0.0, ge=0, description="A new GPU node when none is free.")
    scale_to_zero: bool = Field(default=False, description="Platform default: replicas may drop to zero.")


class LambdaPlatform(_Model):
    gpu: bool = Field(default=False, description="Whether the platform offers GPUs.")
    max_memory_mb: int = Field(gt=0, description="Largest function memory.")
    max_duration_seconds: float = Field(gt=0, description="Longest invocation.")
    max_image_gb: float = Field(default=10.0, gt=0, description="Largest container image.")
    concurrency_per_instance: int = Field(default=1, ge=1, description="Requests in flight per instance.")
    account_concurrency_limit: int = Field(default=1000, ge=1, description="Instances per account and region.")
    cold_start_base_seconds: float = Field(ge=0, description="Cold start before the model loads.")
    model_load_mb_per_second: float = Field(gt=0, description="Model load rate during a cold start.")
    keep_alive_idle_seconds: float = Field(gt=0, description="Idle instances are reclaimed after this.")
    deploy_seconds: float = Field(ge=0, description="Create or update a function until Active.")


class CloudRunPlatform(_Model):
    gpu_types: list[str] = Field(default_factory=list, description="GPU types Cloud Run offers.")
    gpu_min_vcpu: float = Field(default=4.0, gt=0, description="Fewest vCPUs of a GPU instance.")
    gpu_min_memory_gib: float = Field(default=16.0, gt=0, description="Least memory of a GPU instance.")
    max_memory_gib: float = Field(gt=0, description="Largest instance memory.")
    default_concurrency_per_instance: int = Field(default=80, ge=1, description="Requests in flight per instance.")
    max_instances_default: int = Field(default=100, ge=1, description="Default instance cap.")
    cold_start_base_seconds: float = Field(ge=0, description="Cold start of a CPU instance before the model loads.")
    gpu_cold_start_base_seconds: float = Field(ge=0, description="Cold start of a GPU instance before the model loads.")
    model_load_mb_per_second: float = Field(gt=0, description="Model load rate during a cold start.")
    keep_alive_idle_seconds: float = Field(gt=0, description="Idle instances are reclaimed after this.")
    deploy_seconds: float = Field(ge=0, description="New revision until Ready.")


class Platforms(_Model):
    cluster: ClusterPlatform
    lambda_: LambdaPlatform = Field(alias="lambda")
    cloudrun: CloudRunPlatform

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
        for gpu in self.platforms.cloudrun.gpu_types:
            if gpu not in self.prices.cloudrun.gpu_second:
                raise ValueError(
                    f"platforms.cloudrun.gpu_types lists {gpu} but prices.cloudrun.gpu_second has no price"
                )
        return self


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
