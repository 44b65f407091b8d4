"""Leader election on a ``coordination.k8s.io/v1`` Lease, with fencing: only the replica that holds the Lease acts.

The algorithm is client-go's (``tools/leaderelection``), with controller-runtime's defaults (lease duration 15 s,
renew deadline 10 s, retry period 2 s): a candidate takes the Lease when it is free or when its record has not
changed for a lease duration *as this candidate observed it* (no clock comparison across machines); the holder
renews it every retry period and gives up when it could not renew for a renew deadline.

Not ``kubernetes_asyncio.leaderelection`` (36.1.0): its leader exposes no "may I still act" check (only callbacks,
run after the renew loop ended), a connection error while the apiserver restarts ends its loop with an exception,
its Lease times are local times labelled UTC, and it never releases the Lease on shutdown.

The holder renews from its own thread, with its own event loop and API client, when given ``renew_api`` (the operator
does): the fleet's event loop may be busy for many seconds at a time (the first pass over 10,000 workloads, a relist
after a takeover), and renews queued behind it made a leader that still held the Lease fence itself, re-prime, and do
it again, never settling (``bench-scale --replicas 2``, ``bench/scale.md``). A paused or partitioned process still
cannot renew: pausing stops every thread.

Fencing: ``fence()`` raises ``NotLeaderError`` unless the last successful renew was *sent* less than a renew deadline
ago (monotonic clock). A standby takes over no earlier than a lease duration after it *saw* that renew land, so a
leader that cannot renew (partitioned, paused, its event loop starved) stops acting at least
``lease duration - renew deadline`` (5 s by default) before anyone else can start. Every write the operator makes
(status, finalizers, Events, cloud and cluster resources, router config) calls ``fence()`` first.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.rest import ApiException

from inference_placement.controller.kube import MERGE_PATCH

__all__ = ["LeaseElector", "LeaseTimings", "NotLeaderError", "default_identity"]

log = logging.getLogger(__name__)


def _micro(moment: datetime) -> str:
    """A Lease's MicroTime: RFC 3339 in UTC with microseconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class NotLeaderError(RuntimeError):
    """This replica does not hold the Lease, or can no longer be sure it does: it must not act."""


@dataclass(frozen=True)
class LeaseTimings:
    lease_duration_seconds: float = 15.0
    """How long a standby waits, from when it saw the Lease last renewed, before it takes the Lease."""
    renew_deadline_seconds: float = 10.0
    """How long the leader keeps trying to renew before it stops acting (and how long one renew lets it act)."""
    retry_period_seconds: float = 2.0
    """How often the leader renews and a standby tries to take the Lease."""

    def __post_init__(self) -> None:
        if not self.lease_duration_seconds > self.renew_deadline_seconds > 1.2 * self.retry_period_seconds > 0:
            raise ValueError(
                "leader election needs lease duration > renew deadline > 1.2 x retry period > 0, got "
                f"{self.lease_duration_seconds:g} / {self.renew_deadline_seconds:g} / {self.retry_period_seconds:g}"
            )


def default_identity() -> str:
    """``$POD_NAME`` (the chart sets it: a restarted container of the same Pod takes its Lease back at once), else
    ``hostname_<random>`` (two processes on one machine are two candidates)."""
    pod = os.environ.get("POD_NAME")
    if pod:
        return pod
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


