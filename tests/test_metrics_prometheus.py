"""The Prometheus metrics source against a real Prometheus serving backfilled data (no mock of Prometheus).

The data: a 30-minute segment of the Azure Functions 2019 trace (``../shared/traces``; per-minute invocation counts,
sampled every 15 s) for a few workloads with a latency histogram, 1,000 synthetic workloads, and workloads whose data
is garbage, stale or has a gap. Every fetch is pinned to ``NOW``, the end of the data.
"""

from __future__ import annotations

import asyncio
import csv
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from inference_placement.api.workload import WorkloadKey
from inference_placement.devtools.processes import free_port
from inference_placement.devtools.prometheus import Switch
from inference_placement.metrics.prometheus import WHOLE_WINDOW_POINTS_PER_QUERY, PrometheusSource
from inference_placement.metrics.promql import (
    MODEL_SERVER_TEMPLATES,
    PromQLTemplates,
    Signal,
    TemplateError,
    render_queries,
)
from inference_placement.metrics.source import MetricsSnapshot
from tests.plugins.prometheus import OpenMetricsBuilder, PrometheusBinaries, PrometheusServer, running_prometheus

REPO = Path(__file__).resolve().parents[1]
TRACE = REPO / ".." / "shared" / "traces" / "azure-functions-2019" / "100_inv.csv"

TRACE_DAY = datetime(2019, 7, 15, tzinfo=UTC).timestamp()
"""Minute 1 of the trace (the Azure Functions 2019 trace was recorded in July 2019; the weekday is irrelevant)."""
FIRST_MINUTE = 600
"""0-based index of the segment's first minute column (10:00)."""
MINUTES = 30
START = TRACE_DAY + FIRST_MINUTE * 60
NOW_TS = START + MINUTES * 60
NOW = datetime.fromtimestamp(NOW_TS, UTC)

TRACE_FUNCTIONS = {
    "busy": "e80f0c2ac8",  # 18..47 per minute
    "steady": "93c121e7aa",  # 25..41 per minute, alternating
    "bursty": "5314165977",  # mostly idle, bursts of 10-14; 1 request in the last minute
    "alternating": "e6c9527702",  # 14, 0, 14, 0 ...: no request in the last minute
}
LATENCY_SHARES = {0.05: 0.90, 0.1: 0.08, 0.25: 0.02}
"""90% <= 50 ms, 8% in (50, 100] ms, 2% in (100, 250] ms: p99 interpolates to 100 + 150 * (0.99 - 0.98) / 0.02."""
EXPECTED_P99_SECONDS = 0.175
MEAN_SERVICE_SECONDS = 0.06
GPU_PERCENT = {"0": 40.0, "1": 44.0}
"""Two GPUs of the busy workload (DCGM percent): mean utilisation 0.42."""
FLEET_SIZE = 1000

NAN_AT = START + 25 * 60
STALE_MINUTES = 15
GAP = (START + 10 * 60, START + 15 * 60)


def _source(url: str, *, templates: PromQLTemplates | None = None, **options: Any) -> PrometheusSource:
    """The real source reading this module's data: the project's model-server series (``MODEL_SERVER_TEMPLATES``;
    the router's series are read in ``test_router_metrics.py``)."""
    return PrometheusSource(url, templates=templates or MODEL_SERVER_TEMPLATES, **options)


GARBAGE_TEMPLATES = replace(
    MODEL_SERVER_TEMPLATES,
    request_rate="sum by ($by) (garbage_rps{$selector})",
    latency_p99="sum by ($by) (garbage_latency{$selector})",
    service_seconds=None,
    gpu_utilization=None,
)


def _trace_counts() -> dict[str, list[int]]:
    if not TRACE.is_file():
        message = f"trace not found at {TRACE} (the shared material lives at ../shared)"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    wanted = {prefix: name for name, prefix in TRACE_FUNCTIONS.items()}
    counts: dict[str, list[int]] = {}
    with TRACE.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        first = header.index("minute_1") + FIRST_MINUTE
        for row in reader:
            name = wanted.get(row[0][:10])
            if name is not None:
                counts[name] = [int(v) for v in row[first : first + MINUTES]]
    assert set(counts) == set(TRACE_FUNCTIONS), "trace rows not found"
    return counts


def _constant(value: float) -> Callable[[float], float]:
    return lambda _ts: value


