"""The InferenceWorkload status: what the operator observed, decided and did.

Every field the operator writes is declared here, so the CRD's status schema lists it and the apiserver never
prunes it silently. The phase is derived from the conditions (see ``conditions.py``), never the source of truth.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field, WithJsonSchema

from inference_placement.api.spec import AcceleratorOption, ApiModel, TargetName

__all__ = [
    "BudgetStatus",
    "CapacityType",
    "CONDITION_REASON_PATTERN",
    "CONDITION_TYPE_PATTERN",
    "ColdStartStatus",
    "ColdStartTargetStatus",
    "Condition",
    "ConditionStatus",
    "ConditionType",
    "DecisionRecord",
    "InferenceWorkloadStatus",
    "LastMigration",
    "MAX_COLD_START_SAMPLES",
    "MeasuredDuration",
    "MigrationOutcome",
    "MigrationStatus",
    "MigrationStep",
    "ObservedTraffic",
    "Phase",
    "ProjectedCosts",
    "ProvisionTimeStatus",
    "Reason",
    "ScaleToZeroStatus",
    "SpillStatus",
    "SpillStep",
    "TargetErrorKind",
    "TargetResourceStatus",
    "TargetsStatus",
    "WakeRecord",
]


class ConditionType(StrEnum):
    READY = "Ready"
    PLACED = "Placed"
    METRICS_AVAILABLE = "MetricsAvailable"
    MIGRATING = "Migrating"
    BUDGET_EXCEEDED = "BudgetExceeded"
    SLO_AT_RISK = "SLOAtRisk"
    INVALID_SPEC = "InvalidSpec"
    CAPACITY_AVAILABLE = "CapacityAvailable"
    PRICE_BOOK_VALID = "PriceBookValid"
    """Present once the configured price book was rejected: False while decisions use another book."""
    PACKAGING_VALID = "PackagingValid"
    """Present once the image could not start on an allowed serverless target (``policy.packaging``): False, naming
    the target and the field, while that target is refused; True again once the spec is fixed."""


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Reason(StrEnum):
    """Machine-readable reasons (CamelCase, per the Kubernetes API conventions)."""

    ALL_DEPENDENTS_READY = "AllDependentsReady"
    SPEC_VALID = "SpecValid"
    SPEC_INVALID = "InvalidSpec"
    AWAITING_PLACEMENT = "AwaitingPlacement"
    TARGET_PROVISIONING = "TargetProvisioning"
    TARGET_READY = "TargetReady"
    TARGET_NOT_READY = "TargetNotReady"
    TARGET_FAILED = "TargetFailed"
    NOT_OWNED = "ResourceNotOwned"
    CLOUD_API_ERROR = "CloudAPIError"
    METRICS_FRESH = "MetricsFresh"
    METRICS_MISSING = "MetricsMissing"
    METRICS_STALE = "MetricsStale"
    METRICS_INVALID = "MetricsInvalid"
    NO_MIGRATION = "NoMigration"
    MIGRATION_IN_PROGRESS = "MigrationInProgress"
    MIGRATION_SUCCEEDED = "MigrationSucceeded"
    MIGRATION_ROLLED_BACK = "MigrationRolledBack"
    WITHIN_BUDGET = "WithinBudget"
    OVER_BUDGET = "OverBudget"
    NO_BUDGET = "NoBudget"
    SLO_MET = "SLOMet"
    SLO_RISK = "ColdStartRisk"
    LATENCY_ABOVE_SLO = "LatencyAboveSLO"
    MISSES_ABOVE_BUDGET = "MissesAboveBudget"
    CAPACITY_FREE = "CapacityFree"
    CAPACITY_EXHAUSTED = "CapacityExhausted"
    NO_MATCHING_NODES = "NoMatchingNodes"
    NOT_APPLICABLE = "NotApplicable"
    PRICE_BOOK_LOADED = "PriceBookLoaded"
    PRICE_BOOK_REJECTED = "PriceBookRejected"
    PACKAGING_VALID = "PackagingValid"
    PACKAGING_INVALID = "PackagingInvalid"


class Phase(StrEnum):
    PENDING = "Pending"
    PROVISIONING = "Provisioning"
    SERVING = "Serving"
    MIGRATING = "Migrating"
    DEGRADED = "Degraded"
    INVALID = "Invalid"


CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
"""``metav1.Condition``'s type pattern (k8s.io/apimachinery/pkg/apis/meta/v1/types.go)."""
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
"""``metav1.Condition``'s reason pattern."""


