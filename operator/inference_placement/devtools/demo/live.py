"""The demo's live part: a real trace segment replayed as HTTP requests through the stable endpoint (a real Envoy
configured by the operator), a real Prometheus scraping the router's stats, and the operator placing the workload
by its own thresholds (``mode: auto``): moving it between the cluster and Cloud Run as the replayed traffic crosses
its cost break-even, spilling a burst to Cloud Run, scaling the cluster to zero in an idle gap.

The segment and its replay scale are chosen from what ``policy.decide`` does at each request rate
(``policy_classifier``), not from constants fitted to a trace. Printed live: every Event the operator posts about
the workload, each replay step's requests (where each was served, failures, p99), the cluster Deployment reaching
and leaving zero replicas, and each request that arrived at zero. Returned: requests, failures, latency, requests
served per target and spilled as the router counted them (Envoy's own stats), the stretches at zero replicas,
migrations (from, to, reason, seconds) and cost by target in trace time (the projected monthly cost of where it ran,
for as long as it ran there, times the speed-up).
"""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rich.markup import escape

from inference_placement.api.spec import InferenceWorkloadSpec, TargetName
from inference_placement.devtools.replay.load import LoadReplay, ReplayResponse, schedule_from_counts
from inference_placement.devtools.replay.segment import (
    DemoSegment,
    FloatArray,
    RateClasses,
    RateClassifier,
    SearchTimings,
    find_demo_segment,
)
from inference_placement.policy.actuation import Actuators
from inference_placement.policy.budget import MONTH_SECONDS
from inference_placement.policy.capacity import ClusterCapacity
from inference_placement.policy.decide import PlacementState, TrafficWindow, decide
from inference_placement.policy.economics import workload_economics
from inference_placement.policy.price_book import PriceBook, default_price_book
from inference_placement.routing.envoy import COMPOSITE_TARGET, OVERFLOW_HOP_CLUSTER
from inference_placement.sim.traces import MinuteTrace, RequestTrace, Trace

__all__ = [
    "DEMO_CLOUD_RUN_TARGET",
    "DEMO_LAMBDA_TARGET",
    "DEMO_SERVICE_SECONDS",
    "LiveSettings",
    "RouterCounters",
    "WARNING_EVENTS",
    "ZeroGap",
    "choose_segment",
    "demo_serverless_targets",
    "demo_workload",
    "live_workload",
    "classifier",
    "policy_classifier",
    "run_live_replay",
    "served_target",
    "wait_answered",
]

WARNING_EVENTS = frozenset(
    {"TargetError", "MigrationRollingBack", "MigrationRolledBack", "MetricsMissing", "MetricsStale", "InvalidSpec"}
)
"""Events printed in yellow (every Event of the workload is printed)."""


