"""The operator under test: ``inference-placement run`` as a subprocess, read through its /metrics and /proc."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from inference_placement.devtools.processes import log_tail, stop_process

__all__ = ["OperatorMetrics", "OperatorProcess", "parse_metrics"]

_STOP_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class OperatorMetrics:
    """One scrape of the operator's /metrics (the names are its public interface, ``controller/telemetry.py``)."""

    ticks: float
    tick_cpu_seconds: float
    tick_duration_seconds: float
    queries_per_tick: float
    workloads: float
    writes: dict[str, float]
    decisions: float
    leader: float = 0.0
    """``inference_placement_leader``: 1 while this replica holds the Lease and acts; 0 as a standby, and before the
    replica has set it (without leader election: 0 too)."""
    leader_transitions: float = 0.0
    reconciles: float = 0.0
    """``inference_placement_reconcile_duration_seconds_count``: workloads reconciled so far."""
    full_collections: float = 0.0
    """``python_gc_collections_total{generation="2"}``: the cyclic collector's full collections so far."""
    causes: dict[str, float] = field(default_factory=dict)
    """``inference_placement_reconciles_total{cause}``: workloads reconciled so far, by cause."""

    def causes_since(self, before: OperatorMetrics) -> dict[str, float]:
        """Reconciles by cause since ``before`` (the causes that moved only)."""
        moved = {cause: count - before.causes.get(cause, 0.0) for cause, count in self.causes.items()}
        return {cause: count for cause, count in sorted(moved.items()) if count}

    @property
    def total_writes(self) -> float:
        return sum(self.writes.values())


def _label(text: str, name: str) -> str:
    start = text.find(f'{name}="')
    if start < 0:
        return ""
    start += len(name) + 2
    return text[start : text.find('"', start)]


def parse_metrics(text: str) -> OperatorMetrics:
    values: dict[str, float] = {}
    writes: dict[str, float] = {}
    decisions = 0.0
    causes: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        number = float(value)
        if key.startswith("inference_placement_apiserver_writes_total{"):
            writes[_label(key, "kind")] = number
        elif key.startswith("inference_placement_reconciles_total{"):
            causes[_label(key, "cause")] = number
        elif key.startswith("inference_placement_decisions_total{"):
            decisions += number
        elif key.startswith("inference_placement_leader{"):  # labelled by the replica's identity
            values["inference_placement_leader"] = number
        else:
            values[key] = number
    return OperatorMetrics(
        ticks=values.get("inference_placement_ticks_total", 0.0),
        tick_cpu_seconds=values.get("inference_placement_tick_cpu_seconds", 0.0),
        tick_duration_seconds=values.get("inference_placement_tick_duration_seconds", 0.0),
        queries_per_tick=values.get("inference_placement_metrics_queries_per_tick", 0.0),
        workloads=values.get("inference_placement_workloads", 0.0),
        writes=writes,
        decisions=decisions,
        leader=values.get("inference_placement_leader", 0.0),
        leader_transitions=values.get("inference_placement_leader_transitions_total", 0.0),
        reconciles=values.get("inference_placement_reconcile_duration_seconds_count", 0.0),
        full_collections=values.get('python_gc_collections_total{generation="2"}', 0.0),
        causes=causes,
    )


@dataclass
class OperatorProcess:
    args: list[str]
    metrics_url: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(
        cls,
        *,
        kubeconfig: str | None,
        namespace: str,
        prometheus_url: str,
        metrics_port: int,
        tick_seconds: float,
        log_path: Path,
        extra: list[str] | None = None,
        python: list[str] | None = None,
        dry_run: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> OperatorProcess:
        args = [
            *(python or [sys.executable, "-m", "inference_placement.devtools.scale.as_deployed"]),
            "run",
            *(["--kubeconfig", kubeconfig] if kubeconfig else []),
            "--namespace",
            namespace,
            "--prometheus-url",
            prometheus_url,
            "--metrics-port",
            str(metrics_port),
            "--health-port",
            "0",
            "--tick-seconds",
            f"{tick_seconds:g}",
            "--log-format",
            "plain",
            *(["--set", "cluster.dryRun=true"] if dry_run else []),
            *(extra or []),
        ]
        op = cls(args, f"http://127.0.0.1:{metrics_port}/metrics", log_path)
        with log_path.open("ab") as log:
            op.process = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **env} if env else None,
            )
        return op

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def scrape(self) -> OperatorMetrics | None:
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=10) as response:
                return parse_metrics(response.read().decode())
        except OSError:
            return None

    def rss_mb(self) -> tuple[float, float]:
        """(resident set now, peak resident set) in MB, from /proc."""
        fields: dict[str, float] = {}
        with open(f"/proc/{self.pid}/status", encoding="ascii") as status:
            for line in status:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    fields[key] = int(rest.split()[0]) / 1024.0  # kB -> MB (MiB)
        return fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0)

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the whole process so far, from /proc."""
        with open(f"/proc/{self.pid}/stat", encoding="ascii") as stat:
            parts = stat.read().rsplit(")", 1)[1].split()
        ticks = int(parts[11]) + int(parts[12])  # utime, stime (fields 14 and 15)
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """SIGTERM (kopf's graceful stop), then SIGKILL; by this process's own PID only."""
        if self.process is not None:
            stop_process(self.process, _STOP_TIMEOUT_SECONDS)

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.log_path, lines)
