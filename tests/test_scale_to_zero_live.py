"""Scale to zero for real: the Deployment goes to 0 replicas, a burst arrives, every request is answered 200, and the
operator wakes the Deployment from what the router's activator holds, within the workload's tolerable cold start.

Everything is the real component: the apiserver and the node (the model server Pods really run and are reached by
pod IP from their Service's EndpointSlices), the operator process (``inference-placement run``), Envoy in files mode,
the activator process (``python -m inference_placement.routing.activator``, as in the router Pod) and a Prometheus
over backfilled router series. The traffic history is a timer-triggered workload (one busy 5-minute step every 30
minutes over the last day, the last one just ended): the policy's idle-gap plan scales it to zero between bursts on
its own (``policy/idle_gaps.py``), nothing in the test asks for zero.

Serverless as the activator: the same workload allowed on Cloud Run (the stand-in) and a router with the overflow
listener; at zero a burst is answered by Cloud Run through the composite's fall-through, and the router's own Cloud
Run counter wakes the Deployment.

Measured here (2 shared cores, the cluster already up): about 65 s for this test (an operator restart included),
about 12 s for the Pod-proxy read below.
"""

from __future__ import annotations

import http.client
import json
import math
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from inference_placement.api.spec import TargetName
from inference_placement.api.validation import parse_spec
from inference_placement.devtools.demo.live import LiveSettings, live_workload
from inference_placement.policy.cold_start import assumed_cold_start, estimate_cold_start
from inference_placement.policy.price_book import default_price_book
from tests.cloudrun_standin import CloudRunStandin
from tests.plugins.cluster import KubeCluster
from tests.plugins.envoy import EnvoyRouter, FakeGcpMetadata, HttpUpstreams, start_envoy
from tests.plugins.operator import CRD_FILE, OperatorProcess, wait_for
from tests.plugins.prometheus import PrometheusServer
from tests.test_routing_spill import ActivatorProcess, Processes

pytestmark = [pytest.mark.cluster, pytest.mark.node, pytest.mark.slow]

NAME = "nightly"
HOLD_SECONDS = 30.0
"""The workload's ``slo.tolerableColdStartSeconds``: the activator holds a request at most this long."""
BURST = 16
HISTORY_STEP = 300
PERIOD_STEPS = 6
BUSY_RPS = 14 / 60


def _counter_lines(namespace: str, now: float) -> str:
    """The router's series of a timer-triggered workload: a day of one busy 5-minute step every 30 minutes on the
    operator's 300 s history grid, the last busy step the one before the current; 15 s samples for the day, 1 s
    samples over the last 15 minutes and 15 minutes into the future (the window's 6 s rate needs them)."""
    grid_end = math.floor(now) // HISTORY_STEP * HISTORY_STEP
    last_busy_end = grid_end - HISTORY_STEP  # the history ends: busy, then idle (idle_after=1, 2 after a boundary)

    def busy(t: float) -> bool:
        steps_back = (last_busy_end - t) // HISTORY_STEP  # 0: inside the last busy step [end-300, end)
        return t < last_busy_end and steps_back % PERIOD_STEPS == 0

    labels = f'namespace="{namespace}",workload="{NAME}",target="cluster"'
    counts, hists, ups = [], [], []
    total = 0.0
    t = float(grid_end - 86400 - 2 * HISTORY_STEP)
    previous = t
    end = now + 900
    while t <= end:
        total += (BUSY_RPS if busy(t) else 0.0) * (t - previous)
        stamp = f"{t:.3f}"
        counts.append(f"envoy_cluster_upstream_rq_total{{{labels}}} {total:.3f} {stamp}")
        for bound in ("25", "50", "100", "250", "1000", "+Inf"):
            hists.append(f'envoy_cluster_upstream_rq_time_bucket{{{labels},le="{bound}"}} {total:.3f} {stamp}')
        hists.append(f"envoy_cluster_upstream_rq_time_count{{{labels}}} {total:.3f} {stamp}")
        hists.append(f"envoy_cluster_upstream_rq_time_sum{{{labels}}} {total * 20:.3f} {stamp}")
        ups.append(f'up{{job="inference-router",instance="router-0"}} 1 {stamp}')
        previous = t
        t += 1.0 if t >= now - 900 else 15.0
    return "\n".join(
        [
            "# TYPE up gauge",
            *ups,
            "# TYPE envoy_cluster_upstream_rq counter",
            *counts,
            "# TYPE envoy_cluster_upstream_rq_time histogram",
            *hists,
            "# EOF",
        ]
    )


