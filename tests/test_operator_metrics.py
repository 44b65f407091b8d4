"""The operator's own /metrics beyond the fleet loop's: the standard process and GC families, build info, and the
per-workload series a dashboard at 10,000 workloads and the PrometheusRule read (placement, current cost,
conditions: one series per workload and target or condition type, dropped with the workload), and the
migration-duration histogram. Read back in the text exposition format, as Prometheus scrapes it."""

from __future__ import annotations

import platform
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import inference_placement
from inference_placement.api.spec import TargetName
from inference_placement.api.status import InferenceWorkloadStatus, MigrationStatus, MigrationStep
from inference_placement.controller.migration import MigrationObservation
from inference_placement.controller.reconciler import Reconciler, _Pending
from inference_placement.controller.telemetry import EXPORTED_CONDITIONS, Telemetry, WorkloadGauge
from tests.test_ready_while_scaling import _reconcile

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(telemetry: Telemetry) -> Samples:
    text = telemetry.exposition().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _series(samples: Samples, name: str, **labels: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        key: value for (sample, key), value in samples.items() if sample == name and labels.items() <= dict(key).items()
    }


def test_standard_process_gc_and_build_info_families() -> None:
    samples = _scrape(Telemetry())
    names = {name for name, _ in samples}
    assert {"process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds"} <= names
    assert "python_gc_collections_total" in names and "python_info" in names
    (labels,) = _series(samples, "inference_placement_build_info")
    assert dict(labels) == {"version": inference_placement.__version__, "python_version": platform.python_version()}
    assert samples[("inference_placement_build_info", labels)] == 1


def test_placement_current_cost_and_conditions_per_workload_then_forgotten() -> None:
    telemetry = Telemetry()
    _, status, _ = _reconcile(min_replicas=1, available=None, telemetry=telemetry)
    samples = _scrape(telemetry)
    mine = {"namespace": "unit", "workload": "w"}
    assert _series(samples, "inference_placement_workload_placement", **mine) == {
        tuple(sorted({**mine, "target": "cluster"}.items())): 1.0
    }, "one series, for the serving target only"
    cost = _series(samples, "inference_placement_current_monthly_cost_usd", **mine)
    assert list(cost.values()) == [status["currentMonthlyCostUsd"]] and dict(next(iter(cost)))["target"] == "cluster"
    conditions = _series(samples, "inference_placement_workload_condition", **mine)
    exported = {(dict(k)["type"], dict(k)["status"]) for k in conditions}
    in_status = {(c["type"], c["status"]) for c in status["conditions"] if c["type"] in EXPORTED_CONDITIONS}
    assert exported == in_status and ("Ready", "True") in exported
    assert len(conditions) == len({t for t, _ in exported}), "one series per condition type"

    telemetry.forget_workload("unit", "w")
    after = _scrape(telemetry)
    for name in (
        "inference_placement_workload_placement",
        "inference_placement_current_monthly_cost_usd",
        "inference_placement_workload_condition",
        "inference_placement_projected_monthly_cost_usd",
    ):
        assert not _series(after, name, **mine), name


def test_a_condition_that_changes_status_moves_its_one_series() -> None:
    telemetry = Telemetry()
    _reconcile(min_replicas=2, available=0, telemetry=telemetry)  # scaled to nothing available: Ready False
    ready = _series(_scrape(telemetry), "inference_placement_workload_condition", workload="w", type="Ready")
    assert [dict(k)["status"] for k in ready] == ["False"]


