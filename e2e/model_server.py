#!/usr/bin/env python3
"""A stand-in inference server: standard library only.

It runs inside the local cluster's model-server image (Debian's python3) and directly on loopback in tests.

Endpoints
  GET  $HEALTH_PATH (default /healthz)   200 {"status": "ok"} once loaded, 503 while "loading"
  POST /predict                          inference; JSON body {"instances": [...]} optional
  POST /v1/models/<name>:predict         the same (KServe v1 style path)
  GET  /metrics                          Prometheus text format

Environment
  PORT             listen port (default 8080; 0 picks a free one, printed on stdout)
  HOST             listen address (default 0.0.0.0; tests on the host use 127.0.0.1)
  HEALTH_PATH      health path (default /healthz)
  SERVICE_SECONDS  time one prediction takes (default 0.02); `?sleep=SECONDS` overrides per request
  STARTUP_SECONDS  simulated model load time: health and predict answer 503 until it has passed (default 0)
  SERVED_BY        echoed in the `x-served-by` header and the body (default: the hostname)
  MODEL_NAME       model name reported for /predict (default "model")
  DRAIN_SECONDS    on SIGTERM, wait at most this long for in-flight requests (default 10)
  MAX_IN_FLIGHT    queue cap: with this many predictions in flight, another one is refused at once with 429 and
                   `Retry-After` (like TGI/TEI beyond --max-concurrent-requests); 0 = no cap (default)
  RETRY_AFTER_SECONDS  the `Retry-After` of a refused request (default 1)

Metrics (inference requests only, i.e. the predict paths)
  model_requests_total{model,code}            counter
  model_request_duration_seconds{model}       histogram (seconds)
  model_in_flight_requests                    gauge
  model_rejected_requests_total{model}        counter: refused at the queue cap (also counted as code="429" above;
                                              not in the duration histogram, which times served predictions)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

DURATION_BUCKETS_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MAX_SLEEP_SECONDS = 300.0
MAX_BODY_BYTES = 16 * 1024 * 1024


class Settings:
    """Configuration read once from the environment at start-up."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = int(env.get("PORT", "8080"))
        self.host = env.get("HOST", "0.0.0.0")
        health_path = env.get("HEALTH_PATH", "/healthz") or "/healthz"
        self.health_path = health_path if health_path.startswith("/") else "/" + health_path
        self.service_seconds = float(env.get("SERVICE_SECONDS", "0.02"))
        self.startup_seconds = float(env.get("STARTUP_SECONDS", "0"))
        self.served_by = env.get("SERVED_BY") or socket.gethostname()
        self.model_name = env.get("MODEL_NAME", "model")
        self.drain_seconds = float(env.get("DRAIN_SECONDS", "10"))
        self.max_in_flight = int(env.get("MAX_IN_FLIGHT", "0"))
        if self.max_in_flight < 0:
            raise ValueError(f"MAX_IN_FLIGHT must be >= 0, got {self.max_in_flight}")
        self.retry_after_seconds = int(env.get("RETRY_AFTER_SECONDS", "1"))