@dataclass(frozen=True)
class LiveSettings:
    step_seconds: float = 6.0
    """Wall-clock seconds per replay step (at least the operator's rate window: a step is one measured rate)."""
    steps: int = 48
    speedup: float | None = None
    """Trace seconds per wall-clock second; None: the trace's span over twice the segment (room to choose)."""
    max_rps: float = 8.0
    """The most the replay asks of this machine's stack (the busiest replayed step); a property of the machine,
    not of the trace."""
    sustain_seconds: int = 8
    rate_window_seconds: int = 6
    metrics_range_seconds: int = 60
    """The window of request rates the operator decides on (``--metrics-range-seconds``)."""
    cooldown_seconds: int = 20
    """The demo workload's ``cooldownSeconds``, about as long as a migration here (a replica's cold start, three
    traffic steps and the drain, measured 11-21 s): a move must pay for itself over the policy's near-term horizon,
    the longer of sustain and cooldown, so the horizon spans one move."""
    tick_seconds: float = 2.0
    step_hold_seconds: float = 2.0
    connections: int = 16
    """Client connections of the replay (enough for ``max_rps`` x the service time, many times over)."""

    @property
    def smooth_steps(self) -> int:
        """Steps one measured rate averages over."""
        return max(1, math.ceil(self.rate_window_seconds / self.step_seconds))

    @property
    def forecast_steps(self) -> int:
        """Steps the policy's forecast averages over (the window of rates it decides on)."""
        return max(1, math.ceil(self.metrics_range_seconds / self.step_seconds))

    @property
    def hold_steps(self) -> int:
        """Steps a level must hold for the operator to act on it: its rate window, then the policy's near-term
        horizon (the longer of sustain and cooldown: a move pays for itself over it) and a tick."""
        seen = self.rate_window_seconds + max(self.sustain_seconds, self.cooldown_seconds) + self.tick_seconds
        return math.ceil(seen / self.step_seconds)

    def price_book(self) -> PriceBook:
        """The packaged price book with the migration's drain the demo's operator carries out
        (``migration.drainSeconds``): the policy prices a move by what it does."""
        book = default_price_book()
        return book.model_copy(
            update={"migration": book.migration.model_copy(update={"drain_seconds": self.step_hold_seconds})}
        )

    @property
    def cooldown_steps(self) -> int:
        """Steps from one migration's decision to the earliest next one (the migration itself, then the cooldown)."""
        return math.ceil(self.cooldown_seconds / self.step_seconds) + self.hold_steps

    def burst_steps(self, cold_start_seconds: float) -> int:
        """Steps a burst must last to be spilled: its rate seen (rate window and a tick), then the spill started (the
        overflow target ready, the route, the replicas' queue cap rolled out: about a replica's cold start)."""
        return math.ceil((self.rate_window_seconds + self.tick_seconds + cold_start_seconds) / self.step_seconds)

    def settle_steps(self, cold_start_seconds: float) -> int:
        """Steps from a level the operator acts on to the workload having moved: the hold, then a replica's cold
        start, the traffic steps (10/50/100%) and the drain."""
        moving = cold_start_seconds + 3 * self.step_hold_seconds + self.step_hold_seconds
        return self.hold_steps + math.ceil(moving / self.step_seconds)

    @property
    def idle_steps(self) -> int:
        """Steps without a request for the operator to see an idle window and act on it, and one step at rest."""
        seen = self.rate_window_seconds + self.sustain_seconds + self.tick_seconds
        return math.ceil(seen / self.step_seconds) + 1

    def search_timings(self, cold_start_seconds: float) -> SearchTimings:
        """The replay's timings a segment search (``replay.segment``) judges a segment by, for a workload whose
        slowest move starts a replica in ``cold_start_seconds``."""
        settle = self.settle_steps(cold_start_seconds)
        moves = (self.hold_steps, self.cooldown_steps, settle)
        return SearchTimings(self.steps, self.step_seconds, self.max_rps, self.smooth_steps, *moves)

    def trace_step_seconds(self, trace: Trace) -> float:
        """Trace seconds per replay step."""
        if self.speedup is not None:
            return self.speedup * self.step_seconds
        if isinstance(trace, RequestTrace):
            span = float(trace.arrivals_seconds[-1]) if trace.arrivals_seconds.size else trace.step_seconds
        else:
            span = trace.steps * trace.step_seconds
        return max(trace.step_seconds if isinstance(trace, MinuteTrace) else 1.0, span / (2 * self.steps))


DEMO_CLOUD_RUN_TARGET = "inference-demo-cloudrun"
"""The ServerlessTarget the demo's live workload deploys to Cloud Run through (``demo_serverless_targets``)."""


DEMO_LAMBDA_TARGET = "inference-demo-lambda"
"""The ServerlessTarget the demo's Lambda phase deploys its function through (``demo_serverless_targets``)."""


def demo_serverless_targets(
    root: Path, namespace: str, image: str, lambda_role_arn: str | None = None, lambda_images: str | None = None
) -> list[dict[str, Any]]:
    """What the demo's platform admin applies: the examples' targets (examples/admin/serverless-targets.yaml) opened
    to the demo's namespace, the live workload's Cloud Run target (project ``inference-demo``, the local model
    server image, that namespace only) and, given the role moto holds, the Lambda phase's target (that role in its
    account and region, function images under ``lambda_images``, that namespace only)."""
    docs = [d for d in yaml.safe_load_all((root / "examples" / "admin" / "serverless-targets.yaml").read_text()) if d]
    for doc in docs:
        doc["spec"]["allowedNamespaces"]["names"] = [*doc["spec"]["allowedNamespaces"].get("names", []), namespace]
    docs.append(
        {
            "apiVersion": "placement.inference.dev/v1alpha1",
            "kind": "ServerlessTarget",
            "metadata": {"name": DEMO_CLOUD_RUN_TARGET},
            "spec": {
                "provider": "cloudrun",
                "project": "inference-demo",
                "regions": ["us-central1"],
                "serviceAccount": "demo-runtime@inference-demo.iam.gserviceaccount.com",
                "allowedImages": [image],
                "allowedNamespaces": {"names": [namespace]},
            },
        }
    )
    if lambda_role_arn is not None and lambda_images is not None:
        account, region = lambda_role_arn.split(":")[4], lambda_images.split(".")[3]
        docs.append(
            {
                "apiVersion": "placement.inference.dev/v1alpha1",
                "kind": "ServerlessTarget",
                "metadata": {"name": DEMO_LAMBDA_TARGET},
                "spec": {
                    "provider": "lambda",
                    "account": account,
                    "regions": [region],
                    "roleArn": lambda_role_arn,
                    "allowedImages": [lambda_images],
                    "allowedNamespaces": {"names": [namespace]},
                },
            }
        )
    return docs