def _workload(namespace: str, image: str) -> dict[str, Any]:
    doc = live_workload(NAME, namespace, image, 0.0, 1.0, LiveSettings(), allowed_targets=("cluster",))
    spec = doc["spec"]
    spec["slo"]["tolerableColdStartSeconds"] = HOLD_SECONDS
    spec["scaling"]["minReplicas"] = 0
    spec["placement"]["thresholds"] = {"mode": "auto"}
    spec.pop("cloudRun")
    return doc


def _post(port: int, host: str, timeout: float) -> tuple[int, float, str]:
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/predict", body=b'{"instances": [1]}', headers={"Host": host})
        response = conn.getresponse()
        response.read()
        return response.status, time.monotonic() - started, response.getheader("x-served-by") or ""
    finally:
        conn.close()


def _burst(port: int, host: str, count: int) -> list[tuple[int, float, str] | str]:
    answers: list[tuple[int, float, str] | str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(count)

    def one() -> None:
        barrier.wait(timeout=30)
        try:
            answer: tuple[int, float, str] | str = _post(port, host, HOLD_SECONDS + 30)
        except (OSError, http.client.HTTPException) as err:
            answer = f"{type(err).__name__}: {err}"
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=one, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HOLD_SECONDS + 60)
    return answers


@pytest.fixture
def activator(envoy_router: EnvoyRouter) -> Iterator[ActivatorProcess]:
    processes = Processes()
    try:
        yield processes.activator(envoy_router)
    finally:
        processes.stop_all()


def _deployment(cluster: KubeCluster, namespace: str) -> dict[str, Any]:
    done = cluster.kubectl("get", "deployment", f"{NAME}-model", "-n", namespace, "-o", "json", check=False)
    return dict(json.loads(done.stdout)) if done.returncode == 0 else {}


def _status(cluster: KubeCluster, namespace: str) -> dict[str, Any]:
    _keep_schema(cluster)
    done = cluster.kubectl("get", "iw", NAME, "-n", namespace, "-o", "json", check=False)
    return dict(json.loads(done.stdout).get("status") or {}) if done.returncode == 0 else {}


def _keep_schema(cluster: KubeCluster) -> None:
    """This branch's CRD (``status.scaleToZero``, ``status.coldStart``) back in place if a test session started since
    applied an older copy (the local cluster is shared by several checkouts; an older schema prunes the fields from
    every status write)."""
    crd = cluster.kubectl("get", "crd", "inferenceworkloads.placement.inference.dev", "-o", "json", check=False)
    if crd.returncode == 0 and ("scaleToZero" not in crd.stdout or "coldStart" not in crd.stdout):
        cluster.kubectl("apply", "-f", str(CRD_FILE))


def _events(cluster: KubeCluster, namespace: str) -> list[tuple[str, str]]:
    listed = cluster.kubectl_json("get", "events", "-n", namespace, "-o", "json")
    return [(e.get("reason", ""), e.get("message", "")) for e in listed.get("items", [])]


