"""One level-triggered reconcile of one InferenceWorkload.

Every call recomputes the desired state from the spec, the metrics window, the price book and the status (which
holds everything that must survive a restart: placement, the migration in flight, the last migration), performs the
I/O the current step needs, and writes status only when it changed semantically. Bad input never stops what is
serving: an invalid spec freezes the workload where it is and says why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes_asyncio.client.rest import ApiException
from pydantic import ValidationError

from inference_placement.api.conditions import WORKLOAD_CONDITIONS, derive_phase
from inference_placement.api.spec import SERVERLESS, InferenceWorkloadSpec, ModelSpec, TargetName
from inference_placement.api.status import (
    BudgetStatus,
    CapacityType,
    ColdStartStatus,
    ColdStartTargetStatus,
    Condition,
    ConditionStatus,
    ConditionType,
    DecisionRecord,
    InferenceWorkloadStatus,
    MigrationOutcome,
    MigrationStatus,
    MigrationStep,
    ObservedTraffic,
    ProjectedCosts,
    Reason,
    ScaleToZeroStatus,
    SpillStep,
    TargetErrorKind,
    TargetResourceStatus,
    TargetsStatus,
    WakeRecord,
)
from inference_placement.api.timestamps import parse_time as parse_stamp
from inference_placement.api.validation import SpecProblem, name_problems, parse_spec
from inference_placement.api.workload import InferenceWorkload, ObjectMeta, WorkloadKey
from inference_placement.controller.kube import KubeWriter, now_rfc3339
from inference_placement.controller.migration import (
    MigrationAction,
    MigrationObservation,
    MigrationTimings,
    actions_for,
    advance,
    parse_time,
    start_migration,
)
from inference_placement.controller.router_sync import positive_weights
from inference_placement.controller.spill import SpillObservation, advance_spill
from inference_placement.controller.status_diff import merge_patch, semantically_equal
from inference_placement.controller.telemetry import Telemetry
from inference_placement.controller.tenancy import TenancyCache
from inference_placement.controller.wake import WakeSignal
from inference_placement.controller.warm_pinger import PingPlan, WarmPinger
from inference_placement.policy.actuation import Actuators, ZeroAnswer, target_settings, zero_allowed, zero_answer
from inference_placement.policy.budget import MONTH_SECONDS, accrue_spend
from inference_placement.policy.capacity import ClusterCapacity
from inference_placement.policy.cold_start import cold_start_status, measured_price_book, screen
from inference_placement.policy.decide import Decision, PlacementState, TrafficWindow, decide
from inference_placement.policy.economics import workload_economics
from inference_placement.policy.first_request import FirstRequestSample
from inference_placement.policy.packaging import packaging_problems
from inference_placement.policy.price_book import PriceBook
from inference_placement.policy.replica_ownership import actuators_under
from inference_placement.policy.tenancy import admit_serverless, identity_for_retire
from inference_placement.policy.traffic_health import TargetCounters, traffic_problem
from inference_placement.policy.verdicts import budget_verdict, slo_verdict
from inference_placement.routing.model import traffic_weights
from inference_placement.targets.base import (
    DesiredTarget,
    NotOwnedError,
    PermanentTargetError,
    RetryableTargetError,
    Target,
    TargetError,
    TargetState,
    as_target_error,
)

__all__ = ["GUARDED_STATUS_KEYS", "ReconcileResult", "Reconciler", "TickInputs"]

log = logging.getLogger(__name__)

_FALL_THROUGH_LATENCY_WAIT_SECONDS = 30.0
"""A woken workload keeps its fall-through route at most this long for the latency of the requests that fell
through (the router's histogram of that target, merged at Envoy's 5 s stats flush, read by the next wake poll)."""

GUARDED_STATUS_KEYS = frozenset({"migration", "placement", "lastMigration", "targets", "spill"})
"""Status keys whose change is written only onto the object version the reconcile read (resourceVersion)."""


@dataclass(frozen=True)
class TickInputs:
    """What the fleet loop gathered once per tick for all workloads, and hands to each reconcile."""

    now: datetime
    price_book: PriceBook
    capacity: ClusterCapacity
    window: TrafficWindow | None = None
    metrics_problem: str | None = None
    """Why there is no usable window (source down, no series, garbage), when there is none."""
    capacity_verdict: tuple[bool, str] | None = None
    """(enough free capacity, numbers) for the workload's in-cluster needs; None when not applicable."""
    router_enabled: bool = False
    """The operator manages the router: migrations wait for it to confirm each step's weights."""
    router_weights: Mapping[TargetName, int] | None = None
    """Weights the router confirmed for this workload (positive ones); None = nothing confirmed yet."""
    router_spill: TargetName | None = None
    """The overflow target the router confirmed it retries this workload's refused requests on; None = none."""
    router_answers_without_pods: bool = False
    """The router confirmed a route that answers a request finding no ready pod (holds it in the activator, or
    sends it to a serverless overflow): only then may the cluster go to zero replicas."""
    wake: WakeSignal | None = None
    """What the router's activator saw of this workload since its last reconcile (held requests: wake it now)."""
    serverless_first_requests: Mapping[TargetName, FirstRequestSample] | None = None
    """Serverless cold starts the router measured for this workload since its last reconcile (the first request
    after an idle gap, ``policy.first_request``); recorded in ``status.coldStart``."""
    router_traffic: Mapping[TargetName, TargetCounters] | None = None
    """The router's own cumulative counters of this workload's traffic per target (read while it migrates); None =
    not read (no router, no migration, or unreadable)."""
    history_loading: bool = False
    """The metrics source is still reading the request-rate history back after a start (``MetricsSnapshot``)."""
    price_book_problem: str | None = None
    """Why the configured price book is not the one in force (rejected at start-up or on reload); None = it is."""


@dataclass
class ReconcileResult:
    wrote_status: bool = False
    active: bool = False
    """Something is in flight (a migration, provisioning): reconcile again soon rather than next tick."""
    events: list[str] = field(default_factory=list)
    body: dict[str, Any] | None = None
    """The object as the apiserver returned it after our last write (fresher than the watch)."""
    revisit_at: datetime | None = None
    """The earliest future time at which the clock alone can change this reconcile's outcome and that no input
    shows (a cooldown ending); None = none known. The fleet reconciles the workload again once it passed."""
    failures: list[TargetError] = field(default_factory=list)
    """Target errors this reconcile met (recorded in status): the fleet backs this workload off before retrying."""
    erroring: bool = False
    """Status still shows a target error (e.g. a failed placement rolled back this time): the backoff stays."""


@dataclass
class _Pending:
    """Changes gathered during one reconcile, applied at the end."""

    events: list[tuple[str, str, bool]] = field(default_factory=list)
    failures: list[TargetError] = field(default_factory=list)

    def event(self, reason: str, message: str, *, warning: bool = False) -> None:
        self.events.append((reason, message, warning))


class _Conditions:
    """The workload's conditions while one reconcile marks them; Events for the transitions that deserve one."""

    def __init__(self, items: list[Condition], stamp: str, generation: int | None) -> None:
        self.items = items
        self.stamp = stamp
        self.generation = generation
        self.pending = _Pending()

    def mark(self, type_: ConditionType, state: ConditionStatus, reason: Reason, message: str) -> None:
        before = next((c for c in self.items if c.type is type_), None)
        self.items = WORKLOAD_CONDITIONS.mark(
            self.items, type_, state, reason, message, now=self.stamp, generation=self.generation
        )
        after = next(c for c in self.items if c.type is type_)
        changed = before is None or before.status is not after.status
        if type_ is ConditionType.INVALID_SPEC and changed:
            if state is ConditionStatus.TRUE:
                self.pending.event("InvalidSpec", message, warning=True)
            elif before is not None:
                self.pending.event("SpecValid", "spec is valid again; placement resumes")
        elif type_ in _EVENTFUL:
            became_bad = (state is ConditionStatus.TRUE) == (type_ not in _GOOD_WHEN_TRUE)
            if (before is None and became_bad) or (before is not None and before.status is not after.status):
                self.pending.event(reason.value, message, warning=became_bad)


_GOOD_WHEN_TRUE = frozenset(
    {ConditionType.METRICS_AVAILABLE, ConditionType.PRICE_BOOK_VALID, ConditionType.PACKAGING_VALID}
)
_EVENTFUL = frozenset(
    {
        ConditionType.BUDGET_EXCEEDED,
        ConditionType.SLO_AT_RISK,
        ConditionType.METRICS_AVAILABLE,
        ConditionType.PRICE_BOOK_VALID,
        ConditionType.PACKAGING_VALID,
    }
)


def _mark_packaging(conditions: _Conditions, spec: InferenceWorkloadSpec) -> None:
    """PackagingValid: False (PackagingInvalid, naming the target and field) while the spec says the image cannot
    start on an allowed serverless target, which feasibility then refuses; True again once fixed. Absent until the
    first problem, like PriceBookValid, so a workload without one carries no extra condition."""
    problems = packaging_problems(spec)
    if problems:
        message = "; ".join(str(p) for p in problems)
        conditions.mark(ConditionType.PACKAGING_VALID, ConditionStatus.FALSE, Reason.PACKAGING_INVALID, message)
    elif any(c.type is ConditionType.PACKAGING_VALID for c in conditions.items):
        conditions.mark(
            ConditionType.PACKAGING_VALID,
            ConditionStatus.TRUE,
            Reason.PACKAGING_VALID,
            "the image can start everywhere allowed",
        )


