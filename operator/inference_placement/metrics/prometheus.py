"""The Prometheus metrics source: per tick ONE range query per signal for ALL workloads, grouped by workload.

Each ``fetch(keys, now)`` sends the enabled signals' queries (request rate, p99 latency, mean service time, GPU
utilisation; see ``promql.py``) as range queries over ``[now - range, now]`` at ``step_seconds``, pinned to the
``now`` passed in (never the wall clock), concurrently in worker threads (``prometheus-api-client`` is synchronous;
the event loop is never blocked). The number of queries is constant in the number of workloads.

What goes wrong is answered, never raised:
  - Prometheus down, slow, an HTTP error, a response that is not the expected JSON: ``MetricsSnapshot.problem`` says
    which, and no workload gets a window (placement freezes; nothing moves on half an answer);
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from inference_placement.metrics.promql import PromQLTemplates, Signal, prometheus_duration, render_queries
from inference_placement.metrics.source import MetricsSnapshot, WorkloadKey
from inference_placement.policy.decide import TrafficWindow

__all__ = ["MAX_POINTS_PER_SERIES", "PrometheusSource"]

log = logging.getLogger(__name__)

MAX_POINTS_PER_SERIES = 11_000
"""Prometheus refuses range queries with more points per series than this."""

_FETCH_BUDGET_MARGIN_SECONDS = 2.0
"""On top of ``timeout_seconds``: the bound on a whole fetch (requests' timeout is per socket operation)."""

_MAX_ERROR_TEXT = 300

_LabelKey = tuple[str, str]
_Points = list[list[Any]]
"""A series' samples as Prometheus sends them, ``[[time, "value"], ...]`` (shape checked by ``_parse``); values
are converted only where they are read, so a fleet-wide answer is not copied point by point."""

_TIME_TYPES = (int, float)
_TIME_TYPE_SET = frozenset(_TIME_TYPES)

_LATEST_ONLY = frozenset({Signal.LATENCY_P99, Signal.SERVICE_SECONDS})
"""Signals of which only the latest point within ``max_staleness_seconds`` is read: fetched over that span only,
not the whole window (at 10,000 workloads, 60 points per series cost ~9x the parsing of 7)."""


class _BadResponse(Exception):
    """The answer of one query is not the matrix we asked for."""


@dataclass(frozen=True)
class _SignalResult:
    series: dict[_LabelKey, _Points]
    duplicated: frozenset[_LabelKey]
    """Workloads with more than one series (a template not grouped by workload)."""
    unlabelled: int
    """Series without both grouping labels (ignored)."""


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
        max_staleness_seconds: a workload whose latest request-rate point is older than this gets no window
            (default 180 s). The point at ``t`` summarises ``[t - rate_window, t]``, so it lags the last scrape by up
            to ``rate_window_seconds``.
        timeout_seconds: per query, both the HTTP timeout and Prometheus' own ``timeout`` parameter (default 10 s).
        namespace_label / workload_label: the labels naming a workload's namespace and name on the series
            (``$by`` in the templates; defaults ``namespace`` and ``workload``).
        headers: extra HTTP headers (e.g. ``Authorization``); never logged.
        retries: HTTP retries per query within a tick (default 0: the next tick is the retry).
    """

    def __init__(
        self,
        url: str,
        *,
        templates: PromQLTemplates | None = None,
        range_seconds: float = 900.0,
        step_seconds: float = 30.0,
        rate_window_seconds: float = 60.0,
        max_staleness_seconds: float = 180.0,
        timeout_seconds: float = 10.0,
        namespace_label: str = "namespace",
        workload_label: str = "workload",
        headers: Mapping[str, str] | None = None,
        retries: int = 0,
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
        if not (timeout_seconds > 0 and max_staleness_seconds > 0):
            raise ValueError("timeout_seconds and max_staleness_seconds must be > 0")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.url = url.rstrip("/")
        self.templates = templates if templates is not None else PromQLTemplates()
        self.step_seconds = int(step_seconds)
        self.points = points
        self.range_seconds = points * self.step_seconds
        """The span the window's points cover (``range_seconds`` rounded up to whole steps)."""
        self.rate_window_seconds = rate_window_seconds
        self.max_staleness_seconds = max_staleness_seconds
        self.timeout_seconds = timeout_seconds
        self.namespace_label = namespace_label
        self.workload_label = workload_label
        self.retries = retries
        self._headers = dict(headers) if headers else None
        self.queries: Mapping[Signal, str] = render_queries(
            self.templates,
            namespace_label=namespace_label,
            workload_label=workload_label,
            rate_window_seconds=rate_window_seconds,
        )
        """The PromQL sent every tick, one per enabled signal."""
        port = f":{parts.port}" if parts.port else ""
        self._where = f"Prometheus at {parts.hostname}{port}"

    # ------------------------------------------------------------------ the protocol

    async def fetch(self, keys: Sequence[WorkloadKey], now: datetime) -> MetricsSnapshot:
        if not keys:
            return MetricsSnapshot()
        end_ts = math.floor(_aware(now).timestamp())
        start_ts = end_ts - (self.points - 1) * self.step_seconds
        # the same step grid, cut to the points _latest() may still accept
        recent_steps = min(self.points - 1, int(self.max_staleness_seconds // self.step_seconds))
        recent_ts = end_ts - recent_steps * self.step_seconds
        start = datetime.fromtimestamp(start_ts, UTC)
        recent = datetime.fromtimestamp(recent_ts, UTC)
        end = datetime.fromtimestamp(end_ts, UTC)
        signals = list(self.queries)
        sent = len(signals)
        calls = [
            asyncio.to_thread(self._query_range, self.queries[s], recent if s in _LATEST_ONLY else start, end)
            for s in signals
        ]
        try:
            async with asyncio.timeout(self.timeout_seconds + _FETCH_BUDGET_MARGIN_SECONDS):
                answers = await asyncio.gather(*calls, return_exceptions=True)
        except TimeoutError:
            return self._failed(f"{self._where} did not answer within {self.timeout_seconds:g} s", sent)

        results: dict[Signal, _SignalResult] = {}
        for signal, answer in zip(signals, answers, strict=True):
            if isinstance(answer, BaseException):
                if not isinstance(answer, Exception):
                    raise answer
                return self._failed(f"{signal.value} query: {self._describe(answer)}", sent)
            try:
                results[signal] = self._parse(answer)
            except _BadResponse as err:
                return self._failed(f"{signal.value} query: unexpected response from {self._where}: {err}", sent)
        return self._snapshot(keys, end_ts, results, sent)

    # ------------------------------------------------------------------ I/O (runs in a worker thread)

    def _query_range(self, query: str, start: datetime, end: datetime) -> Any:
        client = PrometheusConnect(
            url=self.url,
            headers=self._headers,
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
        try:
            return client.custom_query_range(
                query,
                start_time=start,
                end_time=end,
                step=str(self.step_seconds),
                params={"timeout": prometheus_duration(self.timeout_seconds)},
            )
        finally:
            client.close()

    def _describe(self, err: Exception) -> str:
        if isinstance(err, requests.exceptions.JSONDecodeError):
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
        for item in answer:
            if not isinstance(item, dict):
                raise _BadResponse("result is not a matrix (is the template a scalar?)")
            metric, values = item.get("metric"), item.get("values")
            if not isinstance(metric, dict) or not isinstance(values, list):
                raise _BadResponse("a series lacks 'metric' or 'values' (an instant vector instead of a matrix?)")
            namespace, name = metric.get(self.namespace_label), metric.get(self.workload_label)
            if not (isinstance(namespace, str) and isinstance(name, str) and namespace and name):
                unlabelled += 1
                continue
            try:
                # unpacking checks "pairs"; JSON has no tuples, and a 2-character string or 2-key object has a
                # str first element, so the type check below rejects it too
                time_types = {type(ts) for ts, _ in values}
            except (TypeError, ValueError):
                time_types = {type(None)}
            if not time_types <= _TIME_TYPE_SET:
                bad = next(v for v in values if not (isinstance(v, list) and len(v) == 2 and type(v[0]) in _TIME_TYPES))
                raise _BadResponse(f"a sample is not [time, value]: {_short(repr(bad))}")
            key = (namespace, name)
            if key in series:
                duplicated.add(key)
            series[key] = values
        return _SignalResult(series, frozenset(duplicated), unlabelled)

    def _snapshot(
        self, keys: Sequence[WorkloadKey], end_ts: int, results: Mapping[Signal, _SignalResult], sent: int
    ) -> MetricsSnapshot:
        windows: dict[WorkloadKey, TrafficWindow] = {}
        problems: dict[WorkloadKey, str] = {}
        gpu: dict[WorkloadKey, float] = {}
        gpu_result = results.get(Signal.GPU_UTILIZATION)
        for key in keys:
            label_key = (key.namespace, key.name)
            try:
                windows[key] = self._window(label_key, end_ts, results)
            except _WorkloadProblem as err:
                problems[key] = str(err)
            if gpu_result is not None and label_key not in gpu_result.duplicated:
                utilization = _mean_fraction(gpu_result.series.get(label_key, []))
                if utilization is not None:
                    gpu[key] = utilization
        return MetricsSnapshot(windows=windows, queries=sent, per_workload_problem=problems, gpu_utilization=gpu)

    def _window(self, key: _LabelKey, end_ts: int, results: Mapping[Signal, _SignalResult]) -> TrafficWindow:
        rate = results[Signal.REQUEST_RATE]
        for signal, result in results.items():
            if signal is not Signal.GPU_UTILIZATION and key in result.duplicated:
                raise _WorkloadProblem(
                    f"{signal.value} query returned several series for this workload: group the template "
                    f"by ({self.namespace_label}, {self.workload_label})"
                )
        points = rate.series.get(key)
        if not points:
            hint = (
                f"; {rate.unlabelled} series lack the labels {self.namespace_label}/{self.workload_label}"
                if rate.unlabelled and not rate.series
                else ""
            )
            raise _WorkloadProblem(f"no request-rate series in the last {self.range_seconds} s{hint}")
        last_ts = float(points[-1][0])
        age = end_ts - last_ts
        if age > self.max_staleness_seconds:
            raise _WorkloadProblem(
                f"request rate is stale: last point at {_when(last_ts)}, {age:.0f} s old "
                f"(> {self.max_staleness_seconds:g} s)"
            )
        try:
            rates = [float(text) for _, text in points]
        except (TypeError, ValueError):
            rates = [math.nan if (v := _number(text)) is None else v for _, text in points]
        if not all(0.0 <= r < math.inf for r in rates):  # NaN fails both comparisons
            ts, text = next(p for p, r in zip(points, rates, strict=True) if not 0.0 <= r < math.inf)
            raise _WorkloadProblem(f"request rate is invalid ({text}) at {_when(float(ts))}")
        # keep the contiguous run ending at the latest point: a gap is unknown traffic, never "zero" or "the same"
        step = self.step_seconds
        first = 0
        if abs(last_ts - float(points[0][0]) - (len(points) - 1) * step) >= 1e-6:  # a gap somewhere (on the grid)
            times = [float(p[0]) for p in points]
            first = len(times) - 1
            while first > 0 and abs(times[first] - times[first - 1] - step) < 1e-6:
                first -= 1
        latency = self._latest(results.get(Signal.LATENCY_P99), key, end_ts, "p99 latency")
        service = self._latest(results.get(Signal.SERVICE_SECONDS), key, end_ts, "service time")
        return TrafficWindow(
            step_seconds=float(self.step_seconds),
            rps=tuple(rates[first:]),
            latency_p99_seconds=latency,
            end=datetime.fromtimestamp(last_ts, UTC),
            service_seconds=service,
        )

    def _latest(self, result: _SignalResult | None, key: _LabelKey, end_ts: int, what: str) -> float | None:
        """The latest value of a seconds-valued signal: None when absent, stale or NaN (no requests: 0/0)."""
        if result is None:
            return None
        points = result.series.get(key)
        if not points:
            return None
        ts, text = float(points[-1][0]), points[-1][1]
        if end_ts - ts > self.max_staleness_seconds:
            return None
        value = _number(text)
        if value is None or math.isinf(value) or value < 0:
            raise _WorkloadProblem(f"{what} is invalid ({text}) at {_when(ts)}")
        return None if math.isnan(value) else value


class _WorkloadProblem(Exception):
    """Why one workload gets no window."""


def _number(text: Any) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _mean_fraction(points: _Points) -> float | None:
    """Mean of the valid 0..1 values; None when there are none."""
    values = [v for v in (_number(text) for _, text in points) if v is not None and 0.0 <= v <= 1.0]
    return sum(values) / len(values) if values else None
