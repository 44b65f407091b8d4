"""``inference-placement run``: the operator process."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Optional

import typer

from inference_placement.controller.settings import OperatorSettings

__all__ = ["register", "run"]


def run(
    kubeconfig: Annotated[
        Optional[str], typer.Option(help="Kubeconfig path (default: in-cluster, then ~/.kube/config).")
    ] = None,
    namespace: Annotated[
        Optional[list[str]],
        typer.Option("--namespace", "-n", help="Watch only these namespaces (repeatable); default all."),
    ] = None,
    tick_seconds: Annotated[float, typer.Option(help="Period of the fleet-wide metrics + decision loop.")] = 30.0,
    price_book: Annotated[
        Optional[Path], typer.Option(help="Price book YAML (mounted ConfigMap); default: packaged.")
    ] = None,
    prometheus_url: Annotated[Optional[str], typer.Option(help="Prometheus base URL for traffic metrics.")] = None,
    promql_templates: Annotated[Optional[Path], typer.Option(help="PromQL templates YAML.")] = None,
    metrics_range_seconds: Annotated[
        int, typer.Option(help="Trailing window of metrics fetched each tick (seconds).")
    ] = OperatorSettings.metrics_range_seconds,
    metrics_step_seconds: Annotated[
        int, typer.Option(help="Resolution of that window (seconds).")
    ] = OperatorSettings.metrics_step_seconds,
    max_metrics_staleness_seconds: Annotated[
        float, typer.Option(help="Metrics older than this freeze placement (seconds).")
    ] = OperatorSettings.max_metrics_staleness_seconds,
    metrics_port: Annotated[int, typer.Option(help="Port of the operator's own /metrics (0 = off).")] = 9090,
    health_port: Annotated[int, typer.Option(help="Port of /healthz for liveness probes (0 = off).")] = 8081,
    peering: Annotated[
        Optional[str], typer.Option(help="kopf peering name for leader election; default standalone.")
    ] = None,
    config: Annotated[
        Optional[list[str]], typer.Option("--set", help="Target settings KEY=VALUE (repeatable).")
    ] = None,
    log_format: Annotated[
        str, typer.Option(help="json, or plain (one text line per record: time, logger, level, message).")
    ] = "json",
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the operator: watch InferenceWorkloads, decide their placement, move them."""
    from inference_placement.controller.runtime import run_operator

    extra: dict[str, str] = {}
    for item in config or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--set expects KEY=VALUE, got {item!r}")
        extra[key.strip()] = value.strip()
    settings = OperatorSettings(
        namespaces=tuple(namespace or ()),
        tick_seconds=tick_seconds,
        price_book_path=price_book,
        kubeconfig=kubeconfig,
        health_port=health_port,
        metrics_port=metrics_port,
        peering=peering,
        prometheus_url=prometheus_url,
        promql_templates_path=promql_templates,
        metrics_range_seconds=metrics_range_seconds,
        metrics_step_seconds=metrics_step_seconds,
        max_metrics_staleness_seconds=max_metrics_staleness_seconds,
        extra=extra,
    )
    asyncio.run(run_operator(settings, log_format=log_format, verbose=verbose))


def register(app: typer.Typer) -> None:
    app.command("run")(run)
