"""A reconcile asks to come back when the cooldown ends only if the decision holds a move back until then.

Every workload's first placement is a migration, so a fleet placed at once reaches its cooldown's end at once:
bench-scale at 10,000 workloads saw one steady tick reconcile 1,900 of them (cause ``deadline``), 4.9 CPU-s against
2.2, and decide nothing new. The cooldown changes a decision only while a move is held (``Decision.preferred``).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, cast

from inference_placement.api.spec import TargetName
from inference_placement.controller.reconciler import Reconciler, TickInputs
from inference_placement.policy.capacity import ClusterCapacity
from inference_placement.policy.decide import TrafficWindow
from tests.plugins.memory_api import inline_tenancy
from tests.test_one_decision_everywhere import RecordingTarget
from tests.test_scale_to_zero import NOW, PB, _Events
from tests.test_scale_to_zero_fallthrough import _fallthrough_body

COOLDOWN = 600


def _window(rps: float) -> TrafficWindow:
    return TrafficWindow(
        step_seconds=30.0,
        rps=(rps,) * 60,
        observed_p99_seconds=None,
        end=NOW,
        service_seconds=0.025,
        peak_in_flight=(rps * 0.025,) * 60,
        slo_miss_share=0.0,
        slo_misses=(0.0,) * 60,
    )


def _revisit_after_a_move(rps: float) -> tuple[Any, dict[str, Any]]:
    body = _fallthrough_body()
    body["spec"]["scaling"]["minReplicas"] = 1
    body["spec"]["placement"]["cooldownSeconds"] = COOLDOWN
    finished = NOW - timedelta(seconds=60)
    body["status"] = {
        "placement": "cluster",
        "lastMigration": {"target": "cluster", "outcome": "Succeeded", "finishedAt": finished.isoformat()},
    }
    targets = {TargetName.CLUSTER: RecordingTarget(), TargetName.CLOUDRUN: RecordingTarget()}
    reconciler = Reconciler(cast(Any, _Events(body)), cast(Any, targets), tenancy=inline_tenancy())
    inputs = TickInputs(now=NOW, price_book=PB, capacity=ClusterCapacity(), window=_window(rps), router_enabled=True)
    result = asyncio.run(reconciler.reconcile(body, inputs))
    return result.revisit_at, body["status"]["lastDecision"]


def test_a_move_held_by_the_cooldown_is_revisited_when_it_ends() -> None:
    revisit, decision = _revisit_after_a_move(400.0)  # two replicas' worth: Cloud Run is the cheaper placement
    assert "held by cooldown" in decision["reason"], decision
    assert revisit == NOW - timedelta(seconds=60) + timedelta(seconds=COOLDOWN)


def test_a_workload_that_stays_where_it_is_asks_for_no_revisit() -> None:
    revisit, decision = _revisit_after_a_move(0.001)  # one replica is the cheaper placement: nothing is held
    assert decision["target"] == "cluster" and "held by cooldown" not in decision["reason"], decision
    assert revisit is None
