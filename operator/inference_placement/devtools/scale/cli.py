"""``inference-placement bench-scale``: registered by ``inference_placement.cli``; heavy imports inside the command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from inference_placement.commandline import CommandError, apiserver_error, require_kubeconfig

__all__ = ["register", "bench_scale"]


def bench_scale(
    workloads: Annotated[
        str, typer.Option(help="Fleet sizes to run, comma-separated; ratios are to the first.")
    ] = "1000,5000,10000",
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the results here as JSON.")] = None,
    kubeconfig: Annotated[
        Optional[str], typer.Option(help="Kubeconfig of the apiserver to load (default: $KUBECONFIG).")
    ] = None,
    tick_seconds: Annotated[float, typer.Option(help="The operator's --tick-seconds.")] = 30.0,
    steady_ticks: Annotated[int, typer.Option(help="Ticks measured at steady state.")] = 3,
    future_seconds: Annotated[
        Optional[float],
        typer.Option(help="Backfilled data after now (default 900 s + 0.3 s per workload + 1.5 tick periods a tick)."),
    ] = None,
    workdir: Annotated[
        Optional[Path], typer.Option(help="Scratch directory (TSDBs, logs); default a temp dir.")
    ] = None,
    keep_namespace: Annotated[bool, typer.Option(help="Leave the workloads behind (debugging).")] = False,
    wait_history: Annotated[
        bool,
        typer.Option(help="Measure steady ticks once the day of history is fetched (~20 ticks after a start)."),
    ] = True,
    kwok_nodes: Annotated[
        int,
        typer.Option(
            help="Create this many fake GPU nodes (kwok must run: e2e/local-cluster.sh up --kwok) and give the "
            "workloads GPUs (time-sliced L4, MIG A100, shared T4, whole H100); 0: CPU workloads, real nodes."
        ),
    ] = 0,
    deployments_up_to: Annotated[
        int,
        typer.Option(
            help="Sizes up to this run the real cluster target (Deployments; Pods scheduled onto the fake nodes); "
            "larger sizes cluster.dryRun. Needs --kwok-nodes."
        ),
    ] = 0,
    trace_memory: Annotated[
        bool,
        typer.Option(
            help="Trace the operators' allocations (PYTHONTRACEMALLOC) and record the leader's largest live "
            "allocation sites at the end of the steady ticks (memory_report). Tracing about doubles the CPU: a "
            "run for memory, not for CPU figures.",
        ),
    ] = False,
    replicas: Annotated[
        int,
        typer.Option(
            min=1,
            max=2,
            help="Operator processes with leader election (2: the leader is measured as with one, and the standby's "
            "RSS and CPU-seconds per minute are reported).",
        ),
    ] = 1,
    wait_cleanup: Annotated[
        bool, typer.Option(help="Wait until each size's namespace is gone before the next.")
    ] = True,
) -> None:
    """Measure the operator at fleet scale on the real apiserver: RSS, CPU and queries per tick, steady writes,
    and the reaction to a fleet-wide traffic shift. Runs `inference-placement run`, with `--set cluster.dryRun=true`
    unless the size is at most --deployments-up-to (then real Deployments on a KWOK GPU fleet)."""
    import asyncio
    import json
    import signal

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from inference_placement.devtools.scale.bench import BenchConfig, BenchError, RunResult, run_bench
    from inference_placement.devtools.scale.report import render_table, results_json

    try:
        sizes = [int(part) for part in workloads.split(",") if part.strip()]
    except ValueError as err:
        raise typer.BadParameter(f"--workloads expects comma-separated integers, got {workloads!r}") from err
    if not sizes or any(n < 1 for n in sizes):
        raise typer.BadParameter("--workloads needs at least one size >= 1")
    if deployments_up_to and not kwok_nodes:
        raise typer.BadParameter("--deployments-up-to needs --kwok-nodes (real Pods only land on the fake GPU nodes)")
    require_kubeconfig(kubeconfig)
    console = Console(stderr=True)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("fleet sizes"),
        MofNCompleteColumn(),
        BarColumn(bar_width=20),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=True,
    )
    sizes_task = progress.add_task(f"{sizes[0]:,} workloads", total=len(sizes))
    config = BenchConfig(
        kubeconfig=kubeconfig,
        tick_seconds=tick_seconds,
        steady_ticks=steady_ticks,
        future_seconds=future_seconds,
        workdir=workdir,
        keep_namespace=keep_namespace,
        wait_history=wait_history,
        kwok_nodes=kwok_nodes,
        deployments_up_to=deployments_up_to,
        wait_cleanup=wait_cleanup,
        replicas=replicas,
        trace_memory=trace_memory,
        log=lambda text: console.log(text, markup=False),
    )

    def save(results: list[RunResult]) -> None:
        done = len(results)
        following = f"{sizes[done]:,} workloads" if done < len(sizes) else "done"
        progress.update(sizes_task, completed=done, description=following)
        if json_out is not None:
            json_out.write_text(json.dumps(results_json(results), indent=2) + "\n", encoding="utf-8")

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # unwinds run_bench's finally blocks: operator, Prometheus, namespace cleaned up

    signal.signal(signal.SIGTERM, stop)
    try:
        with progress:
            results = asyncio.run(run_bench(sizes, config, on_result=save))
    except BenchError as err:
        raise CommandError(f"bench-scale: {err}") from None
    except Exception as err:
        error = apiserver_error(err, "bench-scale")
        if error is None:
            raise
        raise error from None
    render_table(results, Console())


def register(app: typer.Typer) -> None:
    app.command("bench-scale")(bench_scale)
