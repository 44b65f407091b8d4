"""Routing against the real Envoy: every rendered config validates, and weight changes applied through the xDS
files move live traffic without failing a request (loopback only, bounded load)."""

from __future__ import annotations

import asyncio
import json
import math
import urllib.error
import urllib.request
import zipfile
from dataclasses import replace
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest

from inference_placement.api.names import cloud_run_service_id, lambda_function_name
from inference_placement.api.spec import TargetName
from inference_placement.api.status import (
    InferenceWorkloadStatus,
    MigrationStatus,
    MigrationStep,
    TargetResourceStatus,
    TargetsStatus,
)
from inference_placement.api.workload import InferenceWorkload
from inference_placement.routing.envoy import (
    CLUSTER_TYPE_URL,
    EnvoySettings,
    render_bootstrap,
    render_cds,
    render_rds,
    render_static_config,
)
from inference_placement.routing.model import (
    EndpointsConfig,
    route_from_status,
)
from inference_placement.routing.xds_files import (
    EnvoyXdsApplier,
    XdsKind,
    XdsRejectedError,
    XdsValidationError,
    read_document,
    write_document,
)
from tests.plugins.cloud import MotoAws, MotoServer, make_workload
from tests.plugins.envoy import (
    EnvoyRouter,
    FakeGcpMetadata,
    HttpUpstreams,
    LoadLoop,
    LoopbackOnlyApplier,
    envoy_validate,
)

C, R, L = TargetName.CLUSTER, TargetName.CLOUDRUN, TargetName.LAMBDA
STAMP = "2026-11-22T12:00:00Z"
CLUSTER_ENDPOINT = "http://embedder-model.default.svc:8080"
CLOUDRUN_HOST = "ip-default-embedder-44b50070-uc.a.run.app"
CLOUDRUN_URL = f"https://{CLOUDRUN_HOST}"
LAMBDA_ARN = "arn:aws:lambda:eu-west-1:123456789012:function:ip-default-embedder-44b50070:live"
LAMBDA_URL = "https://0f1e2d3c4b5a69788796a5b4c3d2e1f0.lambda-url.eu-west-1.on.aws/"
HOST = "embedder.default.svc"
MAX_REQUESTS = 2000
MAX_SECONDS = 60.0

pytestmark = pytest.mark.slow


def _status(
    placement: TargetName | None, migration: tuple[TargetName | None, TargetName, MigrationStep, int] | None = None
) -> InferenceWorkloadStatus:
    record = None
    if migration is not None:
        source, target, step, percent = migration
        record = MigrationStatus(
            source=source, target=target, step=step, traffic_percent=percent, started_at=STAMP, step_started_at=STAMP
        )
    targets = TargetsStatus(
        cluster=TargetResourceStatus(name="embedder-model", endpoint=CLUSTER_ENDPOINT, ready=True),
        cloudrun=TargetResourceStatus(name="svc", endpoint=CLOUDRUN_URL, ready=True),
        lambda_=TargetResourceStatus(name=LAMBDA_ARN, endpoint=LAMBDA_URL, ready=True),
    )
    return InferenceWorkloadStatus(placement=placement, migration=record, targets=targets)


def _workload(status: InferenceWorkloadStatus, name: str = "embedder", namespace: str = "default") -> InferenceWorkload:
    """The workload with ``status``, its targets renamed to this workload's own resources (the router checks)."""
    if (namespace, name) != ("default", "embedder") and status.targets is not None:
        function = lambda_function_name(namespace, name)
        service_id = cloud_run_service_id(namespace, name)
        targets = TargetsStatus(
            cluster=TargetResourceStatus(
                name=f"{name}-model", endpoint=f"http://{name}-model.{namespace}.svc:8080", ready=True
            ),
            cloudrun=TargetResourceStatus(name="svc", endpoint=f"https://{service_id}-uc.a.run.app", ready=True),
            lambda_=TargetResourceStatus(
                name=LAMBDA_ARN.replace("ip-default-embedder-44b50070", function), endpoint=LAMBDA_URL, ready=True
            ),
        )
        status = status.model_copy(update={"targets": targets})
    return make_workload(name, namespace).model_copy(update={"status": status})


