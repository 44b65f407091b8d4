"""The demo's live part: a real trace segment replayed as HTTP requests through the stable endpoint (a real Envoy
configured by the operator), a real Prometheus scraping the model servers, and the operator moving the workload
between the cluster and Cloud Run as the replayed traffic crosses its thresholds.

Printed live: every Event the operator posts about the workload (decisions, each migration step), and the replay's
progress. Returned: requests, failures, latency, migrations (from, to, reason, seconds) and cost by target in trace
time (the projected monthly cost of where it ran, for as long as it ran there, times the speed-up).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from inference_placement.devtools.replay.load import LoadReplay, schedule_from_counts
from inference_placement.devtools.replay.segment import SwingSegment, find_swing
from inference_placement.policy.budget import MONTH_SECONDS
from inference_placement.sim.traces import Trace

__all__ = [
    "LiveSettings",
    "choose_segment",
    "live_workload",
    "run_live_replay",
    "SHOWN_EVENTS",
    "seconds_per_step",
]

SHOWN_EVENTS = frozenset(
    {
        "Decision",
        "Placed",
        "MigrationStarted",
        "TrafficShifted",
        "Draining",
        "RetiringSource",
        "MigrationSucceeded",
        "MigrationRollingBack",
        "MigrationRolledBack",
        "TargetError",
        "MetricsMissing",
        "MetricsStale",
        "MetricsFresh",
    }
)


@dataclass(frozen=True)
class LiveSettings:
    speedup: float = 200.0
    """Trace seconds per wall-clock second."""
    peak_rps: float = 6.0
    """Request rate of the segment's busiest step, as replayed."""
    trace_steps_per_step: int = 20
    """Trace steps summed into one replay step (20 one-minute steps: a day's swing over ~13 hours)."""
    steps: int = 40
    sustain_seconds: int = 8
    rate_window_seconds: int = 6
    step_hold_seconds: float = 2.0


def choose_segment(trace: Trace, settings: LiveSettings) -> SwingSegment:
    return find_swing(
        trace, steps=settings.steps, smooth_steps=2, hold_steps=5, trace_steps_per_step=settings.trace_steps_per_step
    )


def seconds_per_step(trace: Trace, settings: LiveSettings) -> float:
    return trace.step_seconds * settings.trace_steps_per_step / settings.speedup


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
    """A CPU classifier allowed on the cluster and Cloud Run, with explicit thresholds from the chosen segment."""
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
                "thresholds": {
                    "mode": "explicit",
                    "offloadBelowRps": round(offload_rps, 3),
                    "reclaimAboveRps": round(reclaim_rps, 3),
                },
                "sustainSeconds": settings.sustain_seconds,
                "cooldownSeconds": 0,
            },
            "scaling": {"minReplicas": 1, "maxReplicas": 2, "targetConcurrency": 4},
            "cloudRun": {"project": project, "region": "us-central1", "concurrency": 4, "maxInstances": 5},
        },
    }


def _time(stamp: str | None) -> datetime | None:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else None


