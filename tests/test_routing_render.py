"""Routing, pure: weights follow the migration recorded in status; the rendered Envoy config has the right shape."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from inference_placement.api.spec import TargetName
from inference_placement.api.status import (
    InferenceWorkloadStatus,
    MigrationStatus,
    MigrationStep,
    TargetResourceStatus,
    TargetsStatus,
)
from inference_placement.api.workload import InferenceWorkload
from inference_placement.controller.migration import MigrationObservation, MigrationTimings, advance, start_migration
from inference_placement.routing import envoy, manifests, model, xds_files
from inference_placement.routing.envoy import (
    PING_HEADER,
    EnvoySettings,
    cluster_name,
    render_bootstrap,
    render_cds,
    render_clusters,
    render_rds,
    render_route_configuration,
    render_static_config,
    render_stats_config,
)
from inference_placement.routing.manifests import render_configmap, render_router_deployment, render_workload_service
from inference_placement.routing.model import (
    Backend,
    CloudRunUpstream,
    EndpointsConfig,
    LambdaUpstream,
    Route,
    RouteError,
    ServiceUpstream,
    UpstreamAddress,
    route_from_status,
    traffic_weights,
)
from inference_placement.routing.xds_files import XdsKind, plan_xds_writes
from tests.plugins.cloud import make_workload

C, R, L = TargetName.CLUSTER, TargetName.CLOUDRUN, TargetName.LAMBDA
T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
STAMP = "2026-11-22T12:00:00Z"
CLUSTER_ENDPOINT = "http://embedder-model.default.svc:8080"
CLOUDRUN_URL = "https://ip-default-embedder-44b50070-uc.a.run.app"
CLOUDRUN_HOST = "ip-default-embedder-44b50070-uc.a.run.app"
LAMBDA_ARN = "arn:aws:lambda:eu-west-1:123456789012:function:ip-default-embedder-44b50070:live"
LAMBDA_URL_HOST = "abc.lambda-url.eu-west-1.on.aws"
TARGETS = TargetsStatus(
    cluster=TargetResourceStatus(name="embedder-model", endpoint=CLUSTER_ENDPOINT, ready=True),
    cloudrun=TargetResourceStatus(
        name="projects/p/locations/us-central1/services/ip-default-embedder-44b50070", endpoint=CLOUDRUN_URL, ready=True
    ),
    lambda_=TargetResourceStatus(name=LAMBDA_ARN, endpoint="https://abc.lambda-url.eu-west-1.on.aws/", ready=True),
)


def _migration(source: TargetName | None, target: TargetName, step: MigrationStep, percent: int) -> MigrationStatus:
    return MigrationStatus(
        source=source, target=target, step=step, traffic_percent=percent, started_at=STAMP, step_started_at=STAMP
    )


def _workload(
    placement: TargetName | None = None,
    migration: MigrationStatus | None = None,
    targets: TargetsStatus | None = TARGETS,
    name: str = "embedder",
    namespace: str = "default",
) -> InferenceWorkload:
    status = InferenceWorkloadStatus(placement=placement, migration=migration, targets=targets)
    return make_workload(name, namespace).model_copy(update={"status": status})


def _service(port: int = 9000, host: str = "127.0.0.1") -> ServiceUpstream:
    return ServiceUpstream(UpstreamAddress(host, port))


def _route(*weights: tuple[TargetName, int], name: str = "embedder", namespace: str = "default") -> Route:
    upstreams: dict[TargetName, model.Upstream] = {
        C: _service(),
        R: CloudRunUpstream(CLOUDRUN_HOST, CLOUDRUN_URL, UpstreamAddress(CLOUDRUN_HOST, 443, tls=True)),
        L: LambdaUpstream(LAMBDA_ARN, "eu-west-1", UpstreamAddress("lambda.eu-west-1.amazonaws.com", 443, tls=True)),
    }
    return Route(namespace, name, tuple(Backend(t, upstreams[t], w) for t, w in weights))


# ----------------------------------------------------------------------------------------------- weights


@pytest.mark.parametrize(
    ("placement", "migration", "expected"),
    [
        pytest.param(None, None, {}, id="not-placed"),
        pytest.param(C, None, {C: 100}, id="placed-on-cluster"),
        pytest.param(L, None, {L: 100}, id="placed-on-lambda"),
        pytest.param(
            None, _migration(None, R, MigrationStep.PROVISIONING, 0), {R: 0}, id="first-placement-provisioning"
        ),
        pytest.param(C, _migration(C, L, MigrationStep.PROVISIONING, 0), {C: 100, L: 0}, id="provisioning"),
        pytest.param(C, _migration(C, L, MigrationStep.AWAITING_HEALTHY, 0), {C: 100, L: 0}, id="awaiting-healthy"),
        pytest.param(C, _migration(C, L, MigrationStep.SHIFTING, 10), {C: 90, L: 10}, id="shifting-10"),
        pytest.param(C, _migration(C, L, MigrationStep.SHIFTING, 50), {C: 50, L: 50}, id="shifting-50"),
        pytest.param(L, _migration(C, L, MigrationStep.SHIFTING, 100), {C: 0, L: 100}, id="shifting-100"),
        pytest.param(L, _migration(C, L, MigrationStep.DRAINING, 100), {C: 0, L: 100}, id="draining"),
        pytest.param(L, _migration(C, L, MigrationStep.RETIRING, 100), {C: 0, L: 100}, id="retiring"),
        pytest.param(C, _migration(C, L, MigrationStep.ROLLING_BACK, 0), {C: 100}, id="rolling-back"),
        pytest.param(None, _migration(None, L, MigrationStep.ROLLING_BACK, 0), {}, id="first-placement-rolling-back"),
        pytest.param(C, _migration(C, C, MigrationStep.SHIFTING, 10), {C: 100}, id="same-target"),
    ],
)
def test_weights_follow_the_migration_in_status(
    placement: TargetName | None, migration: MigrationStatus | None, expected: dict[TargetName, int]
) -> None:
    status = InferenceWorkloadStatus(placement=placement, migration=migration)
    assert traffic_weights(status) == expected


def _walk(source: TargetName, target: TargetName, observations: list[MigrationObservation]) -> list[dict[Any, int]]:
    """Weights of the route after every step of the real state machine."""
    timings = MigrationTimings(shift_steps_percent=(10, 50, 100), step_hold_seconds=10, drain_seconds=30)
    migration: MigrationStatus | None = start_migration(source, target, "cheaper", T0)
    placement: TargetName | None = source
    now = T0
    seen = [route_from_status(_workload(placement, migration)).weights()]
    for observation in observations:
        assert migration is not None
        now += timedelta(seconds=31)
        transition = advance(migration, observation, now, timings)
        migration, placement = transition.migration, transition.placement
        seen.append(route_from_status(_workload(placement, migration)).weights())
        if migration is None:
            break
    return seen


def test_route_weights_follow_every_step_of_a_real_migration() -> None:
    ready = MigrationObservation(target_ready=True)
    seen = _walk(C, L, [ready] * 6 + [MigrationObservation(target_ready=True, retired=True)])
    assert seen == [
        {C: 100, L: 0},  # provisioning
        {C: 100, L: 0},  # awaiting healthy
        {C: 90, L: 10},
        {C: 50, L: 50},
        {C: 0, L: 100},
        {C: 0, L: 100},  # draining: the source keeps its cluster for in-flight requests
        {C: 0, L: 100},  # retiring
        {L: 100},  # done: the source leaves the route
    ]


def test_a_rollback_puts_all_traffic_back_on_the_source_at_once() -> None:
    ready = MigrationObservation(target_ready=True)
    bad = MigrationObservation(target_ready=True, traffic_problem="p99 1.9 s > SLO 0.5 s")
    seen = _walk(R, C, [ready, ready, ready, bad, MigrationObservation(retired=True)])
    assert seen == [{R: 100, C: 0}, {R: 100, C: 0}, {R: 90, C: 10}, {R: 50, C: 50}, {R: 100}, {R: 100}]


# ----------------------------------------------------------------------------------------------- upstreams


def test_upstreams_come_from_status_targets_and_overrides() -> None:
    config = EndpointsConfig(
        address_overrides={
            "http://embedder-model.default.svc:8080": "http://127.0.0.1:18001",
            f"https://{CLOUDRUN_HOST}:443": "http://127.0.0.1:18002",
        },
        lambda_endpoint="http://127.0.0.1:5000",
    )
    route = route_from_status(_workload(C, _migration(C, R, MigrationStep.SHIFTING, 10)), config)
    assert route.backends == (
        Backend(C, ServiceUpstream(UpstreamAddress("127.0.0.1", 18001)), 90),
        Backend(R, CloudRunUpstream(CLOUDRUN_HOST, CLOUDRUN_URL, UpstreamAddress("127.0.0.1", 18002)), 10),
    )
    lam = route_from_status(_workload(L), config).backends[0].upstream
    assert lam == LambdaUpstream(LAMBDA_ARN, "eu-west-1", UpstreamAddress("127.0.0.1", 5000, tls=False))
    assert isinstance(lam, LambdaUpstream) and lam.host_rewrite == "lambda.eu-west-1.amazonaws.com"


def test_production_upstreams_use_tls_to_the_real_cloud_endpoints() -> None:
    cloudrun = route_from_status(_workload(R)).backends[0].upstream
    assert cloudrun == CloudRunUpstream(CLOUDRUN_HOST, CLOUDRUN_URL, UpstreamAddress(CLOUDRUN_HOST, 443, tls=True))
    lam = route_from_status(_workload(L)).backends[0].upstream
    assert lam == LambdaUpstream(
        LAMBDA_ARN, "eu-west-1", UpstreamAddress(LAMBDA_URL_HOST, 443, tls=True), url_host=LAMBDA_URL_HOST
    )
    service = route_from_status(_workload(C)).backends[0].upstream
    assert service == ServiceUpstream(UpstreamAddress("embedder-model.default.svc", 8080))


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        pytest.param(None, "no resource recorded", id="no-targets"),
        pytest.param(TargetsStatus(cluster=TargetResourceStatus(name="m")), "no endpoint", id="no-endpoint"),
        pytest.param(
            TargetsStatus(cluster=TargetResourceStatus(name="m", endpoint="ftp://x")), "not an http", id="bad-url"
        ),
    ],
)
def test_a_backend_that_must_take_traffic_without_an_endpoint_is_an_error(
    targets: TargetsStatus | None, message: str
) -> None:
    with pytest.raises(RouteError, match=message):
        route_from_status(_workload(C, targets=targets))


def test_a_function_url_is_reached_where_the_stand_in_listens_with_its_host_kept() -> None:
    """``lambda_url_endpoint`` moves only the connection: the Host and the signature stay the Function URL's."""
    config = EndpointsConfig(lambda_url_endpoint="http://127.0.0.1:5001")
    lam = route_from_status(_workload(L), config).backends[0].upstream
    assert lam == LambdaUpstream(LAMBDA_ARN, "eu-west-1", UpstreamAddress("127.0.0.1", 5001), url_host=LAMBDA_URL_HOST)
    assert isinstance(lam, LambdaUpstream) and lam.host_rewrite == LAMBDA_URL_HOST


