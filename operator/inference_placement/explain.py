"""``inference-placement explain NAME``: why a workload runs where it runs, in numbers.

Reads the workload (and its recent Events) from the apiserver and re-runs the placement policy -- the same
``policy.decide`` the controller runs -- on the traffic recorded in its status with the price book given (the
packaged one by default, or the file the operator mounts). It shows, per target: allowed, feasible (and why not),
projected monthly cost now and as the operator last recorded it, SLO risk; the offload/reclaim thresholds; what the
policy would do now; what the image lacks to start on each allowed serverless target (from the spec, and from the
image's OCI config when ``--image-config`` gives it); and the operator's last decision, migration and conditions.

``explain_workload`` is pure (object + price book + clock -> ``Explanation``); the command adds the I/O.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from pydantic import ValidationError

from inference_placement.api.spec import SERVERLESS, InferenceWorkloadSpec, TargetName
from inference_placement.api.status import (
    ColdStartStatus,
    ColdStartTargetStatus,
    Condition,
    ConditionType,
    DecisionRecord,
    InferenceWorkloadStatus,
    LastMigration,
    MigrationStatus,
    ObservedTraffic,
    ScaleToZeroStatus,
    SpillStatus,
    TargetResourceStatus,
)
from inference_placement.api.timestamps import parse_time
from inference_placement.api.validation import parse_spec
from inference_placement.api.workload import GROUP, KIND, PLURAL, VERSION
from inference_placement.commandline import (
    CommandError,
    ExitCode,
    OutputFormat,
    apiserver_error,
    one_line,
    read_input_file,
    require_kubeconfig,
)
from inference_placement.policy.actuation import Actuators
from inference_placement.policy.budget import accrue_spend
from inference_placement.policy.capacity import ClusterCapacity
from inference_placement.policy.cold_start import assumed_provision, measured_estimates, measured_price_book
from inference_placement.policy.decide import Assessment, Decision, PlacementState, TrafficWindow, assess, decide
from inference_placement.policy.node_labels import SpotLabels, spot_provider
from inference_placement.policy.packaging import ImageConfig, ImageConfigError, packaging_problems, parse_image_config
from inference_placement.policy.price_book import PriceBook, default_price_book, load_price_book
from inference_placement.policy.tenancy import TenancyView, admit_serverless
from inference_placement.policy.verdicts import Verdict, budget_verdict, slo_verdict

__all__ = [
    "AcceleratorRow",
    "ColdStartRow",
    "EventRow",
    "PackagingRow",
    "Explanation",
    "TargetRow",
    "ThresholdRow",
    "explain_workload",
    "register",
    "render",
    "DEFAULT_STEP_SECONDS",
    "MAX_EVENTS",
    "explain_command",
    "load_image_config_file",
    "load_price_book_file",
    "print_explanation",
    "read_tenancy",
    "read_tenancy_with",
    "read_workload",
    "read_workload_with",
]

DEFAULT_STEP_SECONDS = 60.0
"""Step of the window rebuilt from ``status.observed`` (the status keeps the mean rate, not the series)."""
MAX_EVENTS = 10


@dataclass(frozen=True)
class TargetRow:
    """One target as the policy sees it for this workload."""

    target: TargetName
    allowed: bool
    feasible: bool
    why_not: str
    """Why the target is excluded (empty when feasible)."""
    projected_monthly_cost_usd: float | None
    """With the given price book on the recorded traffic (None = infeasible or unpriced)."""
    recorded_monthly_cost_usd: float | None
    """As the operator recorded it in status at its last tick."""
    slo_risk: float | None
    """Expected share of requests missing the SLO on this target."""
    serving: bool
    resource: TargetResourceStatus | None


@dataclass(frozen=True)
class ColdStartRow:
    """One target's cold start for the workload's model: assumed (the price book), measured, and used."""

    target: TargetName
    assumed_seconds: float
    """The price book's cold start for this model size (the prior)."""
    measured_seconds: float | None
    """Median of the samples the operator measured (``status.coldStart``); None = none yet."""
    samples: int
    estimate_seconds: float
    """What the policy decides with: the book blended with the measurement, weight samples / (samples + 4)."""
    weight: float
    source: str | None = None
    """How the operator measured it."""
    provision_assumed_seconds: float | None = None
    """The book's migration lead (deploy plus the first replica or instance ready)."""
    provision_measured_seconds: float | None = None
    """Median of the leads the operator measured on migrations; None = none yet."""
    provision_samples: int = 0
    provision_estimate_seconds: float | None = None
    """What the policy uses (the cluster's lead is its cold start: its measured leads are shown, not used)."""


