"""Assemble the operator from its settings and run it under kopf."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import kopf
import yaml

from inference_placement.api.serverless_target import ServerlessProvider
from inference_placement.api.spec import InferenceWorkloadSpec, TargetName
from inference_placement.api.workload import GROUP, PLURAL, VERSION, WorkloadKey
from inference_placement.controller.fleet import Fleet
from inference_placement.controller.gc_tuning import tune_gc
from inference_placement.controller.handlers import Leadership, build_registry
from inference_placement.controller.kube import KubeWriter, make_api_client
from inference_placement.controller.leader import LeaseElector, default_identity
from inference_placement.controller.log_context import install_workload_logging
from inference_placement.controller.memory_report import install_memory_report
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
from inference_placement.controller.tenancy import TenancyCache
from inference_placement.controller.wake import ActivatorWatch, HttpActivators, router_stats_filter
from inference_placement.controller.warm_pinger import WarmPinger
from inference_placement.metrics.promql import PromQLTemplates
from inference_placement.metrics.source import MetricsSource, NoMetricsSource
from inference_placement.policy.actuation import Actuators
from inference_placement.policy.price_book import PriceBook, PriceBookError, default_price_book, load_price_book
from inference_placement.routing.envoy import STATS_PATH
from inference_placement.targets.base import Target
from inference_placement.targets.capacity import CapacityCache
from inference_placement.targets.cluster import ClusterTarget
from inference_placement.targets.credentials import SecretRedactingFilter, secret_values

__all__ = [
    "DEFAULT_ACTIVATOR_PORT",
    "DEFAULT_OVERFLOW_PORT",
    "build_fleet",
    "capacity_verdict",
    "configure_logging",
    "run_operator",
    "PriceBookHolder",
    "SOURCE_OPTIONS",
    "build_router",
    "install_redaction",
    "lease_namespace",
    "load_promql_templates",
    "make_elector",
    "SERVICE_ACCOUNT_NAMESPACE",
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
    """The price book in force, and why it is not the configured one when it is not.

    A book rejected at start-up leaves the operator running on the packaged book (a crash loop would stop every
    workload's reconciles for one bad file); a broken edit later keeps the last good book. Either way ``error``
    says so (the workloads' ``PriceBookValid`` condition and an Event on each), and so do the metrics
    ``price_book_valid`` and ``price_book_rejections_total{phase}``; a fixed file is picked up at the next tick."""

    def __init__(self, settings: OperatorSettings, telemetry: Telemetry | None = None) -> None:
        self.settings = settings
        self.telemetry = telemetry
        self.error: str | None = None
        self._mtime = self._stat()
        try:
            self.current = _load_price_book(settings)
        except Exception as err:  # PriceBookError, a missing file, bytes that are not UTF-8
            self.current = default_price_book()
            self._rejected("startup", f"{_describe(settings, err)}; decisions use the packaged price book")
        else:
            self._valid()

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
            except Exception as err:  # keep serving with the last good book
                self._rejected("reload", f"{_describe(self.settings, err)}; decisions use the last good price book")
            else:
                self.error = None
                self._valid()
                log.info("price book reloaded from %s", self.settings.price_book_path)
        return self.current

    def _valid(self) -> None:
        if self.telemetry is not None:
            self.telemetry.price_book_valid.set(1)

    def _rejected(self, phase: str, message: str) -> None:
        self.error = message
        log.error("price book rejected (%s): %s", phase, message)
        if self.telemetry is not None:
            self.telemetry.price_book_valid.set(0)
            self.telemetry.price_book_rejections.labels(phase).inc()


def _describe(settings: OperatorSettings, err: Exception) -> str:
    """One line naming the file and the problem (a PriceBookError names the field already)."""
    text = " ".join(str(err).split())[:400]
    return text if isinstance(err, PriceBookError) else f"{settings.price_book_path}: {type(err).__name__}: {text}"


async def build_fleet(
    settings: OperatorSettings,
    telemetry: Telemetry | None = None,
    *,
    fence: Callable[[], None] | None = None,
    identity: str | None = None,
) -> tuple[Fleet, Callable[[], Awaitable[None]]]:
    """The fleet and everything it drives. ``telemetry`` outlives one fleet (the supervisor builds a new fleet after
    a restart, on the same /metrics port, which ``run_operator`` serves); without it, an unserved one (in-process
    callers read it directly). ``fence`` (``LeaseElector.fence``) is checked before every write the fleet makes:
    status, finalizers, Events, target resources, router config; ``identity`` names this replica in its Events."""
    telemetry = telemetry if telemetry is not None else Telemetry()
    api = await make_api_client(settings.kubeconfig)
    writer = KubeWriter(
        api,
        concurrency=settings.write_concurrency,
        instance=identity,
        on_write=telemetry.count_write,
        fence=fence,
    )
    capacity = CapacityCache(api, gpu_request=settings.cluster.gpu_request, dra_classes=settings.cluster.dra_classes())
    await capacity.start()
    targets: dict[TargetName, Target] = {
        TargetName.CLUSTER: ClusterTarget(
            api,
            capacity,
            image_pull_policy=settings.cluster.image_pull_policy,
            gpu_node_labels=settings.cluster.gpu_node_labels,
            spot_node_labels=settings.cluster.spot_labels(),
        ),
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
        from inference_placement.metrics.prometheus import PrometheusAuth, PrometheusSource

        templates, source_options = load_promql_templates(settings.promql_templates_path)
        auth = settings.metrics
        metrics = PrometheusSource(
            settings.prometheus_url,
            templates=templates,
            auth=PrometheusAuth(
                bearer_token_file=auth.bearer_token_file,
                basic_auth_username=auth.basic_auth_username,
                basic_auth_password_file=auth.basic_auth_password_file,
                headers=auth.headers,
                ca_file=auth.ca_file,
            ),
            **source_options,
            range_seconds=settings.metrics_range_seconds,
            step_seconds=settings.metrics_step_seconds,
            max_staleness_seconds=settings.max_metrics_staleness_seconds,
            timeout_seconds=settings.metrics.timeout_seconds,
        )
    router = build_router(settings.router, api)
    if router is not None:
        router.fence = fence
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
            zero_fall_through=router is not None and settings.router.falls_through,
            spot_provider=settings.cluster.spot_provider(),
        ),
        wake_keep_seconds=settings.router.wake_keep_seconds,
        fence=fence,
        tenancy=TenancyCache(api, allow_inline_cloud_identity=settings.tenancy.allow_inline_cloud_identity),
    )
    await reconciler.tenancy.refresh()  # before the first reconcile: a workload naming a target is judged at once
    if router is not None:  # a function ARN outside every admin's Lambda target is never routed (docs/security.md)
        router.lambda_scope = reconciler.tenancy.lambda_scope

    price_book = PriceBookHolder(settings, telemetry)
    fleet = Fleet(
        reconciler=reconciler,
        metrics=metrics,
        price_book=price_book,
        price_book_problem=lambda: price_book.error,
        capacity=capacity.snapshot,
        capacity_verdict=capacity_verdict(capacity),
        tick_seconds=settings.tick_seconds,
        debounce_seconds=settings.dirty_debounce_seconds,
        telemetry=telemetry,
        router=router,
        fence=fence,
    )

    async def relist() -> int:
        return await prime_fleet(api, fleet, settings.namespaces)

    fleet.relist = relist
    await relist()
    if router is not None and router.pods is not None:
        await prime_pods(api, fleet, settings.namespaces)
    watch = _activator_watch(settings.router, router, fleet, telemetry)
    watch_task = asyncio.create_task(watch.run(), name="activator-watch") if watch is not None else None

    sweep_task = _start_sweep(settings, api, targets, telemetry, fence, reconciler.tenancy)

    async def close() -> None:
        if sweep_task is not None:
            sweep_task.cancel()
            await asyncio.gather(sweep_task, return_exceptions=True)
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
    """The wake-up poller of the router's activators and of its Envoy's serverless request counters
    (``controller/wake.py``), when the cluster may scale to zero."""
    if router is None or not settings.scales_to_zero:
        return None
    read: Callable[[Collection[WorkloadKey]], Awaitable[Sequence[str]]]
    if settings.mode == "cluster":
        from inference_placement.controller.router_cluster import ClusterRouterApplier

        if not isinstance(router.applier, ClusterRouterApplier):  # build_router makes it; for mypy
            raise TypeError("router.mode=cluster without the in-cluster router")
        applier = router.applier

        async def read_in_cluster(workloads: Collection[WorkloadKey]) -> list[str]:
            return await applier.activator_metrics(router_stats_filter(workloads))

        read = read_in_cluster
    elif settings.activator_metrics_url is not None:
        admin = str(settings.admin_url).rstrip("/") if settings.admin_url is not None else None

        def stats_url(workloads: Collection[WorkloadKey]) -> str | None:
            # the local router's own serverless counters of the workloads a serverless target answers at zero
            wanted = router_stats_filter(workloads)
            if admin is None or wanted is None:
                return None
            return f"{admin}{STATS_PATH}?{urlencode({'filter': wanted})}"

        read = HttpActivators([settings.activator_metrics_url], stats_url)
    else:
        return None
    watch = ActivatorWatch(
        read,
        fleet.on_wake_signals,
        interval_seconds=settings.wake_poll_seconds,
        on_poll=lambda ok: telemetry.activator_polls.labels("ok" if ok else "failed").inc(),
        wanted=router.falling_through,
    )
    router.before_fall_through = watch.poll_now
    return watch


def lease_namespace(settings: OperatorSettings) -> str:
    """Where the Lease lives: the setting, else the first watched namespace (two namespace-scoped operators of
    different namespaces are not rivals), else the Pod's own namespace, else ``default``."""
    if settings.leader_election_namespace:
        return settings.leader_election_namespace
    if settings.namespaces:
        return settings.namespaces[0]
    pod_namespace = os.environ.get("POD_NAMESPACE")
    if pod_namespace:
        return pod_namespace
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text(encoding="utf-8").strip() or "default"
    except OSError:
        return "default"


SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
"""The Pod's namespace, as the kubelet mounts it with the service account token."""


async def make_elector(settings: OperatorSettings) -> LeaseElector:
    """This replica's candidate for the Lease, on its own API client (renewals never queue behind fleet writes)."""
    api = await make_api_client(settings.kubeconfig)
    return LeaseElector(
        api,
        namespace=lease_namespace(settings),
        name=settings.leader_election_id,
        identity=settings.leader_election_identity or default_identity(),
        timings=settings.lease_timings(),
        # renews from a thread of their own: the fleet's loop can be busy for seconds (leader.py)
        renew_api=lambda: make_api_client(settings.kubeconfig),
    )


def _start_sweep(
    settings: OperatorSettings,
    api: Any,
    targets: dict[TargetName, Target],
    telemetry: Telemetry,
    fence: Callable[[], None] | None,
    tenancy: TenancyCache | None = None,
) -> asyncio.Task[None] | None:
    """The orphan sweep (``controller/sweep.py``) over the configured cloud targets, or None (off, or none): the
    configured regions (and Cloud Run project) plus, at each sweep, every ServerlessTarget's account regions and
    project regions (the workloads that name them create their resources there)."""
    from inference_placement.controller.sweep import OrphanSweep

    sweep = settings.sweep
    listers: dict[TargetName, Any] = {}
    swept: dict[TargetName, Any] = {}

    def admin_locations(provider: ServerlessProvider) -> list[tuple[str | None, list[str]]]:
        if tenancy is None:
            return []
        found = [t.spec for t in tenancy.view.targets.values() if t.spec.provider is provider]
        return [(t.project, list(t.regions)) for t in found]

    lambda_target: Any = targets.get(TargetName.LAMBDA)
    if lambda_target is not None and hasattr(lambda_target, "list_owned"):
        regions = list(sweep.lambda_regions or (settings.lambda_.region,))

        def list_lambda() -> Any:
            extra = [r for _, rs in admin_locations(ServerlessProvider.LAMBDA) for r in rs]
            return lambda_target.list_owned(regions=list(dict.fromkeys([*regions, *extra])))

        listers[TargetName.LAMBDA] = list_lambda
        swept[TargetName.LAMBDA] = lambda_target
    cloudrun_target: Any = targets.get(TargetName.CLOUDRUN)
    if cloudrun_target is not None and hasattr(cloudrun_target, "list_owned"):
        run_regions = list(sweep.cloud_run_regions or ("us-central1",))
        project = settings.cloudrun.project

        async def list_cloud_run() -> list[Any]:
            locations: dict[str, list[str]] = {project: run_regions} if project else {}
            for admin_project, admin_regions in admin_locations(ServerlessProvider.CLOUDRUN):
                if admin_project:
                    known = locations.setdefault(admin_project, [])
                    locations[admin_project] = list(dict.fromkeys([*known, *admin_regions]))
            owned: list[Any] = []
            for where, in_regions in locations.items():
                owned += await cloudrun_target.list_owned(project=where, regions=in_regions)
            return owned

        if project or tenancy is not None:
            listers[TargetName.CLOUDRUN] = list_cloud_run
            swept[TargetName.CLOUDRUN] = cloudrun_target
    if sweep.interval_seconds <= 0 or not listers:
        return None
    orphans = OrphanSweep(
        api,
        listers,
        swept,
        namespaces=settings.namespaces,
        dry_run=sweep.dry_run,
        telemetry=telemetry,
        fence=fence,
    )
    log.info("orphan sweep every %.0fs over %s%s", sweep.interval_seconds, ", ".join(t.value for t in listers),
             " (dry run)" if sweep.dry_run else "")  # fmt: skip
    return asyncio.create_task(orphans.run(sweep.interval_seconds), name="orphan-sweep")


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
    from inference_placement.routing.model import EndpointsConfig, UpstreamAddress, UpstreamTrust

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
        lambda_url_endpoint=router.lambda_url_endpoint,
        trust=UpstreamTrust(
            cloud_run_host_suffixes=router.cloud_run_host_suffixes,
            lambda_accounts=frozenset(router.lambda_accounts),
            lambda_regions=frozenset(router.lambda_regions),
            trusted_origins=frozenset(router.trusted_origins),
        ),
        cluster_domain=router.cluster_domain,
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
            service_account=router.service_account,
            automount_token=router.automount_token,
            owner_config_map=router.owner_config_map,
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


def configure_logging(log_format: str = "json", *, verbose: bool = False, log_level: str | None = None) -> None:
    """The operator's log lines: JSON (or plain text with a ``[namespace/name]`` prefix), each line about a workload
    carrying it as ``object`` (``log_context.py``), at ``log_level`` (``--verbose``: DEBUG)."""
    json_lines = log_format == "json"
    kopf.configure(
        verbose=verbose,
        log_format=kopf.LogFormat.JSON if json_lines else kopf.LogFormat.FULL,  # text: time, logger, level
        log_prefix=not json_lines,  # text lines about an object start with [namespace/name]
    )
    install_workload_logging()
    if log_level is not None:
        logging.getLogger().setLevel(log_level.upper())
    if not verbose:
        # kopf logs every handled event at INFO: one line per workload per change is noise at fleet scale.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)


async def run_operator(
    settings: OperatorSettings, *, log_format: str = "json", verbose: bool = False, log_level: str | None = None
) -> None:
    if settings.kubeconfig is not None:
        os.environ["KUBECONFIG"] = settings.kubeconfig  # read by kopf's kubeconfig login
    configure_logging(log_format, verbose=verbose, log_level=log_level)

    telemetry = Telemetry()
    if settings.metrics_port:
        telemetry.serve(settings.metrics_port)
    tune_gc()  # start-up is done: what is imported now lives for ever (gc_tuning.py)
    install_memory_report(asyncio.get_running_loop())  # only where PYTHONTRACEMALLOC asked for tracing

    elector: LeaseElector | None = None
    if settings.leader_elect:
        elector = await make_elector(settings)
        telemetry.leader.labels(elector.identity).set(0)
        log.info(
            "%s is a candidate for the lease %s/%s (it acts only while it holds it)",
            elector.identity,
            elector.namespace,
            elector.name,
        )

    async def make_fleet() -> tuple[Fleet, Callable[[], Awaitable[None]]]:
        if elector is None:
            return await build_fleet(settings, telemetry)
        return await build_fleet(settings, telemetry, fence=elector.fence, identity=elector.identity)

    liveness = f"http://0.0.0.0:{settings.health_port}/healthz" if settings.health_port else None

    def on_leadership(leading: bool) -> None:
        if elector is None:
            return
        telemetry.leader.labels(elector.identity).set(1 if leading else 0)
        if leading:
            telemetry.leader_transitions.inc()
        log.info(
            "leader status: %s %s (lease %s/%s)",
            elector.identity,
            "LEADS" if leading else "is a STANDBY",
            elector.namespace,
            elector.name,
        )

    async def run_once() -> None:
        # a fresh registry per run: its start-up handler builds a fresh fleet, primed from one LIST
        leadership = Leadership(elector, make_fleet, on_leadership) if elector is not None else None
        await kopf.operator(
            registry=build_registry(settings, make_fleet, leadership),
            standalone=settings.peering is None,
            peering_name=settings.peering,
            clusterwide=not settings.namespaces,
            namespaces=settings.namespaces,
            liveness_endpoint=liveness,
        )

    await supervise(run_once, on_restart=lambda _err: telemetry.operator_restarts.inc())
