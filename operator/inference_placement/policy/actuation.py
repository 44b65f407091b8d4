"""The one step from a ``Decision`` to what is applied on each target, shared by the controller and the simulator.

``decide`` says where the workload should run and with what capacity; this module says what each target is set to
on a tick: cluster replicas, serverless instances the platform keeps warm (Cloud Run min instances, Lambda
provisioned concurrency), instances kept warm by pings and their interval, and the cap on replicas. The live
reconciler hands the result to its targets and its pinger; the simulator hands the same result to its platforms,
so the benchmark credits ``ours`` with nothing the live operator does not carry out.

``Actuators`` states what the live operator can carry out beyond placing and sizing. ``decide`` reads it too, so
a decision never asks for what cannot be done (and its Event and ``status.lastDecision`` never claim it).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from inference_placement.api.spec import SERVERLESS, AcceleratorOption, InferenceWorkloadSpec, TargetName
from inference_placement.api.status import CapacityType, DecisionRecord
from inference_placement.policy.node_labels import SpotProvider

if TYPE_CHECKING:  # decide imports Actuators from here
    from inference_placement.policy.decide import Decision

__all__ = [
    "ACTIVATOR",
    "Actuators",
    "TargetSettings",
    "WakeTimings",
    "ZeroAnswer",
    "effective_spec",
    "target_settings",
    "zero_allowed",
    "zero_answer",
]

ACTIVATOR = "activator"
"""``ZeroAnswer.answered_by`` (and ``status.scaleToZero.answeredBy``) when the router's activator holds a request
that finds no pod."""


@dataclass(frozen=True)
class Actuators:
    """What the live operator can carry out; the simulator's ``ours`` is given the same (parity rule)."""

    cluster_scale_to_zero: bool = False
    """Something answers a request that arrives while the cluster target has no replica (a serverless target the
    router falls through to, or a hold until a replica is ready). Without it the cluster keeps at least one
    replica whatever the spec's ``minReplicas`` (0 would fail the next request), and the cost model prices that."""
    spillover: bool = False
    """The router sends the requests the cluster's model servers refuse at their queue cap to a serverless target
    on the same endpoint (burst spillover); without it the cluster holds the peak."""
    zero_fall_through: bool = False
    """At zero cluster replicas the router can send a request that finds no pod to a serverless target (its
    overflow hop) rather than hold it (serverless as the activator, ``zero_answer``); without it the activator
    holds every such request."""
    spot_provider: SpotProvider | None = None
    """The cloud whose spot nodes the cluster target can tell and select (``cluster.spotNodeLabels``: eks and
    karpenter are ``aws``, gke is ``gcp``); its pre-emption facts price spot. None: the operator cannot place
    replicas on spot, so a workload asking for spot runs, and is priced, on on-demand nodes."""


@dataclass(frozen=True)
class WakeTimings:
    """How the operator wakes a cluster workload from zero (the router's activator holds its requests meanwhile);
    the live operator's ``router.wakePollSeconds`` / ``router.wakeKeepSeconds`` default to these, and the simulator
    models the same wake with them."""

    poll_seconds: float = 0.5
    """Seconds between two reads of the activators' held requests: a held request is noticed (and its workload
    scaled up) within this long of its arrival."""
    keep_seconds: float = 60.0
    """A workload woken from zero keeps at least one replica this long after the wake, whatever the decision."""


def zero_allowed(
    *, answers_without_pods: bool, requests_held: bool, seconds_since_wake: float | None, keep_seconds: float
) -> bool:
    """Whether a workload's cluster target may be at zero replicas on this tick (given an operator that can wake
    it): the router serves a route that answers a request finding no pod, no request waits for a replica now (the
    activator holds some: wake now), and the last wake-up is at least ``keep_seconds`` old. The live reconciler
    and the simulator's ``ours`` both ask this."""
    if not answers_without_pods or requests_held:
        return False
    return seconds_since_wake is None or seconds_since_wake >= keep_seconds