"""Conditions whose transitions post an Event (a warning when they turn bad)."""


class Reconciler:
    def __init__(
        self,
        writer: KubeWriter,
        targets: Mapping[TargetName, Target],
        *,
        timings: MigrationTimings | None = None,
        cloud_finalizer: str = "placement.inference.dev/cloud-resources",
        max_metrics_staleness_seconds: float = 180.0,
        telemetry: Telemetry | None = None,
        stable_endpoint: Callable[[str, str], str] | None = None,
        pinger: WarmPinger | None = None,
        actuators: Actuators = Actuators(),
        wake_keep_seconds: float = 60.0,
        fence: Callable[[], None] | None = None,
        tenancy: TenancyCache | None = None,
    ) -> None:
        self.writer = writer
        self.tenancy = tenancy if tenancy is not None else TenancyCache(None)
        """The admin-defined ServerlessTargets a workload's cloud targets are admitted against
        (``policy.tenancy``); the default has none and refuses inline cloud identity."""
        self.fence = fence
        """Raises when this replica may not act (``leader.LeaseElector.fence``): checked before every call that
        creates, changes or deletes a target's resources; None = a single replica, always acting."""
        self.telemetry = telemetry or Telemetry()
        self.targets = dict(targets)
        self.timings = timings or MigrationTimings()
        self.cloud_finalizer = cloud_finalizer
        self.max_metrics_staleness_seconds = max_metrics_staleness_seconds
        self.stable_endpoint = stable_endpoint
        self.pinger = pinger
        self.actuators = actuators
        self.wake_keep_seconds = wake_keep_seconds
        self._traffic_marks: dict[WorkloadKey, tuple[tuple[str, TargetName, int], TargetCounters]] = {}
        """Per migrating workload: the traffic step (migration start, target, percent on it) and the target's
        counters when this operator first saw it: the step's window is everything counted since."""
        """After a wake-up from zero the cluster keeps a replica at least this long (no flapping back to zero
        before the traffic that woke it reaches the metrics the policy reads)."""
        """What this operator can carry out (``decide`` and the actuation read it)."""
        """Keeps serverless instances warm when the decision says so; None = no router to ping through."""
        """(namespace, name) -> the URL that never changes (the router); None = publish the serving target's."""

    # ------------------------------------------------------------------ entry point

    async def reconcile(
        self,
        raw: Mapping[str, Any],
        inputs: TickInputs,
        *,
        parsed_spec: tuple[InferenceWorkloadSpec | None, list[SpecProblem]] | None = None,
    ) -> ReconcileResult:
        """``parsed_spec``: ``parse_spec(raw["spec"])`` when the caller keeps it (read only, never mutated here).

        In order: a deletion finalizes; an invalid spec (or no configured target) freezes the workload and says why;
        otherwise decide, mark the decision's conditions, drive the placement (migration steps, target settings,
        keep-warm pings), mark the placement's conditions, and write status if it changed."""
        meta = ObjectMeta.model_validate(raw.get("metadata") or {})
        current_wire: dict[str, Any] = dict(raw.get("status") or {})
        status = _parse_status(current_wire, meta)
        result = ReconcileResult()
        if meta.deletion_timestamp is not None:
            self._traffic_marks.pop(WorkloadKey(meta.namespace, meta.name), None)
            if self.pinger is not None:
                self.pinger.plan(WorkloadKey(meta.namespace, meta.name), None)
            result.active = not await self._finalize(raw, meta, status, result.failures)
            return result

        spec, problems = parsed_spec if parsed_spec is not None else parse_spec(raw.get("spec"))
        conditions = _Conditions(list(status.conditions), now_rfc3339(inputs.now), meta.generation)
        refusal = _spec_refusal(spec, [*problems, *name_problems(meta.name)], self.targets)
        notes: list[str] = []
        if spec is not None and refusal is None:
            # may this namespace use the cloud targets it names, with these images? (no cloud call if not)
            admission = admit_serverless(
                spec, meta.namespace, self.tenancy.view, offered=self.targets.keys(), placed_on=_placed_on(status)
            )
            notes = admission.notes
            if admission.spec is None:
                refusal = "; ".join(str(p) for p in admission.problems)
            else:
                spec = admission.spec
        if spec is None or refusal is not None:
            conditions.mark(ConditionType.INVALID_SPEC, ConditionStatus.TRUE, Reason.SPEC_INVALID, refusal or "")
            return await self._finish(meta, current_wire, status, conditions, result, changes={})
        conditions.mark(ConditionType.INVALID_SPEC, ConditionStatus.FALSE, Reason.SPEC_VALID, "; ".join(notes))
        _mark_packaging(conditions, spec)
        effective = _with_configured_targets(spec, self.targets)
        # the policy decides with the cold starts measured for this workload's model (the book as the prior)
        book = inputs.price_book
        measured_book = measured_price_book(book, effective, status.cold_start)
        if measured_book is not book:
            inputs = replace(inputs, price_book=measured_book)

        actuators = self._actuators(status, inputs, result)
        decision, accrued = self._decide(effective, status, inputs, result, actuators)
        decision = _kept_at_zero(decision, status, inputs)
        if actuators.cluster_scale_to_zero and decision.target is TargetName.CLUSTER and decision.replicas == 0:
            # who answers at zero, in the decision's own words (its Event and status.lastDecision; a first
            # placement's decision too, since a record is not rewritten while its target and replicas stay)
            answer = _zero_answer(effective, decision, status, inputs.price_book, actuators)
            decision = replace(decision, reason=f"{decision.reason}; at zero a request is {answer.reason}")
        self._mark_decision(conditions, effective, decision, status, inputs)
        new_status = status.model_copy(
            update={
                "observed_generation": meta.generation,
                "observed": _observed(inputs.window) if decision.metrics_ok else status.observed,
                "projected_monthly_cost_usd": _costs(decision),
            }
        )
        recorded = _record_decision(new_status, decision, conditions.stamp, conditions.pending)
        if recorded is not new_status and decision.target is not None:
            self.telemetry.decisions.labels(_n(status.placement), decision.target.value).inc()
        self._export_costs(meta, spec, decision)

        workload = InferenceWorkload(metadata=meta, spec=spec, status=status)
        pending = conditions.pending
        new_status = await self._drive_placement(workload, effective, decision, recorded, inputs, pending, actuators)
        new_status = await self._drive_spill(workload, decision, new_status, inputs, pending, actuators)
        new_status = await self._drive_zero_answer(
            workload, effective, decision, new_status, inputs, pending, actuators
        )
        new_status = self._track_zero(meta, effective, decision, new_status, inputs, pending, actuators)
        self._plan_pings(meta, spec, decision, new_status, inputs, actuators)
        new_status = _track_cold_start(
            effective, book, status, new_status, inputs.now, conditions.stamp, pending, inputs.serverless_first_requests
        )
        result.active = new_status.migration is not None or not _placed_ready(new_status)
        serving = _mark_placement(conditions, new_status, min_serving=max(1, spec.scaling.min_replicas))

        placed = new_status.placement
        cost_now = decision.projected_monthly_cost_usd.get(placed) if placed is not None else None
        changes = {
            "current_monthly_cost_usd": cost_now,
            "endpoint": self._endpoint(meta, serving),
            "budget": accrued.model_copy(update={"projected_month_usd": round(decision.projected_month_usd, 2)}),
        }
        return await self._finish(meta, current_wire, new_status, conditions, result, changes=changes)

    # ------------------------------------------------------------------ steps

    def _actuators(self, status: InferenceWorkloadStatus, inputs: TickInputs, result: ReconcileResult) -> Actuators:
        """What can be carried out for this workload on this tick. Zero cluster replicas only while the router
        serves a route that answers a request finding no pod, no request waits for a replica (the router's
        activator holds some: wake now), and the last wake-up is ``wake_keep_seconds`` old; never while a user's
        autoscaler owns the Deployment's replicas (``policy.replica_ownership``: the operator never writes them)."""
        cluster = (status.targets or TargetsStatus()).cluster
        actuators = actuators_under(self.actuators, cluster.replicas_managed_by if cluster is not None else None)
        if not actuators.cluster_scale_to_zero:
            return actuators
        # right after a restart nothing is confirmed yet (router_weights None): a workload recorded at zero stays
        # there, since the router keeps serving the holding route the previous run confirmed until the first apply
        restarted_at_zero = (
            inputs.router_weights is None
            and status.scale_to_zero is not None
            and status.scale_to_zero.zeroed_at is not None
        )
        woken = status.scale_to_zero.last_wake if status.scale_to_zero is not None else None
        woken_at = parse_stamp(woken.woken_at) if woken is not None else None
        since = (_aware(inputs.now) - woken_at).total_seconds() if woken_at is not None else None
        allowed = zero_allowed(
            answers_without_pods=inputs.router_answers_without_pods or restarted_at_zero,
            requests_held=_request_waits(status, inputs.wake),
            seconds_since_wake=since,
            keep_seconds=self.wake_keep_seconds,
        )
        if woken_at is not None and since is not None and since < self.wake_keep_seconds:
            keep_until = woken_at + timedelta(seconds=self.wake_keep_seconds)
            if result.revisit_at is None or keep_until < result.revisit_at:
                result.revisit_at = keep_until
        return self.actuators if allowed else replace(self.actuators, cluster_scale_to_zero=False)

    async def _drive_zero_answer(
        self,
        workload: InferenceWorkload,
        spec: InferenceWorkloadSpec,
        decision: Decision,
        status: InferenceWorkloadStatus,
        inputs: TickInputs,
        pending: _Pending,
        actuators: Actuators,
    ) -> InferenceWorkloadStatus:
        """Who answers a request that finds the cluster at zero (``policy.actuation.zero_answer``), recorded in
        ``status.scaleToZero.answeredBy`` before the Deployment goes to zero (the router's route follows it: a
        serverless target there is the composite's fall-through, and zero is allowed only once the router serves
        that route), and kept until the woken cluster has a ready replica again. The serverless target it names is
        kept deployed meanwhile, at the spec's floor (0: free while idle); it stays deployed afterwards (idle,
        free) and retires with the workload or a migration."""
        if not self.actuators.cluster_scale_to_zero:
            return status
        tracked = status.scale_to_zero
        serving_cluster = status.placement is TargetName.CLUSTER and status.migration is None and status.spill is None
        wants_zero = _wants_zero(status, decision)
        at_zero = tracked is not None and tracked.zeroed_at is not None
        cluster = _target_status(status.targets or TargetsStatus(), TargetName.CLUSTER)
        cluster_up = cluster is not None and cluster.ready and (cluster.replicas or 0) > 0
        falling_through = tracked is not None and tracked.answered_by in {t.value for t in SERVERLESS}
        # the router's counters of the target vanish with its cluster when the route drops the fall-through: kept a
        # little while a wake by what fell through waits for their latency (Envoy merges histograms at its flush)
        last = tracked.last_wake if tracked is not None else None
        woken_at = parse_stamp(last.woken_at) if last is not None else None
        measuring = (
            last is not None
            and last.answered_by is not None
            and last.wake_latency_ms is None
            and woken_at is not None
            and (_aware(inputs.now) - woken_at).total_seconds() < _FALL_THROUGH_LATENCY_WAIT_SECONDS
        )
        keep = wants_zero or at_zero or (falling_through and (not cluster_up or measuring))
        if not serving_cluster or not keep:
            if tracked is None or tracked.answered_by is None:
                return status
            cleared = tracked.model_copy(update={"answered_by": None, "answer_reason": None})
            return status.model_copy(update={"scale_to_zero": cleared})
        answer = _zero_answer(spec, decision, status, inputs.price_book, actuators)
        if answer.wanted is not None:
            status = await self._ensure(
                workload, answer.wanted, decision, status, pending, actuators, inputs.price_book
            )
            answer = _zero_answer(spec, decision, status, inputs.price_book, actuators)
        tracked = status.scale_to_zero or ScaleToZeroStatus()
        serverless = {t.value for t in SERVERLESS}
        if tracked.answered_by != answer.answered_by and serverless & {tracked.answered_by, answer.answered_by}:
            # a serverless target starts or stops answering (the activator alone is in ScaledToZero's own words)
            pending.event("ZeroAnswer", f"a request that finds no pod is {answer.reason}")
        updated = tracked.model_copy(update={"answered_by": answer.answered_by, "answer_reason": answer.reason})
        return status.model_copy(update={"scale_to_zero": updated})

    def _track_zero(
        self,
        meta: ObjectMeta,
        spec: InferenceWorkloadSpec,
        decision: Decision,
        status: InferenceWorkloadStatus,
        inputs: TickInputs,
        pending: _Pending,
        actuators: Actuators,
    ) -> InferenceWorkloadStatus:
        """``status.scaleToZero`` and its Events: when the Deployment went to zero, when and why it came back, and
        what the woken requests waited (the activator's hold time, reported by ``controller/wake.py``)."""
        serving_cluster = status.placement is TargetName.CLUSTER and status.migration is None
        replicas = target_settings(
            TargetName.CLUSTER,
            decision,
            spec,
            status.last_decision,
            actuators,
            serving_replicas=_serving_replicas(status, decision, TargetName.CLUSTER),
        ).replicas
        cluster = (status.targets or TargetsStatus()).cluster
        # under a user's autoscaler a decision of zero is advisory: the Deployment keeps the autoscaler's count
        managed = cluster is not None and cluster.replicas_managed_by is not None
        at_zero = serving_cluster and replicas == 0 and not managed
        before = status.scale_to_zero
        tracked = before or ScaleToZeroStatus()
        stamp = now_rfc3339(inputs.now)
        wake = inputs.wake
        hold = spec.slo.tolerable_cold_start()
        if at_zero and tracked.zeroed_at is None:
            tracked = tracked.model_copy(update={"zeroed_at": stamp, "gaps": tracked.gaps + 1, "hold_seconds": hold})
            pending.event(
                "ScaledToZero",
                f"cluster x0: {decision.reason or 'no replica needed'}; a request that finds no pod is "
                f"{tracked.answer_reason or f'held by the router up to {hold:g}s while a replica starts'}",
            )
        elif not at_zero and tracked.zeroed_at is not None and replicas == 0:
            # the cluster stopped being the placement at zero (a migration took the traffic): no wake-up, the
            # migration's Events tell the rest
            tracked = tracked.model_copy(update={"zeroed_at": None})
        elif not at_zero and tracked.zeroed_at is not None:
            zeroed = parse_stamp(tracked.zeroed_at)
            seconds = max(0.0, (_aware(inputs.now) - zeroed).total_seconds()) if zeroed is not None else 0.0
            by_request = _request_waits(status, wake)
            record = WakeRecord(
                zeroed_at=tracked.zeroed_at, woken_at=stamp, zero_seconds=round(seconds, 1), woken_by_request=by_request
            )
            cause = "the decision"
            if wake is not None and by_request and wake.demand:
                cause = f"{wake.held} request(s) held by the router"
            elif wake is not None and by_request:
                cause = f"{wake.fell_through} request(s) answered by {tracked.answered_by} while at zero"
                record = record.model_copy(
                    update={"answered_by": tracked.answered_by, "fell_through_requests": wake.fell_through}
                )
            tracked = tracked.model_copy(update={"zeroed_at": None, "last_wake": record})
            self.telemetry.wakes.labels("request" if by_request else "policy").inc()
            pending.event("Waking", f"{cause}: cluster 0 -> {replicas} replica(s) after {seconds:.0f}s at zero")
        last = tracked.last_wake
        if wake is not None and wake.answered and wake.mean_hold_seconds is not None and last is not None:
            if tracked.zeroed_at is None and last.held_requests is None:
                latency_ms = round(wake.mean_hold_seconds * 1000.0, 1)
                tracked = tracked.model_copy(
                    update={
                        "last_wake": last.model_copy(
                            update={"held_requests": wake.answered, "wake_latency_ms": latency_ms}
                        )
                    }
                )
                self.telemetry.wake_latency.observe(wake.mean_hold_seconds)
                pending.event(
                    "Woken",
                    f"{wake.answered} held request(s) answered by the woken replica after {latency_ms:.0f} ms on "
                    f"average (bound {tracked.hold_seconds or hold:g}s); {last.zero_seconds:.0f}s at zero",
                )
        last = tracked.last_wake
        if wake is not None and wake.fell_answered and wake.fell_mean_seconds is not None and last is not None:
            if tracked.zeroed_at is None and last.answered_by is not None and last.wake_latency_ms is None:
                # woken by requests that fell through: what they paid is their time at the router on that target
                latency_ms = round(wake.fell_mean_seconds * 1000.0, 1)
                tracked = tracked.model_copy(
                    update={"last_wake": last.model_copy(update={"wake_latency_ms": latency_ms})}
                )
                self.telemetry.wake_latency.observe(wake.fell_mean_seconds)
                pending.event(
                    "Woken",
                    f"{wake.fell_answered} request(s) answered by {last.answered_by} while the cluster woke, after "
                    f"{latency_ms:.0f} ms on average at the router; {last.zero_seconds:.0f}s at zero",
                )
        if before is None and tracked == ScaleToZeroStatus():
            return status
        return status.model_copy(update={"scale_to_zero": tracked})

    def _decide(
        self,
        spec: InferenceWorkloadSpec,
        status: InferenceWorkloadStatus,
        inputs: TickInputs,
        result: ReconcileResult,
        actuators: Actuators,
    ) -> tuple[Decision, BudgetStatus]:
        """The policy's decision on this tick's inputs, and the month-to-date spend it was made with."""
        now = inputs.now
        last_finished = parse_time(status.last_migration.finished_at) if status.last_migration is not None else None
        accrued = accrue_spend(status.budget, status.current_monthly_cost_usd, now)
        state = PlacementState(
            current=status.placement,
            last_migration_finished_at=last_finished,
            month_to_date_usd=accrued.month_to_date_usd,
            accelerator=status.last_decision.accelerator if status.last_decision is not None else None,
            on_spot=_on_spot(status.last_decision),
            moving_to=status.migration.target if status.migration is not None else None,
            spilling=status.spill is not None and not status.spill.ending,
        )
        # A workload already on the cluster holds its capacity: free capacity only gates new placements there, and
        # a change of accelerator (``policy/accelerators.py`` skips the capacity check of the one it holds).
        on_cluster = _on_cluster(status) and not spec.accelerator.alternatives
        capacity = ClusterCapacity() if on_cluster else inputs.capacity
        decision = decide(
            spec,
            inputs.window,
            state,
            inputs.price_book,
            capacity,
            now,
            max_staleness_seconds=self.max_metrics_staleness_seconds,
            actuators=actuators,
        )
        if last_finished is not None and decision.preferred is not None:
            # a move held back may start once the cooldown ends: come back then, though nothing else changes. Only
            # then: every workload of a fleet placed at once would otherwise come back at the same tick (bench-scale
            # at 10,000: 1,900 reconciles in one tick that decided nothing new)
            cooldown_end = last_finished + timedelta(seconds=spec.placement.cooldown_seconds)
            if cooldown_end > (now if now.tzinfo is not None else now.replace(tzinfo=UTC)):
                result.revisit_at = cooldown_end
        return decision, accrued

    def _mark_decision(
        self,
        conditions: _Conditions,
        spec: InferenceWorkloadSpec,
        decision: Decision,
        status: InferenceWorkloadStatus,
        inputs: TickInputs,
    ) -> None:
        """MetricsAvailable, BudgetExceeded, SLOAtRisk, CapacityAvailable and PriceBookValid from the decision and
        its inputs (PriceBookValid only once a book was rejected: it says which book the costs come from)."""
        if inputs.price_book_problem is not None:
            conditions.mark(
                ConditionType.PRICE_BOOK_VALID,
                ConditionStatus.FALSE,
                Reason.PRICE_BOOK_REJECTED,
                inputs.price_book_problem,
            )
        elif any(c.type is ConditionType.PRICE_BOOK_VALID for c in conditions.items):
            conditions.mark(
                ConditionType.PRICE_BOOK_VALID, ConditionStatus.TRUE, Reason.PRICE_BOOK_LOADED, "price book in force"
            )
        if decision.metrics_ok:
            conditions.mark(
                ConditionType.METRICS_AVAILABLE, ConditionStatus.TRUE, Reason.METRICS_FRESH, _window_text(inputs.window)
            )
        else:
            problem = inputs.metrics_problem or _staleness_text(inputs.window, inputs.now)
            reason = Reason.METRICS_STALE if inputs.window is not None else Reason.METRICS_MISSING
            message = f"{problem}; placement frozen"
            conditions.mark(ConditionType.METRICS_AVAILABLE, ConditionStatus.FALSE, reason, message)
        for type_, verdict in (
            (ConditionType.BUDGET_EXCEEDED, budget_verdict(spec, decision)),
            (ConditionType.SLO_AT_RISK, slo_verdict(spec, inputs.window, decision)),
        ):
            state = ConditionStatus.TRUE if verdict.true else ConditionStatus.FALSE
            conditions.mark(type_, state, verdict.reason, verdict.message)
        if TargetName.CLUSTER not in spec.placement.allowed_targets:
            return
        if _holds_cluster_capacity(status):
            conditions.mark(
                ConditionType.CAPACITY_AVAILABLE,
                ConditionStatus.TRUE,
                Reason.CAPACITY_FREE,
                "the workload holds its in-cluster capacity",
            )
        elif inputs.capacity_verdict is not None:
            ok, numbers = inputs.capacity_verdict
            conditions.mark(
                ConditionType.CAPACITY_AVAILABLE,
                ConditionStatus.TRUE if ok else ConditionStatus.FALSE,
                Reason.CAPACITY_FREE if ok else Reason.CAPACITY_EXHAUSTED,
                numbers,
            )

    async def _finish(
        self,
        meta: ObjectMeta,
        current_wire: dict[str, Any],
        status: InferenceWorkloadStatus,
        conditions: _Conditions,
        result: ReconcileResult,
        *,
        changes: dict[str, Any],
    ) -> ReconcileResult:
        new_status = status.model_copy(
            update={**changes, "conditions": conditions.items, "observed_generation": meta.generation}
        )
        placed = new_status.placement
        self.telemetry.export_state(
            meta.namespace,
            meta.name,
            placed.value if placed is not None else None,
            new_status.current_monthly_cost_usd,
            new_status.conditions,
        )
        result.body = await self._write(meta, current_wire, new_status, conditions.pending)
        result.wrote_status = result.body is not None
        result.events = [e[0] for e in conditions.pending.events]
        result.failures = list(conditions.pending.failures)
        result.erroring = _erroring(new_status)
        return result

    def _plan_pings(
        self,
        meta: ObjectMeta,
        spec: InferenceWorkloadSpec,
        decision: Decision,
        status: InferenceWorkloadStatus,
        inputs: TickInputs,
        actuators: Actuators,
    ) -> None:
        if self.pinger is None:
            return
        key = WorkloadKey(meta.namespace, meta.name)
        placed = status.placement
        if inputs.router_enabled and placed is not None and dict(inputs.router_weights or {}) != {placed: 100}:
            return  # pings go through the router: wait until it serves the placement
        # the decision in force: this one, or the recorded one while decisions are withheld (metrics missing)
        settings = (
            target_settings(placed, decision, spec, status.last_decision, actuators) if placed is not None else None
        )
        warm = settings.keep_warm_pings if settings is not None else 0
        interval = settings.ping_interval_seconds if settings is not None else None
        if status.migration is None and placed in SERVERLESS and warm > 0 and interval:
            self.pinger.plan(key, PingPlan(warm, interval, spec.model.health_path))
        else:
            self.pinger.plan(key, None)

    def _endpoint(self, meta: ObjectMeta, serving: TargetResourceStatus | None) -> str | None:
        if self.stable_endpoint is not None:
            return self.stable_endpoint(meta.namespace, meta.name)
        return serving.endpoint if serving is not None else None

    # ------------------------------------------------------------------ placement and migration

    async def _drive_placement(
        self,
        workload: InferenceWorkload,
        spec: InferenceWorkloadSpec,
        decision: Decision,
        status: InferenceWorkloadStatus,
        inputs: TickInputs,
        pending: _Pending,
        actuators: Actuators,
    ) -> InferenceWorkloadStatus:
        """Start a migration the decision asks for, or carry the one in flight one step; keep the targets set."""
        status = _with_started_migration(status, decision, inputs.now)
        migration = status.migration
        key = WorkloadKey(workload.metadata.namespace, workload.metadata.name)
        if migration is None:
            self._traffic_marks.pop(key, None)
            if status.placement is not None:
                status = await self._ensure(
                    workload, status.placement, decision, status, pending, actuators, inputs.price_book
                )
            return status
        if migration.target in SERVERLESS or migration.source in SERVERLESS:
            await self._ensure_finalizer(workload.metadata)
        if not _router_serves(migration, status, inputs):
            # The router does not serve this step's weights yet: keep both sides up, move nothing, retire nothing.
            for name in (migration.source, migration.target):
                if name is not None and not (migration.step is MigrationStep.ROLLING_BACK and name is migration.target):
                    status = await self._ensure(workload, name, decision, status, pending, actuators, inputs.price_book)
            return status
        problem = self._traffic_problem(key, spec, migration, inputs)
        if problem is not None and migration.step is MigrationStep.RETIRING:
            # the source is not retired while the target fails its traffic: no retire on this tick
            observation = MigrationObservation(target_ready=True, traffic_problem=problem)
        else:
            status, observation = await self._migration_actions(
                workload, migration, decision, status, pending, actuators, inputs.price_book
            )
            observation = replace(observation, traffic_problem=problem)
        return self._advance(status, migration, observation, inputs.now, pending)

    def _traffic_problem(
        self, key: WorkloadKey, spec: InferenceWorkloadSpec, migration: MigrationStatus, inputs: TickInputs
    ) -> str | None:
        """What the router counted of the target's traffic since its share last changed, judged by the policy
        (``policy.traffic_health``); None when it serves, when too few requests reached it, or without counters."""
        if migration.step not in _TRAFFIC_STEPS or inputs.router_traffic is None:
            return None
        current = inputs.router_traffic.get(migration.target)
        if current is None:
            return None
        mark = (migration.started_at, migration.target, migration.traffic_percent)
        seen = self._traffic_marks.get(key)
        window = current.since(seen[1]) if seen is not None and seen[0] == mark else None
        if window is None:  # a new step (or a router replica restarted): its window starts now
            self._traffic_marks[key] = (mark, current)
            return None
        step = f"{migration.step.value.lower()} at {migration.traffic_percent}%"
        return traffic_problem(
            migration.target, window, spec.slo.objective_seconds, self.timings.traffic_gate, step=step
        )

    async def _drive_spill(
        self,
        workload: InferenceWorkload,
        decision: Decision,
        status: InferenceWorkloadStatus,
        inputs: TickInputs,
        pending: _Pending,
        actuators: Actuators,
    ) -> InferenceWorkloadStatus:
        """Start, keep, change or end burst spillover (``controller/spill.py``), one observed step at a time."""
        spill = status.spill
        serving_cluster = status.placement is TargetName.CLUSTER and status.migration is None
        if decision.target is None and spill is not None and spill.step not in _SPILL_ENDING:
            return status  # decisions withheld (metrics missing): the spill stays as it stands
        plan = decision.spill if serving_cluster and decision.target is TargetName.CLUSTER else None
        if spill is None and plan is None:
            return status
        overflow = plan.target if plan is not None and spill is None else spill.target if spill else None
        if overflow is not None and overflow is not status.placement:
            status = await self._ensure(workload, overflow, decision, status, pending, actuators, inputs.price_book)
        entry = _target_status(status.targets or TargetsStatus(), overflow) if overflow is not None else None
        cluster = _target_status(status.targets or TargetsStatus(), TargetName.CLUSTER)
        seen = SpillObservation(
            target_ready=entry is not None and entry.ready,
            router_spills=overflow is not None and inputs.router_spill is overflow,
            replicas_uncapped=cluster is not None and cluster.ready,
        )
        message = plan.describe(MONTH_SECONDS) if plan is not None else ""
        moved = advance_spill(spill, plan, message, seen, inputs.now, self.timings.drain_seconds)
        if moved.event_reason is not None and moved.event_message is not None:
            pending.event(moved.event_reason, moved.event_message)
        status = status.model_copy(update={"spill": moved.spill})
        if moved.retire is not None and moved.retire is not status.placement:
            if await self._retire(workload, moved.retire, status, pending):
                status = _drop_target(status, moved.retire)
            else:
                status = status.model_copy(update={"spill": spill})  # retire again next tick
        return status

    async def _migration_actions(
        self,
        workload: InferenceWorkload,
        migration: MigrationStatus,
        decision: Decision,
        status: InferenceWorkloadStatus,
        pending: _Pending,
        actuators: Actuators,
        price_book: PriceBook,
    ) -> tuple[InferenceWorkloadStatus, MigrationObservation]:
        """The I/O the migration's current step needs, and what it observed."""
        actions = actions_for(migration)
        if MigrationAction.ENSURE_TARGET in actions:
            if migration.source is not None:
                status = await self._ensure(
                    workload, migration.source, decision, status, pending, actuators, price_book
                )
            status = await self._ensure(workload, migration.target, decision, status, pending, actuators, price_book)
            entry = _target_status(status.targets or TargetsStatus(), migration.target)
            error = entry.message if entry is not None and not entry.ready and _is_permanent(entry) else None
            ready = entry is not None and entry.ready
            if migration.step is MigrationStep.SHIFTING and entry is not None and (entry.replicas or 0) > 0:
                # taking traffic, a target with ready replicas serves: a replica count changed by this tick's
                # decision (a new Deployment generation the controller has not observed yet) is no failed health
                # check, and rolling back on it would move the traffic for nothing
                ready = True
            return status, MigrationObservation(target_ready=ready, target_error=error)
        if MigrationAction.RETIRE_SOURCE in actions:
            status = await self._ensure(workload, migration.target, decision, status, pending, actuators, price_book)
            gone = await self._retire(workload, migration.source, status, pending) if migration.source else True
            status = _drop_target(status, migration.source) if gone and migration.source else status
            return status, MigrationObservation(target_ready=True, retired=gone)
        if MigrationAction.RETIRE_TARGET in actions:
            gone = await self._retire(workload, migration.target, status, pending)
            status = _drop_target(status, migration.target) if gone else status
            return status, MigrationObservation(retired=gone)
        return status, MigrationObservation()

    def _advance(
        self,
        status: InferenceWorkloadStatus,
        migration: MigrationStatus,
        observation: MigrationObservation,
        now: datetime,
        pending: _Pending,
    ) -> InferenceWorkloadStatus:
        """The migration's next step from what its current step observed; its Event and metrics."""
        transition = advance(migration, observation, now, self.timings)
        if transition.event_reason is not None and transition.event_message is not None:
            pending.event(transition.event_reason, transition.event_message, warning=transition.warning)
        route = (_n(migration.source), migration.target.value)
        rolling_back = transition.migration is not None and transition.migration.step is MigrationStep.ROLLING_BACK
        if rolling_back and migration.step is not MigrationStep.ROLLING_BACK:
            self.telemetry.migration_rollbacks.labels(*route, migration.step.value).inc()
        if transition.finished is not None:
            outcome = transition.finished.outcome.value
            self.telemetry.migrations.labels(*route, outcome).inc()
            started, ended = parse_stamp(migration.started_at), parse_stamp(transition.finished.finished_at)
            if started is not None:
                seconds = ((ended or _aware(now)) - started).total_seconds()
                self.telemetry.migration_duration.labels(*route, outcome).observe(max(0.0, seconds))
        update: dict[str, Any] = {"migration": transition.migration, "placement": transition.placement}
        if transition.finished is not None:
            update["last_migration"] = transition.finished
        return status.model_copy(update=update)

    async def _ensure(
        self,
        workload: InferenceWorkload,
        target_name: TargetName,
        decision: Decision,
        status: InferenceWorkloadStatus,
        pending: _Pending,
        actuators: Actuators,
        price_book: PriceBook,
    ) -> InferenceWorkloadStatus:
        target = self.targets.get(target_name)
        if target is None:
            return _set_target(status, target_name, None, f"{target_name.value} is not configured in this operator")
        if target_name in SERVERLESS:
            await self._ensure_finalizer(workload.metadata)
        migration = status.migration
        settings = target_settings(
            target_name,
            decision,
            workload.spec,
            status.last_decision,
            actuators,
            # a migration's source serves its share until it is retired: never at zero either
            provisioning=migration is not None and target_name in (migration.target, migration.source),
            serving_replicas=_serving_replicas(status, decision, target_name),
        )
        desired = DesiredTarget(
            replicas=settings.replicas,
            max_replicas=settings.max_replicas,
            max_in_flight=_queue_cap(status, target_name),
            accelerator=settings.accelerator,
            spot=settings.spot,
            # what the price book prices is what is deployed (with or without Cloud Run GPU zonal redundancy)
            gpu_zonal_redundancy=price_book.platforms.cloudrun.gpu_zonal_redundancy,
        )
        self._fence()
        try:
            state = await target.ensure(workload, desired)
        except Exception as exc:  # every failure becomes status (as_target_error), never an escape
            return self._target_failed(status, target_name, _logged_target_error(exc), pending)
        at_zero = settings.replicas == 0 and state.replicas_managed_by is None  # an autoscaler's replicas: not zero
        if target_name is TargetName.CLUSTER and at_zero and not state.ready:
            # at zero on purpose: the router answers (holds, or falls through to serverless) until a replica is up
            state = TargetState(
                state.name, state.endpoint, True, 0, f"{state.message}: scaled to zero, the router answers requests"
            )
        return _set_target(status, target_name, state, None)

    async def _retire(
        self,
        workload: InferenceWorkload,
        target_name: TargetName,
        status: InferenceWorkloadStatus,
        pending: _Pending,
    ) -> bool:
        target = self.targets.get(target_name)
        if target is None:
            return True
        self._fence()
        try:
            return await target.retire(workload)
        except Exception as exc:
            self._target_failed(status, target_name, _logged_target_error(exc), pending)
            return False

    def _target_failed(
        self, status: InferenceWorkloadStatus, target_name: TargetName, err: TargetError, pending: _Pending
    ) -> InferenceWorkloadStatus:
        kind = (
            TargetErrorKind.NOT_OWNED
            if isinstance(err, NotOwnedError)
            else TargetErrorKind.PERMANENT
            if isinstance(err, PermanentTargetError)
            else TargetErrorKind.RETRYABLE
        )
        message = f"{target_name.value}: {err.message}"
        pending.failures.append(err)
        self.telemetry.target_errors.labels(target_name.value, kind.value).inc()
        previous = _target_status(status.targets or TargetsStatus(), target_name)
        if previous is None or previous.message != message:
            pending.event("TargetError", message, warning=True)
        log.warning("target error on %s: %s", target_name.value, message)
        if isinstance(err, RetryableTargetError) and previous is not None and previous.name:
            kept = TargetState(
                previous.name,
                previous.endpoint,
                previous.ready,
                previous.replicas,
                message,
                replicas_managed_by=previous.replicas_managed_by,
            )
            return _set_target(status, target_name, kept, None, kind)
        return _set_target(status, target_name, None, message, kind)

    def _fence(self) -> None:
        if self.fence is not None:
            self.fence()

    def _export_costs(self, meta: ObjectMeta, spec: InferenceWorkloadSpec, decision: Decision) -> None:
        for name in TargetName:
            cost = decision.projected_monthly_cost_usd.get(name)
            if cost is None:
                try:
                    self.telemetry.projected_cost.remove(meta.namespace, meta.name, name.value)
                except KeyError:
                    pass
            else:
                self.telemetry.projected_cost.labels(meta.namespace, meta.name, name.value).set(cost)
        if spec.budget.monthly_usd:
            burn = decision.projected_month_usd / spec.budget.monthly_usd
            self.telemetry.budget_burn.labels(meta.namespace, meta.name).set(burn)

    # ------------------------------------------------------------------ finalizer and deletion

    async def _ensure_finalizer(self, meta: ObjectMeta) -> None:
        if self.cloud_finalizer in meta.finalizers:
            return
        finalizers = [*meta.finalizers, self.cloud_finalizer]
        result = await self.writer.set_finalizers(meta.namespace, meta.name, finalizers, meta.resource_version)
        meta.finalizers = finalizers
        meta.resource_version = str(result.get("metadata", {}).get("resourceVersion", meta.resource_version))

    async def _finalize(
        self, raw: Mapping[str, Any], meta: ObjectMeta, status: InferenceWorkloadStatus, failures: list[TargetError]
    ) -> bool:
        """Retire the cloud resources, then drop the finalizer; True when done (False: call again, backed off)."""
        if self.cloud_finalizer not in meta.finalizers:
            return True
        spec, _ = parse_spec(raw.get("spec"))
        if spec is None:
            # The stored spec no longer parses; retiring needs only names, which come from metadata.
            spec = InferenceWorkloadSpec.model_construct(model=ModelSpec.model_construct(image="", size_mb=1))
        else:
            spec = identity_for_retire(spec, self.tenancy.view)  # the admin's project/role where the spec names one
        workload = InferenceWorkload.model_construct(metadata=meta, spec=spec, status=status)
        all_gone = True
        for name in SERVERLESS:
            target = self.targets.get(name)
            if target is None:
                continue
            self._fence()
            try:
                gone = await target.retire(workload)
            except Exception as exc:
                err = _logged_target_error(exc)
                failures.append(err)
                log.warning("cannot retire %s of %s/%s yet: %s", name.value, meta.namespace, meta.name, err.message)
                gone = False
            all_gone = all_gone and gone
        if not all_gone:
            return False
        finalizers = [f for f in meta.finalizers if f != self.cloud_finalizer]
        try:
            await self.writer.set_finalizers(meta.namespace, meta.name, finalizers, meta.resource_version)
        except ApiException as err:
            if err.status not in (404, 409):
                raise
        return True

    # ------------------------------------------------------------------ status write

    async def _write(
        self,
        meta: ObjectMeta,
        current_wire: dict[str, Any],
        new_status: InferenceWorkloadStatus,
        pending: _Pending,
    ) -> dict[str, Any] | None:
        """Write status if it changed semantically; post the pending Events. Returns the written object."""
        new_status = new_status.model_copy(update={"phase": derive_phase(new_status.conditions)})
        new_wire = new_status.to_wire()
        written: dict[str, Any] | None = None
        if not semantically_equal(current_wire, new_wire):
            patch = merge_patch(current_wire, new_wire)
            # A write that moves a migration, the placement, the owned resources or a spill is conditional on the
            # version this reconcile read: a replica acting on a stale copy is refused (409) instead of undoing a
            # newer step. The rest (observations, costs, conditions) is recomputed every pass: last writer wins.
            guarded = meta.resource_version if not GUARDED_STATUS_KEYS.isdisjoint(patch) else None
            written = await self.writer.patch_status(meta.namespace, meta.name, patch, resource_version=guarded)
        for reason, message, warning in pending.events:
            await self.writer.post_event(
                namespace=meta.namespace, name=meta.name, uid=meta.uid, reason=reason, message=message, warning=warning
            )
        return written


