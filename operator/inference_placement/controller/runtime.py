"""Assemble the operator from its settings and run it under kopf."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import kopf
import yaml

from inference_placement.api.spec import InferenceWorkloadSpec, TargetName
from inference_placement.api.workload import GROUP, PLURAL, VERSION
from inference_placement.controller.fleet import Fleet
from inference_placement.controller.gc_tuning import tune_gc
from inference_placement.controller.handlers import build_registry
from inference_placement.controller.kube import KubeWriter, make_api_client
from inference_placement.controller.migration import MigrationTimings
from inference_placement.controller.reconciler import Reconciler
from inference_placement.controller.router_sync import RouterSync
from inference_placement.controller.settings import OperatorSettings
from inference_placement.controller.supervisor import supervise
from inference_placement.controller.telemetry import Telemetry
from inference_placement.controller.warm_pinger import WarmPinger
from inference_placement.metrics.promql import PromQLTemplates
from inference_placement.metrics.source import MetricsSource, NoMetricsSource, WorkloadKey
from inference_placement.policy.price_book import PriceBook, PriceBookError, default_price_book, load_price_book
from inference_placement.targets.base import Target
from inference_placement.targets.capacity import CapacityCache
from inference_placement.targets.cluster import ClusterTarget
from inference_placement.targets.credentials import SecretRedactingFilter, secret_values

__all__ = ["build_fleet", "capacity_verdict", "run_operator"]

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


async def build_fleet(
    settings: OperatorSettings, telemetry: Telemetry | None = None
) -> tuple[Fleet, Callable[[], Awaitable[None]]]:
    """The fleet and everything it drives. ``telemetry`` outlives one fleet (the supervisor builds a new fleet after
    a restart, on the same /metrics port, which ``run_operator`` serves); without it, an unserved one (in-process
    callers read it directly)."""
    telemetry = telemetry if telemetry is not None else Telemetry()
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
    if _truthy(settings.extra.get("cluster.dryRun")):
        # Decide and record, apply nothing in the cluster (the fleet-scale benchmark; shadow evaluation).
        from inference_placement.targets.dry_run import DryRunTarget

        log.warning("cluster.dryRun: the cluster target applies nothing; decisions are only recorded")
        targets[TargetName.CLUSTER] = DryRunTarget(TargetName.CLUSTER)
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
            timeout_seconds=float(settings.extra.get("metrics.timeoutSeconds", 10.0)),
        )
    router = build_router(settings.extra, api)
    pinger: WarmPinger | None = None
    if settings.extra.get("router.url"):
        # keep-warm pings go through the router, like client traffic (``--set router.url=http://...``)
        pinger = WarmPinger(
            settings.extra["router.url"], on_ping=lambda result: telemetry.warm_pings.labels(result).inc()
        )
        pinger_task = asyncio.create_task(pinger.run(), name="warm-pinger")
    reconciler = Reconciler(
        writer,
        targets,
        timings=migration_timings(settings.extra),
        cloud_finalizer=settings.cloud_finalizer,
        max_metrics_staleness_seconds=settings.max_metrics_staleness_seconds,
        telemetry=telemetry,
        stable_endpoint=router.stable_endpoint if router is not None else None,
        pinger=pinger,
    )

    fleet = Fleet(
        reconciler=reconciler,
        metrics=metrics,
        price_book=PriceBookHolder(settings),
        capacity=capacity.snapshot,
        capacity_verdict=capacity_verdict(capacity),
        tick_seconds=settings.tick_seconds,
        debounce_seconds=settings.dirty_debounce_seconds,
        telemetry=telemetry,
        router=router,
    )

    await prime_fleet(api, fleet, settings.namespaces)

    async def close() -> None:
        if router is not None:
            await router.close()
        if pinger is not None:
            pinger.stop()
            await asyncio.wait_for(pinger_task, timeout=10)
        await capacity.stop()
        await api.close()

    return fleet, close


def capacity_verdict(
    capacity: CapacityCache,
) -> Callable[[WorkloadKey, InferenceWorkloadSpec], tuple[bool, str] | None]:
    """The fleet's capacity check of a workload with a valid spec (the fleet parses each spec once per change)."""

    def verdict(key: WorkloadKey, spec: InferenceWorkloadSpec) -> tuple[bool, str] | None:
        if TargetName.CLUSTER not in spec.placement.allowed_targets:
            return None
        # The capacity this workload already holds must not count against it.
        return capacity.check(spec, owner=f"{key.namespace}/{key.name}")

    return verdict


