"""The live loop's building blocks: a real trace swing backfilled into a real Prometheus, the real operator, a real
Envoy, loopback upstreams, the Cloud Run stand-in, and watchers of a workload's status and of the router's routes.

Used by ``tests/test_live_migration.py`` (the ``live_stack`` fixture) and ``tests/test_fault_injection.py`` (which
builds a module-scoped stack from the same parts).

``segment`` (module)   the real ``azure-functions-2019`` day that swings high -> low -> high (``find_swing``)
``live_stack``         everything started for one workload ``NAME`` whose traffic follows ``segment``; the trace
                       timeline starts 15 s after the fixture returns (``stack["start"]``)

Helpers: :func:`replay_rates`, :func:`traffic_lines` / :func:`render_openmetrics` / :func:`openmetrics` (the
OpenMetrics of replayed traffic, one sample per second, timestamps reaching into the future), :func:`workload_doc`,
:class:`Watcher`, :func:`wait_placed`, :func:`restart_prometheus`, :func:`operator_args`.
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

from inference_placement.devtools.demo.live import LiveSettings, live_workload
from inference_placement.devtools.processes import spawn
from inference_placement.devtools.prometheus import prometheus_command
from inference_placement.devtools.replay.load import LoadReplay, schedule_from_counts
from inference_placement.devtools.replay.segment import SwingSegment, find_swing
from inference_placement.sim.traces import load_trace
from tests.cloudrun_standin import CloudRunStandin
from tests.plugins.cluster import REPO_ROOT, KubeCluster
from tests.plugins.envoy import EnvoyRouter, HttpUpstreams
from tests.plugins.operator import OperatorProcess, wait_for
from tests.plugins.prometheus import PrometheusBinaries, PrometheusServer

__all__ = [
    "HOLD_SECONDS",
    "MIGRATION_STEPS",
    "NAME",
    "Observation",
    "PEAK_RPS",
    "QUERY_STEP_SECONDS",
    "RATE_WINDOW_SECONDS",
    "SAMPLE_SECONDS",
    "STEP_SECONDS",
    "SUSTAIN_SECONDS",
    "TRACE",
    "Watcher",
    "condition",
    "event_order",
    "live_stack",
    "openmetrics",
    "operator_args",
    "render_openmetrics",
    "replay_rates",
    "restart_prometheus",
    "segment",
    "traffic_lines",
    "wait_placed",
    "workload_doc",
]

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


def replay_rates(segment: SwingSegment) -> tuple[list[float], float, float]:
    """Per-step request rates of the replay and the (offload, reclaim) thresholds in rps."""
    scale = segment.scale_to(PEAK_RPS, STEP_SECONDS)
    per_second = scale / STEP_SECONDS
    return (
        [c * per_second for c in segment.counts],
        segment.offload_below * per_second,
        segment.reclaim_above * per_second,
    )


ROUTER_UP = 'up{job="inference-router",instance="router-0"}'
"""The router's scrape health, backfilled at 1 beside the traffic (the default templates' ``router_up``)."""


def traffic_lines(
    namespace: str,
    name: str,
    rates: list[float],
    start: float,
    history_seconds: float,
    *,
    step_seconds: float = STEP_SECONDS,
    nan_between: tuple[float, float] | None = None,
) -> tuple[list[str], list[str]]:
    """(counter lines, histogram lines) of one workload's traffic as the router reports it (``target="cluster"``;
    the request-time histogram in milliseconds): ``rates[i]`` rps during step ``i`` after ``start``, one sample per
    second from ``start - history_seconds`` to the end. ``nan_between=(t0, t1)`` writes NaN instead of the counter's
    value at the samples in [t0, t1] (garbage a broken exporter could send)."""
    labels = f'namespace="{namespace}",workload="{name}",target="cluster"'
    buckets = ("25", "50", "100", "250", "1000")
    lines_count: list[str] = []
    lines_hist: list[str] = []
    total = 0.0
    t = start - history_seconds
    end = start + len(rates) * step_seconds
    while t <= end:
        step = int((t - start) // step_seconds)
        rate = rates[min(max(step, 0), len(rates) - 1)]
        total += rate * SAMPLE_SECONDS
        stamp = f"{t:.3f}"
        garbage = nan_between is not None and nan_between[0] <= t <= nan_between[1]
        counted = "NaN" if garbage else f"{total:.3f}"
        lines_count.append(f"envoy_cluster_upstream_rq_total{{{labels}}} {counted} {stamp}")
        for bound in buckets:
            share = 0.98 if bound == "25" else 1.0  # p99 around 25-50 ms
            lines_hist.append(
                f'envoy_cluster_upstream_rq_time_bucket{{{labels},le="{bound}"}} {total * share:.3f} {stamp}'
            )
        lines_hist.append(f'envoy_cluster_upstream_rq_time_bucket{{{labels},le="+Inf"}} {total:.3f} {stamp}')
        lines_hist.append(f"envoy_cluster_upstream_rq_time_count{{{labels}}} {total:.3f} {stamp}")
        lines_hist.append(f"envoy_cluster_upstream_rq_time_sum{{{labels}}} {total * 20:.3f} {stamp}")
        t += SAMPLE_SECONDS
    return lines_count, lines_hist


def render_openmetrics(parts: list[tuple[list[str], list[str]]]) -> str:
    """One OpenMetrics document from several workloads' :func:`traffic_lines` (each family's samples together), with
    the router's scrape health at 1 over the same span."""
    counters = [line for count, _ in parts for line in count]
    histograms = [line for _, hist in parts for line in hist]
    stamps = sorted({line.rsplit(" ", 1)[1] for line in counters}, key=float)
    return (
        "\n".join(
            [
                "# TYPE up gauge",
                *(f"{ROUTER_UP} 1 {stamp}" for stamp in stamps),
                "# TYPE envoy_cluster_upstream_rq counter",
                *counters,
                "# TYPE envoy_cluster_upstream_rq_time histogram",
                *histograms,
                "# EOF",
            ]
        )
        + "\n"
    )


