"""Keep the operator alive through an apiserver outage.

Two ways kopf ends an operator on its own, both seen when kube-apiserver restarts:

* its requests give up after ``settings.networking.error_backoffs`` (by default 8 retries, 54 s in all), so a
  control plane down for a minute ends every watch, and a failed watch ends the whole operator;
* a watch answered 404 is not retried at all, and an apiserver whose caches are not synced yet can answer a
  transient 404 for a custom resource that exists (kubernetes/kubernetes#71218, #115241).

``WatchBackoffs`` makes the first retry forever (capped), and ``supervise`` starts a kopf run that still ended with
an error again, after a capped backoff, instead of exiting. A normal end (SIGTERM, SIGINT) ends it. Serving is not
affected meanwhile: routes and placements live in the router and the targets, not in the operator process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence

__all__ = ["WatchBackoffs", "supervise"]

log = logging.getLogger(__name__)


class WatchBackoffs:
    """An endless, re-iterable backoff schedule for kopf's ``settings.networking.error_backoffs``.

    kopf iterates the setting afresh for every request and retries until the iterator runs out; this one never
    does (its ``len`` is deliberately undefined, so kopf logs attempts as ``#n`` without a total).
    """

    def __init__(self, first: Sequence[float] = (1, 1, 2, 3, 5, 8, 13), cap: float = 20.0) -> None:
        if cap <= 0 or any(b < 0 for b in first):
            raise ValueError("backoffs must be non-negative and the cap positive")
        self.first = tuple(float(b) for b in first)
        self.cap = float(cap)

    def __iter__(self) -> Iterator[float]:
        yield from self.first
        while True:
            yield self.cap


async def supervise(
    run_once: Callable[[], Awaitable[None]],
    *,
    backoffs: Sequence[float] = (1, 2, 5, 10, 30),
    healthy_seconds: float = 300.0,
    on_restart: Callable[[BaseException], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Run ``run_once`` until it returns normally; start it again after each error.

    The delay grows along ``backoffs`` with consecutive failures and starts over once a run has lasted
    ``healthy_seconds``. ``SystemExit``, ``KeyboardInterrupt`` and cancellation are not errors: they end it.
    """
    if not backoffs:
        raise ValueError("backoffs must not be empty")
    loop = asyncio.get_running_loop()
    failures = 0
    while True:
        started = loop.time()
        try:
            await run_once()
            return
        except Exception as err:
            if loop.time() - started >= healthy_seconds:
                failures = 0
            delay = backoffs[min(failures, len(backoffs) - 1)]
            failures += 1
            log.error(
                "the operator stopped on an error (%s: %s); starting it again in %.0f s (failure %d in a row)",
                type(err).__name__,
                err,
                delay,
                failures,
                exc_info=err,
            )
            if on_restart is not None:
                on_restart(err)
            await sleep(delay)