@pytest.mark.parametrize(
    ("url", "message"),
    [
        pytest.param("https://abc.lambda-url.us-east-1.on.aws/", "not a Function URL in eu-west-1", id="other-region"),
        pytest.param("http://abc.lambda-url.eu-west-1.on.aws/", "not a Function URL", id="plain-http"),
        pytest.param("https://abc.lambda-url.eu-west-1.on.aws:8443/", "not a Function URL", id="other-port"),
        pytest.param("https://169.254.169.254/", "not a Function URL", id="metadata-server"),
        pytest.param("https://abc.lambda-url.eu-west-1.on.aws.evil.example/", "not a Function URL", id="suffix-trick"),
    ],
)
def test_a_function_url_that_is_not_one_of_the_functions_region_is_refused(url: str, message: str) -> None:
    targets = TargetsStatus(lambda_=TargetResourceStatus(name=LAMBDA_ARN, endpoint=url, ready=True))
    with pytest.raises(RouteError, match=message):
        route_from_status(_workload(L, targets=targets))


def test_a_declared_stand_in_origin_is_accepted_as_the_function_url() -> None:
    targets = TargetsStatus(lambda_=TargetResourceStatus(name=LAMBDA_ARN, endpoint="http://127.0.0.1:5002", ready=True))
    config = EndpointsConfig(trust=model.UpstreamTrust(trusted_origins=frozenset({"http://127.0.0.1:5002"})))
    lam = route_from_status(_workload(L, targets=targets), config).backends[0].upstream
    assert lam == LambdaUpstream(LAMBDA_ARN, "eu-west-1", UpstreamAddress("127.0.0.1", 5002), url_host="127.0.0.1")


