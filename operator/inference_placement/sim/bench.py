"""The benchmark: every row of the scenario x every policy, on the same simulator, in one run.

Work is split per workload (every policy and the optimum of one workload run together in one task), so a row of
100 workloads spreads over the machine's cores; results are folded per row: cost, request-weighted attainment,
share of workloads that meet their own SLO, migrations, cold starts, and each policy's ratio to the optimum.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from inference_placement.api.spec import TargetName
from inference_placement.policy.economics import TargetEconomics
from inference_placement.sim.optimum import optimum
from inference_placement.sim.policies import DEFAULT_WINDOW_SECONDS
from inference_placement.sim.registry import CLAIRVOYANT, OPTIMUM, OURS, POLICY_NAMES, online_policies
from inference_placement.sim.scenario import RouterPlatform, Scenario, ScenarioError, load_scenario
from inference_placement.sim.simulator import SimPolicy, SimWorkload, WorkloadResult, feasible_economics, simulate
from inference_placement.sim.traces import MinuteTrace, RequestTrace, Trace, load_trace
from inference_placement.sim.workloads import profile_workloads

__all__ = [
    "BenchResult",
    "PolicyRow",
    "RowResult",
    "WorkloadOutcome",
    "run_bench",
    "run_workload",
    "DEFAULT_WARMUP_SECONDS",
]

DEFAULT_WARMUP_SECONDS = 300.0
"""Scoring starts after one default sustain window: every policy (the optimum too) has run and observed the
trace's first 5 minutes, unbilled and unscored, as an operator already running would have."""


@dataclass(frozen=True)
class WorkloadOutcome:
    """One policy on one workload (what the report needs; no per-step arrays)."""

    policy: str
    workload: str
    applicable: bool
    cost_usd: float = 0.0
    requests: int = 0
    misses: int = 0
    cold_starts: int = 0
    migrations: int = 0
    meets_slo: bool = True
    days: float = 0.0
    seconds: float = 0.0

    @classmethod
    def of(cls, result: WorkloadResult, seconds: float) -> WorkloadOutcome:
        return cls(
            policy=result.policy,
            workload=result.name,
            applicable=True,
            cost_usd=result.cost_usd,
            requests=result.requests,
            misses=result.misses,
            cold_starts=result.cold_starts,
            migrations=result.migrations,
            meets_slo=result.meets_slo,
            days=result.days,
            seconds=seconds,
        )


def _applicable(policy: SimPolicy, economics: dict[TargetName, TargetEconomics]) -> bool:
    check: Callable[[dict[TargetName, TargetEconomics]], bool] | None = getattr(policy, "applicable", None)
    return True if check is None else check(economics)


def run_workload(
    workload: SimWorkload,
    scenario: Scenario,
    window_seconds: float = DEFAULT_WINDOW_SECONDS,
    only: tuple[str, ...] | None = None,
    warmup_seconds: float = DEFAULT_WARMUP_SECONDS,
) -> list[WorkloadOutcome]:
    """Every policy and the optimum on one workload."""
    pb = scenario.price_book
    economics = feasible_economics(workload.spec, pb)
    out: list[WorkloadOutcome] = []
    for policy in online_policies(window_seconds, scenario.router):
        if only is not None and policy.name not in only:
            continue
        if not economics or not _applicable(policy, economics):
            out.append(WorkloadOutcome(policy=policy.name, workload=workload.name, applicable=False))
            continue
        began = time.perf_counter()
        result = simulate(workload, policy, pb, economics=economics, warmup_seconds=warmup_seconds)
        out.append(WorkloadOutcome.of(result, time.perf_counter() - began))
    if only is None or OPTIMUM in only:
        began = time.perf_counter()
        if economics:
            result = optimum(workload, economics, pb, warmup_seconds=warmup_seconds, router=scenario.router)
            out.append(WorkloadOutcome.of(result, time.perf_counter() - began))
        else:
            out.append(WorkloadOutcome(policy=OPTIMUM, workload=workload.name, applicable=False))
    return out


