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
import math
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from pydantic import ValidationError

from inference_placement.api.spec import (
    SERVERLESS,
    LatencyMeasure,
    SLOSpec,
    TargetName,
    default_tolerable_cold_start,
)
from inference_placement.api.status import InferenceWorkloadStatus, SpillStep
from inference_placement.api.workload import WorkloadKey
from inference_placement.controller.log_context import workload_fields
from inference_placement.controller.pod_endpoints import PodEndpoints, ServiceKey
from inference_placement.policy.first_request import LatencyBin, ServerlessReading
from inference_placement.policy.traffic_health import TargetCounters
from inference_placement.routing.model import (
    EndpointsConfig,
    PodsUpstream,
    Route,
    RouteError,
    UpstreamAddress,
    route_for,
)
from inference_placement.routing.traffic_stats import (
    FIRST_REQUEST_COUNTERS_QUERY,
    first_request_bins_query,
    parse_serverless_bins,
    parse_serverless_counters,
    parse_target_counters,
    sum_serverless_bins,
    sum_serverless_readings,
    sum_target_counters,
)

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
    pods: PodEndpoints | None = None
    """The model Services' ready pods from their watched EndpointSlices; None = reach the cluster target through
    its Service (as before). With them, a workload whose Service has slice data is routed to its pods by address
    (``PodsUpstream``); one without slice data yet keeps its Service upstream (a new Service's first slice arrives
    a moment after it: an empty pods cluster in that moment would hold or fail requests the Service serves)."""
    lambda_scope: Callable[[], frozenset[tuple[str, str]] | None] | None = None
    """The admins' Lambda targets' (account, region) pairs now (``TenancyCache.lambda_scope``): a function ARN in
    a status outside them is not routed; None = no such restriction."""
    hold: bool = False
    """The router runs the activator: a route whose pods are by address holds a request that finds no pod, for at
    most the workload's ``slo.tolerableColdStartSeconds`` (``Route.hold_seconds``)."""
    fence: Callable[[], None] | None = None
    """Raises when this replica may not act (``leader.LeaseElector.fence``): checked before each apply."""
    before_fall_through: Callable[[], Awaitable[None]] | None = None
    """Awaited before an apply whose routes newly fall through to a serverless target at zero: the wake poll
    (``ActivatorWatch.poll_now``), so the counters of that target are read before a request can fall through (a
    first sight is otherwise a baseline, and what fell through before it would wake nothing: ``controller/wake``)."""

    def __post_init__(self) -> None:
        self._routes: dict[WorkloadKey, Route] = {}
        self._versions: dict[WorkloadKey, str] = {}
        self._views: dict[WorkloadKey, tuple[str, str, InferenceWorkloadStatus, float, bool]] = {}
        self._services: dict[WorkloadKey, ServiceKey] = {}
        self._no_pod_answered: set[WorkloadKey] = set()
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
        self._views[key] = (*view, _hold_seconds(body), _first_token(body))
        if self._route(key):
            self._versions[key] = version

    def pods_changed(self, service: ServiceKey) -> bool:
        """The ready pods of ``service`` changed (an EndpointSlice event): recompute the routes that reach it.
        True when a route changed (the caller should ``sync`` soon)."""
        changed = False
        for key, reached in list(self._services.items()):
            if reached == service:
                before = self._routes.get(key)
                self._route(key)
                changed = changed or self._routes.get(key) != before
        return changed

    def _route(self, key: WorkloadKey) -> bool:
        """Recompute the route of ``key`` from its last view and the pods seen; False when it cannot be routed."""
        namespace, name, status, hold_seconds, first_token = self._views[key]
        pods = self._pod_addresses(key, status)
        endpoints = self.endpoints
        scope = self.lambda_scope() if self.lambda_scope is not None else None
        if scope is not None:
            endpoints = replace(endpoints, trust=replace(endpoints.trust, lambda_scope=scope))
        try:
            route = route_for(
                namespace,
                name,
                status,
                endpoints,
                pod_addresses=pods,
                overflow=_spill_route(status) or _fall_through(status),
                hold_seconds=hold_seconds if self.hold and pods is not None else None,
                first_token=first_token,
            )
        except RouteError as err:
            log.warning("route of %s unchanged: %s", key, err, extra=workload_fields(key))
            return False
        self._routes[key] = route
        return True

    def _pod_addresses(self, key: WorkloadKey, status: InferenceWorkloadStatus) -> tuple[UpstreamAddress, ...] | None:
        """The ready pods of the workload's cluster Service when they are known and nothing overrides its address;
        None = route to the Service as published."""
        self._services.pop(key, None)
        cluster = status.targets.cluster if status.targets is not None else None
        if self.pods is None or cluster is None or not cluster.endpoint:
            return None
        try:
            published = UpstreamAddress.from_url(cluster.endpoint)
            overridden = self.endpoints.connect_address(published) != published
        except ValueError:
            return None
        if overridden or published.is_ip:
            return None  # the operator's configuration says where this Service is reached: keep that
        labels = published.host.split(".")
        service: ServiceKey = (labels[1] if len(labels) > 1 else key.namespace, labels[0])
        self._services[key] = service
        return self.pods.ready(*service)

    def forget(self, key: WorkloadKey) -> None:
        self.owners.pop(f"{key.namespace}/{key.name}", None)
        self._routes.pop(key, None)
        self._versions.pop(key, None)
        self._views.pop(key, None)
        self._services.pop(key, None)

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
        if self.before_fall_through is not None and self._newly_falling_through(desired):
            try:
                await self.before_fall_through()
            except Exception as err:  # the route goes out anyway: a wake poll never holds up the router
                log.warning("wake poll before a new fall-through failed: %s: %s", type(err).__name__, err)
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
        self._no_pod_answered = {key for key, route in desired.items() if _answers_without_pods(route)}

    def _newly_falling_through(self, desired: Mapping[WorkloadKey, Route]) -> bool:
        """Some workload whose status falls through at zero gets a serverless overflow the router does not serve."""
        applied = self._applied or {}
        for key, route in desired.items():
            if route.overflow is None or route.overflow.target not in SERVERLESS:
                continue
            served = applied.get(key)
            if served is not None and served.overflow is not None and served.overflow.target is route.overflow.target:
                continue
            view = self._views.get(key)
            if view is not None and _fall_through(view[2]) is route.overflow.target:
                return True
        return False

    # ------------------------------------------------------------------ read by the reconciler

    def confirmed(self, key: WorkloadKey) -> dict[TargetName, int] | None:
        """The weights the router serves for ``key``; None when nothing was confirmed since the operator started."""
        if self._applied is None:
            return None
        return self._confirmed.get(key, {})

    def falling_through(self) -> set[WorkloadKey]:
        """Workloads whose status says a serverless target answers at zero (``scaleToZero.answeredBy``, no spill),
        or answered the requests of the last wake and their latency is not recorded yet (Envoy merges histograms
        at its stats flush, seconds after the counter moved: the woken cluster may be up by then): the ones whose
        router counters of that target the wake poll reads (``wake.router_stats_filter``)."""
        return {key for key, (_, _, status, _, _) in self._views.items() if _reads_serverless_counters(status)}

    def confirmed_spill(self, key: WorkloadKey) -> TargetName | None:
        """The overflow target the router serves for ``key`` (it retries refused requests there); None = none."""
        return self._spills.get(key)

    def answers_without_pods(self, key: WorkloadKey) -> bool:
        """The router serves a route for ``key`` that answers a request finding no ready pod: its pods by address
        in a composite cluster that falls through to the activator (hold) or to a serverless overflow target.
        Only then may the workload's Deployment go to zero replicas (``Actuators.cluster_scale_to_zero``)."""
        return key in self._no_pod_answered

    async def target_traffic(self) -> dict[WorkloadKey, dict[TargetName, TargetCounters]] | None:
        """The router's own cumulative counters per workload and target, summed over its replicas (one read per
        replica, whatever the fleet's size); None when the applier cannot report them or a replica could not be
        read (no verdict beats a verdict on part of the traffic)."""
        reader = getattr(self.applier, "traffic_stats", None)
        if reader is None:
            return None
        try:
            payloads = await reader()
        except Exception as err:
            log.warning("router traffic counters unavailable (migrations are not judged on traffic): %s", err)
            return None
        out: dict[WorkloadKey, dict[TargetName, TargetCounters]] = {}
        for (namespace, name, target), counters in sum_target_counters(
            parse_target_counters(p) for p in payloads
        ).items():
            out.setdefault(WorkloadKey(namespace, name), {})[target] = counters
        return out

    async def serverless_counters(self) -> dict[WorkloadKey, dict[TargetName, ServerlessReading]] | None:
        """Every serverless target's request, ping and in-flight counters, summed over the router's replicas (one
        read per replica, whatever the fleet's size: the serverless cold-start measurement, ``policy.first_request``);
        None when the applier cannot report them or a replica could not be read."""
        payloads = await self._stats(FIRST_REQUEST_COUNTERS_QUERY, "serverless counters")
        if payloads is None:
            return None
        out: dict[WorkloadKey, dict[TargetName, ServerlessReading]] = {}
        for (namespace, name, target), reading in sum_serverless_readings(
            parse_serverless_counters(p) for p in payloads
        ).items():
            out.setdefault(WorkloadKey(namespace, name), {})[target] = reading
        return out

    async def serverless_bins(
        self, workloads: Collection[WorkloadKey]
    ) -> dict[WorkloadKey, dict[TargetName, tuple[LatencyBin, ...]]] | None:
        """The request-time histograms (detailed bins) of the serverless targets of ``workloads``, summed over the
        router's replicas (one read per replica); None when unreadable."""
        query = first_request_bins_query([(k.namespace, k.name) for k in workloads])
        payloads = await self._stats(query, "serverless latency bins")
        if payloads is None:
            return None
        out: dict[WorkloadKey, dict[TargetName, tuple[LatencyBin, ...]]] = {}
        for (namespace, name, target), bins in sum_serverless_bins(parse_serverless_bins(p) for p in payloads).items():
            out.setdefault(WorkloadKey(namespace, name), {})[target] = bins
        return out

    async def _stats(self, query: str, what: str) -> list[Any] | None:
        reader = getattr(self.applier, "traffic_stats", None)
        if reader is None:
            return None
        try:
            payloads: list[Any] = await reader(query)
        except Exception as err:
            log.warning("router %s unavailable (no serverless cold start measured now): %s", what, err)
            return None
        return payloads

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