def test_a_function_without_a_url_takes_no_traffic_yet() -> None:
    targets = TARGETS.model_copy(update={"lambda_": TargetResourceStatus(name=LAMBDA_ARN, ready=True)})
    with pytest.raises(RouteError, match="no function URL recorded yet"):
        route_from_status(_workload(L, targets=targets))
    provisioning = route_from_status(_workload(C, _migration(C, L, MigrationStep.PROVISIONING, 0), targets=targets))
    assert [b.target for b in provisioning.backends] == [C]


def test_a_lambda_name_that_is_not_an_arn_is_an_error() -> None:
    targets = TargetsStatus(lambda_=TargetResourceStatus(name="ip-default-embedder"))
    with pytest.raises(RouteError, match="not a Lambda function ARN"):
        route_from_status(_workload(L, targets=targets))


def test_a_target_still_provisioning_without_an_endpoint_is_left_out() -> None:
    targets = TargetsStatus(cluster=TARGETS.cluster, cloudrun=TargetResourceStatus(name="svc"))
    route = route_from_status(_workload(C, _migration(C, R, MigrationStep.PROVISIONING, 0), targets=targets))
    assert route.weights() == {C: 100}


@pytest.mark.parametrize(
    "weights",
    [
        pytest.param(((C, 90), (L, 20)), id="sum-110"),
        pytest.param(((C, 50),), id="sum-50"),
        pytest.param(((C, 101), (L, -1)), id="out-of-range"),
        pytest.param(((C, 50), (C, 50)), id="duplicate-target"),
    ],
)
def test_invalid_weights_are_refused(weights: tuple[tuple[TargetName, int], ...]) -> None:
    with pytest.raises(ValueError):
        _route(*weights)


