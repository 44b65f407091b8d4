"""Keep-warm pings: when the decision keeps serverless instances warm, the operator really pings them, through the
router, concurrently (one request keeps one instance warm)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.cloudrun_standin import CloudRunStandin
from tests.plugins.cluster import KubeCluster
from tests.plugins.envoy import EnvoyRouter, HttpUpstreams
from tests.plugins.operator import OperatorProcess, wait_for

pytestmark = pytest.mark.cluster


def _workload(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "placement.inference.dev/v1alpha1",
        "kind": "InferenceWorkload",
        "metadata": {"name": "pinged", "namespace": namespace},
        "spec": {
            "model": {
                "image": "registry.example.com/m:1",
                "sizeMb": 300,
                "healthPath": "/ready",
                "serviceSeconds": 0.02,
            },
            "slo": {"latencyP99Seconds": 0.5, "attainment": 0.99, "tolerableColdStartSeconds": 30},
            "placement": {"allowedTargets": ["cloudrun"]},
            "cloudRun": {"project": "pings", "region": "us-central1", "concurrency": 4, "maxInstances": 5},
        },
    }


def _status(cluster: KubeCluster, namespace: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "iw", "pinged", "-n", namespace, "-o", "json", check=False)
    return dict(json.loads(out.stdout).get("status") or {}) if out.returncode == 0 else {}


def _pings(metrics_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('inference_placement_warm_pings_total{result="ok"}')
    )


def test_serverless_instances_the_decision_keeps_warm_are_pinged_through_the_router(
    crd_installed: KubeCluster,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
    envoy_router: EnvoyRouter,
    http_upstreams: HttpUpstreams,
    cloudrun_standin: CloudRunStandin,
) -> None:
    service = http_upstreams.start("cloudrun-model")
    cloudrun_standin.service_url = service.url
    operator = operator_factory(
        namespace,
        "--set", f"cloudrun.endpoint={cloudrun_standin.url}",
        "--set", "cloudrun.project=pings",
        "--set", "router.mode=files",
        "--set", f"router.xdsDir={envoy_router.xds_dir}",
        "--set", f"router.adminUrl={envoy_router.admin_url}",
        "--set", f"router.url={envoy_router.listen_url}",
        "--set", f"router.trustedOrigins={service.url}",
    )  # fmt: skip
    crd_installed.kubectl("apply", "-f", "-", input=yaml.safe_dump(_workload(namespace)))
    status = wait_for(
        lambda: (s := _status(crd_installed, namespace)).get("placement") == "cloudrun" and s,
        timeout=60,
        what="placed on cloudrun",
    )
    reason = status["lastDecision"]["reason"]
    assert "kept warm by pings" in reason, reason
    warm = int(reason.split("(", 1)[1].split(" instance", 1)[0])
    assert warm >= 1
    # nobody sends traffic, yet the service is pinged: `warm` concurrent GETs of the health path, via Envoy
    wait_for(lambda: service.hits >= warm, timeout=30, what=f"{warm} warm-up ping(s)")
    assert service.last_path == "/ready"
    assert service.last_headers.get("authorization", "").startswith("Bearer ")  # Envoy's gcp_authn ID token
    # through the workload's warm twin cluster: the pings are not measured as the workload's traffic
    assert envoy_router.stat(f"cluster.warm|{namespace}|pinged|cloudrun.upstream_rq_completed") >= warm
    assert envoy_router.stat(f"cluster.ip|{namespace}|pinged|cloudrun.upstream_rq_total") == 0
    wait_for(lambda: _pings(operator.metrics_port) >= warm, timeout=10, what="pings counted in /metrics")
    # the decision that asked for the pings is recorded with them
    recorded = _status(crd_installed, namespace)["lastDecision"]
    assert recorded["keepWarmInstances"] == warm and recorded["pingIntervalSeconds"] > 60
    crd_installed.kubectl("delete", "iw", "pinged", "-n", namespace, "--timeout=60s")