def _fall_through(status: InferenceWorkloadStatus) -> TargetName | None:
    """The serverless target a request that finds no pod falls through to while the cluster is at (or going to)
    zero replicas (``status.scaleToZero.answeredBy``, ``policy.actuation.zero_answer``): the route's overflow, so
    its composite cluster is [pods, overflow] instead of [pods, activator]. ``route_for`` leaves it out (and the
    activator holds) while the target has no upstream in status."""
    zero = status.scale_to_zero
    if zero is None or zero.answered_by is None or status.placement is not TargetName.CLUSTER:
        return None
    if status.migration is not None:
        return None
    try:
        target = TargetName(zero.answered_by)
    except ValueError:  # "activator"
        return None
    return target if target in SERVERLESS else None


def _reads_serverless_counters(status: InferenceWorkloadStatus) -> bool:
    if _fall_through(status) is not None:
        return True
    wake = status.scale_to_zero.last_wake if status.scale_to_zero is not None else None
    return wake is not None and wake.answered_by is not None and wake.wake_latency_ms is None


def _answers_without_pods(route: Route) -> bool:
    pods = next((b for b in route.backends if b.target is TargetName.CLUSTER), None)
    return pods is not None and isinstance(pods.upstream, PodsUpstream) and route.spills


def _hold_seconds(body: Mapping[str, Any]) -> float:
    """The workload's tolerable cold start (the activator's hold bound), read leniently: the route never depends on
    the spec parsing (a spec that no longer parses keeps its route), so a missing or invalid value is the default
    (``default_tolerable_cold_start`` of the objective, itself the API's default when missing or invalid)."""
    slo = (body.get("spec") or {}).get("slo") if isinstance(body.get("spec"), Mapping) else None
    objective = _positive(slo.get("latencyP99Seconds") if isinstance(slo, Mapping) else None)
    if objective is None:
        objective = float(SLOSpec.model_fields["objective_seconds"].default)
    value = _positive(slo.get("tolerableColdStartSeconds") if isinstance(slo, Mapping) else None)
    return value if value is not None else default_tolerable_cold_start(objective)


def _first_token(body: Mapping[str, Any]) -> bool:
    """Whether the workload's objective bounds the time to the first byte, read leniently like the hold bound (a
    spec that no longer parses keeps its route; anything but ``FirstToken`` is the default, the whole answer)."""
    spec = body.get("spec")
    slo = spec.get("slo") if isinstance(spec, Mapping) else None
    return isinstance(slo, Mapping) and slo.get("latencyMeasure") == LatencyMeasure.FIRST_TOKEN.value


def _positive(value: object) -> float | None:
    """A finite number above zero, else None (booleans are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        return None
    return float(value)


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
