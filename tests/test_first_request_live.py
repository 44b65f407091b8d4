"""Serverless cold starts measured by the operator at the real router, end to end on loopback with real pieces:

    the fleet loop (real Reconciler, RouterSync) -> a real Envoy serving the route it rendered, then
      Lambda:    SigV4 -> the Function URL front end's stand-in -> aws-lambda-rie -> lambda-adapter -> model server
      Cloud Run: ID token (gcp_authn, fake metadata server) -> Cloud Run's serving front end's stand-in
                 (``tests/cloudrun_standin/instances.py``: starts an instance on demand) -> model server

Lambda: the function's one execution environment is not initialized before its first request (Lambda after a
scale from zero): that request pays the environment's Init phase, in which the bootstrap starts the model server (a
model load of ``LOAD_SECONDS``) and the adapter waits for its readiness path. Cloud Run: no instance runs until the
first request, which waits for the container to start and pass its startup probe (the same model load).

The fleet reads the router's serverless counters once per full tick; after an idle gap longer than the platform's
idle lifetime (the price book's ``keep_alive_idle_seconds``, a few seconds here) the first request's latency less
the target's warm requests' becomes a sample in ``status.coldStart.<target>``, which the policy blends in.

The emulator and the adapter come from ``e2e/lambda-runtime.sh`` (the ``lambda_runtime`` fixture: missing, the
Lambda case FAILS when ``CI=true`` and is skipped elsewhere). The control planes are not under test here (a target
that reports the function or service as it stands: tests/test_target_lambda.py and test_target_cloudrun.py cover
them).
"""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import stat
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest

from inference_placement.api.names import cloud_run_service_id, lambda_function_name
from inference_placement.api.spec import TargetName
from inference_placement.api.validation import parse_spec
from inference_placement.api.workload import InferenceWorkload, WorkloadKey
from inference_placement.controller.fleet import Fleet
from inference_placement.controller.reconciler import Reconciler
from inference_placement.controller.router_sync import RouterSync
from inference_placement.devtools.lambda_runtime import LambdaRuntime, start_execution_environment, start_function_url
from inference_placement.devtools.processes import Processes, free_port
from inference_placement.metrics.source import MetricsSnapshot
from inference_placement.policy.cold_start import assumed_cold_start
from inference_placement.policy.decide import TrafficWindow
from inference_placement.policy.price_book import PriceBook, default_price_book
from inference_placement.routing.model import EndpointsConfig
from inference_placement.targets.base import DesiredTarget, TargetState
from tests.cloudrun_standin.instances import CloudRunInstances
from tests.plugins.envoy import FAKE_AWS_ENV, EnvoyRouter, FakeGcpMetadata, start_envoy
from tests.plugins.memory_api import MemoryWriter, inline_tenancy

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
REGION = "eu-west-1"
URL_HOST = "7c0a4ee1b2d34f5e8a9b0c1d2e3f4a5b.lambda-url.eu-west-1.on.aws"
NS, NAME = "team-a", "embedder-v2"  # hyphens: Envoy's stats filter gets them escaped
ARN = f"arn:aws:lambda:{REGION}:123456789012:function:{lambda_function_name(NS, NAME)}:live"
HOST = f"{NAME}.{NS}.svc"
LOAD_SECONDS = 2.5
"""The model load in the environment's Init phase (the model server's ``STARTUP_SECONDS``)."""
LIFETIME_SECONDS = 8.0
"""The idle lifetime the test's price book states for both platforms: at least what the platform keeps an idle
instance (Cloud Run's stand-in reclaims after ``LIFETIME_SECONDS - 1``, which outlasts a stats flush)."""
SERVICE_ID = cloud_run_service_id(NS, NAME)
CLOUDRUN_URL = f"https://{SERVICE_ID}-uc.a.run.app"
ENDPOINTS = {
    TargetName.LAMBDA: (ARN, f"https://{URL_HOST}/"),
    TargetName.CLOUDRUN: (f"projects/p/locations/us-central1/services/{SERVICE_ID}", CLOUDRUN_URL),
}
FLUSH_SECONDS = 5.5
"""Envoy merges request-time histograms at its stats flush (every 5 s by default)."""


