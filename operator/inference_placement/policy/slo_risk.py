"""SLO risk: the expected share of requests that miss the latency objective on a target, step by step.

Two things make a request miss when the target is healthy: it waits for a cold start (no warm instance or replica
was free) or it queues behind full replicas. Both are estimated from the observed window, step by step:

- in flight: requests in flight are Poisson with mean ``rate x service`` (``queueing.py``);
- idle gaps vs keep-alive: a serverless instance stays warm ``keep_alive`` after its last use (the most recently
  used free instance serves), so the ``j``-th instance is warm while ``j`` were needed within the keep-alive; each
  level above the ones kept warm (pings, min instances, provisioned concurrency) starts cold when an arrival needs
  it and none did in the keep-alive before (expected per level and step, continuous in the traffic:
  ``level_cold_starts``);
- a cold start delays the request that triggered it and every arrival during the start that finds no free slot;
- a cluster scaled to zero starts a replica for the first request after an idle step.

A cold request misses only when the cold start plus the service exceeds the objective (or the cold start exceeds
what the SLO tolerates); otherwise cold starts cost money but no attainment.

Functions take a vector of warm capacities and return one row per capacity, so the cost model prices all
candidates in one pass (only busy steps carry risk, so the work scales with the busy part of the window).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from inference_placement.api.spec import InferenceWorkloadSpec
from inference_placement.policy.queueing import (
    FloatArray,
    allen_cunneen_scale,
    late_in_queue,
    queue_miss_many,
    replicas_for_burst,
    replicas_for_wait_many,
    sf_many,
    slots_many,
    slots_scalar,
    wait_slack,
)

__all__ = [
    "RISK_SHARE_OF_BUDGET",
    "RiskRows",
    "SloTerms",
    "StepTraffic",
    "cluster_rows",
    "keep_alive_pool",
    "level_cold_starts",
    "serverless_rows",
    "step_traffic",
]

RISK_SHARE_OF_BUDGET = 0.5
"""The policy spends at most half of the SLO's error budget on the misses it models (cold starts, queueing);
the other half absorbs what it does not (clumped arrivals within a step, autoscaling lag, forecast error)."""


_MAX_MODEL_ERROR = 100.0


@dataclass(frozen=True)
class SloTerms:
    objective_seconds: float
    attainment: float
    tolerable_cold_start_seconds: float
    model_error: float = 1.0
    """How many times more misses were observed on the current target than the policy plans for (>= 1): its
    capacity is sized for a tail that much tighter (calibration from the observed SLO misses)."""

    @classmethod
    def from_spec(cls, spec: InferenceWorkloadSpec) -> SloTerms:
        slo = spec.slo
        return cls(slo.objective_seconds, slo.attainment, slo.tolerable_cold_start())

    @property
    def error_budget(self) -> float:
        """Share of requests allowed to miss the objective."""
        return max(0.0, 1.0 - self.attainment)

    @property
    def risk_budget(self) -> float:
        """Share of requests the policy lets its modelled risks take."""
        return self.error_budget * RISK_SHARE_OF_BUDGET

    @property
    def sizing_tail(self) -> float:
        """Share of requests capacity is sized to let queue past their slack (the risk budget, calibrated)."""
        return self.risk_budget / max(1.0, self.model_error)

    def calibrated(self, observed_miss_share: float | None) -> SloTerms:
        """These terms with the model error the observed misses show (unchanged when they are within budget)."""
        if observed_miss_share is None or observed_miss_share <= self.risk_budget or self.risk_budget <= 0:
            return self
        return replace(self, model_error=min(_MAX_MODEL_ERROR, observed_miss_share / self.risk_budget))

    def slack_over_service(self, warm_latency_seconds: float, service_seconds: float) -> float:
        """How long a request may queue before it misses, in units of the service time."""
        return max(0.0, self.objective_seconds - warm_latency_seconds) / max(service_seconds, 1e-9)

    def cold_request_misses(self, cold_start_seconds: float, service_seconds: float) -> bool:
        """Whether a request that waits for a cold start misses the SLO."""
        return (
            cold_start_seconds + service_seconds > self.objective_seconds
            or cold_start_seconds > self.tolerable_cold_start_seconds
        )


@dataclass(frozen=True)
class StepTraffic:
    """The window's steps as the risk model sees them (independent of the warm capacity)."""

    step_seconds: float
    rps: FloatArray
    requests: FloatArray
    in_flight: FloatArray
    """Mean requests in flight (the step's estimated rate x service: what its queue met)."""
    busy: npt.NDArray[np.intp]
    """Indices of steps with traffic."""

    @property
    def steps(self) -> int:
        return int(self.rps.size)


