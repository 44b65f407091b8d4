"""The ServerlessTarget resource: a cloud target a platform admin defines, and workloads only name.

Cluster-scoped, like Karpenter's NodeClass, Crossplane's ProviderConfig and KServe's ClusterServingRuntime: the
admin (who may create cluster-scoped objects) states the provider, the project or account, the regions, the identity
the services run as, the images they may run, and which namespaces may use it. A workload says only which target it
uses (``spec.cloudRun.targetRef`` / ``spec.lambda.targetRef``); whether it may is decided by the pure
``policy.tenancy.admit_serverless``, shared by the controller and ``explain``.

These pydantic models are the single source of truth: ``crds/serverlesstargets.yaml`` is generated from them
(``inference-placement crd``).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field

from inference_placement.api.names import DNS_LABEL_MAX
from inference_placement.api.spec import (
    CLOUD_RUN_REGION_PATTERN,
    LAMBDA_REGION_PATTERN,
    ApiModel,
    ServerlessTargetRef,
    TargetName,
)

__all__ = [
    "CLOUD_RUN_SERVICE_ACCOUNT_PATTERN",
    "GCP_PROJECT_PATTERN",
    "IMAGE_PREFIX_PATTERN",
    "LAMBDA_ROLE_ARN_PATTERN",
    "TARGET_KIND",
    "TARGET_PLURAL",
    "TARGET_SHORT_NAME",
    "TARGET_SINGULAR",
    "AllowedNamespaces",
    "LabelSelector",
    "LabelSelectorRequirement",
    "SelectorOperator",
    "ServerlessProvider",
    "ServerlessTarget",
    "ServerlessTargetCondition",
    "ServerlessTargetConditionType",
    "ServerlessTargetReason",
    "ServerlessTargetRef",
    "ServerlessTargetSpec",
    "ServerlessTargetStatus",
    "target_problems",
]

TARGET_KIND: Final = "ServerlessTarget"
TARGET_PLURAL: Final = "serverlesstargets"
TARGET_SINGULAR: Final = "serverlesstarget"
TARGET_SHORT_NAME: Final = "slt"

GCP_PROJECT_PATTERN: Final = r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$"
"""Google Cloud project ids: 6-30 lowercase letters, digits and hyphens, starting with a letter."""
CLOUD_RUN_SERVICE_ACCOUNT_PATTERN: Final = r"^[a-z][a-z0-9-]{4,28}[a-z0-9]@[a-z0-9.-]+\.iam\.gserviceaccount\.com$"
"""A Google service account e-mail (``NAME@PROJECT.iam.gserviceaccount.com``)."""
LAMBDA_ROLE_ARN_PATTERN: Final = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$"
"""An IAM role ARN (the same pattern ``spec.lambda.roleArn`` has)."""
_NAMESPACE_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
"""A namespace name (an RFC 1123 label)."""
IMAGE_PREFIX_PATTERN: Final = r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]+)?(/[^\s]*)?$"
"""A registry host (with an optional port), optionally followed by a repository path prefix."""


class ServerlessProvider(StrEnum):
    CLOUDRUN = "cloudrun"
    LAMBDA = "lambda"

    @property
    def target(self) -> TargetName:
        return TargetName(self.value)


class SelectorOperator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class LabelSelectorRequirement(ApiModel):
    key: str = Field(min_length=1, max_length=317, description="Label key.")
    operator: SelectorOperator = Field(description="In, NotIn, Exists or DoesNotExist.")
    values: list[str] = Field(default_factory=list, description="Values for In and NotIn; empty otherwise.")


class LabelSelector(ApiModel):
    """A Kubernetes label selector (``metav1.LabelSelector``): every term must hold."""

    match_labels: dict[str, str] = Field(default_factory=dict, description="Labels the namespace must carry.")
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, description="Set-based requirements on the namespace's labels."
    )


class AllowedNamespaces(ApiModel):
    """Which namespaces' workloads may use the target: those named, and those the selector matches. Neither set
    allows none (a target is never open to every namespace by omission)."""

    names: list[Annotated[str, Field(max_length=63)]] = Field(
        default_factory=list,
        max_length=256,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Namespaces allowed by name.",
    )
    selector: LabelSelector | None = Field(
        default=None, description="Namespaces allowed by their labels (an empty selector matches every namespace)."
    )


class ServerlessTargetSpec(ApiModel):
    """What the admin states about one cloud target."""

    provider: ServerlessProvider = Field(description="cloudrun (Google Cloud Run) or lambda (AWS Lambda).")
    project: str | None = Field(
        default=None,
        max_length=30,
        pattern=GCP_PROJECT_PATTERN,
        description="Google Cloud project the services are created in (cloudrun; required there).",
    )
    account: str | None = Field(
        default=None,
        max_length=12,
        pattern=r"^[0-9]{12}$",
        description="AWS account id the functions live in (lambda; required there): the role must be in it.",
    )
    regions: list[Annotated[str, Field(max_length=32)]] = Field(
        min_length=1,
        max_length=32,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Regions workloads may use; the first is the default for a workload that names none.",
    )
    service_account: str | None = Field(
        default=None,
        max_length=253,
        pattern=CLOUD_RUN_SERVICE_ACCOUNT_PATTERN,
        description="Service account the Cloud Run services run as (cloudrun; required there).",
    )
    role_arn: str | None = Field(
        default=None,
        max_length=512,
        pattern=LAMBDA_ROLE_ARN_PATTERN,
        description="Execution role of the Lambda functions (lambda; required there).",
    )
    allowed_images: list[Annotated[str, Field(min_length=1, max_length=512)]] = Field(
        min_length=1,
        max_length=64,
        description=(
            "Image prefixes the workloads may run: a registry host or a repository path, e.g. "
            "us-docker.pkg.dev/team-a/ or 123456789012.dkr.ecr.us-east-1.amazonaws.com/team-a. A prefix matches "
            "only at a path, tag or digest boundary (team-a never matches team-ab)."
        ),
    )
    allowed_namespaces: AllowedNamespaces = Field(
        default_factory=AllowedNamespaces, description="Namespaces whose workloads may use this target."
    )
    monthly_spend_cap_usd: float | None = Field(
        default=None,
        ge=0,
        description=(
            "Projected monthly spend (USD) of all workloads placed on this target above which no further "
            "workload is moved onto it (those already there keep serving); unset = no cap."
        ),
    )


class ServerlessTargetConditionType(StrEnum):
    READY = "Ready"
    ACCEPTED = "Accepted"
    WITHIN_SPEND_CAP = "WithinSpendCap"


class ServerlessTargetReason(StrEnum):
    VALID = "Valid"
    INVALID = "InvalidSpec"
    UNDER_CAP = "UnderSpendCap"
    CAP_REACHED = "SpendCapReached"
    NO_CAP = "NoSpendCap"


class ServerlessTargetCondition(ApiModel):
    type: ServerlessTargetConditionType = Field(description="Condition type.")
    status: str = Field(pattern=r"^(True|False|Unknown)$", description="True, False or Unknown.")
    reason: ServerlessTargetReason = Field(description="CamelCase reason.")
    message: str = Field(default="", description="Human-readable detail.")
    last_transition_time: str = Field(description="RFC 3339 time the status last changed.")
    observed_generation: int | None = Field(default=None, ge=0, description="Generation the condition is about.")


class ServerlessTargetStatus(ApiModel):
    observed_generation: int | None = Field(default=None, ge=0, description="Generation the operator last read.")
    conditions: list[ServerlessTargetCondition] = Field(default_factory=list, description="Ready, Accepted, ...")
    workloads: int | None = Field(default=None, ge=0, description="Workloads placed on this target now.")
    projected_monthly_usd: float | None = Field(
        default=None, ge=0, description="Projected monthly cost of the workloads placed on this target."
    )


class ServerlessTarget(BaseModel):
    """A whole ServerlessTarget as read from the apiserver (spec validated)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    name: str
    generation: int = 0
    spec: ServerlessTargetSpec


