"""Envoy configuration for the router, rendered as plain data (dicts ready for ``json.dumps``). No I/O here.

One router serves every workload. Shape:

* one listener (``EnvoySettings.listen_port``) whose HTTP connection manager takes its routes from a file-based RDS
  resource (``rds.json``); clusters come from a file-based CDS resource (``cds.json``); both files live in
  ``EnvoySettings.xds_dir`` and are watched through ``watched_directory`` (so an atomic rename, or a ConfigMap's
  ``..data`` symlink swap, is picked up);
* one virtual host per workload, matched by **Host header**: ``NAME.NAMESPACE``, ``NAME.NAMESPACE.svc`` and
  ``NAME.NAMESPACE.svc.CLUSTER_DOMAIN`` (any port: ``strip_any_host_port``). The stable endpoint a client calls is
  ``http://NAME.NAMESPACE.svc`` (a per-workload Service that resolves to the router). The bare ``NAME`` is not
  routed: two namespaces may hold workloads of the same name and Envoy rejects a route table with a duplicate
  domain. Host routing keeps client paths untouched (no prefix to strip) and needs no client change when the
  workload moves. Unknown hosts get a 404 that says so;
* one route per workload with ``weighted_clusters``: a migration step changes only the weights;
* one Envoy cluster per (workload, target): plain HTTP to the model Service; TLS + Host rewrite + a ``gcp_authn``
  ID token (audience in the cluster's typed metadata) to Cloud Run; the ``aws_lambda`` filter (SigV4, Host rewritten
  to ``lambda.REGION.amazonaws.com`` for signing) to Lambda. The Lambda filter runs as an *upstream* HTTP filter of
  the Lambda cluster itself, so each function's ARN travels with its own cluster (no listener-wide ARN, no per-route
  config that would not inherit credentials or ``host_rewrite``); the cluster still carries
  ``com.amazonaws.lambda.egress_gateway: true``, without which the filter does nothing;
* admin on loopback only; an optional health listener proxies just ``GET /ready`` and ``GET /stats`` (exact paths)
  to it so probes and the operator can read readiness and applied versions without exposing the admin API;
* the scrape port (``EnvoySettings.stats_port``): a listener whose only route sends exactly ``GET /stats/prometheus``
  to the admin and answers every other path with a 404, so Prometheus reads the router's own stats and nothing else;
* ``stats_config`` (``render_stats_config``): tag extractors turn the cluster name ``ip|NAMESPACE|NAME|TARGET`` into
  the labels ``namespace``, ``workload`` and ``target`` on every cluster stat, so any Prometheus gets per-workload,
  per-target series without relabeling (``envoy_cluster_upstream_rq_total{namespace=..,workload=..,target=..}``),
  and the request-time histogram ``upstream_rq_time`` (milliseconds) gets ``EnvoySettings.latency_buckets_ms``, a
  ladder with a bound at or just under every common latency objective (the SLO-miss share reads the largest bound
  at or under the objective, ``metrics/slo_buckets.py``).

``render_static_config`` composes the same listener, routes and clusters into one static bootstrap: validating a
bootstrap that points at xDS files checks nothing inside those files, so that is what ``envoy --mode validate``
is given.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from inference_placement.api.spec import TargetName
from inference_placement.routing.model import (
    CLUSTER_DOMAIN,
    Backend,
    CloudRunUpstream,
    Route,
    ServiceUpstream,
    Upstream,
    UpstreamAddress,
)

__all__ = [
    "ADMIN_CLUSTER",
    "CDS_FILE",
    "DEFAULT_LATENCY_BUCKETS_MS",
    "STATS_PATH",
    "TAG_NAMESPACE",
    "TAG_TARGET",
    "TAG_WORKLOAD",
    "CLUSTER_TYPE_URL",
    "GCP_METADATA_CLUSTER",
    "JsonDict",
    "RDS_FILE",
    "ROUTE_CONFIG_NAME",
    "ROUTE_CONFIG_TYPE_URL",
    "EnvoySettings",
    "cluster_name",
    "parse_latency_buckets",
    "route_domains",
    "render_bootstrap",
    "render_cds",
    "render_clusters",
    "render_rds",
    "render_route_configuration",
    "render_static_config",
    "render_stats_config",
    "xds_version",
]

JsonDict = dict[str, Any]

CDS_FILE: Final = "cds.json"
RDS_FILE: Final = "rds.json"
ROUTE_CONFIG_NAME: Final = "inference-routes"
GCP_METADATA_CLUSTER: Final = "gcp-metadata"
"""Static cluster the ``gcp_authn`` filter fetches ID tokens through (the GCE/GKE metadata server)."""
ADMIN_CLUSTER: Final = "envoy-admin"
"""Static cluster to the loopback admin, used by the health and stats listeners only."""
STATS_PATH: Final = "/stats/prometheus"
"""The one path the stats (scrape) listener answers."""
TAG_NAMESPACE: Final = "namespace"
TAG_WORKLOAD: Final = "workload"
TAG_TARGET: Final = "target"
"""Labels the router's cluster stats carry (from the cluster name, ``render_stats_config``)."""

