"""The offline optimum: perfect foresight, dynamic programming over per-step placement, same simulator.

1. Modes: every feasible target at every useful capacity (cluster replicas 0..peak, where 0 scales to zero after
   the Knative idle window and a request wakes a replica; serverless instances kept warm by pings 0..peak). Where
   the scenario's router runs the activator, a second zero mode is the live operator's own (``ours``'s action): a
   request held by the router wakes a replica at the operator's next poll, a hold past the tolerable cold start
   fails, and the woken replica leaves once idle ``wakeKeepSeconds`` after the wake, the earliest the operator
   may let it go. Both zero modes stay, so the optimum remains a lower bound for the baselines too. With the
   activator, a third zero is the product's serverless activator: a request that finds no ready replica goes to
   the serverless target ``policy.actuation.zero_answer`` qualifies (free while idle, a cold start the SLO
   tolerates and shorter than a replica's) while it wakes the cluster. And every cluster level from one replica up
   is also tried with burst spillover (base plus overflow): the replicas' refused requests go to each allowed
   serverless target, with no or one instance of it kept warm. These are every action the product has (accelerator
   choice, base plus overflow, zero replicas held or answered by serverless, keep-warm pings), whatever the
   scenario's router enables for ``ours``, so the optimum is a lower bound for every setting of the product.
2. Per-step cost and misses of each mode come from the simulator itself: the workload run through ``simulate``
   with that mode held for the whole trace (so the optimum uses the very platform model every policy is scored on).
3. A dynamic program picks one mode per step. Changing capacity costs what starting it costs (replicas billed
   while they start, cold starts and pings); changing target is a make-before-break migration: the new target is
   provisioned ahead (perfect foresight) and billed while it starts, the old one drains, and a new migration can
   only start once the previous one has finished. The SLO is a constraint per workload (misses <= the error
   budget of its request count), relaxed with a Lagrange multiplier: the DP runs for a batch of multipliers at once
   and keeps the cheapest plan whose misses fit.
4. The chosen plan is replayed through the simulator (moves issued early by their lead time so they are ready at
   the step boundary); the replay's bill and misses are what the benchmark reports. If the replay misses more than
   the DP expected, the next multiplier's plan is replayed instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from inference_placement.api.spec import SERVERLESS, AcceleratorOption, TargetName
from inference_placement.policy.actuation import Actuators, zero_answer
from inference_placement.policy.economics import Billing, TargetEconomics
from inference_placement.policy.price_book import PriceBook
from inference_placement.policy.queueing import poisson_slots
from inference_placement.sim.baselines import KPA_IDLE_SECONDS
from inference_placement.sim.platforms import Activator
from inference_placement.sim.scenario import RouterPlatform
from inference_placement.sim.simulator import (
    ClusterOption,
    Control,
    Observation,
    SimWorkload,
    WorkloadResult,
    cluster_options,
    simulate,
)

__all__ = [
    "EconOf",
    "FloatArray",
    "Mode",
    "OptimumPolicy",
    "PlanPolicy",
    "econ_lookup",
    "optimum",
    "undominated",
    "workload_modes",
]

FloatArray = npt.NDArray[np.float64]

_EXACT_LEVELS = 64
"""Up to this many cluster levels the optimum tries every replica count; above, the counts some step asks for."""

_LAMBDAS = np.concatenate([[0.0], np.geomspace(1e-7, 1e4, 23)])
"""USD per missed request: the multipliers tried at once (0 = cheapest regardless of the SLO)."""


@dataclass(frozen=True)
class Mode:
    target: TargetName
    level: int
    accelerator: AcceleratorOption | None = field(default=None, hash=False)
    """Cluster: the acceptable accelerator its replicas run on (None = the spec's first)."""
    activator: Activator | None = None
    """Cluster at level 0: woken through the operator's router (None: Knative's idle timeout and wake)."""
    fall_through: TargetName | None = None
    """Cluster at level 0 with the activator: the serverless target that answers a request finding no ready replica
    while one starts (serverless as the activator); None = the activator holds it."""
    overflow: TargetName | None = None
    """Cluster at a level >= 1: the serverless target the replicas' refused requests spill to (base plus overflow)."""
    overflow_warm: int = 0
    """Instances of the overflow target kept warm by pings."""

    @property
    def place(self) -> tuple[TargetName, tuple[str, int, str, str, int] | None]:
        """Where it runs: modes with the same place differ only in capacity (no migration between them)."""
        return self.target, self.accelerator.key() if self.accelerator is not None else None

    def control(self, at: float | None = None) -> Control:
        if self.target is TargetName.CLUSTER:
            if self.level == 0 and self.activator is not None:
                return Control(
                    self.target,
                    replicas=0,
                    activator=self.activator,
                    zero_fall_through=self.fall_through,
                    at=at,
                    accelerator=self.accelerator,
                )
            if self.level == 0:
                return Control(
                    self.target, replicas=0, idle_timeout_seconds=KPA_IDLE_SECONDS, at=at, accelerator=self.accelerator
                )
            return Control(
                self.target,
                replicas=self.level,
                at=at,
                accelerator=self.accelerator,
                overflow=self.overflow,
                overflow_warm_pings=self.overflow_warm if self.overflow is not None else 0,
            )
        return Control(self.target, warm_pings=self.level, at=at)

    def __str__(self) -> str:
        on = f"[{self.accelerator.describe()}]" if self.accelerator is not None else ""
        woken = "+activator" if self.activator is not None else ""
        if self.fall_through is not None:
            woken += f"->{self.fall_through.value}"
        spill = f"+spill:{self.overflow.value}x{self.overflow_warm}" if self.overflow is not None else ""
        return f"{self.target.value}{on}x{self.level}{woken}{spill}"


EconOf = Callable[[Mode], TargetEconomics]
"""The economics a mode runs with (its target's; on the cluster, its accelerator's)."""


def econ_lookup(economics: dict[TargetName, TargetEconomics], options: Sequence[ClusterOption]) -> EconOf:
    by_key = {o.option.key(): o.econ for o in options}

    def econ_of(mode: Mode) -> TargetEconomics:
        if mode.accelerator is not None and mode.target is TargetName.CLUSTER:
            return by_key[mode.accelerator.key()]
        return economics[mode.target]

    return econ_of


class _HoldMode:
    def __init__(self, mode: Mode) -> None:
        self.mode = mode
        self.name = f"hold:{mode}"

    def reset(self, workload: SimWorkload, economics: dict[TargetName, TargetEconomics], price_book: PriceBook) -> None:
        return None

    def tick(self, obs: Observation) -> Sequence[Control]:
        return [self.mode.control()] if obs.step == 0 else []


class OptimumPolicy:
    """Marker for the benchmark: ``optimum`` is computed by :func:`optimum`, not ticked like the others."""

    name = "optimum"


class PlanPolicy:
    """Replays a per-step mode plan, issuing each change early by its lead time (perfect foresight)."""

    name = OptimumPolicy.name

    def __init__(self, plan: Sequence[Mode], econ_of: EconOf, step_seconds: float):
        self.events: dict[int, list[Control]] = {}
        previous: Mode | None = None
        for k, mode in enumerate(plan):
            boundary = k * step_seconds
            if previous is None:
                self._add(0, mode.control(), step_seconds)
            elif mode.target is not previous.target:
                lead = econ_of(mode).provision_seconds
                self._add(max(0.0, boundary - lead), mode.control(at=max(0.0, boundary - lead)), step_seconds)
            elif mode.place != previous.place:
                # a change of accelerator inside the cluster: the new replicas start a cold start ahead
                lead = econ_of(mode).cold_start_seconds
                self._add(max(0.0, boundary - lead), mode.control(at=max(0.0, boundary - lead)), step_seconds)
            elif mode != previous:
                # capacity, spillover or the answer at zero: replicas and a new overflow target start ahead (the
                # overflow deployed, its warm instances started), at the larger of the two levels meanwhile
                early = econ_of(mode).cold_start_seconds if mode.level > previous.level else 0.0
                if mode.overflow is not None and (mode.overflow, mode.overflow_warm) != (
                    previous.overflow,
                    previous.overflow_warm,
                ):
                    spill = econ_of(Mode(mode.overflow, 0))
                    deploy = (
                        spill.provision_seconds - spill.cold_start_seconds
                        if mode.overflow is not previous.overflow
                        else 0.0
                    )
                    early = max(early, deploy + (spill.cold_start_seconds if mode.overflow_warm else 0.0))
                when = max(0.0, boundary - early)
                prepared = replace(mode, level=max(mode.level, previous.level)) if early > 0 else mode
                self._add(when, prepared.control(at=when), step_seconds)
                if prepared != mode:
                    self._add(boundary, mode.control(at=boundary), step_seconds)
            previous = mode

    def _add(self, when: float, control: Control, step_seconds: float) -> None:
        self.events.setdefault(int(when // step_seconds), []).append(control)

    def reset(self, workload: SimWorkload, economics: dict[TargetName, TargetEconomics], price_book: PriceBook) -> None:
        return None

    def tick(self, obs: Observation) -> Sequence[Control]:
        return self.events.get(obs.step, [])


def _levels(econ: TargetEconomics, workload: SimWorkload, speed: float = 1.0) -> list[int]:
    reqs = workload.requests
    if reqs.count == 0:
        return [0, 1]
    per_step = reqs.per_step()
    service = float(reqs.service.mean()) * speed
    peak_a = float(per_step.max()) / reqs.step_seconds * service
    tail = max(1e-6, (1.0 - workload.spec.slo.attainment) / 10.0)
    top = max(1, math.ceil(float(poisson_slots(peak_a, tail)) / max(1, econ.concurrency)))
    top = min(top, econ.max_instances)
    if econ.billing is Billing.REPLICA:
        if top + 2 <= _EXACT_LEVELS:
            levels = list(range(0, top + 2))
        else:
            # a fleet of hundreds of replicas: the levels the Poisson sizing asks for at some step, and one above
            # (every other level is dearer than the next one asked for, or misses more than the one below)
            step_a = per_step / reqs.step_seconds * service
            asked = np.ceil(poisson_slots(step_a[step_a > 0], tail) / max(1, econ.concurrency))
            wanted = {0, 1, top, top + 1} | {int(n) for n in asked} | {int(n) + 1 for n in asked}
            levels = sorted(level for level in wanted if level <= econ.max_instances)
    else:
        levels = list(range(0, min(top, 2) + 1))
        if top > 2:
            levels.append(top)
    return levels


def workload_modes(
    economics: dict[TargetName, TargetEconomics],
    workload: SimWorkload,
    options: Sequence[ClusterOption] = (),
    activator: Activator | None = None,
) -> list[Mode]:
    """Every target at every useful level; with accelerator ``options`` (more than one), the cluster on each; with
    an ``activator``, the cluster's zero also woken through it, held or answered by the serverless target the
    product falls through to; every cluster level from one replica up also with its overflow spilling to each
    feasible serverless target (no or one instance kept warm there)."""
    modes: list[Mode] = []
    spill_targets = [t for t in SERVERLESS if t in economics]
    fall_through = None
    if activator is not None and TargetName.CLUSTER in economics:
        cold = {t: e.cold_start_seconds for t, e in economics.items()}
        infeasible = {t: "not feasible" for t in SERVERLESS if t not in economics}
        fall_through = zero_answer(
            workload.spec, cold, SERVERLESS, infeasible, actuators=Actuators(zero_fall_through=True)
        ).target

    def cluster(accelerator: AcceleratorOption | None, levels: list[int]) -> list[Mode]:
        out = [Mode(TargetName.CLUSTER, level, accelerator) for level in levels]
        if activator is not None:
            out.append(Mode(TargetName.CLUSTER, 0, accelerator, activator))
            if fall_through is not None:
                out.append(Mode(TargetName.CLUSTER, 0, accelerator, activator, fall_through=fall_through))
        # base plus overflow: below the top level (holding the peak needs no overflow); on a fleet of hundreds of
        # replicas (levels not exact) left out: thousands of modes, each a simulated day (bench/README.md)
        exact = len(levels) <= _EXACT_LEVELS
        for level in levels[1:-1] if exact else []:
            out += [
                Mode(TargetName.CLUSTER, level, accelerator, overflow=t, overflow_warm=w)
                for t in spill_targets
                for w in (0, 1)
            ]
        return out

    for t, econ in economics.items():
        first_only = len(options) == 1 and options[0].option.key() == workload.spec.accelerator.key()
        if t is TargetName.CLUSTER and options and not first_only:
            for o in options:
                modes += cluster(o.option, _levels(o.econ, workload, o.speed))
        elif t is TargetName.CLUSTER:
            modes += cluster(None, _levels(econ, workload))
        else:
            modes += [Mode(t, level) for level in _levels(econ, workload)]
    return modes


def undominated(options: Sequence[ClusterOption]) -> list[ClusterOption]:
    """The accelerators the optimum needs: one that behaves exactly like another (same speed, slots, cold start,
    lead and caps) but costs more per replica-second runs every plan the same and bills more, so it is left out
    (ties keep the earlier in the spec's order)."""
    kept: dict[tuple[float, int, float, float, int, int], ClusterOption] = {}
    for o in options:
        e = o.econ
        key = (o.speed, e.concurrency, e.cold_start_seconds, e.provision_seconds, e.floor_instances, e.max_instances)
        best = kept.get(key)
        if best is None or e.instance_usd_per_second < best.econ.instance_usd_per_second:
            kept[key] = o
    return [o for o in options if any(o is k for k in kept.values())]


def _transition_costs(modes: list[Mode], econ_of: EconOf, drain_seconds: float) -> tuple[FloatArray, FloatArray]:
    """(within-target capacity changes, cross-target migrations) in USD, inf where not that kind."""
    m = len(modes)
    same = np.full((m, m), np.inf)
    cross = np.full((m, m), np.inf)

    def start_cost(mode: Mode, count: int) -> float:
        econ = econ_of(mode)
        if count <= 0:
            return 0.0
        if econ.billing is Billing.REPLICA:
            return count * econ.instance_usd_per_second * econ.cold_start_seconds
        if econ.billing is Billing.INSTANCE_BASED:
            return count * econ.instance_usd_per_second * econ.cold_start_seconds
        return count * (econ.cold_start_usd + econ.ping_usd)

    for i, a in enumerate(modes):
        for j, b in enumerate(modes):
            if a.place == b.place:
                if b.level >= a.level:
                    same[i, j] = start_cost(b, b.level - a.level)
                else:
                    econ = econ_of(a)
                    tail = 0.0
                    if econ.billing is Billing.INSTANCE_BASED:
                        # released warm instances stay billed until the keep-alive reclaims them
                        tail = (a.level - b.level) * econ.instance_usd_per_second * (econ.keep_alive_seconds or 0.0)
                    same[i, j] = tail
            else:
                src = econ_of(a)
                drain = 0.0
                if src.billing in (Billing.REPLICA, Billing.INSTANCE_BASED):
                    drain = max(a.level, 1) * src.instance_usd_per_second * drain_seconds
                cross[i, j] = start_cost(b, max(1, b.level)) + drain
    return same, cross


@dataclass(frozen=True)
class _Tables:
    cost: FloatArray
    """(modes, steps) USD."""
    misses: FloatArray
    """(modes, steps)."""


def _tables(
    workload: SimWorkload,
    modes: list[Mode],
    economics: dict[TargetName, TargetEconomics],
    price_book: PriceBook,
    warmup_seconds: float = 0.0,
) -> _Tables:
    steps = workload.requests.steps
    cost = np.zeros((len(modes), steps))
    misses = np.zeros((len(modes), steps))
    for i, mode in enumerate(modes):
        result = simulate(workload, _HoldMode(mode), price_book, economics=economics, warmup_seconds=warmup_seconds)
        cost[i] = result.cost_per_step
        misses[i] = result.misses_per_step
    return _Tables(cost, misses)


def _runs(tables: _Tables) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Start step and length of each run of steps whose cost and misses are the same in every mode."""
    steps = tables.cost.shape[1]
    if steps == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    same = np.all(tables.cost[:, 1:] == tables.cost[:, :-1], axis=0) & np.all(
        tables.misses[:, 1:] == tables.misses[:, :-1], axis=0
    )
    starts = np.concatenate([[0], np.flatnonzero(~same) + 1]).astype(np.int64)
    lengths = np.diff(np.concatenate([starts, [steps]])).astype(np.int64)
    return starts, lengths


def _dp(
    tables: _Tables, same: FloatArray, cross: FloatArray, gap_steps: int, lambdas: FloatArray
) -> tuple[npt.NDArray[np.int64], FloatArray, FloatArray]:
    """Plans (lambdas, steps) of mode indices, with their DP cost and misses, for every multiplier at once.

    State: (mode, steps since the last migration capped at ``gap_steps``); a migration needs the cap reached.
    Steps are taken in runs of identical columns (long idle stretches): modes change at the start of a run (on
    constant costs a change later in the run cannot be cheaper).
    """
    m, steps = tables.cost.shape
    big = np.float64(1e30)
    n_l = lambdas.size
    d = max(1, gap_steps)
    starts, lengths = _runs(tables)
    runs = starts.size
    cost_runs = tables.cost[:, starts] * lengths[None, :]
    miss_runs = tables.misses[:, starts] * lengths[None, :]
    stage = cost_runs[None, :, :] + lambdas[:, None, None] * miss_runs[None, :, :]  # (L, M, J)
    value = np.full((n_l, m, d + 1), big)
    value[:, :, min(d, int(lengths[0]) - 1 + d)] = stage[:, :, 0]
    back_mode = np.zeros((runs, n_l, m, d + 1), dtype=np.int16)
    back_gap = np.zeros((runs, n_l, m, d + 1), dtype=np.int8)
    same_b = np.where(np.isfinite(same), same, big)[None, :, :]
    cross_b = np.where(np.isfinite(cross), cross, big)[None, :, :]
    for j in range(1, runs):
        w = int(lengths[j])
        new = np.full((n_l, m, d + 1), big)
        for g in range(d + 1):
            if not (value[:, :, g] < big).any():
                continue
            # stay on the target (capacity may change at the run's start)
            g_end = min(d, g + w)
            cand = value[:, :, g][:, :, None] + same_b  # (L, M_from, M_to)
            arg = np.argmin(cand, axis=1)
            best = np.take_along_axis(cand, arg[:, None, :], axis=1)[:, 0, :]
            better = best < new[:, :, g_end]
            new[:, :, g_end] = np.where(better, best, new[:, :, g_end])
            back_mode[j, :, :, g_end] = np.where(better, arg, back_mode[j, :, :, g_end])
            back_gap[j, :, :, g_end] = np.where(better, g, back_gap[j, :, :, g_end])
        # migrate at the run's start: needs the gap, restarts it
        g_end = min(d, w - 1)
        cand = value[:, :, d][:, :, None] + cross_b
        arg = np.argmin(cand, axis=1)
        best = np.take_along_axis(cand, arg[:, None, :], axis=1)[:, 0, :]
        better = best < new[:, :, g_end]
        new[:, :, g_end] = np.where(better, best, new[:, :, g_end])
        back_mode[j, :, :, g_end] = np.where(better, arg, back_mode[j, :, :, g_end])
        back_gap[j, :, :, g_end] = np.where(better, d, back_gap[j, :, :, g_end])
        value = new + stage[:, :, j][:, :, None]
    flat = value.reshape(n_l, -1)
    end = np.argmin(flat, axis=1)
    run_plans = np.zeros((n_l, runs), dtype=np.int64)
    mode_idx = end // (d + 1)
    gap_idx = end % (d + 1)
    rows = np.arange(n_l)
    for j in range(runs - 1, -1, -1):
        run_plans[:, j] = mode_idx
        if j > 0:
            prev_mode = back_mode[j, rows, mode_idx, gap_idx]
            prev_gap = back_gap[j, rows, mode_idx, gap_idx]
            mode_idx, gap_idx = prev_mode.astype(np.int64), prev_gap.astype(np.int64)
    plans = np.repeat(run_plans, lengths, axis=1)
    cost = tables.cost[plans, np.arange(steps)[None, :]].sum(axis=1)
    misses = tables.misses[plans, np.arange(steps)[None, :]].sum(axis=1)
    return plans, cost, misses


def _choose_plans(
    tables: _Tables, same: FloatArray, cross: FloatArray, gap_steps: int, budget: int
) -> list[npt.NDArray[np.int64]]:
    """Candidate plans, cheapest first, whose DP misses fit the budget (the fewest-miss plan when none does)."""
    plans, _, misses = _dp(tables, same, cross, gap_steps, _LAMBDAS)
    fitting = [i for i in range(_LAMBDAS.size) if misses[i] <= budget + 1e-9]
    if not fitting:
        return [plans[int(np.argmin(misses))]]
    first = fitting[0]
    candidates: list[npt.NDArray[np.int64]] = []
    if first > 0:
        # refine between the last multiplier that missed too much and the first that fits
        fine = np.geomspace(max(float(_LAMBDAS[first - 1]), 1e-9), float(_LAMBDAS[first]), 12)
        fine_plans, _, fine_misses = _dp(tables, same, cross, gap_steps, fine)
        candidates.extend(fine_plans[i] for i in range(fine.size) if fine_misses[i] <= budget + 1e-9)
    candidates.extend(plans[i] for i in fitting)
    return candidates


def optimum(
    workload: SimWorkload,
    economics: dict[TargetName, TargetEconomics],
    price_book: PriceBook,
    warmup_seconds: float = 0.0,
    router: RouterPlatform | None = None,
) -> WorkloadResult:
    """The cheapest per-step plan that meets the workload's SLO (or misses the least where none can).

    The DP's tables come from runs that hold one mode; a plan that switches modes can see a little history the
    tables did not (a replica woken earlier or later), so a replay that misses more than its plan expected feeds
    its misses back into the tables and the DP runs again (a few rounds). The cheapest mode held throughout that
    meets the SLO is always a candidate, so the optimum never misses where a fixed placement would not.

    ``router``: the scenario's; where it runs the activator, the cluster's zero is also the live operator's.
    """
    step = workload.requests.step_seconds
    options = undominated(cluster_options(workload.spec, price_book)) if TargetName.CLUSTER in economics else []
    econ_of = econ_lookup(economics, options)
    activator = None
    if router is not None and router.activator:
        activator = Activator(
            router.wake_poll_seconds,
            workload.spec.slo.tolerable_cold_start(),
            release_after_seconds=router.wake_keep_seconds,
        )
    modes = workload_modes(economics, workload, options, activator)
    tables = _tables(workload, modes, economics, price_book, warmup_seconds)
    drain = price_book.migration.drain_seconds
    same, cross = _transition_costs(modes, econ_of, drain)
    lead = max(econ_of(m).provision_seconds for m in modes)
    gap_steps = math.ceil((lead + drain) / step)
    scored = int(workload.requests.per_step()[round(warmup_seconds / step) :].sum())
    budget = math.floor((1.0 - workload.spec.slo.attainment) * scored + 1e-9)

    best: WorkloadResult | None = None

    def consider(result: WorkloadResult) -> None:
        nonlocal best
        fits = result.misses <= budget
        if best is None:
            best = result
            return
        best_fits = best.misses <= budget
        if (fits and (not best_fits or result.cost_usd < best.cost_usd)) or (
            not fits and not best_fits and result.misses < best.misses
        ):
            best = result

    # the cheapest mode held throughout that fits: its replay is its own table, exactly
    held_misses = tables.misses.sum(axis=1)
    held_cost = tables.cost.sum(axis=1)
    held = [i for i in range(len(modes)) if held_misses[i] <= budget]
    fallback = min(held, key=lambda i: held_cost[i]) if held else int(np.argmin(held_misses))
    consider(
        simulate(workload, _HoldMode(modes[fallback]), price_book, economics=economics, warmup_seconds=warmup_seconds)
    )

    def search(subset: list[int]) -> None:
        """The DP over ``subset`` of the modes, its best plans replayed (their misses fed back a few rounds)."""
        idx = np.asarray(subset, dtype=np.int64)
        sub = _Tables(tables.cost[idx].copy(), tables.misses[idx].copy())
        sub_same, sub_cross = same[np.ix_(idx, idx)], cross[np.ix_(idx, idx)]
        for _ in range(3):
            replayed_one = False
            for plan in _choose_plans(sub, sub_same, sub_cross, gap_steps, budget)[:2]:
                estimate = float(sub.cost[plan, np.arange(plan.size)].sum())
                if best is not None and best.misses <= budget and estimate >= best.cost_usd:
                    continue
                replay = simulate(
                    workload,
                    PlanPolicy([modes[int(idx[i])] for i in plan], econ_of, step),
                    price_book,
                    economics=economics,
                    warmup_seconds=warmup_seconds,
                )
                replayed_one = True
                consider(replay)
                if replay.misses <= budget:
                    break
                # what the tables missed: the replay's misses where it saw more than they expected
                steps = np.arange(plan.size)
                sub.misses[plan, steps] = np.maximum(sub.misses[plan, steps], replay.misses_per_step)
            else:
                if replayed_one:
                    continue
            break

    # the DP is a heuristic search (a Lagrangian relaxation, plans replayed a few rounds): more modes can lead it to
    # a plan whose replay misses more than its tables said, so the plans without burst spillover and the serverless
    # answer at zero are searched too, and the cheapest replay of either that fits wins (more actions never cost)
    basic = [i for i, m in enumerate(modes) if m.overflow is None and m.fall_through is None]
    search(basic)
    if len(basic) < len(modes):
        search(list(range(len(modes))))
    assert best is not None
    result: WorkloadResult = best
    result.policy = OptimumPolicy.name
    return result