def step_traffic(
    rps: FloatArray, step_seconds: float, service_seconds: float, estimated_rps: FloatArray | None = None
) -> StepTraffic:
    """The steps' requests from the observed rates; their mean load in flight from ``estimated_rps`` where given
    (``TrafficForecast.estimated_rps``: the rates the counts estimate), else from the observed rates."""
    rates = rps if estimated_rps is None else estimated_rps
    return StepTraffic(
        step_seconds=step_seconds,
        rps=rps,
        requests=rps * step_seconds,
        in_flight=rates * service_seconds,
        busy=np.flatnonzero(rps > 0),
    )


def keep_alive_pool(instances: FloatArray, keep_alive_steps: int) -> FloatArray:
    """Instances still warm at the start of each step: the peak used within the previous ``keep_alive_steps``."""
    n = instances.size
    out = np.zeros(n, dtype=np.float64)
    if n == 0 or keep_alive_steps <= 0:
        return out
    nz = np.flatnonzero(instances > 0)
    if nz.size == 0:
        return out
    if nz.size <= 2:
        # (nearly) idle window: spread each busy step forward over the keep-alive
        for i in nz:
            end = min(n, i + 1 + keep_alive_steps)
            seg = out[i + 1 : end]
            np.maximum(seg, instances[i], out=seg)
        return out
    padded = np.concatenate([np.zeros(keep_alive_steps, dtype=np.float64), instances[:-1]])
    windows = np.lib.stride_tricks.sliding_window_view(padded, keep_alive_steps)
    result: FloatArray = windows.max(axis=1)
    return result


@dataclass(frozen=True)
class RiskRows:
    """One row per warm capacity, one column per step."""

    warm: FloatArray
    cold_starts: FloatArray
    misses: FloatArray
    capacity: FloatArray
    """Cluster: replicas. Serverless: instances alive (busy, or warm within the keep-alive, or kept warm)."""


def _scatter(rows: int, steps: int, columns: npt.NDArray[np.intp], values: FloatArray) -> FloatArray:
    out = np.zeros((rows, steps), dtype=np.float64)
    if columns.size:
        out[:, columns] = values
    return out


_NEGLIGIBLE = 1e-12
"""Levels needed by fewer than this share of arrivals are left out of the cold start count."""

_CERTAIN_USES = 40.0
"""Uses of an instance level counted for a step whose observed peak surely reached it: enough that the level is
certainly warm for the keep-alive after (exp(-40) ~ 4e-18), and at most one cold start in the step."""


