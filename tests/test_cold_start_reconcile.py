"""The reconciler records measured cold starts and migration leads in ``status.coldStart``, decides with them, and
a restarted operator reads them back from status (the real reconciler, its targets replaced by recording ones)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, cast

import pytest

from inference_placement.api.spec import TargetName
from inference_placement.api.status import ColdStartStatus
from inference_placement.api.validation import parse_spec
from inference_placement.controller.reconciler import Reconciler, TickInputs
from inference_placement.controller.wake import WakeSignal
from inference_placement.explain import explain_workload
from inference_placement.policy.actuation import Actuators
from inference_placement.policy.capacity import ClusterCapacity
from inference_placement.policy.cold_start import (
    assumed_cold_start,
    assumed_provision,
    estimate_cold_start,
    measured_price_book,
)
from inference_placement.policy.economics import economics_for
from tests.test_one_decision_everywhere import RecordingTarget
from tests.test_scale_to_zero import NOW, PB, _body, _Events, _reconcile


def _cold(body: dict[str, Any]) -> dict[str, Any]:
    return dict((body["status"].get("coldStart") or {}).get("cluster") or {})


def _wake_once(reconciler: Reconciler, body: dict[str, Any], at: float, hold_seconds: float) -> None:
    """At zero, then held requests wake the cluster, then they are answered after ``hold_seconds`` on average."""
    start = NOW + timedelta(seconds=at)
    _reconcile(reconciler, body, start, answers=True)
    assert body["status"]["scaleToZero"].get("zeroedAt"), body["status"]["scaleToZero"]
    _reconcile(reconciler, body, start + timedelta(seconds=30), answers=True, wake=WakeSignal(held=2, arrived=2))
    _reconcile(
        reconciler,
        body,
        start + timedelta(seconds=30 + hold_seconds),
        answers=True,
        wake=WakeSignal(answered=2, mean_hold_seconds=hold_seconds),
    )


def _reconciler(body: dict[str, Any]) -> tuple[Reconciler, _Events, RecordingTarget]:
    writer, cluster = _Events(body), RecordingTarget()
    reconciler = Reconciler(
        cast(Any, writer),
        {TargetName.CLUSTER: cast(Any, cluster)},
        actuators=Actuators(cluster_scale_to_zero=True),
        wake_keep_seconds=60,
    )
    return reconciler, writer, cluster


def test_a_wake_from_zero_records_the_cluster_cold_start_and_a_restart_keeps_it() -> None:
    body = _body()
    spec = parse_spec(body["spec"])[0]
    assert spec is not None
    assumed = assumed_cold_start(spec, PB, TargetName.CLUSTER)
    assert assumed is not None
    reconciler, writer, _ = _reconciler(body)
    _reconcile(reconciler, body, NOW, answers=False)
    assert "coldStart" not in body["status"], "nothing measured yet: nothing recorded"

    _wake_once(reconciler, body, 5, 9.0)
    cold = _cold(body)
    assert cold["samples"] == 1 and cold["recentSeconds"] == [9.0] and cold["measuredSeconds"] == 9.0
    assert cold["assumedSeconds"] == pytest.approx(assumed, abs=1e-3)
    assert cold["estimateSeconds"] == pytest.approx(estimate_cold_start(assumed, [9.0]).seconds, abs=1e-3)
    assert "router" in cold["source"] and cold["modelSizeMb"] == spec.model.size_mb
    measured = next(m for r, m in writer.events if r == "ColdStartMeasured")
    assert "9s measured" in measured and "1 sample" in measured
    # the same wake seen again on later reconciles is not a second sample
    _reconcile(reconciler, body, NOW + timedelta(seconds=60), answers=True)
    assert _cold(body)["samples"] == 1

    # a restarted operator (a new reconciler) reads the samples back from status and adds the next wake's
    restarted, _, _ = _reconciler(body)
    _wake_once(restarted, body, 200, 11.0)
    cold = _cold(body)
    assert cold["recentSeconds"] == [9.0, 11.0] and cold["measuredSeconds"] == 10.0 and cold["samples"] == 2

    # the policy decides with the blend: the book the reconciler uses for this workload has it as the cold start
    status = ColdStartStatus.model_validate(body["status"]["coldStart"])
    econ = economics_for(TargetName.CLUSTER, spec, measured_price_book(PB, spec, status))
    assert econ is not None and econ.cold_start_seconds == pytest.approx(cold["estimateSeconds"], abs=1e-3)
    # explain shows measured vs assumed
    rows = {row.target: row for row in explain_workload(body, PB, now=NOW + timedelta(seconds=300)).cold_starts}
    assert rows[TargetName.CLUSTER].measured_seconds == 10.0 and rows[TargetName.CLUSTER].samples == 2
    assert rows[TargetName.CLUSTER].assumed_seconds == pytest.approx(assumed, abs=1e-3)
    assert rows[TargetName.CLUSTER].estimate_seconds == pytest.approx(cold["estimateSeconds"], abs=1e-3)


def test_a_first_placement_records_the_migration_lead_from_start_to_ready() -> None:
    body = _body()
    body["status"] = {}
    spec = parse_spec(body["spec"])[0]
    assert spec is not None
    reconciler, writer, _ = _reconciler(body)

    def tick(seconds: float) -> None:
        inputs = TickInputs(now=NOW + timedelta(seconds=seconds), price_book=PB, capacity=ClusterCapacity())
        asyncio.run(reconciler.reconcile(body, inputs))

    tick(0)
    assert body["status"]["migration"]["step"] in ("Provisioning", "AwaitingHealthy")
    for second in (2, 4, 6):
        if body["status"].get("migration") is None:
            break
        tick(second)
    assert body["status"].get("migration") is None and body["status"]["placement"] == "cluster"
    lead = _cold(body)["provision"]
    assert lead["samples"] == 1 and 0 < lead["measuredSeconds"] <= 6
    assert lead["assumedSeconds"] == pytest.approx(assumed_provision(spec, PB, TargetName.CLUSTER), abs=1e-3)
    assert "migration" in lead["source"]
    assert _cold(body)["samples"] == 0, "a lead is not a cold start sample"
    assert any(r == "ProvisionTimeMeasured" for r, _ in writer.events)


def test_a_lead_spanning_an_operator_outage_of_hours_is_refused_with_a_reason() -> None:
    body = _body()
    body["status"] = {}
    reconciler, writer, _ = _reconciler(body)
    # provisioning, then nothing reconciled for two hours (the operator was down), then the target is seen ready
    for seconds in (0.0, 2 * 3600.0, 2 * 3600.0 + 2):
        if seconds > 0 and body["status"].get("migration") is None:
            break
        inputs = TickInputs(now=NOW + timedelta(seconds=seconds), price_book=PB, capacity=ClusterCapacity())
        asyncio.run(reconciler.reconcile(body, inputs))
    assert body["status"].get("migration") is None and body["status"]["placement"] == "cluster"
    lead = _cold(body)["provision"]
    assert lead["samples"] == 0 and "broken measurement" in lead["lastRejected"]
    refused = next(m for r, m in writer.events if r == "ProvisionTimeRefused")
    assert "7200.0s" in refused or "7202.0s" in refused, refused
    assert not any(r == "ProvisionTimeMeasured" for r, _ in writer.events)
