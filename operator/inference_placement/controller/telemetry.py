"""The operator's own Prometheus metrics (``/metrics``). One registry per operator, passed in, never global.

Names are a public interface (dashboards and alerts use them): extend, never rename. Beside the operator's own
families the registry carries the client library's standard ones: ``process_*`` (CPU, memory, open files),
``python_gc_*`` and ``python_info``.

Per-workload series (projected and current cost, budget burn, placement, conditions) have one series per workload
(and target or condition type), never one per possible value: a 10,000-workload fleet stays at a few series per
workload, and ``forget_workload`` drops them when the workload goes.
"""

from __future__ import annotations

import platform
import threading
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import cast

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

import inference_placement
from inference_placement.api.status import Condition, ConditionType

__all__ = ["EXPORTED_CONDITIONS", "MIGRATION_DURATION_BUCKETS", "Telemetry", "WorkloadGauge"]

EXPORTED_CONDITIONS = (
    ConditionType.READY,
    ConditionType.MIGRATING,
    ConditionType.SLO_AT_RISK,
    ConditionType.BUDGET_EXCEEDED,
    ConditionType.METRICS_AVAILABLE,
)
"""The conditions exported per workload (``inference_placement_workload_condition``): what dashboards and alerts
read; the others are in status."""

MIGRATION_DURATION_BUCKETS = (30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600, 7200)
"""Seconds: a migration holds each traffic step for minutes (``migration.stepHoldSeconds``), so most end in 5-30."""

_TARGETS = ("cluster", "cloudrun", "lambda")


