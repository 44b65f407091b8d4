"""Tables and plots of simulation and benchmark results (rich for the terminal; matplotlib, optional, for PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from inference_placement.policy.budget import MONTH_SECONDS
from inference_placement.sim.bench import BenchResult, RowResult
from inference_placement.sim.registry import OPTIMUM, OURS, POLICY_NAMES, SINGLE_PLATFORM_BASELINES
from inference_placement.sim.simulator import WorkloadResult

__all__ = ["bench_summary", "bench_table", "plot_simulation", "simulation_table", "print_bench"]

_TARGETS = ("cluster", "cloudrun", "lambda")


def _money(value: float) -> str:
    if value >= 100:
        return f"${value:,.0f}"
    if value >= 1:
        return f"${value:,.2f}"
    return f"${value:.4f}"


def simulation_table(results: list[WorkloadResult], title: str) -> Table:
    table = Table(title=title, show_lines=False)
    for column in ("policy", "cost", "$/month", "attainment", "meets SLO", "cold starts", "migrations", "placement"):
        table.add_column(column, justify="right" if column not in ("policy", "placement") else "left")
    for r in results:
        share = np.bincount(r.placement_per_step[r.placement_per_step >= 0], minlength=3)
        total = max(1, int(share.sum()))
        where = ", ".join(f"{_TARGETS[i]} {share[i] / total:.0%}" for i in range(3) if share[i])
        monthly = r.cost_usd / max(r.days * 86400.0, 1e-9) * MONTH_SECONDS
        table.add_row(
            r.policy,
            _money(r.cost_usd),
            _money(monthly),
            f"{r.attainment:.4%}",
            "yes" if r.meets_slo else "NO",
            str(r.cold_starts),
            str(r.migrations),
            where,
        )
    return table


def plot_simulation(
    results: list[WorkloadResult], requests_per_step: np.ndarray, step_seconds: float, path: Path, title: str
) -> None:
    """Traffic, placement and cumulative cost over time, one line per policy."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - depends on the optional extra
        raise RuntimeError("--plot needs matplotlib (pip install 'inference-placement[plot]')") from err
    hours = np.arange(requests_per_step.size) * step_seconds / 3600.0
    fig, axes = plt.subplots(3, 1, figsize=(11, 8), sharex=True, gridspec_kw={"height_ratios": [2, 1.4, 2]})
    axes[0].plot(hours, requests_per_step / step_seconds, color="black", linewidth=0.8)
    axes[0].set_ylabel("requests / s")
    axes[0].set_title(title)
    for offset, r in enumerate(results):
        placement = r.placement_per_step.astype(float)
        placement[placement < 0] = np.nan
        axes[1].step(hours, placement + 0.08 * (offset - len(results) / 2), where="post", label=r.policy, linewidth=1.0)
        axes[2].plot(hours, np.cumsum(r.cost_per_step), label=f"{r.policy} ({_money(r.cost_usd)})", linewidth=1.2)
    axes[1].set_yticks([0, 1, 2], list(_TARGETS))
    axes[1].set_ylabel("placement")
    axes[2].set_ylabel("cumulative cost (USD)")
    axes[2].set_xlabel("hours")
    axes[2].legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bench_table(row: RowResult) -> Table:
    table = Table(title=f"{row.trace} as {row.profile} ({row.workloads} workload(s), {row.seconds:.0f} s)")
    for column in (
        "policy",
        "cost",
        "x optimum",
        "attainment",
        "workloads meeting SLO",
        "migrations/wl-day",
        "cold starts",
    ):
        table.add_column(column, justify="left" if column == "policy" else "right")
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
    cheaper in aggregate than every single-platform baseline that meets the SLO."""
    table = Table(title=f"summary ({result.seconds:.0f} s, {result.jobs} worker(s))")
    for column in (
        "row",
        "ours x optimum",
        "ours workloads meeting SLO",
        "optimum meeting SLO",
        "baselines meeting SLO (cost)",
        "ours cheaper than those",
    ):
        table.add_column(column)
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
        )
    return table


def print_bench(result: BenchResult, console: Console) -> None:
    for row in result.rows:
        console.print(bench_table(row))
    console.print(bench_summary(result))
