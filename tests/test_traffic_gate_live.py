"""The router's own counters gate a migration to its very end, on the live stack (``tests/plugins/live.py``): a real
apiserver and node, the real operator, a real Envoy routing a replayed trace, the Cloud Run stand-in.

The trace swings low, so the operator moves the workload cluster -> Cloud Run. Once all traffic is on Cloud Run and
the source drains, the Cloud Run upstream starts answering 500 while the stand-in still reports the service Ready
(a target that passes its health check but fails requests). The router counts the 5xx on the target's cluster; the
operator reads those counters and rolls back: all traffic returns to the cluster, whose Deployment was never retired,
and the Cloud Run service is retired instead.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from inference_placement.devtools.replay.load import LoadReplay
from tests.cloudrun_standin import CloudRunStandin
from tests.plugins.cluster import KubeCluster
from tests.plugins.envoy import HttpUpstream
from tests.plugins.live import NAME, Watcher, event_order, wait_placed
from tests.plugins.operator import wait_for

pytestmark = pytest.mark.cluster

DRAIN_SECONDS = 40


@pytest.fixture
def live_extra_args() -> tuple[str, ...]:
    # a drain long enough for the low traffic to reach the router's counters a few times; a small window judged
    return (
        "--set",
        f"migration.drainSeconds={DRAIN_SECONDS}",
        "--set",
        "migration.trafficMinRequests=4",
    )


def test_a_target_failing_requests_during_the_drain_rolls_back_and_the_source_is_kept(
    live_stack: dict[str, Any],
) -> None:
    stack = live_stack
    cluster: KubeCluster = stack["cluster"]
    namespace: str = stack["namespace"]
    replay: LoadReplay = stack["replay"]
    watcher: Watcher = stack["watcher"]
    standin: CloudRunStandin = stack["standin"]
    serverless: HttpUpstream = stack["serverless"]

    wait_placed(watcher, "cluster", timeout=60)
    time.sleep(max(0.0, stack["start"] - time.time()))
    replay.start()
    try:
        # the trace falls: cluster -> cloudrun, until all traffic is on Cloud Run and the cluster drains
        wait_for(lambda: watcher.current_step() == "Draining", timeout=240, interval=0.2, what="the drain")
        assert standin.services(), "the Cloud Run service serves the traffic"
        serverless.status = 500  # the stand-in still reports it Ready: only the requests fail
        failing_since = time.monotonic()

        def rolled_back() -> dict[str, Any] | None:
            status = watcher.status()
            last = status.get("lastMigration") or {}
            return status if last.get("outcome") == "RolledBack" and not status.get("migration") else None

        status = wait_for(rolled_back, timeout=DRAIN_SECONDS + 60, interval=0.3, what="the rollback")
        rollback_seconds = time.monotonic() - failing_since
    finally:
        replay.stop()
        serverless.status = 200

    # all traffic back on the cluster, which was never retired; the failing target is gone
    assert status["placement"] == "cluster"
    assert status["lastMigration"]["source"] == "cluster" and status["lastMigration"]["target"] == "cloudrun"
    assert "failed" in status["lastMigration"]["message"] and "draining" in status["lastMigration"]["message"]
    deployment = cluster.kubectl_json("get", "deployment", f"{NAME}-model", "-n", namespace)
    assert deployment["spec"]["replicas"] >= 1, "the source kept its replicas"
    steps = [o.step for o in watcher.seen]
    assert "Retiring" not in steps, f"the source was never retired: {steps}"
    # the rolled-back target's retire is the next reconcile's work, not the rollback's: wait for it
    wait_for(lambda: standin.services() == [], timeout=60, interval=0.5, what="the failing target retired")
    wait_for(lambda: watcher.weights() == {"cluster": 100}, timeout=30, what="the route back on the cluster only")

    events = cluster.kubectl_json("get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={NAME}")[
        "items"
    ]
    reasons = [(e["reason"], e["message"]) for e in sorted(events, key=event_order)]
    rolling = [m for r, m in reasons if r == "MigrationRollingBack"]
    assert rolling and "cloudrun failed" in rolling[-1] and "5xx" in rolling[-1], reasons
    assert "RetiringSource" not in [r for r, _ in reasons], reasons
    print(f"\nrolled back {rollback_seconds:.1f}s after the target began failing: {rolling[-1]}")