class Standing:
    """A serverless target as its function or service stands (deployed, serving at its URL)."""

    def __init__(self, target: TargetName) -> None:
        self.name, self.endpoint = ENDPOINTS[target]

    async def ensure(self, workload: InferenceWorkload, desired: DesiredTarget) -> TargetState:
        return TargetState(name=self.name, endpoint=self.endpoint, ready=True)

    async def observe(self, workload: InferenceWorkload) -> TargetState | None:
        return TargetState(name=self.name, endpoint=self.endpoint, ready=True)

    async def retire(self, workload: InferenceWorkload) -> bool:
        return True


class QuietMetrics:
    """A low, steady rate (the decision keeps the workload on Lambda; the cold start is what is measured)."""

    async def fetch(self, keys: Any, now: datetime, objective_seconds: Any = None) -> MetricsSnapshot:
        window = TrafficWindow(
            step_seconds=30.0, rps=(0.05,) * 60, observed_p99_seconds=0.05, end=now, service_seconds=0.02
        )
        return MetricsSnapshot(windows=dict.fromkeys(keys, window), queries=1)


def _book() -> PriceBook:
    book = default_price_book()
    platforms = book.platforms
    update = {"keep_alive_idle_seconds": LIFETIME_SECONDS}
    lam, run = platforms.lambda_.model_copy(update=update), platforms.cloudrun.model_copy(update=update)
    return book.model_copy(update={"platforms": platforms.model_copy(update={"lambda_": lam, "cloudrun": run})})


def _body(target: TargetName) -> dict[str, Any]:
    cloud = (
        {"lambda": {"region": REGION, "roleArn": "arn:aws:iam::123456789012:role/inference"}}
        if target is TargetName.LAMBDA
        else {"cloudRun": {"project": "p", "region": "us-central1"}}
    )
    name, endpoint = ENDPOINTS[target]
    return {
        "apiVersion": "placement.inference.dev/v1alpha1",
        "kind": "InferenceWorkload",
        "metadata": {"name": NAME, "namespace": NS, "uid": "uid-embedder", "generation": 1},
        "spec": {
            "model": {"image": "registry.example/embedder:1", "sizeMb": 100, "cpu": "1", "memory": "1Gi"},
            "slo": {"latencyP99Seconds": 1.0, "attainment": 0.99, "tolerableColdStartSeconds": 30},
            "placement": {"allowedTargets": [target.value], "pin": target.value},
            **cloud,
        },
        "status": {
            "placement": target.value,
            "targets": {target.value: {"name": name, "endpoint": endpoint, "ready": True}},
        },
    }


@pytest.fixture
def cold_function(lambda_runtime: LambdaRuntime, tmp_path: Path) -> Iterator[str]:
    """The function's data plane with one execution environment whose Init (model server start, model load,
    adapter readiness) waits for the first invocation; yields the Function URL stand-in's URL."""
    procs = Processes()
    app_port = free_port()
    pid_file = tmp_path / "model-server.pid"
    bootstrap = tmp_path / "bootstrap"
    bootstrap.write_text(
        "#!/bin/sh\n"
        "# as an image's entrypoint: the web app (here the model server, loading its model) beside the adapter\n"
        f"HOST=127.0.0.1 PORT={app_port} SERVED_BY=lambda MODEL_NAME=lambda SERVICE_SECONDS=0.02 "
        f"STARTUP_SECONDS={LOAD_SECONDS} {sys.executable} {ROOT / 'e2e' / 'model_server.py'} "
        f">> {tmp_path / 'model-server.log'} 2>&1 &\n"
        f"echo $! > {pid_file}\n"
        f"exec {lambda_runtime.adapter}\n"
    )
    bootstrap.chmod(bootstrap.stat().st_mode | stat.S_IXUSR)
    try:
        invoke = start_execution_environment(
            procs,
            lambda_runtime,
            tmp_path,
            "embedder-env0",
            app_port=app_port,
            readiness_path="/healthz",
            bootstrap=bootstrap,
            initialize=False,
        )
        keys = {FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"]: FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"]}
        yield start_function_url(procs, tmp_path, "embedder", [invoke], region=REGION, access_keys=keys)
    finally:
        procs.stop_all()
        if pid_file.exists():  # the model server the bootstrap started (by its PID, never by name)
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass


@pytest.fixture
def cold_service(tmp_path: Path) -> Iterator[str]:
    """The service's serving front end with no instance running (one is reclaimed after ``LIFETIME_SECONDS - 1``
    idle, inside the book's lifetime); yields its URL."""
    front = CloudRunInstances(
        ROOT / "e2e" / "model_server.py", tmp_path, startup_seconds=LOAD_SECONDS, idle_seconds=LIFETIME_SECONDS - 1
    )
    try:
        yield front.url
    finally:
        front.stop()