def _openmetrics(counts: dict[str, list[int]]) -> str:
    om = OpenMetricsBuilder(sample_interval_seconds=15)
    for name, minute_counts in counts.items():
        labels = {"namespace": "trace", "workload": name, "code": "200"}
        om.counter_from_minute_counts("model_requests_total", labels, START, minute_counts)
    for name, minute_counts in counts.items():
        om.histogram_from_minute_counts(
            "model_request_duration_seconds",
            {"namespace": "trace", "workload": name},
            START,
            minute_counts,
            bucket_shares=LATENCY_SHARES,
            mean_seconds=MEAN_SERVICE_SECONDS,
        )
    for gpu, percent in GPU_PERCENT.items():
        labels = {"namespace": "trace", "workload": "busy", "gpu": gpu, "UUID": f"GPU-{gpu}"}
        om.gauge_every("DCGM_FI_DEV_GPU_UTIL", labels, START, NOW_TS, _constant(percent))
    # a GPU no workload uses: its series has no workload label and must be ignored
    om.gauge_every("DCGM_FI_DEV_GPU_UTIL", {"gpu": "7", "UUID": "GPU-7"}, START, NOW_TS, _constant(99.0))

    fleet_start = NOW_TS - 20 * 60
    for i in range(FLEET_SIZE):
        labels = {"namespace": "fleet", "workload": f"w{i:04d}", "code": "200"}
        om.counter_from_minute_counts("model_requests_total", labels, fleet_start, [float(i % 7) * 6] * 20)

    steady = [30.0] * MINUTES
    om.counter_from_minute_counts(
        "model_requests_total", {"namespace": "bad", "workload": "nan-rate", "code": "200"}, START, steady,
        overrides={NAN_AT: math.nan},
    )  # fmt: skip
    om.counter_from_minute_counts(
        "model_requests_total", {"namespace": "bad", "workload": "stale", "code": "200"}, START, steady[:STALE_MINUTES]
    )
    om.counter_from_minute_counts(
        "model_requests_total", {"namespace": "bad", "workload": "gappy", "code": "200"}, START, steady,
        omit=lambda ts: GAP[0] < ts < GAP[1],
    )  # fmt: skip
    for code in ("200", "500"):
        labels = {"namespace": "bad", "workload": "two-codes", "code": code}
        om.counter_from_minute_counts("model_requests_total", labels, START, steady)

    def garbage(name: str, rps: Callable[[float], float], latency: Callable[[float], float]) -> None:
        labels = {"namespace": "garbage", "workload": name}
        om.gauge_every("garbage_rps", labels, START, NOW_TS, rps)
        om.gauge_every("garbage_latency", labels, START, NOW_TS, latency)

    fine = _constant(1.0)

    def at_now(value: float) -> Callable[[float], float]:
        return lambda ts: value if ts == NOW_TS else 1.0

    garbage("ok", fine, _constant(0.2))
    garbage("negative-rate", lambda ts: -1.0 if ts == NOW_TS - 300 else 1.0, fine)
    garbage("inf-rate", at_now(math.inf), fine)
    garbage("nan-rate", at_now(math.nan), fine)
    garbage("negative-latency", fine, at_now(-0.5))
    garbage("inf-latency", fine, at_now(math.inf))
    garbage("nan-latency", fine, at_now(math.nan))
    return om.render()


@pytest.fixture(scope="module")
def trace_counts() -> dict[str, list[int]]:
    return _trace_counts()


