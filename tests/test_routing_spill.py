"""Burst spillover and scale to zero through the real Envoy (1.40's composite cluster) and the router's activator.

Loopback only: the pods are ``e2e/model_server.py`` with a queue cap (``MAX_IN_FLIGHT``: 429 at once beyond it,
like vLLM/TGI at their limit), the serverless overflow a second ``model_server.py`` (``SERVED_BY=cloudrun``; the Cloud
Run cluster speaks plain HTTP to it) or a recording upstream standing in for the Lambda API, and the activator runs
as its own process (``python -m inference_placement.routing.activator``) exactly as in the router Pod. Pods
"appear" the way the operator makes them appear: a new CDS file moved into place by the xDS applier. Time bounds are
generous (a loaded 2-core machine); the assertions are on outcomes and counts, never on latency.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from inference_placement.api.spec import TargetName
from inference_placement.api.status import InferenceWorkloadStatus, TargetResourceStatus, TargetsStatus
from inference_placement.devtools.processes import stop_process
from inference_placement.routing.envoy import (
    ACTIVATED_HEADER,
    ACTIVATOR_CLUSTER,
    HOLD_HEADER,
    OVERFLOW_CLUSTER_HEADER,
    OVERFLOW_HOP_CLUSTER,
    OVERFLOW_HOST_HEADER,
    PODS_CLUSTER_HEADER,
    WORKLOAD_HEADER,
    EnvoySettings,
    render_bootstrap,
    render_clusters,
    render_route_configuration,
    render_static_config,
)
from inference_placement.routing.manifests import render_router_deployment
from inference_placement.routing.model import (
    Backend,
    CloudRunUpstream,
    LambdaUpstream,
    Overflow,
    PodsUpstream,
    Route,
    ServiceUpstream,
    UpstreamAddress,
    route_for,
)
from tests.plugins.envoy import (
    EnvoyRouter,
    FakeGcpMetadata,
    HttpUpstreams,
    LoadLoop,
    LoopbackOnlyApplier,
    envoy_validate,
    start_envoy,
)

C, R, L = TargetName.CLUSTER, TargetName.CLOUDRUN, TargetName.LAMBDA
NS, NAME = "default", "embedder"
HOST = f"{NAME}.{NS}.svc"
PODS = f"ip|{NS}|{NAME}|cluster"
COMPOSITE = f"ip|{NS}|{NAME}|composite"
CLOUDRUN_CLUSTER = f"ip|{NS}|{NAME}|cloudrun"
CLOUDRUN_HOST = "ip-default-embedder-44b50070-uc.a.run.app"
LAMBDA_ARN = "arn:aws:lambda:eu-west-1:123456789012:function:ip-default-embedder-44b50070:live"
MODEL_SERVER = Path(__file__).resolve().parent.parent / "e2e" / "model_server.py"
OPERATOR_DIR = Path(__file__).resolve().parent.parent / "operator"
_START_SECONDS = 30.0

pytestmark = pytest.mark.slow  # real Envoy and model-server processes (about 40 s for the module)
REQUESTS = "inference_router_activator_requests_total"
HELD = "inference_router_activator_held_requests"
OUTCOMES = "inference_router_activator_outcomes_total"


# ----------------------------------------------------------------------------------------------- processes


@dataclass
class Process:
    process: subprocess.Popen[str]
    info: dict[str, Any]

    def stop(self) -> None:
        stop_process(self.process, 15)


def _spawn(argv: list[str], env: dict[str, str]) -> Process:
    """Start a process that prints one JSON line with its ports once it listens."""
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(process.stdout.readline() if process.stdout else ""))
    reader.start()
    reader.join(_START_SECONDS)
    if not result or not result[0]:
        process.kill()
        process.wait(timeout=10)
        raise AssertionError(f"{argv} did not start within {_START_SECONDS:.0f}s")
    return Process(process, json.loads(result[0]))


@dataclass
class ModelServer(Process):
    @property
    def address(self) -> UpstreamAddress:
        return UpstreamAddress("127.0.0.1", int(self.info["port"]))

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.info['port']}/metrics", timeout=10) as response:
            text: str = response.read().decode()
        return text


@dataclass
class ActivatorProcess(Process):
    @property
    def port(self) -> int:
        return int(self.info["port"])

    def sample(self, name: str, **labels: str) -> float | None:
        """The value of the activator's sample ``name`` with exactly ``labels`` (the workload's by default)."""
        wanted = {"namespace": NS, "workload": NAME, **labels}
        url = f"http://127.0.0.1:{self.info['metrics_port']}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            families = text_string_to_metric_families(response.read().decode())
            for family in families:
                for sample in family.samples:
                    if sample.name == name and sample.labels == wanted:
                        return float(sample.value)
        return None


class Processes:
    def __init__(self) -> None:
        self.started: list[Process] = []

    def model_server(self, served_by: str, **env: str) -> ModelServer:
        environment = {**os.environ, "PORT": "0", "HOST": "127.0.0.1", "SERVED_BY": served_by, **env}
        started = _spawn([sys.executable, str(MODEL_SERVER)], environment)
        server = ModelServer(started.process, started.info)
        self.started.append(server)
        return server

    def activator(self, router: EnvoyRouter, *args: str) -> ActivatorProcess:
        environment = {**os.environ, "PYTHONPATH": str(OPERATOR_DIR)}
        argv = [
            sys.executable,
            "-m",
            "inference_placement.routing.activator",
            "--listen-port=0",
            "--metrics-address=127.0.0.1",
            "--metrics-port=0",
            f"--envoy-url={router.listen_url}",
            f"--admin-url={router.admin_url}",
            "--poll-interval-seconds=0.05",
            *args,
        ]
        started = _spawn(argv, environment)
        activator = ActivatorProcess(started.process, started.info)
        self.started.append(activator)
        return activator

    def stop_all(self) -> None:
        for process in reversed(self.started):
            process.stop()


@pytest.fixture
def processes() -> Iterator[Processes]:
    started = Processes()
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture
def envoy_router(envoy_binary: str, tmp_path: Path, fake_gcp_metadata: FakeGcpMetadata) -> Iterator[EnvoyRouter]:
    """The plugin's router plus the overflow listener the spill routes hop through."""
    router = start_envoy(envoy_binary, tmp_path, fake_gcp_metadata.address, overflow_listener=True)
    try:
        yield router
    finally:
        router.stop()