@dataclass(frozen=True)
class ZeroAnswer:
    """Who answers a request that finds the cluster target at zero replicas (serverless as the activator, or a
    hold in the router's activator until a replica is ready)."""

    target: TargetName | None
    """The serverless target the router's composite cluster falls through to (deployed and ready now); None = the
    activator holds the request."""
    wanted: TargetName | None
    """The serverless target that qualifies (allowed, feasible, free while idle, cold start within the SLO's
    tolerable one), ready or not: the operator keeps it deployed while the cluster is at zero. None = none does."""
    reason: str

    @property
    def answered_by(self) -> str:
        return self.target.value if self.target is not None else ACTIVATOR


def zero_answer(
    spec: InferenceWorkloadSpec,
    cold_start_seconds: Mapping[TargetName, float],
    ready: Collection[TargetName],
    infeasible: Mapping[TargetName, str] | None = None,
    *,
    actuators: Actuators = Actuators(zero_fall_through=True),
) -> ZeroAnswer:
    """Who answers a request that arrives while the cluster target is at zero replicas.

    A serverless target qualifies when the spec allows it, nothing makes it infeasible (``Decision.infeasible``:
    platform limits, compliance), it costs nothing while idle (the spec keeps no instance warm there: Cloud Run
    ``minInstances: 0``, Lambda without provisioned concurrency, which is what ``target_settings`` sets on a
    target the decision is not about) and its cold start (``cold_start_seconds``: the economics' from the price
    book; a target the price book cannot price does not qualify) is within ``slo.tolerableColdStartSeconds`` and
    shorter than a cluster replica's (else holding answers as soon, and the serverless requests cost extra), and
    the router can fall through at all (``actuators.zero_fall_through``). Of
    those, the one with the shortest cold start (then Cloud Run before Lambda); the router falls through to it
    only once it is deployed and ready (``ready``), and until then the activator holds. The live reconciler and
    the simulator's ``ours`` both ask this."""
    infeasible = infeasible or {}
    tolerable = spec.slo.tolerable_cold_start()
    if not actuators.zero_fall_through:
        return ZeroAnswer(None, None, f"held by the router's activator up to {tolerable:g}s")
    notes: list[str] = []
    candidates: list[tuple[float, int, TargetName]] = []
    pods = cold_start_seconds.get(TargetName.CLUSTER)
    for order, target in enumerate(SERVERLESS):
        if target not in spec.placement.allowed_targets:
            continue
        cold = cold_start_seconds.get(target)
        if target in infeasible:
            notes.append(f"{target.value} infeasible ({infeasible[target]})")
        elif cold is None:
            notes.append(f"{target.value} not priced")
        elif _spec_floor(spec, target, Actuators()) > 0:
            notes.append(f"{target.value} keeps instances warm (not free while idle)")
        elif cold > tolerable:
            notes.append(f"{target.value} cold start {cold:g}s > tolerable {tolerable:g}s")
        elif pods is not None and cold >= pods:
            notes.append(f"{target.value} cold start {cold:g}s no shorter than a replica's {pods:g}s")
        else:
            candidates.append((cold, order, target))
    if not candidates:
        why = "; ".join(notes) if notes else "no serverless target allowed"
        return ZeroAnswer(None, None, f"held by the router's activator up to {tolerable:g}s ({why})")
    cold, _, wanted = min(candidates)
    if wanted not in ready:
        return ZeroAnswer(
            None,
            wanted,
            f"held by the router's activator up to {tolerable:g}s until {wanted.value} is ready (then it answers)",
        )
    return ZeroAnswer(
        wanted,
        wanted,
        f"answered by {wanted.value} (cold start {cold:g}s within tolerable {tolerable:g}s) while a replica starts",
    )


@dataclass(frozen=True)
class TargetSettings:
    """What one target is set to on this tick."""

    target: TargetName
    replicas: int
    """Cluster: Deployment replicas. Serverless: instances the platform keeps warm and bills while enabled (Cloud
    Run min instances, Lambda provisioned concurrency)."""
    max_replicas: int | None = None
    """Cap on replicas or instances (the budget's cap-scaling action); None = the spec's."""
    keep_warm_pings: int = 0
    """Serverless: instances the operator keeps warm by pinging them (a billed request each interval)."""
    ping_interval_seconds: float | None = None
    accelerator: AcceleratorOption | None = None
    """Cluster: the acceptable accelerator its replicas run on (the decision's, else the last recorded one);
    None = the spec's first."""
    spot: bool | None = None
    """Cluster: True = prefer spot nodes, False = on-demand nodes only (the decision's capacity type for a
    workload asking for spot, else the last recorded one); None = no capacity type asked for."""