class LeaseElector:
    """One candidate for one Lease. ``acquire()`` returns once this replica leads; ``hold()`` renews until it
    cannot and then returns (leadership lost); ``release()`` hands the Lease over at shutdown."""

    def __init__(
        self,
        api: k8s.ApiClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        timings: LeaseTimings = LeaseTimings(),
        clock: Callable[[], float] = time.monotonic,
        renew_api: Callable[[], Awaitable[k8s.ApiClient]] | None = None,
    ) -> None:
        self.coordination = k8s.CoordinationV1Api(api)
        self.renew_api = renew_api
        """Makes the API client the holder renews with, in its own thread (None: renew on the caller's loop)."""
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.timings = timings
        self.clock = clock
        self.holder: str | None = None
        """The holder named by the Lease when this replica last read it."""
        self.transitions = 0
        """How many times this replica became the leader."""
        self._renewed_at: float | None = None
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = -math.inf

    # ------------------------------------------------------------------ fencing

    @property
    def leading(self) -> bool:
        """This replica holds the Lease and renewed it (request sent) less than a renew deadline ago."""
        return self._renewed_at is not None and self.clock() - self._renewed_at < self.timings.renew_deadline_seconds

    def fence(self) -> None:
        """Raise ``NotLeaderError`` unless this replica may act now. Called before every write."""
        if not self.leading:
            raise NotLeaderError(f"{self.identity} does not hold the lease {self.namespace}/{self.name}")

    # ------------------------------------------------------------------ the loops

    async def acquire(self) -> None:
        """Try every retry period (with jitter) until this replica holds the Lease."""
        while True:
            if await self._attempt():
                break
            await asyncio.sleep(self.timings.retry_period_seconds * (1 + 0.2 * random.random()))
        self.transitions += 1
        log.info("%s leads (lease %s/%s)", self.identity, self.namespace, self.name)

    async def hold(self) -> None:
        """Renew every retry period; return when a renew deadline passed without a successful renew. With
        ``renew_api``, the renews run in a thread of their own; cancelling ``hold`` stops it (and waits for it, so
        that no renew lands after a ``release``)."""
        if self.renew_api is None:
            await self._hold(self.coordination, None)
            return
        stop = threading.Event()
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        make_api = self.renew_api

        async def in_thread() -> None:
            api = await make_api()
            try:
                await self._hold(k8s.CoordinationV1Api(api), stop)
            finally:
                await api.close()

        def run() -> None:
            try:
                asyncio.run(in_thread())
                done.set_result(None)
            except BaseException as err:  # handed to the awaiting task
                done.set_exception(err)

        threading.Thread(target=run, name=f"lease-renew-{self.name}", daemon=True).start()
        waiting = asyncio.wrap_future(done)
        try:
            await asyncio.shield(waiting)
        finally:
            stop.set()
            if not waiting.done():
                await asyncio.wait(
                    {waiting}, timeout=self.timings.renew_deadline_seconds + 2 * self.timings.retry_period_seconds
                )

    async def _hold(self, coordination: k8s.CoordinationV1Api, stop: threading.Event | None) -> None:
        while True:
            # a retry period after the last renew was sent, not after it came back: a slow renew leaves the next
            # one the rest of the deadline
            since = 0.0 if self._renewed_at is None else self.clock() - self._renewed_at
            await asyncio.sleep(max(0.0, self.timings.retry_period_seconds - since))
            while self.leading:
                if stop is not None and stop.is_set():
                    return
                # each try may take what is left of the renew deadline, not just a retry period: on a busy
                # apiserver and event loop (a leader's first pass over 10,000 workloads) a read + patch took > 2 s
                # and a leader that still held the Lease fenced itself, re-primed, and did so again (bench-scale)
                if await self._attempt(self._renew_budget(), coordination):
                    break
                await asyncio.sleep(self.timings.retry_period_seconds)
            if not self.leading:
                self._renewed_at = None
                log.warning(
                    "%s lost the lease %s/%s (holder now: %s); it stops acting",
                    self.identity,
                    self.namespace,
                    self.name,
                    self.holder or "unknown",
                )
                return

    async def release(self) -> None:
        """Give the Lease up (holder cleared, 1 s duration) so a standby takes over within a retry period."""
        if self._renewed_at is None:
            return
        self._renewed_at = None
        try:
            lease = await self.coordination.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=self.timings.retry_period_seconds
            )
            if lease.spec is None or lease.spec.holder_identity != self.identity:
                return
            released = {"holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": _micro(datetime.now(UTC))}
            await self._patch(lease, released)
            log.info("%s released the lease %s/%s", self.identity, self.namespace, self.name)
        except Exception as err:  # best effort: the Lease expires anyway
            log.warning("could not release the lease %s/%s: %s", self.namespace, self.name, err)

    # ------------------------------------------------------------------ one try

    def _renew_budget(self) -> float:
        """How long a renew may take: until the renew deadline (fencing counts from when the last successful renew
        was sent, so a slow renew never extends what was granted), at least a retry period."""
        if self._renewed_at is None:
            return self.timings.retry_period_seconds
        left = self.timings.renew_deadline_seconds - (self.clock() - self._renewed_at)
        return max(self.timings.retry_period_seconds, left)

    async def _attempt(self, timeout: float | None = None, coordination: k8s.CoordinationV1Api | None = None) -> bool:
        """Take or renew the Lease once, within ``timeout`` (default a retry period); True when this replica holds
        it now. Errors count as a failed try."""
        budget = self.timings.retry_period_seconds if timeout is None else timeout
        try:
            return await asyncio.wait_for(self._try(budget, coordination), timeout=budget)
        except ApiException as err:
            if err.status != 409:  # 409: another candidate wrote first
                log.warning("lease %s/%s: HTTP %s %s", self.namespace, self.name, err.status, err.reason)
        except Exception as err:  # the apiserver is unreachable or slow: try again next period
            log.warning("lease %s/%s: %s: %s", self.namespace, self.name, type(err).__name__, err)
        return False

    async def _patch(
        self,
        lease: k8s.V1Lease,
        spec: dict[str, Any],
        timeout: float | None = None,
        coordination: k8s.CoordinationV1Api | None = None,
    ) -> None:
        """Merge-patch the Lease's spec onto the version just read (``resourceVersion``): of two candidates racing
        for it, one gets 409. A patch, not an update: the chart's RBAC grants no ``update`` anywhere."""
        body = {"metadata": {"resourceVersion": lease.metadata.resource_version}, "spec": spec}
        await (coordination or self.coordination).patch_namespaced_lease(
            self.name,
            self.namespace,
            body,
            _content_type=MERGE_PATCH,  # type: ignore[call-arg]  # accepted by the client, not in its stubs
            _request_timeout=self.timings.retry_period_seconds if timeout is None else timeout,
        )

    async def _try(self, timeout: float | None = None, coordination: k8s.CoordinationV1Api | None = None) -> bool:
        api = coordination or self.coordination
        sent = self.clock()  # before anything is sent: the deadline counts from the earliest the renew can land
        now = datetime.now(UTC)
        duration = math.ceil(self.timings.lease_duration_seconds)
        try:
            lease = await api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as err:
            if err.status != 404:
                raise
            spec = k8s.V1LeaseSpec(
                holder_identity=self.identity,
                lease_duration_seconds=duration,
                acquire_time=now,
                renew_time=now,
                lease_transitions=0,
            )
            body = k8s.V1Lease(metadata=k8s.V1ObjectMeta(name=self.name, namespace=self.namespace), spec=spec)
            await api.create_namespaced_lease(self.namespace, body)
            self.holder = self.identity
            self._renewed_at = sent
            return True
        spec = lease.spec or k8s.V1LeaseSpec()
        record = (spec.holder_identity, spec.renew_time, spec.lease_duration_seconds, lease.metadata.resource_version)
        if record != self._observed:
            self._observed = record
            self._observed_at = self.clock()
        self.holder = spec.holder_identity
        held_by_other = bool(spec.holder_identity) and spec.holder_identity != self.identity
        expires = self._observed_at + float(spec.lease_duration_seconds or duration)
        if held_by_other and self.clock() < expires:
            return False
        change: dict[str, Any] = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": duration,
            "renewTime": _micro(now),
        }
        if spec.holder_identity != self.identity:
            change["acquireTime"] = _micro(now)
            change["leaseTransitions"] = (spec.lease_transitions or 0) + 1
        await self._patch(lease, change, timeout, api)
        self.holder = self.identity
        self._renewed_at = sent
        return True