class Condition(ApiModel):
    """One condition, following metav1.Condition: type and reason are checked by its patterns, not as enums."""

    # The operator writes the types and reasons of ConditionType and Reason, but an enum in the CRD would make an older
    # CRD reject a newer operator's new reason: an upgrade that leaves the old CRD would then stall every status write.
    type: Annotated[
        ConditionType,
        WithJsonSchema(
            {
                "type": "string",
                "pattern": CONDITION_TYPE_PATTERN,
                "maxLength": 316,
                "description": "Condition type, in CamelCase (Ready, Placed, Migrating, ...).",
            }
        ),
    ]
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: Annotated[
        Reason,
        WithJsonSchema(
            {
                "type": "string",
                "pattern": CONDITION_REASON_PATTERN,
                "minLength": 1,
                "maxLength": 1024,
                "description": "CamelCase machine-readable reason for the last transition.",
            }
        ),
    ]
    message: str = Field(default="", description="Human-readable detail, with numbers.")
    last_transition_time: str = Field(
        description="RFC 3339 time the status last changed.", json_schema_extra={"format": "date-time"}
    )
    observed_generation: int | None = Field(default=None, ge=0, description="Generation the condition is about.")


class ObservedTraffic(ApiModel):
    """The metrics window the last decision used."""

    rps: float | None = Field(default=None, ge=0, description="Mean requests per second over the window.")
    observed_p99_seconds: float | None = Field(
        default=None, ge=0, alias="latencyP99Seconds", description="Observed p99 latency."
    )
    slo_miss_share: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Share of the last 5 minutes' requests slower than the latency objective (the latency "
        "histogram's bucket at or under it); unknown when the histogram has no bound at or under the objective.",
    )
    warm_latency_seconds: float | None = Field(
        default=None,
        ge=0,
        description="For an objective that bounds the first token (spec.slo.latencyMeasure FirstToken): the median "
        "time to the first byte over the window, measured at the router, which the policy takes as the latency of a "
        "request that did not queue (the objective less it is the time a request may queue). Unset otherwise.",
    )
    gpu_utilization: float | None = Field(default=None, ge=0, description="Mean GPU utilisation, 0..1.")
    window_seconds: int | None = Field(default=None, ge=0, description="Length of the window.")
    sampled_at: str | None = Field(default=None, description="RFC 3339 end of the window.")


class ProjectedCosts(ApiModel):
    """Projected monthly cost of serving the observed traffic on each target, USD (absent = infeasible)."""

    cluster: float | None = Field(default=None, ge=0, description="In-cluster Deployment.")
    cloudrun: float | None = Field(default=None, ge=0, description="Google Cloud Run.")
    lambda_: float | None = Field(default=None, ge=0, alias="lambda", description="AWS Lambda.")


class CapacityType(StrEnum):
    SPOT = "spot"
    ON_DEMAND = "on-demand"


class DecisionRecord(ApiModel):
    """The last placement decision, explained in numbers."""

    target: TargetName = Field(description="Chosen target.")
    replicas: int = Field(ge=0, description="Replicas or warm instances the decision asks for.")
    reason: str = Field(description="Why, with the figures that decided it.")
    decided_at: str = Field(description="RFC 3339 time of the decision.")
    projected_monthly_cost_usd: float | None = Field(default=None, ge=0, description="Cost on the chosen target.")
    slo_risk: float | None = Field(default=None, ge=0, le=1, description="Expected share of requests missing the SLO.")
    keep_warm_instances: int | None = Field(
        default=None, ge=0, description="Serverless instances the operator keeps warm with pings (unset: none)."
    )
    ping_interval_seconds: float | None = Field(
        default=None, gt=0, description="How often those instances are pinged (a little inside the keep-alive)."
    )
    accelerator: AcceleratorOption | None = Field(
        default=None,
        description=(
            "The acceptable accelerator the cluster's replicas run on, when spec.accelerator lists alternatives "
            "(unset: the spec's only accelerator)."
        ),
    )
    capacity_type: CapacityType | None = Field(
        default=None,
        description=(
            "The nodes the cluster's replicas run on when spec.cluster.spot asks for spot: spot (preferred, with "
            "on-demand nodes as the scheduler's fallback) while the pre-emption risk keeps the SLO budget and spot "
            "is cheaper, on-demand otherwise (unset: spot not asked for)."
        ),
    )