@pytest.fixture(scope="module")
def prom(
    prometheus_binaries: PrometheusBinaries,
    trace_counts: dict[str, list[int]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PrometheusServer]:
    with running_prometheus(prometheus_binaries, _openmetrics(trace_counts), tmp_path_factory.mktemp("prom")) as srv:
        yield srv


def _keys(namespace: str, *names: str) -> list[WorkloadKey]:
    return [WorkloadKey(namespace, name) for name in names]


# ----------------------------------------------------------------------------------------------- templates


def test_default_queries_are_one_per_signal_grouped_by_workload() -> None:
    queries = render_queries(PromQLTemplates())
    assert set(queries) == set(Signal) - {Signal.TIME_TO_FIRST_TOKEN}  # an opt-in model-server extra
    # each request once: every target's attempts less a spilling route's retries (its composite cluster)
    assert queries[Signal.REQUEST_RATE] == (
        'sum by (namespace, workload) (rate(envoy_cluster_upstream_rq_total{target!="composite",}[60s]))'
        ' - (sum by (namespace, workload) (rate(envoy_cluster_upstream_rq_retry{target="composite",}[60s]))'
        ' or 0 * sum by (namespace, workload) (rate(envoy_cluster_upstream_rq_total{target!="composite",}[60s])))'
    )
    # latency as the client saw it and as the objective bounds it: the first-token histogram where the router keeps
    # one for the workload, else the composite's histogram where a route spills, else the targets'
    first_token = (
        'sum by (namespace, workload, le) (rate(envoy_inference_placement_first_token_bucket{workload!="",}[60s]))'
    )
    assert queries[Signal.LATENCY_P99] == (
        f"histogram_quantile(0.99, {first_token} or "
        "sum by (namespace, workload, le) "
        '(rate(envoy_cluster_upstream_rq_time_bucket{target="composite",}[60s])) or '
        "sum by (namespace, workload, le) "
        '(rate(envoy_cluster_upstream_rq_time_bucket{target!="composite",}[60s]))) / 1000'
    )
    # the warm latency: that histogram's median, for those workloads alone
    assert queries[Signal.WARM_LATENCY] == f"histogram_quantile(0.5, {first_token}) / 1000"
    # in flight: the targets' gauges (a composite cluster's stays 0; tests/test_router_metrics_spill.py)
    assert queries[Signal.IN_FLIGHT] == (
        'sum by (namespace, workload) (max_over_time(envoy_cluster_upstream_rq_active{target!="composite",}[60s]))'
    )
    assert "DCGM_FI_DEV_GPU_UTIL" in queries[Signal.GPU_UTILIZATION]
    model = render_queries(MODEL_SERVER_TEMPLATES)
    assert model[Signal.REQUEST_RATE] == "sum by (namespace, workload) (rate(model_requests_total{}[60s]))"
    assert model[Signal.LATENCY_P99] == (
        "histogram_quantile(0.99, sum by (namespace, workload, le) "
        "(rate(model_request_duration_seconds_bucket{}[60s])))"
    )


def test_templates_take_the_configured_labels_selector_and_rate_window() -> None:
    templates = replace(
        MODEL_SERVER_TEMPLATES,
        selector='job="model-servers"',
        gpu_utilization=None,
        service_seconds=None,
        latency_buckets=None,
    )
    queries = render_queries(templates, namespace_label="kube_namespace", workload_label="app", rate_window_seconds=90)
    assert set(queries) == {Signal.REQUEST_RATE, Signal.LATENCY_P99}
    assert queries[Signal.REQUEST_RATE] == (
        'sum by (kube_namespace, app) (rate(model_requests_total{job="model-servers"}[90s]))'
    )
    # extra matchers (the latency buckets' le) join the selector in every metric of every template
    bucket = render_queries(replace(MODEL_SERVER_TEMPLATES, selector='job="m"'), extra_matchers='le=~"0\\\\.1"')
    assert bucket[Signal.LATENCY_BUCKETS] == (
        'sum by (namespace, workload, le) (rate(model_request_duration_seconds_bucket{job="m",le=~"0\\\\.1"}[60s]))'
    )
    assert "[1500ms]" in render_queries(templates, rate_window_seconds=1.5)[Signal.REQUEST_RATE]


def test_label_replace_references_survive_templating() -> None:
    text = 'sum by ($by) (label_replace(rate(x_total[$rate_window]), "workload", "$1", "pod", "(.*)-[^-]+"))'
    query = render_queries(PromQLTemplates(request_rate=text))[Signal.REQUEST_RATE]
    assert '"$1"' in query and "[60s]" in query


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"request_rate": "sum by ($groups) (x)"}, "unknown placeholder", id="unknown-placeholder"),
        pytest.param({"request_rate": "  "}, "empty", id="empty-request-rate"),
        pytest.param({"selector": '{job="x"}'}, "without braces", id="selector-with-braces"),
    ],
)
def test_bad_templates_are_rejected_at_construction(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        PromQLTemplates(**kwargs)


def test_bad_source_settings_are_rejected_at_construction() -> None:
    with pytest.raises(TemplateError, match="label name"):
        PrometheusSource("http://127.0.0.1:9", workload_label="app-name")
    with pytest.raises(ValueError, match="whole number"):
        PrometheusSource("http://127.0.0.1:9", step_seconds=7.5)
    with pytest.raises(ValueError, match="points per series"):
        PrometheusSource("http://127.0.0.1:9", range_seconds=86400 * 7, step_seconds=15)
    with pytest.raises(ValueError, match="http"):
        PrometheusSource("127.0.0.1:9090")


def test_snapshot_defaults_stay_compatible() -> None:
    snapshot = MetricsSnapshot(problem="down")
    assert snapshot.per_workload_problem == {} and snapshot.gpu_utilization == {}
    key = WorkloadKey("a", "b")
    assert snapshot.problem_for(key) == "down"
    assert MetricsSnapshot(per_workload_problem={key: "stale"}).problem_for(key) == "stale"


# ----------------------------------------------------------------------------------------------- real data


async def test_window_rps_matches_the_trace_per_minute_counts(
    prom: PrometheusServer, trace_counts: dict[str, list[int]]
) -> None:
    source = _source(prom.url, step_seconds=60, range_seconds=20 * 60, rate_window_seconds=60)
    snapshot = await source.fetch(_keys("trace", *TRACE_FUNCTIONS), NOW)

    assert snapshot.problem is None and snapshot.per_workload_problem == {}
    for name, counts in trace_counts.items():
        window = snapshot.windows[WorkloadKey("trace", name)]
        assert window.step_seconds == 60 and window.end == NOW
        # the point at minute boundary t is the rate over the minute ending at t
        assert window.rps == pytest.approx([c / 60 for c in counts[-20:]], abs=1e-9), name


async def test_window_at_30_s_steps_blends_adjacent_minutes(
    prom: PrometheusServer, trace_counts: dict[str, list[int]]
) -> None:
    source = _source(prom.url)  # defaults: 15 min at 30 s steps, rate over 60 s
    window = (await source.fetch(_keys("trace", "busy"), NOW)).windows[WorkloadKey("trace", "busy")]
    counts = trace_counts["busy"]
    assert len(window.rps) == 30 and window.step_seconds == 30
    expected: list[float] = []
    for minute in range(MINUTES - 15, MINUTES):
        expected.append((counts[minute - 1] + counts[minute]) / 120)  # half a minute of each
        expected.append(counts[minute] / 60)  # at the boundary: the whole minute
    assert window.rps == pytest.approx(expected, abs=1e-9)


async def test_latency_p99_and_service_time_come_from_the_histogram(prom: PrometheusServer) -> None:
    snapshot = await _source(prom.url).fetch(_keys("trace", *TRACE_FUNCTIONS), NOW)
    for name in ("busy", "steady", "bursty"):
        window = snapshot.windows[WorkloadKey("trace", name)]
        assert window.observed_p99_seconds == pytest.approx(EXPECTED_P99_SECONDS), name
        assert window.service_seconds == pytest.approx(MEAN_SERVICE_SECONDS), name
    # no request in the last minute: p99 and mean are 0/0 in PromQL, i.e. unknown, and the window still counts
    idle_now = snapshot.windows[WorkloadKey("trace", "alternating")]
    assert idle_now.observed_p99_seconds is None and idle_now.service_seconds is None
    assert idle_now.rps[-1] == 0.0 and max(idle_now.rps) > 0


async def test_gpu_utilization_is_joined_to_workloads_by_label(prom: PrometheusServer) -> None:
    snapshot = await _source(prom.url).fetch(_keys("trace", *TRACE_FUNCTIONS), NOW)
    assert snapshot.gpu_utilization == {WorkloadKey("trace", "busy"): pytest.approx(0.42)}


async def test_ambiguous_gpu_series_drop_only_the_gpu_value(prom: PrometheusServer) -> None:
    per_gpu = replace(
        MODEL_SERVER_TEMPLATES, gpu_utilization="DCGM_FI_DEV_GPU_UTIL{$selector} / 100"
    )  # one series per GPU
    key = WorkloadKey("trace", "busy")
    snapshot = await _source(prom.url, templates=per_gpu).fetch([key], NOW)
    assert key in snapshot.windows and snapshot.gpu_utilization == {}


async def test_queries_per_tick_are_constant_for_10_and_1000_workloads(prom: PrometheusServer) -> None:
    source = _RecordingSource(prom.url)
    fleet = [WorkloadKey("fleet", f"w{i:04d}") for i in range(FLEET_SIZE)]
    objectives = dict.fromkeys(fleet, 0.1)
    sent: dict[int, int] = {}
    history: dict[int, int] = {}
    for size in (10, FLEET_SIZE):
        before, instant_before = prom.api_requests(), prom.api_requests("/api/v1/query")
        history_before = len(source.history_spans)
        snapshot = await source.fetch(fleet[:size], NOW, objectives)
        sent[size] = prom.api_requests() - before + prom.api_requests("/api/v1/query") - instant_before
        history[size] = len(source.history_spans) - history_before
        assert snapshot.problem is None and len(snapshot.windows) == size
        assert snapshot.queries == sent[size]
    # a first fetch asks for the whole window, the windowed signals (request rate, GPU, per-step misses, per-step
    # service time) in spans of WHOLE_WINDOW_POINTS_PER_QUERY; the very first also for the histogram's bucket bounds.
    # The day's history (request rate, misses) comes one span of 15 points per fetch: the newest first, then one
    # older span a fetch
    spans = math.ceil(source.points / WHOLE_WINDOW_POINTS_PER_QUERY)
    whole = 4 * spans + 3
    assert sent[10] - 1 - history[10] == sent[FLEET_SIZE] - history[FLEET_SIZE] == whole
    assert history[10] == 2 and history[FLEET_SIZE] == 2 * 2  # new workloads: an older span again
    # later fetches: one query per signal, per-step misses and service times included, the history's two (and an
    # older span's two until the day is in)
    before = prom.api_requests()
    enabled = len(MODEL_SERVER_TEMPLATES.by_signal()) + 2 + 2
    assert not source.history_complete
    assert (await source.fetch(fleet, NOW, objectives)).queries == enabled + 2 == prom.api_requests() - before
    # and the numbers are right for all of them
    snapshot = await source.fetch(fleet, NOW, objectives)
    for i, key in enumerate(fleet):
        assert snapshot.windows[key].rps[-1] == pytest.approx((i % 7) * 6 / 60), key


async def test_no_workloads_sends_no_query(prom: PrometheusServer) -> None:
    before = prom.api_requests()
    snapshot = await _source(prom.url).fetch([], NOW)
    assert snapshot == MetricsSnapshot() and prom.api_requests() == before


async def test_workload_without_series_gets_no_window_and_a_reason(prom: PrometheusServer) -> None:
    snapshot = await _source(prom.url).fetch(_keys("trace", "busy", "absent"), NOW)
    assert snapshot.problem is None
    assert WorkloadKey("trace", "absent") not in snapshot.windows
    assert "no request-rate series" in snapshot.per_workload_problem[WorkloadKey("trace", "absent")]
    assert WorkloadKey("trace", "busy") in snapshot.windows


async def test_stale_series_gets_no_window(prom: PrometheusServer) -> None:
    key = WorkloadKey("bad", "stale")
    snapshot = await _source(prom.url, max_staleness_seconds=180).fetch([key], NOW)
    assert key not in snapshot.windows
    reason = snapshot.per_workload_problem[key]
    assert "stale" in reason and "> 180 s" in reason


async def test_nan_in_a_counter_gets_no_window(prom: PrometheusServer) -> None:
    key = WorkloadKey("bad", "nan-rate")
    snapshot = await _source(prom.url).fetch([key], NOW)
    assert key not in snapshot.windows
    assert "request rate is invalid (NaN)" in snapshot.per_workload_problem[key]


async def test_a_gap_keeps_only_the_points_after_it(prom: PrometheusServer) -> None:
    key = WorkloadKey("bad", "gappy")
    source = _source(prom.url, step_seconds=60, range_seconds=30 * 60)
    window = (await source.fetch([key], NOW)).windows[key]
    # samples resume at the gap's end; the first 60 s rate with two samples is a minute later
    first_point = GAP[1] + 60
    assert len(window.rps) == (NOW_TS - first_point) // 60 + 1
    assert window.rps == pytest.approx([0.5] * len(window.rps))


@pytest.mark.parametrize(
    ("workload", "reason"),
    [
        pytest.param("negative-rate", "request rate is invalid (-1)", id="negative-rate"),
        pytest.param("inf-rate", "request rate is invalid (+Inf)", id="inf-rate"),
        pytest.param("nan-rate", "request rate is invalid (NaN)", id="nan-rate"),
        pytest.param("negative-latency", "p99 latency is invalid (-0.5)", id="negative-latency"),
        pytest.param("inf-latency", "p99 latency is invalid (+Inf)", id="inf-latency"),
    ],
)
async def test_garbage_values_give_that_workload_no_window(prom: PrometheusServer, workload: str, reason: str) -> None:
    source = _source(prom.url, templates=GARBAGE_TEMPLATES)
    keys = _keys("garbage", "ok", workload)
    snapshot = await source.fetch(keys, NOW)
    assert snapshot.problem is None
    assert set(snapshot.windows) == {WorkloadKey("garbage", "ok")}
    assert reason in snapshot.per_workload_problem[WorkloadKey("garbage", workload)]


async def test_nan_latency_reads_as_unknown_not_garbage(prom: PrometheusServer) -> None:
    key = WorkloadKey("garbage", "nan-latency")
    snapshot = await _source(prom.url, templates=GARBAGE_TEMPLATES).fetch([key], NOW)
    assert snapshot.windows[key].observed_p99_seconds is None
    assert snapshot.windows[key].rps[-1] == 1.0


async def test_several_series_per_workload_give_no_window(prom: PrometheusServer) -> None:
    key = WorkloadKey("bad", "two-codes")
    grouped = await _source(prom.url).fetch([key], NOW)
    assert grouped.windows[key].rps[-1] == pytest.approx(1.0)  # 0.5 rps of 200s + 0.5 rps of 500s
    ungrouped = replace(MODEL_SERVER_TEMPLATES, request_rate="rate(model_requests_total{$selector}[$rate_window])")
    snapshot = await _source(prom.url, templates=ungrouped).fetch([key], NOW)
    assert key not in snapshot.windows
    assert "several series" in snapshot.per_workload_problem[key]


async def test_series_without_workload_labels_are_explained(prom: PrometheusServer) -> None:
    templates = replace(MODEL_SERVER_TEMPLATES, request_rate="sum(rate(model_requests_total[$rate_window]))")
    key = WorkloadKey("trace", "busy")
    snapshot = await _source(prom.url, templates=templates).fetch([key], NOW)
    assert key not in snapshot.windows
    assert "1 series lack the labels namespace/workload" in snapshot.per_workload_problem[key]


async def test_an_invalid_query_is_a_problem_with_the_http_status(prom: PrometheusServer) -> None:
    templates = replace(MODEL_SERVER_TEMPLATES, latency_p99="histogram_quantile(0.99, sum by ($by) (")
    snapshot = await _source(prom.url, templates=templates).fetch(_keys("trace", "busy"), NOW)
    assert snapshot.windows == {}
    assert snapshot.problem is not None
    assert snapshot.problem.startswith("latency_p99 query:") and "HTTP Status Code 400" in snapshot.problem


async def test_prometheus_stopped_gives_a_problem_and_no_window(
    prometheus_factory: Callable[[str], PrometheusServer],
) -> None:
    om = OpenMetricsBuilder()
    om.counter_from_minute_counts("model_requests_total", {"namespace": "a", "workload": "w"}, START, [60.0] * 5)
    server = prometheus_factory(om.render())
    source = _source(server.url, timeout_seconds=2)
    now = datetime.fromtimestamp(START + 5 * 60, UTC)
    assert WorkloadKey("a", "w") in (await source.fetch(_keys("a", "w"), now)).windows

    server.stop()
    snapshot = await source.fetch(_keys("a", "w"), now)
    assert snapshot.windows == {}
    assert snapshot.problem is not None and "unreachable" in snapshot.problem
    # no objective: no latency-bucket query (nor per-step misses); the per-step service time; the history's request
    # rate, newest and older
    assert snapshot.queries == len(MODEL_SERVER_TEMPLATES.by_signal()) - 1 + 1 + 2


# ----------------------------------------------------------------------------------------------- not Prometheus

# A server that answers this late, against a 0.5 s client timeout: a fetch that ends in under half of it was ended by
# the timeout, with seconds of slack for a loaded machine (the timing is the behaviour under test here).
SLOW_SERVER_SECONDS = 30.0


class _NotPrometheus(ThreadingHTTPServer):
    """What a wrong URL or a broken proxy answers: HTML, the wrong JSON, or nothing for a long time."""

    daemon_threads = True
    mode = "html"
    delay_seconds = 0.0


class _Handler(BaseHTTPRequestHandler):
    server: _NotPrometheus

    def do_GET(self) -> None:
        time.sleep(self.server.delay_seconds)
        if self.server.mode == "html":
            body, kind = b"<html><body>Grafana</body></html>", "text/html"
        elif self.server.mode == "scalar":
            body = json.dumps({"status": "success", "data": {"resultType": "scalar", "result": [1, "1"]}}).encode()
            kind = "application/json"
        else:
            body, kind = b'{"status": "success"}', "application/json"
        try:
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client gave up (timeout test)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def not_prometheus() -> Iterator[_NotPrometheus]:
    server = _NotPrometheus(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        pytest.param("html", "unparsable response from Prometheus at 127.0.0.1", id="html"),
        pytest.param("no-data", "unparsable response", id="json-without-data"),
        pytest.param("scalar", "not a matrix", id="scalar-result"),
    ],
)
async def test_garbage_responses_are_a_problem(not_prometheus: _NotPrometheus, mode: str, reason: str) -> None:
    not_prometheus.mode = mode
    url = f"http://user:secret@127.0.0.1:{not_prometheus.server_address[1]}"
    snapshot = await _source(url, timeout_seconds=2).fetch(_keys("a", "w"), NOW)
    assert snapshot.windows == {}
    assert snapshot.problem is not None and reason in snapshot.problem
    assert "secret" not in snapshot.problem


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        pytest.param("html", "unparsable response", id="html"),
        pytest.param("scalar", "not an instant vector", id="scalar-result"),
    ],
)
async def test_garbage_bucket_bounds_are_a_problem(not_prometheus: _NotPrometheus, mode: str, reason: str) -> None:
    """The bounds query goes first when objectives are given; its garbage freezes the fetch like any query's."""
    not_prometheus.mode = mode
    source = _source(f"http://127.0.0.1:{not_prometheus.server_address[1]}", timeout_seconds=2)
    snapshot = await source.fetch(_keys("a", "w"), NOW, {WorkloadKey("a", "w"): 0.2})
    assert snapshot.windows == {} and snapshot.queries == 1
    assert snapshot.problem is not None
    assert snapshot.problem.startswith("latency bucket bounds query:") and reason in snapshot.problem


