"""Pytest fixtures for the metrics source: a real Prometheus on loopback over backfilled OpenMetrics data.

Data is written as OpenMetrics text (:class:`OpenMetricsBuilder`), turned into TSDB blocks with
``promtool tsdb create-blocks-from openmetrics`` and served by a real ``prometheus`` started on a free loopback port
with that directory as ``--storage.tsdb.path`` and no scrape jobs, so the data never changes under a test. Queries
must be pinned to the data's time (``PrometheusSource.fetch(keys, now)`` does that with ``now``).

Fixtures
``prometheus_binaries`` (session)  the ``prometheus`` and ``promtool`` paths (Debian package ``prometheus``,
                        installed by ``e2e/setup.sh``). Missing: the test FAILS when ``CI=true``, is skipped otherwise.
``prometheus_factory``  ``start(openmetrics_text) -> PrometheusServer``; every server started is stopped (by its
                        PID) at the end of the test.

For module-scoped servers, use :func:`running_prometheus` with ``tmp_path_factory``; for a server that scrapes
live targets (the router's stats port), :func:`scraping_prometheus` with a scrape config.

Helpers
:class:`OpenMetricsBuilder` builds counters and histograms from per-minute request counts, sampled every 15 s (at
1-minute samples ``rate(...[1m])`` is empty), and gauges from points.
:meth:`PrometheusServer.api_requests` counts the API requests the server has answered (from its own ``/metrics``),
so a test can count what a client really sent.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pytest

from inference_placement.devtools.prometheus import PrometheusServer, backfill, start_prometheus

__all__ = [
    "DEFAULT_BUCKETS_SECONDS",
    "OpenMetricsBuilder",
    "PrometheusBinaries",
    "PrometheusServer",
    "prometheus_binaries",
    "prometheus_factory",
    "running_prometheus",
    "scraping_prometheus",
]

DEFAULT_BUCKETS_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""The model server's histogram buckets (``e2e/model_server.py``)."""

READY_TIMEOUT_SECONDS = 30.0


def _in_ci() -> bool:
    return os.environ.get("CI") == "true"


def _unavailable(reason: str) -> NoReturn:
    """Fail loudly in CI (missing Prometheus must not pass as skipped there); skip elsewhere."""
    if _in_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


# ----------------------------------------------------------------------------------------------- OpenMetrics


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _time(ts: float) -> str:
    """Unix seconds as OpenMetrics wants them (``%g`` would round to six digits)."""
    return str(int(ts)) if ts == int(ts) else repr(float(ts))


def _labels(labels: Mapping[str, str]) -> str:
    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels.items()) + "}" if labels else ""


