"""The month and the budget: one model, used by the controller, the simulator, ``explain`` and the benchmark.

* A **monthly** figure (a projected cost, a budget) is a rate: USD per second times ``MONTH_SECONDS`` (730 hours,
  the convention of the cloud price pages). Projected costs are made that way (``cost_model.py``), and spend accrues
  back at the same rate, so a placement held for a whole 730-hour month accrues exactly its projected monthly cost.
* The **budget period** is the calendar month in UTC: month-to-date spend resets at its first instant, and the
  month's projection adds the current rate up to its last instant (``seconds_to_month_end``).
* **Accrual** reads only what status keeps (month-to-date, the time it was accounted up to, the projected monthly
  cost of where the workload ran since), so a restarted operator, the simulator's ``ours`` and ``explain`` all
  reach the same month-to-date from the same record. The live operator does not see a bill; neither does ``ours``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from inference_placement.api.status import BudgetStatus
from inference_placement.api.timestamps import format_time, parse_time

__all__ = ["MONTH_SECONDS", "accrue_spend", "month_start", "seconds_to_month_end"]

MONTH_SECONDS = 730.0 * 3600.0
"""A billing month (730 hours, the convention of the cloud price pages): monthly rate = USD per second x this."""


def _utc(moment: datetime) -> datetime:
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).astimezone(UTC)


def month_start(now: datetime) -> datetime:
    """The first instant (UTC) of the calendar month ``now`` falls in: where month-to-date spend starts."""
    moment = _utc(now)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def seconds_to_month_end(now: datetime) -> float:
    """Seconds from ``now`` to the first instant of the next calendar month (UTC)."""
    moment = _utc(now)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return max(0.0, (datetime(year, month, 1, tzinfo=UTC) - moment).total_seconds())


def accrue_spend(budget: BudgetStatus | None, monthly_cost_usd: float | None, now: datetime) -> BudgetStatus:
    """Month-to-date spend, accrued at ``monthly_cost_usd`` (where the workload ran since the last accrual).

    Pure and restart-safe: everything it needs is in status. A first accrual starts at zero; a new calendar month
    (UTC) starts again from its first instant; the clock going back accrues nothing.
    """
    stamp = format_time(now)
    if budget is None or budget.accounted_at is None:
        return BudgetStatus(month_to_date_usd=0.0, accounted_at=stamp)
    since = parse_time(budget.accounted_at)
    if since is None:
        return BudgetStatus(month_to_date_usd=budget.month_to_date_usd, accounted_at=stamp)
    spent = budget.month_to_date_usd
    start = month_start(now)
    if since < start:
        since, spent = start, 0.0
    elapsed = max(0.0, (_utc(now) - since).total_seconds())
    spent += (monthly_cost_usd or 0.0) * elapsed / MONTH_SECONDS
    return BudgetStatus(month_to_date_usd=round(spent, 4), accounted_at=stamp)
