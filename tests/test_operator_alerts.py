"""The chart's PrometheusRule for the operator (the alerts docs/metrics.md lists), checked with promtool's rule unit
tests on series named and labelled exactly as the operator's own /metrics exports them (a real ``Telemetry``
registry, read back in the exposition format), plus the ``job`` label the ServiceMonitor's scrape adds."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from inference_placement.api.status import Condition, ConditionStatus, ConditionType, Reason
from inference_placement.controller.telemetry import Telemetry
from tests.plugins.cluster import REPO_ROOT
from tests.plugins.prometheus import PrometheusBinaries
from tests.test_chart import one, render_chart

JOB = "ip-inference-placement-metrics"
VALUES = ["prometheusRule.enabled=true", "operator.prometheusUrl=http://prometheus.monitoring:9090"]
ALERTS = {
    "InferencePlacementOperatorDown",
    "InferencePlacementNoLeader",
    "InferencePlacementMetricsStale",
    "InferencePlacementMigrationRolledBack",
    "InferencePlacementBudgetBurn",
    "InferencePlacementTargetErrors",
    "InferencePlacementPriceBookRejected",
    "InferencePlacementWorkloadNotReady",
}


def _exported() -> dict[str, list[dict[str, str]]]:
    """Every sample the operator exports, by name, after a workload was marked not ready and over budget, a
    migration rolled back, a target API failed, a standby lost the Lease and the price book was rejected."""
    telemetry = Telemetry()
    ready = Condition(
        type=ConditionType.READY,
        status=ConditionStatus.FALSE,
        reason=Reason.TARGET_FAILED,
        last_transition_time="2026-11-23T12:00:00Z",
    )
    telemetry.export_state("team-a", "llm", "cluster", 120.0, [ready])
    telemetry.budget_burn.labels("team-a", "llm").set(1.5)
    telemetry.migration_rollbacks.labels("lambda", "cluster", "Shifting").inc()
    telemetry.target_errors.labels("lambda", "Permanent").inc()
    telemetry.leader.labels("replica-a").set(0)
    telemetry.price_book_valid.set(0)
    telemetry.metrics_fresh.set(0)
    exported: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(telemetry.exposition().decode()):
        for sample in family.samples:
            exported.setdefault(sample.name, []).append(dict(sample.labels))
    return exported


def _series(exported: Mapping[str, list[dict[str, str]]], name: str, **labels: str) -> str:
    """The one exported series of ``name`` with ``labels``, as promtool's input (``job`` added)."""
    found = [s for s in exported.get(name, []) if labels.items() <= s.items()]
    assert len(found) == 1, (name, labels, exported.get(name))
    text = ",".join(f'{k}="{v}"' for k, v in sorted({**found[0], "job": JOB}.items()))
    return f"{name}{{{text}}}"


def _rules() -> dict[str, dict[str, Any]]:
    rule = one(render_chart(values=VALUES), "PrometheusRule")
    return {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}


def _annotations(rule: dict[str, Any], labels: Mapping[str, str], value: str = "") -> dict[str, str]:
    def fill(text: str) -> str:
        text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)
        return re.sub(r"\{\{ \$value[^}]*\}\}", value, text)

    return {k: fill(v) for k, v in rule["annotations"].items()}


def test_the_rule_has_the_alerts_the_docs_describe_and_needs_its_switch() -> None:
    assert set(_rules()) == ALERTS
    assert not [m for m in render_chart() if m["kind"] == "PrometheusRule"], "off by default"
    without_prometheus = one(render_chart(values=["prometheusRule.enabled=true"]), "PrometheusRule")
    names = {r["alert"] for r in without_prometheus["spec"]["groups"][0]["rules"]}
    assert "InferencePlacementMetricsStale" not in names, "no Prometheus configured: never fresh, never an alert"
    selected = one(render_chart(values=[*VALUES, 'prometheusRule.selector=service="ops"']), "PrometheusRule")
    assert all('service="ops"' in r["expr"] for r in selected["spec"]["groups"][0]["rules"])
    docs = (REPO_ROOT / "docs" / "metrics.md").read_text()
    for alert in ALERTS:
        assert f"`{alert}`" in docs, f"docs/metrics.md does not describe {alert}"


