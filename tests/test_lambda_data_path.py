"""The Lambda data path as AWS runs it (docs/lambda.md), end to end on loopback with the real pieces:

    client -> Envoy (route rendered by routing.envoy: aws_request_signing, service lambda, Host = the Function URL)
      -> the Function URL front end's stand-in (devtools.function_url: SigV4 checked, payload 2.0 event)
      -> aws-lambda-rie (AWS's Runtime Interface Emulator) -> lambda-adapter (AWS's Lambda Web Adapter)
      -> e2e/model_server.py

The emulator and the adapter come from ``e2e/lambda-runtime.sh`` (built once, cached; the ``lambda_runtime``
fixture); missing, these tests FAIL when ``CI=true`` and are skipped elsewhere. The pure parts of the stand-in
(event and response mapping, signature check) are tested without them.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from inference_placement.api.spec import TargetName
from inference_placement.api.status import (
    InferenceWorkloadStatus,
    MigrationStatus,
    MigrationStep,
    TargetResourceStatus,
    TargetsStatus,
)
from inference_placement.devtools.function_url import check_signature, function_url_event, http_response
from inference_placement.devtools.lambda_runtime import LambdaRuntime
from inference_placement.devtools.local_stack import start_model_server
from inference_placement.devtools.processes import Processes
from inference_placement.routing.model import EndpointsConfig, Overflow, PodsUpstream, route_for
from tests.plugins.envoy import FAKE_AWS_ENV, EnvoyRouter, start_envoy
from tests.plugins.lambda_runtime import LocalFunction, start_local_function

ROOT = Path(__file__).resolve().parents[1]
REGION = "eu-west-1"
ARN = "arn:aws:lambda:eu-west-1:123456789012:function:ip-default-embedder-44b50070:live"
URL_HOST = "7c0a4ee1b2d34f5e8a9b0c1d2e3f4a5b.lambda-url.eu-west-1.on.aws"  # the shape AWS (and moto) publish
HOST = "embedder.default.svc"
KEY_ID, SECRET = FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"], FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"]
C, L = TargetName.CLUSTER, TargetName.LAMBDA


# ----------------------------------------------------------------------------------------------- the stand-in


def test_an_http_request_becomes_the_documented_function_url_event() -> None:
    headers = [
        ("Host", URL_HOST),
        ("Content-Type", "application/json"),
        ("X-Multi", "a"),
        ("x-multi", "b"),
        ("Cookie", "s=1; t=2"),
        ("User-Agent", "probe/1"),
    ]
    event = function_url_event(
        "POST",
        "/v1/models/m:predict",
        "a=1&a=2&b=",
        headers,
        b'{"instances": [1]}',
        domain=URL_HOST,
        account_id="123456789012",
        source_ip="127.0.0.1",
        request_id="r-1",
        now=1_700_000_000.5,
    )
    assert event["version"] == "2.0" and event["routeKey"] == "$default"
    assert (event["rawPath"], event["rawQueryString"]) == ("/v1/models/m:predict", "a=1&a=2&b=")
    assert event["headers"]["x-multi"] == "a,b" and "cookie" not in event["headers"]
    assert event["cookies"] == ["s=1", "t=2"]
    assert event["queryStringParameters"] == {"a": "1,2", "b": ""}
    assert event["requestContext"]["http"] == {
        "method": "POST",
        "path": "/v1/models/m:predict",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "probe/1",
    }
    assert event["requestContext"]["domainPrefix"] == URL_HOST.split(".")[0]
    assert event["requestContext"]["timeEpoch"] == 1_700_000_000_500
    assert (event["body"], event["isBase64Encoded"]) == ('{"instances": [1]}', False)
    binary = function_url_event(
        "PUT", "/x", "", [("content-type", "application/octet-stream")], b"\x00\xff", domain=URL_HOST,
        account_id="1", source_ip="127.0.0.1", request_id="r", now=0.0,
    )  # fmt: skip
    assert (binary["body"], binary["isBase64Encoded"]) == ("AP8=", True)


def test_the_functions_answer_becomes_the_http_response() -> None:
    answer = http_response(
        json.dumps({"statusCode": 429, "headers": {"retry-after": "1"}, "cookies": ["a=b"], "body": "busy"}).encode()
    )
    assert (answer.status, answer.body) == (429, b"busy")
    assert ("retry-after", "1") in answer.headers and ("set-cookie", "a=b") in answer.headers
    encoded = http_response(json.dumps({"statusCode": 200, "body": "AP8=", "isBase64Encoded": True}).encode())
    assert encoded.body == b"\x00\xff"
    inferred = http_response(b'{"prediction": 1}')  # no statusCode: 200, the JSON is the body
    assert (inferred.status, inferred.body, inferred.headers) == (
        200,
        b'{"prediction": 1}',
        [("content-type", "application/json")],
    )


def _signed(body: bytes, *, secret: str = SECRET, service: str = "lambda", path: str = "/predict") -> dict[str, str]:
    request = AWSRequest(
        "POST",
        f"https://{URL_HOST}{path}",
        data=body,
        headers={"content-type": "application/json", "x-amz-content-sha256": hashlib.sha256(body).hexdigest()},
    )
    SigV4Auth(Credentials(KEY_ID, secret), service, REGION).add_auth(request)
    return {**dict(request.headers.items()), "host": URL_HOST}


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        pytest.param(lambda b: _signed(b), None, id="valid"),
        pytest.param(lambda b: {"host": URL_HOST}, "no AWS4-HMAC-SHA256", id="unsigned"),
        pytest.param(lambda b: _signed(b, secret="wrong"), "signature does not match", id="wrong-secret"),
        pytest.param(lambda b: _signed(b, service="execute-api"), "not 'lambda'", id="other-service"),
        pytest.param(
            lambda b: {**_signed(b), "x-amz-content-sha256": "UNSIGNED-PAYLOAD"}, "SHA-256", id="unsigned-payload"
        ),
        pytest.param(lambda b: _signed(b + b" "), "SHA-256", id="body-changed"),
        pytest.param(lambda b: _signed(b, path="/other"), "signature does not match", id="path-changed"),
    ],
)
def test_the_stand_in_checks_sigv4_for_service_lambda(headers: object, why: str | None) -> None:
    body = b'{"instances": [1, 2]}'
    made = headers(body)  # type: ignore[operator]
    got = check_signature("POST", URL_HOST, "/predict", made, body, {KEY_ID: SECRET}, REGION, now=time.time())
    assert (got is None) if why is None else (got is not None and why in got), got


def test_a_signature_older_than_five_minutes_is_refused() -> None:
    body = b"{}"
    signed = _signed(body)
    secrets = {KEY_ID: SECRET}
    assert check_signature("POST", URL_HOST, "/predict", signed, body, secrets, REGION, now=time.time() + 200) is None
    late = check_signature("POST", URL_HOST, "/predict", signed, body, secrets, REGION, now=time.time() + 400)
    assert late is not None and "expired" in late


# ----------------------------------------------------------------------------------------------- end to end


@pytest.fixture
def local_function(lambda_runtime: LambdaRuntime, tmp_path: Path) -> Iterator[LocalFunction]:
    procs = Processes()
    try:
        yield start_local_function(procs, lambda_runtime, tmp_path, "lambda", region=REGION)
    finally:
        procs.stop_all()


def _status(placement: TargetName, migration: MigrationStatus | None = None) -> InferenceWorkloadStatus:
    targets = TargetsStatus(
        cluster=TargetResourceStatus(name="embedder-model", endpoint="http://embedder-model.default.svc:8080"),
        lambda_=TargetResourceStatus(name=ARN, endpoint=f"https://{URL_HOST}/", ready=True),
    )
    return InferenceWorkloadStatus(placement=placement, migration=migration, targets=targets)


def _post(port: int, path: str, body: bytes, host: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers={"Host": host, "Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def _without_timing(body: bytes) -> dict[str, object]:
    answer: dict[str, object] = json.loads(body)
    answer.pop("elapsed_seconds", None)
    return answer


@pytest.fixture
def router(envoy_binary: str, tmp_path: Path) -> Iterator[EnvoyRouter]:
    envoy = start_envoy(envoy_binary, tmp_path / "envoy", overflow_listener=True)
    try:
        yield envoy
    finally:
        envoy.stop()


async def test_a_workload_on_lambda_answers_with_the_model_servers_response(
    router: EnvoyRouter, local_function: LocalFunction
) -> None:
    """Placed on Lambda: every request goes through Envoy's signing, the Function URL front end, the emulator and
    the adapter, and comes back as the model server's own answer (status, headers, body)."""
    config = EndpointsConfig(lambda_url_endpoint=local_function.url)
    await router.applier().apply([route_for("default", "embedder", _status(L), config)])
    model_port = int(local_function.model_url.rsplit(":", 1)[1])
    for instances in ([1], [1, 2, 3], list(range(2000))):  # the last one ~10 kB: the payload hash covers it all
        body = json.dumps({"instances": instances}).encode()
        status, headers, answer = _post(router.listen_port, "/v1/models/lambda:predict", body, HOST)
        direct = _post(model_port, "/v1/models/lambda:predict", body, "model")
        assert (status, headers.get("x-served-by")) == (200, "lambda"), answer
        assert _without_timing(answer) == _without_timing(direct[2])
    # the query string travels (rawQueryString) and the model server reads it
    status, _, answer = _post(router.listen_port, "/predict?sleep=0.05", b"{}", HOST)
    assert status == 200 and json.loads(answer)["service_seconds"] == 0.05
    cluster = "ip|default|embedder|lambda"
    assert router.stat(f"cluster.{cluster}.upstream_rq_200") == 4
    # the stand-in is no rubber stamp: the same request unsigned (straight to it) is refused
    stand_in_port = int(local_function.url.rsplit(":", 1)[1])
    refused = _post(stand_in_port, "/predict", b"{}", URL_HOST)
    assert refused[0] == 403 and "Authorization" in refused[1]["x-standin-reason"]


