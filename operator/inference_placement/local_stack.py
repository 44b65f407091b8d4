"""The loopback processes of a local run (the demo): model-server stand-ins, the Envoy router, a scraping Prometheus.

Prometheus scrapes the router's stats port (``/stats/prometheus``, job ``inference-router``): the operator's default
PromQL templates read the router's per-workload, per-target series from there.

Everything binds 127.0.0.1, every process is started through ``Processes`` and stopped by its PID. Runs from a
source checkout (the model server is ``e2e/model_server.py``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from inference_placement.metrics.promql import ROUTER_JOB
from inference_placement.routing.envoy import STATS_PATH, EnvoySettings, render_bootstrap, render_cds, render_rds
from inference_placement.routing.model import UpstreamAddress
from inference_placement.routing.xds_files import XdsKind, write_document

__all__ = [
    "EnvoyProcess",
    "Processes",
    "free_port",
    "prometheus_config",
    "start_envoy",
    "start_model_server",
    "start_prometheus",
    "wait_http",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float) -> None:
    """Until ``url`` answers at all (any HTTP status)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")


@dataclass
class Processes:
    """Every process started here, stopped by PID at the end (in reverse order)."""

    started: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(
        self, name: str, args: Sequence[str], log: Path, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with log.open("ab") as handle:
            proc = subprocess.Popen(
                list(args),
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(env) if env is not None else None,
                start_new_session=True,
            )
        self.started.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def stop_all(self) -> None:
        for _, proc in reversed(self.started):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in reversed(self.started):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


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


def start_envoy(procs: Processes, binary: str, work: Path, gcp_metadata: UpstreamAddress) -> EnvoyProcess:
    """Envoy from ``render_bootstrap`` on loopback, empty routes; the operator fills ``xds_dir``."""
    xds_dir = work / "xds"
    xds_dir.mkdir(parents=True, exist_ok=True)
    settings = EnvoySettings(
        listen_address="127.0.0.1",
        listen_port=free_port(),
        admin_port=free_port(),
        health_port=None,
        stats_address="127.0.0.1",
        stats_port=free_port(),
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
            "AWS_ACCESS_KEY_ID": "demo",
            "AWS_SECRET_ACCESS_KEY": "demo",
            "AWS_EC2_METADATA_DISABLED": "true",
        },
    )
    admin_url = f"http://127.0.0.1:{settings.admin_port}"
    wait_http(f"{admin_url}/ready", 30)
    return EnvoyProcess(settings, xds_dir, admin_url, settings.listen_port)


def prometheus_config(
    targets: Sequence[tuple[str, Mapping[str, str]]], *, router: Sequence[str] = (), scrape_seconds: int = 1
) -> dict[str, object]:
    """Scrape config: the model servers ``targets`` ((host:port, extra labels), job ``model-servers``; optional
    extras such as GPU metrics) and the routers' stats ports ``router`` (host:port, job ``inference-router``,
    ``/stats/prometheus``, the router's own ``namespace``/``workload``/``target`` labels kept)."""
    jobs: list[dict[str, object]] = []
    if targets:
        jobs.append(
            {
                "job_name": "model-servers",
                "static_configs": [{"targets": [target], "labels": dict(labels)} for target, labels in targets],
            }
        )
    if router:
        jobs.append(
            {
                "job_name": ROUTER_JOB,
                "metrics_path": STATS_PATH,
                "honor_labels": True,
                "static_configs": [{"targets": list(router)}],
            }
        )
    return {
        "global": {"scrape_interval": f"{scrape_seconds}s", "evaluation_interval": f"{scrape_seconds}s"},
        "scrape_configs": jobs,
    }


def start_prometheus(
    procs: Processes,
    work: Path,
    targets: Sequence[tuple[str, Mapping[str, str]]],
    *,
    router: Sequence[str] = (),
    scrape_seconds: int = 1,
) -> str:
    """A real Prometheus scraping ``targets`` and the routers' stats ports ``router`` on loopback
    (``prometheus_config``); returns its URL."""
    config = prometheus_config(targets, router=router, scrape_seconds=scrape_seconds)
    directory = work / "prometheus"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    procs.start(
        "prometheus",
        [
            "prometheus",
            f"--config.file={directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={directory / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        work / "prometheus.log",
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/-/ready", 30)
    return url
