"""The router's activator: holds a request for a workload scaled to zero until one of its pods is ready.

Envoy cannot hold a request (a cluster without a host is an immediate 503), so a holding route
(``Route.hold_seconds``) sends its cluster share to a composite cluster [pods, activator]: while the pods cluster has
no host the request falls through to this process, which runs next to Envoy in the router Pod (loopback only). For
each request it

* counts a wake-up for the workload (``inference_router_activator_requests_total{namespace,workload}``, and the
  ``inference_router_activator_held_requests`` gauge while it waits): the operator's fleet loop scales the
  Deployment up from these;
* waits until the workload's pods cluster has a healthy host, polling Envoy's admin ``/stats`` on loopback
  (``cluster.<pods>.membership_healthy``; one poll per interval for all waiting workloads), then replays the
  request through Envoy's listener with ``x-inference-activated``, which the route sends straight to the pods
  cluster, and answers what the pods answered (a replay Envoy itself refused with a local 503, before the new pods
  reached its workers, is tried again until the hold ends);
* gives up with 503 and ``Retry-After`` once the route's hold bound (``x-inference-hold-seconds``, the workload's
  tolerable cold start, capped by ``ActivatorSettings.max_hold_seconds``) has passed, and refuses at once (503,
  ``Retry-After``) beyond ``ActivatorSettings.max_held`` requests or ``max_held_bytes`` of bodies held at once
  (bounded memory; one body at most ``max_body_bytes``, 413 beyond).

The workload, the hold bound and the pods cluster come from headers the route sets (overwriting a client's), so
the activator needs no configuration per workload. Metrics (own port, ``/metrics``; ``/healthz`` there too):
requests, held, outcomes (``replayed``, ``timeout``, ``rejected``, ``error``) and the hold time of replayed
requests (``inference_router_activator_hold_seconds``, the wait a woken request paid).

Run: ``python -m inference_placement.routing.activator --listen-port 8081 --metrics-port 9904
--envoy-url http://127.0.0.1:8080 --admin-url http://127.0.0.1:9901`` (``render_router_deployment`` does).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from inference_placement.routing.envoy import ACTIVATED_HEADER, HOLD_HEADER, PODS_CLUSTER_HEADER, WORKLOAD_HEADER

__all__ = [
    "Activator",
    "ActivatorSettings",
    "PodsReadiness",
    "main",
]

_HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
_ROUTE_HEADERS: Final = frozenset({WORKLOAD_HEADER, HOLD_HEADER, PODS_CLUSTER_HEADER, ACTIVATED_HEADER})
_ENVOY_UPSTREAM_HEADER: Final = "x-envoy-upstream-service-time"
"""On every answer Envoy got from an upstream; absent from Envoy's own local replies."""
_ADMIN_TIMEOUT: Final = aiohttp.ClientTimeout(total=5)
_HOLD_BUCKETS: Final = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 900)


@dataclass(frozen=True)
class ActivatorSettings:
    listen_address: str = "127.0.0.1"
    """Where Envoy's activator cluster connects (same Pod: loopback)."""
    listen_port: int = 8081
    metrics_address: str = "0.0.0.0"
    metrics_port: int = 9904
    """``/metrics`` (Prometheus) and ``/healthz``."""
    envoy_url: str = "http://127.0.0.1:8080"
    """Envoy's workload listener: where held requests are replayed."""
    admin_url: str = "http://127.0.0.1:9901"
    """Envoy's admin (loopback): where pod readiness is read."""
    max_held: int = 1000
    """Requests held at once, over all workloads; beyond it a request is refused at once (503, Retry-After)."""
    max_hold_seconds: float = 900.0
    """Cap on a route's hold bound."""
    max_body_bytes: int = 16 * 1024 * 1024
    """Largest request body held (413 beyond)."""
    max_held_bytes: int = 64 * 1024 * 1024
    """Request bodies held at once, in bytes, over all requests; beyond it a request is refused at once (503)."""
    poll_interval_seconds: float = 0.2
    """Admin polling interval while a request waits."""
    replay_timeout_seconds: float = 300.0
    """Longest replay through Envoy (Envoy's own route timeout applies too)."""
    retry_after_seconds: int = 5
    """``Retry-After`` of a refusal or a hold that ran out."""

    def __post_init__(self) -> None:
        if self.max_held < 1 or self.max_body_bytes < 0 or self.max_held_bytes < 0:
            raise ValueError("max_held must be >= 1, max_body_bytes and max_held_bytes >= 0")
        if not 0 < self.poll_interval_seconds <= 10 or not 0 < self.max_hold_seconds:
            raise ValueError("poll_interval_seconds must be in (0, 10] and max_hold_seconds positive")


