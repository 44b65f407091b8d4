"""The real local Kubernetes cluster (e2e/local-cluster.sh) does what the operator's tests rely on."""

from __future__ import annotations

import ipaddress
import json
import ssl
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from tests.plugins.cluster import KubeCluster

T = TypeVar("T")

pytestmark = pytest.mark.cluster

WAIT_SECONDS = 120.0


def wait_until(what: str, probe: Callable[[], T | None], timeout: float = WAIT_SECONDS, interval: float = 0.5) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def api_get(cluster: KubeCluster, path: str, token: str | None) -> tuple[int, str]:
    """GET a path of the apiserver with an optional bearer token; returns (status, body)."""
    context = ssl.create_default_context(cafile=cluster.ca_file)
    request = urllib.request.Request(cluster.api_url + path)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def apply(cluster: KubeCluster, namespace: str, *objects: dict[str, Any]) -> None:
    cluster.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}),
    )


@pytest.fixture
def namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    name = f"lc-test-{uuid.uuid4().hex[:8]}"
    kube_cluster.kubectl("create", "namespace", name)
    yield name
    kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def model_server_deployment(image: str, replicas: int, name: str = "model-server") -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": "server",
                            "image": image,
                            "imagePullPolicy": "Never",
                            "ports": [{"containerPort": 8080}],
                            "env": [
                                {"name": "SERVICE_SECONDS", "value": "0.01"},
                                {"name": "SERVED_BY", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                            ],
                            "readinessProbe": {
                                "httpGet": {"path": "/healthz", "port": 8080},
                                "periodSeconds": 1,
                            },
                        }
                    ],
                },
            },
        },
    }


def test_apiserver_readyz_is_ok_and_serves_the_pinned_version(kube_cluster: KubeCluster) -> None:
    assert api_get(kube_cluster, "/readyz", token=None) == (200, "ok")
    status, body = api_get(kube_cluster, "/version", token=kube_cluster.admin_token)
    assert status == 200
    version = json.loads(body)
    assert version["gitVersion"] == f"v{kube_cluster.kubernetes_version}"
    assert (int(version["major"]), int(version["minor"])) >= (1, 34)
    kubectl = json.loads(kube_cluster.kubectl("version", "-o", "json").stdout)
    assert kubectl["clientVersion"]["gitVersion"] == f"v{kube_cluster.kubernetes_version}"
    assert kubectl["serverVersion"]["gitVersion"] == f"v{kube_cluster.kubernetes_version}"


def test_rbac_refuses_unknown_and_unprivileged_tokens(kube_cluster: KubeCluster) -> None:
    secrets = "/api/v1/namespaces/kube-system/secrets"
    assert api_get(kube_cluster, secrets, token="not-a-token")[0] == 401
    assert api_get(kube_cluster, secrets, token=None)[0] == 403  # anonymous
    assert api_get(kube_cluster, secrets, token=kube_cluster.unprivileged_token)[0] == 403
    assert api_get(kube_cluster, secrets, token=kube_cluster.admin_token)[0] == 200


def test_service_account_token_authenticates_with_its_rbac_grants(kube_cluster: KubeCluster, namespace: str) -> None:
    apply(
        kube_cluster,
        namespace,
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader", "namespace": namespace}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "reader-view", "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
        },
    )

    # a bound token from the TokenRequest API (1.24+ creates no token Secrets), signed with the cluster's sa.key
    token = kube_cluster.kubectl("create", "token", "reader", "-n", namespace, "--duration", "10m").stdout.strip()
    assert api_get(kube_cluster, f"/api/v1/namespaces/{namespace}/pods", token=token)[0] == 200
    assert api_get(kube_cluster, "/api/v1/namespaces/kube-system/pods", token=token)[0] == 403


def test_deployment_creates_replicaset_and_pods_and_garbage_collects_them(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    apply(kube_cluster, namespace, model_server_deployment(kube_cluster.model_server_image, replicas=2))
    deployment_uid = kube_cluster.kubectl_json("get", "deployment", "model-server", "-n", namespace)["metadata"]["uid"]

    def owned_replicaset() -> dict[str, Any] | None:
        for rs in kube_cluster.kubectl_json("get", "replicasets", "-n", namespace)["items"]:
            if any(ref["uid"] == deployment_uid for ref in rs["metadata"].get("ownerReferences", [])):
                return dict(rs)
        return None

    rs = wait_until("a ReplicaSet owned by the Deployment", owned_replicaset, timeout=60)

    def owned_pods() -> list[dict[str, Any]] | None:
        pods = [
            pod
            for pod in kube_cluster.kubectl_json("get", "pods", "-n", namespace)["items"]
            if any(ref["uid"] == rs["metadata"]["uid"] for ref in pod["metadata"].get("ownerReferences", []))
        ]
        return pods if len(pods) == 2 else None

    wait_until("2 Pods owned by the ReplicaSet", owned_pods, timeout=60)

    kube_cluster.kubectl("delete", "deployment", "model-server", "-n", namespace, "--wait=false")

    def all_collected() -> bool:
        left = kube_cluster.kubectl_json("get", "replicasets,pods", "-n", namespace)["items"]
        # without a node, Pods are deleted outright; with one, they may sit in Terminating briefly
        return not [obj for obj in left if obj["kind"] == "ReplicaSet"] and all(
            obj["metadata"].get("deletionTimestamp") for obj in left
        )

    wait_until("garbage collection of the ReplicaSet and its Pods", all_collected, timeout=60)


@pytest.mark.node
def test_model_server_pod_runs_and_answers_on_its_pod_ip(kube_node: KubeCluster, namespace: str) -> None:
    apply(kube_node, namespace, model_server_deployment(kube_node.model_server_image, replicas=1))

    def available() -> bool:
        status = kube_node.kubectl_json("get", "deployment", "model-server", "-n", namespace).get("status", {})
        return bool(status.get("availableReplicas") == 1)

    wait_until("the model-server Deployment to become available", available, timeout=WAIT_SECONDS)
    pods = kube_node.kubectl_json("get", "pods", "-n", namespace, "-l", "app=model-server")["items"]
    running = [pod for pod in pods if pod["status"].get("phase") == "Running"]
    assert len(running) == 1
    pod = running[0]
    pod_ip = pod["status"]["podIP"]
    assert ipaddress.ip_address(pod_ip) in ipaddress.ip_network(kube_node.pod_cidr)
    assert pod["spec"]["nodeName"] == kube_node.node_name

    body = json.dumps({"instances": [[1, 2, 3], "x"]}).encode()
    request = urllib.request.Request(f"http://{pod_ip}:8080/predict", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        assert response.headers["x-served-by"] == pod["metadata"]["name"]
        answer = json.loads(response.read())
    assert answer["served_by"] == pod["metadata"]["name"]
    assert answer["predictions"] == [len("[1, 2, 3]"), len('"x"')]

    with urllib.request.urlopen(f"http://{pod_ip}:8080/metrics", timeout=10) as response:
        metrics = response.read().decode()
    assert 'model_requests_total{model="model",code="200"} 1' in metrics

    # the apiserver reaches the kubelet (client certificate) for logs
    logs = kube_node.kubectl("logs", "-n", namespace, pod["metadata"]["name"]).stdout
    assert '"event": "listening"' in logs
