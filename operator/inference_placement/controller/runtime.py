"""Assemble the operator from its settings and run it under kopf."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import kopf
import yaml

from inference_placement.api.spec import InferenceWorkloadSpec, TargetName
from inference_placement.api.workload import GROUP, PLURAL, VERSION, WorkloadKey
from inference_placement.controller.fleet import Fleet
from inference_placement.controller.gc_tuning import tune_gc
from inference_placement.controller.handlers import build_registry
from inference_placement.controller.kube import KubeWriter, make_api_client
from inference_placement.controller.pod_endpoints import PodEndpoints
from inference_placement.controller.reconciler import Reconciler
from inference_placement.controller.router_sync import RouterSync
from inference_placement.controller.settings import (
    CloudRunSettings,
    LambdaSettings,
    OperatorSettings,
    RouterSettings,
)
from inference_placement.controller.supervisor import supervise
from inference_placement.controller.telemetry import Telemetry
from inference_placement.controller.wake import ActivatorWatch, HttpActivators
from inference_placement.controller.warm_pinger import WarmPinger
from inference_placement.metrics.promql import PromQLTemplates
from inference_placement.metrics.source import MetricsSource, NoMetricsSource
from inference_placement.policy.actuation import Actuators
from inference_placement.policy.price_book import PriceBook, PriceBookError, default_price_book, load_price_book
from inference_placement.targets.base import Target
from inference_placement.targets.capacity import CapacityCache
from inference_placement.targets.cluster import ClusterTarget
from inference_placement.targets.credentials import SecretRedactingFilter, secret_values

__all__ = [
    "DEFAULT_ACTIVATOR_PORT",
    "DEFAULT_OVERFLOW_PORT",
    "build_fleet",
    "capacity_verdict",
    "run_operator",
    "PriceBookHolder",
    "SOURCE_OPTIONS",
    "build_router",
    "install_redaction",
    "load_promql_templates",
    "prime_fleet",
    "prime_pods",
]

log = logging.getLogger(__name__)

DEFAULT_OVERFLOW_PORT = 9905
"""The router's overflow listener (loopback, in the router Pod) when spillover is on and no port is set."""
DEFAULT_ACTIVATOR_PORT = 9906
"""The activator's listener in the router Pod (loopback; Envoy's activator cluster), with ``router.activatorImage``."""


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