# ---------------------------------------------------------------------- helpers (pure)


def _serving_replicas(status: InferenceWorkloadStatus, decision: Decision, target: TargetName) -> int | None:
    """The ready replicas of ``target`` while it carries the traffic (the placement, no migration) and the decision
    is about another target whose migration has not started yet (``target_settings(serving_replicas=)``); and a
    migration's source: the replicas it served with when the migration started, until it is retired (it carries
    its share, and all the traffic again if the migration rolls back)."""
    migration = status.migration
    if migration is not None and migration.source is target and migration.source_replicas is not None:
        return migration.source_replicas if decision.target is not target else None
    if status.placement is not target or status.migration is not None or decision.target in (None, target):
        return None
    resource = _target_status(status.targets, target) if status.targets is not None else None
    return resource.replicas if resource is not None else None


def _kept_at_zero(decision: Decision, status: InferenceWorkloadStatus, inputs: TickInputs) -> Decision:
    """A workload at zero is not woken by a decision on a history still being read back after a restart (its idle-gap
    plan then sees a few cycles and keeps a replica warm): the recorded decision stays in force (``target=None``,
    as when decisions are withheld) until the history is whole or a request is held."""
    zero = status.scale_to_zero
    if (
        not inputs.history_loading
        or zero is None
        or zero.zeroed_at is None
        or _request_waits(status, inputs.wake)
        or decision.target is not TargetName.CLUSTER
        or decision.replicas == 0
    ):
        return decision
    return replace(decision, target=None, reason=f"{decision.reason}; held at zero while the history loads")


