"""A leader whose renews are slower than a retry period but land within the renew deadline keeps the Lease.

Found by ``bench-scale --replicas 2`` at 10,000 workloads: while the leader's first pass wrote 10,000 statuses, a
Lease read + patch took more than the 2 s retry period each try was cut off at; the leader (still the holder on the
apiserver) fenced itself, re-primed its fleet, and did it again every ~20 s, never settling. The tries here stand in
for such an apiserver: the real request code is exercised by ``tests/test_leader_election.py`` on the real one.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

from kubernetes_asyncio import client as k8s

from inference_placement.controller.leader import LeaseElector, LeaseTimings

TIMINGS = LeaseTimings(lease_duration_seconds=6.0, renew_deadline_seconds=4.0, retry_period_seconds=1.0)


async def _client() -> k8s.ApiClient:
    return k8s.ApiClient()  # never sends anything here: the stand-in's tries do not use it


class _SlowApiserver(LeaseElector):
    """Every take or renew succeeds, after ``delay`` seconds (a busy apiserver and event loop)."""

    def __init__(self, delay: float, *, own_thread: bool = False) -> None:
        super().__init__(
            cast(Any, None),
            namespace="ns",
            name="lease",
            identity="me",
            timings=TIMINGS,
            renew_api=_client if own_thread else None,
        )
        self.delay = delay
        self.tries = 0

    async def _try(self, timeout: float | None = None, coordination: k8s.CoordinationV1Api | None = None) -> bool:
        sent = self.clock()
        self.tries += 1
        await asyncio.sleep(self.delay)
        self._renewed_at = sent
        self.holder = self.identity
        return True


def test_renews_slower_than_a_retry_period_but_within_the_deadline_keep_the_lease() -> None:
    async def run() -> None:
        elector = _SlowApiserver(delay=1.8)  # > retry period (1 s), < half the renew deadline (4 s)
        elector._renewed_at = time.monotonic()  # acquired just now
        holding = asyncio.create_task(elector.hold())
        done, _ = await asyncio.wait({holding}, timeout=9.0)
        assert not done, "the leader gave the Lease up although every renew landed within the renew deadline"
        assert elector.leading and elector.tries >= 2
        holding.cancel()
        await cast(Any, elector.coordination).api_client.close()

    asyncio.run(run())


def test_a_renew_that_cannot_land_within_the_deadline_still_loses_the_lease() -> None:
    async def run() -> None:
        elector = _SlowApiserver(delay=30.0)
        elector._renewed_at = time.monotonic()
        started = time.monotonic()
        await asyncio.wait_for(elector.hold(), timeout=15.0)  # returns: lost
        assert not elector.leading
        # fenced by the renew deadline (4 s) plus at most a retry period of sleep and one try's budget, never later
        assert time.monotonic() - started < TIMINGS.renew_deadline_seconds + 2 * TIMINGS.retry_period_seconds + 1
        await cast(Any, elector.coordination).api_client.close()

    asyncio.run(run())


def test_a_leader_whose_event_loop_is_busy_keeps_renewing_from_its_own_thread() -> None:
    """The failure bench-scale found at 10,000 workloads (and at 1,000 on a loaded machine): the fleet's loop was busy
    for longer than the renew deadline; renews waiting on that loop could not be sent, and the leader fenced itself."""

    async def run() -> None:
        elector = _SlowApiserver(delay=0.3, own_thread=True)
        elector._renewed_at = time.monotonic()
        holding = asyncio.create_task(elector.hold())
        await asyncio.sleep(0.2)
        time.sleep(TIMINGS.lease_duration_seconds + 1)  # noqa: ASYNC251 - the point: the loop is busy past the deadline
        assert elector.leading, "renews could not be sent while the event loop was busy"
        tries = elector.tries
        assert tries >= 4
        holding.cancel()
        await asyncio.gather(holding, return_exceptions=True)
        stopped = elector.tries
        await asyncio.sleep(2 * TIMINGS.retry_period_seconds)
        assert elector.tries == stopped, "the renew thread went on after hold() was cancelled"
        await cast(Any, elector.coordination).api_client.close()

    asyncio.run(run())