async def prime_fleet(api: Any, fleet: Fleet, namespaces: tuple[str, ...], page_size: int = 500) -> int:
    """Feed the fleet one full listing before its loop starts, so the first tick (and the first router update)
    sees every workload, not just those kopf's watch delivered so far: a router updated from a partial fleet would
    drop the routes of workloads not seen yet. Returns how many workloads were listed."""
    from kubernetes_asyncio import client as k8s

    custom = k8s.CustomObjectsApi(api)
    listed = 0
    for namespace in namespaces or (None,):
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": page_size}
            if token:
                kwargs["_continue"] = token
            if namespace is None:
                page = await custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kwargs)
            else:
                page = await custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, **kwargs)
            for item in page.get("items", []):
                fleet.observe("ADDED", item)
                listed += 1
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                break
    log.info("fleet primed with %d workload(s)", listed)
    return listed


def migration_timings(extra: Mapping[str, str]) -> MigrationTimings:
    """``--set migration.stepHoldSeconds=10 migration.drainSeconds=30 migration.shiftSteps=10,50,100
    migration.provisionTimeoutSeconds=900`` (defaults: ``MigrationTimings``)."""
    defaults = MigrationTimings()
    steps = extra.get("migration.shiftSteps")
    shift = tuple(int(p) for p in steps.split(",")) if steps else defaults.shift_steps_percent
    if not shift or shift[-1] != 100 or list(shift) != sorted(set(shift)) or shift[0] <= 0:
        raise ValueError(f"migration.shiftSteps must rise strictly to 100, got {steps!r}")
    return MigrationTimings(
        shift_steps_percent=shift,
        step_hold_seconds=float(extra.get("migration.stepHoldSeconds", defaults.step_hold_seconds)),
        drain_seconds=float(extra.get("migration.drainSeconds", defaults.drain_seconds)),
        provision_timeout_seconds=float(
            extra.get("migration.provisionTimeoutSeconds", defaults.provision_timeout_seconds)
        ),
    )


def _overrides(text: str) -> dict[str, str]:
    """``published=connect,published2=connect2``: how the router reaches what status publishes."""
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        published, sep, connect = item.partition("=")
        if not sep or not published or not connect:
            raise ValueError(f"router.addressOverrides: expected PUBLISHED=URL, got {item!r}")
        pairs[published.strip()] = connect.strip()
    return pairs