def _wants_zero(status: InferenceWorkloadStatus, decision: Decision) -> bool:
    """The decision takes the serving cluster (no migration, no spill) to zero replicas."""
    return (
        status.placement is TargetName.CLUSTER
        and status.migration is None
        and status.spill is None
        and decision.target is TargetName.CLUSTER
        and decision.replicas == 0
    )


def _zero_answer(
    spec: InferenceWorkloadSpec,
    decision: Decision,
    status: InferenceWorkloadStatus,
    price_book: PriceBook,
    actuators: Actuators,
) -> ZeroAnswer:
    """``policy.actuation.zero_answer`` on what this reconcile knows: the price book's cold starts, the targets
    status records ready, and what the decision found infeasible."""
    colds = {target: econ.cold_start_seconds for target, econ in workload_economics(spec, price_book).items()}
    targets = status.targets or TargetsStatus()
    ready = {t for t in SERVERLESS if (entry := _target_status(targets, t)) is not None and entry.ready}
    return zero_answer(spec, colds, ready, decision.infeasible, actuators=actuators)


_WAKE_SOURCE = "router: the activator's mean hold of the requests that woke the cluster from zero replicas"


def _wake_cold_start(before: InferenceWorkloadStatus, after: InferenceWorkloadStatus) -> float | None:
    """A cluster cold start measured on this reconcile, seconds: the router's activator held the requests that
    found no pod after a scale-from-zero until the woken replica was ready; their mean hold (``lastWake``'s
    latency, filled in once they were answered) is what a request arriving at zero pays. None when no wake was
    answered now, or the requests were answered by a serverless target (their latency is that target's)."""
    old = before.scale_to_zero.last_wake if before.scale_to_zero is not None else None
    new = after.scale_to_zero.last_wake if after.scale_to_zero is not None else None
    if new is None or new.wake_latency_ms is None or new.answered_by is not None or not new.held_requests:
        return None
    if old is not None and old.woken_at == new.woken_at and old.wake_latency_ms is not None:
        return None  # recorded on an earlier reconcile
    return new.wake_latency_ms / 1000.0


