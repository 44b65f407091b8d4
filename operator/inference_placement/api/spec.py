"""The InferenceWorkload spec: what a platform team declares.

These pydantic models are the single source of truth for the API: the CRD's OpenAPI schema in ``crds/`` is
generated from them (``inference-placement crd``), and the controller, the simulator and the benchmark all read
a workload through them. Field names are snake_case in Python and camelCase on the wire (aliases).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from inference_placement.api.quantity import NON_NEGATIVE_QUANTITY_PATTERN, parse_quantity

__all__ = [
    "AcceleratorOption",
    "AcceleratorSpec",
    "AcceleratorType",
    "CLOUD_RUN_REGION_PATTERN",
    "DEFAULT_TOLERABLE_COLD_START_SECONDS",
    "LAMBDA_REGION_PATTERN",
    "ApiModel",
    "BudgetAction",
    "BudgetSpec",
    "CloudRunSpec",
    "ClusterSpec",
    "ComplianceSpec",
    "EnvVar",
    "GPUSharing",
    "InferenceWorkloadSpec",
    "LambdaArchitecture",
    "LatencyMeasure",
    "LambdaSpec",
    "LambdaWebAdapter",
    "ModelSpec",
    "PlacementSpec",
    "Quantity",
    "SERVERLESS",
    "SLOSpec",
    "ScalingSpec",
    "ServerlessTargetRef",
    "TargetName",
    "ThresholdMode",
    "ThresholdsSpec",
    "default_tolerable_cold_start",
    "parse_cpu_cores",
    "parse_memory_mib",
]


CLOUD_RUN_REGION_PATTERN: Final = r"^[a-z]+-[a-z]+[0-9]+$"
"""Google Cloud region names: us-central1, europe-west4, asia-northeast1."""
LAMBDA_REGION_PATTERN: Final = r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]+$"
"""AWS region names: us-east-1, eu-west-3, us-gov-west-1, ap-southeast-2."""


class ApiModel(BaseModel):
    """Base of every API model: camelCase aliases on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=False,
        validate_default=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as the apiserver stores it (camelCase, enums as strings, unset optionals left out).

        Empty strings are left out too: a Kubernetes 1.20 apiserver (this project's first test cluster) decodes ""
        as null and rejects it for string fields; every such field defaults to "" when read back.
        """
        wire: dict[str, Any] = _drop_empty_strings(self.model_dump(mode="json", by_alias=True, exclude_none=True))
        return wire


def _drop_empty_strings(value: Any) -> Any:
    # model_dump's output holds plain dicts and lists; scalars (most of it) are kept without a call each
    if isinstance(value, dict):
        return {k: _drop_empty_strings(v) if type(v) in _CONTAINERS else v for k, v in value.items() if v != ""}
    if isinstance(value, list):
        return [_drop_empty_strings(v) if type(v) in _CONTAINERS else v for v in value]
    return value


_CONTAINERS = frozenset({dict, list})


class AcceleratorType(StrEnum):
    NONE = "none"
    NVIDIA_T4 = "nvidia-t4"
    NVIDIA_L4 = "nvidia-l4"
    NVIDIA_A10G = "nvidia-a10g"
    NVIDIA_A100_40GB = "nvidia-a100-40gb"
    NVIDIA_A100_80GB = "nvidia-a100-80gb"
    NVIDIA_H100_80GB = "nvidia-h100-80gb"
    NVIDIA_RTX_PRO_6000 = "nvidia-rtx-pro-6000"
    """NVIDIA RTX PRO 6000 Blackwell (96 GB): a Cloud Run GPU since 2026 (Cloud Run's accelerator name)."""


class GPUSharing(StrEnum):
    EXCLUSIVE = "exclusive"
    MIG = "mig"
    TIME_SLICING = "time-slicing"


class TargetName(StrEnum):
    CLUSTER = "cluster"
    CLOUDRUN = "cloudrun"
    LAMBDA = "lambda"


SERVERLESS: Final[tuple[TargetName, ...]] = (TargetName.CLOUDRUN, TargetName.LAMBDA)
"""The targets the platform scales (instances, cold starts, warm floors), in ``TargetName`` order: a tuple because
callers list them in this order (``explain``'s thresholds, the reconciler's cleanup)."""


class LambdaWebAdapter(StrEnum):
    """How the AWS Lambda Web Adapter reaches the function (it turns Function URL events into HTTP requests)."""

    IMAGE = "image"
    """The image carries it as an extension at /opt/extensions/lambda-adapter (the operator sets AWS_LWA_PORT and
    AWS_LWA_READINESS_CHECK_PATH from the model's port and health path)."""
    LAYER = "layer"
    """As a Lambda layer: zip functions only; refused (the operator deploys container images)."""
    NONE = "none"
    """No adapter: the image answers Lambda's Function URL events (payload 2.0) itself."""


class LambdaArchitecture(StrEnum):
    X86_64 = "x86_64"
    ARM64 = "arm64"


class BudgetAction(StrEnum):
    ALERT = "alert"
    """Only report: BudgetExceeded condition, an Event and the burn metric."""
    PREFER_CHEAPER = "prefer-cheaper"
    """Choose the cheapest feasible target even where a costlier one carries less SLO risk."""
    CAP_SCALING = "cap-scaling"
    """Cap replicas / serverless concurrency so the projected month stays within budget."""


class LatencyMeasure(StrEnum):
    """What the latency objective bounds, as the router measures it."""

    RESPONSE = "Response"
    """The whole answer: from the request to its last byte (the router's upstream request time)."""
    FIRST_TOKEN = "FirstToken"
    """The time to the answer's first byte as the client sees it at the router, waits and holds included: a streamed
    LLM answer's first token."""


class ThresholdMode(StrEnum):
    AUTO = "auto"
    EXPLICIT = "explicit"


def _normalise_quantity(value: object) -> object:
    if isinstance(value, bool):
        return value  # rejected by the str type below, with the field named
    if isinstance(value, (int, float)):
        return str(value)
    return value


Quantity = Annotated[
    str,
    Field(
        pattern=NON_NEGATIVE_QUANTITY_PATTERN,
        json_schema_extra={"x-kubernetes-int-or-string": True},
    ),
]
"""A non-negative Kubernetes resource quantity such as ``500m``, ``2``, ``16Gi``, ``1e3`` (see ``api.quantity``)."""

_MIB = 2.0**20


def parse_cpu_cores(quantity: str) -> float:
    """CPU cores in a quantity: ``"500m"`` -> 0.5, ``"2"`` -> 2.0."""
    return float(parse_quantity(quantity))


def parse_memory_mib(quantity: str) -> float:
    """Memory in MiB: ``"2Gi"`` -> 2048.0, ``"512Mi"`` -> 512.0, ``"1G"`` -> 953.67."""
    return float(parse_quantity(quantity)) / _MIB


class EnvVar(ApiModel):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Variable name.")
    value: str = Field(default="", description="Literal value (never put secrets here).")


class ModelSpec(ApiModel):
    """The model server container."""

    image: str = Field(min_length=1, description="Container image of the model server.")
    port: int = Field(default=8080, ge=1, le=65535, description="Port the model server listens on.")
    health_path: str = Field(default="/healthz", pattern=r"^/", description="HTTP path answering 200 when ready.")
    predict_path: str = Field(default="/predict", pattern=r"^/", description="HTTP path serving predictions.")
    size_mb: int = Field(ge=1, description="Size of the model weights in MB (drives cold start and load time).")
    cpu: Quantity = Field(default="1", description="CPU per replica (Kubernetes quantity, e.g. 500m, 4).")
    memory: Quantity = Field(default="2Gi", description="Memory per replica (Kubernetes quantity, e.g. 2Gi).")
    service_seconds: float = Field(
        default=0.05, gt=0, le=900, description="Warm service time of one request in seconds (before metrics exist)."
    )
    env: list[EnvVar] = Field(default_factory=list, description="Environment variables of the model server.")

    @field_validator("cpu", "memory", mode="before")
    @classmethod
    def _quantity_from_number(cls, value: object) -> object:
        return _normalise_quantity(value)

    @property
    def cpu_cores(self) -> float:
        return parse_cpu_cores(self.cpu)

    @property
    def memory_mib(self) -> float:
        return parse_memory_mib(self.memory)


class AcceleratorOption(ApiModel):
    """One acceptable accelerator: a GPU type and how it is shared, with its speed relative to the model's."""

    type: AcceleratorType = Field(default=AcceleratorType.NONE, description="GPU type, or none for CPU-only.")
    count: int = Field(default=1, ge=1, le=8, description="Whole GPUs per replica (exclusive sharing only).")
    sharing: GPUSharing = Field(
        default=GPUSharing.EXCLUSIVE, description="exclusive GPUs, an NVIDIA MIG slice, or a time-sliced GPU."
    )
    mig_profile: str | None = Field(
        default=None,
        pattern=r"^[1-7]g\.[0-9]+gb$",
        max_length=16,
        description="MIG profile such as 1g.10gb (sharing: mig only).",
    )
    time_slicing_replicas: int | None = Field(
        default=None,
        ge=2,
        le=64,
        description="How many replicas share one GPU by time-slicing (sharing: time-slicing only).",
    )
    service_time_factor: float = Field(
        default=1.0,
        gt=0,
        le=100,
        description=(
            "Warm service time on this accelerator relative to model.serviceSeconds, with the GPU to itself "
            "(1: as fast; 2: twice as slow). Time-slicing contention with other tenants is modelled on top."
        ),
    )

    @property
    def needs_gpu(self) -> bool:
        return self.type is not AcceleratorType.NONE

    def describe(self) -> str:
        """``nvidia-l4``, ``2 x nvidia-a100-80gb``, ``nvidia-a100-80gb MIG 1g.10gb``, ``nvidia-l4 time-sliced /4``."""
        if not self.needs_gpu:
            return "CPU only"
        if self.sharing is GPUSharing.MIG:
            return f"{self.type.value} MIG {self.mig_profile}"
        if self.sharing is GPUSharing.TIME_SLICING:
            return f"{self.type.value} time-sliced /{self.time_slicing_replicas or 1}"
        return self.type.value if self.count == 1 else f"{self.count} x {self.type.value}"

    def key(self) -> tuple[str, int, str, str, int]:
        """What tells two accelerators apart where the replica runs (the speed factor aside)."""
        return (
            self.type.value,
            self.count,
            self.sharing.value,
            self.mig_profile or "",
            self.time_slicing_replicas or 0,
        )


class AcceleratorSpec(AcceleratorOption):
    """The GPU the model needs and how it may be shared: the preferred accelerator, then ``alternatives``.

    The fields of this object are the first acceptable accelerator (the single-accelerator form of earlier
    versions is this object without ``alternatives``); ``alternatives`` lists further acceptable ones in order of
    preference. The operator runs the cluster's replicas on the cheapest that meets the SLO and fits the
    cluster's free capacity (ties go to the earlier one). A list is an extra field, not a list-or-object
    ``accelerator``: a structural CRD schema cannot type one field as either.
    """

    alternatives: list[AcceleratorOption] = Field(
        default_factory=list,
        max_length=8,
        description=(
            "Further acceptable accelerators for the cluster's replicas, in order of preference after the one "
            "above (e.g. a MIG slice or a time-sliced share of a GPU)."
        ),
    )

    def options(self) -> tuple[AcceleratorOption, ...]:
        """Every acceptable accelerator in order of preference: this object's own fields first."""
        first = AcceleratorOption.model_validate(self.model_dump(exclude={"alternatives"}))
        return (first, *self.alternatives)

    @classmethod
    def only(cls, option: AcceleratorOption) -> AcceleratorSpec:
        """The single-accelerator spec of one option (what a replica on it is rendered and priced from)."""
        return cls.model_validate(option.model_dump())


DEFAULT_TOLERABLE_COLD_START_SECONDS: Final = 10.0
"""The tolerable cold start of a workload that sets none and whose objective is shorter."""


def default_tolerable_cold_start(objective_seconds: float) -> float:
    """The tolerable cold start of a workload that sets none: 10 s, or its latency objective when longer. A cold
    start within the objective can still leave the request inside it (an image generated in 23 s after a 20 s
    start meets a 60 s objective), so the default never rules out what the objective allows; whether a request
    that waits for a start misses is the objective's own test (``SloTerms.cold_request_misses``)."""
    return max(DEFAULT_TOLERABLE_COLD_START_SECONDS, objective_seconds)


class SLOSpec(ApiModel):
    """The service level the workload must meet wherever it runs."""

    objective_seconds: float = Field(
        default=1.0, gt=0, alias="latencyP99Seconds", description="p99 end-to-end latency objective, seconds."
    )
    attainment: float = Field(
        default=0.99, ge=0.5, le=1.0, description="Share of requests that must finish within latencyP99Seconds."
    )
    latency_measure: LatencyMeasure = Field(
        default=LatencyMeasure.RESPONSE,
        description=(
            "What latencyP99Seconds bounds: Response, the whole answer; FirstToken, the time to the answer's first "
            "byte at the router (a streamed LLM answer's first token, waits included), which the router then "
            "measures for this workload and the policy sizes queueing against."
        ),
    )
    tolerable_cold_start_seconds: float | None = Field(
        default=None,
        ge=0,
        description=(
            "Longest cold start a request may wait: a serverless target's or a woken replica's start (serverless "
            "feasibility, the router's hold bound at zero replicas). Unset: 10 s, or latencyP99Seconds when longer "
            "(a start the objective itself leaves room for is never ruled out by the default)."
        ),
    )

    def tolerable_cold_start(self) -> float:
        """The tolerable cold start in force: the one set, else the default for this objective."""
        if self.tolerable_cold_start_seconds is not None:
            return self.tolerable_cold_start_seconds
        return default_tolerable_cold_start(self.objective_seconds)


class BudgetSpec(ApiModel):
    """Monthly spending limit."""

    monthly_usd: float | None = Field(default=None, ge=0, description="Monthly budget in USD; unset = no budget.")
    action: BudgetAction = Field(default=BudgetAction.ALERT, description="What to do when the projection exceeds it.")


class ThresholdsSpec(ApiModel):
    """When to offload to serverless and when to reclaim into the cluster."""

    mode: ThresholdMode = Field(
        default=ThresholdMode.AUTO,
        description="auto: thresholds from the cost break-even; explicit: the request rates below.",
    )
    offload_below_rps: float | None = Field(
        default=None, ge=0, description="Offload to serverless when sustained traffic is below this (explicit mode)."
    )
    reclaim_above_rps: float | None = Field(
        default=None, ge=0, description="Reclaim into the cluster when sustained traffic is above this (explicit)."
    )
    hysteresis_fraction: float = Field(
        default=0.2, ge=0, le=1, description="Band around the auto break-even inside which nothing moves."
    )


class PlacementSpec(ApiModel):
    """Where the workload may run and how eagerly it moves."""

    allowed_targets: list[TargetName] = Field(
        default_factory=lambda: [TargetName.CLUSTER],
        min_length=1,
        max_length=3,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Targets the operator may place the workload on.",
    )
    pin: TargetName | None = Field(default=None, description="Always run here (must be an allowed target).")
    thresholds: ThresholdsSpec = Field(default_factory=ThresholdsSpec, description="Offload and reclaim thresholds.")
    sustain_seconds: int = Field(
        default=300, ge=0, le=86400, description="A threshold must hold this long before a migration starts."
    )
    cooldown_seconds: int = Field(
        default=900, ge=0, le=604800, description="Minimum time between two migrations of this workload."
    )


class ScalingSpec(ApiModel):
    """Replica bounds in the cluster."""

    min_replicas: int = Field(default=1, ge=0, le=1000, description="Fewest in-cluster replicas while placed there.")
    max_replicas: int = Field(default=10, ge=1, le=1000, description="Most in-cluster replicas.")
    target_concurrency: int = Field(default=4, ge=1, le=1000, description="Requests in flight per replica.")


class ClusterSpec(ApiModel):
    """In-cluster settings."""

    spot: bool = Field(
        default=False,
        description=(
            "Run on spot/preemptible nodes when it pays: the policy prefers spot nodes (priced with the spot "
            "discount) while the pre-emption risk (a pre-empted replica is a new node and a cold start, unless "
            "burst spillover covers it) keeps the SLO budget and spot is cheaper, and on-demand nodes otherwise "
            "(status.lastDecision.capacityType). Needs the operator's cluster.spotNodeLabels."
        ),
    )
    node_autoscaler: bool = Field(
        default=False, description="A node autoscaler provides missing GPU nodes, so lack of capacity is not fatal."
    )
    node_selector: dict[str, str] = Field(default_factory=dict, description="Extra node selector for the replicas.")


class ServerlessTargetRef(ApiModel):
    """A workload's reference to the ServerlessTarget it deploys through (Crossplane's ``providerConfigRef``,
    Karpenter's ``nodeClassRef``): the admin-defined project/account, regions, identity and allowed images."""

    name: str = Field(min_length=1, max_length=253, description="Name of the cluster-scoped ServerlessTarget.")


class CloudRunSpec(ApiModel):
    """Google Cloud Run settings."""

    target_ref: ServerlessTargetRef | None = Field(
        default=None,
        description=(
            "The ServerlessTarget (provider cloudrun) this workload deploys through: its project, service account, "
            "regions and allowed images apply. Required unless the operator allows inline cloud identity."
        ),
    )
    project: str | None = Field(
        default=None,
        min_length=1,
        description="Deprecated (use targetRef): Google Cloud project id; honoured only with inline cloud identity.",
    )
    region: str = Field(
        default="us-central1",
        min_length=1,
        max_length=32,
        pattern=CLOUD_RUN_REGION_PATTERN,
        description="Cloud Run region (a Google Cloud region name such as us-central1).",
    )
    service_account: str | None = Field(
        default=None,
        description="Deprecated (use targetRef): service account the service runs as; only with inline identity.",
    )
    image: str | None = Field(default=None, description="Image in Artifact Registry, if not model.image.")
    min_instances: int = Field(default=0, ge=0, le=1000, description="Instances kept warm (billed while idle).")
    max_instances: int = Field(default=100, ge=1, le=1000, description="Instance cap (a bill cap).")
    concurrency: int = Field(default=80, ge=1, le=1000, description="Requests in flight per instance.")


class LambdaSpec(ApiModel):
    """AWS Lambda settings."""

    target_ref: ServerlessTargetRef | None = Field(
        default=None,
        description=(
            "The ServerlessTarget (provider lambda) this workload deploys through: its account, execution role, "
            "regions and allowed images apply. Required unless the operator allows inline cloud identity."
        ),
    )
    region: str = Field(
        default="us-east-1",
        min_length=1,
        max_length=32,
        pattern=LAMBDA_REGION_PATTERN,
        description="AWS region (a region name such as us-east-1).",
    )
    role_arn: str | None = Field(
        default=None,
        pattern=r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$",
        description="Deprecated (use targetRef): execution role ARN; honoured only with inline cloud identity.",
    )
    image_uri: str | None = Field(default=None, description="ECR image URI, if not model.image.")
    memory_mb: int | None = Field(
        default=None, ge=128, le=10240, description="Function memory in MB (default: the model's memory)."
    )
    timeout_seconds: int = Field(default=60, ge=1, le=900, description="Per-invocation timeout.")
    reserved_concurrency: int | None = Field(
        default=None, ge=0, le=1000, description="Concurrency cap (default: derived from the budget)."
    )
    provisioned_concurrency: int = Field(
        default=0, ge=0, le=1000, description="Warm instances kept ready (billed while enabled)."
    )
    web_adapter: LambdaWebAdapter = Field(
        default=LambdaWebAdapter.IMAGE,
        description=(
            "How the image runs on Lambda: image (the AWS Lambda Web Adapter is in the image at "
            "/opt/extensions/lambda-adapter), layer (zip functions only: refused), none (the image answers Function "
            "URL events itself)."
        ),
    )
    architecture: LambdaArchitecture = Field(
        default=LambdaArchitecture.X86_64, description="Instruction set of the function (the image's architecture)."
    )


class ComplianceSpec(ApiModel):
    single_tenant: bool = Field(
        default=False, description="Single-tenant / data-residency: the workload is pinned to the cluster."
    )


class InferenceWorkloadSpec(ApiModel):
    """Desired state of an InferenceWorkload."""

    model: ModelSpec = Field(description="The model server.")
    accelerator: AcceleratorSpec = Field(default_factory=AcceleratorSpec, description="GPU and sharing.")
    slo: SLOSpec = Field(default_factory=SLOSpec, description="Latency objective.")
    budget: BudgetSpec = Field(default_factory=BudgetSpec, description="Monthly budget.")
    placement: PlacementSpec = Field(default_factory=PlacementSpec, description="Allowed targets and thresholds.")
    scaling: ScalingSpec = Field(default_factory=ScalingSpec, description="In-cluster replica bounds.")
    cluster: ClusterSpec = Field(default_factory=ClusterSpec, description="In-cluster settings.")
    cloud_run: CloudRunSpec = Field(default_factory=CloudRunSpec, description="Cloud Run settings.")
    lambda_: LambdaSpec = Field(default_factory=LambdaSpec, alias="lambda", description="AWS Lambda settings.")
    compliance: ComplianceSpec = Field(default_factory=ComplianceSpec, description="Compliance constraints.")