def _workload(
    name: str,
    namespace: str,
    image: str,
    settings: LiveSettings,
    project: str,
    allowed_targets: tuple[str, ...],
    target_ref: str | None = None,
) -> dict[str, Any]:
    identity: dict[str, Any] = {"targetRef": {"name": target_ref}} if target_ref else {"project": project}
    return {
        "apiVersion": "placement.inference.dev/v1alpha1",
        "kind": "InferenceWorkload",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {
                "image": image,
                "port": 8080,
                "sizeMb": 300,
                "cpu": "100m",
                "memory": "128Mi",
                "serviceSeconds": 0.02,
            },
            "slo": {"latencyP99Seconds": 0.5, "attainment": 0.99, "tolerableColdStartSeconds": 30},
            "placement": {
                "allowedTargets": list(allowed_targets),
                "thresholds": {"mode": "auto"},
                "sustainSeconds": settings.sustain_seconds,
                "cooldownSeconds": 0,
            },
            "scaling": {"minReplicas": 1, "maxReplicas": 2, "targetConcurrency": 4},
            "cloudRun": {**identity, "region": "us-central1", "concurrency": 4, "maxInstances": 5},
        },
    }


def live_workload(
    name: str,
    namespace: str,
    image: str,
    offload_rps: float,
    reclaim_rps: float,
    settings: LiveSettings,
    *,
    project: str = "inference-demo",
    allowed_targets: tuple[str, ...] = ("cluster", "cloudrun"),
) -> dict[str, Any]:
    """A CPU classifier allowed on the cluster and Cloud Run, with explicit thresholds (the live tests' workload)."""
    doc = _workload(name, namespace, image, settings, project, allowed_targets)
    doc["spec"]["placement"]["thresholds"] = {
        "mode": "explicit",
        "offloadBelowRps": round(offload_rps, 3),
        "reclaimAboveRps": round(reclaim_rps, 3),
    }
    return doc


DEMO_SERVICE_SECONDS = 0.5
"""What one prediction of the demo's live workload takes (its Pods' ``SERVICE_SECONDS``, the spec's
``serviceSeconds``): slow enough that a burst of a few requests per second exceeds what one replica admits."""


def demo_workload(
    name: str,
    namespace: str,
    image: str,
    settings: LiveSettings,
    *,
    project: str = "inference-demo",
    target_ref: str | None = DEMO_CLOUD_RUN_TARGET,
) -> dict[str, Any]:
    """The demo's live workload: the policy's own thresholds (``mode: auto``), allowed on the cluster and Cloud Run
    (through ``target_ref``; None = the deprecated inline ``project``), allowed to scale to zero, its Pods taking
    ``DEMO_SERVICE_SECONDS`` per prediction."""
    doc = _workload(name, namespace, image, settings, project, ("cluster", "cloudrun"), target_ref)
    spec = doc["spec"]
    spec["model"]["serviceSeconds"] = DEMO_SERVICE_SECONDS
    spec["model"]["env"] = [{"name": "SERVICE_SECONDS", "value": str(DEMO_SERVICE_SECONDS)}]
    spec["slo"]["latencyP99Seconds"] = 2 * DEMO_SERVICE_SECONDS  # a request may wait one service time
    spec["scaling"] = {"minReplicas": 0, "maxReplicas": 4, "targetConcurrency": 4}
    spec["placement"]["cooldownSeconds"] = settings.cooldown_seconds
    return doc


