"""The operator's own Prometheus metrics (``/metrics``). One registry per operator, passed in, never global.

Names are a public interface (dashboards and alerts use them): extend, never rename.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["Telemetry"]


class Telemetry:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.reconcile_duration = Histogram(
            "inference_placement_reconcile_duration_seconds",
            "Time to reconcile one workload.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.tick_duration = Gauge(
            "inference_placement_tick_duration_seconds", "Wall time of the last full fleet tick.", registry=r
        )
        self.tick_cpu = Gauge(
            "inference_placement_tick_cpu_seconds",
            "CPU time (user + system) the operator process spent on the last full fleet tick.",
            registry=r,
        )
        self.ticks = Counter("inference_placement_ticks", "Full fleet ticks completed.", registry=r)
        self.skipped_unchanged = Gauge(
            "inference_placement_reconciles_skipped_per_tick",
            "Workloads the last full tick did not reconcile because nothing they depend on had changed.",
            registry=r,
        )
        self.workloads = Gauge("inference_placement_workloads", "Workloads known to the operator.", registry=r)
        self.decisions = Counter(
            "inference_placement_decisions_total",
            "Placement decisions that changed the target or replicas, by from/to target.",
            ["from_target", "to_target"],
            registry=r,
        )
        self.migrations = Counter(
            "inference_placement_migrations_total",
            "Migrations that ended, by from/to target and outcome (Succeeded, RolledBack).",
            ["from_target", "to_target", "outcome"],
            registry=r,
        )
        self.migration_rollbacks = Counter(
            "inference_placement_migration_rollbacks_total",
            "Migrations that started rolling back, by the step that failed.",
            ["from_target", "to_target", "step"],
            registry=r,
        )
        self.target_errors = Counter(
            "inference_placement_target_errors_total",
            "Errors from a placement target's API, by target and kind (retryable, permanent, not-owned).",
            ["target", "kind"],
            registry=r,
        )
        self.projected_cost = Gauge(
            "inference_placement_projected_monthly_cost_usd",
            "Projected monthly cost of the observed traffic on each feasible target.",
            ["namespace", "workload", "target"],
            registry=r,
        )
        self.budget_burn = Gauge(
            "inference_placement_budget_burn_ratio",
            "Projected spend this month divided by the monthly budget (1 = exactly on budget).",
            ["namespace", "workload"],
            registry=r,
        )
        self.metrics_fresh = Gauge(
            "inference_placement_metrics_last_success_timestamp_seconds",
            "Unix time of the last metrics fetch that returned data.",
            registry=r,
        )
        self.metrics_queries = Gauge(
            "inference_placement_metrics_queries_per_tick",
            "Metrics queries sent in the last tick (independent of the number of workloads).",
            registry=r,
        )
        self.apiserver_writes = Counter(
            "inference_placement_apiserver_writes_total",
            "Writes to the Kubernetes API by kind (status, finalizers, event, child objects).",
            ["kind"],
            registry=r,
        )

        self.operator_restarts = Counter(
            "inference_placement_operator_restarts",
            "Times the operator started its controller again after it stopped on an error (apiserver outage).",
            registry=r,
        )
        self.warm_pings = Counter(
            "inference_placement_warm_pings",
            "Warm-up pings sent to serverless placements, by result (ok, failed).",
            ["result"],
            registry=r,
        )

        self.wakes = Counter(
            "inference_placement_wakes",
            "Cluster targets set from zero replicas to one or more, by what woke them (request: requests the "
            "router's activator held; policy: the decision alone).",
            ["woken_by"],
            registry=r,
        )
        self.wake_latency = Histogram(
            "inference_placement_wake_latency_seconds",
            "Mean hold of the requests a wake-up from zero answered (the activator's hold time over the wake).",
            buckets=(0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 60, 120, 300),
            registry=r,
        )
        self.activator_polls = Counter(
            "inference_placement_activator_polls",
            "Polls of the router's activators for wake-up signals, by result (ok, failed).",
            ["result"],
            registry=r,
        )

    def forget_workload(self, namespace: str, name: str) -> None:
        for target in ("cluster", "cloudrun", "lambda"):
            try:
                self.projected_cost.remove(namespace, name, target)
            except KeyError:
                pass
        try:
            self.budget_burn.remove(namespace, name)
        except KeyError:
            pass

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)
