"""The Prometheus metrics source: per tick ONE range query per signal for ALL workloads, grouped by workload.

Each ``fetch(keys, now, objective_seconds)`` sends the enabled signals' queries (request rate, p99 latency, mean service
time, GPU utilisation, the latency buckets at the workloads' objectives; see ``promql.py``) as range queries at
``step_seconds`` on a grid of whole steps (the window ends at the last multiple of the step at or before the ``now``
passed in, never the wall clock), concurrently in worker threads
(``prometheus-api-client`` is synchronous; the event loop is never blocked). The number of queries is constant in the
number of workloads: one per signal on a steady fetch; a whole-window fetch asks for the windowed signals in spans of
``WHOLE_WINDOW_POINTS_PER_QUERY`` points.

The share of each workload's requests slower than its SLO (``TrafficWindow.slo_miss_share``, over the last
``slo_miss_window_seconds``) comes from the latency histogram (``slo_buckets.py``): which bucket bounds exist is
asked once an hour (one instant query); each fetch sends one query per bound the objectives in
``objective_seconds`` use, for the newest points only, and Prometheus computes the share (one series per workload).

The router's latest-only readings (in flight, 5xx rate, overflow rate; time to first token where configured) are
read like p99: each workload's newest point within ``max_staleness_seconds``; absent, NaN or invalid = not reported.

Incremental: the windowed signals (request rate, GPU utilisation) are kept between fetches as floats on
that grid. A fetch asks for the whole window only when it has to (the first fetch, a workload it has not fetched
before, a fetch missed for longer than the overlap, a clock that went back); otherwise it asks for the newest points
only, over the last ``max_staleness_seconds`` (the overlap: points that recent are replaced, since late scrapes may
still change them), and slides the kept window. At 10,000 workloads that is 7 points per series decoded instead of
60. A point older than the overlap is taken as final (Prometheus refuses out-of-order samples by default).

What goes wrong is answered, never raised:
  - Prometheus down, slow, an HTTP error, a response that is not the expected JSON: ``MetricsSnapshot.problem`` says
    which, and no workload gets a window (placement freezes; nothing moves on half an answer);
  - the router's stats scrape failing (its stats port gone, a garbage answer: Prometheus' ``up`` at 0 for any
    router, or no router scraped at all; ``PromQLTemplates.router_up``): the same, the whole fetch fails with the
    reason (with Prometheus' last scrape error per failing router, from its targets API), since sums over router
    replicas with one unscraped would read as less traffic;
  - a workload with no request-rate series, a series whose last point is older than ``max_staleness_seconds``, a
    NaN/Inf/negative request rate anywhere in the window, an Inf/negative latency or service time, or several series
    for one workload (a template not grouped by workload): that workload gets no window, and
    ``MetricsSnapshot.per_workload_problem`` says why.
A NaN p99 or service time is what Prometheus answers when no request finished in the rate window (0/0): it reads as
"unknown" (None), not as garbage.
"""

from __future__ import annotations

import asyncio
import logging
import math
from array import array
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import numpy as np
import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from inference_placement.api.workload import WorkloadKey
from inference_placement.metrics.matrix import (
    BadSample,
    HistoryReadout,
    PerStepReadout,
    SeriesMatrix,
    fill,
    moved,
    with_rows,
)
from inference_placement.metrics.promql import PromQLTemplates, Signal, prometheus_duration, render_queries
from inference_placement.metrics.slo_buckets import (
    INF_LE,
    BucketBounds,
    bounds_query,
    le_matcher,
    miss_rate_query,
    miss_share_query,
)
from inference_placement.metrics.source import MetricsSnapshot
from inference_placement.policy.decide import TrafficWindow
from inference_placement.policy.observation import ObservedSignals
from inference_placement.policy.series import FloatSeries

__all__ = [
    "BUCKET_BOUNDS_REFRESH_SECONDS",
    "MAX_POINTS_PER_SERIES",
    "WHOLE_WINDOW_POINTS_PER_QUERY",
    "PrometheusAuth",
    "PrometheusAuthError",
    "PrometheusSource",
]

log = logging.getLogger(__name__)

MAX_POINTS_PER_SERIES = 11_000
"""Prometheus refuses range queries with more points per series than this."""

_FETCH_BUDGET_MARGIN_SECONDS = 2.0
"""On top of ``timeout_seconds``: the bound on a whole fetch (requests' timeout is per socket operation)."""

_MAX_ERROR_TEXT = 300

_LabelKey = tuple[str, str]
_Sample = tuple[float, Any]
"""(time, value as Prometheus sent it)."""
_Points = list[list[Any]] | list[tuple[float, float]]
"""A series' samples: decoded as ``(time, value)`` floats where the whole answer is a well-formed matrix
(``_TypedSeries``), else as Prometheus sends them, ``[[time, "value"], ...]``, each shape-checked (``_pair``) and
converted only where it is read, so a fleet-wide answer is not copied point by point."""

_TIME_TYPE_SET = frozenset({int, float})

WHOLE_WINDOW_POINTS_PER_QUERY = 15
"""A whole window is asked for in spans of at most this many points per series, one after the other, so that the
decoded answer (the transient peak of a fetch) stays small: a constant number of queries, whatever the fleet size."""

BUCKET_BOUNDS_REFRESH_SECONDS = 3600
"""How often (on the fetches' clock) the latency histogram's bucket bounds are asked for again."""

_WINDOWED = frozenset({Signal.REQUEST_RATE, Signal.GPU_UTILIZATION})
"""Signals read over the whole window: kept between fetches, only their newest points fetched (module docstring)."""

_PEAKS = "peak_in_flight"
_SERVICE = "service_per_step"
_MISSES = "slo_misses"
_HISTORY = "history_rps"
_HISTORY_MISSES = "history_slo_misses"
"""The per-step and history signals, kept as one array each (``matrix.py``)."""


class PrometheusAuthError(Exception):
    """A credential file of ``PrometheusAuth`` could not be read (the message names the file, never its content)."""


@dataclass(frozen=True)
class PrometheusAuth:
    """How the operator authenticates to a managed or multi-tenant Prometheus (Grafana Mimir / Cloud, Cortex, Amazon
    Managed Prometheus behind a proxy, Google Managed Prometheus' frontend, Thanos behind an auth proxy, or
    Prometheus' own ``--web.config.file``).

    The credential files are read again for every query, so a rotated token (a projected ServiceAccount token, a
    Secret the kubelet updates) is used without a restart. Nothing here is ever logged.

    Args:
        bearer_token_file: a file holding a token sent as ``Authorization: Bearer <token>``.
        basic_auth_username / basic_auth_password_file: HTTP basic auth (the password read from the file).
        headers: extra headers on every query, e.g. ``{"X-Scope-OrgID": "tenant-a"}`` (Mimir, Cortex tenancy).
        ca_file: a PEM bundle of the CAs that sign Prometheus' certificate (``https://`` URLs), instead of the
            system's trust store.
    """

    bearer_token_file: Path | None = None
    basic_auth_username: str | None = None
    basic_auth_password_file: Path | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    ca_file: Path | None = None

    def __post_init__(self) -> None:
        if (self.basic_auth_username is None) != (self.basic_auth_password_file is None):
            raise ValueError("basic auth needs both a username and a password file")
        if self.bearer_token_file is not None and self.basic_auth_username is not None:
            raise ValueError("use a bearer token or basic auth, not both")
        authorization = {name.lower() for name in self.headers} & {"authorization"}
        if authorization and (self.bearer_token_file is not None or self.basic_auth_username is not None):
            raise ValueError("an Authorization header conflicts with the bearer token or basic auth")
        for name, value in self.headers.items():
            if not name or any(c in name for c in ":\r\n ") or any(c in value for c in "\r\n"):
                raise ValueError(f"invalid HTTP header {name!r}")

    def request_headers(self) -> dict[str, str]:
        """The headers of one query: the extra ones, plus the bearer token read now."""
        headers = dict(self.headers)
        if self.bearer_token_file is not None:
            headers["Authorization"] = f"Bearer {_read_secret(self.bearer_token_file, 'bearer token')}"
        return headers

    def basic_auth(self) -> tuple[str, str] | None:
        """(username, password read now), or None without basic auth."""
        if self.basic_auth_username is None or self.basic_auth_password_file is None:
            return None
        return self.basic_auth_username, _read_secret(self.basic_auth_password_file, "basic auth password")

    def verify(self) -> str | bool:
        """requests' ``verify``: the CA bundle's path, or True (the system's trust store)."""
        if self.ca_file is None:
            return True
        if not self.ca_file.is_file():
            raise PrometheusAuthError(f"CA file {self.ca_file} not found")
        return str(self.ca_file)