class Telemetry:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.workload_registry = CollectorRegistry(auto_describe=True)
        """The per-workload families (``WorkloadGauge``), served from their rendered lines (``exposition``)."""
        self._exported: dict[tuple[str, str], tuple[object, ...]] = {}
        """Per workload, what ``export_state`` last set (placement, current cost, exported condition statuses)."""
        r = self.registry
        if registry is None:  # our own registry: the standard process, GC and platform families too
            ProcessCollector(registry=r)
            GCCollector(registry=r)
            PlatformCollector(registry=r)
        self.build_info = Gauge(
            "inference_placement_build_info",
            "Always 1; the running operator's version and Python in labels.",
            ["version", "python_version"],
            registry=r,
        )
        self.build_info.labels(inference_placement.__version__, platform.python_version()).set(1)
        self.reconcile_duration = Histogram(
            "inference_placement_reconcile_duration_seconds",
            "Time to reconcile one workload.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.tick_duration = Gauge(
            "inference_placement_tick_duration_seconds", "Wall time of the last full fleet tick.", registry=r
        )
        self.tick_cpu = Gauge(
            "inference_placement_tick_cpu_seconds",
            "CPU time (user + system) the operator process spent on the last full fleet tick.",
            registry=r,
        )
        self.ticks = Counter("inference_placement_ticks", "Full fleet ticks completed.", registry=r)
        self.reconcile_causes = Counter(
            "inference_placement_reconciles",
            "Workloads reconciled, by what made the reconcile necessary (controller/fleet.py RECONCILE_CAUSES): a "
            "watch event or wake-up between ticks, a migration or a target not ready yet, the object, the metrics, "
            "the capacity verdict, the router or the shared inputs changed, a deadline, or the periodic resync.",
            ["cause"],
            registry=r,
        )
        self.skipped_unchanged = Gauge(
            "inference_placement_reconciles_skipped_per_tick",
            "Workloads the last full tick did not reconcile because nothing they depend on had changed.",
            registry=r,
        )
        self.workloads = Gauge("inference_placement_workloads", "Workloads known to the operator.", registry=r)
        self.decisions = Counter(
            "inference_placement_decisions_total",
            "Placement decisions that changed the target or replicas, by from/to target.",
            ["from_target", "to_target"],
            registry=r,
        )
        self.migrations = Counter(
            "inference_placement_migrations_total",
            "Migrations that ended, by from/to target and outcome (Succeeded, RolledBack).",
            ["from_target", "to_target", "outcome"],
            registry=r,
        )
        self.migration_rollbacks = Counter(
            "inference_placement_migration_rollbacks_total",
            "Migrations that started rolling back, by the step that failed.",
            ["from_target", "to_target", "step"],
            registry=r,
        )
        self.target_errors = Counter(
            "inference_placement_target_errors_total",
            "Errors from a placement target's API, by target and kind (retryable, permanent, not-owned).",
            ["target", "kind"],
            registry=r,
        )
        self.projected_cost = WorkloadGauge(
            "inference_placement_projected_monthly_cost_usd",
            "Projected monthly cost of the observed traffic on each feasible target.",
            ["namespace", "workload", "target"],
            registry=self.workload_registry,
        )
        self.current_cost = WorkloadGauge(
            "inference_placement_current_monthly_cost_usd",
            "Projected monthly cost of each workload where it runs now (status.currentMonthlyCostUsd), by target.",
            ["namespace", "workload", "target"],
            registry=self.workload_registry,
        )
        self.placement = WorkloadGauge(
            "inference_placement_workload_placement",
            "1 for the target serving each workload now (one series per workload; none while unplaced).",
            ["namespace", "workload", "target"],
            registry=self.workload_registry,
        )
        self.condition = WorkloadGauge(
            "inference_placement_workload_condition",
            "1 per workload and condition type, its status (True, False, Unknown) in the label: Ready, Migrating, "
            "SLOAtRisk, BudgetExceeded and MetricsAvailable.",
            ["namespace", "workload", "type", "status"],
            registry=self.workload_registry,
        )
        self.migration_duration = Histogram(
            "inference_placement_migration_duration_seconds",
            "Duration of the migrations that ended, from start to Succeeded or RolledBack, by from/to target and "
            "outcome.",
            ["from_target", "to_target", "outcome"],
            buckets=MIGRATION_DURATION_BUCKETS,
            registry=r,
        )
        self.budget_burn = WorkloadGauge(
            "inference_placement_budget_burn_ratio",
            "Projected spend this month divided by the monthly budget (1 = exactly on budget).",
            ["namespace", "workload"],
            registry=self.workload_registry,
        )
        self.metrics_fresh = Gauge(
            "inference_placement_metrics_last_success_timestamp_seconds",
            "Unix time of the last metrics fetch that returned data.",
            registry=r,
        )
        self.metrics_queries = Gauge(
            "inference_placement_metrics_queries_per_tick",
            "Metrics queries sent in the last tick (independent of the number of workloads).",
            registry=r,
        )
        self.apiserver_writes = Counter(
            "inference_placement_apiserver_writes_total",
            "Writes to the Kubernetes API by kind (status, finalizers, event, child objects).",
            ["kind"],
            registry=r,
        )

        self.operator_restarts = Counter(
            "inference_placement_operator_restarts",
            "Times the operator started its controller again after it stopped on an error (apiserver outage).",
            registry=r,
        )
        self.leader = Gauge(
            "inference_placement_leader",
            "1 while this replica holds the leader-election Lease and acts, 0 while it is a standby.",
            ["identity"],
            registry=r,
        )
        self.last_write = Gauge(
            "inference_placement_last_write_timestamp_seconds",
            "Wall-clock time at which this replica last sent a write to the apiserver (0: never); a standby's stays "
            "where its last term left it.",
            registry=r,
        )
        self.leader_transitions = Counter(
            "inference_placement_leader_transitions",
            "Times this replica became the leader.",
            registry=r,
        )
        self.warm_pings = Counter(
            "inference_placement_warm_pings",
            "Warm-up pings sent to serverless placements, by result (ok, failed).",
            ["result"],
            registry=r,
        )

        self.wakes = Counter(
            "inference_placement_wakes",
            "Cluster targets set from zero replicas to one or more, by what woke them (request: requests the "
            "router's activator held; policy: the decision alone).",
            ["woken_by"],
            registry=r,
        )
        self.wake_latency = Histogram(
            "inference_placement_wake_latency_seconds",
            "Mean hold of the requests a wake-up from zero answered (the activator's hold time over the wake).",
            buckets=(0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 60, 120, 300),
            registry=r,
        )
        self.activator_polls = Counter(
            "inference_placement_activator_polls",
            "Polls of the router's activators for wake-up signals, by result (ok, failed).",
            ["result"],
            registry=r,
        )
        self.reconcile_failures = Counter(
            "inference_placement_reconcile_failures",
            "Failed reconciles, by kind (exception: the reconcile raised; target: a target error recorded in status).",
            ["kind"],
            registry=r,
        )
        self.reconcile_backoffs = Gauge(
            "inference_placement_reconcile_backoffs",
            "Workloads waiting out a failure backoff before their next reconcile.",
            registry=r,
        )
        self.price_book_valid = Gauge(
            "inference_placement_price_book_valid",
            "1 while the configured price book is in force; 0 while it is rejected (the last good book or the "
            "packaged one is used instead).",
            registry=r,
        )
        self.price_book_rejections = Counter(
            "inference_placement_price_book_rejections",
            "Price books rejected, by phase (startup: the packaged book runs; reload: the last good book stays).",
            ["phase"],
            registry=r,
        )
        self.orphans = Counter(
            "inference_placement_orphans",
            "Cloud resources labelled/tagged as ours whose workload no longer exists, found by the sweep, by target "
            "and action (retired, dry-run, failed).",
            ["target", "action"],
            registry=r,
        )

    def count_write(self, kind: str) -> None:
        """One write sent to the apiserver (``kind``: status, finalizers, event)."""
        self.apiserver_writes.labels(kind).inc()
        self.last_write.set_to_current_time()

    def export_state(
        self,
        namespace: str,
        name: str,
        placement: str | None,
        current_cost: float | None,
        conditions: Iterable[Condition],
    ) -> None:
        """The workload's placement, current cost and exported conditions after a reconcile (one series each);
        nothing is touched when they are what this workload last exported (most reconciles: ~16 label look-ups and
        removals each otherwise)."""
        by_type = {c.type: c.status.value for c in conditions}
        exported = (placement, current_cost, tuple(by_type.get(t) for t in EXPORTED_CONDITIONS))
        if self._exported.get((namespace, name)) == exported:
            return
        self._exported[(namespace, name)] = exported
        for target in _TARGETS:
            if target == placement:
                self.placement.labels(namespace, name, target).set(1)
            else:
                _remove(self.placement, namespace, name, target)
            if target == placement and current_cost is not None:
                self.current_cost.labels(namespace, name, target).set(current_cost)
            else:
                _remove(self.current_cost, namespace, name, target)
        for type_ in EXPORTED_CONDITIONS:
            status = by_type.get(type_)
            for value in ("True", "False", "Unknown"):
                if value == status:
                    self.condition.labels(namespace, name, type_.value, value).set(1)
                else:
                    _remove(self.condition, namespace, name, type_.value, value)

    def forget_workload(self, namespace: str, name: str) -> None:
        self._exported.pop((namespace, name), None)
        for target in _TARGETS:
            _remove(self.projected_cost, namespace, name, target)
            _remove(self.current_cost, namespace, name, target)
            _remove(self.placement, namespace, name, target)
        _remove(self.budget_burn, namespace, name)
        for type_ in EXPORTED_CONDITIONS:
            for value in ("True", "False", "Unknown"):
                _remove(self.condition, namespace, name, type_.value, value)

    def families(self) -> list[Metric]:
        """Every family ``/metrics`` serves: the registry's, then the per-workload ones (docs, chart checks)."""
        return [*self.registry.collect(), *self.workload_registry.collect()]

    @property
    def workload_gauges(self) -> tuple[WorkloadGauge, ...]:
        return (self.projected_cost, self.current_cost, self.placement, self.condition, self.budget_burn)

    def exposition(self) -> bytes:
        """What ``/metrics`` serves: the registry's families through ``prometheus_client``, then the per-workload
        families from their rendered lines (the same text ``generate_latest`` gives for them)."""
        return generate_latest(self.registry) + b"".join(gauge.render() for gauge in self.workload_gauges)

    def serve(self, port: int, addr: str = "0.0.0.0") -> ThreadingHTTPServer:
        """``exposition()`` over HTTP (text format 0.0.4) from a daemon thread, on any GET path, as
        ``prometheus_client.start_http_server`` serves a registry."""
        server = ThreadingHTTPServer((addr, port), _handler(self))
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="operator-metrics", daemon=True).start()
        return server


