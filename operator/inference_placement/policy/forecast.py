"""The traffic the policy plans for, from the observed window (no model fitting: the window is the forecast).

The next month is projected to look like the observed window (its daily cycle included when the window spans a
day); the near term is the trailing part of the window the workload is committed for (a migration cannot be
undone before the cooldown); replicas are sized for the peak of the trailing sustain window, extrapolated over the
time a new replica needs to start when traffic is rising by more than its noise, and lifted by a quantile of the
rate's own step-to-step variability beyond Poisson noise (its overdispersion) where the window shows one
(``rate_variability``; it adds to the in-flight count's variance: ``queueing.rate_peakedness``). The queueing
terms read each step's rate as its count estimates it (``poisson_shrunk_rates``): a count is a Poisson draw around
the rate, and Erlang C already integrates over that draw.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from statistics import NormalDist

import numpy as np

from inference_placement.api.spec import InferenceWorkloadSpec
from inference_placement.policy.queueing import FloatArray, allen_cunneen_scale

__all__ = [
    "SCV_CONFIDENCE",
    "RateVariability",
    "TrafficForecast",
    "clean_rates",
    "forecast_from_rates",
    "idle_forecast",
    "measured_service_scv",
    "poisson_shrunk_rates",
    "rate_variability",
    "service_scv",
]


def clean_rates(values: Sequence[float] | FloatArray) -> FloatArray:
    """Rates as floats >= 0; a missing sample (NaN, inf, negative) repeats the previous one (0 at the start)."""
    rates = np.asarray(values, dtype=np.float64).copy()
    bad = ~np.isfinite(rates) | (rates < 0)
    if bad.any():
        last = 0.0
        for i in range(rates.size):
            if bad[i]:
                rates[i] = last
            else:
                last = float(rates[i])
    return rates


@dataclass(frozen=True)
class TrafficForecast:
    step_seconds: float
    rps: FloatArray
    """Request rate per step, oldest first: the observed window, used as the forecast of the next one."""
    service_seconds: float
    """Warm service time per request (observed mean when metrics give it, else the spec's)."""
    recent_steps: int
    """Trailing steps of the near-term horizon (max of sustain and cooldown)."""
    sustain_steps: int
    """Trailing steps a threshold must hold over before a migration."""
    observed: bool = True
    """False for the prior used before any metrics exist (first placement)."""
    warm_latency_seconds: float | None = None
    """What the SLO's latency measures on a request that neither queues nor waits for a cold start (observed
    mean, e.g. time to first token); None = the whole service time."""
    peak_in_flight: FloatArray | None = None
    """Observed peak requests in flight per step (None = unknown)."""
    service_scv: float | None = None
    """Squared coefficient of variation of the service time, as the steps' mean service times show it
    (``service_scv``); None = unknown (the queueing models then take exponential service)."""
    service_per_step: FloatArray | None = None
    """Each step's mean service time, aligned with ``rps`` (a point that is not a positive number: a step without
    requests); None = unknown (every step then takes ``service_seconds``)."""

    @property
    def wait_scale(self) -> float:
        """How much longer than under exponential service requests wait for a slot (``queueing.allen_cunneen_scale``
        of the measured ``service_scv``)."""
        return allen_cunneen_scale(self.service_scv)

    @cached_property
    def in_flight_per_step(self) -> FloatArray:
        """Each step's mean requests in flight, Little's law per step: its rate times its own mean service time
        where measured (a request mix that shifts moves the one with the other), the window's mean elsewhere (a
        step without requests, or no per-step measure)."""
        service = self.service_per_step
        if service is None or service.size != self.rps.size:
            return self.rps * self.service_seconds
        own = np.where(np.isfinite(service) & (service > 0), service, self.service_seconds)
        return np.asarray(self.rps * own, dtype=np.float64)

    def observed_peak(self, part: slice | None = None) -> float:
        """The largest observed in-flight peak over ``part`` of the window (0 when unknown)."""
        if self.peak_in_flight is None or self.peak_in_flight.size == 0:
            return 0.0
        values = self.peak_in_flight[part] if part is not None else self.peak_in_flight
        return float(values.max()) if values.size else 0.0

    @property
    def warm_latency(self) -> float:
        return self.warm_latency_seconds if self.warm_latency_seconds is not None else self.service_seconds

    @property
    def steps(self) -> int:
        return int(self.rps.size)

    @property
    def seconds(self) -> float:
        return self.steps * self.step_seconds

    @property
    def requests(self) -> float:
        return float(self.rps.sum() * self.step_seconds)

    @property
    def recent(self) -> slice:
        return slice(max(0, self.steps - self.recent_steps), self.steps)

    @property
    def sustain(self) -> slice:
        return slice(max(0, self.steps - self.sustain_steps), self.steps)

    @cached_property
    def estimated_rps(self) -> FloatArray:
        """Each step's rate as its count estimates it (``poisson_shrunk_rates`` over a sustain window centred on
        the step): what the queueing terms read. ``rps`` stays the observed counts (requests, costs, idle steps)."""
        return poisson_shrunk_rates(self.rps, self.step_seconds, self.sustain_steps // 2)

    def sizing_rps(self, lead_seconds: float) -> float:
        """Rate to size replicas for now: the sustain window's peak, or the rising trend carried over the lead.

        The peak is that of the estimated rates (``estimated_rps``): the largest of a few Poisson counts overstates
        a sparse stream's rate (five minutes at 2 a minute reach 4 in one of them more often than not).

        The trend counts only when it stands out of the noise: its least-squares slope must exceed two standard
        errors, the noise being the larger of the fit's residuals and the Poisson noise of the counts (a steady
        stream's random ups and downs must not buy a replica)."""
        if self.rps.size == 0:
            return 0.0
        window = self.rps[self.sustain]
        peak = float(self.estimated_rps[self.sustain].max())
        slope = _significant_slope(window, self.step_seconds) if window.size >= 3 and peak > 0 else 0.0
        if slope > 0:
            peak = max(peak, float(window[-1]) + slope * (lead_seconds / self.step_seconds + 1.0))
        return peak

    def variability(self, lead_seconds: float = 0.0) -> RateVariability:
        """The rate's own variability over the window, beyond the Poisson noise of its counts, between steps as
        far apart as a capacity set now must hold: a replica's start plus one step (the next decision's)."""
        lag = math.ceil((lead_seconds + self.step_seconds) / self.step_seconds - 1e-9)
        return rate_variability(self.rps, self.step_seconds, lag)

    def in_flight_peakedness(self) -> float:
        """How many times more the in-flight count varies than Poisson at the step's rate, as the observed
        in-flight peaks show it (1 when they show nothing Poisson arrivals would not).

        A step's peak ``p`` over its mean in flight ``a = rate x service`` is within ``_POISSON_BOUND`` standard
        deviations (``sqrt(a)``, at least 1) for Poisson arrivals; a peak beyond that, that the step before's load
        does not explain either (its requests are still in flight early in the step), is a burst shorter than the
        step, and ``((p - a) / (bound sqrt(a)))^2`` is the variance that makes it no rarer than that bound: the
        peakedness of the in-flight count, at most the largest peak (that of bursts of at most that size). The
        window's largest counts: bursts of a workload recur (the window is the forecast), and a gauge read at
        scrapes sees only some of them."""
        if self.peak_in_flight is None or self.peak_in_flight.size != self.rps.size:
            return 1.0
        a = self.in_flight_per_step
        scale = _POISSON_BOUND * np.sqrt(np.maximum(a, 1.0))
        ratio_now = (self.peak_in_flight - a) / scale
        # requests of the step before are still in flight early in a step: after a fall in the rate the count
        # starts from the higher level, so a reading is a burst only when that level does not explain it either
        before = np.concatenate((ratio_now[:1], (self.peak_in_flight[1:] - a[:-1]) / scale[:-1]))
        ratio = float(np.max(np.where(before > 1.0, ratio_now, 0.0))) if a.size else 0.0
        # a count made of bursts of at most B requests has a peakedness E[B^2] / E[B] <= B: never more than the
        # largest burst seen
        return min(max(1.0, ratio) ** 2, max(1.0, float(self.peak_in_flight.max())))

    def level_rps(self) -> float:
        """The rate's present level: the mean over the sustain window, or the last step's rate when higher (a rate
        that has just risen is where the next step starts from); 0 when nothing was observed."""
        if self.rps.size == 0:
            return 0.0
        return max(float(self.rps[self.sustain].mean()), float(self.rps[-1]))


_POISSON_BOUND = 3.0
"""Standard deviations above its mean a Poisson in-flight count reaches at a reading with a chance of 0.13 %:
a reading beyond it is taken as a burst, not chance."""


@dataclass(frozen=True)
class RateVariability:
    """How much a window's per-step rate varies from step to step, against the Poisson noise of its counts."""

    dispersion: float
    """Index of dispersion of the per-step counts around their local level: the variance of successive
    differences over two (von Neumann's estimator, insensitive to a trend or slow cycle) divided by the mean count.
    1 for Poisson arrivals at a steady or slowly changing rate; above 1 when the rate itself moves between steps
    (bursts, a rate that jumps); 0 when unknown (no traffic or too few steps)."""
    excess_sd_rps: float
    """Standard deviation of one step's rate around the local level beyond the Poisson noise (requests per
    second); 0 unless the dispersion stands out of the estimator's own noise (two standard errors)."""


_NO_VARIABILITY = RateVariability(dispersion=0.0, excess_sd_rps=0.0)


def rate_variability(rates: FloatArray, step_seconds: float, lag: int = 1) -> RateVariability:
    """The rate's own step-to-step variability in ``rates`` (per step, oldest first), beyond Poisson noise.

    Counts per step are ``rate x step``. Their variance around the local level is estimated by the variance of
    their successive differences over two, ``v`` (von Neumann's estimator, with the differences' mean, a linear
    trend, taken out); Poisson counts have ``v ~ m`` (the mean count). What exceeds it,
    ``v - m``, is the variance of the rate itself between steps, counted when ``v`` exceeds ``m`` by more than
    two standard errors of the estimator (about ``m sqrt(3 / n)`` for ``n`` differences): a Poisson stream's
    random ups and downs buy nothing.

    ``lag``: the differences are taken between steps that far apart (a semi-variogram at that lag), so a rate
    that wanders (its changes add up over steps, as a daily cycle's minutes do) shows what it can do over the
    time a capacity set now must hold; for changes that do not add up, every lag gives the same."""
    if rates.size < 4 or step_seconds <= 0:
        return _NO_VARIABILITY
    counts = rates * step_seconds
    mean = float(counts.mean())
    if mean <= 0:
        return _NO_VARIABILITY
    lag = max(1, min(lag, counts.size - 3))
    v = _local_variance(counts, lag)
    dispersion = v / mean
    noise = mean * (1.0 + 2.0 * math.sqrt(3.0 / (counts.size - lag)))
    excess = math.sqrt(v - mean) / step_seconds if v > noise else 0.0
    return RateVariability(dispersion=dispersion, excess_sd_rps=excess)


def _local_variance(counts: FloatArray, lag: int = 1) -> float:
    """Variance of per-step counts around their local level: von Neumann's estimator, the variance of the
    differences between steps ``lag`` apart over two, with the differences' mean (a steady trend) taken out."""
    diffs: FloatArray = counts[lag:] - counts[:-lag]
    diffs = diffs - diffs.mean()  # a steady trend (a ramp of the daily cycle) is not variability
    squares = float(np.dot(diffs, diffs))
    return squares / (2.0 * (diffs.size - 1))


def poisson_shrunk_rates(rates: FloatArray, step_seconds: float, half_width: int) -> FloatArray:
    """Each busy step's rate as its count estimates it, given the window (empirical Bayes for Poisson counts).

    A step's count is a Poisson draw around the rate of its step, and the queue its requests met was set by that
    rate: Erlang C at the rate already integrates over the draw, so reading the count itself as the rate counts the
    Poisson noise twice (a sparse stream's minutes of 1-5 requests at a steady 2 a minute size capacity for 5 a
    minute). The estimate shrinks the count's deviation from the local level ``L`` (the mean count of the
    ``half_width`` steps on either side, the step itself left out so that a lone burst does not lift the level it is
    judged by; the whole window's, the step left out, where those steps carry no request) by the share of the
    deviations' variance that Poisson noise explains, ``B = L / v`` (``v``: the counts' variance around their local
    level, von Neumann's estimator; at most 1): ``L + (1 - B) (count - L)``. A rate that really moves (``v`` well
    above the counts) keeps its steps: bursts, a jump, a high-volume stream whose Poisson noise is negligible; a
    Poisson stream's steps become its local level. Idle steps stay idle (they carry no request, and the idle-gap and
    serverless terms read them as they are). Windows of fewer than 4 steps are returned as they are."""
    rates = np.asarray(rates, dtype=np.float64)
    n = rates.size
    if n < 4 or step_seconds <= 0 or not bool((rates > 0).any()):
        return rates
    counts = rates * step_seconds
    v = _local_variance(counts)
    half = max(1, half_width)
    cumulative = np.concatenate(([0.0], np.cumsum(counts)))
    index = np.arange(n)
    lo = np.clip(index - half, 0, n)
    hi = np.clip(index + half + 1, 0, n)
    # the neighbours' mean: the step's own count left out, so a lone burst does not lift the level it is judged by
    level = (cumulative[hi] - cumulative[lo] - counts) / (hi - lo - 1)
    # neighbours without a request say nothing of the rate of a busy step among them (a stream of a request every
    # few minutes has such steps all the time, and a level of 0 would leave its lone count as the rate): the level
    # is then the whole window's, the step itself left out
    pooled = (cumulative[-1] - counts) / (n - 1)
    level = np.where(level > 0, level, pooled)
    noise_share = np.minimum(1.0, level / v) if v > 0 else np.ones(n)
    shrunk = level + (1.0 - noise_share) * (counts - level)
    estimated: FloatArray = np.where(rates > 0, np.maximum(shrunk, 0.0) / step_seconds, 0.0)
    return estimated


def _significant_slope(rates: FloatArray, step_seconds: float) -> float:
    """The least-squares slope of ``rates`` per step when it exceeds two standard errors, else 0."""
    n = rates.size
    x = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    sxx = float(x @ x)
    mean = float(rates.mean())
    slope = float(x @ (rates - mean)) / sxx
    residual = rates - mean - slope * x
    residual_var = float(residual @ residual) / (n - 2)
    poisson_var = mean / step_seconds  # variance of a rate measured from Poisson counts over one step
    stderr = math.sqrt(max(residual_var, poisson_var) / sxx)
    return slope if slope > 2.0 * stderr else 0.0


SCV_CONFIDENCE = 0.95
"""``service_scv`` is an upper bound at this confidence: a short or quiet window cannot show service times as
more regular than they are."""


@lru_cache(maxsize=1024)
def _chi2_quantile(p: float, dof: int) -> float:
    """The ``p`` quantile of chi-square with ``dof`` degrees of freedom (Wilson-Hilferty; 0 where it runs below)."""
    z = NormalDist().inv_cdf(p)
    h = 2.0 / (9.0 * dof)
    return dof * max(0.0, 1.0 - h + z * math.sqrt(h)) ** 3


def measured_service_scv(
    rps: FloatArray, step_seconds: float, service_per_step: Sequence[float] | None, rate_window_seconds: float | None
) -> float | None:
    """``service_scv`` of a window: its per-step mean service times (aligned with ``rps``; a point that is not a
    positive number is a step without requests) against the requests each mean is over (the rate times the span
    each point averages over, ``rate_window_seconds``; None = the step). None when unknown or misaligned."""
    if service_per_step is None or len(service_per_step) != rps.size:
        return None
    means = np.asarray(service_per_step, dtype=np.float64)
    return service_scv(means, rps * max(step_seconds, rate_window_seconds or 0.0))


def service_scv(mean_service: FloatArray, requests: FloatArray) -> float | None:
    """An upper bound (at ``SCV_CONFIDENCE``) of the service time's squared coefficient of variation ``c_s^2``
    from each step's mean service time and request count (the router measures both per step; no request's own
    time is kept).

    A step's mean of ``n`` service times of variance ``sigma^2`` varies by ``sigma^2 / n`` around the mean ``mu``,
    so over ``K`` steps with requests ``S = sum n_k (m_k - m)^2`` estimates ``(K - 1) sigma^2`` (the between-group
    sum of squares of a one-way analysis of variance, ``m`` the request-weighted mean), and ``S / sigma^2`` is
    about chi-square with ``K - 1`` degrees of freedom for near-normal means: ``sigma^2 <= S / chi2_(1 - conf)(K -
    1)`` at confidence ``conf``, and ``c_s^2 <= that / m^2``. What else moves the step means (a request mix
    drifting, requests that waited inside a replica) only adds to it: it errs towards more variable service, the
    conservative side. Rounded to a hundredth; None (unknown) with fewer than 2 steps with requests or where the bound
    is unbounded."""
    m = np.asarray(mean_service, dtype=np.float64)
    n = np.asarray(requests, dtype=np.float64)
    if m.size != n.size:
        return None
    ok = np.isfinite(m) & np.isfinite(n) & (n > 0) & (m > 0)
    k = int(ok.sum())
    if k < 2:
        return None
    m, n = m[ok], n[ok]
    mean = float((n * m).sum() / n.sum())
    spread = float((n * (m - mean) ** 2).sum())
    if spread <= 0.0:
        return 0.0
    low = _chi2_quantile(1.0 - SCV_CONFIDENCE, k - 1)
    if low <= 0.0:
        return None
    return round(spread / low / (mean * mean), 2)


def _steps(seconds: float, step_seconds: float) -> int:
    return max(1, math.ceil(seconds / step_seconds - 1e-9))


def forecast_from_rates(
    spec: InferenceWorkloadSpec,
    rps: FloatArray,
    step_seconds: float,
    service_seconds: float | None = None,
    warm_latency_seconds: float | None = None,
    peak_in_flight: FloatArray | None = None,
    service_per_step: Sequence[float] | None = None,
    rate_window_seconds: float | None = None,
) -> TrafficForecast:
    """The forecast from a window's per-step rates (and, where measured, its service time, warm latency, per-step
    in-flight peaks and per-step mean service times, each point's over ``rate_window_seconds``, None = the step)."""
    placement = spec.placement
    horizon = max(placement.sustain_seconds, placement.cooldown_seconds, step_seconds)
    service = service_seconds if service_seconds is not None and service_seconds > 0 else spec.model.service_seconds
    return TrafficForecast(
        step_seconds=step_seconds,
        rps=rps,
        service_seconds=service,
        recent_steps=_steps(horizon, step_seconds),
        sustain_steps=_steps(max(placement.sustain_seconds, step_seconds), step_seconds),
        warm_latency_seconds=warm_latency_seconds if warm_latency_seconds and warm_latency_seconds > 0 else None,
        peak_in_flight=peak_in_flight if peak_in_flight is not None and peak_in_flight.size == rps.size else None,
        service_scv=measured_service_scv(rps, step_seconds, service_per_step, rate_window_seconds),
        service_per_step=_aligned(service_per_step, rps.size),
    )


def _aligned(values: Sequence[float] | None, size: int) -> FloatArray | None:
    if values is None or len(values) != size:
        return None
    return np.asarray(values, dtype=np.float64)


def idle_forecast(spec: InferenceWorkloadSpec, step_seconds: float = 60.0) -> TrafficForecast:
    """The prior before any metrics: no traffic seen yet (the first request must still find a warm target)."""
    base = forecast_from_rates(spec, np.zeros(1, dtype=np.float64), step_seconds)
    return TrafficForecast(
        step_seconds=base.step_seconds,
        rps=base.rps,
        service_seconds=base.service_seconds,
        recent_steps=base.recent_steps,
        sustain_steps=base.sustain_steps,
        observed=False,
    )
