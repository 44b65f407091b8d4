"""Failed reconciles back off per workload; every cloud client error lands in the target error tree (issue 18,
item 9).

* botocore's ``InvalidRegionError``, and a region botocore knows no Lambda in, become ``InvalidLocationError``
  naming ``spec.lambda.region``: the workload gets a status, and its deletion finishes (nothing can exist there);
* the cloud's ``Retry-After`` (Lambda's throttling through a real botocore client, the Cloud Run stand-in's 429)
  is carried by the error, waited for between attempts of one call, and is the floor of the workload's backoff;
* a workload whose reconcile keeps failing is retried with exponential backoff and jitter, one log line per
  failure (no traceback at WARNING), while the workloads beside it are placed as usual.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from inference_placement.api.spec import TargetName
from inference_placement.api.workload import InferenceWorkload, WorkloadKey
from inference_placement.controller.fleet import Fleet
from inference_placement.controller.reconciler import Reconciler, TickInputs
from inference_placement.controller.telemetry import Telemetry
from inference_placement.devtools.scale.cluster import workload_body
from inference_placement.metrics.source import NoMetricsSource
from inference_placement.policy.capacity import ClusterCapacity
from inference_placement.policy.price_book import default_price_book
from inference_placement.targets.aws_lambda import LambdaTarget
from inference_placement.targets.base import (
    DesiredTarget,
    InvalidLocationError,
    RetryableTargetError,
    TargetState,
)
from inference_placement.targets.cloudrun import CloudRunTarget
from inference_placement.targets.dry_run import DryRunTarget
from inference_placement.targets.retry import RetryPolicy, call_with_retry, classify_aws_error
from tests.cloudrun_standin import CloudRunStandin
from tests.plugins.cloud import LambdaFaults, MotoAws, make_workload
from tests.plugins.memory_api import MemoryWriter, inline_tenancy

NS = "unit"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
FINALIZER = "placement.inference.dev/cloud-resources"


def test_botocores_invalid_region_error_is_in_the_tree_naming_the_field() -> None:
    import boto3

    with pytest.raises(Exception) as raised:
        boto3.session.Session().client("lambda", region_name="us east 1")
    error = classify_aws_error(raised.value)
    assert isinstance(error, InvalidLocationError)
    assert error.message == "spec.lambda.region: 'us east 1' is not an AWS region name"


def _lambda_body(name: str, region: str, role_arn: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 1, "finalizers": []},
        "spec": {
            "model": {"image": "registry.example/m:1", "sizeMb": 100, "memory": "512Mi"},
            "placement": {"allowedTargets": ["lambda"], "pin": "lambda"},
            "lambda": {"region": region, "roleArn": role_arn},
        },
    }


def test_a_region_lambda_is_not_offered_in_gets_a_target_error_and_its_deletion_finishes(
    lambda_target: LambdaTarget, moto_aws: MotoAws
) -> None:
    """``us-nowhere-9`` passes the region pattern, but no Lambda endpoint exists there."""
    writer = MemoryWriter()
    reconciler = Reconciler(cast(Any, writer), {TargetName.LAMBDA: lambda_target}, tenancy=inline_tenancy())
    inputs = TickInputs(now=NOW, price_book=default_price_book(), capacity=ClusterCapacity())
    writer.put(_lambda_body("nowhere", "us-nowhere-9", moto_aws.role_arn))

    async def run() -> None:
        result = await reconciler.reconcile(writer.objects[(NS, "nowhere")], inputs)
        assert [type(f) for f in result.failures] == [InvalidLocationError]
        status = writer.objects[(NS, "nowhere")]["status"]
        message = status["targets"]["lambda"]["message"]
        assert message == (
            "lambda: spec.lambda.region: 'us-nowhere-9' is not a region AWS Lambda is offered in "
            "(botocore's endpoint data)"
        )
        placed = next(c for c in status["conditions"] if c["type"] == "Placed")
        assert placed["status"] == "False" and "spec.lambda.region" in placed["message"]
        # deletion: nothing can exist in a region that is not one, so the finalizer goes at once
        body = writer.objects[(NS, "nowhere")]
        assert FINALIZER in body["metadata"]["finalizers"]
        body["metadata"]["deletionTimestamp"] = "2026-12-01T12:01:00Z"
        result = await reconciler.reconcile(body, inputs)
        assert not result.active and not result.failures
        assert (NS, "nowhere") not in writer.objects, "the finalizer was removed: the deletion finished"

    asyncio.run(run())


def test_lambda_throttling_retry_after_is_carried_and_waited_for(
    lambda_target: LambdaTarget, lambda_faults: LambdaFaults
) -> None:
    client = lambda_faults.attach(lambda_target.client("us-east-1"))
    lambda_faults.inject(429, "TooManyRequestsException", count=5, retry_after_seconds=7)
    policy = RetryPolicy(max_attempts=1)
    with pytest.raises(RetryableTargetError) as raised:
        call_with_retry(policy, "list", classify_aws_error, client.list_functions)
    assert raised.value.retry_after_seconds == 7.0
    # within one call: the next attempt waits at least what the cloud asked (bounded by the call's deadline)
    lambda_faults.inject(429, "TooManyRequestsException", count=1, retry_after_seconds=1)
    lambda_faults.faults = [f for f in lambda_faults.faults if f.count > 0 and f.retry_after_seconds == 1]
    started = time.monotonic()
    quick = RetryPolicy(max_attempts=2, initial_backoff_seconds=0.01, max_backoff_seconds=0.02, deadline_seconds=5)
    call_with_retry(quick, "list", classify_aws_error, client.list_functions)
    assert time.monotonic() - started >= 1.0


def test_cloud_run_retry_after_is_carried(cloudrun_target: CloudRunTarget, cloudrun_standin: CloudRunStandin) -> None:
    cloudrun_target.retry_policy = RetryPolicy(max_attempts=1)
    cloudrun_standin.inject_faults(429, count=1, retry_after_seconds=12)
    with pytest.raises(RetryableTargetError) as raised:
        cloudrun_target.observe_sync(make_workload())
    assert raised.value.retry_after_seconds == 12.0 and raised.value.status_code == 429


# ---------------------------------------------------------------------------------------------- the fleet


class _Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


class _Flaky:
    """The cluster target, except for the workloads named in ``broken``: those raise what ``error`` makes."""

    name = TargetName.CLUSTER

    def __init__(self) -> None:
        self.inner = DryRunTarget()
        self.broken: dict[str, BaseException] = {}
        self.calls: dict[str, int] = {}

    async def ensure(self, workload: InferenceWorkload, desired: DesiredTarget) -> TargetState:
        self.calls[workload.metadata.name] = self.calls.get(workload.metadata.name, 0) + 1
        error = self.broken.get(workload.metadata.name)
        if error is not None:
            raise error
        return await self.inner.ensure(workload, desired)

    async def observe(self, workload: InferenceWorkload) -> TargetState | None:
        return None

    async def retire(self, workload: InferenceWorkload) -> bool:
        return True


def _fleet(writer: MemoryWriter, target: _Flaky, clock: _Clock) -> tuple[Fleet, Telemetry]:
    import random

    telemetry = Telemetry()
    reconciler = Reconciler(
        cast(Any, writer), {TargetName.CLUSTER: target}, telemetry=telemetry, tenancy=inline_tenancy()
    )
    fleet = Fleet(
        reconciler=reconciler,
        metrics=NoMetricsSource(),
        price_book=default_price_book,
        clock=clock,
        telemetry=telemetry,
        rng=random.Random(7),
        failure_backoff_initial_seconds=2.0,
        failure_backoff_max_seconds=60.0,
    )
    for name in ("healthy-a", "healthy-b", "broken-target", "broken-write"):
        body = workload_body(NS, name)
        body["metadata"].update({"uid": f"uid-{name}", "generation": 1})
        fleet.observe("ADDED", writer.put(body))
    return fleet, telemetry


def test_a_failing_workload_backs_off_exponentially_and_the_others_are_placed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    writer, target, clock = MemoryWriter(), _Flaky(), _Clock()
    target.broken["broken-target"] = RuntimeError("a client bug")  # not a TargetError: mapped, never escapes
    writer.fail_status_writes_of.add("broken-write")  # the reconcile itself raises
    fleet, telemetry = _fleet(writer, target, clock)
    keys = set(fleet._workloads)
    attempts: list[float] = []

    async def passes() -> None:
        for _ in range(120):  # two minutes of 1 s passes
            before = target.calls.get("broken-target", 0)
            await fleet._reconcile_keys(keys)
            if target.calls.get("broken-target", 0) > before:
                attempts.append((clock.now - NOW).total_seconds())
            clock.now += timedelta(seconds=1)

    with caplog.at_level(logging.WARNING):
        asyncio.run(passes())
    for name in ("healthy-a", "healthy-b"):
        assert writer.objects[(NS, name)]["status"]["placement"] == "cluster", name
    # exponential: 1 s passes for 2 minutes, yet only a handful of attempts, further and further apart
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert 4 <= len(attempts) <= 8, attempts
    assert gaps == sorted(gaps) and gaps[-1] >= 16, gaps
    status = writer.objects[(NS, "broken-target")]["status"]
    assert status["targets"]["cluster"]["message"] == (
        "cluster: unexpected RuntimeError from the target (see the operator's log)"
    )
    # the reconcile that raises: one warning line per failure, no traceback at WARNING
    lines = [r for r in caplog.records if "reconcile of unit/broken-write failed" in r.getMessage()]
    assert 4 <= len(lines) <= 8 and all(r.exc_info is None for r in lines), [r.getMessage() for r in lines]
    assert "next attempt in" in lines[0].getMessage() and "RuntimeError" in lines[0].getMessage()
    assert telemetry.reconcile_backoffs._value.get() == 2
    # a spec edit is reconciled at once, backoff or not
    body = writer.objects[(NS, "broken-target")]
    body["metadata"]["generation"] = 2
    fleet.observe("MODIFIED", writer.put(body))
    key = WorkloadKey(NS, "broken-target")
    assert fleet.backoff_until(key) is not None
    before = fleet.stats.reconciles
    asyncio.run(fleet._reconcile_keys({key}))
    assert fleet.stats.reconciles == before, "backed off: a plain pass skips it"
    asyncio.run(fleet._reconcile_keys({key}, urgent={key}))
    assert fleet.stats.reconciles == before + 1


def test_the_backoff_is_never_shorter_than_the_clouds_retry_after() -> None:
    writer, target, clock = MemoryWriter(), _Flaky(), _Clock()
    target.broken["broken-target"] = RetryableTargetError("throttled", status_code=429, retry_after_seconds=45)
    fleet, _ = _fleet(writer, target, clock)
    asyncio.run(fleet._reconcile_keys(set(fleet._workloads)))
    until = fleet.backoff_until(WorkloadKey(NS, "broken-target"))
    assert until is not None and until >= NOW.timestamp() + 45
    assert fleet.backoff_until(WorkloadKey(NS, "healthy-a")) is None