def _read_secret(path: Path, what: str) -> str:
    try:
        value = path.read_text().strip()
    except OSError as err:
        raise PrometheusAuthError(f"{what} file {path} unreadable ({type(err).__name__})") from None
    if not value:
        raise PrometheusAuthError(f"{what} file {path} is empty")
    return value


@dataclass(frozen=True)
class _MatrixTask:
    """How one matrix signal is asked for in this fetch."""

    name: str
    queries: tuple[tuple[str, str | None], ...]
    """(PromQL, the ``le`` whose workloads it answers for, or None: all)."""
    rows: frozenset[_LabelKey]
    start_ts: int
    from_ts: int
    end_ts: int
    step: int
    spans: tuple[tuple[int, int], ...]
    dtype: type[np.floating[Any]]
    le_of: Mapping[_LabelKey, str] | None
    """The bound each workload's misses are asked at (None: not a per-bound signal)."""
    base: SeriesMatrix | None = None
    """The matrix the answers are written into, prepared (the history's); None: the kept one, moved."""

    @property
    def sent(self) -> int:
        return len(self.queries) * len(self.spans)


@dataclass(frozen=True)
class _Readouts:
    """The matrix signals read out for this fetch's windows (each checked for all workloads at once)."""

    peaks: PerStepReadout | None
    misses: PerStepReadout | None
    service: PerStepReadout | None
    history: HistoryReadout | None


class _BadResponse(Exception):
    """The answer of one query is not the matrix we asked for."""


class _TypedSeries(msgspec.Struct):
    """One series of a range query's answer, its samples decoded to floats in C (``_MATRIX_DECODER``)."""

    metric: dict[str, str]
    values: list[tuple[float, float]]


class _TypedData(msgspec.Struct):
    result: list[_TypedSeries]


class _TypedAnswer(msgspec.Struct):
    data: _TypedData


_MATRIX_DECODER = msgspec.json.Decoder(_TypedAnswer, strict=False)
"""A range query's answer straight to float samples: ``strict=False`` reads Prometheus' value strings ("0.5",
"NaN", "-Inf", "1e+06") as floats, so no Python string per point and no per-point check or conversion afterwards
(a steady fetch at 10,000 workloads decodes ~10^5 points a query). An answer it refuses ("+Inf", which msgspec
does not read; anything not a matrix of numbers) is decoded as it is and checked point by point (``_parse``)."""


@dataclass(frozen=True)
class _SignalResult:
    series: dict[_LabelKey, _Points]
    duplicated: frozenset[_LabelKey]
    """Workloads with more than one series (a template not grouped by workload)."""
    unlabelled: int
    """Series without both grouping labels (ignored)."""


@dataclass(frozen=True)
class _Answered:
    """What a fetch keeps of one signal's answers once their points are folded in: never the points themselves
    (an asyncio future holding its coroutine's result would keep them alive past the fetch)."""

    labelled: int
    """Series with both grouping labels in the (last) answer."""
    duplicated: frozenset[_LabelKey]
    unlabelled: int

    @classmethod
    def of(cls, result: _SignalResult) -> _Answered:
        return cls(len(result.series), result.duplicated, result.unlabelled)


