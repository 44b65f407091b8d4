"""Cold starts measured, not assumed: the shrinkage estimator, its garbage filter, the bounded samples, and the
calibrated price book the policy decides with."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest

from inference_placement.api.spec import InferenceWorkloadSpec, ModelSpec, TargetName
from inference_placement.api.status import MAX_COLD_START_SAMPLES, ColdStartStatus, ColdStartTargetStatus
from inference_placement.policy.capacity import ClusterCapacity
from inference_placement.policy.cold_start import (
    ABSURD_SECONDS,
    MAX_SAMPLES,
    SHRINKAGE_K,
    assumed_cold_start,
    assumed_provision,
    calibrated_price_book,
    cold_start_status,
    estimate_cold_start,
    measured_price_book,
    record_sample,
    screen,
)
from inference_placement.policy.decide import PlacementState, assess
from inference_placement.policy.economics import economics_for
from inference_placement.policy.price_book import default_price_book
from tests.test_policy_idle_gaps import gpu_spec

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def test_the_book_dominates_with_few_samples() -> None:
    one = estimate_cold_start(10.0, [40.0])
    assert one.measured_seconds == 40.0 and one.samples == 1
    assert one.weight == pytest.approx(1 / (1 + SHRINKAGE_K))
    assert one.seconds == pytest.approx(10.0 + (40.0 - 10.0) / 5)  # 16 s: much closer to the book's 10 than to 40
    none = estimate_cold_start(10.0, [])
    assert none.seconds == 10.0 and none.measured_seconds is None and none.weight == 0.0


def test_the_measurement_takes_over_as_samples_accumulate() -> None:
    few = estimate_cold_start(10.0, [40.0] * 4)
    many = estimate_cold_start(10.0, [40.0] * MAX_SAMPLES)
    assert few.seconds == pytest.approx(25.0)  # k = 4 samples: half and half
    assert many.weight == pytest.approx(MAX_SAMPLES / (MAX_SAMPLES + SHRINKAGE_K))
    assert abs(many.seconds - 40.0) < abs(few.seconds - 40.0) < abs(estimate_cold_start(10.0, [40.0]).seconds - 40.0)
    assert many.seconds > 34.0


def test_the_median_keeps_one_slow_outlier_from_moving_the_estimate_by_its_size() -> None:
    steady = estimate_cold_start(10.0, [12.0] * 9)
    with_outlier = estimate_cold_start(10.0, [12.0] * 9 + [900.0])
    assert with_outlier.measured_seconds == 12.0 and steady.measured_seconds == 12.0


def test_only_the_most_recent_samples_count() -> None:
    old_then_new = [100.0] * 30 + [20.0] * MAX_SAMPLES
    assert estimate_cold_start(10.0, old_then_new).measured_seconds == 20.0
    assert estimate_cold_start(10.0, old_then_new).samples == MAX_SAMPLES


@pytest.mark.parametrize(
    ("sample", "why"),
    [
        pytest.param(-3.0, "takes time", id="negative"),
        pytest.param(0.0, "takes time", id="zero"),
        pytest.param(math.nan, "not finite", id="nan"),
        pytest.param(math.inf, "not finite", id="inf"),
        pytest.param(ABSURD_SECONDS * 10, "broken measurement", id="absurd"),
        pytest.param("12", "not a number", id="string"),
        pytest.param(True, "not a number", id="bool"),
        pytest.param(None, "not a number", id="none"),
    ],
)
def test_garbage_samples_are_ignored_with_a_reason(sample: Any, why: str) -> None:
    kept, refused = screen([5.0, sample, 7.0])
    assert kept == (5.0, 7.0)
    assert len(refused) == 1 and why in refused[0]
    est = estimate_cold_start(10.0, [sample] * 50)
    assert est.seconds == 10.0 and est.samples == 0 and len(est.rejected) == 50
    samples, reason = record_sample((5.0,), sample)
    assert samples == (5.0,) and reason is not None and why in reason


def test_recorded_samples_are_bounded_oldest_dropped() -> None:
    samples: tuple[float, ...] = ()
    for i in range(1, 50):
        samples, reason = record_sample(samples, float(i))
        assert reason is None
    assert len(samples) == MAX_SAMPLES == MAX_COLD_START_SAMPLES
    assert samples[0] == 50.0 - MAX_SAMPLES and samples[-1] == 49.0


def test_a_negative_shrinkage_is_refused() -> None:
    with pytest.raises(ValueError, match="shrinkage"):
        estimate_cold_start(10.0, [1.0], k=-1.0)


@pytest.mark.parametrize("target", list(TargetName), ids=lambda t: t.value)
def test_the_calibrated_book_gives_the_estimate_as_this_models_cold_start(target: TargetName) -> None:
    pb = default_price_book()
    spec = gpu_spec()
    book = assumed_cold_start(spec, pb, target)
    assert book is not None and book > 0
    calibrated = calibrated_price_book(pb, spec, {target: book * 3.0})
    econ = economics_for(target, spec, calibrated)
    before = economics_for(target, spec, pb)
    assert econ is not None and before is not None
    assert econ.cold_start_seconds == pytest.approx(book * 3.0)
    # the migration lead moves with it (deploy + the cold start), prices do not
    assert econ.provision_seconds - econ.cold_start_seconds == pytest.approx(
        before.provision_seconds - before.cold_start_seconds
    )
    assert econ.instance_usd_per_second == before.instance_usd_per_second
    others = [t for t in TargetName if t is not target]
    for other in others:
        a, b = economics_for(other, spec, calibrated), economics_for(other, spec, pb)
        assert a is not None and b is not None and a.cold_start_seconds == b.cold_start_seconds
    assert calibrated_price_book(pb, spec, {}) is pb
    assert calibrated_price_book(pb, spec, {target: book}) is pb


def _status(seconds: list[float], size_mb: float = 1300) -> ColdStartStatus:
    return ColdStartStatus(cluster=ColdStartTargetStatus(model_size_mb=size_mb, recent_seconds=seconds))


def test_decide_uses_measured_cold_starts_once_there_are_samples() -> None:
    pb = default_price_book()
    spec = gpu_spec()
    state = PlacementState(current=TargetName.CLUSTER, last_migration_finished_at=None, month_to_date_usd=0.0)
    book_only = assess(spec, None, state, measured_price_book(pb, spec, None), ClusterCapacity(), NOW)
    assumed = assumed_cold_start(spec, pb, TargetName.CLUSTER)
    assert assumed is not None
    assert book_only.econs[TargetName.CLUSTER].cold_start_seconds == pytest.approx(assumed)
    slow = [assumed * 4.0] * MAX_SAMPLES
    measured = assess(spec, None, state, measured_price_book(pb, spec, _status(slow)), ClusterCapacity(), NOW)
    expected = estimate_cold_start(assumed, slow).seconds
    assert measured.econs[TargetName.CLUSTER].cold_start_seconds == pytest.approx(expected)
    assert expected > assumed * 3.0
    # samples measured with another model size are not this model's
    other_size = measured_price_book(pb, spec, _status(slow, size_mb=99))
    assert other_size is pb


def test_status_records_a_sample_and_shows_measured_vs_assumed() -> None:
    pb = default_price_book()
    spec = gpu_spec()
    assert cold_start_status(spec, pb, None) is None
    first = cold_start_status(spec, pb, None, {TargetName.CLUSTER: 30.0}, source="test", stamp="2026-03-10T12:00:00Z")
    assert first is not None and first.cluster is not None and first.lambda_ is None
    entry = first.cluster
    assumed = assumed_cold_start(spec, pb, TargetName.CLUSTER)
    assert entry.assumed_seconds == pytest.approx(assumed, abs=1e-3)
    assert entry.measured_seconds == 30.0 and entry.samples == 1 and entry.recent_seconds == [30.0]
    assert entry.source == "test" and entry.last_sample_at == "2026-03-10T12:00:00Z"
    assert entry.estimate_seconds == pytest.approx(estimate_cold_start(assumed or 0.0, [30.0]).seconds, abs=1e-3)
    # garbage leaves the samples as they were and says why
    refused = cold_start_status(spec, pb, first, {TargetName.CLUSTER: math.nan}, stamp="2026-03-10T12:05:00Z")
    assert refused is not None and refused.cluster is not None
    assert refused.cluster.recent_seconds == [30.0] and refused.cluster.last_sample_at == "2026-03-10T12:00:00Z"
    assert refused.cluster.last_rejected is not None and "finite" in refused.cluster.last_rejected
    # the wire form round-trips through the API model (what a restarted operator reads back)
    wire = first.model_dump(by_alias=True, exclude_none=True)
    assert wire["cluster"]["recentSeconds"] == [30.0]
    assert ColdStartStatus.model_validate(wire) == first
    # a new model size starts over
    bigger = InferenceWorkloadSpec.model_validate(
        {**spec.model_dump(by_alias=True), "model": ModelSpec(image="x", size_mb=5000, cpu="2", memory="8Gi")}
    )
    fresh = cold_start_status(bigger, pb, first)
    assert fresh is not None and fresh.cluster is not None
    assert fresh.cluster.recent_seconds == [] and fresh.cluster.model_size_mb == 5000


def test_status_refuses_more_samples_than_the_bound() -> None:
    with pytest.raises(ValueError):
        ColdStartTargetStatus(model_size_mb=1, recent_seconds=[1.0] * (MAX_COLD_START_SAMPLES + 1))


@pytest.mark.parametrize("target", [TargetName.LAMBDA, TargetName.CLOUDRUN], ids=lambda t: t.value)
def test_a_measured_serverless_lead_sets_the_deploy_time_and_keeps_the_cold_start(target: TargetName) -> None:
    pb = default_price_book()
    spec = gpu_spec() if target is TargetName.CLOUDRUN else _cpu_spec()
    cold = assumed_cold_start(spec, pb, target)
    lead = assumed_provision(spec, pb, target)
    assert cold is not None and lead is not None
    calibrated = calibrated_price_book(pb, spec, {target: cold * 2.0}, {target: lead + 100.0})
    econ = economics_for(target, spec, calibrated)
    assert econ is not None
    assert econ.cold_start_seconds == pytest.approx(cold * 2.0)
    assert econ.provision_seconds == pytest.approx(lead + 100.0)
    # a lead shorter than the cold start cannot make the deploy negative
    quick = economics_for(target, spec, calibrated_price_book(pb, spec, {target: cold * 2.0}, {target: 0.001}))
    assert quick is not None and quick.provision_seconds == pytest.approx(quick.cold_start_seconds)


def test_a_measured_cluster_lead_is_recorded_but_not_a_book_term() -> None:
    pb = default_price_book()
    spec = gpu_spec()
    assert calibrated_price_book(pb, spec, {}, {TargetName.CLUSTER: 999.0}) is pb
    status = cold_start_status(
        spec, pb, None, provision_samples={TargetName.CLUSTER: 42.0}, provision_source="test", stamp="t"
    )
    assert status is not None and status.cluster is not None and status.cluster.provision is not None
    assert status.cluster.samples == 0 and status.cluster.measured_seconds is None
    assert status.cluster.provision.recent_seconds == [42.0] and status.cluster.provision.source == "test"
    assert status.cluster.provision.assumed_seconds == pytest.approx(
        assumed_provision(spec, pb, TargetName.CLUSTER), abs=1e-3
    )


def _cpu_spec() -> InferenceWorkloadSpec:
    return InferenceWorkloadSpec(
        model=ModelSpec(image="x", size_mb=300, cpu="1", memory="2Gi", service_seconds=0.05),
    )
