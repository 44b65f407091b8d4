"""The placement decision: spec + observed window + current placement + price book + capacity + clock -> Decision.

Pure and stateless across ticks (everything it needs about the past is in the window and the placement state), so
the controller, ``simulate`` and the benchmark call this same function. In order:

1. feasibility: platform limits, allowed targets, compliance, cluster capacity (``feasibility.py``);
2. per feasible target, the warm capacity with the lowest projected cost whose SLO risk stays in budget, and its
   projected monthly cost (``cost_model.py``, forecast = the observed window);
3. the target: a pin wins; the first placement takes the cheapest; otherwise a move needs a cheaper target over the
   near term (migration included) and its threshold held over every step of the sustain window (explicit
   thresholds from the spec, or ``auto``: the cost break-even rate -/+ the hysteresis band), and no cooldown;
4. the budget: month-to-date plus the forecast to the month's end, and the spec's action;
5. replicas for the target that serves after this decision; on the cluster, an intermittent workload may scale to
   zero between bursts where its idle-gap statistics leave the SLO's error budget room (``idle_gaps.py``).

No change while metrics are missing or stale (``target=None``), except the first placement, which uses the
idle prior (no traffic yet; the first request must still be served within the SLO).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property

import numpy as np

from inference_placement.api.spec import (
    SERVERLESS,
    AcceleratorOption,
    BudgetAction,
    InferenceWorkloadSpec,
    TargetName,
    ThresholdMode,
)
from inference_placement.policy.accelerators import AcceleratorChoice, Shape, choose_accelerator, shape_of, spec_on
from inference_placement.policy.actuation import Actuators, effective_spec
from inference_placement.policy.budget import MONTH_SECONDS, seconds_to_month_end
from inference_placement.policy.capacity import ClusterCapacity
from inference_placement.policy.cost_model import (
    Projection,
    break_even_rps,
    migration_cost_usd,
    plan_target,
    queue_slack,
    slack,
    steady_cost_per_second,
)
from inference_placement.policy.economics import Billing, TargetEconomics, economics_for, workload_economics
from inference_placement.policy.feasibility import assess_feasibility
from inference_placement.policy.forecast import TrafficForecast, clean_rates, forecast_from_rates, idle_forecast
from inference_placement.policy.idle_gaps import IdleGapPlan, idle_gap_plan, idle_gap_signature, known_idle_gap_plan
from inference_placement.policy.price_book import PriceBook
from inference_placement.policy.queueing import (
    poisson_mean_within,
    rate_peakedness,
    replicas_for_burst,
    replicas_for_peaked_wait,
    replicas_for_wait_scalar,
)
from inference_placement.policy.slo_risk import SloTerms
from inference_placement.policy.spillover import SpillPlan, spill_plan
from inference_placement.policy.spot import SpotChoice, choose_capacity, spill_cover

__all__ = [
    "Assessment",
    "Decision",
    "PlacementState",
    "TrafficWindow",
    "assess",
    "decide",
    "history_fingerprint",
    "reads_history",
    "switch_thresholds",
]

_PREFERENCE = {TargetName.CLUSTER: 0, TargetName.CLOUDRUN: 1, TargetName.LAMBDA: 2}


@dataclass(frozen=True)
class TrafficWindow:
    """What metrics say: a trailing window ending at ``end``."""

    step_seconds: float
    rps: Sequence[float]
    """Request rate per step, oldest first (the window covers >= sustain_seconds when available). A tuple, or the
    live source's ``FloatSeries`` (a view of the points it keeps as machine doubles: no Python float per point)."""
    observed_p99_seconds: float | None
    end: datetime
    """Time of the last sample (staleness = now - end)."""
    service_seconds: float | None = None
    """Observed mean service time of warm requests (rate(duration_sum) / rate(count)); None = use the spec's."""
    warm_latency_seconds: float | None = None
    """Observed mean of the latency the SLO measures on requests that did not queue (e.g. time to first token of a
    streamed LLM response); None = the whole service time."""
    peak_in_flight: Sequence[float] | None = None
    """Peak requests in flight per step, aligned with ``rps`` (``max_over_time`` of the servers' in-flight gauge);
    None = unknown. Shows bursts shorter than a step that rates average away."""
    service_per_step: Sequence[float] | None = None
    """Mean service time of each step's requests (over the rate window ending at the step, as ``rps``), aligned
    with ``rps``; 0 (or NaN) where a step had none, None = unknown. How much the means vary tells the service time's
    variability (``forecast.service_scv``)."""
    rate_window_seconds: float | None = None
    """The span each point of ``rps`` and ``service_per_step`` averages over (the live ``rate()`` range); None =
    the step."""
    slo_miss_share: float | None = None
    """Observed share of the window's requests slower than the SLO's latency (the latency histogram's bucket at
    the objective); None = unknown. Calibrates the model on the current target when it misses more than planned."""
    slo_misses: Sequence[float] | None = None
    """Requests slower than the SLO's latency per step, aligned with ``rps``; None = unknown. When given, the
    calibration reads the misses of the recent steps (those of the capacity in place now) rather than the
    window's share, which still holds the misses of capacity that has since been added."""
    history_rps: Sequence[float] | None = None
    """A longer trailing history of the request rate at the same step, oldest first, ending with the window's last
    step (e.g. the last day); None = the window itself. Read only for the idle-gap statistics that decide whether an
    intermittent workload may scale to zero between bursts (``idle_gaps.py``): rare gaps need a long history. (The
    live source hands this and the per-step series as ``policy.series.FloatSeries``: views of the arrays it keeps,
    read and compared as tuples are.)"""
    history_slo_misses: float | None = None
    """Requests slower than the SLO over ``history_rps``'s span; None = unknown (taken as none when the history is
    the window: the window's ``slo_miss_share`` then tells)."""
    history_step_seconds: float | None = None
    """The step of ``history_rps`` when it is coarser than the window's (the live source keeps a day at 300 s);
    None = ``step_seconds``."""
    known_idle_steps: int | None = None
    """Never set live (no metrics source knows it): the steps from the one being decided on that will carry no
    request, known in advance. Only the benchmark's clairvoyant reference line sets it (``sim/policies.py:
    ClairvoyantOursPolicy``, with a window of the true coming rates), so that the idle-gap plan reads the truth in
    place of its estimate of when the next burst comes; the rest of ``decide`` runs unchanged."""