# ----------------------------------------------------------------------------------------------- helpers


def _cloudrun(address: UpstreamAddress) -> CloudRunUpstream:
    return CloudRunUpstream(host=CLOUDRUN_HOST, audience=f"https://{CLOUDRUN_HOST}", address=address)


def _route(
    pods: tuple[UpstreamAddress, ...], *, overflow: Overflow | None = None, hold_seconds: float | None = None
) -> Route:
    return Route(NS, NAME, (Backend(C, PodsUpstream(pods), 100),), overflow=overflow, hold_seconds=hold_seconds)


def _applier(router: EnvoyRouter, activator: ActivatorProcess | None = None) -> LoopbackOnlyApplier:
    """The router's applier with a generous route timeout (it bounds a held request too: a loaded machine may take
    seconds to start the pods) and the activator's port."""
    settings = replace(router.settings, route_timeout_seconds=120.0)
    if activator is not None:
        settings = replace(settings, activator_port=activator.port)
    return LoopbackOnlyApplier(router.xds_dir, router.admin_url, settings, timeout_seconds=60.0)


def _post(port: int, path: str = "/predict", timeout: float = 120.0) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=b'{"instances": [1]}', headers={"Host": HOST})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


class Concurrent:
    """``count`` POSTs through Envoy at once (threads released together), answers collected as they come."""

    def __init__(self, port: int, count: int, path: str = "/predict") -> None:
        self.answers: list[tuple[int, dict[str, str], bytes] | str] = []
        self._lock = threading.Lock()
        barrier = threading.Barrier(count)

        def one() -> None:
            barrier.wait(timeout=60)
            try:
                answer: tuple[int, dict[str, str], bytes] | str = _post(port, path)
            except (OSError, http.client.HTTPException) as err:
                answer = f"{type(err).__name__}: {err}"
            with self._lock:
                self.answers.append(answer)

        self._threads = [threading.Thread(target=one, daemon=True) for _ in range(count)]
        for thread in self._threads:
            thread.start()

    def join(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self._threads), "requests still running"

    def served_by(self) -> Counter[str]:
        return Counter(a[1].get("x-served-by", "?") if not isinstance(a, str) and a[0] == 200 else repr(a[:2])
                       for a in self.answers)  # fmt: skip


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout:.0f}s: {what}")
        time.sleep(0.05)