@dataclass
class PolicyRow:
    name: str
    applicable: bool = True
    cost_usd: float = 0.0
    requests: int = 0
    misses: int = 0
    workloads: int = 0
    meeting: int = 0
    migrations: int = 0
    cold_starts: int = 0
    workload_days: float = 0.0
    seconds: float = 0.0
    not_applicable: int = 0

    def add(self, o: WorkloadOutcome) -> None:
        if not o.applicable:
            self.not_applicable += 1
            self.applicable = False
            return
        self.cost_usd += o.cost_usd
        self.requests += o.requests
        self.misses += o.misses
        self.workloads += 1
        self.meeting += int(o.meets_slo)
        self.migrations += o.migrations
        self.cold_starts += o.cold_starts
        self.workload_days += o.days
        self.seconds += o.seconds

    @property
    def attainment(self) -> float:
        return 1.0 - self.misses / self.requests if self.requests else 1.0

    @property
    def workloads_meeting_slo(self) -> float:
        return self.meeting / self.workloads if self.workloads else 0.0

    @property
    def migrations_per_workload_day(self) -> float:
        return self.migrations / self.workload_days if self.workload_days else 0.0


@dataclass
class RowResult:
    trace: str
    profile: str
    workloads: int
    policies: dict[str, PolicyRow] = field(default_factory=dict)
    seconds: float = 0.0

    def ratio(self, name: str) -> float | None:
        opt = self.policies.get(OPTIMUM)
        row = self.policies.get(name)
        if opt is None or row is None or not row.applicable or not opt.applicable or opt.cost_usd <= 0:
            return None
        return row.cost_usd / opt.cost_usd

    def to_json(self) -> dict[str, object]:
        policies: dict[str, object] = {}
        for name in POLICY_NAMES:
            row = self.policies.get(name)
            if row is None:
                continue
            if not row.applicable:
                policies[name] = {
                    "cost_usd": None,
                    "attainment": None,
                    "workloads_meeting_slo": None,
                    "migrations": None,
                    "ratio_to_optimum": None,
                    "not_applicable": f"infeasible for {row.not_applicable} of {self.workloads} workloads",
                }
                continue
            policies[name] = {
                "cost_usd": round(row.cost_usd, 6),
                "attainment": round(row.attainment, 6),
                "workloads_meeting_slo": round(row.workloads_meeting_slo, 6),
                "migrations": row.migrations,
                "migrations_per_workload_day": round(row.migrations_per_workload_day, 4),
                "cold_starts": row.cold_starts,
                "requests": row.requests,
                "ratio_to_optimum": round(r, 4) if (r := self.ratio(name)) is not None else None,
                "cpu_seconds": round(row.seconds, 1),
            }
        out: dict[str, object] = {
            "trace": self.trace,
            "profile": self.profile,
            "workloads": self.workloads,
            "policies": policies,
        }
        split = self.gap_split()
        if split is not None:
            out["gap"] = {k: round(v, 4) for k, v in zip(("forecast", "structure"), split, strict=True)}
        return out

    def gap_split(self) -> tuple[float, float] | None:
        """``ours / optimum`` as (``ours / clairvoyant``: the price of not knowing the future, ``clairvoyant /
        optimum``: the policy's structure), whose product it is; None without the clairvoyant line."""
        ours, seer = self.policies.get(OURS), self.policies.get(CLAIRVOYANT)
        structure = self.ratio(CLAIRVOYANT)
        if ours is None or seer is None or structure is None or seer.cost_usd <= 0 or not ours.applicable:
            return None
        return ours.cost_usd / seer.cost_usd, structure


@dataclass
class BenchResult:
    scenario: str
    rows: list[RowResult]
    seconds: float
    jobs: int
    warmup_seconds: float = 0.0
    step_seconds: float = 60.0
    window_seconds: float = DEFAULT_WINDOW_SECONDS
    router: RouterPlatform | None = None
    """The scenario's router (``platforms.router``): what ``ours`` could carry out."""

    def to_json(self) -> dict[str, object]:
        return {
            "scenario": self.scenario,
            "seconds": round(self.seconds, 1),
            "jobs": self.jobs,
            "step_seconds": self.step_seconds,
            "warmup_seconds": self.warmup_seconds,
            "policy_window_seconds": self.window_seconds,
            **({"router": self.router.model_dump()} if self.router is not None else {}),
            "rows": [r.to_json() for r in self.rows],
        }


_Task = tuple[str, str, float, int, int, float, float]
"""(scenario path, trace path, step seconds, row index, workload index, window seconds, warm-up seconds)."""


@lru_cache(maxsize=8)
def _cached_trace(path: str, step_seconds: float) -> Trace:
    return load_trace(Path(path), step_seconds=step_seconds)


