"""Serverless cold starts measured at the router: the first request after an idle gap longer than the platform
keeps an idle instance, less the target's warm latency. Pure: counters and times in, a sample out.

What each platform exposes, and why the router's view is the one used (docs/price-book.md, "Cold starts and
migration leads"):

* AWS Lambda writes ``Init Duration`` on the ``REPORT`` line of an invocation that initialized a new execution
  environment (CloudWatch Logs; Lambda Insights' ``init_duration``). It is the Init phase only (extensions, runtime,
  the function's static code), not the Function URL front end or the placement of the environment, and reading it
  per function is one Logs Insights query per function group, i.e. a query per workload.
* Cloud Run exports ``run.googleapis.com/container/startup_latencies`` (Cloud Monitoring, a distribution per
  revision: until the container's startup probe passed) and writes request logs with the latency of every
  request. Again per service, and a container start without the first request's queueing.
* The router (Envoy) sees every request the client sees, on both clouds alike: per (workload, target) cluster it
  counts requests (``upstream_rq_total``) and records their latency (``upstream_rq_time``, whose detailed form on
  ``/stats?histogram_buckets=detailed`` has the native log-linear bins, 2 significant digits, so one request's
  latency is known within a few percent). One read per router replica per tick covers the whole fleet.

The measurement: an instance is gone once the target has had no request for longer than the platform keeps an
idle one (``keep_alive_idle_seconds`` in the price book: Cloud Run documents "up to 15 minutes"; Lambda calls
the period non-deterministic, and the book's 10 minutes is the commonly observed figure). So when a target's
request counter moves after such a gap, the slowest request completed since the read before it is a request that
waited for a cold start (the first one, or one queued behind it), and its latency less the latency of that
target's warm requests (the median of the last warm requests the same router measured) is one cold start.

Warm pings (``controller/warm_pinger.py``) keep instances warm through the router's separate ``warm|...``
clusters: they do not count as the workload's traffic, but they are activity of the target here, so a request
after a gap with pings in it is not a cold sample. A first request after a gap that is not slower than a warm one
by more than ``SERVED_WARM_SECONDS`` (or its own warm latency) was served by an instance the platform kept longer
(Lambda's lifetime is not a maximum) or by minimum instances: not a sample either.

Bounded by design: a sample waits for its first warm latency (never guessed); a request that never completes
within an idle lifetime of its arrival is dropped; a counter that went down (a router restart) starts over.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "SERVED_WARM_SECONDS",
    "FirstRequestSample",
    "FirstRequestState",
    "LatencyBin",
    "ServerlessReading",
    "observe_first_request",
    "slowest_seconds",
    "wants_bins",
]

SERVED_WARM_SECONDS = 0.1
"""A first request after an idle gap at most this much (or its own warm latency, when larger) slower than the
target's warm requests was served warm: no cold start on either platform takes less (a Lambda Init of the
smallest function, a Cloud Run container start), while a warm request's latency varies by about its own size."""

LatencyBin = tuple[float, float, float]
"""(lower bound ms, width ms, requests) of one bin of Envoy's detailed request-time histogram (cumulative)."""


@dataclass(frozen=True)
class ServerlessReading:
    """One read of a serverless target's router counters, summed over the router's replicas."""

    requests: float = 0.0
    """The target cluster's ``upstream_rq_total`` (the workload's own requests, spilled ones included)."""
    pings: float = 0.0
    """The target's warm cluster's ``upstream_rq_total`` (the operator's keep-warm pings)."""
    in_flight: float = 0.0
    """Both clusters' ``upstream_rq_active`` (a request or ping in flight keeps an instance busy)."""
    bins: tuple[LatencyBin, ...] | None = None
    """The target cluster's ``upstream_rq_time`` totals in detailed bins; None = not read this time (they are read
    only for a target that ``wants_bins``: the payload grows with the targets crossing an idle gap, not the fleet)."""


