"""Keep serverless instances warm with pings, when the policy decided that is cheaper than a cold start.

``Decision.keep_warm_instances`` says how many instances of a serverless placement should stay warm and
``ping_interval_seconds`` how often (a little inside the platform's keep-alive). The pinger sends that many
concurrent ``GET <healthPath>`` requests through the workload's stable endpoint (the router, so Cloud Run gets its ID
token and Lambda its signed invocation exactly like client traffic), first at once and then every interval. Each
ping carries ``PING_HEADER``: the router sends it through its own warm clusters, so pings are not measured as the
workload's traffic (they would inflate its rate and requests in flight, and with them the sizing that decided them).
Concurrent, because one request keeps only one instance warm. A failed ping is counted and retried at the next
interval: pings are an optimisation, never a reason to move a workload.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from inference_placement.api.workload import WorkloadKey
from inference_placement.controller.log_context import workload_fields
from inference_placement.routing.envoy import PING_HEADER

__all__ = ["PingPlan", "WarmPinger"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PingPlan:
    instances: int
    interval_seconds: float
    path: str


class WarmPinger:
    def __init__(
        self,
        router_url: str,
        *,
        clock: Callable[[], float] | None = None,
        timeout_seconds: float = 30.0,
        retry_seconds: float = 15.0,
        on_ping: Callable[[str], None] | None = None,
    ) -> None:
        self.router_url = router_url.rstrip("/")
        self._clock = clock or (lambda: asyncio.get_running_loop().time())
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._retry_seconds = retry_seconds
        self._plans: dict[WorkloadKey, PingPlan] = {}
        self._due: dict[WorkloadKey, float] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._on_ping = on_ping or (lambda result: None)
        self.sent = 0
        self.failed = 0

    def plan(self, key: WorkloadKey, plan: PingPlan | None) -> None:
        """Set (or clear, with None) the ping plan of one workload; a new or changed plan pings at once."""
        if plan is None or plan.instances <= 0:
            self._plans.pop(key, None)
            self._due.pop(key, None)
            return
        if self._plans.get(key) != plan:
            self._plans[key] = plan
            self._due[key] = 0.0
            self._wake.set()

    def planned(self, key: WorkloadKey) -> PingPlan | None:
        return self._plans.get(key)

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        async with aiohttp.ClientSession(timeout=self._timeout) as session:
            while not self._stopping:
                now = self._clock()
                due = [k for k, at in self._due.items() if at <= now]
                for key in due:
                    plan = self._plans[key]
                    self._due[key] = now + plan.interval_seconds
                if due:
                    await asyncio.gather(*(self._ping(session, key, self._plans[key]) for key in due))
                wait = min((at for at in self._due.values()), default=now + 60.0) - self._clock()
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=max(0.05, min(wait, 60.0)))
                except TimeoutError:
                    pass

    async def _ping(self, session: aiohttp.ClientSession, key: WorkloadKey, plan: PingPlan) -> None:
        host = f"{key.name}.{key.namespace}.svc"

        async def one() -> bool:
            try:
                async with session.get(
                    f"{self.router_url}{plan.path}", headers={"Host": host, PING_HEADER: "1"}
                ) as response:
                    await response.read()
                    return response.status < 500
            except (aiohttp.ClientError, TimeoutError):
                return False

        results = await asyncio.gather(*(one() for _ in range(plan.instances)))
        ok = sum(results)
        self.sent += len(results)
        self.failed += len(results) - ok
        for result in results:
            self._on_ping("ok" if result else "failed")
        if ok < len(results):
            log.warning(
                "%s: %d of %d warm-up pings failed; retried in %.0fs",
                key,
                len(results) - ok,
                len(results),
                plan.interval_seconds,
                extra=workload_fields(key),
            )
