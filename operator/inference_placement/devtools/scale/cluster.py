"""The benchmark's own objects on the apiserver: a namespace of N InferenceWorkloads, created fast and removed.

Creates go out concurrently through one async client (bounded, so the apiserver shared with others is loaded but
not flooded). Statuses are read by paginated lists and a watch, raw JSON, no model round trip.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.rest import ApiException

from inference_placement.api.workload import GROUP, KIND, PLURAL, VERSION

__all__ = ["BenchCluster", "GPU_MIX", "workload_body", "CRD_NAME"]

CRD_NAME = f"{PLURAL}.{GROUP}"
_PAGE = 500


GPU_MIX: tuple[dict[str, Any], ...] = (
    {"type": "nvidia-l4", "sharing": "time-slicing", "timeSlicingReplicas": 8},
    {"type": "nvidia-a100-80gb", "sharing": "mig", "migProfile": "1g.10gb"},
    {"type": "nvidia-t4", "sharing": "time-slicing", "timeSlicingReplicas": 8},
    {"type": "nvidia-h100-80gb", "sharing": "exclusive", "count": 1},
)
"""Workload ``i`` on a KWOK GPU fleet needs ``GPU_MIX[i % 4]``: a time-sliced L4 share, a MIG 1g.10gb slice of an
A100, a renamed time-sliced T4 share (``nvidia.com/gpu.shared``), a whole H100 (``devtools/kwok.py``'s pools)."""


def workload_body(namespace: str, name: str, accelerator: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A small model allowed only on the cluster: CPU-only, or on a GPU (``accelerator``, a KWOK fleet's)."""
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "bench-scale"}},
        "spec": {
            "model": {
                "image": "localhost/inference-placement/model-server:dev",
                "sizeMb": 100,
                "cpu": "10m",
                "memory": "32Mi",
                "serviceSeconds": 0.05,
            },
            "slo": {"latencyP99Seconds": 1.0, "attainment": 0.99},
            "placement": {"allowedTargets": ["cluster"]},
            "scaling": {"minReplicas": 1, "maxReplicas": 8, "targetConcurrency": 4},
        },
    }
    if accelerator is not None:
        body["spec"]["accelerator"] = dict(accelerator)
    return body


