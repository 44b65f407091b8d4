"""Pytest fixtures for the cloud targets: local stand-ins on loopback, real clients pointed at them.

Servers (session-scoped, started on first use, free loopback ports):

``moto_server``
    moto's ``ThreadedMotoServer`` on ``127.0.0.1`` with Lambda's Docker use switched off, and for the session
    ``AWS_EC2_METADATA_DISABLED=true`` plus fake credentials in the environment (no real AWS is ever reachable).
``cloudrun_standin_server``
    The Cloud Run Admin API v2 stand-in from ``tests/cloudrun_standin``.

Per test (state reset first):

``moto_aws``        the moto endpoint, region and an execution role that Lambda accepts (:class:`MotoAws`)
``lambda_client``   a real boto3 Lambda client at moto (no client retries)
``lambda_target``   a ``LambdaTarget`` at moto with a fast retry policy
``lambda_faults``   :class:`LambdaFaults`: make the next K Lambda calls of a client answer 429/500/403 (a
                    ``before-send`` hook: botocore parses a real HTTP error response, nothing is sent)
``cloudrun_standin`` the stand-in, reset (``inject_faults``, ``requests``, ``services()``)
``cloudrun_client`` a real ``run_v2.ServicesClient`` (REST, anonymous credentials) at the stand-in
``cloudrun_target`` a ``CloudRunTarget`` at the stand-in with a fast retry policy
``fast_retry_policy`` the ``RetryPolicy`` those targets use (3 attempts, millisecond backoff)
``google_auth_loopback_only`` switch off google-auth's regional-access-boundary lookup, which otherwise calls
                    ``iamcredentials.googleapis.com`` after a service account's token refresh (tests stay on loopback)

``make_workload(...)`` builds an ``InferenceWorkload`` with a fresh uid for target tests.
"""

from __future__ import annotations

import json
import logging
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from inference_placement.api.workload import InferenceWorkload
from inference_placement.targets.retry import RetryPolicy
from tests.plugins.secret_scan import CANARY_AWS_ACCESS_KEY_ID, CANARY_AWS_SECRET_ACCESS_KEY

if TYPE_CHECKING:  # the cloud libraries are imported by the fixtures, so other test sessions don't pay for them
    from botocore.awsrequest import AWSResponse
    from google.cloud import run_v2

    from inference_placement.targets.aws_lambda import LambdaTarget
    from inference_placement.targets.cloudrun import CloudRunTarget
    from tests.cloudrun_standin import CloudRunStandin

__all__ = [
    "FAKE_AWS_ACCESS_KEY_ID",
    "FAKE_AWS_SECRET_ACCESS_KEY",
    "LambdaFaults",
    "MotoAws",
    "MotoServer",
    "TEST_PROJECT",
    "TEST_REGION_AWS",
    "TEST_REGION_GCP",
    "cloudrun_client",
    "cloudrun_standin",
    "cloudrun_standin_server",
    "cloudrun_target",
    "fast_retry_policy",
    "google_auth_loopback_only",
    "lambda_client",
    "lambda_faults",
    "lambda_target",
    "make_workload",
    "moto_aws",
    "moto_server",
]

FAKE_AWS_ACCESS_KEY_ID = CANARY_AWS_ACCESS_KEY_ID  # canaries: tests.plugins.secret_scan fails the run if one leaks
FAKE_AWS_SECRET_ACCESS_KEY = CANARY_AWS_SECRET_ACCESS_KEY
TEST_REGION_AWS = "us-east-1"
TEST_REGION_GCP = "us-central1"
TEST_PROJECT = "test-project"
_ASSUME_ROLE_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}


def make_workload(
    name: str = "embedder",
    namespace: str = "default",
    *,
    uid: str | None = None,
    spec: dict[str, Any] | None = None,
) -> InferenceWorkload:
    """An InferenceWorkload for target tests: a CPU model unless ``spec`` says otherwise (merged one level deep)."""
    base: dict[str, Any] = {
        "model": {
            "image": "registry.example/models/embedder:1.0",
            "port": 8080,
            "sizeMb": 400,
            "cpu": "1",
            "memory": "2Gi",
        },
        "placement": {"allowedTargets": ["cluster", "cloudrun", "lambda"]},
        "cloudRun": {"project": TEST_PROJECT, "region": TEST_REGION_GCP},
        "lambda": {"region": TEST_REGION_AWS},
    }
    for key, value in (spec or {}).items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return InferenceWorkload.model_validate(
        {
            "metadata": {"name": name, "namespace": namespace, "uid": uid or str(uuid.uuid4()), "generation": 1},
            "spec": base,
        }
    )


