"""The aggregate queueing model the simulator uses for high-volume steps (instead of serving each request).

When to use it (``aggregate_step``): a step of a workload kept as counts per step (``StepRequests``: its arrivals
within a step are a Poisson process by construction, as for every per-step row) with at least
``AGGREGATE_MIN_ARRIVALS`` requests, no burst spillover in force. Sparse and bursty steps, and every step of a
per-request trace (its timestamps are kept: bursts inside a step matter), are served request by request.

The model, per constant-capacity segment of a step (segments are cut where a control applies, a migration switches,
or a replica or instance becomes ready): arrivals at rate ``lam``, ``c`` slots, FIFO, the service-time distribution
of the workload (mean ``m``, squared coefficient of variation ``scv``: the same distribution the per-request path
draws from), and a backlog ``b0`` carried in from the previous segment.

- Fluid part (overload, or draining a backlog): the queue grows or drains at ``lam - c / m`` per second; a request
  arriving with ``b`` requests ahead waits ``b m / c`` (FIFO, all slots busy).
- Stationary part (no backlog, ``a = lam m < c``): M/G/c with Erlang C and the Allen-Cunneen correction of the wait
  scale, ``P(W > x) = C(c, a) exp(-(c - a) x / (m (1 + scv) / 2))`` (``policy/queueing.py: queue_miss_share`` is the
  M/M/c case: the same formula with ``scv = 1``).
- A request misses when its wait plus its latency part (service, or time to first token, from the same sample)
  exceeds the objective: the miss share averages ``P(W > slo - part)`` over the sample's latency parts.
- Observation signals are the ones the per-request path records: requests (the step's count), the service sum
  (of the very requests the per-request path would draw for the step), misses (the expected count,
  carried so the whole numbers sum to the expected total), the latency p99 (of the mixture of the segments' wait
  laws plus the latency part), and the peak demand in flight (M/G/infinity: Poisson with mean ``a``; the peak over
  a step is ``a + z sqrt(a)`` with ``z`` the normal quantile of ``1 - 1 / n`` for ``n = step / m`` roughly
  independent looks).

``tests/test_sim_volumes.py`` checks this against the per-request path on sampled windows of a 10^8-requests-a-day
row and fails when the error in cost or attainment exceeds the bounds stated there (and in ``bench/README.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from inference_placement.policy.queueing import queue_miss_share

__all__ = [
    "AGGREGATE_MIN_ARRIVALS",
    "FloatArray",
    "ServiceLaw",
    "StepLaw",
    "WaitMixture",
    "SlotFill",
    "demand_peak",
    "fill_slots",
    "segment_waits",
]

FloatArray = npt.NDArray[np.float64]

AGGREGATE_MIN_ARRIVALS = 2_000
"""Expected arrivals per step from which a Poisson step is simulated in aggregate. At 2,000 the count's relative
noise is 2.2 % and the demand in flight (Poisson) is close to normal; the per-request path costs ~5 us per request
on the cluster, so a step of this size costs ~10 ms request by request, and the aggregate ~0.3 ms whatever the
volume. Every step of the visible rows is below it (at most 1,089 requests per minute), so they are unchanged."""

_PART_QUANTILES = 128
"""The latency-part sample is summarised by this many equal-weight quantiles."""
_RAMP_POINTS = 8
"""A fluid ramp (a wait changing linearly over a segment) is integrated at this many midpoints."""


@dataclass(frozen=True)
class ServiceLaw:
    """What the aggregate model reads of a workload's service-time distribution."""

    mean: float
    """Mean service time, seconds."""
    scv: float
    """Squared coefficient of variation of the service time."""
    parts: FloatArray
    """Equal-weight quantiles of the latency part (seconds after a request starts at which the SLO measures it)."""
    part_mean: float
    sorted_parts: FloatArray
    """Every latency part of the sample, ascending: its exact tail decides the share that misses with no wait."""

    @classmethod
    def of(cls, service: FloatArray, latency_part: FloatArray) -> ServiceLaw:
        service = np.asarray(service, dtype=np.float64)
        mean = float(service.mean())
        var = float(service.var())
        q = (np.arange(_PART_QUANTILES) + 0.5) / _PART_QUANTILES
        ordered = np.sort(np.asarray(latency_part, dtype=np.float64))
        return cls(
            mean=mean,
            scv=var / (mean * mean) if mean > 0 else 0.0,
            parts=np.quantile(ordered, q),
            part_mean=float(ordered.mean()),
            sorted_parts=ordered,
        )

    def part_above(self, x: FloatArray) -> FloatArray:
        """Share of latency parts above each ``x``."""
        n = self.sorted_parts.size
        share: FloatArray = 1.0 - np.searchsorted(self.sorted_parts, x, side="right") / n
        return share