DEFAULT_LATENCY_BUCKETS_MS: Final[tuple[float, ...]] = (
    5, 10, 25, 50, 75, 100, 150, 200, 250, 300, 400, 500, 750,
    1_000, 1_500, 2_000, 2_500, 3_000, 4_000, 5_000, 7_500,
    10_000, 15_000, 20_000, 30_000, 45_000, 60_000, 120_000, 300_000, 900_000,
)  # fmt: skip
"""Bucket bounds (ms) of the router's request-time histogram: a bound at every common latency objective from 50 ms
to 60 s (100/200/250/300/500/750 ms, 1/1.5/2/2.5/3/4/5/7.5/10/15/20/30/45/60 s), up to Lambda's 900 s limit. An
objective between two bounds is measured against the bound under it (misses over-counted: more capacity, never
less). 30 buckets per (workload, target): mind the series count on large fleets (``EnvoySettings``)."""

CLUSTER_TYPE_URL: Final = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ROUTE_CONFIG_TYPE_URL: Final = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
_HCM_TYPE_URL: Final = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
_ROUTER_TYPE_URL: Final = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
_GCP_AUTHN_TYPE_URL: Final = "type.googleapis.com/envoy.extensions.filters.http.gcp_authn.v3.GcpAuthnFilterConfig"
_GCP_AUDIENCE_TYPE_URL: Final = "type.googleapis.com/envoy.extensions.filters.http.gcp_authn.v3.Audience"
_AWS_LAMBDA_TYPE_URL: Final = "type.googleapis.com/envoy.extensions.filters.http.aws_lambda.v3.Config"
_UPSTREAM_CODEC_TYPE_URL: Final = "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"
_HTTP_OPTIONS_TYPE_URL: Final = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_UPSTREAM_TLS_TYPE_URL: Final = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
_DOWNSTREAM_CONNECTIONS_TYPE_URL: Final = (
    "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig"
)
_HTTP_OPTIONS_KEY: Final = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_GCP_AUTHN_FILTER: Final = "envoy.filters.http.gcp_authn"
_AWS_LAMBDA_FILTER: Final = "envoy.filters.http.aws_lambda"
_LAMBDA_METADATA_KEY: Final = "com.amazonaws.lambda"