def openmetrics(namespace: str, rates: list[float], start: float, history_seconds: float) -> str:
    """Counter + histogram of the replayed traffic of ``NAME``, one sample per second, from ``start - history`` to
    the end."""
    return render_openmetrics([traffic_lines(namespace, NAME, rates, start, history_seconds)])


def workload_doc(
    namespace: str,
    image: str,
    offload_rps: float,
    reclaim_rps: float,
    project: str,
    *,
    name: str = NAME,
    sustain_seconds: int = SUSTAIN_SECONDS,
    allowed_targets: tuple[str, ...] = ("cluster", "cloudrun"),
) -> dict[str, Any]:
    """The demo's live workload (``devtools.demo.live.live_workload``) with this harness's timings."""
    settings = LiveSettings(sustain_seconds=sustain_seconds)
    return live_workload(
        name, namespace, image, offload_rps, reclaim_rps, settings, project=project, allowed_targets=allowed_targets
    )


@dataclass
class Observation:
    at: float
    placement: str | None
    step: str | None
    percent: int | None
    weights: dict[str, int]


def event_order(event: dict[str, Any]) -> int:
    """The order the apiserver stored Events in: their resourceVersion (etcd's revision, which only grows).

    Not ``firstTimestamp``: a core/v1 Event's timestamps have one-second resolution, and two steps of one migration
    can be posted within one second (a step without a hold, such as AwaitingHealthy -> Shifting, or a full tick
    right after a pass over the workloads in flight); sorted by (second, random generated name), such a pair comes
    out in either order, which made ``test_live_migration``'s in-order check fail now and then, more often under
    load (a slower status write moves the first Event into the second one's second)."""
    return int(event["metadata"]["resourceVersion"])


def condition(status: dict[str, Any], type_: str) -> dict[str, Any] | None:
    """The condition ``type_`` of a status, or None."""
    found: dict[str, Any] | None = next((c for c in status.get("conditions", []) if c["type"] == type_), None)
    return found


@dataclass
class Watcher:
    """Polls the workload's status and the router's route file in a thread, recording what changed."""

    cluster: KubeCluster
    namespace: str
    rds_path: Path
    name: str = NAME
    seen: list[Observation] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def status(self) -> dict[str, Any]:
        result = self.cluster.kubectl("get", "iw", self.name, "-n", self.namespace, "-o", "json", check=False)
        return dict(json.loads(result.stdout).get("status") or {}) if result.returncode == 0 else {}

    def weights(self) -> dict[str, int]:
        try:
            document = json.loads(self.rds_path.read_text())
        except (OSError, ValueError):
            return {}
        for resource in document.get("resources", []):
            for host in resource.get("virtual_hosts", []):
                if f"{self.name}.{self.namespace}" not in host.get("domains", []):
                    continue
                # the workload's own entry is the last (keep-warm pings and the activator's replays match first)
                for route in host.get("routes", [])[-1:]:
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