async def test_a_slow_bucket_bounds_query_is_a_problem(not_prometheus: _NotPrometheus) -> None:
    not_prometheus.delay_seconds = SLOW_SERVER_SECONDS
    source = _source(f"http://127.0.0.1:{not_prometheus.server_address[1]}", timeout_seconds=0.5)
    started = time.monotonic()
    snapshot = await source.fetch(_keys("a", "w"), NOW, {WorkloadKey("a", "w"): 0.2})
    assert time.monotonic() - started < SLOW_SERVER_SECONDS / 2  # bounded by the timeout, not by the server's delay
    assert snapshot.windows == {} and snapshot.problem is not None
    assert snapshot.problem.startswith("latency bucket bounds query:") and "0.5 s" in snapshot.problem


async def test_a_slow_prometheus_times_out_without_blocking_the_loop(not_prometheus: _NotPrometheus) -> None:
    not_prometheus.delay_seconds = SLOW_SERVER_SECONDS
    source = _source(f"http://127.0.0.1:{not_prometheus.server_address[1]}", timeout_seconds=0.5)
    beats = 0
    done = asyncio.Event()

    async def heartbeat() -> None:
        nonlocal beats
        while not done.is_set():
            beats += 1
            await asyncio.sleep(0.02)

    beating = asyncio.create_task(heartbeat())
    started = time.monotonic()
    snapshot = await source.fetch(_keys("a", "w"), NOW)
    elapsed = time.monotonic() - started
    done.set()
    await beating
    assert snapshot.windows == {}
    assert snapshot.problem is not None and "timed out after 0.5 s" in snapshot.problem
    assert elapsed < SLOW_SERVER_SECONDS / 2
    assert beats >= 5  # the event loop kept running while the queries waited


