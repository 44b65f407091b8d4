"""Traffic measured at the router: the real Envoy's own stats, scraped by a real Prometheus from the stats port (the
only path it serves is ``/stats/prometheus``), read by ``PrometheusSource`` with the default PromQL templates.

Workloads (loopback upstreams only):
  ``team/chat``    100% Cloud Run (a loopback stand-in): 1 request in 20 takes 0.6 s, the rest 20 ms. Measured with
                   nothing scraped from the serverless instance; its SLO-miss share at a 0.5 s objective is 1/20.
  ``team/embed``   50/50 cluster and Cloud Run, 20 ms, 1 request in 5 answered 503: the rate and errors are sums
                   over targets.
  ``team/burst``   cluster, a burst of concurrent 3 s requests: in flight.
A stats scrape that fails or returns garbage fails the whole fetch (placement freezes, as in a Prometheus outage).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, cast
from urllib.parse import urlencode

import pytest
import yaml

from inference_placement.api.spec import TargetName
from inference_placement.api.workload import WorkloadKey
from inference_placement.controller.reconciler import Reconciler, TickInputs
from inference_placement.devtools.local_stack import start_envoy as start_local_envoy
from inference_placement.devtools.merge_patch import apply_merge_patch
from inference_placement.devtools.processes import Processes
from inference_placement.devtools.prometheus import prometheus_config, start_prometheus
from inference_placement.metrics.prometheus import PrometheusSource
from inference_placement.metrics.promql import (
    DEFAULT_ROUTER_UP,
    MODEL_SERVER_TEMPLATES,
    PromQLTemplates,
    Signal,
    render_queries,
)
from inference_placement.metrics.slo_buckets import BucketBounds
from inference_placement.policy.capacity import ClusterCapacity
from inference_placement.policy.price_book import default_price_book
from inference_placement.routing.envoy import (
    ADMIN_CLUSTER,
    DEFAULT_LATENCY_BUCKETS_MS,
    STATS_PATH,
    EnvoySettings,
    render_bootstrap,
    render_stats_config,
)
from inference_placement.routing.manifests import render_router_deployment, render_router_service
from inference_placement.routing.model import Backend, CloudRunUpstream, Route, ServiceUpstream, UpstreamAddress
from inference_placement.targets.dry_run import DryRunTarget
from tests.plugins.envoy import EnvoyRouter, loopback_server
from tests.plugins.memory_api import inline_tenancy
from tests.plugins.prometheus import PrometheusBinaries, PrometheusServer, scraping_prometheus

C, R = TargetName.CLUSTER, TargetName.CLOUDRUN
NAMESPACE = "team"
CHAT, EMBED, BURST = (WorkloadKey(NAMESPACE, name) for name in ("chat", "embed", "burst"))

# ----------------------------------------------------------------------------------------------- rendering


def test_the_bucket_ladder_has_a_bound_at_every_common_objective() -> None:
    bounds = BucketBounds.from_le_values([f"{b:g}" for b in DEFAULT_LATENCY_BUCKETS_MS], unit_seconds=0.001)
    common = [0.05, 0.1, 0.2, 0.25, 0.3, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 4, 5, 7.5, 10, 15, 20, 30, 45, 60]
    for objective in common:
        le = bounds.le_for(objective)
        assert le is not None and float(le) / 1000 == pytest.approx(objective), objective
    # between two bounds: the one under it (misses over-counted, never under-counted)
    assert bounds.le_for(0.6) == "500"


def test_bucket_ladder_is_configurable_and_checked() -> None:
    config = render_stats_config(EnvoySettings(latency_buckets_ms=(100, 400, 800)))
    assert config["histogram_bucket_settings"][0]["buckets"] == [100.0, 400.0, 800.0]
    for bad in [(), (100, 50), (0, 10), (10, 10)]:
        with pytest.raises(ValueError, match="latency_buckets_ms"):
            EnvoySettings(latency_buckets_ms=bad)


def test_the_stats_listener_proxies_exactly_one_path() -> None:
    bootstrap = render_bootstrap(EnvoySettings())
    listeners = {item["name"]: item for item in bootstrap["static_resources"]["listeners"]}
    hcm = listeners["stats"]["filter_chains"][0]["filters"][0]["typed_config"]
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    proxied = [r for r in routes if "route" in r]
    assert [(r["match"]["path"], r["route"]["cluster"]) for r in proxied] == [(STATS_PATH, ADMIN_CLUSTER)]
    assert routes[-1]["match"] == {"prefix": "/"} and routes[-1]["direct_response"]["status"] == 404
    assert listeners["stats"]["address"]["socket_address"]["port_value"] == 9903
    assert bootstrap["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    no_stats = render_bootstrap(EnvoySettings(stats_port=None))
    assert "stats" not in {item["name"] for item in no_stats["static_resources"]["listeners"]}


def test_the_router_deployment_and_service_expose_the_stats_port() -> None:
    container = render_router_deployment(EnvoySettings())["spec"]["template"]["spec"]["containers"][0]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": 8080, "health": 9902, "stats": 9903}
    service = render_router_service(EnvoySettings())
    assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]} == {"http": "http", "stats": "stats"}


def test_default_templates_read_the_router_and_model_server_ones_stay_available() -> None:
    queries = render_queries(PromQLTemplates())
    assert queries[Signal.REQUEST_RATE].startswith(
        'sum by (namespace, workload) (rate(envoy_cluster_upstream_rq_total{target!="composite",}[60s]))'
    )
    assert "envoy_cluster_upstream_rq_time_bucket" in queries[Signal.LATENCY_P99]
    assert queries[Signal.IN_FLIGHT].startswith("sum by (namespace, workload) (max_over_time(")
    assert queries[Signal.ROUTER_UP] == 'up{job="inference-router",}'
    assert Signal.TIME_TO_FIRST_TOKEN not in queries  # a model-server extra, off by default
    model = render_queries(MODEL_SERVER_TEMPLATES)
    assert "model_requests_total" in model[Signal.REQUEST_RATE] and Signal.ROUTER_UP not in model
    assert PromQLTemplates().latency_bucket_unit_seconds == 0.001
    assert MODEL_SERVER_TEMPLATES.latency_bucket_unit_seconds == 1.0
    assert DEFAULT_ROUTER_UP.startswith("up{")


# ----------------------------------------------------------------------------------------------- loopback parts


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    delays: ClassVar[dict[str, float]] = {"/fast": 0.02, "/slow": 0.6, "/hold": 12.0, "/fail": 0.0}

    def do_GET(self) -> None:
        time.sleep(self.delays.get(self.path, 0.0))
        status = 503 if self.path == "/fail" else 200
        body = b"ok\n"
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _routes(cluster: UpstreamAddress, cloudrun: UpstreamAddress) -> list[Route]:
    run = CloudRunUpstream(host="chat-abc-uc.a.run.app", audience="https://chat-abc-uc.a.run.app", address=cloudrun)
    service = ServiceUpstream(cluster)
    return [
        Route(NAMESPACE, "chat", (Backend(R, run, 100),)),
        Route(NAMESPACE, "embed", (Backend(C, service, 50), Backend(R, run, 50))),
        Route(NAMESPACE, "burst", (Backend(C, service, 100),)),
    ]


def _get(port: int, host: str, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@dataclass
class _Load:
    """Requests at a fixed pace through Envoy (a thread pool, so slow requests do not slow the pace)."""

    port: int
    sent: dict[str, int] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _one(self, host: str, path: str) -> None:
        try:
            status = _get(self.port, host, path)
        except OSError:
            status = 0
        with self.lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1

    def run(self, pool: ThreadPoolExecutor, seconds: float, stop: threading.Event) -> None:
        """chat at 10 rps (every 20th slow), embed at 5 rps (every 5th fails), until ``seconds`` or ``stop``."""
        start = time.monotonic()
        tick = 0
        while not stop.is_set() and time.monotonic() - start < seconds:
            pool.submit(self._one, "chat.team.svc", "/slow" if tick % 20 == 19 else "/fast")
            if tick % 2 == 0:
                pool.submit(self._one, "embed.team.svc", "/fail" if (tick // 2) % 5 == 4 else "/fast")
            tick += 1
            time.sleep(max(0.0, start + tick * 0.1 - time.monotonic()))


def _wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _query(prometheus: PrometheusServer | _Url, promql: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{prometheus.url}/api/v1/query?{urlencode({'query': promql})}", timeout=5) as r:
        result: list[dict[str, Any]] = json.load(r)["data"]["result"]
    return result


def _scrape_config(router_targets: list[str]) -> str:
    return yaml.safe_dump(prometheus_config([], router=router_targets, scrape_seconds=1))


def _source(prometheus: PrometheusServer) -> PrometheusSource:
    return PrometheusSource(
        prometheus.url, step_seconds=2, range_seconds=30, rate_window_seconds=10, max_staleness_seconds=10
    )


@pytest.fixture
def router(envoy_router_with_stats: EnvoyRouter) -> EnvoyRouter:
    return envoy_router_with_stats


# ----------------------------------------------------------------------------------------------- the real thing


def test_admin_endpoints_are_reachable_on_no_port_but_loopback_admin(router: EnvoyRouter) -> None:
    """The stats port answers exactly GET /stats/prometheus; the health port /ready and /stats; every other admin
    path on every listener Envoy has (inference, health, stats) is a 404 (or the inference listener's unknown-Host
    answer), and the router is still running after a /quitquitquit sent to each."""
    ports = {"stats": router.stats_port, "health": router.health_port, "inference": router.listen_port}
    admin_paths = [
        "/config_dump",
        "/clusters",
        "/quitquitquit",
        "/server_info",
        "/listeners",
        "/runtime",
        "/runtime_modify?x=1",
        "/logging?level=trace",
        "/healthcheck/fail",
        "/drain_listeners",
        "/reset_counters",
        "/stats/recentlookups/enable",
        "/certs",
        "/memory",
        "/stats/prometheus/../../config_dump",
        "/stats/prometheus/",
        "/STATS/PROMETHEUS",
    ]
    for name, port in ports.items():
        assert port is not None
        for path in admin_paths:
            for method in ("GET", "POST"):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                try:
                    conn.request(method, path, headers={"Host": "admin"})
                    response = conn.getresponse()
                    body = response.read()
                finally:
                    conn.close()
                assert response.status == 404, (name, method, path, response.status, body[:200])
    assert router.process.poll() is None
    # what is allowed, only as GET
    status, body = _fetch(f"http://{router.stats_target}{STATS_PATH}")
    assert status == 200 and b"envoy_server_live" in body
    assert _fetch(f"http://{router.stats_target}{STATS_PATH}", method="POST")[0] == 404
    assert _fetch(f"http://{router.stats_target}/stats")[0] == 404
    assert _fetch(f"http://{router.stats_target}/ready")[0] == 404
    assert _fetch(f"{router.health_url}/ready")[0] == 200
    assert _fetch(f"{router.health_url}/stats?format=json")[0] == 200


def _fetch(url: str, method: str = "GET") -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.mark.slow
async def test_prometheus_reads_rate_latency_misses_errors_and_in_flight_from_the_router(
    router: EnvoyRouter, prometheus_binaries: PrometheusBinaries, tmp_path: Path
) -> None:
    with loopback_server(_Handler) as cluster, loopback_server(_Handler) as cloudrun:
        await router.applier().apply(_routes(cluster, cloudrun))
        # the router's stats carry the workload and target as labels, the latency histogram the ladder's bounds
        _, text = _fetch(f"http://{router.stats_target}{STATS_PATH}")
        assert (
            'envoy_cluster_upstream_rq_total{envoy_cluster_name="ip|team|embed|cloudrun",namespace="team",'
            'workload="embed",target="cloudrun"} 0'
        ) in text.decode()
        with scraping_prometheus(prometheus_binaries, _scrape_config([router.stats_target]), tmp_path / "prom") as prom:
            load = _Load(router.listen_port)
            stop = threading.Event()
            with ThreadPoolExecutor(max_workers=32) as pool:
                runner = threading.Thread(target=load.run, args=(pool, 40.0, stop))
                runner.start()
                try:
                    await asyncio.sleep(20)  # > 10 s rate window + 5 s histogram flush + scrapes
                    with ThreadPoolExecutor(max_workers=8) as burst_pool:
                        burst = [burst_pool.submit(load._one, "burst.team.svc", "/hold") for _ in range(8)]
                        active = "cluster.ip|team|burst|cluster.upstream_rq_active"
                        _wait_until(lambda: router.stat(active) == 8, 10, "8 requests in flight")
                        held_until = time.monotonic() + 8.0  # each is held 12 s; 8 s of that is enough margin
                        # Scraped every 1 s and read on the fetch's 2 s grid: a loaded machine may need a few
                        # fetches before the held requests show; each fetch is a whole, fresh snapshot.
                        while True:
                            await asyncio.sleep(1.0)
                            source = _source(prom)
                            slo = {CHAT: 0.5, EMBED: 0.5, BURST: 0.5}
                            snapshot = await source.fetch([CHAT, EMBED, BURST], datetime.now(UTC), slo)
                            if snapshot.in_flight.get(BURST) == 8.0 or time.monotonic() > held_until:
                                break
                        for future in burst:
                            future.result(timeout=30)
                finally:
                    stop.set()
                    runner.join(timeout=60)
            print(f"\nstatuses {load.statuses}; snapshot queries {snapshot.queries}")
            for key in (CHAT, EMBED, BURST):
                window = snapshot.windows.get(key)
                print(
                    f"  {key}: rps {window.rps[-3:] if window else None} p99 "
                    f"{window.observed_p99_seconds if window else None} service "
                    f"{window.service_seconds if window else None} miss {window.slo_miss_share if window else None} "
                    f"in-flight {snapshot.in_flight.get(key)} errors {snapshot.error_rate.get(key)} overflow "
                    f"{snapshot.overflow_rate.get(key)} problem {snapshot.problem_for(key)}"
                )
            assert snapshot.problem is None
            chat, embed = snapshot.windows[CHAT], snapshot.windows[EMBED]
            # rate: 10 rps and 5 rps, the latter summed over its two targets
            assert chat.rps[-1] == pytest.approx(10.0, rel=0.2)
            assert embed.rps[-1] == pytest.approx(5.0, rel=0.2)
            per_target = _query(prom, 'sum by (target) (rate(envoy_cluster_upstream_rq_total{workload="embed"}[10s]))')
            assert {item["metric"]["target"] for item in per_target} == {"cluster", "cloudrun"}
            # p99: 1 in 20 takes 0.6 s, so p99 lies in the 500..750 ms bucket; embed's in the fast ones
            assert chat.observed_p99_seconds is not None and 0.5 < chat.observed_p99_seconds <= 0.75
            # 20 ms a request: below the slow tail's bucket (under load the interpreter's pauses can put 1 % of
            # them above 100 ms, so no tighter bound than the one that tells the two apart)
            assert embed.observed_p99_seconds is not None and embed.observed_p99_seconds < 0.5
            assert chat.service_seconds == pytest.approx(0.95 * 0.02 + 0.05 * 0.6, rel=0.35)
            # SLO-miss share at 0.5 s (a bound of the ladder): 1 in 20 for chat, none for embed
            assert chat.slo_miss_share is not None and 0.02 <= chat.slo_miss_share <= 0.1
            assert embed.slo_miss_share == 0.0
            # errors: 1 in 5 of embed's requests is a 503 -> 1 rps; none for chat
            assert snapshot.error_rate[EMBED] == pytest.approx(1.0, rel=0.35)
            assert snapshot.error_rate[CHAT] == 0.0
            assert snapshot.overflow_rate[CHAT] == 0.0  # the series exists per workload; no circuit breaker tripped
            # in flight: the 8 held requests (peak over the rate window)
            assert snapshot.in_flight[BURST] == 8.0
            assert load.statuses.get(0, 0) == 0
            # every router cluster's request-time histogram has the ladder's bounds (seen once requests were timed)
            _, text = _fetch(f"http://{router.stats_target}{STATS_PATH}")
            lines = text.decode().splitlines()
            ladder = {f'le="{bound:g}"' for bound in DEFAULT_LATENCY_BUCKETS_MS} | {'le="+Inf"'}
            rq_time = [
                line for line in lines if line.startswith("envoy_cluster_upstream_rq_time_bucket{") and "ip|" in line
            ]
            assert rq_time and {line.split(",")[-1].split("}")[0] for line in rq_time} == ladder
            # the ladder is for the router's request time only: the external copy keeps Envoy's default buckets
            external = [line for line in lines if line.startswith("envoy_cluster_external_upstream_rq_time_bucket{")]
            assert external and not any('le="750"' in line for line in external)


class _Switchable(ThreadingHTTPServer):
    daemon_threads = True
    mode = "proxy"
    upstream = ""


class _SwitchableHandler(BaseHTTPRequestHandler):
    """The router's stats as Prometheus sees them, until the test switches to garbage."""

    server: _Switchable

    def do_GET(self) -> None:
        if self.server.mode == "garbage":
            body = b"<html>this is { not the prometheus text format\n"
        else:
            with urllib.request.urlopen(f"http://{self.server.upstream}{self.path}", timeout=5) as response:
                body = response.read()
        self.send_response(200)
        self.send_header("content-type", "text/plain; version=0.0.4")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.slow
