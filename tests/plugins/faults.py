"""Fault injection helpers for the real components (no fixtures: ``tests/test_fault_injection.py`` builds on them).

:class:`FaultProxy`
    A loopback HTTP/1.1 reverse proxy in front of a real server (Prometheus, moto's Lambda API, the Cloud Run
    stand-in). Per request it forwards, or applies the first matching :class:`ProxyFault`: answer a status with a
    body without forwarding (429/500 bursts, malformed JSON), hold the request past the client's timeout, or drop
    the connection. When the real server is down, the client's connection is dropped (as a dead backend would).
:class:`ApiserverRestart`
    SIGKILL the kube-apiserver that ``e2e/local-cluster.sh`` started (its PID from the script's pid file) and start
    it again with the very same command line (read from ``/proc/PID/cmdline`` before the kill) in its own session,
    recording the new PID in the script's pid file, so ``local-cluster.sh status``/``down`` keep managing it. etcd
    keeps the data. ``ensure_up()`` is safe to call in a ``finally``.
:class:`ConflictingWriter`
    Another client bumping a custom object's ``resourceVersion`` in a tight loop (a JSON merge patch of an
    annotation), so that the operator's writes guarded by ``resourceVersion`` really get 409 Conflict.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.plugins.cluster import KubeCluster

__all__ = [
    "api_connection",
    "FAULT_TABLE",
    "ApiserverRestart",
    "ConflictingWriter",
    "FaultProxy",
    "FaultRow",
    "ProxyFault",
    "render_fault_table",
    "wait_until",
]

_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "content-length"}
)


@dataclass
class ProxyFault:
    """What to do with the next ``count`` matching requests (``count < 0``: every one until removed)."""

    kind: str
    """``status`` (answer ``status`` + ``body``), ``hold`` (wait ``seconds``, then forward), ``drop``, ``stall`` (wait
    ``seconds``, then drop without forwarding: the client stays blocked in that call, and the call never happens)."""
    count: int = 1
    status: int = 500
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    path_contains: str | None = None
    methods: frozenset[str] | None = None

    def matches(self, method: str, path: str) -> bool:
        if self.count == 0:
            return False
        if self.methods is not None and method not in self.methods:
            return False
        return self.path_contains is None or self.path_contains in path


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class FaultProxy:
    """See the module docstring. ``upstream`` is ``host:port`` and may be changed while running."""

    def __init__(self, upstream: str, name: str = "proxy") -> None:
        self.upstream = upstream
        self.name = name
        self._faults: list[ProxyFault] = []
        self._lock = threading.Lock()
        self.injected: Counter[str] = Counter()
        """Injected faults by kind/status (``status:429``, ``hold``, ``drop``), cumulative."""
        self.forwarded = 0
        self.answered: list[tuple[str, str, int]] = []
        """(method, path, status) of every request forwarded and answered by the upstream, in order."""
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"fault-proxy-{name}", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def inject(self, fault: ProxyFault) -> ProxyFault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def pending(self) -> int:
        """Faults still to be injected (``-1`` faults count as one)."""
        with self._lock:
            return sum(1 if f.count < 0 else f.count for f in self._faults)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _take(self, method: str, path: str) -> ProxyFault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    if fault.count > 0:
                        fault.count -= 1
                    self.injected[f"status:{fault.status}" if fault.kind == "status" else fault.kind] += 1
                    return fault
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                fault = proxy._take(self.command, self.path)
                if fault is not None and fault.kind == "stall":
                    time.sleep(fault.seconds)
                if fault is not None and fault.kind in ("drop", "stall"):
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:  # the client is gone already (a stalled one may have been killed)
                        pass
                    return
                if fault is not None and fault.kind == "status":
                    self._answer(fault.status, fault.headers, fault.body)
                    return
                if fault is not None and fault.kind == "hold":
                    time.sleep(fault.seconds)  # the client gave up by now; forward anyway (the effect happens)
                try:
                    status, headers, answer = self._forward(body)
                except OSError:
                    self.close_connection = True  # the real server is down: so is this connection
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
                with proxy._lock:
                    proxy.forwarded += 1
                    proxy.answered.append((self.command, self.path, status))
                try:
                    self._answer(status, headers, answer)
                except OSError:
                    self.close_connection = True

            def _forward(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
                host, _, port = proxy.upstream.rpartition(":")
                conn = http.client.HTTPConnection(host, int(port), timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                    kept = {k: v for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP}
                    return response.status, kept, data
                finally:
                    conn.close()

            def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = _serve
            do_POST = _serve
            do_PUT = _serve
            do_PATCH = _serve
            do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def _api_ready(cluster: KubeCluster) -> bool:
    context = ssl.create_default_context(cafile=cluster.ca_file)
    try:
        with urllib.request.urlopen(f"{cluster.api_url}/readyz", timeout=2, context=context) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class ApiserverRestart:
    """See the module docstring."""

    cluster: KubeCluster
    pid_dir: Path = field(init=False)
    cmdline: list[str] = field(default_factory=list)
    log_path: Path = field(init=False)
    restarts: int = 0

    def __post_init__(self) -> None:
        self.pid_dir = Path(self.cluster.run_dir) / "pids"
        self.log_path = Path(self.cluster.log_dir) / "kube-apiserver.log"

    def _pid(self) -> int | None:
        try:
            pid = int((self.pid_dir / "kube-apiserver.pid").read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        return pid if cmdline and Path(cmdline[0].decode()).name == "kube-apiserver" else None

    def kill(self) -> int:
        """SIGKILL the running kube-apiserver (ours: started by e2e/local-cluster.sh); remember its command line."""
        pid = self._pid()
        assert pid is not None, "no kube-apiserver of e2e/local-cluster.sh is running"
        self.cmdline = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                break
            if state == "Z":
                break
            time.sleep(0.05)
        return pid

    def start(self, timeout: float = 90.0) -> float:
        """Start it again with the same command line; seconds until /readyz answered ok."""
        assert self.cmdline, "kill() first"
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(
                self.cmdline,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # as start_daemon's setsid: it outlives this test session
            )
        (self.pid_dir / "kube-apiserver.pid").write_text(f"{process.pid}\n")
        self.restarts += 1
        deadline = started + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"kube-apiserver exited with {process.returncode}; see {self.log_path}")
            if _api_ready(self.cluster):
                return time.monotonic() - started
            time.sleep(0.2)
        raise AssertionError(f"kube-apiserver not ready {timeout:.0f} s after the restart; see {self.log_path}")

    def ensure_up(self) -> None:
        """In a ``finally``: whatever happened, leave a running, ready kube-apiserver behind."""
        if self._pid() is None and self.cmdline:
            self.start()
        deadline = time.monotonic() + 90
        while not _api_ready(self.cluster):
            if time.monotonic() > deadline:
                raise AssertionError("kube-apiserver is not ready; run: bash e2e/local-cluster.sh up --with-node")
            time.sleep(0.5)


def api_connection(cluster: KubeCluster, *, timeout: float) -> http.client.HTTPSConnection:
    """A raw HTTPS connection to the apiserver (verified against the cluster's CA)."""
    host, _, port = cluster.api_url.removeprefix("https://").rpartition(":")
    context = ssl.create_default_context(cafile=cluster.ca_file)
    return http.client.HTTPSConnection(host, int(port), context=context, timeout=timeout)


@dataclass
class ConflictingWriter:
    """See the module docstring. ``writes`` counts the successful patches."""

    cluster: KubeCluster
    path: str
    """The object's API path, e.g. ``/apis/placement.inference.dev/v1alpha1/namespaces/NS/inferenceworkloads/N``."""
    interval_seconds: float = 0.02
    writes: int = 0
    errors: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> ConflictingWriter:
        self._thread = threading.Thread(target=self._run, name="conflicting-writer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _connect(self) -> http.client.HTTPSConnection:
        return api_connection(self.cluster, timeout=10)

    def _run(self) -> None:
        conn = self._connect()
        headers = {
            "Authorization": f"Bearer {self.cluster.admin_token}",
            "Content-Type": "application/merge-patch+json",
        }
        counter = 0
        while not self._stop.is_set():
            counter += 1
            body = json.dumps({"metadata": {"annotations": {"faults.test/bump": str(counter)}}})
            try:
                conn.request("PATCH", self.path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    self.writes += 1
                else:
                    self.errors += 1
            except (OSError, http.client.HTTPException):
                self.errors += 1
                conn.close()
                conn = self._connect()
            self._stop.wait(self.interval_seconds)
        conn.close()


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    """Like ``wait_for`` but returns None on timeout instead of failing."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


# ----------------------------------------------------------------------------------------------- the table


@dataclass
class FaultRow:
    """One fault injected and what followed."""

    fault: str
    converged_seconds: float | None
    """Seconds from the end of the fault (or the move it disturbed) until the fleet was where it should be."""
    leaked: list[str]
    failed_requests: list[str]
    requests: int
    """Requests sent through the stable endpoint meanwhile."""
    migrations: int
    migrations_without_data: list[str]
    note: str = ""


FAULT_TABLE: list[FaultRow] = []
"""Rows appended by the fault tests; printed in the terminal summary."""


def render_fault_table(rows: list[FaultRow]) -> str:
    header = ("fault injected", "converged", "leaked", "failed req", "migrations (w/o data)")
    cells = [
        (
            row.fault,
            f"{row.converged_seconds:.1f} s" if row.converged_seconds is not None else "NO",
            str(len(row.leaked)),
            f"{len(row.failed_requests)}/{row.requests}",
            f"{row.migrations} ({len(row.migrations_without_data)})",
        )
        for row in rows
    ]
    widths = [max(len(r[i]) for r in [header, *cells]) for i in range(len(header))]

    def line(values: tuple[str, ...]) -> str:
        return " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True))

    out = [line(header), "-+-".join("-" * w for w in widths)]
    for row, values in zip(rows, cells, strict=True):
        out.append(line(values))
        if row.note:
            out.append(f"    {row.note}")
    return "\n".join(out)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if FAULT_TABLE:
        terminalreporter.section("fault injection: faults injected vs outcomes")
        terminalreporter.write_line(render_fault_table(FAULT_TABLE))