# ----------------------------------------------------------------------------------------------- validate

_PRODUCTION = EnvoySettings()
_SCENARIOS: list[Any] = [
    pytest.param([], id="no-workloads"),
    pytest.param([_workload(_status(C))], id="on-cluster"),
    pytest.param([_workload(_status(None, (None, L, MigrationStep.AWAITING_HEALTHY, 0)))], id="not-serving-yet"),
    pytest.param([_workload(_status(C, (C, R, MigrationStep.PROVISIONING, 0)))], id="cloudrun-at-0"),
    pytest.param([_workload(_status(C, (C, R, MigrationStep.SHIFTING, 10)))], id="cloudrun-at-10"),
    pytest.param([_workload(_status(C, (C, L, MigrationStep.SHIFTING, 50)))], id="lambda-at-50"),
    pytest.param([_workload(_status(L, (C, L, MigrationStep.DRAINING, 100)))], id="lambda-draining"),
    pytest.param([_workload(_status(C, (C, L, MigrationStep.ROLLING_BACK, 0)))], id="rolling-back"),
    pytest.param(
        [
            _workload(_status(C, (C, L, MigrationStep.SHIFTING, 50))),
            _workload(_status(R), namespace="ml"),
            _workload(_status(L), name="ranker", namespace="ml"),
        ],
        id="three-workloads-same-name-two-namespaces",
    ),
]


@pytest.mark.parametrize("workloads", _SCENARIOS)
def test_every_rendered_config_passes_envoy_validate(envoy_binary: str, workloads: list[InferenceWorkload]) -> None:
    routes = [route_from_status(w) for w in workloads]
    envoy_validate(render_static_config(routes, _PRODUCTION), envoy_binary)


def test_the_bootstrap_validates_with_its_xds_files_in_place(envoy_binary: str, tmp_path: Path) -> None:
    settings = EnvoySettings(xds_dir=str(tmp_path))
    routes = [route_from_status(_workload(_status(C, (C, L, MigrationStep.SHIFTING, 50))))]
    write_document(tmp_path / "cds.json", render_cds(routes, settings))
    write_document(tmp_path / "rds.json", render_rds(routes, settings))
    envoy_validate(render_bootstrap(settings), envoy_binary)


def test_a_first_token_route_validates_and_only_it_tags_the_first_token_histogram(envoy_binary: str) -> None:
    """The main listener records the time to the first byte (Envoy's stats access logger); only a route whose
    objective bounds it carries the workload's tags (route metadata), so only its series is labelled."""
    stream = replace(route_from_status(_workload(_status(C), name="stream")), first_token=True)
    whole = route_from_status(_workload(_status(C), name="whole"))
    static = render_static_config([stream, whole], _PRODUCTION)
    envoy_validate(static, envoy_binary)
    listener = next(x for x in static["static_resources"]["listeners"] if x["name"] == "inference")
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert [log["name"] for log in hcm["access_log"]] == ["envoy.access_loggers.stats"]
    hosts = {h["name"]: h for h in hcm["route_config"]["virtual_hosts"]}
    tagged = [r for h in hosts.values() for r in h["routes"] if "metadata" in r]
    assert [r["name"] for r in tagged] == [stream.key]
    assert tagged[0]["metadata"]["filter_metadata"]["inference-placement"] == {
        "namespace": stream.namespace,
        "workload": "stream",
    }


def test_validate_is_not_a_rubber_stamp(envoy_binary: str) -> None:
    static = render_static_config([route_from_status(_workload(_status(C, (C, L, MigrationStep.SHIFTING, 50))))])
    static["static_resources"]["clusters"] = [
        c for c in static["static_resources"]["clusters"] if not c["name"].endswith("|lambda")
    ]
    with pytest.raises(AssertionError, match="unknown weighted cluster"):
        envoy_validate(static, envoy_binary)