@pytest.mark.parametrize(
    ("objective", "share"),
    [
        pytest.param(0.1, 0.02, id="a-bound-at-the-objective"),
        pytest.param(0.2, 0.02, id="between-bounds-counts-from-the-bound-under-it"),
        pytest.param(0.07, 0.10, id="a-tighter-objective"),
        pytest.param(0.25, 0.0, id="every-request-within"),
    ],
)
async def test_slo_miss_share_comes_from_the_bucket_at_or_under_the_objective(
    prom: PrometheusServer, objective: float, share: float
) -> None:
    """LATENCY_SHARES: 90 % <= 50 ms, 98 % <= 100 ms, 100 % <= 250 ms. Between two bounds the misses are counted
    from the lower one (more capacity, never less). The share is over the last 5 minutes; the per-step misses are
    that share of each step's requests (the same rate window as the request rate), the history's over the day."""
    keys = _keys("trace", "busy", "steady")
    snapshot = await _source(prom.url).fetch(keys, NOW, dict.fromkeys(keys, objective))
    for key in keys:
        window = snapshot.windows[key]
        assert window.slo_miss_share == pytest.approx(share, abs=1e-9), key
        assert window.slo_misses is not None and len(window.slo_misses) == len(window.rps)
        expected = [share * rps * window.step_seconds for rps in window.rps]
        assert window.slo_misses == pytest.approx(expected, abs=1e-9), key
        assert window.history_rps is not None and window.history_step_seconds == 300
        history_requests = sum(window.history_rps) * 300
        assert window.history_slo_misses == pytest.approx(share * history_requests, rel=1e-5, abs=1e-9), key


