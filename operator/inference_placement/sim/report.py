"""Tables and plots of simulation and benchmark results (rich for the terminal; matplotlib, optional, for PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from rich import box
from rich.console import Console
from rich.table import Table

from inference_placement.commandline import compact_table
from inference_placement.policy.budget import MONTH_SECONDS
from inference_placement.sim.bench import BenchResult, RowResult
from inference_placement.sim.registry import OPTIMUM, OURS, POLICY_NAMES, SINGLE_PLATFORM_BASELINES
from inference_placement.sim.simulator import FloatArray, WorkloadResult

__all__ = [
    "SLO_WINDOW_SECONDS",
    "bench_summary",
    "bench_table",
    "plot_simulation",
    "simulation_figure",
    "simulation_table",
    "simulation_verdict",
    "print_bench",
]

_TARGETS = ("cluster", "cloudrun", "lambda")


def _money(value: float) -> str:
    if value >= 100:
        return f"${value:,.0f}"
    if value >= 1:
        return f"${value:,.2f}"
    return f"${value:.4f}"


def simulation_table(results: list[WorkloadResult], title: str) -> Table:
    """One row per policy; fits 80 columns (headers wrap, a long policy name or placement folds: nothing is cut)."""
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, padding=(0, 1))
    table.add_column("policy", overflow="fold", min_width=12)
    for column in ("cost", "per\nmonth", "attained", "SLO\nmet", "cold\nstarts", "moves"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("placement", overflow="fold", min_width=8)
    for r in results:
        share = np.bincount(r.placement_per_step[r.placement_per_step >= 0], minlength=3)
        total = max(1, int(share.sum()))
        where = ", ".join(f"{_TARGETS[i]} {share[i] / total:.0%}" for i in range(3) if share[i])
        monthly = _monthly(r)
        table.add_row(
            r.policy,
            _money(r.cost_usd),
            _money(monthly),
            f"{r.attainment:.3%}",
            "yes" if r.meets_slo else "NO",
            str(r.cold_starts),
            str(r.migrations),
            where,
        )
    return table


def _monthly(result: WorkloadResult) -> float:
    return result.cost_usd / max(result.days * 86400.0, 1e-9) * MONTH_SECONDS


def simulation_verdict(results: list[WorkloadResult]) -> str:
    """One line, first in the output: what the operator's policy costs against the optimum and the cheapest fixed
    platform meeting the SLO, and whether it meets the SLO."""
    by_name = {r.policy: r for r in results}
    ours = by_name.get(OURS)
    if ours is None:
        return "verdict: the operator's policy did not run on this workload"
    best = by_name.get(OPTIMUM)
    ratio = f" ({ours.cost_usd / best.cost_usd:.2f}x the optimum)" if best and best.cost_usd > 0 else ""
    slo = "meets its SLO" if ours.meets_slo else "MISSES its SLO"
    fixed = [r for name in SINGLE_PLATFORM_BASELINES if (r := by_name.get(name)) is not None and r.meets_slo]
    cheapest = min(fixed, key=lambda r: r.cost_usd, default=None)
    versus = (
        f"; cheapest fixed platform meeting it: {cheapest.policy} {_money(_monthly(cheapest))}/month"
        if cheapest is not None
        else "; no fixed platform meets it"
    )
    return f"verdict: ours costs {_money(_monthly(ours))}/month{ratio} and {slo} ({ours.attainment:.3%}){versus}"


_TARGET_COLOURS = {"cluster": "#4c72b0", "cloudrun": "#55a868", "lambda": "#dd8452"}
SLO_WINDOW_SECONDS = 3600.0
"""The SLO panel's attainment is over the trailing hour of each step (the whole run's is in the legend)."""


def _runs(codes: npt.NDArray[np.int8]) -> list[tuple[int, int, int]]:
    """``(code, first step, length)`` of each run of equal codes."""
    out: list[tuple[int, int, int]] = []
    start = 0
    for i in range(1, codes.size + 1):
        if i == codes.size or codes[i] != codes[start]:
            out.append((int(codes[start]), start, i - start))
            start = i
    return out


def _trailing_attainment(result: WorkloadResult, window_steps: int) -> FloatArray:
    """1 - misses / requests over the trailing ``window_steps`` of each step (NaN where no request arrived)."""
    kernel = np.ones(window_steps)
    requests = np.convolve(result.requests_per_step, kernel)[: result.requests_per_step.size]
    misses = np.convolve(result.misses_per_step, kernel)[: result.misses_per_step.size]
    with np.errstate(invalid="ignore", divide="ignore"):
        share: FloatArray = np.where(requests > 0, 1.0 - misses / np.maximum(requests, 1e-12), np.nan)
    return share


def simulation_figure(
    results: list[WorkloadResult],
    requests_per_step: FloatArray,
    step_seconds: float,
    *,
    workload: str,
    subtitle: str,
    slo_attainment: float,
) -> Any:
    """The what-if as a matplotlib Figure: traffic; one labelled placement strip per policy; the SLO panel (each
    policy's attainment over the trailing hour against the spec's target); cumulative cost. Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    hours = np.arange(requests_per_step.size) * step_seconds / 3600.0
    step_hours = step_seconds / 3600.0
    fig, axes = plt.subplots(
        4,
        1,
        figsize=(11, 10 + 0.25 * len(results)),
        sharex=True,
        gridspec_kw={"height_ratios": [1.6, 0.35 * max(len(results), 1) + 0.4, 1.6, 1.6]},
    )
    traffic, strips, slo, cost = axes
    fig.suptitle(f"{workload}: where each policy places it, and what it costs", fontweight="bold")
    traffic.set_title(subtitle, fontsize=9)
    traffic.plot(hours, requests_per_step / step_seconds, color="black", linewidth=0.8)
    traffic.set_ylabel("requests / s")

    for row, r in enumerate(results):
        for code, first, length in _runs(r.placement_per_step):
            if code < 0:
                continue
            strips.broken_barh(
                [(first * step_hours, length * step_hours)],
                (row - 0.4, 0.8),
                facecolors=_TARGET_COLOURS[_TARGETS[code]],
            )
    strips.set_yticks(range(len(results)), [r.policy for r in results])
    strips.set_ylim(len(results) - 0.5, -0.5)
    strips.set_ylabel("placement")
    strips.legend(
        handles=[Patch(color=colour, label=target) for target, colour in _TARGET_COLOURS.items()],
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
        fontsize=8,
    )

    window = max(1, round(SLO_WINDOW_SECONDS / step_seconds))
    for r in results:
        slo.plot(hours, _trailing_attainment(r, window), label=f"{r.policy} ({r.attainment:.2%})", linewidth=1.0)
    slo.axhline(slo_attainment, color="red", linestyle="--", linewidth=1.0, label=f"SLO {slo_attainment:.2%}")
    slo.set_ylabel("SLO attainment\n(trailing hour)")
    slo.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))

    for r in results:
        cost.plot(hours, np.cumsum(r.cost_per_step), label=f"{r.policy} ({_money(r.cost_usd)})", linewidth=1.2)
    cost.set_ylabel("cumulative cost (USD)")
    cost.set_xlabel("hours")
    cost.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def plot_simulation(
    results: list[WorkloadResult],
    requests_per_step: FloatArray,
    step_seconds: float,
    path: Path,
    *,
    workload: str,
    subtitle: str,
    slo_attainment: float,
) -> None:
    """Write :func:`simulation_figure` to ``path`` (PNG). Needs matplotlib (the ``plot`` extra): the command checks
    for it before it simulates."""
    import matplotlib.pyplot as plt

    fig = simulation_figure(
        results, requests_per_step, step_seconds, workload=workload, subtitle=subtitle, slo_attainment=slo_attainment
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bench_table(row: RowResult) -> Table:
    numbers = ("cost", "x optimum", "attained", "workloads meeting SLO", "moves per wl-day", "cold starts")
    table = compact_table(
        f"{row.trace} as {row.profile} ({row.workloads} workload(s), {row.seconds:.0f} s)",
        "policy",
        *numbers,
        right=numbers,
    )
    for name in POLICY_NAMES:
        p = row.policies.get(name)
        if p is None:
            continue
        if not p.applicable:
            table.add_row(name, "n/a", "", "", f"infeasible for {p.not_applicable}", "", "")
            continue
        ratio = row.ratio(name)
        table.add_row(
            name,
            _money(p.cost_usd),
            f"{ratio:.2f}" if ratio is not None else "",
            f"{p.attainment:.3%}",
            f"{p.workloads_meeting_slo:.0%} ({p.meeting}/{p.workloads})",
            f"{p.migrations_per_workload_day:.2f}",
            str(p.cold_starts),
        )
    return table


def bench_summary(result: BenchResult) -> Table:
    """Per row, the targets of the issue: ours within 1.15x of the optimum, >= 99% of workloads meeting their SLO,
    cheaper in aggregate than every single-platform baseline that meets the SLO; and ``ours / optimum`` split into
    the price of not knowing the future (ours / the clairvoyant line) times the policy's structure (the clairvoyant
    line / the optimum)."""
    table = compact_table(
        f"summary ({result.seconds:.0f} s, {result.jobs} worker(s))",
        "row",
        "ours x optimum",
        "ours workloads meeting SLO",
        "optimum meeting SLO",
        "baselines meeting SLO (cost)",
        "ours cheaper than those",
        "gap: forecast x structure",
    )
    for row in result.rows:
        ours = row.policies.get(OURS)
        opt = row.policies.get(OPTIMUM)
        if ours is None or opt is None:
            continue
        meeting = []
        cheaper = True
        for name in SINGLE_PLATFORM_BASELINES:
            p = row.policies.get(name)
            if p is None or not p.applicable or p.workloads_meeting_slo < 0.99:
                continue
            meeting.append(f"{name} {_money(p.cost_usd)}")
            cheaper = cheaper and ours.cost_usd < p.cost_usd
        ratio = row.ratio(OURS)
        table.add_row(
            f"{row.trace} / {row.profile}",
            f"{ratio:.2f}" + (" ok" if ratio is not None and ratio <= 1.15 else " MISSED") if ratio else "",
            f"{ours.workloads_meeting_slo:.0%}" + (" ok" if ours.workloads_meeting_slo >= 0.99 else " MISSED"),
            f"{opt.workloads_meeting_slo:.0%}",
            ", ".join(meeting) or "none",
            ("yes" if cheaper else "NO") if meeting else "-",
            f"{split[0]:.2f} x {split[1]:.2f}" if (split := row.gap_split()) is not None else "",
        )
    return table


def print_bench(result: BenchResult, console: Console) -> None:
    for row in result.rows:
        console.print(bench_table(row))
    console.print(bench_summary(result))