_PROVISION_SOURCE = "operator: migration start until the target passed its own health check"


def _provision_time(
    before: InferenceWorkloadStatus, after: InferenceWorkloadStatus, now: datetime
) -> tuple[TargetName, float] | None:
    """A migration lead measured on this reconcile: the target of the migration in flight passed its own health
    check now (``targets/`` read its readiness: Deployment ready replicas, Cloud Run's Ready condition, Lambda
    State and LastUpdateStatus), the seconds since the migration started (it deployed the target). None when no
    target became ready now. Resolution: the reconcile interval while migrating (``ACTIVE_RECONCILE_SECONDS``)."""
    moving = before.migration
    if moving is None or moving.step not in (MigrationStep.PROVISIONING, MigrationStep.AWAITING_HEALTHY):
        return None
    now_moving = after.migration
    shifted = (
        now_moving is not None
        and now_moving.started_at == moving.started_at
        and now_moving.target is moving.target
        and now_moving.step is MigrationStep.SHIFTING
    )
    placed = (
        now_moving is None
        and moving.source is None
        and after.last_migration is not None
        and after.last_migration != before.last_migration
        and after.last_migration.outcome is MigrationOutcome.SUCCEEDED
        and after.last_migration.target is moving.target
    )
    started = parse_stamp(moving.started_at)
    if not (shifted or placed) or started is None:
        return None
    return moving.target, (_aware(now) - started).total_seconds()


