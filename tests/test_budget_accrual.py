"""Month-to-date spend accrues from status alone and resets with the calendar month."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from inference_placement.api.status import BudgetStatus
from inference_placement.controller.reconciler import SECONDS_PER_MONTH, accrue_spend

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def test_first_accrual_starts_at_zero() -> None:
    assert accrue_spend(None, 100.0, NOW) == BudgetStatus(month_to_date_usd=0.0, accounted_at="2026-11-22T12:00:00Z")


def test_accrues_at_the_monthly_rate_of_the_placement() -> None:
    start = BudgetStatus(month_to_date_usd=10.0, accounted_at="2026-11-22T12:00:00Z")
    later = NOW + timedelta(days=1)
    accrued = accrue_spend(start, 304.375, later)
    assert accrued.month_to_date_usd == pytest.approx(10.0 + 304.375 * 86400 / SECONDS_PER_MONTH)
    assert accrued.month_to_date_usd == pytest.approx(20.0)


def test_resets_at_the_start_of_a_new_month() -> None:
    start = BudgetStatus(month_to_date_usd=250.0, accounted_at="2026-11-30T23:00:00Z")
    accrued = accrue_spend(start, SECONDS_PER_MONTH / 3600, datetime(2026, 12, 1, 2, 0, tzinfo=UTC))
    assert accrued.month_to_date_usd == pytest.approx(2.0)  # $1/hour for the two hours of December


def test_nothing_accrues_without_a_placement() -> None:
    start = BudgetStatus(month_to_date_usd=5.0, accounted_at="2026-11-22T12:00:00Z")
    assert accrue_spend(start, None, NOW + timedelta(hours=5)).month_to_date_usd == 5.0
