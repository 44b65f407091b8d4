"""The in-cluster router: an Envoy Deployment the operator manages, configured by files from a ConfigMap.

``--set router.mode=cluster``. The operator owns, in ``router.namespace``:

* the ConfigMap ``inference-router`` holding ``envoy.json`` (bootstrap), ``cds.json`` and ``rds.json``, mounted into
  the router Pods at ``EnvoySettings.xds_dir``; Envoy watches that directory, so the kubelet's atomic ``..data``
  swap is picked up (the kubelet refreshes ConfigMap volumes at each Pod sync: ``syncFrequency``, 1 min by
  default);
* the router Deployment and its ClusterIP Service (``routing.manifests``);
* per workload, an ExternalName Service ``NAME`` in the workload's namespace resolving to the router Service: the
  stable endpoint ``http://NAME.NAMESPACE.svc`` (owner reference to the workload, so the garbage collector removes
  it with the workload).

RBAC (the chart's ``router.enabled``): in the router namespace configmaps, deployments and services get/create/
patch, pods list and pods/proxy get; in workload namespaces services create.

One ``apply`` is the same plan as the file applier (``plan_xds_writes``: CDS union, RDS, CDS final), one ConfigMap
write per move, and each move is confirmed on EVERY ready router Pod: its health listener's ``/stats`` (read through
the apiserver's Pod proxy, so the operator needs no network path to Pods) must report the move's version. A router
Pod that does not confirm in ``confirm_timeout_seconds`` fails the apply: migrations wait, nothing is retired.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.rest import ApiException

from inference_placement.api.workload import API_VERSION, KIND
from inference_placement.controller.kube import KubeWriter
from inference_placement.routing.envoy import (
    CDS_FILE,
    RDS_FILE,
    STATS_PATH,
    EnvoySettings,
    JsonDict,
    render_cds,
    render_rds,
)
from inference_placement.routing.manifests import (
    ACTIVATOR_METRICS_PORT,
    ROUTER_NAME,
    render_configmap,
    render_router_deployment,
    render_router_service,
    render_workload_service,
)
from inference_placement.routing.model import Route
from inference_placement.routing.traffic_stats import TRAFFIC_STATS_QUERY
from inference_placement.routing.xds_files import (
    XdsKind,
    XdsTimeoutError,
    parse_stats,
    plan_xds_writes,
    stats_query,
)

__all__ = ["ClusterRouterApplier"]

log = logging.getLogger(__name__)


class ClusterRouterApplier:
    def __init__(
        self,
        api: k8s.ApiClient,
        settings: EnvoySettings,
        *,
        namespace: str,
        image: str,
        replicas: int = 2,
        image_pull_policy: str | None = None,
        confirm_timeout_seconds: float = 180.0,
        poll_seconds: float = 1.0,
        owners: Mapping[str, str] | None = None,
        activator_image: str | None = None,
        service_account: str | None = None,
        automount_token: bool = False,
        owner_config_map: str | None = None,
    ) -> None:
        if settings.health_port is None:
            raise ValueError("the in-cluster router needs a health listener (EnvoySettings.health_port)")
        self.api = api
        self.core = k8s.CoreV1Api(api)
        self.apps = k8s.AppsV1Api(api)
        self.settings = settings
        self.namespace = namespace
        self.image = image
        self.replicas = replicas
        self.image_pull_policy = image_pull_policy
        self.confirm_timeout_seconds = confirm_timeout_seconds
        self.poll_seconds = poll_seconds
        self.service_account = service_account
        """The router Pods' ServiceAccount (None: the namespace's default); its token is mounted only with
        ``automount_token``."""
        self.automount_token = automount_token
        self.owner_config_map = owner_config_map
        """A ConfigMap in ``namespace`` owning the router's Deployment, Service and ConfigMap (the chart's own: they
        are garbage-collected with the release); None: no owner."""
        self.activator_image = activator_image
        """The activator's image (a second container in the router Pod; needs ``settings.activator_port``)."""
        if activator_image is not None and settings.activator_port is None:
            raise ValueError("the router's activator needs EnvoySettings.activator_port (where Envoy reaches it)")
        self.owners: dict[str, str] = dict(owners or {})
        """``namespace/name`` -> workload uid, for the owner reference of its stable Service."""
        self._router_ready = False
        self._services: set[tuple[str, str]] = set()
        self.pods_cache_seconds = 10.0
        """How long the list of router Pods whose activators are read for wake-ups is reused."""
        self._activator_pods: tuple[float, list[str]] | None = None
        self.refused: dict[tuple[str, str], str] = {}
        """(namespace, name) -> why its stable Service was refused (retried at every apply until it is created)."""
        self._events: KubeWriter | None = None

    # ------------------------------------------------------------------ the router itself

    async def _owner_references(self) -> list[JsonDict]:
        """The owner reference to ``owner_config_map`` (read for its uid), or none."""
        if self.owner_config_map is None:
            return []
        owner = await self.core.read_namespaced_config_map(self.owner_config_map, self.namespace)
        return [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "name": self.owner_config_map,
                "uid": owner.metadata.uid,
                "blockOwnerDeletion": False,
                "controller": False,
            }
        ]

    async def ensure_router(self) -> None:
        """Create what is missing and keep the Deployment and Service as rendered; never rewrite the routes. With
        ``owner_config_map`` each of the three carries an owner reference to it."""
        owners = await self._owner_references()
        configmap: Any = render_configmap([], self.settings, namespace=self.namespace)
        if owners:
            configmap["metadata"]["ownerReferences"] = owners
        try:
            await self.core.read_namespaced_config_map(ROUTER_NAME, self.namespace)
        except ApiException as err:
            if err.status != 404:
                raise
            await self.core.create_namespaced_config_map(self.namespace, configmap)
        else:
            # the bootstrap may change with a new operator version; the routes stay as they are
            bootstrap = {k: v for k, v in configmap["data"].items() if k not in (CDS_FILE, RDS_FILE)}
            patch: JsonDict = {"data": bootstrap}
            if owners:
                patch["metadata"] = {"ownerReferences": owners}
            await self.core.patch_namespaced_config_map(ROUTER_NAME, self.namespace, patch)
        deployment: Any = self.render_deployment()
        if owners:
            deployment["metadata"]["ownerReferences"] = owners
        await _create_or_patch(
            lambda: self.apps.read_namespaced_deployment(ROUTER_NAME, self.namespace),
            lambda: self.apps.create_namespaced_deployment(self.namespace, deployment),
            lambda: self.apps.patch_namespaced_deployment(ROUTER_NAME, self.namespace, deployment),
        )
        service: Any = render_router_service(self.settings, namespace=self.namespace)
        if owners:
            service["metadata"]["ownerReferences"] = owners
        await _create_or_patch(
            lambda: self.core.read_namespaced_service(ROUTER_NAME, self.namespace),
            lambda: self.core.create_namespaced_service(self.namespace, service),
            lambda: self.core.patch_namespaced_service(ROUTER_NAME, self.namespace, service),
        )
        self._router_ready = True

    def render_deployment(self) -> JsonDict:
        """The router Deployment as ``ensure_router`` keeps it: Envoy (its bootstrap with the overflow listener when
        ``settings.overflow_port`` is set), plus the activator container when ``activator_image`` is set; the pull
        policy on every container."""
        deployment = render_router_deployment(
            self.settings,
            image=self.image,
            namespace=self.namespace,
            replicas=self.replicas,
            activator_image=self.activator_image,
            service_account=self.service_account,
            automount_service_account_token=self.automount_token,
        )
        if self.image_pull_policy:
            for container in deployment["spec"]["template"]["spec"]["containers"]:
                container["imagePullPolicy"] = self.image_pull_policy
        return deployment

    # ------------------------------------------------------------------ RouteApplier

    async def apply(self, routes: Sequence[Route]) -> list[tuple[XdsKind, str]]:
        if not self._router_ready:
            await self.ensure_router()
        configmap = await self.core.read_namespaced_config_map(ROUTER_NAME, self.namespace)
        data = configmap.data or {}
        current_cds, current_rds = _document(data.get(CDS_FILE)), _document(data.get(RDS_FILE))
        desired_cds, desired_rds = render_cds(routes, self.settings), render_rds(routes, self.settings)
        moves: list[tuple[XdsKind, str]] = []
        for move in plan_xds_writes(current_cds, current_rds, desired_cds, desired_rds):
            file_name = CDS_FILE if move.kind is XdsKind.CDS else RDS_FILE
            body = {"data": {file_name: json.dumps(move.document, indent=1) + "\n"}}
            await self.core.patch_namespaced_config_map(ROUTER_NAME, self.namespace, body)
            await self._confirm(move.kind, move.version)
            moves.append((move.kind, move.version))
        await self.sync_endpoints(routes)
        return moves

    async def _confirm(self, kind: XdsKind, version: str) -> None:
        """Until every ready router Pod reports ``version`` for ``kind`` (and no warming cluster, for CDS)."""
        started = time.monotonic()
        lagging: list[str] = []
        while True:
            pods = await self.core.list_namespaced_pod(
                self.namespace, label_selector=f"app.kubernetes.io/name={ROUTER_NAME}"
            )
            ready = [p.metadata.name for p in pods.items if _ready(p)]
            lagging = []
            for pod in ready:
                stats = await self._pod_stats(pod)
                prefix = "cds" if kind is XdsKind.CDS else "rds"
                warming = int(stats.get("cds.warming_clusters", 0) or 0) if kind is XdsKind.CDS else 0
                if str(stats.get(f"{prefix}.version_text", "")) != version or warming:
                    lagging.append(pod)
            if ready and not lagging:
                return
            if time.monotonic() - started > self.confirm_timeout_seconds:
                who = ", ".join(lagging) if ready else "no ready router Pod"
                raise XdsTimeoutError(
                    f"router {self.namespace}/{ROUTER_NAME}: {kind.value.upper()} version {version} not confirmed "
                    f"within {self.confirm_timeout_seconds:.0f}s ({who})"
                )
            await asyncio.sleep(self.poll_seconds)

    async def _pod_stats(self, pod: str) -> dict[str, Any]:
        path = f"/api/v1/namespaces/{self.namespace}/pods/{pod}:{self.settings.health_port}/proxy/stats"
        query = [(k, v) for k, v in parse_qsl(stats_query(self.settings))]
        try:
            response = await self.api.call_api(
                path,
                "GET",
                query_params=query,
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
                _preload_content=False,
                _return_http_data_only=True,
                _request_timeout=10,
            )
            async with response:
                payload: Any = json.loads(await response.read())
        except (ApiException, ValueError, OSError, TimeoutError) as err:
            log.debug("stats of router pod %s unavailable: %s", pod, err)
            return {}
        return parse_stats(payload, self.settings)

    async def traffic_stats(self, query: str = TRAFFIC_STATS_QUERY) -> list[Any]:
        """Every ready router Pod's per-target traffic counters (``routing.traffic_stats``; ``query``: which ones,
        e.g. ``FIRST_REQUEST_STATS_QUERY``), read through the
        apiserver's Pod proxy from its health listener: one LIST and one GET per router replica. Raises when a
        ready Pod cannot be read (a sum without it would read as fewer requests)."""
        pods = await self.core.list_namespaced_pod(
            self.namespace, label_selector=f"app.kubernetes.io/name={ROUTER_NAME}"
        )
        payloads: list[Any] = []
        for pod in [p.metadata.name for p in pods.items if _ready(p)]:
            path = f"/api/v1/namespaces/{self.namespace}/pods/{pod}:{self.settings.health_port}/proxy/stats"
            response = await self.api.call_api(
                path,
                "GET",
                query_params=list(parse_qsl(query)),
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
                _preload_content=False,
                _return_http_data_only=True,
                _request_timeout=10,
            )
            async with response:
                payloads.append(json.loads(await response.read()))
        return payloads

    async def activator_metrics(self, stats_filter: str | None = None) -> list[str]:
        """The ``/metrics`` of the activator in every ready router Pod, and, given ``stats_filter``
        (``wake.router_stats_filter``), its Envoy's serverless counters on the scrape port, through the apiserver's
        Pod proxy (the operator needs no network path to the Pods): one LIST (cached ``pods_cache_seconds``) and
        one or two GETs per router replica, whatever the fleet's size. Raises when a ready Pod's activator or
        stats cannot be read."""
        now = time.monotonic()
        if self._activator_pods is None or now - self._activator_pods[0] > self.pods_cache_seconds:
            pods = await self.core.list_namespaced_pod(
                self.namespace, label_selector=f"app.kubernetes.io/name={ROUTER_NAME}"
            )
            self._activator_pods = (now, [p.metadata.name for p in pods.items if _ready(p)])
        texts: list[str] = []
        for pod in self._activator_pods[1]:
            base = f"/api/v1/namespaces/{self.namespace}/pods/{pod}"
            reads: list[tuple[str, str, list[tuple[str, str]]]] = [
                ("activator", f"{base}:{ACTIVATOR_METRICS_PORT}/proxy/metrics", [])
            ]
            if self.settings.stats_port is not None and stats_filter is not None:
                # its Envoy's serverless counters of the workloads at zero a serverless target answers (requests
                # that fell through wake them too: ``wake.router_stats_filter``)
                stats = f"{base}:{self.settings.stats_port}/proxy{STATS_PATH}"
                reads.append(("stats", stats, [("filter", stats_filter)]))
            for what, path, query in reads:
                try:
                    response = await self.api.call_api(
                        path,
                        "GET",
                        query_params=query,
                        auth_settings=["BearerToken"],
                        _preload_content=False,
                        _return_http_data_only=True,
                        _request_timeout=5,
                    )
                    async with response:
                        body = (await response.read()).decode("utf-8", errors="replace")
                        if response.status >= 400:  # unread content is not raised: the proxy's error Status
                            raise OSError(f"{what} of router pod {pod}: HTTP {response.status}: {body[:200]}")
                        texts.append(body)
                except ApiException as err:
                    self._activator_pods = None  # a Pod went away: list again next poll
                    raise OSError(f"{what} of router pod {pod}: HTTP {err.status}") from err
        return texts

    # ------------------------------------------------------------------ the stable endpoints

    async def sync_endpoints(self, routes: Sequence[Route]) -> None:
        """One stable Service per workload, created once per operator run (409: it exists). It carries an owner
        reference to its workload, so the garbage collector removes it with the workload: no list, no delete.

        A Service one namespace refuses (a quota, a policy, RBAC scoped away, a name the API will not take) is that
        workload's problem alone: a Warning Event on it (once per refusal text), a log line, and a retry at the
        next apply; the router's routes and every other workload's Service are applied all the same."""
        for route in routes:
            key = (route.namespace, route.name)
            if key in self._services:
                continue
            endpoint: Any = render_workload_service(route, self.settings, router_namespace=self.namespace)
            uid = self.owners.get(f"{route.namespace}/{route.name}")
            if not uid:
                continue  # not seen with its uid yet: next apply
            endpoint["metadata"]["ownerReferences"] = [
                {"apiVersion": API_VERSION, "kind": KIND, "name": route.name, "uid": uid, "controller": True}
            ]
            try:
                await self.core.create_namespaced_service(route.namespace, endpoint)
            except ApiException as err:
                if err.status != 409:
                    await self._endpoint_refused(route, uid, err)
                    continue
            self._services.add(key)
            self.refused.pop(key, None)
        self._services &= {(r.namespace, r.name) for r in routes}
        self.refused = {k: v for k, v in self.refused.items() if k in {(r.namespace, r.name) for r in routes}}

    async def _endpoint_refused(self, route: Route, uid: str, err: ApiException) -> None:
        status = err.status if isinstance(err.status, int) else 0
        try:
            detail = str(json.loads(err.body).get("message", "")) if err.body else str(err.reason or "")
        except (ValueError, AttributeError):
            detail = str(err.reason or "")
        message = f"stable endpoint Service {route.namespace}/{route.name} refused: HTTP {status}: {detail}"[:1000]
        key = (route.namespace, route.name)
        if self.refused.get(key) == message:
            return
        self.refused[key] = message
        log.warning("%s (the other workloads' routes are applied)", message)
        if self._events is None:
            self._events = KubeWriter(self.api, concurrency=4)
        await self._events.post_event(
            namespace=route.namespace, name=route.name, uid=uid, reason="EndpointRefused", message=message, warning=True
        )


def _document(text: str | None) -> JsonDict | None:
    if not text:
        return None
    try:
        document: JsonDict = json.loads(text)
    except ValueError:
        return None
    return document


def _ready(pod: Any) -> bool:
    if pod.metadata.deletion_timestamp is not None or pod.status is None:
        return False
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


async def _create_or_patch(read: Any, create: Any, patch: Any) -> None:
    try:
        await read()
    except ApiException as err:
        if err.status != 404:
            raise
        await create()
        return
    await patch()