def _uses_per_level(
    traffic: StepTraffic, concurrency: int, peak_in_flight: FloatArray | None
) -> tuple[FloatArray, FloatArray]:
    """Per instance level ``j = 1..J`` (rows) and step (columns): the expected arrivals that need at least ``j``
    instances (an arrival finding ``N >= (j - 1) c`` requests in flight, PASTA), and their rate per second.

    Levels a step's observed peak reached count as surely used (``_CERTAIN_USES``) at the step's whole rate (a
    burst's arrivals come together). ``J`` is the level the busiest step's arrivals need with a chance under 1e-12."""
    c = float(max(1, concurrency))
    n, idx = traffic.steps, traffic.busy
    if idx.size == 0:
        return np.zeros((1, n), dtype=np.float64), np.zeros((1, n), dtype=np.float64)
    a_b = traffic.in_flight[idx]
    requests_b = traffic.requests[idx]
    top = slots_scalar(float(a_b.max()), _NEGLIGIBLE)
    peaks_b = None
    if peak_in_flight is not None:
        peaks_b = np.ceil(np.maximum(peak_in_flight[idx], 0.0) / c - 1e-9)
        top = max(top, float(peaks_b.max()) * c)
    levels = max(1, math.ceil(top / c) + 1)
    below = np.arange(levels, dtype=np.float64)[:, None] * c  # level j needs N >= (j - 1) c on arrival
    share = sf_many(a_b, np.broadcast_to(below, (levels, idx.size)).copy())
    uses_b = requests_b[None, :] * share
    rate_b = traffic.rps[idx][None, :] * share
    if peaks_b is not None:
        sure = np.arange(1, levels + 1, dtype=np.float64)[:, None] <= peaks_b[None, :]
        uses_b = np.where(sure, np.maximum(uses_b, _CERTAIN_USES), uses_b)
        rate_b = np.where(sure, traffic.rps[idx][None, :], rate_b)
    uses = np.zeros((levels, n), dtype=np.float64)
    rate = np.zeros((levels, n), dtype=np.float64)
    uses[:, idx] = uses_b
    rate[:, idx] = rate_b
    return uses, rate


def level_cold_starts(uses: FloatArray, keep_alive_steps: int) -> FloatArray:
    """Expected cold starts per instance level and step when an idle instance is reclaimed a keep-alive after its
    last use.

    Instances are used most recently used first (the platforms route to the warm instance used last), so the
    ``j``-th instance stays warm exactly while at least ``j`` were needed within the last keep-alive ``K``. The
    arrivals that need it are Poisson, at a rate constant within a step (``uses[j, i]`` per step); one of them starts
    the instance cold when no arrival needed it in the ``K`` seconds before. Integrating over the step, with ``K`` =
    ``keep_alive_steps`` steps, ``n`` this step's uses, ``e`` those of the step ``K`` before and ``S`` those of the
    steps in between::

        cold = n exp(-S) exp(-min(n, e)) (1 - exp(-|n - e|)) / |n - e|        (= n exp(-K n / step) when steady)

    Continuous in the traffic, unlike a pool that holds a level only past a threshold. The window's history before
    its first step counts as idle. ``uses`` has one row per level, one column per step."""
    levels, n = uses.shape
    k = max(1, keep_alive_steps)
    padded = np.concatenate([np.zeros((levels, k), dtype=np.float64), uses], axis=1)
    cumulative = np.concatenate([np.zeros((levels, 1), dtype=np.float64), np.cumsum(padded, axis=1)], axis=1)
    # for step i (column i + k of ``padded``): the steps strictly between i - k and i, and step i - k itself
    steps = np.arange(n) + k
    between = cumulative[:, steps] - cumulative[:, steps - k + 1]
    edge = padded[:, steps - k]
    gap = np.abs(uses - edge)
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = np.where(gap > 1e-9, -np.expm1(-gap) / np.maximum(gap, 1e-300), 1.0 - 0.5 * gap)
    result: FloatArray = uses * np.exp(-between - np.minimum(uses, edge)) * spread
    return result