@dataclass
class WaitMixture:
    """The wait law of a step's requests: weighted deterministic waits (fluid) and Erlang-C laws (stationary)."""

    fixed_weights: list[float] = field(default_factory=list)
    fixed_waits: list[float] = field(default_factory=list)
    queue_weights: list[float] = field(default_factory=list)
    queue_probability: list[float] = field(default_factory=list)
    """``C``: the chance to wait at all."""
    queue_rate: list[float] = field(default_factory=list)
    """``theta``: the wait's exponential decay, per second."""

    @property
    def weight(self) -> float:
        return sum(self.fixed_weights) + sum(self.queue_weights)

    def add(self, other: WaitMixture) -> None:
        self.fixed_weights += other.fixed_weights
        self.fixed_waits += other.fixed_waits
        self.queue_weights += other.queue_weights
        self.queue_probability += other.queue_probability
        self.queue_rate += other.queue_rate

    def late_share(self, law: ServiceLaw, objective: FloatArray) -> FloatArray:
        """Share of requests whose wait plus latency part exceeds each ``x`` of ``objective``: a fixed wait ``d``
        misses with the sample's share of parts above ``x - d`` (exact); an Erlang-C law with the parts' tail above
        ``x`` (exact) plus ``C exp(-theta (x - p))`` averaged over the parts' quantiles below ``x``."""
        total = self.weight
        out = np.zeros(objective.shape)
        if total <= 0:
            return out
        if self.fixed_weights:
            w = np.asarray(self.fixed_weights)[:, None]
            d = np.asarray(self.fixed_waits)[:, None]
            out += (w * law.part_above(objective[None, :] - d)).sum(axis=0)
        if self.queue_weights:
            w = np.asarray(self.queue_weights)[:, None, None]
            c = np.asarray(self.queue_probability)[:, None, None]
            th = np.asarray(self.queue_rate)[:, None, None]
            slack = objective[None, :, None] - law.parts[None, None, :]
            below = slack >= 0
            smooth = np.where(below, c * np.exp(-th * np.maximum(slack, 0.0)), 0.0).mean(axis=2)
            tail = law.part_above(objective)[None, :]
            out += (w[:, :, 0] * (smooth + tail)).sum(axis=0)
        result: FloatArray = out / total
        return result

    def miss_share(self, law: ServiceLaw, objective_seconds: float) -> float:
        """Share of requests whose wait plus latency part exceeds the objective."""
        return float(self.late_share(law, np.array([objective_seconds]))[0])

    def no_wait_share(self) -> float:
        total = self.weight
        if total <= 0:
            return 1.0
        fixed = sum(w for w, d in zip(self.fixed_weights, self.fixed_waits, strict=True) if d <= 0)
        queued = sum(w * (1.0 - c) for w, c in zip(self.queue_weights, self.queue_probability, strict=True))
        return (fixed + queued) / total

    def latency_quantile(self, law: ServiceLaw, q: float) -> float:
        """The ``q`` quantile of wait + latency part (bisection on the mixture's distribution function)."""
        lo = 0.0
        hi = float(law.sorted_parts[-1]) + max(self.fixed_waits, default=0.0) + 1.0
        rates = [r for r in self.queue_rate if r > 0]
        if rates:
            hi += 40.0 / min(rates)
        if not math.isfinite(hi):
            return math.inf
        for _ in range(32):
            mid = 0.5 * (lo + hi)
            if self.miss_share(law, mid) <= 1.0 - q:
                hi = mid
            else:
                lo = mid
            if hi - lo <= 1e-4 * max(1.0, hi):
                break
        return hi