def policy_classifier(
    spec: InferenceWorkloadSpec,
    settings: LiveSettings,
    actuators: Actuators,
    *,
    serverless: TargetName = TargetName.CLOUDRUN,
    measured: Callable[[float], Sequence[tuple[float, ...]]] | None = None,
) -> RateClasses:
    """What ``policy.decide`` does at each steady request rate, on a grid up to 1.5 x ``max_rps`` (a rate between
    grid points takes the class of the next one up), over the window the operator measures: on the cluster, whether
    it offloads to ``serverless`` (the rate is below its offload threshold: its break-even less hysteresis) and
    whether it keeps base replicas and spills the overflow; on ``serverless``, whether it reclaims the cluster (above
    its break-even plus hysteresis). The same function the operator runs, asked rather than second-guessed.
    ``measured``: rate -> the series of rates (one per tick, ``metrics_range_seconds`` long) the operator may
    measure at it; a class holds when it holds for each (default: the rate itself, steady)."""
    grid = np.geomspace(0.01, settings.max_rps * 1.5, 96)
    points = max(2, round(settings.metrics_range_seconds / settings.tick_seconds))
    now = datetime(2026, 1, 1, tzinfo=UTC)
    on_cluster = PlacementState(TargetName.CLUSTER, None, 0.0)
    on_serverless = PlacementState(serverless, None, 0.0)
    book, capacity = settings.price_book(), ClusterCapacity()
    below, above, spills = [], [], []
    for rate in grid:
        series = measured(float(rate)) if measured is not None else [(float(rate),) * points]
        # the router measures the demo's model server, which takes the spec's service time per request: its
        # per-step means show a constant law (``forecast.service_scv``), as the operator's windows do
        service = spec.model.service_seconds
        windows = [
            TrafficWindow(
                step_seconds=settings.tick_seconds,
                rps=rps,
                observed_p99_seconds=None,
                end=now,
                service_seconds=service,
                service_per_step=(service,) * len(rps),
            )
            for rps in series
        ]
        stays = [decide(spec, w, on_cluster, book, capacity, now, actuators=actuators) for w in windows]
        backs = [decide(spec, w, on_serverless, book, capacity, now, actuators=actuators) for w in windows]
        below.append(all(stay.target is serverless for stay in stays))
        above.append(all(back.target is TargetName.CLUSTER for back in backs))
        spills.append(all(stay.spill is not None and stay.target is TargetName.CLUSTER for stay in stays))
    return RateClasses(np.array(below), np.array(above), np.array(spills))


def classifier(grid_classes: RateClasses, settings: LiveSettings) -> RateClassifier:
    """``policy_classifier``'s grid as a function of any rates. No request at all is no class: the cluster may
    scale to zero there (the idle-gap plan), which costs nothing to offload from."""
    grid = np.geomspace(0.01, settings.max_rps * 1.5, grid_classes.burst.size)

    def classify(rates: FloatArray) -> RateClasses:
        idx = np.minimum(np.searchsorted(grid, rates), grid.size - 1)
        zero = rates <= 0
        return RateClasses(
            grid_classes.below_offload[idx] & ~zero,
            grid_classes.above_reclaim[idx] & ~zero,
            grid_classes.burst[idx] & ~zero,
        )

    return classify


def choose_segment(
    trace: Trace, spec: InferenceWorkloadSpec, settings: LiveSettings, actuators: Actuators
) -> DemoSegment:
    """The segment of ``trace`` and its replay scale holding the most of a swing across the policy's break-even, a
    burst it serves by spillover and an idle gap (``replay.segment.find_demo_segment``)."""
    cluster_cold_start = workload_economics(spec, settings.price_book())[TargetName.CLUSTER].cold_start_seconds
    return find_demo_segment(
        trace,
        classifier(policy_classifier(spec, settings, actuators), settings),
        step_seconds=settings.trace_step_seconds(trace),
        idle_steps=settings.idle_steps,
        burst_steps=settings.burst_steps(cluster_cold_start),
        forecast_steps=settings.forecast_steps,
        **asdict(settings.search_timings(cluster_cold_start)),
    )


def _time(stamp: str | None) -> datetime | None:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else None


def served_target(served_by: str | None) -> str:
    """The target a response came from, by its ``x-served-by``: the serverless stand-ins name themselves; a Pod
    answers with its own name."""
    return served_by if served_by in ("cloudrun", "lambda") else "cluster"