# ----------------------------------------------------------------------------------------------- retry policy


@pytest.fixture
def fast_retry_policy() -> RetryPolicy:
    return RetryPolicy(
        max_attempts=3,
        initial_backoff_seconds=0.01,
        max_backoff_seconds=0.05,
        deadline_seconds=10.0,
    )


# ----------------------------------------------------------------------------------------------- AWS (moto)


@dataclass(frozen=True)
class MotoServer:
    url: str
    host: str
    port: int

    def post(self, path: str, payload: dict[str, Any] | None = None) -> bytes:
        data = json.dumps(payload or {}).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=data, method="POST")
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as response:
            body: bytes = response.read()
            return body


@dataclass(frozen=True)
class MotoAws:
    endpoint_url: str
    region: str
    role_arn: str


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    from moto.server import ThreadedMotoServer

    patch = pytest.MonkeyPatch()
    patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    patch.setenv("AWS_ACCESS_KEY_ID", FAKE_AWS_ACCESS_KEY_ID)
    patch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_AWS_SECRET_ACCESS_KEY)
    patch.setenv("AWS_DEFAULT_REGION", TEST_REGION_AWS)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        patch.delenv(name, raising=False)
    werkzeug_log = logging.getLogger("werkzeug")
    werkzeug_level = werkzeug_log.level
    werkzeug_log.setLevel(logging.ERROR)  # one access-log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    moto = MotoServer(f"http://{host}:{port}", host, port)
    moto.post("/moto-api/config", {"lambda": {"use_docker": False}})
    try:
        yield moto
    finally:
        server.stop()
        patch.undo()
        werkzeug_log.setLevel(werkzeug_level)


@pytest.fixture
def moto_aws(moto_server: MotoServer) -> MotoAws:
    """moto reset to empty, Lambda without Docker, and an execution role Lambda accepts."""
    import boto3

    moto_server.post("/moto-api/reset")
    moto_server.post("/moto-api/config", {"lambda": {"use_docker": False}})
    iam = boto3.client(
        "iam",
        region_name=TEST_REGION_AWS,
        endpoint_url=moto_server.url,
        aws_access_key_id=FAKE_AWS_ACCESS_KEY_ID,
        aws_secret_access_key=FAKE_AWS_SECRET_ACCESS_KEY,
    )
    role = iam.create_role(RoleName="inference-model", AssumeRolePolicyDocument=json.dumps(_ASSUME_ROLE_POLICY))
    return MotoAws(moto_server.url, TEST_REGION_AWS, role["Role"]["Arn"])


def _lambda_client(moto_aws: MotoAws, region: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "lambda",
        region_name=region,
        endpoint_url=moto_aws.endpoint_url,
        aws_access_key_id=FAKE_AWS_ACCESS_KEY_ID,
        aws_secret_access_key=FAKE_AWS_SECRET_ACCESS_KEY,
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )


@pytest.fixture
def lambda_client(moto_aws: MotoAws) -> Any:
    return _lambda_client(moto_aws, moto_aws.region)


@pytest.fixture
def lambda_target(moto_aws: MotoAws, fast_retry_policy: RetryPolicy) -> LambdaTarget:
    import boto3

    from inference_placement.targets.aws_lambda import LambdaTarget

    session = boto3.session.Session(
        aws_access_key_id=FAKE_AWS_ACCESS_KEY_ID,
        aws_secret_access_key=FAKE_AWS_SECRET_ACCESS_KEY,
        region_name=moto_aws.region,
    )
    return LambdaTarget(
        session=session,
        endpoint_url=moto_aws.endpoint_url,
        default_region=moto_aws.region,
        default_role_arn=moto_aws.role_arn,
        retry_policy=fast_retry_policy,
        waiter_delay_seconds=0.05,
        waiter_timeout_seconds=5.0,
    )


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


@dataclass
class _LambdaFault:
    status: int
    code: str
    count: int
    message: str
    operations: frozenset[str] | None
    retry_after_seconds: int | None = None