def test_a_burst_wakes_a_workload_at_zero_replicas_and_every_request_is_answered(
    kube_node: KubeCluster,
    crd_installed: KubeCluster,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
    prometheus_factory: Callable[[str], PrometheusServer],
    envoy_router: EnvoyRouter,
    envoy_binary: str,
    activator: ActivatorProcess,
    tmp_path: Path,
) -> None:
    began = time.monotonic()
    _keep_schema(kube_node)
    prometheus = prometheus_factory(_counter_lines(namespace, time.time()))
    promql = tmp_path / "promql.yaml"
    promql.write_text(yaml.safe_dump({"rateWindowSeconds": 6}))
    metrics_url = f"http://127.0.0.1:{activator.info['metrics_port']}/metrics"
    operator = operator_factory(
        namespace,
        *("--prometheus-url", prometheus.url, "--promql-templates", str(promql)),
        *("--metrics-range-seconds", "60", "--metrics-step-seconds", "2", "--max-metrics-staleness-seconds", "15"),
        *("--tick-seconds", "1"),
        *("--set", "cluster.imagePullPolicy=Never", "--set", "router.mode=files"),
        *("--set", f"router.xdsDir={envoy_router.xds_dir}", "--set", f"router.adminUrl={envoy_router.admin_url}"),
        *("--set", f"router.envoyBinary={envoy_binary}", "--set", f"router.activatorPort={activator.port}"),
        *("--set", f"router.activatorMetricsUrl={metrics_url}", "--set", "router.wakePollSeconds=0.25"),
        *("--set", "router.wakeKeepSeconds=600", "--set", "migration.stepHoldSeconds=1"),
        *("--set", "migration.drainSeconds=1"),
    )
    kube_node.kubectl("apply", "-f", "-", input=yaml.safe_dump(_workload(namespace, kube_node.model_server_image)))
    pods_cluster = f"cluster.ip|{namespace}|{NAME}|cluster"
    try:
        # placed on the cluster, then scaled to zero by the policy once the router holds what finds no pod
        wait_for(
            lambda: (_status(kube_node, namespace).get("scaleToZero") or {}).get("zeroedAt"),
            timeout=120,
            interval=0.5,
            what="the workload scaled to zero",
        )
        zeroed = time.monotonic()
        status = _status(kube_node, namespace)
        assert status["lastDecision"]["replicas"] == 0 and "scale to zero" in status["lastDecision"]["reason"]
        assert status["scaleToZero"]["holdSeconds"] == HOLD_SECONDS
        wait_for(
            lambda: (
                _deployment(kube_node, namespace).get("spec", {}).get("replicas") == 0
                and not _deployment(kube_node, namespace).get("status", {}).get("replicas")
            ),
            timeout=60,
            what="the Deployment at 0 replicas and its Pod gone",
        )
        wait_for(
            lambda: envoy_router.stat(f"{pods_cluster}.membership_total") == 0,
            timeout=30,
            interval=0.2,
            what="the router's pods cluster empty",
        )
        # the operator killed and started again at zero: it lists the slices first, keeps the hold and the zero
        operator.kill()
        operator.start()
        wait_for(lambda: operator.logs().count("router primed with 1 EndpointSlice") >= 1, timeout=60,
                 what="the restarted operator primed with the workload's slice")  # fmt: skip
        time.sleep(3)  # a few ticks of the new run
        assert _deployment(kube_node, namespace)["spec"]["replicas"] == 0, "woken by the restart"
        assert envoy_router.stat(f"{pods_cluster}.membership_total") == 0
        # a burst of concurrent requests at zero replicas: held, then answered by the woken Pod
        scaled_up: list[float] = []
        watching = threading.Event()

        def watch_deployment() -> None:  # when the operator set the Deployment to a replica, from the burst's start
            while not watching.is_set():
                if _deployment(kube_node, namespace).get("spec", {}).get("replicas", 0) >= 1:
                    scaled_up.append(time.monotonic())
                    return
                time.sleep(0.1)

        watcher = threading.Thread(target=watch_deployment, daemon=True)
        watcher.start()
        sent = time.monotonic()
        answers = _burst(envoy_router.listen_port, f"{NAME}.{namespace}.svc", BURST)
        watching.set()
        watcher.join(10)
        failures = [a for a in answers if isinstance(a, str) or a[0] != 200]
        assert len(answers) == BURST and not failures, failures
        client_seconds = sorted(a[1] for a in answers if not isinstance(a, str))
        assert client_seconds[-1] < HOLD_SECONDS, client_seconds
        deployment = _deployment(kube_node, namespace)
        assert deployment["spec"]["replicas"] >= 1
        # the operator scaled up from what the activator held: far faster than a tick of the default 30 s (the
        # test's tick is 1 s, but nothing in the metrics it reads shows the burst: only the activator does)
        assert scaled_up, "the Deployment was never set to a replica during the burst"
        scale_up_seconds = scaled_up[0] - sent  # shown below; what woke it is asserted from status, not timed

        def woken() -> dict[str, Any] | None:
            wake = (_status(kube_node, namespace).get("scaleToZero") or {}).get("lastWake") or {}
            return wake if wake.get("wakeLatencyMs") is not None else None

        wake: dict[str, Any] = wait_for(woken, timeout=30, interval=0.3, what="the wake latency in status")
        assert wake["wokenByRequest"] is True and wake["heldRequests"] >= 1
        assert 0 < wake["wakeLatencyMs"] <= HOLD_SECONDS * 1000
        assert wake["zeroSeconds"] >= 0
        reasons = dict(_events(kube_node, namespace))
        assert "ScaledToZero" in reasons and "Waking" in reasons and "Woken" in reasons, reasons
        assert activator.sample("inference_router_activator_outcomes_total", namespace=namespace, workload=NAME,
                                outcome="replayed") == BURST  # fmt: skip

        # the wake measured the cluster's cold start: recorded in status next to the book's, and explain shows both
        def measured() -> dict[str, Any] | None:
            cold = (_status(kube_node, namespace).get("coldStart") or {}).get("cluster") or {}
            return cold if cold.get("samples") else None

        cold = wait_for(measured, timeout=30, interval=0.3, what="the measured cold start in status.coldStart")
        sample = wake["wakeLatencyMs"] / 1000.0
        spec = parse_spec(_workload(namespace, kube_node.model_server_image)["spec"])[0]
        assert spec is not None
        assumed = assumed_cold_start(spec, default_price_book(), TargetName.CLUSTER)
        assert assumed is not None
        assert cold["samples"] == 1 and cold["recentSeconds"] == [pytest.approx(sample, abs=1e-3)]
        assert cold["measuredSeconds"] == pytest.approx(sample, abs=1e-3)
        assert cold["assumedSeconds"] == pytest.approx(assumed, abs=1e-3)
        assert cold["estimateSeconds"] == pytest.approx(estimate_cold_start(assumed, [sample]).seconds, abs=2e-3)
        assert "router" in cold["source"] and cold["lastSampleAt"]
        # and the first placement's lead: the Deployment created until its first replica passed the health check
        lead = cold["provision"]
        assert lead["samples"] >= 1 and 0 < lead["measuredSeconds"] < 120 and "migration" in lead["source"]
        assert "ColdStartMeasured" in dict(_events(kube_node, namespace))
        explain = [sys.executable, "-m", "inference_placement.cli", "explain", NAME, "-n", namespace]
        explain += ["--kubeconfig", kube_node.kubeconfig]
        as_json = subprocess.run([*explain, "-o", "json"], capture_output=True, text=True, timeout=120, check=False)
        assert as_json.returncode == 0, as_json.stderr
        rows = {row["target"]: row for row in json.loads(as_json.stdout)["cold_starts"]}
        assert rows["cluster"]["measured_seconds"] == pytest.approx(sample, abs=1e-3)
        assert rows["cluster"]["assumed_seconds"] == pytest.approx(assumed, abs=1e-3)
        assert rows["cluster"]["samples"] == 1
        table = subprocess.run(explain, capture_output=True, text=True, timeout=120, check=False)
        assert table.returncode == 0, table.stderr
        assert "Cold starts and migration leads (measured vs assumed)" in table.stdout, table.stdout
        print(
            f"\ncold start: assumed {assumed:.3g}s (price book), measured {sample:.3g}s (router hold), policy uses "
            f"{cold['estimateSeconds']}s; first placement's lead measured {lead['measuredSeconds']}s (book "
            f"{lead['assumedSeconds']}s)"
        )
        print(
            f"\nscale to zero: at zero {time.monotonic() - zeroed:.1f}s before the burst was answered; Deployment "
            f"scaled up {scale_up_seconds:.2f}s after the burst was sent; "
            f"{BURST} requests answered 200, client latency p50 {client_seconds[len(client_seconds) // 2]:.2f}s "
            f"max {client_seconds[-1]:.2f}s; wake latency (mean hold) {wake['wakeLatencyMs']:.0f} ms; "
            f"test {time.monotonic() - began:.0f}s"
        )
    except AssertionError:  # what the router and the cluster looked like, for the failure's report
        print(json.dumps(_status(kube_node, namespace), indent=1)[:3000])
        print((envoy_router.xds_dir / "cds.json").read_text()[:3000])
        print({k: v for k, v in envoy_router.stats().items() if f"|{NAME}|" in k and "membership" in k})
        print(kube_node.kubectl("get", "endpointslices,pods", "-n", namespace, "-o", "wide", check=False).stdout)
        print(operator.logs()[-4000:])
        raise
    finally:
        kube_node.kubectl("delete", "iw", NAME, "-n", namespace, "--wait=false", check=False)


