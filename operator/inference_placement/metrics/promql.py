"""PromQL templates for the batched metrics fetch: one query per signal for ALL workloads, grouped by workload.

A template is a PromQL expression with ``$``-placeholders (``string.Template``; ``$$`` is a literal ``$``, and
``$1``-style references in ``label_replace`` are left alone):

``$by``           the grouping labels, ``namespace, workload`` by default (see ``namespace_label``/``workload_label``)
``$namespace_label`` / ``$workload_label``  the two label names on their own
``$rate_window``  the range of ``rate()``/``*_over_time()``, e.g. ``60s``
``$selector``     extra label matchers for every metric, e.g. ``job="model-servers"`` (empty by default)

Every template must return one series per workload carrying both grouping labels. The defaults read the
stable-endpoint router's own stats (``routing/envoy.py``), scraped from its stats port (``/stats/prometheus``): per
Envoy cluster, i.e. per (workload, target), ``envoy_cluster_upstream_rq_total``, the ``envoy_cluster_upstream_rq_time``
histogram (milliseconds, bounds ``EnvoySettings.latency_buckets_ms``), the ``envoy_cluster_upstream_rq_active``
gauge, ``envoy_cluster_upstream_rq_xx`` by ``envoy_response_code_class`` and ``envoy_cluster_upstream_rq_pending_
overflow``, each labelled ``namespace``, ``workload`` and ``target`` by the router's own tag extractors. The
templates sum over targets, so a workload served by Cloud Run or Lambda is measured with nothing scraped from the
serverless instance. The router's scrape job is expected to be named ``inference-router`` (``router_up``).

Model-server metrics are optional extras: NVIDIA's DCGM exporter's ``DCGM_FI_DEV_GPU_UTIL`` (percent, relabeled
to ``namespace``/``workload`` from the pod) and, off by default, a time-to-first-token template
(``VLLM_TIME_TO_FIRST_TOKEN`` fits vLLM). ``MODEL_SERVER_TEMPLATES`` reads the project's model server
(``e2e/model_server.py``: ``model_requests_total``, ``model_request_duration_seconds``) instead of the router.

``latency_buckets`` is the one template grouped by ``le`` too: the latency histogram's buckets, from which the source
measures each workload's share of requests slower than its SLO (``metrics/slo_buckets.py``). The source sends it
with its ``$rate_window`` set to the share's span and an ``le`` matcher added to every ``$selector``: (``+Inf`` less
the bound at or under the objective) over ``+Inf``, one series per workload. Its ``le`` values are in
``latency_bucket_unit_seconds`` (Envoy's histograms: milliseconds).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, fields
from string import Template

__all__ = [
    "DEFAULT_ERROR_RATE",
    "DEFAULT_GPU_UTILIZATION",
    "DEFAULT_IN_FLIGHT",
    "DEFAULT_LATENCY_BUCKETS",
    "DEFAULT_LATENCY_P99",
    "DEFAULT_OVERFLOW_RATE",
    "DEFAULT_REQUEST_RATE",
    "DEFAULT_ROUTER_UP",
    "DEFAULT_SERVICE_SECONDS",
    "DEFAULT_WARM_LATENCY",
    "FIRST_TOKEN_BUCKETS",
    "MODEL_SERVER_TEMPLATES",
    "PLACEHOLDERS",
    "ROUTER_JOB",
    "VLLM_TIME_TO_FIRST_TOKEN",
    "VLLM_WARM_LATENCY",
    "PromQLTemplates",
    "Signal",
    "TemplateError",
    "prometheus_duration",
    "render_queries",
]

PLACEHOLDERS = frozenset({"by", "namespace_label", "workload_label", "rate_window", "selector"})
"""The placeholders a template may use."""

ROUTER_JOB = "inference-router"
"""The scrape job of the router's stats port (the chart's PodMonitor and the local stack name it so)."""


def _client_view(aggregate: str, metric: str, selector: str = "$selector") -> str:
    """``aggregate`` (with ``{sel}`` for the matchers) over what the client saw: a spilling workload's composite
    cluster (the whole cluster share: refused first attempts and their spilled retries as one request each), else
    its targets' own clusters. The composite's series win where they exist (``or`` keeps the left side's series)."""
    composite = aggregate.format(metric=metric, sel=f'target="composite",{selector}')
    targets = aggregate.format(metric=metric, sel=f'target!="composite",{selector}')
    return f"{composite} or {targets}"


DEFAULT_REQUEST_RATE = (
    'sum by ($by) (rate(envoy_cluster_upstream_rq_total{target!="composite",$selector}[$rate_window]))'
    ' - (sum by ($by) (rate(envoy_cluster_upstream_rq_retry{target="composite",$selector}[$rate_window]))'
    ' or 0 * sum by ($by) (rate(envoy_cluster_upstream_rq_total{target!="composite",$selector}[$rate_window])))'
)
"""Requests per second per workload, each counted once: every target's attempts, less the retries a spilling
route's composite cluster made (a refused request is counted by the pods and again by the overflow target)."""
_BUCKETS = "sum by ($by, le) (rate({metric}{{{sel}}}[$rate_window]))"
_SUM = "sum by ($by) (rate({metric}{{{sel}}}[$rate_window]))"
FIRST_TOKEN_BUCKETS = _BUCKETS.format(
    metric="envoy_inference_placement_first_token_bucket", sel='$workload_label!="",$selector'
)
"""The router's first-token histogram (``routing.envoy.FIRST_TOKEN_STAT``, milliseconds): series only for the
workloads whose objective bounds the first token (the others, pings and replays share one with empty tags, left
out here)."""
DEFAULT_LATENCY_BUCKETS = f"{FIRST_TOKEN_BUCKETS} or {_client_view(_BUCKETS, 'envoy_cluster_upstream_rq_time_bucket')}"
"""What each workload's objective bounds: its first-token histogram where the router keeps one (``or`` keeps the
left side's series), else the whole answer's request time as the client saw it. The p99 and the SLO misses read
it, so a first-token objective is measured against the first token and any other against the whole answer."""
DEFAULT_LATENCY_P99 = f"histogram_quantile(0.99, {DEFAULT_LATENCY_BUCKETS}) / 1000"
DEFAULT_SERVICE_SECONDS = (
    f"({_client_view(_SUM, 'envoy_cluster_upstream_rq_time_sum')})"
    f" / ({_client_view(_SUM, 'envoy_cluster_upstream_rq_time_count')}) / 1000"
)
DEFAULT_IN_FLIGHT = (
    'sum by ($by) (max_over_time(envoy_cluster_upstream_rq_active{target!="composite",$selector}[$rate_window]))'
)
"""Peak requests in flight per workload over the rate window, summed over its targets' clusters. Not the composite's
(its gauge stays 0: the pods' and the overflow target's clusters own the connections, measured with Envoy 1.40 in
``tests/test_router_metrics_spill.py``); a spilled request in flight counts once, under the overflow target (the
overflow hop's cluster carries no workload label)."""
DEFAULT_ERROR_RATE = (
    "(" + _client_view(_SUM, "envoy_cluster_upstream_rq_xx", 'envoy_response_code_class="5",$selector') + ")"
    ' or 0 * sum by ($by) (rate(envoy_cluster_upstream_rq_total{target!="composite",$selector}[$rate_window]))'
)
"""5xx answers per second as the client saw them (a refusal the overflow target then served is no error); 0 for a
workload with requests and no 5xx yet (Envoy creates a response-code stat at its first occurrence)."""
DEFAULT_OVERFLOW_RATE = "sum by ($by) (rate(envoy_cluster_upstream_rq_pending_overflow{$selector}[$rate_window]))"
DEFAULT_ROUTER_UP = f'up{{job="{ROUTER_JOB}",$selector}}'
DEFAULT_GPU_UTILIZATION = "avg by ($by) (avg_over_time(DCGM_FI_DEV_GPU_UTIL{$selector}[$rate_window])) / 100"
VLLM_TIME_TO_FIRST_TOKEN = (
    "histogram_quantile(0.99, sum by ($by, le) "
    "(rate(vllm:time_to_first_token_seconds_bucket{$selector}[$rate_window])))"
)
"""p99 time to first token from vLLM's histogram (relabel ``namespace``/``workload`` from the pod when scraping)."""
DEFAULT_WARM_LATENCY = f"histogram_quantile(0.5, {FIRST_TOKEN_BUCKETS}) / 1000"
"""The median time to first byte over the window, for the workloads whose objective bounds the first token (the
latency of a request that neither queued nor waited for a start while fewer than half do)."""
VLLM_WARM_LATENCY = (
    "sum by ($by) (rate(vllm:time_to_first_token_seconds_sum{$selector}[$rate_window]))"
    " / sum by ($by) (rate(vllm:time_to_first_token_seconds_count{$selector}[$rate_window]))"
)
"""Mean time to first token from vLLM's histogram, for ``warm_latency`` (its ``$rate_window`` is the whole window)."""

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class TemplateError(ValueError):
    """A template or a label name that cannot produce a valid query (raised at construction, never per tick)."""


class Signal(enum.Enum):
    """One batched query per signal per tick."""

    REQUEST_RATE = "request_rate"
    LATENCY_P99 = "latency_p99"
    SERVICE_SECONDS = "service_seconds"
    GPU_UTILIZATION = "gpu_utilization"
    LATENCY_BUCKETS = "latency_buckets"
    IN_FLIGHT = "in_flight"
    ERROR_RATE = "error_rate"
    OVERFLOW_RATE = "overflow_rate"
    TIME_TO_FIRST_TOKEN = "time_to_first_token"
    WARM_LATENCY = "warm_latency"
    ROUTER_UP = "router_up"


@dataclass(frozen=True)
class PromQLTemplates:
    """The PromQL for each signal. ``None`` switches an optional signal off (one query fewer per tick)."""

    request_rate: str = DEFAULT_REQUEST_RATE
    """Requests per second per workload (required): the window's ``rps`` series."""
    latency_p99: str | None = DEFAULT_LATENCY_P99
    """p99 latency in seconds from a histogram; NaN (no requests in the rate window) reads as "unknown"."""
    service_seconds: str | None = DEFAULT_SERVICE_SECONDS
    """Mean service time in seconds: rate(duration sum) / rate(duration count)."""
    gpu_utilization: str | None = DEFAULT_GPU_UTILIZATION
    """GPU utilisation as a fraction 0..1 (DCGM reports percent, hence the default's ``/ 100``)."""
    latency_buckets: str | None = DEFAULT_LATENCY_BUCKETS
    """The latency histogram's cumulative bucket rates per workload and ``le`` (requests per second at or under each
    bound): the share slower than a workload's SLO is the ``+Inf`` bucket's rate less the rate of the largest bound
    at or under the objective, over the ``+Inf`` one. Its ``$selector`` also carries an ``le`` matcher and its
    ``$rate_window`` is the share's span (module docstring)."""
    latency_bucket_unit_seconds: float = 0.001
    """The unit of ``latency_buckets``' ``le`` values in seconds: 0.001 for Envoy's millisecond histograms, 1 for a
    histogram in seconds."""
    in_flight: str | None = DEFAULT_IN_FLIGHT
    """Peak requests in flight per workload over the rate window: the router's ``upstream_rq_active``, each target's
    and router replica's peak summed (an upper bound of the simultaneous peak): ``MetricsSnapshot.in_flight``. The
    source also sends it with ``$rate_window`` set to the step, as a range query: the peak of each step of the window
    (``TrafficWindow.peak_in_flight``), so keep ``$rate_window`` as the range of its ``max_over_time``."""
    error_rate: str | None = DEFAULT_ERROR_RATE
    """Requests per second answered 5xx (by the target or by the router): ``MetricsSnapshot.error_rate``."""
    overflow_rate: str | None = DEFAULT_OVERFLOW_RATE
    """Requests per second the router refused at a circuit breaker (never sent): ``MetricsSnapshot.overflow_rate``."""
    time_to_first_token: str | None = None
    """Time to first token in seconds, where the model server exports it (``VLLM_TIME_TO_FIRST_TOKEN`` for vLLM);
    off by default: ``MetricsSnapshot.time_to_first_token``."""
    warm_latency: str | None = DEFAULT_WARM_LATENCY
    """Latency in seconds of requests that did not queue, as the SLO measures it, sent with its ``$rate_window`` set
    to the whole window (``TrafficWindow.warm_latency_seconds``): by default the median of the router's first-token
    histogram, for the workloads whose objective bounds the first token (the others have no series: the policy
    uses their service time); ``VLLM_WARM_LATENCY`` reads vLLM's own mean instead."""
    router_up: str | None = DEFAULT_ROUTER_UP
    """The router's scrape health, NOT grouped by workload: one series per scraped router (Prometheus' ``up``).
    Any series at 0, or none at all, is a problem of the whole fetch (placement freezes, as when Prometheus is
    down): with one router replica unscraped, the sums over replicas would read as less traffic. None = no check
    (no router, e.g. with ``MODEL_SERVER_TEMPLATES``)."""
    selector: str = ""
    """Extra label matchers put into every ``$selector``, e.g. ``job="model-servers"``; empty = none."""

    def __post_init__(self) -> None:
        if not self.request_rate.strip():
            raise TemplateError("request_rate template is empty")
        if not (0 < self.latency_bucket_unit_seconds < float("inf")):
            raise TemplateError(f"latency_bucket_unit_seconds must be > 0, got {self.latency_bucket_unit_seconds}")
        for f in fields(self):
            if f.name in ("selector", "latency_bucket_unit_seconds"):
                continue
            text = getattr(self, f.name)
            if text is None:
                continue
            # get_identifiers() skips "$1"-style references, which substitution leaves as they are
            unknown = set(Template(text).get_identifiers()) - PLACEHOLDERS
            if unknown:
                raise TemplateError(
                    f"{f.name}: unknown placeholder(s) {', '.join(sorted('$' + u for u in unknown))}; "
                    f"known: {', '.join(sorted('$' + p for p in PLACEHOLDERS))}"
                )
        if any(ch in self.selector for ch in "{}"):
            raise TemplateError(f"selector {self.selector!r} must be bare label matchers, without braces")

    def by_signal(self) -> dict[Signal, str]:
        """The enabled templates, request rate first."""
        enabled = {
            Signal.REQUEST_RATE: self.request_rate,
            Signal.LATENCY_P99: self.latency_p99,
            Signal.SERVICE_SECONDS: self.service_seconds,
            Signal.GPU_UTILIZATION: self.gpu_utilization,
            Signal.LATENCY_BUCKETS: self.latency_buckets,
            Signal.IN_FLIGHT: self.in_flight,
            Signal.ERROR_RATE: self.error_rate,
            Signal.OVERFLOW_RATE: self.overflow_rate,
            Signal.TIME_TO_FIRST_TOKEN: self.time_to_first_token,
            Signal.WARM_LATENCY: self.warm_latency,
            Signal.ROUTER_UP: self.router_up,
        }
        return {signal: text for signal, text in enabled.items() if text is not None}


MODEL_SERVER_TEMPLATES = PromQLTemplates(
    request_rate="sum by ($by) (rate(model_requests_total{$selector}[$rate_window]))",
    latency_p99=(
        "histogram_quantile(0.99, sum by ($by, le) "
        "(rate(model_request_duration_seconds_bucket{$selector}[$rate_window])))"
    ),
    service_seconds=(
        "sum by ($by) (rate(model_request_duration_seconds_sum{$selector}[$rate_window]))"
        " / sum by ($by) (rate(model_request_duration_seconds_count{$selector}[$rate_window]))"
    ),
    latency_buckets="sum by ($by, le) (rate(model_request_duration_seconds_bucket{$selector}[$rate_window]))",
    latency_bucket_unit_seconds=1.0,
    in_flight=None,
    error_rate=None,
    overflow_rate=None,
    warm_latency=None,
    router_up=None,
)
"""Templates reading the project's model server (``e2e/model_server.py``) instead of the router: a workload is
measured only where Prometheus can scrape its model server (not on Cloud Run or Lambda)."""


def prometheus_duration(seconds: float) -> str:
    """A Prometheus duration literal (``90s``, ``1500ms``): PromQL accepts no fractional units."""
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{max(1, round(seconds * 1000))}ms"


def render_queries(
    templates: PromQLTemplates,
    *,
    namespace_label: str = "namespace",
    workload_label: str = "workload",
    rate_window_seconds: float = 60.0,
    extra_matchers: str = "",
) -> dict[Signal, str]:
    """The PromQL sent each tick, one query per enabled signal; ``extra_matchers`` (bare, e.g. ``le="0.25"``) are
    added to every ``$selector``."""
    for name, value in (("namespace_label", namespace_label), ("workload_label", workload_label)):
        if not _LABEL_NAME.match(value):
            raise TemplateError(f"{name} {value!r} is not a Prometheus label name")
    if namespace_label == workload_label:
        raise TemplateError("namespace_label and workload_label must differ")
    if not rate_window_seconds > 0:
        raise TemplateError(f"rate_window_seconds must be > 0, got {rate_window_seconds}")
    values = {
        "by": f"{namespace_label}, {workload_label}",
        "namespace_label": namespace_label,
        "workload_label": workload_label,
        "rate_window": prometheus_duration(rate_window_seconds),
        "selector": ",".join(part for part in (templates.selector, extra_matchers) if part),
    }
    return {signal: Template(text).safe_substitute(values) for signal, text in templates.by_signal().items()}