class Metrics:
    """Thread-safe counters and one latency histogram, rendered in Prometheus text format."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str], int] = {}
        self.buckets: dict[str, list[int]] = {}
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.in_flight = 0
        self.rejected: dict[str, int] = {}

    def begin(self, max_in_flight: int = 0) -> bool:
        """Admit one request unless ``max_in_flight`` (> 0) are in flight already; False: refused (and counted)."""
        with self._lock:
            if 0 < max_in_flight <= self.in_flight:
                return False
            self.in_flight += 1
            return True

    def refused(self, model: str) -> None:
        with self._lock:
            key = (model, "429")
            self.requests[key] = self.requests.get(key, 0) + 1
            self.rejected[model] = self.rejected.get(model, 0) + 1

    def end(self, model: str, code: int, seconds: float) -> None:
        with self._lock:
            self.in_flight -= 1
            key = (model, str(code))
            self.requests[key] = self.requests.get(key, 0) + 1
            counts = self.buckets.setdefault(model, [0] * len(DURATION_BUCKETS_SECONDS))
            for i, bound in enumerate(DURATION_BUCKETS_SECONDS):
                if seconds <= bound:
                    counts[i] += 1
            self.sums[model] = self.sums.get(model, 0.0) + seconds
            self.counts[model] = self.counts.get(model, 0) + 1

    def in_flight_now(self) -> int:
        with self._lock:
            return self.in_flight

    def render(self) -> str:
        with self._lock:
            lines = [
                "# HELP model_requests_total Inference requests answered, by model and HTTP status code.",
                "# TYPE model_requests_total counter",
            ]
            for (model, code), n in sorted(self.requests.items()):
                lines.append(f'model_requests_total{{model="{_esc(model)}",code="{code}"}} {n}')
            lines += [
                "# HELP model_request_duration_seconds Time to answer one inference request.",
                "# TYPE model_request_duration_seconds histogram",
            ]
            for model in sorted(self.counts):
                label = f'model="{_esc(model)}"'
                for bound, n in zip(DURATION_BUCKETS_SECONDS, self.buckets[model], strict=True):
                    lines.append(f'model_request_duration_seconds_bucket{{{label},le="{bound}"}} {n}')
                lines.append(f'model_request_duration_seconds_bucket{{{label},le="+Inf"}} {self.counts[model]}')
                lines.append(f"model_request_duration_seconds_sum{{{label}}} {self.sums[model]:.6f}")
                lines.append(f"model_request_duration_seconds_count{{{label}}} {self.counts[model]}")
            lines += [
                "# HELP model_in_flight_requests Inference requests being served now.",
                "# TYPE model_in_flight_requests gauge",
                f"model_in_flight_requests {self.in_flight}",
                "# HELP model_rejected_requests_total Inference requests refused at the queue cap (MAX_IN_FLIGHT).",
                "# TYPE model_rejected_requests_total counter",
            ]
            for model, n in sorted(self.rejected.items()):
                lines.append(f'model_rejected_requests_total{{model="{_esc(model)}"}} {n}')
        return "\n".join(lines) + "\n"


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every answer carries Content-Length
    disable_nagle_algorithm = True  # TCP_NODELAY: without it small answers wait ~40 ms for delayed ACKs
    server: ModelServer

    def log_message(self, format: str, *args: Any) -> None:
        if os.environ.get("ACCESS_LOG") == "1":
            super().log_message(format, *args)

    def _send(
        self, code: int, body: bytes, content_type: str = "application/json", headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(code)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-served-by", self.server.settings.served_by)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, code: int, payload: dict[str, Any]) -> None:
        self._send(code, json.dumps(payload).encode())

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        settings = self.server.settings
        if path == settings.health_path:
            if self.server.loaded():
                self._send_json(200, {"status": "ok", "served_by": settings.served_by})
            else:
                self._send_json(503, {"status": "loading", "served_by": settings.served_by})
        elif path == "/metrics":
            self._send(200, self.server.metrics.render().encode(), "text/plain; version=0.0.4; charset=utf-8")
        elif _model_for_path(path, settings.model_name) is not None:
            self._send_json(405, {"error": "use POST for predictions"})
        else:
            self._send_json(404, {"error": f"no route for {path}"})

    do_HEAD = do_GET

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        settings = self.server.settings
        model = _model_for_path(url.path, settings.model_name)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._send_json(413, {"error": "body too large"})
            return
        raw = self.rfile.read(length) if length else b""
        if model is None:
            self._send_json(404, {"error": f"no route for {url.path}"})
            return
        metrics = self.server.metrics
        start = time.monotonic()
        if not metrics.begin(settings.max_in_flight):
            metrics.refused(model)
            retry_after = str(settings.retry_after_seconds)
            body = {"error": f"queue full ({settings.max_in_flight} in flight)", "served_by": settings.served_by}
            self._send(429, json.dumps(body).encode(), headers={"Retry-After": retry_after})
            return
        code = 500
        try:
            code, payload = self._predict(model, url.query, raw, start)
            self._send_json(code, payload)
        finally:
            metrics.end(model, code, time.monotonic() - start)

    def _predict(self, model: str, query: str, raw: bytes, start: float) -> tuple[int, dict[str, Any]]:
        settings = self.server.settings
        if not self.server.loaded():
            return 503, {"error": "model is loading", "served_by": settings.served_by}
        service_seconds = settings.service_seconds
        sleep_values = parse_qs(query).get("sleep")
        if sleep_values:
            try:
                service_seconds = float(sleep_values[-1])
            except ValueError:
                return 400, {"error": "sleep must be a number of seconds"}
        if not 0 <= service_seconds <= MAX_SLEEP_SECONDS:
            return 400, {"error": f"sleep must be within [0, {MAX_SLEEP_SECONDS:g}] seconds"}
        instances: list[Any] = []
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                return 400, {"error": "body is not JSON"}
            if isinstance(body, dict) and isinstance(body.get("instances"), list):
                instances = body["instances"]
        time.sleep(service_seconds)
        return 200, {
            "model": model,
            "served_by": settings.served_by,
            # A deterministic stand-in "prediction" per instance.
            "predictions": [len(json.dumps(instance)) for instance in instances],
            "service_seconds": service_seconds,
            "elapsed_seconds": round(time.monotonic() - start, 6),
        }


def _model_for_path(path: str, default_model: str) -> str | None:
    if path == "/predict":
        return default_model
    prefix, suffix = "/v1/models/", ":predict"
    if path.startswith(prefix) and path.endswith(suffix) and len(path) > len(prefix) + len(suffix):
        return path[len(prefix) : -len(suffix)]
    return None


class ModelServer(ThreadingHTTPServer):
    daemon_threads = True  # idle keep-alive connections must not block shutdown; in-flight work is drained instead
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.started_at = time.monotonic()
        super().__init__((settings.host, settings.port), Handler)

    def loaded(self) -> bool:
        return time.monotonic() - self.started_at >= self.settings.startup_seconds

    def drain(self) -> None:
        deadline = time.monotonic() + self.settings.drain_seconds
        while self.metrics.in_flight_now() > 0 and time.monotonic() < deadline:
            time.sleep(0.01)


def main() -> int:
    settings = Settings(dict(os.environ))
    server = ModelServer(settings)
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if not stopping.is_set():
            stopping.set()
            # shutdown() waits for serve_forever to return, so it must not run on the thread serving.
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    host, port = server.server_address[:2]
    print(
        json.dumps({"event": "listening", "host": host, "port": port, "served_by": settings.served_by}),
        flush=True,
    )
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.drain()
        server.server_close()
    print(json.dumps({"event": "stopped", "served_by": settings.served_by}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