def test_the_in_cluster_wake_read_reaches_each_router_pods_activator_through_the_pod_proxy(
    kube_node: KubeCluster, namespace: str
) -> None:
    """``router.mode=cluster`` reads the activators through the apiserver's Pod proxy (no network path to the Pods
    needed). A Pod carrying the router's label serves ``/metrics`` on the activator's port (the model server image
    here: this machine has no image with the operator's package for a real router Pod's activator container); the
    read returns its text, parsed without error."""
    import asyncio

    from inference_placement.api.workload import WorkloadKey
    from inference_placement.controller.kube import make_api_client
    from inference_placement.controller.router_cluster import ClusterRouterApplier
    from inference_placement.controller.wake import parse_activator_metrics, router_stats_filter
    from inference_placement.routing.envoy import EnvoySettings
    from inference_placement.routing.manifests import ACTIVATOR_METRICS_PORT, ROUTER_NAME

    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "router-stand-in",
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": ROUTER_NAME},
        },
        "spec": {
            "containers": [
                {
                    "name": "activator",
                    "image": kube_node.model_server_image,
                    "imagePullPolicy": "Never",
                    "env": [{"name": "PORT", "value": str(ACTIVATOR_METRICS_PORT)}],
                    "ports": [{"name": "activator", "containerPort": ACTIVATOR_METRICS_PORT}],
                    "readinessProbe": {
                        "httpGet": {"path": "/metrics", "port": ACTIVATOR_METRICS_PORT},
                        "periodSeconds": 1,
                    },
                }
            ]
        },
    }
    kube_node.kubectl("apply", "-f", "-", input=yaml.safe_dump(pod))
    kube_node.kubectl("wait", "--for=condition=Ready", "pod/router-stand-in", "-n", namespace, "--timeout=90s")

    async def read(stats_port: int | None) -> list[str]:
        api = await make_api_client(kube_node.kubeconfig)
        try:
            applier = ClusterRouterApplier(
                api,
                EnvoySettings(health_port=9902, activator_port=9906, stats_port=stats_port),
                namespace=namespace,
                image="unused",
                activator_image="unused",
            )
            return await applier.activator_metrics(router_stats_filter({WorkloadKey(namespace, "w")}))
        finally:
            await api.close()

    (text,) = asyncio.run(read(None))
    assert "# TYPE" in text
    assert parse_activator_metrics(text) == {}  # a model server's series: none of the activator's
    # with the router's scrape port, its Envoy's serverless counters are read from each Pod too: here that port is
    # the stand-in's, which has no /stats/prometheus, and a proxied error is an error (no signal), never "metrics"
    with pytest.raises(OSError, match=r"stats of router pod router-stand-in: HTTP 404"):
        asyncio.run(read(ACTIVATOR_METRICS_PORT))
    with pytest.raises(OSError, match=r"stats of router pod router-stand-in: HTTP 503"):  # nothing listens there
        asyncio.run(read(9903))


