"""The benchmark's own child processes: stopped by their own PID only, and their logs' last lines for errors."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

__all__ = ["log_tail", "stop_process"]


def stop_process(process: subprocess.Popen[bytes], timeout_seconds: float) -> None:
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