def _stat(router: EnvoyRouter, name: str) -> int:
    return int(router.stat(name) or 0)


def _model_counter(text: str, name: str) -> int:
    for line in text.splitlines():
        if line.startswith(name):
            return int(float(line.rpartition(" ")[2]))
    return 0


# ----------------------------------------------------------------------------------------------- rendering


def test_a_route_without_spill_renders_exactly_as_before() -> None:
    plain = Route(NS, NAME, (Backend(C, ServiceUpstream(UpstreamAddress("10.0.0.1", 8080)), 100),))
    clusters = render_clusters([plain])
    assert [c["name"] for c in clusters] == [PODS] and "circuit_breakers" not in clusters[0]
    routes = render_route_configuration([plain])["virtual_hosts"][0]["routes"]
    assert len(routes) == 1 and routes[0]["route"]["weighted_clusters"]["clusters"] == [{"name": PODS, "weight": 100}]
    assert routes[0]["route"]["retry_policy"] == {
        "retry_on": "connect-failure,refused-stream,reset-before-request",
        "num_retries": 2,
    }


def test_a_spilling_route_sends_the_cluster_share_to_a_composite_with_one_retry_on_429_and_503() -> None:
    overflow = Overflow(R, _cloudrun(UpstreamAddress("127.0.0.1", 9)))
    route = _route((UpstreamAddress("10.0.0.1", 8080),), overflow=overflow)
    settings = EnvoySettings(overflow_port=9905)
    clusters = {c["name"]: c for c in render_clusters([route], settings)}
    assert set(clusters) == {PODS, COMPOSITE, CLOUDRUN_CLUSTER, OVERFLOW_HOP_CLUSTER}
    composite = clusters[COMPOSITE]
    assert composite["cluster_type"]["typed_config"]["clusters"] == [{"name": PODS}, {"name": OVERFLOW_HOP_CLUSTER}]
    assert composite["lb_policy"] == "CLUSTER_PROVIDED" and "metadata" not in composite
    limit = settings.spill_circuit_breaker_limit
    assert composite["circuit_breakers"]["thresholds"][0]["max_retries"] == limit
    for name in (PODS, OVERFLOW_HOP_CLUSTER):
        limits = clusters[name]["circuit_breakers"]["thresholds"][0]
        assert limits["max_requests"] == limits["max_pending_requests"] == limits["max_connections"] == limit
    # the Cloud Run cluster is rendered as for a backend: its audience, for the overflow listener's gcp_authn
    assert clusters[CLOUDRUN_CLUSTER]["metadata"]["typed_filter_metadata"]["envoy.filters.http.gcp_authn"]["url"] == (
        f"https://{CLOUDRUN_HOST}"
    )
    entry = render_route_configuration([route], settings)["virtual_hosts"][0]["routes"][-1]
    action = entry["route"]
    assert action["weighted_clusters"]["clusters"] == [{"name": COMPOSITE, "weight": 100}]
    policy = action["retry_policy"]
    assert policy["num_retries"] == 1 and policy["retriable_status_codes"] == [429, 503]
    assert "retriable-status-codes" in policy["retry_on"] and "connect-failure" in policy["retry_on"]
    added = {h["header"]["key"]: h["header"]["value"] for h in entry["request_headers_to_add"]}
    assert added == {OVERFLOW_CLUSTER_HEADER: CLOUDRUN_CLUSTER, OVERFLOW_HOST_HEADER: CLOUDRUN_HOST}
    # the overflow listener: loopback, routes by the header, rewrites Host, removes both
    listener = next(x for x in render_bootstrap(settings)["static_resources"]["listeners"] if x["name"] == "overflow")
    assert listener["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 9905}
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert [f["name"] for f in hcm["http_filters"]] == ["envoy.filters.http.gcp_authn", "envoy.filters.http.router"]
    hop = hcm["route_config"]["virtual_hosts"][0]["routes"][0]
    assert hop["route"]["cluster_header"] == OVERFLOW_CLUSTER_HEADER
    assert hop["route"]["host_rewrite_header"] == OVERFLOW_HOST_HEADER
    assert hop["request_headers_to_remove"] == [OVERFLOW_CLUSTER_HEADER]
    with pytest.raises(ValueError, match="overflow_port"):
        render_clusters([route])
    assert "overflow" not in [x["name"] for x in render_bootstrap()["static_resources"]["listeners"]]


def test_a_migration_keeps_its_weights_and_only_the_cluster_share_spills() -> None:
    cloudrun = _cloudrun(UpstreamAddress("127.0.0.1", 9))
    route = Route(
        NS,
        NAME,
        (Backend(C, PodsUpstream((UpstreamAddress("10.0.0.1", 8080),)), 70), Backend(R, cloudrun, 30)),
        overflow=Overflow(R, cloudrun),
    )
    weights = render_route_configuration([route], EnvoySettings(overflow_port=9905))["virtual_hosts"][0]["routes"][-1][
        "route"
    ]["weighted_clusters"]
    assert [(c["name"], c["weight"]) for c in weights["clusters"]] == [(COMPOSITE, 70), (CLOUDRUN_CLUSTER, 30)]
    names = [c["name"] for c in render_clusters([route], EnvoySettings(overflow_port=9905))]
    assert names.count(CLOUDRUN_CLUSTER) == 1


def test_a_holding_route_tells_the_activator_everything_and_lets_replays_through() -> None:
    route = _route((), hold_seconds=45)
    settings = EnvoySettings(activator_port=8081)
    clusters = {c["name"]: c for c in render_clusters([route], settings)}
    assert clusters[COMPOSITE]["cluster_type"]["typed_config"]["clusters"] == [
        {"name": PODS},
        {"name": ACTIVATOR_CLUSTER},
    ]
    assert clusters[PODS]["load_assignment"]["endpoints"] == [{"lb_endpoints": []}]  # gauges reset (envoy.py)
    replay, entry = render_route_configuration([route], settings)["virtual_hosts"][0]["routes"]
    assert replay["match"]["headers"] == [{"name": ACTIVATED_HEADER, "present_match": True}]
    assert replay["route"]["cluster"] == PODS
    added = {h["header"]["key"]: h["header"]["value"] for h in entry["request_headers_to_add"]}
    assert added == {WORKLOAD_HEADER: f"{NS}/{NAME}", HOLD_HEADER: "45", PODS_CLUSTER_HEADER: PODS}
    assert all(h["append_action"] == "OVERWRITE_IF_EXISTS_OR_ADD" for h in entry["request_headers_to_add"])
    assert "retriable_status_codes" not in entry["route"]["retry_policy"]  # the activator's 503 is never held twice
    with pytest.raises(ValueError, match="activator_port"):
        render_clusters([route])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hold_seconds": 0}, "positive"),
        ({"hold_seconds": 10, "overflow": Overflow(R, _cloudrun(UpstreamAddress("127.0.0.1", 9)))}, "not both"),
    ],
)
def test_bad_spill_routes_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _route((), **kwargs)
    with pytest.raises(ValueError, match="cluster backend"):
        Route(NS, NAME, (Backend(R, _cloudrun(UpstreamAddress("127.0.0.1", 9)), 100),), hold_seconds=5)
    with pytest.raises(ValueError, match="serverless"):
        Overflow(C, _cloudrun(UpstreamAddress("127.0.0.1", 9)))


