"""Scale to zero, the parts without a cluster: ready pods from EndpointSlices, the routes that answer a request
finding no pod, the wake-up signals read from the activator, and the reconciler's gate, status and Events.

The live end-to-end run (real apiserver and node, real Envoy, the real activator, a real Prometheus) is
``tests/test_scale_to_zero_live.py``."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Collection
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from pydantic import ValidationError

from inference_placement.api.spec import AcceleratorSpec, AcceleratorType, PlacementSpec, SLOSpec, TargetName
from inference_placement.api.workload import WorkloadKey
from inference_placement.controller.pod_endpoints import PodEndpoints, ready_addresses
from inference_placement.controller.reconciler import Reconciler, TickInputs
from inference_placement.controller.router_sync import RouterSync
from inference_placement.controller.wake import (
    ActivatorCounts,
    ActivatorWatch,
    WakeSignal,
    parse_activator_metrics,
    wake_signals,
)
from inference_placement.policy.actuation import Actuators, target_settings
from inference_placement.policy.capacity import ClusterCapacity
from inference_placement.policy.decide import Decision, TrafficWindow
from inference_placement.policy.price_book import default_price_book
from inference_placement.routing.model import EndpointsConfig, PodsUpstream, ServiceUpstream, UpstreamAddress
from tests.test_one_decision_everywhere import RecordingTarget, Writer
from tests.test_policy_idle_gaps import gpu_spec, periodic

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
PB = default_price_book()
KEY = WorkloadKey("unit", "w")


def _slice(name: str, ips: list[tuple[str, bool | None]], *, service: str = "w-model", ports: bool = True) -> Any:
    return {
        "addressType": "IPv4",
        "metadata": {"name": name, "namespace": "unit", "labels": {"kubernetes.io/service-name": service}},
        "endpoints": [{"addresses": [ip], "conditions": {} if ready is None else {"ready": ready}} for ip, ready in ips]
        or None,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}] if ports else None,
    }


# ------------------------------------------------------------------------------------------------ EndpointSlices


def test_ready_addresses_take_ready_endpoints_on_the_model_port_only() -> None:
    body = _slice("s1", [("10.244.0.5", True), ("10.244.0.6", False), ("10.244.0.7", None), ("nonsense", True)])
    body["endpoints"].append({"addresses": ["10.244.0.8"], "conditions": {"ready": True, "terminating": True}})
    assert ready_addresses(body, "http") == (UpstreamAddress("10.244.0.5", 8080), UpstreamAddress("10.244.0.7", 8080))
    # a Service at zero: endpoints and ports are null
    assert ready_addresses(_slice("s1", [], ports=False), "http") == ()
    assert ready_addresses({**body, "addressType": "FQDN"}, "http") == ()


def test_pod_endpoints_are_the_union_of_a_services_slices_and_say_when_nothing_is_known() -> None:
    pods = PodEndpoints()
    assert pods.ready("unit", "w-model") is None
    assert pods.observe("ADDED", _slice("s1", [("10.244.0.5", True)])) == ("unit", "w-model")
    assert pods.observe("ADDED", _slice("s2", [("10.244.0.9", True)])) == ("unit", "w-model")
    assert pods.observe("MODIFIED", _slice("s2", [("10.244.0.9", True)])) is None  # no change: no re-route
    assert [a.host for a in pods.ready("unit", "w-model") or ()] == ["10.244.0.5", "10.244.0.9"]
    pods.observe("MODIFIED", _slice("s1", [("10.244.0.5", False)]))
    pods.observe("DELETED", _slice("s2", []))
    assert pods.ready("unit", "w-model") == ()
    pods.observe("DELETED", _slice("s1", []))
    assert pods.ready("unit", "w-model") is None


class _Applier:
    def __init__(self) -> None:
        self.routes: list[Any] = []

    async def apply(self, routes: Any) -> None:
        self.routes = list(routes)


def _workload(endpoint: str = "http://w-model.unit.svc:8080", tolerable: Any = 12) -> dict[str, Any]:
    return {
        "metadata": {"name": "w", "namespace": "unit", "uid": "u", "resourceVersion": "3"},
        "spec": {"slo": {"tolerableColdStartSeconds": tolerable}},
        "status": {"placement": "cluster", "targets": {"cluster": {"name": "w-model", "endpoint": endpoint}}},
    }


def test_the_route_reaches_ready_pods_by_address_and_holds_when_there_is_none() -> None:
    applier, pods = _Applier(), PodEndpoints()
    sync = RouterSync(cast(Any, applier), pods=pods, hold=True)
    sync.observe(KEY, _workload())
    asyncio.run(sync.sync())
    (route,) = applier.routes
    # no slice seen yet: the Service as published, no hold (an empty pods cluster would refuse what it serves)
    assert isinstance(route.backends[0].upstream, ServiceUpstream) and route.hold_seconds is None
    assert not sync.answers_without_pods(KEY)
    service = pods.observe("ADDED", _slice("s1", [("10.244.0.5", True)]))
    assert service is not None and sync.pods_changed(service)
    asyncio.run(sync.sync())
    (route,) = applier.routes
    assert route.backends[0].upstream == PodsUpstream((UpstreamAddress("10.244.0.5", 8080),))
    assert route.hold_seconds == 12 and sync.answers_without_pods(KEY)
    service = pods.observe("MODIFIED", _slice("s1", []))
    assert service is not None and sync.pods_changed(service)
    asyncio.run(sync.sync())
    assert applier.routes[0].backends[0].upstream == PodsUpstream(())


@pytest.mark.parametrize("tolerable", [None, "x", -1, float("nan"), True], ids=str)
def test_a_hold_bound_the_spec_does_not_give_cleanly_is_the_default_never_no_route(tolerable: Any) -> None:
    applier, pods = _Applier(), PodEndpoints()
    pods.observe("ADDED", _slice("s1", [("10.244.0.5", True)]))
    sync = RouterSync(cast(Any, applier), pods=pods, hold=True)
    sync.observe(KEY, _workload(tolerable=tolerable))
    asyncio.run(sync.sync())
    assert applier.routes[0].hold_seconds == 10.0


@pytest.mark.parametrize(
    ("slo", "hold"),
    [
        ({"latencyP99Seconds": 60}, 60.0),  # unset: the objective, when longer than 10 s
        ({"latencyP99Seconds": 0.3}, 10.0),
        ({"latencyP99Seconds": 60, "tolerableColdStartSeconds": "x"}, 60.0),
        ({"latencyP99Seconds": "x"}, 10.0),  # an objective that does not parse: the API's default objective
        ({"latencyP99Seconds": 60, "tolerableColdStartSeconds": 5}, 5.0),  # set: as set
    ],
    ids=str,
)
def test_an_unset_hold_bound_is_the_objective_when_longer_as_the_policy_reads_it(
    slo: dict[str, Any], hold: float
) -> None:
    applier, pods = _Applier(), PodEndpoints()
    pods.observe("ADDED", _slice("s1", [("10.244.0.5", True)]))
    sync = RouterSync(cast(Any, applier), pods=pods, hold=True)
    body = _workload()
    body["spec"] = {"slo": slo}
    sync.observe(KEY, body)
    asyncio.run(sync.sync())
    assert applier.routes[0].hold_seconds == hold
    try:
        parsed = SLOSpec.model_validate(slo)
    except ValidationError:
        return
    assert parsed.tolerable_cold_start() == hold


@pytest.mark.parametrize(
    ("slo", "first_token"),
    [
        ({"latencyMeasure": "FirstToken"}, True),
        ({"latencyMeasure": "Response"}, False),
        ({}, False),
        ({"latencyMeasure": "firsttoken"}, False),  # not the API's value: the default, never no route
        ({"latencyMeasure": ["FirstToken"]}, False),
        ("garbage", False),
    ],
    ids=str,
)
def test_the_router_measures_the_first_byte_of_a_workload_whose_objective_bounds_it(
    slo: Any, first_token: bool
) -> None:
    applier, pods = _Applier(), PodEndpoints()
    sync = RouterSync(cast(Any, applier), pods=pods, hold=True)
    body = _workload()
    body["spec"] = {"slo": slo}
    sync.observe(KEY, body)
    asyncio.run(sync.sync())
    assert applier.routes[0].first_token is first_token


def test_an_address_override_keeps_the_service_upstream() -> None:
    applier, pods = _Applier(), PodEndpoints()
    pods.observe("ADDED", _slice("s1", [("10.244.0.5", True)]))
    config = EndpointsConfig(address_overrides={"http://w-model.unit.svc:8080": "http://127.0.0.1:9999"})
    sync = RouterSync(cast(Any, applier), config, pods=pods, hold=True)
    sync.observe(KEY, _workload())
    asyncio.run(sync.sync())
    assert applier.routes[0].backends[0].upstream == ServiceUpstream(UpstreamAddress("127.0.0.1", 9999))
    assert not sync.answers_without_pods(KEY)


# ------------------------------------------------------------------------------------------------ wake signals

METRICS = """# TYPE inference_router_activator_requests counter
inference_router_activator_requests_total{namespace="unit",workload="w"} %s
# TYPE inference_router_activator_held_requests gauge
inference_router_activator_held_requests{namespace="unit",workload="w"} %s
# TYPE inference_router_activator_hold_seconds histogram
inference_router_activator_hold_seconds_bucket{namespace="unit",workload="w",le="+Inf"} %s
inference_router_activator_hold_seconds_count{namespace="unit",workload="w"} %s
inference_router_activator_hold_seconds_sum{namespace="unit",workload="w"} %s
"""


def test_wake_signals_are_the_activator_counts_between_two_polls() -> None:
    first = parse_activator_metrics(METRICS % (3, 0, 3, 3, 6.0))
    assert first[KEY] == ActivatorCounts(3, 0, 6.0, 3)
    held = parse_activator_metrics(METRICS % (8, 5, 3, 3, 6.0))
    assert wake_signals(first, held) == {KEY: WakeSignal(held=5, arrived=5, answered=0, mean_hold_seconds=None)}
    answered = parse_activator_metrics(METRICS % (8, 0, 8, 8, 16.0))
    assert wake_signals(held, answered) == {KEY: WakeSignal(held=0, arrived=0, answered=5, mean_hold_seconds=2.0)}
    assert wake_signals(answered, answered) == {}
    # an activator restart (counters went down) counts from zero, never a negative arrival
    restarted = parse_activator_metrics(METRICS % (2, 2, 0, 0, 0))
    assert wake_signals(answered, restarted)[KEY].arrived == 2


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("<html>502 Bad Gateway</html>", id="html"),
        pytest.param(METRICS % ("NaN", 1, 0, 0, 0), id="nan"),
        pytest.param(METRICS % (1, -4, 0, 0, 0), id="negative"),
        pytest.param(METRICS.replace('namespace="unit",', "") % (1, 1, 0, 0, 0), id="no-namespace"),
    ],
)
def test_garbage_from_the_activator_is_refused_whole_and_signals_nothing(text: str) -> None:
    with pytest.raises(ValueError):
        parse_activator_metrics(text)
    seen: list[dict[WorkloadKey, WakeSignal]] = []

    async def garbage(workloads: Collection[WorkloadKey]) -> list[str]:
        return [text]

    watch = ActivatorWatch(garbage, seen.append)
    assert asyncio.run(watch.poll_once()) is None
    assert watch.errors == 1 and not seen


# ------------------------------------------------------------------------------------------------ the reconciler


def _body() -> dict[str, Any]:
    spec = gpu_spec().model_copy(
        update={
            "accelerator": AcceleratorSpec(type=AcceleratorType.NONE),
            "placement": PlacementSpec(allowed_targets=[TargetName.CLUSTER]),
        }
    )
    return {
        "apiVersion": "placement.inference.dev/v1alpha1",
        "kind": "InferenceWorkload",
        "metadata": {"name": "w", "namespace": "unit", "uid": "uid-w", "generation": 1, "resourceVersion": "1"},
        "spec": spec.model_dump(by_alias=True, exclude_none=True, mode="json"),
        "status": {"placement": "cluster"},
    }


def _idle_window(now: datetime) -> TrafficWindow:
    history = periodic(5, 288, idle_after=2)
    recent = (0.0,) * 30
    return TrafficWindow(
        step_seconds=2.0,
        rps=recent,
        observed_p99_seconds=None,
        end=now,
        service_seconds=0.025,
        peak_in_flight=recent,
        slo_miss_share=0.0,
        history_rps=tuple(history.tolist()),
        history_step_seconds=300.0,
        history_slo_misses=0.0,
    )


class _Events(Writer):
    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body)
        self.events: list[tuple[str, str]] = []

    async def post_event(self, **kwargs: Any) -> None:
        self.events.append((kwargs["reason"], kwargs["message"]))


def _reconcile(
    reconciler: Reconciler, body: dict[str, Any], now: datetime, *, answers: bool, wake: WakeSignal | None = None
) -> None:
    inputs = TickInputs(
        now=now,
        price_book=PB,
        capacity=ClusterCapacity(),
        window=_idle_window(now),
        router_enabled=True,
        router_weights={TargetName.CLUSTER: 100},
        router_answers_without_pods=answers,
        wake=wake,
    )
    asyncio.run(reconciler.reconcile(body, inputs))


def test_zero_replicas_only_while_the_router_answers_a_request_that_finds_no_pod() -> None:
    body = _body()
    writer, cluster = _Events(body), RecordingTarget()
    reconciler = Reconciler(
        cast(Any, writer),
        {TargetName.CLUSTER: cast(Any, cluster)},
        actuators=Actuators(cluster_scale_to_zero=True),
        wake_keep_seconds=60,
    )
    _reconcile(reconciler, body, NOW, answers=False)
    assert cluster.applied[-1].replicas == 1 and body["status"]["lastDecision"]["replicas"] == 1
    assert "scaleToZero" not in body["status"]
    _reconcile(reconciler, body, NOW + timedelta(seconds=5), answers=True)
    assert cluster.applied[-1].replicas == 0
    assert body["status"]["lastDecision"]["replicas"] == 0
    assert body["status"]["scaleToZero"]["zeroedAt"] and body["status"]["scaleToZero"]["gaps"] == 1
    assert body["status"]["targets"]["cluster"]["ready"] is True  # at zero on purpose: still Placed
    assert [r for r, _ in writer.events if r == "ScaledToZero"]

    # requests held by the activator: woken now, whatever the decision would say
    _reconcile(reconciler, body, NOW + timedelta(seconds=35), answers=True, wake=WakeSignal(held=4, arrived=4))
    assert cluster.applied[-1].replicas >= 1
    wake = body["status"]["scaleToZero"]["lastWake"]
    assert wake["wokenByRequest"] is True and wake["zeroSeconds"] == 30.0 and "wakeLatencyMs" not in wake
    assert "zeroedAt" not in body["status"]["scaleToZero"]
    waking = next(m for r, m in writer.events if r == "Waking")
    assert "4 request(s) held" in waking and "0 -> 1" in waking

    # the held requests answered: the wake latency recorded, in status and an Event
    _reconcile(
        reconciler, body, NOW + timedelta(seconds=38), answers=True, wake=WakeSignal(answered=4, mean_hold_seconds=2.5)
    )
    wake = body["status"]["scaleToZero"]["lastWake"]
    assert wake["heldRequests"] == 4 and wake["wakeLatencyMs"] == 2500.0
    assert any(r == "Woken" and "2500 ms" in m for r, m in writer.events)

    # kept awake for wake_keep_seconds, then back to zero on the same idle decision
    _reconcile(reconciler, body, NOW + timedelta(seconds=60), answers=True)
    assert cluster.applied[-1].replicas >= 1
    _reconcile(reconciler, body, NOW + timedelta(seconds=100), answers=True)
    assert cluster.applied[-1].replicas == 0 and body["status"]["scaleToZero"]["gaps"] == 2


def test_a_restarted_operator_keeps_a_workload_at_zero_until_its_router_confirms_and_wakes_it_on_demand() -> None:
    """After a restart the router has confirmed nothing yet; it still serves the holding route the previous run
    confirmed, so a workload recorded at zero stays there (no needless wake-up on every restart), and a held
    request still wakes it."""
    body = _body()
    cluster = RecordingTarget()
    reconciler = Reconciler(
        cast(Any, Writer(body)),
        {TargetName.CLUSTER: cast(Any, cluster)},
        actuators=Actuators(cluster_scale_to_zero=True),
    )
    _reconcile(reconciler, body, NOW, answers=True)
    assert cluster.applied[-1].replicas == 0

    def restarted(now: datetime, wake: WakeSignal | None, *, loading: bool = False) -> None:
        window = _idle_window(now)
        if loading:  # the newest span of the history only, as the source reads it back after a start: 2 cycles
            short = tuple(periodic(6, 3, idle_after=2).tolist())
            window = dataclasses.replace(window, history_rps=short)
        inputs = TickInputs(
            now=now,
            price_book=PB,
            capacity=ClusterCapacity(),
            window=window,
            router_enabled=True,
            router_weights=None,
            wake=wake,
            history_loading=loading,
        )
        asyncio.run(reconciler.reconcile(body, inputs))

    restarted(NOW + timedelta(seconds=10), None)
    assert cluster.applied[-1].replicas == 0 and body["status"]["scaleToZero"]["zeroedAt"]
    # on the partial history the plan keeps a replica warm; the workload stays at zero until the history is whole
    restarted(NOW + timedelta(seconds=11), None, loading=True)
    assert cluster.applied[-1].replicas == 0
    restarted(NOW + timedelta(seconds=12), WakeSignal(held=1, arrived=1), loading=True)
    assert cluster.applied[-1].replicas == 1


def test_missing_metrics_never_scale_a_serving_workload_to_zero() -> None:
    body = _body()
    cluster = RecordingTarget()
    reconciler = Reconciler(
        cast(Any, Writer(body)),
        {TargetName.CLUSTER: cast(Any, cluster)},
        actuators=Actuators(cluster_scale_to_zero=True),
    )
    inputs = TickInputs(
        now=NOW,
        price_book=PB,
        capacity=ClusterCapacity(),
        window=None,
        metrics_problem="router stats garbage",
        router_enabled=True,
        router_weights={TargetName.CLUSTER: 100},
        router_answers_without_pods=True,
    )
    body["status"]["lastDecision"] = {
        "target": "cluster",
        "replicas": 2,
        "reason": "r",
        "decidedAt": "2026-03-10T11:00:00Z",
    }
    asyncio.run(reconciler.reconcile(body, inputs))
    assert cluster.applied[-1].replicas == 2


def test_an_activator_that_answers_garbage_or_not_at_all_wakes_nothing_and_the_watch_keeps_polling() -> None:
    """Bad input (item 4): a real HTTP server answering garbage, and a port nobody listens on. No signal, no
    exception out of the poll; the previous counts stay the reference, so the next good poll compares with them
    (a request held while the activator was unreadable still counts as an arrival then)."""
    import http.server
    import threading

    from inference_placement.controller.wake import HttpActivators
    from inference_placement.devtools.processes import free_port

    bodies = [b"<html>502</html>"]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = bodies[0]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:

        async def polls() -> list[dict[WorkloadKey, WakeSignal] | None]:
            good = HttpActivators([f"http://127.0.0.1:{server.server_address[1]}/metrics"])
            dead = HttpActivators([f"http://127.0.0.1:{free_port()}/metrics"])
            seen: list[dict[WorkloadKey, WakeSignal]] = []
            watch = ActivatorWatch(good, seen.append)
            unreachable = ActivatorWatch(dead, seen.append)
            results = [await watch.poll_once(), await unreachable.poll_once()]
            bodies[0] = (METRICS % (2, 2, 0, 0, 0)).encode()
            results.append(await watch.poll_once())
            await good.close()
            await dead.close()
            assert not seen and watch.errors == 1 and unreachable.errors == 1
            return results

        garbage, unreachable, recovered = asyncio.run(polls())
        assert garbage is None and unreachable is None
        assert recovered == {KEY: WakeSignal(held=2, arrived=2)}
    finally:
        server.shutdown()
        server.server_close()


def test_explain_shows_the_zero_and_the_wake_the_operator_recorded() -> None:
    from rich.console import Console

    from inference_placement.explain import explain_workload, render

    body = _body()
    body["status"]["scaleToZero"] = {
        "holdSeconds": 30,
        "gaps": 1,
        "lastWake": {
            "zeroedAt": "2026-03-10T11:00:00Z",
            "wokenAt": "2026-03-10T11:05:00Z",
            "zeroSeconds": 300,
            "wokenByRequest": True,
            "heldRequests": 16,
            "wakeLatencyMs": 2024.0,
        },
    }
    explanation = explain_workload(body, PB)
    assert explanation.scale_to_zero is not None and explanation.scale_to_zero.last_wake is not None
    console = Console(width=200, record=True)
    render(explanation, console)
    text = console.export_text()
    assert "woken from 0 replicas" in text and "16 held request(s) answered after 2024 ms" in text


def test_a_serving_cluster_keeps_its_replicas_while_a_decided_move_has_not_started() -> None:
    """The decision moves the workload to Cloud Run but its migration has not started (cooldown, router, spill):
    the cluster carries all the traffic, so it keeps the replicas it serves with, never the spec's floor (zero
    here, with scale to zero possible); a cluster that was at zero stays at zero (the router holds its requests)."""
    spec = gpu_spec().model_copy(update={"accelerator": AcceleratorSpec(type=AcceleratorType.NONE)})
    assert spec.scaling.min_replicas == 0
    move = Decision(
        target=TargetName.CLOUDRUN,
        replicas=0,
        reason="cheaper on cloudrun",
        projected_monthly_cost_usd={},
        infeasible={},
        slo_risk=None,
        budget_exceeded=False,
        projected_month_usd=0.0,
        metrics_ok=True,
        migrate=True,
    )
    actuators = Actuators(cluster_scale_to_zero=True)
    assert target_settings(TargetName.CLUSTER, move, spec, None, actuators).replicas == 0  # not serving: the floor
    assert target_settings(TargetName.CLUSTER, move, spec, None, actuators, serving_replicas=3).replicas == 3
    assert target_settings(TargetName.CLUSTER, move, spec, None, actuators, serving_replicas=0).replicas == 0
    # about the target the decision names, the decision rules; serverless targets are not affected
    stay = dataclasses.replace(move, target=TargetName.CLUSTER, replicas=2)
    assert target_settings(TargetName.CLUSTER, stay, spec, None, actuators, serving_replicas=3).replicas == 2