@dataclass(frozen=True)
class StepLaw:
    """One segment's outcome."""

    waits: WaitMixture
    backlog_end: float
    """Requests still waiting at the segment's end (fluid)."""


def segment_waits(lam: float, slots: float, backlog: float, seconds: float, law: ServiceLaw) -> StepLaw:
    """The wait law of the requests arriving in a segment of ``seconds`` (rate ``lam``, ``slots`` servers, FIFO,
    ``backlog`` requests waiting at its start), and the backlog left at its end. See the module docstring."""
    mix = WaitMixture()
    arrivals = lam * seconds
    if seconds <= 0:
        return StepLaw(mix, backlog)
    m = max(law.mean, 1e-9)
    if slots <= 0:
        # nothing serves: every arrival waits for the segment's end at least (the caller starts capacity)
        mix.fixed_weights.append(arrivals)
        mix.fixed_waits.append(math.inf)
        return StepLaw(mix, backlog + arrivals)
    mu = slots / m
    drift = lam - mu
    a = lam * m
    fluid_seconds = seconds if drift >= 0 else min(seconds, backlog / -drift)
    if backlog > 0 or drift >= 0:
        # fluid ramp from backlog to backlog + drift * fluid_seconds, integrated at midpoints
        n = _RAMP_POINTS
        for i in range(n):
            t = (i + 0.5) / n * fluid_seconds
            b = max(0.0, backlog + drift * t)
            mix.fixed_weights.append(lam * fluid_seconds / n)
            mix.fixed_waits.append(b / mu)
        backlog = max(0.0, backlog + drift * fluid_seconds)
    rest = seconds - fluid_seconds if (backlog <= 0 and drift < 0) else 0.0
    if rest > 0 and lam > 0:
        erlang_c = float(queue_miss_share(np.array([a]), np.array([slots]), 0.0)[0])
        theta = (slots - a) / (m * (1.0 + law.scv) / 2.0)
        mix.queue_weights.append(lam * rest)
        mix.queue_probability.append(erlang_c)
        mix.queue_rate.append(theta)
        backlog = 0.0
    return StepLaw(mix, backlog)


_NORMAL = NormalDist()


def demand_peak(a_now: float, a_before: float, step_seconds: float, mean_service: float) -> float:
    """Peak demand in flight (requests that would be in flight had none waited) over a step: M/G/infinity, Poisson
    with mean ``a``; the step starts at the previous step's level and settles at this one's within a service time,
    so the higher of the two is the level; ``n = step / mean`` roughly independent looks at it."""
    a = max(a_now, a_before)
    if a <= 0:
        return 0.0
    looks = max(2.0, step_seconds / max(mean_service, 1e-9))
    z = _NORMAL.inv_cdf(1.0 - 1.0 / looks)
    return a + z * math.sqrt(a)


@dataclass(frozen=True)
class SlotFill:
    """One segment served on a pool of slot groups (``fill_slots``)."""

    waits: WaitMixture
    level: float | None
    """The common free time of the saturated slots at the segment's end (None: not saturated then)."""
    filled_up_to: float
    """Slot groups whose free time was below ``level`` were raised to it (as ``level``; -inf when none)."""


def _level_for_work(
    y: FloatArray, w: FloatArray, cum_w: FloatArray, cum_wy: FloatArray, work: FloatArray
) -> FloatArray:
    """Water level ``W`` with ``sum_i w_i max(0, W - y_i) = work`` (``y`` ascending)."""
    g = y * cum_w - cum_wy  # g(y_k): work to raise every group below y_k to it
    k = np.searchsorted(g, work, side="right") - 1
    k = np.clip(k, 0, y.size - 1)
    level: FloatArray = (work + cum_wy[k]) / cum_w[k]
    return level