def test_upstream_address_parsing() -> None:
    assert UpstreamAddress.from_url("https://x.a.run.app") == UpstreamAddress("x.a.run.app", 443, tls=True)
    assert UpstreamAddress.from_url("http://svc.ns.svc:8080") == UpstreamAddress("svc.ns.svc", 8080)
    assert UpstreamAddress.from_url("127.0.0.1:5000") == UpstreamAddress("127.0.0.1", 5000)
    assert UpstreamAddress("127.0.0.1", 1).is_ip and not UpstreamAddress("svc", 1).is_ip
    with pytest.raises(ValueError):
        UpstreamAddress.from_url("grpc://x:1")


# ----------------------------------------------------------------------------------------------- clusters


def _by_name(clusters: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in clusters}


def test_one_cluster_per_workload_target_including_weight_zero() -> None:
    routes = [_route((C, 100), (L, 0)), _route((R, 100), name="ranker", namespace="ml")]
    names = [c["name"] for c in render_clusters(routes)]
    ours = ["ip|default|embedder|cluster", "ip|default|embedder|lambda", "ip|ml|ranker|cloudrun"]
    # and a warm twin per serverless backend, weight 0 too, for keep-warm pings (no workload labels)
    assert names == sorted([*ours, "warm|default|embedder|lambda", "warm|ml|ranker|cloudrun"])


def test_service_cluster_is_plain_http_static_for_ips_and_dns_for_names() -> None:
    clusters = _by_name(
        render_clusters([_route((C, 100)), Route("ml", "ranker", (Backend(C, _service(8080, "ranker.ml.svc"), 100),))])
    )
    ip = clusters["ip|default|embedder|cluster"]
    assert ip["type"] == "STATIC" and "transport_socket" not in ip
    assert ip["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == {
        "socket_address": {"address": "127.0.0.1", "port_value": 9000}
    }
    assert clusters["ip|ml|ranker|cluster"]["type"] == "STRICT_DNS"


def test_cloudrun_cluster_speaks_tls_to_the_service_host_and_carries_the_audience() -> None:
    cluster = render_clusters([_route((R, 100))])[0]
    assert cluster["type"] == "LOGICAL_DNS"
    tls = cluster["transport_socket"]["typed_config"]
    assert tls["sni"] == CLOUDRUN_HOST
    assert tls["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "DNS", "matcher": {"exact": CLOUDRUN_HOST}}
    ]
    audience = cluster["metadata"]["typed_filter_metadata"]["envoy.filters.http.gcp_authn"]
    assert audience == {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.gcp_authn.v3.Audience",
        "url": CLOUDRUN_URL,
    }