async def test_a_failing_or_garbage_router_scrape_freezes_placement_with_a_reason(
    router: EnvoyRouter, prometheus_binaries: PrometheusBinaries, tmp_path: Path
) -> None:
    """Prometheus scrapes the router's stats through a switchable stand-in: good, then garbage, then gone. Good:
    windows. Garbage or gone: Prometheus' ``up`` is 0 and the whole fetch fails with the reason (no workload gets
    a window, so placement holds and every workload reports MetricsAvailable=False with it, exactly like a
    Prometheus outage), even while the last good rate points are still inside the staleness limit."""
    stand_in = _Switchable(("127.0.0.1", 0), _SwitchableHandler)
    stand_in.upstream = router.stats_target
    thread = threading.Thread(target=stand_in.serve_forever, daemon=True)
    thread.start()
    target = f"127.0.0.1:{stand_in.server_address[1]}"
    stopped = False
    try:
        with loopback_server(_Handler) as cluster, loopback_server(_Handler) as cloudrun:
            await router.applier().apply(_routes(cluster, cloudrun))
            config = _scrape_config([target])
            with scraping_prometheus(prometheus_binaries, config, tmp_path / "prom") as prom:
                load = _Load(router.listen_port)
                stop = threading.Event()
                with ThreadPoolExecutor(max_workers=16) as pool:
                    runner = threading.Thread(target=load.run, args=(pool, 60.0, stop))
                    runner.start()
                    try:
                        await asyncio.sleep(14)
                        source = _source(prom)
                        good = await source.fetch([CHAT, EMBED], datetime.now(UTC))
                        assert good.problem is None and set(good.windows) == {CHAT, EMBED}

                        stand_in.mode = "garbage"
                        _wait_until(lambda: _query(prom, f'up{{instance="{target}"}} == 0'), 15, "up == 0")
                        await asyncio.sleep(2.5)  # the fetch's end is on its 2 s grid
                        garbage = await source.fetch([CHAT, EMBED], datetime.now(UTC))

                        stand_in.shutdown()
                        stand_in.server_close()
                        stopped = True
                        stand_in.mode = "proxy"
                        await asyncio.sleep(4)
                        gone = await source.fetch([CHAT, EMBED], datetime.now(UTC))
                    finally:
                        stop.set()
                        runner.join(timeout=60)
        for snapshot in (garbage, gone):
            print(f"\n{snapshot.problem}")
            assert snapshot.windows == {}
            assert snapshot.problem is not None
            assert "router stats scrape failing" in snapshot.problem and target in snapshot.problem
            assert snapshot.problem_for(CHAT) == snapshot.problem
        # Prometheus' own words for each failure: a parse error, then a refused connection
        assert garbage.problem is not None and gone.problem is not None
        assert "connection refused" not in garbage.problem and "connection refused" in gone.problem
    finally:
        if not stopped:
            stand_in.shutdown()
            stand_in.server_close()
        thread.join(timeout=5)


