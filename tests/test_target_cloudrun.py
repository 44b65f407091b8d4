"""The Cloud Run target through the real ``run_v2.ServicesClient`` (REST) against the local Admin API stand-in."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth.credentials import AnonymousCredentials
from google.cloud import run_v2

from inference_placement.policy.price_book import default_price_book
from inference_placement.targets.base import (
    DesiredTarget,
    NotOwnedError,
    PermanentTargetError,
    RetryableTargetError,
    Target,
    TargetError,
)
from inference_placement.targets.cloudrun import GPU_INSTANCES, CloudRunTarget, cloud_run_limits
from inference_placement.targets.credentials import SecretRedactingFilter, google_credentials_from_secret
from inference_placement.targets.retry import RetryPolicy
from tests.cloudrun_standin import CloudRunStandin
from tests.plugins.cloud import TEST_PROJECT, TEST_REGION_GCP, make_workload
from tests.plugins.cluster import REPO_ROOT

PARENT = f"projects/{TEST_PROJECT}/locations/{TEST_REGION_GCP}"
L4_SPEC: dict[str, Any] = {
    "model": {
        "image": "us-docker.pkg.dev/acme/models/embedder:2.3.0",
        "port": 8080,
        "healthPath": "/healthz",
        "sizeMb": 1300,
        "cpu": "4",
        "memory": "16Gi",
        "env": [{"name": "MODEL_NAME", "value": "embedder"}],
    },
    "accelerator": {"type": "nvidia-l4"},
    "cloudRun": {
        "serviceAccount": "embedder@test-project.iam.gserviceaccount.com",
        "minInstances": 0,
        "maxInstances": 10,
        "concurrency": 8,
    },
}


class SimulatedCrash(BaseException):
    """The operator process dies at this point (a BaseException: no ``except Exception`` stops it)."""


def _stored(standin: CloudRunStandin) -> list[run_v2.Service]:
    return standin.services()


def _creates(standin: CloudRunStandin) -> int:
    return sum(1 for r in standin.requests if r.method == "POST" and r.path.endswith("/services") and r.status == 200)


def _patches(standin: CloudRunStandin) -> int:
    return sum(1 for r in standin.requests if r.method == "PATCH")


def test_the_target_satisfies_the_interface(cloudrun_target: CloudRunTarget) -> None:
    target: Target = cloudrun_target
    assert target.name.value == "cloudrun"


async def test_round_trip_create_observe_update_retire(
    cloudrun_target: CloudRunTarget, cloudrun_standin: CloudRunStandin
) -> None:
    workload = make_workload("text-embedding", "ml", spec=L4_SPEC)

    state = await cloudrun_target.ensure(workload, DesiredTarget(replicas=1, max_replicas=4))

    assert state.ready and state.endpoint and state.endpoint.startswith("https://ip-ml-text-embedding-")
    assert state.name == f"{PARENT}/services/{cloudrun_target.service_id(workload)}"
    [service] = _stored(cloudrun_standin)
    container = service.template.containers[0]
    assert container.image == "us-docker.pkg.dev/acme/models/embedder:2.3.0"
    assert [(p.name, p.container_port) for p in container.ports] == [("http1", 8080)]
    assert dict(container.resources.limits) == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}
    assert container.resources.cpu_idle is False
    assert service.template.node_selector.accelerator == "nvidia-l4"
    assert service.template.gpu_zonal_redundancy_disabled is True  # priced without zonal redundancy: deployed so
    assert container.startup_probe.http_get.path == "/healthz" and container.liveness_probe.http_get.path == "/healthz"
    assert [(e.name, e.value) for e in container.env] == [("MODEL_NAME", "embedder")]
    assert service.template.service_account == "embedder@test-project.iam.gserviceaccount.com"
    assert service.template.max_instance_request_concurrency == 8
    assert (service.template.scaling.min_instance_count, service.template.scaling.max_instance_count) == (1, 4)
    assert service.labels["inference-placement-uid"] == workload.metadata.uid
    assert service.labels["managed-by"] == "inference-placement"

    observed = await cloudrun_target.observe(workload)
    assert observed == state

    # Same inputs again: nothing is written.
    assert await cloudrun_target.ensure(workload, DesiredTarget(replicas=1, max_replicas=4)) == state
    assert _patches(cloudrun_standin) == 0

    # Memory up: only then an update, with the CPU Cloud Run needs for 24Gi.
    bigger = workload.model_copy(
        update={
            "spec": workload.spec.model_copy(
                update={"model": workload.spec.model.model_copy(update={"memory": "24Gi"})}
            )
        }
    )
    updated = await cloudrun_target.ensure(bigger, DesiredTarget(replicas=1, max_replicas=4))
    assert updated.ready and updated.endpoint == state.endpoint
    assert _patches(cloudrun_standin) == 1
    [service] = _stored(cloudrun_standin)
    assert service.generation == 2
    assert dict(service.template.containers[0].resources.limits) == {
        "cpu": "6",
        "memory": "24Gi",
        "nvidia.com/gpu": "1",
    }

    # A new image is an update too.
    new_image = bigger.model_copy(
        update={
            "spec": bigger.spec.model_copy(update={"model": bigger.spec.model.model_copy(update={"image": "img:3"})})
        }
    )
    await cloudrun_target.ensure(new_image, DesiredTarget(replicas=1, max_replicas=4))
    assert _stored(cloudrun_standin)[0].template.containers[0].image == "img:3"

    assert await cloudrun_target.retire(workload) is True
    assert await cloudrun_target.observe(workload) is None
    assert await cloudrun_target.list_owned() == []
    assert _stored(cloudrun_standin) == []
    assert await cloudrun_target.retire(workload) is True  # idempotent


async def test_cpu_model_bills_per_request_and_rounds_to_cloud_run_sizes(
    cloudrun_target: CloudRunTarget, cloudrun_standin: CloudRunStandin
) -> None:
    workload = make_workload(spec={"model": {"cpu": "500m", "memory": "1536Mi"}, "cloudRun": {"minInstances": 2}})
    state = await cloudrun_target.ensure(workload, DesiredTarget(replicas=0))
    assert state.ready
    [service] = _stored(cloudrun_standin)
    resources = service.template.containers[0].resources
    assert dict(resources.limits) == {"cpu": "1", "memory": "1536Mi"}
    assert resources.cpu_idle is True
    assert not service.template.node_selector.accelerator
    assert service.template.scaling.min_instance_count == 2  # the spec's floor holds when the policy asks for 0


@pytest.mark.parametrize(
    ("accelerator", "model", "message"),
    [
        pytest.param({"type": "nvidia-a100-80gb"}, {}, "nvidia-l4, nvidia-rtx-pro-6000 GPUs only", id="not-cloud-run"),
        pytest.param({"type": "nvidia-l4", "count": 2}, {}, "one GPU per instance", id="two-gpus"),
        pytest.param({}, {"memory": "64Gi"}, "largest Cloud Run instance", id="too-much-memory"),
        pytest.param(
            {"type": "nvidia-l4"}, {"memory": "48Gi"}, "with nvidia-l4 has 8 CPU and 32Gi", id="l4-too-much-memory"
        ),
        pytest.param(
            {"type": "nvidia-rtx-pro-6000"}, {"cpu": "24"}, "with nvidia-rtx-pro-6000 has 20 CPU", id="rtx-too-much-cpu"
        ),
    ],
)
def test_workloads_cloud_run_cannot_host_are_refused_before_any_call(
    accelerator: dict[str, Any], model: dict[str, Any], message: str
) -> None:
    workload = make_workload(spec={"accelerator": accelerator, "model": model})
    with pytest.raises(PermanentTargetError, match=message):
        cloud_run_limits(workload.spec.model, workload.spec.accelerator)


@pytest.mark.parametrize(
    ("accelerator", "model", "limits"),
    [
        pytest.param("nvidia-l4", {"cpu": "1", "memory": "2Gi"}, {"cpu": "4", "memory": "16Gi"}, id="l4-minimum"),
        pytest.param("nvidia-l4", {"cpu": "6", "memory": "20Gi"}, {"cpu": "6", "memory": "20Gi"}, id="l4-six-cpu"),
        pytest.param(
            "nvidia-rtx-pro-6000", {"cpu": "4", "memory": "16Gi"}, {"cpu": "20", "memory": "80Gi"}, id="rtx-minimum"
        ),
    ],
)
def test_gpu_instances_get_their_gpus_minimum_cpu_and_memory(
    accelerator: str, model: dict[str, Any], limits: dict[str, str]
) -> None:
    workload = make_workload(spec={"accelerator": {"type": accelerator}, "model": model})
    assert cloud_run_limits(workload.spec.model, workload.spec.accelerator) == {**limits, "nvidia.com/gpu": "1"}


def test_the_targets_gpu_sizes_are_the_price_books() -> None:
    """What the target deploys with each GPU is what the price book prices and feasibility admits."""
    run = default_price_book().platforms.cloudrun
    assert sorted(t.value for t in GPU_INSTANCES) == sorted(run.gpu_types)
    for gpu, instance in GPU_INSTANCES.items():
        shape = run.gpu_instance(gpu.value)
        cpus = sorted(instance.memory_mib_by_cpu)
        assert (cpus[0], cpus[-1]) == (shape.min_vcpu, shape.max_vcpu)
        assert instance.memory_mib_by_cpu[cpus[0]][0] == shape.min_memory_gib * 1024
        assert max(most for _, most in instance.memory_mib_by_cpu.values()) == shape.max_memory_gib * 1024


async def test_gpu_zonal_redundancy_follows_the_price_book_and_the_standin_echoes_it(
    cloudrun_target: CloudRunTarget, cloudrun_standin: CloudRunStandin, cloudrun_client: run_v2.ServicesClient
) -> None:
    """The price book prices GPUs without zonal redundancy (platforms.cloudrun.gpu_zonal_redundancy: false): the
    service is created with gpuZonalRedundancyDisabled, read back over REST as written; a book that prices zonal
    redundancy (Cloud Run's default) turns it back on with one update, and a CPU service never carries the field."""
    workload = make_workload("rtx", "ml", spec={**L4_SPEC, "accelerator": {"type": "nvidia-rtx-pro-6000"}})
    assert default_price_book().platforms.cloudrun.gpu_zonal_redundancy is False
    state = await cloudrun_target.ensure(workload, DesiredTarget(replicas=0, gpu_zonal_redundancy=False))
    assert state.ready
    read = cloudrun_client.get_service(name=state.name)
    assert read.template.gpu_zonal_redundancy_disabled is True
    assert read.template.node_selector.accelerator == "nvidia-rtx-pro-6000"
    assert dict(read.template.containers[0].resources.limits) == {"cpu": "20", "memory": "80Gi", "nvidia.com/gpu": "1"}
    # the field travels on the wire under its JSON name
    raw = json.loads(run_v2.Service.to_json(read))
    assert raw["template"]["gpuZonalRedundancyDisabled"] is True

    assert await cloudrun_target.ensure(workload, DesiredTarget(replicas=0, gpu_zonal_redundancy=False)) == state
    assert _patches(cloudrun_standin) == 0
    await cloudrun_target.ensure(workload, DesiredTarget(replicas=0, gpu_zonal_redundancy=True))
    assert _patches(cloudrun_standin) == 1
    assert cloudrun_client.get_service(name=state.name).template.gpu_zonal_redundancy_disabled is False

    cpu = make_workload("cpu", "ml", spec={"model": {"cpu": "1", "memory": "2Gi"}})
    cpu_state = await cloudrun_target.ensure(cpu, DesiredTarget(replicas=0, gpu_zonal_redundancy=False))
    assert cloudrun_client.get_service(name=cpu_state.name).template.gpu_zonal_redundancy_disabled is False


async def test_crash_after_create_then_restart_adopts_the_one_service(
    cloudrun_standin: CloudRunStandin,
    cloudrun_client: run_v2.ServicesClient,
    fast_retry_policy: RetryPolicy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    workload = make_workload("kill-me", "ml")
    real_create = cloudrun_client.create_service

    def create_then_die(*args: Any, **kwargs: Any) -> Any:
        real_create(*args, **kwargs)
        raise SimulatedCrash  # after the cloud create, before anything reaches the workload's status

    monkeypatch.setattr(cloudrun_client, "create_service", create_then_die)
    doomed = CloudRunTarget(client=cloudrun_client, default_project=TEST_PROJECT, retry_policy=fast_retry_policy)
    with pytest.raises(SimulatedCrash):
        await doomed.ensure(workload, DesiredTarget(replicas=0))
    assert len(_stored(cloudrun_standin)) == 1

    # A fresh operator: new client, nothing in memory, same workload.
    restarted = _fresh_target(cloudrun_standin, fast_retry_policy)
    state = await restarted.ensure(workload, DesiredTarget(replicas=0))

    assert state.name.endswith(restarted.service_id(workload))  # adopted (maybe still deploying)
    assert await _eventually_ready(restarted, workload)
    assert _creates(cloudrun_standin) == 1
    owned = await restarted.list_owned(owner_uid=workload.metadata.uid)
    assert [o.name for o in owned] == [restarted.service_id(workload)]
    assert len(_stored(cloudrun_standin)) == 1

    # The CR is deleted: the finalizer's retire leaves nothing behind.
    assert await restarted.retire(workload) is True
    assert await restarted.list_owned() == []
    assert _stored(cloudrun_standin) == []


async def test_create_whose_answer_was_lost_is_adopted_not_duplicated(
    cloudrun_target: CloudRunTarget, cloudrun_standin: CloudRunStandin
) -> None:
    workload = make_workload("lost-answer")
    cloudrun_standin.inject_faults(500, 1, methods=["POST"], path_contains="/services", after_effect=True)

    state = await cloudrun_target.ensure(workload, DesiredTarget(replicas=0))

    assert state.name.endswith(cloudrun_target.service_id(workload))
    assert await _eventually_ready(cloudrun_target, workload)
    assert len(_stored(cloudrun_standin)) == 1
    statuses = [r.status for r in cloudrun_standin.requests if r.method == "POST"]
    assert statuses == [500, 409]  # the retry met the service the first attempt had created


async def test_a_service_with_our_name_but_another_owner_is_never_touched(
    cloudrun_target: CloudRunTarget, cloudrun_standin: CloudRunStandin
) -> None:
    workload = make_workload("taken")
    service_id = cloudrun_target.service_id(workload)
    cloudrun_standin.put_service(PARENT, service_id, labels={"team": "search"}, image="gcr.io/search/app:7")

    with pytest.raises(NotOwnedError, match="not created by inference-placement") as caught:
        await cloudrun_target.ensure(workload, DesiredTarget(replicas=0))
    assert service_id in caught.value.message
    with pytest.raises(NotOwnedError):
        await cloudrun_target.observe(workload)
    assert await cloudrun_target.retire(workload) is True  # nothing of ours exists ...
    [service] = _stored(cloudrun_standin)  # ... and theirs is still there, unchanged
    assert service.template.containers[0].image == "gcr.io/search/app:7"
    assert _patches(cloudrun_standin) == 0
    assert not [r for r in cloudrun_standin.requests if r.method == "DELETE"]


async def test_a_recreated_workload_does_not_take_over_its_predecessors_service(
    cloudrun_target: CloudRunTarget, cloudrun_standin: CloudRunStandin
) -> None:
    first = make_workload("reborn")
    await cloudrun_target.ensure(first, DesiredTarget(replicas=0))
    second = make_workload("reborn")  # same namespace/name, new uid

    with pytest.raises(NotOwnedError, match=f"uid {first.metadata.uid}"):
        await cloudrun_target.ensure(second, DesiredTarget(replicas=0))
    assert [o.owner.uid for o in await cloudrun_target.list_owned()] == [first.metadata.uid]


async def test_throttling_is_retried_with_backoff_then_succeeds(
    cloudrun_target: CloudRunTarget, cloudrun_standin: CloudRunStandin, caplog: pytest.LogCaptureFixture
) -> None:
    cloudrun_standin.inject_faults(429, 2, methods=["GET"])
    with caplog.at_level(logging.WARNING, logger="inference_placement"):
        state = await cloudrun_target.ensure(make_workload(), DesiredTarget(replicas=0))
    assert state.ready
    assert [r.status for r in cloudrun_standin.requests[:3]] == [429, 429, 404]
    assert sum("retrying in" in m for m in caplog.messages) == 2


@pytest.mark.parametrize(
    ("status", "cloud_message"),
    [
        pytest.param(429, "Quota exceeded for quota metric", id="429"),
        pytest.param(500, "Internal error encountered", id="500"),
    ],
)
async def test_persistent_throttling_or_5xx_ends_as_a_retryable_error_with_the_clouds_message(
    cloudrun_target: CloudRunTarget, cloudrun_standin: CloudRunStandin, status: int, cloud_message: str
) -> None:
    cloudrun_standin.inject_faults(status, 100)
    with pytest.raises(RetryableTargetError) as caught:
        await cloudrun_target.ensure(make_workload(), DesiredTarget(replicas=0))
    error = caught.value
    assert error.status_code == status
    assert cloud_message in error.message and "gave up after 3 attempts" in error.message
    assert len(cloudrun_standin.requests) == 3  # bounded: no tight loop


async def test_permission_denied_is_permanent_at_once_with_the_clouds_message(
    cloudrun_target: CloudRunTarget, cloudrun_standin: CloudRunStandin
) -> None:
    cloudrun_standin.inject_faults(403, 1, methods=["POST"])
    with pytest.raises(PermanentTargetError) as caught:
        await cloudrun_target.ensure(make_workload(), DesiredTarget(replicas=0))
    assert caught.value.status_code == 403
    assert "Permission 'run.services.create' denied" in caught.value.message
    assert "http://" not in caught.value.message  # the request URL adds nothing to a condition
    assert sum(1 for r in cloudrun_standin.requests if r.method == "POST") == 1


async def test_a_revision_that_fails_to_start_is_reported_not_ready(
    cloudrun_target: CloudRunTarget, cloudrun_standin: CloudRunStandin
) -> None:
    cloudrun_standin.fail_next_deploy("The user-provided container failed to start and listen on the port.")
    state = await cloudrun_target.ensure(make_workload(), DesiredTarget(replicas=0))
    assert not state.ready
    assert state.message is not None and "failed to start" in state.message


async def test_an_operation_slower_than_the_timeout_reports_deploying_and_resolves_later(
    cloudrun_standin: CloudRunStandin, fast_retry_policy: RetryPolicy
) -> None:
    cloudrun_standin.reconcile_seconds = 0.6
    target = _fresh_target(cloudrun_standin, fast_retry_policy, operation_timeout_seconds=0.1)
    workload = make_workload()
    state = await target.ensure(workload, DesiredTarget(replicas=0))
    assert not state.ready and state.message == "create still running"
    await asyncio.sleep(0.7)
    observed = await target.observe(workload)
    assert observed is not None and observed.ready


async def test_the_event_loop_keeps_running_while_the_client_blocks(
    cloudrun_standin: CloudRunStandin, fast_retry_policy: RetryPolicy
) -> None:
    cloudrun_standin.reconcile_seconds = 0.3
    target = _fresh_target(cloudrun_standin, fast_retry_policy)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    await target.ensure(make_workload(), DesiredTarget(replicas=0))
    task.cancel()
    assert ticks >= 10


async def test_services_can_report_a_loopback_upstream_as_their_url(
    cloudrun_target: CloudRunTarget, cloudrun_standin: CloudRunStandin
) -> None:
    cloudrun_standin.service_url = "http://127.0.0.1:18080/{service}"
    workload = make_workload()
    state = await cloudrun_target.ensure(workload, DesiredTarget(replicas=0))
    assert state.endpoint == f"http://127.0.0.1:18080/{cloudrun_target.service_id(workload)}"


async def test_list_owned_pages_through_every_service_and_skips_foreign_ones(
    cloudrun_target: CloudRunTarget, cloudrun_standin: CloudRunStandin
) -> None:
    cloudrun_standin.max_page_size = 2
    workloads = [make_workload(f"w{i}") for i in range(3)]
    for workload in workloads:
        await cloudrun_target.ensure(workload, DesiredTarget(replicas=0))
    cloudrun_standin.put_service(PARENT, "someone-elses", labels={"team": "x"})

    owned = await cloudrun_target.list_owned()
    assert sorted(o.owner.uid for o in owned) == sorted(w.metadata.uid for w in workloads)
    assert len(await cloudrun_target.list_owned(owner_uid=workloads[0].metadata.uid)) == 1
    for workload in workloads:
        assert await cloudrun_target.retire(workload)
    assert await cloudrun_target.list_owned() == []
    assert [s.name.rsplit("/", 1)[-1] for s in _stored(cloudrun_standin)] == ["someone-elses"]


# ----------------------------------------------------------------------------------------------- credentials


def _service_account_key(token_uri: str) -> tuple[dict[str, str], str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    info = {
        "type": "service_account",
        "project_id": TEST_PROJECT,
        "private_key_id": "4f1c0d9e8b7a6c5d4e3f2a1b0c9d8e7f6a5b4c3d",
        "private_key": pem,
        "client_email": "inference-placement@test-project.iam.gserviceaccount.com",
        "client_id": "109876543210987654321",
        "token_uri": token_uri,
    }
    return info, pem


@contextmanager
def _capture_everything(redactor: SecretRedactingFilter | None) -> Iterator[list[str]]:
    """Every log record of every library at DEBUG, rendered with its ``extra`` payload (headers included)."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            extras = {k: v for k, v in vars(record).items() if k not in _STANDARD_FIELDS}
            lines.append(
                f"{record.name} {record.getMessage()} {json.dumps(extras, default=str)} {record.exc_text or ''}"
            )

    handler = Collect(logging.DEBUG)
    if redactor is not None:
        handler.addFilter(redactor)
    loggers = [logging.getLogger(), logging.getLogger("google")]  # google-auth may stop propagation at "google"
    saved = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        for lg, level in saved:
            lg.removeHandler(handler)
            lg.setLevel(level)


_STANDARD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


@pytest.mark.usefixtures("google_auth_loopback_only")
async def test_service_account_secret_is_used_and_never_leaks_into_logs_or_errors(
    cloudrun_standin: CloudRunStandin, fast_retry_policy: RetryPolicy
) -> None:
    cloudrun_standin.require_token = True
    info, pem = _service_account_key(cloudrun_standin.token_uri)
    secret_data = {"service-account.json": json.dumps(info).encode()}
    secrets = [pem.splitlines()[1], info["private_key_id"], cloudrun_standin.access_token]
    own_records: list[str] = []

    class Own(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            own_records.append(record.getMessage())

    own = Own(logging.DEBUG)
    logging.getLogger("inference_placement").addHandler(own)
    errors: list[TargetError] = []
    try:
        with _capture_everything(SecretRedactingFilter()) as lines:
            target = CloudRunTarget.from_secret(
                secret_data,
                api_endpoint=cloudrun_standin.url,
                retry_policy=fast_retry_policy,
                operation_poll_initial_seconds=0.02,
                operation_poll_max_seconds=0.1,
            )
            workload = make_workload("with-secret")
            state = await target.ensure(workload, DesiredTarget(replicas=0))
            for status in (429, 500):
                cloudrun_standin.inject_faults(status, 3)
                with pytest.raises(RetryableTargetError) as retried:
                    await target.observe(workload)
                errors.append(retried.value)
            # A server that echoes the caller's credential back in its error message.
            [bearer] = cloudrun_standin.seen_bearer_tokens
            cloudrun_standin.inject_faults(
                403, 1, message=f"Caller with Authorization: Bearer {bearer} lacks run.services.get"
            )
            with pytest.raises(PermanentTargetError) as denied:
                await target.observe(workload)
            errors.append(denied.value)
    finally:
        logging.getLogger("inference_placement").removeHandler(own)

    assert state.name.endswith(target.service_id(workload))
    assert all(r.bearer_token_present for r in cloudrun_standin.requests)  # the Secret's key really was used
    secrets += list(cloudrun_standin.seen_bearer_tokens)
    assert "lacks run.services.get" in denied.value.message
    assert lines and own_records
    for secret in secrets:
        assert not any(secret in line for line in lines), "a credential reached the logs"
        assert not any(secret in record for record in own_records), "the target logged a credential"
        for error in errors:
            assert secret not in str(error) and secret not in repr(error) and secret not in error.message


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param({}, "none of the keys", id="missing-key"),
        pytest.param(
            {"service-account.json": b"{not json -----BEGIN PRIVATE KEY-----"}, "not valid JSON", id="not-json"
        ),
        pytest.param({"key.json": b'{"type": "authorized_user"}'}, "expected a service-account key", id="wrong-type"),
    ],
)
def test_unusable_google_secrets_are_permanent_errors_that_quote_nothing(data: dict[str, bytes], message: str) -> None:
    with pytest.raises(PermanentTargetError, match=message) as caught:
        google_credentials_from_secret(data)
    assert "BEGIN" not in caught.value.message


# ----------------------------------------------------------------------------------------------- the stand-in


def test_standin_rejects_what_the_real_api_rejects(cloudrun_client: run_v2.ServicesClient) -> None:
    bad_labels = run_v2.Service(
        labels={"Owner": "X"}, template=run_v2.RevisionTemplate(containers=[run_v2.Container(image="i")])
    )
    with pytest.raises(Exception, match="violates the label rules"):
        cloudrun_client.create_service(parent=PARENT, service=bad_labels, service_id="ok-id")
    gpu_without_minimums = run_v2.Service(
        template=run_v2.RevisionTemplate(
            containers=[
                run_v2.Container(
                    image="i", resources=run_v2.ResourceRequirements(limits={"cpu": "2", "nvidia.com/gpu": "1"})
                )
            ],
            node_selector=run_v2.NodeSelector(accelerator="nvidia-l4"),
        )
    )
    with pytest.raises(Exception, match="at least 4 CPU and 16Gi"):
        cloudrun_client.create_service(parent=PARENT, service=gpu_without_minimums, service_id="gpu")
    with pytest.raises(Exception, match="serviceId"):
        cloudrun_client.create_service(parent=PARENT, service=run_v2.Service(), service_id="Bad_Id")


def test_standin_runs_as_a_module_with_faults_armed_over_http() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.cloudrun_standin", "--port", "0", "--fail-next", "1", "--fail-status", "429"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = json.loads(proc.stdout.readline())["url"]
        assert url.startswith("http://127.0.0.1:")
        client = run_v2.ServicesClient(
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]  # google-auth is untyped
            transport="rest",
            client_options={"api_endpoint": url},
        )
        with pytest.raises(Exception, match="429"):
            list(client.list_services(parent=PARENT, retry=None))
        request = urllib.request.Request(
            f"{url}/standin/faults", data=json.dumps({"status": 403, "count": 1}).encode(), method="POST"
        )
        urllib.request.urlopen(request, timeout=5).read()
        with pytest.raises(Exception, match="403"):
            list(client.list_services(parent=PARENT, retry=None))
        assert list(client.list_services(parent=PARENT, retry=None)) == []
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


async def _eventually_ready(target: CloudRunTarget, workload: Any, timeout_seconds: float = 5.0) -> bool:
    for _ in range(int(timeout_seconds / 0.05)):
        state = await target.observe(workload)
        if state is not None and state.ready:
            return True
        await asyncio.sleep(0.05)
    return False


def _fresh_target(standin: CloudRunStandin, policy: RetryPolicy, **kwargs: Any) -> CloudRunTarget:
    return CloudRunTarget(
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]  # google-auth is untyped
        api_endpoint=standin.url,
        default_project=TEST_PROJECT,
        retry_policy=policy,
        operation_poll_initial_seconds=0.02,
        operation_poll_max_seconds=0.1,
        **kwargs,
    )