def _status(*, cloudrun_endpoint: str | None = f"https://{CLOUDRUN_HOST}") -> InferenceWorkloadStatus:
    return InferenceWorkloadStatus(
        placement=C,
        targets=TargetsStatus(
            cluster=TargetResourceStatus(name="embedder-model", endpoint="http://embedder-model.default.svc:8080"),
            cloudrun=TargetResourceStatus(name="svc", endpoint=cloudrun_endpoint),
        ),
    )


def test_route_for_takes_the_spill_from_the_decision_and_the_upstreams_from_status() -> None:
    pod = UpstreamAddress("10.1.2.3", 8080)
    route = route_for(NS, NAME, _status(), pod_addresses=[pod], overflow=R, hold_seconds=30)
    assert route.backends == (Backend(C, PodsUpstream((pod,)), 100),)
    assert route.overflow is not None and route.overflow.target is R and route.hold_seconds is None
    assert isinstance(route.overflow.upstream, CloudRunUpstream) and route.overflow.upstream.host == CLOUDRUN_HOST
    # the serverless target still provisioning (no endpoint yet): the hold covers scale to zero meanwhile
    waiting = route_for(NS, NAME, _status(cloudrun_endpoint=None), pod_addresses=[], overflow=R, hold_seconds=30)
    assert waiting.overflow is None and waiting.hold_seconds == 30
    assert waiting.backends == (Backend(C, PodsUpstream(()), 100),)
    # no spill asked: the route of before, Service address and all
    plain = route_for(NS, NAME, _status())
    assert not plain.spills and isinstance(plain.backends[0].upstream, ServiceUpstream)
    # no cluster backend (placed on Cloud Run): nothing to spill
    on_cloudrun = _status().model_copy(update={"placement": R})
    assert not route_for(NS, NAME, on_cloudrun, overflow=R, hold_seconds=30).spills


