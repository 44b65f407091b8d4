"""The router's Deployment, Service and ConfigMap belong to the release: the operator creates them (it renders the
Envoy bootstrap and keeps the routes), with an owner reference to the chart's own ConfigMap
(``router.ownerConfigMap``), so ``helm uninstall`` deleting that ConfigMap has the real cluster's garbage collector
delete the router too. On the shared local cluster, in a fresh namespace, with no router Pod started (0 replicas)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from inference_placement.controller.kube import make_api_client
from inference_placement.controller.router_cluster import ClusterRouterApplier
from inference_placement.routing.envoy import EnvoySettings
from inference_placement.routing.manifests import ROUTER_NAME
from tests.plugins.cluster import KubeCluster
from tests.plugins.operator import wait_for
from tests.test_chart import container, render_chart

KINDS = ("deployment", "service", "configmap")


def test_the_chart_names_its_own_configmap_as_the_routers_owner() -> None:
    manifests = render_chart(values=["router.enabled=true"])
    configmap = next(m for m in manifests if m["kind"] == "ConfigMap")
    assert f"--set=router.ownerConfigMap={configmap['metadata']['name']}" in container(manifests)["args"]
    assert not any(a.startswith("--set=router.ownerConfigMap") for a in container(render_chart())["args"])


@pytest.mark.cluster
def test_the_router_is_garbage_collected_with_the_releases_configmap(kube_cluster: KubeCluster, namespace: str) -> None:
    kube_cluster.kubectl("create", "configmap", "release-config", "-n", namespace, "--from-literal=promql.yaml={}")
    owner_uid = kube_cluster.kubectl_json("get", "configmap", "release-config", "-n", namespace)["metadata"]["uid"]

    async def ensure_twice() -> None:
        api = await make_api_client(kube_cluster.kubeconfig)
        try:
            applier = ClusterRouterApplier(
                api,
                EnvoySettings(health_port=9902),
                namespace=namespace,
                image="unused",
                replicas=0,
                owner_config_map="release-config",
            )
            await applier.ensure_router()
            await applier.ensure_router()  # the update path keeps one owner reference, not two
        finally:
            await api.close()

    asyncio.run(ensure_twice())
    for kind in KINDS:
        owners: list[dict[str, Any]] = kube_cluster.kubectl_json("get", kind, ROUTER_NAME, "-n", namespace)[
            "metadata"
        ].get("ownerReferences", [])
        assert [(o["kind"], o["name"], o["uid"]) for o in owners] == [("ConfigMap", "release-config", owner_uid)], kind

    kube_cluster.kubectl("delete", "configmap", "release-config", "-n", namespace)

    def gone() -> bool:
        listed = kube_cluster.kubectl(
            "get", ",".join(KINDS), "-n", namespace, "--field-selector", f"metadata.name={ROUTER_NAME}", "-o", "name"
        )
        return not listed.stdout.strip()

    wait_for(gone, timeout=90, what="the garbage collector deleting the router with its owner")