def test_the_alerts_fire_on_the_operators_own_series(prometheus_binaries: PrometheusBinaries, tmp_path: Path) -> None:
    exported = _exported()
    rules = _rules()
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(
        yaml.safe_dump({"groups": one(render_chart(values=VALUES), "PrometheusRule")["spec"]["groups"]})
    )
    workload = {"namespace": "team-a", "workload": "llm"}
    not_ready = _series(exported, "inference_placement_workload_condition", **workload, type="Ready", status="False")
    firing = [
        {"series": f'up{{instance="10.0.0.1:9090",job="{JOB}"}}', "values": "0x20"},
        {"series": _series(exported, "inference_placement_leader", identity="replica-a"), "values": "0x20"},
        {"series": _series(exported, "inference_placement_metrics_last_success_timestamp_seconds"), "values": "0x20"},
        {
            "series": _series(exported, "inference_placement_migration_rollbacks_total", step="Shifting"),
            "values": "0 0 0 0 0 0 0 0 0 0 1x10",
        },
        {"series": _series(exported, "inference_placement_budget_burn_ratio", **workload), "values": "1.5x20"},
        {"series": _series(exported, "inference_placement_target_errors_total", target="lambda"), "values": "0+1x20"},
        {"series": _series(exported, "inference_placement_price_book_valid"), "values": "0x20"},
        {"series": not_ready, "values": "1x20"},
    ]
    at = "20m"
    expected: dict[str, list[dict[str, Any]]] = {
        "InferencePlacementOperatorDown": [{"exp_labels": {"severity": "critical"}}],
        "InferencePlacementNoLeader": [{"exp_labels": {"severity": "critical"}}],
        "InferencePlacementMetricsStale": [{"exp_labels": {"severity": "warning"}, "value": "20m 0s"}],
        "InferencePlacementMigrationRolledBack": [
            {
                "exp_labels": {
                    "severity": "warning",
                    "from_target": "lambda",
                    "to_target": "cluster",
                    "step": "Shifting",
                }
            }
        ],
        "InferencePlacementBudgetBurn": [
            {"exp_labels": {"severity": "warning", "job": JOB, **workload}, "value": "150%"}
        ],
        "InferencePlacementTargetErrors": [
            {"exp_labels": {"severity": "warning", "target": "lambda", "kind": "Permanent"}}
        ],
        "InferencePlacementPriceBookRejected": [{"exp_labels": {"severity": "warning"}}],
        "InferencePlacementWorkloadNotReady": [{"exp_labels": {"severity": "warning", **workload}}],
    }
    assert set(expected) == ALERTS
    firing_tests = []
    for alert, alerts in expected.items():
        exp = []
        for item in alerts:
            labels = item["exp_labels"]
            exp.append(
                {"exp_labels": labels, "exp_annotations": _annotations(rules[alert], labels, item.get("value", ""))}
            )
        firing_tests.append({"eval_time": at, "alertname": alert, "exp_alerts": exp})
    healthy = [
        {"series": f'up{{instance="10.0.0.1:9090",job="{JOB}"}}', "values": "1x20"},
        {"series": _series(exported, "inference_placement_leader", identity="replica-a"), "values": "1x20"},
        # the last fetch with data keeps up with the clock (the value is a Unix time; the test's clock starts at 0)
        {
            "series": _series(exported, "inference_placement_metrics_last_success_timestamp_seconds"),
            "values": "0+60x20",
        },
        {
            "series": _series(exported, "inference_placement_migration_rollbacks_total", step="Shifting"),
            "values": "1x20",
        },
        {"series": _series(exported, "inference_placement_budget_burn_ratio", **workload), "values": "0.9x20"},
        {"series": _series(exported, "inference_placement_target_errors_total", target="lambda"), "values": "3x20"},
        {"series": _series(exported, "inference_placement_price_book_valid"), "values": "1x20"},
        # not ready for 10 minutes only: a scale-up or a short outage does not page
        {"series": not_ready, "values": "0x10 1x10"},
    ]
    tests = {
        "rule_files": [str(rules_file)],
        "evaluation_interval": "1m",
        "tests": [
            {"interval": "1m", "input_series": firing, "alert_rule_test": firing_tests},
            {
                "interval": "1m",
                "input_series": healthy,
                "alert_rule_test": [{"eval_time": at, "alertname": a, "exp_alerts": []} for a in sorted(ALERTS)],
            },
        ],
    }
    test_file = tmp_path / "rules_test.yaml"
    test_file.write_text(yaml.safe_dump(tests, sort_keys=False))
    done = subprocess.run(
        [prometheus_binaries.promtool, "test", "rules", str(test_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("values", [pytest.param([], id="defaults"), pytest.param(VALUES, id="with-prometheus")])
def test_promtool_accepts_the_rule_file(
    prometheus_binaries: PrometheusBinaries, tmp_path: Path, values: list[str]
) -> None:
    rule = one(render_chart(values=["prometheusRule.enabled=true", *values]), "PrometheusRule")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    done = subprocess.run(
        [prometheus_binaries.promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