def test_every_spill_shape_passes_envoy_validate(envoy_binary: str) -> None:
    lambda_ = LambdaUpstream(LAMBDA_ARN, "eu-west-1", UpstreamAddress("127.0.0.1", 9))
    pods = (UpstreamAddress("127.0.0.1", 8080), UpstreamAddress("127.0.0.2", 8080))
    routes = [
        _route(pods, overflow=Overflow(R, _cloudrun(UpstreamAddress("127.0.0.1", 9)))),
        replace(_route((), overflow=Overflow(L, lambda_)), name="b"),
        replace(_route((), hold_seconds=30), name="c"),
        Route(NS, "d", (Backend(C, ServiceUpstream(UpstreamAddress("127.0.0.1", 8080)), 100),), hold_seconds=5),
    ]
    settings = EnvoySettings(activator_port=8081, overflow_port=9905)
    envoy_validate(render_static_config(routes, settings), envoy_binary)


# ----------------------------------------------------------------------------------------------- burst


async def test_a_burst_over_the_queue_cap_spills_to_the_serverless_target_and_every_request_succeeds(
    envoy_router: EnvoyRouter, processes: Processes
) -> None:
    cap, burst = 3, 10
    pods = processes.model_server("cluster", MAX_IN_FLIGHT=str(cap))
    serverless = processes.model_server("cloudrun")
    route = _route((pods.address,), overflow=Overflow(R, _cloudrun(serverless.address)))
    await _applier(envoy_router).apply([route])
    # each request takes 3 s, so the whole burst is in flight at once even on a slow machine
    requests = Concurrent(envoy_router.listen_port, burst, "/predict?sleep=3")
    requests.join()
    served = requests.served_by()
    assert sum(served.values()) == burst and set(served) <= {"cluster", "cloudrun"}, served
    assert 1 <= served["cluster"] <= cap, served
    spilled = served["cloudrun"]
    assert spilled == burst - served["cluster"]
    # the split, in Envoy's stats: spilled requests are the composite's retries (each on a 429) and the Cloud Run
    # cluster's requests; the pods cluster counts every first attempt, the refused ones included
    assert _stat(envoy_router, f"cluster.{COMPOSITE}.upstream_rq_retry") == spilled
    assert _stat(envoy_router, f"cluster.{COMPOSITE}.retry.upstream_rq_429") == spilled
    assert _stat(envoy_router, f"cluster.{CLOUDRUN_CLUSTER}.upstream_rq_total") == spilled
    assert _stat(envoy_router, f"cluster.{PODS}.upstream_rq_total") == burst
    assert _stat(envoy_router, f"cluster.{COMPOSITE}.upstream_rq_200") == burst
    assert _stat(envoy_router, f"cluster.{PODS}.upstream_rq_pending_overflow") == 0  # Envoy itself refused nothing
    metrics = pods.metrics()
    assert _model_counter(metrics, 'model_rejected_requests_total{model="model"}') == spilled
    assert _model_counter(metrics, 'model_requests_total{model="model",code="429"}') == spilled


def test_the_model_server_answers_429_with_retry_after_at_its_queue_cap(processes: Processes) -> None:
    server = processes.model_server("cluster", MAX_IN_FLIGHT="1", RETRY_AFTER_SECONDS="2")
    port = int(server.info["port"])
    slow = threading.Thread(target=_post, args=(port, "/predict?sleep=3"), daemon=True)
    slow.start()
    _wait_for(lambda: "model_in_flight_requests 1" in server.metrics(), 30, "one request in flight")
    status, headers, body = _post(port)
    assert status == 429 and headers["retry-after"] == "2" and b"queue full" in body
    slow.join(60)
    assert _post(port)[0] == 200  # below the cap again


