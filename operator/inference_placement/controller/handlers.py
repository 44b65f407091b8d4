"""kopf wiring: one stateless event handler feeding the fleet, and the fleet loop started at start-up.

No change handlers, timers or daemons: they would write an annotation and a finalizer on every object and cost
memory per object. Finalizers are added by the reconciler only to workloads that own cloud resources.

With leader election (``--leader-elect``, the default) the event handler still feeds every replica's fleet (a
standby's cache stays warm; the handler only records, it never writes), but the fleet loop, the only code that
acts, runs only while this replica holds the Lease (``controller/leader.py``): at each term's start the fleet re-reads
every workload (one LIST) before its first tick; when the Lease is lost the loop is cancelled and the fleet closed,
and a later term starts from a fresh fleet (nothing it remembered, such as the router's confirmed weights, can be
stale). kopf's peering is not leader election (it pauses replicas of the same priority) and stays off by default.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import kopf

from inference_placement.api.workload import GROUP, PLURAL, VERSION
from inference_placement.controller.fleet import Fleet
from inference_placement.controller.leader import LeaseElector
from inference_placement.controller.pod_endpoints import SERVICE_NAME_LABEL
from inference_placement.controller.settings import OperatorSettings
from inference_placement.controller.supervisor import WatchBackoffs
from inference_placement.targets.cluster_render import MANAGED_BY, MANAGED_BY_LABEL

__all__ = ["build_registry", "FleetFactory", "Leadership"]

log = logging.getLogger(__name__)

FleetFactory = Callable[[], Awaitable[tuple[Fleet, Callable[[], Awaitable[None]]]]]
"""Builds the fleet at start-up; returns it and an async close function."""


class Leadership:
    """The fleet's lifecycle under leader election: a standby fleet that only observes, then one term per Lease."""

    def __init__(
        self, elector: LeaseElector, make_fleet: FleetFactory, on_change: Callable[[bool], None] | None = None
    ) -> None:
        self.elector = elector
        self.make_fleet = make_fleet
        self.on_change = on_change
        self.fleet: Fleet | None = None
        self._close: Callable[[], Awaitable[None]] | None = None
        self.terms = 0

    async def prepare(self) -> None:
        """The standby's fleet: primed from one LIST, then fed by the watch; it acts only once this replica leads."""
        self.fleet, self._close = await self.make_fleet()

    async def run(self) -> None:
        """Campaign, lead, lose, campaign again: until cancelled (then the Lease is released)."""
        if self.on_change is not None:
            self.on_change(False)  # a standby from now on: its fleet observes, and it campaigns for the Lease
        try:
            while True:
                await self.elector.acquire()
                await self._term()
                await asyncio.sleep(self.elector.timings.retry_period_seconds)
        finally:
            await self._drop_fleet()
            await self.elector.release()

    async def _term(self) -> None:
        self.terms += 1
        if self.on_change is not None:
            self.on_change(True)
        holding = asyncio.create_task(self.elector.hold(), name="lease-renew")
        acting = asyncio.create_task(self._act(), name="fleet-loop")
        try:
            await asyncio.wait({holding, acting}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (acting, holding):
                task.cancel()
            await asyncio.gather(acting, holding, return_exceptions=True)
            if acting.done() and not acting.cancelled() and acting.exception() is not None:
                log.error("the leader's fleet loop failed; the Lease is released", exc_info=acting.exception())
            lost = holding.done() and not holding.cancelled() and holding.exception() is None
            if not lost:
                await self.elector.release()  # we stop while still holding it: let a standby take over now
            await self._drop_fleet()  # a later term starts from a fresh fleet
            if self.on_change is not None:
                self.on_change(False)

    async def _act(self) -> None:
        if self.fleet is None:
            self.fleet, self._close = await self.make_fleet()  # primed from one LIST
        elif self.fleet.relist is not None:
            await self.fleet.relist()  # the standby's copy may lag the watch: re-read every workload first
        self.fleet.fence = self.elector.fence
        await self.fleet.run()

    async def _drop_fleet(self) -> None:
        fleet, close = self.fleet, self._close
        self.fleet, self._close = None, None
        if fleet is not None:
            fleet.stop()
        if close is not None:
            try:
                await close()
            except Exception as err:
                log.warning("closing the fleet: %s", err)


async def _shut_down(state: dict[str, Any]) -> None:
    campaign: asyncio.Task[None] | None = state.get("leadership")
    if campaign is not None:
        campaign.cancel()  # stops the fleet, closes it, releases the Lease
        await asyncio.gather(campaign, return_exceptions=True)
        return
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


def build_registry(
    settings: OperatorSettings, make_fleet: FleetFactory, leadership: Leadership | None = None
) -> kopf.OperatorRegistry:
    """``leadership``: run the fleet only while this replica leads; None = always (a single replica)."""
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
        if leadership is not None:
            await leadership.prepare()
            state["leadership"] = asyncio.create_task(leadership.run(), name="leadership")
            return
        fleet, close = await make_fleet()
        state["fleet"] = fleet
        state["close"] = close
        state["task"] = asyncio.create_task(fleet.run(), name="fleet-loop")

    def current_fleet() -> Fleet | None:
        if leadership is not None:
            return leadership.fleet
        fleet: Fleet | None = state.get("fleet")
        return fleet

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await _shut_down(state)

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    def workload_event(*, type: str | None, body: kopf.Body, **_: Any) -> None:
        fleet = current_fleet()
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
            fleet = current_fleet()  # the leader's fleet under leader election, else the one fleet
            if fleet is not None:
                fleet.observe_endpoints(type, body)

    return registry
