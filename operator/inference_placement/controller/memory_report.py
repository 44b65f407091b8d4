"""What the operator's heap holds, on request, for finding what a large fleet keeps resident.

Off unless the process was started with Python's own allocation tracing (``PYTHONTRACEMALLOC=N``, N frames per
allocation; tracing costs about twice the CPU, so never in normal runs). Then ``SIGUSR2`` logs one line: the traced
total and peak, and the largest allocation sites of what is live after a full collection (``tracemalloc`` grouped
by line). ``bench-scale --trace-memory`` uses it on the leader at the end of the steady ticks; by hand:
``kill -USR2 <pid>``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import signal
import tracemalloc

__all__ = ["REPORT_PREFIX", "TOP_SITES", "install_memory_report", "memory_report"]

log = logging.getLogger(__name__)

REPORT_PREFIX = "memory report: "
"""What the report's log line starts with (the JSON follows it)."""

TOP_SITES = 40


def memory_report(top: int = TOP_SITES) -> dict[str, object]:
    """The traced heap now: ``traced_mb``, ``traced_peak_mb``, and the ``top`` allocation sites by size
    (``site``, ``mb``, ``count``), measured after a full collection (what is live, not garbage waiting for one)."""
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    snapshot = tracemalloc.take_snapshot().filter_traces((tracemalloc.Filter(False, tracemalloc.__file__),))
    sites = [
        {
            "site": f"{stat.traceback[-1].filename}:{stat.traceback[-1].lineno}",
            "mb": round(stat.size / 2**20, 2),
            "count": stat.count,
        }
        for stat in snapshot.statistics("lineno")[:top]
    ]
    return {"traced_mb": round(current / 2**20, 1), "traced_peak_mb": round(peak / 2**20, 1), "top": sites}


def _log_report() -> None:
    log.warning("%s%s", REPORT_PREFIX, json.dumps(memory_report(), separators=(",", ":")))


def install_memory_report(loop: asyncio.AbstractEventLoop) -> bool:
    """``SIGUSR2`` logs ``memory_report()`` when allocations are traced; False (nothing installed) otherwise."""
    if not tracemalloc.is_tracing():
        return False
    loop.add_signal_handler(signal.SIGUSR2, _log_report)
    log.info("allocations traced: SIGUSR2 logs the largest live allocation sites")
    return True
