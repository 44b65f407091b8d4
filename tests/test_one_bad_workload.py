"""One bad workload harms nobody else (issue 18, item 8).

* a name the cluster target and the stable endpoint cannot use (``llama-3.1``): admission refuses it
  (``tests/test_crd_cel.py``); one stored before the rule gets ``InvalidSpec`` naming ``metadata.name``, and the
  workloads beside it are placed as if it were not there;
* a stable endpoint Service one namespace refuses (here a ResourceQuota of 0 Services, on the real apiserver): a
  Warning Event on that workload, and every other workload's Service is created all the same.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from inference_placement.controller.kube import make_api_client
from inference_placement.controller.router_cluster import ClusterRouterApplier
from inference_placement.routing.envoy import EnvoySettings
from inference_placement.routing.model import Route
from tests.plugins.cluster import KubeCluster
from tests.plugins.operator import wait_for


def _doc(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "placement.inference.dev/v1alpha1",
        "kind": "InferenceWorkload",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"model": {"image": "registry.example.com/m:1", "sizeMb": 100}},
    }


@pytest.fixture
def quota_namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    """A namespace that refuses every new Service (a ResourceQuota of 0 Services)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    kube_cluster.kubectl("create", "namespace", name)
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "no-services", "namespace": name},
        "spec": {"hard": {"services": "0"}},
    }
    kube_cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(quota))
    yield name
    kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.mark.cluster
def test_a_service_one_namespace_refuses_harms_no_other_workload(
    crd_installed: KubeCluster, namespace: str, quota_namespace: str
) -> None:
    cluster = crd_installed
    uids: dict[str, str] = {}
    for ns, name in ((namespace, "good"), (quota_namespace, "refused")):
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(_doc(name, ns)))
        uids[f"{ns}/{name}"] = cluster.kubectl_json("get", "iw", name, "-n", ns)["metadata"]["uid"]
    # the quota controller must have counted the namespace before it refuses anything
    wait_for(
        lambda: "services" in (cluster.kubectl_json("get", "resourcequota", "no-services", "-n", quota_namespace)
                               .get("status", {}).get("used", {})),
        timeout=30,
        what="quota counted",
    )  # fmt: skip
    routes = [Route(quota_namespace, "refused"), Route(namespace, "good")]

    async def sync_twice() -> dict[tuple[str, str], str]:
        api = await make_api_client(cluster.kubeconfig)
        try:
            applier = ClusterRouterApplier(
                api, EnvoySettings(health_port=9902), namespace="unused", image="unused", owners=uids
            )
            await applier.sync_endpoints(routes)
            await applier.sync_endpoints(routes)  # retried, but the same refusal is not announced twice
            return dict(applier.refused)
        finally:
            await api.close()

    refused = asyncio.run(sync_twice())
    assert list(refused) == [(quota_namespace, "refused")]
    assert "HTTP 403" in refused[(quota_namespace, "refused")] and "quota" in refused[(quota_namespace, "refused")]
    service = cluster.kubectl_json("get", "service", "good", "-n", namespace)
    assert service["spec"]["type"] == "ExternalName"
    events = cluster.kubectl_json("get", "events", "-n", quota_namespace, "--field-selector", "reason=EndpointRefused")
    assert len(events["items"]) == 1, json.dumps(events["items"])[:2000]
    event = events["items"][0]
    assert event["type"] == "Warning" and event["involvedObject"]["name"] == "refused"
    assert "stable endpoint Service" in event["message"] and "quota" in event["message"]
