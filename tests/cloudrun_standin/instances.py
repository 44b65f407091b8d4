"""A stand-in for the part of Cloud Run's serving front end a cold start is made of. A test fixture, not operator
code.

Cloud Run routes a request to an instance of the service's revision; when none is running (scaled to zero, or all
busy) it starts one and holds the request until the instance's container listens and its startup probe passes
(cloud.google.com/run/docs/about-instance-autoscaling, .../configuring/healthchecks); an instance idle for a while
is shut down ("up to 15 minutes"). This stand-in does exactly that on loopback, with one instance at most: the
container is ``e2e/model_server.py`` started as a process (its model load is ``STARTUP_SECONDS``), the startup
probe is its health path, and an instance idle for ``idle_seconds`` is stopped (by its PID). Requests are proxied
as they came (plain HTTP: the router's TLS and ID token are not what this stands in for).
"""

from __future__ import annotations

import http.client
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from inference_placement.devtools.processes import free_port, spawn, stop_process

__all__ = ["CloudRunInstances"]

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"})


class CloudRunInstances:
    """The serving front end of one service on loopback: ``url`` takes requests; ``starts`` counts instance
    starts; ``stop()`` stops it and its instance."""

    def __init__(
        self,
        model_server: Path,
        work: Path,
        *,
        startup_seconds: float,
        idle_seconds: float,
        health_path: str = "/healthz",
        service_seconds: float = 0.02,
    ) -> None:
        self.model_server = model_server
        self.work = work
        self.startup_seconds = startup_seconds
        self.idle_seconds = idle_seconds
        self.health_path = health_path
        self.service_seconds = service_seconds
        self.starts = 0
        self._lock = threading.Lock()
        self._instance: Any = None
        self._port = 0
        self._last_used = 0.0
        self._in_flight = 0
        self._stopping = threading.Event()
        server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        server.daemon_threads = True
        self._server = server
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        self._threads = [
            threading.Thread(target=server.serve_forever, name="cloudrun-front", daemon=True),
            threading.Thread(target=self._reclaim, name="cloudrun-reclaim", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _start_instance(self) -> int:
        """A new instance: the container started, then held until its startup probe passes (under the lock: one
        instance at most, as with maxInstances 1)."""
        port = free_port()
        env = {
            **os.environ,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "SERVED_BY": "cloudrun",
            "MODEL_NAME": "cloudrun",
            "SERVICE_SECONDS": str(self.service_seconds),
            "STARTUP_SECONDS": str(self.startup_seconds),
            "HEALTH_PATH": self.health_path,
        }
        self.starts += 1
        log = self.work / f"cloudrun-instance-{self.starts}.log"
        self._instance = spawn([sys.executable, str(self.model_server)], log, env, new_session=True)
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", self.health_path)
                if conn.getresponse().status == 200:
                    conn.close()
                    return port
                conn.close()
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"the instance on port {port} never passed its startup probe ({log})")

    def _acquire(self) -> int:
        with self._lock:
            if self._instance is None or self._instance.poll() is not None:
                self._port = self._start_instance()
            self._in_flight += 1
            return self._port

    def _release(self) -> None:
        with self._lock:
            self._in_flight -= 1
            self._last_used = time.monotonic()

    def _reclaim(self) -> None:
        while not self._stopping.wait(0.1):
            with self._lock:
                idle = self._in_flight == 0 and time.monotonic() - self._last_used > self.idle_seconds
                if self._instance is not None and idle:
                    stop_process(self._instance, 5.0)
                    self._instance = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _proxy(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else None
                port = front._acquire()
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    answer = conn.getresponse()
                    payload = answer.read()
                    conn.close()
                finally:
                    front._release()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _proxy

        return Handler

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            if self._instance is not None:
                stop_process(self._instance, 5.0)
                self._instance = None
