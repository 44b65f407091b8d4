"""The one process harness of the developer tools (and the test fixtures): free loopback ports, waiting until a
process answers over HTTP, child processes started with their output in a log and stopped by their own PID only."""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Processes", "free_port", "log_tail", "spawn", "stop_process", "wait_http"]

_STOP_TIMEOUT_SECONDS = 20.0


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago (the kernel's choice; a race with other binders remains)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(
    url: str,
    timeout_seconds: float,
    *,
    ok_only: bool = False,
    process: subprocess.Popen[bytes] | None = None,
    interval_seconds: float = 0.2,
    headers: Mapping[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> None:
    """Until ``url`` answers: any HTTP status, or only 200 with ``ok_only`` (a readiness endpoint answers 503 while
    it starts). ``RuntimeError`` after ``timeout_seconds``, or as soon as ``process`` (the server) has exited.
    ``headers`` go with every try (credentials); ``context`` checks an ``https://`` server's certificate."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the process serving {url} exited ({process.returncode}) before it answered")
        try:
            request = urllib.request.Request(url, headers=dict(headers or {}))
            with urllib.request.urlopen(request, timeout=2, context=context) as response:
                if not ok_only or response.status == 200:
                    return
        except urllib.error.HTTPError:
            if not ok_only:
                return
        except OSError:
            pass
        time.sleep(interval_seconds)
    raise RuntimeError(f"{url} did not answer{' 200' if ok_only else ''} within {timeout_seconds:.0f}s")


def spawn(
    args: Sequence[str], log: Path, env: Mapping[str, str] | None = None, *, new_session: bool = False
) -> subprocess.Popen[bytes]:
    """Start ``args`` with stdout and stderr appended to ``log`` and no stdin. ``new_session``: out of this
    terminal's process group (Ctrl-C reaches only this process, whose clean-up stops the child by its PID)."""
    with log.open("ab") as handle:
        return subprocess.Popen(
            list(args),
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            start_new_session=new_session,
        )


def stop_process(process: subprocess.Popen[Any], timeout_seconds: float) -> None:
    """SIGTERM, then SIGKILL after ``timeout_seconds``; idempotent (a process that already exited is left alone)."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout_seconds)


def log_tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a log file ("" when it cannot be read)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class Processes:
    """Every process a run started (or adopted), stopped by PID at the end, in reverse order."""

    started: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(
        self, name: str, args: Sequence[str], log: Path, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        return self.adopt(name, spawn(args, log, env, new_session=True))

    def adopt(self, name: str, process: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        """Stop ``process`` (started elsewhere) with the others."""
        self.started.append((name, process))
        return process

    def stop_all(self, timeout_seconds: float = _STOP_TIMEOUT_SECONDS) -> None:
        """SIGTERM to all first (they stop in parallel), then wait for each; SIGKILL to one that has not stopped
        ``timeout_seconds`` after it was asked."""
        for _, process in reversed(self.started):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for _, process in reversed(self.started):
            stop_process(process, timeout_seconds)
