"""A Cloud Run ID token the router cannot fetch, against the real Envoy: ``gcp_authn`` fails open, so the request
goes out without a token and Cloud Run refuses it. The migration gate counts those refusals as the target's
failures, and the chart's PrometheusRule alerts on the very series this Envoy exports (checked with promtool's
rule unit tests, fed the scraped series' names and labels)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from inference_placement.api.spec import TargetName
from inference_placement.policy.traffic_health import TrafficGate, traffic_problem
from inference_placement.routing.model import EndpointsConfig, route_from_status
from inference_placement.routing.traffic_stats import parse_target_counters
from inference_placement.routing.xds_files import EnvoyXdsApplier
from tests.plugins.envoy import HttpUpstreams, start_envoy
from tests.plugins.prometheus import PrometheusBinaries
from tests.test_chart import one, render_chart
from tests.test_routing_envoy import CLOUDRUN_URL, HOST, _status, _workload

pytestmark = pytest.mark.slow

REQUESTS = 12


def _series(text: str, metric: str, **labels: str) -> str:
    """The one exported series of ``metric`` carrying ``labels``, as ``name{labels}`` (value dropped)."""
    found = []
    for line in text.splitlines():
        if not line.startswith(metric + "{"):
            continue
        selector = line.rsplit(" ", 1)[0]
        if all(f'{k}="{v}"' in selector for k, v in labels.items()):
            found.append(selector)
    assert len(found) == 1, (metric, labels, found)
    return found[0]


def test_a_token_fetch_failure_is_the_targets_failure_and_the_chart_alerts_on_it(
    envoy_binary: str, tmp_path: Path, http_upstreams: HttpUpstreams, prometheus_binaries: PrometheusBinaries
) -> None:
    # no metadata server answers (port 9): every token fetch fails; Cloud Run refuses a request without a token
    router = start_envoy(envoy_binary, tmp_path, None, stats_listener=True)
    try:
        cloudrun = http_upstreams.start("cloudrun")
        cloudrun.status = 401
        applier = EnvoyXdsApplier(router.xds_dir, router.admin_url, router.settings)
        config = EndpointsConfig(address_overrides={CLOUDRUN_URL: cloudrun.url})
        asyncio.run(applier.apply([route_from_status(_workload(_status(TargetName.CLOUDRUN)), config)]))
        answers = [router.request(HOST)[0] for _ in range(REQUESTS)]
        assert answers == [401] * REQUESTS
        assert "authorization" not in cloudrun.last_headers, "gcp_authn failed open: no token went out"

        counters = parse_target_counters(asyncio.run(applier.traffic_stats())[0])[
            "default", "embedder", TargetName.CLOUDRUN
        ]
        assert (counters.requests, counters.auth_refusals, counters.server_errors) == (REQUESTS, REQUESTS, 0)
        problem = traffic_problem(TargetName.CLOUDRUN, counters, 1.0, TrafficGate(), step="shifting at 10%")
        assert problem is not None and f"{REQUESTS} 401/403" in problem, problem

        with urllib.request.urlopen(f"http://{router.stats_target}/stats/prometheus", timeout=5) as response:
            exported = response.read().decode()
    finally:
        router.stop()

    fetch = _series(exported, "envoy_cluster_upstream_cx_connect_fail", envoy_cluster_name="gcp-metadata")
    refused = _series(
        exported,
        "envoy_cluster_upstream_rq",
        namespace="default",
        workload="embedder",
        target="cloudrun",
        envoy_response_code="401",
    )
    rule = one(render_chart(values=["router.enabled=true", "router.prometheusRule.enabled=true"]), "PrometheusRule")
    annotations = {
        r["alert"]: {
            k: re.sub(
                r"\{\{ \$labels\.(\w+) \}\}", lambda m: {"namespace": "default", "workload": "embedder"}[m.group(1)], v
            )
            for k, v in r["annotations"].items()
        }
        for r in rule["spec"]["groups"][0]["rules"]
    }
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    bare = re.sub(r'envoy_response_code="401"', 'envoy_response_code="200"', refused)
    tests = {
        "rule_files": [str(rules_file)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": fetch, "values": "0+6x10"},
                    {"series": refused, "values": "0+6x10"},
                    {"series": bare, "values": "0+60x10"},  # healthy answers alongside do not hide it
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "8m",
                        "alertname": "InferenceRouterTokenFetchFailing",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "warning"},
                                "exp_annotations": annotations["InferenceRouterTokenFetchFailing"],
                            }
                        ],
                    },
                    {
                        "eval_time": "8m",
                        "alertname": "InferenceRouterCloudRunRefusing",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "warning", "namespace": "default", "workload": "embedder"},
                                "exp_annotations": annotations["InferenceRouterCloudRunRefusing"],
                            }
                        ],
                    },
                ],
            },
            {
                "interval": "1m",
                "input_series": [
                    {"series": fetch, "values": "3x10"},  # failed once, long ago: flat since
                    {"series": bare, "values": "0+60x10"},
                ],
                "alert_rule_test": [
                    {"eval_time": "8m", "alertname": "InferenceRouterTokenFetchFailing", "exp_alerts": []},
                    {"eval_time": "8m", "alertname": "InferenceRouterCloudRunRefusing", "exp_alerts": []},
                ],
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
