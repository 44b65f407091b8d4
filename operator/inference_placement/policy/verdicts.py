"""The verdicts the status conditions carry about a decision: is the SLO at risk, is the budget exceeded.

Pure; the reconciler turns each into its condition (``SLOAtRisk``, ``BudgetExceeded``) and ``explain`` prints the
same verdict for the same inputs, so what a user reads there is what the operator concluded.
"""

from __future__ import annotations

from dataclasses import dataclass

from inference_placement.api.spec import InferenceWorkloadSpec
from inference_placement.api.status import Reason
from inference_placement.policy.decide import Decision, TrafficWindow

__all__ = ["Verdict", "budget_verdict", "slo_verdict"]


@dataclass(frozen=True)
class Verdict:
    true: bool
    """The condition holds (the SLO is at risk / the budget is exceeded)."""
    reason: Reason
    message: str


def slo_verdict(spec: InferenceWorkloadSpec, window: TrafficWindow | None, decision: Decision) -> Verdict:
    """At risk when, in this order: the measured share of requests slower than the objective exceeds the error
    budget (the objective itself, measured); the measured p99 exceeds the objective; the model expects more misses
    than the budget allows on the target. Measurements count only while the metrics are fresh."""
    slo = spec.slo
    budget = 1.0 - slo.attainment
    objective_ms = slo.objective_seconds * 1000
    fresh = window if window is not None and decision.metrics_ok else None
    missed = fresh.slo_miss_share if fresh is not None else None
    observed_p99 = fresh.observed_p99_seconds if fresh is not None else None
    if missed is not None and missed > budget:
        return Verdict(
            True,
            Reason.MISSES_ABOVE_BUDGET,
            f"observed {missed:.2%} of requests slower than {objective_ms:.0f} ms > {budget:.2%} allowed",
        )
    if observed_p99 is not None and observed_p99 > slo.objective_seconds:
        return Verdict(
            True,
            Reason.LATENCY_ABOVE_SLO,
            f"observed p99 {observed_p99 * 1000:.0f} ms > objective {objective_ms:.0f} ms",
        )
    if decision.slo_risk is not None and decision.slo_risk > budget:
        return Verdict(
            True, Reason.SLO_RISK, f"expected {decision.slo_risk:.2%} of requests miss the SLO > {budget:.2%} allowed"
        )
    risk = f"{decision.slo_risk:.2%}" if decision.slo_risk is not None else "unknown"
    return Verdict(False, Reason.SLO_MET, f"SLO risk {risk} <= {budget:.2%}")


def budget_verdict(spec: InferenceWorkloadSpec, decision: Decision) -> Verdict:
    """Exceeded when the month's projection (month-to-date plus the forecast to its end) is over the budget."""
    monthly = spec.budget.monthly_usd
    if monthly is None:
        return Verdict(False, Reason.NO_BUDGET, "no budget set")
    projected = decision.projected_month_usd
    if decision.budget_exceeded:
        return Verdict(
            True,
            Reason.OVER_BUDGET,
            f"projected ${projected:,.0f} this month > budget ${monthly:,.0f} (action: {spec.budget.action.value})",
        )
    return Verdict(False, Reason.WITHIN_BUDGET, f"projected ${projected:,.0f} this month <= budget ${monthly:,.0f}")
