"""The in-cluster router (``--set router.mode=cluster``) on the real node: the operator runs an Envoy Deployment
configured from a ConfigMap, gives each workload a stable ExternalName Service, and confirms every route change on
the router Pod itself (its /stats, read through the apiserver's Pod proxy) before it counts as applied.

No request is sent to the router: Pod and Service IPs are not loopback. Upstreams point at 127.0.0.1:9 inside the
Pod (nothing listens there), and the Cloud Run token source too, so the router Pod itself contacts nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from inference_placement.api.spec import TargetName
from inference_placement.routing.traffic_stats import TRAFFIC_STATS_QUERY, parse_target_counters
from tests.plugins.cluster import KubeCluster
from tests.plugins.operator import OperatorProcess, wait_for

pytestmark = pytest.mark.cluster

NAME = "routed"


def _workload(namespace: str, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "placement.inference.dev/v1alpha1",
        "kind": "InferenceWorkload",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "model": {"image": image, "sizeMb": 300, "cpu": "100m", "memory": "128Mi", "serviceSeconds": 0.02},
            "slo": {"latencyP99Seconds": 0.5, "attainment": 0.99},
            "placement": {"allowedTargets": ["cluster"]},
            "scaling": {"minReplicas": 1, "maxReplicas": 1},
        },
    }


def _json(cluster: KubeCluster, *args: str) -> dict[str, Any]:
    out = cluster.kubectl(*args, "-o", "json", check=False)
    return dict(json.loads(out.stdout)) if out.returncode == 0 else {}


def _route_weights(configmap: dict[str, Any], namespace: str) -> dict[str, int]:
    rds = json.loads(configmap.get("data", {}).get("rds.json") or "{}")
    for resource in rds.get("resources", []):
        for host in resource.get("virtual_hosts", []):
            if f"{NAME}.{namespace}" in host.get("domains", []):
                # the workload's own entry is the last (pings match first); not placed yet: a direct 503, no clusters
                route = host["routes"][-1].get("route") or {}
                clusters = route.get("weighted_clusters", {}).get("clusters", [])
                return {c["name"].rsplit("|", 1)[-1]: c["weight"] for c in clusters}
    return {}


def _router_rds_version(cluster: KubeCluster, namespace: str) -> str | None:
    pods = _json(cluster, "get", "pods", "-n", namespace, "-l", "app.kubernetes.io/name=inference-router")
    running = [p["metadata"]["name"] for p in pods.get("items", []) if p["status"].get("phase") == "Running"]
    if not running:
        return None
    raw = cluster.kubectl(
        "get", "--raw", f"/api/v1/namespaces/{namespace}/pods/{running[0]}:9902/proxy/stats?format=json", check=False
    )
    if raw.returncode != 0:
        return None
    stats = {s["name"]: s.get("value") for s in json.loads(raw.stdout).get("stats", []) if "name" in s}
    value = stats.get("http.ingress.rds.inference-routes.version_text")
    return str(value) if value is not None else None


def test_the_operator_runs_the_router_and_confirms_routes_on_the_router_pod(
    kube_node: KubeCluster,
    crd_installed: KubeCluster,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
) -> None:
    published = f"http://{NAME}-model.{namespace}.svc:8080"
    operator_factory(
        namespace,
        "--set", "cluster.imagePullPolicy=Never",
        "--set", "router.mode=cluster",
        "--set", f"router.namespace={namespace}",
        "--set", f"router.image={kube_node.router_image}",
        "--set", "router.imagePullPolicy=Never",
        "--set", "router.replicas=1",
        "--set", "router.gcpMetadata=http://127.0.0.1:9",
        "--set", f"router.addressOverrides={published}=http://127.0.0.1:9",
    )  # fmt: skip
    kube_node.kubectl("apply", "-f", "-", input=yaml.safe_dump(_workload(namespace, kube_node.model_server_image)))

    # the router: a real Envoy Pod from the operator's Deployment, ready by its own health listener
    wait_for(
        lambda: (
            _json(kube_node, "get", "deployment", "inference-router", "-n", namespace)
            .get("status", {})
            .get("availableReplicas")
        ),
        timeout=120,
        what="the router Deployment available",
    )
    # the workload is placed and Ready, and its endpoint is the stable name whatever the placement
    status = wait_for(
        lambda: (
            (s := _json(kube_node, "get", "iw", NAME, "-n", namespace).get("status", {})).get("placement") == "cluster"
            and any(c["type"] == "Ready" and c["status"] == "True" for c in s.get("conditions", []))
            and s
        ),
        timeout=120,
        what="placed on the cluster and Ready",
    )
    assert status["endpoint"] == f"http://{NAME}.{namespace}.svc.cluster.local"
    # the route is in the ConfigMap, and the router Pod itself serves that exact version
    configmap = wait_for(
        lambda: (
            (c := _json(kube_node, "get", "configmap", "inference-router", "-n", namespace))
            and _route_weights(c, namespace) == {"cluster": 100}
            and c
        ),
        timeout=150,  # routes are written after the new cluster is confirmed (one kubelet ConfigMap refresh)
        what="the route in the router ConfigMap",
    )
    version = json.loads(configmap["data"]["rds.json"])["version_info"]
    wait_for(
        lambda: _router_rds_version(kube_node, namespace) == version,
        timeout=150,  # the kubelet refreshes ConfigMap volumes at its sync period
        what=f"the router Pod to report RDS version {version}",
    )
    # the router's per-target traffic counters (what gates a migration) are readable the way the operator reads
    # them: the router Pod's health listener, through the apiserver's Pod proxy
    pods = _json(kube_node, "get", "pods", "-n", namespace, "-l", "app.kubernetes.io/name=inference-router")
    pod = next(p["metadata"]["name"] for p in pods["items"] if p["status"].get("phase") == "Running")
    raw = kube_node.kubectl(
        "get", "--raw", f"/api/v1/namespaces/{namespace}/pods/{pod}:9902/proxy/stats?{TRAFFIC_STATS_QUERY}"
    )
    counters = parse_target_counters(json.loads(raw.stdout))
    assert (namespace, NAME, TargetName.CLUSTER) in counters, sorted(counters)
    assert counters[namespace, NAME, TargetName.CLUSTER].requests == 0, "no request was sent to the router"
    # the router Pod runs without a Kubernetes API token
    router_pod = _json(kube_node, "get", "pod", pod, "-n", namespace)
    assert router_pod["spec"]["automountServiceAccountToken"] is False
    mounts = [m["mountPath"] for c in router_pod["spec"]["containers"] for m in c.get("volumeMounts", [])]
    assert not any("serviceaccount" in m for m in mounts), mounts
    # the stable endpoint: an ExternalName Service resolving to the router, owned by the workload
    service = _json(kube_node, "get", "service", NAME, "-n", namespace)
    assert service["spec"]["type"] == "ExternalName"
    assert service["spec"]["externalName"] == f"inference-router.{namespace}.svc.cluster.local"
    uid = _json(kube_node, "get", "iw", NAME, "-n", namespace)["metadata"]["uid"]
    assert [o["uid"] for o in service["metadata"].get("ownerReferences", [])] == [uid]

    # the workload goes: its route leaves the router and its Service goes with it
    kube_node.kubectl("delete", "iw", NAME, "-n", namespace, "--timeout=60s")
    wait_for(
        lambda: (
            not _route_weights(_json(kube_node, "get", "configmap", "inference-router", "-n", namespace), namespace)
        ),
        timeout=60,
        what="the route removed",
    )
    wait_for(
        lambda: kube_node.kubectl("get", "service", NAME, "-n", namespace, check=False).returncode != 0,
        timeout=60,
        what="the stable Service removed",
    )
