"""The per-step and history signals of the Prometheus source against a real Prometheus over backfilled router series.

What the router reports (``docs/promql.md``), for 40 minutes before ``NOW``, per (workload, target), sampled every
15 s: ``envoy_cluster_upstream_rq_total``, the ``envoy_cluster_upstream_rq_time`` histogram (ms), the in-flight gauge
``envoy_cluster_upstream_rq_active``, and the router's ``up``; plus vLLM's time-to-first-token histogram for the
opt-in warm latency. ``stream`` is a workload whose objective bounds the first token: the same router series
(answers taking 500-1000 ms in all) and the router's first-token histogram (60 % within 250 ms, all within 500 ms).
The default templates read them, as the operator does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from inference_placement.api.workload import WorkloadKey
from inference_placement.controller.settings import OperatorSettings
from inference_placement.metrics.prometheus import PrometheusSource
from inference_placement.metrics.promql import VLLM_WARM_LATENCY, PromQLTemplates
from inference_placement.policy.decide import TrafficWindow
from inference_placement.policy.observation import LIVE_OBSERVATION
from inference_placement.sim.policies import bucket_quantile
from tests.plugins.prometheus import OpenMetricsBuilder, PrometheusBinaries, PrometheusServer, running_prometheus

NOW = datetime(2019, 7, 16, 12, 0, tzinfo=UTC)
NOW_TS = int(NOW.timestamp())
MINUTES = 40
START = NOW_TS - MINUTES * 60

PER_MINUTE = {"cluster": 120.0, "lambda": 60.0}
"""Requests per minute per target of ``chat``: 3 requests per second in all."""
RPS = sum(PER_MINUTE.values()) / 60
BUCKETS_MS = (25.0, 50.0, 100.0, 250.0, 500.0, 1000.0)
SHARES = {50.0: 0.90, 100.0: 0.05, 250.0: 0.05}
"""90 % <= 50 ms, 95 % <= 100 ms, all <= 250 ms."""
ACTIVE = {"cluster": 4.0, "lambda": 2.0}
SPIKE = 10.0
"""The cluster target's in-flight gauge reads ``SPIKE`` at 15 s past each minute (mid-step), ``ACTIVE`` otherwise."""
MEAN_TTFT_SECONDS = 0.2
FIRST_TOKEN_SHARES = {250.0: 0.6, 500.0: 0.4}
"""``stream``'s first byte: 60 % within 250 ms, all within 500 ms; its whole answers all take 500-1000 ms."""

ROUTER = PromQLTemplates()
WITH_WARM_LATENCY = replace(ROUTER, warm_latency=VLLM_WARM_LATENCY)


def _spiking(level: float, spike: float) -> Callable[[float], float]:
    return lambda ts: spike if ts % 60 == 15 else level


def _openmetrics() -> str:
    om = OpenMetricsBuilder(sample_interval_seconds=15)
    for target, per_minute in PER_MINUTE.items():
        labels = {"namespace": "router", "workload": "chat", "target": target}
        om.counter_from_minute_counts("envoy_cluster_upstream_rq_total", labels, START, [per_minute] * MINUTES)
    labels = {"namespace": "router", "workload": "broken-gauge", "target": "cluster"}
    om.counter_from_minute_counts("envoy_cluster_upstream_rq_total", labels, START, [60.0] * MINUTES)
    for target, per_minute in PER_MINUTE.items():
        om.histogram_from_minute_counts(
            "envoy_cluster_upstream_rq_time",
            {"namespace": "router", "workload": "chat", "target": target},
            START,
            [per_minute] * MINUTES,
            bucket_shares=SHARES,
            mean_seconds=40.0,  # milliseconds: Envoy's unit
            buckets=BUCKETS_MS,
        )
    for target, active in ACTIVE.items():
        labels = {"namespace": "router", "workload": "chat", "target": target}
        spike = SPIKE if target == "cluster" else active
        om.gauge_every("envoy_cluster_upstream_rq_active", labels, START, NOW_TS, _spiking(active, spike))
    om.gauge_every(  # garbage: a negative number of requests in flight
        "envoy_cluster_upstream_rq_active",
        {"namespace": "router", "workload": "broken-gauge", "target": "cluster"},
        START,
        NOW_TS,
        lambda _ts: -1.0,
    )
    om.histogram_from_minute_counts(
        "vllm:time_to_first_token_seconds",
        {"namespace": "router", "workload": "chat"},
        START,
        [PER_MINUTE["cluster"]] * MINUTES,
        bucket_shares={0.25: 1.0},
        mean_seconds=MEAN_TTFT_SECONDS,
    )
    stream = {"namespace": "router", "workload": "stream", "target": "cluster"}
    om.counter_from_minute_counts("envoy_cluster_upstream_rq_total", stream, START, [120.0] * MINUTES)
    om.histogram_from_minute_counts(
        "envoy_cluster_upstream_rq_time",
        stream,
        START,
        [120.0] * MINUTES,
        bucket_shares={1000.0: 1.0},
        mean_seconds=800.0,
        buckets=BUCKETS_MS,
    )
    om.gauge_every("envoy_cluster_upstream_rq_active", stream, START, NOW_TS, lambda _ts: 2.0)
    om.histogram_from_minute_counts(
        "envoy_inference_placement_first_token",
        {"namespace": "router", "workload": "stream"},
        START,
        [120.0] * MINUTES,
        bucket_shares=FIRST_TOKEN_SHARES,
        mean_seconds=240.0,
        buckets=BUCKETS_MS,
    )
    om.gauge_every("up", {"job": "inference-router", "instance": "router-0"}, START, NOW_TS, lambda _ts: 1.0)
    return om.render()


