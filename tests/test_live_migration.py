"""The live loop end to end: real apiserver + node, real Prometheus fed by a promtool backfill of a real trace
segment, the real operator (subprocess), a real Envoy serving the operator's routes, and that trace replayed as HTTP
requests through the stable endpoint.

The segment is a real day of ``azure-functions-2019`` (20-minute steps) that swings high -> low -> high, replayed at
one step per ``STEP_SECONDS``; its samples are backfilled with wall-clock timestamps that reach into the future, so
Prometheus "sees" the trace unfold while the test runs. Upstreams are loopback stand-ins: the in-cluster Service
(the real Deployment runs on the node, but Service IPs are not routable here) and the Cloud Run service URL.

The stack (``live_stack``, ``segment``), the ``Watcher`` and the trace's constants live in ``tests/plugins/live.py``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from inference_placement.devtools.replay.load import LoadReplay
from tests.cloudrun_standin import CloudRunStandin
from tests.plugins.cluster import KubeCluster
from tests.plugins.http_load import answers
from tests.plugins.live import (
    MIGRATION_STEPS,
    NAME,
    STEP_SECONDS,
    SUSTAIN_SECONDS,
    Watcher,
    event_order,
    restart_prometheus,
    wait_placed,
)
from tests.plugins.operator import OperatorProcess, wait_for
from tests.plugins.prometheus import PrometheusServer

pytestmark = pytest.mark.cluster


def _events(cluster: KubeCluster, namespace: str) -> list[tuple[str, str]]:
    items = cluster.kubectl_json("get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={NAME}")
    ordered = sorted(items["items"], key=event_order)
    return [(e["reason"], e["message"]) for e in ordered]


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
    status = wait_placed(stack["watcher"], "cluster", timeout=60)
    assert status["endpoint"] == f"http://{NAME}.{namespace}.svc.cluster.local"
    # placed means routed: a first placement ends only once the router serves its route
    assert answers(replay.port, replay.host_header, replay.path) == 200
    time.sleep(max(0.0, stack["start"] - time.time()))
    replay.start()

    killed: list[str] = []
    # traffic falls below the offload threshold for the sustain window: cluster -> cloudrun, killed at every step
    _kill_at_every_step(stack, killed, deadline=time.monotonic() + 240)
    wait_placed(stack["watcher"], "cloudrun", timeout=60)
    wait_for(
        lambda: not cluster.kubectl("get", "deployment", f"{NAME}-model", "-n", namespace, check=False).stdout,
        timeout=30,
        what="the retired Deployment to be gone",
    )
    # traffic rises above the reclaim threshold: back to the cluster, killed at every step again
    _kill_at_every_step(stack, killed, deadline=time.monotonic() + 240)
    final = wait_placed(stack["watcher"], "cluster", timeout=90)
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

    # each step visible as an Event, in order. Events are posted after the status write that makes the step, so a
    # SIGKILL between the two loses that one Event (the step itself is in status and resumes): the migration that
    # was killed at every step must show its start, its end and the steps in order; the other one every step.
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
    # the last two migrations are the trace's: a first placement made before the backfilled rates were readable
    # (MetricsMissing: the cheapest target at no traffic) may have moved once before them, killed at no step
    starts = [i for i, r in enumerate(migration_events) if r == "MigrationStarted"]
    assert len(starts) >= 2, migration_events
    killed_walk, clean_walk = migration_events[starts[-2] : starts[-1]], migration_events[starts[-1] :]
    assert clean_walk == walk, migration_events
    assert killed_walk[0] == "MigrationStarted" and killed_walk[-1] == "MigrationSucceeded", migration_events
    it = iter(walk)
    shown = "\n".join(f"{r}: {m}" for r, m in _events(cluster, namespace))  # the whole record, when it fails
    assert all(any(r == w for w in it) for r in killed_walk), shown  # the steps it shows, in order
    assert len(killed_walk) >= len(walk) - 2, migration_events  # at most a couple lost to the kills

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
    wait_placed(stack["watcher"], "cluster", timeout=60)
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
    # the first placement walks Provisioning/AwaitingHealthy/Shifting without a source (placed once routed); no
    # migration happened after it
    assert not [o for o in watcher.seen if o.step is not None and o.placement is not None]

    restarted = restart_prometheus(prometheus, stack["prometheus_binaries"])
    try:
        wait_for(lambda: (c := metrics_condition()) and c["status"] == "True", timeout=30, what="MetricsAvailable=True")
    finally:
        restarted.stop()


def _first_low_step(stack: dict[str, Any]) -> int:
    offload, _ = stack["thresholds"]
    rates: list[float] = stack["rates"]
    return next(i for i, r in enumerate(rates) if r < offload)