def serverless_rows(
    traffic: StepTraffic,
    warm: FloatArray,
    concurrency: int,
    keep_alive_seconds: float,
    cold_start_seconds: float,
    cold_misses: bool,
    peak_in_flight: FloatArray | None = None,
) -> RiskRows:
    """Per-step instances, cold starts and misses on a serverless target keeping ``warm`` instances warm.

    Cold starts are counted per instance level above the ones kept warm (:func:`level_cold_starts`); a cold start
    delays the request that started it and, as it takes ``cold_start_seconds``, the arrivals needing that level
    meanwhile (capped by the arrivals that find every kept-warm slot busy)."""
    c = float(max(1, concurrency))
    n, idx = traffic.steps, traffic.busy
    rows = warm.size
    requests_b = traffic.requests[idx]
    a_b = traffic.in_flight[idx]
    # the level about one of the step's arrivals reaches
    peak_b = slots_many(a_b, 1.0 / np.maximum(requests_b, 1.0))
    if peak_in_flight is not None:
        # bursts shorter than a step: the observed peak is the level the step's instances had to reach
        peak_b = np.maximum(peak_b, peak_in_flight[idx])
    instances = np.zeros(n, dtype=np.float64)
    instances[idx] = np.maximum(1.0, np.ceil(peak_b / c))
    k_steps = max(1, math.floor(keep_alive_seconds / traffic.step_seconds))
    # an instance started for a level reached once stays warm for the keep-alive: the pool a step leaves behind is
    # the level about one arrival reaches over a whole keep-alive at this rate, not just within the step
    reached = np.zeros(n, dtype=np.float64)
    reached_b = slots_many(a_b, 1.0 / np.maximum(requests_b * k_steps, 1.0))
    if peak_in_flight is not None:
        reached_b = np.maximum(reached_b, peak_in_flight[idx])
    reached[idx] = np.maximum(1.0, np.ceil(reached_b / c))
    base_pool = keep_alive_pool(reached, k_steps)
    pool = np.maximum(base_pool[None, :], warm[:, None])
    alive = np.maximum(pool, instances[None, :])
    # cold starts: per level above the warm ones, from the keep-alive (continuous in the traffic)
    uses, rate = _uses_per_level(traffic, concurrency, peak_in_flight)
    levels = uses.shape[0]
    cold_levels = level_cold_starts(uses, k_steps)[:, idx]
    above = np.concatenate([np.cumsum(cold_levels[::-1], axis=0)[::-1], np.zeros((1, idx.size))], axis=0)
    kept = np.clip(np.floor(warm + 1e-9), 0, levels).astype(np.intp)  # levels 1..warm never start cold
    cold_b = above[kept]
    if cold_misses:
        delayed = cold_levels * (1.0 + rate[:, idx] * cold_start_seconds)
        delayed_above = np.concatenate([np.cumsum(delayed[::-1], axis=0)[::-1], np.zeros((1, idx.size))], axis=0)
        warm_b = warm[:, None]
        # only arrivals finding every kept-warm slot busy can wait for a cold start
        first = requests_b * sf_many(a_b, np.broadcast_to(warm_b * c, (rows, idx.size)).copy())
        if peak_in_flight is not None:
            peaks_b = np.maximum(peak_in_flight[idx], 1e-9)
            first = np.maximum(first, requests_b * np.clip(1.0 - warm_b * c / peaks_b, 0.0, 1.0))
        misses_b = np.minimum(requests_b, np.maximum(cold_b, np.minimum(first, delayed_above[kept])))
    else:
        misses_b = np.zeros_like(cold_b)
    return RiskRows(
        warm=warm,
        cold_starts=_scatter(rows, n, idx, cold_b),
        misses=_scatter(rows, n, idx, misses_b),
        capacity=alive,
    )


def _late_share(
    slots: FloatArray, peaks: FloatArray, slack_over_service: float, service_scv: float | None = None
) -> FloatArray:
    """Per entry, the share of a step's peak in flight expected to start past the slack on ``slots`` (rows x busy
    steps) when the peak's excess over the slots queues (``queueing.late_in_queue``)."""
    excess = np.ceil(np.maximum(peaks[None, :] - slots, 0.0) - 1e-9)
    share = np.zeros(np.broadcast_shapes(slots.shape, excess.shape), dtype=np.float64)
    over = np.argwhere(excess > 0)
    if over.size == 0:
        return share
    full = np.broadcast_to(slots, share.shape)
    for i, j in over.tolist():
        late = late_in_queue(float(full[i, j]), int(excess[i, j]), slack_over_service, service_scv)
        share[i, j] = min(1.0, late / max(float(peaks[j]), 1e-9))
    return share


