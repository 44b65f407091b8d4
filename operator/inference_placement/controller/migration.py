"""The migration state machine, as a pure function of (status, observation, clock).

    Provisioning -> AwaitingHealthy -> Shifting (10% -> 50% -> 100%, each held) -> Draining -> Retiring -> done
                         any failure or timeout -> RollingBack (traffic back to the source, target retired)

The router's own counters of the target's traffic gate every step that sends it traffic (``policy.traffic_health``,
fed as ``MigrationObservation.traffic_problem``): a target failing its requests or its latency objective while
shifting or draining rolls back (the source still serves), and while retiring holds the retire (the source is
kept until the target serves again).

Everything it needs lives in ``status.migration``, so an operator killed at any step resumes at the same step. The
reconciler performs the I/O each step needs (``actions_for``), feeds what it saw back as a ``MigrationObservation``
and writes the returned status. A first placement is a migration without a source: no traffic to shift, so once
its target is healthy it is routed all traffic (SHIFTING at 100%) and placed as soon as the router serves that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from inference_placement.api.spec import TargetName
from inference_placement.api.status import LastMigration, MigrationOutcome, MigrationStatus, MigrationStep
from inference_placement.policy.traffic_health import TrafficGate

__all__ = [
    "MigrationAction",
    "MigrationObservation",
    "MigrationTimings",
    "Transition",
    "actions_for",
    "advance",
    "parse_time",
    "start_migration",
]


@dataclass(frozen=True)
class MigrationTimings:
    shift_steps_percent: tuple[int, ...] = (10, 50, 100)
    """Traffic share on the target at each shifting step; the last must be 100."""
    step_hold_seconds: float = 10.0
    """How long each traffic step is held (and watched) before the next."""
    drain_seconds: float = 30.0
    """How long the source keeps serving in-flight requests after all traffic has moved."""
    provision_timeout_seconds: float = 900.0
    """Longest wait for the target to become healthy (model load included)."""
    retire_timeout_seconds: float = 600.0
    """Longest wait for a retirement before it is reported (it is retried, never abandoned)."""
    traffic_gate: TrafficGate = field(default_factory=TrafficGate)
    """When the target's traffic (the router's counters, per step) counts as failing."""


class MigrationAction(StrEnum):
    ENSURE_TARGET = "EnsureTarget"
    RETIRE_SOURCE = "RetireSource"
    RETIRE_TARGET = "RetireTarget"


@dataclass(frozen=True)
class MigrationObservation:
    """What the reconciler saw while performing this step's actions."""

    target_ready: bool = False
    target_error: str | None = None
    """A permanent failure of the target (permission, quota, not owned): roll back."""
    traffic_problem: str | None = None
    """The target fails its requests or its latency objective on the traffic it was given (the router's counters,
    ``policy.traffic_health``): roll back while shifting or draining, hold the retire while retiring."""
    retired: bool = False
    """The resource this step retires is gone."""


@dataclass(frozen=True)
class Transition:
    migration: MigrationStatus | None
    """The migration to store (None once it ended)."""
    placement: TargetName | None
    """Where traffic is served after this step."""
    finished: LastMigration | None = None
    event_reason: str | None = None
    event_message: str | None = None
    warning: bool = False