@dataclass(frozen=True)
class EnvoySettings:
    """Where the router listens and how it reaches upstreams. Every field has a production default."""

    listen_address: str = "0.0.0.0"
    """Address of the workload listener."""
    listen_port: int = 8080
    """Port of the workload listener (the per-workload Services target it)."""
    admin_address: str = "127.0.0.1"
    """Admin interface address: loopback only, never exposed."""
    admin_port: int = 9901
    """Admin interface port."""
    health_port: int | None = 9902
    """Port of the listener proxying ``GET /ready`` and ``GET /stats`` to the admin (None = no such listener)."""
    health_address: str = "0.0.0.0"
    """Address of the health listener."""
    stats_port: int | None = 9903
    """Port Prometheus scrapes: only ``GET /stats/prometheus`` (None = no such listener)."""
    stats_address: str = "0.0.0.0"
    """Address of the stats listener."""
    latency_buckets_ms: tuple[float, ...] = DEFAULT_LATENCY_BUCKETS_MS
    """Bucket bounds (milliseconds, ascending) of every cluster's ``upstream_rq_time`` histogram."""
    xds_dir: str = "/etc/inference-router"
    """Directory holding ``cds.json`` and ``rds.json`` (a ConfigMap mount in the cluster)."""
    stat_prefix: str = "ingress"
    """Stat prefix of the workload listener (RDS stats are ``http.<prefix>.rds.inference-routes.*``)."""
    cluster_domain: str = CLUSTER_DOMAIN
    """Kubernetes cluster DNS domain, for the ``NAME.NAMESPACE.svc.<domain>`` host form."""
    connect_timeout_seconds: float = 5.0
    """TCP (and TLS) connect timeout to an upstream."""
    route_timeout_seconds: float = 300.0
    """Whole-request timeout (inference can be slow; Lambda allows up to 900 s). 0 disables it."""
    retries: int = 2
    """Retries of requests that never reached an upstream (connect failure, refused stream, reset before request)."""
    gcp_metadata: UpstreamAddress = field(default_factory=lambda: UpstreamAddress("metadata.google.internal", 80))
    """Metadata server the ``gcp_authn`` filter fetches ID tokens from (tests: a loopback fake)."""
    gcp_token_timeout_seconds: float = 5.0
    """Timeout of one ID-token fetch."""
    gcp_token_cache_size: int = 100
    """ID tokens cached (one per audience)."""
    ca_bundle_path: str = "/etc/ssl/certs/ca-certificates.crt"
    """CA bundle that verifies Cloud Run and Lambda certificates."""
    node_id: str = "inference-router"
    """Envoy node id (shows in logs and admin)."""
    max_downstream_connections: int = 50_000
    """Connections the router accepts at once, over all listeners (Envoy's overload manager)."""

    def __post_init__(self) -> None:
        buckets = self.latency_buckets_ms
        if not buckets or any(not 0 < b < float("inf") for b in buckets) or list(buckets) != sorted(set(buckets)):
            raise ValueError(f"latency_buckets_ms must be positive, finite and strictly ascending, got {buckets}")


def parse_latency_buckets(text: str) -> tuple[float, ...]:
    """``"50,100,250"`` -> ``(50.0, 100.0, 250.0)`` (milliseconds); ``ValueError`` naming what is wrong."""
    try:
        buckets = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"latency buckets must be comma-separated milliseconds, got {text!r}") from None
    EnvoySettings(latency_buckets_ms=buckets)  # the same checks as everywhere else
    return buckets


def xds_version(resources: Sequence[JsonDict]) -> str:
    """Content hash of a resource list: the ``version_info`` of its file, echoed by Envoy as ``version_text``."""
    canonical = json.dumps(resources, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def cluster_name(route: Route, target: TargetName) -> str:
    """``ip|NAMESPACE|NAME|TARGET``: '|' never occurs in Kubernetes names, so names never collide."""
    return f"ip|{route.namespace}|{route.name}|{target.value}"


def route_domains(route: Route, settings: EnvoySettings) -> list[str]:
    """Host header values that reach ``route`` (ports are stripped before matching)."""
    base = f"{route.name}.{route.namespace}"
    return [base, f"{base}.svc", f"{base}.svc.{settings.cluster_domain}"]


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _socket_address(host: str, port: int) -> JsonDict:
    return {"socket_address": {"address": host, "port_value": port}}


def _load_assignment(name: str, address: UpstreamAddress) -> JsonDict:
    return {
        "cluster_name": name,
        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket_address(address.host, address.port)}}]}],
    }


def _tls_socket(sni: str, settings: EnvoySettings) -> JsonDict:
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": _UPSTREAM_TLS_TYPE_URL,
            "sni": sni,
            "common_tls_context": {
                "validation_context": {
                    "trusted_ca": {"filename": settings.ca_bundle_path},
                    "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": sni}}],
                }
            },
        },
    }


def _base_cluster(name: str, address: UpstreamAddress, settings: EnvoySettings, *, cloud: bool) -> JsonDict:
    cluster: JsonDict = {"@type": CLUSTER_TYPE_URL, "name": name}
    if address.is_ip:
        cluster["type"] = "STATIC"
    else:
        # Cloud endpoints rotate many addresses behind one name: LOGICAL_DNS keeps connections across DNS changes.
        # A Service name resolves to its one ClusterIP: STRICT_DNS.
        cluster["type"] = "LOGICAL_DNS" if cloud else "STRICT_DNS"
        cluster["dns_lookup_family"] = "V4_PREFERRED"
    cluster["connect_timeout"] = _seconds(settings.connect_timeout_seconds)
    cluster["load_assignment"] = _load_assignment(name, address)
    return cluster