async def test_the_applier_refuses_a_config_envoy_would_not_load_before_writing_it(
    envoy_binary: str, tmp_path: Path
) -> None:
    settings = EnvoySettings(xds_dir=str(tmp_path), ca_bundle_path=str(tmp_path / "missing-ca.pem"))
    applier = EnvoyXdsApplier(tmp_path, "http://127.0.0.1:9", settings, envoy_binary=envoy_binary)
    route = route_from_status(_workload(_status(L)))
    with pytest.raises(XdsValidationError, match=r"missing-ca\.pem"):
        await applier.apply([route])
    assert not (tmp_path / "cds.json").exists(), "nothing is written when validation fails"


# ----------------------------------------------------------------------------------------------- live traffic


def _read(request: str | urllib.request.Request) -> bytes:
    """The body of a blocking HTTP request (tests run it in a thread, off the event loop)."""
    with urllib.request.urlopen(request, timeout=5) as response:
        body: bytes = response.read()
        return body


def _config(model: str, cloudrun: str) -> EndpointsConfig:
    return EndpointsConfig(address_overrides={CLUSTER_ENDPOINT: model, CLOUDRUN_URL: cloudrun})


async def test_weight_steps_move_live_traffic_without_failing_a_request(
    envoy_router: EnvoyRouter, http_upstreams: HttpUpstreams, fake_gcp_metadata: FakeGcpMetadata
) -> None:
    """cluster -> Cloud Run: 100/0, 90/10, 50/50, 0/100 (each a migration step in status), then the source leaves
    the route; every step goes through the xDS files while a bounded request loop runs through Envoy."""
    model = http_upstreams.start("cluster")
    cloudrun = http_upstreams.start("cloudrun")
    config = _config(model.url, cloudrun.url)
    # No envoy validation inside the loop: it takes ~1 s a step on this machine (every config here is validated by
    # test_every_rendered_config_passes_envoy_validate), and the point is how fast a confirmed move lands.
    applier = envoy_router.applier()
    steps: list[tuple[str, InferenceWorkloadStatus, dict[str, float]]] = [
        ("100/0", _status(C, (C, R, MigrationStep.AWAITING_HEALTHY, 0)), {"cluster": 1.0}),
        ("90/10", _status(C, (C, R, MigrationStep.SHIFTING, 10)), {"cloudrun": 0.10}),
        ("50/50", _status(C, (C, R, MigrationStep.SHIFTING, 50)), {"cloudrun": 0.50}),
        ("0/100", _status(R, (C, R, MigrationStep.SHIFTING, 100)), {"cloudrun": 1.0}),
        ("source removed", _status(R), {"cloudrun": 1.0}),
    ]
    per_phase = 300
    moves: dict[str, list[tuple[str, float]]] = {}
    first = await applier.apply([route_from_status(_workload(steps[0][1]), config)])
    moves[steps[0][0]] = [(m.kind.value, m.seconds) for m in first]
    loop = LoadLoop(envoy_router.listen_port, HOST, max_requests=MAX_REQUESTS, max_seconds=MAX_SECONDS)
    loop.phase = steps[0][0]
    loop.start()
    try:
        await asyncio.to_thread(loop.wait_for_phase, steps[0][0], per_phase)
        for label, status, _ in steps[1:]:
            loop.phase = None
            applied = await applier.apply([route_from_status(_workload(status), config)])
            moves[label] = [(m.kind.value, m.seconds) for m in applied]
            loop.phase = label
            await asyncio.to_thread(loop.wait_for_phase, label, per_phase)
    finally:
        loop.stop()

    print(f"\nrequests {loop.total} in {loop.finished_at - loop.started_at:.1f}s, failures {loop.failures}")
    for label, result in loop.results.items():
        shares = {name: round(result.share(name), 3) for name in sorted(result.served_by)}
        print(f"  {label:>15}: {result.requests} requests, {result.failures} failed, shares {shares}")
    for label, applied_moves in moves.items():
        print(
            f"  moves for {label}: " + ", ".join(f"{kind} {seconds * 1000:.0f} ms" for kind, seconds in applied_moves)
        )

    assert loop.failures == 0, {k: dict(v.errors) for k, v in loop.results.items() if v.failures}
    assert loop.total <= MAX_REQUESTS
    for label, _, expected in steps:
        result = loop.results[label]
        for name, share in expected.items():
            # Envoy draws each request's cluster at random: a split's share is binomial. Five standard deviations
            # (a false alarm about once in 3.5 million checks; 0.086 at 90/10 and 0.14 at 50/50 for 300 requests)
            # still catch a wrong split: the next step's weights are 0.4 away. A pure step must be exact.
            tolerance = 5 * math.sqrt(share * (1 - share) / result.requests)
            assert abs(result.share(name) - share) <= tolerance, (label, dict(result.served_by), round(tolerance, 3))
    # Clusters were added before routes pointed at them and removed after: CDS, RDS ... RDS, CDS.
    assert [k for k, _ in moves["100/0"]] == ["cds", "rds"]
    assert [k for k, _ in moves["90/10"]] == ["rds"]
    assert [k for k, _ in moves["source removed"]] == ["rds", "cds"]
    # Cloud Run got its Host rewritten and an ID token for its URL from the metadata server.
    assert cloudrun.last_headers["host"] == CLOUDRUN_HOST
    assert cloudrun.last_headers["authorization"].startswith("Bearer ey")
    assert set(fake_gcp_metadata.audiences) == {CLOUDRUN_URL}
    assert set(fake_gcp_metadata.flavors) == {"Google"}
    assert model.last_headers["host"] == HOST
    assert "authorization" not in model.last_headers


