"""Keep the router's routes equal to what the workloads' statuses say, and tell the reconciler what it confirmed.

The migration state machine changes only ``status`` (traffic percent, step); this module turns the statuses of the
whole fleet into routes (``routing.model.route_from_status``) and hands them to an applier (Envoy's file-based xDS
on loopback, or the in-cluster router's ConfigMap). Make before break depends on the order of those two things, so
the reconciler is told which weights the router has **confirmed** for each workload, and a migration does not move
past a traffic step, retire a source or retire a rolled-back target until the router serves the weights that step
needs (``weights_confirmed``). After a restart nothing is confirmed until the first successful apply, which
re-reads the router's files: an operator killed between a status write and the router update resumes safely.

A workload whose status cannot be routed (a backend that must take traffic has no usable endpoint) keeps the last
route it had: a bad status never takes a serving workload off the router.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from inference_placement.api.spec import TargetName
from inference_placement.api.status import InferenceWorkloadStatus, SpillStep
from inference_placement.api.workload import WorkloadKey
from inference_placement.routing.model import EndpointsConfig, Route, RouteError, route_for

__all__ = ["RouteApplier", "RouterSync", "positive_weights"]

log = logging.getLogger(__name__)


class RouteApplier(Protocol):
    """Makes the router serve exactly ``routes`` (all workloads); returns once the router confirmed, or raises."""

    async def apply(self, routes: Sequence[Route]) -> object: ...


def positive_weights(weights: Mapping[TargetName, int]) -> dict[TargetName, int]:
    """Weights of the backends that take traffic (a weight-0 backend serves nothing, present or not)."""
    return {target: weight for target, weight in weights.items() if weight > 0}


@dataclass
class RouterSync:
    applier: RouteApplier
    endpoints: EndpointsConfig = field(default_factory=EndpointsConfig)
    cluster_domain: str = "cluster.local"
    wait_seconds: float = 60.0
    """How long one ``sync`` waits for the apply it started (the rest happens in the background)."""
    fence: Callable[[], None] | None = None
    """Raises when this replica may not act (``leader.LeaseElector.fence``): checked before each apply."""

    def __post_init__(self) -> None:
        self._routes: dict[WorkloadKey, Route] = {}
        self._versions: dict[WorkloadKey, str] = {}
        self._applied: dict[WorkloadKey, Route] | None = None
        self._confirmed: dict[WorkloadKey, dict[TargetName, int]] = {}
        self._spills: dict[WorkloadKey, TargetName] = {}
        self.errors = 0
        self.last_error: str | None = None
        self.applies = 0
        self._task: asyncio.Task[None] | None = None
        self.owners: dict[str, str] = {}
        """``namespace/name`` -> uid of every workload seen (owner references of per-workload router objects)."""

    # ------------------------------------------------------------------ fed by the fleet

    def observe(self, key: WorkloadKey, body: Mapping[str, Any]) -> None:
        """Recompute the route of one workload from its object (cached by resourceVersion)."""
        meta = body.get("metadata") or {}
        if meta.get("uid"):
            self.owners[f"{key.namespace}/{key.name}"] = str(meta["uid"])
        version = str(meta.get("resourceVersion", ""))
        if version and self._versions.get(key) == version:
            return
        view = _routing_view(body)
        if view is None:
            return
        try:
            route = route_for(*view, self.endpoints, overflow=_spill_route(view[2]))
        except RouteError as err:
            log.warning("route of %s unchanged: %s", key, err)
            return
        self._routes[key] = route
        self._versions[key] = version

    def forget(self, key: WorkloadKey) -> None:
        self.owners.pop(f"{key.namespace}/{key.name}", None)
        self._routes.pop(key, None)
        self._versions.pop(key, None)

    async def sync(self) -> bool:
        """Apply the routes if they differ from what was last confirmed. True when the router serves them.

        The apply runs as a task; this waits for it at most ``wait_seconds`` (an in-cluster router confirms only
        after the kubelet refreshed its ConfigMap volume, and the fleet loop must not stall that long). Until it is
        confirmed, ``confirmed()`` keeps answering the previous weights, so migrations wait."""
        if self._task is not None and not self._task.done():
            await asyncio.wait({self._task}, timeout=self.wait_seconds)
            return self._task.done() and self.last_error is None
        desired = dict(self._routes)
        if self._applied is not None and desired == self._applied:
            return True
        if self.fence is not None:
            self.fence()
        self._task = asyncio.create_task(self._apply(desired), name="router-apply")
        await asyncio.wait({self._task}, timeout=self.wait_seconds)
        return self._task.done() and self.last_error is None

    async def close(self) -> None:
        """Cancel an apply in flight (at shutdown, before the API client it uses is closed)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def waiting(self) -> set[WorkloadKey]:
        """Workloads whose route the router does not serve yet (all of them before the first apply)."""
        applied = self._applied or {}
        return {key for key, route in self._routes.items() if applied.get(key) != route}

    @property
    def busy(self) -> bool:
        """An apply is in flight, or the last one failed: the fleet should come back soon."""
        return (self._task is not None and not self._task.done()) or self.last_error is not None

    async def _apply(self, desired: dict[WorkloadKey, Route]) -> None:
        try:
            await self.applier.apply([desired[k] for k in sorted(desired, key=lambda k: (k.namespace, k.name))])
        except Exception as err:  # the router keeps serving its previous config; migrations wait
            self.errors += 1
            self.last_error = f"{type(err).__name__}: {err}"
            log.error("router not updated (migrations wait for it): %s", self.last_error)
            return
        self.applies += 1
        self.last_error = None
        self._applied = desired
        self._confirmed = {key: positive_weights(route.weights()) for key, route in desired.items()}
        self._spills = {key: route.overflow.target for key, route in desired.items() if route.overflow is not None}

    # ------------------------------------------------------------------ read by the reconciler

    def confirmed(self, key: WorkloadKey) -> dict[TargetName, int] | None:
        """The weights the router serves for ``key``; None when nothing was confirmed since the operator started."""
        if self._applied is None:
            return None
        return self._confirmed.get(key, {})

    def confirmed_spill(self, key: WorkloadKey) -> TargetName | None:
        """The overflow target the router serves for ``key`` (it retries refused requests there); None = none."""
        return self._spills.get(key)

    def stable_endpoint(self, namespace: str, name: str) -> str:
        """The URL clients use whatever the placement: the workload's Service name, resolved to the router."""
        return f"http://{name}.{namespace}.svc.{self.cluster_domain}"


_ROUTED_SPILL = frozenset({SpillStep.ROUTED, SpillStep.SPILLING, SpillStep.UNCAPPING})


def _spill_route(status: InferenceWorkloadStatus) -> TargetName | None:
    """The overflow target the route retries refusals on: from the step where the router must (``ROUTED``) until
    the replicas refuse no more (``UNCAPPING`` done). No migration starts while a spill is in force."""
    spill = status.spill
    if spill is None or spill.step not in _ROUTED_SPILL or status.placement is not TargetName.CLUSTER:
        return None
    return spill.target


def _routing_view(body: Mapping[str, Any]) -> tuple[str, str, InferenceWorkloadStatus] | None:
    """Identity and status only: the route never depends on the spec (a spec that no longer parses must not take
    a serving workload off the router)."""
    meta = body.get("metadata") or {}
    try:
        status = InferenceWorkloadStatus.model_validate(body.get("status") or {})
    except ValidationError:
        return None
    name = meta.get("name")
    if not name:
        return None
    return str(meta.get("namespace") or "default"), str(name), status