@pytest.fixture(scope="module")
def prom(
    prometheus_binaries: PrometheusBinaries, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    with running_prometheus(prometheus_binaries, _openmetrics(), tmp_path_factory.mktemp("prom")) as server:
        yield server


CHAT = WorkloadKey("router", "chat")
BROKEN = WorkloadKey("router", "broken-gauge")
STREAM = WorkloadKey("router", "stream")
OBJECTIVE = {CHAT: 0.1, BROKEN: 0.1}


def _operator_source(url: str, **options: Any) -> PrometheusSource:
    """The source as the operator builds it (``controller/runtime.py``), from the settings' defaults."""
    settings = OperatorSettings()
    return PrometheusSource(
        url,
        range_seconds=settings.metrics_range_seconds,
        step_seconds=settings.metrics_step_seconds,
        max_staleness_seconds=settings.max_metrics_staleness_seconds,
        **options,
    )


async def _window(url: str, key: WorkloadKey = CHAT, **options: Any) -> TrafficWindow:
    snapshot = await _operator_source(url, **options).fetch([CHAT, BROKEN], NOW, OBJECTIVE)
    assert snapshot.problem is None, snapshot.problem
    return snapshot.windows[key]


# ----------------------------------------------------------------------------------------------- each signal


async def test_peak_in_flight_is_each_steps_peak_summed_over_targets(prom: PrometheusServer) -> None:
    """A step ending at :30 holds the cluster's spike at :15 (10 + 2 in flight); one ending at :00 does not
    (4 + 2). Aligned with the request rate, step for step."""
    window = await _window(prom.url)
    assert window.peak_in_flight is not None and len(window.peak_in_flight) == len(window.rps) == 60
    end = int(window.end.timestamp())
    step = int(window.step_seconds)
    expected = [
        SPIKE + ACTIVE["lambda"] if (end - (59 - i) * step) % 60 == 30 else sum(ACTIVE.values()) for i in range(60)
    ]
    assert list(window.peak_in_flight) == expected


async def test_a_negative_in_flight_gauge_is_unknown_not_a_reason_to_withhold_the_window(
    prom: PrometheusServer,
) -> None:
    window = await _window(prom.url, BROKEN)
    assert window.peak_in_flight is None
    assert window.rps[-1] == pytest.approx(1.0)


async def test_slo_misses_per_step_are_the_requests_over_the_bound_in_each_step(prom: PrometheusServer) -> None:
    """Objective 100 ms: the 5 % above the 100 ms bound miss, of 3 requests per second, per 30 s step."""
    window = await _window(prom.url)
    assert window.slo_misses is not None and len(window.slo_misses) == len(window.rps)
    assert window.slo_misses == pytest.approx([0.05 * RPS * 30] * 60, rel=1e-9)
    assert window.slo_miss_share == pytest.approx(0.05)


async def test_the_history_is_a_day_at_300_s_with_its_misses(prom: PrometheusServer) -> None:
    """The data starts 40 minutes before NOW: the 8 points of 300 s it covers whole, each the mean rate of its
    5 minutes; the misses over them are 5 % of their requests."""
    window = await _window(prom.url)
    assert window.history_step_seconds == 300
    assert window.history_rps == pytest.approx([RPS] * 8, rel=1e-9)
    assert window.history_slo_misses == pytest.approx(0.05 * RPS * 8 * 300, rel=1e-6)
    # no objective: no misses, the history's rate all the same
    snapshot = await _operator_source(prom.url).fetch([CHAT], NOW)
    assert snapshot.windows[CHAT].history_slo_misses is None and snapshot.windows[CHAT].slo_misses is None
    assert snapshot.windows[CHAT].history_rps == window.history_rps


async def test_a_first_token_objective_is_measured_on_the_first_byte_and_its_median_is_the_warm_latency(
    prom: PrometheusServer,
) -> None:
    """``stream``'s objective (0.5 s) bounds the first token: its p99, SLO misses (per step, recent, the day's) and
    warm latency come from the router's first-token histogram, where no request misses, though every whole answer
    takes longer than the objective. ``chat``, with no first-token histogram, is measured on its whole answers and
    has no warm latency (the policy takes its service time)."""
    snapshot = await _operator_source(prom.url).fetch([CHAT, STREAM], NOW, {CHAT: 0.1, STREAM: 0.5})
    stream, chat = snapshot.windows[STREAM], snapshot.windows[CHAT]
    assert stream.slo_miss_share == 0.0 and stream.history_slo_misses == 0.0
    assert stream.slo_misses is not None and set(stream.slo_misses) == {0.0}
    # Prometheus interpolates within the bucket: p99 at 250 + 250 x (0.99 - 0.6) / 0.4 ms, the median at
    # 100 + 150 x 0.5 / 0.6 ms
    assert stream.observed_p99_seconds == pytest.approx(0.49375, rel=1e-6)
    assert stream.warm_latency_seconds == pytest.approx(0.225, rel=1e-6)
    # the simulator reads its first-token histogram as Prometheus does (the benchmark's ``ours`` is shown the same)
    bounds = np.asarray(BUCKETS_MS) / 1000
    cumulative = np.r_[[sum(v for b, v in FIRST_TOKEN_SHARES.items() if b <= bound) for bound in BUCKETS_MS], 1.0]
    assert bucket_quantile(0.5, bounds, cumulative) == pytest.approx(stream.warm_latency_seconds, rel=1e-6)
    assert bucket_quantile(0.99, bounds, cumulative) == pytest.approx(stream.observed_p99_seconds, rel=1e-6)
    assert chat.warm_latency_seconds is None
    assert chat.slo_miss_share == pytest.approx(0.05)  # its whole answers: 5 % over 100 ms
    # the same workload's whole answers, had its objective bounded them: every one over 0.5 s
    assert stream.service_seconds == pytest.approx(0.8, rel=1e-6)


async def test_warm_latency_is_the_mean_time_to_first_token_only_where_configured(prom: PrometheusServer) -> None:
    window = await _window(prom.url, templates=WITH_WARM_LATENCY)
    assert window.warm_latency_seconds == pytest.approx(MEAN_TTFT_SECONDS)
    assert (await _window(prom.url, BROKEN, templates=WITH_WARM_LATENCY)).warm_latency_seconds is None


async def test_a_failing_per_step_query_freezes_the_whole_fetch(prom: PrometheusServer) -> None:
    broken = replace(ROUTER, in_flight="sum by ($by) (max_over_time(envoy_cluster_upstream_rq_active{$selector}[")
    snapshot = await _operator_source(prom.url, templates=broken).fetch([CHAT], NOW, OBJECTIVE)
    assert snapshot.windows == {}
    assert snapshot.problem is not None and "400" in snapshot.problem


# ----------------------------------------------------------------------------------------------- the parity rule


_DECLARED = {
    "observed_p99_seconds": LIVE_OBSERVATION.latency_p99,
    "service_seconds": LIVE_OBSERVATION.service_seconds,
    "warm_latency_seconds": LIVE_OBSERVATION.warm_latency,
    "peak_in_flight": LIVE_OBSERVATION.peak_in_flight,
    "service_per_step": LIVE_OBSERVATION.service_per_step,
    "rate_window_seconds": LIVE_OBSERVATION.rate_window_seconds > 0,
    "slo_miss_share": LIVE_OBSERVATION.slo_miss_window_seconds > 0,
    "slo_misses": LIVE_OBSERVATION.slo_misses_per_step,
    "history_rps": LIVE_OBSERVATION.history_seconds > 0,
    "history_slo_misses": LIVE_OBSERVATION.history_seconds > 0,
    "history_step_seconds": LIVE_OBSERVATION.history_step_seconds > 0,
    "known_idle_steps": False,  # the future: only the benchmark's clairvoyant reference line is shown it
}
"""Each optional ``TrafficWindow`` field and whether ``LIVE_OBSERVATION`` says the live source fills it."""


async def test_a_live_window_holds_exactly_what_live_observation_declares(prom: PrometheusServer) -> None:
    """The operator's source, with the operator's default settings and templates, fills exactly the fields the
    simulator shows ``ours`` (``policy/observation.py``), over the declared spans."""
    optional = {f.name for f in dataclasses.fields(TrafficWindow)} - {"step_seconds", "rps", "end"}
    assert optional == set(_DECLARED), "a new TrafficWindow field: say whether the live source fills it"
    source = _operator_source(prom.url)
    # a workload whose objective bounds the first token: the warm latency is measured for such workloads only
    window = (await source.fetch([STREAM], NOW, {STREAM: 0.5})).windows[STREAM]
    filled = {name: getattr(window, name) is not None for name in _DECLARED}
    assert filled == _DECLARED
    assert len(window.rps) * window.step_seconds == LIVE_OBSERVATION.window_seconds
    assert window.step_seconds == LIVE_OBSERVATION.step_seconds
    assert source.slo_miss_window_seconds == LIVE_OBSERVATION.slo_miss_window_seconds
    assert source.history_points * source.history_step_seconds == LIVE_OBSERVATION.history_seconds
    assert window.history_step_seconds == LIVE_OBSERVATION.history_step_seconds
    assert window.rate_window_seconds == LIVE_OBSERVATION.rate_window_seconds
    assert window.service_per_step is not None and len(window.service_per_step) == len(window.rps)


# ----------------------------------------------------------------------------------------------- incremental


async def test_every_tick_equals_a_whole_fetch_and_sends_the_same_queries_for_one_or_two_workloads(
    prom: PrometheusServer,
) -> None:
    """Tick after tick across two 300 s history boundaries: the kept arrays give what a fresh source fetching the
    whole window and the whole day gives, with the warm latency on; the steady query count does not depend on how
    many workloads are asked for."""
    incremental = _operator_source(prom.url, templates=WITH_WARM_LATENCY)
    single = _operator_source(prom.url, templates=WITH_WARM_LATENCY)
    steady: set[tuple[int, bool]] = set()
    ticks = 0
    for ts in range(NOW_TS - 630, NOW_TS + 1, 30):
        now = datetime.fromtimestamp(ts, UTC)
        complete = incremental.history_complete
        kept = await incremental.fetch([CHAT, BROKEN], now, OBJECTIVE)
        whole = await _operator_source(prom.url, templates=WITH_WARM_LATENCY).fetch([CHAT, BROKEN], now, OBJECTIVE)
        one = await single.fetch([CHAT], now, {CHAT: 0.1})
        assert kept.problem is None and whole.problem is None
        assert kept.windows == whole.windows, now
        assert kept.per_workload_problem == whole.per_workload_problem, now
        assert kept.windows[CHAT].peak_in_flight is not None and kept.windows[CHAT].history_rps is not None
        if ticks:
            assert kept.queries == one.queries
            steady.add((kept.queries, complete))
        ticks += 1
    assert incremental.whole_fetches == 1 and single.whole_fetches == 1
    # one per signal (router_up included), the share, per-step misses, peaks and service times, the history and its
    # misses; and an older span of those two per fetch until the day is in (the first fetch's newest span, then 19
    # more)
    base = len(incremental.queries) + 5
    assert steady == {(base + 2, False), (base, True)}
    assert ticks == 22 and incremental.history_complete


async def test_a_new_workload_joins_the_history_and_a_missed_overlap_starts_it_over(prom: PrometheusServer) -> None:
    source = _operator_source(prom.url)

    def at(offset: int) -> datetime:
        return datetime.fromtimestamp(NOW_TS + offset, UTC)

    for k in range(20):  # the newest span, then 19 older ones: the day is in
        assert not source.history_complete
        await source.fetch([CHAT], at(-900 + 30 * k), {CHAT: 0.1})
    assert source.history_complete
    # a workload not fetched before gets a row; the older spans are asked for again, its newest ones at once
    joined = await source.fetch([CHAT, BROKEN], at(-300), OBJECTIVE)
    fresh = await _operator_source(prom.url).fetch([CHAT, BROKEN], at(-300), OBJECTIVE)
    assert not source.history_complete
    assert joined.windows[BROKEN].history_rps is not None
    assert joined.windows == fresh.windows
    # more than the overlap missed: the history starts over from its newest span
    await source.fetch([CHAT, BROKEN], at(-30), OBJECTIVE)
    assert not source.history_complete
    later = await source.fetch([CHAT, BROKEN], NOW, OBJECTIVE)
    assert later.windows == (await _operator_source(prom.url).fetch([CHAT, BROKEN], NOW, OBJECTIVE)).windows
