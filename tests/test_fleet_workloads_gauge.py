"""``inference_placement_workloads`` counts the workloads a replica knows as it sees them, not only per tick.

A standby (leader election) never ticks but keeps its cache warm: before this, its gauge stayed 0 however many
workloads it held, and ``bench-scale --replicas 2`` could not tell a warm standby from an empty one.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any, cast

from inference_placement.api.spec import TargetName
from inference_placement.controller.fleet import Fleet
from inference_placement.controller.reconciler import Reconciler
from inference_placement.controller.telemetry import Telemetry
from inference_placement.devtools.scale.cluster import workload_body
from inference_placement.metrics.source import NoMetricsSource
from inference_placement.policy.price_book import default_price_book
from inference_placement.targets.dry_run import DryRunTarget
from tests.plugins.memory_api import MemoryWriter


def _gauge(telemetry: Telemetry) -> float:
    value = telemetry.registry.get_sample_value("inference_placement_workloads")
    assert value is not None
    return value


def test_the_workloads_gauge_follows_what_is_observed_without_a_tick() -> None:
    telemetry = Telemetry()
    reconciler = Reconciler(cast(Any, MemoryWriter()), {TargetName.CLUSTER: DryRunTarget()}, telemetry=telemetry)
    fleet = Fleet(
        reconciler=reconciler,
        metrics=NoMetricsSource(),
        price_book=default_price_book,
        clock=lambda: datetime(2026, 1, 1, tzinfo=UTC),
        telemetry=telemetry,
        rng=random.Random(1),
    )
    bodies = [workload_body("ns", f"w{i}") for i in range(3)]
    for i, body in enumerate(bodies):
        body["metadata"].update(uid=f"u{i}", resourceVersion=str(10 + i), generation=1)
        fleet.observe("ADDED", body)
    assert _gauge(telemetry) == 3
    fleet.observe("MODIFIED", bodies[0])
    assert _gauge(telemetry) == 3
    fleet.observe("DELETED", bodies[1])
    assert _gauge(telemetry) == 2
