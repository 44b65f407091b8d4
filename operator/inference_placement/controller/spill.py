"""The spill state machine: starting and ending burst spillover without failing a request (pure; time is given).

Two things must agree for spillover to be safe: the router must retry a refused request on the overflow target,
and the cluster's model servers must refuse beyond their queue cap. A refusal without the retry fails a request,
so the order is make before break both ways:

    start:  Provisioning (deploy the overflow target) -> Routed (the router retries refusals there; no replica
            refuses yet) -> Spilling (the replicas get their queue cap)
    end:    Uncapping (the cap leaves the replicas; the router still retries) -> Draining (the router stops; the
            overflow target finishes what it holds) -> gone (the overflow target retires)

Each step moves on only when what it waits for is observed: the overflow target ready, the router serving the
spill route, the replicas rolled out without the cap, the drain over. A decision that keeps the spill but changes
its numbers updates them in place; a spill to another target ends the current one first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from inference_placement.api.spec import TargetName
from inference_placement.api.status import SpillStatus, SpillStep
from inference_placement.api.timestamps import format_time, parse_time
from inference_placement.policy.spillover import SpillPlan

__all__ = ["SpillObservation", "SpillTransition", "advance_spill"]


@dataclass(frozen=True)
class SpillObservation:
    target_ready: bool = False
    """The overflow target answers its health check."""
    router_spills: bool = False
    """The router serves the route that retries refusals on the overflow target."""
    replicas_uncapped: bool = False
    """The cluster's replicas run without the queue cap (the rollout finished)."""


@dataclass(frozen=True)
class SpillTransition:
    spill: SpillStatus | None
    retire: TargetName | None = None
    """An overflow target to retire now (the spill ended)."""
    event_reason: str | None = None
    event_message: str | None = None


def _since(spill: SpillStatus, now: datetime) -> float:
    started = parse_time(spill.step_started_at)
    return 0.0 if started is None else max(0.0, (now - started).total_seconds())


def _step(spill: SpillStatus, step: SpillStep, now: datetime) -> SpillStatus:
    return spill.model_copy(update={"step": step, "step_started_at": format_time(now)})


def _plan_fields(plan: SpillPlan, message: str) -> dict[str, object]:
    """What status records of a spill plan (the split in numbers)."""
    return {
        "base_replicas": plan.base_replicas,
        "overflow_above_in_flight": plan.overflow_above_in_flight,
        "slots_per_replica": plan.slots_per_replica,
        "warm_instances": plan.warm_floor + plan.warm_pings,
        "message": message,
    }


def _numbers(spill: SpillStatus, plan: SpillPlan, message: str) -> SpillStatus:
    """``spill`` with the plan's split. The message keeps the figures of the decision that set the split while the
    split itself (base, overflow cap, slots, warm pool) is unchanged: its projected dollars and overflow share move
    with every tick's traffic, and a status rewritten every tick of a spill would make each one a write (the
    Decision Event and ``explain`` carry the current figures)."""
    fields = _plan_fields(plan, message)
    if all(getattr(spill, name) == value for name, value in fields.items() if name != "message"):
        fields["message"] = spill.message or message
    return spill.model_copy(update=fields)


def _ending(spill: SpillStatus, seen: SpillObservation, now: datetime, drain_seconds: float) -> SpillTransition:
    if spill.step in (SpillStep.PROVISIONING, SpillStep.ROUTED):
        # no replica refuses yet: the router may stop retrying at once
        return SpillTransition(_step(spill, SpillStep.DRAINING, now))
    if spill.step is SpillStep.SPILLING:
        return SpillTransition(
            _step(spill, SpillStep.UNCAPPING, now),
            event_reason="SpillEnding",
            event_message=f"stops spilling to {spill.target.value}: the replicas' queue cap is removed first",
        )
    if spill.step is SpillStep.UNCAPPING:
        if seen.replicas_uncapped:
            return SpillTransition(_step(spill, SpillStep.DRAINING, now))
        return SpillTransition(spill)
    # DRAINING
    if not seen.router_spills and _since(spill, now) >= drain_seconds:
        return SpillTransition(
            None,
            retire=spill.target,
            event_reason="SpillEnded",
            event_message=f"no longer spills to {spill.target.value}; it retires",
        )
    return SpillTransition(spill)


def advance_spill(
    spill: SpillStatus | None,
    plan: SpillPlan | None,
    message: str,
    seen: SpillObservation,
    now: datetime,
    drain_seconds: float,
) -> SpillTransition:
    """The next state of the spill for the decision's ``plan`` (None: no spill wanted; ``message``: the decision's
    description of the split) and what was observed this tick."""
    if spill is None:
        if plan is None:
            return SpillTransition(None)
        started = SpillStatus.model_validate(
            {
                "target": plan.target,
                "step": SpillStep.PROVISIONING,
                "step_started_at": format_time(now),
                **_plan_fields(plan, message),
            }
        )
        return SpillTransition(started)
    if plan is None or plan.target is not spill.target or spill.step in (SpillStep.UNCAPPING, SpillStep.DRAINING):
        if plan is not None and plan.target is spill.target and spill.step is SpillStep.UNCAPPING:
            # wanted again before the cap left: keep spilling
            return SpillTransition(_numbers(_step(spill, SpillStep.SPILLING, now), plan, message))
        return _ending(spill, seen, now, drain_seconds)
    spill = _numbers(spill, plan, message)
    if spill.step is SpillStep.PROVISIONING:
        return SpillTransition(_step(spill, SpillStep.ROUTED, now)) if seen.target_ready else SpillTransition(spill)
    if spill.step is SpillStep.ROUTED:
        if seen.router_spills:
            return SpillTransition(
                _step(spill, SpillStep.SPILLING, now), event_reason="Spilling", event_message=message
            )
        return SpillTransition(spill)
    return SpillTransition(spill)
