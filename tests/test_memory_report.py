"""The operator's memory report: off without allocation tracing; with ``PYTHONTRACEMALLOC``, SIGUSR2 logs the largest
live allocation sites as one JSON line (what ``bench-scale --trace-memory`` reads from the leader's log). Each case
runs in a child interpreter: tracing starts with the process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from inference_placement.controller.memory_report import REPORT_PREFIX

_CHILD = """
import asyncio, logging, os, signal, sys
from inference_placement.controller.memory_report import install_memory_report
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")

async def main():
    kept = [bytearray(1000) for _ in range(20_000)]  # ~20 MB live, allocated on this line
    installed = install_memory_report(asyncio.get_running_loop())
    print("installed", installed, flush=True)
    if installed:
        os.kill(os.getpid(), signal.SIGUSR2)
        await asyncio.sleep(0.5)
    del kept

asyncio.run(main())
"""


def _run(env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=120, check=True, env=env
    )
    return result.stdout


def test_without_tracing_nothing_is_installed() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONTRACEMALLOC"}
    out = _run(env)
    assert "installed False" in out and REPORT_PREFIX not in out


def test_with_tracing_sigusr2_logs_the_largest_live_sites() -> None:
    out = _run({**os.environ, "PYTHONTRACEMALLOC": "1"})
    assert "installed True" in out
    line = next(line for line in out.splitlines() if line.startswith(REPORT_PREFIX))
    report = json.loads(line[len(REPORT_PREFIX) :])
    assert report["traced_mb"] >= 20 and report["traced_peak_mb"] >= report["traced_mb"]
    largest = report["top"][0]
    assert largest["site"] == "<string>:7" and largest["mb"] >= 19 and largest["count"] >= 20_000, report["top"][:3]
