"""Where traffic windows come from. One ``fetch`` per tick for ALL workloads (never one query per workload)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from inference_placement.api.workload import WorkloadKey
from inference_placement.policy.decide import TrafficWindow

__all__ = ["MetricsSnapshot", "MetricsSource", "NoMetricsSource"]


@dataclass(frozen=True)
class MetricsSnapshot:
    windows: Mapping[WorkloadKey, TrafficWindow] = field(default_factory=dict)
    """A window per workload that has usable data."""
    problem: str | None = None
    """Why the whole source failed (down, slow, garbage); None when it answered."""
    queries: int = 0
    """How many queries this fetch sent (constant in the number of workloads)."""
    per_workload_problem: Mapping[WorkloadKey, str] = field(default_factory=dict)
    """Why a requested workload has no window although the source answered (no series, stale, garbage values)."""
    gpu_utilization: Mapping[WorkloadKey, float] = field(default_factory=dict)
    """Mean GPU utilisation over the window, 0..1, for workloads whose GPUs report it."""
    in_flight: Mapping[WorkloadKey, float] = field(default_factory=dict)
    """Peak requests in flight at the router over the latest rate window, summed over targets."""
    error_rate: Mapping[WorkloadKey, float] = field(default_factory=dict)
    """Requests per second answered with a 5xx over the latest rate window."""
    overflow_rate: Mapping[WorkloadKey, float] = field(default_factory=dict)
    """Requests per second the router refused at a circuit breaker over the latest rate window."""
    time_to_first_token: Mapping[WorkloadKey, float] = field(default_factory=dict)
    """Time to first token in seconds, where a model server exports it (off by default)."""
    history_loading: bool = False
    """The request-rate history is still being read back after a start (one older span per fetch): the windows'
    ``history_rps`` are shorter than they will be. The controller does not wake a workload at zero on it."""

    def problem_for(self, key: WorkloadKey) -> str | None:
        """Why ``key`` has no usable window: the whole source's problem first, then the workload's own."""
        if self.problem is not None:
            return self.problem
        return self.per_workload_problem.get(key)


class MetricsSource(Protocol):
    async def fetch(
        self, keys: Sequence[WorkloadKey], now: datetime, objective_seconds: Mapping[WorkloadKey, float] | None = None
    ) -> MetricsSnapshot:
        """Windows for ``keys`` ending at ``now``. ``objective_seconds`` gives each workload's latency objective, for
        the share of its requests slower than it (``TrafficWindow.slo_miss_share``); a source may ignore it."""
        ...


class NoMetricsSource:
    """The operator runs without a metrics backend: every workload reports MetricsAvailable=False."""

    async def fetch(
        self, keys: Sequence[WorkloadKey], now: datetime, objective_seconds: Mapping[WorkloadKey, float] | None = None
    ) -> MetricsSnapshot:
        return MetricsSnapshot(problem="no metrics source configured (--prometheus-url)")