SOURCE_OPTIONS = {
    "namespace_label": str,
    "workload_label": str,
    "rate_window_seconds": int,
    "history_seconds": float,
    "history_step_seconds": float,
}
"""Keys of the PromQL file that configure the Prometheus source itself rather than a template (the request-rate
history the idle-gap plan reads: its span and step; a time-compressed replay such as the demo shortens them)."""


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
        TargetName.CLUSTER: ClusterTarget(api, capacity, image_pull_policy=settings.cluster.image_pull_policy),
    }
    if settings.cluster.dry_run:
        # Decide and record, apply nothing in the cluster (the fleet-scale benchmark; shadow evaluation).
        from inference_placement.targets.dry_run import DryRunTarget

        log.warning("cluster.dryRun: the cluster target applies nothing; decisions are only recorded")
        targets[TargetName.CLUSTER] = DryRunTarget(TargetName.CLUSTER)
    redactor = install_redaction()
    targets.update(_serverless_targets(settings.cloudrun, settings.lambda_, redactor))
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
            timeout_seconds=settings.metrics.timeout_seconds,
        )
    router = build_router(settings.router, api)
    pinger: WarmPinger | None = None
    if settings.router.url is not None:
        # keep-warm pings go through the router, like client traffic (``--set router.url=http://...``)
        pinger = WarmPinger(settings.router.url, on_ping=lambda result: telemetry.warm_pings.labels(result).inc())
        pinger_task = asyncio.create_task(pinger.run(), name="warm-pinger")
    reconciler = Reconciler(
        writer,
        targets,
        timings=settings.migration.timings(),
        cloud_finalizer=settings.cloud_finalizer,
        max_metrics_staleness_seconds=settings.max_metrics_staleness_seconds,
        telemetry=telemetry,
        stable_endpoint=router.stable_endpoint if router is not None else None,
        pinger=pinger,
        # burst spillover needs the router that retries refused requests on the overflow target; scale to zero
        # the router's activator (per workload, also the router confirming its holding route: TickInputs)
        actuators=Actuators(
            cluster_scale_to_zero=router is not None and settings.router.scales_to_zero,
            spillover=router is not None and settings.router.spillover,
        ),
        wake_keep_seconds=settings.router.wake_keep_seconds,
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
    if router is not None and router.pods is not None:
        await prime_pods(api, fleet, settings.namespaces)
    watch = _activator_watch(settings.router, router, fleet, telemetry)
    watch_task = asyncio.create_task(watch.run(), name="activator-watch") if watch is not None else None

    async def close() -> None:
        if watch is not None and watch_task is not None:
            watch.stop()
            await asyncio.wait_for(watch_task, timeout=10)
            if isinstance(watch.read, HttpActivators):
                await watch.read.close()
        if router is not None:
            await router.close()
        if pinger is not None:
            pinger.stop()
            await asyncio.wait_for(pinger_task, timeout=10)
        await capacity.stop()
        await api.close()

    return fleet, close


def _activator_watch(
    settings: RouterSettings, router: RouterSync | None, fleet: Fleet, telemetry: Telemetry
) -> ActivatorWatch | None:
    """The wake-up poller of the router's activators (``controller/wake.py``), when the cluster may scale to zero."""
    if router is None or not settings.scales_to_zero:
        return None
    read: Callable[[], Awaitable[Sequence[str]]]
    if settings.mode == "cluster":
        from inference_placement.controller.router_cluster import ClusterRouterApplier

        if not isinstance(router.applier, ClusterRouterApplier):  # build_router makes it; for mypy
            raise TypeError("router.mode=cluster without the in-cluster router")
        read = router.applier.activator_metrics
    elif settings.activator_metrics_url is not None:
        read = HttpActivators([settings.activator_metrics_url])
    else:
        return None
    return ActivatorWatch(
        read,
        fleet.on_wake_signals,
        interval_seconds=settings.wake_poll_seconds,
        on_poll=lambda ok: telemetry.activator_polls.labels("ok" if ok else "failed").inc(),
    )


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


async def prime_pods(api: Any, fleet: Fleet, namespaces: tuple[str, ...], page_size: int = 500) -> int:
    """Feed the fleet one listing of the model Services' EndpointSlices before its loop starts (as ``prime_fleet``
    does for the workloads), so that a workload sitting at zero, whose slice does not change, is routed to its
    (empty) pods and keeps its hold after an operator restart. Returns how many slices were listed."""
    from kubernetes_asyncio import client as k8s

    from inference_placement.controller.pod_endpoints import SERVICE_NAME_LABEL
    from inference_placement.targets.cluster_render import MANAGED_BY, MANAGED_BY_LABEL

    discovery = k8s.DiscoveryV1Api(api)
    selector = f"{SERVICE_NAME_LABEL},{MANAGED_BY_LABEL}={MANAGED_BY}"
    listed = 0
    for namespace in namespaces or (None,):
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": page_size, "label_selector": selector}
            if token:
                kwargs["_continue"] = token
            if namespace is None:
                page = await discovery.list_endpoint_slice_for_all_namespaces(**kwargs)
            else:
                page = await discovery.list_namespaced_endpoint_slice(namespace, **kwargs)
            for item in page.items or []:
                fleet.observe_endpoints("ADDED", api.sanitize_for_serialization(item))
                listed += 1
            token = page.metadata._continue if page.metadata is not None else None
            if not token:
                break
    log.info("router primed with %d EndpointSlice(s)", listed)
    return listed


def build_router(router: RouterSettings, api: Any = None) -> RouterSync | None:
    """The router this operator keeps in step with the workloads (``router.mode``), or None when it is ``off``.

    ``files``: an Envoy started from ``routing.envoy.render_bootstrap`` reads ``router.xdsDir``; the operator writes
    there and confirms every move on ``router.adminUrl``. ``cluster``: the operator manages the router Deployment,
    Service and ConfigMap in ``router.namespace`` and a stable ExternalName Service per workload
    (``controller/router_cluster.py``). Each key is described on ``RouterSettings``.
    """
    if router.mode == "off":
        return None
    from inference_placement.routing.envoy import EnvoySettings
    from inference_placement.routing.model import EndpointsConfig, UpstreamAddress

    envoy_options: dict[str, Any] = {"cluster_domain": router.cluster_domain}
    if router.gcp_metadata is not None:
        envoy_options["gcp_metadata"] = UpstreamAddress.from_url(router.gcp_metadata)
    if router.latency_buckets_ms is not None:  # the request-time histogram's bounds, e.g. 50,100,250,500,1000
        envoy_options["latency_buckets_ms"] = router.latency_buckets_ms
    overflow_port = router.overflow_port or (DEFAULT_OVERFLOW_PORT if router.spillover else None)
    if overflow_port is not None:
        envoy_options["overflow_port"] = overflow_port
    if router.mode == "files" and router.activator_port is not None:
        envoy_options["activator_port"] = router.activator_port
    pods = PodEndpoints() if router.pods_by_address else None
    hold = router.scales_to_zero
    endpoints = EndpointsConfig(
        address_overrides=dict(router.address_overrides),
        lambda_endpoint=router.lambda_endpoint,
        lambda_payload_passthrough=router.lambda_passthrough,
    )
    if router.mode == "cluster":
        from inference_placement.controller.router_cluster import ClusterRouterApplier

        if api is None:
            raise ValueError("router.mode=cluster needs the Kubernetes API client")
        if router.activator_image is not None:
            envoy_options["activator_port"] = DEFAULT_ACTIVATOR_PORT
        cluster_applier = ClusterRouterApplier(
            api,
            EnvoySettings(**envoy_options),
            activator_image=router.activator_image,
            namespace=router.namespace,
            image=router.image,
            replicas=router.replicas,
            image_pull_policy=router.image_pull_policy,
            confirm_timeout_seconds=router.confirm_timeout_seconds,
        )
        sync = RouterSync(
            cluster_applier, endpoints, cluster_domain=router.cluster_domain, wait_seconds=1.0, pods=pods, hold=hold
        )
        cluster_applier.owners = sync.owners
        return sync
    from inference_placement.routing.xds_files import EnvoyXdsApplier

    if router.xds_dir is None or router.admin_url is None:  # RouterSettings refuses this; for mypy
        raise ValueError("router.mode=files needs router.xdsDir and router.adminUrl")
    envoy = EnvoySettings(xds_dir=str(router.xds_dir), **envoy_options)
    applier = EnvoyXdsApplier(router.xds_dir, router.admin_url, settings=envoy, envoy_binary=router.envoy_binary)
    return RouterSync(applier, endpoints, cluster_domain=router.cluster_domain, pods=pods, hold=hold)


def _secret_dir(directory: Path) -> dict[str, str]:
    """A Secret mounted as a directory: one file per key (hidden files are the kubelet's bookkeeping)."""
    return {
        f.name: f.read_text(encoding="utf-8")
        for f in sorted(directory.iterdir())
        if f.is_file() and not f.name.startswith(".")
    }


def _with_credentials(
    target_class: Any, credentials_dir: Path | None, redactor: SecretRedactingFilter, kwargs: dict[str, Any]
) -> Target:
    """A cloud target built with the credentials in a Secret mounted as ``credentials_dir`` (their values scrubbed
    from every log line from now on), or with ``kwargs`` alone (workload identity, the default chain)."""
    if credentials_dir is None:
        built: Target = target_class(**kwargs)
        return built
    data = _secret_dir(credentials_dir)
    redactor.add_secrets(secret_values(data))
    from_secret: Target = target_class.from_secret(data, **kwargs)
    return from_secret


def _serverless_targets(
    cloudrun: CloudRunSettings, lambda_: LambdaSettings, redactor: SecretRedactingFilter
) -> dict[TargetName, Target]:
    """Cloud targets are offered only when configured (``--set cloudrun.enabled=true``, ``cloudrun.endpoint=...``).

    Credentials: workload identity / the default chain, or a Secret mounted as a directory (``credentialsDir``)
    whose values are also scrubbed from every log line.
    """
    targets: dict[TargetName, Target] = {}
    if cloudrun.active:
        from inference_placement.targets.cloudrun import CloudRunTarget
        from inference_placement.targets.credentials import google_anonymous_credentials

        kwargs: dict[str, Any] = {
            "default_project": cloudrun.project,
            "request_timeout_seconds": cloudrun.request_timeout_seconds,
            "api_endpoint": cloudrun.endpoint,
        }
        if cloudrun.credentials_dir is None and cloudrun.endpoint is not None and cloudrun.anonymous:
            kwargs["credentials"] = google_anonymous_credentials()
        targets[TargetName.CLOUDRUN] = _with_credentials(CloudRunTarget, cloudrun.credentials_dir, redactor, kwargs)
    if lambda_.active:
        from inference_placement.targets.aws_lambda import LambdaTarget

        lkwargs: dict[str, Any] = {
            "default_region": lambda_.region,
            "read_timeout_seconds": lambda_.read_timeout_seconds,
            "endpoint_url": lambda_.endpoint,
        }
        targets[TargetName.LAMBDA] = _with_credentials(LambdaTarget, lambda_.credentials_dir, redactor, lkwargs)
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