async def test_removing_a_serving_target_routes_first_then_clusters_fails_nothing(
    envoy_router: EnvoyRouter, http_upstreams: HttpUpstreams
) -> None:
    """A rollback from 50/50: the target leaves the route (RDS) before its cluster goes (CDS)."""
    model, cloudrun = http_upstreams.start("cluster"), http_upstreams.start("cloudrun")
    config = _config(model.url, cloudrun.url)
    applier = envoy_router.applier()
    await applier.apply([route_from_status(_workload(_status(C, (C, R, MigrationStep.SHIFTING, 50))), config)])
    loop = LoadLoop(envoy_router.listen_port, HOST, max_requests=600, max_seconds=30).start()
    try:
        loop.phase = "50/50"
        await asyncio.to_thread(loop.wait_for_phase, "50/50", 150)
        loop.phase = None
        rollback = _status(C, (C, R, MigrationStep.ROLLING_BACK, 0))
        moves = await applier.apply([route_from_status(_workload(rollback), config)])
        loop.phase = "rolled back"
        await asyncio.to_thread(loop.wait_for_phase, "rolled back", 150)
    finally:
        loop.stop()
    print(f"\nrequests {loop.total}, failures {loop.failures}, moves {[m.kind.value for m in moves]}")
    assert [m.kind for m in moves] == [XdsKind.RDS, XdsKind.CDS]
    assert loop.failures == 0, {k: dict(v.errors) for k, v in loop.results.items()}
    assert loop.results["rolled back"].share("cluster") == 1.0
    assert 0.3 < loop.results["50/50"].share("cloudrun") < 0.7
    cds = read_document(applier.path(XdsKind.CDS))
    assert cds is not None and [c["name"] for c in cds["resources"]] == ["ip|default|embedder|cluster"]


async def test_removing_the_cluster_before_the_route_fails_requests(
    envoy_router: EnvoyRouter, http_upstreams: HttpUpstreams
) -> None:
    """The wrong order, on purpose: why the applier removes routes first (Envoy answers 503 cluster_not_found)."""
    model, cloudrun = http_upstreams.start("cluster"), http_upstreams.start("cloudrun")
    config = _config(model.url, cloudrun.url)
    applier = envoy_router.applier()
    both = route_from_status(_workload(_status(R, (C, R, MigrationStep.SHIFTING, 100))), config)
    await applier.apply([both])
    only_cluster_cds = render_cds([route_from_status(_workload(_status(C)), config)], envoy_router.settings)
    await applier.apply_document(XdsKind.CDS, only_cluster_cds)  # the route still sends 100% to cloudrun
    statuses = [envoy_router.request(HOST)[0] for _ in range(20)]
    assert statuses == [503] * 20
    assert envoy_router.stat("cluster_manager.cds.update_rejected") == 0