def _healthy_stat(cluster: str) -> str:
    return f"cluster.{cluster}.membership_healthy"


@dataclass
class PodsReadiness:
    """Waits until Envoy's pods clusters have a healthy host: one poller for every waiting cluster."""

    admin_url: str
    poll_interval_seconds: float
    session: aiohttp.ClientSession
    _waiters: dict[str, list[asyncio.Future[None]]] = field(default_factory=dict)
    _poller: asyncio.Task[None] | None = None
    polls: int = 0
    last_error: str = ""

    async def wait(self, cluster: str, timeout: float) -> bool:
        """True once ``cluster`` has a healthy host; False after ``timeout`` seconds."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(cluster, []).append(future)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll())
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            return False
        finally:
            waiting = self._waiters.get(cluster, [])
            if future in waiting:
                waiting.remove(future)
                if not waiting:
                    del self._waiters[cluster]
            future.cancel()
        return True

    async def _healthy(self, clusters: Sequence[str]) -> dict[str, int]:
        pattern = "^(" + "|".join(re.escape(_healthy_stat(c)) for c in clusters) + ")$"
        url = f"{self.admin_url}/stats"
        query = {"format": "json", "filter": pattern}
        async with self.session.get(url, params=query, timeout=_ADMIN_TIMEOUT) as response:
            response.raise_for_status()
            payload: Any = json.loads(await response.text())
        values: dict[str, int] = {}
        for stat in payload.get("stats", []) if isinstance(payload, dict) else []:
            name, value = stat.get("name"), stat.get("value")
            if isinstance(name, str) and isinstance(value, int):
                values[name] = value
        return {c: values.get(_healthy_stat(c), 0) for c in clusters}

    async def _poll(self) -> None:
        while self._waiters:
            clusters = sorted(self._waiters)
            try:
                healthy = await self._healthy(clusters)
                self.last_error = ""
            except (aiohttp.ClientError, TimeoutError, ValueError) as err:
                self.last_error = f"{type(err).__name__}: {err}"
                healthy = {}
            self.polls += 1
            for cluster, hosts in healthy.items():
                if hosts > 0:
                    for future in self._waiters.pop(cluster, []):
                        if not future.done():
                            future.set_result(None)
            if self._waiters:
                await asyncio.sleep(self.poll_interval_seconds)


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ("namespace", "workload")
        self.requests = Counter(
            "inference_router_activator_requests",
            "Requests that reached the activator because the workload had no ready pod (wake-up signal).",
            labels,
            registry=self.registry,
        )
        self.held = Gauge(
            "inference_router_activator_held_requests",
            "Requests held now, waiting for a ready pod.",
            labels,
            registry=self.registry,
        )
        self.outcomes = Counter(
            "inference_router_activator_outcomes",
            "Held requests by outcome: replayed (to a ready pod), timeout (hold bound reached), rejected (too many "
            "held), error (the replay failed).",
            (*labels, "outcome"),
            registry=self.registry,
        )
        self.hold_seconds = Histogram(
            "inference_router_activator_hold_seconds",
            "Time a replayed request waited for a ready pod.",
            labels,
            buckets=_HOLD_BUCKETS,
            registry=self.registry,
        )


def _refusal(status: int, message: str, retry_after: int | None) -> web.Response:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return web.Response(status=status, text=message + "\n", headers=headers)


class Activator:
    """The activator's two aiohttp apps (data path and metrics) on one event loop."""

    def __init__(self, settings: ActivatorSettings | None = None) -> None:
        self.settings = settings or ActivatorSettings()
        self.metrics = _Metrics()
        self._held = 0
        self._held_bytes = 0
        self._runners: list[web.AppRunner] = []
        self._session: aiohttp.ClientSession | None = None
        self._readiness: PodsReadiness | None = None
        self.listen_port = 0
        self.metrics_port = 0

    @property
    def held(self) -> int:
        return self._held

    async def start(self) -> None:
        """Bind both ports (0 = the kernel picks; read ``listen_port``/``metrics_port`` after)."""
        settings = self.settings
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=settings.replay_timeout_seconds),
            connector=aiohttp.TCPConnector(limit=0),
            auto_decompress=False,
        )
        self._readiness = PodsReadiness(settings.admin_url.rstrip("/"), settings.poll_interval_seconds, self._session)
        data = web.Application(client_max_size=settings.max_body_bytes)
        data.router.add_route("*", "/{tail:.*}", self._handle)
        metrics = web.Application()
        metrics.router.add_get("/metrics", self._metrics)
        metrics.router.add_get("/healthz", self._healthz)
        for app, address, port, attr in (
            (data, settings.listen_address, settings.listen_port, "listen_port"),
            (metrics, settings.metrics_address, settings.metrics_port, "metrics_port"),
        ):
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, address, port)
            await site.start()
            self._runners.append(runner)
            setattr(self, attr, int(runner.addresses[0][1]))  # the port the kernel picked for port 0

    async def stop(self) -> None:
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        if self._session is not None:
            await self._session.close()

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "held": self._held})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        settings = self.settings
        workload = request.headers.get(WORKLOAD_HEADER, "")
        cluster = request.headers.get(PODS_CLUSTER_HEADER, "")
        namespace, _, name = workload.partition("/")
        try:
            hold = min(float(request.headers.get(HOLD_HEADER, "")), settings.max_hold_seconds)
        except ValueError:
            hold = -1.0
        if not namespace or not name or not cluster or not hold > 0:
            return _refusal(400, "not sent by a holding route (workload, pods cluster or hold bound missing)", None)
        self.metrics.requests.labels(namespace, name).inc()
        declared = request.content_length or 0
        if self._held >= settings.max_held or self._held_bytes + declared > settings.max_held_bytes:
            self.metrics.outcomes.labels(namespace, name, "rejected").inc()
            message = f"{workload}: {self._held} requests ({self._held_bytes} bytes) held already"
            return _refusal(503, message, settings.retry_after_seconds)
        self._held += 1
        gauge = self.metrics.held.labels(namespace, name)
        gauge.inc()
        held_bytes = 0
        holding = True

        def release() -> None:
            nonlocal holding
            if holding:
                holding = False
                self._held -= 1
                self._held_bytes -= held_bytes
                gauge.dec()

        try:
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                self.metrics.outcomes.labels(namespace, name, "error").inc()
                return _refusal(413, f"body over {settings.max_body_bytes} bytes", None)
            held_bytes = len(body)
            self._held_bytes += held_bytes
            if self._held_bytes > settings.max_held_bytes:  # a body without Content-Length
                self.metrics.outcomes.labels(namespace, name, "rejected").inc()
                return _refusal(503, f"{workload}: held bodies over budget", settings.retry_after_seconds)
            return await self._hold_and_replay(request, body, cluster, namespace, name, hold, release)
        finally:
            release()

    async def _hold_and_replay(
        self,
        request: web.Request,
        body: bytes,
        cluster: str,
        namespace: str,
        name: str,
        hold: float,
        release: Callable[[], None],
    ) -> web.StreamResponse:
        """Wait for a healthy pod, replay through Envoy and stream the pods' answer back (``release`` when the
        answer starts: the request is no longer held)."""
        assert self._readiness is not None and self._session is not None
        settings = self.settings
        arrived = time.monotonic()
        deadline = arrived + hold
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in _HOP_BY_HOP | _ROUTE_HEADERS and not k.lower().startswith("x-envoy-")
        }
        headers[ACTIVATED_HEADER] = "1"
        headers["Host"] = f"{name}.{namespace}"  # the workload's virtual host, whatever Host the client sent
        url = f"{settings.envoy_url.rstrip('/')}{request.rel_url}"
        outcomes = self.metrics.outcomes
        waited = False
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not await self._readiness.wait(cluster, remaining):
                outcomes.labels(namespace, name, "timeout").inc()
                message = f"{namespace}/{name}: no ready pod after {hold:g}s (scaling up)"
                return _refusal(503, message, settings.retry_after_seconds)
            if not waited:
                self.metrics.hold_seconds.labels(namespace, name).observe(time.monotonic() - arrived)
                waited = True
            response: web.StreamResponse | None = None
            try:
                async with self._session.request(request.method, url, headers=headers, data=body) as upstream:
                    local_refusal = upstream.status == 503 and _ENVOY_UPSTREAM_HEADER not in upstream.headers
                    if not local_refusal or time.monotonic() >= deadline:
                        release()
                        out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
                        response = web.StreamResponse(status=upstream.status, headers=out)
                        await response.prepare(request)
                        async for chunk in upstream.content.iter_any():  # streamed: tokens reach the client
                            await response.write(chunk)
                        await response.write_eof()
                        outcomes.labels(namespace, name, "replayed").inc()
                        return response
                    await upstream.read()
            except (aiohttp.ClientError, TimeoutError) as err:
                outcomes.labels(namespace, name, "error").inc()
                if response is not None:
                    raise  # the answer had started: the client sees the connection end
                return _refusal(502, f"{namespace}/{name}: replay failed: {type(err).__name__}: {err}", None)
            # Envoy answered by itself (no pod reached its worker yet): the request never left, try again.
            await asyncio.sleep(min(settings.poll_interval_seconds, max(0.0, deadline - time.monotonic())))