def fill_slots(
    free_at: FloatArray,
    slots: FloatArray,
    t0: float,
    t1: float,
    lam: float,
    law: ServiceLaw,
    in_flight_work: float = 0.0,
    fresh: npt.NDArray[np.bool_] | None = None,
) -> SlotFill:
    """Serve ``lam`` requests per second over [t0, t1) on slot groups (``slots[i]`` slots free from ``free_at[i]``),
    each request taking the earliest free slot, as the per-request cluster does (a request is bound to a slot when
    it arrives: a replica that starts later takes only later requests).

    While enough slots are free for the load (``lam x mean < free slots``) the wait is M/G/c's over the free slots
    (module docstring). Otherwise the slots fill like water: the lowest free times rise together to a level ``W``
    with ``lam x mean x (t - t0)`` slot-seconds of work poured in; a request arriving at ``t`` waits ``W(t) - t``,
    until the level falls back to the clock (more slots freed than the load needs) and the wait is M/G/c's again.
    ``in_flight_work`` is the slot-seconds of service still to do at ``t0`` on the slots free by then (the requests
    in flight under the load before): where the slots saturate, the level starts from it. A group's free time is
    its earliest slot's; a busy group's slots are on average a residual service time beyond it, except ``fresh``
    groups (replicas not started yet, or never used: every slot free at once).
    """
    mix = WaitMixture()
    seconds = t1 - t0
    if seconds <= 0 or lam <= 0:
        return SlotFill(mix, None, -math.inf)
    m = max(law.mean, 1e-9)
    work_rate = lam * m
    free_now = float(slots[free_at <= t0].sum())
    if free_now > work_rate:
        _stationary(mix, lam * seconds, work_rate, free_now, law)
        return SlotFill(mix, None, -math.inf)
    # a saturated slot's free time is the earliest of its group's: on average the group's slots are busy a
    # residual service time beyond it (equilibrium residual, m (1 + scv) / 2), which is work the level carries
    residual = m * (1.0 + law.scv) / 2.0
    carried = in_flight_work / free_now if free_now > 0 else 0.0
    busy_residual = residual if fresh is None else np.where(fresh, 0.0, residual)
    base = np.where(free_at > t0, free_at + busy_residual, t0 + carried)
    order = np.argsort(base, kind="stable")
    y = base[order]
    w = slots[order]
    cum_w = np.cumsum(w)
    cum_wy = np.cumsum(w * y)
    n = _RAMP_POINTS * 2
    times = t0 + (np.arange(n) + 0.5) / n * seconds
    levels = _level_for_work(y, w, cum_w, cum_wy, work_rate * (times - t0))
    waits = np.maximum(levels - residual - times, 0.0)
    queued = waits > 0
    each = lam * seconds / n
    for wait in waits[queued]:
        mix.fixed_weights.append(each)
        mix.fixed_waits.append(float(wait))
    drained = int((~queued).sum())
    if drained:
        # the level fell back to the clock: the rest is served as M/G/c over the slots free by the segment's end
        _stationary(mix, each * drained, work_rate, float(slots[free_at <= t1].sum()), law)
    end_level = float(_level_for_work(y, w, cum_w, cum_wy, np.array([work_rate * seconds]))[0]) - residual
    if end_level > t1:
        return SlotFill(mix, end_level, end_level)
    return SlotFill(mix, None, -math.inf)


def _stationary(mix: WaitMixture, arrivals: float, a: float, slots: float, law: ServiceLaw) -> None:
    if arrivals <= 0:
        return
    m = max(law.mean, 1e-9)
    if slots <= a:
        # critically loaded with no fluid backlog: within a step the queue only grows by its fluctuations, of the
        # order of sqrt(arrivals (1 + scv)) requests (the diffusion scale), served by ``slots`` at once
        mix.fixed_weights.append(arrivals)
        mix.fixed_waits.append(math.sqrt(arrivals * (1.0 + law.scv)) * m / max(slots, 1.0))
        return
    erlang_c = float(queue_miss_share(np.array([a]), np.array([slots]), 0.0)[0])
    mix.queue_weights.append(arrivals)
    mix.queue_probability.append(erlang_c)
    mix.queue_rate.append((slots - a) / (m * (1.0 + law.scv) / 2.0))