@dataclass
class OpenMetricsBuilder:
    """OpenMetrics text for ``promtool tsdb create-blocks-from openmetrics``, one metric family at a time.

    Times are Unix seconds. Per-minute counts are spread evenly over the minute's samples, so at a minute boundary
    ``rate(counter[1m])`` is exactly that minute's count / 60.
    """

    sample_interval_seconds: int = 15
    _families: dict[str, tuple[str, list[str]]] = field(default_factory=dict)

    def _family(self, name: str, kind: str) -> list[str]:
        known = self._families.setdefault(name, (kind, []))
        if known[0] != kind:
            raise ValueError(f"metric family {name} is a {known[0]}, not a {kind}")
        return known[1]

    def _sample_times(self, start: float, minutes: int) -> list[float]:
        if 60 % self.sample_interval_seconds:
            raise ValueError("sample_interval_seconds must divide a minute")
        per_minute = 60 // self.sample_interval_seconds
        return [start + i * self.sample_interval_seconds for i in range(minutes * per_minute + 1)]

    def _cumulative(self, minute_counts: Sequence[float]) -> list[float]:
        """The cumulative count at each sample time (0 at ``start``)."""
        per_minute = 60 // self.sample_interval_seconds
        values, total = [0.0], 0.0
        for count in minute_counts:
            for _ in range(per_minute):
                total += count / per_minute
                values.append(total)
        return values

    def counter_from_minute_counts(
        self,
        name: str,
        labels: Mapping[str, str],
        start: float,
        minute_counts: Sequence[float],
        *,
        overrides: Mapping[float, float] | None = None,
        omit: Callable[[float], bool] | None = None,
    ) -> None:
        """A counter ``name`` (ending in ``_total``) counting ``minute_counts[m]`` in minute ``m`` after ``start``.

        ``overrides`` replaces the value written at given sample times (garbage such as NaN); ``omit(time)`` drops
        the samples it is true for (a scrape gap).
        """
        if not name.endswith("_total"):
            raise ValueError("an OpenMetrics counter sample is named <family>_total")
        lines = self._family(name.removesuffix("_total"), "counter")
        times = self._sample_times(start, len(minute_counts))
        for ts, cumulative in zip(times, self._cumulative(minute_counts), strict=True):
            if omit is not None and omit(ts):
                continue
            value = overrides.get(ts, cumulative) if overrides is not None else cumulative
            lines.append(f"{name}{_labels(labels)} {_number(value)} {_time(ts)}")

    def histogram_from_minute_counts(
        self,
        name: str,
        labels: Mapping[str, str],
        start: float,
        minute_counts: Sequence[float],
        *,
        bucket_shares: Mapping[float, float],
        mean_seconds: float,
        buckets: Sequence[float] = DEFAULT_BUCKETS_SECONDS,
    ) -> None:
        """A histogram ``name`` of ``minute_counts`` requests: ``bucket_shares[bound]`` of them fall in the bucket
        whose upper bound is ``bound`` (shares sum to 1), with a mean of ``mean_seconds``."""
        if not math.isclose(sum(bucket_shares.values()), 1.0):
            raise ValueError("bucket shares must sum to 1")
        if not set(bucket_shares) <= set(buckets):
            raise ValueError("every share must name one of the buckets")
        lines = self._family(name, "histogram")
        times = self._sample_times(start, len(minute_counts))
        for ts, total in zip(times, self._cumulative(minute_counts), strict=True):
            for bound in buckets:
                share = sum(s for b, s in bucket_shares.items() if b <= bound)
                lines.append(
                    f"{name}_bucket{_labels({**labels, 'le': f'{bound:g}'})} {_number(total * share)} {_time(ts)}"
                )
            lines.append(f"{name}_bucket{_labels({**labels, 'le': '+Inf'})} {_number(total)} {_time(ts)}")
            lines.append(f"{name}_count{_labels(labels)} {_number(total)} {_time(ts)}")
            lines.append(f"{name}_sum{_labels(labels)} {_number(total * mean_seconds)} {_time(ts)}")

    def gauge(self, name: str, labels: Mapping[str, str], points: Sequence[tuple[float, float]]) -> None:
        """A gauge with the given (time, value) points (any value, NaN and infinities included)."""
        lines = self._family(name, "gauge")
        for ts, value in sorted(points):
            lines.append(f"{name}{_labels(labels)} {_number(value)} {_time(ts)}")

    def gauge_every(
        self, name: str, labels: Mapping[str, str], start: float, end: float, value: Callable[[float], float]
    ) -> None:
        """A gauge sampled every ``sample_interval_seconds`` from ``start`` to ``end`` inclusive."""
        count = int((end - start) // self.sample_interval_seconds) + 1
        times = [start + i * self.sample_interval_seconds for i in range(count)]
        self.gauge(name, labels, [(ts, value(ts)) for ts in times])

    def render(self) -> str:
        out: list[str] = []
        for name, (kind, lines) in self._families.items():
            out.append(f"# TYPE {name} {kind}")
            out.extend(lines)
        out.append("# EOF")
        return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------------------------- the server


@dataclass(frozen=True)
class PrometheusBinaries:
    prometheus: str
    promtool: str


def _start(binaries: PrometheusBinaries, openmetrics: str, directory: Path) -> PrometheusServer:
    """Backfill ``openmetrics`` into ``directory / "tsdb"`` and serve it (the developer tools' harness)."""
    source = directory / "backfill.om"
    source.write_text(openmetrics)
    try:
        backfill(binaries.promtool, source, directory / "tsdb", timeout_seconds=120)
        return start_prometheus(binaries.prometheus, directory, ready_timeout_seconds=READY_TIMEOUT_SECONDS)
    except RuntimeError as err:
        raise AssertionError(str(err)) from None


@contextmanager
def scraping_prometheus(binaries: PrometheusBinaries, config_text: str, directory: Path) -> Iterator[PrometheusServer]:
    """A real Prometheus on loopback with the scrape config ``config_text`` and an empty TSDB in ``directory``;
    stopped (by its PID) on exit."""
    try:
        server = start_prometheus(
            binaries.prometheus, directory, ready_timeout_seconds=READY_TIMEOUT_SECONDS, config_text=config_text
        )
    except RuntimeError as err:
        raise AssertionError(str(err)) from None
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def running_prometheus(binaries: PrometheusBinaries, openmetrics: str, directory: Path) -> Iterator[PrometheusServer]:
    """Backfill ``openmetrics`` into ``directory`` and serve it; the server is stopped on exit."""
    directory.mkdir(parents=True, exist_ok=True)
    server = _start(binaries, openmetrics, directory)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def prometheus_binaries() -> PrometheusBinaries:
    found = {
        name: shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/local/bin")
        for name in ("prometheus", "promtool")
    }
    missing = [name for name, path in found.items() if path is None]
    if missing:
        _unavailable(f"{' and '.join(missing)} not installed (apt-get install prometheus, or e2e/setup.sh)")
    return PrometheusBinaries(prometheus=str(found["prometheus"]), promtool=str(found["promtool"]))


@pytest.fixture
def prometheus_factory(
    prometheus_binaries: PrometheusBinaries, tmp_path: Path
) -> Iterator[Callable[[str], PrometheusServer]]:
    servers: list[PrometheusServer] = []

    def start(openmetrics: str) -> PrometheusServer:
        directory = tmp_path / f"prometheus-{len(servers)}"
        directory.mkdir()
        server = _start(prometheus_binaries, openmetrics, directory)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
