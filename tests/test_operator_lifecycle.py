"""The operator against the real local apiserver: CRD, examples, invalid input, deletion, restart, no idle writes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.plugins.cluster import REPO_ROOT, KubeCluster
from tests.plugins.operator import OperatorProcess, load_example, wait_for

pytestmark = pytest.mark.cluster

EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.yaml"))
CPU_WORKLOAD = REPO_ROOT / "examples" / "sentiment-bursty.yaml"


def _get(cluster: KubeCluster, ns: str, name: str) -> dict[str, Any] | None:
    result = cluster.kubectl("get", "iw", name, "-n", ns, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def _condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    if obj is None:
        return None
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), None)


def _apply(cluster: KubeCluster, doc: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))


def _cluster_only(path: Path, ns: str, name: str | None = None) -> dict[str, Any]:
    """An example restricted to the cluster target (the cloud targets are exercised in their own tests)."""
    doc = load_example(path, ns)
    doc["spec"]["placement"] = {"allowedTargets": ["cluster"]}
    doc["spec"].pop("accelerator", None)
    if name:
        doc["metadata"]["name"] = name
    return doc


def test_crd_installs_with_columns_and_short_name(crd_installed: KubeCluster) -> None:
    crd = crd_installed.kubectl_json("get", "crd", "inferenceworkloads.placement.inference.dev")
    assert crd["spec"]["names"]["shortNames"] == ["iw"]
    columns = [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns == ["Placement", "Phase", "RPS", "Cost/mo", "Ready", "Age"]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_applies(crd_installed: KubeCluster, namespace: str, path: Path) -> None:
    doc = load_example(path, namespace)
    _apply(crd_installed, doc)
    stored = _get(crd_installed, namespace, doc["metadata"]["name"])
    assert stored is not None and stored["spec"]["model"]["image"] == doc["spec"]["model"]["image"]


def test_schema_invalid_cr_is_rejected_with_422_naming_the_field(crd_installed: KubeCluster, namespace: str) -> None:
    from kubernetes import client, config

    api = client.CustomObjectsApi(config.new_client_from_config(config_file=crd_installed.kubeconfig))
    body = load_example(CPU_WORKLOAD, namespace)
    body["spec"]["model"]["sizeMb"] = 0
    body["spec"]["accelerator"] = {"type": "nvidia-z9"}
    with pytest.raises(client.ApiException) as caught:
        api.create_namespaced_custom_object(
            "placement.inference.dev", "v1alpha1", namespace, "inferenceworkloads", body
        )
    assert caught.value.status == 422
    message = json.loads(caught.value.body)["message"]
    assert "spec.model.sizeMb" in message and "spec.accelerator.type" in message


def test_semantically_invalid_cr_gets_invalid_spec_and_an_event_and_keeps_serving(
    crd_installed: KubeCluster, namespace: str, operator_factory: Callable[..., OperatorProcess]
) -> None:
    operator_factory(namespace)
    doc = _cluster_only(CPU_WORKLOAD, namespace, "edit-me")
    _apply(crd_installed, doc)
    placed = wait_for(
        lambda: (_get(crd_installed, namespace, "edit-me") or {}).get("status", {}).get("placement"),
        timeout=60,
        what="first placement",
    )
    assert placed == "cluster"
    deployments_before = crd_installed.kubectl_json("get", "deployments", "-n", namespace)["items"]

    # A bad edit the CRD's CEL rules see (reclaim threshold below the offload threshold): kubectl apply fails at once.
    stored = _get(crd_installed, namespace, "edit-me")
    assert stored is not None
    generation = stored["metadata"]["generation"]
    bad = json.loads(json.dumps(doc))
    bad["spec"]["placement"]["thresholds"] = {"mode": "explicit", "offloadBelowRps": 5, "reclaimAboveRps": 1}
    refused = crd_installed.kubectl("apply", "-f", "-", input=yaml.safe_dump(bad), check=False)
    assert refused.returncode != 0
    assert "spec.placement.thresholds.reclaimAboveRps" in refused.stderr, refused.stderr
    assert "must not be below offloadBelowRps" in refused.stderr, refused.stderr
    assert (_get(crd_installed, namespace, "edit-me") or {})["metadata"]["generation"] == generation

    # A bad edit only the operator sees (a negative CPU as a number passes the CRD's int-or-string quantity).
    doc["spec"]["model"]["cpu"] = -1
    _apply(crd_installed, doc)
    cond = wait_for(
        lambda: (
            (c := _condition(_get(crd_installed, namespace, "edit-me"), "InvalidSpec")) and c["status"] == "True" and c
        ),
        timeout=30,
        what="InvalidSpec=True",
    )
    assert "spec.model.cpu" in cond["message"]
    obj = _get(crd_installed, namespace, "edit-me")
    assert obj is not None
    ready = _condition(obj, "Ready")
    assert ready is not None and ready["status"] == "False"
    assert obj["status"]["phase"] == "Invalid"
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    events = crd_installed.kubectl_json("get", "events", "-n", namespace)["items"]
    assert any(e["reason"] == "InvalidSpec" and e["type"] == "Warning" for e in events)
    # Nothing that was serving stopped serving.
    assert obj["status"]["placement"] == "cluster"
    deployments_after = crd_installed.kubectl_json("get", "deployments", "-n", namespace)["items"]
    assert [d["metadata"]["uid"] for d in deployments_after] == [d["metadata"]["uid"] for d in deployments_before]

    # Fixing the spec clears the condition.
    doc["spec"]["model"]["cpu"] = "1"
    _apply(crd_installed, doc)
    wait_for(
        lambda: (c := _condition(_get(crd_installed, namespace, "edit-me"), "InvalidSpec")) and c["status"] == "False",
        timeout=30,
        what="InvalidSpec=False after the fix",
    )


def test_deleting_a_workload_completes(
    crd_installed: KubeCluster, namespace: str, operator_factory: Callable[..., OperatorProcess]
) -> None:
    operator_factory(namespace)
    doc = _cluster_only(CPU_WORKLOAD, namespace, "short-lived")
    _apply(crd_installed, doc)
    wait_for(
        lambda: (_get(crd_installed, namespace, "short-lived") or {}).get("status", {}).get("placement"),
        what="placement",
    )
    crd_installed.kubectl("delete", "iw", "short-lived", "-n", namespace, "--timeout=60s")
    assert _get(crd_installed, namespace, "short-lived") is None
    # Owned children go through owner references (garbage collector).
    wait_for(
        lambda: not crd_installed.kubectl_json("get", "deployments", "-n", namespace)["items"],
        timeout=60,
        what="Deployment garbage-collected",
    )


def test_operator_survives_a_restart_and_resumes(
    crd_installed: KubeCluster, namespace: str, operator_factory: Callable[..., OperatorProcess]
) -> None:
    op = operator_factory(namespace)
    _apply(crd_installed, _cluster_only(CPU_WORKLOAD, namespace, "resumable"))
    wait_for(
        lambda: (_get(crd_installed, namespace, "resumable") or {}).get("status", {}).get("placement"), what="placement"
    )
    op.kill()
    # While it is down, a bad edit lands (one the CRD cannot see); the restarted operator must notice it from the
    # listing alone.
    doc = _cluster_only(CPU_WORKLOAD, namespace, "resumable")
    doc["spec"]["model"]["memory"] = -2
    _apply(crd_installed, doc)
    op.start()
    cond = wait_for(
        lambda: (
            (c := _condition(_get(crd_installed, namespace, "resumable"), "InvalidSpec"))
            and c["status"] == "True"
            and c
        ),
        timeout=60,
        what="InvalidSpec after restart",
    )
    assert "spec.model.memory" in cond["message"]
    assert op.alive(), op.logs()[-3000:]


def test_finalizers_only_on_workloads_that_own_cloud_resources(
    crd_installed: KubeCluster, namespace: str, operator_factory: Callable[..., OperatorProcess]
) -> None:
    operator_factory(namespace)
    _apply(crd_installed, _cluster_only(CPU_WORKLOAD, namespace, "in-cluster-only"))
    obj = wait_for(
        lambda: (o := _get(crd_installed, namespace, "in-cluster-only")) and o.get("status", {}).get("placement") and o
    )
    assert obj["metadata"].get("finalizers", []) == []
    annotations = obj["metadata"].get("annotations", {})
    assert not any(k.startswith("kopf.zalando.org") for k in annotations), annotations


@pytest.mark.node
def test_cpu_workload_becomes_ready_because_its_pod_really_runs_and_answers(
    kube_node: KubeCluster, crd_installed: KubeCluster, namespace: str, operator_factory: Callable[..., OperatorProcess]
) -> None:
    import urllib.request

    operator_factory(namespace, "--set", "cluster.imagePullPolicy=Never")
    doc = _cluster_only(CPU_WORKLOAD, namespace, "really-runs")
    doc["spec"]["model"]["image"] = kube_node.model_server_image
    doc["spec"]["model"]["cpu"] = "100m"
    doc["spec"]["model"]["memory"] = "128Mi"
    _apply(kube_node, doc)
    wait_for(
        lambda: (c := _condition(_get(kube_node, namespace, "really-runs"), "Ready")) and c["status"] == "True",
        timeout=120,
        what="Ready=True",
    )
    deployment = kube_node.kubectl_json("get", "deployment", "really-runs-model", "-n", namespace)
    assert deployment["status"]["availableReplicas"] == 1  # written by the controller-manager from the kubelet
    pods = kube_node.kubectl_json("get", "pods", "-n", namespace, "-l", "placement.inference.dev/workload=really-runs")
    running = [p for p in pods["items"] if p["status"].get("phase") == "Running"]
    assert len(running) == 1 and running[0]["spec"]["nodeName"] == kube_node.node_name
    pod_ip = running[0]["status"]["podIP"]
    port = doc["spec"]["model"]["port"]
    with urllib.request.urlopen(f"http://{pod_ip}:{port}/healthz", timeout=10) as response:
        assert response.status == 200
    request = urllib.request.Request(f"http://{pod_ip}:{port}/predict", data=b'{"inputs": ["great"]}', method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200 and response.read()