def _parse_args(argv: Sequence[str] | None) -> ActivatorSettings:
    defaults = ActivatorSettings()
    parser = argparse.ArgumentParser(prog="activator", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--listen-address", default=defaults.listen_address)
    parser.add_argument("--listen-port", type=int, default=defaults.listen_port)
    parser.add_argument("--metrics-address", default=defaults.metrics_address)
    parser.add_argument("--metrics-port", type=int, default=defaults.metrics_port)
    parser.add_argument("--envoy-url", default=defaults.envoy_url)
    parser.add_argument("--admin-url", default=defaults.admin_url)
    parser.add_argument("--max-held", type=int, default=defaults.max_held)
    parser.add_argument("--max-hold-seconds", type=float, default=defaults.max_hold_seconds)
    parser.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes)
    parser.add_argument("--max-held-bytes", type=int, default=defaults.max_held_bytes)
    parser.add_argument("--poll-interval-seconds", type=float, default=defaults.poll_interval_seconds)
    parser.add_argument("--retry-after-seconds", type=int, default=defaults.retry_after_seconds)
    args = parser.parse_args(argv)
    return ActivatorSettings(
        listen_address=args.listen_address,
        listen_port=args.listen_port,
        metrics_address=args.metrics_address,
        metrics_port=args.metrics_port,
        envoy_url=args.envoy_url,
        admin_url=args.admin_url,
        max_held=args.max_held,
        max_hold_seconds=args.max_hold_seconds,
        max_body_bytes=args.max_body_bytes,
        max_held_bytes=args.max_held_bytes,
        poll_interval_seconds=args.poll_interval_seconds,
        retry_after_seconds=args.retry_after_seconds,
    )


async def _serve(settings: ActivatorSettings) -> None:
    disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: the scrape stays small
    activator = Activator(settings)
    await activator.start()
    print(
        json.dumps({"event": "listening", "port": activator.listen_port, "metrics_port": activator.metrics_port}),
        flush=True,
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    await activator.stop()


def main(argv: Sequence[str] | None = None) -> int:
    asyncio.run(_serve(_parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