async def test_a_broken_cds_file_is_rejected_and_the_previous_config_keeps_serving(
    envoy_router: EnvoyRouter, http_upstreams: HttpUpstreams
) -> None:
    model, cloudrun = http_upstreams.start("cluster"), http_upstreams.start("cloudrun")
    config = _config(model.url, cloudrun.url)
    applier = envoy_router.applier()
    serving = [route_from_status(_workload(_status(C)), config)]
    await applier.apply(serving)
    good_cds = read_document(applier.path(XdsKind.CDS))
    broken = {
        "version_info": "broken-1",
        "resources": [{"@type": CLUSTER_TYPE_URL, "name": "ip|default|embedder|cluster", "connect_timeout": "-1s"}],
    }
    loop = LoadLoop(envoy_router.listen_port, HOST, max_requests=400, max_seconds=30).start()
    try:
        loop.phase = "before"
        await asyncio.to_thread(loop.wait_for_phase, "before", 100)
        with pytest.raises(XdsRejectedError, match="rejected CDS version broken-1") as rejected:
            await applier.apply_document(XdsKind.CDS, broken)
        loop.phase = "after rejection"
        await asyncio.to_thread(loop.wait_for_phase, "after rejection", 100)
    finally:
        loop.stop()
    print(f"\n{rejected.value}\nrequests {loop.total}, failures {loop.failures}")
    assert good_cds is not None
    assert rejected.value.serving_version == good_cds["version_info"] and rejected.value.restored
    assert envoy_router.stat("cluster_manager.cds.update_rejected") == 1
    assert envoy_router.stat("cluster_manager.cds.version_text") == good_cds["version_info"]
    assert read_document(applier.path(XdsKind.CDS)) == good_cds, "the file on disk is what Envoy serves again"
    assert loop.failures == 0
    assert loop.results["after rejection"].share("cluster") == 1.0
    # The next change plans from the restored truth and goes through.
    moves = await applier.apply([route_from_status(_workload(_status(R)), config)])
    assert [m.kind for m in moves] == [XdsKind.CDS, XdsKind.RDS, XdsKind.CDS]
    assert envoy_router.request(HOST)[1]["x-served-by"] == "cloudrun"


async def test_a_missed_override_never_reaches_envoy(envoy_router: EnvoyRouter) -> None:
    with pytest.raises(AssertionError, match="points at"):
        await envoy_router.applier().apply([route_from_status(_workload(_status(C)))])  # embedder-model.default.svc
    assert read_document(envoy_router.xds_dir / "cds.json") == render_cds([], envoy_router.settings)


async def test_unknown_hosts_and_unplaced_workloads_get_a_clear_answer(
    envoy_router: EnvoyRouter, envoy_binary: str
) -> None:
    applier = envoy_router.applier(envoy_binary=envoy_binary)  # validated before it is written
    provisioning = _workload(_status(None, (None, L, MigrationStep.PROVISIONING, 0)))
    await applier.apply([route_from_status(provisioning, EndpointsConfig(lambda_endpoint="http://127.0.0.1:9"))])
    status, _, body = envoy_router.request(HOST)
    assert (status, body) == (503, b"inference workload default/embedder has no serving placement yet\n")
    status, _, body = envoy_router.request("other.default.svc")
    assert status == 404 and b"no inference workload is routed for this Host" in body
    assert envoy_router.request(f"{HOST}.cluster.local:80")[0] == 503  # port stripped, long form routed


