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
* a spilling route (``Route.overflow`` or ``Route.hold_seconds``) sends the cluster backend's share to a composite
  cluster ``ip|NAMESPACE|NAME|composite`` (``envoy.clusters.composite``: attempt N goes to sub-cluster N, and a
  sub-cluster with no host falls through to the next within the same attempt): [pods, overflow] with a retry on
  429/503 (burst spillover; scale to zero with a serverless target), or [pods, activator] (scale to zero with a
  hold: the activator, ``routing.activator``, next to Envoy in the router Pod, holds the request until a pod is
  ready and replays it with ``x-inference-activated``, which a first route sends straight to the pods). The pods
  cluster and the composite get circuit breakers far above any model server's queue cap, so saturation reaches the
  model server, which answers 429 (retried to the overflow), never Envoy's own 503 overflow (never retried);
* one Envoy cluster per (workload, target): plain HTTP to the model Service; TLS + Host rewrite + a ``gcp_authn``
  ID token (audience in the cluster's typed metadata) to Cloud Run; to Lambda, TLS to the function's Function URL
  (``AuthType AWS_IAM``) with the ``aws_request_signing`` filter (SigV4 for service ``lambda``, payload hashed, Host
  rewritten to the URL host) as an *upstream* HTTP filter of the function's own cluster, so each function's host
  and region travel with its cluster and a spilled request is signed too (docs/lambda.md). With
  ``EndpointsConfig.lambda_endpoint`` set, the Invoke API instead: the ``aws_lambda`` filter (SigV4, Host rewritten
  to ``lambda.REGION.amazonaws.com``), likewise an upstream filter, on a cluster carrying
  ``com.amazonaws.lambda.egress_gateway: true``, without which that filter does nothing;
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

from inference_placement.api.spec import SERVERLESS, TargetName
from inference_placement.routing.model import (
    CLUSTER_DOMAIN,
    Backend,
    CloudRunUpstream,
    LambdaUpstream,
    PodsUpstream,
    Route,
    ServiceUpstream,
    Upstream,
    UpstreamAddress,
)

__all__ = [
    "ACTIVATED_HEADER",
    "ACTIVATOR_CLUSTER",
    "ADMIN_CLUSTER",
    "COMPOSITE_TARGET",
    "HOLD_HEADER",
    "OVERFLOW_CLUSTER_HEADER",
    "OVERFLOW_HOP_CLUSTER",
    "OVERFLOW_HOST_HEADER",
    "PING_HEADER",
    "PODS_CLUSTER_HEADER",
    "WORKLOAD_HEADER",
    "CDS_FILE",
    "DEFAULT_LATENCY_BUCKETS_MS",
    "STATS_PATH",
    "FIRST_TOKEN_SCOPE",
    "FIRST_TOKEN_STAT",
    "ROUTE_METADATA_KEY",
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
    "composite_cluster_name",
    "parse_latency_buckets",
    "warm_cluster_name",
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
FIRST_TOKEN_SCOPE: Final = "inference_placement"
FIRST_TOKEN_STAT: Final = "first_token"
"""The router's time-to-first-byte histogram (milliseconds, bounds ``EnvoySettings.latency_buckets_ms``), kept for
the workloads whose objective bounds it (``Route.first_token``): Envoy's stats access logger records, per request
the main listener answers, the time from its first byte in to its first byte out (``%COMMON_DURATION(DS_RX_BEG:
DS_TX_BEG:ms)%``: what the client waits for its first token, the activator's hold and a spilled retry included),
tagged ``namespace``/``workload`` from the route's metadata. On ``/stats/prometheus``:
``envoy_inference_placement_first_token_bucket{namespace=..,workload=..,le=..}``. Routes without that metadata (other
workloads, keep-warm pings, the activator's replays, unknown hosts) share the one series with empty tags."""
ROUTE_METADATA_KEY: Final = "inference-placement"
"""The route metadata namespace the first-token histogram's tags are read from."""
COMPOSITE_TARGET: Final = "composite"
"""The ``target`` label of a spilling route's composite cluster (``ip|NAMESPACE|NAME|composite``)."""
ACTIVATOR_CLUSTER: Final = "inference-activator"
"""The one cluster of the router's activator (loopback, ``EnvoySettings.activator_port``). Not ``ip|...``: its stats
carry no workload labels (a held request is counted again under the pods when it is replayed); the activator's
own metrics count wake-ups per workload."""
OVERFLOW_HOP_CLUSTER: Final = "inference-overflow"
"""The composite's second sub-cluster for an overflow: Envoy's own loopback overflow listener
(``EnvoySettings.overflow_port``), which sends the request to the overflow target's cluster named in
``OVERFLOW_CLUSTER_HEADER``. Envoy builds a request's upstream filters from the route's cluster (the composite), so
the Lambda filter and the Cloud Run ID token could not ride on the overflow attempt alone; through the hop the route's
cluster is the overflow target's own, whose filters, stats and latency histogram then count the spilled requests.
Not ``ip|...``: no workload labels."""
OVERFLOW_CLUSTER_HEADER: Final = "x-inference-overflow-cluster"
"""Set by a spilling route: the overflow target's cluster (the overflow listener routes by it, then removes it)."""
OVERFLOW_HOST_HEADER: Final = "x-inference-overflow-host"
"""Set by a route spilling to Cloud Run: the Host the overflow listener rewrites to (it reaches Cloud Run too: Envoy
removes headers before it rewrites Host, and its value is that Host)."""
ACTIVATED_HEADER: Final = "x-inference-activated"
"""Set by the activator on a replayed request: the route sends it straight to the pods cluster."""
WORKLOAD_HEADER: Final = "x-inference-workload"
"""``NAMESPACE/NAME``: set by a holding route (overwriting the client's) for the activator."""
HOLD_HEADER: Final = "x-inference-hold-seconds"
"""The hold bound of a holding route, for the activator."""
PING_HEADER: Final = "x-inference-ping"
"""Set by the operator's keep-warm pinger: the route sends the ping to the serverless backends' warm clusters
(``warm|NAMESPACE|NAME|TARGET``), whose stats carry no workload labels, so the operator's own pings never count as
the workload's traffic (its measured rate, latency and requests in flight). A client setting it only hides its own
requests from the measurement and reaches the same upstream, with the same credentials."""
PODS_CLUSTER_HEADER: Final = "x-inference-pods-cluster"
"""The pods cluster whose healthy host the activator waits for."""
_SPILL_RETRY_ON: Final = "retriable-status-codes,connect-failure,refused-stream,reset-before-request"
_HOLD_RETRY_ON: Final = "connect-failure,refused-stream,reset-before-request"
_SPILL_STATUS_CODES: Final = (429, 503)
_STATS_LOGGER_TYPE_URL: Final = "type.googleapis.com/envoy.extensions.access_loggers.stats.v3.Config"
_COMPOSITE_TYPE_URL: Final = "type.googleapis.com/envoy.extensions.clusters.composite.v3.ClusterConfig"

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
_AWS_SIGNING_TYPE_URL: Final = (
    "type.googleapis.com/envoy.extensions.filters.http.aws_request_signing.v3.AwsRequestSigning"
)
_UPSTREAM_CODEC_TYPE_URL: Final = "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"
_HTTP_OPTIONS_TYPE_URL: Final = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_UPSTREAM_TLS_TYPE_URL: Final = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
_DOWNSTREAM_CONNECTIONS_TYPE_URL: Final = (
    "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig"
)
_HTTP_OPTIONS_KEY: Final = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_GCP_AUTHN_FILTER: Final = "envoy.filters.http.gcp_authn"
_AWS_LAMBDA_FILTER: Final = "envoy.filters.http.aws_lambda"
_AWS_SIGNING_FILTER: Final = "envoy.filters.http.aws_request_signing"
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
    activator_port: int | None = None
    """Loopback port of the router's activator (``routing.activator``); None = no activator, and a route with
    ``hold_seconds`` cannot be rendered."""
    activator_address: str = "127.0.0.1"
    """Address of the activator (same Pod: loopback)."""
    overflow_port: int | None = None
    """Loopback port of the overflow listener (``OVERFLOW_HOP_CLUSTER``); None = no such listener, and a route with
    an ``overflow`` cannot be rendered. Adding it changes the bootstrap (the router rolls once)."""
    spill_circuit_breaker_limit: int = 100_000
    """Connections, pending and active requests a spilling route's pods cluster admits, and retries its composite
    cluster admits at once: far above any model server's queue cap, so the model server refuses (429, retried to
    the overflow) before Envoy would (503 overflow, never retried; Envoy's defaults are 1024, and 3 retries)."""

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


def composite_cluster_name(route: Route) -> str:
    """``ip|NAMESPACE|NAME|composite``: the cluster a spilling route's cluster share goes to."""
    return f"ip|{route.namespace}|{route.name}|{COMPOSITE_TARGET}"


def warm_cluster_name(route: Route, target: TargetName) -> str:
    """``warm|NAMESPACE|NAME|TARGET``: the same upstream as ``cluster_name``'s, for keep-warm pings only. Not
    ``ip|...``: no workload labels (see ``PING_HEADER``)."""
    return f"warm|{route.namespace}|{route.name}|{target.value}"


def _warm_backends(route: Route) -> list[Backend]:
    """The serverless backends a keep-warm ping may reach (those with traffic): pings keep serverless instances
    warm, so they never go to the pods."""
    return [b for b in route.backends if b.target in SERVERLESS and b.weight > 0]


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


def _pods_cluster(name: str, upstream: PodsUpstream, settings: EnvoySettings) -> JsonDict:
    lb_endpoints = [{"endpoint": {"address": _socket_address(a.host, a.port)}} for a in upstream.addresses]
    return {
        "@type": CLUSTER_TYPE_URL,
        "name": name,
        "type": "STATIC",
        "connect_timeout": _seconds(settings.connect_timeout_seconds),
        "load_assignment": {
            "cluster_name": name,
            # one locality even when empty: Envoy then updates the priority set, so the cluster's membership gauges
            # drop to 0 (with no locality they keep the last host count, measured with 1.40, and the activator,
            # which waits on membership_healthy, would replay into an empty cluster)
            "endpoints": [{"lb_endpoints": lb_endpoints}],
        },
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
    if isinstance(upstream, PodsUpstream):
        return _pods_cluster(name, upstream, settings)
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
    if upstream.url_host is not None:
        return _function_url_cluster(cluster, upstream, settings)
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


def _function_url_cluster(cluster: JsonDict, upstream: LambdaUpstream, settings: EnvoySettings) -> JsonDict:
    """A function reached at its Function URL (``AuthType AWS_IAM``): the request goes as it is, its Host rewritten
    to the URL host and SigV4-signed for service ``lambda`` by ``aws_request_signing`` running as an upstream filter
    of this cluster (so a spilled request, which reaches the cluster through the overflow hop, is signed too). The
    payload is hashed into the signature (``x-amz-content-sha256``): Lambda does not take ``UNSIGNED-PAYLOAD``, so
    the filter buffers the request body. Credentials: the environment's default chain, like the ``aws_lambda``
    filter."""
    assert upstream.url_host is not None
    signing: JsonDict = {
        "@type": _AWS_SIGNING_TYPE_URL,
        "service_name": "lambda",
        "region": upstream.region,
        "host_rewrite": upstream.url_host,
        "use_unsigned_payload": False,
    }
    if upstream.address.tls:
        cluster["transport_socket"] = _tls_socket(upstream.url_host, settings)
    cluster["typed_extension_protocol_options"] = {
        _HTTP_OPTIONS_KEY: {
            "@type": _HTTP_OPTIONS_TYPE_URL,
            "explicit_http_config": {"http_protocol_options": {}},
            "http_filters": [
                {"name": _AWS_SIGNING_FILTER, "typed_config": signing},
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


def _circuit_breakers(**limits: int) -> JsonDict:
    return {"thresholds": [{"priority": "DEFAULT", **limits}]}


def _composite_cluster(route: Route, settings: EnvoySettings) -> JsonDict:
    pods = cluster_name(route, TargetName.CLUSTER)
    fallback = OVERFLOW_HOP_CLUSTER if route.overflow is not None else ACTIVATOR_CLUSTER
    return {
        "@type": CLUSTER_TYPE_URL,
        "name": composite_cluster_name(route),
        "connect_timeout": _seconds(settings.connect_timeout_seconds),
        "lb_policy": "CLUSTER_PROVIDED",
        "cluster_type": {
            "name": "envoy.clusters.composite",
            "typed_config": {"@type": _COMPOSITE_TYPE_URL, "clusters": [{"name": pods}, {"name": fallback}]},
        },
        # Retries are charged to the route's cluster: Envoy's default (3 at once) would stop spilling in a burst.
        "circuit_breakers": _circuit_breakers(max_retries=settings.spill_circuit_breaker_limit),
    }


def _spill_clusters(route: Route, settings: EnvoySettings) -> list[JsonDict]:
    """A spilling route's extra clusters: its composite and its overflow (unless a backend renders it already)."""
    clusters = [_composite_cluster(route, settings)]
    overflow = route.overflow
    if overflow is not None and overflow.target not in route.weights():
        clusters.append(_render_cluster(cluster_name(route, overflow.target), overflow.upstream, settings))
    return clusters


def _activator_cluster(settings: EnvoySettings) -> JsonDict:
    if settings.activator_port is None:
        raise ValueError("a route holds requests (hold_seconds) but EnvoySettings.activator_port is not set")
    address = UpstreamAddress(settings.activator_address, settings.activator_port)
    return _base_cluster(ACTIVATOR_CLUSTER, address, settings, cloud=False)


def _overflow_hop_cluster(settings: EnvoySettings) -> JsonDict:
    if settings.overflow_port is None:
        raise ValueError("a route has an overflow target but EnvoySettings.overflow_port is not set")
    cluster = _base_cluster(
        OVERFLOW_HOP_CLUSTER, UpstreamAddress("127.0.0.1", settings.overflow_port), settings, cloud=False
    )
    cluster["circuit_breakers"] = _circuit_breakers(
        max_connections=settings.spill_circuit_breaker_limit,
        max_pending_requests=settings.spill_circuit_breaker_limit,
        max_requests=settings.spill_circuit_breaker_limit,
    )
    return cluster


def render_clusters(routes: Sequence[Route], settings: EnvoySettings | None = None) -> list[JsonDict]:
    """One CDS ``Cluster`` per (workload, target), weight-0 backends included, sorted by name; a spilling route adds
    its composite (and overflow) cluster, and any holding route the one activator cluster."""
    settings = settings or EnvoySettings()
    _check_unique(routes)
    clusters: list[JsonDict] = []
    for route in _sorted(routes):
        for backend in route.backends:
            cluster = _render_cluster(cluster_name(route, backend.target), backend.upstream, settings)
            if route.spills and backend.target is TargetName.CLUSTER:
                limit = settings.spill_circuit_breaker_limit
                cluster["circuit_breakers"] = _circuit_breakers(
                    max_connections=limit, max_pending_requests=limit, max_requests=limit
                )
            clusters.append(cluster)
        if route.spills:
            clusters.extend(_spill_clusters(route, settings))
        clusters.extend(  # for every serverless backend, weight 0 too: a weight step stays an RDS-only change
            _render_cluster(warm_cluster_name(route, b.target), b.upstream, settings)
            for b in route.backends
            if b.target in SERVERLESS
        )
    if any(route.hold_seconds is not None for route in routes):
        clusters.append(_activator_cluster(settings))
    if any(route.overflow is not None for route in routes):
        clusters.append(_overflow_hop_cluster(settings))
    return sorted(clusters, key=lambda c: str(c["name"]))


def _cluster_weight(route: Route, backend: Backend, *, warm: bool = False) -> JsonDict:
    if route.spills and backend.target is TargetName.CLUSTER and not warm:
        return {"name": composite_cluster_name(route), "weight": backend.weight}
    name = warm_cluster_name(route, backend.target) if warm else cluster_name(route, backend.target)
    weight: JsonDict = {"name": name, "weight": backend.weight}
    if isinstance(backend.upstream, CloudRunUpstream):
        weight["host_rewrite_literal"] = backend.upstream.host
    return weight


def _retry_policy(settings: EnvoySettings) -> JsonDict | None:
    if settings.retries <= 0:
        return None
    return {"retry_on": "connect-failure,refused-stream,reset-before-request", "num_retries": settings.retries}


def _spill_retry_policy(route: Route) -> JsonDict:
    """Exactly one retry: attempt 2 goes to the composite's second sub-cluster (a third attempt would find none).
    Overflow: also on the model server's 429/503 (its queue cap). Hold: never on a status, so the activator's own
    503 (hold bound reached) is not held a second time."""
    policy: JsonDict = {
        "retry_on": _SPILL_RETRY_ON if route.overflow is not None else _HOLD_RETRY_ON,
        "num_retries": 1,
        "retry_back_off": {"base_interval": "0.001s", "max_interval": "0.01s"},
    }
    if route.overflow is not None:
        policy["retriable_status_codes"] = list(_SPILL_STATUS_CODES)
    return policy


def _header(name: str, value: str) -> JsonDict:
    return {"header": {"key": name, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}


def _route_entries(route: Route, settings: EnvoySettings) -> list[JsonDict]:
    if not route.serving:
        return [
            {
                "name": route.key,
                "match": {"prefix": "/"},
                "direct_response": {
                    "status": 503,
                    "body": {"inline_string": f"inference workload {route.key} has no serving placement yet\n"},
                },
            }
        ]
    action: JsonDict = {
        "weighted_clusters": {"clusters": [_cluster_weight(route, b) for b in route.backends]},
        "timeout": _seconds(settings.route_timeout_seconds),
    }
    retry = _spill_retry_policy(route) if route.spills else _retry_policy(settings)
    if retry is not None:
        action["retry_policy"] = retry
    entry: JsonDict = {"name": route.key, "match": {"prefix": "/"}, "route": action}
    if route.first_token:
        tags = {TAG_NAMESPACE: route.namespace, TAG_WORKLOAD: route.name}
        entry["metadata"] = {"filter_metadata": {ROUTE_METADATA_KEY: tags}}
    warm = _warm_backends(route)
    pings: list[JsonDict] = []
    if warm:
        ping_action: JsonDict = {
            "weighted_clusters": {"clusters": [_cluster_weight(route, b, warm=True) for b in warm]},
            "timeout": _seconds(settings.route_timeout_seconds),
        }
        if (plain := _retry_policy(settings)) is not None:
            ping_action["retry_policy"] = plain
        present = [{"name": PING_HEADER, "present_match": True}]
        pings.append({"name": f"{route.key}/ping", "match": {"prefix": "/", "headers": present}, "route": ping_action})
    if route.overflow is not None:
        added = [_header(OVERFLOW_CLUSTER_HEADER, cluster_name(route, route.overflow.target))]
        if isinstance(route.overflow.upstream, CloudRunUpstream):
            added.append(_header(OVERFLOW_HOST_HEADER, route.overflow.upstream.host))
        entry["request_headers_to_add"] = added
    if route.hold_seconds is None:
        return [*pings, entry]
    pods = cluster_name(route, TargetName.CLUSTER)
    entry["request_headers_to_add"] = [
        _header(WORKLOAD_HEADER, route.key),
        _header(HOLD_HEADER, f"{route.hold_seconds:g}"),
        _header(PODS_CLUSTER_HEADER, pods),
    ]
    activated: JsonDict = {"cluster": pods, "timeout": _seconds(settings.route_timeout_seconds)}
    if (plain := _retry_policy(settings)) is not None:
        activated["retry_policy"] = plain
    present = [{"name": ACTIVATED_HEADER, "present_match": True}]
    replay = {"name": f"{route.key}/activated", "match": {"prefix": "/", "headers": present}, "route": activated}
    return [*pings, replay, entry]


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
        {"name": route.key, "domains": route_domains(route, settings), "routes": _route_entries(route, settings)}
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


def _first_token_log() -> JsonDict:
    """The access logger that records ``FIRST_TOKEN_STAT`` (Envoy's stats logger; a request Envoy answered without
    a first byte records nothing)."""
    tags = [
        {"name": tag, "value_format": f"%METADATA(ROUTE:{ROUTE_METADATA_KEY}:{tag})%"}
        for tag in (TAG_NAMESPACE, TAG_WORKLOAD)
    ]
    return {
        "name": "envoy.access_loggers.stats",
        "typed_config": {
            "@type": _STATS_LOGGER_TYPE_URL,
            "stats_scope": {"prefix": FIRST_TOKEN_SCOPE},
            "histograms": [
                {
                    "stat": {"name": FIRST_TOKEN_STAT, "tags": tags},
                    "unit": "Milliseconds",
                    "value_format": "%COMMON_DURATION(DS_RX_BEG:DS_TX_BEG:ms)%",
                }
            ],
        },
    }


def _hcm(settings: EnvoySettings, routes_from: JsonDict, *, first_token: bool = False) -> JsonDict:
    """``first_token``: the main listener's, which records ``FIRST_TOKEN_STAT``."""
    return {
        "@type": _HCM_TYPE_URL,
        "stat_prefix": settings.stat_prefix,
        "strip_any_host_port": True,
        **({"access_log": [_first_token_log()]} if first_token else {}),
        **routes_from,
        "http_filters": [
            {
                # Fails open: without a token the request still goes out and Cloud Run answers 401/403. The filter
                # keeps no counter of its own (Envoy 1.40); the fetches are the gcp-metadata cluster's requests,
                # and a migration counts the target's 401/403 as failures (policy.traffic_health). Non-Cloud-Run
                # clusters carry no audience and are not touched.
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
            },
            {
                "match": {"prefix": f"{FIRST_TOKEN_SCOPE}.{FIRST_TOKEN_STAT}"},
                "buckets": [float(b) for b in settings.latency_buckets_ms],
            },
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


def _overflow_listener(settings: EnvoySettings, port: int) -> JsonDict:
    """Loopback only: the second hop of a spilled request, to the overflow target's cluster named by the spilling
    route (``OVERFLOW_CLUSTER_HEADER``), so that cluster's filters (Lambda signing, Cloud Run ID token: the
    ``gcp_authn`` filter reads the route's cluster) and stats apply."""
    action: JsonDict = {
        "cluster_header": OVERFLOW_CLUSTER_HEADER,
        "host_rewrite_header": OVERFLOW_HOST_HEADER,
        "timeout": _seconds(settings.route_timeout_seconds),
    }
    if (retry := _retry_policy(settings)) is not None:
        action["retry_policy"] = retry
    route_config = {
        "name": "overflow",
        "virtual_hosts": [
            {
                "name": "overflow",
                "domains": ["*"],
                "routes": [
                    {
                        "match": {"prefix": "/", "headers": [{"name": OVERFLOW_CLUSTER_HEADER, "present_match": True}]},
                        "route": action,
                        # Not the Host header: Envoy removes before it rewrites (it then equals Host anyway).
                        "request_headers_to_remove": [OVERFLOW_CLUSTER_HEADER],
                    },
                    {
                        "match": {"prefix": "/"},
                        "direct_response": {"status": 404, "body": {"inline_string": "no overflow cluster named\n"}},
                    },
                ],
            }
        ],
    }
    hcm = {**_hcm(settings, {"route_config": route_config}), "stat_prefix": "overflow"}
    return _listener("overflow", "127.0.0.1", port, hcm)


def _listeners(settings: EnvoySettings, routes_from: JsonDict) -> list[JsonDict]:
    listeners = [
        _listener(
            "inference", settings.listen_address, settings.listen_port, _hcm(settings, routes_from, first_token=True)
        )
    ]
    if settings.health_port is not None:
        listeners.append(_health_listener(settings, settings.health_port))
    if settings.stats_port is not None:
        listeners.append(_stats_listener(settings, settings.stats_port))
    if settings.overflow_port is not None:
        listeners.append(_overflow_listener(settings, settings.overflow_port))
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
