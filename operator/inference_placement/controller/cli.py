"""``inference-placement run``: the operator process.

Each flag's help and default come from the field of ``OperatorSettings`` it sets, and ``--set GROUP.KEY=VALUE``
options fill the nested groups (``controller/settings.py``; ``docs/settings-reference.md``).
"""

from __future__ import annotations

import asyncio
import enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import yaml

from inference_placement.commandline import CommandError, ExitCode, apiserver_error, one_line, require_kubeconfig
from inference_placement.controller.settings import OperatorSettings, SettingsError, build_settings

__all__ = ["LogFormat", "LogLevel", "register", "run", "settings_from_flags"]


class LogFormat(enum.StrEnum):
    """The operator's log lines: one JSON object each (fields: message, timestamp, severity, object), or text."""

    JSON = "json"
    PLAIN = "plain"


class LogLevel(enum.StrEnum):
    """``--log-level``: the least severe record the operator writes."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


def _help(field: str) -> str:
    return OperatorSettings.model_fields[field].description or ""


def _default(field: str) -> Any:
    return OperatorSettings.model_fields[field].default


def run(
    kubeconfig: Annotated[Optional[str], typer.Option(help=_help("kubeconfig"))] = None,
    namespace: Annotated[
        Optional[list[str]],
        typer.Option("--namespace", "-n", help="Watch only these namespaces (repeatable); default all."),
    ] = None,
    tick_seconds: Annotated[float, typer.Option(help=_help("tick_seconds"))] = _default("tick_seconds"),
    price_book: Annotated[Optional[Path], typer.Option(help=_help("price_book_path"))] = None,
    prometheus_url: Annotated[Optional[str], typer.Option(help=_help("prometheus_url"))] = None,
    promql_templates: Annotated[Optional[Path], typer.Option(help=_help("promql_templates_path"))] = None,
    metrics_range_seconds: Annotated[int, typer.Option(help=_help("metrics_range_seconds"))] = _default(
        "metrics_range_seconds"
    ),
    metrics_step_seconds: Annotated[int, typer.Option(help=_help("metrics_step_seconds"))] = _default(
        "metrics_step_seconds"
    ),
    max_metrics_staleness_seconds: Annotated[
        float, typer.Option(help=_help("max_metrics_staleness_seconds"))
    ] = _default("max_metrics_staleness_seconds"),
    metrics_port: Annotated[int, typer.Option(help=_help("metrics_port"))] = _default("metrics_port"),
    health_port: Annotated[int, typer.Option(help=_help("health_port"))] = _default("health_port"),
    peering: Annotated[Optional[str], typer.Option(help=_help("peering"))] = None,
    leader_elect: Annotated[bool, typer.Option(help=_help("leader_elect"))] = _default("leader_elect"),
    leader_election_namespace: Annotated[Optional[str], typer.Option(help=_help("leader_election_namespace"))] = None,
    leader_election_id: Annotated[str, typer.Option(help=_help("leader_election_id"))] = _default("leader_election_id"),
    leader_election_identity: Annotated[Optional[str], typer.Option(help=_help("leader_election_identity"))] = None,
    lease_duration_seconds: Annotated[float, typer.Option(help=_help("lease_duration_seconds"))] = _default(
        "lease_duration_seconds"
    ),
    renew_deadline_seconds: Annotated[float, typer.Option(help=_help("renew_deadline_seconds"))] = _default(
        "renew_deadline_seconds"
    ),
    retry_period_seconds: Annotated[float, typer.Option(help=_help("retry_period_seconds"))] = _default(
        "retry_period_seconds"
    ),
    config: Annotated[
        Optional[list[str]],
        typer.Option(
            "--set",
            help="A setting GROUP.KEY=VALUE (repeatable), e.g. router.mode=cluster; the keys are listed in "
            "docs/settings-reference.md. An unknown key or a bad value stops the start.",
        ),
    ] = None,
    log_format: Annotated[
        LogFormat,
        typer.Option(
            help="json (fields message, timestamp, severity, and on a workload's lines object: apiVersion, kind, "
            "namespace, name), or plain (one text line per record: time, logger, level, [namespace/name] message)."
        ),
    ] = LogFormat.JSON,
    log_level: Annotated[
        Optional[LogLevel],
        typer.Option(help="The least severe level logged (default info; debug with --verbose)."),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log at DEBUG, with kopf's line per handled event.")
    ] = False,
) -> None:
    """Run the operator: watch InferenceWorkloads, decide their placement, move them.

    A kubeconfig or PromQL file that is missing or invalid stops the start (exit 3); an apiserver or Prometheus that
    cannot be reached does not: the operator retries, as a controller does."""
    from inference_placement.controller.runtime import load_promql_templates, run_operator

    settings = settings_from_flags(
        kubeconfig=kubeconfig,
        namespace=namespace,
        tick_seconds=tick_seconds,
        price_book=price_book,
        prometheus_url=prometheus_url,
        promql_templates=promql_templates,
        metrics_range_seconds=metrics_range_seconds,
        metrics_step_seconds=metrics_step_seconds,
        max_metrics_staleness_seconds=max_metrics_staleness_seconds,
        metrics_port=metrics_port,
        health_port=health_port,
        peering=peering,
        leader_elect=leader_elect,
        leader_election_namespace=leader_election_namespace,
        leader_election_id=leader_election_id,
        leader_election_identity=leader_election_identity,
        lease_duration_seconds=lease_duration_seconds,
        renew_deadline_seconds=renew_deadline_seconds,
        retry_period_seconds=retry_period_seconds,
        config=config,
    )
    require_kubeconfig(kubeconfig)
    if promql_templates is not None:
        try:
            load_promql_templates(promql_templates)
        except FileNotFoundError:
            raise CommandError(f"--promql-templates {promql_templates}: no such file", ExitCode.INPUT) from None
        except (OSError, ValueError, yaml.YAMLError) as err:
            raise CommandError(f"--promql-templates {promql_templates}: {one_line(err)}", ExitCode.INPUT) from None
    try:
        asyncio.run(
            run_operator(
                settings,
                log_format=log_format.value,
                verbose=verbose,
                log_level=log_level.value if log_level is not None else None,
            )
        )
    except Exception as err:
        error = apiserver_error(err, "the operator's start")
        if error is None or error.code != ExitCode.INPUT:  # only a bad kubeconfig stops it; the rest is retried
            raise
        raise error from None


def settings_from_flags(
    *,
    kubeconfig: str | None = None,
    namespace: list[str] | None = None,
    tick_seconds: float = _default("tick_seconds"),
    price_book: Path | None = None,
    prometheus_url: str | None = None,
    promql_templates: Path | None = None,
    metrics_range_seconds: int = _default("metrics_range_seconds"),
    metrics_step_seconds: int = _default("metrics_step_seconds"),
    max_metrics_staleness_seconds: float = _default("max_metrics_staleness_seconds"),
    metrics_port: int = _default("metrics_port"),
    health_port: int = _default("health_port"),
    peering: str | None = None,
    leader_elect: bool = _default("leader_elect"),
    leader_election_namespace: str | None = None,
    leader_election_id: str = _default("leader_election_id"),
    leader_election_identity: str | None = None,
    lease_duration_seconds: float = _default("lease_duration_seconds"),
    renew_deadline_seconds: float = _default("renew_deadline_seconds"),
    retry_period_seconds: float = _default("retry_period_seconds"),
    config: list[str] | None = None,
) -> OperatorSettings:
    """The settings ``run`` starts with, from its parsed flags (the parameter names of ``run``); a flag or ``--set``
    option it cannot accept is a usage error naming it (exit code 2)."""
    try:
        return build_settings(
            config or (),
            namespaces=tuple(namespace or ()),
            tick_seconds=tick_seconds,
            price_book_path=price_book,
            kubeconfig=kubeconfig,
            health_port=health_port,
            metrics_port=metrics_port,
            peering=peering,
            leader_elect=leader_elect,
            leader_election_namespace=leader_election_namespace,
            leader_election_id=leader_election_id,
            leader_election_identity=leader_election_identity,
            lease_duration_seconds=lease_duration_seconds,
            renew_deadline_seconds=renew_deadline_seconds,
            retry_period_seconds=retry_period_seconds,
            prometheus_url=prometheus_url,
            promql_templates_path=promql_templates,
            metrics_range_seconds=metrics_range_seconds,
            metrics_step_seconds=metrics_step_seconds,
            max_metrics_staleness_seconds=max_metrics_staleness_seconds,
        )
    except SettingsError as err:
        raise typer.BadParameter(str(err)) from None


def register(app: typer.Typer) -> None:
    app.command("run")(run)
