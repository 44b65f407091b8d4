"""Wake-up from zero, driven by what the router sees: the activator's held requests, read fleet-wide.

A workload scaled to zero is woken by its first request: the route's composite cluster finds no pod and falls
through to the router's activator (``routing.activator``), which holds the request and counts it. This module reads
those counts from every activator the router runs (its ``/metrics``: one GET per router replica per poll, whatever
the fleet's size; KEDA's HTTP add-on polls its interceptors' queue counts the same way) every
``router.wakePollSeconds`` (0.5 s by default, far below a 30 s tick and below a scrape interval, which a Prometheus
query would add to every wake-up), and tells the fleet:

* ``demand``: a workload has requests held now, or its activator request counter moved since the last poll (a
  request held and answered between two polls): scale it up now;
* ``answered``: the activator replayed requests for it since the last poll, and how long they were held on average
  (its hold-time histogram's sum and count over the poll): the wake latency a woken request paid;
* ``fell_through``: requests its serverless clusters in the router answered since the last poll (Envoy's own
  ``envoy_cluster_upstream_rq_total{target="cloudrun"|"lambda"}``, read from the router's ``/stats/prometheus`` in
  the same poll). While the cluster is at zero and a serverless target answers in its place (serverless as the
  activator: the composite cluster falls through to it, ``status.scaleToZero.answeredBy``), these are the requests
  that found no pod, and they wake the Deployment as held requests do; the reconciler reads them only then (a
  workload served by Cloud Run, or spilling to it, moves the same counter for other reasons).

  A counter first seen is a baseline, not arrivals (the operator started, or the cluster served before), unless an
  earlier poll asked for it and the router had none: Envoy creates a cluster's counters at zero, so everything it
  counted since are arrivals. The router applies a route that newly falls through to a serverless target only after
  such a poll (``ActivatorWatch.poll_now``, ``RouterSync.before_fall_through``): requests that fall through before the
  next poll are not taken for the baseline.

Bad input harms nothing: a poll that fails or returns garbage yields no signal (the previous counts are kept), and a
signal can only ever ask for replicas, never take one away; the activator bounds every hold by itself
(``x-inference-hold-seconds``) whether or not the operator hears of it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from inference_placement.api.workload import WorkloadKey

__all__ = [
    "ActivatorCounts",
    "ActivatorWatch",
    "HttpActivators",
    "WakeSignal",
    "router_stats_filter",
    "parse_activator_metrics",
    "wake_signals",
]

log = logging.getLogger(__name__)

_REQUESTS: Final = "inference_router_activator_requests_total"
_HELD: Final = "inference_router_activator_held_requests"
_HOLD_SUM: Final = "inference_router_activator_hold_seconds_sum"
_HOLD_COUNT: Final = "inference_router_activator_hold_seconds_count"
_ROUTER_REQUESTS: Final = "envoy_cluster_upstream_rq_total"
_ROUTER_TIME_SUM: Final = "envoy_cluster_upstream_rq_time_sum"
_ROUTER_TIME_COUNT: Final = "envoy_cluster_upstream_rq_time_count"
_ROUTER_SERIES: Final = frozenset({_ROUTER_REQUESTS, _ROUTER_TIME_SUM, _ROUTER_TIME_COUNT})
_SERVERLESS_TARGETS: Final = frozenset({"cloudrun", "lambda"})
_STATS_FILTER_MAX_WORKLOADS: Final = 200


def router_stats_filter(workloads: Collection[WorkloadKey]) -> str | None:
    """The ``filter`` of the router's ``/stats/prometheus`` read with a poll: the serverless clusters' request
    counters and request-time histograms of exactly ``workloads`` (those a serverless target answers at zero now:
    ``RouterSync.falling_through``), so a poll reads a few series per workload at zero, not the fleet's; None
    (no read) when there is none. Past ``_STATS_FILTER_MAX_WORKLOADS`` at once, every workload's (a long filter
    would not fit a request line); the fleet ignores what it does not wait for."""
    if not workloads:
        return None
    if len(workloads) > _STATS_FILTER_MAX_WORKLOADS:
        names = r"[^|]+\|[^|]+"
    else:
        names = "(" + "|".join(sorted(re.escape(f"{k.namespace}|{k.name}") for k in workloads)) + ")"
    return rf"^cluster\.ip\|{names}\|(cloudrun|lambda)\.upstream_rq_(total|time)$"


_TIMEOUT: Final = aiohttp.ClientTimeout(total=2)


@dataclass(frozen=True)
class ActivatorCounts:
    """One workload's activator series, summed over the router replicas."""

    requests: float = 0.0
    held: float = 0.0
    hold_sum_seconds: float = 0.0
    hold_count: float = 0.0
    fell_through: float = 0.0
    """Requests the router's serverless clusters of the workload answered (Envoy's counter, summed)."""
    fell_time_sum_ms: float = 0.0
    fell_time_count: float = 0.0
    """Their request-time histogram's sum (milliseconds) and count (requests completed)."""
    routed: bool = False
    """The router had serverless counters of the workload (the three above were read, not defaulted)."""

    def __add__(self, other: ActivatorCounts) -> ActivatorCounts:
        return ActivatorCounts(
            self.requests + other.requests,
            self.held + other.held,
            self.hold_sum_seconds + other.hold_sum_seconds,
            self.hold_count + other.hold_count,
            self.fell_through + other.fell_through,
            self.fell_time_sum_ms + other.fell_time_sum_ms,
            self.fell_time_count + other.fell_time_count,
            self.routed or other.routed,
        )