@dataclass(frozen=True)
class PlacementState:
    """From the workload's status, so the policy itself is stateless across ticks."""

    current: TargetName | None
    last_migration_finished_at: datetime | None
    month_to_date_usd: float
    accelerator: AcceleratorOption | None = None
    """The accelerator the cluster's replicas run on now (``status.lastDecision.accelerator``); None = the spec's
    first, or not on the cluster."""
    moving_to: TargetName | None = None
    """The target of the migration in progress (``status.migration.target``), if any: that move is being made and
    paid for already, so it is not charged again (a decision made halfway through a move would otherwise price it
    twice and turn back to the source)."""
    spilling: bool = False
    """Burst spillover is in force on the cluster and not ending (``status.spill``): it ends only when holding the
    peak beats it by more than the hysteresis band (``spillover.spill_plan``)."""
    on_spot: bool | None = None
    """The capacity type the cluster's replicas run on now (``status.lastDecision.capacityType``): True spot, False
    on-demand, None unknown. Back to spot from on-demand takes savings beyond the hysteresis band."""


@dataclass(frozen=True)
class Decision:
    target: TargetName | None
    """Where the workload runs after this decision; None = keep as is (metrics missing, nothing feasible)."""
    replicas: int
    """For ``target``: cluster replicas, or serverless instances held warm by the platform (Lambda provisioned
    concurrency / Cloud Run min instances)."""
    reason: str
    projected_monthly_cost_usd: dict[TargetName, float | None]
    """Projected monthly cost on each target (None = infeasible)."""
    infeasible: dict[TargetName, str]
    """Why each excluded target is excluded."""
    slo_risk: float | None
    """Expected share of requests missing the SLO on ``target``."""
    budget_exceeded: bool
    projected_month_usd: float
    metrics_ok: bool
    migrate: bool
    """True when ``target`` differs from the current placement and a move may start now."""
    keep_warm_instances: int = 0
    """Serverless: instances to keep warm with pings (a billed request every ``ping_interval_seconds``)."""
    ping_interval_seconds: float | None = None
    max_replicas: int | None = None
    """Cap on replicas / serverless concurrency (budget action cap-scaling); None = the spec's."""
    preferred: TargetName | None = None
    """The target the policy would move to when a move is held back (sustain, cooldown); None otherwise."""
    slo_risk_by_target: dict[TargetName, float | None] = field(default_factory=dict)
    thresholds_rps: tuple[float, float] | None = None
    """(offload below, reclaim above) used for this decision, when a cluster/serverless move was considered."""
    idle_gap: IdleGapPlan | None = None
    """The idle-gap plan behind a cluster scale to zero between bursts (or behind keeping a replica warm through
    a gap); None when the workload is not intermittent or the plan did not apply."""
    spill: SpillPlan | None = None
    """On the cluster: the base replicas (``replicas``) and the serverless target the overflow goes to; None =
    the cluster holds the peak itself."""
    accelerator: AcceleratorChoice | None = None
    """The accelerator the cluster's replicas run on and every acceptable one's numbers, when the spec lists
    alternatives; None = the spec's only accelerator."""
    spot: SpotChoice | None = None
    """Spot or on-demand for the cluster's replicas and the numbers behind it, when the spec asks for spot and the
    cluster is feasible; None otherwise."""


# ----------------------------------------------------------------------------------------------- helpers


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _metrics_state(window: TrafficWindow | None, now: datetime, max_staleness_seconds: float) -> tuple[bool, str]:
    if window is None or len(window.rps) == 0:
        return False, "no traffic metrics"
    if not (window.step_seconds > 0 and math.isfinite(window.step_seconds)):
        return False, f"invalid metrics step {window.step_seconds}"
    age = (_aware(now) - _aware(window.end)).total_seconds()
    if age > max_staleness_seconds:
        return False, f"metrics are {age:.0f} s old (> {max_staleness_seconds:.0f} s)"
    last = window.rps[-1]
    if not math.isfinite(last) or last < 0:
        return False, f"latest rate sample is invalid ({last})"
    return True, ""


