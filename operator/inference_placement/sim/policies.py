"""``ours`` in the simulator: the controller's own ``policy.decide`` called once per workload per tick.

This adapter only turns what the simulated metrics show into a ``TrafficWindow`` and a ``PlacementState`` (as the
controller does from Prometheus and the workload's status) and the ``Decision`` into platform controls. It makes no
decision of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from inference_placement.api.spec import InferenceWorkloadSpec, TargetName
from inference_placement.policy.capacity import ClusterCapacity
from inference_placement.policy.decide import Decision, PlacementState, TrafficWindow, decide
from inference_placement.policy.economics import TargetEconomics
from inference_placement.policy.idle_gaps import idle_gap_signature
from inference_placement.policy.price_book import PriceBook
from inference_placement.sim.simulator import Control, Observation, SimWorkload

__all__ = [
    "DEFAULT_WINDOW_SECONDS",
    "HISTORY_SECONDS",
    "OursPolicy",
    "control_from_decision",
    "window_from_observation",
]

DEFAULT_WINDOW_SECONDS = 3600.0
"""How much history the simulated metrics source hands the policy: the last hour of per-step samples (one
batched Prometheus range query per signal per tick for the whole fleet stays affordable at that length)."""


HISTORY_SECONDS = 86400.0
"""How much rate history the simulated metrics source hands the policy for its idle-gap statistics: a day (one
range query of one signal; the cost model itself reads only the window)."""


def window_from_observation(
    obs: Observation, window_seconds: float, history_seconds: float = HISTORY_SECONDS
) -> TrafficWindow | None:
    if obs.step == 0:
        return None
    steps = max(1, int(window_seconds // obs.step_seconds))
    history_steps = max(steps, int(history_seconds // obs.step_seconds))
    history = obs.requests_per_step[-history_steps:] / obs.step_seconds
    counts = obs.requests_per_step[-steps:]
    total = float(counts.sum())
    service = float(obs.service_sum_per_step[-steps:].sum()) / total if total > 0 else None
    missed = float(obs.misses_per_step[-steps:].sum()) / total if total > 0 else None
    peaks = obs.peak_in_flight_per_step[-steps:]
    rps = counts / obs.step_seconds
    return TrafficWindow(
        step_seconds=obs.step_seconds,
        rps=tuple(rps.tolist()),
        latency_p99_seconds=obs.latency_p99_seconds,
        end=obs.now,
        service_seconds=service,
        warm_latency_seconds=obs.warm_latency_seconds,
        slo_miss_share=missed,
        slo_misses=tuple(obs.misses_per_step[-steps:].tolist()),
        peak_in_flight=tuple(peaks.tolist()),
        history_rps=tuple(history.tolist()),
        history_slo_misses=float(obs.misses_per_step[-history_steps:].sum()),
    )


def control_from_decision(decision: Decision) -> Control | None:
    target = decision.target
    if target is None:
        return None
    if target is TargetName.CLUSTER:
        return Control(target, replicas=decision.replicas)
    return Control(target, warm_floor=decision.replicas, warm_pings=decision.keep_warm_instances)


class OursPolicy:
    name = "ours"
    observes_in_flight = True
    """The simulator tracks the per-step in-flight peak only for policies that read it."""

    def __init__(self, window_seconds: float = DEFAULT_WINDOW_SECONDS, capacity: ClusterCapacity | None = None):
        self.window_seconds = window_seconds
        self.capacity = capacity or ClusterCapacity()
        self._spec: InferenceWorkloadSpec | None = None
        self._price_book: PriceBook | None = None
        self.decisions: list[Decision] = []
        self.keep_decisions = False
        self.calls = 0
        self.reused = 0
        self._last_key: tuple[object, ...] | None = None
        self._last_control: Control | None = None

    def reset(self, workload: SimWorkload, economics: dict[TargetName, TargetEconomics], price_book: PriceBook) -> None:
        self._spec = workload.spec
        self._price_book = price_book
        self.decisions = []
        self._last_key = None
        self._last_control = None

    def _key(self, window: TrafficWindow | None, obs: Observation) -> tuple[object, ...] | None:
        """What the decision's controls depend on, when that excludes the clock; None when it does not.

        ``decide`` reads the clock for staleness (the simulated metrics are never stale), the cooldown and the
        month's end (the budget). Without a budget and outside a cooldown, two ticks with the same window and the
        same placement get the same decision, so the previous controls are reused instead of deciding again.
        """
        assert self._spec is not None
        if window is None or self._spec.budget.monthly_usd is not None or obs.migrating:
            return None
        finished = obs.last_migration_finished_at
        if finished is not None and (obs.now - finished).total_seconds() < self._spec.placement.cooldown_seconds:
            return None
        return (
            window.rps,
            window.latency_p99_seconds,
            window.service_seconds,
            window.warm_latency_seconds,
            window.slo_miss_share,
            window.slo_misses,
            window.peak_in_flight,
            idle_gap_signature(np.asarray(window.history_rps)) if window.history_rps is not None else None,
            window.history_slo_misses,
            obs.placement,
            finished is None,
        )

    def tick(self, obs: Observation) -> Sequence[Control]:
        assert self._spec is not None and self._price_book is not None
        window = window_from_observation(obs, self.window_seconds)
        key = self._key(window, obs)
        if key is not None and key == self._last_key and not self.keep_decisions:
            self.reused += 1
            return [self._last_control] if self._last_control is not None else []
        state = PlacementState(
            current=obs.placement,
            last_migration_finished_at=obs.last_migration_finished_at,
            month_to_date_usd=obs.month_to_date_usd,
        )
        decision = decide(self._spec, window, state, self._price_book, self.capacity, obs.now)
        self.calls += 1
        if self.keep_decisions:
            self.decisions.append(decision)
        control = control_from_decision(decision)
        self._last_key = key
        self._last_control = control
        return [control] if control is not None else []