@dataclass
class _Watcher:
    """Polls the workload (status and Events) in a thread; prints Events as they come; accounts time and cost."""

    kubectl: Callable[..., str]
    namespace: str
    name: str
    console: Any
    speedup: float
    started: float = field(default_factory=time.monotonic)
    migrations: list[dict[str, Any]] = field(default_factory=list)
    seconds_by_target: dict[str, float] = field(default_factory=dict)
    cost_by_target: dict[str, float] = field(default_factory=dict)
    placement: str | None = None

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._seen_events: set[str] = set()
        self._last_finished: str | None = None
        self._last_sample: float | None = None
        self._reasons: dict[str, str] = {}
        self._thread = threading.Thread(target=self._run, name="demo-watcher", daemon=True)

    def start(self) -> None:
        self._seen_events = {uid for uid, _, _ in self._events()}  # only what happens from now on
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._poll_events()

    def _events(self) -> list[tuple[str, str, str]]:
        try:
            raw = self.kubectl(
                "get",
                "events",
                "-n",
                self.namespace,
                "--field-selector",
                f"involvedObject.name={self.name}",
                "-o",
                "json",
                check=False,
            )
            items = json.loads(raw or "{}").get("items", [])
        except ValueError:
            return []
        ordered = sorted(items, key=lambda e: (e.get("firstTimestamp") or "", e["metadata"]["name"]))
        return [(e["metadata"]["uid"], e.get("reason", ""), e.get("message", "")) for e in ordered]

    def _poll_events(self) -> None:
        for uid, reason, message in self._events():
            if uid in self._seen_events:
                continue
            self._seen_events.add(uid)
            if reason in SHOWN_EVENTS:
                elapsed = time.monotonic() - self.started
                trace_hours = elapsed * self.speedup / 3600
                style = "yellow" if reason in ("TargetError", "MigrationRollingBack", "MigrationRolledBack") else "cyan"
                self.console.print(
                    f"[dim]{elapsed:5.0f}s  trace +{trace_hours:4.1f}h[/dim]  [{style}]{reason:<18}[/{style}] {message}"
                )

    def _poll_status(self) -> None:
        try:
            raw = self.kubectl("get", "iw", self.name, "-n", self.namespace, "-o", "json", check=False)
            status = json.loads(raw or "{}").get("status") or {}
        except ValueError:
            return
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
        migration = status.get("migration") or {}
        if migration.get("source") and migration.get("startedAt"):
            self._reasons[migration["startedAt"]] = migration.get("reason", "")
        last = status.get("lastMigration") or {}
        finished = last.get("finishedAt")
        if finished and finished != self._last_finished and last.get("source"):
            end = _time(finished)
            starts = [s for s in self._reasons if (t := _time(s)) is not None and end is not None and t <= end]
            started = max(starts, default=None)
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
            self._poll_status()
            self._poll_events()
            self._stop.wait(0.5)


def run_live_replay(
    *,
    kubectl: Callable[..., str],
    console: Any,
    namespace: str,
    name: str,
    envoy_port: int,
    segment: SwingSegment,
    step_seconds: float,
    settings: LiveSettings,
    wait_placed: Callable[[], None],
) -> dict[str, Any]:
    """Replay ``segment`` through the router while the operator reacts; returns the live summary."""
    scale = segment.scale_to(settings.peak_rps, step_seconds)
    schedule = schedule_from_counts(segment.counts, seconds_per_step=step_seconds, scale=scale)
    watcher = _Watcher(kubectl, namespace, name, console, settings.speedup)
    watcher.start()
    wait_placed()
    replay = LoadReplay(envoy_port, f"{name}.{namespace}.svc", schedule, connections=4)
    total = len(segment.counts) * step_seconds
    console.print(
        f"replaying {len(schedule)} requests over {total:.0f}s ({len(segment.counts)} steps of "
        f"{settings.trace_steps_per_step} trace minutes, {settings.speedup:g}x) through http://{name}.{namespace}.svc"
    )
    replay.start()
    try:
        next_report = 30.0
        while not replay.done:
            time.sleep(0.5)
            if replay.elapsed() >= next_report:
                summary = replay.summary()
                console.print(
                    f"[dim]{replay.elapsed():5.0f}s  {summary.requests} requests, {summary.failed} failed, "
                    f"on {watcher.placement}, served by {summary.served_by}[/dim]"
                )
                next_report += 30.0
    finally:
        replay.stop()
        time.sleep(1.0)
        watcher.stop()
    summary = replay.summary()
    failures = replay.failures()
    for failure in failures[:10]:
        console.print(f"[red]failed request at {failure.sent_at:.1f}s: {failure.error or failure.status}[/red]")
    return {
        "requests": summary.requests,
        "failed": summary.failed,
        "p50_ms": summary.p50_ms,
        "p99_ms": summary.p99_ms,
        "served_by": summary.served_by,
        "migrations": watcher.migrations,
        "cost_usd_by_target": {k: round(v, 4) for k, v in watcher.cost_by_target.items()},
        "trace_hours_by_target": {k: round(v / 3600, 2) for k, v in watcher.seconds_by_target.items()},
        "trace": {"file": Path(segment.source).name, "row": segment.row, "start_minute": segment.start_step},
    }
