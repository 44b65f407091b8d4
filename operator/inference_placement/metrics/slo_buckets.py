"""Requests slower than each workload's SLO, from the latency histogram's buckets (pure: no I/O).

A classic Prometheus histogram counts requests at or under each bucket bound (``le``). The requests slower than an
objective of ``L`` seconds are the ``+Inf`` bucket's count less the count of the largest bound at or under ``L``.
When no bound equals ``L`` exactly this over-counts (requests between that bound and ``L`` are counted as misses):
the error is on the side of more capacity, never less. A workload whose objective lies below every bound gets no
count (unknown), as does one whose histogram lacks its bound or ``+Inf`` at a step.

Which bounds exist is discovered from Prometheus (``bounds_query``). Prometheus computes the share
(``miss_share_query``): one query per bound the fleet's objectives use (usually one), for the newest points only,
each answering one series per workload.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["INF_LE", "BucketBounds", "bounds_query", "le_matcher", "miss_share_query"]

INF_LE = "+Inf"
"""The ``le`` of the bucket that counts every request."""


@dataclass(frozen=True)
class BucketBounds:
    """The finite bucket bounds a histogram has, as Prometheus spells them, ascending."""

    bounds: tuple[tuple[float, str], ...]
    """(bound in seconds, its ``le`` text)."""

    @classmethod
    def from_le_values(cls, values: Iterable[object], unit_seconds: float = 1.0) -> BucketBounds:
        """From ``le`` label values in ``unit_seconds`` (0.001: an Envoy histogram in milliseconds); texts that are
        not a finite non-negative number are left out."""
        seen: dict[float, str] = {}
        for text in values:
            if not isinstance(text, str):
                continue
            try:
                bound = float(text) * unit_seconds
            except ValueError:
                continue
            if math.isfinite(bound) and bound >= 0 and bound not in seen:
                seen[bound] = text
        return cls(tuple(sorted(seen.items())))

    def le_for(self, objective_seconds: float) -> str | None:
        """The ``le`` text of the largest bound at or under the objective (a relative 1e-9 tolerance, for bounds
        written with rounding); None when every bound is above it."""
        chosen: str | None = None
        for bound, text in self.bounds:
            if bound <= objective_seconds * (1 + 1e-9):
                chosen = text
            else:
                break
        return chosen

    def __bool__(self) -> bool:
        return bool(self.bounds)


def bounds_query(bucket_query: str) -> str:
    """An instant query naming every ``le`` the bucket template returns (one series per bound, whatever the fleet's
    size)."""
    return f"count by (le) ({bucket_query})"


def le_matcher(le: str) -> str:
    """A bare PromQL matcher selecting one ``le`` value (written as a PromQL double-quoted string)."""
    return "le=" + json.dumps(le)


def miss_share_query(all_requests: str, within: str) -> str:
    """The share of requests slower than the objective, one series per workload: the ``+Inf`` bucket's query less
    the query of the bound at or under the objective, over the ``+Inf`` one, matched on every label but ``le``
    (which the result drops). NaN where no request finished (0/0): unknown."""
    return f"(({all_requests}) - ignoring (le) ({within})) / ignoring (le) ({all_requests})"
