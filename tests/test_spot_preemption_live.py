"""A spot pre-emption on the local cluster's real node, under load through the real Envoy (issue 17, item 6).

The cluster target renders a spot workload (``spec.cluster.spot``, the capacity type the policy chose: spot, GKE's
labels): two model-server replicas really run on the node (it carries no spot label, so the soft preference for
spot lets them run there, as on a cluster whose spot pool is empty). The router (Envoy, files mode, on loopback)
reaches them by pod IP from their Service's EndpointSlices (``controller.pod_endpoints.ready_addresses``, the
operator's own reading) with burst spillover in force: the composite route with a serverless overflow (a
``model_server.py`` standing in for Cloud Run). Then the pre-emption: both replicas are evicted through the
eviction API (what a drain does at the cloud's notice; only this test's Pods, never the shared node). Every request
is answered: by the replicas, by the overflow while none is ready, then by the replacements the ReplicaSet starts.
Without the spill route the same pre-emption fails the requests that arrive while no replica is ready, which is
why ``policy/spot.py`` counts spillover as cover only while a spill is in force.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient, CoreV1Api, DiscoveryV1Api

from inference_placement.controller.pod_endpoints import SERVICE_NAME_LABEL, ready_addresses
from inference_placement.routing.model import Overflow, UpstreamAddress
from inference_placement.routing.xds_files import EnvoyXdsApplier
from inference_placement.targets.base import DesiredTarget
from inference_placement.targets.cluster import ClusterTarget
from tests.plugins.cluster import KubeCluster
from tests.plugins.envoy import EnvoyRouter
from tests.plugins.http_load import HttpLoad
from tests.test_coexist_autoscalers import NoGPUs
from tests.test_routing_spill import HOST, Processes, R, _cloudrun, _route, envoy_router, processes
from tests.test_target_cluster import client_for, create_workload, delete_workload, eventually, workload_manifest

__all__ = ["envoy_router", "processes"]  # the fixtures this module borrows

pytestmark = [pytest.mark.cluster, pytest.mark.node]

NAME = "spot"


@pytest.fixture
async def api(kube_node: KubeCluster) -> AsyncIterator[ApiClient]:
    client = await client_for(kube_node)
    yield client
    await client.close()


@pytest.fixture
async def namespace(api: ApiClient, crd_installed: KubeCluster) -> AsyncIterator[str]:
    name = f"ipspotlive-{uuid.uuid4().hex[:8]}"
    body: Any = {"metadata": {"name": name}}
    await CoreV1Api(api).create_namespace(body)
    yield name
    await CoreV1Api(api).delete_namespace(name, grace_period_seconds=0)


async def pod_addresses(api: ApiClient, namespace: str) -> tuple[UpstreamAddress, ...]:
    """The ready addresses of the workload's Service, as the operator reads them for the router."""
    list_slices: Any = DiscoveryV1Api(api).list_namespaced_endpoint_slice  # raw answer, not a V1EndpointSliceList
    slices = await list_slices(namespace, label_selector=f"{SERVICE_NAME_LABEL}={NAME}-model", _preload_content=False)
    body = json.loads(await slices.read())
    found: set[UpstreamAddress] = set()
    for item in body.get("items") or []:
        found.update(ready_addresses(item, "http"))
    return tuple(sorted(found, key=lambda a: (a.host, a.port)))


