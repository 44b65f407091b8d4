"""The traffic the policy plans for, from the observed window (no model fitting: the window is the forecast).

The next month is projected to look like the observed window (its daily cycle included when the window spans a
day); the near term is the trailing part of the window the workload is committed for (a migration cannot be
undone before the cooldown); replicas are sized for the peak of the trailing sustain window, extrapolated over the
time a new replica needs to start when traffic is rising by more than its noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from inference_placement.api.spec import InferenceWorkloadSpec
from inference_placement.policy.queueing import FloatArray

__all__ = ["TrafficForecast", "clean_rates", "forecast_from_rates", "idle_forecast"]


def clean_rates(values: tuple[float, ...] | list[float] | FloatArray) -> FloatArray:
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

    def sizing_rps(self, lead_seconds: float) -> float:
        """Rate to size replicas for now: the sustain window's peak, or the rising trend carried over the lead.

        The trend counts only when it stands out of the noise: its least-squares slope must exceed two standard
        errors, the noise being the larger of the fit's residuals and the Poisson noise of the counts (a steady
        stream's random ups and downs must not buy a replica)."""
        if self.rps.size == 0:
            return 0.0
        window = self.rps[self.sustain]
        peak = float(window.max())
        slope = _significant_slope(window, self.step_seconds) if window.size >= 3 and peak > 0 else 0.0
        if slope > 0:
            peak = max(peak, float(window[-1]) + slope * (lead_seconds / self.step_seconds + 1.0))
        return peak


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


def _steps(seconds: float, step_seconds: float) -> int:
    return max(1, math.ceil(seconds / step_seconds - 1e-9))


def forecast_from_rates(
    spec: InferenceWorkloadSpec,
    rps: FloatArray,
    step_seconds: float,
    service_seconds: float | None = None,
    warm_latency_seconds: float | None = None,
    peak_in_flight: FloatArray | None = None,
) -> TrafficForecast:
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
    )


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
