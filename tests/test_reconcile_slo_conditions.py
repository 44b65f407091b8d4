"""The SLOAtRisk condition and ``status.observed`` from a reconcile: the measured share of requests slower than the
objective (the latency histogram, via ``TrafficWindow.slo_miss_share``) comes first, then the observed p99, then the
modelled risk. No apiserver: the reconciler writes to a recording writer and the cluster target is the dry run."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from inference_placement.api.spec import TargetName
from inference_placement.controller.reconciler import Reconciler, TickInputs
from inference_placement.devtools.scale.cluster import workload_body
from inference_placement.policy.capacity import ClusterCapacity
from inference_placement.policy.decide import TrafficWindow
from inference_placement.policy.price_book import default_price_book
from inference_placement.targets.dry_run import DryRunTarget

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


class Writer:
    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    async def patch_status(
        self, namespace: str, name: str, patch: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        self.patches.append(patch)
        return {"metadata": {"name": name, "namespace": namespace}, "status": patch}

    async def post_event(self, **_: Any) -> None:
        return None


def _status(window: TrafficWindow) -> dict[str, Any]:
    body = workload_body("unit", "w")
    body["metadata"].update({"uid": "uid-w", "generation": 1, "resourceVersion": "1"})
    body["spec"]["slo"] = {"latencyP99Seconds": 0.2, "attainment": 0.99}
    writer = Writer()
    reconciler = Reconciler(cast(Any, writer), {TargetName.CLUSTER: DryRunTarget()})
    inputs = TickInputs(now=NOW, price_book=default_price_book(), capacity=ClusterCapacity(), window=window)
    asyncio.run(reconciler.reconcile(body, inputs))
    assert writer.patches, "the first reconcile writes a status"
    return writer.patches[-1]


def _window(*, miss_share: float | None, p99: float | None) -> TrafficWindow:
    rps = (2.0,) * 30
    misses = None if miss_share is None else tuple(r * miss_share * 30 for r in rps)
    return TrafficWindow(
        step_seconds=30.0,
        rps=rps,
        observed_p99_seconds=p99,
        end=NOW - timedelta(seconds=30),
        slo_miss_share=miss_share,
        slo_misses=misses,
    )


def _slo_condition(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == "SLOAtRisk")


@pytest.mark.parametrize(
    ("miss_share", "p99", "reason", "state", "text"),
    [
        pytest.param(0.03, 0.15, "MissesAboveBudget", "True", "observed 3.00% of requests slower than 200 ms > 1.00%",
                     id="misses-over-budget-although-p99-is-fine"),
        pytest.param(0.004, 0.15, "SLOMet", "False", "<= 1.00%", id="misses-within-budget"),
        pytest.param(0.004, 0.25, "LatencyAboveSLO", "True", "observed p99 250 ms", id="p99-above-misses-within"),
        pytest.param(None, 0.15, "SLOMet", "False", "<= 1.00%", id="no-histogram-bound"),
    ],
)  # fmt: skip
def test_slo_at_risk_reads_the_measured_misses_first(
    miss_share: float | None, p99: float, reason: str, state: str, text: str
) -> None:
    status = _status(_window(miss_share=miss_share, p99=p99))
    condition = _slo_condition(status)
    assert (condition["reason"], condition["status"]) == (reason, state)
    assert text in condition["message"]
    assert status["observed"].get("sloMissShare") == miss_share
