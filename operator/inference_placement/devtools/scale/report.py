"""The results as JSON (``{"runs": [...]}``) and a table with the ratio of each figure to the smallest run."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from inference_placement.commandline import compact_table
from inference_placement.devtools.scale.bench import RunResult

__all__ = ["TARGETS", "render_table", "results_json", "target_verdicts", "RSS_LIMIT_MB", "TICK_CPU_LIMIT_SECONDS"]

RSS_LIMIT_MB = 500.0
TICK_CPU_LIMIT_SECONDS = 2.0
TARGETS = (
    f"RSS < {RSS_LIMIT_MB:.0f} MB",
    f"tick CPU < {TICK_CPU_LIMIT_SECONDS:g} s",
    "queries/tick independent of N",
    "0 writes/tick at steady state",
)


def results_json(results: Sequence[RunResult]) -> dict[str, Any]:
    return {"runs": [r.to_json() for r in results]}


def target_verdicts(results: Sequence[RunResult]) -> dict[str, bool]:
    if not results:
        return {}
    queries = {r.queries_per_tick for r in results}
    return {
        TARGETS[0]: all(r.rss_mb < RSS_LIMIT_MB for r in results),
        TARGETS[1]: all(r.tick_cpu_seconds < TICK_CPU_LIMIT_SECONDS for r in results),
        TARGETS[2]: len(queries) == 1,
        TARGETS[3]: all(r.writes_per_tick == 0 for r in results),
    }


def _ratio(value: float, base: float) -> str:
    if not (math.isfinite(value) and math.isfinite(base)) or base == 0:
        return "-" if value == base else "n/a"
    return f"x{value / base:.2f}"


def render_table(results: Sequence[RunResult], console: Console | None = None) -> Table:
    table = compact_table(
        "inference-placement bench-scale (ratios to the smallest run)", "workloads", right=["workloads"]
    )
    columns = (
        ("RSS MB", "rss_mb", "{:.0f}"),
        ("tick CPU s", "tick_cpu_seconds", "{:.3f}"),
        ("queries/tick", "queries_per_tick", "{:g}"),
        ("writes/tick", "writes_per_tick", "{:g}"),
        ("react s", "react_seconds", "{:.1f}"),
    )
    for title, _, _ in columns:
        table.add_column(title, justify="right", overflow="fold")
        table.add_column("ratio", justify="right", style="dim", overflow="fold")
    table.add_column("tick wall s", justify="right", overflow="fold")
    base = results[0] if results else None
    for r in results:
        cells = [f"{r.workloads:,}"]
        for _, attr, fmt in columns:
            value = float(getattr(r, attr))
            cells.append(fmt.format(value))
            cells.append(_ratio(value, float(getattr(base, attr))) if base is not None else "")
        cells.append(f"{r.tick_wall_seconds:.2f}")
        table.add_row(*cells)
    if console is not None:
        console.print(table)
        for target, ok in target_verdicts(results).items():
            console.print(f"  {'[green]met[/]' if ok else '[red]NOT met[/]'}  {target}")
    return table
