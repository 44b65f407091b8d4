"""Serverless as the activator: at zero cluster replicas a request that finds no pod is answered by a serverless
target the router's composite cluster falls through to (when one is allowed, free while idle, ready and its cold
start within the SLO's tolerable one), else held by the activator; what fell through wakes the Deployment.

The pure choice (``policy.actuation.zero_answer``), the route and its Envoy rendering, the wake signal from the
router's own counters, and the reconciler end to end with recording targets. The live test is in
``tests/test_scale_to_zero_live.py``; the simulator's credit in ``tests/test_sim_scale_to_zero.py``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Collection
from datetime import timedelta
from typing import Any, cast

import pytest

from inference_placement.api.spec import (
    AcceleratorSpec,
    AcceleratorType,
    CloudRunSpec,
    InferenceWorkloadSpec,
    PlacementSpec,
    SLOSpec,
    TargetName,
)
from inference_placement.api.status import InferenceWorkloadStatus
from inference_placement.api.workload import WorkloadKey
from inference_placement.controller.pod_endpoints import PodEndpoints
from inference_placement.controller.reconciler import Reconciler
from inference_placement.controller.router_sync import RouterSync
from inference_placement.controller.wake import (
    ActivatorCounts,
    ActivatorWatch,
    WakeSignal,
    parse_activator_metrics,
    router_stats_filter,
    wake_signals,
)
from inference_placement.policy.actuation import ACTIVATOR, Actuators, zero_answer
from inference_placement.routing.envoy import (
    ACTIVATOR_CLUSTER,
    OVERFLOW_CLUSTER_HEADER,
    OVERFLOW_HOP_CLUSTER,
    EnvoySettings,
    composite_cluster_name,
    render_clusters,
    render_route_configuration,
)
from inference_placement.routing.model import PodsUpstream
from inference_placement.targets.base import DesiredTarget, TargetState
from tests.plugins.memory_api import inline_tenancy
from tests.test_one_decision_everywhere import RecordingTarget
from tests.test_policy_idle_gaps import gpu_spec
from tests.test_scale_to_zero import KEY, NOW, _Applier, _body, _Events, _reconcile, _slice

COLD = {TargetName.CLUSTER: 8.6, TargetName.CLOUDRUN: 8.25, TargetName.LAMBDA: 6.2}


def _spec(*allowed: TargetName, tolerable: float = 10.0, min_instances: int = 0) -> InferenceWorkloadSpec:
    spec = gpu_spec()
    return spec.model_copy(
        update={
            "placement": PlacementSpec(allowed_targets=[TargetName.CLUSTER, *allowed]),
            "slo": SLOSpec(objective_seconds=0.2, attainment=0.99, tolerable_cold_start_seconds=tolerable),
            "cloud_run": CloudRunSpec(min_instances=min_instances),
        }
    )


# ------------------------------------------------------------------------------------------------ the choice


def test_a_ready_allowed_serverless_target_within_the_tolerable_cold_start_answers_at_zero() -> None:
    answer = zero_answer(_spec(TargetName.CLOUDRUN), COLD, {TargetName.CLOUDRUN})
    assert answer.target is TargetName.CLOUDRUN and answer.wanted is TargetName.CLOUDRUN
    assert answer.answered_by == "cloudrun"
    assert "answered by cloudrun" in answer.reason and "8.25s within tolerable 10s" in answer.reason


def test_a_qualifying_target_not_ready_yet_is_wanted_while_the_activator_holds() -> None:
    answer = zero_answer(_spec(TargetName.CLOUDRUN), COLD, set())
    assert answer.target is None and answer.wanted is TargetName.CLOUDRUN and answer.answered_by == ACTIVATOR
    assert "until cloudrun is ready" in answer.reason


@pytest.mark.parametrize(
    ("spec", "cold", "infeasible", "why"),
    [
        (_spec(), COLD, {}, "no serverless target allowed"),
        (_spec(TargetName.CLOUDRUN, tolerable=5.0), COLD, {}, "cloudrun cold start 8.25s > tolerable 5s"),
        (_spec(TargetName.CLOUDRUN, min_instances=1), COLD, {}, "cloudrun keeps instances warm"),
        (_spec(TargetName.CLOUDRUN), {TargetName.CLUSTER: 8.6}, {}, "cloudrun not priced"),
        (_spec(TargetName.CLOUDRUN), {**COLD, TargetName.CLUSTER: 8.0}, {}, "no shorter than a replica's 8s"),
        (_spec(TargetName.CLOUDRUN), COLD, {TargetName.CLOUDRUN: "GPU quota"}, "cloudrun infeasible (GPU quota)"),
    ],
    ids=["not-allowed", "cold-start-too-long", "not-free-idle", "not-priced", "slower-than-a-replica", "infeasible"],
)
def test_otherwise_the_activator_holds_and_the_reason_says_why(
    spec: InferenceWorkloadSpec, cold: dict[TargetName, float], infeasible: dict[TargetName, str], why: str
) -> None:
    answer = zero_answer(spec, cold, {TargetName.CLOUDRUN, TargetName.LAMBDA}, infeasible)
    assert answer.target is None and answer.wanted is None and answer.answered_by == ACTIVATOR
    assert answer.reason.startswith("held by the router's activator up to") and why in answer.reason


def test_a_router_without_the_overflow_hop_cannot_fall_through_and_holds() -> None:
    answer = zero_answer(_spec(TargetName.CLOUDRUN), COLD, {TargetName.CLOUDRUN}, actuators=Actuators())
    assert answer.target is None and answer.wanted is None and answer.answered_by == ACTIVATOR


def test_of_two_qualifying_targets_the_shorter_cold_start_answers() -> None:
    both = _spec(TargetName.CLOUDRUN, TargetName.LAMBDA)
    assert zero_answer(both, COLD, {TargetName.CLOUDRUN, TargetName.LAMBDA}).target is TargetName.LAMBDA
    # lambda cannot run this GPU model: the decision says so, and Cloud Run answers
    infeasible = {TargetName.LAMBDA: "no GPU"}
    assert zero_answer(both, COLD, {TargetName.CLOUDRUN, TargetName.LAMBDA}, infeasible).target is TargetName.CLOUDRUN


# ------------------------------------------------------------------------------------------------ the route


def _status_at_zero(answered_by: str) -> dict[str, Any]:
    return {
        "placement": "cluster",
        "targets": {
            "cluster": {"name": "w-model", "endpoint": "http://w-model.unit.svc:8080", "ready": True, "replicas": 0},
            "cloudrun": {"name": "w", "endpoint": "https://ip-unit-w-0bcb911a-abc.a.run.app", "ready": True},
        },
        "scaleToZero": {"zeroedAt": "2026-03-10T12:00:00Z", "answeredBy": answered_by},
    }


def _at_zero_with_no_pod(sync: RouterSync, pods: PodEndpoints) -> dict[str, Any]:
    """The router told of a workload at zero that Cloud Run answers for, and of its Service with no ready pod."""
    body: dict[str, Any] = {
        "metadata": {"name": "w", "namespace": "unit", "resourceVersion": "1"},
        "status": _status_at_zero("cloudrun"),
    }
    sync.observe(KEY, body)
    service = pods.observe("ADDED", _slice("s1", []))
    assert service is not None
    sync.pods_changed(service)
    return body


def test_at_zero_with_a_serverless_answer_the_composite_falls_through_to_it_instead_of_the_activator() -> None:
    applier, pods = _Applier(), PodEndpoints()
    sync = RouterSync(cast(Any, applier), pods=pods, hold=True)
    body = _at_zero_with_no_pod(sync, pods)
    asyncio.run(sync.sync())
    (route,) = applier.routes
    assert route.backends[0].upstream == PodsUpstream(())
    assert route.overflow is not None and route.overflow.target is TargetName.CLOUDRUN and route.hold_seconds is None
    assert sync.answers_without_pods(KEY)
    settings = EnvoySettings(activator_port=9906, overflow_port=9907)
    clusters = {c["name"]: c for c in render_clusters([route], settings)}
    composite = clusters[composite_cluster_name(route)]["cluster_type"]["typed_config"]["clusters"]
    assert composite == [{"name": "ip|unit|w|cluster"}, {"name": OVERFLOW_HOP_CLUSTER}]
    assert ACTIVATOR_CLUSTER not in clusters and "ip|unit|w|cloudrun" in clusters
    (host,) = [h for h in render_route_configuration([route], settings)["virtual_hosts"] if h["name"] == "unit/w"]
    headers = {h["header"]["key"]: h["header"]["value"] for h in host["routes"][-1]["request_headers_to_add"]}
    assert headers[OVERFLOW_CLUSTER_HEADER] == "ip|unit|w|cloudrun"

    # the activator answers instead: the holding route, as before
    body = {
        "metadata": {"name": "w", "namespace": "unit", "resourceVersion": "2"},
        "status": _status_at_zero("activator"),
    }
    sync.observe(KEY, body)
    asyncio.run(sync.sync())
    (route,) = applier.routes
    assert route.overflow is None and route.hold_seconds is not None


def test_the_fall_through_waits_for_the_serverless_upstream_and_holds_meanwhile() -> None:
    status = _status_at_zero("cloudrun")
    del status["targets"]["cloudrun"]
    applier, pods = _Applier(), PodEndpoints()
    sync = RouterSync(cast(Any, applier), pods=pods, hold=True)
    sync.observe(KEY, {"metadata": {"name": "w", "namespace": "unit", "resourceVersion": "1"}, "status": status})
    service = pods.observe("ADDED", _slice("s1", []))
    assert service is not None
    sync.pods_changed(service)
    asyncio.run(sync.sync())
    (route,) = applier.routes
    assert route.overflow is None and route.hold_seconds is not None


# ------------------------------------------------------------------------------------------------ the wake signal


def _router_stats(
    cloudrun: float, lambda_: float = 0.0, namespace: str = "unit", done: float = 0.0, ms: float = 0.0
) -> str:
    labels = f'namespace="{namespace}",workload="w",target="cloudrun"'
    return "\n".join(
        [
            "# TYPE envoy_cluster_upstream_rq_time histogram",
            f'envoy_cluster_upstream_rq_time_bucket{{{labels},le="100"}} {done}',
            f'envoy_cluster_upstream_rq_time_bucket{{{labels},le="+Inf"}} {done}',
            f"envoy_cluster_upstream_rq_time_sum{{{labels}}} {ms}",
            f"envoy_cluster_upstream_rq_time_count{{{labels}}} {done}",
            "# TYPE envoy_cluster_upstream_rq_total counter",
            f'envoy_cluster_upstream_rq_total{{namespace="{namespace}",workload="w",target="cloudrun"}} {cloudrun}',
            f'envoy_cluster_upstream_rq_total{{namespace="{namespace}",workload="w",target="lambda"}} {lambda_}',
            f'envoy_cluster_upstream_rq_total{{namespace="{namespace}",workload="w",target="cluster"}} 99',
            'envoy_cluster_upstream_rq_total{envoy_cluster_name="warm|unit|w|cloudrun"} 7',
            "",
        ]
    )


def test_requests_that_fell_through_are_counted_between_polls_from_the_routers_own_counters() -> None:
    first = parse_activator_metrics(_router_stats(5))
    # the pods and the keep-warm pings do not count
    assert first == {KEY: ActivatorCounts(fell_through=5.0, routed=True)}
    assert wake_signals({}, first) == {}  # a first sight is a baseline, not arrivals
    second = parse_activator_metrics(_router_stats(8, 1, done=3, ms=60.0))
    signal = wake_signals(first, second)[KEY]
    assert (signal.fell_through, signal.fell_answered, signal.held, signal.arrived) == (4, 3, 0, 0)
    assert signal.fell_mean_seconds == pytest.approx(0.02)
    assert not signal.demand  # the reconciler decides whether it wakes (at zero only)
    # the last one completes: its time alone
    third = parse_activator_metrics(_router_stats(8, 1, done=4, ms=100.0))
    signal = wake_signals(second, third)[KEY]
    assert (signal.fell_through, signal.fell_answered) == (0, 1) and signal.fell_mean_seconds == pytest.approx(0.04)
    restarted = parse_activator_metrics(_router_stats(2))
    assert wake_signals(third, restarted) == {KEY: WakeSignal(fell_through=2)}
    assert wake_signals(third, third) == {}


def test_the_poll_reads_the_router_counters_of_the_workloads_at_zero_a_serverless_target_answers_only() -> None:
    assert router_stats_filter(set()) is None  # none: no read of the router at all
    wanted = router_stats_filter({KEY, WorkloadKey("a.b", "x")})
    assert wanted is not None
    pattern = re.compile(wanted)
    assert pattern.match("cluster.ip|unit|w|cloudrun.upstream_rq_total")
    assert pattern.match("cluster.ip|a.b|x|lambda.upstream_rq_time")
    assert not pattern.match("cluster.ip|unit|w|cluster.upstream_rq_total")  # the pods
    assert not pattern.match("cluster.ip|unit|other|cloudrun.upstream_rq_total")  # not at zero
    assert not pattern.match("cluster.ip|aXb|x|lambda.upstream_rq_time")  # names are literal
    many = router_stats_filter({WorkloadKey("n", f"w{i}") for i in range(500)})
    assert many is not None and re.match(many, "cluster.ip|n|w7|cloudrun.upstream_rq_total")


_WAKE: dict[str, Any] = {
    "zeroedAt": "2026-03-10T11:00:00Z",
    "wokenAt": "2026-03-10T11:05:00Z",
    "zeroSeconds": 300,
    "wokenByRequest": True,
}


def test_the_router_names_the_workloads_at_zero_a_serverless_target_answers_for() -> None:
    applier, pods = _Applier(), PodEndpoints()
    sync = RouterSync(cast(Any, applier), pods=pods, hold=True)
    body = {
        "metadata": {"name": "w", "namespace": "unit", "resourceVersion": "1"},
        "status": _status_at_zero("cloudrun"),
    }
    sync.observe(KEY, body)
    other = WorkloadKey("unit", "served-by-cloudrun")
    sync.observe(other, {"metadata": {"name": other.name, "namespace": "unit"}, "status": {"placement": "cloudrun"}})
    assert sync.falling_through() == {KEY}
    # woken: Cloud Run no longer answers, but the latency of what it answered is still to be read (Envoy's
    # histograms merge at its stats flush, seconds later), then nothing more
    last_wake: dict[str, Any] = {**_WAKE, "answeredBy": "cloudrun"}
    woken = {"placement": "cluster", "scaleToZero": {"lastWake": last_wake}}
    sync.observe(KEY, {"metadata": {"name": "w", "namespace": "unit", "resourceVersion": "2"}, "status": woken})
    assert sync.falling_through() == {KEY}
    last_wake["wakeLatencyMs"] = 12.0
    sync.observe(KEY, {"metadata": {"name": "w", "namespace": "unit", "resourceVersion": "3"}, "status": woken})
    assert sync.falling_through() == set()


class _Envoy(_Applier):
    """The router's stats as the wake poll reads them: a route's serverless cluster appears, at zero, once applied."""

    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log
        self.stats = ""

    async def apply(self, routes: Any) -> None:
        self.log.append("apply")
        await super().apply(routes)
        if any(r.overflow is not None for r in self.routes) and not self.stats:
            self.stats = _router_stats(0)

    async def read(self, workloads: Collection[WorkloadKey]) -> list[str]:
        self.log.append(f"poll {sorted(k.name for k in workloads)}")
        return [self.stats if workloads else ""]


def test_requests_that_fall_through_before_the_next_poll_after_the_cluster_appeared_still_wake() -> None:
    """Envoy creates a new cluster's counters at zero, but a counter first seen is a baseline: a burst answered
    between the route's apply and the next wake poll would wake nothing (CI lost a wake so: the burst came the moment
    Cloud Run's cluster appeared). The router polls before it applies a route that newly falls through; that poll
    finds no counter, so the first one seen afterwards counts from zero."""
    log: list[str] = []
    envoy, pods = _Envoy(log), PodEndpoints()
    sync = RouterSync(cast(Any, envoy), pods=pods, hold=True)
    seen: list[dict[WorkloadKey, WakeSignal]] = []
    watch = ActivatorWatch(envoy.read, seen.append, wanted=sync.falling_through)
    sync.before_fall_through = watch.poll_now
    body = _at_zero_with_no_pod(sync, pods)

    async def scenario() -> None:
        assert await sync.sync()
        assert log == ["poll ['w']", "apply"]  # read before the route could send a request there
        envoy.stats = _router_stats(16, done=16, ms=320.0)  # a burst, before the next poll
        await watch.poll_now()
        # a restarted operator's first poll sees the same counters: a baseline (they may predate it)
        restarted: list[dict[WorkloadKey, WakeSignal]] = []
        await ActivatorWatch(envoy.read, restarted.append, wanted=sync.falling_through).poll_now()
        assert restarted == []
        # the route unchanged: no poll before the next apply
        sync.observe(KEY, {**body, "metadata": {**body["metadata"], "resourceVersion": "2"}})
        await sync.sync()

    asyncio.run(scenario())
    ((woken,),) = [list(signals.items()) for signals in seen]
    assert woken[0] == KEY and (woken[1].fell_through, woken[1].fell_answered) == (16, 16)
    assert woken[1].fell_mean_seconds == pytest.approx(0.02)
    assert log.count("apply") == 1 and log.count("poll ['w']") == 3


# ------------------------------------------------------------------------------------------------ the reconciler


class _ServerlessTarget(RecordingTarget):
    """A serverless target that is ready once deployed, with the endpoint the route reaches it by."""

    async def ensure(self, workload: Any, desired: DesiredTarget) -> TargetState:
        self.applied.append(desired)
        return TargetState(
            name="w", endpoint="https://ip-unit-w-0bcb911a-abc.a.run.app", ready=True, replicas=desired.replicas
        )


def _fallthrough_body() -> dict[str, Any]:
    body = _body()
    body["spec"]["placement"]["allowedTargets"] = ["cluster", "cloudrun"]
    body["spec"]["cloudRun"] = {"project": "p", "region": "us-central1"}
    body["spec"]["accelerator"] = AcceleratorSpec(type=AcceleratorType.NVIDIA_L4).model_dump(by_alias=True)
    return body


def test_at_zero_cloud_run_answers_and_what_fell_through_wakes_the_deployment() -> None:
    body = _fallthrough_body()
    writer, cluster, cloudrun = _Events(body), RecordingTarget(), _ServerlessTarget()
    reconciler = Reconciler(
        cast(Any, writer),
        {TargetName.CLUSTER: cast(Any, cluster), TargetName.CLOUDRUN: cast(Any, cloudrun)},
        actuators=Actuators(cluster_scale_to_zero=True, zero_fall_through=True),
        wake_keep_seconds=60,
        tenancy=inline_tenancy(),
    )
    _reconcile(reconciler, body, NOW, answers=True)
    zero = body["status"]["scaleToZero"]
    assert body["status"]["placement"] == "cluster" and cluster.applied[-1].replicas == 0
    assert zero["answeredBy"] == "cloudrun" and "answered by cloudrun" in zero["answerReason"]
    # kept deployed and ready, free while idle: no instance kept warm
    assert cloudrun.applied and cloudrun.applied[-1].replicas == 0
    assert body["status"]["targets"]["cloudrun"]["ready"] is True
    # the decision says who answers at zero (this tick's Cloud Run was deployed after the decision was made)
    assert (
        "at zero a request is held by the router's activator up to 10s until cloudrun is ready"
        in (body["status"]["lastDecision"]["reason"])
    )
    assert [m for r, m in writer.events if r == "ZeroAnswer"] == [
        "a request that finds no pod is answered by cloudrun (cold start 8.25s within tolerable 10s) while a replica "
        "starts"
    ]
    scaled = next(m for r, m in writer.events if r == "ScaledToZero")
    assert "answered by cloudrun" in scaled

    # while at zero, requests counted by the router on Cloud Run wake the cluster
    _reconcile(reconciler, body, NOW + timedelta(seconds=20), answers=True, wake=WakeSignal(fell_through=3))
    assert cluster.applied[-1].replicas >= 1
    wake = body["status"]["scaleToZero"]["lastWake"]
    assert wake["wokenByRequest"] is True and wake["answeredBy"] == "cloudrun" and wake["fellThroughRequests"] == 3
    waking = next(m for r, m in writer.events if r == "Waking")
    assert "3 request(s) answered by cloudrun while at zero" in waking
    # the woken replica is up (RecordingTarget is ready at once), but the route keeps the fall-through a little
    # while the latency of what fell through is still to be read (its router counters go with the route)
    _reconcile(reconciler, body, NOW + timedelta(seconds=20.5), answers=True)
    assert body["status"]["targets"]["cluster"]["replicas"] >= 1
    assert body["status"]["scaleToZero"]["answeredBy"] == "cloudrun"
    # what they paid: their mean time at the router on Cloud Run, once they completed
    _reconcile(
        reconciler,
        body,
        NOW + timedelta(seconds=21),
        answers=True,
        wake=WakeSignal(fell_answered=3, fell_mean_seconds=2.4),
    )
    assert body["status"]["scaleToZero"]["lastWake"]["wakeLatencyMs"] == 2400.0
    woken = next(m for r, m in writer.events if r == "Woken")
    assert "3 request(s) answered by cloudrun while the cluster woke, after 2400 ms on average" in woken
    # Cloud Run keeps answering until the woken replica is ready (RecordingTarget reports it ready at once)
    assert body["status"]["targets"]["cluster"]["replicas"] >= 1
    _reconcile(reconciler, body, NOW + timedelta(seconds=22), answers=True)
    assert "answeredBy" not in body["status"]["scaleToZero"]


def test_serverless_counters_of_a_workload_not_at_zero_wake_nothing() -> None:
    status = InferenceWorkloadStatus.model_validate({"placement": "cluster"})
    from inference_placement.controller.reconciler import _request_waits

    assert not _request_waits(status, WakeSignal(fell_through=5))
    at_zero_held = InferenceWorkloadStatus.model_validate(_status_at_zero("activator"))
    assert not _request_waits(at_zero_held, WakeSignal(fell_through=5))
    assert _request_waits(at_zero_held, WakeSignal(held=1))
    at_zero_cloudrun = InferenceWorkloadStatus.model_validate(_status_at_zero("cloudrun"))
    assert _request_waits(at_zero_cloudrun, WakeSignal(fell_through=1))


def test_an_operator_whose_router_cannot_fall_through_holds_and_deploys_nothing_serverless() -> None:
    body = _fallthrough_body()
    writer, cluster, cloudrun = _Events(body), RecordingTarget(), _ServerlessTarget()
    reconciler = Reconciler(
        cast(Any, writer),
        {TargetName.CLUSTER: cast(Any, cluster), TargetName.CLOUDRUN: cast(Any, cloudrun)},
        actuators=Actuators(cluster_scale_to_zero=True),
        tenancy=inline_tenancy(),
    )
    _reconcile(reconciler, body, NOW, answers=True)
    assert cluster.applied[-1].replicas == 0 and not cloudrun.applied
    assert body["status"]["scaleToZero"]["answeredBy"] == "activator"
    assert not [r for r, _ in writer.events if r == "ZeroAnswer"]  # ScaledToZero says it
    assert any(r == "ScaledToZero" and "held by the router's activator up to 10s" in m for r, m in writer.events)


def test_explain_shows_who_answers_at_zero_and_what_fell_through_woke_it() -> None:
    from rich.console import Console

    from inference_placement.explain import explain_workload, render
    from inference_placement.policy.price_book import default_price_book

    body = _fallthrough_body()
    body["status"]["scaleToZero"] = {
        "zeroedAt": "2026-03-10T12:00:00Z",
        "holdSeconds": 10,
        "gaps": 2,
        "answeredBy": "cloudrun",
        "answerReason": "answered by cloudrun (cold start 8.25s within tolerable 10s) while a replica starts",
        "lastWake": {
            "zeroedAt": "2026-03-10T11:00:00Z",
            "wokenAt": "2026-03-10T11:05:00Z",
            "zeroSeconds": 300,
            "wokenByRequest": True,
            "answeredBy": "cloudrun",
            "fellThroughRequests": 16,
        },
    }
    console = Console(width=240, record=True)
    render(explain_workload(body, default_price_book()), console)
    text = " ".join(console.export_text().split())
    assert "a request that finds no pod is answered by cloudrun (cold start 8.25s" in text
    assert "by 16 request(s) answered by cloudrun while at zero after 300s at zero" in text


def test_a_wake_whose_latency_never_arrives_ends_the_fall_through_after_a_bound() -> None:
    body = _fallthrough_body()
    cluster, cloudrun = RecordingTarget(), _ServerlessTarget()
    reconciler = Reconciler(
        cast(Any, _Events(body)),
        {TargetName.CLUSTER: cast(Any, cluster), TargetName.CLOUDRUN: cast(Any, cloudrun)},
        actuators=Actuators(cluster_scale_to_zero=True, zero_fall_through=True),
        wake_keep_seconds=60,
        tenancy=inline_tenancy(),
    )
    _reconcile(reconciler, body, NOW, answers=True)
    _reconcile(reconciler, body, NOW + timedelta(seconds=20), answers=True, wake=WakeSignal(fell_through=1))
    _reconcile(reconciler, body, NOW + timedelta(seconds=45), answers=True)
    assert body["status"]["scaleToZero"]["answeredBy"] == "cloudrun"  # 25 s after the wake: still waiting
    _reconcile(reconciler, body, NOW + timedelta(seconds=51), answers=True)
    assert "answeredBy" not in body["status"]["scaleToZero"]  # 31 s: the pods alone again
    assert "wakeLatencyMs" not in body["status"]["scaleToZero"]["lastWake"]