def test_the_local_stack_prometheus_scrapes_the_local_stack_envoy(
    envoy_binary: str, prometheus_binaries: PrometheusBinaries, tmp_path: Path
) -> None:
    """What ``make demo`` starts: its Prometheus scrapes its Envoy's stats port as job inference-router, and the
    router's tagged series arrive (the demo's operator reads them with the default templates)."""
    procs = Processes()
    try:
        envoy = start_local_envoy(procs, envoy_binary, tmp_path, UpstreamAddress("127.0.0.1", 9))
        assert envoy.settings.stats_address == "127.0.0.1"
        # the overflow hop the demo's operator routes spilled requests through (router.overflowPort) listens
        with urllib.request.urlopen(f"{envoy.admin_url}/listeners?format=json", timeout=5) as response:
            listeners = json.load(response)["listener_statuses"]
        overflow = next(item for item in listeners if item["name"] == "overflow")
        assert overflow["local_address"]["socket_address"] == {
            "address": "127.0.0.1",
            "port_value": envoy.overflow_port,
        }
        server = start_prometheus(
            prometheus_binaries.prometheus,
            tmp_path / "prometheus",
            router_targets=[envoy.stats_target],
            scrape_seconds=1,
        )
        url = server.url
        procs.adopt("prometheus", server.process)

        def scraped() -> bool:
            up = _query(_Url(url), 'up{job="inference-router"}')
            return bool(up) and up[0]["value"][1] == "1"

        _wait_until(scraped, 30, "the router scraped")
        live = _query(_Url(url), 'envoy_server_live{job="inference-router"}')
        assert live and live[0]["metric"]["instance"] == envoy.stats_target
    finally:
        procs.stop_all()