@dataclass(frozen=True, slots=True)
class _Series:
    """One workload's series of a windowed signal, as floats on the window's grid."""

    values: array[float]
    """One per grid point from the window's start to its end; NaN = no sample there, or one ``invalid`` names.
    Machine doubles (8 bytes a point; a list of Python floats is 32: ~15 MB at 10,000 workloads x 60 points)."""
    invalid: dict[int, str] | None
    """Grid time -> the text of a sample outside the signal's valid range, as Prometheus sent it (None: none)."""

    def last_present(self, start_ts: int, step: int) -> int:
        """Index of the newest point that has a sample, valid or not (-1: none)."""
        values = self.values
        last = len(values) - 1
        while last >= 0 and values[last] != values[last]:  # NaN: none there
            last -= 1
        if self.invalid:
            last = max(last, (max(self.invalid) - start_ts) // step)
        return last


_NAN_POINT = array("d", [math.nan])


@dataclass(frozen=True)
class _Grid:
    """The window of one fetch on the step grid: its start, the overlap's start, its end (POSIX seconds)."""

    start_ts: int
    recent_ts: int
    end_ts: int
    step: int


@dataclass(frozen=True)
class _Kept:
    """What the last successful fetch keeps for the next one."""

    end_ts: int
    fetched: set[_LabelKey]
    """The workloads it asked for (one not among them makes the next fetch ask for the whole window)."""
    series: dict[Signal, dict[_LabelKey, _Series]]
    latest: dict[Signal, dict[_LabelKey, _Sample]]
    """Latest-only signals: each workload's newest sample within ``max_staleness_seconds``."""
    le_of: dict[_LabelKey, str]
    """The histogram bucket (``le``) each workload's SLO-miss share was asked for (another one: a whole fetch)."""
    matrices: dict[str, SeriesMatrix]
    """The per-step in-flight peaks and SLO misses, and the day's history (absent: not asked for)."""
    history: HistoryReadout | None = None
    """The history as the last snapshot read it out (reused while a workload's history is unchanged)."""
    history_cursor: int | None = None
    """The oldest history point asked for every row so far: older spans are asked for one per fetch."""


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_ERROR_TEXT else text[: _MAX_ERROR_TEXT - 3] + "..."


class PrometheusSource:
    """A ``MetricsSource`` reading Prometheus' HTTP API with ``prometheus-api-client``.

    Args:
        url: Prometheus base URL (``http://prometheus.monitoring:9090``); user info in it never reaches a message.
        templates: the PromQL per signal (defaults fit the project's model server; see ``PromQLTemplates``).
        range_seconds: how far back each window reaches; at least the longest ``spec.placement.sustainSeconds`` in
            use (default 900 s = 15 min; the policy's default sustain window is 300 s).
        step_seconds: distance between the window's samples, whole seconds (default 30 s).
        rate_window_seconds: the range of ``rate()`` in the templates (``$rate_window``); at least 4x the scrape
            interval (default 60 s, for 15 s scrapes).
        slo_miss_window_seconds: the span the share of requests slower than the SLO is measured over
            (``TrafficWindow.slo_miss_share``; default 300 s, the policy's default sustain window: the misses of
            the capacity in place now, not of capacity since added).
        max_staleness_seconds: a workload whose latest request-rate point is older than this gets no window
            (default 180 s). The point at ``t`` summarises ``[t - rate_window, t]``, so it lags the last scrape by up
            to ``rate_window_seconds``.
        timeout_seconds: per query, both the HTTP timeout and Prometheus' own ``timeout`` parameter (default 10 s).
        namespace_label / workload_label: the labels naming a workload's namespace and name on the series
            (``$by`` in the templates; defaults ``namespace`` and ``workload``).
        headers: extra HTTP headers (e.g. ``Authorization``); never logged.
        auth: bearer token / basic auth / extra headers / CA bundle for a managed Prometheus (``PrometheusAuth``).
        retries: HTTP retries per query within a tick (default 0: the next tick is the retry).
        history_seconds: the span of the request-rate history (``TrafficWindow.history_rps``; default a day);
            0 = none.
        history_step_seconds: the history's step, a whole multiple of ``step_seconds`` (default 300 s: 288 points
            a day).
    """

    def __init__(
        self,
        url: str,
        *,
        templates: PromQLTemplates | None = None,
        range_seconds: float = 900.0,
        step_seconds: float = 30.0,
        rate_window_seconds: float = 60.0,
        slo_miss_window_seconds: float = 300.0,
        max_staleness_seconds: float = 180.0,
        timeout_seconds: float = 10.0,
        namespace_label: str = "namespace",
        workload_label: str = "workload",
        headers: Mapping[str, str] | None = None,
        auth: PrometheusAuth | None = None,
        retries: int = 0,
        history_seconds: float = 86400.0,
        history_step_seconds: float = 300.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"Prometheus URL must be http(s)://host[:port][/path], got scheme {parts.scheme!r}")
        if not (step_seconds >= 1 and step_seconds == int(step_seconds)):
            raise ValueError(f"step_seconds must be a whole number of seconds >= 1, got {step_seconds}")
        if not range_seconds >= step_seconds:
            raise ValueError(f"range_seconds ({range_seconds}) must be >= step_seconds ({step_seconds})")
        points = math.ceil(range_seconds / step_seconds)
        if points > MAX_POINTS_PER_SERIES:
            raise ValueError(f"range/step gives {points} points per series; Prometheus allows {MAX_POINTS_PER_SERIES}")
        if not (timeout_seconds > 0 and max_staleness_seconds > 0 and slo_miss_window_seconds > 0):
            raise ValueError("timeout_seconds, max_staleness_seconds and slo_miss_window_seconds must be > 0")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        history_points = 0
        if history_seconds:
            step_multiple = history_step_seconds / step_seconds
            if not (history_step_seconds >= step_seconds and step_multiple == int(step_multiple)):
                raise ValueError(
                    f"history_step_seconds ({history_step_seconds}) must be a whole multiple of step_seconds "
                    f"({step_seconds})"
                )
            if not history_seconds >= history_step_seconds:
                raise ValueError(f"history_seconds ({history_seconds}) must be 0 or >= history_step_seconds")
            history_points = math.ceil(history_seconds / history_step_seconds)
            if history_points > MAX_POINTS_PER_SERIES:
                raise ValueError(f"history_seconds/history_step_seconds gives {history_points} points per series")
        self.url = url.rstrip("/")
        self.templates = templates if templates is not None else PromQLTemplates()
        self.step_seconds = int(step_seconds)
        self.points = points
        self.range_seconds = points * self.step_seconds
        """The span the window's points cover (``range_seconds`` rounded up to whole steps)."""
        self.rate_window_seconds = rate_window_seconds
        self.slo_miss_window_seconds = slo_miss_window_seconds
        self.max_staleness_seconds = max_staleness_seconds
        self.timeout_seconds = timeout_seconds
        self.namespace_label = namespace_label
        self.workload_label = workload_label
        self.retries = retries
        self._headers = dict(headers) if headers else None
        self.auth = auth if auth is not None else PrometheusAuth()
        self.history_step_seconds = int(history_step_seconds) if history_points else 0
        self.history_points = history_points
        queries = render_queries(
            self.templates,
            namespace_label=namespace_label,
            workload_label=workload_label,
            rate_window_seconds=rate_window_seconds,
        )
        if Signal.WARM_LATENCY in queries:  # the mean over the whole window
            queries[Signal.WARM_LATENCY] = self._render(Signal.WARM_LATENCY, self.range_seconds)
        self.queries: Mapping[Signal, str] = queries
        """The PromQL sent every tick, one per enabled signal."""
        self.peak_query = self._render(Signal.IN_FLIGHT, self.step_seconds) if Signal.IN_FLIGHT in queries else None
        """The in-flight template with the step as its range: each step's peak (``TrafficWindow.peak_in_flight``)."""
        self.service_query = queries.get(Signal.SERVICE_SECONDS)
        """The mean service time over the rate window, asked for at every step of the window as the request rate is
        (``TrafficWindow.service_per_step``)."""
        self.history_query = self._render(Signal.REQUEST_RATE, self.history_step_seconds) if history_points else None
        """The request rate over each history step (``TrafficWindow.history_rps``)."""
        port = f":{parts.port}" if parts.port else ""
        self._where = f"Prometheus at {parts.hostname}{port}"
        self._kept: _Kept | None = None
        self._bounds = BucketBounds(())
        self._bounds_ts: int | None = None
        """Fetch clock of the last bucket-bounds answer (None: never asked)."""
        self.whole_fetches = 0
        """Fetches that asked for the whole window (the others asked for the newest points only)."""

    @property
    def history_complete(self) -> bool:
        """Whether the kept history reaches back the whole ``history_seconds`` for every workload asked for (it
        is asked for one older span per fetch after a start; ``_history_tasks``)."""
        kept = self._kept
        if not self.history_points:
            return True
        if kept is None or kept.history_cursor is None:
            return False
        rates = kept.matrices.get(_HISTORY)
        return rates is not None and kept.history_cursor <= rates.start_ts

    def observed_signals(self, scrape_interval_seconds: float = 15.0) -> ObservedSignals:
        """What this source measures of a workload, at what resolution: the description the simulator builds
        ``ours``'s observation from (``sim/policies.py: window_from_observation``), so a simulation of an operator
        run with these settings shows the policy what the operator's ticks showed it (the parity rule).
        ``scrape_interval_seconds``: how often Prometheus scrapes the router (the chart's PodMonitor: 15 s), which
        is how often the in-flight gauge is read."""
        queries = self.queries
        return ObservedSignals(
            window_seconds=float(self.range_seconds),
            step_seconds=float(self.step_seconds),
            slo_miss_window_seconds=self.slo_miss_window_seconds,
            rate_window_seconds=self.rate_window_seconds,
            latency_p99=Signal.LATENCY_P99 in queries,
            service_seconds=Signal.SERVICE_SECONDS in queries,
            service_per_step=Signal.SERVICE_SECONDS in queries,
            peak_in_flight=self.peak_query is not None,
            in_flight_sample_seconds=scrape_interval_seconds if self.peak_query is not None else 0.0,
            warm_latency=Signal.WARM_LATENCY in queries,
            slo_misses_per_step=Signal.LATENCY_BUCKETS in queries,
            history_seconds=float(self.history_points * self.history_step_seconds),
            history_step_seconds=float(self.history_step_seconds),
        )

    # ------------------------------------------------------------------ the protocol

    async def fetch(
        self, keys: Sequence[WorkloadKey], now: datetime, objective_seconds: Mapping[WorkloadKey, float] | None = None
    ) -> MetricsSnapshot:
        """Windows for ``keys`` ending at ``now``; ``objective_seconds`` (each workload's latency objective) asks for
        their requests slower than it too (workloads without one get none)."""
        if not keys:
            return MetricsSnapshot()
        step = self.step_seconds
        end_ts = math.floor(_aware(now).timestamp()) // step * step
        start_ts = end_ts - (self.points - 1) * step
        # the same step grid, cut to the points _latest() may still accept (and the windows' overlap)
        recent_steps = min(self.points - 1, int(self.max_staleness_seconds // step))
        recent_ts = end_ts - recent_steps * step
        wanted = {(k.namespace, k.name) for k in keys}
        discovery = 0
        le_of: dict[_LabelKey, str] = {}
        if Signal.LATENCY_BUCKETS in self.queries and objective_seconds:
            try:
                async with asyncio.timeout(self.timeout_seconds + _FETCH_BUDGET_MARGIN_SECONDS):
                    discovery = await self._refresh_bounds(end_ts)
            except TimeoutError:
                slow = f"{self._where} did not answer within {self.timeout_seconds:g} s"
                return self._failed(f"latency bucket bounds query: {slow}", 1)
            except Exception as err:  # answered as a problem, like every query's failure
                return self._failed(f"latency bucket bounds query: {self._describe(err)}", 1)
            for key in keys:
                objective = objective_seconds.get(key)
                le = None if objective is None else self._bounds.le_for(objective)
                if le is not None:
                    le_of[(key.namespace, key.name)] = le
        kept = self._kept
        whole = (
            kept is None
            or not (recent_ts - step <= kept.end_ts <= end_ts)
            or not wanted <= kept.fetched
            or any(kept.le_of.get(k) != le for k, le in le_of.items())
        )
        previous = None if whole else kept
        signals = [s for s in self.queries if (s is not Signal.LATENCY_BUCKETS or le_of) and s is not Signal.ROUTER_UP]
        router_up = self.queries.get(Signal.ROUTER_UP)
        chunks = _chunks(start_ts, end_ts, step, WHOLE_WINDOW_POINTS_PER_QUERY) if whole else []
        bound_count = len(set(le_of.values()))
        window = _Grid(start_ts=start_ts, recent_ts=recent_ts, end_ts=end_ts, step=step)
        tasks, history_cursor = self._matrix_tasks(window, whole, wanted, le_of, kept)
        sent = (
            discovery
            + (router_up is not None)
            + sum(
                (len(chunks) if whole and s in _WINDOWED else 1) * (bound_count if s is Signal.LATENCY_BUCKETS else 1)
                for s in signals
            )
            + sum(task.sent for task in tasks)
        )
        # the signals run side by side, each asking one query after the other: a windowed one per span, the
        # SLO-miss share per bound
        sequential = max([1, len(chunks), bound_count, *(task.sent for task in tasks)])
        budget = self.timeout_seconds * sequential + _FETCH_BUDGET_MARGIN_SECONDS
        try:
            async with asyncio.timeout(budget):
                answers, matrix_answers, router_answer = await asyncio.gather(
                    asyncio.gather(
                        *(self._fetch_signal(s, previous, window, chunks, wanted, le_of) for s in signals),
                        return_exceptions=True,
                    ),
                    asyncio.gather(
                        *(self._fetch_matrix(task, previous) for task in tasks),
                        return_exceptions=True,
                    ),
                    self._router_check(router_up, end_ts),
                )
        except TimeoutError:
            return self._failed(f"{self._where} did not answer within {self.timeout_seconds:g} s", sent)
        if isinstance(router_answer, Exception):
            return self._failed(f"{Signal.ROUTER_UP.value} query: {self._describe(router_answer)}", sent)
        if router_answer is not None:
            return self._failed(router_answer, sent)
        results: dict[Signal, _Answered] = {}
        series: dict[Signal, dict[_LabelKey, _Series]] = {}
        latest: dict[Signal, dict[_LabelKey, _Sample]] = {}
        for signal, answer in zip(signals, answers, strict=True):
            if isinstance(answer, BaseException):
                if not isinstance(answer, Exception):
                    raise answer
                return self._failed(f"{signal.value} query: {self._describe(answer)}", sent)
            results[signal], kept_part = answer
            if signal in _WINDOWED:
                series[signal] = kept_part  # type: ignore[assignment]
            else:
                latest[signal] = kept_part  # type: ignore[assignment]
        matrices = self._matrices(tasks, matrix_answers)
        if isinstance(matrices, str):
            return self._failed(matrices, sent)
        # every answer is good: only now does the kept window move
        self._kept = _Kept(
            end_ts=end_ts,
            fetched=wanted,
            series=series,
            latest=latest,
            le_of=le_of,
            matrices=matrices,
            history_cursor=history_cursor,
            history=None
            if _HISTORY not in matrices
            else HistoryReadout(
                matrices[_HISTORY], matrices.get(_HISTORY_MISSES), None if kept is None else kept.history
            ),
        )
        self.whole_fetches += whole
        return self._snapshot(keys, end_ts, results, self._kept, sent)

    async def _fetch_signal(
        self,
        signal: Signal,
        previous: _Kept | None,
        window: _Grid,
        chunks: list[tuple[int, int]],
        wanted: AbstractSet[_LabelKey],
        le_of: Mapping[_LabelKey, str],
    ) -> tuple[_Answered, dict[_LabelKey, _Series] | dict[_LabelKey, _Sample]]:
        """One signal's queries and what is kept of them. A whole window is asked for in ``chunks``, one after the
        other, each folded into the kept floats before the next is asked for (the decoded answer is the transient
        peak of a fetch: 114 MB for 10,000 series x 60 points, 33 MB for 15)."""
        query = self.queries[signal]
        if signal is Signal.LATENCY_BUCKETS:
            wanted = wanted & le_of.keys()
        step = window.step

        def when(ts: int) -> datetime:
            return datetime.fromtimestamp(ts, UTC)

        if signal not in _WINDOWED:
            since = window.recent_ts if previous is None else max(window.recent_ts, min(window.end_ts, previous.end_ts))
            if signal is Signal.LATENCY_BUCKETS:
                result = await self._misses(le_of, when(since), when(window.end_ts))
            else:
                result = self._parse(
                    await asyncio.to_thread(self._query_range, query, when(since), when(window.end_ts))
                )
            newest = _newest(
                None if previous is None else previous.latest.get(signal),
                result,
                wanted,
                oldest_ts=window.end_ts - self.max_staleness_seconds,
            )
            return _Answered.of(result), newest
        spans = [(window.recent_ts, window.end_ts)] if previous is not None else chunks
        kept = None if previous is None else previous.series.get(signal)
        kept_end = window.end_ts if previous is None else previous.end_ts
        duplicated: set[_LabelKey] = set()
        unlabelled = 0
        result = _SignalResult({}, frozenset(), 0)
        for first_ts, last_ts in spans:
            answer = await asyncio.to_thread(self._query_range, query, when(first_ts), when(last_ts))
            result = self._parse(answer)
            del answer
            duplicated |= result.duplicated
            unlabelled = max(unlabelled, result.unlabelled)
            kept = _slide(
                kept,
                kept_end,
                result,
                wanted,
                start_ts=window.start_ts,
                from_ts=first_ts,
                end_ts=window.end_ts,
                step=step,
                valid=_VALID[signal],
            )
            kept_end = window.end_ts
        return _Answered(len(result.series), frozenset(duplicated), unlabelled), kept or {}

    def _matrices(
        self, tasks: Sequence[_MatrixTask], answers: Sequence[SeriesMatrix | BaseException]
    ) -> dict[str, SeriesMatrix] | str:
        """The matrix signals' new matrices by name, or what made the first failed one fail."""
        matrices: dict[str, SeriesMatrix] = {}
        for task, matrix in zip(tasks, answers, strict=True):
            if isinstance(matrix, BaseException):
                if not isinstance(matrix, Exception):
                    raise matrix
                return f"{task.name} query: {self._describe(matrix)}"
            matrices[task.name] = matrix
        return matrices

    def _matrix_tasks(
        self,
        window: _Grid,
        whole: bool,
        wanted: AbstractSet[_LabelKey],
        le_of: Mapping[_LabelKey, str],
        kept: _Kept | None,
    ) -> tuple[list[_MatrixTask], int | None]:
        """The per-step signals (in-flight peaks, SLO misses: on the window's grid, the same spans as the request
        rate) and the history (``_history_tasks``), and the history's cursor after this fetch."""
        step = window.step
        bounds = sorted(set(le_of.values()))
        fine_from = window.start_ts if whole else window.recent_ts
        fine_spans = (
            tuple(_chunks(window.start_ts, window.end_ts, step, WHOLE_WINDOW_POINTS_PER_QUERY))
            if whole
            else ((window.recent_ts, window.end_ts),)
        )
        tasks: list[_MatrixTask] = []

        def add(
            name: str,
            queries: tuple[tuple[str, str | None], ...],
            rows: AbstractSet[_LabelKey],
            grid: tuple[int, int, int, int],
            spans: tuple[tuple[int, int], ...],
            dtype: type[np.floating[Any]],
        ) -> None:
            start_ts, from_ts, end_ts, grid_step = grid
            by_bound = le_of if queries[0][1] is not None else None
            tasks.append(
                _MatrixTask(
                    name, queries, frozenset(rows), start_ts, from_ts, end_ts, grid_step, spans, dtype, by_bound
                )
            )

        fine = (window.start_ts, fine_from, window.end_ts, step)
        if self.peak_query is not None:
            add(_PEAKS, ((self.peak_query, None),), wanted, fine, fine_spans, np.float64)
        if self.service_query is not None:
            add(_SERVICE, ((self.service_query, None),), wanted, fine, fine_spans, np.float64)
        misses = tuple((self._miss_rate_query(le, self.rate_window_seconds), le) for le in bounds)
        if misses:
            add(_MISSES, misses, le_of.keys(), fine, fine_spans, np.float64)
        if self.history_query is None:
            return tasks, None
        history, cursor = self._history_tasks(window, wanted, le_of, kept)
        return tasks + history, cursor

    def _history_tasks(
        self,
        window: _Grid,
        wanted: AbstractSet[_LabelKey],
        le_of: Mapping[_LabelKey, str],
        kept: _Kept | None,
    ) -> tuple[list[_MatrixTask], int]:
        """The day's history (request rate and SLO misses at ``history_step_seconds``): each fetch asks for its
        newest points (from the window's overlap on) and, until the whole day is in, one span of
        ``WHOLE_WINDOW_POINTS_PER_QUERY`` older points (a day at 300 s: 19 fetches after the first), so that no
        fetch asks for the whole day at once. It starts over (the newest span only) on the first fetch, after a
        fetch missed for longer than the overlap, a clock that went back, or another bound for a workload; a
        workload it has no row for gets a blank one and the older spans are asked for again."""
        coarse = self.history_step_seconds
        span = WHOLE_WINDOW_POINTS_PER_QUERY
        end_ts = window.end_ts // coarse * coarse
        start_ts = end_ts - (self.history_points - 1) * coarse
        continuous = (
            kept is not None
            and window.recent_ts - window.step <= kept.end_ts <= window.end_ts
            and kept.history_cursor is not None
            and all(kept.le_of.get(k, le) == le for k, le in le_of.items())
        )
        rates = kept.matrices.get(_HISTORY) if continuous and kept is not None else None
        misses = kept.matrices.get(_HISTORY_MISSES) if continuous and kept is not None else None
        if rates is None or kept is None or kept.history_cursor is None:
            from_ts = max(start_ts, end_ts - (span - 1) * coarse)
            spans = [(from_ts, end_ts)]
            cursor = from_ts
        else:
            # the kept history ends at or after this point (the window's overlap rule), so nothing is skipped
            from_ts = max(start_ts, (window.recent_ts - window.step) // coarse * coarse)
            spans = [(from_ts, end_ts)]
            cursor = kept.history_cursor
            if not (wanted <= rates.rows.keys() and (misses is None or le_of.keys() <= misses.rows.keys())):
                cursor = from_ts  # new rows: their older points are asked for again
            if cursor > start_ts:
                older = max(start_ts, cursor - span * coarse)
                spans.append((older, cursor - coarse))
                cursor = older
        cursor = max(cursor, start_ts)

        def base(previous: SeriesMatrix | None, rows: AbstractSet[_LabelKey]) -> SeriesMatrix:
            matrix = moved(
                previous, rows, start_ts=start_ts, from_ts=from_ts, end_ts=end_ts, step=coarse, dtype=np.float32
            )
            return with_rows(matrix, rows) if previous is not None else matrix

        tasks = [
            _MatrixTask(
                _HISTORY, ((self.history_query or "", None),), frozenset(wanted), start_ts, from_ts, end_ts, coarse,
                tuple(spans), np.float32, None, base(rates, wanted),
            )
        ]  # fmt: skip
        bounds = sorted(set(le_of.values()))
        if bounds:
            queries = tuple((self._miss_rate_query(le, coarse), le) for le in bounds)
            tasks.append(
                _MatrixTask(
                    _HISTORY_MISSES, queries, frozenset(le_of.keys()), start_ts, from_ts, end_ts, coarse,
                    tuple(spans), np.float32, le_of, base(misses if misses is not None and rates is not None else None,
                    le_of.keys()),
                )
            )  # fmt: skip
        return tasks, cursor

    async def _fetch_matrix(self, task: _MatrixTask, previous: _Kept | None) -> SeriesMatrix:
        """One matrix signal's queries (per span, per bound, one after the other), written into a new matrix."""
        kept = None if previous is None else previous.matrices.get(task.name)
        matrix = task.base or moved(
            kept,
            task.rows,
            start_ts=task.start_ts,
            from_ts=task.from_ts,
            end_ts=task.end_ts,
            step=task.step,
            dtype=task.dtype,
        )
        for first_ts, last_ts in task.spans:
            for query, le in task.queries:
                answer = await asyncio.to_thread(
                    self._query_range,
                    query,
                    datetime.fromtimestamp(first_ts, UTC),
                    datetime.fromtimestamp(last_ts, UTC),
                    task.step,
                )
                result = self._parse(answer)
                del answer
                try:
                    fill(
                        matrix,
                        result.series,
                        result.duplicated,
                        from_ts=first_ts,
                        to_ts=last_ts,
                        only=task.le_of,
                        only_value=le,
                    )
                except BadSample as err:
                    raise _BadResponse(str(err)) from None
        return matrix

    async def _router_check(self, query: str | None, end_ts: int) -> str | Exception | None:
        """``_router_problem``, with what it raised returned (answered like every query's failure)."""
        try:
            return await self._router_problem(query, end_ts)
        except Exception as err:
            return err

    async def _router_problem(self, query: str | None, end_ts: int) -> str | None:
        """Why the router's stats are not all scraped at ``end_ts`` (an instant query of ``router_up``), or None
        when every router target is up (or the check is off). Raises what the query raised."""
        if query is None:
            return None
        answer = await asyncio.to_thread(self._query_instant, query, datetime.fromtimestamp(end_ts, UTC))
        if not isinstance(answer, list):
            raise _BadResponse("router_up: result is not an instant vector")
        shown_query = query.replace(",}", "}")
        if not answer:
            return (
                f"router stats not scraped: {shown_query} has no series at {_when(end_ts)} (is the router's stats "
                "port scraped, and is its job named as the query says?)"
            )
        down: list[str] = []
        for item in answer:
            metric = item.get("metric") if isinstance(item, dict) else None
            value = item.get("value") if isinstance(item, dict) else None
            if not isinstance(metric, dict) or not isinstance(value, list) or len(value) != 2:
                raise _BadResponse("router_up: a sample is not {metric, value}")
            number = _number(value[1])
            if number is None or not number >= 1:
                down.append(str(metric.get("instance", metric)))
        if down:
            try:  # Prometheus' own words for each failed scrape: one more request, only while a router is down
                errors = await asyncio.to_thread(self._scrape_errors)
            except Exception as err:
                log.debug("no scrape errors from %s: %s", self._where, self._describe(err))
                errors = {}
            named = [f"{i}: {_short(errors[i])[:160]}" if errors.get(i) else i for i in sorted(down)]
            shown = ", ".join(named[:5]) + (f" and {len(down) - 5} more" if len(down) > 5 else "")
            return f"router stats scrape failing ({shown_query} is 0): {shown}"
        return None

    def _scrape_errors(self) -> dict[str, str]:
        """``instance`` -> the last scrape error Prometheus recorded, for its active targets that have one."""
        client, _ = self._connect()
        try:
            data = client.get_targets(state="active")
        finally:
            client.close()
        errors: dict[str, str] = {}
        targets = data.get("activeTargets") if isinstance(data, dict) else None
        for target in targets if isinstance(targets, list) else []:
            labels = target.get("labels") if isinstance(target, dict) else None
            error = target.get("lastError") if isinstance(target, dict) else None
            if isinstance(labels, dict) and isinstance(error, str) and error:
                errors[str(labels.get("instance"))] = error
        return errors

    async def _refresh_bounds(self, end_ts: int) -> int:
        """Ask for the histogram's bucket bounds when they are older than ``BUCKET_BOUNDS_REFRESH_SECONDS``, unknown
        or none, or the clock went back; the number of queries sent (0 or 1). Raises what the query raised."""
        asked = self._bounds_ts
        if self._bounds and asked is not None and asked <= end_ts < asked + BUCKET_BOUNDS_REFRESH_SECONDS:
            return 0
        query = bounds_query(self.queries[Signal.LATENCY_BUCKETS])
        answer = await asyncio.to_thread(self._query_instant, query, datetime.fromtimestamp(end_ts, UTC))
        if not isinstance(answer, list) or not all(isinstance(item, dict) for item in answer):
            raise _BadResponse("bucket bounds are not an instant vector")
        self._bounds = BucketBounds.from_le_values(
            (item["metric"].get("le") for item in answer if isinstance(item.get("metric"), dict)),
            unit_seconds=self.templates.latency_bucket_unit_seconds,
        )
        self._bounds_ts = end_ts
        return 1

    async def _misses(self, le_of: Mapping[_LabelKey, str], start: datetime, end: datetime) -> _SignalResult:
        """Each workload's share of requests slower than its objective over the ``slo_miss_window_seconds`` ending
        at each point of ``[start, end]``: one query per bound in use (Prometheus computes the share;
        ``slo_buckets.miss_share_query``), each answer kept for the workloads of its bound."""
        series: dict[_LabelKey, _Points] = {}
        duplicated: set[_LabelKey] = set()
        unlabelled = 0
        for le in sorted(set(le_of.values())):
            query = miss_share_query(self._bucket_query(INF_LE), self._bucket_query(le))
            result = self._parse(await asyncio.to_thread(self._query_range, query, start, end))
            unlabelled = max(unlabelled, result.unlabelled)
            for key, points in result.series.items():
                if le_of.get(key) == le:
                    series[key] = points
                    if key in result.duplicated:
                        duplicated.add(key)
        return _SignalResult(series, frozenset(duplicated), unlabelled)

    def _bucket_query(self, le: str, rate_window_seconds: float | None = None) -> str:
        """The latency-bucket template with every metric cut to one bucket bound (its rate window: the share's
        span unless given)."""
        window = self.slo_miss_window_seconds if rate_window_seconds is None else rate_window_seconds
        return self._render(Signal.LATENCY_BUCKETS, window, le_matcher(le))

    def _render(self, signal: Signal, rate_window_seconds: float, extra_matchers: str = "") -> str:
        """One signal's template with another rate window (and extra matchers)."""
        return render_queries(
            self.templates,
            namespace_label=self.namespace_label,
            workload_label=self.workload_label,
            rate_window_seconds=rate_window_seconds,
            extra_matchers=extra_matchers,
        )[signal]

    def _miss_rate_query(self, le: str, rate_window_seconds: float) -> str:
        """Requests per second slower than the bound ``le``, each point over the ``rate_window_seconds`` ending
        at it."""
        return miss_rate_query(
            self._bucket_query(INF_LE, rate_window_seconds), self._bucket_query(le, rate_window_seconds)
        )

    # ------------------------------------------------------------------ I/O (runs in a worker thread)

    def _query_instant(self, query: str, at: datetime) -> Any:
        return self._result("query", {"query": query, "time": at.timestamp()})

    def _connect(self) -> tuple[PrometheusConnect, requests.Session]:
        """A client and its session (the client mounts its retries on it); closing the client closes the session."""
        headers = {**(self._headers or {}), **self.auth.request_headers()}
        session = requests.Session()
        session.verify = self.auth.verify()
        client = PrometheusConnect(
            url=self.url,
            headers=headers or None,
            auth=self.auth.basic_auth(),  # type: ignore[arg-type,unused-ignore]  # the library says tuple
            session=session,
            # No status retries by default: a 5xx must surface with its code, not as urllib3's "too many retries".
            # read=False: a read timeout is never retried within the tick and surfaces as requests' ReadTimeout.
            retry=Retry(
                total=self.retries,
                read=False,
                backoff_factor=0.1,
                status_forcelist=(502, 503, 504) if self.retries else (),
            ),
            timeout=self.timeout_seconds,  # type: ignore[arg-type,unused-ignore]  # requests takes float seconds
        )
        return client, session

    def _query_range(self, query: str, start: datetime, end: datetime, step: int | None = None) -> Any:
        params = {
            "query": query,
            "start": round(start.timestamp()),
            "end": round(end.timestamp()),
            "step": str(step or self.step_seconds),
        }
        return self._result("query_range", params)

    def _result(self, endpoint: str, params: dict[str, Any]) -> Any:
        """``data.result`` of one query of the HTTP API, asked as ``prometheus-api-client`` asks it (its session:
        credentials, TLS and retries; a status other than 200 raises its ``PrometheusApiClientException``), decoded
        with msgspec: the same Python values as the standard library's ``json``, for ~40% less CPU on a fleet's
        answer (10,000 series, measured with ``devtools/scale/fetch_cost.py``), which was half a steady fetch."""
        client, session = self._connect()
        try:
            response = session.request(
                method="GET",
                url=f"{self.url}/api/v1/{endpoint}",
                params={**params, "timeout": prometheus_duration(self.timeout_seconds)},
                headers=client.headers,
                auth=client.auth,
                # given per request, as the library does: otherwise a CA bundle named in the environment
                # (REQUESTS_CA_BUNDLE) would replace the configured one
                verify=session.verify,
                cert=session.cert,
                timeout=self.timeout_seconds,
            )
            if response.status_code != 200:
                raise PrometheusApiClientException(f"HTTP Status Code {response.status_code} ({response.content!r})")
            if endpoint == "query_range":
                try:
                    return _MATRIX_DECODER.decode(response.content).data.result
                except msgspec.ValidationError:
                    pass  # not a matrix of numbers throughout: as it is, checked where it is read
            return msgspec.json.decode(response.content)["data"]["result"]
        finally:
            client.close()

    def _describe(self, err: Exception) -> str:
        if isinstance(err, PrometheusAuthError):
            return f"credentials for {self._where}: {err}"
        if isinstance(err, requests.exceptions.SSLError):
            return f"TLS to {self._where} failed (certificate not trusted? set the CA file)"
        if isinstance(err, _BadResponse):
            return f"unexpected response from {self._where}: {err}"
        if isinstance(err, requests.exceptions.JSONDecodeError | msgspec.DecodeError):
            return f"unparsable response from {self._where} (not JSON)"
        if isinstance(err, requests.exceptions.Timeout):
            return f"{self._where} timed out after {self.timeout_seconds:g} s"
        if isinstance(err, requests.exceptions.ConnectionError):
            return f"{self._where} unreachable ({type(err).__name__})"
        if isinstance(err, PrometheusApiClientException):
            return f"{self._where} answered {_short(str(err))}"
        if isinstance(err, requests.exceptions.RequestException):
            return f"request to {self._where} failed ({type(err).__name__})"
        if isinstance(err, KeyError | TypeError | ValueError):
            return f"unparsable response from {self._where} ({type(err).__name__}: {_short(str(err))})"
        return f"{self._where}: unexpected {type(err).__name__}: {_short(str(err))}"

    def _failed(self, reason: str, sent: int) -> MetricsSnapshot:
        log.warning("metrics unavailable: %s", reason)
        return MetricsSnapshot(problem=reason, queries=sent)

    # ------------------------------------------------------------------ parsing

    def _parse(self, answer: Any) -> _SignalResult:
        if not isinstance(answer, list):
            raise _BadResponse(f"result is a {type(answer).__name__}, not a matrix")
        series: dict[_LabelKey, _Points] = {}
        duplicated: set[_LabelKey] = set()
        unlabelled = 0
        typed = bool(answer) and type(answer[0]) is _TypedSeries  # _MATRIX_DECODER's: every item is one, checked
        for item in answer:
            if typed:
                metric, values = item.metric, item.values
            else:
                if not isinstance(item, dict):
                    raise _BadResponse("result is not a matrix (is the template a scalar?)")
                metric, values = item.get("metric"), item.get("values")
                if not isinstance(metric, dict) or not isinstance(values, list):
                    raise _BadResponse("a series lacks 'metric' or 'values' (an instant vector instead of a matrix?)")
            namespace, name = metric.get(self.namespace_label), metric.get(self.workload_label)
            if not (isinstance(namespace, str) and isinstance(name, str) and namespace and name):
                unlabelled += 1
                continue
            key = (namespace, name)
            if key in series:
                duplicated.add(key)
            series[key] = values
        return _SignalResult(series, frozenset(duplicated), unlabelled)

    def _snapshot(
        self,
        keys: Sequence[WorkloadKey],
        end_ts: int,
        results: Mapping[Signal, _Answered],
        kept: _Kept,
        sent: int,
    ) -> MetricsSnapshot:
        readouts = self._readouts(kept)
        windows: dict[WorkloadKey, TrafficWindow] = {}
        problems: dict[WorkloadKey, str] = {}
        gpu: dict[WorkloadKey, float] = {}
        readings: dict[Signal, dict[WorkloadKey, float]] = {signal: {} for signal in _READINGS}
        gpu_series = kept.series.get(Signal.GPU_UTILIZATION)
        ambiguous: dict[Signal, frozenset[_LabelKey]] = {
            signal: result.duplicated
            for signal, result in results.items()
            if signal not in _OPTIONAL and result.duplicated
        }
        for key in keys:
            label_key = (key.namespace, key.name)
            try:
                windows[key] = self._window(label_key, end_ts, results, kept, ambiguous, readouts)
            except _WorkloadProblem as err:
                problems[key] = str(err)
            if gpu_series is not None:
                kept_gpu = gpu_series.get(label_key)
                utilization = None if kept_gpu is None else _mean_fraction(kept_gpu.values)
                if utilization is not None:
                    gpu[key] = utilization
            for signal, values in readings.items():
                reading = _reading(kept.latest.get(signal), label_key, end_ts, self.max_staleness_seconds)
                if reading is not None:
                    values[key] = reading
        if readouts.history is not None:
            readouts.history.release()
        return MetricsSnapshot(
            windows=windows,
            queries=sent,
            per_workload_problem=problems,
            gpu_utilization=gpu,
            in_flight=readings[Signal.IN_FLIGHT],
            error_rate=readings[Signal.ERROR_RATE],
            overflow_rate=readings[Signal.OVERFLOW_RATE],
            time_to_first_token=readings[Signal.TIME_TO_FIRST_TOKEN],
            history_loading=not self.history_complete,
        )

    def _readouts(self, kept: _Kept) -> _Readouts:
        peaks, misses = kept.matrices.get(_PEAKS), kept.matrices.get(_MISSES)
        service = kept.matrices.get(_SERVICE)
        return _Readouts(
            peaks=None if peaks is None else PerStepReadout(peaks, scale=1.0, negative_is_zero=False),
            misses=None if misses is None else PerStepReadout(misses, scale=misses.step, negative_is_zero=True),
            service=(
                None
                if service is None
                else PerStepReadout(service, scale=1.0, negative_is_zero=False, gaps_are_zero=True)
            ),
            history=kept.history,
        )

    def _window(
        self,
        key: _LabelKey,
        end_ts: int,
        results: Mapping[Signal, _Answered],
        kept: _Kept,
        ambiguous: Mapping[Signal, frozenset[_LabelKey]],
        readouts: _Readouts,
    ) -> TrafficWindow:
        rate = results[Signal.REQUEST_RATE]
        for signal, duplicated in ambiguous.items():
            if key in duplicated:
                raise _WorkloadProblem(
                    f"{signal.value} query returned several series for this workload: group the template "
                    f"by ({self.namespace_label}, {self.workload_label})"
                )
        rate_series = kept.series[Signal.REQUEST_RATE].get(key)
        values = rate_series.values if rate_series is not None else _NAN_POINT[:0]
        invalid = rate_series.invalid if rate_series is not None else None
        step = self.step_seconds
        start_ts = end_ts - (len(values) - 1) * step
        last = -1 if rate_series is None else rate_series.last_present(start_ts, step)
        if last < 0:
            hint = (
                f"; {rate.unlabelled} series lack the labels {self.namespace_label}/{self.workload_label}"
                if rate.unlabelled and not rate.labelled
                else ""
            )
            raise _WorkloadProblem(f"no request-rate series in the last {self.range_seconds} s{hint}")
        last_ts = start_ts + last * step
        age = end_ts - last_ts
        if age > self.max_staleness_seconds:
            raise _WorkloadProblem(
                f"request rate is stale: last point at {_when(last_ts)}, {age:.0f} s old "
                f"(> {self.max_staleness_seconds:g} s)"
            )
        if invalid:
            ts = min(invalid)
            raise _WorkloadProblem(f"request rate is invalid ({invalid[ts]}) at {_when(ts)}")
        # keep the contiguous run ending at the latest point: a gap is unknown traffic, never "zero" or "the same"
        first = last
        while first > 0 and values[first - 1] == values[first - 1]:  # not NaN: no invalid point is left here
            first -= 1
        run = np.frombuffer(values[first : last + 1], dtype=np.float64)  # the copied span, as an array: no copy
        run.flags.writeable = False
        latency = self._latest(kept.latest.get(Signal.LATENCY_P99), key, end_ts, "p99 latency")
        service = self._latest(kept.latest.get(Signal.SERVICE_SECONDS), key, end_ts, "service time")
        share = self._miss_share(kept.latest.get(Signal.LATENCY_BUCKETS), key, end_ts)
        peaks = None if readouts.peaks is None else readouts.peaks.part(key, first, last)
        misses = None if readouts.misses is None else readouts.misses.part(key, first, last)
        per_step = None if readouts.service is None else readouts.service.part(key, first, last)
        history, history_misses = (None, None) if readouts.history is None else readouts.history.read(key)
        return TrafficWindow(
            step_seconds=float(step),
            rps=FloatSeries(run),
            observed_p99_seconds=latency,
            end=datetime.fromtimestamp(last_ts, UTC),
            service_seconds=service,
            warm_latency_seconds=_reading(
                kept.latest.get(Signal.WARM_LATENCY), key, end_ts, self.max_staleness_seconds
            ),
            peak_in_flight=peaks,
            service_per_step=per_step,
            rate_window_seconds=float(self.rate_window_seconds),
            slo_miss_share=share,
            slo_misses=misses,
            history_rps=history,
            history_slo_misses=history_misses,
            history_step_seconds=float(self.history_step_seconds) if history is not None else None,
        )

    def _latest(
        self, newest: Mapping[_LabelKey, _Sample] | None, key: _LabelKey, end_ts: int, what: str
    ) -> float | None:
        """The latest value of a seconds-valued signal: None when absent, stale or NaN (no requests: 0/0)."""
        sample = None if newest is None else newest.get(key)
        if sample is None:
            return None
        ts, text = sample
        if end_ts - ts > self.max_staleness_seconds:
            return None
        value = _number(text)
        if value is None or math.isinf(value) or value < 0:
            raise _WorkloadProblem(f"{what} is invalid ({_sample_text(text)}) at {_when(ts)}")
        return None if math.isnan(value) else value

    def _miss_share(self, newest: Mapping[_LabelKey, _Sample] | None, key: _LabelKey, end_ts: int) -> float | None:
        """The latest share of requests slower than the objective, 0..1; None when absent, stale, NaN (no request in
        the span) or not a number. Optional: never a reason to withhold the window."""
        sample = None if newest is None else newest.get(key)
        if sample is None or end_ts - sample[0] > self.max_staleness_seconds:
            return None
        value = _number(sample[1])
        if value is None or not math.isfinite(value):
            return None
        return min(1.0, max(0.0, value))  # a counter reset inside the span can push it out of 0..1


class _WorkloadProblem(Exception):
    """Why one workload gets no window."""


def _number(text: Any) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _reading(
    newest: Mapping[_LabelKey, _Sample] | None, key: _LabelKey, end_ts: int, max_staleness: float
) -> float | None:
    """A workload's latest reading: None when absent, stale, not a number, infinite or negative."""
    sample = None if newest is None else newest.get(key)
    if sample is None or end_ts - sample[0] > max_staleness:
        return None
    value = _number(sample[1])
    return value if value is not None and 0.0 <= value < math.inf else None


def _mean_fraction(values: Sequence[float | None]) -> float | None:
    """Mean of the valid 0..1 values; None when there are none."""
    valid = [v for v in values if v is not None and 0.0 <= v <= 1.0]
    return sum(valid) / len(valid) if valid else None


def _valid_rate(value: float) -> bool:
    return 0.0 <= value < math.inf  # NaN fails both comparisons


_VALID: Mapping[Signal, Callable[[float], bool] | None] = {
    Signal.REQUEST_RATE: _valid_rate,
    Signal.GPU_UTILIZATION: None,  # out-of-range utilisation is skipped where it is read, not a problem
}

_READINGS = (Signal.IN_FLIGHT, Signal.ERROR_RATE, Signal.OVERFLOW_RATE, Signal.TIME_TO_FIRST_TOKEN)
"""Latest-only readings reported as they are (``MetricsSnapshot.in_flight`` etc.), never a reason to withhold a
window."""

_OPTIONAL = frozenset({Signal.GPU_UTILIZATION, Signal.LATENCY_BUCKETS, Signal.WARM_LATENCY, *_READINGS})
"""Signals whose ambiguity (several series for a workload) drops only their own value, not the window."""


def _chunks(start_ts: int, end_ts: int, step: int, points: int) -> list[tuple[int, int]]:
    """``[start_ts, end_ts]`` on the step grid as consecutive spans of at most ``points`` points each."""
    spans: list[tuple[int, int]] = []
    first = start_ts
    while first <= end_ts:
        last = min(end_ts, first + (points - 1) * step)
        spans.append((first, last))
        first = last + step
    return spans


def _sample_text(value: Any) -> str:
    """A sample's value as Prometheus writes it: its own text, or a decoded float written back ("NaN", "+Inf",
    "-1", "0.25")."""
    if type(value) is not float:
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    short = format(value, "g")
    return short if float(short) == value else repr(value)


def _pair(point: Any) -> tuple[float, Any]:
    """A sample as ``(time, value)``, checked where it is read (points no one reads are not looked at). A tuple is
    one ``_MATRIX_DECODER`` made: two floats already."""
    if type(point) is tuple:
        return point
    if type(point) is not list or len(point) != 2 or type(point[0]) not in _TIME_TYPE_SET:
        raise _BadResponse(f"a sample is not [time, value]: {_short(repr(point))}")
    return point[0], point[1]


def _newest(
    previous: Mapping[_LabelKey, _Sample] | None,
    result: _SignalResult,
    wanted: AbstractSet[_LabelKey],
    *,
    oldest_ts: float,
) -> dict[_LabelKey, _Sample]:
    """Each wanted workload's newest sample: the answer's last, else the one kept if not older than ``oldest_ts``.
    A workload the answer has several series for keeps none."""
    out: dict[_LabelKey, _Sample] = {}
    duplicated = result.duplicated
    for key, points in result.series.items():
        if points and key in wanted and key not in duplicated:
            last = points[-1]
            if type(last) is tuple:
                out[key] = last
            else:
                ts, text = _pair(last)
                out[key] = (float(ts), text)
    if previous and len(out) < len(wanted):  # some workload not in this answer (in a steady fleet: none)
        for key, sample in previous.items():
            if key not in out and key in wanted and key not in duplicated and sample[0] >= oldest_ts:
                out[key] = sample
    return out


def _slide(
    previous: Mapping[_LabelKey, _Series] | None,
    previous_end_ts: int,
    result: _SignalResult,
    wanted: AbstractSet[_LabelKey],
    *,
    start_ts: int,
    from_ts: int,
    end_ts: int,
    step: int,
    valid: Callable[[float], bool] | None,
) -> dict[_LabelKey, _Series]:
    """The kept series of one windowed signal after this fetch: ``previous`` slid to ``[start_ts, end_ts]``, its
    points from ``from_ts`` on replaced by the answer's (``from_ts == start_ts``: the answer is the whole window).

    Only wanted workloads are kept; a workload the answer has several series for keeps none (its window restarts
    from later answers rather than mixing series)."""
    points = (end_ts - start_ts) // step + 1
    keep = (from_ts - start_ts) // step
    shift = (end_ts - previous_end_ts) // step
    old_series = previous or {}
    fresh = result.series
    duplicated = result.duplicated
    blank = _NAN_POINT * (points - keep)
    nothing = _NAN_POINT * points
    out: dict[_LabelKey, _Series] = {}
    for key in wanted:
        old = old_series.get(key)
        pts = fresh.get(key)
        if (old is None and pts is None) or key in duplicated:
            continue
        values: array[float]
        invalid: dict[int, str] | None = None
        if old is None or not keep:
            values = nothing[:]
        else:
            values = old.values[shift : shift + keep]
            values.extend(blank)
            if old.invalid:
                invalid = {t: x for t, x in old.invalid.items() if start_ts <= t < from_ts} or None
        for point in pts or ():
            ts, text = _pair(point)
            index = round((ts - start_ts) / step)
            if not keep <= index < points:
                continue
            try:
                value = float(text)
            except (TypeError, ValueError):
                value = math.nan
                ok = False
            else:
                ok = valid is None or valid(value)
            values[index] = value
            if not ok:
                if invalid is None:
                    invalid = {}
                invalid[start_ts + index * step] = _sample_text(text)
        if not pts and invalid is None and all(v != v for v in values):
            continue  # slid out of the window (every point NaN: none left)
        out[key] = _Series(values, invalid)
    return out
