"""Assemble the operator from its settings and run it under kopf."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import kopf
import yaml

from inference_placement.api.spec import TargetName
from inference_placement.api.validation import parse_spec
from inference_placement.controller.fleet import Fleet
from inference_placement.controller.handlers import build_registry
from inference_placement.controller.kube import KubeWriter, make_api_client
from inference_placement.controller.reconciler import Reconciler
from inference_placement.controller.settings import OperatorSettings
from inference_placement.controller.telemetry import Telemetry
from inference_placement.metrics.promql import PromQLTemplates
from inference_placement.metrics.source import MetricsSource, NoMetricsSource
from inference_placement.policy.price_book import PriceBook, default_price_book, load_price_book
from inference_placement.targets.base import Target
from inference_placement.targets.capacity import CapacityCache
from inference_placement.targets.cluster import ClusterTarget
from inference_placement.targets.credentials import SecretRedactingFilter, secret_values

__all__ = ["build_fleet", "run_operator"]

log = logging.getLogger(__name__)


def install_redaction() -> SecretRedactingFilter:
    """Scrub credentials from every log record, whichever library writes it (botocore logs headers at DEBUG)."""
    root = logging.getLogger()
    for handler in root.handlers:
        for existing in handler.filters:
            if isinstance(existing, SecretRedactingFilter):
                return existing
    redactor = SecretRedactingFilter()
    for handler in root.handlers:
        handler.addFilter(redactor)
    root.addFilter(redactor)
    return redactor


SOURCE_OPTIONS = {"namespace_label": str, "workload_label": str, "rate_window_seconds": int}
"""Keys of the PromQL file that configure the Prometheus source itself rather than a template."""


def load_promql_templates(path: Path | None) -> tuple[PromQLTemplates, dict[str, Any]]:
    """PromQL templates (and the source's label/rate-window options) from a YAML file, the chart's ConfigMap.

    Keys in snake_case or camelCase; an unknown key is an error naming it.
    """
    if path is None:
        return PromQLTemplates(), {}
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of template names to PromQL")
    known = {f.name for f in fields(PromQLTemplates)}
    templates: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for key, value in raw.items():
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", str(key)).lower()
        if name in SOURCE_OPTIONS:
            options[name] = SOURCE_OPTIONS[name](value)
        elif name in known:
            templates[name] = value
        else:
            allowed = ", ".join(sorted(known | set(SOURCE_OPTIONS)))
            raise ValueError(f"{path}: unknown key {key!r} (known: {allowed})")
    return PromQLTemplates(**templates), options


def _load_price_book(settings: OperatorSettings) -> PriceBook:
    if settings.price_book_path is None:
        return default_price_book()
    return load_price_book(settings.price_book_path.read_text(encoding="utf-8"))


class PriceBookHolder:
    """The price book in force. A broken edit of the file is reported and the last good book stays in force."""

    def __init__(self, settings: OperatorSettings) -> None:
        self.settings = settings
        self.current = _load_price_book(settings)
        self.error: str | None = None
        self._mtime = self._stat()

    def _stat(self) -> float | None:
        path = self.settings.price_book_path
        try:
            return path.stat().st_mtime if path is not None else None
        except OSError:
            return None

    def __call__(self) -> PriceBook:
        mtime = self._stat()
        if mtime != self._mtime:
            self._mtime = mtime
            try:
                self.current = _load_price_book(self.settings)
                self.error = None
                log.info("price book reloaded from %s", self.settings.price_book_path)
            except Exception as err:  # keep serving with the last good book
                self.error = str(err)
                log.error("price book rejected, keeping the previous one: %s", err)
        return self.current


async def build_fleet(settings: OperatorSettings) -> tuple[Fleet, Callable[[], Awaitable[None]]]:
    telemetry = Telemetry()
    if settings.metrics_port:
        telemetry.serve(settings.metrics_port)
    api = await make_api_client(settings.kubeconfig)
    writer = KubeWriter(
        api,
        concurrency=settings.write_concurrency,
        on_write=lambda kind: telemetry.apiserver_writes.labels(kind).inc(),
    )
    capacity = CapacityCache(api)
    await capacity.start()
    targets: dict[TargetName, Target] = {
        TargetName.CLUSTER: ClusterTarget(
            api, capacity, image_pull_policy=settings.extra.get("cluster.imagePullPolicy")
        ),
    }
    redactor = install_redaction()
    targets.update(_serverless_targets(settings, redactor))
    metrics: MetricsSource = NoMetricsSource()
    if settings.prometheus_url:
        from inference_placement.metrics.prometheus import PrometheusSource

        templates, source_options = load_promql_templates(settings.promql_templates_path)
        metrics = PrometheusSource(
            settings.prometheus_url,
            templates=templates,
            **source_options,
            range_seconds=settings.metrics_range_seconds,
            step_seconds=settings.metrics_step_seconds,
            max_staleness_seconds=settings.max_metrics_staleness_seconds,
        )
    reconciler = Reconciler(
        writer,
        targets,
        cloud_finalizer=settings.cloud_finalizer,
        max_metrics_staleness_seconds=settings.max_metrics_staleness_seconds,
        telemetry=telemetry,
    )

    def verdict(body: Mapping[str, Any]) -> tuple[bool, str] | None:
        spec, problems = parse_spec(body.get("spec"))
        if spec is None or problems or TargetName.CLUSTER not in spec.placement.allowed_targets:
            return None
        meta = body.get("metadata") or {}
        # The capacity this workload already holds must not count against it.
        return capacity.check(spec, owner=f"{meta.get('namespace', 'default')}/{meta.get('name', '')}")

    fleet = Fleet(
        reconciler=reconciler,
        metrics=metrics,
        price_book=PriceBookHolder(settings),
        capacity=capacity.snapshot,
        capacity_verdict=verdict,
        tick_seconds=settings.tick_seconds,
        debounce_seconds=settings.dirty_debounce_seconds,
        telemetry=telemetry,
    )

    async def close() -> None:
        await capacity.stop()
        await api.close()

    return fleet, close


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _secret_dir(path: str) -> dict[str, str]:
    """A Secret mounted as a directory: one file per key (hidden files are the kubelet's bookkeeping)."""
    directory = Path(path)
    return {
        f.name: f.read_text(encoding="utf-8")
        for f in sorted(directory.iterdir())
        if f.is_file() and not f.name.startswith(".")
    }


def _serverless_targets(settings: OperatorSettings, redactor: SecretRedactingFilter) -> dict[TargetName, Target]:
    """Cloud targets are offered only when configured (``--set cloudrun.enabled=true`` etc.).

    Credentials: workload identity / the default chain, or a Secret mounted as a directory
    (``cloudrun.credentialsDir``, ``lambda.credentialsDir``) whose values are also scrubbed from every log line.
    ``*.endpoint`` points a target at a local stand-in (tests and the demo).
    """
    extra = settings.extra
    targets: dict[TargetName, Target] = {}
    if _truthy(extra.get("cloudrun.enabled")) or extra.get("cloudrun.endpoint"):
        from inference_placement.targets.cloudrun import CloudRunTarget
        from inference_placement.targets.credentials import google_anonymous_credentials

        kwargs: dict[str, Any] = {"default_project": extra.get("cloudrun.project")}
        if extra.get("cloudrun.endpoint"):
            kwargs["api_endpoint"] = extra["cloudrun.endpoint"]
        if extra.get("cloudrun.credentialsDir"):
            data = _secret_dir(extra["cloudrun.credentialsDir"])
            redactor.add_secrets(secret_values(data))
            targets[TargetName.CLOUDRUN] = CloudRunTarget.from_secret(data, **kwargs)
        elif extra.get("cloudrun.endpoint") and _truthy(extra.get("cloudrun.anonymous", "true")):
            targets[TargetName.CLOUDRUN] = CloudRunTarget(credentials=google_anonymous_credentials(), **kwargs)
        else:
            targets[TargetName.CLOUDRUN] = CloudRunTarget(**kwargs)
    if _truthy(extra.get("lambda.enabled")) or extra.get("lambda.endpoint"):
        from inference_placement.targets.aws_lambda import LambdaTarget

        lkwargs: dict[str, Any] = {"default_region": extra.get("lambda.region", "us-east-1")}
        if extra.get("lambda.endpoint"):
            lkwargs["endpoint_url"] = extra["lambda.endpoint"]
        if extra.get("lambda.credentialsDir"):
            data = _secret_dir(extra["lambda.credentialsDir"])
            redactor.add_secrets(secret_values(data))
            targets[TargetName.LAMBDA] = LambdaTarget.from_secret(data, **lkwargs)
        else:
            targets[TargetName.LAMBDA] = LambdaTarget(**lkwargs)
    return targets


async def run_operator(settings: OperatorSettings, *, log_format: str = "json", verbose: bool = False) -> None:
    if settings.kubeconfig is not None:
        os.environ["KUBECONFIG"] = settings.kubeconfig  # read by kopf's kubeconfig login
    kopf.configure(
        verbose=verbose,
        log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.PLAIN,
    )
    if not verbose:
        # kopf logs every handled event at INFO: one line per workload per change is noise at fleet scale.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)

    async def make_fleet() -> tuple[Fleet, Callable[[], Awaitable[None]]]:
        return await build_fleet(settings)

    registry = build_registry(settings, make_fleet)
    liveness = f"http://0.0.0.0:{settings.health_port}/healthz" if settings.health_port else None
    await kopf.operator(
        registry=registry,
        standalone=settings.peering is None,
        peering_name=settings.peering,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=liveness,
    )