def target_problems(spec: ServerlessTargetSpec) -> list[str]:
    """What makes a target unusable beyond its schema (the provider's required fields, its regions' form)."""
    problems = _provider_problems(spec)
    pattern = CLOUD_RUN_REGION_PATTERN if spec.provider is ServerlessProvider.CLOUDRUN else LAMBDA_REGION_PATTERN
    for region in spec.regions:
        if not re.match(pattern, region):
            problems.append(f"spec.regions: {region!r} is not a {spec.provider.value} region name")
    for prefix in spec.allowed_images:
        if not re.match(IMAGE_PREFIX_PATTERN, prefix):
            problems.append(f"spec.allowedImages: {prefix!r} is not a registry host or repository prefix")
    for name in spec.allowed_namespaces.names:
        if len(name) > DNS_LABEL_MAX or not re.match(_NAMESPACE_PATTERN, name):
            problems.append(f"spec.allowedNamespaces.names: {name!r} is not a namespace name")
    return problems


def _provider_problems(spec: ServerlessTargetSpec) -> list[str]:
    problems: list[str] = []
    if spec.provider is ServerlessProvider.CLOUDRUN:
        required, foreign = ("project", "service_account"), ("account", "role_arn")
    else:
        required, foreign = ("account", "role_arn"), ("project", "service_account")
    for name in required:
        if getattr(spec, name) is None:
            problems.append(f"spec.{_camel(name)}: required for {spec.provider.value}")
    for name in foreign:
        if getattr(spec, name) is not None:
            other = "lambda" if spec.provider is ServerlessProvider.CLOUDRUN else "cloudrun"
            problems.append(f"spec.{_camel(name)}: only valid for {other}")
    if spec.role_arn is not None and spec.account is not None and spec.role_arn.split(":")[4] != spec.account:
        problems.append(f"spec.roleArn: not in account {spec.account}")
    return problems


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)