# ------------------------------------------------------------------------------------- serverless as the activator

CLOUDRUN_MODEL = "cloudrun-model"


@pytest.fixture
def fallthrough_router(
    envoy_binary: str, tmp_path: Path, fake_gcp_metadata: FakeGcpMetadata
) -> Iterator[tuple[EnvoyRouter, ActivatorProcess]]:
    """The router with the overflow listener (the hop a fall-through takes to Cloud Run) and its activator."""
    router = start_envoy(envoy_binary, tmp_path / "fallthrough", fake_gcp_metadata.address, overflow_listener=True)
    processes = Processes()
    try:
        yield router, processes.activator(router)
    finally:
        processes.stop_all()
        router.stop()


def _fallthrough_workload(namespace: str, image: str) -> dict[str, Any]:
    """Allowed on Cloud Run too, whose cold start (the price book's 2.25 s for this model) is within the tolerable
    30 s, and pinned to the cluster (at this traffic Cloud Run is the cheaper placement: the policy would move the
    workload there instead), so only the idle-gap plan takes it to zero; the pin places it, ``allowedTargets``
    says where a request may be answered."""
    doc = live_workload(NAME, namespace, image, 0.0, 1.0, LiveSettings(), project="live-test")
    spec = doc["spec"]
    spec["slo"]["tolerableColdStartSeconds"] = HOLD_SECONDS
    spec["scaling"]["minReplicas"] = 0
    spec["placement"]["pin"] = "cluster"
    return doc


