"""Real Prometheus servers over backfilled blocks, and a loopback switch in front of them.

The operator is pointed at the switch; flipping it from the low-traffic server to the high-traffic one is the
fleet-wide traffic shift (every workload's window changes at once, at a known instant). The switch also counts the
range queries it forwarded, a check on the operator's own ``metrics_queries_per_tick``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from inference_placement.scale.processes import log_tail, stop_process

__all__ = [
    "PrometheusServer",
    "Switch",
    "backfill",
    "find_binaries",
    "free_port",
    "prometheus_command",
    "start_prometheus",
]

_READY_TIMEOUT_SECONDS = 120.0
_STOP_TIMEOUT_SECONDS = 15.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_binaries() -> tuple[str, str]:
    """(prometheus, promtool) from PATH or /usr/bin (Debian's ``prometheus`` package)."""
    found = [shutil.which(n) or shutil.which(n, path="/usr/bin:/usr/local/bin") for n in ("prometheus", "promtool")]
    if found[0] is None or found[1] is None:
        raise RuntimeError("prometheus and promtool are needed (apt-get install prometheus, or e2e/setup.sh)")
    return found[0], found[1]


def backfill(promtool: str, openmetrics: Path, tsdb: Path) -> None:
    """``promtool tsdb create-blocks-from openmetrics``; the text file is removed afterwards (it is large)."""
    result = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(openmetrics), str(tsdb)],
        capture_output=True,
        text=True,
        timeout=1800,
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

    def stop(self) -> None:
        """Stop this server, by its own PID only; idempotent."""
        stop_process(self.process, _STOP_TIMEOUT_SECONDS)

    def log_tail(self, lines: int = 20) -> str:
        return log_tail(self.log_path, lines)


def prometheus_command(prometheus: str, config: Path, tsdb: Path, port: int | str) -> list[str]:
    """A loopback ``prometheus`` serving ``tsdb`` (backfilled blocks are judged against the newest block: keep old
    backfills, whatever the version's default retention)."""
    return [
        prometheus,
        f"--config.file={config}",
        f"--storage.tsdb.path={tsdb}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=100y",
        "--log.level=warn",
    ]


def start_prometheus(prometheus: str, tsdb: Path, directory: Path) -> PrometheusServer:
    """Serve ``tsdb`` on a free loopback port, no scrape jobs (the data never changes under the benchmark)."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 15s\nscrape_configs: []\n")
    port = free_port()
    log_path = directory / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            prometheus_command(prometheus, config, tsdb, port),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = PrometheusServer(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + _READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2) as response:
                if response.status == 200:
                    return server
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"prometheus did not become ready:\n{server.log_tail()}")


class Switch:
    """An HTTP pass-through on a loopback port to one of several upstreams; ``flip(i)`` changes which."""

    def __init__(self, upstreams: list[str]) -> None:
        self.upstreams = upstreams
        self.current = 0
        self.range_queries = 0
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

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
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