async def test_slo_misses_are_unknown_without_an_objective_or_a_bound_under_it(prom: PrometheusServer) -> None:
    busy, steady, alternating = keys = _keys("trace", "busy", "steady", "alternating")
    source = _RecordingSource(prom.url)
    # 4 ms is under every bucket bound (5 ms is the smallest); alternating has no objective at all
    snapshot = await source.fetch(keys, NOW, {busy: 0.004, steady: 0.1})
    assert snapshot.windows[busy].slo_miss_share is None
    assert snapshot.windows[alternating].slo_miss_share is None
    assert snapshot.windows[steady].slo_miss_share == pytest.approx(0.02)
    # the other windows are what a source without the bucket signal answers
    plain = replace(MODEL_SERVER_TEMPLATES, latency_buckets=None)
    without = await _source(prom.url, templates=plain).fetch(keys, NOW, {busy: 0.004, steady: 0.1})
    assert without.windows[busy] == snapshot.windows[busy]
    assert without.windows[steady].slo_miss_share is None and without.windows[steady].slo_misses is None
    # the three windowed signals (request rate, GPU, per-step service time) in two spans each; p99, service time;
    # the day's newest span of request rate
    assert without.queries == 3 * 2 + 2 + 1
    # the misses were asked for at the bound the objective needs (100 ms) only: +Inf less that bucket
    misses = [query for query, _ in source.spans if "ignoring (le)" in query]
    assert misses and all('le="+Inf"' in query and 'le="0.1"' in query for query in misses), misses
    assert not any('le="0.005"' in query for query, _ in source.spans)