_FIRST_REQUEST_SOURCE = (
    "router: the first request after an idle gap longer than the platform keeps an idle instance, less the "
    "target's warm latency"
)


def _track_cold_start(
    spec: InferenceWorkloadSpec,
    price_book: PriceBook,
    before: InferenceWorkloadStatus,
    after: InferenceWorkloadStatus,
    now: datetime,
    stamp: str,
    pending: _Pending,
    first_requests: Mapping[TargetName, FirstRequestSample] | None = None,
) -> InferenceWorkloadStatus:
    """``status.coldStart``: a cold start or a migration lead measured on this reconcile recorded (the cluster's
    from the activator's hold after a scale-from-zero, a serverless target's from the router's first request after
    an idle gap: ``first_requests``), and every measured target's assumed (the price book's), measured and
    estimated figures recomputed with the book in force."""
    sample = _wake_cold_start(before, after)
    samples = {TargetName.CLUSTER: sample} if sample is not None else None
    lead = _provision_time(before, after, now)
    cold = cold_start_status(
        spec,
        price_book,
        after.cold_start,
        samples,
        source=_WAKE_SOURCE,
        stamp=stamp,
        provision_samples=dict([lead]) if lead is not None else None,
        provision_source=_PROVISION_SOURCE,
    )
    serverless = {t: s for t, s in (first_requests or {}).items() if t in SERVERLESS}
    if serverless:
        cold = cold_start_status(
            spec,
            price_book,
            cold,
            {t: s.cold_start_seconds for t, s in serverless.items()},
            source=_FIRST_REQUEST_SOURCE,
            stamp=stamp,
        )
    if lead is not None and cold is not None:
        target, seconds = lead
        entry = _cold_entry(cold, target)
        measured = entry.provision if entry is not None else None
        refused = screen((seconds,))[1]
        if refused:
            pending.event("ProvisionTimeRefused", f"{target.value} lead {seconds:.1f}s not used: {refused[0]}")
        elif measured is not None:
            pending.event(
                "ProvisionTimeMeasured",
                f"{target.value} ready {seconds:.1f}s after the migration started; assumed "
                f"{measured.assumed_seconds}s (price book), measured median {measured.measured_seconds}s of "
                f"{measured.samples} sample(s), estimate {measured.estimate_seconds}s",
            )
    measured_now: list[tuple[TargetName, float, str]] = []
    if sample is not None:
        measured_now.append((TargetName.CLUSTER, sample, "router hold after a scale-from-zero"))
    for target, first in sorted(serverless.items(), key=lambda item: item[0].value):
        how = (
            f"router: first request {first.latency_seconds:.3g}s after {first.idle_seconds:.0f}s idle, "
            f"warm {first.warm_seconds:.3g}s"
        )
        measured_now.append((target, first.cold_start_seconds, how))
    for target, seconds, how in measured_now:
        entry = _cold_entry(cold, target) if cold is not None else None
        if entry is None:
            continue
        refused = screen((seconds,))[1]
        if refused:
            pending.event("ColdStartRefused", f"{target.value} cold start sample {seconds!r}s not used: {refused[0]}")
        else:
            pending.event(
                "ColdStartMeasured",
                f"{target.value} cold start {seconds:.3g}s measured ({how}); the policy now uses "
                f"{entry.estimate_seconds}s: assumed {entry.assumed_seconds}s blended with the median "
                f"{entry.measured_seconds}s of {entry.samples} sample(s)",
            )
    if cold == after.cold_start:
        return after
    return after.model_copy(update={"cold_start": cold})