def test_at_zero_cloud_run_answers_every_request_while_the_deployment_wakes_then_the_pods_take_the_traffic(
    kube_node: KubeCluster,
    crd_installed: KubeCluster,
    namespace: str,
    operator_factory: Callable[..., OperatorProcess],
    prometheus_factory: Callable[[str], PrometheusServer],
    fallthrough_router: tuple[EnvoyRouter, ActivatorProcess],
    envoy_binary: str,
    http_upstreams: HttpUpstreams,
    cloudrun_standin: CloudRunStandin,
    tmp_path: Path,
) -> None:
    """Serverless as the activator, live: the policy scales the cluster to zero, the operator keeps Cloud Run (the
    stand-in) deployed and the router's composite falls through to it; a burst at zero is answered 200 by Cloud Run
    with no failure and no hold, what fell through (the router's own Cloud Run counter) wakes the Deployment, and
    once its Pod is ready the traffic is the Pods' again."""
    router, activator = fallthrough_router
    began = time.monotonic()
    _keep_schema(kube_node)
    serverless = http_upstreams.start(CLOUDRUN_MODEL)
    cloudrun_standin.service_url = serverless.url
    prometheus = prometheus_factory(_counter_lines(namespace, time.time()))
    promql = tmp_path / "promql.yaml"
    promql.write_text(yaml.safe_dump({"rateWindowSeconds": 6}))
    metrics_url = f"http://127.0.0.1:{activator.info['metrics_port']}/metrics"
    operator = operator_factory(
        namespace,
        *("--prometheus-url", prometheus.url, "--promql-templates", str(promql)),
        *("--metrics-range-seconds", "60", "--metrics-step-seconds", "2", "--max-metrics-staleness-seconds", "15"),
        *("--tick-seconds", "1"),
        *("--set", "cluster.imagePullPolicy=Never", "--set", "router.mode=files"),
        *("--set", f"router.xdsDir={router.xds_dir}", "--set", f"router.adminUrl={router.admin_url}"),
        *("--set", f"router.envoyBinary={envoy_binary}", "--set", f"router.activatorPort={activator.port}"),
        *("--set", f"router.activatorMetricsUrl={metrics_url}", "--set", "router.wakePollSeconds=0.25"),
        *("--set", f"router.overflowPort={router.settings.overflow_port}"),
        *("--set", f"router.trustedOrigins={serverless.url}"),
        *("--set", f"cloudrun.endpoint={cloudrun_standin.url}", "--set", "cloudrun.project=live-test"),
        *("--set", "router.wakeKeepSeconds=600", "--set", "migration.stepHoldSeconds=1"),
        *("--set", "migration.drainSeconds=1"),
    )
    kube_node.kubectl(
        "apply", "-f", "-", input=yaml.safe_dump(_fallthrough_workload(namespace, kube_node.model_server_image))
    )
    pods_cluster = f"cluster.ip|{namespace}|{NAME}|cluster"
    cloudrun_requests = f"cluster.ip|{namespace}|{NAME}|cloudrun.upstream_rq_total"
    host = f"{NAME}.{namespace}.svc"
    try:
        # placed on the cluster, scaled to zero by the policy, Cloud Run deployed and answering in its place
        def zero_by_cloudrun() -> dict[str, Any] | None:
            status = _status(kube_node, namespace)
            zero = status.get("scaleToZero") or {}
            ready = ((status.get("targets") or {}).get("cloudrun") or {}).get("ready")
            return status if zero.get("zeroedAt") and zero.get("answeredBy") == "cloudrun" and ready else None

        status = wait_for(zero_by_cloudrun, timeout=120, interval=0.5, what="at zero, answered by Cloud Run")
        zeroed = time.monotonic()
        assert status["placement"] == "cluster" and status["lastDecision"]["replicas"] == 0
        assert "answered by cloudrun" in status["scaleToZero"]["answerReason"]
        assert "at zero a request is" in status["lastDecision"]["reason"]
        wait_for(
            lambda: (
                _deployment(kube_node, namespace).get("spec", {}).get("replicas") == 0
                and not _deployment(kube_node, namespace).get("status", {}).get("replicas")
            ),
            timeout=60,
            what="the Deployment at 0 replicas and its Pod gone",
        )
        wait_for(lambda: router.stat(f"{pods_cluster}.membership_total") == 0, timeout=30, interval=0.2,
                 what="the router's pods cluster empty")  # fmt: skip
        wait_for(lambda: router.stat(cloudrun_requests) is not None, timeout=30, interval=0.2,
                 what="the router's Cloud Run cluster (the composite's fall-through)")  # fmt: skip
        rds = (router.xds_dir / "rds.json").read_text()
        assert f"ip|{namespace}|{NAME}|cloudrun" in rds  # the overflow header of the fall-through route
        before = router.stat(cloudrun_requests)

        # a burst at zero: every request answered 200 by Cloud Run, none held by the activator
        sent = time.monotonic()
        answers = _burst(router.listen_port, host, BURST)
        failures = [a for a in answers if isinstance(a, str) or a[0] != 200]
        assert len(answers) == BURST and not failures, failures
        served = [a[2] for a in answers if not isinstance(a, str)]
        assert served.count(CLOUDRUN_MODEL) == BURST, served  # the Pod was gone: Cloud Run answered them all
        client_seconds = sorted(a[1] for a in answers if not isinstance(a, str))
        assert activator.sample("inference_router_activator_requests_total", namespace=namespace,
                                workload=NAME) in (None, 0)  # fmt: skip
        assert router.stat(cloudrun_requests) - before >= BURST

        # what fell through woke the Deployment (the router's Cloud Run counter, read with the wake poll)
        def woken() -> dict[str, Any] | None:
            wake = (_status(kube_node, namespace).get("scaleToZero") or {}).get("lastWake") or {}
            return wake if wake.get("answeredBy") == "cloudrun" else None

        # (the wake poll reads the router's counter, then the operator's next reconcile writes it: seconds, or a minute
        # on a loaded CI machine)

        wake: dict[str, Any] = wait_for(woken, timeout=90, interval=0.3, what="woken by what fell through")
        woke_after = time.monotonic() - sent
        assert wake["wokenByRequest"] is True and wake["fellThroughRequests"] >= 1

        def measured() -> dict[str, Any] | None:  # what the requests that fell through paid, from the router
            wake = (_status(kube_node, namespace).get("scaleToZero") or {}).get("lastWake") or {}
            return wake if wake.get("wakeLatencyMs") is not None else None

        wake = wait_for(measured, timeout=30, interval=0.3, what="the fell-through requests' latency in status")
        assert 0 < wake["wakeLatencyMs"] <= client_seconds[-1] * 1000 + 50
        assert _deployment(kube_node, namespace)["spec"]["replicas"] >= 1
        reasons = dict(_events(kube_node, namespace))
        assert "ScaledToZero" in reasons and "Waking" in reasons and "Woken" in reasons, reasons
        assert "answered by cloudrun while at zero" in reasons["Waking"]

        # requests while the Pod starts: still Cloud Run, still no failure
        starting = [_post(router.listen_port, host, 30) for _ in range(3)]
        assert all(code == 200 for code, _, _ in starting), starting

        # the Pod ready: the fall-through ends and the traffic is the Pods' again
        wait_for(lambda: (router.stat(f"{pods_cluster}.membership_healthy") or 0) >= 1, timeout=120,
                 interval=0.5, what="the woken Pod in the router's pods cluster")  # fmt: skip
        wait_for(lambda: "answeredBy" not in (_status(kube_node, namespace).get("scaleToZero") or {}), timeout=30,
                 interval=0.5, what="the fall-through ended")  # fmt: skip
        after = [_post(router.listen_port, host, 30) for _ in range(6)]
        assert all(code == 200 for code, _, _ in after), after
        assert all(by != CLOUDRUN_MODEL for _, _, by in after), after
        print(
            f"\nserverless as the activator: at zero {sent - zeroed:.1f}s; {BURST} requests answered 200 by Cloud "
            f"Run, client latency p50 {client_seconds[len(client_seconds) // 2]:.3f}s max {client_seconds[-1]:.3f}s; "
            f"woken by {wake['fellThroughRequests']} fell-through request(s), recorded {woke_after:.1f}s after the "
            f"burst was sent; their mean time at the router {wake['wakeLatencyMs']:.0f} ms; the Pods serve again; "
            f"test {time.monotonic() - began:.0f}s"
        )
    except AssertionError:
        print(json.dumps(_status(kube_node, namespace), indent=1)[:3000])
        print((router.xds_dir / "rds.json").read_text()[:3000])
        print({k: v for k, v in router.stats().items() if f"|{NAME}|" in k and ("membership" in k or "rq_total" in k)})
        print(operator.logs()[-4000:])
        raise
    finally:
        kube_node.kubectl("delete", "iw", NAME, "-n", namespace, "--wait=false", check=False)
