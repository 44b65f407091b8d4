"""The demo's loopback processes: model-server stand-ins, the Envoy router and its activator (its Prometheus:
``prometheus``).

The router serves its stats on a scrape port (only ``/stats/prometheus``); the demo's Prometheus scrapes it as job
``inference-router``: the operator's default PromQL templates read the router's per-workload, per-target series.

Everything binds 127.0.0.1, every process is started through ``processes.Processes`` and stopped by its PID. Runs
from a source checkout (the model server is ``e2e/model_server.py``).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from inference_placement.devtools.processes import Processes, free_port, wait_http
from inference_placement.routing.envoy import EnvoySettings, render_bootstrap, render_cds, render_rds
from inference_placement.routing.model import UpstreamAddress
from inference_placement.routing.xds_files import XdsKind, write_document

__all__ = [
    "ActivatorProcess",
    "EnvoyProcess",
    "ROUTER_AWS_ACCESS_KEY",
    "start_activator",
    "start_envoy",
    "start_model_server",
]

ROUTER_AWS_ACCESS_KEY = ("demo", "demo")
"""(id, secret) the router signs Lambda requests with (``aws_request_signing``): the Function URL stand-in accepts
these."""


def start_model_server(
    procs: Processes, root: Path, work: Path, served_by: str, *, service_seconds: float = 0.02
) -> str:
    """``e2e/model_server.py`` on loopback answering as ``served_by``; returns its URL."""
    port = free_port()
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "SERVED_BY": served_by,
        "SERVICE_SECONDS": str(service_seconds),
        "MODEL_NAME": served_by,
    }
    procs.start(
        f"model-{served_by}", [sys.executable, str(root / "e2e" / "model_server.py")], work / f"{served_by}.log", env
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz", 30)
    return url


@dataclass(frozen=True)
class EnvoyProcess:
    settings: EnvoySettings
    xds_dir: Path
    admin_url: str
    listen_port: int

    @property
    def stats_target(self) -> str:
        """``host:port`` of the scrape listener (only ``/stats/prometheus``)."""
        assert self.settings.stats_port is not None
        return f"127.0.0.1:{self.settings.stats_port}"

    @property
    def overflow_port(self) -> int:
        """The overflow listener's port (loopback), the operator's ``router.overflowPort``."""
        assert self.settings.overflow_port is not None
        return self.settings.overflow_port


def start_envoy(procs: Processes, binary: str, work: Path, gcp_metadata: UpstreamAddress) -> EnvoyProcess:
    """Envoy from ``render_bootstrap`` on loopback, empty routes; the operator fills ``xds_dir``. With the overflow
    listener (``settings.overflow_port``), so the operator can route a burst's refused requests to a serverless
    target (``--set router.spillover=true router.overflowPort=...``)."""
    xds_dir = work / "xds"
    xds_dir.mkdir(parents=True, exist_ok=True)
    settings = EnvoySettings(
        listen_address="127.0.0.1",
        listen_port=free_port(),
        admin_port=free_port(),
        health_port=None,
        stats_address="127.0.0.1",
        stats_port=free_port(),
        overflow_port=free_port(),  # the loopback hop of spilled requests (the operator's router.overflowPort)
        xds_dir=str(xds_dir),
        gcp_metadata=gcp_metadata,
        connect_timeout_seconds=2.0,
        route_timeout_seconds=30.0,
    )
    write_document(xds_dir / XdsKind.CDS.file_name, render_cds([], settings))
    write_document(xds_dir / XdsKind.RDS.file_name, render_rds([], settings))
    bootstrap = work / "envoy.json"
    bootstrap.write_text(json.dumps(render_bootstrap(settings), indent=1))
    procs.start(
        "envoy",
        [binary, "-c", str(bootstrap), "--concurrency", "1", "--disable-hot-restart", "--log-level", "warn"],
        work / "envoy.log",
        {
            **os.environ,
            "AWS_ACCESS_KEY_ID": ROUTER_AWS_ACCESS_KEY[0],
            "AWS_SECRET_ACCESS_KEY": ROUTER_AWS_ACCESS_KEY[1],
            "AWS_EC2_METADATA_DISABLED": "true",
        },
    )
    admin_url = f"http://127.0.0.1:{settings.admin_port}"
    wait_http(f"{admin_url}/ready", 30)
    return EnvoyProcess(settings, xds_dir, admin_url, settings.listen_port)


@dataclass(frozen=True)
class ActivatorProcess:
    port: int
    """Where a holding route's composite falls through (the operator's ``router.activatorPort``)."""
    metrics_url: str
    """Its ``/metrics`` (the operator's ``router.activatorMetricsUrl``: held requests wake a workload)."""


def start_activator(procs: Processes, work: Path, envoy: EnvoyProcess) -> ActivatorProcess:
    """The router's activator (``python -m inference_placement.routing.activator``) next to ``envoy`` on loopback,
    as in the router Pod: it holds a request that finds no ready pod until one is ready, then replays it through
    Envoy's listener."""
    port, metrics_port = free_port(), free_port()
    procs.start(
        "activator",
        [
            sys.executable,
            "-m",
            "inference_placement.routing.activator",
            f"--listen-port={port}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={metrics_port}",
            f"--envoy-url=http://127.0.0.1:{envoy.listen_port}",
            f"--admin-url={envoy.admin_url}",
        ],
        work / "activator.log",
        dict(os.environ),
    )
    wait_http(f"http://127.0.0.1:{metrics_port}/healthz", 30)
    return ActivatorProcess(port, f"http://127.0.0.1:{metrics_port}/metrics")
