"""The router's per-target traffic counters, read from Envoy's ``/stats`` (JSON) and parsed without I/O.

One GET per router replica (the health listener proxies ``/stats`` with any query) selects, for every workload
cluster ``ip|NAMESPACE|NAME|TARGET``, the counters ``policy.traffic_health`` judges a migration's target by:
``upstream_rq_total``, ``upstream_rq_5xx``, ``upstream_rq_rx_reset``, ``upstream_rq_tx_reset``, ``upstream_rq_401``,
``upstream_rq_403`` and the ``upstream_rq_time`` histogram with cumulative bucket counts (Envoy updates histograms
at each stats flush, every 5 s by default). Envoy creates a response-code counter at its first occurrence, so a
missing one is 0.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Final

from inference_placement.api.spec import TargetName
from inference_placement.policy.first_request import LatencyBin, ServerlessReading
from inference_placement.policy.traffic_health import TargetCounters

__all__ = [
    "FIRST_REQUEST_COUNTERS_QUERY",
    "TRAFFIC_STATS_QUERY",
    "TargetKey",
    "first_request_bins_query",
    "parse_serverless_bins",
    "parse_serverless_counters",
    "parse_target_counters",
    "sum_serverless_bins",
    "sum_serverless_readings",
    "sum_target_counters",
]

TargetKey = tuple[str, str, TargetName]
"""(namespace, workload name, target)."""

_COUNTERS: Final = ("total", "5xx", "rx_reset", "tx_reset", "401", "403")
_NAME = re.compile(r"^cluster\.ip\|([^|.]+)\|([^|.]+)\|([a-z]+)\.upstream_rq_(" + "|".join(_COUNTERS) + "|time)$")
TRAFFIC_STATS_QUERY: Final = urllib.parse.urlencode(
    {
        "format": "json",
        "filter": r"^cluster\.ip\|[^.]+\.upstream_rq_(" + "|".join(_COUNTERS) + "|time)$",
        "histogram_buckets": "cumulative",
    }
)
"""The ``/stats`` query string of one read (JSON, only the workload clusters' counters this module parses)."""


def _target(value: str) -> TargetName | None:
    try:
        return TargetName(value)
    except ValueError:
        return None  # the composite cluster of a spilling route: its attempts are counted on the targets' own


def parse_target_counters(payload: Any) -> dict[TargetKey, TargetCounters]:
    """The counters of every workload target in one router replica's ``/stats?{TRAFFIC_STATS_QUERY}`` answer."""
    values: dict[TargetKey, dict[str, float]] = {}
    buckets: dict[TargetKey, tuple[tuple[float, float], ...]] = {}
    for stat in payload.get("stats", []) if isinstance(payload, dict) else []:
        if not isinstance(stat, dict):
            continue
        if isinstance(stat.get("name"), str):
            match = _NAME.match(stat["name"])
            target = _target(match.group(3)) if match else None
            if match and target is not None and isinstance(stat.get("value"), int | float):
                key = (match.group(1), match.group(2), target)
                values.setdefault(key, {})[match.group(4)] = float(stat["value"])
        for histogram in stat.get("histograms", []) if isinstance(stat.get("histograms"), list) else []:
            match = _NAME.match(str(histogram.get("name", "")))
            target = _target(match.group(3)) if match else None
            if match is None or target is None or match.group(4) != "time":
                continue
            key = (match.group(1), match.group(2), target)
            buckets[key] = tuple(
                (float(b["upper_bound"]), float(b.get("cumulative", 0)))
                for b in histogram.get("buckets", [])
                if isinstance(b, dict) and isinstance(b.get("upper_bound"), int | float)
            )
    out: dict[TargetKey, TargetCounters] = {}
    for key in values.keys() | buckets.keys():
        counters = values.get(key, {})
        out[key] = TargetCounters(
            requests=counters.get("total", 0.0),
            server_errors=counters.get("5xx", 0.0),
            resets=counters.get("rx_reset", 0.0) + counters.get("tx_reset", 0.0),
            auth_refusals=counters.get("401", 0.0) + counters.get("403", 0.0),
            latency_buckets=buckets.get(key, ()),
        )
    return out


def sum_target_counters(replicas: Iterable[Mapping[TargetKey, TargetCounters]]) -> dict[TargetKey, TargetCounters]:
    """Every router replica's counters added up per target (each replica counts the requests it routed)."""
    total: dict[TargetKey, TargetCounters] = {}
    for counters in replicas:
        for key, value in counters.items():
            total[key] = total[key] + value if key in total else value
    return total


_SERVERLESS_NAME = re.compile(
    r"^cluster\.(ip|warm)\|([^|.]+)\|([^|.]+)\|(cloudrun|lambda)\.upstream_rq_(total|active|time)$"
)
FIRST_REQUEST_COUNTERS_QUERY: Final = urllib.parse.urlencode(
    {"format": "json", "filter": r"^cluster\.(ip|warm)\|[^.]+\|(cloudrun|lambda)\.upstream_rq_(total|active)$"}
)
"""The ``/stats`` query string of the serverless cold-start read (``policy.first_request``), every tick: each
serverless target's request counter and requests in flight, and its warm (keep-warm ping) cluster's. Three numbers
per target, no histogram."""
_BINS_MAX_WORKLOADS: Final = 200


def first_request_bins_query(workloads: Collection[tuple[str, str]]) -> str:
    """The ``/stats`` query string reading the request-time histograms, in Envoy's detailed bins (two significant
    digits: one request's latency within a few percent, where the configured buckets are up to 50 % wide), of the
    serverless targets of exactly ``workloads`` ((namespace, name): those ``policy.first_request.wants_bins``
    names), so the payload grows with the targets crossing an idle gap, not with the fleet. Past
    ``_BINS_MAX_WORKLOADS`` at once, every serverless target's (a long filter would not fit a request line)."""
    if len(workloads) > _BINS_MAX_WORKLOADS:
        names = r"[^|]+\|[^|]+"
    else:
        names = "(" + "|".join(sorted(re.escape(f"{ns}|{name}") for ns, name in workloads)) + ")"
    return urllib.parse.urlencode(
        {
            "format": "json",
            "filter": rf"^cluster\.ip\|{names}\|(cloudrun|lambda)\.upstream_rq_time$",
            "histogram_buckets": "detailed",
        }
    )


def _serverless_key(match: re.Match[str]) -> TargetKey:
    return (match.group(2), match.group(3), TargetName(match.group(4)))


def parse_serverless_counters(payload: Any) -> dict[TargetKey, ServerlessReading]:
    """Every serverless target's counters in one router replica's ``/stats?{FIRST_REQUEST_COUNTERS_QUERY}``
    answer (no bins: ``ServerlessReading.bins`` None)."""
    values: dict[TargetKey, dict[str, float]] = {}
    for stat in payload.get("stats", []) if isinstance(payload, dict) else []:
        if not isinstance(stat, dict) or not isinstance(stat.get("name"), str):
            continue
        match = _SERVERLESS_NAME.match(stat["name"])
        if match and match.group(5) != "time" and isinstance(stat.get("value"), int | float):
            per = values.setdefault(_serverless_key(match), {})
            name = f"{match.group(1)}_{match.group(5)}"
            per[name] = per.get(name, 0.0) + float(stat["value"])
    return {
        key: ServerlessReading(
            per.get("ip_total", 0.0),
            per.get("warm_total", 0.0),
            per.get("ip_active", 0.0) + per.get("warm_active", 0.0),
        )
        for key, per in values.items()
        if "ip_total" in per
    }


def parse_serverless_bins(payload: Any) -> dict[TargetKey, tuple[LatencyBin, ...]]:
    """Every serverless target's request-time bins (lower bound ms, width ms, count) in one router replica's
    ``/stats?{first_request_bins_query(...)}`` answer."""
    bins: dict[TargetKey, tuple[LatencyBin, ...]] = {}
    for stat in payload.get("stats", []) if isinstance(payload, dict) else []:
        histograms = stat.get("histograms") if isinstance(stat, dict) else None
        details = histograms.get("details", []) if isinstance(histograms, dict) else []
        for detail in details if isinstance(details, list) else []:
            if not isinstance(detail, dict):
                continue
            match = _SERVERLESS_NAME.match(str(detail.get("name", "")))
            if match is None or match.group(1) != "ip" or match.group(5) != "time":
                continue
            bins[_serverless_key(match)] = tuple(
                (float(b["lower_bound"]), float(b.get("width", 0.0)), float(b.get("count", 0)))
                for b in detail.get("totals", [])
                if isinstance(b, dict)
                and isinstance(b.get("lower_bound"), int | float)
                and isinstance(b.get("width", 0.0), int | float)
                and isinstance(b.get("count", 0), int | float)
            )
    return bins


def sum_serverless_readings(
    replicas: Iterable[Mapping[TargetKey, ServerlessReading]],
) -> dict[TargetKey, ServerlessReading]:
    """Every router replica's counters added up per target (each replica counts the requests it routed)."""
    total: dict[TargetKey, ServerlessReading] = {}
    for readings in replicas:
        for key, value in readings.items():
            old = total.get(key, ServerlessReading())
            total[key] = ServerlessReading(
                old.requests + value.requests, old.pings + value.pings, old.in_flight + value.in_flight
            )
    return total


def sum_serverless_bins(
    replicas: Iterable[Mapping[TargetKey, tuple[LatencyBin, ...]]],
) -> dict[TargetKey, tuple[LatencyBin, ...]]:
    """Every router replica's bins added up per target (bins with the same bounds added)."""
    merged: dict[TargetKey, dict[tuple[float, float], float]] = {}
    for bins in replicas:
        for key, value in bins.items():
            per = merged.setdefault(key, {})
            for lower, width, count in value:
                per[(lower, width)] = per.get((lower, width), 0.0) + count
    return {key: tuple(sorted((lo, w, c) for (lo, w), c in per.items())) for key, per in merged.items()}
