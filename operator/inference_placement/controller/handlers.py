"""kopf wiring: one stateless event handler feeding the fleet, and the fleet loop started at start-up.

No change handlers, timers or daemons: they would write an annotation and a finalizer on every object and cost
memory per object. Finalizers are added by the reconciler only to workloads that own cloud resources.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import kopf

from inference_placement.api.workload import GROUP, PLURAL, VERSION
from inference_placement.controller.fleet import Fleet
from inference_placement.controller.pod_endpoints import SERVICE_NAME_LABEL
from inference_placement.controller.settings import OperatorSettings
from inference_placement.controller.supervisor import WatchBackoffs
from inference_placement.targets.cluster_render import MANAGED_BY, MANAGED_BY_LABEL

__all__ = ["build_registry", "FleetFactory"]

log = logging.getLogger(__name__)

FleetFactory = Callable[[], Awaitable[tuple[Fleet, Callable[[], Awaitable[None]]]]]
"""Builds the fleet at start-up; returns it and an async close function."""


def build_registry(settings: OperatorSettings, make_fleet: FleetFactory) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    state: dict[str, Any] = {}

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # An explicit --kubeconfig wins; else the pod's service account; else the default kubeconfig.
        if settings.kubeconfig is None:
            info = kopf.login_with_service_account(**kwargs)
            if info is not None:
                return info
        return kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.enabled = False  # our own Events, only on transitions
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.networking.request_timeout = 60
        settings.networking.error_backoffs = WatchBackoffs()  # a watch never gives up on an apiserver outage
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="placement.inference.dev")
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix="placement.inference.dev", key="last-handled-configuration"
        )
        fleet, close = await make_fleet()
        state["fleet"] = fleet
        state["close"] = close
        state["task"] = asyncio.create_task(fleet.run(), name="fleet-loop")

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        fleet: Fleet | None = state.get("fleet")
        task: asyncio.Task[None] | None = state.get("task")
        if fleet is not None:
            fleet.stop()
        if task is not None:
            try:
                await asyncio.wait_for(task, timeout=10)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
        close = state.get("close")
        if close is not None:
            await close()

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    def workload_event(*, type: str | None, body: kopf.Body, **_: Any) -> None:
        fleet: Fleet | None = state.get("fleet")
        if fleet is None:  # events before start-up finished are replayed by the initial listing anyway
            return
        fleet.observe(type, body)

    if settings.router.mode != "off" and settings.router.pods_by_address:
        # the model Services' EndpointSlices (the Services this operator manages): ready pods by address for the
        # router, one watch for the whole fleet (controller/pod_endpoints.py)
        @kopf.on.event(
            "discovery.k8s.io",
            "v1",
            "endpointslices",
            labels={SERVICE_NAME_LABEL: kopf.PRESENT, MANAGED_BY_LABEL: MANAGED_BY},
            registry=registry,
        )
        def endpointslice_event(*, type: str | None, body: kopf.Body, **_: Any) -> None:
            fleet: Fleet | None = state.get("fleet")
            if fleet is not None:
                fleet.observe_endpoints(type, body)

    return registry