@dataclass(frozen=True)
class WakeSignal:
    """What the router saw of one workload since the previous poll."""

    held: int = 0
    """Requests held now (waiting for a ready pod)."""
    arrived: int = 0
    """Requests that reached the activator since the previous poll."""
    answered: int = 0
    """Held requests replayed to a ready pod since the previous poll."""
    mean_hold_seconds: float | None = None
    """Their mean hold (the wake latency they paid); None when none was answered."""
    fell_through: int = 0
    """Requests the router's serverless clusters of the workload answered since the previous poll (at zero with a
    serverless target answering: requests that found no pod; see the module's docstring)."""
    fell_answered: int = 0
    """Those requests that completed since the previous poll (the request-time histogram's count) ..."""
    fell_mean_seconds: float | None = None
    """... and their mean time at the router (the latency a request answered at zero paid); None when none."""

    @property
    def demand(self) -> bool:
        return self.held > 0 or self.arrived > 0


def parse_activator_metrics(text: str) -> dict[WorkloadKey, ActivatorCounts]:
    """The activator's ``/metrics`` by workload. Raises ``ValueError`` on anything that is not the exposition format
    or carries a value that is not a finite, non-negative number (garbage is refused whole, never half-read)."""
    counts: dict[WorkloadKey, dict[str, float]] = {}
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as err:  # the parser raises assorted errors on garbage
        raise ValueError(f"not Prometheus exposition: {type(err).__name__}: {err}") from err
    for family in families:
        for sample in family.samples:
            if sample.name in _ROUTER_SERIES:
                # the router's own stats: only the serverless clusters' counters (tagged ``ip|`` clusters)
                if sample.labels.get("target") not in _SERVERLESS_TARGETS:
                    continue
            elif sample.name not in (_REQUESTS, _HELD, _HOLD_SUM, _HOLD_COUNT):
                continue
            namespace, workload = sample.labels.get("namespace"), sample.labels.get("workload")
            value = float(sample.value)
            if not namespace or not workload or not math.isfinite(value) or value < 0:
                raise ValueError(f"bad sample {sample.name}{sample.labels} = {sample.value!r}")
            key = WorkloadKey(namespace, workload)
            per = counts.setdefault(key, {})
            per[sample.name] = per.get(sample.name, 0.0) + value
    return {
        key: ActivatorCounts(
            per.get(_REQUESTS, 0.0),
            per.get(_HELD, 0.0),
            per.get(_HOLD_SUM, 0.0),
            per.get(_HOLD_COUNT, 0.0),
            per.get(_ROUTER_REQUESTS, 0.0),
            per.get(_ROUTER_TIME_SUM, 0.0),
            per.get(_ROUTER_TIME_COUNT, 0.0),
            not _ROUTER_SERIES.isdisjoint(per),
        )
        for key, per in counts.items()
    }


def wake_signals(
    previous: Mapping[WorkloadKey, ActivatorCounts],
    current: Mapping[WorkloadKey, ActivatorCounts],
    counted_from_zero: Collection[WorkloadKey] = (),
) -> dict[WorkloadKey, WakeSignal]:
    """The signals between two polls. A counter that went down (an activator restarted) counts from zero. The
    router's counters of a workload read for the first time are a baseline, unless the workload is in
    ``counted_from_zero`` (an earlier poll asked the router for them and it had none: created since, at zero)."""
    signals: dict[WorkloadKey, WakeSignal] = {}
    for key, now in current.items():
        before = previous.get(key, ActivatorCounts())
        reset = now.requests < before.requests or now.hold_count < before.hold_count
        base = ActivatorCounts() if reset else before
        arrived = round(now.requests - base.requests)
        answered = round(now.hold_count - base.hold_count)
        mean = (now.hold_sum_seconds - base.hold_sum_seconds) / answered if answered > 0 else None
        if not now.routed:
            fell, fell_done, fell_ms = 0, 0, 0.0
        elif not before.routed and key in counted_from_zero:
            # the router created the cluster since a poll found none: its counters started at zero
            fell, fell_done, fell_ms = round(now.fell_through), round(now.fell_time_count), now.fell_time_sum_ms
        elif not before.routed:
            # a baseline: the operator started, or the cluster was serving before it was read
            fell, fell_done, fell_ms = 0, 0, 0.0
        elif now.fell_through < before.fell_through or now.fell_time_count < before.fell_time_count:
            # the router restarted: its counters count from zero
            fell, fell_done, fell_ms = round(now.fell_through), round(now.fell_time_count), now.fell_time_sum_ms
        else:
            fell = round(now.fell_through - before.fell_through)
            fell_done = round(now.fell_time_count - before.fell_time_count)
            fell_ms = now.fell_time_sum_ms - before.fell_time_sum_ms
        fell_mean = max(0.0, fell_ms / 1000.0 / fell_done) if fell_done > 0 else None
        signal = WakeSignal(
            round(now.held), arrived, answered, None if mean is None else max(0.0, mean), fell, fell_done, fell_mean
        )
        if signal.demand or signal.answered or signal.fell_through or signal.fell_answered:
            signals[key] = signal
    return signals