def wait_placed(watcher: Watcher, target: str, timeout: float) -> dict[str, Any]:
    """Wait until the watched workload is placed on ``target``, no migration runs and it is Ready; its status."""

    def placed() -> dict[str, Any] | None:
        status = watcher.status()
        ready = condition(status, "Ready")
        if status.get("placement") == target and not status.get("migration") and ready and ready["status"] == "True":
            return status
        return None

    result: dict[str, Any] = wait_for(
        placed, timeout=timeout, interval=0.3, what=f"{watcher.name} placed on {target} and Ready"
    )
    return result


def restart_prometheus(server: PrometheusServer, binaries: PrometheusBinaries) -> PrometheusServer:
    """The same TSDB on the same port (the operator keeps its --prometheus-url)."""
    port = server.url.rsplit(":", 1)[1]
    directory = server.directory
    log_path = directory / "prometheus-restart.log"
    command = prometheus_command(binaries.prometheus, directory / "prometheus.yml", directory / "tsdb", port)
    return PrometheusServer(server.url, spawn(command, log_path), log_path, directory)


def operator_args(
    *,
    prometheus_url: str,
    promql_path: Path,
    cloudrun_url: str,
    envoy_router: EnvoyRouter,
    envoy_binary: str,
    address_overrides: dict[str, str],
    hold_seconds: float = HOLD_SECONDS,
    drain_seconds: float = HOLD_SECONDS,
    range_seconds: int = 60,
    step_seconds: int = QUERY_STEP_SECONDS,
    staleness_seconds: int = 15,
    spillover: bool = False,
    trusted_origins: tuple[str, ...] = (),
    extra: tuple[str, ...] = (),
) -> list[str]:
    """The live loop's operator command line: Prometheus, Cloud Run at the stand-in, the router in files mode;
    ``spillover`` turns burst spillover on (the router needs its overflow listener: ``overflow_listener=True``)."""
    overrides = ",".join(f"{published}={connect}" for published, connect in address_overrides.items())
    args = [
        "--prometheus-url",
        prometheus_url,
        "--promql-templates",
        str(promql_path),
        "--metrics-range-seconds",
        str(range_seconds),
        "--metrics-step-seconds",
        str(step_seconds),
        "--max-metrics-staleness-seconds",
        str(staleness_seconds),
        "--set",
        "cluster.imagePullPolicy=Never",
        "--set",
        f"cloudrun.endpoint={cloudrun_url}",
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
        f"router.addressOverrides={overrides}",
        "--set",
        f"migration.stepHoldSeconds={hold_seconds}",
        "--set",
        f"migration.drainSeconds={drain_seconds}",
    ]
    if trusted_origins:  # the stand-in publishes a loopback URL for the Cloud Run service: trust it as it is
        args += ["--set", f"router.trustedOrigins={','.join(trusted_origins)}"]
    if spillover:
        if envoy_router.settings.overflow_port is None:
            raise ValueError("spillover needs the router's overflow listener (start_envoy(overflow_listener=True))")
        args += [
            "--set",
            f"router.overflowPort={envoy_router.settings.overflow_port}",
            "--set",
            "router.spillover=true",
        ]
    return [*args, *extra]


@pytest.fixture
def live_extra_args() -> tuple[str, ...]:
    """More operator arguments for ``live_stack`` (a test module overrides this fixture to change settings)."""
    return ()


@pytest.fixture
def live_stack(
    live_extra_args: tuple[str, ...],
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
    rates, offload, reclaim = replay_rates(segment)
    model = http_upstreams.start("cluster-model")
    serverless = http_upstreams.start("cloudrun-model")
    cloudrun_standin.service_url = serverless.url
    cloudrun_standin.reconcile_seconds = 1.5  # long enough to SIGKILL the operator while a deploy is in flight
    start = time.time() + 15.0
    prometheus = prometheus_factory(openmetrics(namespace, rates, start, history_seconds=120))
    promql = tmp_path / "promql.yaml"
    promql.write_text(yaml.safe_dump({"rateWindowSeconds": RATE_WINDOW_SECONDS}))
    published = f"http://{NAME}-model.{namespace}.svc:8080"
    operator = operator_factory(
        namespace,
        *operator_args(
            prometheus_url=prometheus.url,
            promql_path=promql,
            cloudrun_url=cloudrun_standin.url,
            envoy_router=envoy_router,
            envoy_binary=envoy_binary,
            address_overrides={published: model.url},
            trusted_origins=(serverless.url,),
            extra=live_extra_args,
        ),
    )
    doc = workload_doc(namespace, kube_node.model_server_image, offload, reclaim, "live-test")
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
            "model": model,
            "serverless": serverless,
            "rates": rates,
        }
    finally:
        replay.stop()
        watcher.stop()
        kube_node.kubectl("delete", "iw", NAME, "-n", namespace, "--wait=false", check=False)