async def test_the_health_listener_serves_ready_and_stats_and_nothing_else(
    envoy_router_with_health: EnvoyRouter, http_upstreams: HttpUpstreams
) -> None:
    """Probes and the operator read readiness and applied versions there; the admin itself stays on loopback."""
    router = envoy_router_with_health
    model = http_upstreams.start("cluster")
    applier = LoopbackOnlyApplier(router.xds_dir, router.health_url, router.settings)  # stats through the proxy
    moves = await applier.apply([route_from_status(_workload(_status(C)), _config(model.url, model.url))])
    assert [m.kind for m in moves] == [XdsKind.CDS, XdsKind.RDS]
    assert (await asyncio.to_thread(_read, f"{router.health_url}/ready")).strip() == b"LIVE"
    for path, method in [("/quitquitquit", "POST"), ("/config_dump", "GET"), ("/stats", "POST")]:
        request = urllib.request.Request(f"{router.health_url}{path}", method=method)
        with pytest.raises(urllib.error.HTTPError) as refused:
            await asyncio.to_thread(_read, request)
        assert refused.value.code == 404
    assert router.process.poll() is None


# ----------------------------------------------------------------------------------------------- Lambda


async def test_lambda_requests_are_signed_invocations_of_the_function_arn(
    envoy_router: EnvoyRouter, http_upstreams: HttpUpstreams
) -> None:
    """Pass-through mode against a recording upstream: the filter turns the request into a SigV4-signed Invoke of
    the qualified ARN, signed for the real Lambda host of the ARN's region."""
    recorder = http_upstreams.start("lambda-endpoint")
    config = EndpointsConfig(lambda_endpoint=recorder.url, lambda_payload_passthrough=True)
    await envoy_router.applier().apply([route_from_status(_workload(_status(L)), config)])
    status, headers, _ = envoy_router.request(HOST, method="POST")
    assert status == 200 and headers["x-served-by"] == "lambda-endpoint"
    seen = recorder.last_headers
    assert recorder.last_path == f"/2015-03-31/functions/{LAMBDA_ARN}/invocations"
    assert seen["host"] == "lambda.eu-west-1.amazonaws.com"
    assert seen["authorization"].startswith("AWS4-HMAC-SHA256 Credential=testing/")
    assert "/eu-west-1/lambda/aws4_request" in seen["authorization"]
    assert seen["x-amz-invocation-type"] == "RequestResponse"


def _create_function(moto_aws: MotoAws, lambda_client: Any) -> str:
    archive = BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("handler.py", "def handle(event, context):\n    return event\n")
    function = lambda_client.create_function(
        FunctionName="ip-default-embedder-44b50070",
        Runtime="python3.12",
        Role=moto_aws.role_arn,
        Handler="handler.handle",
        Code={"ZipFile": archive.getvalue()},
    )
    version = lambda_client.publish_version(FunctionName="ip-default-embedder-44b50070")["Version"]
    lambda_client.create_alias(FunctionName="ip-default-embedder-44b50070", Name="live", FunctionVersion=version)
    return f"{function['FunctionArn']}:live"


async def test_lambda_route_invokes_the_function_on_moto(
    moto_aws: MotoAws, moto_server: MotoServer, lambda_client: Any, envoy_router: EnvoyRouter
) -> None:
    """Default (JSON) mode end to end: Envoy -> aws_lambda filter -> moto's Lambda API over plain HTTP -> the
    function's Lambda-proxy answer becomes the HTTP response. moto without Docker answers queued results."""
    arn = _create_function(moto_aws, lambda_client)
    status = _status(L)
    assert status.targets is not None and status.targets.lambda_ is not None
    status.targets.lambda_.name = arn
    config = EndpointsConfig(lambda_endpoint=moto_aws.endpoint_url)
    await envoy_router.applier().apply([route_from_status(_workload(status), config)])
    requests = 20
    answer = {"statusCode": 201, "headers": {"x-served-by": "lambda"}, "body": "prediction"}
    moto_server.post(
        "/moto-api/static/lambda-simple/response",
        {"results": [json.dumps(answer)] * requests, "region": moto_aws.region},
    )
    answers = [envoy_router.request(HOST, method="POST") for _ in range(requests)]
    assert [(s, h.get("x-served-by"), b) for s, h, b in answers] == [(201, "lambda", b"prediction")] * requests
    cluster = "ip|default|embedder|lambda"
    assert envoy_router.stat(f"cluster.{cluster}.upstream_rq_completed") == requests
