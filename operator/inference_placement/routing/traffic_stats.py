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
from collections.abc import Iterable, Mapping
from typing import Any, Final

from inference_placement.api.spec import TargetName
from inference_placement.policy.traffic_health import TargetCounters

__all__ = ["TRAFFIC_STATS_QUERY", "TargetKey", "parse_target_counters", "sum_target_counters"]

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