@dataclass(repr=False)  # botocore logs its handlers' reprs at DEBUG
class LambdaFaults:
    """Answer the next K Lambda calls of an attached client with an AWS error, before anything is sent.

    Registered on botocore's ``before-send`` event: the client gets a real HTTP response object (status, the
    ``x-amzn-ErrorType`` header and the JSON error body Lambda sends) and parses it like any other.
    """

    faults: list[_LambdaFault] = field(default_factory=list)
    injected: list[str] = field(default_factory=list)
    """Operation names answered with an injected fault, in order."""
    calls: list[str] = field(default_factory=list)
    """Every operation the attached clients sent (injected or not), in order."""

    def attach(self, client: Any) -> Any:
        client.meta.events.register("before-send.lambda", self._before_send)
        return client

    def inject(
        self,
        status: int,
        code: str,
        count: int = 1,
        *,
        message: str | None = None,
        operations: Sequence[str] | None = None,
        retry_after_seconds: int | None = None,
    ) -> None:
        """``retry_after_seconds``: the answer carries ``Retry-After`` (as Lambda's throttling answers may)."""
        self.faults.append(
            _LambdaFault(
                status,
                code,
                count,
                message or f"Injected {code}.",
                frozenset(operations) if operations is not None else None,
                retry_after_seconds,
            )
        )

    def _before_send(self, request: Any, event_name: str = "", **_: Any) -> AWSResponse | None:
        from botocore.awsrequest import AWSResponse, HeadersDict

        operation = event_name.rsplit(".", 1)[-1]
        self.calls.append(operation)
        for fault in self.faults:
            if fault.count > 0 and (fault.operations is None or operation in fault.operations):
                fault.count -= 1
                self.injected.append(operation)
                body = json.dumps({"Type": "User" if fault.status < 500 else "Service", "message": fault.message})
                headers = HeadersDict(
                    {"x-amzn-ErrorType": f"{fault.code}:", "Content-Type": "application/json", "x-amzn-RequestId": "x"}
                )
                if fault.retry_after_seconds is not None:
                    headers["Retry-After"] = str(fault.retry_after_seconds)
                return AWSResponse(request.url, fault.status, headers, _Body(body.encode()))
        return None


@pytest.fixture
def lambda_faults() -> LambdaFaults:
    return LambdaFaults()


# ----------------------------------------------------------------------------------------------- Cloud Run


@pytest.fixture
def google_auth_loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Service-account credentials would look up their regional access boundary at iamcredentials.googleapis.com
    (a background thread after each token refresh); tests never send traffic beyond loopback."""
    from google.auth import credentials as google_credentials

    monkeypatch.setattr(
        google_credentials.CredentialsWithRegionalAccessBoundary,
        "_is_regional_access_boundary_lookup_required",
        lambda self: False,
    )


@pytest.fixture(scope="session")
def cloudrun_standin_server() -> Iterator[CloudRunStandin]:
    from tests.cloudrun_standin import CloudRunStandin

    standin = CloudRunStandin("127.0.0.1", 0, reconcile_seconds=0.05)
    standin.start()
    try:
        yield standin
    finally:
        standin.stop()


@pytest.fixture
def cloudrun_standin(cloudrun_standin_server: CloudRunStandin) -> Iterator[CloudRunStandin]:
    """The stand-in with no services, faults or request log; settings restored after the test."""
    standin = cloudrun_standin_server
    standin.reset()
    saved = (standin.reconcile_seconds, standin.require_token, standin.service_url, standin.max_page_size)
    try:
        yield standin
    finally:
        standin.reconcile_seconds, standin.require_token, standin.service_url, standin.max_page_size = saved
        standin.reset()


@pytest.fixture
def cloudrun_client(cloudrun_standin: CloudRunStandin) -> run_v2.ServicesClient:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import run_v2

    return run_v2.ServicesClient(
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]  # google-auth is untyped
        transport="rest",
        client_options={"api_endpoint": cloudrun_standin.url},
    )


@pytest.fixture
def cloudrun_target(cloudrun_client: run_v2.ServicesClient, fast_retry_policy: RetryPolicy) -> CloudRunTarget:
    from inference_placement.targets.cloudrun import CloudRunTarget

    return CloudRunTarget(
        client=cloudrun_client,
        default_project=TEST_PROJECT,
        default_regions=(TEST_REGION_GCP,),
        retry_policy=fast_retry_policy,
        operation_timeout_seconds=5.0,
        operation_poll_initial_seconds=0.02,
        operation_poll_max_seconds=0.1,
    )