def _money(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value >= 100:
        return f"${value:,.0f}"
    if value >= 1:
        return f"${value:,.2f}"
    return f"${value:.4f}"


def _rate(value: float) -> str:
    if math.isinf(value):
        return "inf"
    return f"{value:.3g}"


@dataclass(frozen=True)
class _Choice:
    target: TargetName | None
    move_now: bool
    preferred: TargetName | None
    note: str
    thresholds: tuple[float, float] | None = None


def _sustained(values: np.ndarray, below: float | None = None, above: float | None = None) -> bool:
    if values.size == 0:
        return False
    if below is not None and not bool((values < below).all()):
        return False
    return not (above is not None and not bool((values > above).all()))


def switch_thresholds(
    spec: InferenceWorkloadSpec,
    econs: dict[TargetName, TargetEconomics],
    plans: dict[TargetName, Projection],
    serverless: TargetName,
    forecast: TrafficForecast,
    slo: SloTerms,
) -> tuple[float, float, str]:
    """(offload below, reclaim above, how they were set) between the cluster and one serverless target: the spec's
    explicit thresholds, or ``auto``: the cost break-even rate (with the SLO's slack) -/+ the hysteresis band.
    ``decide`` moves by these; ``explain`` shows these (``Assessment.thresholds``)."""
    th = spec.placement.thresholds
    if th.mode is ThresholdMode.EXPLICIT and th.offload_below_rps is not None and th.reclaim_above_rps is not None:
        return th.offload_below_rps, th.reclaim_above_rps, "explicit"
    b = break_even_rps(
        econs[TargetName.CLUSTER],
        plans[TargetName.CLUSTER].warm,
        econs[serverless],
        plans[serverless].warm,
        forecast.service_seconds,
        slo,
        queue_slack(forecast, slo),
    )
    h = th.hysteresis_fraction
    return b * (1.0 - h), b * (1.0 + h), f"auto: break-even {_rate(b)} rps -/+{h:.0%}"


@dataclass(frozen=True)
class _Move:
    """What ``_choose`` weighs a move with: the near-term cost of each target and the cost of migrating."""

    spec: InferenceWorkloadSpec
    current: TargetName
    econs: dict[TargetName, TargetEconomics]
    plans: dict[TargetName, Projection]
    forecast: TrafficForecast
    slo: SloTerms
    drain_seconds: float
    moving_to: TargetName | None = None
    near: dict[TargetName, float] = field(default_factory=dict)

    def near_cost(self, t: TargetName) -> float:
        if t not in self.near:
            self.near[t] = self.plans[t].cost_usd(self.forecast.recent)
        return self.near[t]

    def migration(self, to: TargetName) -> float:
        c = self.current
        if to is self.moving_to:
            return 0.0  # under way: its cost is sunk
        return migration_cost_usd(self.plans[c], self.econs[c], self.plans[to], self.econs[to], self.drain_seconds)

    def cheaper_with_move(self, to: TargetName) -> bool:
        return self.near_cost(to) + self.migration(to) < self.near_cost(self.current)

    @property
    def sustain_rates(self) -> np.ndarray:
        return self.forecast.rps[self.forecast.sustain]

    @property
    def explicit(self) -> bool:
        return self.spec.placement.thresholds.mode is ThresholdMode.EXPLICIT


def _offload(m: _Move, to: TargetName) -> _Choice:
    """On the cluster, a serverless target is cheaper (or thresholds are explicit): offload once the sustain
    window stayed below the offload threshold."""
    cheaper = m.cheaper_with_move(to)
    if not (m.explicit or cheaper):
        return _Choice(m.current, False, None, "")
    offload, reclaim, how = switch_thresholds(m.spec, m.econs, m.plans, to, m.forecast, m.slo)
    rates = m.sustain_rates
    peak = float(rates.max()) if rates.size else 0.0
    if _sustained(rates, below=offload):
        note = f"sustained peak {_rate(peak)} rps < offload {_rate(offload)} rps ({how})"
        return _Choice(to, True, None, note, (offload, reclaim))
    note = (
        f"{to.value} cheaper but peak {_rate(peak)} rps in the sustain window is not below offload "
        f"{_rate(offload)} rps ({how})"
    )
    return _Choice(m.current, False, to if cheaper else None, note, (offload, reclaim))


def _reclaim(m: _Move, cheapest: TargetName) -> _Choice | None:
    """On serverless, the cluster is cheaper (or thresholds are explicit): reclaim once the sustain window stayed
    above the reclaim threshold. None = no cluster move to weigh."""
    if not (m.explicit or m.cheaper_with_move(TargetName.CLUSTER)):
        return None
    offload, reclaim, how = switch_thresholds(m.spec, m.econs, m.plans, m.current, m.forecast, m.slo)
    rates = m.sustain_rates
    low = float(rates.min()) if rates.size else 0.0
    if _sustained(rates, above=reclaim):
        note = f"sustained low {_rate(low)} rps > reclaim {_rate(reclaim)} rps ({how})"
        return _Choice(TargetName.CLUSTER, True, None, note, (offload, reclaim))
    if cheapest is TargetName.CLUSTER:
        note = (
            f"cluster cheaper but low {_rate(low)} rps in the sustain window is not above reclaim "
            f"{_rate(reclaim)} rps ({how})"
        )
        return _Choice(m.current, False, TargetName.CLUSTER, note, (offload, reclaim))
    return None


def _between_serverless(m: _Move, to: TargetName) -> _Choice:
    """Serverless to serverless: cheaper by more than the hysteresis band overall and at every sustained step."""
    h = m.spec.placement.thresholds.hysteresis_fraction
    current = m.current
    if not m.near_cost(to) + m.migration(to) < m.near_cost(current) * (1.0 - h):
        return _Choice(current, False, None, f"{to.value} within the {h:.0%} hysteresis band")
    service = m.forecast.service_seconds
    rates = m.sustain_rates
    ours = steady_cost_per_second(m.econs[current], rates, service, m.plans[current].warm, m.slo)
    theirs = steady_cost_per_second(m.econs[to], rates, service, m.plans[to].warm, m.slo)
    if bool((theirs < ours * (1.0 - h)).all()):
        return _Choice(to, True, None, f"{to.value} cheaper by more than {h:.0%} at every step of the sustain window")
    return _Choice(current, False, to, f"{to.value} cheaper overall but not at every step of the sustain window")


def _choose(
    spec: InferenceWorkloadSpec,
    state: PlacementState,
    now: datetime,
    econs: dict[TargetName, TargetEconomics],
    plans: dict[TargetName, Projection],
    candidates: list[TargetName],
    forecast: TrafficForecast,
    slo: SloTerms,
    drain_seconds: float,
) -> _Choice:
    """Stage 3: the target. A pin wins; the first placement takes the cheapest; a target no longer feasible or
    over its SLO risk budget is left; otherwise a move needs a cheaper target over the near term (migration
    included) and its threshold held over every step of the sustain window."""
    current = state.current
    pin = spec.placement.pin
    if pin is not None:
        return _Choice(pin, current is not pin, None, f"pinned to {pin.value}")
    if not candidates:
        return _Choice(None, False, None, "no feasible target")
    m = _Move(spec, current or candidates[0], econs, plans, forecast, slo, drain_seconds, state.moving_to)
    ranked = sorted(candidates, key=lambda t: (m.near_cost(t), t is not current, _PREFERENCE[t]))
    cheapest = ranked[0]
    if current is None:
        return _Choice(cheapest, True, None, "first placement: cheapest feasible target")
    if current not in plans:
        return _Choice(cheapest, True, None, f"{current.value} is no longer feasible")
    if current not in candidates:
        # the current target carries more SLO risk than the budget allows; a safer one exists
        return _Choice(cheapest, True, None, f"{current.value} SLO risk {plans[current].miss_share():.2%} over budget")
    if cheapest is current:
        return _Choice(current, False, None, "")
    # explicit thresholds decide between the cluster and serverless whatever the cost
    if current is TargetName.CLUSTER or (m.explicit and TargetName.CLUSTER in candidates):
        serverless_options = [t for t in ranked if t in SERVERLESS]
        if current is TargetName.CLUSTER and serverless_options:
            return _offload(m, serverless_options[0])
    if current in SERVERLESS and TargetName.CLUSTER in candidates:
        reclaimed = _reclaim(m, cheapest)
        if reclaimed is not None:
            return reclaimed
    if current in SERVERLESS and cheapest in SERVERLESS:
        return _between_serverless(m, cheapest)
    return _Choice(current, False, None, "")


def _replicas_for(
    spec: InferenceWorkloadSpec,
    target: TargetName,
    econ: TargetEconomics,
    plan: Projection,
    forecast: TrafficForecast,
    slo: SloTerms,
    window: TrafficWindow | None,
    current: TargetName | None,
    idle_gap: IdleGapPlan | None = None,
) -> tuple[int, int, str]:
    """(replicas, keep-warm instances by ping, note) for the serving target."""
    if target is TargetName.CLUSTER:
        if idle_gap is not None and idle_gap.scale_to_zero and spec.scaling.min_replicas == 0:
            return 0, 0, idle_gap.describe()
        rate = forecast.sizing_rps(econ.cold_start_seconds)
        a = rate * forecast.service_seconds
        needed = int(
            replicas_for_wait_scalar(
                a, econ.concurrency, queue_slack(forecast, slo), slo.sizing_tail, econ.max_instances
            )
        )
        concurrency = max(1, econ.concurrency)
        notes: list[str] = []
        # the rate of the steps this capacity serves (from a replica's start to the next decision's) is the
        # present level plus the rate's own variation between steps, which Poisson noise leaves out
        # ... and within a step the arrivals may clump (bursts the observed in-flight peaks show): both make the
        # in-flight count vary more than Poisson (its peakedness), sized for with Hayward's approximation
        variability = forecast.variability(econ.cold_start_seconds)
        clumping = forecast.in_flight_peakedness()
        if variability.excess_sd_rps > 0 or clumping > 1.0:
            level = forecast.level_rps()
            level_a = level * forecast.service_seconds
            peakedness = rate_peakedness(level_a, forecast.service_seconds, variability.excess_sd_rps, clumping)
            varied = replicas_for_peaked_wait(
                level_a, econ.concurrency, queue_slack(forecast, slo), slo.sizing_tail, econ.max_instances, peakedness
            )
            if varied > needed:
                needed = varied
                parts = []
                if variability.excess_sd_rps > 0:
                    parts.append(
                        f"rate varies {variability.dispersion:.1f}x Poisson between steps "
                        f"(+-{_rate(variability.excess_sd_rps)} rps around {_rate(level)} rps)"
                    )
                if clumping > 1.0:
                    parts.append(f"in-flight peaks show bursts {clumping:.1f}x Poisson's variance")
                notes.append(", ".join(parts) + f": in flight {peakedness:.1f}x Poisson's variance")
        # the observed in-flight peak of the sustain window: bursts shorter than a step that rates average away
        recent_peak = forecast.observed_peak(forecast.sustain)
        # the smallest replica count whose slots, plus what may queue behind them and still start within the slack
        # (what the steady stream under the burst works off, or the slots freeing: ``queueing.burst_level``), hold
        # the peak; steady = the in-flight level every step of the sustain window carried
        steady = float(forecast.rps[forecast.sustain].min()) * forecast.service_seconds if forecast.rps.size else 0.0
        observed = replicas_for_burst(
            recent_peak,
            concurrency,
            steady,
            slack(forecast, slo),
            slo.sizing_tail,
            max(1, econ.max_instances),
            forecast.service_scv,
        )
        if observed > needed:
            needed = observed
            notes.append(f"observed peak {recent_peak:.0f} in flight")
        if forecast.service_scv is not None and forecast.wait_scale < 1.0:
            notes.append(
                f"service times regular (c_s^2 <= {forecast.service_scv:.2f} from the steps' means): "
                f"queueing waits x{forecast.wait_scale:.2f} of Erlang C's"
            )
        replicas = max(plan.warm, needed, spec.scaling.min_replicas)
        p99 = window.observed_p99_seconds if window is not None else None
        # a step that began a burst after an idle gap may carry a cold start the idle-gap plan budgeted for
        cold_burst = idle_gap is not None and forecast.rps.size >= 2 and forecast.rps[-2] <= 0
        if (
            current is TargetName.CLUSTER
            and p99 is not None
            and p99 > slo.objective_seconds
            and rate > 0
            and not cold_burst
        ):
            replicas += 1
            notes.append(f"observed p99 {p99 * 1000:.0f} ms > {slo.objective_seconds * 1000:.0f} ms: +1 replica")
        if idle_gap is not None and forecast.rps.size and forecast.rps[-1] <= 0:
            # idle now, and the gap statistics say a burst may come: say why the replica stays
            notes.append(idle_gap.describe())
        return min(replicas, spec.scaling.max_replicas), 0, "; ".join(notes)
    if econ.billing is Billing.INSTANCE_BASED:
        # kept warm by min instances: an instance-based instance is billed alive whether pinged or not
        return econ.floor_instances + plan.warm, 0, ""
    return econ.floor_instances, plan.warm, ""


def _observed_miss_share(window: TrafficWindow, forecast: TrafficForecast, slo: SloTerms) -> tuple[float | None, str]:
    """The observed share of requests over the SLO that calibrates the model, and over what it was observed.

    Misses speak for the capacity that served them: with per-step misses, the sustain window's (the capacity the
    policy sized last), provided it holds enough requests for the risk budget to allow a miss (fewer cannot show a
    share above the budget except by chance); else the whole window's share."""
    steps = forecast.rps.size
    if window.slo_misses is not None and len(window.slo_misses) == steps and slo.risk_budget > 0:
        recent = forecast.sustain
        requests = float(forecast.rps[recent].sum()) * forecast.step_seconds
        if requests * slo.risk_budget >= 1.0:
            misses = float(clean_rates(window.slo_misses)[recent].sum())
            span = min(steps, forecast.sustain_steps) * forecast.step_seconds
            return min(1.0, misses / requests), f"over the last {span / 60:.0f} min"
    return window.slo_miss_share, "over the window"


def reads_history(spec: InferenceWorkloadSpec, actuators: Actuators = Actuators()) -> bool:
    """Whether ``decide`` may read the window's history (``history_rps``, ``history_slo_misses``,
    ``history_step_seconds``) for ``spec`` under ``actuators``: only the idle-gap plan reads it, and only for a
    cluster the spec lets go to zero replicas (``_idle_gap``). Otherwise two windows that differ in their history
    alone get the same decision, so a caller keeping a fingerprint of what a decision read leaves the history out
    (the fleet loop: a history being read back after a start must not re-decide every workload on every tick)."""
    return _may_zero(effective_spec(spec, actuators))


def history_fingerprint(window: TrafficWindow) -> tuple[object, ...]:
    """Everything of ``window``'s history that ``decide`` reads where ``reads_history`` (the idle-gap plan, from the
    cleaned rates as ``_idle_gap`` reads them): two windows alike in all else and in this get the same decision. A
    history without an idle gap plans nothing, however its rates move; one with gaps changes with its busy steps'
    rates, its gaps and the offset since the last busy step (``idle_gaps.idle_gap_signature``). A history shorter
    than the window is not read (the window is). The live fleet's skip-unchanged fingerprint and the simulator's
    decision reuse both key on it."""
    if window.history_rps is None:
        return (None, window.history_slo_misses)
    rates = clean_rates(window.history_rps)
    step = window.history_step_seconds or window.step_seconds
    if rates.size * step < len(window.rps) * window.step_seconds:
        return ("shorter than the window", rates.size, window.history_slo_misses)
    return (idle_gap_signature(rates), window.history_slo_misses, window.history_step_seconds)


def _may_zero(spec: InferenceWorkloadSpec) -> bool:
    """The (effective) spec lets the cluster go to zero replicas: the one case the idle-gap plan, and so the
    history, is read."""
    return spec.scaling.min_replicas == 0


def _idle_gap(
    spec: InferenceWorkloadSpec,
    econ: TargetEconomics,
    plan: Projection,
    forecast: TrafficForecast,
    slo: SloTerms,
    window: TrafficWindow,
) -> IdleGapPlan | None:
    """The idle-gap plan of an intermittent workload on the cluster, when scaling to zero between bursts is an
    option: the spec allows zero replicas, a cold start misses the SLO (otherwise the cost model alone decides),
    and one woken replica carries a burst's first step."""
    if not _may_zero(spec) or not slo.cold_request_misses(econ.cold_start_seconds, forecast.service_seconds):
        return None
    if window.known_idle_steps is not None:
        # the clairvoyant reference: when the next burst comes is known, not estimated
        # (no burst finds it at zero: the tick before one sizes the replicas, so no one-replica wake to check)
        return known_idle_gap_plan(
            window.known_idle_steps, float(forecast.rps.max()) if forecast.rps.size else 0.0, forecast.step_seconds
        )
    history = window.history_rps if window.history_rps is not None else window.rps
    step = forecast.step_seconds
    if window.history_rps is not None and window.history_step_seconds:
        step = window.history_step_seconds
    rates = clean_rates(history)
    if rates.size * step < forecast.rps.size * forecast.step_seconds:
        rates, step = forecast.rps, forecast.step_seconds
    # the budget the plan's own modelled misses (queueing, bursts) leave to cold starts between bursts ...
    budget = max(0.0, slo.sizing_tail - plan.miss_share())
    # ... and no more than keeps the chance of breaking the objective over the history's requests (the misses it
    # allows, a whole number, less those already seen) within the objective's own miss share: a workload of a few
    # requests may miss none
    history_requests = float(rates.sum()) * step
    if history_requests > 0:
        if window.history_slo_misses is not None:
            seen = window.history_slo_misses
        else:
            seen = (window.slo_miss_share or 0.0) * float(forecast.rps.sum()) * forecast.step_seconds
        allowed = math.floor(slo.error_budget * history_requests + 1e-9) - math.ceil(seen - 1e-9)
        if allowed < 0:
            return None
        budget = min(budget, poisson_mean_within(allowed, slo.error_budget) / history_requests)
    gap_plan = idle_gap_plan(rates, step, econ.cold_start_seconds, budget)
    if gap_plan is None:
        return None
    if gap_plan.scale_to_zero and step > forecast.step_seconds and forecast.rps.size:
        # a coarse history's newest point may end up to one of its steps before the window: zero only while the
        # window's steps over that span are idle too
        recent = forecast.rps[-max(1, math.ceil(step / forecast.step_seconds)) :]
        if bool((recent > 0).any()):
            gap_plan = replace(gap_plan, scale_to_zero=False)
    one_replica = replicas_for_wait_scalar(
        gap_plan.burst_start_rps * forecast.service_seconds,
        econ.concurrency,
        queue_slack(forecast, slo),
        slo.sizing_tail,
        econ.max_instances,
    )
    return gap_plan if one_replica <= 1 else None


def _budget_cap(target: TargetName, econ: TargetEconomics, remaining_usd: float, seconds_left: float) -> int:
    affordable_per_second = max(0.0, remaining_usd) / max(seconds_left, 1.0)
    unit = (
        econ.instance_usd_per_second
        if econ.billing in (Billing.REPLICA, Billing.INSTANCE_BASED)
        else (econ.busy_usd_per_second)
    )
    if unit <= 0:
        return econ.max_instances
    return max(1, min(econ.max_instances, math.floor(affordable_per_second / unit)))


# ----------------------------------------------------------------------------------------------- stages


@dataclass(frozen=True)
class Assessment:
    """Stages 1-2 of ``decide``: what each target can do for the workload now and what it would cost.

    ``explain`` reads the same assessment, so the thresholds and costs it shows are the ones ``decide`` used."""

    spec: InferenceWorkloadSpec
    """The spec as the operator can carry it out (``actuation.effective_spec``)."""
    slo: SloTerms
    econs: dict[TargetName, TargetEconomics]
    """Feasible targets only."""
    infeasible: dict[TargetName, str]
    metrics_ok: bool
    metrics_note: str
    forecast: TrafficForecast
    plans: dict[TargetName, Projection]
    """Per feasible target, the cheapest warm capacity in SLO budget; the current target's calibrated by its
    observed misses when they exceed the model's."""
    current_slo: SloTerms
    """The SLO terms the current target was planned with (stricter than ``slo`` after a calibration)."""
    calibration_note: str
    accelerator: AcceleratorChoice | None = None
    """The cluster's accelerator among the spec's alternatives (``econs`` and ``plans`` of the cluster are its);
    None when the spec lists one accelerator."""
    spot: SpotChoice | None = None
    """Spot or on-demand for the cluster (``econs`` and ``plans`` of the cluster are the chosen one's, pre-emptions
    included on spot); None when the spec does not ask for spot or the cluster is infeasible."""
    spot_note: str = ""
    """Why a workload asking for spot is placed without weighing it (this operator cannot tell spot nodes)."""

    @cached_property
    def monthly(self) -> dict[TargetName, float | None]:
        return {t: (self.plans[t].monthly_usd() if t in self.plans else None) for t in TargetName}

    @cached_property
    def risks(self) -> dict[TargetName, float | None]:
        return {t: (self.plans[t].miss_share() if t in self.plans else None) for t in TargetName}

    def thresholds(self) -> dict[TargetName, tuple[float, float, str]]:
        """(offload below, reclaim above, how) between the cluster and each feasible serverless target."""
        if TargetName.CLUSTER not in self.plans:
            return {}
        return {
            t: switch_thresholds(self.spec, self.econs, self.plans, t, self.forecast, self.slo)
            for t in SERVERLESS
            if t in self.plans
        }


def assess(
    spec: InferenceWorkloadSpec,
    window: TrafficWindow | None,
    state: PlacementState,
    price_book: PriceBook,
    capacity: ClusterCapacity,
    now: datetime,
    max_staleness_seconds: float = 180.0,
    actuators: Actuators = Actuators(),
) -> Assessment:
    """Stage 1 (feasibility, economics, the forecast from the window) and stage 2 (a plan per feasible target,
    calibrated on the current target by its observed misses)."""
    spec = effective_spec(spec, actuators)
    spot_note = ""
    if spec.cluster.spot and actuators.spot_provider is None:
        # nothing tells spot nodes apart here: on-demand it is, priced as such
        spec = spec.model_copy(update={"cluster": spec.cluster.model_copy(update={"spot": False})})
        spot_note = "spot asked for, but this operator cannot tell spot nodes (cluster.spotNodeLabels none): on-demand"
    slo = SloTerms.from_spec(spec)
    feasibility = assess_feasibility(spec, price_book, capacity, state.current)
    econs = {
        t: e
        for t, e in workload_economics(spec, price_book, node_provision=feasibility.cluster_needs_node).items()
        if feasibility.feasible(t)
    }
    metrics_ok, metrics_note = _metrics_state(window, now, max_staleness_seconds)
    if metrics_ok and window is not None:
        peaks = clean_rates(window.peak_in_flight) if window.peak_in_flight is not None else None
        forecast = forecast_from_rates(
            spec,
            clean_rates(window.rps),
            window.step_seconds,
            window.service_seconds,
            window.warm_latency_seconds,
            peaks,
            window.service_per_step,
            window.rate_window_seconds,
        )
    else:
        forecast = idle_forecast(spec)
    plans = {t: plan_target(econ, forecast, slo) for t, econ in econs.items()}
    infeasible = dict(feasibility.infeasible)
    accelerator = _accelerator(spec, state, price_book, capacity, forecast, slo, econs, plans, infeasible)
    current_slo = slo
    calibration_note = ""
    if metrics_ok and window is not None and state.current in plans:
        observed_share, over = _observed_miss_share(window, forecast, slo)
        current_slo = slo.calibrated(observed_share)
        if current_slo is not slo:
            # the current target misses more than the model says: trust the observation for it
            chosen = accelerator.chosen if accelerator is not None else None
            on_chosen = state.current is TargetName.CLUSTER and chosen is not None and chosen.forecast is not None
            plan_forecast = chosen.forecast if on_chosen and chosen is not None and chosen.forecast else forecast
            plans[state.current] = plan_target(econs[state.current], plan_forecast, current_slo)
            calibration_note = (
                f"observed {observed_share:.2%} of requests over the SLO on {state.current.value} {over} "
                f"> {slo.risk_budget:.2%} planned: sizing x{current_slo.model_error:.1f} stricter"
            )
    spot = None
    if spec.cluster.spot and TargetName.CLUSTER in plans and actuators.spot_provider is not None:
        cluster_slo = current_slo if state.current is TargetName.CLUSTER else slo
        spot = _spot(spec, state, price_book, forecast, cluster_slo, econs, plans, accelerator, actuators)
    return Assessment(
        spec=spec,
        slo=slo,
        econs=econs,
        infeasible=infeasible,
        metrics_ok=metrics_ok,
        metrics_note=metrics_note,
        forecast=forecast,
        plans=plans,
        current_slo=current_slo,
        calibration_note=calibration_note,
        accelerator=accelerator,
        spot=spot,
        spot_note=spot_note,
    )


def _spot(
    spec: InferenceWorkloadSpec,
    state: PlacementState,
    price_book: PriceBook,
    forecast: TrafficForecast,
    slo: SloTerms,
    econs: dict[TargetName, TargetEconomics],
    plans: dict[TargetName, Projection],
    accelerator: AcceleratorChoice | None,
    actuators: Actuators,
) -> SpotChoice | None:
    """Spot or on-demand for the cluster (``econs`` and ``plans`` of the cluster updated in place to the chosen
    one): the plan on spot with its pre-emptions (``spot.py``) against the same accelerator on on-demand nodes."""
    provider = actuators.spot_provider
    platform = price_book.platforms.cluster
    interruption = platform.spot_interruption.get(provider or "")
    if provider is None or interruption is None:
        return None
    spot_econ = econs[TargetName.CLUSTER]
    chosen = accelerator.chosen if accelerator is not None else None
    on = spec_on(spec, chosen.option) if chosen is not None else spec
    demand_spec = on.model_copy(update={"cluster": on.cluster.model_copy(update={"spot": False})})
    needs_node = spot_econ.provision_seconds > spot_econ.cold_start_seconds + 1e-9
    demand_econ = economics_for(TargetName.CLUSTER, demand_spec, price_book, node_provision=needs_node)
    if demand_econ is None:
        return None
    cluster_forecast = chosen.forecast if chosen is not None and chosen.forecast is not None else forecast
    choice, econ, plan = choose_capacity(
        spot_econ,
        plans[TargetName.CLUSTER],
        demand_econ,
        plan_target(demand_econ, cluster_forecast, slo),
        cluster_forecast,
        slo,
        provider,
        interruption,
        platform.node_provision_seconds,
        # the router's overflow hop exists while a spill is in force (its composite route): only then does it
        # catch what a reclaimed replica leaves
        cover=spill_cover(econs, actuators.spillover and state.spilling),
        on_spot_now=state.on_spot if state.current is TargetName.CLUSTER else None,
        hysteresis=spec.placement.thresholds.hysteresis_fraction,
    )
    econs[TargetName.CLUSTER] = econ
    plans[TargetName.CLUSTER] = plan
    return choice


def _accelerator(
    spec: InferenceWorkloadSpec,
    state: PlacementState,
    price_book: PriceBook,
    capacity: ClusterCapacity,
    forecast: TrafficForecast,
    slo: SloTerms,
    econs: dict[TargetName, TargetEconomics],
    plans: dict[TargetName, Projection],
    infeasible: dict[TargetName, str],
) -> AcceleratorChoice | None:
    """With accelerator alternatives, the cluster is priced and planned on the one ``choose_accelerator`` picks
    (``econs``, ``plans`` and ``infeasible`` updated in place); None when the spec lists one accelerator."""
    if not spec.accelerator.alternatives or TargetName.CLUSTER not in spec.placement.allowed_targets:
        return None
    on_cluster = state.current is TargetName.CLUSTER
    current = (state.accelerator or spec.accelerator) if on_cluster else None
    observed_on = current if forecast.observed else None
    known: dict[Shape, tuple[Projection, float]] = {}
    if TargetName.CLUSTER in plans:
        # the first accelerator's plan, made on the forecast as measured: reused for any alike at another price
        econ = econs[TargetName.CLUSTER]
        known[shape_of(econ, 1.0)] = (plans[TargetName.CLUSTER], econ.instance_usd_per_second)
    choice = choose_accelerator(
        spec,
        price_book,
        capacity,
        forecast,
        slo,
        current=current,
        on_cluster=on_cluster,
        observed_on=observed_on,
        known_plans=known,
    )
    # the first accelerator's cluster verdict is superseded: every acceptable one was assessed
    infeasible.pop(TargetName.CLUSTER, None)
    chosen = choice.chosen
    if chosen is None or chosen.econ is None or chosen.plan is None:
        econs.pop(TargetName.CLUSTER, None)
        plans.pop(TargetName.CLUSTER, None)
        infeasible[TargetName.CLUSTER] = choice.note
    else:
        econs[TargetName.CLUSTER] = chosen.econ
        plans[TargetName.CLUSTER] = chosen.plan
    return choice


def _summary(monthly: dict[TargetName, float | None]) -> str:
    parts = [f"{t.value} {_money(monthly[t])}/mo" for t in TargetName if monthly[t] is not None]
    return "projected " + ", ".join(parts) if parts else "no target can run it"


def _withheld(a: Assessment, state: PlacementState, now: datetime, current: TargetName) -> Decision:
    """Metrics missing or stale on a placed workload: no change, the month still projected at its cost."""
    return Decision(
        target=None,
        replicas=0,
        reason=f"{a.metrics_note}: keeping {current.value} as is",
        projected_monthly_cost_usd=a.monthly,
        infeasible=a.infeasible,
        slo_risk=a.risks.get(current),
        budget_exceeded=False,
        # keep projecting at the current placement's cost: missing metrics must not hide the month's spend
        projected_month_usd=state.month_to_date_usd
        + (a.plans[current].usd_per_second() * seconds_to_month_end(now) if current in a.plans else 0.0),
        metrics_ok=False,
        migrate=False,
        slo_risk_by_target=a.risks,
    )


@dataclass(frozen=True)
class _Target:
    """Stages 3-4: the target that serves after this decision, the month projected there, and budget notes."""

    choice: _Choice
    serving: TargetName | None
    projected_month_usd: float
    exceeded: bool
    budget_note: str


def _target_and_budget(a: Assessment, state: PlacementState, price_book: PriceBook, now: datetime) -> _Target:
    """Stage 3, the target (a pin; the first placement; a cheaper target whose threshold held over the sustain
    window, outside the cooldown) and stage 4, the budget (month-to-date plus the forecast to the month's end, and
    the spec's action: prefer-cheaper re-chooses on cost alone)."""
    spec, plans, slo, current = a.spec, a.plans, a.slo, state.current
    risks = a.risks
    budget = spec.budget
    seconds_left = seconds_to_month_end(now)

    def month_projection(target: TargetName | None) -> float:
        if target is None or target not in plans:
            return state.month_to_date_usd
        return state.month_to_date_usd + plans[target].usd_per_second() * seconds_left

    def choose(candidates: list[TargetName]) -> tuple[_Choice, TargetName | None]:
        choice = _choose(
            spec, state, now, a.econs, plans, candidates, a.forecast, slo, price_book.migration.drain_seconds
        )
        return choice, choice.target if choice.move_now else (current if current is not None else choice.target)

    safe = [t for t in plans if (risks[t] or 0.0) <= slo.risk_budget + 1e-12]
    candidates = safe or ([min(plans, key=lambda t: (risks[t] or 0.0, _PREFERENCE[t]))] if plans else [])
    choice, serving = choose(candidates)
    projected_month = month_projection(serving)
    exceeded = budget.monthly_usd is not None and projected_month > budget.monthly_usd
    budget_note = ""
    if exceeded and budget.action is BudgetAction.PREFER_CHEAPER and spec.placement.pin is None:
        # the budget outranks SLO risk: every feasible target competes on cost alone
        choice, serving = choose(list(plans))
        projected_month = month_projection(serving)
        budget_note = "budget action prefer-cheaper: SLO risk not used to exclude targets"

    # cooldown: at most one migration per cooldown window (a first placement or an infeasible current move anyway)
    if choice.move_now and current is not None and current in plans and state.last_migration_finished_at is not None:
        since = (_aware(now) - _aware(state.last_migration_finished_at)).total_seconds()
        cooldown = spec.placement.cooldown_seconds
        if since < cooldown and spec.placement.pin is None and current in candidates:
            choice = _Choice(
                current,
                False,
                choice.target,
                f"{choice.note}; held by cooldown ({since:.0f} s of {cooldown} s since the last migration)",
                choice.thresholds,
            )
            serving = current
            projected_month = month_projection(serving)
    exceeded = budget.monthly_usd is not None and projected_month > budget.monthly_usd
    return _Target(choice, serving, projected_month, exceeded, budget_note)


def _nothing_to_serve(a: Assessment, state: PlacementState, t: _Target) -> Decision:
    current = state.current
    target_out = t.serving if current is None else None
    return Decision(
        target=target_out,
        replicas=0,
        reason=f"{t.choice.note or 'no feasible target'}; {_summary(a.monthly)}",
        projected_monthly_cost_usd=a.monthly,
        infeasible=a.infeasible,
        slo_risk=None,
        budget_exceeded=t.exceeded,
        projected_month_usd=t.projected_month_usd,
        metrics_ok=a.metrics_ok,
        migrate=current is None and target_out is not None,
        preferred=t.choice.preferred,
        slo_risk_by_target=a.risks,
    )


def _reason(
    a: Assessment,
    serving: TargetName,
    replicas: int,
    keep_warm: int,
    t: _Target,
    replica_note: str,
    budget_note: str,
) -> str:
    slo, budget = a.slo, a.spec.budget
    risk = a.risks[serving]
    if serving is TargetName.CLUSTER:
        warm_text = f"{replicas} replica(s)"
    elif keep_warm:
        warm_text = f"{keep_warm} instance(s) kept warm by pings"
    elif replicas:
        warm_text = f"{replicas} warm instance(s)"
    else:
        warm_text = "scale to zero"
    risk_text = f"SLO risk {risk:.2%} {'<=' if (risk or 0) <= slo.risk_budget else '>'} {slo.risk_budget:.2%} budget"
    if not a.forecast.observed:
        risk_text += " (no traffic seen yet)"
    parts = [f"{serving.value} ({warm_text})", _summary(a.monthly), risk_text]
    accelerator_note = a.accelerator.note if a.accelerator is not None and serving is TargetName.CLUSTER else ""
    spot_note = ""
    if serving is TargetName.CLUSTER:
        spot_note = a.spot.note if a.spot is not None else a.spot_note
    parts += [note for note in (t.choice.note, accelerator_note, spot_note, a.calibration_note, replica_note) if note]
    if budget.monthly_usd is not None:
        relation = ">" if t.exceeded else "<="
        parts.append(f"month projected {_money(t.projected_month_usd)} {relation} budget {_money(budget.monthly_usd)}")
    if budget_note:
        parts.append(budget_note)
    if not a.metrics_ok:
        parts.append(a.metrics_note)
    return "; ".join(parts)


# ----------------------------------------------------------------------------------------------- decide


def decide(
    spec: InferenceWorkloadSpec,
    window: TrafficWindow | None,
    state: PlacementState,
    price_book: PriceBook,
    capacity: ClusterCapacity,
    now: datetime,
    max_staleness_seconds: float = 180.0,
    actuators: Actuators = Actuators(),
) -> Decision:
    """Where the workload should run now, with how many replicas, and why (in numbers).

    ``actuators``: what the operator can carry out; without a way to wake the cluster from zero replicas, the
    cluster is sized and priced with at least one replica whatever ``minReplicas`` says."""
    a = assess(spec, window, state, price_book, capacity, now, max_staleness_seconds, actuators)
    current = state.current
    if not a.metrics_ok and current is not None:
        return _withheld(a, state, now, current)
    t = _target_and_budget(a, state, price_book, now)
    serving = t.serving
    if serving is None or serving not in a.plans:
        return _nothing_to_serve(a, state, t)

    # stage 5: replicas for the target that serves after this decision
    spec = a.spec
    econ = a.econs[serving]
    plan = a.plans[serving]
    serving_slo = a.current_slo if serving is current else a.slo
    idle_gap = (
        _idle_gap(spec, econ, plan, a.forecast, serving_slo, window)
        if serving is TargetName.CLUSTER and a.metrics_ok and window is not None
        else None
    )
    replicas, keep_warm, replica_note = _replicas_for(
        spec, serving, econ, plan, a.forecast, serving_slo, window, current, idle_gap
    )
    spill = None
    if serving is TargetName.CLUSTER and actuators.spillover and a.metrics_ok and a.forecast.observed:
        h = spec.placement.thresholds.hysteresis_fraction
        # the loss model of the overflow is its own; a calibration corrects the holding plan's queueing model
        spill = spill_plan(a.econs, plan, a.forecast, a.slo, h, in_force=state.spilling)
        if spill is not None and spill.base_replicas < replicas:
            replicas = spill.base_replicas
            replica_note = "; ".join(n for n in (replica_note, spill.describe(MONTH_SECONDS)) if n)
        else:
            spill = None
    max_replicas: int | None = None
    budget_note = t.budget_note
    budget = spec.budget
    if t.exceeded and budget.action is BudgetAction.CAP_SCALING and budget.monthly_usd is not None:
        cap = _budget_cap(serving, econ, budget.monthly_usd - state.month_to_date_usd, seconds_to_month_end(now))
        max_replicas = cap
        if serving is TargetName.CLUSTER:
            replicas = min(replicas, cap)
        unit = "replicas" if serving is TargetName.CLUSTER else "instances"
        budget_note = f"budget action cap-scaling: at most {cap} {unit}"

    migrate = t.choice.move_now and serving is not current
    return Decision(
        target=serving,
        replicas=int(replicas),
        reason=_reason(a, serving, replicas, keep_warm, t, replica_note, budget_note),
        projected_monthly_cost_usd=a.monthly,
        infeasible=a.infeasible,
        slo_risk=a.risks[serving],
        budget_exceeded=t.exceeded,
        projected_month_usd=t.projected_month_usd,
        metrics_ok=a.metrics_ok,
        migrate=migrate,
        keep_warm_instances=int(keep_warm),
        ping_interval_seconds=econ.ping_interval_seconds if keep_warm else None,
        max_replicas=max_replicas,
        preferred=t.choice.preferred if not migrate else None,
        slo_risk_by_target=a.risks,
        thresholds_rps=t.choice.thresholds,
        idle_gap=idle_gap,
        spill=spill,
        accelerator=a.accelerator,
        spot=a.spot,
    )