@pytest.mark.parametrize("spilling", [True, False], ids=["spill-in-force", "no-spill-route"])
async def test_a_preempted_spot_workload_fails_no_request_only_while_a_spill_covers_it(
    spilling: bool,
    api: ApiClient,
    namespace: str,
    kube_node: KubeCluster,
    envoy_router: EnvoyRouter,
    processes: Processes,
) -> None:
    serverless = processes.model_server("cloudrun")
    overflow = Overflow(R, _cloudrun(serverless.address)) if spilling else None
    model = {"image": kube_node.model_server_image, "port": 8080, "healthPath": "/healthz", "cpu": "50m"}
    model["memory"] = "64Mi"
    # a replacement is Ready only after its model "loads" (3 s), as a real one is: the gap between the eviction and
    # the replacements is then certain, not a race with a replacement Ready in 1 s (a CI run where no request met it)
    model["env"] = [{"name": "STARTUP_SECONDS", "value": "3"}]
    manifest = workload_manifest(
        NAME,
        namespace,
        model=model,
        cluster={"spot": True},
        scaling={"minReplicas": 0, "maxReplicas": 2},
    )
    workload = await create_workload(api, manifest)
    target = ClusterTarget(api, NoGPUs(), image_pull_policy="Never", spot_node_labels="gke")
    desired = DesiredTarget(replicas=2, spot=True)

    async def two_ready() -> bool:
        return (await target.ensure(workload, desired)).ready and len(await pod_addresses(api, namespace)) == 2

    await eventually(two_ready, timeout=120, what="2 model-server replicas Ready", interval=0.5)
    settings = replace(envoy_router.settings, route_timeout_seconds=60.0)
    applier = EnvoyXdsApplier(envoy_router.xds_dir, envoy_router.admin_url, settings, timeout_seconds=60.0)
    applied: list[tuple[UpstreamAddress, ...]] = []

    async def follow_endpoints() -> None:
        """The router following the Service's ready endpoints, as the operator's router sync does."""
        while True:
            pods = await pod_addresses(api, namespace)
            if not applied or applied[-1] != pods:
                await applier.apply([_route(pods, overflow=overflow)])
                applied.append(pods)
            await asyncio.sleep(0.2)

    follower = asyncio.create_task(follow_endpoints())
    load: HttpLoad | None = None
    replaced_seconds = float("nan")
    try:

        async def route_applied() -> bool:
            return bool(applied)

        await eventually(route_applied, timeout=30, what="the spill route applied")
        original = {a.host for a in applied[-1]}
        running = HttpLoad(envoy_router.listen_port, 8, "/predict?sleep=0.1", host=HOST)
        load = running

        async def answered(count: int) -> bool:
            return running.answered() >= count

        await eventually(lambda: answered(40), timeout=60, what="40 answers")

        # the pre-emption: the drain at the cloud's notice evicts both replicas (graceful: preStop, then SIGTERM)
        core = CoreV1Api(api)
        pods = await core.list_namespaced_pod(namespace, label_selector=f"placement.inference.dev/workload={NAME}")
        for pod in pods.items:
            meta = {"name": pod.metadata.name, "namespace": namespace}
            eviction: Any = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": meta}
            await core.create_namespaced_pod_eviction(pod.metadata.name, namespace, eviction)
        evicted_at = time.monotonic()

        async def replaced() -> bool:
            current = {a.host for a in await pod_addresses(api, namespace)}
            return len(current) == 2 and not current & original

        await eventually(replaced, timeout=120, what="two replacement replicas Ready", interval=0.5)
        replaced_seconds = time.monotonic() - evicted_at
        served_before = running.answered()
        await eventually(lambda: answered(served_before + 40), timeout=60, what="40 more answers")
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
        outcomes = load.stop() if load is not None else Counter()
        await delete_workload(api, workload)
    failed = {o: n for o, n in outcomes.items() if o == "?" or " " in o or o.endswith("Error") or o[0].isdigit()}
    print(f"replacements Ready {replaced_seconds:.1f}s after the eviction; outcomes {dict(outcomes)}")
    assert sum(n for o, n in outcomes.items() if o.startswith(f"{NAME}-model-")) > 0, outcomes
    # the route went to no pod at all and back
    assert () in applied, applied
    if spilling:
        assert not failed, outcomes
        assert outcomes["cloudrun"] > 0, outcomes  # the composite fell through to the overflow meanwhile
    else:
        # nothing covers the gap: what arrives while no replica is ready fails (what the policy counts as misses)
        assert failed and outcomes["cloudrun"] == 0, outcomes
