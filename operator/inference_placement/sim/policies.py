"""``ours`` in the simulator: the controller's own ``policy.decide`` called once per workload per tick.

This adapter only turns what the simulated metrics show into a ``TrafficWindow`` and a ``PlacementState`` (as the
controller does from Prometheus and the workload's status) and the ``Decision`` into platform controls. It makes no
decision of its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from inference_placement.api.spec import SERVERLESS, InferenceWorkloadSpec, TargetName
from inference_placement.api.status import BudgetStatus
from inference_placement.policy.actuation import Actuators, WakeTimings, target_settings, zero_allowed, zero_answer
from inference_placement.policy.budget import accrue_spend
from inference_placement.policy.capacity import ClusterCapacity
from inference_placement.policy.decide import (
    Decision,
    PlacementState,
    TrafficWindow,
    decide,
    history_fingerprint,
    reads_history,
)
from inference_placement.policy.economics import TargetEconomics
from inference_placement.policy.observation import LIVE_OBSERVATION, ObservedSignals
from inference_placement.policy.price_book import PriceBook
from inference_placement.sim.aggregate import demand_peak
from inference_placement.sim.platforms import Activator
from inference_placement.sim.simulator import FIRST_TOKEN_BOUNDS_SECONDS, Control, FloatArray, Observation, SimWorkload
from inference_placement.sim.traces import Requests, StepRequests

__all__ = [
    "DEFAULT_WINDOW_SECONDS",
    "ClairvoyantOursPolicy",
    "OursPolicy",
    "bucket_quantile",
    "demand_peaks",
    "control_from_decision",
    "service_sums",
    "window_from_observation",
]

DEFAULT_WINDOW_SECONDS = LIVE_OBSERVATION.window_seconds
"""How much history ``ours`` is shown: what the live operator fetches with its default settings."""


def _coarsened(values: FloatArray, factor: int) -> FloatArray:
    """Sums of ``factor`` consecutive steps, ending with the newest (a leading partial group is dropped)."""
    if factor <= 1:
        return values
    whole = (values.size // factor) * factor
    summed: FloatArray = values[values.size - whole :].reshape(-1, factor).sum(axis=1)
    return summed


def _trailing_mean(values: FloatArray, width: int) -> FloatArray:
    """Mean of each value and the ``width - 1`` before it (fewer at the start: a rate over a window that reaches
    back before the first step counts nothing there); ``width <= 1``: the values themselves."""
    if width <= 1 or values.size == 0:
        return values
    sums = np.cumsum(values)
    shifted = np.concatenate((np.zeros(width), sums[:-width])) if sums.size > width else np.zeros(sums.size)
    mean: FloatArray = (sums - shifted[: sums.size]) / width
    return mean


def bucket_quantile(q: float, bounds: FloatArray, cumulative: FloatArray) -> float | None:
    """Prometheus' ``histogram_quantile``: ``cumulative`` counts at or under each of ``bounds`` (ascending), then
    the ``+Inf`` bucket's; linear within the bucket the rank falls in (from 0 in the first), the largest finite
    bound when it falls in ``+Inf``; None without a count."""
    total = float(cumulative[-1])
    if total <= 0:
        return None
    rank = q * total
    j = int(np.searchsorted(cumulative[:-1], rank, side="left"))
    if j >= bounds.size:
        return float(bounds[-1])
    below = float(cumulative[j - 1]) if j > 0 else 0.0
    start = float(bounds[j - 1]) if j > 0 else 0.0
    inside = float(cumulative[j]) - below
    return start + (float(bounds[j]) - start) * ((rank - below) / inside if inside > 0 else 1.0)


def _median_first_token(obs: Observation, trace_steps: int) -> float | None:
    """What the live ``warm_latency`` template reads for a workload whose objective bounds the first token: the
    median of the router's first-token histogram over the window (None for any other workload, as live: its
    histogram has no series for it)."""
    per_step = obs.first_token_le_per_step
    if per_step is None or per_step.shape[0] == 0:
        return None
    return bucket_quantile(0.5, FIRST_TOKEN_BOUNDS_SECONDS, per_step[-trace_steps:].sum(axis=0))


def window_from_observation(
    obs: Observation, signals: ObservedSignals = LIVE_OBSERVATION, window_seconds: float | None = None
) -> TrafficWindow | None:
    """What the live metrics source would show at this step: the signals it measures, at its resolution (each
    step's rate averaged over the rate window, as ``rate()`` does).

    ``window_seconds`` overrides ``signals.window_seconds`` (the benchmark's knob). Steps finer than the live
    step are summed up to it; a coarser trace step is used as it is (the finest the trace can show)."""
    if obs.step == 0:
        return None
    factor = max(1, round(signals.step_seconds / obs.step_seconds))
    step = obs.step_seconds * factor
    requests = _coarsened(obs.requests_per_step, factor)
    if requests.size == 0:
        return None
    span = signals.window_seconds if window_seconds is None else window_seconds
    steps = max(1, int(span // step))
    counts = requests[-steps:]
    total = float(counts.sum())
    # each live point is the rate over the rate window ending at it, not over its own step alone
    rate_steps = round(signals.rate_window_seconds / step)
    rates = _trailing_mean(requests, rate_steps)[-steps:] / step
    service = None
    service_sums = _coarsened(obs.service_sum_per_step, factor)
    if signals.service_seconds and total > 0:
        service = float(service_sums[-steps:].sum()) / total
    service_per_step = None
    if signals.service_per_step:
        # each point the mean over the rate window ending at it, as rate(sum) / rate(count) reads it; 0: none
        counts_over = _trailing_mean(requests, rate_steps)[-steps:]
        sums_over = _trailing_mean(service_sums, rate_steps)[-steps:]
        with np.errstate(divide="ignore", invalid="ignore"):
            service_per_step = tuple(np.where(counts_over > 0, sums_over / counts_over, 0.0).tolist())
    misses = _coarsened(obs.misses_per_step, factor)
    recent_steps = max(1, round(signals.slo_miss_window_seconds / step))
    recent = float(requests[-recent_steps:].sum())
    missed = float(misses[-recent_steps:].sum()) / recent if recent > 0 else None
    peaks = None
    if signals.peak_in_flight:
        raw = obs.peak_in_flight_per_step
        whole = (raw.size // factor) * factor
        peaks = tuple(raw[raw.size - whole :].reshape(-1, factor).max(axis=1)[-steps:].tolist()) if whole else None
    history_rps = history_misses = history_step = None
    if signals.history_seconds > 0:
        # the live source keeps the history at its own coarse step, summed from the trace's steps
        history_factor = max(1, round(signals.history_step_seconds / step)) if signals.history_step_seconds else 1
        history_step = step * history_factor
        history_requests = _coarsened(requests, history_factor)
        history_steps = max(1, int(signals.history_seconds // history_step))
        history_rps = tuple((history_requests[-history_steps:] / history_step).tolist()) or None
        history_misses = float(_coarsened(misses, history_factor)[-history_steps:].sum())
    return TrafficWindow(
        step_seconds=step,
        rps=tuple(rates.tolist()),
        observed_p99_seconds=obs.observed_p99_seconds if signals.latency_p99 else None,
        end=obs.now,
        service_seconds=service,
        warm_latency_seconds=_median_first_token(obs, steps * factor) if signals.warm_latency else None,
        slo_miss_share=missed,
        slo_misses=tuple(_trailing_mean(misses, rate_steps)[-steps:].tolist()) if signals.slo_misses_per_step else None,
        peak_in_flight=peaks,
        service_per_step=service_per_step,
        rate_window_seconds=step * max(1, rate_steps),
        history_rps=history_rps,
        history_slo_misses=history_misses,
        history_step_seconds=history_step if history_rps is not None and history_step != step else None,
    )


def control_from_decision(
    decision: Decision, spec: InferenceWorkloadSpec, actuators: Actuators = Actuators()
) -> Control | None:
    """The platform controls for a decision: the live reconciler's own actuation (``policy.actuation``).

    A withheld decision (``target=None``) changes nothing: the simulator keeps the controls in force, as the live
    reconciler keeps applying the last recorded decision's settings."""
    target = decision.target
    if target is None:
        return None
    settings = target_settings(target, decision, spec, None, actuators)
    if target is TargetName.CLUSTER:
        spill = decision.spill
        if spill is None:
            return Control(target, replicas=settings.replicas, accelerator=settings.accelerator, spot=settings.spot)
        overflow = target_settings(spill.target, decision, spec, None, actuators)
        return Control(
            target,
            replicas=settings.replicas,
            overflow=spill.target,
            overflow_warm_floor=overflow.replicas,
            overflow_warm_pings=overflow.keep_warm_pings,
            accelerator=settings.accelerator,
            spot=settings.spot,
        )
    return Control(target, warm_floor=settings.replicas, warm_pings=settings.keep_warm_pings)


class OursPolicy:
    """``ours``: sees what the live operator measures (``signals``), decides with ``decide``, acts through the live
    actuation with the live operator's ``actuators``, and accrues its month-to-date spend as the live status does
    (the projected monthly cost of where it runs: no bill is seen live).

    With ``actuators.cluster_scale_to_zero`` (the router runs the activator) its cluster wakes as the live data path
    does (``sim/platforms.py: Activator``: held, noticed at the operator's next poll of ``wake.poll_seconds``,
    served after the cold start, failed past the spec's tolerable cold start), and each tick's actuators are the
    reconciler's (``actuation.zero_allowed``: not at zero while requests are held or within ``wake.keep_seconds``
    of the last wake). The router's holding route is taken as confirmed throughout.

    Cold starts: the price book's, the prior the live operator starts from (``policy/cold_start.py``). The live
    reconciler replaces them by a blend with what it measures at the router (the cluster's after a scale-from-zero,
    Cloud Run's and Lambda's on the first request after an idle gap: ``policy/first_request.py``); here the
    simulated platforms start in exactly the book's cold start, so the measurement would equal the prior give or
    take the activator's poll delay and the held arrivals' spread, and ``ours`` keeps the prior (bench/README.md,
    "Cold starts")."""

    name = "ours"

    def __init__(
        self,
        window_seconds: float | None = None,
        capacity: ClusterCapacity | None = None,
        *,
        signals: ObservedSignals = LIVE_OBSERVATION,
        actuators: Actuators = Actuators(),
        wake: WakeTimings = WakeTimings(),
    ):
        self.signals = signals
        self.wake = wake
        self._activator: Activator | None = None
        self.window_seconds = signals.window_seconds if window_seconds is None else window_seconds
        self.actuators = actuators
        self.observes_in_flight = signals.peak_in_flight
        """The simulator tracks the per-step in-flight peak only for policies that read it."""
        self.in_flight_sample_seconds = signals.in_flight_sample_seconds
        """... read as the router's scrapes read the gauge (0: the exact peak)."""
        self.capacity = capacity or ClusterCapacity()
        self._spec: InferenceWorkloadSpec | None = None
        self._cold_starts: dict[TargetName, float] = {}
        self._price_book: PriceBook | None = None
        self.decisions: list[Decision] = []
        self.keep_decisions = False
        self.calls = 0
        self.reused = 0
        self._last_key: tuple[object, ...] | None = None
        self._last_control: Control | None = None
        self._budget: BudgetStatus | None = None
        self._monthly_cost_usd: float | None = None

    @property
    def month_to_date_usd(self) -> float | None:
        """Month-to-date spend as this policy accrued it (None before its first tick)."""
        return self._budget.month_to_date_usd if self._budget is not None else None

    @property
    def monthly_cost_usd(self) -> float | None:
        """The projected monthly cost of the placement it accrues at (None before a placement)."""
        return self._monthly_cost_usd

    def reset(self, workload: SimWorkload, economics: dict[TargetName, TargetEconomics], price_book: PriceBook) -> None:
        self._spec = workload.spec
        self._price_book = price_book
        self._cold_starts = {target: econ.cold_start_seconds for target, econ in economics.items()}
        self._activator = (
            Activator(self.wake.poll_seconds, workload.spec.slo.tolerable_cold_start())
            if self.actuators.cluster_scale_to_zero
            else None
        )
        self.decisions = []
        self._last_key = None
        self._last_control = None
        self._budget = None
        self._monthly_cost_usd = None

    def window(self, obs: Observation) -> TrafficWindow | None:
        """What ``decide`` is shown on this tick: what the live operator measures."""
        return window_from_observation(obs, self.signals, self.window_seconds)

    def tick_actuators(self, obs: Observation) -> Actuators:
        """What the live reconciler may carry out for this workload on this tick (``Reconciler._actuators``)."""
        if not self.actuators.cluster_scale_to_zero:
            return self.actuators
        woken = obs.cluster_woken_at
        allowed = zero_allowed(
            answers_without_pods=True,
            requests_held=obs.cluster_requests_held,
            seconds_since_wake=None if woken is None else obs.t - woken,
            keep_seconds=self.wake.keep_seconds,
        )
        return self.actuators if allowed else replace(self.actuators, cluster_scale_to_zero=False)

    def _key(self, window: TrafficWindow | None, obs: Observation, actuators: Actuators) -> tuple[object, ...] | None:
        """What the decision's controls depend on, when that excludes the clock; None when it does not.

        ``decide`` reads the clock for staleness (the simulated metrics are never stale), the cooldown and the
        month's end (the budget). Without a budget and outside a cooldown, two ticks with the same window and the
        same placement get the same decision, so the previous controls are reused instead of deciding again. The
        history is part of the key only where ``decide`` reads it (``policy.decide.reads_history``, as the live
        fleet's fingerprint).
        """
        assert self._spec is not None
        if window is None or self._spec.budget.monthly_usd is not None or obs.migrating:
            return None
        finished = obs.last_migration_finished_at
        if finished is not None and (obs.now - finished).total_seconds() < self._spec.placement.cooldown_seconds:
            return None
        return (
            window.rps,
            window.observed_p99_seconds,
            window.service_seconds,
            window.warm_latency_seconds,
            window.slo_miss_share,
            window.slo_misses,
            window.peak_in_flight,
            *(history_fingerprint(window) if reads_history(self._spec, actuators) else ()),
            window.known_idle_steps,
            obs.placement,
            obs.accelerator,
            obs.spilling,
            finished is None,
        )

    def tick(self, obs: Observation) -> Sequence[Control]:
        assert self._spec is not None and self._price_book is not None
        # month-to-date as the live status accrues it: the projected cost of the placement since the last tick
        self._budget = accrue_spend(self._budget, self._monthly_cost_usd, obs.now)
        window = self.window(obs)
        actuators = self.tick_actuators(obs)
        key = self._key(window, obs, actuators)
        if key is not None:
            key = (*key, actuators)
        if key is not None and key == self._last_key and not self.keep_decisions:
            self.reused += 1
            return [self._last_control] if self._last_control is not None else []
        state = PlacementState(
            current=obs.placement,
            last_migration_finished_at=obs.last_migration_finished_at,
            month_to_date_usd=self._budget.month_to_date_usd,
            accelerator=obs.accelerator,
            moving_to=obs.migrating_to,
            spilling=obs.spilling,
        )
        decision = decide(self._spec, window, state, self._price_book, self.capacity, obs.now, actuators=actuators)
        self.calls += 1
        if self.keep_decisions:
            self.decisions.append(decision)
        placed = obs.placement
        if placed is not None:
            self._monthly_cost_usd = decision.projected_monthly_cost_usd.get(placed)
        control = control_from_decision(decision, self._spec, actuators)
        if control is not None and control.target is TargetName.CLUSTER and self._activator is not None:
            control = replace(control, activator=self._activator)
            if decision.replicas == 0 and actuators.cluster_scale_to_zero:
                # who answers at zero, as the live reconciler asks it (the serverless target's deployment time is
                # the simulator's: it falls through only once deployed, the activator holds until then)
                answer = zero_answer(
                    self._spec, self._cold_starts, SERVERLESS, decision.infeasible, actuators=actuators
                )
                control = replace(control, zero_fall_through=answer.target)
        self._last_key = key
        self._last_control = control
        return [control] if control is not None else []


def service_sums(requests: Requests | StepRequests) -> FloatArray:
    """Each step's summed service time (what the simulator records of the requests it serves: the very requests
    a step of counts draws)."""
    if isinstance(requests, StepRequests):
        return np.array([requests.service_sum(k) for k in range(requests.steps)], dtype=np.float64)
    index = np.minimum((requests.arrivals // requests.step_seconds).astype(np.int64), requests.steps - 1)
    return np.bincount(index, weights=requests.service, minlength=requests.steps)[: requests.steps].astype(np.float64)


def demand_peaks(requests: Requests | StepRequests, sample_seconds: float = 0.0) -> FloatArray:
    """Each step's peak demand in flight (requests that would be in flight had none waited), as the simulator
    records it for a policy that reads it: the exact peak, or with ``sample_seconds`` the largest of the gauge's
    readings at that interval (a step without a reading: 0). A high-volume row kept as counts: the M/G/infinity
    estimate its aggregate steps record (``sim/aggregate.py: demand_peak``)."""
    steps, step = requests.steps, requests.step_seconds
    if isinstance(requests, StepRequests):
        mean = float(requests.service.mean()) if requests.service.size else 0.0
        a = requests.per_step() / step * mean
        before = np.concatenate((a[:1], a[:-1]))
        return np.array([demand_peak(float(x), float(y), step, mean) for x, y in zip(a, before, strict=True)])
    arrivals, ends = requests.arrivals, np.sort(requests.arrivals + requests.service)
    peaks = np.zeros(steps)
    if sample_seconds > 0:
        # the gauge read at 0, s, 2s, ...: those arrived by then less those ended by then
        reads = np.arange(0.0, steps * step, sample_seconds)
        in_flight = np.searchsorted(arrivals, reads, side="right") - np.searchsorted(ends, reads, side="right")
        index = np.minimum((reads // step).astype(np.int64), steps - 1)
        np.maximum.at(peaks, index, in_flight.astype(np.float64))
        return peaks
    if arrivals.size == 0:
        return peaks
    # in flight just after each arrival: those arrived so far less those ended by then
    ended = np.searchsorted(ends, arrivals, side="right")
    in_flight = np.arange(1, arrivals.size + 1) - ended
    index = np.minimum((arrivals // step).astype(np.int64), steps - 1)
    np.maximum.at(peaks, index, in_flight.astype(np.float64))
    # ... and, in a step without arrivals, what is still in flight when it starts
    starts = np.arange(steps) * step
    carried = np.searchsorted(arrivals, starts, side="left") - np.searchsorted(ends, starts, side="right")
    empty = np.bincount(index, minlength=steps)[:steps] == 0
    out: FloatArray = np.where(empty, np.maximum(carried, 0).astype(np.float64), peaks)
    return out


class ClairvoyantOursPolicy(OursPolicy):
    """A reference line, never a policy: ``ours``'s own decision procedure (``decide``, the same actuation, the same
    wake) fed the true coming traffic in place of its forecast, so that ``ours / optimum`` splits into the price of
    not knowing the future (``ours / clairvoyant``) and the policy's structure (``clairvoyant / optimum``).

    ``decide`` reads the window as its forecast (the next minutes look like the last ones; replicas are sized for
    the trailing sustain window's peak). Here the window is shifted: its trailing sustain window holds the true
    rates and the in-flight gauge's readings (at the router's scrapes, as ``ours`` reads them) of the coming
    sustain window (the steps before it the true ones of the past; zeros past the trace's end), and
    ``known_idle_steps`` says how many coming steps carry no request (the idle-gap plan reads it in place of its
    hazard estimate). What is measured rather than forecast stays as the live operator measures it: the recent
    p99, the SLO-miss share (the calibration: the model's error on the capacity in place), the mean service time
    and the day's history. It claims no credit: the summary compares ``ours`` only."""

    name = "ours-clairvoyant"

    def __init__(
        self,
        window_seconds: float | None = None,
        capacity: ClusterCapacity | None = None,
        *,
        signals: ObservedSignals = LIVE_OBSERVATION,
        actuators: Actuators = Actuators(),
        wake: WakeTimings = WakeTimings(),
    ):
        super().__init__(window_seconds, capacity, signals=signals, actuators=actuators, wake=wake)
        self._counts: FloatArray = np.zeros(0)
        self._peaks: FloatArray = np.zeros(0)
        self._service_sums: FloatArray = np.zeros(0)
        self._idle_run: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)

    def reset(self, workload: SimWorkload, economics: dict[TargetName, TargetEconomics], price_book: PriceBook) -> None:
        super().reset(workload, economics, price_book)
        self._counts = workload.requests.per_step()
        self._peaks = demand_peaks(workload.requests, self.in_flight_sample_seconds)
        self._service_sums = service_sums(workload.requests) if self.signals.service_per_step else np.zeros(0)
        # idle steps from each step on (the steps past the trace's end carry none)
        run = np.zeros(self._counts.size + 1, dtype=np.int64)
        run[-1] = 1 << 30
        for k in range(self._counts.size - 1, -1, -1):
            run[k] = 0 if self._counts[k] > 0 else run[k + 1] + 1
        self._idle_run = run

    def window(self, obs: Observation) -> TrafficWindow | None:
        observed = window_from_observation(obs, self.signals, self.window_seconds)
        if observed is None:
            return None
        factor = max(1, round(observed.step_seconds / obs.step_seconds))
        step = obs.step_seconds * factor
        assert self._spec is not None
        ahead = max(1, math.ceil(max(self._spec.placement.sustain_seconds, step) / step - 1e-9))
        size = max(ahead + 1, int(self.window_seconds // step))
        first = obs.step - (size - ahead) * factor  # in trace steps; the window ends ``ahead`` steps from now
        counts = np.zeros(size * factor)
        peaks = np.zeros(size * factor)
        sums = np.zeros(size * factor)
        lo, hi = max(0, first), min(self._counts.size, first + size * factor)
        if hi > lo:
            counts[lo - first : hi - first] = self._counts[lo:hi]
            peaks[lo - first : hi - first] = self._peaks[lo:hi]
            if self._service_sums.size:
                sums[lo - first : hi - first] = self._service_sums[lo:hi]
        keep = size - min(size - ahead, obs.step // factor) - ahead  # leading steps before the trace began
        per_step = counts.reshape(size, factor).sum(axis=1)[keep:]
        rps = per_step / step
        peak = peaks.reshape(size, factor).max(axis=1)[keep:]
        # the coming steps' own mean service times, aligned with their rates (0: a step without requests)
        service_per_step = observed.service_per_step
        if service_per_step is not None:
            summed = sums.reshape(size, factor).sum(axis=1)[keep:]
            with np.errstate(divide="ignore", invalid="ignore"):
                service_per_step = tuple(np.where(per_step > 0, summed / per_step, 0.0).tolist())
        return replace(
            observed,
            rps=tuple(rps.tolist()),
            peak_in_flight=tuple(peak.tolist()),
            service_per_step=service_per_step,
            rate_window_seconds=step,  # each point is its own step's count
            slo_misses=None,  # the calibration reads the measured share of the last minutes instead
            known_idle_steps=int(self._idle_run[min(obs.step, self._idle_run.size - 1)]) // factor,
        )
