"""Real Prometheus servers on loopback (over backfilled blocks, or scraping targets), and a switch in front of them.

The fleet-scale benchmark points the operator at the switch; flipping it from the low-traffic server to the
high-traffic one is the fleet-wide traffic shift (every workload's window changes at once, at a known instant). The
switch also counts the range queries it forwarded, a check on the operator's own ``metrics_queries_per_tick``. The
demo's Prometheus scrapes the model servers; the test fixtures serve backfilled OpenMetrics.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from inference_placement.devtools.processes import free_port, log_tail, spawn, stop_process, wait_http
from inference_placement.metrics.promql import ROUTER_JOB
from inference_placement.routing.envoy import STATS_PATH

__all__ = [
    "prometheus_config",
    "PrometheusServer",
    "Switch",
    "backfill",
    "find_binaries",
    "prometheus_command",
    "start_prometheus",
]

_READY_TIMEOUT_SECONDS = 120.0
_STOP_TIMEOUT_SECONDS = 15.0
_START_ATTEMPTS = 3


def find_binaries() -> tuple[str, str]:
    """(prometheus, promtool) from PATH or /usr/bin (Debian's ``prometheus`` package)."""
    found = [shutil.which(n) or shutil.which(n, path="/usr/bin:/usr/local/bin") for n in ("prometheus", "promtool")]
    if found[0] is None or found[1] is None:
        raise RuntimeError("prometheus and promtool are needed (apt-get install prometheus, or e2e/setup.sh)")
    return found[0], found[1]


def backfill(promtool: str, openmetrics: Path, tsdb: Path, *, timeout_seconds: float = 1800) -> None:
    """``promtool tsdb create-blocks-from openmetrics``; the text file is removed afterwards (it can be large)."""
    result = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(openmetrics), str(tsdb)],
        capture_output=True,
        text=True,
        timeout=timeout_seconds,
        check=False,
    )
    openmetrics.unlink(missing_ok=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"promtool backfill failed ({result.returncode}): {(result.stderr or result.stdout)[-2000:]}"
        )


@dataclass
class PrometheusServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    directory: Path = field(default_factory=Path)
    """Where its configuration (``prometheus.yml``), TSDB (``tsdb``) and logs are."""

    def stop(self) -> None:
        """Stop this server, by its own PID only; idempotent."""
        stop_process(self.process, _STOP_TIMEOUT_SECONDS)

    def log_tail(self, lines: int = 20) -> str:
        return log_tail(self.log_path, lines)

    def api_requests(self, handler: str = "/api/v1/query_range") -> int:
        """How many requests to ``handler`` this server has answered (``prometheus_http_requests_total``)."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as response:
            text = response.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith("prometheus_http_requests_total{") and f'handler="{handler}"' in line:
                total += float(line.rsplit(" ", 1)[1])
        return int(total)


def prometheus_command(
    prometheus: str, config: Path, tsdb: Path, port: int | str, *, web_config: Path | None = None
) -> list[str]:
    """A loopback ``prometheus`` serving ``tsdb`` (backfilled blocks are judged against the newest block: keep old
    backfills, whatever the version's default retention); ``web_config``: its ``--web.config.file`` (TLS, basic
    auth users; Prometheus reads it again for every request)."""
    command = [
        prometheus,
        f"--config.file={config}",
        f"--storage.tsdb.path={tsdb}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=100y",
        "--log.level=warn",
    ]
    if web_config is not None:
        command.append(f"--web.config.file={web_config}")
    return command


def prometheus_config(
    targets: Sequence[tuple[str, Mapping[str, str]]], *, router: Sequence[str] = (), scrape_seconds: int = 15
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
    interval = f"{scrape_seconds}s"
    return {"global": {"scrape_interval": interval, "evaluation_interval": interval}, "scrape_configs": jobs}


def start_prometheus(
    prometheus: str,
    directory: Path,
    *,
    scrape_targets: Sequence[tuple[str, Mapping[str, str]]] = (),
    router_targets: Sequence[str] = (),
    scrape_seconds: int = 15,
    ready_timeout_seconds: float = _READY_TIMEOUT_SECONDS,
    config_text: str | None = None,
    web_config: Mapping[str, object] | None = None,
    ready_headers: Mapping[str, str] | None = None,
    ready_context: ssl.SSLContext | None = None,
) -> PrometheusServer:
    """Serve ``directory / "tsdb"`` on a free loopback port once it answers ready; no scrape jobs unless targets
    are given (``prometheus_config``) or a whole ``config_text``, so backfilled data never changes under its
    reader. Another port is tried when the chosen one was taken in between.

    ``web_config``: Prometheus' web configuration (``tls_server_config``: served on ``https://``;
    ``basic_auth_users``: bcrypt hashes), written to ``directory / "web.yml"`` (rewrite it to change the users:
    Prometheus reads it for every request); the readiness probe then sends ``ready_headers`` and checks the
    certificate with ``ready_context``."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "prometheus.yml"
    config.write_text(
        config_text
        or yaml.safe_dump(prometheus_config(scrape_targets, router=router_targets, scrape_seconds=scrape_seconds))
    )
    web: Path | None = None
    if web_config is not None:
        web = directory / "web.yml"
        web.write_text(yaml.safe_dump(dict(web_config)))
    scheme = "https" if web_config is not None and "tls_server_config" in web_config else "http"
    for attempt in range(_START_ATTEMPTS):
        port = free_port()
        log_path = directory / f"prometheus-{attempt}.log"
        process = spawn(prometheus_command(prometheus, config, directory / "tsdb", port, web_config=web), log_path)
        server = PrometheusServer(f"{scheme}://127.0.0.1:{port}", process, log_path, directory)
        try:
            wait_http(
                f"{server.url}/-/ready",
                ready_timeout_seconds,
                ok_only=True,
                process=process,
                headers=ready_headers,
                context=ready_context,
            )
        except RuntimeError:
            server.stop()
            if "address already in use" not in server.log_tail():
                raise RuntimeError(f"prometheus did not become ready:\n{server.log_tail()}") from None
            continue
        return server
    raise RuntimeError("prometheus found no free loopback port")


