"""Idle-gap pre-warming: when an intermittent workload may scale to zero between its bursts, from its own history.

A workload whose traffic comes in bursts separated by idle steps (timer-triggered functions, batch callers) pays for
a warm replica through every gap unless it scales to zero; then the first request of the next burst waits for a
cold start and, when a cold start is slower than the SLO allows, misses. The idea is the hybrid histogram policy of
"Serverless in the Wild" (Shahrad et al., ATC 2020), recast as a budget problem:

- the gaps between busy steps of the observed history give, for each offset ``d`` (steps since the last busy
  step), the hazard ``h_d``: the chance the next burst starts at offset ``d`` given it has not started before.
  Counts are small, so the estimate is the Krichevsky-Trofimov one, ``(arrivals + 1/2) / (at risk + 1)``: an offset
  seen only a few times is treated as uncertain (high hazard), not as safe;
- leaving offset ``d`` cold costs ``S_d h_d m`` expected misses per cycle (``S_d`` the chance a cycle gets that far,
  ``m`` the requests a cold start delays: the first one plus those arriving during the start, from the observed
  bursts); keeping it warm costs a replica-step when the cycle gets that far. Every offset saves the same per step
  reached, so the cheapest plan within an error budget leaves the lowest-hazard offsets cold first, until the
  expected misses of a cycle reach the budget's share of a cycle's requests;
- offsets beyond the longest gap observed are unknown and kept warm.

A replica started at a tick is ready a cold start later, within the step, so the workload may be at zero now only
when this step's offset and the next one are both cold (the next one's replica is started now, in time).

Pure: the history is a parameter; no clock, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from inference_placement.policy.queueing import FloatArray

__all__ = ["IdleGapPlan", "idle_gap_plan", "idle_gap_signature", "known_idle_gap_plan"]

_PRIOR_ARRIVALS = 0.5
"""Krichevsky-Trofimov (Jeffreys) prior: half an arrival over one extra cycle at risk per offset."""


@dataclass(frozen=True)
class IdleGapPlan:
    """Whether the workload may be at zero replicas now, and the numbers behind it."""

    offset: int
    """Steps since the last busy step, counting the step being decided (1 = the last step was busy)."""
    cycles: int
    """Busy steps with a following busy step in the history (each opens a cycle of offsets; its gap closes it)."""
    hazard_now: float
    """Observed chance a burst started at this offset given none before it (NaN beyond the longest gap)."""
    hazard_next: float
    """Same for the next offset (the one a replica started now would be ready for)."""
    misses_per_cold_start: float
    """Requests a cold start would delay (the first one plus those arriving while the replica starts), mean over
    the observed busy steps; the plan uses the mean per offset where that offset saw arrivals."""
    expected_cold_misses_per_cycle: float
    """Expected misses per cycle of the plan's cold offsets."""
    budget_misses_per_cycle: float
    """The error budget's share of a cycle's requests."""
    cold_from: int
    """First offset the plan leaves cold (0 = none)."""
    cold_to: int
    """Last offset the plan leaves cold (a replica is started at this offset's tick, ready for the next one)."""
    longest_gap: int
    """The longest gap seen (offsets beyond it are unknown and kept warm)."""
    burst_start_rps: float
    """The highest request rate of a step that started a burst (what one woken replica has to carry)."""
    scale_to_zero: bool
    """True: this step and the next are both cold in the plan, so no replica is needed now."""
    step_seconds: float
    """The history's step, which the offsets count (a coarse history: e.g. 300 s while the window's is 30 s)."""
    known: bool = False
    """The coming idle steps were known, not estimated (the benchmark's clairvoyant reference line only)."""

    def describe(self) -> str:
        if self.known:
            verdict = "scale to zero" if self.scale_to_zero else "keep warm"
            return f"idle-gap plan (future known): the next {self.longest_gap} step(s) idle: {verdict}"
        verdict = "scale to zero" if self.scale_to_zero else "keep warm"
        cold = f"offsets {self.cold_from}-{self.cold_to} cold" if self.cold_from else "no offset cold"
        return (
            f"idle-gap plan: {self.offset} step(s) of {self.step_seconds:.0f} s since the last busy step; {cold} of "
            f"gaps up to {self.longest_gap} ({self.cycles} cycles seen), {self.expected_cold_misses_per_cycle:.3g} "
            f"expected misses per cycle <= budget {self.budget_misses_per_cycle:.3g}: {verdict}"
        )