class BenchCluster:
    def __init__(self, api: k8s.ApiClient) -> None:
        self.api = api
        self.custom = k8s.CustomObjectsApi(api)
        self.core = k8s.CoreV1Api(api)

    @classmethod
    async def connect(cls, kubeconfig: str | None) -> BenchCluster:
        configuration = k8s.Configuration()
        await k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        configuration.connection_pool_maxsize = 64
        return cls(k8s.ApiClient(configuration))

    async def close(self) -> None:
        await self.api.close()

    async def crd_established(self) -> bool:
        ext = k8s.ApiextensionsV1Api(self.api)
        try:
            response: Any = await ext.read_custom_resource_definition(CRD_NAME, _preload_content=False)
        except ApiException as err:
            if err.status == 404:
                return False
            raise
        body = json.loads(await response.read())
        if not isinstance(body, dict) or body.get("kind") == "Status":  # an error answered as a Status (e.g. 404)
            return False
        status = body.get("status")
        conditions = (status.get("conditions") if isinstance(status, dict) else None) or []
        return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)

    async def ready_nodes(self) -> int:
        """Nodes whose Ready condition is True (the operator's capacity check places nothing on a cluster without)."""
        nodes = await self.core.list_node()
        return sum(
            any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))
            for node in nodes.items
        )

    async def running_pods(self, namespace: str) -> tuple[int, int]:
        """Pods of the namespace that are Running and Ready, and on how many distinct nodes (paginated raw list)."""
        running = 0
        nodes: set[str] = set()
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": _PAGE}
            if token:
                kwargs["_continue"] = token
            response: Any = await self.core.list_namespaced_pod(namespace, _preload_content=False, **kwargs)
            page = json.loads(await response.read())
            for pod in page.get("items") or []:
                status = pod.get("status") or {}
                ready = any(
                    c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
                )
                if status.get("phase") == "Running" and ready:
                    running += 1
                    nodes.add(str((pod.get("spec") or {}).get("nodeName")))
            token = (page.get("metadata") or {}).get("continue") or None
            if not token:
                return running, len(nodes)

    async def remove_pods(self, namespace: str) -> None:
        """Deployments, ReplicaSets, then Pods (at once, grace 0) of the namespace: a KWOK fleet may be deleted next,
        and kwok finishes a Pod's deletion only while its Node exists."""
        apps = k8s.AppsV1Api(self.api)
        await apps.delete_collection_namespaced_deployment(namespace, _preload_content=False)
        await apps.delete_collection_namespaced_replica_set(namespace, _preload_content=False)
        await self.core.delete_collection_namespaced_pod(namespace, grace_period_seconds=0, _preload_content=False)

    async def create_namespace(self, name: str) -> None:
        await self.core.create_namespace(
            k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name, labels={"app.kubernetes.io/part-of": "bench-scale"}))
        )

    async def delete_namespace(self, name: str, *, wait_seconds: float = 0.0) -> bool:
        """Delete the namespace (and so every workload in it); True once it is gone (or ``wait_seconds`` is 0)."""
        try:
            await self.core.delete_namespace(name)
        except ApiException as err:
            if err.status != 404:
                raise
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline:
            try:
                await self.core.read_namespace(name)
            except ApiException as err:
                if err.status == 404:
                    return True
                raise
            await asyncio.sleep(2)
        return wait_seconds == 0

    async def create_workloads(
        self, namespace: str, names: list[str], *, concurrency: int = 32, gpus: bool = False
    ) -> None:
        """Create the workloads; with ``gpus`` workload ``i`` needs ``GPU_MIX[i % len(GPU_MIX)]``."""
        slots = asyncio.Semaphore(concurrency)

        async def one(i: int, name: str) -> None:
            async with slots:
                for attempt in range(5):
                    try:
                        response = await self.custom.create_namespaced_custom_object(
                            GROUP,
                            VERSION,
                            namespace,
                            PLURAL,
                            workload_body(namespace, name, GPU_MIX[i % len(GPU_MIX)] if gpus else None),
                            _preload_content=False,
                        )
                        response.release()
                        return
                    except ApiException as err:
                        if err.status == 409:
                            return
                        if err.status in (429, 500, 503, 504) and attempt < 4:
                            await asyncio.sleep(0.5 * (attempt + 1))
                            continue
                        raise

        await asyncio.gather(*(one(i, n) for i, n in enumerate(names)))

    async def list_workloads(self, namespace: str) -> tuple[list[dict[str, Any]], str]:
        """Every workload in the namespace (paginated) and the list's resourceVersion."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        resource_version = ""
        while True:
            kwargs: dict[str, Any] = {"limit": _PAGE}
            if token:
                kwargs["_continue"] = token
            response = await self.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, _preload_content=False, **kwargs
            )
            page = json.loads(await response.read())
            # only this namespace's objects, whatever a continued list returns
            items.extend(o for o in page.get("items") or [] if (o.get("metadata") or {}).get("namespace") == namespace)
            meta = page.get("metadata") or {}
            resource_version = str(meta.get("resourceVersion", resource_version))
            token = meta.get("continue") or None
            if not token:
                return items, resource_version

    async def watch_until(
        self,
        namespace: str,
        resource_version: str,
        done: Callable[[Mapping[str, Any]], bool],
        pending: set[str],
        *,
        timeout: float,
    ) -> float | None:
        """Watch from ``resource_version`` until every name in ``pending`` satisfied ``done`` (removed from the set);
        returns the monotonic time the last one did, or None on timeout (``pending`` then holds the rest)."""
        deadline = time.monotonic() + timeout
        rv = resource_version
        finished: float | None = None
        while pending and time.monotonic() < deadline:
            left = max(1, int(deadline - time.monotonic()))
            try:
                response = await self.custom.list_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                    watch=True,
                    resource_version=rv,
                    allow_watch_bookmarks=True,
                    timeout_seconds=min(left, 300),
                    _preload_content=False,
                    _request_timeout=min(left, 300) + 30,
                )
                async with response:
                    async for line in response.content:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        obj = event.get("object") or {}
                        if event.get("type") == "ERROR":
                            rv = ""  # expired: a fresh watch from now (the caller's list already checked older state)
                            break
                        rv = str((obj.get("metadata") or {}).get("resourceVersion", rv))
                        name = (obj.get("metadata") or {}).get("name")
                        if event.get("type") in ("ADDED", "MODIFIED") and name in pending and done(obj):
                            pending.discard(name)
                            if not pending:
                                finished = time.monotonic()
                                break
                        if time.monotonic() >= deadline:
                            break
            except (TimeoutError, ApiException, aiohttp.ClientError):
                await asyncio.sleep(1)  # the watch broke: resume from the last resourceVersion seen
                continue
        return finished
