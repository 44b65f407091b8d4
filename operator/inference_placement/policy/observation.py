"""What the live operator measures of a workload each tick: the signals ``decide`` may read, at what resolution.

The simulator builds ``ours``'s ``TrafficWindow`` from this description and nothing else (the parity rule: every
input ``ours`` reads in the benchmark is one the live operator measures), and a test checks that the live
Prometheus source fills exactly these fields. A signal the live source learns to measure is added here, and the
benchmark credits it from then on.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LIVE_OBSERVATION", "ObservedSignals"]


@dataclass(frozen=True)
class ObservedSignals:
    """Which ``TrafficWindow`` fields a metrics source fills, and over what span."""

    window_seconds: float
    """Trailing window of per-step request rates handed to ``decide`` (the live ``--metrics-range-seconds``)."""
    step_seconds: float
    """Resolution of that window (the live ``--metrics-step-seconds``); a coarser trace step is used as it is."""
    slo_miss_window_seconds: float
    """Span of the measured share of requests slower than the SLO (``slo_miss_share``)."""
    rate_window_seconds: float = 0.0
    """Span each point of the window's request rate averages over (the live ``rate()`` range, ``$rate_window``):
    a point at ``t`` is the rate over ``[t - rate_window, t]``, so a burst shorter than that is spread over the
    following points. 0 = the step (each point the rate of its own step)."""
    latency_p99: bool = True
    """``observed_p99_seconds``: the recent p99 from the latency histogram."""
    service_seconds: bool = True
    """``service_seconds``: the window's mean service time (duration sum / count)."""
    service_per_step: bool = False
    """``service_per_step``: each step's mean service time, over the rate window as the rates are."""
    peak_in_flight: bool = False
    """``peak_in_flight``: the in-flight peak of each step."""
    in_flight_sample_seconds: float = 0.0
    """How often the in-flight gauge is read (the router's scrape interval): each step's peak is the largest
    reading, so a burst between two scrapes is not seen. 0 = the exact peak."""
    warm_latency: bool = False
    """``warm_latency_seconds``: latency of requests that neither queued nor waited for a start; measured for a
    workload whose objective bounds the first token as the median of the router's first-token histogram over the
    window (a request that queued or waited for a start is slower than the median while fewer than half do)."""
    slo_misses_per_step: bool = False
    """``slo_misses``: requests slower than the SLO per step."""
    history_seconds: float = 0.0
    """``history_rps`` and ``history_slo_misses`` over this span; 0 = none beyond the window."""
    history_step_seconds: float = 0.0
    """The step of that history (``TrafficWindow.history_step_seconds``); 0 = the window's step."""


LIVE_OBSERVATION = ObservedSignals(
    window_seconds=1800.0,
    step_seconds=30.0,
    slo_miss_window_seconds=300.0,
    rate_window_seconds=60.0,
    peak_in_flight=True,
    in_flight_sample_seconds=15.0,
    service_per_step=True,
    slo_misses_per_step=True,
    history_seconds=86400.0,
    history_step_seconds=300.0,
    warm_latency=True,
)
"""What ``metrics/prometheus.py`` measures with the operator's default settings and templates
(``PrometheusSource.observed_signals`` says so for any settings): the request rate of each step over a 60 s rate
window, the in-flight peak of each step as the chart's 15 s scrapes of the router read it, the SLO misses of each
step of the window, p99, mean service time (of the window and of each step), the SLO-miss share,
a day of request-rate and miss history at 300 s, and for a workload whose objective bounds the first token
(``spec.slo.latencyMeasure: FirstToken``) the latency and misses of its first byte, and their median over the window
as ``warm_latency`` (the router's first-token histogram, ``routing.envoy.FIRST_TOKEN_STAT``)."""
