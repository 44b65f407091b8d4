"""Month-to-date spend accrues from status alone and resets with the calendar month."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from inference_placement.api.status import BudgetStatus
from inference_placement.policy.budget import MONTH_SECONDS, accrue_spend

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def test_first_accrual_starts_at_zero() -> None:
    assert accrue_spend(None, 100.0, NOW) == BudgetStatus(month_to_date_usd=0.0, accounted_at="2026-11-22T12:00:00Z")


def test_accrues_at_the_monthly_rate_of_the_placement() -> None:
    start = BudgetStatus(month_to_date_usd=10.0, accounted_at="2026-11-22T12:00:00Z")
    later = NOW + timedelta(days=1)
    accrued = accrue_spend(start, 730.0, later)  # $730 per 730-hour month: $1 an hour
    assert accrued.month_to_date_usd == pytest.approx(10.0 + 730.0 * 86400 / MONTH_SECONDS)
    assert accrued.month_to_date_usd == pytest.approx(34.0)


def test_a_whole_billing_month_accrues_the_projected_monthly_cost() -> None:
    """One month model: a monthly figure is a rate x 730 h, and spend accrues back at that rate."""
    start = BudgetStatus(month_to_date_usd=0.0, accounted_at="2026-10-01T00:00:00Z")
    accrued = accrue_spend(start, 412.0, datetime(2026, 10, 1, tzinfo=UTC) + timedelta(seconds=MONTH_SECONDS))
    assert accrued.month_to_date_usd == pytest.approx(412.0)


def test_the_clock_going_back_accrues_nothing() -> None:
    start = BudgetStatus(month_to_date_usd=7.0, accounted_at="2026-11-22T12:00:00Z")
    assert accrue_spend(start, 1000.0, NOW - timedelta(hours=3)).month_to_date_usd == 7.0


def test_an_unreadable_stamp_keeps_the_spend_and_restarts_accounting() -> None:
    start = BudgetStatus(month_to_date_usd=7.0, accounted_at="yesterday")
    accrued = accrue_spend(start, 1000.0, NOW)
    assert accrued == BudgetStatus(month_to_date_usd=7.0, accounted_at="2026-11-22T12:00:00Z")


def test_resets_at_the_start_of_a_new_month() -> None:
    start = BudgetStatus(month_to_date_usd=250.0, accounted_at="2026-11-30T23:00:00Z")
    accrued = accrue_spend(start, MONTH_SECONDS / 3600, datetime(2026, 12, 1, 2, 0, tzinfo=UTC))
    assert accrued.month_to_date_usd == pytest.approx(2.0)  # $1/hour for the two hours of December


def test_nothing_accrues_without_a_placement() -> None:
    start = BudgetStatus(month_to_date_usd=5.0, accounted_at="2026-11-22T12:00:00Z")
    assert accrue_spend(start, None, NOW + timedelta(hours=5)).month_to_date_usd == 5.0