def _render_cluster(name: str, upstream: Upstream, settings: EnvoySettings) -> JsonDict:
    if isinstance(upstream, ServiceUpstream):
        return _base_cluster(name, upstream.address, settings, cloud=False)
    cluster = _base_cluster(name, upstream.address, settings, cloud=True)
    if isinstance(upstream, CloudRunUpstream):
        if upstream.address.tls:
            cluster["transport_socket"] = _tls_socket(upstream.host, settings)
        cluster["metadata"] = {
            "typed_filter_metadata": {_GCP_AUTHN_FILTER: {"@type": _GCP_AUDIENCE_TYPE_URL, "url": upstream.audience}}
        }
        return cluster
    lambda_config: JsonDict = {
        "@type": _AWS_LAMBDA_TYPE_URL,
        "arn": upstream.function_arn,
        "payload_passthrough": upstream.payload_passthrough,
        "invocation_mode": "SYNCHRONOUS",
        "host_rewrite": upstream.host_rewrite,
    }
    if upstream.address.tls:
        cluster["transport_socket"] = _tls_socket(upstream.address.host, settings)
    cluster["metadata"] = {"filter_metadata": {_LAMBDA_METADATA_KEY: {"egress_gateway": True}}}
    cluster["typed_extension_protocol_options"] = {
        _HTTP_OPTIONS_KEY: {
            "@type": _HTTP_OPTIONS_TYPE_URL,
            "explicit_http_config": {"http_protocol_options": {}},
            "http_filters": [
                {"name": _AWS_LAMBDA_FILTER, "typed_config": lambda_config},
                {"name": "envoy.filters.http.upstream_codec", "typed_config": {"@type": _UPSTREAM_CODEC_TYPE_URL}},
            ],
        }
    }
    return cluster


def _check_unique(routes: Sequence[Route]) -> None:
    seen: set[str] = set()
    for route in routes:
        if route.key in seen:
            raise ValueError(f"two routes for {route.key}")
        seen.add(route.key)


def _sorted(routes: Iterable[Route]) -> list[Route]:
    return sorted(routes, key=lambda r: (r.namespace, r.name))


def render_clusters(routes: Sequence[Route], settings: EnvoySettings | None = None) -> list[JsonDict]:
    """One CDS ``Cluster`` per (workload, target), weight-0 backends included, sorted by name."""
    settings = settings or EnvoySettings()
    _check_unique(routes)
    clusters = [
        _render_cluster(cluster_name(route, backend.target), backend.upstream, settings)
        for route in _sorted(routes)
        for backend in route.backends
    ]
    return sorted(clusters, key=lambda c: str(c["name"]))


def _cluster_weight(route: Route, backend: Backend) -> JsonDict:
    weight: JsonDict = {"name": cluster_name(route, backend.target), "weight": backend.weight}
    if isinstance(backend.upstream, CloudRunUpstream):
        weight["host_rewrite_literal"] = backend.upstream.host
    return weight


def _route_entry(route: Route, settings: EnvoySettings) -> JsonDict:
    if not route.serving:
        return {
            "name": route.key,
            "match": {"prefix": "/"},
            "direct_response": {
                "status": 503,
                "body": {"inline_string": f"inference workload {route.key} has no serving placement yet\n"},
            },
        }
    action: JsonDict = {
        "weighted_clusters": {"clusters": [_cluster_weight(route, b) for b in route.backends]},
        "timeout": _seconds(settings.route_timeout_seconds),
    }
    if settings.retries > 0:
        action["retry_policy"] = {
            "retry_on": "connect-failure,refused-stream,reset-before-request",
            "num_retries": settings.retries,
        }
    return {"name": route.key, "match": {"prefix": "/"}, "route": action}


def _unknown_host() -> JsonDict:
    return {
        "name": "unknown-workload",
        "domains": ["*"],
        "routes": [
            {
                "name": "unknown-workload",
                "match": {"prefix": "/"},
                "direct_response": {
                    "status": 404,
                    "body": {
                        "inline_string": "no inference workload is routed for this Host; "
                        "call http://NAME.NAMESPACE.svc\n"
                    },
                },
            }
        ],
    }