@dataclass
class RouterCounters:
    """Per-target request counts of one workload from the router's own stats (Envoy's admin ``/stats``), kept across
    the counter resets of a cluster that was removed and added again (a target retired and redeployed)."""

    admin_url: str
    namespace: str
    name: str
    totals: dict[str, float] = field(default_factory=dict)
    _last: dict[str, float] = field(default_factory=dict)

    def poll(self) -> None:
        try:
            with urllib.request.urlopen(f"{self.admin_url}/stats?usedonly", timeout=5) as response:
                text = response.read().decode()
        except OSError:
            return
        prefix = f"cluster.ip|{self.namespace}|{self.name}|"
        seen: dict[str, float] = {}
        for line in text.splitlines():
            key, _, value = line.partition(": ")
            if not key.startswith(("cluster.", "cluster.inference-overflow.")):
                continue
            if key.startswith(prefix):
                key = key[len(prefix) :]
            elif key.startswith(f"cluster.{OVERFLOW_HOP_CLUSTER}."):
                key = key[len("cluster.") :]
            else:
                continue
            if key.endswith((".upstream_rq_total", ".upstream_rq_retry")):
                with suppress(ValueError):
                    seen[key] = float(value)
        for key, value in seen.items():
            before = self._last.get(key, 0.0)
            self.totals[key] = self.totals.get(key, 0.0) + (value - before if value >= before else value)
        self._last = {**{k: 0.0 for k in self._last}, **seen}  # a cluster gone and back starts from zero

    def count(self, key: str) -> int:
        return round(self.totals.get(key, 0.0))

    def served_by(self) -> dict[str, int]:
        """Requests each target answered: the overflow targets' every request (spilled ones included); the pods'
        first attempts less those refused and retried on the overflow target (the composite's retries)."""
        refused = self.count(f"{COMPOSITE_TARGET}.upstream_rq_retry")
        cluster = self.count(f"{TargetName.CLUSTER.value}.upstream_rq_total") - refused
        return {
            TargetName.CLUSTER.value: max(0, cluster),
            TargetName.CLOUDRUN.value: self.count(f"{TargetName.CLOUDRUN.value}.upstream_rq_total"),
            TargetName.LAMBDA.value: self.count(f"{TargetName.LAMBDA.value}.upstream_rq_total"),
        }

    def spilled(self) -> int:
        """Requests the composite sent over the overflow hop: refused by the pods at their queue cap, or finding no
        pod at all."""
        return self.count(f"{OVERFLOW_HOP_CLUSTER}.upstream_rq_total")


@dataclass
class ZeroGap:
    """A stretch with the cluster Deployment at zero replicas, on the replay's clock (seconds since it started)."""

    start: float
    woken_at: float | None = None
    """When the Deployment was asked for a replica again."""
    ready_at: float | None = None
    """When a replica was ready."""


