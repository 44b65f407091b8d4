"""Operator settings: explicit, passed in, nothing parsed at import time. Units are in the names."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["OperatorSettings"]


@dataclass(frozen=True)
class OperatorSettings:
    """How the operator runs. Built by ``inference-placement run`` from flags and the environment."""

    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty = all namespaces (cluster-wide)."""
    tick_seconds: float = 30.0
    """Period of the fleet-wide loop that refreshes metrics and re-decides every workload."""
    dirty_debounce_seconds: float = 0.5
    """After a spec change, how long to wait for more changes before reconciling the changed workloads."""
    write_concurrency: int = 16
    """At most this many apiserver writes in flight (kopf's connector has no connection limit)."""
    max_metrics_staleness_seconds: float = 180.0
    """Metrics older than this are stale: placement freezes and MetricsAvailable turns False."""
    price_book_path: Path | None = None
    """YAML price book (mounted from a ConfigMap); None = the packaged default."""
    prometheus_url: str | None = None
    """Base URL of the Prometheus that holds the workloads' traffic metrics; None = no metrics (placement frozen)."""
    promql_templates_path: Path | None = None
    """YAML mapping of PromQL templates (requestRate, latencyP99, serviceSeconds, gpuUtilization, selector)."""
    metrics_range_seconds: int = 1800
    """Trailing window fetched per tick; sustain windows longer than this cannot be confirmed (the policy waits)."""
    metrics_step_seconds: int = 30
    """Resolution of that window."""
    kubeconfig: str | None = None
    """Path to a kubeconfig; None = in-cluster service account, then the default kubeconfig."""
    health_port: int = 8081
    """Port of the liveness/readiness endpoint (0 = off)."""
    metrics_port: int = 9090
    """Port of the operator's Prometheus /metrics endpoint (0 = off)."""
    peering: str | None = None
    """kopf peering name for leader election across replicas; None = standalone."""
    cloud_finalizer: str = "placement.inference.dev/cloud-resources"
    """Finalizer added only to workloads that own resources outside the cluster."""
    extra: dict[str, str] = field(default_factory=dict)
    """Free-form settings for targets (endpoints of local stand-ins in tests and the demo)."""
