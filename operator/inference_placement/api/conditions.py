"""A condition set as data, after Knative's ``apis/condition_set.go``.

``Ready`` is computed from its dependents: it is True only when every dependent is in its happy state. Marking a
condition that already has the same status, reason and message changes nothing (not even lastTransitionTime), so
a reconcile that learns nothing new writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from inference_placement.api.status import Condition, ConditionStatus, ConditionType, Phase, Reason

__all__ = ["ConditionSet", "WORKLOAD_CONDITIONS", "derive_phase"]


@dataclass(frozen=True)
class ConditionSet:
    """``Ready`` plus the dependents it summarises, each with the status that counts as healthy."""

    happy: ConditionType
    dependents: Mapping[ConditionType, ConditionStatus]

    def mark(
        self,
        conditions: Iterable[Condition],
        type_: ConditionType,
        status: ConditionStatus,
        reason: Reason,
        message: str,
        *,
        now: str,
        generation: int | None,
    ) -> list[Condition]:
        """Return the conditions with ``type_`` set, and ``Ready`` recomputed."""
        updated = _set(list(conditions), type_, (status, reason, message), now=now, generation=generation)
        return _set(updated, self.happy, self._happy_state(updated), now=now, generation=generation)

    def _happy_state(self, conditions: list[Condition]) -> _State:
        """``Ready`` from its dependents: the first blocking one, else the first unknown one, else True."""
        by_type = {c.type: c for c in conditions}
        blocking: list[Condition] = []
        unknown: list[Condition] = []
        missing: list[ConditionType] = []
        for type_, healthy in self.dependents.items():
            cond = by_type.get(type_)
            if cond is None:
                if healthy is ConditionStatus.TRUE:
                    missing.append(type_)  # a positive dependent nobody has reported yet
                continue
            if cond.status is ConditionStatus.UNKNOWN:
                unknown.append(cond)
            elif cond.status is not healthy:
                blocking.append(cond)
        if missing and not blocking:
            return ConditionStatus.UNKNOWN, Reason.AWAITING_PLACEMENT, f"waiting for {missing[0].value}"
        if blocking:
            first = blocking[0]
            return (
                ConditionStatus.FALSE,
                first.reason,
                f"{first.type.value}: {first.message}" if first.message else first.type.value,
            )
        if unknown:
            return ConditionStatus.UNKNOWN, unknown[0].reason, unknown[0].message
        return ConditionStatus.TRUE, Reason.ALL_DEPENDENTS_READY, ""


_State = tuple[ConditionStatus, Reason, str]
"""(status, reason, message) of one condition."""


def _set(
    conditions: list[Condition], type_: ConditionType, state: _State, *, now: str, generation: int | None
) -> list[Condition]:
    """``conditions`` with ``type_`` in ``state``; ``lastTransitionTime`` moves only when the status changes, and an
    unchanged condition is kept as it is (only its ``observedGeneration`` follows)."""
    status, reason, message = state
    previous = next((c for c in conditions if c.type is type_), None)
    if previous is not None and (previous.status, previous.reason, previous.message) == state:
        updated = (
            previous
            if previous.observed_generation == generation
            else previous.model_copy(update={"observed_generation": generation})
        )
    else:
        transition = previous.last_transition_time if previous is not None and previous.status is status else now
        updated = Condition.model_validate(
            {"type": type_, "status": status, "reason": reason, "message": message}
            | {"last_transition_time": transition, "observed_generation": generation}
        )
    out = [updated if c.type is type_ else c for c in conditions] if previous is not None else [*conditions, updated]
    return sorted(out, key=lambda c: _ORDER[c.type])


_ORDER = {t: i for i, t in enumerate(ConditionType)}
"""Conditions are kept in the order ``ConditionType`` declares them."""


WORKLOAD_CONDITIONS = ConditionSet(
    happy=ConditionType.READY,
    dependents={
        ConditionType.INVALID_SPEC: ConditionStatus.FALSE,
        ConditionType.PLACED: ConditionStatus.TRUE,
    },
)
"""Ready = the spec is valid and a target serves. Metrics, budget, SLO risk and migrations are reported beside
Ready but do not make a serving workload un-ready."""


def derive_phase(conditions: Iterable[Condition]) -> Phase:
    """A one-word summary for ``kubectl get``, derived from the conditions (never stored as truth)."""
    by_type = {c.type: c for c in conditions}

    def is_true(type_: ConditionType) -> bool:
        cond = by_type.get(type_)
        return cond is not None and cond.status is ConditionStatus.TRUE

    if is_true(ConditionType.INVALID_SPEC):
        return Phase.INVALID
    if is_true(ConditionType.MIGRATING):
        return Phase.MIGRATING
    if is_true(ConditionType.READY):
        return Phase.SERVING
    placed = by_type.get(ConditionType.PLACED)
    if placed is not None and placed.reason in (Reason.TARGET_FAILED, Reason.CLOUD_API_ERROR, Reason.NOT_OWNED):
        return Phase.DEGRADED
    if placed is not None and placed.reason is Reason.TARGET_PROVISIONING:
        return Phase.PROVISIONING
    return Phase.PENDING