@dataclass
class _Watcher:
    """Polls the workload, its Deployment and Events (one kubectl call) and the router's stats in a thread; prints
    Events as they come; accounts time and cost; records the stretches at zero replicas."""

    kubectl: Callable[..., str]
    namespace: str
    name: str
    console: Any
    speedup: float
    router: RouterCounters
    started: float = field(default_factory=time.monotonic)
    migrations: list[dict[str, Any]] = field(default_factory=list)
    seconds_by_target: dict[str, float] = field(default_factory=dict)
    cost_by_target: dict[str, float] = field(default_factory=dict)
    placement: str | None = None
    replicas: int | None = None
    ready_replicas: int | None = None
    spill_step: str | None = None
    migrating: bool = False
    migration_step: str | None = None
    zero_answer: str | None = None
    """Who answers a request that finds no pod (``status.scaleToZero.answeredBy``), shown with a failing step."""
    gaps: list[ZeroGap] = field(default_factory=list)
    """The Deployment at zero replicas, as seen here (to show the requests that arrived then)."""
    wakes: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The operator's record of each wake-up from zero (``status.scaleToZero.lastWake``) by ``wokenAt``."""
    replay_started: float | None = None

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._seen_events: set[str] = set()
        self._last_finished: str | None = None
        self._last_sample: float | None = None
        self._reasons: dict[str, str] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="demo-watcher", daemon=True)

    def start(self) -> None:
        self._seen_events = {uid for uid, _, _ in self._events(self._read())}  # only what happens from now on
        self.router.poll()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        items = self._read()
        self._poll_events(items)
        self.router.poll()

    def zero_gaps(self) -> list[ZeroGap]:
        with self._lock:
            return [replace(g) for g in self.gaps]

    def now(self) -> float:
        """Seconds on the replay's clock (negative before it started)."""
        return time.monotonic() - (self.replay_started if self.replay_started is not None else self.started)

    def _read(self) -> list[dict[str, Any]]:
        try:
            raw = self.kubectl(
                "get", "inferenceworkloads,deployments,events", "-n", self.namespace, "-o", "json", check=False
            )
            items: list[dict[str, Any]] = json.loads(raw or "{}").get("items", [])
        except ValueError:
            return []
        return items

    def _events(self, items: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
        events = [
            e for e in items if e.get("kind") == "Event" and (e.get("involvedObject") or {}).get("name") == self.name
        ]
        ordered = sorted(events, key=lambda e: (e.get("firstTimestamp") or "", e["metadata"]["name"]))
        return [(e["metadata"]["uid"], e.get("reason", ""), e.get("message", "")) for e in ordered]

    def _poll_events(self, items: list[dict[str, Any]]) -> None:
        for uid, reason, message in self._events(items):
            if uid in self._seen_events:
                continue
            self._seen_events.add(uid)
            elapsed = self.now()
            trace_hours = max(0.0, elapsed) * self.speedup / 3600
            style = "yellow" if reason in WARNING_EVENTS else "cyan"
            self.console.print(
                f"[dim]{elapsed:5.0f}s  trace +{trace_hours:4.2f}h[/dim]  [{style}]{reason:<18}[/{style}] {message}"
            )

    def _poll_deployment(self, items: list[dict[str, Any]], status: dict[str, Any]) -> None:
        name = ((status.get("targets") or {}).get("cluster") or {}).get("name")
        deployment = next((i for i in items if i.get("kind") == "Deployment" and i["metadata"]["name"] == name), None)
        if deployment is None:
            replicas = ready = None
        else:
            replicas = int((deployment.get("spec") or {}).get("replicas", 1))
            ready = int((deployment.get("status") or {}).get("readyReplicas") or 0)
        at = self.now()
        with self._lock:
            gap = self.gaps[-1] if self.gaps else None
            on_cluster = self.placement == TargetName.CLUSTER.value and not self.migrating
            if on_cluster and replicas == 0 and ready == 0 and (gap is None or gap.woken_at is not None):
                if self.replay_started is not None:
                    self.gaps.append(ZeroGap(at))
            elif gap is not None and gap.woken_at is None and replicas:
                gap.woken_at = at
            if gap is not None and gap.woken_at is not None and gap.ready_at is None and ready:
                gap.ready_at = at
            self.replicas, self.ready_replicas = replicas, ready

    def _poll_status(self, items: list[dict[str, Any]]) -> None:
        workload = next(
            (i for i in items if i.get("kind") == "InferenceWorkload" and i["metadata"]["name"] == self.name), None
        )
        status: dict[str, Any] = (workload or {}).get("status") or {}
        self.migrating = bool(status.get("migration"))
        self.migration_step = (status.get("migration") or {}).get("step")
        self.zero_answer = (status.get("scaleToZero") or {}).get("answeredBy")
        self._poll_deployment(items, status)
        now = time.monotonic()
        placement = status.get("placement")
        if self._last_sample is not None and self.placement is not None:
            trace_seconds = (now - self._last_sample) * self.speedup
            self.seconds_by_target[self.placement] = self.seconds_by_target.get(self.placement, 0.0) + trace_seconds
            monthly = float(status.get("currentMonthlyCostUsd") or 0.0)
            cost = monthly * trace_seconds / MONTH_SECONDS
            self.cost_by_target[self.placement] = self.cost_by_target.get(self.placement, 0.0) + cost
        self._last_sample = now
        self.placement = placement
        self.spill_step = (status.get("spill") or {}).get("step")
        wake = (status.get("scaleToZero") or {}).get("lastWake")
        if wake and wake.get("wokenAt"):
            with self._lock:
                self.wakes[wake["wokenAt"]] = wake
        migration = status.get("migration") or {}
        if migration.get("source") and migration.get("startedAt"):
            self._reasons[migration["startedAt"]] = migration.get("reason", "")
        last = status.get("lastMigration") or {}
        finished = last.get("finishedAt")
        if finished and finished != self._last_finished and last.get("source"):
            end = _time(finished)
            # the record carries its start; the in-flight migration may have begun and ended between two polls
            started = last.get("startedAt") or max(
                (s for s in self._reasons if (t := _time(s)) is not None and end is not None and t <= end), default=None
            )
            start = _time(started)
            self.migrations.append(
                {
                    "from": last.get("source"),
                    "to": last.get("target"),
                    "reason": self._reasons.get(started or "", last.get("message", "")),
                    "seconds": (end - start).total_seconds() if end is not None and start is not None else None,
                    "outcome": last.get("outcome"),
                }
            )
        self._last_finished = finished or self._last_finished

    def _run(self) -> None:
        while not self._stop.is_set():
            items = self._read()
            self._poll_status(items)
            self._poll_events(items)
            self.router.poll()
            self._stop.wait(0.5)


def _step_line(index: int, responses: list[ReplayResponse], watcher: _Watcher, trace_hours: float) -> str:
    by_target = Counter(served_target(r.served_by) for r in responses if r.ok)
    failed = sum(1 for r in responses if not r.ok)
    latencies = sorted(r.latency_seconds for r in responses if r.ok)
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000 if latencies else 0.0
    served = ", ".join(f"{t} {n}" for t, n in sorted(by_target.items())) or "-"
    spill = f", spill {watcher.spill_step}" if watcher.spill_step else ""
    fail = "0 failed"
    context = ""
    if failed:
        first = next(r for r in responses if not r.ok)
        said = f" {first.detail}" if first.detail else ""
        fail = f"[red]{failed} failed[/red] (first: {escape((first.error or f'HTTP {first.status}') + said)})"
        moving = f", migrating ({watcher.migration_step})" if watcher.migrating else ""
        context = f"{moving}, answered at zero by {watcher.zero_answer or '-'}"
    return (
        f"[dim]step {index:2d}  trace +{trace_hours:4.2f}h[/dim]  {len(responses):3d} requests: {served}; {fail}; "
        f"p99 {p99:.0f} ms | on {watcher.placement}, {watcher.replicas if watcher.replicas is not None else '-'} "
        f"replica(s){spill}{context}"
    )


def wait_answered(port: int, host: str, console: Any, timeout: float = 60.0) -> float:
    """Seconds from the workload's Ready until the stable endpoint answered a request with 2xx: one request a
    second through the router, as the replay sends them. Ready means the router serves the route (the operator
    places a workload only once the router confirmed it), so this is one request and 0 s; when it is not, what
    answered meanwhile is printed, and the replay starts anyway after ``timeout``."""
    started = time.monotonic()
    refused: list[ReplayResponse] = []
    while True:
        probe = LoadReplay(port, host, [0.0], connections=1, timeout_seconds=10.0).start()
        probe.join(timeout=15.0)
        answered = probe.snapshot()
        if answered and answered[0].ok:
            break
        refused += answered
        if time.monotonic() - started > timeout:
            break
        time.sleep(1.0)
    waited = round(time.monotonic() - started, 1) if refused else 0.0
    if refused:
        first = refused[0]
        said = escape(f"{first.error or f'HTTP {first.status}'} {first.detail or ''}".strip())
        console.print(
            f"[yellow]the stable endpoint answered {waited:g}s after the workload was Ready; {len(refused)} "
            f"request(s) before that were refused, the first: {said}[/yellow]",
            soft_wrap=True,
        )
    return waited


def run_live_replay(
    *,
    kubectl: Callable[..., str],
    console: Any,
    namespace: str,
    name: str,
    envoy_port: int,
    admin_url: str,
    segment: DemoSegment,
    settings: LiveSettings,
    wait_placed: Callable[[], None],
    at_step: Mapping[int, Callable[[], None]] | None = None,
) -> dict[str, Any]:
    """Replay ``segment`` through the router while the operator reacts; returns the live summary. Prints each
    replay step's requests (where each was served, failures, p99) as the step ends, every Event as it comes, and
    each request that arrived while the cluster had no replica. ``at_step``: step -> what the demo does (once) as
    the replay reaches that step (a team's edit of the workload)."""
    step_seconds = settings.step_seconds
    speedup = segment.step_seconds / step_seconds
    schedule = schedule_from_counts(segment.counts, seconds_per_step=step_seconds, scale=segment.scale)
    router = RouterCounters(admin_url, namespace, name)
    watcher = _Watcher(kubectl, namespace, name, console, speedup, router)
    watcher.start()
    wait_placed()
    first_answer = wait_answered(envoy_port, f"{name}.{namespace}.svc", console)
    replay = LoadReplay(envoy_port, f"{name}.{namespace}.svc", schedule, connections=settings.connections)
    total = len(segment.counts) * step_seconds
    console.print(
        f"replaying {len(schedule)} requests over {total:.0f}s ({len(segment.counts)} steps of "
        f"{segment.step_seconds:g} trace seconds, {speedup:.3g}x) through http://{name}.{namespace}.svc"
    )
    router.poll()
    baseline = dict(router.totals)
    replay.start()
    watcher.replay_started = replay.started_at
    shown_zero: set[int] = set()
    pending = dict(at_step or {})
    try:
        step = 0
        while not replay.done or step < len(segment.counts):
            time.sleep(0.25)
            for at in sorted(a for a in pending if replay.elapsed() >= a * step_seconds):
                pending.pop(at)()
            responses = replay.snapshot()
            gaps = watcher.zero_gaps()
            for i, r in enumerate(responses):
                if i in shown_zero:
                    continue
                gap = next(
                    (g for g in gaps if g.start <= r.sent_at and (g.ready_at is None or r.sent_at < g.ready_at)), None
                )
                if gap is not None:
                    shown_zero.add(i)
                    outcome = f"HTTP {r.status}" if r.status else (r.error or "error")
                    console.print(
                        f"[dim]{r.sent_at:5.1f}s[/dim]  [magenta]{'at zero':<18}[/magenta] request -> {outcome} "
                        f"from {served_target(r.served_by)} in {r.latency_seconds * 1000:.0f} ms"
                    )
            while step < len(segment.counts) and (replay.elapsed() >= (step + 1) * step_seconds + 1.0 or replay.done):
                lo, hi = step * step_seconds, (step + 1) * step_seconds
                in_step = [r for r in responses if lo <= r.sent_at < hi]
                console.print(_step_line(step, in_step, watcher, hi * speedup / 3600))
                step += 1
            if replay.done and step >= len(segment.counts):
                break
    finally:
        replay.stop()
        time.sleep(1.0)
        watcher.stop()
    for key, value in baseline.items():
        router.totals[key] = router.totals.get(key, 0.0) - value
    summary = replay.summary()
    failures = sorted(replay.failures(), key=lambda r: r.sent_at)
    for failure in failures[:10]:
        said = f" {escape(failure.detail)}" if failure.detail else ""
        console.print(
            f"[red]failed request at {failure.sent_at:.1f}s: {failure.error or failure.status}{said}[/red]",
            soft_wrap=True,
        )
    if failures:
        console.print(
            f"[red]{len(failures)} failed request(s) sent from {min(f.sent_at for f in failures):.1f}s to "
            f"{max(f.sent_at for f in failures):.1f}s: {summary.errors}[/red]"
        )
    return {
        "requests": summary.requests,
        "failed": summary.failed,
        "p50_ms": summary.p50_ms,
        "p99_ms": summary.p99_ms,
        "served_by": router.served_by(),
        "served_by_client": dict(Counter(served_target(r.served_by) for r in replay.responses if r.ok)),
        "errors": summary.errors,
        "first_answer_seconds": first_answer,
        "spilled_requests": router.spilled(),
        "scale_to_zero": [_wake_summary(w) for _, w in sorted(watcher.wakes.items())],
        "migrations": watcher.migrations,
        "cost_usd_by_target": {k: round(v, 4) for k, v in watcher.cost_by_target.items()},
        "trace_hours_by_target": {k: round(v / 3600, 2) for k, v in watcher.seconds_by_target.items()},
        "trace": {
            "file": Path(segment.source).name,
            "row": segment.row,
            "start_minute": round(segment.start_step * segment.step_seconds / 60, 1),
            "step_seconds": segment.step_seconds,
            "speedup": round(speedup, 2),
            "scale": round(segment.scale, 4),
            "features": segment.features,
            "lacks": list(segment.lacks),
        },
    }


def _wake_summary(wake: dict[str, Any]) -> dict[str, Any]:
    """One stretch at zero replicas as the operator recorded it (``status.scaleToZero.lastWake``): how long it was
    at zero (seconds), whether requests woke it (held by the router's activator, or answered by the serverless
    target the router fell through to; else the policy's own decision), and the wake latency: the mean time those
    requests were held until a replica was ready (the activator's hold-time histogram), or their mean time at the
    router on the serverless target; None when none was answered yet."""
    latency = wake.get("wakeLatencyMs")
    return {
        "seconds": round(float(wake.get("zeroSeconds") or 0.0), 1),
        "woken_by_request": bool(wake.get("wokenByRequest")),
        "wake_latency_ms": round(float(latency)) if latency is not None else None,
    }