class HttpActivators:
    """Reads activators' ``/metrics`` over HTTP (a router next to the operator: ``router.activatorMetricsUrl``),
    and, when ``stats_url`` names one for the poll's workloads, the router Envoy's serverless counters
    (``router.adminUrl``'s ``/stats/prometheus`` with ``router_stats_filter``)."""

    def __init__(
        self, urls: Sequence[str], stats_url: Callable[[Collection[WorkloadKey]], str | None] | None = None
    ) -> None:
        self.urls = tuple(urls)
        self.stats_url = stats_url
        self._session: aiohttp.ClientSession | None = None

    async def __call__(self, workloads: Collection[WorkloadKey] = ()) -> list[str]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=_TIMEOUT)
        urls = list(self.urls)
        stats = self.stats_url(workloads) if self.stats_url is not None else None
        if stats is not None:
            urls.append(stats)
        return list(await asyncio.gather(*(self._get(self._session, url) for url in urls)))

    @staticmethod
    async def _get(session: aiohttp.ClientSession, url: str) -> str:
        async with session.get(url) as response:
            response.raise_for_status()
            return await response.text()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


@dataclass
class ActivatorWatch:
    """Polls every activator's ``/metrics`` and hands the fleet the signals of each poll."""

    read: Callable[[Collection[WorkloadKey]], Awaitable[Sequence[str]]]
    """The ``/metrics`` texts of the activators running now (one per router replica), and the router's serverless
    counters of the given workloads (``router_stats_filter``)."""
    on_signals: Callable[[dict[WorkloadKey, WakeSignal]], None]
    interval_seconds: float = 0.5
    on_poll: Callable[[bool], None] = lambda ok: None
    """Told each poll's outcome (True: read and parsed)."""
    wanted: Callable[[], Collection[WorkloadKey]] = frozenset
    """The workloads whose router counters a poll reads (``RouterSync.falling_through``)."""
    polls: int = 0
    errors: int = 0
    last_error: str | None = None
    _previous: dict[WorkloadKey, ActivatorCounts] = field(default_factory=dict)
    _unrouted: frozenset[WorkloadKey] = frozenset()
    """Workloads whose router counters the last poll asked for and the router did not have (see the module)."""
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _polling: asyncio.Lock = field(default_factory=asyncio.Lock)

    def stop(self) -> None:
        self._stopping.set()

    async def poll_now(self) -> None:
        """One poll, its signals handed on; never two at once (each compares with the one before). The router
        awaits this before it applies a route that newly falls through to a serverless target."""
        async with self._polling:
            signals = await self.poll_once()
        if signals:
            self.on_signals(signals)

    async def poll_once(self) -> dict[WorkloadKey, WakeSignal] | None:
        """One poll of all activators; None when any of them could not be read or parsed (nothing is concluded
        from a partial or garbled view: the previous counts stay the reference)."""
        self.polls += 1
        wanted = frozenset(self.wanted())
        try:
            texts = await self.read(wanted)
            current: dict[WorkloadKey, ActivatorCounts] = {}
            for text in texts:
                for key, counts in parse_activator_metrics(text).items():
                    current[key] = current.get(key, ActivatorCounts()) + counts
        except (aiohttp.ClientError, TimeoutError, ValueError, OSError) as err:
            self.errors += 1
            message = f"{type(err).__name__}: {err}"
            if message != self.last_error:
                log.warning("activator metrics unreadable (no wake-up signal this poll): %s", message)
            self.last_error = message
            self.on_poll(False)
            return None
        self.last_error = None
        self.on_poll(True)
        signals = wake_signals(self._previous, current, self._unrouted)
        self._previous = current
        # still missing, or asked for the first time and missing: counted from zero once the router has them
        self._unrouted = frozenset(key for key in wanted if not current.get(key, ActivatorCounts()).routed)
        return signals

    async def run(self) -> None:
        while not self._stopping.is_set():
            await self.poll_now()
            try:
                await asyncio.wait_for(self._stopping.wait(), self.interval_seconds)
            except TimeoutError:
                pass
