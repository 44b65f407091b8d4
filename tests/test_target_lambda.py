"""The Lambda target through the real boto3 client against moto's server on loopback.

moto does not implement provisioned concurrency: those calls are covered with ``botocore.stub.Stubber`` (see
``test_provisioned_concurrency_follows_the_warm_instances_the_slo_needs``); everything else runs against moto.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from inference_placement.targets.aws_lambda import LambdaTarget, function_config
from inference_placement.targets.base import (
    DesiredTarget,
    NotOwnedError,
    PermanentTargetError,
    RetryableTargetError,
    Target,
    TargetError,
)
from inference_placement.targets.credentials import (
    SecretRedactingFilter,
    aws_credentials_from_secret,
    decode_secret_data,
    secret_values,
)
from inference_placement.targets.retry import RetryPolicy, StillInProgressError
from tests.plugins.cloud import LambdaFaults, MotoAws, make_workload

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/models/sentiment:1.4.0"
SPEC: dict[str, Any] = {
    "model": {"image": IMAGE, "port": 8080, "healthPath": "/ready", "sizeMb": 250, "cpu": "2", "memory": "3Gi"},
    "lambda": {"timeoutSeconds": 30},
}
READ_ONLY = {"GetFunction", "GetAlias", "GetFunctionConfiguration", "GetFunctionConcurrency", "GetFunctionUrlConfig",
             "GetProvisionedConcurrencyConfig", "ListTags", "ListFunctions"}  # fmt: skip


class SimulatedCrash(BaseException):
    """The operator process dies at this point (a BaseException: no ``except Exception`` stops it)."""


def _owned_functions(client: Any) -> list[str]:
    names = [f["FunctionName"] for f in client.list_functions()["Functions"]]
    return [n for n in names if n.startswith("ip-")]


def test_the_target_satisfies_the_interface(lambda_target: LambdaTarget) -> None:
    target: Target = lambda_target
    assert target.name.value == "lambda"


async def test_round_trip_create_observe_update_retire(
    lambda_target: LambdaTarget, lambda_client: Any, lambda_faults: LambdaFaults, moto_aws: MotoAws
) -> None:
    workload = make_workload("sentiment", "ml", spec=SPEC)
    lambda_faults.attach(lambda_target.client(moto_aws.region))
    name = lambda_target.function_name(workload)

    state = await lambda_target.ensure(workload, DesiredTarget(replicas=0, max_replicas=5))

    assert state.ready, state.message
    assert state.endpoint is not None and state.endpoint.startswith("https://") and "lambda-url" in state.endpoint
    assert state.name.endswith(f":function:{name}:live")
    function = lambda_client.get_function(FunctionName=name)
    config = function["Configuration"]
    assert config["PackageType"] == "Image" and function["Code"]["ImageUri"] == IMAGE
    assert (config["MemorySize"], config["Timeout"], config["Role"]) == (3072, 30, moto_aws.role_arn)
    assert config["Environment"]["Variables"] == {"AWS_LWA_PORT": "8080", "AWS_LWA_READINESS_CHECK_PATH": "/ready"}
    assert function["Tags"]["placement.inference.dev/owner-uid"] == workload.metadata.uid
    assert lambda_client.get_alias(FunctionName=name, Name="live")["FunctionVersion"] == "1"
    assert lambda_client.get_function_url_config(FunctionName=name, Qualifier="live")["AuthType"] == "AWS_IAM"
    assert lambda_client.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"] == 5

    assert await lambda_target.observe(workload) == state

    # Same inputs again: only reads.
    lambda_faults.calls.clear()
    assert await lambda_target.ensure(workload, DesiredTarget(replicas=0, max_replicas=5)) == state
    assert set(lambda_faults.calls) <= READ_ONLY, lambda_faults.calls

    # More memory: a configuration update, a new version behind the alias, the same URL.
    bigger = make_workload("sentiment", "ml", uid=workload.metadata.uid, spec={**SPEC, "lambda": {"memoryMb": 6144}})
    updated = await lambda_target.ensure(bigger, DesiredTarget(replicas=0, max_replicas=5))
    assert updated.ready and updated.endpoint == state.endpoint
    assert lambda_client.get_function_configuration(FunctionName=name)["MemorySize"] == 6144
    assert lambda_client.get_alias(FunctionName=name, Name="live")["FunctionVersion"] == "2"
    assert lambda_client.get_function_configuration(FunctionName=name, Qualifier="live")["MemorySize"] == 6144

    # A new image: a code update and version 3.
    new_image = make_workload(
        "sentiment",
        "ml",
        uid=workload.metadata.uid,
        spec={
            **SPEC,
            "model": {**SPEC["model"], "image": IMAGE.replace("1.4.0", "1.5.0")},
            "lambda": {"memoryMb": 6144},
        },
    )
    await lambda_target.ensure(new_image, DesiredTarget(replicas=0))  # and no budget cap any more
    assert lambda_client.get_function(FunctionName=name)["Code"]["ImageUri"].endswith(":1.5.0")
    assert lambda_client.get_alias(FunctionName=name, Name="live")["FunctionVersion"] == "3"
    assert "ReservedConcurrentExecutions" not in lambda_client.get_function_concurrency(FunctionName=name)

    assert await lambda_target.retire(workload) is True
    assert await lambda_target.observe(workload) is None
    assert await lambda_target.list_owned() == []
    assert _owned_functions(lambda_client) == []
    assert await lambda_target.retire(workload) is True  # idempotent


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param({"accelerator": {"type": "nvidia-t4"}}, "no GPUs", id="gpu"),
        pytest.param({"model": {"memory": "16Gi"}}, "at most 10240 MB", id="too-much-memory"),
    ],
)
def test_workloads_lambda_cannot_host_are_refused_before_any_call(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(PermanentTargetError, match=message):
        function_config(make_workload(spec=spec), DesiredTarget(replicas=0), default_role_arn="arn:aws:iam::1:role/r")


def test_a_missing_execution_role_is_a_clear_permanent_error() -> None:
    with pytest.raises(PermanentTargetError, match=r"spec\.lambda\.roleArn"):
        function_config(make_workload(), DesiredTarget(replicas=0))


def test_the_bill_cap_is_the_tighter_of_spec_and_budget_and_bounds_warm_instances() -> None:
    workload = make_workload(spec={"lambda": {"reservedConcurrency": 20, "provisionedConcurrency": 1}})
    config = function_config(workload, DesiredTarget(replicas=4, max_replicas=3), default_role_arn="arn:r")
    assert (config.reserved_concurrency, config.provisioned_concurrency) == (3, 3)
    config = function_config(workload, DesiredTarget(replicas=0), default_role_arn="arn:r")
    assert (config.reserved_concurrency, config.provisioned_concurrency) == (20, 1)


async def test_crash_after_create_then_restart_adopts_the_one_function(
    moto_aws: MotoAws, lambda_client: Any, fast_retry_policy: RetryPolicy
) -> None:
    workload = make_workload("kill-me", "ml", spec=SPEC)

    def dying_client(region: str) -> Any:
        client = _client(moto_aws, region)
        real_create = client.create_function

        def create_then_die(**kwargs: Any) -> Any:
            real_create(**kwargs)
            raise SimulatedCrash  # after the cloud create, before anything reaches the workload's status

        client.create_function = create_then_die
        return client

    doomed = _target(moto_aws, fast_retry_policy, client_factory=dying_client)
    with pytest.raises(SimulatedCrash):
        await doomed.ensure(workload, DesiredTarget(replicas=0))
    assert len(_owned_functions(lambda_client)) == 1

    restarted = _target(moto_aws, fast_retry_policy)  # a fresh operator: new clients, nothing in memory
    state = await restarted.ensure(workload, DesiredTarget(replicas=0))

    assert state.ready, state.message
    assert _owned_functions(lambda_client) == [restarted.function_name(workload)]
    assert [o.owner.uid for o in await restarted.list_owned()] == [workload.metadata.uid]

    # The CR is deleted: the finalizer's retire leaves nothing behind.
    assert await restarted.retire(workload) is True
    assert await restarted.list_owned() == []
    assert _owned_functions(lambda_client) == []


async def test_create_whose_answer_was_lost_is_adopted_not_duplicated(
    moto_aws: MotoAws, lambda_client: Any, fast_retry_policy: RetryPolicy
) -> None:
    workload = make_workload("lost-answer", spec=SPEC)

    def losing_client(region: str) -> Any:
        client = _client(moto_aws, region)
        real_create = client.create_function
        lost = {"done": False}

        def create_and_lose_the_answer(**kwargs: Any) -> Any:
            real_create(**kwargs)
            if not lost["done"]:
                lost["done"] = True
                raise ClientError(
                    {
                        "Error": {"Code": "ServiceException", "Message": "Internal error"},
                        "ResponseMetadata": {"HTTPStatusCode": 500},
                    },
                    "CreateFunction",
                )

        client.create_function = create_and_lose_the_answer
        return client

    target = _target(moto_aws, fast_retry_policy, client_factory=losing_client)
    state = await target.ensure(workload, DesiredTarget(replicas=0))
    assert state.ready, state.message
    assert len(_owned_functions(lambda_client)) == 1


async def test_a_function_with_our_name_but_another_owner_is_never_touched(
    lambda_target: LambdaTarget, lambda_client: Any, moto_aws: MotoAws
) -> None:
    workload = make_workload("taken", spec=SPEC)
    name = lambda_target.function_name(workload)
    lambda_client.create_function(
        FunctionName=name, PackageType="Image", Code={"ImageUri": IMAGE}, Role=moto_aws.role_arn, MemorySize=512,
        Tags={"team": "search"},
    )  # fmt: skip

    with pytest.raises(NotOwnedError, match="not created by inference-placement") as caught:
        await lambda_target.ensure(workload, DesiredTarget(replicas=0))
    assert name in caught.value.message
    with pytest.raises(NotOwnedError):
        await lambda_target.observe(workload)
    assert await lambda_target.retire(workload) is True  # nothing of ours exists ...
    config = lambda_client.get_function_configuration(FunctionName=name)  # ... and theirs is untouched
    assert config["MemorySize"] == 512
    assert "Environment" not in config or not config["Environment"].get("Variables")


async def test_throttling_is_retried_with_backoff_then_succeeds(
    lambda_target: LambdaTarget, lambda_faults: LambdaFaults, moto_aws: MotoAws, caplog: pytest.LogCaptureFixture
) -> None:
    lambda_faults.attach(lambda_target.client(moto_aws.region))
    lambda_faults.inject(429, "TooManyRequestsException", 2, message="Rate exceeded", operations=["GetFunction"])
    with caplog.at_level(logging.WARNING, logger="inference_placement"):
        state = await lambda_target.ensure(make_workload(spec=SPEC), DesiredTarget(replicas=0))
    assert state.ready, state.message
    assert lambda_faults.injected == ["GetFunction", "GetFunction"], lambda_faults.calls
    assert sum("retrying in" in m for m in caplog.messages) == 2, caplog.messages


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        pytest.param(429, "TooManyRequestsException", "Rate exceeded", id="429"),
        pytest.param(500, "ServiceException", "Lambda was unable to process the request", id="500"),
    ],
)
async def test_persistent_throttling_or_5xx_ends_as_a_retryable_error_with_the_clouds_message(
    lambda_target: LambdaTarget, lambda_faults: LambdaFaults, moto_aws: MotoAws, status: int, code: str, message: str
) -> None:
    lambda_faults.attach(lambda_target.client(moto_aws.region))
    lambda_faults.inject(status, code, 100, message=message)
    with pytest.raises(RetryableTargetError) as caught:
        await lambda_target.ensure(make_workload(spec=SPEC), DesiredTarget(replicas=0))
    assert caught.value.status_code == status
    assert code in caught.value.message and message in caught.value.message
    assert "gave up after 3 attempts" in caught.value.message
    assert len(lambda_faults.injected) == 3  # bounded: no tight loop


async def test_access_denied_is_permanent_at_once_with_the_clouds_message(
    lambda_target: LambdaTarget, lambda_faults: LambdaFaults, moto_aws: MotoAws
) -> None:
    lambda_faults.attach(lambda_target.client(moto_aws.region))
    denial = (
        "User: arn:aws:sts::123456789012:assumed-role/inference-placement/op is not authorized to perform: "
        "lambda:CreateFunction on resource: arn:aws:lambda:us-east-1:123456789012:function:x"
    )
    lambda_faults.inject(403, "AccessDeniedException", 5, message=denial, operations=["CreateFunction"])
    with pytest.raises(PermanentTargetError) as caught:
        await lambda_target.ensure(make_workload(spec=SPEC), DesiredTarget(replicas=0))
    assert caught.value.status_code == 403
    assert "AccessDeniedException" in caught.value.message and "not authorized to perform" in caught.value.message
    assert lambda_faults.injected == ["CreateFunction"]


async def test_provisioned_concurrency_follows_the_warm_instances_the_slo_needs(
    moto_aws: MotoAws, lambda_client: Any, fast_retry_policy: RetryPolicy
) -> None:
    """moto has no provisioned concurrency: those three calls go to a client under ``botocore.stub.Stubber``,
    which checks the exact requests; everything else in the same ensure runs against moto."""
    stubbed = _client(moto_aws, moto_aws.region)
    stubber = Stubber(stubbed)
    real = _client(moto_aws, moto_aws.region)
    workload = make_workload("warm", spec=SPEC)
    name = LambdaTarget.function_name(workload)
    alias = {"FunctionName": name, "Qualifier": "live"}
    target = _target(moto_aws, fast_retry_policy, client_factory=lambda region: _SplitClient(real, stubbed))

    stubber.add_client_error(
        "get_provisioned_concurrency_config",
        service_error_code="ProvisionedConcurrencyConfigNotFoundException",
        http_status_code=404,
        expected_params=alias,
    )
    stubber.add_response(
        "put_provisioned_concurrency_config",
        {
            "RequestedProvisionedConcurrentExecutions": 2,
            "AllocatedProvisionedConcurrentExecutions": 0,
            "Status": "IN_PROGRESS",
        },
        {**alias, "ProvisionedConcurrentExecutions": 2},
    )
    allocating = {"RequestedProvisionedConcurrentExecutions": 2, "AvailableProvisionedConcurrentExecutions": 0,
                  "AllocatedProvisionedConcurrentExecutions": 0, "Status": "IN_PROGRESS"}  # fmt: skip
    ready = {**allocating, "AvailableProvisionedConcurrentExecutions": 2, "AllocatedProvisionedConcurrentExecutions": 2,
             "Status": "READY"}  # fmt: skip
    stubber.add_response("get_provisioned_concurrency_config", allocating, alias)  # observe at the end of ensure
    stubber.add_response("get_provisioned_concurrency_config", ready, alias)  # a later observe
    stubber.add_response("get_provisioned_concurrency_config", ready, alias)  # ensure with 0 warm: seen ...
    stubber.add_response("delete_provisioned_concurrency_config", {}, alias)  # ... and removed
    stubber.add_client_error(
        "get_provisioned_concurrency_config",
        service_error_code="ProvisionedConcurrencyConfigNotFoundException",
        http_status_code=404,
        expected_params=alias,
    )

    with stubber:
        state = await target.ensure(workload, DesiredTarget(replicas=2))
        assert not state.ready and state.message is not None and "0/2 warm" in state.message
        observed = await target.observe(workload)
        assert observed is not None and observed.ready and observed.replicas == 2
        cold = await target.ensure(workload, DesiredTarget(replicas=0))
        assert cold.ready and cold.replicas is None
        stubber.assert_no_pending_responses()


async def test_a_function_that_stays_pending_is_reported_not_ready_and_a_failed_one_explains_why(
    moto_aws: MotoAws, fast_retry_policy: RetryPolicy
) -> None:
    stubbed = _client(moto_aws, moto_aws.region)
    target = _target(moto_aws, fast_retry_policy, client_factory=lambda region: stubbed)
    target.waiter_delay_seconds, target.waiter_timeout_seconds = 0.01, 0.02
    pending = {"Configuration": {"FunctionName": "f", "State": "Pending"}}
    failed = {"Configuration": {"FunctionName": "f", "State": "Failed", "StateReason": "Image not found in ECR"}}
    with Stubber(stubbed) as stubber:
        stubber.add_response("get_function", pending, {"FunctionName": "f"})
        stubber.add_response("get_function", pending, {"FunctionName": "f"})
        with pytest.raises(StillInProgressError):
            target._wait(stubbed, "function_active_v2", "f")
        stubber.add_response("get_function", failed, {"FunctionName": "f"})
        with pytest.raises(PermanentTargetError, match="Image not found in ECR"):
            target._wait(stubbed, "function_active_v2", "f")


async def test_list_owned_counts_only_our_tagged_functions(
    lambda_target: LambdaTarget, lambda_client: Any, moto_aws: MotoAws
) -> None:
    workloads = [make_workload(f"w{i}", spec=SPEC) for i in range(3)]
    for workload in workloads:
        await lambda_target.ensure(workload, DesiredTarget(replicas=0))
    for foreign, tags in (("ip-looks-like-ours", {}), ("someone-else", {"team": "x"})):
        lambda_client.create_function(
            FunctionName=foreign, PackageType="Image", Code={"ImageUri": IMAGE}, Role=moto_aws.role_arn, Tags=tags
        )
    owned = await lambda_target.list_owned()
    assert sorted(o.owner.uid for o in owned) == sorted(w.metadata.uid for w in workloads)
    assert len(await lambda_target.list_owned(owner_uid=workloads[1].metadata.uid)) == 1
    for workload in workloads:
        assert await lambda_target.retire(workload)
    assert await lambda_target.list_owned() == []
    assert sorted(f["FunctionName"] for f in lambda_client.list_functions()["Functions"]) == [
        "ip-looks-like-ours",
        "someone-else",
    ]


# ----------------------------------------------------------------------------------------------- credentials

_STANDARD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


@contextmanager
def _capture_everything(redactor: SecretRedactingFilter) -> Iterator[list[str]]:
    """Every log record of every library at DEBUG (botocore prints request headers there), as the operator's
    handler would write it: through the redacting filter."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            extras = {k: v for k, v in vars(record).items() if k not in _STANDARD_FIELDS}
            lines.append(
                f"{record.name} {record.getMessage()} {json.dumps(extras, default=str)} {record.exc_text or ''}"
            )

    handler = Collect(logging.DEBUG)
    handler.addFilter(redactor)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def test_access_key_secret_is_used_and_never_leaks_into_logs_or_errors(
    moto_aws: MotoAws, fast_retry_policy: RetryPolicy
) -> None:
    secret_data = {
        "aws_access_key_id": b"AKIAZ7EXAMPLEKEY4242",
        "aws_secret_access_key": b"wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY",
        "aws_session_token": b"FwoGZXIvYXdzEJr//////////wEaDKsessiontokenEXAMPLE",
    }
    secrets = [v.decode() for v in secret_data.values()]
    own_records: list[str] = []

    class Own(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            own_records.append(record.getMessage())

    own = Own(logging.DEBUG)
    logging.getLogger("inference_placement").addHandler(own)
    faults = LambdaFaults()
    errors: list[TargetError] = []
    try:
        # The operator registers its credential Secrets' values with the filter on its log handler.
        with _capture_everything(SecretRedactingFilter(secret_values(secret_data))) as lines:
            target = LambdaTarget.from_secret(
                secret_data,
                endpoint_url=moto_aws.endpoint_url,
                default_region=moto_aws.region,
                default_role_arn=moto_aws.role_arn,
                retry_policy=fast_retry_policy,
                waiter_delay_seconds=0.05,
            )
            assert "wJalr" not in repr(target._credentials)
            faults.attach(target.client(moto_aws.region))
            workload = make_workload("with-secret", spec=SPEC)
            state = await target.ensure(workload, DesiredTarget(replicas=0))
            for status, code in ((429, "TooManyRequestsException"), (500, "ServiceException")):
                faults.inject(status, code, 3, message="Rate exceeded" if status == 429 else "Internal failure")
                with pytest.raises(RetryableTargetError) as retried:
                    await target.observe(workload)
                errors.append(retried.value)
            # A server that echoes the caller's credentials back in its error message.
            faults.inject(
                403,
                "UnrecognizedClientException",
                1,
                message=f"The security token {secrets[2]} included in the request for {secrets[0]} is invalid.",
            )
            with pytest.raises(PermanentTargetError) as denied:
                await target.observe(workload)
            errors.append(denied.value)
    finally:
        logging.getLogger("inference_placement").removeHandler(own)

    assert state.ready, state.message
    assert "credentials were rejected" in denied.value.message
    assert any("Authorization" in line for line in lines)  # botocore did print the signed headers
    for secret in secrets:
        leaked = [line.replace(secret, "<SECRET>")[:300] for line in lines if secret in line]
        assert not leaked, f"a credential reached the logs: {leaked[:3]}"
        assert not any(secret in record for record in own_records), "the target logged a credential"
        for error in errors:
            assert secret not in str(error) and secret not in repr(error) and secret not in error.message


def test_an_access_key_secret_is_read_from_base64_data_and_its_repr_hides_it() -> None:
    data = decode_secret_data(
        {
            "aws_access_key_id": base64.b64encode(b"AKIAZ7EXAMPLEKEY4242").decode(),
            "aws_secret_access_key": base64.b64encode(b"wJalrXUtnFEMI/K7MDENG").decode(),
        }
    )
    credentials = aws_credentials_from_secret(data)
    assert credentials.secret_access_key.get_secret_value() == "wJalrXUtnFEMI/K7MDENG"
    assert "wJalr" not in repr(credentials) and "EXAMPLEKEY4242" not in repr(credentials)
    with pytest.raises(PermanentTargetError, match="needs aws_access_key_id and aws_secret_access_key"):
        aws_credentials_from_secret({"aws_access_key_id": b"AKIA"})
    with pytest.raises(PermanentTargetError, match="not valid base64"):
        decode_secret_data({"aws_access_key_id": "not base64!"})


# ----------------------------------------------------------------------------------------------- helpers


class _SplitClient:
    """The moto-backed client, except for the provisioned-concurrency calls moto lacks (sent to a stubbed one)."""

    _STUBBED = frozenset(
        {
            "get_provisioned_concurrency_config",
            "put_provisioned_concurrency_config",
            "delete_provisioned_concurrency_config",
        }
    )

    def __init__(self, real: Any, stubbed: Any) -> None:
        self._real, self._stubbed = real, stubbed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stubbed if name in self._STUBBED else self._real, name)


def _client(moto_aws: MotoAws, region: str) -> Any:
    return boto3.client(
        "lambda",
        region_name=region,
        endpoint_url=moto_aws.endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )


def _target(moto_aws: MotoAws, policy: RetryPolicy, **kwargs: Any) -> LambdaTarget:
    options: dict[str, Any] = {
        "session": boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing"),
        "endpoint_url": moto_aws.endpoint_url,
        "default_region": moto_aws.region,
        "default_role_arn": moto_aws.role_arn,
        "retry_policy": policy,
        "waiter_delay_seconds": 0.05,
        "waiter_timeout_seconds": 5.0,
    }
    options.update(kwargs)
    return LambdaTarget(**options)