# ----------------------------------------------------------------------------------------------- scale to zero


async def test_scaled_to_zero_with_a_serverless_target_requests_go_there_at_once_until_pods_appear(
    envoy_router: EnvoyRouter, processes: Processes
) -> None:
    serverless = processes.model_server("cloudrun")
    overflow = Overflow(R, _cloudrun(serverless.address))
    applier = _applier(envoy_router)
    await applier.apply([_route((), overflow=overflow)])
    answers = [_post(envoy_router.listen_port) for _ in range(10)]
    assert [(s, h.get("x-served-by")) for s, h, _ in answers] == [(200, "cloudrun")] * 10
    # fell through within the first attempt: no retry, nothing counted under the pods
    assert _stat(envoy_router, f"cluster.{COMPOSITE}.upstream_rq_retry") == 0
    assert _stat(envoy_router, f"cluster.{PODS}.upstream_rq_total") == 0
    assert _stat(envoy_router, f"cluster.{CLOUDRUN_CLUSTER}.upstream_rq_total") == 10
    pods = processes.model_server("cluster")
    await applier.apply([_route((pods.address,), overflow=overflow)])
    answers = [_post(envoy_router.listen_port) for _ in range(10)]
    assert [(s, h.get("x-served-by")) for s, h, _ in answers] == [(200, "cluster")] * 10


async def test_scaled_to_zero_without_a_serverless_target_requests_are_held_until_pods_appear(
    envoy_router: EnvoyRouter, processes: Processes
) -> None:
    activator = processes.activator(envoy_router)
    applier = _applier(envoy_router, activator)
    await applier.apply([_route((), hold_seconds=120)])
    held = 5
    requests = Concurrent(envoy_router.listen_port, held)
    _wait_for(lambda: activator.sample(HELD) == held, 60, f"{held} requests held")
    assert activator.sample(REQUESTS) == held
    assert not requests.answers  # nobody answered yet
    pods = processes.model_server("cluster")
    await applier.apply([_route((pods.address,), hold_seconds=120)])
    requests.join()
    assert requests.served_by() == Counter({"cluster": held})
    # the replay carried the body: the model server's stand-in prediction is the length of each instance
    assert [json.loads(a[2])["predictions"] for a in requests.answers if not isinstance(a, str)] == [[1]] * held
    assert activator.sample(OUTCOMES, outcome="replayed") == held
    assert activator.sample(HELD) == 0
    assert activator.sample("inference_router_activator_hold_seconds_count") == held
    # each woken request is counted once under the pods (the replay); the activator cluster carries no workload
    assert _stat(envoy_router, f"cluster.{PODS}.upstream_rq_total") == held
    assert _stat(envoy_router, f"cluster.{ACTIVATOR_CLUSTER}.upstream_rq_total") == held
    # with pods ready, requests no longer reach the activator
    assert _post(envoy_router.listen_port)[1]["x-served-by"] == "cluster"
    assert activator.sample(REQUESTS) == held


async def test_a_hold_past_its_bound_answers_503_with_retry_after_and_the_held_count_is_bounded(
    envoy_router: EnvoyRouter, processes: Processes
) -> None:
    activator = processes.activator(envoy_router, "--max-held=2", "--retry-after-seconds=7")
    await _applier(envoy_router, activator).apply([_route((), hold_seconds=2)])
    started = time.monotonic()
    status, headers, body = _post(envoy_router.listen_port)
    assert status == 503 and headers["retry-after"] == "7" and b"no ready pod after 2s" in body
    assert 1.5 < time.monotonic() - started < 60  # held for its bound (generous upper bound: a loaded machine)
    assert activator.sample(OUTCOMES, outcome="timeout") == 1
    # the activator's 503 is not retried into a second hold
    assert activator.sample(REQUESTS) == 1
    # three at once with room for two: one is refused at once
    requests = Concurrent(envoy_router.listen_port, 3)
    requests.join()
    assert sorted(a[0] for a in requests.answers if not isinstance(a, str)) == [503, 503, 503]
    assert activator.sample(OUTCOMES, outcome="rejected") == 1
    assert activator.sample(OUTCOMES, outcome="timeout") == 3