async def test_a_lambda_overflow_reaches_the_model_server_when_the_pods_are_gone(
    router: EnvoyRouter, local_function: LocalFunction
) -> None:
    """Scale to zero with Lambda as the overflow target: the composite cluster falls through to the overflow hop,
    and the function's own cluster signs the request there (the signing filter rides on that cluster)."""
    config = EndpointsConfig(lambda_url_endpoint=local_function.url)
    migration = None
    route = route_for("default", "embedder", _status(C, migration), config, pod_addresses=(), overflow=L)
    assert route.overflow is not None and route.overflow == Overflow(L, route.overflow.upstream)
    assert isinstance(route.pods.upstream if route.pods else None, PodsUpstream)
    await router.applier().apply([route])
    answers = [_post(router.listen_port, "/predict", b'{"instances": [7]}', HOST) for _ in range(5)]
    assert [(s, h.get("x-served-by")) for s, h, _ in answers] == [(200, "lambda")] * 5
    assert all(json.loads(b)["predictions"] == json.loads(answers[0][2])["predictions"] for _, _, b in answers)


async def test_a_shift_to_lambda_splits_between_the_pods_and_the_function(
    router: EnvoyRouter, local_function: LocalFunction, tmp_path: Path
) -> None:
    """Mid-migration (50 %): both targets answer through the same route, Lambda's through the whole data path."""
    procs = Processes()
    try:
        pods_url = start_model_server(procs, ROOT, tmp_path, "cluster")
        config = EndpointsConfig(
            address_overrides={"http://embedder-model.default.svc:8080": pods_url},
            lambda_url_endpoint=local_function.url,
        )
        stamp = "2026-12-06T08:00:00Z"
        migration = MigrationStatus(
            source=C, target=L, step=MigrationStep.SHIFTING, traffic_percent=50, started_at=stamp, step_started_at=stamp
        )
        await router.applier().apply([route_for("default", "embedder", _status(C, migration), config)])
        served = [_post(router.listen_port, "/predict", b"{}", HOST) for _ in range(40)]
        assert all(status == 200 for status, _, _ in served), served
        by = {headers.get("x-served-by") for _, headers, _ in served}
        assert by == {"cluster", "lambda"}
    finally:
        procs.stop_all()