def _cold_entry(status: ColdStartStatus, target: TargetName) -> ColdStartTargetStatus | None:
    if target is TargetName.CLUSTER:
        return status.cluster
    return status.cloudrun if target is TargetName.CLOUDRUN else status.lambda_


def _request_waits(status: InferenceWorkloadStatus, wake: WakeSignal | None) -> bool:
    """A request wants the cluster woken now: the router's activator holds some (or got some since its last poll),
    or, at zero with a serverless target answering in the cluster's place (``scaleToZero.answeredBy``), requests
    fell through to it (the router's own counters of that target; see ``controller/wake.py``)."""
    if wake is None:
        return False
    if wake.demand:
        return True
    zero = status.scale_to_zero
    return (
        wake.fell_through > 0
        and zero is not None
        and zero.zeroed_at is not None
        and zero.answered_by in {t.value for t in SERVERLESS}
    )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _logged_target_error(exc: BaseException) -> TargetError:
    """``exc`` in the target error tree; one that was not (a client's own exception) is logged with its traceback at
    DEBUG, its type in the status message."""
    if not isinstance(exc, TargetError):
        log.debug("target raised %s", type(exc).__name__, exc_info=exc)
    return as_target_error(exc)


def _spec_refusal(
    spec: InferenceWorkloadSpec | None, problems: list[SpecProblem], targets: Mapping[TargetName, Target]
) -> str | None:
    """Why the spec cannot be acted on (its problems, or no allowed target configured here); None = it can."""
    if spec is None or problems:
        return "; ".join(str(p) for p in problems)
    if not any(t in targets for t in spec.placement.allowed_targets):
        names = ", ".join(t.value for t in spec.placement.allowed_targets)
        return f"spec.placement.allowedTargets: none of [{names}] is configured in this operator"
    return None


def _placed_on(status: InferenceWorkloadStatus) -> set[TargetName]:
    """The targets this workload has resources on now (a spend cap never moves it off one of them)."""
    placed = {status.placement} if status.placement is not None else set()
    if status.migration is not None:
        placed |= {status.migration.target} | ({status.migration.source} if status.migration.source else set())
    if status.spill is not None:
        placed.add(status.spill.target)
    return {p for p in placed if p is not None}


def _with_configured_targets(
    spec: InferenceWorkloadSpec, targets: Mapping[TargetName, Target]
) -> InferenceWorkloadSpec:
    configured = [t for t in spec.placement.allowed_targets if t in targets]
    return spec.model_copy(update={"placement": spec.placement.model_copy(update={"allowed_targets": configured})})


_SPILL_ENDING = frozenset({SpillStep.UNCAPPING, SpillStep.DRAINING})


def _queue_cap(status: InferenceWorkloadStatus, target: TargetName) -> int | None:
    """The cluster replicas' queue cap: only while the router retries what they refuse (``SPILLING``)."""
    spill = status.spill
    if target is not TargetName.CLUSTER or spill is None or spill.step is not SpillStep.SPILLING:
        return None
    return spill.slots_per_replica


def _with_started_migration(
    status: InferenceWorkloadStatus, decision: Decision, now: datetime
) -> InferenceWorkloadStatus:
    """A first placement, or a move the decision allows now, starts a migration (none while one is in flight, and
    none while a spill is in force: it ends first, so no replica refuses a request the router no longer retries)."""
    if status.migration is not None or decision.target is None:
        return status
    if status.spill is not None and status.placement is not None:
        return status
    if status.placement is None:
        migration = start_migration(None, decision.target, decision.reason, now)
    elif decision.migrate and decision.target is not status.placement:
        serving = _target_status(status.targets, status.placement) if status.targets is not None else None
        replicas = serving.replicas if serving is not None and status.placement is TargetName.CLUSTER else None
        migration = start_migration(status.placement, decision.target, decision.reason, now, source_replicas=replicas)
    else:
        return status
    return status.model_copy(update={"migration": migration})


def _holds_cluster_capacity(status: InferenceWorkloadStatus) -> bool:
    """Its replicas hold in-cluster capacity: the cluster serves, a migration moves from it, or one moving to it
    has its replicas up. A move to the cluster still waiting for them (``AWAITING_HEALTHY``: a first placement
    among them) holds none yet, and whether they fit is the capacity verdict's to say: a GPU type no node has keeps
    them Pending, and ``CapacityAvailable`` must say so rather than "holds its capacity". (The decision still sees
    such a move as on the cluster, ``_on_cluster``: a replica scheduled but not ready must not turn it back.)"""
    migration = status.migration
    if status.placement is TargetName.CLUSTER or (migration is not None and migration.source is TargetName.CLUSTER):
        return True
    return (
        migration is not None
        and migration.target is TargetName.CLUSTER
        and migration.step is not MigrationStep.AWAITING_HEALTHY
    )


def _on_cluster(status: InferenceWorkloadStatus) -> bool:
    """The cluster serves, or a migration moves from or to it: the workload holds in-cluster capacity."""
    migration = status.migration
    return TargetName.CLUSTER in (
        status.placement,
        migration.source if migration else None,
        migration.target if migration else None,
    )


