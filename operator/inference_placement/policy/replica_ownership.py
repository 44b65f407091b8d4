"""Who owns a model Deployment's ``spec.replicas``: the operator, or an autoscaler the user already runs (pure).

A user's HorizontalPodAutoscaler (``autoscaling/v2``) or KEDA ScaledObject (``keda.sh/v1alpha1``) whose
``scaleTargetRef`` names the workload's Deployment owns its replica count. The operator then leaves
``spec.replicas`` out of what it applies (the autoscaler's field manager keeps it), and its own replica decision is
advisory: it is still made, priced and shown (``explain``, ``status.lastDecision``), and placement, routing,
migration and spillover carry on, but the operator never writes the Deployment's replicas. A decision of zero
replicas (scale to zero) is advisory in the same way: the autoscaler's minimum holds (an HPA cannot go below one;
KEDA can go to zero itself with ``minReplicaCount: 0``).

KEDA creates an HPA of its own (``keda-hpa-<name>``, owned by the ScaledObject) for each ScaledObject: such an HPA
is reported as its ScaledObject, once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from inference_placement.policy.actuation import Actuators

__all__ = [
    "HPA_KIND",
    "SCALED_OBJECT_KIND",
    "ExternalScaler",
    "ReplicaOwnership",
    "actuators_under",
    "replica_ownership",
    "scalers_targeting",
]

HPA_KIND: Final = "HorizontalPodAutoscaler"
SCALED_OBJECT_KIND: Final = "ScaledObject"
_DEPLOYMENT: Final = "Deployment"
_APPS: Final = "apps"


@dataclass(frozen=True, order=True)
class ExternalScaler:
    """An autoscaler that sets the Deployment's replicas."""

    kind: str
    """``HorizontalPodAutoscaler`` or ``ScaledObject``."""
    name: str
    min_replicas: int | None = None
    max_replicas: int | None = None

    @property
    def ref(self) -> str:
        """``HorizontalPodAutoscaler/web``: how status and ``explain`` name it."""
        return f"{self.kind}/{self.name}"

    @property
    def bounds(self) -> str:
        low = "?" if self.min_replicas is None else str(self.min_replicas)
        high = "?" if self.max_replicas is None else str(self.max_replicas)
        return f"{low}..{high}"


@dataclass(frozen=True)
class ReplicaOwnership:
    """The operator's (no scaler) or the scalers'."""

    scalers: tuple[ExternalScaler, ...] = ()

    @property
    def external(self) -> bool:
        return bool(self.scalers)

    @property
    def managed_by(self) -> str | None:
        """The scalers as ``Kind/name``, comma-separated; None when the operator owns replicas."""
        return ", ".join(s.ref for s in self.scalers) if self.scalers else None

    def applied_replicas(self, decided: int) -> int | None:
        """What the operator applies as ``spec.replicas``: its decision, or None (left out) under a scaler."""
        return None if self.external else decided

    def note(self, decided: int) -> str | None:
        """Why the decision is advisory (for status and ``explain``); None when the operator owns replicas."""
        if not self.scalers:
            return None
        if len(self.scalers) > 1:
            # two autoscalers on one Deployment fight each other; the operator stays out of it and says so
            return (
                f"spec.replicas is managed by {self.managed_by} (more than one autoscaler targets this Deployment); "
                f"the operator's {decided} replica(s) are advisory and never written"
            )
        scaler = self.scalers[0]
        return (
            f"spec.replicas is managed by {scaler.ref} (replicas {scaler.bounds}); the operator's {decided} "
            "replica(s) are advisory and never written"
        )


def replica_ownership(scalers: Iterable[ExternalScaler]) -> ReplicaOwnership:
    return ReplicaOwnership(tuple(sorted(set(scalers))))


def scalers_targeting(
    deployment: str,
    hpas: Iterable[Mapping[str, Any]],
    scaled_objects: Iterable[Mapping[str, Any]],
) -> tuple[ExternalScaler, ...]:
    """The autoscalers among ``hpas`` and ``scaled_objects`` (unstructured, as listed in the Deployment's namespace)
    whose ``scaleTargetRef`` is the Deployment named ``deployment``. An HPA owned by a ScaledObject that is itself
    among the targeting ones is left out (KEDA's own HPA); one being deleted does not count."""
    found: list[ExternalScaler] = []
    keda_names: set[str] = set()
    for obj in scaled_objects:
        spec = obj.get("spec") or {}
        if _deleting(obj) or not _targets(spec.get("scaleTargetRef"), deployment, default_kind=True):
            continue
        name = str((obj.get("metadata") or {}).get("name", ""))
        keda_names.add(name)
        found.append(
            ExternalScaler(
                SCALED_OBJECT_KIND,
                name,
                _int(spec.get("minReplicaCount"), default=0),
                _int(spec.get("maxReplicaCount"), default=100),
            )
        )
    for obj in hpas:
        spec = obj.get("spec") or {}
        if _deleting(obj) or not _targets(spec.get("scaleTargetRef"), deployment, default_kind=False):
            continue
        owners = (obj.get("metadata") or {}).get("ownerReferences") or []
        if any(o.get("kind") == SCALED_OBJECT_KIND and o.get("name") in keda_names for o in owners):
            continue
        found.append(
            ExternalScaler(
                HPA_KIND,
                str((obj.get("metadata") or {}).get("name", "")),
                _int(spec.get("minReplicas"), default=1),
                _int(spec.get("maxReplicas"), default=None),
            )
        )
    return tuple(sorted(found))


def _targets(ref: Any, deployment: str, *, default_kind: bool) -> bool:
    """``scaleTargetRef`` names the Deployment (KEDA defaults kind to Deployment and apiVersion to apps/v1)."""
    if not isinstance(ref, Mapping) or ref.get("name") != deployment:
        return False
    kind = ref.get("kind") or (_DEPLOYMENT if default_kind else None)
    api_version = str(ref.get("apiVersion") or "apps/v1")  # optional in both: the kind alone resolves it
    return kind == _DEPLOYMENT and api_version.split("/")[0] == _APPS


def _deleting(obj: Mapping[str, Any]) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def _int(value: Any, *, default: int | None) -> int | None:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    return default


def actuators_under(actuators: Actuators, replicas_managed_by: str | None) -> Actuators:
    """What the operator can carry out while an autoscaler owns the cluster replicas: no scale to zero (it would
    need a replicas write; the autoscaler's minimum holds instead). Routing, migration and spillover are unchanged:
    the router still spills what the model servers refuse at their queue cap, whatever the replica count."""
    if replicas_managed_by is None or not actuators.cluster_scale_to_zero:
        return actuators
    return replace(actuators, cluster_scale_to_zero=False)