def _delta(now: Iterable[LatencyBin], before: Iterable[LatencyBin]) -> list[LatencyBin]:
    """The bins of the requests recorded between two readings (cumulative counts subtracted per bin)."""
    old: dict[tuple[float, float], float] = {}
    for lower, width, count in before:
        old[(lower, width)] = old.get((lower, width), 0.0) + count
    new: dict[tuple[float, float], float] = {}
    for lower, width, count in now:
        new[(lower, width)] = new.get((lower, width), 0.0) + count
    return sorted((lo, w, c - old.get((lo, w), 0.0)) for (lo, w), c in new.items() if c - old.get((lo, w), 0.0) > 0)


def slowest_seconds(bins: Iterable[LatencyBin]) -> float | None:
    """The latency of the slowest request in ``bins`` (its bin's middle), seconds; None without requests."""
    top = max(((lo, w) for lo, w, c in bins if c > 0), default=None)
    return None if top is None else (top[0] + top[1] / 2.0) / 1000.0


def _median_seconds(bins: Iterable[LatencyBin]) -> float | None:
    ordered = sorted((lo, w, c) for lo, w, c in bins if c > 0)
    total = sum(c for _, _, c in ordered)
    if total <= 0:
        return None
    seen = 0.0
    for lower, width, count in ordered:
        seen += count
        if seen >= total / 2.0:
            return (lower + width / 2.0) / 1000.0
    return None  # unreachable: the loop ends at the total


@dataclass(frozen=True)
class FirstRequestSample:
    """One cold start of a serverless target measured at the router."""

    latency_seconds: float
    """The slowest request completed in the first read interval after the idle gap."""
    warm_seconds: float
    """The median latency of the target's warm requests at the router."""
    idle_seconds: float
    """The gap without requests or pings before it (at least)."""

    @property
    def cold_start_seconds(self) -> float:
        return self.latency_seconds - self.warm_seconds

    @property
    def served_warm(self) -> bool:
        """Not slower than a warm request by more than the noise of one (see ``SERVED_WARM_SECONDS``)."""
        return self.cold_start_seconds <= max(SERVED_WARM_SECONDS, self.warm_seconds)


@dataclass(frozen=True)
class FirstRequestState:
    """What the operator keeps in memory per (workload, serverless target) between reads (lost on a restart: the
    next gap is measured from the first read after it, so a restart delays a sample and never invents one)."""

    requests: float
    pings: float
    read_at: float
    """Seconds (any clock the caller keeps monotone) of the last read."""
    active_at: float
    """The read at which a request, a ping or one in flight last showed up (the first read, when none has)."""
    baseline: tuple[LatencyBin, ...] | None = None
    """The latency bins read while the target had been idle for at least the lifetime (before the next arrival)."""
    arrived_at: float | None = None
    """Requests arrived after that gap at this read; their latency is not recorded yet."""
    idle_seconds: float = 0.0
    cold_latency_seconds: float | None = None
    """A first request's latency waiting for a warm latency of the target."""
    last_bins: tuple[LatencyBin, ...] | None = None
    """The bins of the last read that had them while a warm latency is due (the warm requests since are their
    difference); None otherwise, so an idle target keeps only its baseline."""
    warm_seconds: float | None = None
    """Median latency of the target's warm requests the router recorded last."""
    warm_due: bool = False
    """Refresh ``warm_seconds`` at the next read with requests (after a cold request was measured)."""
    warm_arrived_at: float | None = None
    """Requests arrived while a warm latency is due, at this read: the bins are read until they are recorded
    (Envoy merges latencies at its stats flush, seconds after the counter moved), for at most the lifetime."""


def _activity(state: FirstRequestState, reading: ServerlessReading) -> tuple[bool, bool]:
    """(requests arrived, any activity: requests, pings or some in flight) since ``state``'s read."""
    arrived = reading.requests > state.requests
    return arrived, arrived or reading.pings > state.pings or reading.in_flight > 0


