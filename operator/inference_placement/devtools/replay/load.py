"""Replay a trace as HTTP requests through the stable endpoint, recording every response.

``schedule_from_counts`` turns requests-per-step counts into send times (uniform inside each step, seeded, so a
replay is repeatable); ``LoadReplay`` sends them on loopback from a small pool of keep-alive connections, each
request at its time (late requests are sent at once and counted as late, never dropped), bounded in count and time.
A request fails when it raises or answers anything but 2xx. Every response is kept: status, latency, which upstream
served it (``x-served-by``) and when.
"""

from __future__ import annotations

import http.client
import queue
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["LoadReplay", "ReplayResponse", "ReplaySummary", "schedule_from_counts"]


def schedule_from_counts(
    counts: Sequence[float], *, seconds_per_step: float, scale: float = 1.0, seed: int = 0
) -> list[float]:
    """Send times (seconds after the start) for ``round(count x scale)`` requests per step, uniform in the step."""
    rng = random.Random(seed)
    times: list[float] = []
    carry = 0.0
    for step, count in enumerate(counts):
        exact = count * scale + carry
        n = int(exact)
        carry = exact - n  # keep fractions: a low step still sends its share over time
        base = step * seconds_per_step
        times.extend(base + rng.random() * seconds_per_step for _ in range(n))
    return sorted(times)


@dataclass(frozen=True)
class ReplayResponse:
    sent_at: float
    """Seconds after the replay started."""
    status: int
    """HTTP status; 0 when the request raised."""
    latency_seconds: float
    served_by: str | None
    error: str | None = None
    detail: str | None = None
    """A failed answer's own words: the start of its body and who sent it (Envoy names itself in ``server``; a
    model server, the activator and the stand-ins do not), so a failure says which hop refused."""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass(frozen=True)
class ReplaySummary:
    requests: int
    failed: int
    p50_ms: float
    p99_ms: float
    served_by: dict[str, int]
    errors: dict[str, int]
    late: int
    """Requests sent more than 100 ms after their scheduled time (the driver, not the server, was behind)."""


@dataclass
class LoadReplay:
    port: int
    host_header: str
    schedule: Sequence[float]
    path: str = "/predict"
    connections: int = 8
    max_seconds: float = 600.0
    timeout_seconds: float = 30.0
    address: str = "127.0.0.1"
    responses: list[ReplayResponse] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.address not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the replay sends traffic to loopback only")
        self._queue: queue.Queue[float | None] = queue.Queue()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._late = 0
        self.started_at = 0.0

    # ------------------------------------------------------------------ control

    def start(self) -> LoadReplay:
        self.started_at = time.monotonic()
        for i in range(self.connections):
            worker = threading.Thread(target=self._work, name=f"replay-{i}", daemon=True)
            worker.start()
            self._threads.append(worker)
        dispatcher = threading.Thread(target=self._dispatch, name="replay-dispatch", daemon=True)
        dispatcher.start()
        self._threads.append(dispatcher)
        return self

    def elapsed(self) -> float:
        return time.monotonic() - self.started_at

    def stop(self) -> None:
        self._stop.set()
        self.join()

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    @property
    def done(self) -> bool:
        return all(not t.is_alive() for t in self._threads)

    def sent(self) -> int:
        with self._lock:
            return len(self.responses)

    def snapshot(self) -> list[ReplayResponse]:
        """The responses so far (a copy)."""
        with self._lock:
            return list(self.responses)

    def failures(self) -> list[ReplayResponse]:
        with self._lock:
            return [r for r in self.responses if not r.ok]

    def summary(self) -> ReplaySummary:
        with self._lock:
            responses = list(self.responses)
        latencies = sorted(r.latency_seconds for r in responses if r.ok)

        def quantile(q: float) -> float:
            if not latencies:
                return 0.0
            return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000.0

        return ReplaySummary(
            requests=len(responses),
            failed=sum(1 for r in responses if not r.ok),
            p50_ms=round(quantile(0.50), 2),
            p99_ms=round(quantile(0.99), 2),
            served_by=dict(Counter(r.served_by or "?" for r in responses if r.ok)),
            errors=dict(Counter(r.error or f"HTTP {r.status}" for r in responses if not r.ok)),
            late=self._late,
        )

    # ------------------------------------------------------------------ threads

    def _dispatch(self) -> None:
        try:
            for due in self.schedule:
                if due > self.max_seconds:
                    break
                while not self._stop.is_set():
                    wait = due - self.elapsed()
                    if wait <= 0:
                        break
                    self._stop.wait(min(wait, 0.5))
                if self._stop.is_set():
                    break
                if self.elapsed() - due > 0.1:
                    self._late += 1
                self._queue.put(due)
        finally:
            for _ in range(self.connections):
                self._queue.put(None)

    def _connect(self) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection(self.address, self.port, timeout=self.timeout_seconds)
        conn.connect()
        if conn.sock is not None:
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def _work(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while True:
            due = self._queue.get()
            if due is None:
                break
            sent = self.elapsed()
            started = time.monotonic()
            status, served, error, detail = 0, None, None, None
            try:
                if conn is None:
                    conn = self._connect()
                conn.request("POST", self.path, body=b'{"instances": [1]}', headers={"Host": self.host_header})
                response = conn.getresponse()
                body = response.read()
                status, served = response.status, response.getheader("x-served-by")
                if not 200 <= status < 300:
                    detail = _detail(body, response.getheader("server"), served)
                if response.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as err:
                error = type(err).__name__
                if conn is not None:
                    conn.close()
                conn = None
            record = ReplayResponse(sent, status, time.monotonic() - started, served, error, detail)
            with self._lock:
                self.responses.append(record)
        if conn is not None:
            conn.close()


def _detail(body: bytes, server: str | None, served_by: str | None) -> str:
    text = body[:160].decode("utf-8", errors="replace").strip().replace("\n", " ")
    return f"{text!r} (server: {server or '-'}, x-served-by: {served_by or '-'})"
