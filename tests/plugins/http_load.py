"""Closed-loop HTTP load through a local Envoy for the tests that take replicas away under load: ``workers``
clients each POSTing back to back (a fixed number each, or until stopped), every outcome recorded as it comes; and
``answers``, one request as a replay sends it."""

from __future__ import annotations

import asyncio
import http.client
import threading
import time
from collections import Counter

__all__ = ["HttpLoad", "answers"]


class HttpLoad:
    """Outcomes: the answering side's ``x-served-by`` for a 200 (``?`` without one), ``"<status> <served-by>"``
    otherwise, or the client error's type name."""

    def __init__(self, port: int, workers: int, path: str, *, host: str, per_worker: int | None = None) -> None:
        self.outcomes: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._port, self._path, self._host, self._per_worker = port, path, host, per_worker
        self._threads = [threading.Thread(target=self._worker, daemon=True) for _ in range(workers)]
        for thread in self._threads:
            thread.start()

    def _worker(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=60)
        sent = 0
        while not self._stop.is_set() and (self._per_worker is None or sent < self._per_worker):
            sent += 1
            try:
                conn.request("POST", self._path, body=b"{}", headers={"Host": self._host})
                response = conn.getresponse()
                response.read()
                served = response.getheader("x-served-by") or "?"
                outcome = served if response.status == 200 else f"{response.status} {served}"
            except (OSError, http.client.HTTPException) as err:
                outcome = type(err).__name__
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=60)
            with self._lock:
                self.outcomes.append(outcome)
        conn.close()

    def answered(self) -> int:
        with self._lock:
            return len(self.outcomes)

    async def wait_answered(self, count: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while self.answered() < count:
            assert time.monotonic() < deadline, f"only {self.answered()} of {count} answered"
            await asyncio.sleep(0.05)

    def join(self, timeout: float = 240.0) -> Counter[str]:
        """Once every client has sent its requests: the outcomes counted."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self._threads), "requests still running"
        return Counter(self.outcomes)

    def stop(self, timeout: float = 240.0) -> Counter[str]:
        """No further request: the outcomes counted once the ones in flight are answered."""
        self._stop.set()
        return self.join(timeout)


def answers(port: int, host: str, path: str = "/predict") -> int | str:
    """One POST through the router on loopback as a replay sends it: the status, or the client error's type name."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, body=b'{"instances": [1]}', headers={"Host": host})
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException) as err:
        return type(err).__name__
    finally:
        conn.close()
