"""The live loop end to end: real apiserver + node, real Prometheus fed by a promtool backfill of a real trace
segment, the real operator (subprocess), a real Envoy serving the operator's routes, and that trace replayed as HTTP
requests through the stable endpoint.

The segment is a real day of ``azure-functions-2019`` (20-minute steps) that swings high -> low -> high, replayed at
one step per ``STEP_SECONDS``; its samples are backfilled with wall-clock timestamps that reach into the future, so
Prometheus "sees" the trace unfold while the test runs. Upstreams are loopback stand-ins: the in-cluster Service
(the real Deployment runs on the node, but Service IPs are not routable here) and the Cloud Run service URL.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from inference_placement.replay.load import LoadReplay, schedule_from_counts
from inference_placement.replay.segment import SwingSegment, find_swing
from inference_placement.sim.traces import load_trace
from tests.cloudrun_standin import CloudRunStandin
from tests.plugins.cluster import REPO_ROOT, KubeCluster
from tests.plugins.envoy import EnvoyRouter, HttpUpstreams
from tests.plugins.operator import OperatorProcess, wait_for
from tests.plugins.prometheus import PrometheusBinaries, PrometheusServer

pytestmark = pytest.mark.cluster

TRACE = REPO_ROOT.parent / "shared" / "traces" / "azure-functions-2019" / "100_inv.csv"
STEP_SECONDS = 6.0
"""Wall-clock seconds one 20-minute trace step lasts in the replay."""
PEAK_RPS = 6.0
"""The busiest step of the segment, replayed (kept small: two cores run everything here)."""
SAMPLE_SECONDS = 1
QUERY_STEP_SECONDS = 2
RATE_WINDOW_SECONDS = 6
SUSTAIN_SECONDS = 8
HOLD_SECONDS = 2.0
NAME = "swing"

MIGRATION_STEPS = (
    "Provisioning",
    "AwaitingHealthy",
    "Shifting@10",
    "Shifting@50",
    "Shifting@100",
    "Draining",
    "Retiring",
)


@pytest.fixture(scope="module")
def segment() -> SwingSegment:
    if not TRACE.exists():
        pytest.fail(f"{TRACE} missing: the shared traces are part of the workplace", pytrace=False)
    return find_swing(load_trace(TRACE), steps=40, smooth_steps=2, hold_steps=5, trace_steps_per_step=20)


def _rates(segment: SwingSegment) -> tuple[list[float], float, float]:
    """Per-step request rates of the replay and the (offload, reclaim) thresholds in rps."""
    scale = segment.scale_to(PEAK_RPS, STEP_SECONDS)
    per_second = scale / STEP_SECONDS
    return (
        [c * per_second for c in segment.counts],
        segment.offload_below * per_second,
        segment.reclaim_above * per_second,
    )


def _openmetrics(namespace: str, rates: list[float], start: float, history_seconds: float) -> str:
    """Counter + histogram of the replayed traffic, one sample per second, from ``start - history`` to the end."""
    labels = f'namespace="{namespace}",workload="{NAME}"'
    buckets = (0.025, 0.05, 0.1, 0.25, 1.0)
    lines_count, lines_hist = ["# TYPE model_requests counter"], ["# TYPE model_request_duration_seconds histogram"]
    total = 0.0
    t = start - history_seconds
    end = start + len(rates) * STEP_SECONDS
    while t <= end:
        step = int((t - start) // STEP_SECONDS)
        rate = rates[min(max(step, 0), len(rates) - 1)]
        total += rate * SAMPLE_SECONDS
        stamp = f"{t:.3f}"
        lines_count.append(f'model_requests_total{{{labels},code="200"}} {total:.3f} {stamp}')
        for bound in buckets:
            share = 0.98 if bound == 0.025 else 1.0  # p99 around 25-50 ms
            lines_hist.append(
                f'model_request_duration_seconds_bucket{{{labels},le="{bound}"}} {total * share:.3f} {stamp}'
            )
        lines_hist.append(f'model_request_duration_seconds_bucket{{{labels},le="+Inf"}} {total:.3f} {stamp}')
        lines_hist.append(f"model_request_duration_seconds_count{{{labels}}} {total:.3f} {stamp}")
        lines_hist.append(f"model_request_duration_seconds_sum{{{labels}}} {total * 0.02:.3f} {stamp}")
        t += SAMPLE_SECONDS
    return "\n".join([*lines_count, *lines_hist, "# EOF"]) + "\n"


def _workload(namespace: str, image: str, offload_rps: float, reclaim_rps: float, project: str) -> dict[str, Any]:
    return {
        "apiVersion": "placement.inference.dev/v1alpha1",
        "kind": "InferenceWorkload",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "model": {
                "image": image,
                "port": 8080,
                "sizeMb": 300,
                "cpu": "100m",
                "memory": "128Mi",
                "serviceSeconds": 0.02,
            },
            "slo": {"latencyP99Seconds": 0.5, "attainment": 0.99, "tolerableColdStartSeconds": 30},
            "placement": {
                "allowedTargets": ["cluster", "cloudrun"],
                "thresholds": {
                    "mode": "explicit",
                    "offloadBelowRps": round(offload_rps, 3),
                    "reclaimAboveRps": round(reclaim_rps, 3),
                },
                "sustainSeconds": SUSTAIN_SECONDS,
                "cooldownSeconds": 0,
            },
            "scaling": {"minReplicas": 1, "maxReplicas": 2, "targetConcurrency": 4},
            "cloudRun": {"project": project, "region": "us-central1", "concurrency": 4, "maxInstances": 5},
        },
    }


@dataclass
class Observation:
    at: float
    placement: str | None
    step: str | None
    percent: int | None
    weights: dict[str, int]


@dataclass
class Watcher:
    """Polls the workload's status and the router's route file in a thread, recording what changed."""

    cluster: KubeCluster
    namespace: str
    rds_path: Path
    seen: list[Observation] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def status(self) -> dict[str, Any]:
        result = self.cluster.kubectl("get", "iw", NAME, "-n", self.namespace, "-o", "json", check=False)
        return dict(json.loads(result.stdout).get("status") or {}) if result.returncode == 0 else {}

    def weights(self) -> dict[str, int]:
        try:
            document = json.loads(self.rds_path.read_text())
        except (OSError, ValueError):
            return {}
        for resource in document.get("resources", []):
            for host in resource.get("virtual_hosts", []):
                if f"{NAME}.{self.namespace}" not in host.get("domains", []):
                    continue
                for route in host.get("routes", []):
                    clusters = route.get("route", {}).get("weighted_clusters", {}).get("clusters", [])
                    return {c["name"].rsplit("|", 1)[-1]: int(c.get("weight", 0)) for c in clusters}
        return {}

    def _poll(self) -> None:
        while not self._stop.is_set():
            status = self.status()
            migration = status.get("migration") or {}
            obs = Observation(
                time.monotonic(),
                status.get("placement"),
                migration.get("step"),
                migration.get("trafficPercent"),
                self.weights(),
            )
            last = self.seen[-1] if self.seen else None
            if last is None or (last.placement, last.step, last.percent, last.weights) != (
                obs.placement,
                obs.step,
                obs.percent,
                obs.weights,
            ):
                self.seen.append(obs)
            self._stop.wait(0.2)

    def start(self) -> Watcher:
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def current_step(self) -> str | None:
        status = self.status()
        migration = status.get("migration")
        if not migration:
            return None
        step = str(migration.get("step"))
        return f"{step}@{migration.get('trafficPercent')}" if step == "Shifting" else step


def _events(cluster: KubeCluster, namespace: str) -> list[tuple[str, str]]:
    items = cluster.kubectl_json("get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={NAME}")
    ordered = sorted(items["items"], key=lambda e: (e.get("firstTimestamp") or "", e["metadata"]["name"]))
    return [(e["reason"], e["message"]) for e in ordered]


@pytest.fixture
def live_stack(
    kube_node: KubeCluster,
    crd_installed: KubeCluster,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
    prometheus_binaries: PrometheusBinaries,
    prometheus_factory: Callable[[str], PrometheusServer],
    envoy_router: EnvoyRouter,
    envoy_binary: str,
    http_upstreams: HttpUpstreams,
    cloudrun_standin: CloudRunStandin,
    segment: SwingSegment,
    tmp_path: Path,
) -> Iterator[dict[str, Any]]:
    """Everything started; yields the parts a test drives. The trace timeline starts ``lead`` seconds from now."""
    rates, offload, reclaim = _rates(segment)
    model = http_upstreams.start("cluster-model")
    serverless = http_upstreams.start("cloudrun-model")
    cloudrun_standin.service_url = serverless.url
    cloudrun_standin.reconcile_seconds = 1.5  # long enough to SIGKILL the operator while a deploy is in flight
    start = time.time() + 15.0
    prometheus = prometheus_factory(_openmetrics(namespace, rates, start, history_seconds=120))
    promql = tmp_path / "promql.yaml"
    promql.write_text(yaml.safe_dump({"rateWindowSeconds": RATE_WINDOW_SECONDS}))
    published = f"http://{NAME}-model.{namespace}.svc:8080"
    operator = operator_factory(
        namespace,
        "--prometheus-url",
        prometheus.url,
        "--promql-templates",
        str(promql),
        "--metrics-range-seconds",
        "60",
        "--metrics-step-seconds",
        str(QUERY_STEP_SECONDS),
        "--max-metrics-staleness-seconds",
        "15",
        "--set",
        "cluster.imagePullPolicy=Never",
        "--set",
        f"cloudrun.endpoint={cloudrun_standin.url}",
        "--set",
        "cloudrun.project=live-test",
        "--set",
        "router.mode=files",
        "--set",
        f"router.xdsDir={envoy_router.xds_dir}",
        "--set",
        f"router.adminUrl={envoy_router.admin_url}",
        "--set",
        f"router.envoyBinary={envoy_binary}",
        "--set",
        f"router.addressOverrides={published}={model.url}",
        "--set",
        f"migration.stepHoldSeconds={HOLD_SECONDS}",
        "--set",
        f"migration.drainSeconds={HOLD_SECONDS}",
    )
    doc = _workload(namespace, kube_node.model_server_image, offload, reclaim, "live-test")
    kube_node.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    watcher = Watcher(kube_node, namespace, envoy_router.xds_dir / "rds.json").start()
    schedule = schedule_from_counts(
        segment.counts, seconds_per_step=STEP_SECONDS, scale=segment.scale_to(PEAK_RPS, STEP_SECONDS)
    )
    replay = LoadReplay(envoy_router.listen_port, f"{NAME}.{namespace}.svc", schedule, connections=4)
    try:
        yield {
            "cluster": kube_node,
            "namespace": namespace,
            "operator": operator,
            "prometheus": prometheus,
            "prometheus_binaries": prometheus_binaries,
            "envoy": envoy_router,
            "watcher": watcher,
            "replay": replay,
            "start": start,
            "standin": cloudrun_standin,
            "thresholds": (offload, reclaim),
            "rates": rates,
        }
    finally:
        replay.stop()
        watcher.stop()
        kube_node.kubectl("delete", "iw", NAME, "-n", namespace, "--wait=false", check=False)


def _wait_placed(stack: dict[str, Any], target: str, timeout: float) -> dict[str, Any]:
    watcher: Watcher = stack["watcher"]

    def placed() -> dict[str, Any] | None:
        status = watcher.status()
        ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), None)
        if status.get("placement") == target and not status.get("migration") and ready and ready["status"] == "True":
            return status
        return None

    result: dict[str, Any] = wait_for(placed, timeout=timeout, interval=0.3, what=f"placed on {target} and Ready")
    return result


def _kill_at_every_step(stack: dict[str, Any], killed: list[str], deadline: float) -> None:
    """While a migration runs, SIGKILL the operator once at each step it reaches, and restart it at once."""
    watcher: Watcher = stack["watcher"]
    operator: OperatorProcess = stack["operator"]
    wait_for(
        lambda: watcher.current_step() is not None,
        timeout=deadline - time.monotonic(),
        interval=0.1,
        what="a migration to start",
    )
    while time.monotonic() < deadline:
        step = watcher.current_step()
        if step is None:
            return
        if step in MIGRATION_STEPS and step not in killed:
            operator.kill()
            killed.append(step)
            operator.start()
        time.sleep(0.1)
    raise AssertionError(f"migration still running after the deadline; killed at {killed}")


def test_a_real_trace_swing_migrates_cluster_to_cloud_run_and_back_with_sigkill_at_every_step(
    live_stack: dict[str, Any],
) -> None:
    stack = live_stack
    cluster: KubeCluster = stack["cluster"]
    namespace: str = stack["namespace"]
    replay: LoadReplay = stack["replay"]
    watcher: Watcher = stack["watcher"]
    standin: CloudRunStandin = stack["standin"]

    # the high start: the first placement follows the explicit thresholds onto the cluster, whose Pod really runs
    status = _wait_placed(stack, "cluster", timeout=60)
    assert status["endpoint"] == f"http://{NAME}.{namespace}.svc.cluster.local"
    time.sleep(max(0.0, stack["start"] - time.time()))
    replay.start()

    killed: list[str] = []
    # traffic falls below the offload threshold for the sustain window: cluster -> cloudrun, killed at every step
    _kill_at_every_step(stack, killed, deadline=time.monotonic() + 240)
    _wait_placed(stack, "cloudrun", timeout=60)
    wait_for(
        lambda: not cluster.kubectl("get", "deployment", f"{NAME}-model", "-n", namespace, check=False).stdout,
        timeout=30,
        what="the retired Deployment to be gone",
    )
    # traffic rises above the reclaim threshold: back to the cluster, killed at every step again
    _kill_at_every_step(stack, killed, deadline=time.monotonic() + 240)
    final = _wait_placed(stack, "cluster", timeout=90)
    replay.join(timeout=max(0.0, stack["start"] + len(stack["rates"]) * STEP_SECONDS + 30 - time.time()))
    replay.stop()

    summary = replay.summary()
    failures = replay.failures()
    print(
        f"\nreplayed {summary.requests} requests, {summary.failed} failed, p99 {summary.p99_ms} ms, "
        f"served by {summary.served_by}; killed the operator at {killed}"
    )
    assert not failures, f"{len(failures)} failed requests, first: {failures[:5]}"
    assert summary.served_by.get("cluster-model", 0) > 0 and summary.served_by.get("cloudrun-model", 0) > 0

    # every step was interrupted at least once, over the two migrations
    assert set(killed) >= set(MIGRATION_STEPS) - {"Provisioning"}, killed

    # no orphan: one Cloud Run service was created and retired; the Deployment is back
    assert standin.services() == []
    assert final["lastMigration"]["outcome"] == "Succeeded"
    assert final["lastMigration"]["source"] == "cloudrun" and final["lastMigration"]["target"] == "cluster"

    # each step visible as an Event, in order, for both directions
    reasons = [r for r, _ in _events(cluster, namespace)]
    walk = [
        "MigrationStarted",
        "TrafficShifted",
        "TrafficShifted",
        "TrafficShifted",
        "Draining",
        "RetiringSource",
        "MigrationSucceeded",
    ]
    migration_events = [r for r in reasons if r in set(walk)]
    assert migration_events == walk + walk, migration_events

    # the router's weights followed every step, in order (cluster share, cloudrun share)
    weights = [(o.weights.get("cluster", 0), o.weights.get("cloudrun", 0)) for o in watcher.seen if o.weights]
    compact = [w for i, w in enumerate(weights) if i == 0 or w != weights[i - 1]]
    down = [(100, 0), (90, 10), (50, 50), (0, 100)]
    up = [(0, 100), (10, 90), (50, 50), (100, 0)]
    assert _in_order(compact, down + up[1:]), compact


def _in_order(seen: list[tuple[int, int]], expected: list[tuple[int, int]]) -> bool:
    it = iter(seen)
    return all(any(s == e for s in it) for e in expected)


def test_a_metrics_outage_freezes_placement_and_recovers(live_stack: dict[str, Any]) -> None:
    """Prometheus stopped while traffic falls: MetricsAvailable=False, no migration; back up: metrics fresh again."""
    stack = live_stack
    watcher: Watcher = stack["watcher"]
    prometheus: PrometheusServer = stack["prometheus"]
    _wait_placed(stack, "cluster", timeout=60)
    prometheus.stop()

    def metrics_condition() -> dict[str, Any] | None:
        status = watcher.status()
        return next((c for c in status.get("conditions", []) if c["type"] == "MetricsAvailable"), None)

    wait_for(lambda: (c := metrics_condition()) and c["status"] == "False", timeout=30, what="MetricsAvailable=False")
    # hold the outage across the part of the trace where traffic falls below the offload threshold
    offload_starts = stack["start"] + _first_low_step(stack) * STEP_SECONDS + SUSTAIN_SECONDS
    while time.time() < offload_starts + 15:
        assert watcher.current_step() is None, "a migration started without metrics"
        time.sleep(0.5)
    assert watcher.status().get("placement") == "cluster"
    # the first placement walks Provisioning/AwaitingHealthy without a source; no migration happened after it
    assert not [o for o in watcher.seen if o.step is not None and o.placement is not None]

    restarted = _restart(prometheus, stack["prometheus_binaries"])
    try:
        wait_for(lambda: (c := metrics_condition()) and c["status"] == "True", timeout=30, what="MetricsAvailable=True")
    finally:
        restarted.stop()


def _first_low_step(stack: dict[str, Any]) -> int:
    offload, _ = stack["thresholds"]
    rates: list[float] = stack["rates"]
    return next(i for i, r in enumerate(rates) if r < offload)


def _restart(server: PrometheusServer, binaries: PrometheusBinaries) -> PrometheusServer:
    """The same TSDB on the same port (the operator keeps its --prometheus-url)."""
    import subprocess

    port = server.url.rsplit(":", 1)[1]
    log_path = server.directory / "prometheus-restart.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                binaries.prometheus,
                f"--config.file={server.directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={server.directory / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=100y",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return PrometheusServer(server.url, process, server.directory, log_path)
