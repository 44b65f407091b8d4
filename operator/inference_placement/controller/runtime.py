"""Assemble the operator from its settings and run it under kopf."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import kopf

from inference_placement.api.spec import TargetName
from inference_placement.api.validation import parse_spec
from inference_placement.controller.fleet import Fleet
from inference_placement.controller.handlers import build_registry
from inference_placement.controller.kube import KubeWriter, make_api_client
from inference_placement.controller.reconciler import Reconciler
from inference_placement.controller.settings import OperatorSettings
from inference_placement.metrics.source import MetricsSource, NoMetricsSource
from inference_placement.policy.price_book import PriceBook, default_price_book, load_price_book
from inference_placement.targets.base import Target
from inference_placement.targets.capacity import CapacityCache
from inference_placement.targets.cluster import ClusterTarget

__all__ = ["build_fleet", "run_operator"]

log = logging.getLogger(__name__)


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
    api = await make_api_client(settings.kubeconfig)
    writer = KubeWriter(api, concurrency=settings.write_concurrency)
    capacity = CapacityCache(api)
    await capacity.start()
    targets: dict[TargetName, Target] = {
        TargetName.CLUSTER: ClusterTarget(
            api, capacity, image_pull_policy=settings.extra.get("cluster.imagePullPolicy")
        ),
    }
    targets.update(_serverless_targets(settings))
    metrics: MetricsSource = NoMetricsSource()
    if settings.prometheus_url:
        from inference_placement.metrics.prometheus import PrometheusSource

        metrics = PrometheusSource(settings.prometheus_url)
    reconciler = Reconciler(
        writer,
        targets,
        cloud_finalizer=settings.cloud_finalizer,
        max_metrics_staleness_seconds=settings.max_metrics_staleness_seconds,
    )

    def verdict(body: Mapping[str, Any]) -> tuple[bool, str] | None:
        spec, problems = parse_spec(body.get("spec"))
        if spec is None or problems or TargetName.CLUSTER not in spec.placement.allowed_targets:
            return None
        return capacity.check(spec)

    fleet = Fleet(
        reconciler=reconciler,
        metrics=metrics,
        price_book=PriceBookHolder(settings),
        capacity=capacity.snapshot,
        capacity_verdict=verdict,
        tick_seconds=settings.tick_seconds,
        debounce_seconds=settings.dirty_debounce_seconds,
    )

    async def close() -> None:
        await capacity.stop()
        await api.close()

    return fleet, close


def _serverless_targets(settings: OperatorSettings) -> dict[TargetName, Target]:
    """Cloud targets configured through --set (endpoints of stand-ins, regions); absent = not offered."""
    targets: dict[TargetName, Target] = {}
    return targets


async def run_operator(settings: OperatorSettings, *, log_format: str = "json", verbose: bool = False) -> None:
    kopf.configure(
        verbose=verbose,
        log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.PLAIN,
    )

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