@dataclass(frozen=True)
class _Url:
    url: str


async def test_no_router_scraped_at_all_is_a_problem_of_the_whole_fetch(
    prometheus_binaries: PrometheusBinaries, tmp_path: Path
) -> None:
    with scraping_prometheus(prometheus_binaries, _scrape_config([]), tmp_path / "prom") as prom:
        snapshot = await _source(prom).fetch([CHAT], datetime.now(UTC))
    assert snapshot.windows == {}
    assert snapshot.problem is not None and "router stats not scraped" in snapshot.problem


# ----------------------------------------------------------------------------------------------- the reconcile


class _Writer:
    def __init__(self) -> None:
        self.status: dict[str, Any] = {}

    async def patch_status(
        self, namespace: str, name: str, patch: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        apply_merge_patch(self.status, patch)
        return {"metadata": {"name": name, "namespace": namespace}, "status": self.status}

    async def post_event(self, **_: Any) -> None:
        return None


async def test_a_router_scrape_problem_freezes_a_reconcile_like_a_prometheus_outage() -> None:
    """The fleet hands ``snapshot.problem_for(key)`` to each reconcile, whichever way the fetch failed: a workload
    placed on the cluster, allowed on Cloud Run too, stays where it is, provisions nothing elsewhere, starts no
    migration, and says why in ``MetricsAvailable``: the reason is the same as for Prometheus down, with the
    router's words."""
    now = datetime(2026, 12, 6, 1, 0, tzinfo=UTC)
    body: dict[str, Any] = {
        "apiVersion": "placement.inference.dev/v1alpha1",
        "kind": "InferenceWorkload",
        "metadata": {
            "name": "chat",
            "namespace": NAMESPACE,
            "uid": "uid-chat",
            "generation": 1,
            "resourceVersion": "1",
        },
        "spec": {
            "model": {"image": "registry.example/chat:1", "sizeMb": 100, "cpu": "1", "memory": "1Gi"},
            "slo": {"latencyP99Seconds": 1.0, "attainment": 0.99},
            "placement": {"allowedTargets": ["cluster", "cloudrun"]},
            "cloudRun": {"project": "p", "region": "us-central1"},
        },
        "status": {"placement": "cluster"},
    }
    outage = "request_rate query: Prometheus at 127.0.0.1:9090 unreachable (ConnectionError)"
    router_down = (
        'router stats scrape failing (up{job="inference-router"} is 0): 10.0.3.7:9903: "INVALID" is not a valid '
        "start token"
    )
    conditions = {}
    for problem in (outage, router_down):
        writer = _Writer()
        writer.status = {"placement": "cluster"}
        targets: dict[TargetName, Any] = {C: DryRunTarget(C), R: DryRunTarget(R)}
        reconciler = Reconciler(cast(Any, writer), targets, tenancy=inline_tenancy())
        inputs = TickInputs(
            now=now, price_book=default_price_book(), capacity=ClusterCapacity(), metrics_problem=problem
        )
        await reconciler.reconcile({**body, "status": dict(writer.status)}, inputs)
        assert writer.status.get("placement") == "cluster"
        assert not writer.status.get("migration")
        metrics = next(c for c in writer.status["conditions"] if c["type"] == "MetricsAvailable")
        assert metrics["status"] == "False" and problem in metrics["message"], metrics
        conditions[problem] = metrics["reason"]
        assert targets[R].ensures == 0  # nothing provisioned on the other target
    assert conditions[outage] == conditions[router_down] == "MetricsMissing"