@pytest.fixture
def router(envoy_binary: str, tmp_path: Path, fake_gcp_metadata: FakeGcpMetadata) -> Iterator[EnvoyRouter]:
    envoy = start_envoy(envoy_binary, tmp_path / "envoy", fake_gcp_metadata.address)
    try:
        yield envoy
    finally:
        envoy.stop()


@pytest.fixture(params=[TargetName.LAMBDA, TargetName.CLOUDRUN], ids=lambda t: str(t.value))
def serverless(request: pytest.FixtureRequest) -> tuple[TargetName, EndpointsConfig]:
    """(target, how the router reaches it): the Lambda function's URL or the Cloud Run service, both cold."""
    target: TargetName = request.param
    if target is TargetName.LAMBDA:
        return target, EndpointsConfig(lambda_url_endpoint=request.getfixturevalue("cold_function"))
    return target, EndpointsConfig(address_overrides={CLOUDRUN_URL: request.getfixturevalue("cold_service")})


def _post(port: int) -> tuple[int, float]:
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/predict", body=b'{"instances": [1]}', headers={"Host": HOST})
        response = conn.getresponse()
        response.read()
        return response.status, time.monotonic() - started
    finally:
        conn.close()


async def test_a_serverless_cold_start_measured_at_the_router_appears_in_status(
    router: EnvoyRouter, serverless: tuple[TargetName, EndpointsConfig]
) -> None:
    target, endpoints = serverless
    writer = MemoryWriter()
    writer.put(_body(target))
    book = _book()
    fleet = Fleet(
        reconciler=Reconciler(cast(Any, writer), {target: cast(Any, Standing(target))}, tenancy=inline_tenancy()),
        metrics=QuietMetrics(),
        price_book=lambda: book,
        clock=lambda: datetime.now(UTC),
        tick_seconds=30.0,
        router=RouterSync(router.applier(), endpoints),
    )
    fleet.observe("ADDED", writer.objects[(NS, NAME)])
    key = WorkloadKey(NS, NAME)

    def status() -> dict[str, Any]:
        return cast(dict[str, Any], writer.objects[(NS, NAME)].get("status") or {})

    await fleet.tick()  # reconciles, then the router serves the route the status names
    assert fleet.router is not None and fleet.router.confirmed(key) == {target: 100}
    await fleet.tick()  # the function's router counters: the baseline (no request yet)
    await asyncio.sleep(LIFETIME_SECONDS + 0.5)
    await fleet.tick()  # idle longer than the lifetime: the next request finds no instance

    code, cold_seconds = await asyncio.to_thread(_post, router.listen_port)
    assert code == 200, "the first request waits for the environment's Init and is answered"
    assert cold_seconds >= LOAD_SECONDS, cold_seconds
    await asyncio.sleep(FLUSH_SECONDS)
    await fleet.tick()  # the cold request's latency is recorded; no warm latency of the function is known yet
    assert target.value not in (status().get("coldStart") or {}), "a sample waits for the target's warm latency"

    warm = [await asyncio.to_thread(_post, router.listen_port) for _ in range(5)]
    assert all(code == 200 for code, _ in warm) and max(s for _, s in warm) < 1.0, warm
    await asyncio.sleep(FLUSH_SECONDS)
    await fleet.tick()

    entry = (status().get("coldStart") or {}).get(target.value)
    assert entry is not None, status()
    assert entry["samples"] == 1 and "first request after an idle gap" in entry["source"]
    measured = entry["measuredSeconds"]
    assert LOAD_SECONDS * 0.9 <= measured <= cold_seconds + 0.1, (measured, cold_seconds)  # 0.1: the bin's half
    spec = parse_spec(_body(target)["spec"])[0]
    assert spec is not None
    spec_assumed = assumed_cold_start(spec, book, target)
    assert entry["assumedSeconds"] == pytest.approx(spec_assumed, abs=1e-3)
    events = [e["message"] for e in writer.events if e.get("reason") == "ColdStartMeasured"]
    assert events and events[0].startswith(f"{target.value} cold start"), writer.events

    # more traffic within the lifetime: warm, so no second sample
    await asyncio.to_thread(_post, router.listen_port)
    await asyncio.sleep(FLUSH_SECONDS)
    await fleet.tick()
    assert status()["coldStart"][target.value]["samples"] == 1
