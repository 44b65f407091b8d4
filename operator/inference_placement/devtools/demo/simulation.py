"""The demo's trace replay: a real production trace through the same ``policy.decide`` the operator runs.

Every decision to migrate is printed as it happens in trace time, with its reason in numbers, followed by the cost
and SLO of the same traffic under every baseline and the offline optimum. Where ``../shared/traces`` is absent a
synthetic day (quiet night, busy day, a burst) is used instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from inference_placement.api.spec import InferenceWorkloadSpec, TargetName
from inference_placement.policy.decide import Decision
from inference_placement.policy.price_book import default_price_book
from inference_placement.sim.optimum import optimum as run_optimum
from inference_placement.sim.policies import OursPolicy
from inference_placement.sim.registry import OURS, online_policies
from inference_placement.sim.report import simulation_table
from inference_placement.sim.simulator import Control, Observation, WorkloadResult, feasible_economics, simulate
from inference_placement.sim.traces import MinuteTrace, Trace, load_trace, minute_trace_from_rates
from inference_placement.sim.workloads import spec_workloads

__all__ = ["pick_row", "replay_trace", "synthetic_day", "DEFAULT_TRACE", "TARGET_ORDER"]

DEFAULT_TRACE = Path("..") / "shared" / "traces" / "azure-functions-2019" / "100_inv.csv"
TARGET_ORDER = (TargetName.CLUSTER, TargetName.CLOUDRUN, TargetName.LAMBDA)


class _RecordingOurs(OursPolicy):
    """``ours`` unchanged, remembering when each decision was taken (for printing only)."""

    def __init__(self) -> None:
        super().__init__()
        self.timeline: list[tuple[float, TargetName | None, Decision]] = []
        self._last_placement: TargetName | None = None

    def tick(self, obs: Observation) -> Sequence[Control]:
        self.keep_decisions = True
        controls = super().tick(obs)
        decision = self.decisions[-1]
        if decision.target is not None and (decision.migrate or decision.target is not obs.placement):
            if obs.placement is not decision.target and decision.target is not self._last_placement:
                self.timeline.append((obs.t, obs.placement, decision))
                self._last_placement = decision.target
        return controls


def synthetic_day(step_seconds: float = 60.0) -> MinuteTrace:
    """A deterministic day: near-idle night, a busy working day, a short evening burst (requests per second)."""
    minutes = np.arange(1440)
    day = 6.0 * np.clip(np.sin((minutes - 360) / 1440 * 2 * np.pi), 0, None) ** 2
    night = np.where((minutes % 97) == 0, 0.05, 0.0)
    burst = np.where((minutes > 1200) & (minutes < 1215), 12.0, 0.0)
    rates = day + night + burst
    return minute_trace_from_rates("synthetic-day", rates, step_seconds, datetime(2026, 1, 5, tzinfo=UTC))


def pick_row(trace: Trace, band_rps: tuple[float, float] | None) -> int:
    """The row whose hourly rate crosses the workload's offload/reclaim band most often (the kind of traffic a
    fixed rule of thumb gets wrong); without a band, the row whose hourly volume varies most."""
    if not isinstance(trace, MinuteTrace):
        return 0
    steps_per_hour = max(1, int(3600 // trace.step_seconds))
    best, best_score = 0, -1.0
    for row in range(trace.workloads):
        counts = trace.counts[row]
        usable = len(counts) // steps_per_hour * steps_per_hour
        hourly_rps = counts[:usable].reshape(-1, steps_per_hour).sum(axis=1) / 3600.0
        if hourly_rps.size == 0 or hourly_rps.mean() <= 0:
            continue
        if band_rps is not None:
            low, high = band_rps
            side = np.where(hourly_rps < low, -1, np.where(hourly_rps > high, 1, 0))
            outside = side[side != 0]
            score = float(np.count_nonzero(np.diff(outside))) + float(hourly_rps.sum()) * 1e-9
        else:
            score = float(hourly_rps.std() / hourly_rps.mean())
        if score > best_score:
            best, best_score = row, score
    return best


def _clock(seconds: float) -> str:
    return f"{int(seconds // 3600):02d}:{int(seconds % 3600 // 60):02d}"


def replay_trace(
    root: Path, trace_path: Path | None, row: int | None, console: Any, example: str = "embedding-l4-cloudrun.yaml"
) -> dict[str, Any]:
    doc = yaml.safe_load((root / "examples" / example).read_text())
    spec = InferenceWorkloadSpec.model_validate(doc["spec"])
    price_book = default_price_book()
    path = trace_path or (root / DEFAULT_TRACE)
    if path.exists():
        trace = load_trace(path, step_seconds=60.0)
        thresholds = spec.placement.thresholds
        band = (
            (thresholds.offload_below_rps, thresholds.reclaim_above_rps)
            if thresholds.offload_below_rps is not None and thresholds.reclaim_above_rps is not None
            else None
        )
        chosen = pick_row(trace, band) if row is None else row
        source = f"{path.name} row {chosen}"
    else:
        trace = synthetic_day()
        chosen = 0
        source = "a synthetic day (../shared/traces not found)"
    workload = spec_workloads(trace, spec, rows=[chosen])[0]
    economics = feasible_economics(spec, price_book)
    console.print(
        f"replaying {source}: {workload.requests.count:,} requests over "
        f"{workload.requests.steps * workload.requests.step_seconds / 3600:.0f} h as '{doc['metadata']['name']}' "
        f"(allowed: {', '.join(t.value for t in spec.placement.allowed_targets)})"
    )
    ours = _RecordingOurs()
    results: list[WorkloadResult] = [simulate(workload, ours, price_book, economics=economics)]
    for timestamp, source_target, decision in ours.timeline:
        origin = source_target.value if source_target is not None else "nothing"
        assert decision.target is not None
        console.print(
            f"[cyan]{_clock(timestamp)}[/cyan]  {origin} -> [bold]{decision.target.value}[/bold]: {decision.reason}"
        )
    for policy in (p for p in online_policies() if p.name != OURS):  # ours ran above, recording its decisions
        check = getattr(policy, "applicable", None)
        if check is None or check(economics):
            results.append(simulate(workload, policy, price_book, economics=economics))
    results.append(run_optimum(workload, economics, price_book))
    console.print(simulation_table(results, f"{source}: cost and SLO of the same traffic under every policy"))

    mine = results[0]
    by_target: dict[str, float] = {}
    for index, target in enumerate(TARGET_ORDER):
        mask = mine.placement_per_step == index
        spent = float(mine.cost_per_step[mask].sum())
        if spent > 0:
            by_target[target.value] = round(spent, 4)
    return {
        "simulated": True,
        "trace": source,
        "requests": mine.requests,
        "slo_misses": mine.misses,
        "attainment": round(mine.attainment, 6),
        "migrations": [
            {
                "from": src.value if src is not None else None,
                "to": d.target.value if d.target is not None else None,
                "reason": d.reason,
                "seconds": round(t, 1),
            }
            for t, src, d in ours.timeline
        ],
        "cost_usd_by_target": by_target,
        "cost_usd_by_policy": {r.policy: round(r.cost_usd, 4) for r in results},
    }