@dataclass(frozen=True)
class AcceleratorRow:
    """One acceptable accelerator of the cluster's replicas, as the policy assessed it now."""

    accelerator: str
    """``nvidia-l4``, ``nvidia-a100-80gb MIG 1g.10gb``, ``nvidia-l4 time-sliced /4``."""
    chosen: bool
    recorded: bool
    """The one the operator last recorded (``status.lastDecision.accelerator``)."""
    projected_monthly_cost_usd: float | None
    slo_risk: float | None
    service_time_factor: float
    """Service time relative to ``model.serviceSeconds``: the spec's factor times the time-slicing contention."""
    why_not: str


@dataclass(frozen=True)
class ThresholdRow:
    """Offload/reclaim request rates between the cluster and one serverless target."""

    serverless: TargetName
    offload_below_rps: float
    reclaim_above_rps: float
    how: str


@dataclass(frozen=True)
class PackagingRow:
    """What the image lacks to start on one serverless target (``policy.packaging``)."""

    target: TargetName
    field: str
    """``spec.lambda.webAdapter``, ``spec.model.env[0]``, ``image.architecture``, ..."""
    missing: str


@dataclass(frozen=True)
class EventRow:
    time: str
    type: str
    reason: str
    message: str


@dataclass(frozen=True)
class Explanation:
    namespace: str
    name: str
    generation: int | None
    observed_generation: int | None
    placement: TargetName | None
    phase: str | None
    endpoint: str | None
    observed: ObservedTraffic | None
    targets: tuple[TargetRow, ...]
    thresholds: tuple[ThresholdRow, ...]
    policy_now: str
    """What the policy decides now with the given price book (its reason, in numbers)."""
    policy_target: TargetName | None
    policy_would_migrate: bool
    last_decision: DecisionRecord | None
    migration: MigrationStatus | None
    last_migration: LastMigration | None
    spill: SpillStatus | None
    """Burst spillover in force, as the operator recorded it."""
    conditions: tuple[Condition, ...]
    spec_problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    events: tuple[EventRow, ...] = field(default_factory=tuple)
    slo_now: str = ""
    """The SLOAtRisk verdict the operator reaches on these inputs (``policy.verdicts``)."""
    budget_now: str = ""
    """The BudgetExceeded verdict the operator reaches on these inputs."""
    scale_to_zero: ScaleToZeroStatus | None = None
    """The cluster target at zero replicas and its last wake-up, as the operator recorded them."""
    accelerators: tuple[AcceleratorRow, ...] = ()
    """With accelerator alternatives: each acceptable one, the chosen first-class (empty with one accelerator)."""
    accelerator_now: str = ""
    """Why the policy picks the accelerator it picks, in numbers."""
    replicas_managed_by: str | None = None
    """The user's autoscaler(s) owning the cluster Deployment's replicas (``HorizontalPodAutoscaler/web``), as the
    operator last recorded it: the decision's cluster replicas are then advisory, never written."""
    packaging: tuple[PackagingRow, ...] = ()
    """What the image lacks to start on each allowed serverless target (empty: nothing known against it)."""
    image_config_read: bool = False
    """Whether the image's OCI config was given (without it only the spec is checked)."""
    cold_starts: tuple[ColdStartRow, ...] = ()
    """Per target the book prices: the cold start assumed, measured and used by the policy."""
    spot_now: str = ""
    """With ``spec.cluster.spot``: spot or on-demand for the cluster's replicas, and why, in numbers (pre-emptions
    per month, the outage each costs, the extra SLO misses and both monthly costs)."""
    spot_recorded: str | None = None
    """The capacity type the operator last recorded (``status.lastDecision.capacityType``)."""

    @property
    def verdict(self) -> str:
        """One line, first in every output: where the workload is and what the policy does with it now, and why."""
        here = self.placement.value if self.placement is not None else None
        there = self.policy_target.value if self.policy_target is not None else None
        if self.spec_problems:
            first = self.spec_problems[0]
            more = f" (and {len(self.spec_problems) - 1} more)" if len(self.spec_problems) > 1 else ""
            serving = f"it stays on {here}" if here else "nothing is placed"
            return f"verdict: invalid spec, {first}{more}; {serving} until it is fixed"
        if here is None:
            return f"verdict: not placed yet; the policy places it on {there or 'nothing'}: {self.policy_now}"
        if self.policy_would_migrate and there is not None and there != here:
            return f"verdict: on {here}, the policy moves it to {there}: {self.policy_now}"
        return f"verdict: stays on {here}: {self.policy_now}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (enums as their values, models in their wire form), the verdict first."""

        def convert(value: Any) -> Any:
            if isinstance(value, TargetName):
                return value.value
            if hasattr(value, "to_wire"):
                return value.to_wire()
            if isinstance(value, dict):
                return {k: convert(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [convert(v) for v in value]
            if isinstance(value, float) and not math.isfinite(value):
                return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
            return value

        raw = {f: getattr(self, f) for f in self.__dataclass_fields__}
        raw["targets"] = [
            {**{k: v for k, v in asdict(row).items() if k != "resource"}, "resource": row.resource}
            for row in self.targets
        ]
        raw["thresholds"] = [asdict(row) for row in self.thresholds]
        raw["events"] = [asdict(row) for row in self.events]
        raw["accelerators"] = [asdict(row) for row in self.accelerators]
        raw["packaging"] = [asdict(row) for row in self.packaging]
        raw["cold_starts"] = [asdict(row) for row in self.cold_starts]
        converted: dict[str, Any] = convert(raw)
        return {"verdict": self.verdict, **converted}


# ----------------------------------------------------------------------------------------------- pure part


def _window(observed: ObservedTraffic | None, spec: InferenceWorkloadSpec) -> TrafficWindow | None:
    """The recorded traffic as a constant-rate window ending at the sample time (the status keeps only the mean)."""
    if observed is None or observed.rps is None:
        return None
    end = parse_time(observed.sampled_at)
    if end is None:
        return None
    span = float(observed.window_seconds or max(spec.placement.sustain_seconds, DEFAULT_STEP_SECONDS))
    step = min(DEFAULT_STEP_SECONDS, span) if span > 0 else DEFAULT_STEP_SECONDS
    steps = max(1, round(span / step))
    return TrafficWindow(
        step_seconds=step,
        rps=tuple([float(observed.rps)] * steps),
        observed_p99_seconds=observed.observed_p99_seconds,
        end=end,
        slo_miss_share=observed.slo_miss_share,
        warm_latency_seconds=observed.warm_latency_seconds,
    )


def _threshold_rows(assessment: Assessment) -> tuple[ThresholdRow, ...]:
    """The offload/reclaim rates ``decide`` moves by, between the cluster and each feasible serverless target."""
    rows = assessment.thresholds().items()
    return tuple(ThresholdRow(t, offload, reclaim, how) for t, (offload, reclaim, how) in rows)


def _verdict_text(verdict: Verdict, holds: str, fine: str) -> str:
    return f"{holds if verdict.true else fine} ({verdict.reason.value}): {verdict.message}"


def _recorded_cost(status: InferenceWorkloadStatus, target: TargetName) -> float | None:
    costs = status.projected_monthly_cost_usd
    if costs is None:
        return None
    value: float | None = getattr(costs, "lambda_" if target is TargetName.LAMBDA else target.value)
    return value


def _resource(status: InferenceWorkloadStatus, target: TargetName) -> TargetResourceStatus | None:
    if status.targets is None:
        return None
    entry: TargetResourceStatus | None = getattr(
        status.targets, "lambda_" if target is TargetName.LAMBDA else target.value
    )
    return entry


def _parse_status(raw: Any) -> tuple[InferenceWorkloadStatus, str | None]:
    try:
        return InferenceWorkloadStatus.model_validate(raw or {}), None
    except ValidationError as err:
        return InferenceWorkloadStatus(), f"status unreadable by this version ({err.error_count()} problems); ignored"


def explain_workload(
    obj: Mapping[str, Any],
    price_book: PriceBook,
    *,
    now: datetime | None = None,
    events: Sequence[Mapping[str, Any]] = (),
    tenancy: TenancyView | None = None,
    image_config: ImageConfig | None = None,
    spot_labels: SpotLabels = "none",
) -> Explanation:
    """Explain one workload object (as the apiserver returns it) with ``price_book``; ``image_config``: the model
    image's OCI config, when the caller has it (the operator never reads images).

    ``tenancy``: the cluster's ServerlessTargets; with it, the workload's cloud targets are admitted exactly as the
    operator admits them (``policy.tenancy.admit_serverless``: namespace, images, identity, region, spend cap) and a
    refusal is an invalid spec. Inline cloud fields are judged as allowed (explain cannot see the operator's
    ``tenancy.allowInlineCloudIdentity``; the status's InvalidSpec condition says what the operator decided).

    ``now`` is the decision time; by default the time of the recorded traffic sample (so the recorded metrics count
    as fresh and the verdict is the one the operator would reach on them), else the current time.

    ``spot_labels``: the operator's ``cluster.spotNodeLabels`` (explain cannot read its settings); with ``none`` a
    workload asking for spot is explained as the operator without spot labels places it (on-demand).
    """
    meta: Mapping[str, Any] = obj.get("metadata") or {}
    status, status_note = _parse_status(obj.get("status"))
    notes: list[str] = [status_note] if status_note else []
    spec, problems = parse_spec(obj.get("spec"))
    namespace = str(meta.get("namespace") or "default")
    if spec is not None and not problems and tenancy is not None:
        placed_on = {status.placement} if status.placement is not None else set()
        admission = admit_serverless(spec, namespace, tenancy, placed_on={p for p in placed_on if p is not None})
        notes += admission.notes
        spec, problems = admission.spec, admission.problems
    elif tenancy is None:
        notes.append("ServerlessTargets not read: whether this namespace may use its cloud targets is not checked")
    conditions = tuple(status.conditions)
    base: dict[str, Any] = {
        "namespace": namespace,
        "name": str(meta.get("name") or ""),
        "generation": meta.get("generation"),
        "observed_generation": status.observed_generation,
        "placement": status.placement,
        "phase": status.phase.value if status.phase is not None else None,
        "endpoint": status.endpoint,
        "observed": status.observed,
        "last_decision": status.last_decision,
        "migration": status.migration,
        "last_migration": status.last_migration,
        "spill": status.spill,
        "scale_to_zero": status.scale_to_zero,
        "replicas_managed_by": status.targets.cluster.replicas_managed_by
        if status.targets is not None and status.targets.cluster is not None
        else None,
        "conditions": conditions,
        "events": tuple(_event_rows(events)),
    }
    if spec is None or problems:
        return Explanation(
            **base,
            targets=(),
            thresholds=(),
            policy_now="the spec is invalid: nothing is decided until it is fixed; whatever serves keeps serving",
            policy_target=None,
            policy_would_migrate=False,
            spec_problems=tuple(f"spec.{p.field}: {p.message}" for p in problems),
            notes=tuple(notes),
        )

    window = _window(status.observed, spec)
    when = now or (window.end if window is not None else datetime.now(UTC))
    last_finished = parse_time(status.last_migration.finished_at) if status.last_migration is not None else None
    state = PlacementState(
        current=status.placement,
        last_migration_finished_at=last_finished,
        # the status record accrued to now, as the reconciler does (status re-writes it only with a real change)
        month_to_date_usd=accrue_spend(status.budget, status.current_monthly_cost_usd, when).month_to_date_usd,
        accelerator=status.last_decision.accelerator if status.last_decision is not None else None,
        moving_to=status.migration.target if status.migration is not None else None,
        spilling=status.spill is not None and not status.spill.ending,
        on_spot=(
            status.last_decision.capacity_type.value == "spot"
            if status.last_decision is not None and status.last_decision.capacity_type is not None
            else None
        ),
    )
    actuators = Actuators(spot_provider=spot_provider(spot_labels))
    # explain reads no Nodes: capacity is unknown to it, so the cluster is not gated on free capacity here.
    capacity = ClusterCapacity()
    # the cold starts the operator measured replace the book's as they do in the controller (the book the prior)
    book = price_book
    price_book = measured_price_book(book, spec, status.cold_start)
    recorded = status.cold_start
    cold_rows = tuple(
        ColdStartRow(
            target=t,
            assumed_seconds=round(e.cold_start.assumed_seconds, 3),
            measured_seconds=_round3(e.cold_start.measured_seconds),
            samples=e.cold_start.samples,
            estimate_seconds=round(e.cold_start.seconds, 3),
            weight=round(e.cold_start.weight, 3),
            source=entry.source if (entry := _cold_entry(recorded, t)) is not None else None,
            provision_assumed_seconds=round(e.provision.assumed_seconds, 3),
            provision_measured_seconds=_round3(e.provision.measured_seconds),
            provision_samples=e.provision.samples,
            provision_estimate_seconds=_round3(assumed_provision(spec, price_book, t)),  # the calibrated book's
        )
        for t, e in measured_estimates(spec, book, recorded).items()
    )
    decision: Decision = decide(spec, window, state, price_book, capacity, when, actuators=actuators)
    assessment = assess(spec, window, state, price_book, capacity, when, actuators=actuators)
    infeasible = assessment.infeasible  # with alternatives, the cluster's verdict is over every acceptable one
    allowed = set(spec.placement.allowed_targets)
    rows = tuple(
        TargetRow(
            target=t,
            allowed=t in allowed,
            feasible=t not in infeasible and decision.projected_monthly_cost_usd.get(t) is not None,
            why_not=infeasible.get(t, "" if decision.projected_monthly_cost_usd.get(t) is not None else "not priced"),
            projected_monthly_cost_usd=decision.projected_monthly_cost_usd.get(t),
            recorded_monthly_cost_usd=_recorded_cost(status, t),
            slo_risk=decision.slo_risk_by_target.get(t),
            serving=status.placement is t,
            resource=_resource(status, t),
        )
        for t in TargetName
    )
    packaging = tuple(
        PackagingRow(p.target, p.field if p.field.startswith("image") else f"spec.{p.field}", p.message)
        for p in packaging_problems(spec, image_config)
    )
    if window is None:
        notes.append("no traffic recorded in status: costs use the idle prior (no requests yet)")
    else:
        notes.append(
            f"traffic: the recorded mean {window.rps[-1]:.4g} rps over {len(window.rps) * window.step_seconds:.0f} s "
            "taken as constant (the status keeps the mean, not the series)"
        )
    capacity_condition = next((c for c in conditions if c.type is ConditionType.CAPACITY_AVAILABLE), None)
    if capacity_condition is not None:
        notes.append(
            f"cluster capacity (operator, last tick): {capacity_condition.status.value}, {capacity_condition.message}"
        )
    else:
        notes.append("cluster capacity is not checked here (explain reads no Nodes)")
    return Explanation(
        **base,
        targets=rows,
        thresholds=_threshold_rows(assessment),
        policy_now=decision.reason,
        slo_now=_verdict_text(slo_verdict(spec, window, decision), "at risk", "met"),
        budget_now=_verdict_text(budget_verdict(spec, decision), "exceeded", "within"),
        policy_target=decision.target if decision.target is not None else status.placement,
        policy_would_migrate=decision.migrate,
        notes=tuple(notes),
        accelerators=_accelerator_rows(assessment, status),
        accelerator_now=assessment.accelerator.note if assessment.accelerator is not None else "",
        packaging=packaging,
        image_config_read=image_config is not None,
        cold_starts=cold_rows,
        spot_now=assessment.spot.note if assessment.spot is not None else assessment.spot_note,
        spot_recorded=(
            status.last_decision.capacity_type.value
            if status.last_decision is not None and status.last_decision.capacity_type is not None
            else None
        ),
    )


def _round3(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None


def _cold_entry(status: ColdStartStatus | None, target: TargetName) -> ColdStartTargetStatus | None:
    if status is None:
        return None
    return {TargetName.CLUSTER: status.cluster, TargetName.CLOUDRUN: status.cloudrun}.get(target, status.lambda_)


def _accelerator_rows(assessment: Assessment, status: InferenceWorkloadStatus) -> tuple[AcceleratorRow, ...]:
    choice = assessment.accelerator
    if choice is None:
        return ()
    recorded = status.last_decision.accelerator if status.last_decision is not None else None
    return tuple(
        AcceleratorRow(
            accelerator=r.option.describe(),
            chosen=r.index == choice.index,
            recorded=recorded is not None and recorded.key() == r.option.key(),
            projected_monthly_cost_usd=r.monthly_usd,
            slo_risk=r.slo_risk,
            service_time_factor=r.speed,
            why_not=r.note,
        )
        for r in choice.rows
    )


def _event_rows(events: Sequence[Mapping[str, Any]]) -> list[EventRow]:
    def when(event: Mapping[str, Any]) -> str:
        return str(event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp") or "")

    ordered = sorted(events, key=when)[-MAX_EVENTS:]
    return [
        EventRow(
            time=when(e),
            type=str(e.get("type") or ""),
            reason=str(e.get("reason") or ""),
            message=str(e.get("message") or ""),
        )
        for e in ordered
    ]


# ----------------------------------------------------------------------------------------------- rendering


def _money(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"${value:,.0f}"
    return f"${value:,.2f}"


def _rate(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.3g}"


def render(expl: Explanation, console: Any) -> None:  # noqa: C901 - issue 23 item 1
    """Print the explanation as rich tables on ``console`` (a ``rich.console.Console``)."""
    from rich.table import Table

    from inference_placement.commandline import compact_table

    title = f"{expl.namespace}/{expl.name}"
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("placement", expl.placement.value if expl.placement else "none yet")
    head.add_row("phase", expl.phase or "-")
    head.add_row("endpoint", expl.endpoint or "-")
    gens = f"{expl.observed_generation if expl.observed_generation is not None else '-'} of {expl.generation}"
    head.add_row("reconciled generation", gens)
    if expl.observed is not None:
        obs = expl.observed
        p99 = f"{obs.observed_p99_seconds * 1000:.0f} ms" if obs.observed_p99_seconds is not None else "-"
        first = (
            f", first token {obs.warm_latency_seconds * 1000:.0f} ms (median)"
            if obs.warm_latency_seconds is not None
            else ""
        )
        head.add_row(
            "observed", f"{obs.rps if obs.rps is not None else '-'} rps, p99 {p99}{first}, at {obs.sampled_at or '-'}"
        )
    console.print(expl.verdict, style="bold", markup=False, highlight=False)
    console.print(f"[bold]InferenceWorkload {title}[/bold]")
    console.print(head)

    if expl.spec_problems:
        problems = compact_table("Invalid spec", "problem")
        for problem in expl.spec_problems:
            problems.add_row(problem)
        console.print(problems)

    if expl.targets:
        table = compact_table(
            "Targets",
            "target",
            "allowed",
            "feasible",
            "cost/mo now",
            "cost/mo recorded",
            "SLO risk",
            "resource",
            "why not",
            right=("cost/mo now", "cost/mo recorded", "SLO risk"),
        )
        for row in expl.targets:
            resource = "-"
            if row.resource is not None:
                state = "ready" if row.resource.ready else "not ready"
                resource = f"{row.resource.name} ({state})" + (
                    f": {row.resource.message}" if row.resource.message else ""
                )
            name = f"[bold]{row.target.value}*[/bold]" if row.serving else row.target.value
            table.add_row(
                name,
                "yes" if row.allowed else "no",
                "yes" if row.feasible else "no",
                _money(row.projected_monthly_cost_usd),
                _money(row.recorded_monthly_cost_usd),
                f"{row.slo_risk:.2%}" if row.slo_risk is not None else "-",
                resource,
                row.why_not or "",
            )
        console.print(table)
        console.print("* serving now")

    if expl.packaging:
        pack = compact_table("Packaging: what the image lacks", "target", "field", "missing")
        for lack in expl.packaging:
            pack.add_row(lack.target.value, lack.field, lack.missing)
        console.print(pack)
    if expl.targets and not expl.image_config_read and any(t.allowed and t.target in SERVERLESS for t in expl.targets):
        console.print(
            "[dim]packaging checked from the spec only: pass --image-config with the image's OCI config (crane "
            "config IMAGE, skopeo inspect --config docker://IMAGE) to check its architecture and entrypoint[/dim]"
        )

    if expl.accelerators:
        acc = compact_table(
            "Cluster accelerators (acceptable, in the spec's order)",
            "accelerator",
            "cost/mo now",
            "SLO risk",
            "service x",
            "why not",
            right=("cost/mo now", "SLO risk", "service x"),
        )
        for a in expl.accelerators:
            name = f"[bold]{a.accelerator}*[/bold]" if a.chosen else a.accelerator
            acc.add_row(
                name + (" (recorded)" if a.recorded else ""),
                _money(a.projected_monthly_cost_usd),
                f"{a.slo_risk:.2%}" if a.slo_risk is not None else "-",
                f"{a.service_time_factor:.3g}",
                a.why_not,
            )
        console.print(acc)
        console.print(f"* chosen now: {expl.accelerator_now}")

    if expl.spot_now:
        recorded = f" (recorded: {expl.spot_recorded})" if expl.spot_recorded else ""
        console.print(f"Spot capacity{recorded}: {expl.spot_now}")

    if expl.cold_starts:
        colds = compact_table(
            "Cold starts and migration leads (measured vs assumed)",
            "target",
            "cold start assumed",
            "measured (n)",
            "used",
            "lead assumed",
            "measured (n)",
            "used",
            "cold start measured from",
            right=("cold start assumed", "used", "lead assumed"),
        )
        for cold in expl.cold_starts:
            measured = f"{cold.measured_seconds:.3g}s ({cold.samples})" if cold.measured_seconds is not None else "-"
            lead = (
                f"{cold.provision_measured_seconds:.3g}s ({cold.provision_samples})"
                if cold.provision_measured_seconds is not None
                else "-"
            )
            colds.add_row(
                cold.target.value,
                f"{cold.assumed_seconds:.3g}s",
                measured,
                f"{cold.estimate_seconds:.3g}s" + (f" ({cold.weight:.0%} measured)" if cold.samples else " (book)"),
                f"{cold.provision_assumed_seconds:.3g}s" if cold.provision_assumed_seconds is not None else "-",
                lead,
                f"{cold.provision_estimate_seconds:.3g}s" if cold.provision_estimate_seconds is not None else "-",
                cold.source or "",
            )
        console.print(colds)

    if expl.thresholds:
        th = compact_table(
            "Thresholds (cluster <-> serverless)", "serverless", "offload below", "reclaim above", "set by"
        )
        for t in expl.thresholds:
            th.add_row(
                t.serverless.value, f"{_rate(t.offload_below_rps)} rps", f"{_rate(t.reclaim_above_rps)} rps", t.how
            )
        console.print(th)

    decisions = compact_table("Decisions", "when", "what", "why")
    move = " (would migrate)" if expl.policy_would_migrate else ""
    target = expl.policy_target.value if expl.policy_target else "-"
    decisions.add_row("policy now", f"{target}{move}", expl.policy_now)
    if expl.slo_now:
        decisions.add_row("SLO now", "", expl.slo_now)
    if expl.budget_now:
        decisions.add_row("budget now", "", expl.budget_now)
    if expl.last_decision is not None:
        d = expl.last_decision
        decisions.add_row(d.decided_at, f"{d.target.value} x{d.replicas}", d.reason)
    if expl.replicas_managed_by is not None:
        decisions.add_row(
            "now",
            f"cluster replicas: {expl.replicas_managed_by}",
            "the user's autoscaler owns the Deployment's spec.replicas: the operator never writes them, its replica "
            "decision is advisory (no scale to zero; placement, routing and spillover carry on)",
        )
    if expl.spill is not None:
        sp = expl.spill
        decisions.add_row(sp.step_started_at, f"spill to {sp.target.value}: {sp.step.value}", sp.message)
    zero = expl.scale_to_zero
    if zero is not None and zero.zeroed_at is not None:
        hold = f"a request that finds no pod is held up to {zero.hold_seconds:g}s" if zero.hold_seconds else ""
        if zero.answer_reason:
            hold = f"a request that finds no pod is {zero.answer_reason}"
        decisions.add_row(zero.zeroed_at, "cluster at 0 replicas", hold)
    if zero is not None and zero.last_wake is not None:
        w = zero.last_wake
        by = "requests held by the router" if w.woken_by_request else "the decision"
        if w.woken_by_request and w.answered_by is not None:
            by = f"{w.fell_through_requests or 0} request(s) answered by {w.answered_by} while at zero"
        answered = (
            f"; {w.held_requests} held request(s) answered after {w.wake_latency_ms:.0f} ms on average"
            if w.held_requests is not None and w.wake_latency_ms is not None
            else ""
        )
        decisions.add_row(w.woken_at, "woken from 0 replicas", f"by {by} after {w.zero_seconds:.0f}s at zero{answered}")
    if expl.migration is not None:
        m = expl.migration
        source = m.source.value if m.source else "nothing"
        decisions.add_row(
            m.step_started_at,
            f"migrating {source} -> {m.target.value}",
            f"{m.step.value}, {m.traffic_percent}% on target; {m.reason}"
            + (f"; last error: {m.last_error}" if m.last_error else ""),
        )
    if expl.last_migration is not None:
        lm = expl.last_migration
        source = lm.source.value if lm.source else "nothing"
        decisions.add_row(lm.finished_at, f"migration {source} -> {lm.target.value}: {lm.outcome.value}", lm.message)
    for event in expl.events:
        decisions.add_row(event.time, f"event {event.reason}", event.message)
    console.print(decisions)

    if expl.conditions:
        conds = compact_table("Conditions", "type", "status", "reason", "message", "since")
        for c in expl.conditions:
            conds.add_row(c.type.value, c.status.value, c.reason.value, c.message, c.last_transition_time)
        console.print(conds)

    for note in expl.notes:
        console.print(f"[dim]note: {note}[/dim]")


# ----------------------------------------------------------------------------------------------- I/O and command


async def read_workload(
    name: str, namespace: str, kubeconfig: str | None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The workload object and its Events (Events are best effort: a user without access to them gets none)."""
    from inference_placement.controller.kube import make_api_client

    async with await make_api_client(kubeconfig) as api:
        return await read_workload_with(api, name, namespace)


async def read_workload_with(api: Any, name: str, namespace: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """:func:`read_workload` through an open ``kubernetes_asyncio`` ApiClient (e.g. one on a chosen context)."""
    from kubernetes_asyncio import client as k8s
    from kubernetes_asyncio.client.rest import ApiException

    custom = k8s.CustomObjectsApi(api)
    obj: dict[str, Any] = await custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    events: list[dict[str, Any]] = []
    try:
        core = k8s.CoreV1Api(api)
        selector = f"involvedObject.name={name},involvedObject.kind={KIND}"
        listing = await core.list_namespaced_event(namespace, field_selector=selector)
        events = [api.sanitize_for_serialization(item) for item in listing.items]
    except ApiException:
        events = []
    return obj, events


async def read_tenancy(namespace: str, kubeconfig: str | None) -> TenancyView | None:
    """The ServerlessTargets and the namespace's labels, as the operator reads them; None when the caller may not
    read them (explain then says the admission was not checked)."""
    from inference_placement.controller.kube import make_api_client

    async with await make_api_client(kubeconfig) as api:
        return await read_tenancy_with(api, namespace)


async def read_tenancy_with(api: Any, namespace: str) -> TenancyView | None:
    """:func:`read_tenancy` through an open ``kubernetes_asyncio`` ApiClient."""
    from kubernetes_asyncio import client as k8s
    from kubernetes_asyncio.client.rest import ApiException

    from inference_placement.api.serverless_target import TARGET_PLURAL, ServerlessTarget, ServerlessTargetSpec

    try:
        listed = await k8s.CustomObjectsApi(api).list_cluster_custom_object(GROUP, VERSION, TARGET_PLURAL)
    except ApiException:
        return None
    targets = {}
    for item in listed.get("items", []):
        name = str((item.get("metadata") or {}).get("name", ""))
        try:
            targets[name] = ServerlessTarget(name=name, spec=ServerlessTargetSpec.model_validate(item.get("spec")))
        except ValidationError:
            continue
    labels: dict[str, dict[str, str]] = {}
    try:
        ns = await k8s.CoreV1Api(api).read_namespace(namespace)
        labels[namespace] = dict(ns.metadata.labels or {})
    except ApiException:
        pass  # a selector cannot match labels we may not read: only targets naming the namespace admit it here
    return TenancyView(targets=targets, namespace_labels=labels, allow_inline_cloud_identity=True)


def load_price_book_file(path: Path | None, flag: str = "--price-book") -> PriceBook:
    """The price book in ``path`` (the packaged one when None); a missing or invalid file is a one-line error."""
    if path is None:
        return default_price_book()
    text = read_input_file(path, flag)
    try:
        return load_price_book(text, source=str(path))
    except ValueError as err:  # PriceBookError, and YAML that is not a price book
        raise CommandError(f"{flag} {path}: invalid: {one_line(err)}", ExitCode.INPUT) from None


def load_image_config_file(path: Path | None, flag: str = "--image-config") -> ImageConfig | None:
    """The OCI image config in ``path`` (None when no file is given); unreadable JSON is a one-line error."""
    if path is None:
        return None
    text = read_input_file(path, flag)
    try:
        return parse_image_config(json.loads(text))
    except (ValueError, ImageConfigError) as err:  # JSONDecodeError is a ValueError
        raise CommandError(f"{flag} {path}: invalid: {one_line(err)}", ExitCode.INPUT) from None


def print_explanation(explanation: Explanation, output: OutputFormat) -> None:
    """``explanation`` on stdout as tables (sized to the terminal; 80 columns when it is not one), JSON or YAML."""
    if output is OutputFormat.JSON:
        typer.echo(json.dumps(explanation.to_dict(), indent=2, sort_keys=False))
    elif output is OutputFormat.YAML:
        import yaml

        typer.echo(yaml.safe_dump(explanation.to_dict(), sort_keys=False), nl=False)
    else:
        from rich.console import Console

        render(explanation, Console())


def explain_command(
    name: Annotated[str, typer.Argument(help="Name of the InferenceWorkload.")],
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="Namespace of the workload.")] = "default",
    kubeconfig: Annotated[
        Optional[str], typer.Option(help="Kubeconfig path (default: in-cluster, then ~/.kube/config).")
    ] = None,
    price_book: Annotated[Optional[Path], typer.Option(help="Price book YAML (default: the packaged one).")] = None,
    output: Annotated[OutputFormat, typer.Option("--output", "-o", help="Output format.")] = OutputFormat.TABLE,
    image_config: Annotated[
        Optional[Path],
        typer.Option(
            help="The model image's OCI config JSON (crane config IMAGE, skopeo inspect --config docker://IMAGE): "
            "checks its architecture, OS and entrypoint against Lambda and Cloud Run."
        ),
    ] = None,
    spot_node_labels: Annotated[
        str,
        typer.Option(
            help="The operator's cluster.spotNodeLabels (none, eks, gke, karpenter): how spot is weighed for a "
            "workload asking for it (pre-emption facts of AWS for eks/karpenter, GCP for gke)."
        ),
    ] = "none",
) -> None:
    """Explain why a workload runs where it runs: cost and feasibility per target, thresholds, last decisions."""
    book = load_price_book_file(price_book)
    image = load_image_config_file(image_config)
    if spot_node_labels not in ("none", "eks", "gke", "karpenter"):
        raise typer.BadParameter("one of none, eks, gke, karpenter", param_hint="--spot-node-labels")
    labels: SpotLabels = spot_node_labels  # type: ignore[assignment]  # checked just above
    require_kubeconfig(kubeconfig)
    try:
        obj, events = asyncio.run(read_workload(name, namespace, kubeconfig))
        tenancy = asyncio.run(read_tenancy(namespace, kubeconfig))
    except Exception as err:
        error = apiserver_error(err, f"InferenceWorkload {namespace}/{name}")
        if error is None:
            raise
        raise error from None
    explanation = explain_workload(obj, book, events=events, tenancy=tenancy, image_config=image, spot_labels=labels)
    print_explanation(explanation, output)


def register(app: typer.Typer) -> None:
    app.command("explain")(explain_command)