def _mark_placement(
    conditions: _Conditions, status: InferenceWorkloadStatus, *, min_serving: int = 1
) -> TargetResourceStatus | None:
    """Migrating and Placed from the placement after this tick's moves; returns the serving target's status.

    A cluster placement scaling up (or rolling out) is still Placed while at least ``min_serving`` replicas (its
    ``scaling.minReplicas``, at least 1) are available and its API reports no error: the target's own ``ready`` waits
    for every wanted replica, but a normal scale-up must not turn Ready False (Argo CD would show Degraded)."""
    placed = status.placement
    targets_status = status.targets or TargetsStatus()
    serving = _target_status(targets_status, placed) if placed is not None else None
    migration = status.migration
    if migration is not None and migration.source is not None:
        conditions.mark(
            ConditionType.MIGRATING,
            ConditionStatus.TRUE,
            Reason.MIGRATION_IN_PROGRESS,
            f"{_n(migration.source)} -> {migration.target.value}: {migration.step.value}, "
            f"{migration.traffic_percent}% on target",
        )
    else:
        last = status.last_migration
        rolled_back = last is not None and last.outcome.value == "RolledBack"
        conditions.mark(
            ConditionType.MIGRATING,
            ConditionStatus.FALSE,
            Reason.MIGRATION_ROLLED_BACK if rolled_back else Reason.NO_MIGRATION,
            last.message if last is not None and rolled_back else "",
        )
    if placed is not None and serving is not None and serving.ready:
        conditions.mark(ConditionType.PLACED, ConditionStatus.TRUE, Reason.TARGET_READY, f"serving on {placed.value}")
    elif (
        placed is TargetName.CLUSTER
        and serving is not None
        and serving.error is None
        and (serving.replicas or 0) >= min_serving
    ):
        detail = f": {serving.message}" if serving.message else ""
        conditions.mark(
            ConditionType.PLACED, ConditionStatus.TRUE, Reason.TARGET_READY, f"serving on {placed.value}{detail}"
        )
    elif placed is not None:
        message = serving.message if serving is not None and serving.message else f"{placed.value} not ready"
        conditions.mark(ConditionType.PLACED, ConditionStatus.FALSE, Reason.TARGET_NOT_READY, message)
    elif (error := _first_error(targets_status)) is not None:
        conditions.mark(ConditionType.PLACED, ConditionStatus.FALSE, Reason.TARGET_FAILED, error)
    else:
        if migration is None:
            waiting = "awaiting placement"
        elif migration.step is MigrationStep.SHIFTING:  # a first placement: up, routed once the router confirms
            waiting = f"{migration.target.value} is up; waiting for the router to serve it"
        else:
            waiting = f"provisioning {migration.target.value}"
        conditions.mark(ConditionType.PLACED, ConditionStatus.FALSE, Reason.TARGET_PROVISIONING, waiting)
    return serving


def _parse_status(wire: dict[str, Any], meta: ObjectMeta) -> InferenceWorkloadStatus:
    try:
        return InferenceWorkloadStatus.model_validate(wire)
    except ValidationError as err:
        # Only this operator writes status; a status it cannot read (an older/newer operator version) is rebuilt.
        log.warning("status of %s/%s unreadable, rebuilding: %s", meta.namespace, meta.name, err.error_count())
        return InferenceWorkloadStatus()


def _n(target: TargetName | None) -> str:
    return target.value if target is not None else "nothing"


def _window_text(window: TrafficWindow | None) -> str:
    if window is None or not window.rps:
        return "metrics fresh"
    span = window.step_seconds * len(window.rps)
    # no timestamp here: it moves every tick and would rewrite every workload's status (observed.sampledAt has it)
    return f"{len(window.rps)} samples over {span:.0f}s"


def _staleness_text(window: TrafficWindow | None, now: datetime) -> str:
    if window is None:
        return "no traffic metrics for this workload"
    age = (now - window.end).total_seconds()
    return f"last sample {age:.0f}s old"


def _observed(window: TrafficWindow | None) -> ObservedTraffic | None:
    if window is None or not window.rps:
        return None
    mean = sum(window.rps) / len(window.rps)
    return ObservedTraffic(
        rps=round(mean, 4),
        observed_p99_seconds=window.observed_p99_seconds,
        slo_miss_share=None if window.slo_miss_share is None else round(window.slo_miss_share, 5),
        warm_latency_seconds=None if window.warm_latency_seconds is None else round(window.warm_latency_seconds, 4),
        window_seconds=int(window.step_seconds * len(window.rps)),
        sampled_at=now_rfc3339(window.end),
    )


def _costs(decision: Decision) -> ProjectedCosts:
    costs = decision.projected_monthly_cost_usd

    def value(name: TargetName) -> float | None:
        cost = costs.get(name)
        return round(cost, 2) if cost is not None else None

    return ProjectedCosts(
        cluster=value(TargetName.CLUSTER), cloudrun=value(TargetName.CLOUDRUN), lambda_=value(TargetName.LAMBDA)
    )


def _on_spot(last: DecisionRecord | None) -> bool | None:
    """The capacity type the last decision put the cluster's replicas on (None: not recorded)."""
    if last is None or last.capacity_type is None:
        return None
    return last.capacity_type is CapacityType.SPOT


def _record_decision(
    status: InferenceWorkloadStatus, decision: Decision, stamp: str, pending: _Pending
) -> InferenceWorkloadStatus:
    if decision.target is None:
        return status
    last = status.last_decision
    keep_warm = decision.keep_warm_instances or None
    interval = decision.ping_interval_seconds if keep_warm else None
    accelerator = decision.accelerator.option if decision.accelerator is not None else None
    capacity_type = None
    if decision.spot is not None:
        capacity_type = CapacityType.SPOT if decision.spot.spot else CapacityType.ON_DEMAND
    if decision.target is not TargetName.CLUSTER:
        accelerator = last.accelerator if last is not None else None  # the cluster's, should it be reclaimed
        capacity_type = last.capacity_type if last is not None else None
    if (
        last is not None
        and last.target is decision.target
        and last.replicas == decision.replicas
        and last.keep_warm_instances == keep_warm
        and last.accelerator == accelerator
        and last.capacity_type == capacity_type
    ):
        return status
    cost = decision.projected_monthly_cost_usd.get(decision.target)
    record = DecisionRecord(
        target=decision.target,
        replicas=decision.replicas,
        reason=decision.reason,
        decided_at=stamp,
        projected_monthly_cost_usd=round(cost, 2) if cost is not None else None,
        slo_risk=decision.slo_risk,
        keep_warm_instances=keep_warm,
        ping_interval_seconds=round(interval, 1) if interval else None,
        accelerator=accelerator,
        capacity_type=capacity_type,
    )
    pending.event("Decision", f"{decision.target.value} x{decision.replicas}: {decision.reason}")
    return status.model_copy(update={"last_decision": record})


_TRAFFIC_STEPS = frozenset({MigrationStep.SHIFTING, MigrationStep.DRAINING, MigrationStep.RETIRING})
"""The steps in which the target takes traffic, judged by the router's counters."""

_ROUTED_STEPS = frozenset(
    {MigrationStep.SHIFTING, MigrationStep.DRAINING, MigrationStep.RETIRING, MigrationStep.ROLLING_BACK}
)


def _router_serves(migration: MigrationStatus, status: InferenceWorkloadStatus, inputs: TickInputs) -> bool:
    """True when the next move of ``migration`` is safe for the router: it serves the weights the step needs."""
    if not inputs.router_enabled or migration.step not in _ROUTED_STEPS:
        return True
    if inputs.router_weights is None:
        return False
    expected = positive_weights(traffic_weights(status.model_copy(update={"migration": migration})))
    return dict(inputs.router_weights) == expected


def _target_status(targets: TargetsStatus, name: TargetName) -> TargetResourceStatus | None:
    entry: TargetResourceStatus | None = getattr(targets, _field(name))
    return entry


def _field(name: TargetName) -> str:
    return "lambda_" if name is TargetName.LAMBDA else name.value


def _set_target(
    status: InferenceWorkloadStatus,
    name: TargetName,
    state: TargetState | None,
    error: str | None,
    kind: TargetErrorKind | None = None,
) -> InferenceWorkloadStatus:
    targets = status.targets or TargetsStatus()
    previous = _target_status(targets, name)
    if state is not None:
        entry = TargetResourceStatus(
            name=state.name,
            endpoint=state.endpoint,
            ready=state.ready,
            replicas=state.replicas,
            message=state.message,
            replicas_managed_by=state.replicas_managed_by,
            error=kind,
        )
    else:
        entry = TargetResourceStatus(
            name=previous.name if previous is not None else None,
            endpoint=previous.endpoint if previous is not None else None,
            ready=False,
            replicas=previous.replicas if previous is not None else None,
            message=error,
            replicas_managed_by=previous.replicas_managed_by if previous is not None else None,
            error=kind,
        )
    return status.model_copy(update={"targets": targets.model_copy(update={_field(name): entry})})


def _drop_target(status: InferenceWorkloadStatus, name: TargetName) -> InferenceWorkloadStatus:
    targets = status.targets or TargetsStatus()
    return status.model_copy(update={"targets": targets.model_copy(update={_field(name): None})})


def _is_permanent(entry: TargetResourceStatus) -> bool:
    return entry.error in (TargetErrorKind.PERMANENT, TargetErrorKind.NOT_OWNED)


def _first_error(targets: TargetsStatus) -> str | None:
    for name in TargetName:
        entry = _target_status(targets, name)
        if entry is not None and entry.error is not None and entry.message:
            return entry.message
    return None


def _erroring(status: InferenceWorkloadStatus) -> bool:
    """A target error is still recorded, or the first placement was rolled back (nothing serves yet): what a retry
    of this workload would meet again, so its failure backoff keeps counting."""
    last = status.last_migration
    unplaced_after_rollback = status.placement is None and last is not None and last.outcome.value == "RolledBack"
    return unplaced_after_rollback or _first_error(status.targets or TargetsStatus()) is not None


def _placed_ready(status: InferenceWorkloadStatus) -> bool:
    if status.placement is None:
        return False
    entry = _target_status(status.targets or TargetsStatus(), status.placement)
    return entry is not None and entry.ready
