"""PromQL templates for the batched metrics fetch: one query per signal for ALL workloads, grouped by workload.

A template is a PromQL expression with ``$``-placeholders (``string.Template``; ``$$`` is a literal ``$``, and
``$1``-style references in ``label_replace`` are left alone):

``$by``           the grouping labels, ``namespace, workload`` by default (see ``namespace_label``/``workload_label``)
``$namespace_label`` / ``$workload_label``  the two label names on their own
``$rate_window``  the range of ``rate()``/``*_over_time()``, e.g. ``60s``
``$selector``     extra label matchers for every metric, e.g. ``job="model-servers"`` (empty by default)

Every template must return one series per workload carrying both grouping labels. The defaults fit the project's
model server (``e2e/model_server.py``): a ``model_requests_total`` counter and a ``model_request_duration_seconds``
histogram, with ``namespace`` and ``workload`` labels added by the scrape config (relabeling from the pod), and
NVIDIA's DCGM exporter's ``DCGM_FI_DEV_GPU_UTIL`` (percent) relabeled the same way.

``latency_buckets`` is the one template grouped by ``le`` too: the latency histogram's buckets, from which the source
measures each workload's share of requests slower than its SLO (``metrics/slo_buckets.py``). The source sends it
with its ``$rate_window`` set to the share's span and an ``le`` matcher added to every ``$selector``: (``+Inf`` less
the bound at or under the objective) over ``+Inf``, one series per workload.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, fields
from string import Template

__all__ = [
    "DEFAULT_GPU_UTILIZATION",
    "DEFAULT_LATENCY_BUCKETS",
    "DEFAULT_LATENCY_P99",
    "DEFAULT_REQUEST_RATE",
    "DEFAULT_SERVICE_SECONDS",
    "PLACEHOLDERS",
    "PromQLTemplates",
    "Signal",
    "TemplateError",
    "prometheus_duration",
    "render_queries",
]

PLACEHOLDERS = frozenset({"by", "namespace_label", "workload_label", "rate_window", "selector"})
"""The placeholders a template may use."""

DEFAULT_REQUEST_RATE = "sum by ($by) (rate(model_requests_total{$selector}[$rate_window]))"
DEFAULT_LATENCY_P99 = (
    "histogram_quantile(0.99, sum by ($by, le) (rate(model_request_duration_seconds_bucket{$selector}[$rate_window])))"
)
DEFAULT_SERVICE_SECONDS = (
    "sum by ($by) (rate(model_request_duration_seconds_sum{$selector}[$rate_window]))"
    " / sum by ($by) (rate(model_request_duration_seconds_count{$selector}[$rate_window]))"
)
DEFAULT_LATENCY_BUCKETS = "sum by ($by, le) (rate(model_request_duration_seconds_bucket{$selector}[$rate_window]))"
DEFAULT_GPU_UTILIZATION = "avg by ($by) (avg_over_time(DCGM_FI_DEV_GPU_UTIL{$selector}[$rate_window])) / 100"

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
    selector: str = ""
    """Extra label matchers put into every ``$selector``, e.g. ``job="model-servers"``; empty = none."""

    def __post_init__(self) -> None:
        if not self.request_rate.strip():
            raise TemplateError("request_rate template is empty")
        for f in fields(self):
            if f.name == "selector":
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
        }
        return {signal: text for signal, text in enabled.items() if text is not None}


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