def cluster_rows(
    traffic: StepTraffic,
    floor: FloatArray,
    concurrency: int,
    tail: float,
    slack_over_service: float,
    cold_start_seconds: float,
    cold_misses: bool,
    max_replicas: int,
    lag_steps: int,
    peak_in_flight: FloatArray | None = None,
    service_scv: float | None = None,
) -> RiskRows:
    """Per-step replicas, queueing misses and scale-from-zero misses in the cluster.

    Replicas follow the traffic with a lag, as the policy sizes them: each step has the replicas the peak of the
    previous ``lag_steps`` needed (so that waits past the slack stay under ``tail``, Erlang C), never fewer than
    the floor. A burst above the recent peak is absorbed only by the floor; a step that finds no replica waits
    for one to start. ``slack_over_service`` is the slack itself; ``service_scv`` the measured service law (None:
    unknown), which scales the steady queue's waits (``queueing.allen_cunneen_scale``) and sets how a burst's slots
    free (``queueing.queued_in_time``).
    """
    c = float(max(1, concurrency))
    queue_slack = wait_slack(slack_over_service, allen_cunneen_scale(service_scv))
    n, idx = traffic.steps, traffic.busy
    rows = floor.size
    needed = np.zeros(n, dtype=np.float64)
    a_b = traffic.in_flight[idx]
    needed[idx] = replicas_for_wait_many(a_b, concurrency, queue_slack, tail, max_replicas)
    peaks_b = peak_in_flight[idx] if peak_in_flight is not None else None
    if peaks_b is not None:
        # bursts shorter than a step: the observed peak needs its slots, less the requests that may queue behind
        # them and still start within the slack (``queueing.burst_level`` with no steady stream under the burst:
        # conservative, ``decide`` also counts what a steady stream works off)
        burst = np.array(
            [
                replicas_for_burst(p, concurrency, 0.0, slack_over_service, tail, max_replicas, service_scv)
                for p in peaks_b.tolist()
            ],
            dtype=np.float64,
        )
        needed[idx] = np.minimum(np.maximum(needed[idx], burst), float(max_replicas))
    following = keep_alive_pool(needed, max(1, lag_steps))
    replicas = np.clip(np.maximum(following[None, :], floor[:, None]), 0.0, float(max_replicas))
    requests_b = traffic.requests[idx]
    replicas_b = replicas[:, idx]
    from_zero_b = replicas_b <= 0
    # with no replica the first request starts one; it then serves the step
    serving_b = np.maximum(replicas_b, 1.0)
    queued_b = requests_b * queue_miss_many(a_b, serving_b * c, queue_slack)
    if peaks_b is not None:
        # a burst above the slots queues its excess: the share of the step's requests expected to start past the
        # slack is at risk (``queueing.late_in_queue``: all of the excess when the slack is under a service time)
        over_b = _late_share(serving_b * c, peaks_b, slack_over_service, service_scv)
        queued_b = np.maximum(queued_b, requests_b * over_b)
    cold_b = from_zero_b.astype(np.float64)
    if cold_misses:
        start_b = np.minimum(requests_b, 1.0 + traffic.rps[idx] * cold_start_seconds)
        zero_misses_b = cold_b * start_b
    else:
        zero_misses_b = np.zeros_like(cold_b)
    misses_b = np.minimum(requests_b, queued_b + zero_misses_b)
    billed = replicas.copy()
    billed[:, idx] = serving_b
    return RiskRows(
        warm=floor,
        cold_starts=_scatter(rows, n, idx, cold_b),
        misses=_scatter(rows, n, idx, misses_b),
        capacity=billed,
    )