class MigrationStep(StrEnum):
    PROVISIONING = "Provisioning"
    AWAITING_HEALTHY = "AwaitingHealthy"
    SHIFTING = "Shifting"
    DRAINING = "Draining"
    RETIRING = "Retiring"
    ROLLING_BACK = "RollingBack"


class MigrationStatus(ApiModel):
    """Progress of the migration in flight; persisted so a restarted operator resumes at the same step."""

    source: TargetName | None = Field(default=None, description="Where traffic comes from (none on first placement).")
    target: TargetName = Field(description="Where traffic goes.")
    step: MigrationStep = Field(description="Current step.")
    traffic_percent: int = Field(default=0, ge=0, le=100, description="Share of traffic on the target.")
    attempt: int = Field(default=1, ge=1, description="Attempt number of this migration.")
    started_at: str = Field(description="RFC 3339 start of the migration.")
    step_started_at: str = Field(description="RFC 3339 start of the current step.")
    reason: str = Field(default="", description="The decision that started it.")
    last_error: str | None = Field(default=None, description="Why the last attempt failed, if it did.")
    source_replicas: int | None = Field(
        default=None,
        ge=0,
        description="Cluster replicas the source served with when the migration started: it keeps them until it is "
        "retired, so a rollback never lands all traffic on fewer (none for a serverless source).",
    )


class MigrationOutcome(StrEnum):
    SUCCEEDED = "Succeeded"
    ROLLED_BACK = "RolledBack"


class SpillStep(StrEnum):
    PROVISIONING = "Provisioning"
    """The overflow target is being deployed; nothing spills yet."""
    ROUTED = "Routed"
    """The router retries what the cluster refuses on the overflow target; the replicas' queue cap comes next."""
    SPILLING = "Spilling"
    """The model servers refuse beyond their cap and the router sends those requests to the overflow target."""
    UNCAPPING = "Uncapping"
    """Ending: the queue cap is being removed from the replicas; the router still spills what they refuse."""
    DRAINING = "Draining"
    """Ending: the router no longer spills; the overflow target finishes what it holds, then retires."""


class SpillStatus(ApiModel):
    """Burst spillover in force: base replicas on the cluster, the overflow to a serverless target. Each step is
    make before break: the router retries on the overflow target before any replica refuses, and no replica
    refuses once the router stops retrying."""

    target: TargetName = Field(description="Serverless target taking the overflow.")
    step: SpillStep = Field(description="Where the spill stands.")
    base_replicas: int = Field(ge=0, description="Cluster replicas for the base load.")
    overflow_above_in_flight: int = Field(
        ge=0,
        description="Requests in flight on the cluster beyond which its model servers refuse and the router spills.",
    )
    slots_per_replica: int = Field(ge=1, description="The queue cap of each model server (requests in flight).")
    warm_instances: int = Field(default=0, ge=0, description="Overflow instances kept warm.")
    step_started_at: str = Field(description="RFC 3339 time the step began.")
    message: str = Field(default="", description="The split in numbers, as decided.")

    @property
    def ending(self) -> bool:
        """The spill is being taken down (uncapping or draining)."""
        return self.step in (SpillStep.UNCAPPING, SpillStep.DRAINING)


class WakeRecord(ApiModel):
    """How the cluster target last came back from zero replicas."""

    zeroed_at: str = Field(description="RFC 3339 time the Deployment was set to zero replicas.")
    woken_at: str = Field(description="RFC 3339 time it was set to one or more again.")
    zero_seconds: float = Field(ge=0, description="Seconds it stayed at zero.")
    woken_by_request: bool = Field(
        description="True: requests woke it (held by the router's activator, or answered by the serverless target "
        "the router fell through to); false: the policy's own decision did."
    )
    answered_by: str | None = Field(
        default=None,
        pattern="^(cloudrun|lambda)$",
        description="The serverless target that answered the requests that woke it (serverless as the activator); "
        "unset when the activator held them.",
    )
    fell_through_requests: int | None = Field(
        default=None, ge=0, description="Requests answered by answeredBy that woke it (the router's own counters)."
    )
    held_requests: int | None = Field(
        default=None, ge=0, description="Held requests replayed to the woken replica (None: not answered yet)."
    )
    wake_latency_ms: float | None = Field(
        default=None,
        ge=0,
        description="Mean time those requests were held until a replica was ready, milliseconds (the activator's "
        "hold-time histogram over the wake; None: not answered yet); woken by requests that fell through to "
        "answeredBy, their mean time at the router on that target (its request-time histogram).",
    )