def test_a_migration_that_ends_is_timed() -> None:
    telemetry = Telemetry()
    reconciler = Reconciler(None, {}, telemetry=telemetry)  # type: ignore[arg-type]  # no write in _advance
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    migration = MigrationStatus(
        source=TargetName.LAMBDA,
        target=TargetName.CLUSTER,
        step=MigrationStep.ROLLING_BACK,
        started_at=(now - timedelta(seconds=700)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        step_started_at=(now - timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        last_error="target failed",
    )
    status = InferenceWorkloadStatus(placement=TargetName.LAMBDA, migration=migration)
    after = reconciler._advance(status, migration, MigrationObservation(retired=True), now, _Pending())
    assert after.migration is None and after.last_migration is not None
    samples = _scrape(telemetry)
    route = {"from_target": "lambda", "to_target": "cluster", "outcome": "RolledBack"}
    assert list(_series(samples, "inference_placement_migration_duration_seconds_count", **route).values()) == [1]
    assert list(_series(samples, "inference_placement_migration_duration_seconds_sum", **route).values()) == [700]
    buckets = _series(samples, "inference_placement_migration_duration_seconds_bucket", **route)
    assert buckets[tuple(sorted({**route, "le": "600.0"}.items()))] == 0
    assert buckets[tuple(sorted({**route, "le": "900.0"}.items()))] == 1


def test_the_per_workload_gauges_expose_what_a_prometheus_client_gauge_would() -> None:
    """``WorkloadGauge`` (a float per series, for the per-workload families) renders, sets and removes as
    ``prometheus_client.Gauge`` does: the same exposition text after the same calls."""
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    labels = ["namespace", "workload", "target"]
    compact = WorkloadGauge("x_cost_usd", "Cost.", labels, registry=ours)
    reference = Gauge("x_cost_usd", "Cost.", labels, registry=theirs)
    for gauge in (compact, reference):
        gauge.labels("ns", "a", "cluster").set(3)
        gauge.labels("ns", "a", "lambda").set(1.25)
        gauge.labels("ns", "b", "cluster").set(float("inf"))
        gauge.labels("ns", "a", "cluster").set(2.5)
        gauge.remove("ns", "a", "lambda")
        gauge.remove("ns", "a", "lambda")  # gone already: no error
        with pytest.raises(ValueError):
            gauge.labels("ns", "a")
    assert generate_latest(ours) == generate_latest(theirs)
    assert compact.render() == generate_latest(theirs)  # the rendered lines /metrics serves
    assert ours.get_sample_value("x_cost_usd", {"namespace": "ns", "workload": "a", "target": "cluster"}) == 2.5
    with pytest.raises(ValueError):  # one name once per registry, as for the library's own metrics
        WorkloadGauge("x_cost_usd", "Again.", labels, registry=ours)


def test_metrics_serves_the_registries_text_from_the_rendered_lines() -> None:
    """``/metrics`` is the standard families through ``prometheus_client`` and the per-workload ones from lines
    rendered when set: the same text the library renders for both registries, escaping included, over HTTP."""
    telemetry = Telemetry()
    telemetry.ticks.inc()
    for name in ("a", 'odd"name\\x', "b"):
        telemetry.projected_cost.labels("ns", name, "cluster").set(12.5)
        telemetry.condition.labels("ns", name, "Ready", "True").set(1)
    telemetry.projected_cost.labels("ns", "a", "cluster").set(7)
    telemetry.projected_cost.labels("ns", "a", "cluster").set(7)
    telemetry.condition.remove("ns", "b", "Ready", "True")
    telemetry.forget_workload("ns", "b")
    served = telemetry.exposition()
    library = generate_latest(telemetry.workload_registry)
    assert served.endswith(library) and b'workload="odd\\"name' in library
    # the standard part changes with the process (CPU, GC) between two renderings: compare its families' names
    head = served[: len(served) - len(library)].decode()
    names = {family.name for family in text_string_to_metric_families(head)}
    assert names == {
        family.name for family in text_string_to_metric_families(generate_latest(telemetry.registry).decode())
    }
    server = telemetry.serve(0, addr="127.0.0.1")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_address[1]}/metrics", timeout=10) as answer:
            assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert answer.read().endswith(library)
    finally:
        server.shutdown()
        server.server_close()