def test_lambda_cluster_signs_function_url_requests_for_service_lambda() -> None:
    """The production path: TLS to the Function URL host, the request SigV4-signed for service ``lambda`` with the
    payload hashed (no ``UNSIGNED-PAYLOAD``) by ``aws_request_signing`` running as the cluster's upstream filter."""
    upstream = LambdaUpstream(
        LAMBDA_ARN, "eu-west-1", UpstreamAddress(LAMBDA_URL_HOST, 443, tls=True), url_host=LAMBDA_URL_HOST
    )
    cluster = render_clusters([Route("default", "embedder", (Backend(L, upstream, 100),))])[0]
    assert cluster["type"] == "LOGICAL_DNS"
    assert cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == {
        "socket_address": {"address": LAMBDA_URL_HOST, "port_value": 443}
    }
    assert cluster["transport_socket"]["typed_config"]["sni"] == LAMBDA_URL_HOST
    assert "metadata" not in cluster  # no aws_lambda egress-gateway marker: that filter is not in the chain
    options = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    signing, codec = options["http_filters"]
    assert signing == {
        "name": "envoy.filters.http.aws_request_signing",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.aws_request_signing.v3.AwsRequestSigning",
            "service_name": "lambda",
            "region": "eu-west-1",
            "host_rewrite": LAMBDA_URL_HOST,
            "use_unsigned_payload": False,
        },
    }
    assert codec["name"] == "envoy.filters.http.upstream_codec"


def test_lambda_cluster_of_the_invoke_api_signs_through_the_aws_lambda_filter() -> None:
    cluster = render_clusters([_route((L, 100))])[0]
    assert cluster["metadata"]["filter_metadata"] == {"com.amazonaws.lambda": {"egress_gateway": True}}
    options = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    lambda_filter, codec = options["http_filters"]
    assert lambda_filter["name"] == "envoy.filters.http.aws_lambda"
    assert lambda_filter["typed_config"]["arn"] == LAMBDA_ARN
    assert lambda_filter["typed_config"]["host_rewrite"] == "lambda.eu-west-1.amazonaws.com"
    assert codec["name"] == "envoy.filters.http.upstream_codec"
    assert cluster["transport_socket"]["typed_config"]["sni"] == "lambda.eu-west-1.amazonaws.com"


# ----------------------------------------------------------------------------------------------- routes


def test_one_virtual_host_per_workload_matched_by_host_then_the_unknown_host_fallback() -> None:
    routes = [
        _route((C, 100), name="ranker", namespace="ml"),
        _route((C, 90), (L, 10)),
        _route((C, 100), namespace="b"),
    ]
    config = render_route_configuration(routes)
    hosts = config["virtual_hosts"]
    assert [h["name"] for h in hosts] == ["b/embedder", "default/embedder", "ml/ranker", "unknown-workload"]
    assert hosts[1]["domains"] == ["embedder.default", "embedder.default.svc", "embedder.default.svc.cluster.local"]
    assert hosts[-1]["domains"] == ["*"]
    assert hosts[-1]["routes"][0]["direct_response"]["status"] == 404
    all_domains = [d for h in hosts for d in h["domains"]]
    assert len(all_domains) == len(set(all_domains)), "same name in two namespaces must not share a domain"


@pytest.mark.parametrize(
    "weights",
    [
        pytest.param(((C, 100), (L, 0)), id="100-0"),
        pytest.param(((C, 90), (L, 10)), id="90-10"),
        pytest.param(((C, 50), (L, 50)), id="50-50"),
        pytest.param(((C, 0), (L, 100)), id="0-100"),
        pytest.param(((R, 25), (C, 25), (L, 50)), id="three-targets"),
    ],
)
def test_weighted_clusters_carry_the_route_weights(weights: tuple[tuple[TargetName, int], ...]) -> None:
    route = _route(*weights)
    entry = render_route_configuration([route])["virtual_hosts"][0]["routes"][-1]
    clusters = entry["route"]["weighted_clusters"]["clusters"]
    assert [(c["name"], c["weight"]) for c in clusters] == [(cluster_name(route, t), w) for t, w in weights]


def test_cloudrun_weight_rewrites_the_host_and_requests_never_reach_an_unready_upstream_retry() -> None:
    entry = render_route_configuration([_route((C, 50), (R, 50))])["virtual_hosts"][0]["routes"][-1]
    cloudrun = entry["route"]["weighted_clusters"]["clusters"][1]
    assert cloudrun["host_rewrite_literal"] == CLOUDRUN_HOST
    assert "host_rewrite_literal" not in entry["route"]["weighted_clusters"]["clusters"][0]
    assert entry["route"]["retry_policy"]["retry_on"] == "connect-failure,refused-stream,reset-before-request"