def wants_bins(
    state: FirstRequestState | None, reading: ServerlessReading, now: float, idle_lifetime_seconds: float
) -> bool:
    """Whether the caller should read this target's latency bins now (given the counters it just read): to take a
    baseline once the target has been idle for the lifetime, while requests that arrived after such a gap are not
    recorded, and while a warm latency is due."""
    if state is None or _reset(state, reading):
        return False
    arrived, active = _activity(state, reading)
    if state.arrived_at is not None or (state.baseline is not None and arrived):
        return True
    if state.cold_latency_seconds is not None or state.warm_due:
        waiting = state.warm_arrived_at is not None and now - state.warm_arrived_at <= idle_lifetime_seconds
        return arrived or waiting
    return state.baseline is None and not active and now - state.active_at >= idle_lifetime_seconds


def _reset(state: FirstRequestState, reading: ServerlessReading) -> bool:
    """The router restarted (a counter went down: its counters count from zero)."""
    return reading.requests < state.requests or reading.pings < state.pings


def _sample(latency_seconds: float, warm_seconds: float, idle_seconds: float) -> FirstRequestSample | None:
    """The sample, or None when the first request was served warm (or the figures are not finite)."""
    sample = FirstRequestSample(latency_seconds, warm_seconds, idle_seconds)
    if sample.served_warm or not math.isfinite(sample.cold_start_seconds):
        return None
    return sample


def observe_first_request(
    state: FirstRequestState | None, reading: ServerlessReading, now: float, idle_lifetime_seconds: float
) -> tuple[FirstRequestState, FirstRequestSample | None]:
    """The state after ``reading`` (read at ``now``; its ``bins`` read when ``wants_bins`` said so) and the cold
    start it completes, if any. ``idle_lifetime_seconds``: how long the platform keeps an idle instance (the price
    book's ``keep_alive_idle_seconds``)."""
    if state is None or _reset(state, reading):
        warm = state.warm_seconds if state is not None else None
        return FirstRequestState(
            reading.requests, reading.pings, now, now, last_bins=reading.bins, warm_seconds=warm
        ), None
    arrived, active = _activity(state, reading)
    pinged = reading.pings > state.pings
    bins = reading.bins
    baseline, arrived_at, idle = state.baseline, state.arrived_at, state.idle_seconds
    cold, warm, warm_due, last_bins = state.cold_latency_seconds, state.warm_seconds, state.warm_due, state.last_bins
    if baseline is not None and arrived_at is None and active:
        if arrived and not pinged:
            arrived_at, idle = now, state.read_at - state.active_at
        else:
            baseline = None  # a ping (or anything but a clean arrival) ended the gap: the instance may be warm
    captured = False
    if arrived_at is not None and baseline is not None and bins is not None:
        first = _delta(bins, baseline)
        if first:
            cold, warm_due, captured = slowest_seconds(first), True, True
            baseline, arrived_at = None, None
    if arrived_at is not None and now - arrived_at > idle_lifetime_seconds:
        baseline, arrived_at = None, None  # never recorded: no sample
    warm_arrived_at = state.warm_arrived_at
    if (cold is not None or warm_due) and not captured and arrived and warm_arrived_at is None:
        warm_arrived_at = now
    if bins is not None and last_bins is not None and not captured and arrived_at is None:
        median = _median_seconds(_delta(bins, last_bins))
        if median is not None:
            warm, warm_due, warm_arrived_at = median, False, None
    if warm_arrived_at is not None and now - warm_arrived_at > idle_lifetime_seconds:
        warm_arrived_at = None  # never recorded: wait for the next requests
    if (
        bins is not None
        and baseline is None
        and arrived_at is None
        and not active
        and now - state.active_at >= idle_lifetime_seconds
    ):
        baseline = bins  # idle for the lifetime: the next request needs a new instance
    if bins is not None:
        last_bins = bins
    if cold is None and not warm_due:
        last_bins = None  # no warm latency due: nothing to keep (the next baseline is read when idle again)
    sample = None
    if cold is not None and warm is not None and (captured or not warm_due):
        # just measured with the warm latency known (refreshed at the next requests), or waited for a fresh one
        sample, cold = _sample(cold, warm, idle), None
    active_at = now if active else state.active_at
    out = FirstRequestState(
        reading.requests,
        reading.pings,
        now,
        active_at,
        baseline,
        arrived_at,
        idle,
        cold,
        last_bins,
        warm,
        warm_due,
        warm_arrived_at,
    )
    return out, sample