def build_router(extra: Mapping[str, str], api: Any = None) -> RouterSync | None:
    """The router this operator keeps in step with the workloads (``--set router.mode=files|cluster``), or None.

    ``files``: an Envoy started from ``routing.envoy.render_bootstrap`` reads ``router.xdsDir``; the operator writes
    there and confirms every move on ``router.adminUrl`` (its admin or health listener). ``router.envoyBinary``
    validates each config with ``envoy --mode validate`` before it is written.
    ``cluster``: the operator manages the router Deployment, Service and ConfigMap in ``router.namespace``
    (``router.image``, ``router.replicas``, ``router.imagePullPolicy``, ``router.confirmTimeoutSeconds``) and a
    stable ExternalName Service per workload (``controller/router_cluster.py``).
    Both: ``router.addressOverrides`` and ``router.lambdaEndpoint`` point published endpoints elsewhere (loopback
    stand-ins in tests and the demo); ``router.gcpMetadata`` (host:port) is where Cloud Run ID tokens come from.
    """
    mode = extra.get("router.mode", "off")
    if mode == "off":
        return None
    if mode not in ("files", "cluster"):
        raise ValueError(f"router.mode must be off, files or cluster, got {mode!r}")
    from inference_placement.routing.envoy import EnvoySettings, parse_latency_buckets
    from inference_placement.routing.model import EndpointsConfig, UpstreamAddress

    cluster_domain = extra.get("router.clusterDomain", "cluster.local")
    envoy_options: dict[str, Any] = {"cluster_domain": cluster_domain}
    if extra.get("router.gcpMetadata"):
        envoy_options["gcp_metadata"] = UpstreamAddress.from_url(extra["router.gcpMetadata"])
    if extra.get("router.latencyBucketsMs"):  # the request-time histogram's bounds, e.g. 50,100,250,500,1000
        envoy_options["latency_buckets_ms"] = parse_latency_buckets(extra["router.latencyBucketsMs"])
    endpoints = EndpointsConfig(
        address_overrides=_overrides(extra.get("router.addressOverrides", "")),
        lambda_endpoint=extra.get("router.lambdaEndpoint"),
        lambda_payload_passthrough=_truthy(extra.get("router.lambdaPassthrough")),
    )
    if mode == "cluster":
        from inference_placement.controller.router_cluster import ClusterRouterApplier
        from inference_placement.routing.manifests import DEFAULT_ENVOY_IMAGE

        if api is None:
            raise ValueError("router.mode=cluster needs the Kubernetes API client")
        cluster_applier = ClusterRouterApplier(
            api,
            EnvoySettings(**envoy_options),
            namespace=extra.get("router.namespace", "inference-placement"),
            image=extra.get("router.image", DEFAULT_ENVOY_IMAGE),
            replicas=int(extra.get("router.replicas", "2")),
            image_pull_policy=extra.get("router.imagePullPolicy") or None,
            confirm_timeout_seconds=float(extra.get("router.confirmTimeoutSeconds", "180")),
        )
        router = RouterSync(cluster_applier, endpoints, cluster_domain=cluster_domain, wait_seconds=1.0)
        cluster_applier.owners = router.owners
        return router
    from inference_placement.routing.xds_files import EnvoyXdsApplier

    xds_dir, admin_url = extra.get("router.xdsDir"), extra.get("router.adminUrl")
    if not xds_dir or not admin_url:
        raise ValueError("router.mode=files needs router.xdsDir and router.adminUrl")
    envoy = EnvoySettings(xds_dir=xds_dir, **envoy_options)
    applier = EnvoyXdsApplier(
        Path(xds_dir), admin_url, settings=envoy, envoy_binary=extra.get("router.envoyBinary") or None
    )
    return RouterSync(applier, endpoints, cluster_domain=cluster_domain)


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
    ``*.endpoint`` points a target at a local stand-in (tests and the demo). ``cloudrun.requestTimeoutSeconds``
    and ``lambda.readTimeoutSeconds`` bound each API request (default 30 s).
    """
    extra = settings.extra
    targets: dict[TargetName, Target] = {}
    if _truthy(extra.get("cloudrun.enabled")) or extra.get("cloudrun.endpoint"):
        from inference_placement.targets.cloudrun import CloudRunTarget
        from inference_placement.targets.credentials import google_anonymous_credentials

        kwargs: dict[str, Any] = {"default_project": extra.get("cloudrun.project")}
        if extra.get("cloudrun.requestTimeoutSeconds"):
            kwargs["request_timeout_seconds"] = float(extra["cloudrun.requestTimeoutSeconds"])
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
        if extra.get("lambda.readTimeoutSeconds"):
            lkwargs["read_timeout_seconds"] = float(extra["lambda.readTimeoutSeconds"])
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
    try:
        _load_price_book(settings)
    except (OSError, ValueError) as err:  # PriceBookError, a missing file, bytes that are not UTF-8
        # No last good book to fall back on: refuse to start with one clear line, rather than kopf retrying its
        # start-up every 60 s with a traceback while nothing is reconciled.
        reason = err if isinstance(err, PriceBookError) else f"{settings.price_book_path}: {err}"
        raise SystemExit(f"inference-placement: price book rejected, not starting: {reason}") from None
    if settings.kubeconfig is not None:
        os.environ["KUBECONFIG"] = settings.kubeconfig  # read by kopf's kubeconfig login
    kopf.configure(
        verbose=verbose,
        log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL,  # text: time, logger, level
    )
    if not verbose:
        # kopf logs every handled event at INFO: one line per workload per change is noise at fleet scale.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)

    telemetry = Telemetry()
    if settings.metrics_port:
        telemetry.serve(settings.metrics_port)
    tune_gc()  # start-up is done: what is imported now lives for ever (gc_tuning.py)

    async def make_fleet() -> tuple[Fleet, Callable[[], Awaitable[None]]]:
        return await build_fleet(settings, telemetry)

    liveness = f"http://0.0.0.0:{settings.health_port}/healthz" if settings.health_port else None

    async def run_once() -> None:
        # a fresh registry per run: its start-up handler builds a fresh fleet, primed from one LIST
        await kopf.operator(
            registry=build_registry(settings, make_fleet),
            standalone=settings.peering is None,
            peering_name=settings.peering,
            clusterwide=not settings.namespaces,
            namespaces=settings.namespaces,
            liveness_endpoint=liveness,
        )

    await supervise(run_once, on_restart=lambda _err: telemetry.operator_restarts.inc())