class ScaleToZeroStatus(ApiModel):
    """The cluster target at zero replicas: since when, and how it was last woken."""

    zeroed_at: str | None = Field(
        default=None, description="RFC 3339 time the Deployment went to zero replicas; unset while it has replicas."
    )
    hold_seconds: float | None = Field(
        default=None, ge=0, description="The router holds a request that finds no pod at most this long (seconds)."
    )
    gaps: int = Field(default=0, ge=0, description="Times the workload was scaled to zero so far.")
    last_wake: WakeRecord | None = Field(default=None, description="The last wake-up from zero.")
    answered_by: str | None = Field(
        default=None,
        pattern="^(activator|cloudrun|lambda)$",
        description="Who answers a request that finds no pod while the cluster is at (or going to) zero replicas: "
        "a serverless target the router falls through to (cloudrun, lambda: allowed, free while idle, ready, and "
        "its cold start within slo.tolerableColdStartSeconds), else the router's activator, which holds it until a "
        "replica is ready. Unset while the cluster serves with replicas.",
    )
    answer_reason: str | None = Field(default=None, description="Why answeredBy is what it is.")


class LastMigration(ApiModel):
    """How the last migration ended (drives the cooldown)."""

    source: TargetName | None = Field(default=None, description="Where traffic came from.")
    target: TargetName = Field(description="Where traffic was moving to.")
    outcome: MigrationOutcome = Field(description="Succeeded or RolledBack.")
    started_at: str | None = Field(
        default=None, description="RFC 3339 start of the migration (unset on records written before it was kept)."
    )
    finished_at: str = Field(description="RFC 3339 end of the migration.")
    message: str = Field(default="", description="Why it ended that way.")


class TargetErrorKind(StrEnum):
    RETRYABLE = "Retryable"
    PERMANENT = "Permanent"
    NOT_OWNED = "NotOwned"


class TargetResourceStatus(ApiModel):
    """What the operator owns on one target."""

    name: str | None = Field(
        default=None,
        description="Name of the Deployment, Cloud Run service or Lambda function (unset until it was created).",
    )
    endpoint: str | None = Field(default=None, description="URL or in-cluster address serving it.")
    ready: bool = Field(default=False, description="Passed its own health check.")
    replicas: int | None = Field(default=None, ge=0, description="Ready replicas or instances, where known.")
    message: str | None = Field(default=None, description="Last problem seen on this target.")
    replicas_managed_by: str | None = Field(
        default=None,
        description="Cluster: the user's autoscaler(s) that own the Deployment's spec.replicas (Kind/name, e.g. "
        "HorizontalPodAutoscaler/web or ScaledObject/web); the operator then never writes replicas and its replica "
        "decision is advisory. Unset: the operator sets replicas.",
    )
    error: TargetErrorKind | None = Field(
        default=None, description="Set when the last call to the target's API failed (the message says why)."
    )


class TargetsStatus(ApiModel):
    cluster: TargetResourceStatus | None = Field(default=None, description="In-cluster Deployment.")
    cloudrun: TargetResourceStatus | None = Field(default=None, description="Cloud Run service.")
    lambda_: TargetResourceStatus | None = Field(default=None, alias="lambda", description="Lambda function.")


class BudgetStatus(ApiModel):
    month_to_date_usd: float = Field(
        default=0.0,
        ge=0,
        description="Spend this calendar month up to accountedAt (refreshed with the next status change; it accrues "
        "on from there at currentMonthlyCostUsd: kubectl iw explain shows it up to now).",
    )
    projected_month_usd: float = Field(default=0.0, ge=0, description="Month-to-date plus forecast to month end.")
    accounted_at: str | None = Field(default=None, description="RFC 3339 time monthToDateUsd was accrued up to.")