def effective_spec(spec: InferenceWorkloadSpec, actuators: Actuators) -> InferenceWorkloadSpec:
    """The spec as the operator can carry it out: ``minReplicas: 0`` means 1 while nothing can wake the cluster."""
    if spec.scaling.min_replicas > 0 or actuators.cluster_scale_to_zero:
        return spec
    return spec.model_copy(update={"scaling": spec.scaling.model_copy(update={"min_replicas": 1})})


def _spec_floor(spec: InferenceWorkloadSpec, target: TargetName, actuators: Actuators) -> int:
    if target is TargetName.CLUSTER:
        return spec.scaling.min_replicas if actuators.cluster_scale_to_zero else max(1, spec.scaling.min_replicas)
    if target is TargetName.CLOUDRUN:
        return spec.cloud_run.min_instances
    return spec.lambda_.provisioned_concurrency


def target_settings(
    target: TargetName,
    decision: Decision,
    spec: InferenceWorkloadSpec,
    last_decision: DecisionRecord | None,
    actuators: Actuators,
    *,
    provisioning: bool = False,
    serving_replicas: int | None = None,
) -> TargetSettings:
    """The settings of ``target`` for this tick.

    * the decision is about ``target``: its replicas, cap and keep-warm pings;
    * the decision spills the cluster's overflow to ``target``: the overflow's warm pool (floor and pings);
    * the decision is withheld (``target=None``: metrics missing or stale) and the last recorded decision was about
      ``target``: that decision's settings, so nothing scales on missing data;
    * otherwise (a migration's source or target the decision is not about): the spec's floor.

    ``provisioning``: the target is being made ready to take traffic (a migration's target, a first placement): a
    cluster target gets at least one replica, since its health check needs a replica that answers.
    ``serving_replicas``: the cluster target carries the workload's traffic with this many replicas while the
    decision is about another target (or is withheld): a move held back by its cooldown, the router, a spill, or a
    migration in flight whose source it is (until it is retired: its share, and all the traffic in a rollback). It
    keeps them rather than drop to the spec's floor (which could take a serving cluster to zero replicas, or to one,
    before anything else takes the traffic).
    """
    floor = _spec_floor(spec, target, actuators)
    spill = decision.spill if decision.target is TargetName.CLUSTER else None
    if spill is not None and spill.target is target:
        settings = TargetSettings(
            target, max(floor, spill.warm_floor), None, spill.warm_pings, spill.ping_interval_seconds
        )
    elif decision.target is target:
        warm = decision.keep_warm_instances
        settings = TargetSettings(
            target,
            decision.replicas,
            decision.max_replicas,
            warm,
            decision.ping_interval_seconds if warm else None,
        )
    elif target is TargetName.CLUSTER and serving_replicas is not None and decision.target is not target:
        settings = TargetSettings(target, max(floor, serving_replicas))
    elif decision.target is None and last_decision is not None and last_decision.target is target:
        warm = last_decision.keep_warm_instances or 0
        settings = TargetSettings(
            target, last_decision.replicas, None, warm, last_decision.ping_interval_seconds if warm else None
        )
    else:
        settings = TargetSettings(target, floor)
    if target is TargetName.CLUSTER:
        least = 1 if provisioning or not actuators.cluster_scale_to_zero else 0
        accelerator = decision.accelerator.option if decision.accelerator is not None else None
        if accelerator is None and last_decision is not None:
            accelerator = last_decision.accelerator
        if accelerator is not None and spec.accelerator.alternatives:
            # only an option the spec still lists (a spec edited since the record names none)
            keys = {o.key(): o for o in spec.accelerator.options()}
            accelerator = keys.get(accelerator.key())
        else:
            accelerator = None
        spot: bool | None = None
        if spec.cluster.spot:
            if actuators.spot_provider is None:
                spot = False  # nothing tells spot nodes apart: on-demand, as the policy priced it
            elif decision.spot is not None:
                spot = decision.spot.spot
            elif last_decision is not None and last_decision.capacity_type is not None:
                spot = last_decision.capacity_type is CapacityType.SPOT
        settings = replace(settings, replicas=max(least, settings.replicas), accelerator=accelerator, spot=spot)
    return settings