class _QuietServer(ThreadingHTTPServer):
    """A client that gave up on an answer (the operator's query timeout) is no error of the switch's: it is not
    printed with a traceback (at 10,000 workloads each timed-out fetch printed several)."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class Switch:
    """An HTTP pass-through on a loopback port to one of several upstreams; ``flip(i)`` changes which."""

    def __init__(self, upstreams: list[str], *, required_headers: Mapping[str, str] | None = None) -> None:
        self.upstreams = upstreams
        self.current = 0
        self.range_queries = 0
        self.required_headers: dict[str, str] = dict(required_headers or {})
        """Headers every request must carry, or it is answered 401 and not forwarded: the switch then stands in
        for a managed Prometheus' gateway (a bearer token, a tenant's ``X-Scope-OrgID``). Change it to rotate."""
        self.refused = 0
        self._lock = threading.Lock()
        switch = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self._forward(None)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self._forward(self.rfile.read(length) if length else b"")

            def _forward(self, body: bytes | None) -> None:
                with switch._lock:
                    upstream = switch.upstreams[switch.current]
                    missing = [k for k, v in switch.required_headers.items() if self.headers.get(k) != v]
                    if missing:
                        switch.refused += 1
                if missing:
                    payload = f"missing or wrong {', '.join(missing)}".encode()
                    self.send_response(401)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                with switch._lock:
                    if self.path.startswith("/api/v1/query_range"):
                        switch.range_queries += 1
                request = urllib.request.Request(upstream + self.path, data=body, method=self.command)
                content_type = self.headers.get("Content-Type")
                if content_type:
                    request.add_header("Content-Type", content_type)
                try:
                    with urllib.request.urlopen(request, timeout=60) as response:
                        status, payload = response.status, response.read()
                        kind = response.headers.get("Content-Type", "application/json")
                except urllib.error.HTTPError as err:
                    status, payload, kind = err.code, err.read(), err.headers.get("Content-Type", "text/plain")
                except OSError as err:
                    status, payload, kind = 502, str(err).encode(), "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="prometheus-switch", daemon=True)
        self._thread.start()

    def flip(self, index: int) -> None:
        with self._lock:
            self.current = index

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