def render_route_configuration(routes: Sequence[Route], settings: EnvoySettings | None = None) -> JsonDict:
    """The RDS ``RouteConfiguration``: one virtual host per workload (sorted), then the unknown-Host fallback."""
    settings = settings or EnvoySettings()
    _check_unique(routes)
    hosts = [
        {"name": route.key, "domains": route_domains(route, settings), "routes": [_route_entry(route, settings)]}
        for route in _sorted(routes)
    ]
    return {
        "@type": ROUTE_CONFIG_TYPE_URL,
        "name": ROUTE_CONFIG_NAME,
        "virtual_hosts": [*hosts, _unknown_host()],
    }


def _discovery_response(resources: list[JsonDict]) -> JsonDict:
    return {"version_info": xds_version(resources), "resources": resources}


def render_cds(routes: Sequence[Route], settings: EnvoySettings | None = None) -> JsonDict:
    """Contents of ``cds.json``: a DiscoveryResponse whose ``version_info`` is a hash of its clusters."""
    return _discovery_response(render_clusters(routes, settings))


def render_rds(routes: Sequence[Route], settings: EnvoySettings | None = None) -> JsonDict:
    """Contents of ``rds.json``: a DiscoveryResponse holding the one RouteConfiguration."""
    return _discovery_response([render_route_configuration(routes, settings)])


def _path_source(settings: EnvoySettings, file_name: str) -> JsonDict:
    directory = settings.xds_dir.rstrip("/") or "/"
    return {
        "resource_api_version": "V3",
        "path_config_source": {"path": f"{directory}/{file_name}", "watched_directory": {"path": directory}},
    }


def _hcm(settings: EnvoySettings, routes_from: JsonDict) -> JsonDict:
    return {
        "@type": _HCM_TYPE_URL,
        "stat_prefix": settings.stat_prefix,
        "strip_any_host_port": True,
        **routes_from,
        "http_filters": [
            {
                # Fails open: without a token the request still goes out (and Cloud Run answers 401/403); alert
                # on gcp_authn.token_fetch_failed. Non-Cloud-Run clusters carry no audience and are not touched.
                "name": _GCP_AUTHN_FILTER,
                "typed_config": {
                    "@type": _GCP_AUTHN_TYPE_URL,
                    "cluster": GCP_METADATA_CLUSTER,
                    "timeout": _seconds(settings.gcp_token_timeout_seconds),
                    "cache_config": {"cache_size": settings.gcp_token_cache_size},
                },
            },
            {"name": "envoy.filters.http.router", "typed_config": {"@type": _ROUTER_TYPE_URL}},
        ],
    }


def _listener(name: str, address: str, port: int, hcm: JsonDict) -> JsonDict:
    return {
        "name": name,
        "address": _socket_address(address, port),
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }


def _admin_proxy_listener(name: str, address: str, port: int, paths: Sequence[str]) -> JsonDict:
    """A listener that sends ``GET`` of exactly ``paths`` (any query string) to the loopback admin and answers
    everything else with a 404: no other admin endpoint (``/config_dump``, ``/clusters``, ``/quitquitquit``, ...)
    is reachable through it."""
    get_only = [{"name": ":method", "string_match": {"exact": "GET"}}]
    routes: list[JsonDict] = [
        {"match": {"path": path, "headers": get_only}, "route": {"cluster": ADMIN_CLUSTER}} for path in paths
    ]
    routes.append(
        {"match": {"prefix": "/"}, "direct_response": {"status": 404, "body": {"inline_string": "not found\n"}}}
    )
    hcm = {
        "@type": _HCM_TYPE_URL,
        "stat_prefix": name,
        "route_config": {"name": name, "virtual_hosts": [{"name": name, "domains": ["*"], "routes": routes}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": _ROUTER_TYPE_URL}}],
    }
    return _listener(name, address, port, hcm)


def _health_listener(settings: EnvoySettings, port: int) -> JsonDict:
    return _admin_proxy_listener("health", settings.health_address, port, ["/ready", "/stats"])


def _stats_listener(settings: EnvoySettings, port: int) -> JsonDict:
    return _admin_proxy_listener("stats", settings.stats_address, port, [STATS_PATH])


def render_stats_config(settings: EnvoySettings | None = None) -> JsonDict:
    """The bootstrap's ``stats_config``: the ``namespace``/``workload``/``target`` tags from the cluster name
    (``ip|NAMESPACE|NAME|TARGET``; Envoy's default tags, ``envoy_cluster_name`` and ``envoy_response_code`` among
    them, stay) and the request-time histogram's buckets. Each regex's first group is what the tag removes from
    the stat name, its second the tag's value."""
    settings = settings or EnvoySettings()
    field_ = r"[^|]+"
    return {
        "stats_tags": [
            {"tag_name": TAG_NAMESPACE, "regex": rf"^cluster\.(ip\|({field_})\|){field_}\|[^|.]+\."},
            {"tag_name": TAG_WORKLOAD, "regex": rf"^cluster\.ip\|{field_}\|(({field_})\|)[^|.]+\."},
            {"tag_name": TAG_TARGET, "regex": rf"^cluster\.ip\|{field_}\|{field_}\|(([^|.]+)\.)"},
        ],
        "histogram_bucket_settings": [
            {
                # the router's clusters only, and not the external/internal split of the same histogram
                "match": {"safe_regex": {"regex": r"^cluster\.ip\|.*\|[^|.]+\.upstream_rq_time$"}},
                "buckets": [float(b) for b in settings.latency_buckets_ms],
            }
        ],
    }


def _static_cluster(name: str, address: UpstreamAddress, settings: EnvoySettings) -> JsonDict:
    cluster = _base_cluster(name, address, settings, cloud=False)
    cluster.pop("@type")
    return cluster


def _static_clusters(settings: EnvoySettings) -> list[JsonDict]:
    clusters = [_static_cluster(GCP_METADATA_CLUSTER, settings.gcp_metadata, settings)]
    if settings.health_port is not None or settings.stats_port is not None:
        admin = UpstreamAddress(settings.admin_address, settings.admin_port)
        clusters.append(_static_cluster(ADMIN_CLUSTER, admin, settings))
    return clusters


def _listeners(settings: EnvoySettings, routes_from: JsonDict) -> list[JsonDict]:
    listeners = [_listener("inference", settings.listen_address, settings.listen_port, _hcm(settings, routes_from))]
    if settings.health_port is not None:
        listeners.append(_health_listener(settings, settings.health_port))
    if settings.stats_port is not None:
        listeners.append(_stats_listener(settings, settings.stats_port))
    return listeners


def _skeleton(settings: EnvoySettings) -> JsonDict:
    return {
        "node": {"id": settings.node_id, "cluster": settings.node_id},
        "admin": {"address": _socket_address(settings.admin_address, settings.admin_port)},
        "stats_config": render_stats_config(settings),
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": _DOWNSTREAM_CONNECTIONS_TYPE_URL,
                        "max_active_downstream_connections": settings.max_downstream_connections,
                    },
                }
            ]
        },
    }


def render_bootstrap(settings: EnvoySettings | None = None) -> JsonDict:
    """The router's bootstrap: static listeners (routes from ``rds.json``), clusters from ``cds.json``."""
    settings = settings or EnvoySettings()
    rds = {"rds": {"route_config_name": ROUTE_CONFIG_NAME, "config_source": _path_source(settings, RDS_FILE)}}
    return {
        **_skeleton(settings),
        "dynamic_resources": {"cds_config": _path_source(settings, CDS_FILE)},
        "static_resources": {"listeners": _listeners(settings, rds), "clusters": _static_clusters(settings)},
    }


def _without_type(resource: JsonDict) -> JsonDict:
    return {k: v for k, v in resource.items() if k != "@type"}


def render_static_config(routes: Sequence[Route], settings: EnvoySettings | None = None) -> JsonDict:
    """The bootstrap with the CDS clusters and the RDS route table inlined: the config ``envoy --mode validate``
    can actually check (and ``validate_clusters`` makes every route point at a defined cluster)."""
    settings = settings or EnvoySettings()
    route_config = {**_without_type(render_route_configuration(routes, settings)), "validate_clusters": True}
    clusters = [_without_type(c) for c in render_clusters(routes, settings)]
    return {
        **_skeleton(settings),
        "static_resources": {
            "listeners": _listeners(settings, {"route_config": route_config}),
            "clusters": [*_static_clusters(settings), *clusters],
        },
    }
