"""Status is written only when it changed semantically."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from inference_placement.api.status import BudgetStatus
from inference_placement.controller.status_diff import merge_patch, semantically_equal
from inference_placement.policy.budget import accrue_spend

T0 = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)


def test_small_numeric_wobble_is_not_a_change() -> None:
    assert semantically_equal({"observed": {"rps": 10.0}}, {"observed": {"rps": 10.2}})
    assert not semantically_equal({"observed": {"rps": 10.0}}, {"observed": {"rps": 12.0}})


def test_sample_time_alone_is_not_a_change() -> None:
    a = {"observed": {"rps": 1.0, "sampledAt": "2026-11-22T10:00:00Z"}}
    b = {"observed": {"rps": 1.0, "sampledAt": "2026-11-22T10:00:30Z"}}
    assert semantically_equal(a, b)


def test_integers_strings_and_booleans_compare_exactly() -> None:
    assert not semantically_equal({"observedGeneration": 1}, {"observedGeneration": 2})
    assert not semantically_equal({"placement": "cluster"}, {"placement": "lambda"})
    assert not semantically_equal({"ready": True}, {"ready": False})
    assert not semantically_equal({"a": 1}, {"a": 1, "b": 2})


def test_merge_patch_nulls_removed_keys_and_replaces_lists() -> None:
    old = {"placement": "cluster", "migration": {"step": "Shifting"}, "conditions": [{"type": "Ready"}]}
    new = {"placement": "lambda", "conditions": [{"type": "Ready"}, {"type": "Placed"}]}
    assert merge_patch(old, new) == {
        "placement": "lambda",
        "migration": None,
        "conditions": [{"type": "Ready"}, {"type": "Placed"}],
    }
    assert merge_patch(new, new) == {}


def test_invalid_spec_makes_ready_false_even_before_placement() -> None:
    from inference_placement.api.conditions import WORKLOAD_CONDITIONS
    from inference_placement.api.status import ConditionStatus, ConditionType, Reason

    conditions = WORKLOAD_CONDITIONS.mark(
        [], ConditionType.INVALID_SPEC, ConditionStatus.TRUE, Reason.SPEC_INVALID, "spec.x: bad", now="t", generation=1
    )
    ready = next(c for c in conditions if c.type is ConditionType.READY)
    assert ready.status is ConditionStatus.FALSE and ready.reason is Reason.SPEC_INVALID
    fresh = WORKLOAD_CONDITIONS.mark(
        [], ConditionType.INVALID_SPEC, ConditionStatus.FALSE, Reason.SPEC_VALID, "", now="t", generation=1
    )
    assert next(c for c in fresh if c.type is ConditionType.READY).status is ConditionStatus.UNKNOWN


def test_spend_accruing_at_a_steady_rate_is_no_change_and_its_record_stays_exact() -> None:
    """An H100 workload accrues ~$11 an hour: month-to-date alone is no reason to write (it made a quarter of a
    1,000-workload fleet a write every few minutes), and the record last written still accrues to the exact spend."""
    monthly = 8015.4  # one H100 for the month, USD
    written = accrue_spend(BudgetStatus(month_to_date_usd=100.0, accounted_at="2026-11-10T00:00:00Z"), monthly, T0)
    later = accrue_spend(written, monthly, T0 + timedelta(hours=5))
    assert later.month_to_date_usd - written.month_to_date_usd > 50  # beyond the old $1 / 5 % tolerance
    old: dict[str, Any] = {"budget": written.model_dump(by_alias=True), "currentMonthlyCostUsd": monthly}
    new: dict[str, Any] = {"budget": later.model_dump(by_alias=True), "currentMonthlyCostUsd": monthly}
    assert semantically_equal(old, new)
    # the record that stays in status, accrued on, is the spend that was not written
    assert accrue_spend(written, monthly, T0 + timedelta(hours=5)) == later
    # the rate it accrues at is written when it changes; the projection too
    assert not semantically_equal(old, {**new, "currentMonthlyCostUsd": monthly * 2})
    assert not semantically_equal(old, {**new, "budget": {**new["budget"], "projectedMonthUsd": 9000.0}})