def parse_time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _stamp(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def start_migration(
    source: TargetName | None,
    target: TargetName,
    reason: str,
    now: datetime,
    *,
    source_replicas: int | None = None,
) -> MigrationStatus:
    """A migration from ``source`` (None: a first placement); ``source_replicas``: the cluster replicas the source
    serves with now, which it keeps until it is retired (``MigrationStatus.source_replicas``)."""
    stamp = _stamp(now)
    return MigrationStatus(
        source=source,
        target=target,
        step=MigrationStep.PROVISIONING,
        traffic_percent=0,
        started_at=stamp,
        step_started_at=stamp,
        reason=reason,
        source_replicas=source_replicas,
    )


def actions_for(migration: MigrationStatus) -> frozenset[MigrationAction]:
    if migration.step is MigrationStep.RETIRING:
        return frozenset({MigrationAction.RETIRE_SOURCE})
    if migration.step is MigrationStep.ROLLING_BACK:
        return frozenset({MigrationAction.RETIRE_TARGET})
    return frozenset({MigrationAction.ENSURE_TARGET})


def _next(migration: MigrationStatus, step: MigrationStep, now: datetime, **changes: object) -> MigrationStatus:
    return migration.model_copy(update={"step": step, "step_started_at": _stamp(now), **changes})


def _rollback(migration: MigrationStatus, why: str, now: datetime) -> Transition:
    rolled = _next(migration, MigrationStep.ROLLING_BACK, now, traffic_percent=0, last_error=why)
    return Transition(
        migration=rolled,
        placement=migration.source,
        event_reason="MigrationRollingBack",
        event_message=f"{_route(migration)}: {why}; all traffic back on {_name(migration.source)}",
        warning=True,
    )


def _ended(migration: MigrationStatus, outcome: MigrationOutcome, now: datetime, message: str) -> LastMigration:
    return LastMigration(
        source=migration.source,
        target=migration.target,
        outcome=outcome,
        started_at=migration.started_at,
        finished_at=_stamp(now),
        message=message,
    )


def _succeeded(migration: MigrationStatus, now: datetime, event_reason: str, event_message: str) -> Transition:
    """The migration ended: the target serves everything, recorded as succeeded."""
    return Transition(
        migration=None,
        placement=migration.target,
        finished=_ended(migration, MigrationOutcome.SUCCEEDED, now, migration.reason),
        event_reason=event_reason,
        event_message=event_message,
    )


def _name(target: TargetName | None) -> str:
    return target.value if target is not None else "nothing"


def _route(migration: MigrationStatus) -> str:
    return f"{_name(migration.source)} -> {migration.target.value}"


def _awaiting_healthy(
    migration: MigrationStatus, observation: MigrationObservation, now: datetime, timings: MigrationTimings
) -> Transition:
    """AWAITING_HEALTHY: roll back when the target never gets healthy; else place (first time) or start shifting."""
    if not observation.target_ready:
        started = (now - parse_time(migration.started_at)).total_seconds()
        if started > timings.provision_timeout_seconds:
            return _rollback(
                migration,
                f"target not healthy after {started:.0f}s (limit {timings.provision_timeout_seconds:.0f}s)",
                now,
            )
        return Transition(migration=migration, placement=migration.source)
    if migration.source is None:
        # First placement: nothing to shift from; the target is routed all traffic now, and the workload is placed
        # once the router serves that route (the reconciler advances SHIFTING only then), not before: a Ready
        # workload whose stable endpoint still answers 503 is what this step prevents
        return Transition(migration=_next(migration, MigrationStep.SHIFTING, now, traffic_percent=100), placement=None)
    first = timings.shift_steps_percent[0]
    return Transition(
        migration=_next(migration, MigrationStep.SHIFTING, now, traffic_percent=first),
        placement=migration.source,
        event_reason="TrafficShifted",
        event_message=f"{_route(migration)}: {first}% of traffic on {migration.target.value}",
    )


def _shifting(
    migration: MigrationStatus, observation: MigrationObservation, now: datetime, timings: MigrationTimings
) -> Transition:
    """SHIFTING: hold each traffic step, then move to the next one, then drain. A first placement is placed here:
    the router serves its route (the reconciler advances a routed step only once it does)."""
    held = (now - parse_time(migration.step_started_at)).total_seconds()
    serving = migration.source if migration.traffic_percent < 100 else migration.target
    if not observation.target_ready:
        return _rollback(migration, f"{migration.target.value} failed its health check while taking traffic", now)
    if migration.source is None:
        return _succeeded(migration, now, "Placed", f"placed on {migration.target.value}: {migration.reason}")
    if held < timings.step_hold_seconds:
        return Transition(migration=migration, placement=serving)
    later = [p for p in timings.shift_steps_percent if p > migration.traffic_percent]
    if later:
        percent = later[0]
        moved = _next(migration, MigrationStep.SHIFTING, now, traffic_percent=percent)
        return Transition(
            migration=moved,
            placement=migration.target if percent >= 100 else migration.source,
            event_reason="TrafficShifted",
            event_message=f"{_route(migration)}: {percent}% of traffic on {migration.target.value}",
        )
    return Transition(
        migration=_next(migration, MigrationStep.DRAINING, now),
        placement=migration.target,
        event_reason="Draining",
        event_message=f"{_route(migration)}: all traffic on {migration.target.value}; "
        f"draining {_name(migration.source)} for {timings.drain_seconds:.0f}s",
    )


def advance(
    migration: MigrationStatus, observation: MigrationObservation, now: datetime, timings: MigrationTimings
) -> Transition:
    """One step of the state machine. Pure: the same inputs always give the same transition."""
    held = (now - parse_time(migration.step_started_at)).total_seconds()
    step = migration.step

    if step is MigrationStep.ROLLING_BACK:
        if observation.retired:
            finished = _ended(migration, MigrationOutcome.ROLLED_BACK, now, migration.last_error or "")
            return Transition(
                migration=None,
                placement=migration.source,
                finished=finished,
                event_reason="MigrationRolledBack",
                event_message=f"{_route(migration)} rolled back: {migration.last_error or 'unknown error'}; "
                f"{migration.target.value} retired",
                warning=True,
            )
        return Transition(migration=migration, placement=migration.source)

    if step in (MigrationStep.PROVISIONING, MigrationStep.AWAITING_HEALTHY, MigrationStep.SHIFTING):
        if observation.target_error is not None:
            return _rollback(migration, observation.target_error, now)
    if observation.traffic_problem is not None and step in (MigrationStep.SHIFTING, MigrationStep.DRAINING):
        # a target that passes its health check but fails requests gets no more traffic, and the source (still
        # serving through the drain) takes it all back
        return _rollback(migration, observation.traffic_problem, now)

    if step is MigrationStep.PROVISIONING:
        # The target exists (ensure succeeded without error): wait for its own health check.
        awaiting = _next(migration, MigrationStep.AWAITING_HEALTHY, now)
        if migration.source is None:
            return Transition(migration=awaiting, placement=None)  # first placement: the Decision event says why
        return Transition(
            migration=awaiting,
            placement=migration.source,
            event_reason="MigrationStarted",
            event_message=f"{_route(migration)}: {migration.reason}",
        )

    if step is MigrationStep.AWAITING_HEALTHY:
        return _awaiting_healthy(migration, observation, now, timings)

    if step is MigrationStep.SHIFTING:
        return _shifting(migration, observation, now, timings)

    if step is MigrationStep.DRAINING:
        if held < timings.drain_seconds:
            return Transition(migration=migration, placement=migration.target)
        return Transition(
            migration=_next(migration, MigrationStep.RETIRING, now),
            placement=migration.target,
            event_reason="RetiringSource",
            event_message=f"{_route(migration)}: retiring {_name(migration.source)}",
        )

    return _retiring(migration, observation, now, timings, held)


def _retiring(
    migration: MigrationStatus, observation: MigrationObservation, now: datetime, timings: MigrationTimings, held: float
) -> Transition:
    """RETIRING: the source goes once the target serves; a failing target holds the retire."""
    if observation.traffic_problem is not None and not observation.retired:
        # the source is not retired while the target fails (a retire may be under way: no rollback onto it)
        held_already = (migration.last_error or "").startswith(f"retire of {_name(migration.source)} held")
        if held_already:
            return Transition(migration=migration, placement=migration.target)
        why = f"retire of {_name(migration.source)} held: {observation.traffic_problem}"
        return Transition(
            migration=migration.model_copy(update={"last_error": why}),
            placement=migration.target,
            event_reason="RetireHeld",
            event_message=f"{_route(migration)}: {why}",
            warning=True,
        )
    if observation.retired:
        took = (now - parse_time(migration.started_at)).total_seconds()
        return _succeeded(
            migration, now, "MigrationSucceeded", f"{_route(migration)} done in {took:.0f}s: {migration.reason}"
        )
    if held > timings.retire_timeout_seconds and migration.last_error is None:
        return Transition(
            migration=migration.model_copy(
                update={"last_error": f"source not retired after {held:.0f}s; still trying"}
            ),
            placement=migration.target,
            event_reason="RetireSlow",
            event_message=f"{_name(migration.source)} not retired after {held:.0f}s; still trying",
            warning=True,
        )
    return Transition(migration=migration, placement=migration.target)