MAX_COLD_START_SAMPLES = 20
"""Measured cold starts kept per target (``policy.cold_start.MAX_SAMPLES`` is this)."""


class MeasuredDuration(ApiModel):
    """A duration of one target for the workload's model: the price book's, the measured one, and the one used."""

    assumed_seconds: float | None = Field(
        default=None, ge=0, description="The price book's figure for this model size (the prior)."
    )
    measured_seconds: float | None = Field(
        default=None, ge=0, description="Median of the measured samples (unset: none yet)."
    )
    estimate_seconds: float | None = Field(
        default=None,
        ge=0,
        description="What the policy uses: the book blended with the measurement, weight samples / (samples + 4).",
    )
    samples: int = Field(default=0, ge=0, description="Measured samples the estimate uses.")
    recent_seconds: list[float] = Field(
        default_factory=list,
        max_length=MAX_COLD_START_SAMPLES,
        description="The most recent measured samples, seconds, oldest first (kept across operator restarts; "
        "at most 20).",
    )
    source: str | None = Field(default=None, description="How the samples were measured.")
    last_sample_at: str | None = Field(default=None, description="RFC 3339 time of the last sample.")
    last_rejected: str | None = Field(default=None, description="Why the last refused sample was refused, if any.")


class ProvisionTimeStatus(MeasuredDuration):
    """A migration's lead on the target: from the migration's start (deploy) until the target passed its own health
    check with its first replica or instance ready (Deployment ready replicas, Cloud Run's Ready condition, Lambda
    State Active and LastUpdateStatus Successful, as ``targets/`` read them)."""


class ColdStartTargetStatus(MeasuredDuration):
    """One target's cold start for the workload's model (a new replica or instance until it serves): the price
    book's, the measured one, and the one the policy uses; and its measured provisioning time."""

    model_size_mb: float = Field(
        ge=0, description="spec.model.sizeMb the samples were measured with (a new size starts over)."
    )
    provision: ProvisionTimeStatus | None = Field(
        default=None, description="Deploy until the first replica or instance is ready, measured on migrations."
    )


class ColdStartStatus(ApiModel):
    """Cold starts per target, measured vs assumed (absent target: never measured there)."""

    cluster: ColdStartTargetStatus | None = Field(default=None, description="In-cluster Deployment.")
    cloudrun: ColdStartTargetStatus | None = Field(default=None, description="Google Cloud Run.")
    lambda_: ColdStartTargetStatus | None = Field(default=None, alias="lambda", description="AWS Lambda.")


class InferenceWorkloadStatus(ApiModel):
    """Observed state of an InferenceWorkload."""

    observed_generation: int | None = Field(default=None, ge=0, description="Generation last reconciled.")
    placement: TargetName | None = Field(default=None, description="Target serving the traffic now.")
    phase: Phase | None = Field(default=None, description="Summary derived from the conditions (display only).")
    endpoint: str | None = Field(default=None, description="Stable endpoint clients call.")
    observed: ObservedTraffic | None = Field(default=None, description="Traffic and latency last observed.")
    projected_monthly_cost_usd: ProjectedCosts | None = Field(default=None, description="Cost per target, USD/month.")
    current_monthly_cost_usd: float | None = Field(default=None, ge=0, description="Projected cost where it runs.")
    last_decision: DecisionRecord | None = Field(default=None, description="The last placement decision.")
    migration: MigrationStatus | None = Field(default=None, description="The migration in flight, if any.")
    last_migration: LastMigration | None = Field(default=None, description="The last migration that ended.")
    targets: TargetsStatus | None = Field(default=None, description="Resources the operator owns per target.")
    spill: SpillStatus | None = Field(default=None, description="Burst spillover in force, if any.")
    scale_to_zero: ScaleToZeroStatus | None = Field(
        default=None, description="The cluster target at zero replicas and its wake-ups (absent: never at zero)."
    )
    budget: BudgetStatus | None = Field(default=None, description="Budget burn.")
    cold_start: ColdStartStatus | None = Field(
        default=None,
        description="Cold starts per target for the model: the price book's, the measured ones and what the policy "
        "uses (absent: nothing measured yet).",
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Current conditions, one per type.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