def test_a_workload_with_nothing_serving_answers_503() -> None:
    route = route_from_status(_workload(None, _migration(None, L, MigrationStep.AWAITING_HEALTHY, 0)))
    entry = render_route_configuration([route])["virtual_hosts"][0]["routes"][-1]
    assert entry["direct_response"]["status"] == 503
    assert "default/embedder" in entry["direct_response"]["body"]["inline_string"]
    assert [c["name"] for c in render_clusters([route])] == [  # warm before traffic
        "ip|default|embedder|lambda",
        "warm|default|embedder|lambda",
    ]


def test_duplicate_routes_are_refused() -> None:
    with pytest.raises(ValueError, match="two routes"):
        render_rds([_route((C, 100)), _route((L, 100))])


def test_a_traffic_step_changes_only_rds() -> None:
    before, after = [_route((C, 90), (L, 10))], [_route((C, 50), (L, 50))]
    assert render_cds(before) == render_cds(after)
    assert render_rds(before)["version_info"] != render_rds(after)["version_info"]
    assert render_rds(before) == render_rds(list(reversed(before)))


# ----------------------------------------------------------------------------------------------- bootstrap


def test_bootstrap_reads_clusters_and_routes_from_watched_files_and_keeps_admin_on_loopback() -> None:
    settings = EnvoySettings(xds_dir="/etc/router/")
    bootstrap = render_bootstrap(settings)
    assert bootstrap["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    cds = bootstrap["dynamic_resources"]["cds_config"]
    assert cds == {
        "resource_api_version": "V3",
        "path_config_source": {"path": "/etc/router/cds.json", "watched_directory": {"path": "/etc/router"}},
    }
    listener = bootstrap["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["rds"]["route_config_name"] == "inference-routes"
    assert hcm["rds"]["config_source"]["path_config_source"]["path"] == "/etc/router/rds.json"
    assert [f["name"] for f in hcm["http_filters"]] == ["envoy.filters.http.gcp_authn", "envoy.filters.http.router"]
    assert hcm["http_filters"][0]["typed_config"]["cluster"] == "gcp-metadata"
    health = bootstrap["static_resources"]["listeners"][1]
    health_routes = health["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]
    # exact paths only; everything else a 404 (the stats listener, test_router_metrics.py, proxies /stats/prometheus)
    assert [r["match"].get("path") or r["match"].get("prefix") for r in health_routes["routes"]] == [
        "/ready",
        "/stats",
        "/",
    ]
    assert health_routes["routes"][-1]["direct_response"]["status"] == 404


def test_static_config_inlines_the_same_clusters_and_routes() -> None:
    routes = [_route((C, 90), (L, 10))]
    static = render_static_config(routes)
    assert "dynamic_resources" not in static
    names = {c["name"] for c in static["static_resources"]["clusters"]}
    assert {c["name"] for c in render_clusters(routes)} <= names
    hcm = static["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["route_config"]["validate_clusters"] is True
    rds_hosts = render_route_configuration(routes)["virtual_hosts"]
    assert hcm["route_config"]["virtual_hosts"] == rds_hosts


def test_keep_warm_pings_reach_the_serverless_backends_through_clusters_without_workload_labels() -> None:
    """The operator's own pings are not the workload's traffic: a ping (``PING_HEADER``) matches first and goes to
    the serverless backends with traffic, through their ``warm|...`` twins (same upstream and credentials), whose
    stats the tag rules do not label with the workload; clients' requests keep the ``ip|...`` clusters."""
    route = _route((C, 40), (R, 60))
    ping, entry = render_route_configuration([route])["virtual_hosts"][0]["routes"]
    assert ping["match"]["headers"] == [{"name": PING_HEADER, "present_match": True}]
    (warm,) = ping["route"]["weighted_clusters"]["clusters"]
    assert warm == {"name": "warm|default|embedder|cloudrun", "weight": 60, "host_rewrite_literal": CLOUDRUN_HOST}
    assert "headers" not in entry["match"]
    clusters = _by_name(render_clusters([route]))
    twin, own = clusters["warm|default|embedder|cloudrun"], clusters["ip|default|embedder|cloudrun"]
    same = json.dumps(own).replace("ip|default|embedder|cloudrun", "warm|default|embedder|cloudrun")
    assert json.dumps(twin) == same  # the same upstream, TLS and ID-token audience
    tags = render_stats_config()["stats_tags"]
    assert not any(re.match(t["regex"], "cluster.warm|default|embedder|cloudrun.upstream_rq_total") for t in tags)
    assert all(re.match(t["regex"], "cluster.ip|default|embedder|cloudrun.upstream_rq_total") for t in tags)
    # nothing serverless with traffic: no ping route (pings are only planned for a serverless placement)
    assert len(render_route_configuration([_route((C, 100), (L, 0))])["virtual_hosts"][0]["routes"]) == 1


# ----------------------------------------------------------------------------------------------- plan


def _docs(routes: list[Route]) -> tuple[dict[str, Any], dict[str, Any]]:
    return render_cds(routes), render_rds(routes)


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        pytest.param(None, [_route((C, 100))], [XdsKind.CDS, XdsKind.RDS], id="first-apply"),
        pytest.param([_route((C, 100))], [_route((C, 100))], [], id="no-change"),
        pytest.param([_route((C, 100))], [_route((C, 100), (L, 0))], [XdsKind.CDS, XdsKind.RDS], id="add-target"),
        pytest.param([_route((C, 100), (L, 0))], [_route((C, 90), (L, 10))], [XdsKind.RDS], id="shift-weights"),
        pytest.param([_route((C, 0), (L, 100))], [_route((L, 100))], [XdsKind.RDS, XdsKind.CDS], id="remove-target"),
        pytest.param(
            [_route((C, 100))], [_route((L, 100))], [XdsKind.CDS, XdsKind.RDS, XdsKind.CDS], id="replace-target"
        ),
    ],
)
def test_plan_adds_clusters_before_routes_and_removes_them_after(
    before: list[Route] | None, after: list[Route], expected: list[XdsKind]
) -> None:
    current_cds, current_rds = _docs(before) if before is not None else (None, None)
    desired = _docs(after)
    writes = plan_xds_writes(current_cds, current_rds, desired[0], desired[1])
    assert [w.kind for w in writes] == expected
    if expected == [XdsKind.CDS, XdsKind.RDS, XdsKind.CDS]:
        union = {r["name"] for r in writes[0].document["resources"]}
        assert union == {"ip|default|embedder|cluster", "ip|default|embedder|lambda", "warm|default|embedder|lambda"}
        assert writes[0].version != desired[0]["version_info"]
    if writes:
        assert writes[-1].document in desired


# ----------------------------------------------------------------------------------------------- manifests


def test_configmap_holds_bootstrap_and_both_xds_files() -> None:
    routes = [_route((C, 100))]
    configmap = render_configmap(routes, namespace="router")
    data = configmap["data"]
    assert sorted(data) == ["cds.json", "envoy.json", "rds.json"]
    assert json.loads(data["cds.json"]) == render_cds(routes)
    assert json.loads(data["rds.json"]) == render_rds(routes)
    assert json.loads(data["envoy.json"]) == render_bootstrap()


def test_router_deployment_runs_the_given_envoy_image_with_probes_on_the_health_listener() -> None:
    deployment = render_router_deployment(image="envoyproxy/envoy:v1.40.0", namespace="router", replicas=3)
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "envoyproxy/envoy:v1.40.0"
    assert container["args"][:2] == ["-c", "/etc/inference-router/envoy.json"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "health"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": 8080, "health": 9902, "stats": 9903}
    assert pod["volumes"][0]["configMap"]["name"] == "inference-router"
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    with pytest.raises(ValueError, match="health_port"):
        render_router_deployment(EnvoySettings(health_port=None))


def test_workload_service_resolves_to_the_router() -> None:
    service = render_workload_service(_route((C, 100)), router_namespace="router")
    assert service["metadata"] == {
        "name": "embedder",
        "namespace": "default",
        "labels": {
            "app.kubernetes.io/component": "inference-endpoint",
            "app.kubernetes.io/managed-by": "inference-placement",
        },
    }
    assert service["spec"]["externalName"] == "inference-router.router.svc.cluster.local"


@pytest.mark.parametrize("module", [model, envoy, xds_files, manifests], ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_public_names_exist(module: Any) -> None:
    for name in module.__all__:
        assert hasattr(module, name), name
