"""Is a migration's target serving the traffic it was given? The router's own counters decide (pure).

The router counts, per workload and target (one Envoy cluster each), the requests it sent, the 5xx answers (Envoy's
own 503/504 for a reset, a refused connection or a timeout included), the resets, the 401/403 answers and the
request-time histogram. ``TargetCounters`` holds those counters (cumulative, summed over the router's replicas);
``TargetCounters.since`` gives the requests of one migration step (its traffic window), and ``traffic_problem`` says
whether that window shows a target failing its requests or its latency objective.

A 401/403 from a Cloud Run target counts as a failure: Envoy's ``gcp_authn`` filter fails open, so a request whose
ID token could not be fetched reaches Cloud Run without one and is refused there (the filter keeps no counter of
its own; the router's ``gcp-metadata`` cluster counts the fetches).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from inference_placement.api.spec import TargetName

__all__ = ["TargetCounters", "TrafficGate", "traffic_problem"]


@dataclass(frozen=True)
class TargetCounters:
    """Cumulative counters of the router's cluster for one workload's target, summed over router replicas."""

    requests: float = 0.0
    """Requests sent (``upstream_rq_total``)."""
    server_errors: float = 0.0
    """5xx answers (``upstream_rq_5xx``), the router's own for resets, refused connections and timeouts included."""
    resets: float = 0.0
    """Requests reset by the upstream or the router (``upstream_rq_rx_reset`` + ``upstream_rq_tx_reset``)."""
    auth_refusals: float = 0.0
    """401 and 403 answers: for Cloud Run, requests that went without an ID token (``gcp_authn`` fails open)."""
    latency_buckets: tuple[tuple[float, float], ...] = field(default_factory=tuple)
    """The request-time histogram: (upper bound in milliseconds, requests at or under it), rising."""

    def since(self, earlier: TargetCounters) -> TargetCounters | None:
        """The requests counted after ``earlier``; None when a counter went down (a router replica restarted:
        the window starts again)."""
        pairs = (
            (self.requests, earlier.requests),
            (self.server_errors, earlier.server_errors),
            (self.resets, earlier.resets),
            (self.auth_refusals, earlier.auth_refusals),
        )
        if any(now < before for now, before in pairs):
            return None
        before = dict(earlier.latency_buckets)
        buckets = tuple((bound, count - before.get(bound, 0.0)) for bound, count in self.latency_buckets)
        if any(count < 0 for _, count in buckets):
            return None
        return TargetCounters(
            requests=self.requests - earlier.requests,
            server_errors=self.server_errors - earlier.server_errors,
            resets=self.resets - earlier.resets,
            auth_refusals=self.auth_refusals - earlier.auth_refusals,
            latency_buckets=buckets,
        )

    def __add__(self, other: TargetCounters) -> TargetCounters:
        """Two router replicas' counters as one."""
        buckets = dict(self.latency_buckets)
        for bound, count in other.latency_buckets:
            buckets[bound] = buckets.get(bound, 0.0) + count
        return TargetCounters(
            requests=self.requests + other.requests,
            server_errors=self.server_errors + other.server_errors,
            resets=self.resets + other.resets,
            auth_refusals=self.auth_refusals + other.auth_refusals,
            latency_buckets=tuple(sorted(buckets.items())),
        )

    @property
    def failures(self) -> float:
        """Requests that failed, at least: a reset before the answer is one 503 (counted in both), a reset after
        it none of the 5xx, so the larger of the two; plus the refusals of a missing credential."""
        return max(self.server_errors, self.resets) + self.auth_refusals

    def slower_than(self, objective_seconds: float) -> tuple[float, float] | None:
        """(requests slower than the objective, requests timed), read at the largest bound at or under the
        objective (requests between that bound and the objective count as slow); None without a usable bound."""
        timed = self.latency_buckets[-1][1] if self.latency_buckets else 0.0
        within = [count for bound, count in self.latency_buckets if bound <= objective_seconds * 1000.0]
        if not within or timed <= 0:
            return None
        return timed - within[-1], timed


@dataclass(frozen=True)
class TrafficGate:
    """When a migration's target counts as failing its traffic (``migration.*`` settings)."""

    max_failure_share: float = 0.05
    """Largest share of the target's requests that may fail (5xx, resets, 401/403) in one step's window."""
    max_slow_share: float = 0.25
    """Largest share of the target's requests that may be slower than the workload's latency objective (a cold
    start or two at a small step are expected; a target that is slow for a quarter of its requests is not fit)."""
    min_requests: int = 10
    """Fewest requests in the window before it is judged: fewer say nothing either way (the step goes on)."""


def traffic_problem(
    target: TargetName,
    window: TargetCounters,
    objective_seconds: float,
    gate: TrafficGate,
    *,
    step: str,
) -> str | None:
    """Why the target's traffic in ``window`` (one migration step's requests) is not fit to go on with; None when
    it is, or when too few requests reached it to say."""
    if window.requests < gate.min_requests:
        return None
    failed = min(window.failures, window.requests)
    if failed > gate.max_failure_share * window.requests:
        kinds: Sequence[tuple[str, float]] = (
            ("5xx", window.server_errors),
            ("resets", window.resets),
            ("401/403 (no token?)", window.auth_refusals),
        )
        detail = ", ".join(f"{count:.0f} {kind}" for kind, count in kinds if count)
        return (
            f"{target.value} failed {failed:.0f} of {window.requests:.0f} requests while {step} "
            f"({failed / window.requests:.0%} > {gate.max_failure_share:.0%}: {detail})"
        )
    slow = window.slower_than(objective_seconds)
    if slow is not None and slow[1] >= gate.min_requests and slow[0] > gate.max_slow_share * slow[1]:
        return (
            f"{target.value} answered {slow[0]:.0f} of {slow[1]:.0f} requests slower than the "
            f"{objective_seconds * 1000:.0f} ms objective while {step} "
            f"({slow[0] / slow[1]:.0%} > {gate.max_slow_share:.0%})"
        )
    return None