async def test_bucket_bounds_are_asked_for_once_an_hour_and_an_objective_change_refetches(
    prom: PrometheusServer,
) -> None:
    busy = _keys("trace", "busy")
    source = _source(prom.url)

    def at(offset: float) -> datetime:
        return datetime.fromtimestamp(NOW_TS + offset, UTC)

    first = await source.fetch(busy, at(-300), {busy[0]: 0.1})
    steady = await source.fetch(busy, at(-270), {busy[0]: 0.1})
    # the bounds; 4 windowed signals (request rate, GPU, per-step misses and service times) in two spans each; p99,
    # service, share; the day's newest span of request rate and misses (then also an older span per fetch until the
    # day is in)
    assert first.queries == 1 + 4 * 2 + 3 + 2
    assert steady.queries == 5 + 2 + 2 * 2 and source.whole_fetches == 1
    tighter = await source.fetch(busy, at(-240), {busy[0]: 0.07})  # another bucket: its window is asked for whole
    assert source.whole_fetches == 2
    assert tighter.windows[busy[0]].slo_miss_share == pytest.approx(0.10)


# ----------------------------------------------------------------------------------------------- incremental fetch


class _RecordingSource(PrometheusSource):
    """The real source; it also records the span each query asked for (real Prometheus answers it): on the
    window's step in ``spans``, on the history's in ``history_spans``."""

    def __init__(self, *args: Any, templates: PromQLTemplates | None = None, **kwargs: Any) -> None:
        super().__init__(*args, templates=templates or MODEL_SERVER_TEMPLATES, **kwargs)
        self.spans: list[tuple[str, float]] = []
        self.history_spans: list[tuple[str, float]] = []

    def _query_range(self, query: str, start: datetime, end: datetime, step: int | None = None) -> object:
        coarse = step is not None and step != self.step_seconds
        (self.history_spans if coarse else self.spans).append((query, (end - start).total_seconds()))
        return super()._query_range(query, start, end, step)


INCREMENTAL_KEYS = [
    *_keys("trace", *TRACE_FUNCTIONS),
    *_keys("bad", "nan-rate", "stale", "gappy", "two-codes"),
    *_keys("fleet", "w0001", "w0006"),
    WorkloadKey("trace", "absent"),
]