async def test_the_activator_refuses_at_once_what_would_exceed_its_body_budget(
    envoy_router: EnvoyRouter, processes: Processes
) -> None:
    activator = processes.activator(envoy_router, "--max-held-bytes=100")
    await _applier(envoy_router, activator).apply([_route((), hold_seconds=60)])
    conn = http.client.HTTPConnection("127.0.0.1", envoy_router.listen_port, timeout=60)
    conn.request("POST", "/predict", body=b"x" * 200, headers={"Host": HOST})
    response = conn.getresponse()
    assert response.status == 503 and response.getheader("retry-after") == "5" and b"held already" in response.read()
    conn.close()
    assert activator.sample(OUTCOMES, outcome="rejected") == 1


def test_the_activator_refuses_requests_that_did_not_come_through_a_holding_route(
    envoy_router: EnvoyRouter, processes: Processes
) -> None:
    activator = processes.activator(envoy_router)
    conn = http.client.HTTPConnection("127.0.0.1", activator.port, timeout=30)
    conn.request("POST", "/predict", body=b"{}", headers={"Host": HOST})
    response = conn.getresponse()
    assert response.status == 400 and b"not sent by a holding route" in response.read()
    conn.close()


# ----------------------------------------------------------------------------------------------- under load


@pytest.mark.parametrize("mode", ["hold", "overflow"])
async def test_a_concurrent_load_across_pods_appearing_fails_nothing(
    mode: str, envoy_router: EnvoyRouter, processes: Processes
) -> None:
    """200 requests, 20 at a time, while the workload goes from no pod to two pods: every one answered 200."""
    serverless = processes.model_server("cloudrun") if mode == "overflow" else None
    activator = processes.activator(envoy_router) if mode == "hold" else None
    overflow = Overflow(R, _cloudrun(serverless.address)) if serverless is not None else None
    hold = 120.0 if mode == "hold" else None
    applier = _applier(envoy_router, activator)
    await applier.apply([_route((), overflow=overflow, hold_seconds=hold)])
    workers, per_worker = 20, 10
    # held requests wait for the pods anyway; answered ones take 1 s each so the load outlasts the pods' start
    path = "/predict?sleep=0.05" if mode == "hold" else "/predict?sleep=1"
    answers: list[str] = []
    lock = threading.Lock()
    sent = threading.Semaphore(0)

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", envoy_router.listen_port, timeout=120)
        for _ in range(per_worker):
            try:
                conn.request("POST", path, body=b"{}", headers={"Host": HOST})
                response = conn.getresponse()
                response.read()
                outcome = response.getheader("x-served-by") or "?" if response.status == 200 else str(response.status)
            except (OSError, http.client.HTTPException) as err:
                outcome = type(err).__name__
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", envoy_router.listen_port, timeout=120)
            with lock:
                answers.append(outcome)
            sent.release()
        conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    if activator is not None:
        _wait_for(lambda: (activator.sample(HELD) or 0) >= 10, 60, "10 requests held")
    else:
        for _ in range(40):  # some answered by the serverless target before any pod exists
            assert sent.acquire(timeout=60)
    pods = [processes.model_server("cluster"), processes.model_server("cluster")]
    await applier.apply([_route(tuple(p.address for p in pods), overflow=overflow, hold_seconds=hold)])
    deadline = time.monotonic() + 240
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads)
    outcomes = Counter(answers)
    assert sum(outcomes.values()) == workers * per_worker
    assert set(outcomes) <= {"cluster", "cloudrun"}, outcomes
    assert outcomes["cluster"] > 0
    if mode == "overflow":
        assert outcomes["cloudrun"] >= 40


# ----------------------------------------------------------------------------------------------- Lambda


async def test_a_lambda_overflow_is_a_signed_invocation_when_the_pods_are_gone(
    envoy_router: EnvoyRouter, http_upstreams: HttpUpstreams
) -> None:
    """The aws_lambda filter rides on the Lambda cluster, so it signs the fall-through from the composite too."""
    recorder = http_upstreams.start("lambda-endpoint")
    lambda_ = LambdaUpstream(LAMBDA_ARN, "eu-west-1", recorder.address, payload_passthrough=True)
    await _applier(envoy_router).apply([_route((), overflow=Overflow(L, lambda_))])
    status, headers, _ = envoy_router.request(HOST, method="POST")
    assert status == 200 and headers["x-served-by"] == "lambda-endpoint"
    assert recorder.last_path == f"/2015-03-31/functions/{LAMBDA_ARN}/invocations"
    assert recorder.last_headers["host"] == "lambda.eu-west-1.amazonaws.com"
    assert recorder.last_headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=testing/")