@lru_cache(maxsize=2)
def _cached_scenario(path: str) -> Scenario:
    return load_scenario(Path(path))


def _task(args: _Task) -> tuple[int, list[WorkloadOutcome]]:
    scenario_path, trace_path, step_seconds, row_index, workload_index, window_seconds, warmup_seconds = args
    scenario = _cached_scenario(scenario_path)
    trace = _cached_trace(trace_path, step_seconds)
    workloads = _row_workloads(scenario, row_index, trace)
    return row_index, run_workload(workloads[workload_index], scenario, window_seconds, warmup_seconds=warmup_seconds)


@lru_cache(maxsize=8)
def _row_workloads_cached(scenario_path: str, row_index: int, trace_path: str, step: float) -> list[SimWorkload]:
    scenario = _cached_scenario(scenario_path)
    row = scenario.benchmark[row_index]
    sample = None
    if row.service_sample is not None:
        sample_path = Path(row.service_sample)
        if not sample_path.is_absolute():
            # under the same traces directory as the row's trace
            sample_path = Path(trace_path).parents[len(Path(row.trace).parts) - 1] / sample_path
        loaded = _cached_trace(str(sample_path), step)
        if not isinstance(loaded, RequestTrace):
            raise ScenarioError(f"{scenario_path}: benchmark[{row_index}].service_sample: not a per-request trace")
        sample = loaded
    return profile_workloads(
        _cached_trace(trace_path, step), scenario.profiles[row.profile], scenario.price_book, sample=sample
    )


def _row_workloads(scenario: Scenario, row_index: int, trace: Trace) -> list[SimWorkload]:
    return _row_workloads_cached(scenario.source, row_index, trace.path, trace.step_seconds)


def run_bench(
    scenario_path: Path,
    traces_dir: Path,
    *,
    jobs: int | None = None,
    step_seconds: float = 60.0,
    window_seconds: float = DEFAULT_WINDOW_SECONDS,
    warmup_seconds: float = DEFAULT_WARMUP_SECONDS,
    progress: Callable[[int, int, str], None] | None = None,
) -> BenchResult:
    """Run every benchmark row of the scenario with every policy; ``progress(done, total, label)`` per workload."""
    began = time.perf_counter()
    scenario = _cached_scenario(str(scenario_path))
    tasks: list[_Task] = []
    rows: list[RowResult] = []
    for index, row in enumerate(scenario.benchmark):
        trace_path = traces_dir / row.trace
        trace = _cached_trace(str(trace_path), step_seconds)
        count = trace.workloads
        rows.append(RowResult(trace=row.trace, profile=row.profile, workloads=count))
        tasks.extend(
            (str(scenario_path), str(trace_path), step_seconds, index, w, window_seconds, warmup_seconds)
            for w in range(count)
        )
    # the largest workloads first, so the pool never waits on one long task at the end
    sizes = {t: _size(t) for t in tasks}
    tasks.sort(key=lambda t: -sizes[t])
    workers = jobs if jobs is not None else min(len(tasks), max(1, (os.cpu_count() or 1)))
    done = 0
    row_started = [began] * len(rows)
    results: Iterator[tuple[int, list[WorkloadOutcome]]]
    if workers <= 1:
        results = (_task(t) for t in tasks)
        executor = None
    else:
        executor = ProcessPoolExecutor(max_workers=workers)
        results = executor.map(_task, tasks, chunksize=1)
    try:
        for row_index, outcomes in results:
            result_row = rows[row_index]
            for o in outcomes:
                result_row.policies.setdefault(o.policy, PolicyRow(o.policy)).add(o)
            done += 1
            result_row.seconds = time.perf_counter() - row_started[row_index]
            if progress is not None:
                progress(done, len(tasks), f"{result_row.trace} / {result_row.profile}")
    finally:
        if executor is not None:
            executor.shutdown()
    return BenchResult(
        scenario=str(scenario_path),
        rows=rows,
        seconds=time.perf_counter() - began,
        jobs=workers,
        warmup_seconds=warmup_seconds,
        step_seconds=step_seconds,
        window_seconds=window_seconds,
        router=scenario.router,
    )


def _size(task: _Task) -> int:
    _, trace_path, step, _, w, _, _ = task
    trace = _cached_trace(trace_path, step)
    if isinstance(trace, MinuteTrace):
        return int(trace.counts[w].sum()) + trace.steps * 40
    return int(trace.arrivals_seconds.size) + trace.steps * 40