def idle_gap_plan(
    rps: FloatArray,
    step_seconds: float,
    cold_start_seconds: float,
    miss_budget_share: float,
) -> IdleGapPlan | None:
    """The idle-gap plan for the step after ``rps`` (oldest first, one point per ``step_seconds``: the history's
    own step, which may be coarser than the window's), or None when the history shows no idle gap to plan (never
    busy, or busy without a break, or no gap has closed yet).

    ``miss_budget_share`` is the share of requests cold starts may make miss (the policy's risk budget left after
    its other modelled risks).
    """
    n = int(rps.size)
    if n == 0 or step_seconds <= 0:
        return None
    busy = np.flatnonzero(rps > 0)
    if busy.size < 2:
        return None
    gaps = np.diff(busy)
    if not (gaps > 1).any():
        return None
    # every busy step opens a cycle of offsets; the next busy step closes it at offset ``gap`` (1 = next step)
    longest = int(gaps.max())
    offset = n - int(busy[-1])
    requests = rps * step_seconds
    cycles = int(gaps.size)
    following = busy[1:]
    # what a cold start would cost at each arrival: the first request plus those arriving while a replica starts
    cold_cost = np.minimum(requests[following], 1.0 + rps[following] * cold_start_seconds)
    m_all = float(cold_cost.mean())
    counts = np.bincount(gaps, minlength=longest + 1)[1:].astype(np.float64)
    sums = np.bincount(gaps, weights=cold_cost, minlength=longest + 1)[1:]
    m = np.where(counts > 0, sums / np.maximum(counts, 1.0), m_all)
    rate = rps[following[gaps > 1]]
    # per offset d = 1..longest: arrivals at d, and cycles at risk at d (idle through d - 1; the open gap too)
    d = np.arange(1, longest + 1)
    arrivals = counts
    at_risk = np.cumsum(arrivals[::-1])[::-1] + (d < offset)
    hazard = arrivals / np.maximum(at_risk, 1.0)
    # one cold segment [s, a] of offsets (the pre-warm window of the hybrid histogram policy: cold after a burst,
    # warm again before the next one is likely). Its expected misses per cycle: the share of cycles reaching s,
    # times the Krichevsky-Trofimov estimate of an arrival inside it, (arrivals in it + 1/2) / (at risk at s + 1),
    # times the requests a cold start delays. For each s the longest a within budget, then the s saving the most
    # replica-steps per cycle (a cycle reaching an offset pays a replica-step there when it is warm).
    total_cycles = float(at_risk[0])
    # the requests of a cycle: the history's requests after its first busy step, per closed cycle
    budget = max(0.0, miss_budget_share) * float(requests[busy[1] :].sum()) / cycles
    weighted = np.concatenate([[0.0], np.cumsum(arrivals * m)])  # weighted[k] = sum over offsets 1..k
    reach = np.concatenate([[0.0], np.cumsum(at_risk / max(total_cycles, 1.0))])
    share = at_risk / max(total_cycles, 1.0)  # cycles reaching s, per cycle
    allowed = budget * (at_risk + 2.0 * _PRIOR_ARRIVALS) / np.maximum(share, 1e-12) - _PRIOR_ARRIVALS * m_all
    limit = weighted[:-1] + allowed  # weighted[a] <= weighted[s - 1] + allowed[s]
    ends = np.searchsorted(weighted, limit + 1e-12, side="right") - 1  # largest a with weighted[a] <= limit
    ends = np.minimum(ends, longest)
    feasible = (allowed >= 0) & (ends >= d)
    saved = np.where(feasible, reach[np.maximum(ends, 0)] - reach[d - 1], -1.0)
    best = int(np.argmax(saved))
    if saved[best] > 0:
        first, last = int(d[best]), int(ends[best])
        seg_arrivals = float(weighted[last] - weighted[first - 1])
        expected = float(share[best]) * (seg_arrivals + _PRIOR_ARRIVALS * m_all) / (float(at_risk[best]) + 1.0)
    else:
        first, last, expected = 0, -1, 0.0

    def hazard_at(k: int) -> float:
        return float(hazard[k - 1]) if 1 <= k <= longest else float("nan")

    zero = first <= offset and offset + 1 <= last
    return IdleGapPlan(
        offset=offset,
        cycles=cycles,
        hazard_now=hazard_at(offset),
        hazard_next=hazard_at(offset + 1),
        misses_per_cold_start=m_all,
        expected_cold_misses_per_cycle=expected,
        budget_misses_per_cycle=budget,
        cold_from=first,
        cold_to=max(last, 0),
        longest_gap=longest,
        burst_start_rps=float(rate.max()),
        scale_to_zero=zero and not math.isnan(expected),
        step_seconds=step_seconds,
    )


def idle_gap_signature(rps: FloatArray) -> tuple[object, ...]:
    """Everything of ``rps`` that :func:`idle_gap_plan` reads: two histories with the same signature get the same
    plan (for any budget and cold start). Lets a caller that decides every tick reuse a decision while a workload
    stays idle: the rates of the busy steps, the gaps between them, and the offset, capped where it stops mattering
    (beyond the longest gap every offset is kept warm)."""
    busy = np.flatnonzero(rps > 0)
    if busy.size < 2:
        return ()
    gaps = np.diff(busy)
    longest = int(gaps.max())
    if longest <= 1:
        return ()
    offset = int(rps.size) - int(busy[-1])
    return (rps[busy].tobytes(), gaps.tobytes(), min(offset, longest + 2))


def known_idle_gap_plan(idle_steps: int, burst_rps: float, step_seconds: float) -> IdleGapPlan:
    """The plan when the coming idle steps are known (``idle_steps`` from the one being decided on carry no
    request): the same rule as :func:`idle_gap_plan` with the truth for the hazard (0 on the idle steps, 1 on the
    first busy one), so the workload may be at zero now when this step and the next are idle (a replica started at
    the next tick is ready within that step). ``burst_rps``: the rate one woken replica has to carry."""
    idle = max(0, idle_steps)
    return IdleGapPlan(
        offset=0,
        cycles=0,
        hazard_now=0.0 if idle >= 1 else 1.0,
        hazard_next=0.0 if idle >= 2 else 1.0,
        misses_per_cold_start=0.0,
        expected_cold_misses_per_cycle=0.0,
        budget_misses_per_cycle=0.0,
        cold_from=1 if idle >= 1 else 0,
        cold_to=max(0, idle - 1),
        longest_gap=idle,
        burst_start_rps=burst_rps,
        scale_to_zero=idle >= 2,
        step_seconds=step_seconds,
        known=True,
    )