async def test_a_cloud_run_overflow_gets_its_host_and_id_token_and_the_pods_attempt_gets_neither(
    envoy_router: EnvoyRouter, http_upstreams: HttpUpstreams
) -> None:
    """Through the overflow hop the Cloud Run cluster is the route's cluster there: gcp_authn fetches the token for
    its audience and Host is rewritten for that attempt only."""
    pods = http_upstreams.start("cluster")
    cloudrun = http_upstreams.start("cloudrun")
    overflow = Overflow(R, _cloudrun(cloudrun.address))
    applier = _applier(envoy_router)
    await applier.apply([_route((), overflow=overflow)])
    status, headers, _ = envoy_router.request(HOST, method="POST")
    assert status == 200 and headers["x-served-by"] == "cloudrun"
    assert headers["x-seen-host"] == CLOUDRUN_HOST
    assert headers["x-seen-authorization"].startswith("Bearer ")
    assert OVERFLOW_CLUSTER_HEADER not in cloudrun.last_headers
    assert cloudrun.last_headers[OVERFLOW_HOST_HEADER] == CLOUDRUN_HOST  # kept (see OVERFLOW_HOST_HEADER)
    assert _stat(envoy_router, f"cluster.{CLOUDRUN_CLUSTER}.upstream_rq_200") == 1  # codes on the target's cluster
    await applier.apply([_route((pods.address,), overflow=overflow)])
    status, headers, _ = envoy_router.request(HOST, method="POST")
    assert status == 200 and headers["x-served-by"] == "cluster"
    assert headers["x-seen-host"] == HOST and headers["x-seen-authorization"] == ""


def test_the_router_pod_runs_the_activator_next_to_envoy_when_asked() -> None:
    assert [c["name"] for c in render_router_deployment()["spec"]["template"]["spec"]["containers"]] == ["envoy"]
    settings = EnvoySettings(activator_port=8081, overflow_port=9905)
    pod = render_router_deployment(settings, activator_image="operator:1")["spec"]["template"]["spec"]
    envoy, activator = pod["containers"]
    assert envoy["name"] == "envoy"
    assert activator["image"] == "operator:1"
    assert activator["command"] == ["python", "-m", "inference_placement.routing.activator"]
    assert "--listen-address=127.0.0.1" in activator["args"] and "--listen-port=8081" in activator["args"]
    assert "--envoy-url=http://127.0.0.1:8080" in activator["args"]
    assert "--admin-url=http://127.0.0.1:9901" in activator["args"]
    assert activator["ports"] == [{"name": "activator", "containerPort": 9904, "protocol": "TCP"}]
    assert activator["securityContext"]["readOnlyRootFilesystem"] is True
    with pytest.raises(ValueError, match="activator_port"):
        render_router_deployment(activator_image="operator:1")


async def test_pods_coming_and_going_under_load_fail_nothing_and_spill_nothing(
    envoy_router: EnvoyRouter, processes: Processes
) -> None:
    """Each scale step rewrites the pods cluster (CDS): requests in flight finish, new ones find the new pods, and
    none of them falls through to the overflow while a pod is there."""
    first, second = processes.model_server("cluster"), processes.model_server("cluster")
    serverless = processes.model_server("cloudrun")
    overflow = Overflow(R, _cloudrun(serverless.address))
    applier = _applier(envoy_router)
    await applier.apply([_route((first.address,), overflow=overflow)])
    loop = LoadLoop(envoy_router.listen_port, HOST, max_requests=3000, max_seconds=120).start()
    try:
        for phase, pods in (("one", (first,)), ("two", (first, second)), ("other", (second,))):
            await applier.apply([_route(tuple(p.address for p in pods), overflow=overflow)])
            loop.phase = phase
            await asyncio.to_thread(loop.wait_for_phase, phase, 50, 60.0)
            loop.phase = None
    finally:
        loop.stop()
    assert loop.failures == 0, {k: v.errors for k, v in loop.results.items()}
    assert all(set(r.served_by) == {"cluster"} for r in loop.results.values()), loop.results
    assert _stat(envoy_router, f"cluster.{CLOUDRUN_CLUSTER}.upstream_rq_total") == 0