@pytest.mark.parametrize(
    ("templates", "keys", "first_ts"),
    [
        # from before the gap ends and before the stale series stops, to past the NaN: every transition is crossed
        pytest.param(None, INCREMENTAL_KEYS, START + 12 * 60, id="trace-and-bad-data"),
        pytest.param(GARBAGE_TEMPLATES, _keys("garbage", "ok", "negative-rate", "inf-rate", "nan-rate",
                     "negative-latency", "inf-latency", "nan-latency"), NOW_TS - 420, id="garbage"),
    ],
)  # fmt: skip
async def test_fetching_only_the_newest_points_gives_the_whole_windows(
    prom: PrometheusServer, templates: PromQLTemplates | None, keys: list[WorkloadKey], first_ts: float
) -> None:
    """One source fetched tick after tick (newest points only, the rest kept) answers exactly what a fresh source
    fetching the whole window answers at each tick: windows (SLO misses included), reasons, GPU utilisation."""
    incremental = _RecordingSource(prom.url, templates=templates, range_seconds=15 * 60)
    objectives = {key: (0.07, 0.1)[i % 2] for i, key in enumerate(keys)}  # two bounds: 50 ms, 100 ms
    ts = first_ts
    ticks = 0
    whole_queries = 0
    while ts <= NOW_TS:
        now = datetime.fromtimestamp(ts, UTC)
        complete = incremental.history_complete
        kept = await incremental.fetch(keys, now, objectives)
        fresh = _source(prom.url, templates=templates, range_seconds=15 * 60)
        whole = await fresh.fetch(keys, now, objectives)
        assert whole.problem is None and kept.problem is None
        assert kept.windows == whole.windows, now
        assert kept.per_workload_problem == whole.per_workload_problem, now
        assert kept.gpu_utilization == whole.gpu_utilization, now
        # per bound: the share, the per-step misses, the history's misses; the per-step service times (where the
        # service time is measured); and the history's request rate; older history spans while the day is not in
        history_spans = 1 if not ticks or complete else 2
        per_step = 1 + 2 + int(incremental.service_query is not None)
        assert kept.queries == (len(incremental.queries) + per_step if ticks else whole.queries - 3) + 3 * history_spans
        if not ticks:
            whole_queries = len(incremental.spans)  # the windowed signals in two spans each, the others in one
        ticks += 1
        ts += 30
        if templates is None:  # the trace workloads carry the latency histogram: their shares are compared too
            assert any(w.slo_miss_share is not None for w in kept.windows.values()), now
    assert ticks >= 14 and incremental.whole_fetches == 1
    # after the first fetch no query asked for more than the overlap (max_staleness_seconds = 180 s), and the
    # history's for its newest one or two points (300 s apart)
    later = incremental.spans[whole_queries:]
    assert later and max(span for _, span in later) <= 180
    # the history's newest points: one or two (300 s apart); an older span: 15 points
    newest_history = {query: span for query, span in incremental.history_spans[3:]}
    assert newest_history and all(span in (0, 300, 14 * 300) for span in newest_history.values())
    window_query = incremental.queries[Signal.REQUEST_RATE]
    first = [span for query, span in incremental.spans[:whole_queries] if query == window_query]
    assert first == [420, 420]  # the whole window (30 points), in spans of 15 points


async def test_a_new_workload_a_missed_tick_or_a_clock_going_back_fetch_the_whole_window(
    prom: PrometheusServer,
) -> None:
    source = _source(prom.url)
    busy = _keys("trace", "busy")
    both = _keys("trace", "busy", "steady")

    def at(offset: float) -> datetime:
        return datetime.fromtimestamp(NOW_TS + offset, UTC)

    await source.fetch(busy, at(-600))
    await source.fetch(busy, at(-570))
    await source.fetch(busy, at(-555))  # within the same step: the newest points again
    assert source.whole_fetches == 1
    snapshot = await source.fetch(both, at(-540))  # a workload not fetched before
    assert source.whole_fetches == 2 and len(snapshot.windows[WorkloadKey("trace", "steady")].rps) == 30
    await source.fetch(both, at(-300))  # 240 s later: more than the 180 s overlap was missed
    assert source.whole_fetches == 3
    await source.fetch(both, at(-330))  # the clock went back
    assert source.whole_fetches == 4
    await source.fetch(busy, at(-300))  # fewer workloads: the kept window serves
    assert source.whole_fetches == 4


async def test_a_failed_fetch_keeps_the_last_good_window_for_the_next(prom: PrometheusServer) -> None:
    switch = Switch([prom.url, f"http://127.0.0.1:{free_port()}"])  # the second upstream: nobody listens
    try:
        source = _source(switch.url, timeout_seconds=5)
        keys = _keys("trace", *TRACE_FUNCTIONS)
        await source.fetch(keys, datetime.fromtimestamp(NOW_TS - 60, UTC))
        switch.flip(1)
        failed = await source.fetch(keys, datetime.fromtimestamp(NOW_TS - 30, UTC))
        assert failed.problem is not None and "502" in failed.problem and failed.windows == {}
        switch.flip(0)
        after = await source.fetch(keys, NOW)
        assert source.whole_fetches == 1  # the failure neither moved nor dropped the kept window
        assert after.windows == (await _source(prom.url).fetch(keys, NOW)).windows
    finally:
        switch.close()