def _handler(telemetry: Telemetry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] == "/favicon.ico":
                self.send_error(404)
                return
            body = telemetry.exposition()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_PLAIN_0_0_4)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    return Handler


def _remove(metric: Gauge | WorkloadGauge, *labels: str) -> None:
    try:
        metric.remove(*labels)
    except KeyError:
        pass


class _Child:
    """``WorkloadGauge.labels(...)``: what ``set`` writes to (made per call, not kept)."""

    __slots__ = ("_gauge", "_key")

    def __init__(self, gauge: WorkloadGauge, key: tuple[str, ...]) -> None:
        self._gauge = gauge
        self._key = key

    def set(self, value: float) -> None:
        self._gauge._set(self._key, float(value))


class _Described(Collector):
    """A family as ``describe()`` gives it, without samples: what ``generate_latest`` renders as its HELP and TYPE
    lines."""

    def __init__(self, gauge: WorkloadGauge) -> None:
        self._gauge = gauge

    def collect(self) -> Iterable[GaugeMetricFamily]:
        return self._gauge.describe()


_go_float = cast(Callable[[float], str], floatToGoString)
"""A sample value as the text format writes it (``prometheus_client``'s own function; it has no annotations)."""


def _escape(value: str) -> str:
    """A label value as the text format writes it (``prometheus_client``'s escaping)."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class WorkloadGauge(Collector):
    """A labelled gauge whose series are one float each in a dict, rendered when scraped: for the per-workload
    families (several series per workload). ``prometheus_client``'s ``Gauge`` keeps a child object with its own lock
    and value holder per series (~550 bytes with its labels, measured: ~55 MB for the ~10 series of each of 10,000
    workloads); this keeps the label tuple and a float. The same calls as ``Gauge`` where the operator uses them:
    ``labels(*values).set(v)`` and ``remove(*values)`` (nothing to remove is no error, as in ``Gauge``)."""

    def __init__(self, name: str, documentation: str, labelnames: Iterable[str], registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.values: dict[tuple[str, ...], float] = {}
        self._label_order = sorted(range(len(self.labelnames)), key=self.labelnames.__getitem__)
        """The labels in the order the exposition writes them (sorted by name, as ``prometheus_client`` does)."""
        self._lines: dict[tuple[str, ...], str] = {}
        """Each series' exposition line, rendered when its value is set (same order as ``values``)."""
        registry.register(self)
        self._header = generate_latest(_Described(self)).decode()

    def _set(self, key: tuple[str, ...], value: float) -> None:
        if self.values.get(key) == value and key in self._lines:
            return
        self.values[key] = value
        labels = ",".join(f'{self.labelnames[i]}="{_escape(key[i])}"' for i in self._label_order)
        self._lines[key] = f"{self.name}{{{labels}}} {_go_float(value)}\n"

    def render(self) -> bytes:
        """The family's exposition text, as ``generate_latest`` renders it, from the rendered lines."""
        # a snapshot in one C call (str keys and values run no Python code): the scrape never sees the dict change
        return (self._header + "".join(list(self._lines.values()))).encode()

    def labels(self, *values: str) -> _Child:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: {len(self.labelnames)} label values expected, not {len(values)}")
        return _Child(self, tuple(str(v) for v in values))

    def remove(self, *values: str) -> None:
        key = tuple(str(v) for v in values)
        self.values.pop(key, None)
        self._lines.pop(key, None)

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return [GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        # a snapshot in one C call (str-tuple keys run no Python code): the scrape thread never sees the dict change
        for key, value in list(self.values.items()):
            family.add_metric(key, value)
        yield family
