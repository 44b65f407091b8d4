"""The migration state machine walks every step, rolls back on any failure, and resumes from status alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from inference_placement.api.spec import TargetName
from inference_placement.api.status import (
    InferenceWorkloadStatus,
    LastMigration,
    MigrationOutcome,
    MigrationStatus,
    MigrationStep,
)
from inference_placement.controller.migration import (
    MigrationAction,
    MigrationObservation,
    MigrationTimings,
    actions_for,
    advance,
    start_migration,
)
from inference_placement.routing.model import traffic_weights

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
TIMINGS = MigrationTimings(shift_steps_percent=(10, 50, 100), step_hold_seconds=10, drain_seconds=30)
READY = MigrationObservation(target_ready=True)


def _walk(
    migration: MigrationStatus, observations: list[MigrationObservation], step_seconds: float = 11
) -> tuple[list[tuple[MigrationStep | None, int | None]], TargetName | None, LastMigration | None]:
    now = T0
    seen: list[tuple[MigrationStep | None, int | None]] = []
    current: MigrationStatus | None = migration
    placement = migration.source
    for obs in observations:
        assert current is not None
        now += timedelta(seconds=step_seconds)
        t = advance(current, obs, now, TIMINGS)
        seen.append((t.migration.step if t.migration else None, t.migration.traffic_percent if t.migration else None))
        current, placement = t.migration, t.placement
        if current is None:
            return seen, placement, t.finished
    return seen, placement, None


def test_walks_every_step_cluster_to_lambda() -> None:
    m = start_migration(TargetName.CLUSTER, TargetName.LAMBDA, "cheaper", T0)
    obs = [READY] * 6 + [MigrationObservation(target_ready=True), MigrationObservation(target_ready=True, retired=True)]
    seen, placement, finished = _walk(m, obs, step_seconds=31)
    assert seen == [
        (MigrationStep.AWAITING_HEALTHY, 0),
        (MigrationStep.SHIFTING, 10),
        (MigrationStep.SHIFTING, 50),
        (MigrationStep.SHIFTING, 100),
        (MigrationStep.DRAINING, 100),
        (MigrationStep.RETIRING, 100),
        (MigrationStep.RETIRING, 100),
        (None, None),
    ]
    assert placement is TargetName.LAMBDA
    assert finished is not None and finished.outcome is MigrationOutcome.SUCCEEDED
    # the record says how long the move took, without anyone having watched it in flight
    assert finished.started_at == m.started_at and finished.finished_at == "2026-11-22T12:04:08Z"


def test_each_traffic_step_is_held() -> None:
    m: MigrationStatus | None
    m = start_migration(TargetName.CLUSTER, TargetName.LAMBDA, "r", T0)
    m = advance(m, READY, T0, TIMINGS).migration  # -> awaiting healthy
    assert m is not None
    m = advance(m, READY, T0, TIMINGS).migration  # -> shifting 10%
    assert m is not None and m.traffic_percent == 10
    held = advance(m, READY, T0 + timedelta(seconds=5), TIMINGS)
    assert held.migration == m and held.placement is TargetName.CLUSTER


def test_first_placement_has_no_traffic_shift_and_is_placed_once_routed() -> None:
    m = start_migration(None, TargetName.CLUSTER, "initial", T0)
    t1 = advance(m, MigrationObservation(), T0, TIMINGS)
    assert t1.migration is not None and t1.migration.step is MigrationStep.AWAITING_HEALTHY and t1.placement is None
    t2 = advance(t1.migration, MigrationObservation(target_ready=False), T0 + timedelta(seconds=5), TIMINGS)
    assert t2.migration == t1.migration
    # healthy: routed all its traffic at once (no 10/50 steps, nothing to shift from), not placed yet
    t3 = advance(t1.migration, READY, T0 + timedelta(seconds=9), TIMINGS)
    assert t3.migration is not None and t3.placement is None and t3.event_reason is None
    assert t3.migration.step is MigrationStep.SHIFTING and t3.migration.traffic_percent == 100
    assert traffic_weights(InferenceWorkloadStatus(migration=t3.migration)) == {TargetName.CLUSTER: 100}
    # the reconciler advances a routed step only once the router serves it: placed then, with no hold
    t4 = advance(t3.migration, READY, T0 + timedelta(seconds=9), TIMINGS)
    assert t4.migration is None and t4.placement is TargetName.CLUSTER and t4.event_reason == "Placed"
    assert t4.finished is not None and t4.finished.outcome is MigrationOutcome.SUCCEEDED
    # a target that fails its health check before it is placed is rolled back (nothing served it yet)
    t5 = advance(t3.migration, MigrationObservation(target_ready=False), T0 + timedelta(seconds=10), TIMINGS)
    assert t5.migration is not None and t5.migration.step is MigrationStep.ROLLING_BACK and t5.placement is None


@pytest.mark.parametrize(
    ("step", "percent", "observation"),
    [
        pytest.param(
            MigrationStep.PROVISIONING,
            0,
            MigrationObservation(target_error="403 permission denied"),
            id="provision-denied",
        ),
        pytest.param(MigrationStep.AWAITING_HEALTHY, 0, MigrationObservation(target_error="quota"), id="healthy-quota"),
        pytest.param(
            MigrationStep.SHIFTING, 50, MigrationObservation(target_ready=False), id="unhealthy-under-traffic"
        ),
        pytest.param(
            MigrationStep.SHIFTING,
            10,
            MigrationObservation(target_ready=True, traffic_problem="5% errors"),
            id="errors",
        ),
    ],
)
def test_any_failure_rolls_back_to_the_source(
    step: MigrationStep, percent: int, observation: MigrationObservation
) -> None:
    m = start_migration(TargetName.CLUSTER, TargetName.CLOUDRUN, "r", T0).model_copy(
        update={"step": step, "traffic_percent": percent}
    )
    t = advance(m, observation, T0 + timedelta(seconds=20), TIMINGS)
    assert t.migration is not None and t.migration.step is MigrationStep.ROLLING_BACK
    assert t.migration.traffic_percent == 0 and t.placement is TargetName.CLUSTER and t.warning
    assert actions_for(t.migration) == {MigrationAction.RETIRE_TARGET}
    still = advance(t.migration, MigrationObservation(retired=False), T0 + timedelta(seconds=30), TIMINGS)
    assert still.migration is not None and still.placement is TargetName.CLUSTER
    done = advance(t.migration, MigrationObservation(retired=True), T0 + timedelta(seconds=40), TIMINGS)
    assert done.migration is None and done.placement is TargetName.CLUSTER
    assert done.finished is not None and done.finished.outcome is MigrationOutcome.ROLLED_BACK


def test_provisioning_timeout_rolls_back() -> None:
    m = start_migration(TargetName.LAMBDA, TargetName.CLUSTER, "r", T0).model_copy(
        update={"step": MigrationStep.AWAITING_HEALTHY}
    )
    late = T0 + timedelta(seconds=TIMINGS.provision_timeout_seconds + 1)
    t = advance(m, MigrationObservation(target_ready=False), late, TIMINGS)
    assert t.migration is not None and t.migration.step is MigrationStep.ROLLING_BACK
    assert "not healthy" in (t.migration.last_error or "")


def test_resumes_from_a_serialised_status() -> None:
    """An operator killed mid-migration rebuilds the machine from status JSON alone and continues."""
    m = start_migration(TargetName.CLUSTER, TargetName.LAMBDA, "r", T0).model_copy(
        update={"step": MigrationStep.SHIFTING, "traffic_percent": 50, "step_started_at": "2026-11-22T12:00:00Z"}
    )
    restored = MigrationStatus.model_validate(m.to_wire())
    a = advance(m, READY, T0 + timedelta(seconds=11), TIMINGS)
    b = advance(restored, READY, T0 + timedelta(seconds=11), TIMINGS)
    assert a == b and b.migration is not None and b.migration.traffic_percent == 100


def test_never_half_switched_placement_follows_traffic() -> None:
    m = start_migration(TargetName.CLUSTER, TargetName.LAMBDA, "r", T0)
    now = T0
    current: MigrationStatus | None = m
    while current is not None:
        now += timedelta(seconds=31)
        obs = MigrationObservation(target_ready=True, retired=current.step is MigrationStep.RETIRING)
        t = advance(current, obs, now, TIMINGS)
        if t.migration is not None:
            expected = TargetName.LAMBDA if t.migration.traffic_percent == 100 else TargetName.CLUSTER
            assert t.placement is expected
        current = t.migration
